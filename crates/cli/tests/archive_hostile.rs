//! Archives and backup folders written by someone hostile, driven through the real server and
//! CLI: links planted in a backup target or an archive, a FIFO where the module should be,
//! crafted snapshots and log records (with valid CRC32C checksums: anyone can compute them),
//! and database names no other route takes. Each is refused with its reason, and nothing of
//! another database is read, written or changed.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{copy_dir, Server};
use epoch_commitlog::{PackedRows, Snapshot, TableChange, TxRecord};
use serde_json::Value;

const KEY: &str = "hostile-archive-admin-key-01";

/// A scratch folder with the server's admin key file in it.
fn scratch(tag: &str) -> (PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!("epoch-{tag}-{}-{}", std::process::id(), common::rand_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    let key_file = dir.join("admin.key");
    std::fs::write(&key_file, KEY).unwrap();
    (dir, key_file)
}

/// The CLI, as the user whose config is `config`, with the server's admin key.
fn epoch(server: &Server, config: &Path, args: &[&str]) -> (bool, String, String) {
    let mut all = vec!["--admin-api-key", KEY];
    all.extend_from_slice(args);
    common::cli(&server.url, config, &all)
}

fn identity_of(server: &Server, db: &str) -> String {
    let r = server.http().get(format!("{}/v1/database/{db}/identity", server.url)).send().unwrap();
    r.text().unwrap().trim_matches('"').to_string()
}

/// Every account row of `db`, sorted, as JSON text.
fn accounts(server: &Server, token: &str, db: &str) -> Vec<String> {
    let (status, body) = server.sql(Some(token), db, "SELECT * FROM account");
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let mut rows: Vec<String> = v[0]["rows"].as_array().unwrap().iter().map(|r| r.to_string()).collect();
    rows.sort();
    rows
}

/// Every file under `dir` with its bytes (links not followed).
fn files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        if meta.is_dir() {
            out.extend(files(&path));
        } else {
            out.insert(path.clone(), std::fs::read(&path).unwrap());
        }
    }
    out
}

/// `POST /v1/database/:name/restore` from `from`, as `token`; waits at most two minutes (a
/// restore that hangs fails the test instead of hanging it).
fn restore_http(server: &Server, token: &str, name: &str, from: &str) -> (u16, String) {
    let r = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap()
        .post(format!("{}/v1/database/{name}/restore", server.url))
        .header("X-Admin-API-Key", KEY)
        .bearer_auth(token)
        .json(&serde_json::json!({ "from": from }))
        .send()
        .expect("the restore answers");
    (r.status().as_u16(), r.text().unwrap())
}

/// A server with a victim database (owned by one identity, 5 accounts, one snapshot taken by
/// its owner's own backup) and the CLI user (the attacker) owning database `mine`.
struct Scene {
    dir: PathBuf,
    key_file: PathBuf,
    server: Server,
    config: PathBuf,
    victim_token: String,
    victim_dir: PathBuf,
}

fn scene(tag: &str) -> Scene {
    let (dir, key_file) = scratch(tag);
    let server = Server::start_in(dir.join("data"), &["--admin-api-key-file", key_file.to_str().unwrap()]);
    let (_, victim_token) = server.identity();
    assert!(server.publish(&victim_token, "victim", "bank").status().is_success());
    assert_eq!(server.call(&victim_token, "victim", "open_accounts", "[0, 5, 100]").0, 200);
    // The victim's owner backs it up once: its directory then holds a snapshot.
    let r = server
        .http()
        .post(format!("{}/v1/database/victim/backup", server.url))
        .header("X-Admin-API-Key", KEY)
        .bearer_auth(&victim_token)
        .json(&serde_json::json!({"to": format!("file://{}", dir.join("victim-backup").display())}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().unwrap());
    let victim_dir = dir.join("data/databases").join(identity_of(&server, "victim"));
    assert!(victim_dir.join("snapshots").is_dir(), "{}", victim_dir.display());
    let config = dir.join("cli.json");
    let (ok, _, err) =
        epoch(&server, &config, &["publish", "mine", "--wasm", common::fixture("bank").to_str().unwrap()]);
    assert!(ok, "{err}");
    let attacker = cli_token(&server, &config);
    // Further along than the victim, so its snapshot would be the newest in the victim's folder.
    for i in 0..3 {
        assert_eq!(server.call(&attacker, "mine", "open_accounts", &format!("[{}, 3, 7]", 100 + 3 * i)).0, 200);
    }
    Scene { dir, key_file, server, config, victim_token, victim_dir }
}

fn cli_token(server: &Server, config: &Path) -> String {
    let saved: Value = serde_json::from_slice(&std::fs::read(config).unwrap()).unwrap();
    saved["tokens"][&server.url].as_str().unwrap().to_string()
}

/// A backup into a folder whose `snapshots` entry links into another database's directory
/// is refused, naming the link; the victim's files are untouched and, after a restart, it
/// holds its own rows only.
#[test]
fn a_backup_never_writes_through_a_link() {
    let s = scene("backup-link");
    let before = accounts(&s.server, &s.victim_token, "victim");
    let victim_files = files(&s.victim_dir);
    let evil = s.dir.join("evil");
    std::fs::create_dir_all(&evil).unwrap();
    std::os::unix::fs::symlink(s.victim_dir.join("snapshots"), evil.join("snapshots")).unwrap();
    let to = format!("file://{}", evil.display());
    let (ok, said, err) = epoch(&s.server, &s.config, &["backup", "mine", "--to", &to]);
    assert!(!ok, "a backup through a link succeeded: {said}");
    let link = evil.join("snapshots").display().to_string();
    assert!(err.contains("symbolic link") && err.contains(&link), "{err}");
    // Over HTTP: the request's fault, not the store's.
    let r = s
        .server
        .http()
        .post(format!("{}/v1/database/mine/backup", s.server.url))
        .header("X-Admin-API-Key", KEY)
        .bearer_auth(cli_token(&s.server, &s.config))
        .json(&serde_json::json!({ "to": to }))
        .send()
        .unwrap();
    assert_eq!(r.status(), 422);
    assert!(r.text().unwrap().contains("symbolic link"));
    // Archived there continuously, each pass is refused the same way (the status says why).
    let (ok, said, err) = epoch(&s.server, &s.config, &["archive", "mine", "--to", &to, "--max-lag-seconds", "0.5"]);
    assert!(ok, "{said}{err}");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (ok, said, err) = epoch(&s.server, &s.config, &["archive", "mine"]);
        assert!(ok, "{err}");
        let status: Value = serde_json::from_str(&said).unwrap();
        if status["error"].as_str().is_some_and(|e| e.contains("symbolic link") && e.contains(&link)) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the archiver never reported the link: {status}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(files(&s.victim_dir), victim_files, "nothing was written into the victim's directory");

    // The victim after a restart: its own rows.
    let Scene { dir, key_file, server, .. } = s;
    drop(server);
    let server = Server::start_in(dir.join("data"), &["--admin-api-key-file", key_file.to_str().unwrap()]);
    assert_eq!(accounts(&server, &s.victim_token, "victim"), before);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A restore from an archive whose `log` folder, or one of whose segments, links to a live
/// database's log is refused, naming the link; nothing of the victim is read into a new
/// database and the name stays free.
#[test]
fn a_restore_never_reads_through_a_link() {
    let s = scene("restore-link");
    let before = accounts(&s.server, &s.victim_token, "victim");
    let victim_files = files(&s.victim_dir);
    let attacker = cli_token(&s.server, &s.config);
    let wasm = std::fs::read(common::fixture("bank")).unwrap();

    // The whole log folder is a link.
    let folder_link = s.dir.join("arch-folder-link");
    std::fs::create_dir_all(&folder_link).unwrap();
    std::fs::write(folder_link.join("module.wasm"), &wasm).unwrap();
    std::os::unix::fs::symlink(s.victim_dir.join("log"), folder_link.join("log")).unwrap();
    // A segment is a link.
    let segment_link = s.dir.join("arch-segment-link");
    std::fs::create_dir_all(segment_link.join("log")).unwrap();
    std::fs::write(segment_link.join("module.wasm"), &wasm).unwrap();
    let (first_segment, _) = files(&s.victim_dir.join("log")).into_iter().next().expect("the victim has a segment");
    std::os::unix::fs::symlink(&first_segment, segment_link.join("log").join(first_segment.file_name().unwrap()))
        .unwrap();

    for (archive, link) in [
        (&folder_link, folder_link.join("log")),
        (&segment_link, segment_link.join("log").join(first_segment.file_name().unwrap())),
    ] {
        let from = format!("file://{}", archive.display());
        let (ok, said, err) = epoch(&s.server, &s.config, &["restore", "--from", &from, "--as", "stolen"]);
        assert!(!ok, "a restore through a link succeeded: {said}");
        assert!(err.contains("symbolic link") && err.contains(&link.display().to_string()), "{err}");
        let (status, body) = s.server.sql(Some(&attacker), "stolen", "SELECT * FROM account");
        assert_eq!(status, 404, "no database was made of the victim's log: {body}");
    }
    assert_eq!(files(&s.victim_dir), victim_files, "the victim's files are untouched");
    assert_eq!(accounts(&s.server, &s.victim_token, "victim"), before);
    let Scene { dir, server, .. } = s;
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A FIFO named `module.wasm` fails the restore at once (reading it would wait forever for a
/// writer), and the name is free again: the same restore from a sound folder then succeeds.
#[test]
fn a_fifo_in_an_archive_fails_the_restore_and_frees_the_name() {
    let (dir, key_file) = scratch("fifo");
    let server = Server::start_in(dir.join("data"), &["--admin-api-key-file", key_file.to_str().unwrap()]);
    let (_, token) = server.identity();
    let archive = dir.join("arch");
    std::fs::create_dir_all(&archive).unwrap();
    let fifo = std::ffi::CString::new(archive.join("module.wasm").to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0, "mkfifo");
    let from = format!("file://{}", archive.display());
    let (status, body) = restore_http(&server, &token, "fromfifo", &from);
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("not a regular file") && body.contains("module.wasm"), "{body}");

    std::fs::remove_file(archive.join("module.wasm")).unwrap();
    std::fs::write(archive.join("module.wasm"), std::fs::read(common::fixture("bank")).unwrap()).unwrap();
    let (status, body) = restore_http(&server, &token, "fromfifo", &from);
    assert_eq!(status, 201, "the name was freed: {body}");
    assert_eq!(server.call(&token, "fromfifo", "open_accounts", "[0, 1, 1]").0, 200);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The snapshot file of a backup folder (there is one: a backup takes it).
fn the_snapshot(folder: &Path) -> PathBuf {
    let mut snaps: Vec<PathBuf> =
        std::fs::read_dir(folder.join("snapshots")).unwrap().map(|e| e.unwrap().path()).collect();
    snaps.sort();
    snaps.pop().expect("a snapshot in the backup")
}

/// The id and rows of the table of `snap` holding `n` rows.
fn table_with(snap: &Snapshot, n: usize) -> (u32, PackedRows) {
    snap.tables.iter().find(|(_, rows)| rows.len() == n).cloned().expect("the account table")
}

/// Archives with a duplicate primary key (in the snapshot, in a log record), a snapshot at
/// offset u64::MAX, a snapshot whose name and content disagree, and an unreadable snapshot:
/// each restore is refused with the reason, and its name stays free.
#[test]
fn crafted_archives_are_refused_with_the_reason() {
    let (dir, key_file) = scratch("crafted");
    let server = Server::start_in(dir.join("data"), &["--admin-api-key-file", key_file.to_str().unwrap()]);
    let config = dir.join("cli.json");
    let good = dir.join("good");
    let token = backup_of_50_accounts(&server, &config, &good);
    let snap_path = the_snapshot(&good);
    let snap = Snapshot::decode(&std::fs::read(&snap_path).unwrap()).unwrap();
    let (account_id, account_rows) = table_with(&snap, 50);
    let variant = |name: &str, change: &dyn Fn(&Path)| -> String {
        let folder = dir.join(name);
        copy_dir(&good, &folder);
        change(&folder);
        format!("file://{}", folder.display())
    };
    let write_snapshot = |folder: &Path, s: &Snapshot, offset: u64| {
        std::fs::remove_file(folder.join("snapshots").join(snap_path.file_name().unwrap())).unwrap();
        std::fs::write(folder.join("snapshots").join(format!("{offset:020}.snap")), s.encode()).unwrap();
    };

    // The sound folder restores: 50 accounts.
    let (ok, _, err) = epoch(&server, &config, &["restore", "--from", &variant("sound", &|_| {}), "--as", "sound"]);
    assert!(ok, "{err}");
    assert_eq!(accounts(&server, &token, "sound").len(), 50);

    // A second row with account 0's key, in the snapshot.
    let dup_in_snapshot = variant("dup-snap", &|folder| {
        let mut s = snap.clone();
        let mut twin = account_rows.iter().next().unwrap().to_vec();
        twin[4] ^= 0x55; // the balance differs; the id is the same
        let rows: PackedRows = account_rows.iter().chain([&twin[..]]).collect();
        s.tables.iter_mut().find(|(id, _)| *id == account_id).unwrap().1 = rows;
        write_snapshot(folder, &s, s.offset);
    });
    // The same, as a log record after the snapshot.
    let dup_in_log = variant("dup-log", &|folder| {
        let segment = duplicate_row_segment(snap.offset + 1, account_id, &account_rows);
        std::fs::write(folder.join("log").join(format!("{:020}.log", snap.offset + 1)), segment).unwrap();
    });
    let at_max = variant("at-max", &|folder| {
        let s = Snapshot { offset: u64::MAX, ..snap.clone() };
        write_snapshot(folder, &s, u64::MAX);
    });
    let misnamed = variant("misnamed", &|folder| {
        let s = Snapshot { offset: 3, ..snap.clone() };
        write_snapshot(folder, &s, snap.offset);
    });
    let unreadable = variant("unreadable", &|folder| corrupt_the_snapshot(folder, &snap_path));
    // Every case is tried; the failures are reported together.
    let cases = [
        (dup_in_snapshot.as_str(), "break unique index"),
        (dup_in_log.as_str(), "break unique index"),
        (at_max.as_str(), "no transaction can follow"),
        (misnamed.as_str(), "holds the state at transaction 3"),
        (unreadable.as_str(), "unreadable"),
    ];
    let wrong = refused_restores(&server, &config, &token, &cases);
    assert!(wrong.is_empty(), "crafted archives not refused with their reason:\n{}", wrong.join("\n"));

    // A segment renamed: a restore to offset 10 would count records from the wrong start and
    // stop elsewhere than it says.
    let renamed = variant("renamed", &rename_the_first_segment);
    restoring_a_renamed_segment_is_refused(&server, &config, &renamed);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Publishes `bank` with 50 accounts and backs it up to `good`; returns the CLI's token.
fn backup_of_50_accounts(server: &Server, config: &Path, good: &Path) -> String {
    let (ok, _, err) = epoch(server, config, &["publish", "bank", "--wasm", common::fixture("bank").to_str().unwrap()]);
    assert!(ok, "{err}");
    let token = cli_token(server, config);
    for i in 0..50 {
        assert_eq!(server.call(&token, "bank", "open_accounts", &format!("[{i}, 1, 100]")).0, 200);
    }
    let (ok, _, err) = epoch(server, config, &["backup", "bank", "--to", &format!("file://{}", good.display())]);
    assert!(ok, "{err}");
    token
}

/// A log segment holding one record at `offset` that inserts a second row with the key of the
/// table's first row (its balance differs).
fn duplicate_row_segment(offset: u64, account_id: u32, account_rows: &PackedRows) -> Vec<u8> {
    let mut twin = account_rows.iter().next().unwrap().to_vec();
    twin[4] ^= 0x55;
    let record = TxRecord {
        offset,
        timestamp_micros: 1,
        reducer: "open_accounts".into(),
        tables: vec![TableChange { table_id: account_id, inserts: vec![twin.into()], deletes: vec![] }],
        ..Default::default()
    };
    let mut payload = Vec::new();
    record.encode(&mut payload);
    let mut segment = b"EPOCHLG1".to_vec();
    segment.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    segment.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
    segment.extend_from_slice(&payload);
    segment
}

/// Tries to restore each `(folder URL, reason)` case as `crafted<i>`; returns what went wrong:
/// a case restored, refused without its reason, or leaving a database behind.
fn refused_restores(server: &Server, config: &Path, token: &str, cases: &[(&str, &str)]) -> Vec<String> {
    let mut wrong = Vec::new();
    for (case, &(from, why)) in cases.iter().enumerate() {
        let name = format!("crafted{case}");
        let (ok, said, err) = epoch(server, config, &["restore", "--from", from, "--as", &name]);
        let named = !why.contains("unique") || (err.contains("`account`") && err.contains("is held twice"));
        if ok || !err.contains(why) || !named {
            let rows = server.sql(Some(token), &name, "SELECT COUNT(*) AS n FROM account").1;
            wrong.push(format!("{from}: restored: {ok}, said: {said}{err}, rows: {rows}"));
            continue;
        }
        let (status, body) = server.sql(Some(token), &name, "SELECT * FROM account");
        if status != 404 {
            wrong.push(format!("{from}: a database is left behind: {status} {body}"));
        }
    }
    wrong
}

/// Flips a byte in the middle of the folder's snapshot (`snap_path` names it) and removes the
/// log, so only the damaged snapshot holds the rows.
fn corrupt_the_snapshot(folder: &Path, snap_path: &Path) {
    let path = folder.join("snapshots").join(snap_path.file_name().unwrap());
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();
    // Only the snapshot holds the rows.
    std::fs::remove_dir_all(folder.join("log")).unwrap();
}

/// Renames the folder's first log segment as if it began at transaction 5.
fn rename_the_first_segment(folder: &Path) {
    let log = folder.join("log");
    let first = log.join(format!("{:020}.log", 0));
    std::fs::rename(&first, log.join(format!("{:020}.log", 5))).unwrap();
}

/// A restore to offset 10 from a folder whose segment was renamed would count records from the
/// wrong start and stop elsewhere than it says: it is refused with the reason.
fn restoring_a_renamed_segment_is_refused(server: &Server, config: &Path, renamed: &str) {
    let (ok, said, err) = epoch(server, config, &["restore", "--from", renamed, "--offset", "10", "--as", "renamed"]);
    assert!(!ok, "a renamed segment restored: {said}");
    assert!(err.contains("name says it begins at transaction 5"), "{err}");
}

/// A restore takes only the names publishing takes; a refused one is not left half-made.
#[test]
fn a_restore_takes_only_names_every_other_route_takes() {
    let (dir, key_file) = scratch("restore-names");
    let server = Server::start_in(dir.join("data"), &["--admin-api-key-file", key_file.to_str().unwrap()]);
    let (_, token) = server.identity();
    let archive = dir.join("arch");
    std::fs::create_dir_all(&archive).unwrap();
    std::fs::write(archive.join("module.wasm"), std::fs::read(common::fixture("bank")).unwrap()).unwrap();
    let from = format!("file://{}", archive.display());
    for name in ["a%20b", "UPPER", "x.y", "%C3%BCn%C3%AF", "-lead", "dou--ble"] {
        let (status, body) = restore_http(&server, &token, name, &from);
        assert_eq!(status, 400, "{name}: {body}");
        assert!(body.contains("is not a database name"), "{name}: {body}");
        // Publishing under it is refused the same way.
        let r = server.publish(&token, name, "bank");
        assert_eq!(r.status(), 400, "{name}");
    }
    let (status, body) = restore_http(&server, &token, "fine-name-2", &from);
    assert_eq!(status, 201, "{body}");
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A database whose only snapshot no longer reads back, its log pruned past it, is reported
/// unavailable with the reason after a restart, rather than opened empty.
#[test]
fn a_database_whose_snapshot_is_damaged_does_not_open_empty() {
    let s = scene("damaged-snapshot");
    let Scene { dir, key_file, server, victim_token, victim_dir, .. } = s;
    drop(server);
    for entry in std::fs::read_dir(victim_dir.join("snapshots")).unwrap() {
        let path = entry.unwrap().path();
        let mut bytes = std::fs::read(&path).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
    }
    // The log pruned past the snapshot.
    std::fs::remove_dir_all(victim_dir.join("log")).unwrap();
    let server = Server::start_in(dir.join("data"), &["--admin-api-key-file", key_file.to_str().unwrap()]);
    let (status, body) = server.sql(Some(&victim_token), "victim", "SELECT * FROM account");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("refusing to open the database empty"), "{body}");
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
