//! Limits: how much a scenario may still do for one event, from what it did before in each
//! limit's period. Like stacking, this is decided where outcomes are applied: a ledger reads the
//! use so far inside the transaction that writes the award (so a cap holds under any
//! concurrency); without a ledger no earlier use is seen, and only the event itself counts.
//!
//! Where use is counted: a `per: actor` limit reads the member's uses of the scenario whose event
//! time lies in the period (any period, rolling windows too); a `per: scenario` limit reads one
//! counter per calendar period (or one for all time), so a campaign budget costs one row read
//! however many members spent it.
//!
//! ```
//! use fluxflow::actions::{Outcome, Plan, PointsChange};
//! use fluxflow::graph::limits::{Room, Usage};
//! use fluxflow::rules::loyalty::{Limit, LimitCap, LimitScope};
//! use fluxflow::calendar::Period;
//!
//! let budget = Limit { per: LimitScope::Scenario, cap: LimitCap::Points(1000), period: Period::Lifetime };
//! let mut room = Room::new([(budget, Usage { times: 33, points: 990 })]);
//! let award = |amount| Ok::<_, ()>(Outcome::Done(Plan::Points(PointsChange::of(amount))));
//! // 30 points asked, 10 remain: the award is cut to 10, then nothing is left.
//! let cut = room.points(30, award).unwrap();
//! assert_eq!((cut.points(), cut.success()), (Some(10), true));
//! let refused = room.points(30, award).unwrap();
//! assert_eq!(refused.code(), Some("limit_reached"));
//! ```

use std::sync::Arc;

use jiff::Timestamp;

use crate::actions::{Outcome, Plan};
use crate::calendar::{Period, Zone};
use crate::rules::loyalty::{Limit, LimitCap, LimitScope};

/// What a scenario did in a period: how many times it acted and the points it awarded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Events for which at least one of its actions succeeded.
    pub times: u64,
    /// Points its awards moved (deductions do not count).
    pub points: u64,
}

impl Usage {
    /// The sum of two counts.
    pub fn plus(self, other: Usage) -> Usage {
        Usage { times: self.times.saturating_add(other.times), points: self.points.saturating_add(other.points) }
    }
}

/// A scenario's limits, as the ledger applies them to an event.
#[derive(Debug, Clone)]
pub struct ScenarioLimits {
    /// The scenario's index in the compiled rules.
    pub scenario: u32,
    /// Its id: uses are stored under it, so they survive a reload that reorders scenarios.
    pub scenario_id: String,
    /// Every limit; all must hold.
    pub limits: Arc<[Limit]>,
    /// The programme's zone: calendar periods are its days, weeks, months and years.
    pub zone: Zone,
}

impl ScenarioLimits {
    /// True when a limit counts each member's use.
    pub fn per_actor(&self) -> bool {
        self.limits.iter().any(|l| l.per == LimitScope::Actor)
    }

    /// True when a limit counts everyone's use (a campaign budget).
    pub fn has_budget(&self) -> bool {
        self.limits.iter().any(|l| l.per == LimitScope::Scenario)
    }

    /// Where each limit's use is read, for an event of `actor` at `at`; a `per: actor` limit
    /// has nothing to count for an event without an actor, and is left out.
    pub fn counters<'a>(
        &'a self,
        actor: Option<&'a str>,
        at: Timestamp,
    ) -> impl Iterator<Item = (Limit, Counter<'a>)> + 'a {
        self.limits.iter().filter_map(move |&limit| {
            let counter = match limit.per {
                LimitScope::Actor => {
                    let (from, to) = limit.period.bounds(at, &self.zone);
                    Counter::Actor(ActorWindow {
                        scenario_id: &self.scenario_id,
                        actor_id: actor?,
                        from: from.as_microsecond(),
                        to: to.as_microsecond(),
                    })
                }
                LimitScope::Scenario => Counter::Budget(self.budget(limit.period, at)),
            };
            Some((limit, counter))
        })
    }

    /// The budget counters an event at `at` adds to, one per `per: scenario` limit.
    pub fn budgets(&self, at: Timestamp) -> impl Iterator<Item = BudgetKey<'_>> + '_ {
        self.limits.iter().filter(|l| l.per == LimitScope::Scenario).map(move |l| self.budget(l.period, at))
    }

    fn budget(&self, period: Period, at: Timestamp) -> BudgetKey<'_> {
        let start = match period {
            Period::Lifetime => 0,
            calendar => calendar.bounds(at, &self.zone).0.as_microsecond(),
        };
        BudgetKey { scenario_id: &self.scenario_id, period, start }
    }
}

/// Where one limit's use is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter<'a> {
    /// One member's uses with an event time in a window.
    Actor(ActorWindow<'a>),
    /// Everyone's use in one calendar period, or in all time.
    Budget(BudgetKey<'a>),
}

/// One member's uses of a scenario with an event time in `[from, to)` (µs since the epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActorWindow<'a> {
    /// The scenario.
    pub scenario_id: &'a str,
    /// The member.
    pub actor_id: &'a str,
    /// Start, inclusive.
    pub from: i64,
    /// End, exclusive.
    pub to: i64,
}

/// The counter of a campaign budget: a scenario's use by everyone in one calendar period of the
/// programme's zone (by the period's first instant), or in all time (start 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetKey<'a> {
    /// The scenario.
    pub scenario_id: &'a str,
    /// `day`, `week`, `month`, `year` or `lifetime`.
    pub period: Period,
    /// The period's first instant (µs since the epoch); 0 for `lifetime`.
    pub start: i64,
}

/// What a scenario may still do for one event: refused outright (a `times` limit is reached),
/// or awards capped by what the tightest `points` limit leaves.
#[derive(Debug, Clone, Copy, Default)]
pub struct Room {
    refused: Option<Limit>,
    /// Points that may still be awarded, and the limit that leaves the fewest.
    points_left: Option<(u64, Limit)>,
}

impl Room {
    /// The room that limits leave given each one's use so far.
    pub fn new(used: impl IntoIterator<Item = (Limit, Usage)>) -> Room {
        let mut room = Room::default();
        for (limit, usage) in used {
            room.count(limit, usage);
        }
        room
    }

    /// Narrows the room by one more limit and its use so far.
    pub fn count(&mut self, limit: Limit, usage: Usage) {
        match limit.cap {
            LimitCap::Times(cap) if usage.times >= cap => self.refused = self.refused.or(Some(limit)),
            LimitCap::Times(_) => {}
            LimitCap::Points(cap) => {
                let left = cap.saturating_sub(usage.points);
                if self.points_left.is_none_or(|(fewest, _)| left < fewest) {
                    self.points_left = Some((left, limit));
                }
            }
        }
    }

    /// An action whose outcome is known without the ledger (a failed plan, or one that moves no
    /// points): a failure stays as it is; a success is refused past a `times` limit.
    pub fn decided(&self, outcome: Outcome) -> Outcome {
        match self.refused {
            Some(limit) if outcome.success() => Outcome::LimitReached(limit),
            _ => outcome,
        }
    }

    /// An action that only takes points back (a reversal): `apply` carries it out unless a
    /// `times` limit refuses the scenario; it is never cut.
    pub fn taking<E>(&self, apply: impl FnOnce() -> Result<Outcome, E>) -> Result<Outcome, E> {
        match self.refused {
            Some(limit) => Ok(Outcome::LimitReached(limit)),
            None => apply(),
        }
    }

    /// A points change of `amount` (signed): `apply` carries it out with the amount given (an
    /// award may be cut) and answers its outcome. A refused change is not applied at all; a
    /// deduction is never cut.
    pub fn points<E>(&mut self, amount: i64, apply: impl FnOnce(i64) -> Result<Outcome, E>) -> Result<Outcome, E> {
        if let Some(limit) = self.refused {
            return Ok(Outcome::LimitReached(limit));
        }
        let Some((left, limit)) = self.points_left.filter(|_| amount > 0) else { return apply(amount) };
        if left == 0 {
            return Ok(Outcome::LimitReached(limit));
        }
        let granted = amount.min(i64::try_from(left).unwrap_or(i64::MAX));
        let outcome = apply(granted)?;
        if let Some(moved) = outcome.points() {
            self.points_left = Some((left.saturating_sub(moved.unsigned_abs()), limit));
        }
        Ok(match outcome {
            Outcome::Done(Plan::Points(change)) if granted < amount => Outcome::Capped { change, limit },
            other => other,
        })
    }
}

/// What a scenario's successful outcomes add to its use: one time, and the points awarded.
pub fn used_by(outcomes: &[Option<Outcome>]) -> Option<Usage> {
    let done = || outcomes.iter().flatten().filter(|o| o.success());
    let points = done().filter_map(Outcome::points).filter(|p| *p > 0).map(i64::unsigned_abs).sum();
    done().next().map(|_| Usage { times: 1, points })
}

impl Limit {
    /// The limit in words, for messages and traces: `at most 1 time per member a day`.
    pub fn describe(&self) -> String {
        let what = match self.cap {
            LimitCap::Times(1) => "1 time".to_owned(),
            LimitCap::Times(n) => format!("{n} times"),
            LimitCap::Points(1) => "1 point".to_owned(),
            LimitCap::Points(n) => format!("{n} points"),
        };
        let whose = match self.per {
            LimitScope::Actor => " per member",
            LimitScope::Scenario => " for everyone",
        };
        let when = match self.period {
            Period::Day => " a day".to_owned(),
            Period::Week => " a week".to_owned(),
            Period::Month => " a month".to_owned(),
            Period::Year => " a year".to_owned(),
            Period::Lifetime => String::new(),
            rolling => format!(" in any {rolling}"),
        };
        format!("at most {what}{whose}{when}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::PointsChange;

    fn limit(per: LimitScope, cap: LimitCap, period: Period) -> Limit {
        Limit { per, cap, period }
    }

    fn apply(amount: i64) -> Result<Outcome, ()> {
        Ok(Outcome::Done(Plan::Points(PointsChange::of(amount))))
    }

    #[test]
    fn a_times_limit_refuses_every_action_but_keeps_failures() {
        let daily = limit(LimitScope::Actor, LimitCap::Times(1), Period::Day);
        let mut room = Room::new([(daily, Usage { times: 1, points: 40 })]);
        assert_eq!(room.points(10, apply), Ok(Outcome::LimitReached(daily)));
        assert_eq!(room.points(-10, apply), Ok(Outcome::LimitReached(daily)));
        let no_actor = Outcome::Failed(crate::actions::Failure::NoActor);
        assert_eq!(room.decided(no_actor), no_actor);
        let mut fresh = Room::new([(daily, Usage::default())]);
        assert_eq!(fresh.points(10, apply), apply(10));
    }

    #[test]
    fn the_tightest_points_limit_cuts_awards_and_never_deductions() {
        let month = limit(LimitScope::Actor, LimitCap::Points(500), Period::Month);
        let budget = limit(LimitScope::Scenario, LimitCap::Points(1000), Period::Lifetime);
        let mut room = Room::new([(month, Usage { times: 3, points: 480 }), (budget, Usage::default())]);
        assert_eq!(room.points(-50, apply), apply(-50), "a deduction is never cut");
        let change = PointsChange::of(20);
        assert_eq!(room.points(30, apply), Ok(Outcome::Capped { change, limit: month }));
        assert_eq!(room.points(1, apply), Ok(Outcome::LimitReached(month)));
    }

    #[test]
    fn use_counts_one_time_and_the_points_awarded() {
        let award = apply(30).ok();
        let deduct = apply(-5).ok();
        assert_eq!(used_by(&[award, deduct, None]), Some(Usage { times: 1, points: 30 }));
        let refused = Some(Outcome::LimitReached(limit(LimitScope::Actor, LimitCap::Times(1), Period::Day)));
        assert_eq!(used_by(&[refused, None]), None);
    }

    #[test]
    fn limits_read_in_words() {
        let daily = limit(LimitScope::Actor, LimitCap::Times(1), Period::Day);
        assert_eq!(daily.describe(), "at most 1 time per member a day");
        let budget = limit(LimitScope::Scenario, LimitCap::Points(100_000), Period::Lifetime);
        assert_eq!(budget.describe(), "at most 100000 points for everyone");
        let rolling = limit(LimitScope::Actor, LimitCap::Times(3), Period::RollingHours(24));
        assert_eq!(rolling.describe(), "at most 3 times per member in any 24h");
    }
}
