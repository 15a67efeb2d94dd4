//! Fan-out: one command to several transports, concurrently; accepted only if all accept.

use std::sync::Arc;

use futures_util::future::join_all;

use super::{BoxFuture, Transport, TransportError};
use crate::domain::Envelope;

/// Sends to every inner transport at once (SPEC 4.3).
pub struct Fanout {
    transports: Vec<Arc<dyn Transport>>,
}

impl Fanout {
    pub fn new(transports: Vec<Arc<dyn Transport>>) -> Self {
        Self { transports }
    }
}

impl Transport for Fanout {
    fn name(&self) -> &'static str {
        "fanout"
    }

    fn send<'a>(&'a self, envelope: &'a Envelope) -> BoxFuture<'a, Result<(), TransportError>> {
        Box::pin(async move {
            let results = join_all(
                self.transports
                    .iter()
                    .filter(|t| t.reaches(&envelope.profile))
                    .map(|t| t.send(envelope)),
            )
            .await;
            let mut failures: Vec<TransportError> =
                results.into_iter().filter_map(Result::err).collect();
            match failures.len() {
                0 => Ok(()),
                1 => Err(failures.remove(0)),
                _ => Err(TransportError::Many(failures)),
            }
        })
    }

    fn reaches(&self, profile: &crate::domain::Profile) -> bool {
        self.transports.iter().any(|t| t.reaches(profile))
    }

    fn is_ready(&self) -> bool {
        self.transports.iter().all(|t| t.is_ready())
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            join_all(self.transports.iter().map(|t| t.close())).await;
        })
    }
}
