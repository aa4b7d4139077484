//! `fluxflow schema`: prints the JSON Schema of rules files, for editors and other tools.

use std::io::{ErrorKind, Write};
use std::process::ExitCode;

/// The JSON Schema (draft 2020-12) of rules files, as `docs/rules.schema.json` holds it.
pub const RULES_SCHEMA: &str = include_str!("../../docs/rules.schema.json");

/// Prints the schema to stdout. A closed pipe (`fluxflow schema | head`) is not an error.
pub fn run() -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    match out.write_all(RULES_SCHEMA.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != ErrorKind::BrokenPipe => Err(anyhow::Error::new(e).context("write the schema")),
        _ => Ok(ExitCode::SUCCESS),
    }
}
