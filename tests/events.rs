//! `GET /events` (SPEC 13.1) over real HTTP: what a stream carries, whose events it
#![allow(clippy::unwrap_used)]
//! shows, its filters, keep-alives, the cap on streams, overflow and shutdown.

mod common;

use std::time::{Duration, Instant};

use common::app::{CLOCKS_TOKEN, OPS_TOKEN, TestApp, spawn_app};
use common::sse::{Block, EventStream};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(10);

async fn message(app: &TestApp, token: &str, device: &str) -> String {
    let res = app
        .post(
            "/commands/messages",
            Some(token),
            json!({"deviceId": device, "message": "hi", "durationSeconds": 5}),
        )
        .await;
    assert_eq!(res.status(), 202);
    let body: serde_json::Value = serde_json::from_str(&res.text().await.unwrap()).unwrap();
    body["commandId"].as_str().unwrap().to_owned()
}

async fn stream(app: &TestApp, query: &str, token: &str) -> EventStream {
    EventStream::open(&app.client, &app.url(&format!("/events{query}")), token).await
}

#[tokio::test]
async fn a_stream_shows_a_command_from_its_creation_to_sent_as_get_shows_the_record() {
    let app = spawn_app(&[]).await;
    let mut events = stream(&app, "", OPS_TOKEN).await;
    let id = message(&app, OPS_TOKEN, "clock-1").await;
    let seen = events
        .until(WAIT, "with status sent", |_, d| d["status"] == "sent")
        .await;
    let statuses: Vec<_> = seen
        .iter()
        .map(|(event, data)| {
            assert_eq!(event, "command");
            assert_eq!(data["commandId"], id.as_str());
            data["status"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(statuses, ["pending", "sent"]);
    let (_, record) = app
        .call(
            reqwest::Method::GET,
            &format!("/commands/{id}"),
            &json!(null),
        )
        .await;
    assert_eq!(seen.last().unwrap().1, record);
}

#[tokio::test]
async fn a_cancelled_alarm_is_an_event_too() {
    // An AWTRIX device's alarm is held by the gateway: `scheduled`, then `cancelled`.
    let dir = tempfile::tempdir().unwrap();
    let devices = dir.path().join("devices.toml");
    std::fs::write(
        &devices,
        "[devices.awtrix-1]\nprofile = \"awtrix3\"\ntopic = \"awtrix_1\"\n",
    )
    .unwrap();
    let broker = common::mosquitto::Mosquitto::start_plain();
    let url = broker.url();
    let app = common::app::start(
        &common::app::env_with(&[
            ("ENABLED_SENDERS", "mqtt"),
            ("MQTT_BROKER_URL", url.as_str()),
            ("ALLOW_INSECURE_MQTT", "true"),
            ("DEVICES_FILE", devices.to_str().unwrap()),
        ]),
        None,
    )
    .await
    .unwrap();
    let mut events = stream(&app, "?types=command", OPS_TOKEN).await;
    let at = (chrono::Utc::now() + chrono::TimeDelta::hours(1)).to_rfc3339();
    let (status, body) = app
        .call(
            reqwest::Method::POST,
            "/commands/alarms",
            &json!({"deviceId": "awtrix-1", "alarmTime": at, "label": "x"}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let id = body["commandId"].as_str().unwrap().to_owned();
    events
        .until(WAIT, "scheduled", |_, d| {
            d["commandId"] == id.as_str() && d["status"] == "scheduled"
        })
        .await;
    let (status, _) = app
        .call(
            reqwest::Method::DELETE,
            &format!("/commands/{id}"),
            &json!(null),
        )
        .await;
    assert_eq!(status, 200);
    let seen = events
        .until(WAIT, "cancelled", |_, d| d["status"] == "cancelled")
        .await;
    assert_eq!(seen.last().unwrap().1["commandId"], id.as_str());
}

#[tokio::test]
async fn a_credential_sees_only_the_devices_in_its_scopes_and_a_filter_narrows_them() {
    let app = spawn_app(&[]).await;
    // `clocks` covers clock-*; a deviceId outside its scopes simply matches nothing.
    let mut clocks = stream(&app, "", CLOCKS_TOKEN).await;
    let mut lamp_only = stream(&app, "?deviceId=lamp-1", CLOCKS_TOKEN).await;
    let mut clock_2 = stream(&app, "?deviceId=clock-2&deviceId=clock-3", OPS_TOKEN).await;
    let mut devices_only = stream(&app, "?types=device,schedule", OPS_TOKEN).await;
    message(&app, OPS_TOKEN, "lamp-1").await;
    message(&app, OPS_TOKEN, "clock-1").await;
    let last = message(&app, OPS_TOKEN, "clock-2").await;
    let seen = clocks
        .until(WAIT, "of the last command", |_, d| {
            d["commandId"] == last.as_str() && d["status"] == "sent"
        })
        .await;
    assert!(
        seen.iter().all(|(_, d)| d["deviceId"] != "lamp-1"),
        "{seen:#?}"
    );
    assert!(seen.iter().any(|(_, d)| d["deviceId"] == "clock-1"));
    let seen = clock_2
        .until(WAIT, "of clock-2", |_, d| d["status"] == "sent")
        .await;
    assert!(seen.iter().all(|(_, d)| d["deviceId"] == "clock-2"));
    // Nothing reached the other two: by now their events would have been written.
    for stream in [&mut lamp_only, &mut devices_only] {
        match stream.next_block(Duration::from_millis(300)).await {
            None | Some(Block::Comment(_)) => {}
            Some(other) => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn an_unknown_event_type_is_a_400_naming_it() {
    let app = spawn_app(&[]).await;
    let (status, body) = app
        .call(
            reqwest::Method::GET,
            "/events?types=command,presence",
            &json!(null),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "invalid query parameter");
    assert!(
        body["detail"].as_str().unwrap().contains("presence"),
        "{body}"
    );
    assert_eq!(app.get("/events", None).await.status(), 401);
}

#[tokio::test]
async fn past_events_max_streams_a_new_stream_gets_503_with_retry_after() {
    let app = spawn_app(&[("EVENTS_MAX_STREAMS", "2")]).await;
    let first = stream(&app, "", OPS_TOKEN).await;
    let _second = stream(&app, "", OPS_TOKEN).await;
    let res = app.get("/events", Some(OPS_TOKEN)).await;
    assert_eq!(res.status(), 503);
    assert!(res.headers().contains_key("retry-after"));
    let body: serde_json::Value = serde_json::from_str(&res.text().await.unwrap()).unwrap();
    assert_eq!(body, json!({"error": "too many event streams"}));
    // A stream that ends frees its place.
    drop(first);
    common::eventually(WAIT, "a free place", || async {
        let res = app.get("/events", Some(OPS_TOKEN)).await;
        (res.status() == 200).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_quiet_stream_gets_a_keep_alive_at_least_every_15_seconds_and_outlives_the_idle_timeout()
{
    // An idle timeout shorter than the keep-alive: the stream must not be cut by it.
    let app = spawn_app(&[("HTTP_IDLE_TIMEOUT_MS", "2000")]).await;
    let mut events = stream(&app, "", OPS_TOKEN).await;
    let opened = Instant::now();
    let block = events.next_block(Duration::from_secs(16)).await;
    assert_eq!(block, Some(Block::Comment("keep-alive".into())));
    let gap = opened.elapsed();
    assert!(gap <= Duration::from_secs(16), "{gap:?}");
    message(&app, OPS_TOKEN, "clock-1").await;
    events
        .until(WAIT, "after the quiet period", |_, d| d["status"] == "sent")
        .await;
}

#[tokio::test]
async fn a_client_that_stops_reading_gets_overflow_and_its_stream_ends() {
    stops_reading("/events").await;
}

#[tokio::test]
async fn a_client_following_one_device_that_stops_reading_gets_overflow_too() {
    stops_reading("/events?deviceId=clock-1").await;
}

async fn stops_reading(path: &str) {
    let app = spawn_app(&[("HTTP_WRITE_TIMEOUT_MS", "60000")]).await;
    // A raw client with a tiny receive buffer that reads nothing for a while.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(2048).unwrap();
    let mut slow = socket.connect(app.addr).await.unwrap();
    slow.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {OPS_TOKEN}\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    // Far more than 1024 events behind (two per command, 350 bytes each) once the socket
    // buffers are full: the kernel lets the server's grow to 4 MiB (tcp_wmem).
    let sends = (0..8).map(|_| async {
        for _ in 0..1200 {
            message(&app, OPS_TOKEN, "clock-1").await;
        }
    });
    futures_util::future::join_all(sends).await;
    let mut received = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), async {
        let mut chunk = [0u8; 65536];
        loop {
            let n = slow.read(&mut chunk).await.unwrap();
            received.extend_from_slice(&chunk[..n]);
            if n == 0 || received.ends_with(b"\r\n0\r\n\r\n") {
                break;
            }
        }
    })
    .await;
    let text = String::from_utf8_lossy(&received);
    assert!(
        read.is_ok(),
        "the stream did not end: {} bytes, ending {:?}",
        text.len(),
        &text[text.len().saturating_sub(300)..]
    );
    assert!(
        text.starts_with("HTTP/1.1 200"),
        "{}",
        &text[..200.min(text.len())]
    );
    let tail = &text[text.len().saturating_sub(200)..];
    assert!(tail.contains("event: overflow\n"), "{tail}");
    // Not every event came: the stream stopped instead of queueing them all.
    assert!(text.matches("event: command").count() < 2 * 8 * 1200);
}

#[tokio::test]
async fn stopping_the_server_ends_open_streams_at_once() {
    let mut app = spawn_app(&[]).await;
    let mut events = stream(&app, "", OPS_TOKEN).await;
    let stopping = Instant::now();
    app.begin_shutdown();
    while events.next_block(WAIT).await.is_some() {}
    assert!(events.ended, "the stream did not end");
    app.stop().await;
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "{:?}",
        stopping.elapsed()
    );
}

#[tokio::test]
async fn with_state_store_none_a_stream_opens_and_carries_no_command_events() {
    let app = spawn_app(&[("STATE_STORE", "none")]).await;
    let mut events = stream(&app, "", OPS_TOKEN).await;
    message(&app, OPS_TOKEN, "clock-1").await;
    match events.next_block(Duration::from_millis(300)).await {
        None | Some(Block::Comment(_)) => {}
        Some(other) => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn a_device_that_comes_and_goes_is_a_device_event_each_time_as_get_devices_shows_it() {
    let broker = common::mosquitto::Mosquitto::start_plain();
    let url = broker.url();
    let app = common::app::start(
        &common::app::env_with(&[
            ("ENABLED_SENDERS", "mqtt"),
            ("MQTT_BROKER_URL", url.as_str()),
            ("ALLOW_INSECURE_MQTT", "true"),
        ]),
        None,
    )
    .await
    .unwrap();
    common::eventually(WAIT, "the server's subscriptions", || async {
        (app.get("/ready", Some(OPS_TOKEN)).await.status() == 200).then_some(())
    })
    .await;
    let mut events = stream(&app, "?types=device", CLOCKS_TOKEN).await;
    let status = "clocks/commands/clock-7/status";
    let will = common::device::Will {
        topic: status,
        payload: b"offline",
        retain: true,
    };
    let mut device = common::device::Device::connect(broker.port, "clock-7", Some(will)).await;
    // Outside the credential's scopes: never shown to it.
    device
        .publish("clocks/commands/lamp-7/status", b"online", true)
        .await;
    device.publish(status, b"online", true).await;
    let (event, online) = events.next_event(WAIT).await.expect("an online event");
    assert_eq!(event, "device");
    assert_eq!(online["deviceId"], "clock-7");
    assert_eq!(online["presence"], "online");
    let (_, now) = app
        .call(reqwest::Method::GET, "/devices/clock-7", &json!(null))
        .await;
    assert_eq!(online, now);
    // The same again changes nothing: no event.
    device.publish(status, b"online", true).await;
    device.lose_power();
    let (_, offline) = events.next_event(WAIT).await.expect("an offline event");
    assert_eq!(offline["deviceId"], "clock-7");
    assert_eq!(offline["presence"], "offline");
}

#[tokio::test]
async fn a_schedule_created_changed_and_deleted_is_a_schedule_event_each_time() {
    let app = spawn_app(&[]).await;
    let mut events = stream(&app, "?types=schedule&deviceId=clock-1", OPS_TOKEN).await;
    let (status, created) = app
        .call(
            reqwest::Method::POST,
            "/schedules",
            &json!({"deviceId": "clock-1", "time": "06:30", "timeZone": "UTC", "label": "up"}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["scheduleId"].as_str().unwrap().to_owned();
    let (event, data) = events.next_event(WAIT).await.expect("a creation event");
    assert_eq!(event, "schedule");
    let mut expected = created.clone();
    expected["deleted"] = json!(false);
    assert_eq!(data, expected);
    let (status, paused) = app
        .call(
            reqwest::Method::PATCH,
            &format!("/schedules/{id}"),
            &json!({"enabled": false}),
        )
        .await;
    assert_eq!(status, 200, "{paused}");
    let (_, data) = events.next_event(WAIT).await.expect("a change event");
    assert_eq!(data["enabled"], false);
    assert_eq!(data["deleted"], false);
    let (status, _) = app
        .call(
            reqwest::Method::DELETE,
            &format!("/schedules/{id}"),
            &json!(null),
        )
        .await;
    assert_eq!(status, 200);
    let (_, data) = events.next_event(WAIT).await.expect("a deletion event");
    assert_eq!(data["scheduleId"], id.as_str());
    assert_eq!(data["deleted"], true);
}

#[tokio::test]
async fn a_command_that_expires_is_an_expired_event_within_5_seconds_and_is_counted() {
    let app = spawn_app(&[("METRICS_ADDR", "127.0.0.1:0")]).await;
    let mut events = stream(&app, "?types=command", OPS_TOKEN).await;
    // Nothing acknowledges it (the transport is a recording fake): it ends expired.
    let (status, body) = app
        .call(
            reqwest::Method::POST,
            "/commands/messages",
            &json!({"deviceId": "clock-1", "message": "hi", "durationSeconds": 5, "ttlSeconds": 1}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let expires_at: chrono::DateTime<chrono::Utc> =
        body["expiresAt"].as_str().unwrap().parse().unwrap();
    let seen = events
        .until(WAIT, "expired", |_, d| d["status"] == "expired")
        .await;
    let noticed = chrono::Utc::now();
    assert!(
        noticed - expires_at <= chrono::TimeDelta::seconds(5),
        "noticed {noticed}, expired {expires_at}"
    );
    let expired = &seen.last().unwrap().1;
    assert_eq!(expired["commandId"], body["commandId"]);
    assert_eq!(expired["completedAt"], body["expiresAt"]);
    let scrape = app
        .client
        .get(format!("http://{}/metrics", app.metrics_addr.unwrap()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        common::metric_value(
            &scrape,
            "clock_server_commands_total{type=\"display_message\",status=\"expired\"}"
        ),
        1,
        "{scrape}"
    );
}

/// Two replicas on one `redis-server`, both subscribed to the events channel (there is no
/// replay: a test starts once both listen).
async fn two_replicas() -> (common::redis::Redis, TestApp, TestApp) {
    let redis = common::redis::Redis::start();
    let store = redis.url();
    let vars = [("STATE_STORE", store.as_str())];
    let (a, b) = (spawn_app(&vars).await, spawn_app(&vars).await);
    common::eventually(WAIT, "two subscribed replicas", || async {
        let clients = redis.bulk(&["CLIENT", "LIST"]);
        (clients.matches(" sub=1 ").count() >= 2).then_some(())
    })
    .await;
    (redis, a, b)
}

#[tokio::test]
async fn with_redis_every_replicas_stream_carries_the_command_events_of_both_exactly_once() {
    let (_redis, a, b) = two_replicas().await;
    let mut on_a = stream(&a, "?types=command", OPS_TOKEN).await;
    let mut on_b = stream(&b, "?types=command", OPS_TOKEN).await;
    // A replica relays only once it has heard (within milliseconds) that another one has
    // a stream open.
    until_relayed(&a, &mut on_b).await;
    until_relayed(&b, &mut on_a).await;
    for events in [&mut on_a, &mut on_b] {
        while events
            .next_block(Duration::from_millis(300))
            .await
            .is_some()
        {}
    }
    let from_a = message(&a, OPS_TOKEN, "clock-1").await;
    let from_b = message(&b, OPS_TOKEN, "clock-2").await;
    for events in [&mut on_a, &mut on_b] {
        let mut seen: Vec<(String, String)> = Vec::new();
        while !(seen.contains(&(from_a.clone(), "sent".into()))
            && seen.contains(&(from_b.clone(), "sent".into())))
        {
            let (_, data) = events
                .next_event(WAIT)
                .await
                .expect("both commands' events");
            seen.push((
                data["commandId"].as_str().unwrap().to_owned(),
                data["status"].as_str().unwrap().to_owned(),
            ));
        }
        // Nothing twice, now or a moment later.
        match events.next_block(Duration::from_millis(500)).await {
            None | Some(Block::Comment(_)) => {}
            Some(other) => panic!("unexpected {other:?} after {seen:?}"),
        }
        let mut sorted = seen.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), seen.len(), "an event came twice: {seen:?}");
        assert_eq!(seen.len(), 4, "{seen:?}");
    }
}

/// Posts on `from` until one of its commands shows on `to` (another replica's stream).
async fn until_relayed(from: &TestApp, to: &mut EventStream) {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let id = message(from, OPS_TOKEN, "clock-9").await;
        let probe = tokio::time::Instant::now() + Duration::from_millis(500);
        loop {
            let left = probe.saturating_duration_since(tokio::time::Instant::now());
            match to.next_event(left).await {
                Some((_, data)) if data["commandId"] == id.as_str() => return,
                Some(_) => {}
                None => break,
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no event of one replica reached the other's stream within {WAIT:?}"
        );
    }
}

#[tokio::test]
async fn with_redis_and_no_stream_anywhere_nothing_is_relayed() {
    let (redis, a, b) = two_replicas().await;
    let channel_messages = || {
        let info = redis.bulk(&["INFO", "commandstats"]);
        info.lines()
            .find_map(|l| l.strip_prefix("cmdstat_publish:calls="))
            .map_or(0, |rest| {
                rest.split(',').next().unwrap().parse::<u64>().unwrap()
            })
    };
    let before = channel_messages();
    for _ in 0..20 {
        message(&a, OPS_TOKEN, "clock-1").await;
        message(&b, OPS_TOKEN, "clock-2").await;
    }
    assert_eq!(
        channel_messages(),
        before,
        "no stream open: nothing published"
    );
    // A stream on b: a's commands reach it (after b said so), and b now says it listens.
    let mut on_b = stream(&b, "?types=command", OPS_TOKEN).await;
    until_relayed(&a, &mut on_b).await;
    assert!(channel_messages() > before);
}

/// A running `clockctl events`: its stdout and stderr lines as they arrive.
struct Clockctl {
    child: std::process::Child,
    stdout: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    stderr: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

fn collect(
    pipe: impl std::io::Read + Send + 'static,
) -> std::sync::Arc<std::sync::Mutex<Vec<String>>> {
    use std::io::BufRead;
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            sink.lock().unwrap().push(line);
        }
    });
    lines
}

impl Clockctl {
    fn start(app: &TestApp, args: &[&str]) -> Self {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_clockctl"))
            .arg("events")
            .args(args)
            .env_clear()
            .env("CLOCK_SERVER_BASE_URL", app.url(""))
            .env("CLOCK_SERVER_TOKEN", OPS_TOKEN)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = collect(child.stdout.take().unwrap());
        let stderr = collect(child.stderr.take().unwrap());
        let ctl = Self {
            child,
            stdout,
            stderr,
        };
        ctl.wait_for(&ctl.stderr, "the following line", |l| {
            l.starts_with("clockctl: following ")
        });
        ctl
    }

    /// Polls `lines` (bounded by WAIT) until one matches; returns it.
    fn wait_for(
        &self,
        lines: &std::sync::Mutex<Vec<String>>,
        what: &str,
        matches: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(line) = lines.lock().unwrap().iter().find(|l| matches(l)) {
                return line.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no {what} within {WAIT:?}; stdout {:?}, stderr {:?}",
                self.stdout.lock().unwrap(),
                self.stderr.lock().unwrap()
            );
            std::thread::park_timeout(Duration::from_millis(20));
        }
    }
}

impl Drop for Clockctl {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn with_broker() -> (common::mosquitto::Mosquitto, TestApp) {
    let broker = common::mosquitto::Mosquitto::start_plain();
    let url = broker.url();
    let app = common::app::start(
        &common::app::env_with(&[
            ("ENABLED_SENDERS", "mqtt"),
            ("MQTT_BROKER_URL", url.as_str()),
            ("ALLOW_INSECURE_MQTT", "true"),
        ]),
        None,
    )
    .await
    .unwrap();
    (broker, app)
}

#[tokio::test(flavor = "multi_thread")]
async fn clockctl_events_prints_a_line_per_command_event_of_its_device_as_it_arrives() {
    let (_broker, app) = with_broker().await;
    let ctl = Clockctl::start(&app, &["--device", "clock-1", "--types", "command"]);
    message(&app, OPS_TOKEN, "clock-2").await;
    let id = message(&app, OPS_TOKEN, "clock-1").await;
    let sent = format!("command {id} clock-1 display_message sent");
    let stdout = ctl.stdout.clone();
    tokio::task::spawn_blocking(move || {
        ctl.wait_for(&stdout, "sent line", |l| l == sent);
        let lines = stdout.lock().unwrap().clone();
        // Only clock-1's command: the filter went to the server.
        assert!(lines.iter().all(|l| l.contains(&id)), "{lines:?}");
        assert!(
            lines.iter().all(|l| !l.starts_with(':')),
            "keep-alives are not printed: {lines:?}"
        );
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn clockctl_events_prints_a_hostile_label_escaped_and_json_escaped_too() {
    let (_broker, app) = with_broker().await;
    let plain = Clockctl::start(&app, &["--types", "schedule"]);
    let json = Clockctl::start(&app, &["--types=schedule", "--json"]);
    let (status, created) = app
        .call(
            reqwest::Method::POST,
            "/schedules",
            &json!({"deviceId": "clock-1", "time": "06:30", "timeZone": "UTC",
                    "label": "deliver\u{202e}\u{1b}[2J\u{7}"}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["scheduleId"].as_str().unwrap().to_owned();
    tokio::task::spawn_blocking(move || {
        let line = plain.wait_for(&plain.stdout, "schedule line", |l| l.contains(&id));
        assert!(
            line.starts_with(&format!("schedule {id} clock-1 enabled ")),
            "{line}"
        );
        assert!(
            line.contains(r#"label="deliver\u{202e}\u{1b}[2J\u{7}""#),
            "{line}"
        );
        let line = json.wait_for(&json.stdout, "schedule JSON", |l| l.contains(&id));
        assert!(
            !line.chars().any(|c| c.is_control() || c == '\u{202e}'),
            "{line:?}"
        );
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["event"], "schedule");
        assert_eq!(value["data"]["label"], "deliver\u{202e}\u{1b}[2J\u{7}");
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn clockctl_events_with_a_wrong_token_exits_1_with_status_401() {
    let app = spawn_app(&[]).await;
    let base = app.url("");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_clockctl"))
            .args(["events", "--retries", "0"])
            .env_clear()
            .env("CLOCK_SERVER_BASE_URL", base)
            .env("CLOCK_SERVER_TOKEN", "wrong-token")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("status=401"), "{stderr}");
    assert!(out.stdout.is_empty());
}
