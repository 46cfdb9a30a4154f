//! Automatic migrations on publish, against the real binary: `bank` updated to `bank_v2` (a new
//! table whose name sorts first, an index added, an index removed, a table made private) keeps
//! every row and table id, serves the new schema, and its new index answers the module's
//! queries; a refused update leaves the old module running; a restart replays the log written
//! before the update; a crash between the two files an update writes leaves the old module
//! whole; SIGKILLs in the middle of updates leave a consistent database.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::Server;
use serde_json::Value;

fn temp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("epoch-migrate-{name}-{}-{}", std::process::id(), common::rand_suffix()))
}

fn rows(server: &Server, token: Option<&str>, q: &str) -> Vec<Value> {
    let (status, body) = server.sql(token, "mig", q);
    assert_eq!(status, 200, "{q}: {body}");
    serde_json::from_str::<Value>(&body).unwrap()[0]["rows"].as_array().unwrap().clone()
}

fn logs(server: &Server, token: &str) -> String {
    server
        .http()
        .get(format!("{}/v1/database/mig/logs?num_lines=200", server.url))
        .bearer_auth(token)
        .send()
        .unwrap()
        .text()
        .unwrap()
}

fn schema(server: &Server) -> Value {
    server.http().get(format!("{}/v1/database/mig/schema?version=9", server.url)).send().unwrap().json().unwrap()
}

fn table<'a>(schema: &'a Value, name: &str) -> Option<&'a Value> {
    schema["tables"].as_array().unwrap().iter().find(|t| t["name"] == name)
}

fn index_names(schema: &Value, table_name: &str) -> Vec<String> {
    table(schema, table_name).unwrap()["indexes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"]["some"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Publishes `bank` as `mig` with four accounts and one transfer; returns the owner's token.
fn bank_with_data(server: &Server) -> String {
    let (_, owner) = server.identity();
    assert!(server.publish(&owner, "mig", "bank").status().is_success());
    assert_eq!(server.call(&owner, "mig", "open_accounts", "[0, 4, 100]").0, 200);
    assert_eq!(server.call(&owner, "mig", "transfer", "[1, 2, 10]").0, 200);
    owner
}

fn balances(server: &Server, owner: &str) -> Vec<Value> {
    let mut r = rows(server, Some(owner), "SELECT id, balance FROM account");
    r.sort_by_key(|v| v[0].as_u64());
    r
}

#[test]
fn an_update_that_adds_and_changes_tables_keeps_every_row_and_table_id() {
    let dir = temp("update");
    let server = Server::start_in(dir.clone(), &[]);
    let owner = bank_with_data(&server);
    let (_, stranger) = server.identity();
    let before = balances(&server, &owner);
    assert_eq!(rows(&server, Some(&stranger), "SELECT id FROM account").len(), 4, "account is public in bank");

    let r = server.publish(&owner, "mig", "bank_v2");
    let status = r.status();
    let body: Value = r.json().unwrap();
    assert!(status.is_success(), "{body}");
    assert_eq!(body["Success"]["op"], "updated");

    // The data stayed, and the new schema is served.
    assert_eq!(balances(&server, &owner), before);
    assert_eq!(rows(&server, Some(&owner), "SELECT from, to, amount FROM ledger"), vec![serde_json::json!([1, 2, 10])]);
    let s = schema(&server);
    assert!(table(&s, "access_log").is_some(), "the new table");
    assert_eq!(table(&s, "account").unwrap()["table_access"], serde_json::json!({"Private": []}));
    assert!(index_names(&s, "ledger").contains(&"ledger_to_idx_btree".to_string()), "{:?}", index_names(&s, "ledger"));
    assert!(!index_names(&s, "account").contains(&"account_branch_idx_btree".to_string()));
    // st_table: the kept tables keep their ids, the new one comes after them.
    let ids = rows(&server, Some(&owner), "SELECT table_id, table_name FROM st_table WHERE table_type = 'user'");
    let mut ids: Vec<(u64, String)> =
        ids.iter().map(|r| (r[0].as_u64().unwrap(), r[1].as_str().unwrap().to_string())).collect();
    ids.sort();
    assert_eq!(ids, vec![(4097, "account".into()), (4098, "ledger".into()), (4099, "access_log".into())]);
    // Clients see the tables under their own names and ids after the update (the store keeps
    // the old numbering; the new table sorts first by name).
    let mut ws = common::ws::connect(&server.url, "mig", common::ws::JSON, "", Some(&owner)).unwrap();
    ws.recv_variant("IdentityToken");
    ws.send_json(serde_json::json!({"SubscribeSingle": {"query": "SELECT * FROM ledger", "request_id": 1, "query_id": {"id": 1}}}));
    let applied = ws.recv_variant("SubscribeApplied");
    assert_eq!(
        (applied["rows"]["table_name"].as_str(), applied["rows"]["table_id"].as_u64()),
        (Some("ledger"), Some(4098))
    );
    assert_eq!(server.call(&owner, "mig", "transfer", "[3, 1, 1]").0, 200);
    let tx = ws.recv_variant("TransactionUpdate");
    let t = &tx["status"]["Committed"]["tables"][0];
    assert_eq!((t["table_name"].as_str(), t["table_id"].as_u64()), (Some("ledger"), Some(4098)), "{tx}");
    ws.close();
    // A table made private is the owner's only.
    let (status, body) = server.sql(Some(&stranger), "mig", "SELECT id FROM account");
    assert_eq!((status, body.as_str()), (400, "`account` is not a valid table"));
    // The new index answers the module's query, and the new table takes rows.
    assert_eq!(server.call(&owner, "mig", "received", "[2]").0, 200);
    assert_eq!(server.call(&owner, "mig", "log_access", "[\"hello\"]").0, 200);
    assert_eq!(rows(&server, Some(&owner), "SELECT text FROM access_log"), vec![serde_json::json!(["hello"])]);
    let log = logs(&server, &owner);
    for line in [
        "Updated program to ",
        "Dropping index `account_branch_idx_btree` on table `account`",
        "Creating table `access_log`",
        "Creating index `ledger_to_idx_btree` on table `ledger`",
        "Database updated",
        "account 2 received 10",
    ] {
        assert!(log.contains(line), "module log lacks {line:?}:\n{log}");
    }
    assert!(
        log.find("Dropping index").unwrap() < log.find("Creating table `access_log`").unwrap(),
        "removals come first, as in 1.3"
    );

    // A refused update (chat removes every table) changes nothing and says why, as 1.3 does.
    let r = server.publish(&owner, "mig", "chat");
    assert_eq!(r.status().as_u16(), 400);
    let text = r.text().unwrap();
    assert!(text.starts_with("Database update rejected: Errors occurred:\n"), "{text}");
    assert!(text.contains("Removing the table account requires a manual migration\n\n"), "{text}");
    assert_eq!(server.call(&owner, "mig", "transfer", "[2, 3, 5]").0, 200, "the old module still runs");
    assert!(schema(&server)["tables"].as_array().unwrap().iter().any(|t| t["name"] == "access_log"));

    // A restart replays the log written before and after the update into the same tables.
    let after = balances(&server, &owner);
    server.crash();
    let server = Server::start_in(dir.clone(), &[]);
    assert_eq!(balances(&server, &owner), after);
    assert_eq!(rows(&server, Some(&owner), "SELECT text FROM access_log"), vec![serde_json::json!(["hello"])]);
    assert_eq!(rows(&server, Some(&owner), "SELECT amount FROM ledger").len(), 3);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The database's directory (the only one under `databases/`).
fn database_dir(data: &std::path::Path) -> PathBuf {
    let dbs: Vec<PathBuf> =
        std::fs::read_dir(data.join("databases")).unwrap().map(|e| e.unwrap().path()).filter(|p| p.is_dir()).collect();
    assert_eq!(dbs.len(), 1, "{dbs:?}");
    dbs[0].clone()
}

#[test]
fn a_crash_during_an_update_leaves_the_old_or_the_new_module_whole() {
    // The window between the two files an update writes (the table numbering, then the
    // module): the old module with the new numbering must start, whole.
    let dir = temp("window");
    let server = Server::start_in(dir.clone(), &[]);
    let owner = bank_with_data(&server);
    assert!(server.publish(&owner, "mig", "bank_v2").status().is_success());
    assert_eq!(server.call(&owner, "mig", "transfer", "[0, 3, 7]").0, 200);
    let after = balances(&server, &owner);
    server.crash();
    let db_dir = database_dir(&dir);
    std::fs::copy(common::fixture("bank"), db_dir.join("module.wasm")).unwrap();
    std::fs::remove_file(db_dir.join("module.cwasm")).ok();
    let server = Server::start_in(dir.clone(), &[]);
    assert_eq!(balances(&server, &owner), after, "the old module, with every row");
    assert!(table(&schema(&server), "access_log").is_none());
    // Publishing the update again finds the same numbering.
    assert!(server.publish(&owner, "mig", "bank_v2").status().is_success());
    assert_eq!(balances(&server, &owner), after);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);

    // Real kills at moments spread over an update's run.
    for (i, delay_ms) in [0u64, 5, 15, 40, 80].into_iter().enumerate() {
        let dir = temp(&format!("kill{i}"));
        let server = Server::start_in(dir.clone(), &[]);
        let owner = bank_with_data(&server);
        let before = balances(&server, &owner);
        let url = server.url.clone();
        let wasm = std::fs::read(common::fixture("bank_v2")).unwrap();
        let token = owner.clone();
        let publisher = std::thread::spawn(move || {
            let _ = reqwest::blocking::Client::new()
                .put(format!("{url}/v1/database/mig"))
                .bearer_auth(&token)
                .body(wasm)
                .timeout(Duration::from_secs(10))
                .send();
        });
        std::thread::sleep(Duration::from_millis(delay_ms));
        server.crash();
        let _ = publisher.join();
        let server = Server::start_in(dir.clone(), &[]);
        assert_eq!(balances(&server, &owner), before, "kill after {delay_ms} ms: every row");
        // Either module, whole: the new one has the new table and index, the old one neither.
        let s = schema(&server);
        let new = table(&s, "access_log").is_some();
        assert_eq!(
            new,
            index_names(&s, "ledger").contains(&"ledger_to_idx_btree".to_string()),
            "kill after {delay_ms} ms"
        );
        assert_eq!(server.call(&owner, "mig", "transfer", "[0, 1, 1]").0, 200);
        drop(server);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
