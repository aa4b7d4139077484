//! Scenario graph evaluation: the original's own evaluator tests (SEED-TESTS.md), adapted, and
//! CONTRACT §5's ordering and filtering rules.

use fluxflow::actions::{ActionRegistry, Plan, PointsChange};
use fluxflow::event::Event;
use fluxflow::facts::Facts;
use fluxflow::graph::Rules;
use serde_json::{Value, json};

const SEED_RULES: &str = r#"
version: v1
scenarios:
  - id: sc_food_high
    enabled: true
    event_types: [transaction]
    sources: [pos-system]
    children:
      - condition:
          id: cond_food
          expression: 'payload.category == "food"'
          children:
            - condition:
                id: cond_amount
                expression: payload.amount > 1000
                children:
                  - action: {id: act_bonus, type: reward_points, params: {operation: award, points: 100.0}}
  - id: sc_login
    enabled: true
    event_types: [login]
    children:
      - action: {id: act_welcome, type: reward_points, params: {operation: award, points: 50.0}}
"#;

fn rules(yaml: &str) -> Rules {
    Rules::load_str(yaml, &ActionRegistry::builtin()).unwrap()
}

fn event(v: Value) -> Event {
    Event::from_value(v).unwrap()
}

fn make_event(event_type: &str, source: Option<&str>, payload: Value) -> Event {
    event(json!({"id": "test-evt", "type": event_type, "source": source, "actor_id": "user_42", "payload": payload}))
}

/// (matched scenario ids, reached action ids)
fn run(rules: &Rules, ev: &Event) -> (Vec<String>, Vec<String>) {
    let mut out = rules.new_evaluation();
    rules.evaluate(&Facts::of(ev), &mut out);
    let matched = out.matched.iter().map(|&i| rules.scenario_id(i).to_owned()).collect();
    let actions = out.planned.iter().map(|p| rules.action(p.action).unwrap().id.clone()).collect();
    (matched, actions)
}

#[test]
fn seed_scenario_match() {
    let r = rules(SEED_RULES);
    let got = run(&r, &make_event("transaction", Some("pos-system"), json!({"amount": 1500, "category": "food"})));
    assert_eq!(got, (vec!["sc_food_high".into()], vec!["act_bonus".into()]));
}

#[test]
fn seed_condition_prune() {
    let r = rules(SEED_RULES);
    let got = run(&r, &make_event("transaction", Some("pos-system"), json!({"amount": 500, "category": "food"})));
    assert_eq!(got, (vec![], vec![]));
}

#[test]
fn seed_login_matches_only_its_type() {
    let r = rules(SEED_RULES);
    let got = run(&r, &make_event("login", None, Value::Null));
    assert_eq!(got, (vec!["sc_login".into()], vec!["act_welcome".into()]));
}

#[test]
fn seed_wrong_source() {
    let r = rules(SEED_RULES);
    let got = run(&r, &make_event("transaction", Some("mobile-app"), json!({"amount": 1500, "category": "food"})));
    assert_eq!(got.0, Vec::<String>::new());
}

#[test]
fn seed_disabled_scenario() {
    let r = rules(
        "version: v1\nscenarios:\n  - id: s\n    enabled: false\n    event_types: [transaction]\n    children:\n      - action: {id: a, type: reward_points, params: {operation: award, points: 1}}\n",
    );
    assert_eq!(run(&r, &make_event("transaction", None, json!({}))), (vec![], vec![]));
}

#[test]
fn type_and_source_match_ignore_case_but_expressions_do_not() {
    let r = rules(
        r#"
version: v1
scenarios:
  - id: s
    enabled: true
    event_types: [Purchase]
    sources: [Store]
    children:
      - condition:
          id: c
          expression: event.type == 'PURCHASE'
          children:
            - action: {id: exact, type: reward_points, params: {operation: award, points: 1}}
      - action: {id: always, type: reward_points, params: {operation: award, points: 2}}
"#,
    );
    let ev = make_event("PURCHASE", Some("STORE"), json!({}));
    assert_eq!(run(&r, &ev), (vec!["s".into()], vec!["exact".into(), "always".into()]));
    let ev = make_event("purchase", Some("store"), json!({}));
    assert_eq!(run(&r, &ev).1, vec!["always".to_owned()]);
    assert_eq!(run(&r, &make_event("purchase", None, json!({}))).1, Vec::<String>::new(), "no source, sources listed");
}

#[test]
fn every_passing_branch_fires_depth_first_in_file_order() {
    let r = rules(
        r#"
version: v1
scenarios:
  - id: first
    enabled: true
    event_types: [e]
    children:
      - condition:
          id: c1
          expression: payload.missing > 1
          children:
            - action: {id: never, type: reward_points, params: {operation: award, points: 1}}
      - condition:
          id: c2
          expression: payload.n > 1
          children:
            - action: {id: a1, type: reward_points, params: {operation: award, points: 1}}
            - condition:
                id: c3
                expression: payload.n > 2
                children:
                  - action: {id: a2, type: reward_points, params: {operation: award, points: 1}}
            - action: {id: a3, type: reward_points, params: {operation: award, points: 1}}
  - id: conditions_only
    enabled: true
    event_types: [e]
    children:
      - condition:
          id: c4
          expression: "true"
  - id: second
    enabled: true
    event_types: [e, E, other]
    children:
      - action: {id: a4, type: reward_points, params: {operation: deduct, points: 4}}
"#,
    );
    let ev = make_event("e", None, json!({"n": 3}));
    assert_eq!(
        run(&r, &ev),
        (vec!["first".into(), "second".into()], vec!["a1".into(), "a2".into(), "a3".into(), "a4".into()])
    );
    let mut out = r.new_evaluation();
    r.evaluate(&Facts::of(&ev), &mut out);
    assert_eq!(out.planned[3].plan, Plan::Points(PointsChange::of(-4)));
}

#[test]
fn trace_explains_unknowns_and_skips() {
    let r = rules(SEED_RULES);
    let ev = make_event("transaction", Some("pos-system"), json!({"category": "food"}));
    let mut out = r.new_evaluation();
    let trace = serde_json::to_value(r.evaluate_traced(&Facts::of(&ev), &mut out)).unwrap();
    assert_eq!(
        trace,
        json!({"scenarios": [
            {"scenario_id": "sc_food_high", "status": "entered", "matched": false, "nodes": [
                {"kind": "condition", "id": "cond_food", "depth": 0, "result": "true",
                 "expression": "payload.category == \"food\"", "values": [{"path": "payload.category", "value": "food"}]},
                {"kind": "condition", "id": "cond_amount", "depth": 1, "result": "unknown",
                 "expression": "payload.amount > 1000", "reason": "`payload.amount` is missing",
                 "values": [{"path": "payload.amount", "missing": true}]},
                {"kind": "action", "id": "act_bonus", "depth": 2, "result": "pruned"}
            ]},
            {"scenario_id": "sc_login", "status": "skipped_type", "matched": false}
        ]})
    );
    let parsed = r.evaluate_traced(&Facts::of(&ev), &mut out);
    assert_eq!(
        parsed.scenario("sc_food_high").unwrap().why_not().unwrap(),
        "condition `cond_amount` is unknown: `payload.amount` is missing"
    );
    assert_eq!(
        parsed.scenario("sc_login").unwrap().why_not().unwrap(),
        "skipped: it does not listen to this event type"
    );
}

#[test]
fn trace_marks_reached_actions_and_disabled_and_source_skips() {
    let r = rules(&SEED_RULES.replace("  - id: sc_login\n    enabled: true", "  - id: sc_login\n    enabled: false"));
    let ev = make_event("transaction", Some("web"), json!({}));
    let trace = r.evaluate_traced(&Facts::of(&ev), &mut r.new_evaluation());
    assert_eq!(trace.scenario("sc_food_high").unwrap().why_not().unwrap(), "skipped: it does not accept this source");
    assert_eq!(trace.scenario("sc_login").unwrap().why_not().unwrap(), "skipped: it is disabled");
    let ev = make_event("transaction", Some("pos-system"), json!({"amount": 1500, "category": "food"}));
    let trace = serde_json::to_value(r.evaluate_traced(&Facts::of(&ev), &mut r.new_evaluation())).unwrap();
    assert_eq!(trace["scenarios"][0]["matched"], true);
    assert_eq!(
        trace["scenarios"][0]["nodes"][2],
        json!({"kind": "action", "id": "act_bonus", "depth": 2, "result": "reached"})
    );
}

#[test]
fn evaluation_buffer_is_reused() {
    let r = rules(SEED_RULES);
    let mut out = r.new_evaluation();
    r.evaluate(&Facts::of(&make_event("login", None, Value::Null)), &mut out);
    r.evaluate(
        &Facts::of(&make_event("transaction", Some("pos-system"), json!({"amount": 1, "category": "food"}))),
        &mut out,
    );
    assert!(out.matched.is_empty() && out.planned.is_empty(), "cleared between events");
}

/// The equality index must change nothing: the fast path (indexed) and the traced path (every
/// scenario) agree on matches, plans and unknowns, for the golden events and for events that
/// miss the guarded path or hold another type there.
#[test]
fn the_equality_index_changes_no_result() {
    let mut yaml = String::from("version: v1\nscenarios:\n");
    for i in 0..60 {
        let category = ["food", "drinks", "books", "5"][i % 4];
        let expression = if i % 3 == 0 {
            format!("payload.category == '{category}' AND payload.amount > {}", i * 10)
        } else {
            format!("'{category}' == payload.category")
        };
        yaml.push_str(&format!(
            "  - id: s{i}\n    enabled: true\n    event_types: [t{}]\n    children:\n      - condition:\n          id: c{i}\n          expression: \"{expression}\"\n          children:\n            - action: {{id: a{i}, type: reward_points, params: {{operation: award, points: {}}}}}\n",
            i % 2,
            i + 1
        ));
    }
    yaml.push_str("  - id: open\n    enabled: true\n    event_types: [t0, t1]\n    children:\n      - action: {id: always, type: reward_points, params: {operation: award, points: 1}}\n");
    let generated = rules(&yaml);
    let golden =
        rules(&std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/rules.yaml")).unwrap());
    let mut events: Vec<(&Rules, Event)> = Vec::new();
    for category in [json!("food"), json!("drinks"), json!("books"), json!("5"), json!(5), json!(null), json!(["food"])]
    {
        for t in ["t0", "T1"] {
            events.push((
                &generated,
                event(json!({"type": t, "actor_id": "u", "payload": {"category": category, "amount": 300}})),
            ));
        }
    }
    events.push((&generated, event(json!({"type": "t0", "actor_id": "u", "payload": {"amount": 300}}))));
    let cases = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/cases.jsonl")).unwrap();
    for line in cases.lines() {
        let case: Value = serde_json::from_str(line).unwrap();
        events.push((&golden, event(case["event"].clone())));
    }
    for (rules, ev) in &events {
        let (mut fast, mut full) = (rules.new_evaluation(), rules.new_evaluation());
        rules.evaluate(&Facts::of(ev), &mut fast);
        rules.evaluate_traced(&Facts::of(ev), &mut full);
        assert_eq!(
            (&fast.matched, &fast.planned, fast.unknowns),
            (&full.matched, &full.planned, full.unknowns),
            "{ev:?}"
        );
    }
    let mut out = generated.new_evaluation();
    generated.evaluate(&Facts::of(&events[0].1), &mut out);
    let fired: Vec<&str> = out.matched.iter().map(|&i| generated.scenario_id(i)).collect();
    assert_eq!(fired, ["s0", "s4", "s8", "s12", "s16", "s20", "s24", "s28", "s32", "s40", "s44", "s52", "s56", "open"]);
}
