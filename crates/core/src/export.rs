//! Tables to and from files by hand (`epoch export` / `epoch import`): JSON lines and CSV,
//! exact for every SATS value.
//!
//! A JSON line is one row in the export form of SATS-JSON ([`json::to_string_exact`]:
//! SATS-JSON with non-finite floats as strings). A CSV file has a header naming the columns,
//! then one record per row; each cell is its value's export form, written bare when that form
//! is a JSON string: a `String`, a 256-bit integer (`0x…`), a byte array (hex), a non-finite
//! float (`NaN`, `Infinity`, `-Infinity`, `NaN:0x<bits>`). Integers of any width are written
//! in full, so nothing is rounded on the way out or back.

use epoch_sats::json::{self, JsonError};
use epoch_sats::{AlgebraicType, AlgebraicValue, ProductType, Typespace};

/// The column's type with references followed (a bounded number of times).
fn resolved<'a>(ts: &'a Typespace, mut ty: &'a AlgebraicType) -> &'a AlgebraicType {
    for _ in 0..=ts.types.len() {
        match ty {
            AlgebraicType::Ref(r) => match ts.types.get(*r as usize) {
                Some(t) => ty = t,
                None => return ty,
            },
            _ => return ty,
        }
    }
    ty
}

/// Whether every value of `ty` is written as a JSON string (so its cell holds the string).
fn always_string(ty: &AlgebraicType) -> bool {
    match ty {
        AlgebraicType::String | AlgebraicType::I256 | AlgebraicType::U256 => true,
        AlgebraicType::Array(e) => **e == AlgebraicType::U8,
        _ => false,
    }
}

/// One row as a JSON line (without the line break).
pub fn jsonl_row(ts: &Typespace, row_type: &ProductType, row: &AlgebraicValue) -> Result<String, JsonError> {
    json::to_string_exact(ts, &AlgebraicType::Product(row_type.clone()), row)
}

/// One row from a JSON line as [`jsonl_row`] writes it (any SATS-JSON of the row is taken).
pub fn read_jsonl_row(ts: &Typespace, row_type: &ProductType, line: &str) -> Result<AlgebraicValue, JsonError> {
    json::from_str_exact(ts, &AlgebraicType::Product(row_type.clone()), line)
}

/// The CSV cell of value `v` of a column of type `ty`.
pub fn csv_cell(ts: &Typespace, ty: &AlgebraicType, v: &AlgebraicValue) -> Result<String, JsonError> {
    let text = json::to_string_exact(ts, ty, v)?;
    let bare = matches!(resolved(ts, ty), AlgebraicType::F32 | AlgebraicType::F64) || always_string(resolved(ts, ty));
    if bare && text.starts_with('"') {
        return serde_json::from_str::<String>(&text).map_err(|e| JsonError::Parse(e.to_string()));
    }
    Ok(text)
}

/// The value of CSV cell `cell` in a column of type `ty`, as [`csv_cell`] writes it.
pub fn read_csv_cell(ts: &Typespace, ty: &AlgebraicType, cell: &str) -> Result<AlgebraicValue, JsonError> {
    let quote = match resolved(ts, ty) {
        AlgebraicType::F32 | AlgebraicType::F64 => {
            matches!(cell, "NaN" | "Infinity" | "-Infinity") || cell.starts_with("NaN:")
        }
        t => always_string(t),
    };
    if quote {
        let mut text = String::with_capacity(cell.len() + 2);
        json::write_str(&mut text, cell);
        return json::from_str_exact(ts, ty, &text);
    }
    json::from_str_exact(ts, ty, cell)
}

/// The names of a row type's columns (an unnamed one by its position).
pub fn column_names(row_type: &ProductType) -> Vec<String> {
    row_type.elements.iter().enumerate().map(|(i, e)| e.name.as_deref().map_or(i.to_string(), str::to_string)).collect()
}

/// Rows as CSV: the header, then one record per row.
pub fn write_csv<'a>(
    ts: &Typespace,
    row_type: &ProductType,
    rows: impl IntoIterator<Item = &'a AlgebraicValue>,
) -> Result<String, String> {
    let mut out = csv::WriterBuilder::new().terminator(csv::Terminator::Any(b'\n')).from_writer(Vec::new());
    out.write_record(column_names(row_type)).map_err(|e| e.to_string())?;
    for row in rows {
        let AlgebraicValue::Product(values) = row else { return Err(format!("{row:?} is not a row")) };
        let mut cells = Vec::with_capacity(values.len());
        for (e, v) in row_type.elements.iter().zip(values.iter()) {
            cells.push(csv_cell(ts, &e.ty, v).map_err(|e| e.to_string())?);
        }
        out.write_record(&cells).map_err(|e| e.to_string())?;
    }
    let bytes = out.into_inner().map_err(|e| e.to_string())?;
    String::from_utf8(bytes).map_err(|e| e.to_string())
}

/// Rows from CSV as [`write_csv`] writes it: a header naming every column of table `table`
/// once (in any order), then one record per row. Returns each row with its line in the file.
/// A missing, unknown or repeated column, or a bad cell, is an error naming it (and the line).
pub fn read_csv(
    ts: &Typespace,
    table: &str,
    row_type: &ProductType,
    text: &str,
) -> Result<Vec<(u64, AlgebraicValue)>, String> {
    let columns = column_names(row_type);
    let mut reader = csv::ReaderBuilder::new().has_headers(true).from_reader(text.as_bytes());
    let header = reader.headers().map_err(|e| format!("the CSV header: {e}"))?.clone();
    let mut seen = std::collections::HashSet::new();
    if let Some(twice) = header.iter().find(|h| !seen.insert(*h)) {
        return Err(format!("the CSV header names column {twice:?} twice; nothing was imported"));
    }
    if let Some(extra) = header.iter().find(|h| !columns.iter().any(|c| c == h)) {
        return Err(format!("table {table:?} has no column {extra:?}; nothing was imported"));
    }
    // For each column of the table, its place in the file.
    let mut places = Vec::with_capacity(columns.len());
    for column in &columns {
        let place = header.iter().position(|h| h == column).ok_or_else(|| {
            format!("the CSV header has no column {column:?} of table {table:?}; nothing was imported")
        })?;
        places.push(place);
    }
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| format!("{e}; nothing was imported"))?;
        let line = record.position().map_or(0, |p| p.line());
        let mut values = Vec::with_capacity(columns.len());
        for ((column, e), place) in columns.iter().zip(row_type.elements.iter()).zip(&places) {
            let cell = record.get(*place).unwrap_or_default();
            values.push(read_csv_cell(ts, &e.ty, cell).map_err(|err| {
                format!(
                    "line {line}, column {column:?}: {cell:?} is not a value of its type ({err}); nothing was imported"
                )
            })?);
        }
        rows.push((line, AlgebraicValue::Product(values.into())));
    }
    Ok(rows)
}
