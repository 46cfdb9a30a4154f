//! The servers a benchmark runs against, started and restarted by the benchmark itself: this
//! Epoch binary, and the reference SpacetimeDB server through the `run.sh` that
//! `build-reference.sh` writes. Each gets a free port and a data directory of its own.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::limits::{REQUEST_TIMEOUT, START_TIMEOUT};

/// The admin key the benchmark gives Epoch for the sync routes.
pub const ADMIN_KEY: &str = "epoch-bench-admin-key";

/// One server process the benchmark owns.
pub struct Server {
    /// `epoch` or `reference`.
    pub name: String,
    pub url: String,
    pub data_dir: PathBuf,
    /// The program and arguments that start it (again, for a restart).
    command: Vec<String>,
    child: Option<Child>,
}

/// The reference's `run.sh`: `path` itself, or `path/run.sh` for the directory
/// `build-reference.sh` wrote.
fn resolve_reference(path: &Path) -> Result<PathBuf> {
    let run = if path.is_dir() { path.join("run.sh") } else { path.to_path_buf() };
    if !run.is_file() {
        bail!("no reference server at {}: build it with ../shared/tools/build-reference.sh", run.display());
    }
    Ok(run)
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Server {
    /// Starts this binary's `epoch start` on a fresh data directory, with `extra` flags.
    pub fn start_epoch(data_dir: &Path, extra: &[String]) -> Result<Self> {
        std::fs::create_dir_all(data_dir)?;
        let key = data_dir.parent().unwrap_or(data_dir).join("admin.key");
        std::fs::write(&key, ADMIN_KEY)?;
        let exe = std::env::current_exe().context("finding the epoch binary")?;
        let addr = format!("127.0.0.1:{}", free_port()?);
        let mut command = vec![
            exe.display().to_string(),
            "start".into(),
            "--listen-addr".into(),
            addr.clone(),
            "--data-dir".into(),
            data_dir.display().to_string(),
            "--admin-api-key-file".into(),
            key.display().to_string(),
        ];
        command.extend(extra.iter().cloned());
        Self::launch("epoch", addr, data_dir, command)
    }

    /// Starts the reference server through its `run.sh` (see [`resolve_reference`]).
    pub fn start_reference(reference: &Path, data_dir: &Path) -> Result<Self> {
        let run = resolve_reference(reference)?;
        std::fs::create_dir_all(data_dir)?;
        let addr = format!("127.0.0.1:{}", free_port()?);
        let command = vec![run.display().to_string(), addr.clone(), data_dir.display().to_string()];
        Self::launch("reference", addr, data_dir, command)
    }

    fn launch(name: &str, addr: String, data_dir: &Path, command: Vec<String>) -> Result<Self> {
        let mut s = Self {
            name: name.to_string(),
            url: format!("http://{addr}"),
            data_dir: data_dir.to_path_buf(),
            command,
            child: None,
        };
        s.spawn()?;
        s.wait_ping()?;
        Ok(s)
    }

    /// Starts the process (again) and returns at once.
    pub fn spawn(&mut self) -> Result<()> {
        let child = Command::new(&self.command[0])
            .args(&self.command[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(if std::env::var_os("EPOCH_BENCH_SERVER_LOGS").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .spawn()
            .with_context(|| format!("starting {}", self.command[0]))?;
        self.child = Some(child);
        Ok(())
    }

    /// Waits until the server answers a ping.
    pub fn wait_ping(&mut self) -> Result<()> {
        let http = reqwest::blocking::Client::builder().timeout(Duration::from_secs(2)).build()?;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if http.get(format!("{}/v1/ping", self.url)).send().is_ok_and(|r| r.status().is_success()) {
                return Ok(());
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                bail!("{} exited while starting: {status} (EPOCH_BENCH_SERVER_LOGS=1 shows its log)", self.name);
            }
            if Instant::now() > deadline {
                bail!("{} did not answer {}/v1/ping within {START_TIMEOUT:?}", self.name, self.url);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the process at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The process's resident memory in bytes (`VmRSS`).
    pub fn resident_bytes(&self) -> Result<u64> {
        let pid = self.child.as_ref().context("the server is not running")?.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .context("no VmRSS in /proc/PID/status")?;
        Ok(kib * 1024)
    }

    /// Bytes of every file under the data directory.
    pub fn disk_bytes(&self) -> u64 {
        fn walk(dir: &Path) -> u64 {
            let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
            entries
                .flatten()
                .map(|e| match e.file_type() {
                    Ok(t) if t.is_dir() => walk(&e.path()),
                    Ok(t) if t.is_file() => e.metadata().map(|m| m.len()).unwrap_or(0),
                    _ => 0,
                })
                .sum()
        }
        walk(&self.data_dir)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A blocking HTTP client of one server with an identity of its own.
pub struct Client {
    http: reqwest::blocking::Client,
    pub url: String,
    pub token: String,
}

impl Client {
    /// A new identity on `server`.
    pub fn new(server: &Server) -> Result<Self> {
        let http = reqwest::blocking::Client::builder().timeout(REQUEST_TIMEOUT).build()?;
        let v: serde_json::Value = http.post(format!("{}/v1/identity", server.url)).send()?.json()?;
        let token = v["token"].as_str().context("POST /v1/identity gave no token")?.to_string();
        Ok(Self { http, url: server.url.clone(), token })
    }

    fn check(r: reqwest::blocking::Response, what: &str) -> Result<reqwest::blocking::Response> {
        if !r.status().is_success() {
            bail!("{what}: {} {}", r.status(), r.text().unwrap_or_default());
        }
        Ok(r)
    }

    /// Publishes `wasm` as database `name`.
    pub fn publish(&self, name: &str, wasm: &[u8]) -> Result<()> {
        let r = self
            .http
            .put(format!("{}/v1/database/{name}", self.url))
            .bearer_auth(&self.token)
            .body(wasm.to_vec())
            .send()?;
        Self::check(r, &format!("publishing {name} to {}", self.url)).map(drop)
    }

    /// Calls a reducer with JSON arguments.
    pub fn call(&self, db: &str, reducer: &str, args: serde_json::Value) -> Result<()> {
        let r = self
            .http
            .post(format!("{}/v1/database/{db}/call/{reducer}", self.url))
            .bearer_auth(&self.token)
            .json(&args)
            .send()?;
        Self::check(r, &format!("{db}.{reducer} on {}", self.url)).map(drop)
    }

    /// Runs one SQL statement and returns the rows of its one result.
    pub fn sql_rows(&self, db: &str, query: &str) -> Result<Vec<serde_json::Value>> {
        let r = self
            .http
            .post(format!("{}/v1/database/{db}/sql", self.url))
            .bearer_auth(&self.token)
            .body(query.to_string())
            .send()?;
        let v: serde_json::Value = Self::check(r, &format!("{query} on {}", self.url))?.json()?;
        Ok(v[0]["rows"].as_array().cloned().unwrap_or_default())
    }

    /// Sends a request to a sync route with the admin key and this identity's token.
    pub fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<serde_json::Value> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(&self.token)
            .header("X-API-Key", ADMIN_KEY);
        if let Some(b) = body {
            req = req.json(b);
        }
        let r = Self::check(req.send()?, path)?;
        Ok(r.json().unwrap_or(serde_json::Value::Null))
    }
}

/// moto's server (S3 and the IoT data plane) on a free port, stopped when dropped.
pub(crate) struct Moto {
    child: Child,
    pub url: String,
}

impl Moto {
    /// Starts moto, or `None` when `moto_server` is not installed.
    pub fn start() -> Result<Option<Self>> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let Ok(child) = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        else {
            return Ok(None);
        };
        let moto = Self { child, url: format!("http://127.0.0.1:{port}") };
        let deadline = Instant::now() + START_TIMEOUT;
        while reqwest::blocking::get(&moto.url).is_err() {
            if Instant::now() > deadline {
                bail!("moto_server did not answer within {START_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(Some(moto))
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
