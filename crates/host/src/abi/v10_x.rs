//! The ABI modules SpacetimeDB 2.x added after `spacetime_10.0`: `10.1` (a byte source's unread
//! length), `10.2` (a connection's token), `10.3` (what only procedures may call), `10.4` (point
//! scans, behind every `.find()`), `10.5` (clearing a table) and `10.6` (environment values).
//! Each function keeps 2.x's errno codes.

use std::time::{Duration, Instant};

use wasmtime::{bail, format_err as anyhow, Caller, Linker, Result};

use super::datastore::{answer_rows, answer_value, db};
use super::memory::{mem_env, slice, write_bytes};
use super::{errno, Env};
use crate::logs::now_micros;
use crate::procedure::ProcedureEnv;

/// Registers every function of `spacetime_10.1` to `spacetime_10.6`.
pub fn link_v10_x(linker: &mut Linker<Env>) -> Result<()> {
    link_bytes_and_token(linker)?;
    link_procedure_calls(linker)?;
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

/// The procedure state of the calling instance, or a trap: a reducer or view calling a 10.3
/// function traps, as it does in 2.x, whose reducer instances link them as traps.
fn procedure<'a>(env: &'a mut Env, name: &str) -> Result<&'a mut ProcedureEnv> {
    match env.procedure.as_mut() {
        Some(p) => Ok(p),
        None => bail!("`{name}` can only be called from a procedure"),
    }
}

/// A procedure's own transactions: start (borrowing the store from the writer), commit, abort.
fn link_procedure_tx(linker: &mut Linker<Env>) -> Result<()> {
    let m = "spacetime_10.3";
    linker.func_wrap(m, "procedure_start_mut_tx", |mut c: Caller<'_, Env>, out: u32| -> Result<u32> {
        let (mem, env) = mem_env(&mut c)?;
        if env.db.is_some() {
            return Ok(errno::WOULD_BLOCK_TRANSACTION);
        }
        let p = procedure(env, "procedure_start_mut_tx")?;
        let (db, timestamp) = p.tx.start().map_err(|e| anyhow!(e))?;
        // From now on the writer waits: the transaction gets a reducer's time (ProcedureEnv).
        p.tx_opened = Some(Instant::now());
        env.db = Some(db);
        write_bytes(mem, out, &timestamp.to_le_bytes()).map(|_| 0)
    })?;
    linker.func_wrap(m, "procedure_commit_mut_tx", |mut c: Caller<'_, Env>| -> Result<u32> {
        let env = c.data_mut();
        procedure(env, "procedure_commit_mut_tx")?;
        let Some(db) = env.db.take() else { return Ok(errno::TRANSACTION_NOT_ANONYMOUS) };
        // A commit the database could not make fails the procedure, as in 2.x.
        let p = procedure(env, "procedure_commit_mut_tx")?;
        p.tx_opened = None;
        p.tx.commit(db).map_err(|e| anyhow!(e))?;
        Ok(0)
    })?;
    linker.func_wrap(m, "procedure_abort_mut_tx", |mut c: Caller<'_, Env>| -> Result<u32> {
        let env = c.data_mut();
        procedure(env, "procedure_abort_mut_tx")?;
        let Some(db) = env.db.take() else { return Ok(errno::TRANSACTION_NOT_ANONYMOUS) };
        let p = procedure(env, "procedure_abort_mut_tx")?;
        p.tx_opened = None;
        p.tx.abort(db);
        Ok(0)
    })?;
    Ok(())
}

/// The 10.3 functions: sleeping, a procedure's own transactions, and HTTP requests.
fn link_procedure_calls(linker: &mut Linker<Env>) -> Result<()> {
    link_procedure_tx(linker)?;
    link_sleep_and_http(linker)
}

/// Sleeping and HTTP requests, which a procedure may do only with no transaction open.
fn link_sleep_and_http(linker: &mut Linker<Env>) -> Result<()> {
    let m = "spacetime_10.3";
    linker.func_wrap(m, "procedure_sleep_until", |mut c: Caller<'_, Env>, at: i64| -> Result<i64> {
        let p = procedure(c.data_mut(), "procedure_sleep_until")?;
        let now = now_micros();
        if at > now {
            // Never past the procedure's own deadline: the time limit stops it there.
            let wait =
                Duration::from_micros((at - now) as u64).min(p.deadline.saturating_duration_since(Instant::now()));
            std::thread::sleep(wait);
        }
        Ok(now_micros())
    })?;
    linker.func_wrap(
        m,
        "procedure_http_request",
        |mut c: Caller<'_, Env>, req_ptr: u32, req_len: u32, body_ptr: u32, body_len: u32, out: u32| -> Result<u32> {
            let (mem, env) = mem_env(&mut c)?;
            let allow_loopback = procedure(env, "procedure_http_request")?.allow_loopback_http;
            if env.db.is_some() {
                return Ok(errno::WOULD_BLOCK_TRANSACTION);
            }
            let request = slice(mem, req_ptr, req_len)?.to_vec();
            let body = slice(mem, body_ptr, body_len)?.to_vec();
            let deadline = procedure(env, "procedure_http_request")?.deadline;
            let answer = match crate::http::send(&request, body, allow_loopback, deadline) {
                Ok(answer) => answer,
                Err(crate::http::HttpError::BadRequest) => return Ok(errno::BSATN_DECODE_ERROR),
                Err(crate::http::HttpError::Failed(message)) => {
                    let mut bytes = Vec::new();
                    epoch_sats::bsatn::write::str(&mut bytes, &message);
                    let Some(h) = env.open_source(bytes) else { return Ok(errno::NO_SPACE) };
                    write_bytes(mem, out, &h.to_le_bytes())?;
                    return Ok(errno::HTTP_ERROR);
                }
            };
            let (Some(head), Some(body)) = (env.open_source(answer.head), env.open_source(answer.body)) else {
                return Ok(errno::NO_SPACE);
            };
            write_bytes(mem, out, &head.to_le_bytes())?;
            write_bytes(mem, out + 4, &body.to_le_bytes()).map(|_| 0)
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
            let found = db(env).and_then(|db| db.index_point_scan(index, point));
            if let (Ok((table, _)), Some(reads)) = (&found, env.reads.as_mut()) {
                reads.point(*table, index, point);
            }
            answer_rows(mem, env, out, found)
        },
    )?;
    linker.func_wrap(
        m,
        "datastore_delete_by_index_scan_point_bsatn",
        |mut c: Caller<'_, Env>, index: u32, point_ptr: u32, point_len: u32, out: u32| -> Result<u32> {
            let (mem, env) = mem_env(&mut c)?;
            let point = slice(mem, point_ptr, point_len)?;
            let deleted = db(env).and_then(|db| db.delete_by_index_point(index, point));
            answer_value(mem, out, deleted.map(u32::to_le_bytes))
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
            answer_value(mem, out, db(env).and_then(|db| db.clear(table)).map(u64::to_le_bytes))
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
