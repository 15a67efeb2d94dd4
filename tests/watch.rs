//! `clockctl watch` as a virtual clock on a real Mosquitto, fed by a real clock-server: it
//! sees every command, filters by device, survives a broker restart, and fails clearly
//! when there is no broker.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use common::certs::TestPki;
use common::mosquitto::Mosquitto;
use common::process::ServerProcess;

/// How long any one expected line may take.
const LINE_WITHIN: Duration = Duration::from_secs(15);

/// A running `clockctl watch` (stdout is a pipe, so plain lines); killed on drop.
struct Watch {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    stderr: Arc<Mutex<String>>,
}

impl Watch {
    /// Starts `clockctl watch <args>` and waits for its `watching ... on <broker>` line.
    fn start(broker: &str, args: &[&str]) -> Self {
        let mut w = Self::spawn(broker, args);
        let expected = format!(" on {broker}");
        let first = w.next_line();
        assert!(
            first.starts_with("watching ") && first.ends_with(&expected),
            "first line: {first:?}; stderr: {}",
            w.stderr()
        );
        w
    }

    fn spawn(broker: &str, args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_clockctl"))
            .arg("watch")
            .args(args)
            .env_clear()
            .env("CLOCKCTL_BROKER_URL", broker)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = common::process::stdout_lines(&mut child);
        let stderr = collect(child.stderr.take().unwrap());
        Self {
            child,
            lines,
            seen: Vec::new(),
            stderr,
        }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits for it to exit by itself with `code`; its stderr.
    fn failure(mut self, code: i32) -> String {
        assert_eq!(exit_code(&mut self.child), Some(code));
        // The reader thread has the rest of stderr once the process is gone.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.stderr().contains('\n') && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.stderr()
    }

    fn next_line(&mut self) -> String {
        self.line_within(LINE_WITHIN).unwrap_or_else(|| {
            panic!(
                "no line within {LINE_WITHIN:?}; stdout so far: {:?}; stderr: {}",
                self.seen,
                self.stderr()
            )
        })
    }

    fn line_within(&mut self, limit: Duration) -> Option<String> {
        let line = self.lines.recv_timeout(limit).ok()?;
        self.seen.push(line.clone());
        Some(line)
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits (bounded) for a child to exit by itself.
fn exit_code(child: &mut Child) -> Option<i32> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        assert!(Instant::now() < deadline, "clockctl watch did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A clock-server publishing to `broker`, ready (connected to the broker).
async fn server(broker: &Mosquitto) -> ServerProcess {
    server_at(&broker.url()).await
}

/// A clock-server publishing to the broker at `url`, ready.
async fn server_at(url: &str) -> ServerProcess {
    let url = url.to_owned();
    let server = ServerProcess::start(&[
        ("REQUIRE_TLS", "false"),
        ("API_AUTH_CREDENTIALS", "ops|tok|*"),
        ("ENABLED_SENDERS", "mqtt"),
        ("MQTT_BROKER_URL", &url),
        ("ALLOW_INSECURE_MQTT", "true"),
    ])
    .await;
    common::eventually(Duration::from_secs(15), "the server to be ready", || {
        let ready = clockctl(&server, &["ready"]);
        async move { ready.then_some(()) }
    })
    .await;
    server
}

/// Runs the real `clockctl` against `server`; whether it succeeded.
fn clockctl(server: &ServerProcess, args: &[&str]) -> bool {
    Command::new(env!("CARGO_BIN_EXE_clockctl"))
        .args(args)
        .env_clear()
        .env("CLOCK_SERVER_BASE_URL", server.url(""))
        .env("CLOCK_SERVER_TOKEN", "tok")
        .output()
        .unwrap()
        .status
        .success()
}

fn send(server: &ServerProcess, args: &[&str]) {
    assert!(clockctl(server, args), "clockctl {args:?} failed");
}

#[tokio::test]
async fn watch_prints_one_plain_line_for_each_command_the_server_publishes() {
    let broker = Mosquitto::start_plain();
    let server = server(&broker).await;
    let mut watch = Watch::start(&broker.url(), &[]);
    assert_eq!(
        watch.seen[0],
        format!("watching clocks/commands/+/+ on {}", broker.url())
    );

    send(
        &server,
        &[
            "alarm",
            "--device",
            "clock-1",
            "--time",
            "2099-01-02T07:30:00+01:00",
            "--label",
            "wake \"up\"",
        ],
    );
    let line = watch.next_line();
    assert!(
        line.starts_with(
            "clock-1 set_alarm alarmTime=2099-01-02T07:30:00+01:00 label=\"wake \\\"up\\\"\" commandId="
        ),
        "{line}"
    );
    send(
        &server,
        &[
            "message",
            "--device",
            "clock-7",
            "--message",
            "tea is ready",
        ],
    );
    let line = watch.next_line();
    assert!(
        line.starts_with(
            "clock-7 display_message message=\"tea is ready\" durationSeconds=10 commandId="
        ),
        "{line}"
    );
    send(
        &server,
        &["brightness", "--device", "clock-1", "--level", "0"],
    );
    let line = watch.next_line();
    assert!(
        line.starts_with("clock-1 set_brightness level=0 commandId="),
        "{line}"
    );
}

#[tokio::test]
async fn watch_with_a_device_shows_only_that_device() {
    let broker = Mosquitto::start_plain();
    let server = server(&broker).await;
    let mut only = Watch::start(&broker.url(), &["--device", "clock-2"]);
    assert_eq!(
        only.seen[0],
        format!("watching clocks/commands/clock-2/+ on {}", broker.url())
    );
    let mut all = Watch::start(&broker.url(), &["--plain"]);

    send(
        &server,
        &["brightness", "--device", "clock-1", "--level", "11"],
    );
    send(
        &server,
        &["brightness", "--device", "clock-2", "--level", "22"],
    );

    let line = all.next_line();
    assert!(
        line.starts_with("clock-1 set_brightness level=11 "),
        "{line}"
    );
    let line = all.next_line();
    assert!(
        line.starts_with("clock-2 set_brightness level=22 "),
        "{line}"
    );
    // The filtered clock's first command line is clock-2's: clock-1's never reached it.
    let line = only.next_line();
    assert!(
        line.starts_with("clock-2 set_brightness level=22 "),
        "{line}"
    );
}

#[tokio::test]
async fn watch_with_json_prints_the_topic_and_payload_of_each_command() {
    let broker = Mosquitto::start_plain();
    let server = server(&broker).await;
    // The `watching` line goes to stderr, so stdout is only JSON.
    let mut watch = Watch::spawn(&broker.url(), &["--json"]);
    common::eventually(Duration::from_secs(15), "the watching line", || {
        let subscribed = watch.stderr().contains("watching clocks/commands/+/+");
        async move { subscribed.then_some(()) }
    })
    .await;
    send(
        &server,
        &["brightness", "--device", "clock-3", "--level", "33"],
    );
    let raw = watch.next_line();
    // The keys in the order docs/clockctl.md gives them.
    assert!(
        raw.starts_with(
            r#"{"topic":"clocks/commands/clock-3/set_brightness","retained":false,"payload":{"#
        ),
        "{raw}"
    );
    let docs = std::fs::read_to_string("docs/clockctl.md").unwrap();
    assert!(docs.contains(r#"`{"topic","retained","payload"}`"#));
    let line: serde_json::Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(line["topic"], "clocks/commands/clock-3/set_brightness");
    assert_eq!(line["retained"], false);
    assert_eq!(line["payload"]["level"], 33);
    assert_eq!(line["payload"]["deviceId"], "clock-3");
    assert!(line["payload"]["commandId"].is_string());
}

#[tokio::test]
async fn watch_with_json_escapes_every_control_character_a_publisher_sent() {
    let broker = Mosquitto::start_plain();
    let mut watch = Watch::spawn(&broker.url(), &["--json"]);
    common::eventually(Duration::from_secs(15), "the watching line", || {
        let subscribed = watch.stderr().contains("watching clocks/commands/+/+");
        async move { subscribed.then_some(()) }
    })
    .await;
    // Anyone who may publish on the broker: a JSON payload with DEL and C1 CSI raw (valid
    // inside JSON strings) and ESC escaped, then a payload that is not JSON, ESC raw.
    // Then the invisible characters that reorder or break lines (bidi override, line
    // separator, zero-width space), raw in a JSON string and in a topic.
    let json_payload = "{\"message\":\"\\u001b]0;pwned\\u0007 del\u{7f} csi\u{9b}2J\"}";
    let invisible = "{\"message\":\"a\u{202e}b\u{2028}c\u{200b}d\"}";
    let raw_payload = "\u{1b}[2J\u{1b}]0;pwned\u{7}\u{9b}";
    let publisher = mqtt5::MqttClient::new(format!("test-pub-{}", uuid::Uuid::now_v7().simple()));
    publisher.connect(&broker.url()).await.unwrap();
    for (topic, payload) in [
        ("clocks/commands/clock-1/display_message", json_payload),
        ("clocks/commands/clock-1/display_message", raw_payload),
        ("clocks/commands/clock\u{202e}1/display_message", invisible),
    ] {
        publisher.publish_qos1(topic, payload).await.unwrap();
    }
    let _ = publisher.disconnect().await;

    let first = watch.next_line();
    let second = watch.next_line();
    let third = watch.next_line();
    for line in [&first, &second, &third] {
        assert!(
            !line.chars().any(clock_server::terminal::is_unsafe),
            "control or invisible characters reached stdout: {line:?}"
        );
    }
    assert!(
        third.contains(r"clock\u202e1") && third.contains(r"a\u202eb\u2028c\u200bd"),
        "{third}"
    );
    assert!(
        first.contains(r"\u001b]0;pwned\u0007 del\u007f csi\u009b2J"),
        "{first}"
    );
    let first: serde_json::Value = serde_json::from_str(&first).unwrap();
    let sent: serde_json::Value = serde_json::from_str(json_payload).unwrap();
    assert_eq!(first["payload"], sent);
    let second: serde_json::Value = serde_json::from_str(&second).unwrap();
    assert_eq!(second["payload"], raw_payload);
}

#[tokio::test]
async fn watch_keeps_watching_after_the_broker_restarts() {
    let mut broker = Mosquitto::start_plain();
    let server = server(&broker).await;
    let mut watch = Watch::start(&broker.url(), &[]);
    restart_and_see_a_command(&mut broker, &server, &mut watch).await;
}

#[tokio::test]
async fn watch_over_mqtts_reconnects_with_the_ca_file_after_the_broker_restarts() {
    let pki = TestPki::new();
    let (mut broker, plain) = Mosquitto::start_tls(&pki, false);
    let server = server_at(&format!("mqtt://127.0.0.1:{plain}")).await;
    let ca = pki.ca_cert.display().to_string();
    let url = format!("mqtts://localhost:{}", broker.port);
    let mut watch = Watch::start(&url, &["--ca-file", &ca]);
    restart_and_see_a_command(&mut broker, &server, &mut watch).await;
}

/// Stops the broker, waits until `watch` reports the loss, starts the broker again on the
/// same port(s) and sends commands until `watch` shows one: it must have reconnected and
/// subscribed again by itself.
async fn restart_and_see_a_command(
    broker: &mut Mosquitto,
    server: &ServerProcess,
    watch: &mut Watch,
) {
    broker.stop();
    common::eventually(Duration::from_secs(15), "the loss to be reported", || {
        let lost = watch.stderr().contains("lost the connection to");
        async move { lost.then_some(()) }
    })
    .await;
    broker.start();

    // Both the server and the watcher reconnect with back-off; a command published before
    // the watcher has re-subscribed is (correctly) not seen, so keep sending until one is.
    let deadline = Instant::now() + Duration::from_secs(45);
    let mut n = 0;
    let line = loop {
        assert!(
            Instant::now() < deadline,
            "nothing seen after the restart; stderr: {}",
            watch.stderr()
        );
        n += 1;
        let text = format!("after restart {n}");
        if !clockctl(
            server,
            &["message", "--device", "clock-1", "--message", &text],
        ) {
            // The server has not reconnected yet (502); its back-off decides when it has.
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        if let Some(line) = watch.line_within(Duration::from_millis(500)) {
            break line;
        }
    };
    assert!(
        line.starts_with("clock-1 display_message message=\"after restart "),
        "{line}"
    );
    assert!(
        watch.stderr().contains("reconnected to"),
        "{}",
        watch.stderr()
    );
}

#[test]
fn watch_exits_1_with_a_clear_message_when_no_broker_listens() {
    let port = common::free_port();
    let broker = format!("mqtt://127.0.0.1:{port}");
    let stderr = Watch::spawn(&broker, &[]).failure(1);
    assert!(
        stderr.contains(&format!("cannot connect to the MQTT broker at {broker}")),
        "{stderr}"
    );
    assert!(stderr.contains("CLOCKCTL_BROKER_URL"), "{stderr}");
}

#[test]
fn watch_refuses_bad_input_with_exit_2_before_connecting() {
    for args in [
        &["--broker", "http://127.0.0.1:1"][..],
        &["--device", "a/b"],
        &["--topic-prefix", "clocks/#"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_clockctl"))
            .arg("watch")
            .args(args)
            .env_clear()
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(args[0]), "{args:?}: {stderr}");
    }
}

#[tokio::test]
async fn on_a_terminal_watch_draws_a_live_view_of_the_clock() {
    let broker = Mosquitto::start_plain();
    let server = server(&broker).await;
    let live = LiveView::start(&format!("--broker {}", broker.url())).await;

    send(
        &server,
        &[
            "message",
            "--device",
            "clock-1",
            "--message",
            "live hello",
            "--duration",
            "30",
        ],
    );
    send(
        &server,
        &["brightness", "--device", "clock-1", "--level", "70"],
    );
    live.shows("\"live hello\"  (3").await;
    live.shows("brightness   70 %").await;
    let text = live.screen();
    assert!(
        text.contains("\x1b[?25l"),
        "the cursor is hidden while drawing"
    );
    assert!(
        text.contains("\x1b[H"),
        "frames are drawn from the top left"
    );
}

/// `clockctl watch <args>` on a pseudo-terminal (`script` gives it one as stdout), so it
/// draws the live view; what it wrote is the screen. Killed on drop.
struct LiveView {
    child: Child,
    screen: Arc<Mutex<String>>,
}

impl LiveView {
    /// Starts it and waits for the header saying it is connected.
    async fn start(args: &str) -> Self {
        let mut child = Command::new("script")
            .args(["-qfec"])
            .arg(format!("{} watch {args}", env!("CARGO_BIN_EXE_clockctl")))
            .arg("/dev/null")
            .env_clear()
            .env("TERM", "xterm")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let screen = collect(child.stdout.take().unwrap());
        let live = Self { child, screen };
        live.shows("[connected]").await;
        live
    }

    /// Waits (bounded) until the screen shows `text`.
    async fn shows(&self, text: &str) {
        common::eventually(LINE_WITHIN, &format!("{text:?} on the screen"), || {
            let found = self.screen.lock().unwrap().contains(text);
            async move { found.then_some(()) }
        })
        .await;
    }

    fn screen(&self) -> String {
        self.screen.lock().unwrap().clone()
    }
}

impl Drop for LiveView {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn watch_over_mqtts_trusts_the_ca_file_and_shows_commands() {
    let pki = TestPki::new();
    let (broker, plain) = Mosquitto::start_tls(&pki, false);
    let server = server_at(&format!("mqtt://127.0.0.1:{plain}")).await;
    let url = format!("mqtts://localhost:{}", broker.port);
    let ca = pki.ca_cert.display().to_string();
    let mut watch = Watch::start(&url, &["--ca-file", &ca]);
    send(
        &server,
        &["brightness", "--device", "clock-3", "--level", "40"],
    );
    let line = watch.next_line();
    assert!(
        line.starts_with("clock-3 set_brightness level=40 commandId="),
        "{line}"
    );
}

#[test]
fn watch_over_mqtts_without_the_ca_fails_on_the_certificate_with_exit_1() {
    let pki = TestPki::new();
    let (broker, _) = Mosquitto::start_tls(&pki, false);
    let url = format!("mqtts://127.0.0.1:{}", broker.port);
    let stderr = Watch::spawn(&url, &[]).failure(1);
    assert!(
        stderr.contains(&format!("cannot connect to the MQTT broker at {url}")),
        "{stderr}"
    );
    assert!(stderr.to_lowercase().contains("certificate"), "{stderr}");
}

#[tokio::test]
async fn watch_announces_a_64_kib_maximum_and_drops_a_bigger_packet_then_reconnects() {
    use common::mqtt_peer::{
        CONNACK, is_packet_too_large, maximum_packet_size, read_packet, suback,
    };
    use tokio::io::AsyncWriteExt;

    const LIMIT: Duration = Duration::from_secs(10);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let broker = format!("mqtt://{}", listener.local_addr().unwrap());
    let accept = || async {
        let (mut stream, _) = tokio::time::timeout(LIMIT, listener.accept())
            .await
            .expect("a CONNECT from clockctl watch")
            .unwrap();
        let (kind, connect) = read_packet(&mut stream).await.unwrap();
        assert_eq!(kind >> 4, 1, "CONNECT expected");
        assert_eq!(maximum_packet_size(&connect), Some(65_536));
        stream.write_all(&CONNACK).await.unwrap();
        let (kind, subscribe) = read_packet(&mut stream).await.unwrap();
        assert_eq!(kind, 0x82, "SUBSCRIBE expected");
        stream.write_all(&suback(&subscribe)).await.unwrap();
        stream
    };

    let mut watch = Watch::spawn(&broker, &[]);
    let first = accept().await;
    let line = watch.next_line();
    assert!(line.starts_with("watching "), "{line}");

    // 250 MB announced, at most 128 KiB of it sent: only a refusal can end this connection
    // within the bound (the watcher's keep-alive is 30 s).
    let answer = common::mqtt_peer::send_oversized_publish(first)
        .await
        .expect("clockctl watch should close the connection once the PUBLISH announced 250 MB");
    assert!(
        answer.iter().any(is_packet_too_large),
        "DISCONNECT with reason 0x95 expected, got {answer:?}"
    );

    let _second = accept().await;
    common::eventually(LIMIT, "the reconnect to be reported", || {
        let reconnected = watch.stderr().contains("reconnected to");
        async move { reconnected.then_some(()) }
    })
    .await;
    assert!(
        watch.stderr().contains("lost the connection"),
        "{}",
        watch.stderr()
    );
}

// ---------------------------------------------------------------------------------------
// Acknowledgements (SPEC 7.4/7.7): watch answers like a device.

/// What a real subscriber on the broker received: topic, payload, retain flag, and the
/// correlation data.
type Seen = Arc<Mutex<Vec<(String, String, bool, Option<Vec<u8>>)>>>;

/// A client subscribed (QoS 1, SUBACK received) to `filter`, recording what arrives.
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
                m.properties.correlation_data,
            ));
        })
        .await
        .unwrap();
    (client, seen)
}

/// Publishes `payload` on `topic` (QoS 1), with a Response Topic and Correlation Data when
/// given, as the gateway does.
async fn publish(broker: &Mosquitto, topic: &str, payload: &str, response: Option<(&str, &[u8])>) {
    let client = mqtt5::MqttClient::new(format!("test-pub-{}", uuid::Uuid::now_v7().simple()));
    client.connect(&broker.url()).await.unwrap();
    let mut options = mqtt5::PublishOptions {
        qos: mqtt5::QoS::AtLeastOnce,
        ..mqtt5::PublishOptions::default()
    };
    if let Some((topic, correlation)) = response {
        options.properties.response_topic = Some(topic.to_owned());
        options.properties.correlation_data = Some(correlation.to_vec());
    }
    client
        .publish_with_options(topic, payload, options)
        .await
        .unwrap();
    let _ = client.disconnect().await;
}

/// Waits (bounded) until `seen` holds `n` messages; returns them.
async fn received(seen: &Seen, n: usize) -> Vec<(String, String, bool, Option<Vec<u8>>)> {
    common::eventually(LINE_WITHIN, "acknowledgements on the broker", || {
        let all = seen.lock().unwrap().clone();
        async move { (all.len() >= n).then_some(all) }
    })
    .await
}

#[tokio::test]
async fn watch_acknowledges_a_command_it_shows_with_exactly_the_spec_shape() {
    let broker = Mosquitto::start_plain();
    let (_sub, acks) = subscriber(&broker, "clocks/commands/+/ack").await;
    let mut watch = Watch::start(&broker.url(), &[]);
    publish(
        &broker,
        "clocks/commands/clock-1/set_brightness",
        r#"{"deviceId":"clock-1","type":"set_brightness","level":40,"commandId":"cmd-1"}"#,
        None,
    )
    .await;
    let line = watch.next_line();
    assert_eq!(line, "clock-1 set_brightness level=40 commandId=cmd-1");
    let acks = received(&acks, 1).await;
    assert_eq!(
        acks[0],
        (
            "clocks/commands/clock-1/ack".to_owned(),
            r#"{"commandId":"cmd-1","status":"succeeded"}"#.to_owned(),
            false,
            None
        )
    );
    // Its own acknowledgement (on <prefix>/+/+ too) is not shown as a command: the next
    // line is the next command.
    publish(
        &broker,
        "clocks/commands/clock-1/set_brightness",
        r#"{"level":41,"commandId":"cmd-2"}"#,
        None,
    )
    .await;
    assert_eq!(
        watch.next_line(),
        "clock-1 set_brightness level=41 commandId=cmd-2"
    );
}

#[tokio::test]
async fn watch_acknowledges_a_payload_it_rejects_as_failed_with_the_reason() {
    let broker = Mosquitto::start_plain();
    let (_sub, acks) = subscriber(&broker, "clocks/commands/+/ack").await;
    let mut watch = Watch::start(&broker.url(), &[]);
    publish(
        &broker,
        "clocks/commands/clock-2/set_brightness",
        r#"{"level":101,"commandId":"bad-1"}"#,
        None,
    )
    .await;
    let line = watch.next_line();
    assert!(line.starts_with("clock-2 invalid_command "), "{line}");
    let acks = received(&acks, 1).await;
    let (topic, payload, retained, _) = &acks[0];
    assert_eq!(topic, "clocks/commands/clock-2/ack");
    assert!(!retained);
    let ack: serde_json::Value = serde_json::from_str(payload).unwrap();
    assert_eq!(
        ack,
        serde_json::json!({"commandId":"bad-1","status":"failed",
            "reason":"level must be an integer between 0 and 100"})
    );
}

/// Everything `seen` holds on topics other than `allowed`.
fn elsewhere(seen: &Seen, allowed: &[&str]) -> Vec<(String, String, bool, Option<Vec<u8>>)> {
    seen.lock()
        .unwrap()
        .iter()
        .filter(|m| !allowed.contains(&m.0.as_str()))
        .cloned()
        .collect()
}

#[tokio::test]
async fn watch_answers_only_on_the_devices_own_ack_topic_whatever_response_topic_it_is_handed() {
    let broker = Mosquitto::start_plain();
    let (_sub, seen) = subscriber(&broker, "#").await;
    let mut watch = Watch::start(&broker.url(), &[]);
    let command = "clocks/commands/clock-1/display_message";
    let own = "clocks/commands/clock-1/ack";
    // Another clock's ack topic (to confirm its command), a topic outside the prefix (to
    // make the clock publish to someone else's device), and the clock's own ack topic.
    for (id, response_topic) in [
        ("clock-2-cmd", "clocks/commands/clock-2/ack"),
        ("victim-cmd", "victim/home/alarm/disarm"),
        ("own-cmd", own),
    ] {
        publish(
            &broker,
            command,
            &format!(r#"{{"message":"hi","durationSeconds":5,"commandId":"{id}"}}"#),
            Some((response_topic, id.as_bytes())),
        )
        .await;
        assert!(watch.next_line().ends_with(&format!("commandId={id}")));
    }
    // Each command is answered, on clock-1's own ack topic only, echoing the Correlation
    // Data (MQTT 5 request/response).
    let acks = common::eventually(LINE_WITHIN, "three acks on the own topic", || {
        let acks: Vec<_> = seen
            .lock()
            .unwrap()
            .iter()
            .filter(|m| m.0 == own)
            .cloned()
            .collect();
        async move { (acks.len() == 3).then_some(acks) }
    })
    .await;
    for (ack, id) in acks.iter().zip(["clock-2-cmd", "victim-cmd", "own-cmd"]) {
        assert_eq!(
            ack,
            &(
                own.to_owned(),
                format!(r#"{{"commandId":"{id}","status":"succeeded"}}"#),
                false,
                Some(id.as_bytes().to_vec())
            )
        );
    }
    // A stray publish would have followed its command within milliseconds.
    common::observe_for(Duration::from_millis(500)).await;
    assert_eq!(
        elsewhere(&seen, &[command, own]),
        [],
        "nothing anywhere else"
    );
}

#[tokio::test]
async fn a_command_on_one_clocks_topic_cannot_make_watch_confirm_another_clocks_command() {
    let broker = Mosquitto::start_plain();
    let server = server(&broker).await;
    let (_sub, seen) = subscriber(&broker, "#").await;
    let mut watch = Watch::start(&broker.url(), &["--device", "clock-1"]);
    // clock-2 is away: its command stays `sent`.
    let (code, stdout, stderr) = clockctl_output(
        &server,
        &[
            "--json",
            "message",
            "--device",
            "clock-2",
            "--message",
            "tea",
        ],
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    let body: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let id = body["commandId"].as_str().unwrap().to_owned();
    // Someone who may publish on clock-1's topic names clock-2's command and ack topic.
    publish(
        &broker,
        "clocks/commands/clock-1/display_message",
        &format!(r#"{{"message":"x","durationSeconds":5,"commandId":"{id}"}}"#),
        Some(("clocks/commands/clock-2/ack", id.as_bytes())),
    )
    .await;
    assert!(watch.next_line().starts_with("clock-1 display_message "));
    // clock-1 answers on its own topic (which the server ignores: not the record's device).
    common::eventually(LINE_WITHIN, "clock-1's acknowledgement", || {
        let acked = seen
            .lock()
            .unwrap()
            .iter()
            .any(|m| m.0 == "clocks/commands/clock-1/ack" && m.1.contains(&id));
        async move { acked.then_some(()) }
    })
    .await;
    // A confirmation would reach the server within milliseconds.
    common::observe_for(Duration::from_millis(500)).await;
    assert_eq!(
        seen.lock()
            .unwrap()
            .iter()
            .filter(|m| m.0 == "clocks/commands/clock-2/ack")
            .count(),
        0
    );
    let (code, stdout, _) = clockctl_output(&server, &["status", &id, "--json"]);
    assert_eq!(code, 0, "{stdout}");
    let record: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(record["status"], "sent", "{record}");
}

#[tokio::test]
async fn watch_with_no_ack_publishes_nothing() {
    let broker = Mosquitto::start_plain();
    let (_sub, seen) = subscriber(&broker, "#").await;
    let mut watch = Watch::start(&broker.url(), &["--no-ack"]);
    publish(
        &broker,
        "clocks/commands/clock-4/set_brightness",
        r#"{"level":4,"commandId":"cmd-4"}"#,
        None,
    )
    .await;
    watch.next_line();
    // The subscriber has the command itself; an acknowledgement would follow it within
    // milliseconds (it is published right after the line is printed). Absence can only be
    // observed over a window: 500 ms, far above that, short enough to keep the test quick.
    received(&seen, 1).await;
    common::observe_for(Duration::from_millis(500)).await;
    let all = seen.lock().unwrap().clone();
    assert_eq!(
        all.len(),
        1,
        "only the command, no acknowledgement: {all:?}"
    );
    assert_eq!(all[0].0, "clocks/commands/clock-4/set_brightness");
}

#[tokio::test]
async fn a_refused_acknowledgement_is_reported_once_and_watch_goes_on() {
    // The broker lets anonymous clients read commands and write them, but not acknowledge.
    let dir = tempfile::tempdir().unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let acl = dir.path().join("acl");
    std::fs::write(
        &acl,
        "topic read clocks/#\ntopic write clocks/commands/+/set_brightness\n",
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&acl, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let broker = Mosquitto::start_with(&format!(
        "allow_anonymous true\nacl_file {}\n",
        acl.display()
    ));
    let mut watch = Watch::start(&broker.url(), &[]);
    for n in 1..=3 {
        publish(
            &broker,
            "clocks/commands/clock-5/set_brightness",
            &format!(r#"{{"level":{n},"commandId":"c{n}"}}"#),
            None,
        )
        .await;
        assert_eq!(
            watch.next_line(),
            format!("clock-5 set_brightness level={n} commandId=c{n}")
        );
    }
    common::eventually(LINE_WITHIN, "the refused acknowledgement reported", || {
        let reported = watch.stderr().contains("cannot acknowledge");
        async move { reported.then_some(()) }
    })
    .await;
    let stderr = watch.stderr();
    assert_eq!(stderr.matches("cannot acknowledge").count(), 1, "{stderr}");
    assert!(stderr.contains("--no-ack"), "{stderr}");
}

/// Runs the real `clockctl` against `server`: exit code and stdout, stderr.
fn clockctl_output(server: &ServerProcess, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_clockctl"))
        .args(args)
        .env_clear()
        .env("CLOCK_SERVER_BASE_URL", server.url(""))
        .env("CLOCK_SERVER_TOKEN", "tok")
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[tokio::test]
async fn with_watch_acknowledging_clockctl_wait_ends_with_succeeded_on_a_real_server() {
    let broker = Mosquitto::start_plain();
    let server = server(&broker).await;
    let mut watch = Watch::start(&broker.url(), &["--device", "clock-9"]);
    let (code, stdout, stderr) = clockctl_output(
        &server,
        &[
            "message",
            "--device",
            "clock-9",
            "--message",
            "tea",
            "--wait=15s",
        ],
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    let line = watch.next_line();
    assert!(line.starts_with("clock-9 display_message "), "{line}");
    let mut lines = stdout.lines();
    assert_eq!(lines.next(), Some("display-message command dispatched"));
    let outcome = lines.next().unwrap();
    let id = outcome
        .strip_prefix("command ")
        .and_then(|rest| rest.strip_suffix(" succeeded"))
        .unwrap_or_else(|| panic!("{stdout}"));

    let (code, stdout, _) = clockctl_output(&server, &["status", id]);
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("status       succeeded"), "{stdout}");
    assert!(stdout.contains("device       clock-9"), "{stdout}");
    let (code, _, stderr) = clockctl_output(&server, &["cancel", id]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("can no longer be cancelled: it is succeeded"),
        "{stderr}"
    );
    let (code, _, stderr) = clockctl_output(&server, &["status", "no-such-command"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("no command no-such-command"), "{stderr}");
}

// ---------------------------------------------------------------------------------------
// The AWTRIX 3 profile (SPEC 8.1): the payloads of the table, published by a plain client.

/// `clockctl watch --device kitchen --profile awtrix3 --topic awtrix_a1b2c3 <extra>`.
fn awtrix_watch(broker: &Mosquitto, extra: &[&str]) -> Watch {
    let mut args = vec![
        "--device",
        "kitchen",
        "--profile",
        "awtrix3",
        "--topic",
        "awtrix_a1b2c3",
    ];
    args.extend_from_slice(extra);
    Watch::start(&broker.url(), &args)
}

#[tokio::test]
async fn watch_as_an_awtrix_clock_shows_each_payload_of_the_spec_table() {
    let broker = Mosquitto::start_plain();
    let mut watch = awtrix_watch(&broker, &[]);
    assert_eq!(
        watch.seen[0],
        format!(
            "watching awtrix_a1b2c3/notify awtrix_a1b2c3/notify/dismiss awtrix_a1b2c3/power awtrix_a1b2c3/settings on {}",
            broker.url()
        )
    );
    let melody = "alarm:d=4,o=5,b=140:c6,p,c6,p,c6";
    for (topic, payload, line) in [
        (
            "awtrix_a1b2c3/notify",
            r#"{"text":"tea is ready","duration":10}"#.to_owned(),
            r#"kitchen notify text="tea is ready" duration=10"#.to_owned(),
        ),
        // An alarm: held, waking the display, its melody looping.
        (
            "awtrix_a1b2c3/notify",
            format!(
                r#"{{"text":"wake up","hold":true,"wakeup":true,"loopSound":true,"rtttl":"{melody}"}}"#
            ),
            format!(
                r#"kitchen alarm text="wake up" hold=true wakeup=true loopSound=true rtttl="{melody}""#
            ),
        ),
        (
            "awtrix_a1b2c3/power",
            r#"{"power":false}"#.to_owned(),
            "kitchen power power=false".to_owned(),
        ),
        (
            "awtrix_a1b2c3/power",
            r#"{"power":true}"#.to_owned(),
            "kitchen power power=true".to_owned(),
        ),
        (
            "awtrix_a1b2c3/settings",
            r#"{"ABRI":false,"BRI":102}"#.to_owned(),
            "kitchen settings ABRI=false BRI=102".to_owned(),
        ),
        (
            "awtrix_a1b2c3/settings",
            r#"{"ABRI":false,"BRI":255}"#.to_owned(),
            "kitchen settings ABRI=false BRI=255".to_owned(),
        ),
        (
            "awtrix_a1b2c3/notify/dismiss",
            String::new(),
            "kitchen dismiss".to_owned(),
        ),
    ] {
        publish(&broker, topic, &payload, None).await;
        assert_eq!(watch.next_line(), line, "{topic} {payload}");
    }
}

#[tokio::test]
async fn watch_as_an_awtrix_clock_rejects_what_the_clock_would_not_take_and_goes_on() {
    let broker = Mosquitto::start_plain();
    let mut watch = awtrix_watch(&broker, &[]);
    for (topic, payload, error) in [
        (
            "awtrix_a1b2c3/notify",
            "{\"text\":}",
            "the payload is not JSON",
        ),
        ("awtrix_a1b2c3/settings", "\"text\"", "not a JSON object"),
        (
            "awtrix_a1b2c3/notify",
            r#"{"text":"x","duration":"ten"}"#,
            "duration must be a whole number of seconds",
        ),
        (
            "awtrix_a1b2c3/settings",
            r#"{"BRI":256}"#,
            "BRI must be an integer between 0 and 255",
        ),
        // The firmware drops a notification with anything around its braces.
        (
            "awtrix_a1b2c3/notify",
            "{\"text\":\"x\"}\n",
            "dropped: the firmware takes a notification only when the payload starts with {",
        ),
        (
            "awtrix_a1b2c3/notify",
            " {\"text\":\"x\"}",
            "no whitespace around it",
        ),
        ("awtrix_a1b2c3/power", r#"{"on":true}"#, "no power key"),
        // Control characters a publisher sent stay escaped on the line.
        (
            "awtrix_a1b2c3/notify",
            "{\u{1b}[2J\u{9b}}",
            "the payload is not JSON",
        ),
    ] {
        publish(&broker, topic, payload, None).await;
        let line = watch.next_line();
        let kind = topic.rsplit('/').next().unwrap();
        assert!(
            line.starts_with(&format!("kitchen invalid_command type=\"{kind}\" error=\""))
                && line.contains(error),
            "{payload}: {line}"
        );
        assert!(!line.chars().any(char::is_control), "{line:?}");
    }
    // Still watching: the next valid payload is shown.
    publish(
        &broker,
        "awtrix_a1b2c3/notify",
        r#"{"text":"still here","duration":5}"#,
        None,
    )
    .await;
    assert_eq!(
        watch.next_line(),
        r#"kitchen notify text="still here" duration=5"#
    );
}

#[tokio::test]
async fn watch_as_an_awtrix_clock_prints_json_and_acknowledges_nothing() {
    let broker = Mosquitto::start_plain();
    let (_sub, seen) = subscriber(&broker, "#").await;
    let mut watch = Watch::spawn(
        &broker.url(),
        &["--profile", "awtrix3", "--topic", "awtrix_a1b2c3", "--json"],
    );
    common::eventually(LINE_WITHIN, "the watching line", || {
        let subscribed = watch.stderr().contains("watching awtrix_a1b2c3/notify");
        async move { subscribed.then_some(()) }
    })
    .await;
    // AWTRIX's own chatter under its prefix is not for the notification or settings view.
    publish(&broker, "awtrix_a1b2c3/stats", r#"{"bat":90}"#, None).await;
    // A commandId a generic clock would acknowledge, on the Response Topic it would use.
    let payload = r#"{"text":"hi","duration":3,"commandId":"c1"}"#;
    publish(
        &broker,
        "awtrix_a1b2c3/notify",
        payload,
        Some(("clocks/commands/kitchen/ack", b"c1")),
    )
    .await;
    let line: serde_json::Value = serde_json::from_str(&watch.next_line()).unwrap();
    assert_eq!(
        line,
        serde_json::json!({"topic":"awtrix_a1b2c3/notify","retained":false,
            "payload":{"text":"hi","duration":3,"commandId":"c1"}})
    );
    // The broker delivered the stats and the notification to the subscriber; an
    // acknowledgement would follow within milliseconds: wait well beyond that.
    received(&seen, 2).await;
    common::observe_for(Duration::from_millis(500)).await;
    // Besides its presence (`stats/device`, `stats`: SPEC 11.4), the clock said nothing.
    let topics: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|m| m.0.clone())
        .filter(|t| !t.starts_with("awtrix_a1b2c3/stats"))
        .collect();
    assert_eq!(topics, ["awtrix_a1b2c3/notify"]);
}

#[tokio::test]
async fn on_a_terminal_watch_as_an_awtrix_clock_shows_the_held_alarm_and_bri() {
    let broker = Mosquitto::start_plain();
    let live = LiveView::start(&format!(
        "--broker {} --device kitchen --profile awtrix3 --topic awtrix_a1b2c3",
        broker.url()
    ))
    .await;
    publish(&broker, "awtrix_a1b2c3/power", r#"{"power":false}"#, None).await;
    publish(
        &broker,
        "awtrix_a1b2c3/notify",
        r#"{"text":"wake up","hold":true,"wakeup":true,"loopSound":true,"rtttl":"alarm:d=4,o=5,b=140:c6"}"#,
        None,
    )
    .await;
    publish(
        &broker,
        "awtrix_a1b2c3/notify",
        r#"{"text":"behind it","duration":5}"#,
        None,
    )
    .await;
    publish(
        &broker,
        "awtrix_a1b2c3/settings",
        r#"{"ABRI":false,"BRI":102}"#,
        None,
    )
    .await;
    live.shows("ALARM \"wake up\"").await;
    live.shows("102/255 (40 %)").await;
    let text = live.screen();
    assert!(
        text.contains(
            "(holds until dismissed)  ♪ alarm:d=4,o=5,b=140:c6 (repeats)  (lit by wakeup)"
        ),
        "{text}"
    );
    assert!(
        text.contains("queued      1 more, shown after it"),
        "{text}"
    );
    assert!(text.contains("power       off"), "{text}");
    // Dismissed (the button, or this topic): the alarm goes, the next one is shown.
    publish(&broker, "awtrix_a1b2c3/notify/dismiss", "", None).await;
    live.shows("\"behind it\"").await;
    let text = live.screen();
    assert!(text.contains("│ alarm       -"), "{text}");
    assert!(text.contains("┌ kitchen "), "{text}");
}

#[test]
fn watch_refuses_an_awtrix_profile_without_a_topic_and_a_topic_without_it() {
    for (args, says) in [
        (
            &["--profile", "awtrix3"][..],
            "--profile awtrix3 needs --topic",
        ),
        (
            &["--topic", "awtrix_a1b2c3"],
            "--topic only applies with --profile awtrix3",
        ),
        (
            &["--profile", "awtrix3", "--topic", "awtrix/#"],
            "invalid --topic",
        ),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_clockctl"))
            .arg("watch")
            .args(args)
            .env_clear()
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}

/// Everything `pipe` yields from now on, gathered by a thread into a shared string.
fn collect(mut pipe: impl Read + Send + 'static) -> Arc<Mutex<String>> {
    let text = Arc::new(Mutex::new(String::new()));
    let sink = text.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = pipe.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    text
}
