//! Issue 10: what a hostile but ordinary client found, each driven over real HTTP against the
//! real binary as it was reproduced. The races run `EPOCH_RACE_TRIES` times (a few in CI; 200
//! or more with `scripts/race-soak.sh`), and end with a SIGKILL in the middle of one, after
//! which every database must start with nothing acknowledged lost.
mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const KEY: &str = "hardening-admin-key";

/// How many times each race runs (`EPOCH_RACE_TRIES`, default 6).
fn race_tries() -> usize {
    std::env::var("EPOCH_RACE_TRIES").ok().and_then(|v| v.parse().ok()).unwrap_or(6)
}

fn temp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("epoch-hardening-{name}-{}-{}", std::process::id(), rand_suffix()))
}

fn start_with_key(dir: &Path) -> Server {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("admin.key"), KEY).unwrap();
    let key = dir.join("admin.key");
    Server::start_in(dir.to_path_buf(), &["--admin-api-key-file", key.to_str().unwrap()])
}

fn json_of(r: reqwest::blocking::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    (status, r.json().unwrap_or(Value::Null))
}

fn owner_of(s: &Server, name: &str) -> Option<String> {
    let r = s.http().get(format!("{}/v1/database/{name}", s.url)).send().unwrap();
    if r.status() != 200 {
        return None;
    }
    let v: Value = r.json().unwrap();
    v["owner_identity"]["__identity__"].as_str().map(|h| h.trim_start_matches("0x").to_string())
}

/// The server's resident memory, in kB.
fn rss_kb(s: &Server) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", s.pid())).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn count(s: &Server, token: &str, db: &str, table: &str) -> u64 {
    let (status, body) = s.sql(Some(token), db, &format!("SELECT COUNT(*) AS n FROM {table}"));
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    v[0]["rows"][0][0].as_u64().unwrap()
}

// ---------------------------------------------------------------------------------------------
// 1. SQL that used to overflow the stack; LIMIT past u64.

#[test]
fn a_flood_of_ors_is_a_400_and_the_server_keeps_serving() {
    let s = Server::start(&[]);
    let (_, t) = s.identity();
    assert_eq!(s.publish(&t, "bank", "bank").status(), 200);
    let mut sql = String::from("SELECT * FROM account WHERE id = 1");
    sql.push_str(&" OR id = 1".repeat(5_000));
    assert!(sql.len() < 64 * 1024);
    let (status, body) = s.sql(None, "bank", &sql);
    assert_eq!((status, body.as_str()), (400, "The query has more than 512 operators; split it into smaller queries"));
    // A chain just under the cap runs (on the database's writer thread).
    let mut at_cap = String::from("SELECT * FROM account WHERE id = 1");
    at_cap.push_str(&" OR id = 1".repeat(254));
    assert_eq!(s.sql(None, "bank", &at_cap).0, 200);
    // Nesting that made the parser backtrack for seconds (found by fuzzing), even as the owner.
    let backtracking = format!("UPDATE({}x", "UPDATE8(PDATE(I((n(PATE(".repeat(5));
    let (status, body) = s.sql(Some(&t), "bank", &backtracking);
    assert_eq!((status, body.as_str()), (400, "The query nests parentheses more than 10 deep"));
    // Deep nesting too.
    let nested = format!("SELECT * FROM account WHERE {}id = 1{}", "(".repeat(3_000), ")".repeat(3_000));
    assert_eq!(s.sql(None, "bank", &nested).0, 400);
    let (status, body) = s.sql(None, "bank", "SELECT * FROM account LIMIT 18446744073709551616");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("out of range"), "{body}");
    // Still alive and answering.
    assert_eq!(s.sql(None, "bank", "SELECT COUNT(*) AS n FROM account").0, 200);
}

// ---------------------------------------------------------------------------------------------
// 2. Two identities publishing one new name at once.

/// Races alice and bob (bob 0–200 ms later) for `name`; returns the winner's token and whether
/// the winner was alice.
fn publish_race(s: &Server, alice: &str, bob: &str, name: &str) -> Option<String> {
    let gap = Duration::from_millis(rand_suffix() % 200);
    let results = std::thread::scope(|scope| {
        let a = scope.spawn(|| {
            let r = s.publish(alice, name, "bank");
            (r.status().as_u16(), r.text().unwrap())
        });
        let b = scope.spawn(|| {
            std::thread::sleep(gap);
            let r = s.publish(bob, name, "bank");
            (r.status().as_u16(), r.text().unwrap())
        });
        [(alice, a.join().unwrap()), (bob, b.join().unwrap())]
    });
    let winners: Vec<_> = results.iter().filter(|(_, (status, _))| *status == 200).collect();
    assert_eq!(winners.len(), 1, "exactly one publish creates {name}: {results:?}");
    let (winner, (_, body)) = winners[0];
    let v: Value = serde_json::from_str(body).unwrap();
    assert_eq!(v["Success"]["op"], "created", "{body}");
    for (_, (status, body)) in results.iter().filter(|(t, _)| t != winner) {
        assert!(
            (*status == 403 && body.starts_with("Permission denied")) || *status == 409,
            "the loser is told the name is someone else's: {status} {body}"
        );
        assert!(!body.contains('\n'), "one line: {body:?}");
    }
    Some(winner.to_string())
}

#[test]
fn concurrent_publishes_of_one_new_name_create_it_once_and_survive_a_kill() {
    let dir = temp("publish-race");
    let s = Server::start_in(dir.clone(), &[]);
    let (alice_id, alice) = s.identity();
    let (bob_id, bob) = s.identity();
    let mut acknowledged = Vec::new();
    for i in 0..race_tries() {
        // By a new name, and by a new identity (which a publish may create too, as in 1.3).
        for target in [format!("loss-{i}"), format!("c200{:044x}{:016x}", i, rand_suffix())] {
            let winner = publish_race(&s, &alice, &bob, &target).unwrap();
            let expected_owner = if winner == alice { &alice_id } else { &bob_id };
            assert_eq!(owner_of(&s, &target).as_deref(), Some(expected_owner.as_str()));
            // An acknowledged write, which must survive everything below.
            assert_eq!(s.call(&winner, &target, "open_accounts", "[0, 3, 7]").0, 200);
            acknowledged.push((target, winner));
        }
    }
    // A kill in the middle of one more race.
    let gap = Duration::from_millis(rand_suffix() % 150);
    std::thread::scope(|scope| {
        let url = s.url.clone();
        let racer = |token: String, delay: Duration| {
            let url = url.clone();
            move || {
                std::thread::sleep(delay);
                let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
                let _ = client
                    .put(format!("{url}/v1/database/loss-killed"))
                    .bearer_auth(token)
                    .body(std::fs::read(fixture("bank")).unwrap())
                    .send();
            }
        };
        scope.spawn(racer(alice.clone(), Duration::ZERO));
        scope.spawn(racer(bob.clone(), gap));
        std::thread::sleep(gap + Duration::from_millis(rand_suffix() % 100));
        s.crash();
    });
    let s = Server::start_in(dir.clone(), &[]);
    for (name, token) in &acknowledged {
        assert_eq!(count(&s, token, name, "account"), 3, "{name} lost an acknowledged write");
    }
    // The database of the interrupted race either exists whole, or not at all.
    let r = s.http().get(format!("{}/v1/database/loss-killed", s.url)).send().unwrap();
    assert!(matches!(r.status().as_u16(), 200 | 404), "{:?}", r.text());
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn one_database_with_a_damaged_log_does_not_keep_the_others_down() {
    let dir = temp("damaged");
    let s = Server::start_in(dir.clone(), &[]);
    let (me, t) = s.identity();
    assert_eq!(s.publish(&t, "good", "bank").status(), 200);
    assert_eq!(s.publish(&t, "bad", "bank").status(), 200);
    for i in 0..5 {
        assert_eq!(s.call(&t, "good", "open_accounts", &format!("[{}, 1, 1]", i * 10)).0, 200);
        assert_eq!(s.call(&t, "bad", "open_accounts", &format!("[{}, 1, 1]", i * 10)).0, 200);
    }
    let bad_id = s.http().get(format!("{}/v1/database/bad/identity", s.url)).send().unwrap().text().unwrap();
    s.crash();
    // Damage a byte in the middle of the bad database's first log segment.
    let log_dir = dir.join("databases").join(&bad_id).join("log");
    let segment = std::fs::read_dir(&log_dir).unwrap().map(|e| e.unwrap().path()).min().unwrap();
    let mut bytes = std::fs::read(&segment).unwrap();
    let middle = bytes.len() / 3;
    bytes[middle] ^= 0xff;
    std::fs::write(&segment, bytes).unwrap();

    let s = Server::start_in(dir.clone(), &[]);
    assert_eq!(count(&s, &t, "good", "account"), 5, "the healthy database serves");
    let r = s.sql(Some(&t), "bad", "SELECT COUNT(*) AS n FROM account");
    assert_eq!(r.0, 503, "{}", r.1);
    assert!(r.1.contains("corrupt"), "the answer says why: {}", r.1);
    // Listed still, and its owner may delete it and start again.
    let dbs: Value = s.http().get(format!("{}/v1/identity/{me}/databases", s.url)).send().unwrap().json().unwrap();
    assert_eq!(dbs["identities"].as_array().unwrap().len(), 2, "{dbs}");
    assert_eq!(s.http().delete(format!("{}/v1/database/bad", s.url)).bearer_auth(&t).send().unwrap().status(), 200);
    assert_eq!(s.publish(&t, "bad", "bank").status(), 200);
    assert_eq!(count(&s, &t, "bad", "account"), 0);
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------------
// 3. A deleted database's workflows; 4. path traversal; 5. special files; 10. config refusals.

fn write_store(root: &Path, types: &[&str], per_type: usize) {
    for t in types {
        std::fs::create_dir_all(root.join(t)).unwrap();
        for i in 0..per_type {
            let doc = json!({"version": 1, "id": format!("{t}-{i:04}")});
            std::fs::write(root.join(t).join(format!("{t}-{i:04}.json")), doc.to_string()).unwrap();
        }
    }
}

fn sync_put_config(s: &Server, token: &str, db: &str, config: &Value) -> (u16, Value) {
    json_of(
        s.http()
            .put(format!("{}/v1/database/{db}/sync/config", s.url))
            .header("X-Admin-API-Key", KEY)
            .bearer_auth(token)
            .json(config)
            .send()
            .unwrap(),
    )
}

fn sync_post(s: &Server, token: &str, db: &str, path: &str) -> (u16, Value) {
    json_of(
        s.http()
            .post(format!("{}/v1/database/{db}/sync/{path}", s.url))
            .header("X-Admin-API-Key", KEY)
            .bearer_auth(token)
            .send()
            .unwrap(),
    )
}

fn workflow(s: &Server, token: &str, id: &str) -> (u16, Value) {
    json_of(
        s.http()
            .get(format!("{}/v1/sync/workflows/{id}", s.url))
            .header("X-Admin-API-Key", KEY)
            .bearer_auth(token)
            .send()
            .unwrap(),
    )
}

fn wait_for(s: &Server, token: &str, id: &str, what: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, v) = workflow(s, token, id);
        if what(&v) || Instant::now() > deadline {
            return v;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One try of the leak test: a resync on `leak1`, the database deleted under it and published
/// again; the old instance must touch nothing. Returns the id of a resync left running on the
/// new database (deleted again unless this is the last try).
fn leak_try(s: &Server, (alice, bob): (&str, &str), config: &Value, i: usize) -> String {
    assert_eq!(s.publish(alice, "leak1", "projections").status(), 200);
    assert_eq!(sync_put_config(s, alice, "leak1", config).0, 200);
    // Slow on the first try (as reproduced), then as fast as it goes.
    let delay = if i == 0 { 2 } else { 0 };
    let (status, body) = sync_post(s, alice, "leak1", &format!("resync-projections?batchSize=2&delaySeconds={delay}"));
    assert_eq!(status, 200, "{body}");
    let id = body["instanceId"].as_str().unwrap().to_string();
    wait_for(s, alice, &id, |v| v["done"].as_u64().unwrap_or(0) > 0);
    std::thread::sleep(Duration::from_millis(rand_suffix() % 50));
    let r = s.http().delete(format!("{}/v1/database/leak1", s.url)).bearer_auth(alice).send().unwrap();
    assert_eq!(r.status(), 200);
    // The instance is gone with its database, by id and for restarts.
    assert_eq!(workflow(s, alice, &id).0, 404);
    // The name is still alice's (as in 1.3): bob cannot take it.
    assert_eq!(s.publish(bob, "leak1", "projections").status(), 403);
    // Alice's new database of the same name gets nothing from the old resync.
    assert_eq!(s.publish(alice, "leak1", "projections").status(), 200);
    assert_eq!(sync_put_config(s, alice, "leak1", config).0, 200);
    let (status, _) = sync_post(s, alice, "leak1", &format!("workflows/{id}/restart"));
    assert_eq!(status, 404, "the old instance cannot be restarted against the new database");
    std::thread::sleep(Duration::from_millis(if i == 0 { 2_500 } else { 300 }));
    assert_eq!(
        count(s, alice, "leak1", "aggregate_projection"),
        0,
        "try {i}: the old resync wrote into the new database"
    );
    let list: Value = s
        .http()
        .get(format!("{}/v1/database/leak1/sync/workflows", s.url))
        .header("X-Admin-API-Key", KEY)
        .bearer_auth(alice)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(list["instances"], json!([]), "{list}");
    // Start one for the kill below, then delete the database again for the next try.
    let (status, body) = sync_post(s, alice, "leak1", "resync-projections?batchSize=2&delaySeconds=0");
    assert_eq!(status, 200, "{body}");
    let last_id = body["instanceId"].as_str().unwrap().to_string();
    if i + 1 < race_tries() {
        assert_eq!(
            s.http().delete(format!("{}/v1/database/leak1", s.url)).bearer_auth(alice).send().unwrap().status(),
            200
        );
    }
    last_id
}

#[test]
fn a_deleted_databases_workflows_never_touch_the_next_database_of_that_name() {
    let (dir, store) = (temp("leak"), temp("leak-store"));
    write_store(&store, &["user", "lock"], 40);
    let s = start_with_key(&dir);
    let (_, alice) = s.identity();
    let (_, bob) = s.identity();
    let config = json!({"objectStore": {"url": format!("file://{}", store.display())}});
    let mut last_id = String::new();
    for i in 0..race_tries() {
        last_id = leak_try(&s, (&alice, &bob), &config, i);
    }
    // A kill right after a delete: the instance must not come back after restart.
    wait_for(&s, &alice, &last_id, |v| v["done"].as_u64().unwrap_or(0) > 0);
    assert_eq!(
        s.http().delete(format!("{}/v1/database/leak1", s.url)).bearer_auth(&alice).send().unwrap().status(),
        200
    );
    s.crash();
    let s = start_with_key(&dir);
    assert_eq!(workflow(&s, &alice, &last_id).0, 404);
    assert_eq!(s.publish(&alice, "leak1", "projections").status(), 200);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(count(&s, &alice, "leak1", "aggregate_projection"), 0);
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&store);
}

/// Case 4, traversal in aggregateId / aggregateType: 400, and nothing about the file system.
fn traversal_is_refused(s: &Server, owner: &str, outside: &Path) {
    let outside_rel = format!("../../{}/secret", outside.file_name().unwrap().to_str().unwrap());
    for query in [
        format!("aggregateType=user&aggregateId={outside_rel}"),
        format!("aggregateType=user&aggregateId={}", outside.join("secret").display()),
        "aggregateType=../user&aggregateId=user-0001".to_string(),
        "aggregateType=%2Fetc&aggregateId=passwd".to_string(),
        "aggregateType=user&aggregateId=.hidden".to_string(),
    ] {
        let (status, body) = sync_post(s, owner, "paths", &format!("resync-projections?{query}"));
        assert_eq!(status, 400, "{query}: {body}");
        let message = body["message"].as_str().unwrap();
        assert!(message.starts_with("invalid aggregate type or id"), "{message}");
        assert!(!message.contains("No such file"), "{message}");
    }
    assert_eq!(count(s, owner, "paths", "aggregate_projection"), 0);
}

/// Case 5, the whole type: only regular files are aggregates; it completes. Named directly, a link
/// or a FIFO fails alone at once, and the server does not balloon reading /dev/zero.
fn only_regular_files_are_aggregates(s: &Server, owner: &str) {
    let (status, body) =
        sync_post(s, owner, "paths", "resync-projections?aggregateType=user&batchSize=10&delaySeconds=0");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["total"], 3, "links and FIFOs are not listed: {body}");
    let id = body["instanceId"].as_str().unwrap().to_string();
    let done = wait_for(s, owner, &id, |v| v["status"] == "complete");
    assert_eq!((done["status"].as_str(), done["succeeded"].as_u64()), (Some("complete"), Some(3)), "{done}");
    assert_eq!((done["done"].as_u64(), done["failed"].as_u64()), (Some(3), Some(0)), "nothing else was listed: {done}");
    // Named directly, each fails alone at once, without reading the device or waiting on the FIFO.
    for (aggregate, why) in [("evil", "symbolic link"), ("slow", "not a regular file")] {
        let (status, body) = sync_post(
            s,
            owner,
            "paths",
            &format!("resync-projections?aggregateType=user&aggregateId={aggregate}&delaySeconds=0&maxAttempts=1"),
        );
        assert_eq!(status, 200, "{body}");
        let id = body["instanceId"].as_str().unwrap().to_string();
        let v = wait_for(s, owner, &id, |v| v["status"] == "complete");
        assert_eq!(v["failed"], 1, "{v}");
        assert!(v["errors"][0].as_str().unwrap().contains(why), "{v}");
    }
    // The server did not balloon reading /dev/zero.
    let kb = rss_kb(s);
    assert!(kb < 1_000_000, "RSS {kb} kB");
}

/// Case 10, stores that are not stores, and empty keys.
fn stores_that_are_not_stores_are_refused(s: &Server, owner: &str, dir: &Path, config: &Value) {
    let data_dir = format!("file://{}", dir.join("databases").display());
    for url in ["file:///", "file:///proc/self", "file:///sys", "file:///tmp/../proc", data_dir.as_str()] {
        let (status, body) = sync_put_config(s, owner, "paths", &json!({"objectStore": {"url": url}}));
        assert_eq!(status, 400, "{url}: {body}");
    }
    for key in ["", "short"] {
        let (status, body) =
            sync_put_config(s, owner, "paths", &json!({"objectStore": config["objectStore"], "adminApiKey": key}));
        assert_eq!(status, 400, "{key:?}: {body}");
    }
    let r = s
        .http()
        .get(format!("{}/v1/database/paths/sync/config", s.url))
        .header("X-Admin-API-Key", "")
        .bearer_auth(owner)
        .send()
        .unwrap();
    assert_eq!(r.status(), 401, "an empty key is no key");
}

#[test]
fn paths_and_special_files_never_leave_the_store_and_never_hang() {
    let (dir, store, outside) = (temp("paths"), temp("paths-store"), temp("paths-outside"));
    write_store(&store, &["user"], 3);
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret.json"), r#"{"version":1,"secret":"do not read"}"#).unwrap();
    // A link to an endless device and a FIFO, both named like aggregates.
    std::os::unix::fs::symlink("/dev/zero", store.join("user").join("evil.json")).unwrap();
    let fifo = store.join("user").join("slow.json");
    let fifo_c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(fifo_c.as_ptr(), 0o600) }, 0);
    let s = start_with_key(&dir);
    let (_, owner) = s.identity();
    assert_eq!(s.publish(&owner, "paths", "projections").status(), 200);
    let config = json!({"objectStore": {"url": format!("file://{}", store.display())}});
    assert_eq!(sync_put_config(&s, &owner, "paths", &config).0, 200);

    traversal_is_refused(&s, &owner, &outside);
    only_regular_files_are_aggregates(&s, &owner);

    // Terminate ends an instance at once: the scope is free for the next resync.
    let (_, body) = sync_post(&s, &owner, "paths", "resync-projections?batchSize=1&delaySeconds=60");
    let id = body["instanceId"].as_str().unwrap().to_string();
    let (status, t) = sync_post(&s, &owner, "paths", &format!("workflows/{id}/terminate"));
    assert_eq!((status, t["status"].as_str()), (200, Some("terminated")), "{t}");
    assert_eq!(sync_post(&s, &owner, "paths", "resync-projections?batchSize=1&delaySeconds=0").0, 200);

    stores_that_are_not_stores_are_refused(&s, &owner, &dir, &config);
    drop(s);
    for d in [&dir, &store, &outside] {
        let _ = std::fs::remove_dir_all(d);
    }
}

// ---------------------------------------------------------------------------------------------
// 6. Names on someone else's database; 11. client mistakes are 4xx with one line.

#[test]
fn only_the_owner_names_a_database_and_names_are_capped() {
    let s = Server::start(&[]);
    let (_, alice) = s.identity();
    let (_, bob) = s.identity();
    assert_eq!(s.publish(&alice, "bank", "bank").status(), 200);
    let add = |token: &str, name: &str| {
        let r = s
            .http()
            .post(format!("{}/v1/database/bank/names", s.url))
            .bearer_auth(token)
            .body(name.to_string())
            .send()
            .unwrap();
        (r.status().as_u16(), r.text().unwrap())
    };
    let (status, body) = add(&bob, "bobs-alias");
    assert_eq!(status, 403, "{body}");
    assert!(body.starts_with("Permission denied"), "{body}");
    let names: Value = s.http().get(format!("{}/v1/database/bank/names", s.url)).send().unwrap().json().unwrap();
    assert_eq!(names["names"], json!(["bank"]));
    // Bob's publish to the name he tried to take goes nowhere near alice's database.
    assert_eq!(s.publish(&bob, "bobs-alias", "chat").status(), 200);
    let id =
        |name: &str| s.http().get(format!("{}/v1/database/{name}/identity", s.url)).send().unwrap().text().unwrap();
    assert_ne!(id("bobs-alias"), id("bank"));
    // A name already in use is a conflict.
    assert_eq!(add(&alice, "bobs-alias").0, 409);
    // The cap: 64 names in all.
    for i in 1..64 {
        assert_eq!(add(&alice, &format!("alias-{i}")).0, 200);
    }
    let (status, body) = add(&alice, "alias-64");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("64 names"), "{body}");
}

#[test]
fn bad_modules_are_the_publishers_mistake_with_one_line_each() {
    let s = Server::start(&["--reducer-timeout-ms", "500"]);
    let (_, t) = s.identity();
    let put = |name: &str, body: Vec<u8>| {
        let r = s.http().put(format!("{}/v1/database/{name}", s.url)).bearer_auth(&t).body(body).send().unwrap();
        (r.status().as_u16(), r.text().unwrap())
    };
    let bank = std::fs::read(fixture("bank")).unwrap();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("notwasm", b"hello, not wasm".to_vec(), "failed to parse WebAssembly module"),
        ("truncated", bank[..bank.len() / 2].to_vec(), "failed to parse WebAssembly module"),
        ("empty", Vec::new(), "failed to parse WebAssembly module"),
        ("hugemem", br#"(module (memory (export "memory") 60000))"#.to_vec(), ""),
        (
            "loops",
            br#"(module (memory (export "memory") 1) (func $s (loop (br 0))) (start $s)
                (func (export "__describe_module__") (param i32))
                (func (export "__call_reducer__") (param i32 i64 i64 i64 i64 i64 i64 i64 i32 i32) (result i32) (i32.const 0)))"#
                .to_vec(),
            "",
        ),
        (
            "nodef",
            br#"(module (memory (export "memory") 1)
                (func (export "__describe_module__") (param i32))
                (func (export "__call_reducer__") (param i32 i64 i64 i64 i64 i64 i64 i64 i32 i32) (result i32) (i32.const 0)))"#
                .to_vec(),
            "",
        ),
    ];
    for (name, body, starts) in cases {
        let (status, text) = put(name, body);
        assert_eq!(status, 400, "{name}: {text}");
        assert!(text.starts_with(starts), "{name}: {text}");
        assert!(!text.contains('\n') && text.len() <= 1100, "{name}: one line: {text:?}");
        assert!(!text.contains("Product(") && !text.contains("[0]: [0]:"), "{name}: {text}");
        // No database is left behind; as in 1.3 the name stays, for a fixed module.
        let r = s.http().get(format!("{}/v1/database/{name}", s.url)).send().unwrap();
        assert_eq!((r.status().as_u16(), r.text().unwrap()), (404, "No such database.".into()), "{name}");
    }
    assert_eq!(put("notwasm", bank).0, 200, "the name takes a fixed module");
}

// ---------------------------------------------------------------------------------------------
// 7. Module logs bounded in bytes; 8. zero-interval schedules capped.

#[test]
fn huge_log_lines_are_cut_and_the_log_stays_bounded() {
    let s = Server::start(&[]);
    let (_, t) = s.identity();
    assert_eq!(s.publish(&t, "tc", "typecheck").status(), 200);
    let text = "x".repeat(512 * 1024);
    for _ in 0..20 {
        assert_eq!(s.call(&t, "tc", "log_levels", &json!([text]).to_string()).0, 200);
    }
    let r = s.http().get(format!("{}/v1/database/tc/logs?num_lines=20", s.url)).bearer_auth(&t).send().unwrap();
    assert_eq!(r.status(), 200);
    let body = r.text().unwrap();
    assert!(body.len() < 20 * 20 * 1024, "{} bytes for 20 lines", body.len());
    assert!(body.contains("more bytes cut]"));
    let kb = rss_kb(&s);
    assert!(kb < 600_000, "RSS {kb} kB after logging 40 MiB");
}

/// A module passing 1 MiB to `console_log` over and over: each line keeps 16 KiB, and the
/// server's memory grows by about the log's 8 MiB bound, not by the 1 MiB each cut line used to
/// keep as spare capacity (512 lines: 512 MiB).
#[test]
fn logging_mebibyte_lines_costs_only_what_the_log_keeps() {
    let s = Server::start(&[]);
    let (_, t) = s.identity();
    assert_eq!(s.publish(&t, "tc", "typecheck").status(), 200);
    let args = json!(["x".repeat(1 << 20)]).to_string();
    // Warm up (the allocator's arenas, the module's memory) before the baseline.
    for _ in 0..4 {
        assert_eq!(s.call(&t, "tc", "log_levels", &args).0, 200);
    }
    let before = rss_kb(&s);
    // `log_levels` logs its argument 5 times: 520 lines of 1 MiB.
    for _ in 0..104 {
        assert_eq!(s.call(&t, "tc", "log_levels", &args).0, 200);
    }
    let grown = rss_kb(&s).saturating_sub(before);
    assert!(grown < 64 << 10, "the server grew by {grown} kB after logging 520 lines of 1 MiB");
    let r = s.http().get(format!("{}/v1/database/tc/logs?num_lines=1", s.url)).bearer_auth(&t).send().unwrap();
    assert!(r.text().unwrap().contains("more bytes cut]"));
}

#[test]
fn a_zero_interval_schedule_is_capped_per_second() {
    let s = Server::start(&[]);
    let (_, owner) = s.identity();
    assert_eq!(s.publish(&owner, "tc", "typecheck").status(), 200);
    let started = Instant::now();
    // Anonymous, as reproduced.
    let r = s
        .http()
        .post(format!("{}/v1/database/tc/call/schedule_ticks", s.url))
        .header("Content-Type", "application/json")
        .body(r#"["flood", 0]"#)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    std::thread::sleep(Duration::from_millis(2_500));
    let ticks = count(&s, &owner, "tc", "tick_log");
    let seconds = started.elapsed().as_secs() + 1;
    assert!(ticks > 0, "a zero interval runs (1.3's rule)");
    assert!(ticks <= 1_000 * seconds, "{ticks} runs in under {seconds} s: the cap of 1,000/s does not hold");
    // The database still answers other calls promptly enough to be used.
    assert_eq!(s.call(&owner, "tc", "fill_grid", "[1, 1, \"a\"]").0, 200);
}

// ---------------------------------------------------------------------------------------------
// 9. The server listens at once; databases open independently; compiled modules are cached.

#[test]
fn the_server_listens_while_a_database_is_still_opening_and_restarts_do_not_recompile() {
    let dir = temp("startup");
    let s = Server::start_in(dir.clone(), &[]);
    let (_, t) = s.identity();
    assert_eq!(s.publish(&t, "slow", "bank").status(), 200);
    assert_eq!(s.publish(&t, "quick", "chat").status(), 200);
    assert_eq!(s.call(&t, "slow", "open_accounts", "[0, 2, 5]").0, 200);
    let id =
        |name: &str| s.http().get(format!("{}/v1/database/{name}/identity", s.url)).send().unwrap().text().unwrap();
    let (slow_dir, quick_dir) = (dir.join("databases").join(id("slow")), dir.join("databases").join(id("quick")));
    drop(s);

    // The quick database's compiled module is cached; a restart must not rewrite it.
    let cache = quick_dir.join("module.cwasm");
    let cached_at = std::fs::metadata(&cache).expect("the compiled module is cached").modified().unwrap();

    // The slow database's module sits behind a FIFO nobody writes yet: opening it blocks, as a
    // huge module's compile or a slow disk would.
    let wasm = std::fs::read(slow_dir.join("module.wasm")).unwrap();
    std::fs::remove_file(slow_dir.join("module.wasm")).unwrap();
    let fifo = std::ffi::CString::new(slow_dir.join("module.wasm").to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);

    let s = Server::start_listening(dir.clone(), &[]);
    assert_eq!(s.http().get(format!("{}/v1/ping", s.url)).send().unwrap().status(), 200, "it listens at once");
    let deadline = Instant::now() + Duration::from_secs(60);
    while s.sql(Some(&t), "quick", "SELECT COUNT(*) AS n FROM member").0 != 200 {
        assert!(Instant::now() < deadline, "the quick database opens while the slow one is still opening");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (status, body) = s.sql(Some(&t), "slow", "SELECT COUNT(*) AS n FROM account");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("starting"), "{body}");
    assert_eq!(s.call(&t, "slow", "open_accounts", "[5, 1, 1]").0, 503);

    // Let the slow one through: it opens with its data.
    let writer = std::thread::spawn({
        let (path, wasm) = (slow_dir.join("module.wasm"), wasm.clone());
        move || std::fs::write(path, wasm).unwrap()
    });
    s.wait_ready();
    writer.join().unwrap();
    assert_eq!(count(&s, &t, "slow", "account"), 2);
    assert_eq!(std::fs::metadata(&cache).unwrap().modified().unwrap(), cached_at, "restart used the cached compile");
    // A damaged cache is only a slower start.
    drop(s);
    std::fs::remove_file(slow_dir.join("module.wasm")).unwrap();
    std::fs::write(slow_dir.join("module.wasm"), &wasm).unwrap();
    std::fs::write(&cache, b"EPOCHCW1 not a module").unwrap();
    let s = Server::start_in(dir.clone(), &[]);
    assert_eq!(s.sql(Some(&t), "quick", "SELECT COUNT(*) AS n FROM member").0, 200);
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}
