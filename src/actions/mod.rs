//! Actions: what a rule does when it fires.
//!
//! An action type is one file implementing [`ActionKind`] (check the params at load, build an
//! [`Action`]) and one line in [`ActionRegistry::builtin`]. At evaluation an action *plans* its
//! effect without allocating; the engine applies the plan (to the ledger, later to webhooks) and
//! asks the action to describe the outcome in words.

pub mod reverse_points;
pub mod reward_points;
#[cfg(feature = "test-support")]
pub mod test_sleep;
pub mod webhook_notify;

use std::fmt;

use crate::event::Event;
use crate::expr::Unknown;
use crate::facts::Facts;
use crate::rules::loyalty::Limit;
use crate::rules::{ActionDef, Diagnostics};

/// A kind of action, as named by `type:` in the rules file.
pub trait ActionKind: Send + Sync {
    /// The `type:` value.
    fn type_name(&self) -> &'static str;
    /// Checks an action's params, reporting every problem; builds the action when they are valid.
    fn compile(&self, def: &ActionDef, diags: &mut Diagnostics) -> Option<Box<dyn Action>>;
}

/// A compiled action, ready to plan.
pub trait Action: Send + Sync + fmt::Debug {
    /// Decides what the action would do for an event, given its facts. Must not allocate.
    fn plan(&self, facts: &Facts<'_>) -> Plan;
    /// The message for a result: what was done, or why it failed.
    fn message(&self, outcome: &Outcome, event: &Event) -> String;
    /// True when the action's plan reads the actor's state before the event (a member function
    /// in a formula): it is then planned inside the ledger's transaction.
    fn reads_member(&self) -> bool {
        false
    }
    /// True when planning the action holds its thread for a while (only `test_sleep`): events
    /// of such rules are never evaluated on their caller's task ([`crate::graph::Rules::may_block`]).
    fn blocks(&self) -> bool {
        false
    }
    /// Adds what of the member's history the action's plan reads.
    fn history_reads(&self, _out: &mut Vec<crate::expr::compiler::HistoryRead>) {}
    /// The reason written on the action's ledger entries.
    fn ledger_reason(&self) -> Option<&str> {
        None
    }
    /// For an action that plans [`Plan::Reverse`]: what to reverse for this event.
    fn reversal(&self, _event: &Event) -> Option<Reversal> {
        None
    }
    /// For an action that plans [`Plan::Notify`]: where the delivery goes.
    fn notification(&self) -> Option<std::sync::Arc<webhook_notify::Notification>> {
        None
    }
}

/// What a reversal asks of the ledger, beyond the points it takes back (which the ledger
/// decides from what the original awarded).
#[derive(Debug, Clone)]
pub struct Reversal {
    /// The event to reverse.
    pub original_id: String,
    /// The share to take back, evaluated with the original; `None` is all of it.
    pub ratio: Option<std::sync::Arc<crate::expr::Program>>,
}

/// What an action means to do.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Plan {
    /// Change a member's points balance.
    Points(PointsChange),
    /// Take back points an earlier event awarded (`reverse_points`): the ledger decides how
    /// many ([`Action::reversal`] says what to reverse).
    Reverse,
    /// Queue a webhook delivery in the ledger's outbox, with the event ([`Action::notification`]
    /// says where it goes).
    Notify,
    /// Succeed without an effect on the ledger.
    Nothing,
    /// The action cannot run for this event.
    Failed(Failure),
}

/// A change to a member's points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PointsChange {
    /// Signed whole points: positive for an award, negative for a deduction.
    pub amount: i64,
    /// Days until awarded points expire once spendable (0: never), when the rule says;
    /// otherwise the programme's.
    pub expiry_days: Option<u32>,
    /// Days before awarded points can be spent (0: at once), when the rule says; otherwise the
    /// programme's.
    pub pending_days: Option<u32>,
}

impl PointsChange {
    /// A change of `amount` points on the programme's terms.
    pub fn of(amount: i64) -> PointsChange {
        PointsChange { amount, expiry_days: None, pending_days: None }
    }
}

/// Why an action could not run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Failure {
    /// The event has no `actor_id`.
    NoActor,
    /// The formula's value is unknown.
    FormulaUnknown(Unknown),
    /// The formula's value is infinite or not a number.
    FormulaNotFinite,
    /// The formula's value rounds to less than one point.
    FormulaBelowOne(f64),
    /// A reversal could not be made.
    Reversal(ReversalFailure),
    /// A webhook cannot be queued: there is no ledger to hold the outbox (`--ledger none`).
    NoOutbox,
}

/// Why a reversal could not be made.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ReversalFailure {
    /// The event has no original id at the action's `original` path.
    NoOriginalId,
    /// No event has that id, or it is another actor's.
    OriginalNotFound,
    /// What the original awarded was taken back already, or expired.
    NothingToReverse,
    /// The ratio has no value.
    RatioUnknown(Unknown),
    /// The ratio is not in [0, 1].
    RatioOutOfRange(f64),
}

/// The code of a reversal whose original is unknown or another actor's.
pub const ORIGINAL_NOT_FOUND: &str = "original_not_found";
/// The code of a reversal with nothing left to take back.
pub const NOTHING_TO_REVERSE: &str = "nothing_to_reverse";

/// The code of an action a limit of its scenario refused (`"code"` in results).
pub const LIMIT_REACHED: &str = "limit_reached";

/// What happened when a plan was applied.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Outcome {
    /// The plan was carried out.
    Done(Plan),
    /// The plan could not be made.
    Failed(Failure),
    /// A deduction was refused: the balance is lower than the amount.
    InsufficientBalance {
        /// Points the action wanted to deduct.
        wanted: i64,
        /// The member's balance.
        balance: i64,
    },
    /// A limit of the scenario was reached: nothing was done.
    LimitReached(Limit),
    /// Points taken back by a reversal.
    Reversed {
        /// Points taken (the balance falls by this much).
        taken: i64,
        /// Points it could not collect (`negative_balance: deny`).
        uncollected: i64,
    },
    /// An award cut to what a `points` limit left (`change` is what was awarded).
    Capped {
        /// The points awarded.
        change: PointsChange,
        /// The limit that cut it.
        limit: Limit,
    },
}

impl Outcome {
    /// The outcome of a plan applied without a ledger.
    pub fn of_plan(plan: Plan) -> Outcome {
        match plan {
            Plan::Failed(f) => Outcome::Failed(f),
            // Without a ledger no earlier event is known.
            Plan::Reverse => Outcome::Failed(Failure::Reversal(ReversalFailure::OriginalNotFound)),
            // Nor is there an outbox for a delivery to wait in.
            Plan::Notify => Outcome::Failed(Failure::NoOutbox),
            done => Outcome::Done(done),
        }
    }

    /// The stable code of a failure (`"code"` in results); `None` for a success.
    pub fn code(&self) -> Option<&'static str> {
        match self {
            Outcome::Done(_) => None,
            Outcome::Failed(Failure::NoActor) => Some("no_actor"),
            Outcome::Failed(Failure::NoOutbox) => Some("no_outbox"),
            Outcome::Failed(Failure::Reversal(failure)) => match failure {
                ReversalFailure::NoOriginalId | ReversalFailure::OriginalNotFound => Some(ORIGINAL_NOT_FOUND),
                ReversalFailure::NothingToReverse => Some(NOTHING_TO_REVERSE),
                ReversalFailure::RatioUnknown(_) | ReversalFailure::RatioOutOfRange(_) => Some("formula_invalid"),
            },
            Outcome::Failed(_) => Some("formula_invalid"),
            Outcome::InsufficientBalance { .. } => Some("insufficient_balance"),
            Outcome::LimitReached(_) => Some(LIMIT_REACHED),
            Outcome::Capped { .. } | Outcome::Reversed { .. } => None,
        }
    }

    /// True when the action did what it meant to.
    pub fn success(&self) -> bool {
        matches!(self, Outcome::Done(_) | Outcome::Capped { .. } | Outcome::Reversed { .. })
    }

    /// The signed points moved, for a successful points action.
    pub fn points(&self) -> Option<i64> {
        match self {
            Outcome::Done(Plan::Points(change)) | Outcome::Capped { change, .. } => Some(change.amount),
            Outcome::Reversed { taken, .. } => Some(-taken),
            _ => None,
        }
    }
}

/// The action types this engine knows.
pub struct ActionRegistry {
    kinds: Vec<Box<dyn ActionKind>>,
}

impl ActionRegistry {
    /// A registry with no types.
    pub fn empty() -> Self {
        ActionRegistry { kinds: Vec::new() }
    }

    /// The built-in types.
    pub fn builtin() -> Self {
        let mut registry = ActionRegistry::empty();
        registry.register(Box::new(reward_points::RewardPoints));
        registry.register(Box::new(reverse_points::ReversePoints));
        registry.register(Box::new(webhook_notify::WebhookNotify));
        #[cfg(feature = "test-support")]
        registry.register(Box::new(test_sleep::TestSleep));
        registry
    }

    /// Adds a type; a later registration of the same name replaces the earlier.
    pub fn register(&mut self, kind: Box<dyn ActionKind>) {
        self.kinds.retain(|k| k.type_name() != kind.type_name());
        self.kinds.push(kind);
    }

    /// The type of that name.
    pub fn get(&self, name: &str) -> Option<&dyn ActionKind> {
        self.kinds.iter().find(|k| k.type_name() == name).map(|k| k.as_ref())
    }

    /// The names of all types, for messages.
    pub fn names(&self) -> Vec<&'static str> {
        self.kinds.iter().map(|k| k.type_name()).collect()
    }
}

impl Default for ActionRegistry {
    fn default() -> Self {
        ActionRegistry::builtin()
    }
}
