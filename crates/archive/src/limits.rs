//! Every limit of this crate, each a named constant with the reason for its value.

use std::time::Duration;

// How far the archive may lag (lib.rs).

/// The default lag bound (`--archive-max-lag-seconds`): a segment holding records is closed and
/// shipped at least this often, so a lost disk loses at most ten seconds of transactions without
/// shipping a segment per commit.
pub const DEFAULT_MAX_LAG: Duration = Duration::from_secs(10);

/// The longest lag bound a server or database may set: longer would leave hours of
/// acknowledged transactions outside the archive.
pub const MAX_LAG_LIMIT: Duration = Duration::from_secs(3600);

// The object store (target.rs).

/// How long connecting to an S3 endpoint may take (a reachable endpoint connects in well under
/// it; the same as `epoch_sync_objectstore::limits::S3_CONNECT_TIMEOUT`).
pub const S3_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long one archive request to the object store may take: it uploads whole segments (64 MiB
/// by default) and snapshots, so it is five times the sync source's
/// `epoch_sync_objectstore::limits::S3_READ_TIMEOUT`, which reads one document of at most
/// 16 MiB. Past it the pass fails and is retried.
pub const ARCHIVE_S3_REQUEST_TIMEOUT: Duration = Duration::from_secs(300);

// The archiving thread (service.rs).

/// How often the archiving thread looks for something to ship: cheap when nothing changed, and
/// small next to [`DEFAULT_MAX_LAG`].
pub const PASS_INTERVAL: Duration = Duration::from_millis(500);
