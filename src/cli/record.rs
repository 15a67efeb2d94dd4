//! A tracked command's status record as `clockctl` reads it (SPEC 7.3): which statuses are
//! final, the one-line outcome of `--wait`, and the readable form of `clockctl status`.
//! Pure; every text that came from the server goes through [`crate::terminal`].

use serde::Deserialize;

use crate::terminal;

/// The statuses after which a command never changes (SPEC 7.3).
pub const FINAL_STATUSES: [&str; 4] = ["succeeded", "failed", "expired", "cancelled"];

/// Whether `status` is one of [`FINAL_STATUSES`].
pub fn is_final(status: &str) -> bool {
    FINAL_STATUSES.contains(&status)
}

/// The fields of a status record that `clockctl` shows; anything else is ignored (the
/// `--json` output is the server's body, not this).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    pub command_id: Option<String>,
    pub device_id: Option<String>,
    pub r#type: Option<String>,
    pub principal: Option<String>,
    pub status: String,
    pub created_at: Option<String>,
    pub sent_at: Option<String>,
    pub completed_at: Option<String>,
    pub expires_at: Option<String>,
    pub device_acks: Option<bool>,
    pub status_reason: Option<StatusReason>,
}

/// `statusReason`: why a command failed (the device's words, or `dispatch_failed`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct StatusReason {
    pub code: Option<String>,
    pub message: Option<String>,
}

/// The part of a 202 body that `--wait` needs (SPEC 7.2). Without a store the server sends
/// neither `status` nor `expiresAt`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Accepted {
    pub command_id: Option<String>,
    pub status: Option<String>,
}

impl Record {
    /// Reads a 200 body; `None` when it is not a record (no `status`).
    pub fn parse(text: &str) -> Option<Self> {
        serde_json::from_str(text).ok()
    }

    /// Whether the command has ended.
    pub fn is_final(&self) -> bool {
        is_final(&self.status)
    }

    /// Whether nothing more will happen to it: final, or `sent` to a device that never
    /// acknowledges (SPEC 11.4); `queued` and `scheduled` are still on their way.
    pub fn is_settled(&self) -> bool {
        self.is_final() || self.sent_without_acks()
    }

    /// `sent` to a device whose `deviceAcks` is false: as far as it goes.
    pub fn sent_without_acks(&self) -> bool {
        self.status == "sent" && self.device_acks == Some(false)
    }

    /// What `--wait` exits 0 for: `succeeded`, or [`Record::sent_without_acks`].
    pub fn is_success(&self) -> bool {
        self.status == "succeeded" || self.sent_without_acks()
    }

    /// `succeeded`, `failed (display busy)`, `expired`: the status with its reason, escaped.
    pub fn outcome(&self) -> String {
        if self.sent_without_acks() {
            return "sent (the device does not acknowledge commands)".to_owned();
        }
        let status = terminal::plain(&self.status);
        match self.reason() {
            Some(reason) => format!("{status} ({reason})"),
            None => status,
        }
    }

    /// The reason's message, else its code, escaped.
    fn reason(&self) -> Option<String> {
        let reason = self.status_reason.as_ref()?;
        reason
            .message
            .as_deref()
            .filter(|m| !m.trim().is_empty())
            .or(reason.code.as_deref())
            .map(terminal::plain)
    }

    /// The readable form of `clockctl status`: one `name  value` line per field.
    pub fn readable(&self, id: &str) -> String {
        let text =
            |v: &Option<String>| v.as_deref().map_or_else(|| "-".to_owned(), terminal::plain);
        let reason_code = self
            .status_reason
            .as_ref()
            .and_then(|r| r.code.as_deref())
            .map(|c| format!("  [{}]", terminal::plain(c)))
            .unwrap_or_default();
        let acks = match self.device_acks {
            Some(true) => "yes",
            Some(false) => "no (expired is the normal end)",
            None => "-",
        };
        let id = self
            .command_id
            .as_deref()
            .map_or_else(|| terminal::plain(id), terminal::plain);
        [
            format!("command      {id}"),
            format!("device       {}", text(&self.device_id)),
            format!("type         {}", text(&self.r#type)),
            format!("status       {}{reason_code}", self.outcome()),
            format!("principal    {}", text(&self.principal)),
            format!("created      {}", text(&self.created_at)),
            format!("sent         {}", text(&self.sent_at)),
            format!("completed    {}", text(&self.completed_at)),
            format!("expires      {}", text(&self.expires_at)),
            format!("device acks  {acks}"),
        ]
        .join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RECORD: &str = r#"{"commandId":"c1","deviceId":"clock-1","type":"display_message",
        "principal":"ops","status":"failed","createdAt":"2026-11-29T08:00:00.000Z",
        "sentAt":"2026-11-29T08:00:00.010Z","completedAt":"2026-11-29T08:00:01.000Z",
        "expiresAt":"2026-11-29T08:10:00.000Z","deviceAcks":true,
        "statusReason":{"code":"device_failed","message":"display busy"},"future":1}"#;

    #[test]
    fn a_record_reads_with_its_outcome_and_unknown_fields_are_ignored() {
        let r = Record::parse(RECORD).unwrap();
        assert!(r.is_final());
        assert_eq!(r.outcome(), "failed (display busy)");
        let text = r.readable("c1");
        assert!(text.contains("status       failed (display busy)  [device_failed]"));
        assert!(text.contains("sent         2026-11-29T08:00:00.010Z"));
        assert!(text.contains("device acks  yes"));
        let sent = Record::parse(r#"{"status":"sent","sentAt":null,"statusReason":null}"#).unwrap();
        assert!(!sent.is_final());
        assert_eq!(sent.outcome(), "sent");
        assert!(sent.readable("x").contains("command      x"));
        assert!(Record::parse(r#"{"error":"not found"}"#).is_none());
    }

    #[test]
    fn a_command_sent_to_a_device_without_acks_is_settled_and_a_success() {
        let record = |status: &str, acks: Option<bool>| Record {
            status: status.to_owned(),
            device_acks: acks,
            ..Record::default()
        };
        let sent = record("sent", Some(false));
        assert!(sent.is_settled() && sent.is_success() && !sent.is_final());
        assert!(sent.outcome().starts_with("sent"));
        for open in [
            record("sent", Some(true)),
            record("sent", None),
            record("queued", Some(false)),
            record("scheduled", Some(false)),
            record("pending", Some(false)),
        ] {
            assert!(!open.is_settled() && !open.is_success(), "{open:?}");
        }
        assert!(record("succeeded", Some(true)).is_success());
        let expired = record("expired", Some(false));
        assert!(expired.is_settled() && !expired.is_success());
    }

    #[test]
    fn only_the_four_end_statuses_are_final() {
        for s in ["succeeded", "failed", "expired", "cancelled"] {
            assert!(is_final(s), "{s}");
        }
        for s in ["pending", "scheduled", "sent", "", "SUCCEEDED"] {
            assert!(!is_final(s), "{s}");
        }
    }

    #[test]
    fn server_text_in_the_readable_form_has_no_control_characters() {
        let r = Record::parse(
            "{\"status\":\"failed\\u001b[2J\",\"deviceId\":\"a\u{9b}b\",\
             \"statusReason\":{\"code\":\"x\\u0007\",\"message\":\"busy\\n\u{7f}\"}}",
        )
        .unwrap();
        let text = r.readable("id\u{1b}");
        assert!(
            !text.chars().any(|c| c.is_control() && c != '\n'),
            "{text:?}"
        );
        assert_eq!(text.lines().count(), 10);
    }
}
