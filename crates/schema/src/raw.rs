//! The raw module definition (`RawModuleDef::V9`) exactly as a module's `__describe_module__` writes
//! it in BSATN, and its decoder.

use epoch_sats::bsatn::{DecodeError, Reader};
use epoch_sats::{AlgebraicType, ProductType, ProductTypeElement, SumType, SumTypeVariant, Typespace};

use crate::limits::MAX_TYPE_DEPTH;
pub use crate::raw_v10::RawModuleDefV10;

/// A module's self-description, before validation.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RawModuleDefV9 {
    pub typespace: Typespace,
    pub tables: Vec<RawTableDefV9>,
    pub reducers: Vec<RawReducerDefV9>,
    pub types: Vec<RawTypeDefV9>,
    /// `misc_exports` has no variants in 1.3, so it is always empty.
    pub row_level_security: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RawTableDefV9 {
    pub name: String,
    pub product_type_ref: u32,
    pub primary_key: Vec<u16>,
    pub indexes: Vec<RawIndexDefV9>,
    pub constraints: Vec<RawConstraintDefV9>,
    pub sequences: Vec<RawSequenceDefV9>,
    pub schedule: Option<RawScheduleDefV9>,
    pub table_type: TableType,
    pub table_access: TableAccess,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableType {
    System,
    User,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableAccess {
    Public,
    Private,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RawIndexDefV9 {
    pub name: Option<String>,
    pub accessor_name: Option<String>,
    pub algorithm: RawIndexAlgorithm,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RawIndexAlgorithm {
    BTree { columns: Vec<u16> },
    Hash { columns: Vec<u16> },
    Direct { column: u16 },
}

#[derive(Debug, Clone, PartialEq)]
pub struct RawConstraintDefV9 {
    pub name: Option<String>,
    /// The one kind of constraint 1.3 has: `Unique { columns }`.
    pub unique_columns: Vec<u16>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RawSequenceDefV9 {
    pub name: Option<String>,
    pub column: u16,
    pub start: Option<i128>,
    pub min_value: Option<i128>,
    pub max_value: Option<i128>,
    pub increment: i128,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RawScheduleDefV9 {
    pub name: Option<String>,
    pub reducer_name: String,
    pub scheduled_at_column: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ScopedTypeName {
    pub scope: Vec<String>,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RawTypeDefV9 {
    pub name: ScopedTypeName,
    pub ty: u32,
    pub custom_ordering: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lifecycle {
    Init,
    OnConnect,
    OnDisconnect,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RawReducerDefV9 {
    pub name: String,
    pub params: ProductType,
    pub lifecycle: Option<Lifecycle>,
}

/// Why the bytes from `__describe_module__` are not a module definition Epoch can load.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RawDefError {
    #[error("malformed module definition: {0}")]
    Decode(#[from] DecodeError),
    #[error("module definition version V8 is not supported; rebuild the module with spacetimedb 1.x")]
    V8NotSupported,
    #[error("unknown module definition version tag {0}")]
    UnknownVersion(u8),
    #[error(transparent)]
    V10(#[from] crate::raw_v10::V10DecodeError),
}

/// A decoded `RawModuleDef`: `V9` from `spacetimedb` 1.x modules, `V10` from 2.x modules.
#[derive(Debug, Clone, PartialEq)]
pub enum RawModuleDef {
    V9(RawModuleDefV9),
    V10(Box<RawModuleDefV10>),
}

/// Decodes a BSATN `RawModuleDef` (`V9` or `V10`; the old `V8` form is refused).
pub fn decode_module_def(bytes: &[u8]) -> Result<RawModuleDef, RawDefError> {
    let mut r = Reader::new(bytes);
    let def = match r.u8()? {
        0 => return Err(RawDefError::V8NotSupported),
        1 => RawModuleDef::V9(module_v9(&mut r)?),
        2 => RawModuleDef::V10(Box::new(crate::raw_v10::module_v10(&mut r, 0)?)),
        tag => return Err(RawDefError::UnknownVersion(tag)),
    };
    r.finish()?;
    Ok(def)
}

fn module_v9(r: &mut Reader<'_>) -> Result<RawModuleDefV9, DecodeError> {
    let typespace = Typespace { types: r.vec(|r| algebraic_type(r, 0))? };
    let tables = r.vec(table)?;
    let reducers = r.vec(reducer)?;
    let types = r.vec(type_def)?;
    let misc = r.len_prefix(1)?;
    if misc != 0 {
        // `RawMiscModuleExportV9` has no variants: any element is undecodable.
        return Err(DecodeError::InvalidTag { tag: r.u8()?, variants: 0 });
    }
    let row_level_security = r.vec(|r| r.str().map(String::from))?;
    Ok(RawModuleDefV9 { typespace, tables, reducers, types, row_level_security })
}

pub(crate) fn string(r: &mut Reader<'_>) -> Result<String, DecodeError> {
    r.str().map(String::from)
}

pub(crate) fn opt_string(r: &mut Reader<'_>) -> Result<Option<String>, DecodeError> {
    r.option(string)
}

pub(crate) fn col_list(r: &mut Reader<'_>) -> Result<Vec<u16>, DecodeError> {
    r.vec(|r| r.u16())
}

fn table(r: &mut Reader<'_>) -> Result<RawTableDefV9, DecodeError> {
    let name = string(r)?;
    let product_type_ref = r.u32()?;
    let primary_key = col_list(r)?;
    let indexes = r.vec(index)?;
    let constraints = r.vec(constraint)?;
    let sequences = r.vec(sequence)?;
    let schedule = r.option(|r| {
        Ok(RawScheduleDefV9 { name: opt_string(r)?, reducer_name: string(r)?, scheduled_at_column: r.u16()? })
    })?;
    let table_type = table_type(r)?;
    let table_access = table_access(r)?;
    Ok(RawTableDefV9 {
        name,
        product_type_ref,
        primary_key,
        indexes,
        constraints,
        sequences,
        schedule,
        table_type,
        table_access,
    })
}

/// One index declaration (the same layout in V9 and V10).
pub(crate) fn index(r: &mut Reader<'_>) -> Result<RawIndexDefV9, DecodeError> {
    let name = opt_string(r)?;
    let accessor_name = opt_string(r)?;
    let algorithm = match r.u8()? {
        0 => RawIndexAlgorithm::BTree { columns: col_list(r)? },
        1 => RawIndexAlgorithm::Hash { columns: col_list(r)? },
        2 => RawIndexAlgorithm::Direct { column: r.u16()? },
        tag => return Err(DecodeError::InvalidTag { tag, variants: 3 }),
    };
    Ok(RawIndexDefV9 { name, accessor_name, algorithm })
}

/// One constraint declaration (the same layout in V9 and V10; `Unique` is the only kind).
pub(crate) fn constraint(r: &mut Reader<'_>) -> Result<RawConstraintDefV9, DecodeError> {
    let name = opt_string(r)?;
    match r.u8()? {
        0 => Ok(RawConstraintDefV9 { name, unique_columns: col_list(r)? }),
        tag => Err(DecodeError::InvalidTag { tag, variants: 1 }),
    }
}

/// One sequence declaration (the same layout in V9 and V10).
pub(crate) fn sequence(r: &mut Reader<'_>) -> Result<RawSequenceDefV9, DecodeError> {
    Ok(RawSequenceDefV9 {
        name: opt_string(r)?,
        column: r.u16()?,
        start: r.option(|r| r.i128())?,
        min_value: r.option(|r| r.i128())?,
        max_value: r.option(|r| r.i128())?,
        increment: r.i128()?,
    })
}

pub(crate) fn table_type(r: &mut Reader<'_>) -> Result<TableType, DecodeError> {
    match r.u8()? {
        0 => Ok(TableType::System),
        1 => Ok(TableType::User),
        tag => Err(DecodeError::InvalidTag { tag, variants: 2 }),
    }
}

pub(crate) fn table_access(r: &mut Reader<'_>) -> Result<TableAccess, DecodeError> {
    match r.u8()? {
        0 => Ok(TableAccess::Public),
        1 => Ok(TableAccess::Private),
        tag => Err(DecodeError::InvalidTag { tag, variants: 2 }),
    }
}

fn reducer(r: &mut Reader<'_>) -> Result<RawReducerDefV9, DecodeError> {
    let name = string(r)?;
    let params = product_type(r, 0)?;
    let lifecycle = r.option(lifecycle)?;
    Ok(RawReducerDefV9 { name, params, lifecycle })
}

pub(crate) fn lifecycle(r: &mut Reader<'_>) -> Result<Lifecycle, DecodeError> {
    match r.u8()? {
        0 => Ok(Lifecycle::Init),
        1 => Ok(Lifecycle::OnConnect),
        2 => Ok(Lifecycle::OnDisconnect),
        tag => Err(DecodeError::InvalidTag { tag, variants: 3 }),
    }
}

pub(crate) fn type_def(r: &mut Reader<'_>) -> Result<RawTypeDefV9, DecodeError> {
    let scope = r.vec(string)?;
    let name = string(r)?;
    Ok(RawTypeDefV9 { name: ScopedTypeName { scope, name }, ty: r.u32()?, custom_ordering: r.bool()? })
}

pub(crate) fn product_type(r: &mut Reader<'_>, depth: u32) -> Result<ProductType, DecodeError> {
    let elements = r.vec(|r| {
        Ok(ProductTypeElement { name: r.option(|r| r.str().map(Into::into))?, ty: algebraic_type(r, depth + 1)? })
    })?;
    Ok(ProductType { elements: elements.into() })
}

/// Encodes an `AlgebraicType` in its own BSATN form (the inverse of [`algebraic_type`]), as
/// 1.3's `st_column.col_type` holds it.
pub fn write_algebraic_type(out: &mut Vec<u8>, ty: &AlgebraicType) {
    use AlgebraicType as T;
    let named = |out: &mut Vec<u8>, name: &Option<Box<str>>| match name {
        Some(n) => {
            out.push(0);
            out.extend_from_slice(&(n.len() as u32).to_le_bytes());
            out.extend_from_slice(n.as_bytes());
        }
        None => out.push(1),
    };
    match ty {
        T::Ref(r) => {
            out.push(0);
            out.extend_from_slice(&r.to_le_bytes());
        }
        T::Sum(s) => {
            out.push(1);
            out.extend_from_slice(&(s.variants.len() as u32).to_le_bytes());
            for v in s.variants.iter() {
                named(out, &v.name);
                write_algebraic_type(out, &v.ty);
            }
        }
        T::Product(p) => {
            out.push(2);
            out.extend_from_slice(&(p.elements.len() as u32).to_le_bytes());
            for e in p.elements.iter() {
                named(out, &e.name);
                write_algebraic_type(out, &e.ty);
            }
        }
        T::Array(e) => {
            out.push(3);
            write_algebraic_type(out, e);
        }
        T::String => out.push(4),
        T::Bool => out.push(5),
        T::I8 => out.push(6),
        T::U8 => out.push(7),
        T::I16 => out.push(8),
        T::U16 => out.push(9),
        T::I32 => out.push(10),
        T::U32 => out.push(11),
        T::I64 => out.push(12),
        T::U64 => out.push(13),
        T::I128 => out.push(14),
        T::U128 => out.push(15),
        T::I256 => out.push(16),
        T::U256 => out.push(17),
        T::F32 => out.push(18),
        T::F64 => out.push(19),
    }
}

/// Decodes an `AlgebraicType` in its own BSATN form (a sum with one variant per type constructor).
pub fn algebraic_type(r: &mut Reader<'_>, depth: u32) -> Result<AlgebraicType, DecodeError> {
    use AlgebraicType as T;
    if depth > MAX_TYPE_DEPTH {
        return Err(DecodeError::TooDeep);
    }
    Ok(match r.u8()? {
        0 => T::Ref(r.u32()?),
        1 => {
            let variants = r.vec(|r| {
                Ok(SumTypeVariant { name: r.option(|r| r.str().map(Into::into))?, ty: algebraic_type(r, depth + 1)? })
            })?;
            T::Sum(SumType { variants: variants.into() })
        }
        2 => T::Product(product_type(r, depth)?),
        3 => T::Array(Box::new(algebraic_type(r, depth + 1)?)),
        4 => T::String,
        5 => T::Bool,
        6 => T::I8,
        7 => T::U8,
        8 => T::I16,
        9 => T::U16,
        10 => T::I32,
        11 => T::U32,
        12 => T::I64,
        13 => T::U64,
        14 => T::I128,
        15 => T::U128,
        16 => T::I256,
        17 => T::U256,
        18 => T::F32,
        19 => T::F64,
        tag => return Err(DecodeError::InvalidTag { tag, variants: 20 }),
    })
}
