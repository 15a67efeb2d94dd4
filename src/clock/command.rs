//! What a clock receives: the MQTT topic and JSON payload of SPEC 4.1, read the way a device
//! would (validated, nothing assumed), and the one plain line printed per command.

use std::fmt::Write as _;

use std::borrow::Cow;

use chrono::{DateTime, FixedOffset, SecondsFormat};

use super::shown::Shown;
use crate::domain::generic::Payload;
use crate::domain::{Command, CommandType, DeviceId, field};

/// One command as a clock received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// The device level of the topic (`<prefix>/<device>/<type>`).
    pub device_id: String,
    /// What to do, or why the command cannot be shown.
    pub action: Action,
    /// `commandId` from the payload, when present (traces the command to the audit log).
    pub command_id: Option<String>,
    /// The broker delivered a retained message (sent before this clock subscribed).
    pub retained: bool,
}

/// A valid command, or what a device does with anything else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// One of the commands of SPEC 4.1, validated as the server validates it.
    Command(Command),
    /// What an AWTRIX 3 clock does with a valid delivery (SPEC 8.1).
    Awtrix(Shown),
    /// A payload a device would reject; `kind` is the type it claimed (or the topic's).
    Invalid { kind: String, reason: String },
}

impl Action {
    /// The wire name shown first on the plain line.
    pub fn name(&self) -> &str {
        match self {
            Self::Command(c) => c.command_type().as_str(),
            Self::Awtrix(shown) => shown.name(),
            Self::Invalid { .. } => "invalid_command",
        }
    }
}

/// Reads one delivery on `topic` with the generic profile ([`Payload`]). `None` when the
/// topic is not `<prefix>/<device>/<type>` (the subscription filters make that impossible
/// unless a broker misbehaves).
pub fn parse(prefix: &str, topic: &str, payload: &[u8], retained: bool) -> Option<Received> {
    let rest = topic.strip_prefix(prefix)?.strip_prefix('/')?;
    let (device, topic_type) = rest.split_once('/')?;
    if device.is_empty() || topic_type.is_empty() || topic_type.contains('/') {
        return None;
    }
    let (action, command_id) = match crate::shared::json_object::<Payload>(payload) {
        Ok(fields) => {
            let command_id = fields.command_id.clone().map(Cow::into_owned);
            (action(device, topic_type, fields), command_id)
        }
        // A payload that does not fit may still name its command, so it can be answered.
        Err(e) => (
            invalid(topic_type, unreadable(payload, &e)),
            serde_json::from_slice::<serde_json::Value>(payload)
                .ok()
                .and_then(|v| v.get("commandId")?.as_str().map(str::to_owned)),
        ),
    };
    Some(Received {
        device_id: device.to_owned(),
        action,
        command_id,
        retained,
    })
}

/// Why a payload could not be read at all.
pub(super) fn unreadable(payload: &[u8], e: &serde_json::Error) -> String {
    let object = payload.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    match e.classify() {
        serde_json::error::Category::Data if object => format!("the payload does not fit: {e}"),
        serde_json::error::Category::Data => "the payload is not a JSON object".to_owned(),
        _ => format!("the payload is not JSON: {e}"),
    }
}

fn invalid(kind: &str, reason: String) -> Action {
    Action::Invalid {
        kind: kind.to_owned(),
        reason,
    }
}

fn action(device: &str, topic_type: &str, fields: Payload<'_>) -> Action {
    let kind = match fields.r#type.as_deref() {
        None => topic_type.to_owned(),
        Some(t) if t == topic_type => t.to_owned(),
        Some(t) => {
            return invalid(
                t,
                format!("type {t:?} does not match the topic's {topic_type:?}"),
            );
        }
    };
    if let Some(d) = fields.device_id.as_deref().filter(|d| *d != device) {
        return invalid(
            &kind,
            format!(
                "{} {d:?} does not match the topic's {device:?}",
                field::DEVICE_ID
            ),
        );
    }
    let Some(command_type) = CommandType::from_wire(&kind) else {
        return invalid(&kind, format!("unknown type {kind:?}"));
    };
    match fields.command(command_type) {
        Ok(command) => Action::Command(command),
        Err(e) => invalid(&kind, e.to_string()),
    }
}

/// The alarm time as the server sends it: RFC 3339, offset as given, `Z` for UTC.
pub fn format_alarm_time(t: &DateTime<FixedOffset>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// A token printed bare when it is a plain word, quoted and escaped otherwise, so that a
/// hostile device id or command id can neither split the line nor drive the terminal.
fn word(s: &str) -> String {
    if DeviceId::parse(s).is_ok_and(|d| d.as_str() == s) {
        s.to_owned()
    } else {
        format!("{s:?}")
    }
}

impl Received {
    /// The stable, greppable line for scripts, e.g.
    /// `clock-1 display_message message="hello" durationSeconds=10 commandId=0199...`.
    /// Text fields are quoted with control characters escaped.
    pub fn plain_line(&self) -> String {
        let mut line = format!("{} {}", word(&self.device_id), self.action.name());
        // Writing to a String cannot fail.
        let _ = match &self.action {
            Action::Command(Command::SetAlarm { alarm_time, label }) => write!(
                line,
                " {}={} {}={label:?}",
                field::ALARM_TIME,
                format_alarm_time(alarm_time),
                field::LABEL,
            ),
            Action::Command(Command::DisplayMessage {
                message,
                duration_seconds,
            }) => write!(
                line,
                " {}={message:?} {}={duration_seconds}",
                field::MESSAGE,
                field::DURATION_SECONDS,
            ),
            Action::Command(Command::SetBrightness { level }) => {
                write!(line, " {}={level}", field::LEVEL)
            }
            Action::Awtrix(shown) => {
                shown.write_fields(&mut line);
                Ok(())
            }
            Action::Invalid { kind, reason } => {
                write!(line, " type={kind:?} error={reason:?}")
            }
        };
        if let Some(id) = &self.command_id {
            let _ = write!(line, " commandId={}", word(id));
        }
        if self.retained {
            line.push_str(" retained=true");
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn received(topic: &str, payload: &str) -> Received {
        parse("clocks/commands", topic, payload.as_bytes(), false).unwrap()
    }

    #[test]
    fn the_three_payloads_of_the_spec_become_one_plain_line_each() {
        let alarm = received(
            "clocks/commands/clock-1/set_alarm",
            r#"{"deviceId":"clock-1","type":"set_alarm","alarmTime":"2030-01-01T07:00:00+01:00","label":"wake up","commandId":"0199-a"}"#,
        );
        assert_eq!(
            alarm.plain_line(),
            r#"clock-1 set_alarm alarmTime=2030-01-01T07:00:00+01:00 label="wake up" commandId=0199-a"#
        );
        let message = received(
            "clocks/commands/clock-1/display_message",
            r#"{"deviceId":"clock-1","type":"display_message","message":"hello \"you\"","durationSeconds":10,"commandId":"c2"}"#,
        );
        assert_eq!(
            message.plain_line(),
            r#"clock-1 display_message message="hello \"you\"" durationSeconds=10 commandId=c2"#
        );
        let brightness = received(
            "clocks/commands/clock-1/set_brightness",
            r#"{"deviceId":"clock-1","type":"set_brightness","level":40}"#,
        );
        assert_eq!(brightness.plain_line(), "clock-1 set_brightness level=40");
    }

    #[test]
    fn a_prefix_with_several_levels_is_stripped_whole() {
        let r = parse(
            "site/a/clocks",
            "site/a/clocks/k/set_brightness",
            br#"{"level":0}"#,
            true,
        )
        .unwrap();
        assert_eq!(r.plain_line(), "k set_brightness level=0 retained=true");
        assert!(parse("site/a/clocks", "site/b/clocks/k/x", b"{}", false).is_none());
        assert!(parse("p", "p/k/x/y", b"{}", false).is_none());
    }

    #[test]
    fn payloads_a_device_would_reject_are_shown_as_invalid_with_the_reason() {
        for (topic_type, payload, reason) in [
            ("set_brightness", r#"{"level":101}"#, "level"),
            ("set_brightness", "not json", "not JSON"),
            ("set_brightness", "[1]", "not a JSON object"),
            (
                "display_message",
                r#"{"message":" ","durationSeconds":5}"#,
                "blank",
            ),
            (
                "display_message",
                r#"{"message":"m","durationSeconds":0}"#,
                "durationSeconds",
            ),
            ("set_alarm", r#"{"alarmTime":"tomorrow"}"#, "RFC3339"),
            ("reboot", r#"{"type":"reboot"}"#, "unknown type"),
            (
                "set_alarm",
                r#"{"type":"set_brightness","level":1}"#,
                "does not match",
            ),
            (
                "set_brightness",
                r#"{"deviceId":"other","level":1}"#,
                "does not match",
            ),
        ] {
            let r = received(&format!("clocks/commands/clock-1/{topic_type}"), payload);
            let line = r.plain_line();
            assert!(
                line.starts_with("clock-1 invalid_command type=") && line.contains(reason),
                "{payload}: {line}"
            );
        }
    }

    #[test]
    fn control_characters_cannot_reach_the_terminal_or_split_the_line() {
        let r = received(
            "clocks/commands/bad\u{1b}id/display_message",
            "{\"message\":\"a\\nb\\u001b[2J\",\"durationSeconds\":1,\"commandId\":\"x y\"}",
        );
        let line = r.plain_line();
        assert!(!line.contains('\n') && !line.contains('\u{1b}'), "{line}");
        assert!(
            line.starts_with("\"bad\\u{1b}id\" display_message"),
            "{line}"
        );
        assert!(line.ends_with("commandId=\"x y\""), "{line}");
    }
}
