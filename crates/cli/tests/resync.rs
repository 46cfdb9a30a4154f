//! Resync projections from a `file://` object store, driven over HTTP against the real binary:
//! shapes, scopes, validation, throttling, pause/resume/terminate, conflicts, newer live
//! versions winning, and a crash in the middle.
mod common;

use common::services::Moto;
use common::*;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const KEY: &str = "resync-admin-key";
const TYPES: [&str; 7] = ["user", "lock", "hub", "matter-device", "camera", "camera-role", "rtsp-camera"];

fn write_store(root: &Path, per_type: usize) {
    for t in TYPES {
        std::fs::create_dir_all(root.join(t)).unwrap();
        for i in 0..per_type {
            let doc = json!({"version": (i % 5) + 1, "type": t, "id": format!("{t}-{i:04}"), "payload": {"n": i}});
            std::fs::write(root.join(t).join(format!("{t}-{i:04}.json")), doc.to_string()).unwrap();
        }
    }
}

struct Ctx {
    s: Server,
    owner: String,
}

impl Ctx {
    fn post(&self, path_and_query: &str) -> (u16, Value) {
        let r = self
            .s
            .http()
            .post(format!("{}/v1/database/proj/sync/{path_and_query}", self.s.url))
            .header("X-Admin-API-Key", KEY)
            .bearer_auth(&self.owner)
            .send()
            .unwrap();
        (r.status().as_u16(), r.json().unwrap_or(Value::Null))
    }

    fn get(&self, id: &str) -> Value {
        self.s
            .http()
            .get(format!("{}/v1/database/proj/sync/workflows/{id}", self.s.url))
            .header("X-Admin-API-Key", KEY)
            .bearer_auth(&self.owner)
            .send()
            .unwrap()
            .json()
            .unwrap()
    }

    fn wait(&self, id: &str, status: &str, limit: Duration) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let v = self.get(id);
            if v["status"] == status || Instant::now() > deadline {
                return v;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// (applied, skipped_stale) as the projections module counts them.
    fn ingest_stats(&self) -> ((Option<u64>, Option<u64>), String) {
        let (_, stats) = self.s.sql(Some(&self.owner), "proj", "SELECT applied, skipped_stale FROM ingest_stats");
        let v: Value = serde_json::from_str(&stats).unwrap();
        ((v[0]["rows"][0][0].as_u64(), v[0]["rows"][0][1].as_u64()), stats)
    }

    fn projections(&self) -> Vec<Value> {
        let (status, body) =
            self.s.sql(Some(&self.owner), "proj", "SELECT key, version, state FROM aggregate_projection");
        assert_eq!(status, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        v[0]["rows"].as_array().unwrap().clone()
    }
}

fn setup(dir: &Path, store: &Path) -> Ctx {
    setup_with(dir, json!({"url": format!("file://{}", store.display())}), &[])
}

/// Starts (or restarts) the server on `dir` with the admin key file written by [`setup_with`].
fn start_server(dir: &Path, extra: &[&str]) -> Server {
    let key = dir.join("admin.key");
    let mut args = vec!["--admin-api-key-file", key.to_str().unwrap()];
    args.extend_from_slice(extra);
    Server::start_in(dir.to_path_buf(), &args)
}

/// A server (started with `extra` flags too) with the admin key, the projections module
/// published as `proj`, and `object_store` as its sync source.
fn setup_with(dir: &Path, object_store: Value, extra: &[&str]) -> Ctx {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("admin.key"), KEY).unwrap();
    let s = start_server(dir, extra);
    let (_, owner) = s.identity();
    assert_eq!(s.publish(&owner, "proj", "projections").status(), 200);
    let r = s
        .http()
        .put(format!("{}/v1/database/proj/sync/config", s.url))
        .header("X-Admin-API-Key", KEY)
        .bearer_auth(&owner)
        .json(&json!({ "objectStore": object_store }))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    Ctx { s, owner }
}

fn s3_config(bucket_prefix: &str, endpoint: &str) -> Value {
    json!({"url": format!("s3://{bucket_prefix}"), "endpoint": endpoint, "region": "us-east-1",
           "accessKeyId": "test", "secretAccessKey": "test"})
}

/// Every projection equals its document.
fn assert_projections_match(ctx: &Ctx, store: &Path, expected_rows: usize) {
    let rows = ctx.projections();
    assert_eq!(rows.len(), expected_rows);
    for r in rows {
        let key = r[0].as_str().unwrap();
        let (t, id) = key.split_once('/').unwrap();
        let doc = std::fs::read_to_string(store.join(t).join(format!("{id}.json"))).unwrap();
        assert_eq!(r[2].as_str().unwrap(), doc, "{key}");
        let v: Value = serde_json::from_str(&doc).unwrap();
        assert_eq!(r[1], v["version"], "{key}");
    }
}

fn temp(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("epoch-resync-{name}-{}-{}", std::process::id(), rand_suffix()))
}

#[test]
fn full_type_and_single_resyncs_project_every_document() {
    let (dir, store) = (temp("full"), temp("full-store"));
    write_store(&store, 30);
    let ctx = setup(&dir, &store);
    // A live update with a newer version than the store's must survive the resync.
    let live = json!(["user", "user-0003", 999, "{\"live\":true}"]).to_string();
    assert_eq!(ctx.s.call(&ctx.owner, "proj", "project_aggregate", &live).0, 200);

    let (status, body) = ctx.post("resync-projections?batchSize=50&delaySeconds=0");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["success"], true);
    assert_eq!(body["total"], 210);
    assert_eq!(body["batchSize"], 50);
    assert_eq!(body["delaySeconds"], 0);
    assert_eq!(body["batches"], 5);
    assert_eq!(body["aggregateTypes"].as_array().unwrap().len(), 7);
    assert_eq!(body["counts"]["matter-device"], 30);
    assert_eq!(body["errors"], json!([]));
    let id = body["instanceId"].as_str().unwrap().to_string();
    let done = ctx.wait(&id, "complete", Duration::from_secs(60));
    assert_eq!(
        (done["status"].as_str(), done["done"].as_u64(), done["succeeded"].as_u64()),
        (Some("complete"), Some(210), Some(210)),
        "{done}"
    );
    let rows = ctx.projections();
    assert_eq!(rows.len(), 210);
    let live_row = rows.iter().find(|r| r[0] == "user/user-0003").unwrap();
    assert_eq!(live_row[1], 999, "an older version never overwrites a newer one");

    // One type, then one aggregate.
    let (status, body) = ctx.post("resync-projections?aggregateType=lock&delaySeconds=0");
    assert_eq!((status, body["total"].as_u64()), (200, Some(30)), "{body}");
    ctx.wait(body["instanceId"].as_str().unwrap(), "complete", Duration::from_secs(30));
    let (status, body) = ctx.post("resync-projections?aggregateType=hub&aggregateId=hub-0007&delaySeconds=0");
    assert_eq!((status, body["total"].as_u64()), (200, Some(1)), "{body}");
    let one = ctx.wait(body["instanceId"].as_str().unwrap(), "complete", Duration::from_secs(30));
    assert_eq!(one["succeeded"], 1);

    // Parameters are checked, and errors name them.
    for (q, word) in [
        ("batchSize=0", "batchSize"),
        ("batchSize=1001", "batchSize"),
        ("batchSize=abc", "batchSize"),
        ("delaySeconds=3601", "delaySeconds"),
        ("delaySeconds=-1", "delaySeconds"),
        ("aggregateId=x", "aggregateType"),
        ("aggregateType=boat", "boat"),
    ] {
        let (status, body) = ctx.post(&format!("resync-projections?{q}"));
        assert_eq!(status, 400, "{q}: {body}");
        assert!(body["message"].as_str().unwrap().contains(word), "{q}: {body}");
    }
    drop(ctx);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&store);
}

#[test]
fn throttle_pause_resume_terminate_and_conflicts() {
    let (dir, store) = (temp("throttle"), temp("throttle-store"));
    write_store(&store, 20);
    let ctx = setup(&dir, &store);
    // 20 aggregates in batches of 5 with 1 s between them: at least 3 s.
    let started = Instant::now();
    let (status, body) = ctx.post("resync-projections?aggregateType=camera&batchSize=5&delaySeconds=1");
    assert_eq!(status, 200, "{body}");
    let id = body["instanceId"].as_str().unwrap().to_string();
    let (status, conflict) = ctx.post("resync-projections?aggregateType=camera&batchSize=5&delaySeconds=1");
    assert_eq!(status, 409, "a second resync of the same scope is refused");
    assert!(conflict["message"].as_str().unwrap().contains(&id), "{conflict}");
    let done = ctx.wait(&id, "complete", Duration::from_secs(30));
    assert_eq!(done["done"], 20, "{done}");
    assert!(started.elapsed() >= Duration::from_secs(3), "throttled: took {:?}", started.elapsed());

    // Pause holds it; resume finishes it.
    let (_, body) = ctx.post("resync-projections?aggregateType=lock&batchSize=5&delaySeconds=1");
    let id = body["instanceId"].as_str().unwrap().to_string();
    std::thread::sleep(Duration::from_millis(300));
    let (status, paused) = ctx.post(&format!("workflows/{id}/pause"));
    assert_eq!(status, 200, "{paused}");
    let held = ctx.wait(&id, "paused", Duration::from_secs(5));
    assert_eq!(held["status"], "paused", "{held}");
    let done_when_paused = held["done"].as_u64().unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(ctx.get(&id)["done"].as_u64().unwrap(), done_when_paused, "nothing moves while paused");
    assert!(done_when_paused < 20);
    assert_eq!(ctx.post(&format!("workflows/{id}/resume")).0, 200);
    let done = ctx.wait(&id, "complete", Duration::from_secs(30));
    assert_eq!(done["done"], 20, "{done}");

    // Terminate stops it for good.
    let (_, body) = ctx.post("resync-projections?aggregateType=hub&batchSize=5&delaySeconds=1");
    let id = body["instanceId"].as_str().unwrap().to_string();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(ctx.post(&format!("workflows/{id}/terminate")).0, 200);
    let t = ctx.wait(&id, "terminated", Duration::from_secs(5));
    assert_eq!(t["status"], "terminated", "{t}");
    assert!(t["done"].as_u64().unwrap() < 20);
    assert_eq!(ctx.post(&format!("workflows/{id}/resume")).0, 409, "a finished instance cannot resume");
    let list: Value = ctx
        .s
        .http()
        .get(format!("{}/v1/database/proj/sync/workflows", ctx.s.url))
        .header("X-Admin-API-Key", KEY)
        .bearer_auth(&ctx.owner)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(list["instances"].as_array().unwrap().len(), 3);
    drop(ctx);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&store);
}

#[test]
fn a_resync_killed_midway_resumes_after_restart_and_completes_exactly() {
    let (dir, store) = (temp("crash"), temp("crash-store"));
    write_store(&store, 10);
    let ctx = setup(&dir, &store);
    let (status, body) = ctx.post("resync-projections?batchSize=7&delaySeconds=1");
    assert_eq!(status, 200, "{body}");
    let id = body["instanceId"].as_str().unwrap().to_string();
    std::thread::sleep(Duration::from_millis(1500));
    let before = ctx.get(&id);
    assert!(before["done"].as_u64().unwrap() < 70, "killed midway: {before}");
    let Ctx { s, owner } = ctx;
    s.crash();
    let ctx = Ctx { s: start_server(&dir, &[]), owner };
    let done = ctx.wait(&id, "complete", Duration::from_secs(60));
    assert_eq!(
        (done["done"].as_u64(), done["succeeded"].as_u64(), done["failed"].as_u64()),
        (Some(70), Some(70), Some(0)),
        "{done}"
    );
    assert_projections_match(&ctx, &store, 70);
    // Each aggregate was applied once: the module counts applications and stale skips.
    let ((applied, _), stats) = ctx.ingest_stats();
    assert_eq!(applied, Some(70), "no aggregate was applied twice: {stats}");
    drop(ctx);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&store);
}

/// Kills the server again and again while batches are being applied (`delaySeconds=0`, so the
/// runner is nearly always mid-batch), with snapshots every 50 transactions, and adds new
/// aggregates between kills so the listing shifts under the interrupted batches: every
/// aggregate is still applied exactly once, because each item's transaction carries its
/// workflow step and a resumed instance skips the items its interrupted batch already applied.
#[test]
fn kills_in_the_middle_of_batches_apply_nothing_twice() {
    let (dir, store) = (temp("midbatch"), temp("midbatch-store"));
    write_store(&store, 300);
    let total = 2100;
    let snapshots = ["--snapshot-every", "50"];
    let mut ctx = setup_with(&dir, json!({"url": format!("file://{}", store.display())}), &snapshots);
    let (status, body) = ctx.post("resync-projections?batchSize=150&delaySeconds=0");
    assert_eq!(status, 200, "{body}");
    let id = body["instanceId"].as_str().unwrap().to_string();
    let mut kills = 0;
    loop {
        // Kill as soon as progress moves: the next batch has just been submitted.
        let seen = ctx.get(&id);
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut now = seen.clone();
        while now["done"] == seen["done"] && now["status"] == "running" && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
            now = ctx.get(&id);
        }
        if now["status"] != "running" || (now["recovered"].as_u64() > Some(0) && kills >= 3) || kills >= 12 {
            break;
        }
        let Ctx { s, owner } = ctx;
        s.crash();
        kills += 1;
        // New aggregates between existing ids, spread over the whole key range.
        for (n, t) in TYPES.iter().enumerate() {
            let i = (kills * 37 + n * 53) % 300;
            let doc = json!({"version": 1, "type": t, "id": format!("{t}-{i:04}x")});
            std::fs::write(store.join(t).join(format!("{t}-{i:04}x.json")), doc.to_string()).unwrap();
        }
        ctx = Ctx { s: start_server(&dir, &snapshots), owner };
    }
    let done = ctx.wait(&id, "complete", Duration::from_secs(120));
    assert_eq!(done["status"], "complete", "{done}");
    assert_eq!(done["failed"].as_u64(), Some(0), "{done}");
    assert!(done["done"].as_u64().unwrap() >= total, "{done}");
    // Aggregates added behind the cursor are not in this run; each one listed is projected.
    let projected = ctx.projections().len() as u64;
    assert_eq!(done["succeeded"].as_u64(), Some(projected), "{done}");
    let (counts, stats) = ctx.ingest_stats();
    assert_eq!(counts, (Some(projected), Some(0)), "every aggregate applied once and none replayed: {stats}");
    assert!(kills >= 3, "the server was killed {kills} times");
    assert!(done["recovered"].as_u64().unwrap() > 0, "some kill interrupted a batch: {done}");
    drop(ctx);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&store);
}

#[test]
fn admin_seed_paths_act_on_the_default_database_and_restart_runs_again() {
    let (dir, store) = (temp("admin"), temp("admin-store"));
    write_store(&store, 5);
    let store_config = json!({"url": format!("file://{}", store.display())});
    let Ctx { s, owner } = setup_with(&dir, store_config, &["--default-database", "proj"]);
    let key_file = dir.join("admin.key");
    let admin = |method: reqwest::Method, path: &str| -> (u16, Value) {
        let r = s
            .http()
            .request(method, format!("{}/{path}", s.url))
            .header("X-Admin-API-Key", KEY)
            .bearer_auth(&owner)
            .send()
            .unwrap();
        (r.status().as_u16(), r.json().unwrap_or(Value::Null))
    };
    let (status, body) = admin(reqwest::Method::POST, "admin/resync-projections?delaySeconds=0&batchSize=10");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["total"], 35);
    let id = body["instanceId"].as_str().unwrap().to_string();
    let wait_complete = || {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (_, v) = admin(reqwest::Method::GET, &format!("admin/workflows/{id}"));
            if v["status"] == "complete" || Instant::now() > deadline {
                return v;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    assert_eq!(wait_complete()["done"], 35);
    let (status, body) = admin(reqwest::Method::POST, &format!("admin/workflows/{id}/restart"));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["done"], 0);
    let again = wait_complete();
    assert_eq!((again["done"].as_u64(), again["succeeded"].as_u64()), (Some(35), Some(35)), "{again}");
    // The same routes answer under /api/admin, and the list shows the instance.
    let (status, list) = admin(reqwest::Method::GET, "api/admin/workflows");
    assert_eq!(status, 200);
    assert_eq!(list["instances"][0]["id"], id.as_str(), "{list}");
    assert_eq!(admin(reqwest::Method::GET, &format!("api/admin/workflows/{id}")).1["status"], "complete");
    // Without credentials the seed paths refuse like every sync route.
    let r = s.http().post(format!("{}/admin/resync-projections", s.url)).send().unwrap();
    assert_eq!(r.status(), 401);
    drop(s);

    let plain = Server::start(&["--admin-api-key-file", key_file.to_str().unwrap()]);
    let (_, t) = plain.identity();
    let r = plain
        .http()
        .post(format!("{}/admin/resync-projections", plain.url))
        .header("X-Admin-API-Key", KEY)
        .bearer_auth(&t)
        .send()
        .unwrap();
    assert_eq!(r.status(), 404, "no default database configured");
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&store);
}

#[test]
fn resync_from_an_s3_compatible_server() {
    let Some(moto) = Moto::require() else { return };
    let http = reqwest::blocking::Client::new();
    assert!(http.put(format!("{}/aggregates", moto.url)).send().unwrap().status().is_success());
    let mut docs = std::collections::BTreeMap::new();
    for t in TYPES {
        for i in 0..20 {
            let id = format!("{t}-{i:04}");
            let doc = json!({"version": i + 1, "type": t, "id": id}).to_string();
            let r = http.put(format!("{}/aggregates/prod/{t}/{id}.json", moto.url)).body(doc.clone()).send().unwrap();
            assert!(r.status().is_success(), "{}", r.text().unwrap());
            docs.insert(format!("{t}/{id}"), doc);
        }
    }
    let dir = temp("s3");
    let ctx = setup_with(&dir, s3_config("aggregates/prod", &moto.url), &[]);
    let (status, body) = ctx.post("resync-projections?batchSize=25&delaySeconds=0");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["total"], 140);
    assert_eq!(body["aggregateTypes"].as_array().unwrap().len(), 7);
    let done = ctx.wait(body["instanceId"].as_str().unwrap(), "complete", Duration::from_secs(120));
    assert_eq!((done["succeeded"].as_u64(), done["failed"].as_u64()), (Some(140), Some(0)), "{done}");
    let rows = ctx.projections();
    assert_eq!(rows.len(), 140);
    for r in rows {
        let key = r[0].as_str().unwrap();
        assert_eq!(r[2].as_str().unwrap(), docs[key], "{key}");
    }
    // One type and one aggregate from S3 too.
    let (_, body) = ctx.post("resync-projections?aggregateType=camera-role&delaySeconds=0");
    assert_eq!(body["total"], 20);
    ctx.wait(body["instanceId"].as_str().unwrap(), "complete", Duration::from_secs(60));
    let (_, body) = ctx.post("resync-projections?aggregateType=hub&aggregateId=hub-0003&delaySeconds=0");
    assert_eq!(body["total"], 1);
    let one = ctx.wait(body["instanceId"].as_str().unwrap(), "complete", Duration::from_secs(60));
    assert_eq!(one["succeeded"], 1);
    drop(ctx);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Document ids for `total` aggregates spread over the seven types.
fn big_keys(total: usize) -> Vec<(String, String)> {
    (0..total).map(|i| (TYPES[i % 7].to_string(), format!("{}-{:05}", TYPES[i % 7], i / 7))).collect()
}

fn doc_for(t: &str, id: &str) -> String {
    json!({"version": 3, "type": t, "id": id}).to_string()
}

/// Runs a full resync of 10,000 aggregates while another caller writes newer versions of some of
/// them; every projection ends up equal to its document, except the live ones, which keep the
/// newer version.
fn resync_ten_thousand_with_live_updates(ctx: &Ctx, keys: &[(String, String)]) {
    let (status, body) = ctx.post("resync-projections?batchSize=1000&delaySeconds=0");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["total"], 10_000);
    assert_eq!(body["batches"], 10);
    let id = body["instanceId"].as_str().unwrap().to_string();
    // Live updates race the resync.
    let live: Vec<(String, String)> = keys.iter().step_by(97).cloned().collect();
    for (t, aid) in &live {
        let args = json!([t, aid, 100, format!("{{\"live\":\"{aid}\"}}")]).to_string();
        assert_eq!(ctx.s.call(&ctx.owner, "proj", "project_aggregate", &args).0, 200);
    }
    let done = ctx.wait(&id, "complete", Duration::from_secs(300));
    assert_eq!((done["succeeded"].as_u64(), done["failed"].as_u64()), (Some(10_000), Some(0)), "{done}");
    let rows = ctx.projections();
    assert_eq!(rows.len(), 10_000);
    let live: std::collections::BTreeSet<String> = live.iter().map(|(t, i)| format!("{t}/{i}")).collect();
    for r in rows {
        let key = r[0].as_str().unwrap();
        if live.contains(key) {
            assert_eq!(r[1], 100, "{key}: a newer live version was overwritten");
        } else {
            let (t, i) = key.split_once('/').unwrap();
            assert_eq!((r[1].as_u64(), r[2].as_str().unwrap()), (Some(3), doc_for(t, i).as_str()), "{key}");
        }
    }
    // One type, and one aggregate, of the same store.
    let (status, body) = ctx.post("resync-projections?aggregateType=matter-device&batchSize=1000&delaySeconds=0");
    assert_eq!((status, body["total"].as_u64()), (200, Some(1_429)), "{body}");
    assert_eq!(body["counts"], json!({"matter-device": 1429}));
    let one_type = ctx.wait(body["instanceId"].as_str().unwrap(), "complete", Duration::from_secs(300));
    assert_eq!(one_type["succeeded"], 1_429, "{one_type}");
    let (t, id) = &keys[4_242];
    let (status, body) = ctx.post(&format!("resync-projections?aggregateType={t}&aggregateId={id}&delaySeconds=0"));
    assert_eq!((status, body["total"].as_u64(), body["batches"].as_u64()), (200, Some(1), Some(1)), "{body}");
    let one = ctx.wait(body["instanceId"].as_str().unwrap(), "complete", Duration::from_secs(60));
    assert_eq!(one["succeeded"], 1, "{one}");
}

#[test]
fn ten_thousand_aggregates_from_files_with_live_updates() {
    let (dir, store) = (temp("10k"), temp("10k-store"));
    let keys = big_keys(10_000);
    for (t, id) in &keys {
        std::fs::create_dir_all(store.join(t)).unwrap();
        std::fs::write(store.join(t).join(format!("{id}.json")), doc_for(t, id)).unwrap();
    }
    let ctx = setup(&dir, &store);
    resync_ten_thousand_with_live_updates(&ctx, &keys);
    drop(ctx);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&store);
}

#[test]
fn ten_thousand_aggregates_from_s3_with_live_updates() {
    let Some(moto) = Moto::require() else { return };
    let http = reqwest::blocking::Client::new();
    assert!(http.put(format!("{}/big", moto.url)).send().unwrap().status().is_success());
    let keys = big_keys(10_000);
    // Upload from four threads to keep the test short.
    std::thread::scope(|s| {
        for part in keys.chunks(2_500) {
            let (url, http) = (&moto.url, &http);
            s.spawn(move || {
                for (t, id) in part {
                    let r = http.put(format!("{url}/big/agg/{t}/{id}.json")).body(doc_for(t, id)).send().unwrap();
                    assert!(r.status().is_success());
                }
            });
        }
    });
    let dir = temp("10k-s3");
    let ctx = setup_with(&dir, s3_config("big/agg", &moto.url), &[]);
    resync_ten_thousand_with_live_updates(&ctx, &keys);
    drop(ctx);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_cli_configures_grants_and_follows_a_resync() {
    let (dir, store) = (temp("cli"), temp("cli-store"));
    write_store(&store, 5);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("admin.key"), KEY).unwrap();
    let s = start_server(&dir, &[]);
    let cfg = dir.join("cli.json");
    let epoch = |args: &[&str], key: Option<&str>| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_epoch"));
        cmd.args(["--server", &s.url, "--config"]).arg(&cfg).args(args).env_remove("EPOCH_ADMIN_API_KEY");
        if let Some(k) = key {
            cmd.env("EPOCH_ADMIN_API_KEY", k);
        }
        let out = cmd.output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (ok, _, err) = epoch(&["publish", "proj", "--wasm", fixture("projections").to_str().unwrap()], None);
    assert!(ok, "{err}");
    let url = format!("file://{}", store.display());
    let (ok, out, err) = epoch(&["sync", "config", "--database", "proj", "--url", &url], Some(KEY));
    assert!(ok, "{err}");
    assert!(out.contains("project_aggregate"), "{out}");
    let (ok, _, err) = epoch(&["sync", "resync", "--database", "proj"], None);
    assert!(!ok && err.contains("admin key"), "{err}");
    let (ok, _, err) = epoch(&["sync", "resync", "--database", "proj"], Some("wrong"));
    assert!(!ok && err.contains("401"), "{err}");
    let (ok, out, err) =
        epoch(&["sync", "resync", "--database", "proj", "--batch-size", "10", "--delay", "0", "--follow"], Some(KEY));
    assert!(ok, "{err}");
    assert!(out.contains("Started wf_") && out.contains("complete, 35 succeeded, 0 failed"), "{out}");
    let id = out.split_whitespace().find(|w| w.starts_with("wf_")).unwrap().trim_end_matches(':').to_string();
    let (ok, out, _) = epoch(&["sync", "status", "--database", "proj", &id], Some(KEY));
    assert!(ok);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["status"], "complete");
    // Instance ids are unique server-wide: status, pause, resume and terminate need only the id.
    let status_of = |id: &str| -> String {
        let (ok, out, err) = epoch(&["sync", "status", id], Some(KEY));
        assert!(ok, "{err}");
        serde_json::from_str::<Value>(&out).unwrap()["status"].as_str().unwrap().to_string()
    };
    assert_eq!(status_of(&id), "complete");
    let (ok, out, err) =
        epoch(&["sync", "resync", "--database", "proj", "--batch-size", "5", "--delay", "2"], Some(KEY));
    assert!(ok, "{err}");
    let slow = out.split_whitespace().find(|w| w.starts_with("wf_")).unwrap().trim_end_matches(':').to_string();
    let wait_for = |want: &str| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while status_of(&slow) != want && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(status_of(&slow), want);
    };
    assert!(epoch(&["sync", "pause", &slow], Some(KEY)).0);
    wait_for("paused");
    let (ok, out, _) = epoch(&["sync", "resume", &slow], Some(KEY));
    assert!(ok && out.contains("running"), "{out}");
    assert!(epoch(&["sync", "terminate", &slow], Some(KEY)).0);
    wait_for("terminated");
    let (ok, _, err) = epoch(&["sync", "status", &slow], Some("wrong"));
    assert!(!ok && err.contains("401"), "{err}");
    let (ok, _, err) = epoch(&["sync", "status", "wf_nosuch"], Some(KEY));
    assert!(!ok && err.contains("404"), "{err}");
    let (helper, _) = s.identity();
    let (ok, out, err) = epoch(&["sync", "grant", "--database", "proj", &helper], None);
    assert!(ok && out.contains("Granted"), "{err}");
    let (ok, out, err) = epoch(&["sync", "revoke", "--database", "proj", &helper], None);
    assert!(ok && out.contains("Revoked"), "{err}");
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&store);
}

#[test]
fn a_bad_aggregate_fails_alone_and_grantees_but_not_strangers_may_resync() {
    let (dir, store) = (temp("bad"), temp("bad-store"));
    write_store(&store, 4);
    std::fs::write(store.join("lock").join("lock-broken.json"), "{\"no_version\": true}").unwrap();
    std::fs::write(store.join("lock").join("lock-notjson.json"), "{").unwrap();
    let ctx = setup(&dir, &store);
    let (helper_id, helper) = ctx.s.identity();
    let (_, stranger) = ctx.s.identity();
    let try_resync = |token: Option<&str>, key: Option<&str>| -> (u16, Value) {
        let mut req = ctx.s.http().post(format!(
            "{}/v1/database/proj/sync/resync-projections?aggregateType=lock&delaySeconds=0&maxAttempts=2",
            ctx.s.url
        ));
        if let Some(k) = key {
            req = req.header("X-Admin-API-Key", k);
        }
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.send().unwrap();
        (r.status().as_u16(), r.json().unwrap_or(Value::Null))
    };
    assert_eq!(try_resync(Some(&ctx.owner), None).0, 401);
    assert_eq!(try_resync(Some(&ctx.owner), Some("nope")).0, 401);
    assert_eq!(try_resync(None, Some(KEY)).0, 401);
    assert_eq!(try_resync(Some(&stranger), Some(KEY)).0, 403);
    assert_eq!(try_resync(Some(&helper), Some(KEY)).0, 403);
    let r = ctx
        .s
        .http()
        .post(format!("{}/v1/database/proj/permissions", ctx.s.url))
        .bearer_auth(&ctx.owner)
        .json(&json!({"identity": helper_id, "permission": "sync"}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let (status, body) = try_resync(Some(&helper), Some(KEY));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["total"], 6);
    let done = ctx.wait(body["instanceId"].as_str().unwrap(), "complete", Duration::from_secs(30));
    assert_eq!((done["succeeded"].as_u64(), done["failed"].as_u64()), (Some(4), Some(2)), "{done}");
    let errors: Vec<&str> = done["errors"].as_array().unwrap().iter().map(|e| e.as_str().unwrap()).collect();
    assert!(errors.iter().any(|e| e.contains("lock-broken") && e.contains("version")), "{errors:?}");
    assert!(errors.iter().any(|e| e.contains("lock-notjson") && e.contains("not JSON")), "{errors:?}");
    assert_eq!(ctx.projections().len(), 4);
    // By id alone, an instance is still guarded by its database's rules.
    let by_id = |token: &str| {
        let url = format!("{}/v1/sync/workflows/{}", ctx.s.url, done["id"].as_str().unwrap());
        ctx.s.http().get(url).header("X-Admin-API-Key", KEY).bearer_auth(token).send().unwrap().status().as_u16()
    };
    assert_eq!((by_id(&stranger), by_id(&helper), by_id(&ctx.owner)), (403, 200, 200));
    // An unknown id answers 404 only to a caller with credentials.
    let unknown = |key: &str, token: &str| {
        let url = format!("{}/v1/sync/workflows/wf_nosuch", ctx.s.url);
        ctx.s.http().get(url).header("X-Admin-API-Key", key).bearer_auth(token).send().unwrap().status().as_u16()
    };
    assert_eq!((unknown("wrong", &stranger), unknown(KEY, "not-a-token"), unknown(KEY, &stranger)), (401, 401, 404));
    drop(ctx);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&store);
}

/// A resync's workflow steps reach WebSocket subscribers like reducer calls do: a client
/// watching the projection table ends with every projected row.
#[test]
fn a_subscriber_sees_every_row_a_resync_projects() {
    use common::ws::{connect, JSON};
    let (dir, store) = (temp("ws"), temp("ws-store"));
    write_store(&store, 5);
    let ctx = setup(&dir, &store);
    let mut ws = connect(&ctx.s.url, "proj", JSON, "", Some(&ctx.owner)).unwrap();
    ws.recv_variant("IdentityToken");
    ws.send_json(json!({"SubscribeSingle": {"query": "SELECT * FROM aggregate_projection", "request_id": 1, "query_id": {"id": 1}}}));
    ws.recv_variant("SubscribeApplied");
    let (status, body) = ctx.post("resync-projections?batchSize=10&delaySeconds=0");
    assert_eq!(status, 200, "{body}");
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < 35 {
        let tx = ws.recv_variant("TransactionUpdate");
        for t in tx["status"]["Committed"]["tables"].as_array().unwrap() {
            if t["table_name"] != "aggregate_projection" {
                continue;
            }
            for u in t["updates"].as_array().unwrap() {
                for r in u["inserts"].as_array().unwrap() {
                    let row: Value = serde_json::from_str(r.as_str().unwrap()).unwrap();
                    seen.insert(row[0].as_str().unwrap().to_string());
                }
            }
        }
    }
    let keys: std::collections::BTreeSet<String> =
        ctx.projections().iter().map(|r| r[0].as_str().unwrap().to_string()).collect();
    assert_eq!(seen, keys);
    drop(ctx);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&store);
}
