//! The PostgreSQL ledger (`--ledger postgres://…`): any number of `fluxflow serve` nodes share
//! one database. The books are written by the same posting core as SQLite
//! ([`super::posting::post`]); what is PostgreSQL's own is how a group's transaction is isolated:
//!
//! - each node's writer thread commits the events waiting as one transaction (group commit);
//! - the transaction first takes a transaction-scoped advisory lock per member it touches, in one
//!   sorted order (so two nodes never deadlock on members), so a balance read for a deduction
//!   stays exact until the commit, on one node or many;
//! - an id is stored once by the `events` primary key: when another node stored the same id
//!   first, the insert fails, the group rolls back and is posted again, and then reads the stored
//!   result (a replay) — nothing is applied twice;
//! - a lost connection fails the group (nothing acknowledged that was not committed); the pool
//!   makes new connections once the database answers again.
//!
//! tokio-postgres is asynchronous and the store traits are blocking (they run on the writer
//! thread and in `spawn_blocking`), so the store keeps a small runtime of its own and waits on it.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;

use crate::access::keys::{self, KeyError, KeyRecord, KeySet, KeyStore};
use crate::access::{KeyHash, KeyName, Scope};
use tokio_postgres::{NoTls, Statement};

use super::lots::{self, PointsState};
use super::member::{ALL_DAYS, CounterWindow, MICROS_PER_DAY, MICROS_PER_HOUR, SumKey, all_time};
use super::operations::{self, NewOperation, OperationOutcome, OperationRequest, OperationTx, StoredOperation};
use super::posting::post;
use super::tx::{Book, LedgerTx, Lot, NewEntry, NewEvent, NewLot, NewUse, Original, Reversible, StoredEvent};
use super::versions::{self, NewVersion, RulesVersion, RulesVersions, VersionSource};
use super::{
    Applied, Entry, EntryKind, EventWrite, Fingerprint, HistoryPage, LedgerError, LedgerStore, NewJob, PendingEvent,
    broken, now_micros, rfc3339,
};
use crate::event::Event;
use crate::graph::limits::{BudgetKey, Counter, Usage};
use crate::result::{EventResult, EventState, Job, JobEvent};

/// Connections kept by default (`--ledger-pool-size`).
pub const DEFAULT_POOL_SIZE: usize = 8;
/// Longest wait for one database operation before it counts as lost: below the default event
/// timeout (5 s), so a database that stops answering makes events 503, not 504.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(4);
/// Longest wait for a readiness check.
const PING_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest wait for a new connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How often a group is posted again after a conflict with another node before giving up.
const GROUP_ATTEMPTS: usize = 8;
/// Key of the advisory lock that serialises migrations between nodes starting together.
const MIGRATION_LOCK: i64 = 0x466c_7578_466c_6f77; // "FluxFlow"

/// The numbered migrations, oldest first, each applied in one transaction with its row in
/// `fluxflow_schema`. Never edit one that has shipped; add the next.
const MIGRATIONS: &[&str] = &[
    V1_SCHEMA,
    V2_LIMITS,
    V3_OPERATIONS,
    V4_MEMBER_HISTORY,
    V5_LOTS,
    V6_STREAM,
    V7_RULES_VERSIONS,
    V8_API_KEYS,
    V9_WEBHOOK_OUTBOX,
    V10_MEMBER_SUMS,
];

/// The schema version this code writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

const V1_SCHEMA: &str = "
CREATE TABLE events (
    event_id     TEXT PRIMARY KEY,
    fingerprint  BYTEA NOT NULL,
    actor_id     TEXT,
    result       TEXT NOT NULL,
    processed_at BIGINT NOT NULL,
    event_type   TEXT,
    occurred_at  BIGINT,
    payload      TEXT
);
CREATE TABLE entries (
    entry_id    BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    actor_id    TEXT NOT NULL,
    event_id    TEXT NOT NULL,
    action_id   TEXT NOT NULL,
    scenario_id TEXT NOT NULL,
    points      BIGINT NOT NULL,
    kind        TEXT NOT NULL,
    reason      TEXT,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT
);
CREATE INDEX entries_by_actor ON entries (actor_id, entry_id);
CREATE INDEX entries_by_event ON entries (event_id);
CREATE TABLE balances (
    actor_id   TEXT PRIMARY KEY,
    balance    BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE TABLE jobs (
    job_id     TEXT PRIMARY KEY,
    created_at BIGINT NOT NULL,
    total      BIGINT NOT NULL,
    queued     BIGINT NOT NULL
);
CREATE TABLE job_events (
    job_id   TEXT NOT NULL,
    idx      BIGINT NOT NULL,
    event_id TEXT NOT NULL,
    event    TEXT NOT NULL,
    state    TEXT NOT NULL,
    PRIMARY KEY (job_id, idx)
);
CREATE INDEX job_events_queued ON job_events (state) WHERE state = 'queued';
CREATE TABLE health (id INTEGER PRIMARY KEY, checked_at BIGINT NOT NULL);
";

/// Version 2: what scenarios with limits did (as SQLite's version 3).
const V2_LIMITS: &str = "
CREATE TABLE limit_uses (
    scenario_id TEXT NOT NULL,
    actor_id    TEXT NOT NULL,
    occurred_at BIGINT NOT NULL,
    times       BIGINT NOT NULL,
    points      BIGINT NOT NULL,
    PRIMARY KEY (scenario_id, actor_id, occurred_at)
);
CREATE TABLE limit_budgets (
    scenario_id  TEXT NOT NULL,
    period       TEXT NOT NULL,
    period_start BIGINT NOT NULL,
    times        BIGINT NOT NULL,
    points       BIGINT NOT NULL,
    PRIMARY KEY (scenario_id, period, period_start)
);
";

/// Version 3: operations on a member's points (as SQLite's version 4).
const V3_OPERATIONS: &str = "
CREATE TABLE operations (
    actor_id     TEXT NOT NULL,
    request_id   TEXT NOT NULL,
    fingerprint  BYTEA NOT NULL,
    kind         TEXT NOT NULL,
    points       BIGINT NOT NULL,
    answer       TEXT NOT NULL,
    applied_at   BIGINT NOT NULL,
    cancelled_by TEXT,
    PRIMARY KEY (actor_id, request_id)
);
";

/// Version 4: member history and its day and hour counters (as SQLite's version 5).
const V4_MEMBER_HISTORY: &str = "
ALTER TABLE events ADD COLUMN member_type TEXT;
CREATE INDEX events_by_member ON events (actor_id, member_type, occurred_at) WHERE member_type IS NOT NULL;
CREATE TABLE member_history_types (member_type TEXT PRIMARY KEY);
CREATE TABLE member_days (
    actor_id    TEXT NOT NULL,
    member_type TEXT NOT NULL,
    day         BIGINT NOT NULL,
    events      BIGINT NOT NULL,
    PRIMARY KEY (actor_id, member_type, day)
);
CREATE TABLE member_hours (
    actor_id    TEXT NOT NULL,
    member_type TEXT NOT NULL,
    hour        BIGINT NOT NULL,
    events      BIGINT NOT NULL,
    PRIMARY KEY (actor_id, member_type, hour)
);
";

/// Version 5: points as lots (as SQLite's version 6).
const V5_LOTS: &str = "
ALTER TABLE entries ADD COLUMN dated_at BIGINT;
UPDATE entries SET dated_at = created_at;
ALTER TABLE entries ADD COLUMN available_at BIGINT;
ALTER TABLE entries ADD COLUMN reverses TEXT;
CREATE INDEX entries_reversing ON entries (reverses, actor_id) WHERE reverses IS NOT NULL;
ALTER TABLE balances ADD COLUMN debt BIGINT NOT NULL DEFAULT 0;
ALTER TABLE balances ADD COLUMN next_expiry BIGINT;
CREATE TABLE lots (
    lot_id       BIGSERIAL PRIMARY KEY,
    actor_id     TEXT NOT NULL,
    source_id    TEXT NOT NULL,
    remaining    BIGINT NOT NULL,
    available_at BIGINT NOT NULL,
    expires_at   BIGINT
);
CREATE INDEX open_lots ON lots (actor_id, (coalesce(expires_at, 9223372036854775807)), lot_id) WHERE remaining > 0;
CREATE TABLE lot_spent (
    actor_id  TEXT NOT NULL,
    source_id TEXT NOT NULL,
    lot_id    BIGINT NOT NULL,
    points    BIGINT NOT NULL,
    PRIMARY KEY (actor_id, source_id, lot_id)
);
";

/// Version 6: the highest sequence applied per event-stream subject (as SQLite's version 8).
const V6_STREAM: &str = "
CREATE TABLE stream_positions (
    subject  TEXT PRIMARY KEY,
    sequence BIGINT NOT NULL
);
";

/// Version 7: rules versions (as SQLite's version 9).
const V7_RULES_VERSIONS: &str = "
CREATE TABLE rules_versions (
    rules_version BIGINT PRIMARY KEY,
    hash          TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    author        TEXT,
    source        TEXT NOT NULL,
    yaml          TEXT NOT NULL
);
";
/// Version 8: API keys, as hashes (as the keys database of SQLite and `none`).
const V8_API_KEYS: &str = "
CREATE TABLE api_keys (
    name       TEXT NOT NULL,
    hash       BYTEA NOT NULL UNIQUE,
    scopes     TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    revoked_at BIGINT,
    revoked_by TEXT
);
CREATE UNIQUE INDEX live_key_names ON api_keys (name) WHERE revoked_at IS NULL;
";
/// Version 9: the webhook outbox (as SQLite's version 10).
const V9_WEBHOOK_OUTBOX: &str = "
CREATE TABLE webhook_deliveries (
    delivery_id     TEXT PRIMARY KEY,
    event_id        TEXT NOT NULL,
    action_id       TEXT NOT NULL,
    target          TEXT NOT NULL,
    event           TEXT NOT NULL,
    state           TEXT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    lease_until     BIGINT,
    last_status     BIGINT,
    last_error      TEXT,
    created_at      BIGINT NOT NULL,
    finished_at     BIGINT
);
CREATE INDEX due_deliveries ON webhook_deliveries (next_attempt_at) WHERE state = 'pending';
";
/// Version 10: counters of the sums the rules read (as SQLite's version 7), per member, type
/// and path, per UTC day, in all (`day` = [`ALL_DAYS`]) and per UTC hour, added to by each
/// group's insert as counts are. Which sums are kept is in `member_sum_keys`, with the path as
/// an SQL/JSON path (`SumKey::json_path`) that the insert reads the payload by.
const V10_MEMBER_SUMS: &str = "
CREATE TABLE member_sum_keys (
    member_type TEXT NOT NULL,
    path        TEXT NOT NULL,
    json_path   JSONPATH NOT NULL,
    PRIMARY KEY (member_type, path)
);
CREATE TABLE member_day_sums (
    actor_id    TEXT NOT NULL,
    member_type TEXT NOT NULL,
    path        TEXT NOT NULL,
    day         BIGINT NOT NULL,
    total       DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (actor_id, member_type, path, day)
);
CREATE TABLE member_hour_sums (
    actor_id    TEXT NOT NULL,
    member_type TEXT NOT NULL,
    path        TEXT NOT NULL,
    hour        BIGINT NOT NULL,
    total       DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (actor_id, member_type, path, hour)
);
";
const QUEUE_DELIVERY: &str = "INSERT INTO webhook_deliveries \
     (delivery_id, event_id, action_id, target, event, state, next_attempt_at, created_at) \
     VALUES ($1, $2, $3, $4, $5, 'pending', $6, $6) ON CONFLICT (delivery_id) DO NOTHING";
/// Claims due deliveries no node holds: `SKIP LOCKED`, so two nodes claiming at once take
/// different ones, and the lease keeps them from being claimed again until the attempt is over.
const CLAIM_DELIVERIES: &str = "WITH claimed AS (UPDATE webhook_deliveries SET lease_until = $2 WHERE delivery_id IN ( \
     SELECT delivery_id FROM webhook_deliveries WHERE state = 'pending' AND next_attempt_at <= $1 \
     AND (lease_until IS NULL OR lease_until <= $1) ORDER BY next_attempt_at LIMIT $3 FOR UPDATE SKIP LOCKED) \
     RETURNING delivery_id, event_id, target, event, attempts) \
     SELECT c.delivery_id, c.target, c.event, coalesce(e.result, 'null'), c.attempts \
     FROM claimed c LEFT JOIN events e ON e.event_id = c.event_id";
const RECORD_ATTEMPT: &str = "UPDATE webhook_deliveries SET state = $2, attempts = attempts + 1, \
     next_attempt_at = $3, last_status = $4, last_error = $5, finished_at = $6, lease_until = NULL \
     WHERE delivery_id = $1";
/// Taken while a version is numbered and stored, so two nodes publishing at once get 2 and 3.
const RULES_VERSION_LOCK: i64 = 0x666c_7578_7275_6c65;
const VERSION_COLUMNS: &str = "rules_version, hash, created_at, author, source";

const ADVANCE_STREAMS: &str = "INSERT INTO stream_positions (subject, sequence) \
     SELECT * FROM unnest($1::text[], $2::int8[]) \
     ON CONFLICT (subject) DO UPDATE SET sequence = greatest(stream_positions.sequence, excluded.sequence)";
const STREAM_POSITION: &str = "SELECT sequence FROM stream_positions WHERE subject = $1";
const FIND_EVENT: &str = "SELECT fingerprint, result FROM events WHERE event_id = $1";
const READ_BOOK: &str = "SELECT balance, debt, next_expiry FROM balances WHERE actor_id = $1";
const READ_BOOKS: &str = "SELECT actor_id, balance, debt, next_expiry FROM balances WHERE actor_id = ANY($1)";
/// One primary-key lookup per id. Not `event_id = ANY($1)`: the connection caches a generic plan
/// chosen while the table was small, a sequential scan, which then reads the whole table per group
/// (measured: a third of the throughput). The `LIMIT` keeps the subquery from being flattened into a
/// join the planner could hash.
const FIND_EVENTS: &str = "SELECT u.id, e.fingerprint, e.result FROM unnest($1::text[]) AS u(id) \
     CROSS JOIN LATERAL (SELECT fingerprint, result FROM events WHERE event_id = u.id LIMIT 1) AS e";
const OPEN_LOTS: &str = "SELECT lot_id, source_id, remaining, available_at, expires_at FROM lots \
     WHERE actor_id = $1 AND remaining > 0 ORDER BY coalesce(expires_at, 9223372036854775807), lot_id LIMIT $2";
const PENDING_POINTS: &str = "SELECT coalesce(sum(remaining), 0)::int8 FROM lots \
     WHERE actor_id = $1 AND remaining > 0 AND available_at > $2";
const INSERT_LOTS: &str = "INSERT INTO lots (actor_id, source_id, remaining, available_at, expires_at) \
     SELECT * FROM unnest($1::text[], $2::text[], $3::int8[], $4::int8[], $5::int8[])";
/// One row per member (the soonest of the group's), in sorted order (as balances).
const LOWER_NEXT_EXPIRIES: &str = "INSERT INTO balances (actor_id, balance, updated_at, next_expiry) \
     SELECT a, 0, 0, min(e) FROM unnest($1::text[], $2::int8[]) AS u(a, e) GROUP BY a ORDER BY a \
     ON CONFLICT (actor_id) DO UPDATE SET next_expiry = least(balances.next_expiry, excluded.next_expiry)";
const TAKE_FROM_LOT: &str = "UPDATE lots SET remaining = remaining - $2 WHERE lot_id = $1";
const SET_NEXT_EXPIRY: &str = "UPDATE balances SET next_expiry = (SELECT min(expires_at) FROM lots \
     WHERE actor_id = $1 AND remaining > 0 AND expires_at IS NOT NULL) WHERE actor_id = $1";
const SET_DEBT: &str = "INSERT INTO balances (actor_id, balance, updated_at, debt) VALUES ($1, 0, 0, $2) \
     ON CONFLICT (actor_id) DO UPDATE SET debt = excluded.debt";
const TIER_POINTS: &str = "SELECT coalesce(sum(points), 0)::int8 FROM entries \
     WHERE actor_id = $1 AND kind IN ('award', 'reverse') AND dated_at >= $2 AND dated_at < $3";
const ENTRIES_SUM: &str =
    "SELECT coalesce(sum(points), 0)::int8 FROM entries WHERE actor_id = $1 AND coalesce(dated_at, created_at) <= $2";
/// Events stored before their type and time were kept cannot be reversed.
const ORIGINAL: &str = "SELECT actor_id, event_type, occurred_at, payload FROM events \
     WHERE event_id = $1 AND event_type IS NOT NULL AND occurred_at IS NOT NULL";
const REVERSIBLE: &str = "SELECT coalesce(sum(CASE WHEN kind = 'award' THEN points END), 0)::int8, \
     coalesce(sum(CASE WHEN kind = 'expire' THEN -points END), 0)::int8, \
     (SELECT coalesce(sum(-points), 0)::int8 FROM entries WHERE reverses = $2 AND actor_id = $1) \
     FROM entries WHERE event_id = $2 AND actor_id = $1";
const EXPIRED_MEMBERS: &str = "SELECT actor_id FROM balances WHERE next_expiry <= $1 LIMIT $2";
/// As SQLite's: whole days and the hours at either end from the counters, the partial hours from
/// the index, each end added or subtracted.
const MEMBER_COUNT_BY_COUNTERS: &str = "SELECT (\
     coalesce((SELECT sum(events) FROM member_days WHERE actor_id = $1 AND member_type = $2 AND day >= $3 AND day < $4), 0) \
     + $13::int8 * (coalesce((SELECT sum(events) FROM member_hours WHERE actor_id = $1 AND member_type = $2 AND hour >= $5 AND hour < $6), 0) \
       + (SELECT count(*) FROM events WHERE actor_id = $1 AND member_type = $2 AND occurred_at >= $9 AND occurred_at < $10)) \
     + $14::int8 * (coalesce((SELECT sum(events) FROM member_hours WHERE actor_id = $1 AND member_type = $2 AND hour >= $7 AND hour < $8), 0) \
       + (SELECT count(*) FROM events WHERE actor_id = $1 AND member_type = $2 AND occurred_at >= $11 AND occurred_at < $12)))::int8";
const MEMBER_COUNT_ALL: &str = "SELECT events FROM member_days WHERE actor_id = $1 AND member_type = $2 AND day = $3";
/// The value at a sum's SQL/JSON path (`$path`) in a stored payload (`$payload`, JSON text), or
/// NULL. A payload string may hold `\u0000`, which `jsonb` refuses: it is read as U+FFFD (only
/// numbers are read from it, so no number changes, and the text stays valid JSON).
macro_rules! payload_number {
    ($payload:literal, $path:literal) => {
        concat!("jsonb_path_query_first(replace(", $payload, ", '\\u0000', '\\ufffd')::jsonb, ", $path, ", '{}', true)")
    };
}
/// A sum as counts are read ([`MEMBER_COUNT_BY_COUNTERS`]; the sum's path `$15`, its SQL/JSON
/// path `$16`), or NULL when the sum is not kept: the keys cannot change under a reader (a
/// group holds the member-history lock shared; a read is one statement).
const MEMBER_SUM_BY_COUNTERS: &str = concat!(
    "SELECT CASE WHEN EXISTS \
     (SELECT 1 FROM member_sum_keys WHERE member_type = $2 AND path = $15) THEN (\
     coalesce((SELECT sum(total) FROM member_day_sums WHERE actor_id = $1 AND member_type = $2 AND path = $15 AND day >= $3 AND day < $4), 0) \
     + $13::int8 * (coalesce((SELECT sum(total) FROM member_hour_sums WHERE actor_id = $1 AND member_type = $2 AND path = $15 AND hour >= $5 AND hour < $6), 0) \
       + coalesce((SELECT sum(v::float8) FROM (SELECT ",
    payload_number!("payload", "$16::text::jsonpath"),
    " AS v \
         FROM events WHERE actor_id = $1 AND member_type = $2 AND occurred_at >= $9 AND occurred_at < $10) AS p \
         WHERE jsonb_typeof(v) = 'number'), 0)) \
     + $14::int8 * (coalesce((SELECT sum(total) FROM member_hour_sums WHERE actor_id = $1 AND member_type = $2 AND path = $15 AND hour >= $7 AND hour < $8), 0) \
       + coalesce((SELECT sum(v::float8) FROM (SELECT ",
    payload_number!("payload", "$16::text::jsonpath"),
    " AS v \
         FROM events WHERE actor_id = $1 AND member_type = $2 AND occurred_at >= $11 AND occurred_at < $12) AS p \
         WHERE jsonb_typeof(v) = 'number'), 0))) END"
);
/// A kept sum over all time, or NULL when it is not kept.
const MEMBER_SUM_ALL: &str = "SELECT CASE WHEN EXISTS \
     (SELECT 1 FROM member_sum_keys WHERE member_type = $2 AND path = $3) THEN coalesce( \
     (SELECT total FROM member_day_sums WHERE actor_id = $1 AND member_type = $2 AND path = $3 AND day = $4), 0) END";
const MEMBER_HISTORY: &str = "SELECT occurred_at, payload FROM events \
     WHERE actor_id = $1 AND member_type = $2 AND occurred_at >= $3 AND occurred_at < $4 ORDER BY occurred_at";
const MEMBER_TIMES: &str = "SELECT occurred_at FROM events \
     WHERE actor_id = $1 AND member_type = $2 AND occurred_at < $3 ORDER BY occurred_at DESC LIMIT $4";
const ACTOR_USAGE: &str = "SELECT coalesce(sum(times), 0)::int8, coalesce(sum(points), 0)::int8 FROM limit_uses \
     WHERE scenario_id = $1 AND actor_id = $2 AND occurred_at >= $3 AND occurred_at < $4";
const BUDGET_USAGE: &str =
    "SELECT times, points FROM limit_budgets WHERE scenario_id = $1 AND period = $2 AND period_start = $3";
/// One row per (scenario, member, event time): two uses at the same microsecond add up.
const ADD_USES: &str = "INSERT INTO limit_uses (scenario_id, actor_id, occurred_at, times, points) \
     SELECT s, a, o, count(*), sum(p) FROM unnest($1::text[], $2::text[], $3::int8[], $4::int8[]) AS u(s, a, o, p) \
     GROUP BY s, a, o ORDER BY s, a, o ON CONFLICT (scenario_id, actor_id, occurred_at) DO UPDATE SET \
     times = limit_uses.times + excluded.times, points = limit_uses.points + excluded.points";
/// One row per counter (a counter twice in one upsert is an error).
const ADD_TO_BUDGETS: &str = "INSERT INTO limit_budgets (scenario_id, period, period_start, times, points) \
     SELECT s, p, b, sum(t), sum(n) FROM unnest($1::text[], $2::text[], $3::int8[], $4::int8[], $5::int8[]) \
     AS u(s, p, b, t, n) GROUP BY s, p, b ORDER BY s, p, b \
     ON CONFLICT (scenario_id, period, period_start) DO UPDATE SET \
     times = limit_budgets.times + excluded.times, points = limit_budgets.points + excluded.points";
// The group's writes, many rows per statement (arrays unnested in order).
/// The lower-cased type (`m`) is kept only for the types whose history the rules read.
/// In one statement, so a group without member history pays nothing more: the events (the
/// lower-cased type `m` kept only for the types whose history the rules read), then the day,
/// all-time and hour counters of those that kept it.
const INSERT_EVENTS: &str = concat!(
    "WITH inserted AS (\
     INSERT INTO events (event_id, fingerprint, actor_id, result, processed_at, event_type, occurred_at, payload, member_type) \
     SELECT i, f, a, r, p, t, o, y, CASE WHEN m IN (SELECT member_type FROM member_history_types) THEN m END \
     FROM unnest($1::text[], $2::bytea[], $3::text[], $4::text[], $5::int8[], $6::text[], $7::int8[], $8::text[], \
     $9::text[]) AS u(i, f, a, r, p, t, o, y, m) \
     RETURNING actor_id, member_type, occurred_at, CASE WHEN member_type IS NOT NULL THEN payload END AS payload), \
   indexed AS (SELECT actor_id, member_type, occurred_at, payload FROM inserted WHERE member_type IS NOT NULL), \
   days AS (INSERT INTO member_days (actor_id, member_type, day, events) \
     SELECT actor_id, member_type, day, count(*) FROM ( \
       SELECT actor_id, member_type, floor(occurred_at::numeric / 86400000000)::int8 AS day FROM indexed \
       UNION ALL SELECT actor_id, member_type, (-9223372036854775807 - 1)::int8 FROM indexed) AS d \
     GROUP BY actor_id, member_type, day ORDER BY actor_id, member_type, day \
     ON CONFLICT (actor_id, member_type, day) DO UPDATE SET events = member_days.events + excluded.events), \
   hours AS (INSERT INTO member_hours (actor_id, member_type, hour, events) \
     SELECT actor_id, member_type, floor(occurred_at::numeric / 3600000000)::int8 AS hour, count(*) FROM indexed \
     GROUP BY actor_id, member_type, hour ORDER BY actor_id, member_type, hour \
     ON CONFLICT (actor_id, member_type, hour) DO UPDATE SET events = member_hours.events + excluded.events), \
   numbers AS (SELECT actor_id, member_type, path, occurred_at, v::float8 AS n FROM ( \
       SELECT i.actor_id, i.member_type, k.path, i.occurred_at, \
       ",
    payload_number!("i.payload", "k.json_path"),
    " AS v \
       FROM indexed i JOIN member_sum_keys k ON k.member_type = i.member_type WHERE i.payload IS NOT NULL) AS found \
     WHERE jsonb_typeof(v) = 'number'), \
   day_sums AS (INSERT INTO member_day_sums (actor_id, member_type, path, day, total) \
     SELECT actor_id, member_type, path, day, sum(n) FROM ( \
       SELECT actor_id, member_type, path, floor(occurred_at::numeric / 86400000000)::int8 AS day, n FROM numbers \
       UNION ALL SELECT actor_id, member_type, path, (-9223372036854775807 - 1)::int8, n FROM numbers) AS d \
     GROUP BY actor_id, member_type, path, day ORDER BY actor_id, member_type, path, day \
     ON CONFLICT (actor_id, member_type, path, day) DO UPDATE SET total = member_day_sums.total + excluded.total), \
   hour_sums AS (INSERT INTO member_hour_sums (actor_id, member_type, path, hour, total) \
     SELECT actor_id, member_type, path, floor(occurred_at::numeric / 3600000000)::int8 AS hour, sum(n) FROM numbers \
     GROUP BY actor_id, member_type, path, hour ORDER BY actor_id, member_type, path, hour \
     ON CONFLICT (actor_id, member_type, path, hour) DO UPDATE SET total = member_hour_sums.total + excluded.total) \
   SELECT count(*) FROM inserted"
);
/// Every group holds this lock shared; re-indexing member history holds it alone, so no group
/// writes events by an older set of indexed types once the new one is committed.
const LOCK_HISTORY_SHARED: &str = "SELECT pg_advisory_xact_lock_shared($1)";
/// Key of that lock.
const HISTORY_LOCK: i64 = 0x466c_7578_4869_7374; // "FluxHist"
const MARK_JOB_EVENTS: &str = "UPDATE job_events j SET state = u.state \
     FROM unnest($1::text[], $2::text[], $3::int8[]) AS u(state, job_id, idx) WHERE j.job_id = u.job_id AND j.idx = u.idx";
const INSERT_ENTRIES: &str = "INSERT INTO entries (actor_id, event_id, action_id, scenario_id, points, kind, reason, \
     created_at, expires_at, dated_at, available_at, reverses) \
     SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int8[], $6::text[], $7::text[], \
     $8::int8[], $9::int8[], $10::int8[], $11::int8[], $12::text[])";
/// One row per member (a member twice in one upsert is an error), in sorted order.
const ADD_TO_BALANCES: &str = "INSERT INTO balances (actor_id, balance, updated_at) \
     SELECT a, sum(p), max(t) FROM unnest($1::text[], $2::int8[], $3::int8[]) AS u(a, p, t) GROUP BY a ORDER BY a \
     ON CONFLICT (actor_id) DO UPDATE SET balance = balances.balance + excluded.balance, updated_at = excluded.updated_at";
/// One advisory lock per member, taken in the order of their keys (the sort happens before the
/// locks are taken), held until the transaction ends.
const LOCK_MEMBERS: &str = "SELECT count(pg_advisory_xact_lock(k)) FROM \
     (SELECT DISTINCT hashtextextended(a, 0) AS k FROM unnest($1::text[]) AS a ORDER BY k) AS sorted";

/// Where a URL points, without its password: for messages.
fn describe(config: &tokio_postgres::Config) -> String {
    let host = config
        .get_hosts()
        .first()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .unwrap_or_else(|| "localhost".into());
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let database = config.get_dbname().or(config.get_user()).unwrap_or("postgres");
    format!("host {host}:{port}, database {database}")
}

/// A PostgreSQL failure while running. A lost or refused connection, a timeout, a deadlock or
/// a serialisation failure may pass (retryable); an error in the statement will not.
fn pg_error(e: tokio_postgres::Error) -> LedgerError {
    let retryable = match e.code() {
        None => true,
        Some(code) => {
            code == &SqlState::T_R_SERIALIZATION_FAILURE
                || code == &SqlState::T_R_DEADLOCK_DETECTED
                || code == &SqlState::UNIQUE_VIOLATION
                || code == &SqlState::ADMIN_SHUTDOWN
                || code == &SqlState::CANNOT_CONNECT_NOW
                || code == &SqlState::TOO_MANY_CONNECTIONS
                || code.code().starts_with("08")
        }
    };
    let message =
        if e.code().is_none() { "lost the connection to PostgreSQL" } else { "PostgreSQL refused a statement" };
    LedgerError::unavailable(message, retryable, Some(Arc::new(e)))
}

/// The SQL state PostgreSQL answered, when the error is a statement's.
fn sql_state(e: &LedgerError) -> Option<&SqlState> {
    let LedgerError::Unavailable { source: Some(source), .. } = e else { return None };
    source.downcast_ref::<tokio_postgres::Error>().and_then(|e| e.code())
}

/// True for the failures that mean "another node got there first": post the group again.
fn is_race(e: &LedgerError) -> bool {
    sql_state(e).is_some_and(|code| {
        code == &SqlState::UNIQUE_VIOLATION
            || code == &SqlState::T_R_DEADLOCK_DETECTED
            || code == &SqlState::T_R_SERIALIZATION_FAILURE
    })
}

/// True when the error says the connection itself failed or stopped answering (not a statement).
fn connection_lost(e: &LedgerError) -> bool {
    match e {
        LedgerError::Unavailable { source: None, retryable, .. } => *retryable,
        LedgerError::Unavailable { source: Some(source), .. } => {
            source.downcast_ref::<tokio_postgres::Error>().is_some_and(|e| e.code().is_none())
        }
        _ => false,
    }
}

fn pool_error(e: PoolError) -> LedgerError {
    match e {
        PoolError::Backend(e) => pg_error(e),
        other => LedgerError::unavailable("no PostgreSQL connection", true, Some(Arc::new(other))),
    }
}

fn timed_out() -> LedgerError {
    LedgerError::unavailable("PostgreSQL did not answer in time", true, None)
}

/// The PostgreSQL ledger.
pub struct PostgresStore {
    runtime: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
    pool: Pool,
    target: String,
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which panics inside another runtime: let it go in the background.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl PostgresStore {
    /// Connects with up to `pool_size` connections, creates or migrates the schema, and fails
    /// with a message naming host and database (never the password) when the server cannot be
    /// reached or its schema is newer than this binary.
    pub fn connect(url: &str, pool_size: usize) -> Result<PostgresStore, LedgerError> {
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e: tokio_postgres::Error| LedgerError::open("--ledger is not a valid PostgreSQL URL", e))?;
        // A peer that vanishes without a reset (a dropped route) is noticed by the kernel too.
        config
            .connect_timeout(CONNECT_TIMEOUT)
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(30))
            .tcp_user_timeout(OPERATION_TIMEOUT);
        if config.get_application_name().is_none() {
            config.application_name("fluxflow");
        }
        let target = describe(&config);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("ledger-pg")
            .enable_all()
            .build()
            .map_err(|e| LedgerError::open("cannot start the PostgreSQL runtime", e))?;
        let manager = Manager::from_config(config, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = {
            let _entered = runtime.enter();
            Pool::builder(manager)
                .max_size(pool_size.max(1))
                .runtime(Runtime::Tokio1)
                .wait_timeout(Some(OPERATION_TIMEOUT))
                .create_timeout(Some(CONNECT_TIMEOUT))
                .recycle_timeout(Some(CONNECT_TIMEOUT))
                .build()
                .map_err(|e| LedgerError::open("cannot make the PostgreSQL connection pool", e))?
        };
        let handle = runtime.handle().clone();
        let store = PostgresStore { runtime: Some(runtime), handle, pool, target };
        store.migrate().map_err(|e| match e {
            too_new @ LedgerError::SchemaTooNew { .. } => too_new,
            LedgerError::Unavailable { source: Some(source), retryable: true, .. } => LedgerError::Open {
                message: format!("cannot reach PostgreSQL at {}", store.target),
                source: Some(source),
            },
            other => LedgerError::Open {
                message: format!("cannot use PostgreSQL at {}", store.target),
                source: Some(Arc::new(other)),
            },
        })?;
        Ok(store)
    }

    /// Where the store points (host, port, database; never the password).
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Runs a future on the store's runtime and waits for it, at most [`OPERATION_TIMEOUT`].
    /// Callable from plain threads, `spawn_blocking` and (via `block_in_place`) runtime workers.
    fn block<T>(&self, future: impl Future<Output = Result<T, LedgerError>>) -> Result<T, LedgerError> {
        self.block_within(OPERATION_TIMEOUT, future)
    }

    fn block_within<T>(
        &self,
        limit: Duration,
        future: impl Future<Output = Result<T, LedgerError>>,
    ) -> Result<T, LedgerError> {
        let run = || {
            self.handle
                .block_on(async { tokio::time::timeout(limit, future).await.unwrap_or_else(|_| Err(timed_out())) })
        };
        match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(run)
            }
            _ => run(),
        }
    }

    fn client(&self) -> Result<deadpool_postgres::Client, LedgerError> {
        self.block(async { self.pool.get().await.map_err(pool_error) })
    }

    fn migrate(&self) -> Result<(), LedgerError> {
        let mut client = self.client()?;
        self.block(async {
            let tx = client.transaction().await.map_err(pg_error)?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await.map_err(pg_error)?;
            tx.batch_execute(
                "CREATE TABLE IF NOT EXISTS fluxflow_schema (
                     version    BIGINT PRIMARY KEY,
                     applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
                 )",
            )
            .await
            .map_err(pg_error)?;
            let row =
                tx.query_one("SELECT coalesce(max(version), 0) FROM fluxflow_schema", &[]).await.map_err(pg_error)?;
            let found: i64 = get(&row, 0)?;
            if found > SCHEMA_VERSION {
                return Err(LedgerError::SchemaTooNew {
                    place: format!("PostgreSQL at {}", self.target),
                    found,
                    known: SCHEMA_VERSION,
                });
            }
            for (number, sql) in (1_i64..).zip(MIGRATIONS).skip(usize::try_from(found).unwrap_or(0)) {
                tx.batch_execute(sql).await.map_err(pg_error)?;
                tx.execute("INSERT INTO fluxflow_schema (version) VALUES ($1)", &[&number]).await.map_err(pg_error)?;
                tracing::info!(version = number, "PostgreSQL ledger schema migrated");
            }
            tx.commit().await.map_err(pg_error)
        })
    }

    /// Posts a group in one transaction: members locked in sorted order, then each event.
    fn try_write(&self, events: &[EventWrite]) -> Result<Vec<Applied>, LedgerError> {
        let mut client = self.client()?;
        let outcome = self.write_group(&mut client, events);
        if outcome.as_ref().is_err_and(connection_lost) {
            // Its state is unknown (a statement may still be on the wire): never reuse it.
            drop(deadpool_postgres::Object::take(client));
        }
        outcome
    }

    fn write_group(
        &self,
        client: &mut deadpool_postgres::Client,
        events: &[EventWrite],
    ) -> Result<Vec<Applied>, LedgerError> {
        let tx = self.block(async { client.transaction().await.map_err(pg_error) })?;
        let mut keys: Vec<String> = events.iter().flat_map(EventWrite::lock_keys).collect();
        keys.sort_unstable();
        keys.dedup();
        // Always sent: the member-history lock goes with it.
        let lock = Some(keys);
        let statements = self.statements(&tx)?;
        let applied = {
            // The locks go first in the pipeline: every later statement of the group runs under them.
            let mut pg = PgTx::new(self, &tx, statements, lock);
            let actors: Vec<String> = events.iter().filter_map(|e| e.event.actor_id.clone()).collect();
            let ids: Vec<String> = events.iter().map(|e| e.event.id.clone()).collect();
            pg.read_group(actors, ids)?;
            let applied = events
                .iter()
                .map(|event| post(&mut pg, &event.posting(), now_micros()))
                .collect::<Result<Vec<_>, _>>()?;
            pg.flush_then(async { Ok(()) })?;
            applied
        };
        self.block(async { tx.commit().await.map_err(pg_error) })?;
        Ok(applied)
    }

    /// Applies an operation in a transaction of its own, under the member's lock (the same lock
    /// as events', so an operation and an event of one member never interleave, on any node).
    fn operation(
        &self,
        client: &mut deadpool_postgres::Client,
        request: &OperationRequest,
    ) -> Result<OperationOutcome, LedgerError> {
        let tx = self.block(async { client.transaction().await.map_err(pg_error) })?;
        let statements = self.statements(&tx)?;
        let outcome = {
            let lock = Some(vec![request.actor_id.clone()]);
            let mut pg = PgTx::new(self, &tx, statements, lock);
            let outcome = operations::apply(&mut pg, request, now_micros())?;
            pg.flush_then(async { Ok(()) })?;
            outcome
        };
        if matches!(outcome, OperationOutcome::Done(_)) {
            self.block(async { tx.commit().await.map_err(pg_error) })?;
        }
        Ok(outcome)
    }

    /// The group's statements, prepared once per connection (the pool's statement cache).
    fn statements(&self, tx: &deadpool_postgres::Transaction<'_>) -> Result<GroupStatements, LedgerError> {
        self.block(async {
            Ok(GroupStatements {
                lock_members: tx.prepare_cached(LOCK_MEMBERS).await.map_err(pg_error)?,
                lock_history_shared: tx.prepare_cached(LOCK_HISTORY_SHARED).await.map_err(pg_error)?,
                find_event: tx.prepare_cached(FIND_EVENT).await.map_err(pg_error)?,
                insert_events: tx.prepare_cached(INSERT_EVENTS).await.map_err(pg_error)?,
                mark_job_events: tx.prepare_cached(MARK_JOB_EVENTS).await.map_err(pg_error)?,
                read_book: tx.prepare_cached(READ_BOOK).await.map_err(pg_error)?,
                read_books: tx.prepare_cached(READ_BOOKS).await.map_err(pg_error)?,
                find_events: tx.prepare_cached(FIND_EVENTS).await.map_err(pg_error)?,
                insert_entries: tx.prepare_cached(INSERT_ENTRIES).await.map_err(pg_error)?,
                add_to_balances: tx.prepare_cached(ADD_TO_BALANCES).await.map_err(pg_error)?,
                actor_usage: tx.prepare_cached(ACTOR_USAGE).await.map_err(pg_error)?,
                budget_usage: tx.prepare_cached(BUDGET_USAGE).await.map_err(pg_error)?,
                add_uses: tx.prepare_cached(ADD_USES).await.map_err(pg_error)?,
                add_to_budgets: tx.prepare_cached(ADD_TO_BUDGETS).await.map_err(pg_error)?,
                insert_lots: tx.prepare_cached(INSERT_LOTS).await.map_err(pg_error)?,
                lower_next_expiries: tx.prepare_cached(LOWER_NEXT_EXPIRIES).await.map_err(pg_error)?,
                advance_streams: tx.prepare_cached(ADVANCE_STREAMS).await.map_err(pg_error)?,
            })
        })
    }

    fn read<T>(
        &self,
        f: impl AsyncFnOnce(&deadpool_postgres::Client) -> Result<T, tokio_postgres::Error>,
    ) -> Result<T, LedgerError> {
        let client = self.client()?;
        let outcome = self.block(async { f(&client).await.map_err(pg_error) });
        if outcome.as_ref().is_err_and(connection_lost) {
            drop(deadpool_postgres::Object::take(client));
        }
        outcome
    }
}

/// Prepared once per connection. Every statement sent in a pipeline must be prepared: a future
/// of tokio-postgres sends its request at its first poll only when the statement is prepared
/// (with SQL text it first sends a Parse and waits for the answer), and the order of sending is
/// what keeps the member locks ahead of every write and read of the group.
#[derive(Clone)]
struct GroupStatements {
    lock_members: Statement,
    lock_history_shared: Statement,
    find_event: Statement,
    insert_events: Statement,
    mark_job_events: Statement,
    read_book: Statement,
    read_books: Statement,
    find_events: Statement,
    insert_entries: Statement,
    add_to_balances: Statement,
    actor_usage: Statement,
    budget_usage: Statement,
    add_uses: Statement,
    add_to_budgets: Statement,
    insert_lots: Statement,
    lower_next_expiries: Statement,
    advance_streams: Statement,
}

/// A statement sent but not yet awaited.
type Pending<'a> = Pin<Box<dyn Future<Output = Result<u64, tokio_postgres::Error>> + Send + 'a>>;

/// Rows written by the core and not yet sent, one column per vector.
#[derive(Default)]
struct Rows {
    entries: EntryRows,
    events: EventRows,
    jobs: (Vec<&'static str>, Vec<String>, Vec<i64>),
    uses: UseRows,
    budgets: BudgetRows,
    lots: LotRows,
    /// Per subject, the furthest stream sequence the group applied. Sorted, so two nodes'
    /// groups upsert shared subjects in one order and cannot deadlock.
    positions: std::collections::BTreeMap<String, i64>,
}

#[derive(Default)]
struct LotRows {
    actor: Vec<String>,
    source: Vec<String>,
    remaining: Vec<i64>,
    available_at: Vec<i64>,
    expires_at: Vec<Option<i64>>,
    /// Members whose `next_expiry` a lot lowers, with it.
    lowered: (Vec<String>, Vec<i64>),
}

#[derive(Default)]
struct UseRows {
    scenario: Vec<String>,
    actor: Vec<String>,
    occurred_at: Vec<i64>,
    points: Vec<i64>,
}

#[derive(Default)]
struct BudgetRows {
    scenario: Vec<String>,
    period: Vec<String>,
    start: Vec<i64>,
    times: Vec<i64>,
    points: Vec<i64>,
}

#[derive(Default)]
struct EntryRows {
    actor: Vec<String>,
    event: Vec<String>,
    action: Vec<String>,
    scenario: Vec<String>,
    points: Vec<i64>,
    kind: Vec<&'static str>,
    reason: Vec<Option<String>>,
    created_at: Vec<i64>,
    expires_at: Vec<Option<i64>>,
    dated_at: Vec<i64>,
    available_at: Vec<Option<i64>>,
    reverses: Vec<Option<String>>,
}

#[derive(Default)]
struct EventRows {
    id: Vec<String>,
    fingerprint: Vec<Vec<u8>>,
    actor: Vec<Option<String>>,
    result: Vec<String>,
    processed_at: Vec<i64>,
    event_type: Vec<String>,
    occurred_at: Vec<i64>,
    payload: Vec<Option<String>>,
    member_type: Vec<Option<String>>,
}

/// The PostgreSQL side of the posting core: one group's transaction. Writes whose answers the
/// core does not need (entries, balances, events, job states) are not sent one by one: their
/// rows wait here and go to the server as a few multi-row statements, pipelined on the one
/// connection ahead of the next read or the commit — so a group of new events costs a few round
/// trips and statements, not several per event. PostgreSQL runs them in the order sent, so a read
/// sees every write before it.
struct PgTx<'a, 'c> {
    store: &'a PostgresStore,
    tx: &'a deadpool_postgres::Transaction<'c>,
    sql: GroupStatements,
    /// The members to lock, sent ahead of everything else with the first flush.
    lock: Option<Vec<String>>,
    rows: Rows,
    /// The books of the group's members, read once (behind their locks) and kept current.
    books: HashMap<String, Book>,
    /// What the events table held for the group's event ids when the group began (`None`:
    /// nothing), each taken by the first look; a later look, or one after the id was saved in
    /// this group, asks the server.
    stored: HashMap<String, Option<StoredEvent>>,
}

/// Polls every pending write (in order, so they are sent in order), then `last`; answers `last`'s
/// output once all are done (always `Some` then), or the first error.
async fn pipeline<T>(
    pending: Vec<Pending<'_>>,
    last: impl Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<Option<T>, tokio_postgres::Error> {
    let mut pending: Vec<Option<Pending<'_>>> = pending.into_iter().map(Some).collect();
    let mut last = std::pin::pin!(last);
    let mut output = None;
    std::future::poll_fn(|cx| {
        let mut waiting = false;
        for slot in pending.iter_mut() {
            if let Some(future) = slot {
                match future.as_mut().poll(cx) {
                    Poll::Ready(Ok(_)) => *slot = None,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => waiting = true,
                }
            }
        }
        if output.is_none() {
            match last.as_mut().poll(cx) {
                Poll::Ready(Ok(value)) => output = Some(value),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => waiting = true,
            }
        }
        if waiting { Poll::Pending } else { Poll::Ready(Ok(())) }
    })
    .await?;
    Ok(output)
}

impl<'a> PgTx<'a, '_> {
    /// The statements that send what is waiting: the lock first, then entries, balances,
    /// events and job states (an entry's balance and event go in the same flush).
    fn pending(&mut self) -> Vec<Pending<'a>> {
        let tx = self.tx;
        let mut out: Vec<Pending<'a>> = Vec::new();
        if let Some(actors) = self.lock.take() {
            let shared = self.sql.lock_history_shared.clone();
            out.push(Box::pin(async move { tx.execute(&shared, &[&HISTORY_LOCK]).await }));
            if !actors.is_empty() {
                let lock = self.sql.lock_members.clone();
                out.push(Box::pin(async move { tx.execute(&lock, &[&actors]).await }));
            }
        }
        let rows = std::mem::take(&mut self.rows);
        let e = rows.entries;
        if !e.actor.is_empty() {
            let (insert, add) = (self.sql.insert_entries.clone(), self.sql.add_to_balances.clone());
            let (actors, points, created) = (e.actor.clone(), e.points.clone(), e.created_at.clone());
            out.push(Box::pin(async move {
                tx.execute(
                    &insert,
                    &[
                        &e.actor,
                        &e.event,
                        &e.action,
                        &e.scenario,
                        &e.points,
                        &e.kind,
                        &e.reason,
                        &e.created_at,
                        &e.expires_at,
                        &e.dated_at,
                        &e.available_at,
                        &e.reverses,
                    ],
                )
                .await
            }));
            out.push(Box::pin(async move { tx.execute(&add, &[&actors, &points, &created]).await }));
        }
        let l = rows.lots;
        if !l.actor.is_empty() {
            let (insert, lower) = (self.sql.insert_lots.clone(), self.sql.lower_next_expiries.clone());
            let (actors, expiries) = l.lowered;
            out.push(Box::pin(async move {
                tx.execute(&insert, &[&l.actor, &l.source, &l.remaining, &l.available_at, &l.expires_at]).await
            }));
            if !actors.is_empty() {
                out.push(Box::pin(async move { tx.execute(&lower, &[&actors, &expiries]).await }));
            }
        }
        let v = rows.events;
        if !v.id.is_empty() {
            let insert = self.sql.insert_events.clone();
            out.push(Box::pin(async move {
                tx.execute(
                    &insert,
                    &[
                        &v.id,
                        &v.fingerprint,
                        &v.actor,
                        &v.result,
                        &v.processed_at,
                        &v.event_type,
                        &v.occurred_at,
                        &v.payload,
                        &v.member_type,
                    ],
                )
                .await
            }));
        }
        let u = rows.uses;
        if !u.scenario.is_empty() {
            let add = self.sql.add_uses.clone();
            out.push(Box::pin(
                async move { tx.execute(&add, &[&u.scenario, &u.actor, &u.occurred_at, &u.points]).await },
            ));
        }
        let b = rows.budgets;
        if !b.scenario.is_empty() {
            let add = self.sql.add_to_budgets.clone();
            out.push(Box::pin(async move {
                tx.execute(&add, &[&b.scenario, &b.period, &b.start, &b.times, &b.points]).await
            }));
        }
        let (states, jobs, indexes) = rows.jobs;
        if !states.is_empty() {
            let mark = self.sql.mark_job_events.clone();
            out.push(Box::pin(async move { tx.execute(&mark, &[&states, &jobs, &indexes]).await }));
        }
        if !rows.positions.is_empty() {
            let advance = self.sql.advance_streams.clone();
            let (subjects, sequences): (Vec<String>, Vec<i64>) = rows.positions.into_iter().unzip();
            out.push(Box::pin(async move { tx.execute(&advance, &[&subjects, &sequences]).await }));
        }
        out
    }

    /// Sends what is waiting and `read` after it, in one pipeline, and waits for all of it.
    fn flush_then<T>(
        &mut self,
        read: impl Future<Output = Result<T, tokio_postgres::Error>>,
    ) -> Result<T, LedgerError> {
        let pending = self.pending();
        self.store
            .block(async { pipeline(pending, read).await.map_err(pg_error) })?
            .ok_or_else(|| broken("a pipelined read ended without an answer"))
    }
}

impl<'a, 'c> PgTx<'a, 'c> {
    fn new(
        store: &'a PostgresStore,
        tx: &'a deadpool_postgres::Transaction<'c>,
        sql: GroupStatements,
        lock: Option<Vec<String>>,
    ) -> Self {
        PgTx { store, tx, sql, lock, rows: Rows::default(), books: HashMap::new(), stored: HashMap::new() }
    }

    /// Reads the books of the group's members and what is stored under its event ids, in one
    /// round trip behind the members' locks: without it each event would cost a round trip of
    /// its own to look its id up.
    fn read_group(&mut self, mut actors: Vec<String>, ids: Vec<String>) -> Result<(), LedgerError> {
        actors.sort_unstable();
        actors.dedup();
        let (tx, read_books, find_events) = (self.tx, self.sql.read_books.clone(), self.sql.find_events.clone());
        let query = actors.clone();
        let ids_query = ids.clone();
        let (books, events) = self.flush_then(async move {
            let (books_params, events_params): ([&(dyn ToSql + Sync); 1], [&(dyn ToSql + Sync); 1]) =
                ([&query], [&ids_query]);
            tokio::try_join!(tx.query(&read_books, &books_params), tx.query(&find_events, &events_params))
        })?;
        for actor in actors {
            self.books.insert(actor, Book::default());
        }
        for row in books {
            let book = Book { balance: get(&row, 1)?, debt: get(&row, 2)?, next_expiry: get(&row, 3)? };
            self.books.insert(get(&row, 0)?, book);
        }
        self.stored.extend(ids.into_iter().map(|id| (id, None)));
        for row in events {
            let (fingerprint, result) = decode_stored(get(&row, 1)?, get(&row, 2)?)?;
            self.stored.insert(get(&row, 0)?, Some(StoredEvent { fingerprint, result }));
        }
        Ok(())
    }

    /// Runs a statement after what is waiting, and waits for it.
    fn execute(
        &mut self,
        sql: &'static str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<(), LedgerError> {
        let tx = self.tx;
        self.flush_then(async move { tx.execute(sql, params).await }).map(|_| ())
    }
}

fn original_of_row(row: &tokio_postgres::Row) -> Result<Original, LedgerError> {
    Ok(Original { actor_id: get(row, 0)?, event_type: get(row, 1)?, occurred_at: get(row, 2)?, payload: get(row, 3)? })
}

fn reversible_of_row(row: &tokio_postgres::Row) -> Result<Reversible, LedgerError> {
    Ok(Reversible { awarded: get(row, 0)?, expired: get(row, 1)?, reversed: get(row, 2)? })
}

fn lot_of_row(row: &tokio_postgres::Row) -> Result<Lot, LedgerError> {
    Ok(Lot {
        lot_id: get(row, 0)?,
        source_id: get(row, 1)?,
        remaining: get(row, 2)?,
        available_at: get(row, 3)?,
        expires_at: get(row, 4)?,
    })
}

impl LedgerTx for PgTx<'_, '_> {
    fn find_event(&mut self, event_id: &str) -> Result<Option<StoredEvent>, LedgerError> {
        if let Some(stored) = self.stored.remove(event_id) {
            return Ok(stored);
        }
        let (tx, statement) = (self.tx, self.sql.find_event.clone());
        let row = self.flush_then(async move { tx.query_opt(&statement, &[&event_id]).await })?;
        row.map(|row| {
            let (fingerprint, result) = decode_stored(get(&row, 0)?, get(&row, 1)?)?;
            Ok(StoredEvent { fingerprint, result })
        })
        .transpose()
    }

    fn book(&mut self, actor_id: &str) -> Result<Book, LedgerError> {
        // The member's advisory lock is held: no other node changes it before this commit.
        if let Some(book) = self.books.get(actor_id) {
            return Ok(*book);
        }
        let (tx, statement) = (self.tx, self.sql.read_book.clone());
        let row = self.flush_then(async move { tx.query_opt(&statement, &[&actor_id]).await })?;
        let book = match row {
            Some(row) => Book { balance: get(&row, 0)?, debt: get(&row, 1)?, next_expiry: get(&row, 2)? },
            None => Book::default(),
        };
        self.books.insert(actor_id.to_owned(), book);
        Ok(book)
    }

    fn set_debt(&mut self, actor_id: &str, debt: i64) -> Result<(), LedgerError> {
        self.execute(SET_DEBT, &[&actor_id, &debt])?;
        if let Some(book) = self.books.get_mut(actor_id) {
            book.debt = debt;
        }
        Ok(())
    }

    fn append(&mut self, e: &NewEntry<'_>) -> Result<(), LedgerError> {
        if let Some(book) = self.books.get_mut(e.actor_id) {
            book.balance = book.balance.saturating_add(e.points);
        }
        let rows = &mut self.rows.entries;
        rows.actor.push(e.actor_id.to_owned());
        rows.event.push(e.event_id.to_owned());
        rows.action.push(e.action_id.to_owned());
        rows.scenario.push(e.scenario_id.to_owned());
        rows.points.push(e.points);
        rows.kind.push(e.kind.as_str());
        rows.reason.push(e.reason.map(str::to_owned));
        rows.created_at.push(e.created_at);
        rows.expires_at.push(e.expires_at);
        rows.dated_at.push(e.dated_at);
        rows.available_at.push(e.available_at);
        rows.reverses.push(e.reverses.map(str::to_owned));
        Ok(())
    }

    fn add_lot(&mut self, lot: &NewLot<'_>) -> Result<(), LedgerError> {
        // Sent with the group's next flush, after the entries and balances before it.
        let rows = &mut self.rows.lots;
        rows.actor.push(lot.actor_id.to_owned());
        rows.source.push(lot.source_id.to_owned());
        rows.remaining.push(lot.points);
        rows.available_at.push(lot.available_at);
        rows.expires_at.push(lot.expires_at);
        Ok(())
    }

    fn lower_next_expiry(&mut self, actor_id: &str, expires_at: i64) -> Result<(), LedgerError> {
        let (actors, expiries) = &mut self.rows.lots.lowered;
        actors.push(actor_id.to_owned());
        expiries.push(expires_at);
        if let Some(book) = self.books.get_mut(actor_id) {
            book.next_expiry = Some(expires_at);
        }
        Ok(())
    }

    fn open_lots(&mut self, actor_id: &str, limit: usize) -> Result<Vec<Lot>, LedgerError> {
        let (tx, limit) = (self.tx, i64::try_from(limit).unwrap_or(i64::MAX));
        let rows = self.flush_then(async move { tx.query(OPEN_LOTS, &[&actor_id, &limit]).await })?;
        rows.iter().map(lot_of_row).collect()
    }

    fn pending_points(&mut self, actor_id: &str, at: i64) -> Result<i64, LedgerError> {
        let tx = self.tx;
        let row = self.flush_then(async move { tx.query_one(PENDING_POINTS, &[&actor_id, &at]).await })?;
        get(&row, 0)
    }

    fn take_from_lots(&mut self, actor_id: &str, taken: &[(i64, i64)]) -> Result<(), LedgerError> {
        for (lot_id, points) in taken {
            self.execute(TAKE_FROM_LOT, &[lot_id, points])?;
        }
        self.execute(SET_NEXT_EXPIRY, &[&actor_id])?;
        // Read again when next asked: the soonest expiry may have moved.
        self.books.remove(actor_id);
        Ok(())
    }

    fn record_spent(&mut self, actor_id: &str, source_id: &str, spent: &[(i64, i64)]) -> Result<(), LedgerError> {
        for (lot_id, points) in spent {
            self.execute(
                "INSERT INTO lot_spent (actor_id, source_id, lot_id, points) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (actor_id, source_id, lot_id) DO UPDATE SET points = lot_spent.points + excluded.points",
                &[&actor_id, &source_id, lot_id, points],
            )?;
        }
        Ok(())
    }

    fn spent_by(&mut self, actor_id: &str, source_id: &str) -> Result<Vec<(i64, i64)>, LedgerError> {
        let tx = self.tx;
        let rows = self.flush_then(async move {
            tx.query(
                "SELECT lot_id, points FROM lot_spent WHERE actor_id = $1 AND source_id = $2",
                &[&actor_id, &source_id],
            )
            .await
        })?;
        rows.iter().map(|row| Ok((get(row, 0)?, get(row, 1)?))).collect()
    }

    fn original(&mut self, event_id: &str) -> Result<Option<Original>, LedgerError> {
        let tx = self.tx;
        let row = self.flush_then(async move { tx.query_opt(ORIGINAL, &[&event_id]).await })?;
        row.map(|row| original_of_row(&row)).transpose()
    }

    fn reversible(&mut self, actor_id: &str, event_id: &str) -> Result<Reversible, LedgerError> {
        let tx = self.tx;
        let row = self.flush_then(async move { tx.query_one(REVERSIBLE, &[&actor_id, &event_id]).await })?;
        reversible_of_row(&row)
    }

    fn tier_points(&mut self, actor_id: &str, from: i64, to: i64) -> Result<i64, LedgerError> {
        let tx = self.tx;
        let row = self.flush_then(async move { tx.query_one(TIER_POINTS, &[&actor_id, &from, &to]).await })?;
        get(&row, 0)
    }

    fn save_event(&mut self, e: &NewEvent<'_>) -> Result<(), LedgerError> {
        // A second event of the group with this id must see this one.
        self.stored.remove(e.event_id);
        let rows = &mut self.rows.events;
        rows.id.push(e.event_id.to_owned());
        rows.fingerprint.push(e.fingerprint.to_vec());
        rows.actor.push(e.actor_id.map(str::to_owned));
        rows.result.push(e.result_json.to_owned());
        rows.processed_at.push(e.processed_at);
        rows.event_type.push(e.event_type.to_owned());
        rows.occurred_at.push(e.occurred_at);
        rows.payload.push(e.payload.map(str::to_owned));
        self.rows.events.member_type.push(e.member_type());
        Ok(())
    }

    fn member_count(&mut self, actor_id: &str, event_type: &str, from: i64, to: i64) -> Result<u64, LedgerError> {
        let tx = self.tx;
        let count = self.flush_then(async move { count_member(tx.client(), actor_id, event_type, from, to).await })?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    fn member_sum(&mut self, actor_id: &str, key: &SumKey, from: i64, to: i64) -> Result<Option<f64>, LedgerError> {
        let tx = self.tx;
        self.flush_then(async move { sum_member(tx.client(), actor_id, key, from, to).await })
    }

    fn member_payloads(
        &mut self,
        actor_id: &str,
        event_type: &str,
        from: i64,
        to: i64,
    ) -> Result<Vec<String>, LedgerError> {
        let tx = self.tx;
        let rows =
            self.flush_then(async move { tx.query(MEMBER_HISTORY, &[&actor_id, &event_type, &from, &to]).await })?;
        rows.iter().filter_map(|row| get::<Option<String>>(row, 1).transpose()).collect()
    }

    fn member_times(
        &mut self,
        actor_id: &str,
        event_type: &str,
        before: i64,
        limit: usize,
    ) -> Result<Vec<i64>, LedgerError> {
        let tx = self.tx;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows =
            self.flush_then(async move { tx.query(MEMBER_TIMES, &[&actor_id, &event_type, &before, &limit]).await })?;
        rows.iter().map(|row| get(row, 0)).collect()
    }

    fn usage(&mut self, counter: &Counter<'_>) -> Result<Usage, LedgerError> {
        // The member's or the budget's advisory lock is held: no other node changes it before
        // this commit.
        let tx = self.tx;
        let row = match counter {
            Counter::Actor(w) => {
                let statement = self.sql.actor_usage.clone();
                let (scenario, actor, from, to) = (w.scenario_id, w.actor_id, w.from, w.to);
                self.flush_then(async move { tx.query_opt(&statement, &[&scenario, &actor, &from, &to]).await })?
            }
            Counter::Budget(b) => {
                let statement = self.sql.budget_usage.clone();
                let (scenario, period, start) = (b.scenario_id, b.period.to_string(), b.start);
                self.flush_then(async move { tx.query_opt(&statement, &[&scenario, &period, &start]).await })?
            }
        };
        row.map_or(Ok(Usage::default()), |row| usage_of(&row))
    }

    fn add_use(&mut self, u: &NewUse<'_>) -> Result<(), LedgerError> {
        let rows = &mut self.rows.uses;
        rows.scenario.push(u.scenario_id.to_owned());
        rows.actor.push(u.actor_id.to_owned());
        rows.occurred_at.push(u.occurred_at);
        rows.points.push(u.points);
        Ok(())
    }

    fn add_to_budget(&mut self, b: &BudgetKey<'_>, used: Usage) -> Result<(), LedgerError> {
        let rows = &mut self.rows.budgets;
        rows.scenario.push(b.scenario_id.to_owned());
        rows.period.push(b.period.to_string());
        rows.start.push(b.start);
        rows.times.push(i64::try_from(used.times).unwrap_or(i64::MAX));
        rows.points.push(i64::try_from(used.points).unwrap_or(i64::MAX));
        Ok(())
    }

    fn queue_delivery(&mut self, d: &super::tx::NewDelivery<'_>) -> Result<(), LedgerError> {
        let delivery_id = d.delivery_id();
        let event_json = serde_json::to_string(d.event).map_err(|e| {
            LedgerError::unavailable("cannot encode a delivery's event", false, Some(std::sync::Arc::new(e)))
        })?;
        self.execute(
            QUEUE_DELIVERY,
            &[&delivery_id, &d.event_id, &d.action_id, &d.target_json, &event_json, &d.created_at],
        )
    }

    fn advance_stream(&mut self, position: &super::StreamPosition) -> Result<(), LedgerError> {
        let sequence = i64::try_from(position.sequence).unwrap_or(i64::MAX);
        let furthest = self.rows.positions.entry(position.subject.clone()).or_default();
        *furthest = (*furthest).max(sequence);
        Ok(())
    }

    fn mark_job_event(&mut self, job_id: &str, index: usize, state: EventState) -> Result<(), LedgerError> {
        let (states, jobs, indexes) = &mut self.rows.jobs;
        states.push(state.as_str());
        jobs.push(job_id.to_owned());
        indexes.push(index as i64);
        Ok(())
    }
}

/// The PostgreSQL side of operations: reads and writes go in order behind the member's lock.
impl OperationTx for PgTx<'_, '_> {
    fn find_operation(&mut self, actor_id: &str, request_id: &str) -> Result<Option<StoredOperation>, LedgerError> {
        let tx = self.tx;
        let row = self.flush_then(async move {
            tx.query_opt(
                "SELECT fingerprint, kind, points, answer, cancelled_by FROM operations \
                 WHERE actor_id = $1 AND request_id = $2",
                &[&actor_id, &request_id],
            )
            .await
        })?;
        row.map(|row| {
            let fingerprint: Vec<u8> = get(&row, 0)?;
            let kind: String = get(&row, 1)?;
            Ok(StoredOperation {
                fingerprint: fingerprint.try_into().map_err(|_| broken("a stored fingerprint has the wrong length"))?,
                kind: EntryKind::parse(&kind).ok_or_else(|| broken(format!("unknown operation kind {kind}")))?,
                points: get(&row, 2)?,
                answer: get(&row, 3)?,
                cancelled_by: get(&row, 4)?,
            })
        })
        .transpose()
    }

    fn save_operation(&mut self, o: &NewOperation<'_>) -> Result<(), LedgerError> {
        let tx = self.tx;
        let (fingerprint, kind) = (o.fingerprint.to_vec(), o.kind.as_str());
        self.flush_then(async move {
            tx.execute(
                "INSERT INTO operations (actor_id, request_id, fingerprint, kind, points, answer, applied_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[&o.actor_id, &o.request_id, &fingerprint, &kind, &o.points, &o.answer, &o.applied_at],
            )
            .await
        })
        .map(|_| ())
    }

    fn mark_cancelled(&mut self, actor_id: &str, redemption_id: &str, by: &str) -> Result<(), LedgerError> {
        let tx = self.tx;
        self.flush_then(async move {
            tx.execute(
                "UPDATE operations SET cancelled_by = $3 WHERE actor_id = $1 AND request_id = $2",
                &[&actor_id, &redemption_id, &by],
            )
            .await
        })
        .map(|_| ())
    }

    fn last_entry_id(&mut self, actor_id: &str) -> Result<i64, LedgerError> {
        let tx = self.tx;
        let row = self.flush_then(async move {
            tx.query_one("SELECT max(entry_id) FROM entries WHERE actor_id = $1", &[&actor_id]).await
        })?;
        get::<Option<i64>>(&row, 0)?.ok_or_else(|| broken("no entry was appended"))
    }
}

/// Counts a kept sum's counters back over the stored events of its type (its key is in
/// `member_sum_keys` already: its SQL/JSON path is read from there).
async fn count_sum_back(tx: &tokio_postgres::Transaction<'_>, key: &SumKey) -> Result<(), tokio_postgres::Error> {
    let (event_type, path) = (key.event_type.as_str(), key.key.as_str());
    for sql in [
        "DELETE FROM member_day_sums WHERE member_type = $1 AND path = $2",
        "DELETE FROM member_hour_sums WHERE member_type = $1 AND path = $2",
    ] {
        tx.execute(sql, &[&event_type, &path]).await?;
    }
    const NUMBERS: &str = concat!(
        "SELECT e.actor_id, e.occurred_at, v::float8 AS n FROM (SELECT e.actor_id, e.occurred_at, ",
        payload_number!("e.payload", "k.json_path"),
        " AS v \
         FROM events e JOIN member_sum_keys k ON k.member_type = e.member_type AND k.path = $2 \
         WHERE e.member_type = $1 AND e.payload IS NOT NULL) AS e WHERE jsonb_typeof(v) = 'number'"
    );
    tx.execute(
        &format!(
            "INSERT INTO member_day_sums (actor_id, member_type, path, day, total) \
             SELECT actor_id, $1, $2, day, sum(n) FROM ( \
               SELECT actor_id, floor(occurred_at::numeric / $3::int8)::int8 AS day, n FROM ({NUMBERS}) AS a \
               UNION ALL SELECT actor_id, $4::int8, n FROM ({NUMBERS}) AS b) AS d \
             GROUP BY actor_id, day"
        ),
        &[&event_type, &path, &MICROS_PER_DAY, &ALL_DAYS],
    )
    .await?;
    tx.execute(
        &format!(
            "INSERT INTO member_hour_sums (actor_id, member_type, path, hour, total) \
             SELECT actor_id, $1, $2, floor(occurred_at::numeric / $3::int8)::int8, sum(n) FROM ({NUMBERS}) AS a \
             GROUP BY 1, 4"
        ),
        &[&event_type, &path, &MICROS_PER_HOUR],
    )
    .await?;
    Ok(())
}

/// A member's kept sum over `[from, to)`, read as counts are ([`count_member`]); `None` when the
/// sum is not kept (its key has no SQL/JSON path, or the live rules' keys do not hold it).
async fn sum_member(
    client: &tokio_postgres::Client,
    actor: &str,
    key: &SumKey,
    from: i64,
    to: i64,
) -> Result<Option<f64>, tokio_postgres::Error> {
    let Some(json_path) = key.json_path() else { return Ok(None) };
    let (event_type, path) = (key.event_type.as_str(), key.key.as_str());
    if all_time(from, to) {
        let row = client.query_one(MEMBER_SUM_ALL, &[&actor, &event_type, &path, &ALL_DAYS]).await?;
        return row.try_get(0);
    }
    let window = window_values(&CounterWindow::of(from, to));
    let mut values = window_params(&actor, &event_type, &window);
    values.extend([&path as &(dyn tokio_postgres::types::ToSql + Sync), &json_path]);
    client.query_one(MEMBER_SUM_BY_COUNTERS, &values).await?.try_get(0)
}

/// The parameters `$1`–`$14` of the statements that read a window of a member's events of a
/// type from counters.
fn window_params<'a>(
    actor: &'a &str,
    event_type: &'a &str,
    window: &'a [i64; 12],
) -> Vec<&'a (dyn tokio_postgres::types::ToSql + Sync)> {
    let mut values: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![actor, event_type];
    values.extend(window.iter().map(|v| v as &(dyn tokio_postgres::types::ToSql + Sync)));
    values
}

/// A window's parameters `$3`–`$14` of the statements that read one from counters
/// ([`MEMBER_COUNT_BY_COUNTERS`], [`MEMBER_SUM_BY_COUNTERS`]).
fn window_values(w: &CounterWindow) -> [i64; 12] {
    [
        w.days.0,
        w.days.1,
        w.head_hours.0,
        w.head_hours.1,
        w.tail_hours.0,
        w.tail_hours.1,
        w.head.0,
        w.head.1,
        w.tail.0,
        w.tail.1,
        w.head_sign,
        w.tail_sign,
    ]
}

/// How many of a member's indexed events of a type have an event time in `[from, to)`, as
/// SQLite counts them: the total, or whole days and hours from the counters and the partial
/// hours from the index.
async fn count_member(
    client: &tokio_postgres::Client,
    actor: &str,
    event_type: &str,
    from: i64,
    to: i64,
) -> Result<i64, tokio_postgres::Error> {
    if all_time(from, to) {
        let row = client.query_opt(MEMBER_COUNT_ALL, &[&actor, &event_type, &ALL_DAYS]).await?;
        return row.map_or(Ok(0), |row| row.try_get(0));
    }
    let window = window_values(&CounterWindow::of(from, to));
    client.query_one(MEMBER_COUNT_BY_COUNTERS, &window_params(&actor, &event_type, &window)).await?.try_get(0)
}

/// A column's value; a type that does not fit is an error, not a panic.
fn get<'r, T: tokio_postgres::types::FromSql<'r>>(
    row: &'r tokio_postgres::Row,
    index: usize,
) -> Result<T, LedgerError> {
    row.try_get(index).map_err(pg_error)
}

/// A limit's use from a row of (times, points).
fn usage_of(row: &tokio_postgres::Row) -> Result<Usage, LedgerError> {
    let (times, points): (i64, i64) = (get(row, 0)?, get(row, 1)?);
    Ok(Usage { times: u64::try_from(times).unwrap_or(0), points: u64::try_from(points).unwrap_or(0) })
}

fn decode_stored(fingerprint: &[u8], json: &str) -> Result<(Fingerprint, EventResult), LedgerError> {
    let fp: Fingerprint = fingerprint.try_into().map_err(|_| broken("a stored fingerprint has the wrong length"))?;
    let result = serde_json::from_str(json).map_err(broken)?;
    Ok((fp, result))
}

impl LedgerStore for PostgresStore {
    fn write_events(&self, events: &[EventWrite]) -> Result<Vec<Applied>, LedgerError> {
        let mut attempt = 1;
        loop {
            match self.try_write(events) {
                Err(e) if attempt < GROUP_ATTEMPTS && is_race(&e) => {
                    tracing::debug!(error = %e.detail(), attempt, "group raced another node; posting it again");
                    // A little later each time, so two nodes racing on one id do not keep colliding.
                    std::thread::sleep(Duration::from_millis(attempt as u64));
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    fn store_job(&self, job: &NewJob) -> Result<(), LedgerError> {
        let mut indexes = Vec::with_capacity(job.events.len());
        let mut ids = Vec::with_capacity(job.events.len());
        let mut bodies = Vec::with_capacity(job.events.len());
        let mut states = Vec::with_capacity(job.events.len());
        for (index, event) in job.events.iter().enumerate() {
            indexes.push(index as i64);
            ids.push(event.id.as_str());
            bodies.push(serde_json::to_string(event.as_ref()).map_err(broken)?);
            states.push(EventState::at_admission(index, job.queued).as_str());
        }
        let (total, queued, now) = (job.events.len() as i64, job.queued as i64, now_micros());
        let mut client = self.client()?;
        self.block(async {
            let tx = client.transaction().await.map_err(pg_error)?;
            tx.execute(
                "INSERT INTO jobs (job_id, created_at, total, queued) VALUES ($1, $2, $3, $4)",
                &[&job.job_id, &now, &total, &queued],
            )
            .await
            .map_err(pg_error)?;
            tx.execute(
                "INSERT INTO job_events (job_id, idx, event_id, event, state)
                 SELECT $1, * FROM unnest($2::bigint[], $3::text[], $4::text[], $5::text[])",
                &[&job.job_id, &indexes, &ids, &bodies, &states],
            )
            .await
            .map_err(pg_error)?;
            tx.commit().await.map_err(pg_error)
        })
    }

    fn apply_operation(&self, request: &OperationRequest) -> Result<OperationOutcome, LedgerError> {
        let mut client = self.client()?;
        let outcome = self.operation(&mut client, request);
        if outcome.as_ref().is_err_and(connection_lost) {
            drop(deadpool_postgres::Object::take(client));
        }
        outcome
    }

    fn stored_result(&self, event_id: &str) -> Result<Option<(Fingerprint, EventResult)>, LedgerError> {
        let row = self.read(async |c| c.query_opt(FIND_EVENT, &[&event_id]).await)?;
        row.map(|row| decode_stored(get(&row, 0)?, get(&row, 1)?)).transpose()
    }

    fn points_state(&self, actor_id: &str, at: i64) -> Result<PointsState, LedgerError> {
        let now = now_micros();
        let (book, sum, lots) = self.read(async |c| {
            let book = c.query_opt(READ_BOOK, &[&actor_id]).await?;
            let sum = if at >= now { None } else { Some(c.query_one(ENTRIES_SUM, &[&actor_id, &at]).await?) };
            let lots = c.query(OPEN_LOTS, &[&actor_id, &i64::MAX]).await?;
            Ok((book, sum, lots))
        })?;
        let book = match book {
            Some(row) => Book { balance: get(&row, 0)?, debt: get(&row, 1)?, next_expiry: get(&row, 2)? },
            None => Book::default(),
        };
        // Entries are never dated after they are written: now, the book holds their sum.
        let entries_sum = match sum {
            Some(row) => get(&row, 0)?,
            None => book.balance,
        };
        let lots = lots.iter().map(lot_of_row).collect::<Result<Vec<_>, _>>()?;
        Ok(PointsState { entries_sum, book, lots })
    }

    fn tier_points(&self, actor_id: &str, from: i64, to: i64) -> Result<i64, LedgerError> {
        let row = self.read(async |c| c.query_one(TIER_POINTS, &[&actor_id, &from, &to]).await)?;
        get(&row, 0)
    }

    fn original(&self, event_id: &str) -> Result<Option<Original>, LedgerError> {
        let row = self.read(async |c| c.query_opt(ORIGINAL, &[&event_id]).await)?;
        row.map(|row| original_of_row(&row)).transpose()
    }

    fn reversible(&self, actor_id: &str, event_id: &str) -> Result<Reversible, LedgerError> {
        let row = self.read(async |c| c.query_one(REVERSIBLE, &[&actor_id, &event_id]).await)?;
        reversible_of_row(&row)
    }

    fn sweep(&self, now: i64, max_members: usize) -> Result<usize, LedgerError> {
        let limit = i64::try_from(max_members).unwrap_or(i64::MAX);
        let rows = self.read(async |c| c.query(EXPIRED_MEMBERS, &[&now, &limit]).await)?;
        let members = rows.iter().map(|row| get::<String>(row, 0)).collect::<Result<Vec<_>, _>>()?;
        if members.is_empty() {
            return Ok(0);
        }
        let mut client = self.client()?;
        let tx = self.block(async { client.transaction().await.map_err(pg_error) })?;
        let statements = self.statements(&tx)?;
        {
            let mut lock = members.clone();
            lock.sort_unstable();
            let mut pg = PgTx::new(self, &tx, statements, Some(lock));
            for actor_id in &members {
                lots::bring_up_to(&mut pg, actor_id, now, now)?;
            }
            pg.flush_then(async { Ok(()) })?;
        }
        self.block(async { tx.commit().await.map_err(pg_error) })?;
        Ok(members.len())
    }

    fn member_history(
        &self,
        actor_id: &str,
        event_type: &str,
        from: i64,
        to: i64,
    ) -> Result<Vec<(i64, Option<String>)>, LedgerError> {
        let rows = self.read(async |c| c.query(MEMBER_HISTORY, &[&actor_id, &event_type, &from, &to]).await)?;
        rows.iter().map(|row| Ok((get(row, 0)?, get(row, 1)?))).collect()
    }

    fn member_count(&self, actor_id: &str, event_type: &str, from: i64, to: i64) -> Result<u64, LedgerError> {
        let count = self.read(async |c| count_member(c, actor_id, event_type, from, to).await)?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    fn member_sum(&self, actor_id: &str, key: &SumKey, from: i64, to: i64) -> Result<Option<f64>, LedgerError> {
        self.read(async |c| sum_member(c, actor_id, key, from, to).await)
    }

    /// As SQLite's, for every node at once, as [`LedgerStore::track_history`] does: the kept sums
    /// are the table's, which each group's insert reads, replaced under the member-history lock.
    fn track_sums(&self, sums: &[SumKey]) -> Result<(), LedgerError> {
        let mut client = self.client()?;
        // A path outside the payload has nothing to keep (its sums are read from the events).
        let keys: Vec<(&SumKey, String)> = sums.iter().filter_map(|k| Some((k, k.json_path()?))).collect();
        self.block_within(Duration::from_secs(600), async {
            let tx = client.transaction().await.map_err(pg_error)?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&HISTORY_LOCK]).await.map_err(pg_error)?;
            let rows = tx.query("SELECT member_type, path FROM member_sum_keys", &[]).await.map_err(pg_error)?;
            let current: Vec<(String, String)> =
                rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect::<Result<_, _>>().map_err(pg_error)?;
            let is_kept = |k: &SumKey| current.iter().any(|(t, p)| *t == k.event_type && *p == k.key);
            let added: Vec<&(&SumKey, String)> = keys.iter().filter(|(k, _)| !is_kept(k)).collect();
            if current.len() == keys.len() && added.is_empty() {
                return Ok(());
            }
            tx.execute("DELETE FROM member_sum_keys", &[]).await.map_err(pg_error)?;
            for (key, json_path) in &keys {
                tx.execute(
                    "INSERT INTO member_sum_keys (member_type, path, json_path) VALUES ($1, $2, $3::text::jsonpath)",
                    &[&key.event_type, &key.key, json_path],
                )
                .await
                .map_err(pg_error)?;
            }
            // Counters of a sum that was not kept went stale: they are counted back from the events.
            for (key, _) in added {
                count_sum_back(&tx, key).await.map_err(pg_error)?;
            }
            tx.commit().await.map_err(pg_error)
        })
    }

    fn stream_position(&self, subject: &str) -> Result<u64, LedgerError> {
        let row = self.read(async |c| c.query_opt(STREAM_POSITION, &[&subject]).await)?;
        let sequence: Option<i64> = row.map(|row| get(&row, 0)).transpose()?;
        Ok(sequence.and_then(|s| u64::try_from(s).ok()).unwrap_or(0))
    }

    /// As SQLite's, for every node at once: the set of indexed types is the table's, read by
    /// each group's insert; re-indexing holds the member-history lock alone, so it waits for
    /// the groups in flight and the groups after it index by the new set.
    fn track_history(&self, types: &[String]) -> Result<(), LedgerError> {
        let mut client = self.client()?;
        let types = types.to_vec();
        self.block_within(Duration::from_secs(600), async {
            let tx = client.transaction().await.map_err(pg_error)?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&HISTORY_LOCK]).await.map_err(pg_error)?;
            let rows = tx.query("SELECT member_type FROM member_history_types", &[]).await.map_err(pg_error)?;
            let current: Vec<String> = rows.iter().map(|r| r.try_get(0)).collect::<Result<_, _>>().map_err(pg_error)?;
            let added: Vec<&String> = types.iter().filter(|t| !current.contains(t)).collect();
            if current.len() == types.len() && added.is_empty() {
                return Ok(());
            }
            tx.execute("DELETE FROM member_history_types", &[]).await.map_err(pg_error)?;
            tx.execute("INSERT INTO member_history_types SELECT unnest($1::text[])", &[&types]).await.map_err(pg_error)?;
            if !added.is_empty() {
                let stored = tx
                    .query(
                        "SELECT event_id, event_type FROM events \
                         WHERE actor_id IS NOT NULL AND member_type IS NULL AND event_type IS NOT NULL",
                        &[],
                    )
                    .await
                    .map_err(pg_error)?;
                let (mut ids, mut kinds) = (Vec::new(), Vec::new());
                for row in &stored {
                    let (id, event_type): (String, String) = (row.try_get(0).map_err(pg_error)?, row.try_get(1).map_err(pg_error)?);
                    let lower = event_type.to_lowercase();
                    if added.iter().any(|t| **t == lower) {
                        ids.push(id);
                        kinds.push(lower);
                    }
                }
                tx.execute(
                    "UPDATE events e SET member_type = u.m FROM unnest($1::text[], $2::text[]) AS u(i, m) WHERE e.event_id = u.i",
                    &[&ids, &kinds],
                )
                .await
                .map_err(pg_error)?;
                // The counters of these types are counted again from the events (they went stale
                // while the type was not read).
                let added: Vec<String> = added.into_iter().cloned().collect();
                for sql in [
                    "DELETE FROM member_days WHERE member_type = ANY($1)",
                    "DELETE FROM member_hours WHERE member_type = ANY($1)",
                ] {
                    tx.execute(sql, &[&added]).await.map_err(pg_error)?;
                }
                tx.execute(
                    "INSERT INTO member_days (actor_id, member_type, day, events) \
                     SELECT actor_id, member_type, day, count(*) FROM ( \
                       SELECT actor_id, member_type, floor(occurred_at::numeric / $2::int8)::int8 AS day FROM events WHERE member_type = ANY($1) \
                       UNION ALL SELECT actor_id, member_type, $3::int8 FROM events WHERE member_type = ANY($1)) AS e \
                     GROUP BY actor_id, member_type, day",
                    &[&added, &MICROS_PER_DAY, &ALL_DAYS],
                )
                .await
                .map_err(pg_error)?;
                tx.execute(
                    "INSERT INTO member_hours (actor_id, member_type, hour, events) \
                     SELECT actor_id, member_type, floor(occurred_at::numeric / $2::int8)::int8, count(*) FROM events \
                     WHERE member_type = ANY($1) GROUP BY 1, 2, 3",
                    &[&added, &MICROS_PER_HOUR],
                )
                .await
                .map_err(pg_error)?;
            }
            tx.commit().await.map_err(pg_error)
        })
    }

    fn usage(&self, counter: &Counter<'_>) -> Result<Usage, LedgerError> {
        let row = match *counter {
            Counter::Actor(w) => {
                self.read(async |c| c.query_opt(ACTOR_USAGE, &[&w.scenario_id, &w.actor_id, &w.from, &w.to]).await)?
            }
            Counter::Budget(b) => {
                let period = b.period.to_string();
                self.read(async |c| c.query_opt(BUDGET_USAGE, &[&b.scenario_id, &period, &b.start]).await)?
            }
        };
        row.map_or(Ok(Usage::default()), |row| usage_of(&row))
    }

    fn history(&self, actor_id: &str, limit: usize, before: Option<i64>) -> Result<HistoryPage, LedgerError> {
        let (before, take) = (before.unwrap_or(i64::MAX), limit as i64 + 1);
        let rows = self.read(async |c| {
            c.query(
                "SELECT entry_id, actor_id, event_id, action_id, scenario_id, points, kind, reason, created_at, expires_at,
                 dated_at, available_at, reverses
                 FROM entries WHERE actor_id = $1 AND entry_id < $2 ORDER BY entry_id DESC LIMIT $3",
                &[&actor_id, &before, &take],
            )
            .await
        })?;
        let entries = rows
            .iter()
            .map(|row| {
                let kind: &str = get(row, 6)?;
                Ok(Entry {
                    entry_id: get(row, 0)?,
                    actor_id: get(row, 1)?,
                    event_id: get(row, 2)?,
                    action_id: get(row, 3)?,
                    scenario_id: get(row, 4)?,
                    points: get(row, 5)?,
                    kind: EntryKind::parse(kind).ok_or_else(|| broken(format!("unknown entry kind {kind}")))?,
                    reason: get(row, 7)?,
                    created_at: rfc3339(get(row, 8)?),
                    expires_at: get::<Option<i64>>(row, 9)?.map(rfc3339),
                    dated_at: rfc3339(get::<Option<i64>>(row, 10)?.map_or_else(|| get(row, 8), Ok)?),
                    available_at: get::<Option<i64>>(row, 11)?.map(rfc3339),
                    reverses: get(row, 12)?,
                })
            })
            .collect::<Result<Vec<_>, LedgerError>>()?;
        Ok(HistoryPage::of(actor_id, entries, limit))
    }

    fn job(&self, job_id: &str) -> Result<Option<Job>, LedgerError> {
        let found = self.read(async |c| c.query_opt("SELECT queued FROM jobs WHERE job_id = $1", &[&job_id]).await)?;
        let Some(queued) = found.map(|r| get::<i64>(&r, 0)).transpose()? else { return Ok(None) };
        let rows = self.read(async |c| {
            c.query(
                "SELECT j.event_id, j.state, e.result FROM job_events j
                 LEFT JOIN events e ON e.event_id = j.event_id AND j.state = 'done'
                 WHERE j.job_id = $1 ORDER BY j.idx",
                &[&job_id],
            )
            .await
        })?;
        let events = rows
            .iter()
            .map(|row| {
                Ok(JobEvent {
                    event_id: get(row, 0)?,
                    state: EventState::parse(get(row, 1)?).unwrap_or(EventState::Queued),
                    result: get::<Option<&str>>(row, 2)?.and_then(|json| serde_json::from_str(json).ok()),
                })
            })
            .collect::<Result<Vec<_>, LedgerError>>()?;
        Ok(Some(Job::from_events(job_id.to_owned(), usize::try_from(queued).unwrap_or(0), events)))
    }

    fn pending_events(&self) -> Result<Vec<PendingEvent>, LedgerError> {
        let rows = self.read(async |c| {
            c.query(
                "SELECT j.job_id, j.idx, j.event FROM job_events j JOIN jobs USING (job_id)
                 WHERE j.state = 'queued' ORDER BY jobs.created_at, j.job_id, j.idx",
                &[],
            )
            .await
        })?;
        rows.iter()
            .map(|row| {
                let event: Event = serde_json::from_str(get(row, 2)?).map_err(broken)?;
                Ok(PendingEvent {
                    job_id: get(row, 0)?,
                    index: usize::try_from(get::<i64>(row, 1)?).unwrap_or(0),
                    event,
                })
            })
            .collect()
    }

    fn ping(&self) -> Result<(), LedgerError> {
        // Readiness must answer quickly even when the network drops packets instead of refusing.
        let client = self.block_within(PING_TIMEOUT, async { self.pool.get().await.map_err(pool_error) })?;
        let outcome =
            self.block_within(PING_TIMEOUT, async { client.query_one("SELECT 1", &[]).await.map_err(pg_error) });
        if outcome.as_ref().is_err_and(connection_lost) {
            drop(deadpool_postgres::Object::take(client));
        }
        outcome.map(|_| ())
    }

    fn probe_write(&self) -> Result<(), LedgerError> {
        let now = now_micros();
        self.read(async |c| {
            c.execute(
                "INSERT INTO health (id, checked_at) VALUES (1, $1) ON CONFLICT (id) DO UPDATE SET checked_at = $1",
                &[&now],
            )
            .await
        })
        .map(|_| ())
    }
}

/// For tests: a fresh database per test, so tests run in parallel, dropped at the end.
fn version_of_row(row: &tokio_postgres::Row) -> Result<RulesVersion, LedgerError> {
    Ok(RulesVersion {
        rules_version: u64::try_from(get::<i64>(row, 0)?).unwrap_or(0),
        hash: get(row, 1)?,
        created_at: versions::created_at(get(row, 2)?),
        author: get(row, 3)?,
        source: VersionSource::parse(get(row, 4)?),
    })
}

/// The outbox every node shares; each delivery is claimed by one node at a time.
impl crate::webhooks::Outbox for PostgresStore {
    fn settle(
        &self,
        attempts: &[crate::webhooks::Attempt],
        now: i64,
        lease_until: i64,
        limit: usize,
    ) -> Result<Vec<crate::webhooks::Due>, LedgerError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut client = self.client()?;
        let rows = self.block(async {
            let tx = client.transaction().await.map_err(pg_error)?;
            for a in attempts {
                let state = a.state.as_str();
                tx.execute(
                    RECORD_ATTEMPT,
                    &[&a.delivery_id, &state, &a.next_attempt_at, &a.status, &a.error, &a.finished_at],
                )
                .await
                .map_err(pg_error)?;
            }
            let rows = if limit == 0 {
                Vec::new()
            } else {
                tx.query(CLAIM_DELIVERIES, &[&now, &lease_until, &limit]).await.map_err(pg_error)?
            };
            tx.commit().await.map_err(pg_error)?;
            Ok(rows)
        })?;
        rows.iter()
            .map(|row| {
                let attempts: i64 = get(row, 4)?;
                Ok(crate::webhooks::Due {
                    delivery_id: get(row, 0)?,
                    row: 0,
                    target_json: get(row, 1)?,
                    event_json: get(row, 2)?,
                    result_json: get(row, 3)?,
                    attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
                })
            })
            .collect()
    }

    fn list(
        &self,
        state: Option<crate::webhooks::DeliveryState>,
        cursor: Option<&crate::webhooks::Cursor>,
        limit: usize,
    ) -> Result<Vec<crate::webhooks::DeliveryRow>, LedgerError> {
        let sql = format!(
            "SELECT {} FROM webhook_deliveries WHERE ($1::text IS NULL OR state = $1) \
             AND ($2::int8 IS NULL OR created_at < $2 OR (created_at = $2 AND delivery_id < $3)) \
             ORDER BY created_at DESC, delivery_id DESC LIMIT $4",
            crate::webhooks::LIST_COLUMNS
        );
        let state = state.map(|s| s.as_str());
        let (at, id) = (cursor.map(|c| c.created_at), cursor.map(|c| c.delivery_id.clone()).unwrap_or_default());
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self.read(async |c| c.query(&sql, &[&state, &at, &id, &limit]).await)?;
        rows.iter()
            .map(|row| {
                Ok(crate::webhooks::DeliveryRow {
                    delivery_id: get(row, 0)?,
                    event_id: get(row, 1)?,
                    action_id: get(row, 2)?,
                    target_json: get(row, 3)?,
                    state: get(row, 4)?,
                    attempts: get(row, 5)?,
                    next_attempt_at: get(row, 6)?,
                    last_status: get(row, 7)?,
                    last_error: get(row, 8)?,
                    created_at: get(row, 9)?,
                    finished_at: get(row, 10)?,
                })
            })
            .collect()
    }

    fn retry(&self, delivery_id: &str, now: i64) -> Result<crate::webhooks::Retried, LedgerError> {
        use crate::webhooks::{DeliveryState, Retried};
        let changed = self.read(async |c| {
            c.execute(
                "UPDATE webhook_deliveries SET state = 'pending', attempts = 0, next_attempt_at = $2, \
                 lease_until = NULL, finished_at = NULL WHERE delivery_id = $1 AND state = 'failed'",
                &[&delivery_id, &now],
            )
            .await
        })?;
        if changed > 0 {
            return Ok(Retried::Queued);
        }
        let row = self.read(async |c| {
            c.query_opt("SELECT state FROM webhook_deliveries WHERE delivery_id = $1", &[&delivery_id]).await
        })?;
        let state: Option<String> = row.map(|row| get(&row, 0)).transpose()?;
        Ok(match state.as_deref().and_then(DeliveryState::parse) {
            Some(state) => Retried::NotFailed(state),
            None => Retried::NotFound,
        })
    }

    fn pending(&self) -> Result<u64, LedgerError> {
        let row = self.read(async |c| {
            c.query_one("SELECT count(*)::int8 FROM webhook_deliveries WHERE state = 'pending'", &[]).await
        })?;
        Ok(u64::try_from(get::<i64>(&row, 0)?).unwrap_or(0))
    }
}

fn key_error(e: LedgerError) -> KeyError {
    KeyError::Storage(e.detail())
}

/// The keys of every node sharing the database.
impl KeyStore for PostgresStore {
    fn add(&self, name: &KeyName, scopes: &[Scope], hash: KeyHash, by: &str) -> Result<(), KeyError> {
        let (name_text, scopes, hash, now) = (name.as_str(), keys::scopes_text(scopes), hash.0.to_vec(), now_micros());
        let inserted = self.read(async |c| {
            c.execute(
                "INSERT INTO api_keys (name, hash, scopes, created_at, created_by) VALUES ($1, $2, $3, $4, $5)",
                &[&name_text, &hash, &scopes, &now, &by],
            )
            .await
        });
        match inserted {
            Ok(_) => Ok(()),
            Err(e) if sql_state(&e) == Some(&SqlState::UNIQUE_VIOLATION) => Err(KeyError::NameTaken(name.to_string())),
            Err(e) => Err(key_error(e)),
        }
    }

    fn list(&self) -> Result<Vec<KeyRecord>, KeyError> {
        let sql = format!("SELECT {} FROM api_keys ORDER BY created_at, ctid", keys::COLUMNS);
        let rows = self.read(async |c| c.query(&sql, &[]).await).map_err(key_error)?;
        rows.iter()
            .map(|row| {
                let text = |i| get::<String>(row, i).map_err(key_error);
                Ok(KeyRecord {
                    name: keys::stored_name(text(0)?)?,
                    scopes: keys::stored_scopes(&text(1)?),
                    created_at: get(row, 2).map_err(key_error)?,
                    created_by: text(3)?,
                    revoked_at: get(row, 4).map_err(key_error)?,
                    revoked_by: get(row, 5).map_err(key_error)?,
                })
            })
            .collect()
    }

    fn revoke(&self, name: &KeyName, by: &str) -> Result<bool, KeyError> {
        let (name, now) = (name.as_str(), now_micros());
        let changed = self
            .read(async |c| {
                c.execute(
                    "UPDATE api_keys SET revoked_at = $1, revoked_by = $2 WHERE name = $3 AND revoked_at IS NULL",
                    &[&now, &by, &name],
                )
                .await
            })
            .map_err(key_error)?;
        Ok(changed > 0)
    }

    fn key_set(&self) -> Result<KeySet, KeyError> {
        let rows = self
            .read(async |c| c.query("SELECT name, scopes, hash, revoked_at IS NOT NULL FROM api_keys", &[]).await)
            .map_err(key_error)?;
        let rows = rows
            .iter()
            .map(|row| Ok((get(row, 0)?, get(row, 1)?, get(row, 2)?, get(row, 3)?)))
            .collect::<Result<Vec<_>, LedgerError>>()
            .map_err(key_error)?;
        keys::key_set(rows)
    }
}

impl RulesVersions for PostgresStore {
    fn add_version(&self, new: &NewVersion<'_>) -> Result<RulesVersion, LedgerError> {
        let mut client = self.client()?;
        self.block(async {
            let tx = client.transaction().await.map_err(pg_error)?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&RULES_VERSION_LOCK]).await.map_err(pg_error)?;
            let sql = format!("SELECT {VERSION_COLUMNS} FROM rules_versions ORDER BY rules_version DESC LIMIT 1");
            let newest = tx.query_opt(&sql, &[]).await.map_err(pg_error)?.map(|r| version_of_row(&r)).transpose()?;
            if let Some(newest) = newest.as_ref().filter(|v| v.hash == new.hash) {
                return Ok(newest.clone());
            }
            let number = newest.map_or(1, |v| v.rules_version + 1);
            let stored = i64::try_from(number).unwrap_or(i64::MAX);
            tx.execute(
                "INSERT INTO rules_versions (rules_version, hash, created_at, author, source, yaml) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
                &[&stored, &new.hash, &new.at, &new.author, &new.source.as_str(), &new.yaml],
            )
            .await
            .map_err(pg_error)?;
            tx.commit().await.map_err(pg_error)?;
            Ok(RulesVersion::stored(number, new))
        })
    }

    fn versions(&self, limit: usize) -> Result<Vec<RulesVersion>, LedgerError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let sql = format!("SELECT {VERSION_COLUMNS} FROM rules_versions ORDER BY rules_version DESC LIMIT $1");
        let rows = self.read(async |c| c.query(&sql, &[&limit]).await)?;
        rows.iter().map(version_of_row).collect()
    }

    fn version(&self, rules_version: u64) -> Result<Option<(RulesVersion, String)>, LedgerError> {
        let number = i64::try_from(rules_version).unwrap_or(i64::MAX);
        let sql = format!("SELECT {VERSION_COLUMNS}, yaml FROM rules_versions WHERE rules_version = $1");
        let row = self.read(async |c| c.query_opt(&sql, &[&number]).await)?;
        row.map(|row| Ok((version_of_row(&row)?, get(&row, 5)?))).transpose()
    }

    fn newest(&self) -> Result<u64, LedgerError> {
        let row = self.read(async |c| {
            c.query_one("SELECT coalesce(max(rules_version), 0)::int8 FROM rules_versions", &[]).await
        })?;
        Ok(u64::try_from(get::<i64>(&row, 0)?).unwrap_or(0))
    }
}

#[cfg(feature = "test-support")]
pub mod scratch {
    use super::*;

    /// The server tests use unless `FLUXFLOW_TEST_POSTGRES` names another (an admin URL).
    pub const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

    /// A database created for one test and dropped when this is dropped.
    pub struct ScratchDatabase {
        admin: PostgresStoreAdmin,
        name: String,
        /// The URL of the new database.
        pub url: String,
    }

    struct PostgresStoreAdmin {
        runtime: Option<tokio::runtime::Runtime>,
        client: tokio_postgres::Client,
    }

    impl Drop for PostgresStoreAdmin {
        fn drop(&mut self) {
            if let Some(runtime) = self.runtime.take() {
                runtime.shutdown_background();
            }
        }
    }

    /// The admin URL tests use.
    pub fn admin_url() -> String {
        std::env::var("FLUXFLOW_TEST_POSTGRES").unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_owned())
    }

    impl ScratchDatabase {
        /// Creates `ff_test_<random>` on the admin URL's server; the error says why not.
        pub fn create() -> Result<ScratchDatabase, String> {
            let admin_url = admin_url();
            let runtime =
                tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
            let mut config: tokio_postgres::Config = admin_url.parse().map_err(|e| format!("{e}"))?;
            config.connect_timeout(Duration::from_secs(3));
            let client = runtime.block_on(async {
                let (client, connection) = config.connect(NoTls).await.map_err(|e| e.to_string())?;
                tokio::spawn(async move {
                    let _ = connection.await;
                });
                Ok::<_, String>(client)
            })?;
            let name = format!("ff_test_{}", uuid::Uuid::new_v4().simple());
            runtime
                .block_on(client.batch_execute(&format!("CREATE DATABASE {name}")))
                .map_err(|e| format!("cannot create a test database: {e}"))?;
            config.dbname(&name);
            let url = match admin_url.rfind('/') {
                Some(slash) if admin_url[..slash].contains("://") && !admin_url[slash..].contains('@') => {
                    format!("{}/{name}", &admin_url[..slash])
                }
                _ => format!("{admin_url}/{name}"),
            };
            Ok(ScratchDatabase { admin: PostgresStoreAdmin { runtime: Some(runtime), client }, name, url })
        }

        /// The database's name.
        pub fn name(&self) -> &str {
            &self.name
        }

        /// Runs a query on the test database that answers one integer (NULL reads as 0).
        pub fn query_i64(&self, sql: &str) -> Result<i64, String> {
            let runtime = self.admin.runtime.as_ref().ok_or("no runtime")?;
            let url = self.url.clone();
            let sql = sql.to_owned();
            runtime.block_on(async move {
                let (client, connection) = tokio_postgres::connect(&url, NoTls).await.map_err(|e| e.to_string())?;
                tokio::spawn(async move {
                    let _ = connection.await;
                });
                // As bigint whatever the query answers (sum() of a bigint is numeric here).
                let row = client.query_one(&format!("SELECT ({sql})::bigint"), &[]).await.map_err(|e| e.to_string())?;
                Ok(row.try_get::<_, Option<i64>>(0).map_err(|e| e.to_string())?.unwrap_or(0))
            })
        }

        /// The plan PostgreSQL caches for the group's lookup of stored event ids, on a fresh
        /// ledger schema: the one that, planned while the table is small, must still probe the
        /// primary key once the table is large.
        pub fn event_lookup_plan(&self) -> Result<String, String> {
            drop(PostgresStore::connect(&self.url, 1).map_err(|e| e.to_string())?);
            let runtime = self.admin.runtime.as_ref().ok_or("no runtime")?;
            let url = self.url.clone();
            runtime.block_on(async move {
                let (client, connection) = tokio_postgres::connect(&url, NoTls).await.map_err(|e| e.to_string())?;
                tokio::spawn(async move {
                    let _ = connection.await;
                });
                let prepare =
                    format!("SET plan_cache_mode = force_generic_plan; PREPARE lookup(text[]) AS {FIND_EVENTS}");
                client.batch_execute(&prepare).await.map_err(|e| e.to_string())?;
                let rows = client.query("EXPLAIN EXECUTE lookup('{a}')", &[]).await.map_err(|e| e.to_string())?;
                rows.iter().map(|row| row.try_get::<_, String>(0).map_err(|e| e.to_string())).collect()
            })
        }

        /// Runs statements on the test database.
        pub fn execute(&self, sql: &str) -> Result<(), String> {
            let runtime = self.admin.runtime.as_ref().ok_or("no runtime")?;
            let (url, sql) = (self.url.clone(), sql.to_owned());
            runtime.block_on(async move {
                let (client, connection) = tokio_postgres::connect(&url, NoTls).await.map_err(|e| e.to_string())?;
                tokio::spawn(async move {
                    let _ = connection.await;
                });
                client.batch_execute(&sql).await.map_err(|e| e.to_string())
            })
        }
    }

    impl Drop for ScratchDatabase {
        fn drop(&mut self) {
            if let Some(runtime) = self.admin.runtime.as_ref() {
                let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
                let _ = runtime.block_on(self.admin.client.batch_execute(&sql));
            }
        }
    }
}
