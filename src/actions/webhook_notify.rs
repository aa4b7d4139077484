//! `webhook_notify`: tell another system (a CRM, mail or push service) what an event did. The
//! action only queues: the delivery is written to the ledger's outbox in the event's own
//! transaction, and a delivery worker POSTs it later, signed, with retries
//! ([`crate::webhooks`]). So a slow or dead receiver never slows events, and a delivery exists
//! exactly when its event was committed.

use std::sync::Arc;

use axum::http::Uri;

use super::{Action, ActionKind, Failure, Outcome, Plan};
use crate::event::Event;
use crate::facts::Facts;
use crate::rules::schema::{Fields, describe};
use crate::rules::yaml::{Node, NodeKind};
use crate::rules::{ActionDef, Diagnostics};

/// The `webhook_notify` action type.
pub struct WebhookNotify;

/// The keys allowed in the params of `webhook_notify`.
pub const PARAMS: [&str; 5] = ["url", "secret", "headers", "timeout_ms", "max_attempts"];

/// Where and how a delivery goes: the action's params, checked at load.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WebhookTarget {
    /// `http://` or `https://`.
    pub url: String,
    /// The environment variable holding the signing secret (`secret: ${NAME}`), never its value.
    pub secret_env: Option<String>,
    /// Extra request headers.
    pub headers: Vec<(String, String)>,
    /// How long one attempt may take, in milliseconds.
    pub timeout_ms: u64,
    /// Attempts before the delivery is given up as failed.
    pub max_attempts: u32,
}

/// A target as the outbox stores it: checked at load and encoded once, so that queuing a
/// delivery costs the ledger's writer no encoding.
#[derive(Debug)]
pub struct Notification {
    /// Where and how deliveries go.
    pub target: WebhookTarget,
    /// `target` as JSON text.
    pub target_json: String,
}

/// A compiled `webhook_notify` action.
#[derive(Debug)]
pub struct WebhookNotifyAction {
    notification: Arc<Notification>,
}

impl ActionKind for WebhookNotify {
    fn type_name(&self) -> &'static str {
        "webhook_notify"
    }

    fn compile(&self, def: &ActionDef, diags: &mut Diagnostics) -> Option<Box<dyn Action>> {
        let id = &def.id;
        let Some(params) = &def.params_node else {
            diags.error(def.pos, format!("action `{id}` needs `params` with `url`"));
            return None;
        };
        let fields = Fields::new(params, &format!("the params of action `{id}`"), &PARAMS, diags)?;
        let url = match fields.get("url") {
            Some(node) => url(node, id, diags),
            None => {
                diags.error(params.pos, format!("action `{id}` needs `url`, such as https://crm.example.com/hooks"));
                None
            }
        };
        let secret_env = match fields.get("secret") {
            None => Some(None),
            Some(node) => secret(node, id, diags).map(Some),
        };
        let headers = match fields.get("headers") {
            None => Some(Vec::new()),
            Some(node) => headers(node, id, diags),
        };
        let timeout_ms = whole(fields.get("timeout_ms"), "timeout_ms", id, 5_000, 1..=60_000, diags);
        let max_attempts = whole(fields.get("max_attempts"), "max_attempts", id, 8, 1..=100, diags);
        let target = WebhookTarget {
            url: url?,
            secret_env: secret_env?,
            headers: headers?,
            timeout_ms: timeout_ms?,
            max_attempts: u32::try_from(max_attempts?).ok()?,
        };
        let target_json = serde_json::to_string(&target).ok()?;
        Some(Box::new(WebhookNotifyAction { notification: Arc::new(Notification { target, target_json }) }))
    }
}

fn text(node: &Node) -> Option<&str> {
    node.scalar().map(|(text, _)| text).filter(|_| !node.is_null())
}

/// Reads `url`: an absolute `http` or `https` URL with a host.
fn url(node: &Node, id: &str, diags: &mut Diagnostics) -> Option<String> {
    let owner = format!("the `url` of action `{id}`");
    let Some(text) = text(node) else {
        diags.error(node.pos, format!("{owner} must be an http or https URL, got {}", describe(node)));
        return None;
    };
    let parsed = text.parse::<Uri>().ok().filter(|uri| uri.host().is_some_and(|h| !h.is_empty()));
    match parsed.as_ref().and_then(Uri::scheme_str) {
        Some("http" | "https") => Some(text.to_owned()),
        _ => {
            diags.error(node.pos, format!("{owner} must be an http or https URL with a host, got `{text}`"));
            None
        }
    }
}

/// Reads `secret`: `${NAME}`, an environment variable that is set; a literal is refused.
fn secret(node: &Node, id: &str, diags: &mut Diagnostics) -> Option<String> {
    let owner = format!("the `secret` of action `{id}`");
    let text = text(node).unwrap_or_default();
    let name = text.strip_prefix("${").and_then(|rest| rest.strip_suffix('}'));
    let valid = |name: &str| {
        !name.is_empty()
            && name.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
            && !name.starts_with(|c: char| c.is_ascii_digit())
    };
    match name {
        Some(name) if valid(name) => match std::env::var_os(name) {
            Some(value) if !value.is_empty() => Some(name.to_owned()),
            _ => {
                diags.error(node.pos, format!("{owner} reads the environment variable {name}, which is not set"));
                None
            }
        },
        _ => {
            diags.error(
                node.pos,
                format!("{owner} must name an environment variable, such as ${{CRM_WEBHOOK_SECRET}}: secrets are not written in rules files"),
            );
            None
        }
    }
}

/// Reads `headers`: a map of header names to text values.
fn headers(node: &Node, id: &str, diags: &mut Diagnostics) -> Option<Vec<(String, String)>> {
    let owner = format!("the `headers` of action `{id}`");
    let NodeKind::Map(entries) = &node.kind else {
        diags.error(node.pos, format!("{owner} must be a map of header names to values, got {}", describe(node)));
        return None;
    };
    let mut headers = Vec::new();
    let mut fine = true;
    for (key, value) in entries {
        let (Some(name), Some(value_text)) = (text(key), text(value)) else {
            diags.error(key.pos, format!("{owner}: each header is a name and a text value"));
            fine = false;
            continue;
        };
        let name_ok = axum::http::HeaderName::from_bytes(name.as_bytes()).is_ok();
        let value_ok = axum::http::HeaderValue::from_str(value_text).is_ok();
        if !name_ok || !value_ok {
            diags.error(key.pos, format!("{owner}: `{name}` is not a valid header name and value"));
            fine = false;
            continue;
        }
        headers.push((name.to_owned(), value_text.to_owned()));
    }
    fine.then_some(headers)
}

/// Reads a whole number in `range`, or the default when absent.
fn whole(
    node: Option<&Node>,
    key: &str,
    id: &str,
    default: u64,
    range: std::ops::RangeInclusive<u64>,
    diags: &mut Diagnostics,
) -> Option<u64> {
    let Some(node) = node else { return Some(default) };
    match text(node).and_then(|t| t.parse::<u64>().ok()).filter(|n| range.contains(n)) {
        Some(n) => Some(n),
        None => {
            let (low, high) = (range.start(), range.end());
            diags.error(
                node.pos,
                format!("`{key}` of action `{id}` must be a whole number from {low} to {high}, got {}", describe(node)),
            );
            None
        }
    }
}

impl Action for WebhookNotifyAction {
    fn plan(&self, _facts: &Facts<'_>) -> Plan {
        Plan::Notify
    }

    fn notification(&self) -> Option<Arc<Notification>> {
        Some(Arc::clone(&self.notification))
    }

    fn message(&self, outcome: &Outcome, _event: &Event) -> String {
        match outcome {
            Outcome::Done(_) => format!("Webhook queued for {}", self.notification.target.url),
            Outcome::Failed(Failure::NoOutbox) => {
                "Webhook not queued: it needs a ledger (--ledger none keeps no outbox)".to_owned()
            }
            _ => format!("Webhook not queued for {}", self.notification.target.url),
        }
    }
}
