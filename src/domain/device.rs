//! Device ids and the scopes that credentials grant over them.

use std::fmt;
use std::sync::Arc;

use super::field;

/// A device id: 1–64 characters of `[A-Za-z0-9_-]`, so it is safe in MQTT topics and URLs.
/// Shared, not copied: a clone is a reference count (records, events and presence all
/// carry device ids).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceId(Arc<str>);

/// Why a string is not a device id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceIdError {
    #[error("{} is required", field::DEVICE_ID)]
    Empty,
    #[error("{} must be at most 64 characters", field::DEVICE_ID)]
    TooLong,
    #[error("{} may contain only letters, digits, '_' and '-'", field::DEVICE_ID)]
    InvalidCharacter,
}

impl DeviceId {
    /// Parses a device id; surrounding spaces are trimmed first (SPEC 2.1 step 8).
    pub fn parse(raw: &str) -> Result<Self, DeviceIdError> {
        let s = raw.trim_matches(' ');
        if s.is_empty() {
            return Err(DeviceIdError::Empty);
        }
        if s.len() > 64 {
            return Err(DeviceIdError::TooLong);
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(DeviceIdError::InvalidCharacter);
        }
        Ok(Self(Arc::from(s)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The shared string, for a store that keeps device ids interned.
    pub fn shared(&self) -> &Arc<str> {
        &self.0
    }
}

impl serde::Serialize for DeviceId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a credential may address: every device, a prefix, or one exact id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// `*`
    All,
    /// `clock-*`: every device id starting with `clock-`.
    Prefix(String),
    /// Anything else matches exactly.
    Exact(String),
}

impl Scope {
    /// Parses one scope entry; `None` when it is empty.
    pub fn parse(raw: &str) -> Option<Self> {
        let s = raw.trim();
        if s.is_empty() {
            None
        } else if s == "*" {
            Some(Self::All)
        } else if let Some(prefix) = s.strip_suffix('*') {
            Some(Self::Prefix(prefix.to_owned()))
        } else {
            Some(Self::Exact(s.to_owned()))
        }
    }

    pub fn covers(&self, device: &DeviceId) -> bool {
        match self {
            Self::All => true,
            Self::Prefix(p) => device.as_str().starts_with(p.as_str()),
            Self::Exact(e) => device.as_str() == e,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_ids_are_trimmed_and_checked() {
        assert_eq!(DeviceId::parse("  clock-1 ").unwrap().as_str(), "clock-1");
        assert_eq!(DeviceId::parse("   "), Err(DeviceIdError::Empty));
        assert_eq!(DeviceId::parse(&"a".repeat(64)).unwrap().as_str().len(), 64);
        assert_eq!(
            DeviceId::parse(&"a".repeat(65)),
            Err(DeviceIdError::TooLong)
        );
        for bad in ["a/b", "a+b", "a#", "..", "é", "a b"] {
            assert_eq!(
                DeviceId::parse(bad),
                Err(DeviceIdError::InvalidCharacter),
                "{bad}"
            );
        }
    }

    #[test]
    fn scopes_match_all_prefix_or_exact() {
        let clock1 = DeviceId::parse("clock-1").unwrap();
        let lamp1 = DeviceId::parse("lamp-1").unwrap();
        assert!(Scope::parse("*").unwrap().covers(&lamp1));
        let prefix = Scope::parse("clock-*").unwrap();
        assert!(prefix.covers(&clock1));
        assert!(!prefix.covers(&lamp1));
        let exact = Scope::parse(" clock-1 ").unwrap();
        assert!(exact.covers(&clock1));
        assert!(!exact.covers(&DeviceId::parse("clock-10").unwrap()));
        assert_eq!(Scope::parse("  "), None);
    }
}
