//! Credentials, constant-time token lookup, scope checks and the auth-failure throttle.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::domain::{DeviceId, Scope};

/// One configured caller: an id (for logs), a token (kept only as its SHA-256) and scopes.
#[derive(Clone)]
pub struct Credential {
    pub id: String,
    token_sha256: [u8; 32],
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
            scopes,
        }
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
    pub fn throttle_key(&self, ip: IpAddr) -> String {
        use std::fmt::Write;
        let mut key = format!("{ip}:");
        for b in &self.sha256[..4] {
            let _ = write!(key, "{b:02x}");
        }
        key
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

struct Window {
    started: Instant,
    failures: u32,
}

/// Fixed one-minute windows of auth failures per key, in a bounded table.
pub struct AuthThrottle {
    limit: u32,
    capacity: usize,
    clock: Box<dyn Clock>,
    table: Mutex<HashMap<String, Window>>,
}

impl AuthThrottle {
    pub fn new(limit: u32) -> Self {
        Self::with_clock(limit, THROTTLE_MAX_KEYS, SystemClock)
    }

    /// A throttle with its own table size and clock (tests use a manual clock).
    pub fn with_clock(limit: u32, capacity: usize, clock: impl Clock) -> Self {
        Self {
            limit,
            capacity,
            clock: Box::new(clock),
            table: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Window>> {
        // A panic while holding the lock leaves only counters behind; keep using them.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `Some(retry_after)` when `key` has used up its failures in the current window.
    pub fn blocked(&self, key: &str) -> Option<Duration> {
        let now = self.clock.now();
        let table = self.lock();
        let w = table.get(key)?;
        let elapsed = now.saturating_duration_since(w.started);
        (elapsed < WINDOW && w.failures >= self.limit).then(|| WINDOW - elapsed)
    }

    /// Records one failure for `key`.
    pub fn record_failure(&self, key: &str) {
        let now = self.clock.now();
        let mut table = self.lock();
        if let Some(w) = table.get_mut(key) {
            if now.saturating_duration_since(w.started) >= WINDOW {
                *w = Window {
                    started: now,
                    failures: 1,
                };
            } else {
                w.failures = w.failures.saturating_add(1);
            }
            return;
        }
        if table.len() >= self.capacity {
            // Expired entries go first; if none expired, the oldest window goes.
            table.retain(|_, w| now.saturating_duration_since(w.started) < WINDOW);
            if table.len() >= self.capacity
                && let Some(oldest) = table
                    .iter()
                    .min_by_key(|(_, w)| w.started)
                    .map(|(k, _)| k.clone())
            {
                table.remove(&oldest);
            }
        }
        table.insert(
            key.to_owned(),
            Window {
                started: now,
                failures: 1,
            },
        );
    }

    /// Number of keys held (for tests and metrics).
    pub fn len(&self) -> usize {
        self.lock().len()
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
        assert_eq!(key, "10.0.0.1:ba7816bf");
    }

    #[test]
    fn throttle_blocks_after_limit_until_the_window_ends() {
        let clock = clock();
        let t = AuthThrottle::with_clock(3, 100, clock.clone());
        for _ in 0..2 {
            t.record_failure("k");
        }
        assert!(t.blocked("k").is_none());
        t.record_failure("k");
        let retry = t.blocked("k").expect("blocked");
        assert!(retry <= WINDOW && retry > Duration::from_secs(59));
        assert!(t.blocked("other").is_none());
        clock.advance(Duration::from_secs(60));
        assert!(t.blocked("k").is_none());
        t.record_failure("k");
        assert!(t.blocked("k").is_none(), "a new window starts from zero");
    }

    #[test]
    fn throttle_table_is_bounded_evicting_expired_then_oldest() {
        let clock = clock();
        let t = AuthThrottle::with_clock(1, 3, clock.clone());
        t.record_failure("old");
        clock.advance(Duration::from_secs(61));
        t.record_failure("a");
        clock.advance(Duration::from_secs(1));
        t.record_failure("b");
        t.record_failure("c"); // table full: the expired "old" goes
        assert_eq!(t.len(), 3);
        assert!(t.blocked("a").is_some() && t.blocked("b").is_some() && t.blocked("c").is_some());
        t.record_failure("d"); // nothing expired: the oldest ("a") goes
        assert_eq!(t.len(), 3);
        assert!(t.blocked("a").is_none());
        assert!(t.blocked("b").is_some() && t.blocked("d").is_some());
    }
}
