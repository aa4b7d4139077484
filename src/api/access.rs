//! What a request needs of its caller, found in the route table ([`super::table`]) by method
//! and path; read by the check in front of the whole API ([`super::Api`]), the fast event path
//! included. A path that matches no route needs a live key (then answers 404 or 405).

use axum::http::Method;

use crate::access::Need;

use super::table::{ROUTES, Route};

/// What a request for `method` and `path` needs. `HEAD` needs what `GET` does.
pub fn need(method: &Method, path: &str) -> Need {
    route(method, path).map_or(Need::Key, |route| route.need)
}

/// The route pattern `method` and `path` match, for the request metric.
pub fn route_pattern(method: &Method, path: &str) -> Option<&'static str> {
    route(method, path).map(|route| route.path)
}

fn route(method: &Method, path: &str) -> Option<&'static Route> {
    let method = if method == Method::HEAD { "GET" } else { method.as_str() };
    ROUTES.iter().find(|route| route.method == method && matches(route.path, path))
}

/// Whether `path` fits `pattern`, segment by segment.
fn matches(pattern: &str, path: &str) -> bool {
    let mut path_segments = path.split('/');
    for expected in pattern.split('/') {
        match path_segments.next() {
            Some(segment) if expected.starts_with('{') => {
                if segment.is_empty() {
                    return false;
                }
            }
            Some(segment) if segment == expected => {}
            _ => return false,
        }
    }
    path_segments.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::Scope;

    #[test]
    fn paths_find_their_route_and_anything_else_needs_a_key() {
        assert_eq!(need(&Method::GET, "/v1/actors/u1/balance"), Need::Scope(Scope::MembersRead));
        assert_eq!(need(&Method::HEAD, "/healthz"), Need::Open);
        assert_eq!(need(&Method::POST, "/v1/actors/u1/redemptions/r1/cancel"), Need::Scope(Scope::MembersWrite));
        assert_eq!(need(&Method::GET, "/v1/actors//balance"), Need::Key);
        assert_eq!(need(&Method::GET, "/v1/actors/u1/balance/x"), Need::Key);
        assert_eq!(need(&Method::DELETE, "/v1/rules"), Need::Key);
        assert_eq!(need(&Method::GET, "/nope"), Need::Key);
    }
}
