//! Reading Markdown docs for the doc tests (`tests/docs.rs`, `tests/docs_rules.rs`): fenced
//! blocks and their info strings, tables, links, and comparing a sample with real output.

use std::path::Path;
use std::sync::LazyLock;

use regex::Regex;
use serde_json::Value;

/// A fenced code block.
pub struct Block {
    /// The language: the info string's first word (what GitHub highlights by).
    pub lang: String,
    /// The info string's other words: `output`, `abridged`, `log`, `file=NAME`.
    pub words: Vec<String>,
    /// Line of the opening fence, from 1.
    pub line: usize,
    pub text: String,
}

/// What a sample block shows of the command before it (or of the service's log).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Sample {
    /// Its whole output.
    Output,
    /// Part of its output.
    Abridged,
    /// Lines of the running service's log.
    Log,
}

impl Block {
    pub fn has(&self, word: &str) -> bool {
        self.words.iter().any(|w| w == word)
    }

    /// The `file=NAME` word: the block is a file, saved under that name for the commands after it.
    pub fn file(&self) -> Option<&str> {
        self.words.iter().find_map(|w| w.strip_prefix("file="))
    }

    pub fn is_shell(&self) -> bool {
        matches!(self.lang.as_str(), "bash" | "sh" | "shell")
    }

    pub fn sample(&self) -> Option<Sample> {
        if self.has("output") {
            Some(Sample::Output)
        } else if self.has("abridged") {
            Some(Sample::Abridged)
        } else if self.has("log") {
            Some(Sample::Log)
        } else {
            None
        }
    }
}

/// A table row: its line and its cells, unescaped, code spans unwrapped.
pub struct Row {
    pub line: usize,
    pub cells: Vec<String>,
}

/// A table: its header cells (lower case) and rows.
pub struct Table {
    pub header: Vec<String>,
    pub rows: Vec<Row>,
}

/// The info string of a fence line (empty for a closing fence). As in CommonMark, an info string
/// has no backquote, so a line that starts with an inline code span is no fence.
fn fence(line: &str) -> Option<&str> {
    let info = line.trim().strip_prefix("```")?.trim_start_matches('`');
    (!info.contains('`')).then_some(info)
}

/// For each line of a Markdown text, whether it belongs to a fenced code block (fences included).
fn in_code(doc: &str) -> Vec<bool> {
    let mut open = false;
    doc.lines()
        .map(|line| match fence(line) {
            Some(info) if !open || info.is_empty() => {
                open = !open;
                true
            }
            _ => open,
        })
        .collect()
}

/// The fenced blocks of a Markdown text (fences may be indented, as in lists).
pub fn blocks(name: &str, doc: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut open: Option<Block> = None;
    for (index, line) in doc.lines().enumerate() {
        match (&mut open, fence(line)) {
            (None, Some(info)) => {
                let mut words = info.split_whitespace().map(str::to_owned);
                let lang = words.next().unwrap_or_default();
                open = Some(Block { lang, words: words.collect(), line: index + 1, text: String::new() });
            }
            (None, None) => {}
            (Some(_), Some("")) => out.extend(open.take()),
            (Some(block), _) => {
                block.text.push_str(line);
                block.text.push('\n');
            }
        }
    }
    assert!(open.is_none(), "{name} ends inside a code block");
    out
}

/// Splits a table line on `|`s that are not escaped; unwraps code spans.
fn cells(line: &str) -> Vec<String> {
    let inner = line.trim().trim_start_matches('|').trim_end_matches('|');
    let mut cells = Vec::new();
    let mut current = String::new();
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'|') => {
                current.push('|');
                chars.next();
            }
            '|' => cells.push(std::mem::take(&mut current)),
            _ => current.push(c),
        }
    }
    cells.push(current);
    cells.into_iter().map(|c| unwrap_code(c.trim()).to_owned()).collect()
}

fn unwrap_code(cell: &str) -> &str {
    cell.strip_prefix('`').and_then(|c| c.strip_suffix('`')).unwrap_or(cell)
}

/// Tables outside code blocks.
pub fn tables(doc: &str) -> Vec<Table> {
    let mut out = Vec::new();
    let code = in_code(doc);
    let lines: Vec<&str> = doc.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i].trim();
        let is_table = !code[i]
            && line.starts_with('|')
            && lines.get(i + 1).is_some_and(|next| next.trim().starts_with("|-") || next.trim().starts_with("|:"));
        if !is_table {
            i += 1;
            continue;
        }
        let header = cells(line).into_iter().map(|c| c.to_lowercase()).collect();
        let mut rows = Vec::new();
        i += 2;
        while i < lines.len() && lines[i].trim().starts_with('|') {
            rows.push(Row { line: i + 1, cells: cells(lines[i]) });
            i += 1;
        }
        out.push(Table { header, rows });
    }
    out
}

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces to dashes.
pub fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// Links of a doc (`name`, a path relative to `root`): a `#anchor` names a heading of the doc,
/// and a relative link names a file of the repository.
pub fn check_links(root: &Path, name: &str, doc: &str) -> Vec<String> {
    let code = in_code(doc);
    let anchors: Vec<String> = doc
        .lines()
        .zip(&code)
        .filter(|(line, code)| !**code && line.starts_with('#'))
        .map(|(line, _)| anchor(line.trim_start_matches('#')))
        .collect();
    let dir = Path::new(name).parent().unwrap_or(Path::new(""));
    let mut problems = Vec::new();
    for (index, line) in doc.lines().enumerate() {
        for (at, _) in line.match_indices("](") {
            let target = line[at + 2..].split(')').next().unwrap_or_default();
            if let Some(fragment) = target.strip_prefix('#') {
                if !anchors.iter().any(|a| a == fragment) {
                    problems.push(format!("{name}:{}: link to #{fragment}, which is no heading", index + 1));
                }
            } else if !target.contains("://") {
                let path = target.split('#').next().unwrap_or_default();
                let inside = dir.join(path).components().try_fold(0i32, |depth, part| match part {
                    std::path::Component::ParentDir if depth == 0 => None,
                    std::path::Component::ParentDir => Some(depth - 1),
                    _ => Some(depth + 1),
                });
                if inside.is_none() || !root.join(dir).join(path).exists() {
                    problems
                        .push(format!("{name}:{}: link to {target}, which is no file of the repository", index + 1));
                }
            }
        }
    }
    problems
}

static MASKS: LazyLock<Vec<(Regex, &'static str)>> = LazyLock::new(|| {
    [
        (r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)", "<time>"),
        (r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "<uuid>"),
        (r"\b[0-9a-f]{64}\b", "<hash>"),
        (r#"("duration_(?:ms|us)":\s*)\d+"#, "${1}0"),
        (r"\bduration_us=\d+", "duration_us=0"),
    ]
    .into_iter()
    .map(|(pattern, with)| (Regex::new(pattern).unwrap(), with))
    .collect()
});

/// Masks what changes from run to run: times (RFC 3339), UUIDs, SHA-256 hashes, durations.
/// JSON stays JSON.
pub fn mask(text: &str) -> String {
    MASKS.iter().fold(text.to_owned(), |text, (pattern, with)| pattern.replace_all(&text, *with).into_owned())
}

/// JSON text without the white space outside strings.
pub fn compact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in text.chars() {
        if in_string {
            out.push(c);
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_string = false,
                _ => {}
            }
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if !c.is_whitespace() {
            out.push(c);
        }
    }
    out
}

/// A sample of a command's whole output: equal byte for byte once both are masked (a final
/// newline aside). When the output is one line of JSON, the sample may spread it over several
/// lines: white space outside strings is then ignored, key order still counts.
pub fn check_output(sample: &str, json: bool, output: &str) -> Result<(), String> {
    let want = mask(sample.trim_end_matches('\n'));
    let got = mask(output.trim_end_matches('\n'));
    if want == got || (json && !got.contains('\n') && compact(&want) == compact(&got)) {
        return Ok(());
    }
    let first_difference = want.lines().zip(got.lines()).position(|(w, g)| w != g).map_or_else(
        || format!("the sample has {} line(s), the output {}", want.lines().count(), got.lines().count()),
        |i| format!("line {} differs", i + 1),
    );
    Err(format!("the sample is not what the command printed ({first_difference}); it printed:\n{}", indent(output)))
}

/// A sample of part of a command's output. JSON: every key and value shown is in the output, in
/// the same order (array elements and object keys may be left out, not reordered). Text: every
/// line shown is a line of the output, in order. Both masked.
pub fn check_abridged(sample: &str, json: bool, output: &str) -> Result<(), String> {
    let (want, got) = (mask(sample), mask(output));
    let found = if json {
        let want: Ordered = serde_json::from_str(&want).map_err(|e| format!("the sample is not JSON: {e}"))?;
        let got: Ordered =
            serde_json::from_str(&got).map_err(|e| format!("the command printed something that is not JSON: {e}"))?;
        got.contains_in_order(&want)
    } else {
        let mut lines = got.lines();
        want.lines().all(|w| lines.any(|g| g == w))
    };
    if found {
        Ok(())
    } else {
        Err(format!(
            "the abridged sample shows what the command did not print, or not in that order; it printed:\n{}",
            indent(output)
        ))
    }
}

/// A JSON value whose objects keep their keys in order (`serde_json::Value` sorts them here).
#[derive(Debug, PartialEq)]
pub enum Ordered {
    Object(Vec<(String, Ordered)>),
    Array(Vec<Ordered>),
    Scalar(Value),
}

impl Ordered {
    /// `part` is `self` with some object keys and array elements left out, order kept.
    pub fn contains_in_order(&self, part: &Ordered) -> bool {
        match (self, part) {
            (Ordered::Object(whole), Ordered::Object(part)) => {
                let mut keys = whole.iter();
                part.iter().all(|(key, value)| keys.any(|(k, v)| k == key && v.contains_in_order(value)))
            }
            (Ordered::Array(whole), Ordered::Array(part)) => {
                let mut items = whole.iter();
                part.iter().all(|value| items.any(|v| v.contains_in_order(value)))
            }
            (whole, part) => whole == part,
        }
    }
}

impl<'de> serde::Deserialize<'de> for Ordered {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(OrderedVisitor)
    }
}

struct OrderedVisitor;

impl<'de> serde::de::Visitor<'de> for OrderedVisitor {
    type Value = Ordered;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("JSON")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Ordered, E> {
        Ok(Ordered::Scalar(Value::from(v)))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Ordered, E> {
        Ok(Ordered::Scalar(Value::from(v)))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Ordered, E> {
        Ok(Ordered::Scalar(Value::from(v)))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Ordered, E> {
        Ok(Ordered::Scalar(Value::from(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Ordered, E> {
        Ok(Ordered::Scalar(Value::from(v)))
    }

    fn visit_unit<E>(self) -> Result<Ordered, E> {
        Ok(Ordered::Scalar(Value::Null))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Ordered, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Ordered::Array(items))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Ordered, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = map.next_entry()? {
            entries.push(entry);
        }
        Ok(Ordered::Object(entries))
    }
}

/// Indents a command's output under a failure line.
pub fn indent(s: &str) -> String {
    s.lines().map(|l| format!("    {l}\n")).collect()
}
