//! Starts the real `epoch` binary on a free port for a test, and stops it afterwards.
#![allow(dead_code)]

pub mod services;
pub mod spacetime_cli;
pub mod ws;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

pub struct Server {
    child: Child,
    pub url: String,
    pub data_dir: PathBuf,
    /// Whether dropping the server deletes its data directory.
    pub owns_data: bool,
    /// Signalled when the server prints `epoch ready`.
    ready: std::sync::Mutex<std::sync::mpsc::Receiver<()>>,
}

impl Server {
    pub fn start(extra: &[&str]) -> Self {
        let data_dir = std::env::temp_dir().join(format!("epoch-test-{}-{}", std::process::id(), rand_suffix()));
        Self::spawn(data_dir, extra)
    }

    /// Starts on an existing (or new) data directory, which outlives this server.
    pub fn start_in(data_dir: PathBuf, extra: &[&str]) -> Self {
        let mut server = Self::spawn(data_dir, extra);
        server.owns_data = false;
        server
    }

    /// Waits (at most 30 s) for the process to end by itself; asserts it exited cleanly.
    pub fn wait_exit(mut self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "the server exited with {status}");
                break;
            }
            assert!(std::time::Instant::now() < deadline, "the server did not stop");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        self.owns_data = false;
    }

    /// Kills the process with SIGKILL, as a crash would.
    pub fn crash(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.owns_data = false;
    }

    fn spawn(data_dir: PathBuf, extra: &[&str]) -> Self {
        let server = Self::spawn_listening(data_dir, extra);
        server.wait_ready();
        server
    }

    /// Starts on `data_dir` and returns as soon as the server listens: its databases may still
    /// be opening (see [`Server::wait_ready`]).
    pub fn start_listening(data_dir: PathBuf, extra: &[&str]) -> Self {
        let mut server = Self::spawn_listening(data_dir, extra);
        server.owns_data = false;
        server
    }

    fn spawn_listening(data_dir: PathBuf, extra: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_epoch"))
            .args(["start", "--listen-addr", "127.0.0.1:0", "--data-dir"])
            .arg(&data_dir)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(if std::env::var_os("EPOCH_TEST_STDERR").is_some() { Stdio::inherit() } else { Stdio::null() })
            .spawn()
            .expect("epoch starts");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let first = lines.next().expect("a first line").expect("readable");
        let url = first.trim().strip_prefix("epoch listening on ").expect("listening line").to_string();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                if line.trim() == "epoch ready" {
                    let _ = tx.send(());
                }
            }
        });
        Self { child, url, data_dir, owns_data: true, ready: std::sync::Mutex::new(rx) }
    }

    /// Waits until every database the server found at start has opened.
    pub fn wait_ready(&self) {
        let ready = self.ready.lock().unwrap();
        ready.recv_timeout(std::time::Duration::from_secs(120)).expect("the server says every database has opened");
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn http(&self) -> reqwest::blocking::Client {
        reqwest::blocking::Client::builder().timeout(std::time::Duration::from_secs(60)).build().unwrap()
    }

    /// A new identity: (identity hex, token).
    pub fn identity(&self) -> (String, String) {
        let v: serde_json::Value =
            self.http().post(format!("{}/v1/identity", self.url)).send().unwrap().json().unwrap();
        (v["identity"].as_str().unwrap().to_string(), v["token"].as_str().unwrap().to_string())
    }

    pub fn publish(&self, token: &str, name: &str, module: &str) -> reqwest::blocking::Response {
        self.http()
            .put(format!("{}/v1/database/{name}", self.url))
            .bearer_auth(token)
            .body(std::fs::read(fixture(module)).unwrap())
            .send()
            .unwrap()
    }

    pub fn call(&self, token: &str, db: &str, reducer: &str, args: &str) -> (u16, String) {
        let r = self
            .http()
            .post(format!("{}/v1/database/{db}/call/{reducer}", self.url))
            .bearer_auth(token)
            .header("Content-Type", "application/json")
            .body(args.to_string())
            .send()
            .unwrap();
        (r.status().as_u16(), r.text().unwrap())
    }

    pub fn sql(&self, token: Option<&str>, db: &str, q: &str) -> (u16, String) {
        let mut req = self.http().post(format!("{}/v1/database/{db}/sql", self.url)).body(q.to_string());
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.send().unwrap();
        (r.status().as_u16(), r.text().unwrap())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if self.owns_data {
            let _ = std::fs::remove_dir_all(&self.data_dir);
        }
    }
}

/// Runs the `epoch` CLI against `server` with client config file `config` (plus `args`);
/// returns (success, stdout, stderr).
pub fn cli(server: &str, config: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_epoch"))
        .args(["--server", server, "--config"])
        .arg(config)
        .args(args)
        .output()
        .expect("the epoch CLI runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(format!("{}/../../tests/fixtures/modules/{name}.wasm", env!("CARGO_MANIFEST_DIR")))
}

pub fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now())
}

/// Latencies of `project_aggregate` calls (the `projections` fixture) on `db` over HTTP, until
/// `stop` or `limit` calls, sorted: the "other reducer calls" of the sync speed tests.
#[allow(dead_code)]
pub fn call_latencies(
    server: &Server,
    token: &str,
    db: &str,
    stop: &std::sync::atomic::AtomicBool,
    limit: usize,
) -> Vec<std::time::Duration> {
    let (http, mut v, mut n) = (server.http(), Vec::new(), 0u64);
    while !stop.load(std::sync::atomic::Ordering::Relaxed) && v.len() < limit {
        n += 1;
        let t = std::time::Instant::now();
        let r = http
            .post(format!("{}/v1/database/{db}/call/project_aggregate", server.url))
            .bearer_auth(token)
            .header("Content-Type", "application/json")
            .body(serde_json::json!(["order", format!("o{n}"), n, "{}"]).to_string())
            .send()
            .unwrap();
        assert!(r.status().is_success());
        v.push(t.elapsed());
    }
    v.sort();
    v
}

/// The `p` quantile (0–1) of sorted durations.
#[allow(dead_code)]
pub fn percentile(sorted: &[std::time::Duration], p: f64) -> std::time::Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

/// Copies a directory tree (files and folders) from `from` to `to`.
pub fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}
