//! Bridges between host functions and the store: errno mapping, row iterators, and writing
//! generated columns back to the module.

use epoch_store::{Store as Db, StoreError};
use wasmtime::{bail, Result};

use super::memory::write_bytes;
use super::{errno, Env, RowIter};

/// The errno for a store error, or a trap for failures a module cannot act on.
pub(super) fn store_errno(e: StoreError) -> Result<u32> {
    Ok(match e {
        StoreError::NotInTransaction => errno::NOT_IN_TRANSACTION,
        StoreError::NoSuchTable => errno::NO_SUCH_TABLE,
        StoreError::NoSuchIndex => errno::NO_SUCH_INDEX,
        StoreError::IndexNotUnique => errno::INDEX_NOT_UNIQUE,
        StoreError::NoSuchRow => errno::NO_SUCH_ROW,
        StoreError::Decode(_) => errno::BSATN_DECODE_ERROR,
        StoreError::UniqueViolation { .. } => errno::UNIQUE_ALREADY_EXISTS,
        e @ (StoreError::SequenceExhausted { .. }
        | StoreError::Corrupt
        | StoreError::RecoveredDuplicate { .. }
        | StoreError::RecoveredDuplicateRow { .. }) => {
            bail!(e)
        }
    })
}

/// The store of the running transaction, or `NotInTransaction` outside one.
pub(super) fn db(env: &mut Env) -> Result<&mut Db, StoreError> {
    env.db.as_mut().filter(|db| db.in_tx()).ok_or(StoreError::NotInTransaction)
}

/// Registers an iterator over `data` (rows ending at `ends`); returns its handle.
pub(super) fn open_iter(env: &mut Env, data: Vec<u8>, ends: Vec<u32>) -> Result<u32> {
    let slot = match env.iters.iter().position(Option::is_none) {
        Some(i) => i,
        None if env.iters.len() >= env.max_open_iters => bail!("too many open row iterators"),
        None => {
            env.iters.push(None);
            env.iters.len() - 1
        }
    };
    env.iters[slot] = Some(RowIter { data, ends, next: 0 });
    // Handle 0 is the invalid iterator.
    Ok(slot as u32 + 1)
}

/// Copies rows into one buffer with their end offsets, as an iterator holds them.
pub(super) fn collect_rows<'a>(rows: impl Iterator<Item = &'a [u8]>) -> (Vec<u8>, Vec<u32>) {
    let mut data = Vec::new();
    let mut ends = Vec::new();
    for row in rows {
        data.extend_from_slice(row);
        ends.push(data.len() as u32);
    }
    (data, ends)
}

/// Finishes an insert or update: writes the generated columns back over the row buffer and
/// their length into `row_len_ptr`, or returns the errno.
pub(super) fn write_back(
    mem: &mut [u8],
    row_ptr: u32,
    row_len_ptr: u32,
    res: Result<Vec<u8>, StoreError>,
) -> Result<u32> {
    match res {
        Ok(gen) => {
            write_bytes(mem, row_ptr, &gen)?;
            write_bytes(mem, row_len_ptr, &(gen.len() as u32).to_le_bytes()).map(|_| 0)
        }
        Err(e) => store_errno(e),
    }
}

/// Writes back the generated columns of a freshly stored row as a BSATN product.
pub(super) fn generated_columns(db: &Db, table_id: u32, row_id: u32, cols: &[u16]) -> Result<Vec<u8>, StoreError> {
    let table = db.table(table_id)?;
    let row = table.get(row_id).ok_or(StoreError::Corrupt)?;
    let mut out = Vec::new();
    for &c in cols {
        epoch_sats::bsatn::encode(&table.schema.column_value(row, c)?, &mut out);
    }
    Ok(out)
}

/// Answers a call that writes a count (or any fixed-size value) to `out`: 0 and the value, or
/// the store error's errno.
pub(super) fn answer_value(mem: &mut [u8], out: u32, res: Result<impl AsRef<[u8]>, StoreError>) -> Result<u32> {
    match res {
        Ok(v) => write_bytes(mem, out, v.as_ref()).map(|_| 0),
        Err(e) => store_errno(e),
    }
}

/// Answers a scan: the rows `found` names (table id and row ids) become an iterator whose
/// handle is written to `out`, or the store error's errno.
pub(super) fn answer_rows(
    mem: &mut [u8],
    env: &mut Env,
    out: u32,
    found: Result<(u32, Vec<epoch_store::RowId>), StoreError>,
) -> Result<u32> {
    let rows = found.and_then(|(table, rows)| {
        let db = db(env)?;
        let t = db.table(table)?;
        let rows = rows.iter().map(|r| t.get(*r).ok_or(StoreError::Corrupt)).collect::<Result<Vec<_>, _>>()?;
        Ok(collect_rows(rows.into_iter()))
    });
    let (data, ends) = match rows {
        Ok(x) => x,
        Err(e) => return store_errno(e),
    };
    let handle = open_iter(env, data, ends)?;
    write_bytes(mem, out, &handle.to_le_bytes()).map(|_| 0)
}
