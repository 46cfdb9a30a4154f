//! Execution: a planned `SELECT` run over a table (the rows an index on one column gives for
//! the condition's bounds on it, else a full scan; the condition checked on each), and the
//! evaluation of a condition on one row.

use std::cmp::Ordering;
use std::ops::Bound;

use epoch_sats::{AlgebraicType, AlgebraicValue, ProductType, ProductTypeElement};
use epoch_schema::TableAccess;
use epoch_store::{Store, Table, TableSchema};
use sqlparser::ast::{BinaryOperator, LimitClause, ObjectNamePart, SetExpr, TableFactor};

use crate::plan::{literal, Cond, Literal, Operand, Projection, Scope};
use crate::{QueryContext, QueryResult, SqlError};

/// A `SELECT` of one table, planned: what to read, which rows, which columns, how many.
pub(crate) struct SelectPlan {
    pub(crate) table_id: u32,
    pub(crate) row_type: ProductType,
    pub(crate) projection: Projection,
    pub(crate) cond: Cond,
    pub(crate) limit: Option<usize>,
}

/// Runs one `SELECT` against `store`.
pub(crate) fn select(
    store: &Store,
    query: Box<sqlparser::ast::Query>,
    ctx: QueryContext,
) -> Result<QueryResult, SqlError> {
    let plan = plan_select(store, query, ctx)?;
    run_select(store, plan, ctx)
}

/// The table a `FROM` item names, if the caller may see it: (name, alias, table).
pub(crate) fn visible_table<'s>(
    store: &'s Store,
    factor: &TableFactor,
    ctx: QueryContext,
) -> Result<(String, Option<String>, &'s epoch_store::Table), SqlError> {
    let TableFactor::Table { name, alias, .. } = factor else {
        return Err(SqlError::Unsupported("subqueries".into()));
    };
    let table_name = match name.0.as_slice() {
        [ObjectNamePart::Identifier(id)] => id.value.clone(),
        _ => return Err(SqlError::Unsupported(format!("table name {name}"))),
    };
    let table = store
        .table_by_name(&table_name)
        .filter(|t| ctx.is_owner || t.schema.def.table_access == TableAccess::Public)
        .ok_or_else(|| SqlError::UnknownTable(table_name.clone()))?;
    Ok((table_name, alias.as_ref().map(|a| a.name.value.clone()), table))
}

/// Plans a `SELECT` of one table the caller may see.
pub(crate) fn plan_select(
    store: &Store,
    query: Box<sqlparser::ast::Query>,
    ctx: QueryContext,
) -> Result<SelectPlan, SqlError> {
    if query.order_by.is_some() {
        return Err(SqlError::Unsupported("ORDER BY".into()));
    }
    let limit = match &query.limit_clause {
        None => None,
        Some(LimitClause::LimitOffset { limit: Some(e), offset: None, limit_by }) if limit_by.is_empty() => {
            match literal(e)? {
                Literal::Int(n) if n >= 0 => {
                    let n = u64::try_from(n).map_err(|_| SqlError::LimitOutOfRange(n.to_string()))?;
                    Some(usize::try_from(n).unwrap_or(usize::MAX))
                }
                _ => return Err(SqlError::Unsupported("LIMIT must be a non-negative integer".into())),
            }
        }
        Some(_) => return Err(SqlError::Unsupported("this form of LIMIT".into())),
    };
    let SetExpr::Select(select) = *query.body else {
        return Err(SqlError::Unsupported("only SELECT queries are supported".into()));
    };
    if select.distinct.is_some() {
        return Err(SqlError::Unsupported("DISTINCT".into()));
    }
    if select.having.is_some()
        || !matches!(select.group_by, sqlparser::ast::GroupByExpr::Expressions(ref e, _) if e.is_empty())
    {
        return Err(SqlError::Unsupported("GROUP BY".into()));
    }
    let [from] = select.from.as_slice() else {
        return Err(SqlError::Unsupported("a query must read exactly one table".into()));
    };
    if !from.joins.is_empty() {
        return Err(SqlError::Unsupported("joins".into()));
    }
    let (table_name, alias, table) = visible_table(store, &from.relation, ctx)?;
    let row_type = table.schema.row_type().clone();
    let scope = Scope { table: &table_name, alias: alias.as_deref(), row_type: &row_type, joined: None };

    let projection = scope.projection(&select.projection)?;
    let cond = match &select.selection {
        Some(e) => scope.condition(e)?,
        None => Cond::Const(true),
    };
    Ok(SelectPlan { table_id: table.id, row_type, projection, cond, limit })
}

pub(crate) fn run_select(store: &Store, plan: SelectPlan, ctx: QueryContext) -> Result<QueryResult, SqlError> {
    let SelectPlan { table_id, row_type, projection, cond, limit } = plan;
    let table = store.table(table_id).map_err(store_err)?;
    let visibility = crate::rls::Visibility::of(store, table_id, ctx)?;
    let ts = &store.typespace;
    let ty = AlgebraicType::Product(row_type.clone());
    let mut rows = Vec::new();
    let mut count: u64 = 0;
    let test = RowTest::new(&table.schema, &cond);
    for (_, bytes) in candidate_rows(table, &cond) {
        // Only the columns the condition reads are looked at to test a row; the whole row is
        // decoded only once it is returned.
        if !test.passes(&table.schema, bytes)? {
            continue;
        }
        if let Some(v) = &visibility {
            if !v.allows(store, bytes)? {
                continue;
            }
        }
        if let Projection::Count(_) = projection {
            count += 1;
            continue;
        }
        if limit.is_some_and(|l| rows.len() >= l) {
            break;
        }
        if rows.len() >= ctx.row_limit {
            return Err(SqlError::TooManyRows(ctx.row_limit));
        }
        rows.push(match &projection {
            Projection::All => {
                epoch_sats::bsatn::decode(ts, &ty, bytes).map_err(|e| SqlError::Unsupported(e.to_string()))?
            }
            Projection::Columns(c) => AlgebraicValue::Product(
                c.iter()
                    .map(|(i, _)| table.schema.column_value(bytes, *i as u16).map_err(store_err))
                    .collect::<Result<_, _>>()?,
            ),
            Projection::Count(_) => unreachable!("handled above"),
        });
    }
    let schema = match projection {
        Projection::All => row_type,
        Projection::Columns(c) => ProductType {
            elements: c
                .iter()
                .map(|(i, name)| ProductTypeElement {
                    name: Some(name.as_str().into()),
                    ty: row_type.elements[*i].ty.clone(),
                })
                .collect(),
        },
        Projection::Count(alias) => {
            rows = vec![AlgebraicValue::product([AlgebraicValue::U64(count)])];
            ProductType::new([(alias.as_str(), AlgebraicType::U64)])
        }
    };
    Ok(QueryResult { schema, rows })
}

/// Rows of `table_id` matching `cond`: (row id, decoded columns).
pub(crate) fn matching(
    store: &Store,
    table_id: u32,
    row_type: &ProductType,
    cond: &Cond,
) -> Result<Vec<(u32, Vec<AlgebraicValue>)>, SqlError> {
    let table = store.table(table_id).map_err(store_err)?;
    let ty = AlgebraicType::Product(row_type.clone());
    let mut out = Vec::new();
    let test = RowTest::new(&table.schema, cond);
    for (id, bytes) in candidate_rows(table, cond) {
        if !test.passes(&table.schema, bytes)? {
            continue;
        }
        let row = epoch_sats::bsatn::decode(&store.typespace, &ty, bytes)
            .map_err(|e| SqlError::Unsupported(e.to_string()))?;
        out.push((id, row.as_product().unwrap_or(&[]).to_vec()));
    }
    Ok(out)
}

/// The rows that may match `cond`, in row-id order (the order of a full scan): those an index
/// on one column gives for the bounds the top-level conjuncts of `cond` put on that column (an
/// equality first), else every row. A superset of the matches: `cond` is checked on each.
fn candidate_rows<'t>(table: &'t Table, cond: &Cond) -> Box<dyn Iterator<Item = (u32, &'t [u8])> + 't> {
    let mut conjuncts = Vec::new();
    flatten_and(cond, &mut conjuncts);
    let bounds = |col: usize| {
        let (mut lo, mut hi) = (Bound::Unbounded, Bound::Unbounded);
        for c in &conjuncts {
            let Cond::Cmp { col: c, op, rhs: Operand::Lit(v) } = c else { continue };
            if *c != col {
                continue;
            }
            match op {
                BinaryOperator::Eq => return Some((Bound::Included(v), Bound::Included(v), true)),
                BinaryOperator::Gt if lo == Bound::Unbounded => lo = Bound::Excluded(v),
                BinaryOperator::GtEq if lo == Bound::Unbounded => lo = Bound::Included(v),
                BinaryOperator::Lt if hi == Bound::Unbounded => hi = Bound::Excluded(v),
                BinaryOperator::LtEq if hi == Bound::Unbounded => hi = Bound::Included(v),
                _ => {}
            }
        }
        (lo != Bound::Unbounded || hi != Bound::Unbounded).then_some((lo, hi, false))
    };
    let single = || table.indexes.iter().filter(|i| i.columns.len() == 1);
    let chosen = single()
        .find_map(|i| bounds(i.columns[0] as usize).filter(|b| b.2).map(|b| (i, b)))
        .or_else(|| single().find_map(|i| bounds(i.columns[0] as usize).map(|b| (i, b))));
    let Some((index, (lo, hi, _))) = chosen else { return Box::new(table.iter()) };
    let mut ids = Vec::new();
    index.scan(&[], lo, hi, &mut ids);
    ids.sort_unstable();
    Box::new(ids.into_iter().filter_map(move |id| table.get(id).map(|bytes| (id, bytes))))
}

/// The conjuncts of `c` (itself when it is not an `AND`).
fn flatten_and<'c>(c: &'c Cond, out: &mut Vec<&'c Cond>) {
    match c {
        Cond::And(a, b) => {
            flatten_and(a, out);
            flatten_and(b, out);
        }
        other => out.push(other),
    }
}

/// A condition prepared for testing stored rows: equality of an integer or boolean column with
/// a literal compares bytes (the encodings are equal exactly when the values are); anything
/// else decodes only the columns it compares.
#[derive(Debug)]
pub(crate) enum RowTest {
    Const(bool),
    And(Box<RowTest>, Box<RowTest>),
    Or(Box<RowTest>, Box<RowTest>),
    /// Column `col`'s bytes equal (or, when `negate`, differ from) `bytes`.
    BytesEq {
        col: u16,
        bytes: Vec<u8>,
        negate: bool,
    },
    /// Any other comparison: the columns it reads are decoded.
    Decode {
        col: usize,
        op: BinaryOperator,
        rhs: Operand,
    },
}

impl RowTest {
    pub(crate) fn new(schema: &TableSchema, c: &Cond) -> Self {
        match c {
            Cond::Const(b) => Self::Const(*b),
            Cond::And(a, b) => Self::And(Box::new(Self::new(schema, a)), Box::new(Self::new(schema, b))),
            Cond::Or(a, b) => Self::Or(Box::new(Self::new(schema, a)), Box::new(Self::new(schema, b))),
            Cond::Cmp { col, op: op @ (BinaryOperator::Eq | BinaryOperator::NotEq), rhs: Operand::Lit(v) }
                if exact_bytes(schema.column_type(*col as u16)) =>
            {
                let mut bytes = Vec::new();
                epoch_sats::bsatn::encode(v, &mut bytes);
                Self::BytesEq { col: *col as u16, bytes, negate: *op == BinaryOperator::NotEq }
            }
            Cond::Cmp { col, op, rhs } => Self::Decode { col: *col, op: op.clone(), rhs: rhs.clone() },
        }
    }

    /// Whether the stored row `row` passes; the same answer as [`eval`] on the decoded row.
    pub(crate) fn passes(&self, schema: &TableSchema, row: &[u8]) -> Result<bool, SqlError> {
        Ok(match self {
            Self::Const(b) => *b,
            Self::And(a, b) => a.passes(schema, row)? && b.passes(schema, row)?,
            Self::Or(a, b) => a.passes(schema, row)? || b.passes(schema, row)?,
            Self::BytesEq { col, bytes, negate } => {
                let at = schema.column_offset(row, *col).map_err(store_err)?;
                (row.get(at..at + bytes.len()) == Some(&bytes[..])) != *negate
            }
            Self::Decode { col, op, rhs } => {
                let lhs = schema.column_value(row, *col as u16).map_err(store_err)?;
                let ord = match rhs {
                    Operand::Col(i) => lhs.cmp(&schema.column_value(row, *i as u16).map_err(store_err)?),
                    Operand::Lit(v) => lhs.cmp(v),
                };
                compare(op, ord)
            }
        })
    }
}

/// Whether values of `ty` are equal exactly when their encodings are (integers and booleans;
/// not floats, where `-0.0` and `0.0` differ in bytes).
fn exact_bytes(ty: &AlgebraicType) -> bool {
    use AlgebraicType as T;
    matches!(
        ty,
        T::Bool
            | T::I8
            | T::U8
            | T::I16
            | T::U16
            | T::I32
            | T::U32
            | T::I64
            | T::U64
            | T::I128
            | T::U128
            | T::I256
            | T::U256
    )
}

/// Whether `ord` (left against right) satisfies comparison `op`.
fn compare(op: &BinaryOperator, ord: Ordering) -> bool {
    match op {
        BinaryOperator::Eq => ord == Ordering::Equal,
        BinaryOperator::NotEq => ord != Ordering::Equal,
        BinaryOperator::Lt => ord == Ordering::Less,
        BinaryOperator::LtEq => ord != Ordering::Greater,
        BinaryOperator::Gt => ord == Ordering::Greater,
        BinaryOperator::GtEq => ord != Ordering::Less,
        _ => false,
    }
}

pub(crate) fn eval(c: &Cond, row: &[AlgebraicValue]) -> bool {
    match c {
        Cond::Const(b) => *b,
        Cond::And(a, b) => eval(a, row) && eval(b, row),
        Cond::Or(a, b) => eval(a, row) || eval(b, row),
        Cond::Cmp { col, op, rhs } => {
            let rhs = match rhs {
                Operand::Col(i) => &row[*i],
                Operand::Lit(v) => v,
            };
            compare(op, row[*col].cmp(rhs))
        }
    }
}

pub(crate) fn store_err(e: epoch_store::StoreError) -> SqlError {
    SqlError::Unsupported(e.to_string())
}
