//! The control plane: which databases exist, who owns them, and the names that point at them.
//!
//! With a data directory, the control plane is durable: databases, owners, names, permissions and
//! sync configurations are rows of the system database ([`SystemDb`], `data_dir/system/`), each
//! change one durable transaction; each module is kept as `databases/<identity>/module.wasm`
//! beside that database's commitlog and snapshots, and [`ControlPlane::open`] brings every
//! database back after a restart or a crash.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use epoch_core::PersistConfig;
use epoch_host::HostConfig;
use epoch_sats::Identity;
use parking_lot::RwLock;

use crate::hosted::UnavailableDatabase;
use crate::system::{SystemDb, SystemError, SystemTable};
use crate::{ControlError, GrantRule, HostedDatabase};

/// Called with a database's identity when it is deleted or replaced (`clear`), so whatever
/// works on it (workflows) stops.
pub type DropListener = Box<dyn Fn(&Identity) + Send + Sync>;

#[derive(Default)]
pub(crate) struct State {
    pub(crate) databases: HashMap<Identity, Arc<HostedDatabase>>,
    /// Databases being created right now → the identity creating them. Creating a database is
    /// claimed here under the state lock, so two publishes can never both create one database.
    pub(crate) pending: HashMap<Identity, Identity>,
    /// Databases whose files failed to open at start; the others run regardless.
    pub(crate) unavailable: HashMap<Identity, UnavailableDatabase>,
    /// Name → database identity.
    pub(crate) names: BTreeMap<String, Identity>,
    /// Name → the identity that registered it (only it may move the name).
    pub(crate) name_owners: HashMap<String, Identity>,
    /// (database, identity) → permissions granted by the database's owner (e.g. `sync`).
    pub(crate) permissions: BTreeMap<(Identity, Identity), Vec<String>>,
    /// Permissions granted by rule: tokens of an issuer whose verified email is in a domain.
    pub(crate) rules: BTreeMap<Identity, Vec<GrantRule>>,
    /// Database → its sync configuration (JSON, as the owner set it).
    pub(crate) sync_configs: HashMap<Identity, serde_json::Value>,
    /// Database → its own archive configuration (JSON, as set through the API), replacing the
    /// server's default for it.
    pub(crate) archive_configs: HashMap<Identity, serde_json::Value>,
    /// Locked databases → who locked them: neither deleted nor reset until unlocked.
    pub(crate) locks: BTreeMap<Identity, Identity>,
}

/// Every database on this server.
pub struct ControlPlane {
    pub(crate) state: RwLock<State>,
    pub(crate) config: HostConfig,
    /// Where databases live durably; `None` keeps everything in memory.
    pub(crate) storage: Option<(PathBuf, PersistConfig)>,
    pub(crate) system: Arc<SystemDb>,
    pub(crate) drop_listeners: RwLock<Vec<DropListener>>,
    /// Databases waiting to be opened at start, in creation order.
    pub(crate) start_queue: parking_lot::Mutex<std::collections::VecDeque<Identity>>,
    /// Signalled whenever a database finished starting.
    pub(crate) started: parking_lot::Condvar,
}

/// The reason given for a database that has not finished opening yet.
pub(crate) const STARTING: &str = "the database is starting; try again shortly";

impl ControlPlane {
    /// An in-memory control plane: nothing survives the process.
    pub fn new(config: HostConfig) -> Self {
        Self {
            state: RwLock::new(State::default()),
            config,
            storage: None,
            system: Arc::new(SystemDb::in_memory()),
            drop_listeners: RwLock::new(Vec::new()),
            start_queue: parking_lot::Mutex::new(std::collections::VecDeque::new()),
            started: parking_lot::Condvar::new(),
        }
    }

    /// The system database (workflow instances live there too).
    pub fn system(&self) -> &Arc<SystemDb> {
        &self.system
    }

    /// The server's data directory, for a durable control plane.
    pub fn data_dir(&self) -> Option<&Path> {
        self.storage.as_ref().map(|(dir, _)| dir.as_path())
    }

    pub(crate) fn database_dir(&self, identity: &Identity) -> Option<PathBuf> {
        self.storage.as_ref().map(|(dir, _)| dir.join("databases").join(identity.to_hex()))
    }

    /// Saves the control plane to the system tables in one transaction; called with the state
    /// lock held, after a change.
    pub(crate) fn save(&self, st: &State) -> Result<(), ControlError> {
        self.save_with(st, |_| Ok(()))
    }

    /// [`Self::save`], with `more` written in the same transaction.
    pub(crate) fn save_with(
        &self,
        st: &State,
        more: impl FnOnce(&mut crate::system::SystemTx<'_>) -> Result<(), SystemError>,
    ) -> Result<(), ControlError> {
        assert_invariants(st);
        let mut dbs: Vec<(Identity, Identity, u64)> =
            st.databases.values().map(|d| (d.identity, d.owner, d.created_seq)).collect();
        dbs.extend(st.unavailable.iter().map(|(id, u)| (*id, u.owner, u.created_seq)));
        dbs.sort_by_key(|d| d.2);
        let databases = dbs.iter().map(|(id, owner, seq)| vec![id.to_hex(), owner.to_hex(), seq.to_string()]).collect();
        // A name claimed for a database still being created is written with the database.
        let names = st
            .names
            .iter()
            .filter(|(_, id)| !st.pending.contains_key(*id))
            .map(|(name, id)| vec![name.clone(), id.to_hex(), st.name_owners.get(name).unwrap_or(id).to_hex()])
            .collect();
        let permissions =
            st.permissions
                .iter()
                .flat_map(|((db, id), perms)| perms.iter().map(move |p| vec![db.to_hex(), id.to_hex(), p.clone()]))
                .chain(st.rules.iter().flat_map(|(db, rules)| {
                    rules.iter().map(move |r| vec![db.to_hex(), r.key(), r.permission.clone()])
                }))
                .collect();
        let sync_configs = st.sync_configs.iter().map(|(db, config)| vec![db.to_hex(), config.to_string()]).collect();
        let archive_configs =
            st.archive_configs.iter().map(|(db, config)| vec![db.to_hex(), config.to_string()]).collect();
        let locks = st.locks.iter().map(|(db, by)| vec![db.to_hex(), by.to_hex()]).collect();
        self.system.write(|tx| {
            tx.replace_all(SystemTable::Locks, locks)?;
            tx.replace_all(SystemTable::Databases, databases)?;
            tx.replace_all(SystemTable::Names, names)?;
            tx.replace_all(SystemTable::Permissions, permissions)?;
            tx.replace_all(SystemTable::SyncConfigs, sync_configs)?;
            tx.replace_all(SystemTable::ArchiveConfigs, archive_configs)?;
            more(tx)
        })?;
        Ok(())
    }

    pub fn get(&self, identity: &Identity) -> Option<Arc<HostedDatabase>> {
        self.state.read().databases.get(identity).cloned()
    }

    /// Why a database the server knows of is not being served, if it is not.
    pub fn unavailable(&self, identity: &Identity) -> Option<UnavailableDatabase> {
        self.state.read().unavailable.get(identity).cloned()
    }

    /// Registers `listener`, called whenever a database is deleted or replaced.
    pub fn on_database_dropped(&self, listener: DropListener) {
        self.drop_listeners.write().push(listener);
    }

    pub(crate) fn dropped(&self, identity: &Identity) {
        for listener in self.drop_listeners.read().iter() {
            listener(identity);
        }
    }

    /// The databases `owner` owns, in identity order.
    pub fn owned_by(&self, owner: &Identity) -> Vec<Identity> {
        let st = self.state.read();
        let mut v: Vec<(u64, Identity)> =
            st.databases.values().filter(|d| d.owner == *owner).map(|d| (d.created_seq, d.identity)).collect();
        v.extend(st.unavailable.iter().filter(|(_, u)| u.owner == *owner).map(|(id, u)| (u.created_seq, *id)));
        v.sort();
        v.into_iter().map(|(_, id)| id).collect()
    }

    /// The owner of a database, whether it is running, unavailable or being created.
    pub(crate) fn owner_of(st: &State, identity: &Identity) -> Option<Identity> {
        st.databases
            .get(identity)
            .map(|d| d.owner)
            .or_else(|| st.unavailable.get(identity).map(|u| u.owner))
            .or_else(|| st.pending.get(identity).copied())
    }

    pub(crate) fn not_owner(caller: &Identity, identity: &Identity) -> ControlError {
        ControlError::NotOwner { caller: caller.to_hex(), database: identity.short_hex() }
    }

    pub fn all(&self) -> Vec<Arc<HostedDatabase>> {
        self.state.read().databases.values().cloned().collect()
    }
}

/// A database is in exactly one of running, unavailable (starting or failed) and being
/// created; every name's owner is recorded. Checked in release builds too, on every change:
/// a few map lookups per database, next to a durable write of the system tables.
pub(crate) fn assert_invariants(st: &State) {
    for id in st.databases.keys() {
        assert!(
            !st.unavailable.contains_key(id) && !st.pending.contains_key(id),
            "database {} in two states",
            id.to_hex()
        );
    }
    for id in st.unavailable.keys() {
        assert!(!st.pending.contains_key(id), "database {} both unavailable and being created", id.to_hex());
    }
    assert!(st.names.keys().all(|n| st.name_owners.contains_key(n)), "a name without an owner");
}
