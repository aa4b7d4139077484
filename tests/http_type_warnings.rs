//! A rules file the original loads must load here too: conditions that can never be true because
//! of their types start the service with a warning, are always unknown, and the trace says why.
//! Lists and `in` work end to end.

mod common;

use common::{Server, repo_path};
use serde_json::{Value, json};

fn warning_rules() -> String {
    std::fs::read_to_string(repo_path("tests/rules/invalid/21_type_warnings.yaml")).unwrap()
}

/// The trace node of a condition, by id.
fn node<'a>(result: &'a Value, id: &str) -> &'a Value {
    result["trace"]["scenarios"][0]["nodes"]
        .as_array()
        .and_then(|nodes| nodes.iter().find(|n| n["id"] == id))
        .unwrap_or_else(|| panic!("no trace node `{id}` in {result}"))
}

#[test]
fn type_impossible_conditions_load_and_trace_their_reason() {
    let server = Server::start(&warning_rules(), &[]);
    let event = json!({"type": "purchase", "actor_id": "ann", "payload": {"s": "b", "c": "food"},
                       "meta": {"tier": "gold"}});
    let (status, result) = server.post_json("/v1/events?trace=true", &event);
    assert_eq!(status, 200, "{result}");
    assert_eq!(result["scenarios_matched"], json!([]));
    let cases = [
        (
            "cond_string_order",
            "`payload.s > \"a\"` can never be decided: `>` compares numbers, but `\"a\"` is a string",
        ),
        ("cond_meta_path", "meta values are strings, so `meta.tier.level` never has a value"),
        ("cond_bool_order", "`>` compares numbers, but `true` is a condition"),
        ("cond_in_string", "`in` looks in a list, but `\"food\"` is a string"),
    ];
    for (id, reason) in cases {
        let node = node(&result, id);
        assert_eq!(node["result"], "unknown", "{node}");
        let got = node["reason"].as_str().unwrap_or_default();
        assert!(got.contains(reason), "{id}: reason {got:?} does not contain {reason:?}");
    }
    let (_, rules) = server.get("/v1/rules");
    assert_eq!(rules["warnings"].as_array().map(Vec::len), Some(5), "{}", rules["warnings"]);
}

#[test]
fn membership_awards_over_http() {
    let rules = r#"version: v1
scenarios:
  - id: sc_basket
    enabled: true
    event_types: [purchase]
    children:
      - condition:
          id: cond_category
          expression: "payload.category in ['food', 'drinks'] AND payload.store not in [13, 666]"
          children:
            - action: {id: act_points, type: reward_points, params: {operation: award, points: 5}}
"#;
    let server = Server::start(rules, &["--ledger", "sqlite"]);
    let post = |category: Value, store: Value| {
        let event = json!({"type": "purchase", "actor_id": "ann", "payload": {"category": category, "store": store}});
        let (status, result) = server.post_json("/v1/events", &event);
        assert_eq!(status, 200, "{result}");
        result["scenarios_matched"].as_array().map_or(0, Vec::len)
    };
    assert_eq!(post(json!("drinks"), json!(12)), 1);
    assert_eq!(post(json!("toys"), json!(12)), 0);
    assert_eq!(post(json!("food"), json!("13")), 0, "a numeric string is in [13]");
    let (_, balance) = server.get("/v1/actors/ann/balance");
    assert_eq!(balance["balance"], 5);
}
