//! The generic profile (SPEC 4): how a [`Command`] goes over the wire to a device with the
//! generic firmware — the MQTT payload, the REST body — and how such a device reads the
//! payload back (the virtual clock). One struct, [`Payload`], is all three.
//!
//! A device profile (SPEC 8) is one more module like this one.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use super::presence::{STATUS_LEVEL, status_filter};
use super::wire::{MqttForm, Publication};
use super::{Command, CommandType, DeviceId, Envelope, ValidationError};

/// The generic JSON object: the command's own fields, plus `commandId`, `deviceId` and
/// `type` in the MQTT payload. Absent fields are left out; keys are in alphabetical order,
/// as the first releases wrote them (byte for byte: see the tests). Unknown keys are
/// ignored when reading, as a device would.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Payload<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alarm_time: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command_id: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_id: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub level: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub r#type: Option<Cow<'a, str>>,
}

impl<'a> Payload<'a> {
    /// Just the command's own fields: the REST body of SPEC 4.2.
    pub fn fields(command: &'a Command) -> Self {
        match command {
            Command::SetAlarm { alarm_time, label } => Self {
                alarm_time: Some(Cow::Owned(Command::format_alarm_time(alarm_time))),
                label: Some(Cow::Borrowed(label)),
                ..Self::default()
            },
            Command::DisplayMessage {
                message,
                duration_seconds,
            } => Self {
                duration_seconds: Some(i64::from(*duration_seconds)),
                message: Some(Cow::Borrowed(message)),
                ..Self::default()
            },
            Command::SetBrightness { level } => Self {
                level: Some(i64::from(*level)),
                ..Self::default()
            },
        }
    }

    /// The MQTT payload of SPEC 4.1: the fields plus `commandId`, `deviceId` and `type`.
    pub fn of(envelope: &'a Envelope) -> Self {
        Self {
            command_id: Some(Cow::Borrowed(&envelope.command_id)),
            device_id: Some(Cow::Borrowed(envelope.device_id.as_str())),
            r#type: Some(Cow::Borrowed(envelope.command.command_type().as_str())),
            ..Self::fields(&envelope.command)
        }
    }

    /// The command these fields make for `command_type`, validated as the server does
    /// (except for the server's clock: an alarm in the past is still an alarm).
    pub fn command(self, command_type: CommandType) -> Result<Command, ValidationError> {
        match command_type {
            CommandType::SetAlarm => Command::alarm(
                self.alarm_time.as_deref().unwrap_or_default(),
                self.label.map(Cow::into_owned),
            ),
            CommandType::DisplayMessage => {
                Command::message(self.message.map(Cow::into_owned), self.duration_seconds)
            }
            CommandType::SetBrightness => Command::brightness(self.level),
        }
    }

    /// Serialised; strings and integers cannot fail to serialise.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(160);
        let _ = serde_json::to_writer(&mut bytes, self);
        bytes
    }
}

/// How a command goes out over MQTT to a generic device (SPEC 4.1): the payload of
/// [`Payload::of`] to [`command_topic`], with the request/response pair of a tracked
/// command (the device answers on `<prefix>/<deviceId>/ack`), retained as `MQTT_RETAINED`
/// says.
pub fn mqtt_form(prefix: &str, envelope: &Envelope) -> MqttForm {
    MqttForm {
        publications: vec![Publication {
            topic: command_topic(prefix, envelope),
            payload: envelope.mqtt_payload(),
        }],
        answers: true,
        may_retain: true,
    }
}

/// `<prefix>/<deviceId>/<type>` (no leading `/` when the prefix is empty), in one
/// allocation (two `format!`s took five: they grow their string as they go).
pub fn command_topic(prefix: &str, envelope: &Envelope) -> String {
    let parts = [
        prefix,
        envelope.device_id.as_str(),
        envelope.command.command_type().as_str(),
    ];
    let skip = usize::from(prefix.is_empty());
    parts[skip..].join("/")
}

/// The filter of every generic device's presence, listed in the devices file or not
/// (SPEC 11.1): `<prefix>/+/status`, `online` as its retained birth and `offline` as its
/// retained Last Will (the ESPHome and Tasmota convention). It never times out.
pub fn presence_filter(prefix: &str) -> String {
    status_filter(prefix)
}

/// The device whose status `topic` is (`<prefix>/<deviceId>/status`), with a valid id
/// exactly as written; `None` for any other topic.
pub fn status_device(prefix: &str, topic: &str) -> Option<DeviceId> {
    let rest = if prefix.is_empty() {
        topic
    } else {
        topic.strip_prefix(prefix)?.strip_prefix('/')?
    };
    let raw = rest.strip_suffix(STATUS_LEVEL)?.strip_suffix('/')?;
    let device = DeviceId::parse(raw).ok()?;
    (device.as_str() == raw).then_some(device)
}

impl Envelope {
    /// The generic MQTT payload (SPEC 4.1).
    pub fn mqtt_payload(&self) -> Vec<u8> {
        Payload::of(self).to_vec()
    }

    /// The generic REST body (SPEC 4.2): the command's own fields.
    pub fn rest_body(&self) -> Vec<u8> {
        Payload::fields(&self.command).to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::DeviceId;

    fn envelope(command: Command) -> Envelope {
        Envelope {
            command_id: "01970f3c-8a2b-7c4d-9e1f-0123456789ab".into(),
            request_id: "r1".into(),
            device_id: DeviceId::parse("clock_1-A").unwrap(),
            command,
            expires_at: None,
            profile: crate::domain::Profile::Generic,
        }
    }

    #[test]
    fn topics_are_prefix_device_and_type_without_a_leading_slash_for_an_empty_prefix() {
        let mut envelope = envelope(Command::brightness(Some(40)).unwrap());
        envelope.device_id = DeviceId::parse("clock-1").unwrap();
        assert_eq!(
            command_topic("clocks/commands", &envelope),
            "clocks/commands/clock-1/set_brightness"
        );
        assert_eq!(command_topic("", &envelope), "clock-1/set_brightness");
    }

    #[test]
    fn a_status_topic_names_its_device_exactly_and_nothing_else_does() {
        assert_eq!(
            status_device("p", "p/clock-1/status"),
            Some(DeviceId::parse("clock-1").unwrap())
        );
        assert_eq!(
            status_device("", "clock-1/status"),
            Some(DeviceId::parse("clock-1").unwrap())
        );
        for other in [
            "q/clock-1/status",
            "p/clock-1/status/x",
            "p/a/b/status",
            "p/ clock/status",
            "p//status",
        ] {
            assert_eq!(status_device("p", other), None, "{other}");
        }
    }

    #[test]
    fn payload_bytes_are_those_of_the_sorted_map() {
        let alarm = Command::alarm("2026-01-02T07:30:00+02:00", Some("wake \"up\"".into()));
        for command in [
            alarm.unwrap(),
            Command::alarm("2026-01-02T07:30:00Z", None).unwrap(),
            Command::message(Some("héllo\n<b>".into()), Some(3600)).unwrap(),
            Command::brightness(Some(0)).unwrap(),
        ] {
            let env = envelope(command);
            let mut map = serde_json::json!({
                "deviceId": env.device_id.as_str(),
                "type": env.command.command_type().as_str(),
                "commandId": env.command_id,
            });
            let fields: serde_json::Value = serde_json::from_slice(&env.rest_body()).unwrap();
            if let (Some(obj), serde_json::Value::Object(fields)) = (map.as_object_mut(), fields) {
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
        let mut env = envelope(Command::message(Some("hi".into()), Some(10)).unwrap());
        env.command_id = "c1".into();
        env.device_id = DeviceId::parse("clock-1").unwrap();
        let v: serde_json::Value = serde_json::from_slice(&env.mqtt_payload()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"deviceId":"clock-1","type":"display_message","message":"hi","durationSeconds":10,"commandId":"c1"})
        );
        let rest: serde_json::Value = serde_json::from_slice(&env.rest_body()).unwrap();
        assert_eq!(
            rest,
            serde_json::json!({"message":"hi","durationSeconds":10})
        );
    }

    #[test]
    fn what_is_sent_reads_back_as_the_same_command() {
        for command in [
            Command::alarm("2026-01-02T07:30:00+02:00", Some("w".into())).unwrap(),
            Command::message(Some("hi".into()), Some(10)).unwrap(),
            Command::brightness(Some(40)).unwrap(),
        ] {
            let bytes = envelope(command.clone()).mqtt_payload();
            let payload: Payload = serde_json::from_slice(&bytes).unwrap();
            let t = CommandType::from_wire(payload.r#type.as_deref().unwrap()).unwrap();
            assert_eq!(payload.command(t), Ok(command));
        }
    }
}
