//! Every limit of this crate, each a named constant with the reason for its value.

use std::time::Duration;

// Persistence (persist.rs).

/// Write a snapshot after this many transactions, by default (`--snapshot-every`): a restart
/// replays at most this many from the log, and a snapshot (a copy of every table) is not written
/// so often that it costs more than the replay it saves.
pub const DEFAULT_SNAPSHOT_EVERY: u64 = 100_000;

/// The size a log segment is closed at, by default: segments are the unit the log is pruned and
/// archived in, so 64 MiB keeps both coarse-grained without holding much behind a snapshot.
pub const DEFAULT_SEGMENT_MAX_BYTES: u64 = 64 << 20;

/// How often `--durability async` fsyncs: a machine crash can lose at most about this much of
/// answered transactions, in exchange for answers that do not wait for the disk.
pub const ASYNC_FSYNC_INTERVAL: Duration = Duration::from_millis(50);

/// Snapshots kept on disk; the log is pruned up to the oldest of them. Two, so a snapshot
/// damaged on disk still leaves an older one and the log after it.
pub const SNAPSHOTS_KEPT: usize = 2;

// WebSocket clients of one database (clients.rs).

/// The most clients one database serves at once, by default (`--max-clients-per-database`):
/// each holds an outbox and its subscriptions, so one database cannot take the server's memory.
pub const DEFAULT_MAX_CLIENTS_PER_DATABASE: usize = 10_000;

/// The most subscriptions (query ids, plus one legacy set) one connection may hold, by default
/// (`--max-subscriptions-per-client`): each is evaluated on every commit touching its tables.
pub const DEFAULT_MAX_SUBSCRIPTIONS_PER_CLIENT: usize = 1_024;

/// The most rows one subscription request may send initially, by default
/// (`--max-initial-rows`): the answer is built in memory before it is sent.
pub const DEFAULT_MAX_INITIAL_ROWS: usize = 1_000_000;

/// Batches an empty outbox keeps room for; more is given back (a slow fsync can queue many).
pub const OUTBOX_KEPT_CAPACITY: usize = 64;

// Workflow steps a database remembers (steps.rs).

/// Instances remembered at once; the least recently active is forgotten first. A workflow only
/// asks about its own latest batch, right after a restart, so this bounds memory and nothing more.
pub const MAX_INSTANCES: usize = 256;

// The journal of connected clients (client_journal.rs).

/// The journal is rewritten to the connected clients once it holds this many records and
/// four times as many as there are clients: it stays within a few hundred KiB however long
/// clients come and go.
pub const COMPACT_AFTER_RECORDS: usize = 4096;

/// How often a departure waiting for the log checks whether the journal is closing, so a
/// shutdown is not held up for long.
pub const CLOSING_CHECK: Duration = Duration::from_millis(100);

// The database's writer thread (executor.rs).

/// The longest the writer sleeps without looking at its schedule, so a clock jump or a missed
/// wake-up delays a scheduled reducer by at most this much.
pub const IDLE_WAKE: Duration = Duration::from_millis(500);

/// Requests waiting for the writer; callers block (back-pressure) when it is full, so a burst
/// queues rather than fails while memory stays bounded.
pub const QUEUE_CAPACITY: usize = 4096;

// Scheduled reducers (scheduler.rs).

/// The most scheduled reducer runs one database makes in one second, so a schedule that is
/// always due cannot starve the database's clients (later runs wait, never dropped).
pub const MAX_SCHEDULED_RUNS_PER_SECOND: u32 = 1_000;

/// Materialized view instances (a view for one caller) kept per database; past it, the one
/// read longest ago is dropped (it runs again when next read).
pub const MAX_MATERIALIZED_VIEWS: usize = 10_000;

/// How long a materialized view instance nobody reads is kept (2.x: ten minutes).
pub const VIEW_IDLE_EXPIRY: Duration = Duration::from_secs(600);
