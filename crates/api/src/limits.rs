//! Every limit of this crate, each a named constant with the reason for its value.

use std::time::Duration;

// HTTP requests (lib.rs, database.rs, identity.rs).

/// The largest module a publish may upload, by default (`--max-module-bytes`): real modules are
/// a few MiB; the body is held in memory and compiled, so it must be bounded.
pub const DEFAULT_MAX_MODULE_BYTES: usize = 64 << 20;

/// The largest body of any other request, by default (reducer arguments, SQL, sync
/// configuration): far beyond real ones, small enough that bodies cannot exhaust memory.
pub const DEFAULT_MAX_BODY_BYTES: usize = 2 << 20;

// The WebSocket API (ws/).

/// The largest message a client may send (1.3's 32 MiB), by default.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 32 << 20;

/// Bytes of messages waiting for one slow client before it is cut off, by default.
pub const DEFAULT_MAX_QUEUED_BYTES: usize = 64 << 20;

/// Bytes of messages waiting for all WebSocket clients of the server together, by default:
/// past it the clients with the most waiting are cut off first, so clients that read nothing
/// cannot hold more than this (plus what each holds as it is cut) however many there are.
/// Four clients at the per-client limit.
pub const DEFAULT_MAX_TOTAL_QUEUED_BYTES: usize = 4 * DEFAULT_MAX_QUEUED_BYTES;

/// Messages waiting for one slow client before it is cut off (1.3's outgoing queue), by default.
pub const DEFAULT_MAX_QUEUED_MESSAGES: usize = 16_384;

/// Requests of one client waiting for the database before it is told to slow down (1.3's
/// incoming queue).
pub const MAX_REQUESTS_IN_FLIGHT: usize = 2_048;

/// How often the server pings a quiet client (1.3's interval).
pub const PING_INTERVAL: Duration = Duration::from_secs(15);

/// A client that sends nothing (not even a pong) for this long is disconnected (1.3's timeout).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// The socket read buffer. tungstenite zero-fills the whole buffer before every read, so its
/// default (128 KiB) costs a 128 KiB memset each time a connection wakes; most client frames
/// are small.
pub const READ_BUFFER_BYTES: usize = 4096;

/// The longest one write to a client may take; a client that reads nothing for this long is
/// cut off (its queue would otherwise hold the connection, and its memory, for good).
pub const WRITE_TIMEOUT: Duration = IDLE_TIMEOUT;

/// A connection that held this many bytes waiting gives the freed memory back to the system
/// when it ends: the allocator keeps freed memory for reuse otherwise, so a burst of slow
/// clients would leave the server large after they are gone.
pub const RETURN_MEMORY_AFTER_BYTES: usize = 8 << 20;

/// The most frames written before one flush: batching saves system calls, and a bound keeps
/// one busy connection from delaying its first frames.
pub const MAX_FRAMES_PER_FLUSH: usize = 64;

/// How long a closing connection waits to hand its close frame over, so a client that reads
/// nothing does not hold the connection open.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// Messages up to this many bytes go uncompressed whatever the setting (1.3's threshold).
pub const COMPRESS_THRESHOLD: usize = 1024;

/// The longest error message sent back for a refused publish or delete (a module's error text
/// can be as long as it likes).
pub const MAX_ERROR_TEXT: usize = 1024;

/// How often a follower (`epoch logs -f`) looks for new log lines: lines show within a tenth
/// of a second, and an idle follower costs little.
pub const FOLLOW_POLL: Duration = Duration::from_millis(100);

/// The largest body `POST /v1/database/:n/import/:table` takes: an import carries a whole
/// table, so far more than [`DEFAULT_MAX_BODY_BYTES`], and is still held in memory.
pub const MAX_IMPORT_BYTES: usize = 256 << 20;

/// How long a WebSocket token (`POST /v1/identity/websocket-token`) lives, as 1.3's; at most
/// as long as the token it is minted from.
pub const WEBSOCKET_TOKEN_SECONDS: u64 = 60;

// The sync API (sync/).

/// The shortest per-database admin key accepted, so a key cannot be guessed.
pub const MIN_ADMIN_KEY_LEN: usize = 16;

/// The longest a force-sync request may wait for its workflow (`waitSeconds`), so an HTTP
/// request is not held open without bound.
pub const MAX_WAIT_SECONDS: u32 = 300;

/// How long a force-sync request waits by default: long enough for a thing with a few hundred
/// named shadows.
pub const DEFAULT_WAIT_SECONDS: u32 = 30;

/// How often a waiting force-sync request looks at its instance, so it answers soon after the
/// workflow ends.
pub const FORCE_SYNC_POLL: Duration = Duration::from_millis(20);

/// The default `batchSize` of a resync (`POST …/sync/resync`, `epoch sync resync`): items per
/// reducer batch.
pub const RESYNC_DEFAULT_BATCH_SIZE: u32 = 20;

/// The default `delaySeconds` of a resync (`epoch sync resync --delay`): a pause between
/// batches, so a resync of many aggregates leaves room for the database's other writers.
pub const RESYNC_DEFAULT_DELAY_SECONDS: u32 = 3;

/// The default `batchSize` of a shadow force-sync (`epoch sync shadows --batch-size`): shadows
/// per reducer batch.
pub const SHADOWS_DEFAULT_BATCH_SIZE: u32 = 25;

/// The default `delaySeconds` of a shadow force-sync: none, since a force-sync usually waits
/// for its answer.
pub const SHADOWS_DEFAULT_DELAY_SECONDS: u32 = 0;

/// The largest `batchSize` a workflow request may ask for: one batch is one series of reducer
/// calls the instance records at once, so it stays short.
pub const MAX_BATCH_SIZE: u32 = 1000;

/// The longest `delaySeconds` between batches a workflow request may ask for (an hour).
pub const MAX_DELAY_SECONDS: u32 = 3600;

/// The default `maxAttempts` of a workflow request: an item is tried this many times before
/// it counts as failed.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;

/// The most `maxAttempts` a workflow request may ask for (retries back off exponentially, so
/// more would wait for very long).
pub const MAX_ATTEMPTS: u32 = 10;
