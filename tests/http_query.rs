//! Query parameters are read strictly on every route: an unknown or misspelled one is a 400
//! `invalid_query` that names it (with the nearest allowed name), the probes included; and a
//! mistyped wrapper key of `/v1/simulate` is named as a key of the request.

mod common;

use common::{EXAMPLE_EVENT, Server};

/// One route: method, route pattern, a path that matches it, a body that it accepts, and the
/// parameters it takes.
struct Route {
    method: &'static str,
    pattern: &'static str,
    path: &'static str,
    body: String,
    params: &'static [&'static str],
}

fn routes() -> Vec<Route> {
    let route =
        |method, pattern, path, body: &str, params| Route { method, pattern, path, body: body.to_owned(), params };
    vec![
        route("POST", "/v1/events", "/v1/events", EXAMPLE_EVENT, &["trace"]),
        route("POST", "/v1/events/batch", "/v1/events/batch", &format!("[{EXAMPLE_EVENT}]"), &[]),
        route("POST", "/v1/simulate", "/v1/simulate", EXAMPLE_EVENT, &[]),
        route("GET", "/v1/jobs/{job_id}", "/v1/jobs/no-such-job", "", &[]),
        route("GET", "/v1/actors/{actor_id}/balance", "/v1/actors/user_42/balance", "", &["at"]),
        route("GET", "/v1/actors/{actor_id}/ledger", "/v1/actors/user_42/ledger", "", &["limit", "cursor"]),
        route("POST", "/v1/actors/{actor_id}/redeem", "/v1/actors/user_42/redeem", r#"{"id": "r", "points": 1}"#, &[]),
        route(
            "POST",
            "/v1/actors/{actor_id}/adjust",
            "/v1/actors/user_42/adjust",
            r#"{"id": "a", "points": 1, "reason": "x"}"#,
            &[],
        ),
        route(
            "POST",
            "/v1/actors/{actor_id}/redemptions/{redemption_id}/cancel",
            "/v1/actors/user_42/redemptions/r/cancel",
            r#"{"id": "c"}"#,
            &[],
        ),
        route("GET", "/v1/rules", "/v1/rules", "", &[]),
        route("PUT", "/v1/rules", "/v1/rules", "", &[]),
        route("GET", "/v1/rules/versions", "/v1/rules/versions", "", &[]),
        route("GET", "/v1/rules/versions/{rules_version}", "/v1/rules/versions/1", "", &[]),
        route("GET", "/v1/rules/hits", "/v1/rules/hits", "", &[]),
        route("POST", "/v1/rules/rollback", "/v1/rules/rollback", r#"{"rules_version": 1}"#, &[]),
        route("POST", "/v1/rules/reload", "/v1/rules/reload", "", &[]),
        route("GET", "/v1/webhooks/deliveries", "/v1/webhooks/deliveries", "", &["state", "limit", "cursor"]),
        route("POST", "/v1/webhooks/deliveries/{delivery_id}/retry", "/v1/webhooks/deliveries/d1/retry", "", &[]),
        route("GET", "/healthz", "/healthz", "", &[]),
        route("GET", "/readyz", "/readyz", "", &[]),
        route("GET", "/metrics", "/metrics", "", &[]),
        route("GET", "/v1/openapi.json", "/v1/openapi.json", "", &[]),
        route("GET", "/console", "/console", "", &[]),
        route("GET", "/console/{asset}", "/console/app.js", "", &[]),
    ]
}

fn server() -> Server {
    Server::start(&common::example_rules(), &["--ledger", "sqlite"])
}

#[test]
fn the_table_covers_every_route_the_service_declares() {
    let tested: Vec<(&str, &str, &[&str])> = routes().iter().map(|r| (r.method, r.pattern, r.params)).collect();
    let declared: Vec<(&str, &str, &[&str])> =
        fluxflow::api::table::ROUTES.iter().map(|r| (r.method, r.path, r.params)).collect();
    assert_eq!(tested, declared, "a route was added or changed: add it to this test's table");
}

#[test]
fn every_route_refuses_an_unknown_or_misspelled_query_parameter_and_names_it() {
    let server = server();
    let mut failures = Vec::new();
    for route in routes() {
        let (unknown, expected_hint) = match route.params.first() {
            // A misspelling of the first parameter it takes: the hint names the right one.
            Some(first) => {
                let mut chars = first.chars();
                let capitalised: String = chars.next().unwrap().to_uppercase().chain(chars).collect();
                (capitalised, format!("(did you mean `{first}`?)"))
            }
            None => ("trace".to_owned(), format!("({} {} takes no query parameters)", route.method, route.pattern)),
        };
        let mut queries = vec![format!("{unknown}=true"), unknown.clone()];
        if let Some(first) = route.params.first() {
            queries.push(format!("{first}=1&{unknown}=1"));
        }
        for query in queries {
            let (status, body) = server.request(route.method, &format!("{}?{query}", route.path), &route.body);
            let message = body["error"].as_str().unwrap_or("");
            let named = format!("unknown query parameter `{unknown}` {expected_hint}");
            if status != 400 || body["code"] != "invalid_query" || message != named {
                failures.push(format!(
                    "{} {}?{query}: expected 400 `{named}`, got {status} {body}",
                    route.method, route.path
                ));
            }
        }
        // Without a query the same request is not refused for its query.
        let (status, body) = server.request(route.method, route.path, &route.body);
        if status == 400 {
            failures.push(format!("{} {} without a query: got {status} {body}", route.method, route.path));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(server.metric("ifttt_events_enqueued_total"), 2.0, "only the requests without a query queued events");
}

#[test]
fn the_parameters_a_route_takes_still_work_and_are_checked() {
    let server = server();
    let (status, traced) = server.request("POST", "/v1/events?trace=true", EXAMPLE_EVENT);
    assert_eq!(status, 200, "{traced}");
    assert!(traced.get("trace").is_some(), "{traced}");
    let (status, plain) = server.request("POST", "/v1/events?trace=false", EXAMPLE_EVENT);
    assert_eq!((status, plain.get("trace")), (200, None), "{plain}");
    let (status, page) = server.request("GET", "/v1/actors/user_42/ledger?limit=1", "");
    assert_eq!((status, page["entries"].as_array().map(Vec::len)), (200, Some(1)), "{page}");
    let cursor = page["next_cursor"].as_str().unwrap();
    let (status, next) = server.request("GET", &format!("/v1/actors/user_42/ledger?limit=1&cursor={cursor}"), "");
    assert_eq!((status, next["entries"].as_array().map(Vec::len)), (200, Some(1)), "{next}");

    for (path, message) in [
        ("/v1/events?trace=maybe", "trace must be true or false, got `maybe`"),
        ("/v1/events?trace=1&trace=0", "query parameter `trace` is given more than once"),
        ("/v1/actors/user_42/ledger?limit=0", "limit must be a whole number from 1 to 500, got `0`"),
        ("/v1/actors/user_42/ledger?limit=1&limit=2", "query parameter `limit` is given more than once"),
        ("/v1/actors/user_42/ledger?cursr=5", "unknown query parameter `cursr` (did you mean `cursor`?)"),
        ("/v1/actors/user_42/ledger?page=2", "unknown query parameter `page` (allowed: limit, cursor)"),
    ] {
        let method = if path.starts_with("/v1/events") { "POST" } else { "GET" };
        let (status, body) = server.request(method, path, EXAMPLE_EVENT);
        assert_eq!(
            (status, body["code"].as_str(), body["error"].as_str()),
            (400, Some("invalid_query"), Some(message)),
            "{path}"
        );
    }
    assert_eq!(server.metric("ifttt_events_enqueued_total"), 2.0, "refused requests queued nothing");
}

#[test]
fn a_wrong_method_or_path_is_still_405_or_404_whatever_the_query() {
    let server = server();
    assert_eq!(server.request("DELETE", "/healthz?x=1", "").1["code"], "method_not_allowed");
    assert_eq!(server.request("GET", "/v1/events?Trace=1", "").1["code"], "method_not_allowed");
    assert_eq!(server.request("GET", "/v1/nothing?x=1", "").1["code"], "not_found");
    assert_eq!(server.request("HEAD", "/healthz", "").0, 200);
    assert_eq!(server.request("HEAD", "/healthz?x=1", "").0, 400);
}

#[test]
fn a_mistyped_simulate_wrapper_key_is_named_as_a_key_of_the_request() {
    let server = server();
    for (body, message) in [
        (r#"{"evnts": []}"#.to_owned(), "simulate request: unknown key `evnts` (did you mean `events`?)"),
        (
            format!(r#"{{"events": [{EXAMPLE_EVENT}], "rulez": "version: v1"}}"#),
            "simulate request: unknown key `rulez` (did you mean `rules`?)",
        ),
        (r#"{"nothing": 1}"#.to_owned(), "simulate request: unknown key `nothing` (allowed: events, rules)"),
        // An object with an event's keys is an event, whatever else it holds.
        (r#"{"type": "purchase", "evnts": []}"#.to_owned(), "events[0]: unknown field `evnts`"),
        (r#"{"actor_id": "ann"}"#.to_owned(), "events[0]: missing field `type`"),
    ] {
        let (status, answer) = server.request("POST", "/v1/simulate", &body);
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(answer["code"], "invalid_event", "{body}: {answer}");
        let error = answer["error"].as_str().unwrap();
        assert!(error.starts_with(message), "{body}: expected `{message}`, got `{error}`");
    }
    let (status, ok) = server.request("POST", "/v1/simulate", &format!(r#"{{"events": [{EXAMPLE_EVENT}]}}"#));
    assert_eq!(status, 200, "{ok}");
}
