//! What a rule may read when an event is evaluated: the event itself, its event time, and the
//! programme's zone that `day_of_week()` and `hour()` read it in. The member's state before the
//! event joins it when rules can read member history.

use std::sync::LazyLock;

use jiff::Timestamp;

use crate::calendar::Zone;
use crate::event::Event;

static UTC: LazyLock<Zone> = LazyLock::new(Zone::utc);

/// The facts of one evaluation.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    /// The event, as sent.
    pub event: &'a Event,
    /// The event time: `occurred_at`, else when the event was received.
    pub at: Timestamp,
    /// The programme's zone: the local day and hour of the event time are read in it.
    pub zone: &'a Zone,
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
        Facts { event, at: event.time(), zone: &UTC }
    }

    /// The same facts read in another zone.
    pub fn in_zone(self, zone: &'a Zone) -> Facts<'a> {
        Facts { zone, ..self }
    }
}
