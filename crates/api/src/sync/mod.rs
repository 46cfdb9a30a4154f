//! The sync API: its shared pieces here, each source's routes in its own module.
//!
//! Here: who may call it (an admin API key *and* a bearer token whose identity owns the database
//! or holds the `sync` permission), the routes that configure it (`…/permissions` and
//! `…/sync/config`), the routes that watch and steer workflow instances, and [`SOURCES`], the
//! one list of the places data comes from. Each source's module holds its routes and its
//! [`Source`] entry: [`resync`] (object storage), [`shadows`] (IoT device shadows) and
//! [`atproto`] (AT Protocol).

pub mod atproto;
pub mod resync;
pub mod shadows;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};

use epoch_auth::Identity;
use epoch_control::ControlPlane;
use epoch_sync::{ConfigContext, KindSpec, Runner, RunnerError};
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::limits::MIN_ADMIN_KEY_LEN;
use crate::AppState;

/// A sync source: a kind of place a database's data comes from. Everything the server does
/// with one is reached from its entry here, so adding a source is writing its module and
/// naming its `SOURCE` in [`SOURCES`]; the server (`epoch start`) opens the runner from the
/// same list.
pub struct Source {
    /// What the source is called (its module's name).
    pub name: &'static str,
    /// Its section of a database's sync configuration (`objectStore`, …).
    pub config_section: &'static str,
    /// The fields of that section that are secrets: masked when the configuration is read, and
    /// kept when the mask is sent back.
    pub secret_fields: &'static [&'static str],
    /// Makes its workflow kinds with the server's options.
    pub kinds: fn(&SourceOptions) -> SourceKinds,
    /// Adds its routes under `/v1`.
    pub routes: fn(Router<AppState>) -> Router<AppState>,
    /// Adds its seed-compatible routes under `/admin` and `/api/admin` (on the server's default
    /// database).
    pub admin_routes: fn(Router<AppState>) -> Router<AppState>,
    /// Runs after a database's sync configuration was written (`old`, then `new`): what follows
    /// the source live picks the change up.
    pub configured: fn(state: &AppState, database: Identity, old: &Value, new: &Value),
}

/// Every source this server knows, in the order their kinds are registered and their
/// configuration sections checked.
pub const SOURCES: &[Source] = &[resync::SOURCE, shadows::SOURCE, atproto::SOURCE];

/// The server's settings that sources make their kinds with.
#[derive(Debug, Clone, Default)]
pub struct SourceOptions {
    /// Hosts AT Protocol DID resolution may reach on loopback or private addresses
    /// (`--atproto-allowed-host`).
    pub atproto_allowed_hosts: Vec<String>,
}

/// A source's workflow kinds, and what it needs from the runner they run in.
pub struct SourceKinds {
    pub specs: Vec<Arc<dyn KindSpec>>,
    /// Called with the opened runner: a kind that starts instances itself keeps it (a firehose
    /// catch_up hands over to a live consumer when it reaches the head).
    pub bind: Option<BindRunner>,
}

/// What a source does with the opened runner.
pub type BindRunner = Box<dyn FnOnce(&Arc<Runner>) + Send>;

/// For a source with nothing that follows its configuration live.
fn nothing_to_restart(_: &AppState, _: Identity, _: &Value, _: &Value) {}

/// Opens the workflow runner with every source's kinds, then hands it to the kinds that
/// start instances themselves.
pub fn open_runner(
    control: Arc<ControlPlane>,
    retention: Duration,
    options: &SourceOptions,
) -> Result<Arc<Runner>, RunnerError> {
    let (mut specs, mut binds) = (Vec::new(), Vec::new());
    for source in SOURCES {
        let kinds = (source.kinds)(options);
        specs.extend(kinds.specs);
        binds.extend(kinds.bind);
    }
    let runner = Runner::open(control, retention, specs)?;
    for bind in binds {
        bind(&runner);
    }
    Ok(runner)
}

/// The sync API's routes under `/v1`: the shared ones and every source's. They check their own
/// credentials (no anonymous identities here).
pub fn routes(v1: Router<AppState>) -> Router<AppState> {
    let v1 = v1
        .route("/database/{name_or_identity}/permissions", post(permissions).delete(permissions))
        .route("/database/{name_or_identity}/sync/config", get(get_config).put(put_config).patch(patch_config))
        .route("/database/{name_or_identity}/sync/workflows", get(workflow))
        .route("/database/{name_or_identity}/sync/workflows/{instance_id}", get(workflow))
        .route("/database/{name_or_identity}/sync/workflows/{instance_id}/{action}", post(workflow))
        .route("/sync/workflows/{instance_id}", get(any_workflow))
        .route("/sync/workflows/{instance_id}/{action}", post(any_workflow));
    SOURCES.iter().fold(v1, |v1, source| (source.routes)(v1))
}

/// The seed-compatible admin paths (nested under `/admin` and `/api/admin`): the shared ones
/// and every source's.
pub fn admin_routes() -> Router<AppState> {
    let admin = Router::new()
        .route("/workflows", get(admin_workflows))
        .route("/workflows/{instance_id}", get(workflow))
        .route("/workflows/{instance_id}/{action}", post(workflow));
    SOURCES.iter().fold(admin, |admin, source| (source.admin_routes)(admin))
}

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
        None => state.control.resolve_name(segment).ok_or_else(not_found)?,
    };
    if state.control.get(&id).is_none() {
        return Err(match state.control.unavailable(&id) {
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
        .sync_config(&database)
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
    let is_owner = state.control.get(&database).is_some_and(|d| d.owner == identity);
    let by_rule = || {
        let c = &verified.claims;
        state.control.rule_grants(
            &database,
            &c.iss,
            c.email.as_deref(),
            c.email_verified == Some(true),
            SYNC_PERMISSION,
        )
    };
    let allowed =
        is_owner || (!owner_only && (state.control.has_permission(&database, &identity, SYNC_PERMISSION) || by_rule()));
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

/// `POST` / `DELETE /v1/database/:n/permissions` with `{"identity": "<hex>", "permission": "sync"}`
/// (or a rule: `{"issuer", "emailDomain", "permission"}`): the owner grants or revokes a
/// permission.
pub async fn permissions(
    State(state): State<AppState>,
    Path(segment): Path<String>,
    req: Request,
) -> Result<Json<Value>, ApiError> {
    let grant = req.method() == axum::http::Method::POST;
    let database = sync_database(&state, &segment)?;
    let token = bearer(req.headers()).ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "missing bearer token"))?;
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
        return grant_rule(&state, database, caller, &v, grant);
    }
    let identity = v["identity"]
        .as_str()
        .and_then(Identity::from_hex)
        .ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, "`identity` must be 64 hex digits"))?;
    state.control.set_permission(database, caller, identity, permission, grant).map_err(permission_error)?;
    Ok(Json(json!({"success": true, "identity": identity.to_hex(), "permission": permission, "granted": grant})))
}

/// Grants or revokes the `sync` permission for every token of an issuer whose verified email is
/// in a domain.
fn grant_rule(
    state: &AppState,
    database: Identity,
    caller: Identity,
    v: &Value,
    grant: bool,
) -> Result<Json<Value>, ApiError> {
    let field = |name: &str| {
        v[name].as_str().filter(|s| !s.is_empty() && s.len() <= 256).map(str::to_string).ok_or_else(|| {
            ApiError::new(StatusCode::BAD_REQUEST, "a rule needs `issuer` and `emailDomain`")
                .detail(name, "must be a non-empty string of at most 256 characters")
        })
    };
    let rule = epoch_control::GrantRule {
        issuer: field("issuer")?,
        email_domain: field("emailDomain")?.trim_start_matches('@').to_string(),
        permission: SYNC_PERMISSION.to_string(),
    };
    let answer = json!({"success": true, "issuer": rule.issuer, "emailDomain": rule.email_domain,
                        "permission": SYNC_PERMISSION, "granted": grant});
    state.control.set_rule(database, caller, rule, grant).map_err(permission_error)?;
    Ok(Json(answer))
}

/// A permission change the control plane refused.
fn permission_error(e: epoch_control::ControlError) -> ApiError {
    match e {
        epoch_control::ControlError::NotOwner { .. } => {
            ApiError::new(StatusCode::FORBIDDEN, "only the database owner may change permissions")
        }
        other => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, other.to_string()),
    }
}

/// Secrets are never returned: they are replaced by this marker.
const MASK: &str = "********";

/// Every source's kinds as configuration checks need them (no runner, default options).
fn config_kinds() -> impl Iterator<Item = Arc<dyn KindSpec>> {
    SOURCES.iter().flat_map(|source| (source.kinds)(&SourceOptions::default()).specs)
}

/// Each configuration section that holds secrets, with their fields.
fn secret_fields() -> impl Iterator<Item = (&'static str, &'static [&'static str])> {
    SOURCES.iter().map(|source| (source.config_section, source.secret_fields))
}

/// The configuration as it may be shown: every secret replaced by [`MASK`].
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
    let def = state.control.get(&database).map(|d| d.def.clone());
    let has_reducer = |name: &str| def.as_ref().is_some_and(|d| d.reducer_id(name).is_some());
    let cx = ConfigContext { has_reducer: &has_reducer, data_dir: state.control.data_dir() };
    for kind in config_kinds() {
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
) -> Result<Json<Value>, ApiError> {
    set_config(state, segment, headers, body, false)
}

/// `PATCH /v1/database/:n/sync/config` (owner only): replaces the sections it names.
pub async fn patch_config(
    State(state): State<AppState>,
    Path(segment): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    set_config(state, segment, headers, body, true)
}

fn set_config(
    state: AppState,
    segment: String,
    headers: HeaderMap,
    body: axum::body::Bytes,
    patch: bool,
) -> Result<Json<Value>, ApiError> {
    let database = sync_database(&state, &segment)?;
    authorize(&state, &headers, bearer(&headers), database, true)?;
    let v: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("body is not JSON: {e}")))?;
    let old = state.control.sync_config(&database).unwrap_or(Value::Null);
    let v = if patch { patched(&old, &v)? } else { v };
    let v = validate_config(&state, database, unmask(v, &old))?;
    state
        .control
        .set_sync_config(database, v.clone())
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    for source in SOURCES {
        (source.configured)(&state, database, &old, &v);
    }
    Ok(Json(masked(v)))
}

/// A PATCH replaces the sections it names (null removes one) and keeps the others.
fn patched(old: &Value, changes: &Value) -> Result<Value, ApiError> {
    let changes = changes
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
    Ok(Value::Object(merged))
}

/// `GET /v1/database/:n/sync/config`, with secrets masked.
pub async fn get_config(
    State(state): State<AppState>,
    Path(segment): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let database = sync_database(&state, &segment)?;
    authorize(&state, &headers, bearer(&headers), database, false)?;
    let config = state
        .control
        .sync_config(&database)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "this database has no sync configuration"))?;
    Ok(Json(masked(config)))
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

fn default_database(state: &AppState) -> Result<String, ApiError> {
    state.default_database.as_deref().map(str::to_string).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "this server has no default database (epoch start --default-database NAME)",
        )
    })
}

/// `GET /v1/database/:n/sync/workflows[/:id]` and `POST …/:id/{pause,resume,terminate}`.
pub async fn workflow(
    State(state): State<AppState>,
    Path(parts): Path<Vec<(String, String)>>,
    method: axum::http::Method,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    workflow_route(state, parts, method, headers)
}

/// `GET /admin/workflows`: recent instances of the default database (a route with no path
/// parameters, so it cannot share [`workflow`]'s extractor).
pub async fn admin_workflows(State(state): State<AppState>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    workflow_route(state, Vec::new(), axum::http::Method::GET, headers)
}

/// `GET /v1/sync/workflows/:instanceId` and `POST …/:action`: an instance found by its id
/// alone (ids are unique server-wide), authorized against the database it belongs to.
pub async fn any_workflow(
    State(state): State<AppState>,
    Path(parts): Path<Vec<(String, String)>>,
    method: axum::http::Method,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let id = parts.iter().find(|(n, _)| n == "instance_id").map(|(_, v)| v.clone()).unwrap_or_default();
    let database = state.runner.as_ref().and_then(|r| r.get(&id)).map(|i| i.database);
    let Some(database) = database else {
        // No database to check against: still refuse callers without credentials (the server's
        // admin key, when it has one, and a valid token), so ids cannot be probed anonymously.
        let presented = admin_key_header(&headers).ok_or_else(|| ApiError::unauthorized(KEY_HEADERS, "missing"))?;
        if state.admin_api_key.as_ref().is_some_and(|k| !constant_time_eq(k.as_bytes(), presented.as_bytes())) {
            return Err(ApiError::unauthorized(KEY_HEADERS, "not a valid admin API key"));
        }
        let token = bearer(&headers).ok_or_else(|| ApiError::unauthorized("Authorization", "missing bearer token"))?;
        state
            .auth
            .verify(token)
            .map_err(|e| ApiError::unauthorized("Authorization", format!("invalid bearer token: {e}")))?;
        return Err(ApiError::new(StatusCode::NOT_FOUND, format!("no workflow instance {id}")));
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
) -> Result<Json<Value>, ApiError> {
    let get = |k: &str| parts.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let (segment, id, action) = (get("name_or_identity"), get("instance_id"), get("action"));
    // The /admin paths carry no database: they act on the server's default one.
    let segment = match segment {
        Some(s) => s,
        None => default_database(&state)?,
    };
    let database = sync_database(&state, &segment)?;
    authorize(&state, &headers, bearer(&headers), database, false)?;
    let runner = runner(&state)?;
    let Some(id) = id else {
        return Ok(Json(json!({ "instances": runner.list(&database).iter().map(instance_json).collect::<Vec<_>>() })));
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
}

#[cfg(test)]
mod tests {
    use super::*;

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

    /// A source's entry and its kinds (which the sync crates define) name the same section and
    /// secrets: a secret the kind knows but the entry does not would be shown unmasked.
    #[test]
    fn every_source_agrees_with_its_kinds() {
        for source in SOURCES {
            let kinds = (source.kinds)(&SourceOptions::default());
            assert!(!kinds.specs.is_empty(), "{} has no kinds", source.name);
            for kind in kinds.specs {
                assert_eq!(kind.config_section(), source.config_section, "{}: {}", source.name, kind.name());
                assert_eq!(kind.secret_fields(), source.secret_fields, "{}: {}", source.name, kind.name());
            }
        }
    }
}
