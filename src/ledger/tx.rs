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
    /// When awarded points expire (µs since the epoch).
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
    /// The result, as answered.
    pub result: &'a EventResult,
    /// The result as JSON text, as stored.
    pub result_json: &'a str,
    /// When it was applied (µs since the epoch).
    pub processed_at: i64,
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
    /// A member's balance (0 when never seen). No other transaction may change it before this
    /// one ends: SQLite has one writer; PostgreSQL locks the group's members first.
    fn balance(&mut self, actor_id: &str) -> Result<i64, LedgerError>;
    /// Appends an entry and adds its points to the member's balance.
    fn append(&mut self, entry: &NewEntry<'_>) -> Result<(), LedgerError>;
    /// Stores an applied event with its result. Fails if the id is stored already.
    fn save_event(&mut self, event: &NewEvent<'_>) -> Result<(), LedgerError>;
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
}
