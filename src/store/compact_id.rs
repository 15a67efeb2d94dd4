//! An id as the `memory` store keeps it (command and schedule ids alike): its 128 bits
//! when it is a UUID in canonical (lower-case, hyphenated) form, so that it turns back
//! into the very same string; otherwise the string itself.

use std::sync::Arc;

#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) enum CompactId {
    /// High and low halves (two `u64`s rather than a `u128`: 8-byte alignment keeps
    /// queue entries smaller).
    Uuid(u64, u64),
    Other(Arc<str>),
}

impl CompactId {
    pub(super) fn of(id: &str) -> Self {
        if let Ok(uuid) = uuid::Uuid::try_parse(id) {
            let mut buf = uuid::Uuid::encode_buffer();
            if uuid.hyphenated().encode_lower(&mut buf) == id {
                let (hi, lo) = uuid.as_u64_pair();
                return Self::Uuid(hi, lo);
            }
        }
        Self::Other(Arc::from(id))
    }

    pub(super) fn to_id(&self) -> String {
        match self {
            Self::Uuid(hi, lo) => uuid::Uuid::from_u64_pair(*hi, *lo).hyphenated().to_string(),
            Self::Other(id) => id.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn an_id_turns_back_into_the_very_same_string() {
        let canonical = "01938a5e-7f3c-7d2e-9a41-5b6c7d8e9f00";
        assert!(matches!(CompactId::of(canonical), CompactId::Uuid(..)));
        for id in [canonical, "01938A5E-7F3C-7D2E-9A41-5B6C7D8E9F00", "c-1", ""] {
            assert_eq!(CompactId::of(id).to_id(), id);
        }
    }
}
