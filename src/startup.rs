//! Wiring: config -> transports (each wrapped in its metrics decorator) -> state ->
//! listeners. Bind first, then serve until the shutdown future resolves.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::commands::{Commands, Tracking};
use crate::config::{Config, TransportConfig};
use crate::dispatch::Dispatcher;
use crate::domain::DeviceId;
use crate::http::server::{Limits, Timeouts, serve};
use crate::http::{AppState, router};
use crate::metrics::Metrics;
use crate::presence::Presence;
use crate::security::AuthThrottle;
use crate::tls;
use crate::transport::fanout::Fanout;
use crate::transport::lametric::LametricTransport;
use crate::transport::mqtt::MqttTransport;
use crate::transport::rest::RestTransport;
use crate::transport::{Transport, TransportError};

/// Why the application could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("HTTP_ADDR={addr}: cannot listen: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("METRICS_ADDR={addr}: cannot listen: {source}")]
    MetricsBind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Transport(#[from] TransportError),
    /// A device whose alarms the gateway holds, without a store to hold them.
    #[error("{0}")]
    Devices(String),
    #[error("STATE_STORE={kind}: {source}")]
    Store {
        kind: String,
        source: crate::store::StoreError,
    },
}

impl StartupError {
    /// The process exit code: 2 when the configuration points at something unusable (a
    /// state store that cannot be opened, devices without the store they need), as for
    /// an invalid variable; 1 otherwise (a port taken, a broker unreachable, ...).
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Devices(_)
            | Self::Store {
                source: crate::store::StoreError::Open { .. },
                ..
            } => 2,
            _ => 1,
        }
    }
}

/// A bound, ready-to-serve application.
pub struct Application {
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    state: Arc<AppState>,
    timeouts: Timeouts,
    limits: Limits,
    /// The `/metrics` listener, when `METRICS_ADDR` is set.
    metrics_listener: Option<TcpListener>,
}

/// Each enabled transport on its own, in `ENABLED_SENDERS` order, and the MQTT one again
/// with its settings (it also receives the device acknowledgements).
async fn build_transports(
    config: &Config,
) -> Result<
    (
        Vec<Arc<dyn Transport>>,
        Option<MqttAcks>,
        Option<Arc<LametricTransport>>,
    ),
    StartupError,
> {
    let mut transports: Vec<Arc<dyn Transport>> = Vec::new();
    let mut acks = None;
    for transport in config.transports.iter() {
        transports.push(match transport {
            TransportConfig::Mqtt(mqtt) => {
                let connected = MqttTransport::connect(mqtt.clone()).await?;
                acks = Some(MqttAcks {
                    transport: connected.clone(),
                    prefix: mqtt.topic_prefix.clone(),
                    shared_group: mqtt.shared_group.clone(),
                });
                connected
            }
            TransportConfig::Rest(rest) => {
                RestTransport::connect(rest.clone(), config.redactor.clone()).await?
            }
        });
    }
    // LaMetric clocks are reached over their own API, whatever ENABLED_SENDERS says.
    let lametric = LametricTransport::build(&config.devices)?;
    if let Some(lametric) = &lametric {
        transports.push(lametric.clone());
    }
    Ok((transports, acks, lametric))
}

/// Where device acknowledgements come from (SPEC 7.4).
struct MqttAcks {
    transport: Arc<MqttTransport>,
    prefix: String,
    shared_group: Option<String>,
}

/// The subscriptions to what devices send: acknowledgements (SPEC 7.4) for the tracker
/// and for presence, and the presence topics (SPEC 11.1). Presence subscriptions are never
/// shared: every replica learns presence itself. With `MQTT_SHARED_GROUP` the
/// acknowledgements are shared, so presence learns from those this replica receives (a
/// second, unshared subscription to the same topics would hand every message to both
/// callbacks of the client).
fn subscribe_device_messages(acks: &MqttAcks, commands: &Commands, presence: &Arc<Presence>) {
    use crate::transport::mqtt::acks::{ack_filter, parse};
    let seen = {
        let (presence, prefix) = (presence.clone(), acks.prefix.clone());
        move |topic: &str, payload: &[u8]| {
            if let Ok(device) = parse(&prefix, topic, payload)
                .map_err(drop)
                .and_then(|ack| DeviceId::parse(&ack.device_id).map_err(drop))
            {
                presence.acknowledged(&device, Utc::now());
            }
        }
    };
    match commands.start_acks(acks.prefix.clone()) {
        Some(intake) => {
            let filter = ack_filter(&acks.prefix, acks.shared_group.as_deref());
            acks.transport.subscribe(
                filter,
                "device acknowledgements",
                Arc::new(move |topic, payload| {
                    seen(topic, payload);
                    // Screens and queues without waiting (a full queue drops, counted).
                    intake.offer(topic, payload);
                }),
            );
        }
        None => acks.transport.subscribe(
            ack_filter(&acks.prefix, None),
            "device acknowledgements (presence)",
            Arc::new(seen),
        ),
    }
    // After the acknowledgements: they settle commands, presence only informs.
    for filter in presence.topic_filters() {
        let presence = presence.clone();
        acks.transport.subscribe(
            filter,
            "presence",
            Arc::new(move |topic, payload| presence.observe(topic, payload, Utc::now())),
        );
    }
}

/// The store of `STATE_STORE` and its settings, or `None` for `none`; the store is opened
/// here, so a corrupt or unreadable file stops the start with an error naming it.
fn build_tracking(config: &Config) -> Result<Option<Tracking>, StartupError> {
    let tracking = &config.tracking;
    let store = crate::store::open(&tracking.store, tracking.settings).map_err(|source| {
        StartupError::Store {
            kind: tracking.store.to_string(),
            source,
        }
    })?;
    let held: Vec<&str> = config
        .devices
        .with_scheduled_alarms()
        .map(|d| d.as_str())
        .collect();
    // Devices come from DEVICES_FILE, or from the demo, which adds its own in code.
    let listed_by = config.devices_file.as_ref().map_or_else(
        || "the configuration".to_owned(),
        |p| format!("DEVICES_FILE={}", p.display()),
    );
    let Some(store) = store else {
        if !held.is_empty() {
            return Err(StartupError::Devices(format!(
                "{listed_by} lists devices whose alarms the gateway holds until their time ({}), but STATE_STORE=none keeps nothing; use STATE_STORE=file:<path> (or memory)",
                held.join(", ")
            )));
        }
        tracing::info!(
            "STATE_STORE=none: commands are not tracked (no status resource, no Idempotency-Key)"
        );
        return Ok(None);
    };
    if store.durable() {
        tracing::info!(store = %tracking.store, "tracking commands in a durable store");
    } else {
        tracing::info!(
            max_commands = tracking.settings.max_commands,
            "STATE_STORE=memory: command records and Idempotency-Keys are kept in this process only and are lost on restart"
        );
        match &config.devices_file {
            _ if held.is_empty() => {}
            Some(path) => tracing::warn!(
                devices = %held.join(","),
                "DEVICES_FILE={} lists devices whose alarms the gateway holds until their time, and STATE_STORE=memory loses scheduled alarms on restart; set STATE_STORE=file:<path> to keep them",
                path.display()
            ),
            // The demo's clock: it lives as long as the process, by design; nothing to fix.
            None => tracing::info!(
                devices = %held.join(","),
                "scheduled alarms of these devices are held in memory until their time"
            ),
        }
    }
    Ok(Some(Tracking {
        store,
        command_ttl: tracking.command_ttl,
        idempotency_ttl: tracking.idempotency_ttl,
    }))
}

/// Publishes the presence changes that time alone makes (an AWTRIX clock falling silent)
/// once a second, until the server stops.
async fn publish_presence_timeouts(presence: Arc<Presence>, events: Arc<crate::events::Hub>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stopping = events.stopping();
    tokio::pin!(stopping);
    loop {
        tokio::select! {
            () = &mut stopping => return,
            _ = tick.tick() => presence.publish_timeouts(chrono::Utc::now()),
        }
    }
}

/// One transport as is, several behind a fan-out.
fn combine(mut transports: Vec<Arc<dyn Transport>>) -> Arc<dyn Transport> {
    match transports.len() {
        1 => transports.remove(0),
        _ => Arc::new(Fanout::new(transports)),
    }
}

impl Application {
    /// Builds the transports from `config`, then binds.
    pub async fn build(config: Config) -> Result<Self, StartupError> {
        let metrics = Arc::new(Metrics::new());
        // Each transport is measured on its own (latency, outcome, in-flight, readiness),
        // so the decorator goes around each one before the fan-out.
        let (transports, acks, lametric) = build_transports(&config).await?;
        let transports = transports
            .into_iter()
            .map(|t| metrics.instrument(t))
            .collect();
        // The longest one delivery of a held alarm can take: an MQTT publish, or a request to
        // a LaMetric clock (its `timeout_ms`); a claimed alarm is leased longer than that.
        let publish_timeout = config
            .devices
            .iter()
            .filter_map(|(_, profile)| profile.delivery_timeout())
            .chain(config.transports.mqtt().map(|m| m.publish_timeout))
            .max()
            .unwrap_or(Duration::from_secs(5));
        let holds_alarms = config.devices.with_scheduled_alarms().next().is_some();
        let poll_every = config.presence.poll;
        let app = Self::bind(config, combine(transports), metrics).await?;
        let commands = &app.state.commands;
        // Every replica asks its LaMetric clocks itself (SPEC 11.1), until the core stops.
        if let Some(lametric) = &lametric {
            let (lametric, presence) = (lametric.clone(), app.state.presence.clone());
            commands
                .run_in_background(move |stop| lametric.poll_presence(presence, poll_every, stop));
        }
        if holds_alarms {
            commands.start_scheduler(
                acks.as_ref().map(|a| a.transport.clone()),
                lametric,
                publish_timeout,
            );
        }
        if let Some(acks) = acks {
            subscribe_device_messages(&acks, commands, &app.state.presence);
        }
        Ok(app)
    }

    /// Binds with a given transport (tests use this to plug in a fake); it is measured
    /// under its own name.
    pub async fn build_with_transport(
        config: Config,
        transport: Arc<dyn Transport>,
    ) -> Result<Self, StartupError> {
        let metrics = Arc::new(Metrics::new());
        let transport = metrics.instrument(transport);
        Self::bind(config, transport, metrics).await
    }

    async fn bind(
        config: Config,
        transport: Arc<dyn Transport>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, StartupError> {
        let tls = match config.http.tls.listener_files() {
            Some(files) => Some(TlsAcceptor::from(tls::server_config(files)?)),
            None => None,
        };
        let addr = config.http.addr;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| StartupError::Bind { addr, source })?;
        let metrics_listener = match config.metrics_addr {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| StartupError::MetricsBind { addr, source })?,
            ),
            None => None,
        };
        if config.legacy_token {
            tracing::warn!(
                "using the legacy API_AUTH_TOKEN (one token, scope *); prefer API_AUTH_CREDENTIALS with per-caller ids and scopes"
            );
        }
        let events = Arc::new(crate::events::Hub::new(config.events_max_streams));
        let devices = Arc::new(config.devices.clone());
        let prefix = config
            .transports
            .mqtt()
            .map_or("", |m| m.topic_prefix.as_str());
        let presence = Arc::new(Presence::new(
            prefix,
            devices.clone(),
            config.presence.timeout,
        ));
        metrics.watch_presence(presence.clone());
        presence.publish_to(events.clone());
        tokio::spawn(publish_presence_timeouts(presence.clone(), events.clone()));
        let tracking = build_tracking(&config)?;
        #[cfg(feature = "redis-store")]
        if let crate::store::StoreKind::Redis(url) = &config.tracking.store {
            // The URL parsed for the store already; this cannot fail on its form.
            if let Err(e) = crate::events::relay::spawn(&events, url.expose()) {
                tracing::warn!(error_kind = ?e.kind(), "events relay not started: other replicas' events will not be streamed here");
            }
        }
        let schedules = tracking.as_ref().map(|t| {
            let schedules = crate::schedules::Schedules::new(
                t.store.clone(),
                config.tracking.schedules_max_per_device,
                config.tracking.idempotency_ttl,
                metrics.clone(),
            );
            schedules.publish_to(events.clone());
            Arc::new(schedules)
        });
        let commands = Arc::new(
            Commands::new(
                Dispatcher::new(transport),
                devices,
                metrics.clone(),
                tracking,
                events.clone(),
            )
            .hold_for_offline_devices(presence.clone()),
        );
        // Each occurrence becomes an ordinary command through the core (SPEC 12.3).
        if let Some(schedules) = &schedules {
            let (schedules, core) = (schedules.clone(), commands.clone());
            commands.run_in_background(move |stop| schedules.fire_until(core, stop));
        }
        let state = Arc::new(AppState {
            commands,
            credentials: config.credentials.clone(),
            throttle: AuthThrottle::new(config.auth_fail_limit_per_min),
            tls_policy: config.http.tls.clone(),
            readiness_require_auth: config.readiness_require_auth,
            max_body_bytes: config.http.max_body_bytes,
            read_timeout: config.http.read_timeout,
            metrics,
            refusals: Default::default(),
            presence,
            schedules,
            events,
            console: config.console,
        });
        let timeouts = Timeouts {
            read_header: config.http.read_header_timeout,
            write: config.http.write_timeout,
            idle: config.http.idle_timeout,
            shutdown: config.http.shutdown_timeout,
        };
        let limits = Limits {
            max_header_bytes: config.http.max_header_bytes,
            max_connections: config.http.max_connections,
        };
        Ok(Self {
            listener,
            tls,
            state,
            timeouts,
            limits,
            metrics_listener,
        })
    }

    /// The address actually bound (port 0 becomes a real port).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// The address the metrics listener actually bound, when `METRICS_ADDR` is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    /// The core (tests watch its background tasks stop).
    pub fn commands(&self) -> Arc<Commands> {
        self.state.commands.clone()
    }

    /// The application's metrics (what `/metrics` renders).
    pub fn metrics(&self) -> Arc<Metrics> {
        self.state.metrics.clone()
    }

    /// Serves until `shutdown` resolves, drains in-flight requests, then closes the transports.
    /// The metrics listener keeps answering during the drain and stops last.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) {
        let addr = self.local_addr();
        let metrics_task = self.metrics_listener.map(|listener| {
            if let Ok(addr) = listener.local_addr() {
                tracing::info!(%addr, "metrics listening (GET /metrics)");
            }
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let app = self.state.metrics.clone().router();
            let timeouts = Timeouts {
                // A scrape is one small GET; no need to wait long for it at shutdown.
                shutdown: self.timeouts.shutdown.min(Duration::from_secs(1)),
                ..self.timeouts
            };
            // The span tells its connection and shutdown lines apart from the API's.
            // Scrapers are few; the API's cap and header limit are plenty for them.
            let server = serve(listener, None, app, timeouts, self.limits, async move {
                let _ = stopped.await;
            });
            let server = tracing::Instrument::instrument(server, tracing::info_span!("metrics"));
            let task = tokio::spawn(server);
            (stop, task)
        });
        tracing::info!(%addr, tls = self.tls.is_some(), "listening");
        let app = router(self.state.clone());
        let events = self.state.events.clone();
        // Event streams never finish by themselves: they end as the server stops
        // accepting, so they do not hold the drain for its whole grace period.
        let shutdown = async move {
            shutdown.await;
            events.close();
        };
        serve(
            self.listener,
            self.tls,
            app,
            self.timeouts,
            self.limits,
            shutdown,
        )
        .await;
        // Submissions whose callers hung up finish, no alarm is claimed once the API has
        // stopped, those being published settle, every background task ends; then the
        // transports close.
        self.state.commands.stop().await;
        if let Some((stop, task)) = metrics_task {
            let _ = stop.send(());
            let _ = task.await;
        }
        tracing::info!("stopped");
    }
}
