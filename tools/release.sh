#!/usr/bin/env bash
# Makes the files of a release:
#
#   tools/release.sh [OUT_DIR]
#
# builds the service with `cargo build --release --locked` (the versions of Cargo.lock, or
# nothing), then writes to OUT_DIR (by default `dist/` in cargo's target directory):
#
#   fluxflow-<version>-<target>        the binary (<target>: rustc's host triple, such as
#                                      x86_64-unknown-linux-gnu; linux-<arch> without rustc)
#   fluxflow_<version>_<arch>.deb      the Debian package (tools/package-deb.sh)
#   SHA256SUMS                         both files' SHA-256, for `sha256sum -c SHA256SUMS`
#
# FLUXFLOW_BINARY=PATH skips the build and releases that binary instead (a binary CI built, or
# one to test this script with). The binary must be built from a clean checkout of the commit
# being released: `fluxflow --version` names the commit, and a warning says when the work tree
# has changes.
set -euo pipefail

die() { echo "release: error: $*" >&2; exit 1; }
note() { echo "release: $*" >&2; }

[ $# -le 1 ] || { echo "usage: tools/release.sh [OUT_DIR]" >&2; exit 2; }
repo=$(cd "$(dirname "$0")/.." && pwd)
target_dir=${CARGO_TARGET_DIR:-$repo/target}
out_dir=${1:-$target_dir/dist}

version=$(sed -n '/^\[package\]/,/^\[/ s/^version[[:space:]]*=[[:space:]]*"\([^"]*\)".*/\1/p' \
  "$repo/Cargo.toml" | head -n 1)
[ -n "$version" ] || die "no version in the [package] table of $repo/Cargo.toml"

if git -C "$repo" rev-parse --git-dir >/dev/null 2>&1; then
  if [ -n "$(git -C "$repo" status --porcelain --untracked-files=no)" ]; then
    note "warning: the work tree has uncommitted changes; the release is not exactly $(git -C "$repo" rev-parse --short HEAD)"
  fi
fi

if [ -n "${FLUXFLOW_BINARY:-}" ]; then
  binary=$FLUXFLOW_BINARY
  note "using FLUXFLOW_BINARY=$binary (no build)"
else
  note "cargo build --release --locked --bin fluxflow"
  (cd "$repo" && cargo build --release --locked --bin fluxflow)
  binary=$target_dir/release/fluxflow
fi
[ -x "$binary" ] || die "$binary is not an executable file"
reported=$("$binary" --version) || die "$binary --version failed"
case "$reported" in
  "fluxflow $version"*) ;;
  *) die "$binary says \`$reported\`, but Cargo.toml's version is $version" ;;
esac

if [[ $reported =~ \(commit\ ([0-9a-f]+)\) ]] && head=$(git -C "$repo" rev-parse HEAD 2>/dev/null) &&
  [[ $head != "${BASH_REMATCH[1]}"* ]]; then
  note "warning: the binary is of commit ${BASH_REMATCH[1]}, the checkout is at ${head:0:12}"
fi

if command -v rustc >/dev/null && triple=$(rustc -vV | sed -n 's/^host: //p') && [ -n "$triple" ]; then
  target=$triple
else
  target=linux-$(dpkg --print-architecture 2>/dev/null || uname -m)
fi

mkdir -p "$out_dir"
out_dir=$(cd "$out_dir" && pwd)
raw=fluxflow-$version-$target
install -m 0755 "$binary" "$out_dir/$raw"
deb=$("$repo/tools/package-deb.sh" "$binary" "$out_dir")
(cd "$out_dir" && sha256sum "$raw" "$(basename "$deb")" >SHA256SUMS)
(cd "$out_dir" && sha256sum --quiet -c SHA256SUMS) || die "SHA256SUMS does not check"

echo
echo "Release $version ($reported) in $out_dir:"
(cd "$out_dir" && ls -l "$raw" "$(basename "$deb")" SHA256SUMS)
echo
cat "$out_dir/SHA256SUMS"
