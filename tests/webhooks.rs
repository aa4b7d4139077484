//! Webhook deliveries against a real receiver on loopback (a small HTTP server in the test): signed
//! deliveries, one per event and action whatever the replays; retries after 5xx; 4xx failing at
//! once; a receiver that never answers; a kill with deliveries pending; two PostgreSQL nodes
//! sharing the outbox, each delivery made by one of them.

#[macro_use]
mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::pg::Store;
use common::{Server, wait_until};
use serde_json::{Value, json};

/// What the receiver does with its Nth request (from 0).
#[derive(Clone, Copy)]
enum Answer {
    Status(u16),
    /// Read the request, then say nothing for this long.
    Silence(Duration),
}

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    headers: HashMap<String, String>,
    body: String,
}

/// An HTTP receiver on a free loopback port, answering by a script.
struct Receiver {
    url: String,
    received: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    fn start(script: impl Fn(usize) -> Answer + Send + Sync + 'static) -> Receiver {
        Receiver::start_on(0, script)
    }

    /// On loopback port `port` (0: a free one).
    fn start_on(port: u16, script: impl Fn(usize) -> Answer + Send + Sync + 'static) -> Receiver {
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        let url = format!("http://{}/hooks", listener.local_addr().unwrap());
        let received = Arc::new(Mutex::new(Vec::new()));
        let (log, script) = (Arc::clone(&received), Arc::new(script));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (log, script) = (Arc::clone(&log), Arc::clone(&script));
                std::thread::spawn(move || serve(stream, &log, script.as_ref()));
            }
        });
        Receiver { url, received }
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

fn serve(stream: TcpStream, log: &Mutex<Vec<Received>>, script: &(dyn Fn(usize) -> Answer + Send + Sync)) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut headers = HashMap::new();
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    loop {
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.trim_end().split_once(':') {
            headers.insert(name.trim().to_lowercase(), value.trim().to_owned());
        }
    }
    let length: usize = headers.get("content-length").and_then(|l| l.parse().ok()).unwrap_or(0);
    let mut body = vec![0; length];
    let _ = reader.read_exact(&mut body);
    let index = {
        let mut log = log.lock().unwrap();
        log.push(Received { headers, body: String::from_utf8_lossy(&body).into_owned() });
        log.len() - 1
    };
    let mut stream = stream;
    match script(index) {
        Answer::Status(status) => {
            let _ = write!(stream, "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
        Answer::Silence(long) => std::thread::sleep(long),
    }
}

fn rules(actions: &str) -> String {
    format!(
        "version: v1\nscenarios:\n  - id: on_signup\n    enabled: true\n    event_types: [signup]\n    children:\n{actions}"
    )
}

fn hook(id: &str, url: &str, extra: &str) -> String {
    format!("      - action: {{id: {id}, type: webhook_notify, params: {{url: '{url}'{extra}}}}}\n")
}

/// Fast retries for tests.
const FAST: [&str; 4] = ["--webhook-backoff-base-ms", "50", "--webhook-backoff-cap-ms", "200"];

fn start(store: &Store, rules: &str, env: &[(&str, &Path)]) -> Server {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("rules.yaml"), rules).unwrap();
    let mut flags: Vec<String> = store.args().to_vec();
    flags.extend(FAST.map(str::to_owned));
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let args = Server::args_for(dir.path(), &flags);
    Server::spawn_with_env(dir, &args, env)
}

both_stores!(
    a_delivery_is_signed_and_made_once_per_event_and_action,
    a_receiver_that_fails_then_recovers_gets_the_delivery_after_retries,
    a_4xx_fails_at_once_and_a_silent_receiver_is_tried_until_max_attempts
);

fn a_delivery_is_signed_and_made_once_per_event_and_action(store: &Store) {
    let receiver = Receiver::start(|_| Answer::Status(200));
    let extra = ", secret: '${FF_TEST_WEBHOOK_SECRET}', headers: {X-Shop: eu-1}";
    let yaml = rules(&hook("tell_crm", &receiver.url, extra));
    let server = start(store, &yaml, &[("FF_TEST_WEBHOOK_SECRET", Path::new("s3cret"))]);
    let at = jiff::Timestamp::now().to_string();
    let event = json!({"id": "e1", "type": "signup", "source": "web", "actor_id": "u1", "occurred_at": at,
        "payload": {"plan": "gold", "seats": 3}, "meta": {"campaign": "spring"}});
    let (status, answer) = server.post_json("/v1/events", &event);
    assert_eq!(status, 200, "{answer}");
    let action = &answer["actions_executed"][0];
    assert_eq!(action["success"], true);
    assert_eq!(action["message"], format!("Webhook queued for {}", receiver.url));
    assert!(wait_until(Duration::from_secs(10), || receiver.received().len() == 1));

    let got = &receiver.received()[0];
    assert_eq!(got.headers["x-fluxflow-delivery"], "e1:tell_crm");
    assert_eq!(got.headers["x-shop"], "eu-1");
    let timestamp = &got.headers["x-fluxflow-timestamp"];
    let now = jiff::Timestamp::now().as_second();
    assert!((now - timestamp.parse::<i64>().unwrap()).abs() < 60, "{timestamp}");
    let expected = format!("sha256={}", fluxflow::webhooks::sign("s3cret", timestamp, &got.body));
    assert_eq!(got.headers["x-fluxflow-signature"], expected, "the receiver can verify the signature");
    let body: Value = serde_json::from_str(&got.body).unwrap();
    assert_eq!(body["delivery_id"], "e1:tell_crm");
    assert_eq!(body["event"], event, "the event as sent");
    assert_eq!(body["result"]["event_id"], "e1");
    assert!(
        !got.body.contains("s3cret") && !server.get_text("/v1/rules").contains("s3cret"),
        "the secret is never shown"
    );

    // A replay is answered from the ledger and queues nothing more.
    let (status, replay) = server.post_json("/v1/events", &event);
    assert_eq!((status, &replay["replayed"]), (200, &json!(true)));
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(receiver.received().len(), 1);
    assert_eq!(store.count(server.dir.path(), "SELECT count(*) FROM webhook_deliveries"), 1);
    let delivered = "SELECT count(*) FROM webhook_deliveries WHERE state = 'delivered' AND attempts = 1";
    assert_eq!(store.count(server.dir.path(), delivered), 1);
    assert_eq!(server.metric("fluxflow_webhook_deliveries_total{outcome=\"delivered\"}"), 1.0);

    // Listed, and a delivered one is not retried.
    let (status, page) = server.get("/v1/webhooks/deliveries?state=delivered");
    assert_eq!(status, 200, "{page}");
    let listed = &page["deliveries"][0];
    assert_eq!((listed["delivery_id"].as_str(), listed["state"].as_str()), (Some("e1:tell_crm"), Some("delivered")));
    assert_eq!((listed["url"].as_str(), listed["attempts"].as_u64()), (Some(receiver.url.as_str()), Some(1)));
    assert_eq!(page["next_cursor"], Value::Null);
    assert_eq!(server.get("/v1/webhooks/deliveries?state=failed").1["deliveries"], json!([]));
    let (status, refused) = server.post_json("/v1/webhooks/deliveries/e1:tell_crm/retry", &json!({}));
    assert_eq!((status, refused["code"].as_str()), (409, Some("not_retryable")), "{refused}");
    let (status, missing) = server.post_json("/v1/webhooks/deliveries/nope/retry", &json!({}));
    assert_eq!((status, missing["code"].as_str()), (404, Some("not_found")));
    assert_eq!(server.get("/v1/webhooks/deliveries?state=lost").0, 400);
}

fn a_receiver_that_fails_then_recovers_gets_the_delivery_after_retries(store: &Store) {
    let receiver = Receiver::start(|n| Answer::Status(if n < 2 { 503 } else { 200 }));
    let server = start(store, &rules(&hook("tell", &receiver.url, "")), &[]);
    assert_eq!(server.post_json("/v1/events", &json!({"id": "e1", "type": "signup", "actor_id": "u1"})).0, 200);
    assert!(wait_until(Duration::from_secs(10), || {
        store.count(server.dir.path(), "SELECT count(*) FROM webhook_deliveries WHERE state = 'delivered'") == 1
    }));
    let ids: Vec<String> = receiver.received().iter().map(|r| r.headers["x-fluxflow-delivery"].clone()).collect();
    assert_eq!(ids, ["e1:tell"; 3], "the same delivery id each time");
    assert_eq!(store.count(server.dir.path(), "SELECT attempts FROM webhook_deliveries"), 3);
    assert_eq!(server.metric("fluxflow_webhook_deliveries_total{outcome=\"retried\"}"), 2.0);
}

fn a_4xx_fails_at_once_and_a_silent_receiver_is_tried_until_max_attempts(store: &Store) {
    let refusing = Receiver::start(|_| Answer::Status(400));
    let silent = Receiver::start(|_| Answer::Silence(Duration::from_secs(5)));
    let actions =
        hook("refused", &refusing.url, "") + &hook("unanswered", &silent.url, ", timeout_ms: 300, max_attempts: 2");
    let server = start(store, &rules(&actions), &[]);
    assert_eq!(server.post_json("/v1/events", &json!({"id": "e1", "type": "signup", "actor_id": "u1"})).0, 200);
    let failed = "SELECT count(*) FROM webhook_deliveries WHERE state = 'failed'";
    assert!(wait_until(Duration::from_secs(15), || store.count(server.dir.path(), failed) == 2));
    assert_eq!(refusing.received().len(), 1, "a 4xx is not retried");
    // Said when it fails: whether an extra request came from an extra row or an extra attempt.
    let (rows, attempts) = (
        store.count(server.dir.path(), "SELECT count(*) FROM webhook_deliveries"),
        store.count(server.dir.path(), "SELECT sum(attempts) FROM webhook_deliveries"),
    );
    assert_eq!(
        silent.received().len(),
        2,
        "tried max_attempts times ({rows} outbox rows, {attempts} attempts recorded)"
    );
    let timed_out = "SELECT count(*) FROM webhook_deliveries WHERE last_error = 'no answer within the timeout'";
    assert_eq!(store.count(server.dir.path(), timed_out), 1);
    let refused = "SELECT count(*) FROM webhook_deliveries WHERE last_status = 400 AND attempts = 1";
    assert_eq!(store.count(server.dir.path(), refused), 1);

    // Paged newest first (both were queued in one transaction: by id then), and a failed one
    // retried is attempted again.
    let (status, first) = server.get("/v1/webhooks/deliveries?state=failed&limit=1");
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["deliveries"][0]["delivery_id"], "e1:unanswered");
    assert_eq!(first["deliveries"][0]["last_error"], "no answer within the timeout");
    let cursor = first["next_cursor"].as_str().unwrap().to_owned();
    let (_, second) = server.get(&format!("/v1/webhooks/deliveries?state=failed&limit=1&cursor={cursor}"));
    assert_eq!(second["deliveries"][0]["delivery_id"], "e1:refused");
    assert_eq!(second["next_cursor"], Value::Null);
    let (status, retried) = server.post_json("/v1/webhooks/deliveries/e1:refused/retry", &json!({}));
    assert_eq!((status, retried["state"].as_str()), (200, Some("pending")), "{retried}");
    assert!(wait_until(Duration::from_secs(10), || refusing.received().len() == 2), "tried again");
}

#[test]
fn deliveries_pending_when_the_service_is_killed_are_all_made_after_restart() {
    // A port with nothing behind it: every attempt fails to connect until the receiver starts.
    let port = free_port();
    let (server, args) = sqlite_node_with_signups(port, ", max_attempts: 100", 20);
    let dir = kill_keeping_data(server);

    let receiver = Receiver::start_on(port, |_| Answer::Status(200));
    let server = Server::spawn(dir, &args);
    let all = || {
        let ids: std::collections::HashSet<String> =
            receiver.received().iter().map(|r: &Received| r.headers["x-fluxflow-delivery"].clone()).collect();
        ids.len() == 20
    };
    assert!(wait_until(Duration::from_secs(20), all), "every delivery is made after the restart");
    let delivered = "SELECT count(*) FROM webhook_deliveries WHERE state = 'delivered'";
    assert!(wait_until(Duration::from_secs(5), || Store::sqlite().count(server.dir.path(), delivered) == 20));
}

/// A loopback port nothing listens on (until a test starts a receiver there).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A SQLite node whose signups notify `http://127.0.0.1:{port}/hooks` (the action's params
/// `extra`), with fast retries, after `signups` signups of distinct members; and its arguments,
/// to start it again on the same directory.
fn sqlite_node_with_signups(port: u16, extra: &str, signups: usize) -> (Server, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("http://127.0.0.1:{port}/hooks");
    std::fs::write(dir.path().join("rules.yaml"), rules(&hook("tell", &url, extra))).unwrap();
    let mut flags = vec!["--ledger", "sqlite"];
    flags.extend(FAST);
    let args = Server::args_for(dir.path(), &flags);
    let server = Server::spawn(dir, &args);
    for i in 0..signups {
        let event = json!({"id": format!("e{i}"), "type": "signup", "actor_id": format!("u{i}")});
        assert_eq!(server.post_json("/v1/events", &event).0, 200);
    }
    (server, args)
}

/// SIGKILLs the service and keeps its directory (rules and ledger) for the next start.
fn kill_keeping_data(mut server: Server) -> tempfile::TempDir {
    server.signal(nix::sys::signal::Signal::SIGKILL);
    server.wait_exit(Duration::from_secs(5));
    std::mem::replace(&mut server.dir, tempfile::tempdir().unwrap())
}

/// A receiver that takes connections and never answers, until stopped: each attempt holds its
/// lease until the action's timeout.
struct Hanging {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl Hanging {
    fn on(port: u16) -> Hanging {
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut held = Vec::new();
            while !stopping.load(std::sync::atomic::Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => held.push(stream),
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Hanging { stop, thread }
    }

    /// Closes the port and every connection taken.
    fn stop(self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap();
    }
}

/// Killed while attempts were in flight (each delivery leased until its attempt ends), a
/// restarted SQLite node frees those leases at once: one worker per SQLite ledger, so a lease at
/// its start can only be a stopped worker's. Without that, the deliveries waited 75 s.
#[test]
fn deliveries_in_flight_when_the_service_is_killed_are_made_at_once_after_restart() {
    let port = free_port();
    let hanging = Hanging::on(port);
    let (server, args) = sqlite_node_with_signups(port, ", timeout_ms: 30000, max_attempts: 100", 5);
    let leased = "SELECT count(*) FROM webhook_deliveries WHERE lease_until IS NOT NULL";
    assert!(
        wait_until(Duration::from_secs(10), || Store::sqlite().count(server.dir.path(), leased) >= 1),
        "deliveries are being attempted (a round waits for its attempts: the later ones may not be)"
    );
    let dir = kill_keeping_data(server);
    hanging.stop();

    let receiver = Receiver::start_on(port, |_| Answer::Status(200));
    let _server = Server::spawn(dir, &args);
    let all = || receiver.received().len() >= 5;
    assert!(wait_until(Duration::from_secs(20), all), "the deliveries are made well before their leases run out");
}

/// While receivers are down the worker pauses between rounds, and records a round's outcomes
/// before its pause: no delivery stays leased through it (a node stopped then would leave them
/// to wait for the lease).
#[test]
fn no_delivery_is_leased_while_the_worker_pauses() {
    let (server, _) = sqlite_node_with_signups(free_port(), ", max_attempts: 100", 5);
    // Before the change, a round's outcomes were recorded by the next round's claim, in the same
    // transaction: tried deliveries were never all free of their leases at once.
    let recorded = "SELECT count(*) FROM webhook_deliveries WHERE attempts >= 1 AND lease_until IS NULL";
    assert!(
        wait_until(Duration::from_secs(10), || Store::sqlite().count(server.dir.path(), recorded) == 5),
        "tried, recorded and free of leases during a pause"
    );
}

#[test]
fn two_nodes_share_the_outbox_and_each_delivery_is_made_by_one() {
    let Some(store) = Store::postgres() else { return };
    let receiver = Receiver::start(|_| Answer::Status(200));
    let yaml = rules(&hook("tell", &receiver.url, ""));
    let mut flags: Vec<String> = FAST.map(str::to_owned).to_vec();
    flags.extend(store.args());
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let nodes: Vec<Server> = (0..2).map(|_| Server::start(&yaml, &flags)).collect();
    for i in 0..200 {
        let event = json!({"id": format!("e{i}"), "type": "signup", "actor_id": format!("u{}", i % 7)});
        assert_eq!(nodes[i % 2].post_json("/v1/events", &event).0, 200);
    }
    assert!(wait_until(Duration::from_secs(20), || receiver.received().len() >= 200));
    std::thread::sleep(Duration::from_millis(500));
    let mut counts: HashMap<String, usize> = HashMap::new();
    for got in receiver.received() {
        *counts.entry(got.headers["x-fluxflow-delivery"].clone()).or_default() += 1;
    }
    assert_eq!(counts.len(), 200);
    assert!(counts.values().all(|&n| n == 1), "a delivery was attempted twice: {counts:?}");
    let made: f64 = nodes.iter().map(|n| n.metric("fluxflow_webhook_deliveries_total{outcome=\"delivered\"}")).sum();
    assert_eq!(made, 200.0);
}

#[test]
fn params_are_checked_at_load_and_a_literal_secret_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rules.yaml");
    let bad = hook("a", "ftp://crm.example.com/x", "")
        + &hook("b", "https://crm.example.com/x", ", secret: hunter2")
        + &hook("c", "https://crm.example.com/x", ", secret: '${FF_TEST_SURELY_UNSET}'")
        + &hook("d", "https://crm.example.com/x", ", timeout_ms: 0, max_attempts: 1000, color: red");
    std::fs::write(&file, rules(&bad)).unwrap();
    let output = std::process::Command::new(common::bin()).arg("validate").arg(&file).output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{text}");
    for expected in [
        "the `url` of action `a` must be an http or https URL with a host, got `ftp://crm.example.com/x`",
        "the `secret` of action `b` must name an environment variable",
        "reads the environment variable FF_TEST_SURELY_UNSET, which is not set",
        "`timeout_ms` of action `d` must be a whole number from 1 to 60000",
        "`max_attempts` of action `d` must be a whole number from 1 to 100",
        "color",
    ] {
        assert!(text.contains(expected), "missing `{expected}` in:\n{text}");
    }
    assert!(!text.contains("hunter2"), "the literal secret is not echoed:\n{text}");
}
