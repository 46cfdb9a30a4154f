//! Views (2.x) read through SQL: the view runs for the caller and its rows become a table of
//! their own, which the query then reads like any table. A view is computed when it is read;
//! subscriptions to views are not served yet.

use epoch_host::view::{view_row_type, ViewOutput};
use epoch_host::ModuleHost;
use epoch_query::SqlError;
use epoch_schema::{ModuleDef, TableDef};
use epoch_store::Store;

/// A store holding one table, named as view `view_id`, with the rows the view answers `caller`.
pub(crate) fn view_store(
    host: &mut ModuleHost,
    view_id: usize,
    caller: epoch_sats::Identity,
) -> Result<Store, SqlError> {
    let def = host.def().clone();
    let view = &def.views[view_id];
    if !view.params.elements.is_empty() {
        return Err(SqlError::Unsupported(format!("view `{}` takes parameters, which SQL cannot pass", view.name)));
    }
    let row_type = view_row_type(&def.typespace, view)
        .ok_or_else(|| SqlError::Unsupported(format!("view `{}` has a return type SQL cannot read", view.name)))?;
    let rows = match host.call_view(view_id, caller) {
        Ok(ViewOutput::Rows(rows)) => rows,
        Ok(ViewOutput::Sql(_)) => {
            return Err(SqlError::Unsupported(format!("query view `{}` cannot be read with SQL yet", view.name)))
        }
        Err(outcome) => {
            let why = outcome.error_message().unwrap_or_default();
            return Err(SqlError::Unsupported(format!("view `{}` failed: {why}", view.name)));
        }
    };
    let mut typespace = def.typespace.clone();
    typespace.types.push(epoch_sats::AlgebraicType::Product(row_type.clone()));
    let table = TableDef::plain(view.name.clone(), typespace.types.len() as u32 - 1, row_type);
    let mut store = Store::new(&ModuleDef { typespace, tables: vec![table], ..Default::default() });
    store.begin();
    for row in rows {
        let mut row = row.into_vec();
        store.insert(0, &mut row).map_err(|e| SqlError::Unsupported(format!("view `{}`: {e}", view.name)))?;
    }
    store.commit().map_err(|e| SqlError::Unsupported(format!("view `{}`: {e}", view.name)))?;
    Ok(store)
}
