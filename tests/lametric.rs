//! The `lametric` profile end to end (SPEC 8.3): the real application and a LaMetric
//! stand-in, an HTTPS server with a self-signed certificate made at test time that speaks
//! the device's documented API (`POST`/`DELETE /api/v2/device/notifications`,
//! `PUT /api/v2/device/display`, HTTP Basic `dev:<api key>`). Each test checks what a
//! person with the clock relies on: the exact request, the command's end, the pin, and the
//! key never shown.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::app::{OPS_TOKEN, TestApp as App, env_with, start};
use common::eventually;
use common::mosquitto::Mosquitto;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

const API_KEY: &str = "s3cr3t-lametric-key";

/// One request the stand-in received.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    authorization: Option<String>,
    body: String,
}

#[derive(Default)]
struct State {
    seen: Mutex<Vec<Seen>>,
    /// 0: answer as the clock does; else this status with a LaMetric error body that
    /// echoes the request's Authorization header.
    fail_with: AtomicU16,
}

/// A LaMetric TIME stand-in on 127.0.0.1 with a self-signed certificate.
struct Clock {
    addr: SocketAddr,
    state: Arc<State>,
    /// SHA-256 of the certificate's DER, hex with colons (as `openssl -fingerprint`).
    fingerprint: String,
    task: tokio::task::JoinHandle<()>,
}

impl Clock {
    async fn start() -> Self {
        use sha2::Digest;
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["lametric.local".to_owned()]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        let der = cert.der().to_vec();
        let digest = sha2::Sha256::digest(&der);
        let fingerprint = digest
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":");
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![rustls::pki_types::CertificateDer::from(der)],
            rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        )
        .unwrap();
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State::default());
        let st = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, st) = (acceptor.clone(), st.clone());
                tokio::spawn(async move {
                    // A client that refuses the certificate ends here.
                    let Ok(stream) = acceptor.accept(stream).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |req| answer(st.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            addr,
            state,
            fingerprint,
            task,
        }
    }

    fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    fn fail_with(&self, status: u16) {
        self.state.fail_with.store(status, Ordering::SeqCst);
    }
}

impl Drop for Clock {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes().to_vec())
        .unwrap_or_default();
    let authorization = parts
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let seen = Seen {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        authorization: authorization.clone(),
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    let n = {
        let mut all = state.seen.lock().unwrap();
        all.push(seen.clone());
        all.len()
    };
    let respond = |status: StatusCode, body: String| {
        Ok(Response::builder()
            .status(status)
            .header("content-type", "application/json;charset=UTF8")
            .body(Full::new(Bytes::from(body)))
            .unwrap())
    };
    let fail = state.fail_with.load(Ordering::SeqCst);
    if authorization.as_deref() != Some(&format!("Basic {}", basic(API_KEY))) {
        return respond(
            StatusCode::UNAUTHORIZED,
            json!({"errors":[{"message":"Authorization is required"}]}).to_string(),
        );
    }
    if fail != 0 {
        // Echoes what it was sent, key included, as a careless device might.
        let echoed = format!(
            "cannot parse request from {}",
            authorization.unwrap_or_default()
        );
        return respond(
            StatusCode::from_u16(fail).unwrap(),
            json!({"errors":[{"message":echoed,"dev":"details"}]}).to_string(),
        );
    }
    match (seen.method.as_str(), seen.path.as_str()) {
        ("POST", "/api/v2/device/notifications") => respond(
            StatusCode::OK,
            json!({"success":{"id":format!("{n}")}}).to_string(),
        ),
        ("PUT", "/api/v2/device/display") => respond(
            StatusCode::OK,
            json!({"success":{"data":serde_json::from_slice::<Value>(&body).unwrap_or_default(),"path":"/api/v2/device/display"}}).to_string(),
        ),
        ("DELETE", p) if p.starts_with("/api/v2/device/notifications/") => {
            respond(StatusCode::OK, json!({"success":true}).to_string())
        }
        _ => respond(
            StatusCode::NOT_FOUND,
            json!({"errors":[{"message":"Not found"}]}).to_string(),
        ),
    }
}

/// `user:password` as HTTP Basic sends it (the test's own encoder, independent of the
/// server's).
fn basic(key: &str) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let input = format!("dev:{key}");
    let bytes = input.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            out.push(if i <= chunk.len() {
                char::from(T[((n >> (18 - 6 * i)) & 63) as usize])
            } else {
                '='
            });
        }
    }
    out
}

fn devices_file(text: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(text.as_bytes()).unwrap();
    file
}

fn desk(url: &str, pin: &str) -> String {
    format!(
        "[devices.desk]\nprofile = \"lametric\"\nurl = \"{url}\"\napi_key = \"{API_KEY}\"\ncert_sha256 = \"{pin}\"\nalarm_sound = \"alarm3\"\n"
    )
}

async fn spawn(broker: &Mosquitto, devices: &tempfile::NamedTempFile) -> App {
    let mut env: HashMap<String, String> = env_with(&[
        ("ENABLED_SENDERS", "mqtt"),
        ("ALLOW_INSECURE_MQTT", "true"),
        ("READINESS_REQUIRE_AUTH", "false"),
    ]);
    env.insert("MQTT_BROKER_URL".into(), broker.url());
    env.insert("DEVICES_FILE".into(), devices.path().display().to_string());
    match start(&env, None).await {
        Ok(app) => app,
        Err(e) => panic!("the application did not start: {e}"),
    }
}

impl App {
    async fn record(&self, id: &str) -> Value {
        let res = self.get(&format!("/commands/{id}"), Some(OPS_TOKEN)).await;
        assert_eq!(res.status(), 200);
        serde_json::from_str(&res.text().await.unwrap()).unwrap()
    }
}

fn id_of(body: &Value) -> String {
    body["commandId"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_message_is_posted_with_the_key_succeeds_and_is_dismissed_after_its_duration() {
    let broker = Mosquitto::start_plain();
    let clock = Clock::start().await;
    let devices = devices_file(&desk(&clock.url(), &clock.fingerprint.to_lowercase()));
    let app = spawn(&broker, &devices).await;

    let (status, body) = app
        .call(
            reqwest::Method::POST,
            "/commands/messages",
            &json!({"deviceId": "desk", "message": "Tea \"now\"", "durationSeconds": 1}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        body["status"], "succeeded",
        "the clock's answer ends the command"
    );
    let record = app.record(&id_of(&body)).await;
    assert_eq!(record["status"], "succeeded");
    assert_eq!(record["deviceAcks"], true);
    let first = clock.seen().remove(0);
    assert_eq!(
        (first.method.as_str(), first.path.as_str()),
        ("POST", "/api/v2/device/notifications")
    );
    assert_eq!(
        first.body,
        r#"{"priority":"info","icon_type":"none","model":{"cycles":0,"frames":[{"text":"Tea \"now\""}]}}"#
    );
    assert_eq!(
        first.authorization,
        Some(format!("Basic {}", basic(API_KEY)))
    );
    // After durationSeconds, the notification (id 1 from the answer) is dismissed.
    let dismissal = eventually(Duration::from_secs(5), "the dismissal", || async {
        clock.seen().into_iter().find(|s| s.method == "DELETE")
    })
    .await;
    assert_eq!(dismissal.path, "/api/v2/device/notifications/1");

    let (status, body) = app
        .call(
            reqwest::Method::PUT,
            "/commands/brightness",
            &json!({"deviceId": "desk", "level": 40}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["status"], "succeeded");
    let put = clock
        .seen()
        .into_iter()
        .find(|s| s.method == "PUT")
        .unwrap();
    assert_eq!(put.path, "/api/v2/device/display");
    assert_eq!(put.body, r#"{"brightness":40,"brightness_mode":"manual"}"#);
    // Nothing went to MQTT: the clock is reached directly.
    app.stop().await;
}

#[tokio::test]
async fn a_4xx_fails_the_command_with_the_clocks_message_and_never_shows_the_key() {
    let broker = Mosquitto::start_plain();
    let clock = Clock::start().await;
    let devices = devices_file(&desk(&clock.url(), &clock.fingerprint));
    let app = spawn(&broker, &devices).await;
    clock.fail_with(400);
    let (status, body) = app
        .call(
            reqwest::Method::POST,
            "/commands/messages",
            &json!({"deviceId": "desk", "message": "hi", "durationSeconds": 5}),
        )
        .await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"], "command dispatch failed");
    let record = app.record(&id_of(&body)).await;
    assert_eq!(record["status"], "failed");
    assert_eq!(record["statusReason"]["code"], "device_rejected");
    let message = record["statusReason"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("cannot parse request from Basic "),
        "{message}"
    );
    let encoded = basic(API_KEY);
    for shown in [body.to_string(), record.to_string()] {
        assert!(
            !shown.contains(API_KEY) && !shown.contains(&encoded),
            "{shown}"
        );
    }
    assert_eq!(clock.seen().len(), 1, "a 4xx is not retried");
    app.stop().await;
}

#[tokio::test]
async fn a_clock_whose_certificate_is_not_the_pinned_one_gets_nothing() {
    let broker = Mosquitto::start_plain();
    let clock = Clock::start().await;
    let other = Clock::start().await;
    // The pin of another clock's certificate.
    let devices = devices_file(&desk(&clock.url(), &other.fingerprint));
    let app = spawn(&broker, &devices).await;
    let (status, body) = app
        .call(
            reqwest::Method::PUT,
            "/commands/brightness",
            &json!({"deviceId": "desk", "level": 10}),
        )
        .await;
    assert_eq!(status, 502, "{body}");
    let record = app.record(&id_of(&body)).await;
    assert_eq!(record["statusReason"]["code"], "dispatch_failed");
    assert!(clock.seen().is_empty(), "no request crossed the handshake");
    app.stop().await;
}

#[tokio::test]
async fn a_clock_that_does_not_answer_is_a_failed_dispatch() {
    let broker = Mosquitto::start_plain();
    let port = common::free_port();
    let pin = "00".repeat(32);
    let devices = devices_file(&format!(
        "{}timeout_ms = 500\n",
        desk(&format!("https://127.0.0.1:{port}"), &pin)
    ));
    let app = spawn(&broker, &devices).await;
    let (status, body) = app
        .call(
            reqwest::Method::POST,
            "/commands/messages",
            &json!({"deviceId": "desk", "message": "hi", "durationSeconds": 5}),
        )
        .await;
    assert_eq!(status, 502, "{body}");
    let record = app.record(&id_of(&body)).await;
    assert_eq!(record["status"], "failed");
    assert_eq!(record["statusReason"]["code"], "dispatch_failed");
    app.stop().await;
}
