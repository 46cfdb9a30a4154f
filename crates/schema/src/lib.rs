//! # epoch-schema
//!
//! Turns the bytes a module's `__describe_module__` writes into a validated [`ModuleDef`]:
//! [`raw`] decodes `RawModuleDef::V9` (1.x modules) and [`raw_v10`] `RawModuleDef::V10` (2.x
//! modules); [`def`] validates and derives the index, constraint, sequence and schedule names
//! SpacetimeDB derives (modules look indexes up by those names), and [`v10`] first turns a V10
//! definition's source names into canonical ones; [`json`] writes the `/schema?version=9` document.
//!
//! Not for: running modules or storing rows.

pub mod def;
pub mod json;
pub mod json_v10;
pub mod limits;
pub mod raw;
pub mod raw_v10;
pub mod v10;

pub use def::{
    ConstraintDef, DefVersion, IndexAlgorithm, IndexDef, ModuleDef, ProcedureDef, ReducerDef, ScheduleDef, SequenceDef,
    TableDef, ValidationError, ValidationErrors, ViewDef,
};
pub use raw::{Lifecycle, RawDefError, TableAccess, TableType};
pub use raw_v10::FunctionVisibility;

/// Why a module's self-description could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    #[error(transparent)]
    Decode(#[from] RawDefError),
    #[error(transparent)]
    Invalid(#[from] ValidationErrors),
}

/// Decodes and validates the BSATN output of `__describe_module__`: a V9 definition with 1.3's
/// rules, a V10 one with 2.x's.
pub fn module_def_from_bytes(bytes: &[u8]) -> Result<ModuleDef, SchemaError> {
    match raw::decode_module_def(bytes)? {
        raw::RawModuleDef::V9(raw) => Ok(def::validate(raw)?),
        raw::RawModuleDef::V10(raw) => Ok(v10::validate_v10(*raw)?),
    }
}
