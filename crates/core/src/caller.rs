//! Who makes a call: an identity and, for a client on a WebSocket, its connection.
//!
//! Its own module because everything that runs reducers (the database, its clients, the sync
//! engine) names a caller, and none of them should have to reach into another for it.

use epoch_sats::Identity;

/// A caller: its identity and its connection id (zero when it has none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Caller {
    pub identity: Identity,
    pub connection_id: [u8; 16],
}

impl Caller {
    /// A caller with no connection (an HTTP call, the scheduler, a test).
    pub fn identity(identity: Identity) -> Self {
        Self { identity, connection_id: [0; 16] }
    }
}
