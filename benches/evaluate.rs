//! Evaluating decoded events against compiled rules: the fast path (matched scenarios and
//! planned actions, formulas included; no trace, no response building, no ledger).
//!
//! - `example/readme_event`: the original FluxFlow's example rules (`tests/fixtures/original-rules.yaml`) on the README event. Target: under 100 ns.
//! - `example/decode_and_evaluate`: the same with the JSON decoding, for comparison.
//! - `example/encode_result`: encoding that event's result as the answer's JSON.
//! - `scaling/N`: N generated scenarios (see `common`) over 100 event types, on an event of one
//!   of those types. Target at 10,000: under 2 µs.
//!
//! `cargo bench --bench evaluate`

mod common;

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use fluxflow::actions::ActionRegistry;
use fluxflow::event::Event;
use fluxflow::facts::Facts;
use fluxflow::graph::Rules;

const EXAMPLE_RULES: &str = include_str!("../tests/fixtures/original-rules.yaml");
const README_EVENT: &[u8] = include_bytes!("../tests/events/01_readme_quickstart_high_value_food.json");
/// The scaling bench's event: a food purchase of 1,500 from the POS, of the first generated type.
const SCALING_EVENT: &[u8] =
    br#"{"type":"type_00","source":"pos-system","actor_id":"user_42","payload":{"amount":1500,"category":"food"}}"#;

fn example(c: &mut Criterion) {
    let rules = Rules::load_str(EXAMPLE_RULES, &ActionRegistry::builtin()).expect("the example rules load");
    let event = Event::from_slice(README_EVENT).expect("the README event decodes");
    let mut evaluation = rules.new_evaluation();
    rules.evaluate(&Facts::of(&event), &mut evaluation);
    assert_eq!(evaluation.matched.len(), 1, "the README event matches sc_high_value_food");
    assert_eq!(evaluation.planned.len(), 1, "and plans its one action");

    let mut group = c.benchmark_group("example");
    group.bench_function("readme_event", |b| {
        b.iter(|| {
            rules.evaluate(black_box(&Facts::of(&event)), &mut evaluation);
            black_box(&evaluation);
        });
    });
    // What a trace costs when asked for (POST /v1/events?trace=true); the fast path above runs
    // the same walk with a tracer that does nothing.
    group.bench_function("readme_event_traced", |b| {
        b.iter(|| black_box(rules.evaluate_traced(black_box(&Facts::of(&event)), &mut evaluation)));
    });
    // What a fresh durable answer no longer spends: encoding its result a second time (the
    // ledger's stored JSON is sent instead), into the answer's 512-byte buffer.
    let result = fluxflow::engine::evaluate_stateless(&rules, &event, false);
    group.bench_function("encode_result", |b| {
        b.iter(|| {
            let mut body = Vec::with_capacity(512);
            serde_json::to_writer(&mut body, black_box(&result)).expect("a result encodes");
            black_box(body)
        });
    });
    group.bench_function("decode_and_evaluate", |b| {
        b.iter(|| {
            let event = Event::from_slice(black_box(README_EVENT)).expect("decodes");
            rules.evaluate(&Facts::of(&event), &mut evaluation);
            black_box(&evaluation);
        });
    });
    group.finish();
}

fn scaling(c: &mut Criterion) {
    let registry = ActionRegistry::builtin();
    let event = Event::from_slice(SCALING_EVENT).expect("the bench event decodes");
    let mut group = c.benchmark_group("scaling");
    for count in [10, 1_000, 10_000] {
        let rules = Rules::load_str(&common::scenarios_yaml(count), &registry).expect("generated rules load");
        assert_eq!(rules.scenario_count(), count);
        let mut evaluation = rules.new_evaluation();
        rules.evaluate(&Facts::of(&event), &mut evaluation);
        assert!(!evaluation.planned.is_empty(), "the bench event fires at least one action with {count} scenarios");
        group.bench_with_input(BenchmarkId::from_parameter(count), &rules, |b, rules| {
            b.iter(|| {
                rules.evaluate(black_box(&Facts::of(&event)), &mut evaluation);
                black_box(&evaluation);
            });
        });
    }
    group.finish();
}

criterion_group!(benches, example, scaling);
criterion_main!(benches);
