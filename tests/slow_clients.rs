//! Slow and idle clients cannot hold the service: over raw TCP on loopback against the real
//! binary, with short limits so the tests stay short.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::Server;

const RULES: &str = "version: v1\nscenarios: []\n";

fn server(flags: &[&str]) -> Server {
    Server::start(RULES, flags)
}

fn connect(server: &Server) -> TcpStream {
    let stream = TcpStream::connect(server.base.trim_start_matches("http://")).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream
}

const REQUEST: &str = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";

/// Reads one response's status line and headers (the probes' bodies are small and read along);
/// `None` when the server closed the connection.
fn status(stream: &mut TcpStream) -> Option<u16> {
    let mut seen = Vec::new();
    let mut byte = [0u8; 1024];
    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(0) | Err(_) => return None,
            Ok(n) => seen.extend_from_slice(&byte[..n]),
        }
    }
    let text = String::from_utf8_lossy(&seen);
    text.split_whitespace().nth(1)?.parse().ok()
}

/// Whether the server closed the connection (a read ends), waiting up to the read timeout.
fn closed(stream: &mut TcpStream) -> bool {
    let mut byte = [0u8; 64];
    loop {
        match stream.read(&mut byte) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) => return e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    }
}

#[test]
fn a_client_sending_headers_slowly_is_cut_after_the_header_timeout() {
    let server = server(&["--header-timeout-ms", "500"]);
    let mut stream = connect(&server);
    let started = Instant::now();
    stream.write_all(b"GET /healthz HTTP/1.1\r\n").unwrap();
    // One header byte every 100 ms: each arrives well within any read timeout, the whole
    // never within the header timeout.
    let writer = {
        let mut stream = stream.try_clone().unwrap();
        std::thread::spawn(move || {
            for byte in b"X-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".iter() {
                if stream.write_all(&[*byte]).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    assert!(closed(&mut stream), "the connection stays open");
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(400), "cut after {elapsed:?}, before the timeout");
    let _ = writer.join();
    assert_eq!(server.metric("fluxflow_connections_timed_out_total{reason=\"header_timeout\"}"), 1.0);
}

#[test]
fn a_kept_alive_connection_may_idle_longer_than_the_header_timeout_and_is_closed_after_the_idle_timeout() {
    let server = server(&["--header-timeout-ms", "300", "--idle-timeout-ms", "1500"]);
    let mut stream = connect(&server);
    stream.write_all(REQUEST.as_bytes()).unwrap();
    assert_eq!(status(&mut stream), Some(200));
    std::thread::sleep(Duration::from_millis(700));
    stream.write_all(REQUEST.as_bytes()).unwrap();
    assert_eq!(status(&mut stream), Some(200), "an idle pause past the header timeout is allowed");
    let idle = Instant::now();
    assert!(closed(&mut stream), "the idle connection stays open");
    assert!(idle.elapsed() >= Duration::from_millis(1_300), "closed after {:?}", idle.elapsed());
    assert_eq!(server.metric("fluxflow_connections_timed_out_total{reason=\"idle_timeout\"}"), 1.0);
}

#[test]
fn a_body_that_does_not_arrive_in_time_is_answered_408_and_applies_nothing() {
    let server = server(&["--body-timeout-ms", "500", "--ledger", "sqlite"]);
    let mut stream = connect(&server);
    let head = "POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n";
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(br#"{"id":"slow","type":"login""#).unwrap();
    assert_eq!(status(&mut stream), Some(408));
    let (code, _) = server.get("/v1/actors/u1/balance");
    assert_eq!(code, 200);
    assert_eq!(server.metric("ifttt_events_processed_total"), 0.0, "nothing was evaluated");
}

#[test]
fn over_the_connection_cap_new_connections_are_refused_while_the_open_ones_are_served() {
    let server = server(&["--max-connections", "3"]);
    let mut open: Vec<TcpStream> = (0..3).map(|_| connect(&server)).collect();
    for stream in &mut open {
        stream.write_all(REQUEST.as_bytes()).unwrap();
        assert_eq!(status(stream), Some(200));
    }
    let mut over = connect(&server);
    let _ = over.write_all(REQUEST.as_bytes());
    assert_eq!(status(&mut over), None, "a fourth connection is closed at once");
    for stream in &mut open {
        stream.write_all(REQUEST.as_bytes()).unwrap();
        assert_eq!(status(stream), Some(200), "the open ones are still served");
    }
    // A place freed is a place again.
    drop(open.pop());
    let served = common::wait_until(Duration::from_secs(5), || {
        let mut again = connect(&server);
        again.write_all(REQUEST.as_bytes()).is_ok() && status(&mut again) == Some(200)
    });
    assert!(served, "a new connection is served once one closed");
    assert!(server.metric("fluxflow_connections_refused_total") >= 1.0);
}

/// A request answered before its body was read (too large) closes its connection and says
/// so: the body's rest must not be read as the next request, nor a client send on it again.
#[test]
fn an_answer_before_the_body_is_read_says_connection_close() {
    let server = server(&[]);
    let mut stream = connect(&server);
    let head =
        "POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 3000000\r\n\r\n";
    stream.write_all(head.as_bytes()).unwrap();
    let _ = stream.write_all(&vec![b' '; 1_200_000]);
    let mut seen = Vec::new();
    let mut chunk = [0u8; 4096];
    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => seen.extend_from_slice(&chunk[..n]),
        }
    }
    let text = String::from_utf8_lossy(&seen).to_lowercase();
    assert!(text.starts_with("http/1.1 413"), "{text}");
    assert!(text.contains("connection: close"), "{text}");
    // A request whose body was read keeps its connection.
    let mut kept = connect(&server);
    kept.write_all(REQUEST.as_bytes()).unwrap();
    assert_eq!(status(&mut kept), Some(200));
    kept.write_all(REQUEST.as_bytes()).unwrap();
    assert_eq!(status(&mut kept), Some(200));
}
