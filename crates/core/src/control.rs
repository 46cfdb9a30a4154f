//! The control plane: which databases exist, who owns them, and the names that point at them.
//!
//! Held in memory for now; the durability milestone moves it into a system database.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use epoch_host::{HostConfig, ModuleLogs};
use epoch_schema::ModuleDef;
use parking_lot::RwLock;

use crate::database::{Caller, CreateError, Database, UpdateError};
use crate::executor::{DatabaseHandle, ShutDown};

/// A 256-bit identity, little-endian (as the module ABI and `Caller` carry it).
pub type IdentityBytes = [u8; 32];

/// One hosted database, as the API sees it.
pub struct HostedDatabase {
    pub identity: IdentityBytes,
    pub owner: IdentityBytes,
    pub handle: DatabaseHandle,
    pub logs: ModuleLogs,
    /// Keccak-256 of the module's wasm, as 1.3 reports it in `initial_program`.
    pub program_hash: [u8; 32],
    pub def: Arc<ModuleDef>,
}

/// What a publish did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishOp {
    Created,
    Updated,
}

/// Why a publish, delete or rename was refused.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("Permission denied: `{caller}` does not own database `{database}`")]
    NotOwner { caller: String, database: String },
    #[error(transparent)]
    Create(#[from] CreateError),
    #[error(transparent)]
    Update(#[from] UpdateError),
    #[error("record with the name {0} already exists")]
    NameTaken(String),
    #[error("no such database")]
    NoSuchDatabase,
    #[error(transparent)]
    ShutDown(#[from] ShutDown),
}

fn hex_be(id: &IdentityBytes) -> String {
    id.iter().rev().map(|b| format!("{b:02x}")).collect()
}

#[derive(Default)]
struct State {
    databases: HashMap<IdentityBytes, Arc<HostedDatabase>>,
    /// Name → database identity.
    names: BTreeMap<String, IdentityBytes>,
    /// Name → the identity that registered it (only it may move the name).
    name_owners: HashMap<String, IdentityBytes>,
}

/// Every database on this server.
pub struct ControlPlane {
    state: RwLock<State>,
    config: HostConfig,
}

fn keccak(bytes: &[u8]) -> [u8; 32] {
    use sha3::Digest;
    sha3::Keccak256::digest(bytes).into()
}

impl ControlPlane {
    pub fn new(config: HostConfig) -> Self {
        Self { state: RwLock::new(State::default()), config }
    }

    pub fn get(&self, identity: &IdentityBytes) -> Option<Arc<HostedDatabase>> {
        self.state.read().databases.get(identity).cloned()
    }

    pub fn resolve_name(&self, name: &str) -> Option<IdentityBytes> {
        self.state.read().names.get(name).copied()
    }

    pub fn names_of(&self, identity: &IdentityBytes) -> Vec<String> {
        self.state.read().names.iter().filter(|(_, id)| *id == identity).map(|(n, _)| n.clone()).collect()
    }

    /// The databases `owner` owns, in identity order.
    pub fn owned_by(&self, owner: &IdentityBytes) -> Vec<IdentityBytes> {
        let mut v: Vec<_> =
            self.state.read().databases.values().filter(|d| d.owner == *owner).map(|d| d.identity).collect();
        v.sort_by_key(hex_be);
        v
    }

    pub fn all(&self) -> Vec<Arc<HostedDatabase>> {
        self.state.read().databases.values().cloned().collect()
    }

    /// Points `name` at `identity`, registered to `caller`. A name already in use is refused.
    pub fn add_name(&self, name: &str, identity: IdentityBytes, caller: IdentityBytes) -> Result<(), ControlError> {
        let mut st = self.state.write();
        if st.names.contains_key(name) {
            return Err(ControlError::NameTaken(name.to_string()));
        }
        st.names.insert(name.to_string(), identity);
        st.name_owners.insert(name.to_string(), caller);
        Ok(())
    }

    /// Replaces every name of `identity` with `names` (owner only; names in use elsewhere refused).
    pub fn set_names(
        &self,
        identity: IdentityBytes,
        caller: IdentityBytes,
        names: &[String],
    ) -> Result<(), SetNamesError> {
        let mut st = self.state.write();
        let db = st.databases.get(&identity).ok_or(SetNamesError::DatabaseNotFound)?;
        if db.owner != caller {
            return Err(SetNamesError::NotYourDatabase);
        }
        if let Some(n) = names.iter().find(|n| st.names.contains_key(*n)) {
            return Err(SetNamesError::InUse(n.clone()));
        }
        let current: Vec<String> = st.names.iter().filter(|(_, id)| **id == identity).map(|(n, _)| n.clone()).collect();
        if let Some(n) = current.iter().find(|n| st.name_owners.get(*n).is_some_and(|o| *o != caller)) {
            return Err(SetNamesError::PermissionDenied(n.clone()));
        }
        for n in current {
            st.names.remove(&n);
            st.name_owners.remove(&n);
        }
        for n in names {
            st.names.insert(n.clone(), identity);
            st.name_owners.insert(n.clone(), caller);
        }
        Ok(())
    }

    /// Creates the database `identity` from `wasm` (running `init` as `caller`), or updates its
    /// module if it exists and `caller` owns it. `clear` starts the existing database afresh.
    pub fn publish(
        &self,
        identity: IdentityBytes,
        caller: IdentityBytes,
        wasm: &[u8],
        clear: bool,
    ) -> Result<PublishOp, ControlError> {
        if let Some(existing) = self.get(&identity) {
            if existing.owner != caller {
                return Err(ControlError::NotOwner {
                    caller: hex_be(&caller),
                    database: hex_be(&identity)[..16].to_string(),
                });
            }
            if !clear {
                let wasm_owned = wasm.to_vec();
                existing.handle.with(move |db| db.update_module(&wasm_owned))??;
                let def = existing.handle.with(|db| Arc::new(db.def().clone()))?;
                let updated = HostedDatabase {
                    identity,
                    owner: existing.owner,
                    handle: existing.handle.clone(),
                    logs: existing.logs.clone(),
                    program_hash: keccak(wasm),
                    def,
                };
                self.state.write().databases.insert(identity, Arc::new(updated));
                return Ok(PublishOp::Updated);
            }
        }
        let existed = self.get(&identity).is_some();
        let db = Database::create(wasm, identity, Caller::identity(caller), self.config.clone())?;
        let logs = db.logs().clone();
        let def = Arc::new(db.def().clone());
        let (handle, _thread) = DatabaseHandle::spawn(db, &hex_be(&identity)[..16]);
        let hosted = HostedDatabase { identity, owner: caller, handle, logs, program_hash: keccak(wasm), def };
        // Replacing the entry drops the old handle, which stops the old writer thread.
        self.state.write().databases.insert(identity, Arc::new(hosted));
        Ok(if existed { PublishOp::Updated } else { PublishOp::Created })
    }

    /// Deletes a database (owner only). Names stay, as in 1.3; a missing database is no error.
    pub fn delete(&self, identity: IdentityBytes, caller: IdentityBytes) -> Result<(), ControlError> {
        let mut st = self.state.write();
        match st.databases.get(&identity) {
            None => Ok(()),
            Some(db) if db.owner != caller => {
                Err(ControlError::NotOwner { caller: hex_be(&caller), database: hex_be(&identity)[..16].to_string() })
            }
            Some(_) => {
                st.databases.remove(&identity);
                Ok(())
            }
        }
    }
}

/// Why `set_names` was refused; the variants are 1.3's `SetDomainsResult`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SetNamesError {
    #[error("database not found")]
    DatabaseNotFound,
    #[error("not your database")]
    NotYourDatabase,
    #[error("Cannot rename to {0} because it already is in use.")]
    InUse(String),
    #[error("permission denied for {0}")]
    PermissionDenied(String),
}
