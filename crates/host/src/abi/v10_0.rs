//! The `spacetime_10.0` ABI module: the host functions a SpacetimeDB 1.3 module may import,
//! with SpacetimeDB's errno codes and buffer protocols. Registration is split into groups so
//! each stays readable; the order and every function's behaviour are those of 1.3.

use std::time::Instant;

use wasmtime::{bail, format_err as anyhow, Result};
use wasmtime::{Caller, Linker};

use super::datastore::{
    answer_rows, answer_value, collect_rows, db, generated_columns, open_iter, store_errno, write_back,
};
use super::memory::{mem_env, read_u32, scan_bounds, slice, slice_mut, str_lossy, write_bytes};
use super::{errno, Env, STANDARD_SINK};
use crate::limits::{MAX_SCHEDULED_IMMEDIATE, MAX_SINK_BYTES};
use crate::logs::{now_micros, LogLevel, LogRecord};

/// The ABI module's import name.
pub const MODULE: &str = "spacetime_10.0";

/// Every function of `spacetime_10.0`; anything else a module imports is refused at load.
pub const FUNCTIONS: &[&str] = &[
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

/// Registers every `spacetime_10.0` function in `linker`, group by group.
pub fn link_v10_0(linker: &mut Linker<Env>) -> Result<()> {
    link_lookups(linker)?;
    link_scans(linker)?;
    link_row_iters(linker)?;
    link_writes(linker)?;
    link_deletes(linker)?;
    link_bytes(linker)?;
    link_console_log(linker)?;
    link_console_timers(linker)?;
    link_identity_and_scheduling(linker)?;
    Ok(())
}

/// Registers the name lookups and the row count: the calls that find a table or index.
fn link_lookups(linker: &mut Linker<Env>) -> Result<()> {
    let m = MODULE;
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
            env.read_table(table);
            let n = match db(env).and_then(|db| db.table(table).map(|t| t.len() as u64)) {
                Ok(n) => n,
                Err(e) => return store_errno(e),
            };
            write_bytes(mem, out, &n.to_le_bytes()).map(|_| 0)
        },
    )?;
    Ok(())
}

/// Registers the scans that open a row iterator: whole table and index range.
fn link_scans(linker: &mut Linker<Env>) -> Result<()> {
    let m = MODULE;
    linker.func_wrap(
        m,
        "datastore_table_scan_bsatn",
        |mut c: Caller<'_, Env>, table: u32, out: u32| -> Result<u32> {
            let (mem, env) = mem_env(&mut c)?;
            env.read_table(table);
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
                let found = db(env).and_then(|db| db.index_scan(index, prefix, prefix_elems, rstart, rend));
                if let Ok((table, _)) = &found {
                    env.read_table(*table);
                }
                answer_rows(mem, env, out, found)
            },
        )?;
    }
    Ok(())
}

/// Registers reading and closing the row iterators the scans open.
fn link_row_iters(linker: &mut Linker<Env>) -> Result<()> {
    let m = MODULE;
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
    Ok(())
}

/// Registers the row writes that hand generated columns back: insert and update.
fn link_writes(linker: &mut Linker<Env>) -> Result<()> {
    let m = MODULE;
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
    Ok(())
}

/// Registers the deletes: by index range and by equal rows.
fn link_deletes(linker: &mut Linker<Env>) -> Result<()> {
    let m = MODULE;
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
                answer_value(mem, out, deleted.map(u32::to_le_bytes))
            },
        )?;
    }
    linker.func_wrap(
        m,
        "datastore_delete_all_by_eq_bsatn",
        |mut c: Caller<'_, Env>, table: u32, rel_ptr: u32, rel_len: u32, out: u32| -> Result<u32> {
            let (mem, env) = mem_env(&mut c)?;
            let rel = slice(mem, rel_ptr, rel_len)?.to_vec();
            answer_value(mem, out, db(env).and_then(|db| db.delete_by_rel(table, &rel)).map(u32::to_le_bytes))
        },
    )?;
    Ok(())
}

/// Registers the byte source (reducer arguments) and the standard sink.
fn link_bytes(linker: &mut Linker<Env>) -> Result<()> {
    let m = MODULE;
    linker.func_wrap(
        m,
        "bytes_source_read",
        |mut c: Caller<'_, Env>, source: u32, buf_ptr: u32, buf_len_ptr: u32| -> Result<i32> {
            let (mem, env) = mem_env(&mut c)?;
            let Some(slot) = env.source_mut(source) else {
                return Ok(errno::NO_SUCH_BYTES as i32);
            };
            let (bytes, pos) = slot.as_mut().expect("source_mut returns open sources");
            let cap = read_u32(mem, buf_len_ptr)? as usize;
            let left = &bytes[*pos..];
            let n = cap.min(left.len());
            slice_mut(mem, buf_ptr, n as u32)?.copy_from_slice(&left[..n]);
            write_bytes(mem, buf_len_ptr, &(n as u32).to_le_bytes())?;
            if n == left.len() {
                *slot = None;
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
            if out.len() + len as usize > MAX_SINK_BYTES {
                return Ok(errno::NO_SPACE);
            }
            out.extend_from_slice(slice(mem, buf_ptr, len)?);
            Ok(0)
        },
    )?;
    Ok(())
}

/// Registers `console_log`, which also records a panic message with its wasm stack.
fn link_console_log(linker: &mut Linker<Env>) -> Result<()> {
    let m = MODULE;
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
                    function: env.function.as_deref().map(str::to_string),
                    system: false,
                });
                return Ok(());
            }
            env.log(level, target, file, line, message);
            Ok(())
        },
    )?;
    Ok(())
}

/// Registers the console timers, which log how long a named span took.
fn link_console_timers(linker: &mut Linker<Env>) -> Result<()> {
    let m = MODULE;
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
    Ok(())
}

/// Registers the module identity and scheduling a reducer right after the current one.
fn link_identity_and_scheduling(linker: &mut Linker<Env>) -> Result<()> {
    let m = MODULE;
    linker.func_wrap(m, "identity", |mut c: Caller<'_, Env>, out: u32| -> Result<()> {
        let (mem, env) = mem_env(&mut c)?;
        let id = env.module_identity;
        write_bytes(mem, out, &id.to_le_bytes())
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
            if env.scheduled_immediate.len() >= MAX_SCHEDULED_IMMEDIATE {
                bail!("too many reducers scheduled in one call");
            }
            env.scheduled_immediate.push((name, args));
            Ok(())
        },
    )?;
    Ok(())
}
