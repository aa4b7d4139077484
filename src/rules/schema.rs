//! The rules file's schema, checked by hand over the positioned YAML tree so that every problem
//! of a file is found in one pass.
//!
//! Checks here are structural (keys, types, ids, lists). Expressions and action params are
//! checked when the graph is compiled, which reports into the same [`Diagnostics`].

use rustc_hash::FxHashMap;
use std::fmt;

use serde::Serialize;

use super::diagnostic::Diagnostics;
use super::loyalty::{Limit, Programme, ScheduleDef, read_programme, read_scenario_loyalty};
use super::yaml::{Node, NodeKind, Pos, Style};
use crate::expr::Span;

/// A rules file, as read. Parts with errors are left out (the children of a scenario or a
/// condition too broken to keep are still read and checked); the diagnostics say what was wrong.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RulesFile {
    /// The file's `version`.
    pub version: String,
    /// Engine settings, with defaults filled in.
    pub engine: EngineSettings,
    /// The loyalty programme's settings, with defaults filled in.
    pub programme: Programme,
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
        EngineSettings {
            event_workers: 32,
            action_workers: 16,
            queue_depth: 10_000,
            event_timeout_ms: 5_000,
            fail_open: false,
        }
    }
}

/// The keys allowed at the top of a rules file. `docs/rules.schema.json` lists the same keys
/// (tests/rules_schema.rs checks it), as it does for each list below.
pub const TOP_KEYS: [&str; 4] = ["version", "engine", "programme", "scenarios"];

/// The keys allowed in `engine:`.
pub const ENGINE_KEYS: [&str; 5] = ["event_workers", "action_workers", "queue_depth", "event_timeout_ms", "fail_open"];

/// The keys allowed in a scenario.
pub const SCENARIO_KEYS: [&str; 10] = [
    "id",
    "description",
    "enabled",
    "event_types",
    "sources",
    "schedule",
    "priority",
    "exclusive_group",
    "limits",
    "children",
];

/// The keys allowed in a child (one of them).
pub const CHILD_KEYS: [&str; 2] = ["condition", "action"];

/// The keys allowed in a condition.
pub const CONDITION_KEYS: [&str; 3] = ["id", "expression", "children"];

/// The keys allowed in an action (its params are checked by its type).
pub const ACTION_KEYS: [&str; 3] = ["id", "type", "params"];

/// Upper bounds of the engine numbers, so a typo cannot ask for a billion threads.
pub const ENGINE_LIMITS: [(&str, u64); 4] =
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
    /// When it is considered; always, when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule: Option<ScheduleDef>,
    /// Scenarios are evaluated by descending priority, ties in file order.
    #[serde(skip_serializing_if = "is_zero")]
    pub priority: i64,
    /// Of the scenarios of one group that match an event, only the first acts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exclusive_group: Option<String>,
    /// Caps on what it does, all of which must hold.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub limits: Vec<Limit>,
    /// Conditions and actions under it, in file order.
    pub children: Vec<Child>,
    /// Where it starts.
    #[serde(skip)]
    pub pos: Pos,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
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
    /// Where the type is written.
    #[serde(skip)]
    pub type_pos: Pos,
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
/// (a bad expression) can point at the right line and column of the file.
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
    /// True when the scalar sits on one line.
    #[serde(skip)]
    pub single_line: bool,
    /// The scalar as written in the file, when its characters do not stand one to one in the
    /// file (escapes, quotes, blocks, folded lines).
    #[serde(skip)]
    pub raw: Option<Box<str>>,
}

impl Text {
    /// Reads a scalar node as text.
    pub fn from_node(node: &Node) -> Option<Text> {
        let (text, style) = node.scalar()?;
        Some(Text {
            value: text.to_owned(),
            pos: node.pos,
            style,
            single_line: node.pos.line == node.end.line,
            raw: node.raw().map(Into::into),
        })
    }

    /// The file position of a span of the text, and whether it is exact. When the text cannot
    /// be matched with the file, the scalar's own position is given instead.
    pub fn locate(&self, span: Span) -> (Pos, bool) {
        let target = self.value.get(..span.start as usize).map_or(0, |s| s.chars().count());
        let found = match &self.raw {
            Some(raw) => locate_in_raw(raw, self.pos, self.style, &self.value, target),
            None if self.single_line && self.style == Style::Plain => {
                let offset = u32::try_from(target).unwrap_or(u32::MAX);
                Some(Pos { line: self.pos.line, col: self.pos.col.saturating_add(offset) })
            }
            None => None,
        };
        found.map_or((self.pos, false), |pos| (pos, true))
    }
}

/// Walks a scalar as written (`raw`, starting at `start`) alongside its text, and gives the file
/// position of the text's character number `target`. Quotes, escapes (`\"`, `''`, `\x41`),
/// folded line breaks and block indentation are stepped over; `None` when the two cannot be
/// matched. A target at or past the end of the text (white space trimmed) gives the position
/// just after its last character, where an "unexpected end" belongs.
fn locate_in_raw(raw: &str, start: Pos, style: Style, value: &str, target: usize) -> Option<Pos> {
    let raw: Vec<char> = raw.chars().collect();
    let significant = value.trim_end().chars().count();
    let target = target.min(significant);
    let mut pos = start;
    let mut i = 0;
    let step = |i: &mut usize, pos: &mut Pos, n: usize| {
        for _ in 0..n {
            match raw.get(*i) {
                Some('\n') => *pos = Pos { line: pos.line.saturating_add(1), col: 1 },
                Some('\r') | None => {}
                Some(_) => pos.col = pos.col.saturating_add(1),
            }
            *i += 1;
        }
    };
    let double = style == Style::Quoted && raw.first() == Some(&'"');
    let single = style == Style::Quoted && !double;
    if style == Style::Quoted {
        step(&mut i, &mut pos, 1);
    }
    for (j, v) in value.chars().enumerate() {
        if j == target {
            return Some(pos);
        }
        loop {
            let r = *raw.get(i)?;
            let next = raw.get(i + 1).copied();
            if double && r == '\\' {
                if matches!(next, Some('\n' | '\r')) {
                    step(&mut i, &mut pos, 2); // an escaped line break stands for nothing
                    continue;
                }
                let len = match next {
                    Some('x') => 4,
                    Some('u') => 6,
                    Some('U') => 10,
                    _ => 2,
                };
                step(&mut i, &mut pos, len);
                break;
            }
            if single && r == '\'' && next == Some('\'') {
                step(&mut i, &mut pos, 2);
                break;
            }
            let trailing_space = style != Style::Block
                && matches!(r, ' ' | '\t')
                && raw[i..].iter().find(|c| !matches!(c, ' ' | '\t')).is_some_and(|c| matches!(c, '\n' | '\r'));
            if r == v && !trailing_space {
                step(&mut i, &mut pos, 1);
                break;
            }
            match r {
                // Indentation, or white space before a folded line break.
                ' ' | '\t' | '\r' => step(&mut i, &mut pos, 1),
                // A folded line break stands for a space or a line break of the text, or for nothing.
                '\n' if matches!(v, ' ' | '\n') => {
                    step(&mut i, &mut pos, 1);
                    break;
                }
                '\n' => step(&mut i, &mut pos, 1),
                _ => return None,
            }
        }
        if j + 1 == significant {
            return Some(pos);
        }
    }
    (target == 0).then_some(pos)
}

/// Reads a whole rules file from its YAML tree, recording every problem.
pub fn read(root: Option<&Node>, diags: &mut Diagnostics) -> RulesFile {
    let mut file = RulesFile::default();
    let Some(root) = root else {
        diags.error(Pos { line: 1, col: 1 }, "the rules file is empty: it needs at least `version: v1`");
        return file;
    };
    let Some(top) = Fields::new(root, "the rules file", &TOP_KEYS, diags) else {
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
    if let Some(programme) = top.get("programme").filter(|n| !n.is_null()) {
        file.programme = read_programme(programme, diags);
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
    let Some(fields) = Fields::new(node, "`engine`", &ENGINE_KEYS, diags) else {
        return engine;
    };
    for (key, limit) in ENGINE_LIMITS {
        let Some(value) = fields.get(key) else {
            continue;
        };
        let Some(n) = read_whole_number(value, key, limit, diags) else {
            continue;
        };
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
            diags.warning(
                value.pos,
                "`fail_open` is ignored: unknown conditions never pass, and a failing ledger answers 503",
            );
        }
    }
    engine
}

fn read_whole_number(node: &Node, key: &str, max: u64, diags: &mut Diagnostics) -> Option<u64> {
    let text = match node.scalar() {
        Some((t, Style::Plain)) if !node.is_null() => t,
        Some((t, Style::Quoted)) if t.trim().parse::<i64>().is_ok() => {
            diags.error(
                node.pos,
                format!("`{key}` must be a number, not a string: write `{key}: {}` without quotes", t.trim()),
            );
            return None;
        }
        _ => {
            diags.error(node.pos, format!("`{key}` must be a whole number, got {}", describe(node)));
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

/// A value as a message shows it: `` `text` `` for a plain scalar, `the string "text"` for a
/// quoted one, `nothing`, `a list` or `a mapping`.
pub fn describe(node: &Node) -> String {
    match node.scalar() {
        Some(_) if node.is_null() => "nothing".to_owned(),
        Some((text, Style::Plain)) => format!("`{text}`"),
        Some((text, _)) => format!("the string {text:?}"),
        None => node.shape().to_owned(),
    }
}

/// Reads a boolean. YAML 1.1's `yes`/`no`/`on`/`off` are accepted, as the original did, with a warning.
pub fn read_bool(node: &Node, key: &str, diags: &mut Diagnostics) -> Option<bool> {
    let text = match node.scalar() {
        Some((text, Style::Plain)) if !node.is_null() => text,
        Some((text, Style::Quoted)) if matches!(text.to_ascii_lowercase().as_str(), "true" | "false") => {
            let plain = text.to_ascii_lowercase();
            diags.error(
                node.pos,
                format!("`{key}` must be true or false, not a string: write `{key}: {plain}` without quotes"),
            );
            return None;
        }
        _ => {
            diags.error(node.pos, format!("`{key}` must be true or false, got {}", describe(node)));
            return None;
        }
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
                Some(b) => diags.warning(node.pos, format!("`{key}: {text}` is read as {b}; write `{key}: {b}`")),
                None => diags.error(node.pos, format!("`{key}` must be true or false, got `{text}`")),
            }
            legacy
        }
    }
}

/// Reads a non-empty scalar as a string (plain numbers are taken as their text, as the original
/// did). `what` names the value in messages, such as ``the `reason` of action `x` ``.
pub fn read_string(node: &Node, what: impl fmt::Display, diags: &mut Diagnostics) -> Option<String> {
    match node.scalar() {
        Some((text, _)) if !node.is_null() && !text.is_empty() => Some(text.to_owned()),
        Some(_) => {
            diags.error(node.pos, format!("{what} must not be empty"));
            None
        }
        None => {
            diags.error(node.pos, format!("{what} must be a string, not {}", node.shape()));
            None
        }
    }
}

/// Reads free text (a description, a reason): any scalar, empty allowed; absent when null.
pub fn read_text(node: &Node, what: impl fmt::Display, diags: &mut Diagnostics) -> Option<String> {
    match node.scalar() {
        Some(_) if node.is_null() => None,
        Some((text, _)) => Some(text.to_owned()),
        None => {
            diags.error(node.pos, format!("{what} must be a string, not {}", node.shape()));
            None
        }
    }
}

fn read_string_list(node: &Node, key: &str, owner: &str, diags: &mut Diagnostics) -> Vec<String> {
    if node.is_null() {
        return Vec::new();
    }
    if let Some((text, _)) = node.scalar() {
        diags.error(node.pos, format!("`{key}` of {owner} must be a list; write `{key}: [{text}]`"));
        return Vec::new();
    }
    seq_items(node, format_args!("`{key}` of {owner}"), diags)
        .iter()
        .enumerate()
        .filter_map(|(i, item)| read_string(item, format_args!("item {} of `{key}` of {owner}", i + 1), diags))
        .collect()
}

fn seq_items<'a>(node: &'a Node, what: impl fmt::Display, diags: &mut Diagnostics) -> &'a [Node] {
    match &node.kind {
        NodeKind::Seq(items) => items,
        _ if node.is_null() => &[],
        NodeKind::Map(_) => {
            diags.error(node.pos, format!("{what} must be a list, not a mapping (start each item with `- `)"));
            &[]
        }
        NodeKind::Scalar { .. } => {
            diags.error(node.pos, format!("{what} must be a list, got {}", describe(node)));
            &[]
        }
    }
}

/// The `id` of a mapping, if it has a plain one, for naming a part that has other problems.
fn peek_id(node: &Node) -> Option<&str> {
    let NodeKind::Map(entries) = &node.kind else {
        return None;
    };
    entries
        .iter()
        .find(|(k, _)| k.scalar().is_some_and(|(t, _)| t == "id"))
        .and_then(|(_, v)| v.scalar())
        .map(|(t, _)| t)
}

fn read_scenario(node: &Node, ids: &mut IdRegistry, diags: &mut Diagnostics) -> Option<Scenario> {
    let fields = Fields::new(node, "a scenario", &SCENARIO_KEYS, diags)?;
    let (id, label) = fields.id_and_label("scenario", "a scenario", ids, diags);
    let description = fields
        .get("description")
        .and_then(|n| read_text(n, format_args!("the `description` of {label}"), diags))
        .unwrap_or_default();
    let enabled = match fields.get("enabled") {
        Some(n) => read_bool(n, "enabled", diags).unwrap_or(false),
        None => {
            diags.warning(
                node.pos,
                format!("{label} has no `enabled` key, so it is disabled; write `enabled: true` or `enabled: false`"),
            );
            false
        }
    };
    let event_types = match fields.get("event_types") {
        None => {
            diags.error(node.pos, format!("{label} needs `event_types`, such as `event_types: [purchase]`"));
            Vec::new()
        }
        Some(n) => {
            let types = read_string_list(n, "event_types", &label, diags);
            // A scalar, a mapping or bad items were reported already.
            let nothing_listed = n.is_null() || matches!(&n.kind, NodeKind::Seq(items) if items.is_empty());
            if types.is_empty() && nothing_listed {
                diags.error(
                    n.pos,
                    format!("`event_types` of {label} must not be empty: list the event types it listens to"),
                );
            }
            types
        }
    };
    let sources = fields.get("sources").map(|n| read_string_list(n, "sources", &label, diags)).unwrap_or_default();
    let children = fields.get("children").map(|n| read_children(n, ids, diags)).unwrap_or_default();
    let loyalty = read_scenario_loyalty(&fields, &label, &children, diags);
    // A scenario without an id is kept (disabled) so that its children are checked too; the
    // file has an error, so it never goes live.
    let (id, enabled) = match id {
        Some(id) => (id, enabled),
        None => (String::new(), false),
    };
    Some(Scenario {
        id,
        description,
        enabled,
        event_types,
        sources,
        schedule: loyalty.schedule,
        priority: loyalty.priority,
        exclusive_group: loyalty.exclusive_group,
        limits: loyalty.limits,
        children,
        pos: node.pos,
    })
}

fn read_children(node: &Node, ids: &mut IdRegistry, diags: &mut Diagnostics) -> Vec<Child> {
    let mut children = Vec::new();
    for item in seq_items(node, "`children`", diags) {
        read_child(item, ids, diags, &mut children);
    }
    children
}

/// Reads one child into `out`. A condition too broken to keep (no id, no expression) leaves its
/// own children in `out`, so that their problems are reported in the same run.
fn read_child(node: &Node, ids: &mut IdRegistry, diags: &mut Diagnostics, out: &mut Vec<Child>) {
    if !matches!(node.kind, NodeKind::Map(_)) {
        diags.error(
            node.pos,
            format!("a child must be a mapping, got {} (write `- condition:` or `- action:`)", describe(node)),
        );
        return;
    }
    let Some(fields) = Fields::new(node, "a child", &CHILD_KEYS, diags) else {
        return;
    };
    match (fields.get("condition"), fields.get("action")) {
        (Some(c), Some(a)) => {
            let name = |n: &Node| peek_id(n).map_or_else(String::new, |id| format!(" (`{id}`)"));
            diags.error(
                node.pos,
                format!(
                    "a child has both a `condition`{} and an `action`{}; make each its own list item starting with `- `",
                    name(c),
                    name(a)
                ),
            );
            // Both are still read, so that their own problems are reported too.
            read_condition(c, ids, diags, out);
            if let Some(action) = read_action(a, ids, diags) {
                out.push(Child::Action(action));
            }
        }
        (None, None) => {
            if fields.is_empty() {
                diags.error(node.pos, "a child needs a `condition` or an `action`");
            } // else the unknown key was reported already
        }
        (Some(c), None) => read_condition(c, ids, diags, out),
        (None, Some(a)) => {
            if let Some(action) = read_action(a, ids, diags) {
                out.push(Child::Action(action));
            }
        }
    }
}

fn read_condition(node: &Node, ids: &mut IdRegistry, diags: &mut Diagnostics, out: &mut Vec<Child>) {
    let Some(fields) = Fields::new(node, "a condition", &CONDITION_KEYS, diags) else {
        return;
    };
    let (id, label) = fields.id_and_label("condition", "a condition", ids, diags);
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
    match (id, expression) {
        (Some(id), Some(expression)) => {
            out.push(Child::Condition(Condition { id, expression, children, pos: node.pos }))
        }
        _ => out.extend(children),
    }
}

fn read_action(node: &Node, ids: &mut IdRegistry, diags: &mut Diagnostics) -> Option<ActionDef> {
    let fields = Fields::new(node, "an action", &ACTION_KEYS, diags)?;
    let (id, label) = fields.id_and_label("action", "an action", ids, diags);
    let action_type = match fields.get("type") {
        Some(n) => read_string(n, format_args!("the `type` of {label}"), diags),
        None => {
            diags.error(node.pos, format!("{label} needs a `type`, such as `type: reward_points`"));
            None
        }
    };
    let type_pos = fields.get("type").map_or(node.pos, |n| n.pos);
    let params_node = fields.get("params").filter(|n| !n.is_null()).cloned();
    let params = params_node.as_ref().map_or(serde_json::Value::Null, Node::to_json);
    Some(ActionDef { id: id?, action_type: action_type?, type_pos, params, params_node, pos: node.pos })
}

/// The keys of a mapping, checked against the keys allowed there.
pub struct Fields<'a> {
    pos: Pos,
    entries: Vec<(&'a str, Pos, &'a Node)>,
}

impl<'a> Fields<'a> {
    /// Reads a mapping; reports duplicate and unknown keys (with the nearest known key as a hint).
    /// `None` when the node is not a mapping at all.
    pub fn new(node: &'a Node, what: &str, known: &[&str], diags: &mut Diagnostics) -> Option<Fields<'a>> {
        let NodeKind::Map(entries) = &node.kind else {
            diags.error(node.pos, format!("{what} must be a mapping, got {}", describe(node)));
            return None;
        };
        // Mappings of a rules file are small: a scan beats hashing; large ones (always an
        // error somewhere) get a map so hostile input stays linear.
        let mut seen: Option<FxHashMap<&str, Pos>> = (entries.len() > 32).then(FxHashMap::default);
        let mut kept = Vec::new();
        for (i, (key_node, value)) in entries.iter().enumerate() {
            let Some((key, _)) = key_node.scalar() else {
                diags.error(key_node.pos, format!("keys of {what} must be plain names"));
                continue;
            };
            let first = match &mut seen {
                Some(seen) => match seen.entry(key) {
                    std::collections::hash_map::Entry::Occupied(e) => Some(*e.get()),
                    std::collections::hash_map::Entry::Vacant(e) => {
                        e.insert(key_node.pos);
                        None
                    }
                },
                None => {
                    entries[..i].iter().find(|(k, _)| k.scalar().is_some_and(|(t, _)| t == key)).map(|(k, _)| k.pos)
                }
            };
            if let Some(first) = first {
                diags.error(
                    key_node.pos,
                    format!("duplicate key `{key}` in {what} (first at line {}); keep only one", first.line),
                );
                continue;
            }
            if known.contains(&key) {
                kept.push((key, key_node.pos, value));
            } else {
                diags.error(key_node.pos, format!("unknown key `{key}` in {what}{}", suggestion(key, known)));
            }
        }
        Some(Fields { pos: node.pos, entries: kept })
    }

    /// The value of a known key.
    pub fn get(&self, key: &str) -> Option<&'a Node> {
        self.entries.iter().find(|(k, _, _)| *k == key).map(|(_, _, v)| *v)
    }

    /// Where a known key is written (the key itself, not its value).
    pub fn key_pos(&self, key: &str) -> Option<Pos> {
        self.entries.iter().find(|(k, _, _)| *k == key).map(|(_, pos, _)| *pos)
    }

    /// True when no known key was given.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Iterates over the known keys given, in file order.
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, &'a Node)> + '_ {
        self.entries.iter().map(|(k, _, v)| (*k, *v))
    }

    /// A part's required `id`, claimed in the file-wide registry, and the label that names the
    /// part in messages: ``scenario `x` ``, or `the scenario at line N` without an id.
    /// `a_kind` is `kind` with its article (`an action`).
    fn id_and_label(
        &self,
        kind: &'static str,
        a_kind: &str,
        ids: &mut IdRegistry,
        diags: &mut Diagnostics,
    ) -> (Option<String>, String) {
        let id = self.required_string("id", a_kind, diags);
        if let Some(id) = &id {
            ids.claim(id, kind, self.get("id").map_or(self.pos, |n| n.pos), diags);
        }
        let label = id
            .as_deref()
            .map_or_else(|| format!("the {kind} at line {}", self.pos.line), |id| format!("{kind} `{id}`"));
        (id, label)
    }

    /// A required string such as an `id`; `owner` is ``a scenario`` or ``action `x` ``.
    fn required_string(&self, key: &str, owner: &str, diags: &mut Diagnostics) -> Option<String> {
        match self.get(key) {
            Some(n) => read_string(n, format_args!("the `{key}` of {owner}"), diags),
            None => {
                diags.error(self.pos, format!("{owner} needs an `{key}`"));
                None
            }
        }
    }
}

pub use crate::suggest::suggestion;

/// Ids are unique across scenarios, conditions and actions.
#[derive(Default)]
struct IdRegistry {
    seen: FxHashMap<String, (&'static str, Pos)>,
}

impl IdRegistry {
    fn claim(&mut self, id: &str, kind: &'static str, pos: Pos, diags: &mut Diagnostics) {
        if let Some((first_kind, first)) = self.seen.get(id) {
            diags.error(
                pos,
                format!(
                    "duplicate id `{id}`: the {first_kind} at line {} already has it (ids must be unique across scenarios, conditions and actions)",
                    first.line
                ),
            );
        } else {
            self.seen.insert(id.to_owned(), (kind, pos));
        }
    }
}
