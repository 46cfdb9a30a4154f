//! Continuous archiving to moto's S3 and point-in-time restore, as an operator runs them: a
//! server archives while a writer calls reducers over HTTP; a second server restores the
//! database at three moments (by time and by offset) and at the latest point, through the
//! CLI, and every table of each restored database equals the original at that point.

mod common;

use std::time::{Duration, Instant};

use common::services::Moto;
use common::Server;
use serde_json::Value;

const KEY: &str = "archive-admin-key-0001";

/// Every table of the bank module, each sorted, as JSON text rows.
fn tables(server: &Server, token: &str, db: &str) -> Vec<Vec<String>> {
    ["account", "ledger"]
        .iter()
        .map(|t| {
            let (status, body) = server.sql(Some(token), db, &format!("SELECT * FROM {t}"));
            assert_eq!(status, 200, "{body}");
            let v: Value = serde_json::from_str(&body).unwrap();
            let mut rows: Vec<String> = v[0]["rows"].as_array().unwrap().iter().map(|r| r.to_string()).collect();
            rows.sort();
            rows
        })
        .collect()
}

fn archive_status(server: &Server, token: &str, db: &str) -> Value {
    let r = server
        .http()
        .get(format!("{}/v1/database/{db}/archive", server.url))
        .header("X-Admin-API-Key", KEY)
        .bearer_auth(token)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().unwrap()
}

/// `epoch restore` against `server`, as the CLI user `config` (logged in there).
fn cli_restore(server: &Server, config: &std::path::Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_epoch"))
        .args(["--server", &server.url, "--config"])
        .arg(config)
        .args(["--admin-api-key", KEY, "restore"])
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn a_database_archived_while_written_restores_to_any_moment() {
    let Some(moto) = Moto::require() else { return };
    let http = reqwest::blocking::Client::new();
    assert!(http.put(format!("{}/backups", moto.url)).send().unwrap().status().is_success());
    // moto takes any credentials; object_store reads them from the environment.
    std::env::set_var("AWS_ACCESS_KEY_ID", "test");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "test");
    let dir = std::env::temp_dir().join(format!("epoch-archive-{}-{}", std::process::id(), common::rand_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    let key_file = dir.join("admin.key");
    std::fs::write(&key_file, KEY).unwrap();
    let archive_flags = [
        "--admin-api-key-file",
        key_file.to_str().unwrap(),
        "--archive-url",
        "s3://backups/epoch",
        "--archive-endpoint",
        &moto.url,
        "--archive-max-lag-seconds",
        "1",
        // Snapshots often, so restores start from one and the archive holds several.
        "--snapshot-every",
        "40",
    ];
    let original = Server::start_in(dir.join("a"), &archive_flags);
    let (_, token) = original.identity();
    assert!(original.publish(&token, "bank", "bank").status().is_success());
    assert_eq!(original.call(&token, "bank", "open_accounts", "[0, 10, 1000]").0, 200);

    // The writer: transfers one after another; at three moments it pauses to note the time, the
    // offset and every table.
    let mut moments = Vec::new();
    for i in 0..240u32 {
        let (status, body) = original.call(&token, "bank", "transfer", &format!("[{}, {}, 1]", i % 10, (i + 3) % 10));
        assert_eq!(status, 200, "{body}");
        if [50, 130, 200].contains(&i) {
            std::thread::sleep(Duration::from_millis(5));
            let at = humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string();
            let offset = archive_status(&original, &token, "bank")["lastOffset"].as_u64().unwrap();
            moments.push((at, offset, tables(&original, &token, "bank")));
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let last = archive_status(&original, &token, "bank")["lastOffset"].as_u64().unwrap();
    let final_tables = tables(&original, &token, "bank");
    // Within the lag bound everything reaches the archive.
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        let s = archive_status(&original, &token, "bank");
        if s["shippedEnd"].as_u64().unwrap() > last {
            break s;
        }
        assert!(Instant::now() < deadline, "the archive never caught up: {s}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(status["error"], Value::Null, "{status}");
    assert!(status["snapshotsShipped"].as_u64().unwrap() >= 2, "{status}");
    let from = status["url"].as_str().unwrap().to_string();
    assert!(from.starts_with("s3://backups/epoch/"), "{from}");
    // Progress and lag are in /metrics too.
    let metrics = http.get(format!("{}/metrics", original.url)).send().unwrap().text().unwrap();
    let db_hex = from.rsplit('/').next().unwrap();
    let line = metrics.lines().find(|l| l.starts_with(&format!("epoch_archive_shipped_end{{database=\"{db_hex}\"}}")));
    let shipped: u64 = line.expect("an archive line in /metrics").rsplit(' ').next().unwrap().parse().unwrap();
    assert!(shipped > last, "{line:?}");
    assert!(metrics.contains("epoch_archive_lag_seconds{database="), "{metrics}");

    // Another server restores from the archive, through the CLI.
    let other = Server::start_in(
        dir.join("b"),
        &["--admin-api-key-file", key_file.to_str().unwrap(), "--archive-endpoint", &moto.url],
    );
    let config = dir.join("cli.json");
    let login = std::process::Command::new(env!("CARGO_BIN_EXE_epoch"))
        .args(["--server", &other.url, "--config"])
        .arg(&config)
        .arg("login")
        .output()
        .unwrap();
    assert!(login.status.success(), "{}", String::from_utf8_lossy(&login.stderr));
    // The CLI keeps its token per server; the restored databases are its identity's.
    let saved: Value = serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
    let token_of_cli = saved["tokens"][&other.url].as_str().expect("the CLI saved its token").to_string();
    for (k, (at, offset, expected)) in moments.iter().enumerate() {
        let by_time = format!("at{k}");
        let out = cli_restore(&other, &config, &["--from", &from, "--at", at, "--as", &by_time]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(said.contains(&format!("up to transaction {offset}")), "{said}");
        assert_eq!(&tables(&other, &token_of_cli, &by_time), expected, "restored at {at}");
        let by_offset = format!("offset{k}");
        let out = cli_restore(&other, &config, &["--from", &from, "--offset", &offset.to_string(), "--as", &by_offset]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(&tables(&other, &token_of_cli, &by_offset), expected, "restored at offset {offset}");
    }
    let out = cli_restore(&other, &config, &["--from", &from, "--as", "latest"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(tables(&other, &token_of_cli, "latest"), final_tables, "nothing acknowledged is missing");
    // The restored database goes on working.
    assert_eq!(other.call(&token_of_cli, "latest", "transfer", "[0, 1, 1]").0, 200);

    // Refusals: a taken name, a point past the end, no admin key.
    let out = cli_restore(&other, &config, &["--from", &from, "--as", "latest"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("already exists"));
    let out = cli_restore(&other, &config, &["--from", &from, "--offset", &(last + 1000).to_string(), "--as", "past"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("past the archive"));
    let r = other
        .http()
        .post(format!("{}/v1/database/nokey/restore", other.url))
        .bearer_auth(&token_of_cli)
        .body(format!("{{\"from\": \"{from}\"}}"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);
    drop(original);
    drop(other);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `epoch backup` of a live database while a writer runs, checked by `epoch backup verify`
/// (which also finds a damaged frame), and restored: the restored accounts are a prefix of the
/// writes (a consistent point) that holds every write acknowledged before the backup began.
#[test]
fn a_backup_of_a_live_database_is_consistent_and_verifiable() {
    let dir = std::env::temp_dir().join(format!("epoch-backup-{}-{}", std::process::id(), common::rand_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    let key_file = dir.join("admin.key");
    std::fs::write(&key_file, KEY).unwrap();
    let server = Server::start_in(
        dir.join("data"),
        &["--admin-api-key-file", key_file.to_str().unwrap(), "--snapshot-every", "25"],
    );
    let config = dir.join("cli.json");
    let epoch = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_epoch"))
            .args(["--server", &server.url, "--config"])
            .arg(&config)
            .args(["--admin-api-key", KEY])
            .args(args)
            .output()
            .unwrap()
    };
    let out = epoch(&["publish", "bank", "--wasm", common::fixture("bank").to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let saved: Value = serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
    let token = saved["tokens"][&server.url].as_str().unwrap().to_string();

    // A writer opens accounts 0, 1, 2, … one call each, until told to stop.
    let stop = std::sync::atomic::AtomicBool::new(false);
    let acked = std::sync::atomic::AtomicU32::new(0);
    let backup_url = format!("file://{}", dir.join("backup").display());
    let (before, after) = std::thread::scope(|s| {
        s.spawn(|| {
            let mut i = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let (status, body) = server.call(&token, "bank", "open_accounts", &format!("[{i}, 1, {i}]"));
                assert_eq!(status, 200, "{body}");
                i += 1;
                acked.store(i, std::sync::atomic::Ordering::SeqCst);
            }
        });
        while acked.load(std::sync::atomic::Ordering::SeqCst) < 60 {
            std::thread::sleep(Duration::from_millis(5));
        }
        let before = acked.load(std::sync::atomic::Ordering::SeqCst);
        let out = epoch(&["backup", "bank", "--to", &backup_url]);
        let after = acked.load(std::sync::atomic::Ordering::SeqCst);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        std::thread::sleep(Duration::from_millis(100));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        (before, after)
    });

    let out = epoch(&["backup", "verify", &backup_url]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said}{}", String::from_utf8_lossy(&out.stderr));
    assert!(said.starts_with("OK: ") && said.contains("account "), "{said}");

    let out = epoch(&["restore", "--from", &backup_url, "--as", "copy"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (status, body) = server.sql(Some(&token), "copy", "SELECT id FROM account");
    assert_eq!(status, 200, "{body}");
    let mut ids: Vec<u64> = serde_json::from_str::<Value>(&body).unwrap()[0]["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r[0].as_u64().unwrap())
        .collect();
    ids.sort();
    let n = ids.len() as u64;
    assert_eq!(ids, (0..n).collect::<Vec<_>>(), "a consistent point: every account up to the last one");
    assert!(n >= before as u64 && n <= after as u64 + 1, "{before} <= {n} <= {after} + 1");

    // A flipped byte in the middle of a backed-up segment is found.
    let log_dir = dir.join("backup/log");
    let mut segments: Vec<_> = std::fs::read_dir(&log_dir).unwrap().map(|e| e.unwrap().path()).collect();
    segments.sort();
    let victim =
        segments.iter().find(|p| std::fs::metadata(p).unwrap().len() > 200).expect("a segment with records").clone();
    let mut bytes = std::fs::read(&victim).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&victim, &bytes).unwrap();
    let out = epoch(&["backup", "verify", &backup_url]);
    assert!(!out.status.success(), "a damaged backup verifies: {}", String::from_utf8_lossy(&out.stdout));
    assert!(String::from_utf8_lossy(&out.stderr).contains("corrupt"), "{}", String::from_utf8_lossy(&out.stderr));
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `epoch export` writes every table as JSON lines and CSV; `epoch import` puts JSON lines
/// into another database's tables in one transaction, all or nothing.
#[test]
fn export_and_import_move_tables_by_hand() {
    let server = Server::start(&[]);
    let dir = std::env::temp_dir().join(format!("epoch-export-{}-{}", std::process::id(), common::rand_suffix()));
    let config = dir.join("cli.json");
    let epoch = |args: &[&str]| common::cli(&server.url, &config, args);
    let bank = common::fixture("bank");
    for db in ["bank", "bank2"] {
        let (ok, _, err) = epoch(&["publish", db, "--wasm", bank.to_str().unwrap()]);
        assert!(ok, "{err}");
    }
    let saved: Value = serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
    let token = saved["tokens"][&server.url].as_str().unwrap().to_string();
    assert_eq!(server.call(&token, "bank", "open_accounts", "[0, 5, 100]").0, 200);
    for i in 0..4 {
        assert_eq!(server.call(&token, "bank", "transfer", &format!("[{i}, {}, 7]", i + 1)).0, 200);
    }
    let out_dir = dir.join("out");
    let (ok, _, err) = epoch(&["export", "bank", "--out", out_dir.to_str().unwrap()]);
    assert!(ok, "{err}");
    let (ok, csv, err) = epoch(&["export", "bank", "--table", "account", "--format", "csv"]);
    assert!(ok, "{err}");
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("id,balance,branch"), "{csv}");
    assert_eq!(lines.count(), 5, "{csv}");
    for table in ["account", "ledger"] {
        let file = out_dir.join(format!("{table}.jsonl"));
        let (ok, said, err) = epoch(&["import", "bank2", "--table", table, file.to_str().unwrap()]);
        assert!(ok, "{err}");
        assert!(said.contains("Imported"), "{said}");
    }
    assert_eq!(tables(&server, &token, "bank2"), tables(&server, &token, "bank"), "every table came across");
    // A bad line fails the whole import, naming it; nothing of the file is kept.
    let bad = dir.join("bad.jsonl");
    std::fs::write(&bad, "[100, 1, 1]\n[101, \"not a number\", 1]\n").unwrap();
    let (ok, _, err) = epoch(&["import", "bank2", "--table", "account", bad.to_str().unwrap()]);
    assert!(!ok && err.contains("line 2"), "{err}");
    assert_eq!(tables(&server, &token, "bank2"), tables(&server, &token, "bank"), "nothing of a failed import is kept");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Where each database is archived is its owner's choice, through the API and the CLI: the
/// server's `--archive-url` by default, a folder of its own, or not at all; the choice survives
/// a restart, and the system database is archived beside the databases.
#[test]
fn each_database_is_archived_where_its_owner_says() {
    let dir = std::env::temp_dir().join(format!("epoch-archcfg-{}-{}", std::process::id(), common::rand_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    let key_file = dir.join("admin.key");
    std::fs::write(&key_file, KEY).unwrap();
    let server_archive = dir.join("server-archive");
    let own_folder = format!("file://{}", dir.join("b-own").display());
    let server_args = [
        "--admin-api-key-file".to_string(),
        key_file.display().to_string(),
        "--archive-url".to_string(),
        format!("file://{}", server_archive.display()),
        "--archive-max-lag-seconds".to_string(),
        "0.5".to_string(),
    ];
    let server_args: Vec<&str> = server_args.iter().map(String::as_str).collect();
    let mut server = Server::start_in(dir.join("data"), &server_args);
    let config = dir.join("cli.json");
    let epoch = |server: &Server, args: &[&str]| {
        let mut all = vec!["--admin-api-key", KEY];
        all.extend_from_slice(args);
        common::cli(&server.url, &config, &all)
    };
    let json = |out: (bool, String, String)| -> Value {
        assert!(out.0, "{}{}", out.1, out.2);
        serde_json::from_str(&out.1).unwrap_or_else(|e| panic!("{e}: {}", out.1))
    };
    for db in ["a", "b"] {
        let (ok, _, err) = epoch(&server, &["publish", db, "--wasm", common::fixture("bank").to_str().unwrap()]);
        assert!(ok, "{err}");
    }
    let saved: Value = serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
    let token = saved["tokens"][&server.url].as_str().unwrap().to_string();
    let identity = |server: &Server, db: &str| {
        let r = server.http().get(format!("{}/v1/database/{db}/identity", server.url)).send().unwrap();
        r.text().unwrap().trim_matches('"').to_string()
    };
    let (a_id, b_id) = (identity(&server, "a"), identity(&server, "b"));
    for db in ["a", "b"] {
        assert_eq!(server.call(&token, db, "open_accounts", "[0, 4, 100]").0, 200);
    }

    // By default: the server's URL, each database in the folder of its identity.
    let a = json(epoch(&server, &["archive", "a"]));
    assert_eq!(a["source"], "server", "{a}");
    assert_eq!(a["url"], format!("file://{}/{a_id}", server_archive.display()), "{a}");

    // Refusals, each with its reason and nothing changed.
    let put = |body: &str, key: &str, token: &str| {
        let r = server
            .http()
            .put(format!("{}/v1/database/b/archive", server.url))
            .header("X-Admin-API-Key", key)
            .bearer_auth(token)
            .body(body.to_string())
            .send()
            .unwrap();
        (r.status().as_u16(), r.text().unwrap())
    };
    let good = format!(r#"{{"url": "{own_folder}"}}"#);
    assert_eq!(put(&good, "wrong-key", &token).0, 401);
    let stranger = server.identity();
    assert_eq!(put(&good, KEY, &stranger.1).0, 403);
    let (status, body) = put(r#"{"url": "file://relative/path"}"#, KEY, &token);
    assert_eq!(status, 400, "{body}");
    let (status, body) = put(r#"{"url": "ftp://x/y"}"#, KEY, &token);
    assert!(status == 400 && body.contains("unsupported archive URL"), "{status} {body}");
    let (status, body) = put(&format!(r#"{{"url": "{own_folder}", "maxLagSeconds": 0}}"#), KEY, &token);
    assert!(status == 400 && body.contains("maxLagSeconds"), "{status} {body}");
    let (status, body) = put(r#"{"url": "s3://b", "bogus": 1}"#, KEY, &token);
    assert!(status == 400 && body.contains("bogus"), "{status} {body}");
    let data_dir = format!("file://{}", dir.join("data").join("x").display());
    let (status, body) = put(&format!(r#"{{"url": "{data_dir}"}}"#), KEY, &token);
    assert_eq!(status, 400, "the server's own data is no archive: {body}");
    assert_eq!(json(epoch(&server, &["archive", "b"]))["source"], "server");

    // Database b gets a folder of its own, a (through the CLI) none at all.
    let b = json(epoch(&server, &["archive", "b", "--to", &own_folder, "--max-lag-seconds", "0.5"]));
    assert_eq!((b["source"].as_str(), b["url"].as_str()), (Some("database"), Some(own_folder.as_str())), "{b}");
    let a = json(epoch(&server, &["archive", "a", "--off"]));
    assert_eq!((a["source"].as_str(), a["archived"].as_bool()), (Some("database"), Some(false)), "{a}");
    let segments = |folder: &std::path::Path| std::fs::read_dir(folder.join("log")).map_or(0, |d| d.count());
    let a_folder = server_archive.join(&a_id);
    // Whatever a's archiver was shipping when it stopped has settled after a pass.
    std::thread::sleep(Duration::from_secs(1));
    let a_segments = segments(&a_folder);

    for i in 0..3 {
        for db in ["a", "b"] {
            assert_eq!(server.call(&token, db, "transfer", &format!("[{i}, {}, 5]", i + 1)).0, 200);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let b = json(epoch(&server, &["archive", "b"]));
        if b["shippedEnd"].as_u64().is_some() && b["shippedEnd"].as_u64() == b["lastOffset"].as_u64().map(|o| o + 1) {
            break;
        }
        assert!(Instant::now() < deadline, "b never reached its own folder: {b}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // Two lag bounds later nothing of a's new writes is in the server's archive.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(segments(&a_folder), a_segments, "a database switched off is not archived");

    // The choice survives a restart.
    drop(server);
    server = Server::start_in(dir.join("data"), &server_args);
    // The CLI keeps tokens per server URL, and the port is new: the owner's token goes with it.
    let mut saved: Value = serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
    saved["tokens"][&server.url] = Value::String(token.clone());
    std::fs::write(&config, saved.to_string()).unwrap();
    let b = json(epoch(&server, &["archive", "b"]));
    assert_eq!((b["source"].as_str(), b["url"].as_str()), (Some("database"), Some(own_folder.as_str())), "{b}");
    assert_eq!(json(epoch(&server, &["archive", "a"]))["archived"], false);

    // b's own folder restores to b exactly.
    let (ok, _, err) = epoch(&server, &["restore", "--from", &own_folder, "--as", "b2"]);
    assert!(ok, "{err}");
    assert_eq!(tables(&server, &token, "b2"), tables(&server, &token, "b"));

    // The system database is archived under the server's URL, and verifies: both databases
    // and b's archive setting are in it.
    let system = format!("file://{}/system", server_archive.display());
    let (ok, said, err) = epoch(&server, &["backup", "verify", &system]);
    assert!(ok, "{said}{err}");
    let count = |table: &str| -> u64 {
        let at = said.find(&format!("{table} ")).unwrap_or_else(|| panic!("{table} in {said}")) + table.len() + 1;
        said[at..].split(|c: char| !c.is_ascii_digit()).next().unwrap().parse().unwrap()
    };
    // (b2's row may still be on its way: the system database has the same lag bound.)
    assert!(count("st_database") >= 2 && count("st_archive_config") == 2, "{said}");
    // It is no database to restore.
    let (ok, _, err) = epoch(&server, &["restore", "--from", &system, "--as", "sys"]);
    assert!(!ok && err.contains("module.wasm"), "{err}");

    // Back to the server's default.
    let b = json(epoch(&server, &["archive", "b", "--server-default"]));
    assert_eq!(b["source"], "server", "{b}");
    assert_eq!(b["url"], format!("file://{}/{b_id}", server_archive.display()), "{b}");
    let metrics = server.http().get(format!("{}/v1/metrics", server.url)).send().unwrap().text().unwrap();
    assert!(metrics.contains(r#"database="system""#), "{metrics}");
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// CSV goes both ways: every table of the chat module (identities, timestamps, optional
/// strings, text with commas, quotes and line breaks) exported as CSV and imported into
/// another database equals the original; a bad cell fails the whole file, naming line and
/// column.
#[test]
fn csv_export_imports_back_exactly() {
    let server = Server::start(&[]);
    let dir = std::env::temp_dir().join(format!("epoch-csv-{}-{}", std::process::id(), common::rand_suffix()));
    let config = dir.join("cli.json");
    let epoch = |args: &[&str]| common::cli(&server.url, &config, args);
    for db in ["chat", "chat2"] {
        let (ok, _, err) = epoch(&["publish", db, "--wasm", common::fixture("chat").to_str().unwrap()]);
        assert!(ok, "{err}");
    }
    let saved: Value = serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
    let token = saved["tokens"][&server.url].as_str().unwrap().to_string();
    let (_, other) = server.identity();
    for (who, handle, post) in
        [(&token, r#"Ann, "the" first"#, "line one\nline, two \"quoted\""), (&other, "bob", "plain")]
    {
        assert_eq!(server.call(who, "chat", "set_handle", &serde_json::to_string(&[handle]).unwrap()).0, 200);
        assert_eq!(server.call(who, "chat", "send_post", &serde_json::to_string(&[post]).unwrap()).0, 200);
    }
    let rows = |db: &str, table: &str| {
        let (status, body) = server.sql(Some(&token), db, &format!("SELECT * FROM {table}"));
        assert_eq!(status, 200, "{body}");
        let mut rows: Vec<String> = serde_json::from_str::<Value>(&body).unwrap()[0]["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.to_string())
            .collect();
        rows.sort();
        rows
    };
    let out = dir.join("out");
    let (ok, _, err) = epoch(&["export", "chat", "--format", "csv", "--out", out.to_str().unwrap()]);
    assert!(ok, "{err}");
    for table in ["member", "post", "audit"] {
        assert!(!rows("chat", table).is_empty(), "{table} has rows to move");
        let file = out.join(format!("{table}.csv"));
        let (ok, said, err) = epoch(&["import", "chat2", "--table", table, file.to_str().unwrap()]);
        assert!(ok && said.contains("Imported"), "{table}: {said}{err}");
        assert_eq!(rows("chat2", table), rows("chat", table), "{table} came across exactly");
    }
    // A cell that is not a value of its column's type fails the file; nothing is kept.
    let bad = dir.join("bad.csv");
    std::fs::write(&bad, "id,author,at,body\n99,\"[\"\"0x01\"\"]\",x,hello\n").unwrap();
    let before = rows("chat2", "post");
    let (ok, _, err) = epoch(&["import", "chat2", "--table", "post", bad.to_str().unwrap()]);
    assert!(!ok && err.contains("line 2"), "{err}");
    let bad_header = dir.join("header.csv");
    std::fs::write(&bad_header, "id,author,at,body,extra\n").unwrap();
    let (ok, _, err) = epoch(&["import", "chat2", "--table", "post", bad_header.to_str().unwrap()]);
    assert!(!ok && err.contains("extra"), "{err}");
    assert_eq!(rows("chat2", "post"), before, "nothing of a failed import is kept");
    let _ = std::fs::remove_dir_all(&dir);
}
