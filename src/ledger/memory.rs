//! An in-memory overlay over an optional read-only store: the ledger of simulations and rule
//! tests. It implements [`LedgerTx`], so [`super::posting::post`] decides points here exactly as
//! in a store; what it writes stays in memory and the store underneath is only read.

use std::collections::HashMap;

use super::tx::{LedgerTx, NewEntry, NewEvent, StoredEvent};
use super::{LedgerError, LedgerStore};
use crate::result::EventState;

/// A points movement written to the overlay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Moved {
    /// The member.
    pub actor_id: String,
    /// The action.
    pub action_id: String,
    /// Signed points.
    pub points: i64,
    /// The member's balance after it.
    pub balance_after: i64,
}

/// Balances and events written in memory on top of a store that is never written.
pub struct Overlay<'a> {
    base: Option<&'a dyn LedgerStore>,
    balances: HashMap<String, i64>,
    events: HashMap<String, StoredEvent>,
    moved: Vec<Moved>,
}

impl<'a> Overlay<'a> {
    /// An overlay over `base` (or over nothing), with some members' balances given up front.
    pub fn new(base: Option<&'a dyn LedgerStore>, balances: HashMap<String, i64>) -> Overlay<'a> {
        Overlay { base, balances, events: HashMap::new(), moved: Vec::new() }
    }

    /// The movements written since the last call, in order.
    pub fn take_moved(&mut self) -> Vec<Moved> {
        std::mem::take(&mut self.moved)
    }

    /// A member's balance as the overlay sees it (reads the store for a member not yet seen).
    pub fn balance_of(&mut self, actor_id: &str) -> Result<i64, LedgerError> {
        self.balance(actor_id)
    }
}

impl LedgerTx for Overlay<'_> {
    fn find_event(&mut self, event_id: &str) -> Result<Option<StoredEvent>, LedgerError> {
        if let Some(stored) = self.events.get(event_id) {
            return Ok(Some(stored.clone()));
        }
        let Some(base) = self.base else { return Ok(None) };
        Ok(base.stored_result(event_id)?.map(|(fingerprint, result)| StoredEvent { fingerprint, result }))
    }

    fn balance(&mut self, actor_id: &str) -> Result<i64, LedgerError> {
        if let Some(balance) = self.balances.get(actor_id) {
            return Ok(*balance);
        }
        let stored = match self.base {
            Some(base) => base.balance(actor_id)?,
            None => 0,
        };
        self.balances.insert(actor_id.to_owned(), stored);
        Ok(stored)
    }

    fn append(&mut self, entry: &NewEntry<'_>) -> Result<(), LedgerError> {
        let balance = self.balance(entry.actor_id)?.saturating_add(entry.points);
        self.balances.insert(entry.actor_id.to_owned(), balance);
        self.moved.push(Moved {
            actor_id: entry.actor_id.to_owned(),
            action_id: entry.action_id.to_owned(),
            points: entry.points,
            balance_after: balance,
        });
        Ok(())
    }

    fn save_event(&mut self, event: &NewEvent<'_>) -> Result<(), LedgerError> {
        let stored = StoredEvent { fingerprint: *event.fingerprint, result: event.result.clone() };
        self.events.insert(event.event_id.to_owned(), stored);
        Ok(())
    }

    fn mark_job_event(&mut self, _job_id: &str, _index: usize, _state: EventState) -> Result<(), LedgerError> {
        Ok(())
    }
}
