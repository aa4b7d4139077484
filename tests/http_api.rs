//! Every endpoint of CONTRACT §2, over real HTTP against the real binary.

mod common;

use std::time::Duration;

use common::{EXAMPLE_EVENT, Server, example_rules, repo_path, wait_until};
use serde_json::{Value, json};

#[test]
fn readme_quick_start() {
    let server = Server::start(&example_rules(), &[]);
    let (status, body) = server.post("/v1/events", EXAMPLE_EVENT);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["scenarios_matched"], json!(["sc_high_value_food"]));
    assert_eq!(
        body["actions_executed"],
        json!([{"action_id": "act_bonus_points", "type": "reward_points", "success": true,
                "message": "Awarded 75 points to user_42 — High-value food purchase bonus", "points": 75}])
    );
    assert_eq!(body["event_id"].as_str().unwrap().len(), 36, "a missing id gets a UUID");
    let (_, none) = server.post("/v1/events", r#"{"type":"page_view","actor_id":"u"}"#);
    assert_eq!(none["scenarios_matched"], json!([]), "never null");
}

#[test]
fn golden_cases_over_http() {
    let rules = std::fs::read_to_string(repo_path("tests/golden/rules.yaml")).unwrap();
    let server = Server::start(&rules, &[]);
    let cases = std::fs::read_to_string(repo_path("tests/golden/cases.jsonl")).unwrap();
    let mut failures = Vec::new();
    for (i, line) in cases.lines().enumerate() {
        let case: Value = serde_json::from_str(line).unwrap();
        let (status, got) = server.post_json("/v1/events", &case["event"]);
        let actions: Vec<Value> = got["actions_executed"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|a| json!({"action_id": a["action_id"], "type": a["type"], "success": a["success"], "message": a["message"]}))
                    .collect()
            })
            .unwrap_or_default();
        if status != 200
            || got["scenarios_matched"] != case["expect"]["scenarios_matched"]
            || Value::from(actions) != case["expect"]["actions"]
        {
            failures.push(format!("case {i}: status {status}, got {got}, expected {}", case["expect"]));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn trace_on_demand() {
    let server = Server::start(&example_rules(), &[]);
    let (_, plain) = server.post("/v1/events", EXAMPLE_EVENT);
    assert!(plain.get("trace").is_none());
    let (status, traced) = server.post("/v1/events?trace=true", EXAMPLE_EVENT);
    assert_eq!(status, 200);
    assert_eq!(traced["trace"]["scenarios"][0]["nodes"][1]["id"], "cond_amount_gt_1000");
    assert_eq!(
        traced["trace"]["scenarios"][0]["nodes"][1]["values"][0],
        json!({"path": "payload.amount", "value": 1500})
    );
    let (status, bad) = server.post("/v1/events?trace=maybe", EXAMPLE_EVENT);
    assert_eq!((status, bad["code"].as_str()), (400, Some("invalid_query")));
}

#[test]
fn batch_and_job_status() {
    let server = Server::start(&example_rules(), &[]);
    let batch = std::fs::read_to_string(repo_path("tests/events/10_testmd_batch.json")).unwrap();
    let (status, receipt) = server.post("/v1/events/batch", &batch);
    assert_eq!(status, 202, "{receipt}");
    assert_eq!(
        (receipt["total"].as_u64(), receipt["queued"].as_u64(), receipt["rejected"].as_u64()),
        (Some(3), Some(3), Some(0))
    );
    let job_path = format!("/v1/jobs/{}", receipt["job_id"].as_str().unwrap());
    let mut job = Value::Null;
    assert!(wait_until(Duration::from_secs(5), || {
        job = server.get(&job_path).1;
        job["state"] == "done"
    }));
    assert_eq!(job["done"], 3);
    assert_eq!(job["events"][0]["result"]["scenarios_matched"], json!(["sc_high_value_food"]));
    assert_eq!(
        job["events"][1]["result"]["actions_executed"][0]["message"],
        "Awarded 100 points to u2 — Welcome bonus"
    );
    assert_eq!(job["events"][2]["state"], "done");
    let (status, missing) = server.get("/v1/jobs/nope");
    assert_eq!((status, missing["code"].as_str()), (404, Some("not_found")));
}

#[test]
fn rules_health_ready_and_metrics() {
    let server = Server::start(&example_rules(), &[]);
    assert_eq!(server.get("/healthz"), (200, json!({"status": "ok"})));
    assert_eq!(server.get("/readyz"), (200, json!({"queue_utilization": 0.0, "status": "ready"})));

    let (status, rules) = server.get("/v1/rules");
    assert_eq!(status, 200);
    assert_eq!(rules["version"], "v1");
    assert_eq!(rules["hash"].as_str().unwrap().len(), 64);
    assert!(rules["loaded_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(rules["scenarios"][0]["id"], "sc_high_value_food");
    assert_eq!(rules["scenarios"][0]["children"][0]["condition"]["expression"], "payload.category == \"food\"");
    assert_eq!(
        rules["scenarios"][0]["children"][0]["condition"]["children"][0]["condition"]["children"][0]["action"]["params"]
            ["expiry_days"],
        90
    );

    let (status, reload) = server.post("/v1/rules/reload", "");
    assert_eq!(status, 200, "{reload}");
    assert_eq!((reload["reloaded"].as_bool(), reload["scenarios_count"].as_u64()), (Some(true), Some(5)));
    assert_eq!(reload["hash"], rules["hash"]);

    server.post("/v1/events", EXAMPLE_EVENT);
    server.post(
        "/v1/events",
        r#"{"type":"transaction","source":"pos-system","actor_id":"u","payload":{"category":"food"}}"#,
    );
    let metrics = server.get_text("/metrics");
    for series in [
        "ifttt_events_enqueued_total 2",
        "ifttt_events_processed_total 2",
        "ifttt_events_dropped_total 0",
        "ifttt_scenarios_matched_total{scenario_id=\"sc_high_value_food\"} 1",
        "ifttt_actions_executed_total{action_type=\"reward_points\",status=\"success\"} 1",
        "ifttt_event_processing_duration_ms_count 2",
        "ifttt_queue_utilization_ratio 0",
        "fluxflow_event_duration_seconds_count 2",
        "fluxflow_rules_reloads_total{outcome=\"unchanged\"} 1",
        "fluxflow_unknown_conditions_total{reason=\"missing_path\"} 1",
        "fluxflow_http_requests_total{route=\"/v1/events\",status=\"200\"} 2",
    ] {
        assert!(metrics.contains(series), "missing `{series}` in\n{metrics}");
    }
}

#[test]
fn unknown_path_and_wrong_method_answer_json() {
    let server = Server::start(&example_rules(), &[]);
    let (status, body) = server.get("/v2/nothing");
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")));
    let response = server.client.get(server.url("/v1/events")).send().unwrap();
    assert_eq!(response.status().as_u16(), 405);
    assert_eq!(response.headers()["allow"], "POST");
    let body: Value = response.json().unwrap();
    assert_eq!(body["code"], "method_not_allowed");
}

#[test]
fn access_log_has_one_line_per_request_and_json_format_works() {
    let server = Server::start(&example_rules(), &["--log-format", "json"]);
    server.post("/v1/events", EXAMPLE_EVENT);
    server.get("/healthz");
    let access_lines = || -> Vec<Value> {
        let log = server.log.lock().unwrap();
        log.iter().filter(|l| l.contains("fluxflow::access")).map(|l| serde_json::from_str(l).unwrap()).collect()
    };
    assert!(wait_until(Duration::from_secs(3), || access_lines().len() >= 2));
    std::thread::sleep(Duration::from_millis(100)); // longer than the log writer's 20 ms batches
    let lines = access_lines();
    let seen: Vec<(&str, &Value)> =
        lines.iter().map(|l| (l["fields"]["path"].as_str().unwrap(), &l["fields"]["status"])).collect();
    assert_eq!(seen, [("/v1/events", &json!(200)), ("/healthz", &json!(200))], "one line per request, in order");
    assert!(
        lines.iter().all(|l| l["level"] == "INFO" && l["fields"]["message"] == "request" && l["timestamp"].is_string())
    );
}
