//! Presence (SPEC 11.1, 11.2) end to end: the real application, a real Mosquitto, and
//! devices played by hand-written MQTT clients with a real Last Will (the socket closed
//! without DISCONNECT, as when a clock loses power).
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

use common::app::{CLOCKS_TOKEN, OPS_TOKEN, TestApp as App, env_with, start};
use common::device::{Device, Will};
use common::mosquitto::Mosquitto;
use common::{eventually, metric_value};
use serde_json::{Value, json};

const PREFIX: &str = "clocks/commands";

const DEVICES: &str = r#"
[devices.kitchen]
profile = "awtrix3"
topic = "awtrix_k1"
"#;

fn devices_file() -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(DEVICES.as_bytes()).unwrap();
    file
}

fn env(
    broker: &Mosquitto,
    devices: Option<&tempfile::NamedTempFile>,
    vars: &[(&str, &str)],
) -> HashMap<String, String> {
    let mut env = env_with(&[
        ("ENABLED_SENDERS", "mqtt"),
        ("MQTT_BROKER_URL", &broker.url()),
        ("ALLOW_INSECURE_MQTT", "true"),
        ("READINESS_REQUIRE_AUTH", "false"),
        ("METRICS_ADDR", "127.0.0.1:0"),
    ]);
    if let Some(devices) = devices {
        env.insert("DEVICES_FILE".into(), devices.path().display().to_string());
    }
    for (k, v) in vars {
        env.insert((*k).to_owned(), (*v).to_owned());
    }
    env
}

async fn spawn(
    broker: &Mosquitto,
    devices: Option<&tempfile::NamedTempFile>,
    vars: &[(&str, &str)],
) -> App {
    let app = match start(&env(broker, devices, vars), None).await {
        Ok(app) => app,
        Err(e) => panic!("the application did not start: {e}"),
    };
    eventually(Duration::from_secs(10), "the server is ready", || async {
        (app.get("/ready", None).await.status() == 200).then_some(())
    })
    .await;
    app
}

impl App {
    async fn device_as(&self, id: &str, token: &str) -> (u16, Value) {
        let res = self.get(&format!("/devices/{id}"), Some(token)).await;
        let status = res.status().as_u16();
        (status, res.json_value().await)
    }

    async fn device(&self, id: &str) -> Value {
        let (status, body) = self.device_as(id, OPS_TOKEN).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Waits until `id`'s presence is `presence`, and returns the device.
    async fn presence_becomes(&self, id: &str, presence: &str) -> Value {
        eventually(
            Duration::from_secs(10),
            &format!("{id} becomes {presence}"),
            || async {
                let device = self.device(id).await;
                (device["presence"] == presence).then_some(device)
            },
        )
        .await
    }

    /// Publishes `payload` on `topic` from `device` until `id` is online (a message sent
    /// before the server's subscription is in place is lost, as it would be for a real
    /// clock, which simply says it again 10 s later).
    async fn says_until_online(&self, id: &str, device: &mut Device, topic: &str, payload: &[u8]) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            device.publish(topic, payload, false).await;
            if self.device(id).await["presence"] == "online" {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{id} did not become online"
            );
            common::observe_for(Duration::from_millis(100)).await;
        }
    }

    async fn scrape(&self) -> String {
        let url = format!("http://{}/metrics", self.metrics_addr.unwrap());
        self.client
            .get(url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

trait JsonValue {
    async fn json_value(self) -> Value;
}

impl JsonValue for reqwest::Response {
    async fn json_value(self) -> Value {
        let text = self.text().await.unwrap();
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }
}

fn status_topic(device: &str) -> String {
    format!("{PREFIX}/{device}/status")
}

/// A generic device as ESPHome and Tasmota behave: a retained `offline` Last Will and a
/// retained `online` birth on `<prefix>/<id>/status`.
async fn generic_device(broker: &Mosquitto, id: &str) -> Device {
    let topic = status_topic(id);
    let will = Will {
        topic: &topic,
        payload: b"offline",
        retain: true,
    };
    let mut device = Device::connect(broker.port, id, Some(will)).await;
    device.publish(&topic, b"online", true).await;
    device
}

/// The virtual firmware of an AWTRIX clock: `offline` Last Will on `<topic>/stats/device`,
/// `online` there when connected (neither retained).
async fn awtrix_clock(broker: &Mosquitto, topic: &str) -> Device {
    let device_topic = format!("{topic}/stats/device");
    let will = Will {
        topic: &device_topic,
        payload: b"offline",
        retain: false,
    };
    Device::connect(broker.port, "awtrix-test", Some(will)).await
}

#[tokio::test]
async fn a_generic_device_is_online_after_its_retained_birth_and_offline_after_its_last_will() {
    let broker = Mosquitto::start_plain();
    // The device announced itself before the server started: the retained birth tells it.
    let device = generic_device(&broker, "clock-1").await;
    let app = spawn(&broker, None, &[("STATE_STORE", "none")]).await;

    let online = app.presence_becomes("clock-1", "online").await;
    assert_eq!(online["profile"], "generic");
    assert_eq!(online["deviceAcks"], true);
    assert_eq!(online["info"], Value::Null);
    let seen = online["lastSeenAt"].as_str().unwrap().to_owned();
    assert!(seen.ends_with('Z') && seen.len() == 24, "{seen}");

    device.lose_power();
    let offline = app.presence_becomes("clock-1", "offline").await;
    // Offline says nothing new about when it was last seen.
    assert_eq!(offline["lastSeenAt"], seen.as_str());
    app.stop().await;
}

#[tokio::test]
async fn an_awtrix_clock_is_online_with_its_stats_and_offline_after_its_last_will() {
    let broker = Mosquitto::start_plain();
    let devices = devices_file();
    let app = spawn(&broker, Some(&devices), &[]).await;
    let before = app.device("kitchen").await;
    assert_eq!(before["presence"], "unknown");
    assert_eq!(before["profile"], "awtrix3");
    assert_eq!(before["deviceAcks"], false);
    assert_eq!(before["lastSeenAt"], Value::Null);

    let mut clock = awtrix_clock(&broker, "awtrix_k1").await;
    app.says_until_online("kitchen", &mut clock, "awtrix_k1/stats/device", b"online")
        .await;
    let stats = r#"{"bat":100,"wifi_signal":-60,"version":"0.98"}"#;
    clock
        .publish("awtrix_k1/stats", stats.as_bytes(), false)
        .await;
    let device = eventually(Duration::from_secs(10), "the stats as info", || async {
        let device = app.device("kitchen").await;
        (device["info"] != Value::Null).then_some(device)
    })
    .await;
    assert_eq!(
        device["info"],
        serde_json::from_str::<Value>(stats).unwrap()
    );

    clock.lose_power();
    let offline = app.presence_becomes("kitchen", "offline").await;
    // What the clock last said stays readable.
    assert_eq!(offline["info"]["version"], "0.98");
    app.stop().await;
}

#[tokio::test]
async fn an_awtrix_clock_that_stops_sending_stats_is_offline_after_the_timeout() {
    let broker = Mosquitto::start_plain();
    let devices = devices_file();
    let app = spawn(&broker, Some(&devices), &[("PRESENCE_TIMEOUT_SECS", "5")]).await;
    // Connected and silent (a hung firmware keeps its TCP connection): no Last Will comes.
    let mut clock = Device::connect(broker.port, "awtrix-hung", None).await;
    app.says_until_online("kitchen", &mut clock, "awtrix_k1/stats", br#"{"bat":90}"#)
        .await;
    let started = std::time::Instant::now();
    app.presence_becomes("kitchen", "offline").await;
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "offline only once the timeout has passed since the last stats"
    );
    // A stats message is a sign of life again.
    clock
        .publish("awtrix_k1/stats", br#"{"bat":89}"#, false)
        .await;
    app.presence_becomes("kitchen", "online").await;
    app.stop().await;
}

#[tokio::test]
async fn garbage_on_the_presence_topics_changes_nothing_but_a_counter() {
    let broker = Mosquitto::start_plain();
    let devices = devices_file();
    let app = spawn(&broker, Some(&devices), &[]).await;
    let mut clock = awtrix_clock(&broker, "awtrix_k1").await;
    app.says_until_online(
        "kitchen",
        &mut clock,
        "awtrix_k1/stats",
        br#"{"version":"0.98"}"#,
    )
    .await;
    let _generic = generic_device(&broker, "clock-1").await;
    eventually(Duration::from_secs(10), "both online with info", || async {
        let kitchen = app.device("kitchen").await;
        let clock = app.device("clock-1").await;
        (kitchen["info"]["version"] == "0.98" && clock["presence"] == "online").then_some(())
    })
    .await;
    let ignored_before = metric_value(
        &app.scrape().await,
        "clock_server_presence_messages_total{outcome=\"ignored\"}",
    );

    let mut vandal = Device::connect(broker.port, "vandal", None).await;
    let five_kib = format!(r#"{{"pad":"{}"}}"#, "x".repeat(5000));
    let garbage: [(&str, &[u8]); 7] = [
        ("awtrix_k1/stats", b"not json"),
        ("awtrix_k1/stats", b"[1,2,3]"),
        ("awtrix_k1/stats", five_kib.as_bytes()),
        ("awtrix_k1/stats/device", b"maybe"),
        (&status_topic("clock-1"), b"OFFLINE"),
        (&status_topic("clock-1"), b"{\"state\":\"offline\"}"),
        ("clocks/commands/not a device/status", b"offline"),
    ];
    for (topic, payload) in garbage {
        vandal.publish(topic, payload, false).await;
    }
    // 100 KB: over the server's Maximum Packet Size, so the broker never forwards it (and
    // the server's connection stays up).
    vandal
        .publish("awtrix_k1/stats", &vec![b'{'; 100_000], false)
        .await;
    let counted = eventually(Duration::from_secs(10), "the garbage counted", || async {
        let n = metric_value(
            &app.scrape().await,
            "clock_server_presence_messages_total{outcome=\"ignored\"}",
        );
        (n >= ignored_before + 6).then_some(n)
    })
    .await;
    assert!(counted >= ignored_before + 6);

    let kitchen = app.device("kitchen").await;
    assert_eq!(kitchen["presence"], "online");
    assert_eq!(kitchen["info"], json!({"version": "0.98"}));
    assert_eq!(app.device("clock-1").await["presence"], "online");
    assert_eq!(app.get("/ready", None).await.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn an_acknowledgement_says_a_generic_device_is_online_without_a_store() {
    let broker = Mosquitto::start_plain();
    let app = spawn(&broker, None, &[("STATE_STORE", "none")]).await;
    let mut device = Device::connect(broker.port, "acker", None).await;
    app.says_until_online(
        "clock-7",
        &mut device,
        &format!("{PREFIX}/clock-7/ack"),
        br#"{"commandId":"0190b0b0-0000-7000-8000-000000000000","status":"succeeded"}"#,
    )
    .await;
    let online = app.device("clock-7").await;
    assert_eq!(online["profile"], "generic");
    assert!(online["lastSeenAt"].is_string());
    app.stop().await;
}

#[tokio::test]
async fn the_devices_list_is_sorted_and_limited_to_the_callers_scopes() {
    let broker = Mosquitto::start_plain();
    let devices = devices_file();
    let app = spawn(&broker, Some(&devices), &[]).await;
    let _b = generic_device(&broker, "clock-b").await;
    let _a = generic_device(&broker, "clock-a").await;
    let _lamp = generic_device(&broker, "lamp-1").await;
    app.presence_becomes("lamp-1", "online").await;
    app.presence_becomes("clock-a", "online").await;
    app.presence_becomes("clock-b", "online").await;

    let ids = |body: &Value| -> Vec<String> {
        body["devices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["deviceId"].as_str().unwrap().to_owned())
            .collect()
    };
    let all = app
        .get("/devices", Some(OPS_TOKEN))
        .await
        .json_value()
        .await;
    assert_eq!(ids(&all), ["clock-a", "clock-b", "kitchen", "lamp-1"]);
    let clocks = app
        .get("/devices", Some(CLOCKS_TOKEN))
        .await
        .json_value()
        .await;
    assert_eq!(ids(&clocks), ["clock-a", "clock-b"]);

    // Out of scope, invalid, or not exactly as written: one and the same 404.
    for (id, token) in [
        ("kitchen", CLOCKS_TOKEN),
        ("lamp-1", CLOCKS_TOKEN),
        ("bad%20id", OPS_TOKEN),
        ("%20kitchen", OPS_TOKEN),
        (&"x".repeat(65), OPS_TOKEN),
    ] {
        let (status, body) = app.device_as(id, token).await;
        assert_eq!((status, body), (404, json!({"error": "not found"})), "{id}");
    }
    // Never heard of, but in scope: generic and unknown.
    let (status, body) = app.device_as("clock-zzz", CLOCKS_TOKEN).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"deviceId": "clock-zzz", "profile": "generic", "presence": "unknown",
               "lastSeenAt": null, "deviceAcks": true, "info": null})
    );
    assert_eq!(app.get("/devices", None).await.status(), 401);

    let scrape = app.scrape().await;
    assert_eq!(
        metric_value(&scrape, "clock_server_devices{presence=\"online\"}"),
        3
    );
    assert_eq!(
        metric_value(&scrape, "clock_server_devices{presence=\"unknown\"}"),
        1
    );
    assert!(
        scrape.contains("clock_server_devices{presence=\"offline\"} 0"),
        "{scrape}"
    );
    assert!(
        scrape.contains("clock_server_http_requests_total{route=\"/devices/{deviceId}\",method=\"GET\",status=\"404\"}"),
        "{scrape}"
    );
    app.stop().await;
}

/// Peak RSS (`VmHWM`) of a process, in KiB.
fn peak_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test]
async fn thousands_of_awtrix_clocks_are_subscribed_to_once_each_without_memory_running_away() {
    // 5,000 clocks are 10,000 presence filters. Each `subscribe` used to start a task
    // that copied every filter still missing: quadratic, gigabytes at 10,000 clocks.
    let broker = Mosquitto::start_plain();
    let mut devices = tempfile::NamedTempFile::new().unwrap();
    for i in 0..5000 {
        writeln!(
            devices,
            "[devices.awtrix-{i}]\nprofile = \"awtrix3\"\ntopic = \"many/awtrix-{i}\"\n"
        )
        .unwrap();
    }
    let url = broker.url();
    let path = devices.path().display().to_string();
    let server = common::process::ServerProcess::start(&[
        ("REQUIRE_TLS", "false"),
        ("API_AUTH_CREDENTIALS", "ops|tok|*"),
        ("ENABLED_SENDERS", "mqtt"),
        ("MQTT_BROKER_URL", &url),
        ("ALLOW_INSECURE_MQTT", "true"),
        ("DEVICES_FILE", &path),
    ])
    .await;
    // The last clock's stats reach the server once its filters are in place.
    let mut clock = awtrix_clock(&broker, "many/awtrix-4999").await;
    let client = common::app::client(None);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        clock
            .publish("many/awtrix-4999/stats", br#"{"bat":100}"#, false)
            .await;
        let text = client
            .get(server.url("/devices/awtrix-4999"))
            .bearer_auth("tok")
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let device: Value = serde_json::from_str(&text).unwrap();
        if device["presence"] == "online" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the last clock is not online after 60 s: {device}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let peak = peak_kib(server.child.id());
    assert!(peak < 256 * 1024, "peak RSS {} MiB", peak / 1024);
}
