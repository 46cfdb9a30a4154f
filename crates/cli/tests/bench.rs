//! `epoch bench --quick` as its users run it, from the repository's root: it starts its own
//! server, runs every workload, prints the table and writes it as JSON. Timings are printed,
//! never asserted; what is checked is that every workload produced a real figure.

use serde_json::Value;

#[test]
fn bench_quick_runs_every_workload_and_writes_json() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let json = std::env::temp_dir().join(format!("epoch-bench-{}.json", std::process::id()));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_epoch"))
        .current_dir(&root)
        .args(["bench", "--quick", "--seconds", "1", "--json"])
        .arg(&json)
        .output()
        .unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).to_string();
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    println!("{}", text(&out.stdout));
    let v: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let _ = std::fs::remove_file(&json);
    assert_eq!(v["servers"], serde_json::json!(["epoch"]));
    let rows = v["rows"].as_array().unwrap();
    let has = |prefix: &str| rows.iter().any(|r| r["workload"].as_str().unwrap().starts_with(prefix));
    let mut expected = vec![
        "1. HTTP transfer_fast",
        "2. WS transfer, 1 client",
        "2. WS transfer, 64 clients",
        "3. fan-out, 1000 subscribers",
        "4. initial subscription",
        "5. SQL point",
        "5. SQL range",
        "5. SQL full scan",
        "6. bulk load",
        "7. restart",
        "8. memory",
        "9. sync: resync",
        "10. archiving off",
        "10. archive lag",
    ];
    if std::env::var_os("EPOCH_REQUIRE_MOTO").is_some() {
        expected.push("9. sync: force-sync");
        expected.push("10. archive lag (S3");
    }
    if std::env::var_os("EPOCH_REQUIRE_PDS").is_some() {
        expected.push("9. sync: AT Protocol");
    }
    for w in expected {
        assert!(has(w), "{w} missing from {}", text(&out.stdout));
    }
    for r in rows {
        let value = r["values"]["epoch"].as_f64().unwrap_or(f64::NAN);
        // A memory delta can be zero when the allocator reuses freed pages; nothing is negative.
        assert!(value >= 0.0 && value.is_finite(), "{r}");
        if r["metric"] != "resident MiB added" && r["metric"] != "disk MiB added" {
            assert!(value > 0.0, "{r}");
        }
    }
}
