//! Commands: a closed set of three, each valid by construction.

use chrono::{DateTime, FixedOffset, SecondsFormat, Utc};

use super::DeviceId;

/// The wire name of a command type (MQTT topic suffix and payload `type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CommandType {
    SetAlarm,
    DisplayMessage,
    SetBrightness,
}

impl CommandType {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::SetAlarm => "set_alarm",
            Self::DisplayMessage => "display_message",
            Self::SetBrightness => "set_brightness",
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

/// Why a command is invalid. `Rfc3339` has its own error text (SPEC 2.1 step 10).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    #[error("alarmTime must be RFC3339")]
    AlarmTimeNotRfc3339,
    #[error("{0}")]
    Invalid(&'static str),
}

/// How far in the past an alarm time may lie (clock skew between caller and server).
const ALARM_PAST_TOLERANCE_SECS: i64 = 60;

impl Command {
    /// An alarm at `alarm_time` (RFC 3339), not more than a minute before `now`.
    pub fn alarm(
        alarm_time: &str,
        label: Option<String>,
        now: DateTime<Utc>,
    ) -> Result<Self, ValidationError> {
        let alarm_time = DateTime::parse_from_rfc3339(alarm_time.trim())
            .map_err(|_| ValidationError::AlarmTimeNotRfc3339)?;
        if alarm_time.timestamp() < now.timestamp() - ALARM_PAST_TOLERANCE_SECS {
            return Err(ValidationError::Invalid(
                "alarmTime must not be more than one minute in the past",
            ));
        }
        Ok(Self::SetAlarm {
            alarm_time,
            label: label.unwrap_or_default(),
        })
    }

    /// A message shown for 1–3600 seconds.
    pub fn message(
        message: Option<String>,
        duration_seconds: Option<i64>,
    ) -> Result<Self, ValidationError> {
        let message = message.unwrap_or_default();
        if message.trim().is_empty() {
            return Err(ValidationError::Invalid("message must not be blank"));
        }
        let duration_seconds =
            duration_seconds
                .filter(|d| (1..=3600).contains(d))
                .ok_or(ValidationError::Invalid(
                    "durationSeconds must be an integer between 1 and 3600",
                ))?;
        Ok(Self::DisplayMessage {
            message,
            duration_seconds: duration_seconds as u16,
        })
    }

    /// A brightness level 0–100.
    pub fn brightness(level: Option<i64>) -> Result<Self, ValidationError> {
        let level = level
            .filter(|l| (0..=100).contains(l))
            .ok_or(ValidationError::Invalid(
                "level must be an integer between 0 and 100",
            ))?;
        Ok(Self::SetBrightness { level: level as u8 })
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

/// A validated command addressed to one device, with the ids that trace it end to end.
#[derive(Debug, Clone)]
pub struct Envelope {
    pub command_id: String,
    pub request_id: String,
    pub device_id: DeviceId,
    pub command: Command,
}

impl Envelope {
    /// The JSON payload of SPEC 4.1: the command's fields plus `commandId`, `deviceId` and
    /// `type`, keys in alphabetical order (as the first releases wrote them).
    pub fn mqtt_payload(&self) -> Vec<u8> {
        // Serialising strings and integers into a Vec cannot fail.
        serde_json::to_vec(&Payload::of(self)).unwrap_or_default()
    }

    /// Just the command's own fields, as in the REST bodies of SPEC 4.2.
    pub fn command_fields(&self) -> serde_json::Value {
        // Strings and integers always convert; `Null` is unreachable.
        serde_json::to_value(Fields::of(&self.command)).unwrap_or_default()
    }
}

/// A command's own fields, each present only for its command, in alphabetical order.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Fields<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    alarm_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    duration_seconds: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    label: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    level: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<&'a str>,
}

impl<'a> Fields<'a> {
    fn of(command: &'a Command) -> Self {
        let none = Self {
            alarm_time: None,
            duration_seconds: None,
            label: None,
            level: None,
            message: None,
        };
        match command {
            Command::SetAlarm { alarm_time, label } => Self {
                alarm_time: Some(Command::format_alarm_time(alarm_time)),
                label: Some(label),
                ..none
            },
            Command::DisplayMessage {
                message,
                duration_seconds,
            } => Self {
                duration_seconds: Some(*duration_seconds),
                message: Some(message),
                ..none
            },
            Command::SetBrightness { level } => Self {
                level: Some(*level),
                ..none
            },
        }
    }
}

/// The MQTT payload, serialised straight from borrowed fields (a `serde_json::Value`
/// map took about fifteen allocations): the command's [`Fields`] with `commandId`,
/// `deviceId` and `type` sorted in among them, absent ones skipped — byte for byte what
/// the sorted map gave (see the tests).
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Payload<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    alarm_time: Option<String>,
    command_id: &'a str,
    device_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    duration_seconds: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    label: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    level: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<&'a str>,
    #[serde(rename = "type")]
    command_type: &'static str,
}

impl<'a> Payload<'a> {
    fn of(envelope: &'a Envelope) -> Self {
        let fields = Fields::of(&envelope.command);
        Self {
            alarm_time: fields.alarm_time,
            command_id: &envelope.command_id,
            device_id: envelope.device_id.as_str(),
            duration_seconds: fields.duration_seconds,
            label: fields.label,
            level: fields.level,
            message: fields.message,
            command_type: envelope.command.command_type().as_str(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-01-01T12:00:00Z")
            .unwrap()
            .to_utc()
    }

    #[test]
    fn alarm_time_must_be_rfc3339_and_not_stale() {
        assert_eq!(
            Command::alarm("tomorrow", None, now()),
            Err(ValidationError::AlarmTimeNotRfc3339)
        );
        assert!(Command::alarm("2026-01-01T11:59:00Z", None, now()).is_ok());
        assert!(matches!(
            Command::alarm("2026-01-01T11:58:59Z", None, now()),
            Err(ValidationError::Invalid(_))
        ));
    }

    #[test]
    fn alarm_time_keeps_its_offset_at_second_precision() {
        let c =
            Command::alarm("2026-01-02T07:30:00.123+02:00", Some("wake".into()), now()).unwrap();
        let Command::SetAlarm { alarm_time, label } = c else {
            panic!()
        };
        assert_eq!(
            Command::format_alarm_time(&alarm_time),
            "2026-01-02T07:30:00+02:00"
        );
        assert_eq!(label, "wake");
        let c = Command::alarm("2026-01-02T07:30:00+00:00", None, now()).unwrap();
        let Command::SetAlarm { alarm_time, .. } = c else {
            panic!()
        };
        assert_eq!(
            Command::format_alarm_time(&alarm_time),
            "2026-01-02T07:30:00Z"
        );
    }

    #[test]
    fn message_and_brightness_ranges() {
        assert!(Command::message(Some("  ".into()), Some(5)).is_err());
        assert!(Command::message(Some("hi".into()), Some(0)).is_err());
        assert!(Command::message(Some("hi".into()), Some(3601)).is_err());
        assert!(Command::message(Some("hi".into()), None).is_err());
        assert!(Command::message(Some("hi".into()), Some(3600)).is_ok());
        assert!(Command::brightness(Some(-1)).is_err());
        assert!(Command::brightness(Some(101)).is_err());
        assert!(Command::brightness(None).is_err());
        assert_eq!(
            Command::brightness(Some(0)),
            Ok(Command::SetBrightness { level: 0 })
        );
    }

    #[test]
    fn payload_bytes_are_those_of_the_sorted_map() {
        let alarm = Command::alarm(
            "2026-01-02T07:30:00+02:00",
            Some("wake \"up\"".into()),
            now(),
        );
        for command in [
            alarm.unwrap(),
            Command::alarm("2026-01-02T07:30:00Z", None, now()).unwrap(),
            Command::message(Some("héllo\n<b>".into()), Some(3600)).unwrap(),
            Command::brightness(Some(0)).unwrap(),
        ] {
            let env = Envelope {
                command_id: "01970f3c-8a2b-7c4d-9e1f-0123456789ab".into(),
                request_id: "r1".into(),
                device_id: DeviceId::parse("clock_1-A").unwrap(),
                command,
            };
            let mut map = serde_json::json!({
                "deviceId": env.device_id.as_str(),
                "type": env.command.command_type().as_str(),
                "commandId": env.command_id,
            });
            if let (Some(obj), serde_json::Value::Object(fields)) =
                (map.as_object_mut(), env.command_fields())
            {
                obj.extend(fields);
            }
            assert_eq!(
                String::from_utf8(env.mqtt_payload()).unwrap(),
                map.to_string()
            );
        }
    }

    #[test]
    fn payload_has_the_spec_fields() {
        let env = Envelope {
            command_id: "c1".into(),
            request_id: "r1".into(),
            device_id: DeviceId::parse("clock-1").unwrap(),
            command: Command::message(Some("hi".into()), Some(10)).unwrap(),
        };
        let v: serde_json::Value = serde_json::from_slice(&env.mqtt_payload()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"deviceId":"clock-1","type":"display_message","message":"hi","durationSeconds":10,"commandId":"c1"})
        );
    }
}
