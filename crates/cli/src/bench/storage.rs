//! The storage workloads of `epoch bench`: a bulk load through reducers (time, resident memory
//! and bytes on disk it adds), the restart of a killed server holding those rows, and the
//! resident bytes a row of a one-column `u64` table costs.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde_json::json;

use super::servers::{Client, Server};
use super::{Row, Scale};
use crate::limits::{BULK_BATCH, MEMORY_BATCH, SETTLE, START_TIMEOUT};

const MIB: f64 = 1024.0 * 1024.0;

/// Workload 6, and workload 7 when `restart`: loads `scale.bulk_rows` accounts of `bank` in
/// batches on each server, then kills it and times the restart to an answer counting them all.
pub(crate) fn bulk_and_restart(
    servers: &mut [Server],
    bank: &[u8],
    scale: Scale,
    restart: bool,
    rows: &mut Vec<Row>,
) -> Result<()> {
    let n = scale.bulk_rows;
    let workload = format!("6. bulk load, {n} rows by {BULK_BATCH}");
    let mut seconds = Row::new(&workload, "seconds", true);
    let mut per_s = Row::new(&workload, "rows/s", false);
    let mut resident = Row::new(&workload, "resident MiB added", true);
    let mut disk = Row::new(&workload, "disk MiB added", true);
    let mut restarted = Row::new(format!("7. restart with {n} rows"), "ms to first answer", true);
    for s in servers.iter_mut() {
        let c = Client::new(s)?;
        c.publish("benchbulk", bank)?;
        std::thread::sleep(SETTLE);
        let (rss0, disk0) = (s.resident_bytes()?, s.disk_bytes());
        let t = Instant::now();
        for first in (0..n).step_by(BULK_BATCH as usize) {
            c.call("benchbulk", "open_accounts", json!([first, BULK_BATCH.min(n - first), 1000]))?;
        }
        let elapsed = t.elapsed().as_secs_f64();
        std::thread::sleep(SETTLE);
        let (rss1, disk1) = (s.resident_bytes()?, s.disk_bytes());
        eprintln!("bulk {}: {n} rows in {elapsed:.2} s", s.name);
        seconds.values.push(Some(elapsed));
        per_s.values.push(Some(n as f64 / elapsed));
        resident.values.push(Some(rss1.saturating_sub(rss0) as f64 / MIB));
        disk.values.push(Some(disk1.saturating_sub(disk0) as f64 / MIB));
        if restart {
            let ms = restart_time(s, &c, n)?;
            eprintln!("restart {}: {ms:.0} ms", s.name);
            restarted.values.push(Some(ms));
        }
    }
    rows.extend([seconds, per_s, resident, disk]);
    if restart {
        rows.push(restarted);
    }
    Ok(())
}

/// Kills `s`, starts it again and returns the milliseconds until a count of the bulk table
/// answers with all `n` rows.
fn restart_time(s: &mut Server, c: &Client, n: u32) -> Result<f64> {
    s.kill();
    let t = Instant::now();
    s.spawn()?;
    let deadline = t + START_TIMEOUT;
    loop {
        if let Ok(rows) = c.sql_rows("benchbulk", "SELECT COUNT(*) AS n FROM account") {
            match rows.first().and_then(|r| r[0].as_u64()) {
                Some(count) if count == n as u64 => return Ok(t.elapsed().as_secs_f64() * 1e3),
                Some(count) => bail!("{} restarted with {count} of {n} rows", s.name),
                None => {}
            }
        }
        if Instant::now() > deadline {
            bail!("{} did not answer within {START_TIMEOUT:?} of its restart", s.name);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Workload 8: the resident bytes each row of the `numbers` module's one-column `u64` table
/// adds, over `scale.memory_rows` rows.
pub(crate) fn memory_per_row(servers: &[Server], numbers: &[u8], scale: Scale, rows: &mut Vec<Row>) -> Result<()> {
    let n = scale.memory_rows;
    let workload = format!("8. memory, {n} u64 rows");
    let mut per_row = Row::new(&workload, "resident bytes/row", true);
    let mut per_s = Row::new(&workload, "rows/s", false);
    for s in servers {
        let c = Client::new(s)?;
        c.publish("benchnumbers", numbers)?;
        // A first call, so the module's instance and the table exist before the baseline.
        c.call("benchnumbers", "fill", json!([u64::MAX - 1, 1]))?;
        std::thread::sleep(SETTLE);
        let rss0 = s.resident_bytes()?;
        let t = Instant::now();
        for first in (0..n).step_by(MEMORY_BATCH as usize) {
            c.call("benchnumbers", "fill", json!([first, MEMORY_BATCH.min(n - first)]))?;
        }
        let elapsed = t.elapsed().as_secs_f64();
        std::thread::sleep(SETTLE);
        let rss1 = s.resident_bytes()?;
        let bytes = rss1.saturating_sub(rss0) as f64 / n as f64;
        eprintln!("memory {}: {bytes:.1} bytes/row ({n} rows in {elapsed:.2} s)", s.name);
        per_row.values.push(Some(bytes));
        per_s.values.push(Some(n as f64 / elapsed));
    }
    rows.extend([per_row, per_s]);
    Ok(())
}
