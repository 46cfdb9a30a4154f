//! The `epoch` binary, run as a user would: load a module, call reducers, show tables.
use std::process::Command;

fn fixture(name: &str) -> String {
    format!("{}/../../tests/fixtures/modules/{name}.wasm", env!("CARGO_MANIFEST_DIR"))
}

fn epoch(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_epoch")).args(args).output().expect("epoch runs")
}

#[test]
fn run_calls_reducers_in_order_and_prints_tables() {
    let out = epoch(&[
        "run",
        &fixture("bank"),
        "--call",
        "open_accounts",
        "[0, 2, 50]",
        "--call",
        "transfer",
        "[0, 1, 20]",
        "--show",
        "account",
        "--show",
        "ledger",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("open_accounts: committed"));
    assert!(stdout.contains(r#"{"id":0,"balance":30,"branch":0}"#), "{stdout}");
    assert!(stdout.contains(r#"{"id":1,"balance":70,"branch":1}"#), "{stdout}");
    assert!(stdout.contains(r#"{"seq":1,"from":0,"to":1,"amount":20}"#), "{stdout}");
}

#[test]
fn a_failing_reducer_is_reported_and_sets_the_exit_code() {
    let out = epoch(&["run", &fixture("bank"), "--call", "transfer", "[0, 1, 20]"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stdout).contains("transfer: failed: unknown source"));
}

#[test]
fn bad_arguments_and_missing_files_are_errors_not_panics() {
    let out = epoch(&["run", &fixture("bank"), "--call", "transfer", "[\"x\"]"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid arguments for reducer transfer"));
    let out = epoch(&["run", "/nonexistent.wasm"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("reading /nonexistent.wasm"));
}

#[test]
fn schema_prints_the_v9_document() {
    let out = epoch(&["run", &fixture("chat"), "--schema"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["tables"][0]["name"], "audit");
}
