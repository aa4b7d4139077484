//! The engine: a bounded queue, a fixed pool of event workers, the live rules and their reload,
//! and the ledger the workers apply results to.
//!
//! Admission is exact: at most `queue_depth` events wait and `event_workers` are evaluated at
//! once. Workers are OS threads, so evaluation and ledger waits never stall the HTTP runtime. A
//! synchronous caller waits up to `event_timeout_ms` for its result; past that it is told so,
//! and the event still completes (and is stored, so a retry with its id gets the result).

pub mod jobs;
pub mod live;
pub mod metrics;
pub mod simulate;
pub mod watch;

pub use crate::result::{ActionResult, EventResult};
pub use live::{LiveRules, ReloadReport};

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::sync::{mpsc, oneshot};

use crate::actions::{ActionRegistry, Outcome, Plan};
use crate::event::Event;
use crate::graph::{Evaluation, LoadError, Rules};
use crate::ledger::{ActionWrite, Applied, EventWrite, Ledger, LedgerError, NewJob, PointsWrite, fingerprint};
use crate::result::Job;
use crate::rules::EngineSettings;
use jobs::MemoryJobs;
use metrics::Metrics;

/// How often the requeue thread looks for batch events to put back on the queue.
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
    #[error("{0}; nothing was stored, retry later")]
    Ledger(LedgerError),
}

/// The reload failed; the old rules stay live.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the rules file has problems; the previous rules stay live")]
pub struct ReloadError {
    /// Every problem, as `FILE:LINE:COL: error: message`.
    pub problems: Vec<String>,
}

/// What `submit_batch` did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BatchReceipt {
    /// The job's id.
    pub job_id: String,
    /// Events in the batch.
    pub total: usize,
    /// Events accepted.
    pub queued: usize,
    /// Events refused because the queue was full.
    pub rejected: usize,
}

/// What the queue carries: an event to evaluate, or a worker's signal to stop.
#[allow(
    clippy::large_enum_variant,
    reason = "Stop is sent once per worker at shutdown; boxing every event would cost more"
)]
enum Work {
    Event(Task),
    Stop,
}

struct Task {
    event: Arc<Event>,
    trace: bool,
    reply: Option<oneshot::Sender<Result<EventResult, EngineError>>>,
    job: Option<(String, usize)>,
    enqueued: Instant,
}

/// The running engine.
pub struct Engine {
    live: ArcSwap<LiveRules>,
    registry: ActionRegistry,
    config_path: PathBuf,
    settings: EngineSettings,
    timeout_ms: AtomicU64,
    queue: mpsc::Sender<Work>,
    receiver: Mutex<mpsc::Receiver<Work>>,
    workers: Mutex<Vec<JoinHandle<()>>>,
    shutting_down: AtomicBool,
    reload_lock: Mutex<()>,
    ledger: Option<Ledger>,
    memory_jobs: MemoryJobs,
    /// Batch events waiting to be (re-)queued by the requeue thread.
    retry: Mutex<Vec<Task>>,
    /// Every metric.
    pub metrics: Metrics,
}

impl Engine {
    /// Loads the rules, starts the workers, and re-queues batch events that the ledger holds
    /// as accepted but not yet processed (from before a crash or a stop).
    pub fn start(
        config_path: PathBuf,
        registry: ActionRegistry,
        ledger: Option<Ledger>,
    ) -> Result<Arc<Engine>, LoadError> {
        let rules = Rules::load_path(&config_path, &registry)?;
        let metrics = Metrics::new();
        metrics.reload("success");
        let settings = rules.file.engine;
        let live = LiveRules::new(rules, config_path.clone(), &metrics);
        let (queue, receiver) = mpsc::channel(settings.queue_depth.max(1) as usize);
        let engine = Arc::new(Engine {
            live: ArcSwap::from_pointee(live),
            registry,
            config_path,
            settings,
            timeout_ms: AtomicU64::new(u64::from(settings.event_timeout_ms)),
            queue,
            receiver: Mutex::new(receiver),
            workers: Mutex::new(Vec::new()),
            shutting_down: AtomicBool::new(false),
            reload_lock: Mutex::new(()),
            ledger,
            memory_jobs: MemoryJobs::default(),
            retry: Mutex::new(Vec::new()),
            metrics,
        });
        let handles = (0..settings.event_workers.max(1))
            .map(|i| {
                let engine = Arc::clone(&engine);
                std::thread::Builder::new().name(format!("event-worker-{i}")).spawn(move || engine.work())
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| LoadError::Io { path: "event worker threads".into(), source: e })?;
        if let Ok(mut workers) = engine.workers.lock() {
            *workers = handles;
        }
        engine.start_requeuer();
        Ok(engine)
    }

    /// Starts the thread that (re-)queues batch events: those the ledger holds as accepted but
    /// not processed (from before a crash or a stop), and those whose ledger write failed while
    /// running, once the ledger is healthy again. Until then they stay stored as queued.
    fn start_requeuer(self: &Arc<Self>) {
        let Some(ledger) = &self.ledger else { return };
        match ledger.store().pending_events() {
            Ok(pending) if !pending.is_empty() => {
                tracing::info!(events = pending.len(), "re-queueing batch events accepted before the last stop");
                let tasks = pending.into_iter().map(|p| Task {
                    event: Arc::new(p.event),
                    trace: false,
                    reply: None,
                    job: Some((p.job_id, p.index)),
                    enqueued: Instant::now(),
                });
                if let Ok(mut retry) = self.retry.lock() {
                    retry.extend(tasks);
                }
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "cannot read the batch events left from before; they stay stored"),
        }
        let engine = Arc::clone(self);
        let spawned = std::thread::Builder::new().name("requeue".into()).spawn(move || engine.requeue_loop());
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the re-queue thread; pending batch events wait for the next start");
        }
    }

    fn requeue_loop(&self) {
        while !self.is_shutting_down() {
            let waiting = self.retry.lock().map(|mut r| std::mem::take(&mut *r)).unwrap_or_default();
            if !waiting.is_empty() {
                let healthy = self.ledger.as_ref().is_some_and(Ledger::is_healthy);
                let mut left = Vec::new();
                for task in waiting {
                    if !healthy || !left.is_empty() {
                        left.push(task);
                        continue;
                    }
                    match self.queue.try_send(Work::Event(task)) {
                        Ok(()) => self.admitted(1),
                        Err(mpsc::error::TrySendError::Full(Work::Event(task))) => left.push(task),
                        Err(_) => return,
                    }
                }
                if let Ok(mut retry) = self.retry.lock() {
                    left.append(&mut retry);
                    *retry = left;
                }
            }
            std::thread::sleep(REQUEUE_INTERVAL);
        }
    }

    /// The rules now live.
    pub fn live(&self) -> Arc<LiveRules> {
        self.live.load_full()
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
        let capacity = self.queue.max_capacity();
        let waiting = capacity - self.queue.capacity();
        waiting as f64 / capacity as f64
    }

    /// True once shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }

    fn admitted(&self, count: usize) {
        self.metrics.events_enqueued.inc_by(count as u64);
        self.metrics.queue_utilization.set(self.queue_utilization());
    }

    /// Evaluates one event and waits for its result, up to `event_timeout_ms`.
    pub async fn process(&self, event: Event, trace: bool) -> Result<EventResult, EngineError> {
        if self.is_shutting_down() {
            return Err(EngineError::ShuttingDown);
        }
        let event_id = event.id.clone();
        let (reply, result) = oneshot::channel();
        let task = Task { event: Arc::new(event), trace, reply: Some(reply), job: None, enqueued: Instant::now() };
        match self.queue.try_send(Work::Event(task)) {
            Ok(()) => self.admitted(1),
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.metrics.events_dropped.inc();
                return Err(EngineError::QueueFull { capacity: self.queue.max_capacity() });
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(EngineError::ShuttingDown),
        }
        let timeout_ms = self.timeout_ms.load(Ordering::Relaxed);
        match tokio::time::timeout(Duration::from_millis(timeout_ms), result).await {
            Ok(Ok(result)) => result,
            // A worker dropped the reply without answering: only when the process is going down.
            Ok(Err(_)) => Err(EngineError::ShuttingDown),
            Err(_) => Err(EngineError::Timeout { event_id, timeout_ms }),
        }
    }

    /// Queues a batch: the events that fit are stored durably (with a ledger) and queued; the
    /// rest are counted as rejected. Answers once the accepted events are stored.
    pub async fn submit_batch(&self, events: Vec<Event>) -> Result<BatchReceipt, EngineError> {
        if self.is_shutting_down() {
            return Err(EngineError::ShuttingDown);
        }
        let mut permits = Vec::with_capacity(events.len());
        while permits.len() < events.len() {
            match self.queue.try_reserve() {
                Ok(permit) => permits.push(permit),
                Err(_) => break,
            }
        }
        let (total, queued) = (events.len(), permits.len());
        let job_id = uuid::Uuid::now_v7().to_string();
        let events: Vec<Arc<Event>> = events.into_iter().map(Arc::new).collect();
        match &self.ledger {
            Some(ledger) => {
                let job = NewJob { job_id: job_id.clone(), events: events.clone(), queued };
                // On error the permits drop here, so the reserved places are freed.
                ledger.store_job(job).await.map_err(EngineError::Ledger)?;
            }
            None => self.memory_jobs.insert(Job::new(job_id.clone(), events.iter().map(|e| e.id.clone()), queued)),
        }
        for (index, (permit, event)) in permits.into_iter().zip(events).enumerate() {
            let task =
                Task { event, trace: false, reply: None, job: Some((job_id.clone(), index)), enqueued: Instant::now() };
            permit.send(Work::Event(task));
        }
        self.admitted(queued);
        self.metrics.events_dropped.inc_by((total - queued) as u64);
        Ok(BatchReceipt { job_id, total, queued, rejected: total - queued })
    }

    /// A batch job, from the ledger or (with `--ledger none`) from memory.
    pub fn job(&self, job_id: &str) -> Result<Option<Job>, LedgerError> {
        match &self.ledger {
            Some(ledger) => ledger.store().job(job_id),
            None => Ok(self.memory_jobs.get(job_id)),
        }
    }

    /// Re-reads the rules file; swaps it in only when it is valid.
    pub fn reload(&self) -> Result<ReloadReport, ReloadError> {
        let _serialised = self.reload_lock.lock();
        let path = self.config_path.display().to_string();
        let rules = match Rules::load_path(&self.config_path, &self.registry) {
            Ok(rules) => rules,
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
        let changed = current.rules.hash != rules.hash;
        let file_settings = rules.file.engine;
        let report = ReloadReport {
            reloaded: true,
            scenarios_count: rules.file.scenarios.len(),
            hash: rules.hash.clone(),
            loaded_at: String::new(),
            changed,
            warnings: rules.warnings.iter().map(|d| d.render(&path)).collect(),
            restart_required: live::settings_needing_restart(&self.settings, &file_settings),
        };
        let loaded_at = if changed {
            self.timeout_ms.store(u64::from(file_settings.event_timeout_ms), Ordering::Relaxed);
            let live = LiveRules::new(rules, self.config_path.clone(), &self.metrics);
            let at = live.loaded_at;
            self.live.store(Arc::new(live));
            self.metrics.reload("success");
            tracing::info!(file = %path, hash = %report.hash, scenarios = report.scenarios_count, "rules reloaded");
            at
        } else {
            self.metrics.reload("unchanged");
            current.loaded_at
        };
        Ok(ReloadReport { loaded_at: loaded_at.to_string(), ..report })
    }

    /// Refuses new events from now on.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Release);
    }

    /// Lets the workers evaluate every event already queued, then stops them, then commits and
    /// closes the ledger. Call it once no request is in flight any more. Blocks: call it off the
    /// async runtime.
    pub fn drain(&self) {
        self.begin_shutdown();
        let workers = self.workers.lock().map(|w| w.len()).unwrap_or(0);
        // The queue is first in, first out: each worker meets a Stop only after every event
        // queued before it.
        for _ in 0..workers {
            if self.queue.blocking_send(Work::Stop).is_err() {
                break;
            }
        }
        let handles = self.workers.lock().map(|mut w| std::mem::take(&mut *w)).unwrap_or_default();
        for handle in handles {
            let _ = handle.join();
        }
        if let Some(ledger) = &self.ledger {
            ledger.close();
        }
    }

    fn next_task(&self) -> Option<Task> {
        // The lock hands the queue to one idle worker at a time.
        let mut receiver = self.receiver.lock().ok()?;
        match receiver.blocking_recv()? {
            Work::Event(task) => Some(task),
            Work::Stop => None,
        }
    }

    fn work(&self) {
        let mut evaluation = Evaluation::default();
        while let Some(task) = self.next_task() {
            self.metrics.queue_utilization.set(self.queue_utilization());
            let result = self.run(&task, &mut evaluation);
            let elapsed = task.enqueued.elapsed();
            self.metrics.duration_seconds.observe(elapsed.as_secs_f64());
            self.metrics.duration_ms.observe(elapsed.as_secs_f64() * 1000.0);
            self.metrics.events_processed.inc();
            if let Err(e) = &result {
                tracing::warn!(event_id = %task.event.id, error = %e, "event not applied");
            }
            match (task.reply, &task.job, result) {
                (Some(reply), _, result) => {
                    let _ = reply.send(result);
                }
                (None, Some((job_id, index)), Ok(result)) if self.ledger.is_none() => {
                    self.memory_jobs.complete(job_id, *index, result);
                }
                // Still stored as queued: try again once the ledger takes writes.
                (None, Some(_), Err(EngineError::Ledger(_))) => {
                    if let Ok(mut retry) = self.retry.lock() {
                        retry.push(Task { reply: None, enqueued: Instant::now(), ..task });
                    }
                }
                _ => {}
            }
        }
    }

    fn run(&self, task: &Task, evaluation: &mut Evaluation) -> Result<EventResult, EngineError> {
        let event = &task.event;
        // A retry of a stored event is answered from the ledger without evaluating again.
        if let (Some(ledger), false, None) = (&self.ledger, event.generated_id, &task.job) {
            if let Some((stored_fp, mut stored)) =
                ledger.store().stored_result(&event.id).map_err(EngineError::Ledger)?
            {
                if stored_fp != fingerprint(event) {
                    return Err(EngineError::Conflict { event_id: event.id.clone() });
                }
                stored.replayed = true;
                return Ok(stored);
            }
        }
        let live = self.live.load_full();
        let trace = if task.trace {
            Some(live.rules.evaluate_traced(event, evaluation))
        } else {
            live.rules.evaluate(event, evaluation);
            None
        };
        let mut result = match &self.ledger {
            None => build_result(&live.rules, event, evaluation, task.enqueued),
            Some(ledger) => {
                match ledger.apply(self.ledger_write(task, &live, evaluation)).map_err(EngineError::Ledger)? {
                    Applied::Fresh(result) => result,
                    Applied::Replayed(mut stored) => {
                        stored.replayed = true;
                        return Ok(stored);
                    }
                    Applied::Conflict => return Err(EngineError::Conflict { event_id: event.id.clone() }),
                }
            }
        };
        result.trace = trace;
        self.count(&live, evaluation, &result);
        Ok(result)
    }

    /// What the ledger must write for an evaluated event; the result is built once the ledger
    /// has decided each action's outcome (a deduction can be refused).
    fn ledger_write(&self, task: &Task, live: &Arc<LiveRules>, evaluation: &Evaluation) -> EventWrite {
        let event = &task.event;
        let actions = evaluation
            .planned
            .iter()
            .map(|planned| match (planned.plan, &event.actor_id, live.rules.action(planned.action)) {
                (Plan::Points(change), Some(actor), Some(entry)) => ActionWrite::Points(PointsWrite {
                    actor_id: actor.clone(),
                    action_id: entry.id.clone(),
                    scenario_id: live.rules.scenario_id(planned.scenario).to_owned(),
                    change,
                    reason: entry.action.ledger_reason().map(str::to_owned),
                }),
                (plan, _, _) => ActionWrite::Decided(Outcome::of_plan(plan)),
            })
            .collect();
        let (live, event, evaluation, started) =
            (Arc::clone(live), Arc::clone(event), evaluation.clone(), task.enqueued);
        EventWrite {
            event_id: event.id.clone(),
            fingerprint: fingerprint(&event),
            actions,
            job: task.job.clone(),
            build_result: Box::new(move |outcomes| {
                EventResult::build(&live.rules, &event, &evaluation, outcomes, started.elapsed())
            }),
        }
    }

    fn count(&self, live: &LiveRules, evaluation: &Evaluation, result: &EventResult) {
        for &scenario in &evaluation.matched {
            live.count_match(scenario);
        }
        for (planned, action) in evaluation.planned.iter().zip(&result.actions_executed) {
            live.count_action(planned.action, action.success);
        }
        for (index, &count) in evaluation.unknowns.iter().enumerate() {
            if count > 0 {
                let label = metrics::ReasonLabel { reason: crate::expr::Reason::LABELS[index] };
                self.metrics.unknown_conditions.get_or_create(&label).inc_by(u64::from(count));
            }
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
/// let rules = Rules::load_path("configs/rules.yaml".as_ref(), &ActionRegistry::builtin()).unwrap();
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
    let trace = if trace {
        Some(rules.evaluate_traced(event, &mut evaluation))
    } else {
        rules.evaluate(event, &mut evaluation);
        None
    };
    let mut result = build_result(rules, event, &evaluation, started);
    result.trace = trace;
    result
}

/// The result of an evaluation whose plans are carried out as planned (no ledger to refuse one).
fn build_result(rules: &Rules, event: &Event, evaluation: &Evaluation, started: Instant) -> EventResult {
    let outcomes: Vec<Outcome> = evaluation.planned.iter().map(|p| Outcome::of_plan(p.plan)).collect();
    EventResult::build(rules, event, evaluation, &outcomes, started.elapsed())
}
