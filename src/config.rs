//! Configuration from environment variables (SPEC 3): typed, validated, secrets wrapped.
//!
//! [`Config::from_lookup`] reads every variable, collects *every* problem, and reports them
//! together — one line per variable, naming it, its value (secrets redacted) and what is
//! accepted. A set-but-invalid value never falls back to the default. An empty value counts
//! as unset (as with the Go service, which read variables with `os.Getenv`).

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use reqwest::Url;

use crate::domain::Devices;
use crate::security::{Credential, parse_credentials};
/// Defined in [`crate::shared::redact`], below both the configuration and the store.
pub use crate::shared::redact::{Redactor, redact_userinfo};
use crate::shared::{BrokerUrl, BrokerUrlError, Secret, go_bool};
use crate::store::{StoreKind, StoreSettings};
/// Defined beside the rustls set-up that reads them, which the clients use too.
pub use crate::tls::TlsFiles;

/// The transports that can be enabled (`ENABLED_SENDERS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sender {
    Mqtt,
    Rest,
}

/// One enabled transport and its settings.
#[derive(Debug, Clone)]
pub enum TransportConfig {
    Mqtt(MqttConfig),
    Rest(RestConfig),
}

impl TransportConfig {
    /// The name used in `ENABLED_SENDERS`, logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Mqtt(_) => "mqtt",
            Self::Rest(_) => "rest",
        }
    }
}

/// The enabled transports in `ENABLED_SENDERS` order: at least one, by construction.
#[derive(Debug, Clone)]
pub struct Transports(Vec<TransportConfig>);

impl Transports {
    /// `first`, then `more`.
    pub fn new(first: TransportConfig, more: impl IntoIterator<Item = TransportConfig>) -> Self {
        Self(std::iter::once(first).chain(more).collect())
    }

    /// `None` for an empty list.
    pub fn from_vec(list: Vec<TransportConfig>) -> Option<Self> {
        (!list.is_empty()).then_some(Self(list))
    }

    pub fn iter(&self) -> impl Iterator<Item = &TransportConfig> {
        self.0.iter()
    }

    /// Their names, in order.
    pub fn names(&self) -> Vec<&'static str> {
        self.iter().map(TransportConfig::name).collect()
    }

    /// The MQTT transport's settings, when it is enabled.
    pub fn mqtt(&self) -> Option<&MqttConfig> {
        self.iter().find_map(|t| match t {
            TransportConfig::Mqtt(m) => Some(m),
            TransportConfig::Rest(_) => None,
        })
    }

    /// The REST transport's settings, when it is enabled.
    pub fn rest(&self) -> Option<&RestConfig> {
        self.iter().find_map(|t| match t {
            TransportConfig::Rest(r) => Some(r),
            TransportConfig::Mqtt(_) => None,
        })
    }
}

/// The TLS policy of the API (SPEC 2.1 step 2) and where TLS ends: only the combinations
/// that make sense can be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsPolicy {
    /// `REQUIRE_TLS=false` (local development): plain requests are served. The listener
    /// still speaks TLS when it has a certificate.
    Optional { listener: Option<TlsFiles> },
    /// `REQUIRE_TLS=true` with `TLS_CERT_FILE`/`TLS_KEY_FILE`: the listener speaks TLS. With
    /// `trust_proxy` (`TRUST_PROXY_TLS=true`) a plain request that a proxy forwarded as
    /// https passes as well.
    Listener { files: TlsFiles, trust_proxy: bool },
    /// `REQUIRE_TLS=true` and `TRUST_PROXY_TLS=true` without a certificate: a plain listener
    /// behind a TLS-terminating proxy; only requests forwarded as https pass.
    Proxy,
}

impl TlsPolicy {
    /// The listener's certificate and key, when it speaks TLS.
    pub fn listener_files(&self) -> Option<&TlsFiles> {
        match self {
            Self::Optional { listener } => listener.as_ref(),
            Self::Listener { files, .. } => Some(files),
            Self::Proxy => None,
        }
    }

    /// Whether a request passes: it came `over_tls`, or `forwarded_https` says a trusted
    /// proxy received it over TLS (`X-Forwarded-Proto: https`; only asked when it matters).
    pub fn admits(&self, over_tls: bool, forwarded_https: impl FnOnce() -> bool) -> bool {
        match self {
            Self::Optional { .. } => true,
            Self::Listener { trust_proxy, .. } => over_tls || (*trust_proxy && forwarded_https()),
            Self::Proxy => over_tls || forwarded_https(),
        }
    }
}

/// `text` (default) or `json` log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// HTTP listener settings.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub addr: SocketAddr,
    pub read_timeout: Duration,
    pub write_timeout: Duration,
    pub idle_timeout: Duration,
    pub read_header_timeout: Duration,
    pub shutdown_timeout: Duration,
    /// `REQUIRE_TLS`, `TRUST_PROXY_TLS`, `TLS_CERT_FILE` and `TLS_KEY_FILE` together.
    pub tls: TlsPolicy,
    pub max_body_bytes: usize,
    /// `HTTP_MAX_HEADER_BYTES`: request line plus headers.
    pub max_header_bytes: usize,
    /// `HTTP_MAX_CONNECTIONS`: open client connections.
    pub max_connections: usize,
}

/// MQTT transport settings (SPEC 4.1).
#[derive(Debug, Clone)]
pub struct MqttConfig {
    pub use_tls: bool,
    pub host: String,
    pub port: u16,
    /// `None`: a unique id is generated at start-up.
    pub client_id: Option<String>,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub topic_prefix: String,
    pub qos: u8,
    pub retained: bool,
    pub connect_retry: bool,
    pub insecure_skip_verify: bool,
    pub ca_file: Option<PathBuf>,
    pub client_cert: Option<TlsFiles>,
    pub publish_timeout: Duration,
    pub max_inflight: u16,
    pub keep_alive: Duration,
    /// `MQTT_SHARED_GROUP`: replicas split the acknowledgements (`$share/<group>/…`).
    pub shared_group: Option<String>,
}

/// Tracked commands (SPEC 7): the store and its time limits.
#[derive(Debug, Clone)]
pub struct TrackingConfig {
    /// `STATE_STORE` (`none`: nothing is tracked).
    pub store: StoreKind,
    pub settings: StoreSettings,
    /// `COMMAND_TTL_SECS`: a command's time to live when its body has no `ttlSeconds`.
    pub command_ttl: Duration,
    /// `IDEMPOTENCY_TTL_SECS`: how long an answer to an `Idempotency-Key` is remembered.
    pub idempotency_ttl: Duration,
    /// `SCHEDULES_MAX_PER_DEVICE`: how many schedules one device may have (SPEC 12.1).
    pub schedules_max_per_device: usize,
}

/// Presence settings (SPEC 11.1).
#[derive(Debug, Clone, Copy)]
pub struct PresenceConfig {
    /// `PRESENCE_TIMEOUT_SECS`: an AWTRIX clock that was online and has sent nothing on
    /// `<topic>/stats` for this long is offline.
    pub timeout: Duration,
    /// `PRESENCE_POLL_SECS`: how often a device reached by polling is asked.
    pub poll: Duration,
}

/// REST transport settings (SPEC 4.2).
#[derive(Debug, Clone)]
pub struct RestConfig {
    pub base_url: Url,
    pub token: Option<Secret>,
    pub timeout: Duration,
    pub health_path: Option<String>,
    pub health_interval: Duration,
    pub ca_file: Option<PathBuf>,
}

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub http: HttpConfig,
    pub auth_fail_limit_per_min: u32,
    pub readiness_require_auth: bool,
    pub credentials: Vec<Credential>,
    /// True when the credential came from the legacy `API_AUTH_TOKEN`.
    pub legacy_token: bool,
    pub transports: Transports,
    pub log_format: LogFormat,
    pub log_level: Option<String>,
    pub metrics_addr: Option<SocketAddr>,
    pub tracking: TrackingConfig,
    /// `DEVICES_FILE`: the devices with a profile other than generic (SPEC 8). The demo
    /// adds its virtual AWTRIX here.
    pub devices: Devices,
    /// Where [`Config::devices`] came from, for start-up messages.
    pub devices_file: Option<PathBuf>,
    /// How presence is learnt (SPEC 11.1).
    pub presence: PresenceConfig,
    /// `EVENTS_MAX_STREAMS`: open `GET /events` streams at most (SPEC 13.1).
    pub events_max_streams: usize,
    /// `CONSOLE`: whether `/console` is served (SPEC 13.2).
    pub console: bool,
    /// Every secret above, for scrubbing logged text from outside.
    pub redactor: Redactor,
}

/// Every invalid variable, one line each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub Vec<String>);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("\n"))
    }
}

impl std::error::Error for ConfigError {}

/// Variables whose values are never echoed in errors.
const SECRET_VARS: &[&str] = &[
    "API_AUTH_CREDENTIALS",
    "API_AUTH_TOKEN",
    "MQTT_PASSWORD",
    "CLOCK_REST_TOKEN",
];

const MAX_TIMEOUT_MS: u64 = 3_600_000;

/// Reads variables through a lookup function and records problems as it goes.
struct Reader<F> {
    lookup: F,
    errors: Vec<String>,
    /// Every secret read, for the [`Redactor`].
    secrets: Vec<Secret>,
}

impl<F: Fn(&str) -> Option<String>> Reader<F> {
    /// The raw value; empty counts as unset.
    fn raw(&self, name: &str) -> Option<String> {
        (self.lookup)(name).filter(|v| !v.is_empty())
    }

    /// A secret variable (listed in `SECRET_VARS`), remembered for the [`Redactor`]; `trim`
    /// says whether surrounding spaces are dropped before use.
    fn secret(&mut self, name: &str, trim: bool) -> Option<Secret> {
        debug_assert!(SECRET_VARS.contains(&name), "{name} is not in SECRET_VARS");
        let raw = self.raw(name)?;
        let secret = Secret::new(if trim { raw.trim() } else { raw.as_str() });
        self.keep_secret(secret.clone());
        Some(secret)
    }

    /// Remembers a secret found inside another value, for the [`Redactor`].
    fn keep_secret(&mut self, secret: Secret) {
        self.secrets.push(secret);
    }

    fn shown(name: &str, value: &str) -> String {
        if SECRET_VARS.contains(&name) {
            format!("{name}=<redacted>")
        } else {
            format!("{name}={:?}", redact_userinfo(value))
        }
    }

    fn invalid(&mut self, name: &str, value: &str, accepted: &str) {
        self.errors.push(format!(
            "{} is invalid: {accepted}",
            Self::shown(name, value)
        ));
    }

    fn string(&self, name: &str) -> Option<String> {
        self.raw(name)
    }

    fn bool(&mut self, name: &str, default: bool) -> bool {
        match self.raw(name) {
            None => default,
            Some(v) => go_bool::parse_go_bool(&v).unwrap_or_else(|| {
                self.invalid(
                    name,
                    &v,
                    &format!("expected a boolean: {}", go_bool::ACCEPTED),
                );
                default
            }),
        }
    }

    fn int(&mut self, name: &str, default: u64, min: u64, max: u64) -> u64 {
        match self.raw(name) {
            None => default,
            Some(v) => match v.trim().parse::<u64>() {
                Ok(n) if (min..=max).contains(&n) => n,
                _ => {
                    self.invalid(
                        name,
                        &v,
                        &format!("expected an integer from {min} to {max}"),
                    );
                    default
                }
            },
        }
    }

    fn millis(&mut self, name: &str, default: u64, min: u64) -> Duration {
        Duration::from_millis(self.int(name, default, min, MAX_TIMEOUT_MS))
    }

    fn path(&self, name: &str) -> Option<PathBuf> {
        self.raw(name).map(PathBuf::from)
    }

    /// Two variables that must be set together.
    fn pair(&mut self, cert: &str, key: &str) -> Option<TlsFiles> {
        match (self.path(cert), self.path(key)) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            (None, None) => None,
            (Some(_), None) => {
                self.errors.push(format!(
                    "{key} is not set: {cert} and {key} must be set together"
                ));
                None
            }
            (None, Some(_)) => {
                self.errors.push(format!(
                    "{cert} is not set: {cert} and {key} must be set together"
                ));
                None
            }
        }
    }

    fn socket_addr(&mut self, name: &str, value: &str) -> Option<SocketAddr> {
        match parse_listen_addr(value) {
            Some(a) => Some(a),
            None => {
                self.invalid(
                    name,
                    value,
                    "expected host:port, e.g. :8080 (all interfaces), 127.0.0.1:8080 or [::]:8080",
                );
                None
            }
        }
    }
}

/// `:8080` (all interfaces), `127.0.0.1:8080`, `[::]:8080` or `localhost:8080`.
pub fn parse_listen_addr(value: &str) -> Option<SocketAddr> {
    let v = value.trim();
    if let Some(port) = v.strip_prefix(':') {
        return port
            .parse::<u16>()
            .ok()
            .map(|p| SocketAddr::from(([0, 0, 0, 0], p)));
    }
    if let Ok(a) = v.parse::<SocketAddr>() {
        return Some(a);
    }
    v.to_socket_addrs().ok()?.next()
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads variables through `lookup` (tests pass a map).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut r = Reader {
            lookup,
            errors: Vec::new(),
            secrets: Vec::new(),
        };

        let addr_raw = r.string("HTTP_ADDR").unwrap_or_else(|| ":8080".to_owned());
        let addr = r
            .socket_addr("HTTP_ADDR", &addr_raw)
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 8080)));
        let tls = r.pair("TLS_CERT_FILE", "TLS_KEY_FILE");
        let errors_before = r.errors.len();
        let require_tls = r.bool("REQUIRE_TLS", true);
        let require_tls_valid = r.errors.len() == errors_before;
        let trust_proxy_tls = r.bool("TRUST_PROXY_TLS", false);
        let tls = match (require_tls, tls, trust_proxy_tls) {
            (false, listener, _) => TlsPolicy::Optional { listener },
            (true, Some(files), trust_proxy) => TlsPolicy::Listener { files, trust_proxy },
            (true, None, true) => TlsPolicy::Proxy,
            (true, None, false) => {
                // Unless REQUIRE_TLS itself or the TLS pair was already reported.
                if require_tls_valid && r.raw("TLS_CERT_FILE").is_none() {
                    r.errors.push(
                        "REQUIRE_TLS=true needs TLS_CERT_FILE and TLS_KEY_FILE, or TRUST_PROXY_TLS=true behind a TLS-terminating proxy; set REQUIRE_TLS=false only for local development"
                            .to_owned(),
                    );
                }
                TlsPolicy::Proxy
            }
        };
        let http = HttpConfig {
            addr,
            read_timeout: r.millis("HTTP_READ_TIMEOUT_MS", 10_000, 1),
            write_timeout: r.millis("HTTP_WRITE_TIMEOUT_MS", 10_000, 1),
            idle_timeout: r.millis("HTTP_IDLE_TIMEOUT_MS", 60_000, 1),
            read_header_timeout: r.millis("HTTP_READ_HEADER_TIMEOUT_MS", 5_000, 1),
            shutdown_timeout: r.millis("HTTP_SHUTDOWN_TIMEOUT_MS", 15_000, 0),
            tls,
            max_body_bytes: r.int("MAX_BODY_BYTES", 65_536, 1024, 10_485_760) as usize,
            max_header_bytes: r.int("HTTP_MAX_HEADER_BYTES", 16_384, 1024, 1_048_576) as usize,
            max_connections: r.int("HTTP_MAX_CONNECTIONS", 10_000, 1, 1_000_000) as usize,
        };
        let auth_fail_limit_per_min = r.int("AUTH_FAIL_LIMIT_PER_MIN", 60, 1, 10_000) as u32;
        let readiness_require_auth = r.bool("READINESS_REQUIRE_AUTH", true);

        let (credentials, legacy_token) = read_credentials(&mut r);
        let senders = read_senders(&mut r);
        let mut mqtt = read_mqtt(&mut r, senders.contains(&Sender::Mqtt));
        let mut rest = read_rest(&mut r, senders.contains(&Sender::Rest));
        // Each enabled sender has its settings here unless an error says why not.
        let transports = Transports::from_vec(
            senders
                .iter()
                .filter_map(|sender| match sender {
                    Sender::Mqtt => mqtt.take().map(TransportConfig::Mqtt),
                    Sender::Rest => rest.take().map(TransportConfig::Rest),
                })
                .collect(),
        );

        let log_format = match r.raw("LOG_FORMAT").as_deref().map(str::trim) {
            None => LogFormat::Text,
            Some(v) if v.eq_ignore_ascii_case("text") => LogFormat::Text,
            Some(v) if v.eq_ignore_ascii_case("json") => LogFormat::Json,
            Some(v) => {
                let v = v.to_owned();
                r.invalid("LOG_FORMAT", &v, "expected text or json");
                LogFormat::Text
            }
        };
        // LOG_LEVEL, else RUST_LOG (the usual variable of Rust programs); a value that is not
        // a valid filter is an error naming the variable it came from, not a silent `info`.
        let (level_var, log_level) = match r.string("LOG_LEVEL") {
            Some(level) => ("LOG_LEVEL", Some(level)),
            None => ("RUST_LOG", r.string("RUST_LOG")),
        };
        if let Some(level) = &log_level
            && tracing_subscriber::EnvFilter::try_new(level).is_err()
        {
            let level = level.clone();
            r.invalid(
                level_var,
                &level,
                "expected error, warn, info, debug, trace or a filter like clock_server=debug",
            );
        }
        let metrics_raw = r.string("METRICS_ADDR");
        let metrics_addr = metrics_raw
            .as_deref()
            .and_then(|v| r.socket_addr("METRICS_ADDR", v));
        if let (Some(raw), Some(m)) = (&metrics_raw, metrics_addr)
            && m.port() != 0
            && m.port() == addr.port()
            && (m.ip() == addr.ip() || m.ip().is_unspecified() || addr.ip().is_unspecified())
        {
            let raw = raw.clone();
            r.invalid(
                "METRICS_ADDR",
                &raw,
                "it must not share HTTP_ADDR's port; expected another host:port, e.g. :9090 or 127.0.0.1:9090 (unset: no metrics listener)",
            );
        }

        let mut tracking = read_tracking(&mut r);
        tracking.settings.shares = credentials.len().max(1);
        let presence = PresenceConfig {
            timeout: Duration::from_secs(r.int("PRESENCE_TIMEOUT_SECS", 35, 5, 3600)),
            poll: Duration::from_secs(r.int("PRESENCE_POLL_SECS", 30, 5, 3600)),
        };
        let events_max_streams = r.int(
            "EVENTS_MAX_STREAMS",
            crate::events::DEFAULT_MAX_STREAMS as u64,
            1,
            100_000,
        ) as usize;
        let console = r.bool("CONSOLE", true);
        let devices_file = r.path("DEVICES_FILE");
        let devices = match &devices_file {
            None => Devices::new(),
            Some(path) => {
                let senders_raw = r
                    .raw("ENABLED_SENDERS")
                    .unwrap_or_else(|| "mqtt,rest".to_owned());
                let context = crate::devices::Context {
                    senders: &senders_raw,
                    mqtt_enabled: senders.contains(&Sender::Mqtt),
                    store_none: tracking.store == StoreKind::None,
                    allow_insecure_http: r
                        .raw("ALLOW_INSECURE_DOWNSTREAM_HTTP")
                        .is_some_and(|v| crate::shared::parse_go_bool(&v) == Some(true)),
                };
                crate::devices::read(path, context).unwrap_or_else(|errors| {
                    r.errors.extend(errors);
                    Devices::new()
                })
            }
        };

        let transports = match transports {
            Some(transports) if r.errors.is_empty() => transports,
            _ => return Err(ConfigError(r.errors)),
        };
        Ok(Self {
            http,
            auth_fail_limit_per_min,
            readiness_require_auth,
            credentials,
            legacy_token,
            transports,
            log_format,
            log_level,
            metrics_addr,
            tracking,
            devices,
            devices_file,
            presence,
            events_max_streams,
            console,
            redactor: Redactor::new(&r.secrets),
        })
    }
}

fn read_credentials<F: Fn(&str) -> Option<String>>(r: &mut Reader<F>) -> (Vec<Credential>, bool) {
    // Read (and so redacted) even when API_AUTH_CREDENTIALS wins: it is still a secret.
    let legacy = r.secret("API_AUTH_TOKEN", true);
    if let Some(raw) = r.raw("API_AUTH_CREDENTIALS") {
        match parse_credentials(&raw) {
            Ok(c) if !c.is_empty() => {
                for credential in &c {
                    r.keep_secret(credential.token().clone());
                }
                return (c, false);
            }
            Ok(_) => r.errors.push(
                "API_AUTH_CREDENTIALS=<redacted> is invalid: it holds no credential; expected id|token|scope1,scope2;id2|token2|*".to_owned(),
            ),
            Err(e) => r
                .errors
                .push(format!("API_AUTH_CREDENTIALS=<redacted> is invalid: {e}")),
        }
        return (Vec::new(), false);
    }
    if let Some(token) = legacy {
        if token.expose().is_empty() {
            r.errors
                .push("API_AUTH_TOKEN=<redacted> is invalid: the token is blank".to_owned());
            return (Vec::new(), true);
        }
        return (vec![Credential::legacy(token.expose())], true);
    }
    r.errors.push(
        "API_AUTH_CREDENTIALS is not set: at least one credential is required, e.g. API_AUTH_CREDENTIALS='ops|<token>|*' (or the legacy API_AUTH_TOKEN)"
            .to_owned(),
    );
    (Vec::new(), false)
}

fn read_senders<F: Fn(&str) -> Option<String>>(r: &mut Reader<F>) -> Vec<Sender> {
    let raw = r
        .raw("ENABLED_SENDERS")
        .unwrap_or_else(|| "mqtt,rest".to_owned());
    let mut senders = Vec::new();
    for part in raw.split(',') {
        let name: String = part.chars().filter(|c| !c.is_whitespace()).collect();
        let sender = match name.to_ascii_lowercase().as_str() {
            "" => continue,
            "mqtt" => Sender::Mqtt,
            "rest" => Sender::Rest,
            _ => {
                r.invalid(
                    "ENABLED_SENDERS",
                    &raw,
                    &format!("unknown sender {name:?}; expected a comma list of mqtt, rest"),
                );
                return senders;
            }
        };
        if !senders.contains(&sender) {
            senders.push(sender);
        }
    }
    if senders.is_empty() {
        r.invalid(
            "ENABLED_SENDERS",
            &raw,
            "expected at least one of mqtt, rest",
        );
    }
    senders
}

fn read_tracking<F: Fn(&str) -> Option<String>>(r: &mut Reader<F>) -> TrackingConfig {
    let store = match r.raw("STATE_STORE") {
        None => StoreKind::Memory,
        Some(raw) => match crate::store::parse_state_store(&raw) {
            Ok(kind) => {
                if let StoreKind::Redis(url) = &kind {
                    // The URL may hold the store's password: scrubbed from logged text too.
                    for password in url_password(url.expose()) {
                        r.keep_secret(Secret::new(password));
                    }
                    r.keep_secret(url.clone());
                }
                kind
            }
            Err(why) => {
                r.errors.push(format!("STATE_STORE is invalid: {why}"));
                StoreKind::Memory
            }
        },
    };
    let settings = StoreSettings {
        max_commands: r.int("STATE_MAX_COMMANDS", 100_000, 1000, 10_000_000) as usize,
        max_bytes: r.int(
            "STATE_MAX_BYTES",
            crate::store::DEFAULT_MAX_BYTES as u64,
            1 << 20,
            1 << 40,
        ) as usize,
        // Set once the credentials are known (`Config::from_lookup`).
        shares: 1,
        retention: Duration::from_secs(r.int("STATE_RETENTION_SECS", 86_400, 60, 2_592_000)),
    };
    TrackingConfig {
        store,
        settings,
        command_ttl: Duration::from_secs(r.int("COMMAND_TTL_SECS", 600, 1, 604_800)),
        idempotency_ttl: Duration::from_secs(r.int("IDEMPOTENCY_TTL_SECS", 86_400, 60, 604_800)),
        schedules_max_per_device: r.int("SCHEDULES_MAX_PER_DEVICE", 32, 1, 1000) as usize,
    }
}

/// The password of `scheme://user:password@host…`, as written and percent-decoded (a
/// server may echo either).
fn url_password(url: &str) -> Vec<String> {
    let Some(written) = Url::parse(url)
        .ok()
        .and_then(|u| u.password().map(str::to_owned))
    else {
        return Vec::new();
    };
    let decoded = percent_encoding::percent_decode_str(&written)
        .decode_utf8_lossy()
        .into_owned();
    vec![written, decoded]
}

fn read_mqtt<F: Fn(&str) -> Option<String>>(
    r: &mut Reader<F>,
    enabled: bool,
) -> Option<MqttConfig> {
    let allow_insecure = r.bool("ALLOW_INSECURE_MQTT", false);
    let skip_verify = r.bool("MQTT_TLS_INSECURE_SKIP_VERIFY", false);
    let allow_skip = r.bool("ALLOW_INSECURE_TLS_VERIFY", false);
    if skip_verify && !allow_skip {
        r.errors.push(
            "MQTT_TLS_INSECURE_SKIP_VERIFY=true is refused: it turns off broker certificate checks; set ALLOW_INSECURE_TLS_VERIFY=true as well if you really mean it, or trust a private CA with MQTT_CA_FILE"
                .to_owned(),
        );
    }
    let qos = r.int("MQTT_QOS", 1, 0, 2) as u8;
    let retained = r.bool("MQTT_RETAINED", false);
    let connect_retry = r.bool("MQTT_CONNECT_RETRY", true);
    let publish_timeout = r.millis("MQTT_PUBLISH_TIMEOUT_MS", 5_000, 1);
    let max_inflight = r.int("MQTT_MAX_INFLIGHT", 256, 1, 65_535) as u16;
    let keep_alive = Duration::from_secs(r.int("MQTT_KEEP_ALIVE_SECS", 15, 1, 65_535));
    let ca_file = r.path("MQTT_CA_FILE");
    let client_cert = r.pair("MQTT_CLIENT_CERT_FILE", "MQTT_CLIENT_KEY_FILE");
    let topic_prefix = r
        .string("MQTT_TOPIC_PREFIX")
        .unwrap_or_else(|| "clocks/commands".to_owned());
    let topic_prefix = topic_prefix
        .trim_matches(|c: char| c == ' ' || c == '/')
        .to_owned();
    if topic_prefix.contains(['+', '#']) || topic_prefix.contains('\0') {
        let v = topic_prefix.clone();
        r.invalid(
            "MQTT_TOPIC_PREFIX",
            &v,
            "a topic prefix must not contain the wildcards + or #",
        );
    }
    let shared_group = r.string("MQTT_SHARED_GROUP").map(|g| g.trim().to_owned());
    if let Some(group) = &shared_group
        && (group.is_empty() || group.contains(['/', '+', '#', '\0']))
    {
        let v = group.clone();
        r.invalid(
            "MQTT_SHARED_GROUP",
            &v,
            "a shared subscription group name is one topic level: no /, + or #",
        );
    }
    let client_id = r.string("MQTT_CLIENT_ID");
    let username = r.string("MQTT_USERNAME");
    let password = r.secret("MQTT_PASSWORD", false);

    let url_raw = r.raw("MQTT_BROKER_URL");
    if !enabled {
        return None;
    }
    let Some(url_raw) = url_raw else {
        r.errors.push(
            "MQTT_BROKER_URL is not set: it is required when mqtt is in ENABLED_SENDERS; expected mqtts://host[:8883] (or mqtt://host[:1883] with ALLOW_INSECURE_MQTT=true)"
                .to_owned(),
        );
        return None;
    };
    let accepted = "expected mqtts://host[:8883] or mqtt://host[:1883]";
    let url = match BrokerUrl::parse(&url_raw) {
        Ok(url) => url,
        Err(e) => {
            let why = match e {
                BrokerUrlError::Scheme(_) => accepted.to_owned(),
                other => format!("{other}; {accepted}"),
            };
            r.invalid("MQTT_BROKER_URL", &url_raw, &why);
            return None;
        }
    };
    if !url.tls && !allow_insecure {
        let shown = Reader::<F>::shown("MQTT_BROKER_URL", &url_raw);
        r.errors.push(format!(
            "{shown} is refused: plain mqtt:// sends commands and credentials unencrypted; use mqtts:// or set ALLOW_INSECURE_MQTT=true"
        ));
    }
    Some(MqttConfig {
        use_tls: url.tls,
        host: url.host,
        port: url.port,
        client_id,
        username,
        password,
        topic_prefix,
        qos,
        retained,
        connect_retry,
        insecure_skip_verify: skip_verify && allow_skip,
        ca_file,
        client_cert,
        publish_timeout,
        max_inflight,
        keep_alive,
        shared_group,
    })
}

fn read_rest<F: Fn(&str) -> Option<String>>(
    r: &mut Reader<F>,
    enabled: bool,
) -> Option<RestConfig> {
    let allow_insecure = r.bool("ALLOW_INSECURE_DOWNSTREAM_HTTP", false);
    let timeout = r.millis("CLOCK_REST_TIMEOUT_MS", 5_000, 1);
    let health_interval = r.millis("CLOCK_REST_HEALTH_INTERVAL_MS", 5_000, 100);
    let token = r.secret("CLOCK_REST_TOKEN", true);
    let ca_file = r.path("CLOCK_REST_CA_FILE");
    let health_path = r
        .string("CLOCK_REST_HEALTH_PATH")
        .map(|p| p.trim().to_owned());
    if let Some(p) = &health_path
        && !p.starts_with('/')
    {
        let p = p.clone();
        r.invalid(
            "CLOCK_REST_HEALTH_PATH",
            &p,
            "expected a path starting with /, e.g. /healthz",
        );
    }
    let url_raw = r.raw("CLOCK_REST_BASE_URL");
    if !enabled {
        return None;
    }
    let Some(url_raw) = url_raw else {
        r.errors.push(
            "CLOCK_REST_BASE_URL is not set: it is required when rest is in ENABLED_SENDERS; expected https://host[:port][/path]"
                .to_owned(),
        );
        return None;
    };
    let base_url = match Url::parse(url_raw.trim()) {
        Ok(u) if u.host_str().is_some_and(|h| !h.is_empty()) => u,
        Ok(_) | Err(_) => {
            r.invalid(
                "CLOCK_REST_BASE_URL",
                &url_raw,
                "expected an absolute URL like https://clocks.example.com/api",
            );
            return None;
        }
    };
    match base_url.scheme() {
        "https" => {}
        "http" if allow_insecure => {}
        "http" => {
            let shown = Reader::<F>::shown("CLOCK_REST_BASE_URL", &url_raw);
            r.errors.push(format!(
                "{shown} is refused: plain http:// would send commands and CLOCK_REST_TOKEN unencrypted; use https:// or set ALLOW_INSECURE_DOWNSTREAM_HTTP=true"
            ))
        }
        _ => r.invalid("CLOCK_REST_BASE_URL", &url_raw, "expected an https:// URL"),
    }
    if !base_url.username().is_empty() || base_url.password().is_some() {
        r.errors.push(
            "CLOCK_REST_BASE_URL must not carry user:password; use CLOCK_REST_TOKEN".to_owned(),
        );
    }
    Some(RestConfig {
        base_url,
        token,
        timeout,
        health_path,
        health_interval,
        ca_file,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn redactor(secrets: &[&str]) -> Redactor {
        let secrets: Vec<Secret> = secrets.iter().map(|s| Secret::new(*s)).collect();
        Redactor::new(&secrets)
    }

    #[test]
    fn every_secret_is_replaced_wherever_it_occurs() {
        let r = redactor(&["tok-1", "pw-2", "api-3"]);
        assert_eq!(
            r.redact("Bearer tok-1; pw-2 and api-3, again tok-1."),
            "Bearer <redacted>; <redacted> and <redacted>, again <redacted>."
        );
        assert_eq!(r.redact("nothing here"), "nothing here");
    }

    #[test]
    fn overlapping_occurrences_are_replaced_as_one_run_leaving_no_part_of_either() {
        // Two secrets sharing bytes: neither may survive in part.
        let r = redactor(&["abcdef", "defxyz"]);
        assert_eq!(r.redact("[abcdefxyz]"), "[<redacted>]");
        // A secret that overlaps itself.
        let r = redactor(&["aXa"]);
        assert_eq!(r.redact("aXaXa b"), "<redacted> b");
        // One secret inside another.
        let r = redactor(&["secret", "cre"]);
        assert_eq!(r.redact("a secret, a cre"), "a <redacted>, a <redacted>");
    }

    #[test]
    fn empty_secrets_are_ignored_and_multibyte_text_survives() {
        let r = redactor(&["", "pässwörd"]);
        assert_eq!(r.redact("ünïcode pässwörd ✓"), "ünïcode <redacted> ✓");
        assert_eq!(redactor(&[""]).redact("abc"), "abc");
    }

    #[test]
    fn a_secret_echoed_inside_a_json_string_is_replaced_too() {
        let r = redactor(&[r#"to"k\en"#]);
        let echoed = serde_json::json!({ "authorization": r#"Bearer to"k\en"# }).to_string();
        let redacted = r.redact(&echoed);
        assert_eq!(redacted, r#"{"authorization":"Bearer <redacted>"}"#);
    }

    #[test]
    fn the_redactor_holds_every_configured_secret_even_of_a_disabled_transport() {
        let vars = [
            ("REQUIRE_TLS", "false"),
            ("API_AUTH_CREDENTIALS", "a|api-one|*;b|api-two|clock-*"),
            ("API_AUTH_TOKEN", "legacy-unused"),
            ("ENABLED_SENDERS", "rest"),
            ("CLOCK_REST_BASE_URL", "https://clocks.example"),
            ("CLOCK_REST_TOKEN", " rest-tok "),
            ("MQTT_PASSWORD", "mqtt-pw"),
        ];
        let config = Config::from_lookup(|k| {
            vars.iter()
                .find(|(name, _)| *name == k)
                .map(|(_, v)| (*v).to_owned())
        })
        .unwrap();
        assert_eq!(
            config
                .redactor
                .redact("api-one api-two legacy-unused rest-tok mqtt-pw"),
            ["<redacted>"; 5].join(" ")
        );
        assert!(!format!("{config:?}").contains("api-one"));
    }
}
