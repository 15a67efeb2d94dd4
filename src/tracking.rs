//! Tracked commands (SPEC 7) around a dispatch: the record written before the command
//! leaves, its status after, `Idempotency-Key`s, device acknowledgements and housekeeping.
//! The store behind it ([`crate::store`]) holds the state; this module holds the rules
//! that are the server's, not the store's: which status follows which event, what is
//! counted, and what a store failure means for the caller (503, nothing dispatched).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::domain::CommandType;
use crate::metrics::Metrics;
use crate::shared::Folded;
use crate::store::{
    AckOutcome, CommandRecord, CommandStatus, Delivery, FinalOutcome, StateStore, StatusReason,
    StoreError,
};
use crate::transport::mqtt::acks;

/// How often records past their retention and expired idempotency keys are dropped.
const PURGE_EVERY: Duration = Duration::from_secs(60);
/// Acknowledgements waiting to be applied; past it they are dropped (and counted).
pub const ACK_QUEUE: usize = 4096;
/// Longest accepted `Idempotency-Key`.
const MAX_KEY_LEN: usize = 255;

/// The tracked-command rules of one server.
pub struct Tracker {
    pub store: Arc<dyn StateStore>,
    /// `COMMAND_TTL_SECS`.
    pub command_ttl: Duration,
    /// `IDEMPOTENCY_TTL_SECS`.
    pub idempotency_ttl: Duration,
    metrics: Arc<Metrics>,
    /// Store failures are logged at most once a second (one per request would flood the
    /// log while the store is down).
    failures: Folded,
}

/// A store operation failed: logged and counted here; the caller answers 503.
#[derive(Debug)]
pub struct Unavailable {
    /// The `memory` store is full of unfinished commands and live keys
    /// ([`StoreError::Full`]), rather than unreachable.
    pub full: bool,
}

impl Tracker {
    pub fn new(
        store: Arc<dyn StateStore>,
        command_ttl: Duration,
        idempotency_ttl: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        metrics.watch_store(store.clone());
        Self {
            store,
            command_ttl,
            idempotency_ttl,
            metrics,
            failures: Folded::default(),
        }
    }

    /// Counts a store failure and logs it, folded: at most one line a second, with the
    /// number of failures since the last line (`count`). The message never holds a
    /// password (the store's errors are built without one).
    pub fn failed(&self, what: &str, e: &StoreError) -> Unavailable {
        self.metrics.record_store_error();
        if let Some(count) = self.failures.note() {
            tracing::warn!(store = self.store.name(), error = %e, count, "state store: {what} failed");
        }
        Unavailable {
            full: matches!(e, StoreError::Full { .. }),
        }
    }

    /// The record of a command about to be dispatched, written before it leaves (so an
    /// acknowledgement can never arrive for a command the store does not know).
    #[allow(clippy::too_many_arguments)]
    pub async fn create(
        &self,
        command_id: &str,
        device_id: &str,
        command_type: CommandType,
        principal: &str,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
        device_acks: bool,
    ) -> Result<(), Unavailable> {
        let record = CommandRecord {
            command_id: command_id.to_owned(),
            device_id: device_id.to_owned(),
            command_type: command_type.as_str().to_owned(),
            principal: principal.to_owned(),
            status: CommandStatus::Pending,
            created_at: now,
            sent_at: None,
            completed_at: None,
            expires_at,
            // Whether the device's profile acknowledges commands (SPEC 7.4, 8).
            device_acks,
            status_reason: None,
            fire_at: None,
            delivery: None,
        };
        self.store
            .create(record)
            .await
            .map_err(|e| self.failed("writing a new record", &e))
    }

    /// The record of an alarm the gateway holds until `fire_at` (SPEC 8.1): `scheduled`,
    /// with what to publish then. Once this resolves the alarm is in the store (on disk
    /// for `file:`), and the scheduler may claim it.
    #[allow(clippy::too_many_arguments)]
    pub async fn schedule(
        &self,
        command_id: &str,
        device_id: &str,
        principal: &str,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
        fire_at: DateTime<Utc>,
        delivery: Delivery,
    ) -> Result<(), Unavailable> {
        let record = CommandRecord {
            command_id: command_id.to_owned(),
            device_id: device_id.to_owned(),
            command_type: CommandType::SetAlarm.as_str().to_owned(),
            principal: principal.to_owned(),
            status: CommandStatus::Scheduled,
            created_at: now,
            sent_at: None,
            completed_at: None,
            expires_at,
            // Only profiles without acknowledgements have gateway-held alarms.
            device_acks: false,
            status_reason: None,
            fire_at: Some(fire_at),
            delivery: Some(delivery),
        };
        self.store
            .create(record)
            .await
            .map_err(|e| self.failed("writing a scheduled alarm", &e))
    }

    /// Every transport accepted the command. A failure here is logged, not answered: the
    /// command is out, and its record shows `pending` until it expires.
    pub async fn sent(&self, command_id: &str) {
        if let Err(e) = self.store.mark_sent(command_id, Utc::now()).await {
            self.failed("marking a command sent", &e);
        }
    }

    /// A transport refused the command: the record ends `failed` / `dispatch_failed`.
    pub async fn dispatch_failed(
        &self,
        command_id: &str,
        device_id: &str,
        command_type: CommandType,
    ) {
        let reason = StatusReason::dispatch_failed("a transport did not accept the command");
        match self
            .store
            .complete(
                command_id,
                device_id,
                FinalOutcome::Failed,
                Some(reason),
                Utc::now(),
            )
            .await
        {
            Ok(AckOutcome::Applied(_)) => {
                self.metrics.record_final(command_type.as_str(), "failed");
            }
            Ok(_) => {}
            Err(e) => {
                self.failed("marking a failed dispatch", &e);
            }
        }
    }

    /// The expiry of a command submitted now with the body's own TTL, if any.
    pub fn expires_at(&self, now: DateTime<Utc>, ttl: Option<Duration>) -> DateTime<Utc> {
        let ttl = ttl.unwrap_or(self.command_ttl);
        now + TimeDelta::from_std(ttl).unwrap_or(TimeDelta::MAX)
    }

    /// Applies acknowledgements from `queue` until it closes (SPEC 7.4): the malformed
    /// and the inapplicable are ignored and counted, never an error.
    pub async fn apply_acks(
        self: Arc<Self>,
        prefix: String,
        mut queue: mpsc::Receiver<(String, Vec<u8>)>,
    ) {
        while let Some((topic, payload)) = queue.recv().await {
            self.apply_ack(&prefix, &topic, &payload).await;
        }
    }

    async fn apply_ack(&self, prefix: &str, topic: &str, payload: &[u8]) {
        let ack = match acks::parse(prefix, topic, payload) {
            Ok(ack) => ack,
            Err(why) => {
                self.ignored(why.label(), topic);
                return;
            }
        };
        let reason = match (ack.outcome, ack.reason) {
            (FinalOutcome::Failed, Some(message)) => {
                Some(StatusReason::new("device_failed", message))
            }
            (FinalOutcome::Failed, None) => Some(StatusReason::new("device_failed", "")),
            (FinalOutcome::Succeeded, _) => None,
        };
        match self
            .store
            .complete(
                &ack.command_id,
                &ack.device_id,
                ack.outcome,
                reason,
                Utc::now(),
            )
            .await
        {
            Ok(AckOutcome::Applied(record)) => {
                self.metrics.record_ack("applied");
                let command_type = CommandType::from_wire(&record.command_type)
                    .map_or("unknown", CommandType::as_str);
                self.metrics
                    .record_final(command_type, record.status.as_str());
                tracing::debug!(command_id = %record.command_id, status = record.status.as_str(), "acknowledgement applied");
            }
            Ok(AckOutcome::Unknown) => self.ignored("unknown_command", topic),
            Ok(AckOutcome::WrongDevice) => self.ignored("wrong_device", topic),
            Ok(AckOutcome::AlreadyFinal(_)) => self.ignored("already_final", topic),
            Ok(AckOutcome::Expired) => self.ignored("expired", topic),
            Err(e) => {
                self.failed("applying an acknowledgement", &e);
                self.metrics.record_ack("ignored");
            }
        }
    }

    fn ignored(&self, why: &'static str, topic: &str) {
        self.metrics.record_ack("ignored");
        // Debug only: a misbehaving device must not be able to flood the log.
        tracing::debug!(why, topic = %crate::shared::loggable_path(topic), "acknowledgement ignored");
    }

    /// Drops old records and idempotency keys once a minute until the server stops.
    pub fn spawn_purge(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let tracker = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(PURGE_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match tracker.store.purge(Utc::now()).await {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(dropped = n, "state store purged"),
                    Err(e) => {
                        tracker.failed("purging", &e);
                    }
                }
            }
        })
    }
}

/// An `Idempotency-Key` header value (SPEC 7.6): 1–255 visible ASCII characters, one pair
/// of surrounding double quotes (RFC 8941's string form) removed. `None` when invalid.
pub fn parse_idempotency_key(raw: &[u8]) -> Option<&str> {
    let raw = std::str::from_utf8(raw).ok()?;
    let key = raw
        .strip_prefix('"')
        .and_then(|k| k.strip_suffix('"'))
        .unwrap_or(raw);
    let visible = |c: char| c.is_ascii_graphic();
    (!key.is_empty() && key.len() <= MAX_KEY_LEN && key.chars().all(visible)).then_some(key)
}

/// What makes two requests "the same command" for an `Idempotency-Key`: the endpoint and
/// the parsed body re-serialised (so key order and whitespace do not matter).
pub fn fingerprint(path: &str, body: &impl serde::Serialize) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(path.as_bytes());
    hasher.update([0]);
    // Serialising the parsed request struct cannot fail.
    hasher.update(serde_json::to_vec(body).unwrap_or_default());
    hasher.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotency_keys_are_visible_ascii_with_optional_quotes() {
        assert_eq!(parse_idempotency_key(b"abc-123"), Some("abc-123"));
        assert_eq!(parse_idempotency_key(b"\"abc\""), Some("abc"));
        assert_eq!(parse_idempotency_key(&[b'k'; 255]).map(str::len), Some(255));
        for bad in [
            &b""[..],
            b"\"\"",
            b"a b",
            b"caf\xc3\xa9",
            b"tab\there",
            &[b'k'; 256],
        ] {
            assert_eq!(parse_idempotency_key(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn fingerprints_depend_on_path_and_parsed_fields_only() {
        #[derive(serde::Serialize)]
        struct Body {
            a: u8,
            b: &'static str,
        }
        let one = fingerprint("/x", &Body { a: 1, b: "y" });
        assert_eq!(one, fingerprint("/x", &Body { a: 1, b: "y" }));
        assert_ne!(one, fingerprint("/z", &Body { a: 1, b: "y" }));
        assert_ne!(one, fingerprint("/x", &Body { a: 2, b: "y" }));
    }
}
