//! Rules versions: every valid rules text that went live, numbered from 1, kept by the store the
//! service uses (the ledger's database; in memory with `--ledger none`), so every node can load
//! the newest and any earlier one can be made live again.

use std::sync::Mutex;

use serde::Serialize;

use super::LedgerError;

/// Where a version came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VersionSource {
    /// A valid change of the rules file (`--rules-source file`).
    File,
    /// `PUT /v1/rules`.
    Api,
    /// `POST /v1/rules/rollback`: an earlier version made live again.
    Rollback,
    /// The rules file, copied into an empty store (`--rules-source store`).
    Seed,
}

impl VersionSource {
    /// As stored.
    pub fn as_str(self) -> &'static str {
        match self {
            VersionSource::File => "file",
            VersionSource::Api => "api",
            VersionSource::Rollback => "rollback",
            VersionSource::Seed => "seed",
        }
    }

    /// From what is stored; an unknown word reads as `file` (a newer binary's source).
    pub fn parse(text: &str) -> VersionSource {
        match text {
            "api" => VersionSource::Api,
            "rollback" => VersionSource::Rollback,
            "seed" => VersionSource::Seed,
            _ => VersionSource::File,
        }
    }
}

/// A stored version, as `GET /v1/rules/versions` lists it (keys in this order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RulesVersion {
    /// Its number: 1, 2, …
    pub rules_version: u64,
    /// SHA-256 of its text.
    pub hash: String,
    /// When it was stored (RFC 3339).
    pub created_at: String,
    /// Who stored it, when known (the API key's name once keys exist).
    pub author: Option<String>,
    /// Where it came from.
    pub source: VersionSource,
}

impl RulesVersion {
    /// What storing `new` as version `number` makes.
    pub fn stored(number: u64, new: &NewVersion<'_>) -> RulesVersion {
        RulesVersion {
            rules_version: number,
            hash: new.hash.to_owned(),
            created_at: created_at(new.at),
            author: new.author.map(str::to_owned),
            source: new.source,
        }
    }
}

/// A version to store.
#[derive(Debug, Clone, Copy)]
pub struct NewVersion<'a> {
    /// SHA-256 of `yaml`.
    pub hash: &'a str,
    /// The rules text.
    pub yaml: &'a str,
    /// Who stores it.
    pub author: Option<&'a str>,
    /// Where it comes from.
    pub source: VersionSource,
    /// Now, µs since the epoch.
    pub at: i64,
}

/// Where versions are kept.
pub trait RulesVersions: Send + Sync {
    /// Stores a version numbered one above the newest, unless the newest has the same text
    /// (same hash), which is then answered instead: a text is never stored twice in a row.
    fn add_version(&self, new: &NewVersion<'_>) -> Result<RulesVersion, LedgerError>;
    /// The newest versions first, at most `limit`.
    fn versions(&self, limit: usize) -> Result<Vec<RulesVersion>, LedgerError>;
    /// A version and its text.
    fn version(&self, rules_version: u64) -> Result<Option<(RulesVersion, String)>, LedgerError>;
    /// The newest version's number (0 when none): what a node following the store polls.
    fn newest(&self) -> Result<u64, LedgerError>;
}

/// The time a version was stored, as the API shows it.
pub(crate) fn created_at(micros: i64) -> String {
    jiff::Timestamp::from_microsecond(micros).map(|t| t.to_string()).unwrap_or_default()
}

/// Versions in memory (`--ledger none`): gone with the process.
#[derive(Default)]
pub struct MemoryVersions {
    versions: Mutex<Vec<(RulesVersion, String)>>,
}

impl RulesVersions for MemoryVersions {
    fn add_version(&self, new: &NewVersion<'_>) -> Result<RulesVersion, LedgerError> {
        let mut versions = self.versions.lock().map_err(super::broken)?;
        if let Some((newest, _)) = versions.last().filter(|(v, _)| v.hash == new.hash) {
            return Ok(newest.clone());
        }
        let version = RulesVersion::stored(versions.len() as u64 + 1, new);
        versions.push((version.clone(), new.yaml.to_owned()));
        Ok(version)
    }

    fn versions(&self, limit: usize) -> Result<Vec<RulesVersion>, LedgerError> {
        let versions = self.versions.lock().map_err(super::broken)?;
        Ok(versions.iter().rev().take(limit).map(|(v, _)| v.clone()).collect())
    }

    fn version(&self, rules_version: u64) -> Result<Option<(RulesVersion, String)>, LedgerError> {
        let versions = self.versions.lock().map_err(super::broken)?;
        Ok(versions.iter().find(|(v, _)| v.rules_version == rules_version).cloned())
    }

    fn newest(&self) -> Result<u64, LedgerError> {
        Ok(self.versions.lock().map_err(super::broken)?.len() as u64)
    }
}
