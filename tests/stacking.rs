//! Loyalty I, evaluation side: event time, schedules (with their trace), priority order and
//! exclusive groups, without a ledger and through the service.

mod common;

use common::Server;
use fluxflow::actions::ActionRegistry;
use fluxflow::engine::evaluate_stateless;
use fluxflow::event::Event;
use fluxflow::graph::Rules;
use fluxflow::result::EventResult;
use serde_json::{Value, json};

const RULES: &str = r#"version: v1
programme:
  timezone: Europe/Berlin
scenarios:
  - id: sc_base
    enabled: true
    event_types: [purchase]
    children:
      - action: {id: act_base, type: reward_points, params: {operation: award, points: 1}}
  - id: sc_weekend
    enabled: true
    event_types: [purchase]
    priority: 10
    schedule: {days: [sat, sun], hours: "08:00-20:00"}
    exclusive_group: offer
    children:
      - action: {id: act_weekend, type: reward_points, params: {operation: award, points_formula: "payload.amount * 2"}}
  - id: sc_december
    enabled: true
    event_types: [purchase]
    priority: 5
    schedule: {from: 2026-12-01, until: 2026-12-31}
    exclusive_group: offer
    children:
      - action: {id: act_december, type: reward_points, params: {operation: award, points: 50}}
  - id: sc_fallback
    enabled: true
    event_types: [purchase]
    priority: 5
    exclusive_group: offer
    children:
      - action: {id: act_fallback, type: reward_points, params: {operation: award, points: 5}}
"#;

fn rules() -> Rules {
    Rules::load_str(RULES, &ActionRegistry::builtin()).unwrap()
}

fn evaluate(rules: &Rules, at: &str, payload: Value) -> EventResult {
    let event =
        Event::from_value(json!({"type": "purchase", "actor_id": "ann", "occurred_at": at, "payload": payload}))
            .unwrap();
    evaluate_stateless(rules, &event, true)
}

fn trace_of(result: &EventResult, scenario: &str) -> Value {
    let trace = serde_json::to_value(result.trace.as_ref().unwrap()).unwrap();
    trace["scenarios"].as_array().unwrap().iter().find(|s| s["scenario_id"] == scenario).cloned().unwrap()
}

fn actions(result: &EventResult) -> Vec<&str> {
    result.actions_executed.iter().map(|a| a.action_id.as_str()).collect()
}

#[test]
fn priority_orders_scenarios_and_the_first_of_a_group_acts() {
    let r = rules();
    // Saturday 2025-11-29 12:00 in Berlin: the weekend offer (priority 10) acts.
    let result = evaluate(&r, "2025-11-29T11:00:00Z", json!({"amount": 10}));
    assert_eq!(result.scenarios_matched, ["sc_weekend", "sc_base"]);
    assert_eq!(actions(&result), ["act_weekend", "act_base"]);
    assert_eq!(result.occurred_at.as_deref(), Some("2025-11-29T11:00:00Z"));
    let excluded = trace_of(&result, "sc_fallback");
    assert_eq!(excluded["status"], "excluded");
    assert_eq!(excluded["excluded_by"], "sc_weekend");
    assert_eq!(trace_of(&result, "sc_december")["status"], "outside_schedule");
}

#[test]
fn outside_its_schedule_a_scenario_is_skipped_and_the_next_of_its_group_acts() {
    let r = rules();
    // Monday 2025-12-01 12:00 in Berlin: no weekend; December offer (file order before fallback).
    let result = evaluate(&r, "2025-12-01T11:00:00Z", json!({"amount": 10}));
    assert_eq!(result.scenarios_matched, ["sc_fallback", "sc_base"], "2025 is not the campaign's year");
    let result = evaluate(&r, "2025-11-24T11:00:00Z", json!({"amount": 10}));
    assert_eq!(actions(&result), ["act_fallback", "act_base"]);
    let weekend = trace_of(&result, "sc_weekend");
    assert_eq!(weekend["status"], "outside_schedule");
    assert!(result.trace.as_ref().unwrap().scenario("sc_weekend").unwrap().why_not().unwrap().contains("schedule"));
    // Saturday 21:00 local is after the window.
    let result = evaluate(&r, "2025-11-29T20:00:00Z", json!({"amount": 10}));
    assert_eq!(actions(&result), ["act_fallback", "act_base"]);
}

#[test]
fn a_scenario_whose_actions_all_fail_stays_matched_and_the_next_of_its_group_acts() {
    let r = rules();
    // The weekend formula has no amount: its action fails, so the group falls through.
    let result = evaluate(&r, "2025-11-29T11:00:00Z", json!({}));
    assert_eq!(result.scenarios_matched, ["sc_weekend", "sc_fallback", "sc_base"]);
    let weekend = &result.actions_executed[0];
    assert_eq!((weekend.action_id.as_str(), weekend.success), ("act_weekend", false));
    assert_eq!(weekend.code.as_deref(), Some("formula_invalid"));
    assert_eq!(actions(&result), ["act_weekend", "act_fallback", "act_base"]);
}

#[test]
fn all_priorities_zero_keep_file_order() {
    let yaml = RULES.replace("    priority: 10\n", "").replace("    priority: 5\n", "");
    let r = Rules::load_str(&yaml, &ActionRegistry::builtin()).unwrap();
    let result = evaluate(&r, "2025-11-29T11:00:00Z", json!({"amount": 10}));
    assert_eq!(result.scenarios_matched, ["sc_base", "sc_weekend"]);
}

#[test]
fn event_time_is_answered_and_checked_over_http() {
    let rules = RULES.replace("programme:\n", "programme:\n  max_event_age_days: 30\n");
    let server = Server::start(&rules, &["--ledger", "sqlite"]);
    let ahead = jiff::Timestamp::now().checked_add(jiff::SignedDuration::from_mins(10)).unwrap();
    let (status, body) = server
        .post_json("/v1/events", &json!({"type": "purchase", "actor_id": "ann", "occurred_at": ahead.to_string()}));
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["code"], "invalid_event");
    assert!(body["error"].as_str().unwrap().starts_with("occurred_at: is more than 5 minutes ahead"), "{body}");
    // A minute ahead is clock skew: taken as the time received.
    let skewed = jiff::Timestamp::now().checked_add(jiff::SignedDuration::from_mins(1)).unwrap();
    let (status, body) = server.post_json(
        "/v1/events",
        &json!({"id": "skew", "type": "purchase", "actor_id": "ann", "occurred_at": skewed.to_string()}),
    );
    assert_eq!(status, 200, "{body}");
    let answered: jiff::Timestamp = body["occurred_at"].as_str().unwrap().parse().unwrap();
    assert!(answered < skewed);
    // Too old for the programme.
    let (status, body) = server.post_json(
        "/v1/events",
        &json!({"type": "purchase", "actor_id": "ann", "occurred_at": "2020-01-01T00:00:00Z"}),
    );
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("max_event_age_days: 30"), "{body}");
    // Without occurred_at: the time received, kept by a replay.
    let (_, first) = server.post_json("/v1/events", &json!({"id": "e1", "type": "purchase", "actor_id": "ann"}));
    std::thread::sleep(std::time::Duration::from_millis(20));
    let (_, again) = server.post_json("/v1/events", &json!({"id": "e1", "type": "purchase", "actor_id": "ann"}));
    assert_eq!(again["replayed"], true);
    assert_eq!(first["occurred_at"], again["occurred_at"]);
}

/// Without a ledger nothing is remembered between events: a limit sees only the event itself, so
/// a `times` limit never refuses and a `points` limit cuts one event's awards (CONTRACT §10).
#[test]
fn without_a_ledger_limits_see_only_the_event_itself() {
    let rules = Rules::load_str(
        r#"version: v1
scenarios:
  - id: sc_capped
    enabled: true
    event_types: [purchase]
    limits: [{per: actor, times: 1, period: day}, {per: scenario, points: 50}]
    children:
      - action: {id: act_first, type: reward_points, params: {operation: award, points: 30}}
      - action: {id: act_second, type: reward_points, params: {operation: award, points: 30}}
      - action: {id: act_third, type: reward_points, params: {operation: award, points: 30}}
"#,
        &ActionRegistry::builtin(),
    )
    .unwrap();
    for _ in 0..2 {
        let result = evaluate(&rules, "2026-11-02T10:00:00Z", json!({}));
        let outcomes: Vec<(Option<i64>, Option<&str>)> =
            result.actions_executed.iter().map(|a| (a.points, a.code.as_deref())).collect();
        assert_eq!(outcomes, [(Some(30), None), (Some(20), None), (None, Some("limit_reached"))]);
        assert_eq!(result.actions_executed[1].message, "Awarded 20 points to ann (capped by limit)");
        assert_eq!(result.actions_executed[2].message, "limit reached: at most 50 points for everyone");
    }
}
