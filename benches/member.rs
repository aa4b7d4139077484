//! Member functions over a short and a long history (issue 13's speed item): counting a member's
//! events of a type in a calendar month, in a rolling 30 days and in all time (what `first()`
//! reads), and summing a payload number over the month and the 30 days (what `sum()` reads), for
//! a member with 10 earlier events and one with 100,000 spread over five years, on the embedded
//! ledger (SQLite: running day and hour counters for counts, running sums within the month for
//! the sums the rules read, the partial hours at a window's ends from the index) and, when a
//! server answers (`FLUXFLOW_TEST_POSTGRES`, as the tests), on PostgreSQL (day and hour
//! counters of both; groups `member_count_postgres` and `member_sum_postgres`).
//!
//! `cargo bench --bench member`

use std::hint::black_box;
use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use fluxflow::calendar::{Period, Zone};
use fluxflow::event::Event;
use fluxflow::expr::ast::Expr;
use fluxflow::expr::parser::parse;
use fluxflow::ledger::member::SumKey;
use fluxflow::ledger::postgres::PostgresStore;
use fluxflow::ledger::postgres::scratch::ScratchDatabase;
use fluxflow::ledger::sqlite::SqliteStore;
use fluxflow::ledger::{EventWrite, LedgerStore, Planned, ResultPlan, WritePlan, fingerprint};
use fluxflow::result::EventResult;

const DAY_MICROS: i64 = 86_400 * 1_000_000;
/// The moment the member functions are asked at.
const NOW: &str = "2026-11-01T12:00:00Z";

/// Fills `store` so that its member `m` has `history` purchases spread evenly over the five
/// years before [`NOW`].
fn fill(store: &dyn LedgerStore, history: usize) {
    store.track_history(&["purchase".to_owned()]).expect("purchases indexed");
    store.track_sums(std::slice::from_ref(&total_key())).expect("their totals counted");
    let now: jiff::Timestamp = NOW.parse().expect("a time");
    let span = 5 * 365 * DAY_MICROS;
    let step = span / i64::try_from(history).unwrap_or(1).max(1);
    let times: Vec<i64> =
        (0..history).map(|i| now.as_microsecond() - span + step * i64::try_from(i).unwrap_or(0)).collect();
    for chunk in times.chunks(512) {
        let writes: Vec<EventWrite> = chunk
            .iter()
            .enumerate()
            .map(|(i, at)| {
                let time = jiff::Timestamp::from_microsecond(*at).expect("a time").to_string();
                let id = format!("e{at}-{i}");
                let value = serde_json::json!({"id": id, "type": "purchase", "actor_id": "m", "occurred_at": time,
                                               "payload": {"total": 12.5}});
                let event = Event::from_value(value).expect("an event");
                EventWrite {
                    event_id: event.id.clone(),
                    fresh_id: false,
                    fingerprint: fingerprint(&event),
                    plan: WritePlan::Ready(Planned {
                        actions: Vec::new(),
                        stacking: Vec::new(),
                        limits: Vec::new(),
                        result: ResultPlan::Build(Box::new(|_| EventResult::default())),
                    }),
                    job: None,
                    event: Arc::new(event),
                    position: None,
                }
            })
            .collect();
        store.write_events(&writes).expect("the history is written");
    }
}

/// A filled ledger: the suffix of its criterion groups, the store, and what keeps its file or
/// database (dropped after the store).
type Ledger = (&'static str, Box<dyn LedgerStore>, Box<dyn std::any::Any>);

/// A ledger of each store, filled for `history`: SQLite, and PostgreSQL when a server answers.
fn ledgers(history: usize) -> Vec<Ledger> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let sqlite = SqliteStore::open(dir.path()).expect("a ledger");
    fill(&sqlite, history);
    let mut ledgers: Vec<Ledger> = vec![("", Box::new(sqlite), Box::new(dir))];
    match ScratchDatabase::create() {
        Ok(db) => {
            let store = PostgresStore::connect(&db.url, 2).expect("a PostgreSQL ledger");
            fill(&store, history);
            ledgers.push(("_postgres", Box::new(store), Box::new(db)));
        }
        Err(e) => eprintln!("PostgreSQL skipped: {e}"),
    }
    ledgers
}

fn counts(c: &mut Criterion) {
    let now: jiff::Timestamp = NOW.parse().expect("a time");
    let utc = Zone::utc();
    let windows = [
        ("month", Period::Month.bounds(now, &utc)),
        ("30d", Period::RollingDays(30).bounds(now, &utc)),
        ("all time", (jiff::Timestamp::MIN, jiff::Timestamp::MAX)),
    ];
    for history in [10, 100_000] {
        for (store_name, store, _guard) in ledgers(history) {
            let mut group = c.benchmark_group(format!("member_count{store_name}"));
            for (name, (from, to)) in windows {
                let (from, to) = (from.as_microsecond(), to.as_microsecond());
                group.bench_function(BenchmarkId::new(name, history), |b| {
                    b.iter(|| black_box(store.member_count("m", "purchase", from, to).expect("a count")))
                });
            }
            group.finish();
        }
    }
}

/// The sum `sum('purchase', 'payload.total', period)` reads.
fn total_key() -> SumKey {
    let Ok(Expr::Path(path, _)) = parse("payload.total") else { unreachable!("a path") };
    SumKey::new("purchase", &path)
}

/// What `sum('purchase', 'payload.total', period)` reads: the counters of the sum.
fn sums(c: &mut Criterion) {
    let key = total_key();
    let now: jiff::Timestamp = NOW.parse().expect("a time");
    let utc = Zone::utc();
    let windows = [("month", Period::Month.bounds(now, &utc)), ("30d", Period::RollingDays(30).bounds(now, &utc))];
    for history in [10, 100_000] {
        for (store_name, store, _guard) in ledgers(history) {
            let mut group = c.benchmark_group(format!("member_sum{store_name}"));
            for (name, (from, to)) in windows {
                let (from, to) = (from.as_microsecond(), to.as_microsecond());
                group.bench_function(BenchmarkId::new(name, history), |b| {
                    b.iter(|| black_box(store.member_sum("m", &key, from, to).expect("a sum").expect("kept")))
                });
            }
            group.finish();
        }
    }
}

criterion_group!(benches, counts, sums);
criterion_main!(benches);
