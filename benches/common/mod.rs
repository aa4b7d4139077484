//! What the evaluation and compile benches share: a generator of large rules files.
//!
//! Every generated scenario is shaped like the example's `sc_high_value_food`: two nested
//! conditions (a category, then an amount threshold) and a `reward_points` action with a
//! `points_formula`, with constants that vary from scenario to scenario. Scenarios are spread
//! evenly over [`EVENT_TYPES`] event types, round-robin, so scenario `i` listens to
//! `type_{i % 100}`.

use std::fmt::Write as _;

/// The service binary's allocator (src/main.rs), so the benches measure what the service does.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How many event types the generated scenarios are spread over.
pub const EVENT_TYPES: usize = 100;

/// The categories scenarios test for; the bench event's category is the first.
pub const CATEGORIES: [&str; 5] = ["food", "drinks", "electronics", "clothing", "books"];

/// The event type scenario `i` listens to.
pub fn event_type(i: usize) -> String {
    format!("type_{:02}", i % EVENT_TYPES)
}

/// A rules file with `count` enabled scenarios.
///
/// Within one event type the scenarios cycle through [`CATEGORIES`], and the amount thresholds
/// run from 100 to 2,900, so an event of category `food` and amount 1,500 passes the first
/// condition of one scenario in five and the second of about half of those.
pub fn scenarios_yaml(count: usize) -> String {
    let mut yaml = String::with_capacity(64 + count * 720);
    yaml.push_str("version: v1\n\nscenarios:\n");
    for i in 0..count {
        let round = i / EVENT_TYPES;
        let category = CATEGORIES[round % CATEGORIES.len()];
        let threshold = 100 + (round * 700 + i * 37) % 2800;
        let rate = 1 + i % 9;
        let bonus = i % 50;
        // `write!` into a String cannot fail.
        let _ = write!(
            yaml,
            r#"  - id: sc_{i:05}
    description: "Generated scenario {i}"
    enabled: true
    event_types: [{event_type}]
    sources: [pos-system, mobile-app]
    children:
      - condition:
          id: cond_{i:05}_category
          expression: 'payload.category == "{category}"'
          children:
            - condition:
                id: cond_{i:05}_amount
                expression: "payload.amount > {threshold}"
                children:
                  - action:
                      id: act_{i:05}_points
                      type: reward_points
                      params:
                        operation: award
                        points_formula: "payload.amount * 0.0{rate} + {bonus}"
                        reason: "Generated bonus {i}"
                        expiry_days: {expiry}
"#,
            event_type = event_type(i),
            expiry = 30 + i % 335,
        );
    }
    yaml
}
