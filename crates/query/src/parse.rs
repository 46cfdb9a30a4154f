//! Parsing: the query text's shape is checked on its tokens (operator count, nesting) before
//! sqlparser builds a tree, then exactly one statement is parsed.

use sqlparser::ast::{ObjectNamePart, Statement};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::keywords::Keyword;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer, Word};

use crate::limits::{MAX_SQL_NESTING, MAX_SQL_OPERATORS};
use crate::{QueryContext, SqlError};

/// Counts the operators and the nesting of `sql` from its tokens (no tree is built, so nothing
/// recurses and nothing backtracks) and refuses a query with more than [`MAX_SQL_OPERATORS`] or
/// nested deeper than [`MAX_SQL_NESTING`].
fn check_shape(tokens: &[Token]) -> Result<(), SqlError> {
    let mut operators = 0usize;
    let mut depth = 0usize;
    for token in tokens {
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
    let dialect = PostgreSqlDialect {};
    let parse_error = |e: &sqlparser::parser::ParserError| SqlError::Parse(parse_message(e));
    let mut tokens = Tokenizer::new(&dialect, sql).tokenize_with_location().map_err(|e| parse_error(&e.into()))?;
    let plain: Vec<Token> = tokens.iter().map(|t| t.token.clone()).collect();
    check_shape(&plain)?;
    keyword_columns(&mut tokens);
    bind_sender(&mut tokens, ctx.sender.unwrap_or_default());
    let mut statements =
        Parser::new(&dialect).with_tokens_with_locations(tokens).parse_statements().map_err(|e| parse_error(&e))?;
    if statements.len() > 1 {
        return Err(SqlError::MultipleStatements);
    }
    statements.pop().ok_or(SqlError::Empty)
}

/// 1.3's grammar takes keywords as column names where a name is expected
/// (`SELECT from, to, amount FROM ledger`); the dialect Epoch parses with reads a `FROM` right
/// after `SELECT` (or after a comma of the column list) as the start of the table list. Such a
/// `FROM` is a column: it becomes a quoted identifier, which names the same column.
fn keyword_columns(tokens: &mut [TokenWithSpan]) {
    let mut previous: Option<usize> = None;
    for i in 0..tokens.len() {
        if matches!(tokens[i].token, Token::Whitespace(_)) {
            continue;
        }
        let after_list_start = previous.is_some_and(|p| match &tokens[p].token {
            Token::Comma => true,
            Token::Word(w) => w.keyword == Keyword::SELECT && w.quote_style.is_none(),
            _ => false,
        });
        if let Token::Word(w) = &tokens[i].token {
            if w.keyword == Keyword::FROM && w.quote_style.is_none() && after_list_start {
                tokens[i].token =
                    Token::Word(Word { value: w.value.clone(), quote_style: Some('"'), keyword: Keyword::NoKeyword });
            }
        }
        previous = Some(i);
    }
}

/// `:sender` (in row-level security filters) becomes the caller's identity, written as the
/// hex literal an identity column compares with.
fn bind_sender(tokens: &mut [TokenWithSpan], sender: epoch_sats::Identity) {
    let literal = || {
        let hex = sender.to_hex();
        Token::Number(format!("0x{hex}"), false)
    };
    for i in 0..tokens.len() {
        match &tokens[i].token {
            Token::Placeholder(p) if p == ":sender" => tokens[i].token = literal(),
            // The tokenizer may give `:` and `sender` apart.
            Token::Colon if matches!(tokens.get(i + 1).map(|t| &t.token), Some(Token::Word(w)) if w.value == "sender" && w.quote_style.is_none()) =>
            {
                tokens[i].token = literal();
                tokens[i + 1].token = Token::Whitespace(sqlparser::tokenizer::Whitespace::Space);
            }
            _ => {}
        }
    }
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
