//! `STATE_STORE=memory`: the state store inside the process, bounded, lost on restart.
//!
//! It sits on the path of every command, so each operation is O(1) amortised under one
//! short mutex: no scan per request. Ordering structures are FIFO queues with lazy
//! deletion (an entry whose record is gone or changed is skipped when it reaches the
//! front) and are compacted when stale entries outnumber live ones, which keeps them
//! O(live). Only `claim_due` walks an ordered set, of scheduled alarms alone.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{
    AckOutcome, CancelOutcome, CommandRecord, CommandStatus, FinalOutcome,
    IDEM_IN_PROGRESS_TIMEOUT, IdemBegin, StateStore, StatusReason, StoreError, StoreSettings, add,
    apply_complete, apply_expiry, apply_mark_sent, idem_key, is_dropped, millis, normalise,
};
use crate::transport::BoxFuture;

/// How many expired entries one write clears on its way (keeps purging incremental).
const PURGE_STEP: usize = 4;

/// The in-process store. Cheap to share behind an `Arc`.
pub struct MemoryStore {
    settings: StoreSettings,
    inner: Mutex<Inner>,
}

struct Entry {
    record: CommandRecord,
    /// Creation order; the key of this record's place in `Inner::created`.
    seq: u64,
    /// Set when the record became final; the key of its place in `Inner::finished`.
    finished_seq: Option<u64>,
    lease_until: Option<DateTime<Utc>>,
}

struct IdemEntry {
    fingerprint: [u8; 32],
    /// `None` while in progress.
    answer: Option<(u16, Vec<u8>)>,
    expires_at: DateTime<Utc>,
    /// Which `Inner::idem_order` entry is current.
    seq: u64,
}

#[derive(Default)]
struct Inner {
    records: HashMap<Arc<str>, Entry>,
    /// Every record in creation order: the eviction order once no finished one is left.
    created: VecDeque<(u64, Arc<str>)>,
    /// Records in the order they became final: evicted first, purged after retention.
    finished: VecDeque<(u64, Arc<str>)>,
    /// `Scheduled` records by fire time, for `claim_due`.
    scheduled: BTreeSet<(DateTime<Utc>, Arc<str>)>,
    idem: HashMap<String, IdemEntry>,
    /// Idempotency entries in the order they were written, with their expiry then.
    idem_order: VecDeque<(u64, DateTime<Utc>, String)>,
    next_seq: u64,
}

impl MemoryStore {
    pub fn new(settings: StoreSettings) -> Self {
        Self {
            settings,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Records held right now (live and not yet purged), for tests and metrics.
    pub fn len(&self) -> usize {
        self.lock().records.len()
    }

    /// Whether no record is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
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

    /// The live record `id` with lazy expiry applied, or `None` (dropping it if it is
    /// past retention).
    fn live(&mut self, id: &str, retention: Duration, now: DateTime<Utc>) -> Option<&mut Entry> {
        let dropped = is_dropped(&self.records.get(id)?.record, retention, now);
        if dropped {
            self.remove(id);
            return None;
        }
        let changed = {
            let entry = self.records.get_mut(id)?;
            apply_expiry(&mut entry.record, now)
        };
        if changed {
            self.settle(id);
        }
        self.records.get_mut(id)
    }

    /// Bookkeeping after a record's status may have changed: leaves the scheduled set
    /// when no longer scheduled, joins the finished queue once final.
    fn settle(&mut self, id: &str) {
        let Some(entry) = self.records.get(id) else {
            return;
        };
        let (status, fire_at, finished) = (
            entry.record.status,
            entry.record.fire_at,
            entry.finished_seq.is_some(),
        );
        let key = self.records.get_key_value(id).map(|(k, _)| Arc::clone(k));
        let Some(key) = key else { return };
        if status != CommandStatus::Scheduled
            && let Some(fire_at) = fire_at
        {
            self.scheduled.remove(&(fire_at, Arc::clone(&key)));
        }
        if status.is_final() && !finished {
            let seq = self.seq();
            if let Some(entry) = self.records.get_mut(id) {
                entry.finished_seq = Some(seq);
                entry.lease_until = None;
            }
            self.finished.push_back((seq, key));
            compact(&mut self.finished, &self.records, |e, s| {
                e.finished_seq == Some(s)
            });
        }
    }

    fn remove(&mut self, id: &str) {
        if let Some((key, entry)) = self.records.remove_entry(id)
            && let Some(fire_at) = entry.record.fire_at
        {
            self.scheduled.remove(&(fire_at, key));
        }
    }

    /// Makes room for one more record: the oldest finished first, then the oldest.
    fn evict_for_one(&mut self, max: usize) {
        while self.records.len() >= max.max(1) {
            if let Some((seq, id)) = self.finished.pop_front() {
                if self
                    .records
                    .get(&id)
                    .is_some_and(|e| e.finished_seq == Some(seq))
                {
                    self.remove(&id);
                }
            } else if let Some((seq, id)) = self.created.pop_front() {
                if self.records.get(&id).is_some_and(|e| e.seq == seq) {
                    self.remove(&id);
                }
            } else {
                break;
            }
        }
    }

    /// A few steps of retention purging from the fronts of the queues.
    fn purge_some(&mut self, retention: Duration, now: DateTime<Utc>, mut budget: usize) -> u64 {
        let mut dropped = 0;
        while budget > 0 {
            budget -= 1;
            let Some((seq, id)) = self.finished.front() else {
                break;
            };
            match self.records.get(id) {
                Some(e) if e.finished_seq == Some(*seq) => {
                    if !is_dropped(&e.record, retention, now) {
                        break;
                    }
                    let id = Arc::clone(id);
                    self.remove(&id);
                    dropped += 1;
                }
                _ => {}
            }
            self.finished.pop_front();
        }
        // Records that expired unseen never joined `finished`: take them from `created`.
        while budget > 0 {
            budget -= 1;
            let Some((seq, id)) = self.created.front() else {
                break;
            };
            match self.records.get(id) {
                Some(e) if e.seq == *seq => {
                    if !is_dropped(&e.record, retention, now) {
                        break;
                    }
                    let id = Arc::clone(id);
                    self.remove(&id);
                    dropped += 1;
                }
                _ => {}
            }
            self.created.pop_front();
        }
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
                self.idem.remove(key);
                dropped += 1;
            }
            self.idem_order.pop_front();
        }
        dropped
    }

    fn idem_put(&mut self, key: String, mut entry: IdemEntry, max: usize) {
        let seq = self.seq();
        entry.seq = seq;
        self.idem_order
            .push_back((seq, entry.expires_at, key.clone()));
        self.idem.insert(key, entry);
        // Bounded like the records: past the bound the oldest entries go.
        while self.idem.len() > max.max(1) {
            let Some((seq, _, key)) = self.idem_order.pop_front() else {
                break;
            };
            if self.idem.get(&key).is_some_and(|e| e.seq == seq) {
                self.idem.remove(&key);
            }
        }
        compact(&mut self.idem_order, &self.idem, |e, s| e.seq == s);
    }
}

/// Queue entries carry their sequence number first; this lets `compact` read it.
trait Seq {
    fn seq(&self) -> u64;
    fn key(&self) -> &str;
}
impl Seq for (u64, Arc<str>) {
    fn seq(&self) -> u64 {
        self.0
    }
    fn key(&self) -> &str {
        &self.1
    }
}
impl Seq for (u64, DateTime<Utc>, String) {
    fn seq(&self) -> u64 {
        self.0
    }
    fn key(&self) -> &str {
        &self.2
    }
}

/// Drops stale queue entries once they outnumber live ones: O(n) each time the queue
/// has doubled, so O(1) amortised per push.
fn compact<Q: Seq, K: std::borrow::Borrow<str> + std::hash::Hash + Eq, V>(
    queue: &mut VecDeque<Q>,
    live: &HashMap<K, V>,
    current: impl Fn(&V, u64) -> bool,
) {
    if queue.len() > 2 * live.len() + 64 {
        queue.retain(|q| live.get(q.key()).is_some_and(|v| current(v, q.seq())));
    }
}

impl StateStore for MemoryStore {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn create(&self, record: CommandRecord) -> BoxFuture<'_, Result<(), StoreError>> {
        let result = (|| {
            let record = normalise(record);
            let mut inner = self.lock();
            let now = record.created_at;
            inner.purge_some(self.settings.retention, now, PURGE_STEP);
            if inner.records.contains_key(record.command_id.as_str()) {
                return Err(StoreError::Duplicate {
                    command_id: record.command_id,
                });
            }
            inner.evict_for_one(self.settings.max_commands);
            let key: Arc<str> = Arc::from(record.command_id.as_str());
            let seq = inner.seq();
            if record.status == CommandStatus::Scheduled
                && let Some(fire_at) = record.fire_at
            {
                inner.scheduled.insert((fire_at, Arc::clone(&key)));
            }
            inner.created.push_back((seq, Arc::clone(&key)));
            inner.records.insert(
                Arc::clone(&key),
                Entry {
                    record,
                    seq,
                    finished_seq: None,
                    lease_until: None,
                },
            );
            inner.settle(&key);
            let Inner {
                created, records, ..
            } = &mut *inner;
            compact(created, records, |e, s| e.seq == s);
            Ok(())
        })();
        Box::pin(std::future::ready(result))
    }

    fn get<'a>(
        &'a self,
        command_id: &'a str,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Option<CommandRecord>, StoreError>> {
        let mut inner = self.lock();
        let record = inner
            .live(command_id, self.settings.retention, now)
            .map(|e| e.record.clone());
        drop(inner);
        Box::pin(std::future::ready(Ok(record)))
    }

    fn mark_sent<'a>(
        &'a self,
        command_id: &'a str,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Option<CommandRecord>, StoreError>> {
        let mut inner = self.lock();
        let record = match inner.live(command_id, self.settings.retention, now) {
            Some(entry) => {
                apply_mark_sent(&mut entry.record, now);
                entry.lease_until = None;
                let record = entry.record.clone();
                inner.settle(command_id);
                Some(record)
            }
            None => None,
        };
        drop(inner);
        Box::pin(std::future::ready(Ok(record)))
    }

    fn complete<'a>(
        &'a self,
        command_id: &'a str,
        device_id: &'a str,
        outcome: FinalOutcome,
        reason: Option<StatusReason>,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<AckOutcome, StoreError>> {
        let mut inner = self.lock();
        let result = match inner.live(command_id, self.settings.retention, now) {
            Some(entry) => {
                let result = apply_complete(&mut entry.record, device_id, outcome, reason, now);
                inner.settle(command_id);
                result
            }
            None => AckOutcome::Unknown,
        };
        drop(inner);
        Box::pin(std::future::ready(Ok(result)))
    }

    fn cancel<'a>(
        &'a self,
        command_id: &'a str,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<CancelOutcome, StoreError>> {
        let mut inner = self.lock();
        let result = match inner.live(command_id, self.settings.retention, now) {
            None => CancelOutcome::NotFound,
            Some(entry) => {
                let leased = entry.lease_until.is_some_and(|until| until > now);
                if entry.record.status != CommandStatus::Scheduled || leased {
                    CancelOutcome::NotCancellable(entry.record.status)
                } else {
                    entry.record.status = CommandStatus::Cancelled;
                    entry.record.completed_at = Some(millis(now));
                    let record = entry.record.clone();
                    inner.settle(command_id);
                    CancelOutcome::Cancelled(Box::new(record))
                }
            }
        };
        drop(inner);
        Box::pin(std::future::ready(Ok(result)))
    }

    fn claim_due(
        &self,
        now: DateTime<Utc>,
        lease: Duration,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<CommandRecord>, StoreError>> {
        let mut inner = self.lock();
        let Inner {
            records, scheduled, ..
        } = &mut *inner;
        let until = millis(add(now, lease));
        let mut claimed = Vec::new();
        for (fire_at, id) in scheduled.iter() {
            if *fire_at > now || claimed.len() >= limit {
                break;
            }
            let Some(entry) = records.get_mut(id) else {
                continue;
            };
            if entry.lease_until.is_some_and(|t| t > now) {
                continue;
            }
            entry.lease_until = Some(until);
            claimed.push(entry.record.clone());
        }
        drop(inner);
        Box::pin(std::future::ready(Ok(claimed)))
    }

    fn idem_begin<'a>(
        &'a self,
        principal: &'a str,
        key: &'a str,
        fingerprint: [u8; 32],
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<IdemBegin, StoreError>> {
        let key = idem_key(principal, key);
        let mut inner = self.lock();
        inner.purge_some(self.settings.retention, now, PURGE_STEP);
        let result = match inner.idem.get(&key) {
            Some(e) if e.expires_at > now => match &e.answer {
                _ if e.fingerprint != fingerprint => IdemBegin::Mismatch,
                None => IdemBegin::InProgress,
                Some((status, body)) => IdemBegin::Replay {
                    status: *status,
                    body: body.clone(),
                },
            },
            _ => {
                let entry = IdemEntry {
                    fingerprint,
                    answer: None,
                    expires_at: millis(add(now, IDEM_IN_PROGRESS_TIMEOUT)),
                    seq: 0,
                };
                inner.idem_put(key, entry, self.settings.max_commands);
                IdemBegin::New
            }
        };
        drop(inner);
        Box::pin(std::future::ready(Ok(result)))
    }

    fn idem_finish<'a>(
        &'a self,
        principal: &'a str,
        key: &'a str,
        fingerprint: [u8; 32],
        status: u16,
        body: Vec<u8>,
        ttl: Duration,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let entry = IdemEntry {
            fingerprint,
            answer: Some((status, body)),
            expires_at: millis(add(now, ttl)),
            seq: 0,
        };
        self.lock()
            .idem_put(idem_key(principal, key), entry, self.settings.max_commands);
        Box::pin(std::future::ready(Ok(())))
    }

    fn idem_abort<'a>(
        &'a self,
        principal: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let key = idem_key(principal, key);
        let mut inner = self.lock();
        if inner.idem.get(&key).is_some_and(|e| e.answer.is_none()) {
            inner.idem.remove(&key);
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

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_795_939_200 + secs, 0).unwrap()
    }

    fn record(id: &str, created: i64) -> CommandRecord {
        CommandRecord {
            command_id: id.to_owned(),
            device_id: "d".to_owned(),
            command_type: "set_brightness".to_owned(),
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
        }
    }

    #[tokio::test]
    async fn the_queues_stay_proportional_to_what_is_live() {
        let settings = StoreSettings {
            max_commands: 100,
            retention: Duration::from_secs(60),
        };
        let store = MemoryStore::new(settings);
        // Long-lived entries at the front of the queues: stale entries pile up behind
        // them, so only compaction keeps the queues short.
        let mut blocker = record("blocker", 0);
        blocker.expires_at = at(1_000_000);
        store.create(blocker).await.unwrap();
        let long = Duration::from_secs(1_000_000);
        store
            .idem_finish("ops", "blocker", [0; 32], 202, Vec::new(), long, at(0))
            .await
            .unwrap();
        for i in 0..10_000_i64 {
            let id = format!("c-{i}");
            let record = record(&id, i);
            store.create(record).await.unwrap();
            store
                .complete(&id, "d", FinalOutcome::Succeeded, None, at(i))
                .await
                .unwrap();
            let key = format!("k-{i}");
            store.idem_begin("ops", &key, [0; 32], at(i)).await.unwrap();
            store.idem_abort("ops", &key).await.unwrap();
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
    }
}
