//! The control plane: which databases exist, who owns them, and the names that point at them.
//!
//! With a data directory, the control plane is durable: databases, owners, names, permissions and
//! sync configurations are rows of the system database ([`SystemDb`], `data_dir/system/`), each
//! change one durable transaction; each module is kept as `databases/<identity>/module.wasm`
//! beside that database's commitlog and snapshots, and [`ControlPlane::open`] brings every
//! database back after a restart or a crash.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use epoch_host::{HostConfig, ModuleLogs};
use epoch_schema::ModuleDef;
use parking_lot::RwLock;

use crate::database::{Caller, CreateError, Database, UpdateError};
use crate::executor::{DatabaseHandle, ShutDown};
use crate::persist::PersistConfig;
use crate::system::{SystemDb, SystemError, SystemTable};

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
    /// Creation order, for listings that 1.3 gives in creation order.
    pub created_seq: u64,
}

static CREATED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn next_created() -> u64 {
    CREATED.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
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
    #[error("saving the control plane at {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("the system table {table} is unreadable: {message}")]
    Corrupt { table: &'static str, message: String },
    #[error(transparent)]
    System(#[from] SystemError),
}

/// An identity as 64 hex digits, most significant first.
pub fn hex_be(id: &IdentityBytes) -> String {
    id.iter().rev().map(|b| format!("{b:02x}")).collect()
}

#[derive(Default)]
struct State {
    databases: HashMap<IdentityBytes, Arc<HostedDatabase>>,
    /// Name → database identity.
    names: BTreeMap<String, IdentityBytes>,
    /// Name → the identity that registered it (only it may move the name).
    name_owners: HashMap<String, IdentityBytes>,
    /// (database, identity) → permissions granted by the database's owner (e.g. `sync`).
    permissions: BTreeMap<(IdentityBytes, IdentityBytes), Vec<String>>,
    /// Database → its sync configuration (JSON, as the owner set it).
    sync_configs: HashMap<IdentityBytes, serde_json::Value>,
}

/// Every database on this server.
pub struct ControlPlane {
    state: RwLock<State>,
    config: HostConfig,
    /// Where databases live durably; `None` keeps everything in memory.
    storage: Option<(PathBuf, PersistConfig)>,
    system: Arc<SystemDb>,
}

/// Parses 64 hex digits (most significant first) into a little-endian identity.
pub fn from_hex_be(s: &str) -> Option<IdentityBytes> {
    let mut b: [u8; 32] = (0..32)
        .map(|i| u8::from_str_radix(s.get(i * 2..i * 2 + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?
        .try_into()
        .ok()?;
    b.reverse();
    Some(b)
}

/// Writes `bytes` to `path` so that a crash leaves either the old or the new file whole.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    // The control plane holds sync credentials: readable by the server's user only.
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options.open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

fn keccak(bytes: &[u8]) -> [u8; 32] {
    use sha3::Digest;
    sha3::Keccak256::digest(bytes).into()
}

impl ControlPlane {
    /// An in-memory control plane: nothing survives the process.
    pub fn new(config: HostConfig) -> Self {
        Self { state: RwLock::new(State::default()), config, storage: None, system: Arc::new(SystemDb::in_memory()) }
    }

    /// The system database (workflow instances live there too).
    pub fn system(&self) -> &Arc<SystemDb> {
        &self.system
    }

    /// A durable control plane in `data_dir`, with every database found there reopened.
    pub fn open(data_dir: &Path, config: HostConfig, persist: PersistConfig) -> Result<Self, ControlError> {
        let system = Arc::new(SystemDb::open(&data_dir.join("system"), &persist)?);
        import_legacy(data_dir, &system)?;
        let cp = Self {
            state: RwLock::new(State::default()),
            config,
            storage: Some((data_dir.to_path_buf(), persist.clone())),
            system,
        };
        let id = |table: SystemTable, hex: &str| {
            from_hex_be(hex)
                .ok_or_else(|| ControlError::Corrupt { table: table.name(), message: format!("bad identity {hex:?}") })
        };
        let mut databases = cp.system.rows(SystemTable::Databases);
        databases.sort_by_key(|r| r[2].parse::<u64>().unwrap_or(u64::MAX));
        for d in &databases {
            let identity = id(SystemTable::Databases, &d[0])?;
            let owner = id(SystemTable::Databases, &d[1])?;
            let dir = cp.database_dir(&identity).expect("durable");
            let module = dir.join("module.wasm");
            let wasm = std::fs::read(&module).map_err(|source| ControlError::Io { path: module.clone(), source })?;
            let started = std::time::Instant::now();
            let (db, report) = Database::open_persistent(&wasm, identity, cp.config.clone(), &dir, persist.clone())?;
            tracing::info!(
                database = %d[0],
                snapshot = ?report.snapshot_offset,
                replayed = report.replayed,
                torn_bytes = report.torn_bytes,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "database recovered"
            );
            if let Some((seg, byte)) = &report.truncated_at {
                tracing::warn!(database = %d[0], segment = %seg.display(), byte, "log cut at corruption on request");
            }
            cp.insert_hosted(db, owner, &wasm);
        }
        let mut st = cp.state.write();
        for p in cp.system.rows(SystemTable::Permissions) {
            let key = (id(SystemTable::Permissions, &p[0])?, id(SystemTable::Permissions, &p[1])?);
            st.permissions.entry(key).or_default().push(p[2].clone());
        }
        for c in cp.system.rows(SystemTable::SyncConfigs) {
            let config = serde_json::from_str(&c[1]).map_err(|e| ControlError::Corrupt {
                table: SystemTable::SyncConfigs.name(),
                message: e.to_string(),
            })?;
            st.sync_configs.insert(id(SystemTable::SyncConfigs, &c[0])?, config);
        }
        for n in cp.system.rows(SystemTable::Names) {
            st.names.insert(n[0].clone(), id(SystemTable::Names, &n[1])?);
            st.name_owners.insert(n[0].clone(), id(SystemTable::Names, &n[2])?);
        }
        drop(st);
        Ok(cp)
    }

    fn database_dir(&self, identity: &IdentityBytes) -> Option<PathBuf> {
        self.storage.as_ref().map(|(dir, _)| dir.join("databases").join(hex_be(identity)))
    }

    /// Saves the control plane to the system tables in one transaction; called with the state
    /// lock held, after a change.
    fn save(&self, st: &State) -> Result<(), ControlError> {
        let mut dbs: Vec<&Arc<HostedDatabase>> = st.databases.values().collect();
        dbs.sort_by_key(|d| d.created_seq);
        let databases =
            dbs.iter().map(|d| vec![hex_be(&d.identity), hex_be(&d.owner), d.created_seq.to_string()]).collect();
        let names = st
            .names
            .iter()
            .map(|(name, id)| vec![name.clone(), hex_be(id), hex_be(st.name_owners.get(name).unwrap_or(id))])
            .collect();
        let permissions = st
            .permissions
            .iter()
            .flat_map(|((db, id), perms)| perms.iter().map(move |p| vec![hex_be(db), hex_be(id), p.clone()]))
            .collect();
        let sync_configs = st.sync_configs.iter().map(|(db, config)| vec![hex_be(db), config.to_string()]).collect();
        self.system.write(|tx| {
            tx.replace_all(SystemTable::Databases, databases)?;
            tx.replace_all(SystemTable::Names, names)?;
            tx.replace_all(SystemTable::Permissions, permissions)?;
            tx.replace_all(SystemTable::SyncConfigs, sync_configs)
        })?;
        Ok(())
    }

    fn insert_hosted(&self, db: Database, owner: IdentityBytes, wasm: &[u8]) {
        let identity = db.identity();
        let logs = db.logs().clone();
        let def = Arc::new(db.def().clone());
        let (handle, _thread) = DatabaseHandle::spawn(db, &hex_be(&identity)[..16]);
        let hosted = HostedDatabase {
            identity,
            owner,
            handle,
            logs,
            program_hash: keccak(wasm),
            def,
            created_seq: next_created(),
        };
        self.state.write().databases.insert(identity, Arc::new(hosted));
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
        let st = self.state.read();
        let mut v: Vec<_> = st.databases.values().filter(|d| d.owner == *owner).collect();
        v.sort_by_key(|d| d.created_seq);
        v.into_iter().map(|d| d.identity).collect()
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
        self.save(&st)
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
        self.save(&st).map_err(|e| SetNamesError::Storage(e.to_string()))
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
                if let Some(dir) = self.database_dir(&identity) {
                    let path = dir.join("module.wasm");
                    write_atomically(&path, wasm).map_err(|source| ControlError::Io { path, source })?;
                }
                let def = existing.handle.with(|db| Arc::new(db.def().clone()))?;
                let updated = HostedDatabase {
                    identity,
                    owner: existing.owner,
                    handle: existing.handle.clone(),
                    logs: existing.logs.clone(),
                    program_hash: keccak(wasm),
                    def,
                    created_seq: existing.created_seq,
                };
                self.state.write().databases.insert(identity, Arc::new(updated));
                return Ok(PublishOp::Updated);
            }
        }
        let existed = self.get(&identity).is_some();
        if existed {
            // `clear`: stop the old database before its files are replaced.
            self.state.write().databases.remove(&identity);
        }
        let owner = Caller::identity(caller);
        let db = match (&self.storage, self.database_dir(&identity)) {
            (Some((_, persist)), Some(dir)) => {
                let db =
                    Database::create_persistent(wasm, identity, owner, self.config.clone(), &dir, persist.clone())?;
                let path = dir.join("module.wasm");
                write_atomically(&path, wasm).map_err(|source| ControlError::Io { path, source })?;
                db
            }
            _ => Database::create(wasm, identity, owner, self.config.clone())?,
        };
        self.insert_hosted(db, caller, wasm);
        self.save(&self.state.read())?;
        Ok(if existed { PublishOp::Updated } else { PublishOp::Created })
    }

    /// Grants (`grant`) or revokes a permission on `database` to `identity`; owner only.
    pub fn set_permission(
        &self,
        database: IdentityBytes,
        caller: IdentityBytes,
        identity: IdentityBytes,
        permission: &str,
        grant: bool,
    ) -> Result<(), ControlError> {
        let mut st = self.state.write();
        let db = st.databases.get(&database).ok_or(ControlError::NoSuchDatabase)?;
        if db.owner != caller {
            return Err(ControlError::NotOwner {
                caller: hex_be(&caller),
                database: hex_be(&database)[..16].to_string(),
            });
        }
        let perms = st.permissions.entry((database, identity)).or_default();
        perms.retain(|p| p != permission);
        if grant {
            perms.push(permission.to_string());
        }
        if perms.is_empty() {
            st.permissions.remove(&(database, identity));
        }
        self.save(&st)
    }

    /// Whether `identity` holds `permission` on `database` (owners hold every permission).
    pub fn has_permission(&self, database: &IdentityBytes, identity: &IdentityBytes, permission: &str) -> bool {
        let st = self.state.read();
        st.databases.get(database).is_some_and(|d| d.owner == *identity)
            || st.permissions.get(&(*database, *identity)).is_some_and(|p| p.iter().any(|x| x == permission))
    }

    /// Stores a database's sync configuration (the caller checks ownership).
    pub fn set_sync_config(&self, database: IdentityBytes, config: serde_json::Value) -> Result<(), ControlError> {
        let mut st = self.state.write();
        if !st.databases.contains_key(&database) {
            return Err(ControlError::NoSuchDatabase);
        }
        st.sync_configs.insert(database, config);
        self.save(&st)
    }

    pub fn sync_config(&self, database: &IdentityBytes) -> Option<serde_json::Value> {
        self.state.read().sync_configs.get(database).cloned()
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
                st.permissions.retain(|(db, _), _| *db != identity);
                st.sync_configs.remove(&identity);
                self.save(&st)?;
                drop(st);
                if let Some(dir) = self.database_dir(&identity) {
                    let _ = std::fs::remove_dir_all(dir);
                }
                Ok(())
            }
        }
    }
}

/// Moves what earlier versions kept in files (`control.json`, `workflows/*.json`) into the
/// system tables, once, in one transaction; the files are then renamed `*.imported`.
fn import_legacy(data_dir: &Path, system: &SystemDb) -> Result<(), ControlError> {
    use serde_json::Value;
    let control = data_dir.join("control.json");
    let workflows = data_dir.join("workflows");
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ControlError::Io { path, source }
    };
    let saved: Option<Value> = match std::fs::read(&control) {
        Ok(b) => Some(
            serde_json::from_slice(&b)
                .map_err(|e| ControlError::Corrupt { table: "control.json", message: e.to_string() })?,
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(io(&control)(e)),
    };
    let instances: Vec<(PathBuf, Value)> = match std::fs::read_dir(&workflows) {
        Ok(entries) => entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .filter_map(|p| Some((p.clone(), serde_json::from_slice(&std::fs::read(&p).ok()?).ok()?)))
            .collect(),
        Err(_) => Vec::new(),
    };
    if saved.is_none() && instances.is_empty() {
        return Ok(());
    }
    let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
    let list = |k: &str| saved.as_ref().and_then(|s| s.get(k)).and_then(Value::as_array).cloned().unwrap_or_default();
    system.write(|tx| {
        for (seq, d) in list("databases").iter().enumerate() {
            tx.put(SystemTable::Databases, vec![text(d, "identity"), text(d, "owner"), seq.to_string()])?;
        }
        for n in list("names") {
            tx.put(SystemTable::Names, vec![text(&n, "name"), text(&n, "identity"), text(&n, "owner")])?;
        }
        for p in list("permissions") {
            tx.put(SystemTable::Permissions, vec![text(&p, "database"), text(&p, "identity"), text(&p, "permission")])?;
        }
        for c in list("sync_configs") {
            let config = c.get("config").cloned().unwrap_or(Value::Null).to_string();
            tx.put(SystemTable::SyncConfigs, vec![text(&c, "database"), config])?;
        }
        for (_, w) in &instances {
            let row = vec![text(w, "id"), text(w, "database"), text(w, "kind"), text(w, "status"), w.to_string()];
            tx.put(SystemTable::Workflows, row)?;
        }
        Ok(())
    })?;
    if saved.is_some() {
        std::fs::rename(&control, data_dir.join("control.json.imported")).map_err(io(&control))?;
    }
    for (path, _) in instances {
        std::fs::rename(&path, path.with_extension("json.imported")).map_err(io(&path))?;
    }
    tracing::info!("imported the control plane and workflows of an earlier version into the system database");
    Ok(())
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
    #[error("{0}")]
    Storage(String),
}
