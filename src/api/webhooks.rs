//! Webhook deliveries over HTTP: `GET /v1/webhooks/deliveries` lists them newest first
//! (`?state=pending|failed|delivered`, `?limit=`, `?cursor=`), `POST
//! /v1/webhooks/deliveries/{id}/retry` makes a failed one pending again.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::AppState;
use super::error::{ApiError, ErrorCode};
use super::query::Params;
use super::routes::blocking;
use crate::webhooks::{Cursor, DeliveryState, Outbox, Retried, page};

/// Deliveries listed per page: by default, and at most.
const LIMITS: (usize, usize) = (50, 500);

fn outbox(state: &AppState) -> Result<Arc<dyn Outbox>, ApiError> {
    state.outbox.clone().ok_or_else(|| {
        ApiError::new(ErrorCode::NotFound, "no ledger: the service runs with --ledger none, so it keeps no outbox")
    })
}

/// `GET /v1/webhooks/deliveries`.
pub async fn list(State(state): State<Arc<AppState>>, query: Params) -> Result<Response, ApiError> {
    let invalid = |message: String| ApiError::new(ErrorCode::InvalidQuery, message);
    let wanted = match query.get("state") {
        None => None,
        Some(text) => Some(
            DeliveryState::parse(text)
                .ok_or_else(|| invalid(format!("state must be pending, failed or delivered, got `{text}`")))?,
        ),
    };
    let (default, max) = LIMITS;
    let limit = match query.get("limit") {
        None => default,
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| invalid(format!("limit must be a whole number from 1 to {max}, got `{text}`")))?,
    };
    let cursor = match query.get("cursor") {
        None => None,
        Some(text) => Some(
            Cursor::decode(text)
                .ok_or_else(|| invalid(format!("cursor `{text}` is not one this API gave out (use next_cursor)")))?,
        ),
    };
    let outbox = outbox(&state)?;
    let rows = blocking(move || outbox.list(wanted, cursor.as_ref(), limit + 1)).await?;
    Ok(Json(page(rows, limit)).into_response())
}

/// `POST /v1/webhooks/deliveries/{delivery_id}/retry`.
pub async fn retry(State(state): State<Arc<AppState>>, Path(delivery_id): Path<String>) -> Result<Response, ApiError> {
    let outbox = outbox(&state)?;
    let id = delivery_id.clone();
    let now = crate::ledger::now_micros();
    match blocking(move || outbox.retry(&id, now)).await? {
        Retried::Queued => Ok(Json(json!({"delivery_id": delivery_id, "state": "pending"})).into_response()),
        Retried::NotFound => Err(ApiError::new(ErrorCode::NotFound, format!("no delivery `{delivery_id}`"))),
        Retried::NotFailed(now_state) => Err(ApiError::new(
            ErrorCode::NotRetryable,
            format!("delivery `{delivery_id}` is {}: only a failed one can be retried", now_state.as_str()),
        )),
    }
}
