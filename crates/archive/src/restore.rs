//! Rebuilding a database directory from its archive, up to a transaction or a moment.

use std::path::Path;

use epoch_commitlog::{cut_after, read_log, Snapshot, TxRecord};

use crate::{io, name_offset, ArchiveError, ArchiveTarget};

/// Where a restore stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopAt {
    /// The last archived transaction.
    Latest,
    /// The transaction with this log offset (included).
    Offset(u64),
    /// The last transaction that started at or before this moment (microseconds since the
    /// Unix epoch).
    Time(i64),
}

/// What a restore rebuilt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreReport {
    /// The last transaction restored (`None`: the database as created, before any).
    pub offset: Option<u64>,
    /// The snapshot the state starts from, if any.
    pub snapshot: Option<u64>,
    /// Log segments fetched.
    pub segments: usize,
}

/// Fetches the archive folder `archive` into the empty directory `dest` (`module.wasm`, the
/// snapshot to start from, the log cut after the stopping point), so that opening the
/// database from `dest` recovers it as it was then. Returns the module (`None` for the system
/// database's archive, which has none) and what was restored. A snapshot the restore needs
/// that does not read back whole, or whose offset is not the one its name says, is refused
/// with the reason: a restore never quietly starts from less than it claims.
pub fn restore(
    archive: &ArchiveTarget,
    dest: &Path,
    stop: StopAt,
) -> Result<(Option<Vec<u8>>, RestoreReport), ArchiveError> {
    let wasm = optional(archive.get("module.wasm"))?;
    let log_dir = dest.join("log");
    std::fs::create_dir_all(&log_dir).map_err(io(&log_dir))?;
    let names = archive.list("log")?;
    for name in &names {
        if name_offset(name, ".log").is_none() {
            continue;
        }
        let path = log_dir.join(name);
        std::fs::write(&path, archive.get(&format!("log/{name}"))?).map_err(io(&path))?;
    }
    let records = read_log(&log_dir, 0, false)?.records;
    let first = records.first().map(|r| r.offset);
    let snapshots: Vec<u64> = archive.list("snapshots")?.iter().filter_map(|n| name_offset(n, ".snap")).collect();
    if wasm.is_none() && names.is_empty() && snapshots.is_empty() {
        return Err(ArchiveError::Missing(format!(
            "database here (no module.wasm, log or snapshot under {}): is the URL an archive folder?",
            archive.url()
        )));
    }
    let target = stopping_point(&records, &snapshots, stop)?;
    drop(records);
    // The newest snapshot at or before the target (none needed when the log starts at 0).
    let snapshot = target.and_then(|t| snapshots.iter().copied().filter(|s| *s <= t).max());
    let covered_from = match snapshot {
        None => 0,
        Some(s) => s.checked_add(1).ok_or_else(|| {
            ArchiveError::Restore(format!("snapshot {s:020}.snap claims offset {s}, which no transaction can follow"))
        })?,
    };
    if first.is_some_and(|f| f > covered_from) {
        return Err(ArchiveError::Restore(format!(
            "the archived log starts at transaction {} and no snapshot covers what comes before",
            first.unwrap_or_default()
        )));
    }
    if let Some(s) = snapshot {
        fetch_snapshot(archive, dest, s)?;
    }
    match target {
        Some(t) => cut_after(&log_dir, t)?,
        // Nothing to replay: an empty log.
        None => {
            std::fs::remove_dir_all(&log_dir).map_err(io(&log_dir))?;
        }
    }
    for name in crate::DATABASE_FILES {
        let Some(bytes) = optional(archive.get(name))? else { continue };
        let path = dest.join(name);
        std::fs::write(&path, bytes).map_err(io(&path))?;
    }
    Ok((wasm, RestoreReport { offset: target, snapshot, segments: names.len() }))
}

/// An object that may be absent.
fn optional(got: Result<Vec<u8>, ArchiveError>) -> Result<Option<Vec<u8>>, ArchiveError> {
    match got {
        Ok(b) => Ok(Some(b)),
        Err(ArchiveError::Missing(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The last transaction to restore (`None`: the database as created, before any).
fn stopping_point(records: &[TxRecord], snapshots: &[u64], stop: StopAt) -> Result<Option<u64>, ArchiveError> {
    let first = records.first().map(|r| r.offset);
    // The last transaction the archive holds: in the log, or in a snapshot newer than it (a
    // backup taken just after a snapshot may have no log after it).
    let last = records.last().map(|r| r.offset).max(snapshots.iter().copied().max());
    Ok(match stop {
        StopAt::Latest => last,
        StopAt::Offset(n) => {
            if last.is_none_or(|l| n > l) {
                return Err(ArchiveError::Restore(format!(
                    "offset {n} is past the archive's last transaction ({})",
                    last.map_or("none".to_string(), |l| l.to_string())
                )));
            }
            Some(n)
        }
        StopAt::Time(t) => match records.iter().rev().find(|r| r.timestamp_micros <= t) {
            Some(r) => Some(r.offset),
            None if first.is_some_and(|f| f > 0) || (first.is_none() && !snapshots.is_empty()) => {
                return Err(ArchiveError::Restore("the archive holds no transaction at or before that moment".into()))
            }
            // Before the first transaction: the database as created.
            None => None,
        },
    })
}

/// Copies snapshot `offset` into `dest/snapshots/` after checking that it reads back whole
/// and holds the state at the offset its name says.
fn fetch_snapshot(archive: &ArchiveTarget, dest: &Path, offset: u64) -> Result<(), ArchiveError> {
    let name = format!("{offset:020}.snap");
    let bytes = archive.get(&format!("snapshots/{name}"))?;
    let decoded = Snapshot::decode(&bytes).map_err(|e| {
        ArchiveError::Restore(format!("snapshot {name}, which the restore starts from, is unreadable: {e}"))
    })?;
    if decoded.offset != offset {
        return Err(ArchiveError::Restore(format!(
            "snapshot {name} holds the state at transaction {}, not {offset}: the archive was altered",
            decoded.offset
        )));
    }
    let dir = dest.join("snapshots");
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let path = dir.join(name);
    std::fs::write(&path, bytes).map_err(io(&path))
}
