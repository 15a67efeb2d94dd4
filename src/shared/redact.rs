//! Keeping secrets out of text that is printed: [`Redactor`] scrubs every configured
//! secret from text that came from outside (a downstream's answer may echo the request it
//! got); [`redact_userinfo`] hides the `user:password@` of a URL-like value. Both live here,
//! below the configuration that builds them and the store and transports that use them.

use std::fmt;

use super::Secret;
use super::secret::REDACTED;

/// Every configured secret, to scrub text from outside (a downstream's answer may echo the
/// request it got, token included) before it is logged. [`Config::from_lookup`] builds it
/// from every secret it reads: a variable read through `Reader::secret` is in it, and a
/// secret found inside another value (an API token, the password of a store URL) is added
/// with `Reader::keep_secret`.
#[derive(Clone, Default)]
pub struct Redactor {
    /// Distinct, non-empty, each also in its JSON-escaped form when that differs (an echo
    /// inside a JSON body escapes `"` and `\`).
    secrets: Vec<String>,
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Redactor({} patterns)", self.secrets.len())
    }
}

impl Redactor {
    /// A redactor for `secrets`; empty ones are ignored.
    pub fn new<'a>(secrets: impl IntoIterator<Item = &'a Secret>) -> Self {
        let mut patterns: Vec<String> = Vec::new();
        for secret in secrets {
            let raw = secret.expose();
            if raw.is_empty() {
                continue;
            }
            let escaped = serde_json::to_string(raw).unwrap_or_default();
            let escaped = escaped
                .strip_prefix('"')
                .and_then(|e| e.strip_suffix('"'))
                .unwrap_or(raw);
            for pattern in [raw, escaped] {
                if !patterns.iter().any(|p| p == pattern) {
                    patterns.push(pattern.to_owned());
                }
            }
        }
        Self { secrets: patterns }
    }

    /// `text` with every occurrence of every secret replaced by `<redacted>`. Occurrences
    /// that overlap (one secret's end is another's start, or a secret overlaps itself) are
    /// replaced as one run, so no part of any of them is left.
    pub fn redact(&self, text: &str) -> String {
        let mut covered = vec![false; text.len()];
        let mut any = false;
        for secret in &self.secrets {
            // Occurrences of one secret are found in order; `done` skips bytes already
            // marked, so a self-overlapping secret costs O(text), not O(text × secret).
            let mut from = 0;
            let mut done = 0;
            while let Some(offset) = text[from..].find(secret.as_str()) {
                let start = from + offset;
                let end = start + secret.len();
                covered[start.max(done)..end].fill(true);
                done = end;
                any = true;
                // The next char boundary: a later occurrence may overlap this one.
                from = start + text[start..].chars().next().map_or(1, char::len_utf8);
            }
        }
        if !any {
            return text.to_owned();
        }
        // Every run starts and ends on a char boundary: secrets are whole strings matched
        // at char boundaries.
        let mut out = String::with_capacity(text.len());
        let mut i = 0;
        while i < text.len() {
            let secret = covered[i];
            let run = covered[i..].iter().position(|&c| c != secret);
            let end = run.map_or(text.len(), |n| i + n);
            out.push_str(if secret { REDACTED } else { &text[i..end] });
            i = end;
        }
        out
    }
}

/// Hides `user:password@` in a URL-like value before it is printed.
pub fn redact_userinfo(value: &str) -> String {
    match (value.find("://"), value.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            format!("{}<redacted>{}", &value[..scheme_end + 3], &value[at..])
        }
        _ => value.to_owned(),
    }
}
