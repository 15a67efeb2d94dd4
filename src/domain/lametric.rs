//! The `lametric` profile (SPEC 8.3): how a [`Command`] reaches a LaMetric TIME over its
//! local HTTP API (`lametric/Documentation`, `reference-docs/device-notifications.rst` and
//! `device-display.rst`), and what its answers mean.
//!
//! | Command | Request | Body |
//! |---|---|---|
//! | message | `POST /api/v2/device/notifications`, then after `durationSeconds` `DELETE …/<id>` | `{"priority":"info","icon_type":"none","model":{"cycles":0,"frames":[{"text":message}]}}` |
//! | brightness | `PUT /api/v2/device/display` | `{"brightness":level,"brightness_mode":"manual"}` |
//! | alarm | `POST /api/v2/device/notifications`, at `alarmTime` | `{"priority":"critical","icon_type":"alert","model":{"cycles":0,"frames":[{"text":label or "Alarm"}],"sound":{"category":"alarms","id":alarm_sound,"repeat":0}}}` |
//!
//! `cycles: 0` keeps a notification on the display until it is dismissed (by the gateway
//! after `durationSeconds`, or on the clock); `repeat: 0` plays the alarm sound until then.
//! The clock answers every request: a 2xx ends the command `succeeded`, a 4xx `failed`
//! with the clock's first error message. The clock's own alarm is one daily time without a
//! date, so the gateway holds alarms as it does for AWTRIX. Pure: no I/O.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Command;
use super::wire::Publication;
use crate::shared::Secret;

/// What a notification shows when the alarm has no label.
pub const DEFAULT_ALARM_TEXT: &str = "Alarm";
/// Where notifications are created (and, with `/<id>`, dismissed).
pub const NOTIFICATIONS_PATH: &str = "/api/v2/device/notifications";
/// Where the display's brightness is set.
pub const DISPLAY_PATH: &str = "/api/v2/device/display";
/// The device's information (the virtual LaMetric serves it; presence polls it).
pub const DEVICE_PATH: &str = "/api/v2/device";
/// The user of HTTP Basic authentication; the password is the device's API key.
pub const BASIC_USER: &str = "dev";
/// `timeout_ms` when the devices file gives none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(5000);
/// The longest error message kept from a clock's answer, in characters.
pub const MAX_MESSAGE_CHARS: usize = 256;

/// One LaMetric TIME as the devices file describes it.
#[derive(Clone, PartialEq, Eq)]
pub struct LametricDevice {
    /// The clock's API: `https://<host>:4343` or `http://<host>:8080`, no path.
    pub url: DeviceUrl,
    /// The device's API key: HTTP Basic password, never shown.
    pub api_key: Secret,
    /// How the clock's certificate is checked (`https://` only).
    pub tls: CertCheck,
    /// The sound of every alarm.
    pub alarm_sound: AlarmSound,
    /// Bounds each request.
    pub timeout: Duration,
}

impl fmt::Debug for LametricDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LametricDevice")
            .field("url", &self.url.as_str())
            .field("api_key", &self.api_key)
            .field("tls", &self.tls)
            .field("alarm_sound", &self.alarm_sound)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// How the certificate of an `https://` clock is accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertCheck {
    /// Only the certificate whose SHA-256 is this (the clock's is self-signed).
    Pinned(CertPin),
    /// Any certificate (`insecure_tls = true`; start-up warns).
    Insecure,
    /// `http://`: no TLS (`ALLOW_INSECURE_DOWNSTREAM_HTTP=true`).
    PlainHttp,
}

/// The SHA-256 fingerprint of a certificate (its DER bytes).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct CertPin(pub [u8; 32]);

impl fmt::Debug for CertPin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hex: Vec<String> = self.0.iter().map(|b| format!("{b:02X}")).collect();
        f.write_str(&hex.join(":"))
    }
}

impl CertPin {
    /// 64 hexadecimal digits, in any case, with or without `:` between the bytes.
    pub fn parse(raw: &str) -> Option<Self> {
        let digits: Vec<u8> = raw
            .trim()
            .bytes()
            .filter(|b| *b != b':')
            .map(|b| {
                char::from(b)
                    .to_digit(16)
                    .and_then(|d| u8::try_from(d).ok())
            })
            .collect::<Option<_>>()?;
        if digits.len() != 64 {
            return None;
        }
        let mut pin = [0u8; 32];
        for (byte, pair) in pin.iter_mut().zip(digits.chunks_exact(2)) {
            *byte = pair[0] << 4 | pair[1];
        }
        Some(Self(pin))
    }
}

/// The scheme of a clock's URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

/// A clock's API base: scheme, host and port, nothing else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceUrl {
    base: String,
    scheme: Scheme,
}

/// Why a `url` is not a clock's API base.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DeviceUrlError {
    #[error("it is not a URL such as https://192.168.1.50:4343")]
    Invalid,
    #[error("the scheme must be https:// (port 4343) or http:// (port 8080)")]
    Scheme,
    #[error("it must not carry a user or password (the API key goes in api_key)")]
    UserInfo,
    #[error("it must be the clock's address only, without a path, query or fragment")]
    Path,
}

impl DeviceUrl {
    /// `https://host[:port]` or `http://host[:port]`, a trailing `/` allowed.
    pub fn parse(raw: &str) -> Result<Self, DeviceUrlError> {
        let uri: http::Uri = raw.trim().parse().map_err(|_| DeviceUrlError::Invalid)?;
        let scheme = match uri.scheme_str() {
            Some("https") => Scheme::Https,
            Some("http") => Scheme::Http,
            Some(_) => return Err(DeviceUrlError::Scheme),
            None => return Err(DeviceUrlError::Invalid),
        };
        let authority = uri.authority().ok_or(DeviceUrlError::Invalid)?;
        if authority.as_str().contains('@') {
            return Err(DeviceUrlError::UserInfo);
        }
        if authority.host().is_empty() {
            return Err(DeviceUrlError::Invalid);
        }
        let path_ok = matches!(uri.path(), "" | "/");
        if !path_ok || uri.query().is_some() || raw.contains('#') {
            return Err(DeviceUrlError::Path);
        }
        let scheme_name = if scheme == Scheme::Https {
            "https"
        } else {
            "http"
        };
        Ok(Self {
            base: format!("{scheme_name}://{authority}"),
            scheme,
        })
    }

    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// `scheme://host[:port]`.
    pub fn as_str(&self) -> &str {
        &self.base
    }
}

/// One of the clock's alarm sounds, `alarm1` … `alarm13`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlarmSound(u8);

impl AlarmSound {
    pub const DEFAULT: Self = Self(1);

    pub fn parse(raw: &str) -> Option<Self> {
        let n: u8 = raw.strip_prefix("alarm")?.parse().ok()?;
        let canonical = format!("alarm{n}") == raw;
        (canonical && (1..=13).contains(&n)).then_some(Self(n))
    }
}

impl fmt::Display for AlarmSound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "alarm{}", self.0)
    }
}

/// HTTP methods the clock is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Put,
    Delete,
}

/// One request to the clock: method, path (after the URL's base) and JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    pub path: String,
    pub body: Option<Vec<u8>>,
}

/// The body of `POST /api/v2/device/notifications`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    pub priority: String,
    pub icon_type: String,
    pub model: Model,
}

/// A notification's frames, how often they cycle and its sound.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Model {
    pub cycles: u32,
    pub frames: Vec<Frame>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sound: Option<Sound>,
}

/// One frame: its text (icons and charts are not sent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frame {
    #[serde(default)]
    pub text: String,
}

/// A notification's sound.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sound {
    pub category: String,
    pub id: String,
    /// How often it plays; 0: until the notification is dismissed.
    pub repeat: u32,
}

/// The body of `PUT /api/v2/device/display`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Display {
    pub brightness: u8,
    pub brightness_mode: BrightnessMode,
}

/// `brightness_mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BrightnessMode {
    Auto,
    Manual,
}

impl LametricDevice {
    /// The request for `command`. For an alarm it is the one the gateway sends at the
    /// alarm's time, not before.
    pub fn request(&self, command: &Command) -> Request {
        match command {
            Command::DisplayMessage { message, .. } => post_notification(&Notification {
                priority: "info".to_owned(),
                icon_type: "none".to_owned(),
                model: Model {
                    cycles: 0,
                    frames: vec![Frame {
                        text: message.clone(),
                    }],
                    sound: None,
                },
            }),
            Command::SetBrightness { level } => Request {
                method: Method::Put,
                path: DISPLAY_PATH.to_owned(),
                body: Some(to_vec(&Display {
                    brightness: *level,
                    brightness_mode: BrightnessMode::Manual,
                })),
            },
            Command::SetAlarm { label, .. } => post_notification(&Notification {
                priority: "critical".to_owned(),
                icon_type: "alert".to_owned(),
                model: Model {
                    cycles: 0,
                    frames: vec![Frame {
                        text: if label.is_empty() {
                            DEFAULT_ALARM_TEXT.to_owned()
                        } else {
                            label.clone()
                        },
                    }],
                    sound: Some(Sound {
                        category: "alarms".to_owned(),
                        id: self.alarm_sound.to_string(),
                        repeat: 0,
                    }),
                },
            }),
        }
    }

    /// A held alarm as the clock gets it at its time (SPEC 8.3): the notification held when
    /// it was scheduled (the body of [`Self::request`]), to [`NOTIFICATIONS_PATH`]
    /// ([`held_request`]).
    pub fn held_alarm_now(&self, held: &Publication) -> Publication {
        Publication {
            topic: NOTIFICATIONS_PATH.to_owned(),
            payload: held.payload.clone(),
        }
    }

    /// What shows a notification for `seconds`, then dismisses it: the message's duration,
    /// `None` for the other commands (an alarm stays until dismissed on the clock).
    pub fn dismiss_after(command: &Command) -> Option<Duration> {
        match command {
            Command::DisplayMessage {
                duration_seconds, ..
            } => Some(Duration::from_secs(u64::from(*duration_seconds))),
            _ => None,
        }
    }
}

/// `GET /api/v2/device`: the device's state (`reference-docs/device-state.rst`), which
/// presence polls (SPEC 11.1).
pub fn device_state() -> Request {
    Request {
        method: Method::Get,
        path: DEVICE_PATH.to_owned(),
        body: None,
    }
}

/// The fields of `GET /api/v2/device` that `GET /devices` shows as the clock's `info`
/// (SPEC 11.2).
pub const INFO_FIELDS: [&str; 4] = ["name", "model", "os_version", "serial_number"];

/// The `info` of a clock from its answer to `GET /api/v2/device`: the [`INFO_FIELDS`] it
/// gave as strings, each cut to 256 characters without control characters, with each of
/// `secrets` redacted; `None` when the answer is not a JSON object.
pub fn device_info(body: &[u8], secrets: &[&str]) -> Option<serde_json::Value> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let object = value.as_object()?;
    let info: serde_json::Map<String, serde_json::Value> = INFO_FIELDS
        .iter()
        .filter_map(|field| {
            let text = object.get(*field)?.as_str()?;
            let clean: String = redact(text, secrets)
                .chars()
                .filter(|c| !c.is_control())
                .take(MAX_MESSAGE_CHARS)
                .collect();
            Some(((*field).to_owned(), serde_json::Value::String(clean)))
        })
        .collect();
    Some(serde_json::Value::Object(info))
}

/// `DELETE /api/v2/device/notifications/<id>`, for an id the clock gave (`None` for an id
/// that is not safe in a path).
pub fn dismiss(id: &str) -> Option<Request> {
    let safe = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    safe.then(|| Request {
        method: Method::Delete,
        path: format!("{NOTIFICATIONS_PATH}/{id}"),
        body: None,
    })
}

/// The request that delivers a held alarm ([`LametricDevice::held_alarm_now`]): its body
/// posted to its path.
pub fn held_request(held: &Publication) -> Request {
    Request {
        method: Method::Post,
        path: held.topic.clone(),
        body: Some(held.payload.clone()),
    }
}

fn post_notification(notification: &Notification) -> Request {
    Request {
        method: Method::Post,
        path: NOTIFICATIONS_PATH.to_owned(),
        body: Some(to_vec(notification)),
    }
}

/// Strings, integers and enums cannot fail to serialise.
fn to_vec<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

/// The id in a notification's answer, `{"success":{"id":"…"}}` (a number is taken too).
pub fn notification_id(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    match value.get("success")?.get("id")? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The clock's first error message, `{"errors":[{"message":"…"}]}`, with each of
/// `secrets` replaced by `<redacted>` (a clock may echo what it was sent) before it is cut
/// to [`MAX_MESSAGE_CHARS`]; `None` when the answer has none.
pub fn error_message(body: &[u8], secrets: &[&str]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let message = value
        .get("errors")?
        .as_array()?
        .first()?
        .get("message")?
        .as_str()?;
    let message = redact(message, secrets);
    let clean: String = message
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_MESSAGE_CHARS)
        .collect();
    Some(clean)
}

/// `text` with every non-empty secret replaced by `<redacted>`.
pub fn redact(text: &str, secrets: &[&str]) -> String {
    secrets
        .iter()
        .filter(|s| !s.is_empty())
        .fold(text.to_owned(), |t, s| {
            t.replace(s, crate::shared::secret::REDACTED)
        })
}

/// The HTTP Basic credentials of `api_key` as the `Authorization` header carries them
/// (base64 of `dev:<key>`), so that an echo of the header is redacted too.
pub fn basic_credentials(api_key: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("{BASIC_USER}:{api_key}"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn device() -> LametricDevice {
        LametricDevice {
            url: DeviceUrl::parse("https://192.168.1.50:4343").unwrap(),
            api_key: Secret::new("k3y"),
            tls: CertCheck::Insecure,
            alarm_sound: AlarmSound::parse("alarm3").unwrap(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    fn body(r: &Request) -> &str {
        std::str::from_utf8(r.body.as_deref().unwrap()).unwrap()
    }

    #[test]
    fn each_command_is_the_request_of_the_spec_table() {
        let d = device();
        let m = d.request(&Command::message(Some("Tea \"now\"".into()), Some(15)).unwrap());
        assert_eq!(
            (m.method, m.path.as_str(), body(&m)),
            (
                Method::Post,
                "/api/v2/device/notifications",
                r#"{"priority":"info","icon_type":"none","model":{"cycles":0,"frames":[{"text":"Tea \"now\""}]}}"#
            )
        );
        let b = d.request(&Command::brightness(Some(40)).unwrap());
        assert_eq!(
            (b.method, b.path.as_str(), body(&b)),
            (
                Method::Put,
                "/api/v2/device/display",
                r#"{"brightness":40,"brightness_mode":"manual"}"#
            )
        );
        let a = d.request(&Command::alarm("2030-01-01T07:00:00Z", None).unwrap());
        assert_eq!(
            body(&a),
            r#"{"priority":"critical","icon_type":"alert","model":{"cycles":0,"frames":[{"text":"Alarm"}],"sound":{"category":"alarms","id":"alarm3","repeat":0}}}"#
        );
        let a = d.request(&Command::alarm("2030-01-01T07:00:00Z", Some("Up".into())).unwrap());
        assert!(body(&a).contains(r#""frames":[{"text":"Up"}]"#));
        assert_eq!(
            LametricDevice::dismiss_after(&Command::message(Some("x".into()), Some(15)).unwrap()),
            Some(Duration::from_secs(15))
        );
        assert_eq!(
            LametricDevice::dismiss_after(&Command::brightness(Some(1)).unwrap()),
            None
        );
    }

    #[test]
    fn a_dismissal_is_a_delete_of_an_id_that_is_safe_in_a_path() {
        assert_eq!(
            dismiss("42").unwrap(),
            Request {
                method: Method::Delete,
                path: "/api/v2/device/notifications/42".into(),
                body: None
            }
        );
        for bad in ["", "../display", "4 2", &"9".repeat(65)] {
            assert!(dismiss(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn answers_give_the_id_or_the_first_error_without_the_key() {
        assert_eq!(
            notification_id(br#"{"success":{"id":"17"}}"#).as_deref(),
            Some("17")
        );
        assert_eq!(
            notification_id(br#"{"success":{"id":17}}"#).as_deref(),
            Some("17")
        );
        assert_eq!(notification_id(b"{}"), None);
        assert_eq!(
            error_message(
                br#"{"errors":[{"message":"bad key k3y\n"},{"message":"second"}]}"#,
                &["k3y"]
            )
            .as_deref(),
            Some("bad key <redacted>")
        );
        let long = format!(r#"{{"errors":[{{"message":"{}"}}]}}"#, "é".repeat(300));
        assert_eq!(
            error_message(long.as_bytes(), &["k3y"])
                .unwrap()
                .chars()
                .count(),
            256
        );
        assert_eq!(error_message(b"<html>", &["k3y"]), None);
        assert_eq!(basic_credentials("k"), "ZGV2Oms=");
        assert_eq!(
            redact("Basic ZGV2Oms= k", &["k", "ZGV2Oms="]),
            "Basic <redacted> <redacted>"
        );
    }

    #[test]
    fn the_info_is_the_four_fields_of_the_device_state_as_strings_without_the_key() {
        let body = br#"{"id":"1","name":"Desk k3y","serial_number":"SA1","mode":"manual",
            "model":"LM 37X8","os_version":"2.3.0","audio":{"volume":100}}"#;
        assert_eq!(
            device_info(body, &["k3y"]),
            Some(
                serde_json::json!({"name":"Desk <redacted>","model":"LM 37X8",
                "os_version":"2.3.0","serial_number":"SA1"})
            )
        );
        assert_eq!(
            device_info(br#"{"name":7,"model":"sa8"}"#, &[]),
            Some(serde_json::json!({"model":"sa8"}))
        );
        assert_eq!(device_info(b"[]", &[]), None);
        assert_eq!(device_info(b"<html>", &[]), None);
        let r = device_state();
        assert_eq!((r.method, r.path.as_str()), (Method::Get, "/api/v2/device"));
    }

    #[test]
    fn a_pin_is_64_hex_digits_with_optional_colons_in_any_case() {
        let hex = "5F0A".repeat(16);
        let colons: Vec<String> = hex
            .as_bytes()
            .chunks(2)
            .map(|p| String::from_utf8(p.to_vec()).unwrap().to_lowercase())
            .collect();
        let a = CertPin::parse(&hex).unwrap();
        assert_eq!(CertPin::parse(&colons.join(":")), Some(a));
        assert_eq!(a.0[0], 0x5F);
        assert_eq!(a.0[1], 0x0A);
        assert!(format!("{a:?}").starts_with("5F:0A:5F"));
        for bad in ["", "5F0A", &"5G".repeat(32), &"5F".repeat(33)] {
            assert_eq!(CertPin::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_url_is_the_clocks_address_only() {
        let u = DeviceUrl::parse("https://192.168.1.50:4343/").unwrap();
        assert_eq!(
            (u.as_str(), u.scheme()),
            ("https://192.168.1.50:4343", Scheme::Https)
        );
        assert_eq!(
            DeviceUrl::parse("http://clock.local:8080")
                .unwrap()
                .scheme(),
            Scheme::Http
        );
        for (bad, e) in [
            ("ftp://x", DeviceUrlError::Scheme),
            ("192.168.1.50", DeviceUrlError::Invalid),
            ("https://dev:k@x:4343", DeviceUrlError::UserInfo),
            ("https://x:4343/api", DeviceUrlError::Path),
            ("https://x:4343/?a=1", DeviceUrlError::Path),
        ] {
            assert_eq!(DeviceUrl::parse(bad), Err(e), "{bad}");
        }
    }

    #[test]
    fn alarm_sounds_are_alarm1_to_alarm13() {
        assert_eq!(AlarmSound::DEFAULT.to_string(), "alarm1");
        assert_eq!(AlarmSound::parse("alarm13").unwrap().to_string(), "alarm13");
        for bad in ["alarm0", "alarm14", "alarm", "Alarm1", "alarm01", "cat"] {
            assert!(AlarmSound::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn the_api_key_never_shows_in_debug_output() {
        let shown = format!("{:?}", device());
        assert!(
            !shown.contains("k3y") && shown.contains("<redacted>"),
            "{shown}"
        );
    }
}
