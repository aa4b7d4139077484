#!/usr/bin/env bash
# CPU and disk writes per event of a durable (SQLite) run: the ledger writer thread's and the
# whole process's CPU from /proc/PID/task/TID/stat and /proc/PID/stat, bytes written from
# /proc/PID/io, over a 6-second load of 64 connections with the README event:
#
#   tools/cpu-per-event.sh BINARY RULES [ENV=VALUE...]
#
# prints `rps=… writer_us_per_event=… process_us_per_event=… write_bytes_per_event=…`, then
# `threads_us_per_event=NAME:µs,…` (each kind of thread: the tokio workers, the writer, the
# checkpointer, …). LOAD=members posts a new member with every event (loadgen --sequence) instead
# of one member for all. Run two
# rules files (or binaries) alternately, a few times each: BENCHMARKS.md's webhook table was made
# so, with tests/fixtures/original-rules.yaml and the bench's webhook variant of it.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { echo "usage: tools/cpu-per-event.sh BINARY RULES [ENV=VALUE...]" >&2; exit 2; }
bin=$1 rules=$2
shift 2
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/fluxflow-target}"
cargo build --release --bin loadgen >/dev/null 2>&1
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$tmp"' EXIT
actor=user_42 sequence=()
if [ "${LOAD:-one}" = members ]; then actor='m{n}' sequence=(--sequence '{n}'); fi
printf '{"type":"transaction","source":"pos-system","actor_id":"%s","payload":{"amount":1500,"category":"food"}}' "$actor" >"$tmp/event.json"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
env "$@" "$bin" --addr "127.0.0.1:$port" --config "$rules" --ledger sqlite --data "$tmp/data" >"$tmp/log" 2>&1 &
pid=$!
for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/"$port") 2>/dev/null && break; sleep 0.05; done
tid=$(grep -l ledger-writer /proc/$pid/task/*/comm | head -1 | cut -d/ -f5)
out=$("$CARGO_TARGET_DIR/release/loadgen" --url "http://127.0.0.1:$port/v1/events" --connections 64 --duration 6s --body "$tmp/event.json" "${sequence[@]}" | tail -1)
writer=$(awk '{print $14 + $15}' "/proc/$pid/task/$tid/stat")
process=$(awk '{print $14 + $15}' "/proc/$pid/stat")
written=$(awk '/^write_bytes/ {print $2}' "/proc/$pid/io")
threads=$(for t in /proc/$pid/task/*; do printf '%s\t%s\n' "$(cat "$t/comm")" "$(awk '{print $14 + $15}' "$t/stat")"; done)
kill $pid; wait $pid 2>/dev/null || true
n=$(sed -n 's/.*status_2xx=\([0-9]*\).*/\1/p' <<<"$out")
rps=$(sed -n 's/.*rps=\([0-9.]*\).*/\1/p' <<<"$out")
tick=$(getconf CLK_TCK)
python3 -c "
import sys
t, n = int(sys.argv[1]), int(sys.argv[2])
print(f'rps={sys.argv[3]} writer_us_per_event={int(sys.argv[4])*1e6/t/n:.1f} process_us_per_event={int(sys.argv[5])*1e6/t/n:.1f} write_bytes_per_event={int(sys.argv[6])//n}', end=' ')
kinds = {}
for line in sys.argv[7].splitlines():
    name, ticks = line.split('\t')
    kinds[name] = kinds.get(name, 0) + int(ticks)
print('threads_us_per_event=' + ','.join(f'{k}:{v*1e6/t/n:.1f}' for k, v in sorted(kinds.items(), key=lambda kv: -kv[1]) if v))
" "$tick" "$n" "$rps" "$writer" "$process" "$written" "$threads"
