//! Module-definition decoding and validation: arbitrary bytes never panic, and a definition that
//! validates can be described as the `/schema?version=9` document.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(def) = epoch_schema::module_def_from_bytes(data) {
        let _ = epoch_schema::json::schema_v9(&def);
    }
});
