//! Modules that cannot be loaded fail with clear error values, never a panic; and host-side
//! failures (out of memory) are reported as such.
mod common;
use common::*;

use epoch_core::{bench, Caller, CreateError, Database, HostConfig, ReducerArgs, ReducerOutcome};
use epoch_host::HostError;

fn create(wasm: &[u8]) -> Result<Database, CreateError> {
    Database::create(wasm, DB_IDENTITY, Caller::identity(OWNER), HostConfig::default())
}

fn module_with(def: &[u8], body: &str, extra_imports: &str) -> String {
    bench::module_wat(def, body, extra_imports)
}

#[test]
fn a_file_that_is_not_wasm_is_refused() {
    let err = create(b"definitely not wasm").err().expect("refused");
    assert!(matches!(err, CreateError::Host(HostError::InvalidWasm(_))), "{err}");
}

#[test]
fn a_module_without_describe_module_is_refused() {
    let wat = r#"(module (memory (export "memory") 1)
        (func (export "__call_reducer__") (param i32 i64 i64 i64 i64 i64 i64 i64 i32 i32) (result i32) (i32.const 0)))"#;
    let err = create(wat.as_bytes()).err().expect("refused");
    assert!(matches!(err, CreateError::Host(HostError::MissingExport("__describe_module__"))), "{err}");
    assert!(err.to_string().contains("__describe_module__"));
}

#[test]
fn a_module_importing_an_unknown_host_function_is_refused() {
    let wat =
        module_with(&bench::noop_module_def(), "(i32.const 0)", r#"(import "spacetime_10.0" "launch_rockets" (func))"#);
    let err = create(wat.as_bytes()).err().expect("refused");
    match err {
        CreateError::Host(HostError::UnknownImport { module, name }) => {
            assert_eq!((module.as_str(), name.as_str()), ("spacetime_10.0", "launch_rockets"))
        }
        other => panic!("unexpected {other}"),
    }
    let wat = module_with(
        &bench::noop_module_def(),
        "(i32.const 0)",
        r#"(import "spacetime_11.0" "identity" (func (param i32)))"#,
    );
    assert!(matches!(create(wat.as_bytes()), Err(CreateError::Host(HostError::UnknownImport { .. }))));
}

#[test]
fn a_description_that_fails_validation_is_a_clear_error() {
    // One table whose row type refers to type 5 of an empty typespace.
    let mut def = vec![1u8];
    def.extend_from_slice(&0u32.to_le_bytes()); // typespace: no types
    def.extend_from_slice(&1u32.to_le_bytes()); // one table
    epoch_sats::bsatn::write::str(&mut def, "things");
    def.extend_from_slice(&5u32.to_le_bytes()); // product_type_ref: dangling
    for _ in 0..4 {
        def.extend_from_slice(&0u32.to_le_bytes()); // primary key, indexes, constraints, sequences
    }
    def.extend_from_slice(&[1, 1, 0]); // no schedule, User, Public
    for _ in 0..4 {
        def.extend_from_slice(&0u32.to_le_bytes()); // reducers, types, misc, rls
    }
    let err = create(module_with(&def, "(i32.const 0)", "").as_bytes()).err().expect("refused");
    let msg = err.to_string();
    assert!(msg.contains("things") && msg.contains("type 5"), "{msg}");

    // Truncated and garbage descriptions are decode errors, not panics.
    for bytes in [&def[..def.len() - 3], &[0u8][..], &[7u8, 1, 2][..], &[][..]] {
        let err = create(module_with(bytes, "(i32.const 0)", "").as_bytes()).err().expect("refused");
        assert!(err.to_string().contains("module"), "{err}");
    }
}

/// A module definition with reducers `grow` (id 0) and `noop` (id 1), both without arguments.
fn grow_and_noop_def() -> Vec<u8> {
    let mut d = vec![1u8];
    d.extend_from_slice(&0u32.to_le_bytes()); // typespace
    d.extend_from_slice(&0u32.to_le_bytes()); // tables
    d.extend_from_slice(&2u32.to_le_bytes()); // reducers
    for name in ["grow", "noop"] {
        epoch_sats::bsatn::write::str(&mut d, name);
        d.extend_from_slice(&0u32.to_le_bytes()); // no parameters
        d.push(1); // not a lifecycle reducer
    }
    for _ in 0..3 {
        d.extend_from_slice(&0u32.to_le_bytes()); // types, misc exports, row-level security
    }
    d
}

#[test]
fn a_reducer_that_outgrows_the_memory_cap_fails_with_out_of_memory_and_the_database_keeps_serving() {
    // Reducer 0 asks for 64 MiB more memory and, when refused, traps as allocators do.
    let body = "(if (i32.eqz (local.get 0)) (then (if (i32.lt_s (memory.grow (i32.const 1024)) (i32.const 0)) (then unreachable)))) (i32.const 0)";
    let wat = module_with(&grow_and_noop_def(), body, "");
    let config = HostConfig { memory_max_bytes: 16 << 20, ..HostConfig::default() };
    let mut db = Database::create(wat.as_bytes(), DB_IDENTITY, Caller::identity(OWNER), config).expect("loads");
    let owner = Caller::identity(OWNER);
    let r = db.call("grow", ReducerArgs::Bsatn(Vec::new()), owner).unwrap();
    assert_eq!(r.outcome, ReducerOutcome::OutOfMemory);
    assert!(r.outcome.is_host_failure());
    // The same database keeps serving: the instance is replaced after the trap.
    for _ in 0..3 {
        assert_eq!(db.call("noop", ReducerArgs::Bsatn(Vec::new()), owner).unwrap().outcome, ReducerOutcome::Committed);
    }
    // With room to grow, the same reducer succeeds.
    let mut db = Database::create(wat.as_bytes(), DB_IDENTITY, owner, HostConfig::default()).unwrap();
    assert_eq!(db.call("grow", ReducerArgs::Bsatn(Vec::new()), owner).unwrap().outcome, ReducerOutcome::Committed);
}

#[test]
fn fixture_modules_are_all_valid() {
    for m in ["bank", "chat", "typecheck", "projections"] {
        assert!(create(&fixture(m)).is_ok(), "{m}");
    }
}
