//! The official `spacetime` 2.x CLI (built from SpacetimeDB's v2.8.3 tag by
//! `scripts/build-spacetimedb-2.sh`, cached under `~/.cache/epoch/spacetimedb-2.8.3/bin`) drives a
//! 2.x module's whole life on Epoch, unchanged: publish, an update that adds a column with a
//! default, call, sql, logs, describe (which reads `/schema?version=10`), delete.
//!
//! The CLI is found at `$EPOCH_SPACETIME_2_CLI` or in that cache; without it the test says so
//! and passes, unless `EPOCH_REQUIRE_SPACETIME_2_CLI` is set (as `scripts/test.sh` sets it when
//! the CLI is there).
mod common;
use common::*;

use std::path::PathBuf;
use std::process::Command;

fn cli_2x() -> Option<PathBuf> {
    let path = match std::env::var_os("EPOCH_SPACETIME_2_CLI") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(std::env::var_os("HOME")?).join(".cache/epoch/spacetimedb-2.8.3/bin/spacetime"),
    };
    if path.is_file() {
        return Some(path);
    }
    assert!(
        std::env::var_os("EPOCH_REQUIRE_SPACETIME_2_CLI").is_none(),
        "EPOCH_REQUIRE_SPACETIME_2_CLI is set but {} is missing (run scripts/build-spacetimedb-2.sh)",
        path.display()
    );
    eprintln!("skipped: no spacetime 2.x CLI at {} (scripts/build-spacetimedb-2.sh builds it)", path.display());
    None
}

/// Runs the 2.x CLI with its own config file; returns (success, stdout + stderr).
fn spacetime(cli: &PathBuf, config: &std::path::Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(cli).arg("--config-path").arg(config).args(args).output().expect("the 2.x CLI runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[test]
fn the_2x_cli_publishes_migrates_calls_queries_describes_and_deletes() {
    let Some(cli) = cli_2x() else { return };
    let server = Server::start(&[]);
    let dir = std::env::temp_dir().join(format!("epoch-cli2-{}", rand_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("cli.toml");
    let s = server.url.as_str();
    let run = |args: &[&str]| spacetime(&cli, &config, args);
    let bank = fixture("bank_2x").display().to_string();
    let bank_v2 = fixture("bank_2x_v2").display().to_string();

    let (ok, out) = run(&["publish", "-s", s, "--bin-path", &bank, "-y", "bank2"]);
    assert!(ok && out.contains("Created new database with name: bank2"), "{out}");
    let (ok, out) = run(&["call", "-s", s, "bank2", "open_accounts", "0", "3", "100"]);
    assert!(ok, "{out}");
    // The update breaks clients: the CLI shows the plan `pre_publish` made and sends its token.
    let (ok, out) = run(&["publish", "-s", s, "--bin-path", &bank_v2, "-y", "bank2"]);
    assert!(ok && out.contains("Updated database with name: bank2"), "{out}");
    assert!(out.contains("Database Migration Plan") && out.contains(" column in table "), "{out}");
    assert!(out.contains("tier: ") && out.contains("All clients will be disconnected"), "{out}");
    let (ok, out) = run(&["call", "-s", s, "bank2", "set_tier", "1", "3"]);
    assert!(ok, "{out}");
    let (ok, out) = run(&["sql", "-s", s, "bank2", "SELECT id, tier FROM account WHERE id = 1"]);
    assert!(ok && out.contains(" 1  | 3"), "{out}");
    let (ok, out) = run(&["sql", "-s", s, "bank2", "SELECT id, tier FROM account WHERE id = 2"]);
    assert!(ok && out.contains(" 2  | 7"), "the default for a row from before the update: {out}");
    let (ok, out) = run(&["logs", "-s", s, "bank2", "-n", "20"]);
    assert!(ok && out.contains("Adding columns tier to table `account`"), "{out}");
    let (ok, out) = run(&["describe", "-s", s, "bank2", "--json"]);
    assert!(ok && out.contains("\"sections\"") && out.contains("\"set_tier\""), "{out}");
    let (ok, out) = run(&["lock", "-s", s, "bank2"]);
    assert!(ok && out.contains("is now locked"), "{out}");
    let (ok, out) = run(&["delete", "-s", s, "bank2", "-y"]);
    assert!(!ok && out.contains("403"), "a locked database is not deleted: {out}");
    let (ok, out) = run(&["unlock", "-s", s, "bank2"]);
    assert!(ok && out.contains("is now unlocked"), "{out}");
    let (ok, out) = run(&["delete", "-s", s, "bank2", "-y"]);
    assert!(ok, "{out}");
    let (ok, out) = run(&["sql", "-s", s, "bank2", "SELECT * FROM account"]);
    assert!(!ok && out.contains("No such database"), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}
