//! The state store of tracked commands (SPEC 7–9): the [`StateStore`] trait, its types,
//! the `STATE_STORE` parser and [`open`].
//!
//! - `memory`: [`MemoryStore`], in the process, bounded, lost on restart.
//! - `file`: [`FileStore`], one SQLite file, group-committed; survives restarts.
//! - `redis://…` / `rediss://…`: [`RedisStore`], shared by every replica (SPEC 9).
//!
//! Invariants every backend keeps (the conformance suite `tests/store.rs` checks them):
//! - The first final status wins: nothing changes a final record except `mark_sent`
//!   filling an empty `sentAt` (an ack may overtake the broker's PUBACK, SPEC 7.4).
//! - Expiry is lazy: a non-final record whose `expiresAt` has passed is `expired` the
//!   moment any operation looks at it, and that is persisted.
//! - A record is dropped `retention` after it became final (for a record nobody looked
//!   at after its expiry: after `expiresAt`); from then on it reads as unknown.
//! - Timestamps are kept to the millisecond (what the API shows and what a backend
//!   stores), so every backend returns the same values.
//! - Every method that depends on time takes `now` (a claim in its [`LeaseBatch`]); no
//!   backend reads the clock.

mod compact_id;
#[cfg(feature = "file-store")]
mod file;
#[cfg(feature = "file-store")]
mod file_schedules;
mod memory;
mod memory_schedules;
#[cfg(feature = "redis-store")]
mod redis;
#[cfg(feature = "redis-store")]
mod redis_schedules;
pub mod schedule;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use serde::{Serialize, Serializer};

#[cfg(feature = "file-store")]
pub use file::FileStore;
pub use memory::MemoryStore;
#[cfg(feature = "redis-store")]
pub use redis::RedisStore;
pub use schedule::{Claim, ScheduleCreated, ScheduleRecord, ScheduleWrite};

use crate::domain::{CommandType, DeviceId};
use crate::shared::Secret;
use crate::shared::redact_userinfo;
use futures_util::future::BoxFuture;

/// How long after `fireAt` a scheduled alarm may still be published (SPEC 8.1); past it
/// whoever sees the record still scheduled marks it `failed`/`schedule_missed`.
pub const SCHEDULE_GRACE: Duration = Duration::from_secs(60);

/// How long an `Idempotency-Key` stays "in progress" without `idem_finish`/`idem_abort`:
/// bounds how long a request that crashed mid-dispatch blocks retries with that key.
pub const IDEM_IN_PROGRESS_TIMEOUT: Duration = Duration::from_secs(60);

/// `STATE_MAX_COMMANDS` default.
pub const DEFAULT_MAX_COMMANDS: usize = 100_000;
/// `STATE_MAX_BYTES` default: what the `memory` store may hold (records and keys, as
/// counted by the store), sized so that the server stays within the `single` Kubernetes
/// overlay's 160Mi limit whatever authenticated callers send.
pub const DEFAULT_MAX_BYTES: usize = 32 << 20;
/// `STATE_RETENTION_SECS` default.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(86_400);

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// I/O or connection failure. The API answers `503 {"error":"state store
    /// unavailable"}` and dispatches nothing. The message never holds a password.
    #[error("state store unavailable: {message}")]
    Unavailable { message: String },
    /// The store cannot be opened at start-up (unreadable or corrupt file, missing or
    /// read-only directory). Names the file or directory and what is wrong.
    #[error("{message}")]
    Open { message: String },
    /// `memory` only: the new record or key would take room that only unfinished
    /// commands, held alarms and live `Idempotency-Key`s fill (never evicted: SPEC 10,
    /// "Bounded records"). The API answers `503 {"error":"state store full"}`.
    #[error("state store full: {message}")]
    Full { message: String },
    /// A record with this `commandId` exists already (ids are UUIDv7: a caller bug).
    #[error("command {command_id} already exists in the state store")]
    Duplicate { command_id: String },
}

/// Life cycle of a tracked command (SPEC 7.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CommandStatus {
    /// The record is written and dispatch is under way (before the 202 or 502).
    Pending,
    /// An alarm the gateway holds until `fire_at` (SPEC 8).
    Scheduled,
    /// Held until its device is online again (SPEC 11.3), with what to deliver then.
    Queued,
    /// Every transport accepted it.
    Sent,
    Succeeded,
    Failed,
    Expired,
    Cancelled,
}

impl CommandStatus {
    /// The status after which nothing changes (except an empty `sent_at` being filled).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Self::Succeeded | Self::Failed | Self::Expired | Self::Cancelled
        )
    }

    /// The wire form (`"pending"`, `"scheduled"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Scheduled => "scheduled",
            Self::Queued => "queued",
            Self::Sent => "sent",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Expired => "expired",
            Self::Cancelled => "cancelled",
        }
    }

    /// Inverse of [`as_str`](Self::as_str).
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => Self::Pending,
            "scheduled" => Self::Scheduled,
            "queued" => Self::Queued,
            "sent" => Self::Sent,
            "succeeded" => Self::Succeeded,
            "failed" => Self::Failed,
            "expired" => Self::Expired,
            "cancelled" => Self::Cancelled,
            _ => return None,
        })
    }
}

impl fmt::Display for CommandStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `statusReason` of SPEC 7.3.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatusReason {
    pub code: String,
    pub message: String,
}

impl StatusReason {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
        }
    }

    /// A dispatch that no transport accepted (the 502 case).
    pub fn dispatch_failed(message: impl Into<String>) -> Self {
        Self::new("dispatch_failed", message)
    }

    /// A scheduled alarm not published by `fire_at` + [`SCHEDULE_GRACE`].
    pub fn schedule_missed() -> Self {
        Self::new(
            "schedule_missed",
            "the alarm could not be published in time",
        )
    }
}

/// What to publish when a gateway-scheduled alarm fires; opaque to the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub topic: String,
    pub payload: Vec<u8>,
}

/// One tracked command. `Serialize` yields exactly the status resource of SPEC 7.3
/// (camelCase, RFC 3339 UTC timestamps with milliseconds and `Z`); `fire_at` and
/// `delivery` are internal and never shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CommandRecord {
    pub command_id: String,
    pub device_id: DeviceId,
    /// `set_alarm`, `display_message` or `set_brightness` on the wire.
    #[serde(rename = "type", serialize_with = "ser_command_type")]
    pub command_type: CommandType,
    /// The credential that submitted it.
    pub principal: String,
    pub status: CommandStatus,
    #[serde(serialize_with = "ser_time")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "ser_opt_time")]
    pub sent_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "ser_opt_time")]
    pub completed_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "ser_time")]
    pub expires_at: DateTime<Utc>,
    /// Whether the device's profile acknowledges commands.
    pub device_acks: bool,
    pub status_reason: Option<StatusReason>,
    /// For an alarm the gateway holds: when to publish it.
    #[serde(skip)]
    pub fire_at: Option<DateTime<Utc>>,
    /// For an alarm the gateway holds: what to publish then.
    #[serde(skip)]
    pub delivery: Option<Delivery>,
    /// For an occurrence of a schedule (SPEC 12.3): its `scheduleId`; shown only then.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule_id: Option<String>,
}

impl CommandRecord {
    /// The record of a command about to be dispatched: `pending`, written before it
    /// leaves, its device acknowledging (see [`Self::without_device_acks`]).
    pub fn pending(
        command_id: &str,
        device_id: &DeviceId,
        command_type: CommandType,
        principal: &str,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Self {
        Self {
            command_id: command_id.to_owned(),
            device_id: device_id.clone(),
            command_type,
            principal: principal.to_owned(),
            status: CommandStatus::Pending,
            created_at: now,
            sent_at: None,
            completed_at: None,
            expires_at,
            device_acks: true,
            status_reason: None,
            fire_at: None,
            delivery: None,
            schedule_id: None,
        }
    }

    /// An occurrence of schedule `schedule_id` (SPEC 12.3).
    pub fn for_schedule(self, schedule_id: Option<String>) -> Self {
        Self {
            schedule_id,
            ..self
        }
    }

    /// For a device whose profile does not acknowledge commands (SPEC 7.4, 8).
    pub fn without_device_acks(self) -> Self {
        Self {
            device_acks: false,
            ..self
        }
    }

    /// An alarm the gateway holds until `fire_at` (SPEC 8.1): `scheduled`, with what to
    /// publish then. Only profiles without acknowledgements have such alarms.
    pub fn scheduled(self, fire_at: DateTime<Utc>, delivery: Delivery) -> Self {
        Self {
            status: CommandStatus::Scheduled,
            device_acks: false,
            fire_at: Some(fire_at),
            delivery: Some(delivery),
            ..self
        }
    }

    /// A command held until its device is online again (SPEC 11.3): `queued`, with what
    /// to deliver then.
    pub fn queued(self, delivery: Delivery) -> Self {
        Self {
            status: CommandStatus::Queued,
            delivery: Some(delivery),
            ..self
        }
    }

    /// The status resource of SPEC 7.3 as JSON bytes.
    pub fn to_json(&self) -> Vec<u8> {
        // Serialising plain strings, bools and timestamps into a Vec cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Whether a claimed scheduled alarm is too late to publish (`now` is past
    /// `fire_at` + [`SCHEDULE_GRACE`]): the claimer then calls
    /// [`StateStore::complete`] with `Failed` and [`StatusReason::schedule_missed`] instead.
    pub fn schedule_missed(&self, now: DateTime<Utc>) -> bool {
        self.status == CommandStatus::Scheduled
            && self
                .fire_at
                .is_some_and(|fire_at| add(fire_at, SCHEDULE_GRACE) < now)
    }
}

/// The outcome an acknowledgement (or a failed dispatch) reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinalOutcome {
    Succeeded,
    Failed,
}

/// What [`StateStore::complete`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AckOutcome {
    /// Applied; the record as it is now.
    Applied(Box<CommandRecord>),
    /// No such record (never existed, or dropped after retention).
    Unknown,
    /// The record belongs to another device: a device cannot confirm another's command.
    WrongDevice,
    /// The record already had this final status (the first final status wins).
    AlreadyFinal(CommandStatus),
    /// The record's `expiresAt` had passed: it is `expired` now.
    Expired,
}

/// What [`StateStore::complete`] applies (one of a [`StateStore::complete_many`] batch):
/// the outcome of `command_id`, reported for `device_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    pub command_id: String,
    pub device_id: String,
    pub outcome: FinalOutcome,
    pub reason: Option<StatusReason>,
}

/// What [`StateStore::cancel`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelOutcome {
    /// It was `scheduled` and not being published: now `cancelled` (200 with the record).
    Cancelled(Box<CommandRecord>),
    /// Any other status, or `scheduled` but leased by a publisher (409 with the status).
    NotCancellable(CommandStatus),
    NotFound,
}

/// One claim of held records ([`StateStore::claim_due`], [`StateStore::claim_queued`]):
/// at `now`, up to `limit` of them, each leased for `lease`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseBatch {
    pub now: DateTime<Utc>,
    pub lease: Duration,
    pub limit: usize,
}

impl LeaseBatch {
    /// When the leases of this claim run out (to the millisecond, as the store keeps it).
    pub(crate) fn until(&self) -> DateTime<Utc> {
        millis(add(self.now, self.lease))
    }
}

/// A request that came with an `Idempotency-Key` (SPEC 7.6): whose key (keys of different
/// principals never collide), the key, and the fingerprint of the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdemRequest<'a> {
    pub principal: &'a str,
    pub key: &'a str,
    pub fingerprint: [u8; 32],
}

impl IdemRequest<'_> {
    /// One string per (principal, key) that cannot collide across principals (the
    /// principal's length comes first, so no choice of names makes two pairs equal).
    pub(crate) fn store_key(&self) -> String {
        format!("{}:{}{}", self.principal.len(), self.principal, self.key)
    }
}

/// What [`StateStore::idem_finish`] keeps for `request`: the answer (a 202 or 201:
/// `status` and exact `body`), replayed for `ttl`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdemAnswer<'a> {
    pub request: IdemRequest<'a>,
    pub status: u16,
    pub body: Vec<u8>,
    pub ttl: Duration,
}

/// What [`StateStore::idem_begin`] found for an `Idempotency-Key` (SPEC 7.6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdemBegin {
    /// First use (or the previous entry expired): the caller processes the request and
    /// then calls `idem_finish` (a 202) or `idem_abort` (anything else).
    New,
    /// The same key is being processed right now: 409 with `Retry-After: 1`.
    InProgress,
    /// The same key with the same request was answered: replay this, byte for byte.
    Replay { status: u16, body: Vec<u8> },
    /// The same key with a different request: 422.
    Mismatch,
}

/// The settings of `STATE_MAX_COMMANDS`, `STATE_MAX_BYTES` and `STATE_RETENTION_SECS`
/// (config fills them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreSettings {
    /// `memory` only: records kept, and live `Idempotency-Key`s kept; past it the oldest
    /// finished record goes, never an unfinished one or a live key (docs/store.md).
    pub max_commands: usize,
    /// `memory` only: bytes of records and keys (as the store counts them).
    pub max_bytes: usize,
    /// `memory` only: how many credentials share the bounds; each may fill at most its
    /// share with unfinished commands and live keys.
    pub shares: usize,
    /// How long a record is kept after it reached a final status.
    pub retention: Duration,
}

impl Default for StoreSettings {
    fn default() -> Self {
        Self {
            max_commands: DEFAULT_MAX_COMMANDS,
            max_bytes: DEFAULT_MAX_BYTES,
            shares: 1,
            retention: DEFAULT_RETENTION,
        }
    }
}

/// The state of tracked commands and idempotency keys. Object safe: the server holds an
/// `Arc<dyn StateStore>`. Every operation is atomic on its own; errors are
/// [`StoreError::Unavailable`] unless stated.
pub trait StateStore: Send + Sync + 'static {
    /// Short name for logs and metrics: `memory`, `file`, `redis`.
    fn name(&self) -> &'static str;

    /// Stores a new record (`Pending`, `Scheduled` with `fire_at` and `delivery`, or `Queued`
    /// with `delivery`).
    /// On a durable backend it is on disk when this resolves: only then may the API
    /// answer 202 (or hand the alarm to the scheduler). `Duplicate` if the id exists.
    fn create(&self, record: CommandRecord) -> BoxFuture<'_, Result<(), StoreError>>;

    /// The record, with lazy expiry applied (and persisted, so a later ack is ignored);
    /// `None` for an unknown id or a record dropped after retention.
    fn get<'a>(
        &'a self,
        command_id: &'a str,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Option<CommandRecord>, StoreError>>;

    /// Every transport accepted the command (or the scheduler published the alarm):
    /// `Pending`/`Scheduled`/`Queued` become `Sent` with `sent_at = now` and any lease ends. A
    /// record already final (an ack overtook the PUBACK) keeps its status and only gets
    /// `sent_at` if it had none. Returns the record's status now (not the record: this
    /// is on every command's path, and nobody there reads more); `None` if unknown.
    fn mark_sent<'a>(
        &'a self,
        command_id: &'a str,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Option<CommandStatus>, StoreError>>;

    /// A final outcome from the device's acknowledgement, or `Failed` with
    /// [`StatusReason::dispatch_failed`] / [`StatusReason::schedule_missed`] from the
    /// server itself. Applied (`completed_at = now`) only if the record exists, belongs
    /// to the completion's device and is not final and not expired; otherwise says why not.
    fn complete(
        &self,
        completion: Completion,
        now: DateTime<Utc>,
    ) -> BoxFuture<'_, Result<AckOutcome, StoreError>>;

    /// [`complete`](Self::complete) for each of `batch`, answered in the same order: how
    /// device acknowledgements are applied, so that a flood of them costs one store call
    /// per batch, not per acknowledgement. The default runs the calls concurrently, which
    /// `file:` groups into one transaction and `redis://` pipelines on its connection;
    /// `memory` takes its lock once.
    fn complete_many(
        &self,
        batch: Vec<Completion>,
        now: DateTime<Utc>,
    ) -> BoxFuture<'_, Vec<Result<AckOutcome, StoreError>>> {
        Box::pin(async move {
            let calls = batch.into_iter().map(|c| self.complete(c, now));
            futures_util::future::join_all(calls).await
        })
    }

    /// `DELETE /commands/{id}` (SPEC 7.5, 11.3): a `Scheduled` or `Queued` record that no
    /// publisher holds a lease on becomes `Cancelled` (`completed_at = now`) and will never
    /// be claimed.
    fn cancel<'a>(
        &'a self,
        command_id: &'a str,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<CancelOutcome, StoreError>>;

    /// Leases up to `limit` `Scheduled` records with `fire_at <= now` and no unexpired
    /// lease, earliest first, until `now + lease` (of `batch`): among concurrent claimers
    /// (replicas) each record goes to one. The claimer publishes and calls `mark_sent`; if
    /// the publish fails it does nothing and the record is claimed again once the lease
    /// runs out (a dead claimer's leases run out the same way). A record past
    /// [`CommandRecord::schedule_missed`] is returned too, so exactly one claimer marks
    /// it failed.
    fn claim_due(&self, batch: LeaseBatch)
    -> BoxFuture<'_, Result<Vec<CommandRecord>, StoreError>>;

    /// Leases, in the order they were accepted (`created_at`, then id), up to `limit`
    /// `Queued` records of `device_id` until `now + lease` (of `batch`; SPEC 11.3), for
    /// delivery now that the device is back. One device's queue goes to one claimer at a
    /// time: while any of its records is leased by another, this returns nothing, so the
    /// records go out in order and each once, across replicas. The claimer delivers them
    /// in order and calls `mark_sent` for each (which ends its lease); one it could not
    /// deliver is claimed again once the lease runs out. Records past `expiresAt` are
    /// `expired`, not returned.
    fn claim_queued<'a>(
        &'a self,
        device_id: &'a str,
        batch: LeaseBatch,
    ) -> BoxFuture<'a, Result<Vec<CommandRecord>, StoreError>>;

    /// The devices with at least one `Queued` record not past its expiry at `now`, in id
    /// order (a replica that starts, or missed a device's return, finds them here).
    fn queued_devices(&self, now: DateTime<Utc>) -> BoxFuture<'_, Result<Vec<String>, StoreError>>;

    /// How many records are `Queued` and not past their expiry at `now` (the
    /// `clock_server_commands_queued` gauge).
    fn count_queued(&self, now: DateTime<Utc>) -> BoxFuture<'_, Result<u64, StoreError>>;

    /// The expiry sweep (SPEC 13.1: `expired` noticed within 5 s): the records whose
    /// `expiresAt` is at or before `now` and that had no other final status by then, each
    /// returned once among all callers (replicas), `expired` now (persisted) — whether
    /// this call expired it or a read did before. At most `limit` for `redis://`, earliest
    /// first; `memory` and `file:` return every one due (a sweep a second keeps that
    /// small). The server publishes and counts what it gets.
    fn expire_due(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<CommandRecord>, StoreError>>;

    /// Checks and reserves the `Idempotency-Key` of `request`. Atomic: of concurrent
    /// callers with the same key one gets `New`, the others `InProgress` (or `Mismatch`
    /// for another fingerprint). A `New` entry stays in progress at most
    /// [`IDEM_IN_PROGRESS_TIMEOUT`]; a finished one `ttl` after `idem_finish`.
    fn idem_begin<'a>(
        &'a self,
        request: IdemRequest<'a>,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<IdemBegin, StoreError>>;

    /// Remembers `answer` to the request that got `New`, for its `ttl` from `now`; later
    /// begins with the same fingerprint replay it.
    fn idem_finish<'a>(
        &'a self,
        answer: IdemAnswer<'a>,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Forgets the key of `request` if it is in progress (the answer was not a 202, so a
    /// retry runs again). A finished entry is left alone.
    fn idem_abort<'a>(&'a self, request: IdemRequest<'a>) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Drops records `retention` past their final status and expired idempotency
    /// entries; returns how many were dropped. The server calls it on a timer (say once
    /// a minute); reads already treat such entries as gone, so timing is not critical.
    fn purge(&self, now: DateTime<Utc>) -> BoxFuture<'_, Result<u64, StoreError>>;

    /// Stores a new schedule unless its device has `max_per_device` already (SPEC 12.1);
    /// the count and the insert are one atomic step, across replicas.
    fn schedule_create(
        &self,
        record: ScheduleRecord,
        max_per_device: usize,
    ) -> BoxFuture<'_, Result<ScheduleCreated, StoreError>>;

    /// The schedule, `None` for an unknown id.
    fn schedule_get<'a>(
        &'a self,
        schedule_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<ScheduleRecord>, StoreError>>;

    /// Every schedule, or the device's, in the order of [`schedule::sort`].
    fn schedule_list<'a>(
        &'a self,
        device_id: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<ScheduleRecord>, StoreError>>;

    /// Writes `record` over the schedule with its id if that one's `version` is still
    /// `expected_version` (compare-and-set); the stored `version` becomes one more. The
    /// device id never changes (the caller keeps it).
    fn schedule_replace(
        &self,
        record: ScheduleRecord,
        expected_version: u64,
    ) -> BoxFuture<'_, Result<ScheduleWrite, StoreError>>;

    /// Removes the schedule; returns it as it was, `None` for an unknown id.
    fn schedule_delete<'a>(
        &'a self,
        schedule_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<ScheduleRecord>, StoreError>>;

    /// Up to `limit` enabled schedules whose `nextFireAt` is at or before `now`, earliest
    /// first. Reading claims nothing: [`schedule::claim_due`] does, by compare-and-set.
    fn schedule_due(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<ScheduleRecord>, StoreError>>;

    /// How many schedules are enabled (the `clock_server_schedules` gauge).
    fn schedule_count_enabled(&self) -> BoxFuture<'_, Result<u64, StoreError>>;

    /// Whether the store can serve right now. Cheap (`/ready` calls it on every probe).
    fn is_ready(&self) -> bool;

    /// Whether records survive a restart (`false` for `memory`: start-up warns that
    /// scheduled alarms are lost on restart).
    fn durable(&self) -> bool;
}

/// Which backend `STATE_STORE` names.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreKind {
    /// `none`: nothing is tracked.
    None,
    /// `memory` (the default).
    Memory,
    /// `file:<path>`.
    File(PathBuf),
    /// `redis://…` / `rediss://…`: the whole URL, which may hold a password.
    Redis(Secret),
}

impl fmt::Debug for StoreKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for StoreKind {
    /// The value as `STATE_STORE` would spell it, with any password `<redacted>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::None => f.write_str("none"),
            Self::Memory => f.write_str("memory"),
            Self::File(path) => write!(f, "file:{}", path.display()),
            Self::Redis(url) => f.write_str(&redact_userinfo(url.expose())),
        }
    }
}

const ACCEPTED: &str = "expected none, memory, file:<path>, \
     redis://[user:password@]host[:port][/db] or rediss://…";

/// Parses `STATE_STORE`. The error names the (redacted) value and what is accepted;
/// the caller prefixes the variable's name.
pub fn parse_state_store(value: &str) -> Result<StoreKind, String> {
    let value = value.trim();
    if value == "none" {
        return Ok(StoreKind::None);
    }
    if value == "memory" {
        return Ok(StoreKind::Memory);
    }
    if let Some(path) = value.strip_prefix("file:") {
        if path.is_empty() {
            return Err(format!(
                "\"file:\" needs a path, e.g. file:/var/lib/clock-server/state.db; {ACCEPTED}"
            ));
        }
        return Ok(StoreKind::File(PathBuf::from(path)));
    }
    for scheme in ["redis://", "rediss://"] {
        if let Some(rest) = value.strip_prefix(scheme) {
            let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
            if host.is_empty() || host.starts_with('/') || host.starts_with(':') {
                return Err(format!(
                    "{:?} names no host; {ACCEPTED}",
                    redact_userinfo(value)
                ));
            }
            return Ok(StoreKind::Redis(Secret::new(value)));
        }
    }
    Err(format!(
        "{:?} is not a state store; {ACCEPTED}",
        redact_userinfo(value)
    ))
}

/// Opens the store `kind` names (`None` for `none`). Blocking I/O for `file:`: call it
/// at start-up. Errors name the file or directory and what is wrong. `redis://` needs a
/// tokio runtime and returns at once: it connects in the background and is not ready
/// until Redis answers (a server started while Redis is down recovers by itself).
pub fn open(
    kind: &StoreKind,
    settings: StoreSettings,
) -> Result<Option<Arc<dyn StateStore>>, StoreError> {
    match kind {
        StoreKind::None => Ok(None),
        StoreKind::Memory => Ok(Some(Arc::new(MemoryStore::new(settings)))),
        #[cfg(feature = "file-store")]
        StoreKind::File(path) => Ok(Some(Arc::new(FileStore::open(path, settings)?))),
        #[cfg(feature = "redis-store")]
        StoreKind::Redis(url) => Ok(Some(Arc::new(RedisStore::open(url, settings)?))),
        #[allow(unreachable_patterns)]
        other => Err(not_built(other)),
    }
}

/// The refusal of a store this build leaves out (a lean build: its cargo feature is off).
fn not_built(kind: &StoreKind) -> StoreError {
    StoreError::Open {
        message: format!(
            "STATE_STORE={kind}: this clock-server was built without that store (cargo feature `{}`); use a build with it (the image has every store) or STATE_STORE=memory",
            kind.feature()
        ),
    }
}

impl StoreKind {
    /// The cargo feature that builds this store in (`none` and `memory` are always in).
    pub fn feature(&self) -> &'static str {
        match self {
            Self::None | Self::Memory => "",
            Self::File(_) => "file-store",
            Self::Redis(_) => "redis-store",
        }
    }
}

// ---------------------------------------------------------------------------------------
// Rules shared by the backends, so each applies the same transitions.

/// `t` + `d`, saturating instead of overflowing on absurd durations.
pub(crate) fn add(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    TimeDelta::from_std(d)
        .ok()
        .and_then(|d| t.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// `t` truncated to the millisecond.
pub(crate) fn millis(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(t.timestamp_millis()).unwrap_or(t)
}

/// A new record as the store keeps it (timestamps truncated to the millisecond): what a
/// read right after `create` returns.
pub fn normalised(r: CommandRecord) -> CommandRecord {
    normalise(r)
}

/// A new record's timestamps truncated to the millisecond.
pub(crate) fn normalise(mut r: CommandRecord) -> CommandRecord {
    r.created_at = millis(r.created_at);
    r.sent_at = r.sent_at.map(millis);
    r.completed_at = r.completed_at.map(millis);
    r.expires_at = millis(r.expires_at);
    r.fire_at = r.fire_at.map(millis);
    r
}

/// When the retention clock of `r` starts: its completion, or for a non-final record its
/// expiry (it is `expired` from then on, whether or not anyone looked).
#[cfg_attr(
    not(any(feature = "file-store", feature = "redis-store")),
    allow(dead_code)
)]
pub(crate) fn final_at(r: &CommandRecord) -> DateTime<Utc> {
    match r.completed_at {
        Some(t) if r.status.is_final() => t,
        _ => r.expires_at,
    }
}

/// Whether `r` is past retention and must read as unknown.
#[cfg_attr(not(feature = "file-store"), allow(dead_code))]
pub(crate) fn is_dropped(r: &CommandRecord, retention: Duration, now: DateTime<Utc>) -> bool {
    add(final_at(r), retention) <= now
}

/// Lazy expiry; returns whether `r` changed.
#[cfg_attr(not(feature = "file-store"), allow(dead_code))]
pub(crate) fn apply_expiry(r: &mut CommandRecord, now: DateTime<Utc>) -> bool {
    if r.status.is_final() || r.expires_at > now {
        return false;
    }
    r.status = CommandStatus::Expired;
    r.completed_at = Some(r.expires_at);
    true
}

/// `mark_sent`'s rule; returns whether `r` changed.
pub(crate) fn apply_mark_sent(r: &mut CommandRecord, now: DateTime<Utc>) -> bool {
    let now = millis(now);
    match r.status {
        CommandStatus::Pending | CommandStatus::Scheduled | CommandStatus::Queued => {
            r.status = CommandStatus::Sent;
            r.sent_at = Some(now);
            true
        }
        _ if r.sent_at.is_none() => {
            r.sent_at = Some(now);
            true
        }
        _ => false,
    }
}

/// `complete`'s rule on a record that exists (after `apply_expiry`).
pub(crate) fn apply_complete(
    r: &mut CommandRecord,
    c: &Completion,
    now: DateTime<Utc>,
) -> AckOutcome {
    if r.device_id.as_str() != c.device_id {
        return AckOutcome::WrongDevice;
    }
    match r.status {
        CommandStatus::Expired => return AckOutcome::Expired,
        s if s.is_final() => return AckOutcome::AlreadyFinal(s),
        _ => {}
    }
    r.status = match c.outcome {
        FinalOutcome::Succeeded => CommandStatus::Succeeded,
        FinalOutcome::Failed => CommandStatus::Failed,
    };
    r.completed_at = Some(millis(now));
    r.status_reason = c.reason.clone();
    AckOutcome::Applied(Box::new(r.clone()))
}

/// A timestamp as the API shows it (SPEC 7.2): RFC 3339 in UTC, milliseconds, `Z`.
pub fn format_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn ser_command_type<S: Serializer>(t: &CommandType, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(t.as_str())
}

fn ser_time<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_time(*t))
}

fn ser_opt_time<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => ser_time(t, s),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn every_accepted_form_of_state_store_parses() {
        assert_eq!(parse_state_store("none"), Ok(StoreKind::None));
        assert_eq!(parse_state_store("memory"), Ok(StoreKind::Memory));
        assert_eq!(
            parse_state_store("file:/var/lib/clock/state.db"),
            Ok(StoreKind::File(PathBuf::from("/var/lib/clock/state.db")))
        );
        assert_eq!(
            parse_state_store("file:state.db"),
            Ok(StoreKind::File(PathBuf::from("state.db")))
        );
        for url in [
            "redis://localhost",
            "redis://redis:6379/2",
            "rediss://user:pw@redis.example:6380/0",
        ] {
            assert!(
                matches!(parse_state_store(url), Ok(StoreKind::Redis(_))),
                "{url}"
            );
        }
    }

    #[test]
    fn a_store_left_out_of_the_build_is_refused_by_its_feature_without_the_password() {
        let kind = parse_state_store("rediss://app:s3cret@redis.example:6380/1").unwrap();
        let message = not_built(&kind).to_string();
        assert!(message.contains("cargo feature `redis-store`"), "{message}");
        assert!(
            message.contains("<redacted>") && !message.contains("s3cret"),
            "{message}"
        );
        let message = not_built(&parse_state_store("file:/tmp/x.db").unwrap()).to_string();
        assert!(
            message.starts_with("STATE_STORE=file:/tmp/x.db: ") && message.contains("`file-store`"),
            "{message}"
        );
    }

    #[test]
    fn a_redis_password_is_never_shown() {
        let kind = parse_state_store("rediss://app:s3cret@redis.example:6380/1").unwrap();
        assert_eq!(kind.to_string(), "rediss://<redacted>@redis.example:6380/1");
        assert!(!format!("{kind:?}").contains("s3cret"));
        // Outside a runtime the store cannot start; the error does not show the URL's
        // password either.
        let err = open(&kind, StoreSettings::default()).err().unwrap();
        let text = err.to_string();
        assert!(
            text.contains("tokio runtime") && !text.contains("s3cret"),
            "{text}"
        );
        let bad = parse_state_store("redis://app:s3cret@host:notaport").unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _guard = runtime.enter();
        let text = open(&bad, StoreSettings::default())
            .err()
            .unwrap()
            .to_string();
        assert!(
            text.contains("not a valid Redis URL") && !text.contains("s3cret"),
            "{text}"
        );
        let err = parse_state_store("redis://app:s3cret@").unwrap_err();
        assert!(err.contains("no host") && !err.contains("s3cret"), "{err}");
    }

    #[test]
    fn anything_else_is_refused_with_what_is_accepted() {
        for value in ["", "Memory", "file:", "sqlite:/x.db", "http://u:s3cret@h"] {
            let err = parse_state_store(value).unwrap_err();
            assert!(err.contains("none, memory, file:<path>"), "{value}: {err}");
            assert!(!err.contains("s3cret"), "{err}");
        }
    }

    #[test]
    fn none_opens_no_store_and_memory_is_not_durable() {
        assert!(
            open(&StoreKind::None, StoreSettings::default())
                .unwrap()
                .is_none()
        );
        let memory = open(&StoreKind::Memory, StoreSettings::default())
            .unwrap()
            .unwrap();
        assert_eq!(
            (memory.name(), memory.durable(), memory.is_ready()),
            ("memory", false, true)
        );
    }

    #[test]
    fn status_names_round_trip_and_only_four_are_final() {
        use CommandStatus::*;
        for s in [
            Pending, Scheduled, Queued, Sent, Succeeded, Failed, Expired, Cancelled,
        ] {
            assert_eq!(CommandStatus::parse(s.as_str()), Some(s));
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{s}\""));
            assert_eq!(
                s.is_final(),
                matches!(s, Succeeded | Failed | Expired | Cancelled)
            );
        }
    }
}
