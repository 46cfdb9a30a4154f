//! The system tables SpacetimeDB 2.x added (ids 11 to 20) and the rows a 2.x module gives them:
//! connection credentials (private), views with their parameters and columns, event tables,
//! and the accessor tables that map canonical names to the module's own. Also the tables that
//! back views in `st_table`, `st_column` and `st_index`: one per view, after the module's
//! tables in name order, with a hidden `arg_hash` column first and an index on it.

use epoch_sats::{AlgebraicType, AlgebraicValue, ProductType};
use epoch_schema::{IndexAlgorithm, IndexDef, ModuleDef, TableAccess, TableDef};

use crate::catalog::{product, row, s, CatalogInputs, Numbers, Rows, SystemTableDef};

/// The one system table a caller other than the owner cannot read.
pub(crate) const PRIVATE_SYSTEM_TABLE: &str = "st_connection_credentials";

/// The system tables 2.x added, in id order.
pub(crate) fn tables() -> Vec<SystemTableDef> {
    use AlgebraicType as T;
    let bytes = || T::array(T::U8);
    vec![
        (11, PRIVATE_SYSTEM_TABLE, product(&[("connection_id", T::U128), ("jwt_payload", T::String)]), Some(vec![0])),
        (
            12,
            "st_view",
            product(&[
                ("view_id", T::U32),
                ("view_name", T::String),
                ("table_id", T::option(T::U32)),
                ("is_public", T::Bool),
                ("is_anonymous", T::Bool),
            ]),
            Some(vec![0]),
        ),
        (
            13,
            "st_view_param",
            product(&[("view_id", T::U32), ("param_pos", T::U16), ("param_name", T::String), ("param_type", bytes())]),
            None,
        ),
        (
            14,
            "st_view_column",
            product(&[("view_id", T::U32), ("col_pos", T::U16), ("col_name", T::String), ("col_type", bytes())]),
            None,
        ),
        (
            15,
            "st_view_sub",
            product(&[
                ("view_id", T::U32),
                ("arg_id", T::U64),
                ("identity", T::U256),
                ("num_subscribers", T::U64),
                ("has_subscribers", T::Bool),
                ("last_called", T::I64),
            ]),
            None,
        ),
        (16, "st_view_arg", product(&[("id", T::U64), ("bytes", bytes())]), Some(vec![0])),
        (17, "st_event_table", product(&[("table_id", T::U32)]), Some(vec![0])),
        (18, "st_table_accessor", product(&[("table_name", T::String), ("accessor_name", T::String)]), None),
        (19, "st_index_accessor", product(&[("index_name", T::String), ("accessor_name", T::String)]), None),
        (
            20,
            "st_column_accessor",
            product(&[("table_name", T::String), ("col_name", T::String), ("accessor_name", T::String)]),
            None,
        ),
    ]
}

/// The indexes of the tables 2.x added: (id, table, name, columns).
pub(crate) const INDEXES: [(u32, u32, &str, &[u16]); 17] = [
    (13, 11, "st_connection_credentials_connection_id_idx_btree", &[0]),
    (14, 12, "st_view_view_id_idx_btree", &[0]),
    (15, 12, "st_view_view_name_idx_btree", &[1]),
    (16, 13, "st_view_param_view_id_param_pos_idx_btree", &[0, 1]),
    (17, 14, "st_view_column_view_id_col_pos_idx_btree", &[0, 1]),
    (18, 15, "st_view_sub_identity_idx_btree", &[2]),
    (19, 15, "st_view_sub_has_subscribers_idx_btree", &[4]),
    (20, 15, "st_view_sub_view_id_arg_id_identity_idx_btree", &[0, 1, 2]),
    (21, 16, "st_view_arg_id_idx_btree", &[0]),
    (22, 16, "st_view_arg_bytes_idx_btree", &[1]),
    (23, 17, "st_event_table_table_id_idx_btree", &[0]),
    (24, 18, "st_table_accessor_table_name_idx_btree", &[0]),
    (25, 18, "st_table_accessor_accessor_name_idx_btree", &[1]),
    (26, 19, "st_index_accessor_index_name_idx_btree", &[0]),
    (27, 19, "st_index_accessor_accessor_name_idx_btree", &[1]),
    (28, 20, "st_column_accessor_table_name_col_name_idx_btree", &[0, 1]),
    (29, 20, "st_column_accessor_table_name_accessor_name_idx_btree", &[0, 2]),
];

/// The unique constraints of the tables 2.x added: (id, name, table, columns).
pub(crate) const CONSTRAINTS: [(u32, &str, u32, &[u16]); 14] = [
    (12, "st_connection_credentials_connection_id_key", 11, &[0]),
    (13, "st_view_view_id_key", 12, &[0]),
    (14, "st_view_view_name_key", 12, &[1]),
    (15, "st_view_param_view_id_param_pos_key", 13, &[0, 1]),
    (16, "st_view_column_view_id_col_pos_key", 14, &[0, 1]),
    (17, "st_view_arg_id_key", 16, &[0]),
    (18, "st_view_arg_bytes_key", 16, &[1]),
    (19, "st_event_table_table_id_key", 17, &[0]),
    (20, "st_table_accessor_table_name_key", 18, &[0]),
    (21, "st_table_accessor_accessor_name_key", 18, &[1]),
    (22, "st_index_accessor_index_name_key", 19, &[0]),
    (23, "st_index_accessor_accessor_name_key", 19, &[1]),
    (24, "st_column_accessor_table_name_col_name_key", 20, &[0, 1]),
    (25, "st_column_accessor_table_name_accessor_name_key", 20, &[0, 2]),
];

/// The sequences of the tables 2.x added: (id, name, table, what they number).
pub(crate) const SEQUENCES: [(u32, &str, u32, Numbers); 2] =
    [(6, "st_view_view_id_seq", 12, Numbers::Views), (7, "st_view_arg_id_seq", 16, Numbers::ViewArgs)];

/// The tables backing the module's views, in name order, numbered from `first_id`: the view's
/// columns after a hidden `arg_hash`, and a B-tree index on it. With the view's position.
pub(crate) fn view_tables(def: &ModuleDef, first_id: u32) -> Vec<(u32, usize, TableDef)> {
    let mut views: Vec<(usize, &epoch_schema::ViewDef)> = def.views.iter().enumerate().collect();
    views.sort_by(|a, b| a.1.name.cmp(&b.1.name));
    views
        .into_iter()
        .enumerate()
        .map(|(rank, (position, view))| {
            let row = epoch_host::view::view_row_type(&def.typespace, view).unwrap_or_default();
            let columns = std::iter::once(("arg_hash", AlgebraicType::U256))
                .chain(row.elements.iter().map(|e| (e.name.as_deref().unwrap_or_default(), e.ty.clone())));
            let mut table = TableDef::plain(view.name.clone(), 0, ProductType::new(columns));
            if !view.is_public {
                table.table_access = TableAccess::Private;
            }
            let name = format!("{}_arg_hash_idx_btree", view.name);
            let algorithm = IndexAlgorithm::BTree(vec![0]);
            table.indexes.push(IndexDef { name, source_name: None, accessor_name: None, algorithm });
            (first_id + rank as u32, position, table)
        })
        .collect()
}

/// The rows of the tables 2.x added. `tables`: the module's tables with their ids; `views`: the
/// tables backing its views (see [`view_tables`]); `first`: the first id of the module's objects.
pub(crate) fn rows(
    inputs: &CatalogInputs<'_>,
    tables: &[(u32, &TableDef)],
    views: &[(u32, usize, TableDef)],
    first: u32,
) -> Vec<(&'static str, Rows)> {
    let def = inputs.def;
    let credentials = inputs
        .credentials
        .iter()
        .map(|(id, jwt)| row(vec![AlgebraicValue::U128(u128::from_le_bytes(*id)), s(jwt)]))
        .collect();
    let event_tables =
        tables.iter().filter(|(_, t)| t.is_event).map(|(id, _)| row(vec![AlgebraicValue::U32(*id)])).collect();
    let (st_view, st_view_param, st_view_column) = view_rows(def, views, first);
    vec![
        (PRIVATE_SYSTEM_TABLE, credentials),
        ("st_view", st_view),
        ("st_view_param", st_view_param),
        ("st_view_column", st_view_column),
        ("st_event_table", event_tables),
        ("st_table_accessor", table_accessors(def, tables, views)),
        ("st_index_accessor", index_accessors(tables)),
        ("st_column_accessor", column_accessors(def, tables, views)),
    ]
}

/// `st_view`, `st_view_param` and `st_view_column`; views are numbered in name order, and 2.x
/// marks every view public here (its table's access says whether it is).
fn view_rows(def: &ModuleDef, views: &[(u32, usize, TableDef)], first: u32) -> (Rows, Rows, Rows) {
    let (mut st_view, mut params, mut columns) = (Vec::new(), Vec::new(), Vec::new());
    let u32v = AlgebraicValue::U32;
    for (rank, (table_id, position, _)) in views.iter().enumerate() {
        let view = &def.views[*position];
        let view_id = u32v(first + rank as u32);
        st_view.push(row(vec![
            view_id.clone(),
            s(&view.name),
            AlgebraicValue::some(u32v(*table_id)),
            AlgebraicValue::Bool(true),
            AlgebraicValue::Bool(view.is_anonymous),
        ]));
        for (pos, p) in view.params.elements.iter().enumerate() {
            let name = p.name.as_deref().map_or_else(|| format!("param_{pos}"), str::to_string);
            params.push(row(vec![view_id.clone(), AlgebraicValue::U16(pos as u16), s(&name), raw_type(&p.ty)]));
        }
        let row_type = epoch_host::view::view_row_type(&def.typespace, view).unwrap_or_default();
        for (pos, c) in row_type.elements.iter().enumerate() {
            let name = c.name.as_deref().unwrap_or_default();
            columns.push(row(vec![view_id.clone(), AlgebraicValue::U16(pos as u16), s(name), raw_type(&c.ty)]));
        }
    }
    (st_view, params, columns)
}

/// A type's BSATN as the module wrote it (references left as they are).
fn raw_type(ty: &AlgebraicType) -> AlgebraicValue {
    let mut out = Vec::new();
    epoch_schema::raw::write_algebraic_type(&mut out, ty);
    AlgebraicValue::bytes(&out)
}

/// The row type reference a view's rows are written with, when it names one.
fn view_row_ref(view: &epoch_schema::ViewDef) -> Option<u32> {
    match epoch_host::view::view_row_element(view)? {
        AlgebraicType::Ref(r) => Some(*r),
        _ => None,
    }
}

fn table_accessors(def: &ModuleDef, tables: &[(u32, &TableDef)], views: &[(u32, usize, TableDef)]) -> Rows {
    let of_tables = tables.iter().map(|(_, t)| (t.name.as_str(), t.source_name.as_deref()));
    let of_views = views.iter().map(|(_, v, _)| (def.views[*v].name.as_str(), def.views[*v].source_name.as_deref()));
    of_tables.chain(of_views).map(|(name, source)| row(vec![s(name), s(source.unwrap_or(name))])).collect()
}

fn index_accessors(tables: &[(u32, &TableDef)]) -> Rows {
    let indexes = tables.iter().flat_map(|(_, t)| &t.indexes);
    indexes.map(|i| row(vec![s(&i.name), s(i.source_name.as_deref().unwrap_or(&i.name))])).collect()
}

fn column_accessors(def: &ModuleDef, tables: &[(u32, &TableDef)], views: &[(u32, usize, TableDef)]) -> Rows {
    let mut out = Vec::new();
    let mut add = |table: &str, type_ref: Option<u32>, columns: &ProductType| {
        for (pos, c) in columns.elements.iter().enumerate() {
            let name = c.name.as_deref().unwrap_or_default();
            let accessor = type_ref.map_or(name, |r| def.column_accessor(r, pos, name));
            out.push(row(vec![s(table), s(name), s(accessor)]));
        }
    };
    for (_, t) in tables {
        add(&t.name, Some(t.product_type_ref), &t.row_type);
    }
    for (_, position, _) in views {
        let view = &def.views[*position];
        let row_type = epoch_host::view::view_row_type(&def.typespace, view).unwrap_or_default();
        add(&view.name, view_row_ref(view), &row_type);
    }
    out
}
