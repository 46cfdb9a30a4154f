//! Shipping a live log to a `file://` archive and restoring it to every offset and moment:
//! what comes back is exactly the prefix of the log up to that point, with the module and a
//! snapshot; the log never prunes a segment the archive lacks.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use epoch_archive::{restore, ArchiveTarget, Archiver, StopAt, StoreOptions};
use epoch_commitlog::*;

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("epoch-archive-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn record(offset: u64) -> TxRecord {
    TxRecord {
        offset,
        timestamp_micros: 1_000_000 + 10 * offset as i64,
        reducer: "r".into(),
        caller: [1; 32],
        args: vec![offset as u8],
        tables: vec![TableChange { table_id: 0, inserts: vec![offset.to_le_bytes().to_vec().into()], deletes: vec![] }],
        sequences: vec![],
        step: None,
    }
}

#[test]
fn every_offset_and_moment_restores_the_prefix_of_the_log() {
    let db = dir("db");
    let archive_dir = dir("store");
    std::fs::write(db.join("module.wasm"), b"\0asm-module").unwrap();
    std::fs::write(db.join("table-order"), b"account\n").unwrap();
    let log = CommitLog::open(
        LogConfig { dir: db.join("log"), durability: Durability::Sync, segment_max_bytes: 400, faults: None },
        0,
    )
    .unwrap();
    // The server sets this when archiving: nothing is pruned before the archiver looks.
    log.set_prune_floor(0);
    let target =
        Arc::new(ArchiveTarget::open(&format!("file://{}", archive_dir.display()), &StoreOptions::default()).unwrap());
    let mut archiver = Archiver::new(&db, "db1", target.clone(), Duration::ZERO);
    for i in 0..60 {
        log.append(&record(i));
        if i % 7 == 0 {
            log.flush();
            archiver.ship(&log).unwrap();
        }
        if i == 30 {
            // A snapshot at 30, and a prune request for what it covers.
            let snap = Snapshot { offset: 30, ..Default::default() };
            write_snapshot(&db.join("snapshots"), &snap, 2).unwrap();
            log.prune_before(31);
        }
    }
    log.flush();
    // With a zero lag bound the open segment is closed and shipped in the same pass.
    archiver.ship(&log).unwrap();
    let status = archiver.status().clone();
    assert_eq!(status.shipped_end, 60, "{status:?}");
    assert_eq!(status.error, None);
    assert!(status.snapshots_shipped >= 1, "{status:?}");

    let folder =
        ArchiveTarget::open(&format!("file://{}/db1", archive_dir.display()), &StoreOptions::default()).unwrap();
    for stop in (0..60).map(StopAt::Offset).chain((0..60).map(|o| StopAt::Time(1_000_000 + 10 * o + 5))) {
        let dest = dir("restored");
        let (wasm, report) = restore(&folder, &dest, stop).unwrap();
        assert_eq!(wasm.as_deref(), Some(&b"\0asm-module"[..]));
        assert_eq!(std::fs::read(dest.join("table-order")).unwrap(), b"account\n");
        let last = match stop {
            StopAt::Offset(o) => o,
            StopAt::Time(t) => ((t - 1_000_000) / 10) as u64,
            StopAt::Latest => unreachable!(),
        };
        assert_eq!(report.offset, Some(last), "{stop:?}");
        // Recovery reads the snapshot (when one is at or before the point), then the log after it.
        let from = report.snapshot.map_or(0, |s| s + 1);
        assert_eq!(report.snapshot, (last >= 30).then_some(30), "{stop:?}");
        let replayed = read_log(&dest.join("log"), from, false).unwrap().records;
        assert_eq!(replayed, (from..=last).map(record).collect::<Vec<_>>(), "{stop:?}");
    }
    // Past the end, and before the first transaction.
    assert!(restore(&folder, &dir("past"), StopAt::Offset(60)).is_err());
    let (_, before) = restore(&folder, &dir("before"), StopAt::Time(0)).unwrap();
    assert_eq!(before.offset, None);
    let (_, latest) = restore(&folder, &dir("latest"), StopAt::Latest).unwrap();
    assert_eq!(latest.offset, Some(59));
}

#[test]
fn an_unshipped_segment_is_never_pruned() {
    let db = dir("prune");
    std::fs::write(db.join("module.wasm"), b"m").unwrap();
    let log = CommitLog::open(
        LogConfig { dir: db.join("log"), durability: Durability::Sync, segment_max_bytes: 200, faults: None },
        0,
    )
    .unwrap();
    log.set_prune_floor(0);
    for i in 0..40 {
        log.append(&record(i));
    }
    log.flush();
    let before = segment_files(&db.join("log")).unwrap().len();
    assert!(before > 3);
    log.prune_before(40);
    log.flush();
    log.seal();
    assert_eq!(segment_files(&db.join("log")).unwrap().len(), before + 1, "the floor holds every segment");
    // Once shipped, the same request prunes them.
    let target = Arc::new(
        ArchiveTarget::open(&format!("file://{}", dir("prune-store").display()), &StoreOptions::default()).unwrap(),
    );
    Archiver::new(&db, "x", target, Duration::from_secs(3600)).ship(&log).unwrap();
    log.prune_before(40);
    log.seal();
    assert_eq!(segment_files(&db.join("log")).unwrap().len(), 1, "only the open segment is left");
}

#[test]
fn a_snapshot_newer_than_the_log_is_the_latest_point() {
    // A backup taken just after a snapshot: the log after it is empty, older segments pruned.
    let store = dir("snap-only");
    std::fs::create_dir_all(store.join("snapshots")).unwrap();
    std::fs::write(store.join("module.wasm"), b"m").unwrap();
    let snap = Snapshot { offset: 41, ..Default::default() };
    write_snapshot(&store.join("snapshots"), &snap, 2).unwrap();
    let folder = ArchiveTarget::open(&format!("file://{}", store.display()), &StoreOptions::default()).unwrap();
    let dest = dir("snap-only-restored");
    let (_, report) = restore(&folder, &dest, StopAt::Latest).unwrap();
    assert_eq!((report.offset, report.snapshot), (Some(41), Some(41)));
    assert_eq!(read_latest_snapshot(&dest.join("snapshots")).map(|s| s.offset), Some(41));
    assert!(restore(&folder, &dir("snap-only-2"), StopAt::Time(5)).is_err(), "no log to find a moment in");
}
