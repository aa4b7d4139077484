//! Rules files: reading the YAML, checking its structure, reporting every problem with its
//! position. Compiling what was read into something that runs is [`crate::graph`]'s job.

pub mod diagnostic;
pub mod loyalty;
pub mod schema;
pub mod yaml;

pub use diagnostic::{Diagnostic, Diagnostics, Severity};
pub use loyalty::{Limit, LimitCap, LimitScope, NegativeBalance, Programme};
pub use schema::{ActionDef, Child, Condition, EngineSettings, RulesFile, Scenario, Text};
pub use yaml::Pos;

/// Largest rules file accepted, in bytes.
pub const MAX_FILE_LEN: usize = 16 << 20;

/// Reads a rules file's text. The returned file holds every part that could be read; the
/// diagnostics hold every problem found.
pub fn read(source: &str, diags: &mut Diagnostics) -> RulesFile {
    if source.len() > MAX_FILE_LEN {
        diags.error(Pos { line: 1, col: 1 }, format!("the rules file is larger than {} MiB", MAX_FILE_LEN >> 20));
        return RulesFile::default();
    }
    match yaml::parse(source) {
        Ok(root) => schema::read(root.as_ref(), diags),
        Err(e) => {
            diags.error(e.pos, format!("YAML syntax: {}", e.message));
            RulesFile::default()
        }
    }
}

/// Compiles an expression written in the rules file; a problem is reported at its line and
/// column in the file, naming the part of the expression at fault when the message does not.
/// `what` names the expression's owner (``condition `id` ``). A condition that loads with parts
/// its types make always unknown gets one warning per part.
pub fn compile_expression(
    text: &Text,
    purpose: crate::expr::Purpose,
    what: &str,
    diags: &mut Diagnostics,
) -> Option<crate::expr::Program> {
    match crate::expr::Program::compile(&text.value, purpose) {
        Ok(program) => {
            for warning in program.warnings() {
                let (pos, message) = locate_problem(text, what, warning);
                diags.warning(pos, format!("{message}; this part of the condition is always unknown"));
            }
            Some(program)
        }
        Err(e) => {
            let (pos, message) = locate_problem(text, what, &e);
            diags.error(pos, message);
            None
        }
    }
}

/// Where in the file a problem of an expression stands, and its message naming the owner and,
/// when the message does not, the part of the expression at fault.
fn locate_problem(text: &Text, what: &str, e: &crate::expr::ExprError) -> (Pos, String) {
    let (pos, exact) = text.locate(e.span);
    let message = match e.opened_at {
        Some(open) => format!("{} ({})", e.message, opening_place(text, open, pos)),
        None => e.message.clone(),
    };
    let fragment = e.span.text(&text.value).trim();
    let named = fragment.is_empty()
        || fragment == text.value.trim()
        || fragment.chars().count() > 60
        || message.contains(fragment)
        || message.contains(&fragment.replace('\'', "\""));
    let at = if named { String::new() } else { format!(", at `{fragment}`") };
    let within = if exact {
        String::new()
    } else {
        let (line, col) = e.span.line_col(&text.value);
        format!(" (line {line}, column {col} of the expression)")
    };
    (pos, format!("{what}{at}: {message}{within}"))
}

/// Where an unclosed `(` stands in the file: `the `(` is at column C`, with the line when it
/// differs from the error's.
fn opening_place(text: &Text, open: crate::expr::Span, error_pos: Pos) -> String {
    match text.locate(open) {
        (pos, true) if pos.line == error_pos.line => format!("the `(` is at column {}", pos.col),
        (pos, true) => format!("the `(` is at line {}, column {}", pos.line, pos.col),
        (_, false) => format!("the `(` is at {} of the expression", open.place(&text.value)),
    }
}
