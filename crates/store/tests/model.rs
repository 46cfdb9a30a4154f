//! Model-based property test of the store: random inserts, updates, deletes (by row, by index
//! range, by relation), constraint violations, commits and rollbacks, checked after every step
//! against a plain in-memory model: every row, every index (unique and multi) and every
//! committed `TxDelta`.

use std::collections::{BTreeMap, BTreeSet};

use epoch_sats::{bsatn, AlgebraicType, AlgebraicValue, ProductType, Typespace};
use epoch_schema::{ModuleDef, TableDef};
use epoch_store::{Store, StoreError, TxDelta};
use proptest::prelude::*;

const ACCT: u32 = 0;
const BAG: u32 = 1;

/// `acct(id: u32 primary key, grp: u8 indexed, note: string)` and `bag(a: u8, b: u8)`, a table
/// with no unique index (set semantics by content).
fn def() -> ModuleDef {
    let acct =
        ProductType::new([("id", AlgebraicType::U32), ("grp", AlgebraicType::U8), ("note", AlgebraicType::String)]);
    let bag = ProductType::new([("a", AlgebraicType::U8), ("b", AlgebraicType::U8)]);

    let acct_table = TableDef::plain("acct", 0, acct.clone()).with_unique_key(0).with_btree_index(&[1]);
    ModuleDef {
        typespace: Typespace { types: vec![AlgebraicType::Product(acct), AlgebraicType::Product(bag.clone())] },
        tables: vec![acct_table, TableDef::plain("bag", 1, bag)],
        reducers: Vec::new(),
        types: Vec::new(),
        row_level_security: Vec::new(),
        ..Default::default()
    }
}

type Acct = (u32, u8, String);

fn acct_bytes((id, grp, note): &Acct) -> Vec<u8> {
    bsatn::to_vec(&AlgebraicValue::product([
        AlgebraicValue::U32(*id),
        AlgebraicValue::U8(*grp),
        AlgebraicValue::string(note.as_str()),
    ]))
}

fn decode_acct(store: &Store, bytes: &[u8]) -> Acct {
    let ty = AlgebraicType::Product(store.table(ACCT).unwrap().schema.row_type().clone());
    let v = bsatn::decode(&store.typespace, &ty, bytes).unwrap();
    match v.as_product().unwrap() {
        [AlgebraicValue::U32(id), AlgebraicValue::U8(grp), note] => (*id, *grp, note.as_str().unwrap().to_string()),
        other => panic!("not an acct row: {other:?}"),
    }
}

#[derive(Debug, Clone)]
enum Op {
    Begin,
    Commit,
    Rollback,
    Insert(Acct),
    Update(Acct),
    DeleteId(u32),
    DeleteGroup(u8),
    BagInsert(u8, u8),
    BagDelete(u8, u8),
}

fn note() -> impl Strategy<Value = String> {
    prop_oneof![Just(String::new()), Just("x".to_string()), Just("yy".to_string())]
}

fn acct() -> impl Strategy<Value = Acct> {
    (0u32..8, 0u8..3, note())
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => Just(Op::Begin),
        1 => Just(Op::Commit),
        1 => Just(Op::Rollback),
        4 => acct().prop_map(Op::Insert),
        3 => acct().prop_map(Op::Update),
        2 => (0u32..8).prop_map(Op::DeleteId),
        1 => (0u8..3).prop_map(Op::DeleteGroup),
        2 => (0u8..3, 0u8..3).prop_map(|(a, b)| Op::BagInsert(a, b)),
        1 => (0u8..3, 0u8..3).prop_map(|(a, b)| Op::BagDelete(a, b)),
    ]
}

#[derive(Debug, Clone, Default, PartialEq)]
struct State {
    acct: BTreeMap<u32, (u8, String)>,
    bag: BTreeSet<(u8, u8)>,
}

struct Model {
    committed: State,
    current: State,
    in_tx: bool,
}

fn index_id(store: &Store, name: &str) -> u32 {
    store.index_id(name).unwrap()
}

/// The encoded `Bound::Included(v)` of a `u8` key.
fn included_u8(v: u8) -> Vec<u8> {
    vec![0, v]
}

/// The store's rows and every index agree with `state`.
fn check(store: &Store, state: &State) -> Result<(), TestCaseError> {
    let table = store.table(ACCT).unwrap();
    let rows: BTreeMap<u32, (u8, String)> =
        table.iter().map(|(_, r)| decode_acct(store, r)).map(|(id, g, n)| (id, (g, n))).collect();
    prop_assert_eq!(&rows, &state.acct);
    prop_assert_eq!(table.len(), state.acct.len());
    let (_, by_id) = store.index(index_id(store, "acct_id_idx_btree")).unwrap();
    for (id, (grp, note)) in &state.acct {
        let row = by_id.get_unique(&AlgebraicValue::U32(*id)).expect("every row is in the unique index");
        prop_assert_eq!(decode_acct(store, table.get(row).unwrap()), (*id, *grp, note.clone()));
    }
    let grp_index = index_id(store, "acct_grp_idx_btree");
    let mut indexed = 0;
    for g in 0u8..3 {
        let (_, found) = store.index_scan(grp_index, &[], 0, &included_u8(g), &included_u8(g)).unwrap();
        let ids: BTreeSet<u32> = found.iter().map(|r| decode_acct(store, table.get(*r).unwrap()).0).collect();
        let expected: BTreeSet<u32> = state.acct.iter().filter(|(_, (grp, _))| *grp == g).map(|(id, _)| *id).collect();
        prop_assert_eq!(ids, expected, "group {}", g);
        indexed += found.len();
    }
    prop_assert_eq!(indexed, state.acct.len(), "no stale entries in the multi index");
    let bag: BTreeSet<(u8, u8)> = store.table(BAG).unwrap().iter().map(|(_, r)| (r[0], r[1])).collect();
    prop_assert_eq!(&bag, &state.bag);
    prop_assert_eq!(store.table(BAG).unwrap().len(), state.bag.len(), "set semantics: no duplicate rows");
    Ok(())
}

/// The delta of a commit is the difference between the states before and after it (an insert
/// and a delete of identical bytes count as no change).
fn check_delta(store: &Store, delta: &TxDelta, before: &State, after: &State) -> Result<(), TestCaseError> {
    let mut inserted: BTreeMap<Vec<u8>, i32> = BTreeMap::new();
    for t in &delta.tables {
        prop_assert!(t.table_id == ACCT || t.table_id == BAG);
        for r in &t.inserts {
            *inserted.entry([&[t.table_id as u8][..], r].concat()).or_default() += 1;
        }
        for r in &t.deletes {
            *inserted.entry([&[t.table_id as u8][..], r].concat()).or_default() -= 1;
        }
    }
    inserted.retain(|_, n| *n != 0);
    let rows = |s: &State| -> BTreeSet<Vec<u8>> {
        let acct = s.acct.iter().map(|(id, (g, n))| [&[ACCT as u8][..], &acct_bytes(&(*id, *g, n.clone()))].concat());
        let bag = s.bag.iter().map(|(a, b)| vec![BAG as u8, *a, *b]);
        acct.chain(bag).collect()
    };
    let (b, a) = (rows(before), rows(after));
    let expected: BTreeMap<Vec<u8>, i32> =
        a.difference(&b).map(|r| (r.clone(), 1)).chain(b.difference(&a).map(|r| (r.clone(), -1))).collect();
    prop_assert_eq!(inserted, expected);
    let _ = store;
    Ok(())
}

fn apply(store: &mut Store, model: &mut Model, op: &Op) -> Result<(), TestCaseError> {
    let outside = !model.in_tx;
    match op {
        Op::Begin => {
            store.begin();
            // `begin` rolls back an open transaction first.
            model.current = model.committed.clone();
            model.in_tx = true;
        }
        Op::Commit => {
            let result = store.commit();
            if outside {
                prop_assert_eq!(result.unwrap_err(), StoreError::NotInTransaction);
            } else {
                let delta = result.unwrap();
                check_delta(store, &delta, &model.committed, &model.current)?;
                model.committed = model.current.clone();
                model.in_tx = false;
            }
        }
        Op::Rollback => {
            store.rollback();
            model.current = model.committed.clone();
            model.in_tx = false;
        }
        Op::Insert(row) => {
            let result = store.insert(ACCT, &mut acct_bytes(row));
            let (id, grp, note) = row.clone();
            match (outside, model.current.acct.get(&id)) {
                (true, _) => prop_assert_eq!(result.unwrap_err(), StoreError::NotInTransaction),
                (false, Some(existing)) if *existing == (grp, note.clone()) => prop_assert!(result.is_ok()),
                (false, Some(_)) => {
                    prop_assert!(matches!(result, Err(StoreError::UniqueViolation { .. })), "{:?}", result)
                }
                (false, None) => {
                    prop_assert!(result.is_ok(), "{:?}", result);
                    model.current.acct.insert(id, (grp, note));
                }
            }
        }
        Op::Update(row) => {
            let index = index_id(store, "acct_id_idx_btree");
            let result = store.update(ACCT, index, &mut acct_bytes(row));
            let (id, grp, note) = row.clone();
            match (outside, model.current.acct.contains_key(&id)) {
                (true, _) => prop_assert_eq!(result.unwrap_err(), StoreError::NotInTransaction),
                (false, false) => prop_assert_eq!(result.unwrap_err(), StoreError::NoSuchRow),
                (false, true) => {
                    prop_assert!(result.is_ok(), "{:?}", result);
                    model.current.acct.insert(id, (grp, note));
                }
            }
        }
        Op::DeleteId(id) => {
            let (_, by_id) = store.index(index_id(store, "acct_id_idx_btree")).unwrap();
            let rows: Vec<_> = by_id.get_unique(&AlgebraicValue::U32(*id)).into_iter().collect();
            let result = store.delete_rows(ACCT, &rows);
            if outside {
                prop_assert_eq!(result.unwrap_err(), StoreError::NotInTransaction);
            } else {
                let existed = model.current.acct.remove(id).is_some();
                prop_assert_eq!(result.unwrap(), existed as u32);
            }
        }
        Op::DeleteGroup(g) => {
            let index = index_id(store, "acct_grp_idx_btree");
            let result = store.delete_by_index_scan(index, &[], 0, &included_u8(*g), &included_u8(*g));
            if outside {
                prop_assert_eq!(result.unwrap_err(), StoreError::NotInTransaction);
            } else {
                let before = model.current.acct.len();
                model.current.acct.retain(|_, (grp, _)| grp != g);
                prop_assert_eq!(result.unwrap() as usize, before - model.current.acct.len());
            }
        }
        Op::BagInsert(a, b) => {
            let result = store.insert(BAG, &mut [*a, *b]);
            if outside {
                prop_assert_eq!(result.unwrap_err(), StoreError::NotInTransaction);
            } else {
                prop_assert!(result.is_ok());
                model.current.bag.insert((*a, *b));
            }
        }
        Op::BagDelete(a, b) => {
            // A relation of one row: a u32 count, then the row.
            let relation = [1, 0, 0, 0, *a, *b];
            let result = store.delete_by_rel(BAG, &relation);
            if outside {
                prop_assert_eq!(result.unwrap_err(), StoreError::NotInTransaction);
            } else {
                let existed = model.current.bag.remove(&(*a, *b));
                prop_assert_eq!(result.unwrap(), existed as u32);
            }
        }
    }
    prop_assert_eq!(store.in_tx(), model.in_tx);
    check(store, if model.in_tx { &model.current } else { &model.committed })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn the_store_agrees_with_a_plain_model(ops in proptest::collection::vec(op(), 1..80)) {
        let mut store = Store::new(&def());
        let mut model = Model { committed: State::default(), current: State::default(), in_tx: false };
        for op in &ops {
            apply(&mut store, &mut model, op)?;
        }
    }
}
