//! A database's durable state: every committed transaction goes to its commitlog before anyone
//! is told it happened; snapshots are written in the background every N transactions; recovery
//! is the newest valid snapshot plus the log after it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{bounded, Sender, TrySendError};
use epoch_commitlog::{
    read_latest_snapshot, read_log, write_snapshot, CommitLog, Durability, LogConfig, LogError, PackedRows,
    SequenceState, Snapshot, TableChange, TxRecord, WorkflowStep,
};
use epoch_sats::Identity;
use epoch_store::{Store, TxDelta};

use crate::limits::{DEFAULT_SEGMENT_MAX_BYTES, DEFAULT_SNAPSHOT_EVERY, SNAPSHOTS_KEPT};
use crate::steps::StepLedger;

/// How a database keeps its data.
#[derive(Debug, Clone)]
pub struct PersistConfig {
    pub durability: Durability,
    /// A snapshot is taken after this many transactions since the last one.
    pub snapshot_every: u64,
    pub segment_max_bytes: u64,
    /// On mid-log corruption, start from the last good transaction instead of refusing to start.
    pub recover_truncate: bool,
    /// An archiver ships the log: no segment is pruned until it says the segment is shipped.
    pub archived: bool,
    /// Test-only: fails chosen writes and fsyncs of every log opened with this configuration
    /// (see [`epoch_commitlog::IoFaults`]).
    pub faults: Option<std::sync::Arc<dyn epoch_commitlog::IoFaults>>,
}

impl Default for PersistConfig {
    fn default() -> Self {
        Self {
            durability: Durability::Sync,
            snapshot_every: DEFAULT_SNAPSHOT_EVERY,
            segment_max_bytes: DEFAULT_SEGMENT_MAX_BYTES,
            recover_truncate: false,
            archived: false,
            faults: None,
        }
    }
}

impl PersistConfig {
    pub fn async_every(interval: Duration) -> Self {
        Self { durability: Durability::Async { interval }, ..Self::default() }
    }
}

/// Why a database's files could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("recovering {path}: {message}")]
    Recovery { path: PathBuf, message: String },
}

/// The open log of one database and its snapshot schedule.
pub struct Persistence {
    dir: PathBuf,
    log: Arc<CommitLog>,
    config: PersistConfig,
    last_snapshot: u64,
    /// Snapshots to write, handed to a background thread so the writer never waits on disk.
    snapshots: Sender<Snapshot>,
    /// Clients connected now (identity, connection id), for restarts after a crash.
    clients: crate::client_journal::ClientJournal,
}

fn log_dir(dir: &Path) -> PathBuf {
    dir.join("log")
}

fn snapshot_dir(dir: &Path) -> PathBuf {
    dir.join("snapshots")
}

/// Loads snapshot `s` into the empty `store` and `steps`; returns the offset the log resumes at.
fn load_snapshot(s: &Snapshot, store: &mut Store, steps: &mut StepLedger) -> Result<u64, String> {
    for (table, rows) in &s.tables {
        store.apply_recovered(*table, rows.iter(), &[]).map_err(|e| format!("snapshot {}: {e}", s.offset))?;
    }
    for q in &s.sequences {
        store.advance_sequence(q.table_id, q.column, q.next);
    }
    steps.load(&s.steps);
    s.offset.checked_add(1).ok_or_else(|| format!("snapshot at offset {}: no transaction can follow it", s.offset))
}

/// Replays `records` (contiguous, as `read_log` returns them) onto `store` and `steps`;
/// returns the offset after the last one (`None`: there were none).
fn apply_log(records: &[TxRecord], store: &mut Store, steps: &mut StepLedger) -> Result<Option<u64>, String> {
    // Each table's inserts are gathered until one of its transactions deletes, and applied
    // together: tables are independent, each keeps its own order, and a table that is empty
    // before a run of inserts (an append-only table, say) is then loaded in one pass.
    let mut pending: BTreeMap<u32, (u64, Vec<&[u8]>)> = BTreeMap::new();
    let flush = |store: &mut Store, table: u32, pending: &mut BTreeMap<u32, (u64, Vec<&[u8]>)>, to: u64| {
        let Some((from, rows)) = pending.remove(&table) else { return Ok(()) };
        store.apply_recovered(table, rows, &[]).map_err(|e| format!("transactions {from} to {to}: {e}"))
    };
    for rec in records {
        for t in &rec.tables {
            if t.deletes.is_empty() {
                let entry = pending.entry(t.table_id).or_insert_with(|| (rec.offset, Vec::new()));
                entry.1.extend(t.inserts.iter().map(|r| &r[..]));
                continue;
            }
            flush(store, t.table_id, &mut pending, rec.offset)?;
            store
                .apply_recovered(t.table_id, t.inserts.iter().map(|r| &r[..]), &t.deletes)
                .map_err(|e| format!("transaction {}: {e}", rec.offset))?;
        }
        for q in &rec.sequences {
            store.advance_sequence(q.table_id, q.column, q.next);
        }
        if let Some(step) = &rec.step {
            steps.record(step);
        }
    }
    let Some(last) = records.last().map(|r| r.offset) else { return Ok(None) };
    let tables: Vec<u32> = pending.keys().copied().collect();
    for table in tables {
        flush(store, table, &mut pending, last)?;
    }
    // `read_log` refuses a record no offset can follow.
    Ok(Some(last.saturating_add(1)))
}

/// Whether `dir` holds any snapshot file (readable or not).
fn has_snapshot_files(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| e.file_name().to_str().is_some_and(|n| n.ends_with(".snap")))
}

/// What the log keeps of one transaction besides its rows.
pub struct LoggedTx<'a> {
    /// The reducer that ran, or a system name such as `__sql__`.
    pub reducer: &'a str,
    pub caller: Identity,
    pub args: Vec<u8>,
    pub timestamp_micros: i64,
    pub step: Option<WorkflowStep>,
}

/// What recovery found, for the operator's log.
#[derive(Debug, Default, Clone)]
pub struct RecoveryReport {
    pub snapshot_offset: Option<u64>,
    pub replayed: usize,
    pub torn_bytes: u64,
    pub truncated_at: Option<(PathBuf, u64)>,
}

impl Persistence {
    /// Recovers `store` and the workflow `steps` from `dir` (snapshot, then log) and opens the
    /// log for appending.
    pub fn open(
        dir: &Path,
        config: PersistConfig,
        store: &mut Store,
        steps: &mut StepLedger,
    ) -> Result<(Self, RecoveryReport), PersistError> {
        let recovery = |message: String| PersistError::Recovery { path: dir.to_path_buf(), message };
        let mut report = RecoveryReport::default();
        let snapshot = read_latest_snapshot(&snapshot_dir(dir));
        let mut next_offset = 0;
        if let Some(s) = &snapshot {
            next_offset = load_snapshot(s, store, steps).map_err(recovery)?;
            report.snapshot_offset = Some(s.offset);
        }
        let replay = read_log(&log_dir(dir), next_offset, config.recover_truncate)?;
        if snapshot.is_none() && replay.records.is_empty() && has_snapshot_files(&snapshot_dir(dir)) {
            // The rows were in snapshots none of which reads back, and the log no longer holds
            // them: opening would quietly start from an empty database.
            return Err(recovery(
                "no snapshot in snapshots/ reads back whole and the log holds no transaction to rebuild from; \
                 refusing to open the database empty"
                    .into(),
            ));
        }
        if let Some(first) = replay.records.first() {
            if first.offset != next_offset {
                return Err(recovery(format!(
                    "the log resumes at transaction {} but the snapshot ends at {}; transactions are missing",
                    first.offset,
                    next_offset.saturating_sub(1)
                )));
            }
        }
        next_offset = apply_log(&replay.records, store, steps).map_err(recovery)?.unwrap_or(next_offset);
        report.replayed = replay.records.len();
        report.torn_bytes = replay.torn_bytes;
        report.truncated_at = replay.truncated_at;
        let log = CommitLog::open(
            LogConfig {
                dir: log_dir(dir),
                durability: config.durability,
                segment_max_bytes: config.segment_max_bytes,
                faults: config.faults.clone(),
            },
            next_offset,
        )?;
        if config.archived {
            // Nothing is pruned before the archiver has looked (it raises the floor).
            log.set_prune_floor(0);
        }
        let log = Arc::new(log);
        let snapshots = spawn_snapshot_writer(snapshot_dir(dir), log.clone());
        let last_snapshot = report.snapshot_offset.unwrap_or(0);
        let clients = crate::client_journal::ClientJournal::open(dir, log.clone())
            .map_err(|e| PersistError::Recovery { path: dir.to_path_buf(), message: format!("client journal: {e}") })?;
        Ok((Self { dir: dir.to_path_buf(), log, config, last_snapshot, snapshots, clients }, report))
    }

    /// Clients written down as connected (and not yet as gone).
    pub fn connected_clients(&self) -> Vec<crate::client_journal::ClientKey> {
        self.clients.listed()
    }

    /// The journal of connected clients.
    pub fn client_journal(&mut self) -> &mut crate::client_journal::ClientJournal {
        &mut self.clients
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn log(&self) -> &Arc<CommitLog> {
        &self.log
    }

    /// The offset of the last transaction handed to the log, if any.
    pub fn last_offset(&self) -> Option<u64> {
        self.log.next_offset().checked_sub(1)
    }

    /// Appends one committed transaction (with the workflow step it applied, if any); snapshots
    /// when it is time.
    pub fn record(&mut self, store: &Store, steps: &StepLedger, tx: LoggedTx<'_>, delta: &TxDelta) {
        let LoggedTx { reducer, caller, args, timestamp_micros, step } = tx;
        let offset = self.log.next_offset();
        let tables: Vec<TableChange> = delta
            .tables
            .iter()
            .map(|t| TableChange { table_id: t.table_id, inserts: t.inserts.clone(), deletes: t.deletes.clone() })
            .collect();
        let sequences = delta
            .tables
            .iter()
            .filter(|t| !t.inserts.is_empty())
            .flat_map(|t| {
                store.table_sequences(t.table_id).into_iter().map(move |(column, next)| SequenceState {
                    table_id: t.table_id,
                    column,
                    next,
                })
            })
            .collect();
        let rec = TxRecord {
            offset,
            timestamp_micros,
            reducer: reducer.to_string(),
            caller: caller.to_le_bytes(),
            args,
            tables,
            sequences,
            step,
        };
        self.log.append(&rec);
        if offset >= self.last_snapshot + self.config.snapshot_every {
            self.snapshot(store, steps, offset);
        }
    }

    /// Writes a snapshot of the current state now and waits for it (tools and benchmarks).
    pub fn snapshot_now(&mut self, store: &Store, steps: &StepLedger) -> Result<(), epoch_commitlog::SnapshotError> {
        let Some(offset) = self.last_offset() else { return Ok(()) };
        if !self.log.flush() {
            return Err(epoch_commitlog::SnapshotError::LogFailed(self.log.failure().unwrap_or_default()));
        }
        let oldest_kept = write_snapshot(&snapshot_dir(&self.dir), &copy_state(store, steps, offset), SNAPSHOTS_KEPT)?;
        self.log.prune_before(oldest_kept + 1);
        self.last_snapshot = offset;
        Ok(())
    }

    /// Copies every row (on the writer, so the copy is consistent) and hands it to the snapshot
    /// thread. Skipped if the previous snapshot is still being written.
    pub fn snapshot(&mut self, store: &Store, steps: &StepLedger, offset: u64) {
        let snap = copy_state(store, steps, offset);
        match self.snapshots.try_send(snap) {
            Ok(()) => self.last_snapshot = offset,
            Err(TrySendError::Full(_)) => tracing::debug!("previous snapshot still being written; skipping"),
            Err(TrySendError::Disconnected(_)) => tracing::warn!("the snapshot writer is gone"),
        }
    }
}

/// Every row and sequence of `store`, as of log offset `offset`.
fn copy_state(store: &Store, steps: &StepLedger, offset: u64) -> Snapshot {
    Snapshot {
        offset,
        tables: store
            .tables()
            .iter()
            .map(|t| {
                let mut rows = PackedRows::with_capacity(t.len() * 4 + t.byte_len());
                t.iter().for_each(|(_, r)| rows.push(r));
                (t.id, rows)
            })
            .collect(),
        sequences: store
            .sequence_states()
            .into_iter()
            .map(|(table_id, column, next)| SequenceState { table_id, column, next })
            .collect(),
        steps: steps.to_snapshot(),
    }
}

fn spawn_snapshot_writer(dir: PathBuf, log: Arc<CommitLog>) -> Sender<Snapshot> {
    let (tx, rx) = bounded::<Snapshot>(1);
    let spawned = std::thread::Builder::new().name("snapshots".into()).spawn(move || {
        for snap in rx {
            // Only snapshot what the log already holds durably, so replay never needs more; a
            // failed log never will: its state is not what the disk holds.
            if !log.flush() {
                tracing::warn!(offset = snap.offset, "no snapshot: the log failed before it held the state");
                continue;
            }
            match write_snapshot(&dir, &snap, SNAPSHOTS_KEPT) {
                Ok(oldest_kept) => {
                    tracing::info!(offset = snap.offset, "snapshot written");
                    log.prune_before(oldest_kept + 1);
                }
                Err(e) => tracing::error!("snapshot at {} failed: {e}", snap.offset),
            }
        }
    });
    if let Err(e) = spawned {
        tracing::error!("cannot start the snapshot writer: {e}");
    }
    tx
}
