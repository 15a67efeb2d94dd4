//! Device acknowledgements (SPEC 7.4): the subscription's topic filter and the parsing of
//! one acknowledgement. Applying it to a record is the store's job; here an ack is only
//! checked for shape: `<prefix>/<deviceId>/ack` carrying exactly
//! `{"commandId":"…","status":"succeeded"|"failed","reason":"…"}` (`reason` optional, at
//! most 256 characters). Anything else is refused with a reason the caller counts; it is
//! never an error of the server.

use crate::domain::DeviceId;
pub use crate::domain::ack::ack_topic;
use crate::domain::ack::{ACK_LEVEL, AckBody, FAILED, MAX_REASON_CHARS, SUCCEEDED};
use crate::store::FinalOutcome;

/// The filter the server subscribes to: `<prefix>/+/ack`, shared among replicas as
/// `$share/<group>/<prefix>/+/ack` when `MQTT_SHARED_GROUP` is set.
pub fn ack_filter(prefix: &str, shared_group: Option<&str>) -> String {
    let filter = join(prefix, &["+", ACK_LEVEL]);
    match shared_group {
        Some(group) => format!("$share/{group}/{filter}"),
        None => filter,
    }
}

fn join(prefix: &str, levels: &[&str]) -> String {
    let mut topic = String::with_capacity(prefix.len() + 80);
    if !prefix.is_empty() {
        topic.push_str(prefix);
        topic.push('/');
    }
    topic.push_str(&levels.join("/"));
    topic
}

/// A well-formed acknowledgement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    pub device_id: String,
    pub command_id: String,
    pub outcome: FinalOutcome,
    pub reason: Option<String>,
}

/// Why an acknowledgement was ignored before it reached the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    /// Not `<prefix>/<deviceId>/ack` with a valid device id.
    Topic,
    /// Not exactly the JSON shape (unknown fields, wrong types, trailing data, ...).
    Body,
    /// A `status` other than `succeeded` or `failed`.
    Status,
    /// A `reason` over 256 characters.
    Reason,
}

impl Malformed {
    /// For logs and metrics.
    pub const fn label(self) -> &'static str {
        match self {
            Self::Topic => "bad_topic",
            Self::Body => "bad_body",
            Self::Status => "bad_status",
            Self::Reason => "reason_too_long",
        }
    }
}

/// Checks one message received on the acknowledgement subscription.
pub fn parse(prefix: &str, topic: &str, payload: &[u8]) -> Result<Ack, Malformed> {
    let rest = if prefix.is_empty() {
        topic
    } else {
        topic
            .strip_prefix(prefix)
            .and_then(|r| r.strip_prefix('/'))
            .ok_or(Malformed::Topic)?
    };
    let device = rest
        .strip_suffix(ACK_LEVEL)
        .and_then(|r| r.strip_suffix('/'))
        .ok_or(Malformed::Topic)?;
    let device = DeviceId::parse(device).map_err(|_| Malformed::Topic)?;
    if device.as_str() != device_str_untrimmed(rest) {
        return Err(Malformed::Topic);
    }
    let body: AckBody = crate::shared::json_object(payload).map_err(|_| Malformed::Body)?;
    let outcome = match body.status.as_str() {
        SUCCEEDED => FinalOutcome::Succeeded,
        FAILED => FinalOutcome::Failed,
        _ => return Err(Malformed::Status),
    };
    if body
        .reason
        .as_ref()
        .is_some_and(|r| r.chars().count() > MAX_REASON_CHARS)
    {
        return Err(Malformed::Reason);
    }
    Ok(Ack {
        device_id: device.as_str().to_owned(),
        command_id: body.command_id,
        outcome,
        reason: body.reason,
    })
}

/// The device level exactly as in the topic (the device-id parser trims spaces, a topic
/// level must not have any).
fn device_str_untrimmed(rest: &str) -> &str {
    rest.strip_suffix(ACK_LEVEL)
        .and_then(|r| r.strip_suffix('/'))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_and_topics() {
        assert_eq!(ack_filter("clocks/commands", None), "clocks/commands/+/ack");
        assert_eq!(
            ack_filter("clocks/commands", Some("gw")),
            "$share/gw/clocks/commands/+/ack"
        );
        assert_eq!(ack_filter("", None), "+/ack");
        assert_eq!(ack_topic("p", "clock-1"), "p/clock-1/ack");
    }

    #[test]
    fn a_well_formed_ack_is_parsed() {
        let ack = parse(
            "p",
            "p/clock-1/ack",
            br#"{"commandId":"c1","status":"failed","reason":"display busy"}"#,
        )
        .unwrap();
        assert_eq!(ack.device_id, "clock-1");
        assert_eq!(ack.command_id, "c1");
        assert_eq!(ack.outcome, FinalOutcome::Failed);
        assert_eq!(ack.reason.as_deref(), Some("display busy"));
        let ack = parse(
            "",
            "clock-1/ack",
            br#"{"commandId":"c1","status":"succeeded"}"#,
        )
        .unwrap();
        assert_eq!(ack.outcome, FinalOutcome::Succeeded);
    }

    #[test]
    fn malformed_acks_are_refused_with_a_reason() {
        let ok = br#"{"commandId":"c1","status":"succeeded"}"#;
        for topic in [
            "q/clock-1/ack",
            "p/clock-1/nack",
            "p/a/b/ack",
            "p/ clock/ack",
            "p//ack",
        ] {
            assert_eq!(parse("p", topic, ok), Err(Malformed::Topic), "{topic}");
        }
        for body in [
            &b"not json"[..],
            br#"{"commandId":"c1"}"#,
            br#"{"commandId":"c1","status":"succeeded","extra":1}"#,
            br#"{"commandId":1,"status":"succeeded"}"#,
            br#"{"commandId":"c1","status":"succeeded"} trailing"#,
            // serde reads a struct from an array too; an ack is exactly the object.
            br#"["c1","succeeded"]"#,
            br#"["c1","failed","reason"]"#,
        ] {
            assert_eq!(parse("p", "p/c/ack", body), Err(Malformed::Body));
        }
        assert_eq!(
            parse("p", "p/c/ack", br#"{"commandId":"c1","status":"done"}"#),
            Err(Malformed::Status)
        );
        let long = format!(
            r#"{{"commandId":"c1","status":"failed","reason":"{}"}}"#,
            "r".repeat(257)
        );
        assert_eq!(
            parse("p", "p/c/ack", long.as_bytes()),
            Err(Malformed::Reason)
        );
    }
}
