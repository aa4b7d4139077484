//! Admission: at most `queue_depth` events wait and `event_workers` are evaluated at once.
//!
//! Events run as tokio tasks rather than on a pool of threads: evaluation takes microseconds,
//! and handing each event to another thread and back cost more than the evaluation (futex wake
//! ups and context switches were a fifth of the service's time under load). A semaphore bounds
//! the tasks evaluating; a counter bounds those waiting for a permit and, once evaluated, for
//! the ledger's commit: that is what "the queue" means here.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// The bounds, and the count of events admitted and not finished (for draining).
pub struct Admission {
    evaluating: Arc<Semaphore>,
    waiting: AtomicUsize,
    capacity: usize,
    in_flight: AtomicUsize,
    idle: Notify,
}

/// A place in the queue; given up when the event starts evaluating or is dropped.
pub struct Ticket {
    /// `None` once the ticket became a running event.
    admission: Option<Arc<Admission>>,
}

impl Admission {
    /// `workers` evaluate at once; `capacity` may wait.
    pub fn new(workers: usize, capacity: usize) -> Self {
        Admission {
            evaluating: Arc::new(Semaphore::new(workers.max(1))),
            waiting: AtomicUsize::new(0),
            capacity: capacity.max(1),
            in_flight: AtomicUsize::new(0),
            idle: Notify::new(),
        }
    }

    /// Takes a place in the queue, unless it is full.
    pub fn try_enter(self: &Arc<Self>) -> Option<Ticket> {
        let mut current = self.waiting.load(Ordering::Relaxed);
        loop {
            if current >= self.capacity {
                return None;
            }
            match self.waiting.compare_exchange_weak(current, current + 1, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => {
                    self.in_flight.fetch_add(1, Ordering::AcqRel);
                    return Some(Ticket { admission: Some(Arc::clone(self)) });
                }
                Err(now) => current = now,
            }
        }
    }

    /// Events waiting over capacity, from 0 to 1.
    pub fn utilization(&self) -> f64 {
        self.waiting.load(Ordering::Relaxed) as f64 / self.capacity as f64
    }

    /// The queue's capacity.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Waits until every admitted event has finished.
    pub async fn idle(&self) {
        loop {
            let notified = self.idle.notified();
            if self.in_flight.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }

    fn finished(&self) {
        if self.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.idle.notify_waiters();
        }
    }
}

impl Ticket {
    /// Waits for an evaluation slot; the queue place is given up once it is granted.
    pub async fn start(mut self) -> Running {
        // While waiting the ticket still holds its place, so a cancelled wait gives it back.
        let semaphore = self.admission.as_ref().map(|a| Arc::clone(&a.evaluating));
        // The semaphore is never closed, so acquiring cannot fail.
        let permit = match semaphore {
            Some(semaphore) => semaphore.acquire_owned().await.ok(),
            None => None,
        };
        Running::of(self.take_admission(), permit)
    }

    /// The evaluation slot if one is free now, else the ticket back (it keeps its place).
    pub fn try_start(mut self) -> Result<Running, Ticket> {
        let admission = self.take_admission();
        match Arc::clone(&admission.evaluating).try_acquire_owned() {
            Ok(permit) => Ok(Running::of(admission, Some(permit))),
            Err(_) => Err(Ticket { admission: Some(admission) }),
        }
    }

    /// The admission, taken out of a ticket that is becoming a running event.
    fn take_admission(&mut self) -> Arc<Admission> {
        let Some(admission) = self.admission.take() else {
            unreachable!("only starting empties a ticket, and starting takes the ticket by value")
        };
        admission
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Some(admission) = self.admission.take() {
            admission.waiting.fetch_sub(1, Ordering::AcqRel);
            admission.finished();
        }
    }
}

/// An event evaluating, then waiting for the ledger; frees its slot when dropped.
pub struct Running {
    admission: Arc<Admission>,
    permit: Option<OwnedSemaphorePermit>,
    /// Set once evaluated: it counts in the queue again until it finishes.
    waiting_again: bool,
}

impl Running {
    /// A started event: it leaves the queue and holds the in-flight count.
    fn of(admission: Arc<Admission>, permit: Option<OwnedSemaphorePermit>) -> Running {
        admission.waiting.fetch_sub(1, Ordering::AcqRel);
        Running { admission, permit, waiting_again: false }
    }

    /// The event is evaluated and now only waits for the ledger's commit: its evaluation slot
    /// goes to the next event, so the next group gathers while this one is written (a slot held
    /// across the commit kept each group to half of `event_workers`). Until it finishes it counts
    /// in the queue again, so `queue_depth` still bounds the events accepted and not finished,
    /// and draining still waits for it.
    pub fn evaluated(&mut self) {
        if self.permit.take().is_some() {
            self.admission.waiting.fetch_add(1, Ordering::AcqRel);
            self.waiting_again = true;
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.waiting_again {
            self.admission.waiting.fetch_sub(1, Ordering::AcqRel);
        }
        self.admission.finished();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bounds_waiting_and_evaluating() {
        let admission = Arc::new(Admission::new(1, 2));
        let first = admission.try_enter().unwrap().start().await;
        let a = admission.try_enter().unwrap();
        let _b = admission.try_enter().unwrap();
        assert!(admission.try_enter().is_none(), "two wait: the queue is full");
        assert_eq!(admission.utilization(), 1.0);
        drop(first);
        let _second = a.start().await;
        assert_eq!(admission.utilization(), 0.5);
        assert!(admission.try_enter().is_some());
    }

    #[tokio::test]
    async fn a_start_waits_for_a_free_slot_and_a_cancelled_wait_gives_its_place_back() {
        let admission = Arc::new(Admission::new(1, 2));
        let first = admission.try_enter().unwrap().start().await;
        let waiting = admission.try_enter().unwrap();
        assert_eq!(admission.utilization(), 0.5);
        let wait = std::time::Duration::from_millis(50);
        assert!(tokio::time::timeout(wait, waiting.start()).await.is_err(), "the only slot is taken");
        assert_eq!(admission.utilization(), 0.0, "the cancelled wait gave its place back");
        let next = admission.try_enter().unwrap();
        drop(first);
        let started = tokio::time::timeout(std::time::Duration::from_secs(5), next.start()).await;
        assert!(started.is_ok(), "starts once the slot is free");
    }

    #[tokio::test]
    async fn an_evaluated_event_frees_its_slot_and_counts_as_waiting_until_it_finishes() {
        let admission = Arc::new(Admission::new(1, 2));
        let mut first = admission.try_enter().unwrap().start().await;
        first.evaluated();
        assert_eq!(admission.utilization(), 0.5, "waiting for the ledger counts in the queue");
        let wait = std::time::Duration::from_secs(5);
        let second = tokio::time::timeout(wait, admission.try_enter().unwrap().start()).await;
        assert!(second.is_ok(), "the slot went to the next event");
        assert!(admission.try_enter().is_some(), "one place left: the queue holds the first");
        let briefly = std::time::Duration::from_millis(50);
        assert!(tokio::time::timeout(briefly, admission.idle()).await.is_err(), "draining waits for it");
        drop((first, second));
        assert!(tokio::time::timeout(wait, admission.idle()).await.is_ok());
        assert_eq!(admission.utilization(), 0.0);
    }
}
