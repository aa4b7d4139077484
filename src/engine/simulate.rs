//! Dry runs: evaluate events (against the live rules or a rules text that is not live), with
//! traces, and say what the ledger would do — points and balance after each event — writing
//! nothing at all.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use serde::Serialize;

use crate::actions::{Outcome, Plan};
use crate::event::Event;
use crate::facts::Facts;
use crate::graph::Rules;
use crate::graph::stacking::stack;
use crate::ledger::{Fingerprint, LedgerError, LedgerStore, decide_points, fingerprint};
use crate::result::EventResult;

/// Most events in one simulation.
pub const MAX_EVENTS: usize = 1_000;

/// What the ledger would do with one event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LedgerVerdict {
    /// It would apply the event's points.
    Apply,
    /// The id is stored with the same content: it would answer the stored result.
    Replay,
    /// The id is stored with other content: it would answer 409.
    Conflict,
    /// No ledger (`--ledger none`): nothing would be stored.
    NoLedger,
}

/// A points movement the ledger would write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PointsEffect {
    /// The member.
    pub actor_id: String,
    /// The action.
    pub action_id: String,
    /// Signed points.
    pub points: i64,
    /// The member's balance after it.
    pub balance_after: i64,
}

/// One simulated event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SimulatedEvent {
    /// The result it would get, with its trace.
    pub result: EventResult,
    /// What the ledger would do.
    pub ledger: LedgerVerdict,
    /// Points it would move, in order.
    pub points: Vec<PointsEffect>,
    /// Balances of the members it touches, after it, by member id.
    pub balances: BTreeMap<String, i64>,
}

/// Simulates events in order; balances start from the ledger's (when there is one) and carry
/// from one simulated event to the next. Reads the ledger, never writes it.
pub fn simulate(
    rules: &Rules,
    events: &[Event],
    ledger: Option<&dyn LedgerStore>,
) -> Result<Vec<SimulatedEvent>, LedgerError> {
    simulate_from(rules, events, ledger, HashMap::new())
}

/// [`simulate`], with some members' balances given up front (rule tests set them this way).
pub fn simulate_from(
    rules: &Rules,
    events: &[Event],
    ledger: Option<&dyn LedgerStore>,
    mut balances: HashMap<String, i64>,
) -> Result<Vec<SimulatedEvent>, LedgerError> {
    let mut seen: HashMap<&str, Fingerprint> = HashMap::new();
    let mut out = Vec::with_capacity(events.len());
    for event in events {
        let started = Instant::now();
        let fp = fingerprint(event);
        let earlier = match (seen.get(event.id.as_str()), ledger) {
            (Some(fp), _) => Some(*fp),
            (None, Some(store)) if !event.generated_id => store.stored_result(&event.id)?.map(|(fp, _)| fp),
            _ => None,
        };
        seen.insert(&event.id, fp);
        let mut evaluation = rules.new_evaluation();
        let mut trace = rules.evaluate_traced(&Facts::of(event), &mut evaluation);
        let verdict = match (earlier, ledger) {
            (Some(stored), _) if stored == fp => LedgerVerdict::Replay,
            (Some(_), _) => LedgerVerdict::Conflict,
            (None, None) => LedgerVerdict::NoLedger,
            (None, Some(_)) => LedgerVerdict::Apply,
        };
        let mut effects = Vec::new();
        let keys = rules.stacking_keys(&evaluation);
        let stacked = stack(&keys, |i| {
            let planned = &evaluation.planned[i];
            Ok::<_, LedgerError>(match (planned.plan, &event.actor_id) {
                (Plan::Points(change), Some(actor))
                    if matches!(verdict, LedgerVerdict::Apply | LedgerVerdict::NoLedger) =>
                {
                    let balance = current_balance(&mut balances, actor, ledger)?;
                    let outcome = decide_points(*balance, change);
                    if outcome.success() {
                        *balance += change.amount;
                        effects.push(PointsEffect {
                            actor_id: actor.clone(),
                            action_id: rules.action(planned.action).map_or_else(String::new, |a| a.id.clone()),
                            points: change.amount,
                            balance_after: *balance,
                        });
                    }
                    outcome
                }
                (plan, _) => Outcome::of_plan(plan),
            })
        })?;
        let mut result = EventResult::build(rules, event, &evaluation, &stacked, started.elapsed());
        trace.mark_excluded(rules, &result.scenarios_matched);
        result.trace = Some(trace);
        result.replayed = verdict == LedgerVerdict::Replay;
        let touched =
            effects.iter().map(|e| (e.actor_id.clone(), balances.get(&e.actor_id).copied().unwrap_or(0))).collect();
        out.push(SimulatedEvent { result, ledger: verdict, points: effects, balances: touched });
    }
    Ok(out)
}

fn current_balance<'a>(
    balances: &'a mut HashMap<String, i64>,
    actor: &str,
    ledger: Option<&dyn LedgerStore>,
) -> Result<&'a mut i64, LedgerError> {
    if !balances.contains_key(actor) {
        let stored = ledger.map(|l| l.balance(actor)).transpose()?.unwrap_or(0);
        balances.insert(actor.to_owned(), stored);
    }
    Ok(balances.entry(actor.to_owned()).or_insert(0))
}
