//! Hot reload over a real server: in-place writes, rename-over saves, symlink swaps (as
//! Kubernetes ConfigMaps do), an invalid file that must not go live, and engine numbers.

mod common;

use std::time::Duration;

use common::{EXAMPLE_EVENT, Server, wait_until};

const V1: &str = r#"
version: v1
scenarios:
  - id: welcome
    enabled: true
    event_types: [transaction]
    children:
      - action: {id: one, type: reward_points, params: {operation: award, points: 1}}
"#;

fn with_points(points: u32) -> String {
    V1.replace("points: 1", &format!("points: {points}"))
}

fn live_hash(server: &Server) -> String {
    server.get("/v1/rules").1["hash"].as_str().unwrap().to_owned()
}

fn points_awarded(server: &Server) -> i64 {
    server.post("/v1/events", EXAMPLE_EVENT).1["actions_executed"][0]["points"].as_i64().unwrap_or(-1)
}

fn reloads_to(server: &Server, points: i64) -> bool {
    wait_until(Duration::from_secs(5), || points_awarded(server) == points)
}

#[test]
fn in_place_write_reloads() {
    let server = Server::start(V1, &[]);
    assert_eq!(points_awarded(&server), 1);
    std::fs::write(server.rules_path(), with_points(2)).unwrap();
    assert!(reloads_to(&server, 2));
}

#[test]
fn rename_over_save_reloads_again_and_again() {
    let server = Server::start(V1, &[]);
    for points in [3, 4, 5] {
        let tmp = server.dir.path().join(".rules.yaml.swp");
        std::fs::write(&tmp, with_points(points)).unwrap();
        std::fs::rename(&tmp, server.rules_path()).unwrap();
        assert!(reloads_to(&server, points as i64), "rename #{points}");
    }
}

#[test]
fn symlink_swap_reloads() {
    // The ConfigMap layout: rules.yaml -> ..data/rules.yaml, ..data -> ..v1; an update swaps ..data.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir(root.join("..v1")).unwrap();
    std::fs::write(root.join("..v1/rules.yaml"), with_points(6)).unwrap();
    std::os::unix::fs::symlink("..v1", root.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/rules.yaml", root.join("rules.yaml")).unwrap();
    let server = Server::start_in(dir, &[]);
    assert_eq!(points_awarded(&server), 6);
    let root = server.dir.path();
    std::fs::create_dir(root.join("..v2")).unwrap();
    std::fs::write(root.join("..v2/rules.yaml"), with_points(7)).unwrap();
    std::os::unix::fs::symlink("..v2", root.join("..data_tmp")).unwrap();
    std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
    assert!(reloads_to(&server, 7));
}

#[test]
fn invalid_file_keeps_the_old_rules_live() {
    let server = Server::start(V1, &[]);
    let before = live_hash(&server);
    let broken = V1
        .replace("event_types: [transaction]", "event_types: [transaction]\n    enabeld: true")
        .replace("payload", "")
        .replace("points: 1", "points: 0.1");
    std::fs::write(server.rules_path(), &broken).unwrap();
    assert!(wait_until(Duration::from_secs(5), || server
        .get_text("/metrics")
        .contains("fluxflow_rules_reloads_total{outcome=\"invalid\"}")));
    assert_eq!(live_hash(&server), before);
    assert_eq!(points_awarded(&server), 1);
    let (status, body) = server.post("/v1/rules/reload", "");
    assert_eq!((status, body["code"].as_str()), (422, Some("invalid_rules")), "{body}");
    let problems: Vec<String> =
        body["problems"].as_array().unwrap().iter().map(|p| p.as_str().unwrap().to_owned()).collect();
    assert_eq!(problems.len(), 2, "every problem: {problems:?}");
    assert!(
        problems[0].ends_with(":7:5: error: unknown key `enabeld` in a scenario (did you mean `enabled`?)"),
        "{problems:?}"
    );
    assert!(problems[1].contains("is 0.1, which rounds to 0"), "{problems:?}");
    assert!(wait_until(Duration::from_secs(3), || server.log_text().contains("rules reload refused")));
    // Fixing the file puts it live.
    std::fs::write(server.rules_path(), with_points(8)).unwrap();
    assert!(reloads_to(&server, 8));
}

#[test]
fn engine_numbers_apply_or_say_they_need_a_restart() {
    let server = Server::start(V1, &[]);
    let changed = format!("{V1}engine: {{queue_depth: 5, event_timeout_ms: 1234}}\n");
    std::fs::write(server.rules_path(), changed).unwrap();
    let (status, body) = server.post("/v1/rules/reload", "");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["restart_required"], serde_json::json!(["queue_depth"]));
    let view = server.get("/v1/rules").1;
    assert_eq!(view["engine"]["event_timeout_ms"], 1234, "applied at once");
    assert_eq!(view["engine"]["queue_depth"], 10000, "still the running size");
    assert_eq!(view["restart_required"], serde_json::json!(["queue_depth"]));
}

/// Lines of the service's log at WARN that hold `text`.
fn warn_lines(server: &Server, text: &str) -> usize {
    server.log_text().lines().filter(|l| l.contains(" WARN ") && l.contains(text)).count()
}

#[test]
fn warnings_are_logged_once_at_start_and_on_each_reload_that_changes_the_rules() {
    let rules = "version: v1\nengine:\n  fail_open: true\nscenarios:\n  - id: welcome\n    enabled: true\n    \
                 event_types: [transaction]\n    children:\n      - action: {id: one, type: reward_points, params: \
                 {operation: award, points: 1}}\n";
    let server = Server::start(rules, &[]);
    let fail_open = "rules.yaml:3:14: warning: `fail_open` is ignored";
    let no_enabled = "rules.yaml:5:5: warning: scenario `welcome` has no `enabled` key, so it is disabled";
    assert_eq!(warn_lines(&server, fail_open), 1, "logged at start:\n{}", server.log_text());

    // Reloading the same file changes nothing and logs nothing again.
    let (status, body) = server.post("/v1/rules/reload", "");
    assert_eq!((status, body["changed"].as_bool()), (200, Some(false)), "{body}");
    assert_eq!(warn_lines(&server, fail_open), 1, "{}", server.log_text());

    // The scenario loses its `enabled` key (so it silently turns off): saved by rename, as an
    // editor does, so the watcher never reads half a file.
    let tmp = server.dir.path().join(".rules.yaml.swp");
    std::fs::write(&tmp, rules.replace("    enabled: true\n", "")).unwrap();
    std::fs::rename(&tmp, server.rules_path()).unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || warn_lines(&server, no_enabled) == 1),
        "the reload logs the new warning:\n{}",
        server.log_text()
    );
    assert_eq!(warn_lines(&server, fail_open), 2, "the new rules' every warning, once:\n{}", server.log_text());
    let (status, body) = server.post("/v1/rules/reload", "");
    assert_eq!((status, body["changed"].as_bool()), (200, Some(false)), "{body}");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        (warn_lines(&server, fail_open), warn_lines(&server, no_enabled)),
        (2, 1),
        "an unchanged reload logs nothing:\n{}",
        server.log_text()
    );
}
