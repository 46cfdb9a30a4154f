//! Module-definition decoding and validation (V9 and 2.x's V10): arbitrary bytes never panic,
//! and a definition that validates can be described as the `/schema?version=9` document and,
//! for a V10 one, the `/schema?version=10` document.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(def) = epoch_schema::module_def_from_bytes(data) {
        let _ = epoch_schema::json::schema_v9(&def);
        if def.version == epoch_schema::DefVersion::V10 {
            let _ = epoch_schema::json_v10::schema_v10(&def);
        }
    }
});
