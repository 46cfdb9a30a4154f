//! The validated module definition, with every name derived the way SpacetimeDB 1.3 derives it.

use std::collections::{BTreeMap, HashMap, HashSet};

use epoch_sats::{AlgebraicType, ProductType, Typespace};

use crate::raw::{Lifecycle, RawIndexAlgorithm, RawModuleDefV9, RawTableDefV9, RawTypeDefV9, TableAccess, TableType};
use crate::raw_v10::FunctionVisibility;

/// Which SpacetimeDB generation a module was built for: its definition's version decides the
/// rules (validation, who may call what, what clients are told) the database follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DefVersion {
    /// `RawModuleDef::V9`: a `spacetimedb` 1.x module, served with 1.3's rules.
    #[default]
    V9,
    /// `RawModuleDef::V10`: a `spacetimedb` 2.x module, served with 2.x's rules.
    V10,
}

/// A module definition that passed validation: what the store and host are built from.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ModuleDef {
    pub version: DefVersion,
    pub typespace: Typespace,
    /// Tables sorted by name.
    pub tables: Vec<TableDef>,
    /// Reducers in declaration order; a reducer's position is its id.
    pub reducers: Vec<ReducerDef>,
    /// Type definitions sorted by scoped name.
    pub types: Vec<RawTypeDefV9>,
    pub row_level_security: Vec<String>,
    /// Procedures in declaration order; a procedure's position is its id (2.x modules only).
    pub procedures: Vec<ProcedureDef>,
    /// Views in declaration order (2.x modules only).
    pub views: Vec<ViewDef>,
    /// The typespace with the module's own field names, before case conversion (2.x modules
    /// only; empty otherwise): a column's accessor name, as `st_column_accessor` shows it.
    pub source_typespace: Typespace,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TableDef {
    /// The canonical name: what clients and SQL use.
    pub name: String,
    /// The name the module's code uses when it differs from `name` (2.x: the accessor before
    /// case conversion or an explicit name); `table_id_from_name` answers to both.
    pub source_name: Option<String>,
    pub product_type_ref: u32,
    /// The row type, resolved from `product_type_ref`; every element has a name.
    pub row_type: ProductType,
    pub primary_key: Option<u16>,
    /// Sorted by name.
    pub indexes: Vec<IndexDef>,
    /// Sorted by name.
    pub constraints: Vec<ConstraintDef>,
    /// Sorted by name.
    pub sequences: Vec<SequenceDef>,
    pub schedule: Option<ScheduleDef>,
    pub table_type: TableType,
    pub table_access: TableAccess,
    /// An event table (2.x): its rows are logged and sent to subscribers, never stored.
    pub is_event: bool,
    /// Default values of columns (2.x), as column id and the value's BSATN: what a column
    /// added by a module update holds in the rows that were there before.
    pub default_values: Vec<(u16, Vec<u8>)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct IndexDef {
    pub name: String,
    /// The name the module's code looks the index up by when it differs from `name` (2.x).
    pub source_name: Option<String>,
    pub accessor_name: Option<String>,
    pub algorithm: IndexAlgorithm,
}

#[derive(Debug, Clone, PartialEq)]
pub enum IndexAlgorithm {
    BTree(Vec<u16>),
    /// A hash index (2.x): point lookups only; range scans on it are refused.
    Hash(Vec<u16>),
    Direct(u16),
}

impl IndexAlgorithm {
    /// The indexed columns, in key order.
    pub fn columns(&self) -> Vec<u16> {
        match self {
            Self::BTree(cols) | Self::Hash(cols) => cols.clone(),
            Self::Direct(c) => vec![*c],
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ConstraintDef {
    pub name: String,
    /// The unique columns, as a sorted set.
    pub unique_columns: Vec<u16>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SequenceDef {
    pub name: String,
    pub column: u16,
    pub start: Option<i128>,
    pub min_value: Option<i128>,
    pub max_value: Option<i128>,
    pub increment: i128,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleDef {
    pub name: String,
    /// The function the schedule calls: a reducer, or (2.x) a procedure.
    pub reducer_name: String,
    pub at_column: u16,
    pub id_column: u16,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ReducerDef {
    pub name: String,
    /// The module's own name for it when it differs from `name` (2.x).
    pub source_name: Option<String>,
    pub params: ProductType,
    /// The parameters under the module's own names, when case conversion changed them (2.x
    /// describes a reducer with these).
    pub source_params: Option<ProductType>,
    pub lifecycle: Option<Lifecycle>,
    /// Private reducers (2.x: scheduled and lifecycle ones) answer only to the database owner.
    pub visibility: FunctionVisibility,
}

/// A procedure (2.x): a function that runs outside a transaction and returns a value.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcedureDef {
    pub name: String,
    /// The module's own name for it when it differs from `name`.
    pub source_name: Option<String>,
    pub params: ProductType,
    pub return_type: AlgebraicType,
    pub visibility: FunctionVisibility,
}

/// A view (2.x): a read-only function whose rows clients read like a table's.
#[derive(Debug, Clone, PartialEq)]
pub struct ViewDef {
    pub name: String,
    /// The module's own name for it when it differs from `name`.
    pub source_name: Option<String>,
    /// The position the module numbers it by (`__call_view__` or `__call_view_anon__`).
    pub index: u32,
    pub is_public: bool,
    pub is_anonymous: bool,
    pub params: ProductType,
    pub return_type: AlgebraicType,
}

impl ModuleDef {
    /// The module's own name of column `col` of the row type at `product_type_ref` (2.x), or
    /// `canonical` when it has none.
    pub fn column_accessor<'a>(&'a self, product_type_ref: u32, col: usize, canonical: &'a str) -> &'a str {
        match self.source_typespace.types.get(product_type_ref as usize) {
            Some(AlgebraicType::Product(p)) => p.elements.get(col).and_then(|e| e.name.as_deref()).unwrap_or(canonical),
            _ => canonical,
        }
    }

    pub fn table(&self, name: &str) -> Option<&TableDef> {
        self.tables.iter().find(|t| t.name == name)
    }

    /// The id (declaration position) of the reducer called `name`.
    pub fn reducer_id(&self, name: &str) -> Option<usize> {
        self.reducers.iter().position(|r| r.name == name)
    }

    /// The id (declaration position) of the procedure called `name`.
    pub fn procedure_id(&self, name: &str) -> Option<usize> {
        self.procedures.iter().position(|p| p.name == name)
    }

    /// The id of the reducer with the given lifecycle role.
    pub fn lifecycle_reducer(&self, lifecycle: Lifecycle) -> Option<usize> {
        self.reducers.iter().position(|r| r.lifecycle == Some(lifecycle))
    }
}

impl TableDef {
    /// A public user table with no primary key, indexes, constraints, sequences or schedule:
    /// the starting point for tables built by hand (system tables, tests, fuzz targets).
    pub fn plain(name: impl Into<String>, product_type_ref: u32, row_type: ProductType) -> Self {
        Self {
            name: name.into(),
            source_name: None,
            product_type_ref,
            row_type,
            primary_key: None,
            indexes: Vec::new(),
            constraints: Vec::new(),
            sequences: Vec::new(),
            schedule: None,
            table_type: TableType::User,
            table_access: TableAccess::Public,
            is_event: false,
            default_values: Vec::new(),
        }
    }

    /// Adds a B-tree index on `cols`, named as 1.3 names it (`{table}_{col…}_idx_btree`), keeping
    /// the indexes sorted by name.
    pub fn with_btree_index(mut self, cols: &[u16]) -> Self {
        let names: Vec<&str> = cols.iter().map(|c| self.column_name(*c)).collect();
        let name = format!("{}_{}_idx_btree", self.name, names.join("_"));
        let algorithm = IndexAlgorithm::BTree(cols.to_vec());
        self.indexes.push(IndexDef { name, source_name: None, accessor_name: None, algorithm });
        self.indexes.sort_by(|a, b| a.name.cmp(&b.name));
        self
    }

    /// Makes column `col` the primary key: a B-tree index and a unique constraint on it
    /// (`{table}_{col}_key`), named as 1.3 names them.
    pub fn with_unique_key(mut self, col: u16) -> Self {
        let name = format!("{}_{}_key", self.name, self.column_name(col));
        self.constraints.push(ConstraintDef { name, unique_columns: vec![col] });
        self.constraints.sort_by(|a, b| a.name.cmp(&b.name));
        self.primary_key = Some(col);
        self.with_btree_index(&[col])
    }

    /// Whether some unique constraint covers exactly the columns of `index`.
    pub fn index_is_unique(&self, index: &IndexDef) -> bool {
        let mut cols = index.algorithm.columns();
        cols.sort_unstable();
        self.constraints.iter().any(|c| c.unique_columns == cols)
    }

    pub fn column_name(&self, col: u16) -> &str {
        self.row_type.elements.get(col as usize).and_then(|e| e.name.as_deref()).unwrap_or("?")
    }
}

/// One reason a module definition is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    #[error("`{name}` is not a valid identifier")]
    InvalidIdentifier { name: String },
    #[error("name `{name}` is used more than once")]
    DuplicateName { name: String },
    #[error("table `{table}` refers to type {type_ref}, which is not a product type in the typespace")]
    InvalidProductTypeRef { table: String, type_ref: u32 },
    #[error("type reference {type_ref} in {location} does not exist")]
    DanglingTypeRef { location: String, type_ref: u32 },
    #[error("column {column} of table `{table}` has no name")]
    UnnamedColumn { table: String, column: usize },
    #[error("{def} refers to column {column}, which table `{table}` does not have")]
    ColumnNotFound { table: String, def: String, column: u16 },
    #[error("{def} lists column {column} twice")]
    DuplicateColumns { def: String, column: u16 },
    #[error("{def} has no columns")]
    NoColumns { def: String },
    #[error("table `{table}` has more than one primary key column")]
    RepeatedPrimaryKey { table: String },
    #[error("primary key column `{column}` of table `{table}` has no unique constraint")]
    MissingPrimaryKeyUniqueConstraint { table: String, column: String },
    #[error("unique constraint `{constraint}` has no index on the same columns")]
    UniqueConstraintWithoutIndex { constraint: String },
    #[error("index `{index}` uses the hash algorithm, which is not supported")]
    HashIndexUnsupported { index: String },
    #[error("direct index `{index}` is on column `{column}`, which is not an unsigned integer or simple enum")]
    DirectIndexOnBadType { index: String, column: String },
    #[error("sequence `{sequence}` is on column `{column}`, which is not an integer")]
    InvalidSequenceColumnType { sequence: String, column: String },
    #[error("column `{column}` has more than one sequence")]
    OneAutoInc { column: String },
    #[error("sequence `{sequence}` has an invalid range")]
    InvalidSequenceRange { sequence: String },
    #[error("table name `{table}` is reserved for system tables (names starting with st_)")]
    TableNameReserved { table: String },
    #[error("scheduled table `{table}` needs a u64 primary key and a ScheduleAt column")]
    ScheduledIncorrectColumns { table: String },
    #[error("schedule `{schedule}` names reducer `{reducer}`, which does not exist")]
    MissingScheduledReducer { schedule: String, reducer: String },
    #[error("scheduled reducer `{reducer}` must take exactly one argument: a row of table `{table}`")]
    IncorrectScheduledReducerParams { reducer: String, table: String },
    #[error("more than one reducer has the lifecycle {lifecycle:?}")]
    DuplicateLifecycle { lifecycle: Lifecycle },
    #[error("type definition `{name}` refers to type {type_ref}, which does not exist")]
    InvalidTypeRef { name: String, type_ref: u32 },
    #[error("{what} are not supported by this server yet")]
    Unsupported { what: String },
    #[error("lifecycle event {lifecycle:?} names `{reducer}`, which is not a reducer of the module")]
    LifecycleWithoutReducer { lifecycle: Lifecycle, reducer: String },
    #[error("an index of table `{table}` has no source name")]
    IndexWithoutSourceName { table: String },
    #[error("table `{table}` has more than one schedule")]
    DuplicateSchedule { table: String },
    #[error("a schedule names table `{table}`, which does not exist")]
    ScheduleTableNotFound { table: String },
    #[error("failed to deserialize default value for table `{table}` column `{column}`")]
    BadDefaultValue { table: String, column: String },
    #[error("reducer `{reducer}` has an invalid return type: a reducer returns () or Result<(), String>")]
    InvalidReducerReturnType { reducer: String },
    #[error("name `{name}` is used for multiple reducers, procedures and/or views")]
    DuplicateFunctionName { name: String },
}

/// Every reason a module definition is invalid (validation reports all of them, not just the first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationErrors(pub Vec<ValidationError>);

impl std::fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid module definition: ")?;
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                write!(f, "; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}
impl std::error::Error for ValidationErrors {}

/// Whether `name` is an identifier SpacetimeDB accepts for tables, columns, reducers and indexes.
pub fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_alphabetic() || c == '_') && chars.all(|c| c.is_alphanumeric() || c == '_')
}

fn column_name(ty: &ProductType, col: u16) -> String {
    ty.elements
        .get(col as usize)
        .and_then(|e| e.name.as_deref())
        .map(str::to_string)
        .unwrap_or_else(|| format!("col_{col}"))
}

fn concat_column_names(ty: &ProductType, cols: &[u16]) -> String {
    cols.iter().map(|&c| column_name(ty, c)).collect::<Vec<_>>().join("_")
}

/// The name 1.3 gives an index declared without one: `{table}_{col1}_{col2}_idx_{algorithm}`.
pub fn generate_index_name(table: &str, ty: &ProductType, algorithm: &RawIndexAlgorithm) -> String {
    let (label, cols) = match algorithm {
        RawIndexAlgorithm::BTree { columns } => ("btree", columns.clone()),
        RawIndexAlgorithm::Hash { columns } => ("hash", columns.clone()),
        RawIndexAlgorithm::Direct { column } => ("direct", vec![*column]),
    };
    format!("{table}_{}_idx_{label}", concat_column_names(ty, &cols))
}

/// The name 1.3 gives a sequence: `{table}_{column}_seq`.
pub fn generate_sequence_name(table: &str, ty: &ProductType, col: u16) -> String {
    format!("{table}_{}_seq", column_name(ty, col))
}

/// The name 1.3 gives a unique constraint: `{table}_{col1}_{col2}_key`.
pub fn generate_unique_constraint_name(table: &str, ty: &ProductType, cols: &[u16]) -> String {
    format!("{table}_{}_key", concat_column_names(ty, cols))
}

/// The name 1.3 gives a schedule: `{table}_sched`.
pub fn generate_schedule_name(table: &str) -> String {
    format!("{table}_sched")
}

/// Validates a raw definition, deriving names and sorting definitions as SpacetimeDB 1.3 does.
pub fn validate(raw: RawModuleDefV9) -> Result<ModuleDef, ValidationErrors> {
    validate_with(&raw, DefVersion::V9, &[])
}

/// Validates a definition in V9's shape with the rules of `version` (2.x's V10 definitions are
/// first lowered to this shape): 2.x allows hash indexes and schedules that call `procedures`.
pub(crate) fn validate_with(
    raw: &RawModuleDefV9,
    version: DefVersion,
    procedures: &[ProcedureDef],
) -> Result<ModuleDef, ValidationErrors> {
    let mut v = Validator { errors: Vec::new(), names: HashSet::new(), typespace: &raw.typespace, version };
    v.check_typespace();

    let mut tables: Vec<TableDef> = raw.tables.iter().filter_map(|t| v.table(t)).collect();
    tables.sort_by(|a, b| a.name.cmp(&b.name));

    let reducers = v.reducers(&raw.reducers);
    v.check_schedule_targets(&tables, &reducers, procedures);

    let mut types = raw.types.clone();
    let mut type_names = HashSet::new();
    for td in &types {
        if raw.typespace.types.get(td.ty as usize).is_none() {
            v.errors.push(ValidationError::InvalidTypeRef { name: td.name.name.clone(), type_ref: td.ty });
        }
        if !type_names.insert(td.name.clone()) {
            v.errors.push(ValidationError::DuplicateName { name: td.name.name.clone() });
        }
    }
    types.sort_by(|a, b| a.name.cmp(&b.name));

    if !v.errors.is_empty() {
        return Err(ValidationErrors(v.errors));
    }
    Ok(ModuleDef {
        version,
        typespace: raw.typespace.clone(),
        tables,
        reducers,
        types,
        row_level_security: raw.row_level_security.clone(),
        procedures: Vec::new(),
        views: Vec::new(),
        source_typespace: Typespace::default(),
    })
}

struct Validator<'a> {
    errors: Vec<ValidationError>,
    /// The module-wide namespace of tables, indexes, constraints, sequences and schedules.
    names: HashSet<String>,
    typespace: &'a Typespace,
    version: DefVersion,
}

impl Validator<'_> {
    /// The reducers in declaration order: identifiers, unique names, one per lifecycle role,
    /// parameter types that exist.
    fn reducers(&mut self, raw: &[crate::raw::RawReducerDefV9]) -> Vec<ReducerDef> {
        let mut reducers = Vec::with_capacity(raw.len());
        let mut reducer_names = HashSet::new();
        let mut lifecycles = HashSet::new();
        for r in raw {
            if !is_identifier(&r.name) {
                self.errors.push(ValidationError::InvalidIdentifier { name: r.name.clone() });
            }
            if !reducer_names.insert(r.name.clone()) {
                self.errors.push(ValidationError::DuplicateName { name: r.name.clone() });
            }
            if let Some(lc) = r.lifecycle {
                if !lifecycles.insert(lc) {
                    self.errors.push(ValidationError::DuplicateLifecycle { lifecycle: lc });
                }
            }
            for e in r.params.elements.iter() {
                self.check_refs(&e.ty, &format!("the parameters of reducer `{}`", r.name));
            }
            reducers.push(ReducerDef {
                source_name: None,
                name: r.name.clone(),
                params: r.params.clone(),
                source_params: None,
                lifecycle: r.lifecycle,
                visibility: FunctionVisibility::ClientCallable,
            });
        }
        reducers
    }

    /// Each schedule calls a reducer (or, 2.x, a procedure) that takes exactly its table's row.
    fn check_schedule_targets(&mut self, tables: &[TableDef], reducers: &[ReducerDef], procedures: &[ProcedureDef]) {
        for t in tables {
            let Some(s) = &t.schedule else { continue };
            let mut targets =
                reducers.iter().map(|r| (&r.name, &r.params)).chain(procedures.iter().map(|p| (&p.name, &p.params)));
            match targets.find(|(name, _)| **name == s.reducer_name) {
                None => self.errors.push(ValidationError::MissingScheduledReducer {
                    schedule: s.name.clone(),
                    reducer: s.reducer_name.clone(),
                }),
                Some((name, params)) if !matches!(&*params.elements, [e] if e.ty == AlgebraicType::Ref(t.product_type_ref)) => {
                    self.errors.push(ValidationError::IncorrectScheduledReducerParams {
                        reducer: name.clone(),
                        table: t.name.clone(),
                    })
                }
                Some(_) => {}
            }
        }
    }

    fn claim_name(&mut self, name: &str) {
        if !self.names.insert(name.to_string()) {
            self.errors.push(ValidationError::DuplicateName { name: name.to_string() });
        }
    }

    fn check_typespace(&mut self) {
        for (i, ty) in self.typespace.types.iter().enumerate() {
            self.check_refs(ty, &format!("typespace entry {i}"));
        }
    }

    fn check_refs(&mut self, ty: &AlgebraicType, location: &str) {
        match ty {
            AlgebraicType::Ref(r) if self.typespace.types.get(*r as usize).is_none() => {
                self.errors.push(ValidationError::DanglingTypeRef { location: location.to_string(), type_ref: *r })
            }
            AlgebraicType::Sum(s) => s.variants.iter().for_each(|v| self.check_refs(&v.ty, location)),
            AlgebraicType::Product(p) => p.elements.iter().for_each(|e| self.check_refs(&e.ty, location)),
            AlgebraicType::Array(e) => self.check_refs(e, location),
            _ => {}
        }
    }

    fn check_cols(&mut self, table: &str, ty: &ProductType, def: &str, cols: &[u16]) -> bool {
        let mut ok = true;
        let mut seen = HashSet::new();
        if cols.is_empty() {
            self.errors.push(ValidationError::NoColumns { def: def.to_string() });
            ok = false;
        }
        for &c in cols {
            if c as usize >= ty.elements.len() {
                self.errors.push(ValidationError::ColumnNotFound { table: table.into(), def: def.into(), column: c });
                ok = false;
            } else if !seen.insert(c) {
                self.errors.push(ValidationError::DuplicateColumns { def: def.into(), column: c });
                ok = false;
            }
        }
        ok
    }

    /// Validates one table: its name and columns, indexes, unique constraints, primary key,
    /// sequences and schedule, in that order (the order its errors are listed in). Every part is
    /// checked even after an error, so one publish lists them all; the table is kept only if none
    /// was found.
    fn table(&mut self, t: &RawTableDefV9) -> Option<TableDef> {
        let row_type = match self.typespace.types.get(t.product_type_ref as usize) {
            Some(AlgebraicType::Product(p)) => p.clone(),
            _ => {
                self.errors.push(ValidationError::InvalidProductTypeRef {
                    table: t.name.clone(),
                    type_ref: t.product_type_ref,
                });
                return None;
            }
        };
        let errors_before = self.errors.len();
        self.table_name_and_columns(t, &row_type);
        let indexes = self.table_indexes(t, &row_type);
        let constraints = self.table_constraints(t, &row_type, &indexes);
        let primary_key = self.table_primary_key(t, &row_type, &constraints);
        let sequences = self.table_sequences(t, &row_type);
        let schedule = self.table_schedule(t, &row_type, primary_key);
        if self.errors.len() > errors_before {
            return None;
        }
        Some(TableDef {
            name: t.name.clone(),
            source_name: None,
            product_type_ref: t.product_type_ref,
            row_type,
            primary_key,
            indexes: indexes.into_values().collect(),
            constraints: constraints.into_values().collect(),
            sequences: sequences.into_values().collect(),
            schedule,
            table_type: t.table_type,
            table_access: t.table_access,
            is_event: false,
            default_values: Vec::new(),
        })
    }

    /// Checks the table's name (an identifier, `st_` reserved for system tables, not taken) and
    /// that every column has a name of its own.
    fn table_name_and_columns(&mut self, t: &RawTableDefV9, row_type: &ProductType) {
        if !is_identifier(&t.name) {
            self.errors.push(ValidationError::InvalidIdentifier { name: t.name.clone() });
        }
        if t.table_type != TableType::System && t.name.starts_with("st_") {
            self.errors.push(ValidationError::TableNameReserved { table: t.name.clone() });
        }
        self.claim_name(&t.name);
        let mut column_names = HashSet::new();
        for (i, e) in row_type.elements.iter().enumerate() {
            match e.name.as_deref() {
                None => self.errors.push(ValidationError::UnnamedColumn { table: t.name.clone(), column: i }),
                Some(n) if !column_names.insert(n) => {
                    self.errors.push(ValidationError::DuplicateName { name: format!("{}.{n}", t.name) })
                }
                Some(_) => {}
            }
        }
    }

    /// The table's indexes by name (generated names filled in); hash indexes are refused and
    /// left out, as 1.3 does not support them.
    fn table_indexes(&mut self, t: &RawTableDefV9, row_type: &ProductType) -> BTreeMap<String, IndexDef> {
        let mut indexes = BTreeMap::new();
        for idx in &t.indexes {
            let name = idx.name.clone().unwrap_or_else(|| generate_index_name(&t.name, row_type, &idx.algorithm));
            let algorithm = match &idx.algorithm {
                RawIndexAlgorithm::BTree { columns } => {
                    self.check_cols(&t.name, row_type, &format!("index `{name}`"), columns);
                    IndexAlgorithm::BTree(columns.clone())
                }
                RawIndexAlgorithm::Direct { column } => {
                    self.check_direct_index(&t.name, row_type, &name, *column);
                    IndexAlgorithm::Direct(*column)
                }
                RawIndexAlgorithm::Hash { columns } if self.version == DefVersion::V10 => {
                    self.check_cols(&t.name, row_type, &format!("index `{name}`"), columns);
                    IndexAlgorithm::Hash(columns.clone())
                }
                RawIndexAlgorithm::Hash { .. } => {
                    self.errors.push(ValidationError::HashIndexUnsupported { index: name.clone() });
                    continue;
                }
            };
            self.claim_name(&name);
            if let Some(acc) = &idx.accessor_name {
                if !is_identifier(acc) {
                    self.errors.push(ValidationError::InvalidIdentifier { name: acc.clone() });
                }
            }
            let accessor_name = idx.accessor_name.clone();
            indexes.insert(name.clone(), IndexDef { name, source_name: None, accessor_name, algorithm });
        }
        indexes
    }

    /// Checks that a direct index's column exists and is an unsigned integer or a simple enum
    /// (the only types a direct index can number its slots by).
    fn check_direct_index(&mut self, table: &str, row_type: &ProductType, name: &str, column: u16) {
        if !self.check_cols(table, row_type, &format!("index `{name}`"), &[column]) {
            return;
        }
        let ty = &row_type.elements[column as usize].ty;
        let simple_enum = |s: &epoch_sats::SumType| s.variants.iter().all(|v| v.ty == AlgebraicType::unit());
        let ok = match ty {
            AlgebraicType::U8 | AlgebraicType::U16 | AlgebraicType::U32 | AlgebraicType::U64 => true,
            AlgebraicType::Sum(s) => simple_enum(s),
            AlgebraicType::Ref(r) => {
                matches!(self.typespace.types.get(*r as usize), Some(AlgebraicType::Sum(s)) if simple_enum(s))
            }
            _ => false,
        };
        if !ok {
            self.errors.push(ValidationError::DirectIndexOnBadType {
                index: name.to_string(),
                column: column_name(row_type, column),
            });
        }
    }

    /// The table's unique constraints by name (columns sorted, duplicates dropped); each must be
    /// backed by an index on the same columns (uniqueness is enforced through that index).
    fn table_constraints(
        &mut self,
        t: &RawTableDefV9,
        row_type: &ProductType,
        indexes: &BTreeMap<String, IndexDef>,
    ) -> BTreeMap<String, ConstraintDef> {
        let mut constraints = BTreeMap::new();
        for c in &t.constraints {
            let name =
                c.name.clone().unwrap_or_else(|| generate_unique_constraint_name(&t.name, row_type, &c.unique_columns));
            self.check_cols(&t.name, row_type, &format!("constraint `{name}`"), &c.unique_columns);
            self.claim_name(&name);
            let mut cols = c.unique_columns.clone();
            cols.sort_unstable();
            cols.dedup();
            constraints.insert(name.clone(), ConstraintDef { name, unique_columns: cols });
        }
        for c in constraints.values() {
            let backed = indexes.values().any(|i: &IndexDef| {
                let mut cols = i.algorithm.columns();
                cols.sort_unstable();
                cols == c.unique_columns
            });
            if !backed {
                self.errors.push(ValidationError::UniqueConstraintWithoutIndex { constraint: c.name.clone() });
            }
        }
        constraints
    }

    /// The table's primary key: at most one column, which must carry a unique constraint of its
    /// own.
    fn table_primary_key(
        &mut self,
        t: &RawTableDefV9,
        row_type: &ProductType,
        constraints: &BTreeMap<String, ConstraintDef>,
    ) -> Option<u16> {
        match t.primary_key.as_slice() {
            [] => None,
            [pk] => {
                if self.check_cols(&t.name, row_type, "the primary key", &[*pk])
                    && !constraints.values().any(|c| c.unique_columns == [*pk])
                {
                    self.errors.push(ValidationError::MissingPrimaryKeyUniqueConstraint {
                        table: t.name.clone(),
                        column: column_name(row_type, *pk),
                    });
                }
                Some(*pk)
            }
            _ => {
                self.errors.push(ValidationError::RepeatedPrimaryKey { table: t.name.clone() });
                None
            }
        }
    }

    /// The table's sequences by name: each on an integer column, at most one per column, with a
    /// range that holds its start.
    fn table_sequences(&mut self, t: &RawTableDefV9, row_type: &ProductType) -> BTreeMap<String, SequenceDef> {
        let mut sequences = BTreeMap::new();
        let mut seq_cols = HashMap::new();
        for s in &t.sequences {
            let name = s.name.clone().unwrap_or_else(|| generate_sequence_name(&t.name, row_type, s.column));
            if self.check_cols(&t.name, row_type, &format!("sequence `{name}`"), &[s.column]) {
                if !row_type.elements[s.column as usize].ty.is_integer() {
                    self.errors.push(ValidationError::InvalidSequenceColumnType {
                        sequence: name.clone(),
                        column: column_name(row_type, s.column),
                    });
                } else if seq_cols.insert(s.column, ()).is_some() {
                    self.errors.push(ValidationError::OneAutoInc { column: column_name(row_type, s.column) });
                }
            }
            let le = |lo: Option<i128>, hi: Option<i128>| lo.zip(hi).is_none_or(|(lo, hi)| lo <= hi);
            if !(le(s.min_value, s.start) && le(s.start, s.max_value) && le(s.min_value, s.max_value)) {
                self.errors.push(ValidationError::InvalidSequenceRange { sequence: name.clone() });
            }
            self.claim_name(&name);
            sequences.insert(
                name.clone(),
                SequenceDef {
                    name,
                    column: s.column,
                    start: s.start,
                    min_value: s.min_value,
                    max_value: s.max_value,
                    increment: s.increment,
                },
            );
        }
        sequences
    }

    /// The table's schedule, if it has one: its `scheduled_at` column must be a `ScheduleAt` and
    /// its primary key a `u64` (the schedule's id column).
    fn table_schedule(
        &mut self,
        t: &RawTableDefV9,
        row_type: &ProductType,
        primary_key: Option<u16>,
    ) -> Option<ScheduleDef> {
        let s = t.schedule.as_ref()?;
        let name = s.name.clone().unwrap_or_else(|| generate_schedule_name(&t.name));
        self.claim_name(&name);
        let at_ok =
            row_type.elements.get(s.scheduled_at_column as usize).is_some_and(|e| e.ty == AlgebraicType::schedule_at());
        let id_column =
            primary_key.filter(|pk| row_type.elements.get(*pk as usize).is_some_and(|e| e.ty == AlgebraicType::U64));
        match (at_ok, id_column) {
            (true, Some(id_column)) => Some(ScheduleDef {
                name,
                reducer_name: s.reducer_name.clone(),
                at_column: s.scheduled_at_column,
                id_column,
            }),
            _ => {
                self.errors.push(ValidationError::ScheduledIncorrectColumns { table: t.name.clone() });
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_built_tables_get_1_3_names_sorted_and_a_unique_primary_key() {
        let row = ProductType::new([("id", AlgebraicType::U32), ("grp", AlgebraicType::U8)]);
        let t = TableDef::plain("acct", 0, row).with_unique_key(0).with_btree_index(&[1]);
        let names: Vec<&str> = t.indexes.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["acct_grp_idx_btree", "acct_id_idx_btree"]);
        assert_eq!(t.constraints[0].name, "acct_id_key");
        assert_eq!(t.primary_key, Some(0));
        assert!(t.index_is_unique(&t.indexes[1]));
        assert!(!t.index_is_unique(&t.indexes[0]));
        assert_eq!((t.table_type, t.table_access), (TableType::User, TableAccess::Public));
    }
}
