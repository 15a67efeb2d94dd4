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

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::domain::CommandType;
use crate::metrics::Metrics;
use crate::store::{
    AckOutcome, CommandRecord, FinalOutcome, SCHEDULE_GRACE, StatusReason, format_time,
};
use crate::tracking::Tracker;
use crate::transport::Transport;
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

/// The running loop; [`SchedulerHandle::stop`] ends it.
pub struct SchedulerHandle {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl SchedulerHandle {
    /// Stops claiming and waits for the alarms being published to settle (each publish is
    /// bounded by the publish timeout).
    pub async fn stop(self) {
        self.stop.send_replace(true);
        let _ = self.task.await;
    }
}

/// Starts the loop: alarms of `tracker`'s store, published through `mqtt`.
pub fn spawn(
    tracker: Arc<Tracker>,
    mqtt: Arc<MqttTransport>,
    wake: Arc<Wake>,
    metrics: Arc<Metrics>,
    publish_timeout: Duration,
) -> SchedulerHandle {
    let (stop, stopped) = watch::channel(false);
    let scheduler = Scheduler {
        tracker,
        mqtt,
        wake,
        metrics,
        lease: publish_timeout + LEASE_MARGIN,
    };
    let task = tokio::spawn(scheduler.run(stopped));
    SchedulerHandle { stop, task }
}

struct Scheduler {
    tracker: Arc<Tracker>,
    mqtt: Arc<MqttTransport>,
    wake: Arc<Wake>,
    metrics: Arc<Metrics>,
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
                _ = stopped.changed() => {}
            }
        }
        tracing::info!("alarm scheduler stopped");
    }

    /// One claim and its publishes; whether the batch was full (more may be due).
    async fn claim_and_publish(&self) -> bool {
        let up = self.mqtt.is_ready();
        let lease = if up { self.lease } else { DOWN_LEASE };
        let claimed = match self.tracker.store.claim_due(Utc::now(), lease, BATCH).await {
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
        if !up {
            tracing::debug!(
                command_id = id,
                fire_at,
                "alarm due while the MQTT broker is down; retrying until its grace ends"
            );
            return;
        }
        match self
            .mqtt
            .publish_delivery(delivery, record.expires_at)
            .await
        {
            Ok(()) => {
                self.tracker.sent(id).await;
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

    async fn missed(&self, record: &CommandRecord) {
        let outcome = self
            .tracker
            .store
            .complete(
                &record.command_id,
                &record.device_id,
                FinalOutcome::Failed,
                Some(StatusReason::schedule_missed()),
                Utc::now(),
            )
            .await;
        match outcome {
            Ok(AckOutcome::Applied(_)) => {
                self.metrics
                    .record_final(CommandType::SetAlarm.as_str(), "failed");
                tracing::warn!(
                    command_id = %record.command_id,
                    device_id = %record.device_id,
                    fire_at = record.fire_at.map(format_time).unwrap_or_default(),
                    "scheduled alarm not published within its grace; marked failed (schedule_missed)"
                );
            }
            Ok(_) => {}
            Err(e) => {
                self.tracker.failed("marking a missed alarm", &e);
            }
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
