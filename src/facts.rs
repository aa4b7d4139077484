//! What a rule may read when an event is evaluated: the event itself and its event time (in the
//! programme's zone when a schedule or a period asks). The member's state before the event joins
//! it when rules can read member history.

use jiff::Timestamp;

use crate::event::Event;

/// The facts of one evaluation.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    /// The event, as sent.
    pub event: &'a Event,
    /// The event time: `occurred_at`, else when the event was received.
    pub at: Timestamp,
}

impl<'a> Facts<'a> {
    /// The facts of an event, at its event time.
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
        Facts { event, at: event.time() }
    }
}
