//! Commands held for a device that is offline (SPEC 11.3): the loop that delivers them,
//! in the order accepted, once the device is back.
//!
//! - **What is held.** With a state store, a command for a device whose presence is
//!   `offline` is written `queued` with its fields ([`generic::Payload::fields`]) instead
//!   of being published into the void ([`super::Commands::plan`]). At delivery the
//!   envelope is rebuilt for the device's profile as the devices file says then.
//! - **When it goes.** At once when this replica learns that the device is back
//!   ([`Presence::subscribe_back_online`]), and on a [`SWEEP`] of the devices that have
//!   queued commands (those queued by another replica, a return this replica missed, a
//!   store that outlived a restart), the first [`FIRST_SWEEP_AFTER`] the start. A device
//!   whose presence is `unknown` counts as online.
//! - **Once, in order.** Everything goes through the store's per-device claim
//!   ([`crate::store::StateStore::claim_queued`]): one claimer at a time delivers a
//!   device's queue, one command after the other, each `mark_sent` before the next. A
//!   delivery that fails, or a device that goes away again, stops the batch; the lease
//!   runs out and the rest is claimed again later. A batch is abandoned once half its
//!   lease has gone, so no other claimer can take it over while it is still delivering.
//! - **A device that answers** (LaMetric, SPEC 8.3): its yes ends the command
//!   `succeeded`, its no (a 4xx) `failed` with `device_rejected`, not retried.
//! - **Expiry.** A held command whose `expiresAt` passes first is `expired` (the claim
//!   applies it) and never delivered.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::sync::{broadcast, watch};

use super::records::Tracker;
use crate::dispatch::{AuditContext, Dispatcher};
use crate::domain::presence::PresenceState;
use crate::domain::{DeviceId, Devices, Envelope, generic};
use crate::metrics::{self, Metrics};
use crate::presence::Presence;
use crate::store::{CommandRecord, Delivery, FinalOutcome, LeaseBatch, StatusReason};

/// How often the devices with queued commands are looked at (and the gauge refreshed).
pub const SWEEP: Duration = Duration::from_secs(1);
/// The first sweep waits this long after start: presence is `unknown` (so online for
/// delivery) until the retained births and wills arrive, and a store that outlived a
/// restart must not hand its queue to a device that is still away.
pub const FIRST_SWEEP_AFTER: Duration = Duration::from_secs(5);
/// Commands of one device claimed at once.
pub const BATCH: usize = 32;
/// How long a claimed batch is this replica's; it is abandoned after half of it.
pub const LEASE: Duration = Duration::from_secs(60);

/// What a held command carries until its delivery: its fields as the REST body has them
/// (the topic is not used: the envelope is rebuilt for the device's profile then).
pub(super) fn delivery_of(command: &crate::domain::Command) -> Delivery {
    Delivery {
        topic: String::new(),
        // Strings and integers cannot fail to serialise.
        payload: serde_json::to_vec(&generic::Payload::fields(command)).unwrap_or_default(),
    }
}

/// Delivers held commands through `dispatcher` until `stop`.
pub(super) async fn run_until(
    tracker: Arc<Tracker>,
    dispatcher: Dispatcher,
    devices: Arc<Devices>,
    presence: Arc<Presence>,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) {
    let held = Held {
        tracker,
        dispatcher,
        devices,
        presence,
        metrics,
    };
    let mut back = held.presence.subscribe_back_online();
    let mut sweep =
        tokio::time::interval_at(tokio::time::Instant::now() + FIRST_SWEEP_AFTER, SWEEP);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if *stop.borrow() {
            break;
        }
        tokio::select! {
            _ = sweep.tick() => held.sweep().await,
            returned = back.recv() => match returned {
                Ok(device) => held.deliver(&device).await,
                // Missed some: the sweep finds them.
                Err(broadcast::error::RecvError::Lagged(_)) => held.sweep().await,
                Err(broadcast::error::RecvError::Closed) => break,
            },
            changed = stop.changed() => {
                if changed.is_err() {
                    break;
                }
            }
        }
    }
}

struct Held {
    tracker: Arc<Tracker>,
    dispatcher: Dispatcher,
    devices: Arc<Devices>,
    presence: Arc<Presence>,
    metrics: Arc<Metrics>,
}

impl Held {
    /// Every device with queued commands that is not offline gets them; the gauge is
    /// refreshed.
    async fn sweep(&self) {
        let now = Utc::now();
        match self.tracker.store.count_queued(now).await {
            Ok(n) => self.metrics.set_commands_queued(n),
            Err(e) => {
                self.tracker.failed("counting queued commands", &e);
                return;
            }
        }
        let devices = match self.tracker.store.queued_devices(now).await {
            Ok(devices) => devices,
            Err(e) => {
                self.tracker
                    .failed("listing devices with queued commands", &e);
                return;
            }
        };
        for device in devices {
            if let Ok(device) = DeviceId::parse(&device) {
                self.deliver(&device).await;
            }
        }
    }

    fn offline(&self, device: &DeviceId) -> bool {
        self.presence.state(device, Utc::now()) == PresenceState::Offline
    }

    /// Claims and delivers `device`'s queue, batch after batch, while it is not offline.
    async fn deliver(&self, device: &DeviceId) {
        loop {
            if self.offline(device) {
                return;
            }
            let claimed_at = Instant::now();
            let batch = LeaseBatch {
                now: Utc::now(),
                lease: LEASE,
                limit: BATCH,
            };
            let claimed = match self
                .tracker
                .store
                .claim_queued(device.as_str(), batch)
                .await
            {
                Ok(claimed) => claimed,
                Err(e) => {
                    self.tracker.failed("claiming queued commands", &e);
                    return;
                }
            };
            if claimed.is_empty() {
                return;
            }
            for record in claimed {
                if self.offline(device) || claimed_at.elapsed() > LEASE / 2 {
                    return;
                }
                if !self.deliver_one(device, &record).await {
                    return;
                }
            }
        }
    }

    /// One held command to its device; whether the next may follow.
    async fn deliver_one(&self, device: &DeviceId, record: &CommandRecord) -> bool {
        let id = record.command_id.as_str();
        let Some(envelope) = self.envelope(device, record) else {
            tracing::error!(
                command_id = id,
                "a queued command that cannot be read back; marking it failed"
            );
            self.tracker.dispatch_failed(id, device.as_str()).await;
            return true;
        };
        let command_type = envelope.command.command_type();
        let (method, path) = command_type.api_route();
        let ctx = AuditContext {
            principal: &record.principal,
            client_ip: std::net::IpAddr::from([0, 0, 0, 0]),
            method: metrics::method_label(&method),
            path,
        };
        match self.dispatcher.dispatch(&envelope, &ctx).await {
            Ok(()) => {
                self.tracker.sent(id, Some(record)).await;
                if envelope.profile.direct() {
                    // A device reached over its own API answered yes: that ends it (SPEC 8.3).
                    let _ = self
                        .tracker
                        .complete(
                            "marking an answered queued command",
                            id,
                            device.as_str(),
                            FinalOutcome::Succeeded,
                            None,
                        )
                        .await;
                }
                tracing::info!(command_id = id, device_id = %device, "queued command delivered");
                true
            }
            Err(e) => match e.rejection() {
                // The device answered no (SPEC 8.3): its reason, no retry; the next follows.
                Some(message) => {
                    let _ = self
                        .tracker
                        .complete(
                            "marking a rejected queued command",
                            id,
                            device.as_str(),
                            FinalOutcome::Failed,
                            Some(StatusReason::new("device_rejected", message)),
                        )
                        .await;
                    true
                }
                None => {
                    tracing::warn!(command_id = id, device_id = %device, error = %e, "delivering a queued command failed; it is tried again later");
                    false
                }
            },
        }
    }

    /// The envelope of a held command, for its device's profile now.
    fn envelope(&self, device: &DeviceId, record: &CommandRecord) -> Option<Envelope> {
        let command_type = record.command_type;
        let fields: generic::Payload<'_> =
            serde_json::from_slice(&record.delivery.as_ref()?.payload).ok()?;
        let command = fields.command(command_type).ok()?;
        Some(Envelope {
            command_id: record.command_id.clone(),
            // The request is long gone; its id is in the audit record of the 202.
            request_id: record.command_id.clone(),
            device_id: device.clone(),
            command,
            expires_at: Some(record.expires_at),
            profile: self.devices.profile(device).clone(),
        })
    }
}
