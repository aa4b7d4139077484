//! The ledger through its store trait: the invariants every backend must keep (exactly once,
//! balance = sum of entries, deductions never overdraw, jobs survive a reopen, group commit,
//! event history, migrations), written once against `dyn LedgerStore` and run on SQLite and on
//! PostgreSQL by `ledger_suite!` (one test per backend: `sqlite::NAME`, `postgres::NAME`); plus
//! the SQLite-specific durable settings, start-up faults and the previous release's ledger.

mod common;

use std::sync::Arc;

use fluxflow::actions::{Outcome, Plan, PointsChange};
use fluxflow::calendar::{Period, Zone};
use fluxflow::event::Event;
use fluxflow::graph::limits::{ActorWindow, BudgetKey, Counter, Usage};
use fluxflow::graph::{ScenarioLimits, Stacked, StackingKey};
use fluxflow::ledger::faulty::{Intercepted, Write};
use fluxflow::ledger::postgres::PostgresStore;
use fluxflow::ledger::postgres::scratch::ScratchDatabase;
use fluxflow::ledger::sqlite::SqliteStore;
use fluxflow::ledger::{
    ActionWrite, Applied, EventWrite, Ledger, LedgerError, LedgerStore, NewJob, Planned, PointsWrite, ResultPlan,
    WritePlan, fingerprint,
};
use fluxflow::result::{ActionResult, EventResult, StoredJson};
use fluxflow::rules::loyalty::{Limit, LimitCap, LimitScope};
use serde_json::json;

fn event(id: &str, actor: &str) -> Event {
    Event::from_value(json!({"id": id, "type": "t", "actor_id": actor})).unwrap()
}

fn points(actor: &str, amount: i64) -> ActionWrite {
    ActionWrite::Points(PointsWrite {
        actor_id: actor.into(),
        action_id: "act".into(),
        scenario_id: "sc".into(),
        change: PointsChange { expiry_days: Some(30), ..PointsChange::of(amount) },
        terms: fluxflow::ledger::lots::Terms { pending_days: 0, expiry_days: 30 },
        reason: Some("because".into()),
    })
}

/// A write whose result lists each outcome as an action.
fn write(ev: &Event, actions: Vec<ActionWrite>) -> EventWrite {
    let id = ev.id.clone();
    let stacking = (0..actions.len()).map(|i| StackingKey { scenario: i as u32, group: None }).collect();
    let build_result = Box::new(move |stacked: &Stacked| EventResult {
        event_id: id.clone(),
        occurred_at: None,
        duration_ms: 0,
        duration_us: 0,
        scenarios_matched: vec![],
        actions_executed: stacked
            .outcomes
            .iter()
            .flatten()
            .map(|o| ActionResult {
                action_id: "act".into(),
                action_type: "reward_points".into(),
                success: o.success(),
                message: format!("{o:?}"),
                code: o.code().map(str::to_owned),
                points: o.points(),
            })
            .collect(),
        replayed: false,
        trace: None,
        stored_json: Default::default(),
    });
    EventWrite {
        event_id: ev.id.clone(),
        fresh_id: ev.generated_id,
        fingerprint: fingerprint(ev),
        plan: WritePlan::Ready(Planned { actions, stacking, limits: vec![], result: ResultPlan::Build(build_result) }),
        job: None,
        event: Arc::new(ev.clone()),
        position: None,
    }
}

#[test]
fn the_write_connection_is_wal_with_synchronous_full() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    assert_eq!(store.pragma("journal_mode").unwrap(), "wal");
    assert_eq!(store.pragma("synchronous").unwrap(), "2", "2 is FULL: fsync at every commit");
}

#[test]
fn start_up_faults_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("fluxflow.db"), b"this is not a database, just some bytes of text......").unwrap();
    let err = SqliteStore::open(dir.path()).err().unwrap();
    assert!(err.to_string().contains("fluxflow.db is not a usable SQLite ledger"), "{err}");
    assert!(err.detail().ends_with("file is not a database"), "the source is kept: {}", err.detail());
    assert!(!err.retryable());

    let file = dir.path().join("plain-file");
    std::fs::write(&file, b"x").unwrap();
    let err = SqliteStore::open(&file).err().unwrap().to_string();
    assert!(err.starts_with("cannot open the ledger: cannot create the data directory"), "{err}");
}

/// A backend under test: opens (or reopens) the same store, and reads its books with SQL that
/// reads the same on both.
trait Backend {
    fn try_open(&self) -> Result<Box<dyn LedgerStore>, LedgerError>;
    fn open(&self) -> Box<dyn LedgerStore> {
        self.try_open().unwrap()
    }
    /// One integer from the books.
    fn count(&self, sql: &str) -> i64;
    /// Runs SQL on the books.
    fn execute(&self, sql: &str);
    /// The statement that marks the books as written by a newer version.
    fn newer_schema_sql(&self) -> &'static str;
    /// How many stores may write the same books at once (nodes).
    fn nodes(&self) -> usize;
}

struct Sqlite(tempfile::TempDir);

impl Sqlite {
    fn new() -> Self {
        Sqlite(tempfile::tempdir().unwrap())
    }

    fn conn(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(self.0.path().join("fluxflow.db")).unwrap()
    }
}

impl Backend for Sqlite {
    fn try_open(&self) -> Result<Box<dyn LedgerStore>, LedgerError> {
        Ok(Box::new(SqliteStore::open(self.0.path())?))
    }
    fn count(&self, sql: &str) -> i64 {
        self.conn().query_row(sql, [], |r| r.get::<_, Option<i64>>(0)).unwrap().unwrap_or(0)
    }
    fn execute(&self, sql: &str) {
        self.conn().execute_batch(sql).unwrap();
    }
    fn newer_schema_sql(&self) -> &'static str {
        "PRAGMA user_version = 99"
    }
    fn nodes(&self) -> usize {
        1
    }
}

struct Postgres(ScratchDatabase);

impl Backend for Postgres {
    fn try_open(&self) -> Result<Box<dyn LedgerStore>, LedgerError> {
        Ok(Box::new(PostgresStore::connect(&self.0.url, 4)?))
    }
    fn count(&self, sql: &str) -> i64 {
        self.0.query_i64(sql).unwrap()
    }
    fn execute(&self, sql: &str) {
        self.0.execute(sql).unwrap();
    }
    fn newer_schema_sql(&self) -> &'static str {
        "INSERT INTO fluxflow_schema (version) VALUES (99)"
    }
    fn nodes(&self) -> usize {
        2
    }
}

/// One test per backend for each check: `sqlite::NAME` and `postgres::NAME`. The PostgreSQL
/// ones run on a database of their own, and skip (with a note) when there is no server unless
/// `CI=true`.
macro_rules! ledger_suite {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[test]
                fn $name() {
                    super::$name(&super::Sqlite::new());
                }
            )*
        }
        mod postgres {
            $(
                #[test]
                fn $name() {
                    if let Some(db) = crate::common::pg::database() {
                        super::$name(&super::Postgres(db));
                    }
                }
            )*
        }
    };
}

ledger_suite!(
    exactly_once_conflicts_and_balances,
    jobs_are_stored_and_pending_events_survive_a_reopen,
    the_writer_groups_concurrent_events_and_answers_each,
    events_keep_their_type_time_and_payload,
    concurrent_deductions_on_every_node_never_overdraw,
    a_schema_newer_than_the_binary_is_refused,
    one_bad_event_does_not_fail_the_events_committed_with_it,
    limits_see_the_uses_written_earlier_in_the_same_group,
    member_counts_agree_with_counting_the_events,
    a_result_built_before_the_write_is_stored_as_it_is,
);

/// A write whose result was built before it (every outcome certain): the store writes its
/// points, stores the JSON it was given as the result, answers `AsPlanned`, and a replay of the
/// id answers that result.
fn a_result_built_before_the_write_is_stored_as_it_is(backend: &dyn Backend) {
    let store = backend.open();
    let ev = event("planned", "ann");
    let built = EventResult {
        event_id: "planned".into(),
        scenarios_matched: vec!["sc".into()],
        actions_executed: vec![ActionResult {
            action_id: "act".into(),
            action_type: "reward_points".into(),
            success: true,
            message: "built before the write".into(),
            code: None,
            points: Some(40),
        }],
        ..EventResult::default()
    };
    let mut planned = write(&ev, vec![points("ann", 40)]);
    let WritePlan::Ready(plan) = &mut planned.plan else { unreachable!() };
    plan.result = ResultPlan::AsPlanned(StoredJson::new(serde_json::to_string(&built).unwrap()));
    assert_eq!(store.write_events(&[planned]).unwrap(), vec![Applied::AsPlanned]);
    assert_eq!(store.balance("ann").unwrap(), 40);
    assert_eq!(store.stored_result("planned").unwrap().map(|(_, result)| result), Some(built.clone()));
    let again = store.write_events(&[write(&ev, vec![points("ann", 40)])]).unwrap();
    assert_eq!(again, vec![Applied::Replayed(built)]);
    assert_eq!(store.balance("ann").unwrap(), 40, "a replay writes nothing");
}

/// A member's count and sum over any window, however the store keeps them (SQLite: running day
/// and hour counters, sums within the month; PostgreSQL: day and hour counters; both: the index
/// for the partial hours), equal counting and adding up the member's events in it, with the
/// events written out of time order and some before their type or their sum was kept.
fn member_counts_agree_with_counting_the_events(backend: &dyn Backend) {
    let store = backend.open();
    let start: i64 = "2026-03-27T00:00:00Z".parse::<jiff::Timestamp>().unwrap().as_microsecond();
    let mut seed: u64 = 42;
    let mut next = move |bound: i64| {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        i64::try_from((seed >> 11) % u64::try_from(bound).unwrap()).unwrap()
    };
    let span = 10 * 86_400 * 1_000_000;
    let mut times: Vec<i64> = (0..300).map(|_| start + next(span)).collect();
    times.extend([start, start + 3_600_000_000, start + 86_400_000_000 - 1]);
    // A few months away, so windows span several months.
    times.extend([
        start - 40 * 86_400_000_000,
        start + 50 * 86_400_000_000 + 3_600_000_000,
        start + 400 * 86_400_000_000,
    ]);
    // Each visit carries a whole number (sums of them are exact); one in five carries none.
    let spent = |i: usize| (i % 5 != 0).then_some((i % 7) as f64);
    let writes: Vec<EventWrite> = times
        .iter()
        .enumerate()
        .map(|(i, at)| {
            let time = jiff::Timestamp::from_microsecond(*at).unwrap().to_string();
            // Some carry a string with U+0000 beside their number (PostgreSQL's jsonb refuses it).
            let note = if i % 11 == 0 { "a\u{0}b" } else { "ab" };
            let payload = spent(i).map_or_else(|| json!({"other": "x"}), |n| json!({"spent": n, "note": note}));
            let event = Event::from_value(
                json!({"id": format!("v{i}"), "type": "Visit", "actor_id": "rob", "occurred_at": time, "payload": payload}),
            )
            .unwrap();
            write(&event, vec![])
        })
        .collect();
    // A third of the history before its type is kept (counted back), a third before the sum is
    // kept (counted back), the rest after (counted as written).
    let (untracked, tracked) = writes.split_at(writes.len() / 3);
    store.write_events(untracked).unwrap();
    store.track_history(&["visit".to_owned()]).unwrap();
    let (before, after) = tracked.split_at(tracked.len() / 2);
    store.write_events(before).unwrap();
    let Ok(fluxflow::expr::ast::Expr::Path(path, _)) = fluxflow::expr::parser::parse("payload.spent") else { panic!() };
    let key = fluxflow::ledger::member::SumKey::new("visit", &path);
    store.track_sums(std::slice::from_ref(&key)).unwrap();
    store.write_events(after).unwrap();
    let naive_sum = |from: i64, to: i64| -> f64 {
        times.iter().enumerate().filter(|(_, t)| (from..to).contains(*t)).filter_map(|(i, _)| spent(i)).sum()
    };
    let naive = |from: i64, to: i64| times.iter().filter(|t| (from..to).contains(*t)).count() as u64;
    let mut windows: Vec<(i64, i64)> = (0..200)
        .map(|_| {
            let a = start - 86_400_000_000 + next(span + 2 * 86_400_000_000);
            (a, a + next(span))
        })
        .collect();
    let (hour, day) = (3_600_000_000, 86_400_000_000);
    windows.extend([(start, start + day), (start + hour, start + 2 * hour), (start - 1, start + 1), (start, start)]);
    windows.extend([
        (start - 45 * day, start + 5 * day),
        (start + 5 * day + 7, start + 60 * day),
        (start - 1, start + 900 * day),
    ]);
    for (from, to) in windows {
        assert_eq!(store.member_count("rob", "visit", from, to).unwrap(), naive(from, to), "window [{from}, {to})");
        let sum = store.member_sum("rob", &key, from, to).unwrap().expect("both stores keep the sum's counters");
        assert_eq!(sum, naive_sum(from, to), "sum over [{from}, {to})");
    }
    let (min, max) = (jiff::Timestamp::MIN.as_microsecond(), jiff::Timestamp::MAX.as_microsecond());
    assert_eq!(store.member_count("rob", "visit", min, max).unwrap(), times.len() as u64);
    assert_eq!(store.member_count("rob", "purchase", min, max).unwrap(), 0);
    assert_eq!(store.member_sum("rob", &key, min, max).unwrap(), Some(naive_sum(min, max)));
    // A sum the rules do not read is not kept: the caller adds up the payloads.
    let Ok(fluxflow::expr::ast::Expr::Path(other, _)) = fluxflow::expr::parser::parse("payload.other") else {
        panic!()
    };
    let untracked = fluxflow::ledger::member::SumKey::new("visit", &other);
    assert_eq!(store.member_sum("rob", &untracked, start, start + day).unwrap(), None);
}

/// Scenario 0 of every write, with limits: 2 times a day per member, and a 100-point budget.
fn limited(write: &mut EventWrite) {
    let limit = |per, cap, period| Limit { per, cap, period };
    let WritePlan::Ready(planned) = &mut write.plan else { panic!("a write planned before") };
    planned.limits = vec![Arc::new(ScenarioLimits {
        scenario: 0,
        scenario_id: "sc".into(),
        limits: vec![
            limit(LimitScope::Actor, LimitCap::Times(2), Period::Day),
            limit(LimitScope::Scenario, LimitCap::Points(100), Period::Lifetime),
        ]
        .into(),
        zone: Zone::named("Europe/Berlin").unwrap(),
    })];
}

/// A store's reads inside a group see the group's own earlier writes (PostgreSQL sends them
/// ahead of each read): three events of one member in one group are awarded twice, and the
/// budget cuts across members and groups.
fn limits_see_the_uses_written_earlier_in_the_same_group(backend: &dyn Backend) {
    let store = backend.open();
    let at = |id: &str, actor: &str| {
        Event::from_value(json!({"id": id, "type": "t", "actor_id": actor, "occurred_at": "2026-11-02T10:00:00Z"}))
            .unwrap()
    };
    let writes: Vec<EventWrite> = ["a1", "a2", "a3"]
        .iter()
        .map(|id| {
            let mut w = write(&at(id, "ann"), vec![points("ann", 40)]);
            limited(&mut w);
            w
        })
        .collect();
    let answers = store.write_events(&writes).unwrap();
    let codes: Vec<Option<String>> = answers
        .iter()
        .map(|a| match a {
            Applied::Fresh(r) => r.actions_executed[0].code.clone(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(codes, [None, None, Some("limit_reached".into())]);
    let mut bob = write(&at("b1", "bob"), vec![points("bob", 40)]);
    limited(&mut bob);
    let Applied::Fresh(cut) = &store.write_events(&[bob]).unwrap()[0] else { panic!() };
    assert_eq!(cut.actions_executed[0].points, Some(20), "the budget's last 20 points");
    let day = ActorWindow { scenario_id: "sc", actor_id: "ann", from: 0, to: i64::MAX };
    assert_eq!(store.usage(&Counter::Actor(day)).unwrap(), Usage { times: 2, points: 80 });
    let budget = BudgetKey { scenario_id: "sc", period: Period::Lifetime, start: 0 };
    assert_eq!(store.usage(&Counter::Budget(budget)).unwrap(), Usage { times: 3, points: 100 });
    assert_eq!(store.balance("bob").unwrap(), 20);
}

fn exactly_once_conflicts_and_balances(backend: &dyn Backend) {
    let store = backend.open();
    let e1 = event("e1", "ann");
    let applied =
        store.write_events(&[write(&e1, vec![points("ann", 50)]), write(&e1, vec![points("ann", 50)])]).unwrap();
    assert!(matches!(applied[0], Applied::Fresh(_)));
    assert!(matches!(applied[1], Applied::Replayed(_)), "same id in the same group: applied once");
    let other = Event::from_value(json!({"id": "e1", "type": "other", "actor_id": "ann"})).unwrap();
    assert_eq!(store.write_events(&[write(&other, vec![points("ann", 5)])]).unwrap(), vec![Applied::Conflict]);
    assert_eq!(store.balance("ann").unwrap(), 50);
    assert_eq!(store.balance("nobody").unwrap(), 0);

    // A deduction that would overdraw is refused and writes nothing; one that fits is written.
    let e2 = event("e2", "ann");
    let Applied::Fresh(result) = &store.write_events(&[write(&e2, vec![points("ann", -60)])]).unwrap()[0] else {
        panic!()
    };
    assert!(!result.actions_executed[0].success);
    assert_eq!(result.actions_executed[0].message, "InsufficientBalance { wanted: 60, balance: 50 }");
    let e3 = event("e3", "ann");
    store
        .write_events(&[write(&e3, vec![points("ann", -20), ActionWrite::Decided(Outcome::Done(Plan::Nothing))])])
        .unwrap();
    assert_eq!(store.balance("ann").unwrap(), 30);

    let page = store.history("ann", 1, None).unwrap();
    assert_eq!((page.entries.len(), page.entries[0].points, page.entries[0].kind.as_str()), (1, -20, "deduct"));
    assert_eq!(page.entries[0].expires_at, None, "deductions do not expire");
    let older = store.history("ann", 10, page.next_cursor.as_deref().map(|c| c.parse().unwrap())).unwrap();
    assert_eq!(older.entries.len(), 1);
    assert_eq!(older.entries[0].points, 50);
    assert!(older.entries[0].expires_at.is_some());
    assert_eq!(older.next_cursor, None);
    let (fp, stored) = store.stored_result("e1").unwrap().unwrap();
    assert_eq!(fp, fingerprint(&e1));
    assert_eq!(stored.event_id, "e1");
    assert_eq!(
        backend.count(
            "SELECT count(*) FROM balances b WHERE b.balance <> (SELECT sum(points) FROM entries e WHERE e.actor_id = b.actor_id)"
        ),
        0,
        "every balance is the sum of its entries"
    );
}

fn jobs_are_stored_and_pending_events_survive_a_reopen(backend: &dyn Backend) {
    {
        let store = backend.open();
        let events: Vec<Arc<Event>> = (0..3).map(|i| Arc::new(event(&format!("b{i}"), "bob"))).collect();
        store.store_job(&NewJob { job_id: "job1".into(), events, queued: 2 }).unwrap();
        let mut done = write(&event("b0", "bob"), vec![points("bob", 1)]);
        done.job = Some(("job1".into(), 0));
        store.write_events(&[done]).unwrap();
    }
    let store = backend.open();
    let pending = store.pending_events().unwrap();
    assert_eq!(pending.len(), 1, "b1 is accepted and not processed; b2 was rejected");
    assert_eq!((pending[0].job_id.as_str(), pending[0].index, pending[0].event.id.as_str()), ("job1", 1, "b1"));
    let job = store.job("job1").unwrap().unwrap();
    assert_eq!((job.state.as_str(), job.total, job.queued, job.rejected, job.done), ("queued", 3, 2, 1, 1));
    assert!(job.events[0].result.is_some());
}

fn the_writer_groups_concurrent_events_and_answers_each(backend: &dyn Backend) {
    let sizes = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = Arc::clone(&sizes);
    let hook = move |write: Write<'_>| {
        if let Write::Events(events) = write {
            seen.lock().unwrap().push(events.len());
        }
        Ok(())
    };
    let store = Intercepted::new(Arc::from(backend.open()), Box::new(hook));
    let ledger = Arc::new(Ledger::start(Arc::new(store)).unwrap());
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).build().unwrap();
    runtime.block_on(async {
        let clients: Vec<_> = (0..8)
            .map(|t| {
                let ledger = Arc::clone(&ledger);
                tokio::spawn(async move {
                    for i in 0..50 {
                        let ev = event(&format!("t{t}-{i}"), "carol");
                        let applied = ledger.apply(write(&ev, vec![points("carol", 2)])).await.unwrap();
                        assert!(matches!(applied, Applied::Fresh(_)));
                    }
                })
            })
            .collect();
        for client in clients {
            client.await.unwrap();
        }
    });
    assert_eq!(ledger.store().balance("carol").unwrap(), 800);
    ledger.close();
    // 400 events from 8 clients that each wait for their previous answer: the writer must have
    // committed some of them together, one transaction (and one sync) for several events.
    let sizes = sizes.lock().unwrap();
    assert_eq!(sizes.iter().sum::<usize>(), 400);
    assert!(sizes.len() < 400 && sizes.iter().any(|&n| n > 1), "no group held more than one event: {sizes:?}");
}

fn events_keep_their_type_time_and_payload(backend: &dyn Backend) {
    let store = backend.open();
    let sent = Event::from_value(json!({"id": "h1", "type": "purchase", "actor_id": "gus",
        "occurred_at": "2026-11-01T10:00:00Z", "payload": {"amount": 5}}))
    .unwrap();
    let unsent_time = event("h2", "gus");
    store.write_events(&[write(&sent, vec![points("gus", 5)]), write(&unsent_time, vec![])]).unwrap();
    assert_eq!(
        backend.count(
            "SELECT count(*) FROM events WHERE event_id = 'h1' AND event_type = 'purchase' \
             AND occurred_at = 1793527200000000 AND payload = '{\"amount\":5}' AND actor_id = 'gus'"
        ),
        1
    );
    // Without occurred_at the event time is when it was received.
    let received = unsent_time.received_at.as_microsecond();
    assert_eq!(
        backend.count(&format!(
            "SELECT count(*) FROM events WHERE event_id = 'h2' AND event_type = 't' AND occurred_at = {received} \
             AND occurred_at <= processed_at AND payload IS NULL"
        )),
        1
    );
}

/// 100 concurrent deductions of 10 from a balance of 500, spread over every node the backend
/// allows (two stores on one PostgreSQL database): exactly 50 succeed.
fn concurrent_deductions_on_every_node_never_overdraw(backend: &dyn Backend) {
    let ledgers: Vec<Arc<Ledger>> =
        (0..backend.nodes()).map(|_| Arc::new(Ledger::start(Arc::from(backend.open())).unwrap())).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let first = ledgers[0].apply(write(&event("fill", "hal"), vec![points("hal", 500)])).await.unwrap();
        assert!(matches!(first, Applied::Fresh(_)));
        let tasks: Vec<_> = (0..100)
            .map(|i| {
                let ledger = Arc::clone(&ledgers[i % ledgers.len()]);
                tokio::spawn(async move {
                    let ev = event(&format!("take-{i}"), "hal");
                    match ledger.apply(write(&ev, vec![points("hal", -10)])).await.unwrap() {
                        Applied::Fresh(result) => result.actions_executed[0].success,
                        other => panic!("{other:?}"),
                    }
                })
            })
            .collect();
        let mut succeeded = 0;
        for task in tasks {
            succeeded += usize::from(task.await.unwrap());
        }
        assert_eq!(succeeded, 50);
    });
    assert_eq!(ledgers[0].store().balance("hal").unwrap(), 0);
    assert_eq!(backend.count("SELECT count(*) FROM entries WHERE actor_id = 'hal'"), 51);
    for ledger in &ledgers {
        ledger.close();
    }
}

fn a_schema_newer_than_the_binary_is_refused(backend: &dyn Backend) {
    drop(backend.open());
    backend.execute(backend.newer_schema_sql());
    let Err(err) = backend.try_open() else { panic!("a newer schema was opened") };
    assert!(!err.retryable());
    let message = err.to_string();
    assert!(message.contains("has schema version 99, newer than this FluxFlow knows"), "{message}");
    assert!(message.contains("upgrade FluxFlow"), "{message}");
}

/// The ledger the previous release wrote (tests/fixtures/ledger-v1, made by its make.sh from the
/// release before issue 11) opens, migrates in place, and keeps every balance, entry and result.
#[test]
fn a_ledger_written_by_the_previous_release_opens_and_migrates_in_place() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(common::repo_path("tests/fixtures/ledger-v1/fluxflow.db"), dir.path().join("fluxflow.db")).unwrap();
    let before = rusqlite::Connection::open(dir.path().join("fluxflow.db")).unwrap();
    let version: i64 = before.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
    assert_eq!(version, 1, "the fixture is a version-1 ledger");
    drop(before);
    let store = SqliteStore::open(dir.path()).unwrap();
    assert_eq!(store.pragma("user_version").unwrap(), fluxflow::ledger::sqlite::SCHEMA_VERSION.to_string());
    assert_eq!(
        ["ann", "bob", "cy", "nobody"].map(|a| store.balance(a).unwrap()),
        [75, 30, 7, 0],
        "balances as the old release left them"
    );
    let ann = store.history("ann", 10, None).unwrap();
    let seen: Vec<(&str, i64, &str)> =
        ann.entries.iter().map(|e| (e.event_id.as_str(), e.points, e.kind.as_str())).collect();
    assert_eq!(seen, [("b2", 5, "award"), ("r1", -50, "deduct"), ("p1", 120, "award")]);
    let (_, refused) = store.stored_result("r2").unwrap().unwrap();
    assert_eq!(refused.actions_executed[0].message, "cannot deduct 80 points from bob: the balance is 30");
    let (fp, p1) = store.stored_result("p1").unwrap().unwrap();
    assert_eq!(p1.actions_executed[0].points, Some(120));

    // A retry of an old event is still a replay (same fingerprint), and new events carry history.
    let old =
        Event::from_value(json!({"id":"p1","type":"purchase","actor_id":"ann","payload":{"amount":120}})).unwrap();
    assert_eq!(fingerprint(&old), fp);
    assert!(matches!(store.write_events(&[write(&old, vec![points("ann", 120)])]).unwrap()[0], Applied::Replayed(_)));
    let new = Event::from_value(json!({"id":"p9","type":"purchase","actor_id":"ann","payload":{"amount":1}})).unwrap();
    store.write_events(&[write(&new, vec![points("ann", 1)])]).unwrap();
    assert_eq!(store.balance("ann").unwrap(), 76);
    drop(store);
    let after = rusqlite::Connection::open(dir.path().join("fluxflow.db")).unwrap();
    let typed: i64 =
        after.query_row("SELECT count(*) FROM events WHERE event_type IS NOT NULL", [], |r| r.get(0)).unwrap();
    let untyped: i64 =
        after.query_row("SELECT count(*) FROM events WHERE event_type IS NULL", [], |r| r.get(0)).unwrap();
    assert_eq!((typed, untyped), (1, 8), "old events carry no history; the new one does");
    // Reopening a migrated ledger is a no-op.
    drop(after);
    SqliteStore::open(dir.path()).unwrap();
}

#[test]
fn errors_keep_their_source_and_say_whether_a_retry_helps() {
    let lost = LedgerError::unavailable("lost the connection", true, Some(Arc::new(std::io::Error::other("reset"))));
    assert!(lost.retryable());
    assert_eq!(lost.detail(), "the ledger is unavailable: lost the connection: reset");
    assert!(std::error::Error::source(&lost).is_some());
    let newer = LedgerError::SchemaTooNew { place: "x".into(), found: 3, known: 2 };
    assert!(!newer.retryable());
}

/// On PostgreSQL a group takes its members' locks before it reads any balance: while another
/// node holds a member's lock and deducts, a deduction here waits, then sees that node's commit
/// and is refused. (A lock sent after the read would let both deduct: an overdraft.)
#[test]
fn postgres_member_locks_come_before_the_balance_read() {
    let Some(db) = common::pg::database() else { return };
    let store = PostgresStore::connect(&db.url, 2).unwrap();
    store.write_events(&[write(&event("fill", "ann"), vec![points("ann", 100)])]).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (other_node, connection) = runtime.block_on(tokio_postgres::connect(&db.url, tokio_postgres::NoTls)).unwrap();
    runtime.spawn(connection);
    runtime
        .block_on(other_node.batch_execute(
            "BEGIN; SELECT pg_advisory_xact_lock(hashtextextended('ann', 0));
             INSERT INTO entries (actor_id, event_id, action_id, scenario_id, points, kind, created_at)
                 VALUES ('ann', 'other', 'act', 'sc', -100, 'deduct', 0);
             UPDATE balances SET balance = balance - 100 WHERE actor_id = 'ann';",
        ))
        .unwrap();
    // Without an id (a generated one): no idempotency lookup comes before the balance read.
    let take = Event::from_value(json!({"type": "t", "actor_id": "ann"})).unwrap();
    assert!(take.generated_id);
    std::thread::scope(|s| {
        let (store, take) = (&store, &take);
        let deduction = s.spawn(move || store.write_events(&[write(take, vec![points("ann", -60)])]));
        std::thread::sleep(std::time::Duration::from_millis(500));
        assert!(!deduction.is_finished(), "the deduction waits for the member's lock");
        runtime.block_on(other_node.batch_execute("COMMIT")).unwrap();
        let applied = deduction.join().unwrap().unwrap();
        let Applied::Fresh(result) = &applied[0] else { panic!("{applied:?}") };
        assert!(!result.actions_executed[0].success, "refused: the other node's deduction came first");
    });
    assert_eq!(store.balance("ann").unwrap(), 0);
}

fn one_bad_event_does_not_fail_the_events_committed_with_it(backend: &dyn Backend) {
    // Fails, without hope of a retry, every transaction holding the event `poison`, and holds the
    // writer on its first call so the next events wait and commit as one group.
    let calls = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = Arc::clone(&calls);
    let hook = move |write: Write<'_>| {
        let Write::Events(events) = write else { return Ok(()) };
        let first = {
            let mut calls = seen.lock().unwrap();
            calls.push(events.len());
            calls.len() == 1
        };
        if first {
            std::thread::sleep(std::time::Duration::from_millis(300));
        }
        if events.iter().any(|e| e.event_id == "poison") {
            return Err(LedgerError::unavailable("this event cannot be stored", false, None));
        }
        Ok(())
    };
    let store = Arc::new(Intercepted::new(Arc::from(backend.open()), Box::new(hook)));
    let ledger = Arc::new(Ledger::start(Arc::clone(&store) as Arc<dyn LedgerStore>).unwrap());
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let first = {
            let ledger = Arc::clone(&ledger);
            tokio::spawn(async move { ledger.apply(write(&event("first", "ivy"), vec![points("ivy", 1)])).await })
        };
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        // The writer is busy with `first`: these wait, and go as one group.
        let tasks: Vec<_> = ["a", "b", "poison", "c", "d"]
            .into_iter()
            .map(|id| {
                let ledger = Arc::clone(&ledger);
                tokio::spawn(async move { ledger.apply(write(&event(id, "ivy"), vec![points("ivy", 10)])).await })
            })
            .collect();
        assert!(matches!(first.await.unwrap(), Ok(Applied::Fresh(_))));
        let mut outcomes = Vec::new();
        for task in tasks {
            outcomes.push(task.await.unwrap());
        }
        let failed: Vec<bool> = outcomes.iter().map(Result::is_err).collect();
        assert_eq!(failed, [false, false, true, false, false], "only the bad event failed: {outcomes:?}");
        assert!(!outcomes[2].as_ref().unwrap_err().retryable());
    });
    assert_eq!(ledger.store().balance("ivy").unwrap(), 41);
    assert!(calls.lock().unwrap().contains(&5), "the five went as one group first: {:?}", calls);
    ledger.close();
}

/// Committed events reach the database file within moments, copied from the WAL by the
/// checkpointing thread rather than by the writer's commit once 10,000 pages have piled up.
#[test]
fn the_wal_is_copied_back_off_the_writers_commits() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let database = dir.path().join("fluxflow.db");
    let size = || std::fs::metadata(&database).unwrap().len();
    std::thread::sleep(fluxflow::ledger::checkpointer::EVERY * 4);
    let before = size();
    for n in 0..300 {
        let event = Event::from_value(json!({"id": format!("w{n}"), "type": "purchase", "actor_id": format!("m{n}"),
            "payload": {"note": "x".repeat(200)}}))
        .unwrap();
        store.write_events(&[write(&event, vec![points(&format!("m{n}"), 1)])]).unwrap();
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while size() <= before && std::time::Instant::now() < deadline {
        std::thread::sleep(fluxflow::ledger::checkpointer::EVERY);
    }
    assert!(size() > before, "the database file stayed at {before} bytes: nothing was checkpointed");
    assert_eq!(store.balance("m299").unwrap(), 1);
}
