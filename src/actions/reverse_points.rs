//! `reverse_points`: take back what an earlier event awarded, in whole or in part (a refund).
//! The action only names the original (a path to its id) and the share (`ratio`); the ledger
//! decides how many points that is and where they come from ([`crate::ledger::reversal`]).

use std::sync::Arc;

use super::{Action, ActionKind, Failure, Outcome, Plan, Reversal, ReversalFailure};
use crate::event::Event;
use crate::expr::ast::Path;
use crate::expr::eval::resolve;
use crate::expr::{Program, Purpose, Val};
use crate::facts::Facts;
use crate::rules::schema::{Fields, describe, read_text};
use crate::rules::{ActionDef, Diagnostics, Text, compile_expression};

/// The `reverse_points` action type.
pub struct ReversePoints;

/// The keys allowed in the params of `reverse_points`.
pub const PARAMS: [&str; 3] = ["original", "ratio", "reason"];

/// A compiled `reverse_points` action.
#[derive(Debug)]
pub struct ReversePointsAction {
    /// Where the event holds the original's id.
    original: Path,
    /// The share taken back; `None` is all of it.
    ratio: Option<Arc<Program>>,
    reason: Option<String>,
}

impl ActionKind for ReversePoints {
    fn type_name(&self) -> &'static str {
        "reverse_points"
    }

    fn compile(&self, def: &ActionDef, diags: &mut Diagnostics) -> Option<Box<dyn Action>> {
        let id = &def.id;
        let Some(params) = &def.params_node else {
            diags.error(
                def.pos,
                format!("action `{id}` needs `params` with `original`, such as payload.original_event_id"),
            );
            return None;
        };
        let fields = Fields::new(params, &format!("the params of action `{id}`"), &PARAMS, diags)?;
        let original = match fields.get("original") {
            Some(node) => original_path(node, id, diags),
            None => {
                diags.error(
                    params.pos,
                    format!("action `{id}` needs `original`: the path to the id of the event to reverse"),
                );
                None
            }
        };
        let ratio = match fields.get("ratio") {
            None => Some(None),
            Some(node) => ratio(node, id, diags).map(|program| Some(Arc::new(program))),
        };
        let reason =
            fields.get("reason").and_then(|n| read_text(n, format_args!("the `reason` of action `{id}`"), diags));
        Some(Box::new(ReversePointsAction { original: original?, ratio: ratio?, reason }))
    }
}

/// Reads `original`: a path into the event (payload, meta or event field).
fn original_path(node: &crate::rules::yaml::Node, id: &str, diags: &mut Diagnostics) -> Option<Path> {
    let owner = format!("the `original` of action `{id}`");
    let Some(text) = node.scalar().map(|(text, _)| text).filter(|_| !node.is_null()) else {
        diags.error(
            node.pos,
            format!("{owner} must be a path such as payload.original_event_id, got {}", describe(node)),
        );
        return None;
    };
    match crate::expr::parser::parse(text) {
        Ok(crate::expr::ast::Expr::Path(path @ (Path::Payload(_) | Path::Meta(_) | Path::Event(_)), _)) => Some(path),
        _ => {
            diags.error(node.pos, format!("{owner} must be a path such as payload.original_event_id, got `{text}`"));
            None
        }
    }
}

/// Reads `ratio`: an expression that may read the original as `original.payload...`, and no
/// member state (it is evaluated where the original is read, not with the member's history).
fn ratio(node: &crate::rules::yaml::Node, id: &str, diags: &mut Diagnostics) -> Option<Program> {
    let owner = format!("the `ratio` of action `{id}`");
    let Some(text) = Text::from_node(node).filter(|_| !node.is_null()) else {
        diags
            .error(node.pos, format!("{owner} must be an expression such as payload.amount / original.payload.amount"));
        return None;
    };
    let program = compile_expression(&text, Purpose::Ratio, &owner, diags)?;
    if program.reads_member() {
        diags.error(node.pos, format!("{owner} cannot read member functions or values"));
        return None;
    }
    Some(program)
}

impl ReversePointsAction {
    /// The original's id as the event holds it: a string, or a whole number written as one.
    fn original_id(&self, event: &Event) -> Option<String> {
        match resolve(&self.original, event)? {
            Val::Str(id) if !id.is_empty() => Some(id.to_owned()),
            Val::Num(n) if n.fract() == 0.0 && n.abs() < 9e15 => Some(format!("{n:.0}")),
            _ => None,
        }
    }
}

impl Action for ReversePointsAction {
    fn plan(&self, facts: &Facts<'_>) -> Plan {
        if facts.event.actor_id.is_none() {
            return Plan::Failed(Failure::NoActor);
        }
        match resolve(&self.original, facts.event) {
            Some(Val::Str(id)) if !id.is_empty() => Plan::Reverse,
            Some(Val::Num(n)) if n.fract() == 0.0 && n.abs() < 9e15 => Plan::Reverse,
            _ => Plan::Failed(Failure::Reversal(ReversalFailure::NoOriginalId)),
        }
    }

    fn reversal(&self, event: &Event) -> Option<Reversal> {
        Some(Reversal { original_id: self.original_id(event)?, ratio: self.ratio.clone() })
    }

    fn ledger_reason(&self) -> Option<&str> {
        self.reason.as_deref()
    }

    fn message(&self, outcome: &Outcome, event: &Event) -> String {
        let actor = event.actor_id.as_deref().unwrap_or("");
        let original = self.original_id(event).unwrap_or_default();
        let ratio = self.ratio.as_deref().map_or("", Program::source);
        match outcome {
            Outcome::Reversed { taken, uncollected } => {
                let mut message = format!("Took back {taken} points from {actor}");
                if let Some(reason) = self.reason.as_deref().filter(|r| !r.is_empty()) {
                    message.push_str(" \u{2014} ");
                    message.push_str(reason);
                }
                if *uncollected > 0 {
                    message.push_str(&format!(" ({uncollected} uncollected)"));
                }
                message
            }
            Outcome::Failed(Failure::NoActor) | Outcome::Done(Plan::Failed(Failure::NoActor)) => {
                "reverse_points needs an actor: the event has no actor_id".into()
            }
            Outcome::Failed(Failure::Reversal(failure)) | Outcome::Done(Plan::Failed(Failure::Reversal(failure))) => {
                match failure {
                    ReversalFailure::NoOriginalId => {
                        format!(
                            "reverse_points needs the id of the event to reverse at {}: the event has none",
                            self.original
                        )
                    }
                    ReversalFailure::OriginalNotFound => format!("no event `{original}` of {actor} to reverse"),
                    ReversalFailure::NothingToReverse => format!("nothing left to reverse of event `{original}`"),
                    ReversalFailure::RatioUnknown(unknown) => {
                        format!("ratio `{ratio}` has no value: {}", unknown.explain(ratio))
                    }
                    ReversalFailure::RatioOutOfRange(x) => format!("ratio `{ratio}` gave {x}, outside 0 to 1"),
                }
            }
            _ => String::new(),
        }
    }
}
