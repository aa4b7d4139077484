//! Per-subject order on one node: a subject's (actor's) messages taken by this node wait for
//! each other, and what this node applied per subject is remembered so catching up need not
//! read the ledger when the stream shows nothing in between.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::watch;

/// Keeps each subject's (actor's) messages in the order this node took them: one waits until
/// the one taken before it on the same subject is settled.
#[derive(Default)]
pub(super) struct SubjectOrder {
    /// Per subject, a signal that ends when its latest message is settled.
    latest: Mutex<HashMap<String, watch::Receiver<()>>>,
}

/// A message's place in its subject's line.
pub(super) struct Turn {
    subject: String,
    /// Ends when the event before it is settled.
    before: Option<watch::Receiver<()>>,
    /// Dropped when this event is settled.
    done: watch::Sender<()>,
    mine: watch::Receiver<()>,
}

impl Turn {
    pub(super) async fn wait(&self) {
        if let Some(before) = &self.before {
            let mut before = before.clone();
            // The sender is dropped when the event before is settled: `changed` then errs.
            while before.changed().await.is_ok() {}
        }
    }
}

impl SubjectOrder {
    pub(super) fn join(&self, subject: &str) -> Turn {
        let (done, mine) = watch::channel(());
        let before = match self.latest.lock() {
            Ok(mut latest) => latest.insert(subject.to_owned(), mine.clone()),
            Err(_) => None,
        };
        Turn { subject: subject.to_owned(), before, done, mine }
    }

    pub(super) fn leave(&self, turn: Turn) {
        let Turn { subject, done, mine, .. } = turn;
        drop(done);
        if let Ok(mut latest) = self.latest.lock()
            && latest.get(&subject).is_some_and(|last| last.same_channel(&mine))
        {
            latest.remove(&subject);
        }
    }
}

/// Subjects remembered at most: past this the memory starts again empty (a cache of a lower
/// bound, so forgetting only costs ledger reads).
const REMEMBERED_SUBJECTS: usize = 100_000;

/// Per subject, the furthest sequence this node saw committed: never ahead of the ledger's
/// position (positions only grow), so a catch-up may start after it.
#[derive(Default)]
pub(super) struct AppliedHere {
    furthest: Mutex<HashMap<String, u64>>,
}

impl AppliedHere {
    pub(super) fn get(&self, subject: &str) -> Option<u64> {
        self.furthest.lock().ok()?.get(subject).copied()
    }

    pub(super) fn record(&self, subject: &str, sequence: u64) {
        let Ok(mut furthest) = self.furthest.lock() else { return };
        if furthest.len() >= REMEMBERED_SUBJECTS && !furthest.contains_key(subject) {
            furthest.clear();
        }
        let known = furthest.entry(subject.to_owned()).or_default();
        *known = (*known).max(sequence);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_the_furthest_sequence_and_forgets_past_the_cap() {
        let applied = AppliedHere::default();
        applied.record("a", 7);
        applied.record("a", 5);
        assert_eq!(applied.get("a"), Some(7));
        for i in 0..REMEMBERED_SUBJECTS {
            applied.record(&format!("s{i}"), 1);
        }
        assert_eq!(applied.get("a"), None, "the memory started again when it was full");
        assert_eq!(applied.get(&format!("s{}", REMEMBERED_SUBJECTS - 1)), Some(1));
    }
}
