//! Reading a request body: content type, size limit, then decoding, each failure with its own
//! status and a message that says what to change.

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, header};

use super::error::{ApiError, ErrorCode};
use crate::service::connections::BodyTimeout;

/// Checks the content type and reads the whole body, up to `limit` bytes.
pub async fn read_json_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, ApiError> {
    check_content_type(headers, &["application/json"])?;
    read_body(body, limit).await
}

/// Refuses a body whose content type is none of `allowed` (the first is the one to name).
pub fn check_content_type(headers: &HeaderMap, allowed: &[&str]) -> Result<(), ApiError> {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim();
    if allowed.iter().any(|t| essence.eq_ignore_ascii_case(t)) {
        return Ok(());
    }
    let got = if content_type.is_empty() { "none".to_owned() } else { format!("`{content_type}`") };
    let expected = match allowed {
        [only] => (*only).to_owned(),
        [first, rest @ ..] => format!("{first} (or {})", rest.join(", ")),
        [] => "none".to_owned(),
    };
    Err(ApiError::new(ErrorCode::UnsupportedMediaType, format!("Content-Type must be {expected}, got {got}")))
}

/// Reads the whole body, up to `limit` bytes (and within the connection's body timeout).
pub async fn read_body(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let too_large = std::error::Error::source(&e).is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
        let timeout = caused_by::<BodyTimeout>(&e);
        if too_large {
            ApiError::new(ErrorCode::BodyTooLarge, format!("request body is larger than the limit of {limit} bytes"))
        } else if let Some(timeout) = timeout {
            ApiError::new(ErrorCode::BodyTimeout, timeout.to_string())
        } else {
            ApiError::new(ErrorCode::InvalidJson, format!("could not read the request body: {e}"))
        }
    })
}

/// The first error of type `E` in `error`'s chain of sources.
fn caused_by<'a, E: std::error::Error + 'static>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a E> {
    let mut next = Some(error);
    while let Some(current) = next {
        if let Some(found) = current.downcast_ref::<E>() {
            return Some(found);
        }
        next = current.source();
    }
    None
}
