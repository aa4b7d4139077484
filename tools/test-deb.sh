#!/usr/bin/env bash
# Tests the Debian package on this machine, as CI does (root, Debian 12, systemd not running):
#
#   tools/test-deb.sh BINARY
#
# builds the package of BINARY with tools/package-deb.sh, then:
#  1. installs it with `dpkg -i` (a fluxflow package already installed is purged first);
#  2. checks `fluxflow --version`, the conffile /etc/fluxflow/rules.yaml, the user and group
#     fluxflow, /var/lib/fluxflow (fluxflow's, mode 0750), and the unit with
#     `systemd-analyze verify` (it needs no running systemd; any warning fails the test), and
#     enables it with `systemctl enable`, as an image built without systemd running would;
#  3. runs the unit's own command line as the user fluxflow (setpriv, else runuser), with a
#     scratch data directory and the installed rules on a free loopback port: /healthz, the
#     README's event (75 points to user_42), the balance that shows them, /readyz, then a clean
#     stop on SIGTERM;
#  4. edits /etc/fluxflow/rules.yaml, installs the package again (`--force-confold`) and checks
#     the edit was kept and /var/lib/fluxflow left alone;
#  5. purges the package: the binary, the unit, the conffiles and the unit's enablement are gone,
#     and the ledger's directory and the user are kept (docs/operations.md, "Installing on
#     Debian").
# Everything it made is removed at the end, whatever happened: the user, group and directory
# only if it created them. Exit 0 when every check passed, else 1 with the failed check.
set -euo pipefail

started=$(date +%s)
log() { printf 'test-deb: %s\n' "$*"; }
step() { printf '\n=== %s\n' "$*"; }
fail() { printf 'test-deb: FAIL: %s\n' "$*" >&2; exit 1; }
ok() { printf '  ok: %s\n' "$*"; }
trap 'fail "command failed (exit $?) at line $LINENO: $BASH_COMMAND"' ERR

[ $# -eq 1 ] || { echo "usage: tools/test-deb.sh BINARY" >&2; exit 2; }
binary=$(realpath "$1")
repo=$(cd "$(dirname "$0")/.." && pwd)
[ "$(id -u)" -eq 0 ] || fail "run as root: the test installs and purges the package"
for tool in dpkg dpkg-deb dpkg-query curl getent; do
  command -v "$tool" >/dev/null || fail "$tool is needed"
done
export DEBIAN_FRONTEND=noninteractive

work=$(mktemp -d)
data=""
service_pid=""
sentinel=/var/lib/fluxflow/.test-deb-$$
made_user=no
made_group=no
made_state=no

installed() { dpkg-query -W -f='${Status}' fluxflow 2>/dev/null | grep -q -v 'not-installed'; }

cleanup() {
  local status=$?
  trap - ERR
  trap '' INT TERM
  set +e
  if [ -n "$service_pid" ] && kill -0 "$service_pid" 2>/dev/null; then
    kill "$service_pid"
    wait "$service_pid" 2>/dev/null
  fi
  if installed; then
    dpkg --purge fluxflow >"$work/cleanup-purge.log" 2>&1 || cat "$work/cleanup-purge.log" >&2
  fi
  rm -f "$sentinel"
  [ "$made_state" = yes ] && rm -rf /var/lib/fluxflow
  [ "$made_user" = yes ] && userdel fluxflow 2>/dev/null
  [ "$made_group" = yes ] && getent group fluxflow >/dev/null && groupdel fluxflow 2>/dev/null
  [ -n "$data" ] && rm -rf "$data"
  rm -rf "$work"
  local took=$(($(date +%s) - started))
  if [ "$status" -eq 0 ]; then
    log "PASS in ${took} s"
  else
    log "failed after ${took} s; cleaned up"
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step "build the package"
deb=$("$repo/tools/package-deb.sh" "$binary" "$work/out" 2>"$work/package.log") ||
  { cat "$work/package.log" >&2; fail "tools/package-deb.sh failed"; }
[ -f "$deb" ] || fail "tools/package-deb.sh did not make a package"
ok "$(basename "$deb") ($(du -k "$deb" | cut -f1) KiB)"

step "install"
if installed; then
  if [ -d /run/systemd/system ] && systemctl is-active --quiet fluxflow.service; then
    fail "a fluxflow service is running on this machine; not touching it"
  fi
  log "fluxflow is installed already: purging it first (its ledger directory is kept)"
  dpkg --purge fluxflow >"$work/purge-first.log" 2>&1 || { cat "$work/purge-first.log" >&2; fail "purge"; }
fi
getent passwd fluxflow >/dev/null || made_user=yes
getent group fluxflow >/dev/null || made_group=yes
[ -e /var/lib/fluxflow ] || made_state=yes
dpkg -i "$deb" >"$work/install.log" 2>&1 || { cat "$work/install.log" >&2; fail "dpkg -i $deb"; }
[ "$(dpkg-query -W -f='${Status}' fluxflow)" = "install ok installed" ] ||
  fail "dpkg says: $(dpkg-query -W -f='${Status}' fluxflow)"
ok "dpkg -i: install ok installed, version $(dpkg-query -W -f='${Version}' fluxflow)"

step "what the package installed"
version_line=$(/usr/bin/fluxflow --version) || fail "/usr/bin/fluxflow --version failed"
[[ $version_line == "fluxflow "* ]] || fail "/usr/bin/fluxflow --version printed: $version_line"
ok "/usr/bin/fluxflow --version: $version_line"

[ -f /etc/fluxflow/rules.yaml ] || fail "/etc/fluxflow/rules.yaml is missing"
cmp -s /etc/fluxflow/rules.yaml "$repo/configs/rules.yaml" ||
  fail "/etc/fluxflow/rules.yaml is not configs/rules.yaml"
dpkg-query -W -f='${Conffiles}\n' fluxflow | grep -q '^ /etc/fluxflow/rules.yaml ' ||
  fail "/etc/fluxflow/rules.yaml is not a conffile of the package"
ok "/etc/fluxflow/rules.yaml: configs/rules.yaml, a conffile"

passwd_entry=$(getent passwd fluxflow) || fail "no user fluxflow"
getent group fluxflow >/dev/null || fail "no group fluxflow"
IFS=: read -r _ _ uid gid _ home shell <<<"$passwd_entry"
[ "$gid" = "$(getent group fluxflow | cut -d: -f3)" ] || fail "fluxflow's primary group is not fluxflow"
[ "$home" = /var/lib/fluxflow ] || fail "fluxflow's home is $home"
case "$shell" in */nologin|/bin/false) ;; *) fail "fluxflow can log in (shell $shell)" ;; esac
ok "user fluxflow: uid $uid, group fluxflow, home $home, shell $shell"

state=$(stat -c '%U:%G %a' /var/lib/fluxflow) || fail "/var/lib/fluxflow is missing"
if [ "$made_state" = yes ]; then
  [ "$state" = "fluxflow:fluxflow 750" ] || fail "/var/lib/fluxflow is $state, not fluxflow:fluxflow 750"
fi
ok "/var/lib/fluxflow: $state"

unit=/lib/systemd/system/fluxflow.service
[ -f "$unit" ] || fail "$unit is missing"
if command -v systemd-analyze >/dev/null; then
  # It exits 0 on an unknown or misspelt key and only says so: any output is a failure.
  if ! systemd-analyze verify "$unit" >"$work/verify.log" 2>&1 || [ -s "$work/verify.log" ]; then
    cat "$work/verify.log" >&2
    fail "systemd-analyze verify $unit"
  fi
  ok "systemd-analyze verify $unit: no warnings"
else
  log "systemd-analyze is not installed: the unit is not verified"
fi
wants=/etc/systemd/system/multi-user.target.wants/fluxflow.service
if command -v systemctl >/dev/null; then
  # What an image built without a running systemd does; the purge must undo it.
  systemctl enable --quiet fluxflow.service 2>"$work/enable.log" || { cat "$work/enable.log" >&2; fail "systemctl enable fluxflow"; }
  [ -L "$wants" ] || fail "systemctl enable made no $wants"
  ok "systemctl enable fluxflow (without a running systemd too)"
fi

step "run the installed service"
# The unit's own command line, with a scratch data directory instead of /var/lib/fluxflow, no
# FLUXFLOW_OPTS, and a free loopback port.
exec_start=$(sed -n 's/^ExecStart=//p' "$unit")
[[ $exec_start == *" --data /var/lib/fluxflow"* ]] || fail "ExecStart has no --data /var/lib/fluxflow: $exec_start"
data=$(mktemp -d /tmp/fluxflow-test-deb.XXXXXX)
command_line=${exec_start/ --data \/var\/lib\/fluxflow/ --data $data}
command_line=${command_line/ \$FLUXFLOW_OPTS/}
read -r -a argv <<<"$command_line"
argv+=(--addr 127.0.0.1:0)
# setpriv execs the service itself, so SIGTERM reaches it and its exit status comes back;
# runuser stays in between and answers SIGTERM with its own 143.
if command -v setpriv >/dev/null; then
  chown fluxflow:fluxflow "$data"
  as_user=(setpriv --reuid fluxflow --regid fluxflow --init-groups --)
  who=fluxflow
elif command -v runuser >/dev/null; then
  chown fluxflow:fluxflow "$data"
  as_user=(runuser -u fluxflow --)
  who=fluxflow
else
  as_user=()
  who=root
  log "neither runuser nor setpriv: the service runs as root"
fi
log "as $who: ${argv[*]}"
(cd "$data" && exec env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin "${as_user[@]}" "${argv[@]}") \
  >"$work/service.log" 2>&1 &
service_pid=$!

addr=""
for _ in $(seq 100); do
  addr=$(sed -n 's/.* listening addr=\(127\.0\.0\.1:[0-9]*\).*/\1/p' "$work/service.log")
  [ -n "$addr" ] && break
  kill -0 "$service_pid" 2>/dev/null || { cat "$work/service.log" >&2; fail "the service exited at start"; }
  sleep 0.1
done
[ -n "$addr" ] || { cat "$work/service.log" >&2; fail "the service did not log its address within 10 s"; }
base=http://$addr
ok "listening on $addr"

healthy=no
for _ in $(seq 100); do
  if curl -sf "$base/healthz" >/dev/null; then healthy=yes; break; fi
  sleep 0.1
done
[ "$healthy" = yes ] || { cat "$work/service.log" >&2; fail "GET /healthz did not answer 200 within 10 s"; }
ok "GET /healthz: 200"

# The README's quick start: examples/event.json earns user_42 75 points, spendable at once.
answer=$(curl -s -w '\n%{http_code}' -X POST "$base/v1/events" -H 'Content-Type: application/json' \
  --data-binary "@$repo/examples/event.json") || fail "POST /v1/events: no answer"
code=${answer##*$'\n'}
body=${answer%$'\n'*}
[ "$code" = 200 ] || fail "POST /v1/events answered $code: $body"
[[ $body == *'"scenarios_matched":["sc_high_value_food"]'* ]] || fail "POST /v1/events: sc_high_value_food did not match: $body"
[[ $body == *'"success":true'* && $body == *'"points":75'* ]] || fail "POST /v1/events awarded no 75 points: $body"
ok "POST /v1/events: sc_high_value_food, 75 points"

balance=$(curl -sf "$base/v1/actors/user_42/balance") || fail "GET /v1/actors/user_42/balance failed"
[[ $balance == '{"actor_id":"user_42","balance":75,'* ]] || fail "the balance does not show the 75 points: $balance"
ok "GET /v1/actors/user_42/balance: 75"

ready=$(curl -sf "$base/readyz") || fail "GET /readyz is not 200: $(curl -s "$base/readyz")"
ok "GET /readyz: $ready"

[ -f "$data/fluxflow.db" ] || fail "no ledger in the data directory"
[ "$(stat -c %U "$data/fluxflow.db")" = "$who" ] || fail "the ledger is not owned by $who"
ok "ledger written as $who: $data/fluxflow.db"

kill -TERM "$service_pid"
stopped=0
wait "$service_pid" || stopped=$?
service_pid=""
if [ "$stopped" -ne 0 ] && ! { [ "${as_user[0]:-}" = runuser ] && [ "$stopped" -eq 143 ]; }; then
  cat "$work/service.log" >&2
  fail "the service exited $stopped after SIGTERM"
fi
grep -q 'shutdown complete' "$work/service.log" || fail "no 'shutdown complete' in the service's log"
ok "SIGTERM: clean stop, exit 0"

step "install again over an edited conffile"
marker="# edited by tools/test-deb.sh $$"
echo "$marker" >>/etc/fluxflow/rules.yaml
echo "kept" >"$sentinel"
dpkg -i --force-confold "$deb" >"$work/reinstall.log" 2>&1 </dev/null ||
  { cat "$work/reinstall.log" >&2; fail "dpkg -i --force-confold $deb (again)"; }
[ "$(dpkg-query -W -f='${Status}' fluxflow)" = "install ok installed" ] || fail "not installed after the second dpkg -i"
grep -q -x -F "$marker" /etc/fluxflow/rules.yaml || fail "the edit of /etc/fluxflow/rules.yaml was lost"
[ -f "$sentinel" ] || fail "the second dpkg -i touched /var/lib/fluxflow"
ok "the edited /etc/fluxflow/rules.yaml is kept; /var/lib/fluxflow untouched"

step "purge"
dpkg --purge fluxflow >"$work/purge.log" 2>&1 || { cat "$work/purge.log" >&2; fail "dpkg --purge fluxflow"; }
! installed || fail "fluxflow is still known to dpkg: $(dpkg-query -W -f='${Status}' fluxflow)"
for gone in /usr/bin/fluxflow "$unit" /etc/fluxflow/rules.yaml /etc/default/fluxflow; do
  [ ! -e "$gone" ] || fail "$gone is still there after the purge"
done
[ ! -L "$wants" ] || fail "$wants is still there after the purge"
ok "/usr/bin/fluxflow, the unit, the conffiles and the enablement are gone"
[ -f "$sentinel" ] || fail "the purge removed /var/lib/fluxflow (it must keep the ledger)"
getent passwd fluxflow >/dev/null || fail "the purge removed the user fluxflow (it owns the kept ledger)"
ok "/var/lib/fluxflow and the user fluxflow are kept"
