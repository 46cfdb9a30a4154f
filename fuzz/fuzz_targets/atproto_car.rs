//! Repos (CAR files) from a hostile PDS: decoding a CAR, walking its MST and turning every
//! record into JSON never panics and stays within its bounds.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(repo) = epoch_atproto::Repo::decode(data) {
        for r in &repo.records {
            let _ = repo.record_json(r);
        }
    }
    let _ = epoch_atproto::Car::decode(data);
});
