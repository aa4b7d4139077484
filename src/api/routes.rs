//! The small routes: jobs, rules, health, readiness, metrics, and JSON 404/405.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::AppState;
use super::error::{ApiError, ErrorCode};
use crate::engine::READY_UTILIZATION;

/// `GET /v1/jobs/{job_id}`.
pub async fn job(State(state): State<Arc<AppState>>, Path(job_id): Path<String>) -> Result<Response, ApiError> {
    let job = state
        .engine
        .jobs
        .get(&job_id)
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, format!("no job `{job_id}`")))?;
    Ok(Json(job).into_response())
}

/// `GET /v1/rules`.
pub async fn rules(State(state): State<Arc<AppState>>) -> Response {
    let live = state.engine.live();
    Json(live.view()).into_response()
}

/// `POST /v1/rules/reload`.
pub async fn reload(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let engine = Arc::clone(&state.engine);
    let outcome = tokio::task::spawn_blocking(move || engine.reload())
        .await
        .map_err(|e| ApiError::new(ErrorCode::Internal, format!("reload task failed: {e}")))?;
    match outcome {
        Ok(report) => Ok(Json(report).into_response()),
        Err(e) => Err(ApiError::new(ErrorCode::InvalidRules, e.to_string()).with("problems", json!(e.problems))),
    }
}

/// `GET /healthz`.
pub async fn healthz() -> Response {
    Json(json!({"status": "ok"})).into_response()
}

/// `GET /readyz`.
pub async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let utilization = state.engine.queue_utilization();
    state.engine.metrics.queue_utilization.set(utilization);
    let status = if state.engine.is_shutting_down() {
        "shutting_down"
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
