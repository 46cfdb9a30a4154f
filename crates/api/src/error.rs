//! The one error type of the HTTP API. Two families of clients read our errors: SpacetimeDB
//! 1.3's CLI and SDKs, which expect 1.3's bodies byte for byte (mostly plain text), and the sync
//! API's clients, which expect the seed's JSON shape. Each constructor picks the body its route
//! family needs, so a handler says what went wrong and never how it is written.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

/// The seed's text for a call without valid credentials (401).
pub const AUTH_REQUIRED: &str = "Authentication required. Please provide a valid API token";
/// The seed's text for a caller who may not act on the database (403).
pub const FORBIDDEN: &str = "You don't have permission to access this resource";

/// 1.3 labels its plain-text answers explicitly; kept so bodies and headers stay as 1.3's.
const TEXT: (header::HeaderName, &str) = (header::CONTENT_TYPE, "text/plain; charset=utf-8");

/// An error answer. The variant is the body's shape; the `Display` text (for logs) is the
/// status and message.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Only a status, no body: 1.3's answer to an unknown database name.
    #[error("{0}")]
    Status(StatusCode),
    /// Plain text, as 1.3 writes it.
    #[error("{status}: {message}")]
    Text { status: StatusCode, message: String },
    /// A JSON value as it is: 1.3's typed errors (the names route) and the seed's backfill
    /// conflict, whose shapes are not the envelope below.
    #[error("{status}: {value}")]
    Json { status: StatusCode, value: Value },
    /// The sync API's envelope: `{"error", "message", "code", "requestId"}`, and `details`
    /// (which field or credential was wrong) when there are any.
    #[error("{status}: {message}")]
    Envelope { status: StatusCode, message: String, details: Vec<Value> },
}

impl ApiError {
    /// An error in the sync API's JSON envelope (the sync, archive and restore routes).
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self::Envelope { status, message: message.into(), details: Vec::new() }
    }

    /// An error as 1.3's plain text (the `/v1/identity`, `/v1/database` and WebSocket routes).
    pub fn text(status: StatusCode, message: impl Into<String>) -> Self {
        Self::Text { status, message: message.into() }
    }

    /// An error with a JSON body of its own shape.
    pub fn json(status: StatusCode, value: Value) -> Self {
        Self::Json { status, value }
    }

    /// A 401 in the seed's words, naming what was missing or wrong.
    pub fn unauthorized(field: &str, problem: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, AUTH_REQUIRED).detail(field, problem)
    }

    /// A 403 in the seed's words, saying why.
    pub fn forbidden(field: &str, problem: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, FORBIDDEN).detail(field, problem)
    }

    /// Adds `{"field", "message"}` to the envelope's details; the other shapes have no place
    /// for them, so they are left as they are.
    pub fn detail(mut self, field: &str, message: impl Into<String>) -> Self {
        if let Self::Envelope { details, .. } = &mut self {
            details.push(json!({"field": field, "message": message.into()}));
        }
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            Self::Status(status) => status.into_response(),
            Self::Text { status, message } => (status, [TEXT], message).into_response(),
            Self::Json { status, value } => (status, Json(value)).into_response(),
            Self::Envelope { status, message, details } => envelope(status, message, details),
        }
    }
}

/// The envelope's body, with a fresh request id that a 5xx is logged under, so an operator can
/// find the cause a client reports.
fn envelope(status: StatusCode, message: String, details: Vec<Value>) -> Response {
    let request_id = format!("req_{}", uuid::Uuid::new_v4().simple());
    if status.is_server_error() {
        tracing::error!(request_id, "sync API error: {message}");
    }
    let mut body = json!({
        "error": status.canonical_reason().unwrap_or("Error"),
        "message": message,
        "code": status.as_u16(),
        "requestId": request_id,
    });
    if !details.is_empty() {
        body["details"] = Value::Array(details);
    }
    (status, Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body(e: ApiError) -> (StatusCode, Option<String>, String) {
        let r = e.into_response();
        let ct = r.headers().get(header::CONTENT_TYPE).map(|v| v.to_str().unwrap_or_default().to_string());
        let status = r.status();
        let bytes = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap_or_default();
        (status, ct, String::from_utf8_lossy(&bytes).into_owned())
    }

    #[tokio::test]
    async fn each_shape_writes_its_own_body() {
        let (s, ct, b) = body(ApiError::text(StatusCode::NOT_FOUND, "No such database.")).await;
        assert_eq!(
            (s, ct.as_deref(), b.as_str()),
            (StatusCode::NOT_FOUND, Some("text/plain; charset=utf-8"), "No such database.")
        );
        let (s, ct, b) = body(ApiError::Status(StatusCode::NOT_FOUND)).await;
        assert_eq!((s, ct, b.as_str()), (StatusCode::NOT_FOUND, None, ""));
        let (_, ct, b) = body(ApiError::json(StatusCode::NOT_FOUND, json!("DatabaseNotFound"))).await;
        assert_eq!((ct.as_deref(), b.as_str()), (Some("application/json"), "\"DatabaseNotFound\""));
        let (s, ct, b) = body(ApiError::unauthorized("Authorization", "missing bearer token")).await;
        assert_eq!((s, ct.as_deref()), (StatusCode::UNAUTHORIZED, Some("application/json")));
        let v: Value = serde_json::from_str(&b).unwrap_or_default();
        assert_eq!(v["error"], "Unauthorized");
        assert_eq!(v["message"], AUTH_REQUIRED);
        assert_eq!(v["code"], 401);
        assert!(v["requestId"].as_str().is_some_and(|r| r.starts_with("req_")));
        assert_eq!(v["details"], json!([{"field": "Authorization", "message": "missing bearer token"}]));
        let (_, _, b) = body(ApiError::new(StatusCode::NOT_FOUND, "gone")).await;
        let v: Value = serde_json::from_str(&b).unwrap_or_default();
        assert!(v.get("details").is_none(), "no details, no field");
    }
}
