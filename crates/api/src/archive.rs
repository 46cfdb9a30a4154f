//! Archiving and restore routes (errors in the sync API's shape):
//!
//! - `GET /v1/database/:n/archive`: what the archiver has shipped, the lag, the last error and
//!   the database's last transaction offset (admin key and the owner's token);
//! - `POST /v1/database/:n/restore` with `{"from": URL, "offset": N | "at": RFC3339,
//!   "endpoint", "region"}`: a new database `:n` rebuilt from an archive folder, owned by the
//!   caller (admin key and a token; the server reads the archive with its own credentials);
//! - `POST /v1/database/:n/backup` with `{"to": URL}`: a consistent backup of the live database.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::sync::{admin_key_header, authorize, bearer, sync_database, SyncError};
use crate::AppState;
use epoch_auth::Identity;

/// The server's archiving, when configured.
pub struct ArchiveState {
    pub service: Option<Arc<epoch_archive::ArchiveService>>,
    /// How the server reaches S3 for archiving and restores.
    pub options: epoch_archive::StoreOptions,
}

/// `GET /v1/database/:n/archive`.
pub async fn status(State(state): State<AppState>, Path(segment): Path<String>, headers: HeaderMap) -> Response {
    let run = || -> Result<Value, SyncError> {
        let db = sync_database(&state, &segment)?;
        authorize(&state, &headers, bearer(&headers), db, true)?;
        let service = state.archive.as_ref().and_then(|a| a.service.as_ref()).ok_or_else(|| {
            SyncError::new(StatusCode::SERVICE_UNAVAILABLE, "archiving is not configured (start with --archive-url)")
        })?;
        let hosted =
            state.control.get(&db.0).ok_or_else(|| SyncError::new(StatusCode::NOT_FOUND, "no such database"))?;
        let last_offset =
            hosted.handle.with(|d| d.commit_log().and_then(|l| l.next_offset().checked_sub(1))).ok().flatten();
        let s = service.status(&db.to_hex()).unwrap_or_default();
        Ok(json!({
            "url": if s.url.is_empty() { format!("{}/{}", service.url(), db.to_hex()) } else { s.url },
            "lastOffset": last_offset,
            "shippedEnd": s.shipped_end,
            "segmentsShipped": s.segments_shipped,
            "snapshotsShipped": s.snapshots_shipped,
            "lagSeconds": s.lag.as_secs_f64(),
            "error": s.error,
        }))
    };
    match run() {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

/// How the server reaches the store at `url` (field `field` of request `v`): a `file://` path
/// is checked like a sync store's (absolute, not the server's own data); the request's
/// `endpoint` and `region` override the server's archive settings.
fn store_options(
    state: &AppState,
    v: &Value,
    field: &str,
    url: &str,
) -> Result<epoch_archive::StoreOptions, SyncError> {
    if let Some(path) = url.strip_prefix("file://") {
        epoch_sync_objectstore::check_file_store(std::path::Path::new(path), state.control.data_dir()).map_err(
            |m| SyncError::new(StatusCode::BAD_REQUEST, m.replace("`objectStore.url`", &format!("`{field}`"))),
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
) -> Result<Value, SyncError> {
    let bad = |m: String| SyncError::new(StatusCode::BAD_REQUEST, m);
    // The server's own admin key only: a restore reads storage with the server's credentials.
    let presented = admin_key_header(&headers).ok_or_else(|| SyncError::unauthorized("X-Admin-API-Key", "missing"))?;
    if !state
        .admin_api_key
        .as_deref()
        .is_some_and(|k| crate::sync::constant_time_eq(k.as_bytes(), presented.as_bytes()))
    {
        return Err(SyncError::unauthorized("X-Admin-API-Key", "not the server's admin API key"));
    }
    let token = bearer(&headers).ok_or_else(|| SyncError::unauthorized("Authorization", "missing bearer token"))?;
    let verified = state
        .auth
        .verify(token)
        .map_err(|e| SyncError::unauthorized("Authorization", format!("invalid bearer token: {e}")))?;
    if Identity::from_hex(&name).is_some() || name.is_empty() || name.len() > 64 {
        return Err(bad(format!("{name:?} is not a database name")));
    }
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
        let fresh = Identity::from_claims(&issuer, &uuid::Uuid::new_v4().to_string());
        let mut report = None;
        control
            .restore_to_name(&name, fresh.0, caller.0, |dir| {
                let (wasm, r) = epoch_archive::restore(&target, dir, stop).map_err(|e| e.to_string())?;
                report = Some(r);
                Ok(wasm)
            })
            .map_err(|e| e.to_string())?;
        Ok::<_, String>((fresh, report))
    })
    .await
    .map_err(|e| SyncError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let (identity, report) = restored.map_err(|m| {
        let status = if m.contains("already exists") { StatusCode::CONFLICT } else { StatusCode::UNPROCESSABLE_ENTITY };
        SyncError::new(status, m)
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
        let bad = |m: String| SyncError::new(StatusCode::BAD_REQUEST, m);
        let db = sync_database(&state, &segment)?;
        authorize(&state, &headers, bearer(&headers), db, true)?;
        let v: Value = serde_json::from_slice(&body).map_err(|e| bad(format!("the body must be JSON: {e}")))?;
        let to = v["to"].as_str().ok_or_else(|| bad("`to` (where the backup goes) is required".into()))?.to_string();
        let options = store_options(&state, &v, "to", &to)?;
        let control = state.control.clone();
        let started = std::time::Instant::now();
        let done = tokio::task::spawn_blocking(move || {
            let target = Arc::new(epoch_archive::ArchiveTarget::open(&to, &options).map_err(|e| e.to_string())?);
            let (dir, log) = control.backup_point(&db.0).map_err(|e| e.to_string())?;
            let mut archiver = epoch_archive::Archiver::backup(&dir, target);
            archiver.ship(&log).map_err(|e| e.to_string())?;
            Ok::<_, String>(archiver.status().clone())
        })
        .await
        .map_err(|e| SyncError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(|m| SyncError::new(StatusCode::BAD_GATEWAY, format!("backup failed: {m}")))?;
        tracing::info!(database = %db, shipped_end = done.shipped_end, "backup written");
        Ok::<_, SyncError>(json!({
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
