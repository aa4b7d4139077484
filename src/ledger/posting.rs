//! What an event does to the books, written once for every store: the idempotency check, the
//! overdraft rule, the scenarios' limits, the entries, the stored result and the batch job's
//! bookkeeping. Stores run it
//! inside their own transactions ([`super::tx::LedgerTx`]); the simulator and rule tests run it
//! over an in-memory overlay ([`super::memory::Overlay`]).

use std::sync::Arc;

use jiff::Timestamp;

use super::member::{Deferred, MemberReader};
use super::tx::{LedgerTx, NewDelivery, NewEntry, NewEvent, NewLot, NewUse};
use super::{ActionWrite, Applied, EntryKind, Fingerprint, LedgerError, NotifyWrite, Planned, PointsWrite, broken};
use super::{lots, reversal};
use crate::actions::{Outcome, Plan, PointsChange};
use crate::event::Event;
use crate::graph::limits::{Room, Usage, used_by};
use crate::graph::stacking::stack;
use crate::graph::{ScenarioLimits, Stacked, StackingKey};
use crate::result::{EventResult, EventState, StoredJson};

/// One event to post, borrowed from wherever it was planned.
#[derive(Clone, Copy)]
pub struct Posting<'a> {
    /// The idempotency key.
    pub event_id: &'a str,
    /// True when the id was generated here (no earlier event can have it).
    pub fresh_id: bool,
    /// The content's fingerprint.
    pub fingerprint: &'a Fingerprint,
    /// What its actions ask of the ledger.
    pub plan: PlanRef<'a>,
    /// The batch job and index, if any.
    pub job: Option<(&'a str, usize)>,
    /// The event (its type, time and payload are stored with it).
    pub event: &'a Event,
    /// Where it sits in the event stream, if it came from one.
    pub position: Option<&'a super::StreamPosition>,
}

/// What an event's actions ask of the ledger: planned before the transaction, or planned in it.
#[derive(Clone, Copy)]
pub enum PlanRef<'a> {
    /// Planned before.
    Ready(Writes<'a>),
    /// Planned here, on the member's state this transaction keeps.
    Deferred(&'a Deferred),
}

/// The writes of a planned event.
#[derive(Clone, Copy)]
pub struct Writes<'p> {
    /// One write per planned action, in order.
    pub actions: &'p [ActionWrite],
    /// Each action's scenario and exclusive group, in the same order: the core applies the
    /// actions of an excluded scenario not at all.
    pub stacking: &'p [StackingKey],
    /// The limits of the event's scenarios that have any.
    pub limits: &'p [Arc<ScenarioLimits>],
    /// How the result is made.
    pub result: ResultRef<'p>,
}

/// How the result of a planned event is made ([`super::ResultPlan`], borrowed).
#[derive(Clone, Copy)]
pub enum ResultRef<'p> {
    /// Built from the decided outcomes. `Fn`: a store may post a group again.
    Build(&'p dyn Fn(&Stacked) -> EventResult),
    /// Built before the write (every outcome [`certain`]): its JSON, stored as it is.
    AsPlanned(&'p StoredJson),
}

/// Posts one event inside a store's transaction, at `now` (µs since the epoch): a stored id
/// answers its stored result (same content) or a conflict (other content) and writes nothing;
/// otherwise each points action is decided and written, and the result `build` makes from the
/// outcomes is stored with the event.
pub fn post<T: LedgerTx + ?Sized>(tx: &mut T, posting: &Posting<'_>, now: i64) -> Result<Applied, LedgerError> {
    // A generated id is new by construction; the store's primary key still guards it.
    let existing = if posting.fresh_id { None } else { tx.find_event(posting.event_id)? };
    let applied = match existing {
        Some(stored) if stored.fingerprint != *posting.fingerprint => Applied::Conflict,
        Some(stored) => Applied::Replayed(stored.result),
        None => apply(tx, posting, now)?,
    };
    if let Some((job_id, index)) = posting.job {
        let state = if applied == Applied::Conflict { EventState::Conflict } else { EventState::Done };
        tx.mark_job_event(job_id, index, state)?;
    }
    // A replay advances it too: the event may have come first by HTTP.
    if let (Some(position), false) = (posting.position, applied == Applied::Conflict) {
        tx.advance_stream(position)?;
    }
    Ok(applied)
}

fn apply<T: LedgerTx + ?Sized>(tx: &mut T, posting: &Posting<'_>, now: i64) -> Result<Applied, LedgerError> {
    // An event whose rules read the member's state is planned here, on the state this
    // transaction sees and keeps until it commits.
    let replanned: Planned;
    let writes = match posting.plan {
        PlanRef::Ready(writes) => writes,
        PlanRef::Deferred(deferred) => {
            replanned = match posting.event.actor_id.as_deref() {
                Some(actor_id) => {
                    let at = posting.event.time().as_microsecond();
                    let reader = MemberReader::new(tx, actor_id, at, now, &deferred.programme)?;
                    let planned = (deferred.replan)(Some(&reader));
                    reader.finish()?;
                    planned
                }
                None => (deferred.replan)(None),
            };
            replanned.writes()
        }
    };
    let mut notified = Vec::new();
    let stacked = decide(tx, posting, &writes, &mut notified, now)?;
    let applied = match writes.result {
        ResultRef::Build(build) => {
            let mut result = build(&stacked);
            let json = serde_json::to_string(&result).map_err(encoding("cannot encode a result"))?;
            save(tx, posting, &json, now)?;
            result.stored_json = StoredJson::new(json);
            Applied::Fresh(result)
        }
        ResultRef::AsPlanned(json) => {
            debug_assert_eq!(
                certain(writes.actions, writes.stacking, writes.limits).as_ref(),
                Some(&stacked),
                "an event's result was built before its write, and the ledger decided otherwise"
            );
            save(tx, posting, json.text().ok_or_else(|| broken("a result built before its write has no JSON"))?, now)?;
            Applied::AsPlanned
        }
    };
    for notify in notified {
        queue(tx, posting, notify, now)?;
    }
    Ok(applied)
}

/// The outcomes of an event's actions, stacked, when the ledger cannot make any of them come out
/// otherwise than planned: its scenarios have no limits, and no action is a deduction (which a
/// low balance refuses) or a reversal (which depends on what the original awarded). Its result
/// can then be built before the write; `None` otherwise. [`decide`] answers the same outcomes
/// for such an event (checked in debug builds at every post).
pub fn certain(actions: &[ActionWrite], stacking: &[StackingKey], limits: &[Arc<ScenarioLimits>]) -> Option<Stacked> {
    if !limits.is_empty() {
        return None;
    }
    stack(stacking, |_, planned, outcomes| {
        for i in planned {
            let outcome = match actions.get(i) {
                Some(ActionWrite::Decided(outcome)) => *outcome,
                Some(ActionWrite::Points(points)) if points.change.amount >= 0 => {
                    Outcome::Done(Plan::Points(points.change))
                }
                Some(ActionWrite::Notify(_)) => Outcome::Done(Plan::Notify),
                _ => return Err(()),
            };
            outcomes.push(Some(outcome));
        }
        Ok(())
    })
    .ok()
}

/// Adds a `webhook_notify` action's delivery to the outbox, with the event as sent, in the
/// event's transaction: it exists exactly when the event was committed (its result, stored with
/// the event, joins it when it is sent).
fn queue<T: LedgerTx + ?Sized>(
    tx: &mut T,
    posting: &Posting<'_>,
    notify: &NotifyWrite,
    now: i64,
) -> Result<(), LedgerError> {
    tx.queue_delivery(&NewDelivery {
        event_id: posting.event_id,
        action_id: &notify.action_id,
        target_json: &notify.notification.target_json,
        event: posting.event,
        created_at: now,
    })
}

/// Decides each action's outcome, scenario by scenario (stacking), within the room each
/// scenario's limits leave; writes the points and counts the limits' use.
fn decide<'w, T: LedgerTx + ?Sized>(
    tx: &mut T,
    posting: &Posting<'_>,
    writes: &Writes<'w>,
    notified: &mut Vec<&'w NotifyWrite>,
    now: i64,
) -> Result<Stacked, LedgerError> {
    let (actor, at) = (posting.event.actor_id.as_deref(), posting.event.time());
    stack(writes.stacking, |scenario, planned, outcomes| {
        let limits = writes.limits.iter().find(|l| l.scenario == scenario);
        let mut room = match limits {
            Some(limits) => room_for(tx, limits, actor, at)?,
            None => Room::default(),
        };
        let first = outcomes.len();
        for i in planned {
            let outcome = match writes.actions.get(i) {
                Some(ActionWrite::Decided(outcome)) => room.decided(*outcome),
                Some(ActionWrite::Points(points)) => {
                    let write = |amount| write_points(tx, posting.event_id, at, points, amount, now);
                    room.points(points.change.amount, write)?
                }
                Some(ActionWrite::Reverse(write)) => {
                    room.taking(|| reversal::reverse(tx, posting.event_id, posting.event, write, now))?
                }
                Some(ActionWrite::Notify(write)) => {
                    let outcome = room.decided(Outcome::Done(Plan::Notify));
                    if outcome == Outcome::Done(Plan::Notify) {
                        notified.push(write);
                    }
                    outcome
                }
                None => return Err(broken("a stacking key without its action")),
            };
            outcomes.push(Some(outcome));
        }
        match (limits, used_by(&outcomes[first..])) {
            (Some(limits), Some(used)) => record_use(tx, limits, actor, at, used),
            _ => Ok(()),
        }
    })
}

/// An encoding error as the ledger reports it.
fn encoding(what: &'static str) -> impl Fn(serde_json::Error) -> LedgerError {
    move |e| LedgerError::unavailable(what, false, Some(std::sync::Arc::new(e)))
}

/// Stores the event with its result's JSON, type, time and payload (the member's history).
fn save<T: LedgerTx + ?Sized>(
    tx: &mut T,
    posting: &Posting<'_>,
    result_json: &str,
    now: i64,
) -> Result<(), LedgerError> {
    let event = posting.event;
    let payload = match &event.payload {
        Some(payload) => Some(serde_json::to_string(payload).map_err(encoding("cannot encode a payload"))?),
        None => None,
    };
    tx.save_event(&NewEvent {
        event_id: posting.event_id,
        fingerprint: posting.fingerprint,
        actor_id: event.actor_id.as_deref(),
        // Every event of an actor is the member's history.
        history: event.actor_id.is_some(),
        event_type: &event.event_type,
        occurred_at: event.time().as_microsecond(),
        payload: payload.as_deref(),
        result_json,
        processed_at: now,
    })
}

/// What a scenario's limits leave it for this event, from its use so far (read in this
/// transaction, so nothing changes it before the commit).
fn room_for<T: LedgerTx + ?Sized>(
    tx: &mut T,
    limits: &ScenarioLimits,
    actor: Option<&str>,
    at: Timestamp,
) -> Result<Room, LedgerError> {
    let mut room = Room::default();
    for (limit, counter) in limits.counters(actor, at) {
        room.count(limit, tx.usage(&counter)?);
    }
    Ok(room)
}

/// Counts a scenario's use by this event against each of its limits.
fn record_use<T: LedgerTx + ?Sized>(
    tx: &mut T,
    limits: &ScenarioLimits,
    actor: Option<&str>,
    at: Timestamp,
    used: Usage,
) -> Result<(), LedgerError> {
    if let (true, Some(actor_id)) = (limits.per_actor(), actor) {
        let points = i64::try_from(used.points).unwrap_or(i64::MAX);
        let new_use = NewUse { scenario_id: &limits.scenario_id, actor_id, occurred_at: at.as_microsecond(), points };
        tx.add_use(&new_use)?;
    }
    for budget in limits.budgets(at) {
        tx.add_to_budget(&budget, used)?;
    }
    Ok(())
}

/// Writes one points movement of `amount` (the planned one, or an award cut by a limit) dated
/// at the event time `at`: an award adds a lot (or plain points); a deduction spends the
/// soonest-expiring spendable points first, and is refused (writing nothing) when the points
/// spendable at `at` cannot cover it.
fn write_points<T: LedgerTx + ?Sized>(
    tx: &mut T,
    event_id: &str,
    at: Timestamp,
    points: &PointsWrite,
    amount: i64,
    now: i64,
) -> Result<Outcome, LedgerError> {
    let (actor, at) = (points.actor_id.as_str(), at.as_microsecond());
    let book = lots::bring_up_to(tx, actor, at, now)?;
    let lot = if amount < 0 {
        let (spendable, wanted) = (lots::spendable(tx, actor, book, at)?, amount.saturating_neg());
        if spendable < wanted {
            return Ok(Outcome::InsufficientBalance { wanted, balance: spendable });
        }
        lots::take(tx, actor, wanted, at)?;
        None
    } else {
        let (available_at, expires_at) = points.terms.dates(at);
        Some(NewLot { actor_id: actor, source_id: event_id, points: amount, available_at, expires_at })
    };
    tx.append(&NewEntry {
        actor_id: actor,
        event_id,
        action_id: &points.action_id,
        scenario_id: &points.scenario_id,
        points: amount,
        kind: if amount < 0 { EntryKind::Deduct } else { EntryKind::Award },
        reason: points.reason.as_deref(),
        created_at: now,
        dated_at: at,
        available_at: lot.map(|l| l.available_at).filter(|&available| available > at),
        expires_at: lot.and_then(|l| l.expires_at),
        reverses: None,
    })?;
    if let Some(lot) = lot {
        lots::grant(tx, book, lot, at)?;
    }
    Ok(Outcome::Done(Plan::Points(PointsChange { amount, ..points.change })))
}
