//! DML: `INSERT`, `UPDATE` and `DELETE` (owners only), applied to the store inside the
//! transaction [`crate::run`] opened.

use epoch_sats::{AlgebraicValue, ProductType};
use epoch_store::Store;
use sqlparser::ast::{Expr, SetExpr, Statement, TableFactor};

use crate::execute::{matching, store_err};
use crate::parse::table_name;
use crate::plan::{Cond, Scope};
use crate::{DmlStats, SqlError};

/// Applies one DML statement and counts the rows it touched.
pub(crate) fn dml(store: &mut Store, statement: Statement) -> Result<DmlStats, SqlError> {
    let mut stats = DmlStats::default();
    match statement {
        Statement::Insert(ins) => stats.rows_inserted = insert(store, &ins)?,
        Statement::Update { table, assignments, selection, from: None, returning: None, or: None } => {
            stats.rows_updated = update(store, &table, &assignments, selection.as_ref())?
        }
        Statement::Delete(del) => stats.rows_deleted = delete(store, &del)?,
        other => return Err(SqlError::Unsupported(format!("{other}"))),
    }
    Ok(stats)
}

/// `INSERT INTO t [(columns)] VALUES …`: every column given exactly once per row (there are no
/// column defaults); returns the rows inserted.
fn insert(store: &mut Store, ins: &sqlparser::ast::Insert) -> Result<u64, SqlError> {
    let sqlparser::ast::TableObject::TableName(name) = &ins.table else {
        return Err(SqlError::Unsupported("INSERT into a table function".into()));
    };
    let name = table_name(name)?;
    let (table_id, row_type) = dml_table(store, &name)?;
    let scope = Scope { table: &name, alias: None, row_type: &row_type, joined: None };
    let columns: Vec<usize> = if ins.columns.is_empty() {
        (0..row_type.elements.len()).collect()
    } else {
        ins.columns
            .iter()
            .map(|c| scope.column(&Expr::Identifier(c.clone())).map(|c| c.unwrap_or(0)))
            .collect::<Result<_, _>>()?
    };
    let mut sorted = columns.clone();
    sorted.sort_unstable();
    sorted.dedup();
    if sorted.len() != row_type.elements.len() || columns.len() != sorted.len() {
        return Err(SqlError::Unsupported("INSERT must give every column exactly once".into()));
    }
    let Some(SetExpr::Values(values)) = ins.source.as_deref().map(|q| q.body.as_ref()) else {
        return Err(SqlError::Unsupported("INSERT takes VALUES".into()));
    };
    let mut inserted = 0;
    for row in &values.rows {
        if row.len() != columns.len() {
            return Err(SqlError::Unsupported("each VALUES row must give every listed column".into()));
        }
        let mut cols = vec![AlgebraicValue::unit(); row_type.elements.len()];
        for (expr, &c) in row.iter().zip(&columns) {
            cols[c] = scope.coerce(c, expr)?;
        }
        let mut bytes = epoch_sats::bsatn::to_vec(&AlgebraicValue::Product(cols.into()));
        store.insert(table_id, &mut bytes).map_err(store_err)?;
        inserted += 1;
    }
    Ok(inserted)
}

/// `UPDATE t SET … [WHERE …]`: each matching row deleted and inserted again with the new values
/// (so indexes and unique constraints see the change); returns the rows updated.
fn update(
    store: &mut Store,
    table: &sqlparser::ast::TableWithJoins,
    assignments: &[sqlparser::ast::Assignment],
    selection: Option<&Expr>,
) -> Result<u64, SqlError> {
    let name = single_table(std::slice::from_ref(table))?;
    let (table_id, row_type) = dml_table(store, &name)?;
    let scope = Scope { table: &name, alias: None, row_type: &row_type, joined: None };
    let mut sets = Vec::new();
    for a in assignments {
        let sqlparser::ast::AssignmentTarget::ColumnName(col) = &a.target else {
            return Err(SqlError::Unsupported("tuple assignments".into()));
        };
        let col = table_name(col)?;
        let c = scope.column(&Expr::Identifier(sqlparser::ast::Ident::new(col)))?.unwrap_or(0);
        sets.push((c, scope.coerce(c, &a.value)?));
    }
    let cond = match selection {
        Some(e) => scope.condition(e)?,
        None => Cond::Const(true),
    };
    let mut updated = 0;
    for (id, mut cols) in matching(store, table_id, &row_type, &cond)? {
        for (c, v) in &sets {
            cols[*c] = v.clone();
        }
        store.delete_rows(table_id, &[id]).map_err(store_err)?;
        let mut bytes = epoch_sats::bsatn::to_vec(&AlgebraicValue::Product(cols.into()));
        store.insert(table_id, &mut bytes).map_err(store_err)?;
        updated += 1;
    }
    Ok(updated)
}

/// `DELETE FROM t [WHERE …]`; returns the rows deleted.
fn delete(store: &mut Store, del: &sqlparser::ast::Delete) -> Result<u64, SqlError> {
    let from = match &del.from {
        sqlparser::ast::FromTable::WithFromKeyword(t) | sqlparser::ast::FromTable::WithoutKeyword(t) => t,
    };
    let name = single_table(from)?;
    let (table_id, row_type) = dml_table(store, &name)?;
    let scope = Scope { table: &name, alias: None, row_type: &row_type, joined: None };
    let cond = match &del.selection {
        Some(e) => scope.condition(e)?,
        None => Cond::Const(true),
    };
    let ids: Vec<u32> = matching(store, table_id, &row_type, &cond)?.into_iter().map(|(id, _)| id).collect();
    Ok(store.delete_rows(table_id, &ids).map_err(store_err)? as u64)
}

pub(crate) fn dml_table(store: &Store, name: &str) -> Result<(u32, ProductType), SqlError> {
    let t = store.table_by_name(name).ok_or_else(|| SqlError::UnknownTable(name.to_string()))?;
    Ok((t.id, t.schema.row_type().clone()))
}

pub(crate) fn single_table(from: &[sqlparser::ast::TableWithJoins]) -> Result<String, SqlError> {
    match from {
        [t] if t.joins.is_empty() => match &t.relation {
            TableFactor::Table { name, .. } => table_name(name),
            _ => Err(SqlError::Unsupported("subqueries".into())),
        },
        _ => Err(SqlError::Unsupported("DML on more than one table".into())),
    }
}
