//! Replays the original's 120 recorded answers (tests/golden, copied from the reference) through
//! `fluxflow eval`, all events in one stream.

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::Value;

fn cases() -> Vec<Value> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/cases.jsonl")).unwrap();
    text.lines().filter(|l| !l.trim().is_empty()).map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn golden_cases_replay_through_eval() {
    let cases = cases();
    assert_eq!(cases.len(), 120);
    let mut child = Command::new(env!("CARGO_BIN_EXE_fluxflow"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["eval", "--config", "tests/golden/rules.yaml", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut stdin = child.stdin.take().unwrap();
        for case in &cases {
            writeln!(stdin, "{}", case["event"]).unwrap();
        }
    }
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "eval failed: {output:?}");
    let results: Vec<Value> =
        String::from_utf8(output.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(results.len(), cases.len());

    let mut failures = Vec::new();
    for (i, (case, got)) in cases.iter().zip(&results).enumerate() {
        let expect = &case["expect"];
        let got_actions: Vec<Value> = got["actions_executed"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                serde_json::json!({"action_id": a["action_id"], "type": a["type"], "success": a["success"], "message": a["message"]})
            })
            .collect();
        if got["scenarios_matched"] != expect["scenarios_matched"]
            || Value::from(got_actions.clone()) != expect["actions"]
        {
            failures.push(format!(
                "case {i}: {}\n  expected {expect}\n  got {{scenarios_matched: {}, actions: {got_actions:?}}}",
                case["event"], got["scenarios_matched"]
            ));
        }
        if let Some(id) = case["event"]["id"].as_str() {
            assert_eq!(got["event_id"], id, "case {i} keeps its id");
        }
    }
    assert!(failures.is_empty(), "{} of {} golden cases differ:\n{}", failures.len(), cases.len(), failures.join("\n"));
}
