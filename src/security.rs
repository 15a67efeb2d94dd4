//! Credentials, constant-time token lookup, scope checks and the auth-failure throttle.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::domain::{DeviceId, Scope};
use crate::shared::Secret;

/// One configured caller: an id (for logs), a token (matched by its SHA-256) and scopes.
#[derive(Clone)]
pub struct Credential {
    pub id: String,
    token_sha256: [u8; 32],
    /// The token itself, only so that it can be scrubbed from logged text
    /// ([`crate::config::Redactor`]); lookups never compare it.
    token: Secret,
    pub scopes: Vec<Scope>,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("id", &self.id)
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

impl Credential {
    pub fn new(id: impl Into<String>, token: &str, scopes: Vec<Scope>) -> Self {
        Self {
            id: id.into(),
            token_sha256: sha256(token.as_bytes()),
            token: Secret::new(token),
            scopes,
        }
    }

    /// The token, for redaction only.
    pub fn token(&self) -> &Secret {
        &self.token
    }

    /// The legacy `API_AUTH_TOKEN`: principal `legacy`, scope `*`.
    pub fn legacy(token: &str) -> Self {
        Self::new("legacy", token, vec![Scope::All])
    }

    /// Whether any of this credential's scopes covers `device`.
    pub fn covers(&self, device: &DeviceId) -> bool {
        self.scopes.iter().any(|s| s.covers(device))
    }
}

fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// Parses `id|token|scope1,scope2;id2|token2|*` (SPEC 3.1). Errors name the entry's
/// position (1-based) and never contain a token.
pub fn parse_credentials(raw: &str) -> Result<Vec<Credential>, String> {
    let mut out = Vec::new();
    for (i, entry) in raw.split(';').enumerate() {
        let pos = i + 1;
        if entry.trim().is_empty() {
            continue;
        }
        let parts: Vec<&str> = entry.split('|').map(str::trim).collect();
        let [id, token, scopes] = parts.as_slice() else {
            return Err(format!(
                "entry {pos} has {} part(s); expected id|token|scopes",
                parts.len()
            ));
        };
        if id.is_empty() {
            return Err(format!(
                "entry {pos} has an empty id; expected id|token|scopes"
            ));
        }
        if token.is_empty() {
            return Err(format!(
                "entry {pos} ({id}) has an empty token; expected id|token|scopes"
            ));
        }
        let scopes: Vec<Scope> = scopes.split(',').filter_map(Scope::parse).collect();
        if scopes.is_empty() {
            return Err(format!(
                "entry {pos} ({id}) has no scope; expected a comma list such as * or clock-*,lamp-1"
            ));
        }
        out.push(Credential::new(*id, token, scopes));
    }
    Ok(out)
}

/// A presented bearer token, hashed once: for the lookup and for the throttle key.
pub struct PresentedToken {
    sha256: [u8; 32],
}

impl PresentedToken {
    pub fn new(token: &str) -> Self {
        Self {
            sha256: sha256(token.as_bytes()),
        }
    }

    /// The throttle key: `IP:` plus the first 8 hex digits of the token's SHA-256.
    pub fn throttle_key(&self, ip: IpAddr) -> ThrottleKey {
        let mut prefix = [0u8; 4];
        prefix.copy_from_slice(&self.sha256[..4]);
        ThrottleKey {
            ip,
            token: Some(prefix),
        }
    }
}

/// A key of the auth-failure throttle (SPEC 2.1 step 4): the client IP, plus the first 32
/// bits of the presented token's SHA-256 when there was one. Fixed-size and `Copy`, so a
/// flood of new keys costs no heap allocation per key; `Display` gives `IP` or
/// `IP:8 hex digits`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ThrottleKey {
    ip: IpAddr,
    token: Option<[u8; 4]>,
}

impl ThrottleKey {
    /// The key of a request that presented no token.
    pub fn ip(ip: IpAddr) -> Self {
        Self { ip, token: None }
    }
}

impl std::fmt::Display for ThrottleKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.ip)?;
        if let Some(prefix) = self.token {
            f.write_str(":")?;
            for b in prefix {
                write!(f, "{b:02x}")?;
            }
        }
        Ok(())
    }
}

/// Finds the credential for a token, comparing digests in constant time against every
/// configured credential (no early exit, no length leak).
pub fn authenticate<'a>(
    credentials: &'a [Credential],
    token: &PresentedToken,
) -> Option<&'a Credential> {
    let mut found = None;
    for c in credentials {
        if bool::from(c.token_sha256.ct_eq(&token.sha256)) && found.is_none() {
            found = Some(c);
        }
    }
    found
}

/// A source of monotonic time; tests inject a manual one.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Instant;
}

/// The real clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// Maximum number of keys the throttle remembers (SPEC 2.1 step 4).
pub const THROTTLE_MAX_KEYS: usize = 10_000;
const WINDOW: Duration = Duration::from_secs(60);
/// Shards of a full-size table: a flood of failing keys contends on one shard's lock at a
/// time instead of on one lock that every request takes.
const SHARDS: usize = 16;
/// Tables smaller than this (tests) keep one shard, so their eviction order is exact.
const MIN_SHARDED_CAPACITY: usize = 1024;

struct Window {
    started: Instant,
    failures: u32,
}

/// One shard: the windows by key, and the keys in the order their windows started.
///
/// `order` makes eviction O(1) amortised instead of a scan. A window that restarts pushes a
/// new entry; the entry of its earlier start stays behind and is skipped when it reaches the
/// front (its start no longer matches the table). Since a window expires a fixed time after
/// it started, the front of `order` is both the oldest window and, if any window has expired,
/// an expired one: evicting the front is "expired keys first, then the oldest". Stale entries
/// are swept once they outnumber the live ones, which keeps `order` within twice the
/// shard's capacity.
struct Shard {
    windows: HashMap<ThrottleKey, Window>,
    order: VecDeque<(ThrottleKey, Instant)>,
    capacity: usize,
}

impl Shard {
    fn new(capacity: usize) -> Self {
        Self {
            windows: HashMap::new(),
            order: VecDeque::new(),
            capacity,
        }
    }

    fn record_failure(&mut self, key: ThrottleKey, now: Instant) {
        if let Some(w) = self.windows.get_mut(&key) {
            if now.saturating_duration_since(w.started) >= WINDOW {
                *w = Window {
                    started: now,
                    failures: 1,
                };
                self.order.push_back((key, now));
                self.sweep_if_stale();
            } else {
                w.failures = w.failures.saturating_add(1);
            }
            return;
        }
        while self.windows.len() >= self.capacity {
            let Some((oldest, started)) = self.order.pop_front() else {
                break;
            };
            if self
                .windows
                .get(&oldest)
                .is_some_and(|w| w.started == started)
            {
                self.windows.remove(&oldest);
            }
        }
        self.windows.insert(
            key,
            Window {
                started: now,
                failures: 1,
            },
        );
        self.order.push_back((key, now));
        self.sweep_if_stale();
    }

    fn sweep_if_stale(&mut self) {
        if self.order.len() > 2 * self.capacity.max(8) {
            let windows = &self.windows;
            self.order
                .retain(|(k, started)| windows.get(k).is_some_and(|w| w.started == *started));
        }
    }
}

/// Fixed one-minute windows of auth failures per key, in a bounded, sharded table.
pub struct AuthThrottle {
    limit: u32,
    clock: Box<dyn Clock>,
    hasher: std::hash::RandomState,
    shards: Vec<Mutex<Shard>>,
}

impl AuthThrottle {
    pub fn new(limit: u32) -> Self {
        Self::with_clock(limit, THROTTLE_MAX_KEYS, SystemClock)
    }

    /// A throttle with its own table size and clock (tests use a manual clock). The table
    /// never holds more than `capacity` keys.
    pub fn with_clock(limit: u32, capacity: usize, clock: impl Clock) -> Self {
        let capacity = capacity.max(1);
        let shards = if capacity >= MIN_SHARDED_CAPACITY {
            SHARDS
        } else {
            1
        };
        Self {
            limit,
            clock: Box::new(clock),
            hasher: std::hash::RandomState::new(),
            shards: (0..shards)
                .map(|_| Mutex::new(Shard::new(capacity / shards)))
                .collect(),
        }
    }

    fn shard(&self, key: &ThrottleKey) -> std::sync::MutexGuard<'_, Shard> {
        use std::hash::BuildHasher;
        let index = (self.hasher.hash_one(key) % self.shards.len() as u64) as usize;
        // A panic while holding the lock leaves only counters behind; keep using them.
        self.shards[index]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `Some(retry_after)` when `key` has used up its failures in the current window.
    pub fn blocked(&self, key: &ThrottleKey) -> Option<Duration> {
        let now = self.clock.now();
        let shard = self.shard(key);
        let w = shard.windows.get(key)?;
        let elapsed = now.saturating_duration_since(w.started);
        (elapsed < WINDOW && w.failures >= self.limit).then(|| WINDOW - elapsed)
    }

    /// Records one failure for `key`.
    pub fn record_failure(&self, key: &ThrottleKey) {
        let now = self.clock.now();
        self.shard(key).record_failure(*key, now);
    }

    /// Number of keys held (for tests and metrics).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                s.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .windows
                    .len()
            })
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[derive(Clone)]
    struct ManualClock(Arc<Mutex<Instant>>);
    impl ManualClock {
        fn advance(&self, d: Duration) {
            *self.0.lock().unwrap() += d;
        }
    }
    impl Clock for ManualClock {
        fn now(&self) -> Instant {
            *self.0.lock().unwrap()
        }
    }

    fn key(n: u8) -> ThrottleKey {
        ThrottleKey::ip(IpAddr::from([10, 0, 0, n]))
    }

    fn clock() -> ManualClock {
        ManualClock(Arc::new(Mutex::new(Instant::now())))
    }

    #[test]
    fn credentials_parse_with_trimming_and_skip_empty_entries() {
        let c = parse_credentials(" ops | t1 | clock-*, lamp-1 ;; ci|t2|* ;").unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].id, "ops");
        assert_eq!(
            c[0].scopes,
            vec![
                Scope::Prefix("clock-".into()),
                Scope::Exact("lamp-1".into())
            ]
        );
        assert!(authenticate(&c, &PresentedToken::new("t2")).is_some_and(|c| c.id == "ci"));
        assert!(authenticate(&c, &PresentedToken::new("t3")).is_none());
    }

    #[test]
    fn credential_errors_name_the_position_but_not_the_token() {
        for (raw, pos) in [
            ("a|tok|*;b|secret-xyz", "entry 2"),
            ("a|secret-xyz|*|x", "entry 1"),
            ("|secret-xyz|*", "entry 1"),
            ("a|tok|*;b||*", "entry 2"),
            ("a|secret-xyz| , ", "entry 1"),
        ] {
            let e = parse_credentials(raw).unwrap_err();
            assert!(e.contains(pos), "{e}");
            assert!(!e.contains("secret-xyz"), "{e}");
        }
    }

    #[test]
    fn throttle_key_is_ip_and_token_hash_prefix() {
        let key = PresentedToken::new("abc").throttle_key("10.0.0.1".parse().unwrap());
        // sha256("abc") = ba7816bf...
        assert_eq!(key.to_string(), "10.0.0.1:ba7816bf");
        assert_eq!(
            ThrottleKey::ip("10.0.0.1".parse().unwrap()).to_string(),
            "10.0.0.1"
        );
        assert_ne!(key, ThrottleKey::ip("10.0.0.1".parse().unwrap()));
    }

    #[test]
    fn throttle_blocks_after_limit_until_the_window_ends() {
        let clock = clock();
        let t = AuthThrottle::with_clock(3, 100, clock.clone());
        for _ in 0..2 {
            t.record_failure(&key(1));
        }
        assert!(t.blocked(&key(1)).is_none());
        t.record_failure(&key(1));
        let retry = t.blocked(&key(1)).expect("blocked");
        assert!(retry <= WINDOW && retry > Duration::from_secs(59));
        assert!(t.blocked(&key(2)).is_none());
        clock.advance(Duration::from_secs(60));
        assert!(t.blocked(&key(1)).is_none());
        t.record_failure(&key(1));
        assert!(
            t.blocked(&key(1)).is_none(),
            "a new window starts from zero"
        );
    }

    #[test]
    fn throttle_table_is_bounded_evicting_expired_then_oldest() {
        let clock = clock();
        let t = AuthThrottle::with_clock(1, 3, clock.clone());
        t.record_failure(&key(3));
        clock.advance(Duration::from_secs(61));
        t.record_failure(&key(4));
        clock.advance(Duration::from_secs(1));
        t.record_failure(&key(5));
        t.record_failure(&key(6)); // table full: the expired "old" goes
        assert_eq!(t.len(), 3);
        assert!(
            t.blocked(&key(4)).is_some()
                && t.blocked(&key(5)).is_some()
                && t.blocked(&key(6)).is_some()
        );
        t.record_failure(&key(7)); // nothing expired: the oldest (&key(4)) goes
        assert_eq!(t.len(), 3);
        assert!(t.blocked(&key(4)).is_none());
        assert!(t.blocked(&key(5)).is_some() && t.blocked(&key(7)).is_some());
    }

    #[test]
    fn a_flood_of_new_keys_keeps_the_full_size_table_bounded_and_blocks_the_newest() {
        let clock = clock();
        let t = AuthThrottle::with_clock(1, THROTTLE_MAX_KEYS, clock.clone());
        assert_eq!(t.shards.len(), SHARDS);
        for n in 0..50_000u32 {
            let key = PresentedToken::new(&n.to_string()).throttle_key(IpAddr::from([10, 0, 0, 1]));
            t.record_failure(&key);
        }
        assert!(t.len() <= THROTTLE_MAX_KEYS, "{}", t.len());
        assert!(t.len() >= THROTTLE_MAX_KEYS - SHARDS, "{}", t.len());
        let newest = PresentedToken::new("49999").throttle_key(IpAddr::from([10, 0, 0, 1]));
        assert!(t.blocked(&newest).is_some());
    }

    #[test]
    fn restarting_windows_do_not_grow_the_eviction_queue_without_bound() {
        let clock = clock();
        let t = AuthThrottle::with_clock(1, 4, clock.clone());
        for _ in 0..1000 {
            t.record_failure(&key(1));
            t.record_failure(&key(2));
            clock.advance(WINDOW);
        }
        let shard = t.shards[0].lock().unwrap();
        assert!(shard.order.len() <= 16, "{}", shard.order.len());
        assert_eq!(shard.windows.len(), 2);
    }
}
