//! Bringing databases up: at start (in the background, a few at a time), and again from disk
//! when a database's log failed.

use std::path::Path;
use std::sync::Arc;

use epoch_core::{Database, PersistConfig, RecoveryReport};
use epoch_host::HostConfig;
use epoch_sats::Identity;
use parking_lot::RwLock;

use crate::grants::RULE_PREFIX;
use crate::hosted::{hosted, next_created, UnavailableDatabase};
use crate::legacy::import_legacy;
use crate::limits::{LOG_WATCH_INTERVAL, STARTER_THREADS};
use crate::plane::{assert_invariants, State, STARTING};
use crate::system::{SystemDb, SystemTable};
use crate::{ControlError, ControlPlane, GrantRule, HostedDatabase};

impl ControlPlane {
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
    pub(crate) fn open_registered(
        data_dir: &Path,
        config: HostConfig,
        persist: PersistConfig,
    ) -> Result<Self, ControlError> {
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
        let mut databases = cp.system.rows(SystemTable::Databases);
        databases.sort_by_key(|r| r[2].parse::<u64>().unwrap_or(u64::MAX));
        let mut st = cp.state.write();
        let mut queue = cp.start_queue.lock();
        for d in &databases {
            let identity = identity_in(SystemTable::Databases, &d[0])?;
            let owner = identity_in(SystemTable::Databases, &d[1])?;
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
    pub(crate) fn load_grants_and_names(&self, st: &mut State) -> Result<(), ControlError> {
        st.permissions.clear();
        st.rules.clear();
        st.sync_configs.clear();
        st.archive_configs.clear();
        st.locks.clear();
        st.names.clear();
        st.name_owners.clear();
        for p in self.system.rows(SystemTable::Permissions) {
            let db = identity_in(SystemTable::Permissions, &p[0])?;
            if let Some(rule) = p[1].strip_prefix(RULE_PREFIX) {
                let (issuer, domain) = rule.rsplit_once('|').unwrap_or((rule, ""));
                st.rules.entry(db).or_default().push(GrantRule {
                    issuer: issuer.to_string(),
                    email_domain: domain.to_string(),
                    permission: p[2].clone(),
                });
                continue;
            }
            let key = (db, identity_in(SystemTable::Permissions, &p[1])?);
            st.permissions.entry(key).or_default().push(p[2].clone());
        }
        st.sync_configs = configs_in(&self.system, SystemTable::SyncConfigs)?;
        st.archive_configs = configs_in(&self.system, SystemTable::ArchiveConfigs)?;
        for l in self.system.rows(SystemTable::Locks) {
            st.locks.insert(identity_in(SystemTable::Locks, &l[0])?, identity_in(SystemTable::Locks, &l[1])?);
        }
        for n in self.system.rows(SystemTable::Names) {
            st.names.insert(n[0].clone(), identity_in(SystemTable::Names, &n[1])?);
            st.name_owners.insert(n[0].clone(), identity_in(SystemTable::Names, &n[2])?);
        }
        Ok(())
    }

    /// Opens queued databases until the queue is empty. One database that cannot open does not
    /// keep the others down: it is marked unavailable, with the reason, and every request to it
    /// is told why.
    pub(crate) fn start_queued(&self) {
        loop {
            let Some(identity) = self.start_queue.lock().pop_front() else { break };
            self.open_unavailable(&identity);
        }
        self.started.notify_all();
    }

    /// Opens database `identity`, marked as starting, from its directory, and serves it (or
    /// marks it failed, with the reason). Nothing happens if it was deleted or replaced
    /// meanwhile.
    pub(crate) fn open_unavailable(&self, identity: &Identity) {
        let hex = identity.to_hex();
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
                let claimed: Vec<(String, Identity, Option<Identity>)> = st
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
                assert_invariants(&st);
            }
            tracing::error!(database = %old.identity.to_hex(), "reopening the database from disk: {why}");
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

    pub(crate) fn open_one(&self, identity: &Identity) -> Result<(Database, RecoveryReport, Vec<u8>), ControlError> {
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
}

/// The identity a system table row names in hex; a row that names none is corruption.
fn identity_in(table: SystemTable, hex: &str) -> Result<Identity, ControlError> {
    Identity::from_hex(hex)
        .ok_or_else(|| ControlError::Corrupt { table: table.name(), message: format!("bad identity {hex:?}") })
}

/// A table of per-database JSON configurations (database, JSON), read whole.
fn configs_in(
    system: &SystemDb,
    table: SystemTable,
) -> Result<std::collections::HashMap<Identity, serde_json::Value>, ControlError> {
    system
        .rows(table)
        .iter()
        .map(|c| {
            let config = serde_json::from_str(&c[1])
                .map_err(|e| ControlError::Corrupt { table: table.name(), message: e.to_string() })?;
            Ok((identity_in(table, &c[0])?, config))
        })
        .collect()
}
