//! A real headless Chromium for the console's tests: Debian's `chromium`, driven over WebDriver by
//! its `chromedriver` through fantoccini. Without them the tests say they skipped; with
//! `CI=true` they fail.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// The widths every view is screenshotted at: a laptop and a phone.
pub const WIDTHS: [u32; 2] = [1280, 390];

/// A browser session and the chromedriver serving it (killed on drop).
pub struct Browser {
    pub client: Client,
    driver: Child,
    driver_url: String,
    session: String,
    _profile: tempfile::TempDir,
}

/// Starts chromedriver and a headless Chromium, or answers `None` (with a note) when they are not
/// installed and CI is not `true`.
pub async fn start() -> Option<Browser> {
    if !Path::new(CHROMIUM).exists() || !Path::new(CHROMEDRIVER).exists() {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!(
                "the console's browser tests need {CHROMIUM} and {CHROMEDRIVER} when CI=true (apt-get install chromium chromium-driver)"
            );
        }
        let note = format!(
            "SKIPPED {}: browser test, {CHROMIUM} or {CHROMEDRIVER} is missing; with CI=true this fails\n",
            std::thread::current().name().unwrap_or("?")
        );
        let _ = std::io::Write::write_all(&mut std::io::stderr(), note.as_bytes());
        return None;
    }
    let port = free_port();
    // In a process group of its own, with the browser it starts: dropping the session kills
    // the group, so no Chromium outlives its test (a panicking test included).
    let driver = Command::new(CHROMEDRIVER)
        .process_group(0)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let driver_url = format!("http://127.0.0.1:{port}");
    wait_ready(&driver_url).await;
    let profile = tempfile::tempdir().unwrap();
    // The flags this machine's closed network needs (no background fetches, no QUIC), and a
    // profile of the test's own.
    let args = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        &format!("--user-data-dir={}", profile.path().display()),
    ];
    let capabilities = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
        "goog:loggingPrefs": {"browser": "ALL"},
    });
    let capabilities = capabilities.as_object().unwrap().clone();
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let client = ClientBuilder::new(connector)
        .capabilities(capabilities)
        .connect(&driver_url)
        .await
        .unwrap_or_else(|e| panic!("Chromium did not start under chromedriver: {e}"));
    let session = client.session_id().await.unwrap().expect("a session id");
    Some(Browser { client, driver, driver_url, session, _profile: profile })
}

impl Browser {
    /// Opens `url` and waits for `selector` to be shown.
    pub async fn open(&self, url: &str, selector: &str) {
        self.client.goto(url).await.unwrap();
        self.wait_for(selector).await;
    }

    /// Waits up to 10 s for an element matching `selector`.
    pub async fn wait_for(&self, selector: &str) -> fantoccini::elements::Element {
        match self.client.wait().at_most(Duration::from_secs(10)).for_element(Locator::Css(selector)).await {
            Ok(element) => element,
            Err(e) => panic!("no `{selector}` within 10 s: {e}\npage text:\n{}", self.text("body").await),
        }
    }

    /// Waits up to 10 s for `script` (a JavaScript expression) to be true.
    pub async fn wait_until(&self, what: &str, script: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let value = self.client.execute(&format!("return Boolean({script});"), vec![]).await.unwrap();
            if value == Value::Bool(true) {
                return;
            }
            assert!(Instant::now() < deadline, "{what}: not within 10 s\npage text:\n{}", self.text("body").await);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The text of the first element matching `selector` (empty when there is none).
    pub async fn text(&self, selector: &str) -> String {
        match self.client.find(Locator::Css(selector)).await {
            Ok(element) => element.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// Clicks the element matching `selector`.
    pub async fn click(&self, selector: &str) {
        self.wait_for(selector).await.click().await.unwrap();
    }

    /// Replaces the value of the input or text area matching `selector`.
    pub async fn fill(&self, selector: &str, text: &str) {
        let element = self.wait_for(selector).await;
        element.clear().await.unwrap();
        element.send_keys(text).await.unwrap();
    }

    /// The browser's console messages and failed loads since the last call, as
    /// `LEVEL message` lines: every entry at `WARNING` or above.
    pub async fn problems(&self) -> Vec<String> {
        let url = format!("{}/session/{}/se/log", self.driver_url, self.session);
        let answer: Value = super::async_client()
            .post(url)
            .json(&json!({"type": "browser"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        answer["value"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter(|entry| matches!(entry["level"].as_str(), Some("SEVERE" | "WARNING")))
            .map(|entry| format!("{} {}", entry["level"].as_str().unwrap_or("?"), entry["message"]))
            .collect()
    }

    /// Sets the window to `width` wide and saves a screenshot as `NAME-WIDTH.png` in
    /// [`screenshot_dir`]; answers whether the page fits that width (no sideways scrolling).
    pub async fn screenshot(&self, name: &str, width: u32) -> bool {
        self.client.set_window_size(width, 900).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let png = self.client.screenshot().await.unwrap();
        let path = screenshot_dir().join(format!("{name}-{width}.png"));
        std::fs::write(&path, png).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        let fits = self
            .client
            .execute("return document.documentElement.scrollWidth <= document.documentElement.clientWidth;", vec![])
            .await
            .unwrap();
        fits == Value::Bool(true)
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The driver's group: the driver and every Chromium process it started.
        if let Ok(group) = i32::try_from(self.driver.id()) {
            let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(group), nix::sys::signal::Signal::SIGKILL);
        }
        let _ = self.driver.wait();
    }
}

/// Where screenshots go: `FLUXFLOW_SCREENSHOTS` when set (`docs/console` refreshes the docs'
/// pictures), else `console-screenshots` in the build's temporary folder.
pub fn screenshot_dir() -> PathBuf {
    let dir = std::env::var_os("FLUXFLOW_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots"));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn wait_ready(driver_url: &str) {
    let client = super::async_client();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(answer) = client.get(format!("{driver_url}/status")).send().await
            && let Ok(status) = answer.json::<Value>().await
            && status["value"]["ready"] == Value::Bool(true)
        {
            return;
        }
        assert!(Instant::now() < deadline, "chromedriver did not answer on {driver_url} within 20 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
