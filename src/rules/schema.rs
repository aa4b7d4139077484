//! The rules file's schema, checked by hand over the positioned YAML tree so that every problem
//! of a file is found in one pass.
//!
//! Checks here are structural (keys, types, ids, lists). Expressions and action params are
//! checked when the graph is compiled, which reports into the same [`Diagnostics`].

use std::collections::HashMap;

use serde::Serialize;

use super::diagnostic::Diagnostics;
use super::yaml::{Node, NodeKind, Pos, Style};
use crate::expr::Span;

/// A rules file, as read. Parts with errors are left out; the diagnostics say what was wrong.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RulesFile {
    /// The file's `version`.
    pub version: String,
    /// Engine settings, with defaults filled in.
    pub engine: EngineSettings,
    /// Scenarios in file order, disabled ones included.
    pub scenarios: Vec<Scenario>,
}

/// `engine:` settings. A 0 or absent number means the default, as in the original.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct EngineSettings {
    /// Events evaluated at once.
    pub event_workers: u32,
    /// Accepted for compatibility; actions run inside the event's worker.
    pub action_workers: u32,
    /// Events that may wait for a worker.
    pub queue_depth: u32,
    /// How long a synchronous request waits for its result.
    pub event_timeout_ms: u32,
    /// Accepted for compatibility; has no effect.
    pub fail_open: bool,
}

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings { event_workers: 32, action_workers: 16, queue_depth: 10_000, event_timeout_ms: 5_000, fail_open: false }
    }
}

/// Upper bounds of the engine numbers, so a typo cannot ask for a billion threads.
const ENGINE_LIMITS: [(&str, u64); 4] =
    [("event_workers", 4_096), ("action_workers", 4_096), ("queue_depth", 10_000_000), ("event_timeout_ms", 3_600_000)];

/// A scenario.
#[derive(Debug, Clone, Serialize)]
pub struct Scenario {
    /// Unique id.
    pub id: String,
    /// Free text.
    pub description: String,
    /// Absent means disabled, as in the original.
    pub enabled: bool,
    /// Event types it listens to, as written.
    pub event_types: Vec<String>,
    /// Sources it accepts, as written; empty means all.
    pub sources: Vec<String>,
    /// Conditions and actions under it, in file order.
    pub children: Vec<Child>,
    /// Where it starts.
    #[serde(skip)]
    pub pos: Pos,
}

/// A child of a scenario or condition.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Child {
    /// A condition with children of its own.
    Condition(Condition),
    /// An action.
    Action(ActionDef),
}

/// A condition node.
#[derive(Debug, Clone, Serialize)]
pub struct Condition {
    /// Unique id.
    pub id: String,
    /// The expression text.
    pub expression: Text,
    /// Children, in file order.
    pub children: Vec<Child>,
    /// Where it starts.
    #[serde(skip)]
    pub pos: Pos,
}

/// An action node.
#[derive(Debug, Clone, Serialize)]
pub struct ActionDef {
    /// Unique id.
    pub id: String,
    /// The action type (`reward_points`).
    #[serde(rename = "type")]
    pub action_type: String,
    /// The params as JSON (for display).
    pub params: serde_json::Value,
    /// The params with positions (for checking), when given.
    #[serde(skip)]
    pub params_node: Option<Node>,
    /// Where it starts.
    #[serde(skip)]
    pub pos: Pos,
}

/// A string from the file that remembers where it was written, so that an error found inside it
/// (a bad expression) can point at the right column of the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Text {
    /// The string.
    pub value: String,
    /// Where the scalar starts.
    #[serde(skip)]
    pub pos: Pos,
    /// How it was written; quoted scalars start one column later.
    #[serde(skip)]
    pub style: Style,
    /// True when the scalar sits on one line, so columns map one to one.
    #[serde(skip)]
    pub single_line: bool,
}

impl Text {
    /// Reads a scalar node as text.
    pub fn from_node(node: &Node) -> Option<Text> {
        let (text, style) = node.scalar()?;
        Some(Text { value: text.to_owned(), pos: node.pos, style, single_line: node.pos.line == node.end.line })
    }

    /// The file position of a span of the text, and whether it is exact. Inside block scalars
    /// and multi-line strings the scalar's own position is given instead.
    pub fn locate(&self, span: Span) -> (Pos, bool) {
        if !self.single_line || self.style == Style::Block {
            return (self.pos, false);
        }
        let quote = u32::from(self.style == Style::Quoted);
        let offset = u32::try_from(span.column(&self.value)).unwrap_or(u32::MAX);
        (Pos { line: self.pos.line, col: self.pos.col + quote + offset - 1 }, true)
    }
}

/// Reads a whole rules file from its YAML tree, recording every problem.
pub fn read(root: Option<&Node>, diags: &mut Diagnostics) -> RulesFile {
    let mut file = RulesFile::default();
    let Some(root) = root else {
        diags.error(Pos { line: 1, col: 1 }, "the rules file is empty: it needs at least `version: v1`");
        return file;
    };
    let Some(top) = Fields::new(root, "the rules file", &["version", "engine", "scenarios"], diags) else {
        return file;
    };
    match top.get("version") {
        None => diags.error(root.pos, "`version` is required (write `version: v1`)"),
        Some(v) => match v.scalar() {
            Some((text, _)) if !v.is_null() && !text.trim().is_empty() => file.version = text.to_owned(),
            _ => diags.error(v.pos, "`version` must be a non-empty value such as v1"),
        },
    }
    if let Some(engine) = top.get("engine").filter(|n| !n.is_null()) {
        file.engine = read_engine(engine, diags);
    }
    let mut ids = IdRegistry::default();
    if let Some(list) = top.get("scenarios") {
        for item in seq_items(list, "`scenarios`", diags) {
            if let Some(scenario) = read_scenario(item, &mut ids, diags) {
                file.scenarios.push(scenario);
            }
        }
    }
    file
}

fn read_engine(node: &Node, diags: &mut Diagnostics) -> EngineSettings {
    let mut engine = EngineSettings::default();
    let keys = ["event_workers", "action_workers", "queue_depth", "event_timeout_ms", "fail_open"];
    let Some(fields) = Fields::new(node, "`engine`", &keys, diags) else {
        return engine;
    };
    for (key, limit) in ENGINE_LIMITS {
        let Some(value) = fields.get(key) else { continue };
        let Some(n) = read_whole_number(value, key, limit, diags) else { continue };
        // 0 means the default, as in the original.
        if n == 0 {
            continue;
        }
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        match key {
            "event_workers" => engine.event_workers = n,
            "action_workers" => engine.action_workers = n,
            "queue_depth" => engine.queue_depth = n,
            _ => engine.event_timeout_ms = n,
        }
    }
    if let Some(value) = fields.get("fail_open") {
        if let Some(b) = read_bool(value, "fail_open", diags) {
            engine.fail_open = b;
            diags.warning(value.pos, "`fail_open` is ignored: unknown conditions never pass, and a failing ledger answers 503");
        }
    }
    engine
}

fn read_whole_number(node: &Node, key: &str, max: u64, diags: &mut Diagnostics) -> Option<u64> {
    let text = match node.scalar() {
        Some((t, Style::Plain)) => t,
        _ => {
            diags.error(node.pos, format!("`{key}` must be a whole number, not {}", node.shape()));
            return None;
        }
    };
    match text.parse::<i64>() {
        Ok(n) if n < 0 => diags.error(node.pos, format!("`{key}` must not be negative (got {n}; 0 means the default)")),
        Ok(n) if n.unsigned_abs() > max => diags.error(node.pos, format!("`{key}` is {n}, above the limit of {max}")),
        Ok(n) => return Some(n.unsigned_abs()),
        Err(_) => diags.error(node.pos, format!("`{key}` must be a whole number, got `{text}`")),
    }
    None
}

/// Reads a boolean. YAML 1.1's `yes`/`no`/`on`/`off` are accepted, as the original did, with a warning.
pub fn read_bool(node: &Node, key: &str, diags: &mut Diagnostics) -> Option<bool> {
    let Some((text, Style::Plain)) = node.scalar() else {
        diags.error(node.pos, format!("`{key}` must be true or false, not {}", node.shape()));
        return None;
    };
    match text {
        "true" | "True" | "TRUE" => Some(true),
        "false" | "False" | "FALSE" => Some(false),
        _ => {
            let legacy = match text.to_ascii_lowercase().as_str() {
                "yes" | "on" | "y" => Some(true),
                "no" | "off" | "n" => Some(false),
                _ => None,
            };
            match legacy {
                Some(b) => diags.warning(node.pos, format!("`{key}: {text}` is read as {b}; write `{b}`")),
                None => diags.error(node.pos, format!("`{key}` must be true or false, got `{text}`")),
            }
            legacy
        }
    }
}

/// Reads a non-empty scalar as a string (plain numbers are taken as their text, as the original did).
pub fn read_string(node: &Node, key: &str, diags: &mut Diagnostics) -> Option<String> {
    match node.scalar() {
        Some((text, _)) if !node.is_null() && !text.is_empty() => Some(text.to_owned()),
        Some(_) => {
            diags.error(node.pos, format!("`{key}` must not be empty"));
            None
        }
        None => {
            diags.error(node.pos, format!("`{key}` must be a string, not {}", node.shape()));
            None
        }
    }
}

fn read_string_list(node: &Node, key: &str, diags: &mut Diagnostics) -> Vec<String> {
    if node.is_null() {
        return Vec::new();
    }
    if node.scalar().is_some() {
        let text = node.scalar().map_or("", |(t, _)| t);
        diags.error(node.pos, format!("`{key}` must be a list; write `{key}: [{text}]`"));
        return Vec::new();
    }
    seq_items(node, &format!("`{key}`"), diags)
        .iter()
        .filter_map(|item| read_string(item, &format!("{key} item"), diags))
        .collect()
}

fn seq_items<'a>(node: &'a Node, what: &str, diags: &mut Diagnostics) -> &'a [Node] {
    match &node.kind {
        NodeKind::Seq(items) => items,
        _ if node.is_null() => &[],
        _ => {
            diags.error(node.pos, format!("{what} must be a list, not {}", node.shape()));
            &[]
        }
    }
}

fn read_scenario(node: &Node, ids: &mut IdRegistry, diags: &mut Diagnostics) -> Option<Scenario> {
    let keys = ["id", "description", "enabled", "event_types", "sources", "children"];
    let fields = Fields::new(node, "a scenario", &keys, diags)?;
    let id = fields.required_string("id", "scenario", diags);
    if let Some(id) = &id {
        ids.claim(id, "scenario", fields.get("id").map_or(node.pos, |n| n.pos), diags);
    }
    let label = id.as_deref().map_or_else(|| format!("scenario at line {}", node.pos.line), |id| format!("scenario `{id}`"));
    let description = fields.get("description").and_then(|n| read_string(n, "description", diags)).unwrap_or_default();
    let enabled = match fields.get("enabled") {
        Some(n) => read_bool(n, "enabled", diags).unwrap_or(false),
        None => {
            diags.warning(node.pos, format!("{label} has no `enabled` key, so it is disabled; write `enabled: true` or `enabled: false`"));
            false
        }
    };
    let event_types = match fields.get("event_types") {
        None => {
            diags.error(node.pos, format!("{label} needs `event_types`"));
            Vec::new()
        }
        Some(n) => {
            let types = read_string_list(n, "event_types", diags);
            let reported_as_scalar = n.scalar().is_some() && !n.is_null();
            if types.is_empty() && !reported_as_scalar {
                diags.error(n.pos, format!("`event_types` of {label} must not be empty"));
            }
            types
        }
    };
    let sources = fields.get("sources").map(|n| read_string_list(n, "sources", diags)).unwrap_or_default();
    let children = fields.get("children").map(|n| read_children(n, ids, diags)).unwrap_or_default();
    Some(Scenario { id: id?, description, enabled, event_types, sources, children, pos: node.pos })
}

fn read_children(node: &Node, ids: &mut IdRegistry, diags: &mut Diagnostics) -> Vec<Child> {
    seq_items(node, "`children`", diags).iter().filter_map(|item| read_child(item, ids, diags)).collect()
}

fn read_child(node: &Node, ids: &mut IdRegistry, diags: &mut Diagnostics) -> Option<Child> {
    let fields = Fields::new(node, "a child", &["condition", "action"], diags)?;
    match (fields.get("condition"), fields.get("action")) {
        (Some(_), Some(_)) => {
            diags.error(node.pos, "a child has both `condition` and `action`; give each its own list item");
            None
        }
        (None, None) => {
            if !fields.is_empty() {
                return None; // the unknown key was reported already
            }
            diags.error(node.pos, "a child needs a `condition` or an `action`");
            None
        }
        (Some(c), None) => read_condition(c, ids, diags).map(Child::Condition),
        (None, Some(a)) => read_action(a, ids, diags).map(Child::Action),
    }
}

fn read_condition(node: &Node, ids: &mut IdRegistry, diags: &mut Diagnostics) -> Option<Condition> {
    let fields = Fields::new(node, "a condition", &["id", "expression", "children"], diags)?;
    let id = fields.required_string("id", "condition", diags);
    if let Some(id) = &id {
        ids.claim(id, "condition", fields.get("id").map_or(node.pos, |n| n.pos), diags);
    }
    let label = id.as_deref().map_or_else(|| "a condition".to_owned(), |id| format!("condition `{id}`"));
    let expression = match fields.get("expression") {
        None => {
            diags.error(node.pos, format!("{label} needs an `expression`"));
            None
        }
        Some(n) => match Text::from_node(n) {
            Some(t) if !n.is_null() && !t.value.trim().is_empty() => Some(t),
            Some(_) => {
                diags.error(n.pos, format!("the `expression` of {label} is empty"));
                None
            }
            None => {
                diags.error(n.pos, format!("the `expression` of {label} must be a string, not {}", n.shape()));
                None
            }
        },
    };
    let children = fields.get("children").map(|n| read_children(n, ids, diags)).unwrap_or_default();
    if children.is_empty() {
        diags.warning(node.pos, format!("{label} has no children: it can never fire anything"));
    }
    Some(Condition { id: id?, expression: expression?, children, pos: node.pos })
}

fn read_action(node: &Node, ids: &mut IdRegistry, diags: &mut Diagnostics) -> Option<ActionDef> {
    let fields = Fields::new(node, "an action", &["id", "type", "params"], diags)?;
    let id = fields.required_string("id", "action", diags);
    if let Some(id) = &id {
        ids.claim(id, "action", fields.get("id").map_or(node.pos, |n| n.pos), diags);
    }
    let action_type = fields.required_string("type", "action", diags);
    let params_node = fields.get("params").filter(|n| !n.is_null()).cloned();
    let params = params_node.as_ref().map_or(serde_json::Value::Null, Node::to_json);
    Some(ActionDef { id: id?, action_type: action_type?, params, params_node, pos: node.pos })
}

/// The keys of a mapping, checked against the keys allowed there.
pub struct Fields<'a> {
    pos: Pos,
    entries: Vec<(&'a str, &'a Node)>,
}

impl<'a> Fields<'a> {
    /// Reads a mapping; reports duplicate and unknown keys (with the nearest known key as a hint).
    /// `None` when the node is not a mapping at all.
    pub fn new(node: &'a Node, what: &str, known: &[&str], diags: &mut Diagnostics) -> Option<Fields<'a>> {
        let NodeKind::Map(entries) = &node.kind else {
            diags.error(node.pos, format!("{what} must be a mapping, not {}", node.shape()));
            return None;
        };
        let mut seen: HashMap<&str, Pos> = HashMap::new();
        let mut kept = Vec::new();
        for (key_node, value) in entries {
            let Some((key, _)) = key_node.scalar() else {
                diags.error(key_node.pos, format!("keys of {what} must be plain names"));
                continue;
            };
            if let Some(first) = seen.get(key) {
                diags.error(key_node.pos, format!("duplicate key `{key}` in {what} (first at line {})", first.line));
                continue;
            }
            seen.insert(key, key_node.pos);
            if known.contains(&key) {
                kept.push((key, value));
            } else {
                diags.error(key_node.pos, format!("unknown key `{key}` in {what}{}", suggestion(key, known)));
            }
        }
        Some(Fields { pos: node.pos, entries: kept })
    }

    /// The value of a known key.
    pub fn get(&self, key: &str) -> Option<&'a Node> {
        self.entries.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }

    /// True when no known key was given.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Iterates over the known keys given, in file order.
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, &'a Node)> + '_ {
        self.entries.iter().copied()
    }

    fn required_string(&self, key: &str, kind: &str, diags: &mut Diagnostics) -> Option<String> {
        match self.get(key) {
            Some(n) => read_string(n, key, diags),
            None => {
                diags.error(self.pos, format!("{kind} needs an `{key}`"));
                None
            }
        }
    }
}

/// ` (did you mean `x`?)` when a known key is close to the unknown one.
pub fn suggestion(unknown: &str, known: &[&str]) -> String {
    known
        .iter()
        .map(|k| (strsim::jaro_winkler(unknown, k), k))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map_or_else(
            || format!(" (allowed: {})", known.join(", ")),
            |(_, k)| format!(" (did you mean `{k}`?)"),
        )
}

/// Ids are unique across scenarios, conditions and actions.
#[derive(Default)]
struct IdRegistry {
    seen: HashMap<String, (&'static str, Pos)>,
}

impl IdRegistry {
    fn claim(&mut self, id: &str, kind: &'static str, pos: Pos, diags: &mut Diagnostics) {
        if let Some((first_kind, first)) = self.seen.get(id) {
            diags.error(pos, format!("duplicate id `{id}`: already used by the {first_kind} at line {}", first.line));
        } else {
            self.seen.insert(id.to_owned(), (kind, pos));
        }
    }
}
