//! Operations on a member's points outside the rules, for shops and support staff: redeem
//! points at the till, adjust a balance by hand, cancel a redemption. Like events,
//! each is written once for every store over [`LedgerTx`], and each is idempotent: its `id`
//! (a namespace of its own per member, not event ids) answers the stored answer when the same
//! request comes again, and a conflict when another request used it.
//!
//! Points are spent like a deduction spends them (the soonest-expiring spendable lots first,
//! [`super::lots`]); a redemption remembers what it took from each lot, so a cancellation gives
//! the points back to those lots (as one `cancel` entry).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::lots::{self, Terms};
use super::tx::{LedgerTx, NewEntry, NewLot};
use super::{Entry, EntryKind, Fingerprint, LedgerError, broken, rfc3339};

/// What an operation does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Operation {
    /// Spend points, as a deduction: refused when the balance cannot cover them.
    Redeem {
        /// Points to spend, at least 1.
        points: i64,
        /// Why, for the ledger.
        reason: Option<String>,
    },
    /// Add points (spendable at once), or take them away as a deduction would.
    Adjust {
        /// Signed points, never 0.
        points: i64,
        /// Why, for the ledger.
        reason: String,
        /// Days until added points expire, when given.
        expiry_days: Option<u32>,
    },
    /// Give a redemption's points back.
    Cancel {
        /// The `id` of the redemption.
        redemption_id: String,
    },
}

impl Operation {
    fn kind(&self) -> EntryKind {
        match self {
            Operation::Redeem { .. } => EntryKind::Redeem,
            Operation::Adjust { .. } => EntryKind::Adjust,
            Operation::Cancel { .. } => EntryKind::Cancel,
        }
    }
}

/// One operation on one member's points.
#[derive(Debug, Clone)]
pub struct OperationRequest {
    /// The member.
    pub actor_id: String,
    /// The idempotency key, per member.
    pub request_id: String,
    /// What to do.
    pub operation: Operation,
    /// The programme's expiry days (0: never), for an adjustment that gives none.
    pub default_expiry_days: u32,
}

impl OperationRequest {
    /// The content's fingerprint: the same id with another content is a conflict.
    pub fn fingerprint(&self) -> Fingerprint {
        let bytes = serde_json::to_vec(&self.operation).unwrap_or_default();
        Sha256::digest(&bytes).into()
    }
}

/// The answer to an operation: the entry it wrote and the balance after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperationAnswer {
    /// The ledger entry written.
    pub entry: Entry,
    /// The member's balance after it.
    pub balance: i64,
    /// True when this is the stored answer of an earlier request with the same id.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replayed: bool,
}

/// What became of an operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OperationOutcome {
    /// Written now.
    Done(OperationAnswer),
    /// The id was used before by the same request: its stored answer.
    Replayed(OperationAnswer),
    /// The id was used before by another request: nothing written.
    Conflict,
    /// The balance cannot cover the points: nothing written.
    InsufficientBalance {
        /// Points asked for.
        wanted: i64,
        /// The member's balance.
        balance: i64,
    },
    /// A cancellation of a redemption the member does not have: nothing written.
    NoSuchRedemption,
    /// A cancellation of a redemption cancelled before under another id: nothing written.
    AlreadyCancelled {
        /// The id of the cancellation that gave its points back.
        by: String,
    },
}

/// An operation stored under its id.
#[derive(Debug, Clone)]
pub struct StoredOperation {
    /// The content's fingerprint.
    pub fingerprint: Fingerprint,
    /// Its kind.
    pub kind: EntryKind,
    /// The signed points it moved.
    pub points: i64,
    /// The answer, as JSON.
    pub answer: String,
    /// For a redemption: the id of the cancellation that gave its points back.
    pub cancelled_by: Option<String>,
}

/// An operation to store once its entry is written.
#[derive(Debug, Clone, Copy)]
pub struct NewOperation<'a> {
    /// The member.
    pub actor_id: &'a str,
    /// The idempotency key.
    pub request_id: &'a str,
    /// Its content's fingerprint.
    pub fingerprint: &'a Fingerprint,
    /// Its kind.
    pub kind: EntryKind,
    /// The signed points it moved.
    pub points: i64,
    /// The answer, as JSON.
    pub answer: &'a str,
    /// When it was applied (µs since the epoch).
    pub applied_at: i64,
}

/// The steps an operation needs beyond an event's: the stores that take operations (SQLite and
/// PostgreSQL; simulations take none) offer them inside the same transaction.
pub trait OperationTx: LedgerTx {
    /// The operation stored under a member's id, if any.
    fn find_operation(&mut self, actor_id: &str, request_id: &str) -> Result<Option<StoredOperation>, LedgerError>;
    /// Stores an applied operation with its answer.
    fn save_operation(&mut self, operation: &NewOperation<'_>) -> Result<(), LedgerError>;
    /// Records which cancellation gave a redemption's points back.
    fn mark_cancelled(&mut self, actor_id: &str, redemption_id: &str, by: &str) -> Result<(), LedgerError>;
    /// The id of the member's newest entry (the one just appended: the member is locked).
    fn last_entry_id(&mut self, actor_id: &str) -> Result<i64, LedgerError>;
}

/// Applies one operation inside a store's transaction, at `now` (µs since the epoch).
pub fn apply<T: OperationTx + ?Sized>(
    tx: &mut T,
    request: &OperationRequest,
    now: i64,
) -> Result<OperationOutcome, LedgerError> {
    let fingerprint = request.fingerprint();
    let actor = request.actor_id.as_str();
    if let Some(stored) = tx.find_operation(actor, &request.request_id)? {
        if stored.fingerprint != fingerprint {
            return Ok(OperationOutcome::Conflict);
        }
        let mut answer: OperationAnswer = serde_json::from_str(&stored.answer).map_err(broken)?;
        answer.replayed = true;
        return Ok(OperationOutcome::Replayed(answer));
    }
    let balance_now = |tx: &mut T| -> Result<i64, LedgerError> {
        let book = tx.book(actor)?;
        lots::spendable(tx, actor, book, now)
    };
    let book = lots::bring_up_to(tx, actor, now, now)?;
    let (points, reason) = match &request.operation {
        Operation::Redeem { points, reason } => (-points, reason.clone()),
        Operation::Adjust { points, reason, .. } => (*points, Some(reason.clone())),
        Operation::Cancel { redemption_id } => match tx.find_operation(actor, redemption_id)? {
            Some(redemption) if redemption.kind == EntryKind::Redeem => match redemption.cancelled_by {
                Some(by) => return Ok(OperationOutcome::AlreadyCancelled { by }),
                None => (-redemption.points, Some(format!("cancels redemption {redemption_id}"))),
            },
            _ => return Ok(OperationOutcome::NoSuchRedemption),
        },
    };
    let expiry_days = match &request.operation {
        Operation::Adjust { expiry_days, .. } => expiry_days.unwrap_or(request.default_expiry_days),
        _ => 0,
    };
    let (_, expires_at) = Terms { pending_days: 0, expiry_days }.dates(now);
    let expires_at = expires_at.filter(|_| points > 0);
    if points < 0 {
        let (spendable, wanted) = (lots::spendable(tx, actor, book, now)?, points.saturating_neg());
        if spendable < wanted {
            return Ok(OperationOutcome::InsufficientBalance { wanted, balance: spendable });
        }
        let taken = lots::take(tx, actor, wanted, now)?;
        if matches!(request.operation, Operation::Redeem { .. }) && !taken.is_empty() {
            tx.record_spent(actor, &request.request_id, &taken)?;
        }
    }
    let kind = request.operation.kind();
    let new_entry = NewEntry {
        actor_id: actor,
        event_id: &request.request_id,
        action_id: "",
        scenario_id: "",
        points,
        kind,
        reason: reason.as_deref(),
        created_at: now,
        dated_at: now,
        available_at: None,
        expires_at,
        reverses: None,
    };
    tx.append(&new_entry)?;
    let entry_id = tx.last_entry_id(actor)?;
    // Points go back to the lots a cancelled redemption took them from; the rest were plain.
    let to_lots = match &request.operation {
        Operation::Cancel { redemption_id } => lots::give_back(tx, actor, redemption_id)?,
        _ => 0,
    };
    if points > to_lots {
        let lot = NewLot {
            actor_id: actor,
            source_id: &request.request_id,
            points: points - to_lots,
            available_at: now,
            expires_at,
        };
        lots::grant(tx, book, lot, now)?;
    }
    if to_lots > 0 {
        // A lot given back after it expired is written off again.
        lots::bring_up_to(tx, actor, now, now)?;
    }
    let entry = Entry {
        entry_id,
        actor_id: actor.to_owned(),
        event_id: request.request_id.clone(),
        action_id: String::new(),
        scenario_id: String::new(),
        points,
        kind,
        reason,
        created_at: rfc3339(now),
        dated_at: rfc3339(now),
        available_at: None,
        expires_at: expires_at.map(rfc3339),
        reverses: None,
    };
    let answer = OperationAnswer { entry, balance: balance_now(tx)?, replayed: false };
    let json = serde_json::to_string(&answer).map_err(broken)?;
    tx.save_operation(&NewOperation {
        actor_id: actor,
        request_id: &request.request_id,
        fingerprint: &fingerprint,
        kind,
        points,
        answer: &json,
        applied_at: now,
    })?;
    if let Operation::Cancel { redemption_id } = &request.operation {
        tx.mark_cancelled(actor, redemption_id, &request.request_id)?;
    }
    Ok(OperationOutcome::Done(answer))
}
