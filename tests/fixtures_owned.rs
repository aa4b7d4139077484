//! Tests own their fixtures: no test, bench or doc test reads a file that users are told to edit
//! (`configs/rules.yaml`, the `data/` directory), so editing the shipped rules (changing points,
//! adding a scenario) or running the service in the repository leaves `cargo test` green.
//!
//! Tests read `tests/fixtures/example-rules.yaml` instead, or run commands in
//! `common::sandbox()`, a temporary directory laid out like the repository. `tests/common/mod.rs`
//! is the one place that names the user's files, to map each to its fixture.

mod common;

use std::path::{Path, PathBuf};

/// Text that reads a user's file when it appears in test code or in a doc test.
const USER_PATHS: [&str; 2] = ["configs/", "./data"];

/// Files allowed to name the user's files, and why.
const ALLOWED: [(&str, &str); 2] =
    [("tests/common/mod.rs", "maps each user file to its test-owned copy"), ("tests/fixtures_owned.rs", "this check")];

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

fn relative(path: &Path) -> String {
    path.strip_prefix(common::repo_path("")).unwrap().display().to_string()
}

/// Lines of rustdoc code blocks that rustdoc compiles (no language, or `rust` and its attributes).
fn doc_test_lines(source: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut in_block: Option<bool> = None;
    for (index, line) in source.lines().enumerate() {
        let trimmed = line.trim_start();
        let Some(doc) = trimmed.strip_prefix("///").or_else(|| trimmed.strip_prefix("//!")) else {
            in_block = None;
            continue;
        };
        let doc = doc.trim_start();
        if let Some(info) = doc.strip_prefix("```") {
            in_block = match in_block {
                Some(_) => None,
                None => Some(info.split(',').map(str::trim).all(|attr| {
                    matches!(attr, "" | "rust" | "should_panic" | "no_run" | "compile_fail")
                        || attr.starts_with("edition")
                })),
            };
        } else if in_block == Some(true) {
            out.push((index + 1, doc));
        }
    }
    out
}

#[test]
fn no_test_reads_a_file_users_edit() {
    let mut problems = Vec::new();
    let mut checked = 0;
    let mut files = Vec::new();
    files_under(&common::repo_path("tests"), &mut files);
    files_under(&common::repo_path("benches"), &mut files);
    for path in &files {
        let name = relative(path);
        let Ok(text) = std::fs::read_to_string(path) else { continue };
        checked += 1;
        if ALLOWED.iter().any(|(allowed, _)| *allowed == name) {
            continue;
        }
        for (index, line) in text.lines().enumerate() {
            if let Some(user) = USER_PATHS.iter().find(|p| line.contains(*p)) {
                problems.push(format!("{name}:{}: names `{user}`: {}", index + 1, line.trim()));
            }
        }
    }
    let mut sources = Vec::new();
    files_under(&common::repo_path("src"), &mut sources);
    for path in sources.iter().filter(|p| p.extension().is_some_and(|e| e == "rs")) {
        let text = std::fs::read_to_string(path).unwrap();
        checked += 1;
        for (line, code) in doc_test_lines(&text) {
            if let Some(user) = USER_PATHS.iter().find(|p| code.contains(*p)) {
                problems.push(format!("{}:{line}: a doc test names `{user}`: {}", relative(path), code.trim()));
            }
        }
    }
    assert!(checked > 50, "expected the tests, benches and sources, checked only {checked} files");
    assert!(
        problems.is_empty(),
        "tests must read test-owned copies (see `common::USER_FILES`), not files users edit:\n{}",
        problems.join("\n")
    );
}

/// The check finds doc tests: the example rules' doc test in `src/engine` is one.
#[test]
fn doc_tests_are_found() {
    let source = std::fs::read_to_string(common::repo_path("src/engine/mod.rs")).unwrap();
    assert!(doc_test_lines(&source).iter().any(|(_, code)| code.contains(common::EXAMPLE_RULES)));
    let sample = "/// ```\n/// let a = 1;\n/// ```\n/// ```text\n/// configs/x\n/// ```\n";
    assert_eq!(doc_test_lines(sample), [(2, "let a = 1;")]);
}

/// The fixture loads and is the shape the tests expect of the example rules.
#[test]
fn the_example_rules_fixture_loads() {
    let rules =
        fluxflow::graph::Rules::load_str(&common::example_rules(), &fluxflow::actions::ActionRegistry::builtin())
            .unwrap();
    assert_eq!(rules.scenario_count(), 5);
}
