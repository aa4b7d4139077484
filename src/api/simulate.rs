//! `POST /v1/simulate`: a dry run that writes nothing.
//!
//! The body is one event, an array of events, or `{"events": [...], "rules": "<YAML>"}` to try a
//! rules file that is not live.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use serde_json::json;
use serde_json::value::RawValue;

use super::AppState;
use super::body::read_json_body;
use super::error::{ApiError, ErrorCode};
use super::events::decode_each;
use crate::engine::simulate::{MAX_EVENTS, SimulatedEvent, simulate};
use crate::event::{Event, KEYS as EVENT_KEYS, first_byte};
use crate::graph::{LoadError, Rules};
use crate::rules::schema::suggestion;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Request<'a> {
    #[serde(borrow)]
    events: Vec<&'a RawValue>,
    rules: Option<String>,
}

/// The answer, its keys in this order (as every answer of the service).
#[derive(Serialize)]
struct Answer {
    rules: RulesUsed,
    results: Vec<SimulatedEvent>,
}

/// Which rules the simulation used.
#[derive(Serialize)]
struct RulesUsed {
    /// `live`, or `request` for rules sent in the body.
    source: &'static str,
    /// SHA-256 of the rules text.
    hash: String,
}

/// Reads the body's three forms into events and an optional rules text. Each event is decoded as
/// strictly as `POST /v1/events` decodes it.
fn decode(bytes: &[u8]) -> Result<(Vec<Event>, Option<String>), ApiError> {
    let (items, rules): (Vec<&RawValue>, Option<String>) = match first_byte(bytes) {
        Some(b'[') => (serde_json::from_slice(bytes)?, None),
        Some(b'{') if is_request(bytes)? => {
            let request: Request = serde_json::from_slice(bytes)
                .map_err(|e| ApiError::new(ErrorCode::InvalidEvent, format!("simulate request: {e}")))?;
            (request.events, request.rules)
        }
        _ => (vec![serde_json::from_slice(bytes)?], None),
    };
    if items.is_empty() || items.len() > MAX_EVENTS {
        let message = format!("simulate takes 1 to {MAX_EVENTS} events, got {}", items.len());
        return Err(ApiError::new(ErrorCode::InvalidEvent, message));
    }
    Ok((decode_each(&items, ErrorCode::InvalidEvent)?, rules))
}

/// The keys of the `{"events": [...], "rules": "<YAML>"}` form.
const REQUEST_KEYS: [&str; 2] = ["events", "rules"];

/// True for the `{"events": [...], ...}` form: an object with an `events` key, or one with none
/// of an event's keys, so that a mistyped `{"evnts": [...]}` is named as an unknown key of the
/// request (with the nearest one), not of an event.
fn is_request(bytes: &[u8]) -> Result<bool, ApiError> {
    let keys: BTreeMap<String, IgnoredAny> = serde_json::from_slice(bytes)?;
    if !keys.contains_key("events") && keys.keys().any(|k| EVENT_KEYS.contains(&k.as_str())) {
        return Ok(false);
    }
    match keys.keys().find(|k| !REQUEST_KEYS.contains(&k.as_str())) {
        Some(unknown) => {
            let message = format!("simulate request: unknown key `{unknown}`{}", suggestion(unknown, &REQUEST_KEYS));
            Err(ApiError::new(ErrorCode::InvalidEvent, message))
        }
        None => Ok(true),
    }
}

/// Evaluates with traces and reports what the ledger would do; stores nothing.
pub async fn simulate_events(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    // It may carry a whole rules file, so it takes what `PUT /v1/rules` takes.
    let limit = state.max_body_bytes.max(super::versions::MAX_RULES_BYTES);
    let bytes = read_json_body(&headers, body, limit).await?;
    let (events, rules_text) = decode(&bytes)?;
    let engine = Arc::clone(&state.engine);
    let answer = tokio::task::spawn_blocking(move || -> Result<Answer, ApiError> {
        let live;
        let requested;
        let (rules, source): (&Rules, &'static str) = match rules_text {
            None => {
                live = engine.live();
                (&live.rules, "live")
            }
            Some(text) => {
                requested = Rules::load_str(&text, engine.registry()).map_err(|e| match e {
                    LoadError::Invalid(problems) => {
                        let problems: Vec<String> = problems.iter().map(|d| d.render("rules")).collect();
                        ApiError::new(ErrorCode::InvalidRules, "the rules in the request have problems")
                            .with("problems", json!(problems))
                    }
                    other => ApiError::new(ErrorCode::InvalidRules, other.to_string()),
                })?;
                (&requested, "request")
            }
        };
        let results = simulate(rules, &events, engine.ledger().map(|l| l.store()))?;
        Ok(Answer { rules: RulesUsed { source, hash: rules.hash.clone() }, results })
    })
    .await
    .map_err(|e| ApiError::new(ErrorCode::Internal, format!("simulation task failed: {e}")))??;
    Ok(Json(answer).into_response())
}
