//! Prometheus metrics: the original's seven `ifttt_*` series (same names and labels) and
//! FluxFlow's own `fluxflow_*` series.

use std::borrow::Cow;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Metric, Registry};
use std::sync::atomic::AtomicU64;

use crate::expr::Reason;

/// `scenario_id` label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScenarioLabel {
    /// The scenario.
    pub scenario_id: String,
}

/// `action_type` and `status` labels.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabels {
    /// The action type.
    pub action_type: String,
    /// `success` or `error`.
    pub status: &'static str,
}

/// `outcome` label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// What happened: `success`, `invalid`, … (each series documents its own).
    pub outcome: &'static str,
}

/// `reason` label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// Why a condition was unknown.
    pub reason: &'static str,
}

/// `route` and `status` labels.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// The route pattern (`/v1/jobs/{job_id}`), or `unmatched`; borrowed for fixed routes, so
    /// counting a request allocates nothing.
    pub route: Cow<'static, str>,
    /// HTTP status code.
    pub status: u16,
}

/// Every metric the service exports.
pub struct Metrics {
    registry: Registry,
    /// Events placed on the queue.
    pub events_enqueued: Counter,
    /// Events fully processed.
    pub events_processed: Counter,
    /// Events refused because the queue was full.
    pub events_dropped: Counter,
    /// Scenario matches.
    pub scenarios_matched: Family<ScenarioLabel, Counter>,
    /// Actions run, by type and status.
    pub actions_executed: Family<ActionLabels, Counter>,
    /// The original's latency histogram, in milliseconds.
    pub duration_ms: Histogram,
    /// Waiting events over queue capacity, set when `/metrics` is read.
    pub queue_utilization: Gauge<f64, AtomicU64>,
    /// Latency from enqueue to result, in seconds.
    pub duration_seconds: Histogram,
    /// Rules reloads by outcome.
    pub reloads: Family<OutcomeLabel, Counter>,
    /// Unknown conditions by reason.
    pub unknown_conditions: Family<ReasonLabel, Counter>,
    /// HTTP requests by route and status.
    pub http_requests: Family<RouteLabels, Counter>,
    /// Actions refused because a limit of their scenario was reached, by scenario.
    pub limits_reached: Family<ScenarioLabel, Counter>,
    /// Messages taken from the JetStream stream, by what became of them
    /// ([`crate::intake::nats::StreamOutcome`]).
    pub stream_messages: Family<OutcomeLabel, Counter>,
    /// Webhook delivery attempts, by `outcome` (`delivered`, `retried`, `failed`).
    pub webhook_deliveries: Family<OutcomeLabel, Counter>,
    /// Webhook deliveries pending (counted every 2 s by the delivery worker).
    pub webhook_pending: Gauge,
    /// HTTP connections closed at once because `--max-connections` were open.
    pub connections_refused: Counter,
    /// HTTP connections closed because a client was too slow or idle, by `reason`
    /// (`header_timeout`, `idle_timeout`).
    pub connections_timed_out: Family<ReasonLabel, Counter>,
    /// Runs of each action by id, for the console; not exported (see [`super::hits`]).
    pub action_hits: super::hits::ActionHits,
}

/// Registers a metric (a clone: metrics are shared handles) and gives it back for the struct.
fn registered<M: Metric + Clone>(registry: &mut Registry, name: &str, help: &str, metric: M) -> M {
    registry.register(name, help, metric.clone());
    metric
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        // prometheus-client appends `_total` to counters and a period to help texts.
        Metrics {
            events_enqueued: registered(
                &mut registry,
                "ifttt_events_enqueued",
                "Total number of events placed on the processing queue",
                Counter::default(),
            ),
            events_processed: registered(
                &mut registry,
                "ifttt_events_processed",
                "Total number of events fully processed by the engine",
                Counter::default(),
            ),
            events_dropped: registered(
                &mut registry,
                "ifttt_events_dropped",
                "Total number of events rejected due to a full queue",
                Counter::default(),
            ),
            scenarios_matched: registered(
                &mut registry,
                "ifttt_scenarios_matched",
                "Total number of scenario matches, labelled by scenario ID",
                Family::default(),
            ),
            actions_executed: registered(
                &mut registry,
                "ifttt_actions_executed",
                "Total number of actions executed, labelled by type and status",
                Family::default(),
            ),
            duration_ms: registered(
                &mut registry,
                "ifttt_event_processing_duration_ms",
                "Event processing latency in milliseconds, from enqueue to result",
                Histogram::new([1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0]),
            ),
            queue_utilization: registered(
                &mut registry,
                "ifttt_queue_utilization_ratio",
                "Current event queue utilization (0–1)",
                Gauge::default(),
            ),
            duration_seconds: registered(
                &mut registry,
                "fluxflow_event_duration_seconds",
                "Event latency from enqueue to result, in seconds",
                Histogram::new([
                    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                    1.0, 2.5, 5.0,
                ]),
            ),
            reloads: registered(
                &mut registry,
                "fluxflow_rules_reloads",
                "Rules reloads, by outcome",
                Family::default(),
            ),
            unknown_conditions: registered(
                &mut registry,
                "fluxflow_unknown_conditions",
                "Conditions whose result was unknown, by reason",
                Family::default(),
            ),
            http_requests: registered(
                &mut registry,
                "fluxflow_http_requests",
                "HTTP requests, by route and status",
                Family::default(),
            ),
            limits_reached: registered(
                &mut registry,
                "fluxflow_limits_reached",
                "Actions refused because a limit of their scenario was reached, by scenario",
                Family::default(),
            ),
            stream_messages: registered(
                &mut registry,
                "fluxflow_stream_messages",
                "Messages taken from the JetStream stream, by outcome",
                Family::default(),
            ),
            webhook_deliveries: registered(
                &mut registry,
                "fluxflow_webhook_deliveries",
                "Webhook delivery attempts, by outcome (delivered, retried, failed)",
                Family::default(),
            ),
            webhook_pending: registered(
                &mut registry,
                "fluxflow_webhook_deliveries_pending",
                "Webhook deliveries waiting for an attempt (counted every 2 s)",
                Gauge::default(),
            ),
            connections_refused: registered(
                &mut registry,
                "fluxflow_connections_refused",
                "HTTP connections closed at once because --max-connections were open",
                Counter::default(),
            ),
            connections_timed_out: registered(
                &mut registry,
                "fluxflow_connections_timed_out",
                "HTTP connections closed because the client was too slow (header_timeout) or idle (idle_timeout)",
                Family::default(),
            ),
            action_hits: super::hits::ActionHits::default(),
            registry,
        }
    }

    /// Counts unknown conditions, one count per [`Reason::LABELS`] entry.
    pub fn count_unknowns(&self, by_reason: &[u32; Reason::LABELS.len()]) {
        for (reason, &count) in Reason::LABELS.iter().zip(by_reason) {
            if count > 0 {
                self.unknown_conditions.get_or_create(&ReasonLabel { reason }).inc_by(u64::from(count));
            }
        }
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Counts a reload.
    pub fn reload(&self, outcome: &'static str) {
        self.reloads.get_or_create(&OutcomeLabel { outcome }).inc();
    }
}
