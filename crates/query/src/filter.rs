//! Subscription queries: `SELECT * FROM t [WHERE …]`, or the join 1.3 allows,
//! `SELECT a.* FROM a JOIN b ON a.x = b.y [WHERE …]`, compiled once and then evaluated against
//! each transaction's delta only (joins probe the other side through its index).

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;

use epoch_sats::{AlgebraicType, AlgebraicValue, ProductType};
use epoch_schema::TableAccess;
use epoch_store::{Store, Table, TxDelta};
use sqlparser::ast::{
    BinaryOperator, Expr, JoinConstraint, JoinOperator, SelectItem, SelectItemQualifiedWildcardKind, SetExpr, Statement,
};

use crate::budget::EvalBudget;
use crate::execute::{eval, plan_select, store_err, visible_table};
use crate::parse::parse_one;
use crate::plan::{Cond, Operand, Projection, Scope};
use crate::rls::Visibility;
use crate::{QueryContext, SqlError};

/// Whether `sql` is 1.3's `SELECT * FROM *` (the words in any case, separated by any
/// whitespace, nothing else): a subscription to every table the caller may read.
pub fn is_all_tables(sql: &str) -> bool {
    let mut words = sql.split_whitespace();
    let (Some(select), Some("*"), Some(from), Some("*"), None) =
        (words.next(), words.next(), words.next(), words.next(), words.next())
    else {
        return false;
    };
    select.eq_ignore_ascii_case("select") && from.eq_ignore_ascii_case("from")
}

/// The queries `SELECT * FROM *` stands for, as 1.3 expands it when the request arrives:
/// `SELECT * FROM t` for every table the caller may read (every table for the owner, the
/// public ones for anyone else), in table id order. Row-level security applies to each as to
/// any query; tables a later module update adds are not included.
pub fn all_tables_queries(store: &Store, ctx: QueryContext) -> Vec<String> {
    store
        .present_tables()
        .filter(|t| ctx.is_owner || t.schema.def.table_access == TableAccess::Public)
        // An event table (2.x) holds no rows to subscribe to; 2.x leaves it out too.
        .filter(|t| !t.schema.def.is_event)
        .map(|t| format!("SELECT * FROM {}", t.schema.def.name))
        .collect()
}

/// Which rows of one table a subscription query selects.
pub struct Filter {
    table_id: u32,
    row_type: AlgebraicType,
    cond: Cond,
    /// `cond` prepared for testing stored rows (a filter of one table).
    test: Option<crate::execute::RowTest>,
    join: Option<Join>,
    /// Row-level security for the caller, if the table has filters and the caller is not the owner.
    visibility: Option<Visibility>,
}

impl std::fmt::Debug for Filter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Filter").field("table_id", &self.table_id).field("join", &self.join.is_some()).finish()
    }
}

/// The second table of a join and how rows meet.
#[derive(Debug)]
struct Join {
    /// The table named first (`FROM`) and the joined one; the condition sees the first's
    /// columns, then the second's.
    tables: [Side; 2],
    /// Which of the two the query returns.
    projected: usize,
    /// Row-level security of each side for the caller: a pair counts only if the caller may
    /// see both rows (the side not returned is read by the `ON` and `WHERE` too).
    visibility: [Option<Visibility>; 2],
}

#[derive(Debug)]
struct Side {
    table: u32,
    row_type: AlgebraicType,
    /// The join column.
    col: usize,
    /// The position (in the table's indexes) of a one-column index on the join column.
    index: Option<usize>,
}

/// Rows with multiplicities (a join may return a row once per partner).
type Bag = BTreeMap<Box<[u8]>, i64>;

impl Filter {
    /// Compiles a subscription query: whole rows of one table the caller may see, with an
    /// optional `WHERE`, or of one side of a two-table inner join on equal columns, one of which
    /// has an index; no `LIMIT`, no `COUNT`, no column list.
    /// Rows hidden from the caller by row-level security are never selected.
    pub fn compile(store: &Store, sql: &str, ctx: QueryContext) -> Result<Self, SqlError> {
        let mut f = Self::compile_unrestricted(store, sql, ctx)?;
        match &mut f.join {
            None => f.visibility = Visibility::of(store, f.table_id, ctx)?,
            Some(join) => {
                for (side, visibility) in join.tables.iter().zip(&mut join.visibility) {
                    *visibility = Visibility::of(store, side.table, ctx)?;
                }
            }
        }
        Ok(f)
    }

    /// Whether the query joins two tables.
    pub fn is_join(&self) -> bool {
        self.join.is_some()
    }

    /// As [`Filter::compile`], without row-level security (for the module's own filters).
    pub(crate) fn compile_unrestricted(store: &Store, sql: &str, ctx: QueryContext) -> Result<Self, SqlError> {
        let Statement::Query(query) = parse_one(sql, ctx)? else {
            return Err(SqlError::Unsupported("a subscription must be a SELECT".into()));
        };
        if let SetExpr::Select(select) = query.body.as_ref() {
            if select.from.len() == 1 && !select.from[0].joins.is_empty() {
                return Self::compile_join(store, select, ctx);
            }
            if select.from.len() > 1 {
                return Err(SqlError::Join("Implicit joins are not supported"));
            }
        }
        let plan = plan_select(store, query, ctx)?;
        if !matches!(plan.projection, Projection::All) {
            return Err(SqlError::SubscriptionProjection);
        }
        if plan.limit.is_some() {
            return Err(SqlError::Unsupported("LIMIT in a subscription".into()));
        }
        let schema = &store.table(plan.table_id).map_err(store_err)?.schema;
        Ok(Self {
            table_id: plan.table_id,
            row_type: AlgebraicType::Product(plan.row_type),
            test: Some(crate::execute::RowTest::new(schema, &plan.cond)),
            cond: plan.cond,
            join: None,
            visibility: None,
        })
    }

    fn compile_join(store: &Store, select: &sqlparser::ast::Select, ctx: QueryContext) -> Result<Self, SqlError> {
        let from = &select.from[0];
        let [join] = from.joins.as_slice() else {
            return Err(SqlError::Join("Invalid number of tables in subscription: more than 2"));
        };
        let on = match &join.join_operator {
            JoinOperator::Join(JoinConstraint::On(e)) | JoinOperator::Inner(JoinConstraint::On(e)) => e,
            _ => return Err(SqlError::Join("Non-inner joins are not supported")),
        };
        let (a_name, a_alias, a) = visible_table(store, &from.relation, ctx)?;
        let (b_name, b_alias, b) = visible_table(store, &join.relation, ctx)?;
        if a_alias.as_deref().unwrap_or(&a_name) == b_alias.as_deref().unwrap_or(&b_name) {
            return Err(SqlError::Join("Duplicate name in a join; give the tables aliases"));
        }
        let mut elements = a.schema.row_type().elements.to_vec();
        elements.extend(b.schema.row_type().elements.iter().cloned());
        let combined = ProductType { elements: elements.into() };
        let a_len = a.schema.row_type().elements.len();
        let scope = Scope {
            table: &a_name,
            alias: a_alias.as_deref(),
            row_type: &combined,
            joined: Some((&b_name, b_alias.as_deref(), a_len)),
        };
        let projected = projected_side(select, [(&a_name, a_alias.as_ref()), (&b_name, b_alias.as_ref())])?;
        let Expr::BinaryOp { left, op: BinaryOperator::Eq, right } = strip(on) else {
            return Err(SqlError::Join("Non-inner joins are not supported"));
        };
        let (Some(l), Some(r)) = (scope.column(left)?, scope.column(right)?) else {
            return Err(SqlError::Join("Non-inner joins are not supported"));
        };
        let (a_col, b_col) = match (l < a_len, r < a_len) {
            (true, false) => (l, r - a_len),
            (false, true) => (r, l - a_len),
            _ => return Err(SqlError::Join("Non-inner joins are not supported")),
        };
        if a.schema.row_type().elements[a_col].ty != b.schema.row_type().elements[b_col].ty {
            return Err(SqlError::Join("The join columns have different types"));
        }
        let side = |t: &Table, col: usize| Side {
            table: t.id,
            row_type: AlgebraicType::Product(t.schema.row_type().clone()),
            col,
            index: t.indexes.iter().position(|i| i.columns.as_slice() == [col as u16]),
        };
        let tables = [side(a, a_col), side(b, b_col)];
        let cond = match &select.selection {
            Some(e) => scope.condition(e)?,
            None => Cond::Const(true),
        };
        if tables[probed_side(&cond, a_len)].index.is_none() {
            return Err(SqlError::Join("Subscriptions require indexes on join columns"));
        }
        let p = &tables[projected];
        Ok(Self {
            table_id: p.table,
            row_type: p.row_type.clone(),
            cond,
            test: None,
            join: Some(Join { tables, projected, visibility: [None, None] }),
            visibility: None,
        })
    }

    /// The table whose rows this filter selects.
    pub fn table_id(&self) -> u32 {
        self.table_id
    }

    /// The tables whose changes can change the result.
    pub fn reads(&self) -> Vec<u32> {
        match &self.join {
            None => vec![self.table_id],
            Some(j) => j.tables.iter().map(|s| s.table).collect(),
        }
    }

    /// Whether the BSATN row `row` of the filter's table is selected (single-table queries).
    pub fn matches(&self, store: &Store, row: &[u8]) -> Result<bool, SqlError> {
        let selected = match (&self.cond, &self.test) {
            (Cond::Const(all), _) => *all,
            // Only the columns the condition compares are read.
            (_, Some(test)) => test.passes(&store.table(self.table_id).map_err(store_err)?.schema, row)?,
            (_, None) => {
                let value = decode(store, &self.row_type, row)?;
                eval(&self.cond, value.as_product().unwrap_or(&[]))
            }
        };
        self.visible(store, row).map(|v| selected && v)
    }

    /// Whether row-level security lets the caller see `row` of the query's table.
    fn visible(&self, store: &Store, row: &[u8]) -> Result<bool, SqlError> {
        match &self.visibility {
            None => Ok(true),
            Some(v) => v.allows(store, row),
        }
    }

    /// Every row the query selects now, as BSATN, with no bound on the work (a module's own
    /// filters, an unsubscribe's rows). A joined row comes once per partner, as 1.3 returns it.
    pub fn initial_rows<'s>(&self, store: &'s Store) -> Result<Vec<&'s [u8]>, SqlError> {
        self.initial_rows_within(store, &mut EvalBudget::unlimited())
    }

    /// As [`Filter::initial_rows`], stopping with an error as soon as `budget` runs out (a
    /// subscription's initial rows: a client chooses the query, and the writer waits for it).
    pub fn initial_rows_within<'s>(
        &self,
        store: &'s Store,
        budget: &mut EvalBudget,
    ) -> Result<Vec<&'s [u8]>, SqlError> {
        let Some(join) = &self.join else {
            let table = store.table(self.table_id).map_err(store_err)?;
            let mut out = Vec::new();
            for (_, row) in table.iter() {
                budget.visit()?;
                if self.matches(store, row)? {
                    budget.emit()?;
                    out.push(row);
                }
            }
            return Ok(out);
        };
        // Walk the side that has no index (or the first), probing the other.
        let from = if join.tables[1].index.is_some() { 0 } else { 1 };
        let table = store.table(join.tables[from].table).map_err(store_err)?;
        let mut out = Vec::new();
        for (_, row) in table.iter() {
            budget.visit()?;
            let value = decode(store, &join.tables[from].row_type, row)?;
            let partners = probe(store, &join.tables[1 - from], key(&value, join.tables[from].col), budget)?;
            for (other, other_value) in partners {
                let (a, b) = if from == 0 {
                    ((row, &value), (other, &other_value))
                } else {
                    ((other, &other_value), (row, &value))
                };
                if self.keeps_pair(store, join, a, b)? {
                    budget.emit()?;
                    out.push(if join.projected == 0 { a.0 } else { b.0 });
                }
            }
        }
        Ok(out)
    }

    /// What `delta` changed in the query's result: (rows that left, rows that entered), with
    /// multiplicity; `None` when the transaction touched nothing the query reads.
    #[allow(clippy::type_complexity)]
    pub fn evaluate(
        &self,
        store: &Store,
        delta: &TxDelta,
    ) -> Result<Option<(Vec<Box<[u8]>>, Vec<Box<[u8]>>)>, SqlError> {
        let changes = |t: u32| delta.tables.iter().find(|d| d.table_id == t);
        let Some(join) = &self.join else {
            let Some(d) = changes(self.table_id) else { return Ok(None) };
            let keep = |rows: &[Box<[u8]>]| -> Result<Vec<Box<[u8]>>, SqlError> {
                let mut kept = Vec::new();
                for row in rows {
                    if self.matches(store, row)? {
                        kept.push(row.clone());
                    }
                }
                Ok(kept)
            };
            return Ok(Some((keep(&d.deletes)?, keep(&d.inserts)?)));
        };
        let (da, db) = (changes(join.tables[0].table), changes(join.tables[1].table));
        if da.is_none() && db.is_none() {
            return Ok(None);
        }
        let none: &[Box<[u8]>] = &[];
        let (a_ins, a_del) = da.map_or((none, none), |d| (&d.inserts[..], &d.deletes[..]));
        let (b_ins, b_del) = db.map_or((none, none), |d| (&d.inserts[..], &d.deletes[..]));
        // Pairs present now and not before, and before and not now, from the new state and
        // the delta (the store holds only the new state):
        //   entered = A+ ⋈ B + A ⋈ B+ − A+ ⋈ B+
        //   left    = A- ⋈ B − A- ⋈ B+ + A ⋈ B- − A+ ⋈ B- + A- ⋈ B-
        let mut entered = Bag::new();
        let mut left = Bag::new();
        self.with_store(store, 0, a_ins, &mut entered, 1)?;
        self.with_store(store, 1, b_ins, &mut entered, 1)?;
        self.between(store, a_ins, b_ins, &mut entered, -1)?;
        self.with_store(store, 0, a_del, &mut left, 1)?;
        self.between(store, a_del, b_ins, &mut left, -1)?;
        self.with_store(store, 1, b_del, &mut left, 1)?;
        self.between(store, a_ins, b_del, &mut left, -1)?;
        self.between(store, a_del, b_del, &mut left, 1)?;
        // Pairs hidden from the caller were never counted (`keeps_pair`).
        let expand = |bag: Bag| -> Vec<Box<[u8]>> {
            debug_assert!(bag.values().all(|n| *n >= 0), "a join's delta counts pairs that exist");
            bag.into_iter().flat_map(|(row, n)| std::iter::repeat_n(row, n.max(0) as usize)).collect()
        };
        Ok(Some((expand(left), expand(entered))))
    }

    /// Adds `sign` for each pair of a row of `rows` (of side `side`) with a row of the other
    /// side in the store, that the condition keeps.
    fn with_store(
        &self,
        store: &Store,
        side: usize,
        rows: &[Box<[u8]>],
        out: &mut Bag,
        sign: i64,
    ) -> Result<(), SqlError> {
        let Some(join) = &self.join else { return Ok(()) };
        if rows.is_empty() {
            return Ok(());
        }
        let mut changed: HashMap<AlgebraicValue, Vec<(&[u8], AlgebraicValue)>> = HashMap::new();
        for row in rows {
            let value = decode(store, &join.tables[side].row_type, row)?;
            changed.entry(key(&value, join.tables[side].col).clone()).or_default().push((row, value));
        }
        // The other side's rows that meet a changed row: through its index, one probe per key;
        // without one, one scan of its table for the whole delta (not one per changed row).
        let other = &join.tables[1 - side];
        let mut meet = |other_row: &[u8], other_value: &AlgebraicValue, mine: &[(&[u8], AlgebraicValue)]| {
            for (row, value) in mine {
                let (a, b) = if side == 0 {
                    ((*row, value), (other_row, other_value))
                } else {
                    ((other_row, other_value), (*row, value))
                };
                if self.keeps_pair(store, join, a, b)? {
                    let projected = if join.projected == 0 { a.0 } else { b.0 };
                    *out.entry(projected.into()).or_default() += sign;
                }
            }
            Ok::<(), SqlError>(())
        };
        if other.index.is_some() {
            for (k, mine) in &changed {
                for (other_row, other_value) in probe(store, other, k, &mut EvalBudget::unlimited())? {
                    meet(other_row, &other_value, mine)?;
                }
            }
        } else {
            for (_, other_row) in store.table(other.table).map_err(store_err)?.iter() {
                let other_value = decode(store, &other.row_type, other_row)?;
                if let Some(mine) = changed.get(key(&other_value, other.col)) {
                    meet(other_row, &other_value, mine)?;
                }
            }
        }
        Ok(())
    }

    /// Adds `sign` for each pair of a row of `a` with a row of `b` (both from the delta).
    fn between(
        &self,
        store: &Store,
        a: &[Box<[u8]>],
        b: &[Box<[u8]>],
        out: &mut Bag,
        sign: i64,
    ) -> Result<(), SqlError> {
        let Some(join) = &self.join else { return Ok(()) };
        if a.is_empty() || b.is_empty() {
            return Ok(());
        }
        let bs = b.iter().map(|r| decode(store, &join.tables[1].row_type, r)).collect::<Result<Vec<_>, _>>()?;
        for ra in a {
            let va = decode(store, &join.tables[0].row_type, ra)?;
            for (rb, vb) in b.iter().zip(&bs) {
                if key(&va, join.tables[0].col) == key(vb, join.tables[1].col)
                    && self.keeps_pair(store, join, (ra, &va), (rb, vb))?
                {
                    let projected = if join.projected == 0 { ra } else { rb };
                    *out.entry(projected.clone()).or_default() += sign;
                }
            }
        }
        Ok(())
    }

    /// Whether the pair (first table's row, joined table's row) is in the result: the
    /// condition keeps it and the caller may see both rows.
    fn keeps_pair(
        &self,
        store: &Store,
        join: &Join,
        a: (&[u8], &AlgebraicValue),
        b: (&[u8], &AlgebraicValue),
    ) -> Result<bool, SqlError> {
        if !self.pair_matches(a.1, b.1) {
            return Ok(false);
        }
        for (visibility, row) in join.visibility.iter().zip([a.0, b.0]) {
            if let Some(v) = visibility {
                if !v.allows(store, row)? {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    /// Whether the condition keeps the pair (first table's row, joined table's row).
    fn pair_matches(&self, a: &AlgebraicValue, b: &AlgebraicValue) -> bool {
        if let Cond::Const(all) = self.cond {
            return all;
        }
        let row: Vec<AlgebraicValue> =
            a.as_product().unwrap_or(&[]).iter().chain(b.as_product().unwrap_or(&[])).cloned().collect();
        eval(&self.cond, &row)
    }

    /// Whether the decoded row `value` (a product of the table's columns) is selected
    /// (single-table queries).
    pub fn matches_value(&self, value: &AlgebraicValue) -> bool {
        eval(&self.cond, value.as_product().unwrap_or(&[]))
    }
}

fn strip(e: &Expr) -> &Expr {
    match e {
        Expr::Nested(inner) => strip(inner),
        other => other,
    }
}

fn decode(store: &Store, ty: &AlgebraicType, row: &[u8]) -> Result<AlgebraicValue, SqlError> {
    epoch_sats::bsatn::decode(&store.typespace, ty, row).map_err(|e| SqlError::Unsupported(e.to_string()))
}

fn key(value: &AlgebraicValue, col: usize) -> &AlgebraicValue {
    &value.as_product().unwrap_or(&[])[col]
}

/// Which of a join's two tables (`names`: each one's name and alias) its `SELECT t.*` returns.
fn projected_side(select: &sqlparser::ast::Select, names: [(&String, Option<&String>); 2]) -> Result<usize, SqlError> {
    match select.projection.as_slice() {
        [SelectItem::QualifiedWildcard(SelectItemQualifiedWildcardKind::ObjectName(n), _)] => {
            let n = crate::plan::unquoted(n);
            names.iter().position(|(name, alias)| **name == n || *alias == Some(&n)).ok_or(SqlError::UnknownTable(n))
        }
        [SelectItem::Wildcard(_)] => Err(SqlError::Join("SELECT * is not supported for joins")),
        _ => Err(SqlError::SubscriptionProjection),
    }
}

/// Which side of a join 1.3 probes through an index, so must have one on its join column:
/// the joined (second) table, unless the `WHERE` compares only the second table's columns
/// with constants at its top level (1.3 then walks the second table and probes the first).
fn probed_side(cond: &Cond, first_len: usize) -> usize {
    fn constant_sides(cond: &Cond, first_len: usize, sides: &mut [bool; 2]) {
        match cond {
            Cond::And(l, r) => {
                constant_sides(l, first_len, sides);
                constant_sides(r, first_len, sides);
            }
            Cond::Cmp { col, rhs: Operand::Lit(_), .. } => sides[usize::from(*col >= first_len)] = true,
            _ => {}
        }
    }
    let mut sides = [false; 2];
    constant_sides(cond, first_len, &mut sides);
    if sides == [false, true] {
        0
    } else {
        1
    }
}

/// The rows of `side`'s table whose join column equals `k`: through its index, else a scan.
/// Each row looked at counts against `budget`.
fn probe<'s>(
    store: &'s Store,
    side: &Side,
    k: &AlgebraicValue,
    budget: &mut EvalBudget,
) -> Result<Vec<(&'s [u8], AlgebraicValue)>, SqlError> {
    let table = store.table(side.table).map_err(store_err)?;
    let mut out = Vec::new();
    match side.index {
        Some(i) => {
            let mut ids = Vec::new();
            table.indexes[i].scan(&[], Bound::Included(k), Bound::Included(k), &mut ids);
            for id in ids {
                budget.visit()?;
                if let Some(row) = table.get(id) {
                    out.push((row, decode(store, &side.row_type, row)?));
                }
            }
        }
        None => {
            for (_, row) in table.iter() {
                budget.visit()?;
                let v = decode(store, &side.row_type, row)?;
                if key(&v, side.col) == k {
                    out.push((row, v));
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::is_all_tables;

    #[test]
    fn select_star_from_star_is_recognised_as_1_3_spells_it() {
        for sql in ["SELECT * FROM *", "select * from *", "  Select\t*\n FROM  * ", "SELECT\u{a0}* FROM *"] {
            assert!(is_all_tables(sql), "{sql:?}");
        }
        for sql in ["SELECT * FROM t", "SELECT *FROM *", "SELECT * FROM * WHERE x = 1", "SELECT * FROM **", ""] {
            assert!(!is_all_tables(sql), "{sql:?}");
        }
    }
}
