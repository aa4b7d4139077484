//! The HTTP API: a pure `app()` service over the engine, with the access check in front of every
//! route and the access log.

pub mod access;
pub mod body;
pub mod console;
pub mod error;
pub mod events;
pub mod operations;
pub mod query;
pub mod routes;
pub mod simulate;
pub mod table;
pub mod versions;
pub mod webhooks;

use std::borrow::Cow;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tower_service::Service;

use crate::access::{Access, Need, Scope};
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
    /// With `--nats`, where batches go: the event stream, instead of this node's queue.
    pub stream: Option<crate::intake::nats::StreamPublisher>,
    /// The API keys every request is checked against.
    pub access: Arc<Access>,
    /// The webhook outbox, with a ledger.
    pub outbox: Option<Arc<dyn crate::webhooks::Outbox>>,
}

/// The HTTP service: every route of the contract. `POST /v1/events`, nearly every request under
/// load, is answered before routing (the router's matching, middleware and extractors cost a
/// tenth of the service's time per event); every other request goes through the router. Each
/// request is counted and logged either way.
#[derive(Clone)]
pub struct Api {
    state: Arc<AppState>,
    router: Router,
}

/// The service over `state`.
pub fn app(state: Arc<AppState>) -> Api {
    Api { router: router(Arc::clone(&state)), state }
}

fn router(state: Arc<AppState>) -> Router {
    Router::new()
        // `Api::call` answers POST itself; the route is here so that other methods get 405.
        .route(EVENTS_ROUTE, post(events::submit))
        .route("/v1/events/batch", post(events::submit_batch))
        .route("/v1/simulate", post(simulate::simulate_events))
        .route("/v1/jobs/{job_id}", get(routes::job))
        .route("/v1/actors/{actor_id}/balance", get(routes::balance))
        .route("/v1/actors/{actor_id}/ledger", get(routes::history))
        .route("/v1/actors/{actor_id}/redeem", post(operations::redeem))
        .route("/v1/actors/{actor_id}/adjust", post(operations::adjust))
        .route("/v1/actors/{actor_id}/redemptions/{redemption_id}/cancel", post(operations::cancel))
        .route("/v1/rules", get(routes::rules).put(versions::publish))
        .route("/v1/rules/versions", get(versions::list))
        .route("/v1/rules/versions/{rules_version}", get(versions::show))
        .route("/v1/rules/hits", get(routes::hits))
        .route("/v1/rules/rollback", post(versions::rollback))
        .route("/v1/rules/reload", post(routes::reload))
        .route("/healthz", get(routes::healthz))
        .route("/readyz", get(routes::readyz))
        .route("/v1/webhooks/deliveries", get(webhooks::list))
        .route("/v1/webhooks/deliveries/{delivery_id}/retry", post(webhooks::retry))
        .route("/metrics", get(routes::metrics))
        .route("/v1/openapi.json", get(routes::openapi))
        .route("/console", get(console::page))
        .route("/console/{asset}", get(console::asset))
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .layer(middleware::from_fn(query::strict))
        .layer(middleware::from_fn_with_state(Arc::clone(&state), access_log))
        .with_state(state)
}

/// The single-event route.
const EVENTS_ROUTE: &str = query::EVENTS;

impl Service<Request> for Api {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        let fast = request.method() == Method::POST && request.uri().path() == EVENTS_ROUTE;
        let need =
            if fast { Need::Scope(Scope::EventsWrite) } else { access::need(request.method(), request.uri().path()) };
        let authorization = request.headers().get(header::AUTHORIZATION).map(|value| value.as_bytes());
        match self.state.access.check(authorization, need) {
            Ok(Some(principal)) => {
                request.extensions_mut().insert(principal);
            }
            Ok(None) => {}
            Err(denied) => return Box::pin(std::future::ready(Ok(self.refuse(&request, denied)))),
        }
        if fast {
            let state = Arc::clone(&self.state);
            Box::pin(async move {
                let started = Instant::now();
                let response = events::submit_request(&state, request).await.into_response();
                count_request(&state, Cow::Borrowed(EVENTS_ROUTE), response.status());
                log_request(&Method::POST, EVENTS_ROUTE, response.status(), started);
                Ok(response)
            })
        } else {
            Box::pin(self.router.call(request))
        }
    }
}

impl Api {
    /// The engine's metrics, for what the connection layer counts.
    pub fn metrics(&self) -> &crate::engine::metrics::Metrics {
        &self.state.engine.metrics
    }

    /// Answers 401 or 403, counted under the route's pattern and logged.
    fn refuse(&self, request: &Request, denied: crate::access::Denied) -> Response {
        let response = error::ApiError::from(denied).into_response();
        let route = access::route_pattern(request.method(), request.uri().path()).unwrap_or("unmatched");
        count_request(&self.state, Cow::Borrowed(route), response.status());
        log_request(request.method(), request.uri().path(), response.status(), Instant::now());
        response
    }
}

/// Counts and logs requests that went through the router (the router knows the matched route).
async fn access_log(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", MatchedPath::as_str).to_owned();
    let response = next.run(request).await;
    count_request(&state, Cow::Owned(route), response.status());
    log_request(&method, &path, response.status(), started);
    response
}

/// Counts a request by route and status.
fn count_request(state: &AppState, route: Cow<'static, str>, status: StatusCode) {
    state.engine.metrics.http_requests.get_or_create(&RouteLabels { route, status: status.as_u16() }).inc();
}

/// Logs one access line.
fn log_request(method: &Method, path: &str, status: StatusCode, started: Instant) {
    let duration_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    crate::logs::access(method.as_str(), path, status.as_u16(), duration_us);
}
