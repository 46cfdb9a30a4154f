//! The `/schema?version=9` JSON: the validated definition written back as a `RawModuleDefV9`
//! in SATS-JSON, with every derived name filled in and definitions sorted, as 1.3 answers it.

use epoch_sats::{AlgebraicType, ProductType, Typespace};
use serde_json::{json, Value};

use crate::def::{IndexAlgorithm, IndexDef, ModuleDef, TableDef};
use crate::raw::{Lifecycle, TableAccess, TableType};

pub(crate) fn unit() -> Value {
    json!([])
}

pub(crate) fn option<T>(v: Option<T>, f: impl FnOnce(T) -> Value) -> Value {
    match v {
        Some(x) => json!({ "some": f(x) }),
        None => json!({ "none": unit() }),
    }
}

pub(crate) fn opt_str(s: Option<&str>) -> Value {
    option(s, |s| json!(s))
}

/// An `AlgebraicType` in its own SATS-JSON form, e.g. `{"U32": []}` or `{"Ref": 3}`.
pub fn algebraic_type(ty: &AlgebraicType) -> Value {
    use AlgebraicType as T;
    let simple = |name: &str| json!({ name: unit() });
    match ty {
        T::Ref(r) => json!({ "Ref": r }),
        T::Sum(s) => json!({ "Sum": { "variants": s.variants.iter().map(|v| json!({
            "name": opt_str(v.name.as_deref()),
            "algebraic_type": algebraic_type(&v.ty),
        })).collect::<Vec<_>>() } }),
        T::Product(p) => json!({ "Product": product_type(p) }),
        T::Array(e) => json!({ "Array": algebraic_type(e) }),
        T::String => simple("String"),
        T::Bool => simple("Bool"),
        T::I8 => simple("I8"),
        T::U8 => simple("U8"),
        T::I16 => simple("I16"),
        T::U16 => simple("U16"),
        T::I32 => simple("I32"),
        T::U32 => simple("U32"),
        T::I64 => simple("I64"),
        T::U64 => simple("U64"),
        T::I128 => simple("I128"),
        T::U128 => simple("U128"),
        T::I256 => simple("I256"),
        T::U256 => simple("U256"),
        T::F32 => simple("F32"),
        T::F64 => simple("F64"),
    }
}

/// A `ProductType` as `{"elements": [...]}`.
pub fn product_type(p: &ProductType) -> Value {
    json!({ "elements": p.elements.iter().map(|e| json!({
        "name": opt_str(e.name.as_deref()),
        "algebraic_type": algebraic_type(&e.ty),
    })).collect::<Vec<_>>() })
}

pub(crate) fn typespace(ts: &Typespace) -> Value {
    json!({ "types": ts.types.iter().map(algebraic_type).collect::<Vec<_>>() })
}

pub(crate) fn i128_json(v: i128) -> Value {
    // serde_json numbers hold i128 only through text; 1.3 writes 128-bit integers as numbers.
    serde_json::from_str(&v.to_string()).unwrap_or(Value::Null)
}

/// A table's indexes, constraints and sequences, the same in V9 and V10 but for the key that
/// holds each one's name (`name` in V9, `source_name` in V10) and an index's name.
pub(crate) fn table_parts(t: &TableDef, name_key: &str, index_name: impl Fn(&IndexDef) -> String) -> [Value; 3] {
    let indexes = t.indexes.iter().map(|i| {
        json!({
            name_key: { "some": index_name(i) },
            "accessor_name": opt_str(i.accessor_name.as_deref()),
            "algorithm": match &i.algorithm {
                IndexAlgorithm::BTree(cols) => json!({ "BTree": cols }),
                IndexAlgorithm::Hash(cols) => json!({ "Hash": cols }),
                IndexAlgorithm::Direct(col) => json!({ "Direct": col }),
            },
        })
    });
    let constraints = t.constraints.iter().map(|c| {
        json!({
            name_key: { "some": c.name },
            "data": { "Unique": { "columns": c.unique_columns } },
        })
    });
    let sequences = t.sequences.iter().map(|s| {
        json!({
            name_key: { "some": s.name },
            "column": s.column,
            "start": option(s.start, i128_json),
            "min_value": option(s.min_value, i128_json),
            "max_value": option(s.max_value, i128_json),
            "increment": i128_json(s.increment),
        })
    });
    [Value::Array(indexes.collect()), Value::Array(constraints.collect()), Value::Array(sequences.collect())]
}

pub(crate) fn table_type(t: TableType) -> Value {
    match t {
        TableType::System => json!({"System": unit()}),
        TableType::User => json!({"User": unit()}),
    }
}

pub(crate) fn table_access(a: TableAccess) -> Value {
    match a {
        TableAccess::Public => json!({"Public": unit()}),
        TableAccess::Private => json!({"Private": unit()}),
    }
}

fn table(t: &TableDef) -> Value {
    let [indexes, constraints, sequences] = table_parts(t, "name", |i| i.name.clone());
    json!({
        "name": t.name,
        "product_type_ref": t.product_type_ref,
        "primary_key": t.primary_key.into_iter().collect::<Vec<_>>(),
        "indexes": indexes,
        "constraints": constraints,
        "sequences": sequences,
        "schedule": option(t.schedule.as_ref(), |s| json!({
            "name": { "some": s.name },
            "reducer_name": s.reducer_name,
            "scheduled_at_column": s.at_column,
        })),
        "table_type": table_type(t.table_type),
        "table_access": table_access(t.table_access),
    })
}

/// The whole `/schema?version=9` document.
pub fn schema_v9(def: &ModuleDef) -> Value {
    json!({
        "typespace": typespace(&def.typespace),
        "tables": def.tables.iter().map(table).collect::<Vec<_>>(),
        "reducers": def.reducers.iter().map(|r| json!({
            "name": r.name,
            "params": product_type(&r.params),
            "lifecycle": option(r.lifecycle, |l| match l {
                Lifecycle::Init => json!({"Init": unit()}),
                Lifecycle::OnConnect => json!({"OnConnect": unit()}),
                Lifecycle::OnDisconnect => json!({"OnDisconnect": unit()}),
            }),
        })).collect::<Vec<_>>(),
        "types": def.types.iter().map(|t| json!({
            "name": { "scope": t.name.scope, "name": t.name.name },
            "ty": t.ty,
            "custom_ordering": t.custom_ordering,
        })).collect::<Vec<_>>(),
        "misc_exports": [],
        "row_level_security": def.row_level_security.iter().map(|sql| json!({ "sql": sql })).collect::<Vec<_>>(),
    })
}
