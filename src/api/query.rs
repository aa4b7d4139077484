//! Query parameters, read strictly: each route declares the parameters it takes ([`super::table::ROUTES`]),
//! and any other parameter is a 400 `invalid_query` that names it, with the nearest allowed name
//! as a hint (`?Trace=true` must not silently lose the trace). A route that takes none refuses
//! any; so do routes missing from the table.
//!
//! `POST /v1/events`, answered before routing, calls [`parse`] itself (without a query it costs
//! one comparison); every other route is checked by the router's [`strict`] middleware, which
//! hands the parameters to the handler as a [`Params`] extractor.

use std::convert::Infallible;

use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::{ApiError, ErrorCode};
use crate::rules::schema::suggestion;

use super::table::ROUTES;
pub use super::table::{EVENTS, EVENTS_PARAMS};

/// The query parameters of a request, checked against those its route takes.
#[derive(Debug, Clone, Default)]
pub struct Params {
    pairs: Vec<(&'static str, String)>,
}

impl Params {
    /// The value of a parameter, percent-decoded; `""` for a bare `?name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| v.as_str())
    }

    /// A yes/no parameter: absent is false; `true`, `1` or a bare `?name` is true; `false` or `0`
    /// is false; anything else is a 400.
    pub fn flag(&self, name: &str) -> Result<bool, ApiError> {
        match self.get(name) {
            None | Some("false" | "0") => Ok(false),
            Some("true" | "1" | "") => Ok(true),
            Some(other) => {
                Err(ApiError::new(ErrorCode::InvalidQuery, format!("{name} must be true or false, got `{other}`")))
            }
        }
    }
}

/// Reads `query` for `route` (named in messages, `POST /v1/events`), which takes the parameters
/// `allowed`: an unknown or repeated parameter is a 400 `invalid_query` that names it.
pub fn parse(query: Option<&str>, allowed: &'static [&'static str], route: &str) -> Result<Params, ApiError> {
    let mut params = Params::default();
    let Some(query) = query else { return Ok(params) };
    let invalid = |message: String| ApiError::new(ErrorCode::InvalidQuery, message);
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(query).map_err(|e| invalid(format!("cannot read the query: {e}")))?;
    for (key, value) in pairs {
        let Some(name) = allowed.iter().copied().find(|a| *a == key) else {
            let hint = if allowed.is_empty() {
                format!(" ({route} takes no query parameters)")
            } else {
                suggestion(&key, allowed)
            };
            return Err(invalid(format!("unknown query parameter `{key}`{hint}")));
        };
        if params.get(name).is_some() {
            return Err(invalid(format!("query parameter `{name}` is given more than once")));
        }
        params.pairs.push((name, value));
    }
    Ok(params)
}

/// The parameters a route takes for a method: `Some(&[])` for a route missing from the table
/// (strict by default), `None` for a method the route does not answer (the router's 405 follows).
fn allowed(method: &Method, route: &str) -> Option<&'static [&'static str]> {
    let mut listed = false;
    for r in ROUTES {
        if r.path == route {
            listed = true;
            if method.as_str() == r.method || (r.method == "GET" && method == Method::HEAD) {
                return Some(r.params);
            }
        }
    }
    (!listed).then_some(&[])
}

/// The router's middleware: checks the query of every routed request against its route's
/// parameters and passes them on to the handler ([`Params`] as an extractor).
pub async fn strict(mut request: Request, next: Next) -> Response {
    if let Some(query) = request.uri().query() {
        let route = request.extensions().get::<MatchedPath>().map(|m| m.as_str().to_owned());
        if let Some(route) = route {
            if let Some(allowed) = allowed(request.method(), &route) {
                let named = format!("{} {route}", request.method());
                match parse(Some(query), allowed, &named) {
                    Ok(params) => {
                        request.extensions_mut().insert(params);
                    }
                    Err(e) => return e.into_response(),
                }
            }
        }
    }
    next.run(request).await
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Params {
    type Rejection = Infallible;

    /// The parameters [`strict`] checked; none when the request had no query.
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(parts.extensions.remove::<Params>().unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(result: Result<Params, ApiError>) -> String {
        format!("{:?}", result.map(|_| ()).unwrap_err())
    }

    #[test]
    fn unknown_and_repeated_parameters_are_named() {
        assert!(
            message(parse(Some("Trace=true"), EVENTS_PARAMS, "POST /v1/events"))
                .contains("unknown query parameter `Trace` (did you mean `trace`?)")
        );
        assert!(
            message(parse(Some("x=1"), &[], "GET /healthz")).contains("`x` (GET /healthz takes no query parameters)")
        );
        assert!(message(parse(Some("trace&trace=0"), EVENTS_PARAMS, "")).contains("`trace` is given more than once"));
        let params = parse(Some("limit=5&cursor=%32"), &["limit", "cursor"], "").unwrap();
        assert_eq!((params.get("limit"), params.get("cursor")), (Some("5"), Some("2")));
    }

    #[test]
    fn flags() {
        for (query, expected) in
            [(None, false), (Some("trace"), true), (Some("trace=1"), true), (Some("trace=false"), false)]
        {
            assert_eq!(parse(query, EVENTS_PARAMS, "").unwrap().flag("trace").unwrap(), expected, "{query:?}");
        }
        assert!(parse(Some("trace=maybe"), EVENTS_PARAMS, "").unwrap().flag("trace").is_err());
    }

    #[test]
    fn routes_missing_from_the_table_take_nothing_and_other_methods_are_left_to_the_router() {
        assert_eq!(allowed(&Method::GET, "/v1/actors/{actor_id}/ledger"), Some(&["limit", "cursor"][..]));
        assert_eq!(allowed(&Method::HEAD, "/healthz"), Some(&[][..]));
        assert_eq!(allowed(&Method::DELETE, "/healthz"), None);
        assert_eq!(allowed(&Method::GET, "/v1/new"), Some(&[][..]));
    }
}
