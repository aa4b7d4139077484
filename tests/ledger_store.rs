//! The ledger through its store trait: the invariants every backend must keep (exactly once,
//! balance = sum of entries, deductions never overdraw, jobs survive a reopen, group commit),
//! written against `dyn LedgerStore` so the PostgreSQL backend runs the same checks; plus the
//! SQLite-specific durable settings and start-up faults.

use std::sync::Arc;

use fluxflow::actions::{Outcome, Plan, PointsChange};
use fluxflow::event::Event;
use fluxflow::graph::{Stacked, StackingKey};
use fluxflow::ledger::sqlite::SqliteStore;
use fluxflow::ledger::{
    ActionWrite, Applied, EventWrite, Fingerprint, HistoryPage, Ledger, LedgerError, LedgerStore, NewJob, PendingEvent,
    PointsWrite, fingerprint,
};
use fluxflow::result::{ActionResult, EventResult, Job};
use serde_json::json;

fn event(id: &str, actor: &str) -> Event {
    Event::from_value(json!({"id": id, "type": "t", "actor_id": actor})).unwrap()
}

fn points(actor: &str, amount: i64) -> ActionWrite {
    ActionWrite::Points(PointsWrite {
        actor_id: actor.into(),
        action_id: "act".into(),
        scenario_id: "sc".into(),
        change: PointsChange { amount, expiry_days: Some(30) },
        reason: Some("because".into()),
    })
}

/// A write whose result lists each outcome as an action.
fn write(ev: &Event, actions: Vec<ActionWrite>) -> EventWrite {
    let id = ev.id.clone();
    let stacking = (0..actions.len()).map(|i| StackingKey { scenario: i as u32, group: None }).collect();
    EventWrite {
        event_id: ev.id.clone(),
        fresh_id: ev.generated_id,
        fingerprint: fingerprint(ev),
        actions,
        stacking,
        job: None,
        build_result: Box::new(move |stacked: &Stacked| EventResult {
            event_id: id,
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
        }),
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
    let err = SqliteStore::open(dir.path()).err().unwrap().to_string();
    assert!(err.contains("fluxflow.db is not a usable SQLite ledger"), "{err}");

    let file = dir.path().join("plain-file");
    std::fs::write(&file, b"x").unwrap();
    let err = SqliteStore::open(&file).err().unwrap().to_string();
    assert!(err.starts_with("cannot open the ledger: cannot create the data directory"), "{err}");
}

/// A backend under test: opens (or reopens) the same store.
trait Backend {
    fn open(&self) -> Box<dyn LedgerStore>;
}

struct Sqlite(tempfile::TempDir);

impl Sqlite {
    fn new() -> Self {
        Sqlite(tempfile::tempdir().unwrap())
    }
}

impl Backend for Sqlite {
    fn open(&self) -> Box<dyn LedgerStore> {
        Box::new(SqliteStore::open(self.0.path()).unwrap())
    }
}

#[test]
fn sqlite_exactly_once_conflicts_and_balances() {
    check_exactly_once_conflicts_and_balances(&Sqlite::new());
}

#[test]
fn sqlite_jobs_are_stored_and_pending_events_survive_a_reopen() {
    check_jobs_survive_a_reopen(&Sqlite::new());
}

#[test]
fn sqlite_the_writer_groups_concurrent_events_and_answers_each() {
    check_group_commit(&Sqlite::new());
}

fn check_exactly_once_conflicts_and_balances(backend: &dyn Backend) {
    let store = backend.open();
    let e1 = event("e1", "ann");
    let applied =
        store.write_events(vec![write(&e1, vec![points("ann", 50)]), write(&e1, vec![points("ann", 50)])]).unwrap();
    assert!(matches!(applied[0], Applied::Fresh(_)));
    assert!(matches!(applied[1], Applied::Replayed(_)), "same id in the same group: applied once");
    let other = Event::from_value(json!({"id": "e1", "type": "other", "actor_id": "ann"})).unwrap();
    assert_eq!(store.write_events(vec![write(&other, vec![points("ann", 5)])]).unwrap(), vec![Applied::Conflict]);
    assert_eq!(store.balance("ann").unwrap(), 50);
    assert_eq!(store.balance("nobody").unwrap(), 0);

    // A deduction that would overdraw is refused and writes nothing; one that fits is written.
    let e2 = event("e2", "ann");
    let Applied::Fresh(result) = &store.write_events(vec![write(&e2, vec![points("ann", -60)])]).unwrap()[0] else {
        panic!()
    };
    assert!(!result.actions_executed[0].success);
    assert_eq!(result.actions_executed[0].message, "InsufficientBalance { wanted: 60, balance: 50 }");
    let e3 = event("e3", "ann");
    store
        .write_events(vec![write(&e3, vec![points("ann", -20), ActionWrite::Decided(Outcome::Done(Plan::Nothing))])])
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
}

fn check_jobs_survive_a_reopen(backend: &dyn Backend) {
    {
        let store = backend.open();
        let events: Vec<Arc<Event>> = (0..3).map(|i| Arc::new(event(&format!("b{i}"), "bob"))).collect();
        store.store_job(&NewJob { job_id: "job1".into(), events, queued: 2 }).unwrap();
        let mut done = write(&event("b0", "bob"), vec![points("bob", 1)]);
        done.job = Some(("job1".into(), 0));
        store.write_events(vec![done]).unwrap();
    }
    let store = backend.open();
    let pending = store.pending_events().unwrap();
    assert_eq!(pending.len(), 1, "b1 is accepted and not processed; b2 was rejected");
    assert_eq!((pending[0].job_id.as_str(), pending[0].index, pending[0].event.id.as_str()), ("job1", 1, "b1"));
    let job = store.job("job1").unwrap().unwrap();
    assert_eq!((job.state.as_str(), job.total, job.queued, job.rejected, job.done), ("queued", 3, 2, 1, 1));
    assert!(job.events[0].result.is_some());
}

/// A store that records how many events each `write_events` call (one transaction) carried.
struct GroupSizes {
    inner: Box<dyn LedgerStore>,
    sizes: Arc<std::sync::Mutex<Vec<usize>>>,
}

impl LedgerStore for GroupSizes {
    fn write_events(&self, events: Vec<EventWrite>) -> Result<Vec<Applied>, LedgerError> {
        self.sizes.lock().unwrap().push(events.len());
        self.inner.write_events(events)
    }
    fn store_job(&self, job: &NewJob) -> Result<(), LedgerError> {
        self.inner.store_job(job)
    }
    fn stored_result(&self, event_id: &str) -> Result<Option<(Fingerprint, EventResult)>, LedgerError> {
        self.inner.stored_result(event_id)
    }
    fn balance(&self, actor_id: &str) -> Result<i64, LedgerError> {
        self.inner.balance(actor_id)
    }
    fn history(&self, actor_id: &str, limit: usize, before: Option<i64>) -> Result<HistoryPage, LedgerError> {
        self.inner.history(actor_id, limit, before)
    }
    fn job(&self, job_id: &str) -> Result<Option<Job>, LedgerError> {
        self.inner.job(job_id)
    }
    fn pending_events(&self) -> Result<Vec<PendingEvent>, LedgerError> {
        self.inner.pending_events()
    }
    fn ping(&self) -> Result<(), LedgerError> {
        self.inner.ping()
    }
    fn probe_write(&self) -> Result<(), LedgerError> {
        self.inner.probe_write()
    }
}

fn check_group_commit(backend: &dyn Backend) {
    let sizes = Arc::new(std::sync::Mutex::new(Vec::new()));
    let store = GroupSizes { inner: backend.open(), sizes: Arc::clone(&sizes) };
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
