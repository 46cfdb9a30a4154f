//! `/v1/identity`, `/v1/ping`, `/v1/health` and the metrics routes.

use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use epoch_auth::Identity;
use serde_json::json;

use crate::auth::{self, TokenRejection};
use crate::AppState;

pub async fn ping(State(state): State<AppState>, req: Request) -> Response {
    match auth::verify(&state, &req).await {
        Ok(_) => StatusCode::OK.into_response(),
        Err(r) => r.into_response(),
    }
}

pub async fn health() -> Response {
    Json(json!({"nodes": [0], "package_name": "epoch", "schedulable": true, "version": env!("CARGO_PKG_VERSION")}))
        .into_response()
}

pub async fn create(State(state): State<AppState>) -> Response {
    match state.auth.create_identity() {
        Ok((identity, token)) => Json(json!({"identity": identity.to_hex(), "token": token})).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

pub async fn public_key(State(state): State<AppState>) -> Response {
    ([(header::CONTENT_TYPE, "application/pem-certificate-chain")], state.auth.public_key_pem().to_string())
        .into_response()
}

fn required<'a>(
    state: &'a AppState,
    req: &Request,
) -> impl std::future::Future<Output = Result<auth::CallerAuth, Response>> + Send + 'a {
    let verified = auth::verify(state, req);
    async move {
        match verified.await {
            Ok(Some(c)) => Ok(c),
            Ok(None) => Err((StatusCode::UNAUTHORIZED, "Authorization required").into_response()),
            Err(r) => Err(r.into_response()),
        }
    }
}

/// A short-lived token for opening a WebSocket (the SDKs exchange their token for one).
/// How long a WebSocket token (`POST /v1/identity/websocket-token`) lives, as 1.3's; at most
/// as long as the token it is minted from.
pub const WEBSOCKET_TOKEN_SECONDS: u64 = 60;

pub async fn websocket_token(State(state): State<AppState>, req: Request) -> Response {
    let caller = match required(&state, &req).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let claims = match state.auth.verify_async(&caller.token).await {
        Ok(v) => v.claims,
        Err(e) => return TokenRejection::Invalid(e.to_string()).into_response(),
    };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    // A WebSocket token never outlives the token it is minted from: one WebSocket token can
    // mint others only until it expires itself, not forever.
    let secs = claims.exp.map_or(WEBSOCKET_TOKEN_SECONDS, |exp| WEBSOCKET_TOKEN_SECONDS.min(exp.saturating_sub(now)));
    match state.auth.sign_short_lived(&claims, secs) {
        Ok(token) => Json(json!({ "token": token })).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

pub async fn verify(State(state): State<AppState>, Path(id): Path<String>, req: Request) -> Response {
    let Some(id) = Identity::from_hex(&id) else {
        return bad_identity(&id);
    };
    match required(&state, &req).await {
        Ok(c) if c.identity == id => StatusCode::NO_CONTENT.into_response(),
        Ok(_) => StatusCode::BAD_REQUEST.into_response(),
        Err(r) => r,
    }
}

/// Epoch does not meter energy; every balance is zero, as a fresh 1.3 identity's is.
pub async fn energy(Path(id): Path<String>) -> Response {
    match Identity::from_hex(&id) {
        Some(_) => Json(json!({ "balance": "0" })).into_response(),
        None => bad_identity(&id),
    }
}

fn bad_identity(id: &str) -> Response {
    (StatusCode::BAD_REQUEST, format!("Invalid URL: invalid value: string {id:?}, expected a byte array or hex string"))
        .into_response()
}

pub async fn databases(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let Some(id) = Identity::from_hex(&id) else {
        return bad_identity(&id);
    };
    let owned: Vec<String> = state.control.owned_by(&id).iter().map(|d| d.to_hex()).collect();
    Json(json!({ "identities": owned })).into_response()
}

pub async fn metrics(State(state): State<AppState>) -> Response {
    // Each database is read on its writer: off the async workers.
    match tokio::task::spawn_blocking(move || metrics_text(&state)).await {
        Ok(body) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// The `/metrics` text. Table sizes may count changes not yet durable: metrics must answer
/// while the disk is full.
fn metrics_text(state: &AppState) -> String {
    let mut tables = Vec::new();
    let mut clients = Vec::new();
    for db in state.control.all() {
        let name = db.identity.to_hex();
        let read = db.handle.read(|d| {
            let sizes = d.store().tables().iter().map(|t| (t.schema.name().to_string(), t.len())).collect::<Vec<_>>();
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
