//! Per-database configurations the control plane keeps for other parts: the sync engine's and
//! the archive's.

use epoch_sats::Identity;

use crate::{ControlError, ControlPlane};

impl ControlPlane {
    /// Stores a database's sync configuration (the caller checks ownership).
    pub fn set_sync_config(&self, database: Identity, config: serde_json::Value) -> Result<(), ControlError> {
        let mut st = self.state.write();
        if !st.databases.contains_key(&database) {
            return Err(ControlError::NoSuchDatabase);
        }
        st.sync_configs.insert(database, config);
        self.save(&st)
    }

    pub fn sync_config(&self, database: &Identity) -> Option<serde_json::Value> {
        self.state.read().sync_configs.get(database).cloned()
    }

    /// Every database's sync configuration (live sources start from these when the server
    /// starts).
    pub fn sync_configs(&self) -> Vec<(Identity, serde_json::Value)> {
        self.state.read().sync_configs.iter().map(|(d, c)| (*d, c.clone())).collect()
    }

    /// Stores (`Some`) or removes (`None`: the server's default applies again) a database's own
    /// archive configuration (the caller checks ownership and validates it).
    pub fn set_archive_config(
        &self,
        database: Identity,
        config: Option<serde_json::Value>,
    ) -> Result<(), ControlError> {
        let mut st = self.state.write();
        if !st.databases.contains_key(&database) {
            return Err(ControlError::NoSuchDatabase);
        }
        match config {
            Some(c) => st.archive_configs.insert(database, c),
            None => st.archive_configs.remove(&database),
        };
        self.save(&st)
    }

    /// A database's own archive configuration, if it has one.
    pub fn archive_config(&self, database: &Identity) -> Option<serde_json::Value> {
        self.state.read().archive_configs.get(database).cloned()
    }
}
