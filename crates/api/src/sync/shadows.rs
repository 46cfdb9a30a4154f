//! The IoT device shadows source (`deviceShadows` section): `POST …/sync/shadow-webhook` takes
//! one shadow update as an IoT topic rule forwards it (the live path, as the MQTT consumer does),
//! and `POST …/sync/shadow-sync/:thingName` force-syncs every named shadow of a thing as a
//! workflow instance.

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use epoch_auth::Identity;
use serde_json::{json, Value};

use super::{
    authorize, bearer, default_database, numeric_param, runner, sync_database, QueryMap, Source, SourceKinds,
    SourceOptions,
};
use crate::error::ApiError;
use crate::limits::{
    DEFAULT_MAX_ATTEMPTS, DEFAULT_WAIT_SECONDS, FORCE_SYNC_POLL, MAX_ATTEMPTS, MAX_BATCH_SIZE, MAX_DELAY_SECONDS,
    MAX_WAIT_SECONDS, SHADOWS_DEFAULT_BATCH_SIZE, SHADOWS_DEFAULT_DELAY_SECONDS,
};
use crate::AppState;

/// The device shadows source's entry in [`super::SOURCES`].
pub const SOURCE: Source = Source {
    name: "shadows",
    config_section: "deviceShadows",
    secret_fields: &["secretAccessKey", "sessionToken", "mqttPassword"],
    kinds,
    routes,
    admin_routes,
    configured,
};

fn kinds(_: &SourceOptions) -> SourceKinds {
    SourceKinds { specs: vec![Arc::new(epoch_sync_shadows::ForceSyncSpec)], bind: None }
}

fn routes(v1: Router<AppState>) -> Router<AppState> {
    v1.route("/database/{name_or_identity}/sync/shadow-webhook", post(shadow_webhook))
        .route("/database/{name_or_identity}/sync/shadow-sync/{thing_name}", post(shadow_sync))
}

fn admin_routes(admin: Router<AppState>) -> Router<AppState> {
    admin
        .route("/shadow-webhook", post(admin_shadow_webhook))
        .route("/shadow-sync/{thing_name}", post(admin_shadow_sync))
}

/// The live MQTT consumers reread every sync configuration that was written, whatever changed:
/// its broker or credentials may have.
fn configured(state: &AppState, database: Identity, _: &Value, _: &Value) {
    if let Some(live) = &state.live_shadows {
        live.reconfigure(&database);
    }
}

/// `POST /v1/database/:n/sync/shadow-webhook`: one shadow update as an IoT topic rule forwards it
/// (the live path), through the database's shadow reducer.
pub async fn shadow_webhook(
    State(state): State<AppState>,
    Path(segment): Path<String>,
    req: Request,
) -> Result<Json<Value>, ApiError> {
    shadow_webhook_on(state, Some(segment), req).await
}

/// `POST /admin/shadow-webhook`: the same, on the server's default database.
pub async fn admin_shadow_webhook(State(state): State<AppState>, req: Request) -> Result<Json<Value>, ApiError> {
    shadow_webhook_on(state, None, req).await
}

async fn shadow_webhook_on(state: AppState, segment: Option<String>, req: Request) -> Result<Json<Value>, ApiError> {
    let segment = match segment {
        Some(s) => s,
        None => default_database(&state)?,
    };
    let database = sync_database(&state, &segment)?;
    let headers = req.headers().clone();
    let caller = authorize(&state, &headers, bearer(&headers), database, false)?;
    let body = axum::body::to_bytes(req.into_body(), state.limits.max_body_bytes)
        .await
        .map_err(|e| ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, e.to_string()))?;
    let event: Value = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(StatusCode::BAD_REQUEST, "the body is not a JSON shadow update event")
            .detail("body", e.to_string())
    })?;
    let doc = epoch_sync_shadows::ShadowDocument::from_update_event(&event).map_err(|e| {
        ApiError::new(StatusCode::BAD_REQUEST, format!("malformed shadow update event: {e}"))
            .detail(&e.field, e.message)
    })?;
    let outcome = ingest_shadow(&state, database, caller.identity, &doc).await?;
    Ok(Json(json!({
        "success": outcome.is_ok(),
        "thingName": doc.thing_name,
        "shadowName": doc.shadow_name,
        "version": doc.version,
        "statusCode": if outcome.is_ok() { 200 } else { 422 },
        "error": outcome.err(),
    })))
}

/// Pushes one shadow document through the database's shadow reducer with
/// [`epoch_sync_shadows::document::ingest`] (the one path of the webhook, MQTT and force-syncs):
/// `Ok` once committed and durable, `Err` with the reducer's message when it refused it.
pub async fn ingest_shadow(
    state: &AppState,
    database: Identity,
    caller: Identity,
    doc: &epoch_sync_shadows::ShadowDocument,
) -> Result<Result<(), String>, ApiError> {
    use epoch_sync_shadows::document::{self, IngestError};
    let reducer = document::shadow_reducer(state.control.sync_config(&database).as_ref());
    let db = state.control.get(&database).ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "no such database"))?;
    let args = doc.reducer_args();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let who = epoch_core::Caller::identity(caller);
    let shutting_down = || ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the database is shutting down");
    db.handle
        .submit(
            move |d| document::ingest(d, &reducer, args, who, None),
            move |r| {
                let _ = tx.send(r);
            },
        )
        .map_err(|_| shutting_down())?;
    match rx.await.map_err(|_| shutting_down())? {
        Ok(()) => Ok(Ok(())),
        Err(e @ IngestError::NoReducer(_)) => Err(ApiError::new(StatusCode::BAD_REQUEST, e.to_string())),
        Err(IngestError::Refused(e)) => Ok(Err(e)),
    }
}

/// `POST /v1/database/:n/sync/shadow-sync/:thingName`: lists every named shadow of the thing and
/// pushes each through the live ingest path, as a workflow instance; answers when it ends (200)
/// or after `waitSeconds` (202, with the results so far).
pub async fn shadow_sync(
    State(state): State<AppState>,
    Path((segment, thing)): Path<(String, String)>,
    q: QueryMap,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    shadow_sync_on(state, Some(segment), thing, q.0, headers).await
}

/// `POST /admin/shadow-sync/:thingName`: the same, on the server's default database.
pub async fn admin_shadow_sync(
    State(state): State<AppState>,
    Path(thing): Path<String>,
    q: QueryMap,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    shadow_sync_on(state, None, thing, q.0, headers).await
}

async fn shadow_sync_on(
    state: AppState,
    segment: Option<String>,
    thing: String,
    q: std::collections::HashMap<String, String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let segment = match segment {
        Some(s) => s,
        None => default_database(&state)?,
    };
    let database = sync_database(&state, &segment)?;
    let caller = authorize(&state, &headers, bearer(&headers), database, false)?;
    let (params, wait) = force_sync_params(&thing, &q)?;
    let config = state.control.sync_config(&database).unwrap_or(Value::Null);
    if config.get("deviceShadows").is_none() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "this database's sync configuration has no deviceShadows section; PATCH …/sync/config to add one",
        ));
    }
    let runner = runner(&state)?.clone();
    let starter = runner.clone();
    // Listing the thing's shadows is blocking I/O on the client's own runtime.
    let started = tokio::task::spawn_blocking(move || {
        epoch_sync_shadows::start_force_sync(&starter, database, caller.identity, &config, params)
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let instance = started.map_err(|e| start_error(&thing, e))?;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(wait as u64);
    let mut latest = instance;
    while !latest.status.is_finished() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(FORCE_SYNC_POLL).await;
        latest = runner.get(&latest.id).unwrap_or(latest);
    }
    let status = if latest.status.is_finished() { StatusCode::OK } else { StatusCode::ACCEPTED };
    Ok((status, Json(force_sync_answer(&thing, &latest))).into_response())
}

/// A force-sync's parameters from the thing's name and the query, and how many seconds the
/// request waits for it.
fn force_sync_params(
    thing: &str,
    q: &std::collections::HashMap<String, String>,
) -> Result<(epoch_sync_shadows::ForceSyncParams, u32), ApiError> {
    if !epoch_sync_shadows::document::valid_thing_name(thing) {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid thing name")
            .detail("thingName", "must be 1 to 128 characters of a-z, A-Z, 0-9, `:`, `_` and `-`"));
    }
    let batch_size = numeric_param(q, "batchSize", SHADOWS_DEFAULT_BATCH_SIZE, 1..=MAX_BATCH_SIZE)?;
    let delay_seconds = numeric_param(q, "delaySeconds", SHADOWS_DEFAULT_DELAY_SECONDS, 0..=MAX_DELAY_SECONDS)?;
    let max_attempts = numeric_param(q, "maxAttempts", DEFAULT_MAX_ATTEMPTS, 1..=MAX_ATTEMPTS)?;
    let wait = numeric_param(q, "waitSeconds", DEFAULT_WAIT_SECONDS, 0..=MAX_WAIT_SECONDS)?;
    let include_classic = match q.get("includeClassic").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid query parameter")
                .detail("includeClassic", format!("must be true or false, not {other:?}")))
        }
    };
    let params = epoch_sync_shadows::ForceSyncParams {
        thing_name: thing.to_string(),
        include_classic,
        batch_size,
        delay_seconds,
        max_attempts,
    };
    Ok((params, wait))
}

/// A force-sync that could not start, as the seed answers it.
fn start_error(thing: &str, e: epoch_sync::RunnerError) -> ApiError {
    match e {
        epoch_sync::RunnerError::Conflict(id) => {
            ApiError::new(StatusCode::CONFLICT, format!("a force-sync of thing `{thing}` is already running: {id}"))
        }
        e @ epoch_sync::RunnerError::NotFound(_) => {
            ApiError::new(StatusCode::NOT_FOUND, e.to_string()).detail("thingName", e.to_string())
        }
        e @ epoch_sync::RunnerError::BadRequest(_) => ApiError::new(StatusCode::BAD_REQUEST, e.to_string()),
        e @ epoch_sync::RunnerError::Source(_) => ApiError::new(StatusCode::BAD_GATEWAY, e.to_string()),
        e => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// The seed's answer: every shadow's line (`lambdaStatusCode` is the ingest step's status,
/// `lambdaRequestId` the id of the workflow step that applied it), and the errors.
fn force_sync_answer(thing: &str, i: &epoch_sync::Instance) -> Value {
    let shadows: Vec<Value> = i
        .results
        .iter()
        .map(|r| {
            json!({
                "shadowName": r.item,
                "lambdaStatusCode": r.status,
                "lambdaRequestId": r.request_id,
                "error": r.error,
            })
        })
        .collect();
    let complete = i.status == epoch_sync::Status::Complete;
    json!({
        "success": complete && i.failed == 0,
        "thingName": thing,
        "instanceId": i.id,
        "status": i.status,
        "total": i.total,
        "done": i.done,
        "shadows": shadows,
        "errors": i.errors,
    })
}
