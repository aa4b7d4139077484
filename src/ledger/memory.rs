//! An in-memory overlay over an optional read-only store: the ledger of simulations and rule
//! tests. It implements [`LedgerTx`], so [`super::posting::post`] decides points here exactly as
//! in a store; what it writes stays in memory and the store underneath is only read.

use std::collections::HashMap;

use super::tx::{Book, LedgerTx, Lot, NewEntry, NewEvent, NewLot, NewUse, Original, Reversible, StoredEvent};
use super::{EntryKind, LedgerError, LedgerStore};
use crate::graph::limits::{BudgetKey, Counter, Usage};
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
    /// The sum of the member's entries after it (pending points included).
    pub balance_after: i64,
}

/// A member as the overlay keeps it: its book, its lots, and what its redemptions took from
/// them.
#[derive(Debug, Default)]
struct Member {
    book: Book,
    lots: Vec<Lot>,
    spent: HashMap<String, Vec<(i64, i64)>>,
}

/// An entry written here, as tiers and reversals read it.
#[derive(Debug)]
struct Written {
    actor_id: String,
    event_id: String,
    kind: EntryKind,
    points: i64,
    dated_at: i64,
    reverses: Option<String>,
}

/// Balances, events and limits' use written in memory on top of a store that is never written.
pub struct Overlay<'a> {
    base: Option<&'a dyn LedgerStore>,
    /// Balances given up front: plain points of members read from nowhere else.
    given: HashMap<String, i64>,
    members: HashMap<String, Member>,
    events: HashMap<String, StoredEvent>,
    /// Events posted here, as reversals read them.
    originals: HashMap<String, Original>,
    written: Vec<Written>,
    moved: Vec<Moved>,
    /// Uses of scenarios with `per: actor` limits: (scenario, member, event time, points).
    uses: Vec<(String, String, i64, i64)>,
    /// Additions to budget counters, by (scenario, period, start).
    budgets: HashMap<(String, String, i64), Usage>,
    /// Events posted here with an actor: (member, lower-cased type, event time, payload).
    history: Vec<(String, String, i64, Option<String>)>,
    /// Ids of lots added here: above any the store holds.
    next_lot: i64,
}

impl<'a> Overlay<'a> {
    /// An overlay over `base` (or over nothing), with some members' balances given up front.
    pub fn new(base: Option<&'a dyn LedgerStore>, balances: HashMap<String, i64>) -> Overlay<'a> {
        Overlay {
            base,
            given: balances,
            members: HashMap::new(),
            events: HashMap::new(),
            originals: HashMap::new(),
            written: Vec::new(),
            moved: Vec::new(),
            uses: Vec::new(),
            budgets: HashMap::new(),
            history: Vec::new(),
            next_lot: i64::MAX / 2,
        }
    }

    /// The movements written since the last call, in order.
    pub fn take_moved(&mut self) -> Vec<Moved> {
        std::mem::take(&mut self.moved)
    }

    /// A member's events of a type in a window, from the store and from this overlay, oldest
    /// first.
    fn member_history(
        &self,
        actor_id: &str,
        event_type: &str,
        from: i64,
        to: i64,
    ) -> Result<Vec<(i64, Option<String>)>, LedgerError> {
        let mut events = match self.base {
            Some(base) => base.member_history(actor_id, event_type, from, to)?,
            None => Vec::new(),
        };
        let here =
            self.history.iter().filter(|(a, t, at, _)| a == actor_id && t == event_type && (from..to).contains(at));
        events.extend(here.map(|(_, _, at, payload)| (*at, payload.clone())));
        events.sort_by_key(|(at, _)| *at);
        Ok(events)
    }

    /// A member, read from the store (or the balances given) the first time.
    fn member(&mut self, actor_id: &str) -> Result<&mut Member, LedgerError> {
        if !self.members.contains_key(actor_id) {
            let member = match (self.given.get(actor_id), self.base) {
                (Some(balance), _) => {
                    Member { book: Book { balance: *balance, ..Book::default() }, ..Member::default() }
                }
                (None, Some(base)) => {
                    let state = base.points_state(actor_id, i64::MAX)?;
                    Member { book: state.book, lots: state.lots, spent: HashMap::new() }
                }
                (None, None) => Member::default(),
            };
            self.members.insert(actor_id.to_owned(), member);
        }
        self.members.get_mut(actor_id).ok_or_else(|| super::broken("a member vanished from the overlay"))
    }

    /// A member's spendable points at `at` (µs since the epoch) as the overlay sees them (reads
    /// the store for a member not yet seen): pending and expired points left out, as the read
    /// API answers.
    pub fn balance_of(&mut self, actor_id: &str, at: i64) -> Result<i64, LedgerError> {
        let lots = self.open_lots(actor_id, usize::MAX)?;
        let book = self.member(actor_id)?.book;
        Ok(super::lots::view(book.balance, book.debt, lots, at).balance)
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

    fn book(&mut self, actor_id: &str) -> Result<Book, LedgerError> {
        Ok(self.member(actor_id)?.book)
    }

    fn set_debt(&mut self, actor_id: &str, debt: i64) -> Result<(), LedgerError> {
        self.member(actor_id)?.book.debt = debt;
        Ok(())
    }

    fn append(&mut self, entry: &NewEntry<'_>) -> Result<(), LedgerError> {
        let member = self.member(entry.actor_id)?;
        member.book.balance = member.book.balance.saturating_add(entry.points);
        let balance = member.book.balance;
        self.written.push(Written {
            actor_id: entry.actor_id.to_owned(),
            event_id: entry.event_id.to_owned(),
            kind: entry.kind,
            points: entry.points,
            dated_at: entry.dated_at,
            reverses: entry.reverses.map(str::to_owned),
        });
        if entry.kind != EntryKind::Expire {
            self.moved.push(Moved {
                actor_id: entry.actor_id.to_owned(),
                action_id: entry.action_id.to_owned(),
                points: entry.points,
                balance_after: balance,
            });
        }
        Ok(())
    }

    fn add_lot(&mut self, lot: &NewLot<'_>) -> Result<(), LedgerError> {
        self.next_lot += 1;
        let new = Lot {
            lot_id: self.next_lot,
            source_id: lot.source_id.to_owned(),
            remaining: lot.points,
            available_at: lot.available_at,
            expires_at: lot.expires_at,
        };
        self.member(lot.actor_id)?.lots.push(new);
        Ok(())
    }

    fn lower_next_expiry(&mut self, actor_id: &str, expires_at: i64) -> Result<(), LedgerError> {
        self.member(actor_id)?.book.next_expiry = Some(expires_at);
        Ok(())
    }

    fn open_lots(&mut self, actor_id: &str, limit: usize) -> Result<Vec<Lot>, LedgerError> {
        let mut lots: Vec<Lot> = self.member(actor_id)?.lots.iter().filter(|l| l.remaining > 0).cloned().collect();
        lots.sort_by_key(|l| (l.expires_at.unwrap_or(i64::MAX), l.lot_id));
        lots.truncate(limit);
        Ok(lots)
    }

    fn pending_points(&mut self, actor_id: &str, at: i64) -> Result<i64, LedgerError> {
        let lots = &self.member(actor_id)?.lots;
        Ok(lots.iter().filter(|l| l.remaining > 0 && l.available_at > at).map(|l| l.remaining).sum())
    }

    fn take_from_lots(&mut self, actor_id: &str, taken: &[(i64, i64)]) -> Result<(), LedgerError> {
        let member = self.member(actor_id)?;
        for (lot_id, points) in taken {
            if let Some(lot) = member.lots.iter_mut().find(|l| l.lot_id == *lot_id) {
                lot.remaining -= points;
            }
        }
        let open = member.lots.iter().filter(|l| l.remaining > 0);
        member.book.next_expiry = open.filter_map(|l| l.expires_at).min();
        Ok(())
    }

    fn record_spent(&mut self, actor_id: &str, source_id: &str, spent: &[(i64, i64)]) -> Result<(), LedgerError> {
        self.member(actor_id)?.spent.entry(source_id.to_owned()).or_default().extend_from_slice(spent);
        Ok(())
    }

    fn spent_by(&mut self, actor_id: &str, source_id: &str) -> Result<Vec<(i64, i64)>, LedgerError> {
        Ok(self.member(actor_id)?.spent.get(source_id).cloned().unwrap_or_default())
    }

    fn original(&mut self, event_id: &str) -> Result<Option<Original>, LedgerError> {
        match (self.originals.get(event_id), self.base) {
            (Some(original), _) => Ok(Some(original.clone())),
            (None, Some(base)) => base.original(event_id),
            (None, None) => Ok(None),
        }
    }

    fn reversible(&mut self, actor_id: &str, event_id: &str) -> Result<Reversible, LedgerError> {
        let mut reversible = match self.base {
            Some(base) => base.reversible(actor_id, event_id)?,
            None => Reversible::default(),
        };
        for w in self.written.iter().filter(|w| w.actor_id == actor_id) {
            match w.kind {
                EntryKind::Award if w.event_id == event_id => reversible.awarded += w.points,
                EntryKind::Expire if w.event_id == event_id => reversible.expired -= w.points,
                EntryKind::Reverse if w.reverses.as_deref() == Some(event_id) => reversible.reversed -= w.points,
                _ => {}
            }
        }
        Ok(reversible)
    }

    fn tier_points(&mut self, actor_id: &str, from: i64, to: i64) -> Result<i64, LedgerError> {
        let stored = match self.base {
            Some(base) => base.tier_points(actor_id, from, to)?,
            None => 0,
        };
        let here = self.written.iter().filter(|w| {
            w.actor_id == actor_id
                && matches!(w.kind, EntryKind::Award | EntryKind::Reverse)
                && (from..to).contains(&w.dated_at)
        });
        let here: i64 = here.map(|w| w.points).sum();
        Ok(stored + here)
    }

    fn save_event(&mut self, event: &NewEvent<'_>) -> Result<(), LedgerError> {
        let original = Original {
            actor_id: event.actor_id.map(str::to_owned),
            event_type: event.event_type.to_owned(),
            occurred_at: event.occurred_at,
            payload: event.payload.map(str::to_owned),
        };
        self.originals.insert(event.event_id.to_owned(), original);
        if let (Some(actor), Some(member_type)) = (event.actor_id, event.member_type()) {
            let entry = (actor.to_owned(), member_type, event.occurred_at, event.payload.map(str::to_owned));
            self.history.push(entry);
        }
        // Read back as a store reads a stored result: the one thing every poster gives is its JSON.
        let result =
            serde_json::from_str(event.result_json).map_err(|e| super::broken(format!("a stored result: {e}")))?;
        let stored = StoredEvent { fingerprint: *event.fingerprint, result };
        self.events.insert(event.event_id.to_owned(), stored);
        Ok(())
    }

    fn usage(&mut self, counter: &Counter<'_>) -> Result<Usage, LedgerError> {
        let stored = match self.base {
            Some(base) => base.usage(counter)?,
            None => Usage::default(),
        };
        let here = match counter {
            Counter::Actor(w) => self
                .uses
                .iter()
                .filter(|(s, a, at, _)| s == w.scenario_id && a == w.actor_id && (w.from..w.to).contains(at))
                .fold(Usage::default(), |sum, (.., points)| {
                    sum.plus(Usage { times: 1, points: points.unsigned_abs() })
                }),
            Counter::Budget(b) => {
                let key = (b.scenario_id.to_owned(), b.period.to_string(), b.start);
                self.budgets.get(&key).copied().unwrap_or_default()
            }
        };
        Ok(stored.plus(here))
    }

    fn add_use(&mut self, u: &NewUse<'_>) -> Result<(), LedgerError> {
        self.uses.push((u.scenario_id.to_owned(), u.actor_id.to_owned(), u.occurred_at, u.points));
        Ok(())
    }

    fn add_to_budget(&mut self, b: &BudgetKey<'_>, used: Usage) -> Result<(), LedgerError> {
        let counter = self.budgets.entry((b.scenario_id.to_owned(), b.period.to_string(), b.start)).or_default();
        *counter = counter.plus(used);
        Ok(())
    }

    fn member_count(&mut self, actor_id: &str, event_type: &str, from: i64, to: i64) -> Result<u64, LedgerError> {
        let stored = match self.base {
            Some(base) => base.member_count(actor_id, event_type, from, to)?,
            None => 0,
        };
        let here =
            self.history.iter().filter(|(a, t, at, _)| a == actor_id && t == event_type && (from..to).contains(at));
        Ok(stored + here.count() as u64)
    }

    fn member_payloads(
        &mut self,
        actor_id: &str,
        event_type: &str,
        from: i64,
        to: i64,
    ) -> Result<Vec<String>, LedgerError> {
        Ok(self.member_history(actor_id, event_type, from, to)?.into_iter().filter_map(|(_, p)| p).collect())
    }

    fn member_times(
        &mut self,
        actor_id: &str,
        event_type: &str,
        before: i64,
        limit: usize,
    ) -> Result<Vec<i64>, LedgerError> {
        let history = self.member_history(actor_id, event_type, i64::MIN, before)?;
        Ok(history.iter().rev().take(limit).map(|(at, _)| *at).collect())
    }

    fn mark_job_event(&mut self, _job_id: &str, _index: usize, _state: EventState) -> Result<(), LedgerError> {
        Ok(())
    }

    /// A simulation takes nothing from a stream.
    fn advance_stream(&mut self, _position: &super::StreamPosition) -> Result<(), LedgerError> {
        Ok(())
    }

    /// A simulation delivers nothing.
    fn queue_delivery(&mut self, _delivery: &super::tx::NewDelivery<'_>) -> Result<(), LedgerError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::PointsChange;
    use crate::event::Event;
    use crate::graph::{Stacked, StackingKey};
    use crate::ledger::posting::{PlanRef, Posting, ResultRef, Writes, post};
    use crate::ledger::{ActionWrite, Applied, PointsWrite, fingerprint};
    use crate::result::EventResult;

    fn result(id: &str) -> impl Fn(&Stacked) -> EventResult {
        let id = id.to_owned();
        move |stacked| EventResult {
            event_id: id.clone(),
            occurred_at: None,
            duration_ms: 0,
            duration_us: 0,
            scenarios_matched: vec![],
            actions_executed: stacked
                .outcomes
                .iter()
                .flatten()
                .map(|o| crate::result::ActionResult {
                    action_id: "a".into(),
                    action_type: "reward_points".into(),
                    success: o.success(),
                    message: String::new(),
                    code: o.code().map(str::to_owned),
                    points: o.points(),
                })
                .collect(),
            replayed: false,
            trace: None,
            stored_json: Default::default(),
        }
    }

    fn apply(overlay: &mut Overlay<'_>, id: &str, amount: i64) -> Applied {
        let event = Event::from_value(serde_json::json!({"id": id, "type": "t", "actor_id": "ann"})).unwrap();
        let actions = [ActionWrite::Points(PointsWrite {
            actor_id: "ann".into(),
            action_id: "a".into(),
            scenario_id: "s".into(),
            change: PointsChange::of(amount),
            terms: Default::default(),
            reason: None,
        })];
        let fp = fingerprint(&event);
        let stacking = [StackingKey { scenario: 0, group: None }];
        let build = result(id);
        let writes = Writes { actions: &actions, stacking: &stacking, limits: &[], result: ResultRef::Build(&build) };
        let posting = Posting {
            event_id: id,
            fresh_id: false,
            fingerprint: &fp,
            plan: PlanRef::Ready(writes),
            job: None,
            event: &event,
            position: None,
        };
        post(overlay, &posting, 0).unwrap()
    }

    #[test]
    fn the_overlay_keeps_the_ledgers_rules_in_memory() {
        let mut overlay = Overlay::new(None, HashMap::from([("ann".to_owned(), 10)]));
        assert!(matches!(apply(&mut overlay, "e1", 5), Applied::Fresh(_)));
        let Applied::Fresh(refused) = apply(&mut overlay, "e2", -20) else { panic!() };
        assert!(!refused.actions_executed[0].success, "a deduction the balance cannot cover is refused");
        assert!(matches!(apply(&mut overlay, "e1", 5), Applied::Replayed(_)));
        assert!(matches!(apply(&mut overlay, "e3", -15), Applied::Fresh(_)));
        assert_eq!(overlay.balance_of("ann", 0).unwrap(), 0);
        let moved: Vec<i64> = overlay.take_moved().iter().map(|m| m.points).collect();
        assert_eq!(moved, [5, -15], "the refused deduction and the replay moved nothing");
    }
}
