#!/usr/bin/env bash
# Builds FluxFlow's Debian package from a built binary:
#
#   tools/package-deb.sh BINARY OUT_DIR
#
# writes OUT_DIR/fluxflow_<version>_<arch>.deb and prints its path, alone, on stdout (what it
# does goes to stderr). The version is the [package] version of Cargo.toml (a pre-release such
# as 0.2.0-rc.1 becomes 0.2.0~rc.1, which Debian sorts before 0.2.0); the architecture is this
# machine's (`dpkg --print-architecture`), and the binary must be built for it.
#
# Why dpkg-deb and not cargo-deb: dpkg-deb is on every Debian machine and builds offline, from
# the binary CI already has; cargo-deb would have to be compiled in CI first, and would rebuild
# the binary its own way. What the package holds is written out in packaging/deb/ and below.
#
# Runs as root or not: every file is owned by root in the package (--root-owner-group).
# Settings: DEB_MAINTAINER (the Maintainer field); SOURCE_DATE_EPOCH (file times, by default
# the last commit's, so the same binary gives the same package); DEB_COMPRESSION (xz by default;
# CI packs its unoptimised binary with gzip, which takes seconds where xz takes minutes).
set -euo pipefail
umask 022

die() { echo "package-deb: error: $*" >&2; exit 1; }
note() { echo "package-deb: $*" >&2; }

[ $# -eq 2 ] || { echo "usage: tools/package-deb.sh BINARY OUT_DIR" >&2; exit 2; }
binary=$1
out_dir=$2
repo=$(cd "$(dirname "$0")/.." && pwd)
deb_src=$repo/packaging/deb

if [ ! -f "$binary" ] || [ ! -x "$binary" ]; then
  die "$binary is not an executable file"
fi
for tool in dpkg-deb dpkg; do
  command -v "$tool" >/dev/null || die "$tool is needed (Debian's dpkg package)"
done

# The version: the first `version = "..."` of the [package] table.
version=$(sed -n '/^\[package\]/,/^\[/ s/^version[[:space:]]*=[[:space:]]*"\([^"]*\)".*/\1/p' \
  "$repo/Cargo.toml" | head -n 1)
[ -n "$version" ] || die "no version in the [package] table of $repo/Cargo.toml"
deb_version=${version/-/\~}
[[ $deb_version =~ ^[0-9][A-Za-z0-9.+~]*$ ]] || die "cannot make a Debian version of $version"
arch=$(dpkg --print-architecture)

# A binary of another version or machine would make a package that lies about its contents.
if ! reported=$("$binary" --version 2>&1); then
  die "$binary --version failed (built for another machine?): $reported"
fi
case "$reported" in
  "fluxflow $version"*) ;;
  *) die "$binary says \`$reported\`, but Cargo.toml's version is $version" ;;
esac

# Depends: the packages of the shared libraries the binary links, and the newest glibc symbol
# version it needs. Rust binaries link only glibc (and, for unwinding, libgcc_s).
depends_of() {
  local libs glibc
  if ! command -v readelf >/dev/null; then
    note "readelf not found (binutils): Depends is libc6 without a version"
    echo "libc6"
    return
  fi
  libs=$(readelf -d "$binary" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
  glibc=$(readelf -V "$binary" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -u -V | tail -n 1)
  local deps="libc6${glibc:+ (>= $glibc)}" lib
  for lib in $libs; do
    case "$lib" in
      libc.so.*|libm.so.*|libdl.so.*|libpthread.so.*|librt.so.*|ld-linux*) ;;
      libgcc_s.so.1) deps="$deps, libgcc-s1" ;;
      *) die "the binary links $lib: add its package to depends_of in $0" ;;
    esac
  done
  echo "$deps"
}
depends="$(depends_of), adduser | passwd"

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
root=$stage/root

# The files, each with its mode. The binary is not stripped: its symbols name the functions in
# a panic's backtrace.
install -D -m 0755 "$binary" "$root/usr/bin/fluxflow"
install -D -m 0644 "$deb_src/fluxflow.service" "$root/lib/systemd/system/fluxflow.service"
install -D -m 0644 "$repo/configs/rules.yaml" "$root/etc/fluxflow/rules.yaml"
install -D -m 0644 "$deb_src/fluxflow.default" "$root/etc/default/fluxflow"
doc=$root/usr/share/doc/fluxflow
install -D -m 0644 "$repo/LICENSE" "$doc/copyright"
install -m 0644 "$repo/README.md" "$repo/CHANGELOG.md" "$doc/"
install -d "$doc/docs"
install -m 0644 "$repo"/docs/*.md "$doc/docs/"

# DEBIAN/: the control file from its template, the conffiles, the maintainer scripts, and the
# checksums of every file but the conffiles (what `dpkg --verify` reads).
install -d "$root/DEBIAN"
installed_size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
maintainer=${DEB_MAINTAINER:-The FluxFlow authors <fluxflow@localhost>}
control=$(<"$deb_src/control.in")
control=${control//@VERSION@/"$deb_version"}
control=${control//@ARCH@/"$arch"}
control=${control//@MAINTAINER@/"$maintainer"}
control=${control//@INSTALLED_SIZE@/"$installed_size"}
control=${control//@DEPENDS@/"$depends"}
[[ $control != *@[A-Z_]*@* ]] || die "a @FIELD@ of control.in is not filled in"
printf '%s\n' "$control" >"$root/DEBIAN/control"
install -m 0644 "$deb_src/conffiles" "$root/DEBIAN/conffiles"
install -m 0755 "$deb_src/postinst" "$deb_src/prerm" "$deb_src/postrm" "$root/DEBIAN/"
while read -r conffile; do
  [ -f "$root$conffile" ] || die "conffile $conffile is not in the package"
done <"$root/DEBIAN/conffiles"
(cd "$root" && find . -path ./DEBIAN -prune -o -type f -print | sed 's|^\./||' | sort |
  grep -v -x -F -f <(sed 's|^/||' DEBIAN/conffiles) | xargs md5sum) >"$stage/md5sums"
install -m 0644 "$stage/md5sums" "$root/DEBIAN/md5sums"

# The same times on every file, so that the same inputs give the same package.
epoch=${SOURCE_DATE_EPOCH:-$(git -C "$repo" log -1 --format=%ct 2>/dev/null || date +%s)}
export SOURCE_DATE_EPOCH=$epoch
find "$root" -exec touch --no-dereference --date="@$epoch" {} +

mkdir -p "$out_dir"
deb=$out_dir/fluxflow_${deb_version}_${arch}.deb
dpkg-deb --root-owner-group -Z"${DEB_COMPRESSION:-xz}" --build "$root" "$deb" >&2

# Checks of what was built.
dpkg-deb --info "$deb" >&2
for field in "Package:fluxflow" "Version:$deb_version" "Architecture:$arch"; do
  got=$(dpkg-deb --field "$deb" "${field%%:*}")
  [ "$got" = "${field#*:}" ] || die "${field%%:*} is \`$got\`, not \`${field#*:}\`"
done
contents=$(dpkg-deb --contents "$deb")
for path in ./usr/bin/fluxflow ./lib/systemd/system/fluxflow.service ./etc/fluxflow/rules.yaml \
  ./usr/share/doc/fluxflow/copyright; do
  grep -q " $path\$" <<<"$contents" || die "$path is missing from the package"
done
if grep -v -q ' root/root ' <<<"$contents"; then
  die "files not owned by root/root in the package"
fi
if command -v lintian >/dev/null; then
  # Informational: the package ships no Debian changelog and its copyright file is LICENSE.
  note "lintian:"
  lintian --no-tag-display-limit "$deb" >&2 || true
fi

note "built $deb ($(du -k "$deb" | cut -f1) KiB)"
echo "$deb"
