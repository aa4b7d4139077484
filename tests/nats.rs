//! Events from NATS JetStream (`--nats`, CONTRACT §10) through the real binary and the machine's
//! nats-server (127.0.0.1:4222; `FLUXFLOW_TEST_NATS` names another): each test has a stream and
//! subjects of its own, deleted at the end. Without a server the tests say they skipped — unless
//! `CI=true`, where that is a failure.

#[macro_use]
mod common;

use std::time::Duration;

use common::nats::TestStream;
use common::pg::Store;
use common::{Server, wait_until};
use serde_json::{Value, json};

const RULES: &str = r#"
version: v1
engine: {event_workers: 8}
scenarios:
  - id: earn
    enabled: true
    event_types: [purchase]
    children:
      - action: {id: earn_points, type: reward_points, params: {operation: award, points_formula: payload.total}}
"#;

both_stores!(
    every_published_event_is_applied_once,
    each_members_events_are_applied_in_published_order,
    batches_go_through_the_stream_and_their_jobs_report_each_event,
);

/// The nodes of a test on this store (two sharing the database on PostgreSQL), all consuming the
/// stream.
fn nodes(store: &Store, stream: &TestStream, rules: &str, extra: &[&str]) -> Vec<Server> {
    let mut flags: Vec<String> = stream.flags();
    flags.extend(extra.iter().map(|s| (*s).to_owned()));
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    store.nodes_with(rules, &flags)
}

fn balance(server: &Server, actor: &str) -> i64 {
    server.get(&format!("/v1/actors/{actor}/balance")).1["balance"].as_i64().unwrap_or(-1)
}

fn settled(stream: &TestStream) -> bool {
    wait_until(Duration::from_secs(30), || stream.pending() == (0, 0))
}

/// 200 events of 8 members published to the stream, 20 of them twice under another message id
/// (so JetStream does not drop the copy and the ledger must): every event is applied once on
/// whichever node takes it, and the consumer ends with nothing pending.
fn every_published_event_is_applied_once(store: &Store) {
    let Some(stream) = TestStream::new() else { return };
    let servers = nodes(store, &stream, RULES, &[]);
    let actors: Vec<String> = (0..8).map(|i| format!("m{i}")).collect();
    let mut expected = vec![0i64; actors.len()];
    for i in 0..200 {
        let (slot, total) = (i % actors.len(), (i % 7 + 1) as i64);
        let actor = &actors[slot];
        let event = json!({"id": format!("e{i}"), "type": "purchase", "actor_id": actor, "payload": {"total": total}});
        let body = serde_json::to_vec(&event).unwrap();
        stream.publish(Some(actor), &body, Some(&format!("e{i}")));
        if i % 10 == 0 {
            stream.publish(Some(actor), &body, Some(&format!("copy-{i}")));
        }
        expected[slot] += total;
    }
    assert!(settled(&stream), "the consumer still has messages pending: {:?}", stream.pending());
    for (slot, actor) in actors.iter().enumerate() {
        assert_eq!(balance(&servers[0], actor), expected[slot], "{actor}'s balance");
    }
    let dir = servers[0].dir.path();
    assert_eq!(store.count(dir, "SELECT count(*) FROM events"), 200, "each event stored once");
    assert_eq!(store.count(dir, "SELECT count(*) FROM entries"), 200, "each event awarded once");
    let applied: f64 = servers.iter().map(|s| s.metric(r#"fluxflow_stream_messages_total{outcome="applied"}"#)).sum();
    // A message is delivered again only when its node let the ack wait run out; then it counts again.
    assert!(applied >= 220.0, "the copies are acknowledged as applied (idempotent): {applied}");
}

/// A message without an `id` takes its `Nats-Msg-Id`, else `<stream>:<sequence>`, and its time is
/// when JetStream stored it: delivered again, it is the same event.
#[test]
fn a_message_without_an_id_keeps_one_identity() {
    let Some(stream) = TestStream::new() else { return };
    let store = Store::sqlite();
    let servers = nodes(&store, &stream, RULES, &[]);
    let server = &servers[0];
    let event = br#"{"type": "purchase", "actor_id": "ida", "payload": {"total": 5}}"#;
    stream.publish(Some("ida"), event, Some("order-77"));
    stream.publish(Some("ida"), event, None);
    assert!(settled(&stream), "pending: {:?}", stream.pending());
    let ledger: Value = server.get("/v1/actors/ida/ledger").1;
    let mut ids: Vec<String> =
        ledger["entries"].as_array().unwrap().iter().map(|e| e["event_id"].as_str().unwrap().to_owned()).collect();
    ids.sort();
    let mut expected = ["order-77".to_owned(), format!("{}:2", stream.name)];
    expected.sort();
    assert_eq!(ids, expected);
}

/// What can never succeed is terminated, counted by outcome and logged with its stream sequence,
/// and the consumer goes on: invalid JSON, an unknown key, a message over the size limit, and an
/// id used before by an event with other content.
#[test]
fn bad_messages_are_terminated_counted_and_never_block_the_stream() {
    let Some(stream) = TestStream::new() else { return };
    let store = Store::sqlite();
    let servers = nodes(&store, &stream, RULES, &["--max-body-bytes", "1024"]);
    let server = &servers[0];
    let good = |id: &str, total: i64| {
        serde_json::to_vec(&json!({"id": id, "type": "purchase", "actor_id": "bea", "payload": {"total": total}}))
            .unwrap()
    };
    stream.publish(Some("bea"), &good("b1", 10), None);
    stream.publish(Some("bea"), b"{not json", None);
    stream.publish(Some("bea"), br#"{"type": "purchase", "actor_id": "bea", "colour": "red"}"#, None);
    let big = json!({"id": "b2", "type": "purchase", "actor_id": "bea", "payload": {"note": "x".repeat(2000)}});
    stream.publish(Some("bea"), &serde_json::to_vec(&big).unwrap(), None);
    stream.publish(Some("bea"), &good("b1", 99), Some("other-content"));
    stream.publish(Some("bea"), &good("b3", 5), None);
    assert!(settled(&stream), "pending: {:?}", stream.pending());
    assert_eq!(balance(server, "bea"), 15, "the good events on either side are applied");
    let count = |outcome: &str| server.metric(&format!(r#"fluxflow_stream_messages_total{{outcome="{outcome}"}}"#));
    assert_eq!(
        [count("applied"), count("invalid"), count("oversized"), count("conflict")],
        [2.0, 2.0, 1.0, 1.0],
        "{}",
        server.get_text("/metrics")
    );
    let log = server.log_text();
    for sequence in [2, 3, 4, 5] {
        assert!(
            log.contains(&format!("sequence={sequence}")) || log.contains(&format!("\"sequence\":{sequence}")),
            "message {sequence} is logged with its stream sequence: {log}"
        );
    }
}

/// Each member's events are applied in the order they were published, whichever node takes them:
/// a bonus on the fifth purchase goes to the fifth event published, for each of 10 members whose
/// 20 events are published one after another (so a member's messages are in flight on both
/// PostgreSQL nodes at once; without reading a subject's earlier messages back first, the bonus
/// went to the fourth in two runs out of two).
fn each_members_events_are_applied_in_published_order(store: &Store) {
    let Some(stream) = TestStream::new() else { return };
    let rules = r#"
version: v1
engine: {event_workers: 2, queue_depth: 4}
scenarios:
  - id: earn
    enabled: true
    event_types: [purchase]
    children:
      - action: {id: point, type: reward_points, params: {operation: award, points_formula: "1"}}
  - id: fifth
    enabled: true
    event_types: [purchase]
    children:
      - condition:
          id: is_fifth
          expression: "count('purchase', 'lifetime') == 5"
          children:
            - action: {id: bonus, type: reward_points, params: {operation: award, points_formula: "100"}}
"#;
    stream.create();
    let actors: Vec<String> = (0..10).map(|i| format!("o{i}")).collect();
    // Each member's events one after another, so the messages in flight at once are mostly one
    // member's, spread over the nodes.
    for actor in &actors {
        for i in 0..20 {
            let event = json!({"id": format!("{actor}-{i}"), "type": "purchase", "actor_id": actor});
            stream.publish(Some(actor), &serde_json::to_vec(&event).unwrap(), None);
        }
    }
    let servers = nodes(store, &stream, rules, &[]);
    assert!(settled(&stream), "pending: {:?}", stream.pending());
    let saturated: f64 =
        servers.iter().map(|s| s.metric(r#"fluxflow_stream_messages_total{outcome="saturated"}"#)).sum();
    for actor in &actors {
        let ledger: Value = servers[0].get(&format!("/v1/actors/{actor}/ledger?limit=100")).1;
        let bonuses: Vec<&str> = ledger["entries"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["points"] == 100)
            .map(|e| e["event_id"].as_str().unwrap())
            .collect();
        assert_eq!(bonuses, [format!("{actor}-4")], "{actor}'s fifth purchase got the bonus ({saturated} saturated)");
        assert_eq!(balance(&servers[0], actor), 120);
    }
}

/// A node killed with SIGKILL while it holds messages loses none: what it had not acknowledged
/// is delivered again (after the ack wait) to the node restarted on the same ledger, and applying
/// it again changes nothing.
#[test]
fn a_node_killed_mid_stream_loses_nothing_and_doubles_nothing() {
    let Some(stream) = TestStream::new() else { return };
    let store = Store::sqlite();
    let flags: Vec<String> = stream.flags().into_iter().chain(store.args()).collect();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    // All published first, so the node is killed with most of them still to take.
    stream.create();
    let total = 2_000;
    for i in 0..total {
        let actor = format!("k{}", i % 50);
        let event = json!({"id": format!("k{i}"), "type": "purchase", "actor_id": actor, "payload": {"total": 1}});
        stream.publish(Some(&actor), &serde_json::to_vec(&event).unwrap(), None);
    }
    let mut server = Server::start(RULES, &flags);
    let applied = |server: &Server| server.metric(r#"fluxflow_stream_messages_total{outcome="applied"}"#);
    assert!(wait_until(Duration::from_secs(30), || applied(&server) >= 100.0), "nothing applied yet");
    server.signal(nix::sys::signal::Signal::SIGKILL);
    let (_, in_flight) = stream.pending();
    assert!(in_flight > 0, "killed while holding messages it had not acknowledged");
    server.child.wait().unwrap();
    let args = Server::args_for(server.dir.path(), &flags);
    let dir = std::mem::replace(&mut server.dir, tempfile::tempdir().unwrap());
    let restarted = Server::spawn(dir, &args);
    assert!(settled(&stream), "pending after the restart: {:?}", stream.pending());
    let count = |sql: &str| store.count(restarted.dir.path(), sql);
    assert_eq!(count("SELECT count(*) FROM events"), total, "every event stored once");
    assert_eq!(count("SELECT count(*) FROM entries"), total, "every event awarded once");
    assert_eq!(count("SELECT sum(balance) FROM balances"), total);
}

/// With `--nats` a batch is published to the stream and answered once JetStream has it; whichever
/// node applies an event marks it in the job, so the job answers for each event on any node.
fn batches_go_through_the_stream_and_their_jobs_report_each_event(store: &Store) {
    let Some(stream) = TestStream::new() else { return };
    let servers = nodes(store, &stream, RULES, &[]);
    let events: Vec<Value> = (0..60)
        .map(|i| {
            let mut event = json!({"type": "purchase", "actor_id": format!("b{}", i % 6), "payload": {"total": 2}});
            if i % 3 != 0 {
                event["id"] = json!(format!("batch-{i}"));
            }
            event
        })
        .collect();
    let (status, receipt) = servers[0].post_json("/v1/events/batch", &json!(events));
    assert_eq!(
        (status, receipt["queued"].as_u64(), receipt["rejected"].as_u64()),
        (202, Some(60), Some(0)),
        "{receipt}"
    );
    let path = format!("/v1/jobs/{}", receipt["job_id"].as_str().unwrap());
    let mut job = Value::Null;
    let last = servers.last().unwrap();
    let done = wait_until(Duration::from_secs(30), || {
        job = last.get(&path).1;
        job["state"] == "done"
    });
    assert!(done, "{job}");
    for (i, event) in job["events"].as_array().unwrap().iter().enumerate() {
        assert_eq!(event["state"], "done", "event {i}: {event}");
        assert_eq!(event["result"]["actions_executed"][0]["points"], 2, "event {i}: {event}");
    }
    assert!(settled(&stream), "pending: {:?}", stream.pending());
    for b in 0..6 {
        assert_eq!(balance(&servers[0], &format!("b{b}")), 20, "b{b}'s balance");
    }
    let dir = servers[0].dir.path();
    assert_eq!(store.count(dir, "SELECT count(*) FROM events"), 60, "each event stored once");
    let applied: f64 = servers.iter().map(|s| s.metric(r#"fluxflow_stream_messages_total{outcome="applied"}"#)).sum();
    assert!(applied >= 60.0, "the batch's events came through the stream: {applied}");
}
