//! `fluxflow eval --config FILE [EVENT.json | -]`

use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use serde_json::json;
use serde_json::value::RawValue;

use crate::actions::ActionRegistry;
use crate::api::error::ErrorCode;
use crate::engine::evaluate_stateless;
use crate::event::{Event, EventError};
use crate::graph::{LoadError, Rules};

/// Arguments of `fluxflow eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Rules file.
    #[arg(long, env = "FLUXFLOW_CONFIG", default_value = "configs/rules.yaml")]
    config: PathBuf,
    /// Add a trace: why each scenario and condition did or did not fire.
    #[arg(long)]
    trace: bool,
    /// Print each result indented over several lines instead of one line each.
    #[arg(long)]
    pretty: bool,
    /// A file of events (one, several one after another, or an array); `-` or nothing reads standard input.
    input: Option<PathBuf>,
}

/// Evaluates every event of the input, printing one result per event. Exit 1 when a rules file
/// or an event is invalid.
pub fn run(args: &EvalArgs) -> anyhow::Result<ExitCode> {
    let rules = match Rules::load_path(&args.config, &ActionRegistry::builtin()) {
        Ok(rules) => rules,
        Err(LoadError::Invalid(diagnostics)) => {
            let name = args.config.display().to_string();
            for d in &diagnostics {
                eprintln!("{}", d.render(&name));
            }
            return Ok(ExitCode::from(1));
        }
        Err(e) => return Err(e.into()),
    };
    let input: Box<dyn Read> = match &args.input {
        Some(path) if path.as_os_str() != "-" => {
            Box::new(File::open(path).with_context(|| format!("cannot open {}", path.display()))?)
        }
        _ => Box::new(io::stdin()),
    };
    let mut out = io::stdout().lock();
    let mut all_valid = true;
    let mut index = 0usize;
    for value in serde_json::Deserializer::from_reader(BufReader::new(input)).into_iter::<Box<RawValue>>() {
        let value = match value {
            Ok(v) => v,
            Err(e) => {
                print_line(
                    &mut out,
                    &json!({"error": EventError::from(e).to_string(), "code": ErrorCode::InvalidJson.parts().1}),
                    args.pretty,
                )?;
                return Ok(ExitCode::from(1));
            }
        };
        // An array is a list of events; anything else is one event.
        let events: Vec<&RawValue> = match serde_json::from_str::<Vec<&RawValue>>(value.get()) {
            Ok(items) if value.get().starts_with('[') => items,
            _ => vec![&*value],
        };
        for raw in events {
            match Event::from_slice(raw.get().as_bytes()) {
                Ok(event) => print_line(&mut out, &evaluate_stateless(&rules, &event, args.trace), args.pretty)?,
                Err(e) => {
                    all_valid = false;
                    print_line(
                        &mut out,
                        &json!({"error": format!("event {index}: {e}"), "code": ErrorCode::InvalidEvent.parts().1}),
                        args.pretty,
                    )?;
                }
            }
            index += 1;
        }
    }
    Ok(if all_valid { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn print_line(out: &mut impl Write, value: &impl serde::Serialize, pretty: bool) -> anyhow::Result<()> {
    if pretty {
        serde_json::to_writer_pretty(&mut *out, value)?;
    } else {
        serde_json::to_writer(&mut *out, value)?;
    }
    writeln!(out)?;
    Ok(())
}
