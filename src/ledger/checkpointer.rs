//! Copies the SQLite ledger's write-ahead log back into the database on a thread of its own, so
//! the writer's commits do not wait for it.
//!
//! SQLite checkpoints in the committing thread: once the WAL holds `wal_autocheckpoint` pages,
//! the commit that crossed it copies them all into the database and syncs it, and every event
//! of the next groups waits behind that copy (13–20 ms under load, which set the durable p99).
//! The checkpointer runs a `PASSIVE` checkpoint every [`EVERY`] on its own connection: it takes
//! no lock the writer needs and copies what is committed while the writer goes on. The writer
//! keeps its autocheckpoint, which then finds almost every page already copied, so its own
//! checkpoint is short; that one completes the WAL, and SQLite starts the log again from its
//! beginning at the next write. The WAL therefore stays bounded by the autocheckpoint's size, as
//! before. (A background `PASSIVE` checkpoint alone never lets the log start again under steady
//! writes: new frames always arrive between its end and the next write.)

use std::path::Path;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;

/// How often the log is copied back.
pub const EVERY: Duration = Duration::from_millis(50);

/// The checkpointing thread of one SQLite ledger; stopped (and joined) when dropped.
pub struct Checkpointer {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Opens a connection of its own to the database at `path` and starts checkpointing.
    pub fn start(path: &Path) -> std::io::Result<Checkpointer> {
        let conn = Connection::open(path).map_err(std::io::Error::other)?;
        // Syncs the database file after each copy, as the writer's own checkpoints do.
        conn.execute_batch("PRAGMA synchronous = FULL").map_err(std::io::Error::other)?;
        let (stop, stopped) = mpsc::channel::<()>();
        let thread =
            std::thread::Builder::new().name("ledger-checkpoint".into()).spawn(move || run(&conn, &stopped))?;
        Ok(Checkpointer { stop: Some(stop), thread: Some(thread) })
    }
}

fn run(conn: &Connection, stopped: &mpsc::Receiver<()>) {
    let mut failing = false;
    while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(EVERY) {
        // (busy, frames in the log, frames copied); busy only when another checkpoint runs.
        let checkpointed = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| row.get::<_, i64>(0));
        match checkpointed {
            Ok(_) => failing = false,
            // Logged once per run of failures: the writer's own checkpoints still bound the log.
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %e, "the SQLite ledger's background checkpoint failed; the writer checkpoints alone");
            }
            Err(_) => {}
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
