//! How fast the stream intake consumes (issue 14's speed item), run by hand with the release
//! build (the figures go to BENCHMARKS.md):
//!
//! `CARGO_TARGET_DIR=/var/tmp/fluxflow-target cargo test --release --test stream_bench -- --ignored --nocapture --test-threads 1`
//!
//! - **Drain rate**: 20,000 events of 200 members published before the nodes start; events per
//!   second from the first commit to the last, with one node and with two on one PostgreSQL
//!   database, and how far apart one member's commits are (the median).
//! - **Publish-to-commit latency**: events published at a steady 500 per second (5 every 10 ms) for 10 s to
//!   running nodes; p50 and p99 of commit time less the time JetStream stored each.

mod common;

use std::time::{Duration, Instant};

use common::nats::TestStream;
use common::pg::Store;
use common::{Server, wait_until};
use serde_json::json;

const RULES: &str = "version: v1\nscenarios:\n  - id: earn\n    enabled: true\n    event_types: [purchase]\n    children:\n      - action: {id: earn_points, type: reward_points, params: {operation: award, points_formula: payload.total}}\n";
const MEMBERS: usize = 200;

fn messages(from: usize, count: usize) -> Vec<(String, Vec<u8>, String)> {
    (from..from + count)
        .map(|i| {
            let (actor, id) = (format!("m{}", i % MEMBERS), format!("s{i}"));
            let event = json!({"id": id, "type": "purchase", "actor_id": actor, "payload": {"total": 1}});
            (actor, serde_json::to_vec(&event).unwrap(), id)
        })
        .collect()
}

fn nodes(stream: &TestStream, store: &Store, count: usize) -> Vec<Server> {
    let mut flags: Vec<String> = stream.flags();
    flags.extend(store.args());
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    (0..count).map(|_| Server::start(RULES, &flags)).collect()
}

/// Events per second from the first commit to the last.
fn drain(node_count: usize) -> f64 {
    let (stream, store) = (TestStream::new().unwrap(), Store::postgres().unwrap());
    let Store::Postgres(db) = &store else { unreachable!() };
    stream.create();
    let total = 20_000;
    TestStream::publish_all(&stream.url, &stream.prefix, &messages(0, total));
    let _nodes = nodes(&stream, &store, node_count);
    assert!(wait_until(Duration::from_secs(600), || stream.pending() == (0, 0)));
    assert_eq!(db.query_i64("SELECT count(*) FROM events").unwrap(), total as i64);
    let span = db.query_i64("SELECT max(processed_at) - min(processed_at) FROM events").unwrap();
    let gap = db.query_i64("SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY gap)::bigint FROM (SELECT processed_at - lag(processed_at) OVER (PARTITION BY actor_id ORDER BY processed_at) AS gap FROM events) g WHERE gap IS NOT NULL").unwrap();
    eprintln!("median gap between one member's commits: {:.1} ms", gap as f64 / 1e3);
    total as f64 / (span as f64 / 1e6)
}

#[test]
#[ignore]
fn stream_speed() {
    for node_count in [1, 2, 1, 2] {
        eprintln!("drain, {node_count} node(s): {:.0} events/s", drain(node_count));
    }
    let (stream, store) = (TestStream::new().unwrap(), Store::postgres().unwrap());
    let Store::Postgres(db) = &store else { unreachable!() };
    stream.create();
    let _nodes = nodes(&stream, &store, 2);
    let started = Instant::now();
    // 5 events every 10 ms: a steady flow, not bursts whose tail would wait behind their head.
    for slice in 0..1_000 {
        TestStream::publish_all(&stream.url, &stream.prefix, &messages(slice * 5, 5));
        if let Some(rest) = Duration::from_millis(10 * (slice as u64 + 1)).checked_sub(started.elapsed()) {
            std::thread::sleep(rest);
        }
    }
    assert!(wait_until(Duration::from_secs(120), || stream.pending() == (0, 0)));
    let percentile = |p: f64| {
        db.query_i64(&format!(
            "SELECT percentile_cont({p}) WITHIN GROUP (ORDER BY processed_at - occurred_at) FROM events"
        ))
        .unwrap()
    };
    eprintln!(
        "publish to commit at 500 events/s, 2 nodes: p50 {:.1} ms, p99 {:.1} ms",
        percentile(0.5) as f64 / 1e3,
        percentile(0.99) as f64 / 1e3
    );
}
