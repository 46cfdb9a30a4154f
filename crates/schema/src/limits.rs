//! Every limit of this crate, each a named constant with the reason for its value.

/// The deepest nesting of types inside a module definition a decode follows: a generated module
/// nests types a few levels, and a bound keeps a malformed `__describe_module__` answer from
/// exhausting the stack. Values are bounded separately (`epoch_sats::limits::MAX_VALUE_DEPTH`).
pub const MAX_TYPE_DEPTH: u32 = 64;

/// How deep 2.x submodules may nest in a module definition (each level is decoded recursively).
pub const MAX_SUBMODULE_DEPTH: u32 = 8;
