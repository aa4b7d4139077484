//! Member functions (CONTRACT §7) over real HTTP, on SQLite and on PostgreSQL (`both_stores!`):
//! read in the transaction that writes the event, so 20 concurrent first purchases of one member
//! award the first-purchase bonus once (on PostgreSQL spread over two nodes); counts, sums,
//! streaks and days since use event time in the programme's zone; simulations read the stored
//! member and write nothing.

#[macro_use]
mod common;

use common::Server;
use common::pg::Store;
use serde_json::{Value, json};

const RULES: &str = r#"
version: v1
engine: {event_workers: 8}
programme: {timezone: Europe/Berlin}
scenarios:
  - id: first_purchase
    enabled: true
    event_types: [purchase]
    children:
      - condition:
          id: is_first
          expression: first('purchase')
          children:
            - action: {id: welcome, type: reward_points, params: {operation: award, points: 100}}
  - id: third_this_month
    enabled: true
    event_types: [purchase]
    children:
      - condition:
          id: is_third
          expression: count('Purchase', 'month') == 3
          children:
            - action: {id: third_bonus, type: reward_points, params: {operation: award, points: 30}}
  - id: big_spender
    enabled: true
    event_types: [purchase]
    children:
      - condition:
          id: spent_200_in_30_days
          expression: sum('purchase', 'payload.total', '30d') >= 200 AND member.balance >= 100
          children:
            - action: {id: spender_bonus, type: reward_points, params: {operation: award, points: 7}}
  - id: login_streak
    enabled: true
    event_types: [login]
    children:
      - condition:
          id: week_of_logins
          expression: streak('login', 'day') == 3
          children:
            - action: {id: streak_bonus, type: reward_points, params: {operation: award, points: 50}}
  - id: welcome_back
    enabled: true
    event_types: [login]
    children:
      - condition:
          id: away_a_while
          expression: days_since('login') >= 14
          children:
            - action: {id: back_bonus, type: reward_points, params: {operation: award, points_formula: "min(days_since('login'), 60)"}}
"#;

both_stores!(
    twenty_concurrent_first_purchases_award_the_bonus_once,
    counts_sums_streaks_and_days_since_follow_event_time,
    a_simulation_reads_the_stored_member_and_writes_nothing,
    a_rule_added_later_counts_the_history_before_it,
    traces_and_batches_of_member_rules_come_from_the_transaction,
);

/// An event evaluated inside the transaction still answers its trace, and batch events of one
/// member see each other's history in order.
fn traces_and_batches_of_member_rules_come_from_the_transaction(store: &Store) {
    let server = &store.nodes(RULES)[0];
    let (status, traced) = server.post_json(
        "/v1/events?trace=true",
        &json!({"id": "t1", "type": "purchase", "actor_id": "gil", "occurred_at": "2026-05-01T10:00:00Z", "payload": {"total": 1}}),
    );
    assert_eq!(status, 200, "{traced}");
    let scenarios = traced["trace"]["scenarios"].as_array().unwrap();
    let first = scenarios.iter().find(|s| s["scenario_id"] == "first_purchase").unwrap();
    assert_eq!(first["nodes"][0]["expression"], "first('purchase')", "{first}");
    assert_eq!(first["nodes"][0]["result"], "true");
    let batch: Vec<Value> = (0..3)
        .map(|i| json!({"id": format!("b{i}"), "type": "purchase", "actor_id": "hana", "occurred_at": format!("2026-05-0{}T10:00:00Z", i + 1), "payload": {"total": 1}}))
        .collect();
    let (status, job) = server.post_json("/v1/events/batch", &json!(batch));
    assert_eq!(status, 202, "{job}");
    let job_id = job["job_id"].as_str().unwrap().to_owned();
    assert!(common::wait_until(
        std::time::Duration::from_secs(10),
        || server.get(&format!("/v1/jobs/{job_id}")).1["state"] == "done"
    ));
    let events = server.get(&format!("/v1/jobs/{job_id}")).1["events"].clone();
    let matched: Vec<Value> =
        events.as_array().unwrap().iter().map(|e| e["result"]["scenarios_matched"].clone()).collect();
    assert_eq!(matched, [json!(["first_purchase"]), json!([]), json!(["third_this_month"])], "{events}");
}

/// Member history is every event of the member, also those stored while no rule read it: a rule
/// that starts reading a type sees its earlier events (the store indexes them before the rule
/// goes live).
fn a_rule_added_later_counts_the_history_before_it(store: &Store) {
    let plain = "version: v1\nscenarios:\n  - id: earn\n    enabled: true\n    event_types: [purchase]\n    children:\n      - action: {id: earn_points, type: reward_points, params: {operation: award, points: 1}}\n";
    let server = Server::start(plain, &store.args().each_ref().map(String::as_str));
    for i in 0..3 {
        send(
            &server,
            json!({"id": format!("e{i}"), "type": "Purchase", "actor_id": "eve", "occurred_at": format!("2026-04-0{}T10:00:00Z", i + 1)}),
        );
    }
    let (status, body) = server.put_rules(RULES);
    assert_eq!(status, 200, "{body}");
    let fourth = send(
        &server,
        json!({"id": "e3", "type": "purchase", "actor_id": "eve", "occurred_at": "2026-04-20T10:00:00Z", "payload": {"total": 1}}),
    );
    assert!(!succeeded(&fourth).contains(&"welcome".to_owned()), "not a first purchase: {fourth}");
    let third = send(
        &server,
        json!({"id": "e4", "type": "purchase", "actor_id": "eve", "occurred_at": "2026-03-20T10:00:00Z", "payload": {"total": 1}}),
    );
    assert!(!succeeded(&third).contains(&"third_bonus".to_owned()), "the first of March: {third}");
    assert_eq!(store.count(server.dir.path(), "SELECT count(*) FROM events WHERE member_type = 'purchase'"), 5);
}

fn send(server: &Server, event: Value) -> Value {
    let (status, body) = server.post_json("/v1/events", &event);
    assert_eq!(status, 200, "{body}");
    body
}

fn succeeded(answer: &Value) -> Vec<String> {
    answer["actions_executed"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["success"] == true)
        .map(|a| a["action_id"].as_str().unwrap().to_owned())
        .collect()
}

fn twenty_concurrent_first_purchases_award_the_bonus_once(store: &Store) {
    let servers = store.nodes(RULES);
    let answers: Vec<Value> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..20)
            .map(|i| {
                let server = &servers[i % servers.len()];
                let event = json!({"id": format!("p{i}"), "type": "purchase", "actor_id": "ann",
                                   "occurred_at": "2026-11-02T10:00:00Z", "payload": {"total": 1}});
                s.spawn(move || send(server, event))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let welcomed = answers.iter().filter(|a| succeeded(a).contains(&"welcome".to_owned())).count();
    assert_eq!(welcomed, 1, "exactly one first purchase: {answers:?}");
    let thirds = answers.iter().filter(|a| succeeded(a).contains(&"third_bonus".to_owned())).count();
    assert_eq!(thirds, 1, "exactly one third purchase of the month");
    assert_eq!(servers[0].get("/v1/actors/ann/balance").1["balance"], 130);
}

fn counts_sums_streaks_and_days_since_follow_event_time(store: &Store) {
    let server = &store.nodes(RULES)[0];
    let purchase = |id: &str, at: &str, total: i64| json!({"id": id, "type": "purchase", "actor_id": "bob", "occurred_at": at, "payload": {"total": total}});
    assert_eq!(succeeded(&send(server, purchase("b1", "2026-01-30T10:00:00Z", 150))), ["welcome"]);
    // 31 January 23:30 in Berlin, still January: the second purchase of the month.
    assert!(succeeded(&send(server, purchase("b2", "2026-01-31T22:30:00Z", 60))).contains(&"spender_bonus".to_owned()));
    // 00:30 on 1 February in Berlin: a new month, so this is the first of February, not the third.
    let feb = send(server, purchase("b3", "2026-01-31T23:30:00Z", 10));
    assert!(!succeeded(&feb).contains(&"third_bonus".to_owned()), "{feb}");
    // A late January purchase is the third of January.
    let late = send(server, purchase("b4", "2026-01-15T10:00:00Z", 10));
    assert!(succeeded(&late).contains(&"third_bonus".to_owned()), "{late}");

    let login = |id: &str, at: &str| json!({"id": id, "type": "login", "actor_id": "bob", "occurred_at": at});
    assert!(succeeded(&send(server, login("l1", "2026-02-01T08:00:00Z"))).is_empty());
    assert!(succeeded(&send(server, login("l2", "2026-02-02T08:00:00Z"))).is_empty());
    assert_eq!(succeeded(&send(server, login("l3", "2026-02-03T22:30:00Z"))), ["streak_bonus"], "three days in a row");
    assert!(succeeded(&send(server, login("l4", "2026-02-03T23:30:00Z"))).is_empty(), "the 4th of February in Berlin");
    let back = send(server, login("l5", "2026-02-25T08:00:00Z"));
    assert_eq!(succeeded(&back), ["back_bonus"], "{back}");
    assert_eq!(back["actions_executed"][0]["points"], 21, "21 whole days since the last login");
}

fn a_simulation_reads_the_stored_member_and_writes_nothing(store: &Store) {
    let server = &store.nodes(RULES)[0];
    send(
        server,
        json!({"id": "c1", "type": "purchase", "actor_id": "cara", "occurred_at": "2026-03-02T10:00:00Z", "payload": {"total": 5}}),
    );
    let (status, body) = server.post_json(
        "/v1/simulate",
        &json!([
            {"id": "s1", "type": "purchase", "actor_id": "cara", "occurred_at": "2026-03-03T10:00:00Z", "payload": {"total": 5}},
            {"id": "s2", "type": "purchase", "actor_id": "cara", "occurred_at": "2026-03-04T10:00:00Z", "payload": {"total": 5}},
            {"id": "s3", "type": "purchase", "actor_id": "dora", "occurred_at": "2026-03-04T10:00:00Z", "payload": {"total": 5}}
        ]),
    );
    assert_eq!(status, 200, "{body}");
    let matched: Vec<Value> =
        body["results"].as_array().unwrap().iter().map(|r| r["result"]["scenarios_matched"].clone()).collect();
    assert_eq!(matched, [json!([]), json!(["third_this_month"]), json!(["first_purchase"])], "{body}");
    let dir = server.dir.path();
    assert_eq!(store.count(dir, "SELECT count(*) FROM events"), 1, "a simulation writes nothing");
    let real = send(
        server,
        json!({"id": "c2", "type": "purchase", "actor_id": "cara", "occurred_at": "2026-03-03T10:00:00Z", "payload": {"total": 5}}),
    );
    assert!(
        real["scenarios_matched"].as_array().unwrap().is_empty(),
        "the simulated purchases were not counted: {real}"
    );
}
