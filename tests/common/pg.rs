//! The two ledger stores the suites run on: SQLite under the server's `--data`, and PostgreSQL in
//! a fresh database per test (`ff_test_<random>`, dropped at the end), so tests run in parallel.
//!
//! PostgreSQL is the server named by `FLUXFLOW_TEST_POSTGRES` (an admin URL; default
//! `postgres://postgres@127.0.0.1:5432/postgres`). When it cannot be reached the PostgreSQL tests
//! print that they skipped — unless `CI=true`, where that is a failure.

use std::path::Path;

use fluxflow::ledger::postgres::scratch::{ScratchDatabase, admin_url};

/// Runs each named test function (taking `&Store`) once per store: `sqlite::NAME` and
/// `postgres::NAME`.
#[allow(unused_macros)]
macro_rules! both_stores {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[test]
                fn $name() {
                    super::$name(&crate::common::pg::Store::sqlite());
                }
            )*
        }
        mod postgres {
            $(
                #[test]
                fn $name() {
                    if let Some(store) = crate::common::pg::Store::postgres() {
                        super::$name(&store);
                    }
                }
            )*
        }
    };
}

/// A ledger store for a test.
pub enum Store {
    /// `--ledger sqlite`, the file under the server's data directory.
    Sqlite,
    /// `--ledger postgres://…` on a database of this test's own.
    Postgres(Box<ScratchDatabase>),
}

/// A fresh PostgreSQL database, or `None` (with a note) when there is no server and CI is not
/// `true`. With `CI=true` a missing server fails the test.
pub fn database() -> Option<ScratchDatabase> {
    match ScratchDatabase::create() {
        Ok(db) => Some(db),
        Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("PostgreSQL is required when CI=true, but {} cannot be used: {e}", admin_url())
        }
        Err(e) => {
            // Straight to stderr: the test harness would swallow eprintln! of a passing test.
            let note = format!(
                "SKIPPED {}: PostgreSQL test, {} cannot be used ({e}); with CI=true this fails\n",
                std::thread::current().name().unwrap_or("?"),
                admin_url()
            );
            let _ = std::io::Write::write_all(&mut std::io::stderr(), note.as_bytes());
            None
        }
    }
}

impl Store {
    pub fn sqlite() -> Store {
        Store::Sqlite
    }

    pub fn postgres() -> Option<Store> {
        database().map(|db| Store::Postgres(Box::new(db)))
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self, Store::Postgres(_))
    }

    /// The `--ledger` value.
    pub fn flag(&self) -> String {
        match self {
            Store::Sqlite => "sqlite".into(),
            Store::Postgres(db) => db.url.clone(),
        }
    }

    /// `["--ledger", flag]`, as owned strings.
    pub fn args(&self) -> [String; 2] {
        ["--ledger".into(), self.flag()]
    }

    /// The servers of a test on this store, each with these rules: one on SQLite; two nodes
    /// sharing the database on PostgreSQL (so races cross nodes).
    #[allow(dead_code)]
    pub fn nodes(&self, rules: &str) -> Vec<super::Server> {
        self.nodes_with(rules, &[])
    }

    /// [`Store::nodes`], each started with these flags too.
    #[allow(dead_code)]
    pub fn nodes_with(&self, rules: &str, extra: &[&str]) -> Vec<super::Server> {
        let store_args = self.args();
        let mut args: Vec<&str> = store_args.iter().map(String::as_str).collect();
        args.extend_from_slice(extra);
        let count = if self.is_postgres() { 2 } else { 1 };
        (0..count).map(|_| super::Server::start(rules, &args)).collect()
    }

    /// One integer from the books (`dir` is the server's directory; its ledger is `dir/data`).
    /// The SQL must read the same on both stores.
    pub fn count(&self, dir: &Path, sql: &str) -> i64 {
        match self {
            Store::Sqlite => {
                let db = rusqlite::Connection::open_with_flags(
                    dir.join("data/fluxflow.db"),
                    rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
                )
                .unwrap();
                db.query_row(sql, [], |r| r.get::<_, Option<i64>>(0)).unwrap().unwrap_or(0)
            }
            Store::Postgres(db) => db.query_i64(sql).unwrap(),
        }
    }
}
