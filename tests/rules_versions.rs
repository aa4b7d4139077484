//! Rules versions (CONTRACT §10): `PUT /v1/rules`, `GET /v1/rules/versions`,
//! `POST /v1/rules/rollback`, with the file as the source (SQLite) and with the store as the
//! source (PostgreSQL, several nodes): a version published on one node is live on the others
//! within a second, a node started later loads the newest, and a node that cannot load a version
//! stays on its rules and says `rules_behind`.

#[macro_use]
mod common;

use std::time::{Duration, Instant};

use common::pg::Store;
use common::{Server, wait_until};
use serde_json::{Value, json};

const FIRST: &str = "version: v1\nscenarios:\n  - id: earn\n    enabled: true\n    event_types: [purchase]\n    children:\n      - action: {id: earn_points, type: reward_points, params: {operation: award, points: 1}}\n";
const SECOND: &str = "version: v1\nscenarios:\n  - id: earn\n    enabled: true\n    event_types: [purchase]\n    children:\n      - action: {id: earn_points, type: reward_points, params: {operation: award, points: 2}}\n";
const INVALID: &str = "version: v1\nscenarios:\n  - id: earn\n    enabled: true\n    event_types: [purchase]\n    children:\n      - action: {id: earn_points, type: reward_pointz, params: {}}\n";

fn live(server: &Server) -> (u64, String) {
    let rules = server.get("/v1/rules").1;
    (rules["rules_version"].as_u64().unwrap_or(0), rules["hash"].as_str().unwrap_or("").to_owned())
}

fn versions(server: &Server) -> Vec<(u64, String)> {
    let list = server.get("/v1/rules/versions").1;
    list["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["rules_version"].as_u64().unwrap(), v["source"].as_str().unwrap().to_owned()))
        .collect()
}

fn points_for_a_purchase(server: &Server, id: &str) -> i64 {
    let event = json!({"id": id, "type": "purchase", "actor_id": "ann"});
    let (status, result) = server.post_json("/v1/events", &event);
    assert_eq!(status, 200, "{result}");
    result["actions_executed"][0]["points"].as_i64().unwrap_or(0)
}

/// With the file as the source: the file at start is version 1; a published version is written
/// to the file and live at once; invalid rules are refused with every problem and never stored;
/// a rollback is a new version with the old text; an edit of the file becomes a version too.
#[test]
fn with_the_file_as_source_every_change_is_a_version() {
    let server = Server::start(FIRST, &["--ledger", "sqlite"]);
    let (first, first_hash) = live(&server);
    assert_eq!(first, 1);
    assert_eq!(points_for_a_purchase(&server, "p1"), 1);

    let (status, published) = server.put_rules(SECOND);
    assert_eq!(status, 200, "{published}");
    assert_eq!(published["rules_version"], 2, "{published}");
    assert_eq!(live(&server), (2, published["hash"].as_str().unwrap().to_owned()));
    assert_eq!(std::fs::read_to_string(server.rules_path()).unwrap(), SECOND, "written to the file");
    assert_eq!(points_for_a_purchase(&server, "p2"), 2);

    let (status, refused) = server.put_rules(INVALID);
    assert_eq!((status, refused["code"].as_str()), (422, Some("invalid_rules")), "{refused}");
    let problems = refused["problems"].as_array().unwrap();
    assert!(problems.iter().any(|p| p.as_str().unwrap().contains("reward_pointz")), "{refused}");
    assert_eq!(live(&server).0, 2, "the refused version never went live");
    assert_eq!(std::fs::read_to_string(server.rules_path()).unwrap(), SECOND, "nor reached the file");

    let (status, rolled) = server.post_json("/v1/rules/rollback", &json!({"rules_version": 1}));
    assert_eq!(status, 200, "{rolled}");
    assert_eq!((rolled["rules_version"].as_u64(), rolled["hash"].as_str()), (Some(3), Some(first_hash.as_str())));
    assert_eq!(std::fs::read_to_string(server.rules_path()).unwrap(), FIRST);
    assert_eq!(points_for_a_purchase(&server, "p3"), 1);

    std::fs::write(server.rules_path(), SECOND).unwrap();
    assert_eq!(server.post("/v1/rules/reload", "").0, 200);
    assert_eq!(live(&server).0, 4);
    let listed = versions(&server);
    let sources: Vec<(u64, &str)> = listed.iter().map(|(n, s)| (*n, s.as_str())).collect();
    assert_eq!(sources, [(4, "file"), (3, "rollback"), (2, "api"), (1, "file")], "newest first");
    let text = server.get_text("/v1/rules/versions");
    let at = |key: &str| text.find(&format!("\"{key}\"")).unwrap_or(usize::MAX);
    let order = ["rules_version", "hash", "created_at", "author", "source"].map(at);
    assert!(order.windows(2).all(|w| w[0] < w[1]), "keys in the contract's order: {text}");
}

/// What `PUT /v1/rules` and the rollback refuse, each saying why.
#[test]
fn bad_publications_are_refused_and_change_nothing() {
    let server = Server::start(FIRST, &["--ledger", "sqlite"]);
    let response = server
        .client
        .put(server.url("/v1/rules"))
        .header("content-type", "application/json")
        .body(SECOND)
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 415);
    for (body, code) in [
        (json!({"rules_version": 99}), "not_found"),
        (json!({"rules_version": "1"}), "invalid_request"),
        (json!({"version": 1}), "invalid_request"),
    ] {
        let (status, answer) = server.post_json("/v1/rules/rollback", &body);
        assert_eq!(answer["code"], code, "{body}: {status} {answer}");
    }
    for content_type in ["text/yaml", "application/x-yaml; charset=utf-8"] {
        let response =
            server.client.put(server.url("/v1/rules")).header("content-type", content_type).body(FIRST).send().unwrap();
        assert_eq!(response.status().as_u16(), 200, "{content_type}");
    }
    assert_eq!(live(&server).0, 1, "the same text is not a new version");
    assert_eq!(versions(&server).len(), 1);
}

both_stores!(a_node_started_later_loads_the_newest_version);

/// A node started later on the same store loads the newest version (SQLite: restarted on the
/// same data with the file as the source, the file holds the newest; PostgreSQL: from the store).
fn a_node_started_later_loads_the_newest_version(store: &Store) {
    let args = store.args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut first = Server::start(FIRST, &args);
    let (status, published) = first.put_rules(SECOND);
    assert_eq!(status, 200, "{published}");
    let later = if store.is_postgres() {
        Server::start(FIRST, &args)
    } else {
        let restart = Server::args_for(first.dir.path(), &args);
        let dir = std::mem::replace(&mut first.dir, tempfile::tempdir().unwrap());
        drop(first);
        Server::spawn(dir, &restart)
    };
    assert_eq!(live(&later), (2, published["hash"].as_str().unwrap().to_owned()));
    assert_eq!(points_for_a_purchase(&later, "later"), 2);
}

/// With the store as the source (the default on PostgreSQL): a version published on one node is
/// answered by the others within a second; reloading from the file is refused; a version a node
/// cannot load leaves it on its rules, not ready (`rules_behind`), until a loadable one comes.
#[test]
fn with_the_store_as_source_every_node_follows_within_a_second() {
    let Some(store) = Store::postgres() else { return };
    let nodes: Vec<Server> =
        (0..3).map(|_| Server::start(FIRST, &store.args().each_ref().map(String::as_str))).collect();
    assert!(nodes.iter().all(|n| live(n).0 == 1), "seeded once: {:?}", nodes.iter().map(live).collect::<Vec<_>>());
    assert_eq!(versions(&nodes[2]), [(1, "seed".to_owned())]);

    let (status, published) = nodes[0].put_rules(SECOND);
    assert_eq!(status, 200, "{published}");
    let hash = published["hash"].as_str().unwrap().to_owned();
    let started = Instant::now();
    let followed = wait_until(Duration::from_secs(1), || nodes[1..].iter().all(|n| live(n).1 == hash));
    let took = started.elapsed();
    assert!(
        followed,
        "nodes 2 and 3 did not answer the new version within 1 s: {:?}",
        nodes.iter().map(live).collect::<Vec<_>>()
    );
    eprintln!("version live on nodes 2 and 3 {} ms after node 1 answered", took.as_millis());
    assert_eq!(points_for_a_purchase(&nodes[2], "n3"), 2);

    let (status, refused) = nodes[1].post("/v1/rules/reload", "");
    assert_eq!((status, refused["code"].as_str()), (409, Some("rules_source_store")), "{refused}");

    // A version no node can load (written behind the API's back, as an older binary would see a
    // newer one's rules).
    let Store::Postgres(db) = &store else { unreachable!() };
    db.execute(&format!(
        "INSERT INTO rules_versions (rules_version, hash, created_at, author, source, yaml) \
         VALUES (3, 'x', 0, NULL, 'api', '{}')",
        INVALID.replace('\'', "''")
    ))
    .unwrap();
    let behind = wait_until(Duration::from_secs(2), || nodes[1].get("/readyz").1["status"] == "rules_behind");
    assert!(behind, "{}", nodes[1].get("/readyz").1);
    assert_eq!(nodes[1].get("/readyz").0, 503);
    assert_eq!(live(&nodes[1]).0, 2, "still on its rules");
    assert_eq!(points_for_a_purchase(&nodes[1], "n2"), 2);

    let (status, fixed) = nodes[0].put_rules(FIRST);
    assert_eq!((status, fixed["rules_version"].as_u64()), (200, Some(4)), "{fixed}");
    let ready =
        wait_until(Duration::from_secs(2), || nodes.iter().all(|n| n.get("/readyz").0 == 200 && live(n).0 == 4));
    let states: Vec<Value> = nodes.iter().map(|n| n.get("/readyz").1).collect();
    assert!(ready, "{states:?}");
}
