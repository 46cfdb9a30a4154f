//! The official client SDKs, unchanged, against Epoch: a TypeScript client on
//! `@clockworklabs/spacetimedb-sdk` 1.3.3 under node (`tests/sdk/typescript/`) and a Rust client
//! on `spacetimedb-sdk` 1.3.2 (`tests/sdk/rust/`), each with bindings made by `spacetime
//! generate` from the `chat` fixture. Each connects, subscribes, receives the initial rows, calls
//! reducers, sees inserts, updates and reducer events (a failure too) and disconnects;
//! `client_disconnected` runs.
//!
//! `scripts/test.sh` installs the TypeScript SDK, `undici` and `esbuild` under
//! `~/.cache/epoch/ts-sdk`, builds the Rust client into `~/.cache/epoch/rust-sdk-target`, and
//! sets `EPOCH_REQUIRE_SDKS=1`, so CI cannot skip these tests.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::Server;
use serde_json::Value;

fn sdk_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("EPOCH_TS_SDK_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/epoch/ts-sdk")))?;
    dir.join("node_modules/@clockworklabs/spacetimedb-sdk").is_dir().then_some(dir)
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn typescript_sdk_client_runs_against_epoch() {
    let Some(sdk) = sdk_dir() else {
        assert!(
            std::env::var_os("EPOCH_REQUIRE_SDKS").is_none(),
            "the TypeScript SDK is required (scripts/test.sh installs it)"
        );
        eprintln!("skipping: the TypeScript SDK is not installed (scripts/test.sh installs it)");
        return;
    };
    // Bundled next to the SDK's node_modules, where node finds `undici` at run time.
    let bundle = sdk.join(format!("chat_client-{}.mjs", std::process::id()));
    let out = Command::new(sdk.join("node_modules/.bin/esbuild"))
        .arg(repo().join("tests/sdk/typescript/chat_client.ts"))
        .args(["--bundle", "--platform=node", "--format=esm", "--external:undici", "--log-level=warning"])
        .arg(format!("--outfile={}", bundle.display()))
        .env("NODE_PATH", sdk.join("node_modules"))
        .output()
        .expect("esbuild runs");
    assert!(out.status.success(), "bundling: {}", String::from_utf8_lossy(&out.stderr));

    let (server, owner, db) = chat_server();
    let ws_url = server.url.replacen("http://", "ws://", 1);
    let out = Command::new("node").arg(&bundle).args([&ws_url, &db, "ts-user"]).output().expect("node runs");
    std::fs::remove_file(&bundle).ok();
    check_client_run(&server, &owner, &db, &out, "ts-user");
}

#[test]
fn rust_sdk_client_runs_against_epoch() {
    let client = std::env::var_os("EPOCH_RUST_SDK_CLIENT").map(PathBuf::from).or_else(|| {
        std::env::var_os("HOME")
            .map(|h| PathBuf::from(h).join(".cache/epoch/rust-sdk-target/debug/epoch-rust-sdk-client"))
    });
    let Some(client) = client.filter(|c| c.is_file()) else {
        assert!(
            std::env::var_os("EPOCH_REQUIRE_SDKS").is_none(),
            "the Rust SDK client is required (scripts/test.sh builds it)"
        );
        eprintln!("skipping: the Rust SDK client is not built (scripts/test.sh builds it)");
        return;
    };
    let (server, owner, db) = chat_server();
    let out = Command::new(client).args([&server.url, &db, "rs-user"]).output().expect("the client runs");
    check_client_run(&server, &owner, &db, &out, "rs-user");
}

/// A server with the `chat` fixture published: (server, owner token, database).
fn chat_server() -> (Server, String, String) {
    let server = Server::start(&[]);
    let (_, owner) = server.identity();
    let db = format!("chat{}", common::rand_suffix());
    assert!(server.publish(&owner, &db, "chat").status().is_success());
    (server, owner, db)
}

/// Checks what a client printed (see the clients' sources) and that it left.
fn check_client_run(server: &Server, owner: &str, db: &str, out: &std::process::Output, handle: &str) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "the client failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let events: Vec<Value> =
        stdout.lines().filter(|l| l.starts_with('{')).map(|l| serde_json::from_str(l).unwrap()).collect();
    let find = |name: &str| events.iter().filter(|e| e["event"] == name).cloned().collect::<Vec<_>>();

    assert_eq!(find("applied")[0]["members"], 1, "its own member row, from client_connected: {stdout}");
    assert_eq!(find("set_handle")[0]["status"], "Committed");
    let update = &find("member_update")[0];
    assert_eq!((update["old"].clone(), update["handle"].clone()), (Value::Null, Value::from(handle)), "{stdout}");
    let posts = find("send_post");
    assert_eq!(posts[0]["status"], "Committed");
    assert_eq!((posts[1]["status"].as_str(), posts[1]["message"].as_str()), (Some("Failed"), Some("empty post")));
    let hello = format!("hello from {handle}");
    assert_eq!(find("post_insert")[0]["body"], hello.as_str());
    // A delete: the second post, retracted.
    assert_eq!(find("retract")[0]["status"], "Committed", "{stdout}");
    assert_eq!(find("post_delete")[0]["body"], format!("bye from {handle}").as_str(), "{stdout}");
    assert_eq!(find("cached")[0]["posts"], serde_json::json!([hello]));

    // client_disconnected ran when it left.
    let (_, rows) = server.sql(Some(owner), db, "SELECT handle, online FROM member");
    let rows: Value = serde_json::from_str(&rows).unwrap();
    let mut offline = false;
    for _ in 0..50 {
        let (_, rows) = server.sql(Some(owner), db, "SELECT online FROM member WHERE online = false");
        offline = serde_json::from_str::<Value>(&rows).unwrap()[0]["rows"].as_array().is_some_and(|r| r.len() == 1);
        if offline {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(offline, "client_disconnected marks the member offline: {rows}");
}
