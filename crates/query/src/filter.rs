//! Row filters for subscriptions: a `SELECT * FROM t [WHERE …]` compiled once, then asked of
//! one row at a time (the rows a transaction inserted or deleted).

use epoch_sats::{AlgebraicType, AlgebraicValue};
use epoch_store::Store;
use sqlparser::ast::Statement;

use crate::execute::{eval, plan_select};
use crate::parse::parse_one;
use crate::plan::{Cond, Projection};
use crate::{QueryContext, SqlError};

/// Which rows of one table a subscription query selects.
#[derive(Debug)]
pub struct Filter {
    table_id: u32,
    row_type: AlgebraicType,
    cond: Cond,
}

impl Filter {
    /// Compiles a subscription query: whole rows (`*` or `t.*`) of one table the caller may see,
    /// with an optional `WHERE`; no `LIMIT`, no `COUNT`, no column list.
    pub fn compile(store: &Store, sql: &str, ctx: QueryContext) -> Result<Self, SqlError> {
        let Statement::Query(query) = parse_one(sql, ctx)? else {
            return Err(SqlError::Unsupported("a subscription must be a SELECT".into()));
        };
        let plan = plan_select(store, query, ctx)?;
        if !matches!(plan.projection, Projection::All) {
            return Err(SqlError::SubscriptionProjection);
        }
        if plan.limit.is_some() {
            return Err(SqlError::Unsupported("LIMIT in a subscription".into()));
        }
        Ok(Self { table_id: plan.table_id, row_type: AlgebraicType::Product(plan.row_type), cond: plan.cond })
    }

    /// The table whose rows this filter selects.
    pub fn table_id(&self) -> u32 {
        self.table_id
    }

    /// Whether the BSATN row `row` of the filter's table is selected.
    pub fn matches(&self, store: &Store, row: &[u8]) -> Result<bool, SqlError> {
        if let Cond::Const(all) = self.cond {
            return Ok(all);
        }
        let value = epoch_sats::bsatn::decode(&store.typespace, &self.row_type, row)
            .map_err(|e| SqlError::Unsupported(e.to_string()))?;
        Ok(eval(&self.cond, value.as_product().unwrap_or(&[])))
    }

    /// Every row of the table the filter selects now, as BSATN (a subscription's initial rows).
    pub fn initial_rows<'s>(&self, store: &'s Store) -> Result<Vec<&'s [u8]>, SqlError> {
        let table = store.table(self.table_id).map_err(crate::execute::store_err)?;
        let mut out = Vec::new();
        for (_, row) in table.iter() {
            if self.matches(store, row)? {
                out.push(row);
            }
        }
        Ok(out)
    }

    /// Whether the decoded row `value` (a product of the table's columns) is selected.
    pub fn matches_value(&self, value: &AlgebraicValue) -> bool {
        eval(&self.cond, value.as_product().unwrap_or(&[]))
    }
}
