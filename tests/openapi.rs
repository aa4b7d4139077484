//! The OpenAPI 3.1 document (`docs/openapi.json`, served at `/v1/openapi.json`) checked against
//! the code: the same routes, methods and scopes as the route table, and real answers of the
//! running service (successes and errors, on every route) valid against the schemas it gives.
//! The answers the docs show are checked too, where they are made (`tests/docs.rs`).

mod common;

use std::collections::BTreeSet;

use common::Server;
use common::openapi::{Validator, document};
use fluxflow::access::Need;
use fluxflow::api::table::ROUTES;
use serde_json::Value;

const RULES: &str = "version: v1\nscenarios:\n  - id: visit\n    enabled: true\n    event_types: [login]\n    children:\n      - action: {id: hundred, type: reward_points, params: {operation: award, points: 100}}\n";

#[test]
fn the_document_lists_exactly_the_routes_methods_and_scopes_of_the_code() {
    let doc = document();
    assert_eq!(doc["openapi"], "3.1.0");
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let requirements = operation["security"].as_array().cloned().unwrap_or_default();
            let scopes: Vec<String> = requirements
                .iter()
                .flat_map(|r| r["bearerAuth"].as_array().cloned().unwrap_or_default())
                .map(|s| s.as_str().unwrap().to_owned())
                .collect();
            documented.insert((method.to_uppercase(), path.clone(), scopes));
        }
    }
    let declared: BTreeSet<(String, String, Vec<String>)> = ROUTES
        .iter()
        .map(|route| {
            let scopes = match route.need {
                Need::Scope(scope) => vec![scope.as_str().to_owned()],
                _ => vec![],
            };
            (route.method.to_owned(), route.path.to_owned(), scopes)
        })
        .collect();
    assert_eq!(documented, declared, "docs/openapi.json and the route table differ");
}

#[test]
fn the_service_serves_the_document_and_its_answers_fit_it() {
    let server = Server::start(RULES, &["--ledger", "sqlite"]);
    let served = server.client.get(server.url("/v1/openapi.json")).send().unwrap();
    assert_eq!(served.headers()["content-type"], "application/json");
    assert!(served.json::<Value>().unwrap() == document(), "the served document is not docs/openapi.json");

    let mut validator = Validator::new();
    let mut failures = Vec::new();
    let mut call = |expected: u16, method: &str, pattern: &str, path: &str, body: &str, content_type: &str| -> Value {
        let response = server
            .client
            .request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), server.url(path))
            .header("content-type", content_type)
            .body(body.to_owned())
            .send()
            .unwrap();
        let status = response.status().as_u16();
        let text = response.text().unwrap();
        if status != expected {
            failures.push(format!("{method} {path} answered {status}, not {expected}: {text}"));
        }
        let value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if let Err(problem) = validator.check(method, pattern, status, &value) {
            failures.push(problem);
        }
        value
    };
    let json = "application/json";
    let login = r#"{"id":"e1","type":"login","actor_id":"u1"}"#;
    call(200, "POST", "/v1/events", "/v1/events", login, json);
    call(200, "POST", "/v1/events", "/v1/events", login, json); // replayed
    call(200, "POST", "/v1/events", "/v1/events?trace=true", r#"{"id":"e2","type":"login","actor_id":"u1"}"#, json);
    call(409, "POST", "/v1/events", "/v1/events", r#"{"id":"e1","type":"login","actor_id":"u2"}"#, json);
    call(400, "POST", "/v1/events", "/v1/events", "{", json);
    call(400, "POST", "/v1/events", "/v1/events", r#"{"type":"login","actorId":"u1"}"#, json);
    call(415, "POST", "/v1/events", "/v1/events", login, "text/plain");
    let receipt =
        call(202, "POST", "/v1/events/batch", "/v1/events/batch", r#"[{"type":"login","actor_id":"u3"}]"#, json);
    call(400, "POST", "/v1/events/batch", "/v1/events/batch", "[]", json);
    let job = format!("/v1/jobs/{}", receipt["job_id"].as_str().unwrap());
    std::thread::sleep(std::time::Duration::from_millis(300));
    call(200, "GET", "/v1/jobs/{job_id}", &job, "", json);
    call(404, "GET", "/v1/jobs/{job_id}", "/v1/jobs/nope", "", json);
    call(200, "GET", "/v1/actors/{actor_id}/balance", "/v1/actors/u1/balance", "", json);
    call(400, "GET", "/v1/actors/{actor_id}/balance", "/v1/actors/u1/balance?at=yesterday", "", json);
    call(200, "GET", "/v1/actors/{actor_id}/ledger", "/v1/actors/u1/ledger?limit=1", "", json);
    let redeem = r#"{"id":"r1","points":50,"reason":"coffee"}"#;
    call(200, "POST", "/v1/actors/{actor_id}/redeem", "/v1/actors/u1/redeem", redeem, json);
    call(422, "POST", "/v1/actors/{actor_id}/redeem", "/v1/actors/u1/redeem", r#"{"id":"r2","points":100000}"#, json);
    call(400, "POST", "/v1/actors/{actor_id}/redeem", "/v1/actors/u1/redeem", r#"{"points":"x"}"#, json);
    call(
        200,
        "POST",
        "/v1/actors/{actor_id}/adjust",
        "/v1/actors/u1/adjust",
        r#"{"id":"a1","points":5,"reason":"goodwill"}"#,
        json,
    );
    let cancel = "/v1/actors/{actor_id}/redemptions/{redemption_id}/cancel";
    call(200, "POST", cancel, "/v1/actors/u1/redemptions/r1/cancel", r#"{"id":"c1"}"#, json);
    call(404, "POST", cancel, "/v1/actors/u1/redemptions/nope/cancel", r#"{"id":"c2"}"#, json);
    call(200, "POST", "/v1/simulate", "/v1/simulate", r#"{"events":[{"type":"login","actor_id":"u1"}]}"#, json);
    call(
        422,
        "POST",
        "/v1/simulate",
        "/v1/simulate",
        r#"{"events":[{"type":"login"}],"rules":"version: v1\nscenarios: [{id: 1}]"}"#,
        json,
    );
    call(200, "GET", "/v1/rules", "/v1/rules", "", json);
    call(200, "PUT", "/v1/rules", "/v1/rules", &format!("{RULES}# two\n"), "application/yaml");
    call(422, "PUT", "/v1/rules", "/v1/rules", "version: v1\nscenarios: [{id: 1}]\n", "application/yaml");
    call(200, "GET", "/v1/rules/versions", "/v1/rules/versions", "", json);
    call(200, "GET", "/v1/rules/versions/{rules_version}", "/v1/rules/versions/1", "", json);
    call(404, "GET", "/v1/rules/versions/{rules_version}", "/v1/rules/versions/99", "", json);
    call(404, "GET", "/v1/rules/versions/{rules_version}", "/v1/rules/versions/first", "", json);
    call(200, "GET", "/v1/rules/hits", "/v1/rules/hits", "", json);
    call(200, "POST", "/v1/rules/rollback", "/v1/rules/rollback", r#"{"rules_version":1}"#, json);
    call(404, "POST", "/v1/rules/rollback", "/v1/rules/rollback", r#"{"rules_version":99}"#, json);
    call(200, "POST", "/v1/rules/reload", "/v1/rules/reload", "", json);
    call(200, "GET", "/v1/webhooks/deliveries", "/v1/webhooks/deliveries?state=failed", "", json);
    call(400, "GET", "/v1/webhooks/deliveries", "/v1/webhooks/deliveries?limit=0", "", json);
    let retry = "/v1/webhooks/deliveries/{delivery_id}/retry";
    call(404, "POST", retry, "/v1/webhooks/deliveries/nope/retry", "{}", json);
    call(200, "GET", "/healthz", "/healthz", "", json);
    call(200, "GET", "/readyz", "/readyz", "", json);
    call(200, "GET", "/metrics", "/metrics", "", json);
    assert!(validator.check("GET", "/healthz", 200, &serde_json::json!({"status": 5})).is_err(), "the schemas bite");
    assert!(failures.is_empty(), "{} answers do not fit the document:\n{}", failures.len(), failures.join("\n\n"));
}
