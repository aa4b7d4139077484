//! Property tests of the expression language.
//!
//! (a) the parser answers `Ok` or `Err` for any input and never panics;
//! (b) generated valid expressions parse to the tree the grammar says, and print back (Display)
//!     to text that parses to the same tree;
//! (c) compiling and evaluating whatever parses never panics.

use fluxflow::event::Event;
use fluxflow::expr::{Program, Purpose, Truth, parser};
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::FileFailurePersistence;
use serde_json::json;

/// Default case counts; a failure is saved beside this file (`expr_props.proptest-regressions`).
fn config() -> ProptestConfig {
    ProptestConfig {
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
        ..ProptestConfig::default()
    }
}

// ------------------------------------------------------------------------------------------
// Events the evaluator runs against: every path of the generators, with varied types.

fn events() -> Vec<Event> {
    let values = [
        json!({"type": "purchase", "id": "e1", "source": "pos", "actor_id": "u1",
               "payload": {"a": 5, "b": {"c": "x"}, "utm-source": "mail", "items": [{"sku": "A1"}, 2],
                           "x y": true, "and": null, "flag": false, "zero": 0},
               "meta": {"k": "7", "x-region": "eu"}}),
        json!({"type": "login", "payload": {"a": "5", "b": [1, "2"], "items": [], "flag": true, "zero": -0.0}}),
        json!({"type": "t", "payload": {"a": 1e308, "b": {"c": {"d": [null]}}, "items": "abc", "zero": "0"}}),
        json!({"type": "t"}),
    ];
    values
        .into_iter()
        .map(|v| Event::from_value(v).unwrap_or_else(|e| panic!("a test event is invalid: {e}")))
        .collect()
}

/// Compiles `src` for every purpose and evaluates whatever compiles against every event.
fn compile_and_evaluate(src: &str, events: &[Event]) {
    for purpose in [Purpose::Condition, Purpose::Formula, Purpose::Ratio] {
        let Ok(program) = Program::compile(src, purpose) else {
            continue;
        };
        for event in events {
            match purpose {
                Purpose::Condition => {
                    if let Truth::Unknown(u) = program.truth(event) {
                        let _ = program.explain(&u);
                    }
                }
                Purpose::Formula | Purpose::Ratio => {
                    if let Err(u) = program.number(event) {
                        let _ = program.explain(&u);
                    }
                }
            }
        }
    }
}

/// Whatever parses prints back to text that parses to the same tree.
fn assert_round_trip(src: &str) -> Result<(), TestCaseError> {
    let Ok(tree) = parser::parse(src) else {
        return Ok(());
    };
    let printed = tree.to_string();
    let again = parser::parse(&printed);
    prop_assert!(again.is_ok(), "{src:?} prints as {printed:?}, which does not parse: {again:?}");
    if let Ok(again) = again {
        prop_assert_eq!(again.to_sexpr(), tree.to_sexpr(), "{:?} prints as {:?}", src, printed);
    }
    Ok(())
}

// ------------------------------------------------------------------------------------------
// (a) Arbitrary input.

/// Operands, operators and near misses; joined, value-operator-value strings often parse.
#[rustfmt::skip]
const VALUES: &[&str] = &[
    "payload.a", "payload.b.c", "payload[\"utm-source\"]", "payload.items[0].sku", "payload.items[9]", "meta.k",
    "meta['x-region']", "event.type", "event.source", "payload", "1", "2.5",
    "1e3", "5.", "0", "'s'", "\"t\"", "'\\''",
    "'\\d+'", "true", "FALSE", "null", "-1", "(payload.a)",
    "NOT payload.flag",
];
const OPERATORS: &[&str] =
    &["==", "!=", ">", ">=", "<", "<=", "contains", "MATCHES", "AND", "or", "+", "-", "*", "/", "%", "AND NOT"];
#[rustfmt::skip]
const NOISE: &[&str] = &[
    "=", "!", "(", ")", "[", "]", ".", "&&", "'", "\"", "\\", "foo",
    "é", "1e999", "9999999999999999999999999", "Not", "-", "((", "))", "'(", "payload.", "meta.a.b", "event.x",
];

fn soup_token(from: &'static [&'static str]) -> impl Strategy<Value = &'static str> {
    prop_oneof![9 => select(from), 1 => select(NOISE)]
}

fn token_soup() -> impl Strategy<Value = String> {
    let pair = (soup_token(OPERATORS), soup_token(VALUES), select(&[" ", "", "\t"][..]));
    (soup_token(VALUES), prop::collection::vec(pair, 0..8)).prop_map(|(first, rest)| {
        let mut text = first.to_owned();
        for (op, value, space) in rest {
            text.extend([space, op, " ", value]);
        }
        text
    })
}

fn lossy_bytes() -> impl Strategy<Value = String> {
    prop::collection::vec(any::<u8>(), 0..200).prop_map(|b| String::from_utf8_lossy(&b).into_owned())
}

proptest! {
    #![proptest_config(config())]
    #[test]
    fn parse_never_panics_on_any_string(src in any::<String>()) {
        let _ = parser::parse(&src);
    }

    #[test]
    fn parse_never_panics_on_any_bytes(src in lossy_bytes()) {
        let _ = parser::parse(&src);
    }

    #[test]
    fn token_soup_parses_or_fails_cleanly_and_round_trips(src in token_soup()) {
        assert_round_trip(&src)?;
    }

    #[test]
    fn token_soup_compiles_and_evaluates_without_panicking(src in token_soup()) {
        compile_and_evaluate(&src, &events());
    }
}

// ------------------------------------------------------------------------------------------
// (b) Generated valid expressions: text, the tree it must parse to, and its precedence.

/// A generated expression.
#[derive(Debug, Clone)]
struct Gen {
    /// The expression as written.
    text: String,
    /// The tree the parser must build, as [`fluxflow::expr::ast::Expr::to_sexpr`] prints it.
    sexpr: String,
    /// How tightly the text binds as an operand (as in the parser; 255 for atoms).
    prec: u8,
}

const ATOM: u8 = u8::MAX;
const NOT_PREC: u8 = 3;
const NEG_PREC: u8 = 7;

fn atom(text: String, sexpr: String) -> Gen {
    Gen { text, sexpr, prec: ATOM }
}

/// Paths as written, and as the tree prints them.
const PATHS: &[(&str, &str)] = &[
    ("payload.a", "payload.a"),
    ("payload.b.c", "payload.b.c"),
    ("payload[\"utm-source\"]", "payload[\"utm-source\"]"),
    ("payload['x y']", "payload[\"x y\"]"),
    ("payload[\"a\"]", "payload.a"),
    ("payload.items[0].sku", "payload.items[0].sku"),
    ("payload.items[12]", "payload.items[12]"),
    ("payload.and", "payload.and"),
    ("payload.flag", "payload.flag"),
    ("payload.zero", "payload.zero"),
    ("payload", "payload"),
    ("meta.k", "meta.k"),
    ("meta['x-region']", "meta[\"x-region\"]"),
    ("event.type", "event.type"),
    ("event.source", "event.source"),
    ("event.actor_id", "event.actor_id"),
    ("event.id", "event.id"),
];

fn paths_from(list: &'static [(&'static str, &'static str)]) -> impl Strategy<Value = Gen> {
    select(list).prop_map(|(text, canonical)| atom(text.into(), canonical.into()))
}

fn path() -> impl Strategy<Value = Gen> {
    paths_from(PATHS)
}

fn number() -> impl Strategy<Value = Gen> {
    let written =
        select(&["0", "12", "3.5", "1e3", "1E3", "5.", "2.5e-3", "1e+2", "0.1", "007"][..]).prop_map(String::from);
    let integer = any::<u32>().prop_map(|n| n.to_string());
    let float = (0.0f64..1e12).prop_map(|x| x.to_string());
    prop_oneof![written, integer, float].prop_map(|text| {
        let n: f64 = text.parse().unwrap_or(f64::NAN);
        atom(text, format!("{n:?}"))
    })
}

/// A string literal: pieces of text (each piece as written, and what it reads as) in a quote.
fn string() -> impl Strategy<Value = Gen> {
    let quote = select(&['\'', '"'][..]);
    quote.prop_flat_map(|q| {
        let other = if q == '"' { '\'' } else { '"' };
        let pieces: Vec<(String, String)> = vec![
            ("a".into(), "a".into()),
            (" ".into(), " ".into()),
            ("é☕".into(), "é☕".into()),
            ("\\\\".into(), "\\".into()),
            (format!("\\{q}"), q.to_string()),
            (format!("\\{other}"), other.to_string()),
            (other.to_string(), other.to_string()),
            ("\\d".into(), "\\d".into()),
            ("\\.".into(), "\\.".into()),
            ("\\n".into(), "\\n".into()),
        ];
        prop::collection::vec(select(pieces), 0..6).prop_map(move |parts| {
            let (written, read): (String, String) = parts.into_iter().unzip();
            atom(format!("{q}{written}{q}"), format!("{read:?}"))
        })
    })
}

fn keyword_literal() -> impl Strategy<Value = Gen> {
    select(&[("true", "true"), ("TRUE", "true"), ("False", "false"), ("null", "null"), ("NULL", "null")][..])
        .prop_map(|(text, sexpr)| atom(text.into(), sexpr.into()))
}

fn leaf() -> impl Strategy<Value = Gen> {
    prop_oneof![3 => path(), 2 => number(), 1 => string(), 1 => keyword_literal()]
}

/// Binary operators: how each may be written, its tree symbol and its precedence.
const BINARY: &[(&[&str], &str, u8)] = &[
    (&["OR", "or", "Or"], "OR", 1),
    (&["AND", "and", "aNd"], "AND", 2),
    (&["=="], "==", 4),
    (&["!="], "!=", 4),
    (&[">"], ">", 4),
    (&[">="], ">=", 4),
    (&["<"], "<", 4),
    (&["<="], "<=", 4),
    (&["contains", "CONTAINS"], "contains", 4),
    (&["matches", "Matches"], "matches", 4),
    (&["+"], "+", 5),
    (&["-"], "-", 5),
    (&["*"], "*", 6),
    (&["/"], "/", 6),
    (&["%"], "%", 6),
];

/// Writes an operand, in parentheses when its precedence requires them or when asked to.
fn operand(g: &Gen, needs_parens: bool, extra_parens: bool) -> String {
    if needs_parens || extra_parens { format!("({})", g.text) } else { g.text.clone() }
}

/// True now and then: for optional parentheses.
fn rare() -> impl Strategy<Value = bool> {
    prop::bool::weighted(0.15)
}

fn space() -> impl Strategy<Value = &'static str> {
    select(&[" ", " ", "  ", "\t", "\n"][..])
}

fn binary(l: Gen, r: Gen, op: usize, spelling: usize, parens: (bool, bool), spaces: (&str, &str)) -> Gen {
    let (spellings, symbol, p) = BINARY[op % BINARY.len()];
    let written = spellings[spelling % spellings.len()];
    let comparison = p == 4;
    // Left-associative: the left operand may share the level (comparisons excepted), the right may not.
    let left = operand(&l, l.prec < p || (comparison && l.prec == p), parens.0);
    let right = operand(&r, r.prec <= p, parens.1);
    // Words need white space around them; symbols may go without.
    let word = written.bytes().all(|b| b.is_ascii_alphabetic());
    let (before, after) = if word { (" ", " ") } else { spaces };
    Gen {
        text: format!("{left}{before}{written}{after}{right}"),
        sexpr: format!("({symbol} {} {})", l.sexpr, r.sexpr),
        prec: p,
    }
}

fn not(inner: Gen, spelling: &str, extra_parens: bool) -> Gen {
    let text = format!("{spelling} {}", operand(&inner, inner.prec < NOT_PREC, extra_parens));
    Gen { text, sexpr: format!("(NOT {})", inner.sexpr), prec: NOT_PREC }
}

fn neg(inner: Gen, space: &str, extra_parens: bool) -> Gen {
    let text = format!("-{space}{}", operand(&inner, inner.prec < NEG_PREC, extra_parens));
    Gen { text, sexpr: format!("(- {})", inner.sexpr), prec: NEG_PREC }
}

fn expression() -> impl Strategy<Value = Gen> {
    leaf().prop_recursive(6, 48, 2, |inner| {
        prop_oneof![
            4 => (inner.clone(), inner.clone(), any::<usize>(), any::<usize>(), (rare(), rare()), space(), space())
                .prop_map(|(l, r, op, spelling, parens, s1, s2)| binary(l, r, op, spelling, parens, (s1, s2))),
            1 => (inner.clone(), select(&["NOT", "not", "Not"][..]), rare())
                .prop_map(|(e, spelling, parens)| not(e, spelling, parens)),
            1 => (inner.clone(), select(&["", " "][..]), rare()).prop_map(|(e, s, parens)| neg(e, s, parens)),
            1 => inner.prop_map(|e| Gen { text: format!("({})", e.text), prec: ATOM, ..e }),
        ]
    })
}

// ------------------------------------------------------------------------------------------
// Well-typed expressions, which must load: formulas and conditions.

/// Indices into [`BINARY`].
const OR_AND: std::ops::Range<usize> = 0..2;
const EQUALITY: std::ops::Range<usize> = 2..4;
const ORDERINGS_AND_EQUALITY: std::ops::Range<usize> = 2..8;
const CONTAINS: usize = 8;
const MATCHES: usize = 9;
const ARITHMETIC: std::ops::Range<usize> = 10..15;

fn formula() -> impl Strategy<Value = Gen> {
    const NUMERIC: &[(&str, &str)] = &[
        ("payload.a", "payload.a"),
        ("payload.zero", "payload.zero"),
        ("payload.b.c", "payload.b.c"),
        ("payload.items[1]", "payload.items[1]"),
        ("meta.k", "meta.k"),
    ];
    prop_oneof![paths_from(NUMERIC), number()].prop_recursive(5, 32, 2, |inner| {
        prop_oneof![
            3 => (inner.clone(), inner.clone(), ARITHMETIC, (rare(), rare()), space(), space())
                .prop_map(|(l, r, op, parens, s1, s2)| binary(l, r, op, 0, parens, (s1, s2))),
            1 => (inner, select(&["", " "][..]), rare()).prop_map(|(e, s, parens)| neg(e, s, parens)),
        ]
    })
}

/// Valid regexes, written without quotes or backslash-quote pairs.
const REGEXES: &[&str] = &["^a", "[0-9]+", "(?i)x", "\\d+\\.\\d", "é|☕", "^$", "a{2,3}", "LOY-[0-9]{4}"];

fn condition_leaf() -> impl Strategy<Value = Gen> {
    const BOOLEAN: &[(&str, &str)] = &[
        ("payload.flag", "payload.flag"),
        ("payload['x y']", "payload[\"x y\"]"),
        ("true", "true"),
        ("FALSE", "false"),
    ];
    let ordering = (formula(), formula(), ORDERINGS_AND_EQUALITY, (rare(), rare()), space(), space())
        .prop_map(|(l, r, op, parens, s1, s2)| binary(l, r, op, 0, parens, (s1, s2)));
    let other = prop_oneof![string(), keyword_literal(), number(), path()];
    let equality = (path(), other, EQUALITY, space(), space())
        .prop_map(|(l, r, op, s1, s2)| binary(l, r, op, 0, (false, false), (s1, s2)));
    let contains = (path(), prop_oneof![string(), number(), path()], any::<usize>())
        .prop_map(|(l, r, spelling)| binary(l, r, CONTAINS, spelling, (false, false), (" ", " ")));
    let pattern = select(REGEXES).prop_map(|re| atom(format!("'{re}'"), format!("{re:?}")));
    let matches = (path(), pattern, any::<usize>(), rare())
        .prop_map(|(l, r, spelling, parens)| binary(l, r, MATCHES, spelling, (false, parens), (" ", " ")));
    prop_oneof![2 => ordering, 1 => equality, 1 => contains, 1 => matches, 1 => paths_from(BOOLEAN)]
}

fn condition() -> impl Strategy<Value = Gen> {
    condition_leaf().prop_recursive(4, 24, 2, |inner| {
        prop_oneof![
            3 => (inner.clone(), inner.clone(), OR_AND, any::<usize>(), (rare(), rare()))
                .prop_map(|(l, r, op, spelling, parens)| binary(l, r, op, spelling, parens, (" ", " "))),
            1 => (inner, select(&["NOT", "not", "Not"][..]), rare()).prop_map(|(e, spelling, parens)| not(e, spelling, parens)),
        ]
    })
}

/// The expression loads for its purpose, parses to the intended tree, and evaluates.
fn check_typed(g: &Gen, purpose: Purpose) -> Result<(), TestCaseError> {
    let tree = parser::parse(&g.text).map_err(|e| TestCaseError::fail(format!("{:?} does not parse: {e}", g.text)))?;
    prop_assert_eq!(tree.to_sexpr(), g.sexpr.clone(), "parsing {:?}", g.text);
    let program = Program::compile(&g.text, purpose);
    prop_assert!(program.is_ok(), "{:?} does not load as a {purpose:?}: {:?}", g.text, program.err());
    compile_and_evaluate(&g.text, &events());
    Ok(())
}

proptest! {
    #![proptest_config(config())]
    #[test]
    fn generated_formulas_load_and_evaluate(g in formula()) {
        check_typed(&g, Purpose::Formula)?;
    }

    #[test]
    fn generated_conditions_load_and_evaluate(g in condition()) {
        check_typed(&g, Purpose::Condition)?;
    }
}

proptest! {
    #![proptest_config(config())]
    #[test]
    fn generated_expressions_parse_to_the_intended_tree(g in expression()) {
        let tree = parser::parse(&g.text);
        prop_assert!(tree.is_ok(), "{:?} does not parse: {:?}", g.text, tree);
        if let Ok(tree) = tree {
            prop_assert_eq!(tree.to_sexpr(), g.sexpr, "parsing {:?}", g.text);
        }
    }

    #[test]
    fn generated_expressions_print_back_to_the_same_tree(g in expression()) {
        assert_round_trip(&g.text)?;
    }

    #[test]
    fn generated_expressions_compile_and_evaluate_without_panicking(g in expression()) {
        compile_and_evaluate(&g.text, &events());
    }
}
