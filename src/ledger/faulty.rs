//! Stores that misbehave on demand, for testing how the service and the writer behave when a
//! ledger fails. Compiled only with the `test-support` feature (the test suite's), never in
//! release builds.
//!
//! [`Intercepted`] wraps a real store and runs a hook before each write (reads pass through);
//! the hook may fail the write, hold it, or record what it saw. [`faulty`] is the one the binary
//! uses when `FLUXFLOW_TEST_LEDGER_FAULT_FILE` names a marker file: every write fails while the
//! file exists, as on a full or read-only disk.

use std::path::PathBuf;
use std::sync::Arc;

use super::{Applied, EventWrite, Fingerprint, HistoryPage, LedgerError, LedgerStore, NewJob, PendingEvent};
use crate::result::{EventResult, Job};

/// The environment variable naming the marker file.
pub const FAULT_FILE_ENV: &str = "FLUXFLOW_TEST_LEDGER_FAULT_FILE";

/// A write, as a hook sees it before the store does.
#[derive(Clone, Copy)]
pub enum Write<'a> {
    /// A group of events.
    Events(&'a [EventWrite]),
    /// A batch job.
    Job,
    /// An operation on a member's points.
    Operation,
    /// A probe write (readiness).
    Probe,
}

/// Runs before each write; an error fails the write, and the store never sees it.
pub type WriteHook = Box<dyn Fn(Write<'_>) -> Result<(), LedgerError> + Send + Sync>;

/// A store whose writes pass a hook first.
pub struct Intercepted {
    inner: Arc<dyn LedgerStore>,
    hook: WriteHook,
}

impl Intercepted {
    /// Wraps a store (SQLite or PostgreSQL).
    pub fn new(inner: Arc<dyn LedgerStore>, hook: WriteHook) -> Self {
        Intercepted { inner, hook }
    }
}

/// A store whose writes fail while `marker` exists; reads keep working, so the service must
/// notice the failure from its writes.
pub fn faulty(inner: Arc<dyn LedgerStore>, marker: PathBuf) -> Intercepted {
    let hook = move |_: Write<'_>| {
        if marker.exists() {
            return Err(LedgerError::unavailable("injected fault: disk I/O error", true, None));
        }
        Ok(())
    };
    Intercepted::new(inner, Box::new(hook))
}

impl LedgerStore for Intercepted {
    fn write_events(&self, events: &[EventWrite]) -> Result<Vec<Applied>, LedgerError> {
        (self.hook)(Write::Events(events))?;
        self.inner.write_events(events)
    }
    fn store_job(&self, job: &NewJob) -> Result<(), LedgerError> {
        (self.hook)(Write::Job)?;
        self.inner.store_job(job)
    }
    fn apply_operation(
        &self,
        request: &super::operations::OperationRequest,
    ) -> Result<super::operations::OperationOutcome, LedgerError> {
        (self.hook)(Write::Operation)?;
        self.inner.apply_operation(request)
    }
    fn stored_result(&self, event_id: &str) -> Result<Option<(Fingerprint, EventResult)>, LedgerError> {
        self.inner.stored_result(event_id)
    }
    fn points_state(&self, actor_id: &str, at: i64) -> Result<super::lots::PointsState, LedgerError> {
        self.inner.points_state(actor_id, at)
    }
    fn tier_points(&self, actor_id: &str, from: i64, to: i64) -> Result<i64, LedgerError> {
        self.inner.tier_points(actor_id, from, to)
    }
    fn original(&self, event_id: &str) -> Result<Option<super::tx::Original>, LedgerError> {
        self.inner.original(event_id)
    }
    fn reversible(&self, actor_id: &str, event_id: &str) -> Result<super::tx::Reversible, LedgerError> {
        self.inner.reversible(actor_id, event_id)
    }
    fn sweep(&self, now: i64, max_members: usize) -> Result<usize, LedgerError> {
        self.inner.sweep(now, max_members)
    }
    fn usage(&self, counter: &crate::graph::limits::Counter<'_>) -> Result<crate::graph::limits::Usage, LedgerError> {
        self.inner.usage(counter)
    }
    fn member_history(
        &self,
        actor_id: &str,
        event_type: &str,
        from: i64,
        to: i64,
    ) -> Result<Vec<(i64, Option<String>)>, LedgerError> {
        self.inner.member_history(actor_id, event_type, from, to)
    }
    fn member_count(&self, actor_id: &str, event_type: &str, from: i64, to: i64) -> Result<u64, LedgerError> {
        self.inner.member_count(actor_id, event_type, from, to)
    }
    fn member_sum(
        &self,
        actor_id: &str,
        key: &super::member::SumKey,
        from: i64,
        to: i64,
    ) -> Result<Option<f64>, LedgerError> {
        self.inner.member_sum(actor_id, key, from, to)
    }
    fn track_sums(&self, sums: &[super::member::SumKey]) -> Result<(), LedgerError> {
        self.inner.track_sums(sums)
    }
    fn track_targets(&self, targets: &[&str]) -> Result<(), LedgerError> {
        self.inner.track_targets(targets)
    }
    fn track_history(&self, types: &[String]) -> Result<(), LedgerError> {
        self.inner.track_history(types)
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
    fn stream_position(&self, subject: &str) -> Result<u64, LedgerError> {
        self.inner.stream_position(subject)
    }

    fn ping(&self) -> Result<(), LedgerError> {
        self.inner.ping()
    }
    fn probe_write(&self) -> Result<(), LedgerError> {
        (self.hook)(Write::Probe)?;
        self.inner.probe_write()
    }
}
