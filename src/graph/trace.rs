//! Traces: why each scenario and node did or did not fire, produced only on request.
//!
//! For every scenario of the file: entered, or skipped and why (type, source, disabled). For
//! every node of an entered scenario, in depth-first file order: a condition's result (true,
//! false, unknown with its reason) and the values of the paths it reads; an action reached; or
//! a node never reached because a condition above it did not pass (pruned).

use serde::Serialize;
use serde_json::Value;

use super::evaluate::Tracer;
use super::{CompiledScenario, ConditionEntry, Graph, GraphNode};
use crate::actions::LIMIT_REACHED;
use crate::event::Event;
use crate::expr::Truth;
use crate::expr::eval::resolve;

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
    /// The event time is outside its schedule.
    OutsideSchedule,
    /// It matched, but another scenario of its exclusive group acted (`excluded_by`).
    Excluded,
}

/// What happened at a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeResult {
    /// A condition that passed.
    True,
    /// A condition that did not pass.
    False,
    /// A condition that could not be decided (it does not pass).
    Unknown,
    /// An action that was reached.
    Reached,
    /// Never evaluated: a condition above it did not pass.
    Pruned,
}

/// A path a condition reads, with its value in the event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PathValue {
    /// The path as written.
    pub path: String,
    /// Its value; absent when the path is missing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
    /// True when the event has nothing at this path.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub missing: bool,
}

/// One node of a scenario in a trace.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeTrace {
    /// `condition` or `action`.
    pub kind: &'static str,
    /// The node's id.
    pub id: String,
    /// Nesting depth under the scenario, from 0.
    pub depth: usize,
    /// What happened.
    pub result: NodeResult,
    /// A condition's expression, as written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expression: Option<String>,
    /// Why a condition is unknown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The paths an evaluated condition reads, with their values.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<PathValue>,
}

/// One scenario in a trace.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScenarioTrace {
    /// The scenario's id.
    pub scenario_id: String,
    /// Whether it was entered, and if not, why.
    pub status: ScenarioStatus,
    /// True when at least one of its actions was reached.
    pub matched: bool,
    /// For an excluded scenario: the scenario of its exclusive group that acted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub excluded_by: Option<String>,
    /// For a scenario a limit refused (no action succeeded, one failed with `limit_reached`):
    /// which limit, in words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit_reached: Option<String>,
    /// Its nodes in depth-first file order (for entered scenarios).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<NodeTrace>,
}

impl ScenarioTrace {
    /// Why the scenario did not fire, in words; `None` when it fired.
    pub fn why_not(&self) -> Option<String> {
        if let Some(by) = &self.excluded_by {
            return Some(format!("excluded: scenario `{by}` of its exclusive group acted"));
        }
        if let Some(limit) = &self.limit_reached {
            return Some(limit.clone());
        }
        if self.matched {
            return None;
        }
        Some(match self.status {
            ScenarioStatus::SkippedType => "skipped: it does not listen to this event type".into(),
            ScenarioStatus::SkippedSource => "skipped: it does not accept this source".into(),
            ScenarioStatus::Disabled => "skipped: it is disabled".into(),
            ScenarioStatus::OutsideSchedule => "skipped: the event time is outside its schedule".into(),
            ScenarioStatus::Excluded => "excluded by another scenario of its exclusive group".into(),
            ScenarioStatus::Entered => {
                let blocking: Vec<String> = self
                    .nodes
                    .iter()
                    .filter(|n| matches!(n.result, NodeResult::False | NodeResult::Unknown))
                    .map(|n| match (&n.result, &n.reason) {
                        (NodeResult::Unknown, Some(reason)) => format!("condition `{}` is unknown: {reason}", n.id),
                        _ => format!("condition `{}` is false", n.id),
                    })
                    .collect();
                if blocking.is_empty() { "no action under it was reached".into() } else { blocking.join("; ") }
            }
        })
    }
}

/// The trace of one evaluation.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Trace {
    /// Every scenario of the file: those considered first (in evaluation order), then the others.
    pub scenarios: Vec<ScenarioTrace>,
}

/// Records a trace while the graph is evaluated.
pub(super) struct Recorder<'a> {
    pub(super) trace: Trace,
    pub(super) graph: &'a Graph,
    pub(super) event: &'a Event,
}

impl Recorder<'_> {
    fn push(&mut self, node: NodeTrace) {
        if let Some(scenario) = self.trace.scenarios.last_mut() {
            if node.result == NodeResult::Reached {
                scenario.matched = true;
            }
            scenario.nodes.push(node);
        }
    }

    fn node(kind: &'static str, id: &str, depth: usize, result: NodeResult) -> NodeTrace {
        NodeTrace { kind, id: id.to_owned(), depth, result, expression: None, reason: None, values: Vec::new() }
    }
}

impl Tracer for Recorder<'_> {
    fn scenario(&mut self, scenario: &CompiledScenario, status: ScenarioStatus) {
        self.trace.scenarios.push(ScenarioTrace {
            scenario_id: scenario.id.clone(),
            status,
            matched: false,
            excluded_by: None,
            limit_reached: None,
            nodes: Vec::new(),
        });
    }

    fn condition(&mut self, condition: &ConditionEntry, depth: usize, truth: Truth) {
        let (result, reason) = match truth {
            Truth::True => (NodeResult::True, None),
            Truth::False => (NodeResult::False, None),
            Truth::Unknown(u) => (NodeResult::Unknown, Some(condition.program.explain(&u))),
        };
        let values = condition
            .program
            .paths()
            .into_iter()
            .map(|(text, path)| {
                let value = resolve(path, self.event).map(|v| v.to_json());
                PathValue { path: text.to_owned(), missing: value.is_none(), value }
            })
            .collect();
        let mut node = Recorder::node("condition", &condition.id, depth, result);
        node.expression = Some(condition.program.source().to_owned());
        node.reason = reason;
        node.values = values;
        self.push(node);
    }

    fn action(&mut self, action: u32, depth: usize) {
        let id = self.graph.actions.get(action as usize).map_or("", |a| a.id.as_str()).to_owned();
        self.push(Recorder::node("action", &id, depth, NodeResult::Reached));
    }

    fn pruned(&mut self, nodes: &[GraphNode], depth: usize) {
        for node in nodes {
            match node {
                GraphNode::Action(action) => {
                    let id = self.graph.actions.get(*action as usize).map_or("", |a| a.id.as_str()).to_owned();
                    self.push(Recorder::node("action", &id, depth, NodeResult::Pruned));
                }
                GraphNode::Condition { condition, children } => {
                    let id = self.graph.conditions.get(*condition as usize).map_or("", |c| c.id.as_str()).to_owned();
                    self.push(Recorder::node("condition", &id, depth, NodeResult::Pruned));
                    self.pruned(children, depth + 1);
                }
            }
        }
    }
}

impl Trace {
    /// Adds the scenarios that were not considered: other types, then disabled ones.
    pub(super) fn add_unconsidered(&mut self, graph: &Graph, event: &Event) {
        let considered = graph.scenarios_for_type(&event.event_type);
        let skipped = |scenario_id: &str, status| ScenarioTrace {
            scenario_id: scenario_id.to_owned(),
            status,
            matched: false,
            excluded_by: None,
            limit_reached: None,
            nodes: Vec::new(),
        };
        for (index, scenario) in graph.scenarios.iter().enumerate() {
            if !considered.iter().any(|&i| i as usize == index) {
                self.scenarios.push(skipped(&scenario.id, ScenarioStatus::SkippedType));
            }
        }
        for id in &graph.disabled {
            self.scenarios.push(skipped(id, ScenarioStatus::Disabled));
        }
    }

    /// Marks what was decided once the actions were applied: the scenarios that stacking
    /// excluded, naming the one of their group that acted (a scenario that reached an action but
    /// is not among the result's matched scenarios; a scenario whose actions all failed stays
    /// matched), and the scenarios a limit refused (none of their actions succeeded, and one
    /// failed with `limit_reached`).
    pub fn mark_outcomes(&mut self, rules: &super::Rules, result: &crate::result::EventResult) {
        let matched = &result.scenarios_matched;
        for entry in self.scenarios.iter_mut().filter(|s| s.matched) {
            if !matched.contains(&entry.scenario_id) {
                let group = rules.group_of(&entry.scenario_id);
                if let Some(by) = matched.iter().find(|id| group.is_some() && rules.group_of(id) == group) {
                    entry.status = ScenarioStatus::Excluded;
                    entry.excluded_by = Some(by.clone());
                }
                continue;
            }
            // Action ids are unique in a file: a refused action names its scenario.
            let reached = |id: &str| entry.nodes.iter().any(|n| n.kind == "action" && n.id == id);
            let mut own = result.actions_executed.iter().filter(|a| reached(&a.action_id));
            if own.clone().any(|a| a.success) {
                continue;
            }
            entry.limit_reached = own.find(|a| a.code.as_deref() == Some(LIMIT_REACHED)).map(|a| a.message.clone());
        }
    }

    /// The trace of a scenario, by id.
    pub fn scenario(&self, scenario_id: &str) -> Option<&ScenarioTrace> {
        self.scenarios.iter().find(|s| s.scenario_id == scenario_id)
    }
}
