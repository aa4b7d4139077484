//! How often each scenario matched and each action ran on this node since it started: what the
//! console's rules view shows beside the tree (`GET /v1/rules/hits`).
//!
//! Scenario matches are the `ifttt_scenarios_matched` series; action runs are counted by action
//! id here, outside `/metrics`, since a series per action would grow with every rules version.
//! Both are keyed by id, so counts carry over a reload for the scenarios and actions it keeps.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use prometheus_client::metrics::counter::Counter;
use serde::Serialize;

use crate::rules::schema::{Child, Scenario};

/// An action's runs: `[succeeded, failed]`.
pub type ActionRuns = Arc<[Counter; 2]>;

/// Runs of every action seen since the node started, by action id.
pub struct ActionHits {
    since: jiff::Timestamp,
    by_id: Mutex<HashMap<String, ActionRuns>>,
}

impl Default for ActionHits {
    fn default() -> Self {
        ActionHits { since: jiff::Timestamp::now(), by_id: Mutex::default() }
    }
}

impl ActionHits {
    /// The counters of action `id`, made on first use (when a rules version with it loads).
    pub fn runs(&self, id: &str) -> ActionRuns {
        let mut by_id = self.by_id.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(by_id.entry(id.to_owned()).or_default())
    }

    /// When counting started.
    pub fn since(&self) -> jiff::Timestamp {
        self.since
    }
}

/// The answer of `GET /v1/rules/hits` (keys in this order).
#[derive(Debug, Serialize)]
pub struct HitsView<'a> {
    /// When this node started counting (RFC 3339).
    pub since: String,
    /// The live rules version the tree is of.
    pub rules_version: u64,
    /// Every scenario of the live rules, in file order.
    pub scenarios: Vec<ScenarioHits<'a>>,
}

/// One scenario's matches and its actions' runs.
#[derive(Debug, Serialize)]
pub struct ScenarioHits<'a> {
    /// The scenario.
    pub scenario_id: &'a str,
    /// Events it matched.
    pub matched: u64,
    /// Its actions, in file order (depth first).
    pub actions: Vec<ActionHitsView<'a>>,
}

/// One action's runs.
#[derive(Debug, Serialize)]
pub struct ActionHitsView<'a> {
    /// The action.
    pub action_id: &'a str,
    /// Its type.
    #[serde(rename = "type")]
    pub action_type: &'a str,
    /// Runs that succeeded.
    pub succeeded: u64,
    /// Runs that failed (refused by the ledger, a limit, or an error).
    pub failed: u64,
}

/// The hits of `scenarios`, reading each scenario's matches with `matched` and each action's runs
/// from `hits`.
pub fn view<'a>(
    scenarios: &'a [Scenario],
    matched: impl Fn(&str) -> u64,
    hits: &ActionHits,
    rules_version: u64,
) -> HitsView<'a> {
    let scenarios = scenarios
        .iter()
        .map(|scenario| {
            let mut actions = Vec::new();
            collect_actions(&scenario.children, hits, &mut actions);
            ScenarioHits { scenario_id: &scenario.id, matched: matched(&scenario.id), actions }
        })
        .collect();
    HitsView { since: hits.since().to_string(), rules_version, scenarios }
}

fn collect_actions<'a>(children: &'a [Child], hits: &ActionHits, out: &mut Vec<ActionHitsView<'a>>) {
    for child in children {
        match child {
            Child::Condition(condition) => collect_actions(&condition.children, hits, out),
            Child::Action(action) => {
                let [succeeded, failed] = &*hits.runs(&action.id);
                out.push(ActionHitsView {
                    action_id: &action.id,
                    action_type: &action.action_type,
                    succeeded: succeeded.get(),
                    failed: failed.get(),
                });
            }
        }
    }
}
