//! Admission with a real server: 429 only when the queue is full, 504 past the timeout (the
//! event still completes), 503 while shutting down, /readyz 503 above 80% full, and a graceful
//! shutdown that evaluates every queued event. A `test_sleep` action (compiled only for tests)
//! holds the single worker busy.

mod common;

use std::time::Duration;

use common::{Server, wait_until};
use nix::sys::signal::Signal;
use serde_json::json;

fn slow_rules(workers: u32, depth: u32, timeout_ms: u32, sleep_ms: u32) -> String {
    format!(
        r#"
version: v1
engine: {{event_workers: {workers}, queue_depth: {depth}, event_timeout_ms: {timeout_ms}}}
scenarios:
  - id: slow
    enabled: true
    event_types: [slow]
    children:
      - action: {{id: nap, type: test_sleep, params: {{ms: {sleep_ms}}}}}
  - id: quick
    enabled: true
    event_types: [quick]
    children:
      - action: {{id: hello, type: reward_points, params: {{operation: award, points: 1}}}}
"#
    )
}

fn slow_batch(n: usize) -> String {
    json!((0..n).map(|_| json!({"type": "slow"})).collect::<Vec<_>>()).to_string()
}

#[test]
fn queue_full_is_429_and_readyz_turns_503() {
    let server = Server::start(&slow_rules(1, 2, 5000, 700), &[]);
    // One event occupies the only worker...
    assert_eq!(server.post("/v1/events/batch", &slow_batch(1)).0, 202);
    assert!(wait_until(Duration::from_secs(5), || server.get("/readyz").1["queue_utilization"] == 0.0));
    // ...two more fill the queue (depth 2)...
    let (status, receipt) = server.post("/v1/events/batch", &slow_batch(2));
    assert_eq!((status, receipt["queued"].as_u64(), receipt["rejected"].as_u64()), (202, Some(2), Some(0)));
    let (status, ready) = server.get("/readyz");
    assert_eq!(
        (status, ready["status"].as_str(), ready["queue_utilization"].as_f64()),
        (503, Some("overloaded"), Some(1.0))
    );
    // ...so the next is refused, with 429 and nothing else.
    let (status, body) = server.post("/v1/events", r#"{"type":"quick","actor_id":"u"}"#);
    assert_eq!((status, body["code"].as_str()), (429, Some("queue_full")), "{body}");
    assert_eq!(body["error"], "event queue full (capacity 2)");
    let (status, receipt) = server.post("/v1/events/batch", &slow_batch(1));
    assert_eq!((status, receipt["queued"].as_u64(), receipt["rejected"].as_u64()), (202, Some(0), Some(1)));
    assert_eq!(server.metric("ifttt_events_dropped_total"), 2.0);
    // Once the worker catches up, the service is ready again and the queued events were all evaluated.
    assert!(wait_until(Duration::from_secs(10), || server.get("/readyz").0 == 200));
    assert!(wait_until(Duration::from_secs(10), || server.metric("ifttt_events_processed_total") == 3.0));
    assert_eq!(server.post("/v1/events", r#"{"type":"quick","actor_id":"u"}"#).0, 200);
}

#[test]
fn timeout_is_504_and_the_event_still_completes() {
    let server = Server::start(&slow_rules(1, 10, 200, 600), &[]);
    let (status, body) = server.post("/v1/events", r#"{"id":"late-1","type":"slow"}"#);
    assert_eq!((status, body["code"].as_str()), (504, Some("timeout")), "{body}");
    assert_eq!(body["error"], "event late-1 did not finish within 200 ms; it will still complete");
    assert!(wait_until(Duration::from_secs(5), || server.metric("ifttt_events_processed_total") == 1.0));
}

#[test]
fn shutting_down_is_503_then_exit_0() {
    let mut server = Server::start(&slow_rules(1, 10, 5000, 10), &["--shutdown-grace-ms", "1500"]);
    assert_eq!(server.post("/v1/events", r#"{"type":"quick","actor_id":"u"}"#).0, 200);
    server.signal(Signal::SIGTERM);
    assert!(wait_until(Duration::from_secs(3), || server.get("/readyz").1["status"] == "shutting_down"));
    assert_eq!(server.get("/readyz").0, 503);
    let (status, body) = server.post("/v1/events", r#"{"type":"quick","actor_id":"u"}"#);
    assert_eq!((status, body["code"].as_str()), (503, Some("unavailable")), "{body}");
    assert_eq!(server.post("/v1/events/batch", &slow_batch(1)).0, 503);
    assert_eq!(server.wait_exit(Duration::from_secs(10)), Some(0));
}

#[test]
fn sigterm_evaluates_every_accepted_event_before_exit() {
    let mut server = Server::start(&slow_rules(2, 1000, 5000, 3), &[]);
    let mut accepted = 0;
    for _ in 0..4 {
        let (status, receipt) = server.post("/v1/events/batch", &slow_batch(100));
        assert_eq!(status, 202);
        accepted += receipt["queued"].as_u64().unwrap();
    }
    server.signal(Signal::SIGTERM);
    assert_eq!(server.wait_exit(Duration::from_secs(30)), Some(0), "{}", server.log_text());
    let log = server.log_text();
    let done = log.lines().find(|l| l.contains("shutdown complete")).unwrap_or_else(|| panic!("no final line:\n{log}"));
    assert!(done.contains(&format!("enqueued={accepted} processed={accepted}")), "{done}");
    assert_eq!(accepted, 400);
}

#[test]
fn sigint_also_shuts_down_gracefully() {
    let mut server = Server::start(&slow_rules(1, 10, 5000, 1), &[]);
    server.signal(Signal::SIGINT);
    assert_eq!(server.wait_exit(Duration::from_secs(10)), Some(0));
}
