//! The `awtrix3` profile end to end (SPEC 8.1): the real application, a real Mosquitto and
//! a subscriber that checks topics and payloads byte for byte; alarms the gateway holds
//! (scheduled, published at their time once, cancelled, a broker outage within and past
//! the grace, a restart with `file:`).
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use clock_server::domain::awtrix3::BUILT_IN_MELODY;
use common::app::{CLOCKS_TOKEN, OPS_TOKEN, TestApp as App, env_with, start};
use common::eventually;
use common::mosquitto::Mosquitto;
use common::subscriber::Subscriber;
use serde_json::{Value, json};

const DEVICES: &str = r#"
[devices.kitchen]
profile = "awtrix3"
topic = "awtrix_k1"
alarm_rtttl = "alarm:d=4,o=5,b=140:c6,p,c6"

[devices.hall]
profile = "awtrix3"
topic = "home/awtrix/hall"
"#;

/// The devices file, kept for as long as the test runs.
fn devices_file() -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(DEVICES.as_bytes()).unwrap();
    file
}

fn env(
    broker_url: &str,
    devices: &tempfile::NamedTempFile,
    vars: &[(&str, &str)],
) -> HashMap<String, String> {
    let mut env = env_with(&[
        ("ENABLED_SENDERS", "mqtt"),
        ("MQTT_BROKER_URL", broker_url),
        ("ALLOW_INSECURE_MQTT", "true"),
        ("READINESS_REQUIRE_AUTH", "false"),
        ("MQTT_PUBLISH_TIMEOUT_MS", "1000"),
    ]);
    env.insert("DEVICES_FILE".into(), devices.path().display().to_string());
    for (k, v) in vars {
        env.insert((*k).to_owned(), (*v).to_owned());
    }
    env
}

async fn spawn(broker_url: &str, devices: &tempfile::NamedTempFile, vars: &[(&str, &str)]) -> App {
    match start(&env(broker_url, devices, vars), None).await {
        Ok(app) => app,
        Err(e) => panic!("the application did not start: {e}"),
    }
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// An alarm time `secs` from now (negative: in the past), at second precision as a caller
/// would write it.
fn alarm_at(secs: i64) -> DateTime<Utc> {
    let t = Utc::now() + chrono::Duration::seconds(secs);
    DateTime::from_timestamp(t.timestamp(), 0).unwrap()
}

impl App {
    async fn alarm(&self, device: &str, at: DateTime<Utc>, label: Option<&str>) -> (u16, Value) {
        let mut body = json!({"deviceId": device, "alarmTime": at.to_rfc3339()});
        if let Some(label) = label {
            body["label"] = json!(label);
        }
        self.call(reqwest::Method::POST, "/commands/alarms", &body)
            .await
    }

    async fn record(&self, id: &str) -> Value {
        let res = self.get(&format!("/commands/{id}"), Some(OPS_TOKEN)).await;
        assert_eq!(res.status(), 200);
        res.json_value().await
    }

    async fn status_is(&self, id: &str, status: &str, limit: Duration) -> Value {
        eventually(limit, &format!("{id} to be {status}"), || async {
            let record = self.record(id).await;
            (record["status"] == status).then_some(record)
        })
        .await
    }

    async fn wait_until_ready(&self) {
        eventually(Duration::from_secs(30), "/ready", || async {
            (self.get("/ready", None).await.status() == 200).then_some(())
        })
        .await;
    }
}

trait JsonValue {
    async fn json_value(self) -> Value;
}

impl JsonValue for reqwest::Response {
    async fn json_value(self) -> Value {
        serde_json::from_str(&self.text().await.unwrap()).unwrap()
    }
}

fn id_of(body: &Value) -> String {
    body["commandId"].as_str().unwrap().to_owned()
}

fn text(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).unwrap()
}

#[tokio::test]
async fn messages_and_brightness_reach_the_clocks_topics_exactly_and_never_retained() {
    let broker = Mosquitto::start_plain();
    let sub = Subscriber::plain(broker.port).await;
    let devices = devices_file();
    // MQTT_RETAINED=true applies to generic devices only: a retained notification would be
    // shown again at every reconnection of the clock.
    let app = spawn(&broker.url(), &devices, &[("MQTT_RETAINED", "true")]).await;
    app.wait_until_ready().await;

    // Each level: the matrix powered on, then BRI; 0 powers it off (and nothing else).
    let mut want = Vec::new();
    for (level, bri) in [(40, 102), (0, 0), (100, 255), (1, 3)] {
        let (status, body) = app
            .call(
                reqwest::Method::PUT,
                "/commands/brightness",
                &json!({"deviceId": "kitchen", "level": level}),
            )
            .await;
        assert_eq!(status, 202, "{body}");
        assert_eq!(body["status"], "sent");
        if level == 0 {
            want.push((
                "awtrix_k1/power".to_owned(),
                r#"{"power":false}"#.to_owned(),
            ));
        } else {
            want.push(("awtrix_k1/power".to_owned(), r#"{"power":true}"#.to_owned()));
            want.push((
                "awtrix_k1/settings".to_owned(),
                format!(r#"{{"ABRI":false,"BRI":{bri}}}"#),
            ));
        }
        let record = app.record(&id_of(&body)).await;
        assert_eq!(record["deviceAcks"], false);
        assert_eq!(record["status"], "sent");
    }
    let got = eventually(
        Duration::from_secs(10),
        "the power and settings",
        || async {
            let got: Vec<_> = sub
                .all()
                .into_iter()
                .filter(|r| r.topic.starts_with("awtrix_k1/"))
                .collect();
            (got.len() == want.len()).then_some(got)
        },
    )
    .await;
    let seen: Vec<(String, String)> = got
        .iter()
        .map(|r| (r.topic.clone(), text(&r.bytes).to_owned()))
        .collect();
    assert_eq!(seen, want, "in this order, each exactly once");
    for r in &got {
        assert!(!r.retain, "never retained");
        assert!(r.expiry.is_some(), "a tracked command carries its expiry");
        assert!(
            !r.request_response,
            "no response topic for a clock that never answers"
        );
    }

    let (status, body) = app
        .call(
            reqwest::Method::POST,
            "/commands/messages",
            &json!({"deviceId": "hall", "message": "Tea \"now\" ☕\nČaj, Łódź", "durationSeconds": 15}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let got = eventually(Duration::from_secs(10), "the notification", || async {
        sub.on("home/awtrix/hall/notify").into_iter().next()
    })
    .await;
    assert_eq!(
        text(&got.bytes),
        r#"{"text":"Tea \"now\" coffee  Caj, Łódź","duration":15}"#,
        "☕ and č transliterated, the line break a space; Ł, ó, ź kept (the font has them)"
    );
    assert!(!got.retain);

    // A generic device on the same server keeps its topic, payload and retained flag.
    let (status, body) = app
        .call(
            reqwest::Method::PUT,
            "/commands/brightness",
            &json!({"deviceId": "clock-1", "level": 40}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let got = eventually(Duration::from_secs(10), "the generic command", || async {
        sub.on("clocks/commands/clock-1/set_brightness")
            .into_iter()
            .next()
    })
    .await;
    assert_eq!(got.payload["level"], 40);
    assert!(got.retain && got.request_response);

    // Only these topics were used: nothing went to the generic topics of the clocks.
    let mut topics: Vec<String> = sub.all().into_iter().map(|r| r.topic).collect();
    topics.sort();
    topics.dedup();
    assert_eq!(
        topics,
        [
            "awtrix_k1/power",
            "awtrix_k1/settings",
            "clocks/commands/clock-1/set_brightness",
            "home/awtrix/hall/notify"
        ]
    );
    app.stop().await;
}

#[tokio::test]
async fn scopes_apply_to_the_device_ids_of_the_devices_file() {
    let broker = Mosquitto::start_plain();
    let devices = devices_file();
    let app = spawn(&broker.url(), &devices, &[]).await;
    // `clocks` may address clock-* only.
    let res = app
        .client
        .put(app.url("/commands/brightness"))
        .bearer_auth(CLOCKS_TOKEN)
        .header("content-type", "application/json")
        .body(r#"{"deviceId":"kitchen","level":10}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    app.stop().await;
}

#[tokio::test]
async fn alarms_are_held_and_published_at_their_time_once_with_and_without_label_and_melody() {
    let broker = Mosquitto::start_plain();
    let sub = Subscriber::plain(broker.port).await;
    let devices = devices_file();
    let app = spawn(&broker.url(), &devices, &[("COMMAND_TTL_SECS", "300")]).await;
    app.wait_until_ready().await;

    let at = alarm_at(3);
    let (status, kitchen) = app.alarm("kitchen", at, Some("Wake up")).await;
    assert_eq!(status, 202, "{kitchen}");
    assert_eq!(kitchen["result"], "scheduled");
    assert_eq!(kitchen["status"], "scheduled");
    assert_eq!(
        kitchen["expiresAt"],
        rfc3339(at + chrono::Duration::seconds(300)),
        "expiresAt is the alarm time plus the TTL"
    );
    let (status, hall) = app.alarm("hall", at, None).await;
    assert_eq!(status, 202, "{hall}");
    let record = app.record(&id_of(&kitchen)).await;
    assert_eq!(record["status"], "scheduled");
    assert_eq!(record["deviceAcks"], false);
    assert_eq!(record["sentAt"], Value::Null);

    let kitchen_got = eventually(Duration::from_secs(10), "the kitchen alarm", || async {
        sub.on("awtrix_k1/notify").into_iter().next()
    })
    .await;
    assert_eq!(
        text(&kitchen_got.bytes),
        r#"{"text":"Wake up","hold":true,"wakeup":true,"loopSound":true,"rtttl":"alarm:d=4,o=5,b=140:c6,p,c6"}"#
    );
    assert!(
        kitchen_got.wall >= at,
        "published early: at {} for {at}",
        kitchen_got.wall
    );
    assert!(!kitchen_got.retain && !kitchen_got.request_response);
    let hall_got = eventually(Duration::from_secs(10), "the hall alarm", || async {
        sub.on("home/awtrix/hall/notify").into_iter().next()
    })
    .await;
    // No alarm_rtttl: the built-in melody, so the alarm still rings.
    assert_eq!(
        text(&hall_got.bytes),
        format!(
            r#"{{"text":"Alarm","hold":true,"wakeup":true,"loopSound":true,"rtttl":"{BUILT_IN_MELODY}"}}"#
        )
    );
    assert!(hall_got.wall >= at);

    let record = app
        .status_is(&id_of(&kitchen), "sent", Duration::from_secs(5))
        .await;
    let sent_at: DateTime<Utc> = record["sentAt"].as_str().unwrap().parse().unwrap();
    assert!(sent_at >= at, "sentAt {sent_at} before the alarm time {at}");
    app.status_is(&id_of(&hall), "sent", Duration::from_secs(5))
        .await;

    // Several more ticks of the scheduler: nothing is published a second time.
    common::observe_for(Duration::from_millis(1500)).await;
    assert_eq!(sub.on("awtrix_k1/notify").len(), 1);
    assert_eq!(sub.on("home/awtrix/hall/notify").len(), 1);
    app.stop().await;
}

#[tokio::test]
async fn an_alarm_time_already_reached_fires_at_once() {
    let broker = Mosquitto::start_plain();
    let sub = Subscriber::plain(broker.port).await;
    let devices = devices_file();
    let app = spawn(&broker.url(), &devices, &[]).await;
    app.wait_until_ready().await;
    let (status, body) = app.alarm("hall", alarm_at(-30), Some("late")).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["status"], "scheduled");
    let got = eventually(Duration::from_secs(3), "the alarm", || async {
        sub.on("home/awtrix/hall/notify").into_iter().next()
    })
    .await;
    assert_eq!(
        text(&got.bytes),
        format!(
            r#"{{"text":"late","hold":true,"wakeup":true,"loopSound":true,"rtttl":"{BUILT_IN_MELODY}"}}"#
        )
    );
    app.status_is(&id_of(&body), "sent", Duration::from_secs(5))
        .await;
    app.stop().await;
}

#[tokio::test]
async fn a_cancelled_alarm_is_never_published() {
    let broker = Mosquitto::start_plain();
    let sub = Subscriber::plain(broker.port).await;
    let devices = devices_file();
    let app = spawn(&broker.url(), &devices, &[]).await;
    app.wait_until_ready().await;
    let at = alarm_at(2);
    let (status, body) = app.alarm("kitchen", at, Some("cancel me")).await;
    assert_eq!(status, 202, "{body}");
    let id = id_of(&body);
    let res = app
        .client
        .delete(app.url(&format!("/commands/{id}")))
        .bearer_auth(OPS_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let record = res.json_value().await;
    assert_eq!(record["status"], "cancelled");
    // A second alarm at the same time shows when the first would have gone out.
    let (status, witness) = app.alarm("kitchen", at, Some("witness")).await;
    assert_eq!(status, 202, "{witness}");
    app.status_is(&id_of(&witness), "sent", Duration::from_secs(10))
        .await;
    let notes: Vec<String> = sub
        .on("awtrix_k1/notify")
        .into_iter()
        .map(|r| r.payload["text"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(notes, ["witness"]);
    assert_eq!(app.record(&id).await["status"], "cancelled");
    let again = app
        .client
        .delete(app.url(&format!("/commands/{id}")))
        .bearer_auth(OPS_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 409);
    app.stop().await;
}

/// A broker whose durable subscriber keeps its session across a restart, so anything
/// published after the restart is seen even before the subscriber reconnects.
fn persistent_broker(dir: &tempfile::TempDir) -> Mosquitto {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    Mosquitto::start_with(&format!(
        "allow_anonymous true\npersistence true\npersistence_location {}/\n",
        dir.path().display()
    ))
}

/// A running server whose broker has just gone away, with a durable subscriber that will
/// see whatever is published once the broker is back.
struct BrokerDown {
    _persist: tempfile::TempDir,
    broker: Mosquitto,
    sub: Subscriber,
    _devices: tempfile::NamedTempFile,
    app: App,
}

async fn broker_down() -> BrokerDown {
    let persist = tempfile::tempdir().unwrap();
    let mut broker = persistent_broker(&persist);
    let sub = Subscriber::durable(broker.port).await;
    let devices = devices_file();
    let app = spawn(&broker.url(), &devices, &[]).await;
    app.wait_until_ready().await;

    broker.stop_gracefully();
    eventually(Duration::from_secs(5), "not ready", || async {
        (app.get("/ready", None).await.status() == 503).then_some(())
    })
    .await;
    BrokerDown {
        _persist: persist,
        broker,
        sub,
        _devices: devices,
        app,
    }
}

#[tokio::test]
async fn a_broker_down_at_fire_time_and_back_within_the_grace_gets_the_alarm_once() {
    let BrokerDown {
        _persist,
        mut broker,
        sub,
        _devices,
        app,
    } = broker_down().await;
    // Due at once, with 15 s of grace left.
    let (status, body) = app.alarm("kitchen", alarm_at(-45), Some("outage")).await;
    assert_eq!(status, 202, "{body}");
    let id = id_of(&body);
    // Several claims while the broker is away: the alarm stays scheduled.
    common::observe_for(Duration::from_secs(2)).await;
    assert_eq!(app.record(&id).await["status"], "scheduled");

    broker.start();
    app.status_is(&id, "sent", Duration::from_secs(14)).await;
    let got = eventually(Duration::from_secs(10), "the alarm", || async {
        sub.on("awtrix_k1/notify").into_iter().next()
    })
    .await;
    assert_eq!(got.payload["text"], "outage");
    common::observe_for(Duration::from_millis(1500)).await;
    assert_eq!(sub.on("awtrix_k1/notify").len(), 1, "published once");
    app.stop().await;
}

#[tokio::test]
async fn a_broker_down_past_the_grace_fails_the_alarm_which_is_never_published() {
    let BrokerDown {
        _persist,
        mut broker,
        sub,
        _devices,
        app,
    } = broker_down().await;
    // Due at once, with 3 s of grace left.
    let (status, body) = app.alarm("kitchen", alarm_at(-57), Some("missed")).await;
    assert_eq!(status, 202, "{body}");
    let id = id_of(&body);
    let record = app.status_is(&id, "failed", Duration::from_secs(10)).await;
    assert_eq!(record["statusReason"]["code"], "schedule_missed");
    assert_eq!(record["sentAt"], Value::Null);

    broker.start();
    app.wait_until_ready().await;
    // A command sent after the broker is back arrives; the missed alarm never does.
    let (status, body) = app
        .call(
            reqwest::Method::POST,
            "/commands/messages",
            &json!({"deviceId": "kitchen", "message": "after", "durationSeconds": 5}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    eventually(
        Duration::from_secs(10),
        "the message after the outage",
        || async {
            sub.on("awtrix_k1/notify")
                .into_iter()
                .find(|r| r.payload["text"] == "after")
        },
    )
    .await;
    common::observe_for(Duration::from_secs(1)).await;
    let texts: Vec<Value> = sub
        .on("awtrix_k1/notify")
        .into_iter()
        .map(|r| r.payload["text"].clone())
        .collect();
    assert_eq!(texts, [json!("after")]);
    assert_eq!(app.record(&id).await["status"], "failed");
    app.stop().await;
}

#[tokio::test]
async fn a_pending_alarm_survives_a_restart_with_a_file_store() {
    let broker = Mosquitto::start_plain();
    let sub = Subscriber::plain(broker.port).await;
    let devices = devices_file();
    let dir = tempfile::tempdir().unwrap();
    let store = format!("file:{}", dir.path().join("state.db").display());
    let vars = [("STATE_STORE", store.as_str())];

    let app = spawn(&broker.url(), &devices, &vars).await;
    app.wait_until_ready().await;
    let at = alarm_at(4);
    let (status, body) = app.alarm("kitchen", at, Some("after restart")).await;
    assert_eq!(status, 202, "{body}");
    let id = id_of(&body);
    app.stop().await;
    assert!(
        Utc::now() < at,
        "the first server stopped before the alarm time"
    );
    assert!(sub.on("awtrix_k1/notify").is_empty());

    let app = spawn(&broker.url(), &devices, &vars).await;
    let record = app.record(&id).await;
    assert_eq!(record["status"], "scheduled");
    let got = eventually(
        Duration::from_secs(15),
        "the alarm after the restart",
        || async { sub.on("awtrix_k1/notify").into_iter().next() },
    )
    .await;
    assert_eq!(got.payload["text"], "after restart");
    assert!(got.wall >= at);
    app.status_is(&id, "sent", Duration::from_secs(5)).await;
    app.stop().await;
}

#[tokio::test]
async fn with_mqtt_and_rest_enabled_an_awtrix_clock_is_reached_over_mqtt_only() {
    let broker = Mosquitto::start_plain();
    let sub = Subscriber::plain(broker.port).await;
    let devices = devices_file();
    // A REST downstream where nothing listens: every command that goes there fails.
    let dead = format!("http://127.0.0.1:{}", common::free_port());
    let app = spawn(
        &broker.url(),
        &devices,
        &[
            ("ENABLED_SENDERS", "mqtt,rest"),
            ("CLOCK_REST_BASE_URL", &dead),
            ("ALLOW_INSECURE_DOWNSTREAM_HTTP", "true"),
        ],
    )
    .await;
    app.wait_until_ready().await;
    let message =
        |device: &'static str| json!({"deviceId": device, "message": "hi", "durationSeconds": 5});
    let (status, body) = app
        .call(
            reqwest::Method::POST,
            "/commands/messages",
            &message("kitchen"),
        )
        .await;
    assert_eq!(status, 202, "the REST transport is not asked: {body}");
    eventually(Duration::from_secs(10), "the notification", || async {
        sub.on("awtrix_k1/notify").into_iter().next()
    })
    .await;
    let (status, body) = app
        .call(
            reqwest::Method::POST,
            "/commands/messages",
            &message("clock-1"),
        )
        .await;
    assert_eq!(status, 502, "a generic device goes to both: {body}");
    app.stop().await;
}

#[tokio::test]
async fn a_brightness_is_accepted_only_once_every_publish_it_needs_was() {
    // The broker refuses the settings topic (an ACL), so the power publish goes out but
    // the command cannot be completed.
    let dir = tempfile::tempdir().unwrap();
    let acl = dir.path().join("acl");
    std::fs::write(&acl, "topic deny awtrix_k1/settings\ntopic readwrite #\n").unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&acl, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let broker = Mosquitto::start_with(&format!(
        "allow_anonymous true\nacl_file {}\n",
        acl.display()
    ));
    let sub = Subscriber::plain(broker.port).await;
    let devices = devices_file();
    let app = spawn(&broker.url(), &devices, &[]).await;
    app.wait_until_ready().await;
    let brightness = |level: u8| json!({"deviceId": "kitchen", "level": level});

    let (status, body) = app
        .call(
            reqwest::Method::PUT,
            "/commands/brightness",
            &brightness(40),
        )
        .await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"], "command dispatch failed");
    let record = app.record(&id_of(&body)).await;
    assert_eq!(record["status"], "failed");
    assert_eq!(record["statusReason"]["code"], "dispatch_failed");
    eventually(Duration::from_secs(10), "the power publish", || async {
        sub.on("awtrix_k1/power").into_iter().next()
    })
    .await;

    // Level 0 needs only the power topic: accepted.
    let (status, body) = app
        .call(reqwest::Method::PUT, "/commands/brightness", &brightness(0))
        .await;
    assert_eq!(status, 202, "{body}");
    app.stop().await;
}

#[tokio::test]
async fn a_text_too_big_for_the_clock_and_a_label_over_256_characters_are_400s() {
    let broker = Mosquitto::start_plain();
    let sub = Subscriber::plain(broker.port).await;
    let devices = devices_file();
    let app = spawn(&broker.url(), &devices, &[]).await;
    app.wait_until_ready().await;

    // {"text":"…","duration":5} is 24 bytes around the text: 4,072 characters fit.
    for (len, status) in [(4072, 202), (4073, 400)] {
        let (got, body) = app
            .call(
                reqwest::Method::POST,
                "/commands/messages",
                &json!({"deviceId": "kitchen", "message": "x".repeat(len), "durationSeconds": 5}),
            )
            .await;
        assert_eq!(got, status, "{len}: {body}");
        if status == 400 {
            assert_eq!(body["error"], "invalid command");
            let detail = body["detail"].as_str().unwrap();
            assert!(
                detail.contains("message") && detail.contains("4096 bytes"),
                "{detail}"
            );
        }
    }
    // The same 4,073 characters reach a generic clock: the limit is the firmware's.
    let (status, body) = app
        .call(
            reqwest::Method::POST,
            "/commands/messages",
            &json!({"deviceId": "clock-1", "message": "x".repeat(4073), "durationSeconds": 5}),
        )
        .await;
    assert_eq!(status, 202, "{body}");

    // A label: at most 256 characters, whatever the device's profile.
    for device in ["kitchen", "clock-1"] {
        let (status, body) = app
            .alarm(device, alarm_at(3600), Some(&"é".repeat(257)))
            .await;
        assert_eq!(status, 400, "{device}: {body}");
        assert_eq!(body["error"], "invalid command");
        assert_eq!(body["detail"], "label must be at most 256 characters");
        let (status, body) = app
            .alarm(device, alarm_at(3600), Some(&"é".repeat(256)))
            .await;
        assert_eq!(status, 202, "{device}: {body}");
    }
    // Only the message that fits reached the AWTRIX clock.
    common::observe_for(Duration::from_millis(300)).await;
    let sizes: Vec<usize> = sub
        .on("awtrix_k1/notify")
        .into_iter()
        .map(|r| r.bytes.len())
        .collect();
    assert_eq!(sizes, [4096]);
    app.stop().await;
}

#[tokio::test]
async fn the_memory_store_warns_at_start_up_that_held_alarms_are_lost_on_restart() {
    let broker = Mosquitto::start_plain();
    let devices = devices_file();
    let path = devices.path().display().to_string();
    let url = broker.url();
    let server = common::process::ServerProcess::start(&server_vars(&url, &path, "memory")).await;
    let logs = eventually(Duration::from_secs(10), "the start-up lines", || async {
        let logs = server.logs();
        logs.contains("listening").then_some(logs)
    })
    .await;
    assert!(
        logs.contains("STATE_STORE=memory loses scheduled alarms on restart")
            && logs.contains(&format!("DEVICES_FILE={path}"))
            && logs.contains("hall,kitchen"),
        "{logs}"
    );
    drop(server);

    let dir = tempfile::tempdir().unwrap();
    let store = format!("file:{}", dir.path().join("state.db").display());
    let server = common::process::ServerProcess::start(&server_vars(&url, &path, &store)).await;
    let logs = eventually(Duration::from_secs(10), "the start-up lines", || async {
        let logs = server.logs();
        logs.contains("listening").then_some(logs)
    })
    .await;
    assert!(!logs.contains("loses scheduled alarms"), "{logs}");
}

/// The binary's variables: one broker, the devices file at `path`, `store`.
fn server_vars<'a>(url: &'a str, path: &'a str, store: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("REQUIRE_TLS", "false"),
        ("API_AUTH_CREDENTIALS", "ops|tok|*"),
        ("ENABLED_SENDERS", "mqtt"),
        ("MQTT_BROKER_URL", url),
        ("ALLOW_INSECURE_MQTT", "true"),
        ("DEVICES_FILE", path),
        ("STATE_STORE", store),
    ]
}

/// A message `token` posts with `Idempotency-Key: key` (if any): status, headers, body.
async fn keyed_message(
    app: &App,
    token: &str,
    device: &str,
    key: Option<&str>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut req = app
        .client
        .post(app.url("/commands/messages"))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(json!({"deviceId": device, "message": "hi", "durationSeconds": 5}).to_string());
    if let Some(key) = key {
        req = req.header("Idempotency-Key", key);
    }
    let res = req.send().await.unwrap();
    let (status, headers) = (res.status().as_u16(), res.headers().clone());
    (status, headers, res.json_value().await)
}

#[tokio::test]
async fn one_credentials_flood_makes_room_from_its_own_sent_commands_never_anothers_alarm_or_key() {
    let broker = Mosquitto::start_plain();
    let sub = Subscriber::plain(broker.port).await;
    let devices = devices_file();
    let app = spawn(&broker.url(), &devices, &[("STATE_MAX_COMMANDS", "1000")]).await;
    app.wait_until_ready().await;

    // Credential `ops`: an alarm the gateway holds, and a message with a key.
    let at = alarm_at(25);
    let (status, alarm) = app.alarm("kitchen", at, Some("ops's alarm")).await;
    assert_eq!(status, 202, "{alarm}");
    let (status, _, first) = keyed_message(&app, OPS_TOKEN, "clock-1", Some("ops-1")).await;
    assert_eq!(status, 202, "{first}");

    // Credential `clocks`: 1,100 messages to clocks that never acknowledge (each record
    // stays `sent`, unfinished), each with its own key. Its share is 500: every one is
    // taken, its own oldest `sent` records and answered keys making room.
    let mut ids = Vec::new();
    for i in 0..1100 {
        let key = format!("clocks-{i}");
        let device = format!("clock-{}", i % 10);
        let (status, _, body) = keyed_message(&app, CLOCKS_TOKEN, &device, Some(&key)).await;
        assert_eq!(status, 202, "message {i}: {body}");
        ids.push(id_of(&body));
    }
    let read = |id: String| {
        let app = &app;
        async move {
            let res = app
                .get(&format!("/commands/{id}"), Some(CLOCKS_TOKEN))
                .await;
            (res.status().as_u16(), res.json_value().await)
        }
    };
    let (status, _) = read(ids[0].clone()).await;
    assert_eq!(status, 404, "the oldest `sent` one went");
    let (status, newest) = read(ids[1099].clone()).await;
    assert_eq!(
        (status, &newest["status"]),
        (200, &json!("sent")),
        "{newest}"
    );

    // `ops` lost nothing: the alarm is held, the keyed retry is a replay, and a new
    // command still fits.
    assert_eq!(app.record(&id_of(&alarm)).await["status"], "scheduled");
    let (status, headers, replay) = keyed_message(&app, OPS_TOKEN, "clock-1", Some("ops-1")).await;
    assert_eq!(status, 202, "{replay}");
    assert_eq!(headers["idempotent-replayed"], "true");
    assert_eq!(replay, first);
    let (status, _, body) = keyed_message(&app, OPS_TOKEN, "clock-2", None).await;
    assert_eq!(status, 202, "{body}");
    // And the alarm fires.
    eventually(Duration::from_secs(60), "the held alarm", || async {
        sub.on("awtrix_k1/notify").into_iter().next()
    })
    .await;
    app.status_is(&id_of(&alarm), "sent", Duration::from_secs(10))
        .await;
    app.stop().await;
}

#[tokio::test]
async fn a_held_alarm_goes_to_the_clocks_current_topic_and_fails_for_a_removed_device() {
    let broker = Mosquitto::start_plain();
    let sub = Subscriber::plain(broker.port).await;
    let devices = devices_file();
    let dir = tempfile::tempdir().unwrap();
    let store = format!("file:{}", dir.path().join("state.db").display());
    let vars = [("STATE_STORE", store.as_str())];

    let app = spawn(&broker.url(), &devices, &vars).await;
    app.wait_until_ready().await;
    let at = alarm_at(4);
    let (status, body) = app.alarm("kitchen", at, Some("moved")).await;
    assert_eq!(status, 202, "{body}");
    let kitchen = id_of(&body);
    let (status, body) = app.alarm("hall", at, Some("removed")).await;
    assert_eq!(status, 202, "{body}");
    let hall = id_of(&body);
    app.stop().await;
    assert!(
        Utc::now() < at,
        "the first server stopped before the alarm time"
    );

    // Before the alarm time the devices file changes: the kitchen clock has another
    // prefix and melody, the hall clock is gone.
    let mut changed = tempfile::NamedTempFile::new().unwrap();
    changed
        .write_all(
            b"[devices.kitchen]\nprofile = \"awtrix3\"\ntopic = \"awtrix_k2\"\nalarm_rtttl = \"moved:d=4,o=5,b=100:c6\"\n",
        )
        .unwrap();
    let app = spawn(&broker.url(), &changed, &vars).await;
    let got = eventually(
        Duration::from_secs(15),
        "the alarm on the clock's new topic",
        || async { sub.on("awtrix_k2/notify").into_iter().next() },
    )
    .await;
    assert_eq!(got.payload["text"], "moved");
    assert_eq!(got.payload["rtttl"], "moved:d=4,o=5,b=100:c6");
    app.status_is(&kitchen, "sent", Duration::from_secs(5))
        .await;
    let record = app.status_is(&hall, "failed", Duration::from_secs(5)).await;
    assert_eq!(record["statusReason"]["code"], "device_removed");
    assert!(sub.on("awtrix_k1/notify").is_empty());
    assert!(sub.on("home/awtrix/hall/notify").is_empty());
    app.stop().await;
}
