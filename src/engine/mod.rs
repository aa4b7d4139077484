//! The engine: admission (a bounded queue and a bounded number of events evaluating), the live
//! rules and their reload, and the ledger that results are applied to.
//!
//! Admission is exact: at most `queue_depth` events wait and `event_workers` are evaluated at
//! once (see [`admission`]). Each admitted event runs as a task of its own, so a synchronous
//! caller can stop waiting after `event_timeout_ms` while the event still completes (and is
//! stored, so a retry with its id gets the result). The events of one actor in one batch share a
//! task instead, which applies them in the batch's order ([`chains`]).

pub mod admission;
pub mod hits;
pub mod jobs;
pub mod live;
pub mod metrics;
pub mod simulate;
pub mod versions;
pub mod watch;

pub use crate::result::{ActionResult, EventResult};
pub use live::{LiveRules, ReloadReport};
pub use versions::{PublishError, RulesSource};

use std::cell::RefCell;
use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use crate::actions::{ActionRegistry, LIMIT_REACHED, Outcome, Plan, PointsChange};
use crate::event::Event;
use crate::expr::Reason;
use crate::facts::Facts;
use crate::facts::MemberState;
use crate::graph::limits::{Room, Usage};
use crate::graph::stacking::stack;
use crate::graph::{Evaluation, LoadError, Rules, ScenarioLimits};
use crate::graph::{Stacked, StackingKey, Trace};
use crate::ledger::member::Deferred;
use crate::ledger::versions::{NewVersion, RulesVersions, VersionSource};
use crate::ledger::{
    ActionWrite, Applied, EventWrite, Ledger, LedgerError, NewJob, Planned, ResultPlan, StreamPosition, WritePlan,
    broken, fingerprint, posting,
};
use crate::result::{Job, StoredJson};
use crate::rules::EngineSettings;
pub use admission::Ticket;
use admission::{Admission, Running};
use jobs::MemoryJobs;
use metrics::Metrics;

/// How often the requeue task looks for batch events to put back on the queue.
const REQUEUE_INTERVAL: Duration = Duration::from_millis(100);

/// Queue utilisation above which `/readyz` answers 503.
pub const READY_UTILIZATION: f64 = 0.8;

/// Why an event was not evaluated for its caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// The queue is full.
    #[error("event queue full (capacity {capacity})")]
    QueueFull {
        /// `queue_depth`.
        capacity: usize,
    },
    /// The result did not come in time; the event still completes.
    #[error("event {event_id} did not finish within {timeout_ms} ms; it will still complete")]
    Timeout {
        /// The event.
        event_id: String,
        /// `event_timeout_ms`.
        timeout_ms: u64,
    },
    /// The service is shutting down.
    #[error("the service is shutting down")]
    ShuttingDown,
    /// The id was used before by an event with other content.
    #[error("event id `{event_id}` was already used by an event with other content")]
    Conflict {
        /// The event.
        event_id: String,
    },
    /// The ledger failed; nothing of the event was stored.
    #[error("{}; nothing was stored, retry later", .0.detail())]
    Ledger(LedgerError),
    /// The event's task ended without a result (a bug: it panicked).
    #[error("the event could not be processed: {0}")]
    Internal(String),
}

/// Why the engine could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The rules file could not be read or has errors.
    #[error(transparent)]
    Rules(#[from] LoadError),
    /// The ledger failed: indexing the history the rules read, or reading the rules versions.
    #[error("the ledger failed at start: {0}")]
    Ledger(#[from] LedgerError),
}

/// The reload failed; the old rules stay live.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the rules file has problems; the previous rules stay live")]
pub struct ReloadError {
    /// Every problem, as `FILE:LINE:COL: error: message`.
    pub problems: Vec<String>,
}

/// Where an admitted event came from, beyond its content: the batch job it belongs to and its
/// place in the event stream.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    /// The batch job and the event's index in it.
    pub job: Option<(String, usize)>,
    /// Its place in the event stream.
    pub position: Option<StreamPosition>,
}

/// One admitted event.
struct Task {
    event: Arc<Event>,
    trace: bool,
    origin: Origin,
    enqueued: Instant,
}

thread_local! {
    /// Each runtime thread's evaluation buffer, reused from event to event so that evaluating
    /// allocates nothing (tests/alloc_free.rs); what a ledger write needs is copied out of it.
    static EVALUATION: RefCell<Evaluation> = RefCell::new(Evaluation::default());
}

/// The running engine.
pub struct Engine {
    live: ArcSwap<LiveRules>,
    registry: ActionRegistry,
    config_path: PathBuf,
    settings: EngineSettings,
    timeout_ms: AtomicU64,
    admission: Arc<Admission>,
    shutting_down: AtomicBool,
    reload_lock: Mutex<()>,
    ledger: Option<Ledger>,
    /// Where rules versions are kept.
    versions: Arc<dyn RulesVersions>,
    /// Where the live rules come from.
    source: RulesSource,
    /// The newest version this node could not load (0: none): `/readyz` says `rules_behind`.
    behind: AtomicU64,
    memory_jobs: MemoryJobs,
    /// Batch events waiting to be (re-)admitted by the requeue task.
    retry: Mutex<Vec<Task>>,
    /// Every metric.
    pub metrics: Metrics,
}

impl Engine {
    /// Loads the rules (from the file, or from the store's newest version with
    /// [`RulesSource::Store`]) and re-admits batch events that the ledger holds as accepted but
    /// not yet processed (from before a crash or a stop). Call it inside the tokio runtime.
    pub fn start(
        config_path: PathBuf,
        registry: ActionRegistry,
        ledger: Option<Ledger>,
        versions: Arc<dyn RulesVersions>,
        source: RulesSource,
    ) -> Result<Arc<Engine>, StartError> {
        let (rules, version) = versions::initial_rules(&config_path, &registry, versions.as_ref(), source)?;
        log_warnings(&rules, &config_path.display().to_string());
        if let Some(ledger) = &ledger {
            track_rules(ledger.store(), &rules)?;
        }
        let metrics = Metrics::new();
        metrics.reload("success");
        let settings = rules.file.engine;
        let live = LiveRules::new(rules, config_path.clone(), &metrics, version);
        let engine = Arc::new(Engine {
            live: ArcSwap::from_pointee(live),
            registry,
            config_path,
            settings,
            timeout_ms: AtomicU64::new(u64::from(settings.event_timeout_ms)),
            admission: Arc::new(Admission::new(settings.event_workers as usize, settings.queue_depth as usize)),
            shutting_down: AtomicBool::new(false),
            reload_lock: Mutex::new(()),
            ledger,
            versions,
            source,
            behind: AtomicU64::new(0),
            memory_jobs: MemoryJobs::default(),
            retry: Mutex::new(Vec::new()),
            metrics,
        });
        engine.start_requeuer();
        if source == RulesSource::Store {
            versions::follow_store(&engine);
        }
        Ok(engine)
    }

    /// Starts the task that (re-)admits batch events: those the ledger holds as accepted but not
    /// processed (from before a crash or a stop), and those whose ledger write failed while
    /// running, once the ledger is healthy again. Until then they stay stored as queued.
    fn start_requeuer(self: &Arc<Self>) {
        let Some(ledger) = &self.ledger else { return };
        match ledger.store().pending_events() {
            Ok(pending) if !pending.is_empty() => {
                tracing::info!(events = pending.len(), "re-queueing batch events accepted before the last stop");
                let tasks = pending.into_iter().map(|p| Task {
                    event: Arc::new(p.event),
                    trace: false,
                    origin: Origin { job: Some((p.job_id, p.index)), position: None },
                    enqueued: Instant::now(),
                });
                if let Ok(mut retry) = self.retry.lock() {
                    retry.extend(tasks);
                }
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "cannot read the batch events left from before; they stay stored"),
        }
        tokio::spawn(Arc::clone(self).requeue_loop());
    }

    /// Re-admits the waiting batch events, every `REQUEUE_INTERVAL`, as chains that keep each
    /// actor's events in order (as [`Engine::submit_batch`] does). A round waits for the chains it
    /// started, so a later round never overtakes an earlier one's events of the same actor.
    async fn requeue_loop(self: Arc<Self>) {
        while !self.is_shutting_down() {
            let waiting = self.retry.lock().map(|mut r| std::mem::take(&mut *r)).unwrap_or_default();
            if !waiting.is_empty() {
                let engine = Arc::clone(&self);
                let healthy =
                    tokio::task::spawn_blocking(move || engine.ledger.as_ref().is_some_and(Ledger::is_healthy))
                        .await
                        .unwrap_or(false);
                let mut admitted = Vec::new();
                let mut left = Vec::new();
                for task in waiting {
                    // Once one is refused (or the ledger is down), the rest keep their order for
                    // the next round; a place is only taken for a task that will use it.
                    let ticket = if healthy && left.is_empty() { self.admission.try_enter() } else { None };
                    match ticket {
                        Some(ticket) => admitted.push((ticket, task)),
                        None => left.push(task),
                    }
                }
                self.admitted(admitted.len());
                let running: Vec<_> = self.spawn_chains(admitted);
                for chain in running {
                    let _ = chain.await;
                }
                // What this round's chains put back came before the events left waiting.
                if let Ok(mut retry) = self.retry.lock() {
                    retry.append(&mut left);
                }
            }
            tokio::time::sleep(REQUEUE_INTERVAL).await;
        }
    }

    /// The rules now live.
    pub fn live(&self) -> Arc<LiveRules> {
        self.live.load_full()
    }

    /// How old an event may be, in days (0 = any age), as the live rules' programme says.
    pub fn max_event_age_days(&self) -> u32 {
        self.live.load().rules.file.programme.max_event_age_days
    }

    /// The engine settings the engine started with.
    pub fn settings(&self) -> EngineSettings {
        self.settings
    }

    /// The registry of action types, for compiling rules that are not live (simulations).
    pub fn registry(&self) -> &ActionRegistry {
        &self.registry
    }

    /// The ledger, unless running with `--ledger none`.
    pub fn ledger(&self) -> Option<&Ledger> {
        self.ledger.as_ref()
    }

    /// Waiting events over capacity, from 0 to 1.
    pub fn queue_utilization(&self) -> f64 {
        self.admission.utilization()
    }

    /// True once shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }

    fn admitted(&self, count: usize) {
        self.metrics.events_enqueued.inc_by(count as u64);
    }

    /// Counts `count` events refused for want of a queue place, and says why.
    pub fn queue_full(&self, count: usize) -> EngineError {
        self.metrics.events_dropped.inc_by(count as u64);
        EngineError::QueueFull { capacity: self.admission.capacity() }
    }

    /// Runs an admitted event as a task of its own, so it completes even when its caller stops
    /// waiting (a timeout).
    fn spawn(
        self: &Arc<Self>,
        ticket: Ticket,
        task: Task,
    ) -> tokio::task::JoinHandle<Result<EventResult, EngineError>> {
        let engine = Arc::clone(self);
        tokio::spawn(async move {
            let mut running = ticket.start().await;
            let result = engine.run(&task, &mut running).await;
            if let Some(again) = engine.finish(task, result.as_ref()) {
                engine.put_back(std::iter::once(again));
            }
            drop(running);
            result
        })
    }

    /// Runs admitted batch events as chains ([`chains`]): each actor's events one after another
    /// in the given order, each awaiting its ledger commit before the next is evaluated; chains
    /// (different actors, and events without one) run in parallel. Every event keeps its queue
    /// place until its turn. When an event's ledger write fails, it and the rest of its chain are
    /// put back, in order, for the requeue task (their places are freed), so none overtakes it.
    fn spawn_chains(self: &Arc<Self>, admitted: Vec<(Ticket, Task)>) -> Vec<tokio::task::JoinHandle<()>> {
        let chains = chains(admitted, |(_, task)| task.event.actor_id.as_deref());
        chains
            .into_iter()
            .map(|chain| {
                let engine = Arc::clone(self);
                tokio::spawn(async move {
                    let mut chain = chain.into_iter();
                    while let Some((ticket, task)) = chain.next() {
                        let mut running = ticket.start().await;
                        let result = engine.run(&task, &mut running).await;
                        let again = engine.finish(task, result.as_ref());
                        drop(running);
                        if let Some(again) = again {
                            let rest: Vec<Task> = chain.by_ref().map(|(_ticket, task)| task).collect();
                            if !rest.is_empty() {
                                let (event_id, later) = (&again.event.id, rest.len());
                                tracing::info!(%event_id, later, "later events of the same actor wait for it");
                            }
                            engine.put_back(std::iter::once(again).chain(rest));
                        }
                    }
                })
            })
            .collect()
    }

    /// Puts batch events back, in order, for the requeue task (still stored as queued).
    fn put_back(&self, tasks: impl IntoIterator<Item = Task>) {
        if let Ok(mut retry) = self.retry.lock() {
            retry.extend(tasks.into_iter().map(|task| Task { enqueued: Instant::now(), ..task }));
        }
    }

    /// A queue place for one event when one is free now: how long to wait for one, and what to
    /// tell the sender meanwhile, is each intake's own policy (HTTP answers 429, the stream
    /// consumer asks for the message again later). `None` while shutting down.
    pub fn try_admit(&self) -> Option<Ticket> {
        if self.is_shutting_down() {
            return None;
        }
        let ticket = self.admission.try_enter()?;
        self.admitted(1);
        Some(ticket)
    }

    /// Up to `count` queue places, as many as are free now (none while shutting down).
    pub fn try_admit_up_to(&self, count: usize) -> Vec<Ticket> {
        if self.is_shutting_down() {
            return Vec::new();
        }
        let tickets: Vec<Ticket> = std::iter::from_fn(|| self.admission.try_enter()).take(count).collect();
        self.admitted(tickets.len());
        tickets
    }

    /// How long a synchronous caller waits for an event's result (`event_timeout_ms`, as the
    /// live rules set it).
    pub fn event_timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms.load(Ordering::Relaxed))
    }

    /// Applies an admitted event: evaluated, its effects committed (with its stream position,
    /// when it came from the stream), as a task of its own that completes whether or not anyone
    /// waits for it (no timeout here: that is the HTTP intake's).
    pub fn apply(
        self: &Arc<Self>,
        ticket: Ticket,
        event: Arc<Event>,
        trace: bool,
        origin: Origin,
    ) -> tokio::task::JoinHandle<Result<EventResult, EngineError>> {
        self.spawn(ticket, Task { event, trace, origin, enqueued: Instant::now() })
    }

    /// Applies an admitted event on the caller's task, when that is safe and cheap: with no ledger
    /// (nothing is waited for: the event is evaluated and finished within this call, so a caller
    /// that stops waiting cannot cut it short), rules that never hold their thread, and an
    /// evaluation slot free now. It spares the event a task of its own and its caller a timer
    /// (no event timeout can pass in the few µs an evaluation takes). Otherwise the ticket
    /// back, for [`Engine::apply`].
    pub fn apply_now(&self, ticket: Ticket, event: &Arc<Event>, trace: bool) -> Result<EventResult, Ticket> {
        if self.ledger.is_some() {
            return Err(ticket);
        }
        let live = self.live.load_full();
        if live.rules.may_block() {
            return Err(ticket);
        }
        let running = ticket.try_start()?;
        let task = Task { event: Arc::clone(event), trace, origin: Origin::default(), enqueued: Instant::now() };
        let (result, trace) = self.evaluate_counted(&task, &live);
        let result = traced(&live.rules, result, trace);
        // Without a ledger or a job nothing is given back to try again.
        let _ = self.finish(task, Ok(&result));
        drop(running);
        Ok(result)
    }

    /// Applies admitted events in their actors' order ([`chains`]): each actor's one after
    /// another, each awaiting its commit before the next is evaluated; different actors in
    /// parallel. Nothing waits for them here.
    pub fn apply_in_actor_order(self: &Arc<Self>, admitted: Vec<(Ticket, Arc<Event>, Origin)>) {
        let tasks = admitted
            .into_iter()
            .map(|(ticket, event, origin)| (ticket, Task { event, trace: false, origin, enqueued: Instant::now() }));
        self.spawn_chains(tasks.collect());
    }

    /// Stores a new batch job whose first `queued` events are queued: durably, or in memory
    /// with `--ledger none`. Answers its id.
    pub async fn store_job(&self, events: &[Arc<Event>], queued: usize) -> Result<String, EngineError> {
        let job_id = crate::event::new_id();
        match &self.ledger {
            Some(ledger) => {
                let job = NewJob { job_id: job_id.clone(), events: events.to_vec(), queued };
                ledger.store_job(job).await.map_err(EngineError::Ledger)?;
            }
            None => self.memory_jobs.insert(Job::new(job_id.clone(), events.iter().map(|e| e.id.clone()), queued)),
        }
        Ok(job_id)
    }

    /// A batch job, from the ledger or (with `--ledger none`) from memory.
    pub fn job(&self, job_id: &str) -> Result<Option<Job>, LedgerError> {
        match &self.ledger {
            Some(ledger) => ledger.store().job(job_id),
            None => Ok(self.memory_jobs.get(job_id)),
        }
    }

    /// Re-reads the rules file; swaps it in (as a new version) only when it is valid.
    pub fn reload(&self) -> Result<ReloadReport, ReloadError> {
        self.reload_by(None)
    }

    /// [`Engine::reload`], asked for by `author` (an API key's name), recorded with the version.
    pub fn reload_by(&self, author: Option<&str>) -> Result<ReloadReport, ReloadError> {
        self.reload_as(VersionSource::File, author).map(|(report, _)| report)
    }

    /// [`Engine::reload`], recording the version as coming from `source`.
    fn reload_as(&self, source: VersionSource, author: Option<&str>) -> Result<(ReloadReport, u64), ReloadError> {
        let _serialised = self.reload_lock.lock();
        let path = self.config_path.display().to_string();
        let loaded = std::fs::read_to_string(&self.config_path)
            .map_err(|e| LoadError::Io { path: path.clone(), source: e })
            .and_then(|text| Ok((Rules::load_str(&text, &self.registry)?, text)));
        let (rules, text) = match loaded {
            Ok(loaded) => loaded,
            Err(e) => {
                self.metrics.reload("invalid");
                let problems = match e {
                    LoadError::Invalid(diagnostics) => diagnostics.iter().map(|d| d.render(&path)).collect(),
                    io => vec![io.to_string()],
                };
                tracing::warn!(file = %path, problems = ?problems, "rules reload refused; the previous rules stay live");
                return Err(ReloadError { problems });
            }
        };
        let current = self.live();
        if current.rules.hash == rules.hash {
            self.metrics.reload("unchanged");
            let report = self.report(&rules, &current, false);
            return Ok((report, current.rules_version));
        }
        let version = self.record(&rules, &text, source, author)?;
        let live = self.go_live(rules, version)?;
        Ok((self.report(&live.rules, &live, true), version))
    }

    /// Stores a version of the rules about to go live.
    fn record(
        &self,
        rules: &Rules,
        text: &str,
        source: VersionSource,
        author: Option<&str>,
    ) -> Result<u64, ReloadError> {
        let new =
            NewVersion { hash: &rules.hash, yaml: text, author, source, at: jiff::Timestamp::now().as_microsecond() };
        self.versions.add_version(&new).map(|v| v.rules_version).map_err(|e| {
            self.metrics.reload("invalid");
            ReloadError { problems: vec![format!("cannot store the rules version: {}", e.detail())] }
        })
    }

    /// Makes rules live as `version`: the history they read is indexed first; a failure there
    /// keeps the previous rules.
    fn go_live(&self, rules: Rules, version: u64) -> Result<Arc<LiveRules>, ReloadError> {
        let path = self.config_path.display().to_string();
        if let Some(ledger) = &self.ledger {
            if let Err(e) = track_rules(ledger.store(), &rules) {
                self.metrics.reload("invalid");
                let problem = format!("cannot index member history for these rules: {}", e.detail());
                tracing::warn!(file = %path, problem = %problem, "rules refused; the previous rules stay live");
                return Err(ReloadError { problems: vec![problem] });
            }
        }
        self.timeout_ms.store(u64::from(rules.file.engine.event_timeout_ms), Ordering::Relaxed);
        let live = Arc::new(LiveRules::new(rules, self.config_path.clone(), &self.metrics, version));
        self.live.store(Arc::clone(&live));
        // A version this node could not load is behind it now.
        let _ =
            self.behind.fetch_update(Ordering::AcqRel, Ordering::Acquire, |behind| (behind <= version).then_some(0));
        self.metrics.reload("success");
        tracing::info!(rules_version = version, hash = %live.rules.hash, scenarios = live.rules.scenario_count(), "rules live");
        log_warnings(&live.rules, &path);
        Ok(live)
    }

    fn report(&self, rules: &Rules, live: &LiveRules, changed: bool) -> ReloadReport {
        let path = self.config_path.display().to_string();
        ReloadReport {
            reloaded: true,
            scenarios_count: rules.file.scenarios.len(),
            hash: rules.hash.clone(),
            loaded_at: live.loaded_at.to_string(),
            changed,
            warnings: rules.warnings.iter().map(|d| d.render(&path)).collect(),
            restart_required: live::settings_needing_restart(&self.settings, &rules.file.engine),
        }
    }

    /// Refuses new events from now on.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Release);
    }

    /// Refuses new events, waits until every admitted event is evaluated and applied, then
    /// commits and closes the ledger. Call it once no request is in flight any more.
    pub async fn drain(self: &Arc<Self>) {
        self.begin_shutdown();
        self.admission.idle().await;
        if self.ledger.is_some() {
            let engine = Arc::clone(self);
            let _ = tokio::task::spawn_blocking(move || engine.ledger.as_ref().map(Ledger::close)).await;
        }
    }

    /// Records what happened to a finished event: metrics, and batch bookkeeping. Gives back a
    /// batch event whose ledger write failed: it is still stored as queued, to be tried again
    /// once the ledger takes writes.
    fn finish(&self, task: Task, result: Result<&EventResult, &EngineError>) -> Option<Task> {
        let elapsed = task.enqueued.elapsed();
        self.metrics.duration_seconds.observe(elapsed.as_secs_f64());
        self.metrics.duration_ms.observe(elapsed.as_secs_f64() * 1000.0);
        self.metrics.events_processed.inc();
        if let Err(e) = result {
            tracing::warn!(event_id = %task.event.id, error = %e, "event not applied");
        }
        match (&task.origin.job, result) {
            (Some((job_id, index)), Ok(result)) if self.ledger.is_none() => {
                self.memory_jobs.complete(job_id, *index, result.clone());
            }
            // The stream delivers its events again; the others wait for the requeue task.
            (Some(_), Err(EngineError::Ledger(_))) if task.origin.position.is_none() => return Some(task),
            _ => {}
        }
        None
    }

    /// Evaluates an event and applies it; its evaluation slot is given back before the
    /// ledger's commit ([`Running::evaluated`]).
    async fn run(&self, task: &Task, running: &mut Running) -> Result<EventResult, EngineError> {
        let event = &task.event;
        let live = self.live.load_full();
        // Rules that read the member's state are evaluated inside the ledger's transaction, on
        // the state it keeps until the commit; the others here, before the write.
        let (evaluated, trace) = match &self.ledger {
            Some(ledger) if live.rules.reads_member(&event.event_type) => {
                let decided = Arc::new(Mutex::new(None));
                let write = self.deferred_write(task, &live, Arc::clone(&decided));
                (Evaluated::Deferred(ledger, write, decided), None)
            }
            _ => self.evaluate_here(task, &live),
        };
        let (result, trace) = match evaluated {
            Evaluated::Done(result) => (result, trace),
            Evaluated::ToApply(ledger, write, as_planned, tally) => {
                running.evaluated();
                let result = self.applied(ledger, write, event, as_planned).await?;
                self.count_tally(&live, &tally, &result);
                (result, trace)
            }
            Evaluated::Deferred(ledger, write, decided) => {
                // Evaluated by the writer, inside its transaction: nothing here to hold a slot for.
                running.evaluated();
                let result = self.applied(ledger, write, event, None).await?;
                let (tally, trace) = decided.lock().ok().and_then(|mut d| d.take()).unwrap_or_default();
                self.count_tally(&live, &tally, &result);
                (result, trace)
            }
        };
        if result.replayed {
            return Ok(result);
        }
        Ok(traced(&live.rules, result, trace))
    }

    /// Evaluates an event on this thread, into its reused buffer; what outlives the await is
    /// copied out first. A retry of a stored event is recognised by the writer, inside its
    /// transaction.
    fn evaluate_here<'a>(&'a self, task: &Task, live: &Arc<LiveRules>) -> (Evaluated<'a>, Option<Trace>) {
        match &self.ledger {
            None => {
                let (result, trace) = self.evaluate_counted(task, live);
                (Evaluated::Done(result), trace)
            }
            Some(ledger) => with_evaluation(task, live, |evaluation| {
                let (write, as_planned) = self.ledger_write(task, live, evaluation);
                Evaluated::ToApply(ledger, write, as_planned, Tally::of(evaluation))
            }),
        }
    }

    /// Evaluates an event with no ledger: its result is the planned one, counted at once.
    fn evaluate_counted(&self, task: &Task, live: &Arc<LiveRules>) -> (EventResult, Option<Trace>) {
        with_evaluation(task, live, |evaluation| {
            let result = planned_result(&live.rules, &task.event, evaluation, task.enqueued);
            let actions = evaluation.planned.iter().map(|p| (p.scenario, p.action));
            self.count(live, &evaluation.matched, &evaluation.unknowns, actions, &result);
            result
        })
    }

    /// Applies a write; a replay answers the stored result (marked), a conflict is an error.
    /// `as_planned` is the result built before the write, if it was.
    async fn applied(
        &self,
        ledger: &Ledger,
        write: EventWrite,
        event: &Event,
        as_planned: Option<EventResult>,
    ) -> Result<EventResult, EngineError> {
        match ledger.apply(write).await.map_err(EngineError::Ledger)? {
            Applied::Fresh(result) => Ok(result),
            Applied::AsPlanned => {
                as_planned.ok_or_else(|| EngineError::Ledger(broken("a result built before its write went missing")))
            }
            Applied::Replayed(mut stored) => {
                stored.replayed = true;
                Ok(stored)
            }
            Applied::Conflict => Err(EngineError::Conflict { event_id: event.id.clone() }),
        }
    }

    /// Counts an event when first applied; a replay counts nothing.
    fn count_tally(&self, live: &LiveRules, tally: &Tally, result: &EventResult) {
        if !result.replayed {
            self.count(live, &tally.matched, &tally.unknowns, tally.actions.iter().copied(), result);
        }
    }

    /// What the ledger must write for an evaluated event, and its result when it is built here:
    /// when no action's outcome can come out otherwise than planned ([`posting::certain`]), the
    /// result and its JSON are built on this thread, off the ledger's writer; otherwise the
    /// writer builds it once it has decided each outcome (a deduction can be refused).
    fn ledger_write(
        &self,
        task: &Task,
        live: &Arc<LiveRules>,
        evaluation: &Evaluation,
    ) -> (EventWrite, Option<EventResult>) {
        let event = &task.event;
        let (actions, stacking, limits) = writes_of(live, event, evaluation);
        let as_planned = posting::certain(&actions, &stacking, &limits).and_then(|stacked| {
            let mut result = EventResult::build(&live.rules, event, evaluation, &stacked, task.enqueued.elapsed());
            result.stored_json = StoredJson::new(serde_json::to_string(&result).ok()?);
            Some(result)
        });
        let result = match &as_planned {
            Some(built) => ResultPlan::AsPlanned(built.stored_json.clone()),
            None => result_builder(live, event, evaluation.clone(), task.enqueued),
        };
        let planned = Planned { actions, stacking, limits, result };
        let write = EventWrite {
            event_id: event.id.clone(),
            fresh_id: event.generated_id,
            fingerprint: fingerprint(event),
            plan: WritePlan::Ready(planned),
            job: task.origin.job.clone(),
            event: Arc::clone(event),
            position: task.origin.position.clone(),
        };
        (write, as_planned)
    }

    /// What the ledger must write for an event whose rules read the member's state: it is
    /// evaluated in the transaction (again, when a store posts the group again); what the
    /// evaluation counts and traces is left in `decided` for the answer.
    fn deferred_write(&self, task: &Task, live: &Arc<LiveRules>, decided: Arc<Mutex<Option<Decided>>>) -> EventWrite {
        let event = Arc::clone(&task.event);
        let (plan_live, plan_event, traced, started) =
            (Arc::clone(live), Arc::clone(&event), task.trace, task.enqueued);
        let replan = move |member: Option<&dyn MemberState>| -> Planned {
            let (live, event) = (&plan_live, &plan_event);
            let mut evaluation = live.rules.new_evaluation();
            let facts = Facts { member, ..Facts::of(event) };
            let trace = live.rules.evaluate_maybe_traced(&facts, &mut evaluation, traced);
            if let Ok(mut slot) = decided.lock() {
                *slot = Some((Tally::of(&evaluation), trace));
            }
            planned_writes(live, event, evaluation, started)
        };
        let budgets = live.rules.budgets_for(&event.event_type);
        EventWrite {
            event_id: event.id.clone(),
            fresh_id: event.generated_id,
            fingerprint: fingerprint(&event),
            plan: WritePlan::Deferred(Deferred {
                replan: Box::new(replan),
                budgets,
                programme: Arc::clone(live.rules.programme()),
            }),
            job: task.origin.job.clone(),
            event,
            position: task.origin.position.clone(),
        }
    }

    /// Counts an applied evaluation: matched scenarios, unknown conditions, and each planned
    /// action's outcome (`results`, in the same order once the actions of scenarios that stacking
    /// excluded are left out).
    fn count(
        &self,
        live: &LiveRules,
        matched: &[u32],
        unknowns: &[u32; Reason::LABELS.len()],
        actions: impl Iterator<Item = (u32, u32)>,
        results: &EventResult,
    ) {
        // Nearly always nothing is excluded, and the lists line up as they are.
        let excluding = results.scenarios_matched.len() < matched.len();
        let kept = |scenario: u32| {
            !excluding || results.scenarios_matched.iter().any(|id| id == live.rules.scenario_id(scenario))
        };
        for &scenario in matched.iter().filter(|&&s| kept(s)) {
            live.count_match(scenario);
        }
        self.metrics.count_unknowns(unknowns);
        for ((scenario, action), outcome) in actions.filter(|&(s, _)| kept(s)).zip(&results.actions_executed) {
            live.count_action(action, outcome.success);
            if outcome.code.as_deref() == Some(LIMIT_REACHED) {
                live.count_limit_reached(scenario);
            }
        }
    }
}

/// Readies the ledger for rules about to go live (at start and at each reload): the member
/// history they read is indexed, the sums they take counted, their webhook targets stored.
fn track_rules(store: &dyn crate::ledger::LedgerStore, rules: &Rules) -> Result<(), crate::ledger::LedgerError> {
    store.track_history(rules.history_types())?;
    store.track_sums(rules.history_sums())?;
    let notifications = rules.notifications();
    let targets: Vec<&str> = notifications.iter().map(|n| n.target_json.as_str()).collect();
    store.track_targets(&targets)
}

/// What the ledger must write for an evaluation inside its transaction: each planned action's
/// write, its stacking key, the limits of its scenarios, and how to build the result once
/// outcomes are decided (on the writer's thread already: nothing to gain by building it first).
fn planned_writes(live: &Arc<LiveRules>, event: &Arc<Event>, evaluation: Evaluation, started: Instant) -> Planned {
    let (actions, stacking, limits) = writes_of(live, event, &evaluation);
    Planned { actions, stacking, limits, result: result_builder(live, event, evaluation, started) }
}

/// Each planned action's write, its stacking key, and the limits of its scenarios.
fn writes_of(
    live: &LiveRules,
    event: &Event,
    evaluation: &Evaluation,
) -> (Vec<ActionWrite>, Vec<StackingKey>, Vec<Arc<ScenarioLimits>>) {
    let actions = ActionWrite::for_plans(&live.rules, &evaluation.planned, event);
    (actions, live.rules.stacking_keys(evaluation), live.rules.limits_of(evaluation))
}

/// Builds an event's result once the ledger has decided each action's outcome.
fn result_builder(live: &Arc<LiveRules>, event: &Arc<Event>, evaluation: Evaluation, started: Instant) -> ResultPlan {
    let (live, event) = (Arc::clone(live), Arc::clone(event));
    ResultPlan::Build(Box::new(move |stacked: &Stacked| {
        EventResult::build(&live.rules, &event, &evaluation, stacked, started.elapsed())
    }))
}

/// Splits events into chains that keep order where it matters: the events of one actor, in
/// their order, form one chain; an event without an actor is a chain of its own. Chains come in
/// the order of their first event.
fn chains<T>(items: Vec<T>, actor: impl Fn(&T) -> Option<&str>) -> Vec<Vec<T>> {
    let mut slots = Vec::with_capacity(items.len());
    let mut count = 0;
    {
        let mut by_actor: rustc_hash::FxHashMap<&str, usize> = rustc_hash::FxHashMap::default();
        for item in &items {
            let slot = match actor(item) {
                Some(id) => *by_actor.entry(id).or_insert(count),
                None => count,
            };
            if slot == count {
                count += 1;
            }
            slots.push(slot);
        }
    }
    let mut chains: Vec<Vec<T>> = (0..count).map(|_| Vec::new()).collect();
    for (slot, item) in slots.into_iter().zip(items) {
        if let Some(chain) = chains.get_mut(slot) {
            chain.push(item);
        }
    }
    chains
}

/// Logs each warning of rules that just went live, once, as `FILE:LINE:COL: warning: message`
/// (a reload that changes nothing logs nothing again).
fn log_warnings(rules: &Rules, path: &str) {
    for warning in &rules.warnings {
        tracing::warn!("{}", warning.render(path));
    }
}

/// An evaluated event: its result, or what the ledger must apply first, with what to count
/// once it is applied; or an event the ledger evaluates (its tally and trace come back in the
/// slot).
#[allow(clippy::large_enum_variant, reason = "one value on `run`'s stack per event: a box would allocate for each")]
enum Evaluated<'a> {
    Done(EventResult),
    /// To write; with the result when it was built before the write ([`ResultPlan::AsPlanned`]).
    ToApply(&'a Ledger, EventWrite, Option<EventResult>, Tally),
    Deferred(&'a Ledger, EventWrite, Arc<Mutex<Option<Decided>>>),
}

/// What an evaluation inside the ledger counts and traces.
type Decided = (Tally, Option<Trace>);

/// What an evaluation adds to the metrics, copied out of the thread's buffer because it is
/// counted only after the ledger has applied the event (a replay adds nothing).
#[derive(Default)]
struct Tally {
    matched: Vec<u32>,
    unknowns: [u32; Reason::LABELS.len()],
    /// Each planned action's scenario and action.
    actions: Vec<(u32, u32)>,
}

impl Tally {
    fn of(evaluation: &Evaluation) -> Tally {
        Tally {
            matched: evaluation.matched.clone(),
            unknowns: evaluation.unknowns,
            actions: evaluation.planned.iter().map(|p| (p.scenario, p.action)).collect(),
        }
    }
}

/// Evaluates an event and reports what its actions would do, touching no ledger.
///
/// ```
/// use fluxflow::actions::ActionRegistry;
/// use fluxflow::engine::evaluate_stateless;
/// use fluxflow::event::Event;
/// use fluxflow::graph::Rules;
///
/// let rules = Rules::load_path("tests/fixtures/example-rules.yaml".as_ref(), &ActionRegistry::builtin()).unwrap();
/// let event = Event::from_value(serde_json::json!({
///     "type": "transaction", "source": "pos-system", "actor_id": "user_42",
///     "payload": {"amount": 1500, "category": "food"}
/// })).unwrap();
/// let result = evaluate_stateless(&rules, &event, false);
/// assert_eq!(result.scenarios_matched, ["sc_high_value_food"]);
/// assert_eq!(result.actions_executed[0].message, "Awarded 75 points to user_42 — High-value food purchase bonus");
/// ```
pub fn evaluate_stateless(rules: &Rules, event: &Event, trace: bool) -> EventResult {
    let started = Instant::now();
    let mut evaluation = rules.new_evaluation();
    let trace = rules.evaluate_maybe_traced(&Facts::of(event), &mut evaluation, trace);
    traced(rules, planned_result(rules, event, &evaluation, started), trace)
}

/// A result with its trace, the trace marked with what each action did.
fn traced(rules: &Rules, mut result: EventResult, trace: Option<Trace>) -> EventResult {
    result.trace = trace.map(|mut trace| {
        trace.mark_outcomes(rules, &result);
        trace
    });
    result
}

/// Evaluates an event into this thread's reused buffer and hands `then` what it found.
fn with_evaluation<R>(task: &Task, live: &LiveRules, then: impl FnOnce(&Evaluation) -> R) -> (R, Option<Trace>) {
    EVALUATION.with(|cell| {
        let mut evaluation = cell.borrow_mut();
        let trace = live.rules.evaluate_maybe_traced(&Facts::of(&task.event), &mut evaluation, task.trace);
        (then(&evaluation), trace)
    })
}

/// The result of an evaluation whose plans are carried out as planned (no ledger to refuse one),
/// stacked: of an exclusive group only the first scenario with a successful plan acts. Limits
/// see no earlier use (nothing is remembered without a ledger): only this event counts.
pub(crate) fn planned_result(rules: &Rules, event: &Event, evaluation: &Evaluation, started: Instant) -> EventResult {
    let keys = rules.stacking_keys(evaluation);
    let limits = rules.limits_of(evaluation);
    let plans = |scenario: u32, actions: std::ops::Range<usize>, outcomes: &mut Vec<Option<Outcome>>| {
        let unused = |limited: &Arc<ScenarioLimits>| Room::new(limited.limits.iter().map(|&l| (l, Usage::default())));
        let mut room = limits.iter().find(|l| l.scenario == scenario).map_or_else(Room::default, unused);
        // `keys` has one entry per planned action, so every index is in range.
        for planned in &evaluation.planned[actions] {
            let outcome = match planned.plan {
                Plan::Points(change) => {
                    let carried_out =
                        |amount| Ok::<_, Infallible>(Outcome::Done(Plan::Points(PointsChange { amount, ..change })));
                    room.points(change.amount, carried_out)
                }
                plan => Ok(room.decided(Outcome::of_plan(plan))),
            };
            let Ok(outcome) = outcome;
            outcomes.push(Some(outcome));
        }
        Ok::<_, Infallible>(())
    };
    let Ok(stacked) = stack(&keys, plans);
    EventResult::build(rules, event, evaluation, &stacked, started.elapsed())
}

#[cfg(test)]
mod tests {
    use super::chains;

    #[test]
    fn chains_keep_each_actors_order_and_leave_events_without_one_alone() {
        let items = [(1, Some("ann")), (2, None), (3, Some("bob")), (4, Some("ann")), (5, None), (6, Some("bob"))];
        let grouped = chains(items.to_vec(), |(_, actor)| *actor);
        let numbers: Vec<Vec<i32>> = grouped.iter().map(|c| c.iter().map(|(n, _)| *n).collect()).collect();
        assert_eq!(numbers, [vec![1, 4], vec![2], vec![3, 6], vec![5]]);
        assert!(chains(Vec::<(i32, Option<&str>)>::new(), |(_, a)| *a).is_empty());
    }
}
