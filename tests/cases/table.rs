//! The expression case table's row type, shared by `tests/expressions.rs` and
//! `benches/expressions.rs` (both include this file) so the two read the table the same way.

use serde::Deserialize;
use serde_json::Value;

/// The table, as JSON text.
pub const TABLE: &str = include_str!("expressions.json");

/// One row of the table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// What the case shows.
    pub name: String,
    /// The expression.
    pub expr: String,
    /// `condition` or `formula`.
    pub purpose: String,
    /// The event it is evaluated against.
    pub event: Value,
    /// `true`, `false`, `"unknown"`, a number, or `{"error": "..."}`.
    pub expect: Value,
    /// Part of the explanation of an unknown.
    #[serde(default)]
    pub reason: Option<String>,
    /// The 1-based column of a load error, or of the warning.
    #[serde(default)]
    pub column: Option<usize>,
    /// A condition that loads with a warning (part of its text): a part its types make always
    /// unknown.
    #[serde(default)]
    pub warning: Option<String>,
    /// Also measured by the benches.
    #[serde(default)]
    pub bench: bool,
}

/// Every row.
pub fn cases() -> Vec<Case> {
    serde_json::from_str(TABLE).unwrap_or_else(|e| panic!("tests/cases/expressions.json: {e}"))
}
