//! Firehose frames from a hostile relay: decoding never panics, never recurses without bound,
//! and a decoded commit's blocks go through the CAR decoder too.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(epoch_atproto::Frame::Commit(c)) = epoch_atproto::decode_frame(data) {
        if let Ok(car) = epoch_atproto::Car::decode(&c.blocks) {
            for op in &c.ops {
                if let Some(block) = op.cid.as_ref().and_then(|cid| car.blocks.get(cid)) {
                    let _ = epoch_atproto::value::record_json(block);
                }
            }
        }
    }
});
