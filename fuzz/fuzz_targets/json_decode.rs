//! SATS-JSON reading of fixed types: never panics; whatever parses is written back and re-read as
//! the same value (unless it holds a NaN/inf float, which JSON writes as `null`), and survives a
//! BSATN round trip.
#![no_main]

mod common;

use epoch_sats::{bsatn, json};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((c, bytes)) = common::pick(data) else { return };
    let text = String::from_utf8_lossy(bytes);

    let Ok(v) = json::from_str(&c.ts, &c.ty, &text) else { return };

    let written = json::to_string(&c.ts, &c.ty, &v)
        .unwrap_or_else(|e| panic!("{}: parsed {v:?} from {text:?} but cannot write it: {e}", c.name));
    if !common::has_non_finite(&v) {
        match json::from_str(&c.ts, &c.ty, &written) {
            Ok(back) => assert_eq!(back, v, "{}: {text:?} -> {written:?} does not round-trip", c.name),
            Err(e) => panic!("{}: {text:?} parsed, but its re-encoding {written:?} does not: {e}", c.name),
        }
    }

    let bin = bsatn::to_vec(&v);
    match bsatn::decode(&c.ts, &c.ty, &bin) {
        Ok(back) => assert_eq!(back, v, "{}: BSATN round trip of {v:?} changed it", c.name),
        Err(e) => panic!("{}: BSATN of {v:?} (from {text:?}) does not decode: {e}", c.name),
    }
});
