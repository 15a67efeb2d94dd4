//! Wiring: config -> transports -> state -> listener. Bind first, then serve until the
//! shutdown future resolves.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::config::{Config, Sender};
use crate::dispatch::Dispatcher;
use crate::http::server::{Timeouts, serve};
use crate::http::{AppState, router};
use crate::security::AuthThrottle;
use crate::tls;
use crate::transport::fanout::Fanout;
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
    #[error("{0}")]
    Transport(#[from] TransportError),
}

/// A bound, ready-to-serve application.
pub struct Application {
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    state: Arc<AppState>,
    timeouts: Timeouts,
}

/// Builds the configured transports (one, or a fan-out over several).
pub async fn build_transport(config: &Config) -> Result<Arc<dyn Transport>, StartupError> {
    let mut transports: Vec<Arc<dyn Transport>> = Vec::new();
    for sender in &config.senders {
        match sender {
            Sender::Mqtt => {
                if let Some(mqtt) = &config.mqtt {
                    transports.push(MqttTransport::connect(mqtt.clone()).await?);
                }
            }
            Sender::Rest => {
                if let Some(rest) = &config.rest {
                    transports.push(RestTransport::connect(rest.clone()).await?);
                }
            }
        }
    }
    Ok(match transports.len() {
        1 => transports.remove(0),
        _ => Arc::new(Fanout::new(transports)),
    })
}

impl Application {
    /// Builds the transports from `config`, then binds.
    pub async fn build(config: Config) -> Result<Self, StartupError> {
        let transport = build_transport(&config).await?;
        Self::build_with_transport(config, transport).await
    }

    /// Binds with a given transport (tests use this to plug in a fake).
    pub async fn build_with_transport(
        config: Config,
        transport: Arc<dyn Transport>,
    ) -> Result<Self, StartupError> {
        let tls = match &config.http.tls {
            Some(files) => Some(TlsAcceptor::from(tls::server_config(files)?)),
            None => None,
        };
        let addr = config.http.addr;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| StartupError::Bind { addr, source })?;
        if config.legacy_token {
            tracing::warn!(
                "using the legacy API_AUTH_TOKEN (one token, scope *); prefer API_AUTH_CREDENTIALS with per-caller ids and scopes"
            );
        }
        let state = Arc::new(AppState {
            dispatcher: Dispatcher::new(transport),
            credentials: config.credentials.clone(),
            throttle: AuthThrottle::new(config.auth_fail_limit_per_min),
            require_tls: config.http.require_tls,
            trust_proxy_tls: config.http.trust_proxy_tls,
            readiness_require_auth: config.readiness_require_auth,
            max_body_bytes: config.http.max_body_bytes,
            read_timeout: config.http.read_timeout,
        });
        let timeouts = Timeouts {
            read_header: config.http.read_header_timeout,
            write: config.http.write_timeout,
            idle: config.http.idle_timeout,
            shutdown: config.http.shutdown_timeout,
        };
        Ok(Self {
            listener,
            tls,
            state,
            timeouts,
        })
    }

    /// The address actually bound (port 0 becomes a real port).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// Serves until `shutdown` resolves, drains in-flight requests, then closes the transports.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) {
        let addr = self.local_addr();
        tracing::info!(%addr, tls = self.tls.is_some(), "listening");
        let app = router(self.state.clone());
        serve(self.listener, self.tls, app, self.timeouts, shutdown).await;
        self.state.dispatcher.close().await;
        tracing::info!("stopped");
    }
}
