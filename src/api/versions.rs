//! Rules versions over HTTP: `PUT /v1/rules` publishes the YAML body as a new version,
//! `GET /v1/rules/versions` lists them newest first (`/{rules_version}` gives one with its text), `POST /v1/rules/rollback` makes an earlier
//! one live again as a new version.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Extension, Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::AppState;
use super::body::{check_content_type, read_body};
use super::error::{ApiError, ErrorCode};
use super::routes::blocking;
use crate::access::Principal;
use crate::ledger::versions::{RulesVersion, VersionSource};

/// Largest rules text `PUT /v1/rules` takes.
pub const MAX_RULES_BYTES: usize = 16 * 1024 * 1024;
/// The versions `GET /v1/rules/versions` lists, at most.
const MAX_LISTED: usize = 1_000;
/// The content types a rules text may be sent as.
const YAML_TYPES: [&str; 3] = ["application/yaml", "text/yaml", "application/x-yaml"];

/// `PUT /v1/rules`: validates the YAML, stores it as a new version and makes it live here (the
/// other nodes follow within a second); answers once it is live on this node.
pub async fn publish(
    State(state): State<Arc<AppState>>,
    caller: Option<Extension<Arc<Principal>>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let yaml = read_yaml(&headers, body).await?;
    let engine = Arc::clone(&state.engine);
    let author = author(caller);
    let (rules_version, hash) = blocking(move || engine.publish(&yaml, author.as_deref(), VersionSource::Api)).await?;
    Ok(Json(json!({"rules_version": rules_version, "hash": hash})).into_response())
}

/// The answer of `GET /v1/rules/versions`.
#[derive(Serialize)]
struct Versions {
    versions: Vec<RulesVersion>,
}

/// `GET /v1/rules/versions`.
pub async fn list(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let engine = Arc::clone(&state.engine);
    let versions = blocking(move || engine.rules_versions(MAX_LISTED)).await?;
    Ok(Json(Versions { versions }).into_response())
}

/// The answer of `GET /v1/rules/versions/{rules_version}`: the version as listed, and its text.
#[derive(Serialize)]
struct VersionText {
    #[serde(flatten)]
    version: RulesVersion,
    text: String,
}

/// `GET /v1/rules/versions/{rules_version}`: one version with its YAML text (the console diffs
/// two of them). A number that names no version, or is not a number, is 404.
pub async fn show(State(state): State<Arc<AppState>>, Path(number): Path<String>) -> Result<Response, ApiError> {
    let missing = || ApiError::new(ErrorCode::NotFound, format!("there is no rules version {number}"));
    let rules_version: u64 = number.parse().map_err(|_| missing())?;
    let engine = Arc::clone(&state.engine);
    let found = blocking(move || engine.rules_version_text(rules_version)).await?;
    let (version, text) = found.ok_or_else(missing)?;
    Ok(Json(VersionText { version, text }).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Rollback {
    rules_version: u64,
}

/// `POST /v1/rules/rollback {"rules_version": N}`.
pub async fn rollback(
    State(state): State<Arc<AppState>>,
    caller: Option<Extension<Arc<Principal>>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = super::body::read_json_body(&headers, body, state.max_body_bytes).await?;
    let request: Rollback = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::new(ErrorCode::InvalidRequest, format!("rollback request: {e}")))?;
    let engine = Arc::clone(&state.engine);
    let author = author(caller);
    let (rules_version, hash) = blocking(move || engine.rollback(request.rules_version, author.as_deref())).await?;
    Ok(Json(json!({"rules_version": rules_version, "hash": hash})).into_response())
}

/// The body as a YAML text: a YAML content type, at most [`MAX_RULES_BYTES`], UTF-8.
async fn read_yaml(headers: &HeaderMap, body: Body) -> Result<String, ApiError> {
    check_content_type(headers, &YAML_TYPES)?;
    let bytes = read_body(body, MAX_RULES_BYTES).await?;
    String::from_utf8(bytes.to_vec()).map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidRules,
            format!("the rules text is not UTF-8 (byte {})", e.utf8_error().valid_up_to()),
        )
    })
}

/// The name of the key that asked for a rules change, recorded as the version's author (none
/// while the API is open).
pub(super) fn author(caller: Option<Extension<Arc<Principal>>>) -> Option<String> {
    caller.map(|Extension(principal)| principal.name.to_string())
}
