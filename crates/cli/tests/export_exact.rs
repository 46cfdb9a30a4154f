//! `epoch export` and `epoch import` on the real binary are exact for every SATS type: the
//! `typecheck` module's tables, holding the extremes (i128::MIN, u128::MAX, u256::MAX, i256::MIN,
//! NaN with and without payload, ±infinity, -0.0, f32 subnormals, bytes, options, enums, nested
//! products, identities, timestamps), go out as CSV and as JSON lines and come back equal,
//! bit for bit; a CSV header naming a column twice is refused.

mod common;

use std::path::Path;

use common::Server;

/// The CLI as one user: (succeeded, stdout, stderr).
type Cli<'a> = &'a dyn Fn(&[&str]) -> (bool, String, String);

/// The table exported as JSON lines, sorted (the exact form: compared as text).
fn jsonl(epoch: Cli, db: &str, table: &str) -> Vec<String> {
    let (ok, out, err) = epoch(&["export", db, "--table", table, "--format", "jsonl"]);
    assert!(ok, "{err}");
    let mut lines: Vec<String> = out.lines().map(str::to_string).collect();
    lines.sort();
    lines
}

fn import(epoch: Cli, db: &str, table: &str, format: &str, file: &Path) {
    let (ok, said, err) = epoch(&["import", db, "--table", table, "--format", format, file.to_str().unwrap()]);
    assert!(ok && said.contains("Imported"), "{db}.{table} from {format}: {said}{err}");
}

/// A column named twice: refused, naming it; nothing imported.
fn a_column_named_twice_is_refused(epoch: Cli, dir: &Path) {
    let twice = dir.join("twice.csv");
    std::fs::write(&twice, "label,at,label\nx,{\"__timestamp_micros_since_unix_epoch__\":0},y\n").unwrap();
    let (ok, _, err) = epoch(&["import", "fromcsv", "--table", "tick_log", "--format", "csv", twice.to_str().unwrap()]);
    assert!(!ok && err.contains("\"label\" twice"), "{err}");
    assert!(jsonl(epoch, "fromcsv", "tick_log").is_empty(), "nothing of a refused file is kept");
}

#[test]
fn every_type_survives_export_and_import_exactly() {
    let server = Server::start(&[]);
    let dir = std::env::temp_dir().join(format!("epoch-export-exact-{}-{}", std::process::id(), common::rand_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("cli.json");
    let epoch = |args: &[&str]| common::cli(&server.url, &config, args);
    for db in ["tc", "fromcsv", "fromjsonl"] {
        let (ok, _, err) = epoch(&["publish", db, "--wasm", common::fixture("typecheck").to_str().unwrap()]);
        assert!(ok, "{err}");
    }
    // The extremes, seeded through the export form (reducer arguments cannot carry NaN).
    let seed = dir.join("seed.jsonl");
    let u256_max = format!("0x{}", "f".repeat(64));
    let i256_min = format!("-0x8{}", "0".repeat(63));
    let rows = [
        format!(
            r#"{{"id":1,"b":true,"i8_":-128,"u8_":255,"i16_":-32768,"u16_":65535,"i32_":-2147483648,"u32_":4294967295,"i64_":-9223372036854775808,"u64_":18446744073709551615,"i128_":{},"u128_":{},"i256_":"{i256_min}","u256_":"{u256_max}","f32_":"NaN","f64_":"-Infinity","s":"comma, \"quote\"\nline"}}"#,
            i128::MIN,
            u128::MAX
        ),
        r#"{"id":2,"b":false,"i8_":0,"u8_":0,"i16_":0,"u16_":0,"i32_":0,"u32_":0,"i64_":0,"u64_":0,"i128_":170141183460469231731687303715884105727,"u128_":0,"i256_":"0x0","u256_":"0x1","f32_":"Infinity","f64_":-0.0,"s":""}"#.to_string(),
        r#"{"id":3,"b":true,"i8_":1,"u8_":1,"i16_":1,"u16_":1,"i32_":1,"u32_":1,"i64_":1,"u64_":1,"i128_":-1,"u128_":1,"i256_":"-0x1","u256_":"0x0","f32_":1e-45,"f64_":"NaN:0x7ff0000000000001","s":"NaN"}"#.to_string(),
        r#"{"id":4,"b":true,"i8_":1,"u8_":1,"i16_":1,"u16_":1,"i32_":1,"u32_":1,"i64_":1,"u64_":1,"i128_":-1,"u128_":1,"i256_":"-0x1","u256_":"0x0","f32_":0.1,"f64_":"NaN","s":"0x1"}"#.to_string(),
    ];
    std::fs::write(&seed, rows.join("\n") + "\n").unwrap();
    import(&epoch, "tc", "scalars", "jsonl", &seed);
    let composite = dir.join("composite.jsonl");
    std::fs::write(
        &composite,
        concat!(
            r#"{"key":"k,\"1\"","bytes":"00ff10","words":["a","b,c",""],"maybe":{"some":-5},"nested":{"some":[{"some":1},{"none":[]}]},"shape":{"Circle":"-Infinity"},"shapes":[{"Point":[]},{"Label":"x\ny"},{"Rect":{"w":1,"h":2}}],"level":{"High":[]},"size":{"w":4294967295,"h":0}}"#,
            "\n",
            r#"{"key":"","bytes":"","words":[],"maybe":{"none":[]},"nested":{"none":[]},"shape":{"Circle":-0.0},"shapes":[],"level":{"Low":[]},"size":{"w":0,"h":0}}"#,
            "\n"
        ),
    )
    .unwrap();
    import(&epoch, "tc", "composite", "jsonl", &composite);
    let (_, token) = server.identity();
    assert_eq!(server.call(&token, "tc", "stamp", "[-9223372036854775808]").0, 200);

    let out = dir.join("out");
    for format in ["csv", "jsonl"] {
        let (ok, _, err) = epoch(&["export", "tc", "--format", format, "--out", out.to_str().unwrap()]);
        assert!(ok, "{err}");
    }
    let csv = std::fs::read_to_string(out.join("scalars.csv")).unwrap();
    for whole in [i128::MIN.to_string(), u128::MAX.to_string(), u256_max.clone(), i256_min.clone()] {
        assert!(csv.contains(&format!(",{whole},")), "{whole} written in full: {csv}");
    }
    for special in [",NaN,", ",-Infinity,", ",Infinity,", ",-0.0,", ",NaN:0x7ff0000000000001,"] {
        assert!(csv.contains(special), "{special} in {csv}");
    }
    for table in ["scalars", "composite", "specials"] {
        let original = jsonl(&epoch, "tc", table);
        assert!(!original.is_empty(), "{table} has rows");
        import(&epoch, "fromcsv", table, "csv", &out.join(format!("{table}.csv")));
        import(&epoch, "fromjsonl", table, "jsonl", &out.join(format!("{table}.jsonl")));
        assert_eq!(jsonl(&epoch, "fromcsv", table), original, "{table} through CSV");
        assert_eq!(jsonl(&epoch, "fromjsonl", table), original, "{table} through JSON lines");
    }

    a_column_named_twice_is_refused(&epoch, &dir);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
