//! The engine: turns an event into a result, applying what the rules planned.

pub mod result;

pub use result::{ActionResult, EventResult};

use std::time::Instant;

use crate::actions::Outcome;
use crate::event::Event;
use crate::graph::Rules;

/// Evaluates an event and reports what its actions would do, touching no ledger.
///
/// ```
/// use fluxflow::actions::ActionRegistry;
/// use fluxflow::engine::evaluate_stateless;
/// use fluxflow::event::Event;
/// use fluxflow::graph::Rules;
///
/// let rules = Rules::load_path("configs/rules.yaml".as_ref(), &ActionRegistry::builtin()).unwrap();
/// let event = Event::from_value(serde_json::json!({
///     "type": "transaction", "source": "pos-system", "actor_id": "user_42",
///     "payload": {"amount": 1500, "category": "food"}
/// })).unwrap();
/// let result = evaluate_stateless(&rules, &event, false);
/// assert_eq!(result.scenarios_matched, ["sc_high_value_food"]);
/// assert_eq!(result.actions_executed[0].message, "Awarded 75 points to user_42 — High-value food purchase bonus");
/// ```
pub fn evaluate_stateless(rules: &Rules, event: &Event, trace: bool) -> EventResult {
    let started = Instant::now();
    let mut evaluation = rules.new_evaluation();
    let trace = if trace {
        Some(rules.evaluate_traced(event, &mut evaluation))
    } else {
        rules.evaluate(event, &mut evaluation);
        None
    };
    let outcomes: Vec<Outcome> = evaluation.planned.iter().map(|p| Outcome::of_plan(p.plan)).collect();
    let mut result = EventResult::build(rules, event, &evaluation, &outcomes, started.elapsed());
    result.trace = trace;
    result
}
