//! The virtual LaMetric TIME from outside (SPEC 8.3): the real `clockctl watch --profile
//! lametric --listen` process, and a real clock-server whose devices file points at it
//! (`http://`, with `ALLOW_INSECURE_DOWNSTREAM_HTTP=true`). What a person trying the
//! gateway without the clock relies on: a message shows and is dismissed, brightness, a
//! held alarm rings, presence and info, and a wrong key is the clock's refusal.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::app::{OPS_TOKEN, TestApp as App, env_with, start};
use common::eventually;
use common::mosquitto::Mosquitto;
use serde_json::{Value, json};

const KEY: &str = "virtual-lametric-key-42";
const WITHIN: Duration = Duration::from_secs(15);

/// A running `clockctl watch --profile lametric`; killed on drop.
struct Virtual {
    child: Child,
    lines: mpsc::Receiver<String>,
    port: u16,
}

impl Virtual {
    /// Starts it on `127.0.0.1:<port>` (0: any) with `key`, once it printed its first line.
    async fn start(port: u16, key: &str) -> Self {
        let listen = format!("127.0.0.1:{port}");
        let mut child = Command::new(env!("CARGO_BIN_EXE_clockctl"))
            .args([
                "watch",
                "--plain",
                "--profile",
                "lametric",
                "--device",
                "desk",
            ])
            .args(["--listen", &listen])
            .env_clear()
            .env("CLOCKCTL_LAMETRIC_API_KEY", key)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(common::test_log())
            .spawn()
            .unwrap();
        let lines = common::process::stdout_lines(&mut child);
        let mut v = Self {
            child,
            lines,
            port: 0,
        };
        let first = v.next_line().await;
        let addr = first
            .strip_prefix("virtual LaMetric TIME desk on http://")
            .and_then(|rest| rest.split_once(' '))
            .map(|(addr, _)| addr.to_owned())
            .unwrap_or_else(|| panic!("first line: {first:?}"));
        v.port = addr.rsplit_once(':').unwrap().1.parse().unwrap();
        v
    }

    /// The next line on stdout, waited for (bounded) without blocking the runtime.
    async fn next_line(&self) -> String {
        let lines = &self.lines;
        eventually(WITHIN, "a line from the virtual LaMetric", || async move {
            lines.try_recv().ok()
        })
        .await
    }

    /// The next line that is not an `unauthorized` one.
    async fn next_shown(&self) -> String {
        loop {
            let line = self.next_line().await;
            if !line.contains(" unauthorized ") {
                return line;
            }
        }
    }

    fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Virtual {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The server, with `desk` the LaMetric clock at `port` and `key`.
async fn server(broker: &Mosquitto, port: u16, key: &str) -> (App, tempfile::NamedTempFile) {
    let mut devices = tempfile::NamedTempFile::new().unwrap();
    write!(
        devices,
        "[devices.desk]\nprofile = \"lametric\"\nurl = \"http://127.0.0.1:{port}\"\napi_key = \"{key}\"\nalarm_sound = \"alarm3\"\n"
    )
    .unwrap();
    let mut env: HashMap<String, String> = env_with(&[
        ("ENABLED_SENDERS", "mqtt"),
        ("ALLOW_INSECURE_MQTT", "true"),
        ("ALLOW_INSECURE_DOWNSTREAM_HTTP", "true"),
    ]);
    env.insert("MQTT_BROKER_URL".into(), broker.url());
    env.insert("DEVICES_FILE".into(), devices.path().display().to_string());
    let app = start(&env, None).await.unwrap();
    (app, devices)
}

async fn record(app: &App, id: &str) -> Value {
    let res = app.get(&format!("/commands/{id}"), Some(OPS_TOKEN)).await;
    serde_json::from_str(&res.text().await.unwrap()).unwrap()
}

async fn online(app: &App) -> Value {
    eventually(WITHIN, "desk online", || async {
        let res = app.get("/devices/desk", Some(OPS_TOKEN)).await;
        let device: Value = serde_json::from_str(&res.text().await.ok()?).ok()?;
        (device["presence"] == "online").then_some(device)
    })
    .await
}

#[tokio::test]
async fn the_virtual_lametric_shows_a_message_dismisses_it_sets_brightness_and_rings_a_held_alarm()
{
    let broker = Mosquitto::start_plain();
    let clock = Virtual::start(0, KEY).await;
    let (app, _devices) = server(&broker, clock.port, KEY).await;

    // Presence: its GET /api/v2/device answers, with its name and model as info.
    let device = online(&app).await;
    assert_eq!(device["info"]["name"], "desk");
    assert_eq!(device["info"]["model"], "LM 37X8");
    assert!(device["info"]["serial_number"].is_string(), "{device}");
    assert!(device["info"]["os_version"].is_string(), "{device}");

    let (status, body) = app
        .call(
            reqwest::Method::POST,
            "/commands/messages",
            &json!({"deviceId": "desk", "message": "Tea \"now\"", "durationSeconds": 1}),
        )
        .await;
    assert_eq!((status, body["status"].as_str()), (202, Some("succeeded")));
    assert_eq!(
        clock.next_shown().await,
        r#"desk notification id=1 priority="info" icon_type="none" text="Tea \"now\"" cycles=0"#
    );
    // After durationSeconds the gateway dismisses it.
    assert_eq!(clock.next_shown().await, "desk dismiss id=1");

    let (status, body) = app
        .call(
            reqwest::Method::PUT,
            "/commands/brightness",
            &json!({"deviceId": "desk", "level": 40}),
        )
        .await;
    assert_eq!((status, body["status"].as_str()), (202, Some("succeeded")));
    assert_eq!(
        clock.next_shown().await,
        "desk display brightness=40 brightness_mode=manual"
    );

    // An alarm whose time has come: held by the gateway, posted at once.
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let (status, body) = app
        .call(
            reqwest::Method::POST,
            "/commands/alarms",
            &json!({"deviceId": "desk", "alarmTime": now, "label": "Wake up"}),
        )
        .await;
    assert_eq!((status, body["status"].as_str()), (202, Some("scheduled")));
    assert_eq!(
        clock.next_shown().await,
        r#"desk alarm id=2 priority="critical" icon_type="alert" text="Wake up" cycles=0 sound="alarms/alarm3 until dismissed""#
    );
    let id = body["commandId"].as_str().unwrap().to_owned();
    eventually(WITHIN, "the alarm succeeded", || async {
        (record(&app, &id).await["status"] == "succeeded").then_some(())
    })
    .await;
    app.stop().await;
    clock.stop();
}

#[tokio::test]
async fn a_virtual_lametric_with_another_key_refuses_and_the_command_fails_device_rejected() {
    let broker = Mosquitto::start_plain();
    let clock = Virtual::start(0, KEY).await;
    let port = clock.port;
    let (app, _devices) = server(&broker, port, KEY).await;
    online(&app).await;
    // The clock's key changes (a new one made in the LaMetric app) between two polls.
    clock.stop();
    let clock = Virtual::start(port, "another-key-entirely").await;
    let (status, body) = app
        .call(
            reqwest::Method::POST,
            "/commands/messages",
            &json!({"deviceId": "desk", "message": "hi", "durationSeconds": 5}),
        )
        .await;
    assert_eq!(status, 502, "{body}");
    let id = body["commandId"].as_str().unwrap().to_owned();
    let record = record(&app, &id).await;
    assert_eq!(record["status"], "failed");
    assert_eq!(
        record["statusReason"],
        json!({"code": "device_rejected", "message": "Authorization is required"})
    );
    let line = clock.next_line().await;
    assert_eq!(
        line,
        r#"desk unauthorized POST "/api/v2/device/notifications" status=401 (no or another API key)"#
    );
    assert!(!line.contains(KEY));
    app.stop().await;
    clock.stop();
}

#[tokio::test]
async fn the_virtual_lametric_answers_bad_bodies_and_missing_keys_as_the_clock_does() {
    let clock = Virtual::start(0, KEY).await;
    let client = common::app::client(None);
    let port = clock.port;
    let url = |path: &str| format!("http://127.0.0.1:{port}{path}");
    // No key: 401 with the clock's error shape.
    let res = client
        .post(url("/api/v2/device/notifications"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let body: Value = serde_json::from_str(&res.text().await.unwrap()).unwrap();
    assert_eq!(
        body,
        json!({"errors": [{"message": "Authorization is required"}]})
    );
    assert!(clock.next_line().await.contains(" unauthorized POST "));
    // A notification without frames, a brightness over 100: 400 naming the field.
    for (method, path, sent, says) in [
        (
            reqwest::Method::POST,
            "/api/v2/device/notifications",
            r#"{"model":{"frames":[]}}"#,
            "model.frames",
        ),
        (
            reqwest::Method::PUT,
            "/api/v2/device/display",
            r#"{"brightness":101}"#,
            "brightness",
        ),
        (
            reqwest::Method::POST,
            "/api/v2/device/notifications",
            "not json",
            "not JSON",
        ),
    ] {
        let res = client
            .request(method, url(path))
            .basic_auth("dev", Some(KEY))
            .header("content-type", "application/json")
            .body(sent)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400, "{sent}");
        let body: Value = serde_json::from_str(&res.text().await.unwrap()).unwrap();
        let message = body["errors"][0]["message"].as_str().unwrap();
        assert!(message.contains(says), "{sent}: {message}");
        let line = clock.next_line().await;
        assert!(line.starts_with("desk rejected "), "{line}");
    }
    // Dismissing a notification that is not there: 404.
    let res = client
        .delete(url("/api/v2/device/notifications/99"))
        .basic_auth("dev", Some(KEY))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    clock.stop();
}

#[test]
fn listen_without_the_lametric_profile_and_the_profile_without_listen_are_usage_errors() {
    for (args, says) in [
        (&["--listen", "127.0.0.1:0"][..], "--listen only applies"),
        (&["--profile", "lametric"], "needs --listen"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_clockctl"))
            .arg("watch")
            .args(args)
            .env_clear()
            .env("CLOCKCTL_LAMETRIC_API_KEY", KEY)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}
