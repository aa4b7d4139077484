//! `POST /v1/simulate`: dry runs with traces that write nothing.

mod common;

use common::Server;
use rusqlite::Connection;
use serde_json::{Value, json};

const RULES: &str = r#"
version: v1
scenarios:
  - id: earn
    enabled: true
    event_types: [purchase]
    children:
      - condition:
          id: big_basket
          expression: payload.amount >= 10
          children:
            - action: {id: earn_points, type: reward_points, params: {operation: award, points_formula: payload.amount}}
  - id: spend
    enabled: true
    event_types: [redeem]
    children:
      - action: {id: spend_points, type: reward_points, params: {operation: deduct, points_formula: payload.amount}}
"#;

fn ev(id: &str, kind: &str, amount: i64) -> Value {
    json!({"id": id, "type": kind, "actor_id": "ann", "payload": {"amount": amount}})
}

/// Every row of every ledger table, to compare before and after.
fn snapshot(server: &Server) -> Vec<String> {
    let db = Connection::open(server.dir.path().join("data/fluxflow.db")).unwrap();
    let mut rows = Vec::new();
    for table in ["events", "entries", "balances", "jobs", "job_events"] {
        let mut stmt = db.prepare(&format!("SELECT * FROM {table}")).unwrap();
        let columns = stmt.column_count();
        let mut query = stmt.query([]).unwrap();
        while let Some(row) = query.next().unwrap() {
            let cells: Vec<String> = (0..columns).map(|i| format!("{:?}", row.get_ref(i).unwrap())).collect();
            rows.push(format!("{table}: {}", cells.join(", ")));
        }
    }
    rows
}

#[test]
fn simulation_reports_points_and_balances_and_writes_nothing() {
    let server = Server::start(RULES, &["--ledger", "sqlite"]);
    assert_eq!(server.post_json("/v1/events", &ev("real-1", "purchase", 30)).0, 200);
    let before = snapshot(&server);

    let (status, body) = server.post_json(
        "/v1/simulate",
        &json!([
            ev("real-1", "purchase", 30),
            ev("s1", "purchase", 20),
            ev("s2", "redeem", 45),
            ev("s3", "redeem", 60),
            ev("s4", "purchase", 5),
            ev("real-1", "purchase", 31)
        ]),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["rules"]["source"], "live");
    let results = body["results"].as_array().unwrap();
    let verdicts: Vec<&str> = results.iter().map(|r| r["ledger"].as_str().unwrap()).collect();
    assert_eq!(verdicts, ["replay", "apply", "apply", "apply", "apply", "conflict"]);
    assert_eq!(
        results[1]["points"],
        json!([{"actor_id": "ann", "action_id": "earn_points", "points": 20, "balance_after": 50}])
    );
    assert_eq!(results[2]["balances"], json!({"ann": 5}));
    assert_eq!(
        results[3]["result"]["actions_executed"][0]["message"],
        "cannot deduct 60 points from ann: the balance is 5"
    );
    assert_eq!(results[4]["result"]["trace"]["scenarios"][0]["nodes"][0]["result"], "false");
    assert_eq!(
        results[4]["result"]["trace"]["scenarios"][0]["nodes"][0]["values"][0],
        json!({"path": "payload.amount", "value": 5})
    );

    assert_eq!(snapshot(&server), before, "no balance, entry or idempotency record changed");
    let (_, fresh) = server.post_json("/v1/events", &ev("s1", "purchase", 20));
    assert_eq!(fresh.get("replayed"), None, "a simulated id is not remembered");
    assert_eq!(server.get("/v1/actors/ann/balance").1["balance"], 50);
}

#[test]
fn simulation_tries_rules_that_are_not_live() {
    let server = Server::start(RULES, &["--ledger", "sqlite"]);
    let doubled = RULES.replace("points_formula: payload.amount}", "points_formula: payload.amount * 2}");
    let (status, body) =
        server.post_json("/v1/simulate", &json!({"events": [ev("x", "purchase", 10)], "rules": doubled}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["rules"]["source"], "request");
    assert_eq!(body["results"][0]["points"][0]["points"], 20);
    assert_ne!(body["rules"]["hash"], server.get("/v1/rules").1["hash"]);

    let (status, body) = server.post_json(
        "/v1/simulate",
        &json!({"events": [ev("x", "purchase", 10)], "rules": "version: v1\nscenarioz: []\n"}),
    );
    assert_eq!((status, body["code"].as_str()), (422, Some("invalid_rules")));
    assert_eq!(
        body["problems"][0],
        "rules:2:1: error: unknown key `scenarioz` in the rules file (did you mean `scenarios`?)"
    );

    let (status, one) = server.post_json("/v1/simulate", &ev("single", "purchase", 12));
    assert_eq!((status, one["results"][0]["points"][0]["points"].as_i64()), (200, Some(12)));
    let (status, bad) = server.post_json("/v1/simulate", &json!([ev("a", "purchase", 1), {"type": 5}]));
    assert_eq!((status, bad["code"].as_str()), (400, Some("invalid_event")));
    assert!(bad["error"].as_str().unwrap().starts_with("events[1]: type: invalid type"), "{bad}");
    // Decoded as strictly as POST /v1/events: a repeated key is refused, in every form.
    let twice = r#"{"type": "purchase", "type": "refund", "actor_id": "ann"}"#;
    for body in [twice.to_owned(), format!("[{twice}]"), format!(r#"{{"events": [{twice}]}}"#)] {
        let (status, bad) = server.post("/v1/simulate", &body);
        assert_eq!((status, bad["code"].as_str()), (400, Some("invalid_event")), "{body}: {bad}");
        assert!(bad["error"].as_str().unwrap().contains("duplicate field `type`"), "{bad}");
        assert_eq!(server.post("/v1/events", twice).0, 400);
    }
    assert_eq!(server.get("/v1/actors/ann/balance").1["balance"], 0);
}

/// The answer's keys come in declaration order, like every other answer (and as documented),
/// not sorted.
#[test]
fn simulation_answers_keys_in_declaration_order() {
    let server = Server::start(RULES, &["--ledger", "sqlite"]);
    let text = server
        .client
        .post(server.url("/v1/simulate"))
        .header("content-type", "application/json")
        .body(ev("k1", "purchase", 20).to_string())
        .send()
        .unwrap()
        .text()
        .unwrap();
    let order = [
        r#"{"rules":{"source":"live","hash":""#,
        r#""results":[{"result":{"event_id":"k1","occurred_at":""#,
        r#"","duration_ms":"#,
        r#","duration_us":"#,
        r#","scenarios_matched":["earn"],"actions_executed":[{"action_id":"earn_points","type":"reward_points","#,
        r#""trace":{"scenarios":[{"scenario_id":"earn","status":"entered","matched":true,"#,
        r#""ledger":"apply","points":[{"actor_id":"ann","action_id":"earn_points","points":20,"balance_after":20}],"balances":{"ann":20}}]}"#,
    ];
    let mut at = 0;
    for part in order {
        match text[at..].find(part) {
            Some(found) => at += found + part.len(),
            None => panic!("expected {part} after byte {at} of:\n{text}"),
        }
    }
}
