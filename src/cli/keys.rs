//! `fluxflow keys add|list|revoke`: API keys, in the store the service uses (the PostgreSQL
//! schema with a `postgres://` ledger, else `keys.db` under `--data`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Subcommand};

use crate::access::keys::{KeyStore, SqliteKeys};
use crate::access::{KeyName, NewKey, Scope, parse_scopes};
use crate::ledger::postgres::PostgresStore;

/// Flags of `fluxflow keys`.
#[derive(Debug, Args)]
pub struct KeysArgs {
    #[command(subcommand)]
    action: KeysAction,
    /// Directory of the embedded ledger (the keys database is `keys.db` there).
    #[arg(long, env = "FLUXFLOW_DATA", default_value = "./data", global = true)]
    data: PathBuf,
    /// The service's `--ledger`: with a `postgres://` URL the keys are in that database.
    #[arg(long, env = "FLUXFLOW_LEDGER", default_value = "sqlite", global = true)]
    ledger: String,
}

#[derive(Debug, Subcommand)]
enum KeysAction {
    /// Make a key; it is printed once, alone on the last line.
    Add {
        /// The key's name (letters, digits, `.`, `_`, `-`).
        name: String,
        /// What it may do, comma-separated: events:write, events:read, members:read,
        /// members:write, rules:read, rules:write, metrics:read, admin.
        #[arg(long, required = true)]
        scopes: String,
    },
    /// List every key (never their secrets), live and revoked.
    List,
    /// Revoke a key: every node refuses it within 5 s.
    Revoke {
        /// The key's name.
        name: String,
    },
}

/// Opens the keys store the service with these flags uses.
pub fn key_store(ledger: &str, data: &std::path::Path) -> anyhow::Result<Arc<dyn KeyStore>> {
    if ledger.starts_with("postgres://") || ledger.starts_with("postgresql://") {
        Ok(Arc::new(PostgresStore::connect(ledger, 1)?))
    } else {
        Ok(Arc::new(SqliteKeys::under(data)))
    }
}

/// Who is changing keys: the operating-system user, recorded with the change.
fn operator() -> String {
    std::env::var("USER").or_else(|_| std::env::var("LOGNAME")).unwrap_or_else(|_| "unknown".to_owned())
}

/// Runs `fluxflow keys …`.
pub fn run(args: &KeysArgs) -> anyhow::Result<ExitCode> {
    let store = key_store(&args.ledger, &args.data)?;
    match &args.action {
        KeysAction::Add { name, scopes } => add(store.as_ref(), name, scopes),
        KeysAction::List => list(store.as_ref()),
        KeysAction::Revoke { name } => revoke(store.as_ref(), name),
    }
}

fn add(store: &dyn KeyStore, name: &str, scopes: &str) -> anyhow::Result<ExitCode> {
    let name: KeyName = name.parse()?;
    let scopes: Vec<Scope> = parse_scopes(scopes)?;
    anyhow::ensure!(!scopes.is_empty(), "--scopes names no scope");
    let key = NewKey::generate()?;
    store.add(&name, &scopes, key.hash, &operator())?;
    let listed: Vec<&str> = scopes.iter().map(|s| s.as_str()).collect();
    println!("key `{name}` made with scopes {}; it is shown only now:", listed.join(","));
    println!("{}", key.secret);
    Ok(ExitCode::SUCCESS)
}

fn list(store: &dyn KeyStore) -> anyhow::Result<ExitCode> {
    let keys = store.list()?;
    if keys.is_empty() {
        println!("no keys: the API is open (on loopback only, unless --allow-open)");
    }
    for key in keys {
        let scopes: Vec<&str> = key.scopes.iter().map(|s| s.as_str()).collect();
        let made = timestamp(key.created_at)?;
        let state = match (key.revoked_at, key.revoked_by) {
            (Some(at), by) => format!("revoked {} by {}", timestamp(at)?, by.unwrap_or_default()),
            (None, _) => "live".to_owned(),
        };
        println!("{}\t{}\tmade {made} by {}\t{state}", key.name, scopes.join(","), key.created_by);
    }
    Ok(ExitCode::SUCCESS)
}

fn revoke(store: &dyn KeyStore, name: &str) -> anyhow::Result<ExitCode> {
    let name: KeyName = name.parse()?;
    if store.revoke(&name, &operator())? {
        println!("key `{name}` revoked; every node refuses it within 5 s");
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("fluxflow: error: no live key named `{name}`");
        Ok(ExitCode::from(1))
    }
}

fn timestamp(micros: i64) -> anyhow::Result<jiff::Timestamp> {
    jiff::Timestamp::from_microsecond(micros).context("a stored time is out of range")
}
