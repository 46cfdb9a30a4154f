//! What identifies a module's program: the Keccak-256 of its wasm, as 1.3 reports it
//! (`initial_program` in `st_module`, the `program_hash` of a database).

use sha3::Digest;

/// The Keccak-256 of a module's wasm.
pub fn program_hash(wasm: &[u8]) -> [u8; 32] {
    sha3::Keccak256::digest(wasm).into()
}
