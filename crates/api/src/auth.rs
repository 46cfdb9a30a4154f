//! Who is asking: the bearer token (header or `?token=`), verified; anonymous callers of the
//! database routes get a fresh identity and token, as 1.3 mints them.

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use epoch_auth::Identity;

use crate::error::ApiError;
use crate::AppState;

/// The caller of a request, after the token check.
#[derive(Debug, Clone)]
pub struct CallerAuth {
    pub identity: Identity,
    pub token: String,
    /// Whether the caller brought the token (rather than being given a fresh anonymous one).
    pub presented: bool,
}

/// A token that is not `Bearer <token>` (1.3's words, 400).
fn malformed() -> ApiError {
    ApiError::text(StatusCode::BAD_REQUEST, "Authorization is invalid: malformed token")
}

/// A token that failed verification (401, saying why).
pub(crate) fn invalid_token(why: impl std::fmt::Display) -> ApiError {
    ApiError::text(StatusCode::UNAUTHORIZED, why.to_string())
}

/// The token a request carries: `Authorization: Bearer …` first, then `?token=`.
fn presented_token(req: &Request) -> Result<Option<String>, ApiError> {
    if let Some(h) = req.headers().get(header::AUTHORIZATION) {
        let h = h.to_str().map_err(|_| malformed())?;
        let token = h.strip_prefix("Bearer ").map(str::trim).filter(|t| !t.is_empty());
        return token.map(|t| Some(t.to_string())).ok_or_else(malformed);
    }
    let query = req.uri().query().unwrap_or("");
    Ok(query.split('&').find_map(|kv| kv.strip_prefix("token=")).map(|t| t.to_string()))
}

/// Verifies a presented token, if any (awaiting the keys of an OpenID issuer when they must be
/// fetched, without holding a worker). The token is taken from the request at once: the
/// request itself is not held across the wait.
pub fn verify<'a>(
    state: &'a AppState,
    req: &Request,
) -> impl std::future::Future<Output = Result<Option<CallerAuth>, ApiError>> + Send + 'a {
    let presented = presented_token(req);
    async move {
        let Some(token) = presented? else { return Ok(None) };
        let verified = state.auth.verify_async(&token).await.map_err(invalid_token)?;
        Ok(Some(CallerAuth { identity: verified.identity, token, presented: true }))
    }
}

/// Middleware for the database routes: resolves the caller (minting an anonymous identity when
/// there is no token) and adds `spacetime-identity` and `spacetime-identity-token` to the answer.
pub async fn database_auth(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let caller = match verify(&state, &req).await {
        Ok(Some(c)) => c,
        Ok(None) => match state.auth.create_identity() {
            Ok((identity, token)) => CallerAuth { identity, token, presented: false },
            Err(e) => return ApiError::text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
        },
        Err(rejection) => return rejection.into_response(),
    };
    req.extensions_mut().insert(caller.clone());
    let mut resp = next.run(req).await;
    let headers = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&caller.identity.to_hex()) {
        headers.insert("spacetime-identity", v);
    }
    if let Ok(v) = HeaderValue::from_str(&caller.token) {
        headers.insert("spacetime-identity-token", v);
    }
    resp
}
