//! `POST /v1/simulate`: a dry run that writes nothing.
//!
//! The body is one event, an array of events, or `{"events": [...], "rules": "<YAML>"}` to try a
//! rules file that is not live.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::body::read_json_body;
use super::error::{ApiError, ErrorCode};
use crate::engine::simulate::{MAX_EVENTS, simulate};
use crate::event::Event;
use crate::graph::{LoadError, Rules};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Request {
    events: Vec<Value>,
    rules: Option<String>,
}

/// Reads the body's three forms into events and an optional rules text.
fn decode(bytes: &[u8]) -> Result<(Vec<Event>, Option<String>), ApiError> {
    let value: Value = serde_json::from_slice(bytes)?;
    let (items, rules) = match value {
        Value::Array(items) => (items, None),
        Value::Object(ref map) if map.contains_key("events") => {
            let request: Request = serde_json::from_value(value)
                .map_err(|e| ApiError::new(ErrorCode::InvalidEvent, format!("simulate request: {e}")))?;
            (request.events, request.rules)
        }
        single => (vec![single], None),
    };
    if items.is_empty() || items.len() > MAX_EVENTS {
        let message = format!("simulate takes 1 to {MAX_EVENTS} events, got {}", items.len());
        return Err(ApiError::new(ErrorCode::InvalidEvent, message));
    }
    let events = items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            Event::from_value(item).map_err(|e| ApiError::new(ErrorCode::InvalidEvent, format!("events[{i}]: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((events, rules))
}

/// Evaluates with traces and reports what the ledger would do; stores nothing.
pub async fn simulate_events(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = read_json_body(&headers, body, state.max_body_bytes).await?;
    let (events, rules_text) = decode(&bytes)?;
    let engine = Arc::clone(&state.engine);
    let answer = tokio::task::spawn_blocking(move || -> Result<Value, ApiError> {
        let live;
        let requested;
        let (rules, source): (&Rules, &str) = match rules_text {
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
        Ok(json!({"rules": {"source": source, "hash": rules.hash}, "results": results}))
    })
    .await
    .map_err(|e| ApiError::new(ErrorCode::Internal, format!("simulation task failed: {e}")))??;
    Ok(Json(answer).into_response())
}
