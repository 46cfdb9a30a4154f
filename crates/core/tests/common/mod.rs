//! Helpers shared by the module tests: loading fixture modules and calling reducers.
#![allow(dead_code)]

use epoch_core::{Caller, Database, HostConfig, Identity, ReducerArgs, ReducerOutcome};

pub const OWNER: Identity = Identity([7; 32]);
pub const DB_IDENTITY: Identity = Identity([9; 32]);

pub fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/../../tests/fixtures/modules/{name}.wasm", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

pub fn load(name: &str) -> Database {
    load_with(name, HostConfig::default())
}

pub fn load_with(name: &str, config: HostConfig) -> Database {
    Database::create(&fixture(name), DB_IDENTITY, Caller::identity(OWNER), config).expect("module loads")
}

/// Calls a reducer with JSON arguments as the owner; returns the outcome.
pub fn call(db: &mut Database, reducer: &str, args: &str) -> ReducerOutcome {
    call_as(db, OWNER, reducer, args)
}

pub fn call_as(db: &mut Database, who: Identity, reducer: &str, args: &str) -> ReducerOutcome {
    db.call(reducer, ReducerArgs::Json(args.to_string()), Caller::identity(who))
        .unwrap_or_else(|e| panic!("calling {reducer}: {e}"))
        .outcome
}

pub fn rows(db: &Database, table: &str) -> Vec<serde_json::Value> {
    db.rows_json(table).expect("table exists").iter().map(|s| serde_json::from_str(s).expect("row json")).collect()
}
