//! Where keys are kept: the PostgreSQL schema (the `api_keys` table, shared by every node), or a
//! keys database under `--data` for SQLite and `none` ([`SqliteKeys`], `keys.db`). Only hashes
//! are stored; a revoked key keeps its row, so the store remembers that keys have existed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use super::{KeyHash, KeyName, Principal, Scope};

/// The keys database's file name under `--data`.
pub const FILE_NAME: &str = "keys.db";

/// One key as listed: never its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    /// Its name.
    pub name: KeyName,
    /// What it may do.
    pub scopes: Vec<Scope>,
    /// When it was made, in microseconds since the epoch.
    pub created_at: i64,
    /// Who made it (the operating-system user of `fluxflow keys add`).
    pub created_by: String,
    /// When it was revoked.
    pub revoked_at: Option<i64>,
    /// Who revoked it.
    pub revoked_by: Option<String>,
}

/// The keys a node checks requests against.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    /// Whether any key was ever made: the API is open only while this is false.
    pub ever: bool,
    /// The live keys by hash.
    pub live: HashMap<KeyHash, Arc<Principal>>,
}

/// Why a keys operation failed.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A live key already has this name.
    #[error("a key named `{0}` exists; revoke it first or choose another name")]
    NameTaken(String),
    /// The store failed.
    #[error("the keys store failed: {0}")]
    Storage(String),
}

/// A store of keys.
pub trait KeyStore: Send + Sync {
    /// Stores a new key's hash under `name`.
    fn add(&self, name: &KeyName, scopes: &[Scope], hash: KeyHash, by: &str) -> Result<(), KeyError>;
    /// Every key, live and revoked, oldest first.
    fn list(&self) -> Result<Vec<KeyRecord>, KeyError>;
    /// Revokes the live key named `name`; false when there is none.
    fn revoke(&self, name: &KeyName, by: &str) -> Result<bool, KeyError>;
    /// The live keys, and whether any key ever existed.
    fn key_set(&self) -> Result<KeySet, KeyError>;
}

/// A stored key row's columns, in the order every store reads them.
pub(crate) const COLUMNS: &str = "name, scopes, created_at, created_by, revoked_at, revoked_by";

/// Scopes as stored: names joined by commas.
pub(crate) fn scopes_text(scopes: &[Scope]) -> String {
    scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(",")
}

/// Reads stored scopes back; a name this version does not know grants nothing.
pub(crate) fn stored_scopes(text: &str) -> Vec<Scope> {
    text.split(',').filter_map(|name| name.parse().ok()).collect()
}

/// A stored name; rows were checked when written, so a bad one means the store was edited.
pub(crate) fn stored_name(name: String) -> Result<KeyName, KeyError> {
    name.parse().map_err(|e: super::BadKeyName| KeyError::Storage(e.to_string()))
}

/// Builds the set from rows of (name, scopes, hash, revoked).
pub(crate) fn key_set(rows: impl IntoIterator<Item = (String, String, Vec<u8>, bool)>) -> Result<KeySet, KeyError> {
    let mut set = KeySet::default();
    for (name, scopes, hash, revoked) in rows {
        set.ever = true;
        if revoked {
            continue;
        }
        let hash: [u8; 32] =
            hash.try_into().map_err(|_| KeyError::Storage("a stored key hash is not 32 bytes".into()))?;
        let principal = Principal { name: stored_name(name)?, scopes: stored_scopes(&scopes) };
        set.live.insert(KeyHash(hash), Arc::new(principal));
    }
    Ok(set)
}

/// The keys database under `--data` (SQLite and `none` ledgers).
pub struct SqliteKeys {
    path: PathBuf,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS api_keys (
    name       TEXT NOT NULL,
    hash       BLOB NOT NULL UNIQUE,
    scopes     TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    created_by TEXT NOT NULL,
    revoked_at INTEGER,
    revoked_by TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS live_key_names ON api_keys (name) WHERE revoked_at IS NULL;
";

fn storage(e: rusqlite::Error) -> KeyError {
    KeyError::Storage(e.to_string())
}

impl SqliteKeys {
    /// The keys database of the data directory `data` (created at the first key).
    pub fn under(data: &Path) -> SqliteKeys {
        SqliteKeys { path: data.join(FILE_NAME) }
    }

    /// Opens it for a change, creating the directory, the file and the table when missing.
    fn writable(&self) -> Result<Connection, KeyError> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| KeyError::Storage(format!("cannot create {}: {e}", dir.display())))?;
        }
        let conn = Connection::open(&self.path).map_err(storage)?;
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(storage)?;
        conn.execute_batch(SCHEMA).map_err(storage)?;
        Ok(conn)
    }

    /// Opens it to read; `None` when no key was ever made here.
    fn readable(&self) -> Result<Option<Connection>, KeyError> {
        if !self.path.exists() {
            return Ok(None);
        }
        let conn = Connection::open_with_flags(&self.path, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(storage)?;
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(storage)?;
        Ok(Some(conn))
    }
}

impl KeyStore for SqliteKeys {
    fn add(&self, name: &KeyName, scopes: &[Scope], hash: KeyHash, by: &str) -> Result<(), KeyError> {
        let conn = self.writable()?;
        let now = jiff::Timestamp::now().as_microsecond();
        let inserted = conn.execute(
            "INSERT INTO api_keys (name, hash, scopes, created_at, created_by) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![name.as_str(), &hash.0[..], scopes_text(scopes), now, by],
        );
        match inserted {
            Ok(_) => Ok(()),
            Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::ConstraintViolation) => {
                Err(KeyError::NameTaken(name.to_string()))
            }
            Err(e) => Err(storage(e)),
        }
    }

    fn list(&self) -> Result<Vec<KeyRecord>, KeyError> {
        let Some(conn) = self.readable()? else { return Ok(Vec::new()) };
        let mut statement =
            conn.prepare(&format!("SELECT {COLUMNS} FROM api_keys ORDER BY created_at, rowid")).map_err(storage)?;
        let rows = statement
            .query_map([], |row| {
                Ok((row.get(0)?, row.get::<_, String>(1)?, row.get(2)?, row.get(3)?, row.get(4)?, row.get(5)?))
            })
            .map_err(storage)?;
        rows.map(|row| {
            let (name, scopes, created_at, created_by, revoked_at, revoked_by) = row.map_err(storage)?;
            Ok(KeyRecord {
                name: stored_name(name)?,
                scopes: stored_scopes(&scopes),
                created_at,
                created_by,
                revoked_at,
                revoked_by,
            })
        })
        .collect()
    }

    fn revoke(&self, name: &KeyName, by: &str) -> Result<bool, KeyError> {
        let Some(_) = self.readable()? else { return Ok(false) };
        let conn = self.writable()?;
        let now = jiff::Timestamp::now().as_microsecond();
        let changed = conn
            .execute(
                "UPDATE api_keys SET revoked_at = ?1, revoked_by = ?2 WHERE name = ?3 AND revoked_at IS NULL",
                params![now, by, name.as_str()],
            )
            .map_err(storage)?;
        Ok(changed > 0)
    }

    fn key_set(&self) -> Result<KeySet, KeyError> {
        let Some(conn) = self.readable()? else { return Ok(KeySet::default()) };
        let exists: Option<String> = conn
            .query_row("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'api_keys'", [], |row| {
                row.get(0)
            })
            .optional()
            .map_err(storage)?;
        if exists.is_none() {
            return Ok(KeySet::default());
        }
        let mut statement =
            conn.prepare("SELECT name, scopes, hash, revoked_at IS NOT NULL FROM api_keys").map_err(storage)?;
        let rows = statement
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)))
            .map_err(storage)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(storage)?;
        key_set(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::NewKey;

    #[test]
    fn a_revoked_key_stops_counting_but_the_store_remembers_keys_existed() {
        let dir = tempfile::tempdir().unwrap();
        let keys = SqliteKeys::under(&dir.path().join("data"));
        assert!(!keys.key_set().unwrap().ever, "no file: open");
        let name: KeyName = "shop".parse().unwrap();
        let key = NewKey::generate().unwrap();
        keys.add(&name, &[Scope::EventsWrite], key.hash, "tester").unwrap();
        assert!(matches!(
            keys.add(&name, &[Scope::Admin], NewKey::generate().unwrap().hash, "t"),
            Err(KeyError::NameTaken(_))
        ));
        let set = keys.key_set().unwrap();
        assert!(set.ever);
        assert_eq!(set.live[&key.hash].scopes, vec![Scope::EventsWrite]);
        assert!(keys.revoke(&name, "tester").unwrap());
        assert!(!keys.revoke(&name, "tester").unwrap(), "already revoked");
        let set = keys.key_set().unwrap();
        assert!(set.ever && set.live.is_empty());
        let listed = keys.list().unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].revoked_by.as_deref(), Some("tester"));
        keys.add(&name, &[Scope::Admin], NewKey::generate().unwrap().hash, "t").unwrap();
    }
}
