//! `/v1/identity`, `/v1/ping`, `/v1/health` and the metrics routes.

use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use epoch_auth::Identity;
use serde_json::json;

use crate::auth;
use crate::error::ApiError;
use crate::limits::WEBSOCKET_TOKEN_SECONDS;
use crate::AppState;

pub async fn ping(State(state): State<AppState>, req: Request) -> Result<Response, ApiError> {
    auth::verify(&state, &req).await?;
    Ok(StatusCode::OK.into_response())
}

pub async fn health() -> Response {
    Json(json!({"nodes": [0], "package_name": "epoch", "schedulable": true, "version": env!("CARGO_PKG_VERSION")}))
        .into_response()
}

pub async fn create(State(state): State<AppState>) -> Result<Response, ApiError> {
    let (identity, token) = state.auth.create_identity().map_err(internal)?;
    Ok(Json(json!({"identity": identity.to_hex(), "token": token})).into_response())
}

/// A failure of the server's own (500, its text).
fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

pub async fn public_key(State(state): State<AppState>) -> Response {
    ([(header::CONTENT_TYPE, "application/pem-certificate-chain")], state.auth.public_key_pem().to_string())
        .into_response()
}

fn required<'a>(
    state: &'a AppState,
    req: &Request,
) -> impl std::future::Future<Output = Result<auth::CallerAuth, ApiError>> + Send + 'a {
    let verified = auth::verify(state, req);
    async move { verified.await?.ok_or_else(|| ApiError::text(StatusCode::UNAUTHORIZED, "Authorization required")) }
}

/// A short-lived token for opening a WebSocket (the SDKs exchange their token for one).
pub async fn websocket_token(State(state): State<AppState>, req: Request) -> Result<Response, ApiError> {
    let caller = required(&state, &req).await?;
    let claims = state.auth.verify_async(&caller.token).await.map_err(auth::invalid_token)?.claims;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    // A WebSocket token never outlives the token it is minted from: one WebSocket token can
    // mint others only until it expires itself, not forever.
    let secs = claims.exp.map_or(WEBSOCKET_TOKEN_SECONDS, |exp| WEBSOCKET_TOKEN_SECONDS.min(exp.saturating_sub(now)));
    let token = state.auth.sign_short_lived(&claims, secs).map_err(internal)?;
    Ok(Json(json!({ "token": token })).into_response())
}

pub async fn verify(State(state): State<AppState>, Path(id): Path<String>, req: Request) -> Result<Response, ApiError> {
    let id = parse_identity(&id)?;
    // A valid token of another identity: 1.3's bare 400.
    let status =
        if required(&state, &req).await?.identity == id { StatusCode::NO_CONTENT } else { StatusCode::BAD_REQUEST };
    Ok(status.into_response())
}

/// Epoch does not meter energy; every balance is zero, as a fresh 1.3 identity's is.
pub async fn energy(Path(id): Path<String>) -> Result<Response, ApiError> {
    parse_identity(&id)?;
    Ok(Json(json!({ "balance": "0" })).into_response())
}

/// An identity in a path, refused with 1.3's text.
fn parse_identity(id: &str) -> Result<Identity, ApiError> {
    Identity::from_hex(id).ok_or_else(|| {
        ApiError::text(
            StatusCode::BAD_REQUEST,
            format!("Invalid URL: invalid value: string {id:?}, expected a byte array or hex string"),
        )
    })
}

pub async fn databases(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let id = parse_identity(&id)?;
    let owned: Vec<String> = state.control.owned_by(&id).iter().map(|d| d.to_hex()).collect();
    Ok(Json(json!({ "identities": owned })).into_response())
}

pub async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    // Each database is read on its writer: off the async workers.
    let body = tokio::task::spawn_blocking(move || metrics_text(&state)).await.map_err(internal)?;
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response())
}

/// The `/metrics` text. Table sizes may count changes not yet durable: metrics must answer
/// while the disk is full.
fn metrics_text(state: &AppState) -> String {
    let mut tables = Vec::new();
    let mut clients = Vec::new();
    for db in state.control.all() {
        let name = db.identity.to_hex();
        let read = db.handle.read(|d| {
            let sizes = d.store().present_tables().map(|t| (t.schema.name().to_string(), t.len())).collect::<Vec<_>>();
            (sizes, d.client_stats())
        });
        let Ok((sizes, stats)) = read else { continue };
        tables.extend(sizes.into_iter().map(|(t, n)| (name.clone(), t, n)));
        clients.push((name, stats));
    }
    let mut body = state.metrics.render(&tables, &clients);
    if let Some(service) = state.archive.as_ref().and_then(|a| a.service.as_ref()) {
        body.push_str(&crate::metrics::render_archive(&service.statuses()));
    }
    body
}
