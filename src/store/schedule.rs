//! Schedules in the state store (SPEC 12): the record, the outcomes of its operations, and
//! the claim of due occurrences that every backend shares.
//!
//! A backend stores and returns [`ScheduleRecord`]s and keeps two things atomic: the
//! per-device limit on create, and a compare-and-set on `version` for every change
//! ([`StateStore::schedule_replace`]). Everything that needs the time zone database (the
//! next occurrence) is computed here, outside the backend, so `redis://` needs no rules
//! of its own in Lua: [`claim_due`] reads the due schedules, decides each one's fate with
//! [`Rule`], and writes the advance with a compare-and-set. Of several replicas claiming
//! at once, the one whose write lands first owns the occurrence; the others see a newer
//! `version` and leave it. The advance (`nextFireAt`, `lastFiredAt`, `lastCommandId`) is
//! written before the command exists, so a restart never fires an occurrence twice.

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use serde::{Serialize, Serializer};

use super::{StateStore, StoreError, format_time};
use crate::domain::schedule::{MISSED_AFTER, Occurrence, Rule};

/// `SCHEDULES_MAX_PER_DEVICE` default.
pub const DEFAULT_MAX_PER_DEVICE: usize = 32;

/// Missed occurrences counted one by one before [`claim_due`] jumps to the present (a
/// gateway down for years does not walk every day since).
const MISSED_WALK: u32 = 1000;

/// One schedule. `Serialize` yields the resource of SPEC 12.1; `version` is internal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleRecord {
    pub schedule_id: String,
    pub device_id: String,
    pub rule: Rule,
    pub label: String,
    pub enabled: bool,
    /// The TTL of each occurrence's command; `None` for `COMMAND_TTL_SECS`.
    pub ttl_seconds: Option<u32>,
    /// `None` while disabled.
    pub next_fire_at: Option<DateTime<Utc>>,
    pub last_fired_at: Option<DateTime<Utc>>,
    pub last_command_id: Option<String>,
    /// The credential that created it: each occurrence's command is submitted as it.
    pub principal: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Bumped by every write; [`StateStore::schedule_replace`] compares it.
    pub version: u64,
}

impl ScheduleRecord {
    /// The resource of SPEC 12.1 as JSON bytes.
    pub fn to_json(&self) -> Vec<u8> {
        // Plain strings, numbers and timestamps into a Vec: cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The record as the store keeps it: timestamps to the millisecond.
    pub(crate) fn normalised(mut self) -> Self {
        use super::millis;
        self.next_fire_at = self.next_fire_at.map(millis);
        self.last_fired_at = self.last_fired_at.map(millis);
        self.created_at = millis(self.created_at);
        self.updated_at = millis(self.updated_at);
        self
    }
}

impl Serialize for ScheduleRecord {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct View<'a> {
            schedule_id: &'a str,
            device_id: &'a str,
            time: &'a crate::domain::schedule::WallTime,
            days: &'a crate::domain::schedule::Weekdays,
            time_zone: &'a crate::domain::schedule::Zone,
            label: &'a str,
            enabled: bool,
            ttl_seconds: Option<u32>,
            next_fire_at: Option<String>,
            last_fired_at: Option<String>,
            last_command_id: Option<&'a str>,
            principal: &'a str,
            created_at: String,
            updated_at: String,
        }
        View {
            schedule_id: &self.schedule_id,
            device_id: &self.device_id,
            time: &self.rule.time,
            days: &self.rule.days,
            time_zone: &self.rule.zone,
            label: &self.label,
            enabled: self.enabled,
            ttl_seconds: self.ttl_seconds,
            next_fire_at: self.next_fire_at.map(format_time),
            last_fired_at: self.last_fired_at.map(format_time),
            last_command_id: self.last_command_id.as_deref(),
            principal: &self.principal,
            created_at: format_time(self.created_at),
            updated_at: format_time(self.updated_at),
        }
        .serialize(s)
    }
}

/// What [`StateStore::schedule_create`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScheduleCreated {
    Created,
    /// The device has the most schedules allowed already (409).
    TooMany,
    /// A schedule with this id exists (ids are UUIDv7: a caller bug).
    Exists,
}

/// What [`StateStore::schedule_replace`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScheduleWrite {
    /// Written; the record as stored (its `version` one more than expected).
    Written(Box<ScheduleRecord>),
    /// Someone else wrote first (`version` moved): read again and redo.
    Conflict,
    NotFound,
}

/// The order of `GET /schedules`: by `nextFireAt`, disabled (no `nextFireAt`) last, then
/// by `scheduleId`. Every backend's `schedule_list` returns this order.
pub fn sort(records: &mut [ScheduleRecord]) {
    records.sort_by(|a, b| {
        (a.next_fire_at.is_none(), a.next_fire_at, &a.schedule_id).cmp(&(
            b.next_fire_at.is_none(),
            b.next_fire_at,
            &b.schedule_id,
        ))
    });
}

/// One due schedule as [`claim_due`] left it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The schedule after the advance (`nextFireAt` in the future).
    pub schedule: ScheduleRecord,
    /// The occurrence to fire now, and the id its command must get; `None` when every
    /// occurrence reached was missed.
    pub fire: Option<(DateTime<Utc>, String)>,
    /// Occurrences reached more than a minute late: skipped, to be counted.
    pub missed: u32,
}

/// Claims up to `limit` due schedules at `now`: for each, the occurrences more than a
/// minute late are skipped and counted, the latest one within the minute is to fire
/// (with a command id from `new_id`), and `nextFireAt` moves past both, all in one
/// compare-and-set. Of concurrent claimers (replicas) exactly one gets each occurrence;
/// a schedule changed or deleted meanwhile is left alone. The caller creates and
/// dispatches the commands of the claims it got.
pub async fn claim_due(
    store: &dyn StateStore,
    now: DateTime<Utc>,
    limit: usize,
    mut new_id: impl FnMut() -> String,
) -> Result<Vec<Claim>, StoreError> {
    let attempts: Vec<(Claim, u64)> = store
        .schedule_due(now, limit)
        .await?
        .iter()
        .filter_map(|record| advance(record, now, &mut new_id).map(|a| (a, record.version)))
        .collect();
    // The compare-and-sets run side by side, so a store that commits writes in groups
    // (`file:`) commits them together: 10,000 schedules due in one second were 10,000
    // commits one after another (2.3 s), now a few groups.
    let written: Vec<(Claim, Result<ScheduleWrite, StoreError>)> =
        futures_util::stream::iter(attempts)
            .map(|(advance, expected)| async move {
                let written = store
                    .schedule_replace(advance.schedule.clone(), expected)
                    .await;
                (advance, written)
            })
            .buffer_unordered(CLAIM_CONCURRENCY)
            .collect()
            .await;
    let mut claims = Vec::new();
    let mut failed = None;
    for (advance, written) in written {
        match written {
            Ok(ScheduleWrite::Written(schedule)) => claims.push(Claim {
                schedule: *schedule,
                ..advance
            }),
            Ok(_) => {}
            Err(e) => failed = Some(e),
        }
    }
    // What was claimed is fired even when another write failed (it would be lost
    // otherwise); with nothing claimed the failure is the answer.
    match failed {
        Some(e) if claims.is_empty() => Err(e),
        _ => Ok(claims),
    }
}

/// How many claims (compare-and-sets) are in flight at once.
const CLAIM_CONCURRENCY: usize = 64;

/// The claim [`claim_due`] tries to write for `record` at `now`; `None` if it is not due.
fn advance(
    record: &ScheduleRecord,
    now: DateTime<Utc>,
    new_id: &mut impl FnMut() -> String,
) -> Option<Claim> {
    let mut at = record.next_fire_at.filter(|_| record.enabled)?;
    let mut missed = 0u32;
    let mut fire = None;
    loop {
        match Occurrence::at(at, now) {
            Occurrence::NotDue => break,
            Occurrence::Missed => {
                missed = missed.saturating_add(1);
                at = if missed >= MISSED_WALK {
                    // Jump: the next occurrence from a minute ago on.
                    let from = now - chrono::TimeDelta::from_std(MISSED_AFTER).ok()?;
                    record.rule.next_after(from.max(at))?
                } else {
                    record.rule.next_after(at)?
                };
            }
            Occurrence::Fire => {
                fire = Some(at);
                at = record.rule.next_after(at)?;
            }
        }
    }
    if fire.is_none() && missed == 0 {
        return None;
    }
    let mut schedule = record.clone();
    schedule.next_fire_at = Some(at);
    let fire = fire.map(|t| (t, new_id()));
    if let Some((t, id)) = &fire {
        schedule.last_fired_at = Some(*t);
        schedule.last_command_id = Some(id.clone());
    }
    Some(Claim {
        schedule: schedule.normalised(),
        fire,
        missed,
    })
}
