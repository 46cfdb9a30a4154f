//! I/O errors injected at every write and every fsync of a short workload, through the test
//! seam (`LogConfig::faults`), the way SQLite tests its I/O errors:
//! - a failed write is cut off the file and written again: everything is acknowledged, in
//!   order, and the log reads back whole;
//! - a failed fsync is never retried: nothing after it is acknowledged, the failure is
//!   reported, and what is on disk reads back as a prefix holding every acknowledged record.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use epoch_commitlog::*;

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("epoch-faults-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn record(offset: u64) -> TxRecord {
    TxRecord {
        offset,
        timestamp_micros: offset as i64,
        reducer: "r".into(),
        caller: [0; 32],
        args: vec![offset as u8; 40],
        tables: vec![],
        sequences: vec![],
        step: None,
    }
}

/// Fails the `fail_at`-th call (counting from 0) of one kind.
#[derive(Debug)]
struct FailAt {
    writes: AtomicUsize,
    syncs: AtomicUsize,
    fail_write: Option<usize>,
    fail_sync: Option<usize>,
    /// Whether the failure was injected (batching varies from run to run, so a run may make
    /// fewer calls than the clean run counted).
    fired: std::sync::atomic::AtomicBool,
}

impl FailAt {
    fn new(fail_write: Option<usize>, fail_sync: Option<usize>) -> Arc<Self> {
        Arc::new(Self { writes: 0.into(), syncs: 0.into(), fail_write, fail_sync, fired: false.into() })
    }
}

impl IoFaults for FailAt {
    fn write(&self) -> Option<std::io::Error> {
        let n = self.writes.fetch_add(1, Ordering::SeqCst);
        (Some(n) == self.fail_write).then(|| {
            self.fired.store(true, Ordering::SeqCst);
            std::io::Error::from_raw_os_error(28)
        })
    }
    fn sync(&self) -> Option<std::io::Error> {
        let n = self.syncs.fetch_add(1, Ordering::SeqCst);
        (Some(n) == self.fail_sync).then(|| {
            self.fired.store(true, Ordering::SeqCst);
            std::io::Error::from_raw_os_error(5)
        })
    }
}

const RECORDS: u64 = 24;

/// Runs the workload (records in small groups, each group waited for) with `faults`; returns
/// the offsets acknowledged, the failure reported, and whether the log ended poisoned (a
/// last flush that returned says whether it holds everything, and must agree).
fn workload(d: &std::path::Path, faults: Arc<FailAt>) -> (Vec<u64>, Option<String>, bool) {
    let config =
        LogConfig { dir: d.to_path_buf(), durability: Durability::Sync, segment_max_bytes: 600, faults: Some(faults) };
    let log = CommitLog::open(config, 0).unwrap();
    let acked = Arc::new(Mutex::new(Vec::new()));
    for i in 0..RECORDS {
        log.append(&record(i));
        let acked = acked.clone();
        log.on_durable(i, move || acked.lock().unwrap().push(i));
        if i % 3 == 2 {
            // Returns once durable, or once the log has given up on it.
            log.flush();
        }
    }
    let flushed = log.flush();
    let failure = log.failure();
    let poisoned = log.is_poisoned();
    assert_eq!(flushed, !poisoned, "a flush reports whether the log holds everything");
    drop(log);
    let acked = acked.lock().unwrap().clone();
    (acked, failure, poisoned)
}

/// Counts the calls of a run without faults. `name` keeps each test's directory its own: the
/// tests run in parallel in one process, and a shared one was removed under the other test.
fn calls_of_a_clean_run(name: &str) -> (usize, usize) {
    let d = dir(&format!("clean-{name}"));
    let faults = FailAt::new(None, None);
    let (acked, failure, poisoned) = workload(&d, faults.clone());
    assert_eq!(acked, (0..RECORDS).collect::<Vec<_>>());
    assert_eq!((failure, poisoned), (None, false));
    (faults.writes.load(Ordering::SeqCst), faults.syncs.load(Ordering::SeqCst))
}

#[test]
fn a_failed_write_is_cut_off_and_written_again() {
    let (writes, _) = calls_of_a_clean_run("w");
    assert!(writes > 5, "the workload writes in several batches");
    let mut injected = 0;
    for n in 0..writes {
        let d = dir(&format!("w{n}"));
        let faults = FailAt::new(Some(n), None);
        let (acked, failure, poisoned) = workload(&d, faults.clone());
        injected += faults.fired.load(Ordering::SeqCst) as usize;
        assert!(!poisoned, "write {n}: a failed write does not poison the log");
        assert_eq!(acked, (0..RECORDS).collect::<Vec<_>>(), "write {n} failed once: everything is acknowledged");
        assert_eq!(failure, None, "write {n}: the failure clears once the write succeeds");
        let replay = read_log(&d, 0, false).unwrap();
        assert_eq!(replay.records, (0..RECORDS).map(record).collect::<Vec<_>>(), "write {n}: no half frame left");
        assert_eq!(replay.torn_bytes, 0, "write {n}");
    }
    assert!(injected * 2 > writes, "most writes were failed once ({injected} of {writes})");
}

#[test]
fn a_failed_fsync_stops_acknowledging_and_disk_holds_every_acknowledged_record() {
    let (_, syncs) = calls_of_a_clean_run("s");
    assert!(syncs > 5, "the workload fsyncs several times");
    let mut injected = 0;
    for n in 0..syncs {
        let d = dir(&format!("s{n}"));
        let faults = FailAt::new(None, Some(n));
        let (acked, failure, poisoned) = workload(&d, faults.clone());
        if !faults.fired.load(Ordering::SeqCst) {
            // This run made fewer fsyncs than the clean one: it ran clean.
            assert_eq!((acked.len(), failure), (RECORDS as usize, None), "fsync {n} never failed");
            continue;
        }
        injected += 1;
        let failure = failure.unwrap_or_else(|| panic!("fsync {n} failed silently"));
        assert!(failure.contains("fsync") && failure.contains("reopened"), "{failure}");
        assert!(poisoned, "fsync {n}: the log says it is done for good");
        assert!(acked.len() < RECORDS as usize, "fsync {n}: something after the failure was acknowledged");
        assert_eq!(acked, (0..acked.len() as u64).collect::<Vec<_>>(), "fsync {n}: acknowledged in order");
        // What is on disk is a clean prefix of the log that holds every acknowledged record.
        let replay = read_log(&d, 0, false).unwrap_or_else(|e| panic!("fsync {n}: the log does not read back: {e}"));
        let offsets: Vec<u64> = replay.records.iter().map(|r| r.offset).collect();
        assert_eq!(offsets, (0..offsets.len() as u64).collect::<Vec<_>>(), "fsync {n}");
        assert!(offsets.len() >= acked.len(), "fsync {n}: an acknowledged record is missing");
    }
    assert!(injected * 2 > syncs, "most fsyncs were failed once ({injected} of {syncs})");
}
