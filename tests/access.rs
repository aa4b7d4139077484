//! API keys and scopes over real HTTP, on both stores: every route of the route→scope table sent
//! with no key, a wrong key, a key without its scope and a key with it; revocation seen by every
//! node within 5 s; the API never reopens; rules changes record the key's name; `serve` refuses a
//! non-loopback address while no key exists.

#[macro_use]
mod common;

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

use common::pg::Store;
use common::{Server, bin};
use fluxflow::access::{Need, Scope};
use fluxflow::api::table::ROUTES;
use reqwest::Method;
use serde_json::Value;

const RULES: &str = "version: v1\nscenarios:\n  - id: visit\n    enabled: true\n    event_types: [login]\n    children:\n      - action: {id: one_point, type: reward_points, params: {operation: award, points: 1}}\n";

both_stores!(
    every_route_needs_a_live_key_with_its_scope,
    a_revoked_key_is_refused_by_every_node_within_5_s_and_the_api_never_reopens
);

/// `fluxflow keys ARGS` on the store the servers use (`data`: the SQLite data directory).
fn keys(store: &Store, data: &std::path::Path, args: &[&str]) -> (bool, String) {
    let output = Command::new(bin())
        .arg("keys")
        .args(args)
        .args(["--data", &data.display().to_string()])
        .args(store.args())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

/// Makes a key; answers its secret, the last line the command printed.
fn add_key(store: &Store, data: &std::path::Path, name: &str, scopes: &str) -> String {
    let (ok, text) = keys(store, data, &["add", name, "--scopes", scopes]);
    assert!(ok, "{text}");
    text.lines().last().unwrap().to_owned()
}

/// The servers of a test, with keys made before they start: one node on SQLite, two on
/// PostgreSQL. Answers the nodes and each key's secret by name.
fn nodes_with_keys(store: &Store, keys: &[(&str, &str)]) -> (Vec<Server>, HashMap<String, String>) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("rules.yaml"), RULES).unwrap();
    let data = dir.path().join("data");
    let secrets = keys.iter().map(|(name, scopes)| (name.to_string(), add_key(store, &data, name, scopes))).collect();
    let nodes = match store {
        Store::Sqlite => vec![Server::start_in(dir, &["--ledger", "sqlite"])],
        Store::Postgres(_) => store.nodes(RULES),
    };
    (nodes, secrets)
}

static PUBLISHED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Sends a request with an optional key; answers the status, the body and `WWW-Authenticate`.
fn send(server: &Server, method: &Method, path: &str, key: Option<&str>) -> (u16, Value, Option<String>) {
    let mut request = server.client.request(method.clone(), server.url(path));
    request = match (method.as_str(), path) {
        // A new text each time: publishing the newest version's text again stores nothing.
        ("PUT", _) => {
            let n = PUBLISHED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            request.header("content-type", "application/yaml").body(format!("{RULES}# {n}\n"))
        }
        ("POST", "/v1/events") => {
            request.header("content-type", "application/json").body(r#"{"type":"login","actor_id":"u1"}"#)
        }
        ("POST", _) => request.header("content-type", "application/json").body("{}"),
        _ => request,
    };
    if let Some(key) = key {
        request = request.header("authorization", format!("Bearer {key}"));
    }
    let response = request.send().unwrap();
    let status = response.status().as_u16();
    let challenge = response.headers().get("www-authenticate").map(|v| v.to_str().unwrap().to_owned());
    let body = response.json().unwrap_or(Value::Null);
    (status, body, challenge)
}

/// A concrete path for a route pattern.
fn concrete(pattern: &str) -> String {
    pattern
        .replace("{job_id}", "0192e000-0000-7000-8000-000000000000")
        .replace("{actor_id}", "u1")
        .replace("{redemption_id}", "r1")
}

/// A scope other than `scope` (not `admin`).
fn another(scope: Scope) -> Scope {
    if scope == Scope::MetricsRead { Scope::EventsRead } else { Scope::MetricsRead }
}

fn every_route_needs_a_live_key_with_its_scope(store: &Store) {
    let mut wanted: Vec<(String, String)> =
        Scope::ALL.iter().map(|s| (s.as_str().replace(':', "-"), s.as_str().to_owned())).collect();
    wanted.push(("ops".into(), "metrics:read,events:read".into()));
    let wanted: Vec<(&str, &str)> = wanted.iter().map(|(n, s)| (n.as_str(), s.as_str())).collect();
    let (nodes, secrets) = nodes_with_keys(store, &wanted);
    let node = &nodes[0];
    let key_for = |scope: Scope| secrets[&scope.as_str().replace(':', "-")].as_str();
    for route in ROUTES {
        let (method, need) = (Method::from_bytes(route.method.as_bytes()).unwrap(), route.need);
        let method = &method;
        let path = concrete(route.path);
        let what = format!("{method} {path}");
        match need {
            Need::Open => {
                for key in [None, Some("ff_wrong"), Some(key_for(Scope::EventsRead))] {
                    let (status, _, _) = send(node, method, &path, key);
                    assert!(status != 401 && status != 403, "{what} is open, answered {status}");
                }
            }
            Need::Key => unreachable!("every route needs a scope or nothing"),
            Need::Scope(scope) => {
                let scope = &scope;
                let (status, body, challenge) = send(node, method, &path, None);
                assert_eq!((status, body["code"].as_str()), (401, Some("unauthorized")), "{what} without a key");
                assert_eq!(challenge.as_deref(), Some("Bearer"), "{what}");
                let (status, _, _) = send(node, method, &path, Some("ff_0000"));
                assert_eq!(status, 401, "{what} with a wrong key");
                let (status, body, _) = send(node, method, &path, Some(key_for(another(*scope))));
                assert_eq!((status, body["code"].as_str()), (403, Some("forbidden")), "{what} without its scope");
                assert!(body["error"].as_str().unwrap().contains(scope.as_str()), "{what}: {body}");
                for key in [key_for(*scope), key_for(Scope::Admin)] {
                    let (status, body, _) = send(node, method, &path, Some(key));
                    assert!(status != 401 && status != 403, "{what} with its scope answered {status}: {body}");
                }
            }
        }
    }
    // A path that is no route: 401 to strangers, 404 to any live key.
    assert_eq!(send(node, &Method::GET, "/v1/nothing", None).0, 401);
    assert_eq!(send(node, &Method::GET, "/v1/nothing", Some(&secrets["ops"])).0, 404);
    // A rules change records the name of the key that made it.
    let (status, body, _) = send(node, &Method::GET, "/v1/rules/versions", Some(key_for(Scope::RulesRead)));
    assert_eq!(status, 200);
    let authors: Vec<&str> = body["versions"].as_array().unwrap().iter().filter_map(|v| v["author"].as_str()).collect();
    assert!(authors.contains(&"rules-write") && authors.contains(&"admin"), "{body}");
}

fn a_revoked_key_is_refused_by_every_node_within_5_s_and_the_api_never_reopens(store: &Store) {
    let (nodes, secrets) = nodes_with_keys(store, &[("shop", "events:write")]);
    let shop = secrets["shop"].as_str();
    for node in &nodes {
        assert_eq!(send(node, &Method::POST, "/v1/events", Some(shop)).0, 200);
    }
    let data = nodes[0].dir.path().join("data");
    let (ok, text) = keys(store, &data, &["revoke", "shop"]);
    assert!(ok, "{text}");
    let revoked = Instant::now();
    for node in &nodes {
        let refused =
            common::wait_until(Duration::from_secs(5), || send(node, &Method::POST, "/v1/events", Some(shop)).0 == 401);
        assert!(refused, "still accepted {:?} after the revocation", revoked.elapsed());
    }
    // No live key is left: every route but the open ones still needs one.
    for node in &nodes {
        assert_eq!(send(node, &Method::POST, "/v1/events", None).0, 401);
        assert_eq!(send(node, &Method::GET, "/healthz", None).0, 200);
    }
    let (ok, text) = keys(store, &data, &["list"]);
    assert!(ok && text.contains("shop\tevents:write") && text.contains("revoked"), "{text}");
    let (ok, text) = keys(store, &data, &["revoke", "shop"]);
    assert!(!ok && text.contains("no live key named `shop`"), "{text}");
}

#[test]
fn serve_refuses_a_non_loopback_address_until_a_key_exists() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("rules.yaml"), RULES).unwrap();
    let mut args = Server::args_for(dir.path(), &[]);
    let addr = args.iter().position(|a| a == "127.0.0.1:0").unwrap();
    args[addr] = "0.0.0.0:0".into();
    let output = Command::new(bin()).args(&args).output().unwrap();
    let log = String::from_utf8_lossy(&output.stderr).into_owned() + &String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{log}");
    assert!(log.contains("--allow-open") && log.contains("fluxflow keys add"), "{log}");

    let mut open = args.clone();
    open.push("--allow-open".into());
    let server = Server::spawn(tempfile::tempdir().unwrap(), &open);
    assert!(server.log_text().contains("--allow-open: no API key exists"), "{}", server.log_text());
    drop(server);

    add_key(&Store::sqlite(), &dir.path().join("data"), "shop", "events:write");
    let server = Server::spawn(dir, &args);
    assert_eq!(send(&server, &Method::POST, "/v1/events", None).0, 401);
}

#[test]
fn keys_cli_checks_names_and_scopes() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::sqlite();
    let (ok, text) = keys(&store, dir.path(), &["add", "shop", "--scopes", "event:write"]);
    assert!(!ok && text.contains("unknown scope `event:write` (did you mean `events:write`?)"), "{text}");
    let (ok, text) = keys(&store, dir.path(), &["add", "a b", "--scopes", "admin"]);
    assert!(!ok && text.contains("a key name is 1 to 64"), "{text}");
    let secret = add_key(&store, dir.path(), "shop", "admin");
    assert!(secret.starts_with("ff_") && secret.len() == 67, "{secret}");
    let (ok, text) = keys(&store, dir.path(), &["add", "shop", "--scopes", "admin"]);
    assert!(!ok && text.contains("a key named `shop` exists"), "{text}");
    let stored = std::fs::read(dir.path().join("keys.db")).unwrap();
    assert!(!stored.windows(secret.len()).any(|w| w == secret.as_bytes()), "only the hash is stored");
}
