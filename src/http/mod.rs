//! The HTTP API (SPEC 2): the router, the front checks every request passes (request id,
//! TLS policy, public probes, throttle, authentication), the command handlers and the
//! connection-level server.

pub mod console;
mod devices;
mod error;
mod events;
mod extract;
mod handlers;
mod refusals;
mod schedules;
pub mod server;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, any, get, on};

pub use error::ApiError;
pub use error::json_response;

use crate::commands::Commands;
use crate::config::TlsPolicy;
use crate::domain::{AlarmRequest, BrightnessRequest, CommandRequest, MessageRequest};
use crate::metrics::{self, Metrics};
use crate::security::{AuthThrottle, Credential, PresentedToken, ThrottleKey, authenticate};
pub(crate) use crate::shared::new_id;
use refusals::{Refusal, RefusalLog};

/// What the handlers share.
pub struct AppState {
    /// The core: every command's life (submission, status, cancel).
    pub commands: Arc<Commands>,
    pub credentials: Vec<Credential>,
    pub throttle: AuthThrottle,
    pub tls_policy: TlsPolicy,
    pub readiness_require_auth: bool,
    pub max_body_bytes: usize,
    pub read_timeout: std::time::Duration,
    /// Request, auth-failure and throttle counters (served on `METRICS_ADDR`).
    pub metrics: Arc<Metrics>,
    /// The log budget of refused requests.
    pub refusals: RefusalLog,
    /// Which devices are there (SPEC 11.1), learnt by this replica.
    pub presence: Arc<crate::presence::Presence>,
    /// Recurring alarms (SPEC 12); `None` with `STATE_STORE=none` (no `/schedules` routes).
    pub schedules: Option<Arc<crate::schedules::Schedules>>,
    /// Live events (SPEC 13.1): what `GET /events` streams.
    pub events: Arc<crate::events::Hub>,
    /// `CONSOLE`: whether `/console` is served (SPEC 13.2).
    pub console: bool,
}

/// Facts about the connection a request arrived on, set by the server per connection.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub tls: bool,
}

/// The request id (SPEC 2.1 step 1), available to handlers as an extension.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// The authenticated caller.
#[derive(Debug, Clone)]
pub struct Principal(pub Credential);

/// The API router with all front checks applied.
pub fn router(state: Arc<AppState>) -> Router {
    let schedules = match state.schedules {
        Some(_) => schedules::routes(),
        None => Router::new(),
    };
    Router::new()
        .route("/health", get(handlers::health).fallback(not_allowed_get))
        .route("/ready", get(handlers::ready).fallback(not_allowed_get))
        .route(
            "/openapi.json",
            get(handlers::openapi).fallback(not_allowed_get),
        )
        .merge(command_route::<AlarmRequest>())
        .merge(command_route::<MessageRequest>())
        .merge(command_route::<BrightnessRequest>())
        .route(
            "/commands/{command_id}",
            get(handlers::status)
                .delete(handlers::cancel)
                .fallback(not_allowed_get_delete),
        )
        .route(
            metrics::DEVICES_ROUTE,
            get(devices::list).fallback(not_allowed_get),
        )
        .route(
            "/devices/{device_id}",
            get(devices::one).fallback(not_allowed_get),
        )
        .merge(schedules)
        .route("/events", get(events::events).fallback(not_allowed_get))
        .merge(console::routes(state.console))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), front))
        .with_state(state)
}

async fn not_allowed_get() -> ApiError {
    ApiError::MethodNotAllowed { allow: "GET, HEAD" }
}
async fn not_allowed_get_delete() -> ApiError {
    ApiError::MethodNotAllowed {
        allow: "GET, HEAD, DELETE",
    }
}

/// The route of one command, at its method and path ([`CommandType::api_route`]).
fn command_route<R: CommandRequest>() -> Router<Arc<AppState>> {
    let (method, path) = R::TYPE.api_route();
    let allow = metrics::method_label(&method);
    let route = match MethodFilter::try_from(method) {
        Ok(filter) => on(filter, handlers::command::<R>),
        // Unreachable: the commands' methods are standard ones, which all have a filter.
        Err(_) => any(handlers::command::<R>),
    };
    let not_allowed = move || async move { ApiError::MethodNotAllowed { allow } };
    Router::new().route(path, route.fallback(not_allowed))
}
async fn not_found() -> ApiError {
    ApiError::NotFound
}

/// Steps 1–5 of SPEC 2.1, then the route; finally the common response headers and the
/// request counter.
async fn front(State(state): State<Arc<AppState>>, mut req: Request, next: Next) -> Response {
    let request_id = request_id(req.headers());
    let conn = req.extensions().get::<ConnInfo>().copied();
    // Both `&'static str`: labels for the request counter, taken before the request moves on.
    let route = metrics::route_label(req.uri().path());
    let method = metrics::method_label(req.method());
    let mut res = match check(&state, &mut req, conn) {
        Ok(()) => {
            req.extensions_mut().insert(RequestId(request_id.clone()));
            let path = (route == metrics::UNMATCHED).then(|| req.uri().path().to_owned());
            let res = next.run(req).await;
            if let Some(path) = path
                && res.status() == StatusCode::NOT_FOUND
            {
                state.refused(Refusal::NotFound, conn, &path);
            }
            res
        }
        Err(early) => early.into_response(),
    };
    add_common_headers(&mut res, &request_id);
    state.metrics.record_request(route, method, res.status());
    res
}

/// The headers every answer carries (SPEC 2), also those the server writes itself.
pub(crate) fn add_common_headers(res: &mut Response, request_id: &str) {
    let h = res.headers_mut();
    if let Ok(v) = HeaderValue::from_str(request_id) {
        h.insert("x-request-id", v);
    }
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    h.entry(header::CONTENT_TYPE)
        .or_insert(HeaderValue::from_static("application/json"));
}

impl AppState {
    /// Counts a refused request and logs it within the per-kind budget (SPEC 10): a
    /// logged path is the route label, or the raw path cut to 128 characters.
    fn refused(&self, kind: Refusal, conn: Option<ConnInfo>, path: &str) {
        self.metrics.record_refusal(kind.label());
        let Some(count) = self.refusals.note(kind) else {
            return;
        };
        let client_ip = conn.map_or(IpAddr::from([0, 0, 0, 0]), |c| c.peer.ip());
        let route = metrics::route_label(path);
        let path = if route == metrics::UNMATCHED {
            crate::shared::loggable_path(path)
        } else {
            route.into()
        };
        let path = path.as_ref();
        match kind {
            Refusal::Unauthorized => {
                tracing::info!(%client_ip, path, count, "authentication failed")
            }
            Refusal::Throttled => tracing::warn!(
                %client_ip,
                path,
                count,
                "auth-failure limit reached; request refused"
            ),
            Refusal::HttpsRequired => {
                tracing::info!(%client_ip, path, count, "plain HTTP refused: https required")
            }
            Refusal::NotFound => tracing::info!(%client_ip, path, count, "unknown path"),
        }
    }
}

/// Steps 2–5; `Err` carries the early answer, `Ok` lets the request through to routing.
fn check(state: &AppState, req: &mut Request, conn: Option<ConnInfo>) -> Result<(), ApiError> {
    // Requests that a front proxy and this server could read differently are refused
    // before anything else (SPEC 10, "ambiguous requests").
    let headers = req.headers();
    let hosts = headers.get_all(header::HOST).iter().count();
    if hosts > 1 || (hosts == 0 && req.version() == axum::http::Version::HTTP_11) {
        return Err(ApiError::InvalidRequest);
    }
    let over_tls = conn.is_some_and(|c| c.tls);
    if !state
        .tls_policy
        .admits(over_tls, || forwarded_https(headers))
    {
        state.refused(Refusal::HttpsRequired, conn, req.uri().path());
        return Err(ApiError::HttpsRequired);
    }
    let path = req.uri().path();
    if path == "/health"
        || path == "/openapi.json"
        || (path == "/ready" && !state.readiness_require_auth)
        || (state.console && console::is_console_path(path))
    {
        return Ok(());
    }
    if headers
        .get_all(header::AUTHORIZATION)
        .iter()
        .nth(1)
        .is_some()
    {
        return Err(ApiError::InvalidRequest);
    }
    let ip = conn.map_or(IpAddr::from([0, 0, 0, 0]), |c| c.peer.ip());
    let token = bearer_token(headers).map(PresentedToken::new);
    let key = match &token {
        Some(t) => t.throttle_key(ip),
        None => ThrottleKey::ip(ip),
    };
    if let Some(retry_after) = state.throttle.blocked(&key) {
        state.metrics.record_throttled();
        state.refused(Refusal::Throttled, conn, path);
        return Err(ApiError::TooManyAuthFailures { retry_after });
    }
    match token
        .as_ref()
        .and_then(|t| authenticate(&state.credentials, t))
    {
        Some(credential) => {
            req.extensions_mut().insert(Principal(credential.clone()));
            Ok(())
        }
        None => {
            state.throttle.record_failure(&key);
            state.metrics.record_auth_failure();
            state.refused(Refusal::Unauthorized, conn, path);
            Err(ApiError::Unauthorized)
        }
    }
}

/// `X-Forwarded-Proto: https`, case-insensitive, surrounding spaces ignored. Only the last
/// value counts (of several headers, or of a comma list): the one the trusted proxy
/// appended, not one the client sent ahead of it.
fn forwarded_https(headers: &HeaderMap) -> bool {
    headers
        .get_all("x-forwarded-proto")
        .iter()
        .next_back()
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit(',').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"))
}

/// The token of `Authorization: Bearer <token>` (scheme case-insensitive).
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The caller's `X-Request-Id` without control characters, cut to 64 characters; or a new
/// unique one (`req-` + UUIDv7: time-ordered and random, so unique across replicas).
fn request_id(headers: &HeaderMap) -> String {
    let given: String = headers
        .get("x-request-id")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default()
        .chars()
        .filter(|c| !c.is_control())
        .take(64)
        .collect();
    let trimmed = given.trim();
    if trimmed.is_empty() {
        format!("req-{}", new_id().simple())
    } else {
        trimmed.to_owned()
    }
}

/// `{"status": ...}`, the probes' body.
#[derive(serde::Serialize)]
struct Status<'a> {
    status: &'a str,
}

/// A JSON answer with a fixed status (probes).
pub(crate) fn status_response(status: StatusCode, value: &str) -> Response {
    json_response(status, &Status { status: value })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_cleaned_cut_or_generated() {
        let mut h = HeaderMap::new();
        assert!(request_id(&h).starts_with("req-"));
        assert_ne!(request_id(&h), request_id(&h));
        h.insert(
            "x-request-id",
            HeaderValue::from_str(&"a".repeat(100)).unwrap(),
        );
        assert_eq!(request_id(&h).len(), 64);
        h.insert(
            "x-request-id",
            HeaderValue::from_bytes(b"ab\tc\td").unwrap(),
        );
        assert_eq!(request_id(&h), "abcd");
        h.insert("x-request-id", HeaderValue::from_bytes(b"\t\t").unwrap());
        assert!(request_id(&h).starts_with("req-"));
    }

    #[test]
    fn bearer_tokens_and_forwarded_proto_are_parsed_leniently() {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer  tok "),
        );
        assert_eq!(bearer_token(&h), Some("tok"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic tok"));
        assert_eq!(bearer_token(&h), None);
        h.insert("x-forwarded-proto", HeaderValue::from_static("  HTTPS "));
        assert!(forwarded_https(&h));
        h.insert("x-forwarded-proto", HeaderValue::from_static("http"));
        assert!(!forwarded_https(&h));
        // The client's own value comes first; the proxy's, last, is the one that counts.
        h.insert("x-forwarded-proto", HeaderValue::from_static("https, http"));
        assert!(!forwarded_https(&h));
        h.insert("x-forwarded-proto", HeaderValue::from_static("http ,HTTPS"));
        assert!(forwarded_https(&h));
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        h.append("x-forwarded-proto", HeaderValue::from_static("http"));
        assert!(!forwarded_https(&h));
        h.append("x-forwarded-proto", HeaderValue::from_static("https"));
        assert!(forwarded_https(&h));
    }
}
