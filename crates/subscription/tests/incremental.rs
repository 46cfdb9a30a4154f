//! Randomized: clients hold random subscriptions while random transactions commit (and roll
//! back); after every commit, each client's copy of each query, kept only from the initial rows
//! and the incremental updates, equals the query run afresh on the database.

use std::collections::BTreeMap;
use std::sync::Arc;

use epoch_query::{Filter, QueryContext, SqlError};
use epoch_sats::{bsatn, AlgebraicType, AlgebraicValue, ProductType, Typespace};
use epoch_schema::{ModuleDef, TableAccess, TableDef};
use epoch_store::Store;
use epoch_subscription::{EvalBudget, Manager, SubscribeError};
use proptest::prelude::*;

const QUERIES: [&str; 8] = [
    "SELECT * FROM acct",
    "SELECT * FROM acct WHERE grp = 1",
    "SELECT * FROM acct WHERE grp = 0 OR id > 5",
    "SELECT * FROM acct WHERE id = 3",
    "SELECT acct.* FROM acct WHERE grp <> 2 AND id < 6",
    // Joins (self-joins, so one transaction changes both sides): rows once per partner.
    "SELECT a.* FROM acct a JOIN acct b ON a.grp = b.grp WHERE b.id = 3",
    "SELECT a.* FROM acct a JOIN acct b ON a.grp = b.grp WHERE a.id > b.id",
    "SELECT b.* FROM acct a JOIN acct b ON a.grp = b.grp WHERE a.id < 4 AND b.id > 2",
];

fn store() -> Store {
    let acct = ProductType::new([("id", AlgebraicType::U32), ("grp", AlgebraicType::U8)]);
    let secret = ProductType::new([("n", AlgebraicType::U8)]);
    Store::new(&ModuleDef {
        typespace: Typespace {
            types: vec![AlgebraicType::Product(acct.clone()), AlgebraicType::Product(secret.clone())],
        },
        tables: vec![
            TableDef::plain("acct", 0, acct).with_unique_key(0).with_btree_index(&[1]),
            TableDef { table_access: TableAccess::Private, ..TableDef::plain("secret", 1, secret) },
        ],
        reducers: Vec::new(),
        types: Vec::new(),
        row_level_security: Vec::new(),
        ..Default::default()
    })
}

fn row(id: u32, grp: u8) -> Vec<u8> {
    bsatn::to_vec(&AlgebraicValue::product([AlgebraicValue::U32(id), AlgebraicValue::U8(grp)]))
}

#[derive(Debug, Clone)]
enum Step {
    Subscribe {
        client: u64,
        query: usize,
    },
    Unsubscribe {
        client: u64,
        query: usize,
    },
    Disconnect(u64),
    /// One transaction of row changes, committed or rolled back.
    Tx {
        changes: Vec<Change>,
        commit: bool,
    },
}

#[derive(Debug, Clone)]
enum Change {
    Insert(u32, u8),
    Update(u32, u8),
    Delete(u32),
}

fn change() -> impl Strategy<Value = Change> {
    prop_oneof![
        (0u32..10, 0u8..3).prop_map(|(i, g)| Change::Insert(i, g)),
        (0u32..10, 0u8..3).prop_map(|(i, g)| Change::Update(i, g)),
        (0u32..10).prop_map(Change::Delete),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        2 => (0u64..4, 0..QUERIES.len()).prop_map(|(client, query)| Step::Subscribe { client, query }),
        1 => (0u64..4, 0..QUERIES.len()).prop_map(|(client, query)| Step::Unsubscribe { client, query }),
        1 => (0u64..4).prop_map(Step::Disconnect),
        4 => (proptest::collection::vec(change(), 1..6), proptest::bool::weighted(0.85))
            .prop_map(|(changes, commit)| Step::Tx { changes, commit }),
    ]
}

/// A client's copy of one query's rows: BSATN row → how many times it is held.
type Copy = BTreeMap<Vec<u8>, usize>;

fn fresh(store: &Store, query: &str) -> Copy {
    let filter = Filter::compile(store, query, QueryContext::default()).unwrap();
    count(filter.initial_rows(store).unwrap())
}

/// Rows with how many times each comes.
fn count(rows: Vec<&[u8]>) -> Copy {
    let mut out = Copy::new();
    for r in rows {
        *out.entry(r.to_vec()).or_default() += 1;
    }
    out
}

fn apply_change(store: &mut Store, c: &Change) {
    let by_id = store.index_id("acct_id_idx_btree").unwrap();
    match c {
        Change::Insert(id, grp) => {
            let _ = store.insert(0, &mut row(*id, *grp));
        }
        Change::Update(id, grp) => {
            let _ = store.update(0, by_id, &mut row(*id, *grp));
        }
        Change::Delete(id) => {
            let (_, index) = store.index(by_id).unwrap();
            let rows: Vec<_> = index.get_unique(&AlgebraicValue::U32(*id)).into_iter().collect();
            store.delete_rows(0, &rows).unwrap();
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn incremental_updates_keep_every_client_equal_to_a_fresh_query(steps in proptest::collection::vec(step(), 1..60)) {
        let mut store = store();
        let mut manager = Manager::default();
        let mut copies: BTreeMap<(u64, usize), Copy> = BTreeMap::new();
        // How many subscriptions of each client hold each query (one copy, sent once).
        let mut refs: BTreeMap<(u64, usize), usize> = BTreeMap::new();
        for step in &steps {
            match step {
                Step::Subscribe { client, query } => {
                    let (_, rows) = manager.subscribe(&store, *client, QUERIES[*query], QueryContext::default(), &mut EvalBudget::unlimited()).unwrap();
                    let initial = count(rows);
                    if let Some(held) = copies.get(&(*client, *query)) {
                        prop_assert_eq!(held, &initial, "a second subscription sees the same rows");
                    }
                    copies.insert((*client, *query), initial);
                    *refs.entry((*client, *query)).or_default() += 1;
                }
                Step::Unsubscribe { client, query } => {
                    let had = manager.unsubscribe(*client, QUERIES[*query], QueryContext::default());
                    let key = (*client, *query);
                    prop_assert_eq!(had, refs.contains_key(&key));
                    if let Some(n) = refs.get_mut(&key) {
                        *n -= 1;
                        if *n == 0 {
                            refs.remove(&key);
                            copies.remove(&key);
                        }
                    }
                    prop_assert_eq!(manager.holds(*client, QUERIES[*query], QueryContext::default()), refs.contains_key(&key));
                }
                Step::Disconnect(client) => {
                    manager.disconnect(*client);
                    copies.retain(|(c, _), _| c != client);
                    refs.retain(|(c, _), _| c != client);
                }
                Step::Tx { changes, commit } => {
                    store.begin();
                    for c in changes {
                        apply_change(&mut store, c);
                    }
                    if !commit {
                        store.rollback();
                        continue;
                    }
                    let delta = store.commit().unwrap();
                    for (client, updates) in manager.evaluate(&store, &delta).unwrap() {
                        for update in updates {
                            let query = QUERIES.iter().position(|q| **q == *update.query).unwrap();
                            let copy = copies.get_mut(&(client, query)).expect("updates only for held queries");
                            for r in &update.deletes {
                                let n = copy.get_mut(&r[..]).expect("a deleted row was held");
                                *n -= 1;
                                if *n == 0 {
                                    copy.remove(&r[..]);
                                }
                            }
                            for r in &update.inserts {
                                *copy.entry(r.to_vec()).or_default() += 1;
                            }
                        }
                    }
                }
            }
            for ((client, query), copy) in &copies {
                prop_assert_eq!(copy, &fresh(&store, QUERIES[*query]), "client {} query {}", client, QUERIES[*query]);
            }
            let held: std::collections::BTreeSet<usize> = copies.keys().map(|(_, q)| *q).collect();
            prop_assert_eq!(manager.query_count(), held.len(), "one compiled query per distinct text");
        }
    }
}

#[test]
fn identical_queries_share_one_update_and_private_tables_stay_private() {
    let mut store = store();
    let mut manager = Manager::default();
    let q = "SELECT * FROM acct WHERE grp = 1";
    manager.subscribe(&store, 1, q, QueryContext::default(), &mut EvalBudget::unlimited()).unwrap();
    manager.subscribe(&store, 2, q, QueryContext::default(), &mut EvalBudget::unlimited()).unwrap();
    assert_eq!(manager.query_count(), 1);
    store.begin();
    store.insert(0, &mut row(7, 1)).unwrap();
    store.insert(0, &mut row(8, 2)).unwrap();
    let delta = store.commit().unwrap();
    let updates = manager.evaluate(&store, &delta).unwrap();
    assert!(Arc::ptr_eq(&updates[&1][0], &updates[&2][0]), "evaluated and built once");
    assert_eq!(updates[&1][0].inserts, vec![row(7, 1).into_boxed_slice()]);

    let private =
        manager.subscribe(&store, 3, "SELECT * FROM secret", QueryContext::default(), &mut EvalBudget::unlimited());
    assert_eq!(private.unwrap_err(), SubscribeError::Sql(SqlError::UnknownTable("secret".into())));
    let owner = QueryContext { is_owner: true, ..QueryContext::default() };
    assert!(manager.subscribe(&store, 4, "SELECT * FROM secret", owner, &mut EvalBudget::unlimited()).is_ok());
    let refused =
        manager.subscribe(&store, 1, "SELECT id FROM acct", QueryContext::default(), &mut EvalBudget::unlimited());
    assert!(matches!(refused, Err(SubscribeError::Sql(SqlError::SubscriptionProjection))), "{refused:?}");

    // Joins 1.3 refuses, with its words.
    let refusals = [
        ("SELECT a.* FROM secret a JOIN secret b ON a.n = b.n", "Subscriptions require indexes on join columns"),
        ("SELECT * FROM acct a JOIN acct b ON a.grp = b.grp", "SELECT * is not supported for joins"),
        ("SELECT a.* FROM acct a JOIN acct b ON id = grp", "Names must be qualified when using joins"),
        ("SELECT a.* FROM acct a JOIN acct b ON a.grp > b.grp", "Non-inner joins are not supported"),
        ("SELECT a.* FROM acct a, acct b", "Implicit joins are not supported"),
    ];
    for (q, want) in refusals {
        let e = manager.subscribe(&store, 5, q, owner, &mut EvalBudget::unlimited()).unwrap_err();
        assert_eq!(e.to_string(), want, "{q}");
    }
}

#[test]
fn an_initial_evaluation_stops_when_its_budget_runs_out() {
    // 20,000 rows in 3 groups: the self-join on the group has about 133 million pairs.
    let mut store = store();
    store.begin();
    for id in 0..20_000u32 {
        store.insert(0, &mut row(id, (id % 3) as u8)).unwrap();
    }
    store.commit().unwrap();
    let mut manager = Manager::default();
    let q = "SELECT a.* FROM acct a JOIN acct b ON a.grp = b.grp";
    let started = std::time::Instant::now();
    let mut budget = EvalBudget::new(1_000_000, usize::MAX, std::time::Duration::MAX);
    let err = manager.subscribe(&store, 1, q, QueryContext::default(), &mut budget).unwrap_err();
    assert_eq!(err, SubscribeError::Sql(SqlError::TooMuchWork(1_000_000)));
    eprintln!("stopped after {:?}", started.elapsed());
    assert_eq!(manager.query_count(), 0, "a refused query is not kept");
    // The rows a request may receive are bounded as they are found, not afterwards.
    let mut budget = EvalBudget::new(u64::MAX, 1_000, std::time::Duration::MAX);
    let err = manager.subscribe(&store, 1, q, QueryContext::default(), &mut budget).unwrap_err();
    assert_eq!(err, SubscribeError::Sql(SqlError::TooManyInitialRows(1_000)));
    // And the time: a zero limit stops at the first look at the clock.
    let mut budget = EvalBudget::new(u64::MAX, usize::MAX, std::time::Duration::ZERO);
    std::thread::sleep(std::time::Duration::from_millis(1));
    let err = manager.subscribe(&store, 1, q, QueryContext::default(), &mut budget).unwrap_err();
    assert_eq!(err, SubscribeError::Sql(SqlError::TooSlow(0)));
}
