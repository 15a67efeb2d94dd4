//! Gateway-scheduled alarms (SPEC 8.1): the loop that publishes each alarm the store holds
//! for a device whose firmware has no alarm of its own (AWTRIX 3) at its time.
//!
//! Everything goes through the store's claim ([`StateStore::claim_due`]), so the same loop
//! is correct with one replica or several sharing a store: a due alarm is leased to one
//! claimer, published, then `mark_sent`; a claimer that dies or fails to publish leaves
//! the lease to run out and the alarm is claimed again. Past `fireAt` +
//! [`SCHEDULE_GRACE`] the claimer marks it `failed`/`schedule_missed` instead, and it is
//! never published.
//!
//! - **When it runs.** It claims at once when woken, then sleeps until the earliest of:
//!   the next [`TICK`] (alarms scheduled by other replicas, or re-claims after a failed
//!   publish), the earliest fire time this process scheduled (so a local alarm goes off
//!   on the millisecond, not up to a tick late), or a new alarm that is due already. A
//!   full batch is followed by the next claim at once. Idle, that is four indexed claims
//!   a second, each answering nothing.
//! - **Leases.** With the broker up, an alarm is leased for the publish timeout plus
//!   [`LEASE_MARGIN`], longer than one publish attempt, so no other claimer can publish
//!   it meanwhile. With the broker down nothing is published; the claim still runs, with
//!   a short lease ([`DOWN_LEASE`]), so alarms past their grace are marked
//!   `schedule_missed` on time and the rest can be taken by a replica that is connected.
//! - **Batches.** Up to [`BATCH`] alarms per claim, published [`CONCURRENCY`] at a time
//!   (the MQTT transport's in-flight window bounds them further).
//! - **Where to.** An alarm goes to its device as the devices file says *now*: a clock
//!   given another `topic` since (and a restart) gets it on the new one; a device no
//!   longer listed as a clock whose alarms the gateway holds ends the record
//!   `failed`/`device_removed`, never published to a topic nobody may read any more.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use tokio::sync::{Notify, watch};

use super::records::Tracker;
use crate::domain::Devices;
use crate::domain::presence::PresenceState;
use crate::domain::wire::Publication;
use crate::presence::Presence;
use crate::store::{
    AckOutcome, CommandRecord, Delivery, FinalOutcome, LeaseBatch, SCHEDULE_GRACE, StatusReason,
    format_time,
};
use crate::transport::Transport;
use crate::transport::lametric::LametricTransport;
use crate::transport::mqtt::MqttTransport;

/// Longest sleep between two claims.
pub const TICK: Duration = Duration::from_millis(250);
/// Alarms claimed at once.
pub const BATCH: usize = 1024;
/// Alarms published at once.
pub const CONCURRENCY: usize = 256;
/// Added to the publish timeout for the lease of an alarm being published.
pub const LEASE_MARGIN: Duration = Duration::from_secs(5);
/// The lease of a claim made while the broker is down (nothing is published).
pub const DOWN_LEASE: Duration = Duration::from_secs(1);
/// Fire times remembered for precise wake-ups; past it the latest are forgotten (the tick
/// still finds them).
const MAX_HINTS: usize = 4096;

/// Fire times of alarms scheduled by this process, so the loop wakes for them on time.
/// Shared by the API (which adds to it) and the loop.
#[derive(Default)]
pub struct Wake {
    notify: Notify,
    /// Unix milliseconds, earliest first.
    fire_times: Mutex<BTreeSet<i64>>,
}

impl Wake {
    /// An alarm was scheduled for `fire_at`: wake the loop so it sleeps until then (or
    /// claims now, when it is due already).
    pub fn scheduled(&self, fire_at: DateTime<Utc>) {
        if let Ok(mut times) = self.fire_times.lock() {
            times.insert(fire_at.timestamp_millis());
            if times.len() > MAX_HINTS {
                times.pop_last();
            }
        }
        self.notify.notify_one();
    }

    /// The earliest remembered fire time after `now_ms`; earlier ones are dropped.
    fn next_after(&self, now_ms: i64) -> Option<i64> {
        let mut times = self.fire_times.lock().ok()?;
        while let Some(&first) = times.first() {
            if first > now_ms {
                return Some(first);
            }
            times.pop_first();
        }
        None
    }
}

/// Starts the loop: alarms of `tracker`'s store, published through `mqtt` (or posted to a
/// LaMetric clock through `lametric`) to the devices of `devices`, until `stop`. Without
/// MQTT only LaMetric clocks can hold alarms (an `awtrix3` device needs it at start-up).
#[allow(clippy::too_many_arguments)]
pub(super) async fn run_until(
    tracker: Arc<Tracker>,
    mqtt: Option<Arc<MqttTransport>>,
    lametric: Option<Arc<LametricTransport>>,
    devices: Arc<Devices>,
    presence: Option<Arc<Presence>>,
    wake: Arc<Wake>,
    publish_timeout: Duration,
    stop: watch::Receiver<bool>,
) {
    let scheduler = Scheduler {
        tracker,
        mqtt,
        lametric,
        devices,
        presence,
        wake,
        lease: publish_timeout + LEASE_MARGIN,
    };
    scheduler.run(stop).await;
}

struct Scheduler {
    tracker: Arc<Tracker>,
    /// `None` when MQTT is not enabled: then every held alarm is a LaMetric clock's.
    mqtt: Option<Arc<MqttTransport>>,
    /// The LaMetric clocks (SPEC 8.3), whose alarms are posted to the clock itself.
    lametric: Option<Arc<LametricTransport>>,
    devices: Arc<Devices>,
    /// An alarm due while its device is offline waits for it (SPEC 11.3).
    presence: Option<Arc<Presence>>,
    wake: Arc<Wake>,
    lease: Duration,
}

impl Scheduler {
    async fn run(self, mut stopped: watch::Receiver<bool>) {
        tracing::info!(
            tick_ms = TICK.as_millis() as u64,
            batch = BATCH,
            "alarm scheduler started"
        );
        loop {
            if *stopped.borrow() {
                break;
            }
            let full = self.claim_and_publish().await;
            if full {
                continue;
            }
            let now = Utc::now();
            let now_ms = now.timestamp_millis();
            let mut sleep_ms = i64::try_from(TICK.as_millis()).unwrap_or(250);
            if let Some(next) = self.wake.next_after(now_ms) {
                sleep_ms = sleep_ms.min(next - now_ms);
            }
            let sleep = Duration::from_millis(u64::try_from(sleep_ms.max(1)).unwrap_or(1));
            tokio::select! {
                () = tokio::time::sleep(sleep) => {}
                () = self.wake.notify.notified() => {}
                changed = stopped.changed() => {
                    // The core that owned the signal is gone: nobody can stop us later.
                    if changed.is_err() {
                        break;
                    }
                }
            }
        }
        tracing::info!("alarm scheduler stopped");
    }

    /// One claim and its publishes; whether the batch was full (more may be due).
    async fn claim_and_publish(&self) -> bool {
        // Without MQTT there is no broker to be down.
        let up = self.mqtt.as_ref().is_none_or(|mqtt| mqtt.is_ready());
        let lease = if up { self.lease } else { DOWN_LEASE };
        let batch = LeaseBatch {
            now: Utc::now(),
            lease,
            limit: BATCH,
        };
        let claimed = match self.tracker.store.claim_due(batch).await {
            Ok(claimed) => claimed,
            Err(e) => {
                self.tracker.failed("claiming due alarms", &e);
                return false;
            }
        };
        let full = claimed.len() >= BATCH;
        futures_util::stream::iter(claimed)
            .for_each_concurrent(CONCURRENCY, |record| self.fire(record, up))
            .await;
        // While the broker is down, a full batch was only leased briefly: do not spin.
        full && up
    }

    /// One claimed alarm: too late → `schedule_missed`; else published → `sent`.
    async fn fire(&self, record: CommandRecord, up: bool) {
        let id = record.command_id.as_str();
        let fire_at = record.fire_at.map(format_time).unwrap_or_default();
        let now = Utc::now();
        if self.device_offline(&record, now) {
            // Past its grace the device never got it; before, the lease runs out and it
            // is claimed again (delivered as soon as the device is back).
            if record.schedule_missed(now) {
                return self.offline_too_long(&record).await;
            }
            tracing::debug!(
                command_id = id,
                fire_at,
                "alarm due while its device is offline; waiting for it until its grace ends"
            );
            return;
        }
        if record.schedule_missed(now) {
            return self.missed(&record).await;
        }
        if record.expires_at <= now {
            // A TTL shorter than the grace: the record is `expired`, never published. A
            // read applies (and persists) the expiry, so it is not claimed again.
            if let Err(e) = self.tracker.store.get(id, now).await {
                self.tracker.failed("expiring a scheduled alarm", &e);
            }
            return;
        }
        let Some(delivery) = &record.delivery else {
            tracing::error!(
                command_id = id,
                "a scheduled alarm without a delivery; marking it failed"
            );
            return self.missed(&record).await;
        };
        let Some(delivery) = self.current_delivery(&record, delivery) else {
            return self.device_removed(&record).await;
        };
        if self.devices.profile(&record.device_id).direct() {
            let Some(lametric) = &self.lametric else {
                return self.device_removed(&record).await;
            };
            return self.post(lametric, &record, &delivery).await;
        }
        let delivery = &Delivery {
            topic: delivery.topic,
            payload: delivery.payload,
        };
        if !up {
            tracing::debug!(
                command_id = id,
                fire_at,
                "alarm due while the MQTT broker is down; retrying until its grace ends"
            );
            return;
        }
        let Some(mqtt) = &self.mqtt else {
            // Only a devices file changed under a store that outlived it gets here.
            return self.device_removed(&record).await;
        };
        match mqtt.publish_delivery(delivery, record.expires_at).await {
            Ok(()) => {
                self.tracker.sent(id, Some(&record)).await;
                tracing::info!(
                    command_id = id,
                    device_id = %record.device_id,
                    fire_at,
                    topic = %delivery.topic,
                    "scheduled alarm published"
                );
            }
            Err(e) => tracing::warn!(
                command_id = id,
                device_id = %record.device_id,
                fire_at,
                error = %e,
                grace_secs = SCHEDULE_GRACE.as_secs(),
                "publishing a scheduled alarm failed; it is retried until its grace ends"
            ),
        }
    }

    /// The alarm of a device the gateway reaches itself (a LaMetric clock, SPEC 8.3),
    /// delivered to it: its answer ends the command; no answer is retried until the grace
    /// ends, as a publish is.
    async fn post(&self, lametric: &LametricTransport, record: &CommandRecord, held: &Publication) {
        let id = record.command_id.as_str();
        match lametric.deliver_held(&record.device_id, held).await {
            Ok(()) => {
                self.tracker.sent(id, Some(record)).await;
                let _ = self
                    .tracker
                    .complete(
                        "marking an answered alarm",
                        id,
                        record.device_id.as_str(),
                        FinalOutcome::Succeeded,
                        None,
                    )
                    .await;
                tracing::info!(command_id = id, device_id = %record.device_id, "scheduled alarm posted to the LaMetric clock");
            }
            Err(e) => match e.rejection() {
                Some(message) => {
                    let _ = self
                        .tracker
                        .complete(
                            "marking a rejected alarm",
                            id,
                            record.device_id.as_str(),
                            FinalOutcome::Failed,
                            Some(StatusReason::new("device_rejected", message)),
                        )
                        .await;
                }
                None => tracing::warn!(
                    command_id = id,
                    device_id = %record.device_id,
                    error = %e,
                    grace_secs = SCHEDULE_GRACE.as_secs(),
                    "posting a scheduled alarm to the LaMetric clock failed; it is retried until its grace ends"
                ),
            },
        }
    }

    /// Whether presence says the alarm's device is offline now.
    fn device_offline(&self, record: &CommandRecord, now: DateTime<Utc>) -> bool {
        let Some(presence) = &self.presence else {
            return false;
        };
        presence.state(&record.device_id, now) == PresenceState::Offline
    }

    /// Ends a held alarm `failed` with `reason`; whether this call ended it (so that only
    /// one replica logs it).
    async fn fail(&self, what: &str, record: &CommandRecord, reason: StatusReason) -> bool {
        let outcome = self
            .tracker
            .complete(
                what,
                &record.command_id,
                record.device_id.as_str(),
                FinalOutcome::Failed,
                Some(reason),
            )
            .await;
        matches!(outcome, Ok(AckOutcome::Applied(_)))
    }

    async fn offline_too_long(&self, record: &CommandRecord) {
        let reason = StatusReason::new(
            "device_offline",
            "the device was offline from the alarm's time until a minute after it",
        );
        if self
            .fail("marking an alarm of an offline device", record, reason)
            .await
        {
            tracing::warn!(
                command_id = %record.command_id,
                device_id = %record.device_id,
                fire_at = record.fire_at.map(format_time).unwrap_or_default(),
                "scheduled alarm not published: its device was offline until its grace ended; marked failed (device_offline)"
            );
        }
    }

    async fn missed(&self, record: &CommandRecord) {
        if self
            .fail(
                "marking a missed alarm",
                record,
                StatusReason::schedule_missed(),
            )
            .await
        {
            tracing::warn!(
                command_id = %record.command_id,
                device_id = %record.device_id,
                fire_at = record.fire_at.map(format_time).unwrap_or_default(),
                "scheduled alarm not published within its grace; marked failed (schedule_missed)"
            );
        }
    }

    /// The alarm's delivery to its device as the devices file describes it now, in its
    /// firmware's form ([`crate::domain::Profile::held_alarm_now`]: an AWTRIX clock's
    /// current topic and melody). `None` when the device is no longer a clock whose alarms
    /// the gateway holds.
    fn current_delivery(&self, record: &CommandRecord, held: &Delivery) -> Option<Publication> {
        let held = Publication {
            topic: held.topic.clone(),
            payload: held.payload.clone(),
        };
        self.devices
            .profile(&record.device_id)
            .held_alarm_now(&held)
    }

    async fn device_removed(&self, record: &CommandRecord) {
        let reason = StatusReason::new(
            "device_removed",
            "the devices file no longer lists this device as a clock whose alarms the gateway holds",
        );
        if self
            .fail("marking an alarm of a removed device", record, reason)
            .await
        {
            tracing::warn!(
                command_id = %record.command_id,
                device_id = %record.device_id,
                "scheduled alarm not published: the devices file no longer lists its device as an AWTRIX clock; marked failed (device_removed)"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(ms).unwrap_or_default()
    }

    #[test]
    fn the_loop_wakes_for_the_earliest_future_fire_time_and_forgets_past_ones() {
        let wake = Wake::default();
        for ms in [5_000, 1_000, 3_000] {
            wake.scheduled(at(ms));
        }
        assert_eq!(wake.next_after(0), Some(1_000));
        assert_eq!(wake.next_after(1_000), Some(3_000));
        assert_eq!(wake.next_after(4_000), Some(5_000));
        assert_eq!(wake.next_after(5_000), None);
    }

    #[test]
    fn the_fire_times_kept_are_bounded_keeping_the_earliest() {
        let wake = Wake::default();
        for ms in (0..(MAX_HINTS as i64 + 10)).rev() {
            wake.scheduled(at(ms + 1));
        }
        let kept = wake.fire_times.lock().map(|t| t.len()).unwrap_or_default();
        assert_eq!(kept, MAX_HINTS);
        assert_eq!(wake.next_after(0), Some(1));
    }
}
