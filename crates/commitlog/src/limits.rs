//! Every limit of this crate, each a named constant with the reason for its value.

use std::time::Duration;

/// The largest record a frame may hold; a longer length field is taken as corruption, so a
/// damaged length never makes a read allocate more than this.
pub const MAX_RECORD_BYTES: usize = 256 << 20;

/// How long the writer waits before trying again when the disk refused a write (full): often
/// enough that writes resume soon after space is freed, rarely enough to cost nothing.
pub const WRITE_RETRY_INTERVAL: Duration = Duration::from_millis(200);

/// How many queued commands one batch (one write and one fsync) takes at most, so callbacks
/// are not starved.
pub const MAX_BATCH: usize = 4096;
