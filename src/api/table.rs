//! Every route of the API in one table: its method, its path pattern (`{…}` matches one
//! segment), the query parameters it takes ([`super::query`]) and what it needs of the caller
//! ([`super::access`]).

use crate::access::{Need, Scope};

/// One route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// `GET`, `POST`, `PUT` (`HEAD` is answered as `GET`).
    pub method: &'static str,
    /// The path pattern, as the router declares it.
    pub path: &'static str,
    /// The query parameters it takes; any other is a 400.
    pub params: &'static [&'static str],
    /// What the caller needs.
    pub need: Need,
}

const fn route(method: &'static str, path: &'static str, params: &'static [&'static str], need: Need) -> Route {
    Route { method, path, params, need }
}

/// The single-event route.
pub const EVENTS: &str = "/v1/events";

/// The parameters of `POST /v1/events`.
pub const EVENTS_PARAMS: &[&str] = &["trace"];

/// Every route.
pub const ROUTES: &[Route] = &[
    route("POST", EVENTS, EVENTS_PARAMS, Need::Scope(Scope::EventsWrite)),
    route("POST", "/v1/events/batch", &[], Need::Scope(Scope::EventsWrite)),
    route("POST", "/v1/simulate", &[], Need::Scope(Scope::RulesRead)),
    route("GET", "/v1/jobs/{job_id}", &[], Need::Scope(Scope::EventsRead)),
    route("GET", "/v1/actors/{actor_id}/balance", &["at"], Need::Scope(Scope::MembersRead)),
    route("GET", "/v1/actors/{actor_id}/ledger", &["limit", "cursor"], Need::Scope(Scope::MembersRead)),
    route("POST", "/v1/actors/{actor_id}/redeem", &[], Need::Scope(Scope::MembersWrite)),
    route("POST", "/v1/actors/{actor_id}/adjust", &[], Need::Scope(Scope::MembersWrite)),
    route("POST", "/v1/actors/{actor_id}/redemptions/{redemption_id}/cancel", &[], Need::Scope(Scope::MembersWrite)),
    route("GET", "/v1/rules", &[], Need::Scope(Scope::RulesRead)),
    route("PUT", "/v1/rules", &[], Need::Scope(Scope::RulesWrite)),
    route("GET", "/v1/rules/versions", &[], Need::Scope(Scope::RulesRead)),
    route("GET", "/v1/rules/versions/{rules_version}", &[], Need::Scope(Scope::RulesRead)),
    route("GET", "/v1/rules/hits", &[], Need::Scope(Scope::RulesRead)),
    route("POST", "/v1/rules/rollback", &[], Need::Scope(Scope::RulesWrite)),
    route("POST", "/v1/rules/reload", &[], Need::Scope(Scope::RulesWrite)),
    route("GET", "/v1/webhooks/deliveries", &["state", "limit", "cursor"], Need::Scope(Scope::EventsRead)),
    route("POST", "/v1/webhooks/deliveries/{delivery_id}/retry", &[], Need::Scope(Scope::EventsWrite)),
    route("GET", "/healthz", &[], Need::Open),
    route("GET", "/readyz", &[], Need::Open),
    route("GET", "/metrics", &[], Need::Scope(Scope::MetricsRead)),
    route("GET", "/v1/openapi.json", &[], Need::Open),
    route("GET", "/console", &[], Need::Open),
    route("GET", "/console/{asset}", &[], Need::Open),
];
