//! `GET /console`: the web console, three hand-written files built into the binary (nothing is
//! fetched from another host, and `cargo build` is the only build step). The page itself needs
//! no key; it asks for one and sends it with every API call it makes.

use axum::extract::Path;
use axum::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, X_CONTENT_TYPE_OPTIONS};
use axum::http::{HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};

use super::error::{ApiError, ErrorCode};

/// The console's files: name under `/console/`, content type, text.
const ASSETS: [(&str, &str, &str); 2] = [
    ("app.js", "text/javascript; charset=utf-8", include_str!("../../console/app.js")),
    ("app.css", "text/css; charset=utf-8", include_str!("../../console/app.css")),
];

const PAGE: &str = include_str!("../../console/index.html");

/// Only this origin's scripts, styles and API; no framing (the console can roll rules back).
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'";

/// `GET /console`: the page.
pub async fn page() -> Response {
    served("text/html; charset=utf-8", PAGE)
}

/// `GET /console/{asset}`: its script and style sheet.
pub async fn asset(Path(name): Path<String>) -> Result<Response, ApiError> {
    let (_, content_type, text) = ASSETS
        .iter()
        .find(|(asset, _, _)| *asset == name)
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, format!("the console has no file `{name}`")))?;
    Ok(served(content_type, text))
}

fn served(content_type: &'static str, text: &'static str) -> Response {
    let headers = [
        (CONTENT_TYPE, HeaderValue::from_static(content_type)),
        // Revalidated each time, so a new binary's console is seen at once.
        (CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (CONTENT_SECURITY_POLICY, HeaderValue::from_static(POLICY)),
        (X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        (HeaderName::from_static("referrer-policy"), HeaderValue::from_static("no-referrer")),
    ];
    (headers, text).into_response()
}
