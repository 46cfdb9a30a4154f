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

/// A permission granted to every token of `issuer` whose verified `email` ends with
/// `@{email_domain}` (the seed's "JWT of an @company.com account").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantRule {
    pub issuer: String,
    pub email_domain: String,
    pub permission: String,
}

impl GrantRule {
    /// How the rule is kept in `st_permission`'s identity column.
    fn key(&self) -> String {
        format!("{RULE_PREFIX}{}|{}", self.issuer, self.email_domain)
    }

    /// Whether a verified token's claims fall under the rule.
    pub fn matches(&self, issuer: &str, email: Option<&str>, email_verified: bool) -> bool {
        let domain = self.email_domain.trim_start_matches('@').to_ascii_lowercase();
        issuer == self.issuer
            && email_verified
            && email.is_some_and(|e| e.to_ascii_lowercase().rsplit_once('@').is_some_and(|(_, d)| d == domain))
    }
}

/// `st_permission` rows whose identity column starts with this hold a [`GrantRule`].
const RULE_PREFIX: &str = "rule:";

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
    /// The database's commitlog (durable databases), read without a trip to its writer: why
    /// it cannot write now, if it cannot (see [`HostedDatabase::storage_failure`]).
    pub log: Option<Arc<epoch_commitlog::CommitLog>>,
}

impl HostedDatabase {
    /// Why the database cannot make changes durable now (its log cannot write: a full disk).
    /// Callers refuse reducer calls at once meanwhile: on the writer, every answer waits for the
    /// log, so a refusal given there would wait for the disk too.
    pub fn storage_failure(&self) -> Option<String> {
        self.log.as_ref().and_then(|l| l.failure())
    }
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
    #[error("a publish of database `{0}` is already in progress; try again when it has finished")]
    PublishInProgress(String),
    #[error("database `{database}` holds {limit} names already, the most one database may have")]
    TooManyNames { database: String, limit: usize },
    #[error("database `{database}` is unavailable: {reason}")]
    Unavailable { database: String, reason: String },
    #[error(transparent)]
    ShutDown(#[from] ShutDown),
    #[error("saving the control plane at {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("the system table {table} is unreadable: {message}")]
    Corrupt { table: &'static str, message: String },
    #[error(transparent)]
    System(#[from] SystemError),
    #[error("restore failed: {0}")]
    Restore(String),
}

/// The first 16 hex digits of a database identity, as 1.3's messages name a database.
fn short(identity: &IdentityBytes) -> String {
    hex_be(identity)[..16].to_string()
}

/// An identity as 64 hex digits, most significant first.
pub fn hex_be(id: &[u8]) -> String {
    id.iter().rev().map(|b| format!("{b:02x}")).collect()
}

/// The most names one database may have (1.3 sets no bound; every name costs a row of the
/// system database, rewritten on each change of the control plane).
pub const MAX_NAMES_PER_DATABASE: usize = 64;

/// A database the server knows of but cannot serve: its files failed to open.
#[derive(Debug, Clone)]
pub struct UnavailableDatabase {
    pub owner: IdentityBytes,
    /// Creation order (kept so the database keeps its place in listings and in the system table).
    pub created_seq: u64,
    /// Why it could not be opened (or that it is still opening), for the log and for every
    /// request to it.
    pub reason: String,
    /// Whether it is still opening (rather than failed).
    pub starting: bool,
}

impl UnavailableDatabase {
    /// The error a request to this database gets.
    fn error(&self, identity: &IdentityBytes) -> ControlError {
        ControlError::Unavailable { database: short(identity), reason: self.reason.clone() }
    }
}

/// Called with a database's identity when it is deleted or replaced (`clear`), so whatever
/// works on it (workflows) stops.
pub type DropListener = Box<dyn Fn(&IdentityBytes) + Send + Sync>;

#[derive(Default)]
struct State {
    databases: HashMap<IdentityBytes, Arc<HostedDatabase>>,
    /// Databases being created right now → the identity creating them. Creating a database is
    /// claimed here under the state lock, so two publishes can never both create one database.
    pending: HashMap<IdentityBytes, IdentityBytes>,
    /// Databases whose files failed to open at start; the others run regardless.
    unavailable: HashMap<IdentityBytes, UnavailableDatabase>,
    /// Name → database identity.
    names: BTreeMap<String, IdentityBytes>,
    /// Name → the identity that registered it (only it may move the name).
    name_owners: HashMap<String, IdentityBytes>,
    /// (database, identity) → permissions granted by the database's owner (e.g. `sync`).
    permissions: BTreeMap<(IdentityBytes, IdentityBytes), Vec<String>>,
    /// Permissions granted by rule: tokens of an issuer whose verified email is in a domain.
    rules: BTreeMap<IdentityBytes, Vec<GrantRule>>,
    /// Database → its sync configuration (JSON, as the owner set it).
    sync_configs: HashMap<IdentityBytes, serde_json::Value>,
    /// Database → its own archive configuration (JSON, as set through the API), replacing the
    /// server's default for it.
    archive_configs: HashMap<IdentityBytes, serde_json::Value>,
}

/// Every database on this server.
pub struct ControlPlane {
    state: RwLock<State>,
    config: HostConfig,
    /// Where databases live durably; `None` keeps everything in memory.
    storage: Option<(PathBuf, PersistConfig)>,
    system: Arc<SystemDb>,
    drop_listeners: RwLock<Vec<DropListener>>,
    /// Databases waiting to be opened at start, in creation order.
    start_queue: parking_lot::Mutex<std::collections::VecDeque<IdentityBytes>>,
    /// Signalled whenever a database finished starting.
    started: parking_lot::Condvar,
}

/// How often the control plane looks for databases whose log failed (see
/// [`ControlPlane::reopen_failed`]).
pub const LOG_WATCH_INTERVAL: std::time::Duration = std::time::Duration::from_millis(200);

/// How many databases open at once while the server starts.
pub const STARTER_THREADS: usize = 2;

/// The reason given for a database that has not finished opening yet.
const STARTING: &str = "the database is starting; try again shortly";

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
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
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

    /// A durable control plane in `data_dir`, with every database found there reopened before
    /// it returns.
    pub fn open(data_dir: &Path, config: HostConfig, persist: PersistConfig) -> Result<Self, ControlError> {
        let cp = Self::open_registered(data_dir, config, persist)?;
        cp.start_queued();
        Ok(cp)
    }

    /// A durable control plane in `data_dir` that returns at once: its databases open in the
    /// background, [`STARTER_THREADS`] at a time, each serving as soon as it is open (until
    /// then, requests to it are told it is starting). [`ControlPlane::wait_started`] waits for
    /// them all.
    pub fn open_in_background(
        data_dir: &Path,
        config: HostConfig,
        persist: PersistConfig,
    ) -> Result<Arc<Self>, ControlError> {
        let cp = Arc::new(Self::open_registered(data_dir, config, persist)?);
        let queued = cp.start_queue.lock().len();
        for n in 0..STARTER_THREADS.min(queued) {
            let starter = cp.clone();
            let spawned =
                std::thread::Builder::new().name(format!("db-start-{n}")).spawn(move || starter.start_queued());
            if let Err(e) = spawned {
                tracing::error!("cannot start a database starter thread: {e}");
                cp.start_queued();
            }
        }
        Ok(cp)
    }

    /// Reads the system database: names, permissions and sync configurations, and every
    /// database queued to start (marked as starting).
    fn open_registered(data_dir: &Path, config: HostConfig, persist: PersistConfig) -> Result<Self, ControlError> {
        let system = Arc::new(SystemDb::open(&data_dir.join("system"), &persist)?);
        import_legacy(data_dir, &system)?;
        let cp = Self {
            state: RwLock::new(State::default()),
            config,
            storage: Some((data_dir.to_path_buf(), persist)),
            system,
            drop_listeners: RwLock::new(Vec::new()),
            start_queue: parking_lot::Mutex::new(std::collections::VecDeque::new()),
            started: parking_lot::Condvar::new(),
        };
        let id = |table: SystemTable, hex: &str| {
            from_hex_be(hex)
                .ok_or_else(|| ControlError::Corrupt { table: table.name(), message: format!("bad identity {hex:?}") })
        };
        let mut databases = cp.system.rows(SystemTable::Databases);
        databases.sort_by_key(|r| r[2].parse::<u64>().unwrap_or(u64::MAX));
        let mut st = cp.state.write();
        let mut queue = cp.start_queue.lock();
        for d in &databases {
            let identity = id(SystemTable::Databases, &d[0])?;
            let owner = id(SystemTable::Databases, &d[1])?;
            let created_seq = next_created();
            st.unavailable
                .insert(identity, UnavailableDatabase { owner, created_seq, reason: STARTING.into(), starting: true });
            queue.push_back(identity);
        }
        drop(queue);
        cp.load_grants_and_names(&mut st)?;
        drop(st);
        Ok(cp)
    }

    /// Loads (replacing what `st` held) the permissions, rules, sync and archive configurations
    /// and names from the system tables.
    fn load_grants_and_names(&self, st: &mut State) -> Result<(), ControlError> {
        let id = |table: SystemTable, hex: &str| {
            from_hex_be(hex)
                .ok_or_else(|| ControlError::Corrupt { table: table.name(), message: format!("bad identity {hex:?}") })
        };
        st.permissions.clear();
        st.rules.clear();
        st.sync_configs.clear();
        st.archive_configs.clear();
        st.names.clear();
        st.name_owners.clear();
        for p in self.system.rows(SystemTable::Permissions) {
            let db = id(SystemTable::Permissions, &p[0])?;
            if let Some(rule) = p[1].strip_prefix(RULE_PREFIX) {
                let (issuer, domain) = rule.rsplit_once('|').unwrap_or((rule, ""));
                st.rules.entry(db).or_default().push(GrantRule {
                    issuer: issuer.to_string(),
                    email_domain: domain.to_string(),
                    permission: p[2].clone(),
                });
                continue;
            }
            let key = (db, id(SystemTable::Permissions, &p[1])?);
            st.permissions.entry(key).or_default().push(p[2].clone());
        }
        for c in self.system.rows(SystemTable::SyncConfigs) {
            let config = serde_json::from_str(&c[1]).map_err(|e| ControlError::Corrupt {
                table: SystemTable::SyncConfigs.name(),
                message: e.to_string(),
            })?;
            st.sync_configs.insert(id(SystemTable::SyncConfigs, &c[0])?, config);
        }
        for c in self.system.rows(SystemTable::ArchiveConfigs) {
            let config = serde_json::from_str(&c[1]).map_err(|e| ControlError::Corrupt {
                table: SystemTable::ArchiveConfigs.name(),
                message: e.to_string(),
            })?;
            st.archive_configs.insert(id(SystemTable::ArchiveConfigs, &c[0])?, config);
        }
        for n in self.system.rows(SystemTable::Names) {
            st.names.insert(n[0].clone(), id(SystemTable::Names, &n[1])?);
            st.name_owners.insert(n[0].clone(), id(SystemTable::Names, &n[2])?);
        }
        Ok(())
    }

    /// Opens queued databases until the queue is empty. One database that cannot open does not
    /// keep the others down: it is marked unavailable, with the reason, and every request to it
    /// is told why.
    fn start_queued(&self) {
        loop {
            let Some(identity) = self.start_queue.lock().pop_front() else { break };
            self.open_unavailable(&identity);
        }
        self.started.notify_all();
    }

    /// Opens database `identity`, marked as starting, from its directory, and serves it (or
    /// marks it failed, with the reason). Nothing happens if it was deleted or replaced
    /// meanwhile.
    fn open_unavailable(&self, identity: &IdentityBytes) {
        let hex = hex_be(identity);
        let started = std::time::Instant::now();
        let outcome = self.open_one(identity);
        let mut st = self.state.write();
        let Some(entry) = st.unavailable.get(identity).filter(|u| u.starting).cloned() else {
            // Deleted or replaced while it was opening: what was opened is dropped.
            return;
        };
        match outcome {
            Ok((db, report, wasm)) => {
                tracing::info!(
                    database = %hex,
                    snapshot = ?report.snapshot_offset,
                    replayed = report.replayed,
                    torn_bytes = report.torn_bytes,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "database recovered"
                );
                if let Some((seg, byte)) = &report.truncated_at {
                    tracing::warn!(database = %hex, segment = %seg.display(), byte, "log cut at corruption on request");
                }
                st.unavailable.remove(identity);
                st.databases.insert(*identity, hosted(db, entry.owner, &wasm, entry.created_seq));
            }
            Err(e) => {
                tracing::error!(database = %hex, "database unavailable: it failed to open: {e}");
                st.unavailable
                    .insert(*identity, UnavailableDatabase { reason: e.to_string(), starting: false, ..entry });
            }
        }
        drop(st);
        self.started.notify_all();
    }

    /// Reopens from disk every database whose commitlog failed an fsync (the log is poisoned:
    /// it acknowledges nothing more, and what the kernel kept of unsynced writes cannot be
    /// trusted). Each one stops serving, its clients are let go without `client_disconnected`
    /// (the reopened database runs it for them, as after a crash), and it recovers from its
    /// snapshot and log as at a start, keeping its place and creation order. Returns how many
    /// were reopened.
    pub fn reopen_failed(&self) -> usize {
        match self.system.reopen_if_failed() {
            // The tables now hold what the disk held. Grants, configurations and names are read
            // back from them (a change whose write failed was reported as failed, so it is
            // dropped); the databases are as they run, and are written over the tables.
            Ok(true) => {
                let mut st = self.state.write();
                // Names claimed by creations still under way are not in the tables yet.
                let claimed: Vec<(String, IdentityBytes, Option<IdentityBytes>)> = st
                    .names
                    .iter()
                    .filter(|(_, id)| st.pending.contains_key(*id))
                    .map(|(n, id)| (n.clone(), *id, st.name_owners.get(n).copied()))
                    .collect();
                if let Err(e) = self.load_grants_and_names(&mut st) {
                    tracing::error!("reading the control plane back after reopening the system database: {e}");
                }
                for (name, id, owner) in claimed {
                    st.names.insert(name.clone(), id);
                    st.name_owners.insert(name, owner.unwrap_or(id));
                }
                if let Err(e) = self.save(&st) {
                    tracing::error!("rewriting the control plane after reopening the system database: {e}");
                }
            }
            Ok(false) => {}
            Err(e) => tracing::error!("the system database cannot reopen (it keeps refusing writes): {e}"),
        }
        let failed: Vec<Arc<HostedDatabase>> =
            self.all().into_iter().filter(|d| d.log.as_ref().is_some_and(|l| l.is_poisoned())).collect();
        for old in &failed {
            let why = old.storage_failure().unwrap_or_default();
            {
                let mut st = self.state.write();
                // Only the database that failed, not one published over it meanwhile.
                if !st.databases.get(&old.identity).is_some_and(|d| Arc::ptr_eq(d, old)) {
                    continue;
                }
                st.databases.remove(&old.identity);
                st.unavailable.insert(
                    old.identity,
                    UnavailableDatabase {
                        owner: old.owner,
                        created_seq: old.created_seq,
                        reason: format!("the database is reopening from disk after its log failed: {why}"),
                        starting: true,
                    },
                );
                debug_assert_invariants(&st);
            }
            tracing::error!(database = %hex_be(&old.identity), "reopening the database from disk: {why}");
            let _ = old.handle.with(Database::drop_clients);
            self.open_unavailable(&old.identity);
        }
        failed.len()
    }

    /// Runs [`ControlPlane::reopen_failed`] every [`LOG_WATCH_INTERVAL`] on a thread of its own.
    pub fn watch_logs(self: &Arc<Self>) {
        let control = Arc::downgrade(self);
        let spawned = std::thread::Builder::new().name("log-watch".into()).spawn(move || loop {
            std::thread::sleep(LOG_WATCH_INTERVAL);
            let Some(control) = control.upgrade() else { return };
            control.reopen_failed();
        });
        if let Err(e) = spawned {
            tracing::error!("cannot start the log watch: {e}");
        }
    }

    fn open_one(&self, identity: &IdentityBytes) -> Result<(Database, crate::RecoveryReport, Vec<u8>), ControlError> {
        let (Some(dir), Some((_, persist))) = (self.database_dir(identity), &self.storage) else {
            return Err(ControlError::NoSuchDatabase);
        };
        let module = dir.join("module.wasm");
        let wasm = std::fs::read(&module).map_err(|source| ControlError::Io { path: module.clone(), source })?;
        let (db, report) = Database::open_persistent(&wasm, *identity, self.config.clone(), &dir, persist.clone())?;
        Ok((db, report, wasm))
    }

    /// Waits until no database is starting any more.
    pub fn wait_started(&self) {
        let mut queue = self.start_queue.lock();
        while !queue.is_empty() || self.state.read().unavailable.values().any(|u| u.starting) {
            self.started.wait_for(&mut queue, std::time::Duration::from_millis(100));
        }
    }

    /// The server's data directory, for a durable control plane.
    pub fn data_dir(&self) -> Option<&Path> {
        self.storage.as_ref().map(|(dir, _)| dir.as_path())
    }

    fn database_dir(&self, identity: &IdentityBytes) -> Option<PathBuf> {
        self.storage.as_ref().map(|(dir, _)| dir.join("databases").join(hex_be(identity)))
    }

    /// Saves the control plane to the system tables in one transaction; called with the state
    /// lock held, after a change.
    fn save(&self, st: &State) -> Result<(), ControlError> {
        self.save_with(st, |_| Ok(()))
    }

    /// [`Self::save`], with `more` written in the same transaction.
    fn save_with(
        &self,
        st: &State,
        more: impl FnOnce(&mut crate::system::SystemTx<'_>) -> Result<(), SystemError>,
    ) -> Result<(), ControlError> {
        debug_assert_invariants(st);
        let mut dbs: Vec<(IdentityBytes, IdentityBytes, u64)> =
            st.databases.values().map(|d| (d.identity, d.owner, d.created_seq)).collect();
        dbs.extend(st.unavailable.iter().map(|(id, u)| (*id, u.owner, u.created_seq)));
        dbs.sort_by_key(|d| d.2);
        let databases = dbs.iter().map(|(id, owner, seq)| vec![hex_be(id), hex_be(owner), seq.to_string()]).collect();
        // A name claimed for a database still being created is written with the database.
        let names = st
            .names
            .iter()
            .filter(|(_, id)| !st.pending.contains_key(*id))
            .map(|(name, id)| vec![name.clone(), hex_be(id), hex_be(st.name_owners.get(name).unwrap_or(id))])
            .collect();
        let permissions = st
            .permissions
            .iter()
            .flat_map(|((db, id), perms)| perms.iter().map(move |p| vec![hex_be(db), hex_be(id), p.clone()]))
            .chain(
                st.rules
                    .iter()
                    .flat_map(|(db, rules)| rules.iter().map(move |r| vec![hex_be(db), r.key(), r.permission.clone()])),
            )
            .collect();
        let sync_configs = st.sync_configs.iter().map(|(db, config)| vec![hex_be(db), config.to_string()]).collect();
        let archive_configs =
            st.archive_configs.iter().map(|(db, config)| vec![hex_be(db), config.to_string()]).collect();
        self.system.write(|tx| {
            tx.replace_all(SystemTable::Databases, databases)?;
            tx.replace_all(SystemTable::Names, names)?;
            tx.replace_all(SystemTable::Permissions, permissions)?;
            tx.replace_all(SystemTable::SyncConfigs, sync_configs)?;
            tx.replace_all(SystemTable::ArchiveConfigs, archive_configs)?;
            more(tx)
        })?;
        Ok(())
    }

    pub fn get(&self, identity: &IdentityBytes) -> Option<Arc<HostedDatabase>> {
        self.state.read().databases.get(identity).cloned()
    }

    /// Why a database the server knows of is not being served, if it is not.
    pub fn unavailable(&self, identity: &IdentityBytes) -> Option<UnavailableDatabase> {
        self.state.read().unavailable.get(identity).cloned()
    }

    /// Registers `listener`, called whenever a database is deleted or replaced.
    pub fn on_database_dropped(&self, listener: DropListener) {
        self.drop_listeners.write().push(listener);
    }

    fn dropped(&self, identity: &IdentityBytes) {
        for listener in self.drop_listeners.read().iter() {
            listener(identity);
        }
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
        let mut v: Vec<(u64, IdentityBytes)> =
            st.databases.values().filter(|d| d.owner == *owner).map(|d| (d.created_seq, d.identity)).collect();
        v.extend(st.unavailable.iter().filter(|(_, u)| u.owner == *owner).map(|(id, u)| (u.created_seq, *id)));
        v.sort();
        v.into_iter().map(|(_, id)| id).collect()
    }

    /// The owner of a database, whether it is running, unavailable or being created.
    fn owner_of(st: &State, identity: &IdentityBytes) -> Option<IdentityBytes> {
        st.databases
            .get(identity)
            .map(|d| d.owner)
            .or_else(|| st.unavailable.get(identity).map(|u| u.owner))
            .or_else(|| st.pending.get(identity).copied())
    }

    fn not_owner(caller: &IdentityBytes, identity: &IdentityBytes) -> ControlError {
        ControlError::NotOwner { caller: hex_be(caller), database: short(identity) }
    }

    /// Refuses one more name for a database that already holds [`MAX_NAMES_PER_DATABASE`].
    fn check_name_room(st: &State, identity: &IdentityBytes) -> Result<(), ControlError> {
        if st.names.values().filter(|id| *id == identity).count() >= MAX_NAMES_PER_DATABASE {
            return Err(ControlError::TooManyNames { database: short(identity), limit: MAX_NAMES_PER_DATABASE });
        }
        Ok(())
    }

    pub fn all(&self) -> Vec<Arc<HostedDatabase>> {
        self.state.read().databases.values().cloned().collect()
    }

    /// Prepares a backup of durable database `identity`: writes a snapshot now (on its writer,
    /// between transactions), so a restore from the backup starts from it rather than from an
    /// older one. Returns the directory and the log; the backup's archiver closes the open
    /// segment itself, which makes the copy consistent.
    pub fn backup_point(
        &self,
        identity: &IdentityBytes,
    ) -> Result<(PathBuf, Arc<epoch_commitlog::CommitLog>), ControlError> {
        let db = self.get(identity).ok_or(ControlError::NoSuchDatabase)?;
        let dir = self
            .database_dir(identity)
            .ok_or_else(|| ControlError::Restore("an in-memory database has no files to back up".into()))?;
        let log = db
            .handle
            .with(|d| d.snapshot_now().map(|()| d.commit_log()))?
            .map_err(|e| ControlError::Restore(format!("taking a snapshot: {e}")))?
            .ok_or_else(|| ControlError::Restore("an in-memory database has no files to back up".into()))?;
        Ok((dir, log))
    }

    /// Every running durable database as (identity, directory, commitlog), for archiving.
    pub fn archivable(&self) -> Vec<(IdentityBytes, PathBuf, Arc<epoch_commitlog::CommitLog>)> {
        self.all()
            .into_iter()
            .filter_map(|db| {
                let dir = self.database_dir(&db.identity)?;
                let log = db.handle.with(|d| d.commit_log()).ok().flatten()?;
                Some((db.identity, dir, log))
            })
            .collect()
    }

    /// Creates database `identity` under the new name `name`, owned by `caller`, from files
    /// `fetch` writes into its empty directory (a restore from an archive): `fetch` returns the
    /// module, and the database opens from the directory as after a restart (no `init`).
    pub fn restore_to_name(
        &self,
        name: &str,
        identity: IdentityBytes,
        caller: IdentityBytes,
        fetch: impl FnOnce(&Path) -> Result<Vec<u8>, String>,
    ) -> Result<crate::RecoveryReport, ControlError> {
        let (Some(dir), Some((_, persist))) = (self.database_dir(&identity), &self.storage) else {
            return Err(ControlError::Restore("restoring needs a server with a data directory".into()));
        };
        {
            let mut st = self.state.write();
            if st.names.contains_key(name) {
                return Err(ControlError::NameTaken(name.to_string()));
            }
            if st.databases.contains_key(&identity) || st.pending.contains_key(&identity) {
                return Err(ControlError::PublishInProgress(short(&identity)));
            }
            st.names.insert(name.to_string(), identity);
            st.name_owners.insert(name.to_string(), caller);
            st.pending.insert(identity, caller);
        }
        let opened = (|| {
            let io = |source| ControlError::Io { path: dir.clone(), source };
            if dir.exists() {
                std::fs::remove_dir_all(&dir).map_err(io)?;
            }
            std::fs::create_dir_all(&dir).map_err(io)?;
            let wasm = fetch(&dir).map_err(ControlError::Restore)?;
            let (db, report) = Database::open_persistent(&wasm, identity, self.config.clone(), &dir, persist.clone())?;
            Ok((db, report, wasm))
        })();
        let mut st = self.state.write();
        st.pending.remove(&identity);
        match opened {
            Ok((db, report, wasm)) => {
                st.databases.insert(identity, hosted(db, caller, &wasm, next_created()));
                self.save(&st)?;
                Ok(report)
            }
            Err(e) => {
                st.names.remove(name);
                st.name_owners.remove(name);
                drop(st);
                let _ = std::fs::remove_dir_all(&dir);
                Err(e)
            }
        }
    }

    /// Points `name` at `identity`, registered to `caller`, who must own the database. A name
    /// already in use, or one past [`MAX_NAMES_PER_DATABASE`], is refused.
    pub fn add_name(&self, name: &str, identity: IdentityBytes, caller: IdentityBytes) -> Result<(), ControlError> {
        let mut st = self.state.write();
        match Self::owner_of(&st, &identity) {
            None => return Err(ControlError::NoSuchDatabase),
            Some(owner) if owner != caller => return Err(Self::not_owner(&caller, &identity)),
            Some(_) => {}
        }
        if st.names.contains_key(name) {
            return Err(ControlError::NameTaken(name.to_string()));
        }
        Self::check_name_room(&st, &identity)?;
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
        if names.len() > MAX_NAMES_PER_DATABASE {
            return Err(SetNamesError::TooMany(MAX_NAMES_PER_DATABASE));
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

    /// Registers the free name `name` to `caller` for identity `fresh`, with no database yet (as
    /// 1.3 registers a publish's name before it checks the request); a name in use is left as
    /// it is.
    pub fn reserve_name(&self, name: &str, fresh: IdentityBytes, caller: IdentityBytes) -> Result<(), ControlError> {
        let mut st = self.state.write();
        if st.names.contains_key(name) {
            return Ok(());
        }
        st.names.insert(name.to_string(), fresh);
        st.name_owners.insert(name.to_string(), caller);
        self.save(&st)
    }

    /// Publishes to the database `name` points at; a free name is claimed for a database with
    /// identity `fresh` in the same step that claims its creation, so two callers racing for one
    /// new name cannot both create it: the loser is told the name is someone else's. A name
    /// that outlived its database (deleted) may be published again by whoever registered it.
    /// A failed creation keeps the name, as 1.3 does (it registers the name before it creates
    /// the database): the name then resolves to a database that does not exist (`No such
    /// database.`), and its registrant may publish a fixed module to it; nobody else may.
    pub fn publish_to_name(
        &self,
        name: &str,
        fresh: IdentityBytes,
        caller: IdentityBytes,
        wasm: &[u8],
        clear: bool,
    ) -> Result<(IdentityBytes, PublishOp), ControlError> {
        let mut st = self.state.write();
        let (identity, claimed) = match st.names.get(name).copied() {
            Some(identity) => {
                let name_owner = st.name_owners.get(name).copied().unwrap_or(identity);
                let owner = Self::owner_of(&st, &identity).unwrap_or(name_owner);
                if owner != caller {
                    return Err(Self::not_owner(&caller, &identity));
                }
                (identity, false)
            }
            None => {
                st.names.insert(name.to_string(), fresh);
                st.name_owners.insert(name.to_string(), caller);
                (fresh, true)
            }
        };
        let claim = self.claim(&mut st, identity, caller, clear);
        drop(st);
        let result = claim.and_then(|claim| self.finish_publish(identity, caller, wasm, claim));
        if result.is_err() && claimed {
            // The claimed name outlives the failed creation: write it down (the publish's own
            // error is still the answer).
            if let Err(e) = self.save(&self.state.read()) {
                tracing::error!(name, "cannot record the name of a failed publish: {e}");
            }
        }
        result.map(|op| (identity, op))
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
        let claim = self.claim(&mut self.state.write(), identity, caller, clear)?;
        self.finish_publish(identity, caller, wasm, claim)
    }

    /// Decides, under the state lock, what a publish of `identity` by `caller` does; a creation
    /// is claimed in `pending` before the lock is let go.
    fn claim(
        &self,
        st: &mut State,
        identity: IdentityBytes,
        caller: IdentityBytes,
        clear: bool,
    ) -> Result<Claim, ControlError> {
        match Self::owner_of(st, &identity) {
            Some(owner) if owner != caller => return Err(Self::not_owner(&caller, &identity)),
            _ if st.pending.contains_key(&identity) => return Err(ControlError::PublishInProgress(short(&identity))),
            _ => {}
        }
        if let Some(existing) = st.databases.get(&identity) {
            if !clear {
                return Ok(Claim::Update(existing.clone()));
            }
        } else if let Some(u) = st.unavailable.get(&identity) {
            if !clear || u.starting {
                return Err(u.error(&identity));
            }
        }
        // A creation (or a `clear`, which replaces the database): stop the old one first.
        let replaced = st.databases.remove(&identity).is_some() | st.unavailable.remove(&identity).is_some();
        st.pending.insert(identity, caller);
        Ok(Claim::Create { replaced })
    }

    fn finish_publish(
        &self,
        identity: IdentityBytes,
        caller: IdentityBytes,
        wasm: &[u8],
        claim: Claim,
    ) -> Result<PublishOp, ControlError> {
        let replaced = match claim {
            Claim::Update(existing) => return self.update(existing, wasm),
            Claim::Create { replaced } => replaced,
        };
        if replaced {
            self.dropped(&identity);
        }
        let owner = Caller::identity(caller);
        let created = match (&self.storage, self.database_dir(&identity)) {
            // `create_persistent` empties the directory first, so nothing an earlier database
            // of this identity left there mixes in.
            (Some((_, persist)), Some(dir)) => {
                Database::create_persistent(wasm, identity, owner, self.config.clone(), &dir, persist.clone())
                    .map_err(ControlError::from)
                    .and_then(|db| {
                        let path = dir.join("module.wasm");
                        write_atomically(&path, wasm).map_err(|source| ControlError::Io { path, source })?;
                        Ok(db)
                    })
            }
            _ => Database::create(wasm, identity, owner, self.config.clone()).map_err(ControlError::from),
        };
        let mut st = self.state.write();
        let removed = st.pending.remove(&identity);
        debug_assert_eq!(removed, Some(caller), "only the claimant finishes a creation");
        let db = match created {
            Ok(db) => db,
            Err(e) => {
                if replaced {
                    // The old database is gone; write that down.
                    self.save(&st)?;
                }
                return Err(e);
            }
        };
        st.databases.insert(identity, hosted(db, caller, wasm, next_created()));
        self.save(&st)?;
        Ok(if replaced { PublishOp::Updated } else { PublishOp::Created })
    }

    /// Updates a running database's module, keeping its data.
    fn update(&self, existing: Arc<HostedDatabase>, wasm: &[u8]) -> Result<PublishOp, ControlError> {
        let identity = existing.identity;
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
            log: existing.log.clone(),
        };
        let mut st = self.state.write();
        // A delete (or `clear`) that came in meanwhile wins: do not bring the database back.
        if st.databases.get(&identity).is_some_and(|d| Arc::ptr_eq(d, &existing)) {
            st.databases.insert(identity, Arc::new(updated));
        }
        Ok(PublishOp::Updated)
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
        Self::check_owner(&st, &database, &caller)?;
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

    /// `caller` owns the running database `database`.
    fn check_owner(st: &State, database: &IdentityBytes, caller: &IdentityBytes) -> Result<(), ControlError> {
        let db = st.databases.get(database).ok_or(ControlError::NoSuchDatabase)?;
        if db.owner != *caller {
            return Err(Self::not_owner(caller, database));
        }
        Ok(())
    }

    /// Grants (`grant`) or revokes a permission on `database` to a rule; owner only.
    pub fn set_rule(
        &self,
        database: IdentityBytes,
        caller: IdentityBytes,
        rule: GrantRule,
        grant: bool,
    ) -> Result<(), ControlError> {
        let mut st = self.state.write();
        Self::check_owner(&st, &database, &caller)?;
        let rules = st.rules.entry(database).or_default();
        rules.retain(|r| r != &rule);
        if grant {
            rules.push(rule);
        }
        if rules.is_empty() {
            st.rules.remove(&database);
        }
        self.save(&st)
    }

    /// Whether a rule grants `permission` on `database` to a token of `issuer` with this email.
    pub fn rule_grants(
        &self,
        database: &IdentityBytes,
        issuer: &str,
        email: Option<&str>,
        email_verified: bool,
        permission: &str,
    ) -> bool {
        let st = self.state.read();
        st.rules.get(database).is_some_and(|rules| {
            rules.iter().any(|r| r.permission == permission && r.matches(issuer, email, email_verified))
        })
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

    /// Every database's sync configuration (live sources start from these when the server
    /// starts).
    pub fn sync_configs(&self) -> Vec<(IdentityBytes, serde_json::Value)> {
        self.state.read().sync_configs.iter().map(|(d, c)| (*d, c.clone())).collect()
    }

    /// Stores (`Some`) or removes (`None`: the server's default applies again) a database's own
    /// archive configuration (the caller checks ownership and validates it).
    pub fn set_archive_config(
        &self,
        database: IdentityBytes,
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
    pub fn archive_config(&self, database: &IdentityBytes) -> Option<serde_json::Value> {
        self.state.read().archive_configs.get(database).cloned()
    }

    /// Deletes a database (owner only): it stops, its files go, and its permissions, sync
    /// configuration and workflow instances go with it (in the same system transaction), so
    /// nothing of it can reach a database created later under the same name. Names stay, as in
    /// 1.3. A missing database is no error.
    pub fn delete(&self, identity: IdentityBytes, caller: IdentityBytes) -> Result<(), ControlError> {
        let mut st = self.state.write();
        match Self::owner_of(&st, &identity) {
            None => return Ok(()),
            Some(owner) if owner != caller => return Err(Self::not_owner(&caller, &identity)),
            Some(_) if st.pending.contains_key(&identity) => {
                return Err(ControlError::PublishInProgress(short(&identity)))
            }
            Some(_) => {}
        }
        if let Some(u) = st.unavailable.get(&identity).filter(|u| u.starting) {
            return Err(u.error(&identity));
        }
        st.databases.remove(&identity);
        st.unavailable.remove(&identity);
        st.permissions.retain(|(db, _), _| *db != identity);
        st.rules.remove(&identity);
        st.sync_configs.remove(&identity);
        st.archive_configs.remove(&identity);
        self.save_with(&st, |tx| tx.delete_where(SystemTable::Workflows, 1, &hex_be(&identity)))?;
        drop(st);
        self.dropped(&identity);
        if let Some(dir) = self.database_dir(&identity) {
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                tracing::warn!(database = %hex_be(&identity), "could not remove {}: {e}", dir.display());
            }
        }
        Ok(())
    }
}

/// A database is in exactly one of running, unavailable (starting or failed) and being
/// created; every name's owner is recorded.
fn debug_assert_invariants(st: &State) {
    if cfg!(debug_assertions) {
        for id in st.databases.keys() {
            assert!(
                !st.unavailable.contains_key(id) && !st.pending.contains_key(id),
                "database {} in two states",
                hex_be(id)
            );
        }
        for id in st.unavailable.keys() {
            assert!(!st.pending.contains_key(id), "database {} both unavailable and being created", hex_be(id));
        }
        assert!(st.names.keys().all(|n| st.name_owners.contains_key(n)), "a name without an owner");
    }
}

/// What a publish was cleared to do.
enum Claim {
    /// Update the running database's module.
    Update(Arc<HostedDatabase>),
    /// Create the database (claimed in `pending`); `replaced`: an old one was removed (`clear`).
    Create { replaced: bool },
}

/// Starts a database's writer thread and wraps it for the control plane.
fn hosted(db: Database, owner: IdentityBytes, wasm: &[u8], created_seq: u64) -> Arc<HostedDatabase> {
    let identity = db.identity();
    let logs = db.logs().clone();
    let def = Arc::new(db.def().clone());
    let log = db.commit_log();
    let (handle, _thread) = DatabaseHandle::spawn(db, &hex_be(&identity)[..16]);
    Arc::new(HostedDatabase { identity, owner, handle, logs, program_hash: keccak(wasm), def, created_seq, log })
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
    #[error("a database may have at most {0} names")]
    TooMany(usize),
    #[error("{0}")]
    Storage(String),
}
