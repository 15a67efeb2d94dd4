//! Route handlers: probes and the three commands (SPEC 2.1 steps 7–11).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::Response;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{ApiError, AppState, ConnInfo, Principal, RequestId, json_response, status_response};
use crate::dispatch::AuditContext;
use crate::domain::{Command, CommandRequest, CommandType, DeviceId, Envelope, ValidationError};
use crate::metrics;

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
    if state.dispatcher.is_ready() {
        status_response(StatusCode::OK, "ready")
    } else {
        status_response(StatusCode::SERVICE_UNAVAILABLE, "not_ready")
    }
}

/// Steps 7–12 for any of the three commands: the body of `R`, its device, its validation.
pub async fn command<R: CommandRequest>(
    State(state): State<Arc<AppState>>,
    req: Request,
) -> Result<Response, ApiError> {
    let (parts, body): (Ctx, R) = read(&state, req).await?;
    let device = parts.device(body.device_id())?;
    let command = body
        .into_command()
        .and_then(|c| c.not_in_the_past(chrono::Utc::now()));
    parts.dispatch(&state, device, command, R::TYPE).await
}

/// What a command handler needs from the request besides its body.
struct Ctx {
    principal: Principal,
    request_id: String,
    conn: Option<ConnInfo>,
    method: &'static str,
    path: &'static str,
}

/// The `202` body.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Accepted<'a> {
    result: &'static str,
    command_id: &'a str,
    device_id: &'a str,
}

impl Ctx {
    /// Steps 8 and 9: a valid device id the caller may address.
    fn device(&self, raw: &str) -> Result<DeviceId, ApiError> {
        let device = DeviceId::parse(raw).map_err(|e| ApiError::InvalidCommand(e.to_string()))?;
        if !self.principal.0.covers(&device) {
            tracing::info!(principal = %self.principal.0.id, device_id = %device, "device outside the caller's scopes");
            return Err(ApiError::Forbidden);
        }
        Ok(device)
    }

    /// Steps 10–12.
    async fn dispatch(
        &self,
        state: &AppState,
        device_id: DeviceId,
        command: Result<Command, ValidationError>,
        command_type: CommandType,
    ) -> Result<Response, ApiError> {
        let command = command.map_err(|e| match e {
            ValidationError::AlarmTimeNotRfc3339 => ApiError::AlarmTimeNotRfc3339,
            other => ApiError::InvalidCommand(other.to_string()),
        })?;
        let envelope = Envelope {
            command_id: super::new_id().to_string(),
            request_id: self.request_id.clone(),
            device_id,
            command,
        };
        let ctx = AuditContext {
            principal: &self.principal.0.id,
            client_ip: self
                .conn
                .map_or(std::net::IpAddr::from([0, 0, 0, 0]), |c| c.peer.ip()),
            method: self.method,
            path: self.path,
        };
        state
            .dispatcher
            .dispatch(&envelope, &ctx)
            .await
            .map_err(|_| ApiError::DispatchFailed)?;
        Ok(json_response(
            StatusCode::ACCEPTED,
            &Accepted {
                result: command_type.accepted_result(),
                command_id: &envelope.command_id,
                device_id: envelope.device_id.as_str(),
            },
        ))
    }
}

/// Step 7: a body of at most `MAX_BODY_BYTES`, read within `HTTP_READ_TIMEOUT_MS`,
/// holding exactly one JSON object with only the command's fields.
async fn read<T: DeserializeOwned>(state: &AppState, req: Request) -> Result<(Ctx, T), ApiError> {
    let (mut parts, body) = req.into_parts();
    let limit = state.max_body_bytes;
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::BodyTooLarge { limit });
    }
    let bytes = read_limited(body, limit, state.read_timeout).await?;
    // Taken out of the request rather than cloned: nothing reads them after this.
    let ctx = Ctx {
        principal: parts
            .extensions
            .remove::<Principal>()
            .ok_or(ApiError::Unauthorized)?,
        request_id: parts
            .extensions
            .remove::<RequestId>()
            .map(|r| r.0)
            .unwrap_or_default(),
        conn: parts.extensions.get::<ConnInfo>().copied(),
        // Only the command routes get here, so these are their own method and path.
        method: metrics::method_label(&parts.method),
        path: metrics::route_label(parts.uri.path()),
    };
    Ok((ctx, decode(&bytes)?))
}

async fn read_limited(
    body: Body,
    limit: usize,
    timeout: std::time::Duration,
) -> Result<axum::body::Bytes, ApiError> {
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
