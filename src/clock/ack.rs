//! The virtual clock's acknowledgements (SPEC 7.4), the device side: what a clock publishes
//! for a command it showed or rejected, and where: only ever on its own
//! `<prefix>/<deviceId>/ack`, whatever MQTT 5 Response Topic the command carried.
//!
//! The shape itself is defined once, in [`crate::domain::ack`], which the server reads
//! with; a reason longer than the server accepts is cut to fit.

use super::command::{Action, Received};
pub use crate::domain::ack::{ACK_LEVEL, MAX_REASON_CHARS, ack_topic};
use crate::domain::ack::{AckBody, FAILED, SUCCEEDED};

/// One acknowledgement payload.
pub type Ack = AckBody;

impl Ack {
    /// The acknowledgement of what the clock made of `received`: `succeeded` for a command
    /// it shows, `failed` with the reason for one it rejects; `None` without a `commandId`
    /// (nothing to acknowledge), and for an AWTRIX clock (it never acknowledges).
    pub fn of(received: &Received) -> Option<Self> {
        let command_id = received.command_id.clone()?;
        Some(match &received.action {
            Action::Awtrix(_) => return None,
            Action::Command(_) => Self {
                command_id,
                status: SUCCEEDED.to_owned(),
                reason: None,
            },
            Action::Invalid { reason, .. } => Self {
                command_id,
                status: FAILED.to_owned(),
                reason: Some(reason.chars().take(MAX_REASON_CHARS).collect()),
            },
        })
    }

    /// The JSON bytes (strings only: serialising cannot fail).
    pub fn to_vec(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// Whether `topic` is an acknowledgement under `prefix` (a device's answer, not a command:
/// the watch subscription `<prefix>/+/+` receives those too).
pub fn is_ack_topic(prefix: &str, topic: &str) -> bool {
    topic
        .strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('/'))
        .and_then(|rest| rest.rsplit_once('/'))
        .is_some_and(|(_, last)| last == ACK_LEVEL)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::command::parse;

    fn ack(topic_type: &str, payload: &str) -> Option<String> {
        let received = parse(
            "p",
            &format!("p/clock-1/{topic_type}"),
            payload.as_bytes(),
            false,
        )
        .unwrap();
        Ack::of(&received).map(|a| String::from_utf8(a.to_vec()).unwrap())
    }

    #[test]
    fn a_valid_command_is_acknowledged_as_succeeded_in_exactly_the_spec_shape() {
        assert_eq!(
            ack("set_brightness", r#"{"level":4,"commandId":"c1"}"#).unwrap(),
            r#"{"commandId":"c1","status":"succeeded"}"#
        );
    }

    #[test]
    fn a_rejected_command_is_acknowledged_as_failed_with_a_reason_of_at_most_256_chars() {
        assert_eq!(
            ack("set_brightness", r#"{"level":101,"commandId":"c2"}"#).unwrap(),
            r#"{"commandId":"c2","status":"failed","reason":"level must be an integer between 0 and 100"}"#
        );
        // A payload that does not fit the command still names its commandId.
        let wrong_type = ack("set_brightness", r#"{"level":"high","commandId":"c3"}"#).unwrap();
        let v: serde_json::Value = serde_json::from_str(&wrong_type).unwrap();
        assert_eq!(v["commandId"], "c3");
        assert_eq!(v["status"], "failed");
        let long = format!(r#"{{"type":"{}","commandId":"c4"}}"#, "é".repeat(400));
        let v: serde_json::Value = serde_json::from_str(&ack("set_alarm", &long).unwrap()).unwrap();
        assert_eq!(
            v["reason"].as_str().unwrap().chars().count(),
            MAX_REASON_CHARS
        );
        assert_eq!(v.as_object().unwrap().len(), 3);
    }

    #[test]
    fn without_a_command_id_there_is_nothing_to_acknowledge() {
        assert_eq!(ack("set_brightness", r#"{"level":4}"#), None);
        assert_eq!(ack("set_brightness", "not json"), None);
    }

    #[test]
    fn acknowledgement_topics_are_recognised_and_built() {
        assert_eq!(ack_topic("p/q", "clock-1"), "p/q/clock-1/ack");
        assert!(is_ack_topic("p/q", "p/q/clock-1/ack"));
        assert!(!is_ack_topic("p/q", "p/q/clock-1/set_alarm"));
        assert!(!is_ack_topic("p/q", "other/clock-1/ack"));
    }
}
