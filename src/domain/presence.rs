//! Presence on the wire (SPEC 11.1): the topics and payloads by which a clock says it is
//! there or gone. Read by the server ([`crate::presence`]), written by the virtual clock
//! (`clockctl watch`). Pure, no I/O.
//!
//! | Profile | Topic | Payloads |
//! |---|---|---|
//! | `generic` | `<prefix>/<deviceId>/status` | `online` (retained birth), `offline` (retained Last Will) — the ESPHome and Tasmota convention |
//! | `awtrix3` | `<topic>/stats/device` | `online` at connection, `offline` as Last Will (neither retained) |
//! | `awtrix3` | `<topic>/stats` | a JSON object of the clock's readings, every 10 s |

use std::fmt;

/// The topic level of a generic device's status.
pub const STATUS_LEVEL: &str = "status";
/// The AWTRIX suffix of the 10-second readings.
pub const STATS: &str = "stats";
/// The AWTRIX suffix of the connection state (`online` / Last Will `offline`).
pub const STATS_DEVICE: &str = "stats/device";
/// The payload that says a device is there.
pub const ONLINE: &str = "online";
/// The payload that says a device is gone (its Last Will).
pub const OFFLINE: &str = "offline";
/// The largest `stats` object kept as a device's `info` (SPEC 11.2); a bigger one is
/// ignored (and counted), as is anything that is not one JSON object.
pub const MAX_INFO_BYTES: usize = 4096;
/// How often an AWTRIX clock sends `<topic>/stats` (the firmware's `STATS_INTERVAL`).
pub const STATS_EVERY_SECS: u64 = 10;

/// `<prefix>/<deviceId>/status` (no leading `/` for an empty prefix).
pub fn status_topic(prefix: &str, device_id: &str) -> String {
    if prefix.is_empty() {
        format!("{device_id}/{STATUS_LEVEL}")
    } else {
        format!("{prefix}/{device_id}/{STATUS_LEVEL}")
    }
}

/// The filter for every generic device's status: `<prefix>/+/status`.
pub fn status_filter(prefix: &str) -> String {
    status_topic(prefix, "+")
}

/// `<topic>/stats` of an AWTRIX clock.
pub fn stats_topic(awtrix_topic: &str) -> String {
    format!("{awtrix_topic}/{STATS}")
}

/// `<topic>/stats/device` of an AWTRIX clock.
pub fn stats_device_topic(awtrix_topic: &str) -> String {
    format!("{awtrix_topic}/{STATS_DEVICE}")
}

/// Whether a device is there (SPEC 11.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PresenceState {
    Online,
    Offline,
    /// Never heard of since start; treated as online for delivery.
    Unknown,
}

impl PresenceState {
    pub const ALL: [Self; 3] = [Self::Online, Self::Offline, Self::Unknown];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Online => ONLINE,
            Self::Offline => OFFLINE,
            Self::Unknown => "unknown",
        }
    }

    /// `online` or `offline` exactly (no spaces, no other case); anything else is not a
    /// presence message.
    pub fn parse_payload(payload: &[u8]) -> Option<Self> {
        match payload {
            b"online" => Some(Self::Online),
            b"offline" => Some(Self::Offline),
            _ => None,
        }
    }
}

impl fmt::Display for PresenceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a message on one of a device's presence topics is read (each firmware module says
/// which of its topics is which).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reading {
    /// `online` or `offline`, exactly ([`PresenceState::parse_payload`]).
    State,
    /// The clock's readings: one JSON object ([`stats_info`]), a sign of life kept as the
    /// device's `info`.
    Stats,
}

/// What a message on a presence topic says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heard<'a> {
    /// The device says it is `online` or `offline`.
    Said(PresenceState),
    /// The device's readings (it is online): one JSON object, as sent.
    Stats(&'a str),
}

impl Reading {
    /// What `payload` says, read so; `None` when it is not presence (ignored and counted).
    pub fn read(self, payload: &[u8]) -> Option<Heard<'_>> {
        match self {
            Self::State => PresenceState::parse_payload(payload).map(Heard::Said),
            Self::Stats => stats_info(payload).map(Heard::Stats),
        }
    }
}

/// `payload` as a device's `info`: one JSON object of at most [`MAX_INFO_BYTES`], its
/// surrounding whitespace removed, or `None`. Checked without building the object (the
/// text is what is kept: a tenth of the memory of a parsed `serde_json::Value`).
pub fn stats_info(payload: &[u8]) -> Option<&str> {
    if payload.len() > MAX_INFO_BYTES {
        return None;
    }
    serde_json::from_slice::<serde::de::IgnoredAny>(payload).ok()?;
    // Valid JSON is UTF-8 throughout.
    let text = std::str::from_utf8(payload).ok()?.trim();
    text.starts_with('{').then_some(text)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn topics_follow_the_conventions() {
        assert_eq!(
            status_topic("clocks/commands", "kitchen"),
            "clocks/commands/kitchen/status"
        );
        assert_eq!(status_topic("", "kitchen"), "kitchen/status");
        assert_eq!(status_filter("p"), "p/+/status");
        assert_eq!(stats_topic("awtrix_a1"), "awtrix_a1/stats");
        assert_eq!(stats_device_topic("awtrix_a1"), "awtrix_a1/stats/device");
    }

    #[test]
    fn only_the_exact_words_are_presence() {
        assert_eq!(
            PresenceState::parse_payload(b"online"),
            Some(PresenceState::Online)
        );
        assert_eq!(
            PresenceState::parse_payload(b"offline"),
            Some(PresenceState::Offline)
        );
        for other in [&b"Online"[..], b" online", b"", b"1", b"{\"online\":true}"] {
            assert_eq!(PresenceState::parse_payload(other), None, "{other:?}");
        }
    }

    #[test]
    fn each_reading_reads_only_its_own_kind_of_message() {
        assert_eq!(
            Reading::State.read(b"offline"),
            Some(Heard::Said(PresenceState::Offline))
        );
        assert_eq!(Reading::State.read(b"{}"), None);
        assert_eq!(Reading::Stats.read(b"{}"), Some(Heard::Stats("{}")));
        assert_eq!(Reading::Stats.read(b"online"), None);
    }

    #[test]
    fn stats_are_kept_only_as_one_small_json_object() {
        assert_eq!(
            stats_info(br#"{"bat":100,"wifi_signal":-60}"#).unwrap(),
            r#"{"bat":100,"wifi_signal":-60}"#
        );
        assert_eq!(stats_info(b" {\"a\":1}\n"), Some("{\"a\":1}"));
        for bad in [&b"[1,2]"[..], b"42", b"not json", b"{\"a\":1} {}", b""] {
            assert!(stats_info(bad).is_none(), "{bad:?}");
        }
        let big = format!(r#"{{"pad":"{}"}}"#, "x".repeat(MAX_INFO_BYTES));
        assert!(stats_info(big.as_bytes()).is_none());
    }
}
