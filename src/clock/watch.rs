//! The virtual clock's MQTT side: connect, subscribe to `<prefix>/<device or +>/+` (or an
//! AWTRIX clock's `<topic>/notify`, `<topic>/power` and `<topic>/settings`), and show each
//! command as it arrives — a plain line, a JSON line, or a live terminal view.
//!
//! The `mqtt5` client re-connects on its own after a loss (with back-off) and re-subscribes
//! when the broker kept no session, so a watcher survives a broker restart; only the first
//! connection must succeed.

use std::future::Future;
use std::io::{self, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{Local, Utc};
use mqtt5::{
    ConnectOptions, ConnectionEvent, DisconnectReason, MqttClient, PublishOptions, QoS,
    SubscribeOptions,
};
use tokio::sync::{Semaphore, mpsc};

use super::ack::{Ack, ack_topic, is_ack_topic};
use super::awtrix;
use super::command::{self, Received};
use super::face::Clocks;
use super::presence::Announce;
use crate::domain::{DeviceId, Profile};
use crate::shared::{BrokerUrl, MAX_MQTT_PACKET_SIZE, Secret};
use crate::terminal;

/// The broker `clockctl watch` uses when none is given.
pub const DEFAULT_BROKER_URL: &str = "mqtt://127.0.0.1:1883";
/// The topic prefix when none is given (the server's `MQTT_TOPIC_PREFIX` default).
pub const DEFAULT_TOPIC_PREFIX: &str = "clocks/commands";

/// Bound on the first connection (TCP connect and CONNACK).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the live view is redrawn.
const REDRAW_EVERY: Duration = Duration::from_secs(1);
/// Acknowledgements waiting for their PUBACK at once; past that one is dropped (and
/// reported), so a stalled broker costs neither memory nor the display.
const ACKS_IN_FLIGHT: usize = 64;
/// Bound on one acknowledgement's publish (the client's own wait has none while offline).
const ACK_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a virtual clock connects: the broker URL, and the CAs it trusts for `mqtts://`.
#[derive(Debug, Clone)]
pub struct Broker {
    url: BrokerUrl,
    /// The only CAs trusted for `mqtts://` when set (PEM, checked by [`Broker::trust_ca_file`]).
    ca_pem: Option<Vec<u8>>,
}

impl Broker {
    /// Parses a broker URL (see [`BrokerUrl`]) or a bare `host:port` (plain MQTT). The error
    /// says what is accepted.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let raw = raw.trim();
        let accepted = "expected mqtt://host:port or mqtts://host:port, e.g. mqtt://127.0.0.1:1883";
        let with_scheme = if raw.contains("://") {
            raw.to_owned()
        } else {
            format!("mqtt://{raw}")
        };
        let url = BrokerUrl::parse(&with_scheme)
            .map_err(|e| format!("broker URL {raw:?} is not valid: {e}; {accepted}"))?;
        Ok(Self { url, ca_pem: None })
    }

    /// Trusts only the CA certificates in the PEM file at `path` for this `mqtts://`
    /// broker (instead of the bundled public roots). The error says what is wrong with it.
    pub fn trust_ca_file(mut self, path: &Path) -> Result<Self, String> {
        if !self.url.tls {
            return Err(format!(
                "{} is plain MQTT; a CA file only applies to an mqtts:// broker",
                self.display()
            ));
        }
        crate::tls::load_certs(path, "CA file").map_err(|e| e.to_string())?;
        let pem = std::fs::read(path)
            .map_err(|e| format!("CA file={}: cannot read it: {e}", path.display()))?;
        self.ca_pem = Some(pem);
        Ok(self)
    }

    /// `mqtt://host:port` or `mqtts://host:port`, without credentials: safe to print.
    pub fn display(&self) -> String {
        self.url.to_string()
    }
}

/// The topic prefix as the server normalises it: surrounding spaces and slashes removed;
/// no wildcards.
pub fn normalize_prefix(raw: &str) -> Result<String, String> {
    let prefix = raw.trim().trim_matches('/').trim();
    if prefix.is_empty() {
        return Err(format!(
            "topic prefix {raw:?} is empty: use the server's MQTT_TOPIC_PREFIX, default {DEFAULT_TOPIC_PREFIX}"
        ));
    }
    if prefix.contains(['+', '#', '\0']) {
        return Err(format!(
            "topic prefix {raw:?} must not contain the wildcards + or #"
        ));
    }
    Ok(prefix.to_owned())
}

/// What to watch.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// The broker the devices subscribe to.
    pub broker: Broker,
    /// The devices to show; empty means every device. With [`Profile::Awtrix3`] at most one:
    /// the name the clock is shown under (default: its topic).
    pub devices: Vec<DeviceId>,
    /// Generic devices that say they are there (SPEC 11.4) besides those in `devices`: a
    /// clock watching every device has no id of its own to announce, so the demo names
    /// its `clock-1` here. `clockctl watch` leaves it empty.
    pub announce: Vec<DeviceId>,
    /// Already normalised (see [`normalize_prefix`]); the generic profile's.
    pub topic_prefix: String,
    /// Acknowledge each command shown, as a device does (SPEC 7.4); `--no-ack` clears it.
    /// An AWTRIX clock never does.
    pub acknowledge: bool,
    /// The firmware the clock plays: generic, or one AWTRIX 3 clock (its topic; the
    /// melody is the server's business).
    pub profile: Profile,
}

impl WatchOptions {
    /// One filter per device, or `<prefix>/+/+` for all of them; an AWTRIX clock's own
    /// topics.
    pub fn topic_filters(&self) -> Vec<String> {
        if let Profile::Awtrix3(clock) = &self.profile {
            return awtrix::topic_filters(clock.topic.as_str());
        }
        if self.devices.is_empty() {
            return vec![format!("{}/+/+", self.topic_prefix)];
        }
        let mut filters: Vec<String> = self
            .devices
            .iter()
            .map(|d| format!("{}/{d}/+", self.topic_prefix))
            .collect();
        filters.dedup();
        filters
    }
}

/// How received commands are shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// One stable line per command (see [`command::Received::plain_line`]).
    Plain,
    /// One JSON object per command: `{"topic","retained","payload"}`.
    Json,
    /// A view of every clock redrawn about once a second with ANSI escapes (for terminals).
    Live,
}

/// Why watching failed.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The first connection did not succeed.
    #[error(
        "cannot connect to the MQTT broker at {broker}: {reason}; is a broker running there? \
         (clock-server demo starts one on 127.0.0.1:1883; otherwise set --broker or CLOCKCTL_BROKER_URL)"
    )]
    Connect { broker: String, reason: String },
    /// The broker refused a subscription.
    #[error("the MQTT broker at {broker} refused the subscription to {filter}: {reason}")]
    Subscribe {
        broker: String,
        filter: String,
        reason: String,
    },
    /// Writing the output failed.
    #[error("cannot write the output: {0}")]
    Output(#[from] io::Error),
}

enum Event {
    Message(Delivery),
    Connected,
    Lost(String),
}

/// One message as the broker delivered it.
struct Delivery {
    topic: String,
    payload: Vec<u8>,
    retained: bool,
    /// MQTT 5 request/response: what to echo with the answer. (The Response Topic is not
    /// kept: a clock answers on its own ack topic only.)
    correlation_data: Option<Vec<u8>>,
}

/// Publishes acknowledgements without ever holding up the display: each one is its own
/// task, bounded in number and time; the first failure is reported on stderr, later ones
/// are not (a broker that refuses one usually refuses them all).
struct Acker {
    client: MqttClient,
    prefix: String,
    in_flight: Arc<Semaphore>,
    reported: Arc<AtomicBool>,
    stopping: Arc<AtomicBool>,
}

impl Acker {
    fn acknowledge(&self, received: &Received, delivery: &Delivery) {
        let Some(ack) = Ack::of(received) else {
            return;
        };
        // Only ever its own ack topic (SPEC 7.4). The Response Topic is whatever the
        // publisher wrote: the gateway's names this very topic, anyone else's may name
        // another clock's (to confirm its command) or a topic outside the prefix, so it is
        // never followed.
        let topic = ack_topic(&self.prefix, &received.device_id);
        let Ok(permit) = Arc::clone(&self.in_flight).try_acquire_owned() else {
            report_once(
                &self.reported,
                &topic,
                &format!("{ACKS_IN_FLIGHT} acknowledgements are still waiting for the broker"),
            );
            return;
        };
        let mut options = PublishOptions {
            qos: QoS::AtLeastOnce,
            retain: false,
            ..PublishOptions::default()
        };
        options.properties.correlation_data = delivery.correlation_data.clone();
        let (client, reported, stopping) = (
            self.client.clone(),
            Arc::clone(&self.reported),
            Arc::clone(&self.stopping),
        );
        tokio::spawn(async move {
            let sent = tokio::time::timeout(
                ACK_TIMEOUT,
                client.publish_with_options(topic.clone(), ack.to_vec(), options),
            )
            .await;
            drop(permit);
            let why = match sent {
                Ok(Ok(_)) => return,
                Ok(Err(e)) => e.to_string(),
                Err(_) => format!("no PUBACK within {} s", ACK_TIMEOUT.as_secs()),
            };
            // Disconnecting at the end fails what is still in flight: not worth a line.
            if !stopping.load(Ordering::SeqCst) {
                report_once(&reported, &topic, &why);
            }
        });
    }
}

fn report_once(reported: &AtomicBool, topic: &str, why: &str) {
    if !reported.swap(true, Ordering::SeqCst) {
        eprintln!(
            "cannot acknowledge a command on {}: {}; watching goes on (further acknowledgement \
             failures are not reported; --no-ack turns acknowledging off)",
            terminal::plain(topic),
            terminal::plain(why)
        );
    }
}

/// A virtual clock connected to its broker and subscribed; [`Watcher::run`] shows commands.
pub struct Watcher {
    acker: Option<Acker>,
    client: MqttClient,
    events: mpsc::UnboundedReceiver<Event>,
    prefix: String,
    /// For an AWTRIX clock: the name it is shown under, and its MQTT prefix.
    awtrix: Option<(String, String)>,
    filters: Vec<String>,
    broker: String,
    stopping: Arc<AtomicBool>,
    /// What this connection announces (its Last Will is set), if anything.
    announce: Option<Announce>,
    /// Further generic devices, each on a connection of its own (one will per connection).
    others: Vec<(Announce, MqttClient)>,
    /// AWTRIX: the 10-second `stats`.
    stats: Option<tokio::task::JoinHandle<()>>,
}

/// After a reconnection, how long to wait before saying `online` again: the client
/// reports the connection before it has re-sent the subscriptions of its clean session,
/// and a clock must not say it is there (so that held commands come) before it listens.
const BIRTH_AFTER_RECONNECT: Duration = Duration::from_millis(500);

impl WatchOptions {
    /// What each watched device announces (SPEC 11.4): the AWTRIX clock, or each listed
    /// generic device and each of `announce`; nothing when watching every generic device
    /// with `announce` empty (no id to announce).
    pub fn announcements(&self) -> Vec<Announce> {
        match &self.profile {
            Profile::Awtrix3(clock) => vec![Announce::awtrix(clock.topic.as_str())],
            // Not watched over MQTT (`clockctl watch` refuses the profile).
            Profile::Lametric(_) => Vec::new(),
            Profile::Generic => {
                let mut seen = std::collections::BTreeSet::new();
                self.devices
                    .iter()
                    .chain(&self.announce)
                    .filter(|d| seen.insert(d.as_str().to_owned()))
                    .map(|d| Announce::generic(&self.topic_prefix, d.as_str()))
                    .collect()
            }
        }
    }
}

/// Connection options shared by the watcher and its presence-only connections.
fn connect_options(options: &WatchOptions, kind: &str) -> ConnectOptions {
    let client_id = format!("clock-{kind}-{}", uuid::Uuid::now_v7().simple());
    let mut connect = ConnectOptions::new(client_id)
        .with_clean_start(true)
        .with_keep_alive(Duration::from_secs(30))
        .with_automatic_reconnect(true)
        .with_reconnect_delay(Duration::from_millis(500), Duration::from_secs(10));
    // Payloads come from whoever may publish on the broker: a packet over this is refused
    // (and the client reconnects) instead of buffered. A broker that honours the maximum
    // simply does not forward bigger messages to us, which no clock face could show.
    connect.properties.maximum_packet_size = Some(MAX_MQTT_PACKET_SIZE);
    if let Some(user) = &options.broker.url.username {
        let password = options
            .broker
            .url
            .password
            .as_ref()
            .map(Secret::expose)
            .unwrap_or_default();
        connect = connect.with_credentials(user.clone(), password);
    }
    connect
}

/// Says `online` again after every reconnection of `client`; `connected` says whether it
/// has connected already (else its first connection is not a reconnection).
async fn rebirth_on_reconnect(
    client: &MqttClient,
    announce: Announce,
    stopping: Arc<AtomicBool>,
    connected: bool,
) {
    let first = Arc::new(AtomicBool::new(!connected));
    let again = client.clone();
    let _ = client
        .on_connection_event(move |event| {
            if !matches!(event, ConnectionEvent::Connected { .. })
                || first.swap(false, Ordering::SeqCst)
                || stopping.load(Ordering::SeqCst)
            {
                return;
            }
            let (client, announce) = (again.clone(), announce.clone());
            tokio::spawn(async move {
                tokio::time::sleep(BIRTH_AFTER_RECONNECT).await;
                let _ = announce.birth(&client).await;
            });
        })
        .await;
}

/// A connection that only announces `announce` (its will, then `online`).
async fn presence_only(
    options: &WatchOptions,
    announce: &Announce,
    stopping: &Arc<AtomicBool>,
) -> Result<MqttClient, WatchError> {
    let broker = options.broker.display();
    let connect = connect_options(options, "presence").with_will(announce.will());
    let client = MqttClient::with_options(connect.clone());
    if options.broker.url.tls
        && let Some(pem) = &options.broker.ca_pem
    {
        client.set_tls_config(None, None, Some(pem.clone())).await;
    }
    rebirth_on_reconnect(&client, announce.clone(), stopping.clone(), false).await;
    let attempt = tokio::time::timeout(
        CONNECT_TIMEOUT,
        client.connect_with_options(&broker, connect),
    )
    .await;
    let failure = match attempt {
        Ok(Ok(_)) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(_) => Some(format!("no answer within {} s", CONNECT_TIMEOUT.as_secs())),
    };
    if let Some(reason) = failure {
        let _ = tokio::time::timeout(Duration::from_secs(1), client.disconnect()).await;
        return Err(WatchError::Connect { broker, reason });
    }
    if let Err(reason) = announce.birth(&client).await {
        eprintln!(
            "cannot say online on {}: {}; watching goes on",
            terminal::plain(announce.topic()),
            terminal::plain(&reason)
        );
    }
    Ok(client)
}

impl Watcher {
    /// Connects and subscribes; returns once the broker has acknowledged every
    /// subscription (SUBACK), so nothing published afterwards is missed.
    pub async fn connect(options: &WatchOptions) -> Result<Self, WatchError> {
        let broker = options.broker.display();
        let mut announcements = options.announcements().into_iter();
        // The first device's will rides on this connection, as on a real clock.
        let announce = announcements.next();
        let mut connect = connect_options(options, "watch");
        if let Some(a) = &announce {
            connect = connect.with_will(a.will());
        }
        let client = MqttClient::with_options(connect.clone());
        let (tx, events) = mpsc::unbounded_channel();
        let stopping = Arc::new(AtomicBool::new(false));
        let (conn_tx, conn_stopping) = (tx.clone(), stopping.clone());
        // Fails only if the callback list is inaccessible, which cannot happen before use.
        let _ = client
            .on_connection_event(move |event| {
                let event = match event {
                    ConnectionEvent::Connected { .. } => Event::Connected,
                    ConnectionEvent::Disconnected { reason } => {
                        if conn_stopping.load(Ordering::SeqCst)
                            || matches!(reason, DisconnectReason::ClientInitiated)
                        {
                            return;
                        }
                        Event::Lost(describe(&reason))
                    }
                    _ => return,
                };
                let _ = conn_tx.send(event);
            })
            .await;

        if options.broker.url.tls {
            // The client's rustls uses the process-wide provider: ring, as everywhere here.
            let _ = rustls::crypto::ring::default_provider().install_default();
            if let Some(pem) = &options.broker.ca_pem {
                // Kept by the client for its reconnects too.
                client.set_tls_config(None, None, Some(pem.clone())).await;
            }
        }
        // `display` is the address without credentials; they go in the CONNECT packet.
        let address = options.broker.display();
        let attempt = tokio::time::timeout(
            CONNECT_TIMEOUT,
            client.connect_with_options(&address, connect),
        )
        .await;
        let failure = match attempt {
            Ok(Ok(_)) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some(format!("no answer within {} s", CONNECT_TIMEOUT.as_secs())),
        };
        if let Some(reason) = failure {
            // The client retries a failed first connection in the background; stop that.
            stopping.store(true, Ordering::SeqCst);
            let _ = tokio::time::timeout(Duration::from_secs(1), client.disconnect()).await;
            return Err(WatchError::Connect { broker, reason });
        }

        let filters = options.topic_filters();
        for filter in &filters {
            let tx = tx.clone();
            let subscribe = SubscribeOptions {
                qos: QoS::AtLeastOnce,
                ..SubscribeOptions::default()
            };
            let result = client
                .subscribe_with_options(filter.clone(), subscribe, move |m| {
                    let _ = tx.send(Event::Message(Delivery {
                        topic: m.topic,
                        payload: m.payload,
                        retained: m.retain,
                        correlation_data: m.properties.correlation_data,
                    }));
                })
                .await;
            if let Err(e) = result {
                stopping.store(true, Ordering::SeqCst);
                let _ = tokio::time::timeout(Duration::from_secs(1), client.disconnect()).await;
                return Err(WatchError::Subscribe {
                    broker,
                    filter: filter.clone(),
                    reason: e.to_string(),
                });
            }
        }
        let awtrix = match &options.profile {
            Profile::Generic | Profile::Lametric(_) => None,
            Profile::Awtrix3(clock) => Some((
                options
                    .devices
                    .first()
                    .map_or_else(|| clock.topic.to_string(), ToString::to_string),
                clock.topic.to_string(),
            )),
        };
        // Listening now: say so (and, after a reconnection, again).
        if let Some(a) = &announce {
            rebirth_on_reconnect(&client, a.clone(), stopping.clone(), true).await;
            if let Err(reason) = a.birth(&client).await {
                eprintln!(
                    "cannot say online on {}: {}; watching goes on",
                    terminal::plain(a.topic()),
                    terminal::plain(&reason)
                );
            }
        }
        let stats = announce
            .as_ref()
            .and_then(|a| a.spawn_stats(client.clone()));
        let mut others = Vec::new();
        for other in announcements {
            match presence_only(options, &other, &stopping).await {
                Ok(presence) => others.push((other, presence)),
                Err(e) => {
                    stopping.store(true, Ordering::SeqCst);
                    let _ = tokio::time::timeout(Duration::from_secs(1), client.disconnect()).await;
                    return Err(e);
                }
            }
        }
        let acknowledge = options.acknowledge && awtrix.is_none();
        let acker = acknowledge.then(|| Acker {
            client: client.clone(),
            prefix: options.topic_prefix.clone(),
            in_flight: Arc::new(Semaphore::new(ACKS_IN_FLIGHT)),
            reported: Arc::new(AtomicBool::new(false)),
            stopping: Arc::clone(&stopping),
        });
        Ok(Self {
            acker,
            client,
            events,
            prefix: options.topic_prefix.clone(),
            awtrix,
            filters,
            broker,
            stopping,
            announce,
            others,
            stats,
        })
    }

    /// `watching clocks/commands/+/+ on mqtt://127.0.0.1:1883`: the first line of the plain
    /// output, printed once subscribed so that scripts can wait for it.
    pub fn description(&self) -> String {
        format!("watching {} on {}", self.filters.join(" "), self.broker)
    }

    /// Shows every received command on `out` until `shutdown` resolves (or, for a pipe, until
    /// the reader goes away), then disconnects. Connection losses and recoveries are reported
    /// on stderr (plain and JSON views) or in the header (live view).
    pub async fn run(
        mut self,
        view: View,
        out: &mut (dyn Write + Send),
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), WatchError> {
        let result = self.show(view, out, shutdown).await;
        self.stopping.store(true, Ordering::SeqCst);
        if let Some(stats) = self.stats.take() {
            stats.abort();
        }
        // A clean DISCONNECT does not send the will: say offline first.
        if let Some(a) = &self.announce {
            let _ = a.goodbye(&self.client).await;
        }
        for (a, presence) in &self.others {
            let _ = a.goodbye(presence).await;
            let _ = tokio::time::timeout(Duration::from_secs(2), presence.disconnect()).await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), self.client.disconnect()).await;
        match result {
            // The reader of a pipe has gone (e.g. `| head -3`): that ends watching, quietly.
            Err(WatchError::Output(e)) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
            other => other,
        }
    }

    async fn show(
        &mut self,
        view: View,
        out: &mut (dyn Write + Send),
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), WatchError> {
        tokio::pin!(shutdown);
        let mut clocks = Clocks::default();
        let mut up = true;
        let mut redraw = tokio::time::interval(REDRAW_EVERY);
        redraw.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        if view == View::Live {
            // Hide the cursor and start from a clean screen.
            write!(out, "\x1b[?25l\x1b[2J")?;
        }
        let result = loop {
            let event = tokio::select! {
                () = &mut shutdown => break Ok(()),
                _ = redraw.tick(), if view == View::Live => None,
                event = self.events.recv() => match event {
                    Some(event) => Some(event),
                    None => break Ok(()),
                },
            };
            let step = match event {
                None => Ok(()),
                Some(Event::Message(delivery)) => {
                    self.on_message(view, out, &mut clocks, &delivery)
                }
                Some(Event::Lost(reason)) => {
                    up = false;
                    if view != View::Live {
                        eprintln!(
                            "lost the connection to {}: {}; reconnecting",
                            self.broker,
                            terminal::plain(&reason)
                        );
                    }
                    Ok(())
                }
                Some(Event::Connected) => {
                    if !up && view != View::Live {
                        eprintln!("reconnected to {}", self.broker);
                    }
                    up = true;
                    Ok(())
                }
            };
            if let Err(e) = step {
                break Err(e);
            }
            if view == View::Live
                && let Err(e) = self.draw(out, &mut clocks, up)
            {
                break Err(e);
            }
        };
        if view == View::Live {
            // Show the cursor again, below the view.
            let _ = writeln!(out, "\x1b[?25h");
            let _ = out.flush();
        }
        result.map_err(WatchError::from)
    }

    fn on_message(
        &self,
        view: View,
        out: &mut (dyn Write + Send),
        clocks: &mut Clocks,
        delivery: &Delivery,
    ) -> io::Result<()> {
        let Delivery {
            topic,
            payload,
            retained,
            ..
        } = delivery;
        let received = match &self.awtrix {
            Some((name, base)) => awtrix::parse(name, base, topic, payload, *retained),
            // Devices' answers and presence (this clock's own among them) are not commands.
            None if is_ack_topic(&self.prefix, topic) || is_status_topic(&self.prefix, topic) => {
                return Ok(());
            }
            None => command::parse(&self.prefix, topic, payload, *retained),
        };
        match view {
            View::Json => {
                // Keys in the order docs/clockctl.md gives them, and the payload as published
                // (its keys in its order), or as a JSON string when it is not JSON. Topic and
                // payload are whatever was published: escaped, not raw.
                let topic = terminal::json_value(&serde_json::Value::from(topic.as_str()));
                let payload = terminal::json(&String::from_utf8_lossy(payload));
                writeln!(
                    out,
                    "{{\"topic\":{topic},\"retained\":{retained},\"payload\":{payload}}}"
                )?;
                out.flush()?;
            }
            View::Plain => {
                if let Some(received) = &received {
                    writeln!(out, "{}", received.plain_line())?;
                    out.flush()?;
                }
            }
            View::Live => {
                if let Some(received) = &received {
                    clocks.apply(received, Utc::now());
                }
            }
        }
        // Shown: now answer, as the device would.
        if let (Some(acker), Some(received)) = (&self.acker, &received) {
            acker.acknowledge(received, delivery);
        }
        Ok(())
    }

    fn draw(&self, out: &mut (dyn Write + Send), clocks: &mut Clocks, up: bool) -> io::Result<()> {
        clocks.expire(Utc::now());
        let status = if up {
            "connected"
        } else {
            "connection lost, reconnecting..."
        };
        let mut frame = format!(
            "\x1b[H\x1b[1mvirtual clock\x1b[0m  {}  [{status}]  Ctrl-C to quit\x1b[K\n\x1b[K\n",
            self.description()
        );
        for line in clocks.render(Local::now().fixed_offset()) {
            frame.push_str(&line);
            // Clear what a longer line of the previous frame left behind.
            frame.push_str("\x1b[K\n");
        }
        // And everything below the last line.
        frame.push_str("\x1b[J");
        out.write_all(frame.as_bytes())?;
        out.flush()
    }
}

/// Whether `topic` is a device's presence, `<prefix>/<device>/status` (the watch
/// subscription `<prefix>/+/+` receives those too).
fn is_status_topic(prefix: &str, topic: &str) -> bool {
    topic
        .strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('/'))
        .and_then(|rest| rest.rsplit_once('/'))
        .is_some_and(|(_, last)| last == crate::domain::presence::STATUS_LEVEL)
}

fn describe(reason: &DisconnectReason) -> String {
    match reason {
        DisconnectReason::ClientInitiated => "disconnected".to_owned(),
        DisconnectReason::ServerDisconnect(code) => {
            format!("the broker disconnected us ({code:?})")
        }
        DisconnectReason::NetworkError(e) => format!("network error: {e}"),
        DisconnectReason::ProtocolError(e) => format!("protocol error: {e}"),
        DisconnectReason::KeepAliveTimeout => "no answer to keep-alive pings".to_owned(),
        DisconnectReason::AuthFailure => "re-authentication failed".to_owned(),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls_default_to_port_1883_and_keep_credentials_out_of_the_display() {
        let b = Broker::parse("mqtt://user:p%40ss@broker.local").unwrap();
        assert_eq!(b.display(), "mqtt://broker.local:1883");
        assert_eq!(b.url.username.as_deref(), Some("user"));
        assert_eq!(b.url.password.as_ref().map(Secret::expose), Some("p@ss"));
        assert!(!format!("{b:?}").contains("p@ss"));
        assert_eq!(
            Broker::parse("127.0.0.1:1884").unwrap().display(),
            "mqtt://127.0.0.1:1884"
        );
        assert_eq!(
            Broker::parse("mqtt://[::1]:1885").unwrap().display(),
            "mqtt://[::1]:1885"
        );
        let tls = Broker::parse("mqtts://broker.example").unwrap();
        assert_eq!(tls.display(), "mqtts://broker.example:8883");
        assert_eq!(
            Broker::parse("ssl://[::1]:8884").unwrap().display(),
            "mqtts://[::1]:8884"
        );
        for bad in ["http://h:1", "mqtt://", "mqtt://h/x", "not a url"] {
            assert!(Broker::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_ca_file_is_only_for_mqtts_and_must_hold_certificates() {
        let plain = Broker::parse("mqtt://h").unwrap();
        let err = plain
            .trust_ca_file(Path::new("/nonexistent.pem"))
            .unwrap_err();
        assert!(err.contains("mqtts://"), "{err}");
        let tls = Broker::parse("mqtts://h").unwrap();
        let err = tls
            .clone()
            .trust_ca_file(Path::new("/nonexistent.pem"))
            .unwrap_err();
        assert!(err.contains("/nonexistent.pem"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let not_pem = dir.path().join("ca.pem");
        std::fs::write(&not_pem, "not a certificate").unwrap();
        let err = tls.trust_ca_file(&not_pem).unwrap_err();
        assert!(err.contains("no PEM certificate"), "{err}");
    }

    #[test]
    fn prefixes_are_normalised_like_the_servers() {
        assert_eq!(
            normalize_prefix(" /clocks/commands/ ").unwrap(),
            "clocks/commands"
        );
        assert!(normalize_prefix("//").is_err());
        assert!(normalize_prefix("clocks/+").is_err());
    }

    #[test]
    fn a_clock_watching_every_device_announces_only_the_devices_it_is_told_to() {
        let mut o = WatchOptions {
            broker: Broker::parse(DEFAULT_BROKER_URL).unwrap(),
            devices: vec![],
            announce: vec![],
            topic_prefix: "clocks/commands".into(),
            acknowledge: true,
            profile: Profile::Generic,
        };
        assert!(o.announcements().is_empty());
        o.announce = vec![DeviceId::parse("clock-1").unwrap()];
        let topics: Vec<String> = o
            .announcements()
            .iter()
            .map(|a| a.topic().to_owned())
            .collect();
        assert_eq!(topics, ["clocks/commands/clock-1/status"]);
        // It still shows every device.
        assert_eq!(o.topic_filters(), ["clocks/commands/+/+"]);
        // A device both listed and announced says so once.
        o.devices = vec![
            DeviceId::parse("clock-1").unwrap(),
            DeviceId::parse("hall").unwrap(),
        ];
        let topics: Vec<String> = o
            .announcements()
            .iter()
            .map(|a| a.topic().to_owned())
            .collect();
        assert_eq!(
            topics,
            [
                "clocks/commands/clock-1/status",
                "clocks/commands/hall/status"
            ]
        );
    }

    #[test]
    fn one_filter_per_device_or_one_for_all() {
        let mut o = WatchOptions {
            broker: Broker::parse(DEFAULT_BROKER_URL).unwrap(),
            devices: vec![],
            announce: vec![],
            topic_prefix: "clocks/commands".into(),
            acknowledge: true,
            profile: Profile::Generic,
        };
        assert_eq!(o.topic_filters(), ["clocks/commands/+/+"]);
        o.devices = vec![
            DeviceId::parse("clock-1").unwrap(),
            DeviceId::parse("clock-2").unwrap(),
        ];
        assert_eq!(
            o.topic_filters(),
            ["clocks/commands/clock-1/+", "clocks/commands/clock-2/+"]
        );
        o.profile = Profile::Awtrix3(crate::domain::awtrix3::Awtrix3Device::new(
            awtrix::check_topic("awtrix_a1b2c3").unwrap(),
            None,
        ));
        assert_eq!(
            o.topic_filters(),
            [
                "awtrix_a1b2c3/notify",
                "awtrix_a1b2c3/notify/dismiss",
                "awtrix_a1b2c3/power",
                "awtrix_a1b2c3/settings"
            ]
        );
    }
}
