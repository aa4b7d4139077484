//! Member stories: each file of `tests/stories/` is one member's (or a few members') life in the
//! programme — a rules file and a sequence of events, each followed by what must hold — run
//! through the real service over HTTP, on SQLite and on PostgreSQL. A new story costs one file.
//!
//! ```yaml
//! story: what the story shows
//! rules: |                       # the rules file, inline
//!   version: v1
//!   ...
//! steps:                         # each step is one `event`, `redeem`, `adjust` or `cancel`
//!   - redeem: {actor_id: ann, id: till-1, points: 5}        # the API's body, with the member
//!   - cancel: {actor_id: ann, redemption: till-1, id: void-1}
//!   - event: {id: e1, type: purchase, actor_id: ann, occurred_at: "2026-12-01T10:00:00Z", payload: {total: 30}}
//!     expect:
//!       status: 200                # the HTTP status (default 200)
//!       matched: [earn]            # scenarios_matched, exactly
//!       actions: [ok, limit_reached]  # each executed action: `ok`, or its failure code
//!       points: 30                 # points moved by the event, in all
//!       balances: {ann: 30}        # balances after the step
//!       entries: [{kind: award, points: 30}]   # the event actor's entries new since its last step, oldest first
//!       member:                  # the step's member as `GET /v1/actors/{id}/balance?at=` answers
//!         at: "2026-12-20T00:00:00Z"   # default: now
//!         balance: 30
//!         pending: 0
//!         tier: none             # a tier id, or none
//!         expiring: [[30, "2027-12-01T10:00:00Z"]]   # [points, expires_at], soonest first
//! ```
//!
//! The expiry sweep is off during a story (an hour apart), so what a step writes is what the
//! story sees; expired points leave balances whether or not they are swept.
//!
//! Every `expect` key is checked only when given. Unknown keys are errors, so a misspelt
//! expectation cannot pass silently.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::Server;
use common::pg::Store;
use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Story {
    story: String,
    rules: String,
    steps: Vec<Step>,
}

/// One step: an event, or an operation on a member's points (the body as the API takes it,
/// with the member's `actor_id`; a cancellation names its `redemption`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Step {
    #[serde(default)]
    event: Option<Value>,
    #[serde(default)]
    redeem: Option<Value>,
    #[serde(default)]
    adjust: Option<Value>,
    #[serde(default)]
    cancel: Option<Value>,
    #[serde(default)]
    expect: Expect,
}

impl Step {
    /// The request the step makes: path and body, and the member it is about.
    fn request(&self) -> (String, Value, String) {
        let actor = |body: &Value| body["actor_id"].as_str().unwrap_or_default().to_owned();
        let without_actor = |body: &Value| {
            let mut body = body.clone();
            if let Some(map) = body.as_object_mut() {
                map.remove("actor_id");
                map.remove("redemption");
            }
            body
        };
        match (&self.event, &self.redeem, &self.adjust, &self.cancel) {
            (Some(event), None, None, None) => ("/v1/events".into(), event.clone(), actor(event)),
            (None, Some(body), None, None) => {
                (format!("/v1/actors/{}/redeem", actor(body)), without_actor(body), actor(body))
            }
            (None, None, Some(body), None) => {
                (format!("/v1/actors/{}/adjust", actor(body)), without_actor(body), actor(body))
            }
            (None, None, None, Some(body)) => {
                let redemption = body["redemption"].as_str().unwrap_or_default();
                let path = format!("/v1/actors/{}/redemptions/{redemption}/cancel", actor(body));
                (path, without_actor(body), actor(body))
            }
            _ => panic!("a step is exactly one of event, redeem, adjust, cancel: {self:?}"),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    status: Option<u16>,
    matched: Option<Vec<String>>,
    actions: Option<Vec<String>>,
    points: Option<i64>,
    balances: Option<BTreeMap<String, i64>>,
    entries: Option<Vec<ExpectedEntry>>,
    member: Option<ExpectedMember>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpectedMember {
    at: Option<String>,
    balance: Option<i64>,
    pending: Option<i64>,
    tier: Option<String>,
    expiring: Option<Vec<(i64, String)>>,
}

#[derive(Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpectedEntry {
    kind: String,
    points: i64,
    #[serde(default)]
    scenario_id: Option<String>,
    #[serde(default)]
    reverses: Option<String>,
}

fn stories() -> Vec<(PathBuf, Story)> {
    let dir = common::repo_path("tests/stories");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    paths.sort();
    assert!(paths.len() >= 25, "the stories are in {}", dir.display());
    paths
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            let node = fluxflow::rules::yaml::parse(&text)
                .unwrap_or_else(|e| panic!("{}: {e:?}", path.display()))
                .unwrap_or_else(|| panic!("{} is empty", path.display()));
            let story: Story = serde_json::from_value(node.to_json())
                .unwrap_or_else(|e| panic!("{} is not a story: {e}", path.display()));
            (path, story)
        })
        .collect()
}

/// Runs a story on a fresh service; every expectation that does not hold, by step.
fn run(path: &Path, story: &Story, store: &Store) -> Vec<String> {
    let store_args = store.args();
    let mut args: Vec<&str> = store_args.iter().map(String::as_str).collect();
    args.extend(["--expiry-sweep-ms", "3600000"]);
    let server = Server::start(&story.rules, &args);
    let mut problems = Vec::new();
    let mut seen_entries: BTreeMap<String, usize> = BTreeMap::new();
    for (i, step) in story.steps.iter().enumerate() {
        let place = format!("{} step {}", path.display(), i + 1);
        let (url, request, actor) = step.request();
        let (status, body) = server.post_json(&url, &request);
        let expect = &step.expect;
        let mut check = |what: &str, want: String, got: String| {
            if want != got {
                problems.push(format!("{place}: {what}: expected {want}, got {got}\n    answer: {body}"));
            }
        };
        check("status", expect.status.unwrap_or(200).to_string(), status.to_string());
        if let Some(matched) = &expect.matched {
            check("matched", format!("{matched:?}"), format!("{:?}", strings(&body["scenarios_matched"])));
        }
        let actions = body["actions_executed"].as_array().cloned().unwrap_or_default();
        if let Some(want) = &expect.actions {
            let got: Vec<String> = actions.iter().map(|a| a["code"].as_str().unwrap_or("ok").to_owned()).collect();
            check("actions", format!("{want:?}"), format!("{got:?}"));
        }
        if let Some(points) = expect.points {
            let got: i64 = actions.iter().filter_map(|a| a["points"].as_i64()).sum();
            check("points", points.to_string(), got.to_string());
        }
        for (actor, balance) in expect.balances.iter().flatten() {
            let got = server.get(&format!("/v1/actors/{actor}/balance")).1["balance"].clone();
            check(&format!("balance of {actor}"), balance.to_string(), got.to_string());
        }
        if let Some(want) = &expect.member {
            let query = want.at.as_ref().map(|at| format!("?at={at}")).unwrap_or_default();
            let (_, got) = server.get(&format!("/v1/actors/{actor}/balance{query}"));
            let figures = [("balance", want.balance), ("pending", want.pending)];
            for (name, value) in figures.into_iter().filter_map(|(n, v)| v.map(|v| (n, v))) {
                check(&format!("{name} of {actor}{query}"), value.to_string(), got[name].to_string());
            }
            if let Some(tier) = &want.tier {
                let got_tier = got["tier"].as_str().unwrap_or("none").to_owned();
                check(&format!("tier of {actor}{query}"), tier.clone(), got_tier);
            }
            if let Some(expiring) = &want.expiring {
                let got_lots: Vec<(i64, String)> = got["expiring"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|l| {
                        (
                            l["points"].as_i64().unwrap_or_default(),
                            l["expires_at"].as_str().unwrap_or_default().to_owned(),
                        )
                    })
                    .collect();
                check(&format!("expiring of {actor}{query}"), format!("{expiring:?}"), format!("{got_lots:?}"));
            }
        }
        let fresh = new_entries(&server, &actor, seen_entries.entry(actor.clone()).or_default());
        if let Some(want) = &expect.entries {
            let with_scenario = want.iter().any(|w| w.scenario_id.is_some());
            let with_reverses = want.iter().any(|w| w.reverses.is_some());
            let got: Vec<ExpectedEntry> = fresh
                .iter()
                .map(|e| ExpectedEntry {
                    kind: e["kind"].as_str().unwrap_or_default().to_owned(),
                    points: e["points"].as_i64().unwrap_or_default(),
                    scenario_id: with_scenario.then(|| e["scenario_id"].as_str().unwrap_or_default().to_owned()),
                    reverses: with_reverses.then(|| e["reverses"].as_str().unwrap_or_default().to_owned()),
                })
                .collect();
            check("entries", format!("{want:?}"), format!("{got:?}"));
        }
    }
    problems
}

/// The actor's entries after the first `seen`, oldest first; counts them as seen.
fn new_entries(server: &Server, actor: &str, seen: &mut usize) -> Vec<Value> {
    let page = server.get(&format!("/v1/actors/{actor}/ledger?limit=500")).1;
    let mut entries = page["entries"].as_array().cloned().unwrap_or_default();
    entries.reverse();
    let fresh = entries.split_off((*seen).min(entries.len()));
    *seen += fresh.len();
    fresh
}

fn strings(value: &Value) -> Vec<String> {
    value.as_array().map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect()).unwrap_or_default()
}

fn check_all(store: impl Fn() -> Option<Store>) {
    let mut problems = Vec::new();
    for (path, story) in stories() {
        // A fresh store per story: stories share member ids.
        let Some(store) = store() else { return };
        let found = run(&path, &story, &store);
        if !found.is_empty() {
            problems.push(format!("story `{}`:\n  {}", story.story, found.join("\n  ")));
        }
    }
    assert!(problems.is_empty(), "{} stories failed:\n{}", problems.len(), problems.join("\n"));
}

#[test]
fn every_story_holds_on_sqlite() {
    check_all(|| Some(Store::sqlite()));
}

#[test]
fn every_story_holds_on_postgres() {
    check_all(Store::postgres);
}
