//! `fluxflow serve`: opens the ledger, starts the engine, its logs and its watcher, and runs
//! [`crate::service::serve`] until SIGTERM or SIGINT.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::signal::unix::{Signal, SignalKind, signal};

use super::ServeArgs;
use crate::access::Access;
use crate::access::keys::{KeyStore, SqliteKeys};
use crate::actions::ActionRegistry;
use crate::engine::{Engine, RulesSource, StartError, watch};
use crate::graph::LoadError;
use crate::intake::nats::{NatsIntake, NatsSettings};
use crate::ledger::postgres::PostgresStore;
use crate::ledger::sqlite::SqliteStore;
use crate::ledger::versions::{MemoryVersions, RulesVersions};
use crate::ledger::{Ledger, LedgerStore};
use crate::logs;
use crate::service::{self, Limits, Service};
use crate::webhooks::Outbox;

/// Runs the service until SIGTERM or SIGINT, then drains and exits.
pub fn run(args: &ServeArgs) -> anyhow::Result<ExitCode> {
    let _log_guard = logs::init(args.log_format).context("cannot start the log writer")?;
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the async runtime")?;
    runtime.block_on(serve(args))
}

/// What `--ledger` opens: the ledger, where rules versions are kept (in memory without a
/// ledger), and where API keys are (the PostgreSQL schema, else `keys.db` under `--data`).
struct Stores {
    ledger: Option<Ledger>,
    versions: Arc<dyn RulesVersions>,
    keys: Arc<dyn KeyStore>,
    /// The webhook outbox, with a ledger.
    outbox: Option<Arc<dyn Outbox>>,
}

fn open_ledger(args: &ServeArgs) -> anyhow::Result<Stores> {
    let local_keys = || Arc::new(SqliteKeys::under(&args.data));
    type Opened = (Arc<dyn LedgerStore>, Arc<dyn RulesVersions>, Arc<dyn KeyStore>, Arc<dyn Outbox>);
    let (store, versions, keys, outbox): Opened = match args.ledger.as_str() {
        "none" => {
            let versions = Arc::new(MemoryVersions::default());
            return Ok(Stores { ledger: None, versions, keys: local_keys(), outbox: None });
        }
        "sqlite" => {
            let store = sqlite_store(&args.data)?;
            (store.clone(), store.clone(), local_keys(), store)
        }
        url if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            let store = Arc::new(PostgresStore::connect(url, args.ledger_pool_size)?);
            tracing::info!(target = store.target(), pool = args.ledger_pool_size, "ledger open (PostgreSQL)");
            (store.clone(), store.clone(), store.clone(), store)
        }
        other => anyhow::bail!("--ledger must be sqlite, none or a postgres:// URL, got `{other}`"),
    };
    #[cfg(feature = "test-support")]
    let store: Arc<dyn LedgerStore> = match std::env::var_os(crate::ledger::faulty::FAULT_FILE_ENV) {
        Some(marker) => Arc::new(crate::ledger::faulty::faulty(store, marker.into())),
        None => store,
    };
    let ledger = Ledger::start(store)?;
    ledger.sweep_every(Duration::from_millis(args.expiry_sweep_ms))?;
    Ok(Stores { ledger: Some(ledger), versions, keys, outbox: Some(outbox) })
}

fn sqlite_store(data: &std::path::Path) -> anyhow::Result<Arc<SqliteStore>> {
    let store = SqliteStore::open(data)?;
    tracing::info!(path = %store.path().display(), "ledger open (SQLite, WAL, synchronous=FULL)");
    Ok(Arc::new(store))
}

/// `--rules-source`, or its default: the store with PostgreSQL (shared by every node), the file
/// otherwise.
fn rules_source(args: &ServeArgs) -> RulesSource {
    args.rules_source.unwrap_or(if args.ledger.starts_with("postgres") {
        RulesSource::Store
    } else {
        RulesSource::File
    })
}

async fn serve(args: &ServeArgs) -> anyhow::Result<ExitCode> {
    let Stores { ledger, versions, keys, outbox } = open_ledger(args)?;
    let access = Access::load(keys).context("cannot read the API keys")?;
    let source = rules_source(args);
    let engine = match Engine::start(args.config.clone(), ActionRegistry::builtin(), ledger, versions, source) {
        Ok(engine) => engine,
        Err(StartError::Rules(LoadError::Invalid(diagnostics))) => {
            let name = args.config.display().to_string();
            for d in &diagnostics {
                tracing::error!("{}", d.render(&name));
            }
            tracing::error!(file = %name, "the rules file has errors; not starting");
            return Ok(ExitCode::from(1));
        }
        Err(e) => return Err(e.into()),
    };
    // With the store as the source, the file only seeded it: changes to it are not versions.
    let _watcher = match (source, watch::watch(&engine, &args.config)) {
        (RulesSource::Store, _) => None,
        (RulesSource::File, Ok(w)) => Some(w),
        (RulesSource::File, Err(e)) => {
            tracing::warn!(error = %e, "cannot watch the rules file; hot reload is off (POST /v1/rules/reload still works)");
            None
        }
    };
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(service::tls::acceptor(cert, key)?),
        _ => None,
    };
    let stream = match &args.nats {
        Some(url) => Some(connect_stream(args, url).await?),
        None => None,
    };
    let signals = ShutdownSignals::install()?;
    // `:8080` (the original's form) means every interface.
    let addr = if args.addr.starts_with(':') { format!("0.0.0.0{}", args.addr) } else { args.addr.clone() };
    let listener = TcpListener::bind(&addr).await.with_context(|| format!("cannot listen on {addr}"))?;
    let addr = listener.local_addr()?;
    if access.is_open() {
        if !addr.ip().is_loopback() && !args.allow_open {
            anyhow::bail!(
                "no API key exists yet, so the API is open: it listens on loopback only. Make a key \
                 (`fluxflow keys add NAME --scopes ...`) or pass --allow-open to serve {addr} without one"
            );
        }
        if args.allow_open {
            tracing::warn!(%addr, "--allow-open: no API key exists, so anyone who reaches this address can call every route");
        }
    }
    let live = engine.live();
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(%addr, %scheme, rules = %args.config.display(), hash = %live.rules.hash, scenarios = live.rules.scenario_count(), "listening");
    drop(live);
    let service = Service {
        engine,
        max_body_bytes: args.max_body_bytes,
        stream,
        shutdown_grace: Duration::from_millis(args.shutdown_grace_ms),
        access,
        limits: Limits {
            max_connections: usize::try_from(args.max_connections).unwrap_or(usize::MAX),
            header_timeout: Duration::from_millis(args.header_timeout_ms),
            body_timeout: Duration::from_millis(args.body_timeout_ms),
            idle_timeout: Duration::from_millis(args.idle_timeout_ms),
        },
        tls,
        webhooks: outbox.map(|outbox| {
            let settings = crate::webhooks::Settings {
                backoff_base: Duration::from_millis(args.webhook_backoff_base_ms),
                backoff_cap: Duration::from_millis(args.webhook_backoff_cap_ms),
                ..Default::default()
            };
            (outbox, settings)
        }),
    };
    service::serve(listener, service, signals.wait()).await;
    Ok(ExitCode::SUCCESS)
}

/// Joins the JetStream stream: events published there are applied as HTTP's are, and batches
/// are published there.
async fn connect_stream(args: &ServeArgs, url: &str) -> anyhow::Result<NatsIntake> {
    if args.ledger == "sqlite" {
        tracing::warn!("--nats with the SQLite ledger: run one node only, or members are split across ledgers");
    }
    let settings = NatsSettings {
        url: url.to_owned(),
        stream: args.nats_stream.clone(),
        subject_prefix: args.nats_subjects.clone(),
        consumer: args.nats_consumer.clone(),
        ack_wait: Duration::from_millis(args.nats_ack_wait_ms),
        retry_delay: Duration::from_millis(args.nats_retry_ms),
        max_in_flight: usize::try_from(args.nats_max_in_flight).unwrap_or(usize::MAX),
        max_message_bytes: args.max_body_bytes,
    };
    let intake = NatsIntake::connect(settings).await?;
    tracing::info!(url, stream = %args.nats_stream, consumer = %args.nats_consumer, "taking events from NATS JetStream");
    Ok(intake)
}

/// SIGTERM and SIGINT, listened for from before the service says it is listening, so a signal
/// that comes at once still shuts down gracefully.
struct ShutdownSignals {
    terminate: Signal,
    interrupt: Signal,
}

impl ShutdownSignals {
    fn install() -> anyhow::Result<Self> {
        Ok(ShutdownSignals {
            terminate: signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?,
            interrupt: signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?,
        })
    }

    /// Waits for SIGTERM or SIGINT.
    async fn wait(mut self) {
        tokio::select! {
            _ = self.terminate.recv() => {}
            _ = self.interrupt.recv() => {}
        }
        tracing::info!("shutdown signal received");
    }
}
