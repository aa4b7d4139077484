//! Loading rules: reading, checking and compiling a rules file of N generated scenarios (see
//! `common`), which is what a reload costs before the atomic swap. Target for 10,000 scenarios:
//! under 100 ms.
//!
//! `cargo bench --bench compile`

mod common;

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use fluxflow::actions::ActionRegistry;
use fluxflow::graph::Rules;

fn compile(c: &mut Criterion) {
    let registry = ActionRegistry::builtin();
    let mut group = c.benchmark_group("compile");
    // One load of 10,000 scenarios takes tens of milliseconds: take few samples.
    group.sample_size(10).measurement_time(Duration::from_secs(10));
    for count in [1_000, 10_000] {
        let yaml = common::scenarios_yaml(count);
        let rules = Rules::load_str(&yaml, &registry).expect("generated rules load");
        assert_eq!(rules.scenario_count(), count);
        assert!(rules.warnings.is_empty(), "generated rules load without warnings: {:?}", rules.warnings);
        group.throughput(Throughput::Elements(count as u64));
        group.bench_with_input(BenchmarkId::from_parameter(count), &yaml, |b, yaml| {
            b.iter(|| Rules::load_str(black_box(yaml), &registry).expect("loads"));
        });
    }
    group.finish();
}

/// The YAML parser's share: reading the same file into the positioned tree only.
fn parse_only(c: &mut Criterion) {
    let mut group = c.benchmark_group("yaml_parse");
    group.sample_size(10).measurement_time(Duration::from_secs(10));
    let yaml = common::scenarios_yaml(10_000);
    group.bench_function("10000", |b| b.iter(|| fluxflow::rules::yaml::parse(black_box(&yaml)).expect("parses")));
    group.bench_function("10000_events_only", |b| {
        b.iter(|| saphyr_parser::Parser::new_from_str(black_box(&yaml)).count())
    });
    group.finish();
}

criterion_group!(benches, compile, parse_only);
criterion_main!(benches);
