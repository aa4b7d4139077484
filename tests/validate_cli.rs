//! Golden tests of `fluxflow validate` on broken rules files.
//!
//! Each `tests/rules/invalid/NN_name.yaml` has a `NN_name.expected` beside it holding `exit: N`
//! and then exactly what `fluxflow validate tests/rules/invalid/NN_name.yaml` prints to stdout,
//! run from the repository root. `UPDATE_GOLDEN=1 cargo test --test validate_cli` rewrites the
//! expected files from the current binary; review the diff before committing it.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

const INVALID_DIR: &str = "tests/rules/invalid";

fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `fluxflow validate` on files given relative to the repository root; returns the exit
/// code, stdout and stderr.
fn validate(files: &[&str]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_fluxflow"))
        .arg("validate")
        .args(files)
        .current_dir(repo_root())
        .output()
        .unwrap_or_else(|e| panic!("run fluxflow validate: {e}"));
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The `.yaml` cases, as paths relative to the repository root, in name order.
fn cases() -> Vec<String> {
    let dir = repo_root().join(INVALID_DIR);
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|entry| {
            entry.unwrap_or_else(|e| panic!("read a directory entry: {e}")).file_name().to_string_lossy().into_owned()
        })
        .filter(|name| name.ends_with(".yaml"))
        .collect();
    names.sort();
    names.into_iter().map(|name| format!("{INVALID_DIR}/{name}")).collect()
}

fn expected_path(case: &str) -> PathBuf {
    repo_root().join(case.replace(".yaml", ".expected"))
}

/// A line diff (longest common subsequence): `-` lines are expected only, `+` lines actual only.
fn diff(expected: &str, actual: &str) -> String {
    let a: Vec<&str> = expected.lines().collect();
    let b: Vec<&str> = actual.lines().collect();
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] { lcs[i + 1][j + 1] + 1 } else { lcs[i + 1][j].max(lcs[i][j + 1]) };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, String::new());
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            let _ = writeln!(out, "  {}", a[i]);
            i += 1;
            j += 1;
        } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            let _ = writeln!(out, "- {}", a[i]);
            i += 1;
        } else {
            let _ = writeln!(out, "+ {}", b[j]);
            j += 1;
        }
    }
    out
}

#[test]
fn invalid_rules_files_give_the_expected_messages() {
    let update = std::env::var("UPDATE_GOLDEN").is_ok_and(|v| v == "1");
    let cases = cases();
    assert!(cases.len() >= 20, "expected at least 20 cases in {INVALID_DIR}, found {}", cases.len());

    let mut failures = Vec::new();
    for case in &cases {
        let (code, stdout, stderr) = validate(&[case]);
        let actual = format!("exit: {code}\n{stdout}");
        let path = expected_path(case);
        if update {
            std::fs::write(&path, &actual).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
            continue;
        }
        let expected = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) => {
                failures.push(format!(
                    "{case}: cannot read {}: {e} (run with UPDATE_GOLDEN=1 to create it)",
                    path.display()
                ));
                continue;
            }
        };
        if actual != expected {
            let stderr = if stderr.is_empty() { String::new() } else { format!("stderr:\n{stderr}") };
            failures.push(format!(
                "{case}: output differs from {} (- expected, + actual):\n{}{stderr}",
                path.display(),
                diff(&expected, &actual)
            ));
        }
    }

    // Every expected file belongs to a case.
    let dir = repo_root().join(INVALID_DIR);
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display())) {
        let name =
            entry.unwrap_or_else(|e| panic!("read a directory entry: {e}")).file_name().to_string_lossy().into_owned();
        if let Some(stem) = name.strip_suffix(".expected") {
            if !dir.join(format!("{stem}.yaml")).exists() {
                failures.push(format!("{INVALID_DIR}/{name} has no {stem}.yaml beside it"));
            }
        }
    }

    assert!(
        failures.is_empty(),
        "{} of {} golden cases failed:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn every_broken_file_reports_a_position_and_a_severity() {
    for case in cases() {
        let (code, stdout, _) = validate(&[&case]);
        let summary = format!("{case}: ok (");
        for line in stdout.lines().filter(|l| !l.starts_with(&summary)) {
            let rest = line
                .strip_prefix(&format!("{case}:"))
                .unwrap_or_else(|| panic!("{case}: line does not start with the file name: {line}"));
            let mut parts = rest.splitn(3, ':');
            let line_no = parts.next().and_then(|s| s.parse::<u32>().ok());
            let col_no = parts.next().and_then(|s| s.parse::<u32>().ok());
            let message = parts.next().unwrap_or("");
            assert!(
                line_no.is_some_and(|n| n >= 1) && col_no.is_some_and(|n| n >= 1),
                "{case}: no LINE:COL in: {line}"
            );
            assert!(
                message.starts_with(" error: ") || message.starts_with(" warning: "),
                "{case}: no severity in: {line}"
            );
        }
        let has_error = stdout.contains(": error: ");
        assert_eq!(code, i32::from(has_error), "{case}: exit code {code} does not match the errors printed:\n{stdout}");
    }
}

#[test]
fn shipped_rules_files_validate() {
    let files = ["tests/fixtures/example-rules.yaml", "tests/golden/rules.yaml"];
    for file in files {
        assert!(repo_root().join(file).exists(), "{file} is missing");
    }
    let (code, stdout, stderr) = validate(&files);
    assert_eq!(code, 0, "validate failed:\n{stdout}{stderr}");
    assert!(!stdout.contains(": error:"), "{stdout}");
    for file in files {
        assert!(stdout.lines().any(|l| l.starts_with(&format!("{file}: ok ("))), "{file} not reported ok:\n{stdout}");
    }
}

#[test]
fn several_files_are_checked_in_one_run() {
    let good = "tests/fixtures/example-rules.yaml";
    let bad = format!("{INVALID_DIR}/02_empty.yaml");
    let (code, stdout, _) = validate(&[good, &bad]);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.lines().any(|l| l.starts_with(&format!("{good}: ok ("))), "{stdout}");
    assert!(stdout.lines().any(|l| l.starts_with(&format!("{bad}:1:1: error: "))), "{stdout}");
}
