//! Runs every case of `tests/cases/expressions.json` (the table that also drives the benches)
//! and reports all failures together.
//!
//! A case: `{"name", "expr", "purpose": "condition"|"formula", "event", "expect", "reason"?,
//! "warning"?, "column"?, "bench"?}` where `expect` is `true`, `false`, `"unknown"`, a number
//! (formulas) or `{"error": "substring of the load error"}`; `warning` is part of the one load
//! warning the condition must have (every other case loads without one).

#[path = "cases/table.rs"]
mod table;

use fluxflow::event::Event;
use fluxflow::expr::{Program, Purpose, Truth, parser};
use serde_json::Value;
use table::Case;

/// What a case produced, printed like the table's `expect`.
fn describe_truth(program: &Program, truth: Truth) -> String {
    match truth {
        Truth::True => "true".into(),
        Truth::False => "false".into(),
        Truth::Unknown(u) => format!("unknown ({})", program.explain(&u)),
    }
}

fn purpose_of(case: &Case) -> Result<Purpose, String> {
    match case.purpose.as_str() {
        "condition" => Ok(Purpose::Condition),
        "formula" => Ok(Purpose::Formula),
        "ratio" => Ok(Purpose::Ratio),
        other => Err(format!("bad purpose {other:?} in the table")),
    }
}

/// Checks a case that must fail to load.
fn check_error(case: &Case, purpose: Purpose, wanted: &str) -> Result<(), String> {
    let err = match Program::compile(&case.expr, purpose) {
        Ok(_) => return Err(format!("loaded, but expected the load error {wanted:?}")),
        Err(e) => e,
    };
    let column = err.span.line_col(&case.expr).1;
    let rendered = err.render(&case.expr);
    if !rendered.contains(wanted) {
        return Err(format!("load error {rendered:?} (column {column}) does not contain {wanted:?}"));
    }
    match case.column {
        Some(c) if c != column => Err(format!("load error {:?} at column {column}, expected column {c}", err.message)),
        _ => Ok(()),
    }
}

/// The parsed tree prints back to text that parses to the same tree.
fn check_round_trip(case: &Case) -> Result<(), String> {
    let tree = parser::parse(&case.expr).map_err(|e| format!("compiled but does not parse: {e}"))?;
    let printed = tree.to_string();
    let again = parser::parse(&printed).map_err(|e| format!("prints as {printed:?}, which does not parse: {e}"))?;
    if again.to_sexpr() != tree.to_sexpr() {
        return Err(format!(
            "prints as {printed:?}, which parses to {} instead of {}",
            again.to_sexpr(),
            tree.to_sexpr()
        ));
    }
    Ok(())
}

fn check_reason(case: &Case, explanation: &str) -> Result<(), String> {
    match &case.reason {
        Some(r) if !explanation.contains(r.as_str()) => {
            Err(format!("unknown as expected, but the reason {explanation:?} does not contain {r:?}"))
        }
        _ => Ok(()),
    }
}

fn check_condition(case: &Case, program: &Program, event: &Event) -> Result<(), String> {
    let truth = program.truth(event);
    let got = describe_truth(program, truth);
    let ok = match (&case.expect, truth) {
        (Value::Bool(true), Truth::True) | (Value::Bool(false), Truth::False) => true,
        (Value::String(s), Truth::Unknown(u)) if s == "unknown" => {
            return check_reason(case, &program.explain(&u));
        }
        _ => false,
    };
    if ok { Ok(()) } else { Err(format!("got {got}")) }
}

fn check_formula(case: &Case, program: &Program, event: &Event) -> Result<(), String> {
    let result = program.number(event);
    match (&case.expect, result) {
        (Value::Number(n), Ok(x)) => {
            let want = n.as_f64().unwrap_or(f64::NAN);
            if (x - want).abs() <= 1e-9 * want.abs().max(1.0) { Ok(()) } else { Err(format!("got {x}")) }
        }
        (Value::String(s), Err(u)) if s == "unknown" => check_reason(case, &program.explain(&u)),
        (_, Ok(x)) => Err(format!("got {x}")),
        (_, Err(u)) => Err(format!("got unknown ({})", program.explain(&u))),
    }
}

/// The condition's load warnings: exactly the one the case names (at its column), or none.
fn check_warnings(case: &Case, program: &Program) -> Result<(), String> {
    let warnings = program.warnings();
    match (&case.warning, warnings) {
        (None, []) => Ok(()),
        (None, [first, ..]) => Err(format!("loads with the warning {:?}", first.message)),
        (Some(wanted), [only]) => {
            let column = only.span.line_col(&case.expr).1;
            if !only.message.contains(wanted.as_str()) {
                return Err(format!("the warning {:?} does not contain {wanted:?}", only.message));
            }
            match case.column {
                Some(c) if c != column => Err(format!("the warning is at column {column}, expected column {c}")),
                _ => Ok(()),
            }
        }
        (Some(_), other) => Err(format!("expected one warning, got {}", other.len())),
    }
}

fn run(case: &Case) -> Result<(), String> {
    let purpose = purpose_of(case)?;
    if let Some(wanted) = case.expect.get("error") {
        let wanted = wanted.as_str().ok_or("`error` must be a string")?;
        return check_error(case, purpose, wanted);
    }
    let program = Program::compile(&case.expr, purpose)
        .map_err(|e| format!("load error {:?} at {}", e.message, e.span.place(&case.expr)))?;
    check_warnings(case, &program)?;
    check_round_trip(case)?;
    let event = Event::from_value(case.event.clone()).map_err(|e| format!("bad event in the table: {e}"))?;
    match purpose {
        Purpose::Condition => check_condition(case, &program, &event),
        // A ratio evaluates like a formula; without a reversal its `original` paths are missing.
        Purpose::Formula | Purpose::Ratio => check_formula(case, &program, &event),
    }
}

#[test]
fn every_case_of_the_table() {
    let cases = table::cases();
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|case| {
            run(case).err().map(|why| {
                format!("- {}\n    expr:     {}\n    expected: {}\n    {}", case.name, case.expr, case.expect, why)
            })
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} expression cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn the_table_is_well_formed() {
    let cases = table::cases();
    let mut names = std::collections::HashSet::new();
    let mut problems = Vec::new();
    for case in &cases {
        if !names.insert(case.name.as_str()) {
            problems.push(format!("duplicate name {:?}", case.name));
        }
        let is_error = case.expect.get("error").is_some();
        let is_unknown = case.expect.as_str() == Some("unknown");
        if case.column.is_some() && !is_error && case.warning.is_none() {
            problems.push(format!("{:?}: `column` belongs to load errors and warnings", case.name));
        }
        if case.warning.is_some() && (is_error || case.purpose != "condition") {
            problems.push(format!("{:?}: `warning` belongs to conditions that load", case.name));
        }
        if case.reason.is_some() && !is_unknown {
            problems.push(format!("{:?}: `reason` belongs to unknowns", case.name));
        }
        if case.bench && is_error {
            problems.push(format!("{:?}: a bench case must load", case.name));
        }
    }
    let seeds = cases.iter().filter(|c| c.name.starts_with("seed: ")).count();
    if seeds < 22 {
        problems.push(format!("only {seeds} seed cases (TestEvaluate has 19, TestParse_Errors 3)"));
    }
    if cases.len() < 150 {
        problems.push(format!("only {} cases", cases.len()));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
