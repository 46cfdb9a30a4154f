//! The log and snapshots survive damage as promised: a torn tail is cut cleanly at every byte,
//! corruption in the middle stops replay with its location (or is cut on request), and a damaged
//! or missing newest snapshot falls back to the previous one.
use std::path::PathBuf;
use std::time::Duration;

use epoch_commitlog::*;

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("epoch-log-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn record(offset: u64) -> TxRecord {
    TxRecord {
        offset,
        timestamp_micros: 1_000 + offset as i64,
        reducer: "transfer".into(),
        caller: [offset as u8; 32],
        args: vec![1, 2, 3, offset as u8],
        tables: vec![TableChange {
            table_id: 1,
            inserts: vec![vec![offset as u8; 10].into()],
            deletes: vec![vec![9; 3].into()],
        }],
        sequences: vec![SequenceState { table_id: 1, column: 0, next: offset as i128 + 1 }],
        // Some records carry the workflow item they applied, so both encodings are exercised.
        step: offset.is_multiple_of(3).then(|| WorkflowStep {
            instance: format!("wf_{offset}"),
            batch: offset / 3 + 1,
            item: format!("user/u-{offset}"),
        }),
    }
}

fn write(d: &std::path::Path, n: u64, segment_max_bytes: u64) {
    let log = CommitLog::open(
        LogConfig { dir: d.to_path_buf(), durability: Durability::Sync, segment_max_bytes, faults: None },
        0,
    )
    .unwrap();
    for i in 0..n {
        log.append(&record(i));
    }
    log.flush();
}

fn only_segment(d: &std::path::Path) -> PathBuf {
    let mut segs: Vec<_> = std::fs::read_dir(d).unwrap().map(|e| e.unwrap().path()).collect();
    segs.sort();
    segs.pop().unwrap()
}

#[test]
fn records_round_trip_across_segments_and_reopen() {
    let d = dir("roundtrip");
    write(&d, 50, 300);
    assert!(std::fs::read_dir(&d).unwrap().count() > 3, "small segments rotate");
    let replay = read_log(&d, 0, false).unwrap();
    assert_eq!(replay.records, (0..50).map(record).collect::<Vec<_>>());
    assert_eq!(read_log(&d, 45, false).unwrap().records.len(), 5);
    // Appending continues where the log ended.
    let log = CommitLog::open(
        LogConfig { dir: d.clone(), durability: Durability::Sync, segment_max_bytes: 300, faults: None },
        50,
    )
    .unwrap();
    log.append(&record(50));
    drop(log);
    assert_eq!(read_log(&d, 0, false).unwrap().records.len(), 51);
}

#[test]
fn a_torn_last_record_is_cut_at_every_byte_offset() {
    let d = dir("torn");
    write(&d, 5, 1 << 20);
    let seg = only_segment(&d);
    let full = std::fs::read(&seg).unwrap();
    let mut enc = Vec::new();
    record(4).encode(&mut enc);
    let last_start = full.len() - (8 + enc.len());
    for cut in last_start..full.len() {
        std::fs::write(&seg, &full[..cut]).unwrap();
        let replay = read_log(&d, 0, false).unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
        assert_eq!(replay.records.len(), 4, "cut at {cut}");
        assert_eq!(replay.torn_bytes, (cut - last_start) as u64);
        assert_eq!(std::fs::metadata(&seg).unwrap().len(), last_start as u64, "the torn bytes are removed");
        // And the log takes new records after the cut.
        let log = CommitLog::open(
            LogConfig { dir: d.clone(), durability: Durability::Sync, segment_max_bytes: 1 << 20, faults: None },
            4,
        )
        .unwrap();
        log.append(&record(4));
        drop(log);
        assert_eq!(read_log(&d, 0, false).unwrap().records.len(), 5);
    }
}

#[test]
fn a_flipped_byte_in_the_middle_stops_replay_with_its_location() {
    let d = dir("flip");
    write(&d, 10, 1 << 20);
    let seg = only_segment(&d);
    let mut bytes = std::fs::read(&seg).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&seg, &bytes).unwrap();
    match read_log(&d, 0, false) {
        Err(LogError::Corrupt { segment, byte_offset, last_good, .. }) => {
            assert_eq!(segment, seg);
            assert!(byte_offset as usize <= mid);
            let msg = LogError::Corrupt { segment, byte_offset, last_good, reason: "x".into() }.to_string();
            assert!(msg.contains("--recover-truncate"), "{msg}");
            assert!(last_good.is_some_and(|g| g < 9));
        }
        other => panic!("expected corruption, got {other:?}"),
    }
    // The operator may choose to start from the last good transaction.
    let replay = read_log(&d, 0, true).unwrap();
    assert!(replay.truncated_at.is_some());
    let kept = replay.records.len();
    assert!(kept > 0 && kept < 10);
    assert_eq!(replay.records, (0..kept as u64).map(record).collect::<Vec<_>>());
    assert_eq!(read_log(&d, 0, false).unwrap().records.len(), kept, "the cut is permanent");
}

#[test]
fn damaged_or_deleted_newest_snapshot_falls_back_to_the_previous() {
    let d = dir("snap");
    let snap = |offset: u64| Snapshot {
        offset,
        tables: vec![(1, [&[offset as u8; 4][..], &[7; 2][..]].into_iter().collect()), (2, Default::default())],
        sequences: vec![SequenceState { table_id: 1, column: 0, next: 99 }],
        steps: if offset == 30 {
            vec![AppliedSteps { instance: "wf_a".into(), batch: 3, items: vec!["hub/h-1".into(), "hub/h-2".into()] }]
        } else {
            Vec::new()
        },
    };
    write_snapshot(&d, &snap(10), 2).unwrap();
    write_snapshot(&d, &snap(20), 2).unwrap();
    let oldest_kept = write_snapshot(&d, &snap(30), 2).unwrap();
    assert_eq!(oldest_kept, 20, "only two snapshots are kept");
    assert_eq!(read_latest_snapshot(&d), Some(snap(30)));
    let newest = d.join(format!("{:020}.snap", 30));
    let mut bytes = std::fs::read(&newest).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 1;
    std::fs::write(&newest, &bytes).unwrap();
    assert_eq!(read_latest_snapshot(&d), Some(snap(20)), "a damaged snapshot is skipped");
    std::fs::remove_file(&newest).unwrap();
    assert_eq!(read_latest_snapshot(&d), Some(snap(20)), "a deleted snapshot is not needed");
}

#[test]
fn on_durable_runs_after_the_record_is_synced_in_both_modes() {
    for durability in [Durability::Sync, Durability::Async { interval: Duration::from_millis(20) }] {
        let d = dir(&format!("durable-{}", matches!(durability, Durability::Sync)));
        let log =
            CommitLog::open(LogConfig { dir: d.clone(), durability, segment_max_bytes: 1 << 20, faults: None }, 0)
                .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        for i in 0..100 {
            log.append(&record(i));
            let tx = tx.clone();
            log.on_durable(i, move || tx.send(i).unwrap());
        }
        let mut acked: Vec<u64> = (0..100).map(|_| rx.recv_timeout(Duration::from_secs(10)).unwrap()).collect();
        acked.sort();
        assert_eq!(acked, (0..100).collect::<Vec<_>>());
        drop(log);
        assert_eq!(read_log(&d, 0, false).unwrap().records.len(), 100);
    }
}

#[test]
fn sync_to_disk_returns_in_async_mode_without_waiting_for_the_timer() {
    let d = dir("async-sync");
    let config = LogConfig {
        dir: d.clone(),
        durability: Durability::Async { interval: Duration::from_secs(3600) },
        segment_max_bytes: 1 << 20,
        faults: None,
    };
    let log = CommitLog::open(config, 0).unwrap();
    for i in 0..5 {
        log.append(&record(i));
    }
    // Returning at all is the check: the timer would take an hour.
    log.sync_to_disk();
    assert_eq!(read_log(&d, 0, false).unwrap().records, (0..5).map(record).collect::<Vec<_>>());
    drop(log);
    let _ = std::fs::remove_dir_all(&d);
}
