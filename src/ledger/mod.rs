//! The durable points ledger: append-only entries, balances kept with them, stored results for
//! idempotent replays, and batch jobs stored before they are acknowledged.
//!
//! What an event does to the books is decided once, in [`posting::post`], over the small
//! transaction interface [`tx::LedgerTx`] that each store implements: SQLite ([`sqlite`]),
//! PostgreSQL ([`postgres`], several nodes on one database) and the in-memory overlay of
//! simulations and rule tests ([`memory`]). Storage sits behind [`LedgerStore`]. Writes go
//! through one writer thread that commits the events waiting as one transaction (group commit);
//! a batch job is stored in a transaction of its own. Every event is applied exactly once: its id
//! is the idempotency key, checked inside the writing transaction.

pub mod checkpointer;
#[cfg(feature = "test-support")]
pub mod faulty;
pub mod lots;
pub mod member;
pub mod memory;
pub mod operations;
pub mod postgres;
pub mod posting;
pub mod reversal;
pub mod sqlite;
pub mod tx;
pub mod versions;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;

use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::oneshot;

use crate::actions::{Outcome, PointsChange};
use crate::event::Event;
use crate::graph::limits::{Counter, Usage};
use crate::graph::{ScenarioLimits, Stacked, StackingKey};
use crate::result::{EventResult, Job, StoredJson};
use operations::{OperationOutcome, OperationRequest};

/// Most events committed in one transaction.
pub const MAX_GROUP: usize = 512;

/// What a ledger error came from, kept so logs and callers can see the cause.
pub type ErrorSource = Arc<dyn std::error::Error + Send + Sync>;

/// A failure of the storage. It keeps its source, and says whether trying again can help
/// ([`LedgerError::retryable`]): a lost connection, a busy database or a full disk may pass; a
/// schema from a newer version or a corrupt file will not. Cloned so one failed group commit can
/// answer every event of the group.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LedgerError {
    /// The storage could not be opened at start-up.
    #[error("cannot open the ledger: {message}")]
    Open {
        /// What failed, for people.
        message: String,
        /// The underlying error.
        #[source]
        source: Option<ErrorSource>,
    },
    /// The storage holds a schema newer than this binary knows: it is never written.
    #[error("{place} has schema version {found}, newer than this FluxFlow knows ({known}); upgrade FluxFlow")]
    SchemaTooNew {
        /// The file or database.
        place: String,
        /// The version found.
        found: i64,
        /// The newest version this binary knows.
        known: i64,
    },
    /// The storage failed while running; nothing of the failed transaction was stored.
    #[error("the ledger is unavailable: {message}")]
    Unavailable {
        /// What failed, for people.
        message: String,
        /// True when trying the same thing again later may succeed.
        retryable: bool,
        /// The underlying error.
        #[source]
        source: Option<ErrorSource>,
    },
}

/// Equal when they say the same (their sources are not compared).
impl PartialEq for LedgerError {
    fn eq(&self, other: &Self) -> bool {
        self.retryable() == other.retryable() && self.to_string() == other.to_string()
    }
}

impl Eq for LedgerError {}

impl LedgerError {
    /// An error at start-up, with its cause.
    pub fn open(message: impl Into<String>, source: impl std::error::Error + Send + Sync + 'static) -> LedgerError {
        LedgerError::Open { message: message.into(), source: Some(Arc::new(source)) }
    }

    /// An error at start-up without an underlying error.
    pub fn open_msg(message: impl Into<String>) -> LedgerError {
        LedgerError::Open { message: message.into(), source: None }
    }

    /// A failure while running; `retryable` says whether trying again may help.
    pub fn unavailable(message: impl Into<String>, retryable: bool, source: Option<ErrorSource>) -> LedgerError {
        LedgerError::Unavailable { message: message.into(), retryable, source }
    }

    /// The message with every cause under it, for answers and logs that show one line.
    pub fn detail(&self) -> String {
        let mut text = self.to_string();
        let mut cause = std::error::Error::source(self);
        while let Some(e) = cause {
            text.push_str(": ");
            text.push_str(&e.to_string());
            cause = e.source();
        }
        text
    }

    /// True when trying the same write or read again later may succeed (the connection or the
    /// disk may come back); false when it cannot (a newer schema, a corrupt file, a bug).
    pub fn retryable(&self) -> bool {
        match self {
            LedgerError::Open { .. } | LedgerError::SchemaTooNew { .. } => false,
            LedgerError::Unavailable { retryable, .. } => *retryable,
        }
    }
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
    /// How many points, signed, as the action planned them.
    pub change: PointsChange,
    /// When awarded points become spendable and expire (the action's days, else the
    /// programme's).
    pub terms: lots::Terms,
    /// The rule's reason.
    pub reason: Option<String>,
}

/// Points to take back for an earlier event (`reverse_points`): the ledger decides how many
/// from what the original awarded.
#[derive(Debug, Clone)]
pub struct ReverseWrite {
    /// The member.
    pub actor_id: String,
    /// The action.
    pub action_id: String,
    /// The scenario it fired in.
    pub scenario_id: String,
    /// The rule's reason.
    pub reason: Option<String>,
    /// What to reverse, and the share.
    pub reversal: crate::actions::Reversal,
    /// May it take the balance below zero (the programme's `negative_balance`)?
    pub negative_balance: crate::rules::loyalty::NegativeBalance,
}

/// A webhook delivery to queue in the outbox with the event (`webhook_notify`).
#[derive(Debug, Clone)]
pub struct NotifyWrite {
    /// The action.
    pub action_id: String,
    /// Where the delivery goes, encoded at load.
    pub notification: std::sync::Arc<crate::actions::webhook_notify::Notification>,
}

/// What one planned action asks of the ledger.
#[derive(Debug, Clone)]
pub enum ActionWrite {
    /// Nothing to write: its outcome is already known.
    Decided(Outcome),
    /// A points movement; a deduction is refused when the balance is too low.
    Points(PointsWrite),
    /// A reversal of an earlier event's points.
    Reverse(ReverseWrite),
    /// A delivery for the outbox, written in the event's transaction.
    Notify(NotifyWrite),
}

impl ActionWrite {
    /// What each planned action of an evaluation asks of the ledger: a points plan of an event
    /// with an actor is a movement for the ledger to decide; anything else is already decided.
    /// The engine and the simulator both use it, so they hand the core the same writes.
    pub fn for_plans(
        rules: &crate::graph::Rules,
        planned: &[crate::graph::PlannedAction],
        event: &Event,
    ) -> Vec<ActionWrite> {
        let (programme, actor) = (&rules.file.programme, event.actor_id.as_deref());
        planned
            .iter()
            .map(|planned| match (planned.plan, actor, rules.action(planned.action)) {
                (crate::actions::Plan::Reverse, Some(actor), Some(entry)) => match entry.action.reversal(event) {
                    Some(reversal) => ActionWrite::Reverse(ReverseWrite {
                        actor_id: actor.to_owned(),
                        action_id: entry.id.clone(),
                        scenario_id: rules.scenario_id(planned.scenario).to_owned(),
                        reason: entry.action.ledger_reason().map(str::to_owned),
                        reversal,
                        negative_balance: programme.negative_balance,
                    }),
                    None => ActionWrite::Decided(Outcome::of_plan(planned.plan)),
                },
                (crate::actions::Plan::Notify, _, Some(entry)) => match entry.action.notification() {
                    Some(notification) => {
                        ActionWrite::Notify(NotifyWrite { action_id: entry.id.clone(), notification })
                    }
                    None => ActionWrite::Decided(Outcome::of_plan(planned.plan)),
                },
                (crate::actions::Plan::Points(change), Some(actor), Some(entry)) => ActionWrite::Points(PointsWrite {
                    actor_id: actor.to_owned(),
                    action_id: entry.id.clone(),
                    scenario_id: rules.scenario_id(planned.scenario).to_owned(),
                    change,
                    terms: lots::Terms {
                        pending_days: change.pending_days.unwrap_or(programme.pending_days),
                        expiry_days: change.expiry_days.unwrap_or(programme.expiry_days),
                    },
                    reason: entry.action.ledger_reason().map(str::to_owned),
                }),
                (plan, _, _) => ActionWrite::Decided(Outcome::of_plan(plan)),
            })
            .collect()
    }
}

/// Builds an event's result once the ledger has decided every action's outcome. `Fn`, not
/// `FnOnce`: a store may roll a group back and post it again (PostgreSQL, on a deadlock or
/// when another node stored the same id first).
pub type ResultBuilder = Box<dyn Fn(&Stacked) -> EventResult + Send>;

/// How the result of a planned event is made.
pub enum ResultPlan {
    /// Built by the ledger once it has decided every action's outcome.
    Build(ResultBuilder),
    /// Built before the write, since no outcome could come out otherwise than planned
    /// ([`posting::certain`]): its JSON, which the ledger stores as it is. The writer's thread,
    /// which every event of a store passes through one after another, then neither builds nor
    /// encodes it.
    AsPlanned(StoredJson),
}

/// What an event's actions ask of the ledger, planned before the write.
pub struct Planned {
    /// One write per planned action, in order.
    pub actions: Vec<ActionWrite>,
    /// Each action's scenario and exclusive group, in the same order.
    pub stacking: Vec<StackingKey>,
    /// The limits of the event's scenarios that have any.
    pub limits: Vec<Arc<ScenarioLimits>>,
    /// How the result to store and answer is made.
    pub result: ResultPlan,
}

impl Planned {
    /// What [`posting::post`] needs of it.
    pub fn writes(&self) -> posting::Writes<'_> {
        posting::Writes {
            actions: &self.actions,
            stacking: &self.stacking,
            limits: &self.limits,
            result: match &self.result {
                ResultPlan::Build(build) => posting::ResultRef::Build(&**build),
                ResultPlan::AsPlanned(json) => posting::ResultRef::AsPlanned(json),
            },
        }
    }
}

/// How an event is planned: before the write, or (rules that read the member's state) inside
/// the write's transaction.
pub enum WritePlan {
    /// Planned before the write.
    Ready(Planned),
    /// Planned inside the transaction, on the member's state it keeps until the commit.
    Deferred(member::Deferred),
}

/// Where a stream event sits in the stream: its subject (one per actor) and its sequence. The
/// ledger keeps the highest sequence applied per subject, written in the event's own
/// transaction, so a node can apply an actor's earlier messages before a later one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamPosition {
    /// The subject, `fluxflow.events.<actor_id>`.
    pub subject: String,
    /// The stream sequence.
    pub sequence: u64,
}

/// One event to apply.
pub struct EventWrite {
    /// The idempotency key.
    pub event_id: String,
    /// True when the id was generated here (so no earlier event can have it).
    pub fresh_id: bool,
    /// The content's fingerprint.
    pub fingerprint: Fingerprint,
    /// What its actions ask of the ledger.
    pub plan: WritePlan,
    /// The batch job and index the event belongs to, if any.
    pub job: Option<(String, usize)>,
    /// The event itself: its type, time and payload are stored with it (history for member
    /// functions and reversals).
    pub event: Arc<Event>,
    /// Where it sits in the event stream, when it came from one.
    pub position: Option<StreamPosition>,
}

/// Prefixed so a budget never takes a member's lock (a collision would only wait longer).
fn budget_lock(scenario_id: &str) -> String {
    format!("limit budget\u{1}{scenario_id}")
}

impl EventWrite {
    /// What a store locks before posting the event (PostgreSQL, for many nodes): each member
    /// whose balance, limits or history it reads, and the budget counter of each
    /// `per: scenario` limit it may spend.
    pub fn lock_keys(&self) -> Vec<String> {
        let actor = self.event.actor_id.clone();
        match &self.plan {
            WritePlan::Ready(planned) => {
                let members = planned.actions.iter().filter_map(|a| match a {
                    ActionWrite::Points(p) => Some(p.actor_id.clone()),
                    ActionWrite::Reverse(r) => Some(r.actor_id.clone()),
                    ActionWrite::Decided(_) | ActionWrite::Notify(_) => None,
                });
                let limited_actor = planned.limits.iter().any(|l| l.per_actor()).then_some(actor).flatten();
                let budgets = planned.limits.iter().filter(|l| l.has_budget()).map(|l| budget_lock(&l.scenario_id));
                members.chain(limited_actor).chain(budgets).collect()
            }
            WritePlan::Deferred(deferred) => {
                actor.into_iter().chain(deferred.budgets.iter().map(|b| budget_lock(b))).collect()
            }
        }
    }

    /// What [`posting::post`] needs of it.
    pub fn posting(&self) -> posting::Posting<'_> {
        let plan = match &self.plan {
            WritePlan::Ready(planned) => posting::PlanRef::Ready(planned.writes()),
            WritePlan::Deferred(deferred) => posting::PlanRef::Deferred(deferred),
        };
        posting::Posting {
            event_id: &self.event_id,
            fresh_id: self.fresh_id,
            fingerprint: &self.fingerprint,
            plan,
            job: self.job.as_ref().map(|(id, index)| (id.as_str(), *index)),
            event: &self.event,
            position: self.position.as_ref(),
        }
    }
}

/// What applying an event did.
#[derive(Debug, Clone, PartialEq)]
pub enum Applied {
    /// First time: entries written, result stored.
    Fresh(EventResult),
    /// First time, every action carried out as planned: entries written, and the result the
    /// caller built before the write ([`ResultPlan::AsPlanned`]) stored.
    AsPlanned,
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Entry {
    /// Increasing id; the history's cursor.
    pub entry_id: i64,
    /// The member.
    pub actor_id: String,
    /// The event that caused it.
    pub event_id: String,
    /// The action (empty for an operation, and then not shown).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub action_id: String,
    /// The scenario (empty for an operation, and then not shown).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub scenario_id: String,
    /// Signed points.
    pub points: i64,
    /// What moved the points.
    pub kind: EntryKind,
    /// The rule's reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When it was written (RFC 3339).
    pub created_at: String,
    /// The time it counts from (RFC 3339): the event time of an event's entry, the request's
    /// time of an operation's, the lot's expiry of an `expire` entry. A balance at a time sums
    /// the entries dated at or before it.
    #[serde(default)]
    pub dated_at: String,
    /// When the points of its lot become spendable (RFC 3339), when later than `dated_at`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available_at: Option<String>,
    /// When the points of its lot expire (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// The event a reversal takes back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reverses: Option<String>,
}

/// What an entry records. Stored as its lower-case name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// Points awarded by an action.
    Award,
    /// Points deducted by an action.
    Deduct,
    /// Points spent at the till (`POST /v1/actors/{id}/redeem`).
    Redeem,
    /// Points added or taken by hand (`POST /v1/actors/{id}/adjust`).
    Adjust,
    /// A redemption's points given back.
    Cancel,
    /// A lot's unspent points written off at its expiry (its `event_id` is the lot's award).
    Expire,
    /// Points taken back for an earlier event (`reverse_points`; `reverses` names it).
    Reverse,
}

impl EntryKind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Award => "award",
            EntryKind::Deduct => "deduct",
            EntryKind::Redeem => "redeem",
            EntryKind::Adjust => "adjust",
            EntryKind::Cancel => "cancel",
            EntryKind::Expire => "expire",
            EntryKind::Reverse => "reverse",
        }
    }

    /// The kind of a stored name; `None` for a name this version does not know.
    pub fn parse(name: &str) -> Option<EntryKind> {
        match name {
            "award" => Some(EntryKind::Award),
            "deduct" => Some(EntryKind::Deduct),
            "redeem" => Some(EntryKind::Redeem),
            "adjust" => Some(EntryKind::Adjust),
            "cancel" => Some(EntryKind::Cancel),
            "expire" => Some(EntryKind::Expire),
            "reverse" => Some(EntryKind::Reverse),
            _ => None,
        }
    }
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

impl HistoryPage {
    /// A page from up to `limit + 1` entries read newest first: the one past the limit only
    /// says that an older page exists.
    pub fn of(actor_id: &str, mut entries: Vec<Entry>, limit: usize) -> HistoryPage {
        let next_cursor = if entries.len() > limit {
            entries.truncate(limit);
            entries.last().map(|e| e.entry_id.to_string())
        } else {
            None
        };
        HistoryPage { actor_id: actor_id.to_owned(), entries, next_cursor }
    }
}

/// What a ledger backend must do. Every method is blocking; the engine calls them from worker
/// threads or `spawn_blocking`.
pub trait LedgerStore: Send + Sync {
    /// Applies events in one transaction; one outcome per event, in order. On error nothing of
    /// the group is stored.
    fn write_events(&self, events: &[EventWrite]) -> Result<Vec<Applied>, LedgerError>;
    /// Stores a batch job and its events durably.
    fn store_job(&self, job: &NewJob) -> Result<(), LedgerError>;
    /// Applies an operation on a member's points (redeem, adjust, cancel) in a transaction of
    /// its own.
    fn apply_operation(&self, request: &OperationRequest) -> Result<OperationOutcome, LedgerError>;
    /// The stored result of an event, with its fingerprint.
    fn stored_result(&self, event_id: &str) -> Result<Option<(Fingerprint, EventResult)>, LedgerError>;
    /// A member's stored points as of `at` (µs since the epoch), for reads: the sum of its
    /// entries dated at or before then, its book and its open lots (posting reads them in its
    /// transaction).
    fn points_state(&self, actor_id: &str, at: i64) -> Result<lots::PointsState, LedgerError>;
    /// A member's spendable points now (0 for a member never seen).
    fn balance(&self, actor_id: &str) -> Result<i64, LedgerError> {
        // Entries are never dated after they are written: their sum now is their whole sum.
        let (now, state) = (now_micros(), self.points_state(actor_id, i64::MAX)?);
        Ok(lots::view(state.entries_sum, state.book.debt, state.lots, now).balance)
    }
    /// An earlier event, as a reversal reads it (for simulations; posting reads it in its
    /// transaction).
    fn original(&self, event_id: &str) -> Result<Option<tx::Original>, LedgerError>;
    /// What a member's reversals of an event may take (for simulations).
    fn reversible(&self, actor_id: &str, event_id: &str) -> Result<tx::Reversible, LedgerError>;
    /// Points awarded to a member less reversals, by entries dated in `[from, to)` (tiers).
    fn tier_points(&self, actor_id: &str, from: i64, to: i64) -> Result<i64, LedgerError>;
    /// Writes off the points of lots expired by `now` for up to `max_members` members, each
    /// with an `expire` entry, in a transaction of its own; answers how many members it
    /// brought up to date.
    fn sweep(&self, now: i64, max_members: usize) -> Result<usize, LedgerError>;
    /// A scenario's use so far, as one limit counts it (for simulations; posting reads it inside
    /// its transaction).
    fn usage(&self, counter: &Counter<'_>) -> Result<Usage, LedgerError>;
    /// A member's stored events of a type (lower-cased) with an event time in `[from, to)`:
    /// each one's event time and payload, oldest first (for simulations; posting reads the
    /// history inside its transaction).
    fn member_history(
        &self,
        actor_id: &str,
        event_type: &str,
        from: i64,
        to: i64,
    ) -> Result<Vec<(i64, Option<String>)>, LedgerError>;
    /// How many of a member's stored events of a type have an event time in `[from, to)` (for
    /// simulations; posting counts inside its transaction).
    fn member_count(&self, actor_id: &str, event_type: &str, from: i64, to: i64) -> Result<u64, LedgerError>;
    /// Makes the history of these event types (lower-cased, sorted: what the live rules read)
    /// readable by member functions: their stored events are indexed first, and later events of
    /// them as they are written. Called before rules go live.
    fn track_history(&self, types: &[String]) -> Result<(), LedgerError>;
    /// The sum of a payload number over a member's stored events of a type in `[from, to)`, from
    /// counters, when the store keeps counters of it; `None` otherwise.
    fn member_sum(
        &self,
        _actor_id: &str,
        _key: &member::SumKey,
        _from: i64,
        _to: i64,
    ) -> Result<Option<f64>, LedgerError> {
        Ok(None)
    }
    /// Keeps counters of these sums (what the live rules' `sum()` reads; sorted) for posting to
    /// read, counted back over the stored events first. A store without sum counters ignores it.
    /// Called after [`LedgerStore::track_history`] for the same rules.
    fn track_sums(&self, _sums: &[member::SumKey]) -> Result<(), LedgerError> {
        Ok(())
    }
    /// Stores the webhook targets of rules about to go live (their JSON), so that a delivery
    /// names its target rather than carrying it. A store that keeps targets in each delivery
    /// ignores it.
    fn track_targets(&self, _targets: &[&str]) -> Result<(), LedgerError> {
        Ok(())
    }
    /// A member's entries, newest first, older than the cursor entry id.
    fn history(&self, actor_id: &str, limit: usize, before: Option<i64>) -> Result<HistoryPage, LedgerError>;
    /// A batch job.
    fn job(&self, job_id: &str) -> Result<Option<Job>, LedgerError>;
    /// Batch events accepted but not yet processed.
    fn pending_events(&self) -> Result<Vec<PendingEvent>, LedgerError>;
    /// Checks that the storage answers reads.
    fn ping(&self) -> Result<(), LedgerError>;
    /// The highest stream sequence applied on a subject (0 when none).
    fn stream_position(&self, subject: &str) -> Result<u64, LedgerError>;
    /// Checks that the storage takes a durable write (after writes failed).
    fn probe_write(&self) -> Result<(), LedgerError>;
}

enum Write {
    Event(EventWrite, oneshot::Sender<Result<Applied, LedgerError>>),
    Job(NewJob, oneshot::Sender<Result<(), LedgerError>>),
    Operation(OperationRequest, oneshot::Sender<Result<OperationOutcome, LedgerError>>),
    Stop,
}

/// The ledger as the engine uses it: a store plus its group-commit writer thread.
pub struct Ledger {
    store: Arc<dyn LedgerStore>,
    writes: mpsc::Sender<Write>,
    writer: Mutex<Option<JoinHandle<()>>>,
    healthy: Arc<AtomicBool>,
    /// Set when the ledger closes: the sweeper stops.
    closing: Arc<AtomicBool>,
}

/// Members a sweep brings up to date per transaction.
const SWEEP_BATCH: usize = 500;

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
            .map_err(|e| LedgerError::open("cannot start the writer thread", e))?;
        Ok(Ledger {
            store,
            writes,
            writer: Mutex::new(Some(writer)),
            healthy,
            closing: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Starts the sweeper: every `interval`, the points of lots expired by then are written off
    /// (an `expire` entry each) for members nobody wrote to since. A failed sweep is logged and
    /// tried again at the next interval.
    pub fn sweep_every(&self, interval: std::time::Duration) -> Result<(), LedgerError> {
        let (store, closing) = (Arc::clone(&self.store), Arc::clone(&self.closing));
        let tick = interval.min(std::time::Duration::from_millis(100));
        std::thread::Builder::new()
            .name("ledger-sweeper".into())
            .spawn(move || {
                let mut waited = std::time::Duration::ZERO;
                while !closing.load(Ordering::Acquire) {
                    std::thread::sleep(tick);
                    waited += tick;
                    if waited < interval {
                        continue;
                    }
                    waited = std::time::Duration::ZERO;
                    sweep(store.as_ref());
                }
            })
            .map(|_| ())
            .map_err(|e| LedgerError::open("cannot start the sweeper thread", e))
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

    /// The highest stream sequence applied on a subject (0 when none), read off the runtime's
    /// threads.
    pub async fn stream_position(&self, subject: &str) -> Result<u64, LedgerError> {
        let (store, subject) = (Arc::clone(&self.store), subject.to_owned());
        tokio::task::spawn_blocking(move || store.stream_position(&subject))
            .await
            .map_err(|_| LedgerError::unavailable("the stream position read stopped", true, None))?
    }

    /// Stores a batch job durably.
    pub async fn store_job(&self, job: NewJob) -> Result<(), LedgerError> {
        let (reply, answer) = oneshot::channel();
        self.writes.send(Write::Job(job, reply)).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    /// Applies an operation on a member's points, through the writer (so it is ordered with the
    /// events of the same group).
    pub async fn apply_operation(&self, request: OperationRequest) -> Result<OperationOutcome, LedgerError> {
        let (reply, answer) = oneshot::channel();
        self.writes.send(Write::Operation(request, reply)).map_err(|_| stopped())?;
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
        self.closing.store(true, Ordering::Release);
        let _ = self.writes.send(Write::Stop);
        if let Some(handle) = self.writer.lock().ok().and_then(|mut w| w.take()) {
            let _ = handle.join();
        }
    }
}

fn stopped() -> LedgerError {
    LedgerError::unavailable("the ledger writer has stopped", false, None)
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
                Write::Operation(request, reply) => {
                    let outcome = store.apply_operation(&request);
                    note_health(healthy, &outcome);
                    let _ = reply.send(outcome);
                }
                Write::Stop => stop = true,
            }
        }
        if events.is_empty() {
            continue;
        }
        match store.write_events(&events) {
            Ok(applied) => {
                healthy.store(true, Ordering::Release);
                for (reply, applied) in replies.into_iter().zip(applied) {
                    let _ = reply.send(Ok(applied));
                }
            }
            // A failure that a retry cannot mend may belong to one event alone: post each on its
            // own, so one bad event does not take the events committed with it down too.
            Err(e) if !e.retryable() && events.len() > 1 => {
                tracing::warn!(error = %e.detail(), events = events.len(), "group failed; posting its events one by one");
                let mut any_ok = false;
                for (event, reply) in events.iter().zip(replies) {
                    let outcome = store.write_events(std::slice::from_ref(event)).and_then(|mut applied| {
                        applied.pop().ok_or_else(|| LedgerError::unavailable("the store answered nothing", false, None))
                    });
                    if let Err(e) = &outcome {
                        tracing::error!(event_id = %event.event_id, error = %e.detail(), "ledger write failed; nothing of this event was stored");
                    }
                    any_ok |= outcome.is_ok();
                    let _ = reply.send(outcome);
                }
                healthy.store(any_ok, Ordering::Release);
            }
            Err(e) => {
                tracing::error!(error = %e.detail(), "ledger write failed; nothing of this group was stored");
                healthy.store(false, Ordering::Release);
                for reply in replies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }
}

/// Writes off what expired by now, a batch of members at a time, until none is left.
fn sweep(store: &dyn LedgerStore) {
    loop {
        match store.sweep(now_micros(), SWEEP_BATCH) {
            Ok(n) if n == SWEEP_BATCH => continue,
            Ok(n) => {
                if n > 0 {
                    tracing::debug!(members = n, "expired points written off");
                }
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e.detail(), "the expiry sweep failed; trying again at the next interval");
                return;
            }
        }
    }
}

fn note_health<T>(healthy: &AtomicBool, outcome: &Result<T, LedgerError>) {
    healthy.store(outcome.is_ok(), Ordering::Release);
}

/// A failure that is not the database's own (a poisoned lock, a stored value that does not
/// decode): retrying cannot help.
pub(crate) fn broken(message: impl std::fmt::Display) -> LedgerError {
    LedgerError::unavailable(message.to_string(), false, None)
}

/// Now, in µs since the epoch: how the stores write times.
pub fn now_micros() -> i64 {
    jiff::Timestamp::now().as_microsecond()
}

/// A stored time (µs since the epoch) as RFC 3339, as the API shows it.
pub(crate) fn rfc3339(micros: i64) -> String {
    jiff::Timestamp::from_microsecond(micros).map_or_else(|_| micros.to_string(), |t| t.to_string())
}
