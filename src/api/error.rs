//! API errors: one table maps each error code to its HTTP status; every error answers
//! `{"error": "...", "code": "..."}` with a message that names the field, index or limit.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::engine::EngineError;
use crate::engine::{PublishError, ReloadError};
use crate::event::EventError;

/// Stable, machine-readable error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// The body is not valid JSON.
    InvalidJson,
    /// The event does not fit the event shape.
    InvalidEvent,
    /// The batch is not an array of 1 to 100 valid, distinct events.
    InvalidBatch,
    /// The body is over the size limit.
    BodyTooLarge,
    /// The content type is not `application/json`.
    UnsupportedMediaType,
    /// The same id was sent with other content.
    IdConflict,
    /// The rules file is invalid.
    InvalidRules,
    /// The queue is full.
    QueueFull,
    /// Shutting down, or not ready.
    Unavailable,
    /// The ledger failed; nothing was stored.
    LedgerUnavailable,
    /// The event stream did not take a batch (`--nats`).
    StreamUnavailable,
    /// The result did not come within `event_timeout_ms`.
    Timeout,
    /// No such route or resource.
    NotFound,
    /// The route exists, but not for this method.
    MethodNotAllowed,
    /// A bad query parameter.
    InvalidQuery,
    /// An operation's body does not fit its shape.
    InvalidRequest,
    /// The balance cannot cover the points: nothing written.
    InsufficientBalance,
    /// The redemption was cancelled before, under another id.
    AlreadyCancelled,
    /// The rules file cannot be written (`PUT /v1/rules`, rollback with `--rules-source file`).
    RulesFileReadOnly,
    /// Reloading from the file, with the store as the rules' source.
    RulesSourceStore,
    /// A webhook delivery that is not failed was asked to be retried.
    NotRetryable,
    /// The request body did not arrive within `--body-timeout-ms`.
    BodyTimeout,
    /// No key, or a key that is not live (`Authorization: Bearer KEY`).
    Unauthorized,
    /// The key lacks the route's scope.
    Forbidden,
    /// Something failed inside the service.
    Internal,
}

impl ErrorCode {
    /// The code's HTTP status and its name.
    pub fn parts(self) -> (StatusCode, &'static str) {
        match self {
            ErrorCode::InvalidJson => (StatusCode::BAD_REQUEST, "invalid_json"),
            ErrorCode::InvalidEvent => (StatusCode::BAD_REQUEST, "invalid_event"),
            ErrorCode::InvalidBatch => (StatusCode::BAD_REQUEST, "invalid_batch"),
            ErrorCode::InvalidQuery => (StatusCode::BAD_REQUEST, "invalid_query"),
            ErrorCode::InvalidRequest => (StatusCode::BAD_REQUEST, "invalid_request"),
            ErrorCode::InsufficientBalance => (StatusCode::UNPROCESSABLE_ENTITY, "insufficient_balance"),
            ErrorCode::AlreadyCancelled => (StatusCode::CONFLICT, "already_cancelled"),
            ErrorCode::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            ErrorCode::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ErrorCode::IdConflict => (StatusCode::CONFLICT, "id_conflict"),
            ErrorCode::BodyTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
            ErrorCode::UnsupportedMediaType => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
            ErrorCode::InvalidRules => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_rules"),
            ErrorCode::QueueFull => (StatusCode::TOO_MANY_REQUESTS, "queue_full"),
            ErrorCode::RulesFileReadOnly => (StatusCode::CONFLICT, "rules_file_read_only"),
            ErrorCode::RulesSourceStore => (StatusCode::CONFLICT, "rules_source_store"),
            ErrorCode::BodyTimeout => (StatusCode::REQUEST_TIMEOUT, "body_timeout"),
            ErrorCode::NotRetryable => (StatusCode::CONFLICT, "not_retryable"),
            ErrorCode::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ErrorCode::Forbidden => (StatusCode::FORBIDDEN, "forbidden"),
            ErrorCode::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            ErrorCode::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ErrorCode::LedgerUnavailable => (StatusCode::SERVICE_UNAVAILABLE, "ledger_unavailable"),
            ErrorCode::StreamUnavailable => (StatusCode::SERVICE_UNAVAILABLE, "stream_unavailable"),
            ErrorCode::Timeout => (StatusCode::GATEWAY_TIMEOUT, "timeout"),
        }
    }
}

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    code: ErrorCode,
    message: String,
    details: Option<(&'static str, Value)>,
}

impl ApiError {
    /// An error with a message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError { code, message: message.into(), details: None }
    }

    /// Adds one more field to the error body (e.g. `problems`).
    pub fn with(mut self, key: &'static str, value: Value) -> Self {
        self.details = Some((key, value));
        self
    }
}

impl From<serde_json::Error> for ApiError {
    /// A body that is not JSON at all.
    fn from(e: serde_json::Error) -> Self {
        ApiError::from(EventError::from(e))
    }
}

impl From<ReloadError> for ApiError {
    /// A rules file that does not load: 422 with every problem.
    fn from(e: ReloadError) -> Self {
        ApiError::new(ErrorCode::InvalidRules, e.to_string()).with("problems", serde_json::json!(e.problems))
    }
}

impl From<PublishError> for ApiError {
    fn from(e: PublishError) -> Self {
        match e {
            PublishError::Invalid(problems) => {
                ApiError::new(ErrorCode::InvalidRules, "the rules have problems; nothing was stored")
                    .with("problems", serde_json::json!(problems))
            }
            PublishError::ReadOnly { .. } => ApiError::new(ErrorCode::RulesFileReadOnly, e.to_string()),
            PublishError::NoSuchVersion(_) => ApiError::new(ErrorCode::NotFound, e.to_string()),
            PublishError::Store(e) => ApiError::from(e),
            PublishError::NotLive(e) => ApiError::from(e),
        }
    }
}

impl From<EventError> for ApiError {
    /// An event that is not JSON (400 `invalid_json`) or does not fit the event shape
    /// (400 `invalid_event`).
    fn from(e: EventError) -> Self {
        let code = if matches!(e, EventError::Json(_)) { ErrorCode::InvalidJson } else { ErrorCode::InvalidEvent };
        ApiError::new(code, e.to_string())
    }
}

impl From<crate::access::Denied> for ApiError {
    fn from(denied: crate::access::Denied) -> Self {
        match denied {
            crate::access::Denied::Unauthorized => ApiError::new(
                ErrorCode::Unauthorized,
                "this route needs an API key: send `Authorization: Bearer KEY` with a live key",
            ),
            crate::access::Denied::Forbidden(scope) => {
                ApiError::new(ErrorCode::Forbidden, format!("this key lacks the scope `{scope}` this route needs"))
            }
        }
    }
}

impl From<crate::ledger::LedgerError> for ApiError {
    fn from(e: crate::ledger::LedgerError) -> Self {
        ApiError::new(ErrorCode::LedgerUnavailable, e.detail())
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        let code = match e {
            EngineError::QueueFull { .. } => ErrorCode::QueueFull,
            EngineError::Timeout { .. } => ErrorCode::Timeout,
            EngineError::ShuttingDown => ErrorCode::Unavailable,
            EngineError::Conflict { .. } => ErrorCode::IdConflict,
            EngineError::Ledger(_) => ErrorCode::LedgerUnavailable,
            EngineError::Internal(_) => ErrorCode::Internal,
        };
        ApiError::new(code, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.code.parts();
        let mut body = json!({"error": self.message, "code": code});
        if let (Some((key, value)), Some(map)) = (self.details, body.as_object_mut()) {
            map.insert(key.to_owned(), value);
        }
        let mut response = (status, axum::Json(body)).into_response();
        let retry =
            [ErrorCode::QueueFull, ErrorCode::Unavailable, ErrorCode::LedgerUnavailable, ErrorCode::StreamUnavailable];
        if retry.contains(&self.code) {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if self.code == ErrorCode::Unauthorized {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
