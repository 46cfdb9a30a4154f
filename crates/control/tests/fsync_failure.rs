//! A failed fsync while writers run (injected through the commitlog's test seam): the
//! database stops acknowledging, reopens by itself from what is on disk, and takes writes
//! again. Every acknowledged transfer is there, before and after a fresh open, and the bank's
//! invariants hold: money is conserved and every balance is what its ledger says.

#[path = "../../core/tests/common/mod.rs"]
mod common;
use common::*;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use epoch_control::ControlPlane;
use epoch_core::{Caller, HostConfig, Identity, PersistConfig, ReducerArgs, ReducerOutcome};

use epoch_commitlog::FailNextSync;

const DB: Identity = Identity([4; 32]);
const ACCOUNTS: u32 = 8;
const START: i64 = 1_000_000_000_000;
const WRITERS: u32 = 4;

/// A transfer, acknowledged once its `Ok` came back (only after it is durable).
fn transfer(cp: &ControlPlane, from: u32, to: u32, amount: i64) -> bool {
    let Some(db) = cp.get(&DB) else { return false };
    let args = ReducerArgs::Json(format!("[{from}, {to}, {amount}]"));
    let r = db.handle.with(move |d| d.call("transfer", args, Caller::identity(OWNER)));
    matches!(r, Ok(Ok(ref x)) if x.outcome == ReducerOutcome::Committed)
}

/// Checks the bank's invariants and that every acknowledged amount is in the ledger.
fn check(cp: &ControlPlane, acknowledged: &[i64]) -> usize {
    let db = cp.get(&DB).expect("the database serves");
    let (accounts, ledger) = db.handle.with(|d| (rows(d, "account"), rows(d, "ledger"))).expect("the database answers");
    let mut expected: BTreeMap<u64, i64> = (0..ACCOUNTS as u64).map(|i| (i, START)).collect();
    let mut amounts = std::collections::BTreeSet::new();
    for l in &ledger {
        let amount = l["amount"].as_i64().unwrap();
        assert!(amounts.insert(amount), "amount {amount} applied twice");
        *expected.get_mut(&l["from"].as_u64().unwrap()).unwrap() -= amount;
        *expected.get_mut(&l["to"].as_u64().unwrap()).unwrap() += amount;
    }
    let balances: BTreeMap<u64, i64> =
        accounts.iter().map(|a| (a["id"].as_u64().unwrap(), a["balance"].as_i64().unwrap())).collect();
    assert_eq!(balances, expected, "every balance is what the ledger says");
    assert_eq!(balances.values().sum::<i64>(), START * ACCOUNTS as i64, "money is conserved");
    let missing: Vec<_> = acknowledged.iter().filter(|a| !amounts.contains(a)).collect();
    assert!(missing.is_empty(), "acknowledged transfers lost: {missing:?}");
    ledger.len()
}

/// What the writers of the failed-fsync test saw.
#[derive(Default)]
struct Tally {
    acknowledged: Mutex<Vec<i64>>,
    refused: AtomicUsize,
    /// Transfers acknowledged by the reopened database.
    after_reopen: AtomicUsize,
    stop: AtomicBool,
}

/// Writer `w`: transfers with unique amounts (each ledger row names its transfer) between its
/// own two accounts until stopped.
fn transfer_until_stopped(cp: &ControlPlane, w: u32, first: &Arc<epoch_control::HostedDatabase>, tally: &Tally) {
    let mut i = 0i64;
    while !tally.stop.load(Ordering::SeqCst) {
        let amount = (w as i64 + 1) * 1_000_000 + i;
        let (from, to) = if i % 2 == 0 { (2 * w, 2 * w + 1) } else { (2 * w + 1, 2 * w) };
        let reopened = cp.get(&DB).is_some_and(|d| !Arc::ptr_eq(&d, first));
        if transfer(cp, from, to, amount) {
            tally.acknowledged.lock().unwrap().push(amount);
            if reopened {
                tally.after_reopen.fetch_add(1, Ordering::SeqCst);
            }
        } else {
            tally.refused.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(5));
        }
        i += 1;
    }
}

/// A durable control plane in `dir` whose fsyncs `faults` can fail, with the bank published
/// as `bank` and its accounts opened.
fn bank(dir: &std::path::Path, faults: &Arc<FailNextSync>) -> Arc<ControlPlane> {
    let persist = PersistConfig { faults: Some(faults.clone()), ..PersistConfig::default() };
    let cp = Arc::new(ControlPlane::open(dir, HostConfig::default(), persist).unwrap());
    cp.watch_logs();
    cp.publish(DB, OWNER, &fixture("bank"), false, Default::default()).unwrap();
    cp.add_name("bank", DB, OWNER).unwrap();
    let args = ReducerArgs::Json(format!("[0, {ACCOUNTS}, {START}]"));
    let opened = cp.get(&DB).unwrap().handle.with(move |d| d.call("open_accounts", args, Caller::identity(OWNER)));
    assert!(matches!(opened, Ok(Ok(_))));
    cp
}

#[test]
fn a_failed_fsync_stops_acknowledging_and_the_database_reopens_from_disk() {
    let dir = std::env::temp_dir().join(format!("epoch-fsyncfail-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let faults = Arc::new(FailNextSync::default());
    let cp = bank(&dir, &faults);
    let first = cp.get(&DB).unwrap();
    let tally = Tally::default();
    std::thread::scope(|s| {
        for w in 0..WRITERS {
            let (cp, first, tally) = (&cp, &first, &tally);
            s.spawn(move || transfer_until_stopped(cp, w, first, tally));
        }
        while tally.acknowledged.lock().unwrap().len() < 200 {
            std::thread::sleep(Duration::from_millis(2));
        }
        faults.armed.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(30);
        while tally.after_reopen.load(Ordering::SeqCst) < 100 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        tally.stop.store(true, Ordering::SeqCst);
    });
    let after_reopen = tally.after_reopen.load(Ordering::SeqCst);
    assert!(after_reopen >= 100, "the database never took writes again after the failed fsync");
    assert_eq!(faults.fired.load(Ordering::SeqCst), 1, "the fsync failure was injected");
    assert!(
        tally.refused.load(Ordering::SeqCst) >= 1,
        "the transfers caught by the failed fsync were not acknowledged"
    );
    let reopened = cp.get(&DB).unwrap();
    assert!(!Arc::ptr_eq(&reopened, &first), "the database was reopened");
    assert_eq!(reopened.created_seq, first.created_seq, "it keeps its place");
    assert!(reopened.storage_failure().is_none());
    assert_eq!(cp.resolve_name("bank"), Some(DB));
    let acknowledged = tally.acknowledged.into_inner().unwrap();
    let rows = check(&cp, &acknowledged);
    assert!(rows >= acknowledged.len());
    drop((first, reopened));

    // The system database too: a write whose fsync fails is refused, not acknowledged; the
    // system tables reopen from disk and take writes again.
    faults.armed.store(true, Ordering::SeqCst);
    let refused = cp.add_name("bank-refused", DB, OWNER);
    assert!(refused.is_err(), "a system write whose fsync failed was acknowledged");
    assert_eq!(faults.fired.load(Ordering::SeqCst), 2);
    let deadline = Instant::now() + Duration::from_secs(10);
    while cp.add_name("bank-again", DB, OWNER).is_err() {
        assert!(Instant::now() < deadline, "the system database never took writes again");
        std::thread::sleep(Duration::from_millis(50));
    }
    let refused_name = cp.resolve_name("bank-refused");
    drop(cp);

    // A fresh start finds the same: every acknowledged transfer is on disk.
    let cp = ControlPlane::open(&dir, HostConfig::default(), PersistConfig::default()).unwrap();
    assert_eq!(check(&cp, &acknowledged), rows, "what the reopened database served is what the disk holds");
    assert_eq!(cp.resolve_name("bank-again"), Some(DB), "the system write after the reopen is durable");
    // The refused write's outcome is whatever the file held when the system tables reopened
    // (it was written, its fsync failed): never acknowledged, it may or may not be there, but
    // the control plane agrees with the disk either way.
    assert_eq!(cp.resolve_name("bank-refused"), refused_name);
    drop(cp);
    let _ = std::fs::remove_dir_all(&dir);
}
