//! The connection cap (`HTTP_MAX_CONNECTIONS`): a count of open client connections and the
//! idle ones in the order they went idle. At the cap, a new connection takes the place of
//! the longest-idle one (a keep-alive connection waiting for its next request, or one that
//! has sent nothing yet); only when none is idle is the new one closed at once. So one
//! client holding connections open cannot lock others out, and the process never runs into
//! its open-file limit while it has room to choose. When the open-file limit is lower than
//! the cap and `accept` fails for lack of descriptors, the longest-idle connection is
//! closed the same way ([`ConnTable::evict_longest_idle`]), so the limit cannot lock
//! others out either.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use tokio::sync::Notify;

/// The open connections of one listener.
pub(super) struct ConnTable {
    max: usize,
    inner: Mutex<Inner>,
}

struct Inner {
    open: usize,
    next_id: u64,
    /// Idle connections by (idle since, id): the first is the longest idle.
    idle: BTreeMap<(Instant, u64), Arc<Eviction>>,
}

/// How a connection learns that it was chosen to make room.
#[derive(Default)]
pub(super) struct Eviction {
    chosen: AtomicBool,
    notify: Notify,
}

impl Eviction {
    /// Resolves once the connection has been chosen.
    pub(super) async fn chosen(&self) {
        self.notify.notified().await;
    }
}

impl ConnTable {
    pub(super) fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max: max.max(1),
            inner: Mutex::new(Inner {
                open: 0,
                next_id: 0,
                idle: BTreeMap::new(),
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A slot for a new connection, which starts idle; at the cap the longest-idle
    /// connection is told to close. `None`: at the cap with none idle.
    pub(super) fn admit(self: &Arc<Self>) -> Option<Slot> {
        let mut inner = self.lock();
        if inner.open >= self.max {
            let (_, victim) = inner.idle.pop_first()?;
            victim.chosen.store(true, Ordering::SeqCst);
            // A stored permit: the victim sees it even if it is not waiting yet.
            victim.notify.notify_one();
        }
        inner.open += 1;
        let id = inner.next_id;
        inner.next_id += 1;
        let since = Instant::now();
        let eviction = Arc::new(Eviction::default());
        inner.idle.insert((since, id), eviction.clone());
        Some(Slot {
            table: self.clone(),
            id,
            idle_since: Some(since),
            eviction,
        })
    }

    /// Tells the longest-idle connection to close: the process ran out of descriptors
    /// (`accept` failed with EMFILE/ENFILE) below the cap. `false` when none is idle.
    pub(super) fn evict_longest_idle(&self) -> bool {
        let mut inner = self.lock();
        let Some((_, victim)) = inner.idle.pop_first() else {
            return false;
        };
        victim.chosen.store(true, Ordering::SeqCst);
        victim.notify.notify_one();
        true
    }

    /// Open connections (those chosen to make room count until they are gone).
    #[cfg(test)]
    fn open(&self) -> usize {
        self.lock().open
    }
}

/// One open connection's place in the table; freed on drop.
pub(super) struct Slot {
    table: Arc<ConnTable>,
    id: u64,
    idle_since: Option<Instant>,
    eviction: Arc<Eviction>,
}

impl Slot {
    pub(super) fn eviction(&self) -> Arc<Eviction> {
        self.eviction.clone()
    }

    /// The connection waits for its next request.
    pub(super) fn set_idle(&mut self) {
        if self.idle_since.is_some() || self.eviction.chosen.load(Ordering::SeqCst) {
            return;
        }
        let since = Instant::now();
        self.table
            .lock()
            .idle
            .insert((since, self.id), self.eviction.clone());
        self.idle_since = Some(since);
    }

    /// A request has begun. `false` when the connection was already chosen to make room:
    /// it must close without reading the request.
    pub(super) fn set_busy(&mut self) -> bool {
        if let Some(since) = self.idle_since.take() {
            let mut inner = self.table.lock();
            inner.idle.remove(&(since, self.id));
            // Read under the lock that choosing takes: either it was chosen before, or it
            // can no longer be.
            return !self.eviction.chosen.load(Ordering::SeqCst);
        }
        !self.eviction.chosen.load(Ordering::SeqCst)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut inner = self.table.lock();
        if let Some(since) = self.idle_since {
            inner.idle.remove(&(since, self.id));
        }
        inner.open = inner.open.saturating_sub(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_the_cap_the_longest_idle_connection_makes_room() {
        let table = ConnTable::new(2);
        let mut a = table.admit().unwrap();
        let mut b = table.admit().unwrap();
        assert!(a.set_busy() && b.set_busy());
        // Both busy: a third is refused.
        assert!(table.admit().is_none());
        b.set_idle();
        a.set_idle();
        // b went idle first: it is chosen, a is not.
        let c = table.admit().unwrap();
        assert!(b.eviction.chosen.load(Ordering::SeqCst));
        assert!(
            !b.set_busy(),
            "a chosen connection must not start a request"
        );
        assert!(a.set_busy());
        assert_eq!(table.open(), 3, "the chosen one counts until it is gone");
        drop(b);
        assert_eq!(table.open(), 2);
        drop((a, c));
        assert_eq!(table.open(), 0);
    }

    #[test]
    fn out_of_descriptors_the_longest_idle_connection_is_told_to_close() {
        let table = ConnTable::new(100);
        let mut busy = table.admit().unwrap();
        assert!(busy.set_busy());
        assert!(!table.evict_longest_idle(), "nothing idle");
        let idle = table.admit().unwrap();
        assert!(table.evict_longest_idle());
        assert!(idle.eviction.chosen.load(Ordering::SeqCst));
        assert!(!busy.eviction.chosen.load(Ordering::SeqCst));
    }

    #[test]
    fn a_new_connection_that_has_sent_nothing_counts_as_idle() {
        let table = ConnTable::new(1);
        let first = table.admit().unwrap();
        let _second = table.admit().expect("the silent first one makes room");
        assert!(first.eviction.chosen.load(Ordering::SeqCst));
    }
}
