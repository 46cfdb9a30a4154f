//! Every limit of this crate, each a named constant with the reason for its value.

/// The deepest nesting of values a BSATN or SATS-JSON decode follows before it gives up: deep
/// enough for any real row (SpacetimeDB's own types nest a handful of levels), shallow enough that
/// a hostile input cannot exhaust the decoding thread's stack. Not to be confused with
/// `epoch_schema::limits::MAX_TYPE_DEPTH`, which bounds type definitions in a module.
pub const MAX_VALUE_DEPTH: u32 = 128;

/// How many zero-byte elements (e.g. arrays of `()`) one decode may create beyond the input
/// length: such elements consume no input, so without an allowance an input of a few bytes could
/// claim billions of them; 64 Ki is more than any real value holds.
pub const ZERO_SIZED_ALLOWANCE: usize = 1 << 16;
