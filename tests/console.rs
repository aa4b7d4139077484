//! The web console (`/console`) in a real headless Chromium against the real service: every view
//! loads without a console error and fits a phone's width, the playground colours the trace,
//! the member page follows an event, a rollback from the history changes the live rules, and
//! with keys the console asks for one and says which scope a key lacks. Screenshots of each view
//! at 1280 and 390 px go to [`browser::screenshot_dir`].

mod common;

use common::browser::{self, Browser, WIDTHS};
use common::{Server, bin, example_rules};
use fantoccini::key::Key;
use serde_json::{Value, json};

/// The four views, each with an element that shows it is drawn.
const VIEWS: [(&str, &str); 4] = [
    ("rules", "[data-scenario-id='sc_high_value_food'] .hits"),
    ("playground", "#run-simulate"),
    ("member", "#actor-id"),
    ("live", "#live-eps"),
];

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

fn server(extra: &[&str]) -> Server {
    let mut flags = vec!["--ledger", "sqlite", "--rules-source", "store"];
    flags.extend_from_slice(extra);
    Server::start(&example_rules(), &flags)
}

/// The README's event, for `actor`.
fn purchase(actor: &str, amount: u32) -> Value {
    json!({"type": "transaction", "source": "pos-system", "actor_id": actor, "payload": {"amount": amount, "category": "food"}})
}

async fn assert_no_problems(browser: &Browser, what: &str) {
    let problems = browser.problems().await;
    assert!(problems.is_empty(), "{what}: the browser logged\n{}", problems.join("\n"));
}

#[test]
fn the_console_is_served_from_the_binary_with_a_strict_policy() {
    let server = Server::start(&example_rules(), &[]);
    for (path, content_type) in [
        ("/console", "text/html; charset=utf-8"),
        ("/console/app.js", "text/javascript; charset=utf-8"),
        ("/console/app.css", "text/css; charset=utf-8"),
    ] {
        let answer = server.client.get(server.url(path)).send().unwrap();
        assert_eq!(answer.status(), 200, "{path}");
        assert_eq!(answer.headers()["content-type"], content_type, "{path}");
        let policy = answer.headers()["content-security-policy"].to_str().unwrap().to_owned();
        assert!(policy.contains("default-src 'none'") && policy.contains("connect-src 'self'"), "{path}: {policy}");
        let text = answer.text().unwrap();
        for outside in ["src=\"http", "href=\"http", "url(http", "@import", "fetch('http", "fetch(\"http"] {
            assert!(!text.contains(outside), "{path} loads something from another host: `{outside}`");
        }
    }
    let (status, body) = server.get("/console/secrets.txt");
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")));
}

#[test]
fn every_view_loads_without_errors_fits_a_phone_and_is_screenshotted() {
    let server = server(&[]);
    assert_eq!(server.post_json("/v1/events", &purchase("user_42", 1500)).0, 200);
    let base = server.base.clone();
    runtime().block_on(async {
        let Some(browser) = browser::start().await else { return };
        for (view, drawn) in VIEWS {
            browser.open(&format!("{base}/console#/{view}"), drawn).await;
            if view == "member" {
                browser.fill("#actor-id", "user_42").await;
                browser.click("#load-member").await;
                browser
                    .wait_until(
                        "the balance is shown",
                        "document.querySelector('#member-balance')?.textContent.includes('75')",
                    )
                    .await;
            }
            if view == "live" {
                // Events flowing for a few seconds: the page shows a rate above zero.
                let load = send_for(&base, std::time::Duration::from_secs(4));
                browser
                    .wait_until("a rate above zero", "parseFloat(document.querySelector('#live-eps')?.textContent) > 0")
                    .await;
                load.join().unwrap();
            }
            let unlabelled = browser.client.execute(UNLABELLED, vec![]).await.unwrap();
            assert_eq!(unlabelled, json!([]), "controls without a label in the {view} view");
            for width in WIDTHS {
                let fits = browser.screenshot(view, width).await;
                assert!(fits, "the {view} view scrolls sideways at {width} px");
            }
            assert_no_problems(&browser, &format!("the {view} view")).await;
        }
    });
}

/// The shown controls that have no label (a `<label for>`, an enclosing label, `aria-label`
/// or `aria-labelledby`; for a button, its text), as the start of their markup.
const UNLABELLED: &str = "return [...document.querySelectorAll('input, select, textarea, button')]
    .filter(e => e.offsetParent !== null && e.type !== 'hidden')
    .filter(e => e.tagName === 'BUTTON'
        ? !(e.textContent.trim() || e.getAttribute('aria-label'))
        : !((e.id && document.querySelector(`label[for=\"${e.id}\"]`)) || e.closest('label')
            || e.getAttribute('aria-label') || e.getAttribute('aria-labelledby')))
    .map(e => e.outerHTML.slice(0, 120));";

/// Posts the README's event to `base` from another thread, one every 20 ms, for `time`.
fn send_for(base: &str, time: std::time::Duration) -> std::thread::JoinHandle<()> {
    let url = format!("{base}/v1/events");
    std::thread::spawn(move || {
        let client = common::http_client(std::time::Duration::from_secs(10));
        let started = std::time::Instant::now();
        while started.elapsed() < time {
            client.post(&url).json(&purchase("user_42", 1500)).send().unwrap();
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    })
}

#[test]
fn the_rules_view_shows_hits_per_scenario_and_action() {
    let server = server(&[]);
    for _ in 0..3 {
        assert_eq!(server.post_json("/v1/events", &purchase("user_7", 1500)).0, 200);
    }
    let (status, hits) = server.get("/v1/rules/hits");
    assert_eq!(status, 200);
    let food = hits["scenarios"].as_array().unwrap().iter().find(|s| s["scenario_id"] == "sc_high_value_food").unwrap();
    assert_eq!((food["matched"].as_u64(), food["actions"][0]["succeeded"].as_u64()), (Some(3), Some(3)), "{hits}");
    let base = server.base.clone();
    runtime().block_on(async {
        let Some(browser) = browser::start().await else { return };
        browser.open(&format!("{base}/console#/rules"), "[data-action-id='act_bonus_points'] .hits").await;
        let scenario = browser.text("[data-scenario-id='sc_high_value_food'] .hits").await;
        let action = browser.text("[data-action-id='act_bonus_points'] .hits").await;
        assert!(scenario.contains('3') && action.contains('3'), "hits shown: scenario `{scenario}`, action `{action}`");
        assert_no_problems(&browser, "the rules view").await;
    });
}

#[test]
fn the_playground_runs_an_edited_event_and_colours_the_trace() {
    let server = server(&[]);
    let base = server.base.clone();
    runtime().block_on(async {
        let Some(browser) = browser::start().await else { return };
        browser.open(&format!("{base}/console#/playground"), "#event-json").await;
        // Food, but not over 1000: the first condition holds, the second does not.
        browser.fill("#event-json", &purchase("user_9", 500).to_string()).await;
        // From the keyboard: Tab from the event to the Run button, then Enter.
        for _ in 0..10 {
            let active = browser.client.active_element().await.unwrap();
            if active.attr("id").await.unwrap().as_deref() == Some("run-simulate") {
                break;
            }
            active.send_keys(&Key::Tab.to_string()).await.unwrap();
        }
        let focused = browser.client.active_element().await.unwrap();
        assert_eq!(focused.attr("id").await.unwrap().as_deref(), Some("run-simulate"), "Tab reaches Run");
        focused.send_keys(&Key::Enter.to_string()).await.unwrap();
        let is_food = "[data-node-id='cond_is_food']";
        let over = "[data-node-id='cond_amount_gt_1000']";
        browser
            .wait_until("the trace is drawn", &format!("document.querySelector(\"{over}[data-result='false']\")"))
            .await;
        assert_colour(&browser, is_food, "true", "cond-true").await;
        assert_colour(&browser, over, "false", "cond-false").await;
        assert!(browser.text(over).await.contains("500"), "the value the condition saw is shown");
        // No category at all: the first condition cannot be decided.
        browser
            .fill(
                "#event-json",
                r#"{"type":"transaction","source":"pos-system","actor_id":"user_9","payload":{"amount":1500}}"#,
            )
            .await;
        browser.click("#run-simulate").await;
        browser
            .wait_until(
                "the new trace is drawn",
                &format!("document.querySelector(\"{is_food}[data-result='unknown']\")"),
            )
            .await;
        assert_colour(&browser, is_food, "unknown", "cond-unknown").await;
        browser.screenshot("playground-trace", 1280).await;
        assert_no_problems(&browser, "the playground").await;
    });
}

/// The condition `selector` shows `result` with its class, and its colour differs from the
/// other results' colours.
async fn assert_colour(browser: &Browser, selector: &str, result: &str, class: &str) {
    let script = format!(
        "const e = document.querySelector(\"{selector}\"); return [e.dataset.result, e.classList.contains('{class}'), getComputedStyle(e).borderLeftColor + ' ' + getComputedStyle(e).backgroundColor];"
    );
    let answer = browser.client.execute(&script, vec![]).await.unwrap();
    assert_eq!(answer[0], result, "{selector}: {answer}");
    assert_eq!(answer[1], true, "{selector} has class {class}: {answer}");
    let colours = answer[2].as_str().unwrap().to_owned();
    let others: Vec<Value> = browser
        .client
        .execute(
            "return ['cond-true','cond-false','cond-unknown'].map(c => { const e = document.createElement('div'); e.className = 'trace-node ' + c; document.body.appendChild(e); const s = getComputedStyle(e); const v = s.borderLeftColor + ' ' + s.backgroundColor; e.remove(); return v; });",
            vec![],
        )
        .await
        .unwrap()
        .as_array()
        .unwrap()
        .clone();
    let palette: Vec<String> = others.iter().map(|v| v.as_str().unwrap().to_owned()).collect();
    let distinct: std::collections::BTreeSet<&String> = palette.iter().collect();
    assert_eq!(distinct.len(), 3, "true, false and unknown have three colours: {palette:?}");
    let index = ["true", "false", "unknown"].iter().position(|r| *r == result).unwrap();
    assert_eq!(colours, palette[index], "{selector} is drawn in the colour of `{result}`");
}

#[test]
fn the_member_page_shows_the_balance_change_after_an_event_is_sent() {
    let server = server(&[]);
    assert_eq!(server.post_json("/v1/events", &purchase("user_5", 1500)).0, 200);
    let base = server.base.clone();
    let browsed = runtime().block_on(async {
        let Some(browser) = browser::start().await else { return false };
        browser.open(&format!("{base}/console#/member"), "#actor-id").await;
        browser.fill("#actor-id", "user_5").await;
        browser.click("#load-member").await;
        browser
            .wait_until("75 points shown", "document.querySelector('#member-balance')?.textContent.includes('75')")
            .await;
        browser.fill("#member-event-json", &purchase("user_5", 2000).to_string()).await;
        browser.click("#send-event").await;
        // 75 + 2000 * 0.05.
        browser
            .wait_until("175 points shown", "document.querySelector('#member-balance')?.textContent.includes('175')")
            .await;
        assert_no_problems(&browser, "the member page").await;
        true
    });
    // Without a browser (skipped, above) the second event was never sent.
    if browsed {
        assert_eq!(server.get("/v1/actors/user_5/balance").1["balance"], 175);
    }
}

#[test]
fn a_rollback_from_the_history_changes_the_live_rules() {
    let server = server(&[]);
    let (_, first) = server.get("/v1/rules");
    let edited = example_rules().replace("payload.amount > 1000", "payload.amount > 2000");
    assert_eq!(server.put_rules(&edited).0, 200);
    assert_ne!(server.get("/v1/rules").1["hash"], first["hash"]);
    let base = server.base.clone();
    let browsed = runtime().block_on(async {
        let Some(browser) = browser::start().await else { return false };
        browser.open(&format!("{base}/console#/rules"), "[data-version='1'] .rollback").await;
        // The diff of version 2 against 1 names the changed line.
        browser.click("[data-version='2'] .version-select").await;
        browser.wait_until("the diff is shown", "document.body.textContent.includes('payload.amount > 2000')").await;
        browser.click("[data-version='1'] .rollback").await;
        browser.click("#confirm-yes").await;
        browser.wait_until("version 3 is listed", "document.querySelector(\"[data-version='3']\")").await;
        assert_no_problems(&browser, "the rollback").await;
        true
    });
    // Without a browser (skipped, above) nothing was rolled back.
    if browsed {
        let (_, live) = server.get("/v1/rules");
        assert_eq!((live["hash"].clone(), live["rules_version"].clone()), (first["hash"].clone(), json!(3)));
    }
}

#[test]
fn with_keys_the_console_asks_for_one_and_says_which_scope_a_key_lacks() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("rules.yaml"), example_rules()).unwrap();
    let data = dir.path().join("data");
    let key = |name: &str, scopes: &str| {
        let output = std::process::Command::new(bin())
            .args(["keys", "add", name, "--scopes", scopes, "--data", &data.display().to_string()])
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).unwrap().lines().last().unwrap().to_owned()
    };
    let members_only = key("support", "members:read");
    let server = Server::start_in(dir, &["--ledger", "sqlite"]);
    let base = server.base.clone();
    runtime().block_on(async {
        let Some(browser) = browser::start().await else { return };
        browser.client.goto(&format!("{base}/console#/rules")).await.unwrap();
        browser.fill("#api-key-input", &members_only).await;
        browser.click("#key-save").await;
        browser
            .wait_until(
                "the rules view says what is missing",
                "document.querySelector('.scope-denied')?.textContent.includes('rules:read')",
            )
            .await;
        browser.click("#nav-member").await;
        browser.fill("#actor-id", "user_1").await;
        browser.click("#load-member").await;
        browser
            .wait_until(
                "the member loads with this key",
                "document.querySelector('#member-balance')?.textContent.includes('0')",
            )
            .await;
        // The 401 before the key was given is the console asking; nothing else may be logged.
        let unexpected: Vec<String> =
            browser.problems().await.into_iter().filter(|p| !p.contains("401") && !p.contains("403")).collect();
        assert!(unexpected.is_empty(), "{unexpected:?}");
    });
}
