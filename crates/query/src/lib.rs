//! # epoch-query
//!
//! The SQL that SpacetimeDB 1.3's `/sql` route answers, over an [`epoch_store::Store`]:
//! `SELECT *`, `SELECT t.*`, column lists with `AS`, `COUNT(*) AS alias`, `WHERE` with
//! `= <> != < > <= >=`, `AND`, `OR` and parentheses over columns and literals (integers, floats,
//! strings, booleans, hex), and `LIMIT n`. Private tables are invisible to callers who may not
//! see them, exactly like tables that do not exist. Error texts follow 1.3's.
//!
//! One module per job: `parse` (shape checks on the tokens, then one statement), `plan`
//! (names, conditions, literals, projection), `execute` (a `SELECT` over the store) and
//! `dml` (owners' `INSERT`, `UPDATE`, `DELETE`). The route's JSON is written by `epoch-api`.
//!
//! [`Filter`] compiles a subscription's `SELECT * FROM t WHERE …` once and then judges single
//! rows, for evaluating a transaction's delta.
//!
//! Not for: joins in `/sql` (subscriptions take 1.3's two-table joins, through [`Filter`]).

mod budget;
mod dml;
mod execute;
mod filter;
pub mod limits;
mod parse;
mod plan;
mod rls;

pub use budget::EvalBudget;
pub use filter::{all_tables_queries, is_all_tables, Filter};
pub use rls::check_filters;

use epoch_sats::{AlgebraicValue, ProductType};
use epoch_store::Store;
use sqlparser::ast::Statement;

use crate::execute::{select, store_err};
use crate::limits::{DEFAULT_MAX_SQL_ROWS, MAX_SQL_LEN};
use crate::parse::parse_one;

/// Why a query was refused. The texts are what 1.3 answers (HTTP 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SqlError {
    #[error("Empty SQL query")]
    Empty,
    #[error("{0}")]
    Parse(String),
    #[error("Multiple SQL statements are not supported")]
    MultipleStatements,
    #[error("`{0}` is not a valid table")]
    UnknownTable(String),
    #[error("`{0}` is not in scope")]
    UnknownColumn(String),
    #[error("Only owners are authorized to run SQL DML statements")]
    DmlNotOwner,
    #[error("Unsupported: {0}")]
    Unsupported(String),
    #[error("Cannot compare `{column}` of type {ty} with {literal}")]
    TypeMismatch { column: String, ty: String, literal: String },
    #[error("The query returns more than {0} rows; add a WHERE clause or a LIMIT")]
    TooManyRows(usize),
    #[error("The query is longer than {0} bytes")]
    TooLong(usize),
    #[error("The query has more than {0} operators; split it into smaller queries")]
    TooComplex(usize),
    #[error("The query nests parentheses more than {0} deep")]
    TooDeep(usize),
    #[error("LIMIT {0} is out of range (at most {max})", max = u64::MAX)]
    LimitOutOfRange(String),
    #[error("Column projections are not supported in subscriptions; Subscriptions must return a table type")]
    SubscriptionProjection,
    /// A join that subscriptions do not support, in 1.3's words.
    #[error("{0}")]
    Join(&'static str),
    /// An initial evaluation passed [`MAX_INITIAL_ROWS_VISITED`](limits::MAX_INITIAL_ROWS_VISITED) (or the request's own bound).
    #[error(
        "The subscription visits more than {0} rows to compute its initial rows; add an index or narrow the query"
    )]
    TooMuchWork(u64),
    /// An initial evaluation ran past [`INITIAL_EVALUATION_TIME_LIMIT`](limits::INITIAL_EVALUATION_TIME_LIMIT).
    #[error("The subscription took more than {0} ms to compute its initial rows; add an index or narrow the query")]
    TooSlow(u64),
    #[error("The subscription's initial rows exceed {0}, the most one request may receive; narrow the query")]
    TooManyInitialRows(usize),
}

/// Who runs a query, and the limits it runs under.
#[derive(Debug, Clone, Copy)]
pub struct QueryContext {
    /// Whether the caller owns the database (and so sees private tables and may run DML).
    pub is_owner: bool,
    /// The most rows one query may return.
    pub row_limit: usize,
    /// The longest query text accepted, in bytes.
    pub max_sql_len: usize,
    /// Who asks: `:sender` in row-level security filters stands for it.
    pub sender: Option<epoch_sats::Identity>,
}

impl Default for QueryContext {
    fn default() -> Self {
        Self { is_owner: false, row_limit: DEFAULT_MAX_SQL_ROWS, max_sql_len: MAX_SQL_LEN, sender: None }
    }
}

/// A query's answer: the result columns and the rows, each a product of those columns.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryResult {
    pub schema: ProductType,
    pub rows: Vec<AlgebraicValue>,
}

/// What a statement did.
#[derive(Debug)]
pub enum Outcome {
    /// A `SELECT`'s rows.
    Rows(QueryResult),
    /// A DML statement's counts and the changes it committed.
    Dml { stats: DmlStats, delta: epoch_store::TxDelta },
    /// `SET name = value` (owners only): the caller keeps the variable (1.3's `st_var`).
    SetVar { name: String, value: u64 },
}

/// Rows a DML statement changed, as the `/sql` route reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DmlStats {
    pub rows_inserted: u64,
    pub rows_deleted: u64,
    pub rows_updated: u64,
}

/// Runs one statement: a `SELECT`, or (owners only) `INSERT`, `UPDATE` or `DELETE` in a
/// transaction of its own that either commits whole or changes nothing.
pub fn run(store: &mut Store, sql: &str, ctx: QueryContext) -> Result<Outcome, SqlError> {
    run_with_catalog(store, |_| None, sql, ctx)
}

/// The system tables `/sql` may read: 1.3's ten, then those 2.x added (a catalog answers only
/// those of its database's version; the others are unknown tables).
pub const SYSTEM_TABLES: [&str; 20] = [
    "st_table",
    "st_column",
    "st_sequence",
    "st_index",
    "st_constraint",
    "st_module",
    "st_client",
    "st_var",
    "st_scheduled",
    "st_row_level_security",
    "st_connection_credentials",
    "st_view",
    "st_view_param",
    "st_view_column",
    "st_view_sub",
    "st_view_arg",
    "st_event_table",
    "st_table_accessor",
    "st_index_accessor",
    "st_column_accessor",
];

/// The one `SET`/`SHOW` variable 1.3 has.
pub const ROW_LIMIT_VAR: &str = "row_limit";

/// As [`run`]; a `SELECT` of a system table (`st_table`, …: anyone may read them) or a `SHOW`
/// is answered from the catalog `catalog` builds (a store holding the system tables), and
/// `SET row_limit = N` is handed back to the caller to keep.
pub fn run_with_catalog(
    store: &mut Store,
    catalog: impl FnOnce(&Store) -> Option<Store>,
    sql: &str,
    ctx: QueryContext,
) -> Result<Outcome, SqlError> {
    let statement = parse_one(sql, ctx)?;
    if let Some(table) = system_table_read(store, &statement) {
        let Some(cat) = catalog(store) else { return Err(SqlError::UnknownTable(table)) };
        let Statement::Query(q) = statement else { unreachable!("only queries read tables") };
        // The catalog's tables are public but for 2.x's connection credentials.
        return select(&cat, q, ctx).map(Outcome::Rows);
    }
    match statement {
        Statement::ShowVariable { variable } => {
            let name = variable.iter().map(|v| v.value.clone()).collect::<Vec<_>>().join(".");
            if name != ROW_LIMIT_VAR {
                return Err(SqlError::Unsupported(format!("SHOW {name}")));
            }
            let cat = catalog(store).ok_or_else(|| SqlError::Unsupported("SHOW".into()))?;
            let q = format!("SELECT value FROM st_var WHERE name = '{ROW_LIMIT_VAR}'");
            let Statement::Query(q) = parse_one(&q, ctx)? else { unreachable!("a SELECT") };
            select(&cat, q, QueryContext { is_owner: true, ..ctx }).map(Outcome::Rows)
        }
        Statement::Set(sqlparser::ast::Set::SingleAssignment { variable, values, .. }) => {
            if !ctx.is_owner {
                return Err(SqlError::DmlNotOwner);
            }
            let name = plan::unquoted(&variable);
            if name != ROW_LIMIT_VAR {
                return Err(SqlError::Unsupported(format!("SET {name}")));
            }
            match values.as_slice() {
                [e] => match plan::literal(e)? {
                    plan::Literal::Int(n) if n >= 0 => {
                        let value = u64::try_from(n).map_err(|_| SqlError::LimitOutOfRange(n.to_string()))?;
                        Ok(Outcome::SetVar { name, value })
                    }
                    _ => Err(SqlError::Unsupported("row_limit takes a non-negative integer".into())),
                },
                _ => Err(SqlError::Unsupported("SET takes one value".into())),
            }
        }
        Statement::Query(q) => select(store, q, ctx).map(Outcome::Rows),
        s @ (Statement::Insert(_) | Statement::Update { .. } | Statement::Delete(_)) => {
            if !ctx.is_owner {
                return Err(SqlError::DmlNotOwner);
            }
            store.begin();
            match dml::dml(store, s) {
                Ok(stats) => {
                    let delta = store.commit().map_err(store_err)?;
                    Ok(Outcome::Dml { stats, delta })
                }
                Err(e) => {
                    store.rollback();
                    Err(e)
                }
            }
        }
        other => Err(SqlError::Unsupported(format!("{other}"))),
    }
}

/// The system table a statement reads, when it is a `SELECT` of one and the module has no
/// table of that name.
fn system_table_read(store: &Store, statement: &Statement) -> Option<String> {
    let (name, _) = first_table_of(statement)?;
    (SYSTEM_TABLES.contains(&name.as_str()) && store.table_by_name(&name).is_none()).then_some(name)
}

/// The one table a `SELECT` reads (no join), if `sql` is such a statement: a caller that
/// answers some names itself (2.x views) looks here first.
pub fn single_table_read(sql: &str, ctx: QueryContext) -> Option<String> {
    match first_table_of(&parse_one(sql, ctx).ok()?)? {
        (name, false) => Some(name),
        (_, true) => None,
    }
}

/// Whether `sql` reads every row and column of one table and nothing else (`SELECT * FROM t`:
/// no filter, join, order or limit): what a subscription to a 2.x view may ask for.
pub fn selects_whole_table(sql: &str, ctx: QueryContext) -> bool {
    let Ok(Statement::Query(q)) = parse_one(sql, ctx) else { return false };
    let sqlparser::ast::SetExpr::Select(select) = q.body.as_ref() else { return false };
    let star = matches!(select.projection.as_slice(), [sqlparser::ast::SelectItem::Wildcard(_)]);
    let plain = q.order_by.is_none() && q.limit_clause.is_none() && q.fetch.is_none() && q.with.is_none();
    let one_table = select.from.len() == 1 && select.from[0].joins.is_empty();
    star && plain && one_table && select.selection.is_none() && select.distinct.is_none()
}

/// The first table a `SELECT` reads, and whether it joins others.
fn first_table_of(statement: &Statement) -> Option<(String, bool)> {
    let Statement::Query(q) = statement else { return None };
    let sqlparser::ast::SetExpr::Select(select) = q.body.as_ref() else { return None };
    let [from] = select.from.as_slice() else { return None };
    let sqlparser::ast::TableFactor::Table { name, .. } = &from.relation else { return None };
    Some((plan::unquoted(name), !from.joins.is_empty()))
}

/// Parses and runs one `SELECT` against `store`.
pub fn execute(store: &Store, sql: &str, ctx: QueryContext) -> Result<QueryResult, SqlError> {
    match parse_one(sql, ctx)? {
        Statement::Query(q) => select(store, q, ctx),
        Statement::Insert(_) | Statement::Update { .. } | Statement::Delete(_) if !ctx.is_owner => {
            Err(SqlError::DmlNotOwner)
        }
        other => Err(SqlError::Unsupported(format!("{other}"))),
    }
}

/// Runs one `SELECT` (nothing else) and names the table it reads, as a one-off query over
/// the WebSocket reports it.
pub fn select_only(store: &Store, sql: &str, ctx: QueryContext) -> Result<(String, QueryResult), SqlError> {
    let Statement::Query(q) = parse_one(sql, ctx)? else {
        return Err(SqlError::Unsupported("a one-off query must be a SELECT".into()));
    };
    let plan = execute::plan_select(store, q, ctx)?;
    let name = store.table(plan.table_id).map_err(store_err)?.schema.name().to_string();
    execute::run_select(store, plan, ctx).map(|r| (name, r))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::{MAX_SQL_NESTING, MAX_SQL_OPERATORS, MIN_QUERY_STACK_BYTES};
    use epoch_sats::{AlgebraicType, Typespace};
    use epoch_schema::{ModuleDef, TableDef};

    /// A store with one public table `t(id: u32)` holding ids 0..10.
    fn store() -> Store {
        let row_type = ProductType::new([("id", AlgebraicType::U32)]);
        let def = ModuleDef {
            typespace: Typespace { types: vec![AlgebraicType::Product(row_type.clone())] },
            tables: vec![TableDef::plain("t", 0, row_type)],
            reducers: Vec::new(),
            types: Vec::new(),
            row_level_security: Vec::new(),
            ..Default::default()
        };
        let mut store = Store::new(&def);
        store.begin();
        for id in 0u32..10 {
            store.insert(0, &mut id.to_le_bytes()).unwrap();
        }
        store.commit().unwrap();
        store
    }

    /// A store with `ledger(from: u32, to: u32)`: columns named by SQL keywords.
    fn ledger() -> Store {
        let row_type = ProductType::new([("from", AlgebraicType::U32), ("to", AlgebraicType::U32)]);
        let def = ModuleDef {
            typespace: Typespace { types: vec![AlgebraicType::Product(row_type.clone())] },
            tables: vec![TableDef::plain("ledger", 0, row_type)],
            reducers: Vec::new(),
            types: Vec::new(),
            row_level_security: Vec::new(),
            ..Default::default()
        };
        let mut store = Store::new(&def);
        store.begin();
        for (f, t) in [(1u32, 2u32), (2, 3), (3, 1)] {
            let mut row = f.to_le_bytes().to_vec();
            row.extend_from_slice(&t.to_le_bytes());
            store.insert(0, &mut row).unwrap();
        }
        store.commit().unwrap();
        store
    }

    #[test]
    fn keywords_name_columns_where_1_3_takes_them_and_quotes_name_anything() {
        let store = ledger();
        let rows = |sql: &str| {
            let r = execute(&store, sql, QueryContext::default()).unwrap_or_else(|e| panic!("{sql}: {e}"));
            let names: Vec<String> =
                r.schema.elements.iter().map(|e| e.name.clone().unwrap_or_default().to_string()).collect();
            (names, r.rows.len())
        };
        assert_eq!(rows("SELECT from, to FROM ledger"), (vec!["from".into(), "to".into()], 3));
        assert_eq!(rows("SELECT from FROM ledger"), (vec!["from".into()], 3), "not an empty column list");
        assert_eq!(rows("SELECT to, from FROM ledger WHERE from = 2"), (vec!["to".into(), "from".into()], 1));
        assert_eq!(rows("SELECT from AS f FROM ledger"), (vec!["f".into()], 3));
        assert_eq!(rows("SELECT \"from\" FROM \"ledger\" WHERE \"to\" > 1"), (vec!["from".into()], 2));
        assert_eq!(rows("SELECT \"ledger\".* FROM ledger"), (vec!["from".into(), "to".into()], 3));
        assert_eq!(rows("SELECT l.from FROM ledger l WHERE l.to = 1"), (vec!["from".into()], 1));
        // A FROM that starts the table list is still one.
        assert!(execute(&store, "SELECT FROM ledger", QueryContext::default()).is_err());
    }

    fn or_chain(terms: usize) -> String {
        let mut sql = String::from("SELECT * FROM t WHERE id = 1");
        for _ in 1..terms {
            sql.push_str(" OR id = 1");
        }
        sql
    }

    #[test]
    fn a_long_or_chain_is_refused_before_any_tree_is_built() {
        // The hostile query of issue 10: ~5,000 ORs, about 50 KB, under the length cap.
        let sql = or_chain(5_000);
        assert!(sql.len() < MAX_SQL_LEN);
        let err = execute(&store(), &sql, QueryContext::default()).unwrap_err();
        assert_eq!(err, SqlError::TooComplex(MAX_SQL_OPERATORS));
        // Nested parentheses and NOT chains count too.
        let nested = format!("SELECT * FROM t WHERE {}id = 1{}", "(".repeat(600), ")".repeat(600));
        assert_eq!(
            execute(&store(), &nested, QueryContext::default()).unwrap_err(),
            SqlError::TooDeep(MAX_SQL_NESTING)
        );
    }

    #[test]
    fn a_chain_at_the_limit_still_runs_on_a_small_stack() {
        // Each term has two operators (`=` and `OR`), so this is just under the cap; run on half
        // the stack a query thread gets, to show the limit leaves room even in a debug build.
        let sql = or_chain(MAX_SQL_OPERATORS / 2);
        let rows = std::thread::Builder::new()
            .stack_size(MIN_QUERY_STACK_BYTES / 2)
            .spawn(move || execute(&store(), &sql, QueryContext::default()).map(|r| r.rows.len()))
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(rows, Ok(1));
    }

    #[test]
    fn nesting_that_makes_the_parser_backtrack_is_refused_before_parsing() {
        // Found by the sql_query fuzz target: each repetition nests five more parentheses, and
        // the parser's time about doubles with each level.
        let evil = |n: usize| format!("UPDATE({}x", "UPDATE8(PDATE(I((n(PATE(".repeat(n));
        let mut s = store();
        let owner = QueryContext { is_owner: true, ..QueryContext::default() };
        assert_eq!(run(&mut s, &evil(4), owner).unwrap_err(), SqlError::TooDeep(MAX_SQL_NESTING));
        // Nesting up to the limit still parses (and here fails as a parse error, quickly).
        let ok = format!("SELECT * FROM t WHERE {}id = 1{}", "(".repeat(MAX_SQL_NESTING), ")".repeat(MAX_SQL_NESTING));
        assert_eq!(execute(&s, &ok, QueryContext::default()).unwrap().rows.len(), 1);
        assert!(matches!(run(&mut s, &evil(1), owner), Err(SqlError::Parse(_))));
    }

    #[test]
    fn dml_is_for_owners_and_commits_whole_or_not_at_all() {
        let mut s = store();
        let owner = QueryContext { is_owner: true, ..QueryContext::default() };
        let stranger = QueryContext::default();
        assert_eq!(run(&mut s, "DELETE FROM t WHERE id = 1", stranger).unwrap_err(), SqlError::DmlNotOwner);
        let Outcome::Dml { stats, delta } = run(&mut s, "DELETE FROM t WHERE id < 3", owner).unwrap() else {
            panic!("a DML outcome")
        };
        assert_eq!((stats.rows_deleted, delta.tables[0].deletes.len()), (3, 3));
        let Outcome::Dml { stats, .. } = run(&mut s, "INSERT INTO t (id) VALUES (100), (101)", owner).unwrap() else {
            panic!("a DML outcome")
        };
        assert_eq!(stats.rows_inserted, 2);
        // A statement that fails part-way changes nothing.
        assert!(run(&mut s, "UPDATE t SET nope = 1 WHERE id = 5", owner).is_err());
        assert!(!s.in_tx(), "the failed statement's transaction is closed");
        assert_eq!(
            execute(&s, "SELECT COUNT(*) AS n FROM t", stranger).unwrap().rows,
            vec![AlgebraicValue::product([AlgebraicValue::U64(9)])]
        );
    }

    #[test]
    fn limit_beyond_u64_is_refused_not_wrapped() {
        let s = store();
        let err = execute(&s, "SELECT * FROM t LIMIT 18446744073709551616", QueryContext::default()).unwrap_err();
        assert_eq!(err, SqlError::LimitOutOfRange("18446744073709551616".into()));
        let all = execute(&s, "SELECT * FROM t LIMIT 18446744073709551615", QueryContext::default()).unwrap();
        assert_eq!(all.rows.len(), 10);
        assert_eq!(execute(&s, "SELECT * FROM t LIMIT 3", QueryContext::default()).unwrap().rows.len(), 3);
    }
}
