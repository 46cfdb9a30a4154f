//! `epoch bench`: one side-by-side benchmark of Epoch against the reference SpacetimeDB 1.3
//! server. It starts both servers itself (each on a fresh data directory and a free port),
//! publishes the same modules to both, and runs every workload on one server and then the
//! other before moving to the next workload, so both see the same machine at nearly the same
//! time. It prints a table (workload, metric, a value per server, the ratio) and can write it
//! as JSON. Without a reference it prints Epoch's figures alone.
//!
//! The workloads (numbered as in `docs/performance.md`):
//! 1. `http`: HTTP reducer calls (`load`).
//! 2. `calls`: WebSocket reducer calls from 1, 16 and 64 clients (`load`).
//! 3. `fanout`: subscription fan-out to 100 and 1,000 subscribers (`load`).
//! 4. `initial`: the initial subscription of 100,000 rows (`load`).
//! 5. `sql`: SQL over HTTP, point, range and full scan (`load`).
//! 6. `bulk`: bulk load through reducers; time, resident memory, bytes on disk (`storage`).
//! 7. `restart`: process start to serving after a kill (`storage`).
//! 8. `memory`: resident bytes per row of a one-column `u64` table (`storage`).
//! 9. `sync`: resync aggregates/s, shadows/s, AT Protocol records/s, Epoch only (`sync`).
//! 10. `archive`: HTTP calls/s with archiving on and off, and the lag from commit to archive,
//!     Epoch only (`archive`).

mod archive;
mod load;
mod servers;
mod storage;
mod sync;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};

/// Every workload, in the order they run.
pub const WORKLOADS: [&str; 10] =
    ["http", "calls", "fanout", "initial", "sql", "bulk", "restart", "memory", "sync", "archive"];

/// What `epoch bench` runs.
pub struct Options {
    /// The reference server's `run.sh` (from `build-reference.sh`), when comparing.
    pub reference: Option<PathBuf>,
    /// Smaller counts and shorter windows: a look in under five minutes.
    pub quick: bool,
    /// Measured seconds per workload and server (else 10, or 2 when quick).
    pub seconds: Option<u64>,
    /// The directory holding `bank.wasm`, `numbers.wasm` and `projections.wasm`.
    pub modules: PathBuf,
    /// Only these workloads (see [`WORKLOADS`]); all when empty.
    pub only: Vec<String>,
    /// Where to write the results as JSON, too.
    pub json: Option<PathBuf>,
    /// More flags for Epoch's `epoch start` (to measure a setting, e.g. `--durability=async`).
    pub epoch_args: Vec<String>,
}

/// The sizes of the counted workloads.
#[derive(Clone, Copy)]
pub(crate) struct Scale {
    /// Rows of the bulk load and of the restart.
    pub bulk_rows: u32,
    /// Rows of the memory-per-row table.
    pub memory_rows: u64,
    /// Aggregates of the resync.
    pub aggregates: usize,
    /// Named shadows of the force-sync.
    pub shadows: usize,
    /// AT Protocol repos, and records in each, of the full_sync.
    pub repos: usize,
    pub records_per_repo: usize,
}

impl Scale {
    fn new(quick: bool) -> Self {
        if quick {
            Self {
                bulk_rows: 100_000,
                memory_rows: 1_000_000,
                aggregates: 2_000,
                shadows: 100,
                repos: 2,
                records_per_repo: 200,
            }
        } else {
            Self {
                bulk_rows: 1_000_000,
                memory_rows: 10_000_000,
                aggregates: 100_000,
                shadows: 1_000,
                repos: 20,
                records_per_repo: 1_000,
            }
        }
    }
}

/// One line of the results: a workload's metric, with a value per server (none where the
/// server has no such feature).
pub(crate) struct Row {
    pub workload: String,
    pub metric: &'static str,
    pub values: Vec<Option<f64>>,
    pub lower_better: bool,
}

impl Row {
    pub fn new(workload: impl Into<String>, metric: &'static str, lower_better: bool) -> Self {
        Self { workload: workload.into(), metric, values: Vec::new(), lower_better }
    }

    /// How many times better the first server is than server `i`.
    fn ratio(&self, i: usize) -> Option<f64> {
        let (first, other) = (self.values.first().copied().flatten()?, self.values.get(i).copied().flatten()?);
        Some(if self.lower_better { other / first } else { first / other })
    }
}

/// Runs the benchmark and prints (and writes) its table.
pub fn run(opts: Options) -> Result<()> {
    for w in &opts.only {
        anyhow::ensure!(WORKLOADS.contains(&w.as_str()), "unknown workload {w:?}; the workloads are {WORKLOADS:?}");
    }
    let wanted = |w: &str| opts.only.is_empty() || opts.only.iter().any(|o| o == w);
    let secs = Duration::from_secs(opts.seconds.unwrap_or(if opts.quick { 2 } else { 10 }));
    let scale = Scale::new(opts.quick);
    let module = |name: &str| -> Result<Vec<u8>> {
        let path = opts.modules.join(format!("{name}.wasm"));
        std::fs::read(&path).with_context(|| format!("reading {} (see --modules)", path.display()))
    };
    let (bank, numbers, projections) = (module("bank")?, module("numbers")?, module("projections")?);

    // moto (the archive workload's S3) takes any credentials; without any, the S3 client
    // would look for an instance profile. Real credentials in the environment are kept.
    if std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
        std::env::set_var("AWS_ACCESS_KEY_ID", "bench");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "bench");
    }
    let root = tempdir()?;
    let mut servers = vec![servers::Server::start_epoch(&root.0.join("epoch"), &opts.epoch_args)?];
    if let Some(reference) = &opts.reference {
        servers.push(servers::Server::start_reference(reference, &root.0.join("reference"))?);
    }
    for s in &servers {
        eprintln!("started {} at {} (data in {})", s.name, s.url, s.data_dir.display());
    }

    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let mut rows = Vec::new();
    let load_wanted = ["http", "calls", "fanout", "initial", "sql"].iter().any(|w| wanted(w));
    if load_wanted {
        rt.block_on(load::run(&servers, &bank, secs, &wanted, &mut rows))?;
    }
    if wanted("bulk") || wanted("restart") {
        storage::bulk_and_restart(&mut servers, &bank, scale, wanted("restart"), &mut rows)?;
    }
    if wanted("memory") {
        storage::memory_per_row(&servers, &numbers, scale, &mut rows)?;
    }
    if wanted("sync") {
        sync::run(&servers[0], servers.len(), &projections, scale, &root.0, &mut rows)?;
    }
    if wanted("archive") {
        archive::run(&servers[0], servers.len(), &bank, secs, scale.bulk_rows, &root.0, &mut rows)?;
    }

    let names: Vec<&str> = servers.iter().map(|s| s.name.as_str()).collect();
    print_table(&names, &rows);
    if let Some(path) = &opts.json {
        std::fs::write(path, serde_json::to_vec_pretty(&rows_json(&servers, &rows, &opts, scale))?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// A temporary directory removed when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tempdir() -> Result<TempDir> {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.subsec_nanos();
    let dir = std::env::temp_dir().join(format!("epoch-bench-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(TempDir(dir))
}

/// The results as JSON: the servers, the sizes, and a list of rows, each with its values by
/// server and its ratios (how many times better Epoch is than each other server).
fn rows_json(servers: &[servers::Server], rows: &[Row], opts: &Options, scale: Scale) -> serde_json::Value {
    let rows: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| {
            let values: serde_json::Map<String, serde_json::Value> =
                servers.iter().zip(&r.values).map(|(s, v)| (s.name.clone(), serde_json::json!(v))).collect();
            let ratios: serde_json::Map<String, serde_json::Value> = servers
                .iter()
                .enumerate()
                .skip(1)
                .map(|(i, s)| (s.name.clone(), serde_json::json!(r.ratio(i))))
                .collect();
            serde_json::json!({"workload": r.workload, "metric": r.metric, "lowerIsBetter": r.lower_better,
                               "values": values, "ratios": ratios})
        })
        .collect();
    serde_json::json!({
        "servers": servers.iter().map(|s| s.name.clone()).collect::<Vec<_>>(),
        "quick": opts.quick,
        "epochArgs": opts.epoch_args,
        "scale": {"bulkRows": scale.bulk_rows, "memoryRows": scale.memory_rows, "aggregates": scale.aggregates,
                  "shadows": scale.shadows, "repos": scale.repos, "recordsPerRepo": scale.records_per_repo},
        "machine": {"cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)},
        "rows": rows,
    })
}

fn print_table(names: &[&str], rows: &[Row]) {
    let mut header = format!("{:<38} {:<20}", "workload", "metric");
    for n in names {
        header.push_str(&format!(" {n:>12}"));
    }
    for n in &names[1..] {
        header.push_str(&format!(" {:>16}", format!("{}/{n}", names[0])));
    }
    println!("{header}");
    for r in rows {
        let mut line = format!("{:<38} {:<20}", r.workload, r.metric);
        for v in &r.values {
            match v {
                Some(v) => line.push_str(&format!(" {v:>12.2}")),
                None => line.push_str(&format!(" {:>12}", "-")),
            }
        }
        for i in 1..names.len() {
            match r.ratio(i) {
                Some(x) => line.push_str(&format!(" {:>15.2}x", x)),
                None => line.push_str(&format!(" {:>16}", "-")),
            }
        }
        println!("{line}");
    }
}
