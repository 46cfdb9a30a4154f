//! 2.x's lifecycle routes of one database: `POST /lock` and `/unlock` (the owner keeps a
//! database from being deleted or reset until it is unlocked; an empty 200, as 2.x answers) and
//! `PUT /reset` (start it afresh: same identity and names, no data).

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Extension;

use crate::auth::CallerAuth;
use crate::database::{control_error_2x, host_type_param, lookup, publish_result, text, Action, Params};
use crate::error::ApiError;
use crate::AppState;

pub async fn lock(
    State(state): State<AppState>,
    Extension(caller): Extension<CallerAuth>,
    Path(segment): Path<String>,
) -> Result<Response, ApiError> {
    set(state, caller, &segment, true)
}

pub async fn unlock(
    State(state): State<AppState>,
    Extension(caller): Extension<CallerAuth>,
    Path(segment): Path<String>,
) -> Result<Response, ApiError> {
    set(state, caller, &segment, false)
}

fn set(state: AppState, caller: CallerAuth, segment: &str, locked: bool) -> Result<Response, ApiError> {
    let db = lookup(&state, segment)?;
    state
        .control
        .set_lock(db.identity, caller.identity, locked)
        .map_err(|e| control_error_2x(e, caller.identity, db.identity, Action::Delete))?;
    Ok(StatusCode::OK.into_response())
}

/// `PUT /v1/database/:name_or_identity/reset`: the body is the module to start with (none: the
/// one running now; 2.x falls back to the first one published). Answers as a publish that
/// updated the database.
pub async fn reset(
    State(state): State<AppState>,
    Extension(caller): Extension<CallerAuth>,
    Path(segment): Path<String>,
    axum::extract::Query(q): Params,
    wasm: Bytes,
) -> Result<Response, ApiError> {
    host_type_param(&q)?;
    if let Some(n) = q.get("num_replicas") {
        if n.parse::<u8>().is_err() {
            return Err(text(StatusCode::BAD_REQUEST, format!("Replication factor {n} out of bounds")));
        }
    }
    let db = lookup(&state, &segment)?;
    let control = state.control.clone();
    let identity = db.identity;
    drop(db);
    let op = tokio::task::spawn_blocking(move || {
        control.reset(identity, caller.identity, (!wasm.is_empty()).then_some(&wasm[..]))
    })
    .await
    .map_err(|e| text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
    .map_err(|e| control_error_2x(e, caller.identity, identity, Action::Reset))?;
    tracing::info!(database = %identity, "reset");
    let hex = segment.strip_prefix("0x").unwrap_or(&segment);
    let is_identity = hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit());
    let domain = (!is_identity).then_some(segment.as_str());
    Ok(publish_result(op, domain, identity))
}
