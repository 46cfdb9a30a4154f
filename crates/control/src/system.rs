//! The system database: the server's own tables (databases, names, permissions, sync
//! configurations, workflow instances), kept in an Epoch [`Store`] with its own commitlog and
//! snapshots under `data_dir/system/`, so the control plane gets the same durability and
//! recovery as any database.
//!
//! Every column is a string (structured values are JSON), so the schema never needs a
//! migration for a new field. A write is one transaction and returns once it is durable.

use std::path::Path;

use epoch_commitlog::Durability;
use epoch_sats::bsatn::Reader;
use epoch_sats::{AlgebraicType, AlgebraicValue, Identity, ProductType, Typespace};
use epoch_schema::{ModuleDef, TableAccess, TableDef, TableType};
use epoch_store::{Store, StoreError};
use parking_lot::Mutex;

use epoch_core::persist::{LoggedTx, PersistConfig, PersistError, Persistence};
use epoch_core::steps::StepLedger;

/// One system table. The declaration order is each table's id in the log: append, never reorder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SystemTable {
    /// identity (key), owner, creation sequence.
    Databases,
    /// name (key), identity, owner (who registered the name).
    Names,
    /// database, identity, permission (a set: no key).
    Permissions,
    /// database (key), configuration JSON.
    SyncConfigs,
    /// instance id (key), database, kind, status, instance JSON.
    Workflows,
    /// database (key), archive configuration JSON (where and how the database is archived, or
    /// that it is not).
    ArchiveConfigs,
    /// database (key), who locked it: a locked database is neither deleted nor reset (2.x's
    /// `spacetime lock`).
    Locks,
}

/// Every system table, in id order.
pub const ALL: [SystemTable; 7] = [
    SystemTable::Databases,
    SystemTable::Names,
    SystemTable::Permissions,
    SystemTable::SyncConfigs,
    SystemTable::Workflows,
    SystemTable::ArchiveConfigs,
    SystemTable::Locks,
];

impl SystemTable {
    pub fn name(self) -> &'static str {
        match self {
            Self::Databases => "st_database",
            Self::Names => "st_name",
            Self::Permissions => "st_permission",
            Self::SyncConfigs => "st_sync_config",
            Self::Workflows => "st_workflow",
            Self::ArchiveConfigs => "st_archive_config",
            Self::Locks => "st_database_lock",
        }
    }

    pub fn columns(self) -> &'static [&'static str] {
        match self {
            Self::Databases => &["identity", "owner", "created_seq"],
            Self::Names => &["name", "identity", "owner"],
            Self::Permissions => &["database", "identity", "permission"],
            Self::SyncConfigs => &["database", "config"],
            Self::Workflows => &["id", "database", "kind", "status", "state"],
            Self::ArchiveConfigs => &["database", "config"],
            Self::Locks => &["database", "locked_by"],
        }
    }

    /// Whether the first column is a unique key.
    fn keyed(self) -> bool {
        !matches!(self, Self::Permissions)
    }

    fn id(self) -> u32 {
        ALL.iter().position(|t| *t == self).unwrap_or_default() as u32
    }
}

/// A row of a system table: one string per column.
pub type Row = Vec<String>;

/// Why the system database could not be opened or written.
#[derive(Debug, thiserror::Error)]
pub enum SystemError {
    #[error("opening the system database: {0}")]
    Persist(#[from] PersistError),
    #[error("system table {table}: {source}")]
    Store { table: &'static str, source: StoreError },
    #[error("system table {table} has {expected} columns, not {got}")]
    Arity { table: &'static str, expected: usize, got: usize },
    #[error("preparing {path}: {source}")]
    Io { path: std::path::PathBuf, source: std::io::Error },
    #[error("the system database could not make the change durable (its log failed: {0}); it is not acknowledged")]
    NotDurable(String),
}

fn module_def() -> ModuleDef {
    let mut typespace = Typespace::default();
    let tables = ALL
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let row_type = ProductType::new(t.columns().iter().map(|c| (*c, AlgebraicType::String)));
            typespace.types.push(AlgebraicType::Product(row_type.clone()));
            let table = TableDef {
                table_type: TableType::System,
                table_access: TableAccess::Private,
                ..TableDef::plain(t.name(), i as u32, row_type)
            };
            if t.keyed() {
                table.with_unique_key(0)
            } else {
                table
            }
        })
        .collect();
    ModuleDef { typespace, tables, ..Default::default() }
}

fn encode_row(row: &[String]) -> Vec<u8> {
    let mut out = Vec::with_capacity(row.iter().map(|c| c.len() + 4).sum());
    for c in row {
        out.extend_from_slice(&(c.len() as u32).to_le_bytes());
        out.extend_from_slice(c.as_bytes());
    }
    out
}

fn decode_row(bytes: &[u8]) -> Row {
    let mut r = Reader::new(bytes);
    let mut row = Vec::new();
    while !r.remaining().is_empty() {
        match r.str() {
            Ok(s) => row.push(s.to_string()),
            Err(_) => break,
        }
    }
    row
}

struct Inner {
    store: Store,
    persist: Option<Persistence>,
    /// Always empty: system writes are not workflow items. Snapshots need one to write.
    steps: StepLedger,
}

/// The server's system tables.
pub struct SystemDb {
    inner: Mutex<Inner>,
    /// Where a durable system database lives and how it was opened (to reopen it).
    location: Option<(std::path::PathBuf, PersistConfig)>,
}

/// The system database is small; a snapshot every this many writes keeps its log short even
/// though workflow progress rewrites a row after every batch.
const SNAPSHOT_EVERY: u64 = 1_000;

impl SystemDb {
    /// System tables that live only as long as the process.
    pub fn in_memory() -> Self {
        let inner = Inner { store: Store::new(&module_def()), persist: None, steps: StepLedger::default() };
        Self { inner: Mutex::new(inner), location: None }
    }

    /// Opens (recovering) the durable system tables in `dir`. Writes are always fsynced before
    /// they return, whatever durability user databases use: they are rare, and they are promises
    /// (a granted permission, a started workflow).
    pub fn open(dir: &Path, persist: &PersistConfig) -> Result<Self, SystemError> {
        std::fs::create_dir_all(dir).map_err(|source| SystemError::Io { path: dir.to_path_buf(), source })?;
        // The system tables hold sync credentials: readable by the server's user only.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
        }
        let config = PersistConfig { durability: Durability::Sync, snapshot_every: SNAPSHOT_EVERY, ..persist.clone() };
        let inner = Self::recover(dir, &config)?;
        Ok(Self { inner: Mutex::new(inner), location: Some((dir.to_path_buf(), config)) })
    }

    fn recover(dir: &Path, config: &PersistConfig) -> Result<Inner, SystemError> {
        let mut store = Store::new(&module_def());
        let mut steps = StepLedger::default();
        let (p, report) = Persistence::open(dir, config.clone(), &mut store, &mut steps)?;
        tracing::info!(snapshot = ?report.snapshot_offset, replayed = report.replayed, "system database recovered");
        Ok(Inner { store, persist: Some(p), steps })
    }

    /// Reopens the system tables from disk if their log failed an fsync (it acknowledges
    /// nothing more); returns whether it did. If reopening fails, the failed log stays, so
    /// writes keep being refused rather than acknowledged without a log.
    pub fn reopen_if_failed(&self) -> Result<bool, SystemError> {
        let Some((dir, config)) = &self.location else { return Ok(false) };
        let mut inner = self.inner.lock();
        if !inner.persist.as_ref().is_some_and(|p| p.log().is_poisoned()) {
            return Ok(false);
        }
        tracing::error!("reopening the system database from disk after its log failed");
        *inner = Self::recover(dir, config)?;
        Ok(true)
    }

    /// Every row of `table`.
    pub fn rows(&self, table: SystemTable) -> Vec<Row> {
        let inner = self.inner.lock();
        match inner.store.table(table.id()) {
            Ok(t) => t.iter().map(|(_, r)| decode_row(r)).collect(),
            Err(_) => Vec::new(),
        }
    }

    /// The row of keyed `table` whose key is `key`.
    pub fn get(&self, table: SystemTable, key: &str) -> Option<Row> {
        let inner = self.inner.lock();
        find(&inner.store, table, key).map(decode_row)
    }

    /// Runs `f` as one transaction and returns once it is durable. If `f` fails, nothing of it
    /// is kept.
    pub fn write<R>(&self, f: impl FnOnce(&mut SystemTx<'_>) -> Result<R, SystemError>) -> Result<R, SystemError> {
        let mut inner = self.inner.lock();
        let Inner { store, persist, steps } = &mut *inner;
        store.begin();
        let result = f(&mut SystemTx { store });
        let result = match result {
            Ok(r) => r,
            Err(e) => {
                store.rollback();
                return Err(e);
            }
        };
        let delta = store.commit().map_err(|source| SystemError::Store { table: "(commit)", source })?;
        let Some(p) = persist.as_mut().filter(|_| !delta.is_empty()) else { return Ok(result) };
        let tx = LoggedTx {
            reducer: "__system__",
            caller: Identity::default(),
            args: Vec::new(),
            timestamp_micros: epoch_core::now_micros(),
            step: None,
        };
        p.record(store, steps, tx, &delta);
        let (log, offset) = (p.log().clone(), p.last_offset());
        drop(inner);
        if let Some(offset) = offset {
            let (done, wait) = crossbeam_channel::bounded(1);
            log.on_durable(offset, move || {
                let _ = done.send(());
            });
            // A failed log drops its waiting callbacks: the change is not durable, so it is
            // not acknowledged either.
            if wait.recv().is_err() {
                let reason = log.failure().unwrap_or_else(|| "stopped".into());
                return Err(SystemError::NotDurable(reason));
            }
        }
        Ok(result)
    }

    /// The system database's directory and commitlog, when it is durable (for archiving).
    pub fn commit_log(&self) -> Option<(std::path::PathBuf, std::sync::Arc<epoch_commitlog::CommitLog>)> {
        self.inner.lock().persist.as_ref().map(|p| (p.dir().to_path_buf(), p.log().clone()))
    }
}

fn find<'a>(store: &'a Store, table: SystemTable, key: &str) -> Option<&'a [u8]> {
    let index = store.index_id(&format!("{}_{}_idx_btree", table.name(), table.columns()[0]))?;
    store.find_by_unique(index, &AlgebraicValue::string(key)).ok().flatten()
}

/// The changes of one system transaction.
pub struct SystemTx<'a> {
    store: &'a mut Store,
}

impl SystemTx<'_> {
    fn check(table: SystemTable, row: &[String]) -> Result<(), SystemError> {
        let expected = table.columns().len();
        if row.len() != expected {
            return Err(SystemError::Arity { table: table.name(), expected, got: row.len() });
        }
        Ok(())
    }

    fn delete_row(&mut self, table: SystemTable, row: &[u8]) -> Result<(), SystemError> {
        let mut rel = 1u32.to_le_bytes().to_vec();
        rel.extend_from_slice(row);
        self.store
            .delete_by_rel(table.id(), &rel)
            .map(drop)
            .map_err(|source| SystemError::Store { table: table.name(), source })
    }

    /// Inserts `row`, replacing the row with the same key in a keyed table.
    pub fn put(&mut self, table: SystemTable, row: Row) -> Result<(), SystemError> {
        Self::check(table, &row)?;
        if table.keyed() {
            if let Some(old) = find(self.store, table, &row[0]).map(<[u8]>::to_vec) {
                self.delete_row(table, &old)?;
            }
        }
        let mut bytes = encode_row(&row);
        self.store
            .insert(table.id(), &mut bytes)
            .map(drop)
            .map_err(|source| SystemError::Store { table: table.name(), source })
    }

    /// Deletes the row with key `key` of a keyed table (if any).
    pub fn delete(&mut self, table: SystemTable, key: &str) -> Result<(), SystemError> {
        match find(self.store, table, key).map(<[u8]>::to_vec) {
            Some(old) => self.delete_row(table, &old),
            None => Ok(()),
        }
    }

    /// Deletes every row of `table` whose column `column` is `value`.
    pub fn delete_where(&mut self, table: SystemTable, column: usize, value: &str) -> Result<(), SystemError> {
        let doomed: Vec<Vec<u8>> = match self.store.table(table.id()) {
            Ok(t) => t
                .iter()
                .filter(|(_, r)| decode_row(r).get(column).is_some_and(|c| c == value))
                .map(|(_, r)| r.to_vec())
                .collect(),
            Err(source) => return Err(SystemError::Store { table: table.name(), source }),
        };
        for row in doomed {
            self.delete_row(table, &row)?;
        }
        Ok(())
    }

    /// Makes `rows` the whole content of `table`, touching only the rows that differ.
    pub fn replace_all(&mut self, table: SystemTable, rows: Vec<Row>) -> Result<(), SystemError> {
        let wanted: std::collections::HashSet<Vec<u8>> =
            rows.iter().map(|r| Self::check(table, r).map(|_| encode_row(r))).collect::<Result<_, _>>()?;
        let present: Vec<Vec<u8>> = match self.store.table(table.id()) {
            Ok(t) => t.iter().map(|(_, r)| r.to_vec()).collect(),
            Err(source) => return Err(SystemError::Store { table: table.name(), source }),
        };
        let present_set: std::collections::HashSet<&Vec<u8>> = present.iter().collect();
        for old in present.iter().filter(|r| !wanted.contains(*r)) {
            self.delete_row(table, old)?;
        }
        for mut new in wanted.iter().filter(|r| !present_set.contains(r)).cloned() {
            self.store
                .insert(table.id(), &mut new)
                .map_err(|source| SystemError::Store { table: table.name(), source })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("epoch-system-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn row(cols: &[&str]) -> Row {
        cols.iter().map(|c| c.to_string()).collect()
    }

    #[test]
    fn writes_survive_reopening_and_keys_replace() {
        let dir = temp("reopen");
        let persist = PersistConfig::default();
        {
            let db = SystemDb::open(&dir, &persist).unwrap();
            db.write(|tx| {
                tx.put(SystemTable::Workflows, row(&["wf_1", "db", "resync", "running", "{}"]))?;
                tx.put(SystemTable::Workflows, row(&["wf_2", "db", "resync", "queued", "{}"]))?;
                tx.put(SystemTable::Permissions, row(&["db", "me", "sync"]))
            })
            .unwrap();
            db.write(|tx| tx.put(SystemTable::Workflows, row(&["wf_1", "db", "resync", "complete", "{\"done\":1}"])))
                .unwrap();
            db.write(|tx| tx.delete(SystemTable::Workflows, "wf_2")).unwrap();
        }
        let db = SystemDb::open(&dir, &persist).unwrap();
        assert_eq!(db.rows(SystemTable::Workflows), vec![row(&["wf_1", "db", "resync", "complete", "{\"done\":1}"])]);
        assert_eq!(db.get(SystemTable::Workflows, "wf_1").unwrap()[3], "complete");
        assert_eq!(db.rows(SystemTable::Permissions), vec![row(&["db", "me", "sync"])]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn many_progress_writes_snapshot_prune_and_recover() {
        let dir = temp("snapshots");
        let persist = PersistConfig::default();
        let writes = SNAPSHOT_EVERY as usize + 200;
        {
            let db = SystemDb::open(&dir, &persist).unwrap();
            for n in 0..writes {
                let state = format!("{{\"done\":{n}}}");
                db.write(|tx| tx.put(SystemTable::Workflows, row(&["wf_1", "db", "resync", "running", &state])))
                    .unwrap();
            }
        }
        assert!(
            std::fs::read_dir(dir.join("snapshots")).unwrap().count() > 0,
            "a snapshot was written after {SNAPSHOT_EVERY} writes"
        );
        let db = SystemDb::open(&dir, &persist).unwrap();
        let last = format!("{{\"done\":{}}}", writes - 1);
        assert_eq!(db.rows(SystemTable::Workflows), vec![row(&["wf_1", "db", "resync", "running", &last])]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_failed_write_keeps_nothing_and_replace_all_converges() {
        let db = SystemDb::in_memory();
        let r = db.write(|tx| {
            tx.put(SystemTable::Names, row(&["chat", "id1", "me"]))?;
            tx.put(SystemTable::Names, row(&["too", "few"]))
        });
        assert!(matches!(r, Err(SystemError::Arity { .. })), "{r:?}");
        assert!(db.rows(SystemTable::Names).is_empty());
        db.write(|tx| {
            tx.replace_all(SystemTable::Permissions, vec![row(&["d", "a", "sync"]), row(&["d", "b", "sync"])])
        })
        .unwrap();
        db.write(|tx| {
            tx.replace_all(SystemTable::Permissions, vec![row(&["d", "b", "sync"]), row(&["d", "c", "sync"])])
        })
        .unwrap();
        let mut rows = db.rows(SystemTable::Permissions);
        rows.sort();
        assert_eq!(rows, vec![row(&["d", "b", "sync"]), row(&["d", "c", "sync"])]);
    }
}
