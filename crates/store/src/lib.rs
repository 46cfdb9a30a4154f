//! # epoch-store
//!
//! The in-memory relational store of one database: tables whose rows stay BSATN bytes, B-tree
//! indexes on one or several columns (decoded key columns only), unique constraints, `auto_inc`
//! sequences on every integer width, and transactions that roll back completely.
//!
//! One writer owns a [`Store`] (the database executor), so a transaction mutates tables in place
//! and keeps an undo log: commit is cheap (it turns the log into a [`TxDelta`]), and rollback
//! replays the log backwards. Set semantics as in SpacetimeDB: inserting a row identical to a
//! present one changes nothing.
//!
//! Not for: durability (the commitlog consumes [`TxDelta`]s) or SQL.
//!
//! ```
//! # use epoch_store::Store;
//! # fn demo(store: &mut Store, table: u32, row: &mut [u8]) -> Result<(), epoch_store::StoreError> {
//! store.begin();
//! store.insert(table, row)?;
//! let delta = store.commit()?;
//! # Ok(()) }
//! ```

mod key;
mod slots;
mod table;

use std::collections::HashMap;
use std::ops::Bound;
use std::sync::Arc;

use epoch_sats::bsatn::{self, DecodeError, Reader};
use epoch_sats::{AlgebraicType, AlgebraicValue, Typespace};
use epoch_schema::ModuleDef;

pub use table::{Index, RowId, Sequence, Table, TableSchema};

/// What the name of a table a module update removed becomes in the store's numbering (and in
/// the table order kept on disk): its id stays taken, since the log written before the update
/// still names it, while no name reaches it.
pub const REMOVED_TABLE_PREFIX: &str = "\u{1}removed:";

/// Why a store operation failed. Each maps to one errno of the module ABI.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("not in a transaction")]
    NotInTransaction,
    #[error("no such table")]
    NoSuchTable,
    #[error("no such index")]
    NoSuchIndex,
    #[error("the index is not unique")]
    IndexNotUnique,
    #[error("no row with that key")]
    NoSuchRow,
    #[error("could not decode: {0}")]
    Decode(#[from] DecodeError),
    #[error("duplicate key {key} violates unique constraint `{constraint}` of table `{table}`")]
    UniqueViolation { table: String, constraint: String, key: String },
    #[error("sequence on column `{column}` of table `{table}` is exhausted")]
    SequenceExhausted { table: String, column: String },
    #[error("stored row is corrupt")]
    Corrupt,
    /// Recovered rows (a snapshot or log, maybe from an altered archive) hold a key twice.
    #[error("recovered rows of table `{table}` break unique index `{index}`: {key} is held twice")]
    RecoveredDuplicate { table: String, index: String, key: String },
    /// Recovered rows of a table without a unique index (a set) hold one row twice.
    #[error("recovered rows of table `{table}` hold the same row twice (a table without a unique index is a set)")]
    RecoveredDuplicateRow { table: String },
}

/// The rows one transaction inserted and deleted, per table, in commit order of tables.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TxDelta {
    pub tables: Vec<TableDelta>,
}

/// The net change to one table.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TableDelta {
    pub table_id: u32,
    pub inserts: Vec<Box<[u8]>>,
    pub deletes: Vec<Box<[u8]>>,
}

impl TxDelta {
    pub fn is_empty(&self) -> bool {
        self.tables.iter().all(|t| t.inserts.is_empty() && t.deletes.is_empty())
    }
}

#[derive(Debug)]
enum Undo {
    Inserted { table: u32, row: RowId },
    Deleted { table: u32, row: RowId, bytes: Box<[u8]>, inserted_in_tx: bool },
}

#[derive(Debug, Default)]
struct TxState {
    undo: Vec<Undo>,
    /// Rows inserted by this transaction and still live (a fast hasher: one entry per insert).
    inserted: ahash::AHashSet<(u32, RowId)>,
}

/// The tables of one database.
#[derive(Debug)]
pub struct Store {
    pub typespace: Arc<Typespace>,
    tables: Vec<Table>,
    table_ids: HashMap<String, u32>,
    /// Index name → (table id, position in the table's indexes).
    index_names: HashMap<String, (u32, usize)>,
    /// Index id → (table id, position).
    index_ids: HashMap<u32, (u32, usize)>,
    tx: Option<TxState>,
    /// The module's row-level security filters (SQL), applied by the query layer.
    pub row_level_security: Vec<String>,
}

/// Index ids are unique across a database; they start here so they are never mistaken for table ids.
const FIRST_INDEX_ID: u32 = 1 << 16;

impl Store {
    /// Creates empty tables for every table of the module, numbered in the module's order.
    pub fn new(def: &ModuleDef) -> Self {
        Self::with_order(def, &[]).expect("the module's own order has no gaps")
    }

    /// Creates empty tables for every table of the module, numbered as `order` lists them by
    /// name (tables a module update added come after the ones it kept, so every table keeps its
    /// id and the log written before the update still replays); tables `order` does not name
    /// follow, in the module's order. Names in `order` the module lacks may only come last (a
    /// module update that did not finish): a gap before a kept table is refused.
    pub fn with_order(def: &ModuleDef, order: &[String]) -> Result<Self, String> {
        let mut ordered: Vec<epoch_schema::TableDef> = Vec::with_capacity(def.tables.len());
        let mut missing: Option<&str> = None;
        for name in order {
            if name.starts_with(REMOVED_TABLE_PREFIX) {
                // A table a module update removed keeps its id, empty and out of reach.
                ordered.push(epoch_schema::TableDef::plain(name.clone(), 0, Default::default()));
                continue;
            }
            match def.tables.iter().find(|t| &t.name == name) {
                Some(t) => {
                    if let Some(gap) = missing {
                        return Err(format!(
                            "table `{gap}` is listed before `{name}` but the module has no such table"
                        ));
                    }
                    ordered.push(t.clone());
                }
                None => missing = missing.or(Some(name)),
            }
        }
        for t in &def.tables {
            if !order.contains(&t.name) {
                ordered.push(t.clone());
            }
        }
        let typespace = Arc::new(def.typespace.clone());
        let mut tables = Vec::with_capacity(def.tables.len());
        let mut table_ids = HashMap::new();
        let mut index_names = HashMap::new();
        let mut index_ids = HashMap::new();
        let mut next_index = FIRST_INDEX_ID;
        for (i, t) in ordered.into_iter().enumerate() {
            let id = i as u32;
            let schema = Arc::new(TableSchema::new(t.clone(), typespace.clone()));
            let removed = schema.is_removed();
            let table = Table::new(id, schema, next_index);
            for (pos, idx) in table.indexes.iter().enumerate() {
                index_names.insert(idx.name.clone(), (id, pos));
                index_ids.insert(idx.id, (id, pos));
            }
            // A 2.x module looks its tables and indexes up by source name; clients use canonical ones.
            for (pos, idx) in t.indexes.iter().enumerate() {
                if let Some(alias) = &idx.source_name {
                    index_names.entry(alias.clone()).or_insert((id, pos));
                }
            }
            next_index += table.indexes.len() as u32;
            if !removed {
                table_ids.insert(t.name.clone(), id);
            }
            if let Some(alias) = &t.source_name {
                table_ids.entry(alias.clone()).or_insert(id);
            }
            tables.push(table);
        }
        Ok(Self {
            typespace,
            tables,
            table_ids,
            index_names,
            index_ids,
            tx: None,
            row_level_security: def.row_level_security.clone(),
        })
    }

    /// The tables' names, by id.
    pub fn table_order(&self) -> Vec<String> {
        self.tables.iter().map(|t| t.schema.name().to_string()).collect()
    }

    /// Whether every unique index of table `table_id` holds each key once (rows loaded in bulk,
    /// e.g. by a module update that adds a unique index, are not checked as they go in).
    pub fn unique_indexes_hold(&self, table_id: u32) -> Result<(), String> {
        let table = self.table(table_id).map_err(|e| e.to_string())?;
        for idx in table.indexes.iter().filter(|i| i.unique) {
            if idx.len() != table.len() {
                return Err(format!(
                    "the rows of table `{}` are not unique on the columns of index `{}`",
                    table.schema.name(),
                    idx.name
                ));
            }
        }
        Ok(())
    }

    pub fn tables(&self) -> &[Table] {
        &self.tables
    }

    /// The tables of the module, leaving out the places of removed ones.
    pub fn present_tables(&self) -> impl Iterator<Item = &Table> + '_ {
        self.tables.iter().filter(|t| !t.schema.is_removed())
    }

    pub fn table(&self, id: u32) -> Result<&Table, StoreError> {
        self.tables.get(id as usize).ok_or(StoreError::NoSuchTable)
    }

    fn table_mut(&mut self, id: u32) -> Result<&mut Table, StoreError> {
        self.tables.get_mut(id as usize).ok_or(StoreError::NoSuchTable)
    }

    pub fn table_id(&self, name: &str) -> Option<u32> {
        self.table_ids.get(name).copied()
    }

    pub fn table_by_name(&self, name: &str) -> Option<&Table> {
        self.table_id(name).and_then(|id| self.tables.get(id as usize))
    }

    pub fn index_id(&self, name: &str) -> Option<u32> {
        let (t, pos) = self.index_names.get(name)?;
        Some(self.tables[*t as usize].indexes[*pos].id)
    }

    /// The table and index behind an index id.
    pub fn index(&self, index_id: u32) -> Result<(&Table, &Index), StoreError> {
        let (t, pos) = self.index_ids.get(&index_id).ok_or(StoreError::NoSuchIndex)?;
        let table = &self.tables[*t as usize];
        Ok((table, &table.indexes[*pos]))
    }

    pub fn in_tx(&self) -> bool {
        self.tx.is_some()
    }

    /// Starts a transaction. Any transaction left open is rolled back first.
    pub fn begin(&mut self) {
        if self.tx.is_some() {
            self.rollback();
        }
        self.tx = Some(TxState::default());
    }

    fn tx(&mut self) -> Result<&mut TxState, StoreError> {
        self.tx.as_mut().ok_or(StoreError::NotInTransaction)
    }

    /// In debug builds, checks that every row `undo` touched agrees with every index of its
    /// table (the undo log and the indexes tell the same story).
    fn debug_check_touched(&self, undo: &[Undo]) {
        if cfg!(debug_assertions) {
            for u in undo {
                let (table, row, gone) = match u {
                    Undo::Inserted { table, row } => (*table, *row, None),
                    Undo::Deleted { table, row, bytes, .. } => (*table, *row, Some(&bytes[..])),
                };
                if let Err(e) = self.tables[table as usize].check_row(row, gone) {
                    panic!("store invariant broken: {e}");
                }
            }
        }
    }

    /// Ends the transaction, keeping its changes; returns what changed.
    pub fn commit(&mut self) -> Result<TxDelta, StoreError> {
        let tx = self.tx.take().ok_or(StoreError::NotInTransaction)?;
        self.debug_check_touched(&tx.undo);
        // Inserted rows are read back from the tables; a row inserted and deleted within the
        // transaction cancels out.
        let mut inserts: Vec<Option<(u32, RowId)>> = Vec::new();
        let mut live: ahash::AHashMap<(u32, RowId), usize> = ahash::AHashMap::new();
        // Only a transaction that deleted a row it inserted needs to find that insert again.
        let cancels = tx.undo.iter().any(|u| matches!(u, Undo::Deleted { inserted_in_tx: true, .. }));
        let mut deletes: Vec<(u32, Box<[u8]>)> = Vec::new();
        for u in tx.undo {
            match u {
                Undo::Inserted { table, row } => {
                    if cancels {
                        live.insert((table, row), inserts.len());
                    }
                    inserts.push(Some((table, row)));
                }
                Undo::Deleted { table, row, bytes, inserted_in_tx } => {
                    if inserted_in_tx {
                        if let Some(i) = live.remove(&(table, row)) {
                            inserts[i] = None;
                        }
                    } else {
                        deletes.push((table, bytes));
                    }
                }
            }
        }
        let mut by_table: Vec<Option<TableDelta>> = (0..self.tables.len()).map(|_| None).collect();
        for (table, bytes) in deletes {
            by_table[table as usize]
                .get_or_insert_with(|| TableDelta { table_id: table, ..Default::default() })
                .deletes
                .push(bytes);
        }
        for (table, row) in inserts.into_iter().flatten() {
            let t = &mut self.tables[table as usize];
            // An event table's rows go to the log and to subscribers, never into the state.
            let bytes: Box<[u8]> = if t.schema.def.is_event {
                t.take(row).ok_or(StoreError::Corrupt)?
            } else {
                t.get(row).ok_or(StoreError::Corrupt)?.into()
            };
            by_table[table as usize]
                .get_or_insert_with(|| TableDelta { table_id: table, ..Default::default() })
                .inserts
                .push(bytes);
        }
        Ok(TxDelta { tables: by_table.into_iter().flatten().collect() })
    }

    /// Ends the transaction, undoing every change it made.
    pub fn rollback(&mut self) {
        let Some(tx) = self.tx.take() else { return };
        // What each touched slot held before the transaction, for the debug check afterwards.
        let mut touched: Vec<(u32, RowId)> = Vec::new();
        for u in tx.undo.into_iter().rev() {
            match u {
                Undo::Inserted { table, row } => {
                    self.tables[table as usize].take(row);
                    touched.push((table, row));
                }
                Undo::Deleted { table, row, bytes, .. } => {
                    self.tables[table as usize].restore(row, bytes);
                    touched.push((table, row));
                }
            }
        }
        if cfg!(debug_assertions) {
            for (table, row) in touched {
                if let Err(e) = self.tables[table as usize].check_row(row, None) {
                    panic!("store invariant broken after rollback: {e}");
                }
            }
        }
    }

    /// Fills `auto_inc` columns that hold zero in `row` with the next sequence values; returns them.
    fn apply_sequences(&mut self, table_id: u32, row: &mut [u8]) -> Result<Vec<u16>, StoreError> {
        let table = self.table_mut(table_id)?;
        let mut generated = Vec::new();
        let schema = table.schema.clone();
        for seq in table.sequences.iter_mut() {
            let off = schema.column_offset(row, seq.column)?;
            let ty = schema.column_type(seq.column);
            if !table::integer_is_zero(ty, &row[off..]) {
                continue;
            }
            let v = seq.next_value().ok_or_else(|| StoreError::SequenceExhausted {
                table: schema.name().to_string(),
                column: schema.def.column_name(seq.column).to_string(),
            })?;
            table::write_integer(ty, v, &mut row[off..]).ok_or(StoreError::Corrupt)?;
            generated.push(seq.column);
        }
        Ok(generated)
    }

    /// Inserts a BSATN row. `auto_inc` columns holding zero are filled in, in `row` itself;
    /// returns the new (or identical existing) row's id and the columns that were generated.
    pub fn insert(&mut self, table_id: u32, row: &mut [u8]) -> Result<(RowId, Vec<u16>), StoreError> {
        self.tx()?;
        self.table(table_id)?.schema.validate_row(row)?;
        let generated = self.apply_sequences(table_id, row)?;
        if let Some(existing) = self.tables[table_id as usize].check_insert(row)? {
            return Ok((existing, generated));
        }
        let id = self.tables[table_id as usize].put(row)?;
        let tx = self.tx()?;
        tx.undo.push(Undo::Inserted { table: table_id, row: id });
        tx.inserted.insert((table_id, id));
        Ok((id, generated))
    }

    /// Replaces the row whose key in unique index `index_id` equals the new row's key.
    pub fn update(&mut self, table_id: u32, index_id: u32, row: &mut [u8]) -> Result<(RowId, Vec<u16>), StoreError> {
        self.tx()?;
        let (t, pos) = *self.index_ids.get(&index_id).ok_or(StoreError::NoSuchIndex)?;
        if t != table_id {
            return Err(StoreError::NoSuchIndex);
        }
        self.table(table_id)?.schema.validate_row(row)?;
        if !self.tables[t as usize].indexes[pos].unique {
            return Err(StoreError::IndexNotUnique);
        }
        let generated = self.apply_sequences(table_id, row)?;
        let table = &self.tables[t as usize];
        let idx = &table.indexes[pos];
        let key = idx.key_of_row(&table.schema, row)?;
        let old = idx.get_unique_key(&key).ok_or(StoreError::NoSuchRow)?;
        let table = &mut self.tables[t as usize];
        let old_bytes = table.take(old).ok_or(StoreError::Corrupt)?;
        if let Err(e) = table.check_unique(row) {
            table.restore(old, old_bytes);
            return Err(e);
        }
        let new = match table.put(row) {
            Ok(id) => id,
            Err(e) => {
                table.restore(old, old_bytes);
                return Err(e);
            }
        };
        let tx = self.tx()?;
        let inserted_in_tx = tx.inserted.remove(&(table_id, old));
        tx.undo.push(Undo::Deleted { table: table_id, row: old, bytes: old_bytes, inserted_in_tx });
        tx.undo.push(Undo::Inserted { table: table_id, row: new });
        tx.inserted.insert((table_id, new));
        Ok((new, generated))
    }

    /// Deletes the given rows; returns how many existed.
    pub fn delete_rows(&mut self, table_id: u32, rows: &[RowId]) -> Result<u32, StoreError> {
        self.tx()?;
        self.table(table_id)?;
        let mut n = 0;
        for &row in rows {
            if let Some(bytes) = self.tables[table_id as usize].take(row) {
                let tx = self.tx()?;
                let inserted_in_tx = tx.inserted.remove(&(table_id, row));
                tx.undo.push(Undo::Deleted { table: table_id, row, bytes, inserted_in_tx });
                n += 1;
            }
        }
        Ok(n)
    }

    /// Deletes every row equal to one of the BSATN-encoded rows in `relation` (a `Vec<row>`).
    pub fn delete_by_rel(&mut self, table_id: u32, relation: &[u8]) -> Result<u32, StoreError> {
        self.tx()?;
        let table = self.table(table_id)?;
        let schema = table.schema.clone();
        let mut r = Reader::new(relation);
        let n = r.len_prefix(0)?;
        let mut ids = Vec::new();
        for _ in 0..n {
            let start = r.remaining();
            for e in schema.row_type().elements.iter() {
                bsatn::skip(&schema.typespace, &e.ty, &mut r)?;
            }
            let row = &start[..start.len() - r.remaining().len()];
            if let Some(id) = table.find_same(row)? {
                ids.push(id);
            }
        }
        r.finish()?;
        self.delete_rows(table_id, &ids)
    }

    /// Rows of index `index_id` matching a BSATN `prefix` of `prefix_elems` key columns and BSATN
    /// `Bound`s on the next column; returns the table id and row ids in key order.
    pub fn index_scan(
        &self,
        index_id: u32,
        prefix: &[u8],
        prefix_elems: u16,
        rstart: &[u8],
        rend: &[u8],
    ) -> Result<(u32, Vec<RowId>), StoreError> {
        let (table, idx) = self.index(index_id)?;
        let k = prefix_elems as usize;
        if k >= idx.columns.len() {
            return Err(StoreError::Decode(DecodeError::Invalid(format!(
                "prefix of {k} elements for an index of {} columns",
                idx.columns.len()
            ))));
        }
        let schema = &table.schema;
        let mut r = Reader::new(prefix);
        let prefix_values = idx.columns[..k]
            .iter()
            .map(|c| bsatn::decode_from(&self.typespace, schema.column_type(*c), &mut r))
            .collect::<Result<Vec<_>, _>>()?;
        r.finish()?;
        let col_ty = schema.column_type(idx.columns[k]);
        let start = decode_bound(&self.typespace, col_ty, rstart)?;
        let end = decode_bound(&self.typespace, col_ty, rend)?;
        let mut out = Vec::new();
        idx.scan(&prefix_values, start.as_ref(), end.as_ref(), &mut out);
        Ok((table.id, out))
    }

    /// The rows whose key in index `index_id` equals `point`: the BSATN of the key, one value for
    /// a one-column index, the columns' values in index order for a multi-column one (2.x's
    /// point scan, behind every `.find()` of a 2.x module).
    pub fn index_point_scan(&self, index_id: u32, point: &[u8]) -> Result<(u32, Vec<RowId>), StoreError> {
        let (table, idx) = self.index(index_id)?;
        let schema = &table.schema;
        let mut r = Reader::new(point);
        let mut key = idx
            .columns
            .iter()
            .map(|c| bsatn::decode_from(&self.typespace, schema.column_type(*c), &mut r))
            .collect::<Result<Vec<_>, _>>()?;
        r.finish()?;
        let last = key.pop().ok_or(StoreError::Corrupt)?;
        let mut out = Vec::new();
        idx.scan(&key, Bound::Included(&last), Bound::Included(&last), &mut out);
        Ok((table.id, out))
    }

    /// Deletes what [`Store::index_point_scan`] would find; returns how many rows.
    pub fn delete_by_index_point(&mut self, index_id: u32, point: &[u8]) -> Result<u32, StoreError> {
        self.tx()?;
        let (table, rows) = self.index_point_scan(index_id, point)?;
        self.delete_rows(table, &rows)
    }

    /// Deletes every row of a table; returns how many.
    pub fn clear(&mut self, table_id: u32) -> Result<u64, StoreError> {
        self.tx()?;
        let rows: Vec<RowId> = self.table(table_id)?.iter().map(|(id, _)| id).collect();
        self.delete_rows(table_id, &rows).map(u64::from)
    }

    /// Deletes what [`Store::index_scan`] would find; returns how many rows.
    pub fn delete_by_index_scan(
        &mut self,
        index_id: u32,
        prefix: &[u8],
        prefix_elems: u16,
        rstart: &[u8],
        rend: &[u8],
    ) -> Result<u32, StoreError> {
        self.tx()?;
        let (table, rows) = self.index_scan(index_id, prefix, prefix_elems, rstart, rend)?;
        self.delete_rows(table, &rows)
    }

    /// Every sequence's next value: (table id, column, next).
    pub fn sequence_states(&self) -> Vec<(u32, u16, i128)> {
        self.tables.iter().flat_map(|t| t.sequences.iter().map(move |s| (t.id, s.column, s.next))).collect()
    }

    /// The sequences of one table: (column, next).
    pub fn table_sequences(&self, table_id: u32) -> Vec<(u16, i128)> {
        self.tables
            .get(table_id as usize)
            .map(|t| t.sequences.iter().map(|s| (s.column, s.next)).collect())
            .unwrap_or_default()
    }

    /// Moves a sequence forward to at least `next` (recovery; never backwards, so no value is
    /// handed out twice).
    pub fn advance_sequence(&mut self, table_id: u32, column: u16, next: i128) {
        if let Some(s) =
            self.tables.get_mut(table_id as usize).and_then(|t| t.sequences.iter_mut().find(|s| s.column == column))
        {
            s.next = s.next.max(next);
        }
    }

    /// Loads rows from a checksummed snapshot into an empty table: each row is checked to be
    /// well-formed, but not compared with the others (a snapshot of a valid table is a set with
    /// unique keys), which keeps start-up fast.
    pub fn load_snapshot_rows(&mut self, table_id: u32, rows: &[Box<[u8]>]) -> Result<(), StoreError> {
        let upgraded = upgraded_rows(&self.table(table_id)?.schema, rows);
        let rows = upgraded.as_deref().unwrap_or(rows);
        let table = self.table_mut(table_id)?;
        if !table.is_empty() {
            return self.apply_recovered(table_id, rows.iter().map(|r| &r[..]), &[]);
        }
        table.reserve(rows.len());
        for row in rows {
            table.schema.validate_row(row)?;
            table.put(row)?;
        }
        Ok(())
    }

    /// Applies a recovered change outside any reducer: rows are stored exactly as logged
    /// (sequences untouched), deletes remove the identical row; a row that breaks a unique
    /// index (or repeats a row) is [`StoreError::RecoveredDuplicate`].
    pub fn apply_recovered<'r>(
        &mut self,
        table_id: u32,
        inserts: impl IntoIterator<Item = &'r [u8]>,
        deletes: &[Box<[u8]>],
    ) -> Result<(), StoreError> {
        let schema = self.table(table_id)?.schema.clone();
        if schema.def.is_event || schema.is_removed() {
            // Logged event rows were never part of the state; a removed table was empty when
            // it went, and nothing can reach it since.
            return Ok(());
        }
        if !schema.def.default_values.is_empty() {
            // Rows logged before columns were added get their default values.
            let inserts: Vec<Box<[u8]>> = inserts.into_iter().map(Box::from).collect();
            let inserts = upgraded_rows(&schema, &inserts).unwrap_or(inserts);
            let upgraded_deletes = upgraded_rows(&schema, deletes);
            let deletes = upgraded_deletes.as_deref().unwrap_or(deletes);
            return self.apply_recovered_rows(table_id, inserts.iter().map(|r| &r[..]), deletes);
        }
        self.apply_recovered_rows(table_id, inserts, deletes)
    }

    fn apply_recovered_rows<'r>(
        &mut self,
        table_id: u32,
        inserts: impl IntoIterator<Item = &'r [u8]>,
        deletes: &[Box<[u8]>],
    ) -> Result<(), StoreError> {
        let table = self.table_mut(table_id)?;
        for row in deletes {
            if let Some(id) = table.find_same(row)? {
                table.take(id);
            }
        }
        // Logged inserts come from committed transactions replayed in order onto the state they
        // were made in, so they cannot collide, unless the files were altered (an archive
        // anyone could write to): each is checked, one lookup per unique index.
        let inserts = inserts.into_iter();
        if table.is_empty() && table.free_slots() == 0 {
            return table.bulk_load(inserts);
        }
        table.reserve(inserts.size_hint().0);
        for row in inserts {
            table.schema.validate_row(row)?;
            table.check_recovered(row)?;
            table.put(row)?;
        }
        Ok(())
    }

    /// Finds the row whose unique-index key equals `key`.
    pub fn find_by_unique(&self, index_id: u32, key: &AlgebraicValue) -> Result<Option<&[u8]>, StoreError> {
        let (table, idx) = self.index(index_id)?;
        if !idx.unique {
            return Err(StoreError::IndexNotUnique);
        }
        Ok(idx.get_unique(key).and_then(|r| table.get(r)))
    }
}

/// `rows` with every row written before a module update added columns given those columns'
/// defaults; `None` when no row needed it.
fn upgraded_rows(schema: &TableSchema, rows: &[Box<[u8]>]) -> Option<Vec<Box<[u8]>>> {
    if schema.def.default_values.is_empty() {
        return None;
    }
    let mut changed = false;
    let out = rows
        .iter()
        .map(|r| match schema.with_defaults_appended(r) {
            Some(up) => {
                changed = true;
                up.into_boxed_slice()
            }
            None => r.clone(),
        })
        .collect();
    changed.then_some(out)
}

/// Decodes a BSATN `Bound<T>`: `Included(v)` (tag 0), `Excluded(v)` (1), `Unbounded` (2).
fn decode_bound(ts: &Typespace, ty: &AlgebraicType, bytes: &[u8]) -> Result<Bound<AlgebraicValue>, StoreError> {
    let mut r = Reader::new(bytes);
    let b = match r.u8()? {
        0 => Bound::Included(bsatn::decode_from(ts, ty, &mut r)?),
        1 => Bound::Excluded(bsatn::decode_from(ts, ty, &mut r)?),
        2 => Bound::Unbounded,
        tag => return Err(DecodeError::InvalidTag { tag, variants: 3 }.into()),
    };
    r.finish()?;
    Ok(b)
}
