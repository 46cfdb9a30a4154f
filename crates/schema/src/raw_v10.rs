//! The raw module definition of SpacetimeDB 2.x (`RawModuleDef::V10`) exactly as a module's
//! `__describe_module__` writes it, and its decoder.
//!
//! V10 is a list of sections, each a tag byte and its payload. Sections may come in any order;
//! like 2.x, the first section of a kind counts and later ones of the same kind are read and
//! ignored. A section has no length prefix, so one whose tag this server does not know cannot be
//! skipped: it is refused with an error naming the tag.

use epoch_sats::bsatn::{DecodeError, Reader};
use epoch_sats::{AlgebraicType, ProductType, Typespace};

use crate::limits::MAX_SUBMODULE_DEPTH;
use crate::raw::{
    algebraic_type, col_list, constraint, index, lifecycle, opt_string, product_type, sequence, string, table_access,
    table_type, type_def, Lifecycle, RawConstraintDefV9, RawIndexDefV9, RawSequenceDefV9, RawTypeDefV9, TableAccess,
    TableType,
};

/// Names of the section kinds, by tag.
pub const SECTION_NAMES: [&str; 17] = [
    "Typespace",
    "Types",
    "Tables",
    "Reducers",
    "Procedures",
    "Views",
    "Schedules",
    "LifeCycleReducers",
    "RowLevelSecurity",
    "CaseConversionPolicy",
    "ExplicitNames",
    "HttpHandlers",
    "HttpRoutes",
    "ViewPrimaryKeys",
    "Submodules",
    "Environment",
    "Outboxes",
];

/// A 2.x module's self-description, before validation. Absent sections are empty.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RawModuleDefV10 {
    pub typespace: Typespace,
    pub types: Vec<RawTypeDefV9>,
    pub tables: Vec<RawTableDefV10>,
    pub reducers: Vec<RawReducerDefV10>,
    pub procedures: Vec<RawProcedureDefV10>,
    pub views: Vec<RawViewDefV10>,
    pub schedules: Vec<RawScheduleDefV10>,
    pub lifecycle_reducers: Vec<(Lifecycle, String)>,
    pub row_level_security: Vec<String>,
    /// `None` when the module sent no policy section (2.x then applies snake_case).
    pub case_conversion: Option<CaseConversionPolicy>,
    pub explicit_names: Vec<ExplicitName>,
    pub http_handlers: Vec<String>,
    pub http_routes: Vec<RawHttpRouteV10>,
    pub view_primary_keys: Vec<RawViewPrimaryKeyV10>,
    pub submodules: Vec<(String, RawModuleDefV10)>,
    pub environment: Vec<RawEnvVarV10>,
    pub outboxes: Vec<RawOutboxV10>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RawTableDefV10 {
    pub source_name: String,
    pub product_type_ref: u32,
    pub primary_key: Vec<u16>,
    pub indexes: Vec<RawIndexDefV9>,
    pub constraints: Vec<RawConstraintDefV9>,
    pub sequences: Vec<RawSequenceDefV9>,
    pub table_type: TableType,
    pub table_access: TableAccess,
    /// Column id and the BSATN of its default value.
    pub default_values: Vec<(u16, Vec<u8>)>,
    pub is_event: bool,
}

/// Who may call a reducer or procedure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FunctionVisibility {
    /// Only the database owner (and the database itself: schedules, lifecycle).
    Private,
    #[default]
    ClientCallable,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RawReducerDefV10 {
    pub source_name: String,
    pub params: ProductType,
    pub visibility: FunctionVisibility,
    pub ok_return_type: AlgebraicType,
    pub err_return_type: AlgebraicType,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RawProcedureDefV10 {
    pub source_name: String,
    pub params: ProductType,
    pub return_type: AlgebraicType,
    pub visibility: FunctionVisibility,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RawViewDefV10 {
    pub source_name: String,
    /// Position among the module's anonymous or per-caller views (numbered separately).
    pub index: u32,
    pub is_public: bool,
    pub is_anonymous: bool,
    pub params: ProductType,
    pub return_type: AlgebraicType,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RawScheduleDefV10 {
    pub source_name: Option<String>,
    pub table_name: String,
    pub schedule_at_col: u16,
    pub function_name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaseConversionPolicy {
    None,
    SnakeCase,
}

/// What an explicit name applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExplicitNameKind {
    Table,
    Function,
    Index,
    Namespace,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ExplicitName {
    pub kind: ExplicitNameKind,
    pub source_name: String,
    pub canonical_name: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RawHttpRouteV10 {
    pub handler_function: String,
    /// `None` for any method, else the method's name (`GET`, …, or an extension).
    pub method: Option<String>,
    pub path: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RawViewPrimaryKeyV10 {
    pub view_source_name: String,
    pub columns: Vec<String>,
}

/// A publish-time environment value a 2.14 module declares.
#[derive(Debug, Clone, PartialEq)]
pub struct RawEnvVarV10 {
    pub name: String,
    /// The allowed values, or `None` for any string.
    pub allowed: Option<Vec<String>>,
    pub optional: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RawOutboxV10 {
    pub table_name: String,
    pub remote_reducer: String,
    pub target_column: u16,
    pub arg_columns: Vec<u16>,
    pub on_result_reducer: Option<String>,
    pub signature_hash: [u8; 32],
}

/// Why V10 bytes could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum V10DecodeError {
    #[error("malformed module definition: {0}")]
    Decode(#[from] DecodeError),
    #[error(
        "module definition section with tag {0} is unknown to this server (it knows tags 0 to 16); \
         the module was built with a newer SpacetimeDB than this server serves"
    )]
    UnknownSection(u8),
    #[error("submodules nest deeper than {MAX_SUBMODULE_DEPTH} levels")]
    SubmodulesTooDeep,
}

/// Reads the body of a `RawModuleDefV10` (after its version tag); `depth` counts submodule nesting.
pub(crate) fn module_v10(r: &mut Reader<'_>, depth: u32) -> Result<RawModuleDefV10, V10DecodeError> {
    if depth > MAX_SUBMODULE_DEPTH {
        return Err(V10DecodeError::SubmodulesTooDeep);
    }
    let mut def = RawModuleDefV10::default();
    let mut seen = [false; SECTION_NAMES.len()];
    let count = r.len_prefix(1)?;
    for _ in 0..count {
        let tag = r.u8()?;
        let first = !std::mem::replace(seen.get_mut(tag as usize).ok_or(V10DecodeError::UnknownSection(tag))?, true);
        let mut scratch = RawModuleDefV10::default();
        // A later section of a kind already read is decoded (to find where it ends) and dropped.
        section(r, tag, depth, if first { &mut def } else { &mut scratch })?;
    }
    Ok(def)
}

/// Reads one section's payload into its place in `def`.
fn section(r: &mut Reader<'_>, tag: u8, depth: u32, def: &mut RawModuleDefV10) -> Result<(), V10DecodeError> {
    match tag {
        0 => def.typespace = Typespace { types: r.vec(|r| algebraic_type(r, 0))? },
        1 => def.types = r.vec(type_def)?,
        2 => def.tables = r.vec(table)?,
        3 => def.reducers = r.vec(reducer)?,
        4 => def.procedures = r.vec(procedure)?,
        5 => def.views = r.vec(view)?,
        6 => def.schedules = r.vec(schedule)?,
        7 => def.lifecycle_reducers = r.vec(|r| Ok((lifecycle(r)?, string(r)?)))?,
        8 => def.row_level_security = r.vec(string)?,
        9 => def.case_conversion = Some(case_conversion(r)?),
        10 => def.explicit_names = r.vec(explicit_name)?,
        11 => def.http_handlers = r.vec(string)?,
        12 => def.http_routes = r.vec(http_route)?,
        13 => def.view_primary_keys = r.vec(view_primary_key)?,
        14 => {
            let n = r.len_prefix(1)?;
            for _ in 0..n {
                let namespace = string(r)?;
                def.submodules.push((namespace, module_v10(r, depth + 1)?));
            }
        }
        15 => def.environment = r.vec(env_var)?,
        16 => def.outboxes = r.vec(outbox)?,
        _ => return Err(V10DecodeError::UnknownSection(tag)),
    }
    Ok(())
}

fn table(r: &mut Reader<'_>) -> Result<RawTableDefV10, DecodeError> {
    Ok(RawTableDefV10 {
        source_name: string(r)?,
        product_type_ref: r.u32()?,
        primary_key: col_list(r)?,
        indexes: r.vec(index)?,
        constraints: r.vec(constraint)?,
        sequences: r.vec(sequence)?,
        table_type: table_type(r)?,
        table_access: table_access(r)?,
        default_values: r.vec(|r| {
            let col = r.u16()?;
            let n = r.len_prefix(1)?;
            Ok((col, r.take(n)?.to_vec()))
        })?,
        is_event: r.bool()?,
    })
}

fn visibility(r: &mut Reader<'_>) -> Result<FunctionVisibility, DecodeError> {
    match r.u8()? {
        0 => Ok(FunctionVisibility::Private),
        1 => Ok(FunctionVisibility::ClientCallable),
        tag => Err(DecodeError::InvalidTag { tag, variants: 2 }),
    }
}

fn reducer(r: &mut Reader<'_>) -> Result<RawReducerDefV10, DecodeError> {
    Ok(RawReducerDefV10 {
        source_name: string(r)?,
        params: product_type(r, 0)?,
        visibility: visibility(r)?,
        ok_return_type: algebraic_type(r, 0)?,
        err_return_type: algebraic_type(r, 0)?,
    })
}

fn procedure(r: &mut Reader<'_>) -> Result<RawProcedureDefV10, DecodeError> {
    Ok(RawProcedureDefV10 {
        source_name: string(r)?,
        params: product_type(r, 0)?,
        return_type: algebraic_type(r, 0)?,
        visibility: visibility(r)?,
    })
}

fn view(r: &mut Reader<'_>) -> Result<RawViewDefV10, DecodeError> {
    Ok(RawViewDefV10 {
        source_name: string(r)?,
        index: r.u32()?,
        is_public: r.bool()?,
        is_anonymous: r.bool()?,
        params: product_type(r, 0)?,
        return_type: algebraic_type(r, 0)?,
    })
}

fn schedule(r: &mut Reader<'_>) -> Result<RawScheduleDefV10, DecodeError> {
    Ok(RawScheduleDefV10 {
        source_name: opt_string(r)?,
        table_name: string(r)?,
        schedule_at_col: r.u16()?,
        function_name: string(r)?,
    })
}

fn case_conversion(r: &mut Reader<'_>) -> Result<CaseConversionPolicy, DecodeError> {
    match r.u8()? {
        0 => Ok(CaseConversionPolicy::None),
        1 => Ok(CaseConversionPolicy::SnakeCase),
        tag => Err(DecodeError::InvalidTag { tag, variants: 2 }),
    }
}

fn explicit_name(r: &mut Reader<'_>) -> Result<ExplicitName, DecodeError> {
    let kind = match r.u8()? {
        0 => ExplicitNameKind::Table,
        1 => ExplicitNameKind::Function,
        2 => ExplicitNameKind::Index,
        3 => ExplicitNameKind::Namespace,
        tag => return Err(DecodeError::InvalidTag { tag, variants: 4 }),
    };
    Ok(ExplicitName { kind, source_name: string(r)?, canonical_name: string(r)? })
}

fn http_method(r: &mut Reader<'_>) -> Result<String, DecodeError> {
    const METHODS: [&str; 9] = ["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"];
    match r.u8()? {
        tag @ 0..=8 => Ok(METHODS[tag as usize].to_string()),
        9 => string(r),
        tag => Err(DecodeError::InvalidTag { tag, variants: 10 }),
    }
}

fn http_route(r: &mut Reader<'_>) -> Result<RawHttpRouteV10, DecodeError> {
    let handler_function = string(r)?;
    let method = match r.u8()? {
        0 => None,
        1 => Some(http_method(r)?),
        tag => return Err(DecodeError::InvalidTag { tag, variants: 2 }),
    };
    Ok(RawHttpRouteV10 { handler_function, method, path: string(r)? })
}

fn view_primary_key(r: &mut Reader<'_>) -> Result<RawViewPrimaryKeyV10, DecodeError> {
    Ok(RawViewPrimaryKeyV10 { view_source_name: string(r)?, columns: r.vec(string)? })
}

fn env_var(r: &mut Reader<'_>) -> Result<RawEnvVarV10, DecodeError> {
    let name = string(r)?;
    let allowed = match r.u8()? {
        0 => None,
        1 => Some(vec![string(r)?]),
        2 => Some(r.vec(string)?),
        tag => return Err(DecodeError::InvalidTag { tag, variants: 3 }),
    };
    Ok(RawEnvVarV10 { name, allowed, optional: r.bool()? })
}

fn outbox(r: &mut Reader<'_>) -> Result<RawOutboxV10, DecodeError> {
    Ok(RawOutboxV10 {
        table_name: string(r)?,
        remote_reducer: string(r)?,
        target_column: r.u16()?,
        arg_columns: col_list(r)?,
        on_result_reducer: opt_string(r)?,
        signature_hash: r.array()?,
    })
}
