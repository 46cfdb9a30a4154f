//! Every limit of this crate, each a named constant with the reason for its value.

use std::time::Duration;

// The server (main.rs).

/// How long a clean stop (SIGTERM, SIGINT) waits for the databases to disconnect their
/// clients before the process ends regardless: what is acknowledged is on disk already, so the
/// wait is only a courtesy to clients and must not hold a restart up.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

// Benchmarks (bench/): the servers under test.

/// How long a server may take to answer its first ping after a start: generous, so a slow
/// machine (or a server compiling its module first) does not fail a benchmark run.
pub const START_TIMEOUT: Duration = Duration::from_secs(300);

/// How long one benchmark request may take (a reducer inserting 100,000 rows included).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

// Benchmarks: the load workloads (bench/load.rs).

/// Calls each client keeps in flight in the throughput workload: enough to keep the server
/// busy without measuring queueing alone.
pub const IN_FLIGHT: usize = 8;

/// Accounts the transfers move money between (pairs of two per client slot).
pub const ACCOUNTS: u32 = 128;

/// Rows of the initial-subscription workload.
pub const INITIAL_ROWS: u32 = 100_000;

/// HTTP connections of the `http` workload.
pub const HTTP_CONNECTIONS: usize = 16;

/// HTTP connections of the `sql` workload.
pub const SQL_CONNECTIONS: usize = 4;

/// Read buffer of the many small-message clients: tungstenite zero-fills the buffer before every
/// read (see `epoch_api::limits::READ_BUFFER_BYTES`), so a small one keeps a thousand clients cheap.
pub const SMALL_READ_BUFFER: usize = 4096;

/// Read buffer of the client receiving a whole table in one message: large, so a message of
/// many MiB arrives in few reads.
pub const LARGE_READ_BUFFER: usize = 256 << 10;

// Benchmarks: the storage workloads (bench/storage.rs).

/// Rows one `open_accounts` call of the bulk load inserts.
pub const BULK_BATCH: u32 = 10_000;

/// Rows one `fill` call of the memory workload inserts.
pub const MEMORY_BATCH: u64 = 100_000;

/// How long to wait before measuring memory and disk after a load, so that an asynchronous
/// log (the reference's) has reached the disk and freed its buffers.
pub const SETTLE: Duration = Duration::from_secs(1);

// Benchmarks: the archive workloads (bench/archive.rs).

/// The lag bound the archived database is given: short, so the benchmark measures shipping
/// rather than waiting for the bound.
pub const MAX_LAG_SECONDS: f64 = 1.0;

/// How often the lag measurement polls the archive status: fine enough to measure a lag of
/// [`MAX_LAG_SECONDS`] to a few percent.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// The pause between two calls of the lag measurement's writer: a steady trickle of
/// transactions, not a load test.
pub const WRITER_PAUSE: Duration = Duration::from_millis(5);

/// Rows per transaction of the backup's bulk load.
pub const LOAD_BATCH: u32 = 10_000;

// Benchmarks: the sync workloads (bench/sync.rs).

/// How long one sync run may take before the benchmark gives up on it: far beyond a healthy
/// run, so only a stuck one is cut.
pub const SYNC_TIMEOUT: Duration = Duration::from_secs(600);
