//! The `fluxflow` command line: `serve` (the default), `validate`, `eval`, `test`, `schema` and
//! `keys`.

mod eval;
mod keys;
mod schema;
mod serve;
mod test;
mod validate;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// What `--version` prints after the name: the version and the commit built from (`build.rs`).
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("FLUXFLOW_COMMIT"), ")");

/// FluxFlow: a rule engine for loyalty programmes.
#[derive(Debug, Parser)]
#[command(name = "fluxflow", version = VERSION, about, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the HTTP service (the default when no command is given).
    Serve(Box<ServeArgs>),
    /// Check rules files; print every problem as FILE:LINE:COL: error: message.
    Validate(validate::ValidateArgs),
    /// Evaluate events against a rules file without touching any ledger.
    Eval(eval::EvalArgs),
    /// Run rule test files (`*.test.yaml`): cases, failures with traces, coverage.
    Test(test::TestArgs),
    /// Print the JSON Schema of rules files (docs/rules.schema.json), for editors.
    Schema,
    /// Make, list and revoke API keys.
    Keys(keys::KeysArgs),
}

/// Flags of `fluxflow serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "FLUXFLOW_ADDR", default_value = "127.0.0.1:8080")]
    pub addr: String,
    /// Rules file.
    #[arg(long, env = "FLUXFLOW_CONFIG", default_value = "configs/rules.yaml")]
    pub config: PathBuf,
    /// Directory of the embedded ledger.
    #[arg(long, env = "FLUXFLOW_DATA", default_value = "./data")]
    pub data: PathBuf,
    /// Ledger: `sqlite` (embedded, under --data), `none` (stateless), or a PostgreSQL URL
    /// (`postgres://user@host:5432/db`; several nodes may share it).
    #[arg(long, env = "FLUXFLOW_LEDGER", default_value = "sqlite")]
    pub ledger: String,
    /// Connections to PostgreSQL each node keeps (with a postgres:// ledger).
    #[arg(long, env = "FLUXFLOW_LEDGER_POOL_SIZE", default_value_t = crate::ledger::postgres::DEFAULT_POOL_SIZE)]
    pub ledger_pool_size: usize,
    /// Log format.
    #[arg(long, env = "FLUXFLOW_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// After SIGTERM/SIGINT, keep answering 503 (and /readyz 503) this long before closing the
    /// listener, so load balancers notice; then finish what is in flight and drain the queue.
    #[arg(long, env = "FLUXFLOW_SHUTDOWN_GRACE_MS", default_value_t = 0)]
    pub shutdown_grace_ms: u64,
    /// Largest request body accepted, in bytes.
    #[arg(long, env = "FLUXFLOW_MAX_BODY_BYTES", default_value_t = crate::api::DEFAULT_MAX_BODY_BYTES)]
    pub max_body_bytes: usize,
    /// How often expired points are written off (an `expire` entry per lot) for members that
    /// nobody writes to, in milliseconds. Balances never count expired points, swept or not.
    #[arg(long, env = "FLUXFLOW_EXPIRY_SWEEP_MS", default_value_t = 60_000, value_parser = clap::value_parser!(u64).range(10..))]
    pub expiry_sweep_ms: u64,
    /// Where the live rules come from: `file` (each valid change of `--config` becomes a
    /// version; the default with SQLite and `none`) or `store` (the newest version in the
    /// store, for every node; the file only seeds an empty store; the default with PostgreSQL).
    #[arg(long, env = "FLUXFLOW_RULES_SOURCE", value_enum)]
    pub rules_source: Option<crate::engine::RulesSource>,
    /// Also take events from a NATS JetStream stream (`nats://HOST:4222`), consumed by every
    /// node; the stream and the durable consumer are created when missing.
    #[arg(long, env = "FLUXFLOW_NATS")]
    pub nats: Option<String>,
    /// The stream's name.
    #[arg(long, env = "FLUXFLOW_NATS_STREAM", default_value = crate::intake::nats::DEFAULT_STREAM)]
    pub nats_stream: String,
    /// The subjects' prefix: events are published on `<prefix>.<actor_id>` (`<prefix>._`
    /// without an actor).
    #[arg(long, env = "FLUXFLOW_NATS_SUBJECTS", default_value = crate::intake::nats::DEFAULT_SUBJECT_PREFIX)]
    pub nats_subjects: String,
    /// The durable consumer's name, shared by every node.
    #[arg(long, env = "FLUXFLOW_NATS_CONSUMER", default_value = crate::intake::nats::DEFAULT_CONSUMER)]
    pub nats_consumer: String,
    /// How long JetStream waits for a node's acknowledgement before delivering a message to
    /// another, in milliseconds.
    #[arg(long, env = "FLUXFLOW_NATS_ACK_WAIT_MS", default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(100..))]
    pub nats_ack_wait_ms: u64,
    /// How long a message waits before it is delivered again when this node is saturated or its
    /// ledger failed, in milliseconds.
    #[arg(long, env = "FLUXFLOW_NATS_RETRY_MS", default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub nats_retry_ms: u64,
    /// Messages delivered to all nodes and not yet acknowledged, at most (the consumer's
    /// `max_ack_pending`, set when it is created). Fewer in flight means fewer of one member's
    /// messages on several nodes at once, each waiting for the ones before it.
    #[arg(long, env = "FLUXFLOW_NATS_MAX_IN_FLIGHT", default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..))]
    pub nats_max_in_flight: u64,
    /// Connections open at once, at most; more are closed as soon as they are accepted.
    #[arg(long, env = "FLUXFLOW_MAX_CONNECTIONS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections: u64,
    /// How long a request's headers may take to arrive, in milliseconds (from the connection's
    /// opening, or from the first byte after an idle pause).
    #[arg(long, env = "FLUXFLOW_HEADER_TIMEOUT_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub header_timeout_ms: u64,
    /// How long a request's body may take to arrive after its headers, in milliseconds (408).
    #[arg(long, env = "FLUXFLOW_BODY_TIMEOUT_MS", default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub body_timeout_ms: u64,
    /// How long a kept-alive connection may wait for its next request, in milliseconds.
    #[arg(long, env = "FLUXFLOW_IDLE_TIMEOUT_MS", default_value_t = 60_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub idle_timeout_ms: u64,
    /// The first webhook retry's delay, in milliseconds; each next one doubles it.
    #[arg(long, env = "FLUXFLOW_WEBHOOK_BACKOFF_BASE_MS", default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub webhook_backoff_base_ms: u64,
    /// The longest delay between webhook attempts, in milliseconds.
    #[arg(long, env = "FLUXFLOW_WEBHOOK_BACKOFF_CAP_MS", default_value_t = 300_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub webhook_backoff_cap_ms: u64,
    /// Serve HTTPS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, env = "FLUXFLOW_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "FLUXFLOW_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Serve on a non-loopback address while no API key exists (the API is then open to anyone
    /// who can reach it). Without it, `serve` refuses such an address until a key is made.
    #[arg(long, env = "FLUXFLOW_ALLOW_OPEN")]
    pub allow_open: bool,
}

pub use crate::logs::LogFormat;

/// Runs the command line; the exit code is 0 when all went well, 1 for invalid input, 2 for a
/// usage error.
pub fn main() -> ExitCode {
    // One TLS crypto provider for the process (ring, as async-nats and the HTTPS server use):
    // reqwest, built without one, needs it before its first client.
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let outcome = match cli.command {
        Some(Command::Validate(args)) => validate::run(&args),
        Some(Command::Eval(args)) => eval::run(&args),
        Some(Command::Test(args)) => test::run(&args),
        Some(Command::Schema) => schema::run(),
        Some(Command::Keys(args)) => keys::run(&args),
        Some(Command::Serve(args)) => serve::run(&args),
        None => serve::run(&cli.serve),
    };
    match outcome {
        Ok(code) => code,
        Err(e) => {
            eprintln!("fluxflow: error: {}", render_error(&e));
            ExitCode::from(1)
        }
    }
}

/// An error and its causes, `outer: inner`, without repeating a cause that the message above it
/// already ends with (errors such as `cannot read FILE: CAUSE` spell out their source).
fn render_error(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let cause = cause.to_string();
        if text.ends_with(&cause) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&cause);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::render_error;
    use anyhow::Context;

    #[test]
    fn a_cause_already_in_the_message_is_printed_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory (os error 2)");
        let error = anyhow::Error::new(crate::graph::LoadError::Io { path: "x.yaml".into(), source: io });
        assert_eq!(render_error(&error), "cannot read x.yaml: No such file or directory (os error 2)");
    }

    #[test]
    fn context_and_cause_are_both_printed() {
        let error = Err::<(), _>(std::io::Error::other("disk full")).context("cannot open the ledger").unwrap_err();
        assert_eq!(render_error(&error), "cannot open the ledger: disk full");
    }
}
