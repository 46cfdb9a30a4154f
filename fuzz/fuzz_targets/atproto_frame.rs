//! Firehose frames from a hostile relay: decoding never panics, never recurses without bound,
//! and a decoded commit's blocks go through the CAR decoder and the signature check too. Text
//! input is also tried as a signing key.
#![no_main]

use libfuzzer_sys::fuzz_target;

/// A valid secp256k1 key (the curve's generator), so signatures get as far as the check.
const KEY: &str = "did:key:zQ3shVc2UkAfJCdc1TR8E66J85h48P43r93q8jGPkPpjF9Ef9";

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = epoch_atproto::signature::PublicKey::parse(text);
    }
    if let Ok(epoch_atproto::Frame::Commit(c)) = epoch_atproto::decode_frame(data) {
        if let Ok(car) = epoch_atproto::Car::decode(&c.blocks) {
            if let Some(block) = c.commit.as_ref().and_then(|cid| car.blocks.get(cid)) {
                let key = epoch_atproto::signature::PublicKey::parse(KEY).expect("a valid key");
                let _ = epoch_atproto::signature::verify_commit(block, &key);
            }
            for op in &c.ops {
                if let Some(block) = op.cid.as_ref().and_then(|cid| car.blocks.get(cid)) {
                    let _ = epoch_atproto::value::record_json(block);
                }
            }
        }
    }
});
