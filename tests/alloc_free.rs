//! Evaluating an already decoded event against the example rules allocates nothing on the heap
//! (CONTRACT §5): trace off, action planning and formula evaluation included; building the
//! response message and JSON is not part of it.
//!
//! The counting global allocator comes from the `allocation-counter` crate, which keeps its
//! counters per thread: the test harness's own threads and parallel tests cannot disturb a
//! measurement, and this crate keeps `unsafe_code = "forbid"` (the `unsafe impl GlobalAlloc`
//! lives in that crate). It becomes the global allocator of this test binary only, because no
//! other target uses it.

use allocation_counter::{AllocationInfo, measure};
use fluxflow::actions::{ActionRegistry, Plan, PointsChange};
use fluxflow::event::Event;
use fluxflow::facts::Facts;
use fluxflow::graph::{Evaluation, Rules};

const EXAMPLE_RULES: &str = include_str!("fixtures/original-rules.yaml");

fn example_rules() -> Rules {
    Rules::load_str(EXAMPLE_RULES, &ActionRegistry::builtin()).unwrap()
}

/// Allocations made by one `evaluate` call, after a warm-up call has grown `out`.
fn allocations_of_evaluate(rules: &Rules, event: &Event, out: &mut Evaluation) -> AllocationInfo {
    rules.evaluate(&Facts::of(event), out);
    measure(|| rules.evaluate(&Facts::of(event), out))
}

/// The counter is live in this binary: without it every count would be zero and the test would
/// pass for nothing.
#[test]
fn the_counting_allocator_counts() {
    let info = measure(|| {
        std::hint::black_box(vec![1_u8; 16]);
    });
    assert_eq!(info.count_total, 1, "allocation-counter is not the global allocator of this test");
}

/// (name, event JSON, what the evaluation must show)
type Case = (&'static str, &'static str, fn(&Evaluation) -> bool);

const CASES: [Case; 8] = [
    (
        "README event: matches, formula award",
        include_str!("events/01_readme_quickstart_high_value_food.json"),
        |e| matches!(e.planned.as_slice(), [p] if matches!(p.plan, Plan::Points(c) if c.amount == 75)),
    ),
    ("full event with id and meta", include_str!("events/02_readme_full_event.json"), |e| {
        e.matched.len() == 1 && e.planned.len() == 1
    }),
    ("low value: second condition false", include_str!("events/04_testmd_low_value_food.json"), |e| {
        e.matched.is_empty() && e.planned.is_empty()
    }),
    ("wrong source: filtered out", include_str!("events/05_testmd_wrong_source.json"), |e| e.matched.is_empty()),
    (
        "first login: fixed points",
        include_str!("events/06_testmd_first_login.json"),
        |e| matches!(e.planned.as_slice(), [p] if matches!(p.plan, Plan::Points(c) if c.amount == 100)),
    ),
    ("unknown event type", include_str!("events/08_testmd_unknown_type.json"), |e| e.matched.is_empty()),
    (
        "missing path: condition unknown",
        r#"{"id": "e1", "type": "transaction", "source": "mobile-app", "actor_id": "u1", "payload": {"category": "food"}}"#,
        |e| e.planned.is_empty() && e.unknowns.iter().sum::<u32>() == 1,
    ),
    (
        "points action without actor_id fails; source in another case",
        r#"{"id": "e2", "type": "transaction", "source": "POS-System", "payload": {"category": "food", "amount": 2000}}"#,
        |e| matches!(e.planned.as_slice(), [p] if matches!(p.plan, Plan::Failed(_))),
    ),
];

#[test]
fn evaluating_a_decoded_event_allocates_nothing() {
    let rules = example_rules();
    let mut failures = Vec::new();
    for (name, json, check) in CASES {
        let event = Event::from_slice(json.as_bytes()).unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut out = rules.new_evaluation();
        let info = allocations_of_evaluate(&rules, &event, &mut out);
        assert!(check(&out), "{name}: unexpected evaluation {out:?}");
        if info.count_total != 0 {
            failures.push(format!("{name}: {} allocation(s), {} bytes", info.count_total, info.bytes_total));
        }
    }
    assert!(failures.is_empty(), "evaluate allocated:\n{}", failures.join("\n"));
}

/// One buffer reused across different events, as a worker does: still nothing allocated once
/// it has grown.
#[test]
fn a_reused_buffer_allocates_nothing() {
    let rules = example_rules();
    let events: Vec<Event> = CASES.iter().map(|(_, json, _)| Event::from_slice(json.as_bytes()).unwrap()).collect();
    let mut out = rules.new_evaluation();
    for event in &events {
        rules.evaluate(&Facts::of(event), &mut out);
    }
    let info = measure(|| {
        for _ in 0..100 {
            for event in &events {
                rules.evaluate(&Facts::of(event), &mut out);
            }
        }
    });
    assert_eq!(info.count_total, 0, "{info:?}");
}

/// An event type that is not lower-case (scenario filtering ignores case).
#[test]
fn an_event_type_in_another_case_allocates_nothing() {
    let rules = example_rules();
    let json = r#"{"type": "Transaction", "source": "pos-system", "actor_id": "u1", "payload": {"category": "food", "amount": 1500}}"#;
    let event = Event::from_slice(json.as_bytes()).unwrap();
    let mut out = rules.new_evaluation();
    let info = allocations_of_evaluate(&rules, &event, &mut out);
    assert_eq!(out.matched.len(), 1);
    assert_eq!(info.count_total, 0, "{info:?}");
}

/// `in` over a list literal (a set lookup, numeric strings included), `not in`, and `in` over an
/// array of the event allocate nothing either.
#[test]
fn membership_allocates_nothing() {
    let yaml = r#"version: v1
scenarios:
  - id: sc_lists
    enabled: true
    event_types: [purchase]
    children:
      - condition:
          id: cond_lists
          expression: "payload.category in ['food', 'drinks', 'bakery'] AND payload.store not in [13, '666'] AND 'vip' in payload.tags"
          children:
            - action: {id: act_list_points, type: reward_points, params: {operation: award, points: 5}}
"#;
    let rules = Rules::load_str(yaml, &ActionRegistry::builtin()).unwrap();
    let json = r#"{"type": "purchase", "actor_id": "u1", "payload": {"category": "drinks", "store": "12", "tags": ["new", "vip"]}}"#;
    let event = Event::from_slice(json.as_bytes()).unwrap();
    let mut out = rules.new_evaluation();
    let info = allocations_of_evaluate(&rules, &event, &mut out);
    assert_eq!(out.planned.len(), 1, "{out:?}");
    assert_eq!(info.count_total, 0, "{info:?}");
}

/// Schedules (a window past midnight in another zone, dates, days) and priorities are checked
/// without allocating, whether the event time falls inside or outside.
#[test]
fn schedules_allocate_nothing() {
    let yaml = r#"version: v1
programme:
  timezone: Europe/Berlin
scenarios:
  - id: sc_night
    enabled: true
    event_types: [purchase]
    priority: 5
    schedule: {from: 2026-01-01, until: 2026-12-31, days: [fri, sat], hours: "22:00-02:00", timezone: America/New_York}
    children:
      - action: {id: act_night, type: reward_points, params: {operation: award, points: 5}}
  - id: sc_any
    enabled: true
    event_types: [purchase]
    exclusive_group: offer
    children:
      - action: {id: act_any, type: reward_points, params: {operation: award, points: 1}}
"#;
    let rules = Rules::load_str(yaml, &ActionRegistry::builtin()).unwrap();
    for (at, planned) in [("2026-11-28T04:30:00Z", 2), ("2026-11-25T12:00:00Z", 1)] {
        let json = format!(r#"{{"type": "purchase", "actor_id": "u1", "occurred_at": "{at}"}}"#);
        let event = Event::from_slice(json.as_bytes()).unwrap();
        let mut out = rules.new_evaluation();
        let info = allocations_of_evaluate(&rules, &event, &mut out);
        assert_eq!(out.planned.len(), planned, "{at}: {out:?}");
        assert_eq!(info.count_total, 0, "{at}: {info:?}");
    }
}

/// Functions read the event time in the programme's zone and compute without allocating:
/// Friday 23:30 UTC is Saturday 00:30 in Berlin.
#[test]
fn functions_allocate_nothing_and_read_the_programmes_zone() {
    let yaml = r#"version: v1
programme:
  timezone: Europe/Berlin
scenarios:
  - id: sc_weekend_night
    enabled: true
    event_types: [purchase]
    children:
      - condition:
          id: cond_saturday_small_hours
          expression: "day_of_week() in ['sat', 'sun'] AND hour() < 6 AND len(payload.items) >= 2 AND lower(payload.channel) in ['app', 'web'] AND upper(payload.channel) contains 'PP'"
          children:
            - action:
                id: act_capped
                type: reward_points
                params: {operation: award, points_formula: "min(max(round(payload.total), 1), 50) + abs(floor(-0.5)) + ceil(0.2)"}
"#;
    let rules = Rules::load_str(yaml, &ActionRegistry::builtin()).unwrap();
    let json = r#"{"type": "purchase", "actor_id": "u1", "occurred_at": "2026-12-04T23:30:00Z",
                   "payload": {"total": 80.4, "items": ["a", "b"], "channel": "App"}}"#;
    let event = Event::from_slice(json.as_bytes()).unwrap();
    let mut out = rules.new_evaluation();
    let info = allocations_of_evaluate(&rules, &event, &mut out);
    assert_eq!(out.planned.len(), 1, "{out:?}");
    assert_eq!(out.planned[0].plan, Plan::Points(PointsChange::of(52)));
    assert_eq!(info.count_total, 0, "{info:?}");
}
