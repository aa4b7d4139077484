//! Problems found in a rules file, each with its position.

use std::fmt;

use super::yaml::Pos;

/// How bad a problem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// The file cannot go live.
    Error,
    /// The file can go live, but probably does not say what its author meant.
    Warning,
}

/// One problem at one place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// Where in the file.
    pub pos: Pos,
    /// What is wrong, naming the key or value.
    pub message: String,
}

impl Diagnostic {
    /// The `FILE:LINE:COL: error: message` form that `fluxflow validate` prints.
    pub fn render(&self, file: &str) -> String {
        format!("{file}:{self}")
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let severity = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{}:{}: {severity}: {}", self.pos.line, self.pos.col, self.message)
    }
}

/// The problems of one file, collected as the checks run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diagnostics {
    items: Vec<Diagnostic>,
}

impl Diagnostics {
    /// Records an error.
    pub fn error(&mut self, pos: Pos, message: impl Into<String>) {
        self.items.push(Diagnostic { severity: Severity::Error, pos, message: message.into() });
    }

    /// Records a warning.
    pub fn warning(&mut self, pos: Pos, message: impl Into<String>) {
        self.items.push(Diagnostic { severity: Severity::Warning, pos, message: message.into() });
    }

    /// True when any error was recorded.
    pub fn has_errors(&self) -> bool {
        self.items.iter().any(|d| d.severity == Severity::Error)
    }

    /// The problems in file order.
    pub fn into_sorted(mut self) -> Vec<Diagnostic> {
        self.items.sort_by_key(|d| d.pos);
        self.items
    }
}
