//! Events: what shops and apps send, decoded strictly.
//!
//! Keys are exact and lower-case; an unknown key is an error that names it, so a typo such as
//! `actorId` cannot silently lose data. A missing `id` is filled with a fresh UUID (v7, so ids
//! sort by arrival).

use std::collections::BTreeMap;
use std::sync::LazyLock;

use regex::Regex;

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One event, decoded and checked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    /// The idempotency key; filled with a UUID when the sender gave none (or `null`).
    #[serde(default, skip_serializing_if = "String::is_empty", deserialize_with = "null_as_empty")]
    pub id: String,
    /// What happened (`purchase`, `login`, ...).
    #[serde(rename = "type")]
    pub event_type: String,
    /// Where it came from (`pos-system`, `app`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The member the event is about; points actions need it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor_id: Option<String>,
    /// When it happened, as sent (RFC 3339, checked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub occurred_at: Option<String>,
    /// Free-form data the rules read as `payload.…`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<Map<String, Value>>,
    /// String labels the rules read as `meta.key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<BTreeMap<String, String>>,
    /// True when the sender gave no id and one was generated (so it cannot have been seen).
    #[serde(skip)]
    pub generated_id: bool,
    /// When the event was decoded: its time when it has no `occurred_at`.
    #[serde(skip, default = "received_now")]
    pub received_at: Timestamp,
    /// `occurred_at`, parsed once when the event is decoded by [`Event::from_slice`] or
    /// [`Event::from_value`] (an event deserialized otherwise parses it when asked).
    #[serde(skip)]
    occurred: Option<Timestamp>,
}

/// How far ahead of the server's clock an `occurred_at` may be (clock skew): up to this it is
/// taken as the time received, beyond it the event is refused.
pub const MAX_CLOCK_SKEW: SignedDuration = SignedDuration::from_secs(5 * 60);

/// Why an event was refused. The message names the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// The bytes are not JSON.
    #[error("invalid JSON: {0}")]
    Json(String),
    /// The JSON does not fit the event shape (unknown key, wrong type, missing `type`).
    #[error("{0}")]
    Shape(String),
    /// A field has a value the engine cannot accept.
    #[error("{field}: {problem}")]
    Field {
        /// The field, as a JSON path (`actor_id`, `occurred_at`).
        field: &'static str,
        /// What is wrong with it.
        problem: String,
    },
}

/// The shape of an RFC 3339 time; jiff then checks the values (it alone would also take ISO 8601
/// variants such as a space for `T` or a missing seconds field).
#[allow(clippy::expect_used, reason = "a constant pattern; the tests compile it")]
static RFC3339: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$").expect("valid pattern")
});

/// Now, to the microsecond (the ledger's resolution), as the time an event is received.
fn received_now() -> Timestamp {
    let now = Timestamp::now();
    now.round(jiff::Unit::Microsecond).unwrap_or(now)
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(deserializer)?.unwrap_or_default())
}

/// The keys of an event, as sent.
pub const KEYS: [&str; 7] = ["id", "type", "source", "actor_id", "occurred_at", "payload", "meta"];

/// Longest accepted `id`, `type`, `source` or `actor_id`, in bytes.
pub const MAX_NAME_LEN: usize = 256;

/// Deepest nesting accepted in `payload` (the payload object itself is level 1).
pub const MAX_DEPTH: usize = 32;

/// Most keys accepted in `payload` and `meta` together, at every level.
pub const MAX_KEYS: usize = 1_000;

/// What is wrong with a name or id (`id`, `type`, `source`, `actor_id`, an operation's `id`):
/// over [`MAX_NAME_LEN`] bytes, or a control character (NUL included: PostgreSQL text cannot
/// hold it, and log lines and ledger exports must not carry the others). `None` when it is fine.
///
/// ```
/// use fluxflow::event::name_problem;
/// assert_eq!(name_problem("user_42"), None);
/// assert_eq!(name_problem("a\u{7}b").as_deref(), Some("contains a control character (U+0007)"));
/// assert!(name_problem(&"x".repeat(257)).is_some());
/// ```
pub fn name_problem(value: &str) -> Option<String> {
    if value.len() > MAX_NAME_LEN {
        return Some(format!("is longer than {MAX_NAME_LEN} bytes"));
    }
    let control = value.chars().find(|c| c.is_control())?;
    Some(format!("contains a control character (U+{:04X})", u32::from(control)))
}

/// What is wrong with an event's free-form data: nested deeper than [`MAX_DEPTH`], or more than
/// [`MAX_KEYS`] keys in all (`meta_keys` counted in). Recursive: the decoder already bounds the
/// nesting (128 levels), and a walk allocates nothing.
fn data_problem(payload: &Map<String, Value>, meta_keys: usize) -> Option<String> {
    let mut keys = meta_keys + payload.len();
    let within = payload.values().all(|value| within_limits(value, 2, &mut keys));
    if keys > MAX_KEYS {
        Some(format!("has more than {MAX_KEYS} keys (meta's counted in)"))
    } else if !within {
        Some(format!("nests deeper than {MAX_DEPTH} levels"))
    } else {
        None
    }
}

/// Whether `value`, at `depth`, keeps within [`MAX_DEPTH`]; adds its keys to `keys` and stops
/// early once they are over [`MAX_KEYS`].
fn within_limits(value: &Value, depth: usize, keys: &mut usize) -> bool {
    let children_within = |children: &mut dyn Iterator<Item = &Value>, keys: &mut usize| {
        if depth > MAX_DEPTH || *keys > MAX_KEYS {
            return false;
        }
        for child in children {
            if !within_limits(child, depth + 1, keys) {
                return false;
            }
        }
        true
    };
    match value {
        Value::Object(object) => {
            *keys += object.len();
            children_within(&mut object.values(), keys)
        }
        Value::Array(items) => children_within(&mut items.iter(), keys),
        _ => true,
    }
}

impl Event {
    /// Decodes and checks an event from a JSON value; fills a missing `id`.
    ///
    /// ```
    /// use fluxflow::event::Event;
    /// let ev = Event::from_value(serde_json::json!({"type": "login", "actor_id": "u1"})).unwrap();
    /// assert_eq!(ev.event_type, "login");
    /// assert!(!ev.id.is_empty());
    /// let err = Event::from_value(serde_json::json!({"type": "login", "actorId": "u1"})).unwrap_err();
    /// assert!(err.to_string().contains("actorId"));
    /// ```
    pub fn from_value(value: Value) -> Result<Event, EventError> {
        if !value.is_object() {
            return Err(EventError::Shape(format!("an event is a JSON object, not {}", json_kind(&value))));
        }
        let event = serde_path_to_error::deserialize(value).map_err(|e| EventError::Shape(describe_serde_error(&e)))?;
        Event::checked(event)
    }

    /// Decodes and checks an event from JSON text, rejecting a repeated top-level key and trailing
    /// bytes; fills a missing `id`. Inside `payload` and `meta` a repeated key keeps its last
    /// value, as JSON parsers commonly do.
    ///
    /// ```
    /// use fluxflow::event::{Event, EventError};
    /// assert!(Event::from_slice(br#"{"type": "login"}"#).is_ok());
    /// assert!(matches!(Event::from_slice(br#"{"type": "a", "type": "b"}"#), Err(EventError::Shape(_))));
    /// assert!(matches!(Event::from_slice(br#"{"type": "a"} x"#), Err(EventError::Json(_))));
    /// ```
    pub fn from_slice(bytes: &[u8]) -> Result<Event, EventError> {
        if first_byte(bytes) != Some(b'{') {
            // Not an object: say what it is instead, or why it is not JSON at all.
            let value: Value = serde_json::from_slice(bytes)?;
            return Event::from_value(value);
        }
        // The plain decoder is the fast path; only a failure pays for finding the field's path.
        match serde_json::from_slice(bytes) {
            Ok(event) => Event::checked(event),
            Err(_) => Err(Event::explain_decode_error(bytes)),
        }
    }

    /// Decodes again, tracking the path, to say which field is wrong.
    fn explain_decode_error(bytes: &[u8]) -> EventError {
        let mut de = serde_json::Deserializer::from_slice(bytes);
        match serde_path_to_error::deserialize::<_, Event>(&mut de) {
            Err(e) if e.inner().classify() == serde_json::error::Category::Data => {
                EventError::Shape(describe_serde_error(&e))
            }
            Err(e) => EventError::from(e.into_inner()),
            Ok(_) => match de.end() {
                Err(e) => EventError::from(e),
                Ok(()) => EventError::Json("the event could not be decoded".into()),
            },
        }
    }

    fn checked(mut event: Event) -> Result<Event, EventError> {
        event.check()?;
        event.occurred = event.occurred_at.as_deref().and_then(|at| at.parse::<Timestamp>().ok());
        if event.id.is_empty() {
            event.id = new_id();
            event.generated_id = true;
        }
        Ok(event)
    }

    fn check(&self) -> Result<(), EventError> {
        let field = |field, problem: &str| Err(EventError::Field { field, problem: problem.to_owned() });
        if self.event_type.is_empty() {
            return field("type", "must not be empty");
        }
        if self.actor_id.as_deref() == Some("") {
            return field("actor_id", "must not be empty (leave it out when there is no actor)");
        }
        for (name, value) in [
            ("id", Some(self.id.as_str())),
            ("type", Some(self.event_type.as_str())),
            ("source", self.source.as_deref()),
            ("actor_id", self.actor_id.as_deref()),
        ] {
            if let Some(problem) = value.and_then(name_problem) {
                return field(name, &problem);
            }
        }
        let meta_keys = self.meta.as_ref().map_or(0, BTreeMap::len);
        if let Some(problem) = self.payload.as_ref().and_then(|payload| data_problem(payload, meta_keys)) {
            return field("payload", &problem);
        }
        if meta_keys > MAX_KEYS {
            return field("meta", &format!("has more than {MAX_KEYS} keys"));
        }
        if let Some(at) = &self.occurred_at {
            if !RFC3339.is_match(at) {
                return field("occurred_at", "is not an RFC 3339 time such as 2026-11-28T10:00:00Z");
            }
            if let Err(e) = at.parse::<Timestamp>() {
                return field("occurred_at", &format!("is not an RFC 3339 time ({e})"));
            }
        }
        Ok(())
    }

    /// `occurred_at` as a time, when sent.
    fn occurred_time(&self) -> Option<Timestamp> {
        self.occurred.or_else(|| self.occurred_at.as_deref().and_then(|at| at.parse::<Timestamp>().ok()))
    }

    /// The event time: `occurred_at` when sent (a time ahead of the clock by at most
    /// [`MAX_CLOCK_SKEW`] counts as the time received), else the time the event was received.
    /// Schedules, periods and limits use it, never the clock.
    pub fn time(&self) -> Timestamp {
        match self.occurred_time() {
            Some(at) if at > self.received_at && at.duration_since(self.received_at) <= MAX_CLOCK_SKEW => {
                self.received_at
            }
            Some(at) => at,
            None => self.received_at,
        }
    }

    /// What the service accepts of an event's time: `occurred_at` at most [`MAX_CLOCK_SKEW`]
    /// ahead of the clock, and not older than `max_age_days` (0 = any age). Dry runs (`fluxflow
    /// test`, `fluxflow eval`, simulations) skip it, so rules can be tried at any date.
    pub fn check_time(&self, max_age_days: u32) -> Result<(), EventError> {
        let Some(at) = self.occurred_time() else { return Ok(()) };
        let problem = if at.duration_since(self.received_at) > MAX_CLOCK_SKEW {
            let now = self.received_at.round(jiff::Unit::Second).unwrap_or(self.received_at);
            format!("is more than 5 minutes ahead of the server's clock ({now}): send the time the event happened")
        } else if max_age_days > 0
            && self.received_at.duration_since(at) > SignedDuration::from_hours(24 * i64::from(max_age_days))
        {
            format!("is older than the programme accepts (max_event_age_days: {max_age_days})")
        } else {
            return Ok(());
        };
        Err(EventError::Field { field: "occurred_at", problem })
    }

    /// The value of a meta key.
    pub fn meta_get(&self, key: &str) -> Option<&str> {
        self.meta.as_ref()?.get(key).map(String::as_str)
    }
}

/// Most keys of an object searched one by one rather than through its B-tree.
const SCAN_KEYS: usize = 8;

/// A key of a JSON object. Payloads are small: a scan asks "equal?", which fails at once on a
/// length that differs, where serde_json's B-tree asks "less or greater?" of every key it passes,
/// a full `memcmp` each (string comparisons were a tenth of an evaluation).
pub fn object_get<'a>(object: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    if object.len() <= SCAN_KEYS { object.iter().find(|(k, _)| *k == key).map(|(_, v)| v) } else { object.get(key) }
}

impl From<serde_json::Error> for EventError {
    /// Text that is not JSON, described for people (see [`describe_json_error`]).
    fn from(e: serde_json::Error) -> Self {
        EventError::Json(describe_json_error(&e))
    }
}

/// The first byte of JSON text that is not white space: says what the value is before decoding.
pub fn first_byte(bytes: &[u8]) -> Option<u8> {
    bytes.iter().copied().find(|b| !b.is_ascii_whitespace())
}

/// A word for a JSON value's type, for messages.
pub fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Describes a JSON syntax error for a client.
fn describe_json_error(e: &serde_json::Error) -> String {
    if e.is_eof() && e.line() == 1 && e.column() == 0 { "the body is empty".to_owned() } else { e.to_string() }
}

fn describe_serde_error(e: &serde_path_to_error::Error<serde_json::Error>) -> String {
    let path = e.path().to_string();
    let inner = e.inner().to_string();
    // serde_json appends " at line 1 column 0" for errors raised on a Value; it means nothing here.
    let inner = inner.split(" at line ").next().unwrap_or(&inner);
    if path == "." || inner.starts_with("unknown field") || inner.starts_with("missing field") {
        inner.to_owned()
    } else {
        format!("{path}: {inner}")
    }
}

thread_local! {
    /// Each thread keeps its own v7 clock: generating an id takes no lock another thread holds
    /// (`Uuid::now_v7` shares one behind a global mutex). Ids stay unique (random bits after the
    /// time) and ordered by millisecond; within a millisecond, by thread.
    static ID_CLOCK: uuid::ContextV7 = const { uuid::ContextV7::new() };
}

/// A new id for an event or a batch job: a UUID v7 (time-ordered), lower-case and hyphenated.
///
/// ```
/// let id = fluxflow::event::new_id();
/// assert_eq!((id.len(), &id[14..15]), (36, "7"));
/// assert_ne!(id, fluxflow::event::new_id());
/// ```
pub fn new_id() -> String {
    let clock = uuid::timestamp::context::ThreadLocalContext::new(&ID_CLOCK);
    let id = uuid::Uuid::new_v7(uuid::Timestamp::now(clock));
    id.hyphenated().encode_lower(&mut uuid::Uuid::encode_buffer()).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn err(v: Value) -> String {
        Event::from_value(v).unwrap_err().to_string()
    }

    #[test]
    fn errors_name_the_field() {
        assert!(err(json!({"type": "x", "actorId": "u"})).contains("unknown field `actorId`"));
        assert!(err(json!({"actor_id": "u"})).contains("missing field `type`"));
        assert_eq!(err(json!({"type": 5})), "type: invalid type: integer `5`, expected a string");
        assert!(err(json!({"type": "x", "meta": {"n": 1}})).starts_with("meta.n: invalid type"));
        assert!(err(json!({"type": "x", "payload": [1]})).starts_with("payload: invalid type"));
        assert_eq!(err(json!({"type": ""})), "type: must not be empty");
        assert!(err(json!({"type": "x", "actor_id": ""})).starts_with("actor_id: must not be empty"));
        assert!(
            err(json!({"type": "x", "occurred_at": "yesterday"})).starts_with("occurred_at: is not an RFC 3339 time")
        );
        assert_eq!(err(json!(null)), "an event is a JSON object, not null");
        assert_eq!(err(json!({"type": "x".repeat(300)})), "type: is longer than 256 bytes");
    }

    #[test]
    fn ids_refuse_control_characters_and_data_is_bounded_in_depth_and_keys() {
        assert_eq!(err(json!({"type": "x", "actor_id": "u\u{0}1"})), "actor_id: contains a control character (U+0000)");
        assert_eq!(err(json!({"type": "x", "id": "a\nb"})), "id: contains a control character (U+000A)");
        assert_eq!(err(json!({"type": "x\u{9b}"})), "type: contains a control character (U+009B)");
        assert!(Event::from_value(json!({"type": "x", "actor_id": "Zoë 李"})).is_ok(), "letters of any script");
        let mut deep = json!(1);
        for _ in 0..MAX_DEPTH {
            deep = json!({ "a": deep });
        }
        assert!(Event::from_value(json!({"type": "x", "payload": {"a": deep.clone()}})).is_err());
        assert_eq!(
            err(json!({"type": "x", "payload": {"a": deep}})),
            format!("payload: nests deeper than {MAX_DEPTH} levels")
        );
        let mut shallow = json!([1]);
        for _ in 0..MAX_DEPTH - 2 {
            shallow = json!([shallow]);
        }
        assert!(Event::from_value(json!({"type": "x", "payload": {"a": shallow}})).is_ok(), "32 levels are fine");
        let wide: Map<String, Value> = (0..MAX_KEYS).map(|i| (format!("k{i}"), json!(i))).collect();
        assert!(Event::from_value(json!({"type": "x", "payload": wide.clone()})).is_ok());
        let problem = err(json!({"type": "x", "payload": wide, "meta": {"one": "more"}}));
        assert_eq!(problem, format!("payload: has more than {MAX_KEYS} keys (meta's counted in)"));
    }

    #[test]
    fn keys_lists_every_key_of_the_event() {
        let listed = KEYS.map(|k| format!("`{k}`")).join(", ");
        assert!(err(json!({"type": "x", "nope": 1})).contains(&format!("expected one of {listed}")), "{listed}");
    }

    #[test]
    fn fills_missing_id_and_keeps_given_one() {
        let ev = Event::from_value(json!({"type": "x", "occurred_at": "2026-11-28T10:00:00+01:00"})).unwrap();
        assert_eq!(ev.id.len(), 36);
        let ev = Event::from_value(json!({"id": "e1", "type": "x", "payload": null})).unwrap();
        assert_eq!((ev.id.as_str(), ev.payload), ("e1", None));
        let ev = Event::from_value(json!({"id": null, "type": "x"})).unwrap();
        assert!(ev.generated_id && ev.id.len() == 36, "a null id is a missing id");
    }

    #[test]
    fn occurred_at_is_strict_rfc_3339() {
        for ok in ["2026-11-28T10:00:00Z", "2026-11-28t10:00:00.123456789+01:00", "2026-11-28T10:00:00-05:30"] {
            assert!(Event::from_value(json!({"type": "x", "occurred_at": ok})).is_ok(), "{ok}");
        }
        for bad in [
            "2026-11-28 10:00:00Z",
            "2026-11-28T10:00Z",
            "2026-11-28T10:00:00",
            "2026-13-28T10:00:00Z",
            "2026-11-28T10:00:00Z[Europe/Paris]",
        ] {
            assert!(Event::from_value(json!({"type": "x", "occurred_at": bad})).is_err(), "{bad}");
        }
    }
}
