//! `Idempotency-Key` (SPEC 7.6): the header's value, the fingerprint of the request it
//! came with, and settling a key whose store was away when its answer was ready.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use super::records::Tracker;
use crate::store::{IDEM_IN_PROGRESS_TIMEOUT, IdemAnswer, IdemRequest};

/// Longest accepted `Idempotency-Key`.
const MAX_KEY_LEN: usize = 255;
/// First pause before settling a key again after the store failed; doubled up to
/// [`SETTLE_MAX_PAUSE`].
const SETTLE_FIRST_PAUSE: Duration = Duration::from_millis(100);
const SETTLE_MAX_PAUSE: Duration = Duration::from_secs(2);

/// An `Idempotency-Key` and the fingerprint of the request it came with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    pub key: String,
    pub fingerprint: [u8; 32],
}

impl IdempotencyKey {
    /// The key of header value `raw` for a request to `path` with `body`; `None` when
    /// the value is invalid (see [`parse_idempotency_key`]).
    pub fn new(raw: &[u8], path: &str, body: &impl serde::Serialize) -> Option<Self> {
        Some(Self {
            key: parse_idempotency_key(raw)?.to_owned(),
            fingerprint: fingerprint(path, body),
        })
    }

    /// This key as `principal`'s, for the store (keys of different principals never
    /// collide).
    pub fn of<'a>(&'a self, principal: &'a str) -> IdemRequest<'a> {
        IdemRequest {
            principal,
            key: &self.key,
            fingerprint: self.fingerprint,
        }
    }
}

/// An `Idempotency-Key` header value (SPEC 7.6): 1–255 visible ASCII characters, one pair
/// of surrounding double quotes (RFC 8941's string form) removed. `None` when invalid.
pub fn parse_idempotency_key(raw: &[u8]) -> Option<&str> {
    let raw = std::str::from_utf8(raw).ok()?;
    let key = raw
        .strip_prefix('"')
        .and_then(|k| k.strip_suffix('"'))
        .unwrap_or(raw);
    let visible = |c: char| c.is_ascii_graphic();
    (!key.is_empty() && key.len() <= MAX_KEY_LEN && key.chars().all(visible)).then_some(key)
}

/// What makes two requests "the same command" for an `Idempotency-Key`: the endpoint and
/// the parsed body re-serialised (so key order and whitespace do not matter).
pub fn fingerprint(path: &str, body: &impl serde::Serialize) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(path.as_bytes());
    hasher.update([0]);
    // Serialising the parsed request struct cannot fail.
    hasher.update(serde_json::to_vec(body).unwrap_or_default());
    hasher.finalize().into()
}

/// What a key that got `New` ends with.
#[derive(Debug, Clone)]
pub(super) enum Settlement {
    /// A 202: remember `status` and `body` for replays.
    Finish { status: u16, body: Vec<u8> },
    /// Anything else: forget the key, so a retry runs again.
    Abort,
}

/// Settles `key` of `principal` once. `false` when the store failed (logged and counted).
pub(super) async fn settle_once(
    tracker: &Tracker,
    principal: &str,
    key: &IdempotencyKey,
    settlement: &Settlement,
) -> bool {
    let stored = match settlement {
        Settlement::Finish { status, body } => {
            let answer = IdemAnswer {
                request: key.of(principal),
                status: *status,
                body: body.clone(),
                ttl: tracker.idempotency_ttl,
            };
            tracker.store.idem_finish(answer, Utc::now()).await
        }
        Settlement::Abort => tracker.store.idem_abort(key.of(principal)).await,
    };
    match stored {
        Ok(()) => true,
        Err(e) => {
            tracker.failed("saving an Idempotency-Key", &e);
            false
        }
    }
}

/// Settles `key` again and again, with growing pauses, until the store takes it, the key
/// would have left "in progress" by itself ([`IDEM_IN_PROGRESS_TIMEOUT`]), or `stop`.
/// Without it a key whose answer came while the store was away stayed "in progress" (409)
/// for a minute, and a finished command could then be delivered again.
pub(super) async fn settle_until(
    tracker: Arc<Tracker>,
    principal: String,
    key: IdempotencyKey,
    settlement: Settlement,
    mut stop: watch::Receiver<bool>,
) {
    let deadline = tokio::time::Instant::now() + IDEM_IN_PROGRESS_TIMEOUT;
    let mut pause = SETTLE_FIRST_PAUSE;
    loop {
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
        if settle_once(&tracker, &principal, &key, &settlement).await {
            tracing::info!("Idempotency-Key settled after the state store came back");
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            return;
        }
        pause = (pause * 2).min(SETTLE_MAX_PAUSE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotency_keys_are_visible_ascii_with_optional_quotes() {
        assert_eq!(parse_idempotency_key(b"abc-123"), Some("abc-123"));
        assert_eq!(parse_idempotency_key(b"\"abc\""), Some("abc"));
        assert_eq!(parse_idempotency_key(&[b'k'; 255]).map(str::len), Some(255));
        for bad in [
            &b""[..],
            b"\"\"",
            b"a b",
            b"caf\xc3\xa9",
            b"tab\there",
            &[b'k'; 256],
        ] {
            assert_eq!(parse_idempotency_key(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn fingerprints_depend_on_path_and_parsed_fields_only() {
        #[derive(serde::Serialize)]
        struct Body {
            a: u8,
            b: &'static str,
        }
        let one = fingerprint("/x", &Body { a: 1, b: "y" });
        assert_eq!(one, fingerprint("/x", &Body { a: 1, b: "y" }));
        assert_ne!(one, fingerprint("/z", &Body { a: 1, b: "y" }));
        assert_ne!(one, fingerprint("/x", &Body { a: 2, b: "y" }));
    }
}
