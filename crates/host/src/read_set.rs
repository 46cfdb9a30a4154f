//! What a view read while it ran, so that only the transactions that change what it saw make
//! it run again. A scan of a whole table or of an index range reads the table; a point scan
//! (`.find()` and filters on an index, ABI 10.4) reads only the rows with that key, so a
//! transaction that changes other rows of the table leaves the view alone.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::hash::Hash;

use epoch_store::{Store, TxDelta};

use crate::limits::MAX_POINT_READS;

/// The tables and index keys one run of a view read.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReadSet {
    /// Tables read whole (or by a range).
    tables: BTreeSet<u32>,
    /// Keys read by point scans, per index (BSATN of the key columns, as the module sent them).
    points: BTreeMap<u32, BTreeSet<Box<[u8]>>>,
    /// The table of each index read by point, for a set that outgrows [`MAX_POINT_READS`].
    point_tables: BTreeMap<u32, u32>,
    point_count: usize,
}

impl ReadSet {
    /// Table `table` was read whole or by a range.
    pub fn table(&mut self, table: u32) {
        self.tables.insert(table);
    }

    /// The rows of `table` whose key in index `index` is `key` were read. Past
    /// [`MAX_POINT_READS`] keys, the view counts as reading those tables whole.
    pub fn point(&mut self, table: u32, index: u32, key: &[u8]) {
        if self.tables.contains(&table) || self.points.get(&index).is_some_and(|keys| keys.contains(key)) {
            return;
        }
        if self.point_count >= MAX_POINT_READS {
            self.tables.extend(self.point_tables.values().copied());
            self.tables.insert(table);
            self.points.clear();
            self.point_tables.clear();
            self.point_count = 0;
            return;
        }
        if self.points.entry(index).or_default().insert(Box::from(key)) {
            self.point_count += 1;
        }
        self.point_tables.insert(index, table);
    }

    /// Whether the view read nothing of the database.
    pub fn is_empty(&self) -> bool {
        self.tables.is_empty() && self.points.is_empty()
    }
}

/// The BSATN of `row`'s key in index `index`, as a point scan names it; `None` when the index
/// or the row cannot be read (then every reader of the index must be told).
fn row_key(store: &Store, index: u32, row: &[u8]) -> Option<Vec<u8>> {
    let (table, idx) = store.index(index).ok()?;
    let mut key = Vec::new();
    for &col in &idx.columns {
        epoch_sats::bsatn::encode(&table.schema.column_value(row, col).ok()?, &mut key);
    }
    Some(key)
}

/// The read sets of many views (kept by key `K`), indexed by what they read, so a committed
/// delta finds the views it meets by looking up its changed tables and its changed rows' keys:
/// its cost follows the size of the delta, not the number of views.
#[derive(Debug)]
pub struct ReadIndex<K> {
    /// Views reading a table whole.
    tables: HashMap<u32, HashSet<K>>,
    /// Per index read by point: its table, and the views reading each key.
    points: HashMap<u32, (u32, ViewsByKey<K>)>,
}

/// The views reading each key of one index.
type ViewsByKey<K> = HashMap<Box<[u8]>, HashSet<K>>;

impl<K> Default for ReadIndex<K> {
    fn default() -> Self {
        Self { tables: HashMap::new(), points: HashMap::new() }
    }
}

impl<K: Hash + Eq + Copy> ReadIndex<K> {
    /// View `key` read `reads`.
    pub fn insert(&mut self, key: K, reads: &ReadSet) {
        for table in &reads.tables {
            self.tables.entry(*table).or_default().insert(key);
        }
        for (index, keys) in &reads.points {
            let table = reads.point_tables[index];
            let (_, by_key) = self.points.entry(*index).or_insert_with(|| (table, HashMap::new()));
            for k in keys {
                by_key.entry(k.clone()).or_default().insert(key);
            }
        }
    }

    /// View `key`, which had read `reads`, is gone.
    pub fn remove(&mut self, key: K, reads: &ReadSet) {
        for table in &reads.tables {
            if let Some(views) = self.tables.get_mut(table) {
                views.remove(&key);
                if views.is_empty() {
                    self.tables.remove(table);
                }
            }
        }
        for (index, keys) in &reads.points {
            let Some((_, by_key)) = self.points.get_mut(index) else { continue };
            for k in keys {
                if let Some(views) = by_key.get_mut(k) {
                    views.remove(&key);
                    if views.is_empty() {
                        by_key.remove(k);
                    }
                }
            }
            if by_key.is_empty() {
                self.points.remove(index);
            }
        }
    }

    /// The views whose reads `delta` (just committed to `store`) meets.
    pub fn met(&self, store: &Store, delta: &TxDelta) -> HashSet<K> {
        let mut out = HashSet::new();
        for changed in &delta.tables {
            if let Some(views) = self.tables.get(&changed.table_id) {
                out.extend(views.iter().copied());
            }
            for (index, (table, by_key)) in &self.points {
                if *table != changed.table_id {
                    continue;
                }
                for row in changed.inserts.iter().chain(&changed.deletes) {
                    match row_key(store, *index, row) {
                        Some(k) => out.extend(by_key.get(k.as_slice()).into_iter().flatten().copied()),
                        None => out.extend(by_key.values().flatten().copied()),
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use epoch_sats::{AlgebraicType, ProductType, Typespace};
    use epoch_schema::{IndexAlgorithm, IndexDef, ModuleDef, TableDef};
    use epoch_store::TableDelta;

    /// A store with table 0 `t(owner: u32, n: u32)` indexed on `owner` (index 0), and table 1.
    fn store() -> (Store, u32) {
        let row = ProductType::new([("owner", AlgebraicType::U32), ("n", AlgebraicType::U32)]);
        let mut t = TableDef::plain("t", 0, row.clone());
        let algorithm = IndexAlgorithm::BTree(vec![0]);
        t.indexes.push(IndexDef {
            name: "t_owner_idx_btree".into(),
            source_name: None,
            accessor_name: None,
            algorithm,
        });
        let other = TableDef::plain("u", 0, row.clone());
        let typespace = Typespace { types: vec![AlgebraicType::Product(row)] };
        let store = Store::new(&ModuleDef { typespace, tables: vec![t, other], ..Default::default() });
        let index = store.index_id("t_owner_idx_btree").unwrap();
        (store, index)
    }

    fn delta(table: u32, owner: u32) -> TxDelta {
        let row: Box<[u8]> = [owner.to_le_bytes(), 9u32.to_le_bytes()].concat().into();
        TxDelta { tables: vec![TableDelta { table_id: table, inserts: vec![row], deletes: Vec::new() }] }
    }

    /// A delta finds the views that read its rows' keys or its table, and no others; a view
    /// removed from the index is found no more.
    #[test]
    fn the_index_finds_the_views_a_delta_meets() {
        let (store, index) = store();
        let (mut by_owner_1, mut by_owner_2, mut whole) = (ReadSet::default(), ReadSet::default(), ReadSet::default());
        by_owner_1.point(0, index, &1u32.to_le_bytes());
        by_owner_2.point(0, index, &2u32.to_le_bytes());
        whole.table(1);
        let mut views = ReadIndex::default();
        views.insert('a', &by_owner_1);
        views.insert('b', &by_owner_2);
        views.insert('c', &whole);
        assert_eq!(views.met(&store, &delta(0, 2)), HashSet::from(['b']));
        assert_eq!(views.met(&store, &delta(0, 3)), HashSet::new());
        assert_eq!(views.met(&store, &delta(1, 1)), HashSet::from(['c']));
        views.remove('b', &by_owner_2);
        assert_eq!(views.met(&store, &delta(0, 2)), HashSet::new());
        assert_eq!(views.met(&store, &delta(0, 1)), HashSet::from(['a']));
        views.remove('a', &by_owner_1);
        assert!(views.points.is_empty(), "an index nobody reads is forgotten");
    }

    /// Keys are tracked one by one up to the cap; past it, their tables count as read whole.
    #[test]
    fn too_many_point_reads_become_table_reads() {
        let mut reads = ReadSet::default();
        assert!(reads.is_empty());
        for n in 0..MAX_POINT_READS as u32 {
            reads.point(7, 70, &n.to_le_bytes());
        }
        reads.point(7, 70, &0u32.to_le_bytes());
        assert_eq!((reads.point_count, reads.tables.len()), (MAX_POINT_READS, 0), "a key read twice counts once");
        reads.point(8, 80, b"one more");
        assert!(reads.points.is_empty() && reads.tables == BTreeSet::from([7, 8]), "{reads:?}");
        reads.point(7, 70, b"already covered");
        assert!(reads.points.is_empty());
    }
}
