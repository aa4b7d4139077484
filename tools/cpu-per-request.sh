#!/usr/bin/env bash
# CPU time per request of a running server and of the load generator, under tools/loadgen.
#
#   tools/cpu-per-request.sh PORT [SECONDS] [BODY_FILE]
#
# Reads the server's utime+stime (/proc/PID/stat) before and after a load run of SECONDS
# (default 6) over 64 connections, and the load generator's own near the end of its run, and
# prints both divided by the requests answered. The server must already listen on PORT.
set -euo pipefail
cd "$(dirname "$0")/.."
port=$1
secs=${2:-6}
body=${3:-}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/fluxflow-target}"
bin=$CARGO_TARGET_DIR/release
if [ -z "$body" ]; then
  body=$(mktemp)
  printf '%s' '{"type":"transaction","source":"pos-system","actor_id":"user_42","payload":{"amount":1500,"category":"food"}}' >"$body"
fi
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
server=$(ss -ltnp | grep ":$port " | sed -n 's/.*pid=\([0-9]*\).*/\1/p' | head -1)
[ -n "$server" ] || { echo "nothing listens on port $port" >&2; exit 1; }
hz=$(getconf CLK_TCK)
before=$(ticks "$server")
out=$(mktemp)
"$bin/loadgen" --url "http://127.0.0.1:$port/v1/events" --connections 64 --duration "${secs}s" --body "$body" >"$out" &
loadgen=$!
sleep $((secs - 1))
loadgen_ticks=$(ticks "$loadgen")
wait "$loadgen"
after=$(ticks "$server")
rps=$(sed -n 's/.*rps=\([0-9.]*\).*/\1/p' "$out" | tail -1)
tail -1 "$out"
python3 - "$rps" "$before" "$after" "$loadgen_ticks" "$secs" "$hz" <<'PY'
import sys
rps, before, after, lg, secs, hz = map(float, sys.argv[1:])
server = (after - before) / hz / secs
loadgen = lg / hz / (secs - 1)
print(f"server: {server:.2f} cores = {server / rps * 1e6:.1f} us/request; "
      f"loadgen: {loadgen:.2f} cores = {loadgen / rps * 1e6:.1f} us/request")
PY
