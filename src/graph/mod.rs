//! The compiled scenario graph: what a rules file becomes once it is checked, indexed by event
//! type so that an event only meets the scenarios that listen to its type.

mod evaluate;
mod index;
pub mod limits;
pub mod stacking;
pub mod trace;

use rustc_hash::FxHashMap;
use std::path::Path;
use std::sync::Arc;

use sha2::{Digest, Sha256};

pub use evaluate::{Evaluation, PlannedAction};
pub use limits::ScenarioLimits;
pub use stacking::{Stacked, StackingKey};
pub use trace::Trace;

use crate::actions::{Action, ActionRegistry};
use crate::calendar::{Schedule, Zone};
use crate::expr::compiler::HistoryRead;
use crate::expr::{Program, Purpose};
use crate::ledger::member::SumKey;
use crate::rules::loyalty::Programme;
use crate::rules::{self, Child, Diagnostic, Diagnostics, RulesFile, Severity};

/// A rules file, checked and compiled, with what is needed to show it.
pub struct Rules {
    /// The file as read (for `GET /v1/rules`).
    pub file: RulesFile,
    /// SHA-256 of the file's bytes, hex.
    pub hash: String,
    /// Warnings found while loading.
    pub warnings: Vec<Diagnostic>,
    graph: Graph,
    /// The file's programme, shared with the ledger's writes that read tiers.
    programme: Arc<Programme>,
}

/// Why a rules file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The file has errors; every problem (warnings too) is listed.
    #[error("{} error(s) in the rules file", .0.iter().filter(|d| d.severity == Severity::Error).count())]
    Invalid(Vec<Diagnostic>),
}

impl Rules {
    /// Reads, checks and compiles a rules file.
    pub fn load_path(path: &Path, registry: &ActionRegistry) -> Result<Rules, LoadError> {
        let source = std::fs::read_to_string(path)
            .map_err(|source| LoadError::Io { path: path.display().to_string(), source })?;
        Rules::load_str(&source, registry)
    }

    /// Checks and compiles a rules file's text.
    ///
    /// ```
    /// use fluxflow::actions::ActionRegistry;
    /// use fluxflow::graph::Rules;
    /// let rules = Rules::load_str("version: v1\nscenarios: []\n", &ActionRegistry::builtin()).unwrap();
    /// assert_eq!(rules.scenario_count(), 0);
    /// ```
    pub fn load_str(source: &str, registry: &ActionRegistry) -> Result<Rules, LoadError> {
        let mut diags = Diagnostics::default();
        let file = rules::read(source, &mut diags);
        let graph = Graph::compile(&file, registry, &mut diags);
        let has_errors = diags.has_errors();
        let all = diags.into_sorted();
        if has_errors {
            return Err(LoadError::Invalid(all));
        }
        let hash = Sha256::digest(source.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
        let programme = Arc::new(file.programme.clone());
        Ok(Rules { file, hash, warnings: all, graph, programme })
    }

    /// Enabled scenarios that were compiled.
    pub fn scenario_count(&self) -> usize {
        self.graph.scenarios.len()
    }

    /// The id of a scenario, by index.
    pub fn scenario_id(&self, index: u32) -> &str {
        self.graph.scenarios.get(index as usize).map_or("", |s| s.id.as_str())
    }

    /// The exclusive group of a scenario, by id (for traces).
    pub fn group_of(&self, scenario_id: &str) -> Option<u32> {
        self.graph.scenarios.iter().find(|s| s.id == scenario_id).and_then(|s| s.group)
    }

    /// What stacking needs of each planned action of an evaluation, in order: its scenario and
    /// that scenario's exclusive group.
    pub fn stacking_keys(&self, evaluation: &Evaluation) -> Vec<StackingKey> {
        let key = |planned: &PlannedAction| {
            let group = self.graph.scenarios.get(planned.scenario as usize).and_then(|s| s.group);
            StackingKey { scenario: planned.scenario, group }
        };
        evaluation.planned.iter().map(key).collect()
    }

    /// The limits of the scenarios that planned actions in an evaluation, in evaluation order
    /// (empty, without allocating, when none has limits).
    pub fn limits_of(&self, evaluation: &Evaluation) -> Vec<Arc<ScenarioLimits>> {
        let limited = |&scenario: &u32| self.graph.scenarios.get(scenario as usize)?.limits.clone();
        evaluation.matched.iter().filter_map(limited).collect()
    }

    /// The programme: zone, points' terms, tiers.
    pub fn programme(&self) -> &Arc<Programme> {
        &self.programme
    }

    /// True when a scenario listening to this event type reads the actor's state before the
    /// event: such events are evaluated inside the ledger's transaction.
    pub fn reads_member(&self, event_type: &str) -> bool {
        self.graph.reads_member
            && self
                .graph
                .scenarios_for_type(event_type)
                .iter()
                .any(|&i| self.graph.scenarios.get(i as usize).is_some_and(|s| s.reads_member))
    }

    /// True when evaluating an event may hold its thread for a while (an action that blocks,
    /// which only the test suite has): such events always run on a task of their own, under the
    /// event timeout.
    pub fn may_block(&self) -> bool {
        self.graph.may_block
    }

    /// The event types (lower-cased, sorted) whose member history the rules read: the ledger
    /// indexes the history of these types.
    pub fn history_types(&self) -> &[String] {
        &self.graph.history_types
    }

    /// The (event type, payload path) pairs whose sums the rules read (`sum()`), sorted: a
    /// store may keep counters of them.
    pub fn history_sums(&self) -> &[SumKey] {
        &self.graph.history_sums
    }

    /// The campaign budgets (scenario ids) of the scenarios listening to this event type.
    pub fn budgets_for(&self, event_type: &str) -> Vec<String> {
        let scenarios = self.graph.scenarios_for_type(event_type).iter();
        let limits = scenarios.filter_map(|&i| self.graph.scenarios.get(i as usize)?.limits.as_deref());
        limits.filter(|l| l.has_budget()).map(|l| l.scenario_id.clone()).collect()
    }

    /// The limits of a scenario, by index, when it has any.
    pub fn scenario_limits(&self, index: u32) -> Option<&ScenarioLimits> {
        self.graph.scenarios.get(index as usize)?.limits.as_deref()
    }

    /// Every compiled action, by index.
    pub fn actions(&self) -> impl Iterator<Item = &ActionEntry> {
        self.graph.actions.iter()
    }

    /// Where the rules' `webhook_notify` actions deliver.
    pub fn notifications(&self) -> Vec<Arc<crate::actions::webhook_notify::Notification>> {
        self.actions().filter_map(|entry| entry.action.notification()).collect()
    }

    /// An action, by index.
    pub fn action(&self, index: u32) -> Option<&ActionEntry> {
        self.graph.actions.get(index as usize)
    }

    /// A new, empty evaluation buffer sized for these rules.
    pub fn new_evaluation(&self) -> Evaluation {
        Evaluation::with_capacity(self.graph.scenarios.len().min(64), self.graph.actions.len().min(256))
    }
}

/// A compiled action and where it sits.
#[derive(Debug)]
pub struct ActionEntry {
    /// The action's id.
    pub id: String,
    /// Its `type:`.
    pub action_type: String,
    /// The compiled action.
    pub action: Box<dyn Action>,
}

struct ConditionEntry {
    id: String,
    program: Program,
}

enum GraphNode {
    Condition { condition: u32, children: Box<[GraphNode]> },
    Action(u32),
}

struct CompiledScenario {
    id: String,
    /// Lower-cased; empty means any source.
    sources: Box<[Box<str>]>,
    /// When it is considered; always, when absent.
    schedule: Option<Schedule>,
    /// Its exclusive group, by index into [`Graph::groups`].
    group: Option<u32>,
    /// Its limits, when it has any.
    limits: Option<Arc<ScenarioLimits>>,
    /// True when a condition or action of it reads the actor's state before the event.
    reads_member: bool,
    children: Box<[GraphNode]>,
}

struct Graph {
    /// Enabled scenarios in evaluation order: descending priority, ties in file order.
    scenarios: Vec<CompiledScenario>,
    /// The programme's zone, for schedules.
    zone: Zone,
    /// Names of the exclusive groups.
    groups: Vec<String>,
    /// Lower-cased event type → enabled scenarios listening to it, in file order, indexed.
    by_type: FxHashMap<Box<str>, index::TypeBucket>,
    conditions: Vec<ConditionEntry>,
    actions: Vec<ActionEntry>,
    /// Ids of scenarios that are not enabled, for traces.
    disabled: Vec<String>,
    /// True when some enabled scenario reads the actor's state (most files: none, and events
    /// skip the lookup).
    reads_member: bool,
    /// True when an action's plan may hold its thread ([`crate::actions::Action::blocks`]).
    may_block: bool,
    /// The event types (lower-cased, sorted) whose member history enabled scenarios read.
    history_types: Vec<String>,
    history_sums: Vec<SumKey>,
}

impl Graph {
    /// Compiles every scenario (disabled ones too, so their mistakes are found before they are
    /// switched on); only enabled scenarios join the graph.
    fn compile(file: &RulesFile, registry: &ActionRegistry, diags: &mut Diagnostics) -> Graph {
        let mut graph = Graph {
            scenarios: Vec::new(),
            by_type: FxHashMap::default(),
            conditions: Vec::new(),
            actions: Vec::new(),
            disabled: Vec::new(),
            zone: file.programme.timezone.clone(),
            groups: Vec::new(),
            reads_member: false,
            may_block: false,
            history_types: Vec::new(),
            history_sums: Vec::new(),
        };
        let mut by_type: FxHashMap<Box<str>, Vec<u32>> = FxHashMap::default();
        // A stable sort: equal priorities keep file order.
        let mut in_order: Vec<&rules::Scenario> = file.scenarios.iter().collect();
        in_order.sort_by_key(|s| std::cmp::Reverse(s.priority));
        for scenario in in_order {
            let children = graph.compile_children(&scenario.children, registry, diags);
            if !scenario.enabled {
                graph.disabled.push(scenario.id.clone());
                continue;
            }
            let group = scenario.exclusive_group.as_deref().map(|name| graph.group_index(name));
            let index = u32::try_from(graph.scenarios.len()).unwrap_or(u32::MAX);
            for event_type in &scenario.event_types {
                let list = by_type.entry(event_type.to_lowercase().into()).or_default();
                if list.last() != Some(&index) {
                    list.push(index);
                }
            }
            graph.scenarios.push(CompiledScenario {
                id: scenario.id.clone(),
                sources: scenario.sources.iter().map(|s| s.to_lowercase().into()).collect(),
                schedule: scenario.schedule.as_ref().map(|s| s.0.clone()),
                group,
                limits: (!scenario.limits.is_empty()).then(|| {
                    Arc::new(ScenarioLimits {
                        scenario: index,
                        scenario_id: scenario.id.clone(),
                        limits: scenario.limits.as_slice().into(),
                        zone: file.programme.timezone.clone(),
                    })
                }),
                reads_member: graph.reads_member(&children),
                children,
            });
        }
        graph.reads_member = graph.scenarios.iter().any(|s| s.reads_member);
        graph.may_block = graph.actions.iter().any(|a| a.action.blocks());
        let mut reads = Vec::new();
        for scenario in &graph.scenarios {
            graph.history_reads(&scenario.children, &mut reads);
        }
        graph.history_types = reads.iter().map(|r| r.event_type.clone()).collect();
        graph.history_types.sort_unstable();
        graph.history_types.dedup();
        graph.history_sums =
            reads.into_iter().filter_map(|r| r.sum.map(|path| SumKey::new(&r.event_type, &path))).collect();
        graph.history_sums.sort_unstable();
        graph.history_sums.dedup();
        graph.by_type = by_type
            .into_iter()
            .map(|(k, v)| (k, index::TypeBucket::new(v, &graph.scenarios, &graph.conditions)))
            .collect();
        graph
    }

    /// True when a node of the tree reads the actor's state before the event.
    fn reads_member(&self, nodes: &[GraphNode]) -> bool {
        nodes.iter().any(|node| match node {
            GraphNode::Action(action) => self.actions.get(*action as usize).is_some_and(|a| a.action.reads_member()),
            GraphNode::Condition { condition, children } => {
                self.conditions.get(*condition as usize).is_some_and(|c| c.program.reads_member())
                    || self.reads_member(children)
            }
        })
    }

    /// Adds what of the member's history a tree reads.
    fn history_reads(&self, nodes: &[GraphNode], out: &mut Vec<HistoryRead>) {
        for node in nodes {
            match node {
                GraphNode::Action(action) => {
                    if let Some(entry) = self.actions.get(*action as usize) {
                        entry.action.history_reads(out);
                    }
                }
                GraphNode::Condition { condition, children } => {
                    if let Some(entry) = self.conditions.get(*condition as usize) {
                        entry.program.history_reads(out);
                    }
                    self.history_reads(children, out);
                }
            }
        }
    }

    /// The index of an exclusive group, added when new.
    fn group_index(&mut self, name: &str) -> u32 {
        let index = self.groups.iter().position(|g| g == name).unwrap_or_else(|| {
            self.groups.push(name.to_owned());
            self.groups.len() - 1
        });
        u32::try_from(index).unwrap_or(u32::MAX)
    }

    fn compile_children(
        &mut self,
        children: &[Child],
        registry: &ActionRegistry,
        diags: &mut Diagnostics,
    ) -> Box<[GraphNode]> {
        let mut nodes = Vec::with_capacity(children.len());
        for child in children {
            match child {
                Child::Condition(condition) => {
                    let what = format!("condition `{}`", condition.id);
                    let program = rules::compile_expression(&condition.expression, Purpose::Condition, &what, diags);
                    let children = self.compile_children(&condition.children, registry, diags);
                    if let Some(program) = program {
                        let index = u32::try_from(self.conditions.len()).unwrap_or(u32::MAX);
                        self.conditions.push(ConditionEntry { id: condition.id.clone(), program });
                        nodes.push(GraphNode::Condition { condition: index, children });
                    }
                }
                Child::Action(def) => {
                    let Some(kind) = registry.get(&def.action_type) else {
                        let hint = rules::schema::suggestion(&def.action_type, &registry.names());
                        diags.error(
                            def.type_pos,
                            format!("action `{}` has unknown type `{}`{hint}", def.id, def.action_type),
                        );
                        continue;
                    };
                    if let Some(action) = kind.compile(def, diags) {
                        let index = u32::try_from(self.actions.len()).unwrap_or(u32::MAX);
                        self.actions.push(ActionEntry {
                            id: def.id.clone(),
                            action_type: def.action_type.clone(),
                            action,
                        });
                        nodes.push(GraphNode::Action(index));
                    }
                }
            }
        }
        nodes.into_boxed_slice()
    }
}
