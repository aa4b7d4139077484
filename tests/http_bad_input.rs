//! A corpus of malformed requests, each with its expected status, code and message. Bad input
//! never crashes the service and never changes anything.

mod common;

use common::Server;
use serde_json::{Value, json};

struct Case {
    method: &'static str,
    path: &'static str,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    status: u16,
    code: &'static str,
    message: &'static str,
}

fn case(path: &'static str, body: impl Into<Vec<u8>>, status: u16, code: &'static str, message: &'static str) -> Case {
    Case { method: "POST", path, content_type: Some("application/json"), body: body.into(), status, code, message }
}

fn event_with(extra: Value) -> String {
    let mut event = json!({"type": "transaction", "actor_id": "u1"});
    for (k, v) in extra.as_object().unwrap() {
        event[k] = v.clone();
    }
    event.to_string()
}

fn batch_of(n: usize) -> String {
    json!((0..n).map(|i| json!({"id": format!("b{i}"), "type": "login"})).collect::<Vec<_>>()).to_string()
}

fn corpus() -> Vec<Case> {
    const E: &str = "/v1/events";
    const B: &str = "/v1/events/batch";
    let nested = format!("{{\"type\":\"x\",\"payload\":{}1{}}}", "{\"a\":".repeat(200), "}".repeat(200));
    vec![
        case(E, "not-json", 400, "invalid_json", "invalid JSON: expected ident at line 1 column 2"),
        case(E, "", 400, "invalid_json", "invalid JSON: the body is empty"),
        case(E, "   ", 400, "invalid_json", "EOF while parsing a value"),
        case(E, r#"{"type":"login"} garbage"#, 400, "invalid_json", "trailing characters at line 1 column 18"),
        case(E, r#"{"type":"login"}{"type":"login"}"#, 400, "invalid_json", "trailing characters"),
        case(E, r#"{"type":"login""#, 400, "invalid_json", "EOF while parsing an object"),
        case(E, vec![b'{', 0xff, 0xfe, b'}'], 400, "invalid_json", "invalid JSON"),
        case(E, nested, 400, "invalid_json", "recursion limit exceeded"),
        case(E, "null", 400, "invalid_event", "an event is a JSON object, not null"),
        case(E, "[]", 400, "invalid_event", "an event is a JSON object, not an array"),
        case(E, "5", 400, "invalid_event", "an event is a JSON object, not a number"),
        case(E, "{}", 400, "invalid_event", "missing field `type`"),
        case(E, r#"{"type":""}"#, 400, "invalid_event", "type: must not be empty"),
        case(E, r#"{"type":7}"#, 400, "invalid_event", "type: invalid type: integer `7`, expected a string"),
        case(E, r#"{"type":"login","type":"signup"}"#, 400, "invalid_event", "duplicate field `type`"),
        case(E, event_with(json!({"actorId": "u2"})), 400, "invalid_event", "unknown field `actorId`"),
        case(E, r#"{"TYPE":"login"}"#, 400, "invalid_event", "unknown field `TYPE`"),
        case(E, event_with(json!({"payload": [1, 2]})), 400, "invalid_event", "payload: invalid type: sequence"),
        case(E, event_with(json!({"payload": "x"})), 400, "invalid_event", "payload: invalid type: string"),
        case(E, event_with(json!({"meta": {"n": 1}})), 400, "invalid_event", "meta.n: invalid type: integer `1`"),
        case(E, event_with(json!({"meta": ["a"]})), 400, "invalid_event", "meta: invalid type: sequence"),
        case(
            E,
            event_with(json!({"occurred_at": "yesterday"})),
            400,
            "invalid_event",
            "occurred_at: is not an RFC 3339 time",
        ),
        case(
            E,
            event_with(json!({"occurred_at": 1700000000})),
            400,
            "invalid_event",
            "occurred_at: invalid type: integer",
        ),
        case(E, event_with(json!({"actor_id": ""})), 400, "invalid_event", "actor_id: must not be empty"),
        case(E, event_with(json!({"actor_id": 42})), 400, "invalid_event", "actor_id: invalid type: integer `42`"),
        case(E, event_with(json!({"id": 42})), 400, "invalid_event", "id: invalid type: integer `42`"),
        case(E, event_with(json!({"source": {"a": 1}})), 400, "invalid_event", "source: invalid type: map"),
        case(E, event_with(json!({"type": "t".repeat(300)})), 400, "invalid_event", "type: is longer than 256 bytes"),
        case(
            "/v1/events?trace=maybe",
            event_with(json!({})),
            400,
            "invalid_query",
            "trace must be true or false, got `maybe`",
        ),
        Case {
            content_type: Some("text/plain"),
            ..case(
                E,
                event_with(json!({})),
                415,
                "unsupported_media_type",
                "Content-Type must be application/json, got `text/plain`",
            )
        },
        Case {
            content_type: None,
            ..case(
                E,
                event_with(json!({})),
                415,
                "unsupported_media_type",
                "Content-Type must be application/json, got none",
            )
        },
        Case {
            content_type: Some("application/jsonx"),
            ..case(E, event_with(json!({})), 415, "unsupported_media_type", "got `application/jsonx`")
        },
        case(
            E,
            event_with(json!({"payload": {"blob": "x".repeat(1 << 20)}})),
            413,
            "body_too_large",
            "request body is larger than the limit of 1048576 bytes",
        ),
        case(B, r#"{"type":"login"}"#, 400, "invalid_batch", "a batch is a JSON array of events, not an object"),
        case(B, "[]", 400, "invalid_batch", "batch must contain at least one event"),
        case(B, batch_of(101), 400, "invalid_batch", "batch size 101 exceeds max 100"),
        case(B, "[null]", 400, "invalid_batch", "events[0]: an event is a JSON object, not null"),
        case(B, r#"[{"type":"login"}, 5]"#, 400, "invalid_batch", "events[1]: an event is a JSON object, not a number"),
        case(B, r#"[{"type":"login"}, {"actor_id":"u"}]"#, 400, "invalid_batch", "events[1]: missing field `type`"),
        case(
            B,
            r#"[{"id":"a","type":"x"},{"id":"b","type":"x"},{"id":"a","type":"x"}]"#,
            400,
            "invalid_batch",
            "events[2]: id `a` repeats events[0]",
        ),
        case(B, r#"[{"type":"x","actorId":"u"}]"#, 400, "invalid_batch", "events[0]: unknown field `actorId`"),
        case(B, "[{", 400, "invalid_json", "invalid JSON"),
        Case {
            content_type: Some("text/csv"),
            ..case(B, batch_of(1), 415, "unsupported_media_type", "got `text/csv`")
        },
        Case {
            method: "GET",
            body: Vec::new(),
            ..case("/v1/jobs/does-not-exist", "", 404, "not_found", "no job `does-not-exist`")
        },
        Case {
            method: "DELETE",
            ..case("/v1/rules", "", 405, "method_not_allowed", "DELETE is not allowed on /v1/rules")
        },
        Case { method: "POST", ..case("/healthz", "", 405, "method_not_allowed", "POST is not allowed on /healthz") },
        Case { method: "GET", ..case("/v1/nothing", "", 404, "not_found", "no route for GET /v1/nothing") },
    ]
}

#[test]
fn malformed_requests_get_their_status_code_and_message() {
    let rules = common::example_rules();
    let server = Server::start(&rules, &[]);
    let corpus = corpus();
    assert!(corpus.len() >= 30);
    let mut failures = Vec::new();
    for (i, c) in corpus.iter().enumerate() {
        let method = reqwest::Method::from_bytes(c.method.as_bytes()).unwrap();
        let mut request = server.client.request(method, server.url(c.path)).body(c.body.clone());
        if let Some(ct) = c.content_type {
            request = request.header("content-type", ct);
        }
        let response = request.send().unwrap();
        let status = response.status().as_u16();
        let body: Value = response.json().unwrap_or(Value::Null);
        let message = body["error"].as_str().unwrap_or("");
        if status != c.status || body["code"] != c.code || !message.contains(c.message) {
            failures.push(format!(
                "#{i} {} {}: expected {} {} `{}`, got {status} {body}",
                c.method, c.path, c.status, c.code, c.message
            ));
        }
    }
    assert!(failures.is_empty(), "{} of {} cases differ:\n{}", failures.len(), corpus.len(), failures.join("\n"));
    // Nothing was queued, and the service is fine.
    assert_eq!(server.metric("ifttt_events_enqueued_total"), 0.0);
    assert_eq!(server.get("/healthz").0, 200);
    let ok = server
        .client
        .post(server.url("/v1/events"))
        .header("content-type", "application/json; charset=utf-8")
        .body(event_with(json!({})))
        .send()
        .unwrap();
    assert_eq!(ok.status().as_u16(), 200, "parameters such as charset are allowed");
}
