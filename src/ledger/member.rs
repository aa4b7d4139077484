//! The member's state before an event, read inside the transaction that writes the event's
//! effects: what member functions see ([`crate::facts::MemberState`]). The store's member lock
//! (PostgreSQL) or its single writer (SQLite) keeps it unchanged until the commit, so 20
//! concurrent first purchases of one member see "first" once.

use std::cell::{Cell, RefCell};
use std::sync::Arc;

use super::tx::{Book, LedgerTx};
use super::{LedgerError, Planned, lots};
use crate::expr::ast::{Path, Segment};
use crate::expr::eval::{Val, resolve_json};
use crate::facts::MemberState;
use crate::rules::loyalty::{Programme, Tier};

/// Plans an event given its actor's state, `None` for an event without an actor (called again
/// when a store posts a group again).
pub type Replan = Box<dyn Fn(Option<&dyn MemberState>) -> Planned + Send + Sync>;

/// An event whose rules read the member's state: planned inside the transaction.
pub struct Deferred {
    /// Plans it.
    pub replan: Replan,
    /// The campaign budgets its scenarios may spend (PostgreSQL locks them first).
    pub budgets: Vec<String>,
    /// The programme its rules were loaded with (tiers).
    pub programme: Arc<Programme>,
}

impl std::fmt::Debug for Deferred {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deferred").field("budgets", &self.budgets).finish_non_exhaustive()
    }
}

/// A payload number that `sum()` adds up over a member's events of a type: a store may keep
/// counters of it, as of counts. Ordered and compared by type and the path as written.
#[derive(Debug, Clone)]
pub struct SumKey {
    /// The event type, lower-cased.
    pub event_type: String,
    /// The path, as written (`payload.total`): the key stores keep.
    pub key: String,
    /// The path.
    pub path: Path,
}

impl SumKey {
    /// The key of `sum(event_type, path, …)`.
    pub fn new(event_type: &str, path: &Path) -> SumKey {
        SumKey { event_type: event_type.to_owned(), key: path.to_string(), path: path.clone() }
    }

    /// The number it adds up of one stored payload (JSON text); `None` when absent or not a
    /// number (sums skip those).
    pub fn number_in(&self, payload: &str) -> Option<f64> {
        number_at(payload, &self.path)
    }

    /// The path as an SQL/JSON path in strict mode over the payload, for a store that reads it
    /// in SQL (PostgreSQL's `jsonb_path_query_first`): strict, so that a key of an array or an
    /// index of an object finds nothing, as [`resolve_json`] has it. `None` for a path outside
    /// the payload.
    ///
    /// ```
    /// use fluxflow::expr::{ast::Expr, parser::parse};
    /// use fluxflow::ledger::member::SumKey;
    /// let Ok(Expr::Path(path, _)) = parse(r#"payload.items[2]["a \"b\""]"#) else { unreachable!() };
    /// assert_eq!(SumKey::new("buy", &path).json_path().as_deref(), Some(r#"strict $."items"[2]."a \"b\"""#));
    /// ```
    pub fn json_path(&self) -> Option<String> {
        let Path::Payload(segments) = &self.path else { return None };
        let mut text = String::from("strict $");
        for segment in segments {
            match segment {
                Segment::Key(key) => {
                    text.push('.');
                    // A JSON string literal: the escapes SQL/JSON paths read.
                    text.push_str(&serde_json::Value::from(key.as_str()).to_string());
                }
                Segment::Index(index) => text.push_str(&format!("[{index}]")),
            }
        }
        Some(text)
    }
}

impl PartialEq for SumKey {
    fn eq(&self, other: &Self) -> bool {
        (&self.event_type, &self.key) == (&other.event_type, &other.key)
    }
}

impl Eq for SumKey {}

impl PartialOrd for SumKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for SumKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (&self.event_type, &self.key).cmp(&(&other.event_type, &other.key))
    }
}

/// The `day` of the counter of all of a member's events of a type.
pub(crate) const ALL_DAYS: i64 = i64::MIN;
/// A UTC day, in µs.
pub(crate) const MICROS_PER_DAY: i64 = 86_400 * 1_000_000;
/// An hour, in µs.
pub(crate) const MICROS_PER_HOUR: i64 = 3_600 * 1_000_000;
/// Hours in a UTC day: hour numbers of day `d` run from `d * HOURS_PER_DAY`.
pub(crate) const HOURS_PER_DAY: i64 = MICROS_PER_DAY / MICROS_PER_HOUR;

/// True for a window that holds all time (`first()`, a `lifetime` period): the member's total
/// answers it.
pub(crate) fn all_time(from: i64, to: i64) -> bool {
    from <= jiff::Timestamp::MIN.as_microsecond() && to >= jiff::Timestamp::MAX.as_microsecond()
}

/// What a count or sum of a member's events before a time reads from running counters (SQLite's
/// member counts; its sums read only the days of the time's month): the days before its day,
/// the hours of its day up to `hours_before`, less the events in `[after.0, after.1)` from the
/// index. Mid-hour, the hours run through its own hour
/// and the index is read over the rest of that hour, after the time: for a time that is now (a
/// window's end) no event is there yet, where the part of the hour before it may hold many.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CountEnd {
    /// Its UTC day: the running total of the last day before it is read.
    pub(crate) day: i64,
    /// The first hour of that day.
    pub(crate) day_hour: i64,
    /// The hours of its day before this one are read (the last one's running total).
    pub(crate) hours_before: i64,
    /// The events taken off again, read from the index (µs; empty on an hour's start).
    pub(crate) after: (i64, i64),
}

impl CountEnd {
    /// What a count before `at` (µs) reads.
    pub(crate) fn of(at: i64) -> CountEnd {
        let (day, hour) = (at.div_euclid(MICROS_PER_DAY), at.div_euclid(MICROS_PER_HOUR));
        let day_hour = day * HOURS_PER_DAY;
        if at == hour * MICROS_PER_HOUR {
            return CountEnd { day, day_hour, hours_before: hour, after: (at, at) };
        }
        CountEnd { day, day_hour, hours_before: hour + 1, after: (at, (hour + 1) * MICROS_PER_HOUR) }
    }
}

/// The UTC month holding a day (days since the epoch): its first day and the next month's first,
/// as day numbers; `None` outside the calendar's range.
pub(crate) fn utc_month(day: i64) -> Option<(i64, i64)> {
    let epoch = jiff::civil::date(1970, 1, 1);
    let first = epoch.checked_add(jiff::Span::new().try_days(day).ok()?).ok()?.first_of_month();
    let next = first.checked_add(jiff::Span::new().months(1)).ok()?;
    let number = |date: jiff::civil::Date| date.since(epoch).ok().map(|span| i64::from(span.get_days()));
    Some((number(first)?, number(next)?))
}

/// A window `[from, to)` (µs) cut into what per-day and per-hour counters hold (PostgreSQL's
/// counts and sums): whole UTC days, the hours at either end and the partial hours at the very
/// ends (read from the index). Each end is read the shorter way: the hours inside the window,
/// or its whole day less the hours outside it (`head_sign`/`tail_sign` −1), so a rolling window
/// ending now reads its last day as one counter and the empty hours after now. Empty parts are
/// empty ranges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CounterWindow {
    /// Whole UTC days (day numbers).
    pub(crate) days: (i64, i64),
    /// The hours at the start (hour numbers), added or subtracted by `head_sign`.
    pub(crate) head_hours: (i64, i64),
    /// The hours at the end, by `tail_sign`.
    pub(crate) tail_hours: (i64, i64),
    /// The partial hour at the start (µs), by `head_sign`.
    pub(crate) head: (i64, i64),
    /// The partial hour at the end (µs), by `tail_sign`.
    pub(crate) tail: (i64, i64),
    /// 1 when the head parts are inside the window, −1 when they are the part of its first
    /// day before it.
    pub(crate) head_sign: i64,
    /// 1 when the tail parts are inside the window, −1 when they are the part of its last day
    /// after it.
    pub(crate) tail_sign: i64,
}

impl CounterWindow {
    /// The parts of `[from, to)`.
    pub(crate) fn of(from: i64, to: i64) -> CounterWindow {
        let ceil = |t: i64, unit: i64| t.saturating_add(unit - 1).div_euclid(unit);
        let nothing = (0, 0);
        let (first_hour, end_hour) = (ceil(from, MICROS_PER_HOUR), to.div_euclid(MICROS_PER_HOUR));
        let inside = CounterWindow {
            days: nothing,
            head_hours: nothing,
            tail_hours: nothing,
            head: (from, to),
            tail: nothing,
            head_sign: 1,
            tail_sign: 1,
        };
        if first_hour >= end_hour {
            return inside;
        }
        let head = (from, first_hour * MICROS_PER_HOUR);
        let tail = (end_hour * MICROS_PER_HOUR, to);
        let (first_day, end_day) = (ceil(from, MICROS_PER_DAY), to.div_euclid(MICROS_PER_DAY));
        if first_day >= end_day {
            return CounterWindow { head_hours: (first_hour, end_hour), head, tail, ..inside };
        }
        let mut window = CounterWindow {
            days: (first_day, end_day),
            head_hours: (first_hour, first_day * HOURS_PER_DAY),
            tail_hours: (end_day * HOURS_PER_DAY, end_hour),
            head,
            tail,
            ..inside
        };
        // The start's day less its hours before `from`, when fewer hours are read that way.
        let from_hour = from.div_euclid(MICROS_PER_HOUR);
        let head_day = first_day - 1;
        if from_hour - head_day * HOURS_PER_DAY < first_day * HOURS_PER_DAY - first_hour {
            window.days.0 = head_day;
            window.head_hours = (head_day * HOURS_PER_DAY, from_hour);
            window.head = (from_hour * MICROS_PER_HOUR, from);
            window.head_sign = -1;
        }
        // The end's day less its hours from `to` on (usually none yet), unless that reads more.
        let after_day = (end_day + 1) * HOURS_PER_DAY;
        let to_hour = ceil(to, MICROS_PER_HOUR);
        if after_day - to_hour <= end_hour - end_day * HOURS_PER_DAY {
            window.days.1 = end_day + 1;
            window.tail_hours = (to_hour, after_day);
            window.tail = (to, to_hour * MICROS_PER_HOUR);
            window.tail_sign = -1;
        }
        window
    }
}

/// A member's state read through a transaction; the first storage failure is kept and ends the
/// event (its facts are never decided on a guess).
pub struct MemberReader<'t, T: LedgerTx + ?Sized> {
    tx: RefCell<&'t mut T>,
    actor_id: &'t str,
    /// The event time (µs since the epoch).
    at: i64,
    /// The member's book, brought up to the event time.
    book: Book,
    programme: &'t Programme,
    /// The tier, once read: `Some(None)` for no tier.
    tier: Cell<Option<Option<&'t Tier>>>,
    failure: RefCell<Option<LedgerError>>,
}

impl<'t, T: LedgerTx + ?Sized> MemberReader<'t, T> {
    /// A reader of `actor_id`'s state before an event at `at` (µs since the epoch): its lots
    /// are first brought up to then (debt paid, expired points written off), as they would be
    /// before any write.
    pub fn new(
        tx: &'t mut T,
        actor_id: &'t str,
        at: i64,
        now: i64,
        programme: &'t Programme,
    ) -> Result<Self, LedgerError> {
        let book = lots::bring_up_to(tx, actor_id, at, now)?;
        Ok(MemberReader {
            tx: RefCell::new(tx),
            actor_id,
            at,
            book,
            programme,
            tier: Cell::new(None),
            failure: RefCell::new(None),
        })
    }

    /// Ends the reads: the first failure, if any.
    pub fn finish(self) -> Result<(), LedgerError> {
        self.failure.into_inner().map_or(Ok(()), Err)
    }

    fn read<R>(&self, f: impl FnOnce(&mut T, &str) -> Result<R, LedgerError>) -> Option<R> {
        if self.failure.borrow().is_some() {
            return None;
        }
        let Ok(mut tx) = self.tx.try_borrow_mut() else { return None };
        match f(&mut tx, self.actor_id) {
            Ok(value) => Some(value),
            Err(e) => {
                *self.failure.borrow_mut() = Some(e);
                None
            }
        }
    }
}

impl<T: LedgerTx + ?Sized> MemberState for MemberReader<'_, T> {
    fn count(&self, event_type: &str, from: i64, to: i64) -> Option<u64> {
        self.read(|tx, actor| tx.member_count(actor, event_type, from, to))
    }

    fn sum(&self, event_type: &str, path: &Path, from: i64, to: i64) -> Option<f64> {
        // A store that keeps counters of this sum answers from them; otherwise the payloads are
        // read and added up.
        let key = SumKey::new(event_type, path);
        if let Some(total) = self.read(|tx, actor| tx.member_sum(actor, &key, from, to))? {
            return Some(total);
        }
        let payloads = self.read(|tx, actor| tx.member_payloads(actor, event_type, from, to))?;
        Some(payloads.iter().filter_map(|payload| number_at(payload, path)).sum())
    }

    fn times(&self, event_type: &str, before: i64, limit: usize) -> Option<Vec<i64>> {
        self.read(|tx, actor| tx.member_times(actor, event_type, before, limit))
    }

    fn balance(&self) -> Option<i64> {
        let (book, at) = (self.book, self.at);
        self.read(|tx, actor| lots::spendable(tx, actor, book, at))
    }

    fn pending(&self) -> Option<i64> {
        let at = self.at;
        self.read(|tx, actor| tx.pending_points(actor, at))
    }

    fn tier(&self) -> Option<Option<&str>> {
        Some(self.tier_of()?.map(|t| t.id.as_str()))
    }

    fn tier_multiplier(&self) -> Option<f64> {
        Some(self.tier_of()?.map_or(1.0, |t| t.multiplier))
    }
}

impl<'t, T: LedgerTx + ?Sized> MemberReader<'t, T> {
    /// The member's tier at the event time, read once (no tiers: none, without reading).
    fn tier_of(&self) -> Option<Option<&'t Tier>> {
        if let Some(tier) = self.tier.get() {
            return Some(tier);
        }
        let programme = self.programme;
        let tier = match programme.tier_window(self.at) {
            Some((from, to)) => programme.tier_for(self.read(|tx, actor| tx.tier_points(actor, from, to))?),
            None => None,
        };
        self.tier.set(Some(tier));
        Some(tier)
    }
}

/// The number at a path of a stored payload; `None` when it is absent or not a number (sums
/// skip non-numbers).
fn number_at(payload: &str, path: &Path) -> Option<f64> {
    let value = serde_json::from_str::<serde_json::Value>(payload).ok()?;
    match resolve_json(path, &value) {
        Some(Val::Num(n)) => Some(n),
        _ => None,
    }
}
