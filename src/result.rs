//! The result of an event, in the shape `POST /v1/events` answers; the ledger stores it for replays.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::actions::Outcome;
use crate::event::Event;
use crate::graph::{Evaluation, Rules, Stacked, Trace};

/// What happened to one event.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EventResult {
    /// The event's id (given or generated).
    pub event_id: String,
    /// The event time (RFC 3339, UTC): `occurred_at`, else when the event was received. Results
    /// stored by a version before event time have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub occurred_at: Option<String>,
    /// Whole milliseconds spent (the original's field; kept as an integer for its clients).
    pub duration_ms: u64,
    /// Microseconds spent, for a useful resolution.
    pub duration_us: u64,
    /// Scenarios that fired, in evaluation order (descending priority, then file order); `[]`
    /// when none. Scenarios excluded by their exclusive group are not listed.
    pub scenarios_matched: Vec<String>,
    /// Actions reached, in order.
    pub actions_executed: Vec<ActionResult>,
    /// True when this is the stored result of an earlier request with the same id.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replayed: bool,
    /// Why each scenario and condition did or did not fire, when asked for.
    #[serde(default, skip_serializing_if = "Option::is_none", skip_deserializing)]
    pub trace: Option<Trace>,
    /// The JSON the ledger stored for this result, when it was just stored: the answer sends
    /// it as it is rather than encoding the result a second time.
    #[serde(skip)]
    pub stored_json: StoredJson,
}

/// A result's JSON as the ledger stored it: a cached encoding, not part of the result's value
/// (two results are equal whatever they cache). Shared, not copied, by the answer.
#[derive(Debug, Clone, Default)]
pub struct StoredJson(Option<bytes::Bytes>);

impl StoredJson {
    /// Caches `json`, the encoding of the result it goes into (taken over, not copied).
    pub fn new(json: String) -> StoredJson {
        StoredJson(Some(bytes::Bytes::from(json)))
    }

    /// The cached JSON, if any.
    pub fn get(&self) -> Option<&bytes::Bytes> {
        self.0.as_ref()
    }

    /// The cached JSON as text, if any (it was a `String`, so it always is text).
    pub fn text(&self) -> Option<&str> {
        self.0.as_deref().and_then(|json| std::str::from_utf8(json).ok())
    }
}

impl PartialEq for StoredJson {
    fn eq(&self, _: &StoredJson) -> bool {
        true
    }
}

impl EventResult {
    /// The JSON stored for this result when it is exactly what the answer must say: a fresh
    /// result (a replay says `"replayed": true`) without a trace (traces are not stored).
    pub fn answer_json(&self) -> Option<&bytes::Bytes> {
        if self.replayed || self.trace.is_some() { None } else { self.stored_json.get() }
    }
}

/// What one action did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionResult {
    /// The action's id.
    pub action_id: String,
    /// The action's type.
    #[serde(rename = "type")]
    pub action_type: String,
    /// Whether it did what it meant to.
    pub success: bool,
    /// What it did, or why it failed.
    pub message: String,
    /// Why it failed, as a stable code (`no_actor`, `formula_invalid`, `insufficient_balance`,
    /// `limit_reached`, …); absent when it succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// Signed points moved, for a successful points action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub points: Option<i64>,
}

impl EventResult {
    /// Builds the result from an evaluation and what stacking decided of each planned action
    /// (same order); the actions of excluded scenarios are left out.
    pub fn build(rules: &Rules, event: &Event, evaluation: &Evaluation, stacked: &Stacked, elapsed: Duration) -> Self {
        let actions_executed = evaluation
            .planned
            .iter()
            .zip(&stacked.outcomes)
            .filter_map(|(planned, outcome)| {
                let (entry, outcome) = (rules.action(planned.action)?, outcome.as_ref()?);
                Some(ActionResult {
                    action_id: entry.id.clone(),
                    action_type: entry.action_type.clone(),
                    success: outcome.success(),
                    message: match outcome {
                        // The same words for every action type.
                        Outcome::LimitReached(limit) => format!("limit reached: {}", limit.describe()),
                        outcome => entry.action.message(outcome, event),
                    },
                    code: outcome.code().map(str::to_owned),
                    points: outcome.points(),
                })
            })
            .collect();
        let scenarios_matched = evaluation
            .matched
            .iter()
            .filter(|&&i| stacked.excluded_by(i).is_none())
            .map(|&i| rules.scenario_id(i).to_owned())
            .collect();
        EventResult {
            event_id: event.id.clone(),
            occurred_at: Some(event.time().to_string()),
            duration_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
            duration_us: u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
            scenarios_matched,
            actions_executed,
            replayed: false,
            trace: None,
            stored_json: StoredJson::default(),
        }
    }
}

/// The state of one event of a batch job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventState {
    /// Waiting for a worker.
    Queued,
    /// Evaluated; the result is there.
    Done,
    /// Refused: the queue was full.
    Rejected,
    /// Its id was already used by an event with other content.
    Conflict,
}

impl EventState {
    /// The state's name, as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            EventState::Queued => "queued",
            EventState::Done => "done",
            EventState::Rejected => "rejected",
            EventState::Conflict => "conflict",
        }
    }

    /// The state of the event at `index` of a batch whose first `queued` events were accepted.
    pub fn at_admission(index: usize, queued: usize) -> EventState {
        if index < queued { EventState::Queued } else { EventState::Rejected }
    }

    /// Reads a stored state name.
    pub fn parse(name: &str) -> Option<EventState> {
        [EventState::Queued, EventState::Done, EventState::Rejected, EventState::Conflict]
            .into_iter()
            .find(|s| s.as_str() == name)
    }
}

/// One event of a batch job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobEvent {
    /// The event's id.
    pub event_id: String,
    /// Where it is.
    pub state: EventState,
    /// Its result, once done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<EventResult>,
}

/// A batch job, as `GET /v1/jobs/{job_id}` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// The job's id.
    pub job_id: String,
    /// `queued` while any event waits, else `done`.
    pub state: String,
    /// Events in the batch.
    pub total: usize,
    /// Events accepted onto the queue.
    pub queued: usize,
    /// Events refused because the queue was full.
    pub rejected: usize,
    /// Events finished (done or conflict).
    pub done: usize,
    /// Each event, in batch order.
    pub events: Vec<JobEvent>,
}

impl Job {
    /// A job of these events, the first `queued` of them accepted.
    pub fn new(job_id: String, event_ids: impl IntoIterator<Item = String>, queued: usize) -> Job {
        let events = event_ids
            .into_iter()
            .enumerate()
            .map(|(i, event_id)| JobEvent { event_id, state: EventState::at_admission(i, queued), result: None })
            .collect();
        Job::from_events(job_id, queued, events)
    }

    /// A job from its events as they stand; counts and state are derived from them.
    pub fn from_events(job_id: String, queued: usize, events: Vec<JobEvent>) -> Job {
        let mut job = Job { job_id, state: String::new(), total: events.len(), queued, rejected: 0, done: 0, events };
        job.recount();
        job
    }

    /// Recomputes the counts and the state from the events.
    pub fn recount(&mut self) {
        let count = |s: EventState| self.events.iter().filter(|e| e.state == s).count();
        self.rejected = count(EventState::Rejected);
        self.done = count(EventState::Done) + count(EventState::Conflict);
        self.state = if count(EventState::Queued) > 0 { "queued" } else { "done" }.to_owned();
    }
}
