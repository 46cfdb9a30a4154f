//! `epoch restore` and `epoch archive-status`: a database rebuilt from its archive on the
//! server, and what the archiver has shipped. Both need the server's admin key.

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

pub fn status(database: &str, server: &str, config_path: &std::path::Path, key: Option<String>) -> Result<()> {
    let server = server.trim_end_matches('/');
    let token = crate::client::token_for(server, config_path)?;
    let req = Client::new()
        .get(format!("{server}/v1/database/{database}/archive"))
        .header("X-Admin-API-Key", admin(key)?)
        .bearer_auth(&token);
    println!("{}", serde_json::to_string_pretty(&answer(req)?)?);
    Ok(())
}
