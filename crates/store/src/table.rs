//! One table: rows kept as BSATN bytes in slots, with B-tree indexes over decoded key columns.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::sync::Arc;

use epoch_sats::bsatn::{self, Reader};
use epoch_sats::{AlgebraicType, AlgebraicValue, ProductType, Typespace};
use epoch_schema::TableDef;

use crate::key::{IntKind, Key};
use crate::slots::Slots;
use crate::StoreError;

/// The position of a row inside its table; stable while the row lives.
pub type RowId = u32;

/// What the store needs to know about a table, derived once from its definition.
#[derive(Debug)]
pub struct TableSchema {
    pub def: TableDef,
    pub typespace: Arc<Typespace>,
    /// For each column, its BSATN length when fixed.
    pub(crate) fixed_len: Vec<Option<usize>>,
}

impl TableSchema {
    pub fn new(def: TableDef, typespace: Arc<Typespace>) -> Self {
        let fixed_len = def.row_type.elements.iter().map(|e| e.ty.fixed_bsatn_len(&typespace)).collect();
        Self { def, typespace, fixed_len }
    }

    pub fn name(&self) -> &str {
        &self.def.name
    }

    /// Whether this is the place of a table a module update removed (see
    /// [`crate::REMOVED_TABLE_PREFIX`]).
    pub fn is_removed(&self) -> bool {
        self.def.name.starts_with(crate::REMOVED_TABLE_PREFIX)
    }

    pub fn row_type(&self) -> &ProductType {
        &self.def.row_type
    }

    /// The type of column `col`.
    pub fn column_type(&self, col: u16) -> &AlgebraicType {
        &self.def.row_type.elements[col as usize].ty
    }

    /// Byte offset of `col` in `row`, skipping earlier columns (fast when they have fixed sizes).
    pub fn column_offset(&self, row: &[u8], col: u16) -> Result<usize, StoreError> {
        let mut offset = 0usize;
        let mut r: Option<Reader<'_>> = None;
        for c in 0..col as usize {
            match (&mut r, self.fixed_len[c]) {
                (None, Some(n)) => offset += n,
                (None, None) => {
                    let mut rd = Reader::new(row.get(offset..).ok_or(StoreError::Corrupt)?);
                    bsatn::skip(&self.typespace, &self.def.row_type.elements[c].ty, &mut rd)?;
                    r = Some(rd);
                }
                (Some(rd), _) => bsatn::skip(&self.typespace, &self.def.row_type.elements[c].ty, rd)?,
            }
        }
        Ok(match r {
            Some(rd) => row.len() - rd.remaining().len(),
            None => offset,
        })
    }

    /// Decodes the value of column `col` from a row.
    pub fn column_value(&self, row: &[u8], col: u16) -> Result<AlgebraicValue, StoreError> {
        let off = self.column_offset(row, col)?;
        let mut r = Reader::new(row.get(off..).ok_or(StoreError::Corrupt)?);
        Ok(bsatn::decode_from(&self.typespace, self.column_type(col), &mut r)?)
    }

    /// The index key of a row: the column's value, or a product of values for several columns.
    pub fn key_of(&self, row: &[u8], cols: &[u16]) -> Result<AlgebraicValue, StoreError> {
        match cols {
            [c] => self.column_value(row, *c),
            _ => Ok(AlgebraicValue::Product(
                cols.iter().map(|c| self.column_value(row, *c)).collect::<Result<Vec<_>, _>>()?.into(),
            )),
        }
    }

    /// Checks that `row` is exactly one well-formed value of the row type.
    pub fn validate_row(&self, row: &[u8]) -> Result<(), StoreError> {
        let mut r = Reader::new(row);
        for e in self.def.row_type.elements.iter() {
            bsatn::skip(&self.typespace, &e.ty, &mut r)?;
        }
        r.finish()?;
        Ok(())
    }

    /// A row written before a module update added columns with default values (2.x), with
    /// those defaults appended; `None` when `row` is not such a row (a current row, or one
    /// that does not decode). Recovery reads logs and snapshots written before the update
    /// through this, so the update needs no rewrite of what is on disk.
    pub fn with_defaults_appended(&self, row: &[u8]) -> Option<Vec<u8>> {
        if self.def.default_values.is_empty() {
            return None;
        }
        let mut r = Reader::new(row);
        for (i, e) in self.def.row_type.elements.iter().enumerate() {
            if r.remaining().is_empty() {
                let mut out = row.to_vec();
                for col in i..self.def.row_type.elements.len() {
                    let (_, value) = self.def.default_values.iter().find(|(c, _)| *c as usize == col)?;
                    out.extend_from_slice(value);
                }
                return Some(out);
            }
            bsatn::skip(&self.typespace, &e.ty, &mut r).ok()?;
        }
        None
    }
}

/// A B-tree index over one or more columns.
#[derive(Debug)]
pub struct Index {
    pub id: u32,
    pub name: String,
    pub columns: Vec<u16>,
    pub unique: bool,
    /// Name of the unique constraint this index enforces, for error messages.
    pub constraint: Option<String>,
    /// Set for an index over one integer or boolean column: its keys are `u64`s.
    pub(crate) int: Option<IntKind>,
    pub(crate) map: IndexMap,
}

#[derive(Debug)]
pub(crate) enum IndexMap {
    Unique(BTreeMap<AlgebraicValue, RowId>),
    Multi(BTreeSet<(AlgebraicValue, RowId)>),
    UniqueInt(BTreeMap<u64, RowId>),
    MultiInt(BTreeSet<(u64, RowId)>),
}

impl Index {
    fn new(
        id: u32,
        name: String,
        columns: Vec<u16>,
        unique: bool,
        constraint: Option<String>,
        schema: &TableSchema,
    ) -> Self {
        let int = match columns[..] {
            [c] => IntKind::of(schema.column_type(c)),
            _ => None,
        };
        let map = match (unique, int.is_some()) {
            (true, true) => IndexMap::UniqueInt(BTreeMap::new()),
            (false, true) => IndexMap::MultiInt(BTreeSet::new()),
            (true, false) => IndexMap::Unique(BTreeMap::new()),
            (false, false) => IndexMap::Multi(BTreeSet::new()),
        };
        debug_assert!(int.is_none() || columns.len() == 1, "integer keys are one column");
        Self { id, name, columns, unique, constraint, int, map }
    }

    /// The key of `row` in this index, read from its bytes.
    pub(crate) fn key_of_row(&self, schema: &TableSchema, row: &[u8]) -> Result<Key, StoreError> {
        match self.int {
            Some(kind) => {
                let at = schema.column_offset(row, self.columns[0])?;
                row.get(at..).and_then(|b| kind.key_of_bytes(b)).map(Key::Int).ok_or(StoreError::Corrupt)
            }
            None => schema.key_of(row, &self.columns).map(Key::Value),
        }
    }

    /// `v` as a key of this index: `None` when it is not a value of the key's type.
    fn key_of_value(&self, v: &AlgebraicValue) -> Option<Key> {
        match self.int {
            Some(kind) => kind.key_of_value(v).map(Key::Int),
            None => Some(Key::Value(v.clone())),
        }
    }

    fn insert(&mut self, key: Key, row: RowId) {
        match (&mut self.map, key) {
            (IndexMap::Unique(m), Key::Value(k)) => {
                m.insert(k, row);
            }
            (IndexMap::Multi(s), Key::Value(k)) => {
                s.insert((k, row));
            }
            (IndexMap::UniqueInt(m), Key::Int(k)) => {
                m.insert(k, row);
            }
            (IndexMap::MultiInt(s), Key::Int(k)) => {
                s.insert((k, row));
            }
            _ => debug_assert!(false, "index {} given a key of the wrong form", self.name),
        }
    }

    fn remove(&mut self, key: Key, row: RowId) {
        match (&mut self.map, key) {
            (IndexMap::Unique(m), Key::Value(k)) => {
                m.remove(&k);
            }
            (IndexMap::Multi(s), Key::Value(k)) => {
                s.remove(&(k, row));
            }
            (IndexMap::UniqueInt(m), Key::Int(k)) => {
                m.remove(&k);
            }
            (IndexMap::MultiInt(s), Key::Int(k)) => {
                s.remove(&(k, row));
            }
            _ => debug_assert!(false, "index {} given a key of the wrong form", self.name),
        }
    }

    /// Whether this index maps `key` to `row`.
    pub(crate) fn maps(&self, key: &Key, row: RowId) -> bool {
        match (&self.map, key) {
            (IndexMap::Unique(m), Key::Value(k)) => m.get(k) == Some(&row),
            (IndexMap::Multi(s), Key::Value(k)) => s.contains(&(k.clone(), row)),
            (IndexMap::UniqueInt(m), Key::Int(k)) => m.get(k) == Some(&row),
            (IndexMap::MultiInt(s), Key::Int(k)) => s.contains(&(*k, row)),
            _ => false,
        }
    }

    /// Fills this empty index from (key, row) pairs in any order (the maps sort them once and
    /// build their trees bottom-up). Returns false when a unique index got a key twice (it then
    /// holds fewer entries than it was given).
    fn build(&mut self, entries: Vec<(Key, RowId)>) -> bool {
        debug_assert!(self.is_empty(), "only an empty index is built in one pass");
        let n = entries.len();
        let ints = || entries.iter().filter_map(|(k, r)| if let Key::Int(k) = k { Some((*k, *r)) } else { None });
        match &mut self.map {
            IndexMap::UniqueInt(m) => *m = ints().collect(),
            IndexMap::MultiInt(s) => *s = ints().collect(),
            IndexMap::Unique(m) => {
                *m = entries
                    .into_iter()
                    .filter_map(|(k, r)| if let Key::Value(k) = k { Some((k, r)) } else { None })
                    .collect()
            }
            IndexMap::Multi(s) => {
                *s = entries
                    .into_iter()
                    .filter_map(|(k, r)| if let Key::Value(k) = k { Some((k, r)) } else { None })
                    .collect()
            }
        }
        self.len() == n
    }

    /// The row under `key` in a unique index.
    pub(crate) fn get_unique_key(&self, key: &Key) -> Option<RowId> {
        match (&self.map, key) {
            (IndexMap::Unique(m), Key::Value(k)) => m.get(k).copied(),
            (IndexMap::UniqueInt(m), Key::Int(k)) => m.get(k).copied(),
            _ => None,
        }
    }

    /// How many entries the index holds (for a unique index: distinct keys).
    pub fn len(&self) -> usize {
        match &self.map {
            IndexMap::Unique(m) => m.len(),
            IndexMap::Multi(s) => s.len(),
            IndexMap::UniqueInt(m) => m.len(),
            IndexMap::MultiInt(s) => s.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The row under `key` in a unique index.
    pub fn get_unique(&self, key: &AlgebraicValue) -> Option<RowId> {
        self.get_unique_key(&self.key_of_value(key)?)
    }

    /// Rows whose key starts with `prefix` and whose next column lies between `start` and `end`,
    /// in key order. With an empty prefix on a one-column index this is a plain range scan.
    pub fn scan(
        &self,
        prefix: &[AlgebraicValue],
        start: Bound<&AlgebraicValue>,
        end: Bound<&AlgebraicValue>,
        out: &mut Vec<RowId>,
    ) {
        let multi_col = self.columns.len() > 1;
        if let Some(kind) = self.int {
            self.scan_int(kind, start, end, out);
            return;
        }
        if !multi_col {
            self.scan_one_column(start, end, out);
            return;
        }
        self.scan_prefixed(prefix, start, end, out);
    }

    /// `scan` on an index over one integer column, whose keys are `u64`s rather than values.
    fn scan_int(
        &self,
        kind: IntKind,
        start: Bound<&AlgebraicValue>,
        end: Bound<&AlgebraicValue>,
        out: &mut Vec<RowId>,
    ) {
        // One integer column: the bounds as keys (a bound of another type matches nothing).
        let key = |b: Bound<&AlgebraicValue>| -> Option<Bound<u64>> {
            Some(match b {
                Bound::Included(v) => Bound::Included(kind.key_of_value(v)?),
                Bound::Excluded(v) => Bound::Excluded(kind.key_of_value(v)?),
                Bound::Unbounded => Bound::Unbounded,
            })
        };
        let (Some(lo), Some(hi)) = (key(start), key(end)) else { return };
        match &self.map {
            IndexMap::UniqueInt(m) => {
                if let (Bound::Included(a), Bound::Included(b)) = (lo, hi) {
                    if a == b {
                        out.extend(m.get(&a).copied());
                        return;
                    }
                }
                if !bounds_empty(lo.as_ref(), hi.as_ref()) {
                    out.extend(m.range((lo, hi)).map(|(_, r)| *r));
                }
            }
            IndexMap::MultiInt(s) => {
                let lo = match lo {
                    Bound::Included(v) => Bound::Included((v, RowId::MIN)),
                    Bound::Excluded(v) => Bound::Excluded((v, RowId::MAX)),
                    Bound::Unbounded => Bound::Unbounded,
                };
                let hi = match hi {
                    Bound::Included(v) => Bound::Included((v, RowId::MAX)),
                    Bound::Excluded(v) => Bound::Excluded((v, RowId::MIN)),
                    Bound::Unbounded => Bound::Unbounded,
                };
                if !bounds_empty(lo.as_ref(), hi.as_ref()) {
                    out.extend(s.range((lo, hi)).map(|(_, r)| *r));
                }
            }
            _ => debug_assert!(false, "an integer index keeps integer keys"),
        }
    }

    /// `scan` on a one-column index of any other type: `prefix` is empty, the key is the value.
    fn scan_one_column(&self, start: Bound<&AlgebraicValue>, end: Bound<&AlgebraicValue>, out: &mut Vec<RowId>) {
        // `prefix` is empty: the key is the value itself.
        if let (IndexMap::Unique(m), Bound::Included(a), Bound::Included(b)) = (&self.map, start, end) {
            if a == b {
                out.extend(m.get(a).copied());
                return;
            }
        }
        match &self.map {
            IndexMap::Unique(m) => {
                if bounds_empty(start, end) {
                    return;
                }
                out.extend(m.range::<AlgebraicValue, _>((start, end)).map(|(_, r)| *r))
            }
            IndexMap::Multi(s) => {
                let lo = match start {
                    Bound::Included(v) => Bound::Included((v.clone(), RowId::MIN)),
                    Bound::Excluded(v) => Bound::Excluded((v.clone(), RowId::MAX)),
                    Bound::Unbounded => Bound::Unbounded,
                };
                let hi = match end {
                    Bound::Included(v) => Bound::Included((v.clone(), RowId::MAX)),
                    Bound::Excluded(v) => Bound::Excluded((v.clone(), RowId::MIN)),
                    Bound::Unbounded => Bound::Unbounded,
                };
                if bounds_empty(lo.as_ref(), hi.as_ref()) {
                    return;
                }
                out.extend(s.range((lo, hi)).map(|(_, r)| *r))
            }
            IndexMap::UniqueInt(_) | IndexMap::MultiInt(_) => unreachable!("integer indexes are scanned above"),
        }
    }

    /// `scan` on a multi-column index, whose keys are products starting with `prefix`.
    fn scan_prefixed(
        &self,
        prefix: &[AlgebraicValue],
        start: Bound<&AlgebraicValue>,
        end: Bound<&AlgebraicValue>,
        out: &mut Vec<RowId>,
    ) {
        // Multi-column keys are products; a shorter product sorts before all its extensions, so
        // the scan starts at `prefix ++ [start]` and walks forward while the key still matches.
        let k = prefix.len();
        let mut seek: Vec<AlgebraicValue> = prefix.to_vec();
        if let Bound::Included(v) | Bound::Excluded(v) = start {
            seek.push(v.clone());
        }
        let seek = AlgebraicValue::Product(seek.into());
        let matches = |key: &AlgebraicValue| -> Option<bool> {
            // Some(true): in range; Some(false): skip; None: past the end.
            let parts = key.as_product()?;
            if parts.len() <= k || parts[..k] != *prefix {
                return None;
            }
            let v = &parts[k];
            match end {
                Bound::Included(e) if v > e => return None,
                Bound::Excluded(e) if v >= e => return None,
                _ => {}
            }
            Some(match start {
                Bound::Excluded(s) => v > s,
                _ => true,
            })
        };
        match &self.map {
            IndexMap::Unique(m) => {
                for (key, row) in m.range(seek..) {
                    match matches(key) {
                        Some(true) => out.push(*row),
                        Some(false) => continue,
                        None => break,
                    }
                }
            }
            IndexMap::Multi(s) => {
                for (key, row) in s.range((seek, RowId::MIN)..) {
                    match matches(key) {
                        Some(true) => out.push(*row),
                        Some(false) => continue,
                        None => break,
                    }
                }
            }
            IndexMap::UniqueInt(_) | IndexMap::MultiInt(_) => unreachable!("integer indexes have one column"),
        }
    }
}

/// Whether a range is empty or inverted (BTreeMap::range panics on inverted ranges).
fn bounds_empty<T: Ord>(start: Bound<&T>, end: Bound<&T>) -> bool {
    match (start, end) {
        (Bound::Included(a), Bound::Included(b)) => a > b,
        (Bound::Included(a), Bound::Excluded(b))
        | (Bound::Excluded(a), Bound::Included(b))
        | (Bound::Excluded(a), Bound::Excluded(b)) => a >= b,
        _ => false,
    }
}

/// An `auto_inc` sequence on one integer column.
#[derive(Debug)]
pub struct Sequence {
    pub column: u16,
    pub next: i128,
    pub increment: i128,
    pub min: i128,
    pub max: i128,
}

impl Sequence {
    fn new(def: &epoch_schema::SequenceDef, ty: &AlgebraicType) -> Self {
        let (tmin, tmax) = integer_range(ty);
        let min = def.min_value.unwrap_or(1).max(tmin);
        let max = def.max_value.unwrap_or(tmax).min(tmax);
        let start = def.start.unwrap_or(if def.increment >= 0 { min } else { max });
        Self {
            column: def.column,
            next: start,
            increment: if def.increment == 0 { 1 } else { def.increment },
            min,
            max,
        }
    }

    /// Hands out the next value, or fails when the sequence has run past its range.
    pub fn next_value(&mut self) -> Option<i128> {
        let v = self.next;
        if v < self.min || v > self.max {
            return None;
        }
        self.next = v.saturating_add(self.increment);
        Some(v)
    }
}

/// The range of an integer type, clamped to `i128`.
fn integer_range(ty: &AlgebraicType) -> (i128, i128) {
    use AlgebraicType as T;
    match ty {
        T::I8 => (i8::MIN as i128, i8::MAX as i128),
        T::U8 => (0, u8::MAX as i128),
        T::I16 => (i16::MIN as i128, i16::MAX as i128),
        T::U16 => (0, u16::MAX as i128),
        T::I32 => (i32::MIN as i128, i32::MAX as i128),
        T::U32 => (0, u32::MAX as i128),
        T::I64 => (i64::MIN as i128, i64::MAX as i128),
        T::U64 => (0, u64::MAX as i128),
        T::U128 | T::U256 => (0, i128::MAX),
        _ => (i128::MIN, i128::MAX),
    }
}

/// Writes integer `v` as a value of integer type `ty` in BSATN, at the front of `out`.
pub(crate) fn write_integer(ty: &AlgebraicType, v: i128, out: &mut [u8]) -> Option<()> {
    use AlgebraicType as T;
    let bytes: Vec<u8> = match ty {
        T::I8 => (v as i8).to_le_bytes().to_vec(),
        T::U8 => (v as u8).to_le_bytes().to_vec(),
        T::I16 => (v as i16).to_le_bytes().to_vec(),
        T::U16 => (v as u16).to_le_bytes().to_vec(),
        T::I32 => (v as i32).to_le_bytes().to_vec(),
        T::U32 => (v as u32).to_le_bytes().to_vec(),
        T::I64 => (v as i64).to_le_bytes().to_vec(),
        T::U64 => (v as u64).to_le_bytes().to_vec(),
        T::I128 => v.to_le_bytes().to_vec(),
        T::U128 => (v as u128).to_le_bytes().to_vec(),
        T::I256 => epoch_sats::I256::new(v).to_le_bytes().to_vec(),
        T::U256 => epoch_sats::U256::new(v as u128).to_le_bytes().to_vec(),
        _ => return None,
    };
    out.get_mut(..bytes.len())?.copy_from_slice(&bytes);
    Some(())
}

/// Whether the integer stored at the front of `bytes` (of type `ty`) is zero.
pub(crate) fn integer_is_zero(ty: &AlgebraicType, bytes: &[u8]) -> bool {
    let n = match ty {
        AlgebraicType::I8 | AlgebraicType::U8 => 1,
        AlgebraicType::I16 | AlgebraicType::U16 => 2,
        AlgebraicType::I32 | AlgebraicType::U32 => 4,
        AlgebraicType::I64 | AlgebraicType::U64 => 8,
        AlgebraicType::I128 | AlgebraicType::U128 => 16,
        AlgebraicType::I256 | AlgebraicType::U256 => 32,
        _ => return false,
    };
    bytes.get(..n).is_some_and(|b| b.iter().all(|&x| x == 0))
}

/// A table's rows, indexes and sequences.
#[derive(Debug)]
pub struct Table {
    pub id: u32,
    pub schema: Arc<TableSchema>,
    rows: Slots,
    free: Vec<RowId>,
    len: usize,
    pub indexes: Vec<Index>,
    pub sequences: Vec<Sequence>,
    /// Row ids by the hash of their bytes, kept only for tables with no unique index, to give
    /// set semantics. Only the id is stored (4 bytes an entry); the bytes are in `rows`.
    by_content: Option<hashbrown::HashTable<RowId>>,
}

fn content_hash(row: &[u8]) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    BuildHasherDefault::<DefaultHasher>::default().hash_one(row)
}

impl Table {
    pub fn new(id: u32, schema: Arc<TableSchema>, first_index_id: u32) -> Self {
        let def = &schema.def;
        let indexes: Vec<Index> = def
            .indexes
            .iter()
            .enumerate()
            .map(|(i, idx)| {
                let unique = def.index_is_unique(idx);
                let columns = idx.algorithm.columns();
                let mut sorted = columns.clone();
                sorted.sort_unstable();
                let constraint = def.constraints.iter().find(|c| c.unique_columns == sorted).map(|c| c.name.clone());
                Index::new(first_index_id + i as u32, idx.name.clone(), columns, unique, constraint, &schema)
            })
            .collect();
        let sequences =
            def.sequences.iter().map(|s| Sequence::new(s, &def.row_type.elements[s.column as usize].ty)).collect();
        let by_content = (!indexes.iter().any(|i| i.unique)).then(hashbrown::HashTable::new);
        let width = schema.fixed_len.iter().copied().sum::<Option<usize>>();
        Self { id, schema, rows: Slots::new(width), free: Vec::new(), len: 0, indexes, sequences, by_content }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// Slots freed by deletes and not reused yet.
    pub(crate) fn free_slots(&self) -> usize {
        self.free.len()
    }

    /// Bytes of every live row together (for sizing a copy).
    pub fn byte_len(&self) -> usize {
        self.rows.byte_len(self.len)
    }

    /// Makes room for `n` more rows.
    pub(crate) fn reserve(&mut self, n: usize) {
        self.rows.reserve(n);
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn get(&self, row: RowId) -> Option<&[u8]> {
        self.rows.get(row)
    }

    /// Every live row with its id, in slot order.
    pub fn iter(&self) -> impl Iterator<Item = (RowId, &[u8])> {
        self.rows.iter()
    }

    /// Finds a row with exactly these bytes.
    pub fn find_same(&self, row: &[u8]) -> Result<Option<RowId>, StoreError> {
        if let Some(idx) = self.indexes.iter().find(|i| i.unique) {
            let key = idx.key_of_row(&self.schema, row)?;
            return Ok(idx.get_unique_key(&key).filter(|r| self.get(*r) == Some(row)));
        }
        if let Some(m) = &self.by_content {
            return Ok(m.find(content_hash(row), |r| self.rows.get(*r) == Some(row)).copied());
        }
        Ok(None)
    }

    /// Loads rows into this empty table all at once (a snapshot or the first recovered batch):
    /// each row is stored, then every index is built from its sorted keys in one pass, which
    /// is several times faster than inserting key by key. Rows come from files anyone may
    /// have altered (an archive), so a key held twice in a unique index, or a row twice in a
    /// table without one, is [`StoreError::RecoveredDuplicate`] (or `RecoveredDuplicateRow`); the table is then unusable
    /// and the caller abandons the load.
    pub(crate) fn bulk_load<'r>(&mut self, rows: impl IntoIterator<Item = &'r [u8]>) -> Result<(), StoreError> {
        debug_assert!(self.is_empty(), "bulk loads go into an empty table");
        let mut keys: Vec<Vec<(Key, RowId)>> = self.indexes.iter().map(|_| Vec::new()).collect();
        for row in rows {
            self.schema.validate_row(row)?;
            if self.by_content.is_some() && self.find_same(row)?.is_some() {
                return Err(self.recovered_duplicate(None, row));
            }
            for (idx, k) in self.indexes.iter().zip(keys.iter_mut()) {
                let key = idx.key_of_row(&self.schema, row)?;
                k.push((key, self.rows.slot_hint()));
            }
            let id = self.rows.push_free();
            if self.rows.fill(id, row).is_err() {
                return Err(StoreError::Corrupt);
            }
            self.index_content(id);
            self.len += 1;
        }
        let mut broken = None;
        for (i, (idx, k)) in self.indexes.iter_mut().zip(keys).enumerate() {
            if !idx.build(k) && broken.is_none() {
                broken = Some(i);
            }
        }
        match broken {
            Some(i) => Err(self.first_duplicate(i)),
            None => Ok(()),
        }
    }

    /// The error for the first row whose key in unique index `i` an earlier row holds too.
    fn first_duplicate(&self, i: usize) -> StoreError {
        let idx = &self.indexes[i];
        let mut seen = std::collections::BTreeSet::new();
        for (_, row) in self.iter() {
            match idx.key_of_row(&self.schema, row) {
                Ok(key) => {
                    if !seen.insert(key) {
                        return self.recovered_duplicate(Some(idx), row);
                    }
                }
                Err(e) => return e,
            }
        }
        self.recovered_duplicate(Some(idx), &[])
    }

    /// Before a recovered row is stored in a table that already holds rows: an error when a
    /// unique index already has its key, or (no unique index) the identical row is there.
    pub(crate) fn check_recovered(&self, row: &[u8]) -> Result<(), StoreError> {
        let mut any_unique = false;
        for idx in self.indexes.iter().filter(|i| i.unique) {
            any_unique = true;
            if idx.get_unique_key(&idx.key_of_row(&self.schema, row)?).is_some() {
                return Err(self.recovered_duplicate(Some(idx), row));
            }
        }
        if !any_unique && self.find_same(row)?.is_some() {
            return Err(self.recovered_duplicate(None, row));
        }
        Ok(())
    }

    /// A recovered row that breaks unique index `idx` (`None`: a row stored twice).
    fn recovered_duplicate(&self, idx: Option<&Index>, row: &[u8]) -> StoreError {
        let table = self.schema.name().to_string();
        match idx {
            Some(idx) => StoreError::RecoveredDuplicate {
                table,
                index: idx.name.clone(),
                key: self.schema.key_of(row, &idx.columns).map_or_else(|e| e.to_string(), |k| format!("{k:?}")),
            },
            None => StoreError::RecoveredDuplicateRow { table },
        }
    }

    /// Before an insert: the id of an identical row already stored (the insert is then a
    /// no-op), or an error when another row holds a key of a unique index; one lookup per
    /// unique index.
    pub(crate) fn check_insert(&self, row: &[u8]) -> Result<Option<RowId>, StoreError> {
        let mut unique = self.indexes.iter().filter(|i| i.unique);
        let Some(first) = unique.next() else {
            return self.find_same(row);
        };
        if let Some(id) = first.get_unique_key(&first.key_of_row(&self.schema, row)?) {
            // Any other unique index maps the identical row's keys to itself.
            return if self.get(id) == Some(row) { Ok(Some(id)) } else { Err(self.unique_violation(first, row)) };
        }
        for idx in unique {
            if idx.get_unique_key(&idx.key_of_row(&self.schema, row)?).is_some() {
                return Err(self.unique_violation(idx, row));
            }
        }
        Ok(None)
    }

    fn unique_violation(&self, idx: &Index, row: &[u8]) -> StoreError {
        let key = match self.schema.key_of(row, &idx.columns) {
            Ok(k) => format!("{k:?}"),
            Err(e) => e.to_string(),
        };
        StoreError::UniqueViolation {
            table: self.schema.name().to_string(),
            constraint: idx.constraint.clone().unwrap_or_else(|| idx.name.clone()),
            key,
        }
    }

    /// Checks every unique index for a different row with the same key.
    pub(crate) fn check_unique(&self, row: &[u8]) -> Result<(), StoreError> {
        for idx in self.indexes.iter().filter(|i| i.unique) {
            if idx.get_unique_key(&idx.key_of_row(&self.schema, row)?).is_some() {
                return Err(self.unique_violation(idx, row));
            }
        }
        Ok(())
    }

    /// Stores a row already checked for uniqueness; returns its id.
    pub(crate) fn put(&mut self, row: &[u8]) -> Result<RowId, StoreError> {
        let keys = self
            .indexes
            .iter()
            .map(|idx| idx.key_of_row(&self.schema, row))
            .collect::<Result<smallvec::SmallVec<[Key; 4]>, _>>()?;
        let id = match self.free.pop() {
            Some(id) => id,
            None => self.rows.push_free(),
        };
        if self.rows.fill(id, row).is_err() {
            // Rows are validated against the row type before they get here, so a fixed-width
            // table only ever sees rows of its width.
            self.free.push(id);
            return Err(StoreError::Corrupt);
        }
        for (idx, key) in self.indexes.iter_mut().zip(keys) {
            idx.insert(key, id);
        }
        self.index_content(id);
        self.len += 1;
        Ok(id)
    }

    /// Adds live row `id` to the content map, when the table keeps one.
    fn index_content(&mut self, id: RowId) {
        let rows = &self.rows;
        if let (Some(m), Some(row)) = (&mut self.by_content, rows.get(id)) {
            m.insert_unique(content_hash(row), id, |r| content_hash(rows.get(*r).unwrap_or_default()));
        }
    }

    /// Removes a row, returning its bytes.
    /// Checks that slot `id` and every index agree: a live row is under its key in each index;
    /// a row no longer there (`gone`, its last bytes) is under its key in none. For debug
    /// assertions after a transaction.
    pub(crate) fn check_row(&self, id: RowId, gone: Option<&[u8]>) -> Result<(), String> {
        let (bytes, live) = match (self.get(id), gone) {
            (Some(row), _) => (row, true),
            (None, Some(old)) => (old, false),
            (None, None) => return Ok(()),
        };
        for idx in &self.indexes {
            let key = idx.key_of_row(&self.schema, bytes).map_err(|e| e.to_string())?;
            if idx.maps(&key, id) != live {
                return Err(format!(
                    "table {} row {id}: index {} {} it",
                    self.schema.name(),
                    idx.name,
                    if live { "lacks" } else { "still holds" }
                ));
            }
        }
        Ok(())
    }

    pub(crate) fn take(&mut self, id: RowId) -> Option<Box<[u8]>> {
        let row = self.rows.take(id)?;
        for idx in self.indexes.iter_mut() {
            // The row was indexed when it was put, so its key decodes again.
            if let Ok(key) = idx.key_of_row(&self.schema, &row) {
                idx.remove(key, id);
            }
        }
        if let Some(m) = &mut self.by_content {
            if let Ok(entry) = m.find_entry(content_hash(&row), |r| *r == id) {
                entry.remove();
            }
        }
        self.free.push(id);
        self.len -= 1;
        Some(row)
    }

    /// Puts a row back into the slot it came from (rollback of a delete).
    pub(crate) fn restore(&mut self, id: RowId, row: Box<[u8]>) {
        if let Some(pos) = self.free.iter().rposition(|r| *r == id) {
            self.free.swap_remove(pos);
        }
        let keys: Vec<_> = self.indexes.iter().map(|idx| idx.key_of_row(&self.schema, &row).ok()).collect();
        for (idx, key) in self.indexes.iter_mut().zip(keys) {
            if let Some(key) = key {
                idx.insert(key, id);
            }
        }
        // The slot was this row's, so it has the table's width.
        let filled = self.rows.fill(id, &row);
        debug_assert!(filled.is_ok(), "a restored row has its table's width");
        self.index_content(id);
        self.len += 1;
    }

    /// The index with the given id.
    pub fn index(&self, index_id: u32) -> Option<&Index> {
        self.indexes.iter().find(|i| i.id == index_id)
    }
}
