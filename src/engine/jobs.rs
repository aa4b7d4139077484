//! Batch jobs kept in memory: each event's state and result, for `GET /v1/jobs/{job_id}`.
//! The oldest jobs are forgotten past a fixed number, so memory stays bounded.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use serde::Serialize;

use crate::result::EventResult;

/// Jobs remembered at most.
pub const MAX_JOBS: usize = 10_000;

/// The state of one event of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventState {
    /// Waiting for a worker.
    Queued,
    /// Evaluated; the result is there.
    Done,
    /// Refused: the queue was full.
    Rejected,
}

/// One event of a job.
#[derive(Debug, Clone, Serialize)]
pub struct JobEvent {
    /// The event's id.
    pub event_id: String,
    /// Where it is.
    pub state: EventState,
    /// Its result, once done.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<EventResult>,
}

/// A batch job.
#[derive(Debug, Clone, Serialize)]
pub struct Job {
    /// The job's id.
    pub job_id: String,
    /// `queued` while any event waits, else `done`.
    pub state: &'static str,
    /// Events in the batch.
    pub total: usize,
    /// Events accepted onto the queue.
    pub queued: usize,
    /// Events refused because the queue was full.
    pub rejected: usize,
    /// Events evaluated.
    pub done: usize,
    /// Each event, in batch order.
    pub events: Vec<JobEvent>,
}

#[derive(Default)]
struct Inner {
    jobs: HashMap<String, Job>,
    order: VecDeque<String>,
}

/// The in-memory job store.
#[derive(Default)]
pub struct JobStore {
    inner: Mutex<Inner>,
}

impl JobStore {
    /// Records a new job; the oldest is forgotten when the store is full.
    pub fn insert(&self, job: Job) {
        let Ok(mut inner) = self.inner.lock() else { return };
        if inner.order.len() >= MAX_JOBS {
            if let Some(oldest) = inner.order.pop_front() {
                inner.jobs.remove(&oldest);
            }
        }
        inner.order.push_back(job.job_id.clone());
        inner.jobs.insert(job.job_id.clone(), job);
    }

    /// Records an event's result.
    pub fn complete(&self, job_id: &str, index: usize, result: EventResult) {
        let Ok(mut inner) = self.inner.lock() else { return };
        let Some(job) = inner.jobs.get_mut(job_id) else { return };
        if let Some(event) = job.events.get_mut(index) {
            event.state = EventState::Done;
            event.result = Some(result);
            job.done += 1;
            if job.done >= job.queued && job.queued + job.rejected == job.total {
                job.state = "done";
            }
        }
    }

    /// Records how many events of a job were admitted, and which were rejected.
    pub fn record_admission(&self, job_id: &str, queued: usize, events: &[JobEvent]) {
        let Ok(mut inner) = self.inner.lock() else { return };
        let Some(job) = inner.jobs.get_mut(job_id) else { return };
        job.queued = queued;
        job.rejected = job.total - queued;
        for (stored, admitted) in job.events.iter_mut().zip(events) {
            if admitted.state == EventState::Rejected {
                stored.state = EventState::Rejected;
            }
        }
        if job.done >= job.queued {
            job.state = "done";
        }
    }

    /// A job, by id.
    pub fn get(&self, job_id: &str) -> Option<Job> {
        self.inner.lock().ok()?.jobs.get(job_id).cloned()
    }
}
