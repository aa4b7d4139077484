//! `fluxflow test FILE...`: runs rule test files and prints results like `cargo test`.

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::actions::ActionRegistry;
use crate::ruletest::{FileReport, expand, run_file};

/// Arguments of `fluxflow test`.
#[derive(Debug, Args)]
pub struct TestArgs {
    /// Test files (`*.test.yaml`), or directories holding them.
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

/// Runs every file; exit 1 when a case fails or a file cannot run.
pub fn run(args: &TestArgs) -> anyhow::Result<ExitCode> {
    let registry = ActionRegistry::builtin();
    let mut out = Sections { out: io::stdout().lock(), started: false };
    let (mut passed, mut failed, mut broken) = (0, 0, 0);
    for path in expand(&args.files) {
        match run_file(&path, &registry) {
            Ok(report) => {
                print_report(&mut out, &path.display().to_string(), &report)?;
                failed += report.failed();
                passed += report.cases.len() - report.failed();
            }
            Err(e) => {
                broken += 1;
                writeln!(out.section()?, "error: {e}")?;
            }
        }
    }
    let verdict = if failed == 0 && broken == 0 { "ok" } else { "FAILED" };
    let broken_note = if broken > 0 { format!("; {broken} file(s) could not run") } else { String::new() };
    writeln!(out.section()?, "rule test result: {verdict}. {passed} passed; {failed} failed{broken_note}")?;
    Ok(if verdict == "ok" { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// Standard output in sections separated by one blank line: none before the first.
struct Sections<W: Write> {
    out: W,
    started: bool,
}

impl<W: Write> Sections<W> {
    /// Starts a section: a blank line unless it is the first; then its lines.
    fn section(&mut self) -> io::Result<&mut W> {
        if self.started {
            writeln!(self.out)?;
        }
        self.started = true;
        Ok(&mut self.out)
    }

    /// The lines of the current section.
    fn lines(&mut self) -> &mut W {
        self.started = true;
        &mut self.out
    }
}

fn print_report(out: &mut Sections<impl Write>, name: &str, report: &FileReport) -> io::Result<()> {
    writeln!(out.section()?, "running {} case(s) from {name} (rules: {})", report.cases.len(), report.rules)?;
    for case in &report.cases {
        let verdict = if case.problems.is_empty() { "ok" } else { "FAILED" };
        writeln!(out.lines(), "case {} ... {verdict}", case.name)?;
    }
    let failures: Vec<_> = report.cases.iter().filter(|c| !c.problems.is_empty()).collect();
    if !failures.is_empty() {
        writeln!(out.section()?, "failures:")?;
        for case in failures {
            let out = out.section()?;
            writeln!(out, "---- {} ----", case.name)?;
            for problem in &case.problems {
                writeln!(out, "  {problem}")?;
            }
            writeln!(out, "  trace:\n{}", case.trace.trim_end())?;
        }
    }
    let c = &report.coverage;
    let out = out.lines();
    writeln!(
        out,
        "coverage: {}/{} conditions and {}/{} actions reached",
        c.conditions_reached, c.conditions, c.actions_reached, c.actions
    )?;
    for node in &c.unreached {
        let disabled = if node.disabled { ", disabled" } else { "" };
        writeln!(out, "  not reached: {} `{}` (scenario `{}`{disabled})", node.kind, node.id, node.scenario)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::Sections;

    #[test]
    fn sections_are_separated_by_one_blank_line_and_none_comes_first() {
        let mut out = Sections { out: Vec::new(), started: false };
        writeln!(out.section().unwrap(), "a").unwrap();
        writeln!(out.lines(), "b").unwrap();
        writeln!(out.section().unwrap(), "c").unwrap();
        assert_eq!(String::from_utf8(out.out).unwrap(), "a\nb\n\nc\n");
    }
}
