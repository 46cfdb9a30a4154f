//! `/v1/database/...`: publish, describe, delete, names, identity, call, schema, logs, sql.
//! Statuses and bodies follow SpacetimeDB 1.3 (see `docs/notes/http-api-1.3.md`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use epoch_auth::Identity;
use epoch_control::{ControlError, HostedDatabase, PublishOp, SetNamesError};
use epoch_core::migrate_policy::{self, MigrationPolicy};
use epoch_core::procedure::ProcedureError;
use epoch_core::{CallError, Caller, Database, ReducerArgs, ReducerOutcome};
use epoch_schema::Lifecycle;
use serde_json::json;

use crate::auth::CallerAuth;
use crate::error::ApiError;
use crate::limits::MAX_ERROR_TEXT;
use crate::AppState;

const TEXT: (header::HeaderName, &str) = (header::CONTENT_TYPE, "text/plain; charset=utf-8");

/// An error in 1.3's plain text: every error of these routes is one.
pub(crate) fn text(status: StatusCode, body: impl Into<String>) -> ApiError {
    ApiError::text(status, body)
}

fn status_530() -> StatusCode {
    StatusCode::from_u16(530).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// A path segment naming a database: 64 hex digits are an identity, anything else a name.
enum NameOrIdentity {
    Identity(Identity),
    Name(String),
}

fn parse_name_or_identity(s: &str) -> Result<NameOrIdentity, ApiError> {
    let hex = s.strip_prefix("0x").unwrap_or(s);
    if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Identity::from_hex(hex)
            .map(NameOrIdentity::Identity)
            .ok_or_else(|| text(StatusCode::BAD_REQUEST, "Invalid URL: invalid identity"));
    }
    validate_name(s).map_err(|e| text(StatusCode::BAD_REQUEST, format!("Invalid URL: {e}")))?;
    Ok(NameOrIdentity::Name(s.to_string()))
}

/// 1.3's database-name rule: lowercase letters and digits in groups joined by single hyphens.
/// The one check of every route that gives a database a name (publish, names, restore).
pub(crate) fn validate_name(s: &str) -> Result<(), &'static str> {
    if s.is_empty() {
        return Err("database names cannot be empty");
    }
    if !s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
        return Err("invalid characters in database name");
    }
    if s.starts_with('-') || s.ends_with('-') || s.contains("--") {
        return Err("invalid hyphen in database name");
    }
    Ok(())
}

/// Resolves a path segment to a database identity: unknown names are an empty 404.
pub(crate) fn resolve(state: &AppState, segment: &str) -> Result<Identity, ApiError> {
    match parse_name_or_identity(segment)? {
        NameOrIdentity::Identity(id) => Ok(id),
        NameOrIdentity::Name(n) => state.control.resolve_name(&n).ok_or(ApiError::Status(StatusCode::NOT_FOUND)),
    }
}

/// Resolves a path segment (a name or an identity) to a hosted database: a known identity
/// without one is `404 No such database.` (the WebSocket route resolves with it too).
pub(crate) fn lookup(state: &AppState, segment: &str) -> Result<Arc<HostedDatabase>, ApiError> {
    let id = resolve(state, segment)?;
    state.control.get(&id).ok_or_else(|| match state.control.unavailable(&id) {
        Some(u) => {
            text(StatusCode::SERVICE_UNAVAILABLE, format!("The database is unavailable: {}", one_line(&u.reason)))
        }
        None => text(StatusCode::NOT_FOUND, "No such database."),
    })
}

/// Runs `f` on a database's writer without blocking the async runtime.
async fn on_db<R: Send + 'static>(
    db: &HostedDatabase,
    f: impl FnOnce(&mut Database) -> R + Send + 'static,
) -> Result<R, ApiError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let gone = || text(StatusCode::SERVICE_UNAVAILABLE, "The database is shutting down");
    db.handle
        .submit(f, move |r| {
            let _ = tx.send(r);
        })
        .map_err(|_| gone())?;
    rx.await.map_err(|_| gone())
}

/// Query parameters, parsed with the error texts 1.3's extractor gives.
pub(crate) type Params = Query<std::collections::HashMap<String, String>>;

pub(crate) fn query_error(msg: &str) -> ApiError {
    text(StatusCode::BAD_REQUEST, format!("Failed to deserialize query string: {msg}"))
}

pub(crate) fn bool_param(q: &std::collections::HashMap<String, String>, name: &str) -> Result<bool, ApiError> {
    match q.get(name).map(String::as_str) {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(_) => Err(query_error("provided string was not `true` or `false`")),
    }
}

pub(crate) fn usize_param(
    q: &std::collections::HashMap<String, String>,
    name: &str,
) -> Result<Option<usize>, ApiError> {
    q.get(name).map(|v| v.parse::<usize>().map_err(|e| query_error(&e.to_string()))).transpose()
}

pub struct PublishQuery {
    clear: bool,
    num_replicas: Option<usize>,
    policy: MigrationPolicy,
}

impl PublishQuery {
    fn parse(Query(q): Params) -> Result<Self, ApiError> {
        host_type_param(&q)?;
        // 2.x's hosted service nests databases under a parent or an organisation; a server of
        // its own has neither, so asking for one is refused rather than ignored.
        if let Some(param) = ["parent", "organization", "org"].into_iter().find(|p| q.contains_key(*p)) {
            return Err(text(
                StatusCode::BAD_REQUEST,
                format!("`{param}` is not supported by this server: databases here have no parent or organization"),
            ));
        }
        Ok(Self {
            clear: bool_param(&q, "clear")?,
            num_replicas: usize_param(&q, "num_replicas")?,
            policy: policy_param(&q)?,
        })
    }
}

/// 2.x's `policy` (`Compatible`, the default, or `BreakClients`) and the `token` that consents
/// to a breaking update (from `pre_publish`).
fn policy_param(q: &std::collections::HashMap<String, String>) -> Result<MigrationPolicy, ApiError> {
    let token = match q.get("token") {
        None => None,
        Some(t) => Some(
            migrate_policy::parse_token(t)
                .ok_or_else(|| query_error(&format!("token: `{t}` is not a 0x-prefixed hexadecimal number")))?,
        ),
    };
    match q.get("policy").map(String::as_str) {
        None | Some("Compatible") => Ok(MigrationPolicy::Compatible),
        Some("BreakClients") => token.map(MigrationPolicy::BreakClients).ok_or_else(|| {
            text(
                StatusCode::BAD_REQUEST,
                "Migration policy is set to `BreakClients`, but no migration token was provided.",
            )
        }),
        Some(other) => {
            Err(query_error(&format!("policy: unknown variant `{other}`, expected `Compatible` or `BreakClients`")))
        }
    }
}

/// 2.x's `host_type`: `Wasm` (the default) is what Epoch runs; a JavaScript module (`Js`) is
/// refused before its bytes are looked at, with a reason, until Epoch runs JavaScript.
pub(crate) fn host_type_param(q: &std::collections::HashMap<String, String>) -> Result<(), ApiError> {
    match q.get("host_type").map(String::as_str) {
        None | Some("Wasm") => Ok(()),
        Some("Js") => Err(text(
            StatusCode::BAD_REQUEST,
            "JavaScript modules (host_type=Js) are not supported by this server yet; publish a WebAssembly module",
        )),
        Some(other) => Err(text(
            StatusCode::BAD_REQUEST,
            format!("Failed to deserialize query string: unknown variant `{other}`, expected `Wasm` or `Js`"),
        )),
    }
}

pub(crate) fn publish_result(op: PublishOp, domain: Option<&str>, identity: Identity) -> Response {
    let op = match op {
        PublishOp::Created => "created",
        PublishOp::Updated => "updated",
    };
    Json(json!({"Success": {"domain": domain, "database_identity": identity.to_hex(), "op": op}})).into_response()
}

pub(crate) fn control_error(e: ControlError) -> ApiError {
    use epoch_core::{CreateError, UpdateError};
    let status = match &e {
        ControlError::Update(UpdateError::Rejected(_) | UpdateError::Failed(_)) => {
            // 1.3's multi-line text, which the official CLI prints as it is.
            return text(StatusCode::BAD_REQUEST, e.to_string());
        }
        ControlError::NoSuchDatabase => return text(StatusCode::NOT_FOUND, "No such database."),
        // 1.3 answers these with 500; the official CLI only prints the text, so a caller's
        // mistake gets a 4xx here (listed in tests/differential/known-differences.json).
        ControlError::NotOwner { .. } | ControlError::Locked(_) => StatusCode::FORBIDDEN,
        ControlError::NameTaken(_) | ControlError::PublishInProgress(_) => StatusCode::CONFLICT,
        ControlError::TooManyNames { .. } => StatusCode::BAD_REQUEST,
        ControlError::Restore(_) => StatusCode::UNPROCESSABLE_ENTITY,
        // A module that does not load, validate or initialise is the publisher's to fix.
        ControlError::Create(CreateError::Host(_) | CreateError::InitFailed(_) | CreateError::InvalidFilter(_))
        | ControlError::Update(UpdateError::Host(_)) => StatusCode::BAD_REQUEST,
        ControlError::ShutDown(_) | ControlError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        ControlError::Create(_) | ControlError::Io { .. } | ControlError::Corrupt { .. } | ControlError::System(_) => {
            tracing::error!("control plane: {e}");
            StatusCode::INTERNAL_SERVER_ERROR
        }
    };
    text(status, one_line(&e.to_string()))
}

/// What a 2.x owner-only route was asked to do, for its refusal of anyone else.
#[derive(Clone, Copy)]
pub(crate) enum Action {
    Update,
    Reset,
    Delete,
}

/// [`control_error`], except that a caller who does not own the database gets 2.x's words,
/// naming the `action` refused.
pub(crate) fn control_error_2x(e: ControlError, caller: Identity, database: Identity, action: Action) -> ApiError {
    match e {
        ControlError::NotOwner { .. } => {
            let action = match action {
                Action::Update => "update database",
                Action::Reset => "reset database",
                Action::Delete => "delete database",
            };
            text(
                StatusCode::FORBIDDEN,
                format!(
                    "{} is not authorized to perform action on database {}: {action}",
                    caller.to_hex(),
                    database.to_hex()
                ),
            )
        }
        other => control_error(other),
    }
}

/// An error as one readable line: the first line of a multi-line text (the rest of wasmtime's
/// messages is a byte dump), without a dangling `- expected=[`, cut at [`MAX_ERROR_TEXT`].
fn one_line(message: &str) -> String {
    let first = message.lines().next().unwrap_or_default().trim_end();
    let first = first.strip_suffix("expected=[").map(|s| s.trim_end().trim_end_matches(" -")).unwrap_or(first);
    let mut out: String = first.chars().take(MAX_ERROR_TEXT).collect();
    if out.len() < first.len() {
        out.push('…');
    }
    out
}

/// Publishes to a database by identity, or to whatever a name points at (a free name is claimed
/// for a new database in the same step that creates it).
async fn do_publish(
    state: AppState,
    target: NameOrIdentity,
    caller: Identity,
    wasm: Bytes,
    q: PublishQuery,
) -> Result<Response, ApiError> {
    if q.num_replicas.is_some_and(|n| n > u8::MAX as usize) {
        // 1.3 registers a new name before it looks at the request, so the name stays.
        if let NameOrIdentity::Name(name) = &target {
            let fresh = epoch_auth::identity_from_claims(&state.auth.issuer, &uuid::Uuid::new_v4().to_string());
            state.control.reserve_name(name, fresh, caller).map_err(control_error)?;
        }
        // 1.3's text, placeholder and all.
        return Err(text(StatusCode::BAD_REQUEST, "Replication factor {n} out of bounds"));
    }
    // Compiling and initialising a module is CPU work: keep it off the async workers.
    let control = state.control.clone();
    let domain = match &target {
        NameOrIdentity::Name(n) => Some(n.clone()),
        NameOrIdentity::Identity(_) => None,
    };
    let issuer = state.auth.issuer.clone();
    let res = tokio::task::spawn_blocking(move || match target {
        NameOrIdentity::Identity(id) => control.publish(id, caller, &wasm, q.clear, q.policy).map(|op| (id, op)),
        NameOrIdentity::Name(name) => {
            // The identity a new database of this name gets, should the name be free.
            let fresh = epoch_auth::identity_from_claims(&issuer, &uuid::Uuid::new_v4().to_string());
            control.publish_to_name(&name, fresh, caller, &wasm, q.clear, q.policy)
        }
    })
    .await;
    match res {
        Ok(Ok((identity, op))) => {
            tracing::info!(database = %identity, ?op, "published");
            Ok(publish_result(op, domain.as_deref(), identity))
        }
        Ok(Err(e)) => Err(control_error(e)),
        Err(e) => Err(text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
    }
}

/// `POST /v1/database`: a new database with a fresh identity.
pub async fn publish_new(
    State(state): State<AppState>,
    Extension(caller): Extension<CallerAuth>,
    q: Params,
    wasm: Bytes,
) -> Result<Response, ApiError> {
    let q = PublishQuery::parse(q)?;
    let identity = epoch_auth::identity_from_claims(&state.auth.issuer, &uuid::Uuid::new_v4().to_string());
    do_publish(state, NameOrIdentity::Identity(identity), caller.identity, wasm, q).await
}

/// `PUT /v1/database/:name_or_identity`: create or update.
pub async fn publish(
    State(state): State<AppState>,
    Extension(caller): Extension<CallerAuth>,
    Path(segment): Path<String>,
    q: Params,
    wasm: Bytes,
) -> Result<Response, ApiError> {
    let q = PublishQuery::parse(q)?;
    let target = parse_name_or_identity(&segment)?;
    do_publish(state, target, caller.identity, wasm, q).await
}

/// `GET /v1/database/:n`.
pub async fn describe(State(state): State<AppState>, Path(segment): Path<String>) -> Result<Response, ApiError> {
    let db = lookup(&state, &segment)?;
    let mut program = db.program_hash;
    program.reverse();
    Ok(Json(json!({
        "database_identity": {"__identity__": format!("0x{}", db.identity.to_hex())},
        "owner_identity": {"__identity__": format!("0x{}", db.owner.to_hex())},
        "host_type": {"Wasm": []},
        "initial_program": format!("0x{}", hex::encode(program)),
    }))
    .into_response())
}

/// `DELETE /v1/database/:n`.
pub async fn delete(
    State(state): State<AppState>,
    Extension(caller): Extension<CallerAuth>,
    Path(segment): Path<String>,
) -> Result<Response, ApiError> {
    let id = resolve(&state, &segment)?;
    let is_2x = state.control.get(&id).is_some_and(|d| d.def.version == epoch_schema::DefVersion::V10);
    state.control.delete(id, caller.identity).map_err(|e| match is_2x {
        true => control_error_2x(e, caller.identity, id, Action::Delete),
        false => control_error(e),
    })?;
    Ok(StatusCode::OK.into_response())
}

pub async fn get_names(State(state): State<AppState>, Path(segment): Path<String>) -> Result<Response, ApiError> {
    let id = resolve(&state, &segment)?;
    Ok(Json(json!({ "names": state.control.names_of(&id) })).into_response())
}

pub async fn add_name(
    State(state): State<AppState>,
    Extension(caller): Extension<CallerAuth>,
    Path(segment): Path<String>,
    body: String,
) -> Result<Response, ApiError> {
    let id = resolve(&state, &segment)?;
    let name = body.trim();
    validate_name(name).map_err(|e| text(StatusCode::BAD_REQUEST, e))?;
    state.control.add_name(name, id, caller.identity).map_err(control_error)?;
    Ok(Json(json!({"Success": {"domain": name, "database_identity": id.to_hex()}})).into_response())
}

pub async fn set_names(
    State(state): State<AppState>,
    Extension(caller): Extension<CallerAuth>,
    Path(segment): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let id = resolve(&state, &segment)?;
    // Unlike /call, 1.3 answers a missing content type here with 415 too.
    if !headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.to_str().is_ok_and(|v| v.eq_ignore_ascii_case("application/json")))
    {
        return Err(text(StatusCode::UNSUPPORTED_MEDIA_TYPE, "Expected request with `Content-Type: application/json`"));
    }
    let names: Vec<String> = serde_json::from_slice(&body)
        .map_err(|e| text(StatusCode::BAD_REQUEST, format!("Failed to parse the request body as JSON: {e}")))?;
    if let Some((n, e)) = names.iter().find_map(|n| validate_name(n).err().map(|e| (n, e))) {
        return Err(text(StatusCode::BAD_REQUEST, format!("Error parsing `{n}`: {e}")));
    }
    state.control.set_names(id, caller.identity, &names).map_err(|e| set_names_error(e, id))?;
    Ok(Json(json!("Success")).into_response())
}

/// 1.3's answers to a refused `PUT …/names`: typed JSON values, but plain text for storage.
fn set_names_error(e: SetNamesError, id: Identity) -> ApiError {
    match e {
        SetNamesError::DatabaseNotFound => ApiError::json(StatusCode::NOT_FOUND, json!("DatabaseNotFound")),
        SetNamesError::NotYourDatabase => {
            ApiError::json(StatusCode::UNAUTHORIZED, json!({"NotYourDatabase": {"database": id.to_hex()}}))
        }
        e @ (SetNamesError::InUse(_) | SetNamesError::TooMany(_)) => {
            ApiError::json(StatusCode::BAD_REQUEST, json!({"OtherError": e.to_string()}))
        }
        SetNamesError::PermissionDenied(d) => {
            ApiError::json(StatusCode::UNAUTHORIZED, json!({"PermissionDenied": {"domain": d}}))
        }
        e @ SetNamesError::Storage(_) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

pub async fn get_identity(State(state): State<AppState>, Path(segment): Path<String>) -> Result<Response, ApiError> {
    let id = resolve(&state, &segment)?;
    Ok((StatusCode::OK, [TEXT], id.to_hex()).into_response())
}

/// The answer to a plain GET of the subscribe route, as 1.3 gives it to a request without the
/// upgrade headers.
pub fn upgrade_required() -> Response {
    (
        StatusCode::UPGRADE_REQUIRED,
        [(header::CONNECTION, "upgrade"), (header::UPGRADE, "websocket"), TEXT],
        "This service requires use of the websocket protocol",
    )
        .into_response()
}

fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    match headers.get(header::CONTENT_TYPE) {
        None => Err(text(StatusCode::BAD_REQUEST, "Header of type `content-type` was missing")),
        Some(v) if v.to_str().is_ok_and(|v| v.eq_ignore_ascii_case("application/json")) => Ok(()),
        Some(_) => {
            Err(text(StatusCode::UNSUPPORTED_MEDIA_TYPE, "Expected request with `Content-Type: application/json`"))
        }
    }
}

fn lifecycle_name(l: Lifecycle) -> &'static str {
    match l {
        Lifecycle::Init => "Init",
        Lifecycle::OnConnect => "OnConnect",
        Lifecycle::OnDisconnect => "OnDisconnect",
    }
}

/// What a call produced, computed on the writer thread.
enum CallAnswer {
    Rejected(String),
    NoSuchReducer,
    Lifecycle(Lifecycle),
    BadArgs(String),
    /// The database cannot write now (a full disk): refused, nothing ran.
    Unavailable(String),
    Ran {
        outcome: ReducerOutcome,
        duration: Duration,
    },
}

/// `POST /v1/database/:n/call/:reducer`: `client_connected`, the reducer, `client_disconnected`.
pub async fn call(
    State(state): State<AppState>,
    Extension(caller): Extension<CallerAuth>,
    Path((segment, reducer)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let db = lookup(&state, &segment)?;
    require_json(&headers)?;
    let Ok(args) = String::from_utf8(body.to_vec()) else {
        return Err(text(StatusCode::BAD_REQUEST, "Request body didn't contain valid UTF-8"));
    };
    // Refused at once while the log cannot write (a full disk): on the writer the answer would
    // wait for the disk like every other answer.
    if let Some(why) = db.storage_failure() {
        return Err(cannot_write(&why));
    }
    let who = Caller { identity: caller.identity, connection_id: fresh_connection_id() };
    let name = reducer.clone();
    let is_owner = db.owner == caller.identity;
    let jwt = epoch_auth::jwt_payload(&caller.token);
    // A 2.x module's `/call` runs a procedure when no reducer the caller may call has the name.
    if db.def.version == epoch_schema::DefVersion::V10 && !callable_reducer(&db.def, &reducer, is_owner) {
        return call_procedure(&db, name, args, who, is_owner, jwt).await;
    }
    let answer = on_db(&db, move |d| call_on_writer(d, &name, args, who, is_owner, jwt)).await?;
    let db_hex = db.identity.to_hex();
    match answer {
        CallAnswer::Rejected(msg) => Err(text(StatusCode::FORBIDDEN, msg)),
        CallAnswer::NoSuchReducer => Err(text(StatusCode::NOT_FOUND, "no such reducer")),
        CallAnswer::Lifecycle(l) => Err(text(
            StatusCode::BAD_REQUEST,
            format!("can't directly call special {} lifecycle reducer", lifecycle_name(l)),
        )),
        CallAnswer::BadArgs(msg) => Err(text(StatusCode::BAD_REQUEST, msg)),
        CallAnswer::Unavailable(why) => Err(cannot_write(&why)),
        CallAnswer::Ran { outcome, duration } => {
            state.metrics.reducer_call(&db_hex, &reducer, duration, !outcome.is_committed());
            Ok(ran_response(outcome, duration))
        }
    }
}

/// Whether `name` is a reducer `caller` may call from outside (any but a private one, for
/// anyone but the owner; lifecycle reducers are refused later, with their own answer).
fn callable_reducer(def: &epoch_schema::ModuleDef, name: &str, is_owner: bool) -> bool {
    def.reducer_id(name).is_some_and(|id| {
        let r = &def.reducers[id];
        is_owner || r.lifecycle.is_some() || r.visibility != epoch_schema::FunctionVisibility::Private
    })
}

/// `/call` of a procedure (2.x): `client_connected`, the procedure on a thread that may wait
/// (never the writer), `client_disconnected`; its value as SATS-JSON with 200, as 2.x answers.
async fn call_procedure(
    db: &HostedDatabase,
    name: String,
    args: String,
    who: Caller,
    is_owner: bool,
    jwt: Option<String>,
) -> Result<Response, ApiError> {
    let fallback = name.clone();
    let connected = on_db(db, move |d| {
        d.log_call_fallback(&fallback);
        d.set_connection_jwt(who.connection_id, jwt);
        d.client_connected(who).map(|r| r.outcome)
    })
    .await?;
    let disconnect = move |d: &mut Database| {
        d.client_disconnected(who);
        d.set_connection_jwt(who.connection_id, None);
    };
    if let Some(outcome) = connected.filter(|o| !o.is_committed()) {
        on_db(db, disconnect).await?;
        return Err(text(StatusCode::FORBIDDEN, outcome.error_message().unwrap_or_default()));
    }
    let handle = db.handle.clone();
    let started = std::time::Instant::now();
    let ran = tokio::task::spawn_blocking(move || handle.call_procedure(name, ReducerArgs::Json(args), who, is_owner))
        .await
        .map_err(|e| text(StatusCode::INTERNAL_SERVER_ERROR, format!("the procedure's thread failed: {e}")))?;
    on_db(db, disconnect).await?;
    let (value, ty, typespace) = ran.map_err(|e| {
        let status = match e {
            ProcedureError::NoSuchProcedure => StatusCode::NOT_FOUND,
            ProcedureError::InvalidArguments { .. } => StatusCode::BAD_REQUEST,
            ProcedureError::Failed(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ProcedureError::ShutDown => StatusCode::SERVICE_UNAVAILABLE,
        };
        text(status, e.to_string())
    })?;
    let json = epoch_sats::json::to_string(&typespace, &ty, &value)
        .map_err(|e| text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let timing = [("spacetime-execution-duration-micros", started.elapsed().as_micros().to_string())];
    Ok((StatusCode::OK, [(axum::http::header::CONTENT_TYPE, "application/json")], timing, json).into_response())
}

/// A call refused because the database cannot write now (a full disk).
fn cannot_write(why: &str) -> ApiError {
    text(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("the database cannot write now, so the call was refused and nothing changed: {why}"),
    )
}

/// The writer-thread part of a call: `client_connected`, the reducer, `client_disconnected`,
/// and what came of it. Split out of [`call`]; the steps and their order are unchanged.
fn call_on_writer(
    d: &mut Database,
    name: &str,
    args: String,
    who: Caller,
    is_owner: bool,
    jwt: Option<String>,
) -> CallAnswer {
    if let Some(why) = d.storage_failure() {
        return CallAnswer::Unavailable(why);
    }
    let res = match connected(d, who, jwt, |d| d.call_from_outside(name, ReducerArgs::Json(args), who, is_owner)) {
        Ok(res) => res,
        Err(rejected) => return CallAnswer::Rejected(rejected),
    };
    match res {
        Ok(r) => CallAnswer::Ran { outcome: r.outcome, duration: r.duration },
        Err(CallError::NoSuchReducer(_)) => CallAnswer::NoSuchReducer,
        Err(CallError::LifecycleReducer(n)) => {
            let lc = d.def().reducers.iter().find(|r| r.name == n).and_then(|r| r.lifecycle);
            CallAnswer::Lifecycle(lc.unwrap_or(Lifecycle::Init))
        }
        Err(e @ CallError::InvalidArguments { .. }) => CallAnswer::BadArgs(e.to_string()),
        Err(CallError::StorageUnavailable(why)) => CallAnswer::Unavailable(why),
    }
}

/// The answer to a reducer that ran: 200, 530 with the error, or 402 when it ran out of time,
/// with 1.3's timing headers.
fn ran_response(outcome: ReducerOutcome, duration: Duration) -> Response {
    let timing = [
        ("spacetime-energy-used", "0".to_string()),
        ("spacetime-execution-duration-micros", duration.as_micros().to_string()),
    ];
    let (status, body) = match outcome {
        ReducerOutcome::Committed => (StatusCode::OK, String::new()),
        ReducerOutcome::Failed(msg) => (status_530(), msg),
        ReducerOutcome::Panicked(_) | ReducerOutcome::Trapped(_) => {
            (status_530(), "The Wasm instance encountered a fatal error.".to_string())
        }
        // 1.3 stops a runaway reducer when its energy runs out, with 402; the status is
        // kept, and the text says what really stopped it here.
        ReducerOutcome::OutOfTime(limit) => (
            StatusCode::PAYMENT_REQUIRED,
            format!(
                "Module energy budget exhausted: the reducer ran past the time limit of {} ms and was stopped.",
                limit.as_millis()
            ),
        ),
        other => (status_530(), other.error_message().unwrap_or_default()),
    };
    (status, [TEXT], timing, body).into_response()
}

pub async fn schema(
    State(state): State<AppState>,
    Path(segment): Path<String>,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let db = lookup(&state, &segment)?;
    match q.get("version").map(String::as_str) {
        None => Err(text(StatusCode::BAD_REQUEST, "Failed to deserialize query string: missing field `version`")),
        Some("9") => Ok(Json(epoch_schema::json::schema_v9(&db.def)).into_response()),
        // A 2.x database describes itself in V10 too, as 2.x does; a 1.3 one keeps 1.3's answer.
        Some("10") if db.def.version == epoch_schema::DefVersion::V10 => {
            Ok(Json(epoch_schema::json_v10::schema_v10(&db.def)).into_response())
        }
        Some(v) if db.def.version == epoch_schema::DefVersion::V10 => Err(text(
            StatusCode::BAD_REQUEST,
            format!("Failed to deserialize query string: unknown variant `{v}`, expected `9` or `10`"),
        )),
        Some(v) => Err(text(
            StatusCode::BAD_REQUEST,
            format!("Failed to deserialize query string: unknown variant `{v}`, expected `9`"),
        )),
    }
}

/// `POST /v1/database/:n/sql`: the body is the query text.
pub async fn sql(
    State(state): State<AppState>,
    Extension(caller): Extension<CallerAuth>,
    Path(segment): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let db = lookup(&state, &segment)?;
    let sql = String::from_utf8(body.to_vec()).map_err(|e| {
        text(StatusCode::BAD_REQUEST, format!("Request body didn't contain valid UTF-8: {}", e.utf8_error()))
    })?;
    let ctx = epoch_query::QueryContext {
        is_owner: db.owner == caller.identity,
        row_limit: state.limits.max_sql_rows,
        max_sql_len: state.limits.max_sql_bytes,
        sender: Some(caller.identity),
    };
    let started = Instant::now();
    let (who, owner) = (caller.identity, db.owner);
    // A 2.x database runs `client_connected` and `client_disconnected` around `/sql`, as 2.x does.
    let connection = (db.def.version == epoch_schema::DefVersion::V10).then(|| {
        (Caller { identity: who, connection_id: fresh_connection_id() }, epoch_auth::jwt_payload(&caller.token))
    });
    let result = on_db(&db, move |d| {
        let run = |d: &mut Database| d.sql(&sql, ctx, who, owner).map(|o| (o, d.store().typespace.clone()));
        match connection {
            Some((c, jwt)) => connected(d, c, jwt, run),
            None => Ok(run(d)),
        }
    })
    .await?
    .map_err(|rejected| text(StatusCode::FORBIDDEN, rejected))?;
    let v10 = db.def.version == epoch_schema::DefVersion::V10;
    let (outcome, ts) = result.map_err(|e| text(StatusCode::BAD_REQUEST, sql_error_text(&e, v10)))?;
    let micros = started.elapsed().as_micros() as u64;
    let result = match outcome {
        epoch_query::Outcome::Rows(r) => crate::sql_json::result_json(&ts, &r, micros),
        epoch_query::Outcome::Dml { stats, .. } => {
            let empty = epoch_query::QueryResult { schema: Default::default(), rows: Vec::new() };
            crate::sql_json::result_json_with(&ts, &empty, micros, stats)
        }
        // As 1.3 reports a SET: one row written to st_var.
        epoch_query::Outcome::SetVar { .. } => {
            let empty = epoch_query::QueryResult { schema: Default::default(), rows: Vec::new() };
            let stats = epoch_query::DmlStats { rows_inserted: 1, ..Default::default() };
            crate::sql_json::result_json_with(&ts, &empty, micros, stats)
        }
    };
    Ok((
        [
            (header::CONTENT_TYPE, "application/json".to_string()),
            (header::HeaderName::from_static("spacetime-execution-duration-micros"), micros.to_string()),
        ],
        format!("[{result}]"),
    )
        .into_response())
}

/// A failed query's text: 1.3's, or 2.x's for a 2.x database where they differ.
fn sql_error_text(e: &epoch_query::SqlError, v10: bool) -> String {
    match e {
        epoch_query::SqlError::UnknownTable(name) if v10 => {
            format!("no such table: `{name}`. If the table exists, it may be marked private.")
        }
        e => e.to_string(),
    }
}

/// A random connection id for a connection of one request.
pub(crate) fn fresh_connection_id() -> [u8; 16] {
    let mut id = [0u8; 16];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut id);
    id
}

/// Runs `f` on the writer inside a connection of one request (`/call`, 2.x's `/sql`): `client_connected`
/// first (its refusal is the error), `client_disconnected` after, the caller's token readable
/// through `get_jwt` meanwhile.
fn connected<R>(
    d: &mut Database,
    who: Caller,
    jwt: Option<String>,
    f: impl FnOnce(&mut Database) -> R,
) -> Result<R, String> {
    d.set_connection_jwt(who.connection_id, jwt);
    if let Some(r) = d.client_connected(who).filter(|r| !r.outcome.is_committed()) {
        d.set_connection_jwt(who.connection_id, None);
        return Err(r.outcome.error_message().unwrap_or_default());
    }
    let result = f(d);
    d.client_disconnected(who);
    d.set_connection_jwt(who.connection_id, None);
    Ok(result)
}

pub async fn timestamp(State(state): State<AppState>, Path(segment): Path<String>) -> Result<Response, ApiError> {
    lookup(&state, &segment)?;
    Ok(Json(json!({"__timestamp_micros_since_unix_epoch__": epoch_core::now_micros()})).into_response())
}

/// `GET /v1/database/:n/export/:table?format=jsonl|csv`: every row of a table, owner only.
/// Both forms are exact for every value and are what `import` takes back (see
/// `epoch_core::export`): JSON lines hold one row each; CSV has a header of column names, then
/// each value as its text, quoted as CSV needs.
pub async fn export(
    State(state): State<AppState>,
    Extension(caller): Extension<CallerAuth>,
    Path((segment, table)): Path<(String, String)>,
    Query(q): Params,
) -> Result<Response, ApiError> {
    let db = lookup(&state, &segment)?;
    if db.owner != caller.identity {
        return Err(text(StatusCode::FORBIDDEN, "only the database's owner may export its tables"));
    }
    let format = q.get("format").map(String::as_str).unwrap_or("jsonl").to_string();
    if !matches!(format.as_str(), "jsonl" | "csv") {
        return Err(text(StatusCode::BAD_REQUEST, format!("format must be jsonl or csv, not {format:?}")));
    }
    let name = table.clone();
    let csv = format == "csv";
    let body = match on_db(&db, move |d| if csv { d.export_csv(&name) } else { d.export_jsonl(&name) }).await? {
        Some(Ok(body)) => body,
        Some(Err(e)) => return Err(text(StatusCode::INTERNAL_SERVER_ERROR, format!("exporting {table:?}: {e}"))),
        None => return Err(text(StatusCode::NOT_FOUND, format!("no table named {table:?}"))),
    };
    let content_type = if format == "jsonl" { "application/x-ndjson" } else { "text/csv" };
    Ok(([(header::CONTENT_TYPE, content_type)], body).into_response())
}

/// `POST /v1/database/:n/import/:table[?format=jsonl|csv]` with JSON lines (one row each) or
/// CSV with a header, as `export` writes them (`Content-Type: text/csv` means CSV too):
/// inserted in one transaction, all or nothing, owner only.
pub async fn import(
    State(state): State<AppState>,
    Extension(caller): Extension<CallerAuth>,
    Path((segment, table)): Path<(String, String)>,
    Query(q): Params,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let csv_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.split(';').next().is_some_and(|m| m.trim().eq_ignore_ascii_case("text/csv")));
    let csv = match q.get("format").map(String::as_str) {
        None => csv_type,
        Some("csv") => true,
        Some("jsonl") => false,
        Some(other) => {
            return Err(text(StatusCode::BAD_REQUEST, format!("format must be jsonl or csv, not {other:?}")))
        }
    };
    let db = lookup(&state, &segment)?;
    if db.owner != caller.identity {
        return Err(text(StatusCode::FORBIDDEN, "only the database's owner may import into its tables"));
    }
    if let Some(why) = db.storage_failure() {
        return Err(text(StatusCode::SERVICE_UNAVAILABLE, format!("the database cannot write now: {why}")));
    }
    let Ok(body) = String::from_utf8(body.to_vec()) else {
        return Err(text(StatusCode::BAD_REQUEST, "the body must be UTF-8 (JSON lines or CSV)"));
    };
    let who = caller.identity;
    let imported = on_db(&db, move |d| {
        if csv {
            return d.import_csv(&table, &body, who);
        }
        let lines: Vec<&str> = body.lines().filter(|l| !l.trim().is_empty()).collect();
        d.import_rows(&table, &lines, who)
    })
    .await?;
    match imported {
        Ok(n) => Ok(Json(json!({ "imported": n })).into_response()),
        Err(e) if e.starts_with("no table") => Err(text(StatusCode::NOT_FOUND, e)),
        Err(e) if e.starts_with("the database cannot write") => Err(text(StatusCode::SERVICE_UNAVAILABLE, e)),
        Err(e) => Err(text(StatusCode::BAD_REQUEST, e)),
    }
}
