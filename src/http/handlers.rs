//! Route handlers: probes and the three commands (SPEC 2.1 steps 7–11).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde::Serialize;

use super::extract::{ApiJson, Caller};
use super::{ApiError, AppState, Principal, json_response, status_response};
use crate::dispatch::{self, AuditContext, AuditedCommand};
use crate::domain::awtrix3::Awtrix3Device;
use crate::domain::{
    Command, CommandRequest, CommandType, DeviceId, Envelope, Profile, ValidationError,
};
use crate::metrics;
use crate::store::{self, CancelOutcome, CommandRecord, CommandStatus, Delivery, IdemBegin};
use crate::tracking::{self, Tracker};

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
    let store_ready = state.tracker.as_ref().is_none_or(|t| t.store.is_ready());
    if state.dispatcher.is_ready() && store_ready {
        status_response(StatusCode::OK, "ready")
    } else {
        status_response(StatusCode::SERVICE_UNAVAILABLE, "not_ready")
    }
}

/// Steps 7–12 for any of the three commands: the caller, the body of `R`, its device and
/// its validation, then the dispatch; with a state store, the tracking of SPEC 7 around it.
pub async fn command<R: CommandRequest>(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    headers: HeaderMap,
    ApiJson(body): ApiJson<R>,
) -> Result<Response, ApiError> {
    let device = caller.device(body.device_id())?;
    let ttl = body
        .ttl()
        .map_err(|e| ApiError::InvalidCommand(e.to_string()));
    // Only a command's own route gets here, so its path is the route's.
    // The fingerprint needs the body before it becomes a command; a malformed key is
    // answered only after validation, where SPEC 7.6 places the check.
    let key = match &state.tracker {
        Some(_) => idempotency_key(&headers, R::TYPE.api_route().1, &body),
        None => Ok(None),
    };
    let command = body
        .into_command()
        .and_then(|c| c.not_in_the_past(chrono::Utc::now()))
        .map_err(|e| match e {
            ValidationError::AlarmTimeNotRfc3339 => ApiError::AlarmTimeNotRfc3339,
            other => ApiError::InvalidCommand(other.to_string()),
        })?;
    let ttl = ttl?;
    let key = key?;
    caller
        .dispatch(&state, device, command, R::TYPE, ttl, key)
        .await
}

/// An `Idempotency-Key` and the fingerprint of the request it came with.
struct IdempotencyKey {
    key: String,
    fingerprint: [u8; 32],
}

fn idempotency_key(
    headers: &HeaderMap,
    path: &str,
    body: &impl Serialize,
) -> Result<Option<IdempotencyKey>, ApiError> {
    let mut values = headers.get_all("idempotency-key").iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ApiError::InvalidIdempotencyKey);
    }
    let key =
        tracking::parse_idempotency_key(value.as_bytes()).ok_or(ApiError::InvalidIdempotencyKey)?;
    Ok(Some(IdempotencyKey {
        key: key.to_owned(),
        fingerprint: tracking::fingerprint(path, body),
    }))
}

/// The `202` body; `status` and `expiresAt` only for a tracked command (SPEC 7.2).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Accepted<'a> {
    result: &'static str,
    command_id: &'a str,
    device_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<String>,
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

    fn audit_context(&self, command_type: CommandType) -> AuditContext<'_> {
        let (method, path) = command_type.api_route();
        AuditContext {
            principal: &self.principal.0.id,
            client_ip: self
                .conn
                .map_or(std::net::IpAddr::from([0, 0, 0, 0]), |c| c.peer.ip()),
            method: metrics::method_label(&method),
            path,
        }
    }

    /// Steps 11–12, with SPEC 7 around them when a store is configured: the
    /// `Idempotency-Key` check, the record written before dispatch, its status after.
    async fn dispatch(
        self,
        state: &AppState,
        device_id: DeviceId,
        command: Command,
        command_type: CommandType,
        ttl: Option<std::time::Duration>,
        key: Option<IdempotencyKey>,
    ) -> Result<Response, ApiError> {
        let Some(tracker) = &state.tracker else {
            return self
                .dispatch_untracked(state, device_id, command, command_type)
                .await;
        };
        let principal = self.principal.0.id.as_str();
        if let Some(k) = &key {
            let begun = tracker
                .store
                .idem_begin(principal, &k.key, k.fingerprint, Utc::now())
                .await
                .map_err(|e| ApiError::from(tracker.failed("checking an Idempotency-Key", &e)))?;
            match begun {
                IdemBegin::New => {}
                IdemBegin::InProgress => return Err(ApiError::IdempotencyInProgress),
                IdemBegin::Mismatch => return Err(ApiError::IdempotencyMismatch),
                IdemBegin::Replay { status, body } => {
                    return Ok(self.replay(state, device_id.as_str(), command_type, status, body));
                }
            }
        }
        let result = self
            .dispatch_tracked(state, tracker, device_id, command, command_type, ttl)
            .await;
        if let Some(k) = &key {
            let stored = match &result {
                Ok((status, body, _)) => {
                    tracker
                        .store
                        .idem_finish(
                            principal,
                            &k.key,
                            k.fingerprint,
                            status.as_u16(),
                            body.clone(),
                            tracker.idempotency_ttl,
                            Utc::now(),
                        )
                        .await
                }
                Err(_) => tracker.store.idem_abort(principal, &k.key).await,
            };
            if let Err(e) = stored {
                tracker.failed("saving an Idempotency-Key", &e);
            }
        }
        let (status, body, command_id) = result?;
        Ok(accepted_response(status, body, Some(&command_id)))
    }

    async fn dispatch_untracked(
        self,
        state: &AppState,
        device_id: DeviceId,
        command: Command,
        command_type: CommandType,
    ) -> Result<Response, ApiError> {
        let profile = state.devices.profile(&device_id).clone();
        if profile.gateway_schedules_alarms() && command.alarm_instant().is_some() {
            // Start-up refuses such a device without a store; never publish an alarm early.
            tracing::error!(device_id = %device_id, "an alarm for a device whose alarms the gateway holds, without a state store");
            return Err(ApiError::DispatchFailed { command_id: None });
        }
        let envelope = Envelope {
            command_id: super::new_id().to_string(),
            request_id: self.request_id.0.clone(),
            device_id,
            command,
            expires_at: None,
            profile,
        };
        state
            .dispatcher
            .dispatch(&envelope, &self.audit_context(command_type))
            .await
            .map_err(|_| ApiError::DispatchFailed { command_id: None })?;
        Ok(json_response(
            StatusCode::ACCEPTED,
            &Accepted {
                result: command_type.accepted_result(),
                command_id: &envelope.command_id,
                device_id: envelope.device_id.as_str(),
                status: None,
                expires_at: None,
            },
        ))
    }

    /// The record first (nothing is dispatched without one), then the dispatch, then its
    /// status. `Ok` is the 202's status and exact body, for the response and the
    /// `Idempotency-Key`.
    async fn dispatch_tracked(
        &self,
        state: &AppState,
        tracker: &Tracker,
        device_id: DeviceId,
        command: Command,
        command_type: CommandType,
        ttl: Option<std::time::Duration>,
    ) -> Result<(StatusCode, Vec<u8>, String), ApiError> {
        let now = Utc::now();
        let profile = state.devices.profile(&device_id).clone();
        if let (Profile::Awtrix3(awtrix), Some(fire_at)) = (&profile, command.alarm_instant()) {
            return self
                .schedule(state, tracker, device_id, awtrix, command, fire_at, ttl)
                .await;
        }
        let expires_at = tracker.expires_at(now, ttl);
        let device_acks = profile.acknowledges();
        let envelope = Envelope {
            command_id: super::new_id().to_string(),
            request_id: self.request_id.0.clone(),
            device_id,
            command,
            expires_at: Some(expires_at),
            profile,
        };
        let device = envelope.device_id.as_str();
        tracker
            .create(
                &envelope.command_id,
                device,
                command_type,
                &self.principal.0.id,
                now,
                expires_at,
                device_acks,
            )
            .await
            .map_err(ApiError::from)?;
        if state
            .dispatcher
            .dispatch(&envelope, &self.audit_context(command_type))
            .await
            .is_err()
        {
            tracker
                .dispatch_failed(&envelope.command_id, device, command_type)
                .await;
            return Err(ApiError::DispatchFailed {
                command_id: Some(envelope.command_id),
            });
        }
        tracker.sent(&envelope.command_id).await;
        let body = serde_json::to_vec(&Accepted {
            result: command_type.accepted_result(),
            command_id: &envelope.command_id,
            device_id: device,
            status: Some(CommandStatus::Sent.as_str()),
            expires_at: Some(store::format_time(expires_at)),
        })
        .unwrap_or_default();
        Ok((StatusCode::ACCEPTED, body, envelope.command_id))
    }

    /// An alarm the gateway holds (SPEC 8.1): the record is `scheduled` with what to
    /// publish at `fire_at`; nothing leaves now. `expiresAt` is the alarm time plus the TTL.
    #[allow(clippy::too_many_arguments)]
    async fn schedule(
        &self,
        state: &AppState,
        tracker: &Tracker,
        device_id: DeviceId,
        awtrix: &Awtrix3Device,
        command: Command,
        fire_at: chrono::DateTime<Utc>,
        ttl: Option<std::time::Duration>,
    ) -> Result<(StatusCode, Vec<u8>, String), ApiError> {
        let now = Utc::now();
        let expires_at = tracker.expires_at(fire_at, ttl);
        let publication = awtrix.publication(&command);
        let command_id = super::new_id().to_string();
        tracker
            .schedule(
                &command_id,
                device_id.as_str(),
                &self.principal.0.id,
                now,
                expires_at,
                fire_at,
                Delivery {
                    topic: publication.topic,
                    payload: publication.payload,
                },
            )
            .await
            .map_err(ApiError::from)?;
        state.alarms.scheduled(fire_at);
        dispatch::audit_scheduled(
            &self.audit_context(CommandType::SetAlarm),
            &AuditedCommand {
                device_id: device_id.as_str(),
                command_type: CommandType::SetAlarm.as_str(),
                request_id: &self.request_id.0,
                command_id: &command_id,
            },
            &store::format_time(fire_at),
        );
        let body = serde_json::to_vec(&Accepted {
            result: CommandType::SetAlarm.accepted_result(),
            command_id: &command_id,
            device_id: device_id.as_str(),
            status: Some(CommandStatus::Scheduled.as_str()),
            expires_at: Some(store::format_time(expires_at)),
        })
        .unwrap_or_default();
        Ok((StatusCode::ACCEPTED, body, command_id))
    }

    /// The remembered answer to an `Idempotency-Key`, byte for byte; nothing is dispatched.
    fn replay(
        &self,
        state: &AppState,
        device_id: &str,
        command_type: CommandType,
        status: u16,
        body: Vec<u8>,
    ) -> Response {
        state.metrics.record_replay();
        let command_id = command_id_of(&body).unwrap_or_default();
        dispatch::audit_replayed(
            &self.audit_context(command_type),
            &AuditedCommand {
                device_id,
                command_type: command_type.as_str(),
                request_id: &self.request_id.0,
                command_id: &command_id,
            },
        );
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::ACCEPTED);
        let mut res = accepted_response(status, body, Some(&command_id));
        res.headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
        res
    }
}

/// A 202 with its `Location`: the status resource of `command_id`, or of the command in
/// `body` when not given.
fn accepted_response(status: StatusCode, body: Vec<u8>, command_id: Option<&str>) -> Response {
    let location = match command_id {
        Some(id) => HeaderValue::from_str(&format!("/commands/{id}")).ok(),
        None => command_id_of(&body)
            .and_then(|id| HeaderValue::from_str(&format!("/commands/{id}")).ok()),
    };
    let mut res = (status, body).into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(location) = location {
        res.headers_mut().insert(header::LOCATION, location);
    }
    res
}

/// The `commandId` of a 202 body.
fn command_id_of(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Id {
        command_id: String,
    }
    serde_json::from_slice::<Id>(body)
        .ok()
        .map(|b| b.command_id)
}

/// `GET /commands/{commandId}` (SPEC 7.3): the record, when the caller's credential covers
/// its device. Unknown, malformed, dropped, out of scope, or no store: the same 404.
pub async fn status(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    Path(command_id): Path<String>,
) -> Result<Response, ApiError> {
    let (_, record) = visible_record(&state, &principal, &command_id).await?;
    Ok(record_response(StatusCode::OK, &record))
}

/// `DELETE /commands/{commandId}` (SPEC 7.5): a scheduled command becomes `cancelled`;
/// any other status is a 409 naming it; not found as for `GET`.
pub async fn cancel(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    Path(command_id): Path<String>,
) -> Result<Response, ApiError> {
    let (tracker, record) = visible_record(&state, &principal, &command_id).await?;
    let cancelled = tracker
        .store
        .cancel(&record.command_id, Utc::now())
        .await
        .map_err(|e| {
            tracker.failed("cancelling", &e);
            ApiError::StoreUnavailable
        })?;
    match cancelled {
        CancelOutcome::Cancelled(record) => {
            let command_type =
                CommandType::from_wire(&record.command_type).map_or("unknown", CommandType::as_str);
            state.metrics.record_final(command_type, "cancelled");
            Ok(record_response(StatusCode::OK, &record))
        }
        CancelOutcome::NotCancellable(status) => Err(ApiError::NotCancellable {
            status: status.as_str(),
        }),
        CancelOutcome::NotFound => Err(ApiError::NotFound),
    }
}

async fn visible_record<'a>(
    state: &'a AppState,
    principal: &Principal,
    command_id: &str,
) -> Result<(&'a Arc<Tracker>, CommandRecord), ApiError> {
    let tracker = state.tracker.as_ref().ok_or(ApiError::NotFound)?;
    if uuid::Uuid::try_parse(command_id).is_err() {
        return Err(ApiError::NotFound);
    }
    let record = tracker
        .store
        .get(command_id, Utc::now())
        .await
        .map_err(|e| {
            tracker.failed("reading a record", &e);
            ApiError::StoreUnavailable
        })?
        .ok_or(ApiError::NotFound)?;
    let covered = DeviceId::parse(&record.device_id).is_ok_and(|d| principal.0.covers(&d));
    if !covered {
        return Err(ApiError::NotFound);
    }
    Ok((tracker, record))
}

fn record_response(status: StatusCode, record: &CommandRecord) -> Response {
    let mut res = (status, record.to_json()).into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}
