//! REST transport (SPEC 4.2): one HTTP request per command to a downstream service, and a
//! background health poller that keeps `/ready` cheap.
//!
//! Choices worth knowing:
//! - One pooled `reqwest` client, HTTP/1.1, TLS through the shared rustls configuration
//!   (system trust store honouring `SSL_CERT_FILE`, plus `CLOCK_REST_CA_FILE`).
//! - Redirects are never followed: a 3xx is a failure, so the bearer token never travels to
//!   a host the operator did not configure.
//! - Proxy variables (`HTTPS_PROXY`, ...) are ignored: the downstream is addressed directly,
//!   so the token and commands are never handed to an intermediary nobody configured for
//!   this service.
//! - `CLOCK_REST_TIMEOUT_MS` bounds each request from connect to the last body byte.
//! - Failures are logged with the status and at most 1 KiB of the answer. A downstream may
//!   echo the request (token included) in its error body, so up to 64 KiB of the answer is
//!   read and every configured secret in it replaced by `<redacted>` *before* it is cut to
//!   1 KiB: a secret straddling the cut cannot leave its first half in the log.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Client, Response, Url, redirect};
use tokio::task::JoinHandle;

use super::{BoxFuture, Transport, TransportError};
use crate::config::RestConfig;
use crate::domain::Envelope;
use crate::shared::Redactor;
use crate::tls::{ClientTls, client_config};

const NAME: &str = "rest";

/// How much of a failed answer's body goes into the log.
const LOGGED_BODY_LIMIT: usize = 1024;

/// How much of an answer is read just to keep its connection reusable, and how much of a
/// failed answer is read to redact it (far more than is logged, so that a secret which
/// starts inside the logged part is read whole).
const DRAINED_BODY_LIMIT: usize = 64 * 1024;

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// Delivers commands to a downstream REST service.
pub struct RestTransport {
    client: Client,
    base_url: Url,
    timeout: Duration,
    /// Scrubs configured secrets out of logged answers.
    redactor: Redactor,
    /// Set by the health poller; always `true` without `CLOCK_REST_HEALTH_PATH`.
    ready: Arc<AtomicBool>,
    /// The health poller, stopped by `close` (or when the transport is dropped).
    poller: Mutex<Option<JoinHandle<()>>>,
}

impl RestTransport {
    /// Builds the pooled HTTP client and, with a health path, starts the readiness poller
    /// (its first poll runs at once; until one succeeds the transport is not ready).
    /// `redactor` scrubs the configuration's secrets out of logged answers.
    pub async fn connect(
        config: RestConfig,
        redactor: Redactor,
    ) -> Result<Arc<Self>, TransportError> {
        let client = build_client(&config)?;
        let health_url = config
            .health_path
            .as_deref()
            .map(|path| health_url(&config.base_url, path));
        let ready = Arc::new(AtomicBool::new(health_url.is_none()));
        let poller = health_url.map(|url| {
            tokio::spawn(poll_health(
                client.clone(),
                url,
                config.health_interval,
                ready.clone(),
            ))
        });
        Ok(Arc::new(Self {
            client,
            base_url: config.base_url,
            timeout: config.timeout,
            redactor,
            ready,
            poller: Mutex::new(poller),
        }))
    }

    fn stop_poller(&self) {
        let handle = match self.poller.lock() {
            Ok(mut guard) => guard.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(handle) = handle {
            handle.abort();
        }
    }
}

impl Drop for RestTransport {
    fn drop(&mut self) {
        self.stop_poller();
    }
}

/// The client shared by commands and health polls: default headers carry the token.
fn build_client(config: &RestConfig) -> Result<Client, TransportError> {
    let failed = |message: String| TransportError::Failed {
        transport: NAME,
        message,
    };
    let mut tls = client_config(&ClientTls {
        ca_file: config
            .ca_file
            .as_deref()
            .map(|path| (path, "CLOCK_REST_CA_FILE")),
        ..Default::default()
    })
    .map_err(|e| failed(e.to_string()))?;
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];

    let mut headers = HeaderMap::new();
    if let Some(token) = &config.token {
        let mut value = HeaderValue::try_from(format!("Bearer {}", token.expose()))
            .map_err(|_| {
                failed(
                    "CLOCK_REST_TOKEN=<redacted> is invalid: it holds characters that cannot go into an HTTP header"
                        .to_owned(),
                )
            })?;
        // Keeps the value out of reqwest's and hyper's debug output.
        value.set_sensitive(true);
        headers.insert(AUTHORIZATION, value);
    }

    Client::builder()
        .tls_backend_preconfigured(tls)
        .default_headers(headers)
        .redirect(redirect::Policy::none())
        .no_proxy()
        .timeout(config.timeout)
        .connect_timeout(config.timeout)
        .pool_idle_timeout(Duration::from_secs(90))
        .tcp_nodelay(true)
        .build()
        .map_err(|e| failed(format!("cannot build the HTTP client: {e}")))
}

/// `<base>/clocks/<deviceId>/<suffix>`: the base's trailing `/` dropped, the device id
/// percent-encoded as one path segment.
fn command_url(base: &Url, device_id: &str, suffix: &str) -> Url {
    let mut url = base.clone();
    if let Ok(mut segments) = url.path_segments_mut() {
        segments
            .pop_if_empty()
            .extend(["clocks", device_id, suffix]);
    }
    url
}

/// `<base><health_path>`: the base's trailing `/` dropped; `health_path` starts with `/`
/// (config checks it) and may carry a query.
fn health_url(base: &Url, health_path: &str) -> Url {
    let (path, query) = match health_path.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (health_path, None),
    };
    let mut url = base.clone();
    let joined = format!("{}{path}", base.path().trim_end_matches('/'));
    url.set_path(&joined);
    url.set_query(query);
    url
}

/// Polls the health URL every `interval`, first at once; 2xx means ready. Logs changes
/// only, so a downstream that stays down does not flood the log.
async fn poll_health(client: Client, url: Url, interval: Duration, ready: Arc<AtomicBool>) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last: Option<bool> = None;
    loop {
        ticker.tick().await;
        let outcome = match client.get(url.clone()).send().await {
            Ok(response) => {
                let status = response.status();
                discard_body(response).await;
                if status.is_success() {
                    Ok(())
                } else {
                    Err(format!("status {}", status.as_u16()))
                }
            }
            Err(e) => Err(describe(&e)),
        };
        let now_ready = outcome.is_ok();
        ready.store(now_ready, Ordering::Release);
        if last != Some(now_ready) {
            match outcome {
                Ok(()) => tracing::info!(transport = NAME, path = url.path(), "downstream healthy"),
                Err(reason) => tracing::warn!(
                    transport = NAME,
                    path = url.path(),
                    reason,
                    "downstream health check failed; not ready"
                ),
            }
        }
        last = Some(now_ready);
    }
}

/// What went wrong, from the error's cause chain (that is what explains a TLS or connect
/// failure); reqwest's own message is left out because it only repeats the URL.
fn describe(err: &reqwest::Error) -> String {
    let mut text = if err.is_timeout() {
        "timed out".to_owned()
    } else if err.is_connect() {
        "cannot connect".to_owned()
    } else {
        "request failed".to_owned()
    };
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Reads and drops a small answer body so its connection can go back to the pool (an
/// unread body closes it); a large or failing body is simply abandoned.
async fn discard_body(mut response: Response) {
    let mut read = 0;
    while read < DRAINED_BODY_LIMIT {
        match response.chunk().await {
            Ok(Some(chunk)) => read += chunk.len(),
            Ok(None) | Err(_) => break,
        }
    }
}

/// At most [`LOGGED_BODY_LIMIT`] bytes of `response`'s body for the log, with secrets
/// redacted first (see the module doc).
async fn body_excerpt(mut response: Response, redactor: &Redactor) -> String {
    let mut bytes = Vec::new();
    let mut complete = false;
    while bytes.len() < DRAINED_BODY_LIMIT {
        match response.chunk().await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
            Ok(None) => {
                complete = true;
                break;
            }
            Err(_) => break,
        }
    }
    let unread = !complete || bytes.len() > DRAINED_BODY_LIMIT;
    bytes.truncate(DRAINED_BODY_LIMIT);
    let text = redactor.redact(&String::from_utf8_lossy(&bytes));
    excerpt(text, unread)
}

/// `text` cut to [`LOGGED_BODY_LIMIT`] bytes at a char boundary; `…` marks a cut, also one
/// made earlier (`cut_before`).
fn excerpt(mut text: String, cut_before: bool) -> String {
    let mut truncated = cut_before;
    if text.len() > LOGGED_BODY_LIMIT {
        let mut end = LOGGED_BODY_LIMIT;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        truncated = true;
    }
    if truncated {
        text.push('…');
    }
    text
}

impl RestTransport {
    async fn deliver(&self, envelope: &Envelope) -> Result<(), TransportError> {
        let (method, suffix) = envelope.command.command_type().rest_route();
        let url = command_url(&self.base_url, envelope.device_id.as_str(), suffix);
        let body = envelope.rest_body();
        let mut request = self
            .client
            .request(method.clone(), url)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .body(body);
        // Request ids are cleaned at the edge (no control characters), so this only fails
        // for values no header can hold; the command still goes, without the header.
        match HeaderValue::from_bytes(envelope.request_id.as_bytes()) {
            Ok(v) => request = request.header(X_REQUEST_ID.clone(), v),
            Err(_) => tracing::debug!(transport = NAME, "request id not sendable as a header"),
        }
        if let Ok(v) = HeaderValue::from_str(&envelope.command_id) {
            request = request.header(IDEMPOTENCY_KEY.clone(), v);
        }

        let path = format!("/clocks/{}/{suffix}", envelope.device_id.as_str());
        // Both failure lines name the request the same way; then what went wrong.
        macro_rules! failure {
            ($($what:tt)+) => {
                tracing::warn!(
                    transport = NAME,
                    %method,
                    path,
                    request_id = envelope.request_id.as_str(),
                    command_id = envelope.command_id.as_str(),
                    $($what)+
                )
            };
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(e) => {
                let reason = describe(&e);
                failure!(error = reason, "downstream request failed");
                return Err(if e.is_timeout() {
                    TransportError::Timeout {
                        transport: NAME,
                        timeout_ms: self.timeout.as_millis() as u64,
                    }
                } else {
                    TransportError::Failed {
                        transport: NAME,
                        message: reason,
                    }
                });
            }
        };
        let status = response.status();
        if status.is_success() {
            // Read before answering so the connection is back in the pool for the next
            // command; bounded by the same per-request timeout.
            discard_body(response).await;
            return Ok(());
        }
        let location = response
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                self.redactor
                    .redact(v)
                    .chars()
                    .take(256)
                    .collect::<String>()
            });
        let body = body_excerpt(response, &self.redactor).await;
        failure!(
            status = status.as_u16(),
            location = location.as_deref(),
            body = ?body,
            "downstream refused the command"
        );
        Err(TransportError::Failed {
            transport: NAME,
            message: if status.is_redirection() {
                format!("downstream answered {status} (redirects are not followed)")
            } else {
                format!("downstream answered {status}")
            },
        })
    }
}

impl Transport for RestTransport {
    fn name(&self) -> &'static str {
        NAME
    }

    fn send<'a>(&'a self, envelope: &'a Envelope) -> BoxFuture<'a, Result<(), TransportError>> {
        Box::pin(self.deliver(envelope))
    }

    fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        // Requests in flight hold their own client handle and finish on their own; the
        // server has drained before close is called. Only the poller needs stopping.
        Box::pin(async move { self.stop_poller() })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::shared::Secret;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn command_urls_drop_the_base_trailing_slash_and_encode_the_device_id() {
        assert_eq!(
            command_url(&url("https://h.example/api/"), "clock-1", "alarms").as_str(),
            "https://h.example/api/clocks/clock-1/alarms"
        );
        assert_eq!(
            command_url(&url("https://h.example"), "clock_1", "brightness").as_str(),
            "https://h.example/clocks/clock_1/brightness"
        );
        assert_eq!(
            command_url(&url("http://127.0.0.1:9/a/b"), "a b/../c?#%", "messages").as_str(),
            "http://127.0.0.1:9/a/b/clocks/a%20b%2F..%2Fc%3F%23%25/messages"
        );
    }

    #[test]
    fn a_secret_straddling_the_logged_limit_is_redacted_before_the_cut() {
        let secrets = [Secret::new("tok-0123456789"), Secret::new("pw-abc")];
        let redactor = Redactor::new(&secrets);
        // The token starts 5 bytes before the cut: cutting first would log "tok-0".
        let body = format!("{}tok-0123456789 pw-abc", "x".repeat(LOGGED_BODY_LIMIT - 5));
        let logged = excerpt(redactor.redact(&body), false);
        assert!(!logged.contains("tok-0"), "{logged}");
        assert!(logged.ends_with("x<reda…"), "{logged}");
        assert!(logged.len() <= LOGGED_BODY_LIMIT + '…'.len_utf8());
        // Short answers are logged whole, redacted.
        assert_eq!(
            excerpt(redactor.redact("echo: tok-0123456789/pw-abc"), false),
            "echo: <redacted>/<redacted>"
        );
    }

    #[test]
    fn answers_are_cut_at_a_char_boundary() {
        let text = format!("{}é", "x".repeat(LOGGED_BODY_LIMIT - 1));
        assert_eq!(
            excerpt(text, false),
            format!("{}…", "x".repeat(LOGGED_BODY_LIMIT - 1))
        );
        assert_eq!(excerpt("short".to_owned(), true), "short…");
    }

    #[test]
    fn health_urls_join_base_and_path() {
        assert_eq!(
            health_url(&url("https://h.example/api/"), "/healthz").as_str(),
            "https://h.example/api/healthz"
        );
        assert_eq!(
            health_url(&url("https://h.example"), "/status?deep=1").as_str(),
            "https://h.example/status?deep=1"
        );
    }
}
