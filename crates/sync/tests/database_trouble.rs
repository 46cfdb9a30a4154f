//! A workflow running while its database's log fails an fsync (injected through the
//! commitlog's test seam): the database reopens from disk, and the workflow waits for it
//! instead of counting the items caught in the failure as failed and moving past them. Every
//! item is applied exactly once: the ledger holds each transfer's unique amount once.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use epoch_control::ControlPlane;
use epoch_core::Identity;
use epoch_core::{Caller, HostConfig, PersistConfig, ReducerArgs};
use epoch_sync::{
    ConfigContext, Instance, Item, ItemError, Kind, KindSpec, ListError, RunParams, Runner, RunnerError, Status,
};
use serde_json::{json, Map, Value};

const DB: Identity = Identity([6; 32]);
const OWNER: Identity = Identity([7; 32]);
const ITEMS: u64 = 600;
const BATCH: u32 = 20;

use epoch_commitlog::FailNextSync;

/// A kind whose item `n` (1..=ITEMS) is a transfer of `n` from account 0 to account 1.
struct Transfers;

impl KindSpec for Transfers {
    fn name(&self) -> &'static str {
        "test-transfers"
    }
    fn config_section(&self) -> &'static str {
        "testTransfers"
    }
    fn validate_config(&self, _: &mut Map<String, Value>, _: &ConfigContext<'_>) -> Result<(), String> {
        Ok(())
    }
    fn scope(&self, _: &Instance) -> String {
        String::new()
    }
    fn open(&self, _: &Arc<ControlPlane>, _: &Instance) -> Result<Arc<dyn Kind>, RunnerError> {
        Ok(Arc::new(Transfers))
    }
}

impl Kind for Transfers {
    fn next_batch(&self, i: &Instance) -> Result<Vec<Item>, ListError> {
        let after = i.cursor.as_ref().and_then(|c| c["n"].as_u64()).unwrap_or(0);
        Ok((after + 1..=ITEMS)
            .take(i.params.batch_size as usize)
            .map(|n| Item { key: n.to_string(), cursor: json!({"n": n}) })
            .collect())
    }
    fn arguments(&self, _: &Instance, items: &[Item]) -> Vec<Result<epoch_core::ReducerArgs, ItemError>> {
        items.iter().map(|item| Ok(ReducerArgs::Json(format!("[0, 1, {}]", item.key)))).collect()
    }
    fn recount(&self, _: &Instance) -> Result<Option<BTreeMap<String, u64>>, RunnerError> {
        Ok(Some(BTreeMap::from([("transfers".to_string(), ITEMS)])))
    }
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/../../tests/fixtures/modules/{name}.wasm", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

#[test]
fn a_workflow_waits_out_a_failed_fsync_and_applies_each_item_once() {
    let dir = std::env::temp_dir().join(format!("epoch-sync-trouble-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let faults = Arc::new(FailNextSync::default());
    let persist = PersistConfig { faults: Some(faults.clone()), ..PersistConfig::default() };
    let control = Arc::new(ControlPlane::open(&dir, HostConfig::default(), persist).unwrap());
    control.watch_logs();
    control.publish(DB, OWNER, &fixture("bank"), false, Default::default()).unwrap();
    let opened = control
        .get(&DB)
        .unwrap()
        .handle
        .with(|d| d.call("open_accounts", ReducerArgs::Json("[0, 2, 1000000000]".into()), Caller::identity(OWNER)));
    assert!(matches!(opened, Ok(Ok(_))));
    let runner = Runner::open(control.clone(), Duration::from_secs(3600), vec![Arc::new(Transfers)]).unwrap();
    let params = RunParams { batch_size: BATCH, delay_seconds: 0, max_attempts: 3, kind: Map::new() };
    let counts = Transfers
        .recount(&Instance::new(
            "",
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            params.clone(),
            None,
            Map::new(),
        ))
        .unwrap();
    let instance = Instance::new(
        "test-transfers",
        DB.to_hex(),
        OWNER.to_hex(),
        "test://".into(),
        "transfer".into(),
        params,
        counts,
        Map::new(),
    );
    let id = runner.start(instance).unwrap().id;
    let deadline = Instant::now() + Duration::from_secs(60);
    while runner.get(&id).unwrap().done < ITEMS / 4 {
        assert!(Instant::now() < deadline, "the workflow did not start");
        std::thread::sleep(Duration::from_millis(2));
    }
    faults.armed.store(true, Ordering::SeqCst);
    let done = loop {
        let i = runner.get(&id).unwrap();
        if i.status.is_finished() {
            break i;
        }
        assert!(Instant::now() < deadline, "the workflow did not finish: {i:?}");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(faults.fired.load(Ordering::SeqCst), 1, "the fsync failure was injected");
    assert_eq!(done.status, Status::Complete, "{:?}", done.errors);
    assert_eq!((done.succeeded, done.failed), (ITEMS, 0), "{:?}", done.errors);
    let ledger = control.get(&DB).unwrap().handle.with(|d| d.rows_json("ledger").unwrap()).unwrap();
    let mut amounts: Vec<u64> =
        ledger.iter().map(|r| serde_json::from_str::<Value>(r).unwrap()["amount"].as_u64().unwrap()).collect();
    amounts.sort();
    assert_eq!(amounts, (1..=ITEMS).collect::<Vec<_>>(), "each item applied exactly once");
    drop(runner);
    drop(control);
    let _ = std::fs::remove_dir_all(&dir);
}
