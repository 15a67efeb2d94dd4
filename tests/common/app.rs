//! The real application on 127.0.0.1:0 in-process, with a recording fake transport, and an
//! HTTP(S) client for it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use clock_server::config::Config;
use clock_server::domain::Envelope;
use clock_server::startup::Application;
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

pub struct TestApp {
    pub addr: SocketAddr,
    /// The metrics listener's address, when the test set `METRICS_ADDR` (e.g. `127.0.0.1:0`).
    pub metrics_addr: Option<SocketAddr>,
    pub transport: Arc<FakeTransport>,
    pub client: reqwest::Client,
    pub scheme: &'static str,
    shutdown: Option<oneshot::Sender<()>>,
    pub task: Option<tokio::task::JoinHandle<()>>,
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{}", self.scheme, self.addr, path)
    }

    /// Triggers the graceful shutdown (as SIGTERM does in the binary).
    pub fn begin_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
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
        .build()
        .unwrap()
}

/// Starts the app with `base_env()` overridden by `vars` and a fake transport.
pub async fn spawn_app(vars: &[(&str, &str)]) -> TestApp {
    let mut env = base_env();
    for (k, v) in vars {
        env.insert((*k).to_owned(), (*v).to_owned());
    }
    let tls = env.contains_key("TLS_CERT_FILE");
    let ca = env.get("TEST_CA").map(std::path::PathBuf::from);
    let config = Config::from_lookup(|k| env.get(k).cloned()).expect("valid test config");
    let transport = Arc::new(FakeTransport::default());
    let app = Application::build_with_transport(config, transport.clone())
        .await
        .unwrap();
    let addr = app.local_addr();
    let metrics_addr = app.metrics_addr();
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(app.run_until_stopped(async {
        let _ = rx.await;
    }));
    TestApp {
        addr,
        metrics_addr,
        transport,
        client: client(ca.as_deref()),
        scheme: if tls { "https" } else { "http" },
        shutdown: Some(tx),
        task: Some(task),
    }
}
