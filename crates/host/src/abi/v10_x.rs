//! The ABI modules SpacetimeDB 2.x added after `spacetime_10.0`: `10.1` (a byte source's unread
//! length), `10.2` (a connection's token), `10.3` (what only procedures may call), `10.4` (point
//! scans, behind every `.find()`), `10.5` (clearing a table) and `10.6` (environment values).
//! Each function keeps 2.x's errno codes.

use wasmtime::{bail, Caller, Linker, Result};

use super::datastore::{collect_rows, db, open_iter, store_errno};
use super::memory::{mem_env, slice, write_bytes};
use super::{errno, Env};
use epoch_store::StoreError;

/// Registers every function of `spacetime_10.1` to `spacetime_10.6`.
pub fn link_v10_x(linker: &mut Linker<Env>) -> Result<()> {
    link_bytes_and_token(linker)?;
    link_procedure_only(linker)?;
    link_point_scans(linker)?;
    link_clear_and_env(linker)?;
    Ok(())
}

/// `bytes_source_remaining_length` (10.1) and `get_jwt` (10.2).
fn link_bytes_and_token(linker: &mut Linker<Env>) -> Result<()> {
    linker.func_wrap(
        "spacetime_10.1",
        "bytes_source_remaining_length",
        |mut c: Caller<'_, Env>, source: u32, out: u32| -> Result<i32> {
            let (mem, env) = mem_env(&mut c)?;
            let Some(Some((bytes, pos))) = env.source_mut(source) else {
                return Ok(errno::NO_SUCH_BYTES as i32);
            };
            let left = (bytes.len() - *pos) as u32;
            write_bytes(mem, out, &left.to_le_bytes()).map(|_| 0)
        },
    )?;
    linker.func_wrap(
        "spacetime_10.2",
        "get_jwt",
        |mut c: Caller<'_, Env>, conn_ptr: u32, out: u32| -> Result<u32> {
            let (mem, env) = mem_env(&mut c)?;
            let connection_id: [u8; 16] = slice(mem, conn_ptr, 16)?.try_into().expect("16 bytes");
            if db(env).is_err() {
                return Ok(errno::NOT_IN_TRANSACTION);
            }
            // No token for this connection: handle 0, the invalid source.
            let handle = match env.connection_jwts.get(&connection_id) {
                Some(payload) => match env.open_source(payload.as_bytes().to_vec()) {
                    Some(h) => h,
                    None => return Ok(errno::NO_SPACE),
                },
                None => 0,
            };
            write_bytes(mem, out, &handle.to_le_bytes()).map(|_| 0)
        },
    )?;
    Ok(())
}

/// The 10.3 functions, which only a procedure may call: a reducer or view calling one traps,
/// as it does in 2.x, whose reducer instances link them as traps.
fn link_procedure_only(linker: &mut Linker<Env>) -> Result<()> {
    let m = "spacetime_10.3";
    let refuse = |name: &str| format!("`{name}` can only be called from a procedure");
    linker.func_wrap(m, "procedure_sleep_until", move |_: Caller<'_, Env>, _at: i64| -> Result<i64> {
        bail!(refuse("procedure_sleep_until"))
    })?;
    linker.func_wrap(m, "procedure_start_mut_tx", move |_: Caller<'_, Env>, _out: u32| -> Result<u32> {
        bail!(refuse("procedure_start_mut_tx"))
    })?;
    linker.func_wrap(m, "procedure_commit_mut_tx", move |_: Caller<'_, Env>| -> Result<u32> {
        bail!(refuse("procedure_commit_mut_tx"))
    })?;
    linker.func_wrap(m, "procedure_abort_mut_tx", move |_: Caller<'_, Env>| -> Result<u32> {
        bail!(refuse("procedure_abort_mut_tx"))
    })?;
    linker.func_wrap(
        m,
        "procedure_http_request",
        move |_: Caller<'_, Env>, _: u32, _: u32, _: u32, _: u32, _: u32| -> Result<u32> {
            bail!(refuse("procedure_http_request"))
        },
    )?;
    Ok(())
}

/// The point scans of 10.4: rows whose key equals a BSATN point, read or deleted.
fn link_point_scans(linker: &mut Linker<Env>) -> Result<()> {
    let m = "spacetime_10.4";
    linker.func_wrap(
        m,
        "datastore_index_scan_point_bsatn",
        |mut c: Caller<'_, Env>, index: u32, point_ptr: u32, point_len: u32, out: u32| -> Result<u32> {
            let (mem, env) = mem_env(&mut c)?;
            let point = slice(mem, point_ptr, point_len)?;
            let found = db(env).and_then(|db| {
                let (table, rows) = db.index_point_scan(index, point)?;
                let t = db.table(table)?;
                let rows = rows.iter().map(|r| t.get(*r).ok_or(StoreError::Corrupt)).collect::<Result<Vec<_>, _>>()?;
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
    linker.func_wrap(
        m,
        "datastore_delete_by_index_scan_point_bsatn",
        |mut c: Caller<'_, Env>, index: u32, point_ptr: u32, point_len: u32, out: u32| -> Result<u32> {
            let (mem, env) = mem_env(&mut c)?;
            let point = slice(mem, point_ptr, point_len)?.to_vec();
            match db(env).and_then(|db| db.delete_by_index_point(index, &point)) {
                Ok(n) => write_bytes(mem, out, &n.to_le_bytes()).map(|_| 0),
                Err(e) => store_errno(e),
            }
        },
    )?;
    Ok(())
}

/// `datastore_clear` (10.5) and `env_get` (10.6).
fn link_clear_and_env(linker: &mut Linker<Env>) -> Result<()> {
    linker.func_wrap(
        "spacetime_10.5",
        "datastore_clear",
        |mut c: Caller<'_, Env>, table: u32, out: u32| -> Result<u32> {
            let (mem, env) = mem_env(&mut c)?;
            match db(env).and_then(|db| db.clear(table)) {
                Ok(n) => write_bytes(mem, out, &n.to_le_bytes()).map(|_| 0),
                Err(e) => store_errno(e),
            }
        },
    )?;
    // A module only reads environment values it declared, and a module that declares any is
    // refused at publish (the Environment section is not served yet): every key is undeclared.
    linker.func_wrap(
        "spacetime_10.6",
        "env_get",
        |mut c: Caller<'_, Env>, _key_ptr: u32, _key_len: u32, _out: u32| -> Result<u32> {
            let (_, env) = mem_env(&mut c)?;
            if db(env).is_err() {
                return Ok(errno::NOT_IN_TRANSACTION);
            }
            Ok(errno::HOST_CALL_FAILURE)
        },
    )?;
    Ok(())
}
