//! Workload 10 of `epoch bench`, Epoch only (SpacetimeDB has no continuous archiving): what
//! archiving costs the writers, and how long a commit takes to reach the archive.
//!
//! Two bank databases on the same server, one archived (its own archive configuration, a
//! 1-second lag bound, to moto's S3 when `moto_server` is installed, else `file://`) and one
//! not, take the HTTP `transfer_fast` load in turn, twice each. Then a writer calls
//! `transfer` on the archived one while the archive status is polled every 20 ms: each
//! transaction's lag is from when the status first showed it committed to when it showed it
//! shipped. Last, `rows` accounts are loaded (transactions of 10,000) into a third database,
//! which is backed up to `file://` and restored from there as a fourth, each timed end to end
//! through the HTTP routes `epoch backup` and `epoch restore` use.

use std::collections::VecDeque;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use reqwest::Method;
use serde_json::json;

use super::load::{http_transfers, pct};
use super::servers::{Client, Moto, Server};
use super::Row;
use crate::limits::{ACCOUNTS, LOAD_BATCH, MAX_LAG_SECONDS, POLL_INTERVAL, WRITER_PAUSE};

/// Runs the workload on `epoch` and adds its rows (with no value for the `servers - 1` others).
pub(crate) fn run(
    epoch: &Server,
    servers: usize,
    bank: &[u8],
    secs: Duration,
    bulk_rows: u32,
    scratch: &Path,
    rows: &mut Vec<Row>,
) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let c = Client::new(epoch)?;
    let moto = Moto::start()?;
    let (store, place) = match &moto {
        Some(m) => {
            let r = reqwest::blocking::Client::new().put(format!("{}/bench-archive", m.url)).send()?;
            anyhow::ensure!(r.status().is_success(), "creating moto's bucket: {}", r.status());
            (json!({"url": "s3://bench-archive/on", "endpoint": m.url}), "S3 (moto)")
        }
        None => (json!({"url": format!("file://{}", scratch.join("archive").display())}), "file://"),
    };
    for db in ["archon", "archoff"] {
        c.publish(db, bank)?;
        c.call(db, "open_accounts", json!([0, ACCOUNTS, 1_000_000_000]))?;
    }
    let mut config = store;
    config["maxLagSeconds"] = json!(MAX_LAG_SECONDS);
    c.admin(Method::PUT, "/v1/database/archon/archive", Some(&config)).context("archiving the benchmark database")?;
    c.admin(Method::PUT, "/v1/database/archoff/archive", Some(&json!({"enabled": false})))?;

    // Alternating runs, so both see the machine alike.
    let (mut on, mut off) = (Vec::new(), Vec::new());
    for _ in 0..2 {
        for (db, rates) in [("archoff", &mut off), ("archon", &mut on)] {
            let (rate, _) = rt.block_on(http_transfers(&c.url, &c.token, db, secs))?;
            eprintln!("HTTP calls, {db}: {rate:.0}/s");
            rates.push(rate);
        }
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let (on, off) = (mean(&on), mean(&off));

    let lags = lag(&c, secs.max(Duration::from_secs(10)))?;
    eprintln!(
        "archive lag ({place}, {MAX_LAG_SECONDS} s bound): {} transactions, p50 {:.2} s, p99 {:.2} s",
        lags.len(),
        pct(&lags, 0.5),
        pct(&lags, 0.99)
    );
    let (backup_ms, restore_ms) = backup_and_restore(&c, bank, bulk_rows, scratch)?;
    eprintln!("{bulk_rows} rows: backup {backup_ms:.0} ms, restore {restore_ms:.0} ms");
    let mut row = |workload: String, metric: &'static str, value: f64| {
        let mut r = Row::new(workload, metric, false);
        r.values.push(Some(value));
        r.values.extend(std::iter::repeat_n(None, servers - 1));
        rows.push(r);
    };
    row("10. archiving off: HTTP transfer_fast".into(), "calls/s", off);
    row(format!("10. archiving on ({place}): HTTP transfer_fast"), "calls/s", on);
    row(format!("10. archiving on ({place}) / off"), "calls/s ratio", on / off);
    row(format!("10. archive lag ({place}, {MAX_LAG_SECONDS} s bound)"), "p50 s", pct(&lags, 0.5));
    row(format!("10. archive lag ({place}, {MAX_LAG_SECONDS} s bound)"), "p99 s", pct(&lags, 0.99));
    row(format!("10. backup of {bulk_rows} rows (file://)"), "ms", backup_ms);
    row(format!("10. restore of {bulk_rows} rows (file://)"), "ms", restore_ms);
    Ok(())
}

/// Loads `n` accounts into a new database, backs it up to `file://` and restores it; returns
/// both times (ms), after checking the restored copy holds every row.
fn backup_and_restore(c: &Client, bank: &[u8], n: u32, scratch: &Path) -> Result<(f64, f64)> {
    c.publish("archbig", bank)?;
    for first in (0..n).step_by(LOAD_BATCH as usize) {
        c.call("archbig", "open_accounts", json!([first, LOAD_BATCH.min(n - first), 1000]))?;
    }
    let to = format!("file://{}", scratch.join("backup").display());
    let started = Instant::now();
    c.admin(Method::POST, "/v1/database/archbig/backup", Some(&json!({"to": to})))?;
    let backup = started.elapsed().as_secs_f64() * 1e3;
    let started = Instant::now();
    c.admin(Method::POST, "/v1/database/archcopy/restore", Some(&json!({"from": to})))?;
    let restore = started.elapsed().as_secs_f64() * 1e3;
    let count = c.sql_rows("archcopy", "SELECT COUNT(*) AS n FROM account")?;
    anyhow::ensure!(
        count.first().and_then(|r| r[0].as_u64()) == Some(n as u64),
        "the restored copy holds {count:?} accounts, not {n}"
    );
    Ok((backup, restore))
}

/// Writes to `archon` for `window` while polling its archive status; returns each
/// transaction's lag (seconds) from committed to shipped, as the status showed them.
fn lag(c: &Client, window: Duration) -> Result<Vec<f64>> {
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let writer = s.spawn(|| -> Result<()> {
            let mut n = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let pair = (n % (ACCOUNTS / 2)) * 2;
                c.call("archon", "transfer", json!([pair, pair + 1, 1]))?;
                n += 1;
                std::thread::sleep(WRITER_PAUSE);
            }
            Ok(())
        });
        // Transactions seen committed and not yet shipped, with when they were first seen.
        let mut waiting: VecDeque<(u64, Instant)> = VecDeque::new();
        let mut seen_end = None::<u64>;
        let mut lags = Vec::new();
        let started = Instant::now();
        // Keep polling after the writer stops until what it wrote is shipped.
        let deadline = started + window + Duration::from_secs_f64(MAX_LAG_SECONDS * 5.0 + 5.0);
        while Instant::now() < deadline {
            if started.elapsed() >= window {
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
                if waiting.is_empty() {
                    break;
                }
            }
            let v = c.admin(Method::GET, "/v1/database/archon/archive", None)?;
            let now = Instant::now();
            if let Some(last) = v["lastOffset"].as_u64() {
                // Offsets committed before the first poll have no known commit time.
                let from = seen_end.unwrap_or(last + 1);
                waiting.extend((from..=last).map(|o| (o, now)));
                seen_end = Some(seen_end.map_or(last + 1, |e| e.max(last + 1)));
            }
            let shipped = v["shippedEnd"].as_u64().unwrap_or(0);
            while waiting.front().is_some_and(|(o, _)| *o < shipped) {
                let (_, at) = waiting.pop_front().unwrap_or((0, now));
                lags.push(now.duration_since(at).as_secs_f64());
            }
            std::thread::sleep(POLL_INTERVAL);
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        writer.join().map_err(|_| anyhow::anyhow!("the writer panicked"))??;
        anyhow::ensure!(!lags.is_empty(), "nothing reached the archive during the lag measurement");
        Ok(lags)
    })
}
