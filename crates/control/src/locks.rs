//! Database locks (2.x's `spacetime lock` / `unlock`): a locked database is neither deleted nor
//! started afresh (`--delete-data`, `PUT /reset`) until its owner unlocks it. Publishing an update
//! that keeps the data stays allowed, as in 2.x.

use epoch_sats::Identity;

use crate::{ControlError, ControlPlane};

/// 2.x's refusal of a delete while locked.
pub const LOCKED_DELETE: &str = "Database is locked and cannot be deleted. Run `spacetime unlock` first.";
/// 2.x's refusal of a reset (`publish --delete-data`, `PUT /reset`) while locked.
pub const LOCKED_RESET: &str =
    "Database is locked and cannot be reset with --delete-data. Run `spacetime unlock` first.";

impl ControlPlane {
    /// Locks or unlocks a database (its owner only); durable before it returns. Locking a locked
    /// database, or unlocking an unlocked one, changes nothing and is no error.
    pub fn set_lock(&self, identity: Identity, caller: Identity, locked: bool) -> Result<(), ControlError> {
        let mut st = self.state.write();
        match Self::owner_of(&st, &identity) {
            None => return Err(ControlError::NoSuchDatabase),
            Some(owner) if owner != caller => return Err(Self::not_owner(&caller, &identity)),
            Some(_) => {}
        }
        let changed =
            if locked { st.locks.insert(identity, caller).is_none() } else { st.locks.remove(&identity).is_some() };
        if changed {
            tracing::info!(database = %identity.to_hex(), locked, "database lock changed");
            self.save(&st)?;
        }
        Ok(())
    }

    /// Whether a database is locked.
    pub fn is_locked(&self, identity: &Identity) -> bool {
        self.state.read().locks.contains_key(identity)
    }
}
