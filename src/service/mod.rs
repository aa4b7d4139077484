//! The running service: the HTTP API on a listener and, with `--nats`, the stream intake, both
//! feeding one engine, until a shutdown future completes. Then new events are refused for a grace
//! period (load balancers see 503 and stop sending), the listener closes, and every admitted event
//! is applied before [`serve`] returns. `fluxflow serve` wraps it with signals; tests run it
//! in-process.

pub mod connections;
pub mod tls;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::access::Access;
use crate::api::{AppState, app};
use crate::engine::Engine;
use crate::intake::nats::NatsIntake;
pub use connections::Limits;

/// How long requests still in flight get to finish once the listener closes (the original's 15 s).
const CONNECTION_DRAIN_LIMIT: Duration = Duration::from_secs(15);

/// What [`serve`] runs.
pub struct Service {
    /// The engine every intake feeds.
    pub engine: Arc<Engine>,
    /// Request body limit, in bytes.
    pub max_body_bytes: usize,
    /// The JetStream intake, connected: it consumes the stream, and batches are published there.
    pub stream: Option<NatsIntake>,
    /// How long new events are refused with 503 before the listener closes.
    pub shutdown_grace: Duration,
    /// The API keys requests are checked against (kept current while serving).
    pub access: Arc<Access>,
    /// What bounds connections: their number and how slow or idle a client may be.
    pub limits: Limits,
    /// With `--tls-cert` and `--tls-key`: HTTPS only.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// With a ledger: its webhook outbox, and how its deliveries are retried.
    pub webhooks: Option<(Arc<dyn crate::webhooks::Outbox>, crate::webhooks::Settings)>,
}

/// Serves `service` on `listener` until `shutdown` completes, then drains (a connection that
/// cannot be accepted is logged and the loop goes on, so this only returns by its shutdown): new events are refused
/// for the grace period, requests in flight get a bounded time to finish, and every admitted
/// event (HTTP, batch or stream) is applied before this returns.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use std::sync::Arc;
/// use std::time::Duration;
/// use fluxflow::access::Access;
/// use fluxflow::actions::ActionRegistry;
/// use fluxflow::engine::{Engine, RulesSource};
/// use fluxflow::ledger::versions::MemoryVersions;
/// use fluxflow::service::{Service, serve};
///
/// let rules = tempfile::NamedTempFile::new()?;
/// std::fs::write(rules.path(), "version: v1\nscenarios: []\n")?;
/// let versions = Arc::new(MemoryVersions::default());
/// let registry = ActionRegistry::builtin();
/// let engine = Engine::start(rules.path().into(), registry, None, versions, RulesSource::File)?;
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// let (max_body_bytes, shutdown_grace) = (1 << 20, Duration::ZERO);
/// // Access::open(): no keys, every route open; the default connection limits.
/// let access = Access::open();
/// let limits = Default::default();
/// let (stream, tls, webhooks) = (None, None, None);
/// let service = Service { engine, max_body_bytes, stream, shutdown_grace, access, limits, tls, webhooks };
/// // Serves until the shutdown future completes: here at once.
/// serve(listener, service, async {}).await;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
pub async fn serve(listener: TcpListener, service: Service, shutdown: impl Future<Output = ()> + Send + 'static) {
    let Service { engine, max_body_bytes, stream, shutdown_grace, access, limits, tls, webhooks } = service;
    access.keep_fresh();
    let outbox = webhooks.as_ref().map(|(outbox, _)| Arc::clone(outbox));
    let delivering = webhooks.map(|(outbox, settings)| {
        let (outcomes, pending) = (engine.metrics.webhook_deliveries.clone(), engine.metrics.webhook_pending.clone());
        crate::webhooks::Worker::new(outbox, settings, outcomes, pending).spawn()
    });
    let publisher = stream.as_ref().map(NatsIntake::publisher);
    let consuming = stream.map(|intake| intake.run(Arc::clone(&engine)));
    let state = Arc::new(AppState { engine: Arc::clone(&engine), max_body_bytes, stream: publisher, access, outbox });
    let refusing = refuse_then_close(shutdown, Arc::clone(&engine), shutdown_grace);
    // Returns when the listener closes, with the connections still open.
    let open = connections::accept_until(listener, app(state), limits, tls, refusing).await;
    // Requests in flight get a bounded time to finish (a synchronous event never waits longer
    // than its timeout); connections still open after that are closed. The events themselves
    // were admitted, so the drain below still completes them.
    let limit =
        CONNECTION_DRAIN_LIMIT.max(Duration::from_millis(u64::from(engine.settings().event_timeout_ms) + 1_000));
    if tokio::time::timeout(limit, open.shutdown()).await.is_err() {
        tracing::warn!(seconds = limit.as_secs(), "connections still open after the shutdown limit; closing them");
    }
    tracing::info!("no more requests in flight; evaluating what is still queued");
    engine.drain().await;
    if let Some(consuming) = consuming {
        // It stopped taking messages at the shutdown; what it took was applied by the drain.
        let _ = consuming.await;
    }
    if let Some(delivering) = delivering {
        // What it did not deliver stays in the outbox; an attempt cut short is tried again.
        delivering.abort();
    }
    tracing::info!(
        enqueued = engine.metrics.events_enqueued.get(),
        processed = engine.metrics.events_processed.get(),
        "shutdown complete"
    );
}

/// Waits for `shutdown`, refuses new events and keeps answering 503 for the grace period; the
/// listener closes when this completes.
async fn refuse_then_close(shutdown: impl Future<Output = ()>, engine: Arc<Engine>, grace: Duration) {
    shutdown.await;
    tracing::info!("shutting down: refusing new events, finishing the rest");
    engine.begin_shutdown();
    tokio::time::sleep(grace).await;
}
