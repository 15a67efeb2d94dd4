//! `STATE_STORE=memory`: the state store inside the process, bounded, lost on restart.
//!
//! It sits on the path of every command, so each operation is O(1) amortised under one
//! short mutex: no scan per request. Ordering structures are FIFO queues with lazy
//! deletion (an entry whose record is gone or changed is skipped when it reaches the
//! front) and are compacted when stale entries outnumber live ones, which keeps them
//! O(live). Only `claim_due` walks an ordered set, of scheduled alarms alone.
//!
//! Records are held compact, not as [`CommandRecord`]s: with the default bound of
//! 100,000 records the full form (several `String`s, five `DateTime`s, a hash map and
//! queues keyed by `Arc<str>`) made the server's peak RSS 152.5 MiB. So a command id in
//! canonical UUID form (what the server issues) is kept as its 128 bits, any other id as
//! a shared string; timestamps are milliseconds in an `i64` (they are kept to the
//! millisecond anyway); principals are interned (there are few), the command type is its
//! enum; and the
//! rare fields (status reason, scheduled delivery, lease) sit behind one optional box. A
//! `CommandRecord` is rebuilt only when one is returned, which also saves the
//! allocations a full record cost on every create. Device ids are interned too, so a
//! record allocates nothing of its own, and the entries sit in a slab behind a small
//! index ([`Records`]) rather than in one big hash table whose every growth held the old
//! and the new table at once. `tests/store_footprint.rs` measures it: 680 bytes per
//! record at the peak with compact entries in a `HashMap`, 304 with the slab.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::compact_id::CompactId;
use super::memory_schedules::Schedules;
use super::{
    AckOutcome, CancelOutcome, CommandRecord, CommandStatus, Completion, Delivery,
    IDEM_IN_PROGRESS_TIMEOUT, IdemAnswer, IdemBegin, IdemRequest, LeaseBatch, StateStore,
    StatusReason, StoreError, StoreSettings, add, apply_complete, millis, normalise,
};
use super::{ScheduleCreated, ScheduleRecord, ScheduleWrite};
use crate::domain::{CommandType, DeviceId};
use futures_util::future::BoxFuture;

/// How many expired entries one write clears on its way (keeps purging incremental).
const PURGE_STEP: usize = 4;

/// What a record counts against `STATE_MAX_BYTES` besides its variable parts: the
/// entry, its index slot and its queue places, at the peak (`tests/store_footprint.rs`
/// measured 304 bytes, `scripts/bench-alarms.sh` about 420 for a pending alarm whose
/// delivery is counted on top).
const RECORD_BYTES: usize = 320;

/// Likewise for an `Idempotency-Key`: its entry, map slot and two queue places.
const IDEM_BYTES: usize = 160;

/// What a key in progress counts for the answer it will hold (a 202 body is about 200
/// bytes), so that finishing it does not need room that might not be there.
const IDEM_ANSWER_RESERVE: usize = 256;

/// How many of the oldest records one write looks at for an unseen expiry, when the
/// store is full.
const EXPIRE_STEP: usize = 256;

/// At most this many distinct principals are shared; past it each new
/// record gets its own copy, so a flood of distinct names cannot grow the set unbounded.
const INTERN_MAX: usize = 4096;

/// Likewise for device ids, of which a deployment has more.
const DEVICES_INTERN_MAX: usize = 16_384;

/// The in-process store. Cheap to share behind an `Arc`.
pub struct MemoryStore {
    settings: StoreSettings,
    inner: Mutex<Inner>,
    schedules: Mutex<Schedules>,
}

/// One of the two record queues that retention purging walks.
#[derive(Clone, Copy)]
enum Queue {
    /// Records in the order they became final.
    Finished,
    /// Records in the order they were created.
    Created,
}

/// A command id, compact ([`CompactId`]).
type Key = CompactId;

/// A timestamp in milliseconds since the epoch; `NONE` stands for an absent one (no
/// representable `DateTime` is that far back).
type Millis = i64;
const NONE: Millis = Millis::MIN;

fn to_ms(t: DateTime<Utc>) -> Millis {
    t.timestamp_millis()
}

fn to_time(ms: Millis) -> DateTime<Utc> {
    // Every value stored came from `to_ms` of a valid time, so this always succeeds.
    DateTime::from_timestamp_millis(ms).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

fn to_opt_ms(t: Option<DateTime<Utc>>) -> Millis {
    t.map_or(NONE, to_ms)
}

fn to_opt_time(ms: Millis) -> Option<DateTime<Utc>> {
    (ms != NONE).then(|| to_time(ms))
}

/// One record, compact (see the module doc).
struct Entry {
    device_id: DeviceId,
    command_type: CommandType,
    principal: Arc<str>,
    created_at: Millis,
    expires_at: Millis,
    sent_at: Millis,
    completed_at: Millis,
    /// Creation order; the key of this record's place in `Inner::created`.
    seq: u64,
    /// Once the record is final, the key of its place in `Inner::finished`; 0 before
    /// (sequence numbers start at 1).
    finished_seq: u64,
    rare: Option<Box<Rare>>,
    /// What this record counts against `STATE_MAX_BYTES` ([`Entry::footprint`]); kept so
    /// the totals change by exactly what was added when it changes or goes.
    bytes: u32,
    status: CommandStatus,
    device_acks: bool,
    /// Whether the record has a place in its credential's `sent_order` (it joins once,
    /// when it first settles as `sent`).
    sent_listed: bool,
}

/// The fields most records leave empty. Every pending alarm has one, so it is kept small
/// (64 bytes instead of 128 with the fields unboxed and the delivery as two buffers): a
/// store full of 100,000 pending alarms went from 65.9 to 48.5 MiB of RSS
/// (`scripts/bench-alarms.sh`).
/// The two times are [`NONE`] when absent (8 bytes each rather than 16 as options), which
/// leaves room for the schedule id of an occurrence's command (SPEC 12.3) in 64 bytes.
struct Rare {
    status_reason: Option<Box<StatusReason>>,
    fire_at: Millis,
    lease_until: Millis,
    delivery: Option<PackedDelivery>,
    schedule_id: Option<Box<str>>,
}

impl Default for Rare {
    fn default() -> Self {
        Self {
            status_reason: None,
            fire_at: NONE,
            lease_until: NONE,
            delivery: None,
            schedule_id: None,
        }
    }
}

/// A [`Delivery`] in one allocation: the topic's bytes, then the payload's.
struct PackedDelivery {
    bytes: Box<[u8]>,
    topic_len: usize,
}

impl PackedDelivery {
    fn pack(delivery: Delivery) -> Self {
        let mut bytes = delivery.topic.into_bytes();
        let topic_len = bytes.len();
        bytes.extend_from_slice(&delivery.payload);
        Self {
            bytes: bytes.into_boxed_slice(),
            topic_len,
        }
    }

    fn unpack(&self) -> Delivery {
        let (topic, payload) = self.bytes.split_at(self.topic_len.min(self.bytes.len()));
        Delivery {
            // The topic was a `String`, so its bytes are UTF-8.
            topic: String::from_utf8_lossy(topic).into_owned(),
            payload: payload.to_vec(),
        }
    }
}

impl Rare {
    fn is_empty(&self) -> bool {
        self.status_reason.is_none()
            && self.fire_at == NONE
            && self.delivery.is_none()
            && self.lease_until == NONE
            && self.schedule_id.is_none()
    }
}

impl Entry {
    fn fire_at(&self) -> Option<Millis> {
        self.rare
            .as_ref()
            .and_then(|r| (r.fire_at != NONE).then_some(r.fire_at))
    }

    fn lease_until(&self) -> Option<Millis> {
        self.rare
            .as_ref()
            .and_then(|r| (r.lease_until != NONE).then_some(r.lease_until))
    }

    /// Changes the rare fields, dropping the box when nothing is left in it.
    fn rare_mut(&mut self, change: impl FnOnce(&mut Rare)) {
        let mut rare = self.rare.take().unwrap_or_default();
        change(&mut rare);
        if !rare.is_empty() {
            self.rare = Some(rare);
        }
    }

    fn set_lease(&mut self, until: Option<Millis>) {
        if until.is_some() || self.lease_until().is_some() {
            self.rare_mut(|r| r.lease_until = until.unwrap_or(NONE));
        }
    }

    /// The full record, for returning.
    fn record(&self, key: &Key) -> CommandRecord {
        let rare = self.rare.as_deref();
        CommandRecord {
            command_id: key.to_id(),
            device_id: self.device_id.clone(),
            command_type: self.command_type,
            principal: self.principal.to_string(),
            status: self.status,
            created_at: to_time(self.created_at),
            sent_at: to_opt_time(self.sent_at),
            completed_at: to_opt_time(self.completed_at),
            expires_at: to_time(self.expires_at),
            device_acks: self.device_acks,
            status_reason: rare.and_then(|r| r.status_reason.as_deref().cloned()),
            fire_at: rare.and_then(|r| to_opt_time(r.fire_at)),
            delivery: rare.and_then(|r| r.delivery.as_ref().map(PackedDelivery::unpack)),
            schedule_id: rare.and_then(|r| r.schedule_id.as_deref().map(str::to_owned)),
        }
    }

    /// Takes back what the shared rules (`apply_*`) may change on a rebuilt record.
    fn absorb(&mut self, r: &CommandRecord) {
        self.status = r.status;
        self.sent_at = to_opt_ms(r.sent_at);
        self.completed_at = to_opt_ms(r.completed_at);
        let reason = r.status_reason.clone();
        if reason.is_some()
            || self
                .rare
                .as_ref()
                .is_some_and(|r| r.status_reason.is_some())
        {
            self.rare_mut(|rare| rare.status_reason = reason.map(Box::new));
        }
    }

    /// The bytes this record stands for: [`RECORD_BYTES`] plus what varies (an id that is
    /// not a UUID, the held alarm's delivery, a status reason).
    fn footprint(&self, key: &Key) -> u32 {
        let rare = self.rare.as_deref();
        let varying = match key {
            Key::Uuid(..) => 0,
            Key::Other(id) => id.len(),
        } + rare
            .and_then(|r| r.delivery.as_ref())
            .map_or(0, |d| d.bytes.len())
            + rare
                .and_then(|r| r.status_reason.as_deref())
                .map_or(0, |r| 64 + r.code.len() + r.message.len());
        u32::try_from(RECORD_BYTES + varying).unwrap_or(u32::MAX)
    }

    /// Whether the record still holds a place nobody else's traffic may take (SPEC 10):
    /// not final yet, so `pending`, `scheduled` or `sent`.
    fn is_protected(&self) -> bool {
        self.finished_seq == 0
    }

    /// `super::is_dropped` on the compact form.
    fn is_dropped(&self, retention: Duration, now: DateTime<Utc>) -> bool {
        let final_at = match self.completed_at {
            t if t != NONE && self.status.is_final() => t,
            _ => self.expires_at,
        };
        add(to_time(final_at), retention) <= now
    }

    /// `super::apply_expiry` on the compact form; returns whether it changed.
    fn apply_expiry(&mut self, now: DateTime<Utc>) -> bool {
        if self.status.is_final() || to_time(self.expires_at) > now {
            return false;
        }
        self.status = CommandStatus::Expired;
        self.completed_at = self.expires_at;
        true
    }
}

struct IdemEntry {
    fingerprint: [u8; 32],
    /// `None` while in progress.
    answer: Option<(u16, Vec<u8>)>,
    expires_at: DateTime<Utc>,
    /// Which `Inner::idem_order` (and holder's `keys`) entry is current.
    seq: u64,
    /// The credential the key belongs to.
    principal: Arc<str>,
}

impl IdemEntry {
    /// The bytes this key stands for: [`IDEM_BYTES`], the key, and its answer (an answer
    /// not there yet counts as [`IDEM_ANSWER_RESERVE`], so finishing rarely grows it).
    fn footprint(&self, key: &str) -> usize {
        let answer = self.answer.as_ref().map_or(0, |(_, body)| body.len());
        IDEM_BYTES + key.len() + answer.max(IDEM_ANSWER_RESERVE)
    }
}

/// What one credential holds that no other credential's traffic may take away (SPEC 10):
/// its unfinished records and its live `Idempotency-Key`s, within its share of the bounds.
#[derive(Default)]
struct Holding {
    /// Records not final yet.
    unfinished: usize,
    /// Live idempotency keys.
    keys: usize,
    /// Bytes of both.
    bytes: usize,
    /// Its keys in the order they were written (lazy deletion, like `idem_order`): the
    /// oldest answered one goes when the credential needs room in its own share.
    key_order: VecDeque<(u64, Arc<str>)>,
    /// Its records in the order they were sent (lazy deletion: an entry whose record is
    /// gone or no longer `sent` is skipped): when its share is full of them, its own
    /// oldest `sent` record goes, as SPEC 7's `STATE_MAX_COMMANDS` ("then the oldest of all") allows. A record
    /// sent to a clock that never acknowledges stays `sent` until it expires, so without
    /// this a credential's steady traffic to such clocks filled its share with them.
    sent_order: VecDeque<(u64, Key)>,
}

/// The records: entries in a slab (a `Vec` whose freed slots are reused) and an index
/// from id to slot. Against one `HashMap<Key, Entry>` this keeps the big part, the
/// entries, in memory that is touched in order and grows without a copy (a large `Vec`
/// is reallocated by remapping its pages), so RSS follows the records held; only the
/// small index (32 bytes a slot) is rehashed when it grows.
#[derive(Default)]
struct Records {
    index: HashMap<Key, u32>,
    slots: Vec<Option<Entry>>,
    /// Slots freed by `remove_entry`, reused first.
    free: Vec<u32>,
}

impl Records {
    fn len(&self) -> usize {
        self.index.len()
    }

    fn contains_key(&self, key: &Key) -> bool {
        self.index.contains_key(key)
    }

    fn get(&self, key: &Key) -> Option<&Entry> {
        let slot = *self.index.get(key)?;
        self.slots.get(slot as usize)?.as_ref()
    }

    fn get_mut(&mut self, key: &Key) -> Option<&mut Entry> {
        let slot = *self.index.get(key)?;
        self.slots.get_mut(slot as usize)?.as_mut()
    }

    /// Adds a record whose key is not present (the caller checked).
    fn insert(&mut self, key: Key, entry: Entry) {
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slots[slot as usize] = Some(entry);
                slot
            }
            None => {
                // Slots never exceed the records held plus the free list, and the store
                // holds at most `STATE_MAX_COMMANDS` (10,000,000): well within a u32.
                let slot = u32::try_from(self.slots.len()).unwrap_or(u32::MAX);
                self.slots.push(Some(entry));
                slot
            }
        };
        self.index.insert(key, slot);
    }

    fn remove_entry(&mut self, key: &Key) -> Option<(Key, Entry)> {
        let (key, slot) = self.index.remove_entry(key)?;
        let entry = self.slots.get_mut(slot as usize)?.take()?;
        self.free.push(slot);
        Some((key, entry))
    }
}

#[derive(Default)]
struct Inner {
    records: Records,
    /// Every record in creation order: the eviction order once no finished one is left.
    created: VecDeque<(u64, Key)>,
    /// Records in the order they became final: evicted first, purged after retention.
    finished: VecDeque<(u64, Key)>,
    /// `Scheduled` records by fire time, for `claim_due`.
    scheduled: BTreeSet<(Millis, Key)>,
    /// `Queued` records by device, then in the order accepted, for `claim_queued`.
    queued: BTreeSet<(DeviceId, Millis, Key)>,
    /// Records created not final, by the second of their expiry, for `expire_due`: a
    /// bucket is taken whole once its second is over (24 bytes a record, none of the
    /// per-node cost of a set). A record that became final otherwise is skipped then;
    /// `expiring_len` bounds the stale ones (compacted past twice the records held).
    expiring: BTreeMap<i64, Vec<Key>>,
    expiring_len: usize,
    /// Shared principals (at most `INTERN_MAX`).
    interned: HashSet<Arc<str>>,
    /// Shared device ids (at most `DEVICES_INTERN_MAX`): no allocation per record.
    devices: HashSet<DeviceId>,
    idem: HashMap<Arc<str>, IdemEntry>,
    /// Idempotency entries in the order they were written, with their expiry then.
    idem_order: VecDeque<(u64, DateTime<Utc>, Arc<str>)>,
    /// Per credential: what it holds (see [`Holding`]).
    holders: HashMap<Arc<str>, Holding>,
    /// Bytes of every record and key ([`Entry::footprint`], [`IdemEntry::footprint`]).
    bytes: usize,
    next_seq: u64,
}

impl MemoryStore {
    pub fn new(settings: StoreSettings) -> Self {
        Self {
            settings,
            inner: Mutex::new(Inner::default()),
            schedules: Mutex::new(Schedules::default()),
        }
    }

    /// Records held right now (live and not yet purged), for tests and metrics.
    pub fn len(&self) -> usize {
        self.lock().records.len()
    }

    /// Bytes of records and keys as counted against `STATE_MAX_BYTES`, for tests and metrics.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    /// Whether no record is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn schedules(&self) -> std::sync::MutexGuard<'_, Schedules> {
        self.schedules
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind, no broken invariant
        // that matters more than serving: keep going.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Inner {
    fn seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    fn intern(&mut self, s: String) -> Arc<str> {
        intern(&mut self.interned, INTERN_MAX, s)
    }

    fn holding(&mut self, principal: &Arc<str>) -> &mut Holding {
        self.holders.entry(principal.clone()).or_default()
    }

    /// Forgets a credential that holds nothing any more (the map stays O(credentials
    /// with something held)).
    fn release_if_empty(&mut self, principal: &str) {
        if self
            .holders
            .get(principal)
            .is_some_and(|h| h.unfinished == 0 && h.keys == 0)
        {
            self.holders.remove(principal);
        }
    }

    /// The live record `key` with lazy expiry applied, or `None` (dropping it if it is
    /// past retention).
    fn live(&mut self, key: &Key, retention: Duration, now: DateTime<Utc>) -> Option<&mut Entry> {
        if self.records.get(key)?.is_dropped(retention, now) {
            self.remove(key);
            return None;
        }
        let changed = self.records.get_mut(key)?.apply_expiry(now);
        if changed {
            self.settle(key);
        }
        self.records.get_mut(key)
    }

    /// Puts `key` in the bucket of its expiry second; drops stale entries when they
    /// outnumber the records held.
    fn watch_expiry(&mut self, expires_at: Millis, key: Key) {
        self.expiring
            .entry(expires_at.div_euclid(1000))
            .or_default()
            .push(key);
        self.expiring_len += 1;
        if self.expiring_len > 2 * self.records.len() + 1024 {
            let Inner {
                expiring, records, ..
            } = self;
            for bucket in expiring.values_mut() {
                bucket.retain(|k| {
                    records
                        .get(k)
                        .is_some_and(|e| !e.status.is_final() || e.status == CommandStatus::Expired)
                });
            }
            expiring.retain(|_, bucket| !bucket.is_empty());
            self.expiring_len = self.expiring.values().map(Vec::len).sum();
        }
    }

    /// Adds a new record (whose key is not present) and counts its bytes.
    fn insert(&mut self, key: Key, mut entry: Entry) {
        let bytes = entry.footprint(&key);
        entry.bytes = bytes;
        self.bytes += bytes as usize;
        if entry.is_protected() {
            let holding = self.holding(&entry.principal.clone());
            holding.unfinished += 1;
            holding.bytes += bytes as usize;
        }
        self.records.insert(key, entry);
    }

    /// Bookkeeping after a record may have changed: its bytes counted again, leaves the
    /// scheduled set when no longer scheduled, joins the finished queue once final (and
    /// then no longer counts against its credential's share).
    fn settle(&mut self, key: &Key) {
        let Some(entry) = self.records.get_mut(key) else {
            return;
        };
        let (old, new) = (entry.bytes as usize, entry.footprint(key));
        entry.bytes = new;
        let new = new as usize;
        let (status, fire_at, protected) = (entry.status, entry.fire_at(), entry.is_protected());
        let list_sent = status == CommandStatus::Sent && !entry.sent_listed;
        entry.sent_listed |= list_sent;
        let (seq, principal) = (entry.seq, entry.principal.clone());
        self.bytes = (self.bytes + new).saturating_sub(old);
        if protected {
            let holding = self.holding(&principal);
            holding.bytes = (holding.bytes + new).saturating_sub(old);
            if list_sent {
                holding.sent_order.push_back((seq, key.clone()));
                let Inner {
                    holders, records, ..
                } = self;
                if let Some(holding) = holders.get_mut(&*principal) {
                    let live = holding.unfinished;
                    compact(&mut holding.sent_order, live, |(s, k)| {
                        records
                            .get(k)
                            .is_some_and(|e| e.seq == *s && e.status == CommandStatus::Sent)
                    });
                }
            }
        }
        if status != CommandStatus::Scheduled
            && let Some(fire_at) = fire_at
        {
            self.scheduled.remove(&(fire_at, key.clone()));
        }
        if status != CommandStatus::Queued
            && let Some(entry) = self.records.get(key)
        {
            let queued = (entry.device_id.clone(), entry.created_at, key.clone());
            self.queued.remove(&queued);
        }
        if status.is_final() && protected {
            let seq = self.seq();
            if let Some(entry) = self.records.get_mut(key) {
                entry.finished_seq = seq;
                entry.set_lease(None);
            }
            if let Some(holding) = self.holders.get_mut(&*principal) {
                holding.unfinished = holding.unfinished.saturating_sub(1);
                holding.bytes = holding.bytes.saturating_sub(new);
            }
            self.release_if_empty(&principal);
            self.finished.push_back((seq, key.clone()));
            let Inner {
                finished, records, ..
            } = self;
            compact(finished, records.len(), |(s, k)| {
                records.get(k).is_some_and(|e| e.finished_seq == *s)
            });
        }
    }

    fn remove(&mut self, key: &Key) {
        let Some((key, entry)) = self.records.remove_entry(key) else {
            return;
        };
        self.bytes = self.bytes.saturating_sub(entry.bytes as usize);
        if entry.is_protected() {
            if let Some(holding) = self.holders.get_mut(&*entry.principal) {
                holding.unfinished = holding.unfinished.saturating_sub(1);
                holding.bytes = holding.bytes.saturating_sub(entry.bytes as usize);
            }
            self.release_if_empty(&entry.principal);
        }
        if let Some(fire_at) = entry.fire_at() {
            self.scheduled.remove(&(fire_at, key.clone()));
        }
        self.queued
            .remove(&(entry.device_id, entry.created_at, key));
    }

    /// Drops the record that finished first; `false` when no finished record is held.
    fn evict_finished(&mut self) -> bool {
        while let Some((seq, key)) = self.finished.pop_front() {
            if self
                .records
                .get(&key)
                .is_some_and(|e| e.finished_seq == seq)
            {
                self.remove(&key);
                return true;
            }
        }
        false
    }

    /// Looks at the oldest records for ones whose `expiresAt` has passed unseen: they
    /// become `expired` (final), so they no longer hold a place. Bounded by `budget`
    /// records; the oldest records are the likeliest to have expired.
    fn expire_some(&mut self, now: DateTime<Utc>, budget: usize) {
        // Nothing is due before the earliest expiry second (one look at the sorted
        // buckets): a full store of live records then costs no scan per write. Without
        // this check every command into a full store looked at 256 records (make bench:
        // memory at 0.67x of none).
        let second = to_ms(now).div_euclid(1000);
        if self
            .expiring
            .first_key_value()
            .is_none_or(|(earliest, _)| *earliest > second)
        {
            return;
        }
        let due: Vec<Key> = self
            .created
            .iter()
            .take(budget)
            .filter(|(seq, key)| {
                self.records.get(key).is_some_and(|e| {
                    e.seq == *seq && !e.status.is_final() && to_time(e.expires_at) <= now
                })
            })
            .map(|(_, key)| key.clone())
            .collect();
        for key in due {
            if self
                .records
                .get_mut(&key)
                .is_some_and(|e| e.apply_expiry(now))
            {
                self.settle(&key);
            }
        }
    }

    /// Makes room for one more record or key of `principal` taking `bytes` (SPEC 10,
    /// "Bounded records"). Within the credential's share, its own oldest answered key
    /// goes first, then its own oldest `sent` record; within the store's bounds, the
    /// record that finished first (anyone's: a finished record holds nothing a caller
    /// still waits for), then again the credential's own oldest `sent` record. Never
    /// another credential's unfinished record, and nobody's `pending` record, held alarm
    /// (`scheduled`, `queued`) or live key: when only those are left, the answer is
    /// [`StoreError::Full`] and nothing is written.
    fn make_room(
        &mut self,
        settings: &StoreSettings,
        principal: &Arc<str>,
        what: Holds,
        bytes: usize,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let shares = settings.shares.max(1);
        let share_count = (settings.max_commands / shares).max(1);
        let share_bytes = (settings.max_bytes / shares).max(1);
        let over_share = |h: Option<&Holding>| {
            let (records, keys, held) = h.map_or((0, 0, 0), |h| (h.unfinished, h.keys, h.bytes));
            held + bytes > share_bytes
                || match what {
                    Holds::Record => records >= share_count,
                    Holds::Key => keys >= share_count,
                }
        };
        let mut expired_looked_at = false;
        while over_share(self.holders.get(&**principal)) {
            if self.evict_own_key(principal) {
                continue;
            }
            if !expired_looked_at {
                // Its own records that expired unseen free its share too.
                expired_looked_at = true;
                self.expire_some(now, EXPIRE_STEP);
                continue;
            }
            if self.evict_own_sent(principal) {
                continue;
            }
            return Err(StoreError::Full {
                message: format!(
                    "credential {principal:?} fills its share of the memory store with commands in progress, held alarms and live Idempotency-Keys ({share_count} records, {share_count} keys, {share_bytes} bytes: STATE_MAX_COMMANDS and STATE_MAX_BYTES shared by {shares} credentials)"
                ),
            });
        }
        loop {
            let full = match what {
                Holds::Record => self.records.len() >= settings.max_commands.max(1),
                Holds::Key => false,
            } || self.bytes + bytes > settings.max_bytes;
            if !full {
                return Ok(());
            }
            if self.evict_finished() {
                continue;
            }
            if !expired_looked_at {
                expired_looked_at = true;
                self.expire_some(now, EXPIRE_STEP);
                continue;
            }
            if self.evict_own_sent(principal) {
                continue;
            }
            return Err(StoreError::Full {
                message: format!(
                    "only commands in progress, held alarms and live Idempotency-Keys are left ({} records, {} bytes; STATE_MAX_COMMANDS={}, STATE_MAX_BYTES={})",
                    self.records.len(),
                    self.bytes,
                    settings.max_commands,
                    settings.max_bytes
                ),
            });
        }
    }

    /// Drops `principal`'s oldest `sent` record; `false` when it has none (only commands
    /// on their way, `pending`, or held, `scheduled` and `queued`, which never go).
    fn evict_own_sent(&mut self, principal: &str) -> bool {
        let Inner {
            holders, records, ..
        } = self;
        let Some(holding) = holders.get_mut(principal) else {
            return false;
        };
        while let Some((seq, key)) = holding.sent_order.pop_front() {
            if records
                .get(&key)
                .is_some_and(|e| e.seq == seq && e.status == CommandStatus::Sent)
            {
                self.remove(&key);
                return true;
            }
        }
        false
    }

    /// Drops `principal`'s oldest answered key; `false` when it has none (only keys in
    /// progress, whose request is still being answered).
    fn evict_own_key(&mut self, principal: &str) -> bool {
        let Inner { holders, idem, .. } = self;
        let Some(holding) = holders.get_mut(principal) else {
            return false;
        };
        let current = |seq: u64, key: &Arc<str>| idem.get(&**key).is_some_and(|e| e.seq == seq);
        while let Some((seq, key)) = holding.key_order.front() {
            if current(*seq, key) {
                break;
            }
            holding.key_order.pop_front();
        }
        let victim = holding.key_order.iter().position(|(seq, key)| {
            idem.get(&**key)
                .is_some_and(|e| e.seq == *seq && e.answer.is_some())
        });
        let Some(victim) = victim.and_then(|i| holding.key_order.remove(i)) else {
            return false;
        };
        self.idem_remove(&victim.1);
        true
    }

    /// A few steps of retention purging from the fronts of the queues.
    fn purge_some(&mut self, retention: Duration, now: DateTime<Utc>, mut budget: usize) -> u64 {
        let mut dropped = self.purge_records(Queue::Finished, retention, now, &mut budget);
        // Records that expired unseen never joined `finished`: take them from `created`.
        dropped += self.purge_records(Queue::Created, retention, now, &mut budget);
        while budget > 0 {
            budget -= 1;
            let Some((seq, expires_at, key)) = self.idem_order.front() else {
                break;
            };
            if *expires_at > now {
                break;
            }
            if self
                .idem
                .get(key)
                .is_some_and(|e| e.seq == *seq && e.expires_at <= now)
            {
                let key = key.clone();
                self.idem_remove(&key);
                dropped += 1;
            }
            self.idem_order.pop_front();
        }
        dropped
    }

    /// Drops records past retention from the front of one record queue, within `budget`
    /// steps; entries that no longer match their record (stale) are skipped.
    fn purge_records(
        &mut self,
        which: Queue,
        retention: Duration,
        now: DateTime<Utc>,
        budget: &mut usize,
    ) -> u64 {
        let mut dropped = 0;
        while *budget > 0 {
            *budget -= 1;
            let queue = match which {
                Queue::Finished => &self.finished,
                Queue::Created => &self.created,
            };
            let Some((seq, key)) = queue.front() else {
                break;
            };
            let current = |e: &Entry| match which {
                Queue::Finished => e.finished_seq,
                Queue::Created => e.seq,
            };
            match self.records.get(key) {
                Some(e) if current(e) == *seq => {
                    if !e.is_dropped(retention, now) {
                        break;
                    }
                    let key = key.clone();
                    self.remove(&key);
                    dropped += 1;
                }
                _ => {}
            }
            match which {
                Queue::Finished => self.finished.pop_front(),
                Queue::Created => self.created.pop_front(),
            };
        }
        dropped
    }

    /// Writes (or replaces) a key's entry and counts it.
    fn idem_put(&mut self, key: &str, mut entry: IdemEntry) {
        let key: Arc<str> = match self.idem.get_key_value(key) {
            Some((shared, _)) => shared.clone(),
            None => Arc::from(key),
        };
        self.idem_remove(&key);
        let seq = self.seq();
        entry.seq = seq;
        let bytes = entry.footprint(&key);
        self.bytes += bytes;
        let holding = self.holding(&entry.principal.clone());
        holding.keys += 1;
        holding.bytes += bytes;
        holding.key_order.push_back((seq, key.clone()));
        self.idem_order
            .push_back((seq, entry.expires_at, key.clone()));
        let principal = entry.principal.clone();
        self.idem.insert(key, entry);
        let Inner {
            idem_order,
            idem,
            holders,
            ..
        } = self;
        compact(idem_order, idem.len(), |(s, _, k)| {
            idem.get(k).is_some_and(|e| e.seq == *s)
        });
        if let Some(holding) = holders.get_mut(&*principal) {
            let live = holding.keys;
            compact(&mut holding.key_order, live, |(s, k)| {
                idem.get(k).is_some_and(|e| e.seq == *s)
            });
        }
    }

    /// `complete` under the lock.
    fn complete(&mut self, c: &Completion, retention: Duration, now: DateTime<Utc>) -> AckOutcome {
        let key = Key::of(&c.command_id);
        match self.live(&key, retention, now) {
            Some(entry) if entry.device_id.as_str() != c.device_id => AckOutcome::WrongDevice,
            Some(entry) => {
                let mut record = entry.record(&key);
                let result = apply_complete(&mut record, c, now);
                entry.absorb(&record);
                self.settle(&key);
                result
            }
            None => AckOutcome::Unknown,
        }
    }

    /// Forgets a key and what it counted.
    fn idem_remove(&mut self, key: &str) {
        let Some(entry) = self.idem.remove(key) else {
            return;
        };
        let bytes = entry.footprint(key);
        self.bytes = self.bytes.saturating_sub(bytes);
        if let Some(holding) = self.holders.get_mut(&*entry.principal) {
            holding.keys = holding.keys.saturating_sub(1);
            holding.bytes = holding.bytes.saturating_sub(bytes);
        }
        self.release_if_empty(&entry.principal);
    }
}

/// What [`Inner::make_room`] makes room for.
#[derive(Clone, Copy)]
enum Holds {
    Record,
    Key,
}

/// The shared copy of `s` in `set`, added while the set holds fewer than `max`.
/// A device id shared with the records that have it already (at most
/// `DEVICES_INTERN_MAX` ids are kept for sharing).
fn intern_device(set: &mut HashSet<DeviceId>, id: DeviceId) -> DeviceId {
    if let Some(shared) = set.get(&id) {
        return shared.clone();
    }
    if set.len() < DEVICES_INTERN_MAX {
        set.insert(id.clone());
    }
    id
}

fn intern(set: &mut HashSet<Arc<str>>, max: usize, s: String) -> Arc<str> {
    if let Some(shared) = set.get(s.as_str()) {
        return Arc::clone(shared);
    }
    let shared: Arc<str> = Arc::from(s);
    if set.len() < max {
        set.insert(Arc::clone(&shared));
    }
    shared
}

/// Drops stale queue entries once they are a fifth of the queue: O(n) after at least
/// n/5 pushes, so O(1) amortised per push, and the queue's capacity stays near the
/// records held (with a bound of 100,000 records: 131,072 entries, not 262,144).
fn compact<Q>(queue: &mut VecDeque<Q>, live: usize, current: impl FnMut(&Q) -> bool) {
    if queue.len() > live + live / 4 + 64 {
        queue.retain(current);
    }
}

impl StateStore for MemoryStore {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn create(&self, record: CommandRecord) -> BoxFuture<'_, Result<(), StoreError>> {
        let result = (|| {
            let record = normalise(record);
            let key = Key::of(&record.command_id);
            let mut inner = self.lock();
            let now = record.created_at;
            inner.purge_some(self.settings.retention, now, PURGE_STEP);
            if inner.records.contains_key(&key) {
                return Err(StoreError::Duplicate {
                    command_id: record.command_id,
                });
            }
            let principal = inner.intern(record.principal);
            let rare = Rare {
                status_reason: record.status_reason.map(Box::new),
                fire_at: to_opt_ms(record.fire_at),
                lease_until: NONE,
                delivery: record.delivery.map(PackedDelivery::pack),
                schedule_id: record.schedule_id.map(String::into_boxed_str),
            };
            let entry = Entry {
                device_id: intern_device(&mut inner.devices, record.device_id),
                command_type: record.command_type,
                principal: principal.clone(),
                created_at: to_ms(record.created_at),
                expires_at: to_ms(record.expires_at),
                sent_at: to_opt_ms(record.sent_at),
                completed_at: to_opt_ms(record.completed_at),
                seq: 0,
                finished_seq: 0,
                rare: (!rare.is_empty()).then(|| Box::new(rare)),
                bytes: 0,
                status: record.status,
                device_acks: record.device_acks,
                sent_listed: false,
            };
            let bytes = entry.footprint(&key) as usize;
            inner.make_room(&self.settings, &principal, Holds::Record, bytes, now)?;
            let seq = inner.seq();
            let entry = Entry { seq, ..entry };
            if entry.status == CommandStatus::Scheduled
                && let Some(fire_at) = entry.fire_at()
            {
                inner.scheduled.insert((fire_at, key.clone()));
            }
            if entry.status == CommandStatus::Queued {
                let queued = (entry.device_id.clone(), entry.created_at, key.clone());
                inner.queued.insert(queued);
            }
            if !entry.status.is_final() {
                inner.watch_expiry(entry.expires_at, key.clone());
            }
            inner.created.push_back((seq, key.clone()));
            inner.insert(key.clone(), entry);
            inner.settle(&key);
            let Inner {
                created, records, ..
            } = &mut *inner;
            compact(created, records.len(), |(s, k)| {
                records.get(k).is_some_and(|e| e.seq == *s)
            });
            Ok(())
        })();
        Box::pin(std::future::ready(result))
    }

    fn get<'a>(
        &'a self,
        command_id: &'a str,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Option<CommandRecord>, StoreError>> {
        let key = Key::of(command_id);
        let mut inner = self.lock();
        let record = inner
            .live(&key, self.settings.retention, now)
            .map(|e| e.record(&key));
        drop(inner);
        Box::pin(std::future::ready(Ok(record)))
    }

    fn mark_sent<'a>(
        &'a self,
        command_id: &'a str,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Option<CommandStatus>, StoreError>> {
        let key = Key::of(command_id);
        let mut inner = self.lock();
        let status = match inner.live(&key, self.settings.retention, now) {
            Some(entry) => {
                // `apply_mark_sent`'s rule, on the compact entry (no record is built).
                let now = to_ms(millis(now));
                match entry.status {
                    CommandStatus::Pending | CommandStatus::Scheduled | CommandStatus::Queued => {
                        entry.status = CommandStatus::Sent;
                        entry.sent_at = now;
                    }
                    _ if entry.sent_at == NONE => entry.sent_at = now,
                    _ => {}
                }
                let status = entry.status;
                entry.set_lease(None);
                inner.settle(&key);
                Some(status)
            }
            None => None,
        };
        drop(inner);
        Box::pin(std::future::ready(Ok(status)))
    }

    fn complete(
        &self,
        completion: Completion,
        now: DateTime<Utc>,
    ) -> BoxFuture<'_, Result<AckOutcome, StoreError>> {
        let result = self
            .lock()
            .complete(&completion, self.settings.retention, now);
        Box::pin(std::future::ready(Ok(result)))
    }

    fn complete_many(
        &self,
        batch: Vec<Completion>,
        now: DateTime<Utc>,
    ) -> BoxFuture<'_, Vec<Result<AckOutcome, StoreError>>> {
        let mut inner = self.lock();
        let results = batch
            .into_iter()
            .map(|c| Ok(inner.complete(&c, self.settings.retention, now)))
            .collect();
        drop(inner);
        Box::pin(std::future::ready(results))
    }

    fn cancel<'a>(
        &'a self,
        command_id: &'a str,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<CancelOutcome, StoreError>> {
        let key = Key::of(command_id);
        let mut inner = self.lock();
        let result = match inner.live(&key, self.settings.retention, now) {
            None => CancelOutcome::NotFound,
            Some(entry) => {
                let leased = entry
                    .lease_until()
                    .is_some_and(|until| to_time(until) > now);
                let holdable = matches!(
                    entry.status,
                    CommandStatus::Scheduled | CommandStatus::Queued
                );
                if !holdable || leased {
                    CancelOutcome::NotCancellable(entry.status)
                } else {
                    entry.status = CommandStatus::Cancelled;
                    entry.completed_at = to_ms(millis(now));
                    let record = entry.record(&key);
                    inner.settle(&key);
                    CancelOutcome::Cancelled(Box::new(record))
                }
            }
        };
        drop(inner);
        Box::pin(std::future::ready(Ok(result)))
    }

    fn expire_due(
        &self,
        now: DateTime<Utc>,
        _limit: usize,
    ) -> BoxFuture<'_, Result<Vec<CommandRecord>, StoreError>> {
        let mut inner = self.lock();
        // The buckets whose whole second is over: every record in them has expired
        // unless it became final otherwise.
        let last = (to_ms(now) - 999).div_euclid(1000);
        let mut expired = Vec::new();
        while let Some(entry) = inner.expiring.first_entry() {
            if *entry.key() > last {
                break;
            }
            let keys = entry.remove();
            inner.expiring_len = inner.expiring_len.saturating_sub(keys.len());
            for key in keys {
                if let Some(e) = inner.live(&key, self.settings.retention, now)
                    && e.status == CommandStatus::Expired
                {
                    expired.push(e.record(&key));
                }
            }
        }
        Box::pin(std::future::ready(Ok(expired)))
    }

    fn claim_due(
        &self,
        batch: LeaseBatch,
    ) -> BoxFuture<'_, Result<Vec<CommandRecord>, StoreError>> {
        let mut inner = self.lock();
        let Inner {
            records, scheduled, ..
        } = &mut *inner;
        let (now, until) = (batch.now, to_ms(batch.until()));
        let mut claimed = Vec::new();
        for (fire_at, key) in scheduled.iter() {
            if to_time(*fire_at) > now || claimed.len() >= batch.limit {
                break;
            }
            let Some(entry) = records.get_mut(key) else {
                continue;
            };
            if entry.lease_until().is_some_and(|t| to_time(t) > now) {
                continue;
            }
            entry.set_lease(Some(until));
            claimed.push(entry.record(key));
        }
        drop(inner);
        Box::pin(std::future::ready(Ok(claimed)))
    }

    fn claim_queued<'a>(
        &'a self,
        device_id: &'a str,
        batch: LeaseBatch,
    ) -> BoxFuture<'a, Result<Vec<CommandRecord>, StoreError>> {
        let mut inner = self.lock();
        let retention = self.settings.retention;
        let (now, until) = (batch.now, to_ms(batch.until()));
        let keys: Vec<Key> = match DeviceId::parse(device_id) {
            Ok(device) => inner
                .queued
                .range((device, Millis::MIN, Key::Uuid(0, 0))..)
                .take_while(|(d, _, _)| d.as_str() == device_id)
                .map(|(_, _, k)| k.clone())
                .collect(),
            // Not a device id: nothing can be queued for it.
            Err(_) => Vec::new(),
        };
        let mut claimed: Vec<CommandRecord> = Vec::new();
        for key in keys {
            if claimed.len() >= batch.limit {
                break;
            }
            // Lazy expiry: an expired one leaves the queue here.
            let Some(entry) = inner.live(&key, retention, now) else {
                continue;
            };
            if entry.status != CommandStatus::Queued {
                continue;
            }
            if entry.lease_until().is_some_and(|t| to_time(t) > now) {
                // Another claimer is delivering this device's queue: leave it all to it.
                for record in &claimed {
                    let key = Key::of(&record.command_id);
                    if let Some(e) = inner.records.get_mut(&key) {
                        e.set_lease(None);
                    }
                }
                claimed.clear();
                break;
            }
            entry.set_lease(Some(until));
            claimed.push(entry.record(&key));
        }
        drop(inner);
        Box::pin(std::future::ready(Ok(claimed)))
    }

    fn queued_devices(&self, now: DateTime<Utc>) -> BoxFuture<'_, Result<Vec<String>, StoreError>> {
        let inner = self.lock();
        let mut devices: Vec<String> = Vec::new();
        for (device, _, key) in &inner.queued {
            if devices.last().is_some_and(|d| d == device.as_str()) {
                continue;
            }
            let live = inner
                .records
                .get(key)
                .is_some_and(|e| to_time(e.expires_at) > now);
            if live {
                devices.push(device.to_string());
            }
        }
        drop(inner);
        Box::pin(std::future::ready(Ok(devices)))
    }

    fn count_queued(&self, now: DateTime<Utc>) -> BoxFuture<'_, Result<u64, StoreError>> {
        let inner = self.lock();
        let count = inner
            .queued
            .iter()
            .filter(|(_, _, key)| {
                inner
                    .records
                    .get(key)
                    .is_some_and(|e| to_time(e.expires_at) > now)
            })
            .count();
        drop(inner);
        Box::pin(std::future::ready(Ok(count as u64)))
    }

    fn idem_begin<'a>(
        &'a self,
        request: IdemRequest<'a>,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<IdemBegin, StoreError>> {
        let key = request.store_key();
        let mut inner = self.lock();
        inner.purge_some(self.settings.retention, now, PURGE_STEP);
        let result = match inner.idem.get(&*key) {
            Some(e) if e.expires_at > now => Ok(match &e.answer {
                _ if e.fingerprint != request.fingerprint => IdemBegin::Mismatch,
                None => IdemBegin::InProgress,
                Some((status, body)) => IdemBegin::Replay {
                    status: *status,
                    body: body.clone(),
                },
            }),
            stale => {
                if stale.is_some() {
                    inner.idem_remove(&key);
                }
                let entry = IdemEntry {
                    fingerprint: request.fingerprint,
                    answer: None,
                    expires_at: millis(add(now, IDEM_IN_PROGRESS_TIMEOUT)),
                    seq: 0,
                    principal: inner.intern(request.principal.to_owned()),
                };
                let bytes = entry.footprint(&key);
                let principal = entry.principal.clone();
                match inner.make_room(&self.settings, &principal, Holds::Key, bytes, now) {
                    Ok(()) => {
                        inner.idem_put(&key, entry);
                        Ok(IdemBegin::New)
                    }
                    Err(e) => Err(e),
                }
            }
        };
        drop(inner);
        Box::pin(std::future::ready(result))
    }

    fn idem_finish<'a>(
        &'a self,
        answer: IdemAnswer<'a>,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let request = answer.request;
        let mut inner = self.lock();
        let entry = IdemEntry {
            fingerprint: request.fingerprint,
            answer: Some((answer.status, answer.body)),
            expires_at: millis(add(now, answer.ttl)),
            seq: 0,
            principal: inner.intern(request.principal.to_owned()),
        };
        // No room is made here: the command is out, its answer must be kept. Its room was
        // made by `idem_begin` (with `IDEM_ANSWER_RESERVE` for the answer).
        inner.idem_put(&request.store_key(), entry);
        drop(inner);
        Box::pin(std::future::ready(Ok(())))
    }

    fn idem_abort<'a>(&'a self, request: IdemRequest<'a>) -> BoxFuture<'a, Result<(), StoreError>> {
        let key = request.store_key();
        let mut inner = self.lock();
        if inner.idem.get(&*key).is_some_and(|e| e.answer.is_none()) {
            inner.idem_remove(&key);
        }
        drop(inner);
        Box::pin(std::future::ready(Ok(())))
    }

    fn purge(&self, now: DateTime<Utc>) -> BoxFuture<'_, Result<u64, StoreError>> {
        let dropped = self
            .lock()
            .purge_some(self.settings.retention, now, usize::MAX);
        Box::pin(std::future::ready(Ok(dropped)))
    }

    fn schedule_create(
        &self,
        record: ScheduleRecord,
        max_per_device: usize,
    ) -> BoxFuture<'_, Result<ScheduleCreated, StoreError>> {
        // Bounded like the records (SPEC 10): at most `STATE_MAX_COMMANDS` schedules, and
        // a credential at most its share of them, so no caller grows memory without end
        // (a scope of `*` has no end of device ids to put 32 schedules on).
        let max = self.settings.max_commands.max(1);
        let shares = self.settings.shares.max(1);
        let share = (max / shares).max(1);
        let mut schedules = self.schedules();
        let outcome = if schedules.held_by(&record.principal) >= share {
            Err(StoreError::Full {
                message: format!(
                    "credential {:?} holds its share of schedules ({share}: STATE_MAX_COMMANDS={max} shared by {shares} credentials)",
                    record.principal
                ),
            })
        } else if schedules.len() >= max {
            Err(StoreError::Full {
                message: format!("{max} schedules held (STATE_MAX_COMMANDS)"),
            })
        } else {
            Ok(schedules.create(record, max_per_device))
        };
        drop(schedules);
        Box::pin(std::future::ready(outcome))
    }

    fn schedule_get<'a>(
        &'a self,
        schedule_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<ScheduleRecord>, StoreError>> {
        Box::pin(std::future::ready(Ok(self.schedules().get(schedule_id))))
    }

    fn schedule_list<'a>(
        &'a self,
        device_id: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<ScheduleRecord>, StoreError>> {
        Box::pin(std::future::ready(Ok(self.schedules().list(device_id))))
    }

    fn schedule_replace(
        &self,
        record: ScheduleRecord,
        expected_version: u64,
    ) -> BoxFuture<'_, Result<ScheduleWrite, StoreError>> {
        let outcome = self.schedules().replace(record, expected_version);
        Box::pin(std::future::ready(Ok(outcome)))
    }

    fn schedule_delete<'a>(
        &'a self,
        schedule_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<ScheduleRecord>, StoreError>> {
        Box::pin(std::future::ready(Ok(self.schedules().delete(schedule_id))))
    }

    fn schedule_due(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<ScheduleRecord>, StoreError>> {
        Box::pin(std::future::ready(Ok(self.schedules().due(now, limit))))
    }

    fn schedule_count_enabled(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(std::future::ready(Ok(self.schedules().count_enabled())))
    }

    fn is_ready(&self) -> bool {
        true
    }

    fn durable(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::store::{CommandStatus, FinalOutcome};

    #[test]
    fn the_rare_fields_of_a_pending_alarm_stay_small_and_its_delivery_round_trips() {
        assert!(
            std::mem::size_of::<Rare>() <= 64,
            "{}",
            std::mem::size_of::<Rare>()
        );
        let delivery = Delivery {
            topic: "awtrix_ü/notify".into(),
            payload: br#"{"text":"Alarm"}"#.to_vec(),
        };
        assert_eq!(PackedDelivery::pack(delivery.clone()).unpack(), delivery);
    }

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_795_939_200 + secs, 0).unwrap()
    }

    fn record(id: &str, created: i64) -> CommandRecord {
        CommandRecord {
            command_id: id.to_owned(),
            device_id: DeviceId::parse("d").unwrap(),
            command_type: CommandType::SetBrightness,
            principal: "ops".to_owned(),
            status: CommandStatus::Pending,
            created_at: at(created),
            sent_at: None,
            completed_at: None,
            expires_at: at(created + 600),
            device_acks: true,
            status_reason: None,
            fire_at: None,
            delivery: None,
            schedule_id: None,
        }
    }

    #[tokio::test]
    async fn the_queues_stay_proportional_to_what_is_live() {
        let settings = StoreSettings {
            max_commands: 100,
            retention: Duration::from_secs(60),
            ..StoreSettings::default()
        };
        let store = MemoryStore::new(settings);
        // Long-lived entries at the front of the queues: stale entries pile up behind
        // them, so only compaction keeps the queues short.
        let mut blocker = record("blocker", 0);
        blocker.expires_at = at(1_000_000);
        store.create(blocker).await.unwrap();
        fn idem(key: &str) -> IdemRequest<'_> {
            IdemRequest {
                principal: "ops",
                key,
                fingerprint: [0; 32],
            }
        }
        let answer = IdemAnswer {
            request: idem("blocker"),
            status: 202,
            body: Vec::new(),
            ttl: Duration::from_secs(1_000_000),
        };
        store.idem_finish(answer, at(0)).await.unwrap();
        for i in 0..10_000_i64 {
            let id = format!("c-{i}");
            let record = record(&id, i);
            store.create(record).await.unwrap();
            let completion = Completion {
                command_id: id,
                device_id: "d".to_owned(),
                outcome: FinalOutcome::Succeeded,
                reason: None,
            };
            store.complete(completion, at(i)).await.unwrap();
            let key = format!("k-{i}");
            store.idem_begin(idem(&key), at(i)).await.unwrap();
            store.idem_abort(idem(&key)).await.unwrap();
        }
        let inner = store.lock();
        // Retention (60 s at one command a second) keeps about 60 records.
        assert!(inner.records.len() <= 63, "{}", inner.records.len());
        for (name, len) in [
            ("created", inner.created.len()),
            ("finished", inner.finished.len()),
            ("idem_order", inner.idem_order.len()),
        ] {
            assert!(len <= 2 * 100 + 64, "{name}: {len} entries");
        }
        assert_eq!(inner.idem.len(), 1);
        // Freed slots are reused: the slab stays at the bound, not at every record ever.
        assert!(
            inner.records.slots.len() <= 101,
            "{} slots",
            inner.records.slots.len()
        );
    }
}
