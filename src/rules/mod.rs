//! Rules files: reading the YAML, checking its structure, reporting every problem with its
//! position. Compiling what was read into something that runs is [`crate::graph`]'s job.

pub mod diagnostic;
pub mod schema;
pub mod yaml;

pub use diagnostic::{Diagnostic, Diagnostics, Severity};
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

/// Compiles an expression written in the rules file; a problem is reported at its column in the
/// file (or at the scalar, with the expression's own column, inside multi-line strings).
pub fn compile_expression(
    text: &Text,
    purpose: crate::expr::Purpose,
    what: &str,
    diags: &mut Diagnostics,
) -> Option<crate::expr::Program> {
    match crate::expr::Program::compile(&text.value, purpose) {
        Ok(program) => Some(program),
        Err(e) => {
            let (pos, exact) = text.locate(e.span);
            let within = if exact { String::new() } else { format!(" (column {} of the expression)", e.span.column(&text.value)) };
            diags.error(pos, format!("{what}: {}{within}", e.message));
            None
        }
    }
}
