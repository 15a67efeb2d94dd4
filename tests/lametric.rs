//! The `lametric` profile end to end (SPEC 8.3): the real application and a LaMetric
//! stand-in, an HTTPS server with a self-signed certificate made at test time that speaks
//! the device's documented API (`POST`/`DELETE /api/v2/device/notifications`,
//! `PUT /api/v2/device/display`, `GET /api/v2/device`, HTTP Basic `dev:<api key>`). Each
//! test checks what a person with the clock relies on: the exact request, the command's
//! end, the pin, presence by polling (SPEC 11.1), and the key never shown.
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
use common::process::ServerProcess;
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

    /// The requests of commands (the presence polls, `GET /api/v2/device`, left out).
    fn seen(&self) -> Vec<Seen> {
        self.all_seen()
            .into_iter()
            .filter(|s| s.method != "GET")
            .collect()
    }

    /// Every request, presence polls included.
    fn all_seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    fn polls(&self) -> usize {
        self.all_seen()
            .iter()
            .filter(|s| s.method == "GET" && s.path == "/api/v2/device")
            .count()
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
    // The notification ids the clock gives: 1, 2, … (polls and other requests aside).
    let n = {
        let mut all = state.seen.lock().unwrap();
        all.push(seen.clone());
        all.iter().filter(|s| s.method == "POST").count()
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
        // reference-docs/device-state.rst, abridged.
        ("GET", "/api/v2/device") => respond(
            StatusCode::OK,
            json!({"id":"1","name":"Desk clock","serial_number":"SA150600000100W00BS9",
                "mode":"manual","model":"LM 37X8","os_version":"2.3.0",
                "audio":{"volume":100},"display":{"brightness":67,"brightness_mode":"auto",
                "width":37,"height":8,"type":"mixed"}})
            .to_string(),
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

/// A server with the LaMetric `desk` (played by a stand-in clock) in its devices file,
/// once presence has seen the clock online: the broker, the clock, the devices file (kept
/// while the server runs), the server and `GET /devices/desk`.
async fn online_desk(
    vars: &[(&str, &str)],
) -> (Mosquitto, Clock, tempfile::NamedTempFile, App, Value) {
    let broker = Mosquitto::start_plain();
    let clock = Clock::start().await;
    let devices = devices_file(&desk(&clock.url(), &clock.fingerprint));
    let app = spawn_with(&broker, &devices, vars).await;
    let device = app
        .presence_becomes("desk", "online", Duration::from_secs(10))
        .await;
    (broker, clock, devices, app, device)
}

async fn spawn(broker: &Mosquitto, devices: &tempfile::NamedTempFile) -> App {
    spawn_with(broker, devices, &[]).await
}

async fn spawn_with(
    broker: &Mosquitto,
    devices: &tempfile::NamedTempFile,
    extra: &[(&str, &str)],
) -> App {
    let mut env: HashMap<String, String> = env_with(&[
        ("ENABLED_SENDERS", "mqtt"),
        ("ALLOW_INSECURE_MQTT", "true"),
        ("READINESS_REQUIRE_AUTH", "false"),
    ]);
    for (k, v) in extra {
        env.insert((*k).to_owned(), (*v).to_owned());
    }
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

    async fn device(&self, id: &str) -> Value {
        let res = self.get(&format!("/devices/{id}"), Some(OPS_TOKEN)).await;
        assert_eq!(res.status(), 200);
        serde_json::from_str(&res.text().await.unwrap()).unwrap()
    }

    /// Waits (bounded) until `GET /devices/<id>` says `presence`.
    async fn presence_becomes(&self, id: &str, presence: &str, limit: Duration) -> Value {
        eventually(limit, &format!("{id} to be {presence}"), || async {
            let device = self.device(id).await;
            (device["presence"] == presence).then_some(device)
        })
        .await
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
    let (_broker, clock, _devices, app, _) = online_desk(&[]).await;
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
    // Its polls fail at the handshake: it is offline, and a command waits for it.
    app.presence_becomes("desk", "offline", Duration::from_secs(10))
        .await;
    let (status, body) = app
        .call(
            reqwest::Method::PUT,
            "/commands/brightness",
            &json!({"deviceId": "desk", "level": 10}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["status"], "queued");
    assert!(
        clock.all_seen().is_empty(),
        "no request crossed the handshake"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_clock_that_answers_5xx_while_known_online_is_a_failed_dispatch() {
    let (_broker, clock, _devices, app, _) = online_desk(&[]).await;
    clock.fail_with(500);
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

#[tokio::test]
async fn a_clock_that_never_answered_is_offline_and_a_message_for_it_waits_queued() {
    let broker = Mosquitto::start_plain();
    let port = common::free_port();
    let pin = "00".repeat(32);
    let devices = devices_file(&format!(
        "{}timeout_ms = 500\n",
        desk(&format!("https://127.0.0.1:{port}"), &pin)
    ));
    let app = spawn(&broker, &devices).await;
    let device = app
        .presence_becomes("desk", "offline", Duration::from_secs(10))
        .await;
    assert_eq!(device["lastSeenAt"], Value::Null);
    assert_eq!(device["info"], Value::Null);
    let (status, body) = app
        .call(
            reqwest::Method::POST,
            "/commands/messages",
            &json!({"deviceId": "desk", "message": "hi", "durationSeconds": 5}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["status"], "queued");
    app.stop().await;
}

#[tokio::test]
async fn a_clock_that_answers_its_state_is_online_with_its_name_model_version_and_serial() {
    let (_broker, clock, _devices, app, device) = online_desk(&[]).await;
    assert_eq!(device["profile"], "lametric");
    assert_eq!(device["deviceAcks"], true);
    assert!(device["lastSeenAt"].is_string(), "{device}");
    assert_eq!(
        device["info"],
        json!({"name": "Desk clock", "model": "LM 37X8", "os_version": "2.3.0",
            "serial_number": "SA150600000100W00BS9"})
    );
    let poll = clock
        .all_seen()
        .into_iter()
        .find(|s| s.method == "GET")
        .unwrap();
    assert_eq!(poll.path, "/api/v2/device");
    assert_eq!(
        poll.authorization,
        Some(format!("Basic {}", basic(API_KEY)))
    );
    // The list shows the same, and never the key.
    let res = app.get("/devices", Some(OPS_TOKEN)).await;
    let list = res.text().await.unwrap();
    assert!(
        list.contains(r#""serial_number":"SA150600000100W00BS9""#),
        "{list}"
    );
    assert!(!list.contains(API_KEY) && !list.contains(&basic(API_KEY)));
    app.stop().await;
}

#[tokio::test]
async fn a_clock_that_stops_answering_is_offline_at_the_next_poll_and_gets_what_waited_when_back() {
    let (_broker, clock, _devices, app, _) = online_desk(&[("PRESENCE_POLL_SECS", "5")]).await;
    clock.fail_with(500);
    let device = app
        .presence_becomes("desk", "offline", Duration::from_secs(15))
        .await;
    assert_eq!(
        device["info"]["name"], "Desk clock",
        "the last info known stays"
    );
    let (status, body) = app
        .call(
            reqwest::Method::POST,
            "/commands/messages",
            &json!({"deviceId": "desk", "message": "while away", "durationSeconds": 5}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["status"], "queued");
    assert!(
        clock.seen().is_empty(),
        "nothing is sent to a clock that is away"
    );
    clock.fail_with(0);
    let id = id_of(&body);
    eventually(
        Duration::from_secs(15),
        "the held message delivered",
        || async { (app.record(&id).await["status"] == "succeeded").then_some(()) },
    )
    .await;
    let post = clock.seen().remove(0);
    assert_eq!(post.path, "/api/v2/device/notifications");
    assert!(post.body.contains("while away"), "{}", post.body);
    app.stop().await;
}

#[tokio::test]
async fn a_refused_key_makes_the_clock_offline_and_is_logged_once_naming_the_device_but_not_the_key()
 {
    let broker = Mosquitto::start_plain();
    let clock = Clock::start().await;
    // The clock expects API_KEY; the devices file has another key.
    let wrong = "wrong-lametric-key-123";
    let devices = devices_file(&desk(&clock.url(), &clock.fingerprint).replace(API_KEY, wrong));
    let path = devices.path().display().to_string();
    let url = broker.url();
    let server = ServerProcess::start(&[
        ("REQUIRE_TLS", "false"),
        ("API_AUTH_CREDENTIALS", "ops|ops-secret-token-1|*"),
        ("ENABLED_SENDERS", "mqtt"),
        ("MQTT_BROKER_URL", url.as_str()),
        ("ALLOW_INSECURE_MQTT", "true"),
        ("DEVICES_FILE", path.as_str()),
        ("PRESENCE_POLL_SECS", "5"),
    ])
    .await;
    // Two polls refused: the second logs nothing new.
    eventually(Duration::from_secs(15), "two polls", || async {
        (clock.polls() >= 2).then_some(())
    })
    .await;
    let c = common::app::client(None);
    let device: Value = eventually(Duration::from_secs(10), "desk offline", || async {
        let res = c
            .get(server.url("/devices/desk"))
            .bearer_auth(OPS_TOKEN)
            .send()
            .await
            .ok()?;
        let device: Value = serde_json::from_str(&res.text().await.ok()?).ok()?;
        (device["presence"] == "offline").then_some(device)
    })
    .await;
    assert_eq!(device["info"], Value::Null);
    let logs = server.logs();
    let refusals: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("refuses the API key"))
        .collect();
    assert_eq!(refusals.len(), 1, "{logs}");
    assert!(refusals[0].contains("desk"), "{}", refusals[0]);
    for secret in [wrong.to_owned(), basic(wrong), API_KEY.to_owned()] {
        assert!(!logs.contains(&secret), "{logs}");
    }
}

#[tokio::test]
async fn polling_a_clock_that_stalls_stops_with_every_other_task_on_shutdown() {
    let broker = Mosquitto::start_plain();
    // Accepts the connection and never answers, not even the TLS handshake.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let held = Arc::new(Mutex::new(Vec::new()));
    let keep = held.clone();
    let stall = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            keep.lock().unwrap().push(stream);
        }
    });
    let devices = devices_file(&format!(
        "{}timeout_ms = 60000\n",
        desk(&format!("https://{addr}"), &"00".repeat(32))
    ));
    let app = spawn(&broker, &devices).await;
    eventually(Duration::from_secs(10), "the poll to connect", || async {
        (!held.lock().unwrap().is_empty()).then_some(())
    })
    .await;
    let commands = app.commands.clone();
    let before = commands.running_tasks();
    assert!(before >= 1, "{before} tasks");
    tokio::time::timeout(Duration::from_secs(10), app.stop())
        .await
        .expect("the server stops while a poll waits for its 60 s timeout");
    assert_eq!(commands.running_tasks(), 0);
    stall.abort();
}

#[tokio::test]
async fn an_alarm_for_a_clock_of_a_server_without_mqtt_is_posted_at_its_time() {
    // ENABLED_SENDERS=rest only: the clock is reached directly all the same (SPEC 8.3), and
    // the gateway still holds its alarms.
    let clock = Clock::start().await;
    let devices = devices_file(&desk(&clock.url(), &clock.fingerprint));
    let mut env: HashMap<String, String> = env_with(&[("READINESS_REQUIRE_AUTH", "false")]);
    env.insert("DEVICES_FILE".into(), devices.path().display().to_string());
    let app = start(&env, None).await.unwrap();
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let (status, body) = app
        .call(
            reqwest::Method::POST,
            "/commands/alarms",
            &json!({"deviceId": "desk", "alarmTime": now, "label": "Up"}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["status"], "scheduled");
    let id = id_of(&body);
    eventually(Duration::from_secs(10), "the alarm posted", || async {
        (app.record(&id).await["status"] == "succeeded").then_some(())
    })
    .await;
    let post = clock.seen().remove(0);
    assert_eq!(post.path, "/api/v2/device/notifications");
    assert!(
        post.body.contains(r#""priority":"critical""#),
        "{}",
        post.body
    );
    app.stop().await;
}
