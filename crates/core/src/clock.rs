//! The server's wall clock, in the unit SpacetimeDB timestamps use.

use std::time::{SystemTime, UNIX_EPOCH};

/// The current time in microseconds since the Unix epoch.
pub fn now_micros() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as i64).unwrap_or(0)
}
