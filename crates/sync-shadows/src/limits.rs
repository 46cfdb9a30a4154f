//! Every limit of this crate, each a named constant with the reason for its value.

use std::time::Duration;

// The IoT data-plane client (client.rs): force-sync reads shadows over HTTPS.

/// Tries per request (the first and the retries) for throttling and server errors: AWS throttles
/// bursts briefly, and five tries with the SDK's backoff ride that out without hiding an outage.
pub const MAX_ATTEMPTS: u32 = 5;

/// How long one request may take, retries apart: a shadow document is at most 8 KiB, so a slow
/// answer means a stuck connection, not a large body.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How long connecting to the data plane may take (an AWS endpoint answers in milliseconds).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Names asked for per listing page (AWS's maximum is 100).
pub const LIST_PAGE_SIZE: i32 = 100;

/// The most named shadows one force-sync takes (AWS sets no limit per thing; this bounds the
/// memory of one listing).
pub const MAX_SHADOWS_PER_THING: usize = 100_000;

/// Shadows read at once in a batch: enough to hide the round trip, few enough to stay under
/// AWS's per-account request rate.
pub const PARALLEL_READS: usize = 16;

// Live shadows over MQTT (mqtt.rs).

/// The MQTT keep-alive: a dead connection is noticed within about this long (AWS allows 30 s to
/// 1200 s).
pub const KEEP_ALIVE: Duration = Duration::from_secs(30);

/// The first wait before reconnecting (short, so a brief drop costs little); it doubles up to
/// [`MAX_BACKOFF`].
pub const MIN_BACKOFF: Duration = Duration::from_millis(200);

/// The longest wait before reconnecting, so an outage does not turn into a reconnect storm.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The largest message taken (AWS IoT's own limit for a shadow document message is 128 KiB).
pub const MAX_MESSAGE_BYTES: usize = 256 << 10;

/// How long a message may wait for the database to make it durable before the consumer gives up
/// on it (unacknowledged, so the broker sends it again).
pub const INGEST_TIMEOUT: Duration = Duration::from_secs(30);
