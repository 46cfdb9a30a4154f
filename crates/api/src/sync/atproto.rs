//! The AT Protocol source (`atproto` section): the live firehose consumer follows the
//! configuration, and `POST …/sync/backfill` repairs the database's AT Protocol tables after
//! downtime (a catch_up from the stored cursor, or a full_sync re-reading every member's repo),
//! with `GET …/sync/backfill/:id` for its progress.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use epoch_auth::Identity;
use epoch_sync::{Instance, Runner, RunnerError};
use epoch_sync_atproto::{firehose, AtprotoConfig, FirehoseSpec};
use serde_json::{json, Value};

use super::{
    authorize, bearer, default_database, runner, sync_database, QueryMap, Source, SourceKinds, SourceOptions,
    SyncCaller,
};
use crate::error::ApiError;
use crate::AppState;

/// The AT Protocol source's entry in [`super::SOURCES`].
pub const SOURCE: Source = Source {
    name: "atproto",
    config_section: "atproto",
    secret_fields: &[],
    kinds,
    routes,
    admin_routes,
    configured: atproto_changed,
};

/// The full_sync and firehose kinds. The runner is handed to the firehose kind once open (a
/// catch_up starts the live consumer when it reaches the head); the full_sync kind shares its
/// holds (live events of repos not yet re-read wait).
fn kinds(options: &SourceOptions) -> SourceKinds {
    let firehose = Arc::new(FirehoseSpec::with_allowed_hosts(options.atproto_allowed_hosts.clone()));
    let bound = firehose.clone();
    SourceKinds {
        specs: vec![Arc::new(firehose.full_sync_spec()), firehose],
        bind: Some(Box::new(move |runner: &Arc<Runner>| bound.bind(runner))),
    }
}

fn routes(v1: Router<AppState>) -> Router<AppState> {
    v1.route("/database/{name_or_identity}/sync/backfill", post(backfill))
        .route("/database/{name_or_identity}/sync/backfill/{id}", get(backfill_progress))
}

fn admin_routes(admin: Router<AppState>) -> Router<AppState> {
    admin.route("/backfill", post(admin_backfill)).route("/backfill/{id}", get(admin_backfill_progress))
}

/// Starts, restarts or stops the database's live firehose consumer after its `atproto` section
/// changed (a restart keeps the cursor unless the service changed).
fn atproto_changed(state: &AppState, database: Identity, old: &Value, new: &Value) {
    let Some(runner) = state.runner.clone() else { return };
    if old.get("atproto") == new.get("atproto") {
        return;
    }
    let Some(owner) = state.control.get(&database).map(|d| d.owner) else { return };
    let section = new.get("atproto").cloned();
    // Stopping a consumer waits for its batch in flight: off the async runtime.
    tokio::task::spawn_blocking(move || match section.map(|s| AtprotoConfig::parse(&s)) {
        Some(Ok(config)) => {
            if let Err(e) = firehose::start_live(&runner, database, owner, &config) {
                tracing::error!(database = %database, "cannot start the firehose consumer: {e}");
            }
        }
        _ => firehose::stop_live(&runner, &database),
    });
}

/// `POST /v1/database/:n/sync/backfill[?force=catch_up|full_sync]`: repairs the database's AT
/// Protocol tables after downtime, choosing the kind of backfill from its cursor.
pub async fn backfill(
    State(state): State<AppState>,
    Path(segment): Path<String>,
    q: QueryMap,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    backfill_start(state, Some(segment), q.0, headers).await
}

/// `POST /api/admin/backfill`: the same, on the server's default database.
pub async fn admin_backfill(
    State(state): State<AppState>,
    q: QueryMap,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    backfill_start(state, None, q.0, headers).await
}

/// `GET /v1/database/:n/sync/backfill/:id`: a backfill's progress.
pub async fn backfill_progress(
    State(state): State<AppState>,
    Path((segment, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    backfill_get(state, Some(segment), id, headers)
}

/// `GET /api/admin/backfill/:id`: the same, on the server's default database.
pub async fn admin_backfill_progress(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    backfill_get(state, None, id, headers)
}

/// The database's AT Protocol source, or 503 when it has none (asked after the credentials).
fn atproto_source(state: &AppState, database: Identity) -> Result<AtprotoConfig, ApiError> {
    let section = state.control.sync_config(&database).and_then(|c| c.get("atproto").cloned());
    let section = section.ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "this database has no AT Protocol source; PATCH …/sync/config with an `atproto` section",
        )
    })?;
    AtprotoConfig::parse(&section).map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e))
}

/// The backfill with seed id `id` on `database`, if there is one.
fn find_backfill(runner: &Runner, database: Identity, id: &str) -> Option<Instance> {
    // Newest first: a catch_up that became a full_sync shares its id with it.
    runner.list(&database).into_iter().find(|i| i.detail.get("backfillId").and_then(Value::as_str) == Some(id))
}

/// The database a backfill route names (none: the server's default one) and its authorized
/// caller.
fn backfill_database(
    state: &AppState,
    segment: Option<String>,
    headers: &HeaderMap,
) -> Result<(Identity, SyncCaller), ApiError> {
    let segment = match segment {
        Some(s) => s,
        None => default_database(state)?,
    };
    let database = sync_database(state, &segment)?;
    let caller = authorize(state, headers, bearer(headers), database, false)?;
    Ok((database, caller))
}

async fn backfill_start(
    state: AppState,
    segment: Option<String>,
    q: std::collections::HashMap<String, String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (database, caller) = backfill_database(&state, segment, &headers)?;
    let config = atproto_source(&state, database)?;
    let runner = runner(&state)?.clone();
    // An unknown `force` is ignored: detection decides.
    let force = q.get("force").map(String::as_str).filter(|f| matches!(*f, "catch_up" | "full_sync"));
    let Some(kind) = backfill_kind(&runner, database, &config, force)? else {
        return Ok(Json(json!({
            "message": "No backfill needed. Use ?force=catch_up or ?force=full_sync to override."
        }))
        .into_response());
    };
    let note = (force == Some("catch_up") && kind == "full_sync")
        .then(|| "catch_up was asked for, but there is no firehose cursor: running a full_sync".to_string());
    let started = start_backfill(runner.clone(), database, caller.identity, config, kind, backfill_id(), note).await?;
    match started {
        Ok(i) => Ok((
            StatusCode::ACCEPTED,
            Json(json!({
                "message": "Backfill started",
                "type": i.params.kind.get("type"),
                "status": "in_progress",
                "id": i.detail.get("backfillId"),
                "note": i.detail.get("note"),
            })),
        )
            .into_response()),
        Err(RunnerError::Conflict(running)) => {
            Err(conflict(runner.get(&running).and_then(|i| i.detail.get("backfillId").cloned())))
        }
        Err(e @ RunnerError::Source(_)) => Err(ApiError::new(StatusCode::BAD_GATEWAY, e.to_string())),
        Err(e) => Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
    }
}

/// The seed's answer to a backfill asked for while one runs: its own JSON (not the envelope),
/// naming the running backfill's id.
fn conflict(id: Option<Value>) -> ApiError {
    ApiError::json(
        StatusCode::CONFLICT,
        json!({"error": "Conflict", "message": "A backfill is already running", "code": 409, "id": id}),
    )
}

/// Which backfill to run (`catch_up` or `full_sync`), or `None` when none is needed: `force`
/// when given, else the stored cursor's age decides. A catch_up already running is a conflict.
fn backfill_kind(
    runner: &Runner,
    database: Identity,
    config: &AtprotoConfig,
    force: Option<&str>,
) -> Result<Option<&'static str>, ApiError> {
    // A catch_up in progress is the database's firehose instance in that mode.
    if let Some(i) = firehose::running(runner, &database) {
        if i.param_str("mode") == Some("catch_up") {
            return Err(conflict(i.detail.get("backfillId").cloned()));
        }
    }
    let cursor = firehose::stored_cursor(runner, &database);
    // The cursor's age: since the consumer last advanced it (the newest event applied).
    let age_hours = cursor.as_ref().map(|(_, at)| epoch_sync::now_ms().saturating_sub(*at) as f64 / 3_600_000.0);
    Ok(match (force, age_hours) {
        (Some("full_sync"), _) | (_, None) => Some("full_sync"),
        (Some(_), Some(_)) => Some("catch_up"),
        (None, Some(age)) if age > config.backfill_cursor_max_age_hours => Some("catch_up"),
        (None, Some(_)) => None,
    })
}

/// Starts backfill `id` of `kind`: a catch_up from the stored cursor when there is one to
/// start from, else a full_sync. Off the async runtime: starting one reads the source.
async fn start_backfill(
    runner: Arc<Runner>,
    database: Identity,
    caller: Identity,
    config: AtprotoConfig,
    kind: &'static str,
    id: String,
    note: Option<String>,
) -> Result<Result<Instance, RunnerError>, ApiError> {
    tokio::task::spawn_blocking(move || -> Result<Instance, RunnerError> {
        if kind == "catch_up" {
            if let Some(i) = firehose::start_catch_up(&runner, database, caller, &config, id.clone())? {
                return Ok(i);
            }
        }
        epoch_sync_atproto::start_full_sync(&runner, database, caller, &config, id, note)
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

fn backfill_get(
    state: AppState,
    segment: Option<String>,
    id: String,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (database, _) = backfill_database(&state, segment, &headers)?;
    let runner = runner(&state)?;
    let i = find_backfill(runner, database, &id)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no backfill {id}")).detail("id", "unknown"))?;
    Ok(Json(backfill_json(&i)).into_response())
}

/// A new backfill id: a positive 63-bit number (the seed's ids are bigints), as text.
fn backfill_id() -> String {
    let n = u64::from_be_bytes(uuid::Uuid::new_v4().as_bytes()[..8].try_into().unwrap_or_default()) >> 1;
    n.max(1).to_string()
}

/// A backfill's progress, from its workflow instance.
fn backfill_json(i: &Instance) -> Value {
    let members: Vec<String> =
        serde_json::from_value(i.detail.get("members").cloned().unwrap_or_default()).unwrap_or_default();
    let complete = i.status == epoch_sync::Status::Complete;
    let at = i.cursor.as_ref().and_then(|c| c["did"].as_str()).and_then(|d| members.iter().position(|m| m == d));
    let repos_done = if complete { members.len() } else { at.unwrap_or(0) };
    // Errors read `<item>: <why>`; a repo failed when its reset item did (DIDs hold colons too).
    let repos_failed = i
        .errors
        .iter()
        .filter(|e| e.split_once(": ").is_some_and(|(item, _)| epoch_sync_atproto::is_reset(item)))
        .count();
    let resets_applied = (repos_done + usize::from(!complete && at.is_some())).saturating_sub(repos_failed);
    let status = match i.status {
        epoch_sync::Status::Complete => "complete",
        epoch_sync::Status::Errored | epoch_sync::Status::Terminated => "failed",
        _ => "in_progress",
    };
    json!({
        "id": i.detail.get("backfillId"),
        "type": i.params.kind.get("type"),
        "status": status,
        "reposTotal": members.len(),
        "reposDone": repos_done,
        "reposFailed": repos_failed,
        "recordsApplied": i.succeeded.saturating_sub(resets_applied as u64),
        "cursor": i.cursor.as_ref().map(|c| json!({"seq": c["seq"], "did": c["did"], "key": c["key"]})),
        "fromCursor": i.params.kind.get("from").map(|c| c["seq"].clone()),
        "errors": i.errors,
        "note": i.detail.get("note"),
        "startedAt": rfc3339(i.started_at),
        "endedAt": i.ended_at.map(rfc3339),
        "instanceId": i.id,
    })
}

/// Milliseconds since the Unix epoch as RFC 3339 (UTC).
fn rfc3339(ms: u64) -> String {
    let (secs, millis) = ((ms / 1000) as i64, ms % 1000);
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Days to a civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z", rest / 3600, rest % 3600 / 60, rest % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_read_as_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_796_174_864_123), "2026-12-02T01:27:44.123Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }
}
