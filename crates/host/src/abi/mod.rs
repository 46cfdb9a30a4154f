//! The module ABI: the state host functions work on, its errno codes, and `link`, which
//! registers every ABI module's imports (one submodule per ABI module). Out-of-bounds pointers
//! trap; database failures return an errno.

use std::time::Instant;

use epoch_store::Store as Db;
use wasmtime::{Linker, Memory, ResourceLimiter, Result};

use crate::logs::{now_micros, LogLevel, LogRecord, ModuleLogs};

mod datastore;
mod memory;
mod v10_0;
mod v10_x;

/// Every ABI module a module may import from, with its functions: `spacetime_10.0` (what 1.3
/// modules use) and the minor versions 2.x added. Anything else a module imports is refused at
/// load.
pub const ABI_MODULES: &[(&str, &[&str])] = &[
    (v10_0::MODULE, v10_0::FUNCTIONS),
    ("spacetime_10.1", &["bytes_source_remaining_length"]),
    ("spacetime_10.2", &["get_jwt"]),
    (
        "spacetime_10.3",
        &[
            "procedure_sleep_until",
            "procedure_start_mut_tx",
            "procedure_commit_mut_tx",
            "procedure_abort_mut_tx",
            "procedure_http_request",
        ],
    ),
    ("spacetime_10.4", &["datastore_index_scan_point_bsatn", "datastore_delete_by_index_scan_point_bsatn"]),
    ("spacetime_10.5", &["datastore_clear"]),
    ("spacetime_10.6", &["env_get"]),
];

/// Whether `module`.`name` is a function of the ABI this host implements.
pub fn is_abi_import(module: &str, name: &str) -> bool {
    ABI_MODULES.iter().any(|(m, functions)| *m == module && functions.contains(&name))
}

/// Error numbers of the module ABI (`spacetimedb_primitives::errno` in 1.3).
pub mod errno {
    pub const HOST_CALL_FAILURE: u32 = 1;
    pub const NOT_IN_TRANSACTION: u32 = 2;
    pub const BSATN_DECODE_ERROR: u32 = 3;
    pub const NO_SUCH_TABLE: u32 = 4;
    pub const NO_SUCH_INDEX: u32 = 5;
    pub const NO_SUCH_ITER: u32 = 6;
    pub const NO_SUCH_CONSOLE_TIMER: u32 = 7;
    pub const NO_SUCH_BYTES: u32 = 8;
    pub const NO_SPACE: u32 = 9;
    pub const WRONG_INDEX_ALGO: u32 = 10;
    pub const BUFFER_TOO_SMALL: u32 = 11;
    pub const UNIQUE_ALREADY_EXISTS: u32 = 12;
    pub const SCHEDULE_AT_DELAY_TOO_LONG: u32 = 13;
    pub const INDEX_NOT_UNIQUE: u32 = 14;
    pub const NO_SUCH_ROW: u32 = 15;
    pub const AUTO_INC_OVERFLOW: u32 = 16;
    pub const WOULD_BLOCK_TRANSACTION: u32 = 17;
    pub const TRANSACTION_NOT_ANONYMOUS: u32 = 18;
    pub const TRANSACTION_IS_READ_ONLY: u32 = 19;
    pub const TRANSACTION_IS_MUT: u32 = 20;
    pub const HTTP_ERROR: u32 = 21;
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
    pub module_identity: epoch_sats::Identity,
    pub logs: ModuleLogs,
    pub limiter: MemoryCap,
    /// Byte sources the module may read (handle = position + 1; the call's arguments are
    /// handle 1), each with its read position; `None` once read to the end.
    sources: Vec<Option<(Vec<u8>, usize)>>,
    /// The JWT payloads (claims JSON) of the connected clients, by connection id, shared with
    /// the database (2.x's `st_connection_credentials`, read through `get_jwt`).
    pub connection_jwts: ConnectionJwts,
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
    /// Set on a procedure's instance: how its transactions, sleeps and requests are served.
    pub procedure: Option<crate::procedure::ProcedureEnv>,
    /// The module's function being run (reducer, procedure or view), named in its log lines.
    pub function: Option<std::sync::Arc<str>>,
    /// Set while a view runs: what it reads (see [`crate::ReadSet`]).
    pub reads: Option<crate::ReadSet>,
}

impl Env {
    pub fn new(module_identity: epoch_sats::Identity, logs: ModuleLogs, memory_max_bytes: usize) -> Self {
        Self {
            db: None,
            memory: None,
            module_identity,
            logs,
            limiter: MemoryCap { max_bytes: memory_max_bytes, denied: false },
            sources: Vec::new(),
            connection_jwts: ConnectionJwts::default(),
            sink: None,
            iters: Vec::new(),
            timers: Vec::new(),
            panic_message: None,
            scheduled_immediate: Vec::new(),
            max_open_iters: 4096,
            procedure: None,
            function: None,
            reads: None,
        }
    }

    /// Notes that the running view read table `table` whole (or by a range).
    fn read_table(&mut self, table: u32) {
        if let Some(reads) = self.reads.as_mut() {
            reads.table(table);
        }
    }

    /// Prepares a call: installs the argument source (handle 0 when empty) and a fresh sink.
    pub fn start_call(&mut self, args: Vec<u8>, function: Option<std::sync::Arc<str>>) -> (u32, u32) {
        self.function = function;
        self.sink = Some(Vec::new());
        self.panic_message = None;
        self.limiter.denied = false;
        self.sources.clear();
        let source = if args.is_empty() {
            0
        } else {
            self.sources.push(Some((args, 0)));
            ARGS_SOURCE
        };
        (source, STANDARD_SINK)
    }

    /// Registers bytes for the module to read; returns the source's handle, or `None` when too
    /// many sources are open.
    fn open_source(&mut self, bytes: Vec<u8>) -> Option<u32> {
        if self.sources.len() >= crate::limits::MAX_OPEN_BYTES_SOURCES {
            return None;
        }
        self.sources.push(Some((bytes, 0)));
        Some(self.sources.len() as u32)
    }

    /// The unread bytes of source `handle` with their read position, if it is open.
    fn source_mut(&mut self, handle: u32) -> Option<&mut Option<(Vec<u8>, usize)>> {
        let slot = self.sources.get_mut(handle.checked_sub(1)? as usize)?;
        slot.is_some().then_some(slot)
    }

    /// Ends a call, returning what the module wrote to the sink; drops per-call handles.
    pub fn finish_call(&mut self) -> Vec<u8> {
        self.sources.clear();
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
            function: self.function.as_deref().map(str::to_string),
            system: false,
        });
    }
}

/// Registers every ABI module's functions in `linker`.
pub fn link(linker: &mut Linker<Env>) -> Result<()> {
    v10_0::link_v10_0(linker)?;
    v10_x::link_v10_x(linker)
}

/// The JWT payload of each connected client that presented a token, by connection id
/// (little-endian bytes). Shared between the database, which fills it as clients come and go,
/// and the module instance, which reads it through `get_jwt`.
#[derive(Debug, Clone, Default)]
pub struct ConnectionJwts(std::sync::Arc<std::sync::Mutex<std::collections::HashMap<[u8; 16], std::sync::Arc<str>>>>);

impl ConnectionJwts {
    /// Records (or, with `None`, forgets) the token payload of a connection.
    pub fn set(&self, connection_id: [u8; 16], payload: Option<std::sync::Arc<str>>) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match payload {
            Some(p) => map.insert(connection_id, p),
            None => map.remove(&connection_id),
        };
    }

    pub fn get(&self, connection_id: &[u8; 16]) -> Option<std::sync::Arc<str>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).get(connection_id).cloned()
    }

    /// Every connection's payload, by connection id (2.x's `st_connection_credentials`).
    pub fn entries(&self) -> Vec<([u8; 16], std::sync::Arc<str>)> {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.iter().map(|(id, payload)| (*id, payload.clone())).collect()
    }
}
