//! The core: one command's life, from submission to its end (SPEC 2.1 steps 11–12, 7,
//! 8.1). The HTTP layer extracts a [`Submission`], calls [`Commands::submit`] (or
//! [`Commands::status`], [`Commands::cancel`]) and maps the typed outcome to an answer;
//! the alarm scheduler and the acknowledgement loop run here too. Nothing outside this
//! module holds the state store.
//!
//! - **A submission outlives its caller.** [`Commands::submit`] runs the whole life in a
//!   task of its own and waits for it: a caller who hangs up mid-dispatch drops only the
//!   wait, never the dispatch. Once a command is on its way its record, its audit record
//!   and its `Idempotency-Key` are finished whatever the caller does.
//! - **Where a command goes** is decided in one place ([`Commands::plan`]): now, or held
//!   by the gateway until its time (an AWTRIX alarm). Holding a command until its device
//!   is online (SPEC 11.3) is another arm there.
//! - **Every status change** passes through one function (`records::Tracker::status_changed`):
//!   it counts final statuses now, and is where live events (SPEC 13) are emitted.
//! - **Background tasks** (the purge, the acknowledgement loop, the alarm scheduler, keys
//!   settled after a store outage) all stop on [`Commands::stop`], which also waits for
//!   the submissions still under way.
//!
//! Submodules: `records` (the store behind the rules, status changes), `idempotency`
//! (`Idempotency-Key`), `acks` (device acknowledgements), `scheduler` (held alarms),
//! `held` (commands held for an offline device, SPEC 11.3).

mod acks;
mod held;
mod idempotency;
mod records;
mod scheduler;
mod tasks;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::watch;

pub use self::acks::AckIntake;
use self::idempotency::Settlement;
pub use self::idempotency::{IdempotencyKey, fingerprint, parse_idempotency_key};
use self::records::{Tracker, Unavailable};
pub use self::scheduler::{BATCH, CONCURRENCY, DOWN_LEASE, LEASE_MARGIN, TICK, Wake};
use self::tasks::Tasks;
use crate::dispatch::{self, AuditContext, AuditedCommand, Dispatcher};
use crate::domain::presence::PresenceState;
use crate::domain::{Command, CommandType, DeviceId, Devices, Envelope, Profile, ValidationError};
use crate::metrics::{self, Metrics};
use crate::presence::Presence;
use crate::security::Credential;
use crate::store::{
    CancelOutcome, CommandRecord, CommandStatus, Delivery, FinalOutcome, IdemBegin, StateStore,
    StatusReason, format_time,
};
use crate::transport::mqtt::MqttTransport;

/// A command to submit: validated, its device in the caller's scopes.
#[derive(Debug, Clone)]
pub struct Submission {
    pub device_id: DeviceId,
    pub command: Command,
    /// The body's `ttlSeconds`, if any.
    pub ttl: Option<Duration>,
    /// With a state store: the request's `Idempotency-Key` (ignored without one).
    pub key: Option<IdempotencyKey>,
    pub origin: Origin,
    /// For an occurrence of a schedule (SPEC 12.3): where it comes from; `None` for a
    /// command from the API.
    pub occurrence: Option<Occurrence>,
}

/// The schedule an occurrence's command comes from, and the command id its claim chose
/// (so the schedule's `lastCommandId` names this very command).
#[derive(Debug, Clone)]
pub struct Occurrence {
    pub schedule_id: String,
    pub command_id: String,
}

/// Who submitted a command, for its record and audit record.
#[derive(Debug, Clone)]
pub struct Origin {
    /// The credential's id.
    pub principal: String,
    pub client_ip: IpAddr,
    pub request_id: String,
}

/// What became of a submitted command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Submitted {
    /// Every transport accepted it (with a store, the record is `sent`).
    Sent(Receipt),
    /// An alarm the gateway holds until its time; nothing has left yet.
    Scheduled(Receipt),
    /// Held until its device is online again (SPEC 11.3); nothing has left yet.
    Queued(Receipt),
    /// The remembered answer to an `Idempotency-Key`; nothing was dispatched again.
    Replayed(Receipt),
}

impl Submitted {
    pub fn receipt(&self) -> &Receipt {
        match self {
            Self::Sent(r) | Self::Scheduled(r) | Self::Queued(r) | Self::Replayed(r) => r,
        }
    }
}

/// The `202` of a submission: its status code and exact body (SPEC 7.2), as remembered
/// for an `Idempotency-Key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub command_id: String,
    pub http_status: u16,
    pub body: Vec<u8>,
    /// Whether the command has a record (a status resource at `/commands/<id>`).
    pub tracked: bool,
}

/// Why a command was not submitted, looked up or cancelled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// The state store failed (logged and counted); nothing was dispatched.
    #[error("state store unavailable")]
    StoreUnavailable,
    /// The `memory` store holds only unfinished commands and live keys, which are never
    /// evicted (SPEC 10); nothing was dispatched.
    #[error("state store full")]
    StoreFull,
    #[error("request with this idempotency key is in progress")]
    IdempotencyInProgress,
    #[error("idempotency key reused with a different request")]
    IdempotencyMismatch,
    /// A transport refused it; with a store, its record (`command_id`) is `failed`.
    #[error("command dispatch failed")]
    DispatchFailed { command_id: Option<String> },
    /// Unknown, malformed, dropped, out of the caller's scopes, or no store.
    #[error("not found")]
    NotFound,
    #[error("command can no longer be cancelled")]
    NotCancellable { status: &'static str },
}

impl From<Unavailable> for CommandError {
    fn from(e: Unavailable) -> Self {
        if e.full {
            Self::StoreFull
        } else {
            Self::StoreUnavailable
        }
    }
}

/// The `202` body; `status` and `expiresAt` only for a tracked command (SPEC 7.2).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Accepted<'a> {
    result: &'static str,
    command_id: &'a str,
    device_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<String>,
}

impl Accepted<'_> {
    fn receipt(&self) -> Receipt {
        Receipt {
            command_id: self.command_id.to_owned(),
            http_status: 202,
            // Serialising strings cannot fail.
            body: serde_json::to_vec(self).unwrap_or_default(),
            tracked: self.status.is_some(),
        }
    }
}

/// Where a command goes when it is submitted.
enum Plan {
    /// Dispatched now.
    Now,
    /// Held by the gateway until `fire_at` (SPEC 8.1), then published as prepared.
    At {
        fire_at: DateTime<Utc>,
        delivery: Delivery,
    },
    /// Held until the device is online again (SPEC 11.3).
    UntilOnline { delivery: Delivery },
}

/// The settings of the tracked commands, with the store they live in.
pub struct Tracking {
    pub store: Arc<dyn StateStore>,
    /// `COMMAND_TTL_SECS`.
    pub command_ttl: Duration,
    /// `IDEMPOTENCY_TTL_SECS`.
    pub idempotency_ttl: Duration,
}

/// The core of one server.
pub struct Commands {
    dispatcher: Dispatcher,
    devices: Arc<Devices>,
    metrics: Arc<Metrics>,
    /// `None` with `STATE_STORE=none`.
    tracker: Option<Arc<Tracker>>,
    /// Tells the alarm scheduler about alarms scheduled here.
    wake: Arc<Wake>,
    /// Background tasks and submissions under way.
    tasks: Tasks,
    stop: watch::Sender<bool>,
    /// Which devices are there: commands for an offline one are held (SPEC 11.3).
    presence: Option<Arc<Presence>>,
}

impl Commands {
    /// The core around `dispatcher`, tracking commands in `tracking`'s store when given.
    /// With a store, the purge of old records starts here.
    pub fn new(
        dispatcher: Dispatcher,
        devices: Arc<Devices>,
        metrics: Arc<Metrics>,
        tracking: Option<Tracking>,
        events: Arc<crate::events::Hub>,
    ) -> Self {
        let tracker = tracking.map(|t| {
            Arc::new(Tracker::new(
                t.store,
                t.command_ttl,
                t.idempotency_ttl,
                metrics.clone(),
                events,
            ))
        });
        let commands = Self {
            dispatcher,
            devices,
            metrics,
            tracker,
            wake: Arc::default(),
            tasks: Tasks::default(),
            stop: watch::channel(false).0,
            presence: None,
        };
        if let Some(tracker) = &commands.tracker {
            commands
                .tasks
                .spawn(tracker.clone().purge_until(commands.stop.subscribe()));
            commands
                .tasks
                .spawn(tracker.clone().expire_until(commands.stop.subscribe()));
        }
        commands
    }

    /// Holds commands for devices that `presence` says are offline, and delivers them
    /// when they are back (SPEC 11.3), until [`Self::stop`]. Nothing is held without a
    /// store. Call before serving.
    pub fn hold_for_offline_devices(mut self, presence: Arc<Presence>) -> Self {
        if let Some(tracker) = &self.tracker {
            self.tasks.spawn(held::run_until(
                tracker.clone(),
                self.dispatcher.clone(),
                self.devices.clone(),
                presence.clone(),
                self.metrics.clone(),
                self.stop.subscribe(),
            ));
            self.presence = Some(presence);
        }
        self
    }

    /// Starts applying device acknowledgements (`prefix`: the topic prefix they are read
    /// under) until [`Self::stop`]; returns the intake to hand each received message to
    /// (it screens them and queues at most `transport::mqtt::acks::ACK_QUEUE`). `None`
    /// without a store: nothing to acknowledge.
    pub fn start_acks(&self, prefix: String) -> Option<AckIntake> {
        let tracker = self.tracker.as_ref()?;
        let (intake, apply) = acks::start(
            tracker.clone(),
            self.metrics.clone(),
            self.devices.clone(),
            prefix,
            self.stop.subscribe(),
        );
        self.tasks.spawn(apply);
        Some(intake)
    }

    /// Publishes the alarms the gateway holds through `mqtt` (posts a LaMetric clock's
    /// through `lametric`) at their time until [`Self::stop`]. Nothing without a store.
    /// `publish_timeout` bounds one delivery: a claimed alarm is leased a little longer.
    pub fn start_scheduler(
        &self,
        mqtt: Option<Arc<MqttTransport>>,
        lametric: Option<Arc<crate::transport::lametric::LametricTransport>>,
        publish_timeout: Duration,
    ) {
        let Some(tracker) = &self.tracker else {
            return;
        };
        self.tasks.spawn(scheduler::run_until(
            tracker.clone(),
            mqtt,
            lametric,
            self.devices.clone(),
            self.presence.clone(),
            self.wake.clone(),
            publish_timeout,
            self.stop.subscribe(),
        ));
    }

    /// Runs `task` in the background until [`Self::stop`], which it is told of through the
    /// receiver it is given (e.g. the firing of schedules, SPEC 12.3).
    pub fn run_in_background<F, Fut>(&self, task: F)
    where
        F: FnOnce(watch::Receiver<bool>) -> Fut,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        self.tasks.spawn(task(self.stop.subscribe()));
    }

    /// Whether commands can be taken now: every transport can deliver and the store (if
    /// any) answers.
    pub fn is_ready(&self) -> bool {
        self.dispatcher.is_ready() && self.tracker.as_ref().is_none_or(|t| t.store.is_ready())
    }

    /// Whether commands are tracked (a state store is configured).
    pub fn tracks(&self) -> bool {
        self.tracker.is_some()
    }

    /// The background tasks and submissions still running (0 once [`Self::stop`] is
    /// done).
    pub fn running_tasks(&self) -> usize {
        self.tasks.running_count()
    }

    /// Stops every background task and waits for them and for the submissions under
    /// way (each bounded by its transport's timeout); then closes the transports.
    pub async fn stop(&self) {
        self.tasks.wait_idle_submissions().await;
        self.stop.send_replace(true);
        self.tasks.wait_all().await;
        self.dispatcher.close().await;
    }

    /// Steps 11–12 with SPEC 7 around them: the `Idempotency-Key`, the record written
    /// before anything leaves, the dispatch or the hold, the audit record, the status.
    /// Runs in a task of its own: dropping this future (a caller who hung up) does not
    /// stop the submission.
    /// The device's profile's own limits on a valid command (SPEC 8.1: an AWTRIX
    /// notification the firmware would drop for its size), part of validation (step 10).
    pub fn admits(
        &self,
        device_id: &DeviceId,
        command: Command,
    ) -> Result<Command, ValidationError> {
        self.devices.profile(device_id).admits(command)
    }

    pub async fn submit(
        self: &Arc<Self>,
        submission: Submission,
    ) -> Result<Submitted, CommandError> {
        let core = self.clone();
        let guard = self.tasks.submission();
        let task = tokio::spawn(async move {
            let _guard = guard;
            core.submit_here(submission).await
        });
        match task.await {
            Ok(result) => result,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // Only when the runtime shuts down under it.
            Err(_) => Err(CommandError::DispatchFailed { command_id: None }),
        }
    }

    async fn submit_here(&self, s: Submission) -> Result<Submitted, CommandError> {
        let Some(tracker) = &self.tracker else {
            return self.submit_untracked(s).await;
        };
        let principal = s.origin.principal.as_str();
        if let Some(k) = &s.key {
            let begun = tracker
                .store
                .idem_begin(k.of(principal), Utc::now())
                .await
                .map_err(|e| store_failed(tracker, "checking an Idempotency-Key", &e))?;
            match begun {
                IdemBegin::New => {}
                IdemBegin::InProgress => return Err(CommandError::IdempotencyInProgress),
                IdemBegin::Mismatch => return Err(CommandError::IdempotencyMismatch),
                IdemBegin::Replay { status, body } => return Ok(self.replayed(&s, status, body)),
            }
        }
        let result = self.submit_tracked(tracker, &s).await;
        if let Some(key) = &s.key {
            let settlement = match &result {
                Ok(submitted) => {
                    let receipt = submitted.receipt();
                    Settlement::Finish {
                        status: receipt.http_status,
                        body: receipt.body.clone(),
                    }
                }
                Err(_) => Settlement::Abort,
            };
            if !idempotency::settle_once(tracker, principal, key, &settlement).await {
                self.tasks.spawn(idempotency::settle_until(
                    tracker.clone(),
                    principal.to_owned(),
                    key.clone(),
                    settlement,
                    self.stop.subscribe(),
                ));
            }
        }
        result
    }

    /// Where `command` for `device` of `profile` goes: an alarm the gateway holds waits
    /// for its time (and, if the device is offline then, for the device: the scheduler);
    /// anything else for a device that is offline waits for it.
    fn plan(&self, device: &DeviceId, profile: &Profile, command: &Command) -> Plan {
        // An alarm whose device's firmware the gateway holds alarms for: its delivery in
        // that firmware's form ([`Profile::held_alarm`]; for a LaMetric the topic is the
        // request path), published at its time.
        if profile.gateway_schedules_alarms()
            && let Some(fire_at) = command.alarm_instant()
        {
            return match profile.held_alarm(command) {
                Some(held) => Plan::At {
                    fire_at,
                    delivery: Delivery {
                        topic: held.topic,
                        payload: held.payload,
                    },
                },
                None => Plan::Now,
            };
        }
        if self
            .presence
            .as_ref()
            .is_some_and(|p| p.state(device, Utc::now()) == PresenceState::Offline)
        {
            return Plan::UntilOnline {
                delivery: held::delivery_of(command),
            };
        }
        Plan::Now
    }

    async fn submit_untracked(&self, s: Submission) -> Result<Submitted, CommandError> {
        let command_type = s.command.command_type();
        let profile = self.devices.profile(&s.device_id).clone();
        if profile.gateway_schedules_alarms() && s.command.alarm_instant().is_some() {
            // Start-up refuses such a device without a store; never publish an alarm early.
            tracing::error!(device_id = %s.device_id, "an alarm for a device whose alarms the gateway holds, without a state store");
            return Err(CommandError::DispatchFailed { command_id: None });
        }
        let envelope = Envelope {
            command_id: crate::shared::new_id().to_string(),
            request_id: s.origin.request_id.clone(),
            device_id: s.device_id,
            command: s.command,
            expires_at: None,
            profile,
        };
        self.dispatcher
            .dispatch(&envelope, &audit_context(&s.origin, command_type))
            .await
            .map_err(|_| CommandError::DispatchFailed { command_id: None })?;
        Ok(Submitted::Sent(
            Accepted {
                result: command_type.accepted_result(),
                command_id: &envelope.command_id,
                device_id: envelope.device_id.as_str(),
                status: None,
                expires_at: None,
            }
            .receipt(),
        ))
    }

    /// The record first (nothing is dispatched without one), then the dispatch or the
    /// hold, then its status.
    async fn submit_tracked(
        &self,
        tracker: &Tracker,
        s: &Submission,
    ) -> Result<Submitted, CommandError> {
        let now = Utc::now();
        let command_type = s.command.command_type();
        let profile = self.devices.profile(&s.device_id).clone();
        let command_id = s.occurrence.as_ref().map_or_else(
            || crate::shared::new_id().to_string(),
            |o| o.command_id.clone(),
        );
        let device = s.device_id.as_str();
        let plan = self.plan(&s.device_id, &profile, &s.command);
        // `expiresAt` of a held alarm is its time plus the TTL.
        let (expires_at, fire_at) = match &plan {
            Plan::Now | Plan::UntilOnline { .. } => (tracker.expires_at(now, s.ttl), None),
            Plan::At { fire_at, .. } => (tracker.expires_at(*fire_at, s.ttl), Some(*fire_at)),
        };
        let queued = matches!(plan, Plan::UntilOnline { .. });
        let record = CommandRecord::pending(
            &command_id,
            &s.device_id,
            command_type,
            &s.origin.principal,
            now,
            expires_at,
        );
        let record = match plan {
            Plan::At { fire_at, delivery } => record.scheduled(fire_at, delivery),
            Plan::UntilOnline { delivery } if !profile.acknowledges() => {
                record.without_device_acks().queued(delivery)
            }
            Plan::UntilOnline { delivery } => record.queued(delivery),
            Plan::Now if !profile.acknowledges() => record.without_device_acks(),
            Plan::Now => record,
        }
        .for_schedule(s.occurrence.as_ref().map(|o| o.schedule_id.clone()));
        let written = tracker.create(record).await?;
        let accepted = |status: CommandStatus| {
            Accepted {
                result: command_type.accepted_result(),
                command_id: &command_id,
                device_id: device,
                status: Some(status.as_str()),
                expires_at: Some(format_time(expires_at)),
            }
            .receipt()
        };
        // Held, not sent: audited here (a dispatch audits itself).
        let held = AuditedCommand {
            device_id: device,
            command_type: command_type.as_str(),
            request_id: &s.origin.request_id,
            command_id: &command_id,
        };
        if let Some(fire_at) = fire_at {
            self.wake.scheduled(fire_at);
            dispatch::audit_scheduled(
                &audit_context(&s.origin, command_type),
                &held,
                &format_time(fire_at),
            );
            return Ok(Submitted::Scheduled(accepted(CommandStatus::Scheduled)));
        }
        if queued {
            dispatch::audit_queued(&audit_context(&s.origin, command_type), &held);
            return Ok(Submitted::Queued(accepted(CommandStatus::Queued)));
        }
        let envelope = Envelope {
            command_id: command_id.clone(),
            request_id: s.origin.request_id.clone(),
            device_id: s.device_id.clone(),
            command: s.command.clone(),
            expires_at: Some(expires_at),
            profile,
        };
        let answers = envelope.profile.direct();
        if let Err(e) = self
            .dispatcher
            .dispatch(&envelope, &audit_context(&s.origin, command_type))
            .await
        {
            match e.rejection() {
                // The device answered no (SPEC 8.3): its reason, and no retry.
                Some(message) => {
                    let reason = StatusReason::new("device_rejected", message);
                    let _ = tracker
                        .complete(
                            "marking a rejected command",
                            &command_id,
                            device,
                            FinalOutcome::Failed,
                            Some(reason),
                        )
                        .await;
                }
                None => tracker.dispatch_failed(&command_id, device).await,
            }
            return Err(CommandError::DispatchFailed {
                command_id: Some(command_id),
            });
        }
        tracker.sent(&command_id, written.as_ref()).await;
        if answers {
            // A device reached over its own API answered yes: that ends the command.
            let _ = tracker
                .complete(
                    "marking an answered command",
                    &command_id,
                    device,
                    FinalOutcome::Succeeded,
                    None,
                )
                .await;
            return Ok(Submitted::Sent(accepted(CommandStatus::Succeeded)));
        }
        Ok(Submitted::Sent(accepted(CommandStatus::Sent)))
    }

    /// The remembered answer to an `Idempotency-Key`, byte for byte; nothing is dispatched.
    fn replayed(&self, s: &Submission, status: u16, body: Vec<u8>) -> Submitted {
        self.metrics.record_replay();
        let command_id = command_id_of(&body).unwrap_or_default();
        let command_type = s.command.command_type();
        dispatch::audit_replayed(
            &audit_context(&s.origin, command_type),
            &AuditedCommand {
                device_id: s.device_id.as_str(),
                command_type: command_type.as_str(),
                request_id: &s.origin.request_id,
                command_id: &command_id,
            },
        );
        Submitted::Replayed(Receipt {
            command_id,
            http_status: status,
            body,
            tracked: true,
        })
    }

    /// `GET /commands/{commandId}` (SPEC 7.3): the record, when `viewer` covers its
    /// device. Unknown, malformed, dropped, out of scope, or no store: `NotFound`.
    pub async fn status(
        &self,
        viewer: &Credential,
        command_id: &str,
    ) -> Result<CommandRecord, CommandError> {
        self.visible_record(viewer, command_id)
            .await
            .map(|(_, r)| r)
    }

    /// `DELETE /commands/{commandId}` (SPEC 7.5, 11.3): a scheduled or queued command
    /// becomes `cancelled`; any other status is `NotCancellable`; not found as for
    /// [`Self::status`].
    pub async fn cancel(
        &self,
        viewer: &Credential,
        command_id: &str,
    ) -> Result<CommandRecord, CommandError> {
        let (tracker, record) = self.visible_record(viewer, command_id).await?;
        let cancelled = tracker
            .store
            .cancel(&record.command_id, Utc::now())
            .await
            .map_err(|e| store_failed(tracker, "cancelling", &e))?;
        match cancelled {
            CancelOutcome::Cancelled(record) => {
                tracker.status_changed(&record);
                Ok(*record)
            }
            CancelOutcome::NotCancellable(status) => Err(CommandError::NotCancellable {
                status: status.as_str(),
            }),
            CancelOutcome::NotFound => Err(CommandError::NotFound),
        }
    }

    /// The record of `command_id` if `viewer` may see it: the same `NotFound` for every
    /// reason it may not, so a caller learns nothing about other tenants' commands.
    async fn visible_record(
        &self,
        viewer: &Credential,
        command_id: &str,
    ) -> Result<(&Tracker, CommandRecord), CommandError> {
        let tracker = self.tracker.as_deref().ok_or(CommandError::NotFound)?;
        if uuid::Uuid::try_parse(command_id).is_err() {
            return Err(CommandError::NotFound);
        }
        let record = tracker
            .store
            .get(command_id, Utc::now())
            .await
            .map_err(|e| store_failed(tracker, "reading a record", &e))?
            .ok_or(CommandError::NotFound)?;
        if !viewer.covers(&record.device_id) {
            return Err(CommandError::NotFound);
        }
        Ok((tracker, record))
    }
}

/// A store failure, logged and counted: the caller answers 503.
fn store_failed(tracker: &Tracker, what: &str, e: &crate::store::StoreError) -> CommandError {
    tracker.failed(what, e).into()
}

/// The audit context of a command submitted through its API route.
fn audit_context(origin: &Origin, command_type: CommandType) -> AuditContext<'_> {
    let (method, path) = command_type.api_route();
    AuditContext {
        principal: &origin.principal,
        client_ip: origin.client_ip,
        method: metrics::method_label(&method),
        path,
    }
}

/// The `commandId` of a 202 body.
fn command_id_of(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Id {
        command_id: String,
    }
    serde_json::from_slice::<Id>(body)
        .ok()
        .map(|b| b.command_id)
}
