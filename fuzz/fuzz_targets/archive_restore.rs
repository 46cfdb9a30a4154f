//! An archive folder as a restore finds it: a snapshot and log segments, written by anyone
//! (their CRC32C checksums are computed here, as an attacker can). `epoch_archive::restore`
//! fetches them into a database directory and recovery replays it into a store, as
//! `epoch_core::persist` does. Never panics; whatever loads is consistent: every unique index
//! holds exactly one entry per row (no duplicate key loaded), a table without one holds no row
//! twice, the snapshot restored is the one reported and holds the offset its name says, and
//! the replayed log continues the snapshot with no gap and no wrap past `u64::MAX`.
//!
//! Input (see `parse`): a snapshot (name offset, then either raw body bytes or a structured
//! snapshot with a fuzzed offset and rows) and up to 4 segments, each a start offset and
//! frames (raw payloads, or structured records whose offsets and rows are fuzzed). Rows use
//! small key spaces so duplicates are common.
#![no_main]

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use epoch_archive::{ArchiveTarget, StopAt, StoreOptions};
use epoch_commitlog::{read_latest_snapshot, read_log, PackedRows, Snapshot, TableChange, TxRecord};
use epoch_sats::{bsatn, AlgebraicType, AlgebraicValue, ProductType, Typespace};
use epoch_schema::{ModuleDef, TableDef};
use epoch_store::Store;
use libfuzzer_sys::fuzz_target;

/// Bytes read one field at a time; missing bytes read as zero.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn u8(&mut self) -> u8 {
        let (b, rest) = self.0.split_first().map_or((0, &[][..]), |(b, r)| (*b, r));
        self.0 = rest;
        b
    }

    fn u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        b.iter_mut().for_each(|x| *x = self.u8());
        u64::from_le_bytes(b)
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let n = n.min(self.0.len());
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        head.to_vec()
    }
}

/// Table 0 `t(id: i32 unique, grp: i16 indexed, name: string)`; table 1 `bag(a: u64)`, a set.
fn def() -> ModuleDef {
    let t =
        ProductType::new([("id", AlgebraicType::I32), ("grp", AlgebraicType::I16), ("name", AlgebraicType::String)]);
    let bag = ProductType::new([("a", AlgebraicType::U64)]);
    ModuleDef {
        typespace: Typespace { types: vec![AlgebraicType::Product(t.clone()), AlgebraicType::Product(bag.clone())] },
        tables: vec![
            TableDef::plain("t", 0, t).with_unique_key(0).with_btree_index(&[1]),
            TableDef::plain("bag", 1, bag),
        ],
        reducers: Vec::new(),
        types: Vec::new(),
        row_level_security: Vec::new(),
        ..Default::default()
    }
}

/// A row of table `table` (0 or 1) from the input: ids from a small range, so keys repeat.
fn row(input: &mut Input, table: u32) -> Vec<u8> {
    let v = if table == 0 {
        let name_len = (input.u8() % 4) as usize;
        let name = String::from_utf8_lossy(&input.bytes(name_len)).into_owned();
        AlgebraicValue::product([
            AlgebraicValue::I32(i32::from(input.u8() % 8)),
            AlgebraicValue::I16(i16::from(input.u8())),
            AlgebraicValue::string(name),
        ])
    } else {
        AlgebraicValue::product([AlgebraicValue::U64(u64::from(input.u8() % 8))])
    };
    bsatn::to_vec(&v)
}

fn snapshot_file(input: &mut Input) -> Vec<u8> {
    let flags = input.u8();
    if flags & 1 == 1 {
        // A raw body, framed and checksummed.
        let len = input.u8() as usize * 4;
        let mut file = b"EPOCHSN1".to_vec();
        file.extend_from_slice(&input.bytes(len));
        let crc = crc32c::crc32c(&file);
        file.extend_from_slice(&crc.to_le_bytes());
        return file;
    }
    let offset = if flags & 2 == 2 { input.u64() } else { u64::from(input.u8()) };
    let tables = (0..input.u8() % 3)
        .map(|_| {
            let table = u32::from(input.u8() % 2);
            let rows: Vec<Vec<u8>> = (0..input.u8() % 8).map(|_| row(input, table)).collect();
            (table, rows.iter().map(|r| &r[..]).collect::<PackedRows>())
        })
        .collect();
    Snapshot { offset, tables, ..Default::default() }.encode()
}

fn segment_file(input: &mut Input, start: u64) -> Vec<u8> {
    let mut file = b"EPOCHLG1".to_vec();
    for i in 0..input.u8() % 6 {
        let flags = input.u8();
        let payload = if flags & 1 == 1 {
            let len = input.u8() as usize;
            input.bytes(len)
        } else {
            let offset = match flags & 6 {
                2 => input.u64(),
                4 => start.wrapping_add(u64::from(i)).wrapping_add(u64::from(input.u8())),
                _ => start.wrapping_add(u64::from(i)),
            };
            let table = u32::from(input.u8() % 2);
            let inserts = (0..input.u8() % 4).map(|_| row(input, table).into()).collect();
            let deletes = (0..input.u8() % 2).map(|_| row(input, table).into()).collect();
            let record = TxRecord {
                offset,
                reducer: "fuzz".into(),
                tables: vec![TableChange { table_id: table, inserts, deletes }],
                ..Default::default()
            };
            let mut out = Vec::new();
            record.encode(&mut out);
            out
        };
        file.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        file.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
        file.extend_from_slice(&payload);
    }
    file
}

/// Writes the archive folder the input describes into `arch`.
fn parse(data: &[u8], arch: &Path) {
    let mut input = Input(data);
    let flags = input.u8();
    if flags & 1 == 1 {
        let name = if flags & 2 == 2 { input.u64() } else { u64::from(input.u8()) };
        let file = snapshot_file(&mut input);
        std::fs::create_dir_all(arch.join("snapshots")).unwrap();
        std::fs::write(arch.join("snapshots").join(format!("{name:020}.snap")), file).unwrap();
    }
    std::fs::create_dir_all(arch.join("log")).unwrap();
    for _ in 0..input.u8() % 5 {
        let start = if input.u8() & 1 == 1 { input.u64() } else { u64::from(input.u8()) };
        let file = segment_file(&mut input, start);
        std::fs::write(arch.join("log").join(format!("{start:020}.log")), file).unwrap();
    }
}

/// Recovery as `epoch_core::persist` does it: the newest snapshot, then the log after it.
fn replay(dir: &Path) -> Result<Store, String> {
    let mut store = Store::new(&def());
    let mut next = 0u64;
    if let Some(s) = read_latest_snapshot(&dir.join("snapshots")) {
        for (table, rows) in &s.tables {
            store.apply_recovered(*table, rows.iter(), &[]).map_err(|e| e.to_string())?;
        }
        next = s.offset.checked_add(1).ok_or("a snapshot at u64::MAX")?;
    }
    let log = read_log(&dir.join("log"), next, false).map_err(|e| e.to_string())?;
    if log.records.first().is_some_and(|r| r.offset != next) {
        return Err("a gap after the snapshot".into());
    }
    for (i, rec) in log.records.iter().enumerate() {
        assert_eq!(rec.offset, next + i as u64, "replayed offsets are contiguous");
        for t in &rec.tables {
            store
                .apply_recovered(t.table_id, t.inserts.iter().map(|r| &r[..]), &t.deletes)
                .map_err(|e| e.to_string())?;
        }
    }
    Ok(store)
}

/// Every unique index holds one entry per row; a table without one holds no row twice.
fn check_consistent(store: &Store) {
    for table in [0u32, 1] {
        let t = store.table(table).expect("the table exists");
        let unique: Vec<_> = t.indexes.iter().filter(|i| i.unique).collect();
        for idx in &unique {
            assert_eq!(idx.len(), t.len(), "unique index {} holds every row once", idx.name);
        }
        if unique.is_empty() {
            let rows: HashSet<&[u8]> = t.iter().map(|(_, r)| r).collect();
            assert_eq!(rows.len(), t.len(), "no row twice in a set");
        }
    }
}

fn folder() -> &'static (PathBuf, ArchiveTarget) {
    static FOLDER: OnceLock<(PathBuf, ArchiveTarget)> = OnceLock::new();
    FOLDER.get_or_init(|| {
        let root = std::env::temp_dir().join(format!("epoch-fuzz-archive-{}", std::process::id()));
        let arch = root.join("arch");
        std::fs::create_dir_all(&arch).unwrap();
        let target = ArchiveTarget::open(&format!("file://{}", arch.display()), &StoreOptions::default())
            .expect("a local archive folder opens");
        (root, target)
    })
}

fuzz_target!(|data: &[u8]| {
    let (root, target) = folder();
    let (arch, dest) = (root.join("arch"), root.join("dest"));
    for dir in [&arch, &dest] {
        let _ = std::fs::remove_dir_all(dir.join("log"));
        let _ = std::fs::remove_dir_all(dir.join("snapshots"));
    }
    let _ = std::fs::remove_dir_all(&dest);
    std::fs::create_dir_all(&dest).unwrap();
    parse(data, &arch);
    let Ok((_, report)) = epoch_archive::restore(target, &dest, StopAt::Latest) else { return };
    if let Some(s) = report.snapshot {
        let bytes = std::fs::read(dest.join("snapshots").join(format!("{s:020}.snap"))).expect("restored");
        let snapshot = Snapshot::decode(&bytes).expect("a restored snapshot reads back whole");
        assert_eq!(snapshot.offset, s, "the snapshot holds the offset its name says");
        assert!(s < u64::MAX, "a transaction can follow the restored snapshot");
    }
    if let Ok(store) = replay(&dest) {
        check_consistent(&store);
    }
});
