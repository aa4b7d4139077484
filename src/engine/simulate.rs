//! Dry runs: evaluate events (against the live rules or a rules text that is not live), with
//! traces, and say what the ledger would do — points and balance after each event — writing
//! nothing at all.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use serde::Serialize;

use crate::event::Event;
use crate::facts::Facts;
use crate::graph::{Rules, Stacked};
use crate::ledger::member::MemberReader;
use crate::ledger::memory::Overlay;
use crate::ledger::posting::{PlanRef, Posting, ResultRef, Writes, post};
use crate::ledger::{ActionWrite, Applied, LedgerError, LedgerStore, fingerprint};
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
    /// The sum of the member's entries after it (pending points included).
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
    /// Spendable balances of the members it touches, after it, at its event time, by member id.
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
/// Each event is posted by the ledger's one posting core ([`crate::ledger::posting::post`])
/// over an in-memory overlay of the ledger, so a simulation decides exactly as the ledger does.
pub fn simulate_from(
    rules: &Rules,
    events: &[Event],
    ledger: Option<&dyn LedgerStore>,
    balances: HashMap<String, i64>,
) -> Result<Vec<SimulatedEvent>, LedgerError> {
    let mut overlay = Overlay::new(ledger, balances);
    let now = jiff::Timestamp::now().as_microsecond();
    let mut out = Vec::with_capacity(events.len());
    for event in events {
        let started = Instant::now();
        let at = event.time().as_microsecond();
        let fp = fingerprint(event);
        let mut evaluation = rules.new_evaluation();
        // Member functions read the member's state as the ledger (and what was simulated before)
        // has it.
        let mut trace = match event.actor_id.as_deref() {
            Some(actor) if rules.reads_member(&event.event_type) => {
                let reader = MemberReader::new(&mut overlay, actor, at, now, rules.programme())?;
                let trace = rules.evaluate_traced(&Facts::of(event).with_member(&reader), &mut evaluation);
                reader.finish()?;
                trace
            }
            _ => rules.evaluate_traced(&Facts::of(event), &mut evaluation),
        };
        let actions = ActionWrite::for_plans(rules, &evaluation.planned, event);
        let stacking = rules.stacking_keys(&evaluation);
        let limits = rules.limits_of(&evaluation);
        let build = |stacked: &Stacked| EventResult::build(rules, event, &evaluation, stacked, started.elapsed());
        let writes =
            Writes { actions: &actions, stacking: &stacking, limits: &limits, result: ResultRef::Build(&build) };
        let posting = Posting {
            event_id: &event.id,
            fresh_id: event.generated_id,
            fingerprint: &fp,
            plan: PlanRef::Ready(writes),
            job: None,
            event,
            position: None,
        };
        let applied = post(&mut overlay, &posting, now)?;
        let (verdict, mut result) = match applied {
            Applied::Fresh(result) if ledger.is_some() => (LedgerVerdict::Apply, result),
            Applied::Fresh(result) => (LedgerVerdict::NoLedger, result),
            // A replay or a conflict shows what the rules would do now, marked as such.
            Applied::Replayed(_) => (LedgerVerdict::Replay, super::planned_result(rules, event, &evaluation, started)),
            Applied::Conflict => (LedgerVerdict::Conflict, super::planned_result(rules, event, &evaluation, started)),
            // Only a result built before the write is answered so; the simulator builds none.
            Applied::AsPlanned => return Err(crate::ledger::broken("a simulated result was not built")),
        };
        let effects: Vec<PointsEffect> = overlay
            .take_moved()
            .into_iter()
            .map(|m| PointsEffect {
                actor_id: m.actor_id,
                action_id: m.action_id,
                points: m.points,
                balance_after: m.balance_after,
            })
            .collect();
        trace.mark_outcomes(rules, &result);
        result.trace = Some(trace);
        result.replayed = verdict == LedgerVerdict::Replay;
        let mut touched = BTreeMap::new();
        for effect in &effects {
            touched.insert(effect.actor_id.clone(), overlay.balance_of(&effect.actor_id, at)?);
        }
        out.push(SimulatedEvent { result, ledger: verdict, points: effects, balances: touched });
    }
    Ok(out)
}
