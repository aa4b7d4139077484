//! Stacking: of the scenarios of one `exclusive_group` that match an event, only the first in
//! evaluation order acts, and a scenario takes its group's place only when at least one of its
//! actions succeeded (a spent budget falls back to the next offer). Whether an action succeeds is
//! known only when it is applied (a ledger can refuse a deduction or a limit), so this runs
//! where outcomes are decided: inside a store's transaction, or over plans without a ledger.

use std::ops::Range;

use crate::actions::Outcome;

/// A planned action's scenario and that scenario's group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StackingKey {
    /// The scenario's index.
    pub scenario: u32,
    /// Its exclusive group, if any.
    pub group: Option<u32>,
}

/// What stacking decided.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stacked {
    /// One per planned action: its outcome, or `None` when its scenario was excluded (it was not
    /// applied at all).
    pub outcomes: Vec<Option<Outcome>>,
    /// Scenarios excluded, each with the scenario of its group that acted.
    pub excluded: Vec<(u32, u32)>,
}

impl Stacked {
    /// The scenario that excluded `scenario`, if it was excluded.
    pub fn excluded_by(&self, scenario: u32) -> Option<u32> {
        self.excluded.iter().find(|(s, _)| *s == scenario).map(|(_, by)| *by)
    }
}

/// Decides the outcome of each planned action in order (`keys`, one per action, grouped by
/// scenario as evaluation plans them), one scenario at a time: `decide` gets a scenario and the
/// range of its actions in `keys`, and pushes one outcome per action onto `outcomes`. It is
/// called only for scenarios that are not excluded; its first error stops it (a store's write
/// failed).
///
/// ```
/// use fluxflow::actions::{Failure, Outcome, Plan};
/// use fluxflow::graph::stacking::{StackingKey, stack};
/// let keys = [
///     StackingKey { scenario: 0, group: Some(0) },
///     StackingKey { scenario: 1, group: Some(0) },
///     StackingKey { scenario: 2, group: Some(0) },
/// ];
/// // The first offer fails (say, its budget is spent): the second acts, the third is excluded.
/// let decide = |scenario, _actions, outcomes: &mut Vec<Option<Outcome>>| {
///     outcomes.push(Some(match scenario {
///         0 => Outcome::Failed(Failure::NoActor),
///         _ => Outcome::Done(Plan::Nothing),
///     }));
///     Ok::<_, std::convert::Infallible>(())
/// };
/// let Ok(stacked) = stack(&keys, decide);
/// assert_eq!(stacked.excluded, [(2, 1)]);
/// assert_eq!(stacked.outcomes[2], None);
/// ```
pub fn stack<E>(
    keys: &[StackingKey],
    mut decide: impl FnMut(u32, Range<usize>, &mut Vec<Option<Outcome>>) -> Result<(), E>,
) -> Result<Stacked, E> {
    let mut stacked = Stacked { outcomes: Vec::with_capacity(keys.len()), excluded: Vec::new() };
    // (group, scenario that took it); groups per event are few.
    let mut taken: Vec<(u32, u32)> = Vec::new();
    let mut start = 0;
    while start < keys.len() {
        let key = keys[start];
        let end = start + keys[start..].iter().take_while(|k| k.scenario == key.scenario).count();
        match key.group.and_then(|g| taken.iter().find(|(group, _)| *group == g)) {
            Some(&(_, by)) => {
                stacked.excluded.push((key.scenario, by));
                stacked.outcomes.extend((start..end).map(|_| None));
            }
            None => {
                decide(key.scenario, start..end, &mut stacked.outcomes)?;
                if stacked.outcomes.len() != end {
                    // A decider that pushed too few or too many would shift every later outcome.
                    stacked.outcomes.resize(end, None);
                }
                let acted = stacked.outcomes[start..end].iter().flatten().any(Outcome::success);
                if let (Some(group), true) = (key.group, acted) {
                    taken.push((group, key.scenario));
                }
            }
        }
        start = end;
    }
    Ok(stacked)
}
