//! The expression language of conditions and formulas: lexer, parser, compiler, evaluator.
//!
//! An expression is compiled once, when the rules are loaded, into a [`Program`]; evaluating a
//! program reads the event in place and allocates nothing.
//!
//! ```
//! use fluxflow::event::Event;
//! use fluxflow::expr::{Program, Purpose, Truth};
//!
//! let condition = Program::compile("payload.amount > 1000 AND payload.tags contains 'vip'", Purpose::Condition).unwrap();
//! let event = Event::from_value(serde_json::json!({
//!     "type": "purchase", "payload": {"amount": 1500, "tags": ["vip", "new"]}
//! })).unwrap();
//! assert_eq!(condition.truth(&event), Truth::True);
//!
//! let formula = Program::compile("payload.amount * 0.05", Purpose::Formula).unwrap();
//! assert_eq!(formula.number(&event), Ok(75.0));
//! ```

pub mod ast;
pub mod compiler;
pub mod eval;
pub mod lexer;
pub mod parser;
pub mod set;

pub use ast::{Function, Span};
pub use compiler::Purpose;
pub use eval::{Reason, Truth, Unknown, Val};

use crate::event::Event;
use crate::facts::Facts;

/// Longest expression accepted, in bytes.
pub const MAX_EXPRESSION_LEN: usize = 4096;

/// An expression that failed to load: where and why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct ExprError {
    /// Where in the expression.
    pub span: Span,
    /// What is wrong.
    pub message: String,
    /// For an unclosed `(`: where it was opened.
    pub opened_at: Option<Span>,
}

impl ExprError {
    /// The message with the column of the unclosed `(`, if any, for an expression on its own.
    pub fn render(&self, src: &str) -> String {
        match self.opened_at {
            Some(open) => format!("{} (the `(` is at {})", self.message, open.place(src)),
            None => self.message.clone(),
        }
    }
}

impl From<parser::ParseError> for ExprError {
    fn from(e: parser::ParseError) -> Self {
        ExprError { span: e.span, message: e.message, opened_at: e.opened_at }
    }
}

impl From<compiler::CompileError> for ExprError {
    fn from(e: compiler::CompileError) -> Self {
        ExprError { span: e.span, message: e.message, opened_at: None }
    }
}

/// A compiled expression with its source text.
#[derive(Debug, Clone)]
pub struct Program {
    source: Box<str>,
    root: compiler::Node,
    /// Parts of a condition that its types make always unknown, each with why.
    warnings: Box<[ExprError]>,
}

impl Program {
    /// Parses and compiles an expression.
    pub fn compile(source: &str, purpose: Purpose) -> Result<Program, ExprError> {
        if source.len() > MAX_EXPRESSION_LEN {
            return Err(ExprError {
                span: Span::new(0, 0),
                message: format!("expression is longer than {MAX_EXPRESSION_LEN} bytes"),
                opened_at: None,
            });
        }
        let tree = parser::parse(source)?;
        let compiled = compiler::compile(&tree, purpose)?;
        let warnings = compiled.warnings.into_iter().map(ExprError::from).collect();
        Ok(Program { source: source.into(), root: compiled.root, warnings })
    }

    /// The parts of a condition that can never be decided because of their types (`'a' > 1`,
    /// `meta.tier.level`): the condition loads, those parts are always unknown, and each
    /// warning says why. Formulas have none: there such a part is a load error.
    pub fn warnings(&self) -> &[ExprError] {
        &self.warnings
    }

    /// The expression as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Evaluates as a condition, on an event's facts.
    pub fn truth_of(&self, facts: &Facts<'_>) -> Truth {
        eval::truth(&self.root, facts)
    }

    /// Evaluates as a formula, on an event's facts.
    pub fn number_of(&self, facts: &Facts<'_>) -> Result<f64, Unknown> {
        eval::number(&self.root, facts)
    }

    /// Evaluates as a condition, on an event alone (its time read in UTC).
    pub fn truth(&self, event: &Event) -> Truth {
        self.truth_of(&Facts::of(event))
    }

    /// Evaluates as a formula, on an event alone (its time read in UTC).
    pub fn number(&self, event: &Event) -> Result<f64, Unknown> {
        self.number_of(&Facts::of(event))
    }

    /// True when the expression reads the actor's state before the event (member functions
    /// and values): it is then decided inside the ledger's transaction.
    pub fn reads_member(&self) -> bool {
        self.root.reads_member()
    }

    /// Adds what of the member's history the expression reads.
    pub fn history_reads(&self, out: &mut Vec<compiler::HistoryRead>) {
        self.root.history_reads(out);
    }

    /// The paths the expression reads, each once, as written (`payload.amount`), in order.
    pub fn paths(&self) -> Vec<(&str, &ast::Path)> {
        let mut found: Vec<(&str, &ast::Path)> = Vec::new();
        self.root.visit_paths(&mut |path, span| {
            let text = span.text(&self.source);
            if !found.iter().any(|(t, _)| *t == text) {
                found.push((text, path));
            }
        });
        found
    }

    /// When the expression can only be true if a path equals a non-numeric string (it is
    /// `path == 'text'`, or begins with it joined by AND), that path and text.
    pub fn equality_guard(&self) -> Option<(&ast::Path, &str)> {
        self.root.equality_guard()
    }

    /// Explains an unknown that this program produced.
    pub fn explain(&self, unknown: &Unknown) -> String {
        match unknown.reason {
            Reason::Impossible(index) => match self.warnings.get(usize::from(index)) {
                Some(warning) => {
                    format!("`{}` can never be decided: {}", unknown.span.text(&self.source), warning.message)
                }
                None => unknown.explain(&self.source),
            },
            _ => unknown.explain(&self.source),
        }
    }
}
