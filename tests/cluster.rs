//! A cluster on the real servers (CONTRACT §10): three nodes on one PostgreSQL database, all
//! consuming one NATS JetStream stream. 20,000 events are published to the stream while HTTP
//! clients send events of their own (retrying on another node when one fails), and a random node
//! is killed with SIGKILL twice during the run, each restarted. At the end every event is applied
//! exactly once, every balance equals the sum of its entries, the consumer has nothing pending,
//! and a rules version published on node 1 is answered by nodes 2 and 3 within a second.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::nats::TestStream;
use common::pg::Store;
use common::{Server, wait_until};
use serde_json::json;

const RULES: &str = r#"
version: v1
engine: {event_workers: 16}
scenarios:
  - id: earn
    enabled: true
    event_types: [purchase]
    children:
      - action: {id: earn_points, type: reward_points, params: {operation: award, points_formula: payload.total}}
"#;
const NEXT_RULES: &str = "version: v1\nscenarios: []\n";
const STREAMED: usize = 20_000;
const MEMBERS: usize = 200;
const CLIENTS: usize = 3;
const PER_CLIENT: usize = 300;

/// A small random number generator (the test's runs differ; each logs its choices).
struct Dice(u64);

impl Dice {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 33) % n as u64) as usize
    }
}

/// Sends events to whichever nodes are up, retrying each on the next node until it is answered
/// 200 (a node killed mid-request, or restarting, answers nothing).
fn http_client(client: usize, bases: &Mutex<Vec<String>>, stop: &AtomicBool) -> usize {
    let http = common::http_client(Duration::from_secs(10));
    let mut sent = 0;
    for i in 0..PER_CLIENT {
        let event = json!({"id": format!("http-{client}-{i}"), "type": "purchase",
                           "actor_id": format!("m{}", (client * PER_CLIENT + i) % MEMBERS), "payload": {"total": 1}});
        for attempt in 0.. {
            assert!(!stop.load(Ordering::Relaxed), "the run ended before http-{client}-{i} was answered");
            let base = { bases.lock().unwrap()[(client + i + attempt) % 3].clone() };
            let answered = http.post(format!("{base}/v1/events")).json(&event).send();
            if answered.is_ok_and(|r| r.status().as_u16() == 200) {
                sent += 1;
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    sent
}

#[test]
fn three_nodes_two_kills_every_event_applied_once() {
    let Some(stream) = TestStream::new() else { return };
    let Some(store) = Store::postgres() else { return };
    let Store::Postgres(db) = &store else { unreachable!() };
    stream.create();
    let mut flags: Vec<String> = stream.flags();
    flags.extend(store.args());
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut nodes: Vec<Server> = (0..3).map(|_| Server::start(RULES, &flags)).collect();
    let bases = Arc::new(Mutex::new(nodes.iter().map(|n| n.base.clone()).collect::<Vec<_>>()));

    let started = Instant::now();
    let messages: Vec<(String, Vec<u8>, String)> = (0..STREAMED)
        .map(|i| {
            let (actor, id) = (format!("m{}", i % MEMBERS), format!("s{i}"));
            let event = json!({"id": id, "type": "purchase", "actor_id": actor, "payload": {"total": 1 + i % 5}});
            (actor, serde_json::to_vec(&event).unwrap(), id)
        })
        .collect();
    let expected_points: i64 = (0..STREAMED).map(|i| 1 + (i % 5) as i64).sum::<i64>() + (CLIENTS * PER_CLIENT) as i64;
    let (url, prefix) = (stream.url.clone(), stream.prefix.clone());
    let publisher = std::thread::spawn(move || TestStream::publish_all(&url, &prefix, &messages));
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let (bases, stop) = (Arc::clone(&bases), Arc::clone(&stop));
            std::thread::spawn(move || http_client(client, &bases, &stop))
        })
        .collect();

    let mut dice = Dice(started.elapsed().as_nanos() as u64 ^ 0x5eed);
    for round in 0..2 {
        std::thread::sleep(Duration::from_millis(1_500));
        let victim = dice.below(3);
        let applied = nodes[victim].metric(r#"fluxflow_stream_messages_total{outcome="applied"}"#);
        eprintln!("kill {round}: node {} with {applied} messages applied, at {:?}", victim + 1, started.elapsed());
        nodes[victim].signal(nix::sys::signal::Signal::SIGKILL);
        nodes[victim].child.wait().unwrap();
        std::thread::sleep(Duration::from_millis(300));
        nodes[victim] = Server::start(RULES, &flags);
        bases.lock().unwrap()[victim] = nodes[victim].base.clone();
    }
    publisher.join().unwrap();
    let answered: usize = clients.into_iter().map(|c| c.join().unwrap()).sum();
    assert_eq!(answered, CLIENTS * PER_CLIENT);
    let settled = wait_until(Duration::from_secs(120), || stream.pending() == (0, 0));
    assert!(settled, "the consumer still has messages pending: {:?}", stream.pending());
    eprintln!("settled {:?} after the start", started.elapsed());
    stop.store(true, Ordering::Relaxed);

    let count = |sql: &str| db.query_i64(sql).unwrap();
    let total = (STREAMED + CLIENTS * PER_CLIENT) as i64;
    assert_eq!(count("SELECT count(*) FROM events"), total, "every event stored once");
    assert_eq!(count("SELECT count(*) FROM entries"), total, "every event awarded once");
    assert_eq!(count("SELECT count(DISTINCT event_id) FROM entries"), total);
    assert_eq!(count("SELECT coalesce(sum(balance), 0)::int8 FROM balances"), expected_points);
    let unbalanced = count(
        "SELECT count(*) FROM balances b WHERE b.balance <> \
         (SELECT coalesce(sum(points), 0) FROM entries e WHERE e.actor_id = b.actor_id)",
    );
    assert_eq!(unbalanced, 0, "every balance equals the sum of its entries");

    let (status, published) = nodes[0].put_rules(NEXT_RULES);
    assert_eq!(status, 200, "{published}");
    let hash = published["hash"].as_str().unwrap().to_owned();
    let asked = Instant::now();
    let live = wait_until(Duration::from_secs(1), || nodes[1..].iter().all(|n| n.get("/v1/rules").1["hash"] == hash));
    assert!(live, "nodes 2 and 3 did not answer the new version within 1 s");
    eprintln!("rules version live on nodes 2 and 3 after {} ms", asked.elapsed().as_millis());
}
