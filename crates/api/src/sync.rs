//! The sync API's shared pieces: who may call it (an admin API key *and* a bearer token whose
//! identity owns the database or holds the `sync` permission), and the routes that configure
//! it: `…/permissions` and `…/sync/config`. Its errors are [`ApiError`]'s JSON envelope.

use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use std::sync::Arc;

use epoch_auth::Identity;
use epoch_sync::{ConfigContext, KindSpec};
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::AppState;

/// The permission that lets a non-owner run sync operations on a database.
pub const SYNC_PERMISSION: &str = "sync";

/// The admin API key a request carries: `X-Admin-API-Key` (the seed's text) or `X-API-Key`
/// (the seed's examples), whichever it sent.
pub fn admin_key_header(headers: &HeaderMap) -> Option<&str> {
    ["x-admin-api-key", "x-api-key"]
        .iter()
        .find_map(|h| headers.get(*h).and_then(|v| v.to_str().ok()))
        .filter(|k| !k.is_empty())
}

/// The header names the admin key may come in, for error details.
const KEY_HEADERS: &str = "X-Admin-API-Key or X-API-Key";

/// Compares secrets in time that does not depend on where they differ.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() != b.len()) as u8;
    for i in 0..a.len().max(b.len()) {
        diff |= a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0);
    }
    diff == 0
}

/// Who called a sync route, once both credentials checked out.
pub struct SyncCaller {
    pub identity: Identity,
    pub database: Identity,
    pub is_owner: bool,
}

/// Resolves a database for the sync API (404 in the sync error shape).
pub fn sync_database(state: &AppState, segment: &str) -> Result<Identity, ApiError> {
    let not_found = || ApiError::new(StatusCode::NOT_FOUND, format!("no database named {segment}"));
    let id = match Identity::from_hex(segment) {
        Some(id) => id,
        None => Identity(state.control.resolve_name(segment).ok_or_else(not_found)?),
    };
    if state.control.get(&id.0).is_none() {
        return Err(match state.control.unavailable(&id.0) {
            Some(u) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, format!("the database is unavailable: {}", u.reason))
            }
            None => not_found(),
        });
    }
    Ok(id)
}

/// Checks the admin key (the server's, or the database's own from its sync config) and the
/// bearer token; `owner_only` also refuses holders of the `sync` permission.
pub fn authorize(
    state: &AppState,
    headers: &HeaderMap,
    req_token: Option<&str>,
    database: Identity,
    owner_only: bool,
) -> Result<SyncCaller, ApiError> {
    let presented = admin_key_header(headers).ok_or_else(|| ApiError::unauthorized(KEY_HEADERS, "missing"))?;
    // An empty key (stored before empty keys were refused) matches nothing.
    let db_key = state
        .control
        .sync_config(&database.0)
        .and_then(|c| c["adminApiKey"].as_str().map(str::to_string))
        .filter(|k| !k.is_empty());
    let keys = state.admin_api_key.iter().map(|k| k.to_string()).chain(db_key);
    let mut key_ok = false;
    for k in keys {
        key_ok |= constant_time_eq(k.as_bytes(), presented.as_bytes());
    }
    if !key_ok {
        return Err(ApiError::unauthorized(KEY_HEADERS, "not a valid admin API key"));
    }
    let token = req_token.ok_or_else(|| ApiError::unauthorized("Authorization", "missing bearer token"))?;
    let verified = state
        .auth
        .verify(token)
        .map_err(|e| ApiError::unauthorized("Authorization", format!("invalid bearer token: {e}")))?;
    let identity = verified.identity;
    let is_owner = state.control.get(&database.0).is_some_and(|d| d.owner == identity.0);
    let by_rule = || {
        let c = &verified.claims;
        state.control.rule_grants(
            &database.0,
            &c.iss,
            c.email.as_deref(),
            c.email_verified == Some(true),
            SYNC_PERMISSION,
        )
    };
    let allowed = is_owner
        || (!owner_only && (state.control.has_permission(&database.0, &identity.0, SYNC_PERMISSION) || by_rule()));
    if !allowed {
        let why = if owner_only {
            format!("identity {identity} does not own this database")
        } else {
            format!("identity {identity} neither owns this database nor holds its `{SYNC_PERMISSION}` permission")
        };
        return Err(ApiError::forbidden("Authorization", why));
    }
    Ok(SyncCaller { identity, database, is_owner })
}

/// The bearer token of a request, if it has one.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers.get("authorization")?.to_str().ok()?.strip_prefix("Bearer ").map(str::trim)
}

/// `POST` / `DELETE /v1/database/:n/permissions` with `{"identity": "<hex>", "permission": "sync"}`:
/// the owner grants or revokes a permission.
pub async fn permissions(State(state): State<AppState>, Path(segment): Path<String>, req: Request) -> Response {
    let grant = req.method() == axum::http::Method::POST;
    let headers = req.headers().clone();
    let result = async {
        let database = sync_database(&state, &segment)?;
        let token = bearer(&headers).ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "missing bearer token"))?;
        let caller = state
            .auth
            .verify(token)
            .map_err(|e| ApiError::new(StatusCode::UNAUTHORIZED, format!("invalid bearer token: {e}")))?
            .identity;
        let body = axum::body::to_bytes(req.into_body(), 64 << 10)
            .await
            .map_err(|e| ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, e.to_string()))?;
        let v: Value = serde_json::from_slice(&body)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("body is not JSON: {e}")))?;
        let permission = v["permission"].as_str().unwrap_or_default();
        if permission != SYNC_PERMISSION {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("unknown permission {permission:?}; known: \"sync\""),
            ));
        }
        // A rule: every token of an issuer whose verified email is in a domain.
        if v.get("emailDomain").is_some() || v.get("issuer").is_some() {
            let field = |name: &str| {
                v[name].as_str().filter(|s| !s.is_empty() && s.len() <= 256).map(str::to_string).ok_or_else(|| {
                    ApiError::new(StatusCode::BAD_REQUEST, "a rule needs `issuer` and `emailDomain`")
                        .detail(name, "must be a non-empty string of at most 256 characters")
                })
            };
            let rule = epoch_core::GrantRule {
                issuer: field("issuer")?,
                email_domain: field("emailDomain")?.trim_start_matches('@').to_string(),
                permission: permission.to_string(),
            };
            let answer = json!({"success": true, "issuer": rule.issuer, "emailDomain": rule.email_domain,
                                "permission": permission, "granted": grant});
            state.control.set_rule(database.0, caller.0, rule, grant).map_err(|e| match e {
                epoch_core::ControlError::NotOwner { .. } => {
                    ApiError::new(StatusCode::FORBIDDEN, "only the database owner may change permissions")
                }
                other => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, other.to_string()),
            })?;
            return Ok(Json(answer));
        }
        let identity = v["identity"]
            .as_str()
            .and_then(Identity::from_hex)
            .ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, "`identity` must be 64 hex digits"))?;
        state.control.set_permission(database.0, caller.0, identity.0, permission, grant).map_err(|e| match e {
            epoch_core::ControlError::NotOwner { .. } => {
                ApiError::new(StatusCode::FORBIDDEN, "only the database owner may change permissions")
            }
            other => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, other.to_string()),
        })?;
        Ok(Json(json!({"success": true, "identity": identity.to_hex(), "permission": permission, "granted": grant})))
    }
    .await;
    match result {
        Ok(r) => r.into_response(),
        Err(e) => e.into_response(),
    }
}

/// Secrets are never returned: they are replaced by this marker.
const MASK: &str = "********";

/// The workflow kinds this server runs; each owns a section of a database's sync
/// configuration (its validation and its secrets).
pub fn workflow_kinds() -> Vec<Arc<dyn KindSpec>> {
    workflow_kinds_with(Arc::default())
}

/// The same, with the firehose spec the runner binds itself to (a catch_up starts the live
/// consumer when it reaches the head); the full_sync kind shares its holds (live events of repos
/// not yet re-read wait).
pub fn workflow_kinds_with(firehose: Arc<epoch_sync_atproto::FirehoseSpec>) -> Vec<Arc<dyn KindSpec>> {
    vec![
        Arc::new(epoch_sync_objectstore::ResyncProjectionsSpec),
        Arc::new(epoch_sync_shadows::ForceSyncSpec),
        Arc::new(firehose.full_sync_spec()),
        firehose,
    ]
}

/// Each configuration section that holds secrets, with their fields.
fn secret_fields() -> Vec<(&'static str, &'static [&'static str])> {
    workflow_kinds().iter().map(|k| (k.config_section(), k.secret_fields())).collect()
}

fn masked(mut config: Value) -> Value {
    for (section, secrets) in secret_fields() {
        if let Some(s) = config.get_mut(section).and_then(Value::as_object_mut) {
            for secret in secrets {
                if s.contains_key(*secret) {
                    s.insert(secret.to_string(), json!(MASK));
                }
            }
        }
    }
    if let Some(obj) = config.as_object_mut() {
        if obj.contains_key("adminApiKey") {
            obj.insert("adminApiKey".into(), json!(MASK));
        }
    }
    config
}

/// The shortest per-database admin key accepted.
pub const MIN_ADMIN_KEY_LEN: usize = 16;

/// Checks a sync configuration and fills in defaults.
fn validate_config(state: &AppState, database: Identity, mut v: Value) -> Result<Value, ApiError> {
    let bad = |m: String| ApiError::new(StatusCode::BAD_REQUEST, m);
    let obj = v.as_object_mut().ok_or_else(|| bad("the configuration must be a JSON object".into()))?;
    if let Some(key) = obj.get("adminApiKey") {
        match key.as_str() {
            Some(k) if k.len() >= MIN_ADMIN_KEY_LEN => {}
            _ => {
                return Err(bad(format!(
                    "`adminApiKey` must be a string of at least {MIN_ADMIN_KEY_LEN} characters (or left out)"
                )))
            }
        }
    }
    let def = state.control.get(&database.0).map(|d| d.def.clone());
    let has_reducer = |name: &str| def.as_ref().is_some_and(|d| d.reducer_id(name).is_some());
    let cx = ConfigContext { has_reducer: &has_reducer, data_dir: state.control.data_dir() };
    for kind in workflow_kinds() {
        if obj.contains_key(kind.config_section()) {
            kind.validate_config(obj, &cx).map_err(bad)?;
        }
    }
    Ok(v)
}

/// A secret sent back as the mask (a configuration read, changed and written whole) keeps the
/// value it had.
fn unmask(mut new: Value, old: &Value) -> Value {
    for (section, secrets) in secret_fields() {
        for secret in secrets.iter().copied() {
            if new[section][secret] == json!(MASK) {
                if let Some(s) = new.get_mut(section).and_then(Value::as_object_mut) {
                    match old[section].get(secret) {
                        Some(kept) => s.insert(secret.into(), kept.clone()),
                        None => s.remove(secret),
                    };
                }
            }
        }
    }
    if new["adminApiKey"] == json!(MASK) {
        if let Some(o) = new.as_object_mut() {
            match old.get("adminApiKey") {
                Some(kept) => o.insert("adminApiKey".into(), kept.clone()),
                None => o.remove("adminApiKey"),
            };
        }
    }
    new
}

/// `PUT /v1/database/:n/sync/config` (owner only): replaces the whole configuration.
pub async fn put_config(
    State(state): State<AppState>,
    Path(segment): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    set_config(state, segment, headers, body, false)
}

/// `PATCH /v1/database/:n/sync/config` (owner only): replaces the sections it names.
pub async fn patch_config(
    State(state): State<AppState>,
    Path(segment): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    set_config(state, segment, headers, body, true)
}

fn set_config(state: AppState, segment: String, headers: HeaderMap, body: axum::body::Bytes, patch: bool) -> Response {
    let result = (|| {
        let database = sync_database(&state, &segment)?;
        authorize(&state, &headers, bearer(&headers), database, true)?;
        let v: Value = serde_json::from_slice(&body)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("body is not JSON: {e}")))?;
        let old = state.control.sync_config(&database.0).unwrap_or(Value::Null);
        let v = match patch {
            // A PATCH replaces the sections it names (null removes one) and keeps the others.
            true => {
                let changes = v
                    .as_object()
                    .ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, "the configuration must be a JSON object"))?;
                let mut merged = old.as_object().cloned().unwrap_or_default();
                for (k, section) in changes {
                    if section.is_null() {
                        merged.remove(k);
                    } else {
                        merged.insert(k.clone(), section.clone());
                    }
                }
                Value::Object(merged)
            }
            false => v,
        };
        let v = validate_config(&state, database, unmask(v, &old))?;
        state
            .control
            .set_sync_config(database.0, v.clone())
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        if let Some(live) = &state.live_shadows {
            live.reconfigure(&database.0);
        }
        atproto_changed(&state, database, &old, &v);
        Ok::<_, ApiError>(Json(masked(v)))
    })();
    match result {
        Ok(r) => r.into_response(),
        Err(e) => e.into_response(),
    }
}

/// Starts, restarts or stops the database's live firehose consumer after its `atproto` section
/// changed (a restart keeps the cursor unless the service changed).
fn atproto_changed(state: &AppState, database: Identity, old: &Value, new: &Value) {
    let Some(runner) = state.runner.clone() else { return };
    if old.get("atproto") == new.get("atproto") {
        return;
    }
    let Some(owner) = state.control.get(&database.0).map(|d| d.owner) else { return };
    let section = new.get("atproto").cloned();
    // Stopping a consumer waits for its batch in flight: off the async runtime.
    tokio::task::spawn_blocking(move || match section.map(|s| epoch_sync_atproto::AtprotoConfig::parse(&s)) {
        Some(Ok(config)) => {
            if let Err(e) = epoch_sync_atproto::firehose::start_live(&runner, database.0, owner, &config) {
                tracing::error!(database = %database, "cannot start the firehose consumer: {e}");
            }
        }
        _ => epoch_sync_atproto::firehose::stop_live(&runner, &database.0),
    });
}

/// `GET /v1/database/:n/sync/config`, with secrets masked.
pub async fn get_config(State(state): State<AppState>, Path(segment): Path<String>, headers: HeaderMap) -> Response {
    let result = (|| {
        let database = sync_database(&state, &segment)?;
        authorize(&state, &headers, bearer(&headers), database, false)?;
        let config = state
            .control
            .sync_config(&database.0)
            .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "this database has no sync configuration"))?;
        Ok::<_, ApiError>(Json(masked(config)))
    })();
    match result {
        Ok(r) => r.into_response(),
        Err(e) => e.into_response(),
    }
}

/// Parses one numeric query parameter within `range`, naming it in the error.
fn numeric_param(
    q: &std::collections::HashMap<String, String>,
    name: &str,
    default: u32,
    range: std::ops::RangeInclusive<u32>,
) -> Result<u32, ApiError> {
    let Some(raw) = q.get(name) else { return Ok(default) };
    let v: u32 = raw
        .parse()
        .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, format!("`{name}` must be a whole number, not {raw:?}")))?;
    if !range.contains(&v) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("`{name}` must be between {} and {}, not {v}", range.start(), range.end()),
        ));
    }
    Ok(v)
}

fn runner(state: &AppState) -> Result<&std::sync::Arc<epoch_sync::Runner>, ApiError> {
    state
        .runner
        .as_ref()
        .ok_or_else(|| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the sync engine is not running"))
}

fn instance_json(i: &epoch_sync::Instance) -> Value {
    let mut v = serde_json::to_value(i).unwrap_or(Value::Null);
    if let Some(obj) = v.as_object_mut() {
        obj.insert("etaMs".into(), json!(i.eta_ms()));
        obj.remove("caller");
    }
    v
}

type QueryMap = axum::extract::Query<std::collections::HashMap<String, String>>;

/// `POST /v1/database/:n/sync/resync-projections`.
pub async fn resync_projections(
    State(state): State<AppState>,
    Path(segment): Path<String>,
    q: QueryMap,
    headers: HeaderMap,
) -> Response {
    resync(state, segment, q, headers).await
}

/// `POST /admin/resync-projections`: the same, on the server's default database.
pub async fn admin_resync_projections(State(state): State<AppState>, q: QueryMap, headers: HeaderMap) -> Response {
    match default_database(&state) {
        Ok(db) => resync(state, db, q, headers).await,
        Err(e) => e.into_response(),
    }
}

fn default_database(state: &AppState) -> Result<String, ApiError> {
    state.default_database.as_deref().map(str::to_string).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "this server has no default database (epoch start --default-database NAME)",
        )
    })
}

async fn resync(state: AppState, segment: String, axum::extract::Query(q): QueryMap, headers: HeaderMap) -> Response {
    match resync_inner(state, segment, q, headers).await {
        Ok(r) => r.into_response(),
        Err(e) => e.into_response(),
    }
}

async fn resync_inner(
    state: AppState,
    segment: String,
    q: std::collections::HashMap<String, String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let database = sync_database(&state, &segment)?;
    let caller = authorize(&state, &headers, bearer(&headers), database, false)?;
    let batch_size = numeric_param(&q, "batchSize", 20, 1..=1000)?;
    let delay_seconds = numeric_param(&q, "delaySeconds", 3, 0..=3600)?;
    let max_attempts = numeric_param(&q, "maxAttempts", 3, 1..=10)?;
    let aggregate_type = q.get("aggregateType").filter(|t| !t.is_empty()).cloned();
    let aggregate_id = q.get("aggregateId").filter(|t| !t.is_empty()).cloned();
    if aggregate_id.is_some() && aggregate_type.is_none() {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "`aggregateId` requires `aggregateType`"));
    }
    let config = state.control.sync_config(&database.0).ok_or_else(|| {
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
        epoch_sync_objectstore::start_resync(&runner, database.0, caller.identity.0, &object_store, &reducer, params)
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

/// `GET /v1/database/:n/sync/workflows[/:id]` and `POST …/:id/{pause,resume,terminate}`.
pub async fn workflow(
    State(state): State<AppState>,
    Path(parts): Path<Vec<(String, String)>>,
    method: axum::http::Method,
    headers: HeaderMap,
) -> Response {
    workflow_route(state, parts, method, headers)
}

/// `GET /admin/workflows`: recent instances of the default database (a route with no path
/// parameters, so it cannot share [`workflow`]'s extractor).
pub async fn admin_workflows(State(state): State<AppState>, headers: HeaderMap) -> Response {
    workflow_route(state, Vec::new(), axum::http::Method::GET, headers)
}

/// `GET /v1/sync/workflows/:instanceId` and `POST …/:action`: an instance found by its id
/// alone (ids are unique server-wide), authorized against the database it belongs to.
pub async fn any_workflow(
    State(state): State<AppState>,
    Path(parts): Path<Vec<(String, String)>>,
    method: axum::http::Method,
    headers: HeaderMap,
) -> Response {
    let id = parts.iter().find(|(n, _)| n == "instance_id").map(|(_, v)| v.clone()).unwrap_or_default();
    let database = state.runner.as_ref().and_then(|r| r.get(&id)).map(|i| i.database);
    let Some(database) = database else {
        // No database to check against: still refuse callers without credentials (the server's
        // admin key, when it has one, and a valid token), so ids cannot be probed anonymously.
        let Some(presented) = admin_key_header(&headers) else {
            return ApiError::unauthorized(KEY_HEADERS, "missing").into_response();
        };
        if state.admin_api_key.as_ref().is_some_and(|k| !constant_time_eq(k.as_bytes(), presented.as_bytes())) {
            return ApiError::unauthorized(KEY_HEADERS, "not a valid admin API key").into_response();
        }
        match bearer(&headers).map(|t| state.auth.verify(t)) {
            None => return ApiError::unauthorized("Authorization", "missing bearer token").into_response(),
            Some(Err(e)) => {
                return ApiError::unauthorized("Authorization", format!("invalid bearer token: {e}")).into_response()
            }
            Some(Ok(_)) => {}
        }
        return ApiError::new(StatusCode::NOT_FOUND, format!("no workflow instance {id}")).into_response();
    };
    let mut parts = parts;
    parts.push(("name_or_identity".to_string(), database));
    workflow_route(state, parts, method, headers)
}

fn workflow_route(
    state: AppState,
    parts: Vec<(String, String)>,
    method: axum::http::Method,
    headers: HeaderMap,
) -> Response {
    let get = |k: &str| parts.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let (segment, id, action) = (get("name_or_identity"), get("instance_id"), get("action"));
    let result = (|| {
        // The /admin paths carry no database: they act on the server's default one.
        let segment = match segment {
            Some(s) => s,
            None => default_database(&state)?,
        };
        let database = sync_database(&state, &segment)?;
        authorize(&state, &headers, bearer(&headers), database, false)?;
        let runner = runner(&state)?;
        let Some(id) = id else {
            return Ok(Json(
                json!({ "instances": runner.list(&database.0).iter().map(instance_json).collect::<Vec<_>>() }),
            ));
        };
        let not_found = || ApiError::new(StatusCode::NOT_FOUND, format!("no workflow instance {id}"));
        let i = runner.get(&id).filter(|i| Identity::from_hex(&i.database) == Some(database)).ok_or_else(not_found)?;
        let i = match (method.as_str(), action.as_deref()) {
            ("GET", None) => i,
            ("POST", Some(a @ ("pause" | "resume" | "terminate" | "restart"))) => {
                let r = match a {
                    "pause" => runner.pause(&id),
                    "resume" => runner.resume(&id),
                    // Restarting lists the source, which blocks (and may own a runtime).
                    "restart" => tokio::task::block_in_place(|| runner.restart(&id)),
                    _ => runner.terminate(&id),
                };
                r.map_err(|e| ApiError::new(StatusCode::CONFLICT, e.to_string()))?
            }
            _ => return Err(ApiError::new(StatusCode::NOT_FOUND, "unknown workflow action")),
        };
        Ok(Json(instance_json(&i)))
    })();
    match result {
        Ok(r) => r.into_response(),
        Err(e) => e.into_response(),
    }
}

/// `POST /v1/database/:n/sync/shadow-webhook`: one shadow update as an IoT topic rule forwards it
/// (the live path), through the database's shadow reducer.
pub async fn shadow_webhook(State(state): State<AppState>, Path(segment): Path<String>, req: Request) -> Response {
    shadow_webhook_on(state, Some(segment), req).await
}

/// `POST /admin/shadow-webhook`: the same, on the server's default database.
pub async fn admin_shadow_webhook(State(state): State<AppState>, req: Request) -> Response {
    shadow_webhook_on(state, None, req).await
}

async fn shadow_webhook_on(state: AppState, segment: Option<String>, req: Request) -> Response {
    let result: Result<Json<Value>, ApiError> = async {
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
    .await;
    match result {
        Ok(r) => r.into_response(),
        Err(e) => e.into_response(),
    }
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
    let reducer = document::shadow_reducer(state.control.sync_config(&database.0).as_ref());
    let db = state.control.get(&database.0).ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "no such database"))?;
    let args = doc.reducer_args();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let who = epoch_core::Caller::identity(caller.0);
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

/// The longest a force-sync request may wait for its workflow.
pub const MAX_WAIT_SECONDS: u32 = 300;
/// How long a force-sync request waits by default.
pub const DEFAULT_WAIT_SECONDS: u32 = 30;

/// `POST /v1/database/:n/sync/shadow-sync/:thingName`: lists every named shadow of the thing and
/// pushes each through the live ingest path, as a workflow instance; answers when it ends (200)
/// or after `waitSeconds` (202, with the results so far).
pub async fn shadow_sync(
    State(state): State<AppState>,
    Path((segment, thing)): Path<(String, String)>,
    q: QueryMap,
    headers: HeaderMap,
) -> Response {
    shadow_sync_on(state, Some(segment), thing, q.0, headers).await
}

/// `POST /admin/shadow-sync/:thingName`: the same, on the server's default database.
pub async fn admin_shadow_sync(
    State(state): State<AppState>,
    Path(thing): Path<String>,
    q: QueryMap,
    headers: HeaderMap,
) -> Response {
    shadow_sync_on(state, None, thing, q.0, headers).await
}

async fn shadow_sync_on(
    state: AppState,
    segment: Option<String>,
    thing: String,
    q: std::collections::HashMap<String, String>,
    headers: HeaderMap,
) -> Response {
    let result: Result<Response, ApiError> = async {
        let segment = match segment {
            Some(s) => s,
            None => default_database(&state)?,
        };
        let database = sync_database(&state, &segment)?;
        let caller = authorize(&state, &headers, bearer(&headers), database, false)?;
        if !epoch_sync_shadows::document::valid_thing_name(&thing) {
            return Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid thing name")
                .detail("thingName", "must be 1 to 128 characters of a-z, A-Z, 0-9, `:`, `_` and `-`"));
        }
        let batch_size = numeric_param(&q, "batchSize", 25, 1..=1000)?;
        let delay_seconds = numeric_param(&q, "delaySeconds", 0, 0..=3600)?;
        let max_attempts = numeric_param(&q, "maxAttempts", 3, 1..=10)?;
        let wait = numeric_param(&q, "waitSeconds", DEFAULT_WAIT_SECONDS, 0..=MAX_WAIT_SECONDS)?;
        let include_classic = match q.get("includeClassic").map(String::as_str) {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                return Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid query parameter")
                    .detail("includeClassic", format!("must be true or false, not {other:?}")))
            }
        };
        let config = state.control.sync_config(&database.0).unwrap_or(Value::Null);
        if config.get("deviceShadows").is_none() {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "this database's sync configuration has no deviceShadows section; PATCH …/sync/config to add one",
            ));
        }
        let params = epoch_sync_shadows::ForceSyncParams {
            thing_name: thing.clone(),
            include_classic,
            batch_size,
            delay_seconds,
            max_attempts,
        };
        let runner = runner(&state)?.clone();
        let starter = runner.clone();
        // Listing the thing's shadows is blocking I/O on the client's own runtime.
        let started = tokio::task::spawn_blocking(move || {
            epoch_sync_shadows::start_force_sync(&starter, database.0, caller.identity.0, &config, params)
        })
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        let instance = started.map_err(|e| match e {
            epoch_sync::RunnerError::Conflict(id) => {
                ApiError::new(StatusCode::CONFLICT, format!("a force-sync of thing `{thing}` is already running: {id}"))
            }
            e @ epoch_sync::RunnerError::NotFound(_) => {
                ApiError::new(StatusCode::NOT_FOUND, e.to_string()).detail("thingName", e.to_string())
            }
            e @ epoch_sync::RunnerError::BadRequest(_) => ApiError::new(StatusCode::BAD_REQUEST, e.to_string()),
            e @ epoch_sync::RunnerError::Source(_) => ApiError::new(StatusCode::BAD_GATEWAY, e.to_string()),
            e => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        })?;
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(wait as u64);
        let mut latest = instance;
        while !latest.status.is_finished() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(FORCE_SYNC_POLL).await;
            latest = runner.get(&latest.id).unwrap_or(latest);
        }
        let status = if latest.status.is_finished() { StatusCode::OK } else { StatusCode::ACCEPTED };
        Ok((status, Json(force_sync_answer(&thing, &latest))).into_response())
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// How often a waiting force-sync request looks at its instance.
const FORCE_SYNC_POLL: std::time::Duration = std::time::Duration::from_millis(20);

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

/// `POST /v1/database/:n/sync/backfill[?force=catch_up|full_sync]`: repairs the database's AT
/// Protocol tables after downtime, choosing the kind of backfill from its cursor.
pub async fn backfill(
    State(state): State<AppState>,
    Path(segment): Path<String>,
    q: QueryMap,
    headers: HeaderMap,
) -> Response {
    backfill_start(state, Some(segment), q.0, headers).await.unwrap_or_else(IntoResponse::into_response)
}

/// `POST /api/admin/backfill`: the same, on the server's default database.
pub async fn admin_backfill(State(state): State<AppState>, q: QueryMap, headers: HeaderMap) -> Response {
    backfill_start(state, None, q.0, headers).await.unwrap_or_else(IntoResponse::into_response)
}

/// `GET /v1/database/:n/sync/backfill/:id`: a backfill's progress.
pub async fn backfill_progress(
    State(state): State<AppState>,
    Path((segment, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    backfill_get(state, Some(segment), id, headers).unwrap_or_else(IntoResponse::into_response)
}

/// `GET /api/admin/backfill/:id`: the same, on the server's default database.
pub async fn admin_backfill_progress(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    backfill_get(state, None, id, headers).unwrap_or_else(IntoResponse::into_response)
}

/// The database's AT Protocol source, or 503 when it has none (asked after the credentials).
fn atproto_source(state: &AppState, database: Identity) -> Result<epoch_sync_atproto::AtprotoConfig, ApiError> {
    let section = state.control.sync_config(&database.0).and_then(|c| c.get("atproto").cloned());
    let section = section.ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "this database has no AT Protocol source; PATCH …/sync/config with an `atproto` section",
        )
    })?;
    epoch_sync_atproto::AtprotoConfig::parse(&section).map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e))
}

/// The backfill with seed id `id` on `database`, if there is one.
fn find_backfill(runner: &epoch_sync::Runner, database: Identity, id: &str) -> Option<epoch_sync::Instance> {
    // Newest first: a catch_up that became a full_sync shares its id with it.
    runner.list(&database.0).into_iter().find(|i| i.detail.get("backfillId").and_then(Value::as_str) == Some(id))
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
    let conflict = |id: Option<Value>| {
        (
            StatusCode::CONFLICT,
            Json(json!({"error": "Conflict", "message": "A backfill is already running", "code": 409, "id": id})),
        )
            .into_response()
    };
    // A catch_up in progress is the database's firehose instance in that mode.
    if let Some(i) = epoch_sync_atproto::firehose::running(&runner, &database.0) {
        if i.param_str("mode") == Some("catch_up") {
            return Ok(conflict(i.detail.get("backfillId").cloned()));
        }
    }
    let cursor = epoch_sync_atproto::firehose::stored_cursor(&runner, &database.0);
    // The cursor's age: since the consumer last advanced it (the newest event applied).
    let age_hours = cursor.as_ref().map(|(_, at)| epoch_sync::now_ms().saturating_sub(*at) as f64 / 3_600_000.0);
    let kind = match (force, age_hours) {
        (Some("full_sync"), _) | (_, None) => "full_sync",
        (Some(_), Some(_)) => "catch_up",
        (None, Some(age)) if age > config.backfill_cursor_max_age_hours => "catch_up",
        (None, Some(_)) => {
            return Ok(Json(json!({
                "message": "No backfill needed. Use ?force=catch_up or ?force=full_sync to override."
            }))
            .into_response())
        }
    };
    let note = (force == Some("catch_up") && kind == "full_sync")
        .then(|| "catch_up was asked for, but there is no firehose cursor: running a full_sync".to_string());
    let id = backfill_id();
    let started = {
        let (runner, id) = (runner.clone(), id.clone());
        tokio::task::spawn_blocking(move || -> Result<epoch_sync::Instance, epoch_sync::RunnerError> {
            if kind == "catch_up" {
                if let Some(i) = epoch_sync_atproto::firehose::start_catch_up(
                    &runner,
                    database.0,
                    caller.identity.0,
                    &config,
                    id.clone(),
                )? {
                    return Ok(i);
                }
            }
            epoch_sync_atproto::start_full_sync(&runner, database.0, caller.identity.0, &config, id, note)
        })
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
    };
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
        Err(epoch_sync::RunnerError::Conflict(running)) => {
            Ok(conflict(runner.get(&running).and_then(|i| i.detail.get("backfillId").cloned())))
        }
        Err(e @ epoch_sync::RunnerError::Source(_)) => Err(ApiError::new(StatusCode::BAD_GATEWAY, e.to_string())),
        Err(e) => Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
    }
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
fn backfill_json(i: &epoch_sync::Instance) -> Value {
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

    #[test]
    fn a_masked_secret_sent_back_keeps_its_value() {
        let old = json!({"deviceShadows": {"secretAccessKey": "real", "region": "a"}, "adminApiKey": "k".repeat(20)});
        let sent = json!({"deviceShadows": {"secretAccessKey": MASK, "region": "b"}, "adminApiKey": MASK});
        let kept = unmask(sent, &old);
        assert_eq!(kept["deviceShadows"]["secretAccessKey"], "real");
        assert_eq!(kept["deviceShadows"]["region"], "b");
        assert_eq!(kept["adminApiKey"], old["adminApiKey"]);
        // A mask with nothing behind it is no secret.
        let fresh = unmask(json!({"objectStore": {"secretAccessKey": MASK}}), &Value::Null);
        assert!(fresh["objectStore"].get("secretAccessKey").is_none());
        assert_eq!(masked(kept)["deviceShadows"]["secretAccessKey"], MASK);
    }
}
