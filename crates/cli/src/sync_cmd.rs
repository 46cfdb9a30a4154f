//! `epoch sync …`: run and watch the sync engine's workflows from the command line.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use reqwest::blocking::{Client, RequestBuilder};
use serde_json::{json, Value};

#[derive(Subcommand)]
pub enum SyncCommand {
    /// Resync projections from the database's object store.
    Resync {
        #[arg(long)]
        database: String,
        /// Only this aggregate type.
        #[arg(long = "type")]
        aggregate_type: Option<String>,
        /// Only this aggregate (needs --type).
        #[arg(long = "id")]
        aggregate_id: Option<String>,
        #[arg(long, default_value_t = epoch_api::limits::RESYNC_DEFAULT_BATCH_SIZE)]
        batch_size: u32,
        /// Seconds between batches.
        #[arg(long, default_value_t = epoch_api::limits::RESYNC_DEFAULT_DELAY_SECONDS)]
        delay: u32,
        /// Show a progress bar until the instance ends.
        #[arg(long)]
        follow: bool,
    },
    /// Force-sync every named shadow of one IoT thing through the database's shadow reducer.
    Shadows {
        #[arg(long)]
        database: String,
        /// The thing's name.
        thing: String,
        /// Also sync the classic (unnamed) shadow, as `$classic`.
        #[arg(long)]
        include_classic: bool,
        #[arg(long, default_value_t = epoch_api::limits::SHADOWS_DEFAULT_BATCH_SIZE)]
        batch_size: u32,
        /// Show a progress bar until the instance ends, then every shadow's line.
        #[arg(long)]
        follow: bool,
    },
    /// Repair the database's AT Protocol tables: catch_up (replay the firehose from the stored
    /// cursor) or full_sync (re-read every member's repo), chosen from the cursor's age.
    Backfill {
        #[arg(long)]
        database: String,
        /// catch_up or full_sync, overriding detection.
        #[arg(long)]
        force: Option<String>,
        /// Show progress until it ends.
        #[arg(long)]
        follow: bool,
    },
    /// Show a workflow instance (add --follow to watch it to the end).
    Status {
        /// The instance's database (instance ids are unique, so this is optional).
        #[arg(long)]
        database: Option<String>,
        id: String,
        #[arg(long)]
        follow: bool,
    },
    /// Pause a running workflow instance (it stops after the batch in flight).
    Pause { id: String },
    /// Resume a paused workflow instance.
    Resume { id: String },
    /// End a workflow instance for good.
    Terminate { id: String },
    /// Set the database's object store, device shadows and/or AT Protocol source (owner
    /// only); sections not named keep their settings.
    Config(Box<ConfigArgs>),
    /// Let another identity run sync operations on the database (owner only).
    Grant {
        #[arg(long)]
        database: String,
        identity: String,
    },
    /// Take the `sync` permission back.
    Revoke {
        #[arg(long)]
        database: String,
        identity: String,
    },
}

/// The settings `epoch sync config` changes.
#[derive(clap::Args)]
pub struct ConfigArgs {
    #[arg(long)]
    database: String,
    /// The object store: s3://bucket/prefix or file:///path/prefix
    #[arg(long)]
    url: Option<String>,
    #[arg(long)]
    endpoint: Option<String>,
    #[arg(long)]
    region: Option<String>,
    #[arg(long)]
    access_key_id: Option<String>,
    /// The secret key; prefer the EPOCH_S3_SECRET_ACCESS_KEY environment variable.
    #[arg(long, env = "EPOCH_S3_SECRET_ACCESS_KEY", hide_env_values = true)]
    secret_access_key: Option<String>,
    #[arg(long, default_value = "project_aggregate")]
    reducer: String,
    /// The AWS IoT data endpoint of the device shadows source (https://…-ats.iot.REGION.amazonaws.com).
    #[arg(long)]
    shadows_endpoint: Option<String>,
    #[arg(long)]
    shadows_region: Option<String>,
    #[arg(long)]
    shadows_access_key_id: Option<String>,
    /// Prefer the EPOCH_SHADOWS_SECRET_ACCESS_KEY environment variable.
    #[arg(long, env = "EPOCH_SHADOWS_SECRET_ACCESS_KEY", hide_env_values = true)]
    shadows_secret_access_key: Option<String>,
    /// Live shadow updates from this MQTT broker (mqtt://host:port).
    #[arg(long)]
    mqtt_url: Option<String>,
    /// The AT Protocol source: a PDS or relay (https://…); starts the live firehose consumer.
    #[arg(long)]
    atproto_service: Option<String>,
    /// A collection (NSID) to keep; repeat for more (default: every collection).
    #[arg(long = "atproto-collection")]
    atproto_collections: Vec<String>,
    /// A member (DID) to sync; repeat for more (default: every repo the service lists).
    #[arg(long = "atproto-member")]
    atproto_members: Vec<String>,
}

/// Runs a sync command against `server` with the saved token and the admin key.
pub fn run(cmd: SyncCommand, server: &str, config_path: &Path, admin_key: Option<String>) -> Result<()> {
    let server = server.trim_end_matches('/');
    let token = crate::client::token_for(server, config_path)?;
    let s = Session { server, token, http: Client::new(), admin_key };
    match cmd {
        SyncCommand::Resync { database, aggregate_type, aggregate_id, batch_size, delay, follow } => {
            resync(&s, &database, aggregate_type, aggregate_id, batch_size, delay, follow)?
        }
        SyncCommand::Backfill { database, force, follow } => backfill(&s, &database, force, follow)?,
        SyncCommand::Status { database, id, follow } => {
            let url = instance_url(server, database.as_deref(), &id);
            if follow {
                s.watch(&url, &id)?;
            } else {
                println!("{}", serde_json::to_string_pretty(&answer(s.auth(s.http.get(url))?)?)?);
            }
        }
        SyncCommand::Pause { id } => s.control(&id, "pause")?,
        SyncCommand::Resume { id } => s.control(&id, "resume")?,
        SyncCommand::Terminate { id } => s.control(&id, "terminate")?,
        SyncCommand::Config(args) => {
            let database = args.database.clone();
            let body = config_body(*args)?;
            // PATCH: the sections named replace theirs; the others stay as they are.
            let url = format!("{server}/v1/database/{database}/sync/config");
            let v = answer(s.auth(s.http.patch(url).json(&body))?)?;
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        SyncCommand::Shadows { database, thing, include_classic, batch_size, follow } => {
            shadows(&s, &database, &thing, include_classic, batch_size, follow)?
        }
        SyncCommand::Grant { database, identity } | SyncCommand::Revoke { database, identity }
            if identity.len() != 64 =>
        {
            bail!("{identity} is not an identity (64 hex digits) for database {database}")
        }
        SyncCommand::Grant { database, identity } => {
            let body = json!({ "identity": identity, "permission": "sync" });
            let url = format!("{server}/v1/database/{database}/permissions");
            answer(s.http.post(url).bearer_auth(&s.token).json(&body))?;
            println!("Granted sync on {database} to {identity}");
        }
        SyncCommand::Revoke { database, identity } => {
            let body = json!({ "identity": identity, "permission": "sync" });
            let url = format!("{server}/v1/database/{database}/permissions");
            answer(s.http.delete(url).bearer_auth(&s.token).json(&body))?;
            println!("Revoked sync on {database} from {identity}");
        }
    }
    Ok(())
}

/// What every sync command sends with: the server, the caller's token and the admin key (asked
/// for only by the routes that need it, so `grant` and `revoke` work without one).
struct Session<'a> {
    server: &'a str,
    token: String,
    http: Client,
    admin_key: Option<String>,
}

impl Session<'_> {
    /// `req` with the admin key and the caller's token.
    fn auth(&self, req: RequestBuilder) -> Result<RequestBuilder> {
        let key = self
            .admin_key
            .clone()
            .context("the sync API needs an admin key: --admin-api-key or EPOCH_ADMIN_API_KEY")?;
        Ok(req.header("X-Admin-API-Key", key).bearer_auth(&self.token))
    }

    /// Pauses, resumes or terminates instance `id` and prints its new status.
    fn control(&self, id: &str, action: &str) -> Result<()> {
        let v = answer(self.auth(self.http.post(format!("{}/{action}", instance_url(self.server, None, id))))?)?;
        println!("{id}: {}", v["status"].as_str().unwrap_or("?"));
        Ok(())
    }

    /// Shows instance `id` (at `url`) until it ends.
    fn watch(&self, url: &str, id: &str) -> Result<()> {
        watch(&self.http, url, id, &|req| self.auth(req))
    }
}

/// `epoch sync resync`: starts a resync of projections and, with `follow`, watches it.
fn resync(
    s: &Session,
    database: &str,
    aggregate_type: Option<String>,
    aggregate_id: Option<String>,
    batch_size: u32,
    delay: u32,
    follow: bool,
) -> Result<()> {
    let server = s.server;
    let mut query = vec![("batchSize", batch_size.to_string()), ("delaySeconds", delay.to_string())];
    query.extend(aggregate_type.map(|t| ("aggregateType", t)));
    query.extend(aggregate_id.map(|t| ("aggregateId", t)));
    let url = format!("{server}/v1/database/{database}/sync/resync-projections");
    let v = answer(s.auth(s.http.post(url).query(&query))?)?;
    let id = v["instanceId"].as_str().unwrap_or_default().to_string();
    println!(
        "Started {id}: {} aggregates of {} in {} batches",
        v["total"],
        v["aggregateTypes"].as_array().map(|a| a.len()).unwrap_or(0),
        v["batches"]
    );
    if follow {
        s.watch(&instance_url(server, Some(database), &id), &id)?;
    }
    Ok(())
}

/// `epoch sync backfill`: asks for a catch_up or full_sync of the AT Protocol tables and, with
/// `follow`, shows its progress until it ends.
fn backfill(s: &Session, database: &str, force: Option<String>, follow: bool) -> Result<()> {
    let server = s.server;
    let url = format!("{server}/v1/database/{database}/sync/backfill");
    let req = s.http.post(url).query(&force.iter().map(|f| ("force", f.as_str())).collect::<Vec<_>>());
    let v = answer(s.auth(req)?)?;
    let Some(id) = v["id"].as_str().map(str::to_string) else {
        println!("{}", v["message"].as_str().unwrap_or("no backfill started"));
        return Ok(());
    };
    println!("Backfill {id}: {}", v["type"].as_str().unwrap_or("?"));
    if let Some(note) = v["note"].as_str() {
        println!("  {note}");
    }
    if follow {
        follow_backfill(s, &format!("{server}/v1/database/{database}/sync/backfill/{id}"), &id)?;
    }
    Ok(())
}

/// Shows a backfill's progress (repos done of all) until it ends; an end other than `complete`
/// is an error, so scripts can tell.
fn follow_backfill(s: &Session, url: &str, id: &str) -> Result<()> {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} repos {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    loop {
        let p = answer(s.auth(s.http.get(url))?)?;
        bar.set_length(p["reposTotal"].as_u64().unwrap_or(0));
        bar.set_position(p["reposDone"].as_u64().unwrap_or(0));
        bar.set_message(format!("{} records applied, {}", p["recordsApplied"], p["status"].as_str().unwrap_or("?")));
        if p["status"] != "in_progress" {
            bar.finish();
            println!(
                "{id}: {} ({}), {} records applied, {} repos failed",
                p["status"].as_str().unwrap_or("?"),
                p["type"].as_str().unwrap_or("?"),
                p["recordsApplied"],
                p["reposFailed"]
            );
            for e in p["errors"].as_array().into_iter().flatten().take(10) {
                println!("  error: {}", e.as_str().unwrap_or_default());
            }
            if p["status"] != "complete" {
                bail!("the backfill ended {}", p["status"].as_str().unwrap_or("?"));
            }
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The body of `epoch sync config`'s PATCH: a section per source the flags name (object store,
/// device shadows, AT Protocol); refused when they name none, so a typo cannot send an empty
/// change.
fn config_body(args: ConfigArgs) -> Result<Value> {
    let ConfigArgs {
        database: _,
        url,
        endpoint,
        region,
        access_key_id,
        secret_access_key,
        reducer,
        shadows_endpoint,
        shadows_region,
        shadows_access_key_id,
        shadows_secret_access_key,
        mqtt_url,
        atproto_service,
        atproto_collections,
        atproto_members,
    } = args;
    let section = |pairs: [(&str, Option<String>); 5]| {
        let fields: serde_json::Map<String, Value> =
            pairs.into_iter().filter_map(|(k, v)| Some((k.to_string(), json!(v?)))).collect();
        (!fields.is_empty()).then_some(Value::Object(fields))
    };
    let mut body = json!({});
    if let Some(store) = section([
        ("url", url),
        ("endpoint", endpoint),
        ("region", region),
        ("accessKeyId", access_key_id),
        ("secretAccessKey", secret_access_key),
    ]) {
        body["objectStore"] = store;
        body["projectionReducer"] = json!(reducer);
    }
    if let Some(shadows) = section([
        ("endpoint", shadows_endpoint),
        ("region", shadows_region),
        ("accessKeyId", shadows_access_key_id),
        ("secretAccessKey", shadows_secret_access_key),
        ("mqttUrl", mqtt_url),
    ]) {
        body["deviceShadows"] = shadows;
    }
    if let Some(service) = atproto_service {
        let mut atproto = json!({"service": service});
        if !atproto_collections.is_empty() {
            atproto["collections"] = json!(atproto_collections);
        }
        if !atproto_members.is_empty() {
            atproto["members"] = json!(atproto_members);
        }
        body["atproto"] = atproto;
    } else if !atproto_collections.is_empty() || !atproto_members.is_empty() {
        bail!("--atproto-collection and --atproto-member need --atproto-service");
    }
    if body.as_object().is_some_and(|b| b.is_empty()) {
        bail!(
            "nothing to set: give --url (object store), --shadows-endpoint / --mqtt-url (device shadows) \
             or --atproto-service (AT Protocol)"
        );
    }
    Ok(body)
}

/// `epoch sync shadows`: force-syncs one thing's shadows and prints a line per shadow; with
/// `follow` the request does not wait on the server and the instance is watched instead.
fn shadows(
    s: &Session,
    database: &str,
    thing: &str,
    include_classic: bool,
    batch_size: u32,
    follow: bool,
) -> Result<()> {
    let server = s.server;
    let mut query = vec![("batchSize", batch_size.to_string())];
    if include_classic {
        query.push(("includeClassic", "true".into()));
    }
    if follow {
        query.push(("waitSeconds", "0".into()));
    }
    let url = format!("{server}/v1/database/{database}/sync/shadow-sync/{thing}");
    let mut v = answer(s.auth(s.http.post(url).query(&query))?)?;
    let id = v["instanceId"].as_str().unwrap_or_default().to_string();
    if follow {
        println!("Started {id}: {} shadows of {thing}", v["total"]);
        let instance = instance_url(server, Some(database), &id);
        s.watch(&instance, &id)?;
        let i = answer(s.auth(s.http.get(instance))?)?;
        v["shadows"] = Value::Array(
            i["results"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| json!({"shadowName": r["item"], "lambdaStatusCode": r["status"], "error": r["error"]}))
                .collect(),
        );
    }
    let lines = v["shadows"].as_array().cloned().unwrap_or_default();
    for line in &lines {
        println!(
            "{:<40} {} {}",
            line["shadowName"].as_str().unwrap_or("?"),
            line["lambdaStatusCode"],
            line["error"].as_str().unwrap_or("")
        );
    }
    let failed = lines.iter().filter(|l| l["lambdaStatusCode"] != 200).count();
    if v["status"] != "complete" && !follow {
        println!("{id} is still running: epoch sync status {id} --follow");
    } else if failed > 0 {
        bail!("{failed} of {} shadows of {thing} failed", lines.len());
    } else {
        println!("{thing}: {} shadows synced ({id})", lines.len());
    }
    Ok(())
}

/// Sends a request; a sync API error becomes its message.
pub(crate) fn answer(req: RequestBuilder) -> Result<Value> {
    let resp = req.send().context("connecting to the server")?;
    let status = resp.status();
    let v: Value = resp.json().unwrap_or(Value::Null);
    if !status.is_success() {
        bail!(
            "{} ({status}, request {})",
            v["message"].as_str().unwrap_or("request failed"),
            v["requestId"].as_str().unwrap_or("-")
        );
    }
    Ok(v)
}

/// Where instance `id` is read: under its database when named, else by id alone.
fn instance_url(server: &str, database: Option<&str>, id: &str) -> String {
    match database {
        Some(db) => format!("{server}/v1/database/{db}/sync/workflows/{id}"),
        None => format!("{server}/v1/sync/workflows/{id}"),
    }
}

/// Shows a progress bar (counts and ETA) until the instance at `url` ends.
fn watch(http: &Client, url: &str, id: &str, auth: &dyn Fn(RequestBuilder) -> Result<RequestBuilder>) -> Result<()> {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} {msg} (ETA {eta})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    loop {
        let v = answer(auth(http.get(url))?)?;
        bar.set_length(v["total"].as_u64().unwrap_or(0));
        bar.set_position(v["done"].as_u64().unwrap_or(0));
        bar.set_message(format!(
            "{} ok, {} failed, {}",
            v["succeeded"],
            v["failed"],
            v["status"].as_str().unwrap_or("?")
        ));
        let status = v["status"].as_str().unwrap_or("");
        if matches!(status, "complete" | "errored" | "terminated") {
            bar.finish();
            println!("{id}: {status}, {} succeeded, {} failed", v["succeeded"], v["failed"]);
            for e in v["errors"].as_array().into_iter().flatten().take(10) {
                println!("  error: {}", e.as_str().unwrap_or_default());
            }
            if status != "complete" {
                bail!("the workflow ended {status}");
            }
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}
