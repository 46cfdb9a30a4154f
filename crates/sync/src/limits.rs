//! Every limit of this crate, each a named constant with the reason for its value.

use std::time::Duration;

// Applying one batch (workflow/batch.rs).

/// The first retry of a failed item waits this long; each next one twice as long (up to 64
/// times): short enough that a passing conflict costs little, doubling so a lasting one is not
/// hammered.
pub const RETRY_BASE: Duration = Duration::from_millis(50);

/// How long an item waits for its database to write again (after a failed fsync it reopens
/// from disk; a full disk waits for space) before the instance stops.
pub const DATABASE_WAIT_LIMIT: Duration = Duration::from_secs(600);

/// How often a waiting item looks at its database: cheap to look, and the wait ends within a
/// blink of the database coming back.
pub const DATABASE_POLL: Duration = Duration::from_millis(50);

// What an instance keeps (workflow/instance.rs): an instance is saved whole after every batch,
// so what it lists must stay small.

/// The first errors an instance keeps (later ones are counted, not listed).
pub const MAX_ERRORS: usize = 100;

/// The most per-item results an instance keeps (for kinds that report every item).
pub const MAX_RESULTS: usize = 10_000;

// The runner (workflow/runner.rs).

/// How long a stream with nothing new waits before asking its kind again: new items are seen
/// within a tenth of a second, and an idle stream costs ten cheap polls a second.
pub const STREAM_POLL: Duration = Duration::from_millis(100);

/// How often a stream's position (after batches with no items) is saved, at most: each save is
/// a transaction, and a restart replays at most a second of items the reducers treat as
/// idempotent.
pub const POSITION_SAVE_INTERVAL: Duration = Duration::from_secs(1);

/// Finished instances are kept this long by default, as Cloudflare Workflows keeps them.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
