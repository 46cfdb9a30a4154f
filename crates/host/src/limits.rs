//! Every limit of this crate, each a named constant with the reason for its value.

use std::time::Duration;

// Running one module (module.rs).

/// The default per-reducer time limit (`--reducer-timeout-ms`, `epoch run --timeout-ms`): far
/// beyond a well-behaved reducer, short enough that a runaway loop does not hold the database's only writer for long.
pub const DEFAULT_REDUCER_TIMEOUT: Duration = Duration::from_secs(10);

/// The default most linear memory one module instance may grow to: 1 GiB, far beyond a real
/// module, so a leaking one fails its call instead of taking the machine's memory.
pub const DEFAULT_MEMORY_MAX_BYTES: usize = 1 << 30;

/// How many module log lines a database keeps by default (also bounded by
/// [`MAX_LOG_RING_BYTES`]): enough for `epoch logs` to show what happened recently.
pub const DEFAULT_LOG_CAPACITY: usize = 10_000;

/// How often the shared ticker advances the engine epoch; the granularity of reducer deadlines:
/// fine enough for millisecond timeouts, coarse enough that the ticker costs nothing.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

// Module logs (logs.rs).

/// The longest message kept of one log line, in bytes; the rest is cut, with a note saying how
/// much.
pub const MAX_LOG_LINE_BYTES: usize = 16 * 1024;

/// The most bytes one database's log ring holds (messages, targets, file names and traces);
/// past it, the oldest lines go first, as they do past the line count.
pub const MAX_LOG_RING_BYTES: usize = 8 << 20;

/// Room kept at the end of a cut text for the note saying how much was cut, so a cut text
/// (note included) is at most [`MAX_LOG_LINE_BYTES`] and cutting it again changes nothing.
pub const CUT_NOTE_ROOM: usize = 64;

// The host functions modules call (abi/v10_0.rs).

/// The most bytes a module may write into one host sink (an error message or its module
/// description): these are small, so anything past 64 MiB is refused (`NO_SPACE`) rather than
/// held.
pub const MAX_SINK_BYTES: usize = 64 << 20;

/// The most reducers one call may schedule to run right after it
/// (`volatile_nonatomic_schedule_immediate`):
/// a bound on what one call can queue; past it the call traps.
pub const MAX_SCHEDULED_IMMEDIATE: usize = 10_000;

// The host functions 2.x modules call (abi/v10_x.rs).

/// The most byte sources (reducer arguments, tokens read with `get_jwt`) one call may hold open:
/// 2.x answers `NO_SPACE` past 256, so a module that never reads what it asked for is bounded.
pub const MAX_OPEN_BYTES_SOURCES: usize = 256;

// HTTP requests of procedures (http.rs).

/// How long a procedure's HTTP request may take when it names no timeout (2.x's default).
pub const DEFAULT_HTTP_TIMEOUT: Duration = Duration::from_secs(30);

/// The longest timeout a procedure's HTTP request may ask for (2.x clamps to the same).
pub const MAX_HTTP_TIMEOUT: Duration = Duration::from_secs(180);

/// Redirects one request follows, each checked against the address rules.
pub const MAX_HTTP_REDIRECTS: usize = 10;

/// The largest response body handed to a procedure: 16 MiB, far beyond an API answer, so a
/// huge download fails the request instead of filling the module's memory.
pub const MAX_HTTP_RESPONSE_BYTES: usize = 16 << 20;

/// The default time limit of one procedure call, sleeps and requests included: long enough
/// for a few slow requests, short enough that a stuck one ends.
pub const DEFAULT_PROCEDURE_TIMEOUT: Duration = Duration::from_secs(300);

/// How often (in epoch ticks: 50 ms) a running procedure is checked against its deadline and
/// its open transaction against the reducer limit.
pub const PROCEDURE_CHECK_TICKS: u64 = 10;

/// Index keys one run of a view may read by point and still be tracked key by key; past it,
/// the tables it read by point count as read whole (it then runs again after any change to
/// them, which is correct, only slower).
pub const MAX_POINT_READS: usize = 4_096;
