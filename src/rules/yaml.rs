//! A YAML tree that remembers where every node stands in the file.
//!
//! serde stops at the first problem of a document; a rules file must report every problem at once,
//! each with its line and column. So the file is read into this small tree (built from
//! `saphyr-parser` events) and the schema is checked by hand in [`super::schema`].
//! Duplicate mapping keys are kept here so that the schema can report them.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, Span};

/// A position in a file: line and column, both counted from 1 (columns in characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Pos {
    /// Line, from 1.
    pub line: u32,
    /// Column in characters, from 1.
    pub col: u32,
}

impl Pos {
    fn from_marker(marker: &saphyr_parser::Marker) -> Self {
        Pos { line: saturating_u32(marker.line()), col: saturating_u32(marker.col() + 1) }
    }
}

fn saturating_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// How a scalar was written, which decides how its text maps back to file columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// Unquoted.
    Plain,
    /// In `'...'` or `"..."`.
    Quoted,
    /// A `|` or `>` block.
    Block,
}

/// One node of the tree.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Where the node starts.
    pub pos: Pos,
    /// Where the node ends (exclusive).
    pub end: Pos,
    /// What the node holds.
    pub kind: NodeKind,
}

/// The three shapes of YAML data.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeKind {
    /// A scalar with its text exactly as the YAML parser unescaped it.
    Scalar {
        /// The text.
        text: String,
        /// How it was written.
        style: Style,
        /// The scalar as written in the file, from its first character (an opening quote, or the
        /// first character of a block's content) onwards, when its characters do not stand one
        /// to one in the file (quoted, block and multi-line scalars); `None` for a plain scalar
        /// on one line. Lets a problem inside the text be pointed at in the file.
        raw: Option<Box<str>>,
    },
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in file order, duplicates kept.
    Map(Vec<(Node, Node)>),
}

/// A YAML syntax error, with its position.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct SyntaxError {
    /// Where the parser stopped.
    pub pos: Pos,
    /// What it found wrong.
    pub message: String,
}

/// Nodes that aliases may add to a rules file in all: far more than a real file repeats, far fewer
/// than an alias bomb expands to (nine nested aliases of ten make a billion nodes).
pub const MAX_ALIASED_NODES: usize = 100_000;

impl Node {
    /// How many nodes this one holds, itself included, counted up to `limit` (then `limit`).
    fn count_up_to(&self, limit: usize) -> usize {
        let mut count = 1;
        let add = |node: &Node, count: &mut usize| {
            if *count < limit {
                *count += node.count_up_to(limit - *count);
            }
        };
        match &self.kind {
            NodeKind::Scalar { .. } => {}
            NodeKind::Seq(items) => items.iter().for_each(|item| add(item, &mut count)),
            NodeKind::Map(entries) => entries.iter().for_each(|(key, value)| {
                add(key, &mut count);
                add(value, &mut count);
            }),
        }
        count.min(limit)
    }

    /// The scalar text, if this is a scalar.
    pub fn scalar(&self) -> Option<(&str, Style)> {
        match &self.kind {
            NodeKind::Scalar { text, style, .. } => Some((text, *style)),
            _ => None,
        }
    }

    /// The scalar as written in the file, when it differs from its text (see [`NodeKind::Scalar`]).
    pub fn raw(&self) -> Option<&str> {
        match &self.kind {
            NodeKind::Scalar { raw, .. } => raw.as_deref(),
            _ => None,
        }
    }

    /// True for an empty value, `~` or `null` written plain.
    pub fn is_null(&self) -> bool {
        matches!(self.scalar(), Some(("" | "~" | "null" | "Null" | "NULL", Style::Plain)))
    }

    /// A word for the node's shape, for messages.
    pub fn shape(&self) -> &'static str {
        match &self.kind {
            NodeKind::Scalar { .. } if self.is_null() => "nothing",
            NodeKind::Scalar { .. } => "a scalar",
            NodeKind::Seq(_) => "a list",
            NodeKind::Map(_) => "a mapping",
        }
    }

    /// The value as JSON, the way YAML 1.2's core schema reads plain scalars.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value;
        match &self.kind {
            NodeKind::Scalar { text, style, .. } => match style {
                Style::Plain => plain_scalar_to_json(text),
                _ => Value::String(text.clone()),
            },
            NodeKind::Seq(items) => Value::Array(items.iter().map(Node::to_json).collect()),
            NodeKind::Map(entries) => Value::Object(
                entries
                    .iter()
                    .map(|(k, v)| {
                        let key = k.scalar().map_or_else(|| k.shape().to_owned(), |(t, _)| t.to_owned());
                        (key, v.to_json())
                    })
                    .collect(),
            ),
        }
    }
}

fn plain_scalar_to_json(text: &str) -> serde_json::Value {
    use serde_json::Value;
    match text {
        "" | "~" | "null" | "Null" | "NULL" => Value::Null,
        "true" | "True" | "TRUE" => Value::Bool(true),
        "false" | "False" | "FALSE" => Value::Bool(false),
        _ => {
            if let Ok(i) = text.parse::<i64>() {
                Value::from(i)
            } else if let Some(f) = parse_yaml_float(text) {
                serde_json::Number::from_f64(f).map_or_else(|| Value::String(text.to_owned()), Value::Number)
            } else {
                Value::String(text.to_owned())
            }
        }
    }
}

/// A plain scalar read as a YAML 1.2 float (`1.5`, `-2e3`, `.5`); infinities and NaN are not numbers here.
pub fn parse_yaml_float(text: &str) -> Option<f64> {
    let looks_numeric = text.bytes().all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'+' | b'e' | b'E'))
        && text.bytes().any(|b| b.is_ascii_digit());
    if !looks_numeric {
        return None;
    }
    text.parse::<f64>().ok().filter(|f| f.is_finite())
}

/// The characters that may follow `\` in a double-quoted YAML scalar (YAML 1.2, 5.7), line
/// breaks aside.
const YAML_ESCAPES: &str = "0abt\tnvfre \"/\\N_LPxuU";

/// Reads one YAML document into a [`Node`] tree. An empty file gives `None`.
pub fn parse(source: &str) -> Result<Option<Node>, SyntaxError> {
    let mut builder = TreeBuilder::new(source);
    for item in Parser::new_from_str(source) {
        let (event, span) = match item {
            Ok(ok) => ok,
            Err(e) => {
                let (pos, escape) = builder.place(e.info(), e.marker());
                let message = format!("{}{}", e.info(), builder.hint(e.info(), pos, escape));
                return Err(SyntaxError { pos, message });
            }
        };
        builder.push(event, span)?;
    }
    Ok(builder.root)
}

/// A collection being read. Its children wait on the builder's shared scratch stacks from index
/// `first` on, and move into a vector of exactly their number when it ends: one allocation per
/// collection instead of a vector regrown as it fills (most of the tree-building time before).
enum Open {
    Seq { start: Span, anchor: usize, first: usize },
    Map { start: Span, anchor: usize, first: usize, key: Option<Node> },
}

struct TreeBuilder<'s> {
    source: &'s str,
    /// A character index of `source` and its byte offset, so that the parser's character
    /// markers are turned into byte offsets without rescanning the file for each scalar.
    cursor: (usize, usize),
    stack: Vec<Open>,
    items: Vec<Node>,
    entries: Vec<(Node, Node)>,
    /// Each anchored node, with how many nodes an alias to it adds.
    anchors: HashMap<usize, (Node, usize)>,
    /// Nodes added by aliases so far (bounded by [`MAX_ALIASED_NODES`]).
    aliased: usize,
    root: Option<Node>,
    documents: usize,
}

impl<'s> TreeBuilder<'s> {
    fn new(source: &'s str) -> Self {
        TreeBuilder {
            source,
            cursor: (0, 0),
            stack: Vec::new(),
            items: Vec::new(),
            entries: Vec::new(),
            anchors: HashMap::new(),
            aliased: 0,
            root: None,
            documents: 0,
        }
    }

    /// The source from a character index on (markers only move forward, so the cursor does too).
    fn rest_from(&mut self, char_index: usize) -> &'s str {
        if char_index < self.cursor.0 {
            self.cursor = (0, 0);
        }
        let (mut chars, mut bytes) = self.cursor;
        let mut iter = self.source.get(bytes..).unwrap_or("").chars();
        while chars < char_index {
            let Some(c) = iter.next() else { break };
            chars += 1;
            bytes += c.len_utf8();
        }
        self.cursor = (chars, bytes);
        self.source.get(bytes..).unwrap_or("")
    }

    /// The scalar as written, when its characters do not stand one to one in the file.
    fn raw_scalar(&mut self, span: &Span, style: Style) -> Option<Box<str>> {
        if style == Style::Plain && span.start.line() == span.end.line() {
            return None;
        }
        let len = span.end.index().saturating_sub(span.start.index());
        let rest = self.rest_from(span.start.index());
        let end = rest.char_indices().nth(len).map_or(rest.len(), |(i, _)| i);
        rest.get(..end).map(Into::into)
    }

    /// Where a syntax error is, where the parser stops elsewhere: at the tab it complains about
    /// (it stops just after a run of tabs, or at the start of the plain scalar before a line
    /// indented with one), or at the backslash of an unknown escape in a double-quoted scalar
    /// (it stops at the opening quote), with the character after that backslash.
    fn place(&mut self, info: &str, marker: &saphyr_parser::Marker) -> (Pos, Option<char>) {
        let at = Pos::from_marker(marker);
        if info.contains("tab") {
            let before = marker.col();
            let line: Vec<char> = self.rest_from(marker.index().saturating_sub(before)).chars().take(before).collect();
            let run = line.iter().rev().take_while(|c| **c == '\t').count();
            if run > 0 {
                return (Pos { col: at.col.saturating_sub(saturating_u32(run)), ..at }, None);
            }
            // The first tab after the marker, on its line or at the start of a line below it.
            let (mut pos, mut on_marker_line) = (at, true);
            for c in self.rest_from(marker.index()).chars() {
                match c {
                    '\t' => return (pos, None),
                    '\n' => {
                        pos = Pos { line: pos.line.saturating_add(1), col: 1 };
                        on_marker_line = false;
                    }
                    ' ' | '\r' => pos.col = pos.col.saturating_add(1),
                    _ if on_marker_line => pos.col = pos.col.saturating_add(1),
                    _ => break,
                }
            }
        } else if info.contains("unknown escape") {
            let mut chars = self.rest_from(marker.index()).chars();
            if chars.next() == Some('"') {
                let mut pos = Pos { col: at.col.saturating_add(1), ..at };
                let next_line = |pos: Pos| Pos { line: pos.line.saturating_add(1), col: 1 };
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\n' => pos = next_line(pos),
                        '\\' => match chars.next() {
                            Some('\n') => pos = next_line(pos),
                            Some(e) if YAML_ESCAPES.contains(e) => pos.col = pos.col.saturating_add(2),
                            other => return (pos, other),
                        },
                        _ => pos.col = pos.col.saturating_add(1),
                    }
                }
            }
        }
        (at, None)
    }

    /// Advice added to a YAML syntax error: the usual causes of the parser's terse messages, and
    /// a `[` or `{` left open on an earlier line (the parser stops far from it). `escape` is the
    /// character after the backslash of an unknown escape.
    fn hint(&mut self, info: &str, at: Pos, escape: Option<char>) -> String {
        let mut hint = String::new();
        if info.contains("tab") {
            hint.push_str(" (indent with spaces, not tabs)");
        } else if info.contains("unknown escape") {
            let (written, doubled) = match escape {
                Some(c) => (format!("`\\{c}` is not one"), format!("`\\\\{c}`")),
                None => ("this is not one".to_owned(), "`\\\\`".to_owned()),
            };
            hint.push_str(&format!(
                " (in a double-quoted YAML string `\\` starts an escape, and {written}: write {doubled}, or wrap \
                 the value in single quotes instead, with double quotes around the strings inside it)"
            ));
        } else if info.contains("quoted scalar") {
            hint.push_str(" (is a closing quote missing?)");
        } else if info.contains("mapping values are not allowed") {
            hint.push_str(" (check this line's indentation; quote a value that contains `: `)");
        } else if info.contains("did not find expected '-'") || info.contains("did not find expected key") {
            hint.push_str(" (check this line's indentation against the lines above)");
        }
        let starts: Vec<Span> = self
            .stack
            .iter()
            .rev()
            .map(|open| match open {
                Open::Seq { start, .. } | Open::Map { start, .. } => *start,
            })
            .collect();
        for start in starts {
            let opener = self.rest_from(start.start.index()).chars().next();
            if let Some(c @ ('[' | '{')) = opener {
                let pos = Pos::from_marker(&start.start);
                if pos.line < at.line {
                    hint.push_str(&format!(" (the `{c}` at line {}, column {} is not closed)", pos.line, pos.col));
                }
                break;
            }
        }
        hint
    }

    fn push(&mut self, event: Event<'_>, span: Span) -> Result<(), SyntaxError> {
        match event {
            Event::DocumentStart(_) => {
                self.documents += 1;
                if self.documents > 1 {
                    return Err(SyntaxError {
                        pos: Pos::from_marker(&span.start),
                        message: "a rules file holds one YAML document; found a second one".into(),
                    });
                }
            }
            Event::Scalar(text, style, anchor, _tag) => {
                let style = match style {
                    ScalarStyle::Plain => Style::Plain,
                    ScalarStyle::SingleQuoted | ScalarStyle::DoubleQuoted => Style::Quoted,
                    _ => Style::Block,
                };
                let raw = self.raw_scalar(&span, style);
                let node = Node {
                    pos: Pos::from_marker(&span.start),
                    end: Pos::from_marker(&span.end),
                    kind: NodeKind::Scalar { text: text.into_owned(), style, raw },
                };
                self.complete(node, anchor);
            }
            Event::Alias(id) => {
                let pos = Pos::from_marker(&span.start);
                let (node, weight) = self
                    .anchors
                    .get(&id)
                    .ok_or_else(|| SyntaxError { pos, message: "alias to an unknown anchor".into() })?;
                // Counted before the copy: a bomb is refused before it takes the memory.
                self.aliased += weight;
                if self.aliased > MAX_ALIASED_NODES {
                    let message = format!("aliases repeat more than {MAX_ALIASED_NODES} nodes in all; write them out");
                    return Err(SyntaxError { pos, message });
                }
                let node = node.clone();
                self.complete(node, 0);
            }
            Event::SequenceStart(anchor, _) => {
                self.stack.push(Open::Seq { start: span, anchor, first: self.items.len() });
            }
            Event::MappingStart(anchor, _) => {
                self.stack.push(Open::Map { start: span, anchor, first: self.entries.len(), key: None });
            }
            Event::SequenceEnd | Event::MappingEnd => {
                if let Some(open) = self.stack.pop() {
                    let (start, anchor, kind) = match open {
                        Open::Seq { start, anchor, first } => {
                            (start, anchor, NodeKind::Seq(self.items.drain(first..).collect()))
                        }
                        Open::Map { start, anchor, first, .. } => {
                            (start, anchor, NodeKind::Map(self.entries.drain(first..).collect()))
                        }
                    };
                    let node = Node { pos: Pos::from_marker(&start.start), end: Pos::from_marker(&span.end), kind };
                    self.complete(node, anchor);
                }
            }
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentEnd => {}
        }
        Ok(())
    }

    fn complete(&mut self, node: Node, anchor: usize) {
        if anchor != 0 {
            let weight = node.count_up_to(MAX_ALIASED_NODES + 1);
            self.anchors.insert(anchor, (node.clone(), weight));
        }
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Open::Seq { .. }) => self.items.push(node),
            Some(Open::Map { key, .. }) => match key.take() {
                None => *key = Some(node),
                Some(k) => {
                    let mut node = node;
                    // A key with nothing after it: point at the key, not at the space after it.
                    if node.is_null() && node.pos == node.end {
                        node.pos = k.pos;
                    }
                    self.entries.push((k, node));
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_positions_and_duplicate_keys() {
        let root = parse("a: 1\nb:\n  - x\n  - 'y'\na: 2\n").unwrap().unwrap();
        let NodeKind::Map(entries) = &root.kind else { panic!("not a map") };
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[2].0.pos, Pos { line: 5, col: 1 });
        let NodeKind::Seq(items) = &entries[1].1.kind else { panic!("not a seq") };
        assert_eq!(items[1].scalar(), Some(("y", Style::Quoted)));
        assert_eq!(items[1].pos, Pos { line: 4, col: 5 });
    }

    #[test]
    fn syntax_errors_carry_a_position() {
        let err = parse("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(err.pos.line >= 1, "{err:?}");
    }

    #[test]
    fn a_tab_is_reported_at_its_own_line_and_column() {
        for (source, line, col) in [
            ("a:\n  - x\n\t- y\n", 3, 1),
            ("a:\n\tb: 1\n", 2, 1),
            ("a:\n\t\tb: 1\n", 2, 1),
            ("a:\n  b: 1\n\n  \tc: 2\n", 4, 3),
        ] {
            let err = parse(source).unwrap_err();
            assert_eq!((err.pos.line, err.pos.col), (line, col), "{source:?}: {err:?}");
            assert!(err.message.ends_with("(indent with spaces, not tabs)"), "{err:?}");
        }
    }

    #[test]
    fn an_unknown_escape_in_double_quotes_is_pointed_at_and_explained() {
        let err = parse("a: \"x \\n \\d+\"\n").unwrap_err();
        assert_eq!((err.pos.line, err.pos.col), (1, 10), "{err:?}");
        assert!(err.message.contains("`\\d` is not one: write `\\\\d`, or wrap the value in single quotes"), "{err:?}");
        assert!(!err.message.contains("closing quote"), "{err:?}");
        let err = parse("a: \"one\n  two \\q\"\n").unwrap_err();
        assert_eq!((err.pos.line, err.pos.col), (2, 7), "{err:?}");
    }

    #[test]
    fn empty_file_has_no_root() {
        assert_eq!(parse("").unwrap(), None);
        assert_eq!(parse("# only a comment\n").unwrap(), None);
    }

    #[test]
    fn aliases_are_resolved() {
        let root = parse("a: &x [1]\nb: *x\n").unwrap().unwrap();
        assert_eq!(root.to_json(), serde_json::json!({"a": [1], "b": [1]}));
    }
}
