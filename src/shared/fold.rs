//! Folded log lines: an event that can repeat once per request (a state store that is
//! down, a flood) is logged at most once a second, with the number of events since the
//! last line folded in, as SPEC 10 asks of refused requests. Lock-free: two atomics per
//! event.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How often one kind of line may be written.
const INTERVAL: Duration = Duration::from_secs(1);

/// The line budget of one kind of event.
pub struct Folded {
    epoch: Instant,
    /// Milliseconds since `epoch` from which the next line may be written.
    next_ms: AtomicU64,
    /// Events not yet reported in a line.
    pending: AtomicU64,
}

impl Default for Folded {
    fn default() -> Self {
        Self {
            epoch: Instant::now(),
            next_ms: AtomicU64::new(0),
            pending: AtomicU64::new(0),
        }
    }
}

impl Folded {
    /// Notes one event. `Some(n)` when a line is due now, `n` being the events since the
    /// last line, this one included; `None` when it is folded into a later line.
    pub fn note(&self) -> Option<u64> {
        self.note_at(self.epoch.elapsed())
    }

    fn note_at(&self, since_epoch: Duration) -> Option<u64> {
        self.pending.fetch_add(1, Ordering::Relaxed);
        let now = u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX);
        let next = self.next_ms.load(Ordering::Relaxed);
        if now < next {
            return None;
        }
        // Only the caller that moves the deadline writes the line.
        let interval = u64::try_from(INTERVAL.as_millis()).unwrap_or(u64::MAX);
        self.next_ms
            .compare_exchange(
                next,
                now.saturating_add(interval),
                Ordering::Relaxed,
                Ordering::Relaxed,
            )
            .ok()?;
        Some(self.pending.swap(0, Ordering::Relaxed).max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_a_second_with_the_count_folded_in() {
        let fold = Folded::default();
        let at = Duration::from_millis;
        assert_eq!(fold.note_at(at(0)), Some(1));
        for ms in 1..500 {
            assert_eq!(fold.note_at(at(ms)), None);
        }
        assert_eq!(fold.note_at(at(1000)), Some(500));
        assert_eq!(fold.note_at(at(5000)), Some(1));
    }
}
