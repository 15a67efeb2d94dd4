//! Extractors: what a handler needs from a request, said in its signature.
//!
//! - [`Principal`]: the caller the front checks authenticated (SPEC 2.1 step 5). The check
//!   itself stays in the front middleware, because unknown paths must get 401 before 404.
//! - [`IdPath`]: a resource id from the path; one that does not decode is a 404.
//! - [`Caller`]: the principal with the request id and the connection, for the audit record.
//! - [`ApiJson`]: step 7 — the body, bounded in size and time, as exactly one JSON object of
//!   the command's fields; every rejection is an [`ApiError`]. (Not `axum::Json`: that one
//!   insists on a `Content-Type` the older service never required, and words its errors
//!   differently from SPEC 2.1.)
//! - [`idempotency_key`]: the `Idempotency-Key` header (SPEC 7.6), read once the body
//!   parsed, since its fingerprint is of the parsed body.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{FromRef, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::de::DeserializeOwned;

use super::{ApiError, AppState, ConnInfo, Principal, RequestId};
use crate::commands::IdempotencyKey;

impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        // Taken rather than cloned: nothing after the handler reads it.
        parts
            .extensions
            .remove::<Principal>()
            .ok_or(ApiError::Unauthorized)
    }
}

/// A resource id from the path (`/commands/{id}`, `/devices/{id}`, `/schedules/{id}`).
/// One that does not decode (`%FF` is not UTF-8) names nothing, so it is the same
/// `404 {"error":"not found"}` as any unknown id, not axum's plain-text 400.
pub struct IdPath(pub String);

impl<S: Send + Sync> FromRequestParts<S> for IdPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<String>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(id)| Self(id))
            .map_err(|_| ApiError::NotFound)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for RequestId {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .remove::<RequestId>()
            .unwrap_or(RequestId(String::new())))
    }
}

/// Who sent a command, and over which connection.
pub struct Caller {
    pub principal: Principal,
    pub request_id: RequestId,
    pub conn: Option<ConnInfo>,
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Ok(request_id) = RequestId::from_request_parts(parts, state).await;
        Ok(Self {
            principal: Principal::from_request_parts(parts, state).await?,
            request_id,
            conn: parts.extensions.get::<ConnInfo>().copied(),
        })
    }
}

/// A JSON body of at most `MAX_BODY_BYTES`, read within `HTTP_READ_TIMEOUT_MS`, holding
/// exactly one JSON object with only the fields of `T`.
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    Arc<AppState>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let state = Arc::<AppState>::from_ref(state);
        let limit = state.max_body_bytes;
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(ApiError::BodyTooLarge { limit });
        }
        let bytes = read_limited(req.into_body(), limit, state.read_timeout).await?;
        decode(&bytes).map(Self)
    }
}

async fn read_limited(
    body: Body,
    limit: usize,
    timeout: std::time::Duration,
) -> Result<Bytes, ApiError> {
    match tokio::time::timeout(timeout, Limited::new(body, limit).collect()).await {
        Err(_) => Err(ApiError::RequestTimeout),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => {
            Err(ApiError::BodyTooLarge { limit })
        }
        Ok(Err(e)) => Err(ApiError::InvalidBody(format!("cannot read body: {e}"))),
    }
}

/// Decodes exactly one JSON object; serde's messages say what is wrong and where.
fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    match first {
        None => {
            return Err(ApiError::InvalidBody(
                "body is empty; expected a JSON object".into(),
            ));
        }
        Some(b'{') => {}
        Some(_) => return Err(ApiError::InvalidBody("expected a JSON object".into())),
    }
    serde_json::from_slice(bytes).map_err(|e| ApiError::InvalidBody(e.to_string()))
}

/// The request's `Idempotency-Key` (one at most) with the fingerprint of the request to
/// `path` with `body`; a second header or an invalid value is refused.
pub fn idempotency_key(
    headers: &HeaderMap,
    path: &str,
    body: &impl serde::Serialize,
) -> Result<Option<IdempotencyKey>, ApiError> {
    let mut values = headers.get_all("idempotency-key").iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ApiError::InvalidIdempotencyKey);
    }
    IdempotencyKey::new(value.as_bytes(), path, body)
        .map(Some)
        .ok_or(ApiError::InvalidIdempotencyKey)
}
