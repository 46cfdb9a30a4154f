//! Modules built with the `spacetimedb` 2.14 crate (`RawModuleDef::V10`, `spacetime_10.x`
//! imports), published over HTTP to a real server beside 1.3 modules: calls, SQL under 2.x's
//! canonical names, event tables, private reducers, and a restart that replays the log.

mod common;

use common::Server;
use serde_json::Value;

fn rows(server: &Server, token: &str, db: &str, q: &str) -> Vec<Value> {
    let (status, body) = server.sql(Some(token), db, q);
    assert_eq!(status, 200, "{q}: {body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    v[0]["rows"].as_array().unwrap().clone()
}

fn column_names(server: &Server, token: &str, db: &str, q: &str) -> Vec<String> {
    let (_, body) = server.sql(Some(token), db, q);
    let v: Value = serde_json::from_str(&body).unwrap();
    let elements = v[0]["schema"]["elements"].as_array().unwrap();
    elements.iter().map(|e| e["name"]["some"].as_str().unwrap().to_string()).collect()
}

#[test]
fn bank_and_chat_built_with_spacetimedb_2_run_beside_a_1_3_bank_and_survive_a_restart() {
    let data = std::env::temp_dir().join(format!("epoch-2x-{}", common::rand_suffix()));
    let server = Server::start_in(data.clone(), &[]);
    let (_, owner) = server.identity();
    for (name, module) in [("bank2", "bank_2x"), ("bank1", "bank"), ("chat2", "chat_2x")] {
        let r = server.publish(&owner, name, module);
        assert!(r.status().is_success(), "{module}: {}", r.text().unwrap());
    }
    for db in ["bank1", "bank2"] {
        assert_eq!(server.call(&owner, db, "open_accounts", "[0, 3, 100]").0, 200);
        // Every `.find()` of the 2.x module is a `spacetime_10.4` point scan.
        assert_eq!(server.call(&owner, db, "transfer", "[0, 1, 30]").0, 200);
        let (status, body) = server.call(&owner, db, "transfer", "[0, 1, 300]");
        assert_eq!((status, body.as_str()), (530, "insufficient funds"), "{db}");
        let balances = rows(&server, &owner, db, "SELECT balance FROM account WHERE id = 1");
        assert_eq!(balances, [serde_json::json!([130])], "{db}");
    }
    assert_eq!(server.call(&owner, "chat2", "set_handle", r#"["ann"]"#).0, 200);
    assert_eq!(server.call(&owner, "chat2", "send_post", r#"["hello"]"#).0, 200);
    drop(server);

    // The log replays into the 2.x modules' tables after a restart.
    let server = Server::start_in(data.clone(), &[]);
    let balances = rows(&server, &owner, "bank2", "SELECT balance FROM account WHERE id = 0");
    assert_eq!(balances, [serde_json::json!([70])]);
    assert_eq!(rows(&server, &owner, "bank2", "SELECT * FROM ledger").len(), 1);
    let posts = rows(&server, &owner, "chat2", "SELECT body FROM post");
    assert_eq!(posts, [serde_json::json!(["hello"])]);
    assert_eq!(server.call(&owner, "bank2", "transfer", "[1, 2, 30]").0, 200);
    drop(server);
    let _ = std::fs::remove_dir_all(&data);
}

#[test]
fn a_v10_module_is_served_under_canonical_names_with_event_tables_and_private_reducers() {
    let server = Server::start(&[]);
    let (_, owner) = server.identity();
    let (_, other) = server.identity();
    let r = server.publish(&owner, "feat", "features_2x");
    assert!(r.status().is_success(), "{}", r.text().unwrap());

    // Clients use snake_case names; the module's own (camelCase) names are not wire names.
    assert_eq!(server.call(&other, "feat", "add_score", r#"["ann", 1, {"redApple": []}]"#).0, 200);
    assert_eq!(server.call(&other, "feat", "add_score", r#"["bo", 2, {"greenPear": []}]"#).0, 200);
    assert_eq!(server.call(&other, "feat", "addScore", r#"["cy", 3, {"redApple": []}]"#).0, 404);
    let cols = column_names(&server, &owner, "feat", "SELECT * FROM high_score");
    assert_eq!(cols, ["id", "player_name", "level_2", "fruit", "lives"]);
    // A hash-indexed lookup (10.4 point scan) finds the row to update.
    assert_eq!(server.call(&other, "feat", "level_up", r#"["ann"]"#).0, 200);
    let levels = rows(&server, &owner, "feat", "SELECT level_2 FROM high_score WHERE player_name = 'ann'");
    assert_eq!(levels, [serde_json::json!([2])]);
    // The explicitly named table answers to its explicit name.
    assert_eq!(server.call(&other, "feat", "put_renamed", r#"[1, "x"]"#).0, 200);
    assert_eq!(rows(&server, &owner, "feat", "SELECT * FROM explicitly_named").len(), 1);

    // An event row is logged but never stored.
    assert_eq!(server.call(&other, "feat", "hit", "[1, 5]").0, 200);
    assert!(rows(&server, &owner, "feat", "SELECT * FROM damage").is_empty());

    // `tick` is scheduled, so private: only the owner may call it; to others `/call` finds no
    // reducer and then no procedure of that name (2.x's answer).
    let tick_row = r#"[{"scheduled_id": 9, "scheduled_at": {"Time": {"__timestamp_micros_since_unix_epoch__": 0}}, "label": "by hand"}]"#;
    let (status, body) = server.call(&other, "feat", "tick", tick_row);
    assert_eq!((status, body.as_str()), (404, "No such procedure"));
    assert_eq!(server.call(&owner, "feat", "tick", tick_row).0, 200);

    // `/sql` runs `client_connected` (and `client_disconnected`) around the query, as 2.x does.
    let connects = |token: &str| {
        let journal = rows(&server, token, "feat", "SELECT what FROM journal");
        journal.iter().filter(|r| r[0] == "connected with a token").count()
    };
    let before = connects(&owner);
    assert_eq!(connects(&owner), before + 1);

    // `datastore_clear` (10.5) empties the table and says how many rows it held.
    assert_eq!(server.call(&other, "feat", "clear_scores", "[]").0, 200);
    assert!(rows(&server, &owner, "feat", "SELECT * FROM high_score").is_empty());
    let journal = rows(&server, &owner, "feat", "SELECT what FROM journal");
    let journal: Vec<&str> = journal.iter().map(|r| r[0].as_str().unwrap()).collect();
    assert!(journal.contains(&"tick by hand") && journal.contains(&"cleared 2"), "{journal:?}");
}

/// A one-route HTTP server on loopback: answers every request with `body` once `release`
/// lets it (so a test can hold a procedure in its request); counts the requests it got.
fn slow_http_server(
    body: &'static str,
) -> (String, std::sync::mpsc::Sender<()>, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/data?secret=1", listener.local_addr().unwrap());
    let (release, released) = std::sync::mpsc::channel::<()>();
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = hits.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if released.recv().is_err() {
                return;
            }
            let answer =
                format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len());
            let _ = stream.write_all(answer.as_bytes());
        }
    });
    (url, release, hits)
}

#[test]
fn procedures_return_values_make_requests_commit_their_own_transactions_and_never_hold_the_writer() {
    let server = Server::start(&["--procedure-http-loopback"]);
    let (_, owner) = server.identity();
    let r = server.publish(&owner, "procs", "features_2x");
    assert!(r.status().is_success(), "{}", r.text().unwrap());

    // `/call` falls back to a procedure and answers its value as JSON.
    let (status, body) = server.call(&owner, "procs", "add_numbers", "[2, 3]");
    assert_eq!((status, body.as_str()), (200, "5"));
    let (status, body) = server.call(&owner, "procs", "no_such_thing", "[]");
    assert_eq!((status, body.as_str()), (404, "No such procedure"));
    let (status, _) = server.call(&owner, "procs", "add_numbers", r#"["two", 3]"#);
    assert_eq!(status, 400);

    // A procedure waiting on a slow HTTP server does not hold the writer: a reducer call
    // completes meanwhile.
    let (url, release, hits) = slow_http_server("hello procedures");
    let procedure = {
        let (url, owner, base) = (url.clone(), owner.clone(), server.url.clone());
        std::thread::spawn(move || {
            let client =
                reqwest::blocking::Client::builder().timeout(std::time::Duration::from_secs(60)).build().unwrap();
            let r = client
                .post(format!("{base}/v1/database/procs/call/fetch_twice"))
                .bearer_auth(owner)
                .header("Content-Type", "application/json")
                .body(serde_json::json!([url, 20]).to_string())
                .send()
                .unwrap();
            (r.status().as_u16(), r.text().unwrap())
        })
    };
    while hits.load(std::sync::atomic::Ordering::SeqCst) == 0 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(server.call(&owner, "procs", "add_score", r#"["ann", 1, {"redApple": []}]"#).0, 200);
    release.send(()).unwrap();
    let (status, body) = procedure.join().unwrap();
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!((v["status"].as_u64(), v["body_len"].as_u64()), (Some(200), Some(16)), "{body}");
    assert!(v["slept_micros"].as_i64().unwrap() >= 20_000, "{body}");
    // Its two transactions committed, in order; every `/call` ran `client_connected`, which
    // read the caller's token through `get_jwt` (10.2).
    let journal = rows(&server, &owner, "procs", "SELECT what FROM journal");
    let journal: Vec<&str> = journal.iter().map(|r| r[0].as_str().unwrap()).collect();
    let work: Vec<&str> = journal.iter().copied().filter(|w| !w.starts_with("connected")).collect();
    assert_eq!(work, ["init", "fetched 200", "body 16"]);
    assert!(journal.contains(&"connected with a token"), "{journal:?}");
    assert!(!journal.contains(&"connected without a token"), "{journal:?}");
}

#[test]
fn procedure_requests_to_private_addresses_are_refused_without_the_loopback_switch() {
    let server = Server::start(&[]);
    let (_, owner) = server.identity();
    assert!(server.publish(&owner, "procs", "features_2x").status().is_success());
    let (url, _release, hits) = slow_http_server("never");
    for target in [url.as_str(), "http://10.1.2.3/x", "http://169.254.169.254/latest/meta-data"] {
        let (status, body) = server.call(&owner, "procs", "fetch_twice", &serde_json::json!([target, 0]).to_string());
        assert_eq!(status, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["status"], 0, "{target}: {body}");
    }
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 0, "the loopback server was never reached");
    // The module logged 2.x's reason, without the URL's query.
    let logs = server.http().get(format!("{}/v1/database/procs/logs", server.url)).bearer_auth(&owner).send().unwrap();
    let logs = logs.text().unwrap();
    assert!(logs.contains("refusing to connect to private or special-purpose addresses"), "{logs}");
    assert!(!logs.contains("secret=1"), "the query is left out: {logs}");
}

#[test]
fn a_scheduled_procedure_runs_once_its_row_is_gone() {
    let server = Server::start(&["--procedure-http-loopback"]);
    let (_, owner) = server.identity();
    assert!(server.publish(&owner, "sched", "features_2x").status().is_success());
    let (url, release, _hits) = slow_http_server("scheduled");
    release.send(()).unwrap();
    assert_eq!(server.call(&owner, "sched", "schedule_fetch", &serde_json::json!([url]).to_string()).0, 200);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let journal = rows(&server, &owner, "sched", "SELECT what FROM journal");
        if journal.iter().any(|r| r[0] == "scheduled fetch 200") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the scheduled procedure never ran: {journal:?}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(rows(&server, &owner, "sched", "SELECT * FROM fetch_schedule").is_empty(), "the one-shot row is gone");
    // A scheduled procedure is private: clients cannot call it.
    let (status, body) = server.call(&owner, "sched", "scheduled_fetch", "[]");
    assert_eq!(status, 400, "the owner may call it, with its row as argument: {body}");
    let (_, other) = server.identity();
    let (status, body) = server.call(&other, "sched", "scheduled_fetch", "[]");
    assert_eq!((status, body.as_str()), (404, "No such procedure"));
}

/// Asks `pre_publish` what publishing `module` to `db` would do: checks the plan 2.x prints for
/// the fixture update (a column with a default) and returns the consent token.
fn consent_to(server: &Server, owner: &str, db: &str, module: &str) -> String {
    let ask = |query: &str| {
        let r = server
            .http()
            .post(format!("{}/v1/database/{db}/pre_publish{query}", server.url))
            .bearer_auth(owner)
            .body(std::fs::read(common::fixture(module)).unwrap())
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
        r.json::<Value>().unwrap()
    };
    let plain = ask("?style=NoColor");
    let plan = &plain["AutoMigrate"];
    assert_eq!(plan["break_clients"], true, "{plain}");
    assert_eq!(plan["major_version_upgrade"], false, "{plain}");
    let rule = "━".repeat(60);
    assert_eq!(
        plan["migrate_plan"].as_str().unwrap(),
        format!(
            "{rule}\nDatabase Migration Plan\n{rule}\n\n▸ Created column in table account\n    + tier: U8 (default: U8(\n    7,\n))\n!!! Warning: All clients will be disconnected due to breaking schema changes\n"
        )
    );
    // 2.x's default is colour; the token is the same either way.
    let coloured = ask("");
    let text = coloured["AutoMigrate"]["migrate_plan"].as_str().unwrap();
    assert!(
        text.contains("▸ \x1b[0m\x1b[1m\x1b[32mCreated\x1b[0m column in table \x1b[0m\x1b[1m\x1b[36maccount\x1b[0m"),
        "{text:?}"
    );
    assert_eq!(coloured["AutoMigrate"]["token"], plan["token"]);
    let token = plan["token"].as_str().unwrap();
    assert!(token.starts_with("0x"), "{token}");
    token.to_string()
}

#[test]
fn a_2x_update_adds_a_column_with_a_default_disconnects_clients_and_replays_after_a_restart() {
    let data = std::env::temp_dir().join(format!("epoch-2x-migrate-{}", common::rand_suffix()));
    let server = Server::start_in(data.clone(), &[]);
    let (_, owner) = server.identity();
    assert!(server.publish(&owner, "bank", "bank_2x").status().is_success());
    assert_eq!(server.call(&owner, "bank", "open_accounts", "[0, 3, 100]").0, 200);
    assert_eq!(server.call(&owner, "bank", "transfer", "[0, 1, 30]").0, 200);
    let mut client = common::ws::connect(&server.url, "bank", common::ws::JSON, "", Some(&owner)).unwrap();
    client.recv_variant("IdentityToken");

    // The update breaks clients: refused without the consent `pre_publish` hands out.
    let r = server.publish(&owner, "bank", "bank_2x_v2");
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.text().unwrap(),
        "Failed to create or update the database: Migration plan contains a client-breaking change which is disallowed under current policy"
    );
    let token = consent_to(&server, &owner, "bank", "bank_2x_v2");
    let publish_with = |query: &str| {
        server
            .http()
            .put(format!("{}/v1/database/bank?{query}", server.url))
            .bearer_auth(&owner)
            .body(std::fs::read(common::fixture("bank_2x_v2")).unwrap())
            .send()
            .unwrap()
    };
    let r = publish_with("policy=BreakClients");
    assert_eq!(r.status(), 400);
    assert_eq!(r.text().unwrap(), "Migration policy is set to `BreakClients`, but no migration token was provided.");
    let r = publish_with("policy=BreakClients&token=0x1234");
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.text().unwrap(),
        "Failed to create or update the database: Token provided is invalid or does not match expected hash"
    );
    let r = publish_with(&format!("policy=BreakClients&token={token}"));
    assert!(r.status().is_success(), "{}", r.text().unwrap());
    // The connected client was let go.
    let closed = (0..100)
        .any(|_| !matches!(client.recv_raw(), Ok(tungstenite::Message::Text(_) | tungstenite::Message::Binary(_))));
    assert!(closed, "the client was disconnected");
    // Rows there before the update read the default; new ones what the reducer wrote.
    let tiers = rows(&server, &owner, "bank", "SELECT id, tier FROM account WHERE id = 1");
    assert_eq!(tiers, [serde_json::json!([1, 7])]);
    assert_eq!(server.call(&owner, "bank", "set_tier", "[2, 3]").0, 200);
    assert_eq!(server.call(&owner, "bank", "open_accounts", "[3, 1, 5]").0, 200);
    let logs = server.http().get(format!("{}/v1/database/bank/logs", server.url)).bearer_auth(&owner).send().unwrap();
    assert!(logs.text().unwrap().contains("Adding columns tier to table `account`"));
    drop(server);

    // The log holds rows of both shapes; a restart reads the old ones with the default.
    let server = Server::start_in(data.clone(), &[]);
    let all = rows(&server, &owner, "bank", "SELECT id, balance, tier FROM account");
    let mut all: Vec<(u64, i64, u64)> =
        all.iter().map(|r| (r[0].as_u64().unwrap(), r[1].as_i64().unwrap(), r[2].as_u64().unwrap())).collect();
    all.sort();
    assert_eq!(all, [(0, 70, 7), (1, 130, 7), (2, 100, 3), (3, 5, 1)]);
    drop(server);
    let _ = std::fs::remove_dir_all(&data);
}

#[test]
fn views_are_read_with_sql_per_caller_or_anonymously() {
    let server = Server::start(&[]);
    let (_, owner) = server.identity();
    let (_, ann) = server.identity();
    let (_, bob) = server.identity();
    assert!(server.publish(&owner, "views", "features_2x").status().is_success());
    assert_eq!(server.call(&ann, "views", "put_secret", r#"[1, "ann's"]"#).0, 200);
    assert_eq!(server.call(&bob, "views", "put_secret", r#"[2, "bob's"]"#).0, 200);
    // A per-caller view answers each caller its own rows.
    let texts = |token: &str| {
        let r = rows(&server, token, "views", "SELECT text FROM my_secrets");
        r.iter().map(|r| r[0].as_str().unwrap().to_string()).collect::<Vec<_>>()
    };
    assert_eq!(texts(&ann), ["ann's"]);
    assert_eq!(texts(&bob), ["bob's"]);
    assert!(texts(&owner).is_empty());
    // An anonymous view returning an Option: no row, then the best score.
    assert!(rows(&server, &ann, "views", "SELECT * FROM top_score").is_empty());
    assert_eq!(server.call(&ann, "views", "add_score", r#"["ann", 4, {"redApple": []}]"#).0, 200);
    assert_eq!(server.call(&ann, "views", "add_score", r#"["bo", 9, {"greenPear": []}]"#).0, 200);
    let top = rows(&server, &ann, "views", "SELECT player_name, level_2 FROM top_score");
    assert_eq!(top, [serde_json::json!(["bo", 9])]);
    // A WHERE applies to a view's rows as to a table's.
    assert!(rows(&server, &ann, "views", "SELECT * FROM top_score WHERE level_2 < 5").is_empty());
    // A view with parameters cannot be read with SQL, which has no way to pass them.
    let (status, body) = server.sql(Some(&ann), "views", "SELECT * FROM scores_at_level");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("takes parameters"), "{body}");
    views_run_again_only_when_what_they_read_changes(&server, &ann, &bob, &texts);
}

/// Materialized views: a view's rows are kept per caller until a transaction changes what it
/// read. `mySecrets` reads `secret` by its `owner` index, so Bob's new secret makes Bob's view
/// run again and leaves Ann's alone; `top_score` reads a range, so any new score does.
fn views_run_again_only_when_what_they_read_changes(
    server: &Server,
    ann: &str,
    bob: &str,
    texts: &dyn Fn(&str) -> Vec<String>,
) {
    let runs = || -> u64 {
        let text = server.http().get(format!("{}/v1/metrics", server.url)).send().unwrap().text().unwrap();
        let line = text.lines().find(|l| l.starts_with("epoch_view_runs_total{")).expect("a view runs line");
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    let before = runs();
    assert_eq!((texts(ann), texts(bob)), (vec!["ann's".to_string()], vec!["bob's".to_string()]));
    assert_eq!(runs(), before, "kept rows are read again without running the view");
    assert_eq!(server.call(bob, "views", "put_secret", r#"[3, "bob's too"]"#).0, 200);
    assert_eq!(texts(ann), ["ann's"]);
    assert_eq!(runs(), before, "Ann's rows did not change");
    assert_eq!(texts(bob), ["bob's", "bob's too"]);
    assert_eq!(runs(), before + 1, "Bob's view ran again");
    assert_eq!(rows(server, ann, "views", "SELECT player_name FROM top_score"), [serde_json::json!(["bo"])]);
    assert_eq!(server.call(ann, "views", "add_score", r#"["cy", 11, {"redApple": []}]"#).0, 200);
    assert_eq!(rows(server, ann, "views", "SELECT player_name FROM top_score"), [serde_json::json!(["cy"])]);
    assert_eq!(runs(), before + 2, "a new score changed what top_score read");
}

#[test]
fn schema_version_10_describes_a_2x_database_and_a_1_3_one_keeps_1_3s_answer() {
    let server = Server::start(&[]);
    let (_, owner) = server.identity();
    assert!(server.publish(&owner, "feat", "features_2x").status().is_success());
    assert!(server.publish(&owner, "old", "bank").status().is_success());
    let get = |db: &str, v: &str| {
        let r = server.http().get(format!("{}/v1/database/{db}/schema?version={v}", server.url)).send().unwrap();
        (r.status().as_u16(), r.text().unwrap())
    };
    let (status, body) = get("feat", "10");
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let sections = v["sections"].as_array().unwrap();
    let section = |name: &str| sections.iter().find_map(|s| s.get(name)).unwrap_or_else(|| panic!("no {name}: {body}"));
    let names: Vec<&str> = sections.iter().map(|s| s.as_object().unwrap().keys().next().unwrap().as_str()).collect();
    assert_eq!(names.first(), Some(&"Typespace"));
    assert_eq!(names.last(), Some(&"ExplicitNames"));
    let tables = section("Tables").as_array().unwrap();
    let high = tables.iter().find(|t| t["source_name"] == "highScore").expect("highScore by its source name");
    assert_eq!(high["default_values"][0]["col_id"], 4);
    let damage = tables.iter().find(|t| t["source_name"] == "damage").unwrap();
    assert_eq!(damage["is_event"], true);
    let entries = section("ExplicitNames")["entries"].as_array().unwrap();
    assert!(
        entries.contains(&serde_json::json!({"Table": {"source_name": "highScore", "canonical_name": "high_score"}}))
    );
    assert!(
        entries.contains(&serde_json::json!({"Function": {"source_name": "addScore", "canonical_name": "add_score"}}))
    );
    assert!(section("Procedures").as_array().unwrap().iter().any(|p| p["source_name"] == "fetch_twice"));
    assert!(section("Views").as_array().unwrap().iter().any(|p| p["source_name"] == "mySecrets"));
    let lifecycle = section("LifeCycleReducers").as_array().unwrap();
    // Lifecycle reducers are listed under their canonical names, as 2.x lists them.
    assert!(
        lifecycle.contains(&serde_json::json!({"lifecycle_spec": {"OnConnect": []}, "function_name": "on_connect"}))
    );
    assert_eq!(get("feat", "9").0, 200, "version 9 is still answered");
    // A JavaScript module (2.x's `host_type=Js`) is refused with a reason.
    let wasm = std::fs::read(common::fixture("bank_2x")).unwrap();
    let r = server
        .http()
        .put(format!("{}/v1/database/js?host_type=Js", server.url))
        .bearer_auth(&owner)
        .body(wasm)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    assert!(r.text().unwrap().contains("JavaScript modules (host_type=Js) are not supported"));
    // A parent database (2.x's hosted nesting) is refused, not ignored.
    let r = server
        .http()
        .put(format!("{}/v1/database/child?parent=feat", server.url))
        .bearer_auth(&owner)
        .body(std::fs::read(common::fixture("bank_2x")).unwrap())
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    assert!(r.text().unwrap().contains("`parent` is not supported by this server"));
    let (status, body) = get("old", "10");
    assert_eq!(
        (status, body.as_str()),
        (400, "Failed to deserialize query string: unknown variant `10`, expected `9`")
    );
}

#[test]
fn a_v1_client_cannot_subscribe_to_an_event_table_and_all_tables_leaves_them_out() {
    let server = Server::start(&[]);
    let (_, owner) = server.identity();
    assert!(server.publish(&owner, "ev", "features_2x").status().is_success());
    let mut ws = common::ws::connect(&server.url, "ev", common::ws::JSON, "", Some(&owner)).unwrap();
    ws.recv_variant("IdentityToken");
    ws.send_json(serde_json::json!({"SubscribeSingle": {"query": "SELECT * FROM damage", "request_id": 1, "query_id": {"id": 1}}}));
    let err = ws.recv_variant("SubscriptionError");
    assert_eq!(
        err["error"],
        "Subscribing to event tables requires WebSocket v2. Please upgrade your client SDK and regenerate your module bindings."
    );
    ws.send_json(serde_json::json!({"Subscribe": {"query_strings": ["SELECT * FROM *"], "request_id": 2}}));
    let init = ws.recv_variant("InitialSubscription");
    let tables: Vec<&str> = init["database_update"]["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["table_name"].as_str().unwrap())
        .collect();
    assert!(tables.contains(&"journal") && !tables.contains(&"damage"), "{tables:?}");
}

#[test]
fn a_procedure_transaction_gets_a_reducers_time_then_the_writer_is_free_again() {
    let server = Server::start(&["--reducer-timeout-ms", "500"]);
    let (_, owner) = server.identity();
    assert!(server.publish(&owner, "spin", "features_2x").status().is_success());
    // The procedure's own limit is minutes; its transaction is ended at the reducer limit.
    let (status, body) = server.call(&owner, "spin", "spin_in_tx", "[]");
    assert_eq!(status, 500, "{body}");
    assert!(body.starts_with("The module instance encountered a fatal error"), "{body}");
    // The store came back to the writer: reducers and SQL run, nothing of the spin stayed.
    assert_eq!(server.call(&owner, "spin", "add_score", r#"["ann", 1, {"redApple": []}]"#).0, 200);
    assert_eq!(rows(&server, &owner, "spin", "SELECT * FROM high_score").len(), 1);
}

#[test]
fn a_locked_database_is_neither_deleted_nor_reset_and_a_reset_starts_it_afresh() {
    let server = Server::start(&[]);
    let (_, owner) = server.identity();
    let (_, other) = server.identity();
    assert!(server.publish(&owner, "vault", "bank_2x").status().is_success());
    assert_eq!(server.call(&owner, "vault", "open_accounts", "[0, 3, 100]").0, 200);
    let url = |path: &str| format!("{}/v1/database/vault{path}", server.url);
    let post = |token: &str, path: &str| server.http().post(url(path)).bearer_auth(token).send().unwrap();
    let reset = |body: Vec<u8>| server.http().put(url("/reset")).bearer_auth(&owner).body(body).send().unwrap();
    let locked_reset = "Database is locked and cannot be reset with --delete-data. Run `spacetime unlock` first.";

    assert_eq!(post(&other, "/lock").status(), 403, "only the owner locks");
    for _ in 0..2 {
        let r = post(&owner, "/lock");
        assert_eq!((r.status().as_u16(), r.text().unwrap()), (200, String::new()));
    }
    let r = server.http().delete(url("")).bearer_auth(&owner).send().unwrap();
    assert_eq!(
        (r.status().as_u16(), r.text().unwrap().as_str()),
        (403, "Database is locked and cannot be deleted. Run `spacetime unlock` first.")
    );
    let r = server
        .http()
        .put(url("?clear=true"))
        .bearer_auth(&owner)
        .body(std::fs::read(common::fixture("bank_2x")).unwrap())
        .send()
        .unwrap();
    assert_eq!((r.status().as_u16(), r.text().unwrap().as_str()), (403, locked_reset));
    let r = reset(Vec::new());
    assert_eq!((r.status().as_u16(), r.text().unwrap().as_str()), (403, locked_reset));
    assert_eq!(rows(&server, &owner, "vault", "SELECT id FROM account").len(), 3, "nothing was reset");
    // An update that keeps the data is no reset: allowed while locked, as in 2.x.
    assert_eq!(post(&other, "/unlock").status(), 403, "only the owner unlocks");
    assert_eq!(post(&owner, "/unlock").status(), 200);

    // A reset keeps the identity and the name, and nothing else.
    let identity = server.http().get(url("/identity")).send().unwrap().text().unwrap();
    let r = reset(Vec::new());
    assert_eq!(r.status(), 200);
    let answer: Value = r.json().unwrap();
    assert_eq!(answer["Success"]["op"], "updated");
    assert_eq!(answer["Success"]["domain"], "vault");
    assert_eq!(answer["Success"]["database_identity"].as_str().unwrap(), identity);
    assert!(rows(&server, &owner, "vault", "SELECT id FROM account").is_empty());
    // With a module in the body, the database starts afresh on that module.
    assert_eq!(reset(std::fs::read(common::fixture("bank_2x_v2")).unwrap()).status(), 200);
    assert_eq!(column_names(&server, &owner, "vault", "SELECT * FROM account").last().unwrap(), "tier");
    assert_eq!(server.http().delete(url("")).bearer_auth(&owner).send().unwrap().status(), 200);
}

#[test]
fn pre_publish_names_a_manual_migration_and_a_major_version_upgrade() {
    let server = Server::start(&[]);
    let (_, owner) = server.identity();
    let (_, other) = server.identity();
    assert!(server.publish(&owner, "later", "bank_2x_v2").status().is_success());
    assert!(server.publish(&owner, "old", "bank").status().is_success());
    let pre_publish = |token: &str, db: &str, module: &str| {
        let r = server
            .http()
            .post(format!("{}/v1/database/{db}/pre_publish?style=NoColor", server.url))
            .bearer_auth(token)
            .body(std::fs::read(common::fixture(module)).unwrap())
            .send()
            .unwrap();
        (r.status().as_u16(), r.text().unwrap())
    };
    let (status, body) = pre_publish(&owner, "later", "bank_2x");
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"ManualMigrate": {
            "reason": "Errors occurred:\nRemoving a column tier from table account requires a manual migration\n\n",
            "major_version_upgrade": false,
        }})
    );
    // A 1.3 database meeting a 2.x module: 2.x's CLI warns that there is no way back.
    let (status, body) = pre_publish(&owner, "old", "bank_2x");
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let answer = v.as_object().unwrap().values().next().unwrap();
    assert_eq!(answer["major_version_upgrade"], true, "{body}");
    // Nobody but the owner sees a plan; nothing was changed by asking.
    assert_eq!(pre_publish(&other, "later", "bank_2x").0, 403);
    assert_eq!(column_names(&server, &owner, "later", "SELECT * FROM account").last().unwrap(), "tier");
}

/// A v1 client subscribes to a view like a table: its own rows first, then each change of
/// them; another caller's changes do not reach it; only `SELECT * FROM view` is taken.
#[test]
fn a_v1_client_subscribes_to_a_view_and_hears_of_its_own_rows_only() {
    let server = Server::start(&[]);
    let (_, owner) = server.identity();
    let (_, ann) = server.identity();
    let (_, bob) = server.identity();
    assert!(server.publish(&owner, "vs", "features_2x").status().is_success());
    assert_eq!(server.call(&ann, "vs", "put_secret", r#"[1, "ann's"]"#).0, 200);
    let subscribe = |token: &str| {
        let mut ws = common::ws::connect(&server.url, "vs", common::ws::JSON, "", Some(token)).unwrap();
        ws.recv_variant("IdentityToken");
        let q = "SELECT * FROM my_secrets";
        ws.send_json(serde_json::json!({"SubscribeSingle": {"query": q, "request_id": 1, "query_id": {"id": 1}}}));
        let applied = ws.recv_variant("SubscribeApplied");
        assert_eq!(applied["rows"]["table_name"], "my_secrets", "{applied}");
        let id = rows(&server, token, "vs", "SELECT table_id FROM st_table WHERE table_name = 'my_secrets'");
        assert_eq!(applied["rows"]["table_id"], id[0][0], "the view's table id, as st_table shows it");
        (ws, applied["rows"]["table_rows"]["updates"][0]["inserts"].clone())
    };
    let (mut ann_ws, ann_rows) = subscribe(&ann);
    assert_eq!(ann_rows.as_array().map(Vec::len), Some(1), "{ann_rows}");
    assert!(ann_rows[0].as_str().unwrap().contains("ann's"), "{ann_rows}");
    let (mut bob_ws, bob_rows) = subscribe(&bob);
    assert!(bob_rows.as_array().is_none_or(Vec::is_empty), "{bob_rows}");
    // Bob's new secret reaches Bob's view; Ann's next update is her own.
    assert_eq!(server.call(&bob, "vs", "put_secret", r#"[2, "bob's"]"#).0, 200);
    let tx = bob_ws.recv_variant("TransactionUpdate");
    let table = &tx["status"]["Committed"]["tables"][0];
    assert_eq!(table["table_name"], "my_secrets", "{tx}");
    assert!(table["updates"][0]["inserts"][0].as_str().unwrap().contains("bob's"), "{tx}");
    assert_eq!(server.call(&ann, "vs", "put_secret", r#"[3, "ann's too"]"#).0, 200);
    let tx = ann_ws.recv_variant("TransactionUpdate");
    let inserts = &tx["status"]["Committed"]["tables"][0]["updates"][0]["inserts"];
    assert_eq!(inserts.as_array().unwrap().len(), 1, "only Ann's new row: {tx}");
    assert!(inserts[0].as_str().unwrap().contains("ann's too"), "{tx}");
    // A one-off query reads the caller's rows of a view too, with a filter.
    let q = "SELECT * FROM my_secrets WHERE id = 3";
    ann_ws.send_json(serde_json::json!({"OneOffQuery": {"message_id": "01", "query_string": q}}));
    let one_off = ann_ws.recv_variant("OneOffQueryResponse");
    let found = &one_off["tables"][0]["rows"];
    assert!(found.as_array().map(Vec::len) == Some(1) && found[0].as_str().unwrap().contains("ann's too"), "{one_off}");
    // Unsubscribing hands back the rows held; a filtered view query is refused.
    ann_ws.send_json(serde_json::json!({"Unsubscribe": {"request_id": 2, "query_id": {"id": 1}}}));
    let gone = ann_ws.recv_variant("UnsubscribeApplied");
    assert_eq!(gone["rows"]["table_rows"]["updates"][0]["deletes"].as_array().map(Vec::len), Some(2), "{gone}");
    let q = "SELECT * FROM my_secrets WHERE id = 1";
    ann_ws.send_json(serde_json::json!({"SubscribeSingle": {"query": q, "request_id": 3, "query_id": {"id": 2}}}));
    let err = ann_ws.recv_variant("SubscriptionError");
    assert!(err["error"].as_str().unwrap().contains("SELECT * FROM my_secrets"), "{err}");
}

/// The system tables 2.x added answer a 2.x database only: its connections' token payloads to
/// its owner alone, its views, event tables and accessor names; a 1.3 database has none.
#[test]
fn the_system_tables_2x_added_describe_a_2x_database_only() {
    let server = Server::start(&[]);
    let (owner_hex, owner) = server.identity();
    let (_, other) = server.identity();
    assert!(server.publish(&owner, "sys2", "features_2x").status().is_success());
    assert!(server.publish(&owner, "sys13", "bank").status().is_success());
    // `/sql` runs in a connection of its own, whose token payload the owner sees.
    let creds = rows(&server, &owner, "sys2", "SELECT jwt_payload FROM st_connection_credentials");
    assert_eq!(creds.len(), 1, "{creds:?}");
    assert!(creds[0][0].as_str().unwrap().contains(&owner_hex), "{creds:?}");
    let (status, body) = server.sql(Some(&other), "sys2", "SELECT * FROM st_connection_credentials");
    assert_eq!(
        (status, body.as_str()),
        (400, "no such table: `st_connection_credentials`. If the table exists, it may be marked private.")
    );
    let views = rows(&server, &other, "sys2", "SELECT view_name, is_anonymous FROM st_view");
    let mut views: Vec<String> = views.iter().map(|v| v.to_string()).collect();
    views.sort();
    assert_eq!(views, [r#"["my_secrets",false]"#, r#"["scores_at_level",true]"#, r#"["top_score",true]"#]);
    let params = rows(&server, &other, "sys2", "SELECT param_pos, param_name FROM st_view_param");
    assert_eq!(params, [serde_json::json!([0, "level"])]);
    let q = "SELECT table_name, accessor_name FROM st_column_accessor WHERE col_name = 'player_name'";
    let mut accessors: Vec<String> = rows(&server, &other, "sys2", q).iter().map(|v| v.to_string()).collect();
    accessors.sort();
    let expected = ["high_score", "scores_at_level", "top_score"].map(|t| format!(r#"["{t}","playerName"]"#));
    assert_eq!(accessors, expected, "the table's and its views' column, under the module's own name");
    let (status, body) = server.sql(Some(&owner), "sys13", "SELECT * FROM st_view");
    assert_eq!((status, body.as_str()), (400, "`st_view` is not a valid table"));
}

/// A 2.x update may remove a table once it is empty (checked when applied, as 2.x does): the
/// other tables keep their ids and rows, the log written before replays after a restart, and
/// the removed table's id is never given again.
#[test]
fn a_2x_update_removes_an_empty_table_and_the_others_keep_their_ids() {
    let data = std::env::temp_dir().join(format!("epoch-2x-remove-{}", common::rand_suffix()));
    let server = Server::start_in(data.clone(), &[]);
    let (_, owner) = server.identity();
    assert!(server.publish(&owner, "bank", "bank_2x_v3").status().is_success());
    assert_eq!(server.call(&owner, "bank", "open_accounts", "[0, 3, 100]").0, 200);
    assert_eq!(server.call(&owner, "bank", "transfer", "[0, 1, 30]").0, 200);
    let table_id = |server: &Server, name: &str| {
        let q = format!("SELECT table_id FROM st_table WHERE table_name = '{name}'");
        rows(server, &owner, "bank", &q).first().map(|r| r[0].as_u64().unwrap())
    };
    let ledger_id = table_id(&server, "ledger").unwrap();
    assert!(table_id(&server, "account").unwrap() < ledger_id, "the removed table comes first");
    let publish = |server: &Server, token: &str| {
        let url = format!("{}/v1/database/bank?policy=BreakClients&token={token}", server.url);
        let body = std::fs::read(common::fixture("bank_2x_v4")).unwrap();
        server.http().put(url).bearer_auth(&owner).body(body).send().unwrap()
    };
    let ask = server
        .http()
        .post(format!("{}/v1/database/bank/pre_publish?style=NoColor", server.url))
        .bearer_auth(&owner)
        .body(std::fs::read(common::fixture("bank_2x_v4")).unwrap())
        .send()
        .unwrap();
    let plan: Value = ask.json().unwrap();
    let text = plan["AutoMigrate"]["migrate_plan"].as_str().unwrap();
    assert!(text.contains("▸ Removed table: account\n"), "{text}");
    assert_eq!(plan["AutoMigrate"]["break_clients"], true, "{plan}");
    let token = plan["AutoMigrate"]["token"].as_str().unwrap().to_string();
    // Refused while the table holds rows; nothing changes.
    let r = publish(&server, &token);
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.text().unwrap(),
        "Failed to create or update the database: Cannot remove table `account`: table contains data. Clear the table's rows (e.g. via a reducer) before removing it from your schema."
    );
    assert_eq!(server.call(&owner, "bank", "transfer", "[1, 0, 5]").0, 200, "the old module still runs");
    let (status, body) = server.sql(Some(&owner), "bank", "DELETE FROM account");
    assert_eq!(status, 200, "{body}");
    let r = publish(&server, &token);
    assert!(r.status().is_success(), "{}", r.text().unwrap());
    assert_eq!(server.call(&owner, "bank", "record", "[7, 8, 9]").0, 200);
    let check = |server: &Server| {
        assert_eq!(table_id(server, "account"), None);
        assert_eq!(table_id(server, "ledger"), Some(ledger_id), "the ledger keeps its id");
        let amounts = rows(server, &owner, "bank", "SELECT amount FROM ledger");
        let mut amounts: Vec<i64> = amounts.iter().map(|r| r[0].as_i64().unwrap()).collect();
        amounts.sort();
        assert_eq!(amounts, [5, 9, 30]);
        let (status, body) = server.sql(Some(&owner), "bank", "SELECT * FROM account");
        assert_eq!(
            (status, body.as_str()),
            (400, "no such table: `account`. If the table exists, it may be marked private.")
        );
    };
    check(&server);
    let logs = server.http().get(format!("{}/v1/database/bank/logs", server.url)).bearer_auth(&owner).send().unwrap();
    assert!(logs.text().unwrap().contains("Dropping table `account`"));
    drop(server);
    // The log holds the removed table's rows; a restart replays past them.
    let server = Server::start_in(data.clone(), &[]);
    check(&server);
    drop(server);
    let _ = std::fs::remove_dir_all(&data);
}

/// Views in updates, as 2.x plans them: a view added keeps clients connected and needs no
/// consent; a view removed disconnects them and needs it. Both print their view.
#[test]
fn an_update_that_adds_a_view_keeps_clients_and_one_that_removes_it_breaks_them() {
    let server = Server::start(&[]);
    let (_, owner) = server.identity();
    assert!(server.publish(&owner, "vm", "bank_2x_v4").status().is_success());
    assert_eq!(server.call(&owner, "vm", "record", "[7, 1, 12]").0, 200);
    let plan_of = |module: &str| -> Value {
        let url = format!("{}/v1/database/vm/pre_publish?style=NoColor", server.url);
        let body = std::fs::read(common::fixture(module)).unwrap();
        let r = server.http().post(url).bearer_auth(&owner).body(body).send().unwrap();
        assert_eq!(r.status(), 200);
        r.json::<Value>().unwrap()["AutoMigrate"].clone()
    };
    let added = plan_of("bank_2x_v5");
    assert_eq!(added["break_clients"], false, "{added}");
    let text = added["migrate_plan"].as_str().unwrap();
    assert!(
        text.contains(
            "▸ ▸ Created anonymous view: from_seven\n    Columns:\n        • seq: U64\n        • from: U32\n"
        ),
        "{text}"
    );
    let mut client = common::ws::connect(&server.url, "vm", common::ws::JSON, "", Some(&owner)).unwrap();
    client.recv_variant("IdentityToken");
    assert!(server.publish(&owner, "vm", "bank_2x_v5").status().is_success(), "no consent needed");
    assert_eq!(rows(&server, &owner, "vm", "SELECT amount FROM from_seven"), [serde_json::json!([12])]);
    client.send_json(serde_json::json!({"OneOffQuery": {"message_id": "01", "query_string": "SELECT * FROM ledger"}}));
    client.recv_variant("OneOffQueryResponse");
    // Removing it breaks clients: refused without consent.
    let removed = plan_of("bank_2x_v4");
    assert_eq!(removed["break_clients"], true, "{removed}");
    assert!(
        removed["migrate_plan"].as_str().unwrap().contains("▸ ▸ Removed anonymous view: from_seven\n"),
        "{removed}"
    );
    let r = server.publish(&owner, "vm", "bank_2x_v4");
    assert_eq!(r.status(), 400);
    assert!(r.text().unwrap().contains("client-breaking change"));
}
