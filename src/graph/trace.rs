//! Traces: why each scenario and condition did or did not fire, produced only on request.

use serde::Serialize;

use super::evaluate::Tracer;
use super::{CompiledScenario, ConditionEntry, Graph};
use crate::event::Event;
use crate::expr::Truth;

/// Why a scenario was or was not entered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ScenarioStatus {
    /// Type and source matched; its conditions were evaluated.
    Entered,
    /// Its `sources` do not include the event's source.
    SkippedSource,
    /// It does not listen to the event's type.
    SkippedType,
    /// It is not enabled.
    Disabled,
}

/// A condition's result in a trace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConditionTrace {
    /// The condition's id.
    pub condition_id: String,
    /// The expression as written.
    pub expression: String,
    /// `true`, `false` or `unknown`.
    pub result: &'static str,
    /// Why it is unknown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Nesting depth under the scenario, from 0.
    pub depth: usize,
}

/// One scenario in a trace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScenarioTrace {
    /// The scenario's id.
    pub scenario_id: String,
    /// Whether it was entered, and if not, why.
    pub status: ScenarioStatus,
    /// Conditions evaluated, in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<ConditionTrace>,
}

/// The trace of one evaluation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Trace {
    /// Every scenario of the file, those considered first.
    pub scenarios: Vec<ScenarioTrace>,
}

impl Tracer for Trace {
    fn scenario(&mut self, scenario: &CompiledScenario, status: ScenarioStatus) {
        self.scenarios.push(ScenarioTrace { scenario_id: scenario.id.clone(), status, conditions: Vec::new() });
    }

    fn condition(&mut self, condition: &ConditionEntry, depth: usize, truth: Truth) {
        let (result, reason) = match truth {
            Truth::True => ("true", None),
            Truth::False => ("false", None),
            Truth::Unknown(u) => ("unknown", Some(condition.program.explain(&u))),
        };
        if let Some(scenario) = self.scenarios.last_mut() {
            scenario.conditions.push(ConditionTrace {
                condition_id: condition.id.clone(),
                expression: condition.program.source().to_owned(),
                result,
                reason,
                depth,
            });
        }
    }
}

impl Trace {
    /// Adds the scenarios that were not considered: other types, then disabled ones.
    pub(super) fn add_unconsidered(&mut self, graph: &Graph, event: &Event) {
        let considered = graph.scenarios_for_type(&event.event_type);
        for (index, scenario) in graph.scenarios.iter().enumerate() {
            if !considered.iter().any(|&i| i as usize == index) {
                self.scenarios.push(ScenarioTrace {
                    scenario_id: scenario.id.clone(),
                    status: ScenarioStatus::SkippedType,
                    conditions: Vec::new(),
                });
            }
        }
        for id in &graph.disabled {
            self.scenarios.push(ScenarioTrace {
                scenario_id: id.clone(),
                status: ScenarioStatus::Disabled,
                conditions: Vec::new(),
            });
        }
    }
}
