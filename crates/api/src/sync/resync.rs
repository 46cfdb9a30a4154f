//! The object-storage source: `POST …/sync/resync-projections` re-reads aggregates from the
//! database's object store (`objectStore` section) and feeds them to its projection reducer, as
//! a workflow instance.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::{
    authorize, bearer, default_database, nothing_to_restart, numeric_param, runner, sync_database, QueryMap, Source,
    SourceKinds, SourceOptions,
};
use crate::error::ApiError;
use crate::limits::{
    DEFAULT_MAX_ATTEMPTS, MAX_ATTEMPTS, MAX_BATCH_SIZE, MAX_DELAY_SECONDS, RESYNC_DEFAULT_BATCH_SIZE,
    RESYNC_DEFAULT_DELAY_SECONDS,
};
use crate::AppState;

/// The object-storage source's entry in [`super::SOURCES`].
pub const SOURCE: Source = Source {
    name: "resync",
    config_section: "objectStore",
    secret_fields: &["secretAccessKey", "sessionToken"],
    kinds,
    routes,
    admin_routes,
    configured: nothing_to_restart,
};

fn kinds(_: &SourceOptions) -> SourceKinds {
    SourceKinds { specs: vec![Arc::new(epoch_sync_objectstore::ResyncProjectionsSpec)], bind: None }
}

fn routes(v1: Router<AppState>) -> Router<AppState> {
    v1.route("/database/{name_or_identity}/sync/resync-projections", post(resync_projections))
}

fn admin_routes(admin: Router<AppState>) -> Router<AppState> {
    admin.route("/resync-projections", post(admin_resync_projections))
}

/// `POST /v1/database/:n/sync/resync-projections`.
pub async fn resync_projections(
    State(state): State<AppState>,
    Path(segment): Path<String>,
    q: QueryMap,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    resync(state, segment, q.0, headers).await
}

/// `POST /admin/resync-projections`: the same, on the server's default database.
pub async fn admin_resync_projections(
    State(state): State<AppState>,
    q: QueryMap,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let segment = default_database(&state)?;
    resync(state, segment, q.0, headers).await
}

async fn resync(
    state: AppState,
    segment: String,
    q: std::collections::HashMap<String, String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let database = sync_database(&state, &segment)?;
    let caller = authorize(&state, &headers, bearer(&headers), database, false)?;
    let batch_size = numeric_param(&q, "batchSize", RESYNC_DEFAULT_BATCH_SIZE, 1..=MAX_BATCH_SIZE)?;
    let delay_seconds = numeric_param(&q, "delaySeconds", RESYNC_DEFAULT_DELAY_SECONDS, 0..=MAX_DELAY_SECONDS)?;
    let max_attempts = numeric_param(&q, "maxAttempts", DEFAULT_MAX_ATTEMPTS, 1..=MAX_ATTEMPTS)?;
    let aggregate_type = q.get("aggregateType").filter(|t| !t.is_empty()).cloned();
    let aggregate_id = q.get("aggregateId").filter(|t| !t.is_empty()).cloned();
    if aggregate_id.is_some() && aggregate_type.is_none() {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "`aggregateId` requires `aggregateType`"));
    }
    let config = state.control.sync_config(&database).ok_or_else(|| {
        ApiError::new(StatusCode::BAD_REQUEST, "this database has no sync configuration; PUT …/sync/config first")
    })?;
    if config.get("objectStore").is_none() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "this database's sync configuration has no objectStore section; PATCH …/sync/config to add one",
        ));
    }
    let object_store = config["objectStore"].clone();
    let reducer = config["projectionReducer"].as_str().unwrap_or("project_aggregate").to_string();
    let params =
        epoch_sync_objectstore::ResyncParams { aggregate_type, aggregate_id, batch_size, delay_seconds, max_attempts };
    let runner = runner(&state)?.clone();
    // Listing the source is blocking I/O (and an S3 source owns a runtime of its own).
    let started = tokio::task::spawn_blocking(move || {
        epoch_sync_objectstore::start_resync(&runner, database, caller.identity, &object_store, &reducer, params)
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let i = started.map_err(|e| match e {
        epoch_sync::RunnerError::Conflict(id) => {
            ApiError::new(StatusCode::CONFLICT, format!("a resync of this scope is already running: {id}"))
        }
        // An unknown type, a bad key and an unreadable store are the request's to fix (400),
        // as before kinds were general.
        e @ (epoch_sync::RunnerError::NotFound(_)
        | epoch_sync::RunnerError::BadRequest(_)
        | epoch_sync::RunnerError::Source(_)) => ApiError::new(StatusCode::BAD_REQUEST, e.to_string()),
        e => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    })?;
    let total = i.total.unwrap_or(0);
    Ok(Json(json!({
        "success": true,
        "instanceId": i.id,
        "aggregateTypes": i.detail.get("aggregateTypes"),
        "total": total,
        "batchSize": batch_size,
        "delaySeconds": delay_seconds,
        "batches": total.div_ceil(batch_size as u64),
        "counts": i.counts,
        "errors": i.errors,
    })))
}
