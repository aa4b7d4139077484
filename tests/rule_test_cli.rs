//! `fluxflow test`: rule test files run like unit tests, with failures, traces and coverage.

mod common;

use std::path::Path;
use std::process::Command;

fn run(args: &[&str]) -> (i32, String) {
    run_in(Path::new(env!("CARGO_MANIFEST_DIR")), args)
}

fn run_in(dir: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_fluxflow")).current_dir(dir).arg("test").args(args).output().unwrap();
    (out.status.code().unwrap(), String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The shipped example tests, against the test-owned copy of the rules they name.
#[test]
fn example_rule_tests_pass() {
    let sandbox = common::sandbox();
    let (code, out) = run_in(sandbox.path(), &["examples/"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("case high-value food purchase earns 5% ... ok"), "{out}");
    assert!(out.contains("coverage: 4/4 conditions and 5/5 actions reached"), "{out}");
    assert!(out.trim_end().ends_with("rule test result: ok. 11 passed; 0 failed"), "{out}");
}

#[test]
fn failures_show_what_differs_the_trace_and_what_no_case_reached() {
    let (code, out) = run(&["tests/ruletests/failing.test.yaml"]);
    assert_eq!(code, 1, "{out}");
    for expected in [
        "case paid purchase earns a tenth ... ok",
        "case wrong expectation shows the trace ... FAILED",
        "case redeem within the balance ... ok",
        "case redeem beyond the balance fails ... FAILED",
        "---- wrong expectation shows the trace ----",
        "  matched: expected [\"earn\"], got []",
        "      condition paid: payload.status == 'paid' -> false  [payload.status = \"pending\"]",
        "        action earn_points -> pruned",
        "  not_fired `earn`: reason \"this reason is wrong\" is not in \"skipped: it does not listen to this event type\"",
        "  not_fired: scenario `spend` fired",
        "coverage: 2/2 conditions and 2/4 actions reached",
        "  not reached: action `coupon_bonus` (scenario `earn`)",
        "  not reached: action `retired` (scenario `old`, disabled)",
        "rule test result: FAILED. 2 passed; 2 failed",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
}

#[test]
fn a_broken_test_file_is_reported_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("typo.test.yaml");
    std::fs::write(
        &file,
        "rules_inline: 'version: v1'\ncases:\n  - name: x\n    event: {type: t}\n    expect: {matchd: []}\n",
    )
    .unwrap();
    let name = file.to_str().unwrap();
    let (code, out) = run(&[name]);
    assert_eq!(code, 1);
    assert!(
        out.contains(&format!(
            "{name}:5:14: error: unknown key `matchd` in `expect` of case `x` (did you mean `matched`?)"
        )),
        "{out}"
    );
    assert!(out.contains("1 file(s) could not run"), "{out}");
}

/// Runs one test file with this text; its name and the output.
fn run_text(text: &str) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("broken.test.yaml");
    std::fs::write(&file, text).unwrap();
    let name = file.to_str().unwrap().to_owned();
    let (code, out) = run(&[&name]);
    (code, name, out)
}

#[test]
fn every_problem_of_a_test_file_has_its_line_and_column_and_misspelt_keys_a_suggestion() {
    let cases = [
        (
            "rules_inline: 'version: v1'\ncase:\n  - name: x\n    event: {type: t}\n    expct: {}\n",
            vec!["2:1: error: unknown key `case` in the rule test file (did you mean `cases`?)"],
        ),
        (
            // Every misspelt key at once, however deep.
            "rules_inline: 'version: v1'\nbalance: {a: 1}\ncases:\n  - name: x\n    evnt: {type: t}\n    expect:\n      \
             not_fired: [{scenaro: s}]\n",
            vec![
                "2:1: error: unknown key `balance` in the rule test file (did you mean `balances`?)",
                "5:5: error: unknown key `evnt` in case `x` (did you mean `event`?)",
                "7:20: error: unknown key `scenaro` in a `not_fired` item of case `x` (did you mean `scenario`?)",
            ],
        ),
        (
            "rules_inline: 'version: v1'\ncases:\n  - name: x\n    event: {type: t}\n    expect: {points: many}\n",
            vec!["5:22: error: cases[0].expect.points: invalid type: string \"many\", expected i64"],
        ),
        (
            "rules_inline: 'version: v1'\ncases:\n  - name: x\n    event: {type: t, actorId: u}\n",
            vec!["4:12: error: case `x`: event: unknown field `actorId`"],
        ),
        (
            "rules_inline: 'version: v1'\ncases:\n  - name: x\n    earlier_events:\n      - {type: t}\n      \
             - {type: t, occured_at: x}\n    event: {type: t}\n",
            vec!["6:9: error: case `x`: earlier_events[1]: unknown field `occured_at`"],
        ),
        (
            "rules_inline: 'version: v1'\ncases:\n  - name: x\n    earlier_event: []\n    event: {type: t}\n",
            vec!["4:5: error: unknown key `earlier_event` in case `x` (did you mean `earlier_events`?)"],
        ),
        ("rules_inline: 'version: v1'\ncases:\n  - name: x\n\tevent: {type: t}\n", vec!["4:1: error: YAML syntax: "]),
        (
            "rules: a.yaml\nrules_inline: 'version: v1'\ncases: []\n",
            vec!["2:15: error: give exactly one of `rules` (a path) or `rules_inline` (the text)"],
        ),
    ];
    for (text, expected) in cases {
        let (code, name, out) = run_text(text);
        assert_eq!(code, 1, "{out}");
        assert!(out.contains(&format!("error: {name} is not a valid rule test file:")), "{out}");
        for line in expected {
            assert!(out.contains(&format!("\n{name}:{line}")), "missing `{line}` in:\n{out}");
        }
    }
}
