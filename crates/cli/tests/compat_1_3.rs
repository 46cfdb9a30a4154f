//! Behaviours SpacetimeDB 1.3.2's own smoketests check, over real HTTP and WebSocket against the
//! real binary (and with the official CLI when it is installed):
//! `SELECT * FROM *` subscriptions, the name a failed initial publish keeps, and the order of
//! `st_row_level_security`.

mod common;

use std::collections::BTreeSet;

use common::ws::{connect, Ws, JSON};
use common::{fixture, Server};
use serde_json::{json, Value};

/// The tables a database update (JSON protocol) names, with how many rows it inserts into each.
fn inserted(update: &Value) -> Vec<(String, usize)> {
    update["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let n = t["updates"].as_array().unwrap().iter().map(|u| u["inserts"].as_array().unwrap().len()).sum();
            (t["table_name"].as_str().unwrap().to_string(), n)
        })
        .collect()
}

fn names(update: &Value) -> BTreeSet<String> {
    inserted(update).into_iter().map(|(t, _)| t).collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn ws(server: &Server, db: &str, token: &str) -> Ws {
    let mut ws = connect(&server.url, db, JSON, "", Some(token)).unwrap();
    ws.recv_variant("IdentityToken");
    ws
}

/// The next message, which must be of variant `name`; returns its payload.
fn next(ws: &mut Ws, name: &str) -> Value {
    let m = ws.recv();
    m.get(name).cloned().unwrap_or_else(|| panic!("expected {name}, got {m}"))
}

/// Whether to run the official CLI's part of a test (as `official_cli.rs` decides it).
fn official_cli() -> bool {
    if common::spacetime_cli::available() {
        return true;
    }
    assert!(
        std::env::var_os("EPOCH_REQUIRE_SPACETIME_CLI").is_none(),
        "spacetimedb-cli is required but not installed (cargo install spacetimedb-cli --version 1.3.0 --locked)"
    );
    eprintln!("skipping the official CLI's part: spacetimedb-cli is not installed (scripts/test.sh installs it)");
    false
}

/// Runs `spacetimedb-cli` with its own config file; returns (success, stdout, stderr).
fn spacetime(config: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let out = common::spacetime_cli::command(config).args(args).output().expect("spacetimedb-cli runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// A scratch config for the official CLI (in the server's data directory, removed with it),
/// logged in to `server` as server `epoch`.
fn cli_config(server: &Server, tag: &str) -> std::path::PathBuf {
    let scratch = server.data_dir.join(format!("cli-{tag}"));
    std::fs::create_dir_all(&scratch).unwrap();
    let config = scratch.join("config.toml");
    let (ok, _, err) = spacetime(&config, &["server", "add", "--url", &server.url, "epoch", "-d"]);
    assert!(ok, "{err}");
    let (ok, _, err) = spacetime(&config, &["login", "--server-issued-login", "epoch"]);
    assert!(ok, "{err}");
    config
}

#[test]
fn select_star_from_star_subscribes_to_every_table_the_caller_may_read() {
    let server = Server::start(&[]);
    let (_, owner) = server.identity();
    let db = "everything";
    assert_eq!(server.publish(&owner, db, "chat").status(), 200);
    // `chat` keeps handles unique, absent ones included: each member takes one before the next
    // one connects.
    assert_eq!(server.call(&owner, db, "set_handle", "[\"owner\"]").0, 200);
    let (_, stranger) = server.identity();
    // `member` gets the stranger's row, `post` one post; `audit` (private) holds init's row.
    assert_eq!(server.call(&stranger, db, "set_handle", "[\"stranger\"]").0, 200);
    assert_eq!(server.call(&stranger, db, "send_post", "[\"hello\"]").0, 200);

    // Legacy Subscribe, the owner: every table, private ones included, in any spelling.
    let mut o = ws(&server, db, &owner);
    o.send_json(json!({"Subscribe": {"query_strings": ["  select *\n FROM  * "], "request_id": 1}}));
    let init = next(&mut o, "InitialSubscription");
    assert_eq!(names(&init["database_update"]), set(&["audit", "member", "post"]), "{init}");

    // SubscribeMulti, a stranger: the public tables only.
    let mut s = ws(&server, db, &stranger);
    s.send_json(
        json!({"SubscribeMulti": {"query_strings": ["SELECT * FROM *"], "request_id": 2, "query_id": {"id": 7}}}),
    );
    let applied = next(&mut s, "SubscribeMultiApplied");
    assert_eq!(names(&applied["update"]), set(&["member", "post"]), "{applied}");
    // Updates of any of them follow.
    assert_eq!(server.call(&stranger, db, "send_post", "[\"again\"]").0, 200);
    // (The HTTP call's connect and disconnect update `member` in transactions of their own.)
    let tx = loop {
        let tx = s.recv_variant("TransactionUpdate");
        if tx["reducer_call"]["reducer_name"] == "send_post" {
            break tx;
        }
    };
    assert_eq!(inserted(&tx["status"]["Committed"]), vec![("post".to_string(), 1)], "{tx}");
    // The query id stands for every table: unsubscribing removes every row.
    s.send_json(json!({"UnsubscribeMulti": {"request_id": 3, "query_id": {"id": 7}}}));
    let gone = s.recv_variant("UnsubscribeMultiApplied");
    assert_eq!(names(&gone["update"]), set(&["member", "post"]), "{gone}");

    // SubscribeSingle does not take it (1.3 parses it as one query there).
    s.send_json(json!({"SubscribeSingle": {"query": "SELECT * FROM *", "request_id": 4, "query_id": {"id": 8}}}));
    let err = s.recv_variant("SubscriptionError");
    assert!(err["error"].as_str().unwrap().ends_with("executing: `SELECT * FROM *`"), "{err}");

    if official_cli() {
        let config = cli_config(&server, "subscribe");
        // The CLI's identity takes a handle too.
        let (ok, out, err) = spacetime(&config, &["call", "-s", "epoch", db, "set_handle", "cli"]);
        assert!(ok, "{out}{err}");
        let (ok, out, err) = spacetime(
            &config,
            &["subscribe", "-s", "epoch", db, "SELECT * FROM *", "-n", "0", "--print-initial-update", "--yes"],
        );
        assert!(ok, "{out}{err}");
        let initial: Value = serde_json::from_str(out.lines().next().unwrap_or_default()).unwrap();
        assert!(initial["post"]["inserts"].as_array().is_some_and(|r| r.len() == 2), "{out}");
        assert!(initial["member"]["inserts"].as_array().is_some(), "{out}");
        assert!(initial.get("audit").is_none(), "a private table: {out}");
    }
}

#[test]
fn select_star_from_star_keeps_row_level_security() {
    let server = Server::start(&[]);
    let (_, owner) = server.identity();
    assert_eq!(server.publish(&owner, "rlsall", "rls").status(), 200);
    let (_, alice) = server.identity();
    let (_, bob) = server.identity();
    assert_eq!(server.call(&alice, "rlsall", "post", "[\"alice secret\", false]").0, 200);
    assert_eq!(server.call(&bob, "rlsall", "post", "[\"bob secret\", false]").0, 200);
    assert_eq!(server.call(&bob, "rlsall", "post", "[\"bob public\", true]").0, 200);
    let mut a = ws(&server, "rlsall", &alice);
    a.send_json(json!({"Subscribe": {"query_strings": ["SELECT * FROM *"], "request_id": 1}}));
    let init = next(&mut a, "InitialSubscription");
    let texts: BTreeSet<String> = init["database_update"]["tables"][0]["updates"][0]["inserts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| serde_json::from_str::<Value>(r.as_str().unwrap()).unwrap()["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(texts, set(&["alice secret", "bob public"]), "{init}");
}

/// What `GET` of a database route answers: (status, body).
fn get(server: &Server, path: &str) -> (u16, String) {
    let r = server.http().get(format!("{}/v1/database/{path}", server.url)).send().unwrap();
    (r.status().as_u16(), r.text().unwrap())
}

#[test]
fn a_failed_initial_publish_keeps_the_name_for_its_publisher() {
    let data = std::env::temp_dir().join(format!("epoch-failed-publish-{}", common::rand_suffix()));
    let server = Server::start_in(data.clone(), &[]);
    let (_, owner) = server.identity();
    // A filter naming a column that does not exist: refused.
    let r = server.publish(&owner, "keptname", "rls_bad");
    assert_eq!(r.status().as_u16(), 400, "{}", r.text().unwrap());
    // As 1.3: the name stays, pointing at a database that does not exist.
    let (status, identity) = get(&server, "keptname/identity");
    assert_eq!(status, 200, "{identity}");
    assert_eq!(identity.len(), 64, "{identity}");
    assert_eq!(get(&server, "keptname"), (404, "No such database.".to_string()));
    assert_eq!(get(&server, &identity), (404, "No such database.".to_string()));
    assert_eq!(get(&server, "keptname/schema?version=9"), (404, "No such database.".to_string()));
    let (status, body) = get(&server, "keptname/names");
    assert_eq!((status, serde_json::from_str::<Value>(&body).unwrap()), (200, json!({"names": ["keptname"]})));
    assert_eq!(server.sql(Some(&owner), "keptname", "SELECT * FROM message"), (404, "No such database.".into()));

    // Someone else cannot take it over (1.3 would let them; the name is the publisher's).
    let (_, other) = server.identity();
    assert_eq!(server.publish(&other, "keptname", "rls").status().as_u16(), 403);
    // The name survives a restart.
    server.crash();
    let server = Server::start_in(data.clone(), &[]);
    assert_eq!(get(&server, "keptname/identity"), (200, identity.clone()));

    // Its publisher publishes the fixed module to it: a new database, under the same identity.
    let r = server.publish(&owner, "keptname", "rls");
    assert_eq!(r.status(), 200);
    let v: Value = r.json().unwrap();
    assert_eq!(v["Success"]["op"], "created", "{v}");
    assert_eq!(v["Success"]["database_identity"], identity.as_str(), "{v}");
    assert_eq!(get(&server, "keptname").0, 200);
    // A broken update afterwards fails and leaves the database as it was.
    assert_eq!(server.publish(&owner, "keptname", "rls_bad").status().as_u16(), 400);
    assert_eq!(server.sql(Some(&owner), "keptname", "SELECT * FROM message").0, 200);

    if official_cli() {
        let config = cli_config(&server, "describe");
        let bad = fixture("rls_bad").to_string_lossy().to_string();
        let (ok, _, _) = spacetime(&config, &["publish", "-s", "epoch", "-b", &bad, "clinamed", "--yes"]);
        assert!(!ok, "the broken module is refused");
        let (ok, _, err) = spacetime(&config, &["describe", "-s", "epoch", "--json", "clinamed"]);
        assert!(!ok && err.contains("No such database."), "{err}");
        let good = fixture("rls").to_string_lossy().to_string();
        let (ok, out, err) = spacetime(&config, &["publish", "-s", "epoch", "-b", &good, "clinamed", "--yes"]);
        assert!(ok, "{out}{err}");
        let (ok, out, err) = spacetime(&config, &["describe", "-s", "epoch", "--json", "clinamed"]);
        assert!(ok && out.contains("SELECT * FROM message WHERE public = true"), "{out}{err}");
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&data);
}

/// `st_row_level_security`'s rows, as the owner reads them: their SQL in order.
fn filters(server: &Server, token: &str, db: &str) -> Vec<String> {
    let (status, body) = server.sql(Some(token), db, "SELECT * FROM st_row_level_security");
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    v[0]["rows"].as_array().unwrap().iter().map(|r| r[1].as_str().unwrap().to_string()).collect()
}

#[test]
fn st_row_level_security_lists_filters_in_the_modules_order_across_updates_and_restarts() {
    let data = std::env::temp_dir().join(format!("epoch-filter-order-{}", common::rand_suffix()));
    let server = Server::start_in(data.clone(), &[]);
    let (_, owner) = server.identity();
    assert_eq!(server.publish(&owner, "rlsorder", "rls").status(), 200);
    let schema: Value = server
        .http()
        .get(format!("{}/v1/database/rlsorder/schema?version=9", server.url))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let declared: Vec<String> = schema["row_level_security"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["sql"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(declared.len(), 2, "{schema}");
    assert_eq!(filters(&server, &owner, "rlsorder"), declared);
    // An update that keeps the filters keeps their order, and so does a restart.
    assert_eq!(server.publish(&owner, "rlsorder", "rls").status(), 200);
    assert_eq!(filters(&server, &owner, "rlsorder"), declared);
    server.crash();
    let server = Server::start_in(data.clone(), &[]);
    assert_eq!(filters(&server, &owner, "rlsorder"), declared);
    drop(server);
    let _ = std::fs::remove_dir_all(&data);
}
