//! The loyalty parts of a rules file: the `programme` block (time zone, points lifetime, pending
//! days, negative balances, how old an event may be) and a scenario's `schedule`, `priority`,
//! `exclusive_group` and `limits`. Read over the positioned YAML tree like the rest of the file,
//! every problem reported at its line and column.

use serde::Serialize;

use super::diagnostic::Diagnostics;
use super::schema::{Child, Fields, describe, read_string};
use super::yaml::{Node, NodeKind, Style};
use crate::calendar::{Bound, Days, Hours, Period, Schedule, Zone};

/// The keys allowed in `programme:`.
pub const PROGRAMME_KEYS: [&str; 7] =
    ["timezone", "expiry_days", "pending_days", "negative_balance", "max_event_age_days", "tiers", "tier_period"];

/// The keys allowed in a tier.
pub const TIER_KEYS: [&str; 3] = ["id", "min_points", "multiplier"];

/// Largest tier multiplier.
pub const MAX_MULTIPLIER: f64 = 100.0;

/// The keys allowed in a scenario's `schedule:`.
pub const SCHEDULE_KEYS: [&str; 5] = ["from", "until", "days", "hours", "timezone"];

/// The keys allowed in a limit.
pub const LIMIT_KEYS: [&str; 4] = ["per", "times", "points", "period"];

/// Largest number of days in `expiry_days`, `pending_days` and `max_event_age_days` (100 years).
pub const MAX_DAYS: u64 = 36_500;

/// Largest `priority`, either way.
pub const MAX_PRIORITY: i64 = 1_000_000;

/// Largest `times` or `points` of a limit.
pub const MAX_LIMIT: u64 = 1_000_000_000_000;

/// May a reversal take a balance below zero?
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NegativeBalance {
    /// Yes: a later award pays the debt first.
    #[default]
    Allow,
    /// No: what cannot be collected is left uncollected.
    Deny,
}

/// The `programme:` block, defaults filled in.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Programme {
    /// Calendar periods, schedules, `day_of_week()` and `hour()` use this zone.
    pub timezone: Zone,
    /// Default lifetime of awarded points; 0 = never expire.
    pub expiry_days: u32,
    /// Default days before awarded points can be spent; 0 = at once.
    pub pending_days: u32,
    /// Whether reversals may take a balance below zero.
    pub negative_balance: NegativeBalance,
    /// Events older than this many days are refused; 0 = no limit.
    pub max_event_age_days: u32,
    /// The tiers, lowest `min_points` first.
    pub tiers: Vec<Tier>,
    /// The period whose awarded points decide the tier (`365d` by default).
    #[serde(serialize_with = "period_text")]
    pub tier_period: Period,
}

fn period_text<S: serde::Serializer>(period: &Period, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&period.to_string())
}

impl Default for Programme {
    fn default() -> Self {
        Programme {
            timezone: Zone::utc(),
            expiry_days: 0,
            pending_days: 0,
            negative_balance: NegativeBalance::Allow,
            max_event_age_days: 0,
            tiers: Vec::new(),
            tier_period: Period::RollingDays(365),
        }
    }
}

/// A tier: members whose points awarded in the tier period reach `min_points` hold it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Tier {
    /// Its id, as `member.tier` reads it.
    pub id: String,
    /// Points awarded (less reversals) in the tier period that reach it.
    pub min_points: i64,
    /// What `reward_points` with `tier_multiplier: true` multiplies awards by.
    pub multiplier: f64,
}

impl Programme {
    /// The window `[from, to)` (µs since the epoch) whose awarded points decide the tier at
    /// `at`: the tier period ending then. `None` without tiers (nothing to read).
    pub fn tier_window(&self, at: i64) -> Option<(i64, i64)> {
        let when = jiff::Timestamp::from_microsecond(at).ok().filter(|_| !self.tiers.is_empty())?;
        let (from, _) = self.tier_period.bounds(when, &self.timezone);
        Some((from.as_microsecond(), at))
    }

    /// The tier that `points` awarded in the tier period reach, if any.
    pub fn tier_for(&self, points: i64) -> Option<&Tier> {
        self.tiers.iter().rev().find(|tier| points >= tier.min_points)
    }
}

/// Whose use a limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitScope {
    /// The event's actor.
    Actor,
    /// Everyone: a campaign budget.
    Scenario,
}

/// What a limit caps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitCap {
    /// How many times the scenario may act.
    Times(u64),
    /// How many points it may award.
    Points(u64),
}

/// One entry of a scenario's `limits`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// Whose use counts.
    pub per: LimitScope,
    /// What is capped.
    pub cap: LimitCap,
    /// The period the use is counted in (`lifetime` when not written).
    pub period: Period,
}

impl Serialize for Limit {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(3))?;
        map.serialize_entry("per", &self.per)?;
        match self.cap {
            LimitCap::Times(n) => map.serialize_entry("times", &n)?,
            LimitCap::Points(n) => map.serialize_entry("points", &n)?,
        }
        map.serialize_entry("period", &self.period.to_string())?;
        map.end()
    }
}

/// A scenario's schedule as `GET /v1/rules` shows it: the YAML's keys.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleDef(pub Schedule);

impl Serialize for ScheduleDef {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let s = &self.0;
        let mut map = serializer.serialize_map(None)?;
        if let Some(from) = &s.from {
            map.serialize_entry("from", &from.to_string())?;
        }
        if let Some(until) = &s.until {
            map.serialize_entry("until", &until.to_string())?;
        }
        if let Some(days) = s.days {
            map.serialize_entry("days", &days.names())?;
        }
        if let Some(hours) = &s.hours {
            map.serialize_entry("hours", &hours.to_string())?;
        }
        if let Some(zone) = &s.zone {
            map.serialize_entry("timezone", zone)?;
        }
        map.end()
    }
}

/// Reads `programme:`.
pub fn read_programme(node: &Node, diags: &mut Diagnostics) -> Programme {
    let mut programme = Programme::default();
    let Some(fields) = Fields::new(node, "`programme`", &PROGRAMME_KEYS, diags) else {
        return programme;
    };
    if let Some(zone) = fields.get("timezone").and_then(|n| read_zone(n, diags)) {
        programme.timezone = zone;
    }
    for (key, slot) in [
        ("expiry_days", &mut programme.expiry_days),
        ("pending_days", &mut programme.pending_days),
        ("max_event_age_days", &mut programme.max_event_age_days),
    ] {
        if let Some(n) = fields.get(key).and_then(|n| whole_number(n, key, MAX_DAYS, diags)) {
            *slot = u32::try_from(n).unwrap_or(u32::MAX);
        }
    }
    if let Some(node) = fields.get("negative_balance") {
        match node.scalar() {
            Some(("allow", Style::Plain)) => programme.negative_balance = NegativeBalance::Allow,
            Some(("deny", Style::Plain)) => programme.negative_balance = NegativeBalance::Deny,
            _ => diags.error(node.pos, format!("`negative_balance` must be allow or deny, got {}", describe(node))),
        }
    }
    if let Some(node) = fields.get("tier_period") {
        let period = read_string(node, "`tier_period`", diags).map(|text| Period::parse(&text));
        match period {
            Some(Ok(period)) => programme.tier_period = period,
            Some(Err(message)) => diags.error(node.pos, format!("`tier_period`: {message}")),
            None => {}
        }
    }
    if let Some(node) = fields.get("tiers") {
        programme.tiers = read_tiers(node, diags);
    }
    programme
}

fn read_tiers(node: &Node, diags: &mut Diagnostics) -> Vec<Tier> {
    let NodeKind::Seq(items) = &node.kind else {
        if !node.is_null() {
            let example = "[{id: silver, min_points: 1000, multiplier: 1.25}]";
            diags.error(node.pos, format!("`tiers` must be a list, such as {example}"));
        }
        return Vec::new();
    };
    let mut tiers: Vec<Tier> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let what = format!("tier {}", i + 1);
        let Some(fields) = Fields::new(item, &what, &TIER_KEYS, diags) else { continue };
        let id = match fields.get("id") {
            Some(n) => read_string(n, format_args!("the `id` of {what}"), diags),
            None => {
                diags.error(item.pos, format!("{what} needs an `id`"));
                None
            }
        };
        let min_points = match fields.get("min_points") {
            Some(n) => whole_number(n, "min_points", MAX_LIMIT, diags).and_then(|n| i64::try_from(n).ok()),
            None => {
                diags.error(item.pos, format!("{what} needs `min_points`"));
                None
            }
        };
        let multiplier = match fields.get("multiplier") {
            None => Some(1.0),
            Some(n) => match n.scalar().and_then(|(text, _)| text.parse::<f64>().ok()) {
                Some(m) if (0.0..=MAX_MULTIPLIER).contains(&m) => Some(m),
                _ => {
                    let message = format!(
                        "the `multiplier` of {what} must be a number from 0 to {MAX_MULTIPLIER}, got {}",
                        describe(n)
                    );
                    diags.error(n.pos, message);
                    None
                }
            },
        };
        let (Some(id), Some(min_points), Some(multiplier)) = (id, min_points, multiplier) else { continue };
        if tiers.iter().any(|t| t.id == id) {
            diags.error(item.pos, format!("{what}: the tier id `{id}` is used twice"));
            continue;
        }
        tiers.push(Tier { id, min_points, multiplier });
    }
    tiers.sort_by_key(|t| t.min_points);
    tiers
}

/// The loyalty keys of a scenario, read.
#[derive(Debug, Clone, Default)]
pub struct ScenarioLoyalty {
    /// When it is considered.
    pub schedule: Option<ScheduleDef>,
    /// Higher goes first; ties keep file order.
    pub priority: i64,
    /// Of the scenarios of one group that match, only the first acts.
    pub exclusive_group: Option<String>,
    /// Caps, all of which must hold.
    pub limits: Vec<Limit>,
}

/// Reads a scenario's `schedule`, `priority`, `exclusive_group` and `limits`; `label` names the
/// scenario, `children` are its conditions and actions (a `points` limit needs an award).
pub fn read_scenario_loyalty(
    fields: &Fields<'_>,
    label: &str,
    children: &[Child],
    diags: &mut Diagnostics,
) -> ScenarioLoyalty {
    let mut loyalty = ScenarioLoyalty::default();
    if let Some(node) = fields.get("schedule").filter(|n| !n.is_null()) {
        loyalty.schedule = read_schedule(node, label, diags).map(ScheduleDef);
    }
    if let Some(node) = fields.get("priority") {
        loyalty.priority = read_priority(node, diags).unwrap_or(0);
    }
    if let Some(node) = fields.get("exclusive_group") {
        loyalty.exclusive_group = read_string(node, format_args!("the `exclusive_group` of {label}"), diags);
    }
    if let Some(node) = fields.get("limits") {
        loyalty.limits = read_limits(node, label, awards_points(children), diags);
    }
    loyalty
}

fn read_zone(node: &Node, diags: &mut Diagnostics) -> Option<Zone> {
    let name = read_string(node, "`timezone`", diags)?;
    Zone::named(&name).map_err(|message| diags.error(node.pos, message)).ok()
}

fn whole_number(node: &Node, key: &str, max: u64, diags: &mut Diagnostics) -> Option<u64> {
    match node.scalar() {
        Some((text, Style::Plain)) if !node.is_null() => match text.parse::<u64>() {
            Ok(n) if n <= max => Some(n),
            Ok(n) => {
                diags.error(node.pos, format!("`{key}` is {n}, above the limit of {max}"));
                None
            }
            Err(_) => {
                diags.error(node.pos, format!("`{key}` must be a whole number of at least 0, got `{text}`"));
                None
            }
        },
        _ => {
            diags.error(node.pos, format!("`{key}` must be a whole number, got {}", describe(node)));
            None
        }
    }
}

fn read_priority(node: &Node, diags: &mut Diagnostics) -> Option<i64> {
    match node.scalar() {
        Some((text, Style::Plain)) if !node.is_null() => match text.parse::<i64>() {
            Ok(n) if n.abs() <= MAX_PRIORITY => Some(n),
            _ => {
                let message =
                    format!("`priority` must be a whole number from -{MAX_PRIORITY} to {MAX_PRIORITY}, got `{text}`");
                diags.error(node.pos, message);
                None
            }
        },
        _ => {
            diags.error(node.pos, format!("`priority` must be a whole number, got {}", describe(node)));
            None
        }
    }
}

fn read_schedule(node: &Node, label: &str, diags: &mut Diagnostics) -> Option<Schedule> {
    let fields = Fields::new(node, &format!("the `schedule` of {label}"), &SCHEDULE_KEYS, diags)?;
    let mut schedule = Schedule::default();
    let mut ok = true;
    let mut part = |key: &str, diags: &mut Diagnostics, read: &mut dyn FnMut(&str) -> Result<(), String>| {
        let Some(node) = fields.get(key) else { return };
        let Some(text) = read_string(node, format_args!("`{key}` of the schedule of {label}"), diags) else {
            ok = false;
            return;
        };
        if let Err(message) = read(&text) {
            diags.error(node.pos, format!("`{key}` of the schedule of {label}: {message}"));
            ok = false;
        }
    };
    part("from", diags, &mut |t| Bound::parse(t).map(|b| schedule.from = Some(b)));
    part("until", diags, &mut |t| Bound::parse(t).map(|b| schedule.until = Some(b)));
    part("hours", diags, &mut |t| Hours::parse(t).map(|h| schedule.hours = Some(h)));
    part("timezone", diags, &mut |t| Zone::named(t).map(|z| schedule.zone = Some(z)));
    if let Some(node) = fields.get("days") {
        let names = day_names(node, label, diags);
        match names.map(|n| Days::parse(&n.iter().map(String::as_str).collect::<Vec<_>>())) {
            Some(Ok(days)) => schedule.days = Some(days),
            Some(Err(message)) => {
                diags.error(node.pos, format!("`days` of the schedule of {label}: {message}"));
                ok = false;
            }
            None => ok = false,
        }
    }
    if schedule.is_backwards(&Zone::utc()) {
        let pos = fields.key_pos("until").unwrap_or(node.pos);
        diags.error(pos, format!("the schedule of {label} ends (`until`) before it starts (`from`)"));
        ok = false;
    }
    ok.then_some(schedule)
}

fn day_names(node: &Node, label: &str, diags: &mut Diagnostics) -> Option<Vec<String>> {
    let NodeKind::Seq(items) = &node.kind else {
        diags.error(node.pos, format!("`days` of the schedule of {label} must be a list such as [sat, sun]"));
        return None;
    };
    items.iter().map(|item| read_string(item, format_args!("a day of the schedule of {label}"), diags)).collect()
}

/// True when one of the actions (at any depth) awards points: a `reward_points` whose
/// `operation` is not `deduct`.
fn awards_points(children: &[Child]) -> bool {
    children.iter().any(|child| match child {
        Child::Condition(condition) => awards_points(&condition.children),
        Child::Action(action) => {
            action.action_type == "reward_points"
                && action.params.get("operation").and_then(serde_json::Value::as_str) != Some("deduct")
        }
    })
}

fn read_limits(node: &Node, label: &str, awards: bool, diags: &mut Diagnostics) -> Vec<Limit> {
    let NodeKind::Seq(items) = &node.kind else {
        if !node.is_null() {
            diags.error(
                node.pos,
                format!("`limits` of {label} must be a list, such as [{{per: actor, times: 1, period: day}}]"),
            );
        }
        return Vec::new();
    };
    items
        .iter()
        .enumerate()
        .filter_map(|(i, item)| read_limit(item, &format!("limit {} of {label}", i + 1), awards, diags))
        .collect()
}

fn read_limit(node: &Node, what: &str, awards: bool, diags: &mut Diagnostics) -> Option<Limit> {
    let fields = Fields::new(node, what, &LIMIT_KEYS, diags)?;
    let per = match fields.get("per").map(|n| (n, n.scalar())) {
        Some((_, Some(("actor", Style::Plain)))) => Some(LimitScope::Actor),
        Some((_, Some(("scenario", Style::Plain)))) => Some(LimitScope::Scenario),
        Some((n, _)) => {
            diags.error(n.pos, format!("`per` of {what} must be actor or scenario, got {}", describe(n)));
            None
        }
        None => {
            diags.error(node.pos, format!("{what} needs `per: actor` or `per: scenario`"));
            None
        }
    };
    let times = fields.get("times").and_then(|n| positive(n, "times", what, diags).map(LimitCap::Times));
    let points = fields.get("points").and_then(|n| positive(n, "points", what, diags).map(LimitCap::Points));
    let cap = match (fields.get("times"), fields.get("points")) {
        (None, None) => {
            diags.error(
                node.pos,
                format!("{what} needs `times` (how often the scenario may act) or `points` (how many it may award)"),
            );
            None
        }
        (Some(_), Some(_)) => {
            let pos = fields.key_pos("points").unwrap_or(node.pos);
            diags.error(pos, format!("{what} has both `times` and `points`: write two limits, one for each"));
            None
        }
        _ => times.or(points),
    };
    if let (Some(LimitCap::Points(_)), false) = (cap, awards) {
        let pos = fields.key_pos("points").unwrap_or(node.pos);
        diags.error(
            pos,
            format!("{what} caps `points`, but the scenario awards none (deductions are never capped): use `times`"),
        );
    }
    let period = match fields.get("period") {
        None => Some(Period::Lifetime),
        Some(n) => match read_string(n, format_args!("`period` of {what}"), diags).map(|t| Period::parse(&t)) {
            Some(Ok(period)) => Some(period),
            Some(Err(message)) => {
                diags.error(n.pos, format!("`period` of {what}: {message}"));
                None
            }
            None => None,
        },
    };
    if let (Some(LimitScope::Scenario), Some(p)) = (per, period) {
        if p.is_rolling() {
            let pos = fields.get("period").map_or(node.pos, |n| n.pos);
            diags.error(pos, format!("{what} is `per: scenario` with the rolling period `{p}`: a campaign limit counts calendar periods (day, week, month, year) or lifetime"));
            return None;
        }
    }
    Some(Limit { per: per?, cap: cap?, period: period? })
}

fn positive(node: &Node, key: &str, what: &str, diags: &mut Diagnostics) -> Option<u64> {
    match whole_number(node, key, MAX_LIMIT, diags) {
        Some(0) => {
            diags.error(node.pos, format!("`{key}` of {what} must be at least 1"));
            None
        }
        n => n,
    }
}
