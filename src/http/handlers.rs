//! Route handlers: probes and the three commands (SPEC 2.1 steps 7–11).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::Response;
use serde::Serialize;

use super::extract::{ApiJson, Caller};
use super::{ApiError, AppState, json_response, status_response};
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

/// Steps 7–12 for any of the three commands: the caller, the body of `R`, its device and
/// its validation, then the dispatch.
pub async fn command<R: CommandRequest>(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiJson(body): ApiJson<R>,
) -> Result<Response, ApiError> {
    let device = caller.device(body.device_id())?;
    let command = body
        .into_command()
        .and_then(|c| c.not_in_the_past(chrono::Utc::now()));
    caller.dispatch(&state, device, command, R::TYPE).await
}

/// The `202` body.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Accepted<'a> {
    result: &'static str,
    command_id: &'a str,
    device_id: &'a str,
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

    /// Steps 10–12.
    async fn dispatch(
        self,
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
            request_id: self.request_id.0,
            device_id,
            command,
        };
        // Only a command's own route gets here, so its method and path are the route's.
        let (method, path) = command_type.api_route();
        let ctx = AuditContext {
            principal: &self.principal.0.id,
            client_ip: self
                .conn
                .map_or(std::net::IpAddr::from([0, 0, 0, 0]), |c| c.peer.ip()),
            method: metrics::method_label(&method),
            path,
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
