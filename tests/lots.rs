//! Points as lots over real HTTP (CONTRACT §8), on SQLite and on PostgreSQL (`both_stores!`, two
//! nodes on one database there): the sweep writes off expired points for members nobody writes
//! to, and concurrent spending of expiring lots never takes more than they hold. The rest of §8
//! is told as member stories (`tests/stories/`).

#[macro_use]
mod common;

use std::time::Duration;

use common::pg::Store;
use common::{Server, race, wait_until};
use serde_json::{Value, json};

const RULES: &str = r#"
version: v1
engine: {event_workers: 8}
programme: {expiry_days: 30}
scenarios:
  - id: earn
    enabled: true
    event_types: [purchase]
    children:
      - action: {id: earn_points, type: reward_points, params: {operation: award, points_formula: payload.total}}
"#;

both_stores!(
    the_sweep_writes_off_expired_points,
    concurrent_redemptions_never_overspend_lots,
    concurrent_refunds_of_one_order_take_back_what_it_awarded_once,
);

const REFUNDS: &str = r#"
version: v1
engine: {event_workers: 8}
programme: {negative_balance: deny}
scenarios:
  - id: earn
    enabled: true
    event_types: [purchase]
    children:
      - action: {id: earn_points, type: reward_points, params: {operation: award, points_formula: payload.total}}
  - id: refund
    enabled: true
    event_types: [refund]
    children:
      - action: {id: take_back, type: reverse_points, params: {original: payload.order, ratio: payload.share, reason: Refund}}
"#;

fn kinds(server: &Server, actor: &str) -> Vec<(String, i64)> {
    let page = server.get(&format!("/v1/actors/{actor}/ledger")).1;
    let entries = page["entries"].as_array().cloned().unwrap_or_default();
    entries.iter().map(|e| (e["kind"].as_str().unwrap_or("").to_owned(), e["points"].as_i64().unwrap_or(0))).collect()
}

fn the_sweep_writes_off_expired_points(store: &Store) {
    let servers = store.nodes_with(RULES, &["--expiry-sweep-ms", "100"]);
    let server = &servers[0];
    // Earned in September, so expired in October: nobody writes to the member again.
    let event = json!({"id": "p1", "type": "purchase", "actor_id": "ann",
                       "occurred_at": "2026-09-01T10:00:00Z", "payload": {"total": 70}});
    assert_eq!(server.post_json("/v1/events", &event).0, 200);
    let swept = wait_until(Duration::from_secs(10), || kinds(server, "ann").iter().any(|(k, _)| k == "expire"));
    assert!(swept, "no expire entry was written: {:?}", kinds(server, "ann"));
    assert_eq!(kinds(server, "ann"), [("expire".to_owned(), -70), ("award".to_owned(), 70)]);
    let expire = server.get("/v1/actors/ann/ledger").1["entries"][0].clone();
    assert_eq!(expire["dated_at"], "2026-10-01T10:00:00Z", "dated at the lot's expiry: {expire}");
    assert_eq!(expire["event_id"], "p1", "it names the award whose points expired: {expire}");
    let balance: Value = server.get("/v1/actors/ann/balance").1;
    assert_eq!((balance["balance"].clone(), balance["expiring"].clone()), (json!(0), json!([])));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(kinds(server, "ann").len(), 2, "swept once, whatever the number of nodes");
}

fn concurrent_redemptions_never_overspend_lots(store: &Store) {
    let servers = store.nodes(RULES);
    let now = jiff::Timestamp::now();
    for (i, total) in [40, 60].iter().enumerate() {
        let event = json!({"id": format!("p{i}"), "type": "purchase", "actor_id": "bo",
                           "occurred_at": now.to_string(), "payload": {"total": total}});
        assert_eq!(servers[0].post_json("/v1/events", &event).0, 200);
    }
    let bodies: Vec<Value> = (0..30).map(|i| json!({"id": format!("till-{i}"), "points": 10})).collect();
    let answers: Vec<u16> = race(&servers, "/v1/actors/bo/redeem", &bodies).into_iter().map(|(s, _)| s).collect();
    assert_eq!(answers.iter().filter(|s| **s == 200).count(), 10, "{answers:?}");
    assert!(answers.iter().all(|s| *s == 200 || *s == 422), "{answers:?}");
    let balance = servers[0].get("/v1/actors/bo/balance").1;
    assert_eq!((balance["balance"].clone(), balance["expiring"].clone()), (json!(0), json!([])), "{balance}");
}

/// A simulation answers spendable balances as the read API does: pending points left out,
/// the stored member's lots read and never written.
#[test]
fn a_simulation_leaves_pending_points_out_of_balances() {
    let rules = RULES.replace("programme: {expiry_days: 30}", "programme: {pending_days: 14}");
    let server = Server::start(&rules, &["--ledger", "sqlite"]);
    let purchase = |id: &str, at: &str, total: i64| json!({"id": id, "type": "purchase", "actor_id": "cy", "occurred_at": at, "payload": {"total": total}});
    assert_eq!(server.post_json("/v1/events", &purchase("p1", "2026-10-01T10:00:00Z", 30)).0, 200);
    let (status, body) = server.post_json(
        "/v1/simulate",
        &json!([purchase("s1", "2026-10-05T10:00:00Z", 20), purchase("s2", "2026-10-20T10:00:00Z", 5)]),
    );
    assert_eq!(status, 200, "{body}");
    let results = body["results"].as_array().unwrap();
    assert_eq!(results[0]["points"][0]["balance_after"], 50, "the sum of entries, pending included");
    assert_eq!(results[0]["balances"], json!({"cy": 0}), "both awards still pending on 5 October");
    assert_eq!(results[1]["balances"], json!({"cy": 50}), "both released by the 20th, the new one pending");
    assert_eq!(server.get("/v1/actors/cy/balance?at=2026-10-20T10:00:00Z").1["balance"], 30, "nothing written");
}

fn concurrent_refunds_of_one_order_take_back_what_it_awarded_once(store: &Store) {
    let servers = store.nodes(REFUNDS);
    let purchase = json!({"id": "p1", "type": "purchase", "actor_id": "eve", "payload": {"total": 100}});
    assert_eq!(servers[0].post_json("/v1/events", &purchase).0, 200);
    // 20 refunds of 30% each, at once: 100 points can be taken back in all, 30 + 30 + 30 + 10.
    let refunds: Vec<Value> = (0..20)
        .map(|i| json!({"id": format!("r{i}"), "type": "refund", "actor_id": "eve", "payload": {"order": "p1", "share": 0.3}}))
        .collect();
    let answers: Vec<Value> = race(&servers, "/v1/events", &refunds)
        .into_iter()
        .map(|(_, body)| body["actions_executed"][0].clone())
        .collect();
    let mut taken: Vec<i64> = answers.iter().filter_map(|a| a["points"].as_i64()).collect();
    taken.sort_unstable();
    assert_eq!(taken, [-30, -30, -30, -10], "{answers:?}");
    let refused = answers.iter().filter(|a| a["code"] == "nothing_to_reverse").count();
    assert_eq!(refused, 16, "{answers:?}");
    let done = answers.iter().find(|a| a["points"] == -30).unwrap();
    assert_eq!(done["message"], "Took back 30 points from eve \u{2014} Refund");
    assert_eq!(servers[0].get("/v1/actors/eve/balance").1["balance"], 0);
    // Under deny, what cannot be collected is left uncollected and said so.
    let purchase = json!({"id": "p2", "type": "purchase", "actor_id": "eve", "payload": {"total": 50}});
    assert_eq!(servers[0].post_json("/v1/events", &purchase).0, 200);
    let redeem = json!({"id": "till-1", "points": 40});
    assert_eq!(servers[0].post_json("/v1/actors/eve/redeem", &redeem).0, 200);
    let refund = json!({"id": "r-p2", "type": "refund", "actor_id": "eve", "payload": {"order": "p2", "share": 1}});
    let action = servers[0].post_json("/v1/events", &refund).1["actions_executed"][0].clone();
    assert_eq!(action["points"], -10, "{action}");
    assert_eq!(action["message"], "Took back 10 points from eve \u{2014} Refund (40 uncollected)");
}
