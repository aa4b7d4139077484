//! `docs/rules.schema.json`, the JSON Schema of rules files, checked against the binary and the
//! loader: `fluxflow schema` prints exactly that file; every example rules file validates against
//! it; it allows exactly the keys the loader allows, with the loader's limits; and files the
//! loader rejects for their structure (unknown keys, wrong types, values out of range) are
//! rejected by the schema too.
//!
//! YAML is turned into JSON the way the loader reads it (`fluxflow::rules::yaml`): plain scalars
//! become numbers, booleans and null; quoted ones stay strings.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use fluxflow::actions::{ActionRegistry, reverse_points, reward_points};
use fluxflow::graph::Rules;
use fluxflow::rules::EngineSettings;
use fluxflow::rules::loyalty::{LIMIT_KEYS, PROGRAMME_KEYS, SCHEDULE_KEYS};
use fluxflow::rules::schema::{
    ACTION_KEYS, CHILD_KEYS, CONDITION_KEYS, ENGINE_KEYS, ENGINE_LIMITS, SCENARIO_KEYS, TOP_KEYS,
};
use serde_json::Value;

const SCHEMA_PATH: &str = "docs/rules.schema.json";

fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(relative: &str) -> String {
    let path = repo_root().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn schema() -> Value {
    serde_json::from_str(&read(SCHEMA_PATH)).unwrap_or_else(|e| panic!("{SCHEMA_PATH} is not JSON: {e}"))
}

/// The schema, compiled (which also checks it against the draft 2020-12 meta-schema).
struct Validator {
    schemas: boon::Schemas,
    index: boon::SchemaIndex,
}

impl Validator {
    fn new() -> Validator {
        let location = repo_root().join(SCHEMA_PATH).display().to_string();
        let mut compiler = boon::Compiler::new();
        compiler.add_resource(&location, schema()).unwrap_or_else(|e| panic!("{SCHEMA_PATH}: {e:#}"));
        let mut schemas = boon::Schemas::new();
        let index = compiler.compile(&location, &mut schemas).unwrap_or_else(|e| panic!("{SCHEMA_PATH}: {e:#}"));
        Validator { schemas, index }
    }

    /// `None` when the instance is valid; otherwise the validator's explanation and the JSON
    /// pointers of every instance location it names.
    fn check(&self, instance: &Value) -> Option<(String, BTreeSet<String>)> {
        let error = self.schemas.validate(instance, self.index).err()?;
        let mut locations = BTreeSet::new();
        collect_locations(&error, &mut locations);
        Some((format!("{error:#}"), locations))
    }
}

fn collect_locations(error: &boon::ValidationError, out: &mut BTreeSet<String>) {
    out.insert(error.instance_location.to_string());
    for cause in &error.causes {
        collect_locations(cause, out);
    }
}

/// A rules file's text as JSON, read like the loader reads it.
fn yaml_to_json(text: &str) -> Value {
    match fluxflow::rules::yaml::parse(text) {
        Ok(Some(node)) => node.to_json(),
        Ok(None) => Value::Null,
        Err(e) => panic!("YAML syntax at {:?}: {}\n{text}", e.pos, e.message),
    }
}

/// The loader's verdict: `Ok` (warnings allowed) or every problem it found.
fn load(text: &str) -> Result<(), String> {
    match Rules::load_str(text, &ActionRegistry::builtin()) {
        Ok(_) => Ok(()),
        Err(fluxflow::graph::LoadError::Invalid(diagnostics)) => {
            Err(diagnostics.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))
        }
        Err(e) => Err(e.to_string()),
    }
}

/// YAML files directly in `dir` (relative to the repository root), in name order.
fn yaml_files_in(dir: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(repo_root().join(dir)) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .map(|entry| entry.unwrap_or_else(|e| panic!("read {dir}: {e}")).file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".yaml") || name.ends_with(".yml"))
        .collect();
    names.sort();
    names.into_iter().map(|name| format!("{dir}/{name}")).collect()
}

#[test]
fn schema_command_prints_the_file() {
    let output = Command::new(env!("CARGO_BIN_EXE_fluxflow"))
        .arg("schema")
        .output()
        .unwrap_or_else(|e| panic!("run fluxflow schema: {e}"));
    assert!(output.status.success(), "fluxflow schema failed: {}", String::from_utf8_lossy(&output.stderr));
    assert!(output.stderr.is_empty(), "stderr: {}", String::from_utf8_lossy(&output.stderr));
    assert!(
        output.stdout == read(SCHEMA_PATH).as_bytes(),
        "`fluxflow schema` must print exactly {SCHEMA_PATH}; got:\n{}",
        String::from_utf8_lossy(&output.stdout)
    );
}

#[test]
fn schema_is_a_draft_2020_12_schema_with_id_and_title() {
    let schema = schema();
    assert_eq!(schema["$schema"], "https://json-schema.org/draft/2020-12/schema");
    assert!(schema["$id"].as_str().is_some_and(|id| !id.is_empty()), "the schema needs an `$id`");
    assert!(schema["title"].as_str().is_some_and(|t| !t.is_empty()), "the schema needs a `title`");
    Validator::new(); // compiles only when the schema is valid against the meta-schema
}

fn is_rules_file(text: &str) -> bool {
    matches!(yaml_to_json(text), Value::Object(top) if top.contains_key("version"))
}

/// The ```yaml blocks of a Markdown file that are rules files, named `FILE:LINE`.
fn markdown_rules_blocks(file: &str) -> Vec<(String, String)> {
    let mut blocks = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (i, line) in read(file).lines().enumerate() {
        match &mut current {
            None if line.trim_start().starts_with("```yaml") => current = Some((i + 1, String::new())),
            None => {}
            Some((start, text)) if line.trim_start().starts_with("```") => {
                if is_rules_file(text) {
                    blocks.push((format!("{file}:{start}"), std::mem::take(text)));
                }
                current = None;
            }
            Some((_, text)) => {
                text.push_str(line);
                text.push('\n');
            }
        }
    }
    blocks
}

/// Every example rules file loads, and validates against the schema: the example rules, the
/// golden rules, the YAML files in `examples/` (a rules file has a top-level
/// `version`; of a rule test file, the rules it names with `rules:` or holds in `rules_inline:`),
/// the README's rules examples, and the files of `tests/rules/invalid/` that load with warnings
/// only.
#[test]
fn example_rules_files_validate() {
    let mut examples: Vec<(String, String)> = Vec::new();
    let mut seen = BTreeSet::new();
    let mut add_file = |examples: &mut Vec<(String, String)>, file: String| {
        let path = common::test_owned(&file);
        let canonical = path.canonicalize().unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if seen.insert(canonical) {
            let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
            examples.push((file, text));
        }
    };
    for file in [common::EXAMPLE_RULES, "tests/golden/rules.yaml"] {
        add_file(&mut examples, file.to_owned());
    }
    for dir in ["examples"] {
        let files = yaml_files_in(dir);
        assert!(!files.is_empty(), "{dir}/ holds YAML files to check");
        for file in files {
            let text = read(&file);
            if is_rules_file(&text) {
                add_file(&mut examples, file);
                continue;
            }
            let top = yaml_to_json(&text);
            if let Some(path) = top.get("rules").and_then(Value::as_str) {
                add_file(&mut examples, format!("{dir}/{path}"));
            }
            if let Some(inline) = top.get("rules_inline").and_then(Value::as_str) {
                examples.push((format!("{file} (rules_inline)"), inline.to_owned()));
            }
        }
    }
    let readme = markdown_rules_blocks("README.md");
    assert!(!readme.is_empty(), "README.md shows a rules file");
    examples.extend(readme);
    let before = examples.len();
    for file in yaml_files_in("tests/rules/invalid") {
        if read(&file.replace(".yaml", ".expected")).starts_with("exit: 0\n") {
            let text = read(&file);
            examples.push((file, text));
        }
    }
    assert!(examples.len() > before, "expected a warnings-only case in tests/rules/invalid");
    let validator = Validator::new();
    for (name, text) in &examples {
        if let Err(problems) = load(text) {
            panic!("{name} does not load:\n{problems}");
        }
        if let Some((explanation, _)) = validator.check(&yaml_to_json(text)) {
            panic!("{name} loads but does not validate against {SCHEMA_PATH}:\n{explanation}");
        }
    }
}

fn property_names(schema: &Value, pointer: &str) -> BTreeSet<String> {
    schema
        .pointer(pointer)
        .and_then(Value::as_object)
        .unwrap_or_else(|| panic!("{SCHEMA_PATH} has no object at {pointer}"))
        .keys()
        .cloned()
        .collect()
}

fn names(keys: &[&str]) -> BTreeSet<String> {
    keys.iter().map(|k| (*k).to_owned()).collect()
}

/// The keys the schema allows in each place are the loader's own lists.
#[test]
fn schema_keys_are_the_loaders() {
    let schema = schema();
    let places: [(&str, &[&str]); 11] = [
        ("/properties", &TOP_KEYS),
        ("/$defs/engine/properties", &ENGINE_KEYS),
        ("/$defs/programme/properties", &PROGRAMME_KEYS),
        ("/$defs/schedule/properties", &SCHEDULE_KEYS),
        ("/$defs/limit/properties", &LIMIT_KEYS),
        ("/$defs/scenario/properties", &SCENARIO_KEYS),
        ("/$defs/child/properties", &CHILD_KEYS),
        ("/$defs/condition/properties", &CONDITION_KEYS),
        ("/$defs/action/properties", &ACTION_KEYS),
        ("/$defs/reward_points_params/properties", &reward_points::PARAMS),
        ("/$defs/reverse_points_params/properties", &reverse_points::PARAMS),
    ];
    for (pointer, loader_keys) in places {
        assert_eq!(property_names(&schema, pointer), names(loader_keys), "keys at {pointer}");
        let object = pointer.trim_end_matches("/properties");
        assert_eq!(
            schema.pointer(&format!("{object}/additionalProperties")),
            Some(&Value::Bool(false)),
            "{object} must reject unknown keys, as the loader does"
        );
    }
    // The reward_points params apply when `type` is reward_points.
    let rule = &schema["$defs"]["action"]["allOf"][0];
    assert_eq!(rule["if"]["properties"]["type"]["const"], "reward_points");
    assert_eq!(rule["then"]["properties"]["params"]["$ref"], "#/$defs/reward_points_params");
}

/// The schema's numbers are the loader's: engine limits and defaults, expiry range, action types.
#[test]
fn schema_limits_are_the_loaders() {
    let schema = schema();
    let engine = &schema["$defs"]["engine"]["properties"];
    let defaults = EngineSettings::default();
    for (key, limit) in ENGINE_LIMITS {
        assert_eq!(engine[key]["minimum"], 0, "`{key}`: 0 means the default");
        assert_eq!(engine[key]["maximum"], limit, "`{key}`'s limit");
        let default = match key {
            "event_workers" => defaults.event_workers,
            "action_workers" => defaults.action_workers,
            "queue_depth" => defaults.queue_depth,
            "event_timeout_ms" => defaults.event_timeout_ms,
            other => panic!("ENGINE_LIMITS has `{other}`, which this test does not know"),
        };
        assert_eq!(engine[key]["default"], default, "`{key}`'s default");
        assert!(engine[key]["description"].as_str().is_some_and(|d| d.contains(&format!("({default})"))));
    }
    assert_eq!(engine["fail_open"]["default"], defaults.fail_open);
    let params = &schema["$defs"]["reward_points_params"]["properties"];
    assert_eq!(params["expiry_days"]["minimum"], 0, "0 loads with a warning: never expires");
    assert_eq!(params["expiry_days"]["maximum"], reward_points::MAX_EXPIRY_DAYS);
    // The smallest fixed amount that rounds to 1 point, and the largest the loader takes.
    assert_eq!(reward_points::round_points(0.505), 1.0);
    assert_eq!(reward_points::round_points(0.504_999), 0.0);
    assert_eq!(params["points"]["minimum"], 0.505);
    assert_eq!(params["points"]["maximum"].as_f64(), Some(reward_points::MAX_POINTS));
    // Every type the schema names is a built-in one; every built-in one but the test-only
    // `test_sleep` is named.
    let registry = ActionRegistry::builtin();
    let types: BTreeSet<&str> = schema["$defs"]["action"]["properties"]["type"]["enum"]
        .as_array()
        .unwrap_or_else(|| panic!("`type` must be an enum"))
        .iter()
        .map(|v| v.as_str().unwrap_or_else(|| panic!("`type` values are strings")))
        .collect();
    let builtin: BTreeSet<&str> = registry.names().into_iter().filter(|n| *n != "test_sleep").collect();
    assert_eq!(types, builtin);
}

/// Every property has a description (editors show it on hover), and every object the loader
/// reads rejects unknown keys.
#[test]
fn every_property_is_described_and_every_object_closed() {
    let schema = schema();
    let mut objects = vec![("(root)".to_owned(), &schema)];
    for (name, def) in schema["$defs"].as_object().unwrap_or_else(|| panic!("no $defs")) {
        assert!(def["description"].as_str().is_some_and(|d| !d.is_empty()), "$defs/{name} needs a description");
        objects.push((format!("$defs/{name}"), def));
    }
    for (name, object) in objects {
        let Some(properties) = object.get("properties").and_then(Value::as_object) else {
            continue;
        };
        assert_eq!(object["additionalProperties"], false, "{name} must set additionalProperties: false");
        for (key, property) in properties {
            let description = property["description"].as_str().unwrap_or("");
            assert!(description.len() > 10, "{name}: property `{key}` needs a description");
        }
    }
}

fn scenario(body: &str) -> String {
    format!("version: v1\nscenarios:\n  - id: sc\n    enabled: true\n    event_types: [purchase]\n{body}")
}

fn child(child: &str) -> String {
    scenario(&format!("    children:\n      - {child}\n"))
}

fn params(params: &str) -> String {
    child(&format!("action: {{id: act, type: reward_points, params: {params}}}"))
}

fn engine(engine: &str) -> String {
    format!("version: v1\nengine: {engine}\nscenarios: []\n")
}

/// Files the loader accepts (some with warnings) where the schema must be permissive too.
#[test]
fn what_the_loader_accepts_validates() {
    let mut cases = vec![
        "version: v1\n".to_owned(),
        "version: 1\nscenarios:\n".to_owned(),
        "version: 1.5\nengine:\nscenarios: []\n".to_owned(),
        "version: '2024-01'\n".to_owned(),
        engine("{event_workers: 0, action_workers: 0, queue_depth: 0, event_timeout_ms: 0, fail_open: false}"),
        engine("{event_workers: 4096, action_workers: 4096, queue_depth: 10000000, event_timeout_ms: 3600000}"),
        engine("{}"),
        scenario("    description: 42\n    sources:\n    children:\n"),
        scenario("    sources: [store, 7]\n    children: []\n"),
        "version: v1\nscenarios:\n  - id: 12\n    event_types: [purchase, 3]\n".to_owned(),
        "version: v1\nscenarios:\n  - {id: sc, enabled: true, event_types: [\"purchase\"], description: \"x\"}\n"
            .to_owned(),
        child("condition: {id: 7, expression: \"payload.amount > 10\"}"),
        child("condition: {id: c, expression: true}"),
        child("condition: {id: c, expression: payload.ok == true, children: }"),
        child(
            "condition: {id: c, expression: 'payload.ok', children: [{action: {id: a, type: reward_points, params: {points: 1}}}]}",
        ),
        params("{points: 1}"),
        params("{points: 0.505}"),
        params("{operation: deduct, points: 9007199254740992}"),
        params("{operation: \"award\", points: 1.5e2, reason: 5, expiry_days: 1}"),
        params("{points: 1, expiry_days: 0}"),
        params("{points: 1, reason: \"\"}"),
        scenario("    description: \"\"\n"),
        params("{operation: award, points: 10, reason: \"Welcome bonus\", expiry_days: 36500}"),
        params("{operation: award, points_formula: \"payload.amount * 0.05\"}"),
        params("{points_formula: 10}"),
        params("{points_formula: payload.amount / 4, expiry_days: +30}"),
    ];
    for spelling in ["true", "True", "TRUE", "false", "yes", "Yes", "NO", "on", "Off", "y", "N"] {
        cases.push(engine(&format!("{{fail_open: {spelling}}}")));
        cases.push(format!("version: v1\nscenarios:\n  - {{id: sc, enabled: {spelling}, event_types: [login]}}\n"));
    }
    let validator = Validator::new();
    for text in &cases {
        if let Err(problems) = load(text) {
            panic!("the loader rejects this case, so it does not belong here:\n{text}\n{problems}");
        }
        if let Some((explanation, _)) = validator.check(&yaml_to_json(text)) {
            panic!("the loader accepts this file but the schema does not:\n{text}\n{explanation}");
        }
    }
}

/// Structural mistakes, each rejected by the loader and by the schema.
#[test]
fn structural_errors_are_rejected_by_both() {
    let mut cases = vec![
        "scenarios: []\n".to_owned(),
        "version: ''\n".to_owned(),
        "version: ' '\n".to_owned(),
        "version:\n".to_owned(),
        "version: [v1]\n".to_owned(),
        "version: v1\nrules: []\n".to_owned(),
        "- version: v1\n".to_owned(),
        "version: v1\nengine: [1]\n".to_owned(),
        "version: v1\nscenarios: {id: sc}\n".to_owned(),
        "version: v1\nscenarios: none\n".to_owned(),
        engine("{threads: 4}"),
        engine("{event_worker: 4}"),
        engine("{event_workers: -1}"),
        engine("{event_workers: \"8\"}"),
        engine("{event_workers: 1.5}"),
        engine("{event_workers: null}"),
        engine("{fail_open: maybe}"),
        engine("{fail_open: \"true\"}"),
        engine("{fail_open: 1}"),
        "version: v1\nscenarios:\n  - just-a-name\n".to_owned(),
        "version: v1\nscenarios:\n  - {enabled: true, event_types: [purchase]}\n".to_owned(),
        "version: v1\nscenarios:\n  - {id: sc, enabled: true}\n".to_owned(),
        "version: v1\nscenarios:\n  - {id: sc, enabled: true, event_types: []}\n".to_owned(),
        "version: v1\nscenarios:\n  - {id: sc, enabled: true, event_types: purchase}\n".to_owned(),
        "version: v1\nscenarios:\n  - {id: sc, enabled: true, event_types: null}\n".to_owned(),
        "version: v1\nscenarios:\n  - {id: sc, enabled: true, event_types: [\"\"]}\n".to_owned(),
        "version: v1\nscenarios:\n  - {id: sc, enabled: true, event_types: [[nested]]}\n".to_owned(),
        "version: v1\nscenarios:\n  - {id: \"\", enabled: true, event_types: [login]}\n".to_owned(),
        "version: v1\nscenarios:\n  - {id: null, enabled: true, event_types: [login]}\n".to_owned(),
        "version: v1\nscenarios:\n  - {id: [sc], enabled: true, event_types: [login]}\n".to_owned(),
        scenario("    enable: true\n"),
        scenario("    sources: web\n"),
        scenario("    description: [not, text]\n"),
        scenario("    children: {}\n"),
        scenario("    children: none\n"),
        "version: v1\nscenarios:\n  - {id: sc, enabled: maybe, event_types: [login]}\n".to_owned(),
        "version: v1\nscenarios:\n  - {id: sc, enabled: \"true\", event_types: [login]}\n".to_owned(),
        "version: v1\nscenarios:\n  - {id: sc, enabled: 1, event_types: [login]}\n".to_owned(),
        child("{}"),
        child("just a string"),
        child("{condition: {id: c, expression: 'true'}, action: {id: a, type: reward_points, params: {points: 1}}}"),
        child("{action: {id: a, type: reward_points, params: {points: 1}}, note: x}"),
        child("condition:"),
        child("condition: {expression: 'payload.ok'}"),
        child("condition: {id: c}"),
        child("condition: {id: c, expression: ''}"),
        child("condition: {id: c, expression: '   '}"),
        child("condition: {id: c, expression: [payload.ok]}"),
        child("condition: {id: c, expresion: 'payload.ok'}"),
        child("condition: {id: c, expression: 'payload.ok', children: {}}"),
        child("action:"),
        child("action: {type: reward_points, params: {points: 1}}"),
        child("action: {id: a, params: {points: 1}}"),
        child("action: {id: a, type: reward_point, params: {points: 1}}"),
        child("action: {id: a, type: '', params: {points: 1}}"),
        child("action: {id: a, type: [reward_points], params: {points: 1}}"),
        child("action: {id: a, type: reward_points, params: {points: 1}, children: []}"),
        child("action: {id: a, type: reward_points}"),
        child("action: {id: a, type: reward_points, params: }"),
        params("[award, 10]"),
        params("{operation: give, points: 1}"),
        params("{operation: Award, points: 1}"),
        params("{operation: null, points: 1}"),
        params("{operation: award}"),
        params("{operation: award, reason: Nothing}"),
        params("{points: 1, points_formula: \"payload.amount\"}"),
        params("{points: 0.504}"),
        params("{points: 0}"),
        params("{points: -5}"),
        params("{points: \"100\"}"),
        params("{points: null}"),
        params("{points: 4611686018427388928}"),
        params("{points_formula: \"\"}"),
        params("{points_formula: [payload.amount]}"),
        params("{points_formula: null}"),
        params("{points: 1, expiry_days: -1}"),
        params("{points: 1, expiry_days: 36501}"),
        params("{points: 1, expiry_days: \"30\"}"),
        params("{points: 1, expiry_days: 1.5}"),
        params("{points: 1, expiry_days: forever}"),
        params("{points: 1, reason: [a, b]}"),
        params("{points: 1, poinst_formula: \"1\"}"),
    ];
    for (key, limit) in ENGINE_LIMITS {
        cases.push(engine(&format!("{{{key}: {}}}", limit + 1)));
    }
    let validator = Validator::new();
    for text in &cases {
        assert!(load(text).is_err(), "the loader accepts this case, so it does not belong here:\n{text}");
        assert!(
            validator.check(&yaml_to_json(text)).is_some(),
            "the loader rejects this file but the schema accepts it:\n{text}\n{}",
            load(text).err().unwrap_or_default()
        );
    }
}

/// What only the loader can see: the schema accepts these files, `fluxflow validate` does not.
/// Listed so that the schema's limits are known (and its descriptions point at `validate`).
#[test]
fn what_only_the_loader_sees() {
    let cases = [
        // Unique ids, duplicate keys (JSON keeps the last), expressions and formulas.
        "tests/rules/invalid/06_duplicate_ids.yaml",
        "tests/rules/invalid/07_duplicate_keys.yaml",
        "tests/rules/invalid/10_expression_syntax.yaml",
        "tests/rules/invalid/11_unknown_root.yaml",
        "tests/rules/invalid/12_chained_comparison.yaml",
        "tests/rules/invalid/13_type_errors.yaml",
        "tests/rules/invalid/14_matches.yaml",
        "tests/rules/invalid/21_block_scalar.yaml",
        "tests/rules/invalid/22_quoted_columns.yaml",
    ];
    let validator = Validator::new();
    for file in cases {
        let text = read(file);
        assert!(load(&text).is_err(), "{file} loads");
        if let Some((explanation, _)) = validator.check(&yaml_to_json(&text)) {
            panic!("{file} has no structural error, yet the schema rejects it:\n{explanation}");
        }
    }
    // JSON cannot tell how a value was written: a quoted "yes", a float-looking whole number.
    for text in [
        "version: v1\nscenarios:\n  - {id: sc, enabled: \"yes\", event_types: [login]}\n".to_owned(),
        engine("{queue_depth: 1e6}"),
        params("{points: 1, expiry_days: 30.0}"),
    ] {
        assert!(load(&text).is_err(), "loads:\n{text}");
        assert!(validator.check(&yaml_to_json(&text)).is_none(), "rejected by the schema:\n{text}");
    }
}

/// Files of `tests/rules/invalid/` with structural errors are rejected by the schema, at the
/// places `fluxflow validate` names.
#[test]
fn invalid_files_with_structural_errors_are_rejected() {
    let cases: [(&str, &[&str]); 9] = [
        (
            "04_unknown_keys",
            &[
                "",
                "/engine",
                "/scenarios/0",
                "/scenarios/0/children/0",
                "/scenarios/0/children/0/condition",
                "/scenarios/0/children/0/condition/children/0/action",
                "/scenarios/0/children/0/condition/children/0/action/params",
            ],
        ),
        (
            "05_wrong_types",
            &[
                "/scenarios/0/enabled",
                "/scenarios/0/event_types",
                "/scenarios/0/children/0/action/params/points",
                "/scenarios/1/children",
            ],
        ),
        ("08_empty_event_types", &["/scenarios/0/event_types", "/scenarios/1/event_types", "/scenarios/2"]),
        ("09_child_shape", &["/scenarios/0/children/0", "/scenarios/0/children/1", "/scenarios/0/children/5"]),
        ("15_bad_formulas", &["/scenarios/0/children/4/action/params", "/scenarios/0/children/5/action/params"]),
        ("16_unknown_action_type", &["/scenarios/0/children/0/action/type", "/scenarios/0/children/3/action/type"]),
        (
            "17_bad_params",
            &[
                "/scenarios/0/children/0/action/params/operation",
                "/scenarios/0/children/1/action/params",
                "/scenarios/0/children/2/action/params",
                "/scenarios/0/children/3/action/params/points",
                "/scenarios/0/children/4/action/params/expiry_days",
                "/scenarios/0/children/5/action",
                "/scenarios/0/children/6/action/params",
                "/scenarios/0/children/7/action/params",
            ],
        ),
        (
            "18_engine_numbers",
            &["/engine/event_workers", "/engine/action_workers", "/engine/event_timeout_ms", "/engine/fail_open"],
        ),
        ("23_scenario_shapes", &["/version", "/scenarios/0", "/scenarios/1", "/scenarios/2/enabled"]),
    ];
    let validator = Validator::new();
    for (name, expected) in cases {
        let file = format!("tests/rules/invalid/{name}.yaml");
        let text = read(&file);
        assert!(load(&text).is_err(), "{file} loads");
        let Some((explanation, locations)) = validator.check(&yaml_to_json(&text)) else {
            panic!("{file} has structural errors, yet validates against the schema");
        };
        for location in expected {
            assert!(
                locations.contains(*location),
                "{file}: expected the schema to flag `{location}`; it flagged {locations:?}:\n{explanation}"
            );
        }
    }
    // Not a mapping at all.
    let text = read("tests/rules/invalid/24_not_a_mapping.yaml");
    assert!(validator.check(&yaml_to_json(&text)).is_some());
}

/// The README tells editors where the schema is.
#[test]
fn readme_points_editors_at_the_schema() {
    let readme = read("README.md");
    assert!(readme.contains("# yaml-language-server: $schema="), "README needs the modeline");
    assert!(readme.contains(SCHEMA_PATH), "README names {SCHEMA_PATH}");
    assert!(readme.contains("yaml.schemas"), "README shows the VS Code setting");
}

/// The hover text of `expression` names every operator and function of the language, so an editor
/// user sees `in`, lists and functions as well as the original's operators.
#[test]
fn the_expression_description_names_every_operator() {
    let schema = schema();
    let description = schema["$defs"]["condition"]["properties"]["expression"]["description"].as_str().unwrap_or("");
    let operators = [
        "OR", "AND", "NOT", "==", "!=", ">", ">=", "<", "<=", "contains", "matches", "in", "not in", "+", "-", "*",
        "/", "%",
    ];
    for op in operators {
        assert!(description.contains(&format!(" {op}")), "the expression description does not name `{op}`");
    }
    assert!(description.contains("['food', 'drinks']"), "the expression description shows no list");
    for function in fluxflow::expr::Function::ALL {
        let call = format!(" {}()", function.name());
        assert!(description.contains(&call), "the expression description does not name `{call}`");
    }
}
