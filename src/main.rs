//! The `fluxflow` binary: a thin shell around [`fluxflow::cli`].

fn main() -> std::process::ExitCode {
    fluxflow::cli::main()
}
