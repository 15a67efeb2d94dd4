//! A device's acknowledgement of a command (SPEC 7.4), defined once: the topic level, the
//! payload's fields and limits. The server reads it (`transport::mqtt::acks`), the virtual
//! clock writes it (`clock::ack`).
//!
//! The payload is exactly `{"commandId":"…","status":"succeeded"}` or
//! `{"commandId":"…","status":"failed","reason":"…"}` (`reason` optional, at most 256
//! characters); any other shape is ignored by the server.

use serde::{Deserialize, Serialize};

/// The last topic level of an acknowledgement: `<prefix>/<deviceId>/ack`.
pub const ACK_LEVEL: &str = "ack";
/// Longest `reason` the server accepts.
pub const MAX_REASON_CHARS: usize = 256;
/// `status` of a command the device carried out.
pub const SUCCEEDED: &str = "succeeded";
/// `status` of a command the device could not carry out.
pub const FAILED: &str = "failed";

/// The acknowledgement payload, both ways: only these fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AckBody {
    pub command_id: String,
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The topic a device answers on: `<prefix>/<deviceId>/ack` (also the MQTT 5 Response
/// Topic the server puts on every tracked publish).
pub fn ack_topic(prefix: &str, device_id: &str) -> String {
    if prefix.is_empty() {
        format!("{device_id}/{ACK_LEVEL}")
    } else {
        format!("{prefix}/{device_id}/{ACK_LEVEL}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_round_trips_and_refuses_other_fields() {
        let body = AckBody {
            command_id: "c1".into(),
            status: SUCCEEDED.into(),
            reason: None,
        };
        let bytes = serde_json::to_vec(&body).unwrap();
        assert_eq!(bytes, br#"{"commandId":"c1","status":"succeeded"}"#);
        assert_eq!(serde_json::from_slice::<AckBody>(&bytes).unwrap(), body);
        assert!(
            serde_json::from_slice::<AckBody>(br#"{"commandId":"c","status":"failed","x":1}"#)
                .is_err()
        );
        assert_eq!(ack_topic("p", "d"), "p/d/ack");
        assert_eq!(ack_topic("", "d"), "d/ack");
    }
}
