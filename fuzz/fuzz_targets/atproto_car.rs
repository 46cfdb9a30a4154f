//! Repos (CAR files) from a hostile PDS: decoding a CAR, walking its MST, turning every record
//! into JSON and checking the commit's signature never panics and stays within its bounds.
#![no_main]

use libfuzzer_sys::fuzz_target;

/// A valid secp256k1 key (the curve's generator), so signatures get as far as the check.
const KEY: &str = "did:key:zQ3shVc2UkAfJCdc1TR8E66J85h48P43r93q8jGPkPpjF9Ef9";

fuzz_target!(|data: &[u8]| {
    if let Ok(repo) = epoch_atproto::Repo::decode(data) {
        for r in &repo.records {
            let _ = repo.record_json(r);
        }
        let key = epoch_atproto::signature::PublicKey::parse(KEY).expect("a valid key");
        let _ = repo.verify(&key);
    }
    let _ = epoch_atproto::Car::decode(data);
});
