//! Parsing: the query text's shape is checked on its tokens (operator count, nesting) before
//! sqlparser builds a tree, then exactly one statement is parsed.

use sqlparser::ast::{ObjectNamePart, Statement};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

use crate::{QueryContext, SqlError, MAX_SQL_NESTING, MAX_SQL_OPERATORS};

/// Counts the operators and the nesting of `sql` from its tokens (no tree is built, so nothing
/// recurses and nothing backtracks) and refuses a query with more than [`MAX_SQL_OPERATORS`] or
/// nested deeper than [`MAX_SQL_NESTING`].
pub(crate) fn check_shape(sql: &str) -> Result<(), SqlError> {
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

/// Parses one statement, refusing empty, over-long and multiple-statement input.
pub(crate) fn parse_one(sql: &str, ctx: QueryContext) -> Result<Statement, SqlError> {
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

/// A parse error worded as 1.3's parser words it (`Expected an SQL statement, found: X at Line: 1,
/// Column 1`): newer sqlparser versions add colons after `Expected` and `Column`.
pub(crate) fn parse_message(e: &sqlparser::parser::ParserError) -> String {
    e.to_string().replace("Expected: ", "Expected ").replace(", Column: ", ", Column ")
}

pub(crate) fn table_name(name: &sqlparser::ast::ObjectName) -> Result<String, SqlError> {
    match name.0.as_slice() {
        [ObjectNamePart::Identifier(id)] => Ok(id.value.clone()),
        _ => Err(SqlError::Unsupported(format!("table name {name}"))),
    }
}
