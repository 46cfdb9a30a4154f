//! Planning: names resolved against a table's columns, `WHERE` turned into a [`Cond`] over
//! column positions, literals coerced to the columns' types, and the projection.

use epoch_sats::{AlgebraicType, AlgebraicValue, ProductType, F64};
use sqlparser::ast::{
    BinaryOperator, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, SelectItem, UnaryOperator, Value,
};

use crate::SqlError;

/// A literal in a `WHERE` clause.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Literal {
    Int(i128),
    Float(f64),
    Str(String),
    Bool(bool),
    Hex(Vec<u8>),
}

/// A `WHERE` condition with columns resolved to positions.
#[derive(Debug, Clone)]
pub(crate) enum Cond {
    Cmp { col: usize, op: BinaryOperator, rhs: Operand },
    And(Box<Cond>, Box<Cond>),
    Or(Box<Cond>, Box<Cond>),
    Const(bool),
}

#[derive(Debug, Clone)]
pub(crate) enum Operand {
    Col(usize),
    Lit(AlgebraicValue),
}

pub(crate) enum Projection {
    All,
    Columns(Vec<(usize, String)>),
    Count(String),
}

pub(crate) struct Scope<'a> {
    pub(crate) table: &'a str,
    pub(crate) alias: Option<&'a str>,
    /// The columns in scope: the table's, then the joined table's (if any).
    pub(crate) row_type: &'a ProductType,
    /// A joined second table: its name, its alias, and where its columns start in `row_type`.
    pub(crate) joined: Option<(&'a str, Option<&'a str>, usize)>,
}

impl Scope<'_> {
    pub(crate) fn column(&self, e: &Expr) -> Result<Option<usize>, SqlError> {
        let named = |t: &str, table: &str, alias: Option<&str>| t == table || Some(t) == alias;
        // The columns of the first table, and of the joined one.
        let first_len = self.joined.map_or(self.row_type.elements.len(), |(_, _, at)| at);
        let (name, range) = match e {
            Expr::Identifier(_) if self.joined.is_some() => {
                return Err(SqlError::Join("Names must be qualified when using joins"))
            }
            Expr::Identifier(id) => (id.value.as_str(), 0..first_len),
            Expr::CompoundIdentifier(parts) => match parts.as_slice() {
                [t, c] if named(&t.value, self.table, self.alias) => (c.value.as_str(), 0..first_len),
                [t, c] if self.joined.is_some_and(|(table, alias, _)| named(&t.value, table, alias)) => {
                    (c.value.as_str(), first_len..self.row_type.elements.len())
                }
                [t, _] => return Err(SqlError::UnknownTable(t.value.clone())),
                _ => return Err(SqlError::Unsupported(format!("identifier {e}"))),
            },
            _ => return Ok(None),
        };
        let offset = range.start;
        self.row_type.elements[range]
            .iter()
            .position(|el| el.name.as_deref() == Some(name))
            .map(|i| Some(offset + i))
            .ok_or_else(|| SqlError::UnknownColumn(name.to_string()))
    }

    pub(crate) fn projection(&self, items: &[SelectItem]) -> Result<Projection, SqlError> {
        if let [SelectItem::Wildcard(_)] = items {
            return Ok(Projection::All);
        }
        if let [SelectItem::QualifiedWildcard(kind, _)] = items {
            let t = match kind {
                sqlparser::ast::SelectItemQualifiedWildcardKind::ObjectName(n) => unquoted(n),
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

    pub(crate) fn condition(&self, e: &Expr) -> Result<Cond, SqlError> {
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
    pub(crate) fn coerce(&self, col: usize, e: &Expr) -> Result<AlgebraicValue, SqlError> {
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

/// A (possibly quoted) name as written, without its quotes: `"account"` names `account`.
pub(crate) fn unquoted(n: &sqlparser::ast::ObjectName) -> String {
    n.0.iter()
        .map(|p| match p {
            sqlparser::ast::ObjectNamePart::Identifier(id) => id.value.clone(),
            other => other.to_string(),
        })
        .collect::<Vec<_>>()
        .join(".")
}

pub(crate) fn is_count_star(e: &Expr) -> bool {
    let Expr::Function(f) = e else { return false };
    let FunctionArguments::List(list) = &f.args else { return false };
    f.name.to_string().eq_ignore_ascii_case("count")
        && matches!(list.args.as_slice(), [FunctionArg::Unnamed(FunctionArgExpr::Wildcard)])
}

pub(crate) fn is_comparison(op: &BinaryOperator) -> bool {
    use BinaryOperator::*;
    matches!(op, Eq | NotEq | Lt | LtEq | Gt | GtEq)
}

pub(crate) fn flip(op: &BinaryOperator) -> BinaryOperator {
    use BinaryOperator::*;
    match op {
        Lt => Gt,
        LtEq => GtEq,
        Gt => Lt,
        GtEq => LtEq,
        other => other.clone(),
    }
}

pub(crate) fn literal(e: &Expr) -> Result<Literal, SqlError> {
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

pub(crate) fn hex_bytes(h: &str) -> Option<Vec<u8>> {
    let h = if h.len() % 2 == 1 { format!("0{h}") } else { h.to_string() };
    (0..h.len()).step_by(2).map(|i| u8::from_str_radix(&h[i..i + 2], 16).ok()).collect()
}

/// A big-endian byte string as a 256-bit unsigned integer (at most 32 bytes).
pub(crate) fn u256_from_be(bytes: &[u8]) -> Option<epoch_sats::U256> {
    if bytes.len() > 32 {
        return None;
    }
    let mut be = [0u8; 32];
    be[32 - bytes.len()..].copy_from_slice(bytes);
    Some(epoch_sats::U256::from_be_bytes(be))
}

/// The value of type `ty` a literal stands for, if it fits.
pub(crate) fn literal_value(ty: &AlgebraicType, lit: &Literal) -> Option<AlgebraicValue> {
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
