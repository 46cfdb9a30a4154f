//! # epoch-query
//!
//! The SQL that SpacetimeDB 1.3's `/sql` route answers, over an [`epoch_store::Store`]:
//! `SELECT *`, `SELECT t.*`, column lists with `AS`, `COUNT(*) AS alias`, `WHERE` with
//! `= <> != < > <= >=`, `AND`, `OR` and parentheses over columns and literals (integers, floats,
//! strings, booleans, hex), and `LIMIT n`. Private tables are invisible to callers who may not
//! see them, exactly like tables that do not exist. Error texts follow 1.3's.
//!
//! Not for: joins, DML and subscriptions (later work).

use std::cmp::Ordering;

use epoch_sats::{AlgebraicType, AlgebraicValue, ProductType, ProductTypeElement, F64};
use epoch_schema::TableAccess;
use epoch_store::Store;
use sqlparser::ast::{
    BinaryOperator, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, LimitClause, ObjectNamePart, SelectItem,
    SetExpr, Statement, TableFactor, UnaryOperator, Value,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

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
}

/// The most operators (`AND`, `OR`, `NOT`, comparisons, arithmetic) one query may hold.
///
/// A chain like `a = 1 OR a = 1 OR …` parses into a tree as deep as it is long, and every pass
/// over that tree (planning, evaluation, dropping it) recurses; this bound keeps each pass far
/// inside a thread's stack, whatever a client sends within [`MAX_SQL_LEN`].
pub const MAX_SQL_OPERATORS: usize = 512;

/// The deepest nesting of parentheses one query may have. The SQL parser backtracks through
/// nested parentheses in time that grows exponentially with their depth (a 76-byte query of 21
/// levels took 4 s in a debug build, and each level about doubles it), so the depth is checked
/// on the tokens, before parsing.
pub const MAX_SQL_NESTING: usize = 10;

/// The stack a thread that runs queries must have at the least: a query at
/// [`MAX_SQL_OPERATORS`] fits in half of it even in a debug build (about 1.5 MiB there; far
/// less in release).
pub const MIN_QUERY_STACK_BYTES: usize = 8 << 20;

/// The longest query text accepted, in bytes (the default of [`QueryContext::max_sql_len`]).
pub const MAX_SQL_LEN: usize = 64 * 1024;

/// Counts the operators and the nesting of `sql` from its tokens (no tree is built, so nothing
/// recurses and nothing backtracks) and refuses a query with more than [`MAX_SQL_OPERATORS`] or
/// nested deeper than [`MAX_SQL_NESTING`].
fn check_shape(sql: &str) -> Result<(), SqlError> {
    use sqlparser::keywords::Keyword;
    use sqlparser::tokenizer::{Token, Tokenizer};
    // A text that does not tokenize is left to the parser, which reports it in 1.3's words.
    let Ok(tokens) = Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize() else { return Ok(()) };
    let mut operators = 0usize;
    let mut depth = 0usize;
    for token in &tokens {
        match token {
            Token::LParen | Token::LBracket | Token::LBrace => {
                depth += 1;
                if depth > MAX_SQL_NESTING {
                    return Err(SqlError::TooDeep(MAX_SQL_NESTING));
                }
            }
            Token::RParen | Token::RBracket | Token::RBrace => depth = depth.saturating_sub(1),
            _ => {}
        }
        let is_operator = match token {
            Token::Word(w) => {
                matches!(
                    w.keyword,
                    Keyword::AND
                        | Keyword::OR
                        | Keyword::NOT
                        | Keyword::IS
                        | Keyword::IN
                        | Keyword::LIKE
                        | Keyword::BETWEEN
                ) && w.quote_style.is_none()
            }
            Token::Whitespace(_)
            | Token::Number(..)
            | Token::SingleQuotedString(_)
            | Token::DoubleQuotedString(_)
            | Token::HexStringLiteral(_)
            | Token::Comma
            | Token::Period
            | Token::SemiColon
            | Token::RParen
            | Token::EOF => false,
            // Every other token (comparisons, arithmetic, an opening parenthesis, casts…) can
            // add a level to the expression tree.
            _ => true,
        };
        operators += is_operator as usize;
        if operators > MAX_SQL_OPERATORS {
            return Err(SqlError::TooComplex(MAX_SQL_OPERATORS));
        }
    }
    Ok(())
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
}

impl Default for QueryContext {
    fn default() -> Self {
        Self { is_owner: false, row_limit: 100_000, max_sql_len: MAX_SQL_LEN }
    }
}

/// A query's answer: the result columns and the rows, each a product of those columns.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryResult {
    pub schema: ProductType,
    pub rows: Vec<AlgebraicValue>,
}

/// A literal in a `WHERE` clause.
#[derive(Debug, Clone, PartialEq)]
enum Literal {
    Int(i128),
    Float(f64),
    Str(String),
    Bool(bool),
    Hex(Vec<u8>),
}

/// A `WHERE` condition with columns resolved to positions.
#[derive(Debug, Clone)]
enum Cond {
    Cmp { col: usize, op: BinaryOperator, rhs: Operand },
    And(Box<Cond>, Box<Cond>),
    Or(Box<Cond>, Box<Cond>),
    Const(bool),
}

#[derive(Debug, Clone)]
enum Operand {
    Col(usize),
    Lit(AlgebraicValue),
}

enum Projection {
    All,
    Columns(Vec<(usize, String)>),
    Count(String),
}

/// Parses one statement, refusing empty, over-long and multiple-statement input.
fn parse_one(sql: &str, ctx: QueryContext) -> Result<Statement, SqlError> {
    if sql.len() > ctx.max_sql_len {
        return Err(SqlError::TooLong(ctx.max_sql_len));
    }
    if sql.trim().is_empty() {
        return Err(SqlError::Empty);
    }
    check_shape(sql)?;
    let mut statements =
        Parser::parse_sql(&PostgreSqlDialect {}, sql).map_err(|e| SqlError::Parse(parse_message(&e)))?;
    if statements.len() > 1 {
        return Err(SqlError::MultipleStatements);
    }
    statements.pop().ok_or(SqlError::Empty)
}

/// What a statement did.
#[derive(Debug)]
pub enum Outcome {
    /// A `SELECT`'s rows.
    Rows(QueryResult),
    /// A DML statement's counts and the changes it committed.
    Dml { stats: DmlStats, delta: epoch_store::TxDelta },
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
    match parse_one(sql, ctx)? {
        Statement::Query(q) => select(store, q, ctx).map(Outcome::Rows),
        s @ (Statement::Insert(_) | Statement::Update { .. } | Statement::Delete(_)) => {
            if !ctx.is_owner {
                return Err(SqlError::DmlNotOwner);
            }
            store.begin();
            match dml(store, s) {
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

fn table_name(name: &sqlparser::ast::ObjectName) -> Result<String, SqlError> {
    match name.0.as_slice() {
        [ObjectNamePart::Identifier(id)] => Ok(id.value.clone()),
        _ => Err(SqlError::Unsupported(format!("table name {name}"))),
    }
}

fn dml_table(store: &Store, name: &str) -> Result<(u32, ProductType), SqlError> {
    let t = store.table_by_name(name).ok_or_else(|| SqlError::UnknownTable(name.to_string()))?;
    Ok((t.id, t.schema.row_type().clone()))
}

fn single_table(from: &[sqlparser::ast::TableWithJoins]) -> Result<String, SqlError> {
    match from {
        [t] if t.joins.is_empty() => match &t.relation {
            TableFactor::Table { name, .. } => table_name(name),
            _ => Err(SqlError::Unsupported("subqueries".into())),
        },
        _ => Err(SqlError::Unsupported("DML on more than one table".into())),
    }
}

/// Rows of `table_id` matching `cond`: (row id, decoded columns).
fn matching(
    store: &Store,
    table_id: u32,
    row_type: &ProductType,
    cond: &Cond,
) -> Result<Vec<(u32, Vec<AlgebraicValue>)>, SqlError> {
    let table = store.table(table_id).map_err(store_err)?;
    let ty = AlgebraicType::Product(row_type.clone());
    let mut out = Vec::new();
    for (id, bytes) in table.iter() {
        let row = epoch_sats::bsatn::decode(&store.typespace, &ty, bytes)
            .map_err(|e| SqlError::Unsupported(e.to_string()))?;
        let cols = row.as_product().unwrap_or(&[]).to_vec();
        if eval(cond, &cols) {
            out.push((id, cols));
        }
    }
    Ok(out)
}

fn store_err(e: epoch_store::StoreError) -> SqlError {
    SqlError::Unsupported(e.to_string())
}

fn dml(store: &mut Store, statement: Statement) -> Result<DmlStats, SqlError> {
    let mut stats = DmlStats::default();
    match statement {
        Statement::Insert(ins) => {
            let sqlparser::ast::TableObject::TableName(name) = &ins.table else {
                return Err(SqlError::Unsupported("INSERT into a table function".into()));
            };
            let name = table_name(name)?;
            let (table_id, row_type) = dml_table(store, &name)?;
            let scope = Scope { table: &name, alias: None, row_type: &row_type };
            let columns: Vec<usize> = if ins.columns.is_empty() {
                (0..row_type.elements.len()).collect()
            } else {
                ins.columns
                    .iter()
                    .map(|c| scope.column(&Expr::Identifier(c.clone())).map(|c| c.unwrap_or(0)))
                    .collect::<Result<_, _>>()?
            };
            let mut sorted = columns.clone();
            sorted.sort_unstable();
            sorted.dedup();
            if sorted.len() != row_type.elements.len() || columns.len() != sorted.len() {
                return Err(SqlError::Unsupported("INSERT must give every column exactly once".into()));
            }
            let Some(SetExpr::Values(values)) = ins.source.as_deref().map(|q| q.body.as_ref()) else {
                return Err(SqlError::Unsupported("INSERT takes VALUES".into()));
            };
            for row in &values.rows {
                if row.len() != columns.len() {
                    return Err(SqlError::Unsupported("each VALUES row must give every listed column".into()));
                }
                let mut cols = vec![AlgebraicValue::unit(); row_type.elements.len()];
                for (expr, &c) in row.iter().zip(&columns) {
                    cols[c] = scope.coerce(c, expr)?;
                }
                let mut bytes = epoch_sats::bsatn::to_vec(&AlgebraicValue::Product(cols.into()));
                store.insert(table_id, &mut bytes).map_err(store_err)?;
                stats.rows_inserted += 1;
            }
        }
        Statement::Update { table, assignments, selection, from: None, returning: None, or: None } => {
            let name = single_table(std::slice::from_ref(&table))?;
            let (table_id, row_type) = dml_table(store, &name)?;
            let scope = Scope { table: &name, alias: None, row_type: &row_type };
            let mut sets = Vec::new();
            for a in &assignments {
                let sqlparser::ast::AssignmentTarget::ColumnName(col) = &a.target else {
                    return Err(SqlError::Unsupported("tuple assignments".into()));
                };
                let col = table_name(col)?;
                let c = scope.column(&Expr::Identifier(sqlparser::ast::Ident::new(col)))?.unwrap_or(0);
                sets.push((c, scope.coerce(c, &a.value)?));
            }
            let cond = match &selection {
                Some(e) => scope.condition(e)?,
                None => Cond::Const(true),
            };
            for (id, mut cols) in matching(store, table_id, &row_type, &cond)? {
                for (c, v) in &sets {
                    cols[*c] = v.clone();
                }
                store.delete_rows(table_id, &[id]).map_err(store_err)?;
                let mut bytes = epoch_sats::bsatn::to_vec(&AlgebraicValue::Product(cols.into()));
                store.insert(table_id, &mut bytes).map_err(store_err)?;
                stats.rows_updated += 1;
            }
        }
        Statement::Delete(del) => {
            let from = match &del.from {
                sqlparser::ast::FromTable::WithFromKeyword(t) | sqlparser::ast::FromTable::WithoutKeyword(t) => t,
            };
            let name = single_table(from)?;
            let (table_id, row_type) = dml_table(store, &name)?;
            let scope = Scope { table: &name, alias: None, row_type: &row_type };
            let cond = match &del.selection {
                Some(e) => scope.condition(e)?,
                None => Cond::Const(true),
            };
            let ids: Vec<u32> = matching(store, table_id, &row_type, &cond)?.into_iter().map(|(id, _)| id).collect();
            stats.rows_deleted = store.delete_rows(table_id, &ids).map_err(store_err)? as u64;
        }
        other => return Err(SqlError::Unsupported(format!("{other}"))),
    }
    Ok(stats)
}

fn select(store: &Store, query: Box<sqlparser::ast::Query>, ctx: QueryContext) -> Result<QueryResult, SqlError> {
    if query.order_by.is_some() {
        return Err(SqlError::Unsupported("ORDER BY".into()));
    }
    let limit = match &query.limit_clause {
        None => None,
        Some(LimitClause::LimitOffset { limit: Some(e), offset: None, limit_by }) if limit_by.is_empty() => {
            match literal(e)? {
                Literal::Int(n) if n >= 0 => {
                    let n = u64::try_from(n).map_err(|_| SqlError::LimitOutOfRange(n.to_string()))?;
                    Some(usize::try_from(n).unwrap_or(usize::MAX))
                }
                _ => return Err(SqlError::Unsupported("LIMIT must be a non-negative integer".into())),
            }
        }
        Some(_) => return Err(SqlError::Unsupported("this form of LIMIT".into())),
    };
    let SetExpr::Select(select) = *query.body else {
        return Err(SqlError::Unsupported("only SELECT queries are supported".into()));
    };
    if select.distinct.is_some() {
        return Err(SqlError::Unsupported("DISTINCT".into()));
    }
    if select.having.is_some()
        || !matches!(select.group_by, sqlparser::ast::GroupByExpr::Expressions(ref e, _) if e.is_empty())
    {
        return Err(SqlError::Unsupported("GROUP BY".into()));
    }
    let [from] = select.from.as_slice() else {
        return Err(SqlError::Unsupported("a query must read exactly one table".into()));
    };
    if !from.joins.is_empty() {
        return Err(SqlError::Unsupported("joins".into()));
    }
    let TableFactor::Table { name, alias, .. } = &from.relation else {
        return Err(SqlError::Unsupported("subqueries".into()));
    };
    let table_name = match name.0.as_slice() {
        [ObjectNamePart::Identifier(id)] => id.value.clone(),
        _ => return Err(SqlError::Unsupported(format!("table name {name}"))),
    };
    let table = store
        .table_by_name(&table_name)
        .filter(|t| ctx.is_owner || t.schema.def.table_access == TableAccess::Public)
        .ok_or_else(|| SqlError::UnknownTable(table_name.clone()))?;
    let row_type = table.schema.row_type().clone();
    let scope = Scope { table: &table_name, alias: alias.as_ref().map(|a| a.name.value.as_str()), row_type: &row_type };

    let projection = scope.projection(&select.projection)?;
    let cond = match &select.selection {
        Some(e) => scope.condition(e)?,
        None => Cond::Const(true),
    };

    let ts = &store.typespace;
    let ty = AlgebraicType::Product(row_type.clone());
    let mut rows = Vec::new();
    let mut count: u64 = 0;
    for (_, bytes) in table.iter() {
        let row = epoch_sats::bsatn::decode(ts, &ty, bytes).map_err(|e| SqlError::Unsupported(e.to_string()))?;
        let cols = row.as_product().unwrap_or(&[]);
        if !eval(&cond, cols) {
            continue;
        }
        if let Projection::Count(_) = projection {
            count += 1;
            continue;
        }
        if limit.is_some_and(|l| rows.len() >= l) {
            break;
        }
        if rows.len() >= ctx.row_limit {
            return Err(SqlError::TooManyRows(ctx.row_limit));
        }
        rows.push(match &projection {
            Projection::All => row,
            Projection::Columns(c) => AlgebraicValue::Product(c.iter().map(|(i, _)| cols[*i].clone()).collect()),
            Projection::Count(_) => unreachable!("handled above"),
        });
    }
    let schema = match projection {
        Projection::All => row_type,
        Projection::Columns(c) => ProductType {
            elements: c
                .iter()
                .map(|(i, name)| ProductTypeElement {
                    name: Some(name.as_str().into()),
                    ty: row_type.elements[*i].ty.clone(),
                })
                .collect(),
        },
        Projection::Count(alias) => {
            rows = vec![AlgebraicValue::product([AlgebraicValue::U64(count)])];
            ProductType::new([(alias.as_str(), AlgebraicType::U64)])
        }
    };
    Ok(QueryResult { schema, rows })
}

/// A parse error worded as 1.3's parser words it (`Expected an SQL statement, found: X at Line: 1,
/// Column 1`): newer sqlparser versions add colons after `Expected` and `Column`.
fn parse_message(e: &sqlparser::parser::ParserError) -> String {
    e.to_string().replace("Expected: ", "Expected ").replace(", Column: ", ", Column ")
}

struct Scope<'a> {
    table: &'a str,
    alias: Option<&'a str>,
    row_type: &'a ProductType,
}

impl Scope<'_> {
    fn column(&self, e: &Expr) -> Result<Option<usize>, SqlError> {
        let name = match e {
            Expr::Identifier(id) => id.value.as_str(),
            Expr::CompoundIdentifier(parts) => match parts.as_slice() {
                [t, c] if t.value == self.table || Some(t.value.as_str()) == self.alias => c.value.as_str(),
                [t, _] => return Err(SqlError::UnknownTable(t.value.clone())),
                _ => return Err(SqlError::Unsupported(format!("identifier {e}"))),
            },
            _ => return Ok(None),
        };
        self.row_type.index_of(name).map(Some).ok_or_else(|| SqlError::UnknownColumn(name.to_string()))
    }

    fn projection(&self, items: &[SelectItem]) -> Result<Projection, SqlError> {
        if let [SelectItem::Wildcard(_)] = items {
            return Ok(Projection::All);
        }
        if let [SelectItem::QualifiedWildcard(kind, _)] = items {
            let t = match kind {
                sqlparser::ast::SelectItemQualifiedWildcardKind::ObjectName(n) => n.to_string(),
                other => other.to_string(),
            };
            if t == self.table || Some(t.as_str()) == self.alias {
                return Ok(Projection::All);
            }
            return Err(SqlError::UnknownTable(t));
        }
        let mut cols = Vec::new();
        for item in items {
            let (expr, alias) = match item {
                SelectItem::UnnamedExpr(e) => (e, None),
                SelectItem::ExprWithAlias { expr, alias } => (expr, Some(alias.value.clone())),
                _ => return Err(SqlError::Unsupported("mixing * with columns".into())),
            };
            if is_count_star(expr) {
                return match (items.len(), alias) {
                    (1, Some(alias)) => Ok(Projection::Count(alias)),
                    (1, None) => Err(SqlError::Unsupported("COUNT(*) needs an alias: COUNT(*) AS n".into())),
                    _ => Err(SqlError::Unsupported("COUNT(*) with other columns".into())),
                };
            }
            let Some(i) = self.column(expr)? else {
                return Err(SqlError::Unsupported(format!("projection {expr}")));
            };
            let name = alias.unwrap_or_else(|| self.row_type.elements[i].name.as_deref().unwrap_or("").to_string());
            cols.push((i, name));
        }
        Ok(Projection::Columns(cols))
    }

    fn condition(&self, e: &Expr) -> Result<Cond, SqlError> {
        match e {
            Expr::Nested(inner) => self.condition(inner),
            Expr::BinaryOp { left, op: BinaryOperator::And, right } => {
                Ok(Cond::And(Box::new(self.condition(left)?), Box::new(self.condition(right)?)))
            }
            Expr::BinaryOp { left, op: BinaryOperator::Or, right } => {
                Ok(Cond::Or(Box::new(self.condition(left)?), Box::new(self.condition(right)?)))
            }
            Expr::BinaryOp { left, op, right } if is_comparison(op) => {
                match (self.column(left)?, self.column(right)?) {
                    (Some(l), Some(r)) => Ok(Cond::Cmp { col: l, op: op.clone(), rhs: Operand::Col(r) }),
                    (Some(c), None) => {
                        Ok(Cond::Cmp { col: c, op: op.clone(), rhs: Operand::Lit(self.coerce(c, right)?) })
                    }
                    (None, Some(c)) => Ok(Cond::Cmp { col: c, op: flip(op), rhs: Operand::Lit(self.coerce(c, left)?) }),
                    (None, None) => Err(SqlError::Unsupported(format!("comparison without a column: {e}"))),
                }
            }
            Expr::Value(v) if matches!(v.value, Value::Boolean(_)) => {
                Ok(Cond::Const(matches!(v.value, Value::Boolean(true))))
            }
            other => Err(SqlError::Unsupported(format!("WHERE {other}"))),
        }
    }

    /// Turns a literal into a value of column `col`'s type.
    fn coerce(&self, col: usize, e: &Expr) -> Result<AlgebraicValue, SqlError> {
        let lit = literal(e)?;
        let column = &self.row_type.elements[col];
        let mismatch = || SqlError::TypeMismatch {
            column: column.name.as_deref().unwrap_or("?").to_string(),
            ty: format!("{:?}", column.ty),
            literal: e.to_string(),
        };
        literal_value(&column.ty, &lit).ok_or_else(mismatch)
    }
}

fn is_count_star(e: &Expr) -> bool {
    let Expr::Function(f) = e else { return false };
    let FunctionArguments::List(list) = &f.args else { return false };
    f.name.to_string().eq_ignore_ascii_case("count")
        && matches!(list.args.as_slice(), [FunctionArg::Unnamed(FunctionArgExpr::Wildcard)])
}

fn is_comparison(op: &BinaryOperator) -> bool {
    use BinaryOperator::*;
    matches!(op, Eq | NotEq | Lt | LtEq | Gt | GtEq)
}

fn flip(op: &BinaryOperator) -> BinaryOperator {
    use BinaryOperator::*;
    match op {
        Lt => Gt,
        LtEq => GtEq,
        Gt => Lt,
        GtEq => LtEq,
        other => other.clone(),
    }
}

fn literal(e: &Expr) -> Result<Literal, SqlError> {
    match e {
        Expr::Nested(inner) => literal(inner),
        Expr::UnaryOp { op: UnaryOperator::Minus, expr } => match literal(expr)? {
            Literal::Int(n) => Ok(Literal::Int(-n)),
            Literal::Float(f) => Ok(Literal::Float(-f)),
            _ => Err(SqlError::Unsupported(format!("literal {e}"))),
        },
        Expr::Value(v) => match &v.value {
            Value::Number(n, _) => {
                if let Some(hex) = n.strip_prefix("0x").or_else(|| n.strip_prefix("0X")) {
                    return hex_bytes(hex)
                        .map(Literal::Hex)
                        .ok_or_else(|| SqlError::Unsupported(format!("literal {n}")));
                }
                n.parse::<i128>()
                    .map(Literal::Int)
                    .or_else(|_| n.parse::<f64>().map(Literal::Float))
                    .map_err(|_| SqlError::Unsupported(format!("number {n}")))
            }
            Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => Ok(Literal::Str(s.clone())),
            Value::HexStringLiteral(h) => {
                hex_bytes(h).map(Literal::Hex).ok_or_else(|| SqlError::Unsupported(format!("hex literal {h}")))
            }
            Value::Boolean(b) => Ok(Literal::Bool(*b)),
            other => Err(SqlError::Unsupported(format!("literal {other}"))),
        },
        // `0xABCD` reaches the parser as a number followed by an identifier in some dialects.
        Expr::Identifier(id) if id.value.starts_with("0x") => {
            hex_bytes(&id.value[2..]).map(Literal::Hex).ok_or_else(|| SqlError::Unsupported(format!("literal {id}")))
        }
        other => Err(SqlError::Unsupported(format!("expression {other}"))),
    }
}

fn hex_bytes(h: &str) -> Option<Vec<u8>> {
    let h = if h.len() % 2 == 1 { format!("0{h}") } else { h.to_string() };
    (0..h.len()).step_by(2).map(|i| u8::from_str_radix(&h[i..i + 2], 16).ok()).collect()
}

/// A big-endian byte string as a 256-bit unsigned integer (at most 32 bytes).
fn u256_from_be(bytes: &[u8]) -> Option<epoch_sats::U256> {
    if bytes.len() > 32 {
        return None;
    }
    let mut be = [0u8; 32];
    be[32 - bytes.len()..].copy_from_slice(bytes);
    Some(epoch_sats::U256::from_be_bytes(be))
}

/// The value of type `ty` a literal stands for, if it fits.
fn literal_value(ty: &AlgebraicType, lit: &Literal) -> Option<AlgebraicValue> {
    use AlgebraicType as T;
    use AlgebraicValue as V;
    Some(match (ty, lit) {
        (T::Bool, Literal::Bool(b)) => V::Bool(*b),
        (T::I8, Literal::Int(n)) => V::I8(i8::try_from(*n).ok()?),
        (T::U8, Literal::Int(n)) => V::U8(u8::try_from(*n).ok()?),
        (T::I16, Literal::Int(n)) => V::I16(i16::try_from(*n).ok()?),
        (T::U16, Literal::Int(n)) => V::U16(u16::try_from(*n).ok()?),
        (T::I32, Literal::Int(n)) => V::I32(i32::try_from(*n).ok()?),
        (T::U32, Literal::Int(n)) => V::U32(u32::try_from(*n).ok()?),
        (T::I64, Literal::Int(n)) => V::I64(i64::try_from(*n).ok()?),
        (T::U64, Literal::Int(n)) => V::U64(u64::try_from(*n).ok()?),
        (T::I128, Literal::Int(n)) => V::I128(*n),
        (T::U128, Literal::Int(n)) => V::U128(u128::try_from(*n).ok()?),
        (T::I256, Literal::Int(n)) => V::I256(Box::new(epoch_sats::I256::new(*n))),
        (T::U256, Literal::Int(n)) => V::U256(Box::new(epoch_sats::U256::new(u128::try_from(*n).ok()?))),
        (T::U256, Literal::Hex(b)) => V::U256(Box::new(u256_from_be(b)?)),
        (T::F32, Literal::Float(f)) => V::F32(epoch_sats::F32(*f as f32)),
        (T::F32, Literal::Int(n)) => V::F32(epoch_sats::F32(*n as f32)),
        (T::F64, Literal::Float(f)) => V::F64(F64(*f)),
        (T::F64, Literal::Int(n)) => V::F64(F64(*n as f64)),
        (T::String, Literal::Str(s)) => V::String(s.as_str().into()),
        (T::Array(e), Literal::Hex(b)) if **e == T::U8 => V::bytes(b),
        // Identity, ConnectionId, Timestamp: a product with one special element.
        (T::Product(p), _) if p.special_name().is_some() => V::product([literal_value(&p.elements[0].ty, lit)?]),
        (T::Product(p), Literal::Str(s)) if p.special_name() == Some(epoch_sats::special::IDENTITY) => {
            let b = hex_bytes(s.strip_prefix("0x").unwrap_or(s))?;
            V::product([V::U256(Box::new(u256_from_be(&b)?))])
        }
        _ => return None,
    })
}

fn eval(c: &Cond, row: &[AlgebraicValue]) -> bool {
    match c {
        Cond::Const(b) => *b,
        Cond::And(a, b) => eval(a, row) && eval(b, row),
        Cond::Or(a, b) => eval(a, row) || eval(b, row),
        Cond::Cmp { col, op, rhs } => {
            let rhs = match rhs {
                Operand::Col(i) => &row[*i],
                Operand::Lit(v) => v,
            };
            let ord = row[*col].cmp(rhs);
            match op {
                BinaryOperator::Eq => ord == Ordering::Equal,
                BinaryOperator::NotEq => ord != Ordering::Equal,
                BinaryOperator::Lt => ord == Ordering::Less,
                BinaryOperator::LtEq => ord != Ordering::Greater,
                BinaryOperator::Gt => ord == Ordering::Greater,
                BinaryOperator::GtEq => ord != Ordering::Less,
                _ => false,
            }
        }
    }
}

/// Writes a result as the `/sql` route answers it: one statement's `{schema, rows, ...}`.
pub fn result_json(ts: &epoch_sats::Typespace, r: &QueryResult, total_duration_micros: u64) -> String {
    result_json_with(ts, r, total_duration_micros, DmlStats::default())
}

/// Like [`result_json`], with the DML counts of the statement.
pub fn result_json_with(
    ts: &epoch_sats::Typespace,
    r: &QueryResult,
    total_duration_micros: u64,
    stats: DmlStats,
) -> String {
    let mut out = String::from("{\"schema\":");
    out.push_str(&schema_json(&r.schema, ts));
    out.push_str(",\"rows\":[");
    let ty = AlgebraicType::Product(r.schema.clone());
    for (i, row) in r.rows.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        // Rows were decoded with this very type, so writing them cannot mismatch.
        let _ = epoch_sats::json::write_positional(&mut out, ts, &ty, row);
    }
    out.push_str(&format!(
        "],\"total_duration_micros\":{total_duration_micros},\"stats\":{{\"rows_inserted\":{},\"rows_deleted\":{},\"rows_updated\":{}}}}}",
        stats.rows_inserted, stats.rows_deleted, stats.rows_updated
    ));
    out
}

/// `ty` with every type reference replaced by its definition, as 1.3 writes result schemas.
fn expand_refs(ty: &AlgebraicType, ts: &epoch_sats::Typespace, depth: u32) -> AlgebraicType {
    use epoch_sats::{SumType, SumTypeVariant};
    if depth > 32 {
        return ty.clone();
    }
    match ty {
        AlgebraicType::Ref(r) => match ts.types.get(*r as usize) {
            Some(t) => expand_refs(t, ts, depth + 1),
            None => ty.clone(),
        },
        AlgebraicType::Product(p) => AlgebraicType::Product(ProductType {
            elements: p
                .elements
                .iter()
                .map(|e| ProductTypeElement { name: e.name.clone(), ty: expand_refs(&e.ty, ts, depth + 1) })
                .collect(),
        }),
        AlgebraicType::Sum(s) => AlgebraicType::Sum(SumType {
            variants: s
                .variants
                .iter()
                .map(|v| SumTypeVariant { name: v.name.clone(), ty: expand_refs(&v.ty, ts, depth + 1) })
                .collect(),
        }),
        AlgebraicType::Array(e) => AlgebraicType::Array(Box::new(expand_refs(e, ts, depth + 1))),
        other => other.clone(),
    }
}

fn schema_json(p: &ProductType, ts: &epoch_sats::Typespace) -> String {
    let mut out = String::from("{\"elements\":[");
    for (i, e) in p.elements.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"name\":");
        match &e.name {
            Some(n) => {
                out.push_str("{\"some\":");
                epoch_sats::json::write_str(&mut out, n);
                out.push('}');
            }
            None => out.push_str("{\"none\":[]}"),
        }
        out.push_str(",\"algebraic_type\":");
        out.push_str(&epoch_schema::json::algebraic_type(&expand_refs(&e.ty, ts, 0)).to_string());
        out.push('}');
    }
    out.push_str("]}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use epoch_sats::Typespace;
    use epoch_schema::{ModuleDef, TableDef, TableType};

    /// A store with one public table `t(id: u32)` holding ids 0..10.
    fn store() -> Store {
        let row_type = ProductType::new([("id", AlgebraicType::U32)]);
        let def = ModuleDef {
            typespace: Typespace { types: vec![AlgebraicType::Product(row_type.clone())] },
            tables: vec![TableDef {
                name: "t".into(),
                product_type_ref: 0,
                row_type,
                primary_key: None,
                indexes: Vec::new(),
                constraints: Vec::new(),
                sequences: Vec::new(),
                schedule: None,
                table_type: TableType::User,
                table_access: TableAccess::Public,
            }],
            reducers: Vec::new(),
            types: Vec::new(),
            row_level_security: Vec::new(),
        };
        let mut store = Store::new(&def);
        store.begin();
        for id in 0u32..10 {
            store.insert(0, &mut id.to_le_bytes()).unwrap();
        }
        store.commit().unwrap();
        store
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
    fn limit_beyond_u64_is_refused_not_wrapped() {
        let s = store();
        let err = execute(&s, "SELECT * FROM t LIMIT 18446744073709551616", QueryContext::default()).unwrap_err();
        assert_eq!(err, SqlError::LimitOutOfRange("18446744073709551616".into()));
        let all = execute(&s, "SELECT * FROM t LIMIT 18446744073709551615", QueryContext::default()).unwrap();
        assert_eq!(all.rows.len(), 10);
        assert_eq!(execute(&s, "SELECT * FROM t LIMIT 3", QueryContext::default()).unwrap().rows.len(), 3);
    }
}
