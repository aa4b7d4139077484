//! A store that fails on demand, for testing how the service behaves when its ledger fails.
//! Compiled only with the `test-support` feature (the test suite's), never in release builds.
//!
//! It wraps a real store and fails every write while a marker file exists (reads still work), as a full or read-only disk would; the binary uses it when
//! `FLUXFLOW_TEST_LEDGER_FAULT_FILE` names that file.

use std::path::PathBuf;
use std::sync::Arc;

use super::{Applied, EventWrite, Fingerprint, HistoryPage, LedgerError, LedgerStore, NewJob, PendingEvent};
use crate::result::{EventResult, Job};

/// The environment variable naming the marker file.
pub const FAULT_FILE_ENV: &str = "FLUXFLOW_TEST_LEDGER_FAULT_FILE";

/// A store that fails while its marker file exists.
pub struct FaultyStore {
    inner: Arc<dyn LedgerStore>,
    marker: PathBuf,
}

impl FaultyStore {
    /// Wraps a store (SQLite or PostgreSQL).
    pub fn new(inner: Arc<dyn LedgerStore>, marker: PathBuf) -> Self {
        FaultyStore { inner, marker }
    }

    fn check(&self) -> Result<(), LedgerError> {
        if self.marker.exists() {
            return Err(LedgerError::unavailable("injected fault: disk I/O error", true, None));
        }
        Ok(())
    }
}

impl LedgerStore for FaultyStore {
    fn write_events(&self, events: &[EventWrite]) -> Result<Vec<Applied>, LedgerError> {
        self.check()?;
        self.inner.write_events(events)
    }
    fn store_job(&self, job: &NewJob) -> Result<(), LedgerError> {
        self.check()?;
        self.inner.store_job(job)
    }
    fn stored_result(&self, event_id: &str) -> Result<Option<(Fingerprint, EventResult)>, LedgerError> {
        self.inner.stored_result(event_id)
    }
    fn balance(&self, actor_id: &str) -> Result<i64, LedgerError> {
        self.inner.balance(actor_id)
    }
    fn history(&self, actor_id: &str, limit: usize, before: Option<i64>) -> Result<HistoryPage, LedgerError> {
        self.inner.history(actor_id, limit, before)
    }
    fn job(&self, job_id: &str) -> Result<Option<Job>, LedgerError> {
        self.inner.job(job_id)
    }
    fn pending_events(&self) -> Result<Vec<PendingEvent>, LedgerError> {
        self.inner.pending_events()
    }
    fn ping(&self) -> Result<(), LedgerError> {
        // Reads keep working while writes fail: the service must still notice.
        self.inner.ping()
    }
    fn probe_write(&self) -> Result<(), LedgerError> {
        self.check()?;
        self.inner.probe_write()
    }
}
