//! Snapshots: every row of every table, and the sequences, as of one log offset.
//!
//! File `snapshots/<offset>.snap`: magic, body, then a crc32c of everything before it. Written to
//! a temporary file, fsynced, then renamed, so a crash never leaves a half snapshot under a real
//! name; a damaged one is skipped in favour of the next older.

use std::io::Write;
use std::path::{Path, PathBuf};

use epoch_sats::bsatn::{DecodeError, Reader};

use crate::record::{AppliedSteps, SequenceState};

const SNAPSHOT_MAGIC: &[u8; 8] = b"EPOCHSN1";

/// All rows and sequence states after the transaction at `offset`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Snapshot {
    /// The last transaction included.
    pub offset: u64,
    /// (table id, its rows as BSATN).
    pub tables: Vec<(u32, PackedRows)>,
    pub sequences: Vec<SequenceState>,
    /// Workflow items applied in each instance's latest batch (an optional trailing section:
    /// snapshots written before it existed have none).
    pub steps: Vec<AppliedSteps>,
}

/// The rows of one table packed end to end as a snapshot stores them (each `[len u32][bytes]`):
/// taking a snapshot copies a table with one growing buffer instead of an allocation per row,
/// which matters because the copy is made on the database's writer thread.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PackedRows {
    count: u64,
    data: Vec<u8>,
}

impl PackedRows {
    /// Room for rows totalling `bytes` bytes (lengths included).
    pub fn with_capacity(bytes: usize) -> Self {
        Self { count: 0, data: Vec::with_capacity(bytes) }
    }

    pub fn push(&mut self, row: &[u8]) {
        self.data.extend_from_slice(&(row.len() as u32).to_le_bytes());
        self.data.extend_from_slice(row);
        self.count += 1;
    }

    /// How many rows.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Each row, in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &[u8]> + '_ {
        let mut at = 0usize;
        (0..self.len()).map(move |_| {
            // Built by `push` or checked by `decode`: every length is followed by its bytes.
            let len = u32::from_le_bytes(self.data[at..at + 4].try_into().unwrap_or_default()) as usize;
            let row = &self.data[at + 4..at + 4 + len];
            at += 4 + len;
            row
        })
    }
}

impl<'a> FromIterator<&'a [u8]> for PackedRows {
    fn from_iter<I: IntoIterator<Item = &'a [u8]>>(rows: I) -> Self {
        let mut packed = Self::default();
        rows.into_iter().for_each(|r| packed.push(r));
        packed
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot I/O error at {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("no snapshot: the commitlog failed before it held the state ({0})")]
    LogFailed(String),
}

impl Snapshot {
    /// The snapshot file's bytes: magic, body, crc32c.
    pub fn encode(&self) -> Vec<u8> {
        encode(self)
    }

    /// Reads a snapshot file's bytes, checking magic and checksum.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        decode(bytes)
    }
}

fn encode(s: &Snapshot) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(SNAPSHOT_MAGIC);
    out.extend_from_slice(&s.offset.to_le_bytes());
    out.extend_from_slice(&(s.tables.len() as u32).to_le_bytes());
    for (id, rows) in &s.tables {
        out.extend_from_slice(&id.to_le_bytes());
        out.extend_from_slice(&rows.count.to_le_bytes());
        out.extend_from_slice(&rows.data);
    }
    out.extend_from_slice(&(s.sequences.len() as u32).to_le_bytes());
    for q in &s.sequences {
        out.extend_from_slice(&q.table_id.to_le_bytes());
        out.extend_from_slice(&q.column.to_le_bytes());
        out.extend_from_slice(&q.next.to_le_bytes());
    }
    if !s.steps.is_empty() {
        let put = |out: &mut Vec<u8>, b: &[u8]| {
            out.extend_from_slice(&(b.len() as u32).to_le_bytes());
            out.extend_from_slice(b);
        };
        out.extend_from_slice(&(s.steps.len() as u32).to_le_bytes());
        for a in &s.steps {
            put(&mut out, a.instance.as_bytes());
            out.extend_from_slice(&a.batch.to_le_bytes());
            out.extend_from_slice(&(a.items.len() as u32).to_le_bytes());
            a.items.iter().for_each(|i| put(&mut out, i.as_bytes()));
        }
    }
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

fn decode(bytes: &[u8]) -> Result<Snapshot, DecodeError> {
    if bytes.len() < SNAPSHOT_MAGIC.len() + 4 || &bytes[..SNAPSHOT_MAGIC.len()] != SNAPSHOT_MAGIC {
        return Err(DecodeError::Invalid("not a snapshot".into()));
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32c::crc32c(body) != u32::from_le_bytes(crc.try_into().unwrap_or_default()) {
        return Err(DecodeError::Invalid("snapshot checksum mismatch".into()));
    }
    let mut r = Reader::new(&body[SNAPSHOT_MAGIC.len()..]);
    let offset = r.u64()?;
    let mut tables = Vec::new();
    for _ in 0..r.len_prefix(12)? {
        let id = r.u32()?;
        let n = r.u64()? as usize;
        if n > r.remaining().len() / 4 {
            return Err(DecodeError::LengthTooLarge(n as u64));
        }
        // Walk the lengths to find where the table's rows end, then copy them in one piece.
        let start = r.remaining();
        for _ in 0..n {
            let len = r.len_prefix(1)?;
            r.take(len)?;
        }
        let data = start[..start.len() - r.remaining().len()].to_vec();
        tables.push((id, PackedRows { count: n as u64, data }));
    }
    let sequences = (0..r.len_prefix(22)?)
        .map(|_| Ok(SequenceState { table_id: r.u32()?, column: r.u16()?, next: r.i128()? }))
        .collect::<Result<_, DecodeError>>()?;
    let mut steps = Vec::new();
    if !r.remaining().is_empty() {
        for _ in 0..r.len_prefix(16)? {
            let instance = r.str()?.to_string();
            let batch = r.u64()?;
            let items = (0..r.len_prefix(4)?).map(|_| Ok(r.str()?.to_string())).collect::<Result<_, DecodeError>>()?;
            steps.push(AppliedSteps { instance, batch, items });
        }
    }
    r.finish()?;
    Ok(Snapshot { offset, tables, sequences, steps })
}

fn snapshot_files(dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut out: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let p = e.path();
            let off = p.file_name()?.to_str()?.strip_suffix(".snap")?.parse().ok()?;
            Some((off, p))
        })
        .collect();
    out.sort();
    out
}

/// Writes `s` durably into `dir`, then keeps only the newest `keep` snapshots. Returns the offset
/// of the oldest snapshot kept (log segments before it may be pruned).
pub fn write_snapshot(dir: &Path, s: &Snapshot, keep: usize) -> Result<u64, SnapshotError> {
    let err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| SnapshotError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(err(dir))?;
    let name = dir.join(format!("{:020}.snap", s.offset));
    let tmp = dir.join(format!("{:020}.snap.tmp", s.offset));
    let mut f = std::fs::File::create(&tmp).map_err(err(&tmp))?;
    f.write_all(&encode(s)).map_err(err(&tmp))?;
    f.sync_all().map_err(err(&tmp))?;
    std::fs::rename(&tmp, &name).map_err(err(&name))?;
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(err(dir))?;
    let files = snapshot_files(dir);
    let cut = files.len().saturating_sub(keep.max(1));
    for (_, p) in &files[..cut] {
        let _ = std::fs::remove_file(p);
    }
    Ok(files.get(cut).map_or(s.offset, |(o, _)| *o))
}

/// The newest snapshot in `dir` that reads back whole; damaged ones are skipped (and named in
/// the log).
pub fn read_latest_snapshot(dir: &Path) -> Option<Snapshot> {
    for (_, path) in snapshot_files(dir).into_iter().rev() {
        match std::fs::read(&path).map_err(|e| e.to_string()).and_then(|b| decode(&b).map_err(|e| e.to_string())) {
            Ok(s) => return Some(s),
            Err(e) => tracing::warn!(path = %path.display(), "skipping an unreadable snapshot: {e}"),
        }
    }
    None
}
