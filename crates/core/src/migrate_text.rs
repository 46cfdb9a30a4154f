//! A migration plan as 2.x prints it (`pre_publish`'s `migrate_plan`, which the 2.x CLI shows
//! before it publishes): a header, then one block per step in the plan's order, with or without
//! ANSI colours. The words, symbols and colours are 2.x's, so the CLI's output reads the same
//! against Epoch; the steps are Epoch's own plan ([`crate::migrate::plan`]).

use std::fmt::Write;

use epoch_sats::{AlgebraicType, AlgebraicValue, Typespace};
use epoch_schema::{ModuleDef, TableAccess, TableDef, TableType};

use crate::migrate::{resolve, Step};

/// Whether the text carries ANSI colours (2.x's default) or none (`style=NoColor`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanStyle {
    AnsiColor,
    NoColor,
}

const GREEN: u8 = 2;
const RED: u8 = 1;
const YELLOW: u8 = 3;
const BLUE: u8 = 4;
const MAGENTA: u8 = 5;
const CYAN: u8 = 6;
const INDENT: &str = "    ";
const DISCONNECT_WARNING: &str = "!!! Warning: All clients will be disconnected due to breaking schema changes";

struct Text {
    out: String,
    style: PlanStyle,
}

impl Text {
    /// `s` in foreground colour `fg` (or on background `bg`), as a terminal-colour library
    /// writes it: reset, bold, colour, the text, reset.
    fn paint(&mut self, s: &str, fg: Option<u8>, bg: Option<u8>, bold: bool) {
        if self.style == PlanStyle::NoColor {
            self.out.push_str(s);
            return;
        }
        self.out.push_str("\x1b[0m");
        if bold {
            self.out.push_str("\x1b[1m");
        }
        if let Some(c) = fg {
            let _ = write!(self.out, "\x1b[3{c}m");
        }
        if let Some(c) = bg {
            let _ = write!(self.out, "\x1b[4{c}m");
        }
        self.out.push_str(s);
        self.out.push_str("\x1b[0m");
    }

    fn name(&mut self, s: &str) {
        self.paint(s, Some(CYAN), None, true);
    }

    fn ty(&mut self, ts: &Typespace, ty: &AlgebraicType) {
        self.paint(&type_text(&resolve(ts, ty, 0)), Some(MAGENTA), None, false);
    }

    fn section(&mut self, depth: usize, title: &str) {
        self.out.push_str(&INDENT.repeat(depth));
        self.paint(title, Some(BLUE), None, true);
        self.out.push('\n');
    }

    /// `▸ Created` (green), `▸ Removed` (red) or `▸ Changed` (yellow).
    fn action(&mut self, word: &str) {
        self.out.push_str("▸ ");
        let colour = match word {
            "Created" => GREEN,
            "Removed" => RED,
            _ => YELLOW,
        };
        self.paint(word, Some(colour), None, true);
    }
}

/// The plan from `old` to `new` (its `steps`, as [`crate::migrate::plan`] made them) in 2.x's
/// words; `breaks_clients` adds the closing warning that every client will be disconnected.
pub fn plan_text(old: &ModuleDef, new: &ModuleDef, steps: &[Step], breaks_clients: bool, style: PlanStyle) -> String {
    let mut t = Text { out: String::new(), style };
    let rule = "━".repeat(60);
    t.out.push_str(&rule);
    t.out.push('\n');
    t.paint("Database Migration Plan", Some(BLUE), None, true);
    let _ = write!(t.out, "\n{rule}\n\n");
    for step in steps {
        step_text(&mut t, old, new, step);
    }
    if breaks_clients {
        t.paint(DISCONNECT_WARNING, None, Some(RED), true);
        t.out.push('\n');
    }
    t.out
}

fn step_text(t: &mut Text, old: &ModuleDef, new: &ModuleDef, step: &Step) {
    match step {
        Step::RemoveIndex { table, index } => index_text(t, old, table, index, "Removed"),
        Step::AddIndex { table, index } => index_text(t, new, table, index, "Created"),
        Step::RemoveConstraint { table, constraint } => constraint_text(t, old, table, constraint, "Removed"),
        Step::RemoveSequence { table, sequence } => sequence_text(t, old, table, sequence, "Removed"),
        Step::AddSequence { table, sequence, .. } => sequence_text(t, new, table, sequence, "Created"),
        Step::RemoveSchedule { table } => schedule_text(t, old, table, "Removed"),
        Step::AddSchedule { table } => schedule_text(t, new, table, "Created"),
        // Every filter is removed and added again; only those in one of the two modules show.
        Step::RemoveRowLevelSecurity(sql) if !new.row_level_security.contains(sql) => rls_text(t, sql, "Removed"),
        Step::AddRowLevelSecurity(sql) if !old.row_level_security.contains(sql) => rls_text(t, sql, "Created"),
        Step::RemoveRowLevelSecurity(_) | Step::AddRowLevelSecurity(_) => {}
        Step::ChangeColumns { table } => changed_columns_text(t, old, new, table),
        Step::AddColumns { table, .. } => added_columns_text(t, old, new, table),
        Step::AddTable(table) => {
            if let Some(def) = new.table(table) {
                added_table_text(t, new, def);
            }
        }
        Step::RemoveView(view) => view_text(t, old, view, "Removed"),
        Step::AddView(view) => view_text(t, new, view, "Created"),
        Step::RemoveTable(table) => {
            t.action("Removed");
            t.out.push_str(" table: ");
            t.name(table);
            t.out.push_str("\n\n");
        }
        Step::AddConstraint { table, constraint } => constraint_text(t, new, table, constraint, "Created"),
        Step::ChangePrimaryKey { table } => primary_key_text(t, old, new, table),
        Step::ChangeAccess { table } => {
            let to_public = new.table(table).is_some_and(|d| d.table_access == TableAccess::Public);
            t.action("Changed");
            t.out.push_str(" access for table ");
            t.name(table);
            t.out.push_str(" (");
            t.paint(if to_public { "private → public" } else { "public → private" }, Some(GREEN), None, false);
            t.out.push_str(")\n");
        }
    }
}

fn column_names(def: Option<&TableDef>, columns: &[u16]) -> String {
    let name = |c: &u16| {
        def.and_then(|d| d.row_type.elements.get(*c as usize)).and_then(|e| e.name.clone()).unwrap_or_default()
    };
    columns.iter().map(name).collect::<Vec<_>>().join(", ")
}

fn index_text(t: &mut Text, def: &ModuleDef, table: &str, index: &str, action: &str) {
    let columns = of_table(def, table, |d| d.indexes.iter().find(|i| i.name == index).map(|i| i.algorithm.columns()));
    object_line(t, action, &format!("index {index} on [{columns}]"), table);
}

fn constraint_text(t: &mut Text, def: &ModuleDef, table: &str, constraint: &str, action: &str) {
    let find = |d: &TableDef| d.constraints.iter().find(|c| c.name == constraint).map(|c| c.unique_columns.clone());
    let columns = of_table(def, table, find);
    object_line(t, action, &format!("unique constraint {constraint} on [{columns}]"), table);
}

fn primary_key_text(t: &mut Text, old: &ModuleDef, new: &ModuleDef, table: &str) {
    let key = |def: &ModuleDef| def.table(table).and_then(|d| d.primary_key);
    let what = match (key(old), key(new)) {
        (Some(_), None) => "removed".to_string(),
        (None, Some(c)) => format!("added on column {c}"),
        (Some(_), Some(c)) => format!("changed to column {c}"),
        (None, None) => return,
    };
    t.action("Changed");
    t.out.push_str(" primary key on table ");
    t.name(table);
    let _ = writeln!(t.out, " ({what})");
}

fn sequence_text(t: &mut Text, def: &ModuleDef, table: &str, sequence: &str, action: &str) {
    let column = of_table(def, table, |d| d.sequences.iter().find(|s| s.name == sequence).map(|s| vec![s.column]));
    object_line(t, action, &format!("auto-increment constraint {sequence} on column {column}"), table);
}

/// The names of the columns `find` picks out of table `table` of `def`, comma-separated.
fn of_table(def: &ModuleDef, table: &str, find: impl Fn(&TableDef) -> Option<Vec<u16>>) -> String {
    let table_def = def.table(table);
    table_def.and_then(&find).map(|cols| column_names(table_def, &cols)).unwrap_or_default()
}

/// `▸ <action> <what> of table <table>`: an index, constraint or sequence step.
fn object_line(t: &mut Text, action: &str, what: &str, table: &str) {
    t.action(action);
    let _ = write!(t.out, " {what} of table ");
    t.name(table);
    t.out.push('\n');
}

/// What a schedule calls: `reducer` or `procedure`, and its name.
fn schedule_target(def: &ModuleDef, table: &TableDef) -> Option<(&'static str, String)> {
    let s = table.schedule.as_ref()?;
    let kind = if def.procedures.iter().any(|p| p.name == s.reducer_name) { "procedure" } else { "reducer" };
    Some((kind, s.reducer_name.clone()))
}

fn schedule_text(t: &mut Text, def: &ModuleDef, table: &str, action: &str) {
    let Some((kind, function)) = def.table(table).and_then(|d| schedule_target(def, d)) else { return };
    t.action(action);
    t.out.push_str(" schedule for table ");
    t.name(table);
    let _ = writeln!(t.out, " calling {kind} {function}");
}

fn rls_text(t: &mut Text, sql: &str, action: &str) {
    t.action(action);
    t.out.push_str(" row level security policy:\n");
    t.out.push_str(INDENT);
    t.out.push('`');
    t.paint(sql, Some(BLUE), None, false);
    t.out.push_str("`\n");
}

fn changed_columns_text(t: &mut Text, old: &ModuleDef, new: &ModuleDef, table: &str) {
    t.action("Changed");
    t.out.push_str(" columns for table ");
    t.name(table);
    t.out.push('\n');
    let (Some(o), Some(n)) = (old.table(table), new.table(table)) else { return };
    for (oc, nc) in o.row_type.elements.iter().zip(n.row_type.elements.iter()) {
        if resolve(&old.typespace, &oc.ty, 0) == resolve(&new.typespace, &nc.ty, 0) {
            continue;
        }
        let _ = write!(t.out, "{INDENT}~ Modified: {} (", nc.name.as_deref().unwrap_or_default());
        t.ty(&old.typespace, &oc.ty);
        t.out.push_str(" → ");
        t.ty(&new.typespace, &nc.ty);
        t.out.push_str(")\n");
    }
}

fn added_columns_text(t: &mut Text, old: &ModuleDef, new: &ModuleDef, table: &str) {
    let (Some(o), Some(n)) = (old.table(table), new.table(table)) else { return };
    let added = &n.row_type.elements[o.row_type.elements.len().min(n.row_type.elements.len())..];
    t.action("Created");
    t.out.push_str(if added.len() > 1 { " columns in table " } else { " column in table " });
    t.name(table);
    t.out.push('\n');
    for (i, e) in added.iter().enumerate() {
        let col = (o.row_type.elements.len() + i) as u16;
        let _ = write!(t.out, "{INDENT}+ {}: ", e.name.as_deref().unwrap_or_default());
        t.ty(&new.typespace, &e.ty);
        let default = n.default_values.iter().find(|(c, _)| *c == col).and_then(|(_, bytes)| {
            epoch_sats::bsatn::decode(&new.typespace, &resolve(&new.typespace, &e.ty, 0), bytes).ok()
        });
        if let Some(v) = default {
            let _ = write!(t.out, " (default: {})", value_debug(&v));
        }
        t.out.push('\n');
    }
}

/// A view created or removed, as 2.x prints it: its line starts with two arrows, then its
/// parameters and columns, and an empty line.
fn view_text(t: &mut Text, def: &ModuleDef, name: &str, action: &str) {
    let Some(view) = def.views.iter().find(|v| v.name == name) else { return };
    t.out.push_str("▸ ");
    t.action(action);
    t.out.push_str(if view.is_anonymous { " anonymous view: " } else { " view: " });
    t.name(name);
    t.out.push('\n');
    let columns = epoch_host::view::view_row_type(&def.typespace, view).unwrap_or_default();
    for (title, elements) in [("Parameters:", &view.params), ("Columns:", &columns)] {
        if elements.elements.is_empty() {
            continue;
        }
        t.section(1, title);
        for e in elements.elements.iter() {
            let _ = write!(t.out, "{INDENT}{INDENT}• {}: ", e.name.as_deref().unwrap_or_default());
            t.ty(&def.typespace, &e.ty);
            t.out.push('\n');
        }
    }
    t.out.push('\n');
}

fn added_table_text(t: &mut Text, def: &ModuleDef, table: &TableDef) {
    t.action("Created");
    let kind = if table.table_type == TableType::System { "system" } else { "user" };
    let _ = write!(t.out, " {kind} table: ");
    t.name(&table.name);
    t.out.push_str(" (");
    let public = table.table_access == TableAccess::Public;
    t.paint(if public { "public" } else { "private" }, Some(GREEN), None, false);
    t.out.push_str(")\n");
    if !table.row_type.elements.is_empty() {
        t.section(1, "Columns:");
        for e in table.row_type.elements.iter() {
            let _ = write!(t.out, "{INDENT}{INDENT}• {}: ", e.name.as_deref().unwrap_or_default());
            t.ty(&def.typespace, &e.ty);
            t.out.push('\n');
        }
    }
    let bullets = |t: &mut Text, title: &str, items: Vec<String>| {
        if !items.is_empty() {
            t.section(1, title);
            for item in items {
                let _ = writeln!(t.out, "{INDENT}{INDENT}• {item}");
            }
        }
    };
    let on = |name: &str, cols: &[u16]| format!("{name} on [{}]", column_names(Some(table), cols));
    bullets(t, "Unique constraints:", table.constraints.iter().map(|c| on(&c.name, &c.unique_columns)).collect());
    bullets(t, "Indexes:", table.indexes.iter().map(|i| on(&i.name, &i.algorithm.columns())).collect());
    let seq = |s: &epoch_schema::SequenceDef| format!("{} on {}", s.name, column_names(Some(table), &[s.column]));
    bullets(t, "Auto-increment constraints:", table.sequences.iter().map(seq).collect());
    if let Some((kind, function)) = schedule_target(def, table) {
        bullets(t, "Schedule:", vec![format!("Calls {kind}: {function}")]);
    }
    t.out.push('\n');
}

/// A type as 2.x prints it in a plan: `U8`, `Array<String>`, `(name: T, other: U)` for a
/// product, `(a: T | b: U)` for a sum.
pub fn type_text(ty: &AlgebraicType) -> String {
    let field = |name: &Option<Box<str>>, i: usize, ty: &AlgebraicType| match name {
        Some(n) => format!("{n}: {}", type_text(ty)),
        None => format!("{i}: {}", type_text(ty)),
    };
    match ty {
        AlgebraicType::Ref(r) => format!("&{r}"),
        AlgebraicType::Product(p) => {
            let items: Vec<String> = p.elements.iter().enumerate().map(|(i, e)| field(&e.name, i, &e.ty)).collect();
            format!("({})", items.join(", "))
        }
        AlgebraicType::Sum(s) if s.variants.is_empty() => "(|)".to_string(),
        AlgebraicType::Sum(s) => {
            let items: Vec<String> = s.variants.iter().enumerate().map(|(i, v)| field(&v.name, i, &v.ty)).collect();
            format!("({})", items.join(" | "))
        }
        AlgebraicType::Array(e) => format!("Array<{}>", type_text(e)),
        other => format!("{other:?}"),
    }
}

/// A value the way 2.x names it in one line: its variant and value, e.g. `U16(0)`.
pub fn value_text(v: &AlgebraicValue) -> String {
    value_debug(v).replace("(\n    ", "(").replace(",\n)", ")")
}

/// A default value the way 2.x prints it: its variant and value on lines of their own (Rust's
/// pretty debug form), e.g. `U8(⏎    7,⏎)`.
fn value_debug(v: &AlgebraicValue) -> String {
    let (variant, inner) = match v {
        AlgebraicValue::String(s) => ("String", format!("{s:?}")),
        AlgebraicValue::Bool(b) => ("Bool", b.to_string()),
        AlgebraicValue::I8(x) => ("I8", x.to_string()),
        AlgebraicValue::U8(x) => ("U8", x.to_string()),
        AlgebraicValue::I16(x) => ("I16", x.to_string()),
        AlgebraicValue::U16(x) => ("U16", x.to_string()),
        AlgebraicValue::I32(x) => ("I32", x.to_string()),
        AlgebraicValue::U32(x) => ("U32", x.to_string()),
        AlgebraicValue::I64(x) => ("I64", x.to_string()),
        AlgebraicValue::U64(x) => ("U64", x.to_string()),
        AlgebraicValue::I128(x) => ("I128", x.to_string()),
        AlgebraicValue::U128(x) => ("U128", x.to_string()),
        AlgebraicValue::F32(x) => ("F32", format!("{:?}", x.0)),
        AlgebraicValue::F64(x) => ("F64", format!("{:?}", x.0)),
        // Composite defaults are rare; they print in Epoch's own debug form.
        other => return format!("{other:?}"),
    };
    format!("{variant}(\n    {inner},\n)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_print_as_2_x_prints_them() {
        use epoch_sats::{ProductType, SumType, SumTypeVariant};
        assert_eq!(type_text(&AlgebraicType::U8), "U8");
        assert_eq!(type_text(&AlgebraicType::Array(Box::new(AlgebraicType::String))), "Array<String>");
        let identity = AlgebraicType::Product(ProductType::new([("__identity__", AlgebraicType::U256)]));
        assert_eq!(type_text(&identity), "(__identity__: U256)");
        let option = AlgebraicType::Sum(SumType {
            variants: vec![
                SumTypeVariant { name: Some("some".into()), ty: AlgebraicType::U32 },
                SumTypeVariant { name: Some("none".into()), ty: AlgebraicType::Product(ProductType::default()) },
            ]
            .into(),
        });
        assert_eq!(type_text(&option), "(some: U32 | none: ())");
    }

    #[test]
    fn defaults_print_on_lines_of_their_own() {
        assert_eq!(value_debug(&AlgebraicValue::U8(7)), "U8(\n    7,\n)");
        assert_eq!(value_debug(&AlgebraicValue::String("abc".into())), "String(\n    \"abc\",\n)");
    }
}
