//! The real application on 127.0.0.1:0 in-process — with a recording fake transport or with
//! its configured transports — and an HTTP(S) client for it: the one harness of the
//! in-process tests (api, metrics, mqtt, rest).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use clock_server::config::Config;
use clock_server::domain::Envelope;
use clock_server::startup::{Application, StartupError};
use clock_server::transport::{BoxFuture, Transport, TransportError};
use tokio::sync::{Notify, oneshot};

/// A transport that records what it is given; can be told to fail or to hold deliveries.
#[derive(Default)]
pub struct FakeTransport {
    pub sent: Mutex<Vec<Envelope>>,
    pub fail: std::sync::atomic::AtomicBool,
    pub not_ready: std::sync::atomic::AtomicBool,
    /// When set, `send` waits for `release` before accepting.
    pub hold: std::sync::atomic::AtomicBool,
    pub release: Notify,
    /// Notified when a held delivery has started.
    pub started: Notify,
    pub closed: std::sync::atomic::AtomicBool,
}

impl FakeTransport {
    pub fn sent(&self) -> Vec<Envelope> {
        self.sent.lock().unwrap().clone()
    }
}

impl Transport for FakeTransport {
    fn name(&self) -> &'static str {
        "fake"
    }

    fn send<'a>(&'a self, envelope: &'a Envelope) -> BoxFuture<'a, Result<(), TransportError>> {
        use std::sync::atomic::Ordering::SeqCst;
        Box::pin(async move {
            if self.hold.load(SeqCst) {
                self.started.notify_one();
                self.release.notified().await;
            }
            if self.fail.load(SeqCst) {
                return Err(TransportError::Failed {
                    transport: "fake",
                    message: "refused by test".into(),
                });
            }
            self.sent.lock().unwrap().push(envelope.clone());
            Ok(())
        })
    }

    fn is_ready(&self) -> bool {
        !self.not_ready.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        self.closed.store(true, std::sync::atomic::Ordering::SeqCst);
        Box::pin(async {})
    }
}

/// Tokens of the default credentials.
pub const OPS_TOKEN: &str = "ops-secret-token-1";
pub const CLOCKS_TOKEN: &str = "clocks-secret-token-2";

/// Variables every test app starts from (plain HTTP on loopback, two credentials).
pub fn base_env() -> HashMap<String, String> {
    [
        ("HTTP_ADDR", "127.0.0.1:0"),
        ("REQUIRE_TLS", "false"),
        (
            "API_AUTH_CREDENTIALS",
            "ops|ops-secret-token-1|*; clocks|clocks-secret-token-2|clock-*",
        ),
        ("ENABLED_SENDERS", "rest"),
        ("CLOCK_REST_BASE_URL", "https://downstream.invalid"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// The application served in a task on 127.0.0.1:0, and a client for it. The one harness
/// of the in-process tests: with the recording [`FakeTransport`] ([`spawn_app`]) or with
/// the transports its configuration names ([`start`]).
pub struct TestApp {
    pub addr: SocketAddr,
    /// The metrics listener's address, when the test set `METRICS_ADDR` (e.g. `127.0.0.1:0`).
    pub metrics_addr: Option<SocketAddr>,
    /// The fake transport, when the app runs with one.
    fake: Option<Arc<FakeTransport>>,
    pub client: reqwest::Client,
    pub scheme: &'static str,
    /// The core (its background tasks and submissions under way).
    pub commands: Arc<clock_server::commands::Commands>,
    /// Dropping it shuts the app down too.
    shutdown: Option<oneshot::Sender<()>>,
    pub task: Option<tokio::task::JoinHandle<()>>,
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{}", self.scheme, self.addr, path)
    }

    /// The fake transport; panics for an app that runs its configured transports.
    pub fn fake(&self) -> &FakeTransport {
        self.fake
            .as_deref()
            .expect("this app runs its configured transports, not the fake")
    }

    /// Triggers the graceful shutdown (as SIGTERM does in the binary).
    pub fn begin_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// Graceful shutdown; waits for it to finish.
    pub async fn stop(mut self) {
        self.begin_shutdown();
        if let Some(task) = self.task.take() {
            tokio::time::timeout(std::time::Duration::from_secs(20), task)
                .await
                .expect("the server stops within its shutdown grace period")
                .unwrap();
        }
    }

    pub async fn post(
        &self,
        path: &str,
        token: Option<&str>,
        body: serde_json::Value,
    ) -> reqwest::Response {
        let mut req = self.client.post(self.url(path)).json_body(&body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send().await.unwrap()
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> reqwest::Response {
        let mut req = self.client.get(self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send().await.unwrap()
    }

    /// `method path` with `body` as the `ops` caller: the status and the JSON answer
    /// (`Null` when it is not JSON).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &serde_json::Value,
    ) -> (u16, serde_json::Value) {
        let res = self
            .client
            .request(method, self.url(path))
            .bearer_auth(OPS_TOKEN)
            .json_body(body)
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        let text = res.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
        )
    }
}

/// `RequestBuilder::json` needs reqwest's `json` feature; this is the same without it.
pub trait JsonBody {
    fn json_body(self, v: &serde_json::Value) -> Self;
}

impl JsonBody for reqwest::RequestBuilder {
    fn json_body(self, v: &serde_json::Value) -> Self {
        self.header("content-type", "application/json")
            .body(v.to_string())
    }
}

/// An HTTP client trusting `ca` (or only the system store).
pub fn client(ca: Option<&Path>) -> reqwest::Client {
    let tls = clock_server::tls::client_config(&clock_server::tls::ClientTls {
        ca_file: ca.map(|p| (p, "TEST_CA")),
        ..Default::default()
    })
    .unwrap();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        // Bounds a hung request; nothing here waits on one for that long.
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .unwrap()
}

/// `base_env()` with `vars` on top (an empty value unsets a variable).
pub fn env_with(vars: &[(&str, &str)]) -> HashMap<String, String> {
    let mut env = base_env();
    for (k, v) in vars {
        env.insert((*k).to_owned(), (*v).to_owned());
    }
    env
}

/// Log output only when `TEST_LOG` is set (e.g. `TEST_LOG=debug`); a suite that captures
/// logs installs its own subscriber first.
pub fn init_logging() {
    if let Ok(filter) = std::env::var("TEST_LOG") {
        let filter = if filter.is_empty() {
            "info".to_owned()
        } else {
            filter
        };
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
}

/// Starts the app configured by `env` with the transports it names, or with `fake`.
pub async fn start(
    env: &HashMap<String, String>,
    fake: Option<Arc<FakeTransport>>,
) -> Result<TestApp, StartupError> {
    init_logging();
    let tls = env.contains_key("TLS_CERT_FILE");
    let ca = env.get("TEST_CA").map(std::path::PathBuf::from);
    let config = Config::from_lookup(|k| env.get(k).cloned()).expect("valid test config");
    let app = match &fake {
        Some(fake) => Application::build_with_transport(config, fake.clone()).await?,
        None => Application::build(config).await?,
    };
    let addr = app.local_addr();
    let metrics_addr = app.metrics_addr();
    let commands = app.commands();
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(app.run_until_stopped(async {
        let _ = rx.await;
    }));
    Ok(TestApp {
        addr,
        metrics_addr,
        fake,
        client: client(ca.as_deref()),
        scheme: if tls { "https" } else { "http" },
        commands,
        shutdown: Some(tx),
        task: Some(task),
    })
}

/// Starts the app with `base_env()` overridden by `vars` and a fake transport.
pub async fn spawn_app(vars: &[(&str, &str)]) -> TestApp {
    start(&env_with(vars), Some(Arc::new(FakeTransport::default())))
        .await
        .unwrap()
}
