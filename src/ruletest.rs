//! Rule tests: YAML files of example events and what the rules must do with them, run like unit
//! tests (`fluxflow test FILE...`), with coverage of the conditions and actions no case reached.
//!
//! ```yaml
//! rules: ../configs/rules.yaml      # relative to this file; or `rules_inline: |` with the text
//! balances: {user_42: 10}           # optional starting balances; cases share one ledger, in order
//! cases:
//!   - name: high-value food purchase earns 5%
//!     earlier_events: []            # optional: the member's events before this one, not checked
//!     event: {type: transaction, source: pos-system, actor_id: user_42, payload: {amount: 1500, category: food}}
//!     expect:
//!       matched: [sc_high_value_food]     # exactly these scenarios, in order
//!       actions: [act_bonus_points]       # actions that succeeded, in order
//!       points: 75                        # points moved in all (signed)
//!       balances: {user_42: 85}           # after this case
//!       not_fired:
//!         - scenario: sc_first_login
//!           reason: does not listen       # part of the explanation
//! ```

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use crate::actions::ActionRegistry;
use crate::engine::simulate::{LedgerVerdict, SimulatedEvent, simulate_from};
use crate::event::Event;
use crate::graph::trace::{NodeResult, ScenarioTrace};
use crate::graph::{LoadError, Rules};
use crate::rules::schema::Fields;
use crate::rules::yaml::{Node, NodeKind};
use crate::rules::{Child, Diagnostic, Diagnostics, Pos, RulesFile, Severity};

/// A test file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestFile {
    /// The rules file, relative to the test file.
    #[serde(default)]
    pub rules: Option<String>,
    /// The rules text itself.
    #[serde(default)]
    pub rules_inline: Option<String>,
    /// Starting balances.
    #[serde(default)]
    pub balances: HashMap<String, i64>,
    /// The cases, run in order against one simulated ledger.
    pub cases: Vec<Case>,
}

/// One case.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// What the case shows.
    pub name: String,
    /// Events of the member applied before the case's event (their outcomes are not checked):
    /// what limits and, later, member functions count. Each may set its `occurred_at`.
    #[serde(default)]
    pub earlier_events: Vec<Value>,
    /// The event, as it would be sent (`occurred_at` sets its event time).
    pub event: Value,
    /// What must happen.
    #[serde(default)]
    pub expect: Expect,
}

/// The expectations of a case; each is checked only when given.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// Exactly these scenarios match, in order.
    pub matched: Option<Vec<String>>,
    /// Exactly these actions succeed, in order.
    pub actions: Option<Vec<String>>,
    /// Exactly these actions fail, in order.
    pub failed: Option<Vec<String>>,
    /// Points moved in all, signed.
    pub points: Option<i64>,
    /// Balances after the case.
    pub balances: Option<BTreeMap<String, i64>>,
    /// Scenarios that must not fire, with part of the reason why.
    #[serde(default)]
    pub not_fired: Vec<NotFired>,
}

/// A scenario that must not fire.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotFired {
    /// The scenario.
    pub scenario: String,
    /// Part of the explanation of why it did not fire.
    #[serde(default)]
    pub reason: Option<String>,
}

/// Why a test file could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum TestFileError {
    /// Unreadable file.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// Not a valid test file: every problem, with its line and column.
    #[error("{path} is not a valid rule test file:\n{}", problems.iter().map(|d| d.render(path)).collect::<Vec<_>>().join("\n"))]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong, and where.
        problems: Vec<Diagnostic>,
    },
    /// The rules file has errors.
    #[error("the rules of {path} do not load:\n{}", problems.join("\n"))]
    Rules {
        /// The test file.
        path: String,
        /// Every problem.
        problems: Vec<String>,
    },
}

/// The outcome of one case.
#[derive(Debug)]
pub struct CaseReport {
    /// The case's name.
    pub name: String,
    /// Every expectation that was not met; empty when the case passed.
    pub problems: Vec<String>,
    /// The case's trace, in a compact text form (shown for failures).
    pub trace: String,
}

/// A node of the rules no case reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreached {
    /// `condition` or `action`.
    pub kind: &'static str,
    /// Its id.
    pub id: String,
    /// Its scenario.
    pub scenario: String,
    /// True when the scenario is disabled.
    pub disabled: bool,
}

/// The outcome of a test file.
#[derive(Debug)]
pub struct FileReport {
    /// Where the rules came from.
    pub rules: String,
    /// Each case, in order.
    pub cases: Vec<CaseReport>,
    /// Conditions and actions, reached and in all.
    pub coverage: Coverage,
}

/// How much of the rules the cases reached.
#[derive(Debug, Default)]
pub struct Coverage {
    /// Conditions evaluated by some case.
    pub conditions_reached: usize,
    /// Conditions in the rules.
    pub conditions: usize,
    /// Actions reached by some case.
    pub actions_reached: usize,
    /// Actions in the rules.
    pub actions: usize,
    /// What no case reached.
    pub unreached: Vec<Unreached>,
}

impl FileReport {
    /// Cases that failed.
    pub fn failed(&self) -> usize {
        self.cases.iter().filter(|c| !c.problems.is_empty()).count()
    }
}

/// The keys of a test file, of a case, of its `expect`, and of a `not_fired` item, in the
/// order of the structs above (a unit test checks them against serde's lists).
const FILE_KEYS: [&str; 4] = ["rules", "rules_inline", "balances", "cases"];
const CASE_KEYS: [&str; 4] = ["name", "earlier_events", "event", "expect"];
const EXPECT_KEYS: [&str; 6] = ["matched", "actions", "failed", "points", "balances", "not_fired"];
const NOT_FIRED_KEYS: [&str; 2] = ["scenario", "reason"];

/// Checks the keys of every mapping of a test file with the rules reader's [`Fields`]: unknown
/// and repeated keys are errors at their line and column, with the nearest known key.
fn check_keys(root: &Node, diags: &mut Diagnostics) {
    let Some(file) = Fields::new(root, "the rule test file", &FILE_KEYS, diags) else { return };
    let Some(NodeKind::Seq(cases)) = file.get("cases").map(|n| &n.kind) else { return };
    for (i, case) in cases.iter().enumerate() {
        let name = child(case, "name")
            .and_then(Node::scalar)
            .map_or_else(|| format!("`cases[{i}]`"), |(n, _)| format!("case `{n}`"));
        let Some(fields) = Fields::new(case, &name, &CASE_KEYS, diags) else { continue };
        let Some(expect) = fields.get("expect").filter(|n| !n.is_null()) else { continue };
        let Some(expect) = Fields::new(expect, &format!("`expect` of {name}"), &EXPECT_KEYS, diags) else { continue };
        if let Some(NodeKind::Seq(items)) = expect.get("not_fired").map(|n| &n.kind) {
            for item in items {
                Fields::new(item, &format!("a `not_fired` item of {name}"), &NOT_FIRED_KEYS, diags);
            }
        }
    }
}

/// The value of a key of a mapping node (the last one, as serde reads a repeated key).
fn child<'a>(node: &'a Node, key: &str) -> Option<&'a Node> {
    match &node.kind {
        NodeKind::Map(entries) => {
            entries.iter().rev().find(|(k, _)| k.scalar().is_some_and(|(t, _)| t == key)).map(|(_, v)| v)
        }
        _ => None,
    }
}

/// The node a serde error's path leads to, as far as the tree goes (for its position).
fn node_at<'a>(root: &'a Node, path: &serde_path_to_error::Path) -> &'a Node {
    use serde_path_to_error::Segment;
    let mut node = root;
    for segment in path.iter() {
        let next = match (segment, &node.kind) {
            (Segment::Seq { index }, NodeKind::Seq(items)) => items.get(*index),
            (Segment::Map { key }, _) => child(node, key),
            _ => None,
        };
        match next {
            Some(next) => node = next,
            None => break,
        }
    }
    node
}

/// One error at one place.
fn error_at(pos: Pos, message: String) -> Vec<Diagnostic> {
    vec![Diagnostic { severity: Severity::Error, pos, message }]
}

/// Reads a test file; on failure every problem of its shape, each at its line and column.
fn read_test_file(text: &str) -> Result<(Node, TestFile), Vec<Diagnostic>> {
    let root = crate::rules::yaml::parse(text)
        .map_err(|e| error_at(e.pos, format!("YAML syntax: {}", e.message)))?
        .ok_or_else(|| {
            error_at(
                Pos { line: 1, col: 1 },
                "the file is empty: it needs `rules` (or `rules_inline`) and `cases`".into(),
            )
        })?;
    let mut diags = Diagnostics::default();
    check_keys(&root, &mut diags);
    if diags.has_errors() {
        return Err(diags.into_sorted());
    }
    let file: TestFile = serde_path_to_error::deserialize(root.to_json()).map_err(|e| {
        let pos = node_at(&root, e.path()).pos;
        match e.path().iter().next() {
            Some(_) => error_at(pos, format!("{}: {}", e.path(), e.inner())),
            None => error_at(pos, e.inner().to_string()),
        }
    })?;
    Ok((root, file))
}

/// Reads and runs a test file.
pub fn run_file(path: &Path, registry: &ActionRegistry) -> Result<FileReport, TestFileError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| TestFileError::Io { path: name.clone(), source })?;
    let invalid =
        |pos: Pos, message: String| TestFileError::Invalid { path: name.clone(), problems: error_at(pos, message) };
    let (root, file) =
        read_test_file(&text).map_err(|problems| TestFileError::Invalid { path: name.clone(), problems })?;
    let (rules_text, rules_name) = match (&file.rules, &file.rules_inline) {
        (Some(rel), None) => {
            let rules_path = path.parent().unwrap_or(Path::new(".")).join(rel);
            let text = std::fs::read_to_string(&rules_path)
                .map_err(|source| TestFileError::Io { path: rules_path.display().to_string(), source })?;
            (text, rules_path.display().to_string())
        }
        (None, Some(inline)) => (inline.clone(), format!("{name} (rules_inline)")),
        (both, _) => {
            let pos = if both.is_some() { child(&root, "rules_inline").map_or(root.pos, |n| n.pos) } else { root.pos };
            return Err(invalid(pos, "give exactly one of `rules` (a path) or `rules_inline` (the text)".into()));
        }
    };
    let rules = Rules::load_str(&rules_text, registry).map_err(|e| match e {
        LoadError::Invalid(problems) => TestFileError::Rules {
            path: name.clone(),
            problems: problems.iter().map(|d| d.render(&rules_name)).collect(),
        },
        other => invalid(root.pos, other.to_string()),
    })?;
    let case_nodes = match child(&root, "cases").map(|n| &n.kind) {
        Some(NodeKind::Seq(items)) => items.as_slice(),
        _ => &[],
    };
    // Each case's earlier events, then its event, all in one simulated ledger.
    let mut events = Vec::new();
    let mut case_events = Vec::with_capacity(file.cases.len());
    for (i, case) in file.cases.iter().enumerate() {
        let case_node = case_nodes.get(i);
        let earlier_nodes = match case_node.and_then(|c| child(c, "earlier_events")).map(|n| &n.kind) {
            Some(NodeKind::Seq(items)) => items.as_slice(),
            _ => &[],
        };
        for (j, earlier) in case.earlier_events.iter().enumerate() {
            let event = Event::from_value(earlier.clone()).map_err(|e| {
                let pos = earlier_nodes.get(j).or(case_node).map_or(root.pos, |n| n.pos);
                invalid(pos, format!("case `{}`: earlier_events[{j}]: {e}", case.name))
            })?;
            events.push(event);
        }
        let event = Event::from_value(case.event.clone()).map_err(|e| {
            let pos = case_node.and_then(|c| child(c, "event")).map_or(root.pos, |n| n.pos);
            invalid(pos, format!("case `{}`: event: {e}", case.name))
        })?;
        case_events.push(events.len());
        events.push(event);
    }
    let simulated =
        simulate_from(&rules, &events, None, file.balances.clone()).map_err(|e| invalid(root.pos, e.to_string()))?;
    let mut balances = file.balances.clone();
    let mut cases = Vec::with_capacity(file.cases.len());
    let mut next_case = file.cases.iter().zip(case_events).peekable();
    for (index, sim) in simulated.iter().enumerate() {
        balances.extend(sim.balances.iter().map(|(actor, balance)| (actor.clone(), *balance)));
        if let Some((case, _)) = next_case.next_if(|(_, at)| *at == index) {
            cases.push(check(case, sim, &balances));
        }
    }
    let coverage = coverage(&rules.file, &simulated);
    Ok(FileReport { rules: rules_name, cases, coverage })
}

/// Checks a case against its simulation; `balances` are every member's after the case.
fn check(case: &Case, sim: &SimulatedEvent, balances_now: &HashMap<String, i64>) -> CaseReport {
    let result = &sim.result;
    let mut problems = Vec::new();
    if sim.ledger == LedgerVerdict::Conflict {
        problems.push(format!(
            "event id `{}` was used by an earlier case with other content (the service would answer 409)",
            result.event_id
        ));
    }
    let mut compare = |what: &str, expected: &dyn std::fmt::Debug, got: &dyn std::fmt::Debug, equal: bool| {
        if !equal {
            problems.push(format!("{what}: expected {expected:?}, got {got:?}"));
        }
    };
    let expect = &case.expect;
    if let Some(matched) = &expect.matched {
        compare("matched", matched, &result.scenarios_matched, *matched == result.scenarios_matched);
    }
    let ids = |success: bool| -> Vec<String> {
        result.actions_executed.iter().filter(|a| a.success == success).map(|a| a.action_id.clone()).collect()
    };
    if let Some(actions) = &expect.actions {
        let got = ids(true);
        compare("actions", actions, &got, *actions == got);
    }
    if let Some(failed) = &expect.failed {
        let got = ids(false);
        compare("failed", failed, &got, *failed == got);
    }
    if let Some(points) = expect.points {
        let got: i64 = sim.points.iter().map(|p| p.points).sum();
        compare("points", &points, &got, points == got);
    }
    if let Some(balances) = &expect.balances {
        let got: BTreeMap<String, i64> =
            balances.keys().map(|k| (k.clone(), balances_now.get(k).copied().unwrap_or(0))).collect();
        compare("balances", balances, &got, *balances == got);
    }
    let trace = result.trace.as_ref();
    for not_fired in &expect.not_fired {
        let scenario = trace.and_then(|t| t.scenario(&not_fired.scenario));
        match scenario.map(|s| (s, s.why_not())) {
            None => problems.push(format!("not_fired: there is no scenario `{}`", not_fired.scenario)),
            Some((_, None)) => problems.push(format!("not_fired: scenario `{}` fired", not_fired.scenario)),
            Some((_, Some(why))) => {
                if let Some(reason) = &not_fired.reason {
                    if !why.contains(reason.as_str()) {
                        problems
                            .push(format!("not_fired `{}`: reason {reason:?} is not in {why:?}", not_fired.scenario));
                    }
                }
            }
        }
    }
    let trace_text = trace.map(|t| t.scenarios.iter().map(render_scenario).collect::<String>()).unwrap_or_default();
    CaseReport { name: case.name.clone(), problems, trace: trace_text }
}

/// The name a trace value has in JSON (`skipped_type`, `pruned`), so text and JSON traces agree.
fn wire_name(value: impl serde::Serialize) -> String {
    serde_json::to_value(value).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

/// A scenario's trace as indented lines.
fn render_scenario(scenario: &ScenarioTrace) -> String {
    let status = wire_name(scenario.status);
    let mut out =
        format!("    {} ({status}{})\n", scenario.scenario_id, if scenario.matched { ", matched" } else { "" });
    for node in &scenario.nodes {
        let indent = "  ".repeat(node.depth + 3);
        let result = wire_name(node.result);
        let mut line = format!("{indent}{} {}", node.kind, node.id);
        if let Some(expr) = &node.expression {
            line.push_str(&format!(": {expr}"));
        }
        line.push_str(&format!(" -> {result}"));
        if let Some(reason) = &node.reason {
            line.push_str(&format!(" ({reason})"));
        }
        let values: Vec<String> = node
            .values
            .iter()
            .map(|v| match &v.value {
                Some(value) => format!("{} = {value}", v.path),
                None => format!("{} missing", v.path),
            })
            .collect();
        if !values.is_empty() {
            line.push_str(&format!("  [{}]", values.join(", ")));
        }
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// Every condition and action of the file, with its scenario; what no case reached.
fn coverage(file: &RulesFile, simulated: &[SimulatedEvent]) -> Coverage {
    let mut reached: HashMap<&str, bool> = HashMap::new();
    for sim in simulated {
        for scenario in sim.result.trace.iter().flat_map(|t| &t.scenarios) {
            for node in &scenario.nodes {
                if node.result != NodeResult::Pruned {
                    reached.insert(node.id.as_str(), true);
                }
            }
        }
    }
    let mut coverage = Coverage::default();
    for scenario in &file.scenarios {
        walk(&scenario.children, &mut |kind, id| {
            let hit = reached.contains_key(id);
            match kind {
                "condition" => {
                    coverage.conditions += 1;
                    coverage.conditions_reached += usize::from(hit);
                }
                _ => {
                    coverage.actions += 1;
                    coverage.actions_reached += usize::from(hit);
                }
            }
            if !hit {
                coverage.unreached.push(Unreached {
                    kind,
                    id: id.to_owned(),
                    scenario: scenario.id.clone(),
                    disabled: !scenario.enabled,
                });
            }
        });
    }
    coverage
}

fn walk(children: &[Child], f: &mut impl FnMut(&'static str, &str)) {
    for child in children {
        match child {
            Child::Condition(c) => {
                f("condition", &c.id);
                walk(&c.children, f);
            }
            Child::Action(a) => f("action", &a.id),
        }
    }
}

/// The files to run: files as given, directories searched for `*.test.yaml`.
pub fn expand(paths: &[PathBuf]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(path)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.to_string_lossy().ends_with(".test.yaml"))
                .collect();
            found.sort();
            out.extend(found);
        } else {
            out.push(path.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The keys serde lists for a struct, from its unknown-field error.
    fn serde_keys<T: serde::de::DeserializeOwned + std::fmt::Debug>() -> String {
        let error = serde_json::from_value::<T>(serde_json::json!({"?": 0})).unwrap_err().to_string();
        error.split("expected one of ").nth(1).or_else(|| error.split("expected ").nth(1)).unwrap_or(&error).to_owned()
    }

    fn listed(keys: &[&str]) -> String {
        let quoted: Vec<String> = keys.iter().map(|k| format!("`{k}`")).collect();
        match quoted.as_slice() {
            [a, b] => format!("{a} or {b}"),
            _ => quoted.join(", "),
        }
    }

    #[test]
    fn the_key_lists_match_the_structs() {
        assert_eq!(serde_keys::<TestFile>(), listed(&FILE_KEYS));
        assert_eq!(serde_keys::<Case>(), listed(&CASE_KEYS));
        assert_eq!(serde_keys::<Expect>(), listed(&EXPECT_KEYS));
        assert_eq!(serde_keys::<NotFired>(), listed(&NOT_FIRED_KEYS));
    }
}
