//! The batch intake's policy (`POST /v1/events/batch`): the events that fit the queue now are
//! stored as a job (durably, with a ledger) before the answer, then applied in each actor's
//! order; the rest are counted as rejected. Nothing waits for them: the job reports each event.
//! With `--nats` the stream is the queue: the job is recorded with every event queued and the
//! events are published there.

use std::sync::Arc;

use crate::engine::{Engine, EngineError, Origin};
use crate::event::Event;

/// What a batch submission did.
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

/// Queues a batch on this node. Answers once the accepted events are stored.
pub async fn submit(engine: &Arc<Engine>, events: Vec<Event>) -> Result<BatchReceipt, EngineError> {
    if engine.is_shutting_down() {
        return Err(EngineError::ShuttingDown);
    }
    let tickets = engine.try_admit_up_to(events.len());
    let (total, queued) = (events.len(), tickets.len());
    let events: Vec<Arc<Event>> = events.into_iter().map(Arc::new).collect();
    // On error the tickets drop here, so their places are freed.
    let job_id = engine.store_job(&events, queued).await?;
    let admitted =
        tickets.into_iter().zip(events).enumerate().map(|(index, (ticket, event))| {
            (ticket, event, Origin { job: Some((job_id.clone(), index)), position: None })
        });
    engine.apply_in_actor_order(admitted.collect());
    if total > queued {
        engine.queue_full(total - queued);
    }
    Ok(BatchReceipt { job_id, total, queued, rejected: total - queued })
}

/// Records a batch whose events go through the event stream: the job is stored with every event
/// queued, and each is marked as the stream intake applies it. Nothing is admitted here.
pub async fn record_streamed(engine: &Engine, events: &[Arc<Event>]) -> Result<BatchReceipt, EngineError> {
    if engine.is_shutting_down() {
        return Err(EngineError::ShuttingDown);
    }
    let total = events.len();
    let job_id = engine.store_job(events, total).await?;
    Ok(BatchReceipt { job_id, total, queued: total, rejected: 0 })
}
