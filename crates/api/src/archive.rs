//! Archiving and restore routes (errors in the sync API's shape):
//!
//! - `GET /v1/database/:n/archive`: where the database is archived (its own configuration, the
//!   server's default, or not at all), what the archiver has shipped, the lag, the last error
//!   and the database's last transaction offset (admin key and the owner's token);
//! - `PUT /v1/database/:n/archive` with `{"url", "endpoint", "region", "maxLagSeconds"}` or
//!   `{"enabled": false}`: the database's own archive configuration, replacing the server's
//!   default for it; `DELETE` goes back to the default (the server's admin key and the owner's
//!   token: the server writes there with its own credentials);
//! - `POST /v1/database/:n/restore` with `{"from": URL, "offset": N | "at": RFC3339,
//!   "endpoint", "region"}`: a new database `:n` rebuilt from an archive folder, owned by the
//!   caller (admin key and a token; the server reads the archive with its own credentials);
//! - `POST /v1/database/:n/backup` with `{"to": URL}`: a consistent backup of the live database.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::sync::{admin_key_header, authorize, bearer, sync_database};
use crate::AppState;
use epoch_archive::{ArchivePlan, ArchivedDatabase};
use epoch_auth::Identity;
use epoch_control::ControlPlane;

/// The server's archiving.
pub struct ArchiveState {
    /// The archiver (`None` on a server without a data directory: nothing to archive).
    pub service: Option<Arc<epoch_archive::ArchiveService>>,
    /// The server's archive URL (`--archive-url`): every database without a configuration of
    /// its own is archived to `<url>/<identity>`, the system database to `<url>/system`.
    pub server_url: Option<String>,
    /// The server's lag bound (`--archive-max-lag-seconds`).
    pub max_lag: Duration,
    /// How the server reaches S3 for archiving and restores.
    pub options: epoch_archive::StoreOptions,
}

/// A database's own archive configuration, as `PUT /v1/database/:n/archive` takes it and the
/// system database keeps it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DatabaseArchiveConfig {
    /// `false`: the database is not archived, whatever the server's default.
    #[serde(default = "enabled_by_default")]
    pub enabled: bool,
    /// The database's archive folder (`s3://bucket/prefix` or `file:///path`); none: its
    /// folder under the server's archive URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// The lag bound for this database; none: the server's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_lag_seconds: Option<f64>,
}

fn enabled_by_default() -> bool {
    true
}

/// Where a database's archive plan comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanSource {
    /// Its own configuration.
    Database,
    /// The server's `--archive-url`.
    Server,
    /// It is not archived.
    Off,
}

impl PlanSource {
    fn name(self) -> &'static str {
        match self {
            Self::Database => "database",
            Self::Server => "server",
            Self::Off => "off",
        }
    }
}

impl ArchiveState {
    /// The plan of the system database: its folder under the server's archive URL, if any.
    pub fn system_plan(&self) -> Option<ArchivePlan> {
        Some(ArchivePlan {
            store: self.server_url.clone()?,
            folder: epoch_archive::SYSTEM_FOLDER.to_string(),
            options: self.options.clone(),
            max_lag: self.max_lag,
        })
    }

    /// Where database `identity` is archived, following its own configuration (`config`) or
    /// else the server's default.
    pub fn plan(
        &self,
        identity: &Identity,
        config: Option<&DatabaseArchiveConfig>,
    ) -> (Option<ArchivePlan>, PlanSource) {
        let default = || ArchivePlan {
            store: self.server_url.clone().unwrap_or_default(),
            folder: identity.to_hex(),
            options: self.options.clone(),
            max_lag: self.max_lag,
        };
        match config {
            None if self.server_url.is_some() => (Some(default()), PlanSource::Server),
            None => (None, PlanSource::Off),
            Some(c) if !c.enabled => (None, PlanSource::Database),
            Some(c) => {
                let mut plan = match &c.url {
                    Some(url) => ArchivePlan { store: url.clone(), folder: String::new(), ..default() },
                    None if self.server_url.is_some() => default(),
                    // Validated when set; a server restarted without its archive URL has none.
                    None => return (None, PlanSource::Database),
                };
                plan.options.endpoint = c.endpoint.clone().or(plan.options.endpoint);
                plan.options.region = c.region.clone().or(plan.options.region);
                // Checked when it was set.
                if let Some(lag) = c.max_lag_seconds.and_then(|s| epoch_archive::max_lag(s).ok()) {
                    plan.max_lag = lag;
                }
                (Some(plan), PlanSource::Database)
            }
        }
    }

    /// Every durable database (the system database included) with its plan, for one pass.
    fn archived(&self, control: &ControlPlane) -> Vec<ArchivedDatabase> {
        let mut list: Vec<ArchivedDatabase> = control
            .archivable()
            .into_iter()
            .map(|(id, dir, log)| ArchivedDatabase {
                name: id.to_hex(),
                dir,
                log,
                plan: self.plan(&id, stored_config(control, &id).as_ref()).0,
            })
            .collect();
        if let Some((dir, log)) = control.system().commit_log() {
            list.push(ArchivedDatabase {
                name: epoch_archive::SYSTEM_FOLDER.into(),
                dir,
                log,
                plan: self.system_plan(),
            });
        }
        list
    }

    /// Starts the archiving thread, when the server has a data directory.
    pub fn start(self: &Arc<Self>, control: Arc<ControlPlane>) {
        if let Some(service) = &self.service {
            let state = self.clone();
            service.spawn(move || state.archived(&control));
        }
    }
}

/// A database's stored archive configuration (checked when it was set; one that no longer
/// parses is reported and ignored).
fn stored_config(control: &ControlPlane, identity: &Identity) -> Option<DatabaseArchiveConfig> {
    let v = control.archive_config(identity)?;
    match serde_json::from_value(v) {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!(database = %identity.to_hex(), "ignoring an unreadable archive configuration: {e}");
            None
        }
    }
}

/// Checks the server's own admin key (not a database's sync key): archiving, restores and
/// backups make the server read and write storage with its own credentials.
fn require_server_admin(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let presented = admin_key_header(headers).ok_or_else(|| ApiError::unauthorized("X-Admin-API-Key", "missing"))?;
    if !state
        .admin_api_key
        .as_deref()
        .is_some_and(|k| crate::sync::constant_time_eq(k.as_bytes(), presented.as_bytes()))
    {
        return Err(ApiError::unauthorized("X-Admin-API-Key", "not the server's admin API key"));
    }
    Ok(())
}

/// The database named by `segment`, when the caller holds the server's admin key and a token
/// of its owner (archive settings and backups).
fn owned_with_server_key(state: &AppState, headers: &HeaderMap, segment: &str) -> Result<Identity, ApiError> {
    let db = sync_database(state, segment)?;
    require_server_admin(state, headers)?;
    authorize(state, headers, bearer(headers), db, true)?;
    Ok(db)
}

fn archive_state(state: &AppState) -> Result<&Arc<ArchiveState>, ApiError> {
    state
        .archive
        .as_ref()
        .filter(|a| a.service.is_some())
        .ok_or_else(|| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "archiving needs a server with a data directory"))
}

/// `GET /v1/database/:n/archive`.
pub async fn status(State(state): State<AppState>, Path(segment): Path<String>, headers: HeaderMap) -> Response {
    let run = || -> Result<Value, ApiError> {
        let db = sync_database(&state, &segment)?;
        authorize(&state, &headers, bearer(&headers), db, true)?;
        status_of(&state, db)
    };
    match run() {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

fn status_of(state: &AppState, db: Identity) -> Result<Value, ApiError> {
    let archive = archive_state(state)?;
    let service =
        archive.service.as_ref().ok_or_else(|| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "no archiver"))?;
    let hosted = state.control.get(&db).ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "no such database"))?;
    // Read from the log itself: the writer may be waiting for a full disk.
    let last_offset = hosted.log.as_ref().and_then(|l| l.next_offset().checked_sub(1));
    let config = stored_config(&state.control, &db);
    let (plan, source) = archive.plan(&db, config.as_ref());
    let mut v = json!({
        "archived": plan.is_some(),
        "source": source.name(),
        "config": config,
        "url": plan.as_ref().map(ArchivePlan::url),
        "maxLagSeconds": plan.as_ref().map(|p| p.max_lag.as_secs_f64()),
        "lastOffset": last_offset,
    });
    // The archiver's figures once it has made a pass under the current plan.
    if let Some(s) =
        plan.as_ref().and_then(|p| service.status(&db.to_hex()).filter(|s| s.url.is_empty() || s.url == p.url()))
    {
        v["shippedEnd"] = json!(s.shipped_end);
        v["segmentsShipped"] = json!(s.segments_shipped);
        v["snapshotsShipped"] = json!(s.snapshots_shipped);
        v["lagSeconds"] = json!(s.lag.as_secs_f64());
        v["error"] = json!(s.error);
    }
    Ok(v)
}

/// `PUT` / `DELETE /v1/database/:n/archive`: sets or removes the database's own archive
/// configuration. A new place is checked by listing it before it is accepted.
pub async fn configure(
    State(state): State<AppState>,
    Path(segment): Path<String>,
    method: Method,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let bad = |m: String| ApiError::new(StatusCode::BAD_REQUEST, m);
    let db = owned_with_server_key(&state, &headers, &segment)?;
    let archive = archive_state(&state)?.clone();
    if method == Method::DELETE {
        state.control.set_archive_config(db, None).map_err(|e| ApiError::new(StatusCode::CONFLICT, e.to_string()))?;
        tracing::info!(database = %db, "archive configuration removed; the server's default applies");
        return status_of(&state, db).map(Json);
    }
    let config: DatabaseArchiveConfig = serde_json::from_slice(&body)
        .map_err(|e| bad(format!("the body must be an archive configuration ({{\"url\", \"endpoint\", \"region\", \"maxLagSeconds\"}} or {{\"enabled\": false}}): {e}")))?;
    if let Some(s) = config.max_lag_seconds {
        epoch_archive::max_lag(s).map_err(|e| bad(format!("`maxLagSeconds`: {e}")))?;
    }
    if config.enabled {
        check_place(&state, &archive, db, &config).await?;
    }
    let stored =
        serde_json::to_value(&config).map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    state
        .control
        .set_archive_config(db, Some(stored))
        .map_err(|e| ApiError::new(StatusCode::CONFLICT, e.to_string()))?;
    tracing::info!(database = %db, enabled = config.enabled, url = ?config.url, "archive configuration set");
    status_of(&state, db).map(Json)
}

/// Checks where an enabled `config` archives `db`: a URL the server may write to, or the
/// server's own archive URL when it gives none, reachable with the server's credentials.
async fn check_place(
    state: &AppState,
    archive: &ArchiveState,
    db: Identity,
    config: &DatabaseArchiveConfig,
) -> Result<(), ApiError> {
    let bad = |m: String| ApiError::new(StatusCode::BAD_REQUEST, m);
    match &config.url {
        Some(url) => {
            let v = json!({"endpoint": config.endpoint, "region": config.region});
            store_options(state, &v, "url", url)?;
        }
        None if archive.server_url.is_none() => {
            return Err(bad("this server has no --archive-url: give `url`, the database's archive folder".into()))
        }
        None => {}
    }
    // The place must be reachable with the server's credentials before it is accepted.
    let (plan, _) = archive.plan(&db, Some(config));
    let Some(plan) = plan else { return Ok(()) };
    let url = plan.url();
    tokio::task::spawn_blocking(move || {
        let target = epoch_archive::ArchiveTarget::open(&url, &plan.options)?;
        target.list("log").map(|_| ())
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
    .map_err(|e| match e {
        epoch_archive::ArchiveError::Url(_) => bad(e.to_string()),
        e @ (epoch_archive::ArchiveError::Link(_) | epoch_archive::ArchiveError::NotRegular { .. }) => {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string())
        }
        e => ApiError::new(StatusCode::BAD_GATEWAY, format!("the archive cannot be reached: {e}")),
    })
}

/// How the server reaches the store at `url` (field `field` of request `v`): a `file://` path
/// is checked like a sync store's (absolute, not the server's own data); the request's
/// `endpoint` and `region` override the server's archive settings.
fn store_options(state: &AppState, v: &Value, field: &str, url: &str) -> Result<epoch_archive::StoreOptions, ApiError> {
    if let Some(path) = url.strip_prefix("file://") {
        epoch_sync_objectstore::check_file_store(std::path::Path::new(path), state.control.data_dir()).map_err(
            |m| ApiError::new(StatusCode::BAD_REQUEST, m.replace("`objectStore.url`", &format!("`{field}`"))),
        )?;
    }
    let mut options = state.archive.as_ref().map(|a| a.options.clone()).unwrap_or_default();
    for (key, slot) in [("endpoint", &mut options.endpoint), ("region", &mut options.region)] {
        if let Some(s) = v[key].as_str() {
            *slot = Some(s.to_string());
        }
    }
    Ok(options)
}

/// `POST /v1/database/:n/restore`.
pub async fn restore(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    match restore_inner(state, name, headers, body).await {
        Ok(v) => (StatusCode::CREATED, Json(v)).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn restore_inner(
    state: AppState,
    name: String,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Value, ApiError> {
    let bad = |m: String| ApiError::new(StatusCode::BAD_REQUEST, m);
    require_server_admin(&state, &headers)?;
    let token = bearer(&headers).ok_or_else(|| ApiError::unauthorized("Authorization", "missing bearer token"))?;
    let verified = state
        .auth
        .verify(token)
        .map_err(|e| ApiError::unauthorized("Authorization", format!("invalid bearer token: {e}")))?;
    if Identity::from_hex(&name).is_some() {
        return Err(bad(format!("{name:?} is an identity, not a database name")));
    }
    crate::database::validate_name(&name).map_err(|e| bad(format!("{name:?} is not a database name: {e}")))?;
    let v: Value = serde_json::from_slice(&body).map_err(|e| bad(format!("the body must be JSON: {e}")))?;
    let from =
        v["from"].as_str().ok_or_else(|| bad("`from` (the archive folder's URL) is required".into()))?.to_string();
    let stop = match (v.get("offset").filter(|o| !o.is_null()), v.get("at").and_then(Value::as_str)) {
        (Some(_), Some(_)) => return Err(bad("give `offset` or `at`, not both".into())),
        (Some(o), None) => epoch_archive::StopAt::Offset(
            o.as_u64().ok_or_else(|| bad("`offset` must be a transaction offset".into()))?,
        ),
        (None, Some(at)) => {
            let t =
                humantime::parse_rfc3339_weak(at).map_err(|e| bad(format!("`at` must be an RFC 3339 time: {e}")))?;
            let micros =
                t.duration_since(std::time::UNIX_EPOCH).map_err(|_| bad("`at` is before 1970".into()))?.as_micros();
            epoch_archive::StopAt::Time(micros as i64)
        }
        (None, None) => epoch_archive::StopAt::Latest,
    };
    let options = store_options(&state, &v, "from", &from)?;
    let control = state.control.clone();
    let issuer = state.auth.issuer.clone();
    let caller = verified.identity;
    let started = std::time::Instant::now();
    let restored = tokio::task::spawn_blocking(move || {
        let target = epoch_archive::ArchiveTarget::open(&from, &options).map_err(|e| e.to_string())?;
        let fresh = epoch_auth::identity_from_claims(&issuer, &uuid::Uuid::new_v4().to_string());
        let mut report = None;
        control
            .restore_to_name(&name, fresh, caller, |dir| {
                let (wasm, r) = epoch_archive::restore(&target, dir, stop).map_err(|e| e.to_string())?;
                report = Some(r);
                wasm.ok_or_else(|| {
                    "the archive has no module.wasm: it is not a database's archive folder (the system database's archive cannot be restored as a database)".to_string()
                })
            })
            .map_err(|e| e.to_string())?;
        Ok::<_, String>((fresh, report))
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let (identity, report) = restored.map_err(|m| {
        let status = if m.contains("already exists") { StatusCode::CONFLICT } else { StatusCode::UNPROCESSABLE_ENTITY };
        ApiError::new(status, m)
    })?;
    tracing::info!(database = %identity, ?report, elapsed_ms = started.elapsed().as_millis() as u64, "restored from an archive");
    Ok(json!({
        "identity": identity.to_hex(),
        "offset": report.as_ref().and_then(|r| r.offset),
        "snapshot": report.as_ref().and_then(|r| r.snapshot),
        "segments": report.as_ref().map(|r| r.segments),
        "elapsedMs": started.elapsed().as_millis() as u64,
    }))
}

/// A failed backup: a destination that is refused as such (a link, a special file, a bad URL)
/// is the request's fault (422); anything else is the store's (502).
fn backup_failure(e: epoch_archive::ArchiveError) -> ApiError {
    use epoch_archive::ArchiveError as E;
    let status = match e {
        E::Link(_) | E::NotRegular { .. } | E::Url(_) => StatusCode::UNPROCESSABLE_ENTITY,
        _ => StatusCode::BAD_GATEWAY,
    };
    ApiError::new(status, format!("backup failed: {e}"))
}

/// `POST /v1/database/:n/backup` with `{"to": URL, "endpoint", "region"}`: a consistent backup
/// of a live database (a snapshot taken now plus every closed log segment, the open one closed
/// first, and its files) written to `to` itself; writes go on meanwhile. Admin key and owner.
pub async fn backup(
    State(state): State<AppState>,
    Path(segment): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let run = async {
        let bad = |m: String| ApiError::new(StatusCode::BAD_REQUEST, m);
        let db = owned_with_server_key(&state, &headers, &segment)?;
        let v: Value = serde_json::from_slice(&body).map_err(|e| bad(format!("the body must be JSON: {e}")))?;
        let to = v["to"].as_str().ok_or_else(|| bad("`to` (where the backup goes) is required".into()))?.to_string();
        let options = store_options(&state, &v, "to", &to)?;
        let control = state.control.clone();
        let started = std::time::Instant::now();
        let done = tokio::task::spawn_blocking(move || {
            let target = Arc::new(epoch_archive::ArchiveTarget::open(&to, &options).map_err(backup_failure)?);
            let (dir, log) = control
                .backup_point(&db)
                .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, format!("backup failed: {e}")))?;
            let mut archiver = epoch_archive::Archiver::backup(&dir, target);
            archiver.ship(&log).map_err(backup_failure)?;
            Ok::<_, ApiError>(archiver.status().clone())
        })
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
        tracing::info!(database = %db, shipped_end = done.shipped_end, "backup written");
        Ok::<_, ApiError>(json!({
            "offset": done.shipped_end.checked_sub(1),
            "segments": done.segments_shipped,
            "snapshots": done.snapshots_shipped,
            "elapsedMs": started.elapsed().as_millis() as u64,
        }))
    };
    match run.await {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}
