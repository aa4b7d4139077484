//! The durable ledger over real HTTP: idempotency under concurrency, deductions, the actor
//! endpoints, batch jobs that survive a kill, and a ledger that fails while running — each on
//! SQLite and on PostgreSQL (`both_stores!`: `sqlite::NAME`, `postgres::NAME`).

#[macro_use]
mod common;

use std::time::Duration;

use common::pg::Store;
use common::{EXAMPLE_EVENT, Server, bin, repo_path, wait_until};
use serde_json::{Value, json};

const LOYALTY: &str = r#"
version: v1
engine: {event_workers: 4}
scenarios:
  - id: earn
    enabled: true
    event_types: [purchase]
    children:
      - action:
          id: earn_points
          type: reward_points
          params: {operation: award, points_formula: payload.amount, reason: Purchase, expiry_days: 365}
  - id: spend
    enabled: true
    event_types: [redeem]
    children:
      - action:
          id: spend_points
          type: reward_points
          params: {operation: deduct, points_formula: payload.amount, reason: Reward redeemed}
  - id: slow
    enabled: true
    event_types: [slow]
    children:
      - action: {id: nap, type: test_sleep, params: {ms: 300}}
      - action: {id: slow_points, type: reward_points, params: {operation: award, points: 1}}
"#;

fn sqlite(rules: &str) -> Server {
    Server::start(rules, &["--ledger", "sqlite"])
}

fn start(store: &Store, rules: &str) -> Server {
    Server::start(rules, &["--ledger", &store.flag()])
}

both_stores!(
    same_id_sent_concurrently_is_applied_once,
    deductions_never_overdraw,
    actor_endpoints_page_newest_first,
    batch_events_accepted_before_a_kill_are_processed_after_restart,
    a_failing_ledger_answers_503_and_stores_nothing,
    sigterm_stores_every_accepted_batch_event_before_exit,
    simulate_reads_the_store_through_the_same_core_and_writes_nothing,
    a_nul_character_in_a_name_is_refused_on_both_stores,
    a_fresh_answer_is_the_stored_result,
);

/// A fresh event's answer is sent as the ledger stored it: a retry answers the same result,
/// marked `replayed`; a traced event's answer still carries its trace (traces are not stored).
fn a_fresh_answer_is_the_stored_result(store: &Store) {
    let server = start(store, LOYALTY);
    let event = json!({"id": "f1", "type": "purchase", "actor_id": "ann", "payload": {"amount": 7}});
    let (status, fresh) = server.post_json("/v1/events", &event);
    assert_eq!((status, fresh["actions_executed"][0]["points"].as_i64()), (200, Some(7)), "{fresh}");
    assert_eq!((fresh.get("replayed"), fresh.get("trace")), (None, None), "{fresh}");
    let (_, mut replay) = server.post_json("/v1/events", &event);
    assert_eq!(replay.as_object_mut().unwrap().remove("replayed"), Some(json!(true)));
    assert_eq!(replay, fresh);
    let traced = json!({"id": "f2", "type": "purchase", "actor_id": "ann", "payload": {"amount": 1}});
    let (status, answer) = server.post_json("/v1/events?trace=true", &traced);
    assert_eq!(status, 200, "{answer}");
    assert!(answer["trace"]["scenarios"].is_array(), "{answer}");
    let (_, replay) = server.post_json("/v1/events", &traced);
    assert_eq!((replay["replayed"].as_bool(), replay.get("trace")), (Some(true), None), "{replay}");
}

/// PostgreSQL text cannot hold NUL, so such an event would fail its whole group there: it is
/// refused before it reaches any ledger, the same on both stores, and its group-mates go through.
fn a_nul_character_in_a_name_is_refused_on_both_stores(store: &Store) {
    let server = start(store, LOYALTY);
    for bad in [
        json!({"id": "a\u{0}b", "type": "purchase", "actor_id": "ann", "payload": {"amount": 1}}),
        json!({"type": "purchase", "actor_id": "a\u{0}n", "payload": {"amount": 1}}),
        json!({"type": "pur\u{0}chase", "actor_id": "ann", "payload": {"amount": 1}}),
    ] {
        let (status, body) = server.post_json("/v1/events", &bad);
        assert_eq!((status, body["code"].as_str()), (400, Some("invalid_event")), "{body}");
        assert!(body["error"].as_str().unwrap().contains("control character (U+0000)"), "{body}");
    }
    // A NUL inside the payload is stored (as JSON text it is escaped).
    let (status, body) = server.post_json(
        "/v1/events",
        &json!({"id": "p1", "type": "purchase", "actor_id": "ann", "payload": {"amount": 2, "note": "x\u{0}y"}}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(server.get("/v1/actors/ann/balance").1["balance"], 2);
}

fn simulate_reads_the_store_through_the_same_core_and_writes_nothing(store: &Store) {
    let server = start(store, LOYALTY);
    assert_eq!(server.post_json("/v1/events", &purchase("real-1", "ann", 30)).0, 200);
    let redeem =
        |id: &str, amount: i64| json!({"id": id, "type": "redeem", "actor_id": "ann", "payload": {"amount": amount}});
    let (status, body) = server.post_json(
        "/v1/simulate",
        &json!([purchase("real-1", "ann", 30), redeem("s1", 45), purchase("s2", "ann", 20), redeem("s3", 45)]),
    );
    assert_eq!(status, 200, "{body}");
    let results = body["results"].as_array().unwrap();
    let verdicts: Vec<&str> = results.iter().map(|r| r["ledger"].as_str().unwrap()).collect();
    assert_eq!(verdicts, ["replay", "apply", "apply", "apply"]);
    assert_eq!(
        results[1]["result"]["actions_executed"][0]["message"],
        "cannot deduct 45 points from ann: the balance is 30"
    );
    assert_eq!(results[2]["balances"], json!({"ann": 50}));
    assert_eq!(results[3]["balances"], json!({"ann": 5}));
    let dir = server.dir.path();
    assert_eq!(
        (store.count(dir, "SELECT count(*) FROM events"), store.count(dir, "SELECT count(*) FROM entries")),
        (1, 1),
        "a simulation writes nothing"
    );
    assert_eq!(server.get("/v1/actors/ann/balance").1["balance"], 30);
}

fn purchase(id: &str, actor: &str, amount: i64) -> Value {
    json!({"id": id, "type": "purchase", "actor_id": actor, "payload": {"amount": amount}})
}

fn same_id_sent_concurrently_is_applied_once(store: &Store) {
    let server = start(store, LOYALTY);
    let body = purchase("order-1", "ann", 40).to_string();
    let answers: Vec<(u16, Value)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..50).map(|_| s.spawn(|| server.post("/v1/events", &body))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(answers.iter().all(|(status, _)| *status == 200), "{answers:?}");
    let fresh = answers.iter().filter(|(_, b)| b.get("replayed").is_none()).count();
    assert_eq!(fresh, 1, "exactly one evaluation applied, the rest replayed");
    assert!(answers.iter().all(|(_, b)| b["actions_executed"] == answers[0].1["actions_executed"]));
    assert_eq!(server.get("/v1/actors/ann/balance").1["balance"], 40);
    assert_eq!(server.get("/v1/actors/ann/ledger").1["entries"].as_array().unwrap().len(), 1);

    let (status, body) = server.post_json("/v1/events", &purchase("order-1", "ann", 41));
    assert_eq!((status, body["code"].as_str()), (409, Some("id_conflict")), "{body}");
    assert_eq!(server.get("/v1/actors/ann/balance").1["balance"], 40);
}

fn deductions_never_overdraw(store: &Store) {
    let server = start(store, LOYALTY);
    server.post_json("/v1/events", &purchase("p1", "bob", 30));
    let redeem = |id: &str, amount: i64| {
        server.post_json(
            "/v1/events",
            &json!({"id": id, "type": "redeem", "actor_id": "bob", "payload": {"amount": amount}}),
        )
    };
    let (status, refused) = redeem("r1", 50);
    assert_eq!(status, 200);
    assert_eq!(
        refused["actions_executed"][0],
        json!({"action_id": "spend_points", "type": "reward_points", "success": false,
               "message": "cannot deduct 50 points from bob: the balance is 30", "code": "insufficient_balance"})
    );
    let (_, done) = redeem("r2", 20);
    assert_eq!(done["actions_executed"][0]["message"], "Deducted 20 points from bob — Reward redeemed");
    assert_eq!(done["actions_executed"][0]["points"], -20);
    assert_eq!(server.get("/v1/actors/bob/balance").1["balance"], 10);
    let entries = server.get("/v1/actors/bob/ledger").1["entries"].clone();
    assert_eq!(entries.as_array().unwrap().len(), 2, "the refused deduction wrote nothing: {entries}");
}

fn actor_endpoints_page_newest_first(store: &Store) {
    let server = start(store, LOYALTY);
    for i in 1..=5 {
        assert_eq!(server.post_json("/v1/events", &purchase(&format!("o{i}"), "cy", i)).0, 200);
    }
    assert_eq!(server.get("/v1/actors/never-seen/balance").1["balance"], 0);
    let (status, page) = server.get("/v1/actors/cy/ledger?limit=2");
    assert_eq!(status, 200);
    let points =
        |p: &Value| p["entries"].as_array().unwrap().iter().map(|e| e["points"].as_i64().unwrap()).collect::<Vec<_>>();
    assert_eq!(points(&page), vec![5, 4]);
    let entry = &page["entries"][0];
    assert_eq!(
        (entry["event_id"].as_str(), entry["reason"].as_str(), entry["kind"].as_str()),
        (Some("o5"), Some("Purchase"), Some("award"))
    );
    assert!(entry["expires_at"].as_str().unwrap() > entry["created_at"].as_str().unwrap());
    let cursor = page["next_cursor"].as_str().unwrap();
    let (_, next) = server.get(&format!("/v1/actors/cy/ledger?limit=2&cursor={cursor}"));
    assert_eq!(points(&next), vec![3, 2]);
    let (_, last) =
        server.get(&format!("/v1/actors/cy/ledger?limit=2&cursor={}", next["next_cursor"].as_str().unwrap()));
    assert_eq!((points(&last), &last["next_cursor"]), (vec![1], &Value::Null));
    for bad in ["limit=0", "limit=501", "limit=x", "cursor=abc", "other=1"] {
        let (status, body) = server.get(&format!("/v1/actors/cy/ledger?{bad}"));
        assert_eq!((status, body["code"].as_str()), (400, Some("invalid_query")), "{bad}: {body}");
    }
}

#[test]
fn without_a_ledger_actor_endpoints_are_404() {
    let server = Server::start(LOYALTY, &["--ledger", "none"]);
    let (status, body) = server.get("/v1/actors/ann/balance");
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")));
    assert_eq!(server.get("/v1/actors/ann/ledger").0, 404);
}

fn batch_events_accepted_before_a_kill_are_processed_after_restart(store: &Store) {
    let mut server = start(store, LOYALTY);
    let batch =
        json!((0..6).map(|i| json!({"id": format!("s{i}"), "type": "slow", "actor_id": "dee"})).collect::<Vec<_>>());
    let (status, receipt) = server.post_json("/v1/events/batch", &batch);
    assert_eq!((status, receipt["queued"].as_u64()), (202, Some(6)));
    // Each event takes 300 ms on one of 4 workers: kill while most are still waiting.
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    let args = Server::args_for(server.dir.path(), &["--ledger", &store.flag()]);
    let dir = std::mem::replace(&mut server.dir, tempfile::tempdir().unwrap());
    let restarted = Server::spawn(dir, &args);
    let job_path = format!("/v1/jobs/{}", receipt["job_id"].as_str().unwrap());
    let mut job = Value::Null;
    assert!(
        wait_until(Duration::from_secs(10), || {
            job = restarted.get(&job_path).1;
            job["state"] == "done"
        }),
        "{job}"
    );
    assert_eq!(job["done"], 6);
    assert!(wait_until(Duration::from_secs(3), || restarted
        .log_text()
        .contains("re-queueing batch events accepted before the last stop")));
    assert_eq!(restarted.get("/v1/actors/dee/balance").1["balance"], 6, "each event applied once");
}

fn a_failing_ledger_answers_503_and_stores_nothing(store: &Store) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("rules.yaml"), LOYALTY).unwrap();
    let marker = dir.path().join("fail-now");
    let args = Server::args_for(dir.path(), &["--ledger", &store.flag()]);
    let server = Server::spawn_with_env(dir, &args, &[("FLUXFLOW_TEST_LEDGER_FAULT_FILE", &marker)]);
    assert_eq!(server.post_json("/v1/events", &purchase("ok-1", "eve", 10)).0, 200);
    std::fs::write(&marker, b"fail").unwrap();
    let (status, body) = server.post_json("/v1/events", &purchase("lost-1", "eve", 99));
    assert_eq!((status, body["code"].as_str()), (503, Some("ledger_unavailable")), "{body}");
    assert_eq!(server.get("/readyz"), (503, json!({"queue_utilization": 0.0, "status": "ledger_unavailable"})));
    assert_eq!(server.get("/v1/actors/eve/balance").1["balance"], 10, "reads still work");
    let (status, _) = server.post_json("/v1/events/batch", &json!([purchase("lost-2", "eve", 5)]));
    assert_eq!(status, 503, "a batch is not acknowledged unless stored");
    std::fs::remove_file(&marker).unwrap();
    assert!(wait_until(Duration::from_secs(3), || server.get("/readyz").0 == 200));
    assert_eq!(server.get("/v1/actors/eve/balance").1["balance"], 10, "nothing of the failed events was stored");
    let (status, retried) = server.post_json("/v1/events", &purchase("lost-1", "eve", 99));
    assert_eq!((status, retried.get("replayed")), (200, None), "the retry is applied fresh");
    assert_eq!(server.get("/v1/actors/eve/balance").1["balance"], 109);

    // A batch stored before the fault, whose writes fail: kept, and applied once writes work again.
    let batch = json!(
        (0..3).map(|i| json!({"id": format!("late-{i}"), "type": "slow", "actor_id": "eve"})).collect::<Vec<_>>()
    );
    let (status, receipt) = server.post_json("/v1/events/batch", &batch);
    assert_eq!(status, 202);
    std::fs::write(&marker, b"fail").unwrap();
    assert!(wait_until(Duration::from_secs(5), || server.get("/readyz").0 == 503));
    let job_path = format!("/v1/jobs/{}", receipt["job_id"].as_str().unwrap());
    assert_eq!(server.get(&job_path).1["state"], "queued");
    std::fs::remove_file(&marker).unwrap();
    assert!(wait_until(Duration::from_secs(10), || server.get(&job_path).1["state"] == "done"));
    assert_eq!(server.get("/v1/actors/eve/balance").1["balance"], 112);
}

#[test]
fn corrupt_or_unusable_data_directories_fail_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("fluxflow.db"), vec![b'x'; 4096]).unwrap();
    let rules = repo_path(common::EXAMPLE_RULES);
    let run = |data: &std::path::Path| {
        std::process::Command::new(bin())
            .args(["serve", "--addr", "127.0.0.1:0", "--ledger", "sqlite", "--config"])
            .arg(&rules)
            .arg("--data")
            .arg(data)
            .output()
            .unwrap()
    };
    let out = run(&data);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("fluxflow.db is not a usable SQLite ledger: file is not a database"), "{stderr}");
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let out = run(&file);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot create the data directory"));
}

#[test]
fn readme_quick_start_with_the_default_ledger() {
    let server = sqlite(&common::example_rules());
    let (status, body) = server.post("/v1/events", EXAMPLE_EVENT);
    assert_eq!(status, 200);
    assert_eq!(body["actions_executed"][0]["message"], "Awarded 75 points to user_42 — High-value food purchase bonus");
    assert_eq!(server.get("/v1/actors/user_42/balance").1["balance"], 75);
}

fn sigterm_stores_every_accepted_batch_event_before_exit(store: &Store) {
    let rules = LOYALTY.replace("ms: 300", "ms: 2");
    let mut server = start(store, &rules);
    let mut accepted = 0;
    for b in 0..3 {
        let batch = json!(
            (0..100).map(|i| json!({"id": format!("t{b}-{i}"), "type": "slow", "actor_id": "fay"})).collect::<Vec<_>>()
        );
        let (status, receipt) = server.post_json("/v1/events/batch", &batch);
        assert_eq!(status, 202);
        accepted += receipt["queued"].as_i64().unwrap();
    }
    server.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(server.wait_exit(Duration::from_secs(30)), Some(0));
    let done = store.count(server.dir.path(), "SELECT count(*) FROM job_events WHERE state = 'done'");
    let entries = store.count(server.dir.path(), "SELECT count(*) FROM entries WHERE actor_id = 'fay'");
    assert_eq!((done, entries), (accepted, accepted));
}

/// PostgreSQL that cannot be reached at start: exit 1, naming host and database, never the
/// password.
#[test]
fn an_unreachable_postgresql_fails_at_start_up_naming_host_and_database() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("rules.yaml"), LOYALTY).unwrap();
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = free.local_addr().unwrap().port();
    drop(free);
    let out = std::process::Command::new(bin())
        .args(["serve", "--addr", "127.0.0.1:0", "--config"])
        .arg(dir.path().join("rules.yaml"))
        .args(["--ledger", &format!("postgres://fluxflow:s3cr3t-pw@127.0.0.1:{port}/loyalty")])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot reach PostgreSQL at host 127.0.0.1:{port}, database loyalty")),
        "{stderr}"
    );
    assert!(!stderr.contains("s3cr3t-pw"), "the password must never be shown: {stderr}");
    // The same through FLUXFLOW_LEDGER.
    let out = std::process::Command::new(bin())
        .args(["serve", "--addr", "127.0.0.1:0", "--config"])
        .arg(dir.path().join("rules.yaml"))
        .env("FLUXFLOW_LEDGER", format!("postgres://fluxflow:s3cr3t-pw@127.0.0.1:{port}/loyalty"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("database loyalty") && !stderr.contains("s3cr3t-pw"), "{stderr}");
}
