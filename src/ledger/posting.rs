//! What an event does to the books, written once for every store: the idempotency check, the
//! overdraft rule, the entries, the stored result and the batch job's bookkeeping. Stores run it
//! inside their own transactions ([`super::tx::LedgerTx`]); the simulator and rule tests run it
//! over an in-memory overlay ([`super::memory::Overlay`]).

use super::tx::{LedgerTx, NewEntry, NewEvent};
use super::{ActionWrite, Applied, EntryKind, Fingerprint, LedgerError, PointsWrite};
use crate::actions::{Outcome, Plan};
use crate::event::Event;
use crate::graph::stacking::stack;
use crate::graph::{Stacked, StackingKey};
use crate::result::{EventResult, EventState};

const MICROS_PER_DAY: i64 = 86_400 * 1_000_000;

/// One event to post, borrowed from wherever it was planned.
#[derive(Debug, Clone, Copy)]
pub struct Posting<'a> {
    /// The idempotency key.
    pub event_id: &'a str,
    /// True when the id was generated here (no earlier event can have it).
    pub fresh_id: bool,
    /// The content's fingerprint.
    pub fingerprint: &'a Fingerprint,
    /// One write per planned action, in order.
    pub actions: &'a [ActionWrite],
    /// Each action's scenario and exclusive group, in the same order: the core applies the
    /// actions of an excluded scenario not at all.
    pub stacking: &'a [StackingKey],
    /// The batch job and index, if any.
    pub job: Option<(&'a str, usize)>,
    /// The event (its type, time and payload are stored with it).
    pub event: &'a Event,
}

/// Posts one event inside a store's transaction, at `now` (µs since the epoch): a stored id
/// answers its stored result (same content) or a conflict (other content) and writes nothing;
/// otherwise each points action is decided and written, and the result `build` makes from the
/// outcomes is stored with the event.
pub fn post<T: LedgerTx + ?Sized>(
    tx: &mut T,
    posting: &Posting<'_>,
    now: i64,
    build: &dyn Fn(&Stacked) -> EventResult,
) -> Result<Applied, LedgerError> {
    // A generated id is new by construction; the store's primary key still guards it.
    let existing = if posting.fresh_id { None } else { tx.find_event(posting.event_id)? };
    let applied = match existing {
        Some(stored) if stored.fingerprint != *posting.fingerprint => Applied::Conflict,
        Some(stored) => Applied::Replayed(stored.result),
        None => Applied::Fresh(apply(tx, posting, now, build)?),
    };
    if let Some((job_id, index)) = posting.job {
        let state = if applied == Applied::Conflict { EventState::Conflict } else { EventState::Done };
        tx.mark_job_event(job_id, index, state)?;
    }
    Ok(applied)
}

fn apply<T: LedgerTx + ?Sized>(
    tx: &mut T,
    posting: &Posting<'_>,
    now: i64,
    build: &dyn Fn(&Stacked) -> EventResult,
) -> Result<EventResult, LedgerError> {
    let mut actor = None;
    let decide = |i: usize| match posting.actions.get(i) {
        Some(ActionWrite::Decided(outcome)) => Ok(*outcome),
        Some(ActionWrite::Points(points)) => {
            actor = Some(points.actor_id.as_str());
            write_points(tx, posting.event_id, points, now)
        }
        None => Err(super::broken("a stacking key without its action")),
    };
    let stacked = stack(posting.stacking, decide)?;
    let result = build(&stacked);
    let result_json = serde_json::to_string(&result)
        .map_err(|e| LedgerError::unavailable("cannot encode a result", false, Some(std::sync::Arc::new(e))))?;
    let event = posting.event;
    let payload =
        match &event.payload {
            Some(payload) => Some(serde_json::to_string(payload).map_err(|e| {
                LedgerError::unavailable("cannot encode a payload", false, Some(std::sync::Arc::new(e)))
            })?),
            None => None,
        };
    tx.save_event(&NewEvent {
        event_id: posting.event_id,
        fingerprint: posting.fingerprint,
        actor_id: actor,
        event_type: &event.event_type,
        occurred_at: event.time().as_microsecond(),
        payload: payload.as_deref(),
        result: &result,
        result_json: &result_json,
        processed_at: now,
    })?;
    Ok(result)
}

/// Writes one points movement, or refuses a deduction the balance cannot cover (writing nothing).
fn write_points<T: LedgerTx + ?Sized>(
    tx: &mut T,
    event_id: &str,
    points: &PointsWrite,
    now: i64,
) -> Result<Outcome, LedgerError> {
    let amount = points.change.amount;
    if amount < 0 {
        let balance = tx.balance(&points.actor_id)?;
        if balance.saturating_add(amount) < 0 {
            return Ok(Outcome::InsufficientBalance { wanted: amount.saturating_neg(), balance });
        }
    }
    let expires_at =
        points.change.expiry_days.filter(|_| amount > 0).map(|days| now + i64::from(days) * MICROS_PER_DAY);
    tx.append(&NewEntry {
        actor_id: &points.actor_id,
        event_id,
        action_id: &points.action_id,
        scenario_id: &points.scenario_id,
        points: amount,
        kind: if amount < 0 { EntryKind::Deduct } else { EntryKind::Award },
        reason: points.reason.as_deref(),
        created_at: now,
        expires_at,
    })?;
    Ok(Outcome::Done(Plan::Points(points.change)))
}
