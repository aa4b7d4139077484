//! `POST /v1/actors/{id}/redeem`, `.../adjust` and `.../redemptions/{redemption id}/cancel`:
//! operations on a member's points for shops and support staff ([`crate::ledger::operations`]).
//! Bodies are read strictly (unknown keys, a wrong type or a value out of range is a 400 that
//! names the field); every operation needs an `id`, its idempotency key for this member.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::AppState;
use super::body::read_json_body;
use super::error::{ApiError, ErrorCode};
use super::routes::no_ledger;
use crate::event::MAX_NAME_LEN;
use crate::ledger::operations::{Operation, OperationOutcome, OperationRequest};

/// Most points one operation may move.
pub const MAX_POINTS: i64 = 1_000_000_000_000;
/// Longest expiry an adjustment may give, in days.
pub const MAX_EXPIRY_DAYS: u32 = 36_500;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RedeemBody {
    id: String,
    points: i64,
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AdjustBody {
    id: String,
    points: i64,
    reason: String,
    #[serde(default)]
    expiry_days: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CancelBody {
    id: String,
}

/// `POST /v1/actors/{actor_id}/redeem` `{"id", "points", "reason"?}`.
pub async fn redeem(
    State(state): State<Arc<AppState>>,
    Path(actor_id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body: RedeemBody = read(&state, &headers, body).await?;
    if !(1..=MAX_POINTS).contains(&body.points) {
        return Err(invalid("points", &format!("must be a whole number from 1 to {MAX_POINTS}")));
    }
    check_text("reason", body.reason.as_deref())?;
    let operation = Operation::Redeem { points: body.points, reason: body.reason };
    apply(&state, actor_id, body.id, operation).await
}

/// `POST /v1/actors/{actor_id}/adjust` `{"id", "points": ±N, "reason", "expiry_days"?}`.
pub async fn adjust(
    State(state): State<Arc<AppState>>,
    Path(actor_id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body: AdjustBody = read(&state, &headers, body).await?;
    if body.points == 0 || body.points.abs() > MAX_POINTS {
        return Err(invalid("points", &format!("must be a whole number from -{MAX_POINTS} to {MAX_POINTS}, not 0")));
    }
    if body.reason.trim().is_empty() {
        return Err(invalid("reason", "must say why the balance is adjusted"));
    }
    check_text("reason", Some(&body.reason))?;
    if body.expiry_days.is_some_and(|d| d > MAX_EXPIRY_DAYS) {
        return Err(invalid("expiry_days", &format!("must be at most {MAX_EXPIRY_DAYS}")));
    }
    let operation = Operation::Adjust { points: body.points, reason: body.reason, expiry_days: body.expiry_days };
    apply(&state, actor_id, body.id, operation).await
}

/// `POST /v1/actors/{actor_id}/redemptions/{redemption_id}/cancel` `{"id"}`.
pub async fn cancel(
    State(state): State<Arc<AppState>>,
    Path((actor_id, redemption_id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body: CancelBody = read(&state, &headers, body).await?;
    apply(&state, actor_id, body.id, Operation::Cancel { redemption_id }).await
}

/// Reads a body strictly, naming the field at fault.
async fn read<T: DeserializeOwned>(state: &AppState, headers: &HeaderMap, body: Body) -> Result<T, ApiError> {
    let bytes = read_json_body(headers, body, state.max_body_bytes).await?;
    let mut json = serde_json::Deserializer::from_slice(&bytes);
    serde_path_to_error::deserialize(&mut json).map_err(|e| {
        let code = if e.inner().is_syntax() || e.inner().is_eof() {
            ErrorCode::InvalidJson
        } else {
            ErrorCode::InvalidRequest
        };
        match e.path().to_string().as_str() {
            "." => ApiError::new(code, e.inner().to_string()),
            path => ApiError::new(code, format!("{path}: {}", e.inner())),
        }
    })
}

fn invalid(field: &str, problem: &str) -> ApiError {
    ApiError::new(ErrorCode::InvalidRequest, format!("{field}: {problem}"))
}

/// A name or text stored in the ledger: not empty where required, bounded, no NUL (PostgreSQL
/// text cannot hold one, so every store refuses it alike).
fn check_text(field: &str, value: Option<&str>) -> Result<(), ApiError> {
    match value {
        Some(v) if v.len() > MAX_NAME_LEN * 4 => {
            Err(invalid(field, &format!("is longer than {} bytes", MAX_NAME_LEN * 4)))
        }
        Some(v) if v.contains('\0') => Err(invalid(field, "contains a NUL character (\\u0000)")),
        _ => Ok(()),
    }
}

/// An id: not empty, and as an event's ids are ([`crate::event::name_problem`]).
fn check_name(field: &str, value: &str) -> Result<(), ApiError> {
    if value.is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    match crate::event::name_problem(value) {
        Some(problem) => Err(invalid(field, &problem)),
        None => Ok(()),
    }
}

async fn apply(state: &AppState, actor_id: String, id: String, operation: Operation) -> Result<Response, ApiError> {
    check_name("actor_id", &actor_id)?;
    check_name("id", &id)?;
    if let Operation::Cancel { redemption_id } = &operation {
        check_name("redemption id", redemption_id)?;
    }
    let ledger = state.engine.ledger().ok_or_else(no_ledger)?;
    let default_expiry_days = state.engine.live().rules.programme().expiry_days;
    let request = OperationRequest { actor_id, request_id: id, operation, default_expiry_days };
    let outcome = ledger.apply_operation(request.clone()).await.map_err(|e| {
        ApiError::new(ErrorCode::LedgerUnavailable, format!("the ledger is unavailable: {}", e.detail()))
    })?;
    let actor = &request.actor_id;
    match outcome {
        OperationOutcome::Done(answer) | OperationOutcome::Replayed(answer) => {
            Ok((StatusCode::OK, Json(answer)).into_response())
        }
        OperationOutcome::Conflict => Err(ApiError::new(
            ErrorCode::IdConflict,
            format!("id `{}` was used for another request of {actor}", request.request_id),
        )),
        OperationOutcome::InsufficientBalance { wanted, balance } => Err(ApiError::new(
            ErrorCode::InsufficientBalance,
            format!("cannot take {wanted} points from {actor}: the balance is {balance}"),
        )),
        OperationOutcome::NoSuchRedemption => {
            let Operation::Cancel { redemption_id } = &request.operation else {
                return Err(ApiError::new(ErrorCode::Internal, "a redemption was looked for outside a cancellation"));
            };
            Err(ApiError::new(ErrorCode::NotFound, format!("{actor} has no redemption `{redemption_id}`")))
        }
        OperationOutcome::AlreadyCancelled { by } => {
            Err(ApiError::new(ErrorCode::AlreadyCancelled, format!("the redemption was cancelled already, by `{by}`")))
        }
    }
}
