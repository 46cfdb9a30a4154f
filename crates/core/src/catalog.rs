//! The system tables as SpacetimeDB 1.3 shows them through SQL (`st_table`, `st_column`,
//! `st_index`, `st_constraint`, `st_sequence`, `st_module`, `st_client`, `st_var`,
//! `st_scheduled`, `st_row_level_security`): built on demand from the module's definition, the
//! store and the database's state, so they are always true. The system tables describe
//! themselves too, with the ids and names 1.3 gives them; a module's tables, indexes,
//! constraints, sequences and schedules are numbered from 4097, as in 1.3 (from 4096 for a 2.x
//! module, as in 2.x).

use epoch_sats::{bsatn, AlgebraicType, AlgebraicValue, Identity, ProductType, SumType, Typespace, U256};
use epoch_schema::{DefVersion, ModuleDef, TableAccess, TableDef};
use epoch_store::Store;

use crate::clients::first_user_id;
/// How many ids 1.3's system sequences hand out at a time.
const SEQUENCE_ALLOCATION_STEP: i128 = 4096;

/// What the catalog shows of the database besides its schema.
pub struct CatalogInputs<'a> {
    pub def: &'a ModuleDef,
    pub store: &'a Store,
    pub database_identity: Identity,
    pub owner: Identity,
    pub program: &'a [u8],
    /// Connected clients: (identity, connection id).
    pub clients: Vec<crate::client_journal::ClientKey>,
    /// The token payload of each connection that presented one (2.x's
    /// `st_connection_credentials`), by connection id.
    pub credentials: Vec<([u8; 16], std::sync::Arc<str>)>,
    pub row_limit: Option<u64>,
}

fn u256_le(bytes: [u8; 32]) -> AlgebraicValue {
    AlgebraicValue::U256(Box::new(U256::from_le_bytes(bytes)))
}

fn opt_cols(cols: Option<Vec<u16>>) -> AlgebraicValue {
    match cols {
        Some(c) => AlgebraicValue::some(u16_array(&c)),
        None => AlgebraicValue::none(),
    }
}

fn u16_array(cols: &[u16]) -> AlgebraicValue {
    AlgebraicValue::Array(cols.iter().map(|c| AlgebraicValue::U16(*c)).collect())
}

pub(crate) fn s(v: &str) -> AlgebraicValue {
    AlgebraicValue::string(v)
}

/// A system table: its id, name, row type (1.3's columns, in 1.3's order) and primary key.
pub(crate) type SystemTableDef = (u32, &'static str, ProductType, Option<Vec<u16>>);

pub(crate) fn product(cols: &[(&str, AlgebraicType)]) -> ProductType {
    ProductType::new(cols.iter().map(|(n, t)| (*n, t.clone())))
}

/// The system tables of a database whose module has definition `version`, in id order.
fn system_tables(version: DefVersion) -> Vec<SystemTableDef> {
    let mut tables = schema_tables(version);
    tables.extend(server_tables());
    if version == DefVersion::V10 {
        tables.extend(crate::catalog_v10::tables());
    }
    tables
}

/// The system tables that describe the module's schema: tables, columns, sequences, indexes
/// and constraints.
fn schema_tables(version: DefVersion) -> Vec<SystemTableDef> {
    use AlgebraicType as T;
    let mut algorithms = vec![("Unused", T::U128), ("BTree", T::array(T::U16)), ("Direct", T::U16)];
    if version == DefVersion::V10 {
        // 2.x adds hash indexes as a fourth variant.
        algorithms.push(("Hash", T::array(T::U16)));
    }
    let index_algorithm = T::Sum(SumType::new(algorithms));
    let constraint_data = T::Sum(SumType::new([("Unused", T::U128), ("Unique", T::array(T::U16))]));
    let st_table = product(&[
        ("table_id", T::U32),
        ("table_name", T::String),
        ("table_type", T::String),
        ("table_access", T::String),
        ("table_primary_key", T::option(T::array(T::U16))),
    ]);
    let st_column =
        product(&[("table_id", T::U32), ("col_pos", T::U16), ("col_name", T::String), ("col_type", T::array(T::U8))]);
    let st_sequence = product(&[
        ("sequence_id", T::U32),
        ("sequence_name", T::String),
        ("table_id", T::U32),
        ("col_pos", T::U16),
        ("increment", T::I128),
        ("start", T::I128),
        ("min_value", T::I128),
        ("max_value", T::I128),
        ("allocated", T::I128),
    ]);
    let st_index = product(&[
        ("index_id", T::U32),
        ("table_id", T::U32),
        ("index_name", T::String),
        ("index_algorithm", index_algorithm),
    ]);
    let st_constraint = product(&[
        ("constraint_id", T::U32),
        ("constraint_name", T::String),
        ("table_id", T::U32),
        ("constraint_data", constraint_data),
    ]);
    vec![
        (1, "st_table", st_table, Some(vec![0])),
        (2, "st_column", st_column, None),
        (3, "st_sequence", st_sequence, Some(vec![0])),
        (4, "st_index", st_index, Some(vec![0])),
        (5, "st_constraint", st_constraint, Some(vec![0])),
    ]
}

/// The system tables of the running database: module, clients, variables, schedules and
/// row-level security.
fn server_tables() -> Vec<SystemTableDef> {
    use AlgebraicType as T;
    let scalar = |n: &'static str, t: AlgebraicType| (n, t);
    let var_value = T::Sum(SumType::new([
        scalar("Bool", T::Bool),
        scalar("I8", T::I8),
        scalar("U8", T::U8),
        scalar("I16", T::I16),
        scalar("U16", T::U16),
        scalar("I32", T::I32),
        scalar("U32", T::U32),
        scalar("I64", T::I64),
        scalar("U64", T::U64),
        scalar("I128", T::I128),
        scalar("U128", T::U128),
        scalar("F32", T::F32),
        scalar("F64", T::F64),
        scalar("String", T::String),
    ]));
    let st_module = product(&[
        ("database_identity", T::U256),
        ("owner_identity", T::U256),
        ("program_kind", T::U8),
        ("program_hash", T::U256),
        ("program_bytes", T::array(T::U8)),
        ("module_version", T::String),
    ]);
    let st_scheduled = product(&[
        ("schedule_id", T::U32),
        ("table_id", T::U32),
        ("reducer_name", T::String),
        ("schedule_name", T::String),
        ("at_column", T::U16),
    ]);
    vec![
        (6, "st_module", st_module, None),
        (7, "st_client", product(&[("identity", T::U256), ("connection_id", T::U128)]), None),
        (8, "st_var", product(&[("name", T::String), ("value", var_value)]), Some(vec![0])),
        (9, "st_scheduled", st_scheduled, Some(vec![0])),
        (10, "st_row_level_security", product(&[("table_id", T::U32), ("sql", T::String)]), Some(vec![1])),
    ]
}

/// The system tables' indexes: (id, table, name, columns).
const SYSTEM_INDEXES: [(u32, u32, &str, &[u16]); 12] = [
    (1, 1, "st_table_table_id_idx_btree", &[0]),
    (2, 1, "st_table_table_name_idx_btree", &[1]),
    (3, 2, "st_column_table_id_col_pos_idx_btree", &[0, 1]),
    (4, 3, "st_sequence_sequence_id_idx_btree", &[0]),
    (5, 4, "st_index_index_id_idx_btree", &[0]),
    (6, 5, "st_constraint_constraint_id_idx_btree", &[0]),
    (7, 7, "st_client_identity_connection_id_idx_btree", &[0, 1]),
    (8, 8, "st_var_name_idx_btree", &[0]),
    (9, 9, "st_scheduled_schedule_id_idx_btree", &[0]),
    (10, 9, "st_scheduled_table_id_idx_btree", &[1]),
    (11, 10, "st_row_level_security_table_id_idx_btree", &[0]),
    (12, 10, "st_row_level_security_sql_idx_btree", &[1]),
];

/// The system tables' unique constraints: (id, name, table, columns).
const SYSTEM_CONSTRAINTS: [(u32, &str, u32, &[u16]); 11] = [
    (1, "st_table_table_id_key", 1, &[0]),
    (2, "st_table_table_name_key", 1, &[1]),
    (3, "st_column_table_id_col_pos_key", 2, &[0, 1]),
    (4, "st_sequence_sequence_id_key", 3, &[0]),
    (5, "st_index_index_id_key", 4, &[0]),
    (6, "st_constraint_constraint_id_key", 5, &[0]),
    (7, "st_client_identity_connection_id_key", 7, &[0, 1]),
    (8, "st_var_name_key", 8, &[0]),
    (9, "st_scheduled_schedule_id_key", 9, &[0]),
    (10, "st_scheduled_table_id_key", 9, &[1]),
    (11, "st_row_level_security_sql_key", 10, &[1]),
];

/// The system sequences: (id, name, table), and which kind of the module's objects each numbers
/// (its allocation shows whether the module has any).
const SYSTEM_SEQUENCES: [(u32, &str, u32, Numbers); 5] = [
    (1, "st_table_table_id_seq", 1, Numbers::Tables),
    (2, "st_index_index_id_seq", 4, Numbers::Indexes),
    (3, "st_constraint_constraint_id_seq", 5, Numbers::Constraints),
    (4, "st_scheduled_schedule_id_seq", 9, Numbers::Schedules),
    (5, "st_sequence_sequence_id_seq", 3, Numbers::Sequences),
];

#[derive(Clone, Copy)]
pub(crate) enum Numbers {
    Tables,
    Indexes,
    Constraints,
    Schedules,
    Sequences,
    /// 2.x views.
    Views,
    /// 2.x view arguments (2.8.3 numbers none).
    ViewArgs,
}

fn type_bytes(ts: &Typespace, ty: &AlgebraicType) -> AlgebraicValue {
    let mut out = Vec::new();
    epoch_schema::raw::write_algebraic_type(&mut out, &crate::migrate::resolve(ts, ty, 0));
    AlgebraicValue::bytes(&out)
}

/// The catalog builder `epoch_query::run_with_catalog` calls when a statement reads a system
/// table (nothing is built otherwise). The inputs are copied so the builder does not borrow the
/// database the query may change.
pub fn build_lazily(inputs: &CatalogInputs<'_>) -> impl FnOnce(&Store) -> Option<Store> {
    let def = inputs.def.clone();
    let (identity, owner) = (inputs.database_identity, inputs.owner);
    let program: Vec<u8> = inputs.program.to_vec();
    let clients = inputs.clients.clone();
    let credentials = inputs.credentials.clone();
    let row_limit = inputs.row_limit;
    move |store: &Store| {
        Some(build(&CatalogInputs {
            def: &def,
            store,
            database_identity: identity,
            owner,
            program: &program,
            clients,
            credentials,
            row_limit,
        }))
    }
}

/// Builds the store holding the system tables (rows as of now).
pub fn build(inputs: &CatalogInputs<'_>) -> Store {
    let system = system_tables(inputs.def.version);
    let def = ModuleDef {
        typespace: Typespace { types: Vec::new() },
        tables: system.iter().map(|(_, name, ty, _)| system_table_def(name, ty)).collect(),
        reducers: Vec::new(),
        types: Vec::new(),
        row_level_security: Vec::new(),
        ..Default::default()
    };
    let mut store = Store::new(&def);
    let rows = catalog_rows(inputs, &system);
    store.begin();
    for (table, values) in rows {
        let Some(id) = store.table_id(table) else { continue };
        for v in values {
            let mut row = bsatn::to_vec(&v);
            // Rows are built to fit their tables; a duplicate is no loss.
            let _ = store.insert(id, &mut row);
        }
    }
    let _ = store.commit();
    store
}

/// The catalog's table for system table `name`: public, but for the one 2.x keeps private.
fn system_table_def(name: &str, ty: &ProductType) -> TableDef {
    let mut table = TableDef::plain(name, 0, ty.clone());
    if name == crate::catalog_v10::PRIVATE_SYSTEM_TABLE {
        table.table_access = TableAccess::Private;
    }
    table
}

/// Every user table with its id (by the store's numbering, which keeps ids across updates).
fn user_tables<'a>(inputs: &'a CatalogInputs<'_>) -> Vec<(u32, &'a TableDef)> {
    let first = first_user_id(inputs.def.version);
    let mut out: Vec<(u32, &TableDef)> =
        inputs.def.tables.iter().filter_map(|t| Some((first + inputs.store.table_id(&t.name)?, t))).collect();
    out.sort_by_key(|(id, _)| *id);
    out
}

pub(crate) type Rows = Vec<AlgebraicValue>;

pub(crate) fn row(values: Vec<AlgebraicValue>) -> AlgebraicValue {
    AlgebraicValue::product(values)
}

fn btree(cols: &[u16]) -> AlgebraicValue {
    AlgebraicValue::sum(1, u16_array(cols))
}

/// Every system table's rows, by table name.
fn catalog_rows(inputs: &CatalogInputs<'_>, system: &[SystemTableDef]) -> Vec<(&'static str, Rows)> {
    let version = inputs.def.version;
    let first = first_user_id(version);
    let user = user_tables(inputs);
    // 2.x's view tables follow the module's.
    let next_id = user.last().map_or(first, |(id, _)| id + 1);
    let views = crate::catalog_v10::view_tables(inputs.def, next_id);
    let with_views: Vec<(u32, &TableDef)> =
        user.iter().copied().chain(views.iter().map(|(id, _, t)| (*id, t))).collect();
    let (st_table, st_column) = table_rows(inputs, system, &with_views);
    let mut objects = object_rows(&with_views, first, version);
    objects.views = views.len();
    let st_sequence = sequence_rows(inputs, &objects);
    let (st_module, st_client, st_var, st_rls) = server_rows(inputs);
    let mut out = vec![
        ("st_table", st_table),
        ("st_column", st_column),
        ("st_sequence", st_sequence),
        ("st_index", objects.st_index),
        ("st_constraint", objects.st_constraint),
        ("st_module", st_module),
        ("st_client", st_client),
        ("st_var", st_var),
        ("st_scheduled", objects.st_scheduled),
        ("st_row_level_security", st_rls),
    ];
    if version == DefVersion::V10 {
        out.extend(crate::catalog_v10::rows(inputs, &user, &views, first));
    }
    out
}

/// `st_table` and `st_column`: the system tables first, then the module's.
fn table_rows(inputs: &CatalogInputs<'_>, system: &[SystemTableDef], user: &[(u32, &TableDef)]) -> (Rows, Rows) {
    let no_types = Typespace { types: Vec::new() };
    let (mut st_table, mut st_column) = (Vec::new(), Vec::new());
    let mut columns = |id: u32, ts: &Typespace, ty: &ProductType| {
        for (pos, e) in ty.elements.iter().enumerate() {
            st_column.push(row(vec![
                AlgebraicValue::U32(id),
                AlgebraicValue::U16(pos as u16),
                s(e.name.as_deref().unwrap_or("")),
                type_bytes(ts, &e.ty),
            ]));
        }
    };
    for (id, name, ty, pk) in system {
        let access = if *name == crate::catalog_v10::PRIVATE_SYSTEM_TABLE { "private" } else { "public" };
        st_table.push(row(vec![AlgebraicValue::U32(*id), s(name), s("system"), s(access), opt_cols(pk.clone())]));
        columns(*id, &no_types, ty);
    }
    for (id, t) in user {
        let access = if t.table_access == TableAccess::Public { "public" } else { "private" };
        let pk = opt_cols(t.primary_key.map(|k| vec![k]));
        st_table.push(row(vec![AlgebraicValue::U32(*id), s(&t.name), s("user"), s(access), pk]));
        columns(*id, &inputs.def.typespace, &t.row_type);
    }
    (st_table, st_column)
}

/// The rows of the module's indexes, constraints and schedules (after the system ones), and
/// its sequences, numbered as 1.3 numbers them.
struct ObjectRows<'a> {
    st_index: Rows,
    st_constraint: Rows,
    st_scheduled: Rows,
    sequences: Vec<(u32, &'a epoch_schema::SequenceDef)>,
    user_tables: usize,
    /// 2.x views.
    views: usize,
    /// How many of the rows above are the system tables' own.
    system_indexes: usize,
    system_constraints: usize,
}

impl ObjectRows<'_> {
    /// How many of the module's objects of a kind there are.
    fn count(&self, n: Numbers) -> usize {
        let user = |rows: &Rows, system: usize| rows.len() - system;
        match n {
            Numbers::Tables => self.user_tables,
            Numbers::Indexes => user(&self.st_index, self.system_indexes),
            Numbers::Constraints => user(&self.st_constraint, self.system_constraints),
            Numbers::Schedules => self.st_scheduled.len(),
            Numbers::Sequences => self.sequences.len(),
            Numbers::Views => self.views,
            Numbers::ViewArgs => 0,
        }
    }
}

fn object_rows<'a>(user: &[(u32, &'a TableDef)], first: u32, version: DefVersion) -> ObjectRows<'a> {
    let u32v = AlgebraicValue::U32;
    let v10 = version == DefVersion::V10;
    let indexes = SYSTEM_INDEXES.iter().chain(crate::catalog_v10::INDEXES.iter().filter(|_| v10));
    let constraints = SYSTEM_CONSTRAINTS.iter().chain(crate::catalog_v10::CONSTRAINTS.iter().filter(|_| v10));
    let mut o = ObjectRows {
        st_index: indexes.map(|(id, t, name, cols)| row(vec![u32v(*id), u32v(*t), s(name), btree(cols)])).collect(),
        st_constraint: constraints
            .map(|(id, name, t, cols)| row(vec![u32v(*id), s(name), u32v(*t), btree(cols)]))
            .collect(),
        st_scheduled: Vec::new(),
        sequences: Vec::new(),
        user_tables: user.len(),
        views: 0,
        system_indexes: 0,
        system_constraints: 0,
    };
    (o.system_indexes, o.system_constraints) = (o.st_index.len(), o.st_constraint.len());
    let (system_indexes, system_constraints) = (o.system_indexes, o.system_constraints);
    let next = |rows: &Rows, system: usize| u32v(first + (rows.len() - system) as u32);
    for (id, t) in user {
        for idx in &t.indexes {
            let algo = match &idx.algorithm {
                epoch_schema::IndexAlgorithm::BTree(cols) => btree(cols),
                epoch_schema::IndexAlgorithm::Hash(cols) => AlgebraicValue::sum(3, u16_array(cols)),
                epoch_schema::IndexAlgorithm::Direct(c) => AlgebraicValue::sum(2, AlgebraicValue::U16(*c)),
            };
            let n = next(&o.st_index, system_indexes);
            o.st_index.push(row(vec![n, u32v(*id), s(&idx.name), algo]));
        }
        for c in &t.constraints {
            let n = next(&o.st_constraint, system_constraints);
            o.st_constraint.push(row(vec![n, s(&c.name), u32v(*id), btree(&c.unique_columns)]));
        }
        if let Some(sch) = &t.schedule {
            let n = next(&o.st_scheduled, 0);
            let at = AlgebraicValue::U16(sch.at_column);
            o.st_scheduled.push(row(vec![n, u32v(*id), s(&sch.reducer_name), s(&sch.name), at]));
        }
        o.sequences.extend(t.sequences.iter().map(|q| (*id, q)));
    }
    o
}

/// One `st_sequence` row (every sequence increments by 1).
#[allow(clippy::too_many_arguments)]
fn sequence_row(
    id: u32,
    name: &str,
    table: u32,
    col: u16,
    start: i128,
    min: i128,
    max: i128,
    allocated: i128,
) -> AlgebraicValue {
    let i = AlgebraicValue::I128;
    row(vec![
        AlgebraicValue::U32(id),
        s(name),
        AlgebraicValue::U32(table),
        AlgebraicValue::U16(col),
        i(1),
        i(start),
        i(min),
        i(max),
        i(allocated),
    ])
}

/// `st_sequence`: the system sequences, then the module's with what they handed out so far.
fn sequence_rows(inputs: &CatalogInputs<'_>, objects: &ObjectRows<'_>) -> Rows {
    let version = inputs.def.version;
    // System sequences start where 1.3's user ids do, in 2.x too.
    let first = first_user_id(epoch_schema::DefVersion::V9) as i128;
    let user_base = first_user_id(version);
    let v10 = crate::catalog_v10::SEQUENCES.iter().filter(|_| version == DefVersion::V10);
    let mut rows: Rows = SYSTEM_SEQUENCES
        .iter()
        .chain(v10)
        .map(|(id, name, table, numbers)| {
            // A block of ids is reserved when the first object of the kind is created, from
            // the first user id (4097 in 1.3, 4096 in 2.x).
            let allocated = if objects.count(*numbers) > 0 {
                user_base as i128 + SEQUENCE_ALLOCATION_STEP
            } else {
                SEQUENCE_ALLOCATION_STEP
            };
            sequence_row(*id, name, *table, 0, first, 1, i128::MAX, allocated)
        })
        .collect();
    for (k, (table, q)) in objects.sequences.iter().enumerate() {
        let store_table = inputs.store.table(table - user_base).ok();
        let next = store_table
            .and_then(|t| t.sequences.iter().find(|s| s.column == q.column))
            .map(|s| s.next)
            .unwrap_or(q.start.unwrap_or(1));
        let start = q.start.unwrap_or(1);
        let allocated = user_sequence_allocated(version, start, next - start);
        let (min, max) = (q.min_value.unwrap_or(1), q.max_value.unwrap_or(i128::MAX));
        rows.push(sequence_row(user_base + k as u32, &q.name, *table, q.column, start, min, max, allocated));
    }
    rows
}

/// What a module's sequence that started at `start` and handed out `used` values shows as
/// allocated: whole blocks of ids, counted from `start - 1` in 1.3 (0 before the first) and
/// from `start` in 2.x.
fn user_sequence_allocated(version: DefVersion, start: i128, used: i128) -> i128 {
    let blocks = if used <= 0 { 0 } else { (used + SEQUENCE_ALLOCATION_STEP - 1) / SEQUENCE_ALLOCATION_STEP };
    match version {
        DefVersion::V10 => start + blocks * SEQUENCE_ALLOCATION_STEP,
        _ if blocks == 0 => 0,
        _ => start - 1 + blocks * SEQUENCE_ALLOCATION_STEP,
    }
}

/// `st_module`, `st_client`, `st_var` and `st_row_level_security`.
fn server_rows(inputs: &CatalogInputs<'_>) -> (Rows, Rows, Rows, Rows) {
    let first = first_user_id(inputs.def.version);
    let owner_ctx =
        epoch_query::QueryContext { is_owner: true, sender: Some(Identity::default()), ..Default::default() };
    // In the order the database has held them (see `migrate::filter_order`), not the module's.
    let st_rls = inputs
        .store
        .row_level_security
        .iter()
        .filter_map(|sql| {
            let table = epoch_query::Filter::compile(inputs.store, sql, owner_ctx).ok()?.table_id();
            Some(row(vec![AlgebraicValue::U32(first + table), s(sql)]))
        })
        .collect();
    let mut hash_le = crate::program::program_hash(inputs.program);
    hash_le.reverse();
    let st_module = vec![row(vec![
        u256_le(inputs.database_identity.to_le_bytes()),
        u256_le(inputs.owner.to_le_bytes()),
        AlgebraicValue::U8(0),
        u256_le(hash_le),
        AlgebraicValue::bytes(inputs.program),
        s("0.0.1"),
    ])];
    let st_client = inputs
        .clients
        .iter()
        .map(|(i, c)| row(vec![u256_le(i.to_le_bytes()), AlgebraicValue::U128(u128::from_le_bytes(*c))]))
        .collect();
    let st_var = inputs
        .row_limit
        .map(|n| row(vec![s(epoch_query::ROW_LIMIT_VAR), AlgebraicValue::sum(8, AlgebraicValue::U64(n))]))
        .into_iter()
        .collect();
    (st_module, st_client, st_var, st_rls)
}
