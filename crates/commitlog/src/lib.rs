//! # epoch-commitlog
//!
//! The durable record of a database: committed transactions appended to segment files, each
//! frame `[len u32][crc32c u32][record]`, and snapshots of all rows at a log offset.
//!
//! - [`CommitLog`] owns a writer thread. Appends queue up while it fsyncs, so one fsync covers
//!   every transaction that arrived meanwhile (group commit); [`CommitLog::on_durable`] runs a
//!   callback once a given offset is on disk, which is how callers acknowledge only durable work.
//!   [`Durability::Async`] instead acknowledges after the write and fsyncs on a timer.
//! - [`read_log`] replays the log: a torn last frame (a crash mid-write) is cut off; a bad frame
//!   followed by more data is corruption, reported with its segment and byte offset, unless the
//!   caller chooses to keep only what comes before it.
//! - [`write_snapshot`] / [`read_latest_snapshot`] store and find the newest valid snapshot.
//!
//! Not for: knowing what rows mean (the store applies them).

pub mod limits;
mod record;
mod snapshot;

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, Receiver, Sender};

pub use record::{AppliedSteps, SequenceState, TableChange, TxRecord, WorkflowStep};
pub use snapshot::{read_latest_snapshot, write_snapshot, PackedRows, Snapshot, SnapshotError};

use crate::limits::{MAX_BATCH, MAX_RECORD_BYTES, WRITE_RETRY_INTERVAL};

/// Every segment starts with these bytes.
const SEGMENT_MAGIC: &[u8; 8] = b"EPOCHLG1";
/// Bytes of a frame header: length and checksum.
const FRAME_HEADER: usize = 8;

/// When a commit counts as done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Acknowledge after fsync (group commit). Nothing acknowledged is ever lost.
    Sync,
    /// Acknowledge after the write reaches the OS; fsync every `interval`. A machine crash (not
    /// a process crash) can lose up to `interval` of acknowledged transactions.
    Async { interval: Duration },
}

/// How the log is kept.
#[derive(Debug, Clone)]
pub struct LogConfig {
    pub dir: PathBuf,
    pub durability: Durability,
    /// A segment is closed and a new one started past this size.
    pub segment_max_bytes: u64,
    /// Test-only: decides whether each write and fsync of the log fails (see [`IoFaults`]).
    pub faults: Option<Arc<dyn IoFaults>>,
}

/// A seam between the log's writer and its files, for tests, the way SQLite's test file
/// system injects I/O errors: asked before every write and every fsync, it may make that call
/// fail. A failed write reaches the file only in part.
pub trait IoFaults: Send + Sync + std::fmt::Debug {
    /// An error for the next write, if it is to fail.
    fn write(&self) -> Option<std::io::Error>;
    /// An error for the next fsync, if it is to fail.
    fn sync(&self) -> Option<std::io::Error>;
}

/// An [`IoFaults`] for tests that fails the next fsync (EIO) once armed, and counts the
/// failures it injected.
#[derive(Debug, Default)]
pub struct FailNextSync {
    /// Set to fail the next fsync of any log opened with this seam (cleared when it fires).
    pub armed: std::sync::atomic::AtomicBool,
    /// How many fsyncs it failed.
    pub fired: std::sync::atomic::AtomicUsize,
}

impl IoFaults for FailNextSync {
    fn write(&self) -> Option<std::io::Error> {
        None
    }

    fn sync(&self) -> Option<std::io::Error> {
        self.armed.swap(false, Ordering::SeqCst).then(|| {
            self.fired.fetch_add(1, Ordering::SeqCst);
            std::io::Error::from_raw_os_error(5) // EIO
        })
    }
}

/// Why the log could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("commitlog I/O error at {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(
        "commitlog is corrupt in segment {segment} at byte {byte_offset} (after transaction offset {last_good:?}): {reason}; \
         start with --recover-truncate to keep only the transactions before it"
    )]
    Corrupt { segment: PathBuf, byte_offset: u64, last_good: Option<u64>, reason: String },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> LogError + '_ {
    move |source| LogError::Io { path: path.to_path_buf(), source }
}

fn segment_name(start_offset: u64) -> String {
    format!("{start_offset:020}.log")
}

/// The segments in `dir`, sorted by their first offset.
fn segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, LogError> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(io_err(dir)(e)),
    };
    for entry in entries {
        let path = entry.map_err(io_err(dir))?.path();
        let start =
            path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".log")).and_then(|n| n.parse().ok());
        if let Some(start) = start {
            out.push((start, path));
        }
    }
    out.sort();
    Ok(out)
}

/// The segment files of the log in `dir` as (first offset, path), oldest first. Every segment
/// but the last is closed and never written again.
pub fn segment_files(dir: &Path) -> Result<Vec<(u64, PathBuf)>, LogError> {
    segments(dir)
}

/// Cuts the log in `dir` so that its last record is `offset`: the segment holding `offset + 1`
/// is shortened before that record and every later segment removed (a restore to a point in
/// time). Records are counted from each segment's first offset, as the writer numbers them.
pub fn cut_after(dir: &Path, offset: u64) -> Result<(), LogError> {
    for (start, path) in segments(dir)? {
        if start > offset {
            std::fs::remove_file(&path).map_err(io_err(&path))?;
            continue;
        }
        let bytes = std::fs::read(&path).map_err(io_err(&path))?;
        let mut pos = SEGMENT_MAGIC.len();
        let mut next = start;
        while next <= offset && pos + FRAME_HEADER <= bytes.len() {
            let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into().unwrap_or_default()) as usize;
            pos += FRAME_HEADER + len;
            match next.checked_add(1) {
                Some(n) => next = n,
                // The record numbered u64::MAX is the last there can be.
                None => break,
            }
        }
        if pos < bytes.len() {
            let f = OpenOptions::new().write(true).open(&path).map_err(io_err(&path))?;
            f.set_len(pos.min(bytes.len()) as u64).map_err(io_err(&path))?;
            f.sync_all().map_err(io_err(&path))?;
        }
    }
    Ok(())
}

/// What replaying the log found.
#[derive(Debug, Default)]
pub struct Replay {
    pub records: Vec<TxRecord>,
    /// Bytes cut off the end of the last segment (a torn write), if any.
    pub torn_bytes: u64,
    /// Set when corruption was skipped on request: where the log was cut.
    pub truncated_at: Option<(PathBuf, u64)>,
}

/// Where and why a segment stops being readable: (byte offset, reason, whether it is a torn
/// write at the end of the log rather than corruption).
type Problem = (u64, String, bool);

/// Reads every record with an offset of at least `from_offset`. A torn last frame is cut off the
/// file. A bad frame followed by more data is [`LogError::Corrupt`], unless `truncate_corruption`,
/// in which case the log is cut there (and later segments removed).
pub fn read_log(dir: &Path, from_offset: u64, truncate_corruption: bool) -> Result<Replay, LogError> {
    let segs = segments(dir)?;
    let mut replay = Replay::default();
    let mut expected: Option<u64> = None;
    for (i, (start, path)) in segs.iter().enumerate() {
        let is_last = i + 1 == segs.len();
        let bytes = std::fs::read(path).map_err(io_err(path))?;
        let problem = read_segment(&bytes, *start, is_last, from_offset, &mut expected, &mut replay.records);
        let Some((byte, reason, torn)) = problem else { continue };
        if !torn && !truncate_corruption {
            return Err(LogError::Corrupt {
                segment: path.clone(),
                byte_offset: byte,
                last_good: expected.map(|e| e - 1),
                reason,
            });
        }
        cut_log(&segs, i, &bytes, (byte, torn), &mut replay)?;
        break;
    }
    Ok(replay)
}

/// Reads one segment (named after its first offset, `start`) into `records`, keeping those at
/// or after `from_offset` and checking each offset follows `expected`; returns the first
/// problem found, if any. Split out of [`read_log`] so each check stays readable.
fn read_segment(
    bytes: &[u8],
    start: u64,
    is_last: bool,
    from_offset: u64,
    expected: &mut Option<u64>,
    records: &mut Vec<TxRecord>,
) -> Option<Problem> {
    if bytes.len() < SEGMENT_MAGIC.len() || &bytes[..SEGMENT_MAGIC.len()] != SEGMENT_MAGIC {
        return Some((0, "bad segment header".into(), is_last && bytes.len() < SEGMENT_MAGIC.len()));
    }
    let mut pos = SEGMENT_MAGIC.len();
    while pos < bytes.len() {
        let (rec, frame_end) = match read_frame(bytes, pos, is_last) {
            Ok(frame) => frame,
            Err(problem) => return Some(problem),
        };
        // A segment is named after its first record (`cut_after` counts from the name).
        if pos == SEGMENT_MAGIC.len() && rec.offset != start {
            return Some((
                pos as u64,
                format!("the segment's name says it begins at transaction {start}, but its first is {}", rec.offset),
                false,
            ));
        }
        if expected.is_some_and(|e| e != rec.offset) {
            return Some((
                pos as u64,
                format!("expected transaction offset {:?}, found {}", expected, rec.offset),
                false,
            ));
        }
        let Some(after) = rec.offset.checked_add(1) else {
            return Some((pos as u64, format!("transaction offset {} has no successor", rec.offset), false));
        };
        *expected = Some(after);
        if rec.offset >= from_offset {
            records.push(rec);
        }
        pos = frame_end;
    }
    None
}

/// Decodes the frame at `pos` of a segment: its record and the byte where the frame ends, or
/// the problem (truncated header or frame, oversized length, bad checksum, undecodable record).
fn read_frame(bytes: &[u8], pos: usize, is_last: bool) -> Result<(TxRecord, usize), Problem> {
    let rest = &bytes[pos..];
    if rest.len() < FRAME_HEADER {
        return Err((pos as u64, "truncated frame header".into(), is_last));
    }
    let len = u32::from_le_bytes(rest[..4].try_into().unwrap_or_default()) as usize;
    let crc = u32::from_le_bytes(rest[4..8].try_into().unwrap_or_default());
    if len > MAX_RECORD_BYTES {
        return Err((pos as u64, format!("frame length {len} is too large"), false));
    }
    if rest.len() < FRAME_HEADER + len {
        return Err((pos as u64, "truncated frame".into(), is_last));
    }
    let payload = &rest[FRAME_HEADER..FRAME_HEADER + len];
    let frame_end = pos + FRAME_HEADER + len;
    if crc32c::crc32c(payload) != crc {
        // A bad checksum on the very last frame of the log is a torn write.
        return Err((pos as u64, "checksum mismatch".into(), is_last && frame_end == bytes.len()));
    }
    match TxRecord::decode(payload) {
        Ok(rec) => Ok((rec, frame_end)),
        Err(e) => Err((pos as u64, format!("undecodable record: {e}"), false)),
    }
}

/// Cuts the log at `byte` of segment `i` (whose contents are `bytes`): shortens that segment,
/// or removes it when its header is bad, removes every later segment, and notes in `replay`
/// what was cut (torn bytes, or where corruption was truncated).
fn cut_log(
    segs: &[(u64, PathBuf)],
    i: usize,
    bytes: &[u8],
    (byte, torn): (u64, bool),
    replay: &mut Replay,
) -> Result<(), LogError> {
    let path = &segs[i].1;
    // Cut the log here: shorten this segment and drop any later ones.
    let keep = byte.max(SEGMENT_MAGIC.len() as u64);
    let f = OpenOptions::new().write(true).open(path).map_err(io_err(path))?;
    if bytes.len() < SEGMENT_MAGIC.len() || &bytes[..SEGMENT_MAGIC.len()] != SEGMENT_MAGIC {
        drop(f);
        std::fs::remove_file(path).map_err(io_err(path))?;
    } else {
        f.set_len(keep).map_err(io_err(path))?;
        f.sync_all().map_err(io_err(path))?;
    }
    if torn {
        replay.torn_bytes = bytes.len() as u64 - keep;
    } else {
        replay.truncated_at = Some((path.clone(), byte));
    }
    for (_, later) in &segs[i + 1..] {
        std::fs::remove_file(later).map_err(io_err(later))?;
    }
    Ok(())
}

type Callback = Box<dyn FnOnce() + Send>;

enum Cmd {
    Append(u64, Vec<u8>),
    OnDurable(u64, Callback),
    /// Remove whole segments whose records all come before this offset.
    Prune(u64),
    /// Run the callback once everything appended so far is fsynced, whatever the durability.
    Fsync(Callback),
    /// Close the current segment now if it holds any record (so it can be archived) and start
    /// a new one; then run the callback.
    Seal(Callback),
}

/// Why the writer cannot write, checked by callers on every reducer call: a flag read without
/// a lock, and the reason behind it.
#[derive(Default)]
struct Failure {
    set: std::sync::atomic::AtomicBool,
    /// An fsync failed: the log is done for good (see [`Writer::fsync`]).
    poisoned: std::sync::atomic::AtomicBool,
    why: parking_lot::Mutex<Option<String>>,
}

impl Failure {
    fn get(&self) -> Option<String> {
        if !self.set.load(Ordering::Acquire) {
            return None;
        }
        self.why.lock().clone()
    }

    fn set(&self, why: String) {
        *self.why.lock() = Some(why);
        self.set.store(true, Ordering::Release);
    }

    fn clear(&self) {
        debug_assert!(!self.poisoned.load(Ordering::Acquire), "a poisoned log's failure is never cleared");
        self.set.store(false, Ordering::Release);
        *self.why.lock() = None;
    }

    fn poison(&self, why: String) {
        self.set(why);
        self.poisoned.store(true, Ordering::Release);
    }
}

/// An open log with its writer thread.
pub struct CommitLog {
    tx: Sender<Cmd>,
    /// Segments starting at or after this offset are never pruned (an archiver has not shipped
    /// them yet); `u64::MAX` when nothing holds them.
    prune_floor: Arc<AtomicU64>,
    /// Why the writer cannot write right now (a full disk), while it waits to try again.
    failure: Arc<Failure>,
    /// One past the highest offset known durable (0: nothing yet).
    durable_end: Arc<AtomicU64>,
    next_offset: AtomicU64,
    thread: Option<JoinHandle<()>>,
}

impl CommitLog {
    /// Opens the log in `config.dir` for appending after offset `next_offset - 1` (the replay
    /// must have happened first, so the last segment ends on a whole frame).
    pub fn open(config: LogConfig, next_offset: u64) -> Result<Self, LogError> {
        std::fs::create_dir_all(&config.dir).map_err(io_err(&config.dir))?;
        let segs = segments(&config.dir)?;
        let (path, fresh) = match segs.last() {
            Some((_, p)) => (p.clone(), false),
            None => (config.dir.join(segment_name(next_offset)), true),
        };
        let file = open_segment(&path, fresh)?;
        let size = file.metadata().map_err(io_err(&path))?.len();
        let durable_end = Arc::new(AtomicU64::new(next_offset));
        let prune_floor = Arc::new(AtomicU64::new(u64::MAX));
        let failure = Arc::new(Failure::default());
        let (tx, rx) = unbounded();
        let writer = Writer {
            poisoned: false,
            config,
            file,
            path,
            size,
            durable_end: durable_end.clone(),
            prune_floor: prune_floor.clone(),
            failure: failure.clone(),
            waiting: Vec::new(),
        };
        let thread = std::thread::Builder::new()
            .name("commitlog".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| LogError::Io { path: PathBuf::from("commitlog thread"), source: e })?;
        Ok(Self {
            tx,
            prune_floor,
            failure,
            durable_end,
            next_offset: AtomicU64::new(next_offset),
            thread: Some(thread),
        })
    }

    /// The offset the next appended record must carry.
    pub fn next_offset(&self) -> u64 {
        self.next_offset.load(Ordering::Acquire)
    }

    /// Queues `record` (whose offset must be [`CommitLog::next_offset`]) for writing.
    pub fn append(&self, record: &TxRecord) {
        // A gap or a repeat would make replay stop there: checked in release builds too.
        assert_eq!(record.offset, self.next_offset(), "log offsets are consecutive");
        let mut payload = Vec::with_capacity(128);
        record.encode(&mut payload);
        self.next_offset.store(record.offset + 1, Ordering::Release);
        // The writer lives as long as this handle; a send can only fail after it panicked.
        let _ = self.tx.send(Cmd::Append(record.offset, payload));
    }

    /// Whether every record up to and including `offset` is durable.
    pub fn is_durable(&self, offset: u64) -> bool {
        self.durable_end.load(Ordering::Acquire) > offset
    }

    /// Runs `f` once every record up to and including `offset` is durable.
    pub fn on_durable(&self, offset: u64, f: impl FnOnce() + Send + 'static) {
        if self.durable_end.load(Ordering::Acquire) > offset {
            return f();
        }
        let _ = self.tx.send(Cmd::OnDurable(offset, Box::new(f)));
    }

    /// Blocks until every appended record is durable; false if they never will be (the log
    /// is poisoned).
    pub fn flush(&self) -> bool {
        let Some(last) = self.next_offset().checked_sub(1) else { return true };
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.on_durable(last, move || {
            let _ = tx.send(());
        });
        rx.recv().is_ok()
    }

    /// Blocks until every appended record is fsynced, even with [`Durability::Async`] (whose
    /// acknowledgements only wait for the write). A workflow calls this before recording a
    /// batch as done in another log, so that record never runs ahead of this one.
    pub fn sync_to_disk(&self) {
        let (tx, rx) = crossbeam_channel::bounded(1);
        if self
            .tx
            .send(Cmd::Fsync(Box::new(move || {
                let _ = tx.send(());
            })))
            .is_ok()
        {
            let _ = rx.recv();
        }
    }

    /// Asks the writer to delete segments that hold only records before `offset`.
    pub fn prune_before(&self, offset: u64) {
        let _ = self.tx.send(Cmd::Prune(offset));
    }

    /// Why the log cannot write right now (the disk is full), while its writer waits to try
    /// again: what is queued is acknowledged only once it is written and fsynced, and callers
    /// should refuse new work meanwhile.
    pub fn failure(&self) -> Option<String> {
        self.failure.get()
    }

    /// Whether an fsync failed: the log writes and acknowledges nothing more, ever; the
    /// database must be reopened from what is on disk.
    pub fn is_poisoned(&self) -> bool {
        self.failure.poisoned.load(Ordering::Acquire)
    }

    /// Keeps every segment that starts at or after `offset` from being pruned, whatever
    /// [`CommitLog::prune_before`] asks: an archiver calls this with the start of the first
    /// segment it has not shipped yet. The floor only rises.
    pub fn set_prune_floor(&self, offset: u64) {
        // `u64::MAX` is "no floor": any offset replaces it; otherwise only a higher one does.
        let _ = self.prune_floor.fetch_update(Ordering::AcqRel, Ordering::Acquire, |old| {
            (old == u64::MAX || offset > old).then_some(offset)
        });
    }

    /// Lets every segment be pruned again (the database is no longer archived).
    pub fn release_prune_floor(&self) {
        self.prune_floor.store(u64::MAX, Ordering::Release);
    }

    /// Closes the current segment if it holds any record and starts a new one, so that every
    /// record appended so far is in a closed (immutable) segment; blocks until done. The
    /// records are fsynced first.
    pub fn seal(&self) {
        let (tx, rx) = crossbeam_channel::bounded(1);
        if self
            .tx
            .send(Cmd::Seal(Box::new(move || {
                let _ = tx.send(());
            })))
            .is_ok()
        {
            let _ = rx.recv();
        }
    }
}

impl Drop for CommitLog {
    fn drop(&mut self) {
        self.flush();
        let (tx, _) = unbounded();
        drop(std::mem::replace(&mut self.tx, tx));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn open_segment(path: &Path, fresh: bool) -> Result<File, LogError> {
    let mut file = OpenOptions::new().create(true).append(true).open(path).map_err(io_err(path))?;
    if fresh || file.metadata().map_err(io_err(path))?.len() == 0 {
        file.write_all(SEGMENT_MAGIC).map_err(io_err(path))?;
        file.sync_all().map_err(io_err(path))?;
        if let Some(dir) = path.parent() {
            File::open(dir).and_then(|d| d.sync_all()).map_err(io_err(dir))?;
        }
    }
    Ok(file)
}

struct Writer {
    config: LogConfig,
    file: File,
    path: PathBuf,
    size: u64,
    durable_end: Arc<AtomicU64>,
    prune_floor: Arc<AtomicU64>,
    failure: Arc<Failure>,
    waiting: Vec<(u64, Callback)>,
    /// An fsync failed: nothing more is written or acknowledged (see [`Writer::fsync`]).
    poisoned: bool,
}

impl Writer {
    fn run(mut self, rx: Receiver<Cmd>) {
        let mut last_sync = Instant::now();
        let mut written_end = self.durable_end.load(Ordering::Acquire);
        let mut buf = Vec::with_capacity(1 << 16);
        loop {
            let Some(batch) = self.next_batch(&rx) else {
                self.sync(written_end);
                return;
            };
            let (fsync_waiting, sealed) = self.apply_batch(batch, &mut buf, &mut written_end);
            self.finish_batch(&mut buf, written_end, &mut last_sync, fsync_waiting, sealed);
        }
    }

    /// Waits for the next command (up to the async interval; an empty batch then) and takes
    /// what else is queued, up to [`MAX_BATCH`]. `None` once every sender is gone.
    fn next_batch(&self, rx: &Receiver<Cmd>) -> Option<Vec<Cmd>> {
        let timeout = match self.config.durability {
            Durability::Sync => Duration::from_secs(3600),
            Durability::Async { interval } => interval,
        };
        let first = match rx.recv_timeout(timeout) {
            Ok(cmd) => Some(cmd),
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => None,
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return None,
        };
        let mut batch: Vec<Cmd> = first.into_iter().collect();
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(c) => batch.push(c),
                Err(_) => break,
            }
        }
        Some(batch)
    }

    /// Carries out a batch's commands in order: appends go to `buf` (rotating full segments),
    /// seals close the segment. Returns the fsync and seal callbacks to run after the batch.
    fn apply_batch(
        &mut self,
        batch: Vec<Cmd>,
        buf: &mut Vec<u8>,
        written_end: &mut u64,
    ) -> (Vec<Callback>, Vec<Callback>) {
        let mut fsync_waiting: Vec<Callback> = Vec::new();
        let mut sealed: Vec<Callback> = Vec::new();
        for cmd in batch {
            if self.poisoned {
                // Nothing is written or acknowledged any more: waiting callers are let go
                // unanswered (their channels close), a seal returns at once.
                if let Cmd::Seal(f) = cmd {
                    f();
                }
                continue;
            }
            match cmd {
                Cmd::Append(offset, payload) => {
                    if self.size >= self.config.segment_max_bytes {
                        self.flush_buf(buf);
                        self.rotate(offset);
                    }
                    buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
                    buf.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
                    buf.extend_from_slice(&payload);
                    self.size += (FRAME_HEADER + payload.len()) as u64;
                    *written_end = offset + 1;
                }
                Cmd::OnDurable(offset, f) => self.waiting.push((offset, f)),
                Cmd::Prune(before) => self.prune(before),
                Cmd::Fsync(f) => fsync_waiting.push(f),
                Cmd::Seal(f) => {
                    if self.size > SEGMENT_MAGIC.len() as u64 {
                        self.flush_buf(buf);
                        self.sync(*written_end);
                        self.rotate(*written_end);
                    }
                    sealed.push(f);
                }
            }
        }
        (fsync_waiting, sealed)
    }

    /// Ends a batch: writes `buf`, makes it durable as the durability mode says, then runs the
    /// callbacks that are due (none of the waiting ones if the log is poisoned).
    fn finish_batch(
        &mut self,
        buf: &mut Vec<u8>,
        written_end: u64,
        last_sync: &mut Instant,
        mut fsync_waiting: Vec<Callback>,
        sealed: Vec<Callback>,
    ) {
        self.flush_buf(buf);
        match self.config.durability {
            Durability::Sync => self.sync(written_end),
            Durability::Async { interval } => {
                // Written to the OS counts as done; fsync on the timer.
                self.durable_end.store(written_end, Ordering::Release);
                if last_sync.elapsed() >= interval || !fsync_waiting.is_empty() {
                    self.fsync();
                    *last_sync = Instant::now();
                }
            }
        }
        if self.poisoned {
            self.waiting.clear();
            fsync_waiting.clear();
        }
        self.run_callbacks();
        // In sync mode the fsync above already covered them.
        fsync_waiting.into_iter().for_each(|f| f());
        sealed.into_iter().for_each(|f| f());
    }

    /// Writes the batch. When the disk refuses it (full), whatever part reached the file is
    /// cut off again, so the log never holds half a frame, and the whole batch is written
    /// again every [`WRITE_RETRY_INTERVAL`] until the disk takes it; nothing in it is
    /// acknowledged meanwhile, and [`CommitLog::failure`] says why.
    fn flush_buf(&mut self, buf: &mut Vec<u8>) {
        if buf.is_empty() || self.poisoned {
            buf.clear();
            return;
        }
        let on_disk = self.size - buf.len() as u64;
        let mut failing = false;
        while let Err(e) = self.write_through_faults(buf) {
            if !failing {
                tracing::error!(path = %self.path.display(), "commitlog write failed: {e}; retrying until it succeeds, refusing new work meanwhile");
                self.failure.set(format!("the commitlog cannot be written: {e}"));
                failing = true;
            }
            if let Err(t) = self.file.set_len(on_disk) {
                // The log may now end in half a frame that replay would cut; nothing of this
                // batch was acknowledged, but the file cannot be trusted to take more.
                tracing::error!(path = %self.path.display(), "cannot cut a failed write off the commitlog: {t}; aborting");
                std::process::abort();
            }
            std::thread::sleep(WRITE_RETRY_INTERVAL);
        }
        if failing && !self.poisoned {
            tracing::info!(path = %self.path.display(), "commitlog writes succeed again");
            self.failure.clear();
        }
        buf.clear();
    }

    /// Writes `buf` to the segment, through the test seam when there is one (a failed write
    /// leaves half of `buf` in the file, as a short write would).
    fn write_through_faults(&mut self, buf: &[u8]) -> std::io::Result<()> {
        if let Some(e) = self.config.faults.as_ref().and_then(|f| f.write()) {
            let _ = self.file.write_all(&buf[..buf.len() / 2]);
            return Err(e);
        }
        self.file.write_all(buf)
    }

    fn sync(&mut self, written_end: u64) {
        if self.durable_end.load(Ordering::Acquire) >= written_end {
            return;
        }
        if self.fsync() {
            self.durable_end.store(written_end, Ordering::Release);
        }
    }

    /// Fsyncs the segment; false when it failed. After a failed fsync the kernel may have
    /// dropped the dirty pages ("fsyncgate"): nothing written since the last good fsync can be
    /// trusted, and a retried fsync could report success for data that is gone. So it is never
    /// retried: the log is poisoned (nothing more is written or acknowledged, waiting callers
    /// are let go unanswered), [`CommitLog::failure`] reports it and [`CommitLog::is_poisoned`]
    /// tells the owner to recover from what is on disk with a new log.
    fn fsync(&mut self) -> bool {
        if self.poisoned {
            return false;
        }
        let result = match self.config.faults.as_ref().and_then(|f| f.sync()) {
            Some(e) => Err(e),
            None => self.file.sync_data(),
        };
        if let Err(e) = result {
            tracing::error!(path = %self.path.display(), "commitlog fsync failed: {e}; this log acknowledges nothing more (the database must reopen from disk)");
            self.failure.poison(format!(
                "an fsync of the commitlog failed ({e}); nothing more is acknowledged until the database has reopened from what is on disk"
            ));
            self.poisoned = true;
            return false;
        }
        true
    }

    fn run_callbacks(&mut self) {
        let durable_end = self.durable_end.load(Ordering::Acquire);
        let (ready, waiting): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.waiting).into_iter().partition(|(o, _)| *o < durable_end);
        self.waiting = waiting;
        for (_, f) in ready {
            f();
        }
    }

    fn rotate(&mut self, next_offset: u64) {
        if !self.fsync() {
            return;
        }
        let path = self.config.dir.join(segment_name(next_offset));
        let mut failing = false;
        loop {
            match open_segment(&path, true) {
                Ok(f) => {
                    self.file = f;
                    self.path = path;
                    self.size = SEGMENT_MAGIC.len() as u64;
                    break;
                }
                Err(e) => {
                    // A new segment cannot be started (a full disk): remove what was made of it
                    // and try again; the previous segment stays the last one meanwhile.
                    if !failing {
                        tracing::error!("cannot start a new commitlog segment: {e}; retrying");
                        self.failure.set(format!("the commitlog cannot start a segment: {e}"));
                        failing = true;
                    }
                    let _ = std::fs::remove_file(&path);
                    std::thread::sleep(WRITE_RETRY_INTERVAL);
                }
            }
        }
        if failing {
            self.failure.clear();
        }
    }

    fn prune(&mut self, before: u64) {
        let Ok(segs) = segments(&self.config.dir) else { return };
        // Segment i holds offsets [start_i, start_{i+1}); it can go when start_{i+1} <= before,
        // unless an archiver still needs it (it starts at or after the floor).
        let floor = self.prune_floor.load(Ordering::Acquire);
        for pair in segs.windows(2) {
            let ((start, path), (next_start, _)) = (&pair[0], &pair[1]);
            if *next_start <= before && *start < floor && *path != self.path {
                if let Err(e) = std::fs::remove_file(path) {
                    tracing::warn!(path = %path.display(), "could not prune a commitlog segment: {e}");
                }
            }
        }
    }
}
