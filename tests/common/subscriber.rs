//! A subscriber on the test broker (the `mqtt5` client) that records everything it gets:
//! topic, payload (as JSON and as bytes), QoS, retain flag, MQTT 5 properties and when.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use mqtt5::{ConnectOptions, MqttClient, QoS, SubscribeOptions};
use serde_json::Value;

use super::eventually;

#[derive(Debug, Clone)]
pub struct Received {
    pub topic: String,
    /// The payload as JSON (a JSON string of the text when it is not JSON).
    pub payload: Value,
    /// The payload exactly as published.
    pub bytes: Vec<u8>,
    pub qos: u8,
    pub retain: bool,
    /// When the subscriber got it.
    pub at: std::time::Instant,
    /// The same, on the wall clock (to compare with an alarm time).
    pub wall: chrono::DateTime<chrono::Utc>,
    /// The MQTT 5 Message Expiry Interval it carried, if any.
    pub expiry: Option<u32>,
    /// Whether it carried a Response Topic or Correlation Data.
    pub request_response: bool,
}

pub struct Subscriber {
    pub client: MqttClient,
    got: Arc<Mutex<Vec<Received>>>,
}

impl Subscriber {
    /// Subscribes to everything at QoS 2 (so each message keeps the QoS it was published with).
    pub async fn plain(port: u16) -> Self {
        Self::start(port, None, false).await
    }

    pub async fn with_credentials(port: u16, user: &str, pass: &str) -> Self {
        Self::start(port, Some((user, pass)), false).await
    }

    /// A subscriber whose session (and so its subscription) outlives its connection and a
    /// clean broker restart: everything published while it is away is kept for it.
    pub async fn durable(port: u16) -> Self {
        Self::start(port, None, true).await
    }

    pub async fn start(port: u16, credentials: Option<(&str, &str)>, durable: bool) -> Self {
        let id = format!("test-sub-{}", uuid::Uuid::now_v7().simple());
        let mut options = ConnectOptions::new(id)
            .with_clean_start(!durable)
            .with_automatic_reconnect(durable)
            .with_reconnect_delay(Duration::from_millis(200), Duration::from_secs(1));
        if durable {
            options = options.with_session_expiry_interval(3600);
        }
        if let Some((user, pass)) = credentials {
            options = options.with_credentials(user, pass);
        }
        let client = MqttClient::with_options(options);
        client
            .connect(&format!("mqtt://127.0.0.1:{port}"))
            .await
            .unwrap();
        let got = Arc::new(Mutex::new(Vec::new()));
        let sink = got.clone();
        client
            .subscribe_with_options(
                "#",
                SubscribeOptions {
                    qos: QoS::ExactlyOnce,
                    // `retain` then shows the publisher's flag (a broker clears it on
                    // live delivery otherwise).
                    retain_as_published: true,
                    ..SubscribeOptions::default()
                },
                move |m| {
                    let payload = serde_json::from_slice(&m.payload).unwrap_or_else(|_| {
                        Value::String(String::from_utf8_lossy(&m.payload).into())
                    });
                    sink.lock().unwrap().push(Received {
                        topic: m.topic,
                        payload,
                        bytes: m.payload.to_vec(),
                        qos: m.qos as u8,
                        retain: m.retain,
                        at: std::time::Instant::now(),
                        wall: chrono::Utc::now(),
                        expiry: m.properties.message_expiry_interval,
                        request_response: m.properties.response_topic.is_some()
                            || m.properties.correlation_data.is_some(),
                    });
                },
            )
            .await
            .unwrap();
        Self { client, got }
    }

    pub fn all(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    /// Everything received on `topic`, in order.
    pub fn on(&self, topic: &str) -> Vec<Received> {
        self.all()
            .into_iter()
            .filter(|r| r.topic == topic)
            .collect()
    }

    pub fn find(&self, command_id: &str) -> Option<Received> {
        self.all()
            .into_iter()
            .find(|r| r.payload["commandId"] == command_id)
    }

    pub async fn wait_for(&self, command_id: &str) -> Received {
        eventually(
            Duration::from_secs(15),
            &format!("command {command_id} to arrive"),
            || async { self.find(command_id) },
        )
        .await
    }
}
