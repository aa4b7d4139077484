//! `loadgen`: a small HTTP/1.1 load generator for FluxFlow's benchmarks.
//!
//! Opens `--connections` keep-alive connections to one URL and sends the same request on each,
//! one at a time, for `--duration` (and at most `--requests` requests in all when given). Prints
//! a table, then one machine-readable line:
//!
//! ```text
//! loadgen rps=... p50_us=... p90_us=... p99_us=... max_us=... errors=... status_2xx=... ...
//! ```
//!
//! `errors` counts every request that did not get a 2xx answer: other statuses, failed
//! connections, broken connections and timeouts. Latency is measured from sending to the end of
//! the response body; with `--rate`, a request that is late because its connection was still
//! waiting for the previous answer counts from the moment it was due, so a slow server cannot
//! hide its queueing. It only sends to loopback addresses.
//!
//! From the repository root: `cargo run --release -p loadgen -- --url http://127.0.0.1:8080/v1/events
//! --connections 64 --duration 10s --body tests/events/01_readme_quickstart_high_value_food.json`

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper::header::{CONTENT_TYPE, HOST, HeaderName, HeaderValue};
use hyper::{HeaderMap, Method, Request, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::{Instant, MissedTickBehavior};

/// Longest run accepted: a run always ends by itself.
const MAX_DURATION: Duration = Duration::from_secs(600);
/// Most connections accepted.
const MAX_CONNECTIONS: usize = 10_000;
/// Pause after a failed connection attempt, so a closed port is not hammered.
const RECONNECT_PAUSE: Duration = Duration::from_millis(10);

/// HTTP/1.1 load generator (loopback only).
#[derive(Parser, Debug)]
#[command(name = "loadgen", version)]
struct Args {
    /// Target URL: `http://`, and a host that is a loopback address (127.0.0.0/8, ::1, localhost).
    #[arg(long)]
    url: String,
    /// Keep-alive connections, each with one request in flight.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// How long to send, e.g. `10s`, `500ms`, `2m` (at most 10 minutes).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Stop after this many requests in all (the duration still bounds the run).
    #[arg(long)]
    requests: Option<u64>,
    /// Send this file's bytes as the body of every request.
    #[arg(long, value_name = "FILE")]
    body: Option<PathBuf>,
    /// Replace the first occurrence of this text in the body with a number that grows by one with
    /// every request of the run (from 0), e.g. `--sequence '{n}'` with `"actor_id":"m{n}"` for one
    /// member per request.
    #[arg(long, value_name = "TEXT", requires = "body")]
    sequence: Option<String>,
    /// An extra request header, `NAME: VALUE`; repeatable. `Content-Type` defaults to
    /// `application/json` when there is a body.
    #[arg(long = "header", short = 'H', value_name = "NAME: VALUE")]
    headers: Vec<String>,
    /// Request method; POST with a body, GET without, unless given.
    #[arg(long)]
    method: Option<String>,
    /// Target rate in requests per second over all connections (default: send the next request
    /// as soon as the previous answer is in).
    #[arg(long)]
    rate: Option<f64>,
    /// Give up on a request after this long (counted as a timeout; the connection is reopened).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    timeout: Duration,
    /// Worker threads of the generator (default: one per CPU).
    #[arg(long)]
    threads: Option<usize>,
}

/// Parses `10s`, `250ms`, `2m`, `1h` or a bare number of seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().map_err(|_| format!("`{text}` is not a duration such as 10s or 500ms"))?;
    let seconds = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1e3,
        "us" | "µs" => value / 1e6,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        other => return Err(format!("unknown unit `{other}` in `{text}` (use ms, s, m or h)")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("`{text}`: {e}"))
}

/// What every request is made of.
struct Target {
    addr: SocketAddr,
    method: Method,
    /// Path and query (origin form).
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
    /// With `--sequence`: the body around the placeholder, and the next number.
    numbered: Option<(Bytes, Bytes, AtomicU64)>,
}

impl Target {
    /// The body of the next request.
    fn next_body(&self) -> Bytes {
        let Some((before, after, next)) = &self.numbered else { return self.body.clone() };
        let n = next.fetch_add(1, Ordering::Relaxed).to_string();
        let mut body = Vec::with_capacity(before.len() + n.len() + after.len());
        body.extend_from_slice(before);
        body.extend_from_slice(n.as_bytes());
        body.extend_from_slice(after);
        Bytes::from(body)
    }
}

/// Checks the options and resolves the target, refusing anything but loopback.
async fn target(args: &Args) -> anyhow::Result<Target> {
    let url: Uri = args.url.parse().with_context(|| format!("--url {}", args.url))?;
    if url.scheme_str() != Some("http") {
        bail!("--url must start with http:// (no TLS here)");
    }
    let Some(authority) = url.authority().cloned() else { bail!("--url {} has no host", args.url) };
    let host = authority.host().trim_start_matches('[').trim_end_matches(']');
    let port = authority.port_u16().unwrap_or(80);
    let addrs: Vec<SocketAddr> =
        tokio::net::lookup_host((host, port)).await.with_context(|| format!("cannot resolve {host}"))?.collect();
    if let Some(outside) = addrs.iter().find(|a| !a.ip().is_loopback()) {
        bail!("loadgen only sends to loopback addresses; {host} resolves to {}", outside.ip());
    }
    let Some(&addr) = addrs.first() else { bail!("{host} resolves to no address") };

    let body = match &args.body {
        Some(path) => Bytes::from(std::fs::read(path).with_context(|| format!("--body {}", path.display()))?),
        None => Bytes::new(),
    };
    let method = match &args.method {
        Some(m) => Method::from_bytes(m.to_ascii_uppercase().as_bytes()).with_context(|| format!("--method {m}"))?,
        None if args.body.is_some() => Method::POST,
        None => Method::GET,
    };
    let mut headers = HeaderMap::new();
    headers.insert(HOST, HeaderValue::from_str(authority.as_str())?);
    for line in &args.headers {
        let Some((name, value)) = line.split_once(':') else { bail!("--header {line:?} is not `NAME: VALUE`") };
        let name = HeaderName::from_bytes(name.trim().as_bytes()).with_context(|| format!("--header {line:?}"))?;
        let value = HeaderValue::from_str(value.trim()).with_context(|| format!("--header {line:?}"))?;
        headers.append(name, value);
    }
    if args.body.is_some() && !headers.contains_key(CONTENT_TYPE) {
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    let uri = url.path_and_query().map_or("/", |p| p.as_str()).parse()?;
    let numbered = match &args.sequence {
        Some(placeholder) => {
            let Some(at) = body.windows(placeholder.len().max(1)).position(|w| w == placeholder.as_bytes()) else {
                bail!("--sequence {placeholder:?} does not occur in the body")
            };
            Some((body.slice(..at), body.slice(at + placeholder.len()..), AtomicU64::new(0)))
        }
        None => None,
    };
    Ok(Target { addr, method, uri, headers, body, numbered })
}

/// What one connection saw.
#[derive(Default)]
struct Stats {
    /// Latency of every answered request, in microseconds.
    latencies_us: Vec<u32>,
    /// Answers by status code.
    statuses: BTreeMap<u16, u64>,
    connect_errors: u64,
    io_errors: u64,
    timeouts: u64,
}

impl Stats {
    fn merge(&mut self, other: Stats) {
        self.latencies_us.extend(other.latencies_us);
        for (status, n) in other.statuses {
            *self.statuses.entry(status).or_default() += n;
        }
        self.connect_errors += other.connect_errors;
        self.io_errors += other.io_errors;
        self.timeouts += other.timeouts;
    }

    fn answered(&self) -> u64 {
        self.statuses.values().sum()
    }

    fn in_class(&self, class: u16) -> u64 {
        self.statuses.iter().filter(|(s, _)| *s / 100 == class).map(|(_, n)| n).sum()
    }

    fn errors(&self) -> u64 {
        self.answered() - self.in_class(2) + self.connect_errors + self.io_errors + self.timeouts
    }

    /// Nearest-rank percentile of the sorted latencies.
    fn percentile(&self, p: f64) -> u32 {
        let n = self.latencies_us.len();
        if n == 0 {
            return 0;
        }
        let rank = ((p / 100.0) * n as f64).ceil() as usize;
        self.latencies_us[rank.clamp(1, n) - 1]
    }
}

/// Requests left in the whole run, when `--requests` bounds it.
struct Budget(Option<AtomicU64>);

impl Budget {
    fn take(&self) -> bool {
        match &self.0 {
            None => true,
            Some(left) => left.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1)).is_ok(),
        }
    }
}

async fn connect(target: &Target) -> anyhow::Result<http1::SendRequest<Full<Bytes>>> {
    let stream = TcpStream::connect(target.addr).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        // Ends when the sender is dropped or the server closes; errors show on the sender.
        let _ = connection.await;
    });
    Ok(sender)
}

/// Sends one request and reads the whole answer; returns its status.
async fn send(sender: &mut http1::SendRequest<Full<Bytes>>, target: &Target) -> Result<u16, hyper::Error> {
    sender.ready().await?;
    let mut request = Request::new(Full::new(target.next_body()));
    *request.method_mut() = target.method.clone();
    *request.uri_mut() = target.uri.clone();
    *request.headers_mut() = target.headers.clone();
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    response.into_body().collect().await?;
    Ok(status)
}

/// One connection's loop: send, wait for the answer, record, until the deadline or the budget.
async fn run_connection(
    target: Arc<Target>,
    budget: Arc<Budget>,
    deadline: Instant,
    timeout: Duration,
    pacing: Option<(Instant, Duration)>,
) -> Stats {
    let mut stats = Stats::default();
    let mut ticker = pacing.map(|(first, period)| {
        let mut ticker = tokio::time::interval_at(first, period);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Burst);
        ticker
    });
    let mut sender: Option<http1::SendRequest<Full<Bytes>>> = None;
    let mut last_done = Instant::now();
    loop {
        let due = match &mut ticker {
            Some(ticker) => tokio::select! {
                due = ticker.tick() => due,
                () = tokio::time::sleep_until(deadline) => break,
            },
            None => Instant::now(),
        };
        if due >= deadline || !budget.take() {
            break;
        }
        if sender.as_ref().is_some_and(|s| s.is_closed()) {
            sender = None;
        }
        let current = match &mut sender {
            Some(s) => s,
            None => match tokio::time::timeout(timeout, connect(&target)).await {
                Ok(Ok(s)) => sender.insert(s),
                Ok(Err(_)) | Err(_) => {
                    stats.connect_errors += 1;
                    tokio::time::sleep(RECONNECT_PAUSE).await;
                    continue;
                }
            },
        };
        // From now (after any reconnection), unless the request is late because this
        // connection was still waiting for the previous answer when it was due: then from when
        // it was due, so that a slow server cannot hide its queueing. (Lateness of the timer
        // itself, up to a millisecond, is not the server's.)
        let now = Instant::now();
        let since = if ticker.is_some() && last_done > due { due } else { now };
        let outcome = tokio::time::timeout(timeout, send(current, &target)).await;
        last_done = Instant::now();
        match outcome {
            Ok(Ok(status)) => {
                let micros = since.elapsed().as_micros();
                stats.latencies_us.push(u32::try_from(micros).unwrap_or(u32::MAX));
                *stats.statuses.entry(status).or_default() += 1;
            }
            Ok(Err(_)) => {
                stats.io_errors += 1;
                sender = None;
            }
            Err(_) => {
                stats.timeouts += 1;
                sender = None;
            }
        }
    }
    stats
}

/// Groups digits by thousands.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn millis(us: u32) -> String {
    format!("{:.2} ms", f64::from(us) / 1000.0)
}

fn report(args: &Args, target: &Target, stats: &Stats, elapsed: Duration) {
    let answered = stats.answered();
    let seconds = elapsed.as_secs_f64();
    let rps = if seconds > 0.0 { answered as f64 / seconds } else { 0.0 };
    let (p50, p90, p99) = (stats.percentile(50.0), stats.percentile(90.0), stats.percentile(99.0));
    let max = stats.latencies_us.last().copied().unwrap_or(0);
    let statuses: Vec<String> = stats.statuses.iter().map(|(s, n)| format!("{s}: {}", thousands(*n))).collect();

    println!(
        "loadgen: {} {} — {} connections, {:.1} s, body {} bytes{}",
        target.method,
        args.url,
        args.connections,
        args.duration.as_secs_f64(),
        target.body.len(),
        args.rate.map(|r| format!(", target {r} req/s")).unwrap_or_default()
    );
    println!("  answered  {} in {seconds:.2} s = {rps:.0} req/s", thousands(answered));
    println!("  latency   p50 {}   p90 {}   p99 {}   max {}", millis(p50), millis(p90), millis(p99), millis(max));
    println!("  statuses  {}", if statuses.is_empty() { "none".to_owned() } else { statuses.join(", ") });
    println!(
        "  errors    {} (non-2xx {}, connect {}, i/o {}, timeout {})",
        thousands(stats.errors()),
        thousands(answered - stats.in_class(2)),
        stats.connect_errors,
        stats.io_errors,
        stats.timeouts
    );
    println!(
        "loadgen rps={rps:.1} p50_us={p50} p90_us={p90} p99_us={p99} max_us={max} errors={} status_2xx={} \
         status_3xx={} status_4xx={} status_5xx={} connect_errors={} io_errors={} timeouts={} answered={answered} \
         elapsed_s={seconds:.3}",
        stats.errors(),
        stats.in_class(2),
        stats.in_class(3),
        stats.in_class(4),
        stats.in_class(5),
        stats.connect_errors,
        stats.io_errors,
        stats.timeouts,
    );
}

async fn run(args: Args) -> anyhow::Result<Stats> {
    let target = Arc::new(target(&args).await?);
    let budget = Arc::new(Budget(args.requests.map(AtomicU64::new)));
    let start = Instant::now();
    let deadline = start + args.duration;
    let period = args.rate.map(|rate| Duration::from_secs_f64(args.connections as f64 / rate));
    let mut tasks = Vec::with_capacity(args.connections);
    for i in 0..args.connections {
        // Spread the connections' first requests over one period.
        let pacing = period.map(|p| (start + p.mul_f64(i as f64 / args.connections as f64), p));
        tasks.push(tokio::spawn(run_connection(target.clone(), budget.clone(), deadline, args.timeout, pacing)));
    }
    let mut total = Stats::default();
    for task in tasks {
        total.merge(task.await?);
    }
    let elapsed = start.elapsed();
    total.latencies_us.sort_unstable();
    report(&args, &target, &total, elapsed);
    Ok(total)
}

fn check(args: &Args) -> anyhow::Result<()> {
    if args.connections == 0 || args.connections > MAX_CONNECTIONS {
        bail!("--connections must be between 1 and {MAX_CONNECTIONS}");
    }
    if args.duration.is_zero() || args.duration > MAX_DURATION {
        bail!("--duration must be more than 0 and at most {} s", MAX_DURATION.as_secs());
    }
    if args.timeout.is_zero() {
        bail!("--timeout must be more than 0");
    }
    if args.rate.is_some_and(|rate| !(rate.is_finite() && rate > 0.0)) {
        bail!("--rate must be a positive number of requests per second");
    }
    if args.threads == Some(0) {
        bail!("--threads must be at least 1");
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(e) = check(&args) {
        eprintln!("loadgen: {e:#}");
        return ExitCode::from(2);
    }
    let threads = args.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("loadgen: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(stats) if stats.answered() > 0 => ExitCode::SUCCESS,
        Ok(_) => {
            eprintln!("loadgen: no request was answered");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("loadgen: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("10 parsecs").is_err());
    }

    #[test]
    fn nearest_rank_percentiles() {
        let stats = Stats { latencies_us: (1..=100).collect(), ..Stats::default() };
        assert_eq!(stats.percentile(50.0), 50);
        assert_eq!(stats.percentile(99.0), 99);
        assert_eq!(stats.percentile(100.0), 100);
        assert_eq!(Stats::default().percentile(99.0), 0);
    }

    #[test]
    fn errors_count_everything_but_2xx() {
        let mut stats = Stats::default();
        stats.statuses.insert(200, 10);
        stats.statuses.insert(429, 2);
        stats.statuses.insert(503, 1);
        stats.io_errors = 4;
        assert_eq!(stats.errors(), 7);
        assert_eq!(stats.in_class(2), 10);
    }

    #[test]
    fn budget_stops_at_zero() {
        let budget = Budget(Some(AtomicU64::new(2)));
        assert!(budget.take() && budget.take());
        assert!(!budget.take());
        assert!(Budget(None).take());
    }

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(thousands(100), "100");
    }

    #[tokio::test]
    async fn refuses_addresses_outside_loopback() {
        let args = Args::parse_from(["loadgen", "--url", "http://192.0.2.1:8080/v1/events"]);
        let err = target(&args).await.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("loopback"), "{err}");
        let args = Args::parse_from(["loadgen", "--url", "https://127.0.0.1/"]);
        assert!(target(&args).await.is_err());
        let args = Args::parse_from(["loadgen", "--url", "http://localhost:1/x?y=1"]);
        let t = target(&args).await.unwrap();
        assert!(t.addr.ip().is_loopback());
        assert_eq!(t.uri, "/x?y=1");
        assert_eq!(t.method, Method::GET);
    }
}
