//! Shared by the integration tests: start the real binary on a free loopback port, talk to it
//! over real HTTP, read its log.
#![allow(dead_code)]

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

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_fluxflow")
}

pub fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
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
        let mut child = Command::new(bin())
            .args(args)
            .envs(env.iter().map(|(k, v)| (*k, *v)))
            .env("FLUXFLOW_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
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
        let addr = match addr_rx.recv_timeout(Duration::from_secs(20)) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                panic!("server did not start; log:\n{}", log.lock().unwrap().join("\n"));
            }
        };
        let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
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
        let response = self
            .client
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body.to_owned())
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
