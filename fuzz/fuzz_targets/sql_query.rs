//! The `/sql` route's parser, planner and executor over a small store: any text (within the
//! route's length cap) is answered or refused with an error, never a panic or a stack overflow,
//! for a non-owner (SELECT only, private tables hidden) and for the owner (DML too, in a
//! transaction that commits whole or not at all).
//!
//! Input: byte 0's low bit picks the caller (even: a stranger, odd: the owner); the rest is the
//! query text.
#![no_main]

use epoch_query::limits::MAX_SQL_LEN;
use epoch_query::QueryContext;
use epoch_sats::{AlgebraicType, ProductType, Typespace};
use epoch_schema::{ModuleDef, TableAccess, TableDef};
use epoch_store::Store;
use libfuzzer_sys::fuzz_target;

/// `account(id: u32 primary key, owner: string, balance: i64)` public and `ledger(n: u64, memo:
/// string)` private.
fn def() -> ModuleDef {
    let account = ProductType::new([
        ("id", AlgebraicType::U32),
        ("owner", AlgebraicType::String),
        ("balance", AlgebraicType::I64),
    ]);
    let ledger = ProductType::new([("n", AlgebraicType::U64), ("memo", AlgebraicType::String)]);
    let table = |name: &str, i: u32, row_type: ProductType, access: TableAccess, keyed: bool| {
        let table = TableDef { table_access: access, ..TableDef::plain(name, i, row_type) };
        if keyed {
            table.with_unique_key(0)
        } else {
            table
        }
    };
    ModuleDef {
        typespace: Typespace {
            types: vec![AlgebraicType::Product(account.clone()), AlgebraicType::Product(ledger.clone())],
        },
        tables: vec![
            table("account", 0, account, TableAccess::Public, true),
            table("ledger", 1, ledger, TableAccess::Private, false),
        ],
        reducers: Vec::new(),
        types: Vec::new(),
        row_level_security: Vec::new(),
        ..Default::default()
    }
}

fn store() -> Store {
    let mut store = Store::new(&def());
    store.begin();
    for (id, owner, balance) in [(1u32, "ann", 10i64), (2, "bo", -5), (3, "", 0)] {
        let mut row = id.to_le_bytes().to_vec();
        row.extend_from_slice(&(owner.len() as u32).to_le_bytes());
        row.extend_from_slice(owner.as_bytes());
        row.extend_from_slice(&balance.to_le_bytes());
        store.insert(0, &mut row).expect("a valid row");
    }
    store.commit().expect("commits");
    store
}

fuzz_target!(|data: &[u8]| {
    let Some((&who, text)) = data.split_first() else { return };
    let Ok(sql) = std::str::from_utf8(text) else { return };
    let ctx = QueryContext { is_owner: who % 2 == 1, row_limit: 1_000, max_sql_len: MAX_SQL_LEN, sender: None };
    let mut store = store();
    let _ = epoch_query::execute(&store, sql, ctx);
    let _ = epoch_query::run(&mut store, sql, ctx);
    // Whatever ran, the store is whole: every row still reads back through a full scan.
    let _ = epoch_query::execute(&store, "SELECT COUNT(*) AS n FROM account", ctx).expect("the store still answers");
});
