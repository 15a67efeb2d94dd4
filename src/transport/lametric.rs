//! LaMetric TIME (SPEC 8.3): the clock reached directly over its local HTTP API, one pooled
//! client per clock of the devices file. Its answer ends the command: a 2xx is accepted
//! (the core records `succeeded`), a 4xx is [`TransportError::Rejected`] with the clock's
//! first error message (`failed`, `device_rejected`), and no answer — refused, timed out,
//! a 5xx — is a failed dispatch.
//!
//! - HTTP Basic authentication, user `dev`, password the device's API key. The key is a
//!   [`Secret`]: the header is marked sensitive, and the key is replaced by `<redacted>`
//!   in anything taken from an answer (a clock may echo it).
//! - `https://`: the clock's certificate is self-signed, so it is checked by its SHA-256
//!   only ([`crate::tls::pinned_client_config`]); `insecure_tls` accepts any (start-up
//!   warns). `http://` only with `ALLOW_INSECURE_DOWNSTREAM_HTTP=true` (the devices file
//!   refuses it otherwise).
//! - Redirects are never followed and proxy variables ignored (the key goes to the clock
//!   only); `timeout_ms` bounds each request from connect to the last byte, and at most
//!   64 KiB of an answer is read.
//! - Presence (SPEC 11.1): each clock is asked `GET /api/v2/device` at start, then every
//!   `PRESENCE_POLL_SECS`, through the same client (pin, key, timeout); a 200 is online
//!   with its name, model, version and serial as `info`, anything else offline.
//! - A message is dismissed after `durationSeconds` (`DELETE …/notifications/<id>`), from
//!   a task of its own: best effort, a restart in between leaves it on the clock.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, HeaderValue};
use reqwest::{Client, Url, redirect};
use tokio::sync::watch;

use super::{BoxFuture, Transport, TransportError};
use crate::domain::lametric::{self, BASIC_USER, CertCheck, LametricDevice, Method, Request};
use crate::domain::wire::Publication;
use crate::domain::{DeviceId, Devices, Envelope, Profile};
use crate::presence::Presence;
use crate::shared::Secret;

const NAME: &str = "lametric";

/// The most of an answer that is read.
const ANSWER_LIMIT: usize = 64 * 1024;

/// The LaMetric clocks of the devices file, each with its client.
pub struct LametricTransport {
    clocks: HashMap<DeviceId, Arc<Clock>>,
}

/// One clock: its client, base URL and key.
struct Clock {
    client: Client,
    base: Url,
    api_key: Secret,
    /// `api_key` as the `Authorization` header carries it, redacted like the key.
    credentials: Secret,
    device_id: DeviceId,
}

impl LametricTransport {
    /// A client for every LaMetric clock in `devices`; `None` when there is none. An
    /// `insecure_tls` clock is named in a warning.
    pub fn build(devices: &Devices) -> Result<Option<Arc<Self>>, TransportError> {
        let mut clocks = HashMap::new();
        for (id, profile) in devices.iter() {
            if let Profile::Lametric(device) = profile {
                if device.tls == CertCheck::Insecure {
                    tracing::warn!(
                        device_id = %id,
                        "LaMetric clock {id}: its certificate is not checked (insecure_tls = true); pin it with cert_sha256"
                    );
                }
                clocks.insert(id.clone(), Arc::new(Clock::new(id, device)?));
            }
        }
        Ok((!clocks.is_empty()).then(|| Arc::new(Self { clocks })))
    }

    /// Delivers a held alarm (what [`Profile::held_alarm_now`] gave: the request's path
    /// and body) to the clock of `device_id`; its answer ends the command as any
    /// command's does.
    pub async fn deliver_held(
        &self,
        device_id: &DeviceId,
        held: &Publication,
    ) -> Result<(), TransportError> {
        let clock = self.clocks.get(device_id).ok_or_else(|| {
            failed(format!(
                "{device_id} is not a LaMetric clock of the devices file"
            ))
        })?;
        clock.send(&lametric::held_request(held)).await.map(drop)
    }

    /// Polls every clock for presence (SPEC 11.1: at once, then every `PRESENCE_POLL_SECS`),
    /// each on its own so a clock that stalls delays no other, until `stop` turns true.
    pub async fn poll_presence(
        self: Arc<Self>,
        presence: Arc<Presence>,
        every: Duration,
        stop: watch::Receiver<bool>,
    ) {
        let polls = self.clocks.values().map(|clock| {
            clock
                .clone()
                .poll_until(presence.clone(), every, stop.clone())
        });
        futures_util::future::join_all(polls).await;
    }
}

impl Clock {
    fn new(id: &DeviceId, device: &LametricDevice) -> Result<Self, TransportError> {
        let tls = match &device.tls {
            CertCheck::Pinned(pin) => crate::tls::pinned_client_config(pin.0),
            CertCheck::Insecure => crate::tls::insecure_client_config(),
            // An http:// clock never speaks TLS (redirects are not followed), but reqwest
            // needs a TLS backend to build a client (no process-wide provider is installed):
            // one that accepts no certificate at all.
            CertCheck::PlainHttp => crate::tls::pinned_client_config([0; 32]),
        };
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        let builder = Client::builder()
            .default_headers(headers)
            .redirect(redirect::Policy::none())
            .no_proxy()
            .timeout(device.timeout)
            .connect_timeout(device.timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true);
        let mut tls = tls.map_err(|e| failed(format!("{id}: {e}")))?;
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let builder = builder.tls_backend_preconfigured(tls);
        let client = builder
            .build()
            .map_err(|e| failed(format!("{id}: cannot build the HTTP client: {e}")))?;
        let base = Url::parse(device.url.as_str())
            .map_err(|e| failed(format!("{id}: url {}: {e}", device.url.as_str())))?;
        Ok(Self {
            client,
            base,
            api_key: device.api_key.clone(),
            credentials: Secret::new(lametric::basic_credentials(device.api_key.expose())),
            device_id: id.clone(),
        })
    }

    /// One request; `Ok` with the notification id the clock gave, if any.
    async fn send(&self, request: &Request) -> Result<Option<String>, TransportError> {
        let (status, body) = self.call(request).await?;
        if status.is_success() {
            return Ok(lametric::notification_id(&body));
        }
        let message = lametric::error_message(&body, &self.secrets())
            .unwrap_or_else(|| format!("HTTP {}", status.as_u16()));
        if status.is_client_error() {
            return Err(TransportError::Rejected {
                transport: NAME,
                message,
            });
        }
        Err(failed(format!(
            "{}: the clock answered {}: {message}",
            self.device_id,
            status.as_u16()
        )))
    }

    /// One request and the clock's answer: its status and at most [`ANSWER_LIMIT`] bytes
    /// of its body; `Err` when there was no answer.
    async fn call(
        &self,
        request: &Request,
    ) -> Result<(reqwest::StatusCode, Vec<u8>), TransportError> {
        let url = self
            .base
            .join(&request.path)
            .map_err(|e| failed(format!("{}: {e}", request.path)))?;
        let method = match request.method {
            Method::Get => reqwest::Method::GET,
            Method::Post => reqwest::Method::POST,
            Method::Put => reqwest::Method::PUT,
            Method::Delete => reqwest::Method::DELETE,
        };
        // reqwest marks the Authorization header sensitive (kept out of debug output).
        let mut call = self
            .client
            .request(method, url)
            .basic_auth(BASIC_USER, Some(self.api_key.expose()));
        if let Some(body) = &request.body {
            call = call
                .header(CONTENT_TYPE, "application/json")
                .body(body.clone());
        }
        let mut answer = call.send().await.map_err(|e| self.unreachable(&e))?;
        let status = answer.status();
        let mut body = Vec::new();
        while let Some(chunk) = answer.chunk().await.map_err(|e| self.unreachable(&e))? {
            let room = ANSWER_LIMIT.saturating_sub(body.len());
            body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if body.len() >= ANSWER_LIMIT {
                break;
            }
        }
        Ok((status, body))
    }

    /// Asks the clock whether it is there (`GET /api/v2/device`) at once, then every
    /// `every`, and tells `presence` (SPEC 11.1), until `stop` turns true. A refused key
    /// (401/403) is logged once, naming the device, until the clock accepts it again.
    async fn poll_until(
        self: Arc<Self>,
        presence: Arc<Presence>,
        every: Duration,
        mut stop: watch::Receiver<bool>,
    ) {
        let request = lametric::device_state();
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut refused_logged = false;
        loop {
            let answer = tokio::select! {
                _ = stop.wait_for(|stopped| *stopped) => return,
                answer = async {
                    tick.tick().await;
                    self.call(&request).await
                } => answer,
            };
            let polled = match answer {
                Ok((status, body)) if status == reqwest::StatusCode::OK => {
                    refused_logged = false;
                    Some(lametric::device_info(&body, &self.secrets()))
                }
                Ok((status, _)) => {
                    let refused = matches!(status.as_u16(), 401 | 403);
                    if refused && !refused_logged {
                        refused_logged = true;
                        tracing::warn!(
                            device_id = %self.device_id,
                            status = status.as_u16(),
                            "LaMetric clock {}: it refuses the API key (HTTP {}); check api_key in the devices file (the key is on the clock's settings page in the LaMetric app)",
                            self.device_id,
                            status.as_u16()
                        );
                    }
                    tracing::debug!(device_id = %self.device_id, status = status.as_u16(), "presence poll: the clock answered, not 200");
                    None
                }
                Err(e) => {
                    tracing::debug!(device_id = %self.device_id, error = %e, "presence poll: no answer");
                    None
                }
            };
            presence.polled(&self.device_id, polled, chrono::Utc::now());
        }
    }

    /// A request that got no answer, described without the key (reqwest's errors name the
    /// URL, which carries no credentials: they go in the header).
    fn unreachable(&self, e: &reqwest::Error) -> TransportError {
        let what = if e.is_timeout() {
            "no answer in time".to_owned()
        } else if e.is_connect() {
            "cannot connect".to_owned()
        } else {
            "the request failed".to_owned()
        };
        let mut chain = String::new();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            chain.push_str(": ");
            chain.push_str(&s.to_string());
            source = s.source();
        }
        let text = format!("{}: {what}{chain}", self.device_id);
        failed(lametric::redact(&text, &self.secrets()))
    }

    fn secrets(&self) -> [&str; 2] {
        [self.api_key.expose(), self.credentials.expose()]
    }

    /// Dismisses notification `id` after `after` (best effort, logged).
    fn dismiss_later(self: Arc<Self>, id: String, after: Duration) {
        let Some(request) = lametric::dismiss(&id) else {
            tracing::warn!(device_id = %self.device_id, "the clock's notification id is not one that can be dismissed; it stays until dismissed on the clock");
            return;
        };
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            if let Err(e) = self.send(&request).await {
                tracing::warn!(device_id = %self.device_id, error = %e, "dismissing a LaMetric notification failed; it stays until dismissed on the clock");
            }
        });
    }
}

impl Transport for LametricTransport {
    fn name(&self) -> &'static str {
        NAME
    }

    fn send<'a>(&'a self, envelope: &'a Envelope) -> BoxFuture<'a, Result<(), TransportError>> {
        Box::pin(async move {
            let Profile::Lametric(device) = &envelope.profile else {
                return Err(failed("not a LaMetric clock".to_owned()));
            };
            let clock = self.clocks.get(&envelope.device_id).ok_or_else(|| {
                failed(format!(
                    "{} is not a LaMetric clock of the devices file",
                    envelope.device_id
                ))
            })?;
            let id = clock.send(&device.request(&envelope.command)).await?;
            if let (Some(id), Some(after)) = (id, LametricDevice::dismiss_after(&envelope.command))
            {
                clock.clone().dismiss_later(id, after);
            }
            Ok(())
        })
    }

    fn reaches(&self, profile: &Profile) -> bool {
        matches!(profile, Profile::Lametric(_))
    }

    /// A clock that is away fails its own commands; it never makes the server unready.
    fn is_ready(&self) -> bool {
        true
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

fn failed(message: String) -> TransportError {
    TransportError::Failed {
        transport: NAME,
        message,
    }
}
