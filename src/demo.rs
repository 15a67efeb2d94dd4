//! `clock-server demo`: everything a newcomer needs in one process, on loopback only — an
//! MQTT broker (in memory, anonymous), the API over plain HTTP with the well-known
//! credential `demo|dev-token|*`, and three virtual clocks ([`crate::clock`]) printing what
//! they receive: a generic one for every device id, [`AWTRIX_DEVICE`], an AWTRIX 3 clock
//! (SPEC 8.2) whose alarms the gateway holds until their time, and [`LAMETRIC_DEVICE`], a
//! LaMetric TIME reached over its HTTP API on a free loopback port (SPEC 8.3).
//!
//! The API is the real one: the configuration is built by [`Config::from_lookup`] from demo
//! values and served by [`Application`], exactly as `clock-server` does from the
//! environment. Only the broker is extra; it sits behind the cargo feature `demo` (on by
//! default) so that production builds (`--no-default-features`) do not carry it.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use crate::config::{Config, LogFormat};
use crate::domain::awtrix3::{Awtrix3Device, AwtrixTopic, Rtttl};
use crate::domain::lametric::{AlarmSound, CertCheck, DEFAULT_TIMEOUT, DeviceUrl, LametricDevice};
use crate::domain::{DeviceId, Profile};
use crate::shared::Secret;

/// The demo's bearer token. Well known on purpose: the demo binds loopback only.
pub const DEMO_TOKEN: &str = "dev-token";
/// The demo's one credential: id `demo`, token [`DEMO_TOKEN`], every device.
pub const DEMO_CREDENTIALS: &str = "demo|dev-token|*";
/// The generic device the demo's examples use. Its virtual clock shows every device id but
/// announces this one (a retained `online` on its status topic, SPEC 11.1), so that
/// `GET /devices` lists it `online` from the start; with `--devices` it announces those.
pub const GENERIC_DEVICE: &str = "clock-1";
/// The demo's virtual AWTRIX 3 clock (profile `awtrix3`), as if `DEVICES_FILE` listed it.
pub const AWTRIX_DEVICE: &str = "awtrix-1";
/// Its MQTT prefix (a real clock's looks like `awtrix_a1b2c3`).
pub const AWTRIX_TOPIC: &str = "awtrix_demo";
/// The melody its alarms play (`alarm_rtttl`).
pub const AWTRIX_RTTTL: &str = "alarm:d=8,o=5,b=140:c6,p,c6,p,c6";

/// The demo's virtual LaMetric TIME (profile `lametric`), as if `DEVICES_FILE` listed it
/// with `url = "http://127.0.0.1:<its port>"`.
pub const LAMETRIC_DEVICE: &str = "lametric-1";
/// Its API key. Well known on purpose, like [`DEMO_TOKEN`]: it listens on loopback only.
pub const LAMETRIC_KEY: &str = "demo-lametric-key";

/// The virtual LaMetric's id and profile for a clock listening on `addr` (plain HTTP, the
/// default alarm sound and timeout).
pub fn lametric_device(addr: SocketAddr) -> Result<(DeviceId, Profile), String> {
    let id = DeviceId::parse(LAMETRIC_DEVICE).map_err(|e| format!("{LAMETRIC_DEVICE}: {e}"))?;
    let url = format!("http://{addr}");
    let url = DeviceUrl::parse(&url).map_err(|e| format!("{url}: {e}"))?;
    Ok((
        id,
        Profile::Lametric(LametricDevice {
            url,
            api_key: Secret::new(LAMETRIC_KEY),
            tls: CertCheck::PlainHttp,
            alarm_sound: AlarmSound::DEFAULT,
            timeout: DEFAULT_TIMEOUT,
        }),
    ))
}

/// The virtual AWTRIX's id and profile, as `DEVICES_FILE` would give them. (Constants: the
/// error cannot happen, and a test keeps it so.)
pub fn awtrix_device() -> Result<(DeviceId, Profile), String> {
    let id = DeviceId::parse(AWTRIX_DEVICE).map_err(|e| format!("{AWTRIX_DEVICE}: {e}"))?;
    let topic = AwtrixTopic::parse(AWTRIX_TOPIC).map_err(|e| format!("{AWTRIX_TOPIC}: {e}"))?;
    let melody = Rtttl::parse(AWTRIX_RTTTL).map_err(|e| format!("{AWTRIX_RTTTL}: {e}"))?;
    let clock = Awtrix3Device::new(topic, Some(melody));
    Ok((id, Profile::Awtrix3(clock)))
}

/// Log filter when neither `LOG_LEVEL` nor `RUST_LOG` is set: the server's own lines
/// (start-up, one audit record per command), only warnings from the broker and MQTT client.
pub const DEFAULT_LOG_FILTER: &str = "warn,clock_server=info,audit=info";

/// `clock-server demo`'s flags.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Where the embedded MQTT broker listens; loopback only
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:1883")]
    pub mqtt_addr: String,
    /// Where the API listens (plain HTTP); loopback only
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub http_addr: String,
    /// Device ids the virtual clock shows (comma-separated); default: every device
    #[arg(long, value_name = "ID,...", value_delimiter = ',')]
    pub devices: Vec<String>,
}

/// Why the demo did not start.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// Bad flags or environment (exit 2).
    #[error("{0}")]
    Usage(String),
    /// This binary was built without the `demo` feature (exit 2).
    #[error(
        "this clock-server was built without the `demo` feature (a production build), so it \
         has no embedded broker; build it with the default features, e.g. `cargo run -- demo`"
    )]
    NotBuilt,
    /// A listener or the virtual clock could not start (exit 1).
    #[error("{0}")]
    Start(String),
}

impl DemoError {
    /// 2 for usage problems, 1 when something could not start.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Usage(_) | Self::NotBuilt => 2,
            Self::Start(_) => 1,
        }
    }
}

/// A checked demo set-up: loopback addresses, devices, logging. Nothing is bound yet.
#[derive(Debug, Clone)]
// Without the `demo` feature only the checks run; the addresses are then unused.
#[cfg_attr(not(feature = "demo"), allow(dead_code))]
pub struct Demo {
    mqtt_addr: SocketAddr,
    http_addr: SocketAddr,
    devices: Vec<DeviceId>,
    log_format: LogFormat,
    log_level: Option<String>,
}

impl Demo {
    /// Checks the flags; reads `LOG_LEVEL` and `LOG_FORMAT` (and `RUST_LOG`) through `env`.
    /// Every other setting is the demo's own.
    pub fn prepare(
        args: &DemoArgs,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, DemoError> {
        let mqtt_addr = loopback_addr("--mqtt-addr", &args.mqtt_addr)?;
        let http_addr = loopback_addr("--http-addr", &args.http_addr)?;
        let mut devices = Vec::new();
        for raw in args.devices.iter().filter(|d| !d.trim().is_empty()) {
            let id = DeviceId::parse(raw).map_err(|e| {
                DemoError::Usage(format!(
                    "invalid --devices entry {raw:?}: {e}; pass ids like clock-1,clock-2"
                ))
            })?;
            if !devices.contains(&id) {
                devices.push(id);
            }
        }
        // A dry run of the real configuration, so a bad LOG_LEVEL/LOG_FORMAT stops us here.
        let lametric_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        let config = demo_config(http_addr, mqtt_addr, lametric_addr, &env)
            .map_err(|e| DemoError::Usage(e.0.join("; ")))?;
        let log_level = config.log_level;
        Ok(Self {
            mqtt_addr,
            http_addr,
            devices,
            log_format: config.log_format,
            log_level,
        })
    }

    /// `LOG_FORMAT`, default text.
    pub fn log_format(&self) -> LogFormat {
        self.log_format
    }

    /// `LOG_LEVEL`, else `RUST_LOG`, else [`DEFAULT_LOG_FILTER`].
    pub fn log_filter(&self) -> String {
        self.log_level
            .clone()
            .unwrap_or_else(|| DEFAULT_LOG_FILTER.to_owned())
    }
}

/// The configuration the demo serves with: what `clock-server` would read from these
/// environment variables, and the demo's two listed clocks (the virtual LaMetric at
/// `lametric_addr`). `LOG_LEVEL`, `RUST_LOG` and `LOG_FORMAT` come from `env`.
pub fn demo_config(
    http_addr: SocketAddr,
    mqtt_addr: SocketAddr,
    lametric_addr: SocketAddr,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Config, crate::config::ConfigError> {
    let vars = demo_vars(http_addr, mqtt_addr);
    let mut config = Config::from_lookup(|name| match name {
        "LOG_LEVEL" | "RUST_LOG" | "LOG_FORMAT" => env(name),
        _ => vars
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.clone()),
    })?;
    // What a DEVICES_FILE with `[devices.awtrix-1] profile = "awtrix3"` would add, without
    // writing a file.
    let (id, profile) = awtrix_device().map_err(|e| crate::config::ConfigError(vec![e]))?;
    config.devices.insert(id, profile);
    let (id, profile) =
        lametric_device(lametric_addr).map_err(|e| crate::config::ConfigError(vec![e]))?;
    config.devices.insert(id, profile);
    Ok(config)
}

/// The demo's settings as environment variables.
pub fn demo_vars(http_addr: SocketAddr, mqtt_addr: SocketAddr) -> Vec<(&'static str, String)> {
    vec![
        ("HTTP_ADDR", http_addr.to_string()),
        // Plain HTTP is acceptable only because the listener is loopback (checked before).
        ("REQUIRE_TLS", "false".to_owned()),
        ("READINESS_REQUIRE_AUTH", "false".to_owned()),
        ("API_AUTH_CREDENTIALS", DEMO_CREDENTIALS.to_owned()),
        ("ENABLED_SENDERS", "mqtt".to_owned()),
        ("MQTT_BROKER_URL", format!("mqtt://{mqtt_addr}")),
        ("ALLOW_INSECURE_MQTT", "true".to_owned()),
    ]
}

/// A loopback socket address from a flag: `127.0.0.1:8080`, `[::1]:8080`, `localhost:8080`.
/// Anything else is refused: the demo's token is public.
pub fn loopback_addr(flag: &str, raw: &str) -> Result<SocketAddr, DemoError> {
    let raw = raw.trim();
    let addr = match raw.parse::<SocketAddr>() {
        Ok(addr) => addr,
        Err(_) => match raw.rsplit_once(':') {
            Some((host, port)) if host.eq_ignore_ascii_case("localhost") => {
                let port = port.parse::<u16>().map_err(|_| {
                    DemoError::Usage(format!("{flag} {raw:?}: the port is not a number 0-65535"))
                })?;
                SocketAddr::from((Ipv4Addr::LOCALHOST, port))
            }
            _ => {
                return Err(DemoError::Usage(format!(
                    "{flag} {raw:?} is not an address: use 127.0.0.1:<port> or [::1]:<port>"
                )));
            }
        },
    };
    if !addr.ip().is_loopback() {
        return Err(DemoError::Usage(format!(
            "{flag} {addr} is not a loopback address: the demo serves plain HTTP with the \
             well-known token {DEMO_TOKEN} and an anonymous broker, so it listens on loopback \
             only (127.0.0.1:<port> or [::1]:<port>). To serve other machines, run clock-server \
             without `demo`, configured by environment variables (docs/configuration.md)."
        )));
    }
    Ok(addr)
}

/// How to run `clockctl` from here: under `cargo run` (which sets `CARGO_MANIFEST_DIR`),
/// `cargo run --bin clockctl --`, which builds it if needed (`cargo run` builds only this
/// binary); else the binary next to this one, relative to the working directory when it is
/// below it; else plain `clockctl`.
#[cfg_attr(not(feature = "demo"), allow(dead_code))]
fn clockctl_command() -> String {
    if std::env::var_os("CARGO_MANIFEST_DIR").is_some() {
        return "cargo run --bin clockctl --".to_owned();
    }
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.join("clockctl")))
        .filter(|p| p.is_file());
    let Some(path) = beside else {
        return "clockctl".to_owned();
    };
    let shown: PathBuf = std::env::current_dir()
        .ok()
        .and_then(|cwd| path.strip_prefix(cwd).ok().map(PathBuf::from))
        .unwrap_or(path);
    shown.display().to_string()
}

/// The start-up banner: what runs where, the token and that it is for local use only, and
/// the commands to try (among them an alarm a minute ahead on the virtual AWTRIX, and a
/// recurring one, SPEC 12).
pub fn banner(
    http_addr: SocketAddr,
    mqtt_addr: SocketAddr,
    devices: &[DeviceId],
    clockctl: &str,
) -> String {
    let rule = "=".repeat(78);
    let device = devices.first().map_or(GENERIC_DEVICE, DeviceId::as_str);
    let clocks = if devices.is_empty() {
        format!(
            "one virtual clock for every device id (generic profile; {GENERIC_DEVICE} says it \
             is online)"
        )
    } else {
        let ids: Vec<&str> = devices.iter().map(DeviceId::as_str).collect();
        format!("virtual clock for {} (generic profile)", ids.join(", "))
    };
    let base_url = if http_addr == SocketAddr::from((Ipv4Addr::LOCALHOST, 8080))
        || http_addr == SocketAddr::from((IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]), 8080))
    {
        String::new()
    } else {
        format!("CLOCK_SERVER_BASE_URL=http://{http_addr} ")
    };
    let broker_flag = if mqtt_addr == SocketAddr::from((Ipv4Addr::LOCALHOST, 1883)) {
        String::new()
    } else {
        format!(" --broker mqtt://{mqtt_addr}")
    };
    let env = format!("{base_url}CLOCK_SERVER_TOKEN={DEMO_TOKEN}");
    format!(
        "{rule}
 clock-server DEMO -- FOR LOCAL USE ONLY: plain HTTP, a public token, no broker auth
   API     http://{http_addr}   (loopback only)
   console http://{http_addr}/console   (open it in a browser; sign in with the token)
   token   {DEMO_TOKEN}   (credential {DEMO_CREDENTIALS}: every device)
   broker  mqtt://{mqtt_addr}   (embedded, anonymous, in memory)
   clocks  {clocks}, and
           {AWTRIX_DEVICE}, a virtual AWTRIX 3 clock (profile awtrix3, MQTT prefix {AWTRIX_TOPIC}), and
           {LAMETRIC_DEVICE}, a virtual LaMetric TIME (profile lametric, its HTTP API, key {LAMETRIC_KEY});
           their lines follow below
 Try in a second terminal:
   {env} {clockctl} message --device {device} --message hello
 On the LaMetric, whose answer ends the command (succeeded):
   {env} {clockctl} message --device {LAMETRIC_DEVICE} --message hello --wait
 An alarm a minute from now on the AWTRIX (the server holds it until then):
   {env} {clockctl} alarm --device {AWTRIX_DEVICE} --label \"wake up\" --time $(date -u -d '+1 min' +%Y-%m-%dT%H:%M:%SZ)
 A recurring alarm, every weekday at 06:30 in this machine's time zone (--tz to choose one):
   {env} {clockctl} schedule add --device {device} --time 06:30 --days weekdays --label work
   {env} {clockctl} schedule list
 Watch the clocks live in a third:
   {clockctl} watch{broker_flag}
   {clockctl} watch{broker_flag} --device {AWTRIX_DEVICE} --profile awtrix3 --topic {AWTRIX_TOPIC}
 Ctrl-C stops the demo.
{rule}"
    )
}

#[cfg(feature = "demo")]
mod running {
    use std::future::Future;
    use std::io::Write;
    use std::net::SocketAddr;
    use std::time::{Duration, Instant};

    use mqtt5::broker::config::{AuthConfig, StorageBackend, StorageConfig};
    use mqtt5::broker::{BrokerConfig, MqttBroker};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::sync::watch;

    use super::{
        Demo, DemoError, GENERIC_DEVICE, LAMETRIC_DEVICE, LAMETRIC_KEY, awtrix_device, banner,
        clockctl_command, demo_config,
    };
    use crate::clock::lametric::{LametricOptions, VirtualLametric};
    use crate::clock::watch::Broker;
    use crate::clock::{View, WatchOptions, Watcher};
    use crate::domain::{DeviceId, Profile};
    use crate::startup::Application;

    /// How long the API may take to report ready before the banner is shown anyway.
    const READY_WITHIN: Duration = Duration::from_secs(10);

    impl Demo {
        /// Starts the broker, the API and the virtual clock; prints the banner and then the
        /// clock's lines on stdout; stops everything when `shutdown` resolves (the API drains
        /// first, then the clock, then the broker).
        pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), DemoError> {
            let (mut broker, mqtt_addr) = self.start_broker().await?;
            let broker_stop = broker.shutdown_handle();
            let mut broker_ready = broker.ready_receiver();
            let broker_task = tokio::spawn(async move { broker.run().await });
            let result = self.serve(mqtt_addr, &mut broker_ready, shutdown).await;
            broker_stop.shutdown();
            match tokio::time::timeout(Duration::from_secs(5), broker_task).await {
                Ok(Ok(Err(e))) => tracing::warn!(error = %e, "embedded MQTT broker"),
                Err(_) => tracing::warn!("the embedded MQTT broker did not stop within 5 s"),
                _ => {}
            }
            result
        }

        async fn start_broker(&self) -> Result<(MqttBroker, SocketAddr), DemoError> {
            let config = BrokerConfig::default()
                // Only this address: the default also listens on every interface.
                .with_bind_address(self.mqtt_addr)
                .with_auth(AuthConfig {
                    allow_anonymous: true,
                    ..AuthConfig::default()
                })
                // Nothing on disk: sessions and queues live in memory, for this run only.
                .with_storage(
                    StorageConfig::new()
                        .with_backend(StorageBackend::Memory)
                        .with_persistence(false),
                )
                .with_sys_topics_enabled(false);
            let broker = MqttBroker::with_config(config).await.map_err(|e| {
                DemoError::Start(format!(
                    "cannot start the embedded MQTT broker on {}: {e}; is another broker \
                     (Mosquitto?) using that port? Pick another with --mqtt-addr 127.0.0.1:<port>",
                    self.mqtt_addr
                ))
            })?;
            let addr = broker.local_addr().unwrap_or(self.mqtt_addr);
            Ok((broker, addr))
        }

        async fn serve(
            &self,
            mqtt_addr: SocketAddr,
            broker_ready: &mut watch::Receiver<bool>,
            shutdown: impl Future<Output = ()>,
        ) -> Result<(), DemoError> {
            if tokio::time::timeout(Duration::from_secs(5), broker_ready.wait_for(|r| *r))
                .await
                .is_err()
            {
                return Err(DemoError::Start(
                    "the embedded MQTT broker did not start within 5 s".to_owned(),
                ));
            }
            // The LaMetric listens first: the devices know its address.
            let lametric = VirtualLametric::bind(&LametricOptions {
                listen: SocketAddr::new(self.http_addr.ip(), 0),
                name: LAMETRIC_DEVICE.to_owned(),
                api_key: crate::shared::Secret::new(LAMETRIC_KEY),
            })
            .await
            .map_err(|e| DemoError::Start(format!("virtual LaMetric: cannot listen: {e}")))?;
            let config = demo_config(
                self.http_addr,
                mqtt_addr,
                lametric.local_addr(),
                crate::shared::process_env,
            )
            .map_err(|e| DemoError::Start(e.0.join("; ")))?;
            tracing::warn!(
                "demo mode: plain HTTP, the public token {}, an anonymous broker; for local use only",
                super::DEMO_TOKEN
            );
            let app = Application::build(config).await.map_err(|e| {
                DemoError::Start(format!(
                    "cannot start the API: {e}; is something else listening there? Pick \
                     another address with --http-addr 127.0.0.1:<port>"
                ))
            })?;
            let http_addr = app.local_addr();

            let broker = Broker::parse(&format!("mqtt://{mqtt_addr}")).map_err(DemoError::Start)?;
            // Watching every device, the clock has no id to announce: it announces the one
            // the banner's examples use. Listed devices announce themselves.
            let announce = if self.devices.is_empty() {
                let id = DeviceId::parse(GENERIC_DEVICE)
                    .map_err(|e| DemoError::Start(format!("{GENERIC_DEVICE}: {e}")))?;
                vec![id]
            } else {
                Vec::new()
            };
            let generic = WatchOptions {
                broker: broker.clone(),
                devices: self.devices.clone(),
                announce,
                topic_prefix: crate::clock::watch::DEFAULT_TOPIC_PREFIX.to_owned(),
                // The demo's clock answers like a device, so `clockctl ... --wait` ends.
                acknowledge: true,
                profile: Profile::Generic,
            };
            let (awtrix_id, awtrix_profile) = awtrix_device().map_err(DemoError::Start)?;
            let awtrix = WatchOptions {
                broker,
                devices: vec![awtrix_id],
                announce: Vec::new(),
                profile: awtrix_profile,
                acknowledge: false,
                ..generic.clone()
            };
            let mut watchers = Vec::new();
            for options in [generic, awtrix] {
                let watcher = Watcher::connect(&options)
                    .await
                    .map_err(|e| DemoError::Start(format!("virtual clock: {e}")))?;
                watchers.push(watcher);
            }

            let (stop, stopped) = watch::channel(false);
            let wait = |mut rx: watch::Receiver<bool>| async move {
                let _ = rx.wait_for(|s| *s).await;
            };
            let mut server = tokio::spawn(app.run_until_stopped(wait(stopped.clone())));
            if !wait_until_ready(http_addr).await {
                tracing::warn!(
                    "the API is not ready after {} s; commands fail with 502 until it is",
                    READY_WITHIN.as_secs()
                );
            }

            let mut stdout = std::io::stdout();
            let mut intro = banner(http_addr, mqtt_addr, &self.devices, &clockctl_command());
            for watcher in &watchers {
                intro.push('\n');
                intro.push_str(&watcher.description());
            }
            intro.push('\n');
            intro.push_str(&lametric.description());
            if let Err(e) = writeln!(stdout, "{intro}").and_then(|()| stdout.flush()) {
                tracing::warn!(error = %e, "cannot write to stdout");
            }
            // All print whole lines to stdout (each line one locked write).
            let mut clocks: Vec<_> = watchers
                .into_iter()
                .map(|watcher| {
                    let clock_stopped = stopped.clone();
                    tokio::spawn(async move {
                        let mut out = std::io::stdout();
                        watcher
                            .run(View::Plain, &mut out, wait(clock_stopped))
                            .await
                    })
                })
                .collect();
            let lametric_stopped = stopped.clone();
            let lametric = tokio::spawn(async move {
                let mut out = std::io::stdout();
                lametric
                    .run(View::Plain, &mut out, wait(lametric_stopped))
                    .await
            });

            tokio::select! {
                () = shutdown => {}
                // The server only returns by itself if it failed; stop the rest too.
                _ = &mut server => tracing::error!("the API stopped unexpectedly"),
            }
            let _ = stop.send(true);
            let _ = server.await;
            for clock in clocks.drain(..) {
                match clock.await {
                    Ok(Err(e)) => tracing::warn!(error = %e, "virtual clock"),
                    Err(e) => tracing::warn!(error = %e, "virtual clock task"),
                    Ok(Ok(())) => {}
                }
            }
            match lametric.await {
                Ok(Err(e)) => tracing::warn!(error = %e, "virtual LaMetric"),
                Err(e) => tracing::warn!(error = %e, "virtual LaMetric task"),
                Ok(Ok(())) => {}
            }
            Ok(())
        }
    }

    /// Polls `GET /ready` (public in the demo) until it answers 200, for at most
    /// [`READY_WITHIN`].
    async fn wait_until_ready(addr: SocketAddr) -> bool {
        let deadline = Instant::now() + READY_WITHIN;
        while Instant::now() < deadline {
            if ready_once(addr).await {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    async fn ready_once(addr: SocketAddr) -> bool {
        let attempt = async {
            let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
            stream
                .write_all(b"GET /ready HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .await
                .ok()?;
            let mut head = [0u8; 12];
            stream.read_exact(&mut head).await.ok()?;
            Some(head.starts_with(b"HTTP/1.1 200"))
        };
        tokio::time::timeout(Duration::from_secs(1), attempt)
            .await
            .ok()
            .flatten()
            .unwrap_or(false)
    }
}

#[cfg(not(feature = "demo"))]
impl Demo {
    /// Without the `demo` feature there is no embedded broker: always [`DemoError::NotBuilt`].
    pub async fn run(
        self,
        _shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), DemoError> {
        Err(DemoError::NotBuilt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(http: &str, mqtt: &str, devices: &[&str]) -> DemoArgs {
        DemoArgs {
            http_addr: http.to_owned(),
            mqtt_addr: mqtt.to_owned(),
            devices: devices.iter().map(|d| (*d).to_owned()).collect(),
        }
    }

    #[test]
    fn only_loopback_addresses_are_accepted() {
        for ok in ["127.0.0.1:0", "[::1]:8080", "localhost:9", "127.1.2.3:80"] {
            assert!(loopback_addr("--http-addr", ok).is_ok(), "{ok}");
        }
        for bad in ["0.0.0.0:0", "[::]:8080", "192.168.1.2:80", ":8080"] {
            let err = loopback_addr("--http-addr", bad).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad}");
            assert!(err.to_string().contains("--http-addr"), "{err}");
        }
        let err = loopback_addr("--mqtt-addr", "0.0.0.0:1883").unwrap_err();
        assert!(err.to_string().contains("not a loopback address"), "{err}");
    }

    #[test]
    fn the_demo_configuration_is_the_real_one_with_demo_values() {
        let http = SocketAddr::from(([127, 0, 0, 1], 8080));
        let mqtt = SocketAddr::from(([127, 0, 0, 1], 1883));
        let lametric = SocketAddr::from(([127, 0, 0, 1], 18081));
        let config = demo_config(http, mqtt, lametric, |_| None).unwrap();
        assert_eq!(config.http.addr, http);
        assert!(!config.readiness_require_auth);
        assert_eq!(
            config.http.tls,
            crate::config::TlsPolicy::Optional { listener: None }
        );
        assert_eq!(config.credentials.len(), 1);
        let mqtt = config.transports.mqtt().cloned().unwrap();
        assert_eq!((mqtt.host.as_str(), mqtt.port), ("127.0.0.1", 1883));
        assert!(config.transports.rest().is_none());
        // awtrix-1 as a DEVICES_FILE would list it; every other device stays generic.
        let awtrix = config
            .devices
            .profile(&DeviceId::parse("awtrix-1").unwrap());
        assert_eq!(awtrix, &awtrix_device().unwrap().1);
        let Profile::Awtrix3(clock) = awtrix else {
            panic!("{awtrix:?}")
        };
        assert_eq!(clock.topic.as_str(), "awtrix_demo");
        assert_eq!(clock.melody(), AWTRIX_RTTTL);
        assert_eq!(
            config.devices.profile(&DeviceId::parse("clock-1").unwrap()),
            &Profile::Generic
        );
        // lametric-1 as `url = "http://127.0.0.1:18081"` would list it.
        let Profile::Lametric(clock) = config
            .devices
            .profile(&DeviceId::parse("lametric-1").unwrap())
        else {
            panic!("lametric-1 is not a LaMetric clock")
        };
        assert_eq!(clock.url.as_str(), "http://127.0.0.1:18081");
        assert_eq!(clock.tls, CertCheck::PlainHttp);
        assert_eq!(clock.api_key.expose(), LAMETRIC_KEY);
    }

    #[test]
    fn devices_are_validated_and_bad_log_settings_stop_the_demo() {
        let demo = Demo::prepare(
            &args("127.0.0.1:0", "127.0.0.1:0", &["a", "b", "a"]),
            |_| None,
        )
        .unwrap();
        assert_eq!(demo.devices.len(), 2);
        assert_eq!(demo.log_filter(), DEFAULT_LOG_FILTER);
        let err =
            Demo::prepare(&args("127.0.0.1:0", "127.0.0.1:0", &["a/b"]), |_| None).unwrap_err();
        assert!(err.to_string().contains("--devices"), "{err}");
        let err = Demo::prepare(&args("127.0.0.1:0", "127.0.0.1:0", &[]), |k| {
            (k == "LOG_FORMAT").then(|| "xml".to_owned())
        })
        .unwrap_err();
        assert!(err.to_string().contains("LOG_FORMAT"), "{err}");
    }

    #[test]
    fn the_banner_names_the_token_says_local_only_and_gives_runnable_commands() {
        let http = SocketAddr::from(([127, 0, 0, 1], 8080));
        let mqtt = SocketAddr::from(([127, 0, 0, 1], 1883));
        let text = banner(http, mqtt, &[], "target/debug/clockctl");
        assert!(text.contains("FOR LOCAL USE ONLY"), "{text}");
        assert!(text.contains("token   dev-token"), "{text}");
        assert!(
            text.contains(
                "clocks  one virtual clock for every device id (generic profile; clock-1 says it is online), and\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "\n   CLOCK_SERVER_TOKEN=dev-token target/debug/clockctl message --device clock-1 --message hello\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("\n   target/debug/clockctl watch\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "\n   CLOCK_SERVER_TOKEN=dev-token target/debug/clockctl alarm --device awtrix-1 --label \"wake up\" --time $(date -u -d '+1 min' +%Y-%m-%dT%H:%M:%SZ)\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "\n   target/debug/clockctl watch --device awtrix-1 --profile awtrix3 --topic awtrix_demo\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "\n   CLOCK_SERVER_TOKEN=dev-token target/debug/clockctl schedule add --device clock-1 --time 06:30 --days weekdays --label work\n"
            ),
            "{text}"
        );

        let http = SocketAddr::from(([127, 0, 0, 1], 18080));
        let mqtt = SocketAddr::from(([127, 0, 0, 1], 11883));
        let devices = [DeviceId::parse("kitchen").unwrap()];
        let text = banner(http, mqtt, &devices, "clockctl");
        assert!(
            text.contains("\n   console http://127.0.0.1:18080/console "),
            "{text}"
        );
        assert!(
            text.contains("CLOCK_SERVER_BASE_URL=http://127.0.0.1:18080 CLOCK_SERVER_TOKEN=dev-token clockctl message --device kitchen"),
            "{text}"
        );
        assert!(
            text.contains("clockctl watch --broker mqtt://127.0.0.1:11883"),
            "{text}"
        );
    }
}
