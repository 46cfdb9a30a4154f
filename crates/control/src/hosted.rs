//! A database as the control plane serves it (running, or known but unavailable).

use std::sync::Arc;

use epoch_core::{Database, DatabaseHandle};
use epoch_host::ModuleLogs;
use epoch_sats::Identity;
use epoch_schema::ModuleDef;

use crate::ControlError;

/// One hosted database, as the API sees it.
pub struct HostedDatabase {
    pub identity: Identity,
    pub owner: Identity,
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

pub(crate) static CREATED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

pub(crate) fn next_created() -> u64 {
    CREATED.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// A database the server knows of but cannot serve: its files failed to open.
#[derive(Debug, Clone)]
pub struct UnavailableDatabase {
    pub owner: Identity,
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
    pub(crate) fn error(&self, identity: &Identity) -> ControlError {
        ControlError::Unavailable { database: identity.short_hex(), reason: self.reason.clone() }
    }
}

/// Starts a database's writer thread and wraps it for the control plane.
pub(crate) fn hosted(db: Database, owner: Identity, wasm: &[u8], created_seq: u64) -> Arc<HostedDatabase> {
    let identity = db.identity();
    let logs = db.logs().clone();
    let def = Arc::new(db.def().clone());
    let log = db.commit_log();
    let (handle, _thread) = DatabaseHandle::spawn(db, &identity.to_hex()[..16]);
    Arc::new(HostedDatabase {
        identity,
        owner,
        handle,
        logs,
        program_hash: epoch_core::program::program_hash(wasm),
        def,
        created_seq,
        log,
    })
}
