//! The seam between the API and the outside world: the [`Transport`] trait and its adapters.
//!
//! - `mqtt`: publishes to a broker and waits for the broker's acknowledgement.
//! - `rest`: calls a downstream HTTP service.
//! - `fanout`: sends to several transports at once; is itself a transport.

pub mod fanout;
pub mod mqtt;
pub mod rest;

use crate::domain::{Envelope, Profile};

/// A boxed, sendable future (keeps [`Transport`] object safe without `async-trait`).
pub use futures_util::future::BoxFuture;

/// Why a transport did not accept a command. Never shown to API callers (they get a 502).
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("{transport}: not connected")]
    NotConnected { transport: &'static str },
    #[error("{transport}: no acknowledgement within {timeout_ms} ms")]
    Timeout {
        transport: &'static str,
        timeout_ms: u64,
    },
    #[error("{transport}: {message}")]
    Failed {
        transport: &'static str,
        message: String,
    },
    /// Several transports failed (fan-out); each failure is listed.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Many(Vec<TransportError>),
}

impl TransportError {
    /// Names of the transports that failed, for the audit record.
    pub fn transports(&self) -> Vec<&'static str> {
        match self {
            Self::NotConnected { transport }
            | Self::Timeout { transport, .. }
            | Self::Failed { transport, .. } => vec![transport],
            Self::Many(all) => all.iter().flat_map(Self::transports).collect(),
        }
    }
}

/// An outbound path to the clocks.
pub trait Transport: Send + Sync + 'static {
    /// Short name used in logs, audit records and metrics (`mqtt`, `rest`).
    fn name(&self) -> &'static str;

    /// Delivers one command; resolves `Ok` only once the far side has accepted it.
    fn send<'a>(&'a self, envelope: &'a Envelope) -> BoxFuture<'a, Result<(), TransportError>>;

    /// Whether this transport delivers to a device of `profile`. A fan-out skips the
    /// transports that do not (an AWTRIX clock is reached over MQTT only, SPEC 8.1).
    fn reaches(&self, profile: &Profile) -> bool {
        !profile.mqtt_only()
    }

    /// Whether the transport can deliver right now. Must be cheap: `/ready` calls it on
    /// every probe, so transports track readiness in the background.
    fn is_ready(&self) -> bool;

    /// Finishes in-flight deliveries and releases connections (called once, at shutdown).
    fn close(&self) -> BoxFuture<'_, ()>;
}
