//! Prometheus metrics: the registry, the per-transport instrumenting decorator and the
//! `/metrics` endpoint served on its own listener (`METRICS_ADDR`).
//!
//! One [`Metrics`] per application, no global recorder: two applications in one process
//! (the integration tests) never mix their numbers. Label values are `&'static str` or
//! integers, so recording a request or a dispatch does not allocate; the per-transport
//! handles are resolved once, when the transport is wrapped.

use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::domain::{CommandType, Envelope};
use crate::transport::{BoxFuture, Transport, TransportError};

/// Upper bounds (seconds) of the dispatch latency buckets: from a local broker's sub-
/// millisecond PUBACK up to the longest publish or downstream timeout worth telling apart.
pub const DISPATCH_BUCKETS: [f64; 15] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// The probes; with the commands' own routes ([`CommandType::api_route`]) and the
/// templates below, every route of the API. Anything else is counted as `unmatched`, so a
/// scanner probing random paths cannot blow up the number of series.
const PROBE_ROUTES: [&str; 5] = ["/health", "/ready", "/openapi.json", "/events", "/console"];

/// `route` label of a request that matched no route.
pub const UNMATCHED: &str = "unmatched";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    route: &'static str,
    method: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DispatchLabels {
    transport: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransportLabels {
    transport: &'static str,
}

type HistogramFamily = Family<DispatchLabels, Histogram, fn() -> Histogram>;

/// Every metric of one application.
pub struct Metrics {
    registry: Registry,
    http_requests: Family<HttpLabels, Counter>,
    dispatch_duration: HistogramFamily,
    inflight: Family<TransportLabels, Gauge>,
    auth_failures: Counter,
    throttled: Counter,
    refused: Family<RefusalLabels, Counter>,
    commands: Family<CommandLabels, Counter>,
    acks: Family<AckLabels, Counter>,
    replays: Counter,
    store_errors: Counter,
    commands_queued: Gauge,
    transports: Arc<ReadyCollector>,
    presence: Arc<PresenceCollector>,
    schedules: Gauge,
    occurrences: Family<OccurrenceLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OccurrenceLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CommandLabels {
    r#type: &'static str,
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AckLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabels {
    reason: &'static str,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every family registered (and no series yet).
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("clock_server");
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by route template (or \"unmatched\"), method and status",
            http_requests.clone(),
        );
        let dispatch_duration: HistogramFamily =
            Family::new_with_constructor(|| Histogram::new(DISPATCH_BUCKETS));
        registry.register(
            "dispatch_duration_seconds",
            "Time for one transport to accept (or fail) one command, by transport and outcome (accepted/failed)",
            dispatch_duration.clone(),
        );
        let inflight = Family::<TransportLabels, Gauge>::default();
        registry.register(
            "inflight_dispatches",
            "Commands handed to a transport and not yet accepted or failed (in-flight publishes/deliveries)",
            inflight.clone(),
        );
        let auth_failures = Counter::default();
        registry.register(
            "auth_failures",
            "Requests refused with 401 (missing or unknown bearer token)",
            auth_failures.clone(),
        );
        let throttled = Counter::default();
        registry.register(
            "throttled_requests",
            "Requests refused with 429 by the auth-failure throttle",
            throttled.clone(),
        );
        let refused = Family::<RefusalLabels, Counter>::default();
        registry.register(
            "refused_requests",
            "Requests refused before a handler, by reason (unauthorized, throttled, https_required, not_found); logged at most once a second per reason",
            refused.clone(),
        );
        let commands = Family::<CommandLabels, Counter>::default();
        registry.register(
            "commands",
            "Tracked commands that reached a final status the server applied, by type and status (succeeded, failed, cancelled)",
            commands.clone(),
        );
        let acks = Family::<AckLabels, Counter>::default();
        // Present at 0 from the start, like the counters without labels, so a dashboard
        // (or `rate()`) sees the series before the first acknowledgement.
        for outcome in ["applied", "ignored", "dropped"] {
            let _ = acks.get_or_create(&AckLabels { outcome });
        }
        registry.register(
            "acks",
            "Device acknowledgements received, by outcome (applied, ignored, dropped: the queue to the state store was full)",
            acks.clone(),
        );
        let replays = Counter::default();
        registry.register(
            "idempotent_replays",
            "Requests answered from an Idempotency-Key without dispatching again",
            replays.clone(),
        );
        let store_errors = Counter::default();
        registry.register(
            "store_errors",
            "State store operations that failed (the API answered 503, or a status was not saved)",
            store_errors.clone(),
        );
        let commands_queued = Gauge::default();
        registry.register(
            "commands_queued",
            "Tracked commands held until their device is online again (status queued, not expired), as the store held them at the last check (once a second)",
            commands_queued.clone(),
        );
        let schedules = Gauge::default();
        registry.register(
            "schedules",
            "Enabled schedules (recurring alarms, SPEC 12) in the state store, as this replica last counted them",
            schedules.clone(),
        );
        let occurrences = Family::<OccurrenceLabels, Counter>::default();
        for result in ["fired", "missed"] {
            let _ = occurrences.get_or_create(&OccurrenceLabels { result });
        }
        registry.register(
            "schedule_occurrences",
            "Occurrences of schedules this replica claimed, by result: fired (sent as an alarm command), missed (reached more than 60 s late, never sent)",
            occurrences.clone(),
        );
        let transports = Arc::new(ReadyCollector::default());
        registry.register_collector(Box::new(transports.clone()));
        let presence = Arc::new(PresenceCollector::default());
        registry.register_collector(Box::new(presence.clone()));
        Self {
            registry,
            http_requests,
            dispatch_duration,
            inflight,
            auth_failures,
            throttled,
            refused,
            commands,
            acks,
            replays,
            store_errors,
            commands_queued,
            transports,
            presence,
            schedules,
            occurrences,
        }
    }

    /// Sets the `clock_server_schedules` gauge (enabled schedules).
    pub fn set_schedules(&self, enabled: u64) {
        self.schedules
            .set(i64::try_from(enabled).unwrap_or(i64::MAX));
    }

    /// Counts `n` occurrences with `result` `fired` or `missed`.
    pub fn record_occurrences(&self, result: &'static str, n: u64) {
        if n > 0 {
            self.occurrences
                .get_or_create(&OccurrenceLabels { result })
                .inc_by(n);
        }
    }

    /// Counts one answered request; `route` and `method` come from [`route_label`] and
    /// [`method_label`].
    pub fn record_request(&self, route: &'static str, method: &'static str, status: StatusCode) {
        let labels = HttpLabels {
            route,
            method,
            status: status.as_u16(),
        };
        self.http_requests.get_or_create(&labels).inc();
    }

    /// Counts one 401.
    pub fn record_auth_failure(&self) {
        self.auth_failures.inc();
    }

    /// Counts one 429 from the auth-failure throttle.
    pub fn record_throttled(&self) {
        self.throttled.inc();
    }

    /// Counts one request refused before a handler (`reason` as in [`crate::http`]'s refusals).
    pub fn record_refusal(&self, reason: &'static str) {
        self.refused.get_or_create(&RefusalLabels { reason }).inc();
    }

    /// Counts a tracked command that reached a final status.
    pub fn record_final(&self, command_type: &'static str, status: &'static str) {
        self.commands
            .get_or_create(&CommandLabels {
                r#type: command_type,
                status,
            })
            .inc();
    }

    /// Counts one device acknowledgement: `applied`, `ignored` or `dropped`.
    pub fn record_ack(&self, outcome: &'static str) {
        self.acks.get_or_create(&AckLabels { outcome }).inc();
    }

    /// Counts one answer replayed from an `Idempotency-Key`.
    pub fn record_replay(&self) {
        self.replays.inc();
    }

    /// Sets `clock_server_commands_queued`.
    pub fn set_commands_queued(&self, n: u64) {
        self.commands_queued
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Counts one failed state store operation.
    pub fn record_store_error(&self) {
        self.store_errors.inc();
    }

    /// Reports the state store's readiness (`ready`, cheap: asked at every scrape) as
    /// `transport_ready{transport="store"}`.
    pub fn watch_store(&self, ready: Arc<dyn Fn() -> bool + Send + Sync>) {
        let mut slot = self
            .transports
            .store
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *slot = Some(ready);
    }

    /// Reports devices by presence (`clock_server_devices{presence}`) and the messages on
    /// the presence topics (`clock_server_presence_messages_total{outcome}`), read at
    /// scrape time.
    pub fn watch_presence(&self, presence: Arc<crate::presence::Presence>) {
        let mut slot = self
            .presence
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *slot = Some(presence);
    }

    /// Wraps `inner` so that its latency, outcome, in-flight count and readiness are
    /// measured under its own name. Wrap each transport before fanning out.
    pub fn instrument(&self, inner: Arc<dyn Transport>) -> Arc<dyn Transport> {
        let name = inner.name();
        let handles = |outcome| {
            self.dispatch_duration.get_or_create_owned(&DispatchLabels {
                transport: name,
                outcome,
            })
        };
        let accepted = handles("accepted");
        let failed = handles("failed");
        let inflight = self
            .inflight
            .get_or_create_owned(&TransportLabels { transport: name });
        self.transports.add(name, inner.clone());
        Arc::new(Instrumented {
            inner,
            accepted,
            failed,
            inflight,
        })
    }

    /// The whole registry in the Prometheus text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        out
    }

    /// A router answering `GET /metrics` (and 404 elsewhere), for the metrics listener.
    pub fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route("/metrics", get(scrape))
            .fallback(|| async { (StatusCode::NOT_FOUND, "not found\n") })
            .with_state(self)
    }
}

async fn scrape(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    let mut res = Response::new(axum::body::Body::from(metrics.render()));
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(prometheus_client::encoding::prometheus_text::CONTENT_TYPE),
    );
    res
}

/// The `route` label of a request path: its route template, or `unmatched`.
pub fn route_label(path: &str) -> &'static str {
    PROBE_ROUTES
        .iter()
        .find(|known| **known == path)
        .copied()
        .or_else(|| CommandType::api_path(path))
        .or_else(|| {
            // `/commands/{id}`: one more segment after `/commands/`.
            path.strip_prefix("/commands/")
                .filter(|id| !id.is_empty() && !id.contains('/'))
                .map(|_| COMMAND_ROUTE)
        })
        .or_else(|| (path == DEVICES_ROUTE).then_some(DEVICES_ROUTE))
        .or_else(|| {
            path.strip_prefix("/devices/")
                .filter(|id| !id.is_empty() && !id.contains('/'))
                .map(|_| DEVICE_ROUTE)
        })
        .or_else(|| schedule_route(path))
        .or_else(|| path.starts_with("/console/").then_some(CONSOLE_FILES_ROUTE))
        .unwrap_or(UNMATCHED)
}

/// The route templates of `/schedules` (SPEC 12.1).
fn schedule_route(path: &str) -> Option<&'static str> {
    if path == "/schedules" {
        return Some("/schedules");
    }
    let rest = path.strip_prefix("/schedules/")?;
    match rest.split('/').collect::<Vec<_>>().as_slice() {
        [id] if !id.is_empty() => Some("/schedules/{scheduleId}"),
        [id, "skip"] if !id.is_empty() => Some("/schedules/{scheduleId}/skip"),
        [id, "occurrences"] if !id.is_empty() => Some("/schedules/{scheduleId}/occurrences"),
        _ => None,
    }
}

/// The route label of the console's files (SPEC 13.2).
pub const CONSOLE_FILES_ROUTE: &str = "/console/{file}";

/// The route template of the status resource (SPEC 7.3).
pub const COMMAND_ROUTE: &str = "/commands/{commandId}";
/// The devices resource (SPEC 11.2).
pub const DEVICES_ROUTE: &str = "/devices";
/// One device (SPEC 11.2).
pub const DEVICE_ROUTE: &str = "/devices/{deviceId}";

/// The `method` label: standard methods by name; anything else (a fuzzer's `FOO`) is `other`.
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "other",
    }
}

/// `clock_server_transport_ready{transport}`: asks each transport at scrape time (its
/// `is_ready` is cheap by contract), so the gauge is never stale.
#[derive(Default)]
struct ReadyCollector {
    transports: RwLock<Vec<(&'static str, Arc<dyn Transport>)>>,
    store: RwLock<Option<Arc<dyn Fn() -> bool + Send + Sync>>>,
}

impl ReadyCollector {
    fn add(&self, name: &'static str, transport: Arc<dyn Transport>) {
        let mut all = self
            .transports
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        all.retain(|(n, _)| *n != name);
        all.push((name, transport));
    }
}

impl fmt::Debug for ReadyCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadyCollector").finish_non_exhaustive()
    }
}

impl Collector for ReadyCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let all = self
            .transports
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut metric = encoder.encode_descriptor(
            "transport_ready",
            "1 when the transport can deliver now (MQTT: connected to the broker; REST: health check passing), else 0.",
            None,
            MetricType::Gauge,
        )?;
        for (name, transport) in all.iter() {
            let ready = i64::from(transport.is_ready());
            metric
                .encode_family(&TransportLabels { transport: name })?
                .encode_gauge(&ready)?;
        }
        let store = self
            .store
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(store) = store.as_ref() {
            metric
                .encode_family(&TransportLabels { transport: "store" })?
                .encode_gauge(&i64::from(store()))?;
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PresenceLabels {
    presence: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

/// `clock_server_devices{presence}` and `clock_server_presence_messages_total{outcome}`,
/// computed from the registry at scrape time (an AWTRIX clock's timeout needs no event).
#[derive(Default)]
struct PresenceCollector(RwLock<Option<Arc<crate::presence::Presence>>>);

impl fmt::Debug for PresenceCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PresenceCollector").finish_non_exhaustive()
    }
}

impl Collector for PresenceCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let presence = self
            .0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(presence) = presence.as_ref() else {
            return Ok(());
        };
        let mut devices = encoder.encode_descriptor(
            "devices",
            "Devices of the devices file and generic devices that announced themselves, by presence (online, offline, unknown), as this replica knows it",
            None,
            MetricType::Gauge,
        )?;
        for (state, count) in presence.counts(chrono::Utc::now()) {
            let count = i64::try_from(count).unwrap_or(i64::MAX);
            devices
                .encode_family(&PresenceLabels {
                    presence: state.as_str(),
                })?
                .encode_gauge(&count)?;
        }
        let mut messages = encoder.encode_descriptor(
            "presence_messages",
            "Messages on the presence topics (status, stats, stats/device) and acknowledgements seen by presence, by outcome: applied, or ignored (not presence, too big, or no room for a new device)",
            None,
            MetricType::Counter,
        )?;
        for (outcome, count) in [
            ("applied", presence.applied()),
            ("ignored", presence.ignored()),
        ] {
            messages
                .encode_family(&OutcomeLabels { outcome })?
                .encode_counter::<prometheus_client::encoding::NoLabelSet, u64, f64>(&count, None)?;
        }
        Ok(())
    }
}

/// The decorator [`Metrics::instrument`] puts around one transport.
struct Instrumented {
    inner: Arc<dyn Transport>,
    accepted: Histogram,
    failed: Histogram,
    inflight: Gauge,
}

/// Decrements the in-flight gauge however the send ends (also when the request is
/// cancelled because its caller went away).
struct InflightGuard<'a>(&'a Gauge);

impl Drop for InflightGuard<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Transport for Instrumented {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn send<'a>(&'a self, envelope: &'a Envelope) -> BoxFuture<'a, Result<(), TransportError>> {
        Box::pin(async move {
            self.inflight.inc();
            let _guard = InflightGuard(&self.inflight);
            let started = Instant::now();
            let result = self.inner.send(envelope).await;
            let elapsed = started.elapsed().as_secs_f64();
            match &result {
                Ok(()) => self.accepted.observe(elapsed),
                Err(_) => self.failed.observe(elapsed),
            }
            result
        })
    }

    fn reaches(&self, profile: &crate::domain::Profile) -> bool {
        self.inner.reaches(profile)
    }

    fn is_ready(&self) -> bool {
        self.inner.is_ready()
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        self.inner.close()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_outside_the_api_and_odd_methods_share_one_label_value() {
        assert_eq!(route_label("/commands/alarms"), "/commands/alarms");
        assert_eq!(route_label("/etc/passwd"), UNMATCHED);
        assert_eq!(route_label("/health/"), UNMATCHED);
        assert_eq!(method_label(&Method::PUT), "PUT");
        assert_eq!(
            method_label(&Method::from_bytes(b"FOO").unwrap_or_default()),
            "other"
        );
    }

    /// Accepts everything; never ready.
    struct Null;

    impl Transport for Null {
        fn name(&self) -> &'static str {
            "null"
        }
        fn send<'a>(&'a self, _: &'a Envelope) -> BoxFuture<'a, Result<(), TransportError>> {
            Box::pin(async { Ok(()) })
        }
        fn is_ready(&self) -> bool {
            false
        }
        fn close(&self) -> BoxFuture<'_, ()> {
            Box::pin(async {})
        }
    }

    #[test]
    fn every_family_is_rendered_in_the_text_format_once_a_transport_is_wrapped() {
        let m = Metrics::new();
        let _wrapped = m.instrument(Arc::new(Null));
        m.record_request(route_label("/health"), "GET", StatusCode::OK);
        m.record_auth_failure();
        let text = m.render();
        for line in [
            "# TYPE clock_server_http_requests_total counter",
            "clock_server_http_requests_total{route=\"/health\",method=\"GET\",status=\"200\"} 1",
            "# TYPE clock_server_dispatch_duration_seconds histogram",
            "clock_server_dispatch_duration_seconds_count{transport=\"null\",outcome=\"failed\"} 0",
            "clock_server_dispatch_duration_seconds_bucket{transport=\"null\",outcome=\"accepted\",le=\"0.0005\"} 0",
            "clock_server_inflight_dispatches{transport=\"null\"} 0",
            "clock_server_auth_failures_total 1",
            "clock_server_throttled_requests_total 0",
            "clock_server_transport_ready{transport=\"null\"} 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing in:\n{text}"
            );
        }
    }
}
