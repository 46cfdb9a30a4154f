//! The `spacetime_10.0` host functions: what a 1.3 module may import, with SpacetimeDB's errno
//! codes and buffer protocols. Out-of-bounds pointers trap; database failures return an errno.

use std::time::Instant;

use epoch_store::{Store as Db, StoreError};
use wasmtime::{bail, format_err as anyhow, Result};
use wasmtime::{Caller, Linker, Memory, ResourceLimiter};

use crate::logs::{now_micros, LogLevel, LogRecord, ModuleLogs};

/// The ABI's import module name.
pub const ABI_MODULE: &str = "spacetime_10.0";

/// Every function of `spacetime_10.0`; anything else a module imports is refused at load.
pub const ABI_FUNCTIONS: &[&str] = &[
    "table_id_from_name",
    "index_id_from_name",
    "datastore_table_row_count",
    "datastore_table_scan_bsatn",
    "datastore_index_scan_range_bsatn",
    "datastore_btree_scan_bsatn",
    "row_iter_bsatn_advance",
    "row_iter_bsatn_close",
    "datastore_insert_bsatn",
    "datastore_update_bsatn",
    "datastore_delete_by_index_scan_range_bsatn",
    "datastore_delete_by_btree_scan_bsatn",
    "datastore_delete_all_by_eq_bsatn",
    "bytes_source_read",
    "bytes_sink_write",
    "console_log",
    "console_timer_start",
    "console_timer_end",
    "identity",
    "volatile_nonatomic_schedule_immediate",
];

/// Error numbers of the module ABI (`spacetimedb_primitives::errno` in 1.3).
pub mod errno {
    pub const NOT_IN_TRANSACTION: u32 = 2;
    pub const BSATN_DECODE_ERROR: u32 = 3;
    pub const NO_SUCH_TABLE: u32 = 4;
    pub const NO_SUCH_INDEX: u32 = 5;
    pub const NO_SUCH_ITER: u32 = 6;
    pub const NO_SUCH_CONSOLE_TIMER: u32 = 7;
    pub const NO_SUCH_BYTES: u32 = 8;
    pub const NO_SPACE: u32 = 9;
    pub const BUFFER_TOO_SMALL: u32 = 11;
    pub const UNIQUE_ALREADY_EXISTS: u32 = 12;
    pub const SCHEDULE_AT_DELAY_TOO_LONG: u32 = 13;
    pub const INDEX_NOT_UNIQUE: u32 = 14;
    pub const NO_SUCH_ROW: u32 = 15;
}

const ARGS_SOURCE: u32 = 1;
const STANDARD_SINK: u32 = 1;

/// Rows handed to a module through `row_iter_bsatn_advance`.
#[derive(Debug, Default)]
struct RowIter {
    data: Vec<u8>,
    /// End offset of each row in `data`.
    ends: Vec<u32>,
    next: usize,
}

/// The memory cap, remembering whether it ever refused a growth (so a trap can be named OOM).
#[derive(Debug)]
pub struct MemoryCap {
    pub max_bytes: usize,
    pub denied: bool,
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(&mut self, _current: usize, desired: usize, _max: Option<usize>) -> Result<bool> {
        if desired > self.max_bytes {
            self.denied = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _max: Option<usize>) -> Result<bool> {
        Ok(desired <= 1_000_000)
    }
}

/// Per-instance state the host functions work on.
pub struct Env {
    pub db: Option<Db>,
    pub memory: Option<Memory>,
    pub module_identity: [u8; 32],
    pub logs: ModuleLogs,
    pub limiter: MemoryCap,
    /// Reducer arguments being read by the module, with the read position.
    args: Option<(Vec<u8>, usize)>,
    /// The standard sink (error messages, the module description).
    sink: Option<Vec<u8>>,
    iters: Vec<Option<RowIter>>,
    timers: Vec<Option<(String, Instant)>>,
    /// The message of the last panic the module reported before trapping.
    pub panic_message: Option<String>,
    /// Reducers the module asked to run right after the current one.
    pub scheduled_immediate: Vec<(String, Vec<u8>)>,
    /// Open row iterators are capped so a module cannot exhaust host memory with them.
    pub max_open_iters: usize,
}

impl Env {
    pub fn new(module_identity: [u8; 32], logs: ModuleLogs, memory_max_bytes: usize) -> Self {
        Self {
            db: None,
            memory: None,
            module_identity,
            logs,
            limiter: MemoryCap { max_bytes: memory_max_bytes, denied: false },
            args: None,
            sink: None,
            iters: Vec::new(),
            timers: Vec::new(),
            panic_message: None,
            scheduled_immediate: Vec::new(),
            max_open_iters: 4096,
        }
    }

    /// Prepares a call: installs the argument source (handle 0 when empty) and a fresh sink.
    pub fn start_call(&mut self, args: Vec<u8>) -> (u32, u32) {
        self.sink = Some(Vec::new());
        self.panic_message = None;
        self.limiter.denied = false;
        let source = if args.is_empty() {
            self.args = None;
            0
        } else {
            self.args = Some((args, 0));
            ARGS_SOURCE
        };
        (source, STANDARD_SINK)
    }

    /// Ends a call, returning what the module wrote to the sink; drops per-call handles.
    pub fn finish_call(&mut self) -> Vec<u8> {
        self.args = None;
        self.iters.clear();
        self.timers.clear();
        self.sink.take().unwrap_or_default()
    }

    fn log(
        &self,
        level: LogLevel,
        target: Option<String>,
        filename: Option<String>,
        line: Option<u32>,
        message: String,
    ) {
        self.logs.push(LogRecord {
            level,
            ts_micros: now_micros(),
            target,
            filename,
            line_number: line,
            message,
            trace: None,
        });
    }
}

fn mem_env<'a>(caller: &'a mut Caller<'_, Env>) -> Result<(&'a mut [u8], &'a mut Env)> {
    let mem = caller.data().memory.ok_or_else(|| anyhow!("module has no memory"))?;
    Ok(mem.data_and_store_mut(caller))
}

fn slice(mem: &[u8], ptr: u32, len: u32) -> Result<&[u8]> {
    mem.get(ptr as usize..ptr as usize + len as usize).ok_or_else(|| anyhow!("pointer out of bounds of wasm memory"))
}

fn slice_mut(mem: &mut [u8], ptr: u32, len: u32) -> Result<&mut [u8]> {
    mem.get_mut(ptr as usize..ptr as usize + len as usize)
        .ok_or_else(|| anyhow!("pointer out of bounds of wasm memory"))
}

fn read_u32(mem: &[u8], ptr: u32) -> Result<u32> {
    Ok(u32::from_le_bytes(slice(mem, ptr, 4)?.try_into()?))
}

fn write_bytes(mem: &mut [u8], ptr: u32, bytes: &[u8]) -> Result<()> {
    slice_mut(mem, ptr, bytes.len() as u32)?.copy_from_slice(bytes);
    Ok(())
}

fn str_lossy(mem: &[u8], ptr: u32, len: u32) -> Result<String> {
    Ok(String::from_utf8_lossy(slice(mem, ptr, len)?).into_owned())
}

fn col_id(v: u32) -> Result<u16> {
    u16::try_from(v).map_err(|_| anyhow!("ABI violation: a column id must fit in u16"))
}

/// An index range scan's arguments in module memory: `prefix_elems`, the prefix, and the two
/// BSATN `Bound`s.
type ScanBounds<'m> = (u16, &'m [u8], &'m [u8], &'m [u8]);

/// Reads an index range scan's arguments: the prefix of `prefix_elems` key columns (absent when
/// zero) and the two BSATN `Bound`s, as slices of module memory.
fn scan_bounds(
    mem: &[u8],
    prefix_elems: u32,
    prefix: (u32, u32),
    rstart: (u32, u32),
    rend: (u32, u32),
) -> Result<ScanBounds<'_>> {
    let prefix_elems = col_id(prefix_elems)?;
    let prefix = if prefix_elems > 0 { slice(mem, prefix.0, prefix.1)? } else { &[][..] };
    Ok((prefix_elems, prefix, slice(mem, rstart.0, rstart.1)?, slice(mem, rend.0, rend.1)?))
}

/// The errno for a store error, or a trap for failures a module cannot act on.
fn store_errno(e: StoreError) -> Result<u32> {
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

fn db(env: &mut Env) -> Result<&mut Db, StoreError> {
    env.db.as_mut().filter(|db| db.in_tx()).ok_or(StoreError::NotInTransaction)
}

/// Registers an iterator over `data` (rows ending at `ends`); returns its handle.
fn open_iter(env: &mut Env, data: Vec<u8>, ends: Vec<u32>) -> Result<u32> {
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
fn collect_rows<'a>(rows: impl Iterator<Item = &'a [u8]>) -> (Vec<u8>, Vec<u32>) {
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
fn write_back(mem: &mut [u8], row_ptr: u32, row_len_ptr: u32, res: Result<Vec<u8>, StoreError>) -> Result<u32> {
    match res {
        Ok(gen) => {
            write_bytes(mem, row_ptr, &gen)?;
            write_bytes(mem, row_len_ptr, &(gen.len() as u32).to_le_bytes()).map(|_| 0)
        }
        Err(e) => store_errno(e),
    }
}

/// Writes back the generated columns of a freshly stored row as a BSATN product.
fn generated_columns(db: &Db, table_id: u32, row_id: u32, cols: &[u16]) -> Result<Vec<u8>, StoreError> {
    let table = db.table(table_id)?;
    let row = table.get(row_id).ok_or(StoreError::Corrupt)?;
    let mut out = Vec::new();
    for &c in cols {
        epoch_sats::bsatn::encode(&table.schema.column_value(row, c)?, &mut out);
    }
    Ok(out)
}

/// Registers every `spacetime_10.0` function in `linker`.
pub fn link(linker: &mut Linker<Env>) -> Result<()> {
    let m = ABI_MODULE;
    linker.func_wrap(
        m,
        "table_id_from_name",
        |mut c: Caller<'_, Env>, ptr: u32, len: u32, out: u32| -> Result<u32> {
            let (mem, env) = mem_env(&mut c)?;
            let name = std::str::from_utf8(slice(mem, ptr, len)?).map_err(|_| anyhow!("table name is not UTF-8"))?;
            let id = match db(env) {
                Ok(db) => db.table_id(name),
                Err(e) => return store_errno(e),
            };
            match id {
                Some(id) => write_bytes(mem, out, &id.to_le_bytes()).map(|_| 0),
                None => Ok(errno::NO_SUCH_TABLE),
            }
        },
    )?;
    linker.func_wrap(
        m,
        "index_id_from_name",
        |mut c: Caller<'_, Env>, ptr: u32, len: u32, out: u32| -> Result<u32> {
            let (mem, env) = mem_env(&mut c)?;
            let name = std::str::from_utf8(slice(mem, ptr, len)?).map_err(|_| anyhow!("index name is not UTF-8"))?;
            let id = match db(env) {
                Ok(db) => db.index_id(name),
                Err(e) => return store_errno(e),
            };
            match id {
                Some(id) => write_bytes(mem, out, &id.to_le_bytes()).map(|_| 0),
                None => Ok(errno::NO_SUCH_INDEX),
            }
        },
    )?;
    linker.func_wrap(
        m,
        "datastore_table_row_count",
        |mut c: Caller<'_, Env>, table: u32, out: u32| -> Result<u32> {
            let (mem, env) = mem_env(&mut c)?;
            let n = match db(env).and_then(|db| db.table(table).map(|t| t.len() as u64)) {
                Ok(n) => n,
                Err(e) => return store_errno(e),
            };
            write_bytes(mem, out, &n.to_le_bytes()).map(|_| 0)
        },
    )?;
    linker.func_wrap(
        m,
        "datastore_table_scan_bsatn",
        |mut c: Caller<'_, Env>, table: u32, out: u32| -> Result<u32> {
            let (mem, env) = mem_env(&mut c)?;
            let (data, ends) = match db(env).and_then(|db| db.table(table)) {
                Ok(t) => collect_rows(t.iter().map(|(_, row)| row)),
                Err(e) => return store_errno(e),
            };
            let handle = open_iter(env, data, ends)?;
            write_bytes(mem, out, &handle.to_le_bytes()).map(|_| 0)
        },
    )?;
    for name in ["datastore_index_scan_range_bsatn", "datastore_btree_scan_bsatn"] {
        linker.func_wrap(
            m,
            name,
            |mut c: Caller<'_, Env>,
             index: u32,
             prefix_ptr: u32,
             prefix_len: u32,
             prefix_elems: u32,
             rstart_ptr: u32,
             rstart_len: u32,
             rend_ptr: u32,
             rend_len: u32,
             out: u32|
             -> Result<u32> {
                let (mem, env) = mem_env(&mut c)?;
                let (prefix_elems, prefix, rstart, rend) = scan_bounds(
                    mem,
                    prefix_elems,
                    (prefix_ptr, prefix_len),
                    (rstart_ptr, rstart_len),
                    (rend_ptr, rend_len),
                )?;
                let found = db(env).and_then(|db| {
                    let (table, rows) = db.index_scan(index, prefix, prefix_elems, rstart, rend)?;
                    let t = db.table(table)?;
                    let rows =
                        rows.iter().map(|r| t.get(*r).ok_or(StoreError::Corrupt)).collect::<Result<Vec<_>, _>>()?;
                    Ok(collect_rows(rows.into_iter()))
                });
                let (data, ends) = match found {
                    Ok(x) => x,
                    Err(e) => return store_errno(e),
                };
                let handle = open_iter(env, data, ends)?;
                write_bytes(mem, out, &handle.to_le_bytes()).map(|_| 0)
            },
        )?;
    }
    linker.func_wrap(
        m,
        "row_iter_bsatn_advance",
        |mut c: Caller<'_, Env>, iter: u32, buf_ptr: u32, buf_len_ptr: u32| -> Result<i32> {
            let (mem, env) = mem_env(&mut c)?;
            let Some(Some(it)) = iter.checked_sub(1).and_then(|i| env.iters.get_mut(i as usize)) else {
                return Ok(errno::NO_SUCH_ITER as i32);
            };
            let cap = read_u32(mem, buf_len_ptr)? as usize;
            let start = if it.next == 0 { 0 } else { it.ends[it.next - 1] as usize };
            // Copy as many whole rows as fit.
            let mut end_row = it.next;
            while end_row < it.ends.len() && it.ends[end_row] as usize - start <= cap {
                end_row += 1;
            }
            if end_row == it.next && it.next < it.ends.len() {
                let need = it.ends[it.next] as usize - start;
                write_bytes(mem, buf_len_ptr, &(need as u32).to_le_bytes())?;
                return Ok(errno::BUFFER_TOO_SMALL as i32);
            }
            let end = if end_row == 0 { 0 } else { it.ends[end_row - 1] as usize };
            let chunk_len = end - start;
            slice_mut(mem, buf_ptr, chunk_len as u32)?.copy_from_slice(&it.data[start..end]);
            it.next = end_row;
            let exhausted = it.next == it.ends.len();
            write_bytes(mem, buf_len_ptr, &(chunk_len as u32).to_le_bytes())?;
            if exhausted {
                env.iters[iter as usize - 1] = None;
                return Ok(-1);
            }
            Ok(0)
        },
    )?;
    linker.func_wrap(m, "row_iter_bsatn_close", |mut c: Caller<'_, Env>, iter: u32| -> Result<u32> {
        let env = c.data_mut();
        match iter.checked_sub(1).and_then(|i| env.iters.get_mut(i as usize)) {
            Some(slot @ Some(_)) => {
                *slot = None;
                Ok(0)
            }
            _ => Ok(errno::NO_SUCH_ITER),
        }
    })?;
    linker.func_wrap(
        m,
        "datastore_insert_bsatn",
        |mut c: Caller<'_, Env>, table: u32, row_ptr: u32, row_len_ptr: u32| -> Result<u32> {
            let (mem, env) = mem_env(&mut c)?;
            let len = read_u32(mem, row_len_ptr)?;
            let row = slice_mut(mem, row_ptr, len)?;
            let res = db(env).and_then(|db| {
                let (id, gen) = db.insert(table, row)?;
                generated_columns(db, table, id, &gen)
            });
            write_back(mem, row_ptr, row_len_ptr, res)
        },
    )?;
    linker.func_wrap(
        m,
        "datastore_update_bsatn",
        |mut c: Caller<'_, Env>, table: u32, index: u32, row_ptr: u32, row_len_ptr: u32| -> Result<u32> {
            let (mem, env) = mem_env(&mut c)?;
            let len = read_u32(mem, row_len_ptr)?;
            let row = slice_mut(mem, row_ptr, len)?;
            let res = db(env).and_then(|db| {
                let (id, gen) = db.update(table, index, row)?;
                generated_columns(db, table, id, &gen)
            });
            write_back(mem, row_ptr, row_len_ptr, res)
        },
    )?;
    for name in ["datastore_delete_by_index_scan_range_bsatn", "datastore_delete_by_btree_scan_bsatn"] {
        linker.func_wrap(
            m,
            name,
            |mut c: Caller<'_, Env>,
             index: u32,
             prefix_ptr: u32,
             prefix_len: u32,
             prefix_elems: u32,
             rstart_ptr: u32,
             rstart_len: u32,
             rend_ptr: u32,
             rend_len: u32,
             out: u32|
             -> Result<u32> {
                let (mem, env) = mem_env(&mut c)?;
                let (prefix_elems, prefix, rstart, rend) = scan_bounds(
                    mem,
                    prefix_elems,
                    (prefix_ptr, prefix_len),
                    (rstart_ptr, rstart_len),
                    (rend_ptr, rend_len),
                )?;
                let deleted = db(env).and_then(|db| db.delete_by_index_scan(index, prefix, prefix_elems, rstart, rend));
                match deleted {
                    Ok(n) => write_bytes(mem, out, &n.to_le_bytes()).map(|_| 0),
                    Err(e) => store_errno(e),
                }
            },
        )?;
    }
    linker.func_wrap(
        m,
        "datastore_delete_all_by_eq_bsatn",
        |mut c: Caller<'_, Env>, table: u32, rel_ptr: u32, rel_len: u32, out: u32| -> Result<u32> {
            let (mem, env) = mem_env(&mut c)?;
            let rel = slice(mem, rel_ptr, rel_len)?.to_vec();
            match db(env).and_then(|db| db.delete_by_rel(table, &rel)) {
                Ok(n) => write_bytes(mem, out, &n.to_le_bytes()).map(|_| 0),
                Err(e) => store_errno(e),
            }
        },
    )?;
    linker.func_wrap(
        m,
        "bytes_source_read",
        |mut c: Caller<'_, Env>, source: u32, buf_ptr: u32, buf_len_ptr: u32| -> Result<i32> {
            let (mem, env) = mem_env(&mut c)?;
            let Some((args, pos)) = env.args.as_mut().filter(|_| source == ARGS_SOURCE) else {
                return Ok(errno::NO_SUCH_BYTES as i32);
            };
            let cap = read_u32(mem, buf_len_ptr)? as usize;
            let left = &args[*pos..];
            let n = cap.min(left.len());
            slice_mut(mem, buf_ptr, n as u32)?.copy_from_slice(&left[..n]);
            write_bytes(mem, buf_len_ptr, &(n as u32).to_le_bytes())?;
            if n == left.len() {
                env.args = None;
                Ok(-1)
            } else {
                *pos += n;
                Ok(0)
            }
        },
    )?;
    linker.func_wrap(
        m,
        "bytes_sink_write",
        |mut c: Caller<'_, Env>, sink: u32, buf_ptr: u32, buf_len_ptr: u32| -> Result<u32> {
            let (mem, env) = mem_env(&mut c)?;
            let Some(out) = env.sink.as_mut().filter(|_| sink == STANDARD_SINK) else {
                return Ok(errno::NO_SUCH_BYTES);
            };
            let len = read_u32(mem, buf_len_ptr)?;
            // Error messages and module descriptions are small; refuse absurd ones.
            if out.len() + len as usize > 64 << 20 {
                return Ok(errno::NO_SPACE);
            }
            out.extend_from_slice(slice(mem, buf_ptr, len)?);
            Ok(0)
        },
    )?;
    linker.func_wrap(
        m,
        "console_log",
        |mut c: Caller<'_, Env>,
         level: u32,
         target_ptr: u32,
         target_len: u32,
         file_ptr: u32,
         file_len: u32,
         line: u32,
         msg_ptr: u32,
         msg_len: u32|
         -> Result<()> {
            let (mem, env) = mem_env(&mut c)?;
            // Only what the log keeps is copied out of the module's memory.
            let text = |ptr, len| slice(mem, ptr, len).map(crate::logs::bounded_text);
            let target = if target_ptr == 0 { None } else { Some(text(target_ptr, target_len)?) };
            let file = if file_ptr == 0 { None } else { Some(text(file_ptr, file_len)?) };
            let message = text(msg_ptr, msg_len)?;
            let level = LogLevel::from_abi(level as u8);
            let line = (line != u32::MAX).then_some(line);
            if level == LogLevel::Panic {
                env.panic_message = Some(message.clone());
                // As 1.3 does, a panic line carries the wasm call stack that led to it.
                let trace: Vec<String> = wasmtime::WasmBacktrace::capture(&c)
                    .frames()
                    .iter()
                    .map(|f| {
                        f.func_name()
                            .map_or_else(|| "<unknown>".to_string(), |n| rustc_demangle::demangle(n).to_string())
                    })
                    .collect();
                let env = c.data();
                env.logs.push(LogRecord {
                    level,
                    ts_micros: now_micros(),
                    target,
                    filename: file,
                    line_number: line,
                    message,
                    trace: Some(trace),
                });
                return Ok(());
            }
            env.log(level, target, file, line, message);
            Ok(())
        },
    )?;
    linker.func_wrap(m, "console_timer_start", |mut c: Caller<'_, Env>, ptr: u32, len: u32| -> Result<u32> {
        let (mem, env) = mem_env(&mut c)?;
        let name = str_lossy(mem, ptr, len)?;
        if env.timers.len() >= 4096 {
            bail!("too many console timers");
        }
        env.timers.push(Some((name, Instant::now())));
        Ok(env.timers.len() as u32)
    })?;
    linker.func_wrap(m, "console_timer_end", |mut c: Caller<'_, Env>, id: u32| -> Result<u32> {
        let env = c.data_mut();
        let Some(Some((name, start))) =
            id.checked_sub(1).and_then(|i| env.timers.get_mut(i as usize)).map(Option::take)
        else {
            return Ok(errno::NO_SUCH_CONSOLE_TIMER);
        };
        env.log(LogLevel::Info, None, None, None, format!("Timing span {name:?}: {:?}", start.elapsed()));
        Ok(0)
    })?;
    linker.func_wrap(m, "identity", |mut c: Caller<'_, Env>, out: u32| -> Result<()> {
        let (mem, env) = mem_env(&mut c)?;
        let id = env.module_identity;
        write_bytes(mem, out, &id)
    })?;
    linker.func_wrap(
        m,
        "volatile_nonatomic_schedule_immediate",
        |mut c: Caller<'_, Env>, name_ptr: u32, name_len: u32, args_ptr: u32, args_len: u32| -> Result<()> {
            let (mem, env) = mem_env(&mut c)?;
            let name = std::str::from_utf8(slice(mem, name_ptr, name_len)?)
                .map_err(|_| anyhow!("reducer name is not UTF-8"))?
                .to_string();
            let args = slice(mem, args_ptr, args_len)?.to_vec();
            if env.scheduled_immediate.len() >= 10_000 {
                bail!("too many reducers scheduled in one call");
            }
            env.scheduled_immediate.push((name, args));
            Ok(())
        },
    )?;
    Ok(())
}
