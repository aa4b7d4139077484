//! The small routes: jobs, rules, health, readiness, metrics, and JSON 404/405.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::AppState;
use super::error::{ApiError, ErrorCode};
use super::query::Params;
use crate::engine::{READY_UTILIZATION, RulesSource};
use crate::ledger::{LedgerError, LedgerStore};

/// Runs blocking work (a ledger read, a reload) off the async runtime.
pub(super) async fn blocking<T: Send + 'static, E: Into<ApiError> + Send + 'static>(
    f: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::new(ErrorCode::Internal, format!("blocking task failed: {e}")))?
        .map_err(Into::into)
}

/// Reads the ledger off the async runtime; 404 when the service runs without one.
async fn ledger_read<T: Send + 'static>(
    state: &AppState,
    read: impl FnOnce(&dyn LedgerStore) -> Result<T, LedgerError> + Send + 'static,
) -> Result<T, ApiError> {
    let engine = Arc::clone(&state.engine);
    let read = move || engine.ledger().map(|ledger| read(ledger.store())).transpose();
    blocking(read).await?.ok_or_else(no_ledger)
}

/// `GET /v1/jobs/{job_id}`.
pub async fn job(State(state): State<Arc<AppState>>, Path(job_id): Path<String>) -> Result<Response, ApiError> {
    let engine = Arc::clone(&state.engine);
    let id = job_id.clone();
    let job = blocking(move || engine.job(&id)).await?;
    let job = job.ok_or_else(|| ApiError::new(ErrorCode::NotFound, format!("no job `{job_id}`")))?;
    Ok(Json(job).into_response())
}

pub(super) fn no_ledger() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "no ledger: the service runs with --ledger none, so it keeps no balances")
}

/// `GET /v1/actors/{actor_id}/balance`: `?at=` an RFC 3339 time, past or future (default now).
/// Spendable points, pending points, the tier and the soonest-expiring lots as of then,
/// computed without writing.
pub async fn balance(
    State(state): State<Arc<AppState>>,
    Path(actor_id): Path<String>,
    query: Params,
) -> Result<Response, ApiError> {
    let at = match query.get("at") {
        None => jiff::Timestamp::now(),
        Some(text) => text.parse::<jiff::Timestamp>().map_err(|_| {
            let message = format!("at must be an RFC 3339 time such as 2026-12-01T10:00:00Z, got `{text}`");
            ApiError::new(ErrorCode::InvalidQuery, message)
        })?,
    };
    let programme = Arc::clone(state.engine.live().rules.programme());
    let actor = actor_id.clone();
    let (view, tier) = ledger_read(&state, move |store| {
        crate::ledger::lots::member_points(store, &actor, at.as_microsecond(), &programme)
    })
    .await?;
    let answer =
        BalanceAnswer { actor_id, balance: view.balance, pending: view.pending, tier, expiring: view.expiring };
    Ok(Json(answer).into_response())
}

/// The answer of `GET /v1/actors/{actor_id}/balance`, its keys in the documented order.
#[derive(serde::Serialize)]
struct BalanceAnswer {
    actor_id: String,
    balance: i64,
    pending: i64,
    tier: Option<String>,
    expiring: Vec<crate::ledger::lots::Expiring>,
}

/// Default and largest page of ledger history.
pub const HISTORY_LIMITS: (usize, usize) = (50, 500);

/// `GET /v1/actors/{actor_id}/ledger`: `?limit=` and `?cursor=` (checked by [`super::query`]).
pub async fn history(
    State(state): State<Arc<AppState>>,
    Path(actor_id): Path<String>,
    query: Params,
) -> Result<Response, ApiError> {
    let (default, max) = HISTORY_LIMITS;
    let limit = match query.get("limit") {
        None => default,
        Some(text) => match text.parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => n,
            _ => {
                let message = format!("limit must be a whole number from 1 to {max}, got `{text}`");
                return Err(ApiError::new(ErrorCode::InvalidQuery, message));
            }
        },
    };
    let before = match query.get("cursor") {
        None => None,
        Some(text) => Some(text.parse::<i64>().ok().filter(|n| *n > 0).ok_or_else(|| {
            let message = format!("cursor `{text}` is not one this API gave out (use next_cursor)");
            ApiError::new(ErrorCode::InvalidQuery, message)
        })?),
    };
    let page = ledger_read(&state, move |store| store.history(&actor_id, limit, before)).await?;
    Ok(Json(page).into_response())
}

/// `GET /v1/rules`.
pub async fn rules(State(state): State<Arc<AppState>>) -> Response {
    let live = state.engine.live();
    Json(live.view(&state.engine.settings())).into_response()
}

/// `GET /v1/rules/hits`: each scenario's matches and each action's runs on this node since it
/// started, for the live rules.
pub async fn hits(State(state): State<Arc<AppState>>) -> Response {
    let live = state.engine.live();
    Json(live.hits(&state.engine.metrics)).into_response()
}

/// `POST /v1/rules/reload`: 409 when the store is the rules' source (the file only seeded it).
pub async fn reload(
    State(state): State<Arc<AppState>>,
    caller: Option<axum::extract::Extension<Arc<crate::access::Principal>>>,
) -> Result<Response, ApiError> {
    if state.engine.rules_source() == RulesSource::Store {
        let message = "the rules come from the store (--rules-source store): publish a version with PUT /v1/rules";
        return Err(ApiError::new(ErrorCode::RulesSourceStore, message));
    }
    let engine = Arc::clone(&state.engine);
    let author = super::versions::author(caller);
    let report = blocking(move || engine.reload_by(author.as_deref())).await?;
    Ok(Json(report).into_response())
}

/// The API's description (OpenAPI 3.1), `docs/openapi.json` built into the binary.
const OPENAPI: &str = include_str!("../../docs/openapi.json");

/// `GET /v1/openapi.json`.
pub async fn openapi() -> Response {
    ([(axum::http::header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

/// `GET /healthz`.
pub async fn healthz() -> Response {
    Json(json!({"status": "ok"})).into_response()
}

/// `GET /readyz`.
pub async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let utilization = state.engine.queue_utilization();
    let ledger_ok = match state.engine.ledger() {
        None => true,
        Some(_) => {
            let engine = Arc::clone(&state.engine);
            tokio::task::spawn_blocking(move || engine.ledger().is_none_or(|l| l.is_healthy())).await.unwrap_or(false)
        }
    };
    let status = if state.engine.is_shutting_down() {
        "shutting_down"
    } else if !ledger_ok {
        "ledger_unavailable"
    } else if state.engine.rules_behind().is_some() {
        "rules_behind"
    } else if utilization > READY_UTILIZATION {
        "overloaded"
    } else {
        "ready"
    };
    let code = if status == "ready" { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, Json(json!({"queue_utilization": utilization, "status": status}))).into_response()
}

/// `GET /metrics`.
pub async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    state.engine.metrics.queue_utilization.set(state.engine.queue_utilization());
    let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    ([(header::CONTENT_TYPE, content_type)], state.engine.metrics.encode()).into_response()
}

/// Any unknown path.
pub async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::new(ErrorCode::NotFound, format!("no route for {method} {}", uri.path()))
}

/// A known path with the wrong method.
pub async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(ErrorCode::MethodNotAllowed, format!("{method} is not allowed on {}", uri.path()))
}
