//! Records the git commit the binary is built from, for `fluxflow --version`: from
//! `FLUXFLOW_COMMIT` when set (a build outside a checkout), else from `git`, else `unknown`.

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=FLUXFLOW_COMMIT");
    let commit = std::env::var("FLUXFLOW_COMMIT").ok().filter(|c| !c.is_empty()).or_else(git_commit);
    println!("cargo:rustc-env=FLUXFLOW_COMMIT={}", commit.as_deref().unwrap_or("unknown"));
}

/// The checkout's commit, rebuilding when `HEAD` moves (a commit, a checkout, a fetch that packs
/// refs).
fn git_commit() -> Option<String> {
    let git_dir = Path::new(".git");
    if git_dir.is_dir() {
        println!("cargo:rerun-if-changed=.git/HEAD");
        println!("cargo:rerun-if-changed=.git/packed-refs");
        if let Ok(head) = std::fs::read_to_string(git_dir.join("HEAD"))
            && let Some(reference) = head.trim().strip_prefix("ref: ")
        {
            println!("cargo:rerun-if-changed=.git/{reference}");
        }
    }
    let output = Command::new("git").args(["rev-parse", "--short=12", "HEAD"]).output().ok()?;
    let commit = String::from_utf8(output.stdout).ok()?.trim().to_owned();
    (output.status.success() && !commit.is_empty()).then_some(commit)
}
