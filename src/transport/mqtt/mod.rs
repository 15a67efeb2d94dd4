//! MQTT transport (SPEC 4.1): one long-lived connection, acknowledged and pipelined
//! publishes, fail-fast while the broker is away.
//!
//! Built on the `mqtt5` client, whose publish call resolves only once the broker has
//! acknowledged *that* publish (PUBACK for QoS 1, PUBCOMP for QoS 2; written to the socket
//! for QoS 0), and which lets many publishes be in flight on one connection.
//!
//! - A `202` is given only for [`PublishResult::Sent`]. A publish the client could not
//!   settle (connection lost before the acknowledgement) is a failure, and since every
//!   connection starts clean, the client drops it rather than re-sending it later.
//! - While the link is down, `send` fails at once with `NotConnected`: nothing is queued,
//!   so a command the caller was told failed is never delivered behind its back.
//! - At most `MQTT_MAX_INFLIGHT` publishes are in flight; the whole send (waiting for a
//!   slot, writing, the acknowledgement) is bounded by `MQTT_PUBLISH_TIMEOUT_MS`.
//!
//! - The CONNECT announces a Maximum Packet Size of [`MAX_PACKET_SIZE`]. A broker should
//!   never send more; if one does (an unsolicited 250 MB PUBLISH), the client refuses it as
//!   soon as the fixed header announces its length, before buffering its body, drops the
//!   connection (DISCONNECT 0x95) and `link` reconnects as after any loss. Nothing the
//!   server expects from a broker (CONNACK, acknowledgements) comes anywhere near that.
//!   Not covered: the CONNACK itself, which `mqtt5` 0.49 reads with another reader that is
//!   bounded only by the protocol's 256 MB (it allocates what the header announces).
//!
//! Submodules: `link` (connecting, readiness, reconnect with back-off), `tls` (trust store
//! and client certificate for `mqtts://`).

pub mod acks;
mod link;
mod tls;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use mqtt5::{ConnectOptions, MqttError, PublishOptions, PublishResult, QoS};
use tokio::sync::Semaphore;

use self::link::{Link, Target, bracketed};
use super::{BoxFuture, Transport, TransportError};
use crate::config::MqttConfig;
use crate::domain::wire::MqttForm;
use crate::domain::{Envelope, Profile};
use crate::store::Delivery;

const NAME: &str = "mqtt";

/// Bound on one connection attempt (TCP, TLS handshake, CONNECT/CONNACK).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest packet accepted from the broker (defined in [`crate::shared`], which
/// `clockctl watch` uses too).
pub use crate::shared::MAX_MQTT_PACKET_SIZE as MAX_PACKET_SIZE;

/// Publishes commands to an MQTT broker.
pub struct MqttTransport {
    link: Arc<Link>,
    topic_prefix: String,
    publish: PublishOptions,
    publish_timeout: Duration,
    inflight: Semaphore,
    max_inflight: u32,
}

impl MqttTransport {
    /// Connects to the broker. With `connect_retry` this returns at once and connects in
    /// the background (re-connecting after every loss); without it, a failed first
    /// connection is an error and a later loss is not repaired.
    pub async fn connect(config: MqttConfig) -> Result<Arc<Self>, TransportError> {
        let client_id = config
            .client_id
            .clone()
            .unwrap_or_else(|| format!("clock-server-{}", uuid::Uuid::now_v7().simple()));
        let tls = if config.use_tls {
            Some(tls::broker_tls(&config).map_err(|e| failed(e.to_string()))?)
        } else {
            None
        };
        let scheme = if config.use_tls { "mqtts" } else { "mqtt" };
        let target = Target {
            display: format!("{scheme}://{}:{}", bracketed(&config.host), config.port),
            host: config.host.clone(),
            port: config.port,
            tls,
        };

        // Clean start with no session expiry on every connection: nothing unacknowledged
        // survives a connection, so nothing is re-sent after a reconnect.
        let mut options = ConnectOptions::new(client_id.clone())
            .with_clean_start(true)
            .with_session_expiry_interval(0)
            .with_keep_alive(config.keep_alive)
            .with_automatic_reconnect(false);
        options.properties.maximum_packet_size = Some(MAX_PACKET_SIZE);
        options.protocol_options.username = config.username.clone();
        options.protocol_options.password = config
            .password
            .as_ref()
            .map(|p| p.expose().as_bytes().to_vec());

        let qos = match config.qos {
            0 => QoS::AtMostOnce,
            1 => QoS::AtLeastOnce,
            _ => QoS::ExactlyOnce,
        };
        let publish = PublishOptions {
            qos,
            retain: config.retained,
            ..PublishOptions::default()
        };

        if config.insecure_skip_verify && config.use_tls {
            tracing::warn!(
                "MQTT broker certificate verification is OFF (MQTT_TLS_INSECURE_SKIP_VERIFY with ALLOW_INSECURE_TLS_VERIFY)"
            );
        }
        tracing::info!(
            broker = %target.display,
            client_id = %client_id,
            qos = config.qos,
            retained = config.retained,
            max_inflight = config.max_inflight,
            publish_timeout_ms = millis(config.publish_timeout),
            keep_alive_secs = config.keep_alive.as_secs(),
            connect_retry = config.connect_retry,
            "MQTT transport starting"
        );

        let link = Link::new(target, options, client_id, config.connect_retry).await;
        if config.connect_retry {
            link.spawn_supervisor();
        } else if let Err(e) = link.attempt().await {
            link.abandon();
            return Err(failed(format!(
                "cannot connect to the MQTT broker at {}: {e} (MQTT_CONNECT_RETRY=false, so the server does not start without it; set MQTT_CONNECT_RETRY=true to start anyway and connect in the background)",
                link.broker()
            )));
        }

        let max_inflight = u32::from(config.max_inflight.max(1));
        Ok(Arc::new(Self {
            link,
            topic_prefix: config.topic_prefix,
            publish,
            publish_timeout: config.publish_timeout,
            inflight: Semaphore::new(max_inflight as usize),
            max_inflight,
        }))
    }

    /// Publishes a gateway-scheduled alarm's prepared [`Delivery`] (SPEC 8.1), bounded by
    /// the publish timeout like any command. Only a firmware that does not answer has its
    /// alarms held, so it goes as such a firmware's commands do ([`Self::plain_options`]).
    pub async fn publish_delivery(
        &self,
        delivery: &Delivery,
        expires_at: DateTime<Utc>,
    ) -> Result<(), TransportError> {
        if !self.link.is_up() {
            return Err(TransportError::NotConnected { transport: NAME });
        }
        let publish = self.publish_raw(
            delivery.topic.clone(),
            delivery.payload.clone(),
            self.plain_options(Some(expires_at)),
        );
        match tokio::time::timeout(self.publish_timeout, publish).await {
            Ok(result) => result,
            Err(_) => Err(TransportError::Timeout {
                transport: NAME,
                timeout_ms: millis(self.publish_timeout),
            }),
        }
    }

    /// Publishes `envelope` in its device's firmware's form ([`Profile::mqtt_form`]), in
    /// order, each acknowledged before the next (an AWTRIX brightness is `power`, then
    /// `settings`): the command succeeds only once every publish has.
    async fn publish(&self, envelope: &Envelope) -> Result<(), TransportError> {
        let Some(form) = envelope.profile.mqtt_form(&self.topic_prefix, envelope) else {
            // `reaches` keeps it away: such a device is reached over its own API.
            return Err(failed(format!(
                "a device of the {} profile is not reached over MQTT",
                envelope.profile.name()
            )));
        };
        let options = self.options_for(&form, envelope);
        for publication in form.publications {
            self.publish_raw(publication.topic, publication.payload, options.clone())
                .await?;
        }
        Ok(())
    }

    async fn publish_raw(
        &self,
        topic: String,
        payload: Vec<u8>,
        options: PublishOptions,
    ) -> Result<(), TransportError> {
        let _slot = self
            .inflight
            .acquire()
            .await
            .map_err(|_| TransportError::NotConnected { transport: NAME })?;
        // The link may have gone down while this waited for a slot.
        if !self.link.is_up() {
            return Err(TransportError::NotConnected { transport: NAME });
        }
        let result = self
            .link
            .client
            .publish_with_options(topic, payload, options)
            .await;
        match result {
            Ok(PublishResult::Sent(delivery)) => {
                if (delivery.qos_used() as u8) < (self.publish.qos as u8) {
                    tracing::warn!(
                        requested = ?self.publish.qos,
                        used = ?delivery.qos_used(),
                        "the broker's maximum QoS is lower than MQTT_QOS; the publish was downgraded"
                    );
                }
                Ok(())
            }
            // Sent, but the connection ended before the acknowledgement. The clean start of
            // the next connection discards it, so it is never re-sent: report the failure.
            Ok(PublishResult::Queued(_)) => Err(failed(
                "the connection ended before the broker acknowledged the publish; it is not re-sent".to_owned(),
            )),
            Err(MqttError::NotConnected) => Err(TransportError::NotConnected { transport: NAME }),
            Err(MqttError::PublishFailed(code)) => {
                Err(failed(format!("the broker refused the publish: {code:?}")))
            }
            Err(e) => Err(failed(format!("publish failed: {e}"))),
        }
    }
}

impl Transport for MqttTransport {
    fn name(&self) -> &'static str {
        NAME
    }

    fn send<'a>(&'a self, envelope: &'a Envelope) -> BoxFuture<'a, Result<(), TransportError>> {
        Box::pin(async move {
            // Fail fast while disconnected: never queue a command for later.
            if !self.link.is_up() {
                return Err(TransportError::NotConnected { transport: NAME });
            }
            match tokio::time::timeout(self.publish_timeout, self.publish(envelope)).await {
                Ok(result) => result,
                Err(_) => Err(TransportError::Timeout {
                    transport: NAME,
                    timeout_ms: millis(self.publish_timeout),
                }),
            }
        })
    }

    /// Every device but one reached over its own API (a LaMetric clock).
    fn reaches(&self, profile: &Profile) -> bool {
        !profile.direct()
    }

    fn is_ready(&self) -> bool {
        self.link.is_up()
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.link.begin_close();
            // Let in-flight publishes finish (each is bounded by the publish timeout).
            let drained = tokio::time::timeout(
                self.publish_timeout,
                self.inflight.acquire_many(self.max_inflight),
            )
            .await;
            if drained.is_err() {
                tracing::warn!(
                    "MQTT publishes still in flight after {} ms; disconnecting anyway",
                    millis(self.publish_timeout)
                );
            }
            self.inflight.close();
            self.link.shutdown().await;
        })
    }
}

impl Drop for MqttTransport {
    fn drop(&mut self) {
        self.link.abandon();
    }
}

impl MqttTransport {
    /// The publish options of one command in `form`: for a tracked command (SPEC 7.2) the
    /// MQTT 5 Message Expiry Interval (whole seconds left, at least 1), so a broker never
    /// hands an expired command to a device that reconnects late; for a firmware that
    /// answers ([`MqttForm::answers`]) the request/response pair too: Response Topic
    /// `<prefix>/<deviceId>/ack`, Correlation Data the command id. Retained as
    /// `MQTT_RETAINED` says only when the firmware may be sent retained messages.
    fn options_for(&self, form: &MqttForm, envelope: &Envelope) -> PublishOptions {
        let mut options = if form.may_retain {
            self.publish.clone()
        } else {
            self.plain_options(None)
        };
        if let Some(expires_at) = envelope.expires_at {
            options.properties.message_expiry_interval = Some(expiry_interval(expires_at));
            if form.answers {
                options.properties.response_topic = Some(acks::ack_topic(
                    &self.topic_prefix,
                    envelope.device_id.as_str(),
                ));
                options.properties.correlation_data = Some(envelope.command_id.as_bytes().to_vec());
            }
        }
        options
    }

    /// The publish options of a firmware that does not answer and shows what it gets (an
    /// AWTRIX clock, SPEC 8.1): never retained (`MQTT_RETAINED` does not apply: a retained
    /// notification would be shown again at every reconnection), the Message Expiry
    /// Interval of a tracked command, and no Response Topic or Correlation Data — the
    /// firmware never answers, so they would only cost bytes.
    fn plain_options(&self, expires_at: Option<DateTime<Utc>>) -> PublishOptions {
        let mut options = PublishOptions {
            qos: self.publish.qos,
            retain: false,
            ..PublishOptions::default()
        };
        options.properties.message_expiry_interval = expires_at.map(expiry_interval);
        options
    }

    /// Subscribes to `filter`, now if connected and after every (re)connection that finds
    /// it missing; each message is handed to `on_message` (topic, payload), which must not
    /// block: it runs on the client's message task. `what` names the subscription in logs.
    pub fn subscribe(&self, filter: String, what: &'static str, on_message: OnMessage) {
        self.link.subscribe(filter, what, on_message);
    }
}

pub use self::link::OnMessage;

/// Whole seconds left until `expires_at`, at least 1 (SPEC 7.2).
fn expiry_interval(expires_at: DateTime<Utc>) -> u32 {
    let left_ms = (expires_at - Utc::now()).num_milliseconds();
    let secs =
        u32::try_from((left_ms + 999) / 1000).unwrap_or(if left_ms > 0 { u32::MAX } else { 1 });
    secs.max(1)
}

fn failed(message: String) -> TransportError {
    TransportError::Failed {
        transport: NAME,
        message,
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
