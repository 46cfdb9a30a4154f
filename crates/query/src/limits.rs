//! Every limit of this crate, each a named constant with the reason for its value.

use std::time::Duration;

// SQL text and the trees parsed from it (lib.rs, parse.rs).

/// The most operators (`AND`, `OR`, `NOT`, comparisons, arithmetic) one query may hold.
///
/// A chain like `a = 1 OR a = 1 OR …` parses into a tree as deep as it is long, and every pass
/// over that tree (planning, evaluation, dropping it) recurses; this bound keeps each pass far
/// inside a thread's stack, whatever a client sends within [`MAX_SQL_LEN`].
pub const MAX_SQL_OPERATORS: usize = 512;

/// The deepest nesting of parentheses one query may have. The SQL parser backtracks through
/// nested parentheses in time that grows exponentially with their depth (a 76-byte query of 21
/// levels took 4 s in a debug build, and each level about doubles it), so the depth is checked
/// on the tokens, before parsing.
pub const MAX_SQL_NESTING: usize = 10;

/// The stack a thread that runs queries must have at the least: a query at
/// [`MAX_SQL_OPERATORS`] fits in half of it even in a debug build (about 1.5 MiB there; far
/// less in release).
pub const MIN_QUERY_STACK_BYTES: usize = 8 << 20;

/// The longest query text accepted, in bytes (the default of
/// [`QueryContext::max_sql_len`](crate::QueryContext::max_sql_len) and of the HTTP API's
/// `max_sql_bytes`): far beyond any hand-written or generated query.
pub const MAX_SQL_LEN: usize = 64 * 1024;

// The initial evaluation of a subscription request (budget.rs).

/// The most rows (table rows walked, plus index partners probed) one request's initial
/// evaluation may visit. A one-table subscription visits its table once; a join visits each
/// row of its walked side and each partner found, so keys that repeat multiply the work.
pub const MAX_INITIAL_ROWS_VISITED: u64 = 4_000_000;

/// The longest one request's initial evaluation may hold the writer, whatever it visits.
pub const INITIAL_EVALUATION_TIME_LIMIT: Duration = Duration::from_secs(2);

/// How many visits pass between two looks at the clock (reading it is not free).
pub const CLOCK_EVERY: u64 = 4_096;

/// The most rows one SQL query may return by default (`--max-sql-rows`; the default of
/// [`QueryContext::row_limit`](crate::QueryContext::row_limit)): an answer is built whole in
/// memory before it is sent, so an unbounded `SELECT *` on a large table must be refused.
pub const DEFAULT_MAX_SQL_ROWS: usize = 100_000;
