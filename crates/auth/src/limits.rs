//! Every limit of this crate, each a named constant with the reason for its value.

use std::time::Duration;

// Verifying tokens (lib.rs).

/// Clock skew allowed when checking `exp`, as jsonwebtoken's default.
pub const EXP_LEEWAY_SECS: u64 = 60;

/// How many verified tokens are remembered; the cache starts over when full.
pub const VERIFIED_CACHE_MAX: usize = 16_384;

// Outbound requests (outbound.rs).

/// Redirects followed in one fetch (each within the origin the fetch started on).
pub const MAX_REDIRECTS: usize = 3;

// Fetching an outside issuer's keys (oidc.rs).

/// How long one request to an issuer may take (connecting, waiting and reading).
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// The least time between two fetches of one issuer's keys (a stream of tokens with unknown
/// key ids cannot make the server hammer the issuer).
pub const MIN_REFRESH: Duration = Duration::from_secs(1);

/// How long fetched keys are trusted before they are fetched again.
pub const KEYS_TTL: Duration = Duration::from_secs(3600);

/// How long a failed fetch is remembered: tokens of an issuer that cannot be reached are refused
/// without a new fetch meanwhile, so unsigned tokens cannot make the server connect at will.
pub const FAILED_FETCH_TTL: Duration = Duration::from_secs(30);

/// The largest discovery document or key set read (real ones are a few KiB); the body is
/// refused as soon as more arrives.
pub const MAX_DOCUMENT_BYTES: usize = 256 << 10;

/// Fetches running at once, over all issuers: each holds a connection and a task, and tokens
/// naming issuers that never answer must not pile them up. Past it a token is refused.
pub const MAX_CONCURRENT_FETCHES: usize = 8;

/// Issuers whose keys (or failure) are remembered; the least recently used is forgotten first.
pub const MAX_CACHED_ISSUERS: usize = 1024;

/// Bytes of key sets remembered over all issuers (counted as the documents' sizes); the least
/// recently used issuer is forgotten first.
pub const MAX_CACHED_KEY_BYTES: usize = 8 << 20;
