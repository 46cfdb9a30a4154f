//! BSATN decoding of fixed types: never panics; whatever decodes re-encodes to the same bytes and
//! is accepted by `skip`, and whatever `skip` accepts whole, `decode` accepts too.
#![no_main]

mod common;

use epoch_sats::bsatn;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((c, bytes)) = common::pick(data) else { return };

    let decoded = bsatn::decode(&c.ts, &c.ty, bytes);
    let mut r = bsatn::Reader::new(bytes);
    let skipped = bsatn::skip(&c.ts, &c.ty, &mut r);

    if let Ok(v) = decoded {
        assert_eq!(bsatn::to_vec(&v), bytes, "{}: re-encoding {v:?} is not the input", c.name);
        assert_eq!(skipped, Ok(()), "{}: decode accepted {v:?} but skip rejected it", c.name);
        assert!(r.remaining().is_empty(), "{}: skip left {} bytes that decode consumed", c.name, r.remaining().len());
    } else if let (Ok(()), true, Err(e)) = (&skipped, r.remaining().is_empty(), &decoded) {
        panic!("{}: skip accepted {bytes:02x?} but decode rejected it: {e}", c.name);
    }
});
