//! Model-based: a `SELECT` whose condition bounds an indexed column (answered from the index)
//! gives the same rows, in the same order, as filtering every row of a plain model, for random
//! tables and conditions (equalities, ranges, conjunctions across columns, disjunctions).

use epoch_query::{execute, QueryContext};
use epoch_sats::{AlgebraicType, AlgebraicValue, ProductType, Typespace};
use epoch_schema::{ModuleDef, TableDef};
use epoch_store::Store;
use proptest::prelude::*;

/// `t(id: u32, v: u32, w: u32)` with a unique index on `id`, an index on `v`, none on `w`.
fn store(rows: &[(u32, u32, u32)]) -> Store {
    let row_type = ProductType::new([("id", AlgebraicType::U32), ("v", AlgebraicType::U32), ("w", AlgebraicType::U32)]);
    let mut table = TableDef::plain("t", 0, row_type.clone()).with_btree_index(&[0]).with_btree_index(&[1]);
    table.constraints.push(epoch_schema::ConstraintDef { name: "t_id_key".into(), unique_columns: vec![0] });
    table.primary_key = Some(0);
    let def = ModuleDef {
        typespace: Typespace { types: vec![AlgebraicType::Product(row_type)] },
        tables: vec![table],
        reducers: Vec::new(),
        types: Vec::new(),
        row_level_security: Vec::new(),
        ..Default::default()
    };
    let mut store = Store::new(&def);
    store.begin();
    for (id, v, w) in rows {
        let mut bytes = [id.to_le_bytes(), v.to_le_bytes(), w.to_le_bytes()].concat();
        store.insert(0, &mut bytes).unwrap();
    }
    store.commit().unwrap();
    store
}

/// A condition as SQL and as a predicate on (id, v, w).
#[derive(Debug, Clone)]
enum C {
    Cmp(usize, &'static str, u32),
    And(Box<C>, Box<C>),
    Or(Box<C>, Box<C>),
}

impl C {
    fn sql(&self) -> String {
        match self {
            C::Cmp(col, op, n) => format!("{} {op} {n}", ["id", "v", "w"][*col]),
            C::And(a, b) => format!("({} AND {})", a.sql(), b.sql()),
            C::Or(a, b) => format!("({} OR {})", a.sql(), b.sql()),
        }
    }

    fn holds(&self, row: [u32; 3]) -> bool {
        match self {
            C::Cmp(col, op, n) => {
                let x = row[*col];
                match *op {
                    "=" => x == *n,
                    "!=" => x != *n,
                    "<" => x < *n,
                    "<=" => x <= *n,
                    ">" => x > *n,
                    _ => x >= *n,
                }
            }
            C::And(a, b) => a.holds(row) && b.holds(row),
            C::Or(a, b) => a.holds(row) || b.holds(row),
        }
    }
}

fn cond() -> impl Strategy<Value = C> {
    let leaf = (0usize..3, prop::sample::select(vec!["=", "!=", "<", "<=", ">", ">="]), 0u32..40)
        .prop_map(|(c, op, n)| C::Cmp(c, op, n));
    leaf.prop_recursive(3, 8, 2, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(a, b)| C::And(Box::new(a), Box::new(b))),
            (inner.clone(), inner).prop_map(|(a, b)| C::Or(Box::new(a), Box::new(b))),
        ]
    })
}

proptest! {
    #[test]
    fn index_answers_equal_a_full_filter(
        ids in prop::collection::btree_set(0u32..40, 0..30),
        vs in prop::collection::vec(0u32..10, 30),
        ws in prop::collection::vec(0u32..10, 30),
        c in cond(),
        limit in prop::option::of(0usize..5),
    ) {
        // Ids inserted out of order, so row-id order is not key order.
        let mut ids: Vec<u32> = ids.into_iter().collect();
        ids.reverse();
        let rows: Vec<(u32, u32, u32)> = ids.iter().enumerate().map(|(i, id)| (*id, vs[i], ws[i])).collect();
        let store = store(&rows);
        let limit_sql = limit.map(|l| format!(" LIMIT {l}")).unwrap_or_default();
        let sql = format!("SELECT * FROM t WHERE {}{limit_sql}", c.sql());
        let got = execute(&store, &sql, QueryContext::default()).unwrap();
        let mut want: Vec<AlgebraicValue> = rows
            .iter()
            .filter(|(id, v, w)| c.holds([*id, *v, *w]))
            .map(|(id, v, w)| AlgebraicValue::product([AlgebraicValue::U32(*id), AlgebraicValue::U32(*v), AlgebraicValue::U32(*w)]))
            .collect();
        if let Some(l) = limit {
            want.truncate(l);
        }
        prop_assert_eq!(got.rows, want, "{}", sql);
        let count = execute(&store, &format!("SELECT COUNT(*) AS n FROM t WHERE {}", c.sql()), QueryContext::default()).unwrap();
        let expected = rows.iter().filter(|(id, v, w)| c.holds([*id, *v, *w])).count() as u64;
        prop_assert_eq!(&count.rows, &vec![AlgebraicValue::product([AlgebraicValue::U64(expected)])], "{}", sql);
    }
}
