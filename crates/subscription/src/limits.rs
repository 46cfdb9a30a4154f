//! Every limit of this crate, each a named constant with the reason for its value.

/// The most distinct queries one client may hold at once: each is evaluated against every
/// transaction that touches its tables, so one client must not make every commit slow.
pub const MAX_QUERIES_PER_CLIENT: usize = 1_024;
