//! # epoch-schema
//!
//! Turns the bytes a module's `__describe_module__` writes into a validated [`ModuleDef`]:
//! [`raw`] decodes `RawModuleDef::V9`, [`def`] validates it and derives the index, constraint,
//! sequence and schedule names SpacetimeDB 1.3 derives (modules look indexes up by those names),
//! and [`json`] writes the `/schema?version=9` document.
//!
//! Not for: running modules or storing rows.

pub mod def;
pub mod json;
pub mod limits;
pub mod raw;

pub use def::{
    ConstraintDef, IndexAlgorithm, IndexDef, ModuleDef, ReducerDef, ScheduleDef, SequenceDef, TableDef,
    ValidationError, ValidationErrors,
};
pub use raw::{Lifecycle, RawDefError, TableAccess, TableType};

/// Why a module's self-description could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    #[error(transparent)]
    Decode(#[from] RawDefError),
    #[error(transparent)]
    Invalid(#[from] ValidationErrors),
}

/// Decodes and validates the BSATN output of `__describe_module__`.
pub fn module_def_from_bytes(bytes: &[u8]) -> Result<ModuleDef, SchemaError> {
    let raw = raw::decode_module_def(bytes)?;
    Ok(def::validate(raw)?)
}
