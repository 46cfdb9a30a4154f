//! Views (2.x), materialized: a view's rows for one caller (for everyone, when the view is
//! anonymous) are computed once, with what the view read ([`ReadSet`]), and kept until a
//! committed transaction changes something it read. A transaction that touches other tables,
//! or other keys of a table the view reads by point (`.find()`), leaves it alone, so a view
//! runs again only for the callers whose rows may have changed. Kept rows nobody reads for
//! [`VIEW_IDLE_EXPIRY`] are dropped (as 2.x drops unsubscribed views), and at most
//! [`MAX_MATERIALIZED_VIEWS`] are kept per database. SQL reads them, and subscriptions start
//! from them (`view_subs`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use epoch_host::view::{view_row_type, ViewOutput};
use epoch_host::{ModuleHost, ReadIndex, ReadSet};
use epoch_query::SqlError;
use epoch_sats::Identity;
use epoch_schema::{ModuleDef, TableDef};
use epoch_store::{Store, TxDelta};

use crate::limits::{MAX_MATERIALIZED_VIEWS, VIEW_IDLE_EXPIRY};

/// A view and whose rows: the caller's, or `None` for an anonymous view.
pub(crate) type ViewKey = (usize, Option<Identity>);

/// Rows of a view instance, each the BSATN of the view's row type.
pub(crate) type ViewRows = Arc<[Box<[u8]>]>;

/// One view's rows for one caller, and what computing them read.
struct Materialized {
    rows: ViewRows,
    reads: ReadSet,
    last_read: Instant,
}

/// The materialized views of one database.
#[derive(Default)]
pub(crate) struct Views {
    kept: HashMap<ViewKey, Materialized>,
    /// The kept instances by what they read.
    index: ReadIndex<ViewKey>,
    /// Times a view ran (the cost the read sets save).
    runs: u64,
}

impl Views {
    /// How many view instances are kept, and how many times views have run.
    pub(crate) fn stats(&self) -> (usize, u64) {
        (self.kept.len(), self.runs)
    }

    /// The instance of view `view_id` for `caller`, its rows and what they read: the kept
    /// ones, or those of a new run.
    pub(crate) fn instance(
        &mut self,
        host: &mut ModuleHost,
        view_id: usize,
        caller: Identity,
    ) -> Result<(ViewKey, ViewRows, ReadSet), SqlError> {
        let def = host.def().clone();
        let view = &def.views[view_id];
        let key = (view_id, (!view.is_anonymous).then_some(caller));
        if let Some(kept) = self.kept.get_mut(&key) {
            kept.last_read = Instant::now();
            return Ok((key, kept.rows.clone(), kept.reads.clone()));
        }
        self.runs += 1;
        let (rows, reads) = match host.call_view(view_id, caller) {
            Ok((ViewOutput::Rows(rows), reads)) => (Arc::from(rows), reads),
            Ok((ViewOutput::Sql(_), _)) => {
                return Err(SqlError::Unsupported(format!("query view `{}` cannot be read with SQL yet", view.name)))
            }
            Err(outcome) => {
                let why = outcome.error_message().unwrap_or_default();
                return Err(SqlError::Unsupported(format!("view `{}` failed: {why}", view.name)));
            }
        };
        self.make_room();
        self.index.insert(key, &reads);
        let kept = Materialized { rows: Arc::clone(&rows), reads: reads.clone(), last_read: Instant::now() };
        self.kept.insert(key, kept);
        Ok((key, rows, reads))
    }

    /// Drops the instances nobody read for [`VIEW_IDLE_EXPIRY`], then, when still full, the
    /// one read longest ago.
    fn make_room(&mut self) {
        let idle: Vec<ViewKey> =
            self.kept.iter().filter(|(_, m)| m.last_read.elapsed() >= VIEW_IDLE_EXPIRY).map(|(k, _)| *k).collect();
        for key in idle {
            self.drop_instance(key);
        }
        if self.kept.len() >= MAX_MATERIALIZED_VIEWS {
            if let Some(oldest) = self.kept.iter().min_by_key(|(_, m)| m.last_read).map(|(k, _)| *k) {
                self.drop_instance(oldest);
            }
        }
        assert!(self.kept.len() < MAX_MATERIALIZED_VIEWS, "room for one more materialized view");
    }

    fn drop_instance(&mut self, key: ViewKey) {
        if let Some(m) = self.kept.remove(&key) {
            self.index.remove(key, &m.reads);
        }
    }

    /// `delta` was committed to `store`: the instances that read something it changed go
    /// (they run again when next read). Found through the read index, at the delta's cost.
    pub(crate) fn committed(&mut self, store: &Store, delta: &TxDelta) {
        if self.kept.is_empty() || delta.is_empty() {
            return;
        }
        for key in self.index.met(store, delta) {
            self.drop_instance(key);
        }
    }

    /// The module changed: every kept row may be wrong.
    pub(crate) fn clear(&mut self) {
        self.kept.clear();
        self.index = ReadIndex::default();
    }

    /// A store holding one table, named as view `view_id`, with the rows the view answers
    /// `caller`, for a query to read like any table.
    pub(crate) fn store(&mut self, host: &mut ModuleHost, view_id: usize, caller: Identity) -> Result<Store, SqlError> {
        let def = host.def().clone();
        let view = &def.views[view_id];
        if !view.params.elements.is_empty() {
            return Err(SqlError::Unsupported(format!("view `{}` takes parameters, which SQL cannot pass", view.name)));
        }
        let row_type = view_row_type(&def.typespace, view)
            .ok_or_else(|| SqlError::Unsupported(format!("view `{}` has a return type SQL cannot read", view.name)))?;
        let (_, rows, _) = self.instance(host, view_id, caller)?;
        let mut typespace = def.typespace.clone();
        typespace.types.push(epoch_sats::AlgebraicType::Product(row_type.clone()));
        let table = TableDef::plain(view.name.clone(), typespace.types.len() as u32 - 1, row_type);
        let mut store = Store::new(&ModuleDef { typespace, tables: vec![table], ..Default::default() });
        store.begin();
        for row in rows.iter() {
            let mut row = row.to_vec();
            store.insert(0, &mut row).map_err(|e| SqlError::Unsupported(format!("view `{}`: {e}", view.name)))?;
        }
        store.commit().map_err(|e| SqlError::Unsupported(format!("view `{}`: {e}", view.name)))?;
        Ok(store)
    }
}
