//! Route handlers: probes, the three commands (SPEC 2.1 steps 7–11), and the status and
//! cancel of a tracked command. Each extracts what it needs, calls the core
//! ([`crate::commands`]) and maps the outcome to an answer.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::extract::{ApiJson, Caller, IdPath, idempotency_key};
use super::{ApiError, AppState, Principal, status_response};
use crate::commands::{Origin, Receipt, Submission, Submitted};
use crate::domain::{CommandRequest, DeviceId, ValidationError};
use crate::store::CommandRecord;

pub async fn health() -> Response {
    status_response(StatusCode::OK, "ok")
}

/// The committed OpenAPI document, served as is.
pub const OPENAPI_JSON: &str = include_str!("../../docs/openapi.json");

pub async fn openapi() -> Response {
    let mut res = Response::new(axum::body::Body::from(OPENAPI_JSON));
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/json"),
    );
    res
}

pub async fn ready(State(state): State<Arc<AppState>>) -> Response {
    if state.commands.is_ready() {
        status_response(StatusCode::OK, "ready")
    } else {
        status_response(StatusCode::SERVICE_UNAVAILABLE, "not_ready")
    }
}

/// Steps 7–12 for any of the three commands: the caller, the body of `R`, its device and
/// its validation, then the core's submission.
pub async fn command<R: CommandRequest>(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    headers: HeaderMap,
    ApiJson(body): ApiJson<R>,
) -> Result<Response, ApiError> {
    let device_id = caller.device(body.device_id())?;
    let ttl = body
        .ttl()
        .map_err(|e| ApiError::InvalidCommand(e.to_string()));
    // Only a command's own route gets here, so its path is the route's.
    // The fingerprint needs the body before it becomes a command; a malformed key is
    // answered only after validation, where SPEC 7.6 places the check.
    let key = if state.commands.tracks() {
        idempotency_key(&headers, R::TYPE.api_route().1, &body)
    } else {
        Ok(None)
    };
    let command = body
        .into_command()
        .and_then(|c| c.not_in_the_past(chrono::Utc::now()))
        .and_then(|c| state.commands.admits(&device_id, c))
        .map_err(|e| match e {
            ValidationError::AlarmTimeNotRfc3339 => ApiError::AlarmTimeNotRfc3339,
            other => ApiError::InvalidCommand(other.to_string()),
        })?;
    let submission = Submission {
        device_id,
        command,
        ttl: ttl?,
        key: key?,
        origin: caller.origin(),
        occurrence: None,
    };
    Ok(match state.commands.submit(submission).await? {
        Submitted::Sent(receipt) | Submitted::Scheduled(receipt) | Submitted::Queued(receipt) => {
            accepted_response(receipt)
        }
        Submitted::Replayed(receipt) => {
            let mut res = accepted_response(receipt);
            res.headers_mut()
                .insert("idempotent-replayed", HeaderValue::from_static("true"));
            res
        }
    })
}

impl Caller {
    /// Steps 8 and 9: a valid device id the caller may address.
    fn device(&self, raw: &str) -> Result<DeviceId, ApiError> {
        let device = DeviceId::parse(raw).map_err(|e| ApiError::InvalidCommand(e.to_string()))?;
        if !self.principal.0.covers(&device) {
            tracing::info!(principal = %self.principal.0.id, device_id = %device, "device outside the caller's scopes");
            return Err(ApiError::Forbidden);
        }
        Ok(device)
    }

    /// Who submits, for the record and the audit record.
    fn origin(self) -> Origin {
        Origin {
            principal: self.principal.0.id,
            client_ip: self
                .conn
                .map_or(std::net::IpAddr::from([0, 0, 0, 0]), |c| c.peer.ip()),
            request_id: self.request_id.0,
        }
    }
}

/// A 202 (or the remembered status) with its body and, for a tracked command, `Location`:
/// its status resource.
fn accepted_response(receipt: Receipt) -> Response {
    let location = receipt
        .tracked
        .then(|| HeaderValue::from_str(&format!("/commands/{}", receipt.command_id)).ok())
        .flatten();
    let status = StatusCode::from_u16(receipt.http_status).unwrap_or(StatusCode::ACCEPTED);
    let mut res = (status, receipt.body).into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(location) = location {
        res.headers_mut().insert(header::LOCATION, location);
    }
    res
}

/// `GET /commands/{commandId}` (SPEC 7.3).
pub async fn status(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    IdPath(command_id): IdPath,
) -> Result<Response, ApiError> {
    let record = state.commands.status(&principal.0, &command_id).await?;
    Ok(record_response(StatusCode::OK, &record))
}

/// `DELETE /commands/{commandId}` (SPEC 7.5).
pub async fn cancel(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    IdPath(command_id): IdPath,
) -> Result<Response, ApiError> {
    let record = state.commands.cancel(&principal.0, &command_id).await?;
    Ok(record_response(StatusCode::OK, &record))
}

fn record_response(status: StatusCode, record: &CommandRecord) -> Response {
    let mut res = (status, record.to_json()).into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}
