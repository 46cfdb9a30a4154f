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

/// A server on a fresh 48 MiB tmpfs with the bank module and its accounts: the file system,
/// the data directory, the server and its owner's token (`None`, skipping, where mounting is
/// not allowed and not required).
fn bank_on_tmpfs() -> Option<(Tmpfs, std::path::PathBuf, Server, String)> {
    let Some(fs) = Tmpfs::mount("48m") else {
        assert!(
            std::env::var_os("EPOCH_REQUIRE_MOUNT").is_none(),
            "mounting a tmpfs is required (EPOCH_REQUIRE_MOUNT)"
        );
        eprintln!("skipping: cannot mount a tmpfs (run as root)");
        return None;
    };
    let data = fs.0.join("data");
    let server = Server::start_in(data.clone(), &[]);
    let (_, token) = server.identity();
    assert!(server.publish(&token, "bank", "bank").status().is_success());
    assert_eq!(server.call(&token, "bank", "open_accounts", &format!("[0, {ACCOUNTS}, {BALANCE}]")).0, 200);
    Some((fs, data, server, token))
}

/// Sets its flag when dropped, on a panic too.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// What the writers of the full-disk test saw.
#[derive(Default)]
struct Tally {
    stop: AtomicBool,
    acked: AtomicU64,
    refused: AtomicU64,
    /// The last refusal's text.
    refusal: std::sync::Mutex<String>,
}

impl Tally {
    /// Counts one transfer's answer: 200 acknowledged, 503 refused (the disk is full), 530 the
    /// bank's own refusal (insufficient funds: nothing changed). Returns whether it was refused.
    fn count(&self, status: u16, body: String) -> bool {
        match status {
            200 => {
                self.acked.fetch_add(1, Ordering::SeqCst);
                false
            }
            503 => {
                self.refused.fetch_add(1, Ordering::SeqCst);
                *self.refusal.lock().unwrap() = body;
                true
            }
            530 => false,
            other => panic!("transfer answered {other}: {body}"),
        }
    }
}

/// Transfers between accounts (writer `w`'s pattern) until the tally says stop.
fn transfer_until_stopped(server: &Server, token: &str, tally: &Tally, w: u32) {
    let mut i = 0u32;
    while !tally.stop.load(Ordering::Relaxed) {
        let from = (w * 5 + i) % ACCOUNTS;
        let to = (from + 1 + i % 7) % ACCOUNTS;
        i += 1;
        let (status, body) = server.call(token, "bank", "transfer", &format!("[{from}, {to}, 1]"));
        if tally.count(status, body) {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Fills the file system up (returning the filler, held open), then probes until a call is
/// refused at once. The writers' calls in flight wait for the log, unacknowledged, and so
/// would a probe that passed the check just before the log failed: each probe is a transfer
/// the bank refuses (more than anyone holds), which changes nothing whatever happens to it,
/// so one caught waiting is given up after a short timeout and the next one is sent.
fn fill_until_refused(server: &Server, token: &str, tally: &Tally, filler: &std::path::Path) -> std::fs::File {
    let mut f = std::fs::File::create(filler).unwrap();
    let chunk = vec![7u8; 256 << 10];
    while f.write_all(&chunk).is_ok() {}
    let _ = f.sync_all();
    let probe = reqwest::blocking::Client::builder().timeout(Duration::from_secs(2)).build().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answer = probe
            .post(format!("{}/v1/database/bank/call/transfer", server.url))
            .bearer_auth(token)
            .header("Content-Type", "application/json")
            .body("[0, 1, 1000000000000]")
            .send()
            .and_then(|r| Ok((r.status().as_u16(), r.text()?)));
        match answer {
            Ok((503, body)) => {
                tally.count(503, body);
                return f;
            }
            Ok((530, _)) | Err(_) => {}
            Ok((status, body)) => panic!("a transfer of more than anyone holds answered {status}: {body}"),
        }
        assert!(Instant::now() < deadline, "no call was refused while the disk was full");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `/v1/metrics` now, with a short timeout: (status, body) or why it did not answer.
fn metrics_now(server: &Server) -> Result<(u16, String), String> {
    let quick = reqwest::blocking::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    quick
        .get(format!("{}/v1/metrics", server.url))
        .send()
        .and_then(|r| Ok((r.status().as_u16(), r.text()?)))
        .map_err(|e| e.to_string())
}

#[test]
fn a_full_disk_refuses_calls_clearly_and_resumes_when_space_returns() {
    let Some((fs, data, server, token)) = bank_on_tmpfs() else { return };
    let tally = Tally::default();
    let filler = fs.0.join("filler");
    let metrics_while_full = std::thread::scope(|s| {
        for w in 0..4u32 {
            let (server, token, tally) = (&server, &token, &tally);
            s.spawn(move || transfer_until_stopped(server, token, tally, w));
        }
        // The writers stop however this scope's own part ends: a failed assertion below must
        // fail the test, not leave the writers running and the scope waiting for them.
        let _stop_writers = StopOnDrop(&tally.stop);
        std::thread::sleep(Duration::from_millis(500));
        let f = fill_until_refused(&server, &token, &tally, &filler);
        let said = tally.refusal.lock().unwrap().clone();
        assert!(said.contains("cannot write") && said.contains("No space left"), "{said}");
        // Monitoring answers while the disk is full (it does not wait for the log); checked
        // once the writers have stopped, so a failure cannot leave them running.
        let metrics = metrics_now(&server);
        // Space returns: the database resumes by itself.
        drop(f);
        std::fs::remove_file(&filler).unwrap();
        let resumed_from = tally.acked.load(Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(30);
        while tally.acked.load(Ordering::SeqCst) < resumed_from + 50 {
            assert!(Instant::now() < deadline, "writes never resumed once space returned");
            std::thread::sleep(Duration::from_millis(20));
        }
        tally.stop.store(true, Ordering::Relaxed);
        metrics
    });
    match metrics_while_full {
        Ok((status, text)) => {
            assert_eq!(status, 200, "{text}");
            assert!(text.contains("epoch_table_rows{database="), "table sizes are there: {text}");
        }
        Err(e) => panic!("/v1/metrics did not answer while the disk was full: {e}"),
    }
    let acked = tally.acked.load(Ordering::SeqCst);
    eprintln!(
        "{acked} transfers acknowledged, {} refused while the disk was full",
        tally.refused.load(Ordering::SeqCst)
    );
    assert_eq!(invariants(&server, &token), (ACCOUNTS as i64 * BALANCE, acked), "before the crash");
    // What was acknowledged is on disk: after a SIGKILL the same holds.
    server.crash();
    let server = Server::start_in(data, &[]);
    assert_eq!(invariants(&server, &token), (ACCOUNTS as i64 * BALANCE, acked), "after a restart");
    drop(server);
    drop(fs);
}

/// SIGTERM while the disk is full and a call waits for the log: the server still stops (after
/// its grace period), and after space returns every acknowledged transfer is there.
#[test]
fn a_server_stops_on_sigterm_while_its_disk_is_full() {
    let Some((fs, data, server, token)) = bank_on_tmpfs() else { return };
    let mut acked = 0u64;
    for i in 0..20 {
        assert_eq!(
            server.call(&token, "bank", "transfer", &format!("[{}, {}, 1]", i % ACCOUNTS, (i + 1) % ACCOUNTS)).0,
            200
        );
        acked += 1;
    }
    let filler = fs.0.join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    // Every last byte: the next write of the log is refused.
    for size in [256 << 10, 4 << 10, 1] {
        let chunk = vec![7u8; size];
        while f.write_all(&chunk).is_ok() {}
    }
    let _ = f.sync_all();
    // A writer goes on until its call waits for the log (a page of the segment may still have
    // room; the first write that needs a new one is refused and retried).
    let writer_acked = std::sync::Arc::new(AtomicU64::new(0));
    let (url, writer_token, counter) = (server.url.clone(), token.clone(), writer_acked.clone());
    let writer = std::thread::spawn(move || {
        let http = reqwest::blocking::Client::new();
        for i in 0u32.. {
            let r = http
                .post(format!("{url}/v1/database/bank/call/transfer"))
                .bearer_auth(&writer_token)
                .header("Content-Type", "application/json")
                .body(format!("[{}, {}, 1]", i % ACCOUNTS, (i + 3) % ACCOUNTS))
                .send();
            match r.map(|r| r.status().as_u16()) {
                Ok(200) => counter.fetch_add(1, Ordering::SeqCst),
                other => {
                    eprintln!("writer stopped: {other:?}");
                    return;
                }
            };
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let before = writer_acked.load(Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(1000));
        if writer_acked.load(Ordering::SeqCst) == before {
            break; // its call waits for the log
        }
        assert!(Instant::now() < deadline, "the disk never filled");
    }
    let (status, body) = server.call(&token, "bank", "transfer", "[2, 3, 1]");
    assert_eq!(status, 503, "the disk is full: {body}");
    let started = Instant::now();
    assert!(Command::new("kill").args(["-TERM", &server.pid().to_string()]).status().unwrap().success());
    server.wait_exit();
    eprintln!("stopped {:?} after SIGTERM with a full disk", started.elapsed());
    writer.join().unwrap();
    acked += writer_acked.load(Ordering::SeqCst);
    drop(f);
    std::fs::remove_file(&filler).unwrap();
    let server = Server::start_in(data, &[]);
    assert_eq!(
        invariants(&server, &token),
        (ACCOUNTS as i64 * BALANCE, acked),
        "every acknowledged transfer, no other"
    );
    drop(server);
    drop(fs);
}
