//! The durable points ledger: append-only entries, balances kept with them, stored results for
//! idempotent replays, and batch jobs stored before they are acknowledged.
//!
//! Storage sits behind [`LedgerStore`] (SQLite now; PostgreSQL next, same trait and tests).
//! Writes go through one writer thread that commits the events waiting as one transaction (group
//! commit), so one sync to disk serves them all; a batch job is stored in a transaction of its
//! own. Every event is applied exactly once: its id is the idempotency key, checked inside the
//! writing transaction.

#[cfg(feature = "test-support")]
pub mod faulty;
pub mod sqlite;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;

use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::oneshot;

use crate::actions::{Outcome, PointsChange};
use crate::graph::{Stacked, StackingKey};
use crate::event::Event;
use crate::result::{EventResult, Job};

/// Most events committed in one transaction.
pub const MAX_GROUP: usize = 512;

/// A failure of the storage.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    /// The storage could not be opened at start-up.
    #[error("cannot open the ledger: {0}")]
    Open(String),
    /// The storage failed while running.
    #[error("the ledger is unavailable: {0}")]
    Unavailable(String),
}

/// SHA-256 of an event's content: the same id with other content is a conflict.
pub type Fingerprint = [u8; 32];

/// The fingerprint of an event as decoded (its keys in a fixed order, payload keys sorted).
pub fn fingerprint(event: &Event) -> Fingerprint {
    let bytes = serde_json::to_vec(event).unwrap_or_default();
    Sha256::digest(&bytes).into()
}

/// A points movement to write.
#[derive(Debug, Clone)]
pub struct PointsWrite {
    /// The member.
    pub actor_id: String,
    /// The action that moves the points.
    pub action_id: String,
    /// The scenario it fired in.
    pub scenario_id: String,
    /// How many points, signed, and their expiry.
    pub change: PointsChange,
    /// The rule's reason.
    pub reason: Option<String>,
}

/// What one planned action asks of the ledger.
#[derive(Debug, Clone)]
pub enum ActionWrite {
    /// Nothing to write: its outcome is already known.
    Decided(Outcome),
    /// A points movement; a deduction is refused when the balance is too low.
    Points(PointsWrite),
}

/// Builds an event's result once the ledger has decided every action's outcome.
pub type ResultBuilder = Box<dyn FnOnce(&Stacked) -> EventResult + Send>;

/// One event to apply.
pub struct EventWrite {
    /// The idempotency key.
    pub event_id: String,
    /// True when the id was generated here (so no earlier event can have it).
    pub fresh_id: bool,
    /// The content's fingerprint.
    pub fingerprint: Fingerprint,
    /// One write per planned action, in order.
    pub actions: Vec<ActionWrite>,
    /// Each action's scenario and exclusive group, in the same order.
    pub stacking: Vec<StackingKey>,
    /// The batch job and index the event belongs to, if any.
    pub job: Option<(String, usize)>,
    /// Builds the result to store and answer.
    pub build_result: ResultBuilder,
}

/// What applying an event did.
#[derive(Debug, Clone, PartialEq)]
pub enum Applied {
    /// First time: entries written, result stored.
    Fresh(EventResult),
    /// Seen before with the same content: the stored result, nothing applied.
    Replayed(EventResult),
    /// Seen before with other content: nothing applied.
    Conflict,
}

/// A batch job to store before it is acknowledged.
pub struct NewJob {
    /// The job's id.
    pub job_id: String,
    /// Every event of the batch, in order.
    pub events: Vec<Arc<Event>>,
    /// How many (from the start) were accepted; the rest were rejected.
    pub queued: usize,
}

/// A batch event accepted but not yet processed, found at start-up.
#[derive(Debug, Clone)]
pub struct PendingEvent {
    /// Its job.
    pub job_id: String,
    /// Its index in the job.
    pub index: usize,
    /// The event.
    pub event: Event,
}

/// One ledger entry, as the history shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    /// Increasing id; the history's cursor.
    pub entry_id: i64,
    /// The member.
    pub actor_id: String,
    /// The event that caused it.
    pub event_id: String,
    /// The action.
    pub action_id: String,
    /// The scenario.
    pub scenario_id: String,
    /// Signed points.
    pub points: i64,
    /// `award` or `deduct`.
    pub kind: String,
    /// The rule's reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When it was written (RFC 3339).
    pub created_at: String,
    /// When awarded points expire (RFC 3339), if the rule says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

/// A page of history, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HistoryPage {
    /// The member.
    pub actor_id: String,
    /// Entries, newest first.
    pub entries: Vec<Entry>,
    /// Pass as `cursor` to get the next (older) page; null on the last page.
    pub next_cursor: Option<String>,
}

/// What a ledger backend must do. Every method is blocking; the engine calls them from worker
/// threads or `spawn_blocking`.
pub trait LedgerStore: Send + Sync {
    /// Applies events in one transaction; one outcome per event, in order. On error nothing of
    /// the group is stored.
    fn write_events(&self, events: Vec<EventWrite>) -> Result<Vec<Applied>, LedgerError>;
    /// Stores a batch job and its events durably.
    fn store_job(&self, job: &NewJob) -> Result<(), LedgerError>;
    /// The stored result of an event, with its fingerprint.
    fn stored_result(&self, event_id: &str) -> Result<Option<(Fingerprint, EventResult)>, LedgerError>;
    /// A member's balance (0 for a member never seen).
    fn balance(&self, actor_id: &str) -> Result<i64, LedgerError>;
    /// A member's entries, newest first, older than the cursor entry id.
    fn history(&self, actor_id: &str, limit: usize, before: Option<i64>) -> Result<HistoryPage, LedgerError>;
    /// A batch job.
    fn job(&self, job_id: &str) -> Result<Option<Job>, LedgerError>;
    /// Batch events accepted but not yet processed.
    fn pending_events(&self) -> Result<Vec<PendingEvent>, LedgerError>;
    /// Checks that the storage answers reads.
    fn ping(&self) -> Result<(), LedgerError>;
    /// Checks that the storage takes a durable write (after writes failed).
    fn probe_write(&self) -> Result<(), LedgerError>;
}

enum Write {
    Event(EventWrite, oneshot::Sender<Result<Applied, LedgerError>>),
    Job(NewJob, oneshot::Sender<Result<(), LedgerError>>),
    Stop,
}

/// The ledger as the engine uses it: a store plus its group-commit writer thread.
pub struct Ledger {
    store: Arc<dyn LedgerStore>,
    writes: mpsc::Sender<Write>,
    writer: Mutex<Option<JoinHandle<()>>>,
    healthy: Arc<AtomicBool>,
}

impl Ledger {
    /// Starts the writer thread over a store.
    pub fn start(store: Arc<dyn LedgerStore>) -> Result<Ledger, LedgerError> {
        let (writes, queue) = mpsc::channel();
        let healthy = Arc::new(AtomicBool::new(true));
        let writer_store = Arc::clone(&store);
        let writer_health = Arc::clone(&healthy);
        let writer = std::thread::Builder::new()
            .name("ledger-writer".into())
            .spawn(move || write_loop(writer_store.as_ref(), &queue, &writer_health))
            .map_err(|e| LedgerError::Open(format!("cannot start the writer thread: {e}")))?;
        Ok(Ledger { store, writes, writer: Mutex::new(Some(writer)), healthy })
    }

    /// The store, for reads.
    pub fn store(&self) -> &dyn LedgerStore {
        self.store.as_ref()
    }

    /// Applies one event, waiting (without blocking the thread) for its group to commit.
    pub async fn apply(&self, write: EventWrite) -> Result<Applied, LedgerError> {
        let (reply, answer) = oneshot::channel();
        self.writes.send(Write::Event(write, reply)).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    /// Stores a batch job durably.
    pub async fn store_job(&self, job: NewJob) -> Result<(), LedgerError> {
        let (reply, answer) = oneshot::channel();
        self.writes.send(Write::Job(job, reply)).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    /// True when the storage answers. After a failed write it is healthy again only once a
    /// probe write goes through, so a full or read-only disk keeps the service not ready.
    pub fn is_healthy(&self) -> bool {
        if self.healthy.load(Ordering::Acquire) {
            return self.store.ping().is_ok();
        }
        let recovered = self.store.probe_write().is_ok();
        if recovered {
            self.healthy.store(true, Ordering::Release);
        }
        recovered
    }

    /// Commits what is queued, then stops the writer. Blocking.
    pub fn close(&self) {
        let _ = self.writes.send(Write::Stop);
        if let Some(handle) = self.writer.lock().ok().and_then(|mut w| w.take()) {
            let _ = handle.join();
        }
    }
}

fn stopped() -> LedgerError {
    LedgerError::Unavailable("the ledger writer has stopped".into())
}

/// Takes whatever is waiting (up to [`MAX_GROUP`] events) and commits it as one transaction.
fn write_loop(store: &dyn LedgerStore, queue: &mpsc::Receiver<Write>, healthy: &AtomicBool) {
    let mut stop = false;
    while !stop {
        let Ok(first) = queue.recv() else { return };
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match queue.try_recv() {
                Ok(next) => group.push(next),
                Err(_) => break,
            }
        }
        let mut events = Vec::new();
        let mut replies = Vec::new();
        for write in group {
            match write {
                Write::Event(event, reply) => {
                    events.push(event);
                    replies.push(reply);
                }
                Write::Job(job, reply) => {
                    let outcome = store.store_job(&job);
                    note_health(healthy, &outcome);
                    let _ = reply.send(outcome);
                }
                Write::Stop => stop = true,
            }
        }
        if events.is_empty() {
            continue;
        }
        match store.write_events(events) {
            Ok(applied) => {
                healthy.store(true, Ordering::Release);
                for (reply, applied) in replies.into_iter().zip(applied) {
                    let _ = reply.send(Ok(applied));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "ledger write failed; nothing of this group was stored");
                healthy.store(false, Ordering::Release);
                for reply in replies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }
}

fn note_health<T>(healthy: &AtomicBool, outcome: &Result<T, LedgerError>) {
    healthy.store(outcome.is_ok(), Ordering::Release);
}

/// Decides a points movement against a balance: a deduction the balance cannot cover is
/// refused. The one rule every backend and the simulator share.
///
/// ```
/// use fluxflow::actions::{Outcome, Plan, PointsChange};
/// use fluxflow::ledger::decide_points;
/// let take = |amount| PointsChange { amount, expiry_days: None };
/// assert_eq!(decide_points(10, take(-10)), Outcome::Done(Plan::Points(take(-10))));
/// assert_eq!(decide_points(10, take(-11)), Outcome::InsufficientBalance { wanted: 11, balance: 10 });
/// ```
pub fn decide_points(balance: i64, change: PointsChange) -> Outcome {
    if change.amount < 0 && balance.saturating_add(change.amount) < 0 {
        return Outcome::InsufficientBalance { wanted: change.amount.saturating_neg(), balance };
    }
    Outcome::Done(crate::actions::Plan::Points(change))
}
