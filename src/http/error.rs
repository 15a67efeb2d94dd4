//! `ApiError`: the one place where failures become status codes and JSON bodies.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::commands::CommandError;
use crate::domain::ValidationError;

/// Every error the API can answer with (SPEC 2.1).
#[derive(Debug)]
pub enum ApiError {
    /// An ambiguous request: two `Authorization` headers, or HTTP/1.1 without one `Host`.
    InvalidRequest,
    HttpsRequired,
    TooManyAuthFailures {
        retry_after: Duration,
    },
    Unauthorized,
    NotFound,
    MethodNotAllowed {
        allow: &'static str,
    },
    BodyTooLarge {
        limit: usize,
    },
    RequestTimeout,
    InvalidBody(String),
    InvalidCommand(String),
    AlarmTimeNotRfc3339,
    Forbidden,
    /// 502; a tracked command's id goes into the body (SPEC 7.2).
    DispatchFailed {
        command_id: Option<String>,
    },
    /// 503: the state store cannot be reached; nothing was dispatched (SPEC 7.1).
    StoreUnavailable,
    /// 503 with `Retry-After: 1`: the `memory` store holds only unfinished commands and
    /// live `Idempotency-Key`s, which are never evicted (SPEC 10); nothing was dispatched.
    StoreFull,
    /// 400: an `Idempotency-Key` that is not 1–255 visible ASCII characters.
    InvalidIdempotencyKey,
    /// 409 with `Retry-After: 1`: the same key is being dispatched right now.
    IdempotencyInProgress,
    /// 422: the same key was used for another request.
    IdempotencyMismatch,
    /// 409: only a scheduled command can be cancelled.
    NotCancellable {
        status: &'static str,
    },
    /// 400: a query parameter (a preview's `from` or `count`, a list's `deviceId`).
    InvalidParameter(String),
    /// 409: the device has `SCHEDULES_MAX_PER_DEVICE` schedules already (SPEC 12.1).
    TooManySchedules,
    /// 409: a skip of a disabled schedule.
    ScheduleDisabled,
    /// 503 with `Retry-After`: `EVENTS_MAX_STREAMS` streams are open (SPEC 13.1).
    TooManyEventStreams,
}

/// The core's outcomes, as the API answers them.
impl From<CommandError> for ApiError {
    fn from(e: CommandError) -> Self {
        match e {
            CommandError::StoreUnavailable => Self::StoreUnavailable,
            CommandError::StoreFull => Self::StoreFull,
            CommandError::IdempotencyInProgress => Self::IdempotencyInProgress,
            CommandError::IdempotencyMismatch => Self::IdempotencyMismatch,
            CommandError::DispatchFailed { command_id } => Self::DispatchFailed { command_id },
            CommandError::NotFound => Self::NotFound,
            CommandError::NotCancellable { status } => Self::NotCancellable { status },
        }
    }
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            Self::InvalidRequest => StatusCode::BAD_REQUEST,
            Self::HttpsRequired => StatusCode::UPGRADE_REQUIRED,
            Self::TooManyAuthFailures { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::InvalidBody(_) | Self::InvalidCommand(_) | Self::AlarmTimeNotRfc3339 => {
                StatusCode::BAD_REQUEST
            }
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::DispatchFailed { .. } => StatusCode::BAD_GATEWAY,
            Self::StoreUnavailable | Self::StoreFull => StatusCode::SERVICE_UNAVAILABLE,
            Self::InvalidIdempotencyKey | Self::InvalidParameter(_) => StatusCode::BAD_REQUEST,
            Self::TooManySchedules | Self::ScheduleDisabled => StatusCode::CONFLICT,
            Self::IdempotencyInProgress | Self::NotCancellable { .. } => StatusCode::CONFLICT,
            Self::IdempotencyMismatch => StatusCode::UNPROCESSABLE_ENTITY,
            Self::TooManyEventStreams => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn body(&self) -> serde_json::Value {
        let error = match self {
            Self::InvalidRequest => "invalid request".to_owned(),
            Self::HttpsRequired => "https required".to_owned(),
            Self::TooManyAuthFailures { .. } => "too many auth failures".to_owned(),
            Self::Unauthorized => "unauthorized".to_owned(),
            Self::NotFound => "not found".to_owned(),
            Self::MethodNotAllowed { .. } => "method not allowed".to_owned(),
            Self::BodyTooLarge { limit } => {
                format!("request body too large (limit {limit} bytes)")
            }
            Self::RequestTimeout => "request timeout".to_owned(),
            Self::InvalidBody(why) => format!("invalid request body: {why}"),
            Self::InvalidCommand(detail) => {
                return serde_json::json!({"error": "invalid command", "detail": detail});
            }
            Self::AlarmTimeNotRfc3339 => ValidationError::AlarmTimeNotRfc3339.to_string(),
            Self::Forbidden => "forbidden for target device".to_owned(),
            Self::DispatchFailed { command_id: None } => "command dispatch failed".to_owned(),
            Self::DispatchFailed {
                command_id: Some(id),
            } => {
                return serde_json::json!({"error": "command dispatch failed", "commandId": id});
            }
            Self::StoreUnavailable => "state store unavailable".to_owned(),
            Self::StoreFull => "state store full".to_owned(),
            Self::InvalidIdempotencyKey => "invalid Idempotency-Key".to_owned(),
            Self::IdempotencyInProgress => {
                "request with this idempotency key is in progress".to_owned()
            }
            Self::IdempotencyMismatch => {
                "idempotency key reused with a different request".to_owned()
            }
            Self::InvalidParameter(detail) => {
                return serde_json::json!({"error": "invalid query parameter", "detail": detail});
            }
            Self::TooManySchedules => "too many schedules for this device".to_owned(),
            Self::ScheduleDisabled => "schedule is disabled".to_owned(),
            Self::NotCancellable { status } => {
                return serde_json::json!({"error": "command can no longer be cancelled", "status": status});
            }
            Self::TooManyEventStreams => "too many event streams".to_owned(),
        };
        serde_json::json!({ "error": error })
    }
}

/// A JSON response with the given status.
pub fn json_response<T: serde::Serialize + ?Sized>(status: StatusCode, body: &T) -> Response {
    // Sized for the usual small answers, so the body is written without regrowing.
    let mut bytes = Vec::with_capacity(128);
    // Writing plain structs and JSON values into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut bytes, body);
    let mut res = (status, bytes).into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut res = json_response(self.status(), &self.body());
        match self {
            Self::IdempotencyInProgress | Self::StoreFull => {
                res.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(1u32));
            }
            // A stream usually lasts long: a place is unlikely to free up within a second.
            Self::TooManyEventStreams => {
                res.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(30u32));
            }
            Self::TooManyAuthFailures { retry_after } => {
                let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
                res.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
            }
            Self::MethodNotAllowed { allow } => {
                res.headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static(allow));
            }
            Self::Unauthorized => {
                res.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            _ => {}
        }
        res
    }
}
