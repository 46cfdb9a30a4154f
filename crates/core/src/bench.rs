//! Benchmark workloads of the in-process engine for `benches/`: each returns what it measured.

use std::time::{Duration, Instant};

use epoch_host::HostConfig;
use epoch_sats::{AlgebraicValue, Identity};

use crate::{Caller, Database, ReducerArgs};

/// One measured figure.
#[derive(Debug, Clone)]
pub struct Measurement {
    pub name: &'static str,
    pub iterations: u64,
    pub elapsed: Duration,
}

impl Measurement {
    pub fn per_op(&self) -> Duration {
        self.elapsed / self.iterations.max(1) as u32
    }
    pub fn ops_per_sec(&self) -> f64 {
        self.iterations as f64 / self.elapsed.as_secs_f64()
    }
}

const BENCH_OWNER: Identity = Identity([1; 32]);

/// The BSATN module definition of a module with one reducer, `noop`, that takes no arguments.
pub fn noop_module_def() -> Vec<u8> {
    let mut d = vec![1u8]; // RawModuleDef::V9
    d.extend_from_slice(&0u32.to_le_bytes()); // typespace
    d.extend_from_slice(&0u32.to_le_bytes()); // tables
    d.extend_from_slice(&1u32.to_le_bytes()); // reducers
    epoch_sats::bsatn::write::str(&mut d, "noop");
    d.extend_from_slice(&0u32.to_le_bytes()); // params: empty product
    d.push(1); // lifecycle: none
    d.extend_from_slice(&0u32.to_le_bytes()); // types
    d.extend_from_slice(&0u32.to_le_bytes()); // misc exports
    d.extend_from_slice(&0u32.to_le_bytes()); // row-level security
    d
}

/// A hand-written module that describes itself with `def` (BSATN) and whose `__call_reducer__`
/// runs the WebAssembly text `body`; `extra_imports` are added to its imports. For benchmarks
/// and tests that need a module the fixtures do not provide.
pub fn module_wat(def: &[u8], body: &str, extra_imports: &str) -> String {
    let escaped: String = def.iter().map(|b| format!("\\{b:02x}")).collect();
    format!(
        r#"(module
  (import "spacetime_10.0" "bytes_sink_write" (func $sink_write (param i32 i32 i32) (result i32)))
  {extra_imports}
  (memory (export "memory") 1)
  (data (i32.const 16) "{escaped}")
  (func (export "__describe_module__") (param $sink i32)
    (i32.store (i32.const 8) (i32.const {len}))
    (drop (call $sink_write (local.get $sink) (i32.const 16) (i32.const 8))))
  (func (export "__call_reducer__") (param i32 i64 i64 i64 i64 i64 i64 i64 i32 i32) (result i32)
    {body}))"#,
        len = def.len()
    )
}

/// A module whose only reducer, `noop`, returns at once: the host's own cost per call.
pub fn noop_module_wat() -> String {
    module_wat(&noop_module_def(), "(i32.const 0)", "")
}

fn caller() -> Caller {
    Caller::identity(BENCH_OWNER)
}

/// Calls the `noop` reducer `n` times.
pub fn empty_reducer(n: u64) -> Measurement {
    let mut db = Database::create(noop_module_wat().as_bytes(), Identity([2; 32]), caller(), HostConfig::default())
        .expect("the noop module loads");
    let start = Instant::now();
    for _ in 0..n {
        let r = db.call("noop", ReducerArgs::Bsatn(Vec::new()), caller()).expect("noop exists");
        debug_assert!(r.outcome.is_committed());
    }
    Measurement { name: "empty reducer call (noop module)", iterations: n, elapsed: start.elapsed() }
}

/// `bank.transfer_fast` between 1,000 accounts, `n` times, arguments already BSATN.
pub fn transfer_fast(bank_wasm: &[u8], n: u64) -> Measurement {
    let mut db = Database::create(bank_wasm, Identity([3; 32]), caller(), HostConfig::default()).expect("bank loads");
    db.call("open_accounts", ReducerArgs::Json("[0, 1000, 1000000000]".into()), caller()).expect("open");
    let args: Vec<Vec<u8>> = (0..1000u32)
        .map(|i| {
            let v = AlgebraicValue::product([
                AlgebraicValue::U32(i),
                AlgebraicValue::U32((i * 7 + 1) % 1000),
                AlgebraicValue::I64(1),
            ]);
            epoch_sats::bsatn::to_vec(&v)
        })
        .collect();
    let start = Instant::now();
    for i in 0..n {
        let r =
            db.call("transfer_fast", ReducerArgs::Bsatn(args[(i % 1000) as usize].clone()), caller()).expect("call");
        debug_assert!(r.outcome.is_committed());
    }
    Measurement { name: "bank.transfer_fast", iterations: n, elapsed: start.elapsed() }
}

/// Inserts `rows` accounts through one `bank.open_accounts` call (a reducer loop).
pub fn insert_rows(bank_wasm: &[u8], rows: u32) -> Measurement {
    let mut db = Database::create(bank_wasm, Identity([4; 32]), caller(), HostConfig::default()).expect("bank loads");
    let start = Instant::now();
    let r = db.call("open_accounts", ReducerArgs::Json(format!("[0, {rows}, 1]")), caller()).expect("call");
    assert!(r.outcome.is_committed(), "{:?}", r.outcome);
    Measurement { name: "rows inserted by a reducer loop", iterations: rows as u64, elapsed: start.elapsed() }
}

/// Point lookups by primary key in a table of `rows` accounts.
pub fn point_lookups(bank_wasm: &[u8], rows: u32, n: u64) -> Measurement {
    let mut db = Database::create(bank_wasm, Identity([5; 32]), caller(), HostConfig::default()).expect("bank loads");
    db.call("open_accounts", ReducerArgs::Json(format!("[0, {rows}, 1]")), caller()).expect("open");
    let index = db.store().index_id("account_id_idx_btree").expect("primary key index");
    let start = Instant::now();
    let mut found = 0u64;
    for i in 0..n {
        let key = AlgebraicValue::U32(((i * 2_654_435_761) % rows as u64) as u32);
        found += db.store().find_by_unique(index, &key).ok().flatten().is_some() as u64;
    }
    assert_eq!(found, n);
    Measurement { name: "point lookup by primary key", iterations: n, elapsed: start.elapsed() }
}

/// Start-up times of a durable database holding `rows` accounts: (from the log only, from a
/// snapshot, bytes on disk with the snapshot).
pub fn recovery(bank_wasm: &[u8], rows: u32) -> (Measurement, Measurement, u64) {
    use crate::persist::PersistConfig;
    let dir = std::env::temp_dir().join(format!("epoch-bench-recovery-{}", std::process::id()));
    let config = PersistConfig { snapshot_every: u64::MAX, ..PersistConfig::default() };
    let identity = Identity([6; 32]);
    {
        let mut db =
            Database::create_persistent(bank_wasm, identity, caller(), HostConfig::default(), &dir, config.clone())
                .expect("bank loads");
        let r = db.call("open_accounts", ReducerArgs::Json(format!("[0, {rows}, 1]")), caller()).expect("call");
        assert!(r.outcome.is_committed());
    }
    let open = |what: &'static str| {
        let start = Instant::now();
        let (db, _) = Database::open_persistent(bank_wasm, identity, HostConfig::default(), &dir, config.clone())
            .expect("recovers");
        let elapsed = start.elapsed();
        assert_eq!(db.store().table_by_name("account").map(|t| t.len()), Some(rows as usize));
        (db, Measurement { name: what, iterations: rows as u64, elapsed })
    };
    let (mut db, from_log) = open("start from the log only (rows)");
    db.snapshot_now().expect("snapshot");
    drop(db);
    let (_, from_snapshot) = open("start from a snapshot (rows)");
    let bytes = dir_size(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    (from_log, from_snapshot, bytes)
}

fn dir_size(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}
