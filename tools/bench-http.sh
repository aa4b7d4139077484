#!/usr/bin/env bash
# HTTP benchmark: FluxFlow against the bare-hyper baseline, in one run, same load.
#
#   tools/bench-http.sh [SECONDS] [CONNECTIONS] [ROUNDS]
#
# Builds release binaries (fluxflow, loadgen, and ../shared/tools/baseline-hyper), then for each
# target — baseline-hyper, fluxflow --ledger none, fluxflow --ledger sqlite — starts it on a free
# loopback port, posts the README event without an id (every request is a new event) with
# loadgen, and prints one line per target. For the SQLite ledger it also checks that the rows
# written equal the requests answered 200, and it reports each server's peak resident memory.
# With ROUNDS > 1 the three targets run again, in turn, that many times: on a shared machine one
# run varies by ±10%, and interleaved rounds show which differences are real.
#
# PostgreSQL: when `pg_isready -h 127.0.0.1` answers (or BENCH_POSTGRES names an admin URL), each
# round also runs `fluxflow --ledger postgres://…` on a fresh database and checks rows written =
# 2xx answers, as for SQLite (BENCH_POSTGRES=none skips it). BENCH_BEFORE=/path/to/an/older/fluxflow adds a run of that
# binary to each round on SQLite and on PostgreSQL, interleaved with the current one (to show a
# change does not slow either store).
# `--ledger none` also runs with an API key on every request (the access check's cost), and with
# BENCH_BEFORE the older binary too.
# BENCH_ONLY=ledgers skips the baseline and `--ledger none`. BENCH_ONLY=limits runs, instead of
# all that, SQLite with the example rules against SQLite with a per-member daily limit on the
# example scenario (`{per: actor, times: 1, period: day}`), each pair in alternating order per
# round, under two loads: a new member per request (loadgen --sequence: every event is awarded,
# reads the member's use and records one) and the durable figure's own load (one member: after
# the first award every event is refused, so it reads the use and writes no entry).
# BENCH_ONLY=webhooks compares the example rules with a webhook added to the example scenario
# whose receiver is down (every delivery refused and retried), on SQLite.
# BENCH_ONLY=member compares the example rules with a member-history scenario added (below).
# BENCH_BINARY=/path/to/a/fluxflow measures that binary instead of this tree's build (with
# BENCH_BEFORE: two older builds against each other).
# BENCH_RULES=FILE runs the SQLite and PostgreSQL targets on that rules file instead of the
# example rules (the README event is still what is posted).
#
# Last, each comparison is summed up as ratios of runs of the same round (next to each other in
# time, so that the machine's drift between rounds cancels): `summary: A / B: mean ± standard
# error, median, summed, and each round's ratio` (the ratio of p99s too where B is the ceiling).
# A comparison is a target against its `(before)` run, against baseline-hyper, or as the mode
# pairs them (webhooks, member, limits: against the example rules).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
conns=${2:-64}
rounds=${3:-1}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/fluxflow-target}"
baseline_src=../shared/tools/baseline-hyper
baseline_target=/var/tmp/baseline-target
bench_rules=${BENCH_RULES:-tests/fixtures/original-rules.yaml}

cargo build --release --bin fluxflow --bin loadgen >/dev/null 2>&1
if [ "${BENCH_ONLY:-}" != ledgers ] && [ ! -x "$baseline_target/release/baseline-hyper" ]; then
  work=$(mktemp -d)
  cp -r "$baseline_src/." "$work/" && chmod -R u+w "$work"
  (cd "$work" && CARGO_TARGET_DIR=$baseline_target cargo build --release >/dev/null 2>&1)
fi
bin=$CARGO_TARGET_DIR/release
# The binary measured: this tree's build, or BENCH_BINARY (another commit's, measured with this
# script's comparisons).
fluxflow=${BENCH_BINARY:-$bin/fluxflow}
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$tmp"' EXIT
printf '%s' '{"type":"transaction","source":"pos-system","actor_id":"user_42","payload":{"amount":1500,"category":"food"}}' >"$tmp/event.json"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done; return 1; }

run() { # name, port, pid, [loadgen options...]
  local name=$1 port=$2 pid=$3 line
  shift 3
  wait_port "$port"
  line=$("$bin/loadgen" --url "http://127.0.0.1:$port/v1/events" --connections "$conns" --duration "${secs}s" \
    --body "${body_file:-$tmp/event.json}" "$@" | tail -1)
  local rss; rss=$(awk '/VmHWM/ {print $2 / 1024 " MiB"}' "/proc/$pid/status")
  echo "$name: $line peak_rss=$rss"
  printf '%s\t%s\t%s\n' "${round:-1}" "$name" "$line" >>"$tmp/runs.tsv"
}

# Prints each comparison's per-round ratios (see the header). Arguments: `A=B` pairs of labels;
# with none, every label against its `(before)` and against baseline-hyper.
summarize() {
  python3 - "$tmp/runs.tsv" "$@" <<'PY'
import re, statistics, sys
runs = {}
for line in open(sys.argv[1]):
    rnd, label, out = line.rstrip("\n").split("\t")
    rps, p99 = (re.search(key + r"=([0-9.]+)", out) for key in ("rps", "p99_us"))
    if rps and p99:
        runs.setdefault(label, {})[rnd] = (float(rps.group(1)), float(p99.group(1)))
pairs = [tuple(p.split("=", 1)) for p in sys.argv[2:]]
if not pairs:
    for label in runs:
        if label + " (before)" in runs:
            pairs.append((label, label + " (before)"))
        if "baseline-hyper" in runs and label != "baseline-hyper" and not label.endswith("(before)"):
            pairs.append((label, "baseline-hyper"))
for a, b in pairs:
    rounds = sorted(set(runs.get(a, {})) & set(runs.get(b, {})), key=int)
    if not rounds:
        continue
    ratios = [runs[a][r][0] / runs[b][r][0] for r in rounds]
    error = statistics.stdev(ratios) / len(ratios) ** 0.5 if len(ratios) > 1 else float("nan")
    summed = sum(runs[a][r][0] for r in rounds) / sum(runs[b][r][0] for r in rounds)
    line = (f"summary: {a} / {b}: mean {statistics.mean(ratios):.3f} ± {error:.3f}, "
            f"median {statistics.median(ratios):.3f}, summed {summed:.3f} over {len(rounds)} rounds "
            f"({' '.join(f'{x:.2f}' for x in ratios)})")
    if b == "baseline-hyper":
        line += f"; p99 {statistics.mean(runs[a][r][1] / runs[b][r][1] for r in rounds):.2f}x the ceiling's"
    print(line)
PY
}

check_rows() { # label, output line, rows written
  local answered
  answered=$(sed -n 's/.*status_2xx=\([0-9]*\).*/\1/p' <<<"$2")
  echo "$1 check: rows_written=$3 answered_2xx=$answered $([ "$3" = "$answered" ] && echo equal || echo DIFFERENT)"
  if [ "$3" != "$answered" ] || ! grep -q ' errors=0 ' <<<"$2"; then
    echo "bench-http: the durable run lost or failed requests" >&2
    exit 1
  fi
}

sqlite_run() { # label, binary, data suffix
  local port pid out rows
  port=$(free_port)
  "$2" --addr "127.0.0.1:$port" --config "$bench_rules" --ledger sqlite --data "$tmp/data$3" >"$tmp/sqlite.log" 2>&1 &
  pid=$!
  out=$(run "$1" "$port" $pid)
  echo "$out"
  kill -TERM $pid; wait $pid 2>/dev/null || true
  rows=$(python3 -c "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('select count(*) from events').fetchone()[0])" "$tmp/data$3/fluxflow.db")
  check_rows sqlite "$out" "$rows"
}

pg_admin=${BENCH_POSTGRES:-}
if [ -z "$pg_admin" ] && pg_isready -q -h 127.0.0.1 2>/dev/null; then
  pg_admin=postgres://postgres@127.0.0.1:5432/postgres
fi
[ "$pg_admin" = none ] && pg_admin=
postgres_run() { # round, [label, binary]
  local db="ff_bench_$$_$1${3:+_before}" label=${2:-fluxflow --ledger postgres} binary=${3:-$fluxflow} port pid out rows
  psql -q "$pg_admin" -c "CREATE DATABASE $db" >/dev/null
  port=$(free_port)
  "$binary" --addr "127.0.0.1:$port" --config "$bench_rules" --ledger "${pg_admin%/*}/$db" >"$tmp/pg.log" 2>&1 &
  pid=$!
  out=$(run "$label" "$port" $pid)
  echo "$out"
  kill -TERM $pid; wait $pid 2>/dev/null || true
  rows=$(psql -At "${pg_admin%/*}/$db" -c 'select count(*) from events')
  psql -q "$pg_admin" -c "DROP DATABASE $db" >/dev/null
  check_rows postgres "$out" "$rows"
}

limits_run() { # label, rules file, data suffix, [loadgen options...]
  local label=$1 rules=$2 data="$tmp/data$3" port pid out rows uses
  shift 3
  port=$(free_port)
  "$fluxflow" --addr "127.0.0.1:$port" --config "$rules" --ledger sqlite --data "$data" >"$tmp/sqlite.log" 2>&1 &
  pid=$!
  out=$(run "$label" "$port" $pid "$@")
  echo "$out"
  kill -TERM $pid; wait $pid 2>/dev/null || true
  rows=$(python3 -c "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('select count(*) from events').fetchone()[0])" "$data/fluxflow.db")
  check_rows sqlite "$out" "$rows"
  uses=$(python3 -c "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('select count(*), (select count(*) from entries) from limit_uses').fetchone())" "$data/fluxflow.db")
  echo "$label: (uses recorded, entries written) = $uses"
}

# BENCH_ONLY=member: the example rules against the same with a member-history scenario on the
# README event's type (`count('transaction', 'month') >= 1`, always true): every event is then
# evaluated inside the ledger's transaction and its history indexed. One member, as the durable
# figure's load; alternating order per round.
if [ "${BENCH_ONLY:-}" = member ]; then
  cp tests/fixtures/original-rules.yaml "$tmp/member.yaml"
  cat >>"$tmp/member.yaml" <<'YAML'
  - id: sc_regular
    enabled: true
    event_types: [transaction]
    children:
      - condition:
          id: cond_bought_this_month
          expression: "count('transaction', 'month') >= 1"
          children:
            - action: {id: act_regular, type: reward_points, params: {operation: award, points: 1}}
YAML
  "$fluxflow" validate "$tmp/member.yaml" >/dev/null
  for round in $(seq "$rounds"); do
    echo "# round $round"
    if [ $((round % 2)) -eq 1 ]; then
      limits_run "example rules" tests/fixtures/original-rules.yaml "$round-plain"
      limits_run "with member history" "$tmp/member.yaml" "$round-member"
    else
      limits_run "with member history" "$tmp/member.yaml" "$round-member"
      limits_run "example rules" tests/fixtures/original-rules.yaml "$round-plain"
    fi
    for data in "$tmp/data$round-plain" "$tmp/data$round-member"; do
      python3 -c "import os,sqlite3,sys; d=sys.argv[1]; n=sqlite3.connect(d+'/fluxflow.db').execute('select count(*) from events').fetchone()[0]; s=sum(os.path.getsize(os.path.join(d,f)) for f in os.listdir(d)); print(f'{os.path.basename(d)}: {s/n:.0f} bytes per event on disk ({n} events, WAL included)')" "$data"
    done
  done
  summarize "with member history=example rules"
  exit 0
fi

if [ "${BENCH_ONLY:-}" = webhooks ]; then
  # A webhook on every event, its receiver down (a loopback port with nothing listening: every
  # attempt is refused and retried), against the plain example, SQLite, alternating order.
  dead_port=$(free_port)
  sed 's/^                        expiry_days: 90$/&\n                  - action: {id: act_tell, type: webhook_notify, params: {url: "http:\/\/127.0.0.1:'"$dead_port"'\/hooks", max_attempts: 100}}/' \
    tests/fixtures/original-rules.yaml >"$tmp/webhook.yaml"
  grep -q 'webhook_notify' "$tmp/webhook.yaml" || { echo "bench-http: could not add the webhook" >&2; exit 1; }
  "$fluxflow" validate "$tmp/webhook.yaml" >/dev/null
  for round in $(seq "$rounds"); do
    echo "# round $round"
    if [ $((round % 2)) -eq 1 ]; then
      limits_run "example rules" tests/fixtures/original-rules.yaml "$round-plain"
      limits_run "with a webhook, receiver down" "$tmp/webhook.yaml" "$round-webhook"
    else
      limits_run "with a webhook, receiver down" "$tmp/webhook.yaml" "$round-webhook"
      limits_run "example rules" tests/fixtures/original-rules.yaml "$round-plain"
    fi
    python3 -c "import sqlite3,sys; print('outbox rows:', sqlite3.connect(sys.argv[1]).execute('select count(*), sum(attempts) from webhook_deliveries').fetchone())" "$tmp/data$round-webhook/fluxflow.db"
  done
  summarize "with a webhook, receiver down=example rules"
  exit 0
fi

if [ "${BENCH_ONLY:-}" = limits ]; then
  # A new member per request: every event is awarded, so each reads and records a use.
  printf '%s' '{"type":"transaction","source":"pos-system","actor_id":"member_{n}","payload":{"amount":1500,"category":"food"}}' >"$tmp/member-event.json"
  sed 's/^  - id: sc_high_value_food$/&\n    limits: [{per: actor, times: 1, period: day}]/' tests/fixtures/original-rules.yaml >"$tmp/limited.yaml"
  grep -q 'limits:' "$tmp/limited.yaml" || { echo "bench-http: could not add the limit" >&2; exit 1; }
  plain=tests/fixtures/original-rules.yaml
  for round in $(seq "$rounds"); do
    echo "# round $round"
    runs=("new members, example rules|$plain|-members" "new members, daily limit|$tmp/limited.yaml|-members-limited"
          "one member, example rules|$plain|-one" "one member, daily limit|$tmp/limited.yaml|-one-limited")
    # Alternate which of each pair goes first.
    if [ $((round % 2)) -eq 0 ]; then runs=("${runs[1]}" "${runs[0]}" "${runs[3]}" "${runs[2]}"); fi
    for spec in "${runs[@]}"; do
      IFS='|' read -r label rules suffix <<<"$spec"
      case $label in
        new*) body_file="$tmp/member-event.json" limits_run "$label" "$rules" "$round$suffix" --sequence '{n}' ;;
        *) limits_run "$label" "$rules" "$round$suffix" ;;
      esac
    done
  done
  summarize "new members, daily limit=new members, example rules" "one member, daily limit=one member, example rules"
  exit 0
fi

for round in $(seq "$rounds"); do
  [ "$rounds" -gt 1 ] && echo "# round $round"
  if [ "${BENCH_ONLY:-}" != ledgers ]; then
    port=$(free_port)
    "$baseline_target/release/baseline-hyper" "127.0.0.1:$port" >/dev/null 2>&1 &
    run baseline-hyper "$port" $!
    kill $! 2>/dev/null; wait $! 2>/dev/null || true

    none_runs=("fluxflow --ledger none|$fluxflow" "fluxflow --ledger none, with an API key|$fluxflow|key")
    if [ -n "${BENCH_BEFORE:-}" ]; then
      none_runs+=("fluxflow --ledger none (before)|$BENCH_BEFORE")
      # Alternate which binary goes first.
      [ $((round % 2)) -eq 0 ] && none_runs=("${none_runs[2]}" "${none_runs[0]}" "${none_runs[1]}")
    fi
    for spec in "${none_runs[@]}"; do
      IFS='|' read -r label binary keyed <<<"$spec"
      key_args=() auth=()
      if [ -n "$keyed" ]; then
        # Every request carries a key with the scope: the check hashes it and looks it up.
        rm -rf "$tmp/keys"
        key=$("$fluxflow" keys add bench --scopes events:write --data "$tmp/keys" | tail -1)
        key_args=(--data "$tmp/keys") auth=(--header "Authorization: Bearer $key")
      fi
      port=$(free_port)
      "$binary" --addr "127.0.0.1:$port" --config tests/fixtures/original-rules.yaml --ledger none "${key_args[@]}" >"$tmp/none.log" 2>&1 &
      run "$label" "$port" $! "${auth[@]}"
      kill $! 2>/dev/null; wait $! 2>/dev/null || true
    done
  fi

  # With BENCH_BEFORE, the two SQLite runs swap places every round (neither always goes first).
  if [ -n "${BENCH_BEFORE:-}" ] && [ $((round % 2)) -eq 0 ]; then
    sqlite_run "fluxflow --ledger sqlite (before)" "$BENCH_BEFORE" "$round-before"
    sqlite_run "fluxflow --ledger sqlite" "$fluxflow" "$round"
  else
    sqlite_run "fluxflow --ledger sqlite" "$fluxflow" "$round"
    if [ -n "${BENCH_BEFORE:-}" ]; then
      sqlite_run "fluxflow --ledger sqlite (before)" "$BENCH_BEFORE" "$round-before"
    fi
  fi
  if [ -n "$pg_admin" ]; then
    # With BENCH_BEFORE, PostgreSQL runs both binaries too, alternating which goes first.
    if [ -n "${BENCH_BEFORE:-}" ] && [ $((round % 2)) -eq 0 ]; then
      postgres_run "$round" "fluxflow --ledger postgres (before)" "$BENCH_BEFORE"
      postgres_run "$round"
    else
      postgres_run "$round"
      if [ -n "${BENCH_BEFORE:-}" ]; then
        postgres_run "$round" "fluxflow --ledger postgres (before)" "$BENCH_BEFORE"
      fi
    fi
  fi
done
summarize
