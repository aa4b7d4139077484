//! The `fluxflow` binary: a thin shell around [`fluxflow::cli`].
#![warn(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

/// mimalloc: loading a large rules file and serving many small requests are allocation-heavy,
/// and glibc's allocator spent a third of rules compilation in malloc and free.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    fluxflow::cli::main()
}
