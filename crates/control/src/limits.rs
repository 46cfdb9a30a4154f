//! The control plane's limits, each a named constant with why it has its value.

use std::time::Duration;

/// The most names one database may have (1.3 sets no bound; every name costs a row of the
/// system database, rewritten on each change of the control plane).
pub const MAX_NAMES_PER_DATABASE: usize = 64;

/// How often the control plane looks for databases whose log failed (see
/// [`crate::ControlPlane::reopen_failed`]): short enough that a database stops refusing
/// writes soon after its disk recovers, long enough to cost nothing when all is well.
pub const LOG_WATCH_INTERVAL: Duration = Duration::from_millis(200);

/// How many databases open at once while the server starts: recovery reads and replays
/// logs, so more than the machine's cores would only make every database wait longer.
pub const STARTER_THREADS: usize = 2;
