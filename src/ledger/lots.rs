//! Points as lots: what becomes spendable when, what expires when, and in which order points are
//! spent, taken back or owed — written once for every store over [`LedgerTx`].
//!
//! An award with pending days or an expiry is a lot: its points are *pending* until
//! `available_at`, spendable until `expires_at`. Points spendable at once that never expire need
//! no lot: they are the member's *plain* points (the rest of its balance), so the common award
//! writes one entry and nothing more. Spending takes the soonest-expiring lots first,
//! never-expiring ones last (oldest first), then plain points. A reversal that cannot be
//! collected may leave a *debt* that later awards pay first, when they become available.
//!
//! Before any write for a member, [`bring_up_to`] pays its debt from lots that became available
//! and writes off what expired (an `expire` entry dated at the lot's expiry), so its history
//! explains every change; the sweep does the same for members that nobody writes to. Reads
//! ([`view`]) compute the same figures at any time without writing.

use super::tx::{Book, LedgerTx, Lot, NewEntry, NewLot};
use super::{EntryKind, LedgerError};

/// Microseconds in a day: pending and expiry days are whole 24-hour days of event time.
pub const MICROS_PER_DAY: i64 = 86_400 * 1_000_000;

/// Open lots read at once; more are read only when these do not cover a spending.
const FIRST_READ: usize = 32;

/// When awarded points become spendable and expire, in whole days (0: at once, never).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Terms {
    /// Days before the points can be spent.
    pub pending_days: u32,
    /// Days after that before unspent points expire; 0 = never.
    pub expiry_days: u32,
}

impl Terms {
    /// `available_at` and `expires_at` of points dated `at` (µs since the epoch).
    pub fn dates(self, at: i64) -> (i64, Option<i64>) {
        let available_at = at.saturating_add(i64::from(self.pending_days) * MICROS_PER_DAY);
        let expires_at =
            (self.expiry_days > 0).then(|| available_at.saturating_add(i64::from(self.expiry_days) * MICROS_PER_DAY));
        (available_at, expires_at)
    }
}

/// Adds granted points (an award, an adjustment, a redemption given back) to a member whose
/// book is `book`, dated `at`; the entry is the caller's. Points available at once pay the
/// member's debt first and the lot keeps the rest; pending points pay it when they become
/// available ([`bring_up_to`]). Points spendable at once that never expire need no lot.
pub fn grant<T: LedgerTx + ?Sized>(tx: &mut T, book: Book, lot: NewLot<'_>, at: i64) -> Result<(), LedgerError> {
    let mut points = lot.points;
    if lot.available_at <= at && book.debt > 0 {
        let paid = book.debt.min(points);
        tx.set_debt(lot.actor_id, book.debt - paid)?;
        points -= paid;
    }
    if points == 0 || (lot.available_at <= at && lot.expires_at.is_none()) {
        return Ok(());
    }
    tx.add_lot(&NewLot { points, ..lot })?;
    match lot.expires_at {
        Some(expires_at) if book.next_expiry.is_none_or(|next| expires_at < next) => {
            tx.lower_next_expiry(lot.actor_id, expires_at)
        }
        _ => Ok(()),
    }
}

/// Brings a member's lots up to `at` (µs since the epoch) before a write: its debt is paid from
/// lots available by then (in spending order) and the unspent points of lots expired by then are
/// written off, each with an `expire` entry dated at its expiry that names the lot's award.
/// Answers the member's book after.
pub fn bring_up_to<T: LedgerTx + ?Sized>(tx: &mut T, actor_id: &str, at: i64, now: i64) -> Result<Book, LedgerError> {
    let book = tx.book(actor_id)?;
    let due = book.next_expiry.is_some_and(|e| e <= at);
    if book.debt <= 0 && !due {
        return Ok(book);
    }
    let mut lots = tx.open_lots(actor_id, usize::MAX)?;
    let mut debt = book.debt;
    let mut taken = settle(&mut lots, &mut debt, at);
    for (lot, expired) in expire(&mut lots, at) {
        tx.append(&expire_entry(actor_id, lot, expired, now))?;
        taken.push((lot.lot_id, expired));
    }
    if debt != book.debt {
        tx.set_debt(actor_id, debt)?;
    }
    if !taken.is_empty() {
        tx.take_from_lots(actor_id, &taken)?;
    }
    tx.book(actor_id)
}

fn expire_entry<'a>(actor_id: &'a str, lot: &'a Lot, expired: i64, now: i64) -> NewEntry<'a> {
    let expires_at = lot.expires_at.unwrap_or(now);
    NewEntry {
        actor_id,
        event_id: &lot.source_id,
        action_id: "",
        scenario_id: "",
        points: -expired,
        kind: EntryKind::Expire,
        reason: None,
        created_at: now,
        dated_at: expires_at,
        available_at: None,
        expires_at: Some(expires_at),
        reverses: None,
    }
}

/// Pays `debt` from the lots available at `at`, in spending order; answers what it took from
/// each (lot id, points).
fn settle(lots: &mut [Lot], debt: &mut i64, at: i64) -> Vec<(i64, i64)> {
    let mut taken = Vec::new();
    for lot in lots.iter_mut().filter(|l| l.available_at <= at && l.remaining > 0) {
        if *debt <= 0 {
            break;
        }
        let paid = lot.remaining.min(*debt);
        lot.remaining -= paid;
        *debt -= paid;
        taken.push((lot.lot_id, paid));
    }
    taken
}

/// Empties the lots expired by `at`; answers each with the points it loses.
fn expire(lots: &mut [Lot], at: i64) -> Vec<(&Lot, i64)> {
    let mut expired = Vec::new();
    for lot in lots.iter_mut().filter(|l| l.remaining > 0 && l.expires_at.is_some_and(|e| e <= at)) {
        let points = std::mem::take(&mut lot.remaining);
        expired.push((&*lot, points));
    }
    expired
}

/// What a member can spend at `at`, once [`bring_up_to`] has run: the balance less pending
/// points.
pub fn spendable<T: LedgerTx + ?Sized>(tx: &mut T, actor_id: &str, book: Book, at: i64) -> Result<i64, LedgerError> {
    Ok(book.balance - tx.pending_points(actor_id, at)?)
}

/// Takes `points` spendable at `at` (the caller has checked [`spendable`] covers them) from a
/// member's lots in spending order, the rest from its plain points; the entry is the caller's.
/// Answers what it took from each lot (lot id, points).
pub fn take<T: LedgerTx + ?Sized>(
    tx: &mut T,
    actor_id: &str,
    points: i64,
    at: i64,
) -> Result<Vec<(i64, i64)>, LedgerError> {
    let mut limit = FIRST_READ;
    loop {
        let lots = tx.open_lots(actor_id, limit)?;
        let read_all = lots.len() < limit;
        let mut left = points;
        let mut taken = Vec::new();
        for lot in lots.iter().filter(|l| l.available_at <= at) {
            if left == 0 {
                break;
            }
            let part = lot.remaining.min(left);
            left -= part;
            taken.push((lot.lot_id, part));
        }
        if left == 0 || read_all {
            if !taken.is_empty() {
                tx.take_from_lots(actor_id, &taken)?;
            }
            return Ok(taken);
        }
        limit = limit.saturating_mul(8);
    }
}

/// Takes up to `points` from the open lots granted by one event (a reversal takes the
/// original's own first, pending ones included); answers the points taken and how many of them
/// were spendable at `at`.
pub fn take_from_source<T: LedgerTx + ?Sized>(
    tx: &mut T,
    actor_id: &str,
    source_id: &str,
    points: i64,
    at: i64,
) -> Result<(i64, i64), LedgerError> {
    let (mut taken, mut spendable) = (Vec::new(), 0);
    let mut left = points;
    for lot in tx.open_lots(actor_id, usize::MAX)?.iter().filter(|l| l.source_id == source_id) {
        if left == 0 {
            break;
        }
        let part = lot.remaining.min(left);
        left -= part;
        taken.push((lot.lot_id, part));
        if lot.available_at <= at {
            spendable += part;
        }
    }
    if !taken.is_empty() {
        tx.take_from_lots(actor_id, &taken)?;
    }
    Ok((points - left, spendable))
}

/// Gives a redemption's points back to the lots it took them from; answers how many went back
/// to lots (the rest were plain points).
pub fn give_back<T: LedgerTx + ?Sized>(tx: &mut T, actor_id: &str, source_id: &str) -> Result<i64, LedgerError> {
    let spent = tx.spent_by(actor_id, source_id)?;
    if spent.is_empty() {
        return Ok(0);
    }
    let returned: Vec<(i64, i64)> = spent.iter().map(|&(lot_id, points)| (lot_id, -points)).collect();
    tx.take_from_lots(actor_id, &returned)?;
    Ok(spent.iter().map(|(_, points)| points).sum())
}

/// What a store keeps of a member's points, read for a view.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PointsState {
    /// The sum of its entries dated at or before the time asked.
    pub entries_sum: i64,
    /// Its book now.
    pub book: Book,
    /// Its open lots.
    pub lots: Vec<Lot>,
}

/// A member's points and tier as of `at` (µs since the epoch), as the read API answers them.
pub fn member_points(
    store: &dyn super::LedgerStore,
    actor_id: &str,
    at: i64,
    programme: &crate::rules::loyalty::Programme,
) -> Result<(PointsView, Option<String>), LedgerError> {
    let state = store.points_state(actor_id, at)?;
    let view = view(state.entries_sum, state.book.debt, state.lots, at);
    let tier = match programme.tier_window(at) {
        Some((from, to)) => programme.tier_for(store.tier_points(actor_id, from, to)?).map(|t| t.id.clone()),
        None => None,
    };
    Ok((view, tier))
}

/// A member's points as of a time, computed without writing.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct PointsView {
    /// Spendable points (below zero while the member owes points).
    pub balance: i64,
    /// Points awarded but not spendable yet.
    pub pending: i64,
    /// Points that will expire, soonest first (at most [`MAX_EXPIRING`]).
    pub expiring: Vec<Expiring>,
}

/// Points of one lot that will expire.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Expiring {
    /// Its unspent points.
    pub points: i64,
    /// When they expire (RFC 3339).
    pub expires_at: String,
}

/// Most lots listed in [`PointsView::expiring`].
pub const MAX_EXPIRING: usize = 100;

/// A member's points at `at` (µs since the epoch), from the sum of its entries dated at or
/// before then, its debt and its open lots: pending lots are not spendable, and lots expired by
/// then are gone whether or not their `expire` entry is written yet.
/// `lots` are the open lots in spending order, as [`LedgerTx::open_lots`] reads them (so the
/// expiring ones come soonest first).
pub fn view(entries_sum: i64, mut debt: i64, mut lots: Vec<Lot>, at: i64) -> PointsView {
    settle(&mut lots, &mut debt, at);
    let unswept: i64 = expire(&mut lots, at).iter().map(|(_, points)| points).sum();
    let open = lots.iter().filter(|l| l.remaining > 0);
    let pending: i64 = open.clone().filter(|l| l.available_at > at).map(|l| l.remaining).sum();
    let expiring = open
        .filter_map(|l| l.expires_at.map(|e| Expiring { points: l.remaining, expires_at: super::rfc3339(e) }))
        .take(MAX_EXPIRING)
        .collect();
    PointsView { balance: entries_sum - pending - unswept, pending, expiring }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lot(lot_id: i64, remaining: i64, available_at: i64, expires_at: Option<i64>) -> Lot {
        Lot { lot_id, source_id: format!("e{lot_id}"), remaining, available_at, expires_at }
    }

    #[test]
    fn a_view_counts_pending_and_unswept_expired_points_out_of_the_balance() {
        let lots = vec![lot(1, 10, 0, Some(100)), lot(2, 20, 50, Some(200)), lot(3, 5, 0, None)];
        // 100 points of entries: 35 in lots, 65 plain.
        assert_eq!(view(100, 0, lots.clone(), 10).balance, 80, "lot 2 is pending at 10");
        assert_eq!(view(100, 0, lots.clone(), 60).balance, 100);
        let later = view(100, 0, lots, 150);
        assert_eq!((later.balance, later.pending), (90, 0), "lot 1 expired at 100, unswept");
        assert_eq!(later.expiring.len(), 1);
    }

    #[test]
    fn a_debt_is_paid_by_lots_as_they_become_available_before_they_expire() {
        // -30 of entries: 40 pending, 70 reversed of which 70 were owed.
        let lots = vec![lot(1, 40, 50, Some(100))];
        let before = view(-30, 70, lots.clone(), 10);
        assert_eq!((before.balance, before.pending), (-70, 40));
        let available = view(-30, 70, lots.clone(), 60);
        assert_eq!((available.balance, available.expiring.len()), (-30, 0), "the whole lot paid the debt");
        assert_eq!(view(-30, 70, lots, 150).balance, -30, "nothing was left to expire");
    }
}
