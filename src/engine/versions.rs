//! Rules versions in the engine: where the live rules come from (`--rules-source`), publishing a
//! new version (`PUT /v1/rules`), rolling back to an earlier one, and following the store so a
//! version published on one node is live on every node.
//!
//! With `--rules-source file` the file is the source: each valid change of it becomes a version,
//! and a published version is written to the file (atomically) and loaded from it. With
//! `--rules-source store` the store is: the file only seeds an empty store, and every node polls
//! the store's newest version number every [`FOLLOW_INTERVAL`] and loads what is newer. Polling
//! (one indexed read) rather than PostgreSQL's LISTEN/NOTIFY: it needs no connection of its own,
//! survives a dropped connection without missing anything, and keeps a node that cannot load a
//! version asking again.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{Engine, ReloadError};
use crate::actions::ActionRegistry;
use crate::graph::{LoadError, Rules};
use crate::ledger::LedgerError;
use crate::ledger::versions::{NewVersion, RulesVersion, RulesVersions, VersionSource};

/// How often a node following the store looks for a newer version.
pub const FOLLOW_INTERVAL: Duration = Duration::from_millis(200);

/// Where the live rules come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RulesSource {
    /// The rules file: each valid change becomes a version; published versions are written to it.
    File,
    /// The store: every node loads its newest version; the file only seeds an empty store.
    Store,
}

/// Why a version was not published.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The rules have problems (every one is listed); nothing was stored.
    #[error("the rules have problems; nothing was stored")]
    Invalid(Vec<String>),
    /// The rules file cannot be written (`--rules-source file`).
    #[error("the rules file {path} cannot be written: {reason}")]
    ReadOnly {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// No version has that number.
    #[error("there is no rules version {0}")]
    NoSuchVersion(u64),
    /// The store failed.
    #[error("{}", .0.detail())]
    Store(LedgerError),
    /// Valid rules that could not go live (their member history could not be indexed).
    #[error("the rules could not go live: {}", .0.problems.join("; "))]
    NotLive(ReloadError),
}

/// The rules a node starts with, and their version number.
pub(super) fn initial_rules(
    config_path: &Path,
    registry: &ActionRegistry,
    versions: &dyn RulesVersions,
    source: RulesSource,
) -> Result<(Rules, u64), super::StartError> {
    let read_file = || {
        let text = std::fs::read_to_string(config_path)
            .map_err(|e| LoadError::Io { path: config_path.display().to_string(), source: e })?;
        Ok::<_, LoadError>((Rules::load_str(&text, registry)?, text))
    };
    let stored = |rules: &Rules, text: &str, source| {
        let new = NewVersion { hash: &rules.hash, yaml: text, author: None, source, at: now() };
        versions.add_version(&new).map(|v| v.rules_version)
    };
    match source {
        RulesSource::File => {
            let (rules, text) = read_file()?;
            let version = stored(&rules, &text, VersionSource::File)?;
            Ok((rules, version))
        }
        RulesSource::Store => {
            let newest = versions.newest()?;
            if newest == 0 {
                let (rules, text) = read_file()?;
                let version = stored(&rules, &text, VersionSource::Seed)?;
                tracing::info!(rules_version = version, "the store had no rules: seeded from the file");
                return Ok((rules, version));
            }
            let Some((version, text)) = versions.version(newest)? else {
                return Err(LedgerError::unavailable("the newest rules version vanished", true, None).into());
            };
            Ok((Rules::load_str(&text, registry)?, version.rules_version))
        }
    }
}

fn now() -> i64 {
    jiff::Timestamp::now().as_microsecond()
}

impl Engine {
    /// Where the live rules come from.
    pub fn rules_source(&self) -> RulesSource {
        self.source
    }

    /// The newest version this node could not load, if any (`/readyz` answers `rules_behind`).
    pub fn rules_behind(&self) -> Option<u64> {
        Some(self.behind.load(Ordering::Acquire)).filter(|v| *v > 0)
    }

    /// The stored versions, newest first.
    pub fn rules_versions(&self, limit: usize) -> Result<Vec<RulesVersion>, LedgerError> {
        self.versions.versions(limit)
    }

    /// Version `rules_version` with its text, if it exists.
    pub fn rules_version_text(&self, rules_version: u64) -> Result<Option<(RulesVersion, String)>, LedgerError> {
        self.versions.version(rules_version)
    }

    /// Validates `yaml`, stores it as a new version and makes it live on this node (the others
    /// follow): answers the version once it is live here. Invalid rules are never stored.
    pub fn publish(
        &self,
        yaml: &str,
        author: Option<&str>,
        source: VersionSource,
    ) -> Result<(u64, String), PublishError> {
        let rules = Rules::load_str(yaml, &self.registry).map_err(|e| {
            let path = self.config_path.display().to_string();
            match e {
                LoadError::Invalid(diagnostics) => {
                    PublishError::Invalid(diagnostics.iter().map(|d| d.render(&path)).collect())
                }
                io => PublishError::Invalid(vec![io.to_string()]),
            }
        })?;
        match self.source {
            RulesSource::File => {
                self.write_rules_file(yaml)?;
                let (report, version) = self.reload_as(source, author).map_err(PublishError::NotLive)?;
                Ok((version, report.hash))
            }
            RulesSource::Store => {
                let _serialised = self.reload_lock.lock();
                let new = NewVersion { hash: &rules.hash, yaml, author, source, at: now() };
                let version = self.versions.add_version(&new).map_err(PublishError::Store)?.rules_version;
                let hash = rules.hash.clone();
                if self.live().rules_version != version {
                    self.go_live(rules, version).map_err(PublishError::NotLive)?;
                }
                Ok((version, hash))
            }
        }
    }

    /// Makes an earlier version live again, as a new version.
    pub fn rollback(&self, rules_version: u64, author: Option<&str>) -> Result<(u64, String), PublishError> {
        let (_, yaml) = self
            .versions
            .version(rules_version)
            .map_err(PublishError::Store)?
            .ok_or(PublishError::NoSuchVersion(rules_version))?;
        self.publish(&yaml, author, VersionSource::Rollback)
    }

    /// Replaces the rules file at once (a temporary file in its directory, then a rename), so the
    /// watcher and a crash never see half of it.
    fn write_rules_file(&self, yaml: &str) -> Result<(), PublishError> {
        let path = &self.config_path;
        let read_only =
            |e: std::io::Error| PublishError::ReadOnly { path: path.display().to_string(), reason: e.to_string() };
        let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let temporary = dir.join(format!(".{name}.{}.tmp", std::process::id()));
        std::fs::write(&temporary, yaml).map_err(read_only)?;
        std::fs::rename(&temporary, path).map_err(|e| {
            let _ = std::fs::remove_file(&temporary);
            read_only(e)
        })
    }

    /// Loads the store's newest version when it is newer than the live one.
    fn catch_up_rules(&self) {
        let newest = match self.versions.newest() {
            Ok(newest) => newest,
            Err(e) => {
                tracing::debug!(error = %e.detail(), "cannot read the newest rules version; asking again");
                return;
            }
        };
        if newest <= self.live().rules_version || self.behind.load(Ordering::Acquire) == newest {
            return;
        }
        let _serialised = self.reload_lock.lock();
        let loaded = match self.versions.version(newest) {
            Ok(Some((_, yaml))) => Rules::load_str(&yaml, &self.registry).map_err(|e| match e {
                LoadError::Invalid(d) => d.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "),
                io => io.to_string(),
            }),
            Ok(None) => return,
            Err(e) => Err(e.detail()),
        };
        let live = loaded.and_then(|rules| self.go_live(rules, newest).map_err(|e| e.problems.join("; ")));
        match live {
            Ok(_) => self.behind.store(0, Ordering::Release),
            Err(problem) => {
                tracing::error!(rules_version = newest, problem = %problem, "cannot load the newest rules version; this node stays on its current rules (/readyz: rules_behind)");
                self.behind.store(newest, Ordering::Release);
            }
        }
    }
}

/// Polls the store for newer versions until the engine shuts down.
pub(super) fn follow_store(engine: &Arc<Engine>) {
    let weak = Arc::downgrade(engine);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(FOLLOW_INTERVAL).await;
            let Some(engine) = weak.upgrade() else { return };
            if engine.is_shutting_down() {
                return;
            }
            let _ = tokio::task::spawn_blocking(move || engine.catch_up_rules()).await;
        }
    });
}
