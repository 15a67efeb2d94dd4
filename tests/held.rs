//! Delivery to clocks that come and go (SPEC 11.3), end to end: the real application, a
//! real Mosquitto, devices played by MQTT clients with a real Last Will (the socket
//! closed without DISCONNECT), and two servers sharing a redis-server for the once-only
//! case.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

use common::app::{OPS_TOKEN, TestApp as App, env_with, start};
use common::device::{Device, Will};
use common::mosquitto::Mosquitto;
use common::subscriber::Subscriber;
use common::{eventually, metric_value, observe_for};
use serde_json::{Value, json};

const WITHIN: Duration = Duration::from_secs(15);

fn env(broker: &Mosquitto, vars: &[(&str, &str)]) -> HashMap<String, String> {
    let mut env = env_with(&[
        ("ENABLED_SENDERS", "mqtt"),
        ("MQTT_BROKER_URL", &broker.url()),
        ("ALLOW_INSECURE_MQTT", "true"),
        ("READINESS_REQUIRE_AUTH", "false"),
        ("METRICS_ADDR", "127.0.0.1:0"),
        ("MQTT_PUBLISH_TIMEOUT_MS", "1000"),
    ]);
    for (k, v) in vars {
        env.insert((*k).to_owned(), (*v).to_owned());
    }
    env
}

async fn spawn(broker: &Mosquitto, vars: &[(&str, &str)]) -> App {
    let app = match start(&env(broker, vars), None).await {
        Ok(app) => app,
        Err(e) => panic!("the application did not start: {e}"),
    };
    eventually(WITHIN, "the server is ready", || async {
        (app.get("/ready", None).await.status() == 200).then_some(())
    })
    .await;
    app
}

async fn json_of(res: reqwest::Response) -> (u16, Value) {
    let status = res.status().as_u16();
    let text = res.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

impl App {
    async fn presence_becomes(&self, id: &str, presence: &str) {
        eventually(WITHIN, &format!("{id} becomes {presence}"), || async {
            let (_, device) =
                json_of(self.get(&format!("/devices/{id}"), Some(OPS_TOKEN)).await).await;
            (device["presence"] == presence).then_some(())
        })
        .await;
    }

    async fn message(&self, device: &str, text: &str, ttl: Option<u64>) -> Value {
        let mut body = json!({"deviceId": device, "message": text, "durationSeconds": 5});
        if let Some(ttl) = ttl {
            body["ttlSeconds"] = json!(ttl);
        }
        let (status, answer) =
            json_of(self.post("/commands/messages", Some(OPS_TOKEN), body).await).await;
        assert_eq!(status, 202, "{answer}");
        answer
    }

    async fn record(&self, id: &str) -> Value {
        json_of(self.get(&format!("/commands/{id}"), Some(OPS_TOKEN)).await)
            .await
            .1
    }

    async fn status_becomes(&self, id: &str, status: &str) -> Value {
        eventually(WITHIN, &format!("{id} becomes {status}"), || async {
            let record = self.record(id).await;
            (record["status"] == status).then_some(record)
        })
        .await
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

fn status_topic(device: &str) -> String {
    format!("clocks/commands/{device}/status")
}

/// A generic device with its retained `offline` Last Will and retained `online` birth.
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

/// The commandIds published to `device` so far, in the order the broker delivered them.
fn delivered(subscriber: &Subscriber, device: &str) -> Vec<String> {
    subscriber
        .on(&format!("clocks/commands/{device}/display_message"))
        .iter()
        .map(|r| {
            r.payload["commandId"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

#[tokio::test]
async fn a_command_for_an_offline_device_waits_and_goes_out_in_order_when_it_is_back() {
    let broker = Mosquitto::start_plain();
    let subscriber = Subscriber::plain(broker.port).await;
    let app = spawn(&broker, &[]).await;
    let device = generic_device(&broker, "clock-1").await;
    app.presence_becomes("clock-1", "online").await;
    device.lose_power();
    app.presence_becomes("clock-1", "offline").await;

    let mut ids = Vec::new();
    for text in ["first", "second", "third"] {
        let answer = app.message("clock-1", text, None).await;
        assert_eq!(answer["status"], "queued", "{answer}");
        ids.push(answer["commandId"].as_str().unwrap().to_owned());
    }
    let short = app.message("clock-1", "too late", Some(1)).await;
    let short = short["commandId"].as_str().unwrap().to_owned();
    assert_eq!(app.record(&ids[0]).await["status"], "queued");
    // DELETE takes a queued command back, as it does a scheduled one.
    let (status, cancelled) = json_of(
        app.client
            .delete(app.url(&format!("/commands/{}", ids[2])))
            .bearer_auth(OPS_TOKEN)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, &cancelled["status"]), (200, &json!("cancelled")));
    app.status_becomes(&short, "expired").await;
    eventually(WITHIN, "the gauge", || async {
        let n = metric_value(&app.scrape().await, "clock_server_commands_queued");
        (n == 2).then_some(())
    })
    .await;
    assert!(
        delivered(&subscriber, "clock-1").is_empty(),
        "nothing into the void"
    );

    // Back: the birth says so, and the two still queued go out in the order accepted.
    let _device = generic_device(&broker, "clock-1").await;
    eventually(WITHIN, "both delivered", || async {
        (delivered(&subscriber, "clock-1").len() >= 2).then_some(())
    })
    .await;
    for id in &ids[..2] {
        app.status_becomes(id, "sent").await;
    }
    observe_for(Duration::from_millis(500)).await;
    assert_eq!(delivered(&subscriber, "clock-1"), ids[..2]);
    assert_eq!(app.record(&ids[2]).await["status"], "cancelled");
    assert_eq!(app.record(&short).await["status"], "expired");
    eventually(WITHIN, "the gauge back to 0", || async {
        let scrape = app.scrape().await;
        scrape
            .contains("clock_server_commands_queued 0")
            .then_some(())
    })
    .await;
    // Online now: the next one goes at once.
    let now = app.message("clock-1", "now", None).await;
    assert_eq!(now["status"], "sent");
    app.stop().await;
}

#[tokio::test]
async fn without_a_store_nothing_is_held() {
    let broker = Mosquitto::start_plain();
    let subscriber = Subscriber::plain(broker.port).await;
    let app = spawn(&broker, &[("STATE_STORE", "none")]).await;
    let device = generic_device(&broker, "clock-2").await;
    app.presence_becomes("clock-2", "online").await;
    device.lose_power();
    app.presence_becomes("clock-2", "offline").await;
    let answer = app.message("clock-2", "into the void", None).await;
    assert_eq!(answer.get("status"), None, "{answer}");
    eventually(WITHIN, "published at once", || async {
        (delivered(&subscriber, "clock-2").len() == 1).then_some(())
    })
    .await;
    app.stop().await;
}

#[tokio::test]
async fn with_two_replicas_each_queued_command_is_delivered_once_and_in_order() {
    let broker = Mosquitto::start_plain();
    let redis = common::redis::Redis::start();
    let subscriber = Subscriber::plain(broker.port).await;
    let store = redis.url();
    let a = spawn(&broker, &[("STATE_STORE", &store)]).await;
    let b = spawn(&broker, &[("STATE_STORE", &store)]).await;
    let device = generic_device(&broker, "clock-3").await;
    a.presence_becomes("clock-3", "online").await;
    b.presence_becomes("clock-3", "online").await;
    device.lose_power();
    a.presence_becomes("clock-3", "offline").await;
    b.presence_becomes("clock-3", "offline").await;

    let mut ids = Vec::new();
    for n in 0..10 {
        let app = if n % 2 == 0 { &a } else { &b };
        let answer = app.message("clock-3", &format!("m{n}"), None).await;
        assert_eq!(answer["status"], "queued", "{answer}");
        ids.push(answer["commandId"].as_str().unwrap().to_owned());
    }
    // Both replicas learn of the return at the same moment and race for the queue.
    let _device = generic_device(&broker, "clock-3").await;
    eventually(WITHIN, "all delivered", || async {
        (delivered(&subscriber, "clock-3").len() >= ids.len()).then_some(())
    })
    .await;
    // Long enough for a second delivery by the other replica to show.
    observe_for(Duration::from_secs(2)).await;
    assert_eq!(delivered(&subscriber, "clock-3"), ids);
    for id in &ids {
        assert_eq!(a.record(id).await["status"], "sent");
    }
    a.stop().await;
    b.stop().await;
}

const DEVICES: &str = r#"
[devices.kitchen]
profile = "awtrix3"
topic = "awtrix_k1"
"#;

#[tokio::test]
async fn a_held_alarm_due_while_its_clock_is_offline_goes_out_when_it_is_back() {
    let broker = Mosquitto::start_plain();
    let subscriber = Subscriber::plain(broker.port).await;
    let mut devices = tempfile::NamedTempFile::new().unwrap();
    devices.write_all(DEVICES.as_bytes()).unwrap();
    let path = devices.path().display().to_string();
    let app = spawn(&broker, &[("DEVICES_FILE", &path)]).await;
    let will = Will {
        topic: "awtrix_k1/stats/device",
        payload: b"offline",
        retain: false,
    };
    let mut clock = Device::connect(broker.port, "awtrix-k1", Some(will)).await;
    // Until the server's subscription is in place, as the firmware repeats itself.
    let deadline = std::time::Instant::now() + WITHIN;
    loop {
        clock
            .publish("awtrix_k1/stats", br#"{"bat":100}"#, false)
            .await;
        let (_, d) = json_of(app.get("/devices/kitchen", Some(OPS_TOKEN)).await).await;
        if d["presence"] == "online" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "kitchen never online");
        observe_for(Duration::from_millis(100)).await;
    }
    clock.lose_power();
    app.presence_becomes("kitchen", "offline").await;

    let at = chrono::Utc::now() + chrono::Duration::seconds(2);
    let at = chrono::DateTime::from_timestamp(at.timestamp(), 0).unwrap();
    let (status, answer) = json_of(
        app.post(
            "/commands/alarms",
            Some(OPS_TOKEN),
            json!({"deviceId": "kitchen", "alarmTime": at.to_rfc3339(), "label": "up"}),
        )
        .await,
    )
    .await;
    assert_eq!(
        (status, &answer["status"]),
        (202, &json!("scheduled")),
        "{answer}"
    );
    let id = answer["commandId"].as_str().unwrap().to_owned();
    eventually(WITHIN, "the alarm time passes", || async {
        (chrono::Utc::now() > at + chrono::Duration::seconds(1)).then_some(())
    })
    .await;
    assert_eq!(app.record(&id).await["status"], "scheduled");
    assert!(subscriber.on("awtrix_k1/notify").is_empty());

    let mut clock = Device::connect(broker.port, "awtrix-k1", None).await;
    clock
        .publish("awtrix_k1/stats/device", b"online", false)
        .await;
    let record = app.status_becomes(&id, "sent").await;
    assert_eq!(record["statusReason"], Value::Null);
    assert_eq!(subscriber.on("awtrix_k1/notify").len(), 1);
    app.stop().await;
}
