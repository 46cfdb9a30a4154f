//! What a restart (clean or after SIGKILL) must keep: tokens, names, ownership and privacy,
//! schedules; and what damaged files do to a start.
mod common;
use common::*;

use std::time::{Duration, Instant};

use serde_json::Value;

fn tick_count(s: &Server, token: &str) -> u64 {
    let (status, body) = s.sql(Some(token), "tc", "SELECT COUNT(*) AS n FROM tick_log");
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    v[0]["rows"][0][0].as_u64().unwrap()
}

#[test]
fn restart_keeps_tokens_names_privacy_and_schedules() {
    let dir = std::env::temp_dir().join(format!("epoch-restart-{}-{}", std::process::id(), rand_suffix()));
    let s = Server::start_in(dir.clone(), &[]);
    let (alice_id, alice) = s.identity();
    let (_, bob) = s.identity();
    assert_eq!(s.publish(&alice, "tc", "typecheck").status(), 200);
    assert_eq!(s.call(&alice, "tc", "keep_secret", "[\"hidden\"]").0, 200);
    assert_eq!(s.call(&alice, "tc", "schedule_ticks", "[\"t\", 50]").0, 200);
    assert_eq!(s.call(&alice, "tc", "fill_grid", "[3, 3, \"g\"]").0, 200);
    // SQL DML is durable like a reducer's transaction.
    let (status, body) = s.sql(Some(&alice), "tc", "DELETE FROM grid WHERE x = 0");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"rows_deleted\":3"), "{body}");
    assert_eq!(s.sql(Some(&bob), "tc", "DELETE FROM grid").1, "Only owners are authorized to run SQL DML statements");
    let r =
        s.http().post(format!("{}/v1/database/tc/names", s.url)).bearer_auth(&alice).body("tc-alias").send().unwrap();
    assert_eq!(r.status(), 200);
    std::thread::sleep(Duration::from_millis(200));
    let before = tick_count(&s, &alice);
    assert!(before > 0, "ticks fire before the crash");
    s.crash();

    let s = Server::start_in(dir.clone(), &[]);
    // Tokens issued before the crash still verify (the signing keys are in the data directory).
    let verify = s.http().get(format!("{}/v1/identity/{alice_id}/verify", s.url)).bearer_auth(&alice).send().unwrap();
    assert_eq!(verify.status(), 204);
    // Names resolve to the same database, and the owner is still the owner.
    let id1 = s.http().get(format!("{}/v1/database/tc/identity", s.url)).send().unwrap().text().unwrap();
    let id2 = s.http().get(format!("{}/v1/database/tc-alias/identity", s.url)).send().unwrap().text().unwrap();
    assert_eq!(id1, id2);
    assert_eq!(s.publish(&bob, "tc", "typecheck").status(), 403, "a stranger still cannot republish");
    // Private tables stay private; the data is all there.
    assert_eq!(s.sql(Some(&bob), "tc", "SELECT * FROM secret").0, 400);
    let (status, body) = s.sql(Some(&alice), "tc", "SELECT note FROM secret");
    assert_eq!((status, body.contains("hidden")), (200, true), "{body}");
    let (_, grid) = s.sql(Some(&alice), "tc", "SELECT COUNT(*) AS n FROM grid");
    assert!(grid.contains("\"rows\":[[6]]"), "{grid}");
    // Schedules resume.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut after = tick_count(&s, &alice);
    while after <= before + 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        after = tick_count(&s, &alice);
    }
    assert!(after > before + 2, "ticks resumed after the restart ({before} then {after})");
    // auto_inc values are never handed out twice: new grid ids follow the old ones.
    assert_eq!(s.call(&alice, "tc", "fill_grid", "[1, 1, \"new\"]").0, 200);
    let (_, ids) = s.sql(Some(&alice), "tc", "SELECT id FROM grid");
    let v: Value = serde_json::from_str(&ids).unwrap();
    let mut ids: Vec<i64> = v[0]["rows"].as_array().unwrap().iter().map(|r| r[0].as_i64().unwrap()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 7, "seven distinct ids");
    assert!(ids[6] > 9, "the new id follows every id handed out before the crash");
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_corrupt_log_makes_its_database_unavailable_with_its_location_unless_told_to_truncate() {
    let dir = std::env::temp_dir().join(format!("epoch-corrupt-{}-{}", std::process::id(), rand_suffix()));
    let s = Server::start_in(dir.clone(), &[]);
    let (_, t) = s.identity();
    s.publish(&t, "bank", "bank");
    s.call(&t, "bank", "open_accounts", "[0, 10, 100]");
    for i in 1..=20 {
        assert_eq!(s.call(&t, "bank", "transfer", &format!("[{}, {}, {i}]", i % 10, (i + 1) % 10)).0, 200);
    }
    s.crash();
    let log_dir = std::fs::read_dir(dir.join("databases")).unwrap().next().unwrap().unwrap().path().join("log");
    let segment = std::fs::read_dir(&log_dir).unwrap().next().unwrap().unwrap().path();
    let mut bytes = std::fs::read(&segment).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&segment, &bytes).unwrap();

    // The server starts; the damaged database is unavailable, and says where and what to do.
    let s = Server::start_in(dir.clone(), &[]);
    let (status, err) = s.sql(Some(&t), "bank", "SELECT COUNT(*) AS n FROM ledger");
    assert_eq!(status, 503, "{err}");
    assert!(err.contains("corrupt") && err.contains(&segment.display().to_string()), "{err}");
    assert!(err.contains("--recover-truncate"), "{err}");
    s.crash();

    let s = Server::start_in(dir.clone(), &["--recover-truncate"]);
    let (status, body) = s.sql(Some(&t), "bank", "SELECT COUNT(*) AS n FROM ledger");
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let kept = v[0]["rows"][0][0].as_u64().unwrap();
    assert!(kept < 20, "only the transactions before the corruption remain ({kept})");
    // Money is still conserved: whole transactions only.
    let (_, sum) = s.sql(Some(&t), "bank", "SELECT * FROM account");
    let v: Value = serde_json::from_str(&sum).unwrap();
    let total: i64 = v[0]["rows"].as_array().unwrap().iter().map(|r| r[1].as_i64().unwrap()).sum();
    assert_eq!(total, 1000);
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}

fn balances(s: &Server, db: &str) -> Vec<(u64, i64)> {
    let (status, body) = s.sql(None, db, "SELECT id, balance FROM account");
    assert_eq!(status, 200, "{db}: {body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let mut rows: Vec<(u64, i64)> =
        v[0]["rows"].as_array().unwrap().iter().map(|r| (r[0].as_u64().unwrap(), r[1].as_i64().unwrap())).collect();
    rows.sort();
    rows
}

/// A data directory written by an earlier Epoch (`tests/fixtures/upgrade`, a 1.3 and a 2.x bank)
/// opens on today's server: the rows are there, calls commit, a lock (a system table the old
/// server did not have) is kept, and all of it survives another restart.
#[test]
fn a_data_directory_of_an_earlier_server_keeps_working_after_the_upgrade() {
    let dir = std::env::temp_dir().join(format!("epoch-upgrade-{}-{}", std::process::id(), rand_suffix()));
    copy_dir(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/upgrade/data"), &dir);
    let s = Server::start_in(dir.clone(), &[]);
    let bank_1_3 = vec![
        (1, 750),
        (2, 1250),
        (3, 1000),
        (4, 1000),
        (5, 1000),
        (6, 1000),
        (7, 1000),
        (8, 1000),
        (9, 1000),
        (10, 1000),
    ];
    assert_eq!(balances(&s, "legacy-bank"), bank_1_3);
    assert_eq!(balances(&s, "legacy-bank-2x"), vec![(1, 600), (2, 500), (3, 400)]);
    let (_, token) = s.identity();
    assert_eq!(s.call(&token, "legacy-bank", "transfer", "[3, 4, 10]").0, 200);
    assert_eq!(s.call(&token, "legacy-bank-2x", "transfer", "[1, 2, 50]").0, 200);
    // A lock lives in a system table the old server did not have.
    assert!(s.publish(&token, "locked", "bank").status().is_success());
    let lock = s.http().post(format!("{}/v1/database/locked/lock", s.url)).bearer_auth(&token).send().unwrap();
    assert_eq!(lock.status(), 200);
    drop(s);
    let s = Server::start_in(dir.clone(), &[]);
    let delete = s.http().delete(format!("{}/v1/database/locked", s.url)).bearer_auth(&token).send().unwrap();
    assert_eq!(delete.status(), 403, "the lock outlived the restart");
    let mut after = bank_1_3.clone();
    after[2].1 = 990;
    after[3].1 = 1010;
    assert_eq!(balances(&s, "legacy-bank"), after);
    assert_eq!(balances(&s, "legacy-bank-2x"), vec![(1, 550), (2, 550), (3, 400)]);
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}
