//! The records of tracked commands (SPEC 7) and the one place their status changes pass
//! through. The store behind it ([`crate::store`]) holds the state; this file holds the
//! rules that are the server's, not the store's: which status follows which event, what
//! is counted, and what a store failure means for the caller (503, nothing dispatched).
//! Only the core ([`super`]) sees the store.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use tokio::sync::watch;

use crate::events::Hub;
use crate::metrics::Metrics;
use crate::shared::Folded;
use crate::store::{
    AckOutcome, CommandRecord, CommandStatus, Completion, FinalOutcome, StateStore, StatusReason,
    StoreError,
};

/// How often records past their retention and expired idempotency keys are dropped.
const PURGE_EVERY: Duration = Duration::from_secs(60);
/// How often the store is asked for records whose `expiresAt` passed: SPEC 13.1 wants
/// `expired` noticed within 5 s, and a store reports one up to a second after it.
const EXPIRE_EVERY: Duration = Duration::from_secs(1);
/// Most expired records one sweep takes (`redis://`); the next takes the rest.
const EXPIRE_BATCH: usize = 1000;

/// The tracked-command rules of one server, around its store.
pub(super) struct Tracker {
    pub(super) store: Arc<dyn StateStore>,
    /// `COMMAND_TTL_SECS`.
    pub(super) command_ttl: Duration,
    /// `IDEMPOTENCY_TTL_SECS`.
    pub(super) idempotency_ttl: Duration,
    metrics: Arc<Metrics>,
    /// Store failures are logged at most once a second (one per request would flood the
    /// log while the store is down).
    failures: Folded,
    /// Where every status change is published as a `command` event (SPEC 13.1).
    events: Arc<Hub>,
}

/// A store operation failed: logged and counted here; the caller answers 503.
#[derive(Debug)]
pub(super) struct Unavailable {
    /// The `memory` store is full of unfinished commands and live keys
    /// ([`StoreError::Full`]), rather than unreachable.
    pub(super) full: bool,
}

impl Tracker {
    pub(super) fn new(
        store: Arc<dyn StateStore>,
        command_ttl: Duration,
        idempotency_ttl: Duration,
        metrics: Arc<Metrics>,
        events: Arc<Hub>,
    ) -> Self {
        let probe = store.clone();
        metrics.watch_store(Arc::new(move || probe.is_ready()));
        Self {
            store,
            command_ttl,
            idempotency_ttl,
            metrics,
            failures: Folded::default(),
            events,
        }
    }

    /// Counts a store failure and logs it, folded: at most one line a second, with the
    /// number of failures since the last line (`count`). The message never holds a
    /// password (the store's errors are built without one).
    pub(super) fn failed(&self, what: &str, e: &StoreError) -> Unavailable {
        self.metrics.record_store_error();
        if let Some(count) = self.failures.note() {
            tracing::warn!(store = self.store.name(), error = %e, count, "state store: {what} failed");
        }
        Unavailable {
            full: matches!(e, StoreError::Full { .. }),
        }
    }

    /// Every status change of a record passes here once it is in the store, with the
    /// record as it is now: a final status is counted, and every change is published as
    /// a `command` event (SPEC 13.1).
    pub(super) fn status_changed(&self, record: &CommandRecord) {
        if record.status.is_final() {
            self.metrics
                .record_final(record.command_type.as_str(), record.status.as_str());
        }
        self.events.command(record);
    }

    /// Writes a new record (`pending` before a dispatch, or `scheduled`): once this
    /// resolves it is in the store (on disk for `file:`), so an acknowledgement can never
    /// arrive for a command the store does not know, and the scheduler may claim an alarm.
    /// Answers the record as written when someone listens for events (for [`Self::sent`]
    /// to build the next event from), else `None`.
    pub(super) async fn create(
        &self,
        record: CommandRecord,
    ) -> Result<Option<CommandRecord>, Unavailable> {
        // A new record is never final (nothing to count): it is kept for its event only
        // when someone listens.
        let event = self.events.wanted().then(|| record.clone());
        self.store
            .create(record)
            .await
            .map_err(|e| self.failed("writing a new record", &e))?;
        let written = event.map(crate::store::normalised);
        if let Some(record) = &written {
            self.status_changed(record);
        }
        Ok(written)
    }

    /// Every transport accepted the command (or the scheduler published the alarm). A
    /// failure here is logged, not answered: the command is out, and its record shows
    /// `pending` until it expires. `before` is the record as created or claimed, when the
    /// caller has it.
    pub(super) async fn sent(&self, command_id: &str, before: Option<&CommandRecord>) {
        let now = Utc::now();
        match self.store.mark_sent(command_id, now).await {
            // `sent` is not final (nothing to count), and the store answers the status
            // only (this is every command's path). The event needs the record: the one
            // the caller had, moved on by the store's own rule when it was still held or
            // on its way (then the store made exactly this change); else read back. No
            // extra store round trip on the common path (`redis://` paid one per
            // command while any replica relayed events).
            Ok(Some(CommandStatus::Sent)) if self.events.wanted() => {
                if let Some(before) = before.filter(|r| {
                    matches!(
                        r.status,
                        CommandStatus::Pending | CommandStatus::Scheduled | CommandStatus::Queued
                    )
                }) {
                    let mut record = before.clone();
                    crate::store::apply_mark_sent(&mut record, now);
                    self.status_changed(&record);
                    return;
                }
                match self.store.get(command_id, Utc::now()).await {
                    Ok(Some(record)) => self.status_changed(&record),
                    Ok(None) => {}
                    Err(e) => {
                        self.failed("reading a record for its event", &e);
                    }
                }
            }
            Ok(_) => {}
            Err(e) => {
                self.failed("marking a command sent", &e);
            }
        }
    }

    /// Ends a record with a final outcome from the server itself (a failed dispatch, a
    /// missed schedule) or from the device; `Applied` only if it was not final yet.
    pub(super) async fn complete(
        &self,
        what: &str,
        command_id: &str,
        device_id: &str,
        outcome: FinalOutcome,
        reason: Option<StatusReason>,
    ) -> Result<AckOutcome, Unavailable> {
        let completion = Completion {
            command_id: command_id.to_owned(),
            device_id: device_id.to_owned(),
            outcome,
            reason,
        };
        let done = self
            .store
            .complete(completion, Utc::now())
            .await
            .map_err(|e| self.failed(what, &e))?;
        if let AckOutcome::Applied(record) = &done {
            self.status_changed(record);
        }
        Ok(done)
    }

    /// A transport refused the command: the record ends `failed` / `dispatch_failed`.
    pub(super) async fn dispatch_failed(&self, command_id: &str, device_id: &str) {
        let reason = StatusReason::dispatch_failed("a transport did not accept the command");
        let _ = self
            .complete(
                "marking a failed dispatch",
                command_id,
                device_id,
                FinalOutcome::Failed,
                Some(reason),
            )
            .await;
    }

    /// The expiry of a command submitted now with the body's own TTL, if any.
    pub(super) fn expires_at(&self, now: DateTime<Utc>, ttl: Option<Duration>) -> DateTime<Utc> {
        let ttl = ttl.unwrap_or(self.command_ttl);
        now + TimeDelta::from_std(ttl).unwrap_or(TimeDelta::MAX)
    }

    /// The expiry sweep, once a second until `stop`: every record whose `expiresAt`
    /// passed without another final status is counted (`clock_server_commands_total`
    /// with `status="expired"`) and published, once among all replicas.
    pub(super) async fn expire_until(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(EXPIRE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.wait_for(|stopped| *stopped) => return,
            }
            // While the store is down there is nothing to sweep (and no failure to count
            // every second): the next sweep after it is back takes what came due.
            if !self.store.is_ready() {
                continue;
            }
            loop {
                match self.store.expire_due(Utc::now(), EXPIRE_BATCH).await {
                    Ok(expired) => {
                        for record in &expired {
                            self.status_changed(record);
                        }
                        if expired.len() < EXPIRE_BATCH {
                            break;
                        }
                    }
                    Err(e) => {
                        self.failed("sweeping expired commands", &e);
                        break;
                    }
                }
            }
        }
    }

    /// Drops old records and idempotency keys once a minute until `stop`.
    pub(super) async fn purge_until(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(PURGE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.wait_for(|stopped| *stopped) => return,
            }
            match self.store.purge(Utc::now()).await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(dropped = n, "state store purged"),
                Err(e) => {
                    self.failed("purging", &e);
                }
            }
        }
    }
}
