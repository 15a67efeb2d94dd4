//! How the virtual clock says it is there (SPEC 11.4), as the real firmware does: a Last
//! Will `offline` set in the CONNECT, `online` once it listens, and for an AWTRIX clock its
//! readings on `<topic>/stats` every 10 s. The server's side of these topics is
//! [`crate::domain::presence`].
//!
//! | Profile | Topic | Birth | Will |
//! |---|---|---|---|
//! | generic | `<prefix>/<deviceId>/status` | `online`, retained | `offline`, retained (ESPHome, Tasmota) |
//! | awtrix3 | `<topic>/stats/device` | `online`, not retained | `offline`, not retained (AWTRIX 3) |

use std::time::{Duration, Instant};

use mqtt5::{MqttClient, PublishOptions, QoS, WillMessage};

use crate::domain::presence::{
    OFFLINE, ONLINE, STATS_EVERY_SECS, stats_device_topic, stats_topic, status_topic,
};

/// What one virtual device announces about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announce {
    /// Where `online` and `offline` go.
    topic: String,
    retain: bool,
    /// AWTRIX: where the readings go every [`STATS_EVERY_SECS`].
    stats: Option<String>,
}

/// Bound on one presence publish: a clock that cannot say it is there goes on showing.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);

impl Announce {
    /// A generic device `device` under `prefix`: retained birth and will on its status topic.
    pub fn generic(prefix: &str, device: &str) -> Self {
        Self {
            topic: status_topic(prefix, device),
            retain: true,
            stats: None,
        }
    }

    /// An AWTRIX 3 clock with MQTT prefix `topic`.
    pub fn awtrix(topic: &str) -> Self {
        Self {
            topic: stats_device_topic(topic),
            retain: false,
            stats: Some(stats_topic(topic)),
        }
    }

    /// The topic of `online`/`offline`.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The Last Will for the CONNECT: `offline`, sent by the broker when the connection
    /// ends without DISCONNECT.
    pub fn will(&self) -> WillMessage {
        WillMessage::new(self.topic.clone(), OFFLINE.as_bytes().to_vec())
            .with_qos(QoS::AtLeastOnce)
            .with_retain(self.retain)
    }

    /// Says `online` (once the clock listens).
    pub async fn birth(&self, client: &MqttClient) -> Result<(), String> {
        self.say(client, ONLINE).await
    }

    /// Says `offline` before a clean DISCONNECT (which does not send the will).
    pub async fn goodbye(&self, client: &MqttClient) -> Result<(), String> {
        self.say(client, OFFLINE).await
    }

    async fn say(&self, client: &MqttClient, word: &str) -> Result<(), String> {
        let options = PublishOptions {
            qos: QoS::AtLeastOnce,
            retain: self.retain,
            ..PublishOptions::default()
        };
        publish(client, &self.topic, word.as_bytes().to_vec(), options).await
    }

    /// AWTRIX: publishes the clock's readings every 10 s until the task is aborted; a
    /// failed publish (e.g. while reconnecting) is skipped, as the firmware skips it.
    pub fn spawn_stats(&self, client: MqttClient) -> Option<tokio::task::JoinHandle<()>> {
        let topic = self.stats.clone()?;
        Some(tokio::spawn(async move {
            let started = Instant::now();
            let mut tick = tokio::time::interval(Duration::from_secs(STATS_EVERY_SECS));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let options = PublishOptions {
                    qos: QoS::AtMostOnce,
                    ..PublishOptions::default()
                };
                let _ = publish(&client, &topic, stats(started.elapsed()), options).await;
            }
        }))
    }
}

async fn publish(
    client: &MqttClient,
    topic: &str,
    payload: Vec<u8>,
    options: PublishOptions,
) -> Result<(), String> {
    match tokio::time::timeout(
        PUBLISH_TIMEOUT,
        client.publish_with_options(topic.to_owned(), payload, options),
    )
    .await
    {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {} s", PUBLISH_TIMEOUT.as_secs())),
    }
}

/// The readings of the virtual AWTRIX: the firmware's keys (`MQTTManager.cpp`
/// `sendStats`), with the values of a clock on mains power and good Wi-Fi.
fn stats(uptime: Duration) -> Vec<u8> {
    serde_json::json!({
        "bat": 100,
        "bri": 120,
        "uptime": uptime.as_secs(),
        "wifi_signal": -55,
        "version": concat!("clockctl-", env!("CARGO_PKG_VERSION")),
    })
    .to_string()
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generic_device_announces_retained_on_its_status_topic() {
        let a = Announce::generic("clocks/commands", "clock-1");
        assert_eq!(a.topic(), "clocks/commands/clock-1/status");
        let will = a.will();
        assert_eq!(
            (will.topic.as_str(), will.payload.as_slice(), will.retain),
            ("clocks/commands/clock-1/status", &b"offline"[..], true)
        );
        assert_eq!(a.stats, None);
    }

    #[test]
    fn an_awtrix_clock_announces_unretained_on_stats_device_and_sends_stats() {
        let a = Announce::awtrix("awtrix_k1");
        let will = a.will();
        assert_eq!(
            (will.topic.as_str(), will.payload.as_slice(), will.retain),
            ("awtrix_k1/stats/device", &b"offline"[..], false)
        );
        assert_eq!(a.stats.as_deref(), Some("awtrix_k1/stats"));
        let readings = stats(Duration::from_secs(42));
        assert!(crate::domain::presence::stats_info(&readings).is_some());
    }
}
