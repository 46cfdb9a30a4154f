//! Every limit of this crate, each a named constant with the reason for its value.

use std::time::Duration;

// The `atproto` section of a sync configuration (config.rs).

/// The default of `backfillCursorMaxAgeHours`: a backfill request whose cursor is older than this
/// (hours since the consumer last advanced it) calls for a catch_up (a replay of the firehose from
/// the cursor); a younger cursor is taken as current.
pub const DEFAULT_CURSOR_MAX_AGE_HOURS: f64 = 48.0;

/// Requests per second to the service, by default: polite to a PDS or relay that rate-limits
/// per client, fast enough for a backfill of thousands of repos.
pub const DEFAULT_REQUESTS_PER_SECOND: f64 = 20.0;

/// The slowest request rate a configuration may ask for (one request in 100 s); below it a
/// backfill would never end.
pub const MIN_REQUESTS_PER_SECOND: f64 = 0.01;

/// The fastest request rate a configuration may ask for; past it the pacing interval rounds to
/// nothing.
pub const MAX_REQUESTS_PER_SECOND: f64 = 10_000.0;

/// Repos read at once, by default: each holds a CAR of up to
/// `epoch_atproto::limits::MAX_CAR_BYTES` in memory.
pub const DEFAULT_PARALLEL_REPOS: u32 = 4;

/// Repos read at once, at most, for the same reason as [`DEFAULT_PARALLEL_REPOS`].
pub const MAX_PARALLEL_REPOS: u32 = 64;

/// Items (records) applied per batch of a backfill, by default: a batch is one step of the
/// workflow, so larger batches mean fewer steps recorded.
pub const DEFAULT_BATCH_SIZE: u32 = 200;

/// Items applied per batch of a backfill, at most, so one batch stays short.
pub const MAX_BATCH_SIZE: u32 = 1000;

/// The most collections a configuration may name (each is matched against every record).
pub const MAX_COLLECTIONS: usize = 1_000;

/// The most members (DIDs) a configuration may name; more are for `listRepos` discovery.
pub const MAX_CONFIGURED_MEMBERS: usize = 100_000;

// XRPC requests to a PDS or relay (xrpc.rs).

/// How long one request may take, a large repo's CAR (up to 256 MiB) included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// How long connecting may take (a reachable service connects in well under it).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Accounts asked for per `listRepos` page (the lexicon's maximum).
pub const LIST_PAGE: u32 = 1000;

/// The most members one database may sync: the member list and the cursor's revs are held in
/// memory.
pub const MAX_MEMBERS: usize = 1_000_000;

// Resolving DIDs to signing keys (identity.rs).

/// How long a resolved key is trusted before it is resolved again: keys rotate rarely, so ten
/// minutes saves a resolution per commit while a rotation is picked up soon.
pub const KEY_TTL: Duration = Duration::from_secs(600);

/// How long one resolution (PLC directory or did:web) may take.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(10);

/// The most keys kept (past it, the cache starts again): one per member, bounded.
pub const MAX_CACHED_KEYS: usize = 100_000;

/// The largest DID document read (real ones are about 1 KiB); the body is refused as soon as
/// more arrives.
pub const MAX_DID_DOCUMENT_BYTES: usize = 64 << 10;

// The firehose consumer (firehose.rs).

/// Frames read ahead of the reducers, at most (the reader waits past it), so a slow database
/// bounds the memory of a fast relay.
pub const READ_AHEAD_FRAMES: usize = 4_096;

/// How long the stream may be quiet before a catch_up counts as at the head: a relay sends
/// continuously, so a second of silence means there is nothing older left.
pub const HEAD_QUIET: Duration = Duration::from_secs(1);

/// The first wait before reconnecting (short, so a brief drop costs little); it doubles up to
/// [`MAX_BACKOFF`].
pub const MIN_BACKOFF: Duration = Duration::from_millis(200);

/// The longest wait before reconnecting, so an outage does not turn into a reconnect storm.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The most events held back for repos under a full_sync (past it, the stream waits), so a
/// long re-read cannot hold the stream in memory without bound.
pub const MAX_HELD_FRAMES: usize = 16_384;

/// The most repos whose last `rev` the cursor keeps (past it, the rev check is skipped for
/// new repos, with a warning): the cursor is saved whole, so it must stay small.
pub const MAX_TRACKED_REPOS: usize = 100_000;

/// How often a repo whose re-read failed (its PDS did not answer) is tried again: soon enough
/// that a blip heals quickly, seldom enough not to hammer a PDS that is down.
pub const REFETCH_RETRY_INTERVAL: Duration = Duration::from_secs(2);
