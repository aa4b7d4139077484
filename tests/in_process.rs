//! The service run in-process by the library's `serve`, over real HTTP on loopback with the real
//! SQLite ledger: what it answers while running and while shutting down, and that every admitted
//! event is committed before `serve` returns.

mod common;

use std::sync::Arc;
use std::time::Duration;

use fluxflow::access::Access;
use fluxflow::actions::ActionRegistry;
use fluxflow::engine::{Engine, RulesSource};
use fluxflow::ledger::Ledger;
use fluxflow::ledger::sqlite::SqliteStore;
use fluxflow::service::{Service, serve};
use serde_json::json;

const RULES: &str = "version: v1\nscenarios:\n  - id: visit\n    enabled: true\n    event_types: [login]\n    children:\n      - action: {id: one_point, type: reward_points, params: {operation: award, points: 1}}\n";

struct Running {
    engine: Arc<Engine>,
    base: String,
    stop: tokio::sync::oneshot::Sender<()>,
    serving: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

async fn start(shutdown_grace: Duration) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.yaml");
    std::fs::write(&rules, RULES).unwrap();
    let store = Arc::new(SqliteStore::open(dir.path()).unwrap());
    let ledger = Ledger::start(store.clone()).unwrap();
    let engine = Engine::start(rules, ActionRegistry::builtin(), Some(ledger), store, RulesSource::File).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let service = Service {
        engine: Arc::clone(&engine),
        max_body_bytes: 1 << 20,
        stream: None,
        shutdown_grace,
        access: Access::open(),
        limits: Default::default(),
        tls: None,
        webhooks: None,
    };
    let serving = tokio::spawn(serve(listener, service, async {
        let _ = stopped.await;
    }));
    Running { engine, base, stop, serving, _dir: dir }
}

fn login(i: usize) -> serde_json::Value {
    json!({"id": format!("e{i}"), "type": "login", "actor_id": "u1"})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_events_and_commits_every_one_before_returning() {
    let running = start(Duration::ZERO).await;
    let client = common::async_client();
    let sends = (0..40).map(|i| client.post(format!("{}/v1/events", running.base)).json(&login(i)).send());
    for answer in futures_util::future::join_all(sends).await {
        assert_eq!(answer.unwrap().status(), 200);
    }
    let health = client.get(format!("{}/healthz", running.base)).send().await.unwrap();
    assert_eq!(health.status(), 200);

    running.stop.send(()).unwrap();
    running.serving.await.unwrap();
    let ledger = running.engine.ledger().unwrap();
    assert_eq!(ledger.store().balance("u1").unwrap(), 40);
    assert_eq!(running.engine.metrics.events_processed.get(), 40);
    assert!(
        client.get(format!("{}/healthz", running.base)).send().await.is_err(),
        "the listener is closed once serve returns"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_new_events_during_the_grace_period_then_closes() {
    let running = start(Duration::from_millis(500)).await;
    let client = common::async_client();
    running.stop.send(()).unwrap();
    // Give the shutdown a moment to begin; the grace period is far longer.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let refused = client.post(format!("{}/v1/events", running.base)).json(&login(1)).send().await.unwrap();
    assert_eq!(refused.status(), 503);
    let ready = client.get(format!("{}/readyz", running.base)).send().await.unwrap();
    assert_eq!(ready.status(), 503, "load balancers see the node going away");
    running.serving.await.unwrap();
    assert_eq!(running.engine.ledger().unwrap().store().balance("u1").unwrap(), 0, "nothing refused was applied");
}

/// With no ledger, an event whose evaluation slot is free at once is applied on the caller's
/// own task (no task of its own, no timer); with every slot taken the ticket comes back with
/// its queue place, for the spawned path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_ledger_a_free_slot_applies_the_event_on_the_callers_task() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.yaml");
    std::fs::write(&rules, format!("{RULES}engine: {{event_workers: 1, queue_depth: 4}}\n")).unwrap();
    let versions = Arc::new(fluxflow::ledger::versions::MemoryVersions::default());
    let engine = Engine::start(rules, ActionRegistry::builtin(), None, versions, RulesSource::File).unwrap();
    let event = Arc::new(fluxflow::event::Event::from_value(login(1)).unwrap());

    let ticket = engine.try_admit().unwrap();
    let Ok(result) = engine.apply_now(ticket, &event, false) else { panic!("applied at once") };
    assert_eq!(result.scenarios_matched, ["visit"]);
    assert_eq!(engine.queue_utilization(), 0.0, "its place and its slot are given back");

    let busy = engine.try_admit().unwrap().start().await;
    let Err(ticket) = engine.apply_now(engine.try_admit().unwrap(), &event, false) else { panic!("no slot free") };
    drop(busy);
    let result = engine.apply(ticket, event, false, Default::default()).await.unwrap().unwrap();
    assert_eq!(result.scenarios_matched, ["visit"]);
}
