//! `fluxflow --version`: the version and the git commit the binary was built from (`build.rs`).

use std::process::Command;

#[test]
fn version_names_the_package_version_and_the_commit_built_from() {
    let output = Command::new(env!("CARGO_BIN_EXE_fluxflow")).arg("--version").output().unwrap();
    assert!(output.status.success());
    let printed = String::from_utf8(output.stdout).unwrap();
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(head.status.success(), "the tests run in a git checkout");
    let commit = String::from_utf8(head.stdout).unwrap();
    assert_eq!(printed.trim_end(), format!("fluxflow {} (commit {})", env!("CARGO_PKG_VERSION"), commit.trim()));
}
