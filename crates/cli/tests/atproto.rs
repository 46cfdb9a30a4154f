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
        let url = format!("{}/xrpc/com.atproto.repo.listRecords?repo={}&collection={POST}&limit=100", pds.url, a.did);
        let v: Value = reqwest::blocking::get(url).unwrap().json().unwrap();
        for r in v["records"].as_array().unwrap() {
            out.push((
                r["uri"].as_str().unwrap().to_string(),
                r["cid"].as_str().unwrap().to_string(),
                r["value"].clone(),
            ));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
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

impl Epoch {
    fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("epoch-atproto-{}-{}", std::process::id(), common::rand_suffix()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("admin.key"), KEY).unwrap();
        let server = Server::start_in(
            dir.join("data"),
            &["--admin-api-key-file", dir.join("admin.key").to_str().unwrap(), "--default-database", "forum"],
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
            assert!(Instant::now() < deadline, "the table never caught up with the repos:\n{table:?}\n{repos:?}");
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
            &["--admin-api-key-file", dir.0.join("admin.key").to_str().unwrap(), "--default-database", "forum"],
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
    let Some(pds) = Pds::require() else { return };
    let names = ["alice", "bob", "carol"];
    let accounts: Vec<Account> = names.iter().map(|n| create_account(&pds, n)).collect();
    for (n, a) in accounts.iter().enumerate() {
        for i in 0..10 {
            let record =
                json!({"$type": POST, "text": format!("post {i} by {}", names[n]), "n": i, "tags": ["a", "b"]});
            create_record(&pds, a, POST, &format!("p{i:03}"), record);
        }
        // Another collection, not kept.
        create_record(&pds, a, "app.forum.like", "l1", json!({"$type": "app.forum.like", "subject": "x"}));
    }
    let epoch = Epoch::start();

    // The auth matrix first, then 503 while the database has no AT Protocol source.
    let (stranger_id, stranger) = epoch.server.identity();
    assert_eq!(epoch.send("POST", "/api/admin/backfill", None, None, Some(&epoch.owner)).0, 401);
    assert_eq!(epoch.send("POST", "/api/admin/backfill", None, Some("wrong-key-wrong-key"), Some(&epoch.owner)).0, 401);
    assert_eq!(epoch.send("POST", "/api/admin/backfill", None, Some(KEY), None).0, 401);
    let (status, body) = epoch.send("POST", "/api/admin/backfill", None, Some(KEY), Some(&stranger));
    assert_eq!((status, body["details"][0]["field"].as_str()), (403, Some("Authorization")), "{body}");
    let (status, body) = epoch.admin("POST", "/api/admin/backfill", None);
    assert_eq!(status, 503, "{body}");

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
    let accounts_ref: Vec<&Account> = accounts.iter().collect();
    let expected = repo_records(&pds, &accounts_ref);
    assert_eq!(expected.len(), 30);
    assert_eq!(epoch.table(), expected, "the table equals the repos");

    // The live consumer (started with the section) follows the firehose: a delete, an update
    // and a new record reach the table with no backfill.
    let (alice, bob) = (&accounts[0], &accounts[1]);
    xrpc(
        &pds,
        "com.atproto.repo.deleteRecord",
        Some(&alice.jwt),
        json!({"repo": alice.did, "collection": POST, "rkey": "p003"}),
    );
    xrpc(
        &pds,
        "com.atproto.repo.putRecord",
        Some(&bob.jwt),
        json!({"repo": bob.did, "collection": POST, "rkey": "p001", "record": {"$type": POST, "text": "edited", "n": 1}, "validate": false}),
    );
    create_record(&pds, alice, POST, "p100", json!({"$type": POST, "text": "new", "n": 100}));
    epoch.wait_equal(&pds, &accounts_ref);

    // A fresh cursor: no backfill needed (an unknown force value is ignored); a forced catch_up
    // replays from the cursor to the head.
    let (status, body) = epoch.admin("POST", "/api/admin/backfill?force=sideways", None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["message"], "No backfill needed. Use ?force=catch_up or ?force=full_sync to override.");
    let (status, started) = epoch.admin("POST", "/api/admin/backfill?force=catch_up", None);
    assert_eq!((status, started["type"].as_str()), (202, Some("catch_up")), "{started}");
    let done = epoch.wait(started["id"].as_str().unwrap());
    assert_eq!((done["status"].as_str(), done["type"].as_str()), (Some("complete"), Some("catch_up")), "{done}");
    assert!(done["fromCursor"].as_i64().is_some(), "{done}");
    assert_eq!(epoch.admin("GET", "/api/admin/backfill/12345", None).0, 404);

    // Downtime: the server is killed, the repos change, and the cursor ages past the threshold
    // (set to 1.8 s); after the restart, detection picks a catch_up and the table ends equal.
    let quick = json!({"atproto": {"service": pds.url, "collections": [POST], "backfillCursorMaxAgeHours": 0.0005}});
    assert_eq!(epoch.admin("PATCH", "/v1/database/forum/sync/config", Some(&quick)).0, 200);
    let epoch = epoch.restart_after(|| {
        xrpc(
            &pds,
            "com.atproto.repo.deleteRecord",
            Some(&bob.jwt),
            json!({"repo": bob.did, "collection": POST, "rkey": "p002"}),
        );
        create_record(&pds, &accounts[2], POST, "p200", json!({"$type": POST, "text": "while down", "n": 200}));
        std::thread::sleep(Duration::from_millis(2500));
    });
    let (status, started) = epoch.admin("POST", "/api/admin/backfill", None);
    assert_eq!((status, started["type"].as_str()), (202, Some("catch_up")), "{started}");
    let done = epoch.wait(started["id"].as_str().unwrap());
    assert_eq!(done["status"], "complete", "{done}");
    epoch.wait_equal(&pds, &accounts_ref);

    // The relay's window shrinks so the events after the cursor are gone: the catch_up meets
    // OutdatedCursor and becomes a full_sync, which says so; the table ends equal again.
    let mut pds = pds;
    pds.set_backfill_limit_ms(1000);
    let epoch = epoch.restart_after(|| {
        create_record(&pds, alice, POST, "p300", json!({"$type": POST, "text": "gone from the window", "n": 300}));
        xrpc(
            &pds,
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
    epoch.wait_equal(&pds, &accounts_ref);

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
