//! Row-level security: a module's `client_visibility_filter`s (`SELECT * FROM t WHERE …`, with
//! `:sender` bound to the caller). For every caller but the owner, a table with filters shows
//! only the rows at least one of its filters selects (several filters are a union), in `/sql`,
//! one-off queries and subscriptions; a table without filters shows every row.

use std::collections::HashSet;

use epoch_store::Store;

use crate::filter::Filter;
use crate::{QueryContext, SqlError};

/// The visibility rules of one table for one caller.
#[derive(Debug)]
pub(crate) struct Visibility {
    rules: Vec<Rule>,
}

#[derive(Debug)]
enum Rule {
    /// A filter on the table alone: asked of each row.
    Row(Box<Filter>),
    /// A filter that joins another table: the rows it selects now.
    Rows(HashSet<Vec<u8>>),
}

impl Visibility {
    /// The rules of table `table` for the caller of `ctx`; `None` when every row is visible
    /// (the owner, or a table without filters).
    pub(crate) fn of(store: &Store, table: u32, ctx: QueryContext) -> Result<Option<Self>, SqlError> {
        if ctx.is_owner || store.row_level_security.is_empty() {
            return Ok(None);
        }
        // Filters are the module's: they may read any table.
        let as_module = QueryContext { is_owner: true, ..ctx };
        let mut rules = Vec::new();
        for sql in &store.row_level_security {
            let f = Filter::compile_unrestricted(store, sql, as_module)?;
            if f.table_id() != table {
                continue;
            }
            rules.push(if f.is_join() {
                Rule::Rows(f.initial_rows(store)?.into_iter().map(<[u8]>::to_vec).collect())
            } else {
                Rule::Row(Box::new(f))
            });
        }
        Ok((!rules.is_empty()).then_some(Self { rules }))
    }

    /// Whether the caller may see `row` (BSATN) of the table.
    pub(crate) fn allows(&self, store: &Store, row: &[u8]) -> Result<bool, SqlError> {
        for rule in &self.rules {
            let seen = match rule {
                Rule::Row(f) => f.matches(store, row)?,
                Rule::Rows(rows) => rows.contains(row),
            };
            if seen {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

/// Checks a module's row-level security filters against its tables (as a publish does): each
/// must be a whole-row query of one table, joins allowed, with `:sender` where an identity goes.
/// The error names the filter.
pub fn check_filters(store: &Store) -> Result<(), String> {
    let ctx = QueryContext { is_owner: true, sender: Some(epoch_sats::Identity::default()), ..QueryContext::default() };
    for sql in &store.row_level_security {
        Filter::compile_unrestricted(store, sql, ctx).map_err(|e| format!("{e}, executing: `{sql}`"))?;
    }
    Ok(())
}
