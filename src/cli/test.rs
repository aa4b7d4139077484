//! `fluxflow test FILE...`: runs rule test files and prints results like `cargo test`.

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
    let (mut passed, mut failed, mut broken) = (0, 0, 0);
    for path in expand(&args.files) {
        match run_file(&path, &registry) {
            Ok(report) => {
                print_report(&path.display().to_string(), &report);
                failed += report.failed();
                passed += report.cases.len() - report.failed();
            }
            Err(e) => {
                broken += 1;
                println!("\nerror: {e}");
            }
        }
    }
    let verdict = if failed == 0 && broken == 0 { "ok" } else { "FAILED" };
    let broken_note = if broken > 0 { format!("; {broken} file(s) could not run") } else { String::new() };
    println!("\nrule test result: {verdict}. {passed} passed; {failed} failed{broken_note}");
    Ok(if verdict == "ok" { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn print_report(name: &str, report: &FileReport) {
    println!("\nrunning {} case(s) from {name} (rules: {})", report.cases.len(), report.rules);
    for case in &report.cases {
        let verdict = if case.problems.is_empty() { "ok" } else { "FAILED" };
        println!("case {} ... {verdict}", case.name);
    }
    let failures: Vec<_> = report.cases.iter().filter(|c| !c.problems.is_empty()).collect();
    if !failures.is_empty() {
        println!("\nfailures:");
        for case in failures {
            println!("\n---- {} ----", case.name);
            for problem in &case.problems {
                println!("  {problem}");
            }
            println!("  trace:\n{}", case.trace.trim_end());
        }
    }
    let c = &report.coverage;
    println!(
        "coverage: {}/{} conditions and {}/{} actions reached",
        c.conditions_reached, c.conditions, c.actions_reached, c.actions
    );
    for node in &c.unreached {
        let disabled = if node.disabled { ", disabled" } else { "" };
        println!("  not reached: {} `{}` (scenario `{}`{disabled})", node.kind, node.id, node.scenario);
    }
}
