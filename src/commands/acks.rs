//! Device acknowledgements (SPEC 7.4): the loop that applies what the MQTT link's
//! subscription received. Checked for shape by [`crate::transport::mqtt::acks::parse`];
//! applied here only to a command that has left the gateway (`pending` with its publish
//! under way, or `sent`; never a `scheduled` one) of a device whose profile
//! acknowledges, and never to another device's. Everything else is ignored and counted,
//! never an error.

use std::sync::Arc;

use chrono::Utc;
use tokio::sync::{mpsc, watch};

use super::records::Tracker;
use crate::metrics::Metrics;
use crate::store::{AckOutcome, CommandStatus, FinalOutcome, StatusReason};
use crate::transport::mqtt::acks;

/// Acknowledgements waiting to be applied; past it they are dropped (and counted).
pub const ACK_QUEUE: usize = 4096;

/// Applies the acknowledgements of `queue` until it closes or `stop`.
pub(super) async fn apply_until(
    tracker: Arc<Tracker>,
    metrics: Arc<Metrics>,
    prefix: String,
    mut queue: mpsc::Receiver<(String, Vec<u8>)>,
    mut stop: watch::Receiver<bool>,
) {
    let acks = Acks {
        tracker,
        metrics,
        prefix,
    };
    loop {
        let (topic, payload) = tokio::select! {
            received = queue.recv() => match received {
                Some(ack) => ack,
                None => return,
            },
            _ = stop.wait_for(|stopped| *stopped) => return,
        };
        acks.apply(&topic, &payload).await;
    }
}

struct Acks {
    tracker: Arc<Tracker>,
    metrics: Arc<Metrics>,
    prefix: String,
}

impl Acks {
    async fn apply(&self, topic: &str, payload: &[u8]) {
        let ack = match acks::parse(&self.prefix, topic, payload) {
            Ok(ack) => ack,
            Err(why) => {
                self.ignored(why.label(), topic);
                return;
            }
        };
        // Only a command that has left the gateway, of a device that acknowledges: a
        // status only moves forward (`scheduled` → `sent` → final), so what is read here
        // still holds when `complete` applies it, or the record is final by then.
        let record = match self.tracker.store.get(&ack.command_id, Utc::now()).await {
            Ok(Some(record)) => record,
            Ok(None) => return self.ignored("unknown_command", topic),
            Err(e) => {
                self.tracker.failed("reading an acknowledged record", &e);
                self.metrics.record_ack("ignored");
                return;
            }
        };
        if record.device_id != ack.device_id {
            return self.ignored("wrong_device", topic);
        }
        if record.status.is_final() {
            return self.ignored("already_final", topic);
        }
        if !record.device_acks {
            return self.ignored("not_acknowledging", topic);
        }
        if !matches!(record.status, CommandStatus::Pending | CommandStatus::Sent) {
            return self.ignored("not_sent", topic);
        }
        let reason = match (ack.outcome, ack.reason) {
            (FinalOutcome::Failed, Some(message)) => {
                Some(StatusReason::new("device_failed", message))
            }
            (FinalOutcome::Failed, None) => Some(StatusReason::new("device_failed", "")),
            (FinalOutcome::Succeeded, _) => None,
        };
        match self
            .tracker
            .complete(
                "applying an acknowledgement",
                &ack.command_id,
                &ack.device_id,
                ack.outcome,
                reason,
            )
            .await
        {
            Ok(AckOutcome::Applied(record)) => {
                self.metrics.record_ack("applied");
                tracing::debug!(command_id = %record.command_id, status = record.status.as_str(), "acknowledgement applied");
            }
            Ok(AckOutcome::Unknown) => self.ignored("unknown_command", topic),
            Ok(AckOutcome::WrongDevice) => self.ignored("wrong_device", topic),
            Ok(AckOutcome::AlreadyFinal(_)) => self.ignored("already_final", topic),
            Ok(AckOutcome::Expired) => self.ignored("expired", topic),
            Err(_) => self.metrics.record_ack("ignored"),
        }
    }

    fn ignored(&self, why: &'static str, topic: &str) {
        self.metrics.record_ack("ignored");
        // Debug only: a misbehaving device must not be able to flood the log.
        tracing::debug!(why, topic = %crate::shared::loggable_path(topic), "acknowledgement ignored");
    }
}
