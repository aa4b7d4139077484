//! The engine: a bounded queue, a fixed pool of event workers, the live rules and their reload.
//!
//! Admission is exact: at most `queue_depth` events wait and `event_workers` are evaluated at
//! once. Workers are OS threads, so evaluation never stalls the HTTP runtime. A synchronous
//! caller waits up to `event_timeout_ms` for its result; past that it is told so, and the event
//! still completes.

pub mod jobs;
pub mod live;
pub mod metrics;

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

use crate::actions::{ActionRegistry, Outcome};
use crate::event::Event;
use crate::graph::{Evaluation, LoadError, Rules};
use crate::rules::EngineSettings;
use jobs::{EventState, Job, JobEvent, JobStore};
use metrics::Metrics;

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
    event: Event,
    trace: bool,
    reply: Option<oneshot::Sender<EventResult>>,
    job: Option<(Arc<str>, usize)>,
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
    /// Every metric.
    pub metrics: Metrics,
    /// Batch jobs.
    pub jobs: JobStore,
}

impl Engine {
    /// Loads the rules and starts the workers.
    pub fn start(config_path: PathBuf, registry: ActionRegistry) -> Result<Arc<Engine>, LoadError> {
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
            metrics,
            jobs: JobStore::default(),
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
        Ok(engine)
    }

    /// The rules now live.
    pub fn live(&self) -> Arc<LiveRules> {
        self.live.load_full()
    }

    /// The engine settings the engine started with.
    pub fn settings(&self) -> EngineSettings {
        self.settings
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

    fn enqueue(&self, task: Task) -> Result<(), EngineError> {
        if self.is_shutting_down() {
            return Err(EngineError::ShuttingDown);
        }
        match self.queue.try_send(Work::Event(task)) {
            Ok(()) => {
                self.metrics.events_enqueued.inc();
                self.metrics.queue_utilization.set(self.queue_utilization());
                Ok(())
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.metrics.events_dropped.inc();
                Err(EngineError::QueueFull { capacity: self.queue.max_capacity() })
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(EngineError::ShuttingDown),
        }
    }

    /// Evaluates one event and waits for its result, up to `event_timeout_ms`.
    pub async fn process(&self, event: Event, trace: bool) -> Result<EventResult, EngineError> {
        let event_id = event.id.clone();
        let (reply, result) = oneshot::channel();
        self.enqueue(Task { event, trace, reply: Some(reply), job: None, enqueued: Instant::now() })?;
        let timeout_ms = self.timeout_ms.load(Ordering::Relaxed);
        match tokio::time::timeout(Duration::from_millis(timeout_ms), result).await {
            Ok(Ok(result)) => Ok(result),
            // A worker dropped the reply without answering: only when the process is going down.
            Ok(Err(_)) => Err(EngineError::ShuttingDown),
            Err(_) => Err(EngineError::Timeout { event_id, timeout_ms }),
        }
    }

    /// Queues a batch; events that do not fit are counted as rejected.
    pub fn submit_batch(&self, events: Vec<Event>) -> Result<BatchReceipt, EngineError> {
        if self.is_shutting_down() {
            return Err(EngineError::ShuttingDown);
        }
        let job_id: Arc<str> = uuid::Uuid::now_v7().to_string().into();
        let total = events.len();
        let mut record = Job {
            job_id: job_id.to_string(),
            state: "queued",
            total,
            queued: 0,
            rejected: 0,
            done: 0,
            events: events
                .iter()
                .map(|e| JobEvent { event_id: e.id.clone(), state: EventState::Queued, result: None })
                .collect(),
        };
        // Insert first, so a worker that finishes an event at once finds its job.
        self.jobs.insert(record.clone());
        for (index, event) in events.into_iter().enumerate() {
            let task = Task {
                event,
                trace: false,
                reply: None,
                job: Some((Arc::clone(&job_id), index)),
                enqueued: Instant::now(),
            };
            match self.enqueue(task) {
                Ok(()) => record.queued += 1,
                Err(_) => {
                    record.rejected += 1;
                    record.events[index].state = EventState::Rejected;
                }
            }
        }
        self.jobs.record_admission(&job_id, record.queued, &record.events);
        Ok(BatchReceipt { job_id: job_id.to_string(), total, queued: record.queued, rejected: record.rejected })
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

    /// Lets the workers evaluate every event already queued, then stops them and waits for
    /// them. Call it once no request is in flight any more. Blocks: call it off the async runtime.
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
            match (task.reply, task.job) {
                (Some(reply), _) => {
                    let _ = reply.send(result);
                }
                (None, Some((job_id, index))) => self.jobs.complete(&job_id, index, result),
                (None, None) => {}
            }
        }
    }

    fn run(&self, task: &Task, evaluation: &mut Evaluation) -> EventResult {
        let live = self.live.load();
        let result = evaluate_into(&live.rules, &task.event, task.trace, evaluation, task.enqueued);
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
        let elapsed = task.enqueued.elapsed();
        self.metrics.duration_seconds.observe(elapsed.as_secs_f64());
        self.metrics.duration_ms.observe(elapsed.as_secs_f64() * 1000.0);
        self.metrics.events_processed.inc();
        result
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
    evaluate_into(rules, event, trace, &mut rules.new_evaluation(), Instant::now())
}

fn evaluate_into(
    rules: &Rules,
    event: &Event,
    trace: bool,
    evaluation: &mut Evaluation,
    started: Instant,
) -> EventResult {
    let trace = if trace {
        Some(rules.evaluate_traced(event, evaluation))
    } else {
        rules.evaluate(event, evaluation);
        None
    };
    let outcomes: Vec<Outcome> = evaluation.planned.iter().map(|p| Outcome::of_plan(p.plan)).collect();
    let mut result = EventResult::build(rules, event, evaluation, &outcomes, started.elapsed());
    result.trace = trace;
    result
}
