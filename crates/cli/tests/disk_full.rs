//! A real full disk: the data directory is a small tmpfs (the test command runs as root),
//! filled up while writers transfer money. Reducer calls are refused with a clear 503 while the
//! log cannot write; nothing is acknowledged that is not durable and nothing is half written.
//! Once space returns the database resumes by itself. The bank's invariants hold throughout,
//! and again after a SIGKILL: every acknowledged transfer is in the ledger, and money is
//! conserved.

mod common;

use std::io::Write;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::Server;
use serde_json::Value;

const ACCOUNTS: u32 = 20;
const BALANCE: i64 = 1000;

/// A tmpfs mounted for the test's life.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(size: &str) -> Option<Self> {
        let dir = std::env::temp_dir().join(format!("epoch-diskfull-{}-{}", std::process::id(), common::rand_suffix()));
        std::fs::create_dir_all(&dir).ok()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = std::fs::remove_dir(&dir);
            return None;
        }
        Some(Self(dir))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// (sum of balances, ledger rows).
fn invariants(server: &Server, token: &str) -> (i64, u64) {
    let (status, body) = server.sql(Some(token), "bank", "SELECT balance FROM account");
    assert_eq!(status, 200, "{body}");
    let sum = serde_json::from_str::<Value>(&body).unwrap()[0]["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r[0].as_i64().unwrap())
        .sum();
    let (status, body) = server.sql(Some(token), "bank", "SELECT COUNT(*) AS n FROM ledger");
    assert_eq!(status, 200, "{body}");
    (sum, serde_json::from_str::<Value>(&body).unwrap()[0]["rows"][0][0].as_u64().unwrap())
}

#[test]
fn a_full_disk_refuses_calls_clearly_and_resumes_when_space_returns() {
    let Some(fs) = Tmpfs::mount("48m") else {
        assert!(
            std::env::var_os("EPOCH_REQUIRE_MOUNT").is_none(),
            "mounting a tmpfs is required (EPOCH_REQUIRE_MOUNT)"
        );
        eprintln!("skipping: cannot mount a tmpfs (run as root)");
        return;
    };
    let data = fs.0.join("data");
    let server = Server::start_in(data.clone(), &[]);
    let (_, token) = server.identity();
    assert!(server.publish(&token, "bank", "bank").status().is_success());
    assert_eq!(server.call(&token, "bank", "open_accounts", &format!("[0, {ACCOUNTS}, {BALANCE}]")).0, 200);

    let stop = AtomicBool::new(false);
    let acked = AtomicU64::new(0);
    let refused = AtomicU64::new(0);
    let refusal = std::sync::Mutex::new(String::new());
    let filler = fs.0.join("filler");
    std::thread::scope(|s| {
        for w in 0..4u32 {
            let (server, token, stop, acked, refused, refusal) = (&server, &token, &stop, &acked, &refused, &refusal);
            s.spawn(move || {
                let mut i = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    let from = (w * 5 + i) % ACCOUNTS;
                    let to = (from + 1 + i % 7) % ACCOUNTS;
                    i += 1;
                    let (status, body) = server.call(token, "bank", "transfer", &format!("[{from}, {to}, 1]"));
                    match status {
                        200 => {
                            acked.fetch_add(1, Ordering::SeqCst);
                        }
                        503 => {
                            refused.fetch_add(1, Ordering::SeqCst);
                            *refusal.lock().unwrap() = body;
                            std::thread::sleep(Duration::from_millis(20));
                        }
                        // Insufficient funds: a refusal of the bank's own, nothing changed.
                        530 => {}
                        other => panic!("transfer answered {other}: {body}"),
                    }
                }
            });
        }
        std::thread::sleep(Duration::from_millis(500));
        // Fill the file system up.
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![7u8; 256 << 10];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
        // The writers' calls in flight wait for the log (they are not acknowledged); a new call
        // is refused at once, with the reason.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (status, body) = server.call(&token, "bank", "transfer", "[0, 1, 1]");
            match status {
                503 => {
                    refused.fetch_add(1, Ordering::SeqCst);
                    *refusal.lock().unwrap() = body;
                    break;
                }
                200 => {
                    acked.fetch_add(1, Ordering::SeqCst);
                }
                other => panic!("transfer answered {other}: {body}"),
            }
            assert!(Instant::now() < deadline, "no call was refused while the disk was full");
            std::thread::sleep(Duration::from_millis(20));
        }
        let said = refusal.lock().unwrap().clone();
        assert!(said.contains("cannot write") && said.contains("No space left"), "{said}");
        // Space returns: the database resumes by itself.
        drop(f);
        std::fs::remove_file(&filler).unwrap();
        let resumed_from = acked.load(Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(30);
        while acked.load(Ordering::SeqCst) < resumed_from + 50 {
            assert!(Instant::now() < deadline, "writes never resumed once space returned");
            std::thread::sleep(Duration::from_millis(20));
        }
        stop.store(true, Ordering::Relaxed);
    });
    let acked = acked.load(Ordering::SeqCst);
    eprintln!("{acked} transfers acknowledged, {} refused while the disk was full", refused.load(Ordering::SeqCst));
    assert_eq!(invariants(&server, &token), (ACCOUNTS as i64 * BALANCE, acked), "before the crash");
    // What was acknowledged is on disk: after a SIGKILL the same holds.
    server.crash();
    let server = Server::start_in(data, &[]);
    assert_eq!(invariants(&server, &token), (ACCOUNTS as i64 * BALANCE, acked), "after a restart");
    drop(server);
    drop(fs);
}
