//! Table numbering across module updates: `Store::with_order` keeps every listed table's id,
//! puts new tables after them, and refuses a gap before a kept table.

use epoch_sats::{AlgebraicType, ProductType, Typespace};
use epoch_schema::{ModuleDef, TableDef};
use epoch_store::Store;

fn def(names: &[&str]) -> ModuleDef {
    let row = ProductType::new([("n", AlgebraicType::U8)]);
    ModuleDef {
        typespace: Typespace { types: vec![AlgebraicType::Product(row.clone())] },
        tables: names.iter().map(|n| TableDef::plain(*n, 0, row.clone())).collect(),
        reducers: Vec::new(),
        types: Vec::new(),
        row_level_security: Vec::new(),
        ..Default::default()
    }
}

#[test]
fn listed_tables_keep_their_ids_and_new_ones_follow() {
    // The module sorts its tables by name; the update added `a_new`, which sorts first.
    let store = Store::with_order(&def(&["a_new", "ledger", "zeta"]), &["ledger".into(), "zeta".into()]).unwrap();
    assert_eq!(store.table_order(), ["ledger", "zeta", "a_new"]);
    assert_eq!(store.table_id("ledger"), Some(0));
    assert_eq!(store.table_id("a_new"), Some(2));
    // The old module, with the numbering an unfinished update left: the unknown name is last.
    let store =
        Store::with_order(&def(&["ledger", "zeta"]), &["ledger".into(), "zeta".into(), "a_new".into()]).unwrap();
    assert_eq!(store.table_order(), ["ledger", "zeta"]);
    // A gap before a kept table would move it: refused.
    let err = Store::with_order(&def(&["ledger"]), &["gone".into(), "ledger".into()]).unwrap_err();
    assert!(err.contains("`gone`"), "{err}");
    // No list: the module's order.
    assert_eq!(Store::new(&def(&["b", "a"])).table_order(), ["b", "a"]);
}

/// A removed table keeps its place: the tables after it keep their ids, no name reaches it, the
/// order written to disk still lists it, and rows the log replays into it are dropped.
#[test]
fn a_removed_table_keeps_its_id_out_of_reach() {
    let removed = format!("{}account", epoch_store::REMOVED_TABLE_PREFIX);
    let mut store = Store::with_order(&def(&["ledger"]), &[removed.clone(), "ledger".into()]).unwrap();
    assert_eq!(store.table_id("ledger"), Some(1));
    assert_eq!(store.table_id("account"), None);
    assert_eq!(store.table_id(&removed), None, "not even by its marked name");
    assert_eq!(store.table_order(), [removed.as_str(), "ledger"]);
    let present: Vec<&str> = store.present_tables().map(|t| t.schema.name()).collect();
    assert_eq!(present, ["ledger"]);
    store.apply_recovered(0, [&[1u8, 2, 3][..]], &[]).unwrap();
    assert!(store.table(0).unwrap().is_empty(), "a removed table takes no row");
}
