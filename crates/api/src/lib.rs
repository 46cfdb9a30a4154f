//! # epoch-api
//!
//! SpacetimeDB 1.3's HTTP API on axum: `/v1/identity`, `/v1/database/...`, `/v1/ping`,
//! `/v1/health`, and Prometheus metrics at `/metrics` and `/v1/metrics`. Statuses and bodies follow
//! the reference server (see `docs/notes/http-api-1.3.md`), so the official CLI and SDKs work
//! against it unchanged.
//!
//! Not for: running modules (epoch-core) or token cryptography (epoch-auth).

pub mod archive;
mod auth;
mod database;
mod error;
mod identity;
mod lifecycle;
pub mod limits;
mod logs;
mod metrics;
mod pre_publish;
mod sql_json;
pub mod sync;
pub mod ws;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post, put};
use axum::Router;
use epoch_auth::Authority;
use epoch_control::ControlPlane;

pub use auth::CallerAuth;
pub use error::ApiError;
pub use metrics::Metrics;

/// Limits on what clients may send and receive.
#[derive(Debug, Clone)]
pub struct ApiLimits {
    /// The largest module a publish may upload (413 above it).
    pub max_module_bytes: usize,
    /// The largest body of any other request (413 above it).
    pub max_body_bytes: usize,
    /// The longest SQL text (400 above it).
    pub max_sql_bytes: usize,
    /// The most rows one SQL query may return (400 above it).
    pub max_sql_rows: usize,
    /// The WebSocket API's limits.
    pub ws: ws::WsLimits,
}

impl Default for ApiLimits {
    fn default() -> Self {
        Self {
            max_module_bytes: limits::DEFAULT_MAX_MODULE_BYTES,
            max_body_bytes: limits::DEFAULT_MAX_BODY_BYTES,
            max_sql_bytes: epoch_query::limits::MAX_SQL_LEN,
            max_sql_rows: epoch_query::limits::DEFAULT_MAX_SQL_ROWS,
            ws: ws::WsLimits::default(),
        }
    }
}

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub control: Arc<ControlPlane>,
    pub auth: Arc<Authority>,
    pub metrics: Arc<Metrics>,
    pub limits: ApiLimits,
    /// The server-wide admin API key of the sync API (`EPOCH_ADMIN_API_KEY`); databases may
    /// also carry their own in their sync configuration.
    pub admin_api_key: Option<Arc<str>>,
    /// The sync engine's workflow runner.
    pub runner: Option<Arc<epoch_sync::Runner>>,
    /// The database the `/admin/…` seed paths act on.
    pub default_database: Option<String>,
    /// The live MQTT consumers of device shadows (restarted when a sync configuration changes).
    pub live_shadows: Option<Arc<epoch_sync_shadows::LiveShadows>>,
    /// Continuous archiving and restores.
    pub archive: Option<Arc<archive::ArchiveState>>,
    /// Bytes waiting for every WebSocket client together.
    pub ws_output: Arc<ws::OutputBudget>,
}

/// The whole HTTP API.
pub fn router(state: AppState) -> Router {
    let database = database_routes(&state);
    let v1 = Router::new()
        .route("/ping", get(identity::ping))
        .route("/health", get(identity::health))
        .route("/metrics", get(identity::metrics))
        .route("/identity", post(identity::create))
        .route("/identity/public-key", get(identity::public_key))
        .route("/identity/websocket-token", post(identity::websocket_token))
        .route("/identity/{identity}/verify", get(identity::verify))
        .route("/identity/{identity}/databases", get(identity::databases))
        .route("/energy/{identity}", get(identity::energy));
    let v1 = sync_routes(v1)
        .nest("/database", database)
        // As 1.3: any origin may call the API from a browser.
        .layer(cors());
    // The seed-compatible admin paths, for a server with a default database, under both of the
    // prefixes our users' tools call.
    let admin = sync::admin_routes();
    Router::new()
        .nest("/v1", v1)
        .nest("/admin", admin.clone())
        .nest("/api/admin", admin)
        .route("/metrics", get(identity::metrics))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(state.limits.max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(state.clone(), metrics::count_requests))
        .with_state(state)
}

/// A path no route serves: 404, after reading the request's body (up to the largest module),
/// so the connection stays usable. Answering before the body is read makes the server close
/// the connection, and a client that already sent its next request on it (the 2.x CLI's
/// publish after its `pre_publish` probe) fails with "connection closed".
async fn not_found(body: axum::body::Body) -> axum::http::StatusCode {
    let _ = axum::body::to_bytes(body, limits::DEFAULT_MAX_MODULE_BYTES).await;
    axum::http::StatusCode::NOT_FOUND
}

/// The routes under `/v1/database` that act on one database, behind database authentication.
fn database_routes(state: &AppState) -> Router<AppState> {
    let module_limit = DefaultBodyLimit::max(state.limits.max_module_bytes);
    Router::new()
        .route("/", post(database::publish_new).layer(module_limit))
        .route(
            "/{name_or_identity}",
            get(database::describe).put(database::publish).layer(module_limit).delete(database::delete),
        )
        .route("/{name_or_identity}/names", get(database::get_names).post(database::add_name).put(database::set_names))
        .route("/{name_or_identity}/identity", get(database::get_identity))
        .route("/{name_or_identity}/subscribe", get(ws::subscribe))
        .route("/{name_or_identity}/call/{reducer}", post(database::call))
        .route("/{name_or_identity}/schema", get(database::schema))
        .route("/{name_or_identity}/logs", get(logs::logs))
        .route("/{name_or_identity}/export/{table}", get(database::export))
        .route(
            "/{name_or_identity}/import/{table}",
            post(database::import).layer(axum::extract::DefaultBodyLimit::max(limits::MAX_IMPORT_BYTES)),
        )
        .route("/{name_or_identity}/sql", post(database::sql))
        .route("/{name_or_identity}/unstable/timestamp", get(database::timestamp))
        .route("/{name_or_identity}/lock", post(lifecycle::lock))
        .route("/{name_or_identity}/unlock", post(lifecycle::unlock))
        .route("/{name_or_identity}/reset", put(lifecycle::reset).layer(module_limit))
        .route("/{name_or_identity}/pre_publish", post(pre_publish::pre_publish).layer(module_limit))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), auth::database_auth))
}

/// The sync API, archiving and restores under `/v1`, added to `v1`; these check their own
/// credentials.
fn sync_routes(v1: Router<AppState>) -> Router<AppState> {
    sync::routes(v1)
        .route(
            "/database/{name_or_identity}/archive",
            get(archive::status).put(archive::configure).delete(archive::configure),
        )
        .route("/database/{name_or_identity}/restore", post(archive::restore))
        .route("/database/{name_or_identity}/backup", post(archive::backup))
}

/// As 1.3: any origin may call the API from a browser.
fn cors() -> tower_http::cors::CorsLayer {
    tower_http::cors::CorsLayer::new()
        .allow_origin(tower_http::cors::Any)
        .allow_methods(tower_http::cors::Any)
        .allow_headers([
            axum::http::header::AUTHORIZATION,
            axum::http::header::ACCEPT,
            axum::http::header::CONTENT_TYPE,
        ])
}

/// Serves the API on `listener` until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, state: AppState) -> std::io::Result<()> {
    axum::serve(listener, router(state).into_make_service_with_connect_info::<SocketAddr>()).await
}
