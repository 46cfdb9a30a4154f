//! Every limit of this crate, each a named constant with the reason for its value.

use std::time::Duration;

/// The longest aggregate type or id accepted (a file name's limit on common file systems).
pub const MAX_KEY_PART: usize = 200;

/// Ids one pass over a `file://` type directory keeps, at most: a directory is read again for the
/// next ids rather than held whole, so memory stays bounded for any number of aggregates.
pub const READ_AHEAD: usize = 10_000;

/// The most keys one listing call returns (S3's own page size); callers page with the last key.
pub const LIST_PAGE: usize = 1000;

/// How long connecting to an S3-compatible endpoint may take (the same as the archive's
/// `epoch_archive::limits::S3_CONNECT_TIMEOUT`: a reachable endpoint connects in well under it).
pub const S3_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long one S3 read (a listing page or one document of at most [`MAX_DOCUMENT_BYTES`]) may
/// take, so an item never hangs its workflow: past it the item fails (and is retried like any
/// failure). Shorter than the archive's `epoch_archive::limits::ARCHIVE_S3_REQUEST_TIMEOUT`,
/// which uploads whole segments and snapshots; a read of 16 MiB that takes a minute is stuck.
pub const S3_READ_TIMEOUT: Duration = Duration::from_secs(60);

/// Object-store reads in flight at once while fetching a batch: enough to hide S3's latency,
/// well under its per-prefix request rate.
pub const FETCH_CONCURRENCY: usize = 32;

/// The largest aggregate document read (a projection's input, far above real documents); a bigger
/// one fails alone, without being loaded, so one bad object cannot exhaust memory.
pub const MAX_DOCUMENT_BYTES: u64 = 16 << 20;
