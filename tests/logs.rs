//! Log output of the real binary: `LOG_FORMAT=json` gives one JSON object per line from
//! start-up to shutdown (auth failures, throttling and failed dispatches included) with the
//! audit fields at the top level; text is the default; `LOG_LEVEL`/`RUST_LOG` filter.
//! Secrets never appear. (The accepted-dispatch audit record is checked field by field in
//! `server_process.rs`.)
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::app::{JsonBody, client};
use common::mosquitto::Mosquitto;
use common::process::ServerProcess;
use serde_json::{Map, Value, json};

const GOOD: &str = "logs-good-token-0123456789";
const BAD: &str = "logs-bad-token-9876543210";
const MQTT_PASSWORD: &str = "logs-mqtt-pass-secret";

async fn start(broker: &Mosquitto, extra: &[(&str, &str)]) -> ServerProcess {
    let credentials = format!("ops|{GOOD}|*");
    let url = broker.url();
    let mut vars = vec![
        ("REQUIRE_TLS", "false"),
        ("API_AUTH_CREDENTIALS", credentials.as_str()),
        ("ENABLED_SENDERS", "mqtt"),
        ("MQTT_BROKER_URL", url.as_str()),
        ("ALLOW_INSECURE_MQTT", "true"),
        ("MQTT_PASSWORD", MQTT_PASSWORD),
        ("AUTH_FAIL_LIMIT_PER_MIN", "2"),
    ];
    vars.extend_from_slice(extra);
    let server = ServerProcess::start(&vars).await;
    let c = client(None);
    common::eventually(Duration::from_secs(15), "MQTT to connect", || {
        let c = c.clone();
        let url = server.url("/ready");
        async move {
            let res = c.get(url).bearer_auth(GOOD).send().await.ok()?;
            (res.status() == 200).then_some(())
        }
    })
    .await;
    server
}

async fn post_message(server: &ServerProcess, token: &str, request_id: &str) -> u16 {
    client(None)
        .post(server.url("/commands/messages"))
        .bearer_auth(token)
        .header("x-request-id", request_id)
        .json_body(&json!({"deviceId": "clock-7", "message": "hi", "durationSeconds": 3}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Every line as a JSON object; panics on the first line that is not one.
fn json_lines(logs: &str) -> Vec<Map<String, Value>> {
    logs.lines()
        .map(|l| match serde_json::from_str::<Value>(l) {
            Ok(Value::Object(o)) => o,
            Ok(other) => panic!("not a JSON object: {other}"),
            Err(e) => panic!("not JSON ({e}): {l}"),
        })
        .collect()
}

fn assert_no_secrets(logs: &str) {
    for secret in [GOOD, BAD, MQTT_PASSWORD] {
        assert!(!logs.contains(secret), "{secret} leaked into the logs");
    }
}

#[tokio::test]
async fn json_logs_are_one_object_per_line_from_start_up_to_shutdown_with_flat_audit_fields() {
    let mut broker = Mosquitto::start_plain();
    let server = start(&broker, &[("LOG_FORMAT", "json"), ("LOG_LEVEL", "debug")]).await;
    // An auth failure, then the same caller throttled.
    for _ in 0..2 {
        assert_eq!(post_message(&server, BAD, "logs-bad").await, 401);
    }
    assert_eq!(post_message(&server, BAD, "logs-bad").await, 429);
    assert_eq!(post_message(&server, GOOD, "logs-ok").await, 202);
    // The broker goes away: the next dispatch fails fast and is audited as failed.
    broker.stop();
    common::eventually(
        Duration::from_secs(15),
        "a dispatch to fail while the broker is down",
        || async { (post_message(&server, GOOD, "logs-failed").await == 502).then_some(()) },
    )
    .await;
    server.signal("TERM");
    let (code, logs) = server.wait(Duration::from_secs(20));
    assert_eq!(code, Some(0), "{logs}");

    let lines = json_lines(&logs);
    for line in &lines {
        for key in ["timestamp", "level", "target", "message"] {
            assert!(line.contains_key(key), "{key} missing in {line:?}");
        }
        assert!(
            !line.contains_key("fields"),
            "fields must be flattened to the top level: {line:?}"
        );
    }
    let has = |message: &str| lines.iter().any(|l| l["message"] == message);
    assert!(has("listening"), "start-up line missing:\n{logs}");
    assert!(
        has("authentication failed"),
        "auth failure missing:\n{logs}"
    );
    assert!(
        has("auth-failure limit reached; request refused"),
        "throttle line missing:\n{logs}"
    );
    assert!(has("stopped"), "shutdown line missing:\n{logs}");

    let failed = lines
        .iter()
        .find(|l| l["target"] == "audit" && l["result"] == "failed")
        .unwrap_or_else(|| panic!("no failed audit record in:\n{logs}"));
    assert_eq!(failed["level"], "WARN");
    assert_eq!(failed["request_id"], "logs-failed");
    assert_eq!(failed["principal"], "ops");
    assert_eq!(failed["client_ip"], "127.0.0.1");
    assert_eq!(failed["method"], "POST");
    assert_eq!(failed["path"], "/commands/messages");
    assert_eq!(failed["device_id"], "clock-7");
    assert_eq!(failed["command_type"], "display_message");
    assert_eq!(failed["failed_transports"], "mqtt");
    assert!(failed["command_id"].as_str().is_some_and(|s| s.len() == 36));
    let accepted = lines
        .iter()
        .find(|l| l["target"] == "audit" && l["result"] == "accepted")
        .unwrap_or_else(|| panic!("no accepted audit record in:\n{logs}"));
    assert_eq!(accepted["request_id"], "logs-ok");
    // Refused callers never reach dispatch, so they have no audit record.
    assert!(
        !lines
            .iter()
            .any(|l| l["target"] == "audit" && l["request_id"] == "logs-bad")
    );
    assert_no_secrets(&logs);
}

#[tokio::test]
async fn text_is_the_default_format_with_the_audit_fields_as_key_values() {
    let broker = Mosquitto::start_plain();
    let server = start(&broker, &[]).await;
    assert_eq!(post_message(&server, BAD, "text-bad").await, 401);
    assert_eq!(post_message(&server, GOOD, "text-ok").await, 202);
    server.signal("TERM");
    let (code, logs) = server.wait(Duration::from_secs(20));
    assert_eq!(code, Some(0), "{logs}");

    assert!(
        logs.lines()
            .all(|l| serde_json::from_str::<Value>(l).is_err()),
        "text lines expected:\n{logs}"
    );
    let audit = logs
        .lines()
        .find(|l| l.contains(" audit: ") && l.contains("text-ok"))
        .unwrap_or_else(|| panic!("no audit line in:\n{logs}"));
    for field in [
        "principal=",
        "client_ip=127.0.0.1",
        "device_id=",
        "command_type=",
        "result=",
        "request_id=",
        "command_id=",
    ] {
        assert!(audit.contains(field), "{field} missing in {audit}");
    }
    assert!(
        !logs.contains('\u{1b}'),
        "no ANSI colour codes in logs:\n{logs}"
    );
    assert_no_secrets(&logs);
}

#[tokio::test]
async fn log_level_filters_the_output_and_rust_log_is_the_fallback() {
    let broker = Mosquitto::start_plain();
    for vars in [
        &[("LOG_LEVEL", "warn")][..],
        &[("RUST_LOG", "warn")][..],
        &[("LOG_LEVEL", "warn"), ("RUST_LOG", "debug")][..],
    ] {
        let mut all = vec![("LOG_FORMAT", "json")];
        all.extend_from_slice(vars);
        let server = start(&broker, &all).await;
        assert_eq!(post_message(&server, BAD, "level-bad").await, 401);
        assert_eq!(post_message(&server, GOOD, "level-ok").await, 202);
        server.signal("TERM");
        let (code, logs) = server.wait(Duration::from_secs(20));
        assert_eq!(code, Some(0), "{vars:?}: {logs}");
        for line in json_lines(&logs) {
            assert!(
                matches!(line["level"].as_str(), Some("WARN" | "ERROR")),
                "{vars:?} let through {line:?}"
            );
        }
    }
}

/// Log lines are written by a background thread: the last one before the process exits
/// (here the start-up failure) must still reach stderr.
#[test]
fn the_line_logged_just_before_a_failed_start_reaches_stderr() {
    let mut broker = Mosquitto::start_plain();
    let url = broker.url();
    broker.stop(); // nothing listens on its port any more
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_clock-server"))
        .env_clear()
        .env("HTTP_ADDR", "127.0.0.1:0")
        .env("REQUIRE_TLS", "false")
        .env("API_AUTH_CREDENTIALS", format!("ops|{GOOD}|*"))
        .env("ENABLED_SENDERS", "mqtt")
        .env("MQTT_BROKER_URL", &url)
        .env("ALLOW_INSECURE_MQTT", "true")
        .env("MQTT_CONNECT_RETRY", "false")
        .env("LOG_FORMAT", "json")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still running after 30 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    let last = json_lines(&stderr).pop().unwrap_or_default();
    assert_eq!(last.get("level"), Some(&json!("ERROR")), "{stderr}");
    let message = last["message"].as_str().unwrap_or_default();
    assert!(message.starts_with("cannot start"), "{stderr}");
}

/// A flood of refused requests with long paths and a new wrong token each (SPEC 10): each
/// kind is logged at most once a second with a count, paths at most 128 characters, while
/// every refusal is still counted in metrics and audit records still appear.
#[tokio::test]
async fn a_flood_of_refused_requests_writes_a_few_short_lines_not_one_per_request() {
    let broker = Mosquitto::start_plain();
    let metrics_port = common::free_port().to_string();
    let metrics_addr = format!("127.0.0.1:{metrics_port}");
    let server = start(
        &broker,
        &[
            ("LOG_FORMAT", "json"),
            ("AUTH_FAIL_LIMIT_PER_MIN", "10000"),
            ("METRICS_ADDR", metrics_addr.as_str()),
        ],
    )
    .await;
    let c = client(None);
    let long = "a".repeat(8000);
    let started = std::time::Instant::now();
    const FLOOD: usize = 300;
    for i in 0..FLOOD {
        let res = c
            .get(server.url(&format!("/{long}{i}")))
            .bearer_auth(format!("{BAD}-{i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401);
        let res = c
            .get(server.url(&format!("/{long}{i}")))
            .bearer_auth(GOOD)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 404);
    }
    let flood_secs = started.elapsed().as_secs();
    assert_eq!(post_message(&server, GOOD, "flood-ok").await, 202);
    let metrics = c
        .get(format!("http://{metrics_addr}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    server.signal("TERM");
    let (code, logs) = server.wait(Duration::from_secs(20));
    assert_eq!(code, Some(0), "{logs}");

    let lines = json_lines(&logs);
    let refusal_lines = |message: &str| {
        lines
            .iter()
            .filter(|l| l["message"] == message)
            .collect::<Vec<_>>()
    };
    for message in ["authentication failed", "unknown path"] {
        let found = refusal_lines(message);
        assert!(!found.is_empty(), "no {message:?} line:\n{logs}");
        assert!(
            found.len() as u64 <= flood_secs + 2,
            "{} {message:?} lines in {flood_secs} s",
            found.len()
        );
        for line in &found {
            assert!(line["count"].as_u64().is_some_and(|n| n >= 1), "{line:?}");
            let path = line["path"].as_str().unwrap();
            assert!(path.chars().count() <= 129, "{path}");
        }
    }
    assert!(
        logs.len() < 64 * 1024,
        "{} bytes of log for {FLOOD} refused requests",
        logs.len()
    );
    assert!(
        lines
            .iter()
            .any(|l| l["target"] == "audit" && l["request_id"] == "flood-ok"),
        "the audit record is missing:\n{logs}"
    );
    for series in [
        format!("clock_server_refused_requests_total{{reason=\"unauthorized\"}} {FLOOD}"),
        format!("clock_server_refused_requests_total{{reason=\"not_found\"}} {FLOOD}"),
    ] {
        assert!(metrics.contains(&series), "{series} missing:\n{metrics}");
    }
    assert_no_secrets(&logs);
}
