//! SATS-JSON: the JSON form of algebraic values that SpacetimeDB 1.3 writes and accepts.
//!
//! Writing (driven by a type): products with named elements are objects, unnamed ones arrays;
//! sums are `{"Variant": payload}` (or `[tag, payload]` for an unnamed variant); unit is `[]`;
//! `Array(U8)` is a lowercase hex string; 128-bit integers are JSON numbers; 256-bit integers are
//! `"0x…"` strings (negative `i256` as `"-0x…"`); non-finite floats are `null`.
//!
//! Reading accepts the same, plus what 1.3 also accepts: products as arrays, sums as
//! `[tag, payload]` or `{"<tag>": payload}`, `null` for an `Option`'s `none`, byte arrays as arrays
//! of numbers. Errors name what was expected; input is never trusted.

use std::fmt::{self, Write as _};

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::limits::MAX_VALUE_DEPTH;
use crate::types::{AlgebraicType, ProductType, SumType, Typespace};
use crate::value::{AlgebraicValue, SumValue, F32, F64, I256, U256};

/// Why a value could not be written as, or read from, SATS-JSON.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonError {
    #[error("value does not match its type: {0}")]
    Mismatch(String),
    #[error("type reference {0} does not exist in the typespace")]
    DanglingRef(u32),
    #[error("value nested deeper than {MAX_VALUE_DEPTH} levels")]
    TooDeep,
    #[error("{0}")]
    Parse(String),
}

/// Writes `v`, of type `ty`, as SATS-JSON.
pub fn to_string(ts: &Typespace, ty: &AlgebraicType, v: &AlgebraicValue) -> Result<String, JsonError> {
    let mut out = String::new();
    write(&mut out, ts, ty, v)?;
    Ok(out)
}

/// Appends `v`, of type `ty`, as SATS-JSON to `out`.
pub fn write(out: &mut String, ts: &Typespace, ty: &AlgebraicType, v: &AlgebraicValue) -> Result<(), JsonError> {
    write_at(out, ts, ty, v, 0, Style::Named)
}

/// Writes `v` in the export form: SATS-JSON as [`to_string`] writes it, except that non-finite
/// floats, which SATS-JSON writes as `null`, are strings that [`from_str_exact`] reads back bit
/// for bit: `"NaN"` (the canonical quiet NaN), `"Infinity"`, `"-Infinity"`, and
/// `"NaN:0x<bits>"` for any other NaN. With it, every value survives an export and import.
pub fn to_string_exact(ts: &Typespace, ty: &AlgebraicType, v: &AlgebraicValue) -> Result<String, JsonError> {
    let mut out = String::new();
    write_at(&mut out, ts, ty, v, 0, Style::Exact)?;
    Ok(out)
}

/// Appends `v` in the positional form the `/sql` route uses for rows: every product is an array
/// and every sum is `[tag, payload]`.
pub fn write_positional(
    out: &mut String,
    ts: &Typespace,
    ty: &AlgebraicType,
    v: &AlgebraicValue,
) -> Result<(), JsonError> {
    write_at(out, ts, ty, v, 0, Style::Positional)
}

/// How products and sums are written.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Style {
    /// Objects for named products, `{"Variant": payload}` for sums.
    Named,
    /// Arrays for products, `[tag, payload]` for sums.
    Positional,
    /// As `Named`, with non-finite floats as strings (see [`to_string_exact`]).
    Exact,
}

/// Appends a JSON string literal, escaped as serde_json escapes it.
pub fn write_str(out: &mut String, s: &str) {
    // serde_json cannot fail to serialise a str into a String.
    out.push_str(&serde_json::to_string(s).unwrap_or_default());
}

fn write_f64(out: &mut String, f: f64, style: Style) {
    if f.is_finite() {
        out.push_str(ryu::Buffer::new().format_finite(f));
    } else if style == Style::Exact {
        write_non_finite(out, f.is_nan(), f.is_sign_negative(), f.to_bits() == f64::NAN.to_bits(), &f.to_bits());
    } else {
        out.push_str("null");
    }
}

fn write_f32(out: &mut String, f: f32, style: Style) {
    if f.is_finite() {
        let mut buf = ryu::Buffer::new();
        let short = buf.format_finite(f);
        // A reader takes a number as an f64 and rounds it to f32: rounding twice could, in
        // rare cases, miss `f` from its shortest form; the f64 form of `f` never misses.
        if style == Style::Exact && short.parse::<f64>().map(|d| d as f32) != Ok(f) {
            out.push_str(ryu::Buffer::new().format_finite(f as f64));
        } else {
            out.push_str(short);
        }
    } else if style == Style::Exact {
        write_non_finite(out, f.is_nan(), f.is_sign_negative(), f.to_bits() == f32::NAN.to_bits(), &f.to_bits());
    } else {
        out.push_str("null");
    }
}

/// A non-finite float in the export form (see [`to_string_exact`]).
fn write_non_finite(out: &mut String, nan: bool, negative: bool, canonical: bool, bits: &dyn fmt::LowerHex) {
    match (nan, negative, canonical) {
        (true, _, true) => out.push_str("\"NaN\""),
        (true, _, false) => write!(out, "\"NaN:{bits:#x}\"").unwrap_or(()),
        (false, false, _) => out.push_str("\"Infinity\""),
        (false, true, _) => out.push_str("\"-Infinity\""),
    }
}

fn mismatch(ty: &AlgebraicType, v: &AlgebraicValue) -> JsonError {
    JsonError::Mismatch(format!("{v:?} is not a {ty:?}"))
}

fn write_at(
    out: &mut String,
    ts: &Typespace,
    ty: &AlgebraicType,
    v: &AlgebraicValue,
    depth: u32,
    style: Style,
) -> Result<(), JsonError> {
    use AlgebraicType as T;
    use AlgebraicValue as V;
    if depth > MAX_VALUE_DEPTH {
        return Err(JsonError::TooDeep);
    }
    match (ty, v) {
        (T::Ref(r), _) => {
            let ty = ts.types.get(*r as usize).ok_or(JsonError::DanglingRef(*r))?;
            write_at(out, ts, ty, v, depth + 1, style)?
        }
        (T::Bool, V::Bool(b)) => out.push_str(if *b { "true" } else { "false" }),
        (T::I8, V::I8(x)) => write!(out, "{x}").unwrap_or(()),
        (T::U8, V::U8(x)) => write!(out, "{x}").unwrap_or(()),
        (T::I16, V::I16(x)) => write!(out, "{x}").unwrap_or(()),
        (T::U16, V::U16(x)) => write!(out, "{x}").unwrap_or(()),
        (T::I32, V::I32(x)) => write!(out, "{x}").unwrap_or(()),
        (T::U32, V::U32(x)) => write!(out, "{x}").unwrap_or(()),
        (T::I64, V::I64(x)) => write!(out, "{x}").unwrap_or(()),
        (T::U64, V::U64(x)) => write!(out, "{x}").unwrap_or(()),
        (T::I128, V::I128(x)) => write!(out, "{x}").unwrap_or(()),
        (T::U128, V::U128(x)) => write!(out, "{x}").unwrap_or(()),
        (T::I256, V::I256(x)) => write!(out, "\"{:-#x}\"", **x).unwrap_or(()),
        (T::U256, V::U256(x)) => write!(out, "\"{:#x}\"", **x).unwrap_or(()),
        (T::F32, V::F32(x)) => write_f32(out, x.0, style),
        (T::F64, V::F64(x)) => write_f64(out, x.0, style),
        (T::String, V::String(s)) => write_str(out, s),
        (T::Array(elem), V::Array(items)) => write_array(out, ts, elem, items, depth, style)?,
        (T::Product(p), V::Product(items)) => write_product(out, ts, p, items, depth, style)?,
        (T::Sum(s), V::Sum(SumValue { tag, value })) => write_sum(out, ts, (ty, v), s, (*tag, value), depth, style)?,
        _ => return Err(mismatch(ty, v)),
    }
    Ok(())
}

/// An array: `Array(U8)` as one hex string, anything else as a JSON list. Split out of
/// [`write_at`] to keep it short; same output.
fn write_array(
    out: &mut String,
    ts: &Typespace,
    elem: &AlgebraicType,
    items: &[AlgebraicValue],
    depth: u32,
    style: Style,
) -> Result<(), JsonError> {
    use AlgebraicValue as V;
    if *elem == AlgebraicType::U8 {
        out.push('"');
        for item in items.iter() {
            let V::U8(b) = item else { return Err(mismatch(elem, item)) };
            write!(out, "{b:02x}").unwrap_or(());
        }
        out.push('"');
    } else {
        out.push('[');
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            write_at(out, ts, elem, item, depth + 1, style)?;
        }
        out.push(']');
    }
    Ok(())
}

/// A sum value: `{name: value}` for a named variant (unless positional), else `[tag, value]`.
/// `(ty, v)` is the whole sum, for the mismatch error. Split out of [`write_at`].
fn write_sum(
    out: &mut String,
    ts: &Typespace,
    (ty, v): (&AlgebraicType, &AlgebraicValue),
    s: &SumType,
    (tag, value): (u8, &AlgebraicValue),
    depth: u32,
    style: Style,
) -> Result<(), JsonError> {
    let variant = s.variants.get(tag as usize).ok_or_else(|| mismatch(ty, v))?;
    match variant.name.as_ref().filter(|_| style != Style::Positional) {
        Some(name) => {
            out.push('{');
            write_str(out, name);
            out.push(':');
            write_at(out, ts, &variant.ty, value, depth + 1, style)?;
            out.push('}');
        }
        None => {
            write!(out, "[{tag},").unwrap_or(());
            write_at(out, ts, &variant.ty, value, depth + 1, style)?;
            out.push(']');
        }
    }
    Ok(())
}

fn write_product(
    out: &mut String,
    ts: &Typespace,
    p: &ProductType,
    items: &[AlgebraicValue],
    depth: u32,
    style: Style,
) -> Result<(), JsonError> {
    if p.elements.len() != items.len() {
        return Err(JsonError::Mismatch(format!(
            "product has {} elements, its type {}",
            items.len(),
            p.elements.len()
        )));
    }
    // A product is an object only when every element has a name (the unit type is `[]`).
    let named = style != Style::Positional && !p.elements.is_empty() && p.elements.iter().all(|e| e.name.is_some());
    out.push(if named { '{' } else { '[' });
    for (i, (e, item)) in p.elements.iter().zip(items).enumerate() {
        if i > 0 {
            out.push(',');
        }
        if let (true, Some(name)) = (named, &e.name) {
            write_str(out, name);
            out.push(':');
        }
        write_at(out, ts, &e.ty, item, depth + 1, style)?;
    }
    out.push(if named { '}' } else { ']' });
    Ok(())
}

/// Reads a value of type `ty` from SATS-JSON text.
pub fn from_str(ts: &Typespace, ty: &AlgebraicType, json: &str) -> Result<AlgebraicValue, JsonError> {
    let mut de = serde_json::Deserializer::from_str(json);
    let v = TypedSeed::new(ts, ty).deserialize(&mut de).map_err(|e| JsonError::Parse(e.to_string()))?;
    de.end().map_err(|e| JsonError::Parse(e.to_string()))?;
    Ok(v)
}

/// Reads a value of type `ty` from its export form ([`to_string_exact`]): SATS-JSON, and
/// non-finite floats as the strings that form writes.
pub fn from_str_exact(ts: &Typespace, ty: &AlgebraicType, json: &str) -> Result<AlgebraicValue, JsonError> {
    let mut de = serde_json::Deserializer::from_str(json);
    let seed = TypedSeed { exact: true, ..TypedSeed::new(ts, ty) };
    let v = seed.deserialize(&mut de).map_err(|e| JsonError::Parse(e.to_string()))?;
    de.end().map_err(|e| JsonError::Parse(e.to_string()))?;
    Ok(v)
}

/// Reads a reducer's arguments (a product of `params`) from SATS-JSON, with errors in 1.3's form:
/// `{path}: {path}: {message}`, e.g. `.: .: invalid length 1, expected reducer args for transfer
/// with 3 elements at line 1 column 3` or `[0]: [0]: invalid type: string "a", expected u32 …`.
pub fn reducer_args_from_str(
    ts: &Typespace,
    reducer: &str,
    params: &ProductType,
    json: &str,
) -> Result<AlgebraicValue, String> {
    let ty = AlgebraicType::Product(params.clone());
    let expectation = format!("reducer args for {reducer} with {} elements", params.elements.len());
    let mut de = serde_json::Deserializer::from_str(json);
    let mut track = serde_path_to_error::Track::new();
    let seed = TypedSeed { ts, ty: &ty, depth: 0, top_expectation: Some(&expectation), exact: false };
    let result = seed.deserialize(serde_path_to_error::Deserializer::new(&mut de, &mut track));
    // 1.3 prints the path twice: once itself and once inside the error it wraps.
    let v = result.map_err(|e| {
        let path = track.path();
        format!("{path}: {path}: {e}")
    })?;
    de.end().map_err(|e| format!(".: .: {e}"))?;
    Ok(v)
}

/// A serde seed that reads one value of a given algebraic type from any self-describing format.
#[derive(Clone, Copy)]
pub struct TypedSeed<'a> {
    ts: &'a Typespace,
    ty: &'a AlgebraicType,
    depth: u32,
    /// What the outermost product is called in errors ("reducer args for …").
    top_expectation: Option<&'a str>,
    /// Whether non-finite floats may be given as strings (the export form).
    exact: bool,
}

impl<'a> TypedSeed<'a> {
    pub fn new(ts: &'a Typespace, ty: &'a AlgebraicType) -> Self {
        Self { ts, ty, depth: 0, top_expectation: None, exact: false }
    }

    fn child(&self, ty: &'a AlgebraicType) -> Self {
        Self { ts: self.ts, ty, depth: self.depth + 1, top_expectation: None, exact: self.exact }
    }
}

/// Reads a 256-bit integer from a `"0x…"` string, with ethnum's errors as 1.3 reports them.
struct Int256Visitor<T>(fn(&str) -> Result<T, std::num::ParseIntError>);

impl<'de, T> Visitor<'de> for Int256Visitor<T> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a formatted 256-bit integer")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        (self.0)(v).map_err(E::custom)
    }
}

impl<'de> DeserializeSeed<'de> for TypedSeed<'_> {
    type Value = AlgebraicValue;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<AlgebraicValue, D::Error> {
        use AlgebraicType as T;
        use AlgebraicValue as V;
        if self.depth > MAX_VALUE_DEPTH {
            return Err(de::Error::custom("value nested too deeply"));
        }
        let num = |e: String| <D::Error as de::Error>::custom(e);
        Ok(match self.ty {
            T::Ref(r) => {
                let ty = self.ts.types.get(*r as usize).ok_or_else(|| num(format!("dangling type reference {r}")))?;
                return self.child(ty).deserialize(de);
            }
            T::Bool => V::Bool(serde::Deserialize::deserialize(de)?),
            T::I8 => V::I8(serde::Deserialize::deserialize(de)?),
            T::U8 => V::U8(serde::Deserialize::deserialize(de)?),
            T::I16 => V::I16(serde::Deserialize::deserialize(de)?),
            T::U16 => V::U16(serde::Deserialize::deserialize(de)?),
            T::I32 => V::I32(serde::Deserialize::deserialize(de)?),
            T::U32 => V::U32(serde::Deserialize::deserialize(de)?),
            T::I64 => V::I64(serde::Deserialize::deserialize(de)?),
            T::U64 => V::U64(serde::Deserialize::deserialize(de)?),
            T::I128 => V::I128(serde::Deserialize::deserialize(de)?),
            T::U128 => V::U128(serde::Deserialize::deserialize(de)?),
            T::I256 => V::I256(Box::new(de.deserialize_str(Int256Visitor(I256::from_str_hex))?)),
            T::U256 => V::U256(Box::new(de.deserialize_str(Int256Visitor(U256::from_str_hex))?)),
            T::F32 if self.exact => V::F32(F32(de.deserialize_any(ExactFloat(f32_from_text))?)),
            T::F64 if self.exact => V::F64(F64(de.deserialize_any(ExactFloat(f64_from_text))?)),
            T::F32 => V::F32(F32(serde::Deserialize::deserialize(de)?)),
            T::F64 => V::F64(F64(serde::Deserialize::deserialize(de)?)),
            T::String => V::String(String::deserialize_owned(de)?.into()),
            T::Array(elem) if **elem == T::U8 => de.deserialize_any(BytesVisitor)?,
            T::Array(elem) => de.deserialize_seq(ArrayVisitor(self.child(elem)))?,
            T::Product(p) => de.deserialize_any(ProductVisitor { seed: self, ty: p })?,
            T::Sum(s) => de.deserialize_any(SumVisitor { seed: self, ty: s })?,
        })
    }
}

/// A float of the export form: a number, or one of the strings [`to_string_exact`] writes for
/// non-finite values.
struct ExactFloat<T>(fn(&str) -> Option<T>);

fn f64_from_text(s: &str) -> Option<f64> {
    match s {
        "NaN" => Some(f64::NAN),
        "Infinity" => Some(f64::INFINITY),
        "-Infinity" => Some(f64::NEG_INFINITY),
        _ => {
            let bits = u64::from_str_radix(s.strip_prefix("NaN:0x")?, 16).ok()?;
            Some(f64::from_bits(bits)).filter(|f| f.is_nan())
        }
    }
}

fn f32_from_text(s: &str) -> Option<f32> {
    match s {
        "NaN" => Some(f32::NAN),
        "Infinity" => Some(f32::INFINITY),
        "-Infinity" => Some(f32::NEG_INFINITY),
        _ => {
            let bits = u32::from_str_radix(s.strip_prefix("NaN:0x")?, 16).ok()?;
            Some(f32::from_bits(bits)).filter(|f| f.is_nan())
        }
    }
}

/// How a number becomes the float type: `f64` as is, `f32` rounded once from it (as serde
/// reads an `f32`).
trait FromNumber: Sized {
    fn from_f64(f: f64) -> Self;
}
impl FromNumber for f64 {
    fn from_f64(f: f64) -> Self {
        f
    }
}
impl FromNumber for f32 {
    fn from_f64(f: f64) -> Self {
        f as f32
    }
}

impl<'de, T: FromNumber> Visitor<'de> for ExactFloat<T> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a number, \"NaN\", \"Infinity\", \"-Infinity\" or \"NaN:0x<bits>\"")
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<T, E> {
        Ok(T::from_f64(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        Ok(T::from_f64(v as f64))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        Ok(T::from_f64(v as f64))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        (self.0)(v).ok_or_else(|| E::invalid_value(de::Unexpected::Str(v), &self))
    }
}

trait DeserializeOwnedString {
    fn deserialize_owned<'de, D: Deserializer<'de>>(de: D) -> Result<String, D::Error>;
}
impl DeserializeOwnedString for String {
    fn deserialize_owned<'de, D: Deserializer<'de>>(de: D) -> Result<String, D::Error> {
        serde::Deserialize::deserialize(de)
    }
}

struct BytesVisitor;
impl<'de> Visitor<'de> for BytesVisitor {
    type Value = AlgebraicValue;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a byte array or hex string")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<AlgebraicValue, E> {
        let bytes = hex::decode(v).map_err(|_| E::invalid_value(de::Unexpected::Str(v), &self))?;
        Ok(AlgebraicValue::bytes(&bytes))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<AlgebraicValue, A::Error> {
        let mut out = Vec::new();
        while let Some(b) = seq.next_element::<u8>()? {
            out.push(AlgebraicValue::U8(b));
        }
        Ok(AlgebraicValue::Array(out.into()))
    }
}

struct ArrayVisitor<'a>(TypedSeed<'a>);
impl<'de> Visitor<'de> for ArrayVisitor<'_> {
    type Value = AlgebraicValue;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<AlgebraicValue, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(v) = seq.next_element_seed(self.0)? {
            out.push(v);
        }
        Ok(AlgebraicValue::Array(out.into()))
    }
}

struct ProductVisitor<'a> {
    seed: TypedSeed<'a>,
    ty: &'a ProductType,
}

impl<'de> Visitor<'de> for ProductVisitor<'_> {
    type Value = AlgebraicValue;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self.seed.top_expectation {
            Some(e) => f.write_str(e),
            None => write!(f, "a product (object or array) of {} elements", self.ty.elements.len()),
        }
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<AlgebraicValue, A::Error> {
        let n = self.ty.elements.len();
        let mut out = Vec::with_capacity(n);
        for (i, e) in self.ty.elements.iter().enumerate() {
            match seq.next_element_seed(self.seed.child(&e.ty))? {
                Some(v) => out.push(v),
                None => return Err(de::Error::invalid_length(i, &self)),
            }
        }
        if seq.next_element::<de::IgnoredAny>()?.is_some() {
            return Err(de::Error::invalid_length(n + 1, &self));
        }
        Ok(AlgebraicValue::Product(out.into()))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<AlgebraicValue, A::Error> {
        let n = self.ty.elements.len();
        let mut slots: Vec<Option<AlgebraicValue>> = vec![None; n];
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            let i = self
                .ty
                .index_of(&key)
                .or_else(|| key.parse::<usize>().ok().filter(|i| *i < n))
                .ok_or_else(|| de::Error::custom(format!("unknown field `{key}`")))?;
            if slots[i].is_some() {
                return Err(de::Error::custom(format!("duplicate field `{key}`")));
            }
            slots[i] = Some(map.next_value_seed(self.seed.child(&self.ty.elements[i].ty))?);
        }
        let mut out = Vec::with_capacity(n);
        for (slot, e) in slots.into_iter().zip(self.ty.elements.iter()) {
            match slot {
                Some(v) => out.push(v),
                None => {
                    let name = e.name.as_deref().unwrap_or("?");
                    return Err(de::Error::custom(format!("missing field `{name}`")));
                }
            }
        }
        Ok(AlgebraicValue::Product(out.into()))
    }
}

struct SumVisitor<'a> {
    seed: TypedSeed<'a>,
    ty: &'a SumType,
}

impl SumVisitor<'_> {
    fn tag_of<E: de::Error>(&self, key: &str) -> Result<u8, E> {
        if let Some(i) = self.ty.variants.iter().position(|v| v.name.as_deref() == Some(key)) {
            return Ok(i as u8);
        }
        match key.parse::<u8>() {
            Ok(t) if (t as usize) < self.ty.variants.len() => Ok(t),
            _ => Err(E::custom(self.unknown_variant(key))),
        }
    }

    /// 1.3's words for an unknown variant, including the way its list of variants comes out
    /// (`expected , `A`one of `B`, `C`` for three names: its numbering starts from the wrong end).
    fn unknown_variant(&self, key: &str) -> String {
        let names: Vec<String> = {
            let mut anon = 0;
            self.ty
                .variants
                .iter()
                .map(|v| match v.name.as_deref() {
                    Some(n) => n.to_string(),
                    None => {
                        anon += 1;
                        (anon - 1).to_string()
                    }
                })
                .collect()
        };
        if names.is_empty() {
            return format!("unknown variant `{key}`");
        }
        let count = names.len();
        let mut list = String::new();
        for (index, name) in names.iter().enumerate() {
            let part = match (count, index) {
                (1, _) | (2, 1) => format!("`{name}`"),
                (_, 1) => format!("one of `{name}`"),
                _ => format!(", `{name}`"),
            };
            list.push_str(&part);
        }
        format!("unknown variant `{key}`, expected {list}")
    }
}

/// A sum's variant read from a map key: its tag.
struct VariantKey<'v, 'a>(&'v SumVisitor<'a>);

impl<'de> DeserializeSeed<'de> for VariantKey<'_, '_> {
    type Value = u8;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<u8, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for VariantKey<'_, '_> {
    type Value = u8;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a variant name")
    }
    fn visit_str<E: de::Error>(self, key: &str) -> Result<u8, E> {
        self.0.tag_of(key)
    }
}

impl<'de> Visitor<'de> for SumVisitor<'_> {
    type Value = AlgebraicValue;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a sum value: {\"Variant\": payload}")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<AlgebraicValue, A::Error> {
        // The variant is read as the key itself, so an unknown one fails where the key ends and
        // its path names the key, as in 1.3.
        let tag = map
            .next_key_seed(VariantKey(&self))?
            .ok_or_else(|| de::Error::custom("expected map representing sum type to have exactly one field"))?;
        let value = map.next_value_seed(self.seed.child(&self.ty.variants[tag as usize].ty))?;
        if map.next_key::<de::IgnoredAny>()?.is_some() {
            return Err(de::Error::custom("expected map representing sum type to have exactly one field"));
        }
        Ok(AlgebraicValue::Sum(SumValue { tag, value: Box::new(value) }))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<AlgebraicValue, A::Error> {
        const ERR: &str = "expected seq representing sum type to have exactly two fields";
        let tag: u8 = seq.next_element()?.ok_or_else(|| de::Error::custom(ERR))?;
        let variant = self
            .ty
            .variants
            .get(tag as usize)
            .ok_or_else(|| de::Error::custom(format!("unknown variant tag {tag}")))?;
        let value = seq.next_element_seed(self.seed.child(&variant.ty))?.ok_or_else(|| de::Error::custom(ERR))?;
        if seq.next_element::<de::IgnoredAny>()?.is_some() {
            return Err(de::Error::custom(ERR));
        }
        Ok(AlgebraicValue::Sum(SumValue { tag, value: Box::new(value) }))
    }
    fn visit_unit<E: de::Error>(self) -> Result<AlgebraicValue, E> {
        if self.ty.as_option().is_some() {
            Ok(AlgebraicValue::none())
        } else {
            Err(E::invalid_type(de::Unexpected::Unit, &self))
        }
    }
}
