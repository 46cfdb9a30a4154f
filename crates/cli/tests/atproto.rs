//! AT Protocol backfill against a real PDS (`@atproto/dev-env`): accounts and records are created
//! over XRPC, then `POST /api/admin/backfill` re-reads every member's repo through the
//! `projections` fixture's `reset_repo` and `ingest_record` reducers, and the `forum_record`
//! table must equal the repos; the seed's answers (202, 409, 404, 503, the auth matrix) and
//! progress polled by id while it runs.

mod common;

use std::time::{Duration, Instant};

use common::services::Pds;
use common::Server;
use serde_json::{json, Value};

const KEY: &str = "atproto-admin-key-0001";
const POST: &str = "app.forum.post";

/// An account on the PDS.
struct Account {
    did: String,
    jwt: String,
}

/// The tests of this file run one at a time. Each starts a PDS (Node) and servers on two cores,
/// one restarts a PDS on a port it frees, and they time kills against a live firehose: run
/// side by side, a live phase once left one repo's records unapplied past the 60 s a test
/// waits (see the stop 20 note). Alone, the file runs in 87 s, faster than in parallel.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    // A failed test poisons the lock; the next one still runs alone.
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn xrpc(pds: &Pds, method: &str, jwt: Option<&str>, body: Value) -> Value {
    let mut req = reqwest::blocking::Client::new().post(format!("{}/xrpc/{method}", pds.url)).json(&body);
    if let Some(t) = jwt {
        req = req.bearer_auth(t);
    }
    let r = req.send().unwrap();
    let status = r.status();
    let v: Value = r.json().unwrap_or(Value::Null);
    assert!(status.is_success(), "{method}: {status} {v}");
    v
}

fn create_account(pds: &Pds, name: &str) -> Account {
    let v = xrpc(
        pds,
        "com.atproto.server.createAccount",
        None,
        json!({"email": format!("{name}@example.com"), "handle": format!("{name}.test"), "password": "hunter22-password"}),
    );
    Account { did: v["did"].as_str().unwrap().to_string(), jwt: v["accessJwt"].as_str().unwrap().to_string() }
}

fn create_record(pds: &Pds, a: &Account, collection: &str, rkey: &str, record: Value) {
    xrpc(
        pds,
        "com.atproto.repo.createRecord",
        Some(&a.jwt),
        json!({"repo": a.did, "collection": collection, "rkey": rkey, "record": record, "validate": false}),
    );
}

/// Every record of the kept collection in the PDS, as (uri, cid, record JSON), sorted.
fn repo_records(pds: &Pds, accounts: &[&Account]) -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    for a in accounts {
        let mut cursor = String::new();
        loop {
            let url = format!(
                "{}/xrpc/com.atproto.repo.listRecords?repo={}&collection={POST}&limit=100&cursor={cursor}",
                pds.url, a.did
            );
            let v: Value = reqwest::blocking::get(url).unwrap().json().unwrap();
            for r in v["records"].as_array().unwrap() {
                out.push((
                    r["uri"].as_str().unwrap().to_string(),
                    r["cid"].as_str().unwrap().to_string(),
                    r["value"].clone(),
                ));
            }
            match v["cursor"].as_str() {
                Some(c) if !v["records"].as_array().unwrap().is_empty() => cursor = c.to_string(),
                _ => break,
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// What differs between the table and the repos (at most ten rows each way), for messages.
fn differences(table: &[(String, String, Value)], repos: &[(String, String, Value)]) -> String {
    let only = |a: &[(String, String, Value)], b: &[(String, String, Value)]| -> Vec<String> {
        a.iter().filter(|r| !b.contains(r)).take(10).map(|(uri, _, v)| format!("{uri} {v}")).collect()
    };
    format!(
        "{} rows in the table, {} in the repos; only in the table: {:?}; only in the repos: {:?}",
        table.len(),
        repos.len(),
        only(table, repos),
        only(repos, table)
    )
}

struct Epoch {
    server: Server,
    owner: String,
    dir: TempDir,
}

/// A directory removed when dropped.
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The local PLC directory (and the lying one) are on loopback: the operator allows them, as
/// Epoch fetches DID documents on public addresses only otherwise.
const LOCAL_PLC: &[&str] = &["--atproto-allowed-host", "127.0.0.1", "--atproto-allowed-host", "localhost"];

impl Epoch {
    fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("epoch-atproto-{}-{}", std::process::id(), common::rand_suffix()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("admin.key"), KEY).unwrap();
        let server = Server::start_in(
            dir.join("data"),
            &[
                &["--admin-api-key-file", dir.join("admin.key").to_str().unwrap(), "--default-database", "forum"],
                LOCAL_PLC,
            ]
            .concat(),
        );
        let (_, owner) = server.identity();
        assert!(server.publish(&owner, "forum", "projections").status().is_success());
        Self { server, owner, dir: TempDir(dir) }
    }

    fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        key: Option<&str>,
        token: Option<&str>,
    ) -> (u16, Value) {
        let mut req = self.server.http().request(method.parse().unwrap(), format!("{}{path}", self.server.url));
        if let Some(k) = key {
            req = req.header("X-API-Key", k);
        }
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let r = req.send().unwrap();
        (r.status().as_u16(), r.json().unwrap_or(Value::Null))
    }

    fn admin(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        self.send(method, path, body, Some(KEY), Some(&self.owner))
    }

    /// The `forum_record` table as (uri, cid, record JSON), sorted.
    fn table(&self) -> Vec<(String, String, Value)> {
        let (status, body) = self.server.sql(Some(&self.owner), "forum", "SELECT uri, cid, record FROM forum_record");
        assert_eq!(status, 200, "{body}");
        let rows = serde_json::from_str::<Value>(&body).unwrap()[0]["rows"].as_array().unwrap().clone();
        let mut out: Vec<(String, String, Value)> = rows
            .iter()
            .map(|r| {
                (
                    r[0].as_str().unwrap().to_string(),
                    r[1].as_str().unwrap().to_string(),
                    serde_json::from_str(r[2].as_str().unwrap()).unwrap(),
                )
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Waits until the table equals the repos (the live consumer applies changes on its own).
    fn wait_equal(&self, pds: &Pds, accounts: &[&Account]) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (table, repos) = (self.table(), repo_records(pds, accounts));
            if table == repos {
                return;
            }
            assert!(Instant::now() < deadline, "the table never caught up: {}", differences(&table, &repos));
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Kills the server, runs `meanwhile`, and starts it again on the same data.
    fn restart_after(self, meanwhile: impl FnOnce()) -> Self {
        let Epoch { server, owner, dir } = self;
        server.crash();
        meanwhile();
        let server = Server::start_in(
            dir.0.join("data"),
            &[
                &["--admin-api-key-file", dir.0.join("admin.key").to_str().unwrap(), "--default-database", "forum"],
                LOCAL_PLC,
            ]
            .concat(),
        );
        Self { server, owner, dir }
    }

    /// Polls a backfill until it ends; returns its last progress.
    fn wait(&self, id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let (status, v) = self.admin("GET", &format!("/api/admin/backfill/{id}"), None);
            assert_eq!(status, 200, "{v}");
            if v["status"] != "in_progress" {
                return v;
            }
            assert!(Instant::now() < deadline, "backfill {id} never ended: {v}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[test]
fn full_sync_backfill_makes_the_table_equal_to_the_repos() {
    let _one_at_a_time = serial();
    let Some(pds) = Pds::require() else { return };
    let accounts = ten_posts_each(&pds, &["alice", "bob", "carol"]);
    let accounts_ref: Vec<&Account> = accounts.iter().collect();
    let epoch = Epoch::start();
    let (stranger_id, stranger) = backfill_needs_credentials_and_a_source(&epoch);
    first_full_sync(&epoch, &pds, &accounts_ref);
    live_changes_reach_the_table(&epoch, &pds, &accounts_ref);
    fresh_cursor_needs_no_backfill(&epoch);
    let epoch = catch_up_after_downtime(epoch, &pds, &accounts_ref);
    let mut pds = pds;
    let epoch = outdated_cursor_becomes_full_sync(epoch, &mut pds, &accounts_ref);

    // A grantee may run backfills.
    let (status, _) = epoch.admin(
        "POST",
        "/v1/database/forum/permissions",
        Some(&json!({"identity": stranger_id, "permission": "sync"})),
    );
    assert_eq!(status, 200);
    let (status, started) =
        epoch.send("POST", "/v1/database/forum/sync/backfill?force=full_sync", None, Some(KEY), Some(&stranger));
    assert_eq!(status, 202, "{started}");
    epoch.wait(started["id"].as_str().unwrap());
    assert_eq!(epoch.table(), repo_records(&pds, &accounts_ref));
}

/// Accounts with ten posts each, and a record of another collection (not kept).
fn ten_posts_each(pds: &Pds, names: &[&str]) -> Vec<Account> {
    let accounts: Vec<Account> = names.iter().map(|n| create_account(pds, n)).collect();
    for (n, a) in accounts.iter().enumerate() {
        for i in 0..10 {
            let record =
                json!({"$type": POST, "text": format!("post {i} by {}", names[n]), "n": i, "tags": ["a", "b"]});
            create_record(pds, a, POST, &format!("p{i:03}"), record);
        }
        create_record(pds, a, "app.forum.like", "l1", json!({"$type": "app.forum.like", "subject": "x"}));
    }
    accounts
}

/// The auth matrix, then 503 while the database has no AT Protocol source; returns a stranger
/// (identity, token).
fn backfill_needs_credentials_and_a_source(epoch: &Epoch) -> (String, String) {
    let (stranger_id, stranger) = epoch.server.identity();
    assert_eq!(epoch.send("POST", "/api/admin/backfill", None, None, Some(&epoch.owner)).0, 401);
    assert_eq!(epoch.send("POST", "/api/admin/backfill", None, Some("wrong-key-wrong-key"), Some(&epoch.owner)).0, 401);
    assert_eq!(epoch.send("POST", "/api/admin/backfill", None, Some(KEY), None).0, 401);
    let (status, body) = epoch.send("POST", "/api/admin/backfill", None, Some(KEY), Some(&stranger));
    assert_eq!((status, body["details"][0]["field"].as_str()), (403, Some("Authorization")), "{body}");
    let (status, body) = epoch.admin("POST", "/api/admin/backfill", None);
    assert_eq!(status, 503, "{body}");
    (stranger_id, stranger)
}

/// With no cursor, a throttled source's backfill is a full_sync, started at once, pollable by
/// id, one at a time; it ends with the table equal to the repos.
fn first_full_sync(epoch: &Epoch, pds: &Pds, accounts: &[&Account]) {
    // The source, throttled so the backfill is slow enough to watch.
    let config = json!({"atproto": {"service": pds.url, "collections": [POST], "requestsPerSecond": 2, "batchSize": 4, "backfillCursorMaxAgeHours": 1}});
    let (status, body) = epoch.admin("PATCH", "/v1/database/forum/sync/config", Some(&config));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["atproto"]["backfillCursorMaxAgeHours"], 1.0, "{body}");
    let (status, body) =
        epoch.admin("PATCH", "/v1/database/forum/sync/config", Some(&json!({"atproto": {"service": "ftp://x"}})));
    assert_eq!(status, 400, "{body}");

    // No cursor: a full_sync, started at once and pollable by id.
    let (status, started) = epoch.admin("POST", "/api/admin/backfill", None);
    assert_eq!(status, 202, "{started}");
    assert_eq!(
        (started["message"].as_str(), started["type"].as_str(), started["status"].as_str()),
        (Some("Backfill started"), Some("full_sync"), Some("in_progress")),
        "{started}"
    );
    let id = started["id"].as_str().unwrap().to_string();
    assert!(id.parse::<u64>().is_ok(), "a bigint as text: {id}");
    // One at a time: 409 with the running one's id.
    let (status, conflict) = epoch.admin("POST", "/api/admin/backfill?force=full_sync", None);
    assert_eq!((status, conflict["id"].as_str()), (409, Some(id.as_str())), "{conflict}");
    let (status, progress) = epoch.admin("GET", &format!("/v1/database/forum/sync/backfill/{id}"), None);
    assert_eq!((status, progress["status"].as_str()), (200, Some("in_progress")), "{progress}");
    assert_eq!(progress["reposTotal"], 3, "{progress}");
    let done = epoch.wait(&id);
    assert_eq!(done["status"], "complete", "{done}");
    assert_eq!((done["reposDone"].as_u64(), done["reposFailed"].as_u64()), (Some(3), Some(0)), "{done}");
    assert_eq!(done["recordsApplied"], 30, "{done}");
    assert!(done["endedAt"].as_str().unwrap().ends_with('Z'), "{done}");
    let expected = repo_records(pds, accounts);
    assert_eq!(expected.len(), 30);
    assert_eq!(epoch.table(), expected, "the table equals the repos");
}

/// The live consumer (started with the section) follows the firehose: a delete, an update
/// and a new record reach the table with no backfill.
fn live_changes_reach_the_table(epoch: &Epoch, pds: &Pds, accounts: &[&Account]) {
    let (alice, bob) = (&accounts[0], &accounts[1]);
    xrpc(
        pds,
        "com.atproto.repo.deleteRecord",
        Some(&alice.jwt),
        json!({"repo": alice.did, "collection": POST, "rkey": "p003"}),
    );
    xrpc(
        pds,
        "com.atproto.repo.putRecord",
        Some(&bob.jwt),
        json!({"repo": bob.did, "collection": POST, "rkey": "p001", "record": {"$type": POST, "text": "edited", "n": 1}, "validate": false}),
    );
    create_record(pds, alice, POST, "p100", json!({"$type": POST, "text": "new", "n": 100}));
    epoch.wait_equal(pds, accounts);
}

/// A fresh cursor: no backfill needed (an unknown force value is ignored); a forced catch_up
/// replays from the cursor to the head.
fn fresh_cursor_needs_no_backfill(epoch: &Epoch) {
    let (status, body) = epoch.admin("POST", "/api/admin/backfill?force=sideways", None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["message"], "No backfill needed. Use ?force=catch_up or ?force=full_sync to override.");
    let (status, started) = epoch.admin("POST", "/api/admin/backfill?force=catch_up", None);
    assert_eq!((status, started["type"].as_str()), (202, Some("catch_up")), "{started}");
    let done = epoch.wait(started["id"].as_str().unwrap());
    assert_eq!((done["status"].as_str(), done["type"].as_str()), (Some("complete"), Some("catch_up")), "{done}");
    assert!(done["fromCursor"].as_i64().is_some(), "{done}");
    assert_eq!(epoch.admin("GET", "/api/admin/backfill/12345", None).0, 404);
}

/// Downtime: the server is killed, the repos change, and the cursor ages past the threshold
/// (set to 1.8 s); after the restart, detection picks a catch_up and the table ends equal.
fn catch_up_after_downtime(epoch: Epoch, pds: &Pds, accounts: &[&Account]) -> Epoch {
    let bob = accounts[1];
    let quick = json!({"atproto": {"service": pds.url, "collections": [POST], "backfillCursorMaxAgeHours": 0.0005}});
    assert_eq!(epoch.admin("PATCH", "/v1/database/forum/sync/config", Some(&quick)).0, 200);
    let epoch = epoch.restart_after(|| {
        xrpc(
            pds,
            "com.atproto.repo.deleteRecord",
            Some(&bob.jwt),
            json!({"repo": bob.did, "collection": POST, "rkey": "p002"}),
        );
        create_record(pds, accounts[2], POST, "p200", json!({"$type": POST, "text": "while down", "n": 200}));
        std::thread::sleep(Duration::from_millis(2500));
    });
    let (status, started) = epoch.admin("POST", "/api/admin/backfill", None);
    assert_eq!((status, started["type"].as_str()), (202, Some("catch_up")), "{started}");
    let done = epoch.wait(started["id"].as_str().unwrap());
    assert_eq!(done["status"], "complete", "{done}");
    epoch.wait_equal(pds, accounts);

    epoch
}

/// The relay's window shrinks so the events after the cursor are gone: the catch_up meets
/// OutdatedCursor and becomes a full_sync, which says so; the table ends equal again.
fn outdated_cursor_becomes_full_sync(epoch: Epoch, pds: &mut Pds, accounts: &[&Account]) -> Epoch {
    let alice = accounts[0];
    pds.set_backfill_limit_ms(1000);
    let epoch = epoch.restart_after(|| {
        create_record(&*pds, alice, POST, "p300", json!({"$type": POST, "text": "gone from the window", "n": 300}));
        xrpc(
            &*pds,
            "com.atproto.repo.deleteRecord",
            Some(&alice.jwt),
            json!({"repo": alice.did, "collection": POST, "rkey": "p000"}),
        );
        std::thread::sleep(Duration::from_millis(2500));
    });
    let (status, started) = epoch.admin("POST", "/api/admin/backfill?force=catch_up", None);
    assert_eq!((status, started["type"].as_str()), (202, Some("catch_up")), "{started}");
    let id = started["id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    let done = loop {
        let (_, v) = epoch.admin("GET", &format!("/api/admin/backfill/{id}"), None);
        if v["type"] == "full_sync" && v["status"] != "in_progress" {
            break v;
        }
        assert!(Instant::now() < deadline, "the catch_up never became a full_sync: {v}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(done["status"], "complete", "{done}");
    assert!(done["note"].as_str().unwrap().contains("OutdatedCursor"), "{done}");
    pds.set_backfill_limit_ms(86_400_000);
    epoch.wait_equal(&*pds, accounts);

    epoch
}

/// Creates records `p{from}`..`p{to}` in `a`'s repo, 50 to a commit (`applyWrites`).
fn create_many(pds: &Pds, a: &Account, range: std::ops::Range<usize>) {
    for chunk in range.collect::<Vec<_>>().chunks(50) {
        let writes: Vec<Value> = chunk
            .iter()
            .map(|i| {
                json!({"$type": "com.atproto.repo.applyWrites#create", "collection": POST, "rkey": format!("p{i:03}"),
                       "value": {"$type": POST, "text": format!("post {i}"), "n": i}})
            })
            .collect();
        xrpc(
            pds,
            "com.atproto.repo.applyWrites",
            Some(&a.jwt),
            json!({"repo": a.did, "writes": writes, "validate": false}),
        );
    }
}

impl Epoch {
    /// How many times `ingest_record` has run (the fixture counts each call).
    /// How many repos the running live consumer has read again whole (its saved cursor's count).
    fn rereads(&self) -> usize {
        let (_, list) = self.admin("GET", "/v1/database/forum/sync/workflows", None);
        let live = list["instances"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["kind"] == "atproto-firehose" && i["status"] == "running")
            .cloned();
        live.map_or(0, |i| i["cursor"]["rereads"].as_u64().unwrap_or(0) as usize)
    }

    fn records_ingested(&self) -> u64 {
        let q = "SELECT applied FROM ingest_stats WHERE source = 'record'";
        let (status, body) = self.server.sql(Some(&self.owner), "forum", q);
        assert_eq!(status, 200, "{body}");
        serde_json::from_str::<Value>(&body).unwrap()[0]["rows"][0][0].as_u64().unwrap_or(0)
    }

    /// Polls backfill `id` until `ready` holds for its progress (or it ended); returns it.
    fn poll_until(&self, id: &str, ready: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (status, v) = self.admin("GET", &format!("/api/admin/backfill/{id}"), None);
            assert_eq!(status, 200, "{v}");
            if ready(&v) || v["status"] != "in_progress" {
                return v;
            }
            assert!(Instant::now() < deadline, "backfill {id}: {v}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A full_sync resets each repo and ingests it from one snapshot; live events of a repo it has
/// not finished wait and are applied after it, so a delete or an update made meanwhile is not
/// undone by the snapshot. Driven through the CLI (`sync config`, `sync backfill --follow`).
#[test]
fn live_events_during_a_full_sync_wait_for_their_repo() {
    let _one_at_a_time = serial();
    let Some(pds) = Pds::require() else { return };
    let mut accounts: Vec<Account> = ["dora", "emil", "fay"].iter().map(|n| create_account(&pds, n)).collect();
    accounts.sort_by(|a, b| a.did.cmp(&b.did));
    // The first repo in DID order is re-read first, and is long: the live events made while it
    // is read reach the firehose well before the full_sync reaches the records they touch.
    create_many(&pds, &accounts[0], 0..1500);
    for a in &accounts[1..] {
        create_many(&pds, a, 0..5);
    }
    let epoch = Epoch::start();
    let cli = |args: &[&str]| epoch_cli(&epoch, args);
    let (ok, out, err) = finish(cli(&[
        "sync",
        "config",
        "--database",
        "forum",
        "--atproto-service",
        &pds.url,
        "--atproto-collection",
        POST,
    ]));
    assert!(ok && out.contains("\"collections\""), "{out}{err}");
    // One record a batch, so the first repo takes a while.
    let slow = json!({"atproto": {"service": pds.url, "collections": [POST], "batchSize": 1}});
    assert_eq!(epoch.admin("PATCH", "/v1/database/forum/sync/config", Some(&slow)).0, 200);

    let mut follow = cli(&["sync", "backfill", "--database", "forum", "--force", "full_sync", "--follow"]);
    let id = backfill_started_by(&epoch, &mut follow);
    let progress = epoch.poll_until(&id, |v| v["recordsApplied"].as_u64() >= Some(30));
    assert_eq!(progress["status"], "in_progress", "the first repo is still being ingested: {progress}");
    change_repos_during_a_full_sync(&pds, &accounts[0], &accounts[2]);

    let (ok, out, err) = finish(follow);
    assert!(ok, "{out}{err}");
    assert!(out.contains(&format!("{id}: complete (full_sync)")), "{out}");
    let refs: Vec<&Account> = accounts.iter().collect();
    epoch.wait_equal(&pds, &refs);
    let table = epoch.table();
    assert!(table.iter().all(|(uri, _, _)| !uri.ends_with("/p1499")), "the delete made meanwhile stands");
}

/// Starts the `epoch` CLI against `epoch`'s server (owner's token, admin key) with `args`.
fn epoch_cli(epoch: &Epoch, args: &[&str]) -> std::process::Child {
    let cfg = epoch.dir.0.join("cli.json");
    std::fs::write(&cfg, json!({"tokens": {epoch.server.url.clone(): epoch.owner.clone()}}).to_string()).unwrap();
    std::process::Command::new(env!("CARGO_BIN_EXE_epoch"))
        .args(["--server", &epoch.server.url, "--config"])
        .arg(&cfg)
        .args(args)
        .env("EPOCH_ADMIN_API_KEY", KEY)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for a CLI run: (succeeded, stdout, stderr).
fn finish(child: std::process::Child) -> (bool, String, String) {
    let out = child.wait_with_output().unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).to_string();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

/// The id of the backfill a running `sync backfill --follow` started.
fn backfill_started_by(epoch: &Epoch, follow: &mut std::process::Child) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if follow.try_wait().unwrap().is_some() || Instant::now() > deadline {
            let _ = follow.kill();
            let status = follow.wait();
            let mut stderr = String::new();
            let _ = std::io::Read::read_to_string(&mut follow.stderr.take().unwrap(), &mut stderr);
            panic!("the CLI ended before its backfill was seen: {status:?} {stderr}");
        }
        let (_, list) = epoch.admin("GET", "/v1/database/forum/sync/workflows", None);
        let found = list["instances"].as_array().into_iter().flatten().find_map(|i| i["backfillId"].as_str());
        if let Some(id) = found {
            return id.to_string();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// In the repo being re-read (`first`): a record not yet ingested is deleted, another updated,
/// one added; and in a repo not reached yet (`later`), one deleted.
fn change_repos_during_a_full_sync(pds: &Pds, first: &Account, later: &Account) {
    xrpc(
        pds,
        "com.atproto.repo.deleteRecord",
        Some(&first.jwt),
        json!({"repo": first.did, "collection": POST, "rkey": "p1499"}),
    );
    xrpc(
        pds,
        "com.atproto.repo.putRecord",
        Some(&first.jwt),
        json!({"repo": first.did, "collection": POST, "rkey": "p1498", "record": {"$type": POST, "text": "edited meanwhile", "n": 1498}, "validate": false}),
    );
    create_record(pds, first, POST, "p9000", json!({"$type": POST, "text": "added meanwhile", "n": 9000}));
    xrpc(
        pds,
        "com.atproto.repo.deleteRecord",
        Some(&later.jwt),
        json!({"repo": later.did, "collection": POST, "rkey": "p004"}),
    );
}

/// SIGKILL mid-backfill and mid-firehose: after each restart the work resumes, the table ends
/// equal to the repos, and `ingest_record` ran once per record (the fixture counts its calls).
#[test]
fn killed_mid_backfill_and_mid_firehose_each_record_is_applied_once() {
    let _one_at_a_time = serial();
    let Some(pds) = Pds::require() else { return };
    let (accounts, epoch) = synced_through_kills(&pds);
    let refs: Vec<&Account> = accounts.iter().collect();
    // One live record per repo first, so the live consumer has a position in the stream (the
    // phase where it is killed while records arrive is the test below).
    for (n, a) in accounts.iter().enumerate() {
        create_many(&pds, a, 900 + n..901 + n);
    }
    epoch.wait_equal(&pds, &refs);
    assert_eq!(epoch.records_ingested(), 453, "each live create once");
    firehose_batches_killed(epoch, &pds, &accounts, 453);
}

/// The live consumer killed twice while records are being created, after a full_sync that was
/// killed twice: each create is applied once and none is lost. It once lost the first live
/// records of the repo the interrupted full_sync finished first (about one run in four): a
/// resumed full_sync did not hand over the revs of the repos it finished before the kill, and a
/// consumer restarted with no place in the stream had nothing to compare its commits with.
#[test]
fn killed_full_sync_then_killed_live_consumer_lose_no_record() {
    let _one_at_a_time = serial();
    let Some(pds) = Pds::require() else { return };
    let (accounts, epoch) = synced_through_kills(&pds);
    live_consumer_killed_twice(epoch, &pds, &accounts);
}

/// Three repos of 150 records each, read by a full_sync killed twice (see below).
fn synced_through_kills(pds: &Pds) -> (Vec<Account>, Epoch) {
    let accounts: Vec<Account> = ["gus", "hal", "ivy"].iter().map(|n| create_account(pds, n)).collect();
    for a in &accounts {
        create_many(pds, a, 0..150);
    }
    let epoch = full_sync_killed_twice(pds, &accounts.iter().collect::<Vec<_>>());
    (accounts, epoch)
}

/// A slow full_sync killed twice resumes and ingests each record once.
fn full_sync_killed_twice(pds: &Pds, refs: &[&Account]) -> Epoch {
    let mut epoch = Epoch::start();
    let slow = json!({"atproto": {"service": pds.url, "collections": [POST], "batchSize": 2, "requestsPerSecond": 1}});
    assert_eq!(epoch.admin("PATCH", "/v1/database/forum/sync/config", Some(&slow)).0, 200);
    let (status, started) = epoch.admin("POST", "/api/admin/backfill", None);
    assert_eq!((status, started["type"].as_str()), (202, Some("full_sync")), "{started}");
    let id = started["id"].as_str().unwrap().to_string();
    for at in [60, 250] {
        let progress = epoch.poll_until(&id, |v| v["recordsApplied"].as_u64() >= Some(at));
        assert_eq!(progress["status"], "in_progress", "killed mid-backfill: {progress}");
        epoch = epoch.restart_after(|| {});
    }
    let done = epoch.wait(&id);
    assert_eq!(done["status"], "complete", "{done}");
    let (table, repos) = (epoch.table(), repo_records(pds, refs));
    assert!(table == repos, "{}", differences(&table, &repos));
    assert_eq!(epoch.records_ingested(), 450, "each record of the full_sync once");

    epoch
}

/// The live consumer, killed twice while records are being created, applies each create once,
/// or, when a kill came before it had a place in the stream, reads again the repos that moved.
fn live_consumer_killed_twice(mut epoch: Epoch, pds: &Pds, accounts: &[Account]) -> Epoch {
    let refs: Vec<&Account> = accounts.iter().collect();
    let rereads_before = epoch.rereads();
    let writer = {
        let (url, jwts): (String, Vec<(String, String)>) =
            (pds.url.clone(), accounts.iter().map(|a| (a.did.clone(), a.jwt.clone())).collect());
        std::thread::spawn(move || {
            for i in 0..150 {
                let (did, jwt) = &jwts[i % 3];
                let body = json!({"repo": did, "collection": POST, "rkey": format!("q{i:03}"), "record": {"$type": POST, "text": format!("live {i}")}, "validate": false});
                let r = reqwest::blocking::Client::new()
                    .post(format!("{url}/xrpc/com.atproto.repo.createRecord"))
                    .bearer_auth(jwt)
                    .json(&body)
                    .send()
                    .unwrap();
                assert!(r.status().is_success());
            }
        })
    };
    for pause in [700, 900] {
        std::thread::sleep(Duration::from_millis(pause));
        epoch = epoch.restart_after(|| {});
    }
    writer.join().unwrap();
    epoch.wait_equal(pds, &refs);
    // A restart with no place in the stream reads the repos that moved again whole (a reset,
    // then each of its 150 to 200 records); otherwise each live create is applied once.
    let (rereads, ingested) = (epoch.rereads() - rereads_before, epoch.records_ingested() as usize);
    let once = 450 + 150;
    eprintln!("live phase: {ingested} records applied, {rereads} repos read again");
    assert!(
        (once + 150 * rereads..=once + 200 * rereads).contains(&ingested),
        "{ingested} records applied with {rereads} repos read again"
    );

    epoch
}

/// Kills in the middle of the firehose's batches: each replayed record is applied once.
/// `ingested_before`: the records the fixture's reducer had ingested when this phase starts.
fn firehose_batches_killed(mut epoch: Epoch, pds: &Pds, accounts: &[Account], ingested_before: u64) {
    let refs: Vec<&Account> = accounts.iter().collect();
    // Kills in the middle of the firehose's batches: 2,000 records made while the server is
    // down are replayed in batches of 200, and the server is killed a varying time after a
    // batch ends (the next one is then in flight) until a restart finds a batch half applied.
    let big = json!({"atproto": {"service": pds.url, "collections": [POST], "batchSize": 200}});
    assert_eq!(epoch.admin("PATCH", "/v1/database/forum/sync/config", Some(&big)).0, 200);
    std::thread::sleep(Duration::from_millis(500));
    epoch = epoch.restart_after(|| {
        for (n, a) in accounts.iter().enumerate() {
            create_many(pds, a, 1000 + n * 1000..1000 + n * 1000 + 666 + 2 * usize::from(n == 0));
        }
    });
    let firehose = |epoch: &Epoch| -> Value {
        let (_, list) = epoch.admin("GET", "/v1/database/forum/sync/workflows", None);
        let running = list["instances"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["kind"] == "atproto-firehose" && i["status"] == "running")
            .cloned();
        running.unwrap_or(Value::Null)
    };
    let mut kills = 0usize;
    let mut recovered = 0;
    // Rounds of 600 more records, made while the server is down, when it caught up before a
    // kill landed in the middle of a batch.
    let mut more_rounds = 0usize;
    while kills < 12 && !(recovered > 0 && kills >= 2) {
        let seen = firehose(&epoch)["done"].clone();
        let deadline = Instant::now() + Duration::from_secs(20);
        while firehose(&epoch)["done"] == seen && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        if Instant::now() >= deadline {
            if recovered > 0 || more_rounds == 5 {
                break; // caught up
            }
            let base = 20_000 + more_rounds * 1000;
            epoch = epoch.restart_after(|| {
                for (n, a) in accounts.iter().enumerate() {
                    create_many(pds, a, base + n * 300..base + n * 300 + 200);
                }
            });
            more_rounds += 1;
            continue;
        }
        // A kill right as a batch ends may come before the next one applied anything, and
        // how long listing takes varies with the machine's load: each kill waits a different
        // time into the next batch.
        const INTO_BATCH_MS: [u64; 12] = [15, 40, 80, 120, 0, 160, 30, 60, 100, 140, 200, 250];
        std::thread::sleep(Duration::from_millis(INTO_BATCH_MS[kills % INTO_BATCH_MS.len()]));
        epoch = epoch.restart_after(|| {});
        kills += 1;
        recovered = firehose(&epoch)["recovered"].as_u64().unwrap_or(0).max(recovered);
    }
    epoch.wait_equal(pds, &refs);
    recovered = firehose(&epoch)["recovered"].as_u64().unwrap_or(0).max(recovered);
    assert_eq!(
        epoch.records_ingested(),
        ingested_before + 2000 + 600 * more_rounds as u64,
        "each replayed record once, after {kills} kills and {more_rounds} more rounds"
    );
    eprintln!("{kills} kills, {more_rounds} more rounds, {recovered} items recovered");
    assert!(recovered > 0, "some kill interrupted a batch ({kills} kills)");
}

/// A live consumer that has seen no event yet when a full_sync ends still saves the revs the
/// full_sync read (before, they were kept in memory only until the first event). Killed then,
/// with records made while it is down, it finds the gap at each repo's next commit and reads
/// the repo again, so nothing made meanwhile is lost.
#[test]
fn revs_of_a_finished_full_sync_survive_a_kill_before_any_live_event() {
    let _one_at_a_time = serial();
    let Some(pds) = Pds::require() else { return };
    let accounts: Vec<Account> = ["jon", "kim"].iter().map(|n| create_account(&pds, n)).collect();
    for a in &accounts {
        create_many(&pds, a, 0..20);
    }
    let epoch = Epoch::start();
    let config = json!({"atproto": {"service": pds.url, "collections": [POST]}});
    assert_eq!(epoch.admin("PATCH", "/v1/database/forum/sync/config", Some(&config)).0, 200);
    let (status, started) = epoch.admin("POST", "/api/admin/backfill", None);
    assert_eq!(status, 202, "{started}");
    assert_eq!(epoch.wait(started["id"].as_str().unwrap())["status"], "complete");
    // The consumer's saved cursor names every repo's rev, with no event seen yet.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, list) = epoch.admin("GET", "/v1/database/forum/sync/workflows", None);
        let live = list["instances"].as_array().unwrap().iter().find(|i| i["kind"] == "atproto-firehose").cloned();
        let revs = live.as_ref().map(|i| i["cursor"]["revs"].clone()).unwrap_or(Value::Null);
        if accounts.iter().all(|a| revs[&a.did].is_string()) {
            assert!(live.unwrap()["cursor"]["seq"].is_null(), "no event was seen yet");
            break;
        }
        assert!(Instant::now() < deadline, "the consumer never saved the full_sync's revs: {live:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let epoch = epoch.restart_after(|| {
        for a in &accounts {
            create_many(&pds, a, 100..110);
        }
    });
    // Each repo's next commit does not follow the rev saved: the repo is read again whole. The
    // consumer has no seq to resume from, so it sees only commits made once it is connected:
    // one more commit per repo until the table is whole.
    let refs: Vec<&Account> = accounts.iter().collect();
    for n in 900..930 {
        for a in &accounts {
            create_record(&pds, a, POST, &format!("p{n}"), json!({"$type": POST, "text": "after the restart", "n": n}));
        }
        std::thread::sleep(Duration::from_millis(300));
        if epoch.table() == repo_records(&pds, &refs) {
            return;
        }
    }
    epoch.wait_equal(&pds, &refs);
}

/// A full_sync killed in the middle of a repo that then changes reads that repo again from its
/// reset when it resumes: rows from the old read of keys before the cursor do not survive.
#[test]
fn a_repo_changed_while_a_full_sync_was_down_is_read_again() {
    let _one_at_a_time = serial();
    let Some(pds) = Pds::require() else { return };
    let mut accounts: Vec<Account> = ["nia", "oli"].iter().map(|n| create_account(&pds, n)).collect();
    accounts.sort_by(|a, b| a.did.cmp(&b.did));
    for a in &accounts {
        create_many(&pds, a, 0..150);
    }
    let mut epoch = Epoch::start();
    let slow = json!({"atproto": {"service": pds.url, "collections": [POST], "batchSize": 2, "requestsPerSecond": 1}});
    assert_eq!(epoch.admin("PATCH", "/v1/database/forum/sync/config", Some(&slow)).0, 200);
    let (status, started) = epoch.admin("POST", "/api/admin/backfill", None);
    assert_eq!(status, 202, "{started}");
    let id = started["id"].as_str().unwrap().to_string();
    let progress = epoch.poll_until(&id, |v| v["recordsApplied"].as_u64() >= Some(40));
    assert_eq!(progress["status"], "in_progress", "{progress}");
    let first = &accounts[0];
    epoch = epoch.restart_after(|| {
        xrpc(&pds, "com.atproto.repo.deleteRecord", Some(&first.jwt), json!({"repo": first.did, "collection": POST, "rkey": "p000"}));
        xrpc(
            &pds,
            "com.atproto.repo.putRecord",
            Some(&first.jwt),
            json!({"repo": first.did, "collection": POST, "rkey": "p001", "record": {"$type": POST, "text": "edited while down"}, "validate": false}),
        );
    });
    let done = epoch.wait(&id);
    assert_eq!(done["status"], "complete", "{done}");
    let refs: Vec<&Account> = accounts.iter().collect();
    let (table, repos) = (epoch.table(), repo_records(&pds, &refs));
    assert!(table == repos, "{}", differences(&table, &repos));
}

/// A live consumer whose events so far had nothing for the database (another collection) still
/// saves its place in the firehose, so records made while the server is down are applied after
/// the restart.
#[test]
fn a_consumer_that_applied_nothing_yet_keeps_its_place() {
    let _one_at_a_time = serial();
    let Some(pds) = Pds::require() else { return };
    let account = create_account(&pds, "max");
    let epoch = Epoch::start();
    let config = json!({"atproto": {"service": pds.url, "collections": [POST]}});
    assert_eq!(epoch.admin("PATCH", "/v1/database/forum/sync/config", Some(&config)).0, 200);
    std::thread::sleep(Duration::from_millis(500)); // the consumer connects
    create_record(&pds, &account, "app.forum.like", "l1", json!({"$type": "app.forum.like", "subject": "x"}));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, list) = epoch.admin("GET", "/v1/database/forum/sync/workflows", None);
        let live = list["instances"].as_array().unwrap().iter().find(|i| i["kind"] == "atproto-firehose").cloned();
        if live.as_ref().is_some_and(|i| i["cursor"]["seq"].as_i64().is_some()) {
            break;
        }
        assert!(Instant::now() < deadline, "the consumer never saved its place: {live:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let epoch = epoch.restart_after(|| {
        create_record(&pds, &account, POST, "p1", json!({"$type": POST, "text": "while down"}));
    });
    epoch.wait_equal(&pds, &[&account]);
    assert_eq!(epoch.table().len(), 1);
}

/// A firehose cursor ahead of the service (it was reset: its sequence starts again) makes a
/// catch_up fail with the relay's `FutureCursor`, reported in the progress.
#[test]
fn a_cursor_from_the_future_is_reported() {
    let _one_at_a_time = serial();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let Some(pds) = Pds::start_on(Some(port)) else {
        common::services::missing("the AT Protocol PDS (@atproto/dev-env on Node 22)", "EPOCH_REQUIRE_PDS");
        return;
    };
    let account = create_account(&pds, "jan");
    let epoch = Epoch::start();
    let config = json!({"atproto": {"service": pds.url, "collections": [POST]}});
    assert_eq!(epoch.admin("PATCH", "/v1/database/forum/sync/config", Some(&config)).0, 200);
    std::thread::sleep(Duration::from_millis(500)); // the consumer connects
    create_many(&pds, &account, 0..20);
    epoch.wait_equal(&pds, &[&account]);
    // The service starts again from nothing, on the same address.
    let epoch = epoch.restart_after(|| {
        drop(pds);
    });
    let pds = Pds::start_on(Some(port)).expect("the PDS starts again");
    let (status, started) = epoch.admin("POST", "/api/admin/backfill?force=catch_up", None);
    assert_eq!((status, started["type"].as_str()), (202, Some("catch_up")), "{started}");
    let done = epoch.wait(started["id"].as_str().unwrap());
    assert_eq!(done["status"], "failed", "{done}");
    assert!(done["errors"].to_string().contains("FutureCursor"), "{done}");
    drop(pds);
}

/// A PLC directory in front of the real one that gives `victim` another account's key, so
/// the victim's commits no longer verify. Answers until the test ends.
fn lying_plc(real: &str, victim: &str, other: &str) -> String {
    use std::io::{BufRead, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (real, victim, other) = (real.to_string(), victim.to_string(), other.to_string());
    std::thread::spawn(move || {
        let key_of = |did: &str| -> Value { reqwest::blocking::get(format!("{real}/{did}")).unwrap().json().unwrap() };
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut line = String::new();
            let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            while let Ok(n) = reader.read_line(&mut String::new()) {
                if n <= 2 {
                    break;
                }
            }
            let did = line.split_whitespace().nth(1).unwrap_or("/").trim_start_matches('/').to_string();
            let mut doc = key_of(&did);
            if did == victim {
                let stolen = key_of(&other)["verificationMethod"][0]["publicKeyMultibase"].clone();
                doc["verificationMethod"][0]["publicKeyMultibase"] = stolen;
            }
            let body = doc.to_string();
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    url
}

/// With a PLC directory configured, every repo's and every commit's signature is checked
/// against its DID's key: a repo whose key does not match is not ingested (its reset fails,
/// reported), its live commits are refused, and the others sync as before.
#[test]
fn commit_signatures_are_checked_against_the_plc_directory() {
    let _one_at_a_time = serial();
    let Some(pds) = Pds::require() else { return };
    let (kim, lou) = (create_account(&pds, "kim"), create_account(&pds, "lou"));
    for a in [&kim, &lou] {
        create_many(&pds, a, 0..5);
    }
    let epoch = Epoch::start();
    let lying = lying_plc(&pds.plc, &lou.did, &kim.did);
    let config = json!({"atproto": {"service": pds.url, "collections": [POST], "plc": lying}});
    assert_eq!(epoch.admin("PATCH", "/v1/database/forum/sync/config", Some(&config)).0, 200);
    let (status, started) = epoch.admin("POST", "/api/admin/backfill", None);
    assert_eq!(status, 202, "{started}");
    let done = epoch.wait(started["id"].as_str().unwrap());
    assert_eq!((done["reposDone"].as_u64(), done["reposFailed"].as_u64()), (Some(2), Some(1)), "{done}");
    assert!(done["errors"].to_string().contains("signature does not verify"), "{done}");
    let kims = repo_records(&pds, &[&kim]);
    assert_eq!(epoch.table(), kims, "only the repo whose signature verifies");

    // Live: kim's new record is applied; lou's commit is refused and reported.
    std::thread::sleep(Duration::from_millis(500));
    create_record(&pds, &lou, POST, "x1", json!({"$type": POST, "text": "unverifiable"}));
    create_record(&pds, &kim, POST, "x1", json!({"$type": POST, "text": "verified"}));
    epoch.wait_equal(&pds, &[&kim]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, list) = epoch.admin("GET", "/v1/database/forum/sync/workflows", None);
        let live = list["instances"].as_array().unwrap().iter().find(|i| i["kind"] == "atproto-firehose").cloned();
        let errors = live.map(|i| i["errors"].to_string()).unwrap_or_default();
        if errors.contains("signature does not verify") && errors.contains(&lou.did) {
            break;
        }
        assert!(Instant::now() < deadline, "lou's commit was not refused: {errors}");
        std::thread::sleep(Duration::from_millis(100));
    }

    // With the real directory, both repos verify.
    let config = json!({"atproto": {"service": pds.url, "collections": [POST], "plc": pds.plc}});
    assert_eq!(epoch.admin("PATCH", "/v1/database/forum/sync/config", Some(&config)).0, 200);
    let (status, started) = epoch.admin("POST", "/api/admin/backfill?force=full_sync", None);
    assert_eq!(status, 202, "{started}");
    let done = epoch.wait(started["id"].as_str().unwrap());
    assert_eq!((done["status"].as_str(), done["reposFailed"].as_u64()), (Some("complete"), Some(0)), "{done}");
    epoch.wait_equal(&pds, &[&kim, &lou]);
}

/// Speed (opt-in: `cargo test --release -p epoch-cli --test atproto -- --ignored --nocapture
/// atproto_speed`): a full_sync of 20 repos × 1,000 records from the local PDS, then 10,000
/// records made while the server is down replayed from the firehose (the live path), each with
/// the latency of the database's other reducer calls meanwhile.
#[test]
#[ignore]
fn atproto_speed() {
    let _one_at_a_time = serial();
    let Some(pds) = Pds::require() else { return };
    let accounts: Vec<Account> = (0..20).map(|n| create_account(&pds, &format!("speed{n}"))).collect();
    for a in &accounts {
        create_many(&pds, a, 0..1000);
    }
    let epoch = Epoch::start();
    let config =
        json!({"atproto": {"service": pds.url, "collections": [POST], "batchSize": 500, "requestsPerSecond": 50}});
    assert_eq!(epoch.admin("PATCH", "/v1/database/forum/sync/config", Some(&config)).0, 200);
    let pct = common::percentile;
    let never = std::sync::atomic::AtomicBool::new(false);
    let idle = common::call_latencies(&epoch.server, &epoch.owner, "forum", &never, 500);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (elapsed, busy) = std::thread::scope(|scope| {
        let calls = scope.spawn(|| common::call_latencies(&epoch.server, &epoch.owner, "forum", &stop, usize::MAX));
        let t = Instant::now();
        let (status, started) = epoch.admin("POST", "/api/admin/backfill", None);
        assert_eq!(status, 202, "{started}");
        let done = epoch.wait(started["id"].as_str().unwrap());
        let elapsed = t.elapsed();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(
            (done["status"].as_str(), done["recordsApplied"].as_u64()),
            (Some("complete"), Some(20_000)),
            "{done}"
        );
        (elapsed, calls.join().unwrap())
    });
    println!(
        "full_sync of 20 repos x 1000 records: {:.2} s, {:.0} records/s; other calls meanwhile: {} calls, p50 {:?} p99 {:?} (idle: p50 {:?} p99 {:?})",
        elapsed.as_secs_f64(),
        20_000.0 / elapsed.as_secs_f64(),
        busy.len(),
        pct(&busy, 0.5),
        pct(&busy, 0.99),
        pct(&idle, 0.5),
        pct(&idle, 0.99),
    );

    firehose_speed(epoch, &pds, &accounts);
}

/// The live path: 10,000 records (200 commits of 50) made while the server is down, applied
/// from the firehose after the restart.
fn firehose_speed(epoch: Epoch, pds: &Pds, accounts: &[Account]) {
    let pct = common::percentile;
    // One live record first, so the consumer has a place in the firehose to resume from.
    create_record(pds, &accounts[0], POST, "live", json!({"$type": POST, "text": "live"}));
    let refs: Vec<&Account> = accounts.iter().collect();
    epoch.wait_equal(pds, &refs);
    let before = epoch.records_ingested();
    let epoch = epoch.restart_after(|| {
        for (n, a) in accounts.iter().enumerate().take(10) {
            create_many(pds, a, 10_000 + n * 1000..10_000 + n * 1000 + 1000);
        }
    });
    let stop = std::sync::atomic::AtomicBool::new(false);
    // Measured from the first look after the restart (the consumer may have begun already).
    let (elapsed, busy, early) = std::thread::scope(|scope| {
        let t = Instant::now();
        let early = epoch.records_ingested() - before;
        let calls = scope.spawn(|| common::call_latencies(&epoch.server, &epoch.owner, "forum", &stop, usize::MAX));
        let deadline = Instant::now() + Duration::from_secs(300);
        while epoch.records_ingested() < before + 10_000 {
            assert!(Instant::now() < deadline, "the firehose never applied the 10,000 records");
            std::thread::sleep(Duration::from_millis(20));
        }
        let elapsed = t.elapsed();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        (elapsed, calls.join().unwrap(), early)
    });
    println!(
        "firehose: {} record events applied live in {:.2} s ({early} before the first look), {:.0} events/s; other calls meanwhile: {} calls, p50 {:?} p99 {:?}",
        10_000 - early,
        elapsed.as_secs_f64(),
        (10_000 - early) as f64 / elapsed.as_secs_f64(),
        busy.len(),
        pct(&busy, 0.5),
        pct(&busy, 0.99),
    );
    epoch.wait_equal(pds, &refs);
}
