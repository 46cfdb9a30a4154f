//! The connected clients of a durable database, kept so that a restart after a crash runs
//! `client_disconnected` for every client the crash cut off.
//!
//! An append-only journal of fixed-size records (connected / disconnected), written and fsynced
//! by a thread of its own in batches, never by the database's writer: a connect or disconnect
//! costs the writer a channel send, whatever the number of clients. The journal is rewritten
//! (compacted) to the clients still connected when it opens and when it has grown past
//! [`COMPACT_AFTER_RECORDS`].
//!
//! Crash safety: a client's connection is durable in the journal before `client_connected`
//! runs (the caller waits for it), and its disconnection is written only once the transaction
//! of `client_disconnected` is durable in the commit log. A torn or corrupt record ends the
//! replay (it and anything after it were never acknowledged).

use std::collections::BTreeSet;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crossbeam_channel::{unbounded, Receiver, Sender};
use epoch_commitlog::CommitLog;
use epoch_sats::Identity;

use crate::limits::{CLOSING_CHECK, COMPACT_AFTER_RECORDS};

/// (identity, connection id) of one client.
pub type ClientKey = (Identity, [u8; 16]);

/// The journal's file in a database's directory.
const JOURNAL_FILE: &str = "client-journal";
/// The file earlier versions kept (one `identity connection_id` hex line per client); read
/// once and folded into the journal.
const OLD_LIST_FILE: &str = "connected-clients";

/// One record: kind, identity, connection id, CRC-32C of the 49 bytes before it.
pub const RECORD_BYTES: usize = 1 + 32 + 16 + 4;
const CONNECTED: u8 = b'C';
const DISCONNECTED: u8 = b'D';

fn encode(kind: u8, (identity, connection_id): &ClientKey, out: &mut Vec<u8>) {
    let start = out.len();
    out.push(kind);
    out.extend_from_slice(&identity.to_le_bytes());
    out.extend_from_slice(connection_id);
    let crc = crc32c::crc32c(&out[start..]);
    out.extend_from_slice(&crc.to_le_bytes());
}

/// The clients connected at the end of journal `bytes`, and how many whole, valid records
/// lead up to it; a short, corrupt or unknown record ends the replay.
pub fn replay(bytes: &[u8]) -> (BTreeSet<ClientKey>, usize) {
    let mut live = BTreeSet::new();
    let mut records = 0;
    for record in bytes.chunks_exact(RECORD_BYTES) {
        let (body, crc) = record.split_at(RECORD_BYTES - 4);
        if crc32c::crc32c(body).to_le_bytes() != crc {
            break;
        }
        let (mut identity, mut connection_id) = ([0; 32], [0; 16]);
        identity.copy_from_slice(&body[1..33]);
        connection_id.copy_from_slice(&body[33..49]);
        let key: ClientKey = (Identity(identity), connection_id);
        match body[0] {
            CONNECTED => live.insert(key),
            DISCONNECTED => live.remove(&key),
            _ => break,
        };
        records += 1;
    }
    (live, records)
}

/// The clients an earlier version's list names; an unreadable line is skipped.
fn read_old_list(path: &Path) -> BTreeSet<ClientKey> {
    fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
        let bytes = hex_decode(s)?;
        bytes.try_into().ok()
    }
    fn hex_decode(s: &str) -> Option<Vec<u8>> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
    }
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let (i, c) = l.split_once(' ')?;
            Some((Identity(unhex::<32>(i)?), unhex::<16>(c)?))
        })
        .collect()
}

/// What the journal's thread is asked to write.
enum Cmd {
    /// A client connected; `done` learns once that is durable (false: it could not be written).
    Connected(ClientKey, Box<dyn FnOnce(bool) + Send>),
    /// A client left; written once the commit log is durable up to the offset, if any.
    Disconnected(ClientKey, Option<u64>),
}

/// The writer's handle on the journal.
pub struct ClientJournal {
    tx: Option<Sender<Cmd>>,
    /// Set when the journal closes: a departure still waiting for the log is given up.
    closing: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// The clients listed, as the writer has asked (the thread may still be writing).
    listed: BTreeSet<ClientKey>,
}

impl ClientJournal {
    /// Opens the journal of `dir` (folding in an earlier version's list), rewrites it to the
    /// clients it lists, and starts its thread; `log` is the database's commit log.
    pub fn open(dir: &Path, log: Arc<CommitLog>) -> std::io::Result<Self> {
        let path = dir.join(JOURNAL_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        let (mut listed, _) = replay(&bytes);
        let old = dir.join(OLD_LIST_FILE);
        let had_old = old.exists();
        listed.extend(read_old_list(&old));
        let file = rewrite(&path, &listed)?;
        if had_old {
            std::fs::remove_file(&old)?;
        }
        let (tx, rx) = unbounded();
        let closing = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = JournalWriter {
            path,
            file,
            live: listed.clone(),
            records: listed.len(),
            broken: false,
            log,
            closing: closing.clone(),
        };
        let thread = std::thread::Builder::new().name("epoch-client-journal".into()).spawn(move || writer.run(rx))?;
        Ok(Self { tx: Some(tx), closing, thread: Some(thread), listed })
    }

    /// The clients listed as connected (at open: those a crash cut off).
    pub fn listed(&self) -> Vec<ClientKey> {
        self.listed.iter().copied().collect()
    }

    /// Writes down that `key` connected; `done(durable)` runs once that is on disk (at once
    /// when it is listed already).
    pub fn connect(&mut self, key: ClientKey, done: impl FnOnce(bool) + Send + 'static) {
        if !self.listed.insert(key) {
            return done(true);
        }
        if let Some(tx) = &self.tx {
            if let Err(e) = tx.send(Cmd::Connected(key, Box::new(done))) {
                if let Cmd::Connected(_, done) = e.0 {
                    done(false);
                }
            }
        }
    }

    /// Writes down that `key` left, once the commit log is durable up to `after`.
    pub fn disconnect(&mut self, key: ClientKey, after: Option<u64>) {
        if self.listed.remove(&key) {
            if let Some(tx) = &self.tx {
                let _ = tx.send(Cmd::Disconnected(key, after));
            }
        }
    }

    /// Whether `key` is listed.
    pub fn is_listed(&self, key: &ClientKey) -> bool {
        self.listed.contains(key)
    }
}

impl Drop for ClientJournal {
    /// Writes what is queued before the journal closes (a reopened database reads it).
    fn drop(&mut self) {
        self.tx = None;
        self.closing.store(true, std::sync::atomic::Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Writes `live` as the whole journal at `path`, atomically and durably; returns it open for
/// appending.
fn rewrite(path: &Path, live: &BTreeSet<ClientKey>) -> std::io::Result<File> {
    let mut bytes = Vec::with_capacity(live.len() * RECORD_BYTES);
    for key in live {
        encode(CONNECTED, key, &mut bytes);
    }
    crate::atomic_file::write_atomically(path, &bytes)?;
    std::fs::OpenOptions::new().append(true).open(path)
}

/// The journal's thread: appends each batch of records in one write and one fsync.
struct JournalWriter {
    path: PathBuf,
    file: File,
    /// The clients the file lists once what is written so far is read back.
    live: BTreeSet<ClientKey>,
    /// Records in the file.
    records: usize,
    /// A write failed part way: the file must be rewritten before anything is appended.
    broken: bool,
    log: Arc<CommitLog>,
    closing: Arc<std::sync::atomic::AtomicBool>,
}

impl JournalWriter {
    fn run(mut self, rx: Receiver<Cmd>) {
        while let Ok(first) = rx.recv() {
            let batch: Vec<Cmd> = std::iter::once(first).chain(rx.try_iter()).collect();
            let mut bytes = Vec::with_capacity(batch.len() * RECORD_BYTES);
            let mut done = Vec::new();
            for cmd in batch {
                match cmd {
                    Cmd::Connected(key, d) => {
                        encode(CONNECTED, &key, &mut bytes);
                        self.live.insert(key);
                        done.push(d);
                    }
                    Cmd::Disconnected(key, after) => {
                        // A disconnection whose transaction never becomes durable stays
                        // unwritten: after a restart `client_disconnected` runs again.
                        if after.is_some_and(|o| !wait_durable(&self.log, o, &self.closing)) {
                            continue;
                        }
                        encode(DISCONNECTED, &key, &mut bytes);
                        self.live.remove(&key);
                    }
                }
            }
            let ok = self.write(&bytes);
            for d in done {
                d(ok);
            }
        }
    }

    /// Appends `bytes` (or rewrites the file, when it is broken or due for compaction).
    fn write(&mut self, bytes: &[u8]) -> bool {
        self.records += bytes.len() / RECORD_BYTES;
        let compact = self.records >= COMPACT_AFTER_RECORDS && self.records >= 4 * self.live.len();
        let result = if self.broken || compact {
            rewrite(&self.path, &self.live).map(|f| {
                self.file = f;
                self.records = self.live.len();
            })
        } else {
            self.file.write_all(bytes).and_then(|()| self.file.sync_data())
        };
        match result {
            Ok(()) => {
                self.broken = false;
                true
            }
            Err(e) => {
                tracing::warn!(path = %self.path.display(), "writing the connected clients: {e}");
                self.broken = true;
                false
            }
        }
    }
}

/// Blocks until the log is durable up to `offset`; false if it never will be, or the journal
/// closes first (a log that cannot write, a full disk, must not hold a database's close).
fn wait_durable(log: &CommitLog, offset: u64, closing: &std::sync::atomic::AtomicBool) -> bool {
    let (tx, rx) = crossbeam_channel::bounded(1);
    log.on_durable(offset, move || {
        let _ = tx.send(());
    });
    loop {
        match rx.recv_timeout(CLOSING_CHECK) {
            Ok(()) => return true,
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return false,
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                if closing.load(std::sync::atomic::Ordering::Acquire) {
                    return false;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> ClientKey {
        (Identity([n; 32]), [n.wrapping_add(100); 16])
    }

    #[test]
    fn replay_applies_records_in_order_and_stops_at_a_torn_or_corrupt_one() {
        let mut bytes = Vec::new();
        encode(CONNECTED, &key(1), &mut bytes);
        encode(CONNECTED, &key(2), &mut bytes);
        encode(DISCONNECTED, &key(1), &mut bytes);
        encode(CONNECTED, &key(3), &mut bytes);
        let (live, records) = replay(&bytes);
        assert_eq!(live, [key(2), key(3)].into_iter().collect());
        assert_eq!(records, 4);

        // A torn last record (a crash mid-append) is ignored; what came before stands.
        let whole = bytes.len();
        encode(DISCONNECTED, &key(2), &mut bytes);
        for cut in whole..bytes.len() {
            let (live, records) = replay(&bytes[..cut]);
            assert_eq!(live, [key(2), key(3)].into_iter().collect(), "cut at {cut}");
            assert_eq!(records, 4);
        }
        assert_eq!(replay(&bytes).0, [key(3)].into_iter().collect());

        // A record whose checksum fails ends the replay there.
        let mut corrupt = bytes.clone();
        corrupt[RECORD_BYTES + 5] ^= 1;
        assert_eq!(replay(&corrupt), ([key(1)].into_iter().collect(), 1));
    }

    #[test]
    fn the_journal_survives_reopening_folds_in_the_old_list_and_is_compacted() {
        let dir = std::env::temp_dir().join(format!("epoch-journal-{}-{}", std::process::id(), line!()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let log = Arc::new(
            CommitLog::open(
                epoch_commitlog::LogConfig {
                    dir: dir.join("log"),
                    durability: epoch_commitlog::Durability::Sync,
                    segment_max_bytes: 1 << 20,
                    faults: None,
                },
                0,
            )
            .unwrap(),
        );
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        std::fs::write(dir.join(OLD_LIST_FILE), format!("{} {}\n", hex(&key(9).0 .0), hex(&key(9).1))).unwrap();
        let mut j = ClientJournal::open(&dir, log.clone()).unwrap();
        assert_eq!(j.listed(), vec![key(9)]);
        assert!(!dir.join(OLD_LIST_FILE).exists());
        let (tx, rx) = crossbeam_channel::bounded(1);
        j.connect(key(1), move |ok| tx.send(ok).unwrap());
        assert!(rx.recv().unwrap(), "the connection is durable");
        // Churn: far more records than the compaction threshold.
        for round in 0..COMPACT_AFTER_RECORDS {
            let k = key((round % 50) as u8 + 10);
            j.connect(k, |_| {});
            j.disconnect(k, None);
        }
        j.disconnect(key(9), None);
        drop(j);
        let size = std::fs::metadata(dir.join(JOURNAL_FILE)).unwrap().len() as usize;
        assert!(size < 2 * COMPACT_AFTER_RECORDS * RECORD_BYTES, "{size} bytes");
        let mut j = ClientJournal::open(&dir, log.clone()).unwrap();
        assert_eq!(j.listed(), vec![key(1)]);
        // A departure waits for its transaction to be durable; one that never is stays
        // unwritten (client_disconnected runs again after a restart), and closing the journal
        // does not wait for it forever.
        j.disconnect(key(1), Some(1_000_000));
        drop(j);
        let j = ClientJournal::open(&dir, log).unwrap();
        assert_eq!(j.listed(), vec![key(1)]);
        drop(j);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
