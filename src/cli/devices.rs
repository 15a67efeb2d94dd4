//! Devices as `clockctl devices` and `clockctl device` show them (SPEC 11.2, 11.4): one
//! line per device, or one `name  value` line per field. Pure; every text that came from
//! the server goes through [`crate::terminal`].

use serde::Deserialize;

use crate::terminal;

/// The fields of one device that are shown; anything else is ignored (`--json` prints
/// the server's body, not this).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Device {
    pub device_id: String,
    pub profile: Option<String>,
    pub presence: Option<String>,
    pub last_seen_at: Option<String>,
    pub device_acks: Option<bool>,
    pub info: Option<serde_json::Value>,
}

/// `GET /devices`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct DeviceList {
    pub devices: Vec<Device>,
}

impl DeviceList {
    /// Reads a 200 body; `None` when it is not a device list.
    pub fn parse(text: &str) -> Option<Self> {
        serde_json::from_str(text).ok()
    }

    /// One aligned line per device: id, profile, presence, last seen; `no devices` when
    /// there are none in the caller's scopes.
    pub fn lines(&self) -> String {
        if self.devices.is_empty() {
            return "no devices (none known to the server within your token's scopes)".to_owned();
        }
        let rows: Vec<[String; 4]> = self
            .devices
            .iter()
            .map(|d| {
                [
                    terminal::plain(&d.device_id),
                    text(d.profile.as_deref()),
                    text(d.presence.as_deref()),
                    d.last_seen_at.as_deref().map_or_else(
                        || "never seen".to_owned(),
                        |t| format!("last seen {}", terminal::plain(t)),
                    ),
                ]
            })
            .collect();
        let width = |i: usize| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0);
        let (w0, w1, w2) = (width(0), width(1), width(2));
        rows.iter()
            .map(|[id, profile, presence, seen]| {
                format!("{id:<w0$}  {profile:<w1$}  {presence:<w2$}  {seen}")
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Device {
    /// Reads a 200 body; `None` when it is not a device.
    pub fn parse(text: &str) -> Option<Self> {
        serde_json::from_str(text).ok()
    }

    /// The readable form of `clockctl device`: one `name  value` line per field.
    pub fn readable(&self) -> String {
        let acks = match self.device_acks {
            Some(true) => "yes",
            Some(false) => "no (--wait ends at sent)",
            None => "-",
        };
        let info = self
            .info
            .as_ref()
            .filter(|i| !i.is_null())
            .map_or_else(|| "-".to_owned(), terminal::json_value);
        [
            format!("device       {}", terminal::plain(&self.device_id)),
            format!("profile      {}", text(self.profile.as_deref())),
            format!("presence     {}", text(self.presence.as_deref())),
            format!("last seen    {}", text(self.last_seen_at.as_deref())),
            format!("device acks  {acks}"),
            format!("info         {info}"),
        ]
        .join("\n")
    }
}

fn text(value: Option<&str>) -> String {
    value.map_or_else(|| "-".to_owned(), terminal::plain)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_are_listed_one_aligned_line_each() {
        let list = DeviceList::parse(
            r#"{"devices":[
              {"deviceId":"clock-1","profile":"generic","presence":"online","lastSeenAt":"2026-12-06T07:00:00.000Z","deviceAcks":true,"info":null},
              {"deviceId":"kitchen","profile":"awtrix3","presence":"unknown","lastSeenAt":null,"deviceAcks":false,"info":null,"later":1}]}"#,
        )
        .unwrap();
        assert_eq!(
            list.lines(),
            "clock-1  generic  online   last seen 2026-12-06T07:00:00.000Z\n\
             kitchen  awtrix3  unknown  never seen"
        );
        assert!(DeviceList::default().lines().starts_with("no devices"));
    }

    #[test]
    fn one_device_reads_field_by_field_with_server_text_escaped() {
        let device = Device::parse(
            r#"{"deviceId":"kitchen","profile":"awtrix3","presence":"online\u001b[2J","lastSeenAt":null,"deviceAcks":false,"info":{"bat":100}}"#,
        )
        .unwrap();
        let text = device.readable();
        assert!(text.contains("info         {\"bat\":100}"), "{text}");
        assert!(text.contains("device acks  no"), "{text}");
        assert!(!text.contains('\u{1b}'), "{text}");
    }
}
