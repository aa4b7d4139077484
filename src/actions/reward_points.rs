//! `reward_points`: award or deduct points, fixed or by formula.

use super::{Action, ActionKind, Failure, Outcome, Plan, PointsChange};
use crate::event::Event;
use crate::expr::{Program, Purpose};
use crate::facts::Facts;
use crate::rules::schema::{Fields, describe, read_string, read_text};
use crate::rules::yaml::{Style, parse_yaml_float};
use crate::rules::{ActionDef, Diagnostics, Text, compile_expression};

/// Most points one action moves: beyond 2^53 a double no longer holds whole numbers exactly.
pub const MAX_POINTS: f64 = 9_007_199_254_740_992.0;

/// Longest expiry, in days (100 years).
pub const MAX_EXPIRY_DAYS: u64 = 36_500;

/// Rounds points like the original: to 2 decimals half away from zero, then to a whole number
/// half to even.
///
/// ```
/// use fluxflow::actions::reward_points::round_points;
/// assert_eq!(round_points(50.5), 50.0);
/// assert_eq!(round_points(51.5), 52.0);
/// assert_eq!(round_points(1.005), 1.0);
/// assert_eq!(round_points(74.996), 75.0);
/// ```
pub fn round_points(x: f64) -> f64 {
    // Whole amounts, the common case, need neither rounding (each is a libm call).
    if x.fract() == 0.0 {
        return x;
    }
    ((x * 100.0).round() / 100.0).round_ties_even()
}

/// Whether the action awards or deducts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Adds points.
    Award,
    /// Takes points away.
    Deduct,
}

#[derive(Debug)]
enum Amount {
    Fixed(i64),
    Formula(Program),
}

/// A compiled `reward_points` action.
#[derive(Debug)]
pub struct RewardPointsAction {
    operation: Operation,
    amount: Amount,
    reason: Option<String>,
    expiry_days: Option<u32>,
    pending_days: Option<u32>,
    /// Awards multiplied by the member's tier multiplier.
    tier_multiplier: bool,
}

/// The `reward_points` action type.
pub struct RewardPoints;

/// The keys allowed in the params of `reward_points`.
pub const PARAMS: [&str; 7] =
    ["operation", "points", "points_formula", "reason", "expiry_days", "pending_days", "tier_multiplier"];

impl ActionKind for RewardPoints {
    fn type_name(&self) -> &'static str {
        "reward_points"
    }

    fn compile(&self, def: &ActionDef, diags: &mut Diagnostics) -> Option<Box<dyn Action>> {
        let id = &def.id;
        let Some(params) = &def.params_node else {
            diags.error(
                def.pos,
                format!("action `{id}` needs `params` with `operation` and `points` or `points_formula`"),
            );
            return None;
        };
        let what = format!("the params of action `{id}`");
        let fields = Fields::new(params, &what, &PARAMS, diags)?;
        let operation = match fields.get("operation") {
            None => {
                diags.warning(
                    params.pos,
                    format!("action `{id}` has no `operation`; it awards points (write `operation: award`)"),
                );
                Some(Operation::Award)
            }
            Some(node) => match read_string(node, format_args!("the `operation` of action `{id}`"), diags).as_deref() {
                Some("award") => Some(Operation::Award),
                Some("deduct") => Some(Operation::Deduct),
                Some(other) => {
                    diags.error(
                        node.pos,
                        format!("the `operation` of action `{id}` must be award or deduct, got `{other}`"),
                    );
                    None
                }
                None => None,
            },
        };
        let amount = match (fields.get("points"), fields.get("points_formula")) {
            (Some(_), Some(formula)) => {
                let pos = fields.key_pos("points_formula").unwrap_or(formula.pos);
                diags.error(pos, format!("action `{id}` has both `points` and `points_formula`; keep one"));
                None
            }
            (None, None) => {
                diags.error(
                    params.pos,
                    format!("action `{id}` needs `points` (a number) or `points_formula` (an expression)"),
                );
                None
            }
            (Some(points), None) => fixed_points(points, id, diags).map(Amount::Fixed),
            (None, Some(formula)) => {
                let owner = format!("the `points_formula` of action `{id}`");
                match Text::from_node(formula).filter(|_| !formula.is_null()) {
                    Some(text) if text.value.trim().is_empty() => {
                        diags.error(formula.pos, format!("{owner} is empty"));
                        None
                    }
                    Some(text) => compile_expression(&text, Purpose::Formula, &owner, diags).map(Amount::Formula),
                    None => {
                        diags.error(formula.pos, format!("{owner} must be an expression, got {}", describe(formula)));
                        None
                    }
                }
            }
        };
        let reason =
            fields.get("reason").and_then(|n| read_text(n, format_args!("the `reason` of action `{id}`"), diags));
        let expiry_days = fields.get("expiry_days").map(|node| days(node, "expiry_days", id, diags));
        let pending_days = fields.get("pending_days").map(|node| days(node, "pending_days", id, diags));
        let tier_multiplier = match fields.get("tier_multiplier") {
            None => Some(false),
            Some(node) => match node.scalar() {
                Some(("true", Style::Plain)) if operation != Some(Operation::Deduct) => Some(true),
                Some(("true", Style::Plain)) => {
                    diags.error(node.pos, format!("`tier_multiplier` of action `{id}` applies to awards only"));
                    None
                }
                Some(("false", Style::Plain)) => Some(false),
                _ => {
                    let message =
                        format!("`tier_multiplier` of action `{id}` must be true or false, got {}", describe(node));
                    diags.error(node.pos, message);
                    None
                }
            },
        };
        Some(Box::new(RewardPointsAction {
            tier_multiplier: tier_multiplier?,
            operation: operation?,
            amount: amount?,
            reason,
            expiry_days: expiry_days.map_or(Some(None), |d| d.map(Some))?,
            pending_days: pending_days.map_or(Some(None), |d| d.map(Some))?,
        }))
    }
}

fn fixed_points(node: &crate::rules::yaml::Node, id: &str, diags: &mut Diagnostics) -> Option<i64> {
    let owner = format!("the `points` of action `{id}`");
    let value = match node.scalar() {
        Some((text, Style::Plain)) => parse_yaml_float(text),
        _ => None,
    };
    let Some(value) = value else {
        let message = match node.scalar() {
            Some((text, Style::Quoted)) if parse_yaml_float(text.trim()).is_some() => {
                format!("{owner} must be a number, not a string: write `points: {}` without quotes", text.trim())
            }
            _ => format!("{owner} must be a number, got {}", describe(node)),
        };
        diags.error(node.pos, message);
        return None;
    };
    let rounded = round_points(value);
    if value < 0.0 {
        diags.error(
            node.pos,
            format!("{owner} is {value}: points must be at least 1 (to take points away, write `operation: deduct` and a positive number)"),
        );
        return None;
    }
    if rounded < 1.0 {
        let rounds = if rounded == value { String::new() } else { format!(", which rounds to {rounded}") };
        diags.error(node.pos, format!("{owner} is {value}{rounds}: an action gives at least 1 point"));
        return None;
    }
    if rounded > MAX_POINTS {
        diags.error(node.pos, format!("{owner} is {value}, which is too large"));
        return None;
    }
    Some(rounded as i64)
}

/// Reads `expiry_days` or `pending_days`: whole days; 0 (never expires, spendable at once)
/// overrides the programme's.
fn days(node: &crate::rules::yaml::Node, key: &str, id: &str, diags: &mut Diagnostics) -> Option<u32> {
    let owner = format!("the `{key}` of action `{id}`");
    let text = match node.scalar() {
        Some((text, Style::Plain)) if !node.is_null() => text,
        _ => {
            diags.error(node.pos, format!("{owner} must be a whole number of days, got {}", describe(node)));
            return None;
        }
    };
    match text.parse::<u64>() {
        Ok(days) if days <= MAX_EXPIRY_DAYS => u32::try_from(days).ok(),
        _ => {
            diags.error(
                node.pos,
                format!("{owner} must be a whole number of days from 0 to {MAX_EXPIRY_DAYS}, got `{text}`"),
            );
            None
        }
    }
}

impl Action for RewardPointsAction {
    fn plan(&self, facts: &Facts<'_>) -> Plan {
        if facts.event.actor_id.is_none() {
            return Plan::Failed(Failure::NoActor);
        }
        // The member's tier multiplies before rounding; without a ledger there is no tier.
        let multiplier = match (self.tier_multiplier, facts.member) {
            (true, Some(member)) => member.tier_multiplier().unwrap_or(1.0),
            _ => 1.0,
        };
        let amount = match &self.amount {
            Amount::Fixed(points) if multiplier == 1.0 => *points,
            Amount::Fixed(points) => {
                let x = *points as f64 * multiplier;
                let rounded = round_points(x);
                if !(1.0..=MAX_POINTS).contains(&rounded) {
                    return Plan::Failed(Failure::FormulaBelowOne(x));
                }
                rounded as i64
            }
            Amount::Formula(program) => match program.number_of(facts) {
                Err(unknown) => return Plan::Failed(Failure::FormulaUnknown(unknown)),
                Ok(x) if !x.is_finite() => return Plan::Failed(Failure::FormulaNotFinite),
                Ok(x) => {
                    let rounded = round_points(x * multiplier);
                    if !(1.0..=MAX_POINTS).contains(&rounded) {
                        return Plan::Failed(Failure::FormulaBelowOne(x));
                    }
                    rounded as i64
                }
            },
        };
        let amount = match self.operation {
            Operation::Award => amount,
            Operation::Deduct => -amount,
        };
        Plan::Points(PointsChange { amount, expiry_days: self.expiry_days, pending_days: self.pending_days })
    }

    fn ledger_reason(&self) -> Option<&str> {
        self.reason.as_deref()
    }

    fn reads_member(&self) -> bool {
        self.tier_multiplier || matches!(&self.amount, Amount::Formula(program) if program.reads_member())
    }

    fn history_reads(&self, out: &mut Vec<crate::expr::compiler::HistoryRead>) {
        if let Amount::Formula(program) = &self.amount {
            program.history_reads(out);
        }
    }

    fn message(&self, outcome: &Outcome, event: &Event) -> String {
        let actor = event.actor_id.as_deref().unwrap_or("");
        let formula = match &self.amount {
            Amount::Formula(p) => p.source(),
            Amount::Fixed(_) => "",
        };
        match outcome {
            Outcome::Done(Plan::Points(change)) | Outcome::Capped { change, .. } => {
                let (verb, preposition) = match self.operation {
                    Operation::Award => ("Awarded", "to"),
                    Operation::Deduct => ("Deducted", "from"),
                };
                let mut message = format!("{verb} {} points {preposition} {actor}", change.amount.unsigned_abs());
                if let Some(reason) = self.reason.as_deref().filter(|r| !r.is_empty()) {
                    message.push_str(" \u{2014} ");
                    message.push_str(reason);
                }
                if matches!(outcome, Outcome::Capped { .. }) {
                    message.push_str(" (capped by limit)");
                }
                message
            }
            Outcome::Done(Plan::Failed(failure)) | Outcome::Failed(failure) => match failure {
                Failure::NoActor => "reward_points needs an actor: the event has no actor_id".into(),
                Failure::NoOutbox => "reward_points queues no webhook".into(),
                Failure::FormulaUnknown(unknown) => {
                    format!("points_formula `{formula}` has no value: {}", unknown.explain(formula))
                }
                Failure::FormulaNotFinite => {
                    format!("points_formula `{formula}` gave a number that is not finite")
                }
                Failure::FormulaBelowOne(x) if round_points(*x) < 1.0 => {
                    format!("points_formula `{formula}` gave {x}, which rounds to less than 1 point")
                }
                Failure::FormulaBelowOne(x) => {
                    format!("points_formula `{formula}` gave {x}, which is too large")
                }
                // reward_points never plans a reversal.
                Failure::Reversal(_) => String::new(),
            },
            Outcome::Done(Plan::Nothing | Plan::Reverse | Plan::Notify) | Outcome::Reversed { .. } => String::new(),
            Outcome::LimitReached(_) => String::new(),
            Outcome::InsufficientBalance { wanted, balance } => {
                format!("cannot deduct {wanted} points from {actor}: the balance is {balance}")
            }
        }
    }
}
