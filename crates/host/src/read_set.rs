//! What a view read while it ran, so that only the transactions that change what it saw make
//! it run again. A scan of a whole table or of an index range reads the table; a point scan
//! (`.find()` and filters on an index, ABI 10.4) reads only the rows with that key, so a
//! transaction that changes other rows of the table leaves the view alone.

use std::collections::{BTreeMap, BTreeSet};

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

    /// Whether `delta` (just committed to `store`) changed anything this set read: a row of a
    /// table read whole, or a row (inserted or deleted) whose key is one read by point.
    pub fn meets(&self, store: &Store, delta: &TxDelta) -> bool {
        delta.tables.iter().any(|changed| {
            if self.tables.contains(&changed.table_id) {
                return true;
            }
            self.points.iter().any(|(&index, keys)| {
                if self.point_tables.get(&index) != Some(&changed.table_id) {
                    return false;
                }
                let Ok((table, idx)) = store.index(index) else { return true };
                changed.inserts.iter().chain(&changed.deletes).any(|row| {
                    let mut key = Vec::new();
                    for &col in &idx.columns {
                        match table.schema.column_value(row, col) {
                            Ok(v) => epoch_sats::bsatn::encode(&v, &mut key),
                            Err(_) => return true,
                        }
                    }
                    keys.contains(key.as_slice())
                })
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
