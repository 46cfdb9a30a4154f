//! Validating a 2.x module definition (`RawModuleDef::V10`) into the one [`ModuleDef`].
//!
//! The module gives *source* names; 2.x derives each *canonical* name (what clients and SQL
//! use) from the explicit-names section or, failing that, the case-conversion policy (snake_case
//! unless the module says otherwise). The definition is lowered to V9's shape under canonical
//! names (schedules back on their tables, lifecycle roles back on their reducers), validated by
//! the shared validator with 2.x's rules, and the 2.x-only parts (source-name aliases, visibility,
//! procedures, views, event tables, default values) are attached afterwards.

use std::collections::HashMap;

use convert_case::{Case, Casing};
use epoch_sats::{AlgebraicType, ProductType, ProductTypeElement, Typespace};

use crate::def::{self, DefVersion, ModuleDef, ProcedureDef, ValidationError, ValidationErrors, ViewDef};
use crate::raw::{
    Lifecycle, RawIndexDefV9, RawModuleDefV9, RawReducerDefV9, RawScheduleDefV9, RawTableDefV9, RawTypeDefV9,
    ScopedTypeName,
};
use crate::raw_v10::{
    CaseConversionPolicy, ExplicitNameKind, FunctionVisibility, RawModuleDefV10, RawReducerDefV10, RawTableDefV10,
};

/// Validates a V10 definition with 2.x's rules.
pub fn validate_v10(raw: RawModuleDefV10) -> Result<ModuleDef, ValidationErrors> {
    let mut errors = unsupported_sections(&raw);
    let names = Names::new(&raw);
    let mut typespace = raw.typespace.clone();
    names.convert_typespace(&mut typespace);
    let procedures: Vec<ProcedureDef> = raw
        .procedures
        .iter()
        .map(|p| ProcedureDef {
            name: names.function(&p.source_name),
            source_name: names.alias(&p.source_name, &names.function(&p.source_name)),
            params: names.params(&p.params),
            return_type: p.return_type.clone(),
            visibility: p.visibility,
        })
        .collect();
    let lowered = lower(&raw, &names, typespace, &mut errors);
    let mut def = match def::validate_with(&lowered, DefVersion::V10, &procedures) {
        Ok(def) => def,
        Err(ValidationErrors(mut more)) => {
            errors.append(&mut more);
            return Err(ValidationErrors(errors));
        }
    };
    def.procedures = procedures;
    def.source_typespace = raw.typespace.clone();
    attach_tables(&mut def, &raw, &names, &mut errors);
    attach_reducers(&mut def, &raw, &names, &mut errors);
    def.views = raw
        .views
        .iter()
        .map(|v| ViewDef {
            name: names.function(&v.source_name),
            source_name: names.alias(&v.source_name, &names.function(&v.source_name)),
            index: v.index,
            is_public: v.is_public,
            is_anonymous: v.is_anonymous,
            params: names.params(&v.params),
            return_type: v.return_type.clone(),
        })
        .collect();
    check_function_namespace(&def, &mut errors);
    if !errors.is_empty() {
        return Err(ValidationErrors(errors));
    }
    Ok(def)
}

/// The sections Epoch reads but does not serve yet: refused with a message naming them, so a
/// module never loads with part of its definition silently ignored.
fn unsupported_sections(raw: &RawModuleDefV10) -> Vec<ValidationError> {
    let mut errors = Vec::new();
    let mut refuse = |present: bool, what: &str| {
        if present {
            errors.push(ValidationError::Unsupported { what: what.to_string() });
        }
    };
    refuse(!raw.http_handlers.is_empty() || !raw.http_routes.is_empty(), "HTTP handlers and routes");
    refuse(!raw.submodules.is_empty(), "submodules");
    refuse(!raw.environment.is_empty(), "publish-time environment values");
    refuse(!raw.outboxes.is_empty(), "outboxes");
    refuse(!raw.view_primary_keys.is_empty(), "view primary keys");
    errors
}

/// How source names become canonical names in one module.
struct Names {
    policy: CaseConversionPolicy,
    explicit: HashMap<(ExplicitNameKind, String), String>,
}

impl Names {
    fn new(raw: &RawModuleDefV10) -> Self {
        let explicit =
            raw.explicit_names.iter().map(|e| ((e.kind, e.source_name.clone()), e.canonical_name.clone())).collect();
        Self { policy: raw.case_conversion.unwrap_or(CaseConversionPolicy::SnakeCase), explicit }
    }

    fn convert(&self, name: &str, case: Case) -> String {
        match self.policy {
            CaseConversionPolicy::None => name.to_string(),
            CaseConversionPolicy::SnakeCase => name.to_case(case),
        }
    }

    fn explicit_or(&self, kind: ExplicitNameKind, source: &str) -> String {
        match self.explicit.get(&(kind, source.to_string())) {
            Some(name) => name.clone(),
            None => self.convert(source, Case::Snake),
        }
    }

    /// `source` when it differs from the canonical name (what a definition keeps as its alias).
    fn alias(&self, source: &str, canonical: &str) -> Option<String> {
        (source != canonical).then(|| source.to_string())
    }

    fn table(&self, source: &str) -> String {
        self.explicit_or(ExplicitNameKind::Table, source)
    }

    fn function(&self, source: &str) -> String {
        self.explicit_or(ExplicitNameKind::Function, source)
    }

    /// A parameter list with its names converted.
    fn params(&self, params: &ProductType) -> ProductType {
        let elements = params
            .elements
            .iter()
            .map(|e| ProductTypeElement {
                name: e.name.as_deref().map(|n| self.convert(n, Case::Snake).into()),
                ty: e.ty.clone(),
            })
            .collect::<Vec<_>>();
        ProductType { elements: elements.into() }
    }

    /// Converts field names to snake_case and variant names to camelCase in every type, leaving
    /// the special types (Option, Result, ScheduleAt, Identity, …) as they are.
    fn convert_typespace(&self, typespace: &mut Typespace) {
        if self.policy == CaseConversionPolicy::None {
            return;
        }
        for ty in typespace.types.iter_mut() {
            convert_type(ty);
        }
    }
}

fn convert_type(ty: &mut AlgebraicType) {
    let special_product = matches!(ty, AlgebraicType::Product(p) if p.special_name().is_some() || is_uuid(p));
    if special_product || is_special_sum(ty) {
        return;
    }
    match ty {
        AlgebraicType::Product(p) => {
            let mut elements = p.elements.to_vec();
            for e in &mut elements {
                e.name = e.name.as_deref().map(|n| n.to_case(Case::Snake).into());
                convert_type(&mut e.ty);
            }
            p.elements = elements.into();
        }
        AlgebraicType::Sum(s) => {
            let mut variants = s.variants.to_vec();
            for v in &mut variants {
                v.name = v.name.as_deref().map(|n| n.to_case(Case::Camel).into());
                convert_type(&mut v.ty);
            }
            s.variants = variants.into();
        }
        AlgebraicType::Array(e) => convert_type(e),
        _ => {}
    }
}

/// 2.x's `Uuid` is special too (a product with one `__uuid__` field).
fn is_uuid(p: &ProductType) -> bool {
    matches!(&*p.elements, [e] if e.name.as_deref() == Some("__uuid__"))
}

/// Option (`some`/`none`), Result (`ok`/`err`) and ScheduleAt (`Interval`/`Time`) keep their names.
fn is_special_sum(ty: &AlgebraicType) -> bool {
    let AlgebraicType::Sum(s) = ty else { return false };
    let names: Vec<Option<&str>> = s.variants.iter().map(|v| v.name.as_deref()).collect();
    matches!(
        names.as_slice(),
        [Some("some"), Some("none")] | [Some("ok"), Some("err")] | [Some("Interval"), Some("Time")]
    )
}

/// V10 in V9's shape, under canonical names.
fn lower(
    raw: &RawModuleDefV10,
    names: &Names,
    typespace: Typespace,
    errors: &mut Vec<ValidationError>,
) -> RawModuleDefV9 {
    let tables = raw.tables.iter().map(|t| lower_table(raw, t, names, &typespace, errors)).collect();
    let mut lifecycles: HashMap<&str, Lifecycle> = HashMap::new();
    for (lc, function) in &raw.lifecycle_reducers {
        if !raw.reducers.iter().any(|r| &r.source_name == function) {
            errors.push(ValidationError::LifecycleWithoutReducer { lifecycle: *lc, reducer: function.clone() });
        } else if lifecycles.values().any(|l| l == lc) {
            errors.push(ValidationError::DuplicateLifecycle { lifecycle: *lc });
        } else {
            lifecycles.insert(function, *lc);
        }
    }
    let reducers = raw
        .reducers
        .iter()
        .map(|r| RawReducerDefV9 {
            name: names.function(&r.source_name),
            params: names.params(&r.params),
            lifecycle: lifecycles.get(r.source_name.as_str()).copied(),
        })
        .collect();
    let types = raw
        .types
        .iter()
        .map(|t| RawTypeDefV9 {
            name: ScopedTypeName { scope: t.name.scope.clone(), name: names.convert(&t.name.name, Case::Pascal) },
            ty: t.ty,
            custom_ordering: t.custom_ordering,
        })
        .collect();
    RawModuleDefV9 { typespace, tables, reducers, types, row_level_security: raw.row_level_security.clone() }
}

/// One table under its canonical name; generated index, constraint and sequence names are
/// derived again from the canonical names (as 2.x does), unless an index has an explicit name.
fn lower_table(
    raw: &RawModuleDefV10,
    t: &RawTableDefV10,
    names: &Names,
    typespace: &Typespace,
    errors: &mut Vec<ValidationError>,
) -> RawTableDefV9 {
    let name = names.table(&t.source_name);
    let row_type = match typespace.types.get(t.product_type_ref as usize) {
        Some(AlgebraicType::Product(p)) => p.clone(),
        _ => ProductType { elements: Vec::new().into() },
    };
    let indexes = t
        .indexes
        .iter()
        .map(|i| {
            if i.name.is_none() {
                errors.push(ValidationError::IndexWithoutSourceName { table: t.source_name.clone() });
            }
            let name = index_name(names, &name, &row_type, i);
            RawIndexDefV9 { name: Some(name), accessor_name: i.accessor_name.clone(), algorithm: i.algorithm.clone() }
        })
        .collect();
    let constraints =
        t.constraints.iter().map(|c| crate::raw::RawConstraintDefV9 { name: None, ..c.clone() }).collect();
    let sequences = t.sequences.iter().map(|s| crate::raw::RawSequenceDefV9 { name: None, ..s.clone() }).collect();
    let mut schedules = raw.schedules.iter().filter(|s| s.table_name == t.source_name);
    let schedule = schedules.next().map(|s| RawScheduleDefV9 {
        name: None,
        reducer_name: names.function(&s.function_name),
        scheduled_at_column: s.schedule_at_col,
    });
    if schedules.next().is_some() {
        errors.push(ValidationError::DuplicateSchedule { table: name.clone() });
    }
    RawTableDefV9 {
        name,
        product_type_ref: t.product_type_ref,
        primary_key: t.primary_key.clone(),
        indexes,
        constraints,
        sequences,
        schedule,
        table_type: t.table_type,
        table_access: t.table_access,
    }
}

/// Attaches to the validated tables what V9's shape cannot hold: the source names (aliases the
/// module's code uses), `is_event`, and default values checked against their column's type.
fn attach_tables(def: &mut ModuleDef, raw: &RawModuleDefV10, names: &Names, errors: &mut Vec<ValidationError>) {
    for s in &raw.schedules {
        if !raw.tables.iter().any(|t| t.source_name == s.table_name) {
            errors.push(ValidationError::ScheduleTableNotFound { table: s.table_name.clone() });
        }
    }
    for rt in &raw.tables {
        let canonical = names.table(&rt.source_name);
        let typespace = def.typespace.clone();
        let Some(table) = def.tables.iter_mut().find(|t| t.name == canonical) else { continue };
        table.source_name = (rt.source_name != canonical).then(|| rt.source_name.clone());
        table.is_event = rt.is_event;
        for raw_index in &rt.indexes {
            let name = index_name(names, &table.name, &table.row_type, raw_index);
            if let Some(i) = table.indexes.iter_mut().find(|i| i.name == name) {
                i.source_name = raw_index.name.clone().filter(|n| *n != i.name);
            }
        }
        for (col, value) in &rt.default_values {
            let column = table.row_type.elements.get(*col as usize);
            match column {
                None => errors.push(ValidationError::ColumnNotFound {
                    table: table.name.clone(),
                    def: "a default value".into(),
                    column: *col,
                }),
                Some(c) if epoch_sats::bsatn::decode(&typespace, &c.ty, value).is_err() => {
                    errors.push(ValidationError::BadDefaultValue {
                        table: table.name.clone(),
                        column: c.name.as_deref().unwrap_or("?").to_string(),
                    })
                }
                Some(_) => table.default_values.push((*col, value.clone())),
            }
        }
    }
}

/// The canonical name of one of a table's indexes: its explicit name, else the name 2.x derives
/// from the canonical table and column names.
fn index_name(names: &Names, table: &str, row_type: &ProductType, index: &RawIndexDefV9) -> String {
    let explicit = index.name.as_ref().and_then(|n| names.explicit.get(&(ExplicitNameKind::Index, n.clone())));
    explicit.cloned().unwrap_or_else(|| def::generate_index_name(table, row_type, &index.algorithm))
}

/// Attaches reducer visibility (scheduled and lifecycle reducers are forced private, as in 2.x)
/// and checks 2.x's return-type rule.
fn attach_reducers(def: &mut ModuleDef, raw: &RawModuleDefV10, names: &Names, errors: &mut Vec<ValidationError>) {
    let scheduled: Vec<String> = raw.schedules.iter().map(|s| names.function(&s.function_name)).collect();
    for (r, rr) in def.reducers.iter_mut().zip(&raw.reducers) {
        check_reducer_return(rr, errors);
        r.source_name = names.alias(&rr.source_name, &r.name);
        r.source_params = (rr.params != r.params).then(|| rr.params.clone());
        let forced = r.lifecycle.is_some() || scheduled.contains(&r.name);
        r.visibility = if forced { FunctionVisibility::Private } else { rr.visibility };
    }
    for p in &mut def.procedures {
        if scheduled.contains(&p.name) {
            p.visibility = FunctionVisibility::Private;
        }
    }
}

/// A 2.x reducer returns `()` or fails with a `String`.
fn check_reducer_return(r: &RawReducerDefV10, errors: &mut Vec<ValidationError>) {
    if r.ok_return_type != AlgebraicType::unit() || r.err_return_type != AlgebraicType::String {
        errors.push(ValidationError::InvalidReducerReturnType { reducer: r.source_name.clone() });
    }
}

/// Reducers, procedures and views share one namespace; views also share the tables'.
fn check_function_namespace(def: &ModuleDef, errors: &mut Vec<ValidationError>) {
    // Duplicate reducers are reported by the shared validator already.
    let mut seen: std::collections::HashSet<&String> = def.reducers.iter().map(|r| &r.name).collect();
    for name in def.procedures.iter().map(|p| &p.name).chain(def.views.iter().map(|v| &v.name)) {
        if !def::is_identifier(name) {
            errors.push(ValidationError::InvalidIdentifier { name: name.clone() });
        }
        if !seen.insert(name) {
            errors.push(ValidationError::DuplicateFunctionName { name: name.clone() });
        }
    }
    for v in &def.views {
        if def.table(&v.name).is_some() {
            errors.push(ValidationError::DuplicateName { name: v.name.clone() });
        }
    }
}
