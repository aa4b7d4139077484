//! Within a batch, the events of one actor are applied in the batch's order (events of different
//! actors may run in parallel): 50 batches sent at once, each mixing several actors whose award
//! and deduct sequences only add up when applied in order, must give every balance and every
//! action outcome of applying each actor's events one after another.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{Server, wait_until};
use serde_json::{Value, json};

const RULES: &str = r#"
version: v1
engine: {event_workers: 8}
scenarios:
  - id: earn
    enabled: true
    event_types: [award]
    children:
      - action: {id: earn_points, type: reward_points, params: {operation: award, points_formula: payload.points}}
  - id: spend
    enabled: true
    event_types: [deduct]
    children:
      - action: {id: spend_points, type: reward_points, params: {operation: deduct, points_formula: payload.points}}
  - id: slow
    enabled: true
    event_types: [slow]
    children:
      - action: {id: nap, type: test_sleep, params: {ms: 600}}
      - action: {id: slow_points, type: reward_points, params: {operation: award, points: 1}}
"#;

const BATCHES: usize = 50;
const ACTORS_PER_BATCH: usize = 4;
const EVENTS_PER_ACTOR: usize = 6;

/// A small deterministic generator (no dependency, same batches on every run).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

/// One event of a batch and what applying the batch in order must do with it.
struct Expected {
    actor: String,
    success: bool,
    points: i64,
}

/// A batch whose actors' sequences depend on order: a deduction takes exactly the balance built
/// by the events before it (or one point more, and fails), so run early it fails, or run late
/// it lets a later one fail. Each actor's events keep their order; actors are interleaved.
fn batch(b: usize, rng: &mut Lcg) -> (Vec<Value>, Vec<Expected>, BTreeMap<String, i64>) {
    let mut sequences: Vec<Vec<(String, i64)>> = Vec::new();
    for _ in 0..ACTORS_PER_BATCH {
        let mut balance = 0;
        let mut steps = Vec::new();
        for step in 0..EVENTS_PER_ACTOR {
            if step % 2 == 0 || balance == 0 {
                let points = 1 + rng.below(20) as i64;
                balance += points;
                steps.push(("award".to_owned(), points));
            } else {
                let points = balance + i64::from(rng.below(4) == 0);
                if points <= balance {
                    balance -= points;
                }
                steps.push(("deduct".to_owned(), points));
            }
        }
        sequences.push(steps);
    }
    let mut cursors = [0; ACTORS_PER_BATCH];
    let (mut events, mut expected, mut balances) = (Vec::new(), Vec::new(), BTreeMap::new());
    while cursors.iter().any(|c| *c < EVENTS_PER_ACTOR) {
        let a = rng.below(ACTORS_PER_BATCH as u64) as usize;
        if cursors[a] == EVENTS_PER_ACTOR {
            continue;
        }
        let (kind, points) = &sequences[a][cursors[a]];
        let actor = format!("b{b}-a{a}");
        let id = format!("b{b}-a{a}-{}", cursors[a]);
        cursors[a] += 1;
        events.push(json!({"id": id, "type": kind, "actor_id": actor, "payload": {"points": points}}));
        let balance: &mut i64 = balances.entry(actor.clone()).or_default();
        let (success, change) = match kind.as_str() {
            "award" => (true, *points),
            _ if *balance >= *points => (true, -points),
            _ => (false, 0),
        };
        *balance += change;
        expected.push(Expected { actor, success, points: change });
    }
    // An event without an actor runs on its own.
    events.push(json!({"id": format!("b{b}-anonymous"), "type": "award", "payload": {"points": 1}}));
    expected.push(Expected { actor: String::new(), success: false, points: 0 });
    (events, expected, balances)
}

#[test]
fn fifty_batches_mixing_actors_apply_each_actors_events_in_order() {
    let server = Server::start(RULES, &["--ledger", "sqlite"]);
    let mut rng = Lcg(10);
    let batches: Vec<_> = (0..BATCHES).map(|b| batch(b, &mut rng)).collect();
    // Sent at once, from several threads.
    let jobs: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = batches
            .iter()
            .map(|(events, _, _)| {
                let server = &server;
                s.spawn(move || {
                    let (status, receipt) = server.post_json("/v1/events/batch", &json!(events));
                    assert_eq!((status, receipt["rejected"].as_u64()), (202, Some(0)), "{receipt}");
                    receipt["job_id"].as_str().unwrap().to_owned()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });

    let mut failures = Vec::new();
    for (job_id, (events, expected, balances)) in jobs.iter().zip(&batches) {
        let path = format!("/v1/jobs/{job_id}");
        let mut job = Value::Null;
        assert!(
            wait_until(Duration::from_secs(60), || {
                job = server.get(&path).1;
                job["state"] == "done"
            }),
            "{job}"
        );
        for (i, (event, want)) in events.iter().zip(expected).enumerate() {
            let action = &job["events"][i]["result"]["actions_executed"][0];
            let got = (action["success"].as_bool(), action["points"].as_i64().unwrap_or(0));
            if got != (Some(want.success), want.points) {
                failures.push(format!(
                    "{} ({}): expected success {} and {} points, got {action}",
                    event["id"], want.actor, want.success, want.points
                ));
            }
        }
        for (actor, balance) in balances {
            let got = server.get(&format!("/v1/actors/{actor}/balance")).1["balance"].as_i64();
            if got != Some(*balance) {
                failures.push(format!("{actor}: expected balance {balance}, got {got:?}"));
            }
        }
    }
    assert!(failures.is_empty(), "{} differences from applying in order:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn a_ledger_failure_mid_chain_puts_the_rest_of_the_actors_events_back_in_order() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("rules.yaml"), RULES).unwrap();
    let marker = dir.path().join("fail-now");
    let args = Server::args_for(dir.path(), &["--ledger", "sqlite"]);
    let server = Server::spawn_with_env(dir, &args, &[("FLUXFLOW_TEST_LEDGER_FAULT_FILE", &marker)]);
    let event = |i: usize, kind: &str, points: i64| json!({"id": format!("gus-{i}"), "type": kind, "actor_id": "gus", "payload": {"points": points}});
    // 10, then a slow +1 during which writes start failing, then -11 (needs both before it), +5, -5.
    let batch = json!([
        event(0, "award", 10),
        event(1, "slow", 0),
        event(2, "deduct", 11),
        event(3, "award", 5),
        event(4, "deduct", 5)
    ]);
    let (status, receipt) = server.post_json("/v1/events/batch", &batch);
    assert_eq!(status, 202, "{receipt}");
    let path = format!("/v1/jobs/{}", receipt["job_id"].as_str().unwrap());
    assert!(wait_until(Duration::from_secs(10), || server.get(&path).1["events"][0]["state"] == "done"));
    std::fs::write(&marker, b"fail").unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || server
            .log_text()
            .contains("later events of the same actor wait for it")),
        "the slow event's write failed and the rest of the chain was put back:\n{}",
        server.log_text()
    );
    assert_eq!(server.get(&path).1["events"][2]["state"], "queued", "nothing overtook the failed event");
    std::fs::remove_file(&marker).unwrap();
    let mut job = Value::Null;
    assert!(
        wait_until(Duration::from_secs(20), || {
            job = server.get(&path).1;
            job["state"] == "done"
        }),
        "{job}"
    );
    let points: Vec<Option<i64>> = (0..5)
        .map(|i| {
            let actions = job["events"][i]["result"]["actions_executed"].as_array().cloned().unwrap_or_default();
            let points = actions.iter().find(|a| a["type"] == "reward_points");
            points.filter(|a| a["success"] == true).and_then(|a| a["points"].as_i64())
        })
        .collect();
    assert_eq!(points, [Some(10), Some(1), Some(-11), Some(5), Some(-5)], "{job}");
    assert_eq!(server.get("/v1/actors/gus/balance").1["balance"], 0);
}
