//! Every limit of this crate, each a named constant with the reason for its value. Past any of
//! them a decode fails with a [`DecodeError`](crate::car::DecodeError) instead of allocating or
//! recursing without bound on input from the network.

/// How deep a DAG-CBOR record may nest when it is turned into the reducer's JSON: the data model
/// sets no number; 64 is far beyond real records and bounds the recursion. (BSATN values have
/// their own, `epoch_sats::limits::MAX_VALUE_DEPTH`.)
pub const MAX_RECORD_DEPTH: usize = 64;

/// The largest CAR taken whole: room for a repo of about a million small records, while one
/// hostile repo cannot take more than this much memory.
pub const MAX_CAR_BYTES: usize = 256 << 20;

/// The most blocks one CAR may hold: a repo of [`MAX_CAR_BYTES`] of small records has about this
/// many, so the block index stays bounded too.
pub const MAX_BLOCKS: usize = 2_000_000;

/// How deep an MST may be: a balanced tree of 2^64 keys is far shallower, so anything deeper is
/// malformed (and would recurse without bound).
pub const MAX_MST_DEPTH: usize = 64;

/// The longest MST key taken (`<collection>/<rkey>`): the spec's NSID and record-key limits add
/// up to far less.
pub const MAX_KEY_BYTES: usize = 1024;

/// The largest firehose frame taken: the spec's commit limit is 2 MiB of blocks; headroom for the
/// rest of the frame.
pub const MAX_FRAME_BYTES: usize = 5 << 20;

/// The most operations one commit may carry: the spec allows 200; headroom for relays that
/// allow more.
pub const MAX_OPS: usize = 1_000;
