//! Several nodes, one PostgreSQL database: two `fluxflow serve` processes share the books.
//! Duplicates sent to both nodes are applied once; concurrent deductions over both never
//! overdraw; a node killed with SIGKILL mid-load loses nothing when clients retry on the other
//! node; and a node whose database connection is cut (through a TCP proxy in the test) answers
//! 503, acknowledges nothing it did not commit, and recovers by itself once the database is back.
//! The group's id lookup keeps a primary-key plan however small the table was when planned.
//!
//! PostgreSQL only: these skip (with a note) when there is no server, unless `CI=true`.

#[macro_use]
mod common;

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::pg::database;
use common::{Server, wait_until};
use fluxflow::ledger::postgres::scratch::ScratchDatabase;
use nix::sys::signal::Signal;
use serde_json::{Value, json};

const RULES: &str = r#"
version: v1
engine: {event_workers: 16, queue_depth: 20000}
scenarios:
  - id: earn
    enabled: true
    event_types: [purchase]
    children:
      - action:
          id: earn_points
          type: reward_points
          params: {operation: award, points_formula: payload.amount, reason: Purchase}
  - id: spend
    enabled: true
    event_types: [redeem]
    children:
      - action:
          id: spend_points
          type: reward_points
          params: {operation: deduct, points_formula: payload.amount, reason: Redeemed}
"#;

fn node(db_url: &str) -> Server {
    Server::start(RULES, &["--ledger", db_url])
}

fn http() -> reqwest::blocking::Client {
    common::http_client(Duration::from_secs(30))
}

/// POSTs an event; `None` when no answer came (the node is gone).
fn send(client: &reqwest::blocking::Client, base: &str, event: &Value) -> Option<(u16, Value)> {
    let response = client.post(format!("{base}/v1/events")).json(event).send().ok()?;
    let status = response.status().as_u16();
    Some((status, response.json().unwrap_or(Value::Null)))
}

/// Event `n` of the load: mostly purchases, every seventh a redeem that may be refused.
fn load_event(prefix: &str, n: usize) -> Value {
    let actor = format!("m{}", n % 50);
    if n % 7 == 3 {
        json!({"id": format!("{prefix}-{n}"), "type": "redeem", "actor_id": actor, "payload": {"amount": 1 + n % 13}})
    } else {
        json!({"id": format!("{prefix}-{n}"), "type": "purchase", "actor_id": actor, "payload": {"amount": 1 + n % 10}})
    }
}

/// The points an answer says were moved (0 when the deduction was refused).
fn answered_points(answer: &Value) -> i64 {
    answer["actions_executed"]
        .as_array()
        .map_or(0, |actions| actions.iter().filter(|a| a["success"] == true).filter_map(|a| a["points"].as_i64()).sum())
}

/// Checks the books: every id in `answers` applied once (one event row; one entry when its
/// points moved), each member's balance = sum of its entries = the points answered for it.
fn check_books(db: &ScratchDatabase, answers: &HashMap<String, (String, Value)>) {
    let count = |sql: &str| db.query_i64(sql).unwrap();
    assert_eq!(count("SELECT count(*) FROM events"), answers.len() as i64, "every id applied once");
    let moved = answers.values().filter(|(_, a)| answered_points(a) != 0).count();
    assert_eq!(count("SELECT count(*) FROM entries"), moved as i64, "one entry per successful points action");
    assert_eq!(count("SELECT count(*) FROM (SELECT event_id FROM entries GROUP BY event_id HAVING count(*) > 1) d"), 0);
    assert_eq!(
        count(
            "SELECT count(*) FROM balances b WHERE b.balance <> \
             (SELECT coalesce(sum(points), 0) FROM entries e WHERE e.actor_id = b.actor_id)"
        ),
        0,
        "every balance equals the sum of its entries"
    );
    let mut by_actor: HashMap<&str, i64> = HashMap::new();
    for (actor, answer) in answers.values() {
        *by_actor.entry(actor).or_default() += answered_points(answer);
    }
    for (actor, points) in by_actor {
        let balance = count(&format!("SELECT coalesce((SELECT balance FROM balances WHERE actor_id = '{actor}'), 0)"));
        assert_eq!(balance, points, "{actor}: the balance equals the awards and deductions answered");
        assert!(balance >= 0, "{actor} overdrawn");
    }
}

#[test]
fn two_nodes_apply_every_id_once_and_never_overdraw() {
    let Some(db) = database() else { return };
    let nodes = [node(&db.url), node(&db.url)];
    let bases: Vec<String> = nodes.iter().map(|n| n.base.clone()).collect();

    // 2,000 events of 50 members through both nodes at once; 200 of them sent to each node.
    let events: Vec<Value> = (0..2000).map(|n| load_event("e", n)).collect();
    let answers = Mutex::new(HashMap::<String, (String, Value)>::new());
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for worker in 0..16 {
            let (events, answers, next, bases) = (&events, &answers, &next, &bases);
            s.spawn(move || {
                let client = http();
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    let Some(event) = events.get(n) else { break };
                    let id = event["id"].as_str().unwrap().to_owned();
                    let actor = event["actor_id"].as_str().unwrap().to_owned();
                    let mut targets = vec![&bases[(n + worker) % 2]];
                    if n % 10 == 0 {
                        targets.push(&bases[(n + worker + 1) % 2]);
                    }
                    let mut seen: Vec<Value> = Vec::new();
                    for base in targets {
                        let (status, mut body) = send(&client, base, event).expect("the node answers");
                        assert_eq!(status, 200, "{body}");
                        body.as_object_mut().unwrap().remove("replayed");
                        body.as_object_mut().unwrap().remove("duration_ms");
                        body.as_object_mut().unwrap().remove("duration_us");
                        seen.push(body);
                    }
                    assert!(seen.windows(2).all(|w| w[0] == w[1]), "both nodes answer the same: {seen:?}");
                    answers.lock().unwrap().insert(id, (actor, seen.remove(0)));
                }
            });
        }
    });
    let answers = answers.into_inner().unwrap();
    assert_eq!(answers.len(), 2000);
    check_books(&db, &answers);

    // 100 concurrent deductions of 10 from a balance of 500, over both nodes: exactly 50 succeed.
    let (status, _) = nodes[0].post_json(
        "/v1/events",
        &json!({"id": "fill", "type": "purchase", "actor_id": "zed", "payload": {"amount": 500}}),
    );
    assert_eq!(status, 200);
    let succeeded = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for i in 0..100 {
            let (bases, succeeded) = (&bases, &succeeded);
            s.spawn(move || {
                let event =
                    json!({"id": format!("take-{i}"), "type": "redeem", "actor_id": "zed", "payload": {"amount": 10}});
                let (status, body) = send(&http(), &bases[i % 2], &event).unwrap();
                assert_eq!(status, 200, "{body}");
                if body["actions_executed"][0]["success"] == true {
                    succeeded.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    });
    assert_eq!(succeeded.load(Ordering::Relaxed), 50);
    assert_eq!(nodes[1].get("/v1/actors/zed/balance").1["balance"], 0);
}

#[test]
fn a_node_killed_mid_load_loses_nothing_when_clients_retry_on_the_other() {
    let Some(db) = database() else { return };
    let mut victim = node(&db.url);
    let survivor = node(&db.url);
    let (victim_base, survivor_base) = (victim.base.clone(), survivor.base.clone());
    let events: Vec<Value> = (0..1500).map(|n| load_event("k", n)).collect();
    let answers = Mutex::new(HashMap::<String, (String, Value)>::new());
    let (next, retried) = (AtomicUsize::new(0), AtomicUsize::new(0));
    std::thread::scope(|s| {
        for _ in 0..12 {
            let (events, answers, next, retried) = (&events, &answers, &next, &retried);
            let (victim_base, survivor_base) = (&victim_base, &survivor_base);
            s.spawn(move || {
                let client = http();
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    let Some(event) = events.get(n) else { break };
                    // Half the clients' events go to the node that will die; an event it does not
                    // answer (or answers 5xx) is sent again to the other node.
                    let first = if n % 2 == 0 { victim_base } else { survivor_base };
                    let answer = match send(&client, first, event) {
                        Some((200, body)) => body,
                        _ => {
                            retried.fetch_add(1, Ordering::Relaxed);
                            let (status, body) = send(&client, survivor_base, event).expect("the survivor answers");
                            assert_eq!(status, 200, "{body}");
                            body
                        }
                    };
                    let actor = event["actor_id"].as_str().unwrap().to_owned();
                    answers.lock().unwrap().insert(event["id"].as_str().unwrap().to_owned(), (actor, answer));
                }
            });
        }
        // Kill the victim once a third of the load is through.
        assert!(wait_until(Duration::from_secs(120), || next.load(Ordering::Relaxed) >= 500));
        victim.signal(Signal::SIGKILL);
    });
    victim.child.wait().unwrap();
    assert!(retried.load(Ordering::Relaxed) > 0, "the kill happened mid-load");
    let answers = answers.into_inner().unwrap();
    assert_eq!(answers.len(), 1500, "every event answered by one node or the other");
    check_books(&db, &answers);
}

/// A TCP forwarder to PostgreSQL that can cut every connection and refuse new ones, or stall:
/// keep every connection open and forward nothing (a network that drops packets).
struct Proxy {
    port: u16,
    up: Arc<AtomicBool>,
    stalled: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    fn start(upstream: &'static str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let stalled = Arc::new(AtomicBool::new(false));
        let open = Arc::new(Mutex::new(Vec::<TcpStream>::new()));
        let (up2, open2, stalled2) = (Arc::clone(&up), Arc::clone(&open), Arc::clone(&stalled));
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if !up2.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(upstream) else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                {
                    let mut open = open2.lock().unwrap();
                    open.push(client.try_clone().unwrap());
                    open.push(server.try_clone().unwrap());
                }
                for (mut from, mut to) in [(client.try_clone().unwrap(), server.try_clone().unwrap()), (server, client)]
                {
                    let stalled = Arc::clone(&stalled2);
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16384];
                        loop {
                            match from.read(&mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => {
                                    while stalled.load(Ordering::SeqCst) {
                                        std::thread::sleep(Duration::from_millis(10));
                                    }
                                    if to.write_all(&buf[..n]).is_err() {
                                        break;
                                    }
                                }
                            }
                        }
                        let _ = to.shutdown(Shutdown::Both);
                        let _ = from.shutdown(Shutdown::Both);
                    });
                }
            }
        });
        Proxy { port, up, stalled, open }
    }

    /// Forwards nothing until `resume`, keeping every connection open.
    fn stall(&self) {
        self.stalled.store(true, Ordering::SeqCst);
    }

    fn resume(&self) {
        self.stalled.store(false, Ordering::SeqCst);
    }

    /// Drops every connection and refuses new ones.
    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for stream in self.open.lock().unwrap().drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

#[test]
fn a_lost_database_answers_503_acknowledges_nothing_uncommitted_and_recovers_by_itself() {
    let Some(db) = database() else { return };
    let proxy = Proxy::start("127.0.0.1:5432");
    let url = format!("postgres://postgres@127.0.0.1:{}/{}", proxy.port, db.name());
    let server = node(&url);
    let base = server.base.clone();
    let stop = AtomicBool::new(false);
    let answers = Mutex::new(HashMap::<String, (String, Value)>::new());
    let unanswered = Mutex::new(Vec::<Value>::new());
    let (statuses, next) = (Mutex::new(HashSet::<u16>::new()), AtomicUsize::new(0));
    std::thread::scope(|s| {
        // Load: clients send new events until told to stop; each answer is recorded.
        for _ in 0..8 {
            let (stop, answers, unanswered, statuses, next, base) =
                (&stop, &answers, &unanswered, &statuses, &next, &base);
            s.spawn(move || {
                let client = http();
                while !stop.load(Ordering::Relaxed) {
                    let event = load_event("x", next.fetch_add(1, Ordering::Relaxed));
                    match send(&client, base, &event) {
                        Some((200, body)) => {
                            let actor = event["actor_id"].as_str().unwrap().to_owned();
                            answers.lock().unwrap().insert(event["id"].as_str().unwrap().to_owned(), (actor, body));
                        }
                        Some((status, body)) => {
                            assert_eq!(status, 503, "a lost database answers 503: {body}");
                            assert_eq!(body["code"], "ledger_unavailable");
                            statuses.lock().unwrap().insert(status);
                            unanswered.lock().unwrap().push(event);
                            std::thread::sleep(Duration::from_millis(20));
                        }
                        None => panic!("the node stopped answering"),
                    }
                }
            });
        }
        assert!(wait_until(Duration::from_secs(30), || next.load(Ordering::Relaxed) >= 300));
        proxy.cut();
        assert!(
            wait_until(Duration::from_secs(15), || server.get("/readyz").0 == 503),
            "readyz notices the lost database"
        );
        assert_eq!(server.get("/readyz").1["status"], "ledger_unavailable");
        assert!(wait_until(Duration::from_secs(15), || statuses.lock().unwrap().contains(&503)));
        let (status, body) = server.post_json("/v1/events", &load_event("y", 1));
        assert_eq!((status, body["code"].as_str()), (503, Some("ledger_unavailable")), "{body}");
        unanswered.lock().unwrap().push(load_event("y", 1));
        proxy.restore();
        assert!(wait_until(Duration::from_secs(30), || server.get("/readyz").0 == 200), "recovers by itself");
        let after = next.load(Ordering::Relaxed);
        assert!(wait_until(Duration::from_secs(30), || next.load(Ordering::Relaxed) >= after + 200));
        stop.store(true, Ordering::Relaxed);
    });
    let mut answers = answers.into_inner().unwrap();
    // Everything acknowledged is committed (checked below); events answered 503 are sent again
    // and end up applied exactly once.
    for event in unanswered.into_inner().unwrap() {
        let (status, body) = server.post_json("/v1/events", &event);
        assert_eq!(status, 200, "{body}");
        let actor = event["actor_id"].as_str().unwrap().to_owned();
        answers.insert(event["id"].as_str().unwrap().to_owned(), (actor, body));
    }
    check_books(&db, &answers);
}

/// A database that stops answering without closing anything (packets dropped): the node does not
/// wait forever — events answer 503 within the ledger's operation timeout (4 s, below the event
/// timeout), `/readyz` turns 503 within its 2 s check — and it recovers once the database answers.
#[test]
fn a_database_that_stops_answering_makes_events_503_and_the_node_recovers() {
    let Some(db) = database() else { return };
    let proxy = Proxy::start("127.0.0.1:5432");
    let server = node(&format!("postgres://postgres@127.0.0.1:{}/{}", proxy.port, db.name()));
    let mut answers = HashMap::new();
    let mut record = |event: &Value, body: Value| {
        let actor = event["actor_id"].as_str().unwrap().to_owned();
        answers.insert(event["id"].as_str().unwrap().to_owned(), (actor, body));
    };
    for n in 0..20 {
        let event = load_event("s", n);
        let (status, body) = server.post_json("/v1/events", &event);
        assert_eq!(status, 200, "{body}");
        record(&event, body);
    }
    proxy.stall();
    let stalled_event = load_event("s", 20);
    let started = std::time::Instant::now();
    let (status, body) = server.post_json("/v1/events", &stalled_event);
    assert_eq!((status, body["code"].as_str()), (503, Some("ledger_unavailable")), "{body}");
    assert!(started.elapsed() < Duration::from_secs(8), "answered within the timeout: {:?}", started.elapsed());
    let started = std::time::Instant::now();
    let (status, ready) = server.get("/readyz");
    assert_eq!((status, ready["status"].as_str()), (503, Some("ledger_unavailable")));
    assert!(started.elapsed() < Duration::from_secs(5), "readiness answers quickly: {:?}", started.elapsed());
    proxy.resume();
    assert!(wait_until(Duration::from_secs(30), || server.get("/readyz").0 == 200), "recovers by itself");
    // The event answered 503 may or may not have been committed; its retry is answered either way.
    let (status, body) = server.post_json("/v1/events", &stalled_event);
    assert_eq!(status, 200, "{body}");
    record(&stalled_event, body);
    for n in 21..40 {
        let event = load_event("s", n);
        let (status, body) = server.post_json("/v1/events", &event);
        assert_eq!(status, 200, "{body}");
        record(&event, body);
    }
    check_books(&db, &answers);
}

/// A group looks its event ids up in one statement; the plan a connection caches for it is made
/// while the table is small, and must still be a primary-key probe per id (a sequential scan cost
/// two thirds of the durable throughput once the table grew).
#[test]
fn the_group_id_lookup_probes_the_primary_key_whatever_the_table_size_when_planned() {
    let Some(db) = database() else { return };
    let plan = db.event_lookup_plan().unwrap();
    assert!(plan.contains("Index Scan using events_pkey"), "{plan}");
    assert!(!plan.contains("Seq Scan on events"), "{plan}");
}
