//! The `/sql` route's JSON: one statement's `{schema, rows, total_duration_micros, stats}`, as
//! SpacetimeDB 1.3 writes it.

use epoch_query::{DmlStats, QueryResult};
use epoch_sats::{AlgebraicType, ProductType, ProductTypeElement};

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
