//! Expression evaluation, one bench per case of `tests/cases/expressions.json` marked
//! `"bench": true` (the table that drives the tests): conditions per operator, then formulas.
//! Programs are compiled and events decoded before timing; only evaluation is measured.
//!
//! `cargo bench --bench expressions`

use std::hint::black_box;

#[path = "../tests/cases/table.rs"]
#[allow(dead_code)]
mod table;

use criterion::{Criterion, criterion_group, criterion_main};
use fluxflow::event::Event;
use fluxflow::expr::{Program, Purpose, Truth};
use serde_json::Value;

/// A bench case, compiled and with its event decoded.
struct Prepared {
    name: String,
    program: Program,
    event: Event,
    expect: Value,
}

fn prepare(purpose: &str) -> Vec<Prepared> {
    let cases = table::cases();
    cases
        .into_iter()
        .filter(|c| c.bench && c.purpose == purpose)
        .map(|c| {
            let kind = if purpose == "formula" { Purpose::Formula } else { Purpose::Condition };
            let program = Program::compile(&c.expr, kind).unwrap_or_else(|e| panic!("{}: {e}", c.name));
            let event = Event::from_value(c.event).unwrap_or_else(|e| panic!("{}: {e}", c.name));
            assert!(!c.expect.is_object(), "{}: a bench case must load", c.name);
            Prepared { name: c.name, program, event, expect: c.expect }
        })
        .collect()
}

fn conditions(c: &mut Criterion) {
    let cases = prepare("condition");
    assert!(!cases.is_empty(), "no condition case is marked \"bench\": true");
    let mut group = c.benchmark_group("condition");
    for case in &cases {
        // The answer the table expects, so a bench never times a broken evaluation.
        let ok = match (case.program.truth(&case.event), &case.expect) {
            (Truth::True, Value::Bool(true)) | (Truth::False, Value::Bool(false)) => true,
            (Truth::Unknown(_), Value::String(s)) => s == "unknown",
            _ => false,
        };
        assert!(ok, "{}: evaluates to something other than {}", case.name, case.expect);
        group.bench_function(&case.name, |b| b.iter(|| black_box(&case.program).truth(black_box(&case.event))));
    }
    group.finish();
}

fn formulas(c: &mut Criterion) {
    let cases = prepare("formula");
    assert!(!cases.is_empty(), "no formula case is marked \"bench\": true");
    let mut group = c.benchmark_group("formula");
    for case in &cases {
        let got = case.program.number(&case.event);
        let ok = match (got, case.expect.as_f64()) {
            (Ok(x), Some(want)) => (x - want).abs() <= 1e-9 * want.abs().max(1.0),
            (Err(_), None) => case.expect.as_str() == Some("unknown"),
            _ => false,
        };
        assert!(ok, "{}: evaluates to {got:?}, not {}", case.name, case.expect);
        group.bench_function(&case.name, |b| b.iter(|| black_box(&case.program).number(black_box(&case.event))));
    }
    group.finish();
}

criterion_group!(benches, conditions, formulas);
criterion_main!(benches);
