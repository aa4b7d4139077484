//! Shared by the integration tests: start the real binary on a free loopback port, talk to it
//! over real HTTP, read its log.
#![allow(dead_code)]

pub mod browser;
pub mod docs;
pub mod nats;
pub mod openapi;
#[macro_use]
pub mod pg;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A running `fluxflow serve`.
pub struct Server {
    pub child: Child,
    pub base: String,
    pub dir: tempfile::TempDir,
    pub log: Arc<Mutex<Vec<String>>>,
    pub client: reqwest::blocking::Client,
}

/// A blocking HTTP client with this timeout. reqwest is built with rustls and no crypto
/// provider (the service's choice): the process installs ring, as the service does, first.
pub fn http_client(timeout: Duration) -> reqwest::blocking::Client {
    install_crypto();
    reqwest::blocking::Client::builder().timeout(timeout).build().unwrap()
}

/// An async HTTP client (see [`http_client`]).
pub fn async_client() -> reqwest::Client {
    install_crypto();
    reqwest::Client::new()
}

fn install_crypto() {
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_fluxflow")
}

pub fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// The test-owned copy of the example rules: the same bytes as shipped in `configs/rules.yaml`.
/// That file is the user's to edit (the README says so), so tests read this copy instead and an
/// edited `configs/rules.yaml` cannot break `cargo test`.
pub const EXAMPLE_RULES: &str = "tests/fixtures/example-rules.yaml";

/// Files users are told to edit, each with the test-owned file tests read in its place. This is
/// the one place in the test suite that names them (`tests/fixtures_owned.rs` checks it).
pub const USER_FILES: [(&str, &str); 1] = [("configs/rules.yaml", EXAMPLE_RULES)];

/// The example rules' text.
pub fn example_rules() -> String {
    std::fs::read_to_string(repo_path(EXAMPLE_RULES)).unwrap()
}

/// A path relative to the repository root (`..` allowed) as tests must read it: a file users edit
/// becomes its test-owned copy.
pub fn test_owned(relative: &str) -> PathBuf {
    let mut parts: Vec<&str> = Vec::new();
    for part in relative.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            _ => parts.push(part),
        }
    }
    let normal = parts.join("/");
    let owned = USER_FILES.iter().find(|(user, _)| *user == normal).map_or(normal.as_str(), |(_, fixture)| fixture);
    repo_path(owned)
}

/// A fresh directory laid out like the repository for running commands as a user would: the
/// files users edit hold their test-owned copies, and `examples/` is copied as shipped.
pub fn sandbox() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (user, fixture) in USER_FILES {
        let path = dir.path().join(user);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::copy(repo_path(fixture), path).unwrap();
    }
    let examples = dir.path().join("examples");
    std::fs::create_dir_all(&examples).unwrap();
    for entry in std::fs::read_dir(repo_path("examples")).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), examples.join(entry.file_name())).unwrap();
        }
    }
    dir
}

impl Server {
    /// Starts with these rules (written to `rules.yaml` in a fresh directory) and extra flags.
    pub fn start(rules: &str, extra: &[&str]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("rules.yaml"), rules).unwrap();
        Server::start_in(dir, extra)
    }

    /// Starts on the rules file already in `dir/rules.yaml`.
    pub fn start_in(dir: tempfile::TempDir, extra: &[&str]) -> Server {
        let args = Server::args_for(dir.path(), extra);
        Server::spawn(dir, &args)
    }

    /// The command line that serves `dir/rules.yaml` with its ledger in `dir/data`.
    pub fn args_for(dir: &Path, extra: &[&str]) -> Vec<String> {
        let config = dir.join("rules.yaml");
        let data = dir.join("data");
        let mut args: Vec<String> = vec![
            "serve".into(),
            "--addr".into(),
            "127.0.0.1:0".into(),
            "--config".into(),
            config.display().to_string(),
            "--data".into(),
            data.display().to_string(),
        ];
        if !extra.contains(&"--ledger") {
            args.extend(["--ledger".into(), "none".into()]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    }

    pub fn spawn(dir: tempfile::TempDir, args: &[String]) -> Server {
        Server::spawn_with_env(dir, args, &[])
    }

    /// Runs `fluxflow` with these arguments and extra environment variables.
    pub fn spawn_with_env(dir: tempfile::TempDir, args: &[String], env: &[(&str, &Path)]) -> Server {
        let mut command = Command::new(bin());
        command.args(args).envs(env.iter().map(|(k, v)| (*k, *v)));
        let Launched { child, addr, log } = launch(command).unwrap_or_else(|log| panic!("{log}"));
        let client = http_client(Duration::from_secs(30));
        Server { child, base: format!("http://{addr}"), dir, log, client }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn rules_path(&self) -> PathBuf {
        self.dir.path().join("rules.yaml")
    }

    /// POSTs JSON text; returns status and the body as JSON.
    pub fn post(&self, path: &str, body: &str) -> (u16, Value) {
        self.request("POST", path, body)
    }

    /// Sends JSON text with any method; returns status and the body as JSON (null when none).
    pub fn request(&self, method: &str, path: &str, body: &str) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let response = self
            .client
            .request(method, self.url(path))
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().unwrap_or(Value::Null))
    }

    /// `PUT /v1/rules` with a YAML text: publishes a rules version.
    pub fn put_rules(&self, yaml: &str) -> (u16, Value) {
        let response = self
            .client
            .put(self.url("/v1/rules"))
            .header("content-type", "application/yaml")
            .body(yaml.to_owned())
            .send()
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().unwrap_or(Value::Null))
    }

    pub fn post_json(&self, path: &str, body: &Value) -> (u16, Value) {
        self.post(path, &body.to_string())
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        let response = self.client.get(self.url(path)).send().unwrap();
        let status = response.status().as_u16();
        (status, response.json().unwrap_or(Value::Null))
    }

    pub fn get_text(&self, path: &str) -> String {
        self.client.get(self.url(path)).send().unwrap().text().unwrap()
    }

    /// The value of an unlabelled metric line, e.g. `ifttt_events_processed_total`.
    pub fn metric(&self, series: &str) -> f64 {
        let text = self.get_text("/metrics");
        text.lines()
            .find_map(|l| {
                l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')).map(|v| v.trim().parse().unwrap())
            })
            .unwrap_or(0.0)
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), signal).unwrap();
    }

    /// Waits for the process to exit; returns its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Let the log threads read the last lines.
                std::thread::sleep(Duration::from_millis(100));
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

/// A service that started: its process, the address it listens on, and its log so far.
pub struct Launched {
    pub child: Child,
    pub addr: String,
    pub log: Arc<Mutex<Vec<String>>>,
}

/// Starts a command that runs the service (with `FLUXFLOW_LOG=info`), gathers the lines of its
/// stdout and stderr, and waits for the address of its `listening` line. When it does not start
/// within 20 s, it is killed and the error holds its log.
pub fn launch(mut command: Command) -> Result<Launched, String> {
    let mut child = command.env("FLUXFLOW_LOG", "info").stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    for stream in [Box::new(stdout) as Box<dyn std::io::Read + Send>, Box::new(stderr)] {
        let log = Arc::clone(&log);
        let addr_tx = addr_tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = listening_addr(&line) {
                    let _ = addr_tx.send(addr);
                }
                log.lock().unwrap().push(line);
            }
        });
    }
    drop(addr_tx);
    match addr_rx.recv_timeout(Duration::from_secs(20)) {
        Ok(addr) => Ok(Launched { child, addr, log }),
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            // Let the log threads read the last lines.
            std::thread::sleep(Duration::from_millis(100));
            Err(format!("server did not start; log:\n{}", log.lock().unwrap().join("\n")))
        }
    }
}

/// The address in the "listening" log line, text or JSON.
fn listening_addr(line: &str) -> Option<String> {
    if line.contains(" listening ") {
        return line.split("addr=").nth(1)?.split_whitespace().next().map(str::to_owned);
    }
    if line.contains("\"message\":\"listening\"") {
        let record: Value = serde_json::from_str(line).ok()?;
        return record["fields"]["addr"].as_str().map(str::to_owned);
    }
    None
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls until `check` is true or the timeout passes.
/// Sends the requests at once, spread over the nodes (the race tests of exactness under
/// concurrency); the answers in the requests' order.
#[allow(dead_code)]
pub fn race(servers: &[Server], path: &str, bodies: &[serde_json::Value]) -> Vec<(u16, serde_json::Value)> {
    std::thread::scope(|s| {
        let handles: Vec<_> = bodies
            .iter()
            .enumerate()
            .map(|(i, body)| {
                let server = &servers[i % servers.len()];
                s.spawn(move || server.post_json(path, body))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

pub fn wait_until(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    check()
}

pub const EXAMPLE_EVENT: &str =
    r#"{"type":"transaction","source":"pos-system","actor_id":"user_42","payload":{"amount":1500,"category":"food"}}"#;
