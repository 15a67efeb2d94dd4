//! Several replicas on one Redis store (SPEC 9) and the Redis outage of SPEC 7.1, with the
//! real binary: each replica is a `clock-server` process (own HTTP and metrics ports, own
//! MQTT client id), sharing one `redis-server` and one Mosquitto started by the test.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::app::{JsonBody, client};
use common::certs::TestPki;
use common::eventually;
use common::mosquitto::Mosquitto;
use common::process::ServerProcess;
use common::redis::Redis;
use mqtt5::types::{ConnectOptions, PublishOptions, SubscribeOptions};
use mqtt5::{MqttClient, QoS};
use serde_json::{Value, json};

const TOKEN: &str = "replica-ops-token-0123456789";
const WAIT: Duration = Duration::from_secs(20);

/// One server process and the port of its `/metrics`.
struct Replica {
    server: ServerProcess,
    metrics_port: u16,
    http: reqwest::Client,
}

impl Replica {
    /// A replica on `store` (a `STATE_STORE` value) and `broker`; `extra` on top.
    /// Does not wait for `/ready` (see [`Replica::ready`]).
    async fn start(broker: &Mosquitto, store: &str, extra: &[(&str, &str)]) -> Self {
        let metrics_port = common::free_port();
        let metrics = format!("127.0.0.1:{metrics_port}");
        let credentials = format!("ops|{TOKEN}|*");
        let url = broker.url();
        let mut vars = vec![
            ("REQUIRE_TLS", "false"),
            ("API_AUTH_CREDENTIALS", credentials.as_str()),
            ("ENABLED_SENDERS", "mqtt"),
            ("MQTT_BROKER_URL", url.as_str()),
            ("ALLOW_INSECURE_MQTT", "true"),
            ("READINESS_REQUIRE_AUTH", "false"),
            ("METRICS_ADDR", metrics.as_str()),
            ("STATE_STORE", store),
        ];
        vars.extend_from_slice(extra);
        let server = ServerProcess::start(&vars).await;
        Self {
            server,
            metrics_port,
            http: client(None),
        }
    }

    /// Like [`Replica::start`], then waits until `/ready` says ready.
    async fn ready(broker: &Mosquitto, store: &str, extra: &[(&str, &str)]) -> Self {
        let replica = Self::start(broker, store, extra).await;
        replica.wait_ready(true).await;
        replica
    }

    async fn ready_status(&self) -> (u16, String) {
        let res = self
            .http
            .get(self.server.url("/ready"))
            .send()
            .await
            .unwrap();
        (res.status().as_u16(), res.text().await.unwrap())
    }

    async fn wait_ready(&self, ready: bool) {
        let want = if ready { 200 } else { 503 };
        eventually(WAIT, &format!("/ready to answer {want}"), || async {
            (self.ready_status().await.0 == want).then_some(())
        })
        .await;
    }

    /// `POST /commands/messages` for `device`: status, headers, body bytes.
    async fn post(
        &self,
        device: &str,
        key: Option<&str>,
    ) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
        let mut req = self
            .http
            .post(self.server.url("/commands/messages"))
            .bearer_auth(TOKEN)
            .json_body(&json!({"deviceId": device, "message": "hello", "durationSeconds": 5}));
        if let Some(key) = key {
            req = req.header("idempotency-key", key);
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        (status, headers, res.bytes().await.unwrap().to_vec())
    }

    /// A 202's `commandId`.
    async fn submit(&self, device: &str) -> String {
        let (status, _, body) = self.post(device, None).await;
        assert_eq!(status, 202, "{}", String::from_utf8_lossy(&body));
        command_id(&body)
    }

    /// `GET /commands/{id}`: status and JSON.
    async fn record(&self, id: &str) -> (u16, Value) {
        let res = self
            .http
            .get(self.server.url(&format!("/commands/{id}")))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        (status, res.json_value().await)
    }

    /// The value of one series of `/metrics` (0 when absent).
    async fn metric(&self, series: &str) -> u64 {
        let text = self
            .http
            .get(format!("http://127.0.0.1:{}/metrics", self.metrics_port))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        common::metric_value(&text, series)
    }
}

trait JsonValue {
    async fn json_value(self) -> Value;
}

impl JsonValue for reqwest::Response {
    async fn json_value(self) -> Value {
        serde_json::from_slice(&self.bytes().await.unwrap()).unwrap_or(Value::Null)
    }
}

fn command_id(body: &[u8]) -> String {
    let v: Value = serde_json::from_slice(body).unwrap();
    v["commandId"].as_str().unwrap().to_owned()
}

/// A device side on the broker: counts the commands published to it (by `commandId`) and
/// publishes acknowledgements.
struct Devices {
    client: MqttClient,
    got: Arc<Mutex<Vec<String>>>,
}

impl Devices {
    async fn connect(broker: &Mosquitto) -> Self {
        let client = MqttClient::with_options(ConnectOptions::new(format!(
            "replicas-device-{}",
            uuid::Uuid::now_v7().simple()
        )));
        client.connect(&broker.url()).await.unwrap();
        let got = Arc::new(Mutex::new(Vec::new()));
        let sink = got.clone();
        let options = SubscribeOptions {
            qos: QoS::AtLeastOnce,
            ..SubscribeOptions::default()
        };
        client
            .subscribe_with_options("clocks/commands/+/display_message", options, move |m| {
                let id = serde_json::from_slice::<Value>(&m.payload).unwrap()["commandId"]
                    .as_str()
                    .unwrap()
                    .to_owned();
                sink.lock().unwrap().push(id);
            })
            .await
            .unwrap();
        Self { client, got }
    }

    fn received(&self) -> Vec<String> {
        self.got.lock().unwrap().clone()
    }

    async fn wait_for(&self, ids: &[String]) {
        eventually(WAIT, "the commands to be published", || async {
            let got: HashSet<String> = self.received().into_iter().collect();
            ids.iter().all(|id| got.contains(id)).then_some(())
        })
        .await;
    }

    async fn ack(&self, device: &str, id: &str) {
        let options = PublishOptions {
            qos: QoS::AtLeastOnce,
            ..PublishOptions::default()
        };
        let payload = format!(r#"{{"commandId":"{id}","status":"succeeded"}}"#);
        self.client
            .publish_with_options(
                &format!("clocks/commands/{device}/ack"),
                payload.into_bytes(),
                options,
            )
            .await
            .unwrap();
    }
}

// ---------------------------------------------------------------------------------------
// Shared state across replicas

#[tokio::test]
async fn a_status_written_by_one_replica_is_read_by_another() {
    let (broker, redis) = (Mosquitto::start_plain(), Redis::start());
    let a = Replica::ready(&broker, &redis.url(), &[]).await;
    let b = Replica::ready(&broker, &redis.url(), &[]).await;
    let devices = Devices::connect(&broker).await;

    let id = a.submit("clock-1").await;
    devices.wait_for(std::slice::from_ref(&id)).await;
    let (status, on_b) = b.record(&id).await;
    assert_eq!(status, 200, "{on_b}");
    assert_eq!(on_b["status"], "sent");
    assert_eq!(on_b["deviceId"], "clock-1");
    assert_eq!(a.record(&id).await, (200, on_b.clone()));

    // An acknowledgement applied by whichever replica receives it is seen by both.
    devices.ack("clock-1", &id).await;
    for replica in [&a, &b] {
        eventually(WAIT, "succeeded on every replica", || async {
            (replica.record(&id).await.1["status"] == "succeeded").then_some(())
        })
        .await;
    }
}

#[tokio::test]
async fn an_idempotency_key_used_on_one_replica_is_honoured_by_another() {
    let (broker, redis) = (Mosquitto::start_plain(), Redis::start());
    let a = Replica::ready(&broker, &redis.url(), &[]).await;
    let b = Replica::ready(&broker, &redis.url(), &[]).await;
    let devices = Devices::connect(&broker).await;

    let (status, headers, first) = a.post("clock-2", Some("key-across-replicas")).await;
    assert_eq!(status, 202);
    assert!(headers.get("idempotent-replayed").is_none());
    let id = command_id(&first);
    devices.wait_for(std::slice::from_ref(&id)).await;

    let (status, headers, again) = b.post("clock-2", Some("key-across-replicas")).await;
    assert_eq!(status, 202);
    assert_eq!(again, first, "the replay is byte for byte");
    assert_eq!(headers["idempotent-replayed"], "true");
    // The same key for another request: 422 on either replica.
    let (status, _, _) = b.post("clock-3", Some("key-across-replicas")).await;
    assert_eq!(status, 422);

    // Published once: a fresh command sent afterwards arrives, the replayed one did not
    // arrive a second time.
    let marker = b.submit("clock-2").await;
    devices.wait_for(std::slice::from_ref(&marker)).await;
    let copies = devices.received().iter().filter(|r| **r == id).count();
    assert_eq!(copies, 1);
}

#[tokio::test]
async fn acknowledgements_are_split_by_the_shared_group_and_each_applied_once() {
    let (broker, redis) = (Mosquitto::start_plain(), Redis::start());
    let group = [("MQTT_SHARED_GROUP", "clock-servers")];
    let replicas = [
        Replica::ready(&broker, &redis.url(), &group).await,
        Replica::ready(&broker, &redis.url(), &group).await,
    ];
    let devices = Devices::connect(&broker).await;

    const N: usize = 24;
    let mut ids = Vec::new();
    for i in 0..N {
        ids.push(replicas[i % 2].submit("clock-4").await);
    }
    devices.wait_for(&ids).await;
    for id in &ids {
        devices.ack("clock-4", id).await;
    }
    for id in &ids {
        eventually(WAIT, "every command succeeded", || async {
            (replicas[0].record(id).await.1["status"] == "succeeded").then_some(())
        })
        .await;
    }
    let applied = "clock_server_acks_total{outcome=\"applied\"}";
    let ignored = "clock_server_acks_total{outcome=\"ignored\"}";
    let per_replica = [
        replicas[0].metric(applied).await,
        replicas[1].metric(applied).await,
    ];
    // Each ack reached one replica (none saw it twice, which would count "ignored")...
    assert_eq!(per_replica.iter().sum::<u64>(), N as u64, "{per_replica:?}");
    assert_eq!(
        replicas[0].metric(ignored).await + replicas[1].metric(ignored).await,
        0
    );
    // ...and both took a share.
    assert!(per_replica.iter().all(|n| *n > 0), "{per_replica:?}");
}

// ---------------------------------------------------------------------------------------
// Gateway-held alarms (AWTRIX clocks, docs/devices.md) across replicas

const DEVICES: &str = "[devices.kitchen]\nprofile = \"awtrix3\"\ntopic = \"awtrix_k1\"\n";

/// The devices file naming one AWTRIX clock, `kitchen`, kept while the test runs.
fn devices_file() -> tempfile::NamedTempFile {
    use std::io::Write;
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(DEVICES.as_bytes()).unwrap();
    file
}

/// `POST /commands/alarms` for `kitchen` at `at`, labelled `label`: the commandId.
async fn schedule(replica: &Replica, at: chrono::DateTime<chrono::Utc>, label: &str) -> String {
    let res = replica
        .http
        .post(replica.server.url("/commands/alarms"))
        .bearer_auth(TOKEN)
        .json_body(&json!({"deviceId": "kitchen", "alarmTime": at.to_rfc3339(), "label": label}))
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let body = res.bytes().await.unwrap();
    assert_eq!(status, 202, "{}", String::from_utf8_lossy(&body));
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["status"], "scheduled");
    command_id(&body)
}

/// An alarm time `secs` from now, at second precision as a caller would write it.
fn alarm_at(secs: i64) -> chrono::DateTime<chrono::Utc> {
    let t = chrono::Utc::now() + chrono::Duration::seconds(secs);
    chrono::DateTime::from_timestamp(t.timestamp(), 0).unwrap()
}

/// The labels of the alarms published to the kitchen clock, in order.
fn published_labels(sub: &common::subscriber::Subscriber) -> Vec<String> {
    sub.on("awtrix_k1/notify")
        .iter()
        .map(|m| m.payload["text"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn every_alarm_is_published_once_across_replicas() {
    let (broker, redis) = (Mosquitto::start_plain(), Redis::start());
    let sub = common::subscriber::Subscriber::plain(broker.port).await;
    let devices = devices_file();
    let path = devices.path().display().to_string();
    let vars = [
        ("DEVICES_FILE", path.as_str()),
        ("MQTT_PUBLISH_TIMEOUT_MS", "1000"),
    ];
    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(Replica::ready(&broker, &redis.url(), &vars).await);
    }
    // 30 alarms, scheduled through all three, due within the same two seconds.
    let at = alarm_at(3);
    let mut ids = Vec::new();
    for i in 0..30 {
        let when = at + chrono::Duration::milliseconds(i * 60);
        ids.push(schedule(&replicas[i as usize % 3], when, &format!("alarm-{i}")).await);
    }
    eventually(WAIT, "all 30 alarms published", || async {
        (published_labels(&sub).len() >= 30).then_some(())
    })
    .await;
    for id in &ids {
        eventually(WAIT, "every record sent", || async {
            (replicas[2].record(id).await.1["status"] == "sent").then_some(())
        })
        .await;
    }
    // Several more scheduler ticks on every replica: nothing is published again.
    common::observe_for(Duration::from_millis(1500)).await;
    let labels = published_labels(&sub);
    let distinct: HashSet<&String> = labels.iter().collect();
    assert_eq!((labels.len(), distinct.len()), (30, 30), "{labels:?}");
}

#[tokio::test]
async fn the_alarms_of_a_sigkilled_replica_are_published_by_another() {
    let (broker, redis) = (Mosquitto::start_plain(), Redis::start());
    let sub = common::subscriber::Subscriber::plain(broker.port).await;
    let devices = devices_file();
    let path = devices.path().display().to_string();
    let vars = [
        ("DEVICES_FILE", path.as_str()),
        ("MQTT_PUBLISH_TIMEOUT_MS", "1000"),
    ];
    let doomed = Replica::ready(&broker, &redis.url(), &vars).await;
    let survivor = Replica::ready(&broker, &redis.url(), &vars).await;

    let at = alarm_at(3);
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(schedule(&doomed, at, &format!("orphan-{i}")).await);
    }
    common::process::signal(doomed.server.child.id(), "KILL");
    assert!(chrono::Utc::now() < at, "killed before the alarm time");

    eventually(WAIT, "the orphaned alarms published", || async {
        (published_labels(&sub).len() >= 5).then_some(())
    })
    .await;
    for id in &ids {
        let record = eventually(WAIT, "sent", || async {
            let (_, record) = survivor.record(id).await;
            (record["status"] == "sent").then_some(record)
        })
        .await;
        let sent_at: chrono::DateTime<chrono::Utc> =
            record["sentAt"].as_str().unwrap().parse().unwrap();
        assert!(sent_at >= at, "published early: {sent_at} < {at}");
    }
    let mut labels = published_labels(&sub);
    labels.sort();
    assert_eq!(
        labels,
        (0..5).map(|i| format!("orphan-{i}")).collect::<Vec<_>>()
    );
}

// ---------------------------------------------------------------------------------------
// Redis outages

const PASSWORD: &str = "redis-pass-s3cret-4711";

#[tokio::test]
async fn while_redis_is_down_the_server_is_not_ready_dispatches_nothing_and_recovers() {
    let broker = Mosquitto::start_plain();
    let mut redis = Redis::start_with_password(PASSWORD);
    let replica = Replica::ready(&broker, &redis.url(), &[]).await;
    let devices = Devices::connect(&broker).await;
    let before = replica.submit("clock-5").await;
    devices.wait_for(std::slice::from_ref(&before)).await;
    let store_ready = "clock_server_transport_ready{transport=\"store\"}";
    assert_eq!(replica.metric(store_ready).await, 1);

    redis.stop();
    // Noticed without any traffic.
    replica.wait_ready(false).await;
    assert_eq!(
        replica.ready_status().await,
        (503, r#"{"status":"not_ready"}"#.to_owned())
    );
    assert_eq!(replica.metric(store_ready).await, 0);
    let published = devices.received().len();
    for _ in 0..5 {
        let (status, _, body) = replica.post("clock-5", None).await;
        assert_eq!(status, 503);
        assert_eq!(body, br#"{"error":"state store unavailable"}"#);
        let (status, _, _) = replica.post("clock-5", Some("outage-key")).await;
        assert_eq!(status, 503);
    }

    redis.start_again();
    replica.wait_ready(true).await;
    assert_eq!(replica.metric(store_ready).await, 1);
    let after = replica.submit("clock-5").await;
    devices.wait_for(std::slice::from_ref(&after)).await;
    assert_eq!(replica.record(&after).await.0, 200);
    // Only the command sent after the restart was published.
    assert_eq!(devices.received().len(), published + 1);
    // The key refused during the outage was not remembered.
    let (status, _, _) = replica.post("clock-5", Some("outage-key")).await;
    assert_eq!(status, 202);

    let logs = replica.server.logs();
    assert!(logs.contains("state store unavailable"), "{logs}");
    assert!(logs.contains("<redacted>"), "{logs}");
    assert!(!logs.contains(PASSWORD), "{logs}");
}

#[tokio::test]
async fn a_server_started_while_redis_is_down_starts_not_ready_and_recovers() {
    let broker = Mosquitto::start_plain();
    let mut redis = Redis::start_with_password(PASSWORD);
    redis.stop();
    let replica = Replica::start(&broker, &redis.url(), &[]).await;
    // Alive (the liveness probe passes, so Kubernetes does not restart it), not ready.
    let health = replica.http.get(replica.server.url("/health")).send().await;
    assert_eq!(health.unwrap().status(), 200);
    replica.wait_ready(false).await;
    assert_eq!(replica.post("clock-6", None).await.0, 503);

    redis.start_again();
    replica.wait_ready(true).await;
    replica.submit("clock-6").await;
    let logs = replica.server.logs();
    assert!(!logs.contains(PASSWORD), "{logs}");
}

#[tokio::test]
async fn a_wrong_redis_password_keeps_the_server_not_ready_without_showing_it() {
    let broker = Mosquitto::start_plain();
    let redis = Redis::start_with_password(PASSWORD);
    let wrong = format!("redis://:wrong-{PASSWORD}@127.0.0.1:{}", redis.port);
    let replica = Replica::start(&broker, &wrong, &[]).await;
    replica.wait_ready(false).await;
    let (status, _, body) = replica.post("clock-6", None).await;
    assert_eq!(status, 503);
    assert!(!String::from_utf8_lossy(&body).contains(PASSWORD));
    eventually(WAIT, "the failure to be logged", || async {
        replica
            .server
            .logs()
            .contains("state store unavailable")
            .then_some(())
    })
    .await;
    let logs = replica.server.logs();
    assert!(!logs.contains(PASSWORD), "{logs}");
}

#[tokio::test]
async fn redis_killed_under_load_dispatches_nothing_while_down_and_loses_no_202() {
    let broker = Mosquitto::start_plain();
    let mut redis = Redis::start_durable();
    let replicas = Arc::new([
        Replica::ready(&broker, &redis.url(), &[]).await,
        Replica::ready(&broker, &redis.url(), &[]).await,
    ]);
    let devices = Devices::connect(&broker).await;

    // Eight clients, alternating between the replicas, until told to stop.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let outcomes: Arc<Mutex<HashMap<u16, Vec<String>>>> = Arc::default();
    let load: Vec<_> = (0..8)
        .map(|n| {
            let (replicas, stop, outcomes) = (replicas.clone(), stop.clone(), outcomes.clone());
            tokio::spawn(async move {
                let mut i = n;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let (status, _, body) = replicas[i % 2].post("clock-7", None).await;
                    let id = if status == 202 {
                        command_id(&body)
                    } else {
                        String::new()
                    };
                    outcomes.lock().unwrap().entry(status).or_default().push(id);
                    i += 1;
                }
            })
        })
        .collect();
    let count = |status: u16| outcomes.lock().unwrap().get(&status).map_or(0, Vec::len);

    eventually(WAIT, "some accepted commands", || async {
        (count(202) >= 50).then_some(())
    })
    .await;
    redis.stop();
    eventually(WAIT, "503s while Redis is down", || async {
        (count(503) >= 20).then_some(())
    })
    .await;
    redis.start_again();
    let accepted_before = count(202);
    let restarted = Instant::now();
    eventually(WAIT, "accepted commands again", || async {
        (count(202) >= accepted_before + 50).then_some(())
    })
    .await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for task in load {
        task.await.unwrap();
    }
    let outcomes = outcomes.lock().unwrap().clone();
    let statuses: Vec<_> = outcomes.keys().copied().collect();
    assert!(
        statuses.iter().all(|s| [202, 503].contains(s)),
        "{statuses:?}"
    );
    let accepted: HashSet<String> = outcomes[&202].iter().cloned().collect();
    assert_eq!(accepted.len(), outcomes[&202].len());

    // Every 202 was published, once, and nothing else was: a 503 dispatched nothing.
    let accepted_list: Vec<String> = accepted.iter().cloned().collect();
    devices.wait_for(&accepted_list).await;
    let published = devices.received();
    let unique: HashSet<&String> = published.iter().collect();
    assert_eq!(
        unique.len(),
        published.len(),
        "a command was published twice"
    );
    assert!(
        published.iter().all(|id| accepted.contains(id)),
        "a command without a 202 was published"
    );
    // Every 202's record is readable after the restart, on either replica.
    for (i, id) in accepted.iter().enumerate() {
        let (status, record) = replicas[i % 2].record(id).await;
        assert_eq!(status, 200, "{id} lost: {record}");
    }
    eprintln!(
        "load: {} accepted, {} refused with 503; recovered {:?} after the restart",
        accepted.len(),
        outcomes[&503].len(),
        restarted.elapsed()
    );
}

#[tokio::test]
async fn rediss_verifies_the_server_against_ssl_cert_file() {
    let (broker, pki) = (Mosquitto::start_plain(), TestPki::new());
    let redis = Redis::start_tls(&pki);
    let ca = pki.ca_cert.display().to_string();
    let replica = Replica::ready(&broker, &redis.url(), &[("SSL_CERT_FILE", ca.as_str())]).await;
    let id = replica.submit("clock-8").await;
    assert_eq!(replica.record(&id).await.0, 200);

    // Without the private CA the certificate is not trusted: never ready.
    let untrusting = Replica::start(&broker, &redis.url(), &[]).await;
    untrusting.wait_ready(false).await;
    assert_eq!(untrusting.post("clock-8", None).await.0, 503);
}
