//! Refused requests under a flood (SPEC 10, "bounded logs under attack"): every refusal is
//! counted in metrics, but each kind is logged at most once a second, with the number of
//! refusals since its last line folded in. A flood of unauthenticated requests then writes
//! a few lines a second instead of one per request, so it can neither fill a disk nor make
//! legitimate requests wait behind a full log writer (which never drops lines, because audit
//! records must not be lost).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Why a request was refused before it reached a handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// 401: no or an unknown bearer token.
    Unauthorized,
    /// 429: the auth-failure throttle.
    Throttled,
    /// 426: plain HTTP under `REQUIRE_TLS=true`.
    HttpsRequired,
    /// 404 for a path the API does not have.
    NotFound,
}

impl Refusal {
    /// The metrics label.
    pub const fn label(self) -> &'static str {
        match self {
            Self::Unauthorized => "unauthorized",
            Self::Throttled => "throttled",
            Self::HttpsRequired => "https_required",
            Self::NotFound => "not_found",
        }
    }

    const fn index(self) -> usize {
        match self {
            Self::Unauthorized => 0,
            Self::Throttled => 1,
            Self::HttpsRequired => 2,
            Self::NotFound => 3,
        }
    }
}

/// How often each kind may be logged.
const INTERVAL_MS: u64 = 1000;

#[derive(Default)]
struct Slot {
    /// Milliseconds since `epoch` from which the next line may be written.
    next_ms: AtomicU64,
    /// Refusals not yet reported in a line.
    pending: AtomicU64,
}

/// The per-kind budget of refusal log lines. Lock-free: a flood touches two atomics per
/// request.
pub struct RefusalLog {
    epoch: Instant,
    slots: [Slot; 4],
}

impl Default for RefusalLog {
    fn default() -> Self {
        Self {
            epoch: Instant::now(),
            slots: Default::default(),
        }
    }
}

impl RefusalLog {
    /// Notes one refusal of `kind`. `Some(n)` when a line is due now, `n` being the refusals of
    /// this kind since the last line, this one included; `None` when the line is folded into a
    /// later one.
    pub fn note(&self, kind: Refusal) -> Option<u64> {
        self.note_at(kind, self.epoch.elapsed())
    }

    fn note_at(&self, kind: Refusal, since_epoch: std::time::Duration) -> Option<u64> {
        let slot = &self.slots[kind.index()];
        slot.pending.fetch_add(1, Ordering::Relaxed);
        let now = u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX);
        let next = slot.next_ms.load(Ordering::Relaxed);
        if now < next {
            return None;
        }
        // Only the caller that moves the deadline writes the line.
        slot.next_ms
            .compare_exchange(
                next,
                now + INTERVAL_MS,
                Ordering::Relaxed,
                Ordering::Relaxed,
            )
            .ok()?;
        Some(slot.pending.swap(0, Ordering::Relaxed).max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shared::{MAX_LOGGED_PATH_CHARS, loggable_path};
    use std::time::Duration;

    #[test]
    fn one_line_a_second_per_kind_with_the_count_folded_in() {
        let log = RefusalLog::default();
        let at = Duration::from_millis;
        assert_eq!(log.note_at(Refusal::Unauthorized, at(0)), Some(1));
        for ms in 1..500 {
            assert_eq!(log.note_at(Refusal::Unauthorized, at(ms)), None);
        }
        // Another kind has its own budget.
        assert_eq!(log.note_at(Refusal::NotFound, at(10)), Some(1));
        assert_eq!(log.note_at(Refusal::Unauthorized, at(999)), None);
        assert_eq!(log.note_at(Refusal::Unauthorized, at(1000)), Some(501));
        assert_eq!(log.note_at(Refusal::Unauthorized, at(5000)), Some(1));
    }

    #[test]
    fn many_threads_write_one_line_and_lose_no_count() {
        let log = std::sync::Arc::new(RefusalLog::default());
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let log = log.clone();
                std::thread::spawn(move || {
                    (0..10_000)
                        .filter_map(|_| log.note_at(Refusal::Throttled, Duration::from_millis(7)))
                        .sum::<u64>()
                })
            })
            .collect();
        let logged: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
        let rest = log
            .note_at(Refusal::Throttled, Duration::from_secs(2))
            .unwrap();
        assert_eq!(logged + rest, 40_001);
    }

    #[test]
    fn long_paths_are_cut_at_a_character_boundary() {
        assert_eq!(loggable_path("/commands/x"), "/commands/x");
        let long = "é".repeat(500);
        let cut = loggable_path(&long);
        assert_eq!(cut.chars().count(), MAX_LOGGED_PATH_CHARS + 1);
        assert!(cut.ends_with('…'));
    }
}
