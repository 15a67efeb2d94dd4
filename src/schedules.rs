//! Schedules (SPEC 12.1): the rules of the `/schedules` resource, between the HTTP edge
//! and the store. The edge extracts and maps outcomes to answers; this module decides:
//! validation of a body into a record, scopes (a schedule outside the caller's scopes is
//! as unknown as one that does not exist), the per-device limit, merge patches, skips,
//! previews, and `Idempotency-Key` on create.
//!
//! Every change is a compare-and-set on the schedule's `version`
//! ([`StateStore::schedule_replace`]): a `PATCH` racing the firing of an occurrence (or
//! another `PATCH`) reads again and applies itself to the newer schedule, so neither
//! undoes the other.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use tokio::sync::watch;

use crate::commands::{Commands, IdempotencyKey, Occurrence, Origin, Submission};
use crate::domain::Command;
use crate::domain::DeviceId;
use crate::domain::schedule::{ScheduleError, ScheduleRequest};
use crate::metrics::Metrics;
use crate::security::Credential;
use crate::store::schedule::{Claim, claim_due};
use crate::store::{
    IdemAnswer, IdemBegin, ScheduleCreated, ScheduleRecord, ScheduleWrite, StateStore, StoreError,
};

/// `SCHEDULES_MAX_PER_DEVICE` bounds.
pub const MAX_PER_DEVICE: std::ops::RangeInclusive<usize> = 1..=1000;
/// A preview's `count`: bounds and default.
pub const PREVIEW_COUNT: std::ops::RangeInclusive<usize> = 1..=100;
pub const PREVIEW_DEFAULT: usize = 10;
/// How often a change is retried when someone else wrote the schedule in between.
const CAS_ATTEMPTS: usize = 8;
/// Longest sleep between two claims of due occurrences: occurrences are whole seconds, and
/// SPEC 12.3 wants them sent normally within 1 s.
pub const TICK: Duration = Duration::from_millis(250);
/// Schedules claimed at once; a full batch is followed by the next claim at once.
pub const BATCH: usize = 1024;
/// Occurrence commands submitted at once (the transports' in-flight windows bound them
/// further).
pub const CONCURRENCY: usize = 256;
/// How often the `clock_server_schedules` gauge is counted again without a change here
/// (other replicas change schedules too).
const GAUGE_EVERY: Duration = Duration::from_secs(5);

/// Why a schedule operation did not happen; the edge maps each to its answer.
#[derive(Debug)]
pub enum Refused {
    /// 400 `invalid command` with this `detail`.
    Invalid(String),
    /// 400 `invalid request body` (not an object of the schedule's fields).
    Body(String),
    /// 400: a preview's `from` or `count`, or a list's `deviceId`.
    Parameter(String),
    /// 403: the body names a device outside the caller's scopes.
    Forbidden,
    /// 404: unknown, malformed or out of scope.
    NotFound,
    /// 409: the device has `SCHEDULES_MAX_PER_DEVICE` already.
    TooMany,
    /// 409: a skip of a disabled schedule.
    Disabled,
    /// `Idempotency-Key` outcomes (SPEC 7.6).
    InProgress,
    Mismatch,
    /// 503: the store failed (logged here).
    Unavailable,
    /// 503: the `memory` store holds all the schedules it may (or the caller's share).
    Full,
}

/// The answer to a create: a new schedule, or the remembered 201 of an
/// `Idempotency-Key`, byte for byte.
pub enum Created {
    New(Box<ScheduleRecord>),
    Replay { status: u16, body: Vec<u8> },
}

/// The schedule rules of one server.
pub struct Schedules {
    pub store: Arc<dyn StateStore>,
    /// `SCHEDULES_MAX_PER_DEVICE`.
    pub max_per_device: usize,
    /// `IDEMPOTENCY_TTL_SECS`.
    pub idempotency_ttl: Duration,
    /// Told about every change of a `nextFireAt`, so the firing loop wakes in time.
    changed: Arc<tokio::sync::Notify>,
    /// Where each creation, change and deletion is published as a `schedule` event
    /// (SPEC 13.1), once the server sets it up.
    events: std::sync::OnceLock<Arc<crate::events::Hub>>,
    metrics: Arc<Metrics>,
    /// Refusals for a full store, logged folded (at most a line a second).
    full: crate::shared::Folded,
}

impl Schedules {
    pub fn new(
        store: Arc<dyn StateStore>,
        max_per_device: usize,
        idempotency_ttl: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            store,
            max_per_device,
            idempotency_ttl,
            changed: Arc::new(tokio::sync::Notify::new()),
            full: crate::shared::Folded::default(),
            events: std::sync::OnceLock::new(),
            metrics,
        }
    }

    /// SPEC 12.3: claims the due occurrences ([`claim_due`]: exactly once across
    /// replicas, missed ones counted) and submits each as an ordinary alarm command
    /// through `commands`, until `stop`. Wakes every [`TICK`], and at once after a change
    /// made here.
    pub async fn fire_until(
        self: Arc<Self>,
        commands: Arc<Commands>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut counted: Option<Instant> = None;
        loop {
            if *stop.borrow() {
                return;
            }
            if counted.is_none_or(|t| t.elapsed() >= GAUGE_EVERY) {
                if let Ok(n) = self.store.schedule_count_enabled().await {
                    self.metrics.set_schedules(n);
                }
                counted = Some(Instant::now());
            }
            if self.fire_due(&commands).await {
                continue;
            }
            tokio::select! {
                () = tokio::time::sleep(TICK) => {}
                () = self.changed.notified() => counted = None,
                _ = stop.changed() => return,
            }
        }
    }

    /// One claim and its commands; whether the batch was full (more may be due).
    async fn fire_due(&self, commands: &Arc<Commands>) -> bool {
        let claims = match claim_due(&*self.store, Utc::now(), BATCH, || {
            crate::shared::new_id().to_string()
        })
        .await
        {
            Ok(claims) => claims,
            Err(e) => {
                self.failed("claiming due schedules", &e);
                return false;
            }
        };
        let full = claims.len() >= BATCH;
        futures_util::stream::iter(claims)
            .for_each_concurrent(CONCURRENCY, |claim| self.fire(commands, claim))
            .await;
        full
    }

    /// One claimed schedule: its missed occurrences counted, its due one submitted.
    async fn fire(&self, commands: &Arc<Commands>, claim: Claim) {
        let schedule = &claim.schedule;
        // The schedule moved on (`nextFireAt`, `lastFiredAt`): a `schedule` event.
        self.published(schedule, false);
        if claim.missed > 0 {
            self.metrics
                .record_occurrences("missed", u64::from(claim.missed));
            tracing::warn!(
                schedule_id = %schedule.schedule_id,
                device_id = %schedule.device_id,
                missed = claim.missed,
                "schedule: occurrences reached more than 60 s late were skipped (was the gateway down?)"
            );
        }
        let Some((at, command_id)) = claim.fire else {
            return;
        };
        let Ok(device_id) = DeviceId::parse(&schedule.device_id) else {
            return;
        };
        let submission = Submission {
            device_id,
            command: Command::SetAlarm {
                alarm_time: at.fixed_offset(),
                label: schedule.label.clone(),
            },
            ttl: schedule
                .ttl_seconds
                .map(|t| Duration::from_secs(u64::from(t))),
            key: None,
            origin: Origin {
                principal: schedule.principal.clone(),
                client_ip: std::net::IpAddr::from([0, 0, 0, 0]),
                request_id: format!("schedule-{}", schedule.schedule_id),
            },
            occurrence: Some(Occurrence {
                schedule_id: schedule.schedule_id.clone(),
                command_id: command_id.clone(),
            }),
        };
        match commands.submit(submission).await {
            Ok(_) | Err(crate::commands::CommandError::DispatchFailed { .. }) => {
                // A failed dispatch still made a command (its record says `failed`).
                self.metrics.record_occurrences("fired", 1);
            }
            Err(e) => tracing::warn!(
                schedule_id = %schedule.schedule_id,
                command_id = %command_id,
                error = %e,
                "schedule: the occurrence's command could not be created; it is lost"
            ),
        }
    }

    /// Publishes every creation, change and deletion to `events` from now on.
    pub fn publish_to(&self, events: Arc<crate::events::Hub>) {
        let _ = self.events.set(events);
    }

    /// A `schedule` event: `record` as it is now (or was, `deleted`).
    pub fn published(&self, record: &ScheduleRecord, deleted: bool) {
        let Some(events) = self.events.get().filter(|e| e.wanted()) else {
            return;
        };
        let Ok(device) = DeviceId::parse(&record.device_id) else {
            return;
        };
        let json = String::from_utf8(record.to_json()).unwrap_or_default();
        events.publish(crate::events::Event::schedule(&device, &json, deleted));
    }

    /// Notified when a schedule's `nextFireAt` may have moved earlier.
    pub fn changes(&self) -> Arc<tokio::sync::Notify> {
        Arc::clone(&self.changed)
    }

    fn failed(&self, what: &str, e: &StoreError) -> Refused {
        tracing::warn!(store = self.store.name(), error = %e, "state store: {what} failed");
        Refused::Unavailable
    }

    /// `POST /schedules`.
    pub async fn create(
        &self,
        caller: &Credential,
        body: ScheduleRequest,
        key: Option<IdempotencyKey>,
        now: DateTime<Utc>,
    ) -> Result<Created, Refused> {
        let record = new_record(caller, body, now)?;
        let principal = caller.id.as_str();
        if let Some(k) = &key {
            let begun = self
                .store
                .idem_begin(k.of(principal), now)
                .await
                .map_err(|e| self.failed("checking an Idempotency-Key", &e))?;
            match begun {
                IdemBegin::New => {}
                IdemBegin::InProgress => return Err(Refused::InProgress),
                IdemBegin::Mismatch => return Err(Refused::Mismatch),
                IdemBegin::Replay { status, body } => return Ok(Created::Replay { status, body }),
            }
        }
        let result = self.insert(record).await;
        if let Some(k) = &key {
            let stored = match &result {
                Ok(record) => {
                    let answer = IdemAnswer {
                        request: k.of(principal),
                        status: 201,
                        body: record.to_json(),
                        ttl: self.idempotency_ttl,
                    };
                    self.store.idem_finish(answer, Utc::now()).await
                }
                Err(_) => self.store.idem_abort(k.of(principal)).await,
            };
            if let Err(e) = stored {
                self.failed("saving an Idempotency-Key", &e);
            }
        }
        result.map(|r| Created::New(Box::new(r)))
    }

    async fn insert(&self, record: ScheduleRecord) -> Result<ScheduleRecord, Refused> {
        let created = self
            .store
            .schedule_create(record.clone(), self.max_per_device)
            .await
            .map_err(|e| match e {
                StoreError::Full { .. } => {
                    if let Some(count) = self.full.note() {
                        tracing::warn!(error = %e, count, "state store full: a schedule was refused");
                    }
                    Refused::Full
                }
                e => self.failed("creating a schedule", &e),
            })?;
        match created {
            ScheduleCreated::Created => {
                self.changed.notify_one();
                self.published(&record, false);
                Ok(record)
            }
            ScheduleCreated::TooMany => Err(Refused::TooMany),
            // A fresh UUIDv7 collided: not the caller's fault, and nothing was stored.
            ScheduleCreated::Exists => Err(Refused::Unavailable),
        }
    }

    /// `GET /schedules[?deviceId=]`: the caller's schedules, in the store's order.
    pub async fn list(
        &self,
        caller: &Credential,
        device: Option<&str>,
    ) -> Result<Vec<ScheduleRecord>, Refused> {
        let device = device
            .map(|d| DeviceId::parse(d).map_err(|e| Refused::Parameter(format!("deviceId: {e}"))))
            .transpose()?;
        let all = self
            .store
            .schedule_list(device.as_ref().map(DeviceId::as_str))
            .await
            .map_err(|e| self.failed("listing schedules", &e))?;
        Ok(all.into_iter().filter(|s| covers(caller, s)).collect())
    }

    /// `GET /schedules/{id}`.
    pub async fn get(&self, caller: &Credential, id: &str) -> Result<ScheduleRecord, Refused> {
        if uuid::Uuid::try_parse(id).is_err() {
            return Err(Refused::NotFound);
        }
        let record = self
            .store
            .schedule_get(id)
            .await
            .map_err(|e| self.failed("reading a schedule", &e))?
            .ok_or(Refused::NotFound)?;
        if covers(caller, &record) {
            Ok(record)
        } else {
            Err(Refused::NotFound)
        }
    }

    /// `PATCH /schedules/{id}`: `patch` (a JSON object) merged into the schedule's fields
    /// as RFC 7386 says, then validated as a whole, as a create would be.
    pub async fn patch(
        &self,
        caller: &Credential,
        id: &str,
        patch: serde_json::Value,
        now: DateTime<Utc>,
    ) -> Result<ScheduleRecord, Refused> {
        // A merge patch names only request fields: `{"": null}` or `{"colour": null}`
        // would otherwise vanish in the merge and be accepted as a no-op.
        let serde_json::Value::Object(fields) = &patch else {
            return Err(Refused::Body(
                "a schedule patch must be a JSON object".to_owned(),
            ));
        };
        if let Some(unknown) = fields
            .keys()
            .find(|key| !ScheduleRequest::FIELDS.contains(&key.as_str()))
        {
            return Err(Refused::Body(format!(
                "unknown field `{unknown}`, expected one of {}",
                ScheduleRequest::FIELDS
                    .iter()
                    .map(|field| format!("`{field}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        self.change(caller, id, |current| {
            let mut fields = serde_json::to_value(request_of(current))
                .map_err(|e| Refused::Body(e.to_string()))?;
            merge(&mut fields, &patch);
            let body: ScheduleRequest =
                serde_json::from_value(fields).map_err(|e| Refused::Body(e.to_string()))?;
            if body.device_id.as_deref() != Some(current.device_id.as_str()) {
                return Err(Refused::Invalid("deviceId cannot be changed".to_owned()));
            }
            let mut next = new_record(caller, body, now)?;
            next.schedule_id = current.schedule_id.clone();
            next.principal = current.principal.clone();
            next.created_at = current.created_at;
            next.last_fired_at = current.last_fired_at;
            next.last_command_id = current.last_command_id.clone();
            // `nextFireAt` is computed afresh only when the rule changed or the schedule
            // was enabled; otherwise a skip stays skipped.
            if next.enabled && current.enabled && next.rule == current.rule {
                next.next_fire_at = current.next_fire_at;
            }
            // Nothing changed: the schedule stays as it is (no write, same `updatedAt`).
            let mut same = next.clone();
            same.updated_at = current.updated_at;
            same.version = current.version;
            if same == *current {
                return Ok(current.clone());
            }
            Ok(next)
        })
        .await
    }

    /// `POST /schedules/{id}/skip`: the next occurrence will not fire.
    pub async fn skip(
        &self,
        caller: &Credential,
        id: &str,
        now: DateTime<Utc>,
    ) -> Result<ScheduleRecord, Refused> {
        self.change(caller, id, |current| {
            let skipped = match (current.enabled, current.next_fire_at) {
                (true, Some(at)) => at,
                _ => return Err(Refused::Disabled),
            };
            let mut next = current.clone();
            next.next_fire_at = current.rule.next_after(skipped.max(now));
            next.updated_at = now;
            Ok(next)
        })
        .await
    }

    /// Reads, changes and writes back with a compare-and-set, again while someone else
    /// wrote in between.
    async fn change(
        &self,
        caller: &Credential,
        id: &str,
        apply: impl Fn(&ScheduleRecord) -> Result<ScheduleRecord, Refused>,
    ) -> Result<ScheduleRecord, Refused> {
        for _ in 0..CAS_ATTEMPTS {
            let current = self.get(caller, id).await?;
            let next = apply(&current)?;
            if next == current {
                return Ok(current);
            }
            let written = self
                .store
                .schedule_replace(next, current.version)
                .await
                .map_err(|e| self.failed("changing a schedule", &e))?;
            match written {
                ScheduleWrite::Written(record) => {
                    self.changed.notify_one();
                    self.published(&record, false);
                    return Ok(*record);
                }
                ScheduleWrite::NotFound => return Err(Refused::NotFound),
                ScheduleWrite::Conflict => continue,
            }
        }
        tracing::warn!(
            schedule_id = id,
            "a schedule kept changing under a PATCH; gave up"
        );
        Err(Refused::Unavailable)
    }

    /// `DELETE /schedules/{id}`: the schedule as it was.
    pub async fn delete(&self, caller: &Credential, id: &str) -> Result<ScheduleRecord, Refused> {
        self.get(caller, id).await?;
        let deleted = self
            .store
            .schedule_delete(id)
            .await
            .map_err(|e| self.failed("deleting a schedule", &e))?
            .ok_or(Refused::NotFound)?;
        self.published(&deleted, true);
        Ok(deleted)
    }

    /// `GET /schedules/{id}/occurrences`: the rule's next instants strictly after `from`
    /// (default `now`), `enabled` and skips aside.
    pub async fn occurrences(
        &self,
        caller: &Credential,
        id: &str,
        from: Option<&str>,
        count: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Vec<DateTime<Utc>>, Refused> {
        let from = match from {
            None => now,
            Some(text) => DateTime::parse_from_rfc3339(text)
                .map(|t| t.to_utc())
                .map_err(|_| {
                    Refused::Parameter(format!(
                        "from must be an RFC 3339 date-time such as 2027-03-28T00:00:00Z, not {text:?}"
                    ))
                })?,
        };
        let count = match count {
            None => PREVIEW_DEFAULT,
            Some(text) => Some(text)
                .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|t| t.parse::<usize>().ok())
                .filter(|n| PREVIEW_COUNT.contains(n))
                .ok_or_else(|| {
                    Refused::Parameter(format!(
                        "count must be an integer between {} and {}, not {text:?}",
                        PREVIEW_COUNT.start(),
                        PREVIEW_COUNT.end()
                    ))
                })?,
        };
        let record = self.get(caller, id).await?;
        Ok(record.rule.occurrences(from, count))
    }
}

fn covers(caller: &Credential, record: &ScheduleRecord) -> bool {
    DeviceId::parse(&record.device_id).is_ok_and(|d| caller.covers(&d))
}

/// A new schedule from a body: every field checked, `nextFireAt` from `now`.
fn new_record(
    caller: &Credential,
    body: ScheduleRequest,
    now: DateTime<Utc>,
) -> Result<ScheduleRecord, Refused> {
    let device = DeviceId::parse(body.device_id.as_deref().unwrap_or_default())
        .map_err(|e| Refused::Invalid(e.to_string()))?;
    if !caller.covers(&device) {
        return Err(Refused::Forbidden);
    }
    let rule = body.rule().map_err(|e| Refused::Invalid(e.to_string()))?;
    let invalid = |e: ScheduleError| Refused::Invalid(e.to_string());
    let label = body.label().map_err(invalid)?;
    let ttl_seconds = body.ttl().map_err(invalid)?;
    let enabled = body.enabled.unwrap_or(true);
    let next_fire_at = if enabled { rule.next_after(now) } else { None };
    Ok(ScheduleRecord {
        schedule_id: crate::shared::new_id().to_string(),
        device_id: device.as_str().to_owned(),
        rule,
        label,
        enabled,
        ttl_seconds,
        next_fire_at,
        last_fired_at: None,
        last_command_id: None,
        principal: caller.id.clone(),
        created_at: now,
        updated_at: now,
        version: 0,
    }
    .normalised())
}

/// A schedule's fields as a request body (the form a merge patch applies to).
fn request_of(r: &ScheduleRecord) -> ScheduleRequest {
    ScheduleRequest {
        device_id: Some(r.device_id.clone()),
        time: Some(r.rule.time.to_string()),
        days: Some(r.rule.days.names().into_iter().map(str::to_owned).collect()),
        time_zone: Some(r.rule.zone.name().to_owned()),
        label: Some(r.label.clone()),
        enabled: Some(r.enabled),
        ttl_seconds: r.ttl_seconds.map(i64::from),
    }
}

/// RFC 7386 JSON merge patch: objects merge key by key, `null` removes, anything else
/// replaces.
fn merge(target: &mut serde_json::Value, patch: &serde_json::Value) {
    let serde_json::Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = serde_json::Value::Object(serde_json::Map::new());
    }
    if let serde_json::Value::Object(target) = target {
        for (key, value) in patch {
            if value.is_null() {
                target.remove(key);
            } else {
                merge(
                    target.entry(key.clone()).or_insert(serde_json::Value::Null),
                    value,
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use serde_json::json;

    #[test]
    fn a_merge_patch_merges_replaces_and_removes() {
        let mut target = json!({"a": 1, "b": {"c": 2, "d": 3}, "e": [1]});
        merge(
            &mut target,
            &json!({"a": null, "b": {"c": 9}, "e": [2], "f": "x"}),
        );
        assert_eq!(target, json!({"b": {"c": 9, "d": 3}, "e": [2], "f": "x"}));
    }
}
