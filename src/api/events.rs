//! `POST /v1/events` and `POST /v1/events/batch`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use serde_json::value::RawValue;

use super::AppState;
use super::body::read_json_body;
use super::error::{ApiError, ErrorCode};
use super::query;
use crate::event::{Event, first_byte, json_kind};
use crate::intake::{http, jobs};
use crate::result::EventResult;

/// Most events in one batch.
pub const MAX_BATCH: usize = 100;

/// The router's handler for the route; [`crate::api::Api`] answers `POST /v1/events` before
/// routing, so this runs only when the router is used on its own.
pub async fn submit(State(state): State<Arc<AppState>>, request: Request) -> Result<Response, ApiError> {
    submit_request(&state, request).await
}

/// Evaluates one event and answers its result.
pub async fn submit_request(state: &AppState, request: Request) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    let trace = query::parse(parts.uri.query(), query::EVENTS_PARAMS, "POST /v1/events")?.flag("trace")?;
    let bytes = read_json_body(&parts.headers, body, state.max_body_bytes).await?;
    let event = Event::from_slice(&bytes)?;
    if event.occurred_at.is_some() {
        event.check_time(state.engine.max_event_age_days())?;
    }
    let result = http::process(&state.engine, event, trace).await?;
    Ok(result_response(&result))
}

/// A result as a JSON response: the JSON the ledger stored when that is the answer, else
/// encoded into a buffer sized for a typical result at once (`Json` starts small and grows, a
/// copy each time).
fn result_response(result: &EventResult) -> Response {
    let json = HeaderValue::from_static("application/json");
    if let Some(stored) = result.answer_json() {
        return ([(header::CONTENT_TYPE, json)], stored.clone()).into_response();
    }
    let mut body = Vec::with_capacity(RESULT_CAPACITY);
    match serde_json::to_writer(&mut body, result) {
        Ok(()) => ([(header::CONTENT_TYPE, json)], body).into_response(),
        Err(e) => ApiError::new(ErrorCode::Internal, format!("cannot encode the result: {e}")).into_response(),
    }
}

/// Bytes reserved for a result's JSON: the README event's result takes about 330.
const RESULT_CAPACITY: usize = 512;

/// Queues a batch of 1 to 100 events and answers 202 with the job.
pub async fn submit_batch(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = read_json_body(&headers, body, state.max_body_bytes).await?;
    let events = decode_batch(&bytes)?;
    let max_age = state.engine.max_event_age_days();
    for (index, event) in events.iter().enumerate() {
        event
            .check_time(max_age)
            .map_err(|e| ApiError::new(ErrorCode::InvalidBatch, format!("events[{index}]: {e}")))?;
    }
    let receipt = match &state.stream {
        Some(stream) => {
            let events: Vec<Arc<Event>> = events.into_iter().map(Arc::new).collect();
            let receipt = jobs::record_streamed(&state.engine, &events).await?;
            // Stored first, so the job answers for each event as the stream's consumers apply it.
            stream.publish_batch(&receipt.job_id, &events).await.map_err(|e| {
                tracing::warn!(job_id = %receipt.job_id, error = %e, "batch not handed to the event stream");
                ApiError::new(ErrorCode::StreamUnavailable, e.to_string())
            })?;
            receipt
        }
        None => jobs::submit(&state.engine, events).await?,
    };
    Ok((StatusCode::ACCEPTED, Json(receipt)).into_response())
}

/// Decodes each element as strictly as `POST /v1/events` does; the first invalid one fails them
/// all, named by its index.
pub(super) fn decode_each(items: &[&RawValue], code: ErrorCode) -> Result<Vec<Event>, ApiError> {
    let decode = |(index, item): (usize, &&RawValue)| {
        Event::from_slice(item.get().as_bytes()).map_err(|e| ApiError::new(code, format!("events[{index}]: {e}")))
    };
    items.iter().enumerate().map(decode).collect()
}

/// Checks every element; any invalid one fails the whole batch, naming its index.
fn decode_batch(bytes: &[u8]) -> Result<Vec<Event>, ApiError> {
    let invalid = |message: String| ApiError::new(ErrorCode::InvalidBatch, message);
    if first_byte(bytes) != Some(b'[') {
        let value: Value = serde_json::from_slice(bytes)?;
        return Err(invalid(format!("a batch is a JSON array of events, not {}", json_kind(&value))));
    }
    let items: Vec<&RawValue> = serde_json::from_slice(bytes)?;
    if items.is_empty() {
        return Err(invalid("batch must contain at least one event".into()));
    }
    if items.len() > MAX_BATCH {
        return Err(invalid(format!("batch size {} exceeds max {MAX_BATCH}", items.len())));
    }
    let events = decode_each(&items, ErrorCode::InvalidBatch)?;
    let mut seen: HashMap<&str, usize> = HashMap::with_capacity(events.len());
    for (index, event) in events.iter().enumerate() {
        if let Some(first) = seen.insert(event.id.as_str(), index) {
            return Err(invalid(format!("events[{index}]: id `{}` repeats events[{first}]", event.id)));
        }
    }
    Ok(events)
}
