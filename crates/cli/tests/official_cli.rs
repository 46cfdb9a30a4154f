//! The official `spacetime` 1.3 CLI (`spacetimedb-cli`) against Epoch, unchanged: every command
//! succeeds or fails as it does against the reference server, printing the same thing.
//!
//! The reference answers live in `tests/fixtures/reference/cli/`. To capture them again, start the
//! reference server and run this test with `EPOCH_CAPTURE_REFERENCE=http://127.0.0.1:3900`.
//! `scripts/test.sh` installs the CLI when it is missing and sets `EPOCH_REQUIRE_SPACETIME_CLI=1`,
//! so CI cannot skip this test.
mod common;
use common::*;

use std::path::PathBuf;
use std::process::Command;

/// Replaces what legitimately differs between servers and runs: identities, timestamps, the
/// server's URL and key, durations, and Rust backtraces.
fn normalize(text: &str, url: &str, config: &std::path::Path) -> String {
    let text = text
        .replace(&config.display().to_string(), "<config>")
        .replace(&fixture("bank").display().to_string(), "<bank.wasm>");
    let mut out = String::new();
    let mut in_pem = false;
    for line in text.lines() {
        if line.starts_with("Stack backtrace:") {
            break;
        }
        if line.starts_with("-----BEGIN") {
            in_pem = true;
            out.push_str("<public key>\n");
            continue;
        }
        if in_pem {
            in_pem = !line.starts_with("-----END");
            continue;
        }
        let mut l = line.replace(url, "<server>").replace(url.trim_start_matches("http://"), "<host>");
        l = replace_hex64(&l);
        // RFC 3339 timestamps at the start of log lines.
        if l.len() > 27 && l.as_bytes()[4] == b'-' && l.as_bytes()[10] == b'T' {
            if let Some(end) = l.find('Z') {
                l = format!("<ts>{}", &l[end + 1..]);
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    }
    out
}

fn replace_hex64(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::new();
    let mut i = 0;
    while i < b.len() {
        let run = b[i..].iter().take_while(|c| c.is_ascii_hexdigit()).count();
        if run == 64 {
            out.push_str("<identity>");
            i += 64;
        } else {
            let n = run.max(1);
            out.push_str(&s[i..i + n]);
            i += n;
        }
    }
    out
}

struct Step {
    name: &'static str,
    args: Vec<String>,
}

fn steps() -> Vec<Step> {
    let bank = fixture("bank").to_string_lossy().to_string();
    let s = |name: &'static str, args: &[&str]| Step { name, args: args.iter().map(|a| a.to_string()).collect() };
    vec![
        s("login", &["login", "--server-issued-login", "epoch"]),
        Step {
            name: "publish",
            args: ["publish", "-s", "epoch", "-b", &bank, "bank", "--yes"].map(String::from).to_vec(),
        },
        Step {
            name: "republish",
            args: ["publish", "-s", "epoch", "-b", &bank, "bank", "--yes"].map(String::from).to_vec(),
        },
        s("call_ok", &["call", "-s", "epoch", "bank", "open_accounts", "0", "3", "100"]),
        s("call_err", &["call", "-s", "epoch", "bank", "transfer", "0", "1", "1000"]),
        s("call_unknown", &["call", "-s", "epoch", "bank", "nope"]),
        s("sql", &["sql", "-s", "epoch", "bank", "SELECT * FROM account WHERE id < 2"]),
        s("sql_count", &["sql", "-s", "epoch", "bank", "SELECT COUNT(*) AS n FROM account"]),
        s("sql_error", &["sql", "-s", "epoch", "bank", "SELECT * FROM nope"]),
        s("logs", &["logs", "-s", "epoch", "bank", "-n", "1"]),
        s("describe", &["describe", "-s", "epoch", "--json", "bank"]),
        s("delete", &["delete", "-s", "epoch", "bank"]),
        s("sql_after_delete", &["sql", "-s", "epoch", "bank", "SELECT * FROM account"]),
    ]
}

/// Runs the sequence against `url`; returns (step name, exit success, normalized output).
fn run_sequence(url: &str, config: &std::path::Path) -> Vec<(String, bool, String)> {
    let cli = |args: &[String]| {
        let out = common::spacetime_cli::command(config).args(args).output().expect("spacetimedb-cli runs");
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        (out.status.success(), normalize(&text, url, config))
    };
    let add = ["server", "add", "--url", url, "epoch", "-d"].map(String::from);
    let mut results = vec![{
        let (ok, text) = cli(&add);
        ("server_add".to_string(), ok, text)
    }];
    for step in steps() {
        let (ok, text) = cli(&step.args);
        results.push((step.name.to_string(), ok, text));
    }
    results
}

fn reference_dir() -> PathBuf {
    PathBuf::from(format!("{}/../../tests/fixtures/reference/cli", env!("CARGO_MANIFEST_DIR")))
}

#[test]
fn official_cli_behaves_as_against_the_reference() {
    if !common::spacetime_cli::available() {
        assert!(
            std::env::var_os("EPOCH_REQUIRE_SPACETIME_CLI").is_none(),
            "spacetimedb-cli is required but not installed (cargo install spacetimedb-cli --version 1.3.0 --locked)"
        );
        eprintln!("skipping: spacetimedb-cli is not installed (scripts/test.sh installs it)");
        return;
    }
    let scratch = std::env::temp_dir().join(format!("epoch-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).unwrap();
    if let Ok(reference) = std::env::var("EPOCH_CAPTURE_REFERENCE") {
        let results = run_sequence(&reference, &scratch.join("ref-config.toml"));
        std::fs::create_dir_all(reference_dir()).unwrap();
        for (name, ok, text) in results {
            std::fs::write(reference_dir().join(format!("{name}.txt")), format!("success: {ok}\n{text}")).unwrap();
        }
        return;
    }
    let server = Server::start(&[]);
    let results = run_sequence(&server.url, &scratch.join("config.toml"));
    let mut mismatches = Vec::new();
    for (name, ok, text) in results {
        let got = format!("success: {ok}\n{text}");
        let path = reference_dir().join(format!("{name}.txt"));
        let want = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if got != want {
            mismatches.push(format!("--- {name}: reference\n{want}--- {name}: epoch\n{got}"));
        }
    }
    std::fs::remove_dir_all(&scratch).ok();
    assert!(mismatches.is_empty(), "{} steps differ:\n{}", mismatches.len(), mismatches.join("\n"));
}

/// `spacetime subscribe`, unchanged, prints the initial rows and each update as JSON lines.
#[test]
fn official_cli_subscribe_prints_updates() {
    use std::io::{BufRead, BufReader};
    if !common::spacetime_cli::available() {
        assert!(std::env::var_os("EPOCH_REQUIRE_SPACETIME_CLI").is_none(), "spacetimedb-cli is required");
        return;
    }
    let scratch = std::env::temp_dir().join(format!("epoch-cli-subscribe-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).unwrap();
    let config = scratch.join("config.toml");
    let server = Server::start(&[]);
    let cli = |args: &[&str]| {
        let out = Command::new("spacetimedb-cli").arg("--config-path").arg(&config).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    cli(&["server", "add", "--url", &server.url, "epoch", "-d"]);
    cli(&["login", "--server-issued-login", "epoch"]);
    let bank = fixture("bank").to_string_lossy().to_string();
    cli(&["publish", "-s", "epoch", "-b", &bank, "bank", "--yes"]);
    cli(&["call", "-s", "epoch", "bank", "open_accounts", "0", "3", "100"]);
    let mut child = Command::new("spacetimedb-cli")
        .arg("--config-path")
        .arg(&config)
        .args(["subscribe", "-s", "epoch", "bank", "SELECT * FROM account WHERE id < 2"])
        .args(["-n", "1", "-t", "30", "--print-initial-update", "--yes"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let initial: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    let inserts = initial["account"]["inserts"].as_array().unwrap();
    assert_eq!(inserts.len(), 2, "{initial}");
    assert!(inserts.iter().all(|r| r["balance"] == 100), "{initial}");
    cli(&["call", "-s", "epoch", "bank", "transfer", "0", "1", "30"]);
    let update: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    let mut balances: Vec<i64> =
        update["account"]["inserts"].as_array().unwrap().iter().map(|r| r["balance"].as_i64().unwrap()).collect();
    balances.sort();
    assert_eq!(balances, vec![70, 130], "{update}");
    assert_eq!(update["account"]["deletes"].as_array().unwrap().len(), 2, "{update}");
    let status = child.wait().unwrap();
    assert!(status.success(), "subscribe ends after -n 1 update");
    std::fs::remove_dir_all(&scratch).ok();
}
