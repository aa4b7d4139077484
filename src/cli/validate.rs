//! `fluxflow validate FILE...`

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::actions::ActionRegistry;
use crate::graph::{LoadError, Rules};

/// Arguments of `fluxflow validate`.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Rules files to check.
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

/// Checks each file; exit 0 when none has an error (warnings allowed), 1 otherwise.
pub fn run(args: &ValidateArgs) -> anyhow::Result<ExitCode> {
    let registry = ActionRegistry::builtin();
    let mut failed = false;
    for path in &args.files {
        let name = path.display().to_string();
        match Rules::load_path(path, &registry) {
            Ok(rules) => {
                for warning in &rules.warnings {
                    println!("{}", warning.render(&name));
                }
                println!(
                    "{name}: ok ({} enabled scenario(s), {} warning(s))",
                    rules.scenario_count(),
                    rules.warnings.len()
                );
            }
            Err(LoadError::Invalid(diagnostics)) => {
                failed = true;
                for d in &diagnostics {
                    println!("{}", d.render(&name));
                }
            }
            Err(e @ LoadError::Io { .. }) => {
                failed = true;
                println!("{name}: error: {e}");
            }
        }
    }
    Ok(if failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
}
