//! A corpus of malformed requests over every route, each with its expected status, code and
//! message. Bad input never crashes the service and never changes anything: the ledger's every
//! table is dumped before and after and compared row by row.

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
    const R: &str = "/v1/actors/u1/redeem";
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
        // Input limits: ids, control characters, depth and width.
        case(
            E,
            event_with(json!({"id": "a\u{1}b"})),
            400,
            "invalid_event",
            "id: contains a control character (U+0001)",
        ),
        case(
            E,
            event_with(json!({"actor_id": "u\u{0}1"})),
            400,
            "invalid_event",
            "actor_id: contains a control character (U+0000)",
        ),
        case(
            E,
            event_with(json!({"source": "pos\r\n"})),
            400,
            "invalid_event",
            "source: contains a control character (U+000D)",
        ),
        case(E, event_with(json!({"id": "i".repeat(257)})), 400, "invalid_event", "id: is longer than 256 bytes"),
        case(
            E,
            event_with(json!({"actor_id": "a".repeat(300)})),
            400,
            "invalid_event",
            "actor_id: is longer than 256 bytes",
        ),
        case(E, event_with(json!({"payload": deep(40)})), 400, "invalid_event", "payload: nests deeper than 32 levels"),
        case(E, event_with(json!({"payload": wide(1_500)})), 400, "invalid_event", "payload: has more than 1000 keys"),
        case(E, r#"{"type":"x","actor_id":"\ud800"}"#, 400, "invalid_json", "hex escape"),
        case(
            E,
            vec![b'{', b'"', b't', b'y', b'p', b'e', b'"', b':', b'"', 0xc3, b'"', b'}'],
            400,
            "invalid_json",
            "invalid",
        ),
        case(E, r#"{"type":"x","actor_id":"u1","actor_id":"u2"}"#, 400, "invalid_event", "duplicate field `actor_id`"),
        case(
            E,
            event_with(json!({"meta": {"k": "v".repeat(2_000_000)}})),
            413,
            "body_too_large",
            "larger than the limit",
        ),
        case(
            B,
            json!([{"type": "x", "id": "b\u{7f}"}]).to_string(),
            400,
            "invalid_batch",
            "events[0]: id: contains a control character (U+007F)",
        ),
        case("/v1/events?Trace=true", event_with(json!({})), 400, "invalid_query", "did you mean `trace`?"),
        // Member operations.
        case(R, r#"{"id":"r1","points":"ten"}"#, 400, "invalid_request", "points"),
        case(R, r#"{"id":"r1","points":10,"till":7}"#, 400, "invalid_request", "unknown field `till`"),
        case(R, r#"{"id":"r\u0007","points":10}"#, 400, "invalid_request", "id: contains a control character (U+0007)"),
        case(R, r#"{"id":"","points":10}"#, 400, "invalid_request", "id: must not be empty"),
        case(R, r#"{"id":"r1","points":0}"#, 400, "invalid_request", "points"),
        case(R, r#"{"id":"r1","points":-5}"#, 400, "invalid_request", "points"),
        case(R, r#"{"id":"r1","points":100000}"#, 422, "insufficient_balance", "cannot take 100000 points"),
        case(R, "[1]", 400, "invalid_request", "invalid type"),
        Case { content_type: Some("text/plain"), ..case(R, "{}", 415, "unsupported_media_type", "application/json") },
        case(
            "/v1/actors/u%001/redeem",
            r#"{"id":"r1","points":1}"#,
            400,
            "invalid_request",
            "actor_id: contains a control character (U+0000)",
        ),
        case("/v1/actors/u1/adjust", r#"{"id":"a1","points":0,"reason":"x"}"#, 400, "invalid_request", "points"),
        case("/v1/actors/u1/adjust", r#"{"id":"a1","points":5,"reason":""}"#, 400, "invalid_request", "reason"),
        case("/v1/actors/u1/adjust", r#"{"id":"a1","points":5}"#, 400, "invalid_request", "missing field `reason`"),
        case(
            "/v1/actors/u1/adjust",
            r#"{"id":"a1","points":-100000,"reason":"x"}"#,
            422,
            "insufficient_balance",
            "cannot take 100000 points",
        ),
        case("/v1/actors/u1/redemptions/nope/cancel", r#"{"id":"c1"}"#, 404, "not_found", "nope"),
        case(
            "/v1/actors/u1/redemptions/r%0A1/cancel",
            r#"{"id":"c1"}"#,
            400,
            "invalid_request",
            "contains a control character (U+000A)",
        ),
        case("/v1/actors/u1/redemptions/seeded-redeem/cancel", r#"{}"#, 400, "invalid_request", "missing field `id`"),
        // Reads with bad queries, path tricks and wrong methods.
        get("/v1/actors/u1/ledger?limit=0", 400, "invalid_query", "limit"),
        get("/v1/actors/u1/ledger?limit=501", 400, "invalid_query", "limit"),
        get("/v1/actors/u1/ledger?cursor=abc", 400, "invalid_query", "cursor"),
        get("/v1/actors/u1/ledger?limit=1&limit=2", 400, "invalid_query", "given more than once"),
        get("/v1/actors/u1/balance?at=yesterday", 400, "invalid_query", "at"),
        get("/v1/actors/u1/balance?At=2026-01-01T00:00:00Z", 400, "invalid_query", "did you mean `at`?"),
        get("/healthz?verbose=1", 400, "invalid_query", "takes no query parameters"),
        get("/v1/actors/u1/../../v1/rules/balance", 404, "not_found", "no route"),
        Case {
            method: "PATCH",
            ..case("/v1/actors/u1/balance", "", 405, "method_not_allowed", "PATCH is not allowed")
        },
        Case {
            method: "PUT",
            ..case(E, event_with(json!({})), 405, "method_not_allowed", "PUT is not allowed on /v1/events")
        },
        Case {
            method: "GET",
            body: Vec::new(),
            ..case(B, "", 405, "method_not_allowed", "GET is not allowed on /v1/events/batch")
        },
        Case { method: "DELETE", ..case("/v1/jobs/x", "", 405, "method_not_allowed", "DELETE is not allowed") },
        // Rules.
        Case {
            method: "PUT",
            content_type: Some("application/json"),
            ..case("/v1/rules", "{}", 415, "unsupported_media_type", "application/yaml")
        },
        Case {
            method: "PUT",
            content_type: Some("application/yaml"),
            ..case("/v1/rules", "version: v1\nscenarios: [", 422, "invalid_rules", "nothing was stored")
        },
        Case {
            method: "PUT",
            content_type: Some("application/yaml"),
            ..case("/v1/rules", vec![b'v', 0xff, b'\n'], 422, "invalid_rules", "not UTF-8")
        },
        Case {
            method: "PUT",
            content_type: Some("application/yaml"),
            ..case(
                "/v1/rules",
                "version: v1\nscenarios:\n  - id: a\n    enabled: yes\n    nope: 1\n",
                422,
                "invalid_rules",
                "the rules have problems",
            )
        },
        case(
            "/v1/rules/rollback",
            r#"{"rules_version":"one"}"#,
            400,
            "invalid_request",
            "rollback request: invalid type",
        ),
        case("/v1/rules/rollback", r#"{}"#, 400, "invalid_request", "missing field `rules_version`"),
        case("/v1/rules/rollback", r#"{"rules_version":999}"#, 404, "not_found", "999"),
        // Simulate.
        case("/v1/simulate", "[]", 400, "invalid_event", "simulate takes 1 to"),
        case("/v1/simulate", r#"{"evnts":[{"type":"x"}]}"#, 400, "invalid_event", "evnts"),
        case(
            "/v1/simulate",
            r#"{"events":[{"type":"x"}],"rules":"version: v1\nscenarios: ["}"#,
            422,
            "invalid_rules",
            "problems",
        ),
        case(
            "/v1/simulate",
            json!({"events": [{"type": "x", "actor_id": "u\u{1}"}]}).to_string(),
            400,
            "invalid_event",
            "control character",
        ),
    ]
}

/// A payload nested `levels` deep.
fn deep(levels: usize) -> Value {
    (0..levels).fold(json!(1), |inner, _| json!({ "a": inner }))
}

/// A payload with `keys` keys.
fn wide(keys: usize) -> Value {
    Value::Object((0..keys).map(|i| (format!("k{i}"), json!(i))).collect())
}

fn get(path: &'static str, status: u16, code: &'static str, message: &'static str) -> Case {
    Case { method: "GET", content_type: None, body: Vec::new(), ..case(path, "", status, code, message) }
}

#[test]
fn malformed_requests_get_their_status_code_and_message() {
    let rules = common::example_rules();
    let server = Server::start(&rules, &["--ledger", "sqlite"]);
    seed(&server);
    let before = dump(&server);
    let enqueued = server.metric("ifttt_events_enqueued_total");
    let corpus = corpus();
    assert!(corpus.len() >= 60, "{} kinds", corpus.len());
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
    // Nothing was queued or written, and the service is fine.
    assert_eq!(server.metric("ifttt_events_enqueued_total"), enqueued);
    let after = dump(&server);
    assert!(before == after, "the ledger changed:\nbefore {before:#?}\nafter {after:#?}");
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

/// An event, an adjustment and a redemption, so the corpus runs against a ledger with content.
fn seed(server: &Server) {
    let (status, _) = server.post_json("/v1/events", &json!({"id": "seeded", "type": "transaction", "actor_id": "u1", "source": "pos-system", "payload": {"amount": 1500, "category": "food"}}));
    assert_eq!(status, 200);
    let (status, body) =
        server.post_json("/v1/actors/u1/adjust", &json!({"id": "seeded-adjust", "points": 50, "reason": "welcome"}));
    assert_eq!(status, 200, "{body}");
    let (status, body) = server.post_json("/v1/actors/u1/redeem", &json!({"id": "seeded-redeem", "points": 10}));
    assert_eq!(status, 200, "{body}");
}

/// Every table of the SQLite ledger, each row as text, sorted: a logical dump that does not
/// depend on the file's layout.
fn dump(server: &Server) -> std::collections::BTreeMap<String, Vec<String>> {
    let db = rusqlite::Connection::open_with_flags(
        server.dir.path().join("data/fluxflow.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let tables: Vec<String> = db
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(tables.len() > 5, "{tables:?}");
    tables
        .into_iter()
        .map(|table| {
            let mut statement = db.prepare(&format!("SELECT * FROM \"{table}\"")).unwrap();
            let columns = statement.column_count();
            let mut rows: Vec<String> = statement
                .query_map([], |row| {
                    let cells: Vec<String> =
                        (0..columns).map(|i| format!("{:?}", row.get_ref(i).map(|v| v.to_owned()).ok())).collect();
                    Ok(cells.join("|"))
                })
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            rows.sort();
            (table, rows)
        })
        .collect()
}

/// Authorization headers that do not carry a live key: each 401, and nothing changes.
#[test]
fn authorization_headers_that_are_not_a_live_key_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("rules.yaml"), common::example_rules()).unwrap();
    let made = std::process::Command::new(common::bin())
        .args(["keys", "add", "shop", "--scopes", "events:write", "--data"])
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    assert!(made.status.success());
    let key = String::from_utf8(made.stdout).unwrap().lines().last().unwrap().to_owned();
    let server = Server::start_in(dir, &["--ledger", "sqlite"]);
    let send = |authorization: Option<&[u8]>| {
        let mut request = server.client.post(server.url("/v1/events")).header("content-type", "application/json");
        if let Some(value) = authorization {
            request = request.header("authorization", reqwest::header::HeaderValue::from_bytes(value).unwrap());
        }
        let response = request.body(event_with(json!({"id": "auth-probe"}))).send().unwrap();
        let status = response.status().as_u16();
        (status, response.json::<Value>().unwrap_or(Value::Null))
    };
    let long = format!("Bearer {}", "k".repeat(10_000));
    let wrong_scheme = format!("Basic {key}");
    let two = format!("Bearer {key} {key}");
    let refused: [&[u8]; 8] = [
        b"Basic dXNlcjpwYXNz",
        b"Bearer",
        b"Bearer ",
        b"Bearer ff_0000",
        long.as_bytes(),
        &[b'B', b'e', b'a', b'r', b'e', b'r', b' ', 0xff, 0xfe],
        wrong_scheme.as_bytes(),
        two.as_bytes(),
    ];
    let (status, body) = send(None);
    assert_eq!((status, body["code"].as_str()), (401, Some("unauthorized")));
    for value in refused {
        let (status, body) = send(Some(value));
        assert_eq!((status, body["code"].as_str()), (401, Some("unauthorized")), "{}", String::from_utf8_lossy(value));
    }
    let (status, body) = send(Some(format!("Bearer {key}").as_bytes()));
    assert_eq!(status, 200, "the live key still works");
    assert_eq!(body.get("replayed"), None, "no refused request had applied the event: {body}");
}
