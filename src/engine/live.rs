//! The live rules: the compiled graph that events are evaluated against, swapped atomically on
//! reload so that each event sees exactly one version.

use std::path::PathBuf;

use prometheus_client::metrics::counter::Counter;
use serde::Serialize;

use super::metrics::{ActionLabels, Metrics, ScenarioLabel};
use crate::graph::Rules;
use crate::rules::EngineSettings;

/// A loaded rules version, with its metric counters resolved once so the hot path needs no
/// label lookups.
pub struct LiveRules {
    /// The compiled rules.
    pub rules: Rules,
    /// When they were loaded.
    pub loaded_at: jiff::Timestamp,
    /// The file they came from.
    pub path: PathBuf,
    /// Their number among the stored rules versions.
    pub rules_version: u64,
    scenario_counters: Vec<Counter>,
    /// `[success, error]` per action.
    action_counters: Vec<[Counter; 2]>,
    /// `[succeeded, failed]` per action, by its id (for the console).
    action_runs: Vec<super::hits::ActionRuns>,
    /// Refusals by a limit, per scenario that has limits.
    limit_counters: Vec<Option<Counter>>,
}

impl LiveRules {
    /// Wraps freshly loaded rules.
    pub fn new(rules: Rules, path: PathBuf, metrics: &Metrics, rules_version: u64) -> Self {
        let label = |i: usize| ScenarioLabel {
            scenario_id: rules.scenario_id(u32::try_from(i).unwrap_or(u32::MAX)).to_owned(),
        };
        let scenario_counters =
            (0..rules.scenario_count()).map(|i| metrics.scenarios_matched.get_or_create(&label(i)).clone()).collect();
        // Only scenarios with limits get a series: the others can never be refused by one.
        let limit_counters = (0..rules.scenario_count())
            .map(|i| {
                let limited = rules.scenario_limits(u32::try_from(i).unwrap_or(u32::MAX)).is_some();
                limited.then(|| metrics.limits_reached.get_or_create(&label(i)).clone())
            })
            .collect();
        let action_counters = rules
            .actions()
            .map(|entry| {
                ["success", "error"].map(|status| {
                    let label = ActionLabels { action_type: entry.action_type.clone(), status };
                    metrics.actions_executed.get_or_create(&label).clone()
                })
            })
            .collect();
        let action_runs = rules.actions().map(|entry| metrics.action_hits.runs(&entry.id)).collect();
        LiveRules {
            rules,
            loaded_at: jiff::Timestamp::now(),
            path,
            rules_version,
            scenario_counters,
            action_counters,
            action_runs,
            limit_counters,
        }
    }

    /// Counts a matched scenario.
    pub fn count_match(&self, scenario: u32) {
        if let Some(c) = self.scenario_counters.get(scenario as usize) {
            c.inc();
        }
    }

    /// Counts an executed action.
    pub fn count_action(&self, action: u32, success: bool) {
        if let Some(pair) = self.action_counters.get(action as usize) {
            pair[usize::from(!success)].inc();
        }
        if let Some(runs) = self.action_runs.get(action as usize) {
            runs[usize::from(!success)].inc();
        }
    }

    /// Counts an action a limit of its scenario refused.
    pub fn count_limit_reached(&self, scenario: u32) {
        if let Some(Some(c)) = self.limit_counters.get(scenario as usize) {
            c.inc();
        }
    }

    /// What `GET /v1/rules/hits` shows: each scenario's matches and each action's runs on this
    /// node since it started.
    pub fn hits<'a>(&'a self, metrics: &Metrics) -> super::hits::HitsView<'a> {
        let matched =
            |id: &str| metrics.scenarios_matched.get_or_create(&ScenarioLabel { scenario_id: id.to_owned() }).get();
        super::hits::view(&self.rules.file.scenarios, matched, &metrics.action_hits, self.rules_version)
    }

    /// The view `GET /v1/rules` shows. `engine` is what is in effect: worker and queue sizes
    /// are those the process started with (they change only with a restart).
    pub fn view(&self, running: &EngineSettings) -> RulesView<'_> {
        let file = &self.rules.file.engine;
        let engine = EngineSettings { event_workers: running.event_workers, queue_depth: running.queue_depth, ..*file };
        RulesView {
            version: &self.rules.file.version,
            engine,
            restart_required: settings_needing_restart(running, file),
            scenarios: &self.rules.file.scenarios,
            hash: &self.rules.hash,
            rules_version: self.rules_version,
            loaded_at: self.loaded_at.to_string(),
            path: self.path.display().to_string(),
            warnings: self.rules.warnings.iter().map(ToString::to_string).collect(),
        }
    }
}

/// The live rules as shown over HTTP.
#[derive(Serialize)]
pub struct RulesView<'a> {
    version: &'a str,
    engine: EngineSettings,
    restart_required: Vec<&'static str>,
    scenarios: &'a [crate::rules::Scenario],
    hash: &'a str,
    rules_version: u64,
    loaded_at: String,
    path: String,
    warnings: Vec<String>,
}

/// What a successful reload did.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadReport {
    /// Always true (the original's field).
    pub reloaded: bool,
    /// Scenarios in the file, disabled ones included (the original's field).
    pub scenarios_count: usize,
    /// SHA-256 of the file now live.
    pub hash: String,
    /// When it went live.
    pub loaded_at: String,
    /// False when the file had not changed since the last load.
    pub changed: bool,
    /// Warnings of the new file.
    pub warnings: Vec<String>,
    /// Engine settings that changed in the file but only take effect after a restart.
    pub restart_required: Vec<&'static str>,
}

/// Engine settings that changed and cannot change while running.
pub fn settings_needing_restart(running: &EngineSettings, file: &EngineSettings) -> Vec<&'static str> {
    let mut changed = Vec::new();
    if running.event_workers != file.event_workers {
        changed.push("event_workers");
    }
    if running.queue_depth != file.queue_depth {
        changed.push("queue_depth");
    }
    changed
}
