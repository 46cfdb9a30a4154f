//! Automatic migrations on publish, decided as SpacetimeDB 1.3 decides them: a module update
//! may add tables, add and remove indexes, remove unique constraints, add and remove sequences,
//! change a table's access, and change reducers and row-level security freely; it may not
//! remove a table, change a table's columns (beyond appending variants to an enum column), add
//! or change a unique constraint, or change a table's type. The plan's steps are what the module
//! log reports, in 1.3's order (removals first) and words.

use epoch_sats::{AlgebraicType, ProductType, Typespace};
use epoch_schema::{ModuleDef, TableDef};

/// One change a module update makes, in 1.3's order: every removal before every addition.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Step {
    RemoveIndex {
        table: String,
        index: String,
    },
    RemoveConstraint {
        table: String,
        constraint: String,
    },
    RemoveSequence {
        table: String,
        sequence: String,
    },
    RemoveSchedule {
        table: String,
    },
    /// A view the new module lacks, or whose shape changed (2.x modules only): every client
    /// is disconnected, as 2.x does.
    RemoveView(String),
    RemoveRowLevelSecurity(String),
    /// A table the new module lacks (2.x modules only): applied when it holds no row; its id
    /// is never given again.
    RemoveTable(String),
    ChangeColumns {
        table: String,
    },
    /// Columns added at the end of a table, each with a default value (2.x modules only);
    /// every client is disconnected, as 2.x does, since their row types changed.
    AddColumns {
        table: String,
        columns: Vec<String>,
    },
    AddTable(String),
    AddIndex {
        table: String,
        index: String,
    },
    /// A unique constraint on a table that has rows (2.x modules only): applied when no two
    /// rows share its columns' values.
    AddConstraint {
        table: String,
        constraint: String,
    },
    AddSequence {
        table: String,
        sequence: String,
        column: u16,
        min: i128,
        max: i128,
    },
    AddSchedule {
        table: String,
    },
    /// A view new in the module, or whose shape changed (after its `RemoveView`).
    AddView(String),
    AddRowLevelSecurity(String),
    ChangeAccess {
        table: String,
    },
    /// Another column, or none, is the primary key (2.x modules only): a change of the schema
    /// alone; the unique index it needs comes with its own steps.
    ChangePrimaryKey {
        table: String,
    },
}

impl Step {
    /// Whether the step changes what clients hold so they must reconnect (2.x disconnects
    /// everyone): columns added to a table, or a table or a view gone or reshaped.
    pub fn reshapes_rows(&self) -> bool {
        matches!(self, Step::AddColumns { .. } | Step::RemoveTable(_) | Step::RemoveView(_))
    }

    /// The module log's line for this step, as 1.3 writes it (access changes write none).
    pub fn log_line(&self) -> Option<String> {
        Some(match self {
            Step::RemoveIndex { table, index } => format!("Dropping index `{index}` on table `{table}`"),
            Step::RemoveConstraint { table, constraint } => {
                format!("Dropping constraint `{constraint}` on table `{table}`")
            }
            Step::RemoveSequence { table, sequence } => format!("Dropping sequence `{sequence}` from table `{table}`"),
            Step::RemoveSchedule { .. } | Step::AddSchedule { .. } | Step::ChangeAccess { .. } => return None,
            Step::RemoveView(_) | Step::AddView(_) => return None,
            Step::RemoveRowLevelSecurity(sql) => format!("Removing-row level security `{sql}`"),
            Step::ChangeColumns { table } => format!("Changing columns of table `{table}`"),
            Step::AddColumns { table, columns } => {
                format!("Adding columns {} to table `{table}`", columns.join(", "))
            }
            Step::AddTable(table) => format!("Creating table `{table}`"),
            Step::RemoveTable(table) => format!("Dropping table `{table}`"),
            Step::AddIndex { table, index } => format!("Creating index `{index}` on table `{table}`"),
            Step::AddConstraint { table, constraint } => {
                format!("Adding constraint `{constraint}` on table `{table}`")
            }
            Step::ChangePrimaryKey { table } => format!("Changing primary key for table `{table}`"),
            Step::AddSequence { table, sequence, .. } => format!("Adding sequence `{sequence}` to table `{table}`"),
            Step::AddRowLevelSecurity(sql) => format!("Adding row-level security `{sql}`"),
        })
    }
}

/// The steps of an automatic migration from `old` to `new`, or every reason it is refused
/// (in 1.3's words, tables first, then indexes, sequences and constraints).
pub fn plan(old: &ModuleDef, new: &ModuleDef) -> Result<Vec<Step>, Vec<String>> {
    let mut steps = Vec::new();
    let mut errors = Vec::new();
    for t in &old.tables {
        match new.table(&t.name) {
            None if new.version == epoch_schema::DefVersion::V10 => steps.push(Step::RemoveTable(t.name.clone())),
            None => errors.push(format!("Removing the table {} requires a manual migration", t.name)),
            Some(n) => table_changes(old, new, t, n, &mut steps, &mut errors),
        }
    }
    for n in new.tables.iter().filter(|n| old.table(&n.name).is_none()) {
        steps.push(Step::AddTable(n.name.clone()));
    }
    view_changes(old, new, &mut steps);
    // 1.3 replaces every filter on every update.
    steps.extend(old.row_level_security.iter().cloned().map(Step::RemoveRowLevelSecurity));
    steps.extend(new.row_level_security.iter().cloned().map(Step::AddRowLevelSecurity));
    if !errors.is_empty() {
        return Err(errors);
    }
    steps.sort();
    Ok(steps)
}

/// The views removed, added, or changed in shape (whether anonymous, the parameters or the
/// columns, by name, position and type): removed and added again, as 2.x plans it. A view that
/// kept its shape needs no step (its subscriptions end with the update, as every one does).
fn view_changes(old: &ModuleDef, new: &ModuleDef, steps: &mut Vec<Step>) {
    let shape = |def: &ModuleDef, v: &epoch_schema::ViewDef| {
        let columns = epoch_host::view::view_row_type(&def.typespace, v).map(|p| {
            let resolved = p.elements.iter().map(|e| (e.name.clone(), resolve(&def.typespace, &e.ty, 0)));
            resolved.collect::<Vec<_>>()
        });
        let params: Vec<_> =
            v.params.elements.iter().map(|e| (e.name.clone(), resolve(&def.typespace, &e.ty, 0))).collect();
        (v.is_anonymous, params, columns)
    };
    for v in &old.views {
        match new.views.iter().find(|n| n.name == v.name) {
            None => steps.push(Step::RemoveView(v.name.clone())),
            Some(n) if shape(old, v) != shape(new, n) => {
                steps.push(Step::RemoveView(v.name.clone()));
                steps.push(Step::AddView(v.name.clone()));
            }
            Some(_) => {}
        }
    }
    for n in new.views.iter().filter(|n| !old.views.iter().any(|v| v.name == n.name)) {
        steps.push(Step::AddView(n.name.clone()));
    }
}

fn table_changes(
    old_def: &ModuleDef,
    new_def: &ModuleDef,
    old: &TableDef,
    new: &TableDef,
    steps: &mut Vec<Step>,
    errors: &mut Vec<String>,
) {
    let table = &old.name;
    if old.table_type != new.table_type {
        errors.push(format!(
            "Changing the table type of table {table} from {:?} to {:?} requires a manual migration",
            old.table_type, new.table_type
        ));
    }
    let added = added_columns(new_def, old, new);
    let kept = ProductType { elements: new.row_type.elements[..new.row_type.elements.len() - added.len()].into() };
    match columns_change(&old_def.typespace, &old.row_type, &new_def.typespace, &kept, table) {
        Ok(true) => steps.push(Step::ChangeColumns { table: table.clone() }),
        Ok(false) => {}
        Err(e) => errors.extend(e),
    }
    if !added.is_empty() {
        steps.push(Step::AddColumns { table: table.clone(), columns: added });
    }
    if old.table_access != new.table_access {
        steps.push(Step::ChangeAccess { table: table.clone() });
    }
    index_changes(old, new, steps, errors);
    for s in &old.sequences {
        if !new.sequences.iter().any(|n| n == s) {
            steps.push(Step::RemoveSequence { table: table.clone(), sequence: s.name.clone() });
        }
    }
    for n in new.sequences.iter().filter(|n| !old.sequences.contains(n)) {
        steps.push(Step::AddSequence {
            table: table.clone(),
            sequence: n.name.clone(),
            column: n.column,
            min: n.min_value.unwrap_or(1),
            max: n.max_value.unwrap_or(i128::MAX),
        });
    }
    let v10 = new_def.version == epoch_schema::DefVersion::V10;
    constraint_changes(old, new, v10, steps, errors);
    if v10 && old.primary_key != new.primary_key {
        steps.push(Step::ChangePrimaryKey { table: table.clone() });
    }
    match (&old.schedule, &new.schedule) {
        (a, b) if a == b => {}
        (Some(_), Some(_)) => {
            steps.push(Step::RemoveSchedule { table: table.clone() });
            steps.push(Step::AddSchedule { table: table.clone() });
        }
        (Some(_), None) => steps.push(Step::RemoveSchedule { table: table.clone() }),
        (None, Some(_)) => steps.push(Step::AddSchedule { table: table.clone() }),
        (None, None) => {}
    }
}

/// The unique-constraint steps of one table's update: removals; additions for a 2.x module
/// (checked against the rows when applied); 1.3's refusals otherwise.
fn constraint_changes(old: &TableDef, new: &TableDef, v10: bool, steps: &mut Vec<Step>, errors: &mut Vec<String>) {
    let table = &old.name;
    for c in &old.constraints {
        match new.constraints.iter().find(|n| n.name == c.name) {
            None => steps.push(Step::RemoveConstraint { table: table.clone(), constraint: c.name.clone() }),
            Some(n) if n != c => {
                errors.push(format!("Changing a unique constraint {} requires a manual migration", c.name))
            }
            Some(_) => {}
        }
    }
    for n in new.constraints.iter().filter(|n| !old.constraints.iter().any(|c| c.name == n.name)) {
        if v10 {
            steps.push(Step::AddConstraint { table: table.clone(), constraint: n.name.clone() });
        } else {
            errors.push(format!("Adding a unique constraint {} requires a manual migration", n.name));
        }
    }
}

/// The columns a 2.x module update appends to a table, each with a default value: what 2.x
/// migrates by itself. Columns added without a default (and any 1.x module's new columns) are
/// left to [`columns_change`], which refuses them.
fn added_columns(new_def: &ModuleDef, old: &TableDef, new: &TableDef) -> Vec<String> {
    if new_def.version != epoch_schema::DefVersion::V10 {
        return Vec::new();
    }
    let n_old = old.row_type.elements.len();
    let tail = new.row_type.elements.get(n_old..).unwrap_or_default();
    let all_defaulted =
        (n_old..new.row_type.elements.len()).all(|c| new.default_values.iter().any(|(d, _)| *d as usize == c));
    if tail.is_empty() || !all_defaulted {
        return Vec::new();
    }
    tail.iter().map(|e| e.name.as_deref().unwrap_or("?").to_string()).collect()
}

/// The index steps of one table's update (removed, added, re-added with a new algorithm), and
/// 1.3's refusal of a renamed accessor.
fn index_changes(old: &TableDef, new: &TableDef, steps: &mut Vec<Step>, errors: &mut Vec<String>) {
    let table = &old.name;
    for i in &old.indexes {
        match new.indexes.iter().find(|n| n.name == i.name) {
            None => steps.push(Step::RemoveIndex { table: table.clone(), index: i.name.clone() }),
            Some(n) if n.accessor_name != i.accessor_name => errors.push(format!(
                "Changing the accessor name on index {} from {:?} to {:?} requires a manual migration",
                i.name, i.accessor_name, n.accessor_name
            )),
            Some(n) if n.algorithm != i.algorithm => {
                steps.push(Step::RemoveIndex { table: table.clone(), index: i.name.clone() });
                steps.push(Step::AddIndex { table: table.clone(), index: i.name.clone() });
            }
            Some(_) => {}
        }
    }
    for n in new.indexes.iter().filter(|n| !old.indexes.iter().any(|i| i.name == n.name)) {
        steps.push(Step::AddIndex { table: table.clone(), index: n.name.clone() });
    }
}

/// Whether the columns changed in a way 1.3 applies by itself (`Ok(true)`: an enum column gained
/// variants at its end), did not change (`Ok(false)`), or changed in a way it refuses.
fn columns_change(
    old_ts: &Typespace,
    old: &ProductType,
    new_ts: &Typespace,
    new: &ProductType,
    table: &str,
) -> Result<bool, Vec<String>> {
    let name = |e: &epoch_sats::ProductTypeElement| e.name.as_deref().unwrap_or("").to_string();
    let old_names: Vec<String> = old.elements.iter().map(name).collect();
    let new_names: Vec<String> = new.elements.iter().map(name).collect();
    let mut errors = Vec::new();
    for n in new_names.iter().filter(|n| !old_names.contains(n)) {
        errors.push(format!("Adding a column {n} to table {table} requires a manual migration"));
    }
    for o in old_names.iter().filter(|o| !new_names.contains(o)) {
        errors.push(format!("Removing a column {o} from table {table} requires a manual migration"));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    if old_names != new_names {
        return Err(vec![format!("Reordering table {table} requires a manual migration")]);
    }
    let mut changed = false;
    for (o, n) in old.elements.iter().zip(new.elements.iter()) {
        let (ot, nt) = (resolve(old_ts, &o.ty, 0), resolve(new_ts, &n.ty, 0));
        if ot == nt {
            continue;
        }
        if appends_variants(&ot, &nt) {
            changed = true;
            continue;
        }
        errors.push(format!(
            "Changing the type of column {} in table {table} from {ot:?} to {nt:?} requires a manual migration",
            name(o)
        ));
    }
    if errors.is_empty() {
        Ok(changed)
    } else {
        Err(errors)
    }
}

/// `ty` with every type reference replaced by what it names (types are compared by shape: a
/// module update may renumber its typespace; `st_column` holds column types whole).
pub(crate) fn resolve(ts: &Typespace, ty: &AlgebraicType, depth: u32) -> AlgebraicType {
    if depth > 32 {
        return ty.clone();
    }
    match ty {
        AlgebraicType::Ref(r) => match ts.types.get(*r as usize) {
            Some(t) => resolve(ts, t, depth + 1),
            None => ty.clone(),
        },
        AlgebraicType::Product(p) => AlgebraicType::Product(ProductType {
            elements: p
                .elements
                .iter()
                .map(|e| epoch_sats::ProductTypeElement { name: e.name.clone(), ty: resolve(ts, &e.ty, depth + 1) })
                .collect(),
        }),
        AlgebraicType::Sum(s) => AlgebraicType::Sum(epoch_sats::SumType {
            variants: s
                .variants
                .iter()
                .map(|v| epoch_sats::SumTypeVariant { name: v.name.clone(), ty: resolve(ts, &v.ty, depth + 1) })
                .collect(),
        }),
        AlgebraicType::Array(e) => AlgebraicType::Array(Box::new(resolve(ts, e, depth + 1))),
        other => other.clone(),
    }
}

/// The refusal of a unique constraint that rows of the table `table_id` (its id as the system
/// tables show it) break, in 2.x's words: each value held more than once (ten at most).
pub(crate) fn duplicate_values(table: &epoch_store::Table, table_id: u32, columns: &[u16]) -> Result<(), String> {
    let mut counts: std::collections::BTreeMap<Vec<epoch_sats::AlgebraicValue>, usize> = Default::default();
    for (_, row) in table.iter() {
        let key = columns.iter().map(|c| table.schema.column_value(row, *c)).collect::<Result<Vec<_>, _>>();
        *counts.entry(key.map_err(|e| e.to_string())?).or_default() += 1;
    }
    let groups: Vec<(Vec<epoch_sats::AlgebraicValue>, usize)> = counts.into_iter().filter(|(_, n)| *n > 1).collect();
    if groups.is_empty() {
        return Ok(());
    }
    let cols: Vec<String> = columns.iter().map(|c| format!("ColId({c})")).collect();
    let mut text = format!(
        "DatastoreError: Cannot add unique constraint on table {table_id} column(s) [{}] (committed state):\n{} duplicate group(s) found.",
        cols.join(", "),
        groups.len()
    );
    for (key, n) in groups.iter().take(10) {
        let value = match key.as_slice() {
            [one] => crate::migrate_text::value_text(one),
            many => format!("[{}]", many.iter().map(crate::migrate_text::value_text).collect::<Vec<_>>().join(", ")),
        };
        text.push_str(&format!("\n  - {value} appears {n} times"));
    }
    if groups.len() > 10 {
        text.push_str("\n  ... and more");
    }
    Err(text)
}

/// Whether `new` is the enum `old` with variants added at its end (every stored value still
/// reads the same).
fn appends_variants(old: &AlgebraicType, new: &AlgebraicType) -> bool {
    match (old, new) {
        (AlgebraicType::Sum(o), AlgebraicType::Sum(n)) => {
            n.variants.len() > o.variants.len() && n.variants[..o.variants.len()] == o.variants[..]
        }
        _ => false,
    }
}

/// The order `st_row_level_security` lists a module's filters in after an update from filters
/// `old` (as the database held them) to `new` (as the module declares them): the ones kept stay
/// where they were, new ones follow in the module's order. 1.3 adds an update's new filters
/// after the rows already there (its smoketest `auto_migration` sees `person`, then the added
/// `book`, though the module's definition lists `book` first).
pub(crate) fn filter_order(old: &[String], new: &[String]) -> Vec<String> {
    let kept = old.iter().filter(|f| new.contains(f));
    let added = new.iter().filter(|f| !old.contains(f));
    let mut order: Vec<String> = kept.chain(added).cloned().collect();
    order.dedup();
    order
}

#[cfg(test)]
mod tests {
    use super::*;
    use epoch_schema::{ConstraintDef, TableAccess};

    fn def(tables: Vec<TableDef>) -> ModuleDef {
        ModuleDef {
            typespace: Typespace { types: Vec::new() },
            tables,
            reducers: Vec::new(),
            types: Vec::new(),
            row_level_security: Vec::new(),
            ..Default::default()
        }
    }

    fn table(name: &str, cols: &[(&str, AlgebraicType)]) -> TableDef {
        TableDef::plain(name, 0, ProductType::new(cols.iter().map(|(n, t)| (*n, t.clone()))))
    }

    #[test]
    fn what_1_3_applies_and_what_it_refuses() {
        let t = table("t", &[("id", AlgebraicType::U32), ("v", AlgebraicType::String)]);
        let old = def(vec![t.clone()]);
        // Added table, added index, access change: applied, removals first.
        let mut t2 = t.clone().with_btree_index(&[1]);
        t2.table_access = TableAccess::Private;
        let new = def(vec![table("a", &[("x", AlgebraicType::U8)]), t2]);
        let steps = plan(&old, &new).unwrap();
        assert_eq!(
            steps,
            vec![
                Step::AddTable("a".into()),
                Step::AddIndex { table: "t".into(), index: "t_v_idx_btree".into() },
                Step::ChangeAccess { table: "t".into() },
            ]
        );
        // Removing the index again is a step too.
        let back = def(vec![table("a", &[("x", AlgebraicType::U8)]), t.clone()]);
        assert_eq!(
            plan(&new, &back).unwrap(),
            vec![
                Step::RemoveIndex { table: "t".into(), index: "t_v_idx_btree".into() },
                Step::ChangeAccess { table: "t".into() }
            ]
        );
        // Refused, with 1.3's words.
        let errs = plan(&old, &def(vec![])).unwrap_err();
        assert_eq!(errs, vec!["Removing the table t requires a manual migration"]);
        let added = def(vec![table(
            "t",
            &[("id", AlgebraicType::U32), ("v", AlgebraicType::String), ("w", AlgebraicType::U8)],
        )]);
        assert_eq!(plan(&old, &added).unwrap_err(), vec!["Adding a column w to table t requires a manual migration"]);
        let reordered = def(vec![table("t", &[("v", AlgebraicType::String), ("id", AlgebraicType::U32)])]);
        assert_eq!(plan(&old, &reordered).unwrap_err(), vec!["Reordering table t requires a manual migration"]);
        let mut unique = t.clone();
        unique.constraints.push(ConstraintDef { name: "t_id_key".into(), unique_columns: vec![0] });
        assert_eq!(
            plan(&old, &def(vec![unique])).unwrap_err(),
            vec!["Adding a unique constraint t_id_key requires a manual migration"]
        );
    }

    #[test]
    fn filters_an_update_keeps_stay_in_place_and_new_ones_follow() {
        let v = |items: &[&str]| items.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        // 1.3's auto_migration smoketest: `person` was there; the module now lists `book` first.
        assert_eq!(filter_order(&v(&["person"]), &v(&["book", "person"])), v(&["person", "book"]));
        assert_eq!(filter_order(&v(&["b", "a"]), &v(&["a", "c", "b"])), v(&["b", "a", "c"]));
        assert_eq!(filter_order(&v(&["a", "b"]), &v(&["b"])), v(&["b"]));
        assert_eq!(filter_order(&[], &v(&["z", "y"])), v(&["z", "y"]));
    }
}
