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
    assert!(out.contains("coverage: 3/3 conditions and 2/2 actions reached"), "{out}");
    assert!(out.trim_end().ends_with("rule test result: ok. 6 passed; 0 failed"), "{out}");
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
    let (code, out) = run(&[file.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(out.contains("cases[0].expect.matchd: unknown field `matchd`"), "{out}");
    assert!(out.contains("1 file(s) could not run"), "{out}");
}
