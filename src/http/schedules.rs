//! `/schedules` (SPEC 12.1): extract, call [`crate::schedules`], map its outcome to an
//! answer. Routed only when a state store is configured; with `STATE_STORE=none` every
//! `/schedules` path is an unknown path (404 after authentication).

use std::sync::Arc;

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::Utc;
use serde::Serialize;

use super::extract::{ApiJson, IdPath, idempotency_key};
use super::{ApiError, AppState, Principal, json_response};
use crate::domain::schedule::ScheduleRequest;
use crate::schedules::{Created, Refused, Schedules};
use crate::store::{ScheduleRecord, format_time};

/// The path of the collection, also the `Idempotency-Key` fingerprint's endpoint.
const COLLECTION: &str = "/schedules";

/// The routes of `/schedules`.
pub(super) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route(
            COLLECTION,
            get(list).post(create).fallback(|| async {
                ApiError::MethodNotAllowed {
                    allow: "GET, HEAD, POST",
                }
            }),
        )
        .route(
            "/schedules/{schedule_id}",
            get(read).patch(patch).delete(delete).fallback(|| async {
                ApiError::MethodNotAllowed {
                    allow: "GET, HEAD, PATCH, DELETE",
                }
            }),
        )
        .route(
            "/schedules/{schedule_id}/skip",
            post(skip).fallback(|| async { ApiError::MethodNotAllowed { allow: "POST" } }),
        )
        .route(
            "/schedules/{schedule_id}/occurrences",
            get(occurrences)
                .fallback(|| async { ApiError::MethodNotAllowed { allow: "GET, HEAD" } }),
        )
}

impl From<Refused> for ApiError {
    fn from(refused: Refused) -> Self {
        match refused {
            Refused::Invalid(detail) => Self::InvalidCommand(detail),
            Refused::Body(why) => Self::InvalidBody(why),
            Refused::Parameter(detail) => Self::InvalidParameter(detail),
            Refused::Forbidden => Self::Forbidden,
            Refused::NotFound => Self::NotFound,
            Refused::TooMany => Self::TooManySchedules,
            Refused::Disabled => Self::ScheduleDisabled,
            Refused::InProgress => Self::IdempotencyInProgress,
            Refused::Mismatch => Self::IdempotencyMismatch,
            Refused::Unavailable => Self::StoreUnavailable,
            Refused::Full => Self::StoreFull,
        }
    }
}

fn schedules(state: &AppState) -> Result<&Schedules, ApiError> {
    state.schedules.as_deref().ok_or(ApiError::NotFound)
}

/// A schedule as the answer's body.
fn schedule_response(status: StatusCode, record: &ScheduleRecord) -> Response {
    json_bytes(status, record.to_json())
}

fn json_bytes(status: StatusCode, body: Vec<u8>) -> Response {
    let mut res = (status, body).into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

/// A 201 with the schedule's `Location`.
fn created_response(body: Vec<u8>) -> Response {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Id {
        schedule_id: String,
    }
    let id = serde_json::from_slice::<Id>(&body).map(|b| b.schedule_id);
    let mut res = json_bytes(StatusCode::CREATED, body);
    if let Ok(location) = id.and_then(|id| {
        HeaderValue::from_str(&format!("{COLLECTION}/{id}")).map_err(serde::de::Error::custom)
    }) {
        res.headers_mut().insert(header::LOCATION, location);
    }
    res
}

/// `POST /schedules`.
async fn create(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    headers: HeaderMap,
    ApiJson(body): ApiJson<ScheduleRequest>,
) -> Result<Response, ApiError> {
    let schedules = schedules(&state)?;
    // Checked after the body parsed: the key's fingerprint is of the parsed body.
    let key = idempotency_key(&headers, COLLECTION, &body)?;
    match schedules
        .create(&principal.0, body, key, Utc::now())
        .await?
    {
        Created::New(record) => Ok(created_response(record.to_json())),
        Created::Replay { body, .. } => {
            state.metrics.record_replay();
            let mut res = created_response(body);
            res.headers_mut()
                .insert("idempotent-replayed", HeaderValue::from_static("true"));
            Ok(res)
        }
    }
}

/// The value of `name` in a query string (percent-decoded; `+` stays a plus, so an offset
/// such as `+01:00` survives). A parameter given twice is refused rather than guessed at.
fn query_param(query: Option<&str>, name: &str) -> Result<Option<String>, ApiError> {
    let mut values = query.unwrap_or_default().split('&').filter_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then(|| {
            percent_encoding::percent_decode_str(v)
                .decode_utf8_lossy()
                .into_owned()
        })
    });
    let first = values.next();
    if values.next().is_some() {
        return Err(ApiError::InvalidParameter(format!(
            "{name} is given more than once"
        )));
    }
    Ok(first)
}

#[derive(Serialize)]
struct List<'a> {
    schedules: &'a [ScheduleRecord],
}

/// `GET /schedules[?deviceId=<id>]`.
async fn list(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let device = query_param(query.as_deref(), "deviceId")?;
    let records = schedules(&state)?
        .list(&principal.0, device.as_deref())
        .await?;
    Ok(json_response(
        StatusCode::OK,
        &List {
            schedules: &records,
        },
    ))
}

/// `GET /schedules/{id}`.
async fn read(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    IdPath(id): IdPath,
) -> Result<Response, ApiError> {
    let record = schedules(&state)?.get(&principal.0, &id).await?;
    Ok(schedule_response(StatusCode::OK, &record))
}

/// `PATCH /schedules/{id}`: a JSON merge patch (any `Content-Type`, as for the commands).
async fn patch(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    IdPath(id): IdPath,
    ApiJson(body): ApiJson<serde_json::Value>,
) -> Result<Response, ApiError> {
    let record = schedules(&state)?
        .patch(&principal.0, &id, body, Utc::now())
        .await?;
    Ok(schedule_response(StatusCode::OK, &record))
}

/// `DELETE /schedules/{id}`.
async fn delete(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    IdPath(id): IdPath,
) -> Result<Response, ApiError> {
    let record = schedules(&state)?.delete(&principal.0, &id).await?;
    Ok(schedule_response(StatusCode::OK, &record))
}

/// `POST /schedules/{id}/skip`.
async fn skip(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    IdPath(id): IdPath,
) -> Result<Response, ApiError> {
    let record = schedules(&state)?
        .skip(&principal.0, &id, Utc::now())
        .await?;
    Ok(schedule_response(StatusCode::OK, &record))
}

#[derive(Serialize)]
struct Occurrences {
    occurrences: Vec<String>,
}

/// `GET /schedules/{id}/occurrences[?from=&count=]`.
async fn occurrences(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    IdPath(id): IdPath,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let from = query_param(query.as_deref(), "from")?;
    let count = query_param(query.as_deref(), "count")?;
    let instants = schedules(&state)?
        .occurrences(
            &principal.0,
            &id,
            from.as_deref(),
            count.as_deref(),
            Utc::now(),
        )
        .await?;
    Ok(json_response(
        StatusCode::OK,
        &Occurrences {
            occurrences: instants.into_iter().map(format_time).collect(),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_parameter_is_percent_decoded_and_a_plus_stays_a_plus() {
        let q = Some("count=3&from=2027-03-28T00:00:00+01:00&deviceId=a%2Db");
        let get = |name| query_param(q, name).unwrap();
        assert_eq!(get("from").as_deref(), Some("2027-03-28T00:00:00+01:00"));
        assert_eq!(get("count").as_deref(), Some("3"));
        assert_eq!(get("deviceId").as_deref(), Some("a-b"));
        assert_eq!(get("other"), None);
        assert_eq!(query_param(None, "count").unwrap(), None);
        assert!(query_param(Some("count=1&count=2"), "count").is_err());
    }
}
