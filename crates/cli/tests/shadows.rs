//! Device shadows, the live path: `…/sync/shadow-webhook` (and the seed's `/admin/shadow-webhook`
//! on the default database) takes the event an IoT topic rule forwards for a named shadow's
//! `update/documents` topic and pushes it through the shadow reducer of the `projections`
//! fixture; an older version never overwrites a newer row; malformed events name the field.

mod common;

use common::Server;
use serde_json::{json, Value};

const KEY: &str = "shadow-admin-key-0001";

fn event(thing: &str, shadow: &str, version: u64, state: Value) -> Value {
    json!({
        "topic": format!("$aws/things/{thing}/shadow/name/{shadow}/update/documents"),
        "previous": {"state": {}, "version": version.saturating_sub(1)},
        "current": {"state": state, "metadata": {}, "version": version},
        "timestamp": 1700000000
    })
}

#[test]
fn the_webhook_ingests_shadow_updates_through_the_reducer() {
    let dir = std::env::temp_dir().join(format!("epoch-shadows-{}-{}", std::process::id(), common::rand_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    let key_file = dir.join("admin.key");
    std::fs::write(&key_file, KEY).unwrap();
    let server = Server::start_in(
        dir.clone(),
        &["--admin-api-key-file", key_file.to_str().unwrap(), "--default-database", "proj"],
    );
    let (_, owner) = server.identity();
    assert!(server.publish(&owner, "proj", "projections").status().is_success());
    let post = |path: &str, header: &str, body: &Value| {
        let r = server
            .http()
            .post(format!("{}{path}", server.url))
            .header(header, KEY)
            .bearer_auth(&owner)
            .json(body)
            .send()
            .unwrap();
        (r.status().as_u16(), r.json::<Value>().unwrap_or(Value::Null))
    };
    let rows = || {
        let (status, body) = server.sql(Some(&owner), "proj", "SELECT key, version, document FROM device_named_shadow");
        assert_eq!(status, 200, "{body}");
        serde_json::from_str::<Value>(&body).unwrap()[0]["rows"].clone()
    };

    let state = json!({"reported": {"locked": true}});
    let (status, body) =
        post("/v1/database/proj/sync/shadow-webhook", "X-API-Key", &event("lock-1", "door", 3, state.clone()));
    assert_eq!(status, 200, "{body}");
    assert_eq!((body["success"].as_bool(), body["statusCode"].as_u64()), (Some(true), Some(200)), "{body}");
    assert_eq!(rows(), json!([["lock-1/door", 3, json!({"state": state}).to_string()]]));

    // An older version never overwrites the newer row; the seed path works on the default database.
    let old = event("lock-1", "door", 2, json!({"reported": {"locked": false}}));
    let (status, body) = post("/admin/shadow-webhook", "X-Admin-API-Key", &old);
    assert_eq!((status, body["success"].as_bool()), (200, Some(true)), "{body}");
    assert_eq!(rows()[0][1], 3);

    // Malformed events: 400 naming the field.
    let (status, body) = post(
        "/v1/database/proj/sync/shadow-webhook",
        "X-API-Key",
        &json!({"thingName": "lock-1", "shadowName": "door", "current": {"state": {}}}),
    );
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["details"][0]["field"], "current.version", "{body}");
    let (status, body) = post(
        "/v1/database/proj/sync/shadow-webhook",
        "X-API-Key",
        &json!({"thingName": "no spaces", "shadowName": "d", "current": {"state": {}, "version": 1}}),
    );
    assert_eq!((status, body["details"][0]["field"].as_str()), (400, Some("thingName")), "{body}");
    // Credentials as every sync route.
    let r =
        server.http().post(format!("{}/v1/database/proj/sync/shadow-webhook", server.url)).json(&old).send().unwrap();
    assert_eq!(r.status().as_u16(), 401);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------------
// Force-sync against a real IoT data plane (moto's server), and the live MQTT path (mosquitto).
// ---------------------------------------------------------------------------------------------

use common::services::{Mosquitto, Moto};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Seeds moto as the AWS CLI would: moto routes by the service named in the `Authorization`
/// header's credential scope (it does not check the signature).
struct Iot {
    url: String,
    http: reqwest::blocking::Client,
}

impl Iot {
    fn new(url: &str) -> Self {
        Self { url: url.to_string(), http: reqwest::blocking::Client::new() }
    }

    fn auth(service: &str) -> String {
        format!("AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/{service}/aws4_request, SignedHeaders=host, Signature=00")
    }

    fn create_thing(&self, thing: &str) {
        let r = self
            .http
            .post(format!("{}/things/{thing}", self.url))
            .header("Authorization", Self::auth("iot"))
            .json(&json!({}))
            .send()
            .unwrap();
        assert!(r.status().is_success(), "create_thing {thing}: {}", r.text().unwrap());
    }

    /// Updates a shadow (`None`: the classic one) and returns its new document.
    fn put_shadow(&self, thing: &str, shadow: Option<&str>, state: Value) -> Value {
        let query = shadow.map(|s| format!("?name={s}")).unwrap_or_default();
        let r = self
            .http
            .post(format!("{}/things/{thing}/shadow{query}", self.url))
            .header("Authorization", Self::auth("iotdata"))
            .json(&json!({"state": state}))
            .send()
            .unwrap();
        assert!(r.status().is_success(), "update_thing_shadow {thing}/{shadow:?}");
        r.json().unwrap()
    }
}

/// A server with `proj` (the default database) and `proj-wh`, each running `projections`, and
/// each configured with moto as its IoT data endpoint.
struct Fleet {
    server: Server,
    owner: String,
    dir: std::path::PathBuf,
}

impl Fleet {
    fn start(endpoint: &str, extra_databases: &[&str]) -> Self {
        let dir = std::env::temp_dir().join(format!("epoch-fsync-{}-{}", std::process::id(), common::rand_suffix()));
        std::fs::create_dir_all(&dir).unwrap();
        let key_file = dir.join("admin.key");
        std::fs::write(&key_file, KEY).unwrap();
        let server = Server::start_in(
            dir.join("data"),
            &["--admin-api-key-file", key_file.to_str().unwrap(), "--default-database", "proj"],
        );
        let (_, owner) = server.identity();
        let fleet = Self { server, owner, dir };
        for db in ["proj"].iter().chain(extra_databases) {
            assert!(fleet.server.publish(&fleet.owner, db, "projections").status().is_success());
            let (status, body) = fleet.send(
                "PUT",
                &format!("/v1/database/{db}/sync/config"),
                Some(&json!({"deviceShadows": {
                    "endpoint": endpoint, "region": "us-east-1",
                    "accessKeyId": "AKIDTEST", "secretAccessKey": "not-a-real-secret"
                }})),
            );
            assert_eq!(status, 200, "{body}");
            assert_eq!(body["deviceShadows"]["secretAccessKey"], "********", "{body}");
        }
        fleet
    }

    fn send_as(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        key: Option<(&str, &str)>,
        token: Option<&str>,
    ) -> (u16, Value) {
        let mut req = self.server.http().request(method.parse().unwrap(), format!("{}{path}", self.server.url));
        if let Some((header, k)) = key {
            req = req.header(header, k);
        }
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let r = req.send().unwrap();
        (r.status().as_u16(), r.json::<Value>().unwrap_or(Value::Null))
    }

    fn send(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        self.send_as(method, path, body, Some(("X-API-Key", KEY)), Some(&self.owner))
    }

    fn force_sync(&self, db: &str, thing: &str, query: &str) -> (u16, Value) {
        self.send("POST", &format!("/v1/database/{db}/sync/shadow-sync/{thing}{query}"), None)
    }

    /// Every row of `device_named_shadow` but its timestamp, sorted by key.
    fn rows(&self, db: &str, thing: &str) -> Vec<Value> {
        let q = format!(
            "SELECT key, thing_name, shadow_name, version, document FROM device_named_shadow WHERE thing_name = '{thing}'"
        );
        let (status, body) = self.server.sql(Some(&self.owner), db, &q);
        assert_eq!(status, 200, "{body}");
        let mut rows = serde_json::from_str::<Value>(&body).unwrap()[0]["rows"].as_array().unwrap().clone();
        rows.sort_by(|a, b| a[0].as_str().cmp(&b[0].as_str()));
        rows
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn shadow_lines(body: &Value) -> Vec<(String, u64)> {
    body["shadows"]
        .as_array()
        .unwrap_or(&Vec::new())
        .iter()
        .map(|s| (s["shadowName"].as_str().unwrap().to_string(), s["lambdaStatusCode"].as_u64().unwrap()))
        .collect()
}

#[test]
fn force_sync_of_things_with_none_one_and_250_named_shadows() {
    let Some(moto) = Moto::require() else { return };
    let iot = Iot::new(&moto.url);
    for thing in ["empty", "single", "fleet"] {
        iot.create_thing(thing);
    }
    iot.put_shadow("single", Some("door"), json!({"reported": {"locked": true}}));
    iot.put_shadow("single", None, json!({"reported": {"firmware": "1.2"}}));
    for n in 0..250 {
        iot.put_shadow("fleet", Some(&format!("s{n:03}")), json!({"reported": {"n": n}}));
    }
    let f = Fleet::start(&moto.url, &[]);

    // No named shadows: 200 with an empty list.
    let (status, body) = f.force_sync("proj", "empty", "");
    assert_eq!(status, 200, "{body}");
    assert_eq!((body["success"].as_bool(), body["thingName"].as_str()), (Some(true), Some("empty")), "{body}");
    assert_eq!(body["shadows"], json!([]), "{body}");
    assert_eq!(body["errors"], json!([]), "{body}");

    // One named shadow (the classic one is left alone unless asked for).
    let (status, body) = f.force_sync("proj", "single", "");
    assert_eq!(status, 200, "{body}");
    assert_eq!(shadow_lines(&body), vec![("door".to_string(), 200)], "{body}");
    let instance = body["instanceId"].as_str().unwrap().to_string();
    let line = &body["shadows"][0];
    assert!(line["lambdaRequestId"].as_str().unwrap().starts_with(&format!("{instance}#")), "{body}");
    assert_eq!(line["error"], Value::Null);
    let door = json!({"state": {"reported": {"locked": true}}}).to_string();
    assert_eq!(f.rows("proj", "single"), vec![json!(["single/door", "single", "door", 1, door])]);
    // The instance is a workflow like any other.
    let (status, wf) = f.send("GET", &format!("/v1/sync/workflows/{instance}"), None);
    assert_eq!(status, 200, "{wf}");
    assert_eq!(
        (wf["kind"].as_str(), wf["status"].as_str(), wf["done"].as_u64()),
        (Some("force-sync-shadows"), Some("complete"), Some(1)),
        "{wf}"
    );

    // ?includeClassic=true adds the classic shadow, named `$classic`.
    let (status, body) = f.force_sync("proj", "single", "?includeClassic=true");
    assert_eq!(status, 200, "{body}");
    assert_eq!(shadow_lines(&body), vec![("$classic".to_string(), 200), ("door".to_string(), 200)], "{body}");
    assert_eq!(f.rows("proj", "single")[0][0], "single/$classic");

    // 250 named shadows through the seed path, with the seed's header, in batches of 40.
    let (status, body) = f.send_as(
        "POST",
        "/admin/shadow-sync/fleet?batchSize=40",
        None,
        Some(("X-Admin-API-Key", KEY)),
        Some(&f.owner),
    );
    assert_eq!(status, 200, "{body}");
    let lines = shadow_lines(&body);
    assert_eq!(lines.len(), 250, "{body}");
    assert!(lines.iter().all(|(_, code)| *code == 200), "{body}");
    assert_eq!(body["success"], true);
    let rows = f.rows("proj", "fleet");
    assert_eq!(rows.len(), 250);
    assert_eq!(
        rows[249],
        json!(["fleet/s249", "fleet", "s249", 1, json!({"state": {"reported": {"n": 249}}}).to_string()])
    );

    // waitSeconds=0: 202 at once, with the instance to follow.
    let (status, body) = f.force_sync("proj", "fleet", "?waitSeconds=0&batchSize=10&delaySeconds=1");
    assert_eq!(status, 202, "{body}");
    let id = body["instanceId"].as_str().unwrap().to_string();
    // A second one of the same thing meanwhile: 409 naming the first.
    let (status, conflict) = f.force_sync("proj", "fleet", "");
    assert_eq!(status, 409, "{conflict}");
    assert!(conflict["message"].as_str().unwrap().contains(&id), "{conflict}");
    let (status, _) = f.send("POST", &format!("/v1/sync/workflows/{id}/terminate"), None);
    assert_eq!(status, 200);

    // Unknown thing: 404; a name AWS refuses: 400 naming the field.
    let (status, body) = f.force_sync("proj", "no-such-thing", "");
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["details"][0]["field"], "thingName", "{body}");
    for bad in ["bad%20name", &"x".repeat(129), "a%2Fb"] {
        let (status, body) = f.force_sync("proj", bad, "");
        assert_eq!((status, body["details"][0]["field"].as_str()), (400, Some("thingName")), "{bad}: {body}");
    }
    let (status, body) = f.force_sync("proj", "single", "?includeClassic=yes");
    assert_eq!((status, body["details"][0]["field"].as_str()), (400, Some("includeClassic")), "{body}");

    // A newer version written by the live path meanwhile is never overwritten by the older one
    // a force-sync reads.
    let newer = event("single", "door", 9, json!({"reported": {"locked": false}}));
    let (status, body) = f.send("POST", "/v1/database/proj/sync/shadow-webhook", Some(&newer));
    assert_eq!(status, 200, "{body}");
    let (status, body) = f.force_sync("proj", "single", "");
    assert_eq!((status, body["success"].as_bool()), (200, Some(true)), "{body}");
    let door = f.rows("proj", "single").into_iter().find(|r| r[0] == "single/door").unwrap();
    assert_eq!(door[3], 9, "the live path's newer version stays: {door}");

    // The auth matrix, as for resync.
    let path = "/v1/database/proj/sync/shadow-sync/single";
    let (stranger_id, stranger) = f.server.identity();
    type Case<'a> = (Option<(&'a str, &'a str)>, Option<&'a str>, u16, &'a str);
    let cases: [Case; 5] = [
        (None, Some(&f.owner), 401, "X-Admin-API-Key or X-API-Key"),
        (Some(("X-API-Key", "wrong-key-wrong-key")), Some(&f.owner), 401, "X-Admin-API-Key or X-API-Key"),
        (Some(("X-API-Key", KEY)), None, 401, "Authorization"),
        (Some(("X-API-Key", KEY)), Some("not.a.token"), 401, "Authorization"),
        (Some(("X-Admin-API-Key", KEY)), Some(&stranger), 403, "Authorization"),
    ];
    for (key, token, want, field) in cases {
        let (status, body) = f.send_as("POST", path, None, key, token);
        assert_eq!((status, body["details"][0]["field"].as_str()), (want, Some(field)), "{key:?} {token:?}: {body}");
    }
    let (status, body) =
        f.send("POST", "/v1/database/proj/permissions", Some(&json!({"identity": stranger_id, "permission": "sync"})));
    assert_eq!(status, 200, "{body}");
    let (status, body) = f.send_as("POST", path, None, Some(("X-API-Key", KEY)), Some(&stranger));
    assert_eq!((status, body["success"].as_bool()), (200, Some(true)), "a grantee may force-sync: {body}");
}

/// An IoT data endpoint in front of moto that pages `ListNamedShadowsForThing` (moto never
/// does), lists one shadow that does not exist, and answers one read with 429 and another with
/// 500 once each (the SDK must retry them).
struct PagingProxy {
    url: String,
    list_calls: Arc<Mutex<usize>>,
    reads: Arc<Mutex<HashMap<String, usize>>>,
}

const PAGE: usize = 7;
const GHOST: &str = "ghost";

impl PagingProxy {
    fn start(upstream: &str) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let list_calls = Arc::new(Mutex::new(0));
        let reads = Arc::new(Mutex::new(HashMap::new()));
        let (upstream, lists, seen) = (upstream.to_string(), list_calls.clone(), reads.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (upstream, lists, seen) = (upstream.clone(), lists.clone(), seen.clone());
                std::thread::spawn(move || Self::serve(stream, &upstream, &lists, &seen));
            }
        });
        Self { url, list_calls, reads }
    }

    fn serve(
        mut stream: std::net::TcpStream,
        upstream: &str,
        lists: &Mutex<usize>,
        seen: &Mutex<HashMap<String, usize>>,
    ) {
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let target = line.split_whitespace().nth(1).unwrap_or("/").to_string();
            let (mut length, mut auth) = (0usize, String::new());
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).unwrap_or(0) <= 2 {
                    break;
                }
                let (name, value) = h.split_once(':').unwrap_or((&h, ""));
                match name.trim().to_ascii_lowercase().as_str() {
                    "content-length" => length = value.trim().parse().unwrap_or(0),
                    "authorization" => auth = value.trim().to_string(),
                    _ => {}
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let (path, query) = target.split_once('?').unwrap_or((&target, ""));
            let params: HashMap<&str, &str> = query.split('&').filter_map(|p| p.split_once('=')).collect();
            let http = reqwest::blocking::Client::new();
            let forward = |url: String| {
                let r = http.get(url).header("Authorization", &auth).send().unwrap();
                let kind = r.headers().get("x-amzn-errortype").map(|v| v.to_str().unwrap().to_string());
                (r.status().as_u16(), kind, r.text().unwrap())
            };
            let (status, error_type, reply) = if path.starts_with("/api/things/shadow/ListNamedShadowsForThing/") {
                *lists.lock().unwrap() += 1;
                let (status, kind, text) = forward(format!("{upstream}{path}"));
                if status != 200 {
                    (status, kind, text)
                } else {
                    let mut names: Vec<String> = serde_json::from_str::<Value>(&text).unwrap()["results"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|n| n.as_str().unwrap().to_string())
                        .collect();
                    names.push(GHOST.to_string());
                    names.sort();
                    let start: usize = params.get("nextToken").map_or(0, |t| t.parse().unwrap());
                    let end = (start + PAGE).min(names.len());
                    let mut page = json!({"results": names[start..end], "timestamp": 1});
                    if end < names.len() {
                        page["nextToken"] = json!(end.to_string());
                    }
                    (200, None, page.to_string())
                }
            } else {
                let shadow = params.get("name").copied().unwrap_or("").to_string();
                let n = {
                    let mut seen = seen.lock().unwrap();
                    let n = seen.entry(shadow.clone()).or_insert(0);
                    *n += 1;
                    *n
                };
                match (shadow.as_str(), n) {
                    ("s003", 1) => {
                        (429, Some("ThrottlingException".into()), json!({"message": "Rate exceeded"}).to_string())
                    }
                    ("s004", 1) => {
                        (500, Some("InternalFailureException".into()), json!({"message": "try again"}).to_string())
                    }
                    _ => forward(format!("{upstream}{target}")),
                }
            };
            let mut head =
                format!("HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n", reply.len());
            if let Some(kind) = error_type {
                head.push_str(&format!("x-amzn-ErrorType: {kind}\r\n"));
            }
            head.push_str("\r\n");
            if stream.write_all(head.as_bytes()).and_then(|()| stream.write_all(reply.as_bytes())).is_err() {
                return;
            }
        }
    }
}

#[test]
fn the_pager_follows_next_token_and_a_vanished_shadow_fails_alone() {
    let Some(moto) = Moto::require() else { return };
    let iot = Iot::new(&moto.url);
    iot.create_thing("paged");
    for n in 0..30 {
        iot.put_shadow("paged", Some(&format!("s{n:03}")), json!({"reported": {"n": n}}));
    }
    let proxy = PagingProxy::start(&moto.url);
    let f = Fleet::start(&proxy.url, &[]);
    // One try per item in the runner: the retries of 429 and 500 below are the client's own.
    let (status, body) = f.force_sync("proj", "paged", "?batchSize=8&maxAttempts=1");
    assert_eq!(status, 200, "{body}");
    // 31 names in pages of 7: five pages, listed once at the start and once by the run.
    assert_eq!(*proxy.list_calls.lock().unwrap(), 10);
    let lines = shadow_lines(&body);
    assert_eq!(lines.len(), 31, "{body}");
    assert_eq!(lines.iter().filter(|(_, code)| *code == 200).count(), 30, "{body}");
    // The shadow listed but gone on read: its own line, a line in errors, success false.
    let ghost = body["shadows"].as_array().unwrap().iter().find(|s| s["shadowName"] == GHOST).unwrap();
    assert_eq!(ghost["lambdaStatusCode"], 404, "{ghost}");
    assert!(ghost["error"].as_str().unwrap().contains("does not exist"), "{ghost}");
    assert_eq!(body["errors"].as_array().unwrap().len(), 1, "{body}");
    assert!(body["errors"][0].as_str().unwrap().starts_with("ghost: "), "{body}");
    assert_eq!(body["success"], false);
    assert_eq!(f.rows("proj", "paged").len(), 30);
    // Throttling and a server error were retried by the client.
    let reads = proxy.reads.lock().unwrap();
    assert_eq!((reads["s003"], reads["s004"], reads["s005"]), (2, 2, 1), "{reads:?}");
}

/// The same documents reach three databases by three paths: a force-sync, the webhook and MQTT.
/// The rows must be identical.
#[test]
fn webhook_mqtt_and_force_sync_give_identical_rows() {
    let Some(moto) = Moto::require() else { return };
    let Some(broker) = Mosquitto::require() else { return };
    let iot = Iot::new(&moto.url);
    iot.create_thing("mixed");
    // States with nested objects whose keys are not in order.
    let states: Vec<(String, Value)> = (0..5)
        .map(|n| {
            let state: Value = serde_json::from_str(&format!(
                r#"{{"reported": {{"zeta": {n}, "alpha": {{"y": [1, {{"b": 2, "a": 1}}], "x": null}}}}, "desired": {{"mode": "m{n}"}}}}"#
            ))
            .unwrap();
            (format!("part-{n}"), state)
        })
        .collect();
    let mut documents = Vec::new();
    for (name, state) in &states {
        documents.push((name.clone(), iot.put_shadow("mixed", Some(name), state.clone())));
    }
    let f = Fleet::start(&moto.url, &["proj-wh", "proj-mq"]);
    let (status, body) = f.send(
        "PATCH",
        "/v1/database/proj-mq/sync/config",
        Some(&json!({"deviceShadows": {"mqttUrl": format!("mqtt://127.0.0.1:{}", broker.port), "mqttClientId": "epoch-test-mq"}})),
    );
    assert_eq!(status, 200, "{body}");

    // Force-sync into `proj`.
    let (status, body) = f.force_sync("proj", "mixed", "");
    assert_eq!((status, body["success"].as_bool()), (200, Some(true)), "{body}");

    // The webhook into `proj-wh`, with the document as an update event carries it: keys in
    // another order than the shadow read returns them.
    let reorder = |v: &Value| -> Value {
        fn rev(v: &Value) -> Value {
            match v {
                Value::Object(m) => Value::Object(m.iter().rev().map(|(k, v)| (k.clone(), rev(v))).collect()),
                Value::Array(a) => Value::Array(a.iter().map(rev).collect()),
                o => o.clone(),
            }
        }
        rev(v)
    };
    let update_event = |name: &str, doc: &Value| {
        json!({
            "previous": null,
            "current": reorder(doc),
            "timestamp": doc["timestamp"],
        })
        .as_object()
        .unwrap()
        .clone()
        .into_iter()
        .chain([("topic".to_string(), json!(format!("$aws/things/mixed/shadow/name/{name}/update/documents")))])
        .collect::<serde_json::Map<_, _>>()
    };
    for (name, doc) in &documents {
        let (status, body) =
            f.send("POST", "/v1/database/proj-wh/sync/shadow-webhook", Some(&Value::Object(update_event(name, doc))));
        assert_eq!((status, body["success"].as_bool()), (200, Some(true)), "{body}");
    }

    // MQTT into `proj-mq`: publish as AWS IoT does on each shadow's update/documents topic.
    let mut options = rumqttc::MqttOptions::new("epoch-test-publisher", "127.0.0.1", broker.port);
    options.set_keep_alive(Duration::from_secs(5));
    let (client, mut connection) = rumqttc::Client::new(options, 100);
    std::thread::spawn(move || for _ in connection.iter() {});
    let publish = |topic: String, payload: Value| {
        client.publish(topic, rumqttc::QoS::AtLeastOnce, false, payload.to_string().into_bytes()).unwrap();
    };
    // The consumer subscribes once connected: probe until a first document lands.
    let deadline = Instant::now() + Duration::from_secs(30);
    let probe = json!({"current": {"state": {"reported": {}}, "version": 1}, "timestamp": 1});
    while f.rows("proj-mq", "probe").is_empty() {
        assert!(Instant::now() < deadline, "the MQTT consumer never applied a message");
        publish("$aws/things/probe/shadow/name/p/update/documents".into(), probe.clone());
        std::thread::sleep(Duration::from_millis(200));
    }
    // A malformed message is dropped (and logged), and does not stop the consumer.
    publish("$aws/things/mixed/shadow/name/bad/update/documents".into(), json!({"current": "nope"}));
    for (name, doc) in &documents {
        let mut event = update_event(name, doc);
        event.remove("topic");
        publish(format!("$aws/things/mixed/shadow/name/{name}/update/documents"), Value::Object(event));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while f.rows("proj-mq", "mixed").len() < states.len() {
        assert!(Instant::now() < deadline, "MQTT documents never all arrived: {:?}", f.rows("proj-mq", "mixed"));
        std::thread::sleep(Duration::from_millis(100));
    }

    let forced = f.rows("proj", "mixed");
    assert_eq!(forced.len(), states.len());
    assert_eq!(f.rows("proj-wh", "mixed"), forced, "webhook and force-sync rows differ");
    assert_eq!(f.rows("proj-mq", "mixed"), forced, "MQTT and force-sync rows differ");
}

#[test]
fn the_cli_configures_and_force_syncs_a_thing() {
    let Some(moto) = Moto::require() else { return };
    let iot = Iot::new(&moto.url);
    iot.create_thing("lock-7");
    for name in ["door", "battery", "keypad"] {
        iot.put_shadow("lock-7", Some(name), json!({"reported": {"name": name}}));
    }
    let dir = std::env::temp_dir().join(format!("epoch-fsync-cli-{}-{}", std::process::id(), common::rand_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("admin.key"), KEY).unwrap();
    let server = Server::start_in(dir.join("data"), &["--admin-api-key-file", dir.join("admin.key").to_str().unwrap()]);
    let cfg = dir.join("cli.json");
    let epoch = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_epoch"))
            .args(["--server", &server.url, "--config"])
            .arg(&cfg)
            .args(args)
            .env("EPOCH_ADMIN_API_KEY", KEY)
            .env("EPOCH_SHADOWS_SECRET_ACCESS_KEY", "not-a-real-secret")
            .output()
            .unwrap();
        let text = |b: &[u8]| String::from_utf8_lossy(b).to_string();
        (out.status.success(), text(&out.stdout), text(&out.stderr))
    };
    let (ok, _, err) = epoch(&["publish", "proj", "--wasm", common::fixture("projections").to_str().unwrap()]);
    assert!(ok, "{err}");
    let (ok, out, err) = epoch(&[
        "sync",
        "config",
        "--database",
        "proj",
        "--shadows-endpoint",
        &moto.url,
        "--shadows-access-key-id",
        "AKIDTEST",
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("\"secretAccessKey\": \"********\"") && !out.contains("not-a-real-secret"), "{out}");
    let (ok, out, err) = epoch(&["sync", "shadows", "--database", "proj", "lock-7", "--follow"]);
    assert!(ok, "{err}");
    assert!(out.contains("lock-7: 3 shadows synced"), "{out}");
    for name in ["door", "battery", "keypad"] {
        assert!(out.lines().any(|l| l.starts_with(name) && l.contains(" 200")), "{name}: {out}");
    }
    let (ok, out, err) = epoch(&["sync", "shadows", "--database", "proj", "lock-7"]);
    assert!(ok && out.contains("3 shadows synced"), "{out}{err}");
    let (ok, _, err) = epoch(&["sync", "shadows", "--database", "proj", "lock-8"]);
    assert!(!ok && err.contains("thing `lock-8` does not exist"), "{err}");
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The MQTT consumer's session outlives the server: updates published while Epoch is down are
/// kept by the broker (QoS 1, persistent session) and applied when it is back.
#[test]
fn mqtt_updates_published_while_the_server_is_down_arrive_after_restart() {
    let Some(broker) = Mosquitto::require() else { return };
    let dir = std::env::temp_dir().join(format!("epoch-mqtt-{}-{}", std::process::id(), common::rand_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("admin.key"), KEY).unwrap();
    let args = ["--admin-api-key-file", dir.join("admin.key").to_str().unwrap().to_string().leak() as &str];
    let server = Server::start_in(dir.join("data"), &args);
    let (_, owner) = server.identity();
    assert!(server.publish(&owner, "live", "projections").status().is_success());
    let r = server
        .http()
        .put(format!("{}/v1/database/live/sync/config", server.url))
        .header("X-API-Key", KEY)
        .bearer_auth(&owner)
        .json(&json!({"deviceShadows": {
            "mqttUrl": format!("mqtt://127.0.0.1:{}", broker.port),
            "mqttUsername": "epoch", "mqttPassword": "broker-secret-123"
        }}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    // Secrets never come back, not even the broker's password.
    let config = r.text().unwrap();
    assert!(config.contains(r#""mqttPassword":"********""#) && !config.contains("broker-secret-123"), "{config}");
    let count = |server: &Server| {
        let (status, body) =
            server.sql(Some(&owner), "live", "SELECT COUNT(*) AS n FROM device_named_shadow WHERE thing_name = 'pump'");
        assert_eq!(status, 200, "{body}");
        serde_json::from_str::<Value>(&body).unwrap()[0]["rows"][0][0].as_u64().unwrap()
    };
    let mut options = rumqttc::MqttOptions::new("epoch-test-pump", "127.0.0.1", broker.port);
    options.set_keep_alive(Duration::from_secs(5));
    let (client, mut connection) = rumqttc::Client::new(options, 100);
    std::thread::spawn(move || for _ in connection.iter() {});
    let publish = |shadow: &str, version: u64| {
        let event = json!({"current": {"state": {"reported": {"v": version}}, "version": version}, "timestamp": 1});
        let topic = format!("$aws/things/pump/shadow/name/{shadow}/update/documents");
        client.publish(topic, rumqttc::QoS::AtLeastOnce, false, event.to_string().into_bytes()).unwrap();
    };
    // Subscribed once a first update lands.
    let deadline = Instant::now() + Duration::from_secs(30);
    while count(&server) == 0 {
        assert!(Instant::now() < deadline, "the MQTT consumer never applied a message");
        publish("first", 1);
        std::thread::sleep(Duration::from_millis(200));
    }
    server.crash();
    for n in 0..20 {
        publish(&format!("while-down-{n}"), 1);
    }
    std::thread::sleep(Duration::from_millis(300));
    let server = Server::start_in(dir.join("data"), &args);
    let deadline = Instant::now() + Duration::from_secs(30);
    while count(&server) < 21 {
        assert!(Instant::now() < deadline, "updates published while down were lost: {} of 21", count(&server));
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A force-sync is a workflow: killed in the middle, it resumes after a restart and finishes
/// with every shadow applied exactly once (the fixture counts each reducer call in
/// `ingest_stats`: applied + skipped must equal the shadows).
#[test]
fn a_force_sync_killed_midway_resumes_and_applies_each_shadow_once() {
    let Some(moto) = Moto::require() else { return };
    let iot = Iot::new(&moto.url);
    iot.create_thing("crashy");
    const N: u64 = 300;
    for n in 0..N {
        iot.put_shadow("crashy", Some(&format!("c{n:03}")), json!({"reported": {"n": n}}));
    }
    let f = Fleet::start(&moto.url, &[]);
    let (status, body) = f.force_sync("proj", "crashy", "?batchSize=25&delaySeconds=0&waitSeconds=0");
    assert_eq!(status, 202, "{body}");
    let id = body["instanceId"].as_str().unwrap().to_string();
    let progress = |server: &Server| {
        let r = server
            .http()
            .get(format!("{}/v1/sync/workflows/{id}", server.url))
            .header("X-API-Key", KEY)
            .bearer_auth(&f.owner)
            .send()
            .unwrap();
        r.json::<Value>().unwrap()
    };
    let args = [
        "--admin-api-key-file",
        f.dir.join("admin.key").to_str().unwrap().to_string().leak() as &str,
        "--default-database",
        "proj",
    ];
    let mut server: Option<Server> = None;
    // Five kills, each a varying time after a batch starts (some land while its reads run,
    // some among its commits). The runner's recovery of a batch cut between its commits and its
    // progress row is exercised deterministically by the resync suite (`kills_in_the_middle_…`);
    // here every kill must still leave each shadow applied exactly once.
    for kill in 0..5u64 {
        let current = server.as_ref().unwrap_or(&f.server);
        let seen = progress(current);
        if seen["status"] != "running" {
            break;
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while progress(current)["done"] == seen["done"] && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(common::rand_suffix() % 120 + kill));
        match server.take() {
            Some(s) => s.crash(),
            None => unsafe {
                libc::kill(f.server.pid() as i32, libc::SIGKILL);
            },
        }
        server = Some(Server::start_in(f.dir.join("data"), &args));
    }
    let server = server.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let done = loop {
        let v = progress(&server);
        if v["status"] == "complete" {
            break v;
        }
        assert!(Instant::now() < deadline, "never completed: {v}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!((done["done"].as_u64(), done["succeeded"].as_u64()), (Some(N), Some(N)), "{done}");
    let (status, body) =
        server.sql(Some(&f.owner), "proj", "SELECT applied, skipped_stale FROM ingest_stats WHERE source = 'shadow'");
    assert_eq!(status, 200, "{body}");
    let row = &serde_json::from_str::<Value>(&body).unwrap()[0]["rows"][0];
    assert_eq!((row[0].as_u64(), row[1].as_u64()), (Some(N), Some(0)), "each shadow applied once: {row}");
    let (status, body) =
        server.sql(Some(&f.owner), "proj", "SELECT COUNT(*) AS n FROM device_named_shadow WHERE thing_name = 'crashy'");
    assert_eq!(status, 200);
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()[0]["rows"][0][0], N);
}

/// Speed (opt-in: `cargo test --release -p epoch-cli --test shadows -- --ignored --nocapture
/// force_sync_speed`): a force-sync of 1,000 named shadows against moto, and the latency of the
/// database's other reducer calls meanwhile, against the same calls with nothing else running.
#[test]
#[ignore]
fn force_sync_speed() {
    let Some(moto) = Moto::require() else { return };
    let iot = Iot::new(&moto.url);
    iot.create_thing("speed");
    for n in 0..1000 {
        iot.put_shadow("speed", Some(&format!("s{n:04}")), json!({"reported": {"n": n, "ok": true}}));
    }
    let f = Fleet::start(&moto.url, &[]);
    let call_latencies = |stop: &std::sync::atomic::AtomicBool, limit: usize| {
        common::call_latencies(&f.server, &f.owner, "proj", stop, limit)
    };
    let pct = common::percentile;
    let never = std::sync::atomic::AtomicBool::new(false);
    let idle = call_latencies(&never, 500);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (elapsed, busy) = std::thread::scope(|scope| {
        let calls = scope.spawn(|| call_latencies(&stop, usize::MAX));
        let t = Instant::now();
        let (status, body) = f.force_sync("proj", "speed", "?batchSize=100&waitSeconds=300");
        let elapsed = t.elapsed();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert_eq!((status, body["success"].as_bool()), (200, Some(true)), "{}", body["errors"]);
        (elapsed, calls.join().unwrap())
    });
    println!(
        "force-sync of 1000 shadows: {:.2} s, {:.0} shadows/s; other calls meanwhile: {} calls, p50 {:?} p99 {:?} (idle: p50 {:?} p99 {:?})",
        elapsed.as_secs_f64(),
        1000.0 / elapsed.as_secs_f64(),
        busy.len(),
        pct(&busy, 0.5),
        pct(&busy, 0.99),
        pct(&idle, 0.5),
        pct(&idle, 0.99),
    );
}
