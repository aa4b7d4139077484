//! Reading a JSON request body: content type, size limit, then decoding, each failure with its
//! own status and a message that says what to change.

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, header};

use super::error::{ApiError, ErrorCode};

/// Checks the content type and reads the whole body, up to `limit` bytes.
pub async fn read_json_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim();
    if !essence.eq_ignore_ascii_case("application/json") {
        let got = if content_type.is_empty() { "none".to_owned() } else { format!("`{content_type}`") };
        return Err(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            format!("Content-Type must be application/json, got {got}"),
        ));
    }
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let too_large = std::error::Error::source(&e).is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
        if too_large {
            ApiError::new(ErrorCode::BodyTooLarge, format!("request body is larger than the limit of {limit} bytes"))
        } else {
            ApiError::new(ErrorCode::InvalidJson, format!("could not read the request body: {e}"))
        }
    })
}
