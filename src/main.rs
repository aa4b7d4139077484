//! The `fluxflow` binary: a thin shell around [`fluxflow::cli`].
#![warn(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

fn main() -> std::process::ExitCode {
    fluxflow::cli::main()
}
