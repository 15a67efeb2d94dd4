//! Schedules firing (SPEC 12.3) with the real binary, a real Mosquitto and a real
//! `redis-server`: an occurrence a few seconds ahead (`HH:MM:SS` in UTC) becomes an
//! ordinary tracked alarm command, published never before its time; with two replicas on
//! one Redis each occurrence is published exactly once; with `file:` a restart loses
//! nothing and fires nothing twice.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use chrono::{DateTime, Utc};
use common::app::{JsonBody, client};
use common::eventually;
use common::mosquitto::Mosquitto;
use common::process::ServerProcess;
use common::redis::Redis;
use common::subscriber::Subscriber;
use serde_json::{Value, json};

const TOKEN: &str = "schedule-ops-token-0123456789";
const WAIT: Duration = Duration::from_secs(20);

/// A server process delivering over MQTT to `broker`, tracking in `store`.
async fn server(broker: &Mosquitto, store: &str, metrics_port: u16) -> ServerProcess {
    let credentials = format!("ops|{TOKEN}|*");
    let url = broker.url();
    let metrics = format!("127.0.0.1:{metrics_port}");
    let server = ServerProcess::start(&[
        ("REQUIRE_TLS", "false"),
        ("API_AUTH_CREDENTIALS", credentials.as_str()),
        ("ENABLED_SENDERS", "mqtt"),
        ("MQTT_BROKER_URL", url.as_str()),
        ("ALLOW_INSECURE_MQTT", "true"),
        ("READINESS_REQUIRE_AUTH", "false"),
        ("METRICS_ADDR", metrics.as_str()),
        ("STATE_STORE", store),
    ])
    .await;
    let http = client(None);
    eventually(WAIT, "/ready", || async {
        let res = http.get(server.url("/ready")).send().await.ok()?;
        (res.status() == 200).then_some(())
    })
    .await;
    server
}

async fn call(
    server: &ServerProcess,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = client(None)
        .request(method, server.url(path))
        .bearer_auth(TOKEN);
    if let Some(body) = body {
        req = req.json_body(&body);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let bytes = res.bytes().await.unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// Whole seconds `secs` from now: the next occurrence of a daily schedule at its UTC time.
fn ahead(secs: i64) -> DateTime<Utc> {
    let t = Utc::now() + chrono::Duration::seconds(secs);
    DateTime::from_timestamp(t.timestamp(), 0).unwrap()
}

/// A daily schedule at `at`'s `HH:MM:SS` in UTC: its id.
async fn daily_at(server: &ServerProcess, device: &str, at: DateTime<Utc>, label: &str) -> String {
    let body = json!({"deviceId": device, "time": at.format("%H:%M:%S").to_string(),
        "timeZone": "UTC", "label": label});
    let (status, schedule) = call(server, reqwest::Method::POST, "/schedules", Some(body)).await;
    assert_eq!(status, 201, "{schedule}");
    assert_eq!(
        schedule["nextFireAt"],
        at.format("%Y-%m-%dT%H:%M:%S.000Z").to_string()
    );
    schedule["scheduleId"].as_str().unwrap().to_owned()
}

/// The alarms published to `device` (generic profile), in order.
fn alarms(sub: &Subscriber, device: &str) -> Vec<common::subscriber::Received> {
    sub.on(&format!("clocks/commands/{device}/set_alarm"))
}

async fn metric(port: u16, series: &str) -> u64 {
    let text = client(None)
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    common::metric_value(&text, series)
}

#[tokio::test]
async fn an_occurrence_a_few_seconds_ahead_is_a_tracked_alarm_published_once_never_early() {
    let broker = Mosquitto::start_plain();
    let sub = Subscriber::plain(broker.port).await;
    let metrics_port = common::free_port();
    let server = server(&broker, "memory", metrics_port).await;
    let at = ahead(3);
    let id = daily_at(&server, "clock-7", at, "wake up").await;
    eventually(WAIT, "the occurrence to be published", || async {
        (!alarms(&sub, "clock-7").is_empty()).then_some(())
    })
    .await;
    let got = alarms(&sub, "clock-7");
    let alarm = &got[0];
    assert_eq!(alarm.payload["type"], "set_alarm");
    assert_eq!(
        alarm.payload["alarmTime"],
        at.format("%Y-%m-%dT%H:%M:%SZ").to_string()
    );
    assert_eq!(alarm.payload["label"], "wake up");
    assert!(alarm.wall >= at, "published at {} before {at}", alarm.wall);
    assert!(
        alarm.wall - at < chrono::Duration::seconds(2),
        "late: {}",
        alarm.wall
    );
    // The schedule names the command; the command's record names the schedule.
    let (_, schedule) = call(
        &server,
        reqwest::Method::GET,
        &format!("/schedules/{id}"),
        None,
    )
    .await;
    let command_id = schedule["lastCommandId"].as_str().unwrap().to_owned();
    assert_eq!(alarm.payload["commandId"], command_id.as_str());
    assert_eq!(
        schedule["lastFiredAt"],
        at.format("%Y-%m-%dT%H:%M:%S.000Z").to_string()
    );
    assert_eq!(
        schedule["nextFireAt"],
        (at + chrono::Duration::days(1))
            .format("%Y-%m-%dT%H:%M:%S.000Z")
            .to_string()
    );
    let (status, record) = call(
        &server,
        reqwest::Method::GET,
        &format!("/commands/{command_id}"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        (&record["scheduleId"], &record["type"], &record["principal"]),
        (&json!(id), &json!("set_alarm"), &json!("ops"))
    );
    // Several more ticks: nothing is published again.
    common::observe_for(Duration::from_millis(1500)).await;
    assert_eq!(alarms(&sub, "clock-7").len(), 1);
    assert_eq!(
        metric(
            metrics_port,
            "clock_server_schedule_occurrences_total{result=\"fired\"}"
        )
        .await,
        1
    );
    eventually(WAIT, "the gauge to count the schedule", || async {
        (metric(metrics_port, "clock_server_schedules").await == 1).then_some(())
    })
    .await;
    // Disabled: the next occurrence would not fire; the gauge says so.
    let (status, _) = call(
        &server,
        reqwest::Method::PATCH,
        &format!("/schedules/{id}"),
        Some(json!({"enabled": false})),
    )
    .await;
    assert_eq!(status, 200);
    eventually(WAIT, "the gauge to drop", || async {
        (metric(metrics_port, "clock_server_schedules").await == 0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn two_replicas_on_one_redis_publish_each_occurrence_exactly_once() {
    let (broker, redis) = (Mosquitto::start_plain(), Redis::start());
    let sub = Subscriber::plain(broker.port).await;
    let a = server(&broker, &redis.url(), common::free_port()).await;
    let b = server(&broker, &redis.url(), common::free_port()).await;
    let at = ahead(4);
    for i in 0..10 {
        let replica = if i % 2 == 0 { &a } else { &b };
        daily_at(replica, &format!("clock-{i}"), at, &format!("alarm-{i}")).await;
    }
    eventually(WAIT, "all ten occurrences published", || async {
        let n: usize = (0..10)
            .map(|i| alarms(&sub, &format!("clock-{i}")).len())
            .sum();
        (n >= 10).then_some(())
    })
    .await;
    // Both replicas keep claiming for a while: still exactly one each.
    common::observe_for(Duration::from_millis(1500)).await;
    for i in 0..10 {
        let got = alarms(&sub, &format!("clock-{i}"));
        assert_eq!(got.len(), 1, "clock-{i}: {got:?}");
        assert!(got[0].wall >= at, "clock-{i} early: {}", got[0].wall);
    }
}

#[tokio::test]
async fn with_a_file_store_a_restart_loses_no_occurrence_and_fires_none_twice() {
    let broker = Mosquitto::start_plain();
    let sub = Subscriber::plain(broker.port).await;
    let dir = tempfile::tempdir().unwrap();
    let store = format!("file:{}", dir.path().join("state.db").display());
    // One occurrence fires before the restart, one is due while the server restarts.
    let first = server(&broker, &store, common::free_port()).await;
    let early = ahead(2);
    let late = ahead(6);
    daily_at(&first, "clock-early", early, "early").await;
    daily_at(&first, "clock-late", late, "late").await;
    eventually(WAIT, "the early occurrence", || async {
        (!alarms(&sub, "clock-early").is_empty()).then_some(())
    })
    .await;
    first.signal("TERM");
    let (code, logs) = first.wait(WAIT);
    assert_eq!(code, Some(0), "{logs}");
    assert!(alarms(&sub, "clock-late").is_empty());
    let second = server(&broker, &store, common::free_port()).await;
    eventually(WAIT, "the late occurrence, after the restart", || async {
        (!alarms(&sub, "clock-late").is_empty()).then_some(())
    })
    .await;
    common::observe_for(Duration::from_millis(1500)).await;
    assert_eq!(
        alarms(&sub, "clock-early").len(),
        1,
        "fired again after the restart"
    );
    let late_alarms = alarms(&sub, "clock-late");
    assert_eq!(late_alarms.len(), 1);
    assert!(late_alarms[0].wall >= late);
    drop(second);
}
