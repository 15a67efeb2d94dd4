//! REST transport and fan-out (SPEC 4.2, 4.3): the real application on port 0, driven
//! through its HTTP API, against a real HTTP(S) downstream started here (and a real
//! Mosquitto for the fan-out tests).
#![allow(clippy::unwrap_used)]

mod common;

use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use chrono::{FixedOffset, SecondsFormat, Utc};
use clock_server::config::TlsFiles;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{HeaderMap, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;

use common::app::{OPS_TOKEN, TestApp, env_with, start};
use common::certs::TestPki;
use common::eventually;
use common::mosquitto::Mosquitto;

const HEALTH_PATH: &str = "/healthz";
const LIMIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------
// Log capture: the audit record and the transport's failure lines are part of the contract.

static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if std::env::var_os("TEST_LOG").is_some() {
            std::io::stderr().write_all(buf)?;
        }
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn init_logs() -> Arc<Mutex<Vec<u8>>> {
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let for_writer = buf.clone();
        let _ = tracing_subscriber::fmt()
            .with_env_filter("info,mqtt5=warn")
            .with_ansi(false)
            .with_writer(move || LogWriter(for_writer.clone()))
            .try_init();
        buf
    })
    .clone()
}

/// Every captured log line that contains `needle` (tests run in parallel: filter by the
/// request id each test chose).
fn log_lines(needle: &str) -> Vec<String> {
    let buf = init_logs();
    let text = String::from_utf8_lossy(&buf.lock().unwrap()).into_owned();
    text.lines()
        .filter(|l| l.contains(needle))
        .map(str::to_owned)
        .collect()
}

fn all_logs() -> String {
    String::from_utf8_lossy(&init_logs().lock().unwrap()).into_owned()
}

// ---------------------------------------------------------------------------------------
// A recording downstream.

#[derive(Debug, Clone)]
struct Recorded {
    /// The client's address: the same for requests that reused a pooled connection.
    peer: SocketAddr,
    method: String,
    path: String,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Recorded {
    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    }
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

struct DownstreamState {
    requests: Mutex<Vec<Recorded>>,
    health: Mutex<Vec<Recorded>>,
    status: AtomicU16,
    health_status: AtomicU16,
    location: Mutex<Option<String>>,
    error_body: Mutex<String>,
    /// While `true`, command requests wait (after being recorded) until it turns `false`.
    hold: watch::Sender<bool>,
    /// The same for health requests.
    hold_health: watch::Sender<bool>,
}

/// An HTTP(S) server on 127.0.0.1:0 that records every request and answers with a
/// configurable status; it can hold requests open until the test releases them.
struct Downstream {
    addr: SocketAddr,
    scheme: &'static str,
    state: Arc<DownstreamState>,
    task: tokio::task::JoinHandle<()>,
}

impl Downstream {
    async fn start() -> Self {
        Self::start_with(None).await
    }

    async fn start_tls(pki: &TestPki) -> Self {
        let config = clock_server::tls::server_config(&TlsFiles {
            cert: pki.server_cert.clone(),
            key: pki.server_key.clone(),
        })
        .unwrap();
        Self::start_with(Some(TlsAcceptor::from(config))).await
    }

    async fn start_with(tls: Option<TlsAcceptor>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(DownstreamState {
            requests: Mutex::default(),
            health: Mutex::default(),
            status: AtomicU16::new(200),
            health_status: AtomicU16::new(200),
            location: Mutex::default(),
            error_body: Mutex::default(),
            hold: watch::channel(false).0,
            hold_health: watch::channel(false).0,
        });
        let scheme = if tls.is_some() { "https" } else { "http" };
        let st = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, peer)) = listener.accept().await else {
                    continue;
                };
                let st = st.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    match tls {
                        None => serve_conn(stream, peer, st).await,
                        Some(acceptor) => {
                            // A client that rejects our certificate fails the handshake here.
                            if let Ok(stream) = acceptor.accept(stream).await {
                                serve_conn(stream, peer, st).await;
                            }
                        }
                    }
                });
            }
        });
        Self {
            addr,
            scheme,
            state,
            task,
        }
    }

    /// `<scheme>://127.0.0.1:<port><path>`
    fn url(&self, path: &str) -> String {
        format!("{}://{}{path}", self.scheme, self.addr)
    }

    fn requests(&self) -> Vec<Recorded> {
        self.state.requests.lock().unwrap().clone()
    }

    fn health_requests(&self) -> Vec<Recorded> {
        self.state.health.lock().unwrap().clone()
    }

    fn answer(&self, status: u16) {
        self.state.status.store(status, Ordering::SeqCst);
    }

    fn answer_health(&self, status: u16) {
        self.state.health_status.store(status, Ordering::SeqCst);
    }

    fn hold(&self, on: bool) {
        self.state.hold.send_replace(on);
    }

    fn hold_health(&self, on: bool) {
        self.state.hold_health.send_replace(on);
    }
}

impl Drop for Downstream {
    fn drop(&mut self) {
        self.hold(false);
        self.hold_health(false);
        self.task.abort();
    }
}

async fn serve_conn<S>(stream: S, peer: SocketAddr, state: Arc<DownstreamState>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let service = hyper::service::service_fn(move |req| respond(state.clone(), peer, req));
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

async fn respond(
    state: Arc<DownstreamState>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes().to_vec())
        .unwrap_or_default();
    let recorded = Recorded {
        peer,
        method: parts.method.to_string(),
        path: parts
            .uri
            .path_and_query()
            .map_or_else(String::new, |p| p.as_str().to_owned()),
        headers: parts.headers,
        body,
    };
    let recorded_authorization = recorded.header("authorization");
    let is_health = parts.uri.path().ends_with(HEALTH_PATH);
    let (log, hold, status) = if is_health {
        (&state.health, &state.hold_health, &state.health_status)
    } else {
        (&state.requests, &state.hold, &state.status)
    };
    log.lock().unwrap().push(recorded);
    let mut held = hold.subscribe();
    let _ = held.wait_for(|on| !*on).await;
    let status = StatusCode::from_u16(status.load(Ordering::SeqCst)).unwrap();
    let mut response = Response::builder().status(status);
    if let Some(location) = state.location.lock().unwrap().clone() {
        response = response.header("location", location);
    }
    let body = if status.is_success() {
        "{}".to_owned()
    } else {
        // `{authorization}` echoes the request's header, as some error pages do.
        let echoed = recorded_authorization.unwrap_or_default();
        state
            .error_body
            .lock()
            .unwrap()
            .replace("{authorization}", &echoed)
    };
    Ok(response
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap())
}

// ---------------------------------------------------------------------------------------
// The application under test.

/// The common harness with only the REST sender, plain http:// allowed downstream and an
/// unauthenticated `/ready`; `overrides` on top (an empty value unsets).
async fn spawn_app(overrides: &[(&str, &str)]) -> TestApp {
    init_logs();
    let mut env = env_with(&[
        ("ENABLED_SENDERS", "rest"),
        ("CLOCK_REST_BASE_URL", ""),
        ("ALLOW_INSECURE_DOWNSTREAM_HTTP", "true"),
        ("READINESS_REQUIRE_AUTH", "false"),
    ]);
    for (k, v) in overrides {
        env.insert((*k).to_owned(), (*v).to_owned());
    }
    start(&env, None).await.unwrap()
}

/// One of the three commands, as sent to the API and as the downstream must see it.
struct Case {
    api_method: reqwest::Method,
    api_path: &'static str,
    api_body: Value,
    downstream_method: &'static str,
    downstream_suffix: &'static str,
    downstream_body: Value,
    result: &'static str,
    mqtt_type: &'static str,
}

/// An alarm tomorrow at second precision with a +02:00 offset (kept as given).
fn alarm_time() -> String {
    (Utc::now() + chrono::Duration::days(1))
        .with_timezone(&FixedOffset::east_opt(2 * 3600).unwrap())
        .to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn alarm(device: &str) -> Case {
    let t = alarm_time();
    Case {
        api_method: reqwest::Method::POST,
        api_path: "/commands/alarms",
        api_body: json!({"deviceId": device, "alarmTime": t, "label": "wake up"}),
        downstream_method: "POST",
        downstream_suffix: "alarms",
        downstream_body: json!({"alarmTime": t, "label": "wake up"}),
        result: "scheduled",
        mqtt_type: "set_alarm",
    }
}

fn message(device: &str) -> Case {
    Case {
        api_method: reqwest::Method::POST,
        api_path: "/commands/messages",
        api_body: json!({"deviceId": device, "message": "tea is ready", "durationSeconds": 30}),
        downstream_method: "POST",
        downstream_suffix: "messages",
        downstream_body: json!({"message": "tea is ready", "durationSeconds": 30}),
        result: "sent",
        mqtt_type: "display_message",
    }
}

fn brightness(device: &str) -> Case {
    Case {
        api_method: reqwest::Method::PUT,
        api_path: "/commands/brightness",
        api_body: json!({"deviceId": device, "level": 55}),
        downstream_method: "PUT",
        downstream_suffix: "brightness",
        downstream_body: json!({"level": 55}),
        result: "updated",
        mqtt_type: "set_brightness",
    }
}

/// What these tests ask of the application, besides the common harness.
impl TestApp {
    /// Sends `case` with the caller's `X-Request-Id`; returns the status and JSON body.
    async fn send(&self, case: &Case, request_id: &str) -> (StatusCode, Value) {
        let response = self
            .client
            .request(case.api_method.clone(), self.url(case.api_path))
            .bearer_auth(OPS_TOKEN)
            .header("x-request-id", request_id)
            .header("content-type", "application/json")
            .body(case.api_body.to_string())
            .send()
            .await
            .unwrap();
        let status = StatusCode::from_u16(response.status().as_u16()).unwrap();
        let body = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
        (status, body)
    }

    async fn ready_status(&self) -> StatusCode {
        let response = self.client.get(self.url("/ready")).send().await.unwrap();
        StatusCode::from_u16(response.status().as_u16()).unwrap()
    }

    async fn wait_until(&self, want: StatusCode) {
        eventually(LIMIT, &format!("/ready to answer {want}"), || async {
            (self.ready_status().await == want).then_some(())
        })
        .await;
    }
}

/// A fresh request id per test, so log lines can be told apart.
fn request_id(test: &str) -> String {
    format!("{test}-{}", uuid::Uuid::now_v7().simple())
}

/// A 502 with no details, only the id of the failed command (SPEC 7.2).
fn assert_dispatch_failed(status: StatusCode, body: &Value) {
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert_eq!(body["error"], "command dispatch failed", "{body}");
    assert!(
        body["commandId"].as_str().is_some_and(|id| id.len() == 36),
        "{body}"
    );
    assert_eq!(body.as_object().map(|o| o.len()), Some(2), "{body}");
}

/// The audit record of a request names the transports that failed.
fn assert_audit_failed(request_id: &str, failed: &str) {
    let lines = log_lines(request_id);
    let audit: Vec<_> = lines
        .iter()
        .filter(|l| l.contains("command dispatch failed") && l.contains("audit"))
        .collect();
    assert_eq!(audit.len(), 1, "one audit record expected in {lines:#?}");
    assert!(audit[0].contains("result=\"failed\"") || audit[0].contains("result=failed"));
    assert!(
        audit[0].contains(&format!("failed_transports={failed} ")),
        "audit record should name {failed}: {}",
        audit[0]
    );
}

// ---------------------------------------------------------------------------------------
// SPEC 4.2: the request mapping.

async fn assert_exact_request(case: Case) {
    let downstream = Downstream::start().await;
    // A base with a path and a trailing slash: the slash is dropped, the path kept.
    let base = downstream.url("/api/v1/");
    let app = spawn_app(&[
        ("CLOCK_REST_BASE_URL", &base),
        ("CLOCK_REST_TOKEN", "downstream-secret"),
    ])
    .await;
    let rid = request_id("exact");

    let (status, body) = app.send(&case, &rid).await;

    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["result"], case.result);
    let command_id = body["commandId"].as_str().unwrap();
    let requests = downstream.requests();
    assert_eq!(requests.len(), 1, "{requests:#?}");
    let r = &requests[0];
    assert_eq!(r.method, case.downstream_method);
    assert_eq!(
        r.path,
        format!("/api/v1/clocks/clock-1/{}", case.downstream_suffix)
    );
    assert_eq!(r.json(), case.downstream_body);
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(
        r.header("authorization").as_deref(),
        Some("Bearer downstream-secret")
    );
    assert_eq!(r.header("x-request-id").as_deref(), Some(rid.as_str()));
    assert_eq!(r.header("idempotency-key").as_deref(), Some(command_id));
}

#[tokio::test]
async fn an_alarm_becomes_a_post_to_the_alarms_path_with_the_spec_body_and_headers() {
    assert_exact_request(alarm("clock-1")).await;
}

#[tokio::test]
async fn a_message_becomes_a_post_to_the_messages_path_with_the_spec_body_and_headers() {
    assert_exact_request(message("clock-1")).await;
}

#[tokio::test]
async fn a_brightness_change_becomes_a_put_to_the_brightness_path_with_the_spec_body_and_headers() {
    assert_exact_request(brightness("clock-1")).await;
}

#[tokio::test]
async fn without_a_downstream_token_no_authorization_header_is_sent() {
    let downstream = Downstream::start().await;
    let base = downstream.url("");
    let app = spawn_app(&[("CLOCK_REST_BASE_URL", &base)]).await;

    let (status, body) = app
        .send(&brightness("Clock_2-b"), &request_id("no-token"))
        .await;

    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let r = &downstream.requests()[0];
    assert_eq!(r.path, "/clocks/Clock_2-b/brightness");
    assert_eq!(r.header("authorization"), None);
}

#[tokio::test]
async fn consecutive_commands_reuse_one_pooled_connection() {
    let downstream = Downstream::start().await;
    let base = downstream.url("");
    let app = spawn_app(&[("CLOCK_REST_BASE_URL", &base)]).await;

    for case in [alarm("clock-1"), message("clock-1"), brightness("clock-1")] {
        let (status, body) = app.send(&case, &request_id("pool")).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    }

    let peers: Vec<_> = downstream.requests().iter().map(|r| r.peer).collect();
    assert_eq!(peers.len(), 3);
    assert!(
        peers.iter().all(|p| *p == peers[0]),
        "one connection expected: {peers:?}"
    );
}

// ---------------------------------------------------------------------------------------
// SPEC 4.2: failures are 502.

#[tokio::test]
async fn a_downstream_500_gives_502_and_is_logged_with_its_status_and_at_most_1_kib_of_body() {
    let downstream = Downstream::start().await;
    downstream.answer(500);
    *downstream.state.error_body.lock().unwrap() = "E".repeat(3000);
    let base = downstream.url("/");
    let token = format!("tok-{}", uuid::Uuid::now_v7().simple());
    let app = spawn_app(&[("CLOCK_REST_BASE_URL", &base), ("CLOCK_REST_TOKEN", &token)]).await;
    let rid = request_id("http500");

    let (status, body) = app.send(&message("clock-1"), &rid).await;

    assert_dispatch_failed(status, &body);
    assert_eq!(downstream.requests().len(), 1);
    let lines = log_lines(&rid);
    let refused: Vec<_> = lines
        .iter()
        .filter(|l| l.contains("downstream refused the command"))
        .collect();
    assert_eq!(refused.len(), 1, "{lines:#?}");
    assert!(refused[0].contains("status=500"), "{}", refused[0]);
    assert!(refused[0].contains(&"E".repeat(1024)), "{}", refused[0]);
    assert!(!refused[0].contains(&"E".repeat(1025)), "{}", refused[0]);
    assert_audit_failed(&rid, "rest");
    assert!(!all_logs().contains(&token), "the downstream token leaked");
}

#[tokio::test]
async fn secrets_a_downstream_echoes_in_its_error_body_are_redacted_before_the_1_kib_cut() {
    let unique = uuid::Uuid::now_v7().simple().to_string();
    let token = format!("rest-token-{unique}");
    let api_token = format!("api-token-{unique}");
    let mqtt_password = format!("mqtt-password-{unique}");
    let downstream = Downstream::start().await;
    downstream.answer(500);
    // The API token and MQTT password first; then padding so that the echoed
    // `Authorization: Bearer <token>` has the token's first 5 bytes inside the first KiB.
    let head = format!("api={api_token} mqtt={mqtt_password} ");
    let pad = "p".repeat(1024 - head.len() - "Bearer ".len() - 5);
    *downstream.state.error_body.lock().unwrap() = format!("{head}{pad}{{authorization}} end");
    let base = downstream.url("/");
    let credentials = format!("ops|{OPS_TOKEN}|*;echo|{api_token}|clock-*");
    let app = spawn_app(&[
        ("CLOCK_REST_BASE_URL", &base),
        ("CLOCK_REST_TOKEN", &token),
        ("API_AUTH_CREDENTIALS", &credentials),
        ("MQTT_PASSWORD", &mqtt_password),
    ])
    .await;
    let rid = request_id("echo500");

    let (status, body) = app.send(&message("clock-1"), &rid).await;

    assert_dispatch_failed(status, &body);
    assert_eq!(
        downstream.requests()[0].header("authorization"),
        Some(format!("Bearer {token}")),
        "the downstream must have had the token to echo"
    );
    let lines = log_lines(&rid);
    let refused: Vec<_> = lines
        .iter()
        .filter(|l| l.contains("downstream refused the command"))
        .collect();
    assert_eq!(refused.len(), 1, "{lines:#?}");
    let line = refused[0];
    assert!(line.contains("api=<redacted> mqtt=<redacted> pp"), "{line}");
    assert!(
        !line.contains(&format!("Bearer {}", &token[..5])),
        "part of the token was logged: {line}"
    );
    let logs = all_logs();
    for secret in [&token, &api_token, &mqtt_password] {
        assert!(!logs.contains(secret.as_str()), "{secret} leaked: {line}");
    }
}

#[tokio::test]
async fn a_downstream_redirect_gives_502_and_its_target_is_never_contacted() {
    let target = Downstream::start().await;
    let downstream = Downstream::start().await;
    downstream.answer(302);
    *downstream.state.location.lock().unwrap() = Some(target.url("/clocks/clock-1/alarms"));
    let base = downstream.url("");
    let app = spawn_app(&[
        ("CLOCK_REST_BASE_URL", &base),
        ("CLOCK_REST_TOKEN", "downstream-secret"),
    ])
    .await;
    let rid = request_id("redirect");

    let (status, body) = app.send(&alarm("clock-1"), &rid).await;

    assert_dispatch_failed(status, &body);
    assert_eq!(downstream.requests().len(), 1);
    assert_eq!(target.requests().len(), 0, "the redirect was followed");
    assert_audit_failed(&rid, "rest");
}

#[tokio::test]
async fn a_downstream_slower_than_the_rest_timeout_gives_502() {
    let downstream = Downstream::start().await;
    // Held until the downstream is dropped: far longer than the 300 ms timeout.
    downstream.hold(true);
    let base = downstream.url("");
    let app = spawn_app(&[
        ("CLOCK_REST_BASE_URL", &base),
        ("CLOCK_REST_TIMEOUT_MS", "300"),
    ])
    .await;
    let rid = request_id("timeout");

    let (status, body) = app.send(&brightness("clock-1"), &rid).await;

    assert_dispatch_failed(status, &body);
    assert_eq!(downstream.requests().len(), 1);
    assert_audit_failed(&rid, "rest");
    assert!(
        log_lines(&rid).iter().any(|l| l.contains("timed out")),
        "{:#?}",
        log_lines(&rid)
    );
}

#[tokio::test]
async fn a_refused_connection_gives_502() {
    let base = format!("http://127.0.0.1:{}/", common::free_port());
    let app = spawn_app(&[("CLOCK_REST_BASE_URL", &base)]).await;
    let rid = request_id("refused");

    let (status, body) = app.send(&alarm("clock-1"), &rid).await;

    assert_dispatch_failed(status, &body);
    assert_audit_failed(&rid, "rest");
}

// ---------------------------------------------------------------------------------------
// HTTPS downstream.

#[tokio::test]
async fn an_https_downstream_signed_by_the_clock_rest_ca_file_is_trusted() {
    let pki = TestPki::new();
    let downstream = Downstream::start_tls(&pki).await;
    let base = downstream.url("/api");
    let ca = pki.ca_cert.to_str().unwrap();
    let app = spawn_app(&[
        ("CLOCK_REST_BASE_URL", &base),
        ("ALLOW_INSECURE_DOWNSTREAM_HTTP", "false"),
        ("CLOCK_REST_CA_FILE", ca),
        ("CLOCK_REST_TOKEN", "downstream-secret"),
    ])
    .await;

    let (status, body) = app.send(&message("clock-1"), &request_id("https-ok")).await;

    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let requests = downstream.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].path, "/api/clocks/clock-1/messages");
    assert_eq!(
        requests[0].header("authorization").as_deref(),
        Some("Bearer downstream-secret")
    );
}

#[tokio::test]
async fn an_https_downstream_signed_by_an_untrusted_ca_is_rejected() {
    let pki = TestPki::new();
    let downstream = Downstream::start_tls(&pki).await;
    let base = downstream.url("/api");
    let app = spawn_app(&[
        ("CLOCK_REST_BASE_URL", &base),
        ("ALLOW_INSECURE_DOWNSTREAM_HTTP", "false"),
        ("CLOCK_REST_TOKEN", "downstream-secret"),
    ])
    .await;
    let rid = request_id("https-untrusted");

    let (status, body) = app.send(&message("clock-1"), &rid).await;

    assert_dispatch_failed(status, &body);
    assert_eq!(
        downstream.requests().len(),
        0,
        "no request may reach an untrusted server"
    );
    assert_audit_failed(&rid, "rest");
}

// ---------------------------------------------------------------------------------------
// Readiness.

#[tokio::test]
async fn a_health_path_answering_200_makes_the_server_ready_and_readiness_follows_it() {
    let downstream = Downstream::start().await;
    let base = downstream.url("/api/");
    let app = spawn_app(&[
        ("CLOCK_REST_BASE_URL", &base),
        ("CLOCK_REST_TOKEN", "downstream-secret"),
        ("CLOCK_REST_HEALTH_PATH", HEALTH_PATH),
        ("CLOCK_REST_HEALTH_INTERVAL_MS", "100"),
    ])
    .await;

    app.wait_until(StatusCode::OK).await;
    let polls = downstream.health_requests();
    assert_eq!(polls[0].method, "GET");
    assert_eq!(polls[0].path, "/api/healthz");
    assert_eq!(
        polls[0].header("authorization").as_deref(),
        Some("Bearer downstream-secret")
    );

    downstream.answer_health(503);
    app.wait_until(StatusCode::SERVICE_UNAVAILABLE).await;
    downstream.answer_health(204);
    app.wait_until(StatusCode::OK).await;
}

#[tokio::test]
async fn a_health_path_answering_503_keeps_the_server_not_ready() {
    let downstream = Downstream::start().await;
    downstream.answer_health(503);
    let base = downstream.url("");
    let app = spawn_app(&[
        ("CLOCK_REST_BASE_URL", &base),
        ("CLOCK_REST_HEALTH_PATH", HEALTH_PATH),
        ("CLOCK_REST_HEALTH_INTERVAL_MS", "100"),
    ])
    .await;

    // A second poll starts only after the first has finished, so its answer is in.
    eventually(LIMIT, "two health polls", || async {
        (downstream.health_requests().len() >= 2).then_some(())
    })
    .await;
    assert_eq!(app.ready_status().await, StatusCode::SERVICE_UNAVAILABLE);
    let response = app.client.get(app.url("/ready")).send().await.unwrap();
    let body: Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    assert_eq!(body, json!({"status": "not_ready"}));
}

#[tokio::test]
async fn without_a_health_path_the_rest_transport_is_ready_at_once() {
    let downstream = Downstream::start().await;
    let base = downstream.url("");
    let app = spawn_app(&[("CLOCK_REST_BASE_URL", &base)]).await;

    assert_eq!(app.ready_status().await, StatusCode::OK);
    assert_eq!(downstream.health_requests().len(), 0);
}

#[tokio::test]
async fn a_health_path_that_never_answers_does_not_stall_the_readiness_probe() {
    let downstream = Downstream::start().await;
    downstream.hold_health(true);
    let base = downstream.url("");
    let app = spawn_app(&[
        ("CLOCK_REST_BASE_URL", &base),
        ("CLOCK_REST_HEALTH_PATH", HEALTH_PATH),
        ("CLOCK_REST_HEALTH_INTERVAL_MS", "100"),
        ("CLOCK_REST_TIMEOUT_MS", "60000"),
    ])
    .await;
    eventually(LIMIT, "the first health poll", || async {
        (!downstream.health_requests().is_empty()).then_some(())
    })
    .await;

    // The poll hangs for a minute; the probe must answer from the last known state.
    let probe = tokio::time::timeout(Duration::from_secs(2), app.ready_status()).await;
    assert_eq!(probe.ok(), Some(StatusCode::SERVICE_UNAVAILABLE));
}

// ---------------------------------------------------------------------------------------
// SPEC 4.3: MQTT and REST together.

/// Subscribes to everything under the default prefix; returns (topic, payload) pairs.
async fn subscribe(
    broker: &Mosquitto,
) -> (mqtt5::MqttClient, mpsc::UnboundedReceiver<(String, Value)>) {
    let client = mqtt5::MqttClient::new(format!("rest-test-sub-{}", uuid::Uuid::now_v7().simple()));
    client.connect(&broker.url()).await.unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    client
        .subscribe("clocks/commands/#", move |m: mqtt5::Message| {
            let payload = serde_json::from_slice(&m.payload).unwrap_or(Value::Null);
            let _ = tx.send((m.topic.clone(), payload));
        })
        .await
        .unwrap();
    (client, rx)
}

async fn next_mqtt(rx: &mut mpsc::UnboundedReceiver<(String, Value)>) -> (String, Value) {
    tokio::time::timeout(LIMIT, rx.recv())
        .await
        .expect("no MQTT message within the limit")
        .unwrap()
}

async fn spawn_fanout_app(
    broker: &Mosquitto,
    downstream: &Downstream,
    senders: &str,
    extra: &[(&str, &str)],
) -> TestApp {
    let broker_url = broker.url();
    let base = downstream.url("/api");
    let mut vars: Vec<(&str, &str)> = vec![
        ("ENABLED_SENDERS", senders),
        ("MQTT_BROKER_URL", &broker_url),
        ("ALLOW_INSECURE_MQTT", "true"),
        ("CLOCK_REST_BASE_URL", &base),
    ];
    vars.extend_from_slice(extra);
    let app = spawn_app(&vars).await;
    app.wait_until(StatusCode::OK).await;
    app
}

#[tokio::test]
async fn with_mqtt_and_rest_enabled_both_receive_every_command() {
    let broker = Mosquitto::start_plain();
    let downstream = Downstream::start().await;
    let (_sub, mut rx) = subscribe(&broker).await;
    let app = spawn_fanout_app(&broker, &downstream, "mqtt,rest", &[]).await;

    for (i, case) in [alarm("clock-1"), message("clock-1"), brightness("clock-1")]
        .into_iter()
        .enumerate()
    {
        let (status, body) = app.send(&case, &request_id("both")).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        let command_id = body["commandId"].as_str().unwrap();

        let (topic, payload) = next_mqtt(&mut rx).await;
        assert_eq!(topic, format!("clocks/commands/clock-1/{}", case.mqtt_type));
        assert_eq!(payload["commandId"], command_id);
        assert_eq!(payload["type"], case.mqtt_type);

        let requests = downstream.requests();
        assert_eq!(requests.len(), i + 1);
        let r = &requests[i];
        assert_eq!(r.method, case.downstream_method);
        assert_eq!(
            r.path,
            format!("/api/clocks/clock-1/{}", case.downstream_suffix)
        );
        assert_eq!(r.json(), case.downstream_body);
        assert_eq!(r.header("idempotency-key").as_deref(), Some(command_id));
    }
}

#[tokio::test]
async fn a_slow_rest_call_does_not_delay_the_mqtt_publish() {
    let broker = Mosquitto::start_plain();
    let downstream = Downstream::start().await;
    let (_sub, mut rx) = subscribe(&broker).await;
    // REST listed first: a fan-out that sent one transport after the other would wait
    // for the held REST call before publishing, and the MQTT message would never come.
    // The REST timeout is far beyond the wait for the MQTT message, so only a concurrent
    // send can pass.
    let app = spawn_fanout_app(
        &broker,
        &downstream,
        "rest,mqtt",
        &[("CLOCK_REST_TIMEOUT_MS", "60000")],
    )
    .await;
    downstream.hold(true);

    let app = Arc::new(app);
    let caller = {
        let app = app.clone();
        tokio::spawn(async move { app.send(&message("clock-1"), &request_id("slow")).await })
    };

    // The MQTT message arrives while the REST call is still held open...
    let (topic, _) = next_mqtt(&mut rx).await;
    assert_eq!(topic, "clocks/commands/clock-1/display_message");
    // (The REST request may reach the downstream just after the MQTT message: both run
    // at once.)
    eventually(LIMIT, "the REST call to arrive", || async {
        (downstream.requests().len() == 1).then_some(())
    })
    .await;
    assert!(
        !caller.is_finished(),
        "the caller must wait for REST as well"
    );

    // ...and only once REST answers does the caller get its 202.
    downstream.hold(false);
    let (status, body) = caller.await.unwrap();
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
}

#[tokio::test]
async fn a_failing_rest_downstream_gives_502_and_the_audit_names_rest() {
    let broker = Mosquitto::start_plain();
    let downstream = Downstream::start().await;
    let (_sub, mut rx) = subscribe(&broker).await;
    let app = spawn_fanout_app(&broker, &downstream, "mqtt,rest", &[]).await;
    downstream.answer(500);
    let rid = request_id("fan-rest-fails");

    let (status, body) = app.send(&brightness("clock-1"), &rid).await;

    assert_dispatch_failed(status, &body);
    // Sent concurrently: MQTT had accepted it before REST's failure was known.
    let (topic, _) = next_mqtt(&mut rx).await;
    assert_eq!(topic, "clocks/commands/clock-1/set_brightness");
    assert_audit_failed(&rid, "rest");
}

#[tokio::test]
async fn an_unreachable_broker_gives_502_and_the_audit_names_mqtt() {
    let mut broker = Mosquitto::start_plain();
    let downstream = Downstream::start().await;
    let app = spawn_fanout_app(
        &broker,
        &downstream,
        "mqtt,rest",
        &[("MQTT_PUBLISH_TIMEOUT_MS", "1000")],
    )
    .await;
    broker.stop();
    app.wait_until(StatusCode::SERVICE_UNAVAILABLE).await;
    let rid = request_id("fan-mqtt-fails");

    let (status, body) = app.send(&alarm("clock-1"), &rid).await;

    assert_dispatch_failed(status, &body);
    assert_eq!(downstream.requests().len(), 1, "REST still got it");
    assert_audit_failed(&rid, "mqtt");
}

// ---------------------------------------------------------------------------------------
// A caller who hangs up mid-dispatch (SPEC 2.1 step 12, 7.6, 10).

#[tokio::test]
async fn a_caller_hanging_up_mid_dispatch_still_gets_its_command_recorded_audited_and_replayed() {
    use tokio::io::AsyncWriteExt;

    let downstream = Downstream::start().await;
    let base = downstream.url("");
    let app = spawn_app(&[
        ("CLOCK_REST_BASE_URL", &base),
        ("CLOCK_REST_TIMEOUT_MS", "30000"),
    ])
    .await;
    downstream.hold(true);
    let rid = request_id("hang-up");
    let body = message("clock-1").api_body.to_string();

    // A real socket: the request is written whole, then the caller closes the connection
    // while the downstream still holds the command.
    let mut socket = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let request = format!(
        "POST /commands/messages HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {OPS_TOKEN}\r\n\
         Content-Type: application/json\r\nIdempotency-Key: hang-up-1\r\nX-Request-Id: {rid}\r\n\
         Content-Length: {}\r\n\r\n{body}",
        app.addr,
        body.len()
    );
    socket.write_all(request.as_bytes()).await.unwrap();
    eventually(LIMIT, "the command to reach the downstream", || async {
        (downstream.requests().len() == 1).then_some(())
    })
    .await;
    drop(socket);
    // The caller is gone (the server sees the closed connection within this), and only
    // then does the downstream answer.
    common::observe_for(Duration::from_millis(300)).await;
    downstream.hold(false);

    // The command was on its way: its audit record is written, and a retry with the same
    // key gets the remembered answer (once the first dispatch has ended), never a second
    // delivery.
    let (status, body, replayed) = eventually(LIMIT, "the retry's answer", || async {
        let response = app
            .client
            .post(app.url("/commands/messages"))
            .bearer_auth(OPS_TOKEN)
            .header("idempotency-key", "hang-up-1")
            .header("content-type", "application/json")
            .body(message("clock-1").api_body.to_string())
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let replayed = response.headers().get("idempotent-replayed").cloned();
        let body: Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
        (status != 409).then_some((status, body, replayed))
    })
    .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(replayed.unwrap(), "true");
    assert_eq!(downstream.requests().len(), 1, "delivered once");
    let id = body["commandId"].as_str().unwrap();
    let record: Value = serde_json::from_slice(
        &app.client
            .get(app.url(&format!("/commands/{id}")))
            .bearer_auth(OPS_TOKEN)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(record["status"], "sent", "{record}");
    let audit: Vec<_> = log_lines(&rid)
        .into_iter()
        .filter(|l| l.contains("command dispatched") && l.contains("audit"))
        .collect();
    assert_eq!(audit.len(), 1, "{audit:#?}");
}
