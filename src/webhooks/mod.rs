//! Webhook deliveries: the outbox the ledger writes in each event's transaction
//! (`webhook_notify`), and the worker that POSTs what is due, signed, with retries.
//!
//! - A delivery is claimed with a lease before it is attempted, so one node at a time tries it
//!   (PostgreSQL: `FOR UPDATE SKIP LOCKED`); a node that dies mid-attempt leaves a lease that
//!   runs out, and the delivery is tried again: at least once, with a stable delivery id.
//! - 2xx is delivered; a connection error, a timeout, 429 or 5xx is tried again after an
//!   exponential backoff with jitter (base doubling, capped), up to the action's `max_attempts`;
//!   any other status fails at once.
//! - The worker reads and writes the outbox in small batches, so a dead receiver costs the
//!   event path a few short transactions a second, not one per event.

use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use sha2::Sha256;

use crate::actions::webhook_notify::WebhookTarget;
use crate::engine::metrics::OutcomeLabel;
use crate::ledger::LedgerError;

/// A delivery due for an attempt, claimed by this node.
#[derive(Debug, Clone)]
pub struct Due {
    /// `<event_id>:<action_id>`.
    pub delivery_id: String,
    /// The store's own handle on the row (SQLite's `seq`; PostgreSQL finds it by its id).
    pub row: i64,
    /// Where and how it goes, as stored (JSON of [`WebhookTarget`]).
    pub target_json: String,
    /// The event as sent (JSON text).
    pub event_json: String,
    /// Its result as stored with the event (JSON text).
    pub result_json: String,
    /// Attempts made before this one.
    pub attempts: u32,
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryState {
    /// Waiting for its next attempt.
    Pending,
    /// A 2xx came back.
    Delivered,
    /// Given up: a status that is not retried, or `max_attempts` used.
    Failed,
}

impl DeliveryState {
    /// As stored and listed.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Failed => "failed",
        }
    }
}

/// What one attempt did, to record.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// The delivery.
    pub delivery_id: String,
    /// Its row ([`Due::row`]).
    pub row: i64,
    /// Its state after the attempt.
    pub state: DeliveryState,
    /// When to try again (pending), in µs since the epoch.
    pub next_attempt_at: i64,
    /// The receiver's status, when it answered.
    pub status: Option<i64>,
    /// Why it did not succeed.
    pub error: Option<String>,
    /// When it was delivered or given up.
    pub finished_at: Option<i64>,
}

/// One delivery as `GET /v1/webhooks/deliveries` lists it (never the secret: the target names
/// only its environment variable, and the list shows the URL alone).
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeliveryView {
    /// `<event_id>:<action_id>`.
    pub delivery_id: String,
    /// The event.
    pub event_id: String,
    /// The action.
    pub action_id: String,
    /// Where it goes.
    pub url: String,
    /// `pending`, `delivered` or `failed`.
    pub state: String,
    /// Attempts made.
    pub attempts: u32,
    /// When it was queued (RFC 3339).
    pub created_at: String,
    /// When it is tried next (pending).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<String>,
    /// The receiver's last status.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_status: Option<i64>,
    /// Why the last attempt did not succeed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// When it was delivered or given up.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
}

/// A page of deliveries, newest first.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeliveryPage {
    /// The deliveries.
    pub deliveries: Vec<DeliveryView>,
    /// Where the next page starts; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// A page position: after the delivery queued at `created_at` with this id (newest first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// When the last listed one was queued (µs).
    pub created_at: i64,
    /// Its id.
    pub delivery_id: String,
}

impl Cursor {
    /// As given out: `<created_at>.<delivery_id>`.
    pub fn encode(&self) -> String {
        format!("{}.{}", self.created_at, self.delivery_id)
    }

    /// Reads one given out; `None` when it is not.
    pub fn decode(text: &str) -> Option<Cursor> {
        let (at, id) = text.split_once('.')?;
        Some(Cursor { created_at: at.parse().ok()?, delivery_id: id.to_owned() }).filter(|c| !c.delivery_id.is_empty())
    }
}

/// What a retry did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retried {
    /// The failed delivery is pending again, due now, with its attempts counted afresh.
    Queued,
    /// No delivery has that id.
    NotFound,
    /// It is not failed (pending or delivered): nothing to do.
    NotFailed(DeliveryState),
}

/// Where deliveries wait: the ledger's `webhook_deliveries` table. A delivery the event's
/// transaction wrote is pending and due at once, whether or not a store has given it a state yet.
pub trait Outbox: Send + Sync {
    /// In one transaction: records `attempts`' outcomes (freeing their leases), then claims up
    /// to `limit` pending deliveries due at `now` that no node holds, leasing them until
    /// `lease_until`. One transaction a round keeps the worker's share of the writer small.
    fn settle(&self, attempts: &[Attempt], now: i64, lease_until: i64, limit: usize) -> Result<Vec<Due>, LedgerError>;
    /// Deliveries newest first, in `state` when given, after `cursor`, at most `limit`.
    fn list(
        &self,
        state: Option<DeliveryState>,
        cursor: Option<&Cursor>,
        limit: usize,
    ) -> Result<Vec<DeliveryRow>, LedgerError>;
    /// Makes a failed delivery pending again, due `now`.
    fn retry(&self, delivery_id: &str, now: i64) -> Result<Retried, LedgerError>;
    /// Deliveries pending.
    fn pending(&self) -> Result<u64, LedgerError>;
    /// Frees, as a worker starts, the leases a stopped worker left, where no other worker can
    /// hold one (SQLite: one worker per ledger), so that a restart tries their deliveries at once
    /// rather than when the leases run out; answers how many. Where nodes share the outbox
    /// (PostgreSQL) a lease may be a live node's, and it runs out instead.
    fn release_stale_leases(&self) -> Result<u64, LedgerError> {
        Ok(0)
    }
}

/// A stored delivery's listed columns.
#[derive(Debug, Clone)]
pub struct DeliveryRow {
    /// The id.
    pub delivery_id: String,
    /// The event.
    pub event_id: String,
    /// The action.
    pub action_id: String,
    /// The target's JSON.
    pub target_json: String,
    /// The state.
    pub state: String,
    /// Attempts made.
    pub attempts: i64,
    /// µs.
    pub next_attempt_at: i64,
    /// Last status.
    pub last_status: Option<i64>,
    /// Last error.
    pub last_error: Option<String>,
    /// µs.
    pub created_at: i64,
    /// µs.
    pub finished_at: Option<i64>,
}

/// The columns [`DeliveryRow`] is read from, in order.
pub(crate) const LIST_COLUMNS: &str = "delivery_id, event_id, action_id, target, state, attempts, next_attempt_at, \
     last_status, last_error, created_at, finished_at";

impl DeliveryState {
    /// Reads a stored state.
    pub fn parse(text: &str) -> Option<DeliveryState> {
        [DeliveryState::Pending, DeliveryState::Delivered, DeliveryState::Failed]
            .into_iter()
            .find(|s| s.as_str() == text)
    }
}

/// A page of rows as listed: `limit + 1` rows were read, so a full page knows there is more.
pub fn page(mut rows: Vec<DeliveryRow>, limit: usize) -> DeliveryPage {
    let more = rows.len() > limit;
    rows.truncate(limit);
    let next_cursor = more
        .then(|| rows.last().map(|r| Cursor { created_at: r.created_at, delivery_id: r.delivery_id.clone() }.encode()))
        .flatten();
    let time = |micros: i64| jiff::Timestamp::from_microsecond(micros).ok().map(|t| t.to_string());
    let deliveries = rows
        .into_iter()
        .map(|row| {
            let url = serde_json::from_str::<WebhookTarget>(&row.target_json).map(|t| t.url).unwrap_or_default();
            let pending = row.state == DeliveryState::Pending.as_str();
            DeliveryView {
                url,
                attempts: u32::try_from(row.attempts).unwrap_or(u32::MAX),
                created_at: time(row.created_at).unwrap_or_default(),
                next_attempt_at: pending.then(|| time(row.next_attempt_at)).flatten(),
                last_status: row.last_status,
                last_error: row.last_error,
                finished_at: row.finished_at.and_then(time),
                delivery_id: row.delivery_id,
                event_id: row.event_id,
                action_id: row.action_id,
                state: row.state,
            }
        })
        .collect();
    DeliveryPage { deliveries, next_cursor }
}

impl Due {
    /// What is POSTed: `{"delivery_id", "event", "result"}`, from the stored JSON texts as they
    /// are (they were written by serde, so they are valid JSON).
    pub fn body(&self) -> String {
        let id = serde_json::to_string(&self.delivery_id).unwrap_or_default();
        format!(r#"{{"delivery_id":{id},"event":{},"result":{}}}"#, self.event_json, self.result_json)
    }
}

/// How the worker runs (`--webhook-backoff-base-ms`, `--webhook-backoff-cap-ms`).
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// The first retry's delay; each next one doubles it.
    pub backoff_base: Duration,
    /// The longest delay between attempts.
    pub backoff_cap: Duration,
    /// How often to look for due deliveries when none were due.
    pub poll: Duration,
    /// Deliveries attempted at once.
    pub batch: usize,
    /// The longest pause between rounds while nothing is being delivered (receivers down): the
    /// worker then slows down instead of spending the machine on attempts bound to fail.
    pub idle_cap: Duration,
}

impl Default for Settings {
    /// 1 s doubling, at most 5 minutes apart; a look every 200 ms; 64 at once; at most 2 s
    /// between rounds that deliver nothing.
    fn default() -> Self {
        Settings {
            backoff_base: Duration::from_secs(1),
            backoff_cap: Duration::from_secs(300),
            poll: Duration::from_millis(200),
            batch: 64,
            idle_cap: Duration::from_secs(2),
        }
    }
}

/// How often the pending gauge is counted again.
const PENDING_COUNT_INTERVAL: Duration = Duration::from_secs(2);

/// Longest an attempt may take (the action's `timeout_ms` is at most 60 s), and a margin: a
/// claim's lease outlives any attempt.
const LEASE: Duration = Duration::from_secs(75);

/// The delivery worker of one node.
pub struct Worker {
    outbox: Arc<dyn Outbox>,
    settings: Settings,
    client: reqwest::Client,
    /// `fluxflow_webhook_deliveries_total{outcome}`.
    outcomes: Family<OutcomeLabel, Counter>,
    /// `fluxflow_webhook_deliveries_pending`.
    pending: prometheus_client::metrics::gauge::Gauge,
}

impl Worker {
    /// A worker over `outbox`, counting outcomes in `outcomes` and what is pending in `pending`.
    pub fn new(
        outbox: Arc<dyn Outbox>,
        settings: Settings,
        outcomes: Family<OutcomeLabel, Counter>,
        pending: prometheus_client::metrics::gauge::Gauge,
    ) -> Worker {
        // reqwest's TLS needs a process-wide provider: ring, as the rest of the binary uses.
        let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap_or_default();
        Worker { outbox, settings, client, outcomes, pending }
    }

    /// Delivers what is due until the task is stopped; a failing outbox is tried again later.
    /// Rounds follow each other at once while deliveries succeed; while none does (receivers
    /// down), the pause between rounds doubles up to `idle_cap`, and one success resets it. A
    /// round's outcomes are recorded with the next round's claim, or before a pause.
    pub fn spawn(self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let outbox = Arc::clone(&self.outbox);
            match blocking(move || outbox.release_stale_leases()).await {
                Ok(0) => {}
                Ok(released) => tracing::info!(released, "webhook deliveries a stopped worker held are due again"),
                Err(e) => tracing::warn!(error = %e.detail(), "cannot free the webhook leases of a stopped worker"),
            }
            let mut counted = tokio::time::Instant::now() - PENDING_COUNT_INTERVAL;
            let mut settled: Vec<Attempt> = Vec::new();
            let mut pause = Duration::ZERO;
            loop {
                if counted.elapsed() >= PENDING_COUNT_INTERVAL {
                    counted = tokio::time::Instant::now();
                    let outbox = Arc::clone(&self.outbox);
                    if let Ok(pending) = blocking(move || outbox.pending()).await {
                        self.pending.set(i64::try_from(pending).unwrap_or(i64::MAX));
                    }
                }
                let recorded = std::mem::take(&mut settled);
                match self.round(recorded).await {
                    Ok(attempts) if attempts.is_empty() => {
                        pause = Duration::ZERO;
                        tokio::time::sleep(self.settings.poll).await;
                    }
                    Ok(attempts) => {
                        let delivered = attempts.iter().any(|a| a.state == DeliveryState::Delivered);
                        pause = if delivered {
                            Duration::ZERO
                        } else {
                            (pause * 2).max(self.settings.poll).min(self.settings.idle_cap)
                        };
                        if pause.is_zero() {
                            settled = attempts;
                        } else {
                            settled = self.record(attempts).await;
                            tokio::time::sleep(pause).await;
                        }
                    }
                    Err((e, unrecorded)) => {
                        tracing::warn!(error = %e.detail(), "cannot read or write the webhook outbox; trying again");
                        settled = unrecorded;
                        tokio::time::sleep(self.settings.poll * 5).await;
                    }
                }
            }
        })
    }

    /// Records the last round's outcomes and claims what is due, in one transaction; attempts
    /// it all at once; answers the new outcomes (recorded by the next round). On an outbox
    /// error the outcomes not recorded come back, to be recorded next time.
    async fn round(&self, recorded: Vec<Attempt>) -> Result<Vec<Attempt>, (LedgerError, Vec<Attempt>)> {
        let now = crate::ledger::now_micros();
        let lease_until = now + micros(LEASE);
        let (outbox, batch) = (Arc::clone(&self.outbox), self.settings.batch);
        let keep = recorded.clone();
        let due = blocking(move || outbox.settle(&recorded, now, lease_until, batch)).await.map_err(|e| (e, keep))?;
        let attempts = futures_util::future::join_all(due.iter().map(|d| self.attempt(d))).await;
        for attempt in &attempts {
            let outcome = match attempt.state {
                DeliveryState::Delivered => "delivered",
                DeliveryState::Failed => "failed",
                DeliveryState::Pending => "retried",
            };
            self.outcomes.get_or_create(&OutcomeLabel { outcome }).inc();
        }
        Ok(attempts)
    }

    /// Records outcomes now, in a transaction that claims nothing, before the worker pauses: a
    /// node stopped during the pause would otherwise leave their leases held, and a restarted
    /// node could not try them again until the leases ran out. Answers what could not be
    /// recorded, for the next round.
    async fn record(&self, attempts: Vec<Attempt>) -> Vec<Attempt> {
        let now = crate::ledger::now_micros();
        let outbox = Arc::clone(&self.outbox);
        let keep = attempts.clone();
        match blocking(move || outbox.settle(&attempts, now, now, 0)).await {
            Ok(_) => Vec::new(),
            Err(_) => keep,
        }
    }

    /// One attempt of one delivery.
    async fn attempt(&self, due: &Due) -> Attempt {
        let target: WebhookTarget = match serde_json::from_str(&due.target_json) {
            Ok(target) => target,
            Err(e) => return self.finished(due, DeliveryState::Failed, None, Some(format!("unreadable target: {e}"))),
        };
        let sent = self.send(due, &target).await;
        let attempts_made = due.attempts + 1;
        match sent {
            Ok(status) if (200..300).contains(&status) => {
                self.finished(due, DeliveryState::Delivered, Some(status), None)
            }
            Ok(status) if status == 429 || status >= 500 => {
                self.again(due, &target, attempts_made, Some(status), format!("the receiver answered {status}"))
            }
            Ok(status) => {
                self.finished(due, DeliveryState::Failed, Some(status), Some(format!("the receiver answered {status}")))
            }
            Err(reason) => self.again(due, &target, attempts_made, None, reason),
        }
    }

    /// POSTs the body, signed; the status, or why there is none.
    async fn send(&self, due: &Due, target: &WebhookTarget) -> Result<u16, String> {
        let timestamp = jiff::Timestamp::now().as_second().to_string();
        let body = due.body();
        let mut request = self
            .client
            .post(&target.url)
            .timeout(Duration::from_millis(target.timeout_ms))
            .header("content-type", "application/json")
            .header("x-fluxflow-delivery", &due.delivery_id)
            .header("x-fluxflow-timestamp", &timestamp);
        for (name, value) in &target.headers {
            request = request.header(name, value);
        }
        if let Some(env) = &target.secret_env {
            let secret =
                std::env::var(env).map_err(|_| format!("the secret's environment variable {env} is not set"))?;
            request = request.header("x-fluxflow-signature", format!("sha256={}", sign(&secret, &timestamp, &body)));
        }
        let response = request.body(body).send().await.map_err(|e| describe(&e))?;
        Ok(response.status().as_u16())
    }

    fn finished(&self, due: &Due, state: DeliveryState, status: Option<u16>, error: Option<String>) -> Attempt {
        let now = crate::ledger::now_micros();
        Attempt {
            delivery_id: due.delivery_id.clone(),
            row: due.row,
            state,
            next_attempt_at: now,
            status: status.map(i64::from),
            error,
            finished_at: Some(now),
        }
    }

    /// Another attempt later, or failed when none is left.
    fn again(&self, due: &Due, target: &WebhookTarget, made: u32, status: Option<u16>, error: String) -> Attempt {
        if made >= target.max_attempts {
            return self.finished(due, DeliveryState::Failed, status, Some(error));
        }
        let delay = backoff(&self.settings, made);
        Attempt {
            delivery_id: due.delivery_id.clone(),
            row: due.row,
            state: DeliveryState::Pending,
            next_attempt_at: crate::ledger::now_micros() + micros(delay),
            status: status.map(i64::from),
            error: Some(error),
            finished_at: None,
        }
    }
}

/// The delay before attempt `made + 1`: the base doubled per attempt made, capped, with jitter
/// (a random point in its upper half), so receivers coming back are not hit by every sender at
/// once.
pub fn backoff(settings: &Settings, made: u32) -> Duration {
    let doubled = settings.backoff_base.saturating_mul(1u32 << made.saturating_sub(1).min(20));
    let delay = doubled.min(settings.backoff_cap);
    let random = getrandom::u64().unwrap_or(u64::MAX / 2);
    let fraction = 0.5 + (random as f64 / u64::MAX as f64) / 2.0;
    delay.mul_f64(fraction)
}

/// `hex(HMAC-SHA256(secret, "<timestamp>.<body>"))`, what `X-FluxFlow-Signature` carries after
/// `sha256=`.
///
/// ```
/// let signature = fluxflow::webhooks::sign("s3cret", "1700000000", r#"{"a":1}"#);
/// assert_eq!(signature.len(), 64);
/// ```
pub fn sign(secret: &str, timestamp: &str, body: &str) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else { return String::new() };
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "no answer within the timeout".to_owned()
    } else if e.is_connect() {
        format!("cannot connect: {e}")
    } else {
        e.to_string()
    }
}

fn micros(duration: Duration) -> i64 {
    i64::try_from(duration.as_micros()).unwrap_or(i64::MAX)
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, LedgerError> + Send + 'static,
) -> Result<T, LedgerError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|_| LedgerError::unavailable("the outbox task stopped", true, None))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_base_up_to_the_cap_with_jitter_in_the_upper_half() {
        let settings = Settings {
            backoff_base: Duration::from_secs(1),
            backoff_cap: Duration::from_secs(300),
            ..Settings::default()
        };
        for (made, full) in [(1, 1.0), (2, 2.0), (3, 4.0), (9, 256.0), (10, 300.0), (40, 300.0)] {
            let delay = backoff(&settings, made).as_secs_f64();
            assert!(delay >= full / 2.0 && delay <= full, "attempt {made}: {delay}");
        }
    }

    #[test]
    fn the_signature_is_the_hmac_of_timestamp_dot_body() {
        // Computed independently: Python's hmac.new(b"key", b"1.body", hashlib.sha256).
        assert_eq!(sign("key", "1", "body"), "91b5374b153842ad05b2c4eab9349b8321b14703165bd3fb8b034dfb8be98ae5");
    }
}
