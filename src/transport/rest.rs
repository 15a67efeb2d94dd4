//! REST transport (SPEC 4.2). Placeholder until the real client lands.

use std::sync::Arc;

use super::{BoxFuture, Transport, TransportError};
use crate::config::RestConfig;
use crate::domain::Envelope;

/// Publishes commands to a downstream REST service.
pub struct RestTransport {
    _config: RestConfig,
}

impl RestTransport {
    /// Builds the HTTP client.
    pub async fn connect(config: RestConfig) -> Result<Arc<Self>, TransportError> {
        Ok(Arc::new(Self { _config: config }))
    }
}

impl Transport for RestTransport {
    fn name(&self) -> &'static str {
        "rest"
    }

    fn send<'a>(&'a self, _envelope: &'a Envelope) -> BoxFuture<'a, Result<(), TransportError>> {
        Box::pin(async { Err(TransportError::NotConnected { transport: "rest" }) })
    }

    fn is_ready(&self) -> bool {
        false
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}
