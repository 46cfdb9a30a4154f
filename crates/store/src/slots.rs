//! Where a table keeps the bytes of its rows, by row id.
//!
//! A table whose columns all have a fixed BSATN length (integers, floats, booleans,
//! identities, products of those) has rows of one width: they live side by side in one flat
//! buffer with a bitmap of live slots, so a row costs its width and one bit. Any other table
//! keeps a box per row. A one-column `u64` table therefore costs 8 bytes a row here, not the
//! 16-byte slot plus a 32-byte allocation a box per row costs.

use crate::table::RowId;

/// The rows of one table, by slot.
#[derive(Debug)]
pub(crate) enum Slots {
    /// Rows of `width` bytes, slot `i` at `bytes[i * width..]`; `live` has a bit per slot.
    Fixed { width: usize, bytes: Vec<u8>, live: Vec<u64>, slots: usize },
    /// A box per live row, and the bytes of all live rows.
    Boxed { rows: Vec<Option<Box<[u8]>>>, bytes: usize },
}

impl Slots {
    /// Slots for rows of `width` bytes each when known, of any length otherwise.
    pub(crate) fn new(width: Option<usize>) -> Self {
        match width {
            Some(width) => Self::Fixed { width, bytes: Vec::new(), live: Vec::new(), slots: 0 },
            None => Self::Boxed { rows: Vec::new(), bytes: 0 },
        }
    }

    /// Bytes of the `live` rows together.
    pub(crate) fn byte_len(&self, live: usize) -> usize {
        match self {
            Self::Fixed { width, .. } => width * live,
            Self::Boxed { bytes, .. } => *bytes,
        }
    }

    /// Makes room for `n` more rows.
    pub(crate) fn reserve(&mut self, n: usize) {
        match self {
            Self::Fixed { width, bytes, .. } => bytes.reserve(n * *width),
            Self::Boxed { rows, .. } => rows.reserve(n),
        }
    }

    fn is_live(live: &[u64], id: usize) -> bool {
        live.get(id / 64).is_some_and(|w| w & (1 << (id % 64)) != 0)
    }

    /// The bytes of live row `id`.
    pub(crate) fn get(&self, id: RowId) -> Option<&[u8]> {
        let i = id as usize;
        match self {
            Self::Fixed { width, bytes, live, .. } => {
                Self::is_live(live, i).then(|| &bytes[i * width..(i + 1) * width])
            }
            Self::Boxed { rows, .. } => rows.get(i)?.as_deref(),
        }
    }

    /// The id the next [`Slots::push_free`] returns.
    pub(crate) fn slot_hint(&self) -> RowId {
        match self {
            Self::Fixed { slots, .. } => *slots as RowId,
            Self::Boxed { rows, .. } => rows.len() as RowId,
        }
    }

    /// Adds a free slot at the end and returns its id.
    pub(crate) fn push_free(&mut self) -> RowId {
        match self {
            Self::Fixed { width, bytes, live, slots } => {
                bytes.resize(bytes.len() + *width, 0);
                if *slots % 64 == 0 {
                    live.push(0);
                }
                *slots += 1;
                (*slots - 1) as RowId
            }
            Self::Boxed { rows, .. } => {
                rows.push(None);
                (rows.len() - 1) as RowId
            }
        }
    }

    /// Stores a copy of `row` in free slot `id`. A fixed-width table takes only rows of its
    /// width: `Err(width)` otherwise.
    pub(crate) fn fill(&mut self, id: RowId, row: &[u8]) -> Result<(), usize> {
        let i = id as usize;
        match self {
            Self::Fixed { width, bytes, live, slots } => {
                if row.len() != *width {
                    return Err(*width);
                }
                debug_assert!(i < *slots && !Self::is_live(live, i), "slot {id} is not free");
                bytes[i * *width..(i + 1) * *width].copy_from_slice(row);
                live[i / 64] |= 1 << (i % 64);
            }
            Self::Boxed { rows, bytes } => {
                debug_assert!(rows[i].is_none(), "slot {id} is not free");
                rows[i] = Some(row.into());
                *bytes += row.len();
            }
        }
        Ok(())
    }

    /// Empties live slot `id`, returning its bytes.
    pub(crate) fn take(&mut self, id: RowId) -> Option<Box<[u8]>> {
        let i = id as usize;
        match self {
            Self::Fixed { width, bytes, live, .. } => {
                if !Self::is_live(live, i) {
                    return None;
                }
                live[i / 64] &= !(1 << (i % 64));
                Some(bytes[i * *width..(i + 1) * *width].into())
            }
            Self::Boxed { rows, bytes } => {
                let row = rows.get_mut(i)?.take()?;
                *bytes -= row.len();
                Some(row)
            }
        }
    }

    /// Every live row with its id, in slot order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (RowId, &[u8])> {
        let (fixed, boxed) = match self {
            Self::Fixed { width, bytes, live, slots } => (Some((*width, bytes, live, *slots)), None),
            Self::Boxed { rows, .. } => (None, Some(rows)),
        };
        let fixed = fixed.into_iter().flat_map(|(width, bytes, live, slots)| {
            (0..slots)
                .filter(move |i| Self::is_live(live, *i))
                .map(move |i| (i as RowId, &bytes[i * width..(i + 1) * width]))
        });
        let boxed = boxed
            .into_iter()
            .flat_map(|rows| rows.iter().enumerate().filter_map(|(i, r)| r.as_deref().map(|r| (i as RowId, r))));
        fixed.chain(boxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    #[derive(Debug, Clone)]
    enum Op {
        Put(u8),
        Take(usize),
    }

    fn ops() -> impl Strategy<Value = Vec<Op>> {
        proptest::collection::vec(prop_oneof![any::<u8>().prop_map(Op::Put), any::<usize>().prop_map(Op::Take)], 0..300)
    }

    proptest! {
        /// Both layouts behave as a map from slot to bytes, reusing no slot while it lives.
        #[test]
        fn slots_agree_with_a_map(ops in ops(), fixed in any::<bool>()) {
            let width = 3usize;
            let mut slots = Slots::new(fixed.then_some(width));
            let mut model: BTreeMap<RowId, Vec<u8>> = BTreeMap::new();
            let mut free: Vec<RowId> = Vec::new();
            for op in ops {
                match op {
                    Op::Put(b) => {
                        let id = free.pop().unwrap_or_else(|| slots.push_free());
                        prop_assert!(!model.contains_key(&id));
                        let row = vec![b; width];
                        slots.fill(id, &row).unwrap();
                        model.insert(id, row);
                    }
                    Op::Take(k) if !model.is_empty() => {
                        let id = *model.keys().nth(k % model.len()).unwrap();
                        let row = model.remove(&id).unwrap();
                        let taken = slots.take(id);
                        prop_assert_eq!(taken.as_deref(), Some(&row[..]));
                        prop_assert_eq!(slots.take(id), None);
                        free.push(id);
                    }
                    Op::Take(_) => {}
                }
                let listed: Vec<(RowId, Vec<u8>)> = slots.iter().map(|(i, r)| (i, r.to_vec())).collect();
                let expected: Vec<(RowId, Vec<u8>)> = model.iter().map(|(i, r)| (*i, r.clone())).collect();
                prop_assert_eq!(listed, expected);
                for (id, row) in &model {
                    prop_assert_eq!(slots.get(*id), Some(&row[..]));
                }
            }
        }
    }

    #[test]
    fn a_fixed_table_refuses_a_row_of_another_width() {
        let mut slots = Slots::new(Some(8));
        let id = slots.push_free();
        assert_eq!(slots.fill(id, &[0; 7]), Err(8));
        assert_eq!(slots.get(id), None);
    }
}
