//! The seam between the API and the outside world: the [`Transport`] trait and its adapters.
//!
//! - `mqtt`: publishes to a broker and waits for the broker's acknowledgement.
//! - `rest`: calls a downstream HTTP service.
//! - `fanout`: sends to several transports at once; is itself a transport.
//! - `lametric`: LaMetric TIME clocks, each over its own HTTP API (SPEC 8.3).

pub mod fanout;
pub mod lametric;
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
    /// The device answered and refused the command (a LaMetric 4xx): its record ends
    /// `failed` with `device_rejected` and the device's message; not retried.
    #[error("{transport}: the device refused the command: {message}")]
    Rejected {
        transport: &'static str,
        message: String,
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
            | Self::Rejected { transport, .. }
            | Self::Failed { transport, .. } => vec![transport],
            Self::Many(all) => all.iter().flat_map(Self::transports).collect(),
        }
    }

    /// The device's own refusal, when that is what this is (SPEC 8.3 `device_rejected`).
    pub fn rejection(&self) -> Option<&str> {
        match self {
            Self::Rejected { message, .. } => Some(message),
            Self::Many(all) => all.iter().find_map(Self::rejection),
            _ => None,
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
        !profile.mqtt_only() && !profile.direct()
    }

    /// Whether the transport can deliver right now. Must be cheap: `/ready` calls it on
    /// every probe, so transports track readiness in the background.
    fn is_ready(&self) -> bool;

    /// Finishes in-flight deliveries and releases connections (called once, at shutdown).
    fn close(&self) -> BoxFuture<'_, ()>;
}
