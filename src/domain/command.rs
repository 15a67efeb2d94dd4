//! The three commands, each defined once: its type and routes, its fields and limits, its
//! validation, and the request body that the API reads and `clockctl` writes.
//!
//! What goes over the wire to a device is a *profile's* mapping of a [`Command`]:
//! [`super::generic`] is the one of SPEC 4; a device profile (SPEC 8) is one more module
//! beside it, not a new copy of the commands.
//!
//! JSON field names come from the field identifiers (`#[serde(rename_all = "camelCase")]`);
//! the constants in [`field`] are the same names for text (error details, the virtual
//! clock's lines), and a test keeps both in step.

use std::ops::RangeInclusive;

use chrono::{DateTime, FixedOffset, SecondsFormat, Utc};
use http::Method;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::DeviceId;

/// The JSON field names, for text that names a field.
pub mod field {
    pub const DEVICE_ID: &str = "deviceId";
    pub const ALARM_TIME: &str = "alarmTime";
    pub const LABEL: &str = "label";
    pub const MESSAGE: &str = "message";
    pub const DURATION_SECONDS: &str = "durationSeconds";
    pub const LEVEL: &str = "level";
    pub const TTL_SECONDS: &str = "ttlSeconds";
}

/// How long a message may be shown, in seconds.
pub const DURATION_SECONDS: RangeInclusive<u16> = 1..=3600;
/// Display brightness.
pub const LEVEL: RangeInclusive<u8> = 0..=100;
/// A command's time to live, in seconds (SPEC 7.2).
pub const TTL_SECONDS: RangeInclusive<u32> = 1..=604_800;
/// The longest alarm `label`, in characters (SPEC 10, bounded records).
pub const MAX_LABEL_CHARS: usize = 256;
/// How far in the past an alarm time may lie (clock skew between caller and server).
pub const ALARM_PAST_TOLERANCE_SECS: i64 = 60;

/// The kind of a command, and everything about it that does not depend on its values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CommandType {
    SetAlarm,
    DisplayMessage,
    SetBrightness,
}

impl CommandType {
    /// Every command type, in the order of the SPEC.
    pub const ALL: [Self; 3] = [Self::SetAlarm, Self::DisplayMessage, Self::SetBrightness];

    /// The wire name (MQTT topic suffix and payload `type`, SPEC 4).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::SetAlarm => "set_alarm",
            Self::DisplayMessage => "display_message",
            Self::SetBrightness => "set_brightness",
        }
    }

    /// The command type of a wire name.
    pub fn from_wire(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == name)
    }

    /// The API route (SPEC 2): method and path.
    pub const fn api_route(self) -> (Method, &'static str) {
        match self {
            Self::SetAlarm => (Method::POST, "/commands/alarms"),
            Self::DisplayMessage => (Method::POST, "/commands/messages"),
            Self::SetBrightness => (Method::PUT, "/commands/brightness"),
        }
    }

    /// The API path, when `path` is one of them (for the metrics' route label).
    pub fn api_path(path: &str) -> Option<&'static str> {
        Self::ALL
            .into_iter()
            .map(|t| t.api_route().1)
            .find(|p| *p == path)
    }

    /// `result` of the 202 body.
    pub const fn accepted_result(self) -> &'static str {
        match self {
            Self::SetAlarm => "scheduled",
            Self::DisplayMessage => "sent",
            Self::SetBrightness => "updated",
        }
    }

    /// What `clockctl` prints when the server accepted the command (SPEC 5).
    pub const fn dispatched_line(self) -> &'static str {
        match self {
            Self::SetAlarm => "alarm command dispatched",
            Self::DisplayMessage => "display-message command dispatched",
            Self::SetBrightness => "brightness command dispatched",
        }
    }

    /// The downstream REST route (SPEC 4.2): method and last path segment after
    /// `/clocks/<deviceId>/`.
    pub fn rest_route(self) -> (Method, &'static str) {
        match self {
            Self::SetAlarm => (Method::POST, "alarms"),
            Self::DisplayMessage => (Method::POST, "messages"),
            Self::SetBrightness => (Method::PUT, "brightness"),
        }
    }
}

/// A validated command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    SetAlarm {
        alarm_time: DateTime<FixedOffset>,
        label: String,
    },
    DisplayMessage {
        message: String,
        duration_seconds: u16,
    },
    SetBrightness {
        level: u8,
    },
}

/// Why a command is invalid; the text is the `detail` of SPEC 2.1 step 10 (an alarm time
/// that does not parse has its own `error` text there).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    #[error("{} must be RFC3339", field::ALARM_TIME)]
    AlarmTimeNotRfc3339,
    #[error("{} must not be more than one minute in the past", field::ALARM_TIME)]
    AlarmTimeInThePast,
    #[error("{} must be at most {MAX_LABEL_CHARS} characters", field::LABEL)]
    LabelTooLong,
    /// The device's firmware would drop the command for its size (SPEC 8.1).
    #[error(
        "{field} is too long for this AWTRIX clock: its notification would exceed the firmware's limit of {limit} bytes"
    )]
    NotifyTooLarge { field: &'static str, limit: usize },
    #[error("{} must not be blank", field::MESSAGE)]
    MessageBlank,
    #[error(
        "{} must be an integer between {} and {}",
        field::DURATION_SECONDS,
        DURATION_SECONDS.start(),
        DURATION_SECONDS.end()
    )]
    DurationOutOfRange,
    #[error(
        "{} must be an integer between {} and {}",
        field::LEVEL,
        LEVEL.start(),
        LEVEL.end()
    )]
    LevelOutOfRange,
    #[error(
        "{} must be an integer between {} and {}",
        field::TTL_SECONDS,
        TTL_SECONDS.start(),
        TTL_SECONDS.end()
    )]
    TtlOutOfRange,
}

impl Command {
    /// An alarm at `alarm_time` (RFC 3339, surrounding spaces ignored) with a `label` of at
    /// most [`MAX_LABEL_CHARS`]. Whether it lies in
    /// the past is the server's own check ([`Command::not_in_the_past`]).
    pub fn alarm(alarm_time: &str, label: Option<String>) -> Result<Self, ValidationError> {
        let alarm_time = DateTime::parse_from_rfc3339(alarm_time.trim())
            .map_err(|_| ValidationError::AlarmTimeNotRfc3339)?;
        let label = label.unwrap_or_default();
        if label.chars().count() > MAX_LABEL_CHARS {
            return Err(ValidationError::LabelTooLong);
        }
        Ok(Self::SetAlarm { alarm_time, label })
    }

    /// A message that is not blank, shown for [`DURATION_SECONDS`].
    pub fn message(
        message: Option<String>,
        duration_seconds: Option<i64>,
    ) -> Result<Self, ValidationError> {
        let message = message.unwrap_or_default();
        if message.trim().is_empty() {
            return Err(ValidationError::MessageBlank);
        }
        let duration_seconds = duration_seconds
            .and_then(|d| u16::try_from(d).ok())
            .filter(|d| DURATION_SECONDS.contains(d))
            .ok_or(ValidationError::DurationOutOfRange)?;
        Ok(Self::DisplayMessage {
            message,
            duration_seconds,
        })
    }

    /// A brightness [`LEVEL`].
    pub fn brightness(level: Option<i64>) -> Result<Self, ValidationError> {
        let level = level
            .and_then(|l| u8::try_from(l).ok())
            .filter(|l| LEVEL.contains(l))
            .ok_or(ValidationError::LevelOutOfRange)?;
        Ok(Self::SetBrightness { level })
    }

    /// The server's check at `now`: an alarm not more than a minute in the past.
    pub fn not_in_the_past(self, now: DateTime<Utc>) -> Result<Self, ValidationError> {
        match &self {
            Self::SetAlarm { alarm_time, .. }
                if alarm_time.timestamp() < now.timestamp() - ALARM_PAST_TOLERANCE_SECS =>
            {
                Err(ValidationError::AlarmTimeInThePast)
            }
            _ => Ok(self),
        }
    }

    /// The instant an alarm goes off: its `alarmTime` (an RFC 3339 instant; the offset
    /// only says how it was written). `None` for the other commands.
    pub fn alarm_instant(&self) -> Option<DateTime<Utc>> {
        match self {
            Self::SetAlarm { alarm_time, .. } => Some(alarm_time.to_utc()),
            _ => None,
        }
    }

    pub fn command_type(&self) -> CommandType {
        match self {
            Self::SetAlarm { .. } => CommandType::SetAlarm,
            Self::DisplayMessage { .. } => CommandType::DisplayMessage,
            Self::SetBrightness { .. } => CommandType::SetBrightness,
        }
    }

    /// The alarm time as delivered: RFC 3339, second precision, offset as given (`Z` for UTC).
    pub fn format_alarm_time(t: &DateTime<FixedOffset>) -> String {
        t.to_rfc3339_opts(SecondsFormat::Secs, true)
    }
}

/// The request body of one command (SPEC 2): what the API reads — only these fields, each
/// optional so that a missing one is a validation `detail`, not a decoding error — and what
/// `clockctl` sends.
pub trait CommandRequest: Serialize + DeserializeOwned + Send + 'static {
    const TYPE: CommandType;

    /// The raw `deviceId` (empty when absent); checked by [`DeviceId::parse`].
    fn device_id(&self) -> &str;

    /// The command, validated without a clock (see [`Command::not_in_the_past`]).
    fn into_command(self) -> Result<Command, ValidationError>;

    /// The raw `ttlSeconds` (SPEC 7.2), when given.
    fn ttl_seconds(&self) -> Option<i64>;

    /// The command's own time to live: `None` when the body has none (the server's
    /// `COMMAND_TTL_SECS` applies), else [`TTL_SECONDS`] checked.
    fn ttl(&self) -> Result<Option<std::time::Duration>, ValidationError> {
        self.ttl_seconds()
            .map(|t| {
                u32::try_from(t)
                    .ok()
                    .filter(|t| TTL_SECONDS.contains(t))
                    .map(|t| std::time::Duration::from_secs(u64::from(t)))
                    .ok_or(ValidationError::TtlOutOfRange)
            })
            .transpose()
    }
}

/// `POST /commands/alarms`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AlarmRequest {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alarm_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<i64>,
}

/// `POST /commands/messages`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MessageRequest {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<i64>,
}

/// `PUT /commands/brightness`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BrightnessRequest {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub level: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<i64>,
}

impl CommandRequest for AlarmRequest {
    const TYPE: CommandType = CommandType::SetAlarm;
    fn device_id(&self) -> &str {
        self.device_id.as_deref().unwrap_or_default()
    }
    fn into_command(self) -> Result<Command, ValidationError> {
        Command::alarm(self.alarm_time.as_deref().unwrap_or_default(), self.label)
    }
    fn ttl_seconds(&self) -> Option<i64> {
        self.ttl_seconds
    }
}

impl CommandRequest for MessageRequest {
    const TYPE: CommandType = CommandType::DisplayMessage;
    fn device_id(&self) -> &str {
        self.device_id.as_deref().unwrap_or_default()
    }
    fn into_command(self) -> Result<Command, ValidationError> {
        Command::message(self.message, self.duration_seconds)
    }
    fn ttl_seconds(&self) -> Option<i64> {
        self.ttl_seconds
    }
}

impl CommandRequest for BrightnessRequest {
    const TYPE: CommandType = CommandType::SetBrightness;
    fn device_id(&self) -> &str {
        self.device_id.as_deref().unwrap_or_default()
    }
    fn into_command(self) -> Result<Command, ValidationError> {
        Command::brightness(self.level)
    }
    fn ttl_seconds(&self) -> Option<i64> {
        self.ttl_seconds
    }
}

/// A validated command addressed to one device, with the ids that trace it end to end.
#[derive(Debug, Clone)]
pub struct Envelope {
    pub command_id: String,
    pub request_id: String,
    pub device_id: DeviceId,
    pub command: Command,
    /// When the command expires, for a tracked command (SPEC 7.2): MQTT 5 then carries the
    /// Message Expiry Interval, Response Topic and Correlation Data. `None` with
    /// `STATE_STORE=none`.
    pub expires_at: Option<DateTime<Utc>>,
    /// The device's profile (SPEC 8): which wire form the transports use.
    pub profile: super::Profile,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-01-01T12:00:00Z")
            .unwrap()
            .to_utc()
    }

    fn alarm(at: &str) -> Result<Command, ValidationError> {
        Command::alarm(at, None).and_then(|c| c.not_in_the_past(now()))
    }

    #[test]
    fn alarm_time_must_be_rfc3339_and_not_stale() {
        assert_eq!(alarm("tomorrow"), Err(ValidationError::AlarmTimeNotRfc3339));
        assert!(alarm("2026-01-01T11:59:00Z").is_ok());
        assert_eq!(
            alarm("2026-01-01T11:58:59Z"),
            Err(ValidationError::AlarmTimeInThePast)
        );
    }

    #[test]
    fn alarm_time_keeps_its_offset_at_second_precision() {
        let c = Command::alarm("2026-01-02T07:30:00.123+02:00", Some("wake".into())).unwrap();
        let Command::SetAlarm { alarm_time, label } = c else {
            panic!()
        };
        assert_eq!(
            Command::format_alarm_time(&alarm_time),
            "2026-01-02T07:30:00+02:00"
        );
        assert_eq!(label, "wake");
        let c = Command::alarm("2026-01-02T07:30:00+00:00", None).unwrap();
        let Command::SetAlarm { alarm_time, .. } = c else {
            panic!()
        };
        assert_eq!(
            Command::format_alarm_time(&alarm_time),
            "2026-01-02T07:30:00Z"
        );
    }

    #[test]
    fn a_label_is_at_most_256_characters_not_bytes() {
        let label = |s: String| Command::alarm("2030-01-01T07:00:00Z", Some(s));
        assert!(label("ł".repeat(256)).is_ok(), "512 bytes, 256 characters");
        assert_eq!(label("x".repeat(257)), Err(ValidationError::LabelTooLong));
        assert_eq!(
            ValidationError::LabelTooLong.to_string(),
            "label must be at most 256 characters"
        );
    }

    #[test]
    fn message_and_brightness_ranges() {
        assert!(Command::message(Some("  ".into()), Some(5)).is_err());
        assert!(Command::message(Some("hi".into()), Some(0)).is_err());
        assert!(Command::message(Some("hi".into()), Some(3601)).is_err());
        assert!(Command::message(Some("hi".into()), Some(i64::from(u16::MAX) + 1)).is_err());
        assert!(Command::message(Some("hi".into()), None).is_err());
        assert!(Command::message(Some("hi".into()), Some(3600)).is_ok());
        assert!(Command::brightness(Some(-1)).is_err());
        assert!(Command::brightness(Some(101)).is_err());
        assert!(Command::brightness(Some(256)).is_err());
        assert!(Command::brightness(None).is_err());
        assert_eq!(
            Command::brightness(Some(0)),
            Ok(Command::SetBrightness { level: 0 })
        );
    }

    #[test]
    fn validation_details_are_the_specs() {
        assert_eq!(
            ValidationError::DurationOutOfRange.to_string(),
            "durationSeconds must be an integer between 1 and 3600"
        );
        assert_eq!(
            ValidationError::LevelOutOfRange.to_string(),
            "level must be an integer between 0 and 100"
        );
        assert_eq!(
            ValidationError::AlarmTimeNotRfc3339.to_string(),
            "alarmTime must be RFC3339"
        );
    }

    #[test]
    fn the_field_constants_are_the_serde_names() {
        let names = |v: serde_json::Value| -> Vec<String> {
            v.as_object().unwrap().keys().cloned().collect()
        };
        let alarm = AlarmRequest {
            device_id: Some(String::new()),
            alarm_time: Some(String::new()),
            label: Some(String::new()),
            ttl_seconds: Some(1),
        };
        let message = MessageRequest {
            device_id: Some(String::new()),
            message: Some(String::new()),
            duration_seconds: Some(1),
            ttl_seconds: None,
        };
        let brightness = BrightnessRequest {
            device_id: Some(String::new()),
            level: Some(1),
            ttl_seconds: None,
        };
        let mut all = names(serde_json::to_value(alarm).unwrap());
        all.extend(names(serde_json::to_value(message).unwrap()));
        all.extend(names(serde_json::to_value(brightness).unwrap()));
        all.sort();
        all.dedup();
        let mut consts = vec![
            field::DEVICE_ID,
            field::ALARM_TIME,
            field::LABEL,
            field::MESSAGE,
            field::DURATION_SECONDS,
            field::LEVEL,
            field::TTL_SECONDS,
        ];
        consts.sort_unstable();
        assert_eq!(all, consts);
    }

    #[test]
    fn every_type_has_its_own_wire_name_and_routes() {
        for t in CommandType::ALL {
            assert_eq!(CommandType::from_wire(t.as_str()), Some(t));
            assert_eq!(
                CommandType::api_path(t.api_route().1),
                Some(t.api_route().1)
            );
        }
        assert_eq!(CommandType::from_wire("reboot"), None);
    }
}
