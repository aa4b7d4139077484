//! Batch jobs kept in memory, for `--ledger none`: each event's state and result. The oldest
//! jobs are forgotten past a fixed number, so memory stays bounded. With a ledger, jobs are
//! stored durably there instead.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use crate::result::{EventResult, EventState, Job};

/// Jobs remembered at most.
pub const MAX_JOBS: usize = 10_000;

#[derive(Default)]
struct Inner {
    jobs: HashMap<String, Job>,
    order: VecDeque<String>,
}

/// The in-memory job store.
#[derive(Default)]
pub struct MemoryJobs {
    inner: Mutex<Inner>,
}

impl MemoryJobs {
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
            job.recount();
        }
    }

    /// A job, by id.
    pub fn get(&self, job_id: &str) -> Option<Job> {
        self.inner.lock().ok()?.jobs.get(job_id).cloned()
    }
}
