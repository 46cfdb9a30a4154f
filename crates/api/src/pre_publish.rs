//! `POST /v1/database/:name_or_identity/pre_publish` (2.x): what publishing the module in the
//! body would do to the running database, without doing it. The answer is 2.x's: the printed
//! plan, whether it disconnects every client, and the token that consents to it
//! (`AutoMigrate`); or why it needs a manual migration (`ManualMigrate`). The 2.x CLI asks this
//! before every update and sends the token back with `policy=BreakClients`.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use epoch_core::migrate_policy::{breaks_clients, migration_token, token_text};
use epoch_core::migrate_text::{plan_text, PlanStyle};
use epoch_schema::DefVersion;
use serde_json::json;

use crate::auth::CallerAuth;
use crate::database::{control_error_2x, host_type_param, lookup, query_error, text, Action, Params};
use crate::error::ApiError;
use crate::AppState;

pub async fn pre_publish(
    State(state): State<AppState>,
    Extension(caller): Extension<CallerAuth>,
    Path(segment): Path<String>,
    axum::extract::Query(q): Params,
    wasm: Bytes,
) -> Result<Response, ApiError> {
    host_type_param(&q)?;
    // 2.x's parameter is `style`, and it writes colours unless told otherwise.
    let style = match q.get("style").map(String::as_str) {
        None | Some("AnsiColor") => PlanStyle::AnsiColor,
        Some("NoColor") => PlanStyle::NoColor,
        Some(other) => {
            return Err(query_error(&format!("style: unknown variant `{other}`, expected `AnsiColor` or `NoColor`")))
        }
    };
    let db = lookup(&state, &segment)?;
    let control = state.control.clone();
    let (identity, who) = (db.identity, caller.identity);
    let proposed = tokio::task::spawn_blocking(move || control.propose_update(identity, who, &wasm))
        .await
        .map_err(|e| text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(|e| control_error_2x(e, who, identity, Action::Update))?;
    let major_version_upgrade = proposed.old.version == DefVersion::V9 && proposed.new.version == DefVersion::V10;
    let answer = match epoch_core::migrate::plan(&proposed.old, &proposed.new) {
        Ok(steps) => {
            let breaking = breaks_clients(&proposed.old, &proposed.new, &steps);
            let token = migration_token(&proposed.identity.to_hex(), &proposed.old_program, &proposed.new_program);
            json!({"AutoMigrate": {
                "migrate_plan": plan_text(&proposed.old, &proposed.new, &steps, breaking, style),
                "break_clients": breaking,
                "token": token_text(&token),
                "major_version_upgrade": major_version_upgrade,
            }})
        }
        Err(reasons) => {
            let reason: String = std::iter::once("Errors occurred:\n".to_string())
                .chain(reasons.iter().map(|r| format!("{r}\n\n")))
                .collect();
            json!({"ManualMigrate": {"reason": reason, "major_version_upgrade": major_version_upgrade}})
        }
    };
    Ok(Json(answer).into_response())
}
