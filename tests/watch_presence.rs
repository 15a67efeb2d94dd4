//! The virtual clock's presence (SPEC 11.4) on a real Mosquitto: `clockctl watch` says
//! `online` as the firmware does, its Last Will says `offline` when the process dies
//! (SIGKILL: the socket closes without DISCONNECT), and the server and `clockctl
//! devices`/`device`/`--wait` read it.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::eventually;
use common::mosquitto::Mosquitto;
use common::process::ServerProcess;

const WITHIN: Duration = Duration::from_secs(15);

/// A running `clockctl watch`; killed (SIGKILL) on drop.
struct Watch {
    child: Child,
}

impl Watch {
    /// `clockctl watch --plain <args>`, once it printed its `watching` line.
    fn start(broker: &Mosquitto, args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_clockctl"))
            .args(["watch", "--plain"])
            .args(args)
            .env_clear()
            .env("CLOCKCTL_BROKER_URL", broker.url())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(common::test_log())
            .spawn()
            .unwrap();
        let rx = common::process::stdout_lines(&mut child);
        let first = rx.recv_timeout(WITHIN).expect("the watching line");
        assert!(first.starts_with("watching "), "{first}");
        Self { child }
    }

    /// SIGKILL: no goodbye, no DISCONNECT; the broker publishes the will.
    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM: a clean stop.
    fn terminate(mut self) {
        common::process::signal(self.child.id(), "TERM");
        let status = self.child.wait().unwrap();
        assert!(status.success(), "{status}");
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// (topic, payload, retained) as a subscriber received them.
type Seen = Arc<Mutex<Vec<(String, String, bool)>>>;

async fn subscriber(broker: &Mosquitto, filter: &str) -> (mqtt5::MqttClient, Seen) {
    let client = mqtt5::MqttClient::new(format!("test-sub-{}", uuid::Uuid::now_v7().simple()));
    client.connect(&broker.url()).await.unwrap();
    let seen: Seen = Arc::default();
    let sink = seen.clone();
    let options = mqtt5::SubscribeOptions {
        qos: mqtt5::QoS::AtLeastOnce,
        ..mqtt5::SubscribeOptions::default()
    };
    client
        .subscribe_with_options(filter, options, move |m| {
            sink.lock().unwrap().push((
                m.topic,
                String::from_utf8_lossy(&m.payload).into_owned(),
                m.retain,
            ));
        })
        .await
        .unwrap();
    (client, seen)
}

/// Waits until `seen` holds a message on `topic` with `payload`; returns whether it was
/// retained.
async fn message(seen: &Seen, topic: &str, payload: &str) -> bool {
    eventually(WITHIN, &format!("{payload} on {topic}"), || {
        let found = seen
            .lock()
            .unwrap()
            .iter()
            .find(|(t, p, _)| t == topic && p == payload)
            .map(|(_, _, retained)| *retained);
        async move { found }
    })
    .await
}

#[tokio::test]
async fn a_generic_virtual_clock_says_online_retained_and_its_will_says_offline_when_killed() {
    let broker = Mosquitto::start_plain();
    let (_live, seen) = subscriber(&broker, "clocks/commands/+/status").await;
    let watch = Watch::start(&broker, &["--device", "clock-1,clock-2"]);
    for device in ["clock-1", "clock-2"] {
        message(&seen, &format!("clocks/commands/{device}/status"), "online").await;
    }
    // Retained: a subscriber that comes later (a server starting) learns it too.
    let (_late, late) = subscriber(&broker, "clocks/commands/+/status").await;
    assert!(message(&late, "clocks/commands/clock-2/status", "online").await);

    watch.kill();
    for device in ["clock-1", "clock-2"] {
        message(
            &seen,
            &format!("clocks/commands/{device}/status"),
            "offline",
        )
        .await;
    }
    let (_after, after) = subscriber(&broker, "clocks/commands/+/status").await;
    assert!(message(&after, "clocks/commands/clock-1/status", "offline").await);
}

#[tokio::test]
async fn a_generic_virtual_clock_stopped_cleanly_says_offline_itself() {
    let broker = Mosquitto::start_plain();
    let (_live, seen) = subscriber(&broker, "clocks/commands/+/status").await;
    let watch = Watch::start(&broker, &["--device", "clock-1"]);
    message(&seen, "clocks/commands/clock-1/status", "online").await;
    watch.terminate();
    message(&seen, "clocks/commands/clock-1/status", "offline").await;
    let (_after, after) = subscriber(&broker, "clocks/commands/+/status").await;
    assert!(message(&after, "clocks/commands/clock-1/status", "offline").await);
}

#[tokio::test]
async fn a_virtual_awtrix_clock_says_online_unretained_sends_stats_and_its_will_says_offline() {
    let broker = Mosquitto::start_plain();
    let (_live, seen) = subscriber(&broker, "awtrix_a1/stats/#").await;
    let watch = Watch::start(&broker, &["--profile", "awtrix3", "--topic", "awtrix_a1"]);
    assert!(!message(&seen, "awtrix_a1/stats/device", "online").await);
    let stats = eventually(WITHIN, "stats", || {
        let stats = seen
            .lock()
            .unwrap()
            .iter()
            .find(|(t, _, _)| t == "awtrix_a1/stats")
            .map(|(_, p, _)| p.clone());
        async move { stats }
    })
    .await;
    let stats: serde_json::Value = serde_json::from_str(&stats).unwrap();
    assert!(
        stats["wifi_signal"].is_i64() && stats["bat"].is_i64(),
        "{stats}"
    );

    watch.kill();
    assert!(!message(&seen, "awtrix_a1/stats/device", "offline").await);
}

const DEVICES: &str = r#"
[devices.kitchen]
profile = "awtrix3"
topic = "awtrix_k1"
"#;

/// A clock-server with the AWTRIX `kitchen` in its devices file, ready.
async fn server(broker: &Mosquitto, devices: &tempfile::NamedTempFile) -> ServerProcess {
    let url = broker.url();
    let path = devices.path().display().to_string();
    let server = ServerProcess::start(&[
        ("REQUIRE_TLS", "false"),
        ("API_AUTH_CREDENTIALS", "ops|tok|*;clocks|tok2|clock-*"),
        ("ENABLED_SENDERS", "mqtt"),
        ("MQTT_BROKER_URL", &url),
        ("ALLOW_INSECURE_MQTT", "true"),
        ("DEVICES_FILE", &path),
    ])
    .await;
    eventually(WITHIN, "the server to be ready", || {
        let (code, _, _) = clockctl(&server, "tok", &["ready"]);
        async move { (code == 0).then_some(()) }
    })
    .await;
    server
}

/// The real `clockctl`: exit code, stdout, stderr.
fn clockctl(server: &ServerProcess, token: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_clockctl"))
        .args(args)
        .env_clear()
        .env("CLOCK_SERVER_BASE_URL", server.url(""))
        .env("CLOCK_SERVER_TOKEN", token)
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[tokio::test]
async fn clockctl_shows_the_devices_and_wait_ends_at_sent_for_a_clock_that_never_acknowledges() {
    let broker = Mosquitto::start_plain();
    let mut devices = tempfile::NamedTempFile::new().unwrap();
    devices.write_all(DEVICES.as_bytes()).unwrap();
    let server = server(&broker, &devices).await;
    let (code, stdout, _) = clockctl(&server, "tok", &["device", "kitchen"]);
    assert_eq!(code, 0);
    assert!(stdout.contains("presence     unknown"), "{stdout}");

    let watch = Watch::start(
        &broker,
        &[
            "--device",
            "kitchen",
            "--profile",
            "awtrix3",
            "--topic",
            "awtrix_k1",
        ],
    );
    let _generic = Watch::start(&broker, &["--device", "clock-1"]);
    eventually(WITHIN, "both devices online", || {
        let (_, stdout, _) = clockctl(&server, "tok", &["devices"]);
        let online = stdout.lines().filter(|l| l.contains(" online ")).count();
        async move { (online == 2).then_some(()) }
    })
    .await;
    let (code, stdout, _) = clockctl(&server, "tok", &["devices"]);
    assert_eq!(code, 0);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(
        lines[0].starts_with("clock-1  generic  online  last seen 20"),
        "{stdout}"
    );
    assert!(
        lines[1].starts_with("kitchen  awtrix3  online  last seen 20"),
        "{stdout}"
    );
    let (code, stdout, _) = clockctl(&server, "tok2", &["devices", "--json"]);
    assert_eq!(code, 0);
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(json["devices"].as_array().unwrap().len(), 1, "{stdout}");
    assert_eq!(json["devices"][0]["deviceId"], "clock-1");
    let (code, _, stderr) = clockctl(&server, "tok2", &["device", "kitchen"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("no device kitchen"), "{stderr}");
    let (code, _, stderr) = clockctl(&server, "tok", &["device", "not a device"]);
    assert_eq!(code, 2, "{stderr}");

    // The AWTRIX clock never acknowledges: --wait ends at sent, exit 0.
    let (code, stdout, stderr) = clockctl(
        &server,
        "tok",
        &[
            "message",
            "--device",
            "kitchen",
            "--message",
            "tea",
            "--wait=15s",
        ],
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("sent (the device does not acknowledge commands)"),
        "{stdout}"
    );
    // A held alarm stays scheduled: --wait keeps waiting, then says so.
    let at = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let (code, stdout, _) = clockctl(
        &server,
        "tok",
        &["alarm", "--device", "kitchen", "--time", &at, "--wait=1s"],
    );
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("still scheduled after 1s"), "{stdout}");

    watch.kill();
    eventually(WITHIN, "kitchen offline", || {
        let (_, stdout, _) = clockctl(&server, "tok", &["device", "kitchen"]);
        async move { stdout.contains("presence     offline").then_some(()) }
    })
    .await;
}
