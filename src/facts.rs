//! What a rule may read when an event is evaluated: the event itself, its event time, the
//! programme's zone that `day_of_week()`, `hour()` and periods read it in, and — when a ledger
//! is there — the member's state before the event ([`MemberState`]), read in the transaction
//! that writes the event's effects.

use std::sync::LazyLock;

use jiff::Timestamp;

use crate::calendar::Zone;
use crate::event::Event;
use crate::expr::ast::Path;

static UTC: LazyLock<Zone> = LazyLock::new(Zone::utc);

/// The facts of one evaluation.
#[derive(Clone, Copy)]
pub struct Facts<'a> {
    /// The event, as sent.
    pub event: &'a Event,
    /// The event time: `occurred_at`, else when the event was received.
    pub at: Timestamp,
    /// The programme's zone: the local day and hour of the event time are read in it.
    pub zone: &'a Zone,
    /// The member's state before this event; `None` without a ledger (nothing is remembered,
    /// so member functions see only the event itself).
    pub member: Option<&'a dyn MemberState>,
    /// The event a reversal takes back, when its `ratio` is evaluated.
    pub original: Option<&'a Event>,
}

/// The event's actor's state before the event, as a ledger keeps it. Event types are
/// lower-cased; times are µs since the epoch. Each read answers `None` when the storage failed
/// (the reader keeps the error, and the event fails with it rather than being decided on a
/// guess).
pub trait MemberState {
    /// The actor's earlier events of a type with an event time in `[from, to)`.
    fn count(&self, event_type: &str, from: i64, to: i64) -> Option<u64>;
    /// The sum of a numeric path over the same events (non-numbers skipped).
    fn sum(&self, event_type: &str, path: &Path, from: i64, to: i64) -> Option<f64>;
    /// The event times of the actor's earlier events of a type before `before`, newest first,
    /// at most `limit`.
    fn times(&self, event_type: &str, before: i64, limit: usize) -> Option<Vec<i64>>;
    /// The actor's spendable points at the event time.
    fn balance(&self) -> Option<i64>;
    /// The actor's points not yet spendable at the event time.
    fn pending(&self) -> Option<i64>;
    /// The actor's tier at the event time (`Some(None)`: no tier).
    fn tier(&self) -> Option<Option<&str>>;
    /// The multiplier of the actor's tier (1 without a tier).
    fn tier_multiplier(&self) -> Option<f64>;
}

impl<'a> Facts<'a> {
    /// The facts of an event, at its event time, in UTC (rules put them in the programme's zone
    /// when they evaluate them).
    ///
    /// ```
    /// use fluxflow::event::Event;
    /// use fluxflow::facts::Facts;
    /// let event = Event::from_value(serde_json::json!({
    ///     "type": "purchase", "occurred_at": "2026-11-05T11:00:00Z"
    /// })).unwrap();
    /// assert_eq!(Facts::of(&event).at.to_string(), "2026-11-05T11:00:00Z");
    /// ```
    pub fn of(event: &'a Event) -> Facts<'a> {
        Facts { event, at: event.time(), zone: &UTC, member: None, original: None }
    }

    /// The same facts with the member's state.
    pub fn with_member(self, member: &'a dyn MemberState) -> Facts<'a> {
        Facts { member: Some(member), ..self }
    }

    /// The same facts read in another zone.
    pub fn in_zone(self, zone: &'a Zone) -> Facts<'a> {
        Facts { zone, ..self }
    }
}
