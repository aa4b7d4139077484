#!/usr/bin/env python3
"""Layouts of the SQLite ledger's award path compared with the sqlite3 shell, no FluxFlow in it.

    tools/sqlite-layouts.py [ROUNDS] [EVENTS]

Each event writes what an award writes (its `events` row with a 349-byte result, one entry, the
member's balance) in transactions of 33 events, as the writer's groups are under the README
load. Layouts: `v13` (entries with `entries_by_actor` and `entries_by_event`), `v14` (without
`entries_by_event`, the schema now), `clustered` (entries WITHOUT ROWID keyed by member and id,
no index: tried for issue 18, not kept). Loads: one member; a member of 100,000 per event with
increasing event ids (generated ones are UUID v7); the same with random ids (a client's). Each
round runs every layout once, in turn, and prints the CPU (user + system) the shell took and
the WAL bytes per event (checkpoints off, so the WAL holds every page each commit wrote).
BENCHMARKS.md quotes it (issue 18, entries). Needs the sqlite3 shell (Debian's `sqlite3`).
"""
import os
import resource
import subprocess
import sys
import tempfile

GROUP = 33
LAYOUTS = {
    "v13": "CREATE TABLE entries (entry_id INTEGER PRIMARY KEY, {cols}); "
    "CREATE INDEX entries_by_actor ON entries (actor_id, entry_id); CREATE INDEX entries_by_event ON entries (event_id);",
    "v14": "CREATE TABLE entries (entry_id INTEGER PRIMARY KEY, {cols}); "
    "CREATE INDEX entries_by_actor ON entries (actor_id, entry_id);",
    "clustered": "CREATE TABLE entries (entry_id INTEGER NOT NULL, {cols}, PRIMARY KEY (actor_id, entry_id)) WITHOUT ROWID;",
}
COLUMNS = ("actor_id TEXT NOT NULL, event_id TEXT NOT NULL, action_id TEXT NOT NULL, scenario_id TEXT NOT NULL, "
           "points INTEGER NOT NULL, kind TEXT NOT NULL, reason TEXT, created_at INTEGER NOT NULL, expires_at INTEGER, "
           "dated_at INTEGER, available_at INTEGER, reverses TEXT")
LOADS = {
    "one member": ("'user_42'", "printf('%016x-0000-7000-8000-000000000000', value)"),
    "100k members, increasing ids": ("'user_' || ((value * 7919) % 100000)", "printf('%016x-0000-7000-8000-000000000000', value)"),
    "100k members, random ids": ("'user_' || ((value * 7919) % 100000)", "lower(hex(randomblob(18)))"),
}


def script(layout, actor, event_id, events):
    out = ["PRAGMA journal_mode = WAL; PRAGMA synchronous = OFF; PRAGMA wal_autocheckpoint = 0; PRAGMA cache_size = -8192;",
           "CREATE TABLE events (event_id TEXT PRIMARY KEY, fingerprint BLOB NOT NULL, actor_id TEXT, result TEXT NOT NULL, "
           "processed_at INTEGER NOT NULL, event_type TEXT, occurred_at INTEGER, payload TEXT) WITHOUT ROWID;",
           "CREATE TABLE balances (actor_id TEXT PRIMARY KEY, balance INTEGER NOT NULL, updated_at INTEGER NOT NULL) WITHOUT ROWID;",
           LAYOUTS[layout].format(cols=COLUMNS)]
    id_column = "entry_id, " if layout == "clustered" else ""
    id_value = "value, " if layout == "clustered" else ""
    for first in range(0, events, GROUP):
        series = f"generate_series({first}, {first + GROUP - 1})"
        out += [
            "BEGIN;",
            f"CREATE TEMP TABLE ids AS SELECT value, {event_id} AS id FROM {series};",
            f"INSERT INTO events SELECT id, randomblob(32), {actor}, printf('%.349c', 'x'), value, 'transaction', value, "
            "'{\"amount\":1500,\"category\":\"food\"}' FROM ids;",
            f"INSERT INTO entries ({id_column}actor_id, event_id, action_id, scenario_id, points, kind, reason, created_at, "
            f"expires_at, dated_at) SELECT {id_value}{actor}, id, 'act_bonus_points', 'sc_high_value_food', 75, 'award', "
            "'High-value food purchase bonus', value, value + 999, value FROM ids;",
            f"INSERT INTO balances SELECT {actor}, 75, value FROM ids WHERE true "
            "ON CONFLICT (actor_id) DO UPDATE SET balance = balance + excluded.balance;",
            "DROP TABLE ids;",
            "COMMIT;",
        ]
    # Keeps the shell's connection open until the WAL is measured: closing it would checkpoint.
    out.append(".shell ls -l {db}-wal > {db}.walsize")
    return "\n".join(out)


def run(layout, load, events, tmp):
    db = os.path.join(tmp, f"{layout}.db")
    for suffix in ("", "-wal", "-shm", ".walsize"):
        if os.path.exists(db + suffix):
            os.remove(db + suffix)
    actor, event_id = LOADS[load]
    text = script(layout, actor, event_id, events).replace("{db}", db)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(["sqlite3", db], input=text.encode(), stdout=subprocess.DEVNULL, check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    wal = int(open(db + ".walsize").read().split()[4])
    return cpu, wal / events


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    events = int(sys.argv[2]) if len(sys.argv) > 2 else 150_000
    with tempfile.TemporaryDirectory() as tmp:
        for load in LOADS:
            totals = {layout: 0.0 for layout in LAYOUTS}
            for round_ in range(rounds):
                for layout in LAYOUTS:
                    cpu, wal = run(layout, load, events, tmp)
                    totals[layout] += cpu
                    print(f"{load}, round {round_ + 1}, {layout}: cpu {cpu:.2f} s, wal {wal:.0f} bytes per event", flush=True)
            base = totals["v13"]
            print(f"summary {load}: " + ", ".join(f"{k} {v / base:.3f}" for k, v in totals.items()) + " of v13's CPU")


if __name__ == "__main__":
    main()
