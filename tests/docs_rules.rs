//! Every example in `docs/rules.md` runs, so the guide cannot drift from the engine.
//!
//! - A ```` ```yaml ```` block that starts with `version:` is a rules file: `fluxflow validate`
//!   must accept it with no warning. It becomes "the rules" for the blocks after it.
//! - A ```` ```yaml ```` block with a top-level `cases:` is a rule test file: `fluxflow test` must
//!   pass it (exit 0) and reach every condition and action of the enabled scenarios. With
//!   `rules: NAME.yaml` it runs against the last rules block, saved under that name; with
//!   `rules_inline: |` it runs as it is. A test file saved for the guide's commands
//!   (```` ```yaml file=NAME ````) is left to them: `tests/docs.rs` runs the commands and checks
//!   their exit code and output.
//! - Any other ```` ```yaml ```` block is an error: fragments go in ```` ```text ````.
//! - A ```` ```json ```` block must be JSON. An event (an object with `"type"`, or an array of
//!   them) must be accepted by `fluxflow eval --config` with the last rules block. A result (an object
//!   with `"scenarios_matched"`) must be what `fluxflow eval` answers for the event block before
//!   it (with `--trace` when the result shows a `trace`), compared as `tests/docs.rs` compares
//!   output samples: key order counts, and ids, times and durations are masked but must be shown.
//!   A simulate request (`{"events": [...], "rules"?: "..."}`) must hold valid rules and events.
//!   Output samples (```` ```json output ````) are `tests/docs.rs`'s.
//! - A table whose header is `| expression | payload | result |` (or `event` instead of
//!   `payload`; more columns are comments) gives conditions and what they evaluate to: `true`,
//!   `false`, `unknown` or `load error`. `| formula | payload | result |` does the same for
//!   formulas, whose result is a number or `unknown`. A condition loads with a warning exactly
//!   when its note (4th column) says "loads with a warning". `| you wrote | load error | write
//!   instead |` gives a condition that must fail to load with that message, and its fix, which
//!   must load cleanly; `| you wrote | load warning | write instead |` one that loads with that
//!   warning.
//!   `| value | points |` gives a formula's value and the whole points it rounds to.
//!
//! Failures name the line of `docs/rules.md` at fault and are reported all together. The guide's
//! commands, output samples and links are checked by `tests/docs.rs`, with every other doc.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::docs::{Block, Row, blocks, check_output, indent, tables};

use fluxflow::actions::reward_points::round_points;
use fluxflow::event::Event;
use fluxflow::expr::{Program, Purpose, Truth};
use serde_json::{Value, json};

const DOC: &str = include_str!("../docs/rules.md");

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_fluxflow")
}

fn run(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(bin())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

/// `fluxflow validate`: no error and no warning.
fn check_rules_file(path: &Path) -> Result<(), String> {
    let output = run(&["validate", &path.display().to_string()], None);
    let out = text(&output);
    if !output.status.success() {
        return Err(format!("`fluxflow validate` fails:\n{}", indent(&out)));
    }
    if out.contains("warning:") {
        return Err(format!("`fluxflow validate` warns (examples must be clean):\n{}", indent(&out)));
    }
    Ok(())
}

/// The value of a top-level `key: value` line of a YAML text, without a trailing comment.
fn top_level(yaml: &str, key: &str) -> Option<String> {
    let value = yaml.lines().find_map(|l| l.strip_prefix(&format!("{key}:")))?;
    Some(value.split(" #").next().unwrap_or_default().trim().to_owned())
}

/// `fluxflow test`: passes, and reaches everything that is enabled.
fn check_test_file(dir: &Path, block: &Block, rules: Option<&str>) -> Result<(), String> {
    match top_level(&block.text, "rules") {
        Some(name) => {
            let rules = rules.ok_or("the test file names a rules file, but no rules block comes before it")?;
            if name.contains('/') || !name.ends_with(".yaml") {
                return Err(format!("`rules: {name}`: name the rules file as `NAME.yaml`, next to the test file"));
            }
            std::fs::write(dir.join(&name), rules).unwrap();
        }
        None if top_level(&block.text, "rules_inline").is_some() => {}
        None => return Err("a test file needs `rules: NAME.yaml` or `rules_inline: |`".into()),
    }
    let path = dir.join(format!("line{}.test.yaml", block.line));
    std::fs::write(&path, &block.text).unwrap();
    let output = run(&["test", &path.display().to_string()], None);
    let out = text(&output);
    if !output.status.success() {
        return Err(format!("`fluxflow test` fails:\n{}", indent(&out)));
    }
    let unreached: Vec<&str> =
        out.lines().filter(|l| l.contains("not reached:") && !l.contains(", disabled)")).collect();
    if !unreached.is_empty() {
        return Err(format!("the cases leave parts of the rules unreached:\n{}", indent(&unreached.join("\n"))));
    }
    Ok(())
}

fn is_event(value: &Value) -> bool {
    match value {
        Value::Object(map) => map.contains_key("type"),
        Value::Array(items) => !items.is_empty() && items.iter().all(|i| i.get("type").is_some()),
        _ => false,
    }
}

/// Evaluates events with `fluxflow eval`; what it prints, one line per event.
fn eval(rules: &Path, events: &str, trace: bool) -> Result<String, String> {
    let config = rules.display().to_string();
    let mut args = vec!["eval", "--config", &config];
    if trace {
        args.push("--trace");
    }
    args.push("-");
    let output = run(&args, Some(events));
    if !output.status.success() {
        return Err(format!("`fluxflow eval` refuses the event:\n{}", indent(&text(&output))));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// A documented result: what `eval` answers for the event block before it.
fn check_result(block: &Block, expected: &Value, rules: &Path, event: &Value) -> Result<(), String> {
    let trace = expected.get("trace").is_some();
    let got = eval(rules, &event.to_string(), trace)?;
    check_output(&block.text, true, &got).map_err(|e| {
        format!("compared with `fluxflow eval{}` of the event before it, {e}", if trace { " --trace" } else { "" })
    })
}

/// A `POST /v1/simulate` body: its rules (when given) validate and its events are accepted.
fn check_simulate(dir: &Path, line: usize, body: &Value, rules: Option<&Path>) -> Result<(), String> {
    let path;
    let rules = match body.get("rules") {
        Some(Value::String(text)) => {
            path = dir.join(format!("line{line}.simulate.yaml"));
            std::fs::write(&path, text).unwrap();
            check_rules_file(&path)?;
            path.as_path()
        }
        Some(_) => return Err("`rules` must be the YAML text, as a string".into()),
        None => rules.ok_or("a simulate body without `rules` needs a rules block before it")?,
    };
    eval(rules, &body["events"].to_string(), false).map(drop)
}

fn run_blocks(dir: &Path, problems: &mut Vec<String>) -> usize {
    let mut rules: Option<(String, std::path::PathBuf)> = None;
    let mut last_event: Option<Value> = None;
    let mut checked = 0;
    for block in blocks("docs/rules.md", DOC) {
        if block.sample().is_some() {
            continue;
        }
        let result = match block.lang.as_str() {
            "yaml" if block.text.trim_start().starts_with("version:") => {
                let path = dir.join(format!("line{}.yaml", block.line));
                std::fs::write(&path, &block.text).unwrap();
                let result = check_rules_file(&path);
                rules = Some((block.text.clone(), path));
                result
            }
            "yaml" if top_level(&block.text, "cases").is_some() && block.file().is_some() => continue,
            "yaml" if top_level(&block.text, "cases").is_some() => {
                check_test_file(dir, &block, rules.as_ref().map(|(t, _)| t.as_str()))
            }
            "yaml" => Err("a ```yaml block must be a rules file (starting with `version:`) or a test file \
                           (with `cases:`); write fragments as ```text"
                .into()),
            "json" => match serde_json::from_str::<Value>(&block.text) {
                Err(e) => Err(format!("not JSON: {e}")),
                Ok(value) if is_event(&value) => {
                    last_event = Some(value.clone());
                    match &rules {
                        Some((_, path)) => eval(path, &block.text, false).map(drop),
                        None => Err("an event needs a rules block before it".into()),
                    }
                }
                Ok(value) if value.get("scenarios_matched").is_some() => match (&rules, &last_event) {
                    (Some((_, path)), Some(event)) if event.is_object() => check_result(&block, &value, path, event),
                    _ => Err("a result needs a rules block and a single event before it".into()),
                },
                Ok(value) if value.get("events").is_some() => {
                    check_simulate(dir, block.line, &value, rules.as_ref().map(|(_, p)| p.as_path()))
                }
                Ok(_) => Ok(()),
            },
            _ => continue,
        };
        checked += 1;
        if let Err(problem) = result {
            problems.push(format!("docs/rules.md:{}: ```{} block: {problem}", block.line, block.lang));
        }
    }
    checked
}

fn event_of(cell: &str, column: &str) -> Result<Event, String> {
    let value: Value = serde_json::from_str(cell).map_err(|e| format!("the {column} is not JSON: {e}"))?;
    let mut event = match column {
        "payload" if value.is_null() => json!({}),
        "payload" => json!({ "payload": value }),
        _ => value,
    };
    if event.get("type").is_none() {
        event["type"] = json!("purchase");
    }
    Event::from_value(event).map_err(|e| format!("not a valid event: {e}"))
}

fn check_expression_row(purpose: Purpose, row: &Row, column: &str) -> Result<(), String> {
    let [expr, input, want, ..] = row.cells.as_slice() else {
        return Err("a row needs an expression, a payload or event, and a result".into());
    };
    let program = Program::compile(expr, purpose);
    let want = want.as_str();
    let program = match (program, want) {
        (Err(_), "load error") => return Ok(()),
        (Err(e), _) => return Err(format!("`{expr}` does not load: {}", e.render(expr))),
        (Ok(_), "load error") => return Err(format!("`{expr}` loads, but the table says it does not")),
        (Ok(p), _) => p,
    };
    let says_warning = row.cells.get(3).is_some_and(|note| note.contains("loads with a warning"));
    match (says_warning, program.warnings().first()) {
        (true, None) => return Err(format!("`{expr}` loads without a warning, but the note says it warns")),
        (false, Some(w)) => return Err(format!("`{expr}` loads with the warning {:?}, not in the note", w.message)),
        _ => {}
    }
    let event = event_of(input, column)?;
    let got = match purpose {
        Purpose::Condition => match program.truth(&event) {
            Truth::True => "true".to_owned(),
            Truth::False => "false".to_owned(),
            Truth::Unknown(_) => "unknown".to_owned(),
        },
        Purpose::Formula | Purpose::Ratio => match program.number(&event) {
            Ok(x) => {
                let want_number = want.parse::<f64>().ok();
                if want_number.is_some_and(|w| (x - w).abs() <= 1e-9 * w.abs().max(1.0)) {
                    return Ok(());
                }
                x.to_string()
            }
            Err(_) => "unknown".to_owned(),
        },
    };
    if got == want { Ok(()) } else { Err(format!("`{expr}` gives {got}, the table says {want}")) }
}

/// A row of a mistakes table: what was written fails to load (or, with `warns`, loads with a
/// warning) with the message shown, and the fix loads cleanly.
fn check_mistake_row(row: &Row, warns: bool) -> Result<(), String> {
    let [wrong, message, right, ..] = row.cells.as_slice() else {
        return Err("a row needs what was written, the message and the fix".into());
    };
    let got = match (Program::compile(wrong, Purpose::Condition), warns) {
        (Ok(_), false) => return Err(format!("`{wrong}` loads, but the table says it does not")),
        (Err(e), false) => e.render(wrong),
        (Ok(program), true) => match program.warnings() {
            [only] => only.message.clone(),
            other => return Err(format!("`{wrong}` loads with {} warnings, the table shows one", other.len())),
        },
        (Err(e), true) => return Err(format!("`{wrong}` does not load: {}", e.render(wrong))),
    };
    if !got.contains(message.as_str()) {
        return Err(format!("`{wrong}` gives {got:?}, not {message:?}"));
    }
    match Program::compile(right, Purpose::Condition) {
        Err(e) => Err(format!("the fix `{right}` does not load: {}", e.render(right))),
        Ok(fixed) if !fixed.warnings().is_empty() => Err(format!("the fix `{right}` still warns")),
        Ok(_) => Ok(()),
    }
}

fn check_rounding_row(row: &Row) -> Result<(), String> {
    let [value, points, ..] = row.cells.as_slice() else {
        return Err("a row needs a value and its points".into());
    };
    let parse = |s: &str| s.parse::<f64>().map_err(|e| format!("`{s}` is not a number: {e}"));
    let (value, points) = (parse(value)?, parse(points)?);
    let got = round_points(value);
    if got == points { Ok(()) } else { Err(format!("{value} rounds to {got}, the table says {points}")) }
}

fn run_tables(problems: &mut Vec<String>) -> usize {
    let mut checked = 0;
    for table in tables(DOC) {
        let header: Vec<&str> = table.header.iter().map(String::as_str).collect();
        let kind = match header.as_slice() {
            ["expression", column @ ("payload" | "event"), "result", ..] => Some((Purpose::Condition, *column)),
            ["formula", column @ ("payload" | "event"), "result", ..] => Some((Purpose::Formula, *column)),
            ["you wrote", "load error", "write instead", ..] => None,
            ["you wrote", "load warning", "write instead", ..] => Some((Purpose::Condition, "warning")),
            ["value", "points", ..] => {
                for row in &table.rows {
                    checked += 1;
                    if let Err(problem) = check_rounding_row(row) {
                        problems.push(format!("docs/rules.md:{}: table row: {problem}", row.line));
                    }
                }
                continue;
            }
            _ => continue,
        };
        for row in &table.rows {
            checked += 1;
            let result = match kind {
                Some((_, "warning")) => check_mistake_row(row, true),
                Some((purpose, column)) => check_expression_row(purpose, row, column),
                None => check_mistake_row(row, false),
            };
            if let Err(problem) = result {
                problems.push(format!("docs/rules.md:{}: table row: {problem}", row.line));
            }
        }
    }
    checked
}

#[test]
fn every_example_in_the_rules_guide_runs() {
    let dir = tempfile::tempdir().unwrap();
    let mut problems = Vec::new();
    let blocks = run_blocks(dir.path(), &mut problems);
    let rows = run_tables(&mut problems);
    assert!(blocks >= 20, "expected the guide's code blocks, found only {blocks}");
    assert!(rows >= 40, "expected the guide's expression tables, found only {rows} rows");
    assert!(problems.is_empty(), "{} problem(s) in docs/rules.md:\n\n{}", problems.len(), problems.join("\n\n"));
}

#[test]
fn the_guide_has_at_least_six_worked_examples_with_tests() {
    let blocks = blocks("docs/rules.md", DOC);
    let tests = blocks.iter().filter(|b| b.lang == "yaml" && top_level(&b.text, "cases").is_some()).count();
    assert!(tests >= 6, "docs/rules.md has {tests} test files; the guide promises a test for every worked example");
}
