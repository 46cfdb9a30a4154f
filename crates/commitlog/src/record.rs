//! One committed transaction as the log stores it, and its byte encoding.

use epoch_sats::bsatn::{DecodeError, Reader};

/// The rows one transaction changed in one table.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TableChange {
    pub table_id: u32,
    pub inserts: Vec<Box<[u8]>>,
    pub deletes: Vec<Box<[u8]>>,
}

/// The state of one `auto_inc` sequence after a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SequenceState {
    pub table_id: u32,
    pub column: u16,
    /// The next value the sequence will hand out.
    pub next: i128,
}

/// The workflow item a transaction completed, committed with it so that a workflow resumed after
/// a crash knows exactly which items of its interrupted batch are already applied.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WorkflowStep {
    /// The workflow instance id.
    pub instance: String,
    /// The batch number (1, 2, …) the item belongs to.
    pub batch: u64,
    /// The item's key within the instance (e.g. `user/u-1`).
    pub item: String,
}

/// The items of one workflow instance's latest batch that are applied (kept in snapshots, so a
/// snapshot that prunes the log keeps the record of an interrupted batch).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AppliedSteps {
    pub instance: String,
    pub batch: u64,
    pub items: Vec<String>,
}

/// One committed transaction.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TxRecord {
    /// Position in the log: 0, 1, 2, … with no gaps.
    pub offset: u64,
    pub timestamp_micros: i64,
    /// The reducer that ran, or a system name (e.g. `__sql__`) for changes made outside reducers.
    pub reducer: String,
    /// The caller's identity, little-endian.
    pub caller: [u8; 32],
    /// The reducer's BSATN arguments.
    pub args: Vec<u8>,
    pub tables: Vec<TableChange>,
    pub sequences: Vec<SequenceState>,
    /// The workflow item this transaction applied, if a workflow ran it.
    pub step: Option<WorkflowStep>,
}

/// Tag that starts the optional step section (records written before it existed end earlier).
const STEP_TAG: u8 = 1;

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_u32(out, b.len() as u32);
    out.extend_from_slice(b);
}

impl TxRecord {
    /// Appends the record's encoding to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.offset.to_le_bytes());
        out.extend_from_slice(&self.timestamp_micros.to_le_bytes());
        put_bytes(out, self.reducer.as_bytes());
        out.extend_from_slice(&self.caller);
        put_bytes(out, &self.args);
        put_u32(out, self.tables.len() as u32);
        for t in &self.tables {
            put_u32(out, t.table_id);
            put_u32(out, t.inserts.len() as u32);
            t.inserts.iter().for_each(|r| put_bytes(out, r));
            put_u32(out, t.deletes.len() as u32);
            t.deletes.iter().for_each(|r| put_bytes(out, r));
        }
        put_u32(out, self.sequences.len() as u32);
        for s in &self.sequences {
            put_u32(out, s.table_id);
            out.extend_from_slice(&s.column.to_le_bytes());
            out.extend_from_slice(&s.next.to_le_bytes());
        }
        if let Some(step) = &self.step {
            out.push(STEP_TAG);
            step.encode(out);
        }
    }

    /// Decodes a record from exactly `bytes`.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let offset = r.u64()?;
        let timestamp_micros = r.u64()? as i64;
        let reducer = r.str()?.to_string();
        let caller = r.array::<32>()?;
        let n = r.len_prefix(1)?;
        let args = r.take(n)?.to_vec();
        let rows = |r: &mut Reader<'_>| -> Result<Vec<Box<[u8]>>, DecodeError> {
            let n = r.len_prefix(4)?;
            (0..n)
                .map(|_| {
                    let len = r.len_prefix(1)?;
                    Ok(r.take(len)?.into())
                })
                .collect()
        };
        let tables = (0..r.len_prefix(12)?)
            .map(|_| Ok(TableChange { table_id: r.u32()?, inserts: rows(&mut r)?, deletes: rows(&mut r)? }))
            .collect::<Result<_, DecodeError>>()?;
        let sequences = (0..r.len_prefix(22)?)
            .map(|_| Ok(SequenceState { table_id: r.u32()?, column: r.u16()?, next: r.i128()? }))
            .collect::<Result<_, DecodeError>>()?;
        let step = match r.remaining() {
            [] => None,
            [STEP_TAG, ..] => {
                r.u8()?;
                Some(WorkflowStep::decode(&mut r)?)
            }
            _ => return Err(DecodeError::Invalid("unknown trailing section in a log record".into())),
        };
        r.finish()?;
        Ok(Self { offset, timestamp_micros, reducer, caller, args, tables, sequences, step })
    }
}

impl WorkflowStep {
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        put_bytes(out, self.instance.as_bytes());
        out.extend_from_slice(&self.batch.to_le_bytes());
        put_bytes(out, self.item.as_bytes());
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self { instance: r.str()?.to_string(), batch: r.u64()?, item: r.str()?.to_string() })
    }
}
