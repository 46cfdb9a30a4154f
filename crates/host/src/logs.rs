//! Module logs: what modules print through `console_log`, kept per database in a bounded ring.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

/// A log level as the ABI numbers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
    Panic,
}

impl LogLevel {
    /// The level for an ABI level byte; unknown values count as `Info`.
    pub fn from_abi(level: u8) -> Self {
        match level {
            0 => Self::Error,
            1 => Self::Warn,
            2 => Self::Info,
            3 => Self::Debug,
            4 => Self::Trace,
            101 => Self::Panic,
            _ => Self::Info,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Error => "Error",
            Self::Warn => "Warn",
            Self::Info => "Info",
            Self::Debug => "Debug",
            Self::Trace => "Trace",
            Self::Panic => "Panic",
        }
    }
}

/// One line a module logged.
#[derive(Debug, Clone, PartialEq)]
pub struct LogRecord {
    pub level: LogLevel,
    /// Microseconds since the Unix epoch.
    pub ts_micros: i64,
    pub target: Option<String>,
    pub filename: Option<String>,
    pub line_number: Option<u32>,
    pub message: String,
    /// For panics: the wasm call stack, innermost first, as function names.
    pub trace: Option<Vec<String>>,
}

impl LogRecord {
    /// The JSON line SpacetimeDB's `/logs` route streams for a record.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "level": self.level.as_str(),
            "ts": self.ts_micros,
            "target": self.target,
            "filename": self.filename,
            "line_number": self.line_number,
            "message": self.message,
            "trace": self.trace.as_ref().map(|t| t.iter().map(|f| serde_json::json!({"func_name": f})).collect::<Vec<_>>()),
        })
    }
}

pub fn now_micros() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as i64).unwrap_or(0)
}

/// A bounded, shareable log of one database: the oldest lines go first when it is full.
#[derive(Debug, Clone)]
pub struct ModuleLogs {
    inner: Arc<Mutex<LogRing>>,
}

#[derive(Debug)]
struct LogRing {
    records: VecDeque<LogRecord>,
    capacity: usize,
    /// How many records were ever pushed; lets followers find the new ones.
    total: u64,
}

impl ModuleLogs {
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self { inner: Arc::new(Mutex::new(LogRing { records: VecDeque::new(), capacity, total: 0 })) }
    }

    pub fn push(&self, record: LogRecord) {
        let mut ring = self.inner.lock();
        if ring.records.len() == ring.capacity {
            ring.records.pop_front();
        }
        ring.records.push_back(record);
        ring.total += 1;
    }

    /// The last `n` records (all of them if `n` is `None`), oldest first.
    pub fn tail(&self, n: Option<usize>) -> Vec<LogRecord> {
        let ring = self.inner.lock();
        let skip = n.map_or(0, |n| ring.records.len().saturating_sub(n));
        ring.records.iter().skip(skip).cloned().collect()
    }

    /// Records pushed after the first `seen` ever pushed, and the new total.
    pub fn since(&self, seen: u64) -> (Vec<LogRecord>, u64) {
        let ring = self.inner.lock();
        let new = (ring.total - seen.min(ring.total)).min(ring.records.len() as u64) as usize;
        let skip = ring.records.len() - new;
        (ring.records.iter().skip(skip).cloned().collect(), ring.total)
    }

    pub fn total(&self) -> u64 {
        self.inner.lock().total
    }
}
