//! Crash test: concurrent clients send a few thousand events with unique ids, the server is
//! killed with SIGKILL midway, restarted on the same data, and every event is sent again.
//! Every event acknowledged (200 or 202) before the kill must be in the ledger exactly once;
//! after the resend every event must be, and every balance must equal the sum of its entries.
//! Runs on SQLite and on PostgreSQL (`sqlite::…`, `postgres::…`).

#[macro_use]
mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::pg::Store;
use common::{Server, wait_until};
use nix::sys::signal::Signal;
use serde_json::{Value, json};

const RULES: &str = r#"
version: v1
engine: {event_workers: 8, queue_depth: 20000}
scenarios:
  - id: earn
    enabled: true
    event_types: [purchase]
    children:
      - action:
          id: earn_points
          type: reward_points
          params: {operation: award, points_formula: payload.amount}
"#;

const CLIENTS: usize = 6;
const PER_CLIENT: usize = 500;
const BATCH: usize = 25;

fn event(client: usize, n: usize) -> Value {
    json!({"id": format!("c{client}-{n}"), "type": "purchase", "actor_id": format!("m{}", n % 37),
           "payload": {"amount": 1 + (n * 7 + client) % 10}})
}

/// Sends this client's events (every fourth group as one batch, the rest one by one) and records
/// the ids acknowledged; stops at the first transport error (the server is gone).
fn send_all(server_url: &str, client: usize, acked: &Mutex<Vec<String>>, sent: &AtomicUsize, stop_on_error: bool) {
    let http = common::http_client(Duration::from_secs(20));
    for group in 0..PER_CLIENT / BATCH {
        let events: Vec<Value> = (group * BATCH..(group + 1) * BATCH).map(|n| event(client, n)).collect();
        let ids = events.iter().map(|e| e["id"].as_str().unwrap().to_owned());
        if group % 4 == 0 {
            let response = http.post(format!("{server_url}/v1/events/batch")).json(&events).send();
            match response {
                Ok(r) if r.status().as_u16() == 202 => {
                    let receipt: Value = r.json().unwrap();
                    assert_eq!(receipt["queued"], BATCH, "the queue is deep enough for every batch");
                    acked.lock().unwrap().extend(ids);
                }
                Ok(r) => panic!("batch answered {}", r.status()),
                Err(_) if stop_on_error => return,
                Err(e) => panic!("{e}"),
            }
        } else {
            for (event, id) in events.iter().zip(ids) {
                match http.post(format!("{server_url}/v1/events")).json(event).send() {
                    Ok(r) if r.status().as_u16() == 200 => acked.lock().unwrap().push(id),
                    Ok(r) => panic!("event answered {}", r.status()),
                    Err(_) if stop_on_error => return,
                    Err(e) => panic!("{e}"),
                }
            }
        }
        sent.fetch_add(BATCH, Ordering::Relaxed);
    }
}

both_stores!(kill_9_midway_loses_nothing_and_doubles_nothing);

fn kill_9_midway_loses_nothing_and_doubles_nothing(store: &Store) {
    let mut server = Server::start(RULES, &["--ledger", &store.flag()]);
    let acked = Arc::new(Mutex::new(Vec::new()));
    let sent = Arc::new(AtomicUsize::new(0));
    let url = server.base.clone();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let (acked, sent, url) = (Arc::clone(&acked), Arc::clone(&sent), url.clone());
            std::thread::spawn(move || send_all(&url, client, &acked, &sent, true))
        })
        .collect();
    let total = CLIENTS * PER_CLIENT;
    assert!(wait_until(Duration::from_secs(60), || sent.load(Ordering::Relaxed) >= total / 3));
    server.signal(Signal::SIGKILL);
    for c in clients {
        c.join().unwrap();
    }
    server.child.wait().unwrap();
    let acked_before: HashSet<String> = acked.lock().unwrap().drain(..).collect();
    assert!(acked_before.len() >= total / 3 && acked_before.len() < total, "killed midway: {}", acked_before.len());

    // Restart on the same data: batch events accepted before the kill are processed first.
    let args = Server::args_for(server.dir.path(), &["--ledger", &store.flag()]);
    let dir = std::mem::replace(&mut server.dir, tempfile::tempdir().unwrap());
    let mut restarted = Server::spawn(dir, &args);
    let dir = restarted.dir.path().to_owned();
    let count = |sql: &str| store.count(&dir, sql);
    assert!(
        wait_until(Duration::from_secs(30), || count("SELECT count(*) FROM job_events WHERE state = 'queued'") == 0)
    );
    let mut missing = Vec::new();
    for id in &acked_before {
        let rows = count(&format!("SELECT count(*) FROM entries WHERE event_id = '{id}'"));
        if rows != 1 {
            missing.push(format!("{id}: {rows} entries"));
        }
    }
    assert!(missing.is_empty(), "acknowledged before the kill but not in the ledger exactly once: {missing:?}");

    // Resend everything; each event ends up in the ledger exactly once.
    let resend_acked = Arc::new(Mutex::new(Vec::new()));
    let url = restarted.base.clone();
    std::thread::scope(|s| {
        for client in 0..CLIENTS {
            let (acked, url) = (Arc::clone(&resend_acked), url.clone());
            s.spawn(move || send_all(&url, client, &acked, &AtomicUsize::new(0), false));
        }
    });
    assert_eq!(resend_acked.lock().unwrap().len(), total);
    assert!(
        wait_until(Duration::from_secs(30), || count("SELECT count(*) FROM job_events WHERE state = 'queued'") == 0)
    );
    restarted.signal(Signal::SIGTERM);
    assert_eq!(restarted.wait_exit(Duration::from_secs(30)), Some(0));

    assert_eq!(count("SELECT count(*) FROM events"), total as i64);
    assert_eq!(count("SELECT count(DISTINCT event_id) FROM entries"), total as i64);
    assert_eq!(count("SELECT count(*) FROM entries"), total as i64, "no event applied twice");
    let expected_points: i64 =
        (0..CLIENTS).flat_map(|c| (0..PER_CLIENT).map(move |n| 1 + ((n * 7 + c) % 10) as i64)).sum();
    assert_eq!(count("SELECT sum(points) FROM entries"), expected_points);
    assert_eq!(
        count(
            "SELECT count(*) FROM balances b WHERE b.balance != (SELECT sum(points) FROM entries e WHERE e.actor_id = b.actor_id)"
        ),
        0,
        "every balance equals the sum of its entries"
    );
    assert_eq!(count("SELECT count(*) FROM balances"), 37);
}
