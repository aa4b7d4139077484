#!/usr/bin/env bash
# Two `fluxflow serve` nodes on one PostgreSQL database, one loadgen (32 connections) against each
# at once, for SECONDS (default 10); then checks rows written = 2xx answered and that the member's
# balance equals the sum of its entries. Every event is of the same member (the README event
# without an id), so both nodes contend for one member lock: the worst case for several nodes.
#
#   tools/bench-two-nodes.sh [SECONDS]        # PostgreSQL at 127.0.0.1:5432, user postgres
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/fluxflow-target}"
cargo build --release --bin fluxflow --bin loadgen >/dev/null 2>&1
bin=$CARGO_TARGET_DIR/release
tmp=$(mktemp -d)
db=ff_bench_two_$$
trap 'kill $(jobs -p) 2>/dev/null || true; psql -q -h 127.0.0.1 -U postgres -c "DROP DATABASE IF EXISTS $db" >/dev/null; rm -rf "$tmp"' EXIT
printf '%s' '{"type":"transaction","source":"pos-system","actor_id":"user_42","payload":{"amount":1500,"category":"food"}}' >"$tmp/event.json"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done; return 1; }
psql -q -h 127.0.0.1 -U postgres -c "CREATE DATABASE $db"
url=postgres://postgres@127.0.0.1:5432/$db
pa=$(free_port); pb=$(free_port)
"$bin/fluxflow" --addr "127.0.0.1:$pa" --config configs/rules.yaml --ledger "$url" >"$tmp/a.log" 2>&1 &
a=$!
wait_port "$pa"
"$bin/fluxflow" --addr "127.0.0.1:$pb" --config configs/rules.yaml --ledger "$url" >"$tmp/b.log" 2>&1 &
b=$!
wait_port "$pb"
"$bin/loadgen" --url "http://127.0.0.1:$pa/v1/events" --connections 32 --duration "${secs}s" --body "$tmp/event.json" | tail -1 >"$tmp/la" &
la=$!
"$bin/loadgen" --url "http://127.0.0.1:$pb/v1/events" --connections 32 --duration "${secs}s" --body "$tmp/event.json" | tail -1 >"$tmp/lb" &
lb=$!
wait $la $lb
echo "node A: $(cat "$tmp/la")"
echo "node B: $(cat "$tmp/lb")"
kill -TERM $a $b
wait $a $b 2>/dev/null || true
rows=$(psql -At -h 127.0.0.1 -U postgres "$db" -c 'select count(*) from events')
same=$(psql -At -h 127.0.0.1 -U postgres "$db" -c "select bool_and(b.balance = (select sum(points) from entries e where e.actor_id = b.actor_id)) from balances b")
answered=$(( $(sed -n 's/.*status_2xx=\([0-9]*\).*/\1/p' "$tmp/la") + $(sed -n 's/.*status_2xx=\([0-9]*\).*/\1/p' "$tmp/lb") ))
echo "two nodes: rows_written=$rows answered_2xx=$answered balances_equal_entries=$same"
if [ "$rows" != "$answered" ] || [ "$same" != t ]; then
  echo "bench-two-nodes: the books do not match the answers" >&2
  exit 1
fi
