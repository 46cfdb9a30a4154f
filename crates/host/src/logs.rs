//! Module logs: what modules print through `console_log`, kept per database in a bounded ring.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

use crate::limits::{CUT_NOTE_ROOM, MAX_LOG_LINE_BYTES, MAX_LOG_RING_BYTES};

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
    /// The module's function that was running (a module's line), or the one a server line is
    /// about (a failed call): 2.x's `function` field.
    pub function: Option<String>,
    /// Written by the server, not the module (2.x marks these lines with its `__spacetimedb__`
    /// sentinels; 1.3 with the file names `spacetimedb` and `external`).
    pub system: bool,
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

/// The text a log line keeps of `bytes` (UTF-8, invalid sequences replaced): at most
/// [`MAX_LOG_LINE_BYTES`], cut with a note. Only the kept bytes are copied, so a module passing
/// 1 MiB to `console_log` costs 16 KiB, not 1 MiB held by a cut string's capacity.
pub fn bounded_text(bytes: &[u8]) -> String {
    let head = &bytes[..bytes.len().min(MAX_LOG_LINE_BYTES)];
    let mut text = String::from_utf8_lossy(head).into_owned();
    cut(&mut text, bytes.len() - head.len());
    text
}

/// Cuts `text` to at most [`MAX_LOG_LINE_BYTES`] (on a character boundary, note included) when
/// it is longer or `beyond` bytes were already left out after it; the kept string holds only
/// its own bytes.
fn cut(text: &mut String, beyond: usize) {
    if text.len() <= MAX_LOG_LINE_BYTES && beyond == 0 {
        return;
    }
    let mut end = text.len().min(MAX_LOG_LINE_BYTES - CUT_NOTE_ROOM);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let dropped = text.len() - end + beyond;
    text.truncate(end);
    text.push_str(&format!(" … [{dropped} more bytes cut]"));
    text.shrink_to_fit();
}

impl LogRecord {
    /// The heap bytes this record holds (capacities, not lengths: what it really costs).
    fn weight(&self) -> usize {
        let trace = self.trace.as_ref().map_or(0, |t| {
            t.capacity() * std::mem::size_of::<String>() + t.iter().map(String::capacity).sum::<usize>()
        });
        self.message.capacity()
            + self.function.as_ref().map_or(0, String::capacity)
            + self.target.as_ref().map_or(0, String::capacity)
            + self.filename.as_ref().map_or(0, String::capacity)
            + trace
            + std::mem::size_of::<Self>()
    }

    /// Cuts every text of the record to [`MAX_LOG_LINE_BYTES`] (on a character boundary) and
    /// drops spare capacity, so the ring's byte bound is the memory it holds.
    fn bound(&mut self) {
        let texts = [Some(&mut self.message), self.target.as_mut(), self.filename.as_mut(), self.function.as_mut()];
        for text in texts.into_iter().flatten() {
            cut(text, 0);
            text.shrink_to_fit();
        }
        if let Some(trace) = &mut self.trace {
            trace.truncate(256);
            trace.iter_mut().for_each(|f| {
                cut(f, 0);
                f.shrink_to_fit();
            });
            trace.shrink_to_fit();
        }
    }
}

/// A bounded, shareable log of one database: the oldest lines go first when it is full, by
/// count or by [`MAX_LOG_RING_BYTES`].
#[derive(Debug, Clone)]
pub struct ModuleLogs {
    inner: Arc<Mutex<LogRing>>,
}

#[derive(Debug)]
struct LogRing {
    records: VecDeque<LogRecord>,
    capacity: usize,
    /// The sum of the records' weights.
    bytes: usize,
    byte_capacity: usize,
    /// How many records were ever pushed; lets followers find the new ones.
    total: u64,
}

impl ModuleLogs {
    /// A ring of at most `capacity` lines and [`MAX_LOG_RING_BYTES`].
    pub fn new(capacity: usize) -> Self {
        Self::with_byte_capacity(capacity, MAX_LOG_RING_BYTES)
    }

    /// A ring of at most `capacity` lines and `byte_capacity` bytes.
    pub fn with_byte_capacity(capacity: usize, byte_capacity: usize) -> Self {
        let ring = LogRing { records: VecDeque::new(), capacity: capacity.max(1), bytes: 0, byte_capacity, total: 0 };
        Self { inner: Arc::new(Mutex::new(ring)) }
    }

    /// Appends a line (cut to [`MAX_LOG_LINE_BYTES`]), dropping the oldest past either bound.
    pub fn push(&self, mut record: LogRecord) {
        record.bound();
        let weight = record.weight();
        let mut ring = self.inner.lock();
        while !ring.records.is_empty()
            && (ring.records.len() >= ring.capacity || ring.bytes + weight > ring.byte_capacity)
        {
            let old = ring.records.pop_front().map_or(0, |r| r.weight());
            ring.bytes -= old;
        }
        ring.bytes += weight;
        ring.records.push_back(record);
        ring.total += 1;
        debug_assert_eq!(ring.bytes, ring.records.iter().map(LogRecord::weight).sum::<usize>());
    }

    /// The bytes the ring holds now.
    pub fn bytes(&self) -> usize {
        self.inner.lock().bytes
    }

    /// The heap bytes the ring's texts hold (their capacities), counted afresh: what the ring
    /// really keeps alive, for tests of its bound.
    pub fn retained_bytes(&self) -> usize {
        let texts = |r: &LogRecord| {
            let trace = r.trace.as_ref().map_or(0, |t| t.iter().map(String::capacity).sum::<usize>());
            r.message.capacity()
                + r.target.as_ref().map_or(0, String::capacity)
                + r.filename.as_ref().map_or(0, String::capacity)
                + trace
        };
        self.inner.lock().records.iter().map(texts).sum()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn line(message: String) -> LogRecord {
        LogRecord {
            level: LogLevel::Info,
            ts_micros: 0,
            target: None,
            filename: Some("src/lib.rs".into()),
            line_number: Some(1),
            message,
            trace: None,
            function: None,
            system: false,
        }
    }

    #[test]
    fn huge_lines_are_cut_and_the_ring_is_bounded_in_bytes() {
        let logs = ModuleLogs::new(10_000);
        // A reducer logging 1 MiB a thousand times (issue 10, defect 7).
        for _ in 0..1_000 {
            logs.push(line("x".repeat(1 << 20)));
        }
        assert!(logs.bytes() <= MAX_LOG_RING_BYTES, "{} bytes held", logs.bytes());
        let last = logs.tail(Some(20));
        assert_eq!(last.len(), 20);
        assert!(last.iter().all(|r| r.message.len() < MAX_LOG_LINE_BYTES + 64));
        assert!(last[0].message.ends_with("more bytes cut]"), "{}", &last[0].message[MAX_LOG_LINE_BYTES - 8..]);
        assert_eq!(logs.total(), 1_000);
    }

    /// A module passing 1 MiB to `console_log` 512 times: the ring holds at most its byte
    /// bound in real memory (capacities), not 512 cut strings of 1 MiB capacity each.
    #[test]
    fn the_rings_retained_capacity_stays_bounded_for_huge_lines() {
        let logs = ModuleLogs::new(10_000);
        let huge = vec![b'x'; 1 << 20];
        for i in 0..512 {
            // As the ABI reads it, or as a caller of `push` may build it: 1 MiB, cut by the ring.
            let message = if i % 2 == 0 { bounded_text(&huge) } else { String::from_utf8_lossy(&huge).into_owned() };
            logs.push(line(message));
        }
        let retained = logs.retained_bytes();
        assert!(retained <= logs.bytes() && logs.bytes() <= MAX_LOG_RING_BYTES, "{retained} bytes retained");
        let last = logs.tail(Some(1)).remove(0);
        assert!(last.message.len() <= MAX_LOG_LINE_BYTES, "{}", last.message.len());
        let note = format!(" … [{} more bytes cut]", (1 << 20) - (MAX_LOG_LINE_BYTES - CUT_NOTE_ROOM));
        assert!(last.message.ends_with(&note), "{}", &last.message[last.message.len() - 40..]);
        // Cutting again changes nothing; a short text is kept whole.
        let mut again = last.message.clone();
        cut(&mut again, 0);
        assert_eq!(again, last.message);
        assert_eq!(bounded_text("é ok".as_bytes()), "é ok");
    }

    #[test]
    fn small_lines_are_bounded_by_count_and_kept_whole() {
        let logs = ModuleLogs::with_byte_capacity(3, 1 << 20);
        for i in 0..5 {
            logs.push(line(format!("line {i} é")));
        }
        let kept: Vec<String> = logs.tail(None).into_iter().map(|r| r.message).collect();
        assert_eq!(kept, ["line 2 é", "line 3 é", "line 4 é"]);
        // A cut never splits a character.
        let logs = ModuleLogs::new(4);
        logs.push(line("é".repeat(MAX_LOG_LINE_BYTES)));
        assert!(logs.tail(None)[0].message.starts_with('é'));
    }
}
