//! The HTTP API (CONTRACT §2): a pure `app()` router over the engine, plus the access log.

pub mod body;
pub mod error;
pub mod events;
pub mod routes;
pub mod simulate;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};

use crate::engine::Engine;
use crate::engine::metrics::RouteLabels;

/// Default request body limit: 1 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1 << 20;

/// What the handlers share.
pub struct AppState {
    /// The engine.
    pub engine: Arc<Engine>,
    /// Request body limit, in bytes.
    pub max_body_bytes: usize,
}

/// The router, with every route of the contract.
pub fn app(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/events", post(events::submit))
        .route("/v1/events/batch", post(events::submit_batch))
        .route("/v1/simulate", post(simulate::simulate_events))
        .route("/v1/jobs/{job_id}", get(routes::job))
        .route("/v1/actors/{actor_id}/balance", get(routes::balance))
        .route("/v1/actors/{actor_id}/ledger", get(routes::history))
        .route("/v1/rules", get(routes::rules))
        .route("/v1/rules/reload", post(routes::reload))
        .route("/healthz", get(routes::healthz))
        .route("/readyz", get(routes::readyz))
        .route("/metrics", get(routes::metrics))
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .layer(middleware::from_fn_with_state(Arc::clone(&state), access_log))
        .with_state(state)
}

/// Counts every request by route and status, and logs one line for it.
async fn access_log(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", MatchedPath::as_str).to_owned();
    let response = next.run(request).await;
    let status = response.status().as_u16();
    state.engine.metrics.http_requests.get_or_create(&RouteLabels { route, status }).inc();
    tracing::info!(
        target: "fluxflow::access",
        %method,
        path,
        status,
        duration_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
        "request"
    );
    response
}
