//! `GET /v1/database/:name_or_identity/logs`: the module's log as NDJSON, the whole of it or a
//! tail, and followed as it grows. A line reads as the database's version writes it: 1.3's
//! fields, or 2.x's, which add the function that was running and mark the server's own lines
//! with the `__spacetimedb__` sentinels.

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use epoch_schema::{DefVersion, ModuleDef};
use serde_json::json;

use crate::auth::CallerAuth;
use crate::database::{bool_param, lookup, text, usize_param, Params};
use crate::error::ApiError;
use crate::limits::FOLLOW_POLL;
use crate::AppState;

/// 2.x's mark on every field of a line the server wrote itself.
const SENTINEL: &str = "__spacetimedb__";

/// Which version's fields a log line has.
#[derive(Clone, Copy, PartialEq, Eq)]
enum LineStyle {
    V1_3,
    V2,
}

impl LineStyle {
    fn of(def: &ModuleDef) -> Self {
        if def.version == DefVersion::V10 {
            Self::V2
        } else {
            Self::V1_3
        }
    }
}

pub async fn logs(
    State(state): State<AppState>,
    Extension(caller): Extension<CallerAuth>,
    Path(segment): Path<String>,
    Query(q): Params,
) -> Result<Response, ApiError> {
    let (num_lines, follow) = match (usize_param(&q, "num_lines"), bool_param(&q, "follow")) {
        (Ok(n), Ok(f)) => (n, f),
        (Err(e), _) | (_, Err(e)) => return Err(e),
    };
    let db = lookup(&state, &segment)?;
    if db.owner != caller.identity {
        return Err(text(
            StatusCode::BAD_REQUEST,
            format!(
                "Identity does not own database, expected: {} got: {}",
                db.owner.to_hex(),
                caller.identity.to_hex()
            ),
        ));
    }
    let style = LineStyle::of(&db.def);
    let lines = |records: Vec<epoch_host::LogRecord>| -> String {
        records.iter().map(|r| format!("{}\n", log_json(r, style))).collect()
    };
    let headers = [(header::CONTENT_TYPE, "application/x-ndjson"), (header::CACHE_CONTROL, "no-cache")];
    let seen = db.logs.total();
    let first = lines(db.logs.tail(num_lines));
    if !follow {
        return Ok((headers, first).into_response());
    }
    let logs = db.logs.clone();
    let stream = futures::stream::unfold((Some(first), seen, logs), move |(first, seen, logs)| async move {
        if let Some(first) = first {
            return Some((Ok::<_, std::io::Error>(first), (None, seen, logs)));
        }
        loop {
            tokio::time::sleep(FOLLOW_POLL).await;
            let (new, total) = logs.since(seen);
            if !new.is_empty() {
                let chunk: String = new.iter().map(|r| format!("{}\n", log_json(r, style))).collect();
                return Some((Ok(chunk), (None, total, logs)));
            }
        }
    });
    Ok((headers, Body::from_stream(stream)).into_response())
}

/// A log line: absent fields are left out, as both versions write them.
fn log_json(r: &epoch_host::LogRecord, style: LineStyle) -> String {
    let mut m = serde_json::Map::new();
    m.insert("level".into(), json!(r.level.as_str()));
    m.insert("ts".into(), json!(r.ts_micros));
    if style == LineStyle::V2 && r.system {
        m.insert("target".into(), json!(SENTINEL));
        m.insert("filename".into(), json!(SENTINEL));
        m.insert("function".into(), json!(r.function.as_deref().unwrap_or(SENTINEL)));
    } else {
        if let Some(t) = &r.target {
            m.insert("target".into(), json!(t));
        }
        if let Some(f) = &r.filename {
            m.insert("filename".into(), json!(f));
        }
        if let Some(l) = r.line_number {
            m.insert("line_number".into(), json!(l));
        }
        if let (LineStyle::V2, Some(f)) = (style, &r.function) {
            m.insert("function".into(), json!(f));
        }
    }
    m.insert("message".into(), json!(r.message));
    if let Some(trace) = &r.trace {
        m.insert("trace".into(), trace.iter().map(|f| json!({ "func_name": f })).collect());
    }
    serde_json::Value::Object(m).to_string()
}
