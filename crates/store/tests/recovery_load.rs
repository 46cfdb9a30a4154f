//! Recovery loads a table in one piece (`apply_recovered` into an empty table builds each index
//! from sorted keys): the result must be the same table, index by index, as the one built row
//! by row through transactions.

use std::ops::Bound;

use epoch_sats::{bsatn, AlgebraicType, AlgebraicValue, ProductType, Typespace};
use epoch_schema::{ModuleDef, TableDef};
use epoch_store::Store;
use proptest::prelude::*;

/// `t(id: i32 unique, grp: i16 indexed, name: string indexed)` and `bag(a: u64)`.
fn def() -> ModuleDef {
    let t =
        ProductType::new([("id", AlgebraicType::I32), ("grp", AlgebraicType::I16), ("name", AlgebraicType::String)]);
    let bag = ProductType::new([("a", AlgebraicType::U64)]);
    let table = TableDef::plain("t", 0, t.clone()).with_unique_key(0).with_btree_index(&[1]).with_btree_index(&[2]);
    ModuleDef {
        typespace: Typespace { types: vec![AlgebraicType::Product(t), AlgebraicType::Product(bag.clone())] },
        tables: vec![table, TableDef::plain("bag", 1, bag)],
        reducers: Vec::new(),
        types: Vec::new(),
        row_level_security: Vec::new(),
        ..Default::default()
    }
}

fn row(id: i32, grp: i16, name: &str) -> Vec<u8> {
    bsatn::to_vec(&AlgebraicValue::product([
        AlgebraicValue::I32(id),
        AlgebraicValue::I16(grp),
        AlgebraicValue::string(name),
    ]))
}

/// Every row id each index gives for a full scan, in index order, as row bytes.
fn by_index(store: &Store, table: u32) -> Vec<Vec<Vec<u8>>> {
    let t = store.table(table).unwrap();
    t.indexes
        .iter()
        .map(|idx| {
            let mut ids = Vec::new();
            idx.scan(&[], Bound::Unbounded, Bound::Unbounded, &mut ids);
            ids.iter().map(|id| t.get(*id).unwrap().to_vec()).collect()
        })
        .collect()
}

proptest! {
    #[test]
    fn a_bulk_loaded_table_equals_one_built_row_by_row(
        rows in proptest::collection::btree_map(any::<i32>(), (-3i16..3, "[ab]{0,2}"), 0..200),
        bag in proptest::collection::btree_set(any::<u64>(), 0..100),
    ) {
        let mut built = Store::new(&def());
        built.begin();
        let mut saved = Vec::new();
        for (id, (grp, name)) in &rows {
            let mut r = row(*id, *grp, name);
            built.insert(0, &mut r).unwrap();
            saved.push(r);
        }
        let bag_rows: Vec<Vec<u8>> = bag.iter().map(|a| a.to_le_bytes().to_vec()).collect();
        for r in &bag_rows {
            built.insert(1, &mut r.clone()).unwrap();
        }
        built.commit().unwrap();

        let mut loaded = Store::new(&def());
        loaded.apply_recovered(0, saved.iter().map(|r| &r[..]), &[]).unwrap();
        loaded.apply_recovered(1, bag_rows.iter().map(|r| &r[..]), &[]).unwrap();
        for table in [0, 1] {
            prop_assert_eq!(by_index(&loaded, table), by_index(&built, table));
            let rows = |s: &Store| s.table(table).unwrap().iter().map(|(_, r)| r.to_vec()).collect::<Vec<_>>();
            prop_assert_eq!(rows(&loaded), rows(&built));
        }
        // The loaded table goes on working: a duplicate of a loaded row is found, a new one fits.
        loaded.begin();
        if let Some(r) = saved.first() {
            let (id, _) = loaded.insert(0, &mut r.clone()).unwrap();
            prop_assert_eq!(loaded.table(0).unwrap().get(id), Some(&r[..]));
            prop_assert_eq!(loaded.table(0).unwrap().len(), saved.len());
        }
        if let Some(r) = bag_rows.first() {
            loaded.insert(1, &mut r.clone()).unwrap();
            prop_assert_eq!(loaded.table(1).unwrap().len(), bag_rows.len(), "set semantics survive the load");
        }
        loaded.commit().unwrap();
    }
}

/// Recovered rows come from files anyone may alter (an archive): a key held twice in a unique
/// index, or a row held twice in a table without one, is refused naming table and index,
/// whether the table is loaded in one piece or row by row after earlier rows.
#[test]
fn recovered_duplicates_are_refused_naming_table_and_index() {
    let mut store = Store::new(&def());
    let (a, twin) = (row(1, 0, "a"), row(1, 5, "other"));
    let err = store.apply_recovered(0, [&a[..], &twin[..]], &[]).unwrap_err().to_string();
    assert!(err.contains("`t`") && err.contains("unique index") && err.contains("held twice"), "{err}");

    let mut store = Store::new(&def());
    store.apply_recovered(0, [&a[..]], &[]).unwrap();
    let err = store.apply_recovered(0, [&twin[..]], &[]).unwrap_err().to_string();
    assert!(err.contains("`t`") && err.contains("held twice"), "{err}");

    let bag = bsatn::to_vec(&AlgebraicValue::product([AlgebraicValue::U64(7)]));
    let mut store = Store::new(&def());
    let err = store.apply_recovered(1, [&bag[..], &bag[..]], &[]).unwrap_err().to_string();
    assert!(err.contains("`bag`"), "{err}");
    let mut store = Store::new(&def());
    store.apply_recovered(1, [&bag[..]], &[]).unwrap();
    assert!(store.apply_recovered(1, [&bag[..]], &[]).is_err(), "a row twice in a set");
}
