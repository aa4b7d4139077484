//! The few steps a store offers inside one transaction. [`super::posting::post`] decides what an
//! event does to the books over these steps, so every store (SQLite, PostgreSQL, the in-memory
//! overlay of simulations and rule tests) keeps the same rules; a store only says how each step
//! is stored and how the transaction is isolated.

use super::{EntryKind, Fingerprint, LedgerError};
use crate::graph::limits::{BudgetKey, Counter, Usage};
use crate::result::{EventResult, EventState};

/// An event already stored under an id.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    /// Its content's fingerprint.
    pub fingerprint: Fingerprint,
    /// The result it was answered with.
    pub result: EventResult,
}

/// One entry to append.
#[derive(Debug, Clone, Copy)]
pub struct NewEntry<'a> {
    /// The member.
    pub actor_id: &'a str,
    /// The event that causes it.
    pub event_id: &'a str,
    /// The action.
    pub action_id: &'a str,
    /// The scenario.
    pub scenario_id: &'a str,
    /// Signed points.
    pub points: i64,
    /// What it records.
    pub kind: EntryKind,
    /// The rule's reason.
    pub reason: Option<&'a str>,
    /// When it is written (µs since the epoch).
    pub created_at: i64,
    /// The time it counts from (µs since the epoch): the event time of an event's entry, the
    /// request's time of an operation's, the lot's expiry of an `expire` entry.
    pub dated_at: i64,
    /// When the points of the lot it adds become spendable, if later than `dated_at`.
    pub available_at: Option<i64>,
    /// When the points of the lot it adds expire (µs since the epoch).
    pub expires_at: Option<i64>,
    /// The event a reversal takes back.
    pub reverses: Option<&'a str>,
}

/// An earlier event, as stored: what a reversal's `ratio` reads of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Original {
    /// Its actor.
    pub actor_id: Option<String>,
    /// Its type.
    pub event_type: String,
    /// Its event time (µs since the epoch).
    pub occurred_at: i64,
    /// Its payload as JSON text.
    pub payload: Option<String>,
}

/// What reversals of an event may take from a member, from its entries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reversible {
    /// Points the event awarded the member.
    pub awarded: i64,
    /// Points of those that expired (`expire` entries naming the event).
    pub expired: i64,
    /// Points reversals took back so far.
    pub reversed: i64,
}

/// What a member's book holds besides its lots: the sum of its entries (which may be below
/// zero), the points a reversal could not collect that later awards pay first, and when its
/// soonest-expiring open lot expires (so a write can skip the lots when none is due).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Book {
    /// The sum of the member's entries.
    pub balance: i64,
    /// Points owed: later awards pay them before they keep anything.
    pub debt: i64,
    /// The soonest `expires_at` of the member's open lots (µs since the epoch).
    pub next_expiry: Option<i64>,
}

/// Points awarded with a date to become spendable or to expire: a lot. Points spendable at once
/// that never expire need no lot (they are the member's plain points: the rest of the balance).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lot {
    /// Its id: increasing, so the oldest first.
    pub lot_id: i64,
    /// The event or request that granted it (an `expire` entry names it).
    pub source_id: String,
    /// Points not yet spent or expired.
    pub remaining: i64,
    /// When its points become spendable (µs since the epoch).
    pub available_at: i64,
    /// When its unspent points expire (µs since the epoch), if ever.
    pub expires_at: Option<i64>,
}

/// A lot to add.
#[derive(Debug, Clone, Copy)]
pub struct NewLot<'a> {
    /// The member.
    pub actor_id: &'a str,
    /// The event or request that grants it.
    pub source_id: &'a str,
    /// Its points.
    pub points: i64,
    /// When its points become spendable (µs since the epoch).
    pub available_at: i64,
    /// When its unspent points expire, if ever.
    pub expires_at: Option<i64>,
}

/// An event to store once its effects are written.
#[derive(Debug, Clone, Copy)]
pub struct NewEvent<'a> {
    /// The idempotency key.
    pub event_id: &'a str,
    /// Its content's fingerprint.
    pub fingerprint: &'a Fingerprint,
    /// The event's actor, if any.
    pub actor_id: Option<&'a str>,
    /// Its type lower-cased (the member's history is read by it), when it has an actor.
    /// Computed only when the store asks for it ([`NewEvent::member_type`]).
    pub history: bool,
    /// The event's type.
    pub event_type: &'a str,
    /// Event time (µs since the epoch): `occurred_at` when sent, else when it was received.
    pub occurred_at: i64,
    /// The payload as JSON text, when the event has one.
    pub payload: Option<&'a str>,
    /// The result as JSON text, as stored.
    pub result_json: &'a str,
    /// When it was applied (µs since the epoch).
    pub processed_at: i64,
}

/// A webhook delivery to add to the outbox, in its event's transaction.
#[derive(Debug, Clone, Copy)]
pub struct NewDelivery<'a> {
    /// The event.
    pub event_id: &'a str,
    /// The `webhook_notify` action.
    pub action_id: &'a str,
    /// Where and how it goes, as JSON text.
    pub target_json: &'a str,
    /// The event as sent (the body joins its result when it is sent). Each store keeps what it
    /// needs of it: SQLite only what `events` does not, PostgreSQL its JSON.
    pub event: &'a crate::event::Event,
    /// When it was queued (µs since the epoch); also its first attempt's time.
    pub created_at: i64,
}

impl NewDelivery<'_> {
    /// `<event_id>:<action_id>`: stable across attempts and replays, for the receiver to dedup by.
    pub fn delivery_id(&self) -> String {
        format!("{}:{}", self.event_id, self.action_id)
    }
}

/// A scenario's use by one member (one event), counted by its `per: actor` limits.
#[derive(Debug, Clone, Copy)]
pub struct NewUse<'a> {
    /// The scenario.
    pub scenario_id: &'a str,
    /// The member.
    pub actor_id: &'a str,
    /// The event time (µs since the epoch): periods are counted in event time.
    pub occurred_at: i64,
    /// Points the scenario awarded with it.
    pub points: i64,
}

impl NewEvent<'_> {
    /// The event's type lower-cased, as member history keys it; `None` without an actor.
    pub fn member_type(&self) -> Option<String> {
        self.history.then(|| self.event_type.to_lowercase())
    }
}

/// The steps of one ledger transaction. Everything a transaction does becomes visible at once
/// when the store commits it, or not at all.
pub trait LedgerTx {
    /// The event stored under this id, if any (also one stored earlier in this transaction).
    fn find_event(&mut self, event_id: &str) -> Result<Option<StoredEvent>, LedgerError>;
    /// A member's book (all zero when never seen). No other transaction may change it before
    /// this one ends: SQLite has one writer; PostgreSQL locks the group's members first.
    fn book(&mut self, actor_id: &str) -> Result<Book, LedgerError>;
    /// Sets a member's debt.
    fn set_debt(&mut self, actor_id: &str, debt: i64) -> Result<(), LedgerError>;
    /// Appends an entry and adds its points to the member's balance.
    fn append(&mut self, entry: &NewEntry<'_>) -> Result<(), LedgerError>;
    /// Adds a lot.
    fn add_lot(&mut self, lot: &NewLot<'_>) -> Result<(), LedgerError>;
    /// Sets a member's `next_expiry` to `expires_at`, sooner than the one its book holds.
    fn lower_next_expiry(&mut self, actor_id: &str, expires_at: i64) -> Result<(), LedgerError>;
    /// A member's open lots (points remaining) in spending order: the soonest-expiring first,
    /// never-expiring last, ties oldest first; at most `limit`.
    fn open_lots(&mut self, actor_id: &str, limit: usize) -> Result<Vec<Lot>, LedgerError>;
    /// The points of a member's open lots not yet spendable at `at`.
    fn pending_points(&mut self, actor_id: &str, at: i64) -> Result<i64, LedgerError>;
    /// Takes points from lots of a member, (lot id, points) each (negative points give them
    /// back), then sets its book's `next_expiry` from its open lots.
    fn take_from_lots(&mut self, actor_id: &str, taken: &[(i64, i64)]) -> Result<(), LedgerError>;
    /// Records what a redemption took from each lot, so a cancellation gives it back.
    fn record_spent(&mut self, actor_id: &str, source_id: &str, spent: &[(i64, i64)]) -> Result<(), LedgerError>;
    /// What a redemption took from each lot: (lot id, points).
    fn spent_by(&mut self, actor_id: &str, source_id: &str) -> Result<Vec<(i64, i64)>, LedgerError>;
    /// An earlier event, stored (also earlier in this transaction).
    fn original(&mut self, event_id: &str) -> Result<Option<Original>, LedgerError>;
    /// What a member's reversals of an event may take, from its entries.
    fn reversible(&mut self, actor_id: &str, event_id: &str) -> Result<Reversible, LedgerError>;
    /// Points awarded to a member less reversals, by entries dated in `[from, to)`: what tiers
    /// count.
    fn tier_points(&mut self, actor_id: &str, from: i64, to: i64) -> Result<i64, LedgerError>;
    /// Stores an applied event with its result. Fails if the id is stored already.
    fn save_event(&mut self, event: &NewEvent<'_>) -> Result<(), LedgerError>;
    /// Adds a webhook delivery to the outbox (once per id: a second add of one id is ignored).
    fn queue_delivery(&mut self, delivery: &NewDelivery<'_>) -> Result<(), LedgerError>;
    /// A scenario's use so far, as one limit counts it. No other transaction may change it
    /// before this one ends: SQLite has one writer; PostgreSQL locks the group's members and the
    /// budgets of its scenarios first.
    fn usage(&mut self, counter: &Counter<'_>) -> Result<Usage, LedgerError>;
    /// Records a scenario's use by a member.
    fn add_use(&mut self, new_use: &NewUse<'_>) -> Result<(), LedgerError>;
    /// Adds a use to a campaign budget's counter.
    fn add_to_budget(&mut self, budget: &BudgetKey<'_>, used: Usage) -> Result<(), LedgerError>;
    /// How many of the actor's events of a type (lower-cased) with an event time in `[from, to)`
    /// are stored (applied before the event being posted).
    fn member_count(&mut self, actor_id: &str, event_type: &str, from: i64, to: i64) -> Result<u64, LedgerError>;
    /// The stored payloads (JSON text) of the same events.
    fn member_payloads(
        &mut self,
        actor_id: &str,
        event_type: &str,
        from: i64,
        to: i64,
    ) -> Result<Vec<String>, LedgerError>;
    /// The sum of a payload number over the actor's stored events of a type with an event time
    /// in `[from, to)`, from counters, when the store keeps counters of it (SQLite and
    /// PostgreSQL, for the sums the live rules read); `None` otherwise, and the caller adds up
    /// the payloads.
    fn member_sum(
        &mut self,
        _actor_id: &str,
        _key: &super::member::SumKey,
        _from: i64,
        _to: i64,
    ) -> Result<Option<f64>, LedgerError> {
        Ok(None)
    }
    /// The event times of the actor's stored events of a type before `before`, newest first, at
    /// most `limit`.
    fn member_times(
        &mut self,
        actor_id: &str,
        event_type: &str,
        before: i64,
        limit: usize,
    ) -> Result<Vec<i64>, LedgerError>;
    /// Records what became of a batch job's event.
    fn mark_job_event(&mut self, job_id: &str, index: usize, state: EventState) -> Result<(), LedgerError>;
    /// Raises the subject's applied sequence to the position's, if it is higher.
    fn advance_stream(&mut self, position: &super::StreamPosition) -> Result<(), LedgerError>;
}
