//! The schedules of `STATE_STORE=memory` (SPEC 12), under their own mutex (no operation
//! touches commands and schedules together).
//!
//! Held compact, as the command records are (`memory.rs`): the issue asks for 100,000
//! schedules within the default 64 MiB bound. A schedule id in canonical UUID form is
//! kept as its 128 bits; timestamps are milliseconds in an `i64`; device ids and
//! principals are interned (a deployment has few); the zone is `jiff`'s shared handle
//! (8 bytes; its rules are parsed once per zone). An [`Entry`] is 136 bytes, plus its
//! key in the map and, while enabled, one entry in the due set.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::compact_id::CompactId;
use super::schedule::{ScheduleCreated, ScheduleRecord, ScheduleWrite, sort};
use crate::domain::schedule::{Rule, WallTime, Weekdays};

/// At most this many distinct device ids and principals are shared (a flood of distinct
/// names cannot grow the set unbounded; past it each schedule keeps its own copy).
const INTERN_MAX: usize = 16_384;

/// A schedule id, compact ([`CompactId`]).
type Id = CompactId;

const NONE: i64 = i64::MIN;

fn ms(t: Option<DateTime<Utc>>) -> i64 {
    t.map_or(NONE, |t| t.timestamp_millis())
}

fn time(ms: i64) -> Option<DateTime<Utc>> {
    (ms != NONE).then(|| DateTime::from_timestamp_millis(ms).unwrap_or(DateTime::<Utc>::MAX_UTC))
}

struct Entry {
    device: Arc<str>,
    principal: Arc<str>,
    label: Box<str>,
    zone: crate::domain::schedule::Zone,
    last_command: Option<Id>,
    next_fire: i64,
    last_fired: i64,
    created: i64,
    updated: i64,
    version: u64,
    seconds_of_day: u32,
    /// 0 for none (the range starts at 1).
    ttl_seconds: u32,
    days: u8,
    enabled: bool,
}

impl Entry {
    fn record(&self, id: &Id) -> ScheduleRecord {
        ScheduleRecord {
            schedule_id: id.to_id(),
            device_id: self.device.to_string(),
            rule: Rule {
                time: WallTime::from_seconds_of_day(self.seconds_of_day)
                    .unwrap_or(WallTime::MIDNIGHT),
                days: Weekdays::from_bits(self.days).unwrap_or_default(),
                zone: self.zone.clone(),
            },
            label: self.label.to_string(),
            enabled: self.enabled,
            ttl_seconds: (self.ttl_seconds != 0).then_some(self.ttl_seconds),
            next_fire_at: time(self.next_fire),
            last_fired_at: time(self.last_fired),
            last_command_id: self.last_command.as_ref().map(Id::to_id),
            principal: self.principal.to_string(),
            created_at: time(self.created).unwrap_or_default(),
            updated_at: time(self.updated).unwrap_or_default(),
            version: self.version,
        }
    }

    /// The due-set key while enabled with a next occurrence.
    fn due_key(&self, id: &Id) -> Option<(i64, Id)> {
        (self.enabled && self.next_fire != NONE).then(|| (self.next_fire, id.clone()))
    }
}

#[derive(Default)]
pub(super) struct Schedules {
    entries: HashMap<Id, Entry>,
    /// Enabled schedules by next occurrence.
    due: BTreeSet<(i64, Id)>,
    per_device: HashMap<Arc<str>, u32>,
    /// Schedules per credential (the memory store's shares, SPEC 10).
    per_principal: HashMap<Arc<str>, u32>,
    interned: HashSet<Arc<str>>,
}

impl Schedules {
    fn intern(&mut self, s: &str) -> Arc<str> {
        if let Some(shared) = self.interned.get(s) {
            return Arc::clone(shared);
        }
        let shared: Arc<str> = Arc::from(s);
        if self.interned.len() < INTERN_MAX {
            self.interned.insert(Arc::clone(&shared));
        }
        shared
    }

    fn entry(&mut self, r: ScheduleRecord, device: Arc<str>, version: u64) -> Entry {
        let r = r.normalised();
        Entry {
            principal: self.intern(&r.principal),
            device,
            label: r.label.into_boxed_str(),
            zone: r.rule.zone,
            last_command: r.last_command_id.as_deref().map(Id::of),
            next_fire: ms(r.next_fire_at),
            last_fired: ms(r.last_fired_at),
            created: ms(Some(r.created_at)),
            updated: ms(Some(r.updated_at)),
            version,
            seconds_of_day: r.rule.time.seconds_of_day(),
            ttl_seconds: r.ttl_seconds.unwrap_or(0),
            days: r.rule.days.bits(),
            enabled: r.enabled,
        }
    }

    /// Schedules held.
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Schedules `principal` holds.
    pub(super) fn held_by(&self, principal: &str) -> usize {
        self.per_principal
            .get(principal)
            .map_or(0, |n| usize::try_from(*n).unwrap_or(usize::MAX))
    }

    pub(super) fn create(&mut self, r: ScheduleRecord, max_per_device: usize) -> ScheduleCreated {
        let id = Id::of(&r.schedule_id);
        if self.entries.contains_key(&id) {
            return ScheduleCreated::Exists;
        }
        let device = self.intern(&r.device_id);
        let count = self.per_device.get(&device).copied().unwrap_or(0);
        if usize::try_from(count).unwrap_or(usize::MAX) >= max_per_device {
            return ScheduleCreated::TooMany;
        }
        let version = r.version;
        let entry = self.entry(r, Arc::clone(&device), version);
        if let Some(key) = entry.due_key(&id) {
            self.due.insert(key);
        }
        *self
            .per_principal
            .entry(Arc::clone(&entry.principal))
            .or_insert(0) += 1;
        self.entries.insert(id, entry);
        *self.per_device.entry(device).or_insert(0) += 1;
        ScheduleCreated::Created
    }

    pub(super) fn get(&self, id: &str) -> Option<ScheduleRecord> {
        let id = Id::of(id);
        self.entries.get(&id).map(|e| e.record(&id))
    }

    pub(super) fn list(&self, device: Option<&str>) -> Vec<ScheduleRecord> {
        let mut out: Vec<ScheduleRecord> = self
            .entries
            .iter()
            .filter(|(_, e)| device.is_none_or(|d| *e.device == *d))
            .map(|(id, e)| e.record(id))
            .collect();
        sort(&mut out);
        out
    }

    pub(super) fn replace(&mut self, r: ScheduleRecord, expected: u64) -> ScheduleWrite {
        let id = Id::of(&r.schedule_id);
        let Some(old) = self.entries.get(&id) else {
            return ScheduleWrite::NotFound;
        };
        if old.version != expected {
            return ScheduleWrite::Conflict;
        }
        let device = Arc::clone(&old.device);
        if let Some(key) = old.due_key(&id) {
            self.due.remove(&key);
        }
        let entry = self.entry(r, device, expected.saturating_add(1));
        if let Some(key) = entry.due_key(&id) {
            self.due.insert(key);
        }
        let record = entry.record(&id);
        self.entries.insert(id, entry);
        ScheduleWrite::Written(Box::new(record))
    }

    pub(super) fn delete(&mut self, id: &str) -> Option<ScheduleRecord> {
        let id = Id::of(id);
        let entry = self.entries.remove(&id)?;
        if let Some(key) = entry.due_key(&id) {
            self.due.remove(&key);
        }
        if let Some(count) = self.per_device.get_mut(&entry.device) {
            *count -= 1;
            if *count == 0 {
                self.per_device.remove(&entry.device);
            }
        }
        if let Some(count) = self.per_principal.get_mut(&entry.principal) {
            *count -= 1;
            if *count == 0 {
                self.per_principal.remove(&entry.principal);
            }
        }
        Some(entry.record(&id))
    }

    pub(super) fn due(&self, now: DateTime<Utc>, limit: usize) -> Vec<ScheduleRecord> {
        let now = now.timestamp_millis();
        self.due
            .iter()
            .take_while(|(at, _)| *at <= now)
            .take(limit)
            .filter_map(|(_, id)| self.entries.get(id).map(|e| e.record(id)))
            .collect()
    }

    pub(super) fn count_enabled(&self) -> u64 {
        // Every enabled schedule has a next occurrence, so it is in the due set.
        self.due.len() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_stays_compact() {
        // 100,000 schedules within the default 64 MiB bound (see the module doc).
        assert!(
            std::mem::size_of::<Entry>() <= 136,
            "{}",
            std::mem::size_of::<Entry>()
        );
    }
}
