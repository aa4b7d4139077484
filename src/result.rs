//! The result of an event, in the shape `POST /v1/events` answers; the ledger stores it for replays.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::actions::Outcome;
use crate::event::Event;
use crate::graph::{Evaluation, Rules, Trace};

/// What happened to one event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventResult {
    /// The event's id (given or generated).
    pub event_id: String,
    /// Whole milliseconds spent (the original's field; kept as an integer for its clients).
    pub duration_ms: u64,
    /// Microseconds spent, for a useful resolution.
    pub duration_us: u64,
    /// Scenarios that fired, in file order; `[]` when none.
    pub scenarios_matched: Vec<String>,
    /// Actions reached, in order.
    pub actions_executed: Vec<ActionResult>,
    /// True when this is the stored result of an earlier request with the same id.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replayed: bool,
    /// Why each scenario and condition did or did not fire, when asked for.
    #[serde(default, skip_serializing_if = "Option::is_none", skip_deserializing)]
    pub trace: Option<Trace>,
}

/// What one action did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionResult {
    /// The action's id.
    pub action_id: String,
    /// The action's type.
    #[serde(rename = "type")]
    pub action_type: String,
    /// Whether it did what it meant to.
    pub success: bool,
    /// What it did, or why it failed.
    pub message: String,
    /// Signed points moved, for a successful points action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub points: Option<i64>,
}

impl EventResult {
    /// Builds the result from an evaluation and the outcome of each planned action (same order).
    pub fn build(
        rules: &Rules,
        event: &Event,
        evaluation: &Evaluation,
        outcomes: &[Outcome],
        elapsed: Duration,
    ) -> Self {
        let actions_executed = evaluation
            .planned
            .iter()
            .zip(outcomes)
            .filter_map(|(planned, outcome)| {
                let entry = rules.action(planned.action)?;
                Some(ActionResult {
                    action_id: entry.id.clone(),
                    action_type: entry.action_type.clone(),
                    success: outcome.success(),
                    message: entry.action.message(outcome, event),
                    points: outcome.points(),
                })
            })
            .collect();
        EventResult {
            event_id: event.id.clone(),
            duration_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
            duration_us: u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
            scenarios_matched: evaluation.matched.iter().map(|&i| rules.scenario_id(i).to_owned()).collect(),
            actions_executed,
            replayed: false,
            trace: None,
        }
    }
}
