//! `RawModuleDef::V10` definitions built byte by byte, decoded and validated with 2.x's rules.

use epoch_sats::{AlgebraicType as T, ProductType};
use epoch_schema::raw::write_algebraic_type;
use epoch_schema::{module_def_from_bytes, DefVersion, FunctionVisibility, IndexAlgorithm, Lifecycle, SchemaError};

/// Writes BSATN by hand, as a module's `__describe_module__` would.
#[derive(Default)]
struct W(Vec<u8>);

impl W {
    fn u8(mut self, v: u8) -> Self {
        self.0.push(v);
        self
    }
    fn u16(mut self, v: u16) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u32(mut self, v: u32) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn str(self, s: &str) -> Self {
        let mut w = self.u32(s.len() as u32);
        w.0.extend_from_slice(s.as_bytes());
        w
    }
    fn some_str(self, s: &str) -> Self {
        self.u8(0).str(s)
    }
    fn ty(mut self, ty: &T) -> Self {
        write_algebraic_type(&mut self.0, ty);
        self
    }
    /// A `ProductType` on its own (a parameter list): the product's elements without its tag.
    fn params(self, p: &ProductType) -> Self {
        let mut bytes = Vec::new();
        write_algebraic_type(&mut bytes, &T::Product(p.clone()));
        let mut w = self;
        w.0.extend_from_slice(&bytes[1..]);
        w
    }
    fn raw(mut self, bytes: &[u8]) -> Self {
        self.0.extend_from_slice(bytes);
        self
    }
}

fn row_type() -> ProductType {
    ProductType::new([("playerName", T::String), ("level2", T::U32)])
}

fn typespace_section() -> Vec<u8> {
    W::default().u8(0).u32(1).ty(&T::Product(row_type())).0
}

/// `highScore(playerName, level2)` with a B-tree index on `level2`, `default_values` and `is_event` given.
fn tables_section(defaults: &[(u16, Vec<u8>)], is_event: bool) -> Vec<u8> {
    let mut w = W::default().u8(2).u32(1).str("highScore").u32(0).u32(0);
    w = w.u32(1).some_str("highScore_level2_idx_btree").some_str("level2").u8(0).u32(1).u16(1);
    w = w.u32(0).u32(0).u8(1).u8(0);
    w = w.u32(defaults.len() as u32);
    for (col, value) in defaults {
        w = w.u16(*col).u32(value.len() as u32).raw(value);
    }
    w.u8(is_event as u8).0
}

/// One reducer `addScore(playerName: String)` returning `Result<(), String>`.
fn reducers_section(ok: &T) -> Vec<u8> {
    let params = ProductType::new([("playerName", T::String)]);
    W::default().u8(3).u32(1).str("addScore").params(&params).u8(1).ty(ok).ty(&T::String).0
}

fn module(sections: &[Vec<u8>]) -> Vec<u8> {
    let mut w = W::default().u8(2).u32(sections.len() as u32);
    for s in sections {
        w = w.raw(s);
    }
    w.0
}

#[test]
fn sections_in_any_order_get_snake_case_canonical_names_and_keep_source_names_as_aliases() {
    let bytes = module(&[reducers_section(&T::unit()), tables_section(&[], false), typespace_section()]);
    let def = module_def_from_bytes(&bytes).expect("valid");
    assert_eq!(def.version, DefVersion::V10);
    let t = &def.tables[0];
    assert_eq!(t.name, "high_score");
    assert_eq!(t.source_name.as_deref(), Some("highScore"));
    let cols: Vec<_> = t.row_type.elements.iter().map(|e| e.name.as_deref().unwrap()).collect();
    assert_eq!(cols, ["player_name", "level_2"]);
    assert_eq!(t.indexes[0].name, "high_score_level_2_idx_btree");
    assert_eq!(t.indexes[0].source_name.as_deref(), Some("highScore_level2_idx_btree"));
    let r = &def.reducers[0];
    assert_eq!(r.name, "add_score");
    assert_eq!(r.params.elements[0].name.as_deref(), Some("player_name"));
    assert_eq!(r.visibility, FunctionVisibility::ClientCallable);
}

#[test]
fn the_none_policy_keeps_names_and_explicit_names_win() {
    let policy = W::default().u8(9).u8(0).0;
    let explicit = W::default().u8(10).u32(1).u8(0).str("highScore").str("scores").0;
    let bytes = module(&[typespace_section(), tables_section(&[], false), policy, explicit]);
    let def = module_def_from_bytes(&bytes).expect("valid");
    assert_eq!(def.tables[0].name, "scores");
    assert_eq!(def.tables[0].row_type.elements[0].name.as_deref(), Some("playerName"));
}

#[test]
fn an_unknown_section_is_refused_with_its_tag() {
    let bytes = module(&[typespace_section(), vec![17, 0, 0, 0, 0]]);
    let e = module_def_from_bytes(&bytes).unwrap_err();
    assert!(e.to_string().contains("tag 17"), "{e}");
}

#[test]
fn only_the_first_section_of_a_kind_counts() {
    let other_policy = W::default().u8(9).u8(0).0;
    let bytes = module(&[typespace_section(), W::default().u8(9).u8(1).0, other_policy, tables_section(&[], false)]);
    let def = module_def_from_bytes(&bytes).expect("valid");
    assert_eq!(def.tables[0].name, "high_score", "the later None policy is ignored");
}

#[test]
fn default_values_must_decode_at_their_column_type_and_event_tables_are_marked() {
    let good = module(&[typespace_section(), tables_section(&[(1, 7u32.to_le_bytes().to_vec())], true)]);
    let def = module_def_from_bytes(&good).expect("valid");
    assert_eq!(def.tables[0].default_values, [(1, 7u32.to_le_bytes().to_vec())]);
    assert!(def.tables[0].is_event);
    let bad = module(&[typespace_section(), tables_section(&[(1, vec![7])], false)]);
    let e = module_def_from_bytes(&bad).unwrap_err();
    assert!(e.to_string().contains("failed to deserialize default value"), "{e}");
}

#[test]
fn a_reducer_must_return_unit_or_a_string_error() {
    let bytes = module(&[typespace_section(), reducers_section(&T::U32)]);
    let e = module_def_from_bytes(&bytes).unwrap_err();
    assert!(matches!(e, SchemaError::Invalid(_)));
    assert!(e.to_string().contains("`addScore` has an invalid return type"), "{e}");
}

/// A scheduled table `tick(scheduled_id: u64 pk, scheduled_at: ScheduleAt)`, its schedule in
/// section 6 naming a procedure, and a lifecycle section making `addScore` the init reducer.
#[test]
fn schedules_may_call_procedures_and_scheduled_or_lifecycle_functions_are_private() {
    let tick = ProductType::new([("scheduled_id", T::U64), ("scheduled_at", T::schedule_at())]);
    let ts = W::default().u8(0).u32(1).ty(&T::Product(tick)).0;
    let mut t = W::default().u8(2).u32(1).str("tick").u32(0).u32(1).u16(0);
    t = t.u32(1).some_str("tick_scheduled_id_idx_btree").some_str("scheduled_id").u8(0).u32(1).u16(0);
    t = t.u32(1).u8(1).u8(0).u32(1).u16(0);
    let table = t.u32(0).u8(1).u8(1).u32(0).u8(0).0;
    let proc_params = ProductType::new([("row", T::Ref(0))]);
    let procs = W::default().u8(4).u32(1).str("onTick").params(&proc_params).ty(&T::unit()).u8(1).0;
    let sched = W::default().u8(6).u32(1).u8(1).str("tick").u16(1).str("onTick").0;
    let lifecycle = W::default().u8(7).u32(1).u8(0).str("addScore").0;
    let bytes = module(&[ts, table, procs, sched, reducers_section(&T::unit()), lifecycle]);
    let def = module_def_from_bytes(&bytes).expect("valid");
    assert_eq!(def.tables[0].schedule.as_ref().unwrap().reducer_name, "on_tick");
    assert_eq!(def.procedures[0].visibility, FunctionVisibility::Private);
    assert_eq!(def.reducers[0].lifecycle, Some(Lifecycle::Init));
    assert_eq!(def.reducers[0].visibility, FunctionVisibility::Private);
}

#[test]
fn hash_indexes_are_accepted_in_v10() {
    let mut t = W::default().u8(2).u32(1).str("highScore").u32(0).u32(0);
    t = t.u32(1).some_str("highScore_playerName_idx_hash").some_str("playerName").u8(1).u32(1).u16(0);
    let table = t.u32(0).u32(0).u8(1).u8(0).u32(0).u8(0).0;
    let def = module_def_from_bytes(&module(&[typespace_section(), table])).expect("valid");
    assert_eq!(def.tables[0].indexes[0].algorithm, IndexAlgorithm::Hash(vec![0]));
    assert_eq!(def.tables[0].indexes[0].name, "high_score_player_name_idx_hash");
}

/// The real `__describe_module__` output of the 2.14 fixture modules (kept as fuzz seeds).
fn seed(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/../../fuzz/seeds/module_def/{name}.bin", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

#[test]
fn the_2_14_fixture_modules_describe_themselves_in_v10_and_validate() {
    for name in ["bank_2x", "bank_2x_v2", "chat_2x", "features_2x"] {
        let def = module_def_from_bytes(&seed(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(def.version, DefVersion::V10, "{name}");
    }
    let def = module_def_from_bytes(&seed("features_2x")).unwrap();
    let table = def.table("high_score").expect("highScore under its canonical name");
    assert_eq!(table.source_name.as_deref(), Some("highScore"));
    assert!(table.indexes.iter().any(|i| matches!(i.algorithm, IndexAlgorithm::Hash(_))));
    assert!(def.table("damage").unwrap().is_event);
    assert!(def.table("explicitly_named").is_some());
    let names: Vec<&str> = def.procedures.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        ["add_numbers", "fetch_twice", "scheduled_fetch", "spin_in_tx"],
        "declaration order, as the module lists them"
    );
    assert_eq!(def.views.len(), 3);
    let tick = &def.reducers[def.reducer_id("tick").unwrap()];
    assert_eq!(tick.visibility, FunctionVisibility::Private);
    let v1 = module_def_from_bytes(&seed("bank")).unwrap();
    assert_eq!(v1.version, DefVersion::V9, "a 1.3 module keeps V9");
}
