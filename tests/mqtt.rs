//! The MQTT transport end to end (SPEC 4.1): the real application on 127.0.0.1:0, a real
//! Mosquitto on a free port, commands sent through the HTTP API and read back by a
//! subscriber on the broker.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use clock_server::startup::StartupError;
use common::app::{TestApp as App, client, env_with, start};
use common::certs::TestPki;
use common::eventually;
use common::mosquitto::Mosquitto;
use common::subscriber::{Received, Subscriber};
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------
// The application under test
// ---------------------------------------------------------------------------------------

/// `base_env()` with only the MQTT sender, plain `mqtt://` allowed, an unauthenticated
/// `/ready`, a 1 s publish timeout, then `vars`.
fn mqtt_env(broker_url: &str, vars: &[(&str, &str)]) -> HashMap<String, String> {
    let mut env = env_with(&[
        ("ENABLED_SENDERS", "mqtt"),
        ("MQTT_BROKER_URL", broker_url),
        ("ALLOW_INSECURE_MQTT", "true"),
        ("READINESS_REQUIRE_AUTH", "false"),
        ("MQTT_PUBLISH_TIMEOUT_MS", "1000"),
    ]);
    for (k, v) in vars {
        env.insert((*k).to_owned(), (*v).to_owned());
    }
    env
}

/// The application with the real MQTT transport.
async fn build(broker_url: &str, vars: &[(&str, &str)]) -> Result<App, StartupError> {
    start(&mqtt_env(broker_url, vars), None).await
}

async fn spawn(broker_url: &str, vars: &[(&str, &str)]) -> App {
    match build(broker_url, vars).await {
        Ok(app) => app,
        Err(e) => panic!("the application did not start: {e}"),
    }
}

fn in_an_hour() -> String {
    (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339()
}

/// What these tests ask of the application, besides the common harness.
impl App {
    async fn message(&self, device: &str, text: &str) -> (u16, Value) {
        self.call(
            reqwest::Method::POST,
            "/commands/messages",
            &json!({"deviceId": device, "message": text, "durationSeconds": 10}),
        )
        .await
    }

    async fn alarm(&self, device: &str, time: &str, label: &str) -> (u16, Value) {
        self.call(
            reqwest::Method::POST,
            "/commands/alarms",
            &json!({"deviceId": device, "alarmTime": time, "label": label}),
        )
        .await
    }

    async fn brightness(&self, device: &str, level: u8) -> (u16, Value) {
        self.call(
            reqwest::Method::PUT,
            "/commands/brightness",
            &json!({"deviceId": device, "level": level}),
        )
        .await
    }

    async fn status_of(&self, path: &str) -> u16 {
        self.client
            .get(self.url(path))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    async fn wait_until_ready(&self, limit: Duration) {
        eventually(limit, "/ready to say ready", || async {
            (self.status_of("/ready").await == 200).then_some(())
        })
        .await;
    }

    /// Asserts that the server stays not ready (and refuses commands) for `window`: long
    /// enough for several connection attempts of the background reconnect.
    async fn stays_not_ready(&self, window: Duration) {
        let until = Instant::now() + window;
        while Instant::now() < until {
            assert_eq!(self.status_of("/ready").await, 503);
            assert_eq!(self.message("clock-1", "refused").await.0, 502);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn wait_until_not_ready(&self, limit: Duration) {
        eventually(limit, "/ready to say not_ready", || async {
            (self.status_of("/ready").await == 503).then_some(())
        })
        .await;
    }
}

fn command_id(body: &Value) -> String {
    body["commandId"]
        .as_str()
        .unwrap_or_else(|| panic!("no commandId in {body}"))
        .to_owned()
}

// ---------------------------------------------------------------------------------------
// A subscriber on the broker (the `mqtt5` client; `mosquitto_sub` where noted)
// ---------------------------------------------------------------------------------------

// ---------------------------------------------------------------------------------------
// Topics, payloads, QoS, retained
// ---------------------------------------------------------------------------------------

async fn each_command_type_arrives_at_qos(qos: u8) {
    let broker = Mosquitto::start_plain();
    let sub = Subscriber::plain(broker.port).await;
    let qos_text = qos.to_string();
    let app = spawn(&broker.url(), &[("MQTT_QOS", &qos_text)]).await;
    app.wait_until_ready(Duration::from_secs(10)).await;

    let (status, body) = app
        .alarm("clock-1", "2030-01-02T03:04:05.678+02:00", "wake up")
        .await;
    assert_eq!(status, 202, "{body}");
    let id = command_id(&body);
    let got = sub.wait_for(&id).await;
    assert_eq!(got.topic, "clocks/commands/clock-1/set_alarm");
    assert_eq!(
        got.payload,
        json!({"deviceId": "clock-1", "type": "set_alarm", "commandId": id,
               "alarmTime": "2030-01-02T03:04:05+02:00", "label": "wake up"})
    );
    assert_eq!(got.qos, qos);
    assert!(!got.retain);

    let (status, body) = app.message("clock-2", "hello, world").await;
    assert_eq!(status, 202, "{body}");
    let id = command_id(&body);
    let got = sub.wait_for(&id).await;
    assert_eq!(got.topic, "clocks/commands/clock-2/display_message");
    assert_eq!(
        got.payload,
        json!({"deviceId": "clock-2", "type": "display_message", "commandId": id,
               "message": "hello, world", "durationSeconds": 10})
    );
    assert_eq!(got.qos, qos);

    let (status, body) = app.brightness("lamp_3", 42).await;
    assert_eq!(status, 202, "{body}");
    let id = command_id(&body);
    let got = sub.wait_for(&id).await;
    assert_eq!(got.topic, "clocks/commands/lamp_3/set_brightness");
    assert_eq!(
        got.payload,
        json!({"deviceId": "lamp_3", "type": "set_brightness", "commandId": id, "level": 42})
    );
    assert_eq!(got.qos, qos);

    app.stop().await;
}

#[tokio::test]
async fn each_command_type_arrives_on_its_topic_with_its_payload_at_qos_0() {
    each_command_type_arrives_at_qos(0).await;
}

#[tokio::test]
async fn each_command_type_arrives_on_its_topic_with_its_payload_at_qos_1() {
    each_command_type_arrives_at_qos(1).await;
}

#[tokio::test]
async fn each_command_type_arrives_on_its_topic_with_its_payload_at_qos_2() {
    each_command_type_arrives_at_qos(2).await;
}

#[tokio::test]
async fn the_topic_prefix_is_used_without_its_surrounding_spaces_and_slashes() {
    let broker = Mosquitto::start_plain();
    let sub = Subscriber::plain(broker.port).await;
    let app = spawn(&broker.url(), &[("MQTT_TOPIC_PREFIX", " /home/clocks/ ")]).await;
    app.wait_until_ready(Duration::from_secs(10)).await;
    let (status, body) = app.message("clock-1", "hi").await;
    assert_eq!(status, 202);
    let got = sub.wait_for(&command_id(&body)).await;
    assert_eq!(got.topic, "home/clocks/clock-1/display_message");
}

#[tokio::test]
async fn the_retained_flag_is_visible_to_a_subscriber_that_comes_later() {
    let broker = Mosquitto::start_plain();
    let app = spawn(&broker.url(), &[("MQTT_RETAINED", "true")]).await;
    app.wait_until_ready(Duration::from_secs(10)).await;
    let (status, body) = app.message("clock-9", "kept for later").await;
    assert_eq!(status, 202);
    let id = command_id(&body);

    // A different client than the server's, subscribing only now.
    let port = broker.port.to_string();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &port, "-t", "clocks/commands/#"])
            .args(["-C", "1", "-W", "10", "-F", "%r %t %p"])
            .output()
            .expect("run mosquitto_sub (install mosquitto-clients)")
    })
    .await
    .unwrap();
    let line = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let (flags, rest) = line
        .split_once(' ')
        .unwrap_or_else(|| panic!("got {line:?}"));
    let (topic, payload) = rest.split_once(' ').unwrap();
    assert_eq!(flags, "1", "retained flag in {line:?}");
    assert_eq!(topic, "clocks/commands/clock-9/display_message");
    let payload: Value = serde_json::from_str(payload).unwrap();
    assert_eq!(payload["commandId"], id.as_str());
    assert_eq!(payload["message"], "kept for later");
}

// ---------------------------------------------------------------------------------------
// Pipelining
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn two_hundred_concurrent_requests_at_qos_1_all_get_202_and_all_arrive() {
    let broker = Mosquitto::start_plain();
    let sub = Subscriber::plain(broker.port).await;
    let app = spawn(
        &broker.url(),
        &[("MQTT_QOS", "1"), ("MQTT_PUBLISH_TIMEOUT_MS", "10000")],
    )
    .await;
    app.wait_until_ready(Duration::from_secs(10)).await;

    let started = Instant::now();
    let results = futures_util::future::join_all((0..200).map(|i| {
        let app = &app;
        async move {
            app.message(&format!("clock-{i}"), &format!("message {i}"))
                .await
        }
    }))
    .await;
    let elapsed = started.elapsed();
    let mut ids = HashSet::new();
    for (status, body) in &results {
        assert_eq!(*status, 202, "{body}");
        ids.insert(command_id(body));
    }
    assert_eq!(ids.len(), 200);
    eprintln!("200 concurrent acknowledged commands through HTTP + MQTT in {elapsed:?}");

    eventually(Duration::from_secs(15), "all 200 messages", || async {
        let arrived: HashSet<String> = sub
            .all()
            .iter()
            .filter_map(|r| r.payload["commandId"].as_str().map(str::to_owned))
            .collect();
        ids.is_subset(&arrived).then_some(())
    })
    .await;
    for r in sub.all() {
        assert_eq!(r.qos, 1);
        let device = r.payload["deviceId"].as_str().unwrap();
        assert_eq!(r.topic, format!("clocks/commands/{device}/display_message"));
    }
}

#[tokio::test]
async fn an_in_flight_window_of_one_still_delivers_every_concurrent_command() {
    let broker = Mosquitto::start_plain();
    let sub = Subscriber::plain(broker.port).await;
    let app = spawn(
        &broker.url(),
        &[
            ("MQTT_MAX_INFLIGHT", "1"),
            ("MQTT_PUBLISH_TIMEOUT_MS", "10000"),
        ],
    )
    .await;
    app.wait_until_ready(Duration::from_secs(10)).await;
    let results = futures_util::future::join_all((0..20).map(|i| {
        let app = &app;
        async move { app.brightness("clock-1", i).await }
    }))
    .await;
    for (status, body) in &results {
        assert_eq!(*status, 202, "{body}");
        sub.wait_for(&command_id(body)).await;
    }
}

// ---------------------------------------------------------------------------------------
// Client id, credentials
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn two_servers_without_a_client_id_get_distinct_ids_and_both_deliver() {
    let broker = Mosquitto::start_plain();
    let sub = Subscriber::plain(broker.port).await;
    let a = spawn(&broker.url(), &[]).await;
    let b = spawn(&broker.url(), &[]).await;
    a.wait_until_ready(Duration::from_secs(10)).await;
    b.wait_until_ready(Duration::from_secs(10)).await;
    // With one id, the broker would take the session over and drop the other connection.
    for round in 0..3 {
        for app in [&a, &b] {
            let (status, body) = app.message("clock-1", &format!("round {round}")).await;
            assert_eq!(status, 202, "{body}");
            sub.wait_for(&command_id(&body)).await;
        }
    }
}

/// A Mosquitto that wants `user`/`pass` (and allows nobody else).
fn broker_with_password(user: &str, pass: &str) -> (Mosquitto, tempfile::TempDir) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let file = dir.path().join("passwords");
    let status = std::process::Command::new("mosquitto_passwd")
        .args(["-b", "-c"])
        .arg(&file)
        .args([user, pass])
        .status()
        .expect("run mosquitto_passwd (install mosquitto)");
    assert!(status.success());
    // Mosquitto reads it after dropping privileges.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let broker = Mosquitto::start_with(&format!(
        "allow_anonymous false\npassword_file {}\n",
        file.display()
    ));
    (broker, dir)
}

#[tokio::test]
async fn a_password_protected_broker_accepts_the_configured_username_and_password() {
    let (broker, _dir) = broker_with_password("clock-server", "s3cret pass");
    let sub = Subscriber::with_credentials(broker.port, "clock-server", "s3cret pass").await;
    let app = spawn(
        &broker.url(),
        &[
            ("MQTT_USERNAME", "clock-server"),
            ("MQTT_PASSWORD", "s3cret pass"),
        ],
    )
    .await;
    app.wait_until_ready(Duration::from_secs(10)).await;
    let (status, body) = app.message("clock-1", "authenticated").await;
    assert_eq!(status, 202, "{body}");
    sub.wait_for(&command_id(&body)).await;
}

#[tokio::test]
async fn a_wrong_password_keeps_the_server_not_ready_and_commands_get_502() {
    let (broker, _dir) = broker_with_password("clock-server", "right");
    let app = spawn(
        &broker.url(),
        &[
            ("MQTT_USERNAME", "clock-server"),
            ("MQTT_PASSWORD", "wrong"),
        ],
    )
    .await;
    assert_eq!(app.status_of("/health").await, 200);
    let (status, body) = app.message("clock-1", "refused").await;
    assert_eq!(status, 502);
    assert_eq!(body["error"], "command dispatch failed");
    app.stays_not_ready(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn a_wrong_password_without_retry_stops_the_start_with_a_hint_and_no_password() {
    let (broker, _dir) = broker_with_password("clock-server", "right");
    let err = build(
        &broker.url(),
        &[
            ("MQTT_USERNAME", "clock-server"),
            ("MQTT_PASSWORD", "wrong-Pa55"),
            ("MQTT_CONNECT_RETRY", "false"),
        ],
    )
    .await
    .err()
    .expect("the start fails");
    let text = err.to_string();
    assert!(text.contains("MQTT_PASSWORD"), "{text}");
    assert!(text.contains(&broker.url()), "{text}");
    assert!(!text.contains("wrong-Pa55"), "{text}");
}

// ---------------------------------------------------------------------------------------
// TLS
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn an_ipv6_broker_address_in_brackets_connects_and_delivers() {
    // A machine without an IPv6 loopback cannot run this: say so rather than fail.
    let Ok(probe) = std::net::TcpListener::bind("[::1]:0") else {
        eprintln!("skipped: no IPv6 loopback (::1) on this machine");
        return;
    };
    let v6 = probe.local_addr().unwrap().port();
    drop(probe);
    let broker = Mosquitto::start_with(&format!("allow_anonymous true\nlistener {v6} ::1\n"));
    let sub = Subscriber::plain(broker.port).await;
    let app = spawn(&format!("mqtt://[::1]:{v6}"), &[]).await;
    app.wait_until_ready(Duration::from_secs(10)).await;
    let (status, body) = app.message("clock-6", "over ipv6").await;
    assert_eq!(status, 202, "{body}");
    let got = sub.wait_for(&command_id(&body)).await;
    assert_eq!(got.topic, "clocks/commands/clock-6/display_message");
}

#[tokio::test]
async fn mqtts_with_the_test_ca_in_mqtt_ca_file_connects_and_delivers() {
    let pki = TestPki::new();
    let (broker, plain) = Mosquitto::start_tls(&pki, false);
    let sub = Subscriber::plain(plain).await;
    // `localhost` checks the name against the certificate and tries each address it has.
    let url = format!("mqtts://localhost:{}", broker.port);
    let ca = pki.ca_cert.display().to_string();
    let app = spawn(&url, &[("MQTT_CA_FILE", &ca)]).await;
    app.wait_until_ready(Duration::from_secs(10)).await;
    let (status, body) = app.message("clock-1", "over tls").await;
    assert_eq!(status, 202, "{body}");
    let got = sub.wait_for(&command_id(&body)).await;
    assert_eq!(got.topic, "clocks/commands/clock-1/display_message");
}

#[tokio::test]
async fn mqtts_without_the_ca_is_rejected_so_the_server_is_not_ready_and_commands_get_502() {
    let pki = TestPki::new();
    let (broker, _plain) = Mosquitto::start_tls(&pki, false);
    let url = format!("mqtts://127.0.0.1:{}", broker.port);
    let app = spawn(&url, &[]).await;
    assert_eq!(app.status_of("/health").await, 200);
    app.stays_not_ready(Duration::from_secs(2)).await;

    let err = build(&url, &[("MQTT_CONNECT_RETRY", "false")])
        .await
        .err()
        .expect("an untrusted broker stops the start without retry");
    assert!(err.to_string().contains("MQTT_CA_FILE"), "{err}");
}

#[tokio::test]
async fn mutual_tls_with_a_client_certificate_satisfies_a_broker_that_requires_one() {
    let pki = TestPki::new();
    let (broker, plain) = Mosquitto::start_tls(&pki, true);
    let sub = Subscriber::plain(plain).await;
    let url = format!("mqtts://127.0.0.1:{}", broker.port);
    let ca = pki.ca_cert.display().to_string();
    let cert = pki.client_cert.display().to_string();
    let key = pki.client_key.display().to_string();
    let app = spawn(
        &url,
        &[
            ("MQTT_CA_FILE", &ca),
            ("MQTT_CLIENT_CERT_FILE", &cert),
            ("MQTT_CLIENT_KEY_FILE", &key),
        ],
    )
    .await;
    app.wait_until_ready(Duration::from_secs(10)).await;
    let (status, body) = app.message("clock-1", "mutual").await;
    assert_eq!(status, 202, "{body}");
    sub.wait_for(&command_id(&body)).await;

    let err = build(
        &url,
        &[("MQTT_CA_FILE", &ca), ("MQTT_CONNECT_RETRY", "false")],
    )
    .await
    .err()
    .expect("without a client certificate the broker refuses the connection");
    assert!(err.to_string().contains("cannot connect"), "{err}");
}

#[tokio::test]
async fn a_client_key_that_does_not_fit_its_certificate_stops_the_start_naming_the_variables() {
    let pki = TestPki::new();
    let other = TestPki::new();
    let (broker, _plain) = Mosquitto::start_tls(&pki, true);
    let url = format!("mqtts://127.0.0.1:{}", broker.port);
    let cert = pki.client_cert.display().to_string();
    let key = other.client_key.display().to_string();
    let err = build(
        &url,
        &[
            ("MQTT_CLIENT_CERT_FILE", &cert),
            ("MQTT_CLIENT_KEY_FILE", &key),
        ],
    )
    .await
    .err()
    .expect("a mismatched key is a start-up error");
    assert!(err.to_string().contains("MQTT_CLIENT_KEY_FILE"), "{err}");
}

/// Kills the child process on drop.
struct ChildGuard(std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn the_system_trust_store_of_the_server_binary_honours_ssl_cert_file() {
    let pki = TestPki::new();
    let (broker, _plain) = Mosquitto::start_tls(&pki, false);
    let http_port = common::free_port();
    let env = mqtt_env(
        &format!("mqtts://127.0.0.1:{}", broker.port),
        &[("HTTP_ADDR", &format!("127.0.0.1:{http_port}"))],
    );
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_clock-server"))
        .env_clear()
        .envs(&env)
        .env("SSL_CERT_FILE", &pki.ca_cert)
        .stdout(std::process::Stdio::null())
        .stderr(if std::env::var_os("TEST_LOG").is_some() {
            std::process::Stdio::inherit()
        } else {
            std::process::Stdio::null()
        })
        .spawn()
        .unwrap();
    let _guard = ChildGuard(child);
    let http = client(None);
    let url = format!("http://127.0.0.1:{http_port}/ready");
    eventually(
        Duration::from_secs(20),
        "the binary to be ready",
        || async {
            let res = http.get(&url).send().await.ok()?;
            (res.status() == 200).then_some(())
        },
    )
    .await;
}

// ---------------------------------------------------------------------------------------
// Outages
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_broker_outage_gives_fast_502s_and_the_server_recovers_without_ever_delivering_them() {
    // Persistence keeps the durable subscriber's session across the restart, so anything
    // published after the restart is kept for it, even before it reconnects: a ghost
    // delivery of the failed command could not slip past unseen.
    use std::os::unix::fs::PermissionsExt;
    let persist = tempfile::tempdir().unwrap();
    std::fs::set_permissions(persist.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let mut broker = Mosquitto::start_with(&format!(
        "allow_anonymous true\npersistence true\npersistence_location {}/\n",
        persist.path().display()
    ));
    let sub = Subscriber::durable(broker.port).await;
    let app = spawn(&broker.url(), &[("MQTT_PUBLISH_TIMEOUT_MS", "1000")]).await;
    app.wait_until_ready(Duration::from_secs(10)).await;
    let (status, body) = app.message("clock-1", "before the outage").await;
    assert_eq!(status, 202);
    sub.wait_for(&command_id(&body)).await;

    broker.stop_gracefully();
    app.wait_until_not_ready(Duration::from_secs(5)).await;
    let started = Instant::now();
    let (status, body) = app.message("clock-1", "GHOST sent during the outage").await;
    assert_eq!(status, 502, "{body}");
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "a 502 within the publish timeout, got it after {:?}",
        started.elapsed()
    );
    assert_eq!(app.brightness("clock-1", 1).await.0, 502);

    broker.start();
    app.wait_until_ready(Duration::from_secs(30)).await;
    let (status, body) = app.message("clock-1", "after the outage").await;
    assert_eq!(status, 202, "{body}");
    sub.wait_for(&command_id(&body)).await;

    let ghosts: Vec<Received> = sub
        .all()
        .into_iter()
        .filter(|r| {
            r.payload["message"] == "GHOST sent during the outage" || r.payload["level"] == 1
        })
        .collect();
    assert!(ghosts.is_empty(), "delivered after a 502: {ghosts:?}");
    let _ = sub.client.disconnect().await;
}

#[tokio::test]
async fn a_killed_broker_is_noticed_without_traffic_and_a_restarted_one_is_used_again() {
    let mut broker = Mosquitto::start_plain();
    let app = spawn(&broker.url(), &[]).await;
    app.wait_until_ready(Duration::from_secs(10)).await;
    for round in 0..2 {
        broker.stop();
        app.wait_until_not_ready(Duration::from_secs(5)).await;
        assert_eq!(app.message("clock-1", "down").await.0, 502);
        broker.start();
        app.wait_until_ready(Duration::from_secs(30)).await;
        let sub = Subscriber::plain(broker.port).await;
        let (status, body) = app
            .message("clock-1", &format!("back, round {round}"))
            .await;
        assert_eq!(status, 202, "{body}");
        sub.wait_for(&command_id(&body)).await;
    }
}

#[tokio::test]
async fn a_silent_broker_gets_502_after_the_publish_timeout_and_is_dropped_by_keep_alive() {
    let broker = Mosquitto::start_plain();
    let pid = broker.pid().unwrap().to_string();
    let app = spawn(
        &broker.url(),
        &[
            ("MQTT_PUBLISH_TIMEOUT_MS", "1000"),
            ("MQTT_KEEP_ALIVE_SECS", "1"),
        ],
    )
    .await;
    app.wait_until_ready(Duration::from_secs(10)).await;

    let signal = |sig: &str| {
        let ok = std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig} {pid}");
    };
    signal("-STOP");
    let started = Instant::now();
    let (status, _) = app.message("clock-1", "unacknowledged").await;
    let waited = started.elapsed();
    assert_eq!(status, 502);
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_millis(2500),
        "502 after the 1 s publish timeout, got it after {waited:?}"
    );
    app.wait_until_not_ready(Duration::from_secs(10)).await;
    signal("-CONT");
    app.wait_until_ready(Duration::from_secs(30)).await;
    let sub = Subscriber::plain(broker.port).await;
    let (status, body) = app.message("clock-1", "resumed").await;
    assert_eq!(status, 202, "{body}");
    sub.wait_for(&command_id(&body)).await;
}

#[tokio::test]
async fn with_the_broker_down_at_start_health_is_200_and_ready_503_until_it_comes_up() {
    let mut broker = Mosquitto::start_plain();
    broker.stop();
    let app = spawn(&broker.url(), &[]).await;
    assert_eq!(app.status_of("/health").await, 200);
    assert_eq!(app.status_of("/ready").await, 503);
    assert_eq!(app.alarm("clock-1", &in_an_hour(), "x").await.0, 502);

    broker.start();
    app.wait_until_ready(Duration::from_secs(30)).await;
    let sub = Subscriber::plain(broker.port).await;
    let (status, body) = app.alarm("clock-1", &in_an_hour(), "x").await;
    assert_eq!(status, 202, "{body}");
    sub.wait_for(&command_id(&body)).await;
    app.stop().await;
}

#[tokio::test]
async fn without_connect_retry_and_without_a_broker_the_application_does_not_start() {
    let port = common::free_port();
    let url = format!("mqtt://127.0.0.1:{port}");
    let err = build(&url, &[("MQTT_CONNECT_RETRY", "false")])
        .await
        .err()
        .expect("no broker, no start");
    let text = err.to_string();
    assert!(text.contains("cannot connect to the MQTT broker"), "{text}");
    assert!(text.contains(&url), "{text}");
    assert!(text.contains("MQTT_CONNECT_RETRY"), "{text}");
}

#[tokio::test]
async fn without_connect_retry_a_lost_connection_is_not_repaired() {
    let mut broker = Mosquitto::start_plain();
    let app = spawn(&broker.url(), &[("MQTT_CONNECT_RETRY", "false")]).await;
    assert_eq!(app.status_of("/ready").await, 200, "connected before start");
    broker.stop();
    app.wait_until_not_ready(Duration::from_secs(5)).await;
    broker.start();
    // A client that retried would be back within its first back-off (about 0.5 s).
    let _probe = Subscriber::plain(broker.port).await;
    app.stays_not_ready(Duration::from_secs(3)).await;
}

// ---------------------------------------------------------------------------------------
// SPEC 10: a broker cannot make the server buffer a huge packet
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_packet_over_the_announced_maximum_drops_the_connection_unbuffered_and_it_comes_back() {
    use common::mqtt_peer::{CONNACK, maximum_packet_size, read_packet};
    use tokio::io::AsyncWriteExt;

    const LIMIT: Duration = Duration::from_secs(10);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("mqtt://{}", listener.local_addr().unwrap());
    // A long keep-alive, so that only the refusal (not a ping timeout) can end the connection
    // within the test's bounds.
    let app = spawn(&url, &[("MQTT_KEEP_ALIVE_SECS", "300")]).await;

    let (mut first, _) = tokio::time::timeout(LIMIT, listener.accept())
        .await
        .unwrap()
        .unwrap();
    let (kind, connect) = read_packet(&mut first).await.unwrap();
    assert_eq!(kind >> 4, 1, "CONNECT expected");
    assert_eq!(maximum_packet_size(&connect), Some(65_536));
    first.write_all(&CONNACK).await.unwrap();
    app.wait_until_ready(LIMIT).await;

    // An unsolicited QoS 0 PUBLISH announcing 250 MB on topic "t", then its body streamed,
    // but never more than twice the maximum: a client that buffered the whole packet would
    // be left waiting for the rest (for minutes, given the keep-alive).
    let answer = common::mqtt_peer::send_oversized_publish(first)
        .await
        .expect("the client should close the connection once the PUBLISH announced 250 MB");
    assert!(
        answer.iter().any(common::mqtt_peer::is_packet_too_large),
        "DISCONNECT with reason 0x95 (packet too large) expected, got {answer:?}"
    );
    app.wait_until_not_ready(LIMIT).await;

    // The link reconnects as after any loss, announcing the same maximum.
    let (mut second, _) = tokio::time::timeout(LIMIT, listener.accept())
        .await
        .expect("a second CONNECT")
        .unwrap();
    let (kind, connect) = read_packet(&mut second).await.unwrap();
    assert_eq!(kind >> 4, 1, "CONNECT expected");
    assert_eq!(maximum_packet_size(&connect), Some(65_536));
    second.write_all(&CONNACK).await.unwrap();
    app.wait_until_ready(LIMIT).await;
    app.stop().await;
}
