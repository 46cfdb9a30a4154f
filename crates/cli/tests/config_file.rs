//! `epoch start --config-file`: options from a TOML file, flags winning over it, and clear
//! refusals of unknown keys and bad values.
mod common;
use common::*;

use std::process::Command;

fn temp(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("epoch-config-{name}-{}-{}", std::process::id(), rand_suffix()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Runs `epoch start` with `config` as its file; returns (exit code, stderr).
fn start_failing(config: &str) -> (Option<i32>, String) {
    let dir = temp("bad");
    let path = dir.join("epoch.toml");
    std::fs::write(&path, config).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_epoch"))
        .args(["start", "--in-memory", "--listen-addr", "127.0.0.1:0", "--config-file"])
        .arg(&path)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn unknown_keys_and_bad_values_stop_the_start_with_a_clear_error() {
    let (code, err) = start_failing("default-databse = \"proj\"\n");
    assert_ne!(code, Some(0));
    assert!(err.contains("unknown option `default-databse`") && err.contains("default-database"), "{err}");
    let (code, err) = start_failing("snapshot-every = \"many\"\n");
    assert_ne!(code, Some(0));
    assert!(err.contains("--snapshot-every") && err.contains("many"), "{err}");
    let (code, err) = start_failing("durability = \"sometimes\"\n");
    assert_ne!(code, Some(0));
    assert!(err.contains("sometimes"), "{err}");
    let (code, err) = start_failing("not toml at all [\n");
    assert_ne!(code, Some(0));
    assert!(err.contains("not valid TOML"), "{err}");
}

#[test]
fn the_file_sets_options_flags_win_and_relative_paths_follow_the_file() {
    let dir = temp("good");
    let conf_dir = dir.join("conf");
    std::fs::create_dir_all(&conf_dir).unwrap();
    std::fs::write(conf_dir.join("admin.key"), "file-key").unwrap();
    let path = conf_dir.join("epoch.toml");
    // The listen address is unusable: the test harness's --listen-addr flag must win over it.
    std::fs::write(
        &path,
        "listen-addr = \"256.0.0.1:1\"\nadmin_api_key_file = \"admin.key\"\ndefault-database = \"proj\"\n\
         workflow-retention-days = 2\n",
    )
    .unwrap();
    let s = Server::start_in(dir.join("data"), &["--config-file", path.to_str().unwrap()]);
    let (_, owner) = s.identity();
    assert_eq!(s.publish(&owner, "proj", "projections").status(), 200);
    let get = |key: &str| admin_get(&s, &owner, key);
    assert_eq!(get("wrong").0, 401, "the key comes from the file named relative to the config");
    let (status, body) = get("file-key");
    assert_eq!(status, 404, "{body}");
    assert!(body["message"].as_str().unwrap().contains("wf_nosuch"), "the default database is set: {body}");
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `GET /admin/workflows/wf_nosuch` with admin key `key` and the owner's token: (status, body).
fn admin_get(s: &Server, owner: &str, key: &str) -> (u16, serde_json::Value) {
    let r = s
        .http()
        .get(format!("{}/admin/workflows/wf_nosuch", s.url))
        .header("X-Admin-API-Key", key)
        .bearer_auth(owner)
        .send()
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json::<serde_json::Value>().unwrap_or_default())
}

/// Runs `epoch ARGS` (expecting it to stop by itself); returns (exit code, stderr).
fn epoch_failing(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_epoch")).args(args).env_remove("EPOCH_ADMIN_API_KEY").output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn the_global_admin_key_flag_is_the_servers_key_and_unread_global_flags_are_refused() {
    let s = Server::start(&["--admin-api-key", "flag-key", "--default-database", "proj"]);
    let (_, owner) = s.identity();
    assert_eq!(s.publish(&owner, "proj", "projections").status(), 200);
    let get = |key: &str| admin_get(&s, &owner, key).0;
    assert_eq!(get("wrong"), 401);
    assert_eq!(get("flag-key"), 404, "the server accepts the key given with --admin-api-key");
    drop(s);

    let start = ["start", "--in-memory", "--listen-addr", "127.0.0.1:0"];
    let (code, err) = epoch_failing(&[&start[..], &["--server", "http://0.0.0.0:8080"]].concat());
    assert_ne!(code, Some(0));
    assert!(err.contains("--server has no effect on `epoch start`") && err.contains("--listen-addr"), "{err}");
    let (code, err) = epoch_failing(&[&start[..], &["--config", "epoch.toml"]].concat());
    assert_ne!(code, Some(0));
    assert!(err.contains("--config has no effect on `epoch start`") && err.contains("--config-file"), "{err}");
    let (code, err) =
        epoch_failing(&[&start[..], &["--admin-api-key", "a", "--admin-api-key-file", "/nonexistent"]].concat());
    assert_ne!(code, Some(0));
    assert!(err.contains("not both"), "{err}");
    let (code, err) = epoch_failing(&["--admin-api-key", "a", "run", "module.wasm"]);
    assert_ne!(code, Some(0));
    assert!(err.contains("--admin-api-key has no effect on `epoch run`"), "{err}");
}
