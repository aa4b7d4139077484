//! Evaluation: one event against the graph, scenario by scenario in evaluation order (descending
//! priority, ties in file order), each depth-first in file order.
//!
//! The fast path writes into an [`Evaluation`] that the caller owns and reuses, and allocates
//! nothing. The traced path runs the same code with a [`Tracer`] that records each step; the
//! fast path's tracer does nothing and is compiled away.

use super::index::TypeBucket;
use super::trace::{Recorder, ScenarioStatus, Trace};
use super::{CompiledScenario, ConditionEntry, Graph, GraphNode, Rules};
use crate::actions::Plan;
use crate::expr::{Reason, Truth};
use crate::facts::Facts;

/// The result of evaluating one event: matched scenarios and planned actions, by index.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Evaluation {
    /// Indices of matched scenarios, in evaluation order.
    pub matched: Vec<u32>,
    /// Actions reached, in scenario order then depth-first pre-order, with their plans.
    pub planned: Vec<PlannedAction>,
    /// Conditions whose result was unknown, counted by [`Reason::label_index`].
    pub unknowns: [u32; Reason::LABELS.len()],
    /// Scratch space for the equality index's candidates.
    candidates: Vec<u32>,
}

/// An action that was reached, with what it plans to do.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlannedAction {
    /// Index of the scenario it fired in.
    pub scenario: u32,
    /// Index of the action.
    pub action: u32,
    /// What it plans.
    pub plan: Plan,
}

impl Evaluation {
    /// An empty buffer with room reserved.
    pub fn with_capacity(scenarios: usize, actions: usize) -> Self {
        Evaluation {
            matched: Vec::with_capacity(scenarios),
            planned: Vec::with_capacity(actions),
            unknowns: Default::default(),
            candidates: Vec::with_capacity(scenarios),
        }
    }

    fn clear(&mut self) {
        self.matched.clear();
        self.planned.clear();
        self.unknowns = Default::default();
    }
}

/// Receives the steps of an evaluation.
pub(super) trait Tracer {
    /// A tracer sees every scenario of the type; without one the equality index skips
    /// scenarios that cannot fire.
    const TRACES: bool = true;
    fn scenario(&mut self, _scenario: &CompiledScenario, _status: ScenarioStatus) {}
    fn condition(&mut self, _condition: &ConditionEntry, _depth: usize, _truth: Truth) {}
    fn action(&mut self, _action: u32, _depth: usize) {}
    fn pruned(&mut self, _nodes: &[GraphNode], _depth: usize) {}
}

/// The fast path's tracer.
struct NoTrace;
impl Tracer for NoTrace {
    const TRACES: bool = false;
}

impl Rules {
    /// Evaluates an event into `out` (cleared first). Allocates nothing once `out` has grown to
    /// the size the rules need.
    pub fn evaluate(&self, facts: &Facts<'_>, out: &mut Evaluation) {
        self.graph.run(facts, out, &mut NoTrace);
    }

    /// Evaluates an event into `out`, and records a trace only when `trace` is true.
    pub fn evaluate_maybe_traced(&self, facts: &Facts<'_>, out: &mut Evaluation, trace: bool) -> Option<Trace> {
        if trace {
            Some(self.evaluate_traced(facts, out))
        } else {
            self.evaluate(facts, out);
            None
        }
    }

    /// Evaluates an event and records every step in a trace.
    pub fn evaluate_traced(&self, facts: &Facts<'_>, out: &mut Evaluation) -> Trace {
        let mut recorder = Recorder { trace: Trace::default(), graph: &self.graph, event: facts.event };
        self.graph.run(facts, out, &mut recorder);
        let mut trace = recorder.trace;
        trace.add_unconsidered(&self.graph, facts.event);
        trace
    }
}

/// Longest name lower-cased on the stack; longer ones (rare) are lower-cased on the heap.
const STACK_NAME: usize = 64;

/// A name (event type, source) lower-cased for matching, without allocating in the common cases:
/// already lower-case, or short ASCII.
enum Lowered<'a> {
    Same(&'a str),
    Stack([u8; STACK_NAME], usize),
    Heap(String),
}

impl<'a> Lowered<'a> {
    fn new(name: &'a str) -> Self {
        if !name.bytes().any(|b| b.is_ascii_uppercase() || !b.is_ascii()) {
            Lowered::Same(name)
        } else if name.len() <= STACK_NAME && name.is_ascii() {
            let mut buffer = [0u8; STACK_NAME];
            buffer[..name.len()].copy_from_slice(name.as_bytes());
            buffer[..name.len()].make_ascii_lowercase();
            Lowered::Stack(buffer, name.len())
        } else {
            Lowered::Heap(name.to_lowercase())
        }
    }

    fn as_str(&self) -> &str {
        match self {
            Lowered::Same(name) => name,
            // Lower-cased ASCII is still ASCII, hence UTF-8.
            Lowered::Stack(buffer, len) => std::str::from_utf8(&buffer[..*len]).unwrap_or(""),
            Lowered::Heap(name) => name,
        }
    }
}

impl Graph {
    /// The scenarios of an event type, with their index.
    pub(super) fn bucket(&self, event_type: &str) -> Option<&TypeBucket> {
        self.by_type.get(Lowered::new(event_type).as_str())
    }

    /// Every scenario listening to an event type, in file order.
    pub(super) fn scenarios_for_type(&self, event_type: &str) -> &[u32] {
        self.bucket(event_type).map_or(&[], |bucket| &bucket.all)
    }

    fn run<T: Tracer>(&self, facts: &Facts<'_>, out: &mut Evaluation, tracer: &mut T) {
        // The event time is read in the programme's zone (`day_of_week()`, `hour()`).
        let facts = &facts.in_zone(&self.zone);
        let event = facts.event;
        out.clear();
        let Some(bucket) = self.bucket(&event.event_type) else { return };
        // The buffer is moved out and back so `out` stays free to write results into.
        let mut candidates = std::mem::take(&mut out.candidates);
        let scenarios = if T::TRACES { &bucket.all } else { bucket.candidates(event, &mut candidates) };
        let source = event.source.as_deref().map(Lowered::new);
        for &index in scenarios {
            let Some(scenario) = self.scenarios.get(index as usize) else { continue };
            if !scenario.sources.is_empty() {
                let accepted =
                    source.as_ref().is_some_and(|source| scenario.sources.iter().any(|s| **s == *source.as_str()));
                if !accepted {
                    tracer.scenario(scenario, ScenarioStatus::SkippedSource);
                    continue;
                }
            }
            if scenario.schedule.as_ref().is_some_and(|s| !s.contains(facts.at, &self.zone)) {
                tracer.scenario(scenario, ScenarioStatus::OutsideSchedule);
                continue;
            }
            tracer.scenario(scenario, ScenarioStatus::Entered);
            let before = out.planned.len();
            self.visit(&scenario.children, index, facts, out, tracer, 0);
            if out.planned.len() > before {
                out.matched.push(index);
            }
        }
        out.candidates = candidates;
    }

    fn visit<T: Tracer>(
        &self,
        nodes: &[GraphNode],
        scenario: u32,
        facts: &Facts<'_>,
        out: &mut Evaluation,
        tracer: &mut T,
        depth: usize,
    ) {
        for node in nodes {
            match node {
                GraphNode::Action(action) => {
                    if let Some(entry) = self.actions.get(*action as usize) {
                        tracer.action(*action, depth);
                        out.planned.push(PlannedAction { scenario, action: *action, plan: entry.action.plan(facts) });
                    }
                }
                GraphNode::Condition { condition, children } => {
                    let Some(entry) = self.conditions.get(*condition as usize) else { continue };
                    let truth = entry.program.truth_of(facts);
                    tracer.condition(entry, depth, truth);
                    match truth {
                        Truth::True => self.visit(children, scenario, facts, out, tracer, depth + 1),
                        Truth::False => tracer.pruned(children, depth + 1),
                        Truth::Unknown(u) => {
                            out.unknowns[u.reason.label_index()] += 1;
                            tracer.pruned(children, depth + 1);
                        }
                    }
                }
            }
        }
    }
}
