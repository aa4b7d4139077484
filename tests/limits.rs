//! Limits (CONTRACT §6) over real HTTP, on SQLite and on PostgreSQL (`both_stores!`): decided in
//! the transaction that writes the award, so concurrent events never pass a cap — on PostgreSQL
//! with the events spread over two nodes sharing the database. Calendar periods follow the
//! programme's zone across a daylight-saving change and a month end; rolling windows end at the
//! event; a spent budget falls back to the next offer; a simulation reads use and writes none.

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
  - id: sc_daily_visit
    enabled: true
    event_types: [visit]
    limits: [{per: actor, times: 1, period: day}]
    children:
      - action: {id: act_visit, type: reward_points, params: {operation: award, points: 10}}
  - id: sc_launch
    enabled: true
    event_types: [signup]
    limits: [{per: scenario, points: 1000}]
    children:
      - action: {id: act_launch, type: reward_points, params: {operation: award, points: 30}}
  - id: sc_monthly
    enabled: true
    event_types: [purchase]
    limits: [{per: actor, points: 100, period: month}]
    children:
      - action: {id: act_monthly, type: reward_points, params: {operation: award, points: 80}}
  - id: sc_rolling
    enabled: true
    event_types: [login]
    limits: [{per: actor, times: 2, period: 24h}]
    children:
      - action: {id: act_rolling, type: reward_points, params: {operation: award, points: 1}}
  - id: sc_premium_offer
    enabled: true
    event_types: [order]
    priority: 10
    exclusive_group: basket
    limits: [{per: scenario, points: 100, period: month}]
    children:
      - action: {id: act_premium, type: reward_points, params: {operation: award, points: 60}}
  - id: sc_plain_offer
    enabled: true
    event_types: [order]
    exclusive_group: basket
    children:
      - action: {id: act_plain, type: reward_points, params: {operation: award, points: 5}}
"#;

both_stores!(
    one_actor_racing_a_daily_limit_is_awarded_once,
    forty_actors_racing_a_budget_share_exactly_it,
    a_day_is_the_programmes_local_day_across_daylight_saving,
    a_month_ends_at_local_midnight_and_cuts_what_passes_the_cap,
    a_rolling_window_counts_the_last_24_hours,
    a_spent_budget_falls_back_to_the_next_offer_and_the_trace_says_why,
    a_simulation_reads_the_use_so_far_and_writes_none,
);

fn event(id: &str, kind: &str, actor: &str, at: &str) -> Value {
    json!({"id": id, "type": kind, "actor_id": actor, "occurred_at": at})
}

/// Sends every event at once, spread over the nodes; the answers in the events' order.
fn race(servers: &[Server], events: &[Value]) -> Vec<Value> {
    let answers = common::race(servers, "/v1/events", events);
    answers
        .into_iter()
        .map(|(status, body)| {
            assert_eq!(status, 200, "{body}");
            body
        })
        .collect()
}

fn action(answer: &Value) -> &Value {
    &answer["actions_executed"][0]
}

fn send(server: &Server, event: &Value) -> Value {
    let (status, body) = server.post_json("/v1/events", event);
    assert_eq!(status, 200, "{body}");
    body
}

fn one_actor_racing_a_daily_limit_is_awarded_once(store: &Store) {
    let servers = store.nodes(RULES);
    let events: Vec<Value> =
        (0..50).map(|i| event(&format!("visit-{i}"), "visit", "ann", "2026-11-02T10:00:00Z")).collect();
    let answers = race(&servers, &events);
    let awarded: Vec<&Value> = answers.iter().filter(|a| action(a)["success"] == true).collect();
    assert_eq!(awarded.len(), 1, "exactly one of 50 concurrent events is awarded: {answers:?}");
    for refused in answers.iter().filter(|a| action(a)["success"] == false) {
        assert_eq!(action(refused)["code"], "limit_reached", "{refused}");
        assert_eq!(action(refused)["message"], "limit reached: at most 1 time per member a day");
        assert_eq!(refused["scenarios_matched"], json!(["sc_daily_visit"]), "a refused scenario stays matched");
    }
    assert_eq!(servers[0].get("/v1/actors/ann/balance").1["balance"], 10);
    let dir = servers[0].dir.path();
    assert_eq!(store.count(dir, "SELECT count(*) FROM limit_uses"), 1, "one use recorded");
    let refusals: f64 =
        servers.iter().map(|s| s.metric(r#"fluxflow_limits_reached_total{scenario_id="sc_daily_visit"}"#)).sum();
    assert_eq!(refusals, 49.0, "each node counts the refusals it answered");
}

fn forty_actors_racing_a_budget_share_exactly_it(store: &Store) {
    let servers = store.nodes(RULES);
    let events: Vec<Value> =
        (0..40).map(|i| event(&format!("signup-{i}"), "signup", &format!("m{i}"), "2026-11-02T10:00:00Z")).collect();
    let answers = race(&servers, &events);
    let points: Vec<i64> = answers.iter().filter_map(|a| action(a)["points"].as_i64()).collect();
    assert_eq!(points.iter().sum::<i64>(), 1000, "the budget is spent exactly: {points:?}");
    assert_eq!(points.iter().filter(|&&p| p == 30).count(), 33);
    assert_eq!(points.iter().filter(|&&p| p == 10).count(), 1);
    let capped = answers.iter().find(|a| action(a)["points"] == 10).unwrap();
    assert!(action(capped)["message"].as_str().unwrap().ends_with(" (capped by limit)"), "{capped}");
    assert_eq!(action(capped)["success"], true);
    let refused: Vec<&Value> = answers.iter().filter(|a| action(a)["code"] == "limit_reached").collect();
    assert_eq!(refused.len(), 6, "{answers:?}");
    assert_eq!(action(refused[0])["message"], "limit reached: at most 1000 points for everyone");
    let dir = servers[0].dir.path();
    assert_eq!(store.count(dir, "SELECT sum(points) FROM entries"), 1000);
    assert_eq!(store.count(dir, "SELECT points FROM limit_budgets"), 1000);
    assert_eq!(store.count(dir, "SELECT times FROM limit_budgets"), 34);
}

fn a_day_is_the_programmes_local_day_across_daylight_saving(store: &Store) {
    let server = &store.nodes(RULES)[0];
    // 29 March 2026 in Berlin is 23 hours long: 00:00 CET (23:00Z the day before) to 00:00 CEST
    // (22:00Z). A UTC day would split the first two events and join the last two.
    let early = send(server, &event("d1", "visit", "ann", "2026-03-28T23:30:00Z"));
    let late = send(server, &event("d2", "visit", "ann", "2026-03-29T21:30:00Z"));
    let next = send(server, &event("d3", "visit", "ann", "2026-03-29T22:30:00Z"));
    assert_eq!(action(&early)["success"], true);
    assert_eq!(action(&late)["code"], "limit_reached", "same local day: {late}");
    assert_eq!(action(&next)["success"], true, "00:30 on 30 March is a new local day: {next}");
    // 25 October 2026 is 25 hours long: 22:00Z on the 24th to 23:00Z on the 25th.
    let first = send(server, &event("d4", "visit", "bob", "2026-10-24T22:30:00Z"));
    let same_day = send(server, &event("d5", "visit", "bob", "2026-10-25T22:30:00Z"));
    assert_eq!(
        (action(&first)["success"].clone(), action(&same_day)["code"].clone()),
        (json!(true), json!("limit_reached"))
    );
}

fn a_month_ends_at_local_midnight_and_cuts_what_passes_the_cap(store: &Store) {
    let server = &store.nodes(RULES)[0];
    // 100 points a month, 80 per purchase: the second purchase of January is cut to 20.
    let jan = send(server, &event("m1", "purchase", "ann", "2026-01-15T12:00:00Z"));
    let jan_end = send(server, &event("m2", "purchase", "ann", "2026-01-31T22:30:00Z")); // 23:30 Berlin
    let feb = send(server, &event("m3", "purchase", "ann", "2026-01-31T23:30:00Z")); // 00:30 on 1 February
    let jan_late = send(server, &event("m4", "purchase", "ann", "2026-01-20T09:00:00Z")); // arrives late
    assert_eq!(action(&jan)["points"], 80);
    assert_eq!(action(&jan_end)["points"], 20);
    assert_eq!(action(&jan_end)["message"], "Awarded 20 points to ann (capped by limit)");
    assert_eq!(action(&feb)["points"], 80, "February starts at local midnight: {feb}");
    assert_eq!(action(&jan_late)["code"], "limit_reached", "a late event counts in its own month");
    assert_eq!(server.get("/v1/actors/ann/balance").1["balance"], 180);
}

fn a_rolling_window_counts_the_last_24_hours(store: &Store) {
    let server = &store.nodes(RULES)[0];
    let at = |id: &str, time: &str| action(&send(server, &event(id, "login", "ann", time)))["success"].clone();
    assert_eq!(at("r1", "2026-06-01T08:00:00Z"), true);
    assert_eq!(at("r2", "2026-06-01T09:00:00Z"), true);
    assert_eq!(at("r3", "2026-06-02T07:59:00Z"), false, "two in the 24 hours before");
    assert_eq!(at("r4", "2026-06-02T08:00:00Z"), false, "08:00 the day before is still inside [at - 24h, at]");
    assert_eq!(at("r5", "2026-06-02T08:30:00Z"), true, "the first login has left the window");
}

fn a_spent_budget_falls_back_to_the_next_offer_and_the_trace_says_why(store: &Store) {
    let server = &store.nodes(RULES)[0];
    let order = |id: &str| json!({"id": id, "type": "order", "actor_id": "ann", "occurred_at": "2026-11-02T10:00:00Z"});
    let first = send(server, &order("o1"));
    assert_eq!(first["scenarios_matched"], json!(["sc_premium_offer"]));
    let second = send(server, &order("o2"));
    assert_eq!(action(&second)["points"], 40, "the budget's last 40 points: {second}");
    let (status, third) = server.post_json("/v1/events?trace=true", &order("o3"));
    assert_eq!(status, 200, "{third}");
    assert_eq!(third["scenarios_matched"], json!(["sc_premium_offer", "sc_plain_offer"]));
    let actions: Vec<(&str, &str)> = third["actions_executed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["action_id"].as_str().unwrap(), a["code"].as_str().unwrap_or("ok")))
        .collect();
    assert_eq!(actions, [("act_premium", "limit_reached"), ("act_plain", "ok")]);
    let premium =
        third["trace"]["scenarios"].as_array().unwrap().iter().find(|s| s["scenario_id"] == "sc_premium_offer");
    assert_eq!(premium.unwrap()["limit_reached"], "limit reached: at most 100 points for everyone a month", "{third}");
}

fn a_simulation_reads_the_use_so_far_and_writes_none(store: &Store) {
    let server = &store.nodes(RULES)[0];
    send(server, &event("v1", "visit", "ann", "2026-11-02T10:00:00Z"));
    let (status, body) = server.post_json(
        "/v1/simulate",
        &json!([
            event("s1", "visit", "ann", "2026-11-02T11:00:00Z"),
            event("s2", "visit", "bob", "2026-11-02T11:00:00Z"),
            event("s3", "visit", "bob", "2026-11-02T12:00:00Z"),
        ]),
    );
    assert_eq!(status, 200, "{body}");
    let codes: Vec<Value> = body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["result"]["actions_executed"][0]["code"].clone())
        .collect();
    assert_eq!(codes, [json!("limit_reached"), Value::Null, json!("limit_reached")], "{body}");
    let dir = server.dir.path();
    assert_eq!(store.count(dir, "SELECT count(*) FROM limit_uses"), 1, "a simulation records no use");
    let real = send(server, &event("v2", "visit", "bob", "2026-11-02T11:00:00Z"));
    assert_eq!(action(&real)["success"], true, "bob's simulated visit was not counted");
}
