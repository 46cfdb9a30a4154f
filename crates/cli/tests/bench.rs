//! `epoch bench-ws` against a running server, as its users run it: the HTTP reducer-call and
//! SQL workloads measure something and write their table as JSON (timings are printed, never
//! asserted).

mod common;

use common::Server;
use serde_json::Value;

#[test]
fn bench_ws_runs_the_http_and_sql_workloads_and_writes_json() {
    let server = Server::start(&[]);
    let json = std::env::temp_dir().join(format!("epoch-bench-{}-{}.json", std::process::id(), common::rand_suffix()));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_epoch"))
        .args(["bench-ws", "--target", &format!("epoch={}", server.url), "--seconds", "1", "--only", "http,sql"])
        .arg("--bank")
        .arg(common::fixture("bank"))
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).to_string();
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    assert!(text(&out.stdout).contains("SQL point (primary key)"), "{}", text(&out.stdout));
    let v: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let _ = std::fs::remove_file(&json);
    let rows = v["rows"].as_array().unwrap();
    let workloads: Vec<&str> = rows.iter().map(|r| r["workload"].as_str().unwrap()).collect();
    for w in
        ["HTTP transfer_fast, 16 conns", "SQL point (primary key)", "SQL range (100 keys)", "SQL full scan + filter"]
    {
        assert!(workloads.contains(&w), "{w} missing: {workloads:?}");
    }
    for r in rows {
        let value = r["values"]["epoch"].as_f64().unwrap();
        assert!(value > 0.0 && value.is_finite(), "{r}");
    }
}
