//! The `/call` route's argument decoding against the real reducers of the four fixture modules:
//! SATS-JSON (with 1.3's error paths) and BSATN. Never panics, never recurses without bound;
//! whatever decodes survives a BSATN round trip, and the BSATN form decodes to the same value.
//!
//! Input: byte 0 picks the module, byte 1 the reducer, byte 2's low bit the format (even: JSON,
//! odd: BSATN); the rest is the argument text or bytes.
#![no_main]

use epoch_sats::{bsatn, json, AlgebraicType};
use epoch_schema::ModuleDef;
use libfuzzer_sys::fuzz_target;

fn modules() -> &'static [ModuleDef] {
    static DEFS: std::sync::OnceLock<Vec<ModuleDef>> = std::sync::OnceLock::new();
    DEFS.get_or_init(|| {
        [
            &include_bytes!("../seeds/module_def/bank.bin")[..],
            include_bytes!("../seeds/module_def/chat.bin"),
            include_bytes!("../seeds/module_def/projections.bin"),
            include_bytes!("../seeds/module_def/typecheck.bin"),
        ]
        .iter()
        .map(|b| epoch_schema::module_def_from_bytes(b).expect("the fixture definitions validate"))
        .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    let [m, r, format, rest @ ..] = data else { return };
    let def = &modules()[*m as usize % modules().len()];
    let Some(reducer) = def.reducers.get(*r as usize % def.reducers.len().max(1)) else { return };
    let ty = AlgebraicType::Product(reducer.params.clone());
    let value = if format % 2 == 0 {
        let text = String::from_utf8_lossy(rest);
        match json::reducer_args_from_str(&def.typespace, &reducer.name, &reducer.params, &text) {
            Ok(v) => v,
            Err(message) => {
                assert!(!message.is_empty());
                return;
            }
        }
    } else {
        match bsatn::decode(&def.typespace, &ty, rest) {
            Ok(v) => {
                assert_eq!(bsatn::to_vec(&v), rest, "{}: BSATN args re-encode to other bytes", reducer.name);
                v
            }
            Err(_) => return,
        }
    };
    let bytes = bsatn::to_vec(&value);
    let back = bsatn::decode(&def.typespace, &ty, &bytes)
        .unwrap_or_else(|e| panic!("{}: decoded args {value:?} do not decode from their own BSATN: {e}", reducer.name));
    assert_eq!(back, value, "{}: BSATN round trip changed the arguments", reducer.name);
});
