//! The equality index: within an event type, scenarios guarded by `path == 'constant'` are
//! looked up by the event's value at that path instead of being tried one by one.
//!
//! A scenario is guarded when its only top-level child is a condition that is, or begins with
//! (`... AND ...`), an equality between a path and a string literal. When the event's value at
//! that path is present, every scenario whose constant differs would evaluate that condition to
//! false and fire nothing, so skipping them changes no result and no metric. When the value is
//! missing, the guarded scenarios are all evaluated as usual (their unknowns are counted).

use rustc_hash::FxHashMap;

use super::{CompiledScenario, ConditionEntry, GraphNode};
use crate::event::Event;
use crate::expr::Val;
use crate::expr::ast::Path;
use crate::expr::eval::resolve;

/// Scenarios of one event type, in file order, with their equality index.
#[derive(Default)]
pub(super) struct TypeBucket {
    /// Every scenario of the type (traces walk them all).
    pub(super) all: Box<[u32]>,
    /// Scenarios without a guard.
    unguarded: Box<[u32]>,
    /// One index per guarded path.
    guards: Box<[Guard]>,
}

struct Guard {
    path: Path,
    /// Every scenario guarded by this path (evaluated when the event lacks the path).
    all: Box<[u32]>,
    by_value: FxHashMap<Box<str>, Box<[u32]>>,
}

/// A [`Guard`] while it is built.
struct GuardBuilder {
    path: Path,
    all: Vec<u32>,
    by_value: FxHashMap<Box<str>, Vec<u32>>,
}

/// Below this many scenarios in a type, trying each is cheaper than looking them up.
const INDEX_MIN_SCENARIOS: usize = 16;

impl TypeBucket {
    /// Builds the bucket of these scenarios (file order).
    pub(super) fn new(
        scenarios: Vec<u32>,
        graph_scenarios: &[CompiledScenario],
        conditions: &[ConditionEntry],
    ) -> Self {
        if scenarios.len() < INDEX_MIN_SCENARIOS {
            return TypeBucket { all: scenarios.into_boxed_slice(), ..TypeBucket::default() };
        }
        let mut unguarded = Vec::new();
        let mut guards: Vec<GuardBuilder> = Vec::new();
        for &index in &scenarios {
            let guard = graph_scenarios.get(index as usize).and_then(|s| guard_of(s, conditions));
            let Some((path, value)) = guard else {
                unguarded.push(index);
                continue;
            };
            let position = match guards.iter().position(|g| g.path == *path) {
                Some(position) => position,
                None => {
                    guards.push(GuardBuilder { path: path.clone(), all: Vec::new(), by_value: FxHashMap::default() });
                    guards.len() - 1
                }
            };
            let guard = &mut guards[position];
            guard.all.push(index);
            guard.by_value.entry(value.into()).or_default().push(index);
        }
        TypeBucket {
            all: scenarios.into_boxed_slice(),
            unguarded: unguarded.into_boxed_slice(),
            guards: guards
                .into_iter()
                .map(|g| Guard {
                    path: g.path,
                    all: g.all.into_boxed_slice(),
                    by_value: g.by_value.into_iter().map(|(k, v)| (k, v.into_boxed_slice())).collect(),
                })
                .collect(),
        }
    }

    /// The scenarios worth evaluating for this event, in file order, written into `out`.
    pub(super) fn candidates<'a>(&'a self, event: &Event, out: &'a mut Vec<u32>) -> &'a [u32] {
        if self.guards.is_empty() {
            return &self.all;
        }
        out.clear();
        out.extend_from_slice(&self.unguarded);
        for guard in self.guards.iter() {
            match resolve(&guard.path, event) {
                None => out.extend_from_slice(&guard.all),
                Some(Val::Str(value)) => {
                    if let Some(matching) = guard.by_value.get(value) {
                        out.extend_from_slice(matching);
                    }
                }
                // A number, boolean, null, array or object never equals a non-numeric string.
                Some(_) => {}
            }
        }
        out.sort_unstable();
        out
    }
}

/// The guard of a scenario: its only top-level child is a condition that requires
/// `path == 'text'`.
fn guard_of<'a>(scenario: &CompiledScenario, conditions: &'a [ConditionEntry]) -> Option<(&'a Path, &'a str)> {
    match &*scenario.children {
        [GraphNode::Condition { condition, .. }] => conditions.get(*condition as usize)?.program.equality_guard(),
        _ => None,
    }
}
