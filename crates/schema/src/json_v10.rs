//! The `/schema?version=10` JSON: the validated definition written back as a
//! `RawModuleDefV10` in SATS-JSON, sections in the order 2.x writes them (typespace, types,
//! tables, reducers, procedures, views, schedules, lifecycle reducers, row-level security,
//! then the explicit names that map every source name to its canonical one).

use serde_json::{json, Value};

use crate::def::{ModuleDef, TableDef};
use crate::json::{algebraic_type, product_type, table_access, table_parts, table_type, typespace, unit};
use crate::raw::Lifecycle;
use crate::raw_v10::FunctionVisibility;

fn visibility(v: FunctionVisibility) -> Value {
    match v {
        FunctionVisibility::Private => json!({ "Private": unit() }),
        FunctionVisibility::ClientCallable => json!({ "ClientCallable": unit() }),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn source<'a>(source: &'a Option<String>, name: &'a str) -> &'a str {
    source.as_deref().unwrap_or(name)
}

fn table(t: &TableDef) -> Value {
    let index_name = |i: &crate::def::IndexDef| source(&i.source_name, &i.name).to_string();
    let [indexes, constraints, sequences] = table_parts(t, "source_name", index_name);
    json!({
        "source_name": source(&t.source_name, &t.name),
        "product_type_ref": t.product_type_ref,
        "primary_key": t.primary_key.into_iter().collect::<Vec<_>>(),
        "indexes": indexes,
        "constraints": constraints,
        "sequences": sequences,
        "table_type": table_type(t.table_type),
        "table_access": table_access(t.table_access),
        "default_values": t.default_values.iter().map(|(col, value)| json!({ "col_id": col, "value": hex(value) })).collect::<Vec<_>>(),
        "is_event": t.is_event,
    })
}

fn functions(def: &ModuleDef) -> Vec<Value> {
    let mut sections = Vec::new();
    let reducers: Vec<Value> = def
        .reducers
        .iter()
        .map(|r| {
            json!({
                "source_name": source(&r.source_name, &r.name),
                "params": product_type(r.source_params.as_ref().unwrap_or(&r.params)),
                "visibility": visibility(r.visibility),
                "ok_return_type": algebraic_type(&epoch_sats::AlgebraicType::unit()),
                "err_return_type": algebraic_type(&epoch_sats::AlgebraicType::String),
            })
        })
        .collect();
    sections.push(json!({ "Reducers": reducers }));
    if !def.procedures.is_empty() {
        let procedures: Vec<Value> = def
            .procedures
            .iter()
            .map(|p| {
                json!({
                    "source_name": source(&p.source_name, &p.name),
                    "params": product_type(&p.params),
                    "return_type": algebraic_type(&p.return_type),
                    "visibility": visibility(p.visibility),
                })
            })
            .collect();
        sections.push(json!({ "Procedures": procedures }));
    }
    if !def.views.is_empty() {
        let views: Vec<Value> = def
            .views
            .iter()
            .map(|v| {
                json!({
                    "source_name": source(&v.source_name, &v.name),
                    "index": v.index,
                    "is_public": v.is_public,
                    "is_anonymous": v.is_anonymous,
                    "params": product_type(&v.params),
                    "return_type": algebraic_type(&v.return_type),
                })
            })
            .collect();
        sections.push(json!({ "Views": views }));
    }
    sections
}

fn schedules_and_lifecycles(def: &ModuleDef) -> Vec<Value> {
    let mut sections = Vec::new();
    let schedules: Vec<Value> = def
        .tables
        .iter()
        .filter_map(|t| t.schedule.as_ref().map(|s| (t, s)))
        .map(|(t, s)| {
            json!({
                "source_name": { "some": s.name },
                "table_name": t.name,
                "schedule_at_col": s.at_column,
                "function_name": s.reducer_name,
            })
        })
        .collect();
    if !schedules.is_empty() {
        sections.push(json!({ "Schedules": schedules }));
    }
    let lifecycles: Vec<Value> = def
        .reducers
        .iter()
        .filter_map(|r| r.lifecycle.map(|l| (r, l)))
        .map(|(r, l)| {
            let spec = match l {
                Lifecycle::Init => "Init",
                Lifecycle::OnConnect => "OnConnect",
                Lifecycle::OnDisconnect => "OnDisconnect",
            };
            json!({ "lifecycle_spec": { spec: unit() }, "function_name": r.name })
        })
        .collect();
    if !lifecycles.is_empty() {
        sections.push(json!({ "LifeCycleReducers": lifecycles }));
    }
    if !def.row_level_security.is_empty() {
        let rls: Vec<Value> = def.row_level_security.iter().map(|sql| json!({ "sql": sql })).collect();
        sections.push(json!({ "RowLevelSecurity": rls }));
    }
    sections
}

/// Every source name with its canonical name: tables, then reducers, procedures and views.
fn explicit_names(def: &ModuleDef) -> Value {
    let entry = |kind: &str, source: &str, canonical: &str| json!({ kind: { "source_name": source, "canonical_name": canonical } });
    let mut entries: Vec<Value> =
        def.tables.iter().map(|t| entry("Table", source(&t.source_name, &t.name), &t.name)).collect();
    entries.extend(def.reducers.iter().map(|r| entry("Function", source(&r.source_name, &r.name), &r.name)));
    entries.extend(def.procedures.iter().map(|p| entry("Function", source(&p.source_name, &p.name), &p.name)));
    entries.extend(def.views.iter().map(|v| entry("Function", source(&v.source_name, &v.name), &v.name)));
    json!({ "ExplicitNames": { "entries": entries } })
}

/// The whole `/schema?version=10` document.
pub fn schema_v10(def: &ModuleDef) -> Value {
    let mut sections = vec![json!({ "Typespace": typespace(&def.typespace) })];
    if !def.types.is_empty() {
        let types: Vec<Value> = def
            .types
            .iter()
            .map(|t| {
                json!({
                    "source_name": { "scope": t.name.scope, "source_name": t.name.name },
                    "ty": t.ty,
                    "custom_ordering": t.custom_ordering,
                })
            })
            .collect();
        sections.push(json!({ "Types": types }));
    }
    if !def.tables.is_empty() {
        sections.push(json!({ "Tables": def.tables.iter().map(table).collect::<Vec<_>>() }));
    }
    sections.extend(functions(def));
    sections.extend(schedules_and_lifecycles(def));
    sections.push(explicit_names(def));
    json!({ "sections": sections })
}
