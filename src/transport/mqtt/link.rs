//! The connection to the broker: connecting, tracking whether it is up, and re-establishing
//! it in the background with capped exponential back-off.
//!
//! The `mqtt5` client's own automatic reconnect is switched off: this module owns the loop
//! so that the back-off, the logging and the `MQTT_CONNECT_RETRY=false` behaviour are ours,
//! and so that every connection starts clean (Clean Start 1, no session expiry). A clean
//! start is what makes the "no ghost delivery" promise hold: the client discards whatever
//! was unacknowledged on the old connection instead of re-sending it.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mqtt5::transport::TlsConfig;
use mqtt5::types::ReasonCode;
use mqtt5::{ConnectOptions, ConnectionEvent, DisconnectReason, MqttClient, MqttError};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::CONNECT_TIMEOUT;

/// First pause after a failed attempt; doubled after each further failure.
const BACKOFF_INITIAL: Duration = Duration::from_millis(500);
/// Longest pause between attempts.
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A connection that lasted less than this counts as a failure for the back-off, so a
/// broker that accepts and then drops us at once is not hammered.
const STABLE_AFTER: Duration = Duration::from_secs(5);

/// Where to connect.
pub(super) struct Target {
    /// `mqtt://host:port` / `mqtts://host:port`, without credentials: safe to log.
    pub display: String,
    pub host: String,
    pub port: u16,
    /// `Some` for `mqtts://`.
    pub tls: Option<TlsConfig>,
}

/// State shared with the client's connection-event callback (so it holds no client handle).
struct Shared {
    broker: String,
    client_id: String,
    retry: bool,
    /// Up according to the last connection event. Read by every `/ready` probe.
    up: AtomicBool,
    /// The same, for tasks that wait for a change.
    state: watch::Sender<bool>,
    closing: AtomicBool,
}

impl Shared {
    fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::SeqCst);
        self.state.send_replace(up);
    }

    fn on_event(&self, event: ConnectionEvent) {
        match event {
            ConnectionEvent::Connected { keep_alive, .. } => {
                self.set_up(true);
                tracing::info!(
                    broker = %self.broker,
                    client_id = %self.client_id,
                    keep_alive_secs = keep_alive.as_secs(),
                    "connected to the MQTT broker"
                );
            }
            ConnectionEvent::Disconnected { reason } => {
                self.set_up(false);
                if self.closing.load(Ordering::SeqCst)
                    || matches!(reason, DisconnectReason::ClientInitiated)
                {
                    tracing::info!(broker = %self.broker, "disconnected from the MQTT broker");
                } else if self.retry {
                    tracing::warn!(
                        broker = %self.broker,
                        reason = ?reason,
                        "lost the connection to the MQTT broker; commands fail with 502 until it is back, reconnecting in the background"
                    );
                } else {
                    tracing::error!(
                        broker = %self.broker,
                        reason = ?reason,
                        "lost the connection to the MQTT broker; MQTT_CONNECT_RETRY=false, so it is not re-established: commands fail with 502 and /ready says not_ready until the server is restarted"
                    );
                }
            }
            _ => {}
        }
    }
}

/// One long-lived connection (re-established after losses when retrying is on).
pub(super) struct Link {
    pub client: MqttClient,
    shared: Arc<Shared>,
    target: Target,
    options: ConnectOptions,
    shutdown: watch::Sender<bool>,
    supervisor: Mutex<Option<JoinHandle<()>>>,
    /// The subscriptions asked for (device acknowledgements, presence).
    subscriptions: Mutex<Vec<Subscription>>,
    /// Whether a task is sending the missing SUBSCRIBEs now: one at a time, whatever the
    /// number of `subscribe` calls (10,000 AWTRIX clocks are 20,000 of them at start).
    ensuring: AtomicBool,
}

/// What to do with each message received on one subscription; never blocks the client's
/// reader.
pub type OnMessage = Arc<dyn Fn(&str, &[u8]) + Send + Sync>;

/// One subscription, kept so that it can be (re)sent after a connection.
#[derive(Clone)]
struct Subscription {
    filter: String,
    what: &'static str,
    on_message: OnMessage,
    /// Whether the client holds it (it re-subscribes by itself after a reconnection).
    held: Arc<AtomicBool>,
}

impl Link {
    /// A link that is not connected yet; the client reports connection changes to it.
    pub async fn new(
        target: Target,
        options: ConnectOptions,
        client_id: String,
        retry: bool,
    ) -> Arc<Self> {
        let client = MqttClient::with_options(options.clone());
        let shared = Arc::new(Shared {
            broker: target.display.clone(),
            client_id,
            retry,
            up: AtomicBool::new(false),
            state: watch::Sender::new(false),
            closing: AtomicBool::new(false),
        });
        // Never hold publishes back for a later connection (the client's default with a
        // clean start already; set explicitly because the no-ghost promise rests on it).
        client.set_queue_on_disconnect(false).await;
        let events = shared.clone();
        // Fails only if the callback list is inaccessible, which cannot happen before use.
        let _ = client
            .on_connection_event(move |event| events.on_event(event))
            .await;
        Arc::new(Self {
            client,
            shared,
            target,
            options,
            shutdown: watch::Sender::new(false),
            supervisor: Mutex::new(None),
            subscriptions: Mutex::new(Vec::new()),
            ensuring: AtomicBool::new(false),
        })
    }

    /// Whether publishes can go out now.
    pub fn is_up(&self) -> bool {
        self.shared.up.load(Ordering::SeqCst) && !self.shared.closing.load(Ordering::SeqCst)
    }

    pub fn broker(&self) -> &str {
        &self.target.display
    }

    /// One connection attempt, bounded by [`CONNECT_TIMEOUT`] (the client itself does not
    /// bound the wait for CONNACK).
    pub async fn attempt(&self) -> Result<(), String> {
        match tokio::time::timeout(CONNECT_TIMEOUT, self.connect_once()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(describe(&e)),
            Err(_) => Err(format!("no CONNACK within {} s", CONNECT_TIMEOUT.as_secs())),
        }
    }

    async fn connect_once(&self) -> Result<(), MqttError> {
        match self.connect_once_inner().await {
            // An earlier attempt that timed out may have got through after all.
            Err(MqttError::AlreadyConnected) => Ok(()),
            other => other,
        }
    }

    async fn connect_once_inner(&self) -> Result<(), MqttError> {
        let Some(tls) = &self.target.tls else {
            let host = bracketed(&self.target.host);
            let address = format!("mqtt://{host}:{}", self.target.port);
            return self
                .client
                .connect_with_options(&address, self.options.clone())
                .await
                .map(drop);
        };
        // The TLS path of the client takes a resolved address; try each one in turn.
        let addrs = tokio::net::lookup_host((self.target.host.as_str(), self.target.port))
            .await
            .map_err(|e| {
                MqttError::ConnectionError(format!("cannot resolve {}: {e}", self.target.host))
            })?;
        let mut last = None;
        for addr in addrs {
            let mut config = tls.clone();
            config.addr = addr;
            match self
                .client
                .connect_with_tls_and_options(config, self.options.clone())
                .await
            {
                Ok(_) => return Ok(()),
                // The broker answered: another address of the same broker would say the same.
                Err(e @ MqttError::ConnectionRefused(_)) => return Err(e),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            MqttError::ConnectionError(format!("{} has no address", self.target.host))
        }))
    }

    /// Subscribes to `filter` now if connected, and after every connection that finds it
    /// missing; `what` names it in logs (`device acknowledgements`, `presence`).
    pub fn subscribe(self: &Arc<Self>, filter: String, what: &'static str, on_message: OnMessage) {
        if let Ok(mut all) = self.subscriptions.lock() {
            all.push(Subscription {
                filter,
                what,
                on_message,
                held: Arc::new(AtomicBool::new(false)),
            });
        }
        if self.is_up() && !self.ensuring.swap(true, Ordering::AcqRel) {
            let link = self.clone();
            tokio::spawn(async move {
                loop {
                    let all_held = link.ensure_subscriptions().await;
                    link.ensuring.store(false, Ordering::Release);
                    // One added after this pass took its list: take it too, unless another
                    // pass has started meanwhile. A refused one waits for the next
                    // connection (no retry loop against a broker that says no).
                    if !all_held
                        || !link.has_missing()
                        || link.ensuring.swap(true, Ordering::AcqRel)
                    {
                        break;
                    }
                }
            });
        }
    }

    /// Whether some subscription is not held yet.
    fn has_missing(&self) -> bool {
        self.subscriptions
            .lock()
            .map(|all| all.iter().any(|s| !s.held.load(Ordering::SeqCst)))
            .unwrap_or(false)
    }

    /// Sends the SUBSCRIBE of each subscription the client does not hold yet; whether
    /// every one was taken.
    async fn ensure_subscriptions(&self) -> bool {
        let missing: Vec<Subscription> = self
            .subscriptions
            .lock()
            .map(|all| {
                all.iter()
                    .filter(|s| !s.held.load(Ordering::SeqCst))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        let mut logged = std::collections::HashSet::new();
        let mut all_held = true;
        for sub in missing {
            if sub.held.swap(true, Ordering::SeqCst) {
                continue;
            }
            let options = mqtt5::SubscribeOptions {
                qos: mqtt5::QoS::AtLeastOnce,
                ..mqtt5::SubscribeOptions::default()
            };
            let on_message = sub.on_message.clone();
            let callback = move |message: mqtt5::types::Message| {
                on_message(&message.topic, &message.payload);
            };
            match self
                .client
                .subscribe_with_options(sub.filter.clone(), options, callback)
                .await
            {
                Ok(_) => {
                    // One line per kind, not per AWTRIX clock.
                    if logged.insert(sub.what) {
                        tracing::info!(filter = %sub.filter, "subscribed to {}", sub.what);
                    }
                }
                Err(e) => {
                    all_held = false;
                    sub.held.store(false, Ordering::SeqCst);
                    tracing::warn!(filter = %sub.filter, error = %e, "cannot subscribe to {}; retrying after the next reconnection", sub.what);
                }
            }
        }
        all_held
    }

    /// Keeps the connection up in the background until [`Link::shutdown`].
    pub fn spawn_supervisor(self: &Arc<Self>) {
        let link = self.clone();
        let handle = tokio::spawn(async move { link.supervise().await });
        if let Ok(mut slot) = self.supervisor.lock() {
            *slot = Some(handle);
        }
    }

    async fn supervise(&self) {
        let mut shutdown = self.shutdown.subscribe();
        let mut failures: u32 = 0;
        loop {
            if *shutdown.borrow() {
                return;
            }
            let delay = match self.attempt().await {
                Ok(()) => {
                    self.ensure_subscriptions().await;
                    let since = Instant::now();
                    let mut state = self.shared.state.subscribe();
                    tokio::select! {
                        _ = state.wait_for(|up| !*up) => {}
                        _ = shutdown.wait_for(|stop| *stop) => return,
                    }
                    if since.elapsed() >= STABLE_AFTER {
                        failures = 0;
                        continue;
                    }
                    failures = failures.saturating_add(1);
                    backoff(failures)
                }
                Err(error) => {
                    failures = failures.saturating_add(1);
                    let delay = backoff(failures);
                    tracing::warn!(
                        broker = %self.target.display,
                        attempt = failures,
                        retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                        "cannot connect to the MQTT broker: {error}"
                    );
                    delay
                }
            };
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
        }
    }

    /// From now on publishes are refused and readiness is off; in-flight ones go on.
    pub fn begin_close(&self) {
        self.shared.closing.store(true, Ordering::SeqCst);
    }

    /// Stops reconnecting and sends DISCONNECT.
    pub async fn shutdown(&self) {
        self.shared.closing.store(true, Ordering::SeqCst);
        self.shutdown.send_replace(true);
        let supervisor = self.supervisor.lock().ok().and_then(|mut s| s.take());
        if let Some(mut handle) = supervisor {
            // It returns at once unless a connection attempt is under way; do not wait for that.
            if tokio::time::timeout(Duration::from_millis(200), &mut handle)
                .await
                .is_err()
            {
                handle.abort();
                let _ = handle.await;
            }
        }
        match tokio::time::timeout(Duration::from_secs(2), self.client.disconnect()).await {
            Ok(Ok(()) | Err(MqttError::NotConnected)) => {}
            Ok(Err(e)) => tracing::debug!(error = %e, "MQTT disconnect"),
            Err(_) => tracing::warn!(broker = %self.target.display, "MQTT DISCONNECT timed out"),
        }
        self.shared.set_up(false);
    }

    /// Stops the background work without waiting (the transport was dropped unclosed).
    pub fn abandon(&self) {
        self.shared.closing.store(true, Ordering::SeqCst);
        self.shutdown.send_replace(true);
        if let Some(handle) = self.supervisor.lock().ok().and_then(|mut s| s.take()) {
            handle.abort();
        }
    }
}

/// `[::1]` for IPv6 literals, as a URL needs.
pub(super) fn bracketed(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

/// The pause before attempt `failures + 1`: exponential, capped, with ±20 % jitter so that
/// many servers do not reconnect in lock-step after a broker restart.
fn backoff(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    let base = BACKOFF_INITIAL.saturating_mul(1 << exp).min(BACKOFF_MAX);
    let random = RandomState::new().build_hasher().finish();
    // 0.8 ..= 1.2
    let factor = 0.8 + (random % 401) as f64 / 1000.0;
    base.mul_f64(factor).min(BACKOFF_MAX)
}

/// A connection error with a hint on what to change. Never contains the password.
fn describe(e: &MqttError) -> String {
    let text = e.to_string();
    let hint = match e {
        MqttError::ConnectionRefused(ReasonCode::BadUsernameOrPassword) => {
            "; check MQTT_USERNAME and MQTT_PASSWORD"
        }
        MqttError::ConnectionRefused(ReasonCode::NotAuthorized) => {
            "; the broker does not let this client in: check MQTT_USERNAME, MQTT_PASSWORD, the client certificate and the broker's ACL"
        }
        MqttError::ConnectionRefused(ReasonCode::ClientIdentifierNotValid) => {
            "; check MQTT_CLIENT_ID"
        }
        _ if text.contains("UnknownIssuer") || text.contains("invalid peer certificate") => {
            "; the broker's certificate is not trusted: set MQTT_CA_FILE to the CA that signed it"
        }
        _ if text.contains("CertificateRequired") || text.contains("HandshakeFailure") => {
            "; the broker may require a client certificate: set MQTT_CLIENT_CERT_FILE and MQTT_CLIENT_KEY_FILE"
        }
        _ => "",
    };
    format!("{text}{hint}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_exponentially_and_is_capped() {
        for _ in 0..50 {
            let first = backoff(1);
            assert!(first >= Duration::from_millis(400) && first <= Duration::from_millis(600));
            let fourth = backoff(4);
            assert!(fourth >= Duration::from_millis(3200) && fourth <= Duration::from_millis(4800));
            assert!(backoff(40) <= BACKOFF_MAX);
            assert!(backoff(40) >= BACKOFF_MAX.mul_f64(0.8));
        }
    }

    #[test]
    fn ipv6_hosts_are_bracketed_in_addresses() {
        assert_eq!(bracketed("::1"), "[::1]");
        assert_eq!(bracketed("broker.local"), "broker.local");
    }

    #[test]
    fn refused_credentials_get_a_hint_naming_the_variables() {
        let text = describe(&MqttError::ConnectionRefused(
            ReasonCode::BadUsernameOrPassword,
        ));
        assert!(text.contains("MQTT_PASSWORD"), "{text}");
    }
}
