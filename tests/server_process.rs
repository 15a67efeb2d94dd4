//! The real binary against a real Mosquitto: graceful shutdown on SIGTERM (ending the MQTT
//! session with DISCONNECT), JSON logs with the audit fields, and no token in any log line.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::app::{JsonBody, client};
use common::mosquitto::Mosquitto;
use common::process::{ServerProcess, signal};
use serde_json::{Value, json};

const GOOD: &str = "good-token-0123456789";
const BAD: &str = "bad-token-9876543210";

fn mqtt_env(broker: &Mosquitto) -> Vec<(&'static str, String)> {
    vec![
        ("REQUIRE_TLS", "false".into()),
        ("API_AUTH_CREDENTIALS", format!("ops|{GOOD}|*")),
        ("ENABLED_SENDERS", "mqtt".into()),
        ("MQTT_BROKER_URL", broker.url()),
        ("ALLOW_INSECURE_MQTT", "true".into()),
        ("MQTT_PASSWORD", "mqtt-pass-secret".into()),
        ("HTTP_SHUTDOWN_TIMEOUT_MS", "10000".into()),
    ]
}

async fn start(broker: &Mosquitto, extra: &[(&'static str, &str)]) -> ServerProcess {
    let mut vars = mqtt_env(broker);
    for (k, v) in extra {
        vars.push((k, (*v).to_owned()));
    }
    let refs: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let server = ServerProcess::start(&refs).await;
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

fn message(device: &str) -> Value {
    json!({"deviceId": device, "message": "hello", "durationSeconds": 5})
}

#[tokio::test]
async fn sigterm_lets_the_request_in_flight_finish_with_202_while_new_connections_are_refused() {
    let broker = Mosquitto::start_plain();
    let server = start(
        &broker,
        &[("LOG_LEVEL", "info,clock_server::dispatch=debug")],
    )
    .await;
    // Freeze the broker: the publish is written but its PUBACK cannot come back yet.
    signal(broker.pid().unwrap(), "STOP");
    let c = client(None);
    let url = server.url("/commands/messages");
    let in_flight = tokio::spawn({
        let c = c.clone();
        async move {
            c.post(url)
                .bearer_auth(GOOD)
                .json_body(&message("clock-1"))
                .send()
                .await
        }
    });
    // Wait until the server is dispatching (it logs that at debug level).
    common::eventually(
        Duration::from_secs(5),
        "the server to start dispatching",
        || {
            let dispatching = server.logs().contains("dispatching command");
            async move { dispatching.then_some(()) }
        },
    )
    .await;
    server.signal("TERM");
    common::eventually(Duration::from_secs(5), "the listener to close", || {
        let refused = std::net::TcpStream::connect(("127.0.0.1", server.port)).is_err();
        async move { refused.then_some(()) }
    })
    .await;
    assert!(
        !in_flight.is_finished(),
        "the in-flight request must still be waiting for its PUBACK"
    );
    signal(broker.pid().unwrap(), "CONT");
    let res = in_flight.await.unwrap().unwrap();
    assert_eq!(res.status(), 202);
    let (code, logs) = server.wait(Duration::from_secs(15));
    assert_eq!(code, Some(0), "{logs}");
}

#[tokio::test]
async fn json_logs_carry_the_audit_fields_and_never_a_token_or_password() {
    let broker = Mosquitto::start_plain();
    let server = start(&broker, &[("LOG_FORMAT", "json")]).await;
    let c = client(None);
    let res = c
        .post(server.url("/commands/messages"))
        .bearer_auth(BAD)
        .header("x-request-id", "audit-req-1")
        .json_body(&message("clock-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let res = c
        .post(server.url("/commands/messages"))
        .bearer_auth(GOOD)
        .header("x-request-id", "audit-req-2")
        .json_body(&message("clock-9"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    let body: Value = serde_json::from_str(&res.text().await.unwrap()).unwrap();
    let command_id = body["commandId"].as_str().unwrap().to_owned();
    server.signal("TERM");
    let (code, logs) = server.wait(Duration::from_secs(15));
    assert_eq!(code, Some(0));

    let lines: Vec<Value> = logs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let audit = lines
        .iter()
        .find(|l| l["target"] == "audit" && l["request_id"] == "audit-req-2")
        .unwrap_or_else(|| panic!("no audit record in: {logs}"));
    assert_eq!(audit["principal"], "ops");
    assert_eq!(audit["client_ip"], "127.0.0.1");
    assert_eq!(audit["method"], "POST");
    assert_eq!(audit["path"], "/commands/messages");
    assert_eq!(audit["device_id"], "clock-9");
    assert_eq!(audit["command_type"], "display_message");
    assert_eq!(audit["result"], "accepted");
    assert_eq!(audit["command_id"], command_id.as_str());
    for secret in [GOOD, BAD, "mqtt-pass-secret"] {
        assert!(!logs.contains(secret), "{secret} leaked into logs");
    }
}

#[test]
fn a_config_error_never_prints_tokens() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_clock-server"))
        .env_clear()
        .env("API_AUTH_CREDENTIALS", format!("ops|{GOOD}|*;x|{BAD}"))
        .env("API_AUTH_TOKEN", "legacy-secret-token")
        .env("MQTT_BROKER_URL", "mqtt://user:mqtt-pass-secret@broker")
        .env("MQTT_PASSWORD", "mqtt-pass-secret")
        .env("CLOCK_REST_TOKEN", "rest-secret-token")
        .env("CLOCK_REST_BASE_URL", "http://rest")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("API_AUTH_CREDENTIALS"), "{stderr}");
    for secret in [
        GOOD,
        BAD,
        "legacy-secret-token",
        "mqtt-pass-secret",
        "rest-secret-token",
    ] {
        assert!(!stderr.contains(secret), "{secret} leaked: {stderr}");
    }
}

/// On SIGTERM the server ends its MQTT session with a DISCONNECT packet. Mosquitto logs
/// "Client <id> disconnected." for that, and "closed its connection" when a socket just
/// drops (which would also fire a will, were one set).
#[tokio::test]
async fn sigterm_ends_the_mqtt_session_with_a_disconnect_packet() {
    let logdir = tempfile::tempdir().unwrap();
    {
        // Mosquitto drops root privileges before it opens its log file.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(logdir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    let log = logdir.path().join("broker.log");
    let broker = Mosquitto::start_with(&format!(
        "allow_anonymous true\nlog_dest file {}\nlog_type notice\n",
        log.display()
    ));
    let server = start(&broker, &[("MQTT_CLIENT_ID", "gw-sigterm")]).await;
    server.signal("TERM");
    let (code, logs) = server.wait(Duration::from_secs(20));
    assert_eq!(code, Some(0), "{logs}");
    let broker_log = common::eventually(Duration::from_secs(10), "the broker's log line", || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let seen = text.contains("gw-sigterm disconnected") || text.contains("gw-sigterm closed");
        async move { seen.then_some(text) }
    })
    .await;
    assert!(
        broker_log.contains("Client gw-sigterm disconnected."),
        "{broker_log}"
    );
}

#[test]
fn a_file_store_in_a_missing_directory_stops_start_up_with_exit_2_naming_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-dir");
    let store = format!("file:{}", missing.join("state.db").display());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_clock-server"))
        .env_clear()
        .env("REQUIRE_TLS", "false")
        .env("HTTP_ADDR", "127.0.0.1:0")
        .env("API_AUTH_CREDENTIALS", "ops|tok|*")
        .env("ENABLED_SENDERS", "rest")
        .env("CLOCK_REST_BASE_URL", "http://127.0.0.1:9")
        .env("ALLOW_INSECURE_DOWNSTREAM_HTTP", "true")
        .env("STATE_STORE", &store)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("does not exist"), "{stderr}");
    assert!(stderr.contains(&format!("STATE_STORE={store}")), "{stderr}");
    assert!(
        stderr.contains(&format!("directory {} does not exist", missing.display())),
        "{stderr}"
    );
    assert_eq!(stderr.matches(&*store).count(), 1, "said once: {stderr}");
}
