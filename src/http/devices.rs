//! `GET /devices` and `GET /devices/{deviceId}` (SPEC 11.2): what this replica knows of
//! each device's presence, limited to the caller's scopes.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use chrono::Utc;
use serde::Serialize;

use super::extract::IdPath;
use super::{ApiError, AppState, Principal, json_response};
use crate::domain::DeviceId;
use crate::presence::DeviceView;

#[derive(Serialize)]
struct DeviceList {
    devices: Vec<DeviceView>,
}

/// Every device of the devices file and every generic device that announced itself, in
/// the caller's scopes, sorted by id.
pub async fn list(State(state): State<Arc<AppState>>, principal: Principal) -> Response {
    let devices = state
        .presence
        .list(|device| principal.0.covers(device), Utc::now());
    json_response(StatusCode::OK, &DeviceList { devices })
}

/// One device, heard of or not; an invalid id or one outside the caller's scopes is the
/// same 404 as an unknown path.
pub async fn one(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    IdPath(device_id): IdPath,
) -> Result<Response, ApiError> {
    let device = DeviceId::parse(&device_id).map_err(|_| ApiError::NotFound)?;
    // Exactly as written: ` kitchen` is not `kitchen` in a path.
    if device.as_str() != device_id || !principal.0.covers(&device) {
        return Err(ApiError::NotFound);
    }
    Ok(json_response(
        StatusCode::OK,
        &state.presence.device(&device, Utc::now()),
    ))
}
