//! `/schema?version=9` parity: Epoch's JSON for each fixture module must equal what the
//! reference SpacetimeDB 1.3.0 server answered, as captured by
//! `tests/fixtures/reference/capture-schema.sh` into `tests/fixtures/reference/schema/`.

use std::path::PathBuf;

use epoch_host::{HostConfig, ModuleHost};
use serde_json::Value;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

/// A short rendering of a JSON value for the diff report.
fn show(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 160 {
        format!("{}…", &s[..s.char_indices().nth(160).map_or(s.len(), |(i, _)| i)])
    } else {
        s
    }
}

/// Collects the paths at which `ours` and `reference` differ, as readable lines.
fn diff(path: &str, ours: &Value, reference: &Value, out: &mut Vec<String>) {
    match (ours, reference) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, va) in a {
                let p = format!("{path}.{k}");
                match b.get(k) {
                    Some(vb) => diff(&p, va, vb, out),
                    None => out.push(format!("{p}: only in epoch: {}", show(va))),
                }
            }
            for (k, vb) in b {
                if !a.contains_key(k) {
                    out.push(format!("{path}.{k}: only in reference: {}", show(vb)));
                }
            }
            let (ka, kb): (Vec<_>, Vec<_>) = (a.keys().collect(), b.keys().collect());
            if ka != kb && a.len() == b.len() && a.keys().all(|k| b.contains_key(k)) {
                out.push(format!("{path}: key order differs: epoch {ka:?}, reference {kb:?}"));
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for (i, (va, vb)) in a.iter().zip(b).enumerate() {
                diff(&format!("{path}[{i}]"), va, vb, out);
            }
            if a.len() != b.len() {
                out.push(format!("{path}: length differs: epoch {}, reference {}", a.len(), b.len()));
            }
        }
        _ if ours != reference => {
            out.push(format!("{path}: epoch {} != reference {}", show(ours), show(reference)));
        }
        _ => {}
    }
}

fn check(name: &str) {
    let root = fixtures();
    let wasm_path = root.join(format!("modules/{name}.wasm"));
    let wasm = std::fs::read(&wasm_path).unwrap_or_else(|e| panic!("reading {}: {e}", wasm_path.display()));
    let host = ModuleHost::load(&wasm, epoch_sats::Identity([9u8; 32]), HostConfig::default())
        .unwrap_or_else(|e| panic!("loading {name}.wasm: {e}"));
    let ours = epoch_schema::json::schema_v9(host.def());

    let ref_path = root.join(format!("reference/schema/{name}.json"));
    let text = std::fs::read_to_string(&ref_path).unwrap_or_else(|e| panic!("reading {}: {e}", ref_path.display()));
    let reference: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", ref_path.display()));

    // `Value` equality ignores object key order; the diff also reports order, which 1.3 fixes.
    let mut out = Vec::new();
    diff("$", &ours, &reference, &mut out);
    if ours != reference || !out.is_empty() {
        panic!(
            "{name}: /schema?version=9 differs from the reference ({} difference(s)):\n  {}",
            out.len(),
            out.join("\n  ")
        );
    }
}

#[test]
fn bank_schema_matches_reference() {
    check("bank");
}

#[test]
fn chat_schema_matches_reference() {
    check("chat");
}

#[test]
fn typecheck_schema_matches_reference() {
    check("typecheck");
}

#[test]
fn projections_schema_matches_reference() {
    check("projections");
}
