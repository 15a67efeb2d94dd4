//! The `awtrix3` profile (SPEC 8.1): how a [`Command`] reaches a clock running the AWTRIX 3
//! firmware (e.g. the Ulanzi TC001), which listens on `<its prefix>/notify` and
//! `<its prefix>/settings` and knows nothing of the generic payload.
//!
//! | Command | Topic | Payload |
//! |---|---|---|
//! | message | `<topic>/notify` | `{"text":message,"duration":durationSeconds}` |
//! | brightness | `<topic>/settings` | `{"ABRI":false,"BRI":round(level × 255 / 100)}` |
//! | alarm | `<topic>/notify`, at `alarmTime` | `{"text":label or "Alarm","hold":true,"wakeup":true,"rtttl":…}` |
//!
//! AWTRIX has no alarm of its own: the gateway holds the alarm and publishes the
//! notification at its time ([`fire_at`]). The firmware sends no acknowledgement.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::Command;

/// The clock's AWTRIX MQTT prefix: one or more topic levels, none empty, no wildcard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwtrixTopic(String);

/// Why a string is not an AWTRIX topic prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AwtrixTopicError {
    #[error("the topic is empty")]
    Empty,
    #[error("the topic must not contain the MQTT wildcards + or #")]
    Wildcard,
    #[error("the topic has an empty level (a leading, trailing or double /)")]
    EmptyLevel,
    #[error("the topic must not start with $ (reserved for the broker)")]
    Reserved,
    #[error("the topic must not contain control characters")]
    Control,
    #[error("the topic is longer than 1024 bytes")]
    TooLong,
}

impl AwtrixTopic {
    /// Parses a prefix as the clock's settings show it (e.g. `awtrix_a1b2c3`).
    pub fn parse(raw: &str) -> Result<Self, AwtrixTopicError> {
        if raw.is_empty() {
            return Err(AwtrixTopicError::Empty);
        }
        if raw.len() > 1024 {
            return Err(AwtrixTopicError::TooLong);
        }
        if raw.contains(['+', '#']) {
            return Err(AwtrixTopicError::Wildcard);
        }
        if raw.chars().any(char::is_control) {
            return Err(AwtrixTopicError::Control);
        }
        if raw.split('/').any(str::is_empty) {
            return Err(AwtrixTopicError::EmptyLevel);
        }
        if raw.starts_with('$') {
            return Err(AwtrixTopicError::Reserved);
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AwtrixTopic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One AWTRIX 3 clock: its prefix and the melody its alarms play.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Awtrix3Device {
    pub topic: AwtrixTopic,
    /// `alarm_rtttl`: an RTTTL melody sent with every alarm (`rtttl`), when configured.
    pub alarm_rtttl: Option<String>,
}

impl Awtrix3Device {
    pub fn new(topic: AwtrixTopic, alarm_rtttl: Option<String>) -> Self {
        Self { topic, alarm_rtttl }
    }
}

/// What a notification shows when the alarm has no label.
pub const DEFAULT_ALARM_TEXT: &str = "Alarm";

/// The `notify` suffix: notifications and (held) alarms.
pub const NOTIFY: &str = "notify";
/// The `settings` suffix: brightness.
pub const SETTINGS: &str = "settings";

/// One publish to an AWTRIX clock. Never retained: a retained notification would be shown
/// again every time the clock reconnects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publication {
    pub topic: String,
    pub payload: Vec<u8>,
}

/// The JSON of `<topic>/notify` (the subset of AWTRIX's notification this gateway sends;
/// the virtual clock reads it back, ignoring keys it does not know as the firmware does).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notify {
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<u16>,
    /// Stays on the display until the button is pressed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold: Option<bool>,
    /// Wakes the display if it is off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wakeup: Option<bool>,
    /// A melody in RTTTL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtttl: Option<String>,
}

/// The JSON of `<topic>/settings` (brightness only).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[allow(non_snake_case)]
pub struct Settings {
    /// Automatic brightness; turned off so the level set stays.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ABRI: Option<bool>,
    /// Brightness 0–255.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub BRI: Option<u8>,
}

/// `level` (0–100) on AWTRIX's 0–255 scale, rounded half up: 0→0, 40→102, 100→255.
pub fn brightness(level: u8) -> u8 {
    let scaled = (u32::from(level.min(100)) * 255 + 50) / 100;
    u8::try_from(scaled).unwrap_or(u8::MAX)
}

impl Awtrix3Device {
    /// What to publish for `command`. For an alarm this is the notification the gateway
    /// publishes at the alarm's time ([`Command::alarm_instant`]), not before.
    pub fn publication(&self, command: &Command) -> Publication {
        let (suffix, payload) = match command {
            Command::DisplayMessage {
                message,
                duration_seconds,
            } => (
                NOTIFY,
                to_vec(&Notify {
                    text: message.clone(),
                    duration: Some(*duration_seconds),
                    ..Notify::default()
                }),
            ),
            Command::SetBrightness { level } => (
                SETTINGS,
                to_vec(&Settings {
                    ABRI: Some(false),
                    BRI: Some(brightness(*level)),
                }),
            ),
            Command::SetAlarm { label, .. } => (
                NOTIFY,
                to_vec(&Notify {
                    text: if label.is_empty() {
                        DEFAULT_ALARM_TEXT.to_owned()
                    } else {
                        label.clone()
                    },
                    duration: None,
                    hold: Some(true),
                    wakeup: Some(true),
                    rtttl: self.alarm_rtttl.clone(),
                }),
            ),
        };
        Publication {
            topic: format!("{}/{suffix}", self.topic),
            payload,
        }
    }
}

/// Strings, integers and booleans cannot fail to serialise.
fn to_vec<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn device(rtttl: Option<&str>) -> Awtrix3Device {
        Awtrix3Device::new(
            AwtrixTopic::parse("awtrix_a1b2c3").unwrap(),
            rtttl.map(str::to_owned),
        )
    }

    fn text(p: &Publication) -> (&str, &str) {
        (p.topic.as_str(), std::str::from_utf8(&p.payload).unwrap())
    }

    #[test]
    fn brightness_follows_the_table() {
        let d = device(None);
        for (level, bri) in [(0, 0), (1, 3), (40, 102), (50, 128), (99, 252), (100, 255)] {
            let p = d.publication(&Command::brightness(Some(level)).unwrap());
            let want = format!(r#"{{"ABRI":false,"BRI":{bri}}}"#);
            assert_eq!(
                text(&p),
                ("awtrix_a1b2c3/settings", want.as_str()),
                "{level}"
            );
        }
    }

    #[test]
    fn a_message_is_a_notification_with_its_duration() {
        let p = device(None)
            .publication(&Command::message(Some("Tea \"now\"".into()), Some(15)).unwrap());
        assert_eq!(
            text(&p),
            (
                "awtrix_a1b2c3/notify",
                r#"{"text":"Tea \"now\"","duration":15}"#
            )
        );
    }

    #[test]
    fn an_alarm_holds_wakes_and_plays_the_melody_when_configured() {
        let alarm = Command::alarm("2026-01-02T07:30:00+02:00", Some("Up".into())).unwrap();
        let p = device(Some("alarm:d=4,o=5,b=140:c6,p")).publication(&alarm);
        assert_eq!(
            text(&p),
            (
                "awtrix_a1b2c3/notify",
                r#"{"text":"Up","hold":true,"wakeup":true,"rtttl":"alarm:d=4,o=5,b=140:c6,p"}"#
            )
        );
        let unlabelled = Command::alarm("2026-01-02T07:30:00Z", None).unwrap();
        let p = device(None).publication(&unlabelled);
        assert_eq!(
            text(&p),
            (
                "awtrix_a1b2c3/notify",
                r#"{"text":"Alarm","hold":true,"wakeup":true}"#
            )
        );
    }

    #[test]
    fn a_topic_is_levels_without_wildcards() {
        assert!(AwtrixTopic::parse("awtrix_a1b2c3").is_ok());
        assert!(AwtrixTopic::parse("home/awtrix/kitchen").is_ok());
        assert_eq!(AwtrixTopic::parse(""), Err(AwtrixTopicError::Empty));
        assert_eq!(AwtrixTopic::parse("a/+/b"), Err(AwtrixTopicError::Wildcard));
        assert_eq!(AwtrixTopic::parse("a/#"), Err(AwtrixTopicError::Wildcard));
        for bad in ["/a", "a/", "a//b"] {
            assert_eq!(
                AwtrixTopic::parse(bad),
                Err(AwtrixTopicError::EmptyLevel),
                "{bad}"
            );
        }
        assert_eq!(
            AwtrixTopic::parse("$SYS/x"),
            Err(AwtrixTopicError::Reserved)
        );
        assert_eq!(
            AwtrixTopic::parse("a\u{0}b"),
            Err(AwtrixTopicError::Control)
        );
    }
}
