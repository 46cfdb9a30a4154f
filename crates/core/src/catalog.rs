//! The system tables as SpacetimeDB 1.3 shows them through SQL (`st_table`, `st_column`,
//! `st_index`, `st_constraint`, `st_sequence`, `st_module`, `st_client`, `st_var`,
//! `st_scheduled`, `st_row_level_security`): built on demand from the module's definition, the
//! store and the database's state, so they are always true. The system tables describe
//! themselves too, with the ids and names 1.3 gives them; a module's tables, indexes,
//! constraints, sequences and schedules are numbered from 4097, as in 1.3.

use epoch_sats::{bsatn, AlgebraicType, AlgebraicValue, ProductType, SumType, Typespace, U256};
use epoch_schema::{ModuleDef, TableAccess, TableDef};
use epoch_store::Store;

use crate::clients::WIRE_TABLE_ID_BASE;

/// The first id 1.3 gives a module's own objects (tables, indexes, constraints, sequences,
/// schedules).
const FIRST_USER_ID: u32 = WIRE_TABLE_ID_BASE;
/// How many ids 1.3's system sequences hand out at a time.
const SEQUENCE_ALLOCATION_STEP: i128 = 4096;

/// What the catalog shows of the database besides its schema.
pub struct CatalogInputs<'a> {
    pub def: &'a ModuleDef,
    pub store: &'a Store,
    pub database_identity: [u8; 32],
    pub owner: [u8; 32],
    pub program: &'a [u8],
    /// Connected clients: (identity, connection id).
    pub clients: Vec<([u8; 32], [u8; 16])>,
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

fn s(v: &str) -> AlgebraicValue {
    AlgebraicValue::string(v)
}

/// The system tables' row types (1.3's columns, in 1.3's order).
fn system_tables() -> Vec<(u32, &'static str, ProductType, Option<Vec<u16>>)> {
    use AlgebraicType as T;
    let p = |cols: &[(&str, AlgebraicType)]| ProductType::new(cols.iter().map(|(n, t)| (*n, t.clone())));
    let index_algorithm = T::Sum(SumType::new([("Unused", T::U128), ("BTree", T::array(T::U16)), ("Direct", T::U16)]));
    let constraint_data = T::Sum(SumType::new([("Unused", T::U128), ("Unique", T::array(T::U16))]));
    let var_value = T::Sum(SumType::new([
        ("Bool", T::Bool),
        ("I8", T::I8),
        ("U8", T::U8),
        ("I16", T::I16),
        ("U16", T::U16),
        ("I32", T::I32),
        ("U32", T::U32),
        ("I64", T::I64),
        ("U64", T::U64),
        ("I128", T::I128),
        ("U128", T::U128),
        ("F32", T::F32),
        ("F64", T::F64),
        ("String", T::String),
    ]));
    vec![
        (
            1,
            "st_table",
            p(&[
                ("table_id", T::U32),
                ("table_name", T::String),
                ("table_type", T::String),
                ("table_access", T::String),
                ("table_primary_key", T::option(T::array(T::U16))),
            ]),
            Some(vec![0]),
        ),
        (
            2,
            "st_column",
            p(&[("table_id", T::U32), ("col_pos", T::U16), ("col_name", T::String), ("col_type", T::array(T::U8))]),
            None,
        ),
        (
            3,
            "st_sequence",
            p(&[
                ("sequence_id", T::U32),
                ("sequence_name", T::String),
                ("table_id", T::U32),
                ("col_pos", T::U16),
                ("increment", T::I128),
                ("start", T::I128),
                ("min_value", T::I128),
                ("max_value", T::I128),
                ("allocated", T::I128),
            ]),
            Some(vec![0]),
        ),
        (
            4,
            "st_index",
            p(&[
                ("index_id", T::U32),
                ("table_id", T::U32),
                ("index_name", T::String),
                ("index_algorithm", index_algorithm),
            ]),
            Some(vec![0]),
        ),
        (
            5,
            "st_constraint",
            p(&[
                ("constraint_id", T::U32),
                ("constraint_name", T::String),
                ("table_id", T::U32),
                ("constraint_data", constraint_data),
            ]),
            Some(vec![0]),
        ),
        (
            6,
            "st_module",
            p(&[
                ("database_identity", T::U256),
                ("owner_identity", T::U256),
                ("program_kind", T::U8),
                ("program_hash", T::U256),
                ("program_bytes", T::array(T::U8)),
                ("module_version", T::String),
            ]),
            None,
        ),
        (7, "st_client", p(&[("identity", T::U256), ("connection_id", T::U128)]), None),
        (8, "st_var", p(&[("name", T::String), ("value", var_value)]), Some(vec![0])),
        (
            9,
            "st_scheduled",
            p(&[
                ("schedule_id", T::U32),
                ("table_id", T::U32),
                ("reducer_name", T::String),
                ("schedule_name", T::String),
                ("at_column", T::U16),
            ]),
            Some(vec![0]),
        ),
        (10, "st_row_level_security", p(&[("table_id", T::U32), ("sql", T::String)]), Some(vec![1])),
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
enum Numbers {
    Tables,
    Indexes,
    Constraints,
    Schedules,
    Sequences,
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
    let row_limit = inputs.row_limit;
    move |store: &Store| {
        Some(build(&CatalogInputs {
            def: &def,
            store,
            database_identity: identity,
            owner,
            program: &program,
            clients,
            row_limit,
        }))
    }
}

/// Builds the store holding the system tables (rows as of now).
pub fn build(inputs: &CatalogInputs<'_>) -> Store {
    let system = system_tables();
    let def = ModuleDef {
        typespace: Typespace { types: Vec::new() },
        tables: system.iter().map(|(_, name, ty, _)| TableDef::plain(*name, 0, ty.clone())).collect(),
        reducers: Vec::new(),
        types: Vec::new(),
        row_level_security: Vec::new(),
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

/// Every user table with its id (by the store's numbering, which keeps ids across updates).
fn user_tables<'a>(inputs: &'a CatalogInputs<'_>) -> Vec<(u32, &'a TableDef)> {
    let mut out: Vec<(u32, &TableDef)> =
        inputs.def.tables.iter().filter_map(|t| Some((FIRST_USER_ID + inputs.store.table_id(&t.name)?, t))).collect();
    out.sort_by_key(|(id, _)| *id);
    out
}

#[allow(clippy::type_complexity)]
fn catalog_rows(
    inputs: &CatalogInputs<'_>,
    system: &[(u32, &'static str, ProductType, Option<Vec<u16>>)],
) -> Vec<(&'static str, Vec<AlgebraicValue>)> {
    let ts = &inputs.def.typespace;
    let user = user_tables(inputs);
    let p = |v: Vec<AlgebraicValue>| AlgebraicValue::product(v);

    let mut st_table = Vec::new();
    let mut st_column = Vec::new();
    for (id, name, ty, pk) in system {
        st_table.push(p(vec![AlgebraicValue::U32(*id), s(name), s("system"), s("public"), opt_cols(pk.clone())]));
        for (pos, e) in ty.elements.iter().enumerate() {
            st_column.push(p(vec![
                AlgebraicValue::U32(*id),
                AlgebraicValue::U16(pos as u16),
                s(e.name.as_deref().unwrap_or("")),
                type_bytes(&Typespace { types: Vec::new() }, &e.ty),
            ]));
        }
    }
    for (id, t) in &user {
        let access = if t.table_access == TableAccess::Public { "public" } else { "private" };
        st_table.push(p(vec![
            AlgebraicValue::U32(*id),
            s(&t.name),
            s("user"),
            s(access),
            opt_cols(t.primary_key.map(|k| vec![k])),
        ]));
        for (pos, e) in t.row_type.elements.iter().enumerate() {
            st_column.push(p(vec![
                AlgebraicValue::U32(*id),
                AlgebraicValue::U16(pos as u16),
                s(e.name.as_deref().unwrap_or("")),
                type_bytes(ts, &e.ty),
            ]));
        }
    }

    let btree = |cols: &[u16]| AlgebraicValue::sum(1, u16_array(cols));
    let mut st_index: Vec<AlgebraicValue> = SYSTEM_INDEXES
        .iter()
        .map(|(id, table, name, cols)| {
            p(vec![AlgebraicValue::U32(*id), AlgebraicValue::U32(*table), s(name), btree(cols)])
        })
        .collect();
    let mut st_constraint: Vec<AlgebraicValue> = SYSTEM_CONSTRAINTS
        .iter()
        .map(|(id, name, table, cols)| {
            p(vec![
                AlgebraicValue::U32(*id),
                s(name),
                AlgebraicValue::U32(*table),
                AlgebraicValue::sum(1, u16_array(cols)),
            ])
        })
        .collect();
    let mut st_scheduled = Vec::new();
    let mut user_sequences = Vec::new();
    let (mut next_index, mut next_constraint, mut next_schedule) = (FIRST_USER_ID, FIRST_USER_ID, FIRST_USER_ID);
    for (id, t) in &user {
        for idx in &t.indexes {
            let algo = match &idx.algorithm {
                epoch_schema::IndexAlgorithm::BTree(cols) => btree(cols),
                epoch_schema::IndexAlgorithm::Direct(c) => AlgebraicValue::sum(2, AlgebraicValue::U16(*c)),
            };
            st_index.push(p(vec![AlgebraicValue::U32(next_index), AlgebraicValue::U32(*id), s(&idx.name), algo]));
            next_index += 1;
        }
        for c in &t.constraints {
            st_constraint.push(p(vec![
                AlgebraicValue::U32(next_constraint),
                s(&c.name),
                AlgebraicValue::U32(*id),
                AlgebraicValue::sum(1, u16_array(&c.unique_columns)),
            ]));
            next_constraint += 1;
        }
        if let Some(sch) = &t.schedule {
            st_scheduled.push(p(vec![
                AlgebraicValue::U32(next_schedule),
                AlgebraicValue::U32(*id),
                s(&sch.reducer_name),
                s(&sch.name),
                AlgebraicValue::U16(sch.at_column),
            ]));
            next_schedule += 1;
        }
        for q in &t.sequences {
            user_sequences.push((*id, q));
        }
    }
    let counts = |n: Numbers| match n {
        Numbers::Tables => user.len(),
        Numbers::Indexes => (next_index - FIRST_USER_ID) as usize,
        Numbers::Constraints => (next_constraint - FIRST_USER_ID) as usize,
        Numbers::Schedules => (next_schedule - FIRST_USER_ID) as usize,
        Numbers::Sequences => user_sequences.len(),
    };
    let seq_row = |id: u32, name: &str, table: u32, col: u16, start: i128, min: i128, max: i128, allocated: i128| {
        p(vec![
            AlgebraicValue::U32(id),
            s(name),
            AlgebraicValue::U32(table),
            AlgebraicValue::U16(col),
            AlgebraicValue::I128(1),
            AlgebraicValue::I128(start),
            AlgebraicValue::I128(min),
            AlgebraicValue::I128(max),
            AlgebraicValue::I128(allocated),
        ])
    };
    let first = FIRST_USER_ID as i128;
    let mut st_sequence: Vec<AlgebraicValue> = SYSTEM_SEQUENCES
        .iter()
        .map(|(id, name, table, numbers)| {
            // 1.3 reserves a block of ids when the first object of the kind is created.
            let allocated =
                if counts(*numbers) > 0 { first + SEQUENCE_ALLOCATION_STEP } else { SEQUENCE_ALLOCATION_STEP };
            seq_row(*id, name, *table, 0, first, 1, i128::MAX, allocated)
        })
        .collect();
    for (k, (table, q)) in user_sequences.iter().enumerate() {
        let store_table = inputs.store.table(table - FIRST_USER_ID).ok();
        let next = store_table
            .and_then(|t| t.sequences.iter().find(|s| s.column == q.column))
            .map(|s| s.next)
            .unwrap_or(q.start.unwrap_or(1));
        let start = q.start.unwrap_or(1);
        // Values handed out so far, in 1.3's blocks.
        let used = next - start;
        let allocated = if used <= 0 {
            0
        } else {
            start - 1 + ((used + SEQUENCE_ALLOCATION_STEP - 1) / SEQUENCE_ALLOCATION_STEP) * SEQUENCE_ALLOCATION_STEP
        };
        st_sequence.push(seq_row(
            FIRST_USER_ID + k as u32,
            &q.name,
            *table,
            q.column,
            start,
            q.min_value.unwrap_or(1),
            q.max_value.unwrap_or(i128::MAX),
            allocated,
        ));
    }

    let owner_ctx = epoch_query::QueryContext { is_owner: true, sender: Some([0; 32]), ..Default::default() };
    // In the order the database has held them (see `migrate::filter_order`), not the module's.
    let st_rls = inputs
        .store
        .row_level_security
        .iter()
        .filter_map(|sql| {
            let table = epoch_query::Filter::compile(inputs.store, sql, owner_ctx).ok()?.table_id();
            Some(p(vec![AlgebraicValue::U32(FIRST_USER_ID + table), s(sql)]))
        })
        .collect();
    let hash: [u8; 32] = {
        use sha3::Digest;
        sha3::Keccak256::digest(inputs.program).into()
    };
    let mut hash_le = hash;
    hash_le.reverse();
    let st_module = vec![p(vec![
        u256_le(inputs.database_identity),
        u256_le(inputs.owner),
        AlgebraicValue::U8(0),
        u256_le(hash_le),
        AlgebraicValue::bytes(inputs.program),
        s("0.0.1"),
    ])];
    let st_client = inputs
        .clients
        .iter()
        .map(|(i, c)| p(vec![u256_le(*i), AlgebraicValue::U128(u128::from_le_bytes(*c))]))
        .collect();
    let st_var = inputs
        .row_limit
        .map(|n| p(vec![s(epoch_query::ROW_LIMIT_VAR), AlgebraicValue::sum(8, AlgebraicValue::U64(n))]))
        .into_iter()
        .collect();
    vec![
        ("st_table", st_table),
        ("st_column", st_column),
        ("st_sequence", st_sequence),
        ("st_index", st_index),
        ("st_constraint", st_constraint),
        ("st_module", st_module),
        ("st_client", st_client),
        ("st_var", st_var),
        ("st_scheduled", st_scheduled),
        ("st_row_level_security", st_rls),
    ]
}
