//! MQTT transport (SPEC 4.1). Placeholder until the real client lands.

use std::sync::Arc;

use super::{BoxFuture, Transport, TransportError};
use crate::config::MqttConfig;
use crate::domain::Envelope;

/// Publishes commands to an MQTT broker.
pub struct MqttTransport {
    _config: MqttConfig,
}

impl MqttTransport {
    /// Connects (or starts connecting in the background) to the broker.
    pub async fn connect(config: MqttConfig) -> Result<Arc<Self>, TransportError> {
        Ok(Arc::new(Self { _config: config }))
    }
}

impl Transport for MqttTransport {
    fn name(&self) -> &'static str {
        "mqtt"
    }

    fn send<'a>(&'a self, _envelope: &'a Envelope) -> BoxFuture<'a, Result<(), TransportError>> {
        Box::pin(async { Err(TransportError::NotConnected { transport: "mqtt" }) })
    }

    fn is_ready(&self) -> bool {
        false
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}
