//! The embedded ledger: one SQLite file under `--data`, WAL with `synchronous=FULL`, so a
//! commit is on disk (fsync'd) before any answer depends on it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rusqlite::{CachedStatement, Connection, OpenFlags, OptionalExtension, Transaction, params};
use serde::{Deserialize, Serialize};

use super::checkpointer::Checkpointer;
use super::lots::{self, PointsState};
use super::member::{ALL_DAYS, CountEnd, HOURS_PER_DAY, MICROS_PER_DAY, MICROS_PER_HOUR, SumKey, all_time, utc_month};
use super::operations::{self, NewOperation, OperationOutcome, OperationRequest, OperationTx, StoredOperation};
use super::posting::post;
use super::tx::NewUse;
use super::tx::{Book, LedgerTx, Lot, NewEntry, NewEvent, NewLot, Original, Reversible, StoredEvent};
use super::versions::{self, NewVersion, RulesVersion, RulesVersions, VersionSource};
use super::{
    Applied, Entry, EntryKind, EventWrite, Fingerprint, HistoryPage, LedgerError, LedgerStore, NewJob, PendingEvent,
    broken, now_micros, rfc3339,
};
use crate::event::Event;
use crate::graph::limits::{BudgetKey, Counter, Usage};
use crate::result::{EventResult, EventState, Job, JobEvent};

/// The database file's name inside the data directory.
pub const FILE_NAME: &str = "fluxflow.db";
/// Read connections kept open for lookups and the actor endpoints.
const READERS: usize = 4;
/// The schema this code writes (`PRAGMA user_version`): the number of the last migration.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// The numbered migrations, oldest first: migration N takes a ledger from version N-1 to N and
/// runs in one transaction with the `user_version` it sets. Never edit one that has shipped;
/// add the next.
const MIGRATIONS: &[&str] = &[
    V1_SCHEMA,
    V2_EVENT_HISTORY,
    V3_LIMITS,
    V4_OPERATIONS,
    V5_MEMBER_HISTORY,
    V6_LOTS,
    V7_MEMBER_SUMS,
    V8_STREAM,
    V9_RULES_VERSIONS,
    V10_WEBHOOK_OUTBOX,
    V11_APPENDED_OUTBOX,
    V12_RUNNING_COUNTS,
    V13_RUNNING_SUMS,
    V14_NO_ENTRIES_BY_EVENT,
];

/// Prepared statements kept per connection (see `configure`).
const STATEMENT_CACHE: usize = 128;

/// Version 1: the first release's schema.
const V1_SCHEMA: &str = "
-- Keyed by the event id alone (no separate rowid tree): one B-tree to write per event.
CREATE TABLE events (
    event_id     TEXT PRIMARY KEY,
    fingerprint  BLOB NOT NULL,
    actor_id     TEXT,
    result       TEXT NOT NULL,
    processed_at INTEGER NOT NULL
) WITHOUT ROWID;
-- Append-only: one row per executed points action. Room for the roadmap: `kind` will also say
-- expire, reversal and release; lots and their remaining points go in a table of their own.
-- entry_id is the rowid: increasing, since entries are never deleted (no AUTOINCREMENT, which
-- would write sqlite_sequence at every commit).
CREATE TABLE entries (
    entry_id    INTEGER PRIMARY KEY,
    actor_id    TEXT NOT NULL,
    event_id    TEXT NOT NULL,
    action_id   TEXT NOT NULL,
    scenario_id TEXT NOT NULL,
    points      INTEGER NOT NULL,
    kind        TEXT NOT NULL,
    reason      TEXT,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER
);
CREATE INDEX entries_by_actor ON entries (actor_id, entry_id);
CREATE INDEX entries_by_event ON entries (event_id);
-- Derived from entries, kept in the same transaction.
CREATE TABLE balances (
    actor_id   TEXT PRIMARY KEY,
    balance    INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE jobs (
    job_id     TEXT PRIMARY KEY,
    created_at INTEGER NOT NULL,
    total      INTEGER NOT NULL,
    queued     INTEGER NOT NULL
);
CREATE TABLE job_events (
    job_id   TEXT NOT NULL,
    idx      INTEGER NOT NULL,
    event_id TEXT NOT NULL,
    event    TEXT NOT NULL,
    state    TEXT NOT NULL,
    PRIMARY KEY (job_id, idx)
);
CREATE INDEX job_events_queued ON job_events (state) WHERE state = 'queued';
-- One row, rewritten to check that the disk takes writes again after a failure.
CREATE TABLE health (id INTEGER PRIMARY KEY, checked_at INTEGER NOT NULL);
";

/// Version 2: each event's type, event time (µs) and payload, for member functions and
/// reversals. Events stored before it keep NULL there (they carry no history).
const V2_EVENT_HISTORY: &str = "
ALTER TABLE events ADD COLUMN event_type TEXT;
ALTER TABLE events ADD COLUMN occurred_at INTEGER;
ALTER TABLE events ADD COLUMN payload TEXT;
";

/// Version 3: what scenarios with limits did. Per member, one row per event time (µs) at which a
/// scenario with `per: actor` limits acted (read by member and event-time window; no event id,
/// so a use is a small row); per campaign budget, one counter per calendar period (so a budget is
/// one row read however many members spent it).
const V3_LIMITS: &str = "
CREATE TABLE limit_uses (
    scenario_id TEXT NOT NULL,
    actor_id    TEXT NOT NULL,
    occurred_at INTEGER NOT NULL,
    times       INTEGER NOT NULL,
    points      INTEGER NOT NULL,
    PRIMARY KEY (scenario_id, actor_id, occurred_at)
) WITHOUT ROWID;
CREATE TABLE limit_budgets (
    scenario_id  TEXT NOT NULL,
    period       TEXT NOT NULL,
    period_start INTEGER NOT NULL,
    times        INTEGER NOT NULL,
    points       INTEGER NOT NULL,
    PRIMARY KEY (scenario_id, period, period_start)
) WITHOUT ROWID;
";

/// Version 4: operations on a member's points (redeem, adjust, cancel), by member and id, with
/// their answers for idempotent replays.
const V4_OPERATIONS: &str = "
CREATE TABLE operations (
    actor_id     TEXT NOT NULL,
    request_id   TEXT NOT NULL,
    fingerprint  BLOB NOT NULL,
    kind         TEXT NOT NULL,
    points       INTEGER NOT NULL,
    answer       TEXT NOT NULL,
    applied_at   INTEGER NOT NULL,
    cancelled_by TEXT,
    PRIMARY KEY (actor_id, request_id)
) WITHOUT ROWID;
";

/// Version 5: every event with an actor is stored with its actor; the events of the types whose
/// history the rules read are indexed by member, type and time for member functions. Which types
/// are indexed is kept in `member_history_types`; a type the rules start reading is indexed back
/// over the stored events first ([`LedgerStore::track_history`]). `member_days` counts each
/// member's indexed events per UTC day (event time), and in all (`day` = [`ALL_DAYS`]);
/// `member_hours` per UTC hour: a count over a month, a rolling window or a lifetime reads a few
/// rows however long the history is. (Version 12 makes both running totals.)
const V5_MEMBER_HISTORY: &str = "
ALTER TABLE events ADD COLUMN member_type TEXT;
CREATE INDEX events_by_member ON events (actor_id, member_type, occurred_at) WHERE member_type IS NOT NULL;
CREATE TABLE member_history_types (member_type TEXT PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE member_days (
    actor_id    TEXT NOT NULL,
    member_type TEXT NOT NULL,
    day         INTEGER NOT NULL,
    events      INTEGER NOT NULL,
    PRIMARY KEY (actor_id, member_type, day)
) WITHOUT ROWID;
CREATE TABLE member_hours (
    actor_id    TEXT NOT NULL,
    member_type TEXT NOT NULL,
    hour        INTEGER NOT NULL,
    events      INTEGER NOT NULL,
    PRIMARY KEY (actor_id, member_type, hour)
) WITHOUT ROWID;
";

/// Version 6: points as lots ([`super::lots`]). Entries get the time they count from
/// (`dated_at`: event time; entries before it count from when they were written), the lot's
/// `available_at` and the event a reversal `reverses`; a member's book gets its `debt` and the soonest expiry of its open lots. Only
/// awards with pending days or an expiry are lots (what was granted is on the award's entry);
/// `lot_spent` keeps what each redemption took from each lot, for its cancellation. Points
/// awarded before this version are plain points: they stay spendable and never expire (their
/// recorded `expires_at` was never enforced).
const V6_LOTS: &str = "
ALTER TABLE entries ADD COLUMN dated_at INTEGER;
UPDATE entries SET dated_at = created_at;
ALTER TABLE entries ADD COLUMN available_at INTEGER;
ALTER TABLE entries ADD COLUMN reverses TEXT;
-- Only reversals are in it: other entries pay nothing for it.
CREATE INDEX entries_reversing ON entries (reverses, actor_id) WHERE reverses IS NOT NULL;
ALTER TABLE balances ADD COLUMN debt INTEGER NOT NULL DEFAULT 0;
ALTER TABLE balances ADD COLUMN next_expiry INTEGER;
CREATE TABLE lots (
    lot_id       INTEGER PRIMARY KEY,
    actor_id     TEXT NOT NULL,
    source_id    TEXT NOT NULL,
    remaining    INTEGER NOT NULL,
    available_at INTEGER NOT NULL,
    expires_at   INTEGER
);
-- Open lots in spending order: the soonest expiry first, never-expiring (NULL) last.
CREATE INDEX open_lots ON lots (actor_id, coalesce(expires_at, 9223372036854775807), lot_id) WHERE remaining > 0;
CREATE TABLE lot_spent (
    actor_id  TEXT NOT NULL,
    source_id TEXT NOT NULL,
    lot_id    INTEGER NOT NULL,
    points    INTEGER NOT NULL,
    PRIMARY KEY (actor_id, source_id, lot_id)
) WITHOUT ROWID;
";

/// Version 7: counters of the sums the rules read (`sum(type, path, period)`), per member, type
/// and path, per UTC day and in all (`day` = [`ALL_DAYS`]) and per UTC hour, as counts have
/// them; which sums are kept is in `member_sum_keys` (the path as written).
const V7_MEMBER_SUMS: &str = "
CREATE TABLE member_sum_keys (
    member_type TEXT NOT NULL,
    path        TEXT NOT NULL,
    PRIMARY KEY (member_type, path)
) WITHOUT ROWID;
CREATE TABLE member_day_sums (
    actor_id    TEXT NOT NULL,
    member_type TEXT NOT NULL,
    path        TEXT NOT NULL,
    day         INTEGER NOT NULL,
    total       REAL NOT NULL,
    PRIMARY KEY (actor_id, member_type, path, day)
) WITHOUT ROWID;
CREATE TABLE member_hour_sums (
    actor_id    TEXT NOT NULL,
    member_type TEXT NOT NULL,
    path        TEXT NOT NULL,
    hour        INTEGER NOT NULL,
    total       REAL NOT NULL,
    PRIMARY KEY (actor_id, member_type, path, hour)
) WITHOUT ROWID;
";

/// Version 8: per event-stream subject (one per actor), the highest sequence applied
/// ([`super::StreamPosition`]).
const V8_STREAM: &str = "
CREATE TABLE stream_positions (
    subject  TEXT PRIMARY KEY,
    sequence INTEGER NOT NULL
) WITHOUT ROWID;
";

/// Version 9: rules versions ([`super::versions`]).
const V9_RULES_VERSIONS: &str = "
CREATE TABLE rules_versions (
    rules_version INTEGER PRIMARY KEY,
    hash          TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    author        TEXT,
    source        TEXT NOT NULL,
    yaml          TEXT NOT NULL
);
";

/// Version 10: the webhook outbox ([`crate::webhooks`]).
const V10_WEBHOOK_OUTBOX: &str = "
-- Keyed by the delivery id alone (no rowid tree). The event's result is not copied here: a
-- delivery's body joins it from `events` when it is sent.
CREATE TABLE webhook_deliveries (
    delivery_id     TEXT PRIMARY KEY,
    event_id        TEXT NOT NULL,
    action_id       TEXT NOT NULL,
    target          TEXT NOT NULL,
    event           TEXT NOT NULL,
    state           TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    lease_until     INTEGER,
    last_status     INTEGER,
    last_error      TEXT,
    created_at      INTEGER NOT NULL,
    finished_at     INTEGER
) WITHOUT ROWID;
CREATE INDEX due_deliveries ON webhook_deliveries (next_attempt_at) WHERE state = 'pending';
";

/// Version 11: the outbox as the event's transaction can write it most cheaply. A delivery is
/// appended (rowid order, no secondary index) with no state; the delivery worker, in its own
/// transaction, takes new rows in that order and only then gives them a state, which puts them
/// in the index of due deliveries. The delivery id, `<event_id>:<action_id>`, is not stored
/// twice (retrying a failed one finds it by an index of the failed ones), nor is the target, nor
/// what `events` keeps of the event. (Measured: the writer's cost of a webhook per event from
/// about 10 to 4–7 µs, its bytes written from 3.7 to 1.0 KB; BENCHMARKS.md.)
const V11_APPENDED_OUTBOX: &str = "
-- Targets are written once (when rules that name them load), each delivery names its own.
CREATE TABLE webhook_targets (
    target_id       INTEGER PRIMARY KEY,
    target          TEXT NOT NULL UNIQUE
);
CREATE TABLE webhook_outbox (
    seq             INTEGER PRIMARY KEY,
    event_id        TEXT NOT NULL,
    action_id       TEXT NOT NULL,
    target_id       INTEGER NOT NULL,
    -- What of the event as sent `events` does not keep (its source, its `occurred_at` as written,
    -- its meta), as JSON: the rest is read from its `events` row when the delivery is sent.
    sent            TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    -- NULL: not yet taken by the delivery worker (pending, due since created_at).
    state           TEXT,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER,
    lease_until     INTEGER,
    last_status     INTEGER,
    last_error      TEXT,
    finished_at     INTEGER
);
INSERT INTO webhook_targets (target) SELECT DISTINCT target FROM webhook_deliveries;
INSERT INTO webhook_outbox (event_id, action_id, target_id, sent, created_at, state, attempts, next_attempt_at,
    lease_until, last_status, last_error, finished_at)
    SELECT d.event_id, d.action_id, t.target_id,
    json_object('source', d.event -> '$.source', 'occurred_at', d.event -> '$.occurred_at', 'meta', d.event -> '$.meta'),
    d.created_at, d.state, d.attempts, d.next_attempt_at,
    d.lease_until, d.last_status, d.last_error, d.finished_at
    FROM webhook_deliveries d JOIN webhook_targets t ON t.target = d.target ORDER BY d.created_at, d.delivery_id;
DROP TABLE webhook_deliveries;
ALTER TABLE webhook_outbox RENAME TO webhook_deliveries;
CREATE INDEX due_deliveries ON webhook_deliveries (next_attempt_at) WHERE state = 'pending';
CREATE INDEX failed_deliveries ON webhook_deliveries ((event_id || ':' || action_id)) WHERE state = 'failed';
";

/// Version 12: member counts as running totals. A `member_days` row holds the member's events of
/// the type up to the end of that day (all earlier days included); a `member_hours` row those of
/// its day up to the end of that hour. A count before a time is then three reads whatever the
/// window and however long the history: the last day before its day, the last hour of its day
/// through its hour, less the rest of its hour from the index ([`MEMBER_COUNT_BETWEEN`]). Measured: a 30-day count over
/// 100,000 earlier events read ~30 day rows and up to 24 hour rows, 2.2-2.5x the time for 10
/// events (BENCHMARKS.md). The price is paid by an event that arrives after later ones: it adds
/// one to every later day of its member (and to the later hours of its day).
const V12_RUNNING_COUNTS: &str = "
DELETE FROM member_days WHERE day = -9223372036854775808;
UPDATE member_days SET events = running.events FROM
    (SELECT actor_id, member_type, day, sum(events) OVER (PARTITION BY actor_id, member_type ORDER BY day) AS events
     FROM member_days) AS running
    WHERE member_days.actor_id = running.actor_id AND member_days.member_type = running.member_type
    AND member_days.day = running.day;
UPDATE member_hours SET events = running.events FROM
    (SELECT actor_id, member_type, hour, sum(events) OVER
        (PARTITION BY actor_id, member_type, (hour - ((hour % 24) + 24) % 24) / 24 ORDER BY hour) AS events
     FROM member_hours) AS running
    WHERE member_hours.actor_id = running.actor_id AND member_hours.member_type = running.member_type
    AND member_hours.hour = running.hour;
";

/// Version 13: member sums as running sums, bounded so that a sum adds no more rounding than
/// adding up a month's numbers would: a `member_day_sums` row holds the member's sum from the
/// start of the day's UTC month through that day, a `member_hour_sums` row that of its day
/// through that hour (the all-time row is unchanged). A sum over a window then reads one row per
/// month it touches and two per end, however long the history ([`sum_member`]). Measured: a
/// 30-day sum over 100,000 earlier events took 2.07x the time for 10 events when it read each
/// day and hour of the window, 1.2-1.4x so (BENCHMARKS.md). As for counts, an event that
/// arrives after later ones of its month (day) adds to each of their rows. The old counters are
/// dropped with the list of kept sums, so the rules' sums are counted back from the events when
/// they load ([`count_sum_back`], the one place that knows a UTC month).
const V13_RUNNING_SUMS: &str = "
DELETE FROM member_sum_keys;
DELETE FROM member_day_sums;
DELETE FROM member_hour_sums;
";

/// Version 14: no `entries_by_event`. A reversal's look at the event it reverses, its one
/// reader, names the member too, so it reads that member's entries through `entries_by_actor`
/// (as tier points do); every award then writes one B-tree fewer, and with ids a client chose
/// (not increasing, unlike the generated ones) it was a page of its own per event.
const V14_NO_ENTRIES_BY_EVENT: &str = "
DROP INDEX entries_by_event;
";

const QUEUE_DELIVERY: &str =
    "INSERT INTO webhook_deliveries (event_id, action_id, target_id, sent, created_at) VALUES (?1, ?2, ?3, ?4, ?5)";
/// A target's id, storing it first when it is new.
const ADD_TARGET: &str = "INSERT INTO webhook_targets (target) VALUES (?1) ON CONFLICT (target) DO NOTHING";
const TARGET_ID: &str = "SELECT target_id FROM webhook_targets WHERE target = ?1";

const ADVANCE_STREAM: &str = "INSERT INTO stream_positions (subject, sequence) VALUES (?1, ?2) \
     ON CONFLICT (subject) DO UPDATE SET sequence = max(sequence, excluded.sequence)";
const STREAM_POSITION: &str = "SELECT sequence FROM stream_positions WHERE subject = ?1";
const FIND_EVENT: &str = "SELECT fingerprint, result FROM events WHERE event_id = ?1";
/// A sum's all-time total (`day` = [`ALL_DAYS`], `?4`): `?5` added.
const ADD_TO_SUM_TOTAL: &str = "INSERT INTO member_day_sums (actor_id, member_type, path, day, total) \
     VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (actor_id, member_type, path, day) DO UPDATE SET total = total + excluded.total";
const SUM_TOTAL: &str =
    "SELECT total FROM member_day_sums WHERE actor_id = ?1 AND member_type = ?2 AND path = ?3 AND day = ?4";
/// Adds `?5` to day `?4`'s running sum ([`V13_RUNNING_SUMS`]); no row changed when the day has
/// none yet ([`ADD_DAY_SUM`]).
const BUMP_DAY_SUM: &str = "UPDATE member_day_sums SET total = total + ?5 \
     WHERE actor_id = ?1 AND member_type = ?2 AND path = ?3 AND day = ?4";
/// ... and to the later days' of its month, before day `?6` (a seek that finds none, unless the
/// event came late).
const BUMP_LATER_DAY_SUMS: &str = "UPDATE member_day_sums SET total = total + ?5 \
     WHERE actor_id = ?1 AND member_type = ?2 AND path = ?3 AND day > ?4 AND day < ?6";
/// A day's first row: its month's running sum before it (from day `?6`), plus `?5`.
const ADD_DAY_SUM: &str = "INSERT INTO member_day_sums (actor_id, member_type, path, day, total) VALUES (?1, ?2, ?3, ?4, ?5 + \
     coalesce((SELECT total FROM member_day_sums WHERE actor_id = ?1 AND member_type = ?2 AND path = ?3 \
     AND day >= ?6 AND day < ?4 ORDER BY day DESC LIMIT 1), 0))";
/// As [`BUMP_DAY_SUM`], for hour `?4`.
const BUMP_HOUR_SUM: &str = "UPDATE member_hour_sums SET total = total + ?5 \
     WHERE actor_id = ?1 AND member_type = ?2 AND path = ?3 AND hour = ?4";
/// As [`BUMP_LATER_DAY_SUMS`], for the later hours of its day (before hour `?6`).
const BUMP_LATER_HOUR_SUMS: &str = "UPDATE member_hour_sums SET total = total + ?5 \
     WHERE actor_id = ?1 AND member_type = ?2 AND path = ?3 AND hour > ?4 AND hour < ?6";
/// As [`ADD_DAY_SUM`], for an hour within its day (from hour `?6`).
const ADD_HOUR_SUM: &str = "INSERT INTO member_hour_sums (actor_id, member_type, path, hour, total) VALUES (?1, ?2, ?3, ?4, ?5 + \
     coalesce((SELECT total FROM member_hour_sums WHERE actor_id = ?1 AND member_type = ?2 AND path = ?3 \
     AND hour >= ?6 AND hour < ?4 ORDER BY hour DESC LIMIT 1), 0))";
/// A member's sum of path `?3` over events of type `?2` from the start of a time's UTC month to
/// that time, without the partial hour after it ([`CountEnd`]; its month's first day, then the
/// parameters numbered as given): the running sum of the last day of its month before its day,
/// plus that of the last hour of its day before `hours_before`.
macro_rules! member_sum_in_month_before {
    ($month:literal, $day:literal, $day_hour:literal, $hours_before:literal) => {
        concat!(
            "(coalesce((SELECT total FROM member_day_sums WHERE actor_id = ?1 AND member_type = ?2 AND path = ?3 \
             AND day >= ?",
            $month,
            " AND day < ?",
            $day,
            " ORDER BY day DESC LIMIT 1), 0) \
             + coalesce((SELECT total FROM member_hour_sums WHERE actor_id = ?1 AND member_type = ?2 AND path = ?3 \
             AND hour >= ?",
            $day_hour,
            " AND hour < ?",
            $hours_before,
            " ORDER BY hour DESC LIMIT 1), 0))"
        )
    };
}
/// The sum in its month before a window's end (parameters 8–11) less that before its start
/// (4–7); the whole months from the start's on are added by the caller ([`MONTH_SUM`]).
const MEMBER_SUM_BETWEEN: &str =
    concat!("SELECT ", member_sum_in_month_before!(8, 9, 10, 11), " - ", member_sum_in_month_before!(4, 5, 6, 7));
/// A whole month's sum (days `[?4, ?5)`): its last day's running sum.
const MONTH_SUM: &str = "SELECT total FROM member_day_sums WHERE actor_id = ?1 AND member_type = ?2 AND path = ?3 \
     AND day >= ?4 AND day < ?5 ORDER BY day DESC LIMIT 1";
const READ_BOOK: &str = "SELECT balance, debt, next_expiry FROM balances WHERE actor_id = ?1";
const OPEN_LOTS: &str = "SELECT lot_id, source_id, remaining, available_at, expires_at FROM lots \
     WHERE actor_id = ?1 AND remaining > 0 \
     ORDER BY coalesce(expires_at, 9223372036854775807), lot_id LIMIT ?2";
const PENDING_POINTS: &str =
    "SELECT coalesce(sum(remaining), 0) FROM lots WHERE actor_id = ?1 AND remaining > 0 AND available_at > ?2";
const INSERT_LOT: &str =
    "INSERT INTO lots (actor_id, source_id, remaining, available_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)";
const TAKE_FROM_LOT: &str = "UPDATE lots SET remaining = remaining - ?2 WHERE lot_id = ?1";
const SET_NEXT_EXPIRY: &str = "UPDATE balances SET next_expiry = (SELECT min(expires_at) FROM lots \
     WHERE actor_id = ?1 AND remaining > 0 AND expires_at IS NOT NULL) WHERE actor_id = ?1";
const LOWER_NEXT_EXPIRY: &str = "INSERT INTO balances (actor_id, balance, updated_at, next_expiry) VALUES (?1, 0, 0, ?2) \
     ON CONFLICT (actor_id) DO UPDATE SET next_expiry = excluded.next_expiry";
const SET_DEBT: &str = "INSERT INTO balances (actor_id, balance, updated_at, debt) VALUES (?1, 0, 0, ?2) \
     ON CONFLICT (actor_id) DO UPDATE SET debt = excluded.debt";
const TIER_POINTS: &str = "SELECT coalesce(sum(points), 0) FROM entries \
     WHERE actor_id = ?1 AND kind IN ('award', 'reverse') AND dated_at >= ?2 AND dated_at < ?3";
/// Events stored before schema 2 have no type or time: they cannot be reversed.
const ORIGINAL: &str = "SELECT actor_id, event_type, occurred_at, payload FROM events \
     WHERE event_id = ?1 AND event_type IS NOT NULL AND occurred_at IS NOT NULL";
const REVERSIBLE: &str = "SELECT coalesce(sum(CASE WHEN kind = 'award' THEN points END), 0), \
     coalesce(sum(CASE WHEN kind = 'expire' THEN -points END), 0), \
     (SELECT coalesce(sum(-points), 0) FROM entries WHERE reverses = ?2 AND actor_id = ?1) \
     FROM entries WHERE event_id = ?2 AND actor_id = ?1";
/// A scan of the members' books (no index to write at every award): once a minute.
const EXPIRED_MEMBERS: &str = "SELECT actor_id FROM balances WHERE next_expiry <= ?1 LIMIT ?2";
const ENTRIES_SUM: &str =
    "SELECT coalesce(sum(points), 0) FROM entries WHERE actor_id = ?1 AND coalesce(dated_at, created_at) <= ?2";
/// A member's events of type `?2` before a time ([`CountEnd`], its five parameters numbered as
/// given): the running total of the last day before its day, plus that of the last hour of its
/// day before `hours_before`, less the events of the index in `after`.
macro_rules! member_count_before {
    ($day:literal, $day_hour:literal, $hours_before:literal, $after_from:literal, $after_to:literal) => {
        concat!(
            "(coalesce((SELECT events FROM member_days WHERE actor_id = ?1 AND member_type = ?2 AND day < ?",
            $day,
            " ORDER BY day DESC LIMIT 1), 0) \
             + coalesce((SELECT events FROM member_hours WHERE actor_id = ?1 AND member_type = ?2 AND hour >= ?",
            $day_hour,
            " AND hour < ?",
            $hours_before,
            " ORDER BY hour DESC LIMIT 1), 0) \
             - (SELECT count(*) FROM events WHERE actor_id = ?1 AND member_type = ?2 AND occurred_at >= ?",
            $after_from,
            " AND occurred_at < ?",
            $after_to,
            "))"
        )
    };
}
/// A count over `[from, to)`: the count before `to` (parameters 8–12) less the count before
/// `from` (3–7).
const MEMBER_COUNT_BETWEEN: &str =
    concat!("SELECT ", member_count_before!(8, 9, 10, 11, 12), " - ", member_count_before!(3, 4, 5, 6, 7));
/// All of a member's events of a type: the newest day's running total.
const MEMBER_COUNT_ALL: &str =
    "SELECT events FROM member_days WHERE actor_id = ?1 AND member_type = ?2 ORDER BY day DESC LIMIT 1";
/// Counts an event on day `?3` into that day's running total; no row changed when the day has
/// none yet ([`ADD_DAY`]).
const BUMP_DAY: &str =
    "UPDATE member_days SET events = events + 1 WHERE actor_id = ?1 AND member_type = ?2 AND day = ?3";
/// ... and into every later day's (a seek that finds none, unless the event came late).
const BUMP_LATER_DAYS: &str = "UPDATE member_days SET events = events + 1 \
     WHERE actor_id = ?1 AND member_type = ?2 AND day > ?3";
/// A day's first row: the running total before it, plus the event.
const ADD_DAY: &str = "INSERT INTO member_days (actor_id, member_type, day, events) VALUES (?1, ?2, ?3, 1 + \
     coalesce((SELECT events FROM member_days WHERE actor_id = ?1 AND member_type = ?2 AND day < ?3 ORDER BY day DESC LIMIT 1), 0))";
/// As [`BUMP_DAY`], for hour `?3`.
const BUMP_HOUR: &str =
    "UPDATE member_hours SET events = events + 1 WHERE actor_id = ?1 AND member_type = ?2 AND hour = ?3";
/// As [`BUMP_LATER_DAYS`], for the hours of its day after hour `?3` (before hour `?4`).
const BUMP_LATER_HOURS: &str = "UPDATE member_hours SET events = events + 1 \
     WHERE actor_id = ?1 AND member_type = ?2 AND hour > ?3 AND hour < ?4";
/// An hour's first row: its day's running total before it (from hour `?4`), plus the event.
const ADD_HOUR: &str = "INSERT INTO member_hours (actor_id, member_type, hour, events) VALUES (?1, ?2, ?3, 1 + \
     coalesce((SELECT events FROM member_hours WHERE actor_id = ?1 AND member_type = ?2 AND hour >= ?4 AND hour < ?3 \
     ORDER BY hour DESC LIMIT 1), 0))";

const MEMBER_HISTORY: &str = "SELECT occurred_at, payload FROM events \
     WHERE actor_id = ?1 AND member_type = ?2 AND occurred_at >= ?3 AND occurred_at < ?4 ORDER BY occurred_at";
const MEMBER_TIMES: &str = "SELECT occurred_at FROM events \
     WHERE actor_id = ?1 AND member_type = ?2 AND occurred_at < ?3 ORDER BY occurred_at DESC LIMIT ?4";
const INSERT_EVENT: &str = "INSERT INTO events (event_id, fingerprint, actor_id, result, processed_at, event_type, \
     occurred_at, payload, member_type) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)";
const MARK_JOB_EVENT: &str = "UPDATE job_events SET state = ?1 WHERE job_id = ?2 AND idx = ?3";
const INSERT_ENTRY: &str = "INSERT INTO entries (actor_id, event_id, action_id, scenario_id, points, kind, reason, \
     created_at, expires_at, dated_at, available_at, reverses) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)";
const ADD_TO_BALANCE: &str = "INSERT INTO balances (actor_id, balance, updated_at) VALUES (?1, ?2, ?3)
     ON CONFLICT (actor_id) DO UPDATE SET balance = balance + excluded.balance, updated_at = excluded.updated_at";

const ACTOR_USAGE: &str = "SELECT coalesce(sum(times), 0), coalesce(sum(points), 0) FROM limit_uses \
     WHERE scenario_id = ?1 AND actor_id = ?2 AND occurred_at >= ?3 AND occurred_at < ?4";
const BUDGET_USAGE: &str =
    "SELECT times, points FROM limit_budgets WHERE scenario_id = ?1 AND period = ?2 AND period_start = ?3";
const ADD_USE: &str = "INSERT INTO limit_uses (scenario_id, actor_id, occurred_at, times, points) \
     VALUES (?1, ?2, ?3, 1, ?4) ON CONFLICT (scenario_id, actor_id, occurred_at) \
     DO UPDATE SET times = times + 1, points = points + excluded.points";
const ADD_TO_BUDGET: &str = "INSERT INTO limit_budgets (scenario_id, period, period_start, times, points) \
     VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (scenario_id, period, period_start) \
     DO UPDATE SET times = times + excluded.times, points = points + excluded.points";

/// A limit's use so far, with the statement of its kind of counter.
fn read_usage(statement: &mut CachedStatement<'_>, counter: &Counter<'_>) -> rusqlite::Result<Usage> {
    let row = |row: &rusqlite::Row<'_>| {
        let (times, points): (i64, i64) = (row.get(0)?, row.get(1)?);
        Ok(Usage { times: u64::try_from(times).unwrap_or(0), points: u64::try_from(points).unwrap_or(0) })
    };
    match counter {
        Counter::Actor(w) => statement.query_row(params![w.scenario_id, w.actor_id, w.from, w.to], row),
        Counter::Budget(b) => statement
            .query_row(params![b.scenario_id, b.period.to_string(), b.start], row)
            .optional()
            .map(Option::unwrap_or_default),
    }
}

/// The statement that reads a kind of counter.
fn usage_sql(counter: &Counter<'_>) -> &'static str {
    match counter {
        Counter::Actor(_) => ACTOR_USAGE,
        Counter::Budget(_) => BUDGET_USAGE,
    }
}

/// How many of a member's indexed events of a type have an event time in `[from, to)`: the
/// running counters' count before `to` less that before `from`; all time from the newest day.
fn count_member(conn: &Connection, actor_id: &str, event_type: &str, from: i64, to: i64) -> rusqlite::Result<u64> {
    let count: i64 = if all_time(from, to) {
        conn.prepare_cached(MEMBER_COUNT_ALL)?
            .query_row(params![actor_id, event_type], |r| r.get(0))
            .optional()?
            .unwrap_or_default()
    } else {
        let (from, to) = (CountEnd::of(from), CountEnd::of(to.max(from)));
        let values = params![
            actor_id,
            event_type,
            from.day,
            from.day_hour,
            from.hours_before,
            from.after.0,
            from.after.1,
            to.day,
            to.day_hour,
            to.hours_before,
            to.after.0,
            to.after.1
        ];
        conn.prepare_cached(MEMBER_COUNT_BETWEEN)?.query_row(values, |r| r.get(0))?
    };
    Ok(u64::try_from(count).unwrap_or(0))
}

/// A member's sum of a kept path over its events of a type with an event time in `[from, to)`:
/// all time from one row; a window as the sum in its end's month before it, less that in its
/// start's month before it, plus the whole months from its start's ([`V13_RUNNING_SUMS`]), the
/// partial hours after either time read from the stored payloads.
fn sum_member(conn: &Connection, actor_id: &str, key: &SumKey, from: i64, to: i64) -> rusqlite::Result<f64> {
    let (event_type, path) = (key.event_type.as_str(), key.key.as_str());
    if all_time(from, to) {
        let row =
            conn.prepare_cached(SUM_TOTAL)?.query_row(params![actor_id, event_type, path, ALL_DAYS], |r| r.get(0));
        return Ok(row.optional()?.unwrap_or_default());
    }
    let (start, end) = (CountEnd::of(from), CountEnd::of(to.max(from)));
    let (Some(mut month), Some(end_month)) = (utc_month(start.day), utc_month(end.day)) else {
        return sum_payloads(conn, actor_id, key, from, to);
    };
    let values = params![
        actor_id,
        event_type,
        path,
        month.0,
        start.day,
        start.day_hour,
        start.hours_before,
        end_month.0,
        end.day,
        end.day_hour,
        end.hours_before
    ];
    let mut total: f64 = conn.prepare_cached(MEMBER_SUM_BETWEEN)?.query_row(values, |r| r.get(0))?;
    let mut whole_month = conn.prepare_cached(MONTH_SUM)?;
    while month.0 < end_month.0 {
        let days = params![actor_id, event_type, path, month.0, month.1];
        total += whole_month.query_row(days, |r| r.get::<_, f64>(0)).optional()?.unwrap_or_default();
        let Some(next) = utc_month(month.1) else { return sum_payloads(conn, actor_id, key, from, to) };
        month = next;
    }
    Ok(total - sum_payloads(conn, actor_id, key, end.after.0, end.after.1)?
        + sum_payloads(conn, actor_id, key, start.after.0, start.after.1)?)
}

/// A member's sum over `[from, to)` from the stored payloads (nothing read for an empty window).
fn sum_payloads(conn: &Connection, actor_id: &str, key: &SumKey, from: i64, to: i64) -> rusqlite::Result<f64> {
    if from >= to {
        return Ok(0.0);
    }
    let payloads = member_history(conn, actor_id, &key.event_type, from, to)?;
    Ok(payloads.into_iter().filter_map(|(_, payload)| key.number_in(&payload?)).sum())
}

/// The sums whose counters are kept.
fn read_sum_keys(conn: &Connection) -> rusqlite::Result<Vec<SumKey>> {
    let mut statement = conn.prepare("SELECT member_type, path FROM member_sum_keys ORDER BY member_type, path")?;
    let rows = statement.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
    let mut keys = Vec::new();
    for row in rows {
        let (event_type, text) = row?;
        // A path that no longer reads as one is not kept (the rules that sum it are gone).
        if let Ok(crate::expr::ast::Expr::Path(path, _)) = crate::expr::parser::parse(&text) {
            keys.push(SumKey::new(&event_type, &path));
        }
    }
    keys.sort_unstable();
    Ok(keys)
}

/// Counts a sum's counters back over the stored events of its type: the members' totals, and
/// their running sums over the days of each month and the hours of each day.
fn count_sum_back(tx: &Transaction<'_>, key: &SumKey) -> rusqlite::Result<()> {
    use std::collections::BTreeMap;
    let (event_type, path) = (key.event_type.as_str(), key.key.as_str());
    let params = params![event_type, path];
    tx.execute("DELETE FROM member_day_sums WHERE member_type = ?1 AND path = ?2", params)?;
    tx.execute("DELETE FROM member_hour_sums WHERE member_type = ?1 AND path = ?2", params)?;
    let mut totals: HashMap<String, f64> = HashMap::new();
    let mut days: BTreeMap<(String, i64), f64> = BTreeMap::new();
    let mut hours: BTreeMap<(String, i64), f64> = BTreeMap::new();
    {
        let mut scan = tx.prepare("SELECT actor_id, occurred_at, payload FROM events WHERE member_type = ?1")?;
        let rows = scan.query_map([event_type], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, Option<String>>(2)?))
        })?;
        for row in rows {
            let (actor, at, payload) = row?;
            let Some(n) = payload.and_then(|p| key.number_in(&p)) else { continue };
            *totals.entry(actor.clone()).or_default() += n;
            *days.entry((actor.clone(), at.div_euclid(MICROS_PER_DAY))).or_default() += n;
            *hours.entry((actor, at.div_euclid(MICROS_PER_HOUR))).or_default() += n;
        }
    }
    let mut add = tx.prepare_cached(ADD_TO_SUM_TOTAL)?;
    for (actor, total) in totals {
        add.execute(params![actor, event_type, path, ALL_DAYS, total])?;
    }
    // In key order, a running sum starts again at each member's new month (new day).
    let mut add = tx
        .prepare("INSERT INTO member_day_sums (actor_id, member_type, path, day, total) VALUES (?1, ?2, ?3, ?4, ?5)")?;
    for ((actor, day), total) in running_within(days, |day| utc_month(*day).map_or(i64::MIN, |m| m.0)) {
        add.execute(params![actor, event_type, path, day, total])?;
    }
    let mut add = tx.prepare(
        "INSERT INTO member_hour_sums (actor_id, member_type, path, hour, total) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for ((actor, hour), total) in running_within(hours, |hour| hour.div_euclid(HOURS_PER_DAY)) {
        add.execute(params![actor, event_type, path, hour, total])?;
    }
    Ok(())
}

/// Per-member totals, in member and time order, as running sums that start again whenever
/// `span` (the month of a day, the day of an hour) changes.
fn running_within(
    totals: std::collections::BTreeMap<(String, i64), f64>,
    span: impl Fn(&i64) -> i64,
) -> impl Iterator<Item = ((String, i64), f64)> {
    let mut last: Option<(String, i64)> = None;
    let mut running = 0.0;
    totals.into_iter().map(move |((actor, at), total)| {
        let this = (actor, span(&at));
        if last.as_ref() != Some(&this) {
            running = 0.0;
        }
        running += total;
        let actor = this.0.clone();
        last = Some(this);
        ((actor, at), running)
    })
}

/// The event types whose history is indexed.
fn read_history_types(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut statement = conn.prepare("SELECT member_type FROM member_history_types ORDER BY member_type")?;
    let rows = statement.query_map([], |r| r.get(0))?;
    rows.collect()
}

/// Indexes the stored events of types the rules start reading: one pass over the events that
/// have an actor and no indexed type (types compare lower-cased, as rules write them).
fn index_history(tx: &Transaction<'_>, added: &[&String]) -> rusqlite::Result<()> {
    let found: Vec<(String, String)> = {
        let mut scan = tx.prepare(
            "SELECT event_id, event_type FROM events \
             WHERE actor_id IS NOT NULL AND member_type IS NULL AND event_type IS NOT NULL",
        )?;
        let rows = scan.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        rows.filter_map(|row| match row {
            Ok((id, event_type)) => {
                let lower = event_type.to_lowercase();
                added.iter().any(|t| **t == lower).then_some(Ok((id, lower)))
            }
            Err(e) => Some(Err(e)),
        })
        .collect::<rusqlite::Result<_>>()?
    };
    let mut update = tx.prepare("UPDATE events SET member_type = ?2 WHERE event_id = ?1")?;
    for (id, member_type) in found {
        update.execute(params![id, member_type])?;
    }
    // The counters of these types are counted again from the events (they went stale while the
    // type was not read), as running totals: per member over the days, per member and day over
    // the hours.
    let mut clear = tx.prepare("DELETE FROM member_days WHERE member_type = ?1")?;
    let mut count = tx.prepare(
        "INSERT INTO member_days (actor_id, member_type, day, events) \
         SELECT actor_id, member_type, day, sum(n) OVER (PARTITION BY actor_id ORDER BY day) FROM \
           (SELECT actor_id, member_type, (occurred_at - ((occurred_at % ?2) + ?2) % ?2) / ?2 AS day, count(*) AS n \
            FROM events WHERE member_type = ?1 GROUP BY 1, 2, 3)",
    )?;
    let mut clear_hours = tx.prepare("DELETE FROM member_hours WHERE member_type = ?1")?;
    let mut count_hours = tx.prepare(
        "INSERT INTO member_hours (actor_id, member_type, hour, events) \
         SELECT actor_id, member_type, hour, sum(n) OVER (PARTITION BY actor_id, day ORDER BY hour) FROM \
           (SELECT actor_id, member_type, (occurred_at - ((occurred_at % ?2) + ?2) % ?2) / ?2 AS hour, count(*) AS n, \
            (occurred_at - ((occurred_at % ?3) + ?3) % ?3) / ?3 AS day \
            FROM events WHERE member_type = ?1 GROUP BY 1, 2, 3)",
    )?;
    for event_type in added {
        clear.execute([event_type])?;
        count.execute(params![event_type, MICROS_PER_DAY])?;
        clear_hours.execute([event_type])?;
        count_hours.execute(params![event_type, MICROS_PER_HOUR, MICROS_PER_DAY])?;
    }
    Ok(())
}

/// Counts a member's event at `at` into the running counters ([`V12_RUNNING_COUNTS`]): its day and
/// hour, and the later ones, go up by one; a day or hour without a row gets one.
fn count_member_event(conn: &Connection, actor_id: &str, member_type: &str, at: i64) -> rusqlite::Result<()> {
    let (day, hour) = (at.div_euclid(MICROS_PER_DAY), at.div_euclid(MICROS_PER_HOUR));
    let day_hour = day * HOURS_PER_DAY;
    conn.prepare_cached(BUMP_LATER_DAYS)?.execute(params![actor_id, member_type, day])?;
    if conn.prepare_cached(BUMP_DAY)?.execute(params![actor_id, member_type, day])? == 0 {
        conn.prepare_cached(ADD_DAY)?.execute(params![actor_id, member_type, day])?;
    }
    conn.prepare_cached(BUMP_LATER_HOURS)?.execute(params![actor_id, member_type, hour, day_hour + HOURS_PER_DAY])?;
    if conn.prepare_cached(BUMP_HOUR)?.execute(params![actor_id, member_type, hour])? == 0 {
        conn.prepare_cached(ADD_HOUR)?.execute(params![actor_id, member_type, hour, day_hour])?;
    }
    Ok(())
}

/// A member's stored events of a type in a window: event time and payload, oldest first.
fn member_history(
    conn: &Connection,
    actor_id: &str,
    event_type: &str,
    from: i64,
    to: i64,
) -> rusqlite::Result<Vec<(i64, Option<String>)>> {
    let mut statement = conn.prepare_cached(MEMBER_HISTORY)?;
    let rows = statement.query_map(params![actor_id, event_type, from, to], |r| Ok((r.get(0)?, r.get(1)?)))?;
    rows.collect()
}

/// The SQLite ledger.
pub struct SqliteStore {
    path: PathBuf,
    writer: Mutex<Connection>,
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
    /// What member history is kept: the types indexed and the sums counted (as
    /// `member_history_types` and `member_sum_keys` hold them). Each group reads it once.
    tracked: Mutex<Arc<Tracked>>,
    /// The newest outbox row the delivery worker has taken (rows after it have no state yet).
    outbox_taken: AtomicI64,
    /// Copies the WAL back into the database off the writer's commits.
    _checkpointer: Checkpointer,
}

/// The member history a ledger keeps for the live rules.
#[derive(Debug, Default, Clone)]
struct Tracked {
    /// The event types indexed by member and time, with their counters.
    types: Vec<String>,
    /// The sums counted.
    sums: Vec<SumKey>,
    /// The stored webhook targets of the live rules, by their JSON: the ids a delivery names.
    targets: HashMap<String, i64>,
}

/// A SQLite failure while running. A busy database, an I/O error or a full disk may pass
/// (retryable); anything else (a corrupt file, a constraint, a bug) will not.
fn unavailable(e: rusqlite::Error) -> LedgerError {
    use rusqlite::ErrorCode as C;
    let retryable = matches!(
        e.sqlite_error_code(),
        Some(C::DatabaseBusy | C::DatabaseLocked | C::SystemIoFailure | C::DiskFull | C::CannotOpen | C::OutOfMemory)
    );
    LedgerError::unavailable("SQLite failed", retryable, Some(std::sync::Arc::new(e)))
}

impl SqliteStore {
    /// Opens (creating if needed) the ledger in `data_dir`. A directory that cannot be created or
    /// written, or a file that is not a FluxFlow ledger, is a clear error.
    pub fn open(data_dir: &Path) -> Result<SqliteStore, LedgerError> {
        std::fs::create_dir_all(data_dir)
            .map_err(|e| LedgerError::open(format!("cannot create the data directory {}", data_dir.display()), e))?;
        let path = data_dir.join(FILE_NAME);
        let open_error =
            |e: rusqlite::Error| LedgerError::open(format!("{} is not a usable SQLite ledger", path.display()), e);
        let writer = Connection::open(&path).map_err(open_error)?;
        configure(&writer).map_err(open_error)?;
        migrate(&writer).map_err(|e| match e {
            MigrateError::Sql(e) => open_error(e),
            MigrateError::TooNew(found) => {
                LedgerError::SchemaTooNew { place: path.display().to_string(), found, known: SCHEMA_VERSION }
            }
        })?;
        let readers = (0..READERS)
            .map(|_| {
                let conn = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(open_error)?;
                conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(open_error)?;
                keep_statements(&conn).map_err(open_error)?;
                Ok(Mutex::new(conn))
            })
            .collect::<Result<Vec<_>, LedgerError>>()?;
        let types = read_history_types(&writer).map_err(open_error)?;
        let sums = read_sum_keys(&writer).map_err(open_error)?;
        let outbox_taken = writer.query_row(NEWEST_TAKEN, [], |row| row.get(0)).map_err(open_error)?;
        let checkpointer = Checkpointer::start(&path)
            .map_err(|e| LedgerError::open(format!("cannot start checkpointing {}", path.display()), e))?;
        Ok(SqliteStore {
            path,
            writer: Mutex::new(writer),
            readers,
            next_reader: AtomicUsize::new(0),
            tracked: Mutex::new(Arc::new(Tracked { types, sums, targets: HashMap::new() })),
            outbox_taken: AtomicI64::new(outbox_taken),
            _checkpointer: checkpointer,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The value of a PRAGMA on the write connection (for tests and diagnostics).
    pub fn pragma(&self, name: &str) -> Result<String, LedgerError> {
        let conn = self.writer.lock().map_err(broken)?;
        conn.query_row(&format!("PRAGMA {name}"), [], |row| row.get::<_, rusqlite::types::Value>(0))
            .map(|v| match v {
                rusqlite::types::Value::Integer(i) => i.to_string(),
                rusqlite::types::Value::Text(t) => t,
                other => format!("{other:?}"),
            })
            .map_err(unavailable)
    }

    fn read<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, LedgerError> {
        let index = self.next_reader.fetch_add(1, Ordering::Relaxed) % self.readers.len();
        let conn = self.readers[index].lock().map_err(broken)?;
        f(&conn).map_err(unavailable)
    }
}

/// What every connection that runs the ledger's statements needs: each statement compiled once.
/// - Every statement stays prepared: rusqlite keeps 16 by default, fewer than a group with
///   limits, lots, member history and a webhook uses (with the delivery worker's), and a
///   statement pushed out is compiled again at its next use.
/// - The query planner stability guarantee: a plan never depends on the values bound. Without
///   it SQLite (3.5x) compiles a statement again whenever a value bound to it changes if its plan
///   looked at that value, as it does for an `ORDER BY` over a column an equality binds and for
///   `LIMIT ?`: 5–10 µs each time (measured; `statements_are_not_compiled_again_for_new_values` checks it).
fn keep_statements(conn: &Connection) -> rusqlite::Result<()> {
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    Ok(())
}

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    keep_statements(conn)?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(rusqlite::Error::InvalidParameterName(format!("journal_mode is {mode}, WAL is required")));
    }
    // FULL: every commit is fsync'd before it returns, so an answer never outlives its data.
    // A larger checkpoint interval copies the WAL back into the database less often (each page
    // once per checkpoint rather than once per few commits); the checkpointer thread
    // ([`Checkpointer`]) copies most of it before the writer's own checkpoint comes due. The page cache (8 MiB) holds the
    // hot B-tree pages (balances, the right edges of events and entries); the OS caches the
    // rest. A 64 MiB cache was slower: SQLite walked its whole page-cache hash at commits
    // (`pcache1TruncateUnsafe`, 7% of the writer thread under load, gone at 8 MiB).
    conn.execute_batch(
        "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; \
         PRAGMA wal_autocheckpoint = 10000; PRAGMA cache_size = -8192; PRAGMA temp_store = MEMORY;",
    )
}

enum MigrateError {
    Sql(rusqlite::Error),
    TooNew(i64),
}

/// Brings the ledger to [`SCHEMA_VERSION`], one numbered migration at a time, each in its own
/// transaction with the version it sets; refuses a ledger newer than this code.
fn migrate(conn: &Connection) -> Result<(), MigrateError> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |row| row.get(0)).map_err(MigrateError::Sql)?;
    if version > SCHEMA_VERSION {
        return Err(MigrateError::TooNew(version));
    }
    for (number, sql) in (1..).zip(MIGRATIONS).skip(usize::try_from(version).unwrap_or(0)) {
        conn.execute_batch(&format!("BEGIN; {sql} PRAGMA user_version = {number}; COMMIT;"))
            .map_err(MigrateError::Sql)?;
        if version > 0 {
            tracing::info!(from = number - 1, to = number, "SQLite ledger migrated");
        }
    }
    Ok(())
}

impl LedgerStore for SqliteStore {
    fn write_events(&self, events: &[EventWrite]) -> Result<Vec<Applied>, LedgerError> {
        let mut conn = self.writer.lock().map_err(broken)?;
        let tracked = Arc::clone(&*self.tracked.lock().map_err(broken)?);
        let tx = conn.transaction().map_err(unavailable)?;
        let applied = {
            let mut statements = GroupStatements::prepare(&tx, tracked).map_err(unavailable)?;
            events
                .iter()
                .map(|event| post(&mut statements, &event.posting(), now_micros()))
                .collect::<Result<Vec<_>, _>>()?
        };
        tx.commit().map_err(unavailable)?;
        Ok(applied)
    }

    fn store_job(&self, job: &NewJob) -> Result<(), LedgerError> {
        let mut conn = self.writer.lock().map_err(broken)?;
        let tx = conn.transaction().map_err(unavailable)?;
        tx.execute(
            "INSERT INTO jobs (job_id, created_at, total, queued) VALUES (?1, ?2, ?3, ?4)",
            params![job.job_id, now_micros(), job.events.len() as i64, job.queued as i64],
        )
        .map_err(unavailable)?;
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO job_events (job_id, idx, event_id, event, state) VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .map_err(unavailable)?;
            for (index, event) in job.events.iter().enumerate() {
                let json = serde_json::to_string(event.as_ref()).map_err(broken)?;
                let state = EventState::at_admission(index, job.queued).as_str();
                insert.execute(params![job.job_id, index as i64, event.id, json, state]).map_err(unavailable)?;
            }
        }
        tx.commit().map_err(unavailable)
    }

    fn apply_operation(&self, request: &OperationRequest) -> Result<OperationOutcome, LedgerError> {
        let mut conn = self.writer.lock().map_err(broken)?;
        let tx = conn.transaction().map_err(unavailable)?;
        let outcome = {
            let mut statements = GroupStatements::prepare(&tx, Arc::default()).map_err(unavailable)?;
            operations::apply(&mut statements, request, now_micros())?
        };
        if matches!(outcome, OperationOutcome::Done(_)) {
            tx.commit().map_err(unavailable)?;
        }
        Ok(outcome)
    }

    fn stored_result(&self, event_id: &str) -> Result<Option<(Fingerprint, EventResult)>, LedgerError> {
        let row: Option<(Vec<u8>, String)> = self.read(|conn| {
            conn.prepare_cached(FIND_EVENT)?.query_row([event_id], |row| Ok((row.get(0)?, row.get(1)?))).optional()
        })?;
        row.map(|(fp, json)| decode_stored(&fp, &json)).transpose()
    }

    fn points_state(&self, actor_id: &str, at: i64) -> Result<PointsState, LedgerError> {
        let now = now_micros();
        self.read(|conn| {
            let book = conn
                .prepare_cached(READ_BOOK)?
                .query_row([actor_id], |row| {
                    Ok(Book { balance: row.get(0)?, debt: row.get(1)?, next_expiry: row.get(2)? })
                })
                .optional()?
                .unwrap_or_default();
            // Entries are never dated after they are written: now, the book holds their sum.
            let entries_sum = if at >= now {
                book.balance
            } else {
                conn.prepare_cached(ENTRIES_SUM)?.query_row(params![actor_id, at], |r| r.get(0))?
            };
            let lots = conn
                .prepare_cached(OPEN_LOTS)?
                .query_map(params![actor_id, i64::MAX], lot_of_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(PointsState { entries_sum, book, lots })
        })
    }

    fn tier_points(&self, actor_id: &str, from: i64, to: i64) -> Result<i64, LedgerError> {
        self.read(|conn| conn.prepare_cached(TIER_POINTS)?.query_row(params![actor_id, from, to], |r| r.get(0)))
    }

    fn original(&self, event_id: &str) -> Result<Option<Original>, LedgerError> {
        self.read(|conn| read_original(conn, event_id))
    }

    fn reversible(&self, actor_id: &str, event_id: &str) -> Result<Reversible, LedgerError> {
        self.read(|conn| read_reversible(conn, actor_id, event_id))
    }

    fn sweep(&self, now: i64, max_members: usize) -> Result<usize, LedgerError> {
        let mut conn = self.writer.lock().map_err(broken)?;
        let tx = conn.transaction().map_err(unavailable)?;
        let members: Vec<String> = tx
            .prepare_cached(EXPIRED_MEMBERS)
            .and_then(|mut s| {
                s.query_map(params![now, i64::try_from(max_members).unwrap_or(i64::MAX)], |r| r.get(0))?.collect()
            })
            .map_err(unavailable)?;
        {
            let mut statements = GroupStatements::prepare(&tx, Arc::default()).map_err(unavailable)?;
            for actor_id in &members {
                lots::bring_up_to(&mut statements, actor_id, now, now)?;
            }
        }
        tx.commit().map_err(unavailable)?;
        Ok(members.len())
    }

    fn usage(&self, counter: &Counter<'_>) -> Result<Usage, LedgerError> {
        self.read(|conn| read_usage(&mut conn.prepare_cached(usage_sql(counter))?, counter))
    }

    fn member_history(
        &self,
        actor_id: &str,
        event_type: &str,
        from: i64,
        to: i64,
    ) -> Result<Vec<(i64, Option<String>)>, LedgerError> {
        self.read(|conn| member_history(conn, actor_id, event_type, from, to))
    }

    fn member_count(&self, actor_id: &str, event_type: &str, from: i64, to: i64) -> Result<u64, LedgerError> {
        self.read(|conn| count_member(conn, actor_id, event_type, from, to))
    }

    fn stream_position(&self, subject: &str) -> Result<u64, LedgerError> {
        let sequence: Option<i64> =
            self.read(|conn| conn.prepare_cached(STREAM_POSITION)?.query_row([subject], |r| r.get(0)).optional())?;
        Ok(sequence.and_then(|s| u64::try_from(s).ok()).unwrap_or(0))
    }

    fn track_history(&self, types: &[String]) -> Result<(), LedgerError> {
        let mut conn = self.writer.lock().map_err(broken)?;
        let mut tracked = self.tracked.lock().map_err(broken)?;
        if tracked.types == types {
            return Ok(());
        }
        let added: Vec<&String> = types.iter().filter(|t| !tracked.types.contains(t)).collect();
        let tx = conn.transaction().map_err(unavailable)?;
        tx.execute("DELETE FROM member_history_types", []).map_err(unavailable)?;
        for event_type in types {
            tx.execute("INSERT INTO member_history_types (member_type) VALUES (?1)", [event_type])
                .map_err(unavailable)?;
        }
        if !added.is_empty() {
            index_history(&tx, &added).map_err(unavailable)?;
        }
        tx.commit().map_err(unavailable)?;
        tracing::info!(types = ?types, indexed_back = ?added, "member history indexed for the rules' event types");
        *tracked = Arc::new(Tracked { types: types.to_vec(), ..Tracked::clone(&tracked) });
        Ok(())
    }

    fn member_sum(&self, actor_id: &str, key: &SumKey, from: i64, to: i64) -> Result<Option<f64>, LedgerError> {
        if !self.tracked.lock().map_err(broken)?.sums.contains(key) {
            return Ok(None);
        }
        self.read(|conn| sum_member(conn, actor_id, key, from, to)).map(Some)
    }

    fn track_targets(&self, targets: &[&str]) -> Result<(), LedgerError> {
        let mut conn = self.writer.lock().map_err(broken)?;
        let mut tracked = self.tracked.lock().map_err(broken)?;
        if targets.iter().all(|t| tracked.targets.contains_key(*t)) {
            return Ok(());
        }
        let tx = conn.transaction().map_err(unavailable)?;
        let ids = targets
            .iter()
            .map(|target| Ok(((*target).to_owned(), target_id(&tx, target)?)))
            .collect::<rusqlite::Result<HashMap<_, _>>>()
            .map_err(unavailable)?;
        tx.commit().map_err(unavailable)?;
        *tracked = Arc::new(Tracked { targets: ids, ..Tracked::clone(&tracked) });
        Ok(())
    }

    fn track_sums(&self, sums: &[SumKey]) -> Result<(), LedgerError> {
        let mut conn = self.writer.lock().map_err(broken)?;
        let mut tracked = self.tracked.lock().map_err(broken)?;
        if tracked.sums == sums {
            return Ok(());
        }
        let added: Vec<&SumKey> = sums.iter().filter(|k| !tracked.sums.contains(k)).collect();
        let tx = conn.transaction().map_err(unavailable)?;
        tx.execute("DELETE FROM member_sum_keys", []).map_err(unavailable)?;
        for key in sums {
            tx.execute(
                "INSERT INTO member_sum_keys (member_type, path) VALUES (?1, ?2)",
                params![key.event_type, key.key],
            )
            .map_err(unavailable)?;
        }
        // Counters of a sum that was not kept went stale: they are counted back from the events.
        for key in &added {
            count_sum_back(&tx, key).map_err(unavailable)?;
        }
        tx.commit().map_err(unavailable)?;
        let keys: Vec<String> = sums.iter().map(|k| format!("{}:{}", k.event_type, k.key)).collect();
        tracing::info!(sums = ?keys, counted_back = added.len(), "member sums counted for the rules");
        *tracked = Arc::new(Tracked { sums: sums.to_vec(), ..Tracked::clone(&tracked) });
        Ok(())
    }

    fn history(&self, actor_id: &str, limit: usize, before: Option<i64>) -> Result<HistoryPage, LedgerError> {
        let entries = self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT entry_id, actor_id, event_id, action_id, scenario_id, points, kind, reason, created_at, expires_at,
                 dated_at, available_at, reverses
                 FROM entries WHERE actor_id = ?1 AND entry_id < ?2 ORDER BY entry_id DESC LIMIT ?3",
            )?;
            let rows = stmt.query_map(params![actor_id, before.unwrap_or(i64::MAX), limit as i64 + 1], |row| {
                Ok(Entry {
                    entry_id: row.get(0)?,
                    actor_id: row.get(1)?,
                    event_id: row.get(2)?,
                    action_id: row.get(3)?,
                    scenario_id: row.get(4)?,
                    points: row.get(5)?,
                    kind: entry_kind(row.get_ref(6)?.as_str()?)?,
                    reason: row.get(7)?,
                    created_at: rfc3339(row.get(8)?),
                    expires_at: row.get::<_, Option<i64>>(9)?.map(rfc3339),
                    dated_at: rfc3339(row.get::<_, Option<i64>>(10)?.unwrap_or(row.get(8)?)),
                    available_at: row.get::<_, Option<i64>>(11)?.map(rfc3339),
                    reverses: row.get(12)?,
                })
            })?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })?;
        Ok(HistoryPage::of(actor_id, entries, limit))
    }

    fn job(&self, job_id: &str) -> Result<Option<Job>, LedgerError> {
        let found: Option<i64> = self.read(|conn| {
            conn.prepare_cached("SELECT queued FROM jobs WHERE job_id = ?1")?
                .query_row([job_id], |r| r.get(0))
                .optional()
        })?;
        let Some(queued) = found else { return Ok(None) };
        let rows: Vec<(String, String, Option<String>)> = self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT j.event_id, j.state, e.result FROM job_events j
                 LEFT JOIN events e ON e.event_id = j.event_id AND j.state = 'done'
                 WHERE j.job_id = ?1 ORDER BY j.idx",
            )?;
            let rows = stmt.query_map([job_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            rows.collect()
        })?;
        let events = rows
            .into_iter()
            .map(|(event_id, state, result)| JobEvent {
                event_id,
                state: EventState::parse(&state).unwrap_or(EventState::Queued),
                result: result.and_then(|json| serde_json::from_str(&json).ok()),
            })
            .collect();
        Ok(Some(Job::from_events(job_id.to_owned(), usize::try_from(queued).unwrap_or(0), events)))
    }

    fn pending_events(&self) -> Result<Vec<PendingEvent>, LedgerError> {
        let rows: Vec<(String, i64, String)> = self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT j.job_id, j.idx, j.event FROM job_events j JOIN jobs USING (job_id)
                 WHERE j.state = 'queued' ORDER BY jobs.created_at, j.job_id, j.idx",
            )?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            rows.collect()
        })?;
        rows.into_iter()
            .map(|(job_id, index, json)| {
                let event: Event = serde_json::from_str(&json).map_err(broken)?;
                Ok(PendingEvent { job_id, index: usize::try_from(index).unwrap_or(0), event })
            })
            .collect()
    }

    fn ping(&self) -> Result<(), LedgerError> {
        self.read(|conn| conn.query_row("SELECT 1", [], |_| Ok(())))
    }

    fn probe_write(&self) -> Result<(), LedgerError> {
        let conn = self.writer.lock().map_err(broken)?;
        conn.execute(
            "INSERT INTO health (id, checked_at) VALUES (1, ?1) ON CONFLICT (id) DO UPDATE SET checked_at = ?1",
            [now_micros()],
        )
        .map(|_| ())
        .map_err(unavailable)
    }
}

fn decode_stored(fingerprint: &[u8], json: &str) -> Result<(Fingerprint, EventResult), LedgerError> {
    let fp: Fingerprint = fingerprint.try_into().map_err(|_| broken("a stored fingerprint has the wrong length"))?;
    let result = serde_json::from_str(json).map_err(broken)?;
    Ok((fp, result))
}

/// A stored entry kind; one this version does not know is an error, not a guess.
fn entry_kind(name: &str) -> rusqlite::Result<EntryKind> {
    EntryKind::parse(name).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            6,
            rusqlite::types::Type::Text,
            format!("unknown entry kind {name}").into(),
        )
    })
}

/// The statements a group's events use, prepared once per group: looking each one up in the
/// connection's statement cache for every event hashed its SQL text twice (2–3% of the writer
/// thread in perf).
struct GroupStatements<'tx> {
    /// For the statements of limits, prepared only when a group has a scenario with limits.
    conn: &'tx Connection,
    limits: Option<LimitStatements<'tx>>,
    /// The member history kept.
    tracked: Arc<Tracked>,
    find_event: CachedStatement<'tx>,
    insert_event: CachedStatement<'tx>,
    mark_job_event: CachedStatement<'tx>,
    read_book: CachedStatement<'tx>,
    insert_entry: CachedStatement<'tx>,
    add_to_balance: CachedStatement<'tx>,
}

impl<'tx> GroupStatements<'tx> {
    fn prepare(tx: &'tx Transaction<'_>, tracked: Arc<Tracked>) -> rusqlite::Result<Self> {
        Ok(GroupStatements {
            conn: tx,
            limits: None,
            tracked,
            find_event: tx.prepare_cached(FIND_EVENT)?,
            insert_event: tx.prepare_cached(INSERT_EVENT)?,
            mark_job_event: tx.prepare_cached(MARK_JOB_EVENT)?,
            read_book: tx.prepare_cached(READ_BOOK)?,
            insert_entry: tx.prepare_cached(INSERT_ENTRY)?,
            add_to_balance: tx.prepare_cached(ADD_TO_BALANCE)?,
        })
    }
}

impl GroupStatements<'_> {
    /// Adds an event's numbers to the sums kept for its type: the member's total, and the running
    /// sums of its day (and its month's later days) and of its hour (and its day's later hours).
    fn add_to_sums(&self, actor: &str, member_type: &str, at: i64, payload: Option<&str>) -> Result<(), LedgerError> {
        let keys = self.tracked.sums.iter().filter(|k| k.event_type == member_type);
        for (key, n) in keys.filter_map(|k| payload.and_then(|p| k.number_in(p)).map(|n| (k, n))) {
            let (day, hour) = (at.div_euclid(MICROS_PER_DAY), at.div_euclid(MICROS_PER_HOUR));
            let (day_hour, path) = (day * HOURS_PER_DAY, key.key.as_str());
            let month = utc_month(day).ok_or_else(|| {
                LedgerError::unavailable(format!("event time {at} µs is outside the calendar"), false, None)
            })?;
            self.execute(ADD_TO_SUM_TOTAL, params![actor, member_type, path, ALL_DAYS, n])?;
            self.execute(BUMP_LATER_DAY_SUMS, params![actor, member_type, path, day, n, month.1])?;
            if self.changes(BUMP_DAY_SUM, params![actor, member_type, path, day, n])? == 0 {
                self.execute(ADD_DAY_SUM, params![actor, member_type, path, day, n, month.0])?;
            }
            self.execute(BUMP_LATER_HOUR_SUMS, params![actor, member_type, path, hour, n, day_hour + HOURS_PER_DAY])?;
            if self.changes(BUMP_HOUR_SUM, params![actor, member_type, path, hour, n])? == 0 {
                self.execute(ADD_HOUR_SUM, params![actor, member_type, path, hour, n, day_hour])?;
            }
        }
        Ok(())
    }

    /// Runs a cached statement that answers nothing.
    fn execute(&self, sql: &str, params: impl rusqlite::Params) -> Result<(), LedgerError> {
        self.changes(sql, params).map(|_| ())
    }

    /// Runs a cached statement that answers nothing: the rows it changed.
    fn changes(&self, sql: &str, params: impl rusqlite::Params) -> Result<usize, LedgerError> {
        self.conn.prepare_cached(sql).and_then(|mut s| s.execute(params)).map_err(unavailable)
    }
}

fn read_original(conn: &Connection, event_id: &str) -> rusqlite::Result<Option<Original>> {
    conn.prepare_cached(ORIGINAL)?
        .query_row([event_id], |r| {
            Ok(Original { actor_id: r.get(0)?, event_type: r.get(1)?, occurred_at: r.get(2)?, payload: r.get(3)? })
        })
        .optional()
}

fn read_reversible(conn: &Connection, actor_id: &str, event_id: &str) -> rusqlite::Result<Reversible> {
    conn.prepare_cached(REVERSIBLE)?.query_row(params![actor_id, event_id], |r| {
        Ok(Reversible { awarded: r.get(0)?, expired: r.get(1)?, reversed: r.get(2)? })
    })
}

fn lot_of_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Lot> {
    Ok(Lot {
        lot_id: row.get(0)?,
        source_id: row.get(1)?,
        remaining: row.get(2)?,
        available_at: row.get(3)?,
        expires_at: row.get(4)?,
    })
}

struct LimitStatements<'tx> {
    actor_usage: CachedStatement<'tx>,
    budget_usage: CachedStatement<'tx>,
    add_use: CachedStatement<'tx>,
    add_to_budget: CachedStatement<'tx>,
}

impl<'tx> GroupStatements<'tx> {
    fn limits(&mut self) -> Result<&mut LimitStatements<'tx>, LedgerError> {
        if self.limits.is_none() {
            let prepare = |sql| self.conn.prepare_cached(sql).map_err(unavailable);
            let statements = LimitStatements {
                actor_usage: prepare(ACTOR_USAGE)?,
                budget_usage: prepare(BUDGET_USAGE)?,
                add_use: prepare(ADD_USE)?,
                add_to_budget: prepare(ADD_TO_BUDGET)?,
            };
            self.limits = Some(statements);
        }
        self.limits.as_mut().ok_or_else(|| broken("the statements of limits were not prepared"))
    }
}

/// The SQLite side of operations: the same transaction and statements as events'.
impl OperationTx for GroupStatements<'_> {
    fn find_operation(&mut self, actor_id: &str, request_id: &str) -> Result<Option<StoredOperation>, LedgerError> {
        type Row = (Vec<u8>, String, i64, String, Option<String>);
        let row: Option<Row> = self
            .conn
            .prepare_cached(
                "SELECT fingerprint, kind, points, answer, cancelled_by FROM operations \
                 WHERE actor_id = ?1 AND request_id = ?2",
            )
            .and_then(|mut s| {
                s.query_row(params![actor_id, request_id], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
                })
                .optional()
            })
            .map_err(unavailable)?;
        row.map(|(fingerprint, kind, points, answer, cancelled_by)| {
            Ok(StoredOperation {
                fingerprint: fingerprint.try_into().map_err(|_| broken("a stored fingerprint has the wrong length"))?,
                kind: EntryKind::parse(&kind).ok_or_else(|| broken(format!("unknown operation kind {kind}")))?,
                points,
                answer,
                cancelled_by,
            })
        })
        .transpose()
    }

    fn save_operation(&mut self, o: &NewOperation<'_>) -> Result<(), LedgerError> {
        self.conn
            .prepare_cached(
                "INSERT INTO operations (actor_id, request_id, fingerprint, kind, points, answer, applied_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    o.actor_id,
                    o.request_id,
                    o.fingerprint.as_slice(),
                    o.kind.as_str(),
                    o.points,
                    o.answer,
                    o.applied_at
                ])
            })
            .map(|_| ())
            .map_err(unavailable)
    }

    fn mark_cancelled(&mut self, actor_id: &str, redemption_id: &str, by: &str) -> Result<(), LedgerError> {
        self.conn
            .prepare_cached("UPDATE operations SET cancelled_by = ?3 WHERE actor_id = ?1 AND request_id = ?2")
            .and_then(|mut s| s.execute(params![actor_id, redemption_id, by]))
            .map(|_| ())
            .map_err(unavailable)
    }

    fn last_entry_id(&mut self, actor_id: &str) -> Result<i64, LedgerError> {
        self.conn
            .prepare_cached("SELECT max(entry_id) FROM entries WHERE actor_id = ?1")
            .and_then(|mut s| s.query_row([actor_id], |r| r.get::<_, Option<i64>>(0)))
            .map_err(unavailable)?
            .ok_or_else(|| broken("no entry was appended"))
    }
}

/// The SQLite side of the posting core: one group's transaction, its statements prepared once.
impl LedgerTx for GroupStatements<'_> {
    fn find_event(&mut self, event_id: &str) -> Result<Option<StoredEvent>, LedgerError> {
        let row: Option<(Vec<u8>, String)> = self
            .find_event
            .query_row([event_id], |row| Ok((row.get(0)?, row.get(1)?)))
            .optional()
            .map_err(unavailable)?;
        row.map(|(fp, json)| decode_stored(&fp, &json).map(|(fingerprint, result)| StoredEvent { fingerprint, result }))
            .transpose()
    }

    fn book(&mut self, actor_id: &str) -> Result<Book, LedgerError> {
        // One writer thread applies every write: nothing else can change it before the commit.
        self.read_book
            .query_row([actor_id], |row| Ok(Book { balance: row.get(0)?, debt: row.get(1)?, next_expiry: row.get(2)? }))
            .optional()
            .map(Option::unwrap_or_default)
            .map_err(unavailable)
    }

    fn set_debt(&mut self, actor_id: &str, debt: i64) -> Result<(), LedgerError> {
        self.execute(SET_DEBT, params![actor_id, debt])
    }

    fn append(&mut self, e: &NewEntry<'_>) -> Result<(), LedgerError> {
        self.insert_entry
            .execute(params![
                e.actor_id,
                e.event_id,
                e.action_id,
                e.scenario_id,
                e.points,
                e.kind.as_str(),
                e.reason,
                e.created_at,
                e.expires_at,
                e.dated_at,
                e.available_at,
                e.reverses
            ])
            .map_err(unavailable)?;
        self.add_to_balance.execute(params![e.actor_id, e.points, e.created_at]).map_err(unavailable)?;
        Ok(())
    }

    fn add_lot(&mut self, lot: &NewLot<'_>) -> Result<(), LedgerError> {
        let params = params![lot.actor_id, lot.source_id, lot.points, lot.available_at, lot.expires_at];
        self.execute(INSERT_LOT, params)
    }

    fn lower_next_expiry(&mut self, actor_id: &str, expires_at: i64) -> Result<(), LedgerError> {
        self.execute(LOWER_NEXT_EXPIRY, params![actor_id, expires_at])
    }

    fn open_lots(&mut self, actor_id: &str, limit: usize) -> Result<Vec<Lot>, LedgerError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.conn
            .prepare_cached(OPEN_LOTS)
            .and_then(|mut s| s.query_map(params![actor_id, limit], lot_of_row)?.collect())
            .map_err(unavailable)
    }

    fn pending_points(&mut self, actor_id: &str, at: i64) -> Result<i64, LedgerError> {
        self.conn
            .prepare_cached(PENDING_POINTS)
            .and_then(|mut s| s.query_row(params![actor_id, at], |r| r.get(0)))
            .map_err(unavailable)
    }

    fn take_from_lots(&mut self, actor_id: &str, taken: &[(i64, i64)]) -> Result<(), LedgerError> {
        for (lot_id, points) in taken {
            self.execute(TAKE_FROM_LOT, params![lot_id, points])?;
        }
        self.execute(SET_NEXT_EXPIRY, params![actor_id])
    }

    fn record_spent(&mut self, actor_id: &str, source_id: &str, spent: &[(i64, i64)]) -> Result<(), LedgerError> {
        for (lot_id, points) in spent {
            self.execute(
                "INSERT INTO lot_spent (actor_id, source_id, lot_id, points) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (actor_id, source_id, lot_id) DO UPDATE SET points = points + excluded.points",
                params![actor_id, source_id, lot_id, points],
            )?;
        }
        Ok(())
    }

    fn spent_by(&mut self, actor_id: &str, source_id: &str) -> Result<Vec<(i64, i64)>, LedgerError> {
        self.conn
            .prepare_cached("SELECT lot_id, points FROM lot_spent WHERE actor_id = ?1 AND source_id = ?2")
            .and_then(|mut s| s.query_map(params![actor_id, source_id], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
            .map_err(unavailable)
    }

    fn original(&mut self, event_id: &str) -> Result<Option<Original>, LedgerError> {
        read_original(self.conn, event_id).map_err(unavailable)
    }

    fn reversible(&mut self, actor_id: &str, event_id: &str) -> Result<Reversible, LedgerError> {
        read_reversible(self.conn, actor_id, event_id).map_err(unavailable)
    }

    fn tier_points(&mut self, actor_id: &str, from: i64, to: i64) -> Result<i64, LedgerError> {
        self.conn
            .prepare_cached(TIER_POINTS)
            .and_then(|mut s| s.query_row(params![actor_id, from, to], |r| r.get(0)))
            .map_err(unavailable)
    }

    fn save_event(&mut self, e: &NewEvent<'_>) -> Result<(), LedgerError> {
        // Only the types the rules read are indexed and counted (none: nothing to compute).
        let types = &self.tracked.types;
        let member_type = (!types.is_empty()).then(|| e.member_type()).flatten().filter(|t| types.contains(t));
        self.insert_event
            .execute(params![
                e.event_id,
                e.fingerprint.as_slice(),
                e.actor_id,
                e.result_json,
                e.processed_at,
                e.event_type,
                e.occurred_at,
                e.payload,
                member_type
            ])
            .map_err(unavailable)?;
        if let (Some(actor), Some(member_type)) = (e.actor_id, member_type) {
            count_member_event(self.conn, actor, &member_type, e.occurred_at).map_err(unavailable)?;
            self.add_to_sums(actor, &member_type, e.occurred_at, e.payload)?;
        }
        Ok(())
    }

    fn member_sum(&mut self, actor_id: &str, key: &SumKey, from: i64, to: i64) -> Result<Option<f64>, LedgerError> {
        if !self.tracked.sums.contains(key) {
            return Ok(None);
        }
        sum_member(self.conn, actor_id, key, from, to).map(Some).map_err(unavailable)
    }

    fn member_count(&mut self, actor_id: &str, event_type: &str, from: i64, to: i64) -> Result<u64, LedgerError> {
        count_member(self.conn, actor_id, event_type, from, to).map_err(unavailable)
    }

    fn member_payloads(
        &mut self,
        actor_id: &str,
        event_type: &str,
        from: i64,
        to: i64,
    ) -> Result<Vec<String>, LedgerError> {
        let rows = member_history(self.conn, actor_id, event_type, from, to).map_err(unavailable)?;
        Ok(rows.into_iter().filter_map(|(_, payload)| payload).collect())
    }

    fn member_times(
        &mut self,
        actor_id: &str,
        event_type: &str,
        before: i64,
        limit: usize,
    ) -> Result<Vec<i64>, LedgerError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.conn
            .prepare_cached(MEMBER_TIMES)
            .and_then(|mut s| s.query_map(params![actor_id, event_type, before, limit], |r| r.get(0))?.collect())
            .map_err(unavailable)
    }

    fn usage(&mut self, counter: &Counter<'_>) -> Result<Usage, LedgerError> {
        // One writer thread applies every write: nothing else can change it before the commit.
        let statements = self.limits()?;
        let statement = match counter {
            Counter::Actor(_) => &mut statements.actor_usage,
            Counter::Budget(_) => &mut statements.budget_usage,
        };
        read_usage(statement, counter).map_err(unavailable)
    }

    fn add_use(&mut self, u: &NewUse<'_>) -> Result<(), LedgerError> {
        let add = &mut self.limits()?.add_use;
        add.execute(params![u.scenario_id, u.actor_id, u.occurred_at, u.points]).map_err(unavailable)?;
        Ok(())
    }

    fn add_to_budget(&mut self, b: &BudgetKey<'_>, used: Usage) -> Result<(), LedgerError> {
        let (times, points) =
            (i64::try_from(used.times).unwrap_or(i64::MAX), i64::try_from(used.points).unwrap_or(i64::MAX));
        let add = &mut self.limits()?.add_to_budget;
        add.execute(params![b.scenario_id, b.period.to_string(), b.start, times, points]).map_err(unavailable)?;
        Ok(())
    }

    fn mark_job_event(&mut self, job_id: &str, index: usize, state: EventState) -> Result<(), LedgerError> {
        self.mark_job_event.execute(params![state.as_str(), job_id, index as i64]).map(|_| ()).map_err(unavailable)
    }

    fn advance_stream(&mut self, position: &super::StreamPosition) -> Result<(), LedgerError> {
        let sequence = i64::try_from(position.sequence).unwrap_or(i64::MAX);
        self.execute(ADVANCE_STREAM, params![position.subject, sequence])
    }

    fn queue_delivery(&mut self, d: &super::tx::NewDelivery<'_>) -> Result<(), LedgerError> {
        // The live rules' targets are stored when they load; another (rules that went live on
        // another path) is stored in this transaction.
        let target_id = match self.tracked.targets.get(d.target_json) {
            Some(id) => *id,
            None => target_id(self.conn, d.target_json).map_err(unavailable)?,
        };
        let sent = serde_json::to_string(&Sent::of(d.event))
            .map_err(|e| LedgerError::unavailable("cannot encode a delivery's event", false, Some(Arc::new(e))))?;
        // Once per event and action: the event's own idempotency keeps replays from coming here.
        self.execute(QUEUE_DELIVERY, params![d.event_id, d.action_id, target_id, sent, d.created_at])
    }
}

const VERSION_COLUMNS: &str = "rules_version, hash, created_at, author, source";

fn version_of_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<RulesVersion> {
    Ok(RulesVersion {
        rules_version: u64::try_from(row.get::<_, i64>(0)?).unwrap_or(0),
        hash: row.get(1)?,
        created_at: versions::created_at(row.get(2)?),
        author: row.get(3)?,
        source: VersionSource::parse(&row.get::<_, String>(4)?),
    })
}

/// The newest version, if any.
fn newest_version(conn: &Connection) -> rusqlite::Result<Option<RulesVersion>> {
    let sql = format!("SELECT {VERSION_COLUMNS} FROM rules_versions ORDER BY rules_version DESC LIMIT 1");
    conn.prepare_cached(&sql)?.query_row([], version_of_row).optional()
}

impl RulesVersions for SqliteStore {
    fn add_version(&self, new: &NewVersion<'_>) -> Result<RulesVersion, LedgerError> {
        // Through the writer, so versions are numbered one at a time.
        let mut conn = self.writer.lock().map_err(broken)?;
        let tx = conn.transaction().map_err(unavailable)?;
        let newest = newest_version(&tx).map_err(unavailable)?;
        if let Some(newest) = newest.as_ref().filter(|v| v.hash == new.hash) {
            return Ok(newest.clone());
        }
        let number = newest.map_or(1, |v| v.rules_version + 1);
        tx.execute(
            "INSERT INTO rules_versions (rules_version, hash, created_at, author, source, yaml) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                i64::try_from(number).unwrap_or(i64::MAX),
                new.hash,
                new.at,
                new.author,
                new.source.as_str(),
                new.yaml
            ],
        )
        .map_err(unavailable)?;
        tx.commit().map_err(unavailable)?;
        Ok(RulesVersion::stored(number, new))
    }

    fn versions(&self, limit: usize) -> Result<Vec<RulesVersion>, LedgerError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(|conn| {
            let sql = format!("SELECT {VERSION_COLUMNS} FROM rules_versions ORDER BY rules_version DESC LIMIT ?1");
            conn.prepare_cached(&sql)?.query_map([limit], version_of_row)?.collect()
        })
    }

    fn version(&self, rules_version: u64) -> Result<Option<(RulesVersion, String)>, LedgerError> {
        let number = i64::try_from(rules_version).unwrap_or(i64::MAX);
        self.read(|conn| {
            let sql = format!("SELECT {VERSION_COLUMNS}, yaml FROM rules_versions WHERE rules_version = ?1");
            conn.prepare_cached(&sql)?.query_row([number], |r| Ok((version_of_row(r)?, r.get(5)?))).optional()
        })
    }

    fn newest(&self) -> Result<u64, LedgerError> {
        let newest: i64 = self.read(|conn| {
            conn.query_row("SELECT coalesce(max(rules_version), 0) FROM rules_versions", [], |r| r.get(0))
        })?;
        Ok(u64::try_from(newest).unwrap_or(0))
    }
}

/// The outbox of the SQLite ledger: claims and results go through the write connection, a small
/// transaction each, between the writer's groups.
impl crate::webhooks::Outbox for SqliteStore {
    fn settle(
        &self,
        attempts: &[crate::webhooks::Attempt],
        now: i64,
        lease_until: i64,
        limit: usize,
    ) -> Result<Vec<crate::webhooks::Due>, LedgerError> {
        let mut conn = self.writer.lock().map_err(broken)?;
        let tx = conn.transaction().map_err(unavailable)?;
        {
            let mut record = tx.prepare_cached(RECORD_ATTEMPT).map_err(unavailable)?;
            for a in attempts {
                let state = a.state.as_str();
                record
                    .execute(params![a.row, state, a.next_attempt_at, a.status, a.error, a.finished_at])
                    .map_err(unavailable)?;
            }
        }
        let due =
            if limit == 0 { Vec::new() } else { self.claim(&tx, now, lease_until, limit).map_err(unavailable)? };
        tx.commit().map_err(unavailable)?;
        if let Some(newest) = due.iter().map(|d| d.row).max() {
            self.outbox_taken.fetch_max(newest, Ordering::Relaxed);
        }
        Ok(due)
    }

    /// One worker per SQLite ledger: any lease at its start is a stopped worker's.
    fn release_stale_leases(&self) -> Result<u64, LedgerError> {
        let conn = self.writer.lock().map_err(broken)?;
        conn.execute(RELEASE_LEASES, []).map(|n| n as u64).map_err(unavailable)
    }

    fn list(
        &self,
        state: Option<crate::webhooks::DeliveryState>,
        cursor: Option<&crate::webhooks::Cursor>,
        limit: usize,
    ) -> Result<Vec<crate::webhooks::DeliveryRow>, LedgerError> {
        let sql = format!(
            "SELECT {LIST_COLUMNS} FROM webhook_deliveries d WHERE (?1 IS NULL OR coalesce(state, 'pending') = ?1) \
             AND (?2 IS NULL OR created_at < ?2 OR (created_at = ?2 AND {DELIVERY_ID} < ?3)) \
             ORDER BY created_at DESC, {DELIVERY_ID} DESC LIMIT ?4"
        );
        let state = state.map(|s| s.as_str());
        let (at, id) = (cursor.map(|c| c.created_at), cursor.map(|c| c.delivery_id.as_str()));
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(|conn| {
            let mut statement = conn.prepare_cached(&sql)?;
            let rows = statement.query_map(params![state, at, id, limit], delivery_row)?;
            rows.collect()
        })
    }

    fn retry(&self, delivery_id: &str, now: i64) -> Result<crate::webhooks::Retried, LedgerError> {
        let conn = self.writer.lock().map_err(broken)?;
        retry_delivery(&conn, delivery_id, now).map_err(unavailable)
    }

    fn pending(&self) -> Result<u64, LedgerError> {
        // The rows the worker has not taken yet are every row after the newest it took (it takes
        // them in order; rowids have no gaps, since nothing is deleted): no need to count them.
        let taken = self.outbox_taken.load(Ordering::Relaxed);
        let count: i64 = self.read(|conn| {
            conn.query_row(
                "SELECT (SELECT count(*) FROM webhook_deliveries WHERE state = 'pending') \
                 + max(coalesce((SELECT max(seq) FROM webhook_deliveries), 0) - ?1, 0)",
                [taken],
                |row| row.get(0),
            )
        })?;
        Ok(u64::try_from(count).unwrap_or(0))
    }
}

impl SqliteStore {
    /// Claims up to `limit` pending deliveries due at `now` and, as many again, the oldest the
    /// worker has not taken yet, leasing them until `lease_until` (one worker per SQLite ledger:
    /// the lease only keeps a crashed attempt from being lost).
    fn claim(
        &self,
        tx: &Transaction<'_>,
        now: i64,
        lease_until: i64,
        limit: usize,
    ) -> rusqlite::Result<Vec<crate::webhooks::Due>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut due =
            tx.prepare_cached(CLAIM_DUE)?.query_map(params![now, limit], due_of_row)?.collect::<Result<Vec<_>, _>>()?;
        let taken = self.outbox_taken.load(Ordering::Relaxed);
        let mut new = tx.prepare_cached(CLAIM_NEW)?;
        for delivery in new.query_map(params![taken, limit], due_of_row)? {
            due.push(delivery?);
        }
        let mut lease = tx.prepare_cached(LEASE)?;
        for delivery in &due {
            lease.execute(params![lease_until, delivery.row])?;
        }
        Ok(due)
    }
}

/// The id of a webhook target, stored first when it is new.
fn target_id(conn: &Connection, target: &str) -> rusqlite::Result<i64> {
    conn.prepare_cached(ADD_TARGET)?.execute([target])?;
    conn.prepare_cached(TARGET_ID)?.query_row([target], |row| row.get(0))
}

/// Makes a failed delivery pending again: its attempts start afresh, due now. A delivery that is
/// not failed is looked for without an index (the answer is 409 or 404 either way).
fn retry_delivery(conn: &Connection, delivery_id: &str, now: i64) -> rusqlite::Result<crate::webhooks::Retried> {
    use crate::webhooks::{DeliveryState, Retried};
    let retry = format!(
        "UPDATE webhook_deliveries SET state = 'pending', attempts = 0, next_attempt_at = ?2, lease_until = NULL, \
         finished_at = NULL WHERE {DELIVERY_ID} = ?1 AND state = 'failed'"
    );
    if conn.execute(&retry, params![delivery_id, now])? > 0 {
        return Ok(Retried::Queued);
    }
    let find = format!("SELECT coalesce(state, 'pending') FROM webhook_deliveries WHERE {DELIVERY_ID} = ?1");
    let state: Option<String> = conn.query_row(&find, [delivery_id], |row| row.get(0)).optional()?;
    Ok(match state.as_deref().and_then(DeliveryState::parse) {
        Some(state) => Retried::NotFailed(state),
        None => Retried::NotFound,
    })
}

// The outbox's claim and record statements and row readers (its schema is version 11 above).

/// A delivery's id, as the failed deliveries' index has it.
const DELIVERY_ID: &str = "(event_id || ':' || action_id)";

/// What [`crate::webhooks::DeliveryRow`] is read from, in order.
const LIST_COLUMNS: &str = "(event_id || ':' || action_id), event_id, action_id, \
     (SELECT target FROM webhook_targets t WHERE t.target_id = d.target_id), coalesce(state, 'pending'), \
     attempts, coalesce(next_attempt_at, created_at), last_status, last_error, created_at, finished_at";

/// What a claim reads of each delivery ([`due_of_row`]), with its event's stored row.
macro_rules! claim_select {
    () => {
        "SELECT d.seq, d.event_id || ':' || d.action_id, \
         (SELECT target FROM webhook_targets t WHERE t.target_id = d.target_id), d.sent, coalesce(e.result, 'null'), \
         d.attempts, e.event_type, e.actor_id, e.payload, d.event_id \
         FROM webhook_deliveries d LEFT JOIN events e ON e.event_id = d.event_id "
    };
}

/// Every lease held (through `due_deliveries`: only pending deliveries hold one).
const RELEASE_LEASES: &str =
    "UPDATE webhook_deliveries SET lease_until = NULL WHERE state = 'pending' AND lease_until IS NOT NULL";
/// Pending deliveries due and not leased, with the event's stored result.
const CLAIM_DUE: &str = concat!(
    claim_select!(),
    "WHERE d.state = 'pending' AND d.next_attempt_at <= ?1 AND (d.lease_until IS NULL OR d.lease_until <= ?1) \
     ORDER BY d.next_attempt_at LIMIT ?2"
);

/// Deliveries not taken yet, oldest first, after the newest taken.
const CLAIM_NEW: &str = concat!(claim_select!(), "WHERE d.seq > ?1 AND d.state IS NULL ORDER BY d.seq LIMIT ?2");

/// The newest row the worker took: read backwards over the rows not taken yet (the backlog).
const NEWEST_TAKEN: &str =
    "SELECT coalesce((SELECT seq FROM webhook_deliveries WHERE state IS NOT NULL ORDER BY seq DESC LIMIT 1), 0)";

/// Takes a claimed delivery: pending (in the index of due ones), leased.
const LEASE: &str = "UPDATE webhook_deliveries SET state = 'pending', next_attempt_at = coalesce(next_attempt_at, created_at), \
     lease_until = ?1 WHERE seq = ?2";

/// The record of one attempt.
const RECORD_ATTEMPT: &str = "UPDATE webhook_deliveries SET state = ?2, attempts = attempts + 1, \
     next_attempt_at = ?3, last_status = ?4, last_error = ?5, finished_at = ?6, lease_until = NULL \
     WHERE seq = ?1";

fn due_of_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<crate::webhooks::Due> {
    let attempts: i64 = row.get(5)?;
    let delivery_id: String = row.get(1)?;
    // Read, not split out of the delivery id: an action id may hold a `:` of its own.
    let event_id: String = row.get(9)?;
    let sent: String = row.get(3)?;
    let (event_type, actor_id, payload): (Option<String>, Option<String>, Option<String>) =
        (row.get(6)?, row.get(7)?, row.get(8)?);
    let event_json = Sent::rebuild(&event_id, event_type.as_deref(), actor_id.as_deref(), payload.as_deref(), &sent)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(3, rusqlite::types::Type::Text, Box::new(e)))?;
    Ok(crate::webhooks::Due {
        row: row.get(0)?,
        target_json: row.get(2)?,
        event_json,
        result_json: row.get(4)?,
        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
        delivery_id,
    })
}

/// What an outbox row keeps of its event as sent: what the `events` row does not.
#[derive(Serialize)]
struct Sent<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    occurred_at: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    meta: Option<&'a std::collections::BTreeMap<String, String>>,
}

/// [`Sent`] as read back (keys of a migrated row may be null).
#[derive(Deserialize)]
struct SentRead<'a> {
    #[serde(borrow, default)]
    source: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    occurred_at: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    meta: Option<&'a serde_json::value::RawValue>,
}

impl<'a> Sent<'a> {
    fn of(event: &'a crate::event::Event) -> Sent<'a> {
        Sent { source: event.source.as_deref(), occurred_at: event.occurred_at.as_deref(), meta: event.meta.as_ref() }
    }

    /// The event as sent, in the key order of [`crate::event::Event`]'s own encoding.
    fn rebuild(
        event_id: &str,
        event_type: Option<&str>,
        actor_id: Option<&str>,
        payload: Option<&str>,
        sent: &str,
    ) -> serde_json::Result<String> {
        let sent: SentRead<'_> = serde_json::from_str(sent)?;
        let payload: Option<&serde_json::value::RawValue> = payload.map(serde_json::from_str).transpose()?;
        serde_json::to_string(&RebuiltEvent {
            id: event_id,
            event_type: event_type.unwrap_or_default(),
            source: sent.source.as_deref(),
            actor_id,
            occurred_at: sent.occurred_at.as_deref(),
            payload,
            meta: sent.meta.filter(|meta| meta.get() != "null"),
        })
    }
}

/// [`crate::event::Event`]'s keys, in its order.
#[derive(Serialize)]
struct RebuiltEvent<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    event_type: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    actor_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    occurred_at: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<&'a serde_json::value::RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    meta: Option<&'a serde_json::value::RawValue>,
}

fn delivery_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<crate::webhooks::DeliveryRow> {
    Ok(crate::webhooks::DeliveryRow {
        delivery_id: row.get(0)?,
        event_id: row.get(1)?,
        action_id: row.get(2)?,
        target_json: row.get(3)?,
        state: row.get(4)?,
        attempts: row.get(5)?,
        next_attempt_at: row.get(6)?,
        last_status: row.get(7)?,
        last_error: row.get(8)?,
        created_at: row.get(9)?,
        finished_at: row.get(10)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhooks::{DeliveryState, Outbox, Retried};

    /// A ledger written by schema `version`, holding what `rows` inserts.
    fn ledger_at_version(version: usize, rows: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let conn = Connection::open(dir.path().join(FILE_NAME)).unwrap();
        for (number, sql) in (1..).zip(&MIGRATIONS[..version]) {
            conn.execute_batch(&format!("BEGIN; {sql} PRAGMA user_version = {number}; COMMIT;")).unwrap();
        }
        conn.execute_batch(rows).unwrap();
        dir
    }

    /// Version 14 drops `entries_by_event`: a reversal still reads what the event it reverses
    /// awarded, through the member's entries (`entries_by_actor`, never a scan of all entries).
    #[test]
    fn without_entries_by_event_a_reversal_reads_the_members_entries() {
        let dir = ledger_at_version(
            13,
            "INSERT INTO entries (actor_id, event_id, action_id, scenario_id, points, kind, created_at, dated_at, \
                 reverses) VALUES ('ann', 'e1', 'give', 'buy', 10, 'award', 1, 1, NULL), \
                 ('bob', 'e2', 'give', 'buy', 20, 'award', 2, 2, NULL), ('ann', 'e3', 'give', 'buy', 5, 'award', 3, 3, NULL), \
                 ('ann', 'e4', 'back', 'refund', -4, 'reverse', 4, 4, 'e1');",
        );
        let store = SqliteStore::open(dir.path()).unwrap();
        assert_eq!(store.pragma("user_version").unwrap(), SCHEMA_VERSION.to_string());
        let conn = store.writer.lock().unwrap();
        let indexes: Vec<String> = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'entries' ORDER BY name")
            .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
            .unwrap();
        assert_eq!(indexes, ["entries_by_actor", "entries_reversing"]);
        let plan: Vec<String> = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {REVERSIBLE}"))
            .and_then(|mut s| s.query_map(params!["ann", "e1"], |r| r.get(3))?.collect())
            .unwrap();
        assert!(plan[0].contains("USING INDEX entries_by_actor"), "{plan:?}");
        assert!(!plan.iter().any(|step| step.starts_with("SCAN")), "{plan:?}");
        drop(conn);
        let reversible = store.reversible("ann", "e1").unwrap();
        assert_eq!((reversible.awarded, reversible.expired, reversible.reversed), (10, 0, 4));
    }

    /// A version-10 outbox (keyed by delivery id) keeps its deliveries through version 11: the
    /// pending one is claimed, the failed one is retried by its id, both list with their ids.
    #[test]
    fn the_version_10_outbox_migrates_with_its_deliveries() {
        let dir = ledger_at_version(
            10,
            "INSERT INTO webhook_deliveries (delivery_id, event_id, action_id, target, event, state, attempts, \
                 next_attempt_at, created_at) VALUES \
                 ('e1:tell', 'e1', 'tell', '{}', '{\"id\":\"e1\",\"type\":\"buy\",\"source\":\"till\",\"actor_id\":\"ann\",\"payload\":{\"total\":5}}', 'pending', 1, 5, 1), \
                 ('e2:tell', 'e2', 'tell', '{}', '{\"id\":\"e2\"}', 'failed', 8, 9, 2); \
                 INSERT INTO events (event_id, fingerprint, actor_id, result, processed_at, event_type, occurred_at, \
                 payload) VALUES ('e1', x'00', 'ann', '{}', 1, 'buy', 1, '{\"total\":5}');",
        );
        let store = SqliteStore::open(dir.path()).unwrap();
        assert_eq!(store.pragma("user_version").unwrap(), SCHEMA_VERSION.to_string());
        let ids: Vec<(String, String)> =
            store.list(None, None, 10).unwrap().into_iter().map(|row| (row.delivery_id, row.state)).collect();
        assert_eq!(ids, [("e2:tell".to_owned(), "failed".to_owned()), ("e1:tell".to_owned(), "pending".to_owned())]);
        let due = store.settle(&[], 10, 100, 10).unwrap();
        assert_eq!(due.iter().map(|d| d.delivery_id.as_str()).collect::<Vec<_>>(), ["e1:tell"]);
        assert_eq!(
            due[0].event_json, r#"{"id":"e1","type":"buy","source":"till","actor_id":"ann","payload":{"total":5}}"#,
            "the event as sent, rebuilt from `events` and what the row kept"
        );
        assert_eq!(store.retry("e2:tell", 10).unwrap(), Retried::Queued);
        assert_eq!(store.retry("e1:tell", 10).unwrap(), Retried::NotFailed(DeliveryState::Pending));
        assert_eq!(store.retry("e3:tell", 10).unwrap(), Retried::NotFound);
        assert_eq!(store.pending().unwrap(), 2);
    }

    /// A statement is compiled once on every connection, whatever values are bound to it: an
    /// `ORDER BY` over a column an equality binds would otherwise be compiled at each new value.
    #[test]
    fn statements_are_not_compiled_again_for_new_values() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        let planner = rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG;
        for conn in std::iter::once(&store.writer).chain(&store.readers) {
            assert!(conn.lock().unwrap().db_config(planner).unwrap(), "the query planner stability guarantee is on");
        }
        // The statements whose plans looked at their values: an `ORDER BY` over a column an
        // equality binds, and `LIMIT ?` (and one like them, a month's sum).
        let reader = store.readers[0].lock().unwrap();
        for (n, actor) in (1_i64..).zip(["ann", "bob", "cy"]) {
            let runs: [(&str, &[&dyn rusqlite::ToSql]); 4] = [
                (MEMBER_COUNT_ALL, &[&actor, &"buy"]),
                (MONTH_SUM, &[&actor, &"buy", &"payload.total", &n, &n]),
                (MEMBER_TIMES, &[&actor, &"buy", &n, &n]),
                (OPEN_LOTS, &[&actor, &n]),
            ];
            for (sql, values) in runs {
                let mut statement = reader.prepare_cached(sql).unwrap();
                let rows = statement.query_map(values, |_| Ok(())).unwrap().count();
                assert_eq!(rows, 0, "an empty ledger");
            }
        }
        for sql in [MEMBER_COUNT_ALL, MONTH_SUM, MEMBER_TIMES, OPEN_LOTS] {
            let compiled_again = reader.prepare_cached(sql).unwrap().get_status(rusqlite::StatementStatus::RePrepare);
            assert_eq!(compiled_again, 0, "compiled again for new values: {sql}");
        }
    }

    /// Version 11's per-day and per-hour counts become running totals: counts over days and
    /// hours, and over all time, are what they were.
    #[test]
    fn version_11_member_counters_become_running_totals() {
        let dir = ledger_at_version(
            11,
            "INSERT INTO member_days VALUES ('ann', 'buy', 10, 2), ('ann', 'buy', 12, 3), \
                 ('ann', 'buy', -9223372036854775808, 5), ('bob', 'buy', 11, 1), ('bob', 'buy', -9223372036854775808, 1); \
                 INSERT INTO member_hours VALUES ('ann', 'buy', 240, 1), ('ann', 'buy', 241, 1), ('ann', 'buy', 288, 3), \
                 ('bob', 'buy', 270, 1);",
        );
        let store = SqliteStore::open(dir.path()).unwrap();
        let (day, hour) = (|d: i64| d * MICROS_PER_DAY, |h: i64| h * MICROS_PER_HOUR);
        let (min, max) = (jiff::Timestamp::MIN.as_microsecond(), jiff::Timestamp::MAX.as_microsecond());
        for (actor, from, to, count) in [
            ("ann", day(10), day(11), 2),
            ("ann", day(11), day(13), 3),
            ("ann", day(0), day(13), 5),
            ("ann", hour(241), hour(242), 1),
            ("ann", hour(241), day(12) + hour(1), 4),
            ("ann", min, max, 5),
            ("bob", day(10), day(12), 1),
            ("bob", min, max, 1),
        ] {
            assert_eq!(store.member_count(actor, "buy", from, to).unwrap(), count, "{actor} [{from}, {to})");
        }
    }

    /// Version 12's per-day and per-hour sums are counted again as running sums when the rules
    /// that read them load: sums over days, hours, months and all time are what they were.
    #[test]
    fn version_12_member_sums_are_counted_again_as_running_sums() {
        let dir = ledger_at_version(
            12,
            "INSERT INTO member_history_types VALUES ('buy'); \
                 INSERT INTO member_sum_keys VALUES ('buy', 'payload.total'); \
                 INSERT INTO member_day_sums VALUES ('ann', 'buy', 'payload.total', 10, 99); \
                 INSERT INTO events (event_id, fingerprint, actor_id, result, processed_at, event_type, occurred_at, \
                 payload, member_type) VALUES \
                 ('a1', x'00', 'ann', '{}', 1, 'buy', 864000000000, '{\"total\":1}', 'buy'), \
                 ('a2', x'00', 'ann', '{}', 1, 'buy', 867600000000, '{\"total\":1.5}', 'buy'), \
                 ('a3', x'00', 'ann', '{}', 1, 'buy', 1036800000000, '{\"total\":3}', 'buy'), \
                 ('a4', x'00', 'ann', '{}', 1, 'buy', 3456000000000, '{\"total\":4}', 'buy'), \
                 ('b1', x'00', 'bob', '{}', 1, 'buy', 972000000000, '{\"total\":1}', 'buy');",
        );
        let store = SqliteStore::open(dir.path()).unwrap();
        let Ok(crate::expr::ast::Expr::Path(path, _)) = crate::expr::parser::parse("payload.total") else {
            panic!("a path")
        };
        let key = SumKey::new("buy", &path);
        assert_eq!(store.member_sum("ann", &key, 0, MICROS_PER_DAY).unwrap(), None, "not kept until the rules load");
        store.track_history(&["buy".to_owned()]).unwrap();
        store.track_sums(std::slice::from_ref(&key)).unwrap();
        let (day, hour) = (|d: i64| d * MICROS_PER_DAY, |h: i64| h * MICROS_PER_HOUR);
        let (min, max) = (jiff::Timestamp::MIN.as_microsecond(), jiff::Timestamp::MAX.as_microsecond());
        for (actor, from, to, sum) in [
            ("ann", day(10), day(11), 2.5),
            ("ann", day(11), day(13), 3.0),
            ("ann", day(0), day(13), 5.5),
            ("ann", day(12), day(41), 7.0),
            ("ann", day(0), day(60), 9.5),
            ("ann", hour(241), hour(242), 1.5),
            ("ann", hour(241), day(12) + hour(1), 4.5),
            ("ann", min, max, 9.5),
            ("bob", day(10), day(12), 1.0),
            ("bob", min, max, 1.0),
        ] {
            assert_eq!(store.member_sum(actor, &key, from, to).unwrap(), Some(sum), "{actor} [{from}, {to})");
        }
    }
}
