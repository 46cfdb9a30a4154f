//! Operations: `epoch restore` (a database rebuilt from its archive on the server),
//! `epoch archive` (where a database is archived, what is shipped), `epoch backup` and
//! `epoch backup verify`, `epoch export` and `epoch import`.

use anyhow::{Context, Result};
use reqwest::blocking::Client;
use serde_json::json;

use crate::sync_cmd::answer;

/// Where a restore stops.
pub struct RestoreArgs {
    pub from: String,
    pub at: Option<String>,
    pub offset: Option<u64>,
    pub as_name: String,
    pub endpoint: Option<String>,
    pub region: Option<String>,
}

fn admin(key: Option<String>) -> Result<String> {
    key.context("restoring and archive status need the server's admin key: --admin-api-key or EPOCH_ADMIN_API_KEY")
}

pub fn restore(args: RestoreArgs, server: &str, config_path: &std::path::Path, key: Option<String>) -> Result<()> {
    let server = server.trim_end_matches('/');
    let token = crate::client::token_for(server, config_path)?;
    let mut body = json!({"from": args.from});
    if let Some(at) = &args.at {
        body["at"] = json!(at);
    }
    if let Some(offset) = args.offset {
        body["offset"] = json!(offset);
    }
    for (field, v) in [("endpoint", &args.endpoint), ("region", &args.region)] {
        if let Some(v) = v {
            body[field] = json!(v);
        }
    }
    // A restore downloads and replays a whole archive: no client-side time limit.
    let http = Client::builder().timeout(None).build()?;
    let req = http
        .post(format!("{server}/v1/database/{}/restore", args.as_name))
        .header("X-Admin-API-Key", admin(key)?)
        .bearer_auth(&token)
        .json(&body);
    let v = answer(req)?;
    let offset = v["offset"].as_u64().map_or("none (as created)".to_string(), |o| o.to_string());
    println!(
        "Restored {} as {} (identity {}): up to transaction {offset}, from snapshot {}, {} log segments, in {} ms",
        args.from,
        args.as_name,
        v["identity"].as_str().unwrap_or("?"),
        v["snapshot"].as_u64().map_or("none".to_string(), |s| s.to_string()),
        v["segments"],
        v["elapsedMs"]
    );
    Ok(())
}

/// A change to a database's archiving.
pub enum ArchiveChange {
    /// Its own folder and/or lag bound.
    To { url: Option<String>, endpoint: Option<String>, region: Option<String>, max_lag_seconds: Option<f64> },
    /// Not archived.
    Off,
    /// The server's default again.
    ServerDefault,
}

/// `epoch archive DATABASE [--to URL … | --off | --server-default]`: changes the database's
/// archiving if asked, then prints where it is archived and what is shipped.
pub fn archive(
    database: &str,
    change: Option<ArchiveChange>,
    server: &str,
    config_path: &std::path::Path,
    key: Option<String>,
) -> Result<()> {
    let server = server.trim_end_matches('/');
    let token = crate::client::token_for(server, config_path)?;
    let url = format!("{server}/v1/database/{database}/archive");
    let http = Client::new();
    let req = match change {
        None => http.get(url),
        Some(ArchiveChange::ServerDefault) => http.delete(url),
        Some(ArchiveChange::Off) => http.put(url).json(&json!({"enabled": false})),
        Some(ArchiveChange::To { url: to, endpoint, region, max_lag_seconds }) => {
            let mut body = json!({});
            for (field, v) in [("url", to), ("endpoint", endpoint), ("region", region)] {
                if let Some(v) = v {
                    body[field] = json!(v);
                }
            }
            if let Some(s) = max_lag_seconds {
                body["maxLagSeconds"] = json!(s);
            }
            http.put(url).json(&body)
        }
    };
    let v = answer(req.header("X-Admin-API-Key", admin(key)?).bearer_auth(&token))?;
    println!("{}", serde_json::to_string_pretty(&v)?);
    Ok(())
}

/// `epoch backup DATABASE --to URL`: asks the server for a consistent backup of a live database.
pub fn backup(
    database: &str,
    to: &str,
    endpoint: Option<String>,
    server: &str,
    config_path: &std::path::Path,
    key: Option<String>,
) -> Result<()> {
    let server = server.trim_end_matches('/');
    let token = crate::client::token_for(server, config_path)?;
    let mut body = json!({"to": to});
    if let Some(e) = endpoint {
        body["endpoint"] = json!(e);
    }
    let http = Client::builder().timeout(None).build()?;
    let req = http
        .post(format!("{server}/v1/database/{database}/backup"))
        .header("X-Admin-API-Key", admin(key)?)
        .bearer_auth(&token)
        .json(&body);
    let v = answer(req)?;
    println!(
        "Backed up {database} to {to}: up to transaction {}, {} log segments and {} snapshots written, in {} ms",
        v["offset"].as_u64().map_or("none".to_string(), |o| o.to_string()),
        v["segments"],
        v["snapshots"],
        v["elapsedMs"]
    );
    Ok(())
}

/// `epoch backup verify URL`: reads a backup or archive folder here, checks every snapshot's
/// and every log frame's checksum, and replays it into a scratch database, as a restore would.
pub fn verify(url: &str, endpoint: Option<String>, region: Option<String>) -> Result<()> {
    let options = epoch_archive::StoreOptions { endpoint, region, ..Default::default() };
    let target = epoch_archive::ArchiveTarget::open(url, &options)?;
    let mut snapshots = 0;
    for name in target.list("snapshots")? {
        let bytes = target.get(&format!("snapshots/{name}"))?;
        epoch_commitlog::Snapshot::decode(&bytes).map_err(|e| anyhow::anyhow!("snapshot {name} is damaged: {e}"))?;
        snapshots += 1;
    }
    let scratch = std::env::temp_dir().join(format!("epoch-verify-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch)?;
    let result = (|| -> Result<()> {
        // Every log frame's checksum is checked as the log is read.
        let (wasm, report) = epoch_archive::restore(&target, &scratch, epoch_archive::StopAt::Latest)?;
        let (replayed, rows) = match wasm {
            Some(wasm) => {
                let (db, recovered) = epoch_core::Database::open_persistent(
                    &wasm,
                    epoch_core::Identity::default(),
                    epoch_core::HostConfig::default(),
                    &scratch,
                    epoch_core::PersistConfig::default(),
                )
                .map_err(|e| anyhow::anyhow!("replaying the backup failed: {e}"))?;
                let rows = db.store().present_tables().map(|t| format!("{} {}", t.schema.name(), t.len())).collect();
                (recovered.replayed.to_string(), rows)
            }
            // No module: the archive of a server's system database.
            None => {
                let system = epoch_control::SystemDb::open(&scratch, &epoch_core::PersistConfig::default())
                    .map_err(|e| anyhow::anyhow!("replaying the system database's archive failed: {e}"))?;
                let rows = epoch_control::system::ALL
                    .iter()
                    .map(|t| format!("{} {}", t.name(), system.rows(*t).len()))
                    .collect();
                ("all".to_string(), rows)
            }
        };
        let rows: Vec<String> = rows;
        println!(
            "OK: {url}: {} snapshots, {} log segments, {} transactions replayed up to offset {}; rows: {}",
            snapshots,
            report.segments,
            replayed,
            report.offset.map_or("none".to_string(), |o| o.to_string()),
            rows.join(", ")
        );
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

/// `epoch export DATABASE [--table T]… --format jsonl|csv [--out DIR]`: tables written to
/// `DIR/<table>.<format>` (every table when none is named), or one table to standard output.
pub fn export(
    database: &str,
    tables: Vec<String>,
    format: &str,
    out: Option<std::path::PathBuf>,
    server: &str,
    config_path: &std::path::Path,
) -> Result<()> {
    anyhow::ensure!(matches!(format, "jsonl" | "csv"), "--format is jsonl or csv");
    let server = server.trim_end_matches('/');
    let token = crate::client::token_for(server, config_path)?;
    let http = Client::builder().timeout(None).build()?;
    let tables = if tables.is_empty() {
        let schema: serde_json::Value = http
            .get(format!("{server}/v1/database/{database}/schema?version=9"))
            .bearer_auth(&token)
            .send()?
            .error_for_status()?
            .json()?;
        schema["tables"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t["name"].as_str().map(str::to_string))
            .collect()
    } else {
        tables
    };
    anyhow::ensure!(out.is_some() || tables.len() == 1, "several tables need --out DIR");
    for table in &tables {
        let r = http
            .get(format!("{server}/v1/database/{database}/export/{table}"))
            .query(&[("format", format)])
            .bearer_auth(&token)
            .send()?;
        let status = r.status();
        let body = r.text()?;
        anyhow::ensure!(status.is_success(), "exporting {table}: {status} {body}");
        match &out {
            Some(dir) => {
                std::fs::create_dir_all(dir)?;
                let path = dir.join(format!("{table}.{format}"));
                std::fs::write(&path, &body).with_context(|| format!("writing {}", path.display()))?;
                eprintln!("{table}: {} rows to {}", body.lines().count() - (format == "csv") as usize, path.display());
            }
            None => print!("{body}"),
        }
    }
    Ok(())
}

/// `epoch import DATABASE --table T [--format jsonl|csv] FILE`: JSON lines or CSV (as `export`
/// writes them) inserted in one transaction, all or nothing.
pub fn import(
    database: &str,
    table: &str,
    format: &str,
    file: &std::path::Path,
    server: &str,
    config_path: &std::path::Path,
) -> Result<()> {
    let server = server.trim_end_matches('/');
    let token = crate::client::token_for(server, config_path)?;
    let body = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let r = Client::builder()
        .timeout(None)
        .build()?
        .post(format!("{server}/v1/database/{database}/import/{table}"))
        .query(&[("format", format)])
        .bearer_auth(&token)
        .body(body)
        .send()?;
    let status = r.status();
    let text = r.text()?;
    anyhow::ensure!(status.is_success(), "importing into {table}: {status} {text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    println!("Imported {} rows into {table}", v["imported"]);
    Ok(())
}
