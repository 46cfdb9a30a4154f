//! Compiled modules kept on disk, so a restart does not compile every module again.
//!
//! A cache file is `MAGIC`, the blake3 hash of the module's bytes, then wasmtime's serialized
//! module. It is used only when the hash matches the module being loaded, and wasmtime itself
//! refuses an image from another wasmtime version or engine configuration; in either case the
//! module is compiled afresh and the file rewritten. The file lives in the server's own data
//! directory (mode 0700), written only by the server: its content is trusted, which is what
//! [`wasmtime::Module::deserialize`] requires.

use std::io::Write;
use std::path::Path;

use wasmtime::{Engine, Module};

const MAGIC: &[u8; 8] = b"EPOCHCW1";
const HEADER: usize = MAGIC.len() + 32;

/// The module in the cache file at `path`, if the file holds `wasm` compiled by a compatible
/// engine.
pub fn load(engine: &Engine, path: &Path, wasm: &[u8]) -> Option<Module> {
    let bytes = std::fs::read(path).ok()?;
    if bytes.len() < HEADER
        || &bytes[..MAGIC.len()] != MAGIC
        || bytes[MAGIC.len()..HEADER] != *blake3::hash(wasm).as_bytes()
    {
        return None;
    }
    // SAFETY: the image was written by `store` below from a module this engine compiled, into
    // the server's private data directory; wasmtime checks its version and configuration.
    match unsafe { Module::deserialize(engine, &bytes[HEADER..]) } {
        Ok(module) => Some(module),
        Err(e) => {
            tracing::info!(path = %path.display(), "compiled module cache not usable, compiling again: {e:#}");
            None
        }
    }
}

/// Writes `module`, compiled from `wasm`, to the cache file at `path` (atomically: a crash
/// leaves the old file or the new one). A failure only costs a compile at the next start.
pub fn store(path: &Path, wasm: &[u8], module: &Module) {
    let write = || -> std::io::Result<()> {
        let image = module.serialize().map_err(std::io::Error::other)?;
        let tmp = path.with_extension("cwasm.tmp");
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(MAGIC)?;
        f.write_all(blake3::hash(wasm).as_bytes())?;
        f.write_all(&image)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    if let Err(e) = write() {
        tracing::warn!(path = %path.display(), "could not cache the compiled module: {e}");
    }
}
