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

/// The ABI's import module name.
pub const ABI_MODULE: &str = v10_0::MODULE;

/// Every function of `spacetime_10.0`; anything else a module imports is refused at load.
pub const ABI_FUNCTIONS: &[&str] = v10_0::FUNCTIONS;

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
    pub module_identity: epoch_sats::Identity,
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
    pub fn new(module_identity: epoch_sats::Identity, logs: ModuleLogs, memory_max_bytes: usize) -> Self {
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

/// Registers every ABI module's functions in `linker`.
pub fn link(linker: &mut Linker<Env>) -> Result<()> {
    v10_0::link_v10_0(linker)
}
