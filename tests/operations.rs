//! Operations on a member's points over real HTTP (CONTRACT §8: redeem, adjust, cancel a
//! redemption), on SQLite and on PostgreSQL (`both_stores!`): idempotent by their own ids,
//! exact under concurrency (on PostgreSQL with the requests spread over two nodes), and a bad
//! body or a balance too low writes nothing.

#[macro_use]
mod common;

use common::pg::Store;
use common::{Server, race};
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
    redeem_adjust_and_cancel_write_one_entry_each,
    the_same_operation_sent_concurrently_is_applied_once,
    concurrent_redemptions_never_overdraw,
    a_bad_body_is_named_and_writes_nothing,
);

fn earn(server: &Server, id: &str, actor: &str, total: i64) {
    let (status, body) = server.post_json(
        "/v1/events",
        &json!({"id": id, "type": "purchase", "actor_id": actor, "payload": {"total": total}}),
    );
    assert_eq!(status, 200, "{body}");
}

fn entries(server: &Server, actor: &str) -> Vec<(String, i64)> {
    let page = server.get(&format!("/v1/actors/{actor}/ledger")).1;
    page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["kind"].as_str().unwrap().to_owned(), e["points"].as_i64().unwrap()))
        .collect()
}

fn redeem_adjust_and_cancel_write_one_entry_each(store: &Store) {
    let server = &store.nodes(RULES)[0];
    earn(server, "p1", "ann", 100);
    let (status, redeemed) =
        server.post_json("/v1/actors/ann/redeem", &json!({"id": "till-1", "points": 30, "reason": "Coffee"}));
    assert_eq!(status, 200, "{redeemed}");
    assert_eq!(redeemed["balance"], 70);
    let entry = &redeemed["entry"];
    assert_eq!(
        (entry["kind"].clone(), entry["points"].clone(), entry["event_id"].clone()),
        (json!("redeem"), json!(-30), json!("till-1"))
    );
    assert_eq!(entry["reason"], "Coffee");
    assert!(entry.get("scenario_id").is_none(), "an operation has no scenario: {entry}");

    // Too much: 422, nothing written.
    let (status, refused) = server.post_json("/v1/actors/ann/redeem", &json!({"id": "till-2", "points": 71}));
    assert_eq!((status, refused["code"].as_str()), (422, Some("insufficient_balance")), "{refused}");
    assert_eq!(refused["error"], "cannot take 71 points from ann: the balance is 70");

    let (status, added) = server.post_json(
        "/v1/actors/ann/adjust",
        &json!({"id": "desk-1", "points": 25, "reason": "Goodwill", "expiry_days": 30}),
    );
    assert_eq!(status, 200, "{added}");
    assert_eq!((added["entry"]["kind"].clone(), added["balance"].clone()), (json!("adjust"), json!(95)));
    assert!(added["entry"]["expires_at"].is_string(), "{added}");
    let (status, taken) =
        server.post_json("/v1/actors/ann/adjust", &json!({"id": "desk-2", "points": -500, "reason": "Correction"}));
    assert_eq!((status, taken["code"].as_str()), (422, Some("insufficient_balance")), "never below zero: {taken}");

    let (status, cancelled) = server.post_json("/v1/actors/ann/redemptions/till-1/cancel", &json!({"id": "void-1"}));
    assert_eq!(status, 200, "{cancelled}");
    assert_eq!(
        (cancelled["entry"]["kind"].clone(), cancelled["entry"]["points"].clone()),
        (json!("cancel"), json!(30))
    );
    assert_eq!(cancelled["balance"], 125);
    let (status, again) = server.post_json("/v1/actors/ann/redemptions/till-1/cancel", &json!({"id": "void-1"}));
    assert_eq!((status, again["replayed"].clone(), again["balance"].clone()), (200, json!(true), json!(125)));
    let (status, twice) = server.post_json("/v1/actors/ann/redemptions/till-1/cancel", &json!({"id": "void-2"}));
    assert_eq!((status, twice["code"].as_str()), (409, Some("already_cancelled")), "{twice}");
    let (status, unknown) = server.post_json("/v1/actors/ann/redemptions/nope/cancel", &json!({"id": "void-3"}));
    assert_eq!((status, unknown["code"].as_str()), (404, Some("not_found")), "{unknown}");
    let (status, not_a_redemption) =
        server.post_json("/v1/actors/ann/redemptions/desk-1/cancel", &json!({"id": "void-4"}));
    assert_eq!(status, 404, "an adjustment is not a redemption: {not_a_redemption}");

    // The same id with another body is a conflict; ids are per member.
    let (status, conflict) = server.post_json("/v1/actors/ann/redeem", &json!({"id": "till-1", "points": 31}));
    assert_eq!((status, conflict["code"].as_str()), (409, Some("id_conflict")), "{conflict}");
    earn(server, "p2", "bob", 10);
    let (status, _) = server.post_json("/v1/actors/bob/redeem", &json!({"id": "till-1", "points": 5}));
    assert_eq!(status, 200, "another member's till-1 is another request");

    let kinds = entries(server, "ann");
    assert_eq!(kinds, [("cancel".into(), 30), ("adjust".into(), 25), ("redeem".into(), -30), ("award".into(), 100)]);
    let dir = server.dir.path();
    assert_eq!(
        store.count(
            dir,
            "SELECT count(*) FROM balances b WHERE b.balance <> (SELECT sum(points) FROM entries e WHERE e.actor_id = b.actor_id)"
        ),
        0,
        "every balance is the sum of its entries"
    );
}

fn the_same_operation_sent_concurrently_is_applied_once(store: &Store) {
    let servers = store.nodes(RULES);
    earn(&servers[0], "p1", "cara", 100);
    let bodies: Vec<Value> = (0..50).map(|_| json!({"id": "till-9", "points": 40})).collect();
    let answers = race(&servers, "/v1/actors/cara/redeem", &bodies);
    assert!(answers.iter().all(|(status, _)| *status == 200), "{answers:?}");
    assert_eq!(answers.iter().filter(|(_, b)| b.get("replayed").is_none()).count(), 1, "applied once");
    assert!(answers.iter().all(|(_, b)| b["entry"] == answers[0].1["entry"]), "every answer names the one entry");
    assert_eq!(servers[0].get("/v1/actors/cara/balance").1["balance"], 60);
}

fn concurrent_redemptions_never_overdraw(store: &Store) {
    let servers = store.nodes(RULES);
    earn(&servers[0], "p1", "dan", 100);
    let bodies: Vec<Value> = (0..20).map(|i| json!({"id": format!("till-{i}"), "points": 10})).collect();
    let answers = race(&servers, "/v1/actors/dan/redeem", &bodies);
    let done = answers.iter().filter(|(status, _)| *status == 200).count();
    let refused = answers.iter().filter(|(status, b)| *status == 422 && b["code"] == "insufficient_balance").count();
    assert_eq!((done, refused), (10, 10), "{answers:?}");
    assert_eq!(servers[0].get("/v1/actors/dan/balance").1["balance"], 0);
}

fn a_bad_body_is_named_and_writes_nothing(store: &Store) {
    let server = &store.nodes(RULES)[0];
    earn(server, "p1", "eve", 50);
    let cases = [
        ("/v1/actors/eve/redeem", json!({"points": 5}), "missing field `id`"),
        ("/v1/actors/eve/redeem", json!({"id": "x", "points": 0}), "points: must be a whole number from 1"),
        ("/v1/actors/eve/redeem", json!({"id": "x", "points": "5"}), "points: invalid type"),
        ("/v1/actors/eve/redeem", json!({"id": "x", "points": 5, "note": "?"}), "unknown field `note`"),
        ("/v1/actors/eve/redeem", json!({"id": "", "points": 5}), "id: must not be empty"),
        ("/v1/actors/eve/adjust", json!({"id": "x", "points": 5}), "missing field `reason`"),
        ("/v1/actors/eve/adjust", json!({"id": "x", "points": 0, "reason": "r"}), "points: must be a whole number"),
        ("/v1/actors/eve/adjust", json!({"id": "x", "points": 5, "reason": " "}), "reason: must say why"),
        (
            "/v1/actors/eve/adjust",
            json!({"id": "x", "points": 5, "reason": "r", "expiry_days": -1}),
            "expiry_days: invalid value",
        ),
        ("/v1/actors/eve/redemptions/r/cancel", json!({}), "missing field `id`"),
    ];
    for (path, body, message) in cases {
        let (status, answer) = server.post_json(path, &body);
        assert_eq!((status, answer["code"].as_str()), (400, Some("invalid_request")), "{body}: {answer}");
        assert!(answer["error"].as_str().unwrap().contains(message), "{body}: {answer}");
    }
    let (status, answer) = server.post("/v1/actors/eve/redeem", "{not json");
    assert_eq!((status, answer["code"].as_str()), (400, Some("invalid_json")), "{answer}");
    assert_eq!(entries(server, "eve").len(), 1, "nothing but the award was written");
}

#[test]
fn without_a_ledger_operations_answer_404() {
    let server = Server::start(RULES, &[]);
    let (status, body) = server.post_json("/v1/actors/ann/redeem", &json!({"id": "x", "points": 5}));
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")), "{body}");
}
