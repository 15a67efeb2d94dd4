//! Device acknowledgements (SPEC 7.4): what the MQTT link's subscription receives, from
//! the client's reader to the record. Checked on the reader ([`AckIntake::offer`]: the
//! shape, a command id the server can have issued, a device that acknowledges;
//! `transport::mqtt::acks`), so junk never takes a place in the queue; applied in batches
//! here only to a command that has left the gateway (`pending` with its publish under
//! way, or `sent`; never a `scheduled` one) of a device whose profile acknowledges, and
//! never to another device's. Everything else is ignored and counted, never an error.
//!
//! A batch costs two rounds of store calls however many acknowledgements it holds: the
//! records are read concurrently (one group commit for `file:`, one pipeline for
//! `redis://`), and the applicable ones completed in one `StateStore::complete_many`. So
//! the store keeps up with a flood on the ack topics, and the real acknowledgements in it
//! are applied (issue 27: 400 of 400 under a flood, where one call per ack lost half).

use std::sync::Arc;

use chrono::Utc;
use tokio::sync::watch;

use super::records::Tracker;
use crate::domain::{DeviceId, Devices};
use crate::metrics::Metrics;
use crate::shared::Folded;
use crate::store::{
    AckOutcome, CommandRecord, CommandStatus, Completion, FinalOutcome, StatusReason,
};
use crate::transport::mqtt::acks::{self, Ack, AckBatches, AckSink};

/// The reader's end: screens what the ack subscription receives and queues the rest.
pub struct AckIntake {
    prefix: String,
    sink: AckSink,
    devices: Arc<Devices>,
    metrics: Arc<Metrics>,
    /// Drops from a full queue are logged at most once a second.
    drops: Folded,
}

impl AckIntake {
    /// One message on the ack subscription. Never waits (it runs on the MQTT client's
    /// reader): refused ones are counted `ignored`, and one that finds the queue full is
    /// dropped and counted `dropped`.
    pub fn offer(&self, topic: &str, payload: &[u8]) {
        let ack = match acks::parse(&self.prefix, topic, payload) {
            Ok(ack) => ack,
            Err(why) => return ignored(&self.metrics, why.label(), topic),
        };
        let acknowledges = |d: &DeviceId| self.devices.profile(d).acknowledges_over_mqtt();
        if let Err(why) = acks::screen(&ack, Utc::now(), acknowledges) {
            return ignored(&self.metrics, why.label(), topic);
        }
        if !self.sink.push(ack) {
            self.metrics.record_ack("dropped");
            if let Some(count) = self.drops.note() {
                tracing::warn!(
                    count,
                    queue = acks::ACK_QUEUE,
                    "acknowledgements dropped: the queue to the state store is full (a flood on the ack topics?)"
                );
            }
        }
    }
}

/// The intake for `prefix` and the loop applying what it queues until `stop`.
pub(super) fn start(
    tracker: Arc<Tracker>,
    metrics: Arc<Metrics>,
    devices: Arc<Devices>,
    prefix: String,
    stop: watch::Receiver<bool>,
) -> (AckIntake, impl Future<Output = ()> + Send + 'static) {
    let (sink, batches) = acks::queue();
    let intake = AckIntake {
        prefix,
        sink,
        devices,
        metrics: metrics.clone(),
        drops: Folded::default(),
    };
    (intake, apply_until(tracker, metrics, batches, stop))
}

async fn apply_until(
    tracker: Arc<Tracker>,
    metrics: Arc<Metrics>,
    mut batches: AckBatches,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let batch = tokio::select! {
            batch = batches.next() => match batch {
                Some(batch) => batch,
                None => return,
            },
            _ = stop.wait_for(|stopped| *stopped) => return,
        };
        apply(&tracker, &metrics, batch).await;
    }
}

/// Applies one batch: reads the records, keeps the acknowledgements that may apply,
/// completes those in one call.
async fn apply(tracker: &Tracker, metrics: &Metrics, batch: Vec<Ack>) {
    let now = Utc::now();
    let reads = batch
        .iter()
        .map(|ack| tracker.store.get(&ack.command_id, now));
    let records = futures_util::future::join_all(reads).await;
    let mut applicable = Vec::new();
    for (ack, record) in batch.into_iter().zip(records) {
        let record = match record {
            Ok(Some(record)) => record,
            Ok(None) => {
                ignored(metrics, "unknown_command", &ack.device_id);
                continue;
            }
            Err(e) => {
                tracker.failed("reading an acknowledged record", &e);
                metrics.record_ack("ignored");
                continue;
            }
        };
        match why_not(&ack, &record) {
            Some(why) => ignored(metrics, why, &ack.device_id),
            None => applicable.push(completion(ack)),
        }
    }
    if applicable.is_empty() {
        return;
    }
    let devices: Vec<String> = applicable.iter().map(|c| c.device_id.clone()).collect();
    let results = tracker.store.complete_many(applicable, Utc::now()).await;
    for (device, result) in devices.iter().zip(results) {
        match result {
            Ok(AckOutcome::Applied(record)) => {
                metrics.record_ack("applied");
                tracker.status_changed(&record);
                tracing::debug!(command_id = %record.command_id, status = record.status.as_str(), "acknowledgement applied");
            }
            Ok(AckOutcome::Unknown) => ignored(metrics, "unknown_command", device),
            Ok(AckOutcome::WrongDevice) => ignored(metrics, "wrong_device", device),
            Ok(AckOutcome::AlreadyFinal(_)) => ignored(metrics, "already_final", device),
            Ok(AckOutcome::Expired) => ignored(metrics, "expired", device),
            Err(e) => {
                tracker.failed("applying an acknowledgement", &e);
                metrics.record_ack("ignored");
            }
        }
    }
}

/// Why `ack` cannot apply to `record`, if it cannot. A status only moves forward
/// (`scheduled` → `sent` → final), so what is read here still holds when `complete`
/// applies it, or the record is final by then (and `complete` says so).
fn why_not(ack: &Ack, record: &CommandRecord) -> Option<&'static str> {
    if record.device_id.as_str() != ack.device_id {
        return Some("wrong_device");
    }
    if record.status.is_final() {
        return Some("already_final");
    }
    if !record.device_acks {
        return Some("not_acknowledging");
    }
    if !matches!(record.status, CommandStatus::Pending | CommandStatus::Sent) {
        return Some("not_sent");
    }
    None
}

fn completion(ack: Ack) -> Completion {
    let reason = match ack.outcome {
        FinalOutcome::Failed => Some(StatusReason::new(
            "device_failed",
            ack.reason.unwrap_or_default(),
        )),
        FinalOutcome::Succeeded => None,
    };
    Completion {
        command_id: ack.command_id,
        device_id: ack.device_id,
        outcome: ack.outcome,
        reason,
    }
}

fn ignored(metrics: &Metrics, why: &'static str, topic_or_device: &str) {
    metrics.record_ack("ignored");
    // Debug only: a misbehaving device must not be able to flood the log.
    tracing::debug!(why, from = %crate::shared::loggable_path(topic_or_device), "acknowledgement ignored");
}
