//! Fuzzing on stable Rust, as bounded property tests: the event decoder, the rules loader and the
//! expression language are fed arbitrary input and mutations of real input (every example rules
//! file and the invalid ones of `tests/rules/invalid`, expressions made of the language's own
//! tokens). `tests/expr_props.rs` adds the grammar's round trip.
//!
//! Each case must end without a panic, within [`CASE_TIME`] (no hang: a watchdog thread), and
//! allocate at most [`CASE_MEMORY`] at its peak (no unbounded memory). The budget is
//! `FLUXFLOW_FUZZ_CASES` cases per target (default 256; `.ci/run` sets a larger fixed one). A
//! failing input is saved by proptest in `tests/fuzz.proptest-regressions` and tried first on
//! every run; inputs that once broke a limit are kept as files in `tests/fuzz/` and replayed by
//! `kept_inputs_stay_bounded`.

use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

use allocation_counter::measure;
use fluxflow::actions::ActionRegistry;
use fluxflow::event::Event;
use fluxflow::expr::{Program, Purpose, Truth};
use fluxflow::graph::Rules;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::FileFailurePersistence;
use serde_json::Value;

/// Longest a case may take (debug build, a busy CI machine).
const CASE_TIME: Duration = Duration::from_secs(10);
/// Most memory a case may hold at once.
const CASE_MEMORY: u64 = 256 << 20;

fn config() -> ProptestConfig {
    let cases = std::env::var("FLUXFLOW_FUZZ_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(256);
    ProptestConfig {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
        ..ProptestConfig::default()
    }
}

/// Runs `work` on a thread of its own; fails when it panics, outlasts [`CASE_TIME`] or holds
/// more than [`CASE_MEMORY`] at its peak.
fn bounded(what: &str, work: impl FnOnce() + Send + 'static) -> Result<(), TestCaseError> {
    let (done, finished) = mpsc::channel();
    std::thread::spawn(move || {
        let info = measure(work);
        let _ = done.send(info.bytes_max);
    });
    match finished.recv_timeout(CASE_TIME) {
        Ok(peak) if peak > CASE_MEMORY => Err(TestCaseError::fail(format!("{what}: held {peak} bytes at its peak"))),
        Ok(_) => Ok(()),
        Err(mpsc::RecvTimeoutError::Timeout) => {
            Err(TestCaseError::fail(format!("{what}: still running after {CASE_TIME:?}")))
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => Err(TestCaseError::fail(format!("{what}: panicked"))),
    }
}

fn decode_event(bytes: Vec<u8>) -> Result<(), TestCaseError> {
    bounded("event decoder", move || {
        let _ = Event::from_slice(&bytes);
    })
}

fn load_rules(text: String) -> Result<(), TestCaseError> {
    bounded("rules loader", move || {
        let _ = Rules::load_str(&text, &ActionRegistry::builtin());
    })
}

/// Compiles `src` for every purpose and evaluates whatever compiles against a sample event.
fn compile_and_evaluate(src: String) -> Result<(), TestCaseError> {
    bounded("expression", move || {
        let event = Event::from_slice(
            br#"{"type":"purchase","actor_id":"u1","payload":{"a":5,"b":{"c":"x"},"items":[1,"2"]},"meta":{"k":"v"}}"#,
        )
        .unwrap();
        for purpose in [Purpose::Condition, Purpose::Formula, Purpose::Ratio] {
            let Ok(program) = Program::compile(&src, purpose) else { continue };
            match purpose {
                Purpose::Condition => {
                    if let Truth::Unknown(u) = program.truth(&event) {
                        let _ = program.explain(&u);
                    }
                }
                Purpose::Formula | Purpose::Ratio => {
                    if let Err(u) = program.number(&event) {
                        let _ = program.explain(&u);
                    }
                }
            }
        }
    })
}

/// The language's own words, so that random text often parses.
const EXPRESSION_TOKENS: &[&str] = &[
    "payload.a",
    "payload.b.c",
    "payload.items",
    "meta.k",
    "actor_id",
    "type",
    " ",
    "(",
    ")",
    "[",
    "]",
    ",",
    "AND",
    "OR",
    "NOT",
    "==",
    "!=",
    ">",
    ">=",
    "<",
    "<=",
    "+",
    "-",
    "*",
    "/",
    "%",
    "in",
    "contains",
    "matches",
    "'x'",
    "'[a-z]+'",
    "'(a+)+$'",
    "1",
    "0",
    "-1",
    "1e308",
    "0.1",
    "true",
    "false",
    "null",
    "count('purchase', '30d')",
    "sum('purchase', 'payload.total', 'month')",
    "first('purchase')",
    "balance",
    "tier",
    "min(",
    "max(",
    "abs(",
    "round(",
    "floor(",
    "len(",
    "lower(",
    "exists(",
    "now",
    "day_of_week",
    "'2026-01-01T00:00:00Z'",
];

fn repo(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// Every rules file there is to mutate: the example programmes and the invalid-file corpus.
fn rules_files() -> Vec<String> {
    let mut paths = vec![repo("tests/fixtures/example-rules.yaml"), repo("tests/fixtures/original-rules.yaml")];
    let invalid = std::fs::read_dir(repo("tests/rules/invalid")).unwrap();
    paths.extend(invalid.map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|x| x == "yaml")));
    paths.sort();
    paths.into_iter().map(|p| std::fs::read_to_string(p).unwrap()).collect()
}

/// Real events to mutate.
fn event_samples() -> Vec<Vec<u8>> {
    vec![
        std::fs::read(repo("examples/event.json")).unwrap(),
        br#"{"id":"e1","type":"purchase","actor_id":"u1","occurred_at":"2026-11-28T10:00:00Z","payload":{"total":42.5,"items":[{"sku":"A"}]},"meta":{"k":"v"}}"#.to_vec(),
        br#"[{"type":"login"},{"type":"refund","payload":{"order":"o1"}}]"#.to_vec(),
    ]
}

/// One edit of a text: bytes flipped, cut, repeated or inserted, lines duplicated or swapped.
#[derive(Debug, Clone)]
enum Mutation {
    Flip { at: usize, byte: u8 },
    Cut { at: usize, len: usize },
    Insert { at: usize, text: &'static str },
    RepeatLine { line: usize, times: usize },
    SwapLines { a: usize, b: usize },
    Truncate { at: usize },
}

/// What YAML and JSON make of: a fuzzer that only flips bits seldom makes a new structure.
const TOKENS: &[&str] = &[
    "\n",
    "  ",
    "- ",
    ": ",
    "{",
    "}",
    "[",
    "]",
    ",",
    "\"",
    "'",
    "#",
    "&a ",
    "*a",
    "!!str ",
    "? ",
    "|\n",
    ">-\n",
    "~",
    "null",
    "true",
    "1e999",
    "-0",
    "0x10",
    "9223372036854775808",
    "\u{0}",
    "\u{feff}",
    "\u{202e}",
    "é",
    "expression: ",
    "count('purchase', '30d')",
    "payload.total * 1.25",
    "points_formula: ",
    "${X}",
    "---\n",
    "...\n",
    "\\u0000",
    "\\ud800",
    "{\"a\":",
    "[[[[",
    "]]]]",
    "1.7976931348623157e309",
];

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Flip { at, byte }),
        (any::<usize>(), 1usize..64).prop_map(|(at, len)| Mutation::Cut { at, len }),
        (any::<usize>(), select(TOKENS)).prop_map(|(at, text)| Mutation::Insert { at, text }),
        (any::<usize>(), 2usize..50).prop_map(|(line, times)| Mutation::RepeatLine { line, times }),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::SwapLines { a, b }),
        any::<usize>().prop_map(|at| Mutation::Truncate { at }),
    ]
}

fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for mutation in mutations {
        let len = bytes.len().max(1);
        match *mutation {
            Mutation::Flip { at, byte } => {
                if let Some(b) = bytes.get_mut(at % len) {
                    *b = byte;
                }
            }
            Mutation::Cut { at, len: cut } => {
                let start = (at % len).min(bytes.len());
                let end = (start + cut).min(bytes.len());
                bytes.drain(start..end);
            }
            Mutation::Insert { at, text } => {
                let at = (at % len).min(bytes.len());
                bytes.splice(at..at, text.bytes());
            }
            Mutation::RepeatLine { line, times } | Mutation::SwapLines { a: line, b: times } => {
                let mut lines: Vec<Vec<u8>> = bytes.split(|b| *b == b'\n').map(<[u8]>::to_vec).collect();
                let count = lines.len();
                if let Mutation::SwapLines { .. } = mutation {
                    lines.swap(line % count, times % count);
                } else {
                    let copy = lines[line % count].clone();
                    for _ in 0..times {
                        lines.insert(line % count, copy.clone());
                    }
                }
                bytes = lines.join(&b'\n');
            }
            Mutation::Truncate { at } => bytes.truncate(at % len),
        }
    }
    bytes
}

/// JSON values of any shape, nested a little.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,20}".prop_map(Value::String),
    ];
    leaf.prop_recursive(6, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{0,8}|type|id|actor_id|payload|meta|occurred_at", inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn the_event_decoder_takes_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        decode_event(bytes)?;
    }

    #[test]
    fn the_event_decoder_takes_any_json(value in json_value()) {
        decode_event(serde_json::to_vec(&value).unwrap())?;
    }

    #[test]
    fn the_event_decoder_takes_mutated_events(
        sample in select(event_samples()),
        mutations in prop::collection::vec(mutation(), 1..8),
    ) {
        decode_event(mutate(sample, &mutations))?;
    }

    #[test]
    fn the_rules_loader_takes_mutated_rules_files(
        file in select(rules_files()),
        mutations in prop::collection::vec(mutation(), 1..6),
    ) {
        load_rules(String::from_utf8_lossy(&mutate(file.into_bytes(), &mutations)).into_owned())?;
    }

    #[test]
    fn the_rules_loader_takes_any_text(text in ".{0,400}") {
        load_rules(text)?;
    }

    #[test]
    fn the_expression_language_takes_its_own_tokens_in_any_order(
        tokens in prop::collection::vec(select(EXPRESSION_TOKENS), 1..40),
    ) {
        compile_and_evaluate(tokens.join(" "))?;
    }

    #[test]
    fn the_expression_language_takes_any_text(text in ".{0,200}") {
        compile_and_evaluate(text)?;
    }
}

/// The harness itself: a panic and a memory hog are caught.
#[test]
fn the_bounds_catch_a_panic_and_a_memory_hog() {
    assert!(bounded("panic", || panic!("on purpose")).is_err());
    let hog = bounded("hog", || {
        let held = vec![1u8; (CASE_MEMORY + (1 << 20)) as usize];
        std::hint::black_box(&held);
    });
    assert!(hog.is_err(), "{hog:?}");
    assert!(bounded("fine", || {}).is_ok());
}

/// Inputs that once broke a limit (an alias bomb took 23 GB), kept as files and replayed.
#[test]
fn kept_inputs_stay_bounded() {
    let mut replayed = 0;
    for (dir, is_rules) in [("tests/fuzz/rules", true), ("tests/fuzz/events", false)] {
        for entry in std::fs::read_dir(repo(dir)).unwrap() {
            let path = entry.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            let outcome =
                if is_rules { load_rules(String::from_utf8_lossy(&bytes).into_owned()) } else { decode_event(bytes) };
            assert!(outcome.is_ok(), "{}: {outcome:?}", path.display());
            replayed += 1;
        }
    }
    assert!(replayed >= 5);
}
