//! Tracked commands (SPEC 7) end to end: the 202's status, expiry and `Location`, the
//! status resource and its 404s, cancelling, `Idempotency-Key`, a `file:` store across a
//! restart, and, with a real Mosquitto, the MQTT 5 properties of a publish and device
//! acknowledgements published by a real MQTT client, the malformed ones included.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::Ordering::SeqCst;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::app::{CLOCKS_TOKEN, JsonBody, OPS_TOKEN, TestApp, env_with, spawn_app, start};
use common::eventually;
use common::mosquitto::Mosquitto;
use mqtt5::{ConnectOptions, MqttClient, PublishOptions, QoS, SubscribeOptions};
use serde_json::{Value, json};

fn msg(device: &str) -> Value {
    json!({"deviceId": device, "message": "hello", "durationSeconds": 10})
}

async fn post(
    app: &TestApp,
    token: &str,
    body: &Value,
    key: Option<&str>,
) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let mut req = app
        .client
        .post(app.url("/commands/messages"))
        .bearer_auth(token)
        .json_body(body);
    if let Some(key) = key {
        req = req.header("idempotency-key", key);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    (status, headers, res.bytes().await.unwrap().to_vec())
}

fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap()
}

async fn get_record(app: &TestApp, token: &str, id: &str) -> (u16, Value) {
    let res = app
        .client
        .get(app.url(&format!("/commands/{id}")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (
        status,
        serde_json::from_slice(&res.bytes().await.unwrap()).unwrap_or(Value::Null),
    )
}

fn millis_between(from: &Value, to: &Value) -> i64 {
    let t = |v: &Value| chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap()).unwrap();
    (t(to) - t(from)).num_milliseconds()
}

fn is_utc_millis(v: &Value) -> bool {
    let s = v.as_str().unwrap_or_default();
    s.len() == 24 && s.ends_with('Z') && s.as_bytes()[19] == b'.'
}

// ---------------------------------------------------------------------------------------
// Submitting and the status resource (a recording fake transport)
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_202_carries_status_expiry_and_location_and_the_record_can_be_read() {
    let app = spawn_app(&[]).await;
    let (status, headers, body) = post(&app, OPS_TOKEN, &msg("clock-1"), None).await;
    assert_eq!(status, 202);
    let body = json(&body);
    let id = body["commandId"].as_str().unwrap().to_owned();
    assert_eq!(body["status"], "sent");
    assert_eq!(body["result"], "sent");
    assert!(is_utc_millis(&body["expiresAt"]), "{body}");
    assert_eq!(headers["location"], format!("/commands/{id}").as_str());
    // What the transport got expires when the record does.
    let sent = app.fake().sent();
    assert_eq!(
        sent[0].expires_at.map(clock_server::store::format_time),
        body["expiresAt"].as_str().map(str::to_owned)
    );

    let (status, record) = get_record(&app, OPS_TOKEN, &id).await;
    assert_eq!(status, 200);
    assert_eq!(record["commandId"], id.as_str());
    assert_eq!(record["deviceId"], "clock-1");
    assert_eq!(record["type"], "display_message");
    assert_eq!(record["principal"], "ops");
    assert_eq!(record["status"], "sent");
    assert_eq!(record["deviceAcks"], true);
    assert_eq!(record["completedAt"], Value::Null);
    assert_eq!(record["statusReason"], Value::Null);
    assert_eq!(record["expiresAt"], body["expiresAt"]);
    for field in ["createdAt", "sentAt", "expiresAt"] {
        assert!(is_utc_millis(&record[field]), "{field}: {record}");
    }
    // COMMAND_TTL_SECS defaults to 600.
    assert_eq!(
        millis_between(&record["createdAt"], &record["expiresAt"]),
        600_000
    );
    assert_eq!(record.as_object().unwrap().len(), 11, "{record}");
}

#[tokio::test]
async fn ttl_seconds_sets_the_expiry_and_is_range_checked() {
    let app = spawn_app(&[("COMMAND_TTL_SECS", "30")]).await;
    let mut body = msg("clock-1");
    body["ttlSeconds"] = json!(90);
    let (status, _, answer) = post(&app, OPS_TOKEN, &body, None).await;
    assert_eq!(status, 202);
    let id = json(&answer)["commandId"].as_str().unwrap().to_owned();
    let (_, record) = get_record(&app, OPS_TOKEN, &id).await;
    assert_eq!(
        millis_between(&record["createdAt"], &record["expiresAt"]),
        90_000
    );
    let (_, _, answer) = post(&app, OPS_TOKEN, &msg("clock-1"), None).await;
    let id = json(&answer)["commandId"].as_str().unwrap().to_owned();
    let (_, record) = get_record(&app, OPS_TOKEN, &id).await;
    assert_eq!(
        millis_between(&record["createdAt"], &record["expiresAt"]),
        30_000
    );
    for bad in [json!(0), json!(604_801), json!(-5)] {
        body["ttlSeconds"] = bad.clone();
        let (status, _, answer) = post(&app, OPS_TOKEN, &body, None).await;
        assert_eq!(status, 400, "{bad}");
        assert_eq!(
            json(&answer),
            json!({"error": "invalid command", "detail": "ttlSeconds must be an integer between 1 and 604800"})
        );
    }
    body["ttlSeconds"] = json!("10");
    let (status, _, answer) = post(&app, OPS_TOKEN, &body, None).await;
    assert_eq!(status, 400);
    assert!(
        json(&answer)["error"]
            .as_str()
            .unwrap()
            .starts_with("invalid request body")
    );
    assert_eq!(app.fake().sent().len(), 2);
}

#[tokio::test]
async fn unknown_malformed_and_out_of_scope_ids_all_get_the_same_404() {
    let app = spawn_app(&[]).await;
    let (_, _, answer) = post(&app, OPS_TOKEN, &msg("lamp-1"), None).await;
    let lamp = json(&answer)["commandId"].as_str().unwrap().to_owned();
    let unknown = uuid::Uuid::now_v7().to_string();
    for (token, id) in [
        (OPS_TOKEN, unknown.as_str()),
        (OPS_TOKEN, "not-a-command-id"),
        (OPS_TOKEN, "%2e%2e"),
        // Not UTF-8 once decoded: names nothing either.
        (OPS_TOKEN, "%FF"),
        (OPS_TOKEN, "caf%C3%28"),
        // The `clocks` credential covers clock-* only.
        (CLOCKS_TOKEN, lamp.as_str()),
    ] {
        let (status, body) = get_record(&app, token, id).await;
        assert_eq!((status, body), (404, json!({"error": "not found"})), "{id}");
        let res = app
            .client
            .delete(app.url(&format!("/commands/{id}")))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 404, "{id}");
        assert_eq!(res.headers()["content-type"], "application/json", "{id}");
    }
    // The other resources with an id in the path answer the same way.
    for path in ["/devices/%FF", "/schedules/%FF"] {
        let res = app.get(path, Some(OPS_TOKEN)).await;
        assert_eq!(res.status(), 404, "{path}");
        assert_eq!(res.headers()["content-type"], "application/json", "{path}");
        assert_eq!(
            json(&res.bytes().await.unwrap()),
            json!({"error": "not found"}),
            "{path}"
        );
    }
    assert_eq!(get_record(&app, OPS_TOKEN, &lamp).await.0, 200);
    // Unauthenticated: 401 before anything else.
    let res = app
        .client
        .get(app.url(&format!("/commands/{lamp}")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
}

#[tokio::test]
async fn the_command_paths_keep_their_405_and_a_sent_command_cannot_be_cancelled() {
    let app = spawn_app(&[]).await;
    for (method, path, allow) in [
        (reqwest::Method::GET, "/commands/alarms", "POST"),
        (reqwest::Method::DELETE, "/commands/messages", "POST"),
        (reqwest::Method::GET, "/commands/brightness", "PUT"),
    ] {
        let res = app
            .client
            .request(method, app.url(path))
            .bearer_auth(OPS_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 405, "{path}");
        assert_eq!(res.headers()["allow"], allow);
    }
    let (_, _, answer) = post(&app, OPS_TOKEN, &msg("clock-1"), None).await;
    let id = json(&answer)["commandId"].as_str().unwrap().to_owned();
    let res = app
        .client
        .delete(app.url(&format!("/commands/{id}")))
        .bearer_auth(OPS_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 409);
    assert_eq!(
        json(&res.bytes().await.unwrap()),
        json!({"error": "command can no longer be cancelled", "status": "sent"})
    );
    let res = app
        .client
        .put(app.url(&format!("/commands/{id}")))
        .bearer_auth(OPS_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 405);
    assert_eq!(res.headers()["allow"], "GET, HEAD, DELETE");
}

#[tokio::test]
async fn a_failed_dispatch_is_recorded_as_failed_with_its_reason() {
    let app = spawn_app(&[]).await;
    app.fake().fail.store(true, SeqCst);
    let (status, _, answer) = post(&app, OPS_TOKEN, &msg("clock-1"), None).await;
    assert_eq!(status, 502);
    let id = json(&answer)["commandId"].as_str().unwrap().to_owned();
    let (status, record) = get_record(&app, OPS_TOKEN, &id).await;
    assert_eq!(status, 200);
    assert_eq!(record["status"], "failed");
    assert_eq!(record["statusReason"]["code"], "dispatch_failed");
    assert_eq!(record["sentAt"], Value::Null);
    assert!(is_utc_millis(&record["completedAt"]));
}

#[tokio::test]
async fn with_state_store_none_nothing_is_tracked() {
    let app = spawn_app(&[("STATE_STORE", "none")]).await;
    let (status, headers, answer) = post(&app, OPS_TOKEN, &msg("clock-1"), Some("k1")).await;
    assert_eq!(status, 202);
    let body = json(&answer);
    let id = body["commandId"].as_str().unwrap().to_owned();
    assert_eq!(
        body,
        json!({"result": "sent", "commandId": id, "deviceId": "clock-1"})
    );
    assert!(headers.get("location").is_none());
    assert_eq!(get_record(&app, OPS_TOKEN, &id).await.0, 404);
    // The key is ignored: the same request goes out again.
    let (status, _, _) = post(&app, OPS_TOKEN, &msg("clock-1"), Some("k1")).await;
    assert_eq!(status, 202);
    assert_eq!(app.fake().sent().len(), 2);
    assert!(app.fake().sent()[0].expires_at.is_none());
}

// ---------------------------------------------------------------------------------------
// Idempotency-Key
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_replay_answers_byte_for_byte_and_dispatches_nothing() {
    let app = spawn_app(&[]).await;
    let (status, headers, first) = post(&app, OPS_TOKEN, &msg("clock-1"), Some("key-1")).await;
    assert_eq!(status, 202);
    assert!(headers.get("idempotent-replayed").is_none());
    // Same fields, other key order and spacing, quoted key: the same request.
    let reordered = json!({"durationSeconds": 10, "message": "hello", "deviceId": "clock-1"});
    let (status, replay_headers, again) =
        post(&app, OPS_TOKEN, &reordered, Some("\"key-1\"")).await;
    assert_eq!(status, 202);
    assert_eq!(again, first);
    assert_eq!(replay_headers["idempotent-replayed"], "true");
    assert_eq!(replay_headers["location"], headers["location"]);
    assert_eq!(app.fake().sent().len(), 1);
    // A different command with the same key.
    let (status, _, answer) = post(&app, OPS_TOKEN, &msg("clock-2"), Some("key-1")).await;
    assert_eq!(status, 422);
    assert_eq!(
        json(&answer),
        json!({"error": "idempotency key reused with a different request"})
    );
    // Keys belong to their credential: `clocks` may use the same key on its own.
    let (status, _, other) = post(&app, CLOCKS_TOKEN, &msg("clock-1"), Some("key-1")).await;
    assert_eq!(status, 202);
    assert_ne!(other, first);
    assert_eq!(app.fake().sent().len(), 2);
}

#[tokio::test]
async fn invalid_keys_get_400_and_only_a_202_is_remembered() {
    let app = spawn_app(&[]).await;
    for bad in ["", "with space", &"k".repeat(256)] {
        let (status, _, answer) = post(&app, OPS_TOKEN, &msg("clock-1"), Some(bad)).await;
        assert_eq!(status, 400, "{bad:?}");
        assert_eq!(json(&answer), json!({"error": "invalid Idempotency-Key"}));
    }
    // Validation comes first: an invalid command with an invalid key is an invalid command.
    let (status, _, answer) = post(&app, OPS_TOKEN, &msg("bad device!"), Some("a b")).await;
    assert_eq!(status, 400);
    assert_eq!(json(&answer)["error"], "invalid command");
    app.fake().fail.store(true, SeqCst);
    let (status, _, _) = post(&app, OPS_TOKEN, &msg("clock-1"), Some("retry-me")).await;
    assert_eq!(status, 502);
    app.fake().fail.store(false, SeqCst);
    let (status, headers, _) = post(&app, OPS_TOKEN, &msg("clock-1"), Some("retry-me")).await;
    assert_eq!(status, 202, "a failed attempt is not remembered");
    assert!(headers.get("idempotent-replayed").is_none());
    assert_eq!(app.fake().sent().len(), 1);
}

#[tokio::test]
async fn concurrent_uses_of_one_key_give_409_and_one_publish() {
    let app = Arc::new(spawn_app(&[]).await);
    app.fake().hold.store(true, SeqCst);
    let first = {
        let app = app.clone();
        tokio::spawn(async move { post(&app, OPS_TOKEN, &msg("clock-1"), Some("busy")).await })
    };
    app.fake().started.notified().await;
    let (status, headers, answer) = post(&app, OPS_TOKEN, &msg("clock-1"), Some("busy")).await;
    assert_eq!(status, 409);
    assert_eq!(headers["retry-after"], "1");
    assert_eq!(
        json(&answer),
        json!({"error": "request with this idempotency key is in progress"})
    );
    app.fake().hold.store(false, SeqCst);
    app.fake().release.notify_one();
    let (status, _, first_body) = first.await.unwrap();
    assert_eq!(status, 202);
    let (status, _, replay) = post(&app, OPS_TOKEN, &msg("clock-1"), Some("busy")).await;
    assert_eq!((status, replay), (202, first_body));
    assert_eq!(app.fake().sent().len(), 1);
}

// ---------------------------------------------------------------------------------------
// The file store across a restart
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn with_a_file_store_records_and_keys_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("file:{}", dir.path().join("state.db").display());
    let vars = [("STATE_STORE", store.as_str())];
    let app = spawn_app(&vars).await;
    let (_, _, first) = post(&app, OPS_TOKEN, &msg("clock-1"), Some("durable")).await;
    let id = json(&first)["commandId"].as_str().unwrap().to_owned();
    app.stop().await;

    let app = spawn_app(&vars).await;
    let (status, record) = get_record(&app, OPS_TOKEN, &id).await;
    assert_eq!(status, 200);
    assert_eq!(record["status"], "sent");
    let (status, headers, again) = post(&app, OPS_TOKEN, &msg("clock-1"), Some("durable")).await;
    assert_eq!((status, &again), (202, &first));
    assert_eq!(headers["idempotent-replayed"], "true");
    assert!(app.fake().sent().is_empty());
}

#[tokio::test]
async fn an_unusable_store_file_stops_the_start_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    std::fs::write(
        &path,
        b"this is not a database, and it must not be replaced",
    )
    .unwrap();
    let store = format!("file:{}", path.display());
    let env = env_with(&[("STATE_STORE", store.as_str())]);
    let err = start(&env, Some(Default::default()))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("STATE_STORE=") && err.contains("state.db"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&path).unwrap(),
        b"this is not a database, and it must not be replaced"
    );
}

// ---------------------------------------------------------------------------------------
// With a real Mosquitto: MQTT 5 properties and device acknowledgements
// ---------------------------------------------------------------------------------------

async fn mqtt_app(broker: &Mosquitto, vars: &[(&str, &str)]) -> TestApp {
    let url = broker.url();
    let mut all = vec![
        ("ENABLED_SENDERS", "mqtt"),
        ("MQTT_BROKER_URL", url.as_str()),
        ("ALLOW_INSECURE_MQTT", "true"),
        ("READINESS_REQUIRE_AUTH", "false"),
        ("METRICS_ADDR", "127.0.0.1:0"),
    ];
    all.extend_from_slice(vars);
    let app = start(&env_with(&all), None).await.unwrap();
    eventually(Duration::from_secs(15), "the broker connection", || async {
        (app.get("/ready", None).await.status() == 200).then_some(())
    })
    .await;
    app
}

/// A device on the broker: publishes acknowledgements, records what it receives.
struct Device {
    client: MqttClient,
    got: Arc<Mutex<Vec<mqtt5::types::Message>>>,
}

impl Device {
    async fn connect(port: u16) -> Self {
        let client = MqttClient::with_options(ConnectOptions::new(format!(
            "test-device-{}",
            uuid::Uuid::now_v7().simple()
        )));
        client
            .connect(&format!("mqtt://127.0.0.1:{port}"))
            .await
            .unwrap();
        let got = Arc::new(Mutex::new(Vec::new()));
        let sink = got.clone();
        client
            .subscribe_with_options(
                "clocks/commands/+/display_message",
                SubscribeOptions {
                    qos: QoS::AtLeastOnce,
                    ..SubscribeOptions::default()
                },
                move |m| sink.lock().unwrap().push(m),
            )
            .await
            .unwrap();
        Self { client, got }
    }

    async fn ack(&self, topic: &str, payload: &str) {
        let options = PublishOptions {
            qos: QoS::AtLeastOnce,
            ..PublishOptions::default()
        };
        self.client
            .publish_with_options(topic, payload.as_bytes().to_vec(), options)
            .await
            .unwrap();
    }

    async fn received(&self, command_id: &str) -> mqtt5::types::Message {
        eventually(Duration::from_secs(10), "the command to arrive", || async {
            self.got
                .lock()
                .unwrap()
                .iter()
                .find(|m| {
                    serde_json::from_slice::<Value>(&m.payload)
                        .is_ok_and(|v| v["commandId"] == command_id)
                })
                .cloned()
        })
        .await
    }
}

async fn metric(app: &TestApp, series: &str) -> u64 {
    let text = app
        .client
        .get(format!("http://{}/metrics", app.metrics_addr.unwrap()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    common::metric_value(&text, series)
}

async fn status_becomes(app: &TestApp, id: &str, status: &str) -> Value {
    eventually(
        Duration::from_secs(10),
        &format!("status {status}"),
        || async {
            let (_, record) = get_record(app, OPS_TOKEN, id).await;
            (record["status"] == status).then_some(record)
        },
    )
    .await
}

#[tokio::test]
async fn a_publish_carries_its_expiry_response_topic_and_correlation_data() {
    let broker = Mosquitto::start_plain();
    let app = mqtt_app(&broker, &[]).await;
    let device = Device::connect(broker.port).await;
    let mut body = msg("clock-9");
    body["ttlSeconds"] = json!(120);
    let (status, _, answer) = post(&app, OPS_TOKEN, &body, None).await;
    assert_eq!(status, 202);
    let id = json(&answer)["commandId"].as_str().unwrap().to_owned();
    let m = device.received(&id).await;
    let expiry = m.properties.message_expiry_interval.unwrap();
    assert!((110..=120).contains(&expiry), "{expiry}");
    assert_eq!(
        m.properties.response_topic.as_deref(),
        Some("clocks/commands/clock-9/ack")
    );
    assert_eq!(
        m.properties.correlation_data.as_deref(),
        Some(id.as_bytes())
    );
    // The payload is the generic one, unchanged.
    let payload: Value = serde_json::from_slice(&m.payload).unwrap();
    assert_eq!(payload["commandId"], id.as_str());
    assert!(payload.get("ttlSeconds").is_none());
}

#[tokio::test]
async fn device_acknowledgements_end_a_command_and_bad_ones_are_ignored_and_counted() {
    let broker = Mosquitto::start_plain();
    let app = mqtt_app(&broker, &[]).await;
    let device = Device::connect(broker.port).await;
    let send = |device_id: &'static str| {
        let app = &app;
        async move {
            let (status, _, answer) = post(app, OPS_TOKEN, &msg(device_id), None).await;
            assert_eq!(status, 202);
            json(&answer)["commandId"].as_str().unwrap().to_owned()
        }
    };
    let ok = send("clock-1").await;
    let failed = send("clock-2").await;
    device.received(&ok).await;
    device.received(&failed).await;

    // Malformed or inapplicable: each ignored, none stops the server.
    let bad: Vec<(String, String)> = vec![
        ("clocks/commands/clock-1/ack".into(), "not json".into()),
        (
            "clocks/commands/clock-1/ack".into(),
            format!(r#"{{"commandId":"{ok}","status":"done"}}"#),
        ),
        (
            "clocks/commands/clock-1/ack".into(),
            format!(r#"{{"commandId":"{ok}","status":"succeeded","extra":true}}"#),
        ),
        // Another device cannot confirm clock-1's command.
        (
            "clocks/commands/clock-3/ack".into(),
            format!(r#"{{"commandId":"{ok}","status":"succeeded"}}"#),
        ),
        (
            "clocks/commands/clock-1/ack".into(),
            format!(
                r#"{{"commandId":"{}","status":"succeeded"}}"#,
                uuid::Uuid::now_v7()
            ),
        ),
    ];
    for (topic, payload) in &bad {
        device.ack(topic, payload).await;
    }
    eventually(Duration::from_secs(10), "5 ignored acks", || async {
        (metric(&app, "clock_server_acks_total{outcome=\"ignored\"}").await >= 5).then_some(())
    })
    .await;
    assert_eq!(get_record(&app, OPS_TOKEN, &ok).await.1["status"], "sent");

    device
        .ack(
            "clocks/commands/clock-1/ack",
            &format!(r#"{{"commandId":"{ok}","status":"succeeded"}}"#),
        )
        .await;
    let record = status_becomes(&app, &ok, "succeeded").await;
    assert!(is_utc_millis(&record["completedAt"]));
    device
        .ack(
            "clocks/commands/clock-2/ack",
            &format!(r#"{{"commandId":"{failed}","status":"failed","reason":"display busy"}}"#),
        )
        .await;
    let record = status_becomes(&app, &failed, "failed").await;
    assert_eq!(record["statusReason"]["message"], "display busy");
    // A duplicate, even a contradicting one, changes nothing: the first final status wins.
    device
        .ack(
            "clocks/commands/clock-1/ack",
            &format!(r#"{{"commandId":"{ok}","status":"failed"}}"#),
        )
        .await;
    eventually(Duration::from_secs(10), "6 ignored acks", || async {
        (metric(&app, "clock_server_acks_total{outcome=\"ignored\"}").await >= 6).then_some(())
    })
    .await;
    assert_eq!(
        get_record(&app, OPS_TOKEN, &ok).await.1["status"],
        "succeeded"
    );
    assert_eq!(
        metric(&app, "clock_server_acks_total{outcome=\"applied\"}").await,
        2
    );
    assert_eq!(
        metric(
            &app,
            "clock_server_commands_total{type=\"display_message\",status=\"succeeded\"}"
        )
        .await,
        1
    );
}

#[tokio::test]
async fn a_late_acknowledgement_after_expiry_is_ignored() {
    let broker = Mosquitto::start_plain();
    let app = mqtt_app(&broker, &[]).await;
    let device = Device::connect(broker.port).await;
    let mut body = msg("clock-4");
    body["ttlSeconds"] = json!(1);
    let (_, _, answer) = post(&app, OPS_TOKEN, &body, None).await;
    let id = json(&answer)["commandId"].as_str().unwrap().to_owned();
    device.received(&id).await;
    status_becomes(&app, &id, "expired").await;
    device
        .ack(
            "clocks/commands/clock-4/ack",
            &format!(r#"{{"commandId":"{id}","status":"succeeded"}}"#),
        )
        .await;
    eventually(
        Duration::from_secs(10),
        "the late ack to be ignored",
        || async {
            (metric(&app, "clock_server_acks_total{outcome=\"ignored\"}").await >= 1).then_some(())
        },
    )
    .await;
    assert_eq!(
        get_record(&app, OPS_TOKEN, &id).await.1["status"],
        "expired"
    );
}

// ---------------------------------------------------------------------------------------
// An acknowledgement that overtakes the broker's PUBACK (SPEC 7.4)
// ---------------------------------------------------------------------------------------

/// The PUBLISH a hand-written broker receives: its packet id and JSON payload.
fn parse_publish(first: u8, body: &[u8]) -> (u16, Value) {
    assert_eq!(first >> 4, 3, "PUBLISH expected");
    assert_eq!((first >> 1) & 3, 1, "QoS 1 expected");
    let topic_len = usize::from(u16::from_be_bytes([body[0], body[1]]));
    let mut at = 2 + topic_len;
    let packet_id = u16::from_be_bytes([body[at], body[at + 1]]);
    at += 2;
    // Properties: a variable byte integer length, then that many bytes.
    let (mut props_len, mut shift) = (0usize, 0);
    loop {
        let b = body[at];
        at += 1;
        props_len |= usize::from(b & 0x7f) << shift;
        shift += 7;
        if b & 0x80 == 0 {
            break;
        }
    }
    (packet_id, json(&body[at + props_len..]))
}

/// A QoS 0 PUBLISH with no properties.
fn publish_packet(topic: &str, payload: &[u8]) -> Vec<u8> {
    let mut body = (topic.len() as u16).to_be_bytes().to_vec();
    body.extend(topic.as_bytes());
    body.push(0); // no properties
    body.extend(payload);
    let mut packet = vec![0x30];
    packet.extend(common::mqtt_peer::varint(body.len() as u32));
    packet.extend(body);
    packet
}

#[tokio::test]
async fn an_ack_that_overtakes_the_puback_is_applied_and_the_record_shows_sent_at_too() {
    use common::mqtt_peer::{CONNACK, read_packet, suback};
    use tokio::io::AsyncWriteExt;

    // Mosquitto always sends the PUBACK first, so the broker here is a hand-written one
    // that holds the PUBACK back while the device's acknowledgement goes through.
    const LIMIT: Duration = Duration::from_secs(10);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("mqtt://{}", listener.local_addr().unwrap());
    let app = start(
        &env_with(&[
            ("ENABLED_SENDERS", "mqtt"),
            ("MQTT_BROKER_URL", url.as_str()),
            ("ALLOW_INSECURE_MQTT", "true"),
            ("READINESS_REQUIRE_AUTH", "false"),
        ]),
        None,
    )
    .await
    .unwrap();
    let (mut broker, _) = tokio::time::timeout(LIMIT, listener.accept())
        .await
        .unwrap()
        .unwrap();
    let (kind, _) = read_packet(&mut broker).await.unwrap();
    assert_eq!(kind >> 4, 1, "CONNECT expected");
    broker.write_all(&CONNACK).await.unwrap();

    // Answer the acknowledgement SUBSCRIBE (and any ping) until the command's PUBLISH.
    let app = Arc::new(app);
    let submit = {
        let app = app.clone();
        tokio::spawn(async move { post(&app, OPS_TOKEN, &msg("clock-1"), None).await })
    };
    let (packet_id, payload) = tokio::time::timeout(LIMIT, async {
        loop {
            let (first, body) = read_packet(&mut broker).await.expect("a packet");
            match first >> 4 {
                8 => broker.write_all(&suback(&body)).await.unwrap(),
                12 => broker.write_all(&[0xd0, 0x00]).await.unwrap(),
                3 => return parse_publish(first, &body),
                other => panic!("unexpected packet type {other}"),
            }
        }
    })
    .await
    .expect("the command's PUBLISH");
    let id = payload["commandId"].as_str().unwrap().to_owned();

    // The device answers before the broker's PUBACK has reached the server.
    let ack = format!(r#"{{"commandId":"{id}","status":"succeeded"}}"#);
    broker
        .write_all(&publish_packet(
            "clocks/commands/clock-1/ack",
            ack.as_bytes(),
        ))
        .await
        .unwrap();
    let record = status_becomes(&app, &id, "succeeded").await;
    assert!(record["sentAt"].is_null(), "{record}");
    assert!(
        !submit.is_finished(),
        "the 202 must still wait for the PUBACK"
    );

    // Then the PUBACK: the caller gets its 202 and the record keeps its final status,
    // now with `sentAt` as well.
    let mut puback = vec![0x40, 0x02];
    puback.extend(packet_id.to_be_bytes());
    broker.write_all(&puback).await.unwrap();
    let (status, _, answer) = tokio::time::timeout(LIMIT, submit).await.unwrap().unwrap();
    assert_eq!(status, 202, "{}", String::from_utf8_lossy(&answer));
    assert_eq!(json(&answer)["commandId"], id);
    let (_, record) = get_record(&app, OPS_TOKEN, &id).await;
    assert_eq!(record["status"], "succeeded", "{record}");
    assert!(is_utc_millis(&record["sentAt"]), "{record}");
    assert!(is_utc_millis(&record["completedAt"]), "{record}");
}

// ---------------------------------------------------------------------------------------
// Acknowledgements that cannot apply, a store that stalls, and shutdown
// ---------------------------------------------------------------------------------------

/// A devices file naming `kitchen` an AWTRIX 3 clock (no acknowledgements, alarms held).
fn awtrix_devices() -> tempfile::NamedTempFile {
    use std::io::Write;
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(b"[devices.kitchen]\nprofile = \"awtrix3\"\ntopic = \"awtrix_k1\"\n")
        .unwrap();
    file
}

#[tokio::test]
async fn an_ack_applies_only_to_a_sent_command_of_a_device_that_acknowledges_and_only_as_an_object()
{
    let broker = Mosquitto::start_plain();
    let devices = awtrix_devices();
    let path = devices.path().display().to_string();
    let app = mqtt_app(&broker, &[("DEVICES_FILE", path.as_str())]).await;
    let device = Device::connect(broker.port).await;
    let alarm_at = (chrono::Utc::now() + chrono::Duration::seconds(60)).to_rfc3339();
    let (status, body) = app
        .call(
            reqwest::Method::POST,
            "/commands/alarms",
            &json!({"deviceId": "kitchen", "alarmTime": alarm_at}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["status"], "scheduled");
    let alarm = body["commandId"].as_str().unwrap().to_owned();
    let (status, body) = app
        .call(reqwest::Method::POST, "/commands/messages", &msg("kitchen"))
        .await;
    assert_eq!(status, 202, "{body}");
    let message = body["commandId"].as_str().unwrap().to_owned();
    let (status, _, answer) = post(&app, OPS_TOKEN, &msg("clock-1"), None).await;
    assert_eq!(status, 202);
    let generic = json(&answer)["commandId"].as_str().unwrap().to_owned();
    device.received(&generic).await;

    // A scheduled alarm has not left the gateway; an AWTRIX clock never acknowledges; an
    // acknowledgement is exactly the object, never an array read into it.
    for (topic, payload) in [
        (
            "clocks/commands/kitchen/ack",
            format!(r#"{{"commandId":"{alarm}","status":"succeeded"}}"#),
        ),
        (
            "clocks/commands/kitchen/ack",
            format!(r#"{{"commandId":"{message}","status":"succeeded"}}"#),
        ),
        (
            "clocks/commands/clock-1/ack",
            format!(r#"["{generic}","succeeded"]"#),
        ),
    ] {
        device.ack(topic, &payload).await;
    }
    eventually(Duration::from_secs(10), "3 ignored acks", || async {
        (metric(&app, "clock_server_acks_total{outcome=\"ignored\"}").await >= 3).then_some(())
    })
    .await;
    assert_eq!(
        get_record(&app, OPS_TOKEN, &alarm).await.1["status"],
        "scheduled"
    );
    assert_eq!(
        get_record(&app, OPS_TOKEN, &message).await.1["status"],
        "sent"
    );
    assert_eq!(
        get_record(&app, OPS_TOKEN, &generic).await.1["status"],
        "sent"
    );
    assert_eq!(
        metric(&app, "clock_server_acks_total{outcome=\"applied\"}").await,
        0
    );
}

#[tokio::test]
async fn after_a_store_stall_a_finished_key_is_replayed_not_left_in_progress() {
    let redis = common::redis::Redis::start();
    let url = redis.url();
    let app = spawn_app(&[("STATE_STORE", url.as_str())]).await;
    app.fake().hold.store(true, SeqCst);
    let first = {
        let (client, url) = (app.client.clone(), app.url("/commands/messages"));
        tokio::spawn(async move {
            client
                .post(url)
                .bearer_auth(OPS_TOKEN)
                .header("idempotency-key", "stall-1")
                .json_body(&msg("clock-1"))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        })
    };
    app.fake().started.notified().await;
    // The store stalls while the command is on its way: its status and its key cannot be
    // saved when the transport accepts it.
    redis.pause();
    app.fake().release.notify_one();
    assert_eq!(first.await.unwrap(), 202);
    redis.resume();

    // Once the store is back, a retry gets the remembered answer: no 409 for a minute,
    // and never a second delivery.
    let (headers, answer) = eventually(Duration::from_secs(20), "the replay", || async {
        let (status, headers, answer) =
            post(&app, OPS_TOKEN, &msg("clock-1"), Some("stall-1")).await;
        (status == 202).then_some((headers, answer))
    })
    .await;
    assert_eq!(headers["idempotent-replayed"], "true");
    assert_eq!(app.fake().sent().len(), 1);
    assert_eq!(
        json(&answer)["commandId"].as_str(),
        Some(app.fake().sent()[0].command_id.as_str())
    );
}

#[tokio::test]
async fn every_background_task_of_the_core_stops_on_shutdown() {
    let broker = Mosquitto::start_plain();
    let devices = awtrix_devices();
    let path = devices.path().display().to_string();
    // A store (purge), MQTT (the acknowledgement loop) and an AWTRIX clock (the alarm
    // scheduler): every background task the core has.
    let app = mqtt_app(&broker, &[("DEVICES_FILE", path.as_str())]).await;
    let commands = app.commands.clone();
    assert!(
        commands.running_tasks() >= 3,
        "{} tasks",
        commands.running_tasks()
    );
    app.stop().await;
    assert_eq!(commands.running_tasks(), 0);
}

// ---------------------------------------------------------------------------------------
// A flood on the ack topics (issue 27 item 4).

/// Publishes junk acknowledgements at QoS 0 as fast as it can until `stop`: ids that are
/// not UUIDs, random UUIDv4s, and fresh UUIDv7s that name no command (those reach the
/// store). Returns how many it published.
fn flood(port: u16, stop: Arc<std::sync::atomic::AtomicBool>) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let client = MqttClient::with_options(ConnectOptions::new(format!(
            "test-flood-{}",
            uuid::Uuid::now_v7().simple()
        )));
        client
            .connect(&format!("mqtt://127.0.0.1:{port}"))
            .await
            .unwrap();
        let options = PublishOptions {
            qos: QoS::AtMostOnce,
            ..PublishOptions::default()
        };
        let mut sent = 0u64;
        while !stop.load(SeqCst) {
            let id = match sent % 4 {
                0 => format!("junk-{sent}"),
                1 | 2 => uuid::Builder::from_random_bytes(rand_bytes(sent))
                    .into_uuid()
                    .to_string(),
                _ => uuid::Uuid::now_v7().to_string(),
            };
            let topic = format!("clocks/commands/clock-{}/ack", sent % 8);
            let payload = format!(r#"{{"commandId":"{id}","status":"succeeded"}}"#);
            if client
                .publish_with_options(&topic, payload.into_bytes(), options.clone())
                .await
                .is_err()
            {
                break;
            }
            sent += 1;
        }
        sent
    })
}

/// 16 bytes that differ for every `n` (a random-looking UUIDv4 without a RNG crate).
fn rand_bytes(n: u64) -> [u8; 16] {
    let mut bytes = [0u8; 16];
    let h = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    bytes[..8].copy_from_slice(&h.to_le_bytes());
    bytes[8..].copy_from_slice(&(h ^ 0xDEAD_BEEF_CAFE_F00D).rotate_left(17).to_le_bytes());
    bytes
}

async fn real_acks_are_all_applied_during_a_flood_of_junk_acks(store: &str) {
    let broker = Mosquitto::start_plain();
    let app = mqtt_app(&broker, &[("STATE_STORE", store)]).await;
    let device = Device::connect(broker.port).await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flooders: Vec<_> = (0..2).map(|_| flood(broker.port, stop.clone())).collect();
    // Let the flood build up first.
    eventually(Duration::from_secs(10), "the flood to arrive", || async {
        (metric(&app, "clock_server_acks_total{outcome=\"ignored\"}").await > 5000).then_some(())
    })
    .await;

    // 400 real commands, eight clocks at a time, each acknowledged as soon as its 202 is
    // there (the record exists then).
    let clock = |c: usize| {
        let (app, device) = (&app, &device);
        async move {
            let mut ids = Vec::new();
            for _ in 0..50 {
                let (status, _, answer) =
                    post(app, OPS_TOKEN, &msg(&format!("clock-{c}")), None).await;
                assert_eq!(status, 202);
                let id = json(&answer)["commandId"].as_str().unwrap().to_owned();
                device
                    .ack(
                        &format!("clocks/commands/clock-{c}/ack"),
                        &format!(r#"{{"commandId":"{id}","status":"succeeded"}}"#),
                    )
                    .await;
                ids.push(id);
            }
            ids
        }
    };
    let ids: Vec<String> = futures_util::future::join_all((0..8).map(clock))
        .await
        .into_iter()
        .flatten()
        .collect();
    stop.store(true, SeqCst);
    let mut junk = 0;
    for flooder in flooders {
        junk += flooder.await.unwrap();
    }
    for id in &ids {
        status_becomes(&app, id, "succeeded").await;
    }
    assert_eq!(
        metric(&app, "clock_server_acks_total{outcome=\"applied\"}").await,
        400
    );
    // Every junk ack that arrived was refused or found no command, and counted.
    let ignored = metric(&app, "clock_server_acks_total{outcome=\"ignored\"}").await;
    let dropped = metric(&app, "clock_server_acks_total{outcome=\"dropped\"}").await;
    assert!(ignored + dropped <= junk, "{ignored} + {dropped} of {junk}");
    assert!(ignored > 5000, "{ignored} of {junk} junk acks counted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_file_store_real_acks_are_all_applied_during_a_flood_of_junk_acks() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("file:{}", dir.path().join("state.db").display());
    real_acks_are_all_applied_during_a_flood_of_junk_acks(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_redis_store_real_acks_are_all_applied_during_a_flood_of_junk_acks() {
    let redis = common::redis::Redis::start();
    real_acks_are_all_applied_during_a_flood_of_junk_acks(&redis.url()).await;
}
