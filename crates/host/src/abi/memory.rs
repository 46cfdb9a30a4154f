//! Access to a module's linear memory for host functions: bounds-checked slices and reads,
//! each out-of-bounds pointer a trap.

use wasmtime::{format_err as anyhow, Caller, Result};

use super::Env;

/// The module memory and the host state at once, as most host functions need both.
pub(super) fn mem_env<'a>(caller: &'a mut Caller<'_, Env>) -> Result<(&'a mut [u8], &'a mut Env)> {
    let mem = caller.data().memory.ok_or_else(|| anyhow!("module has no memory"))?;
    Ok(mem.data_and_store_mut(caller))
}

/// A slice of module memory; an out-of-bounds pointer traps.
pub(super) fn slice(mem: &[u8], ptr: u32, len: u32) -> Result<&[u8]> {
    mem.get(ptr as usize..ptr as usize + len as usize).ok_or_else(|| anyhow!("pointer out of bounds of wasm memory"))
}

/// A writable slice of module memory; an out-of-bounds pointer traps.
pub(super) fn slice_mut(mem: &mut [u8], ptr: u32, len: u32) -> Result<&mut [u8]> {
    mem.get_mut(ptr as usize..ptr as usize + len as usize)
        .ok_or_else(|| anyhow!("pointer out of bounds of wasm memory"))
}

/// A little-endian `u32` the module left in its memory (buffer lengths).
pub(super) fn read_u32(mem: &[u8], ptr: u32) -> Result<u32> {
    Ok(u32::from_le_bytes(slice(mem, ptr, 4)?.try_into()?))
}

/// Copies host bytes into module memory at `ptr`.
pub(super) fn write_bytes(mem: &mut [u8], ptr: u32, bytes: &[u8]) -> Result<()> {
    slice_mut(mem, ptr, bytes.len() as u32)?.copy_from_slice(bytes);
    Ok(())
}

/// Module text as a string, invalid UTF-8 replaced rather than refused.
pub(super) fn str_lossy(mem: &[u8], ptr: u32, len: u32) -> Result<String> {
    Ok(String::from_utf8_lossy(slice(mem, ptr, len)?).into_owned())
}

/// A column count or id from the ABI, which must fit the store's `u16`.
pub(super) fn col_id(v: u32) -> Result<u16> {
    u16::try_from(v).map_err(|_| anyhow!("ABI violation: a column id must fit in u16"))
}

/// An index range scan's arguments in module memory: `prefix_elems`, the prefix, and the two
/// BSATN `Bound`s.
pub(super) type ScanBounds<'m> = (u16, &'m [u8], &'m [u8], &'m [u8]);

/// Reads an index range scan's arguments: the prefix of `prefix_elems` key columns (absent when
/// zero) and the two BSATN `Bound`s, as slices of module memory.
pub(super) fn scan_bounds(
    mem: &[u8],
    prefix_elems: u32,
    prefix: (u32, u32),
    rstart: (u32, u32),
    rend: (u32, u32),
) -> Result<ScanBounds<'_>> {
    let prefix_elems = col_id(prefix_elems)?;
    let prefix = if prefix_elems > 0 { slice(mem, prefix.0, prefix.1)? } else { &[][..] };
    Ok((prefix_elems, prefix, slice(mem, rstart.0, rstart.1)?, slice(mem, rend.0, rend.1)?))
}
