//! `DEVICES_FILE` (SPEC 8): the TOML file naming devices whose firmware is not the generic
//! one, read into [`Devices`].
//!
//! ```toml
//! [devices.kitchen]
//! profile = "awtrix3"
//! topic = "awtrix_a1b2c3"
//! alarm_rtttl = "alarm:d=4,o=5,b=140:c6,p,c6,p,c6"   # optional
//! ```
//!
//! Every mistake is reported, each as one line naming the file, the line and what is
//! wrong, and stops start-up. The document is read with `toml`'s spanned tree
//! ([`toml::de::DeTable`]) rather than serde, so each key and value knows its line and an
//! error can point at the key that is wrong (serde's errors point at the whole table).

use std::borrow::Cow;
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::domain::awtrix3::{Awtrix3Device, AwtrixTopic, Rtttl};
use crate::domain::lametric::{
    AlarmSound, CertCheck, CertPin, DEFAULT_TIMEOUT, DeviceUrl, LametricDevice, Scheme,
};
use crate::domain::{DeviceId, Devices, Profile, ProfileName};
use crate::shared::Secret;

/// What the rest of the configuration says, for the checks that span both.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// `ENABLED_SENDERS` as given (for the message), and whether it has `mqtt`.
    pub senders: &'a str,
    pub mqtt_enabled: bool,
    /// `STATE_STORE=none`: no store can hold a gateway-scheduled alarm.
    pub store_none: bool,
    /// `ALLOW_INSECURE_DOWNSTREAM_HTTP=true`: a LaMetric clock may be reached over http://.
    pub allow_insecure_http: bool,
}

/// Reads and checks `path`. The errors are whole lines, each starting with
/// `DEVICES_FILE=<path>`.
pub fn read(path: &Path, context: Context<'_>) -> Result<Devices, Vec<String>> {
    let origin = format!("DEVICES_FILE={}", path.display());
    let bytes = read_bounded(path).map_err(|why| vec![format!("{origin}: {why}")])?;
    let text = String::from_utf8(bytes)
        .map_err(|_| vec![format!("{origin}: the devices file is not UTF-8 text")])?;
    parse(&origin, &text, context)
}

/// The largest devices file read: far more than any fleet needs (a device takes about
/// 80 bytes: some 50,000 devices), and a bound on what start-up reads.
pub const MAX_DEVICES_FILE_BYTES: u64 = 4 << 20;

/// The file's bytes, if it is a regular file of at most [`MAX_DEVICES_FILE_BYTES`]. Checked
/// before opening: opening a FIFO waits for a writer (start-up would hang), and a device
/// such as `/dev/zero` never ends.
fn read_bounded(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let kind = |m: &std::fs::Metadata| {
        let t = m.file_type();
        if t.is_dir() {
            "a directory"
        } else {
            "not a regular file (a FIFO, socket or device)"
        }
    };
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read the devices file: {e}"))?;
    if !meta.is_file() {
        return Err(format!(
            "the devices file is {}; give the path of a TOML file",
            kind(&meta)
        ));
    }
    let file =
        std::fs::File::open(path).map_err(|e| format!("cannot read the devices file: {e}"))?;
    let mut bytes = Vec::new();
    file.take(MAX_DEVICES_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read the devices file: {e}"))?;
    if bytes.len() as u64 > MAX_DEVICES_FILE_BYTES {
        return Err(format!(
            "the devices file is larger than {} MiB; is it the right file?",
            MAX_DEVICES_FILE_BYTES >> 20
        ));
    }
    Ok(bytes)
}

/// Parses the text of a devices file; `origin` starts every error line.
pub fn parse(origin: &str, text: &str, context: Context<'_>) -> Result<Devices, Vec<String>> {
    let mut parser = Parser {
        origin,
        text,
        errors: Vec::new(),
    };
    let devices = parser.document(context);
    if parser.errors.is_empty() {
        Ok(devices)
    } else {
        parser.errors.sort_by_key(|(line, _)| *line);
        Err(parser.errors.into_iter().map(|(_, e)| e).collect())
    }
}

const DEVICE_KEYS: &str = "profile, topic, alarm_rtttl (awtrix3), url, api_key, cert_sha256, insecure_tls, alarm_sound, timeout_ms (lametric)";

struct Parser<'a> {
    origin: &'a str,
    text: &'a str,
    errors: Vec<(usize, String)>,
}

impl Parser<'_> {
    /// The 1-based line of a byte offset.
    fn line(&self, span: &Range<usize>) -> usize {
        let end = span.start.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }

    fn error(&mut self, span: &Range<usize>, what: impl AsRef<str>) {
        let line = self.line(span);
        self.errors.push((
            line,
            format!("{} line {line}: {}", self.origin, what.as_ref()),
        ));
    }

    fn document(&mut self, context: Context<'_>) -> Devices {
        let mut devices = Devices::new();
        let root = match DeTable::parse(self.text) {
            Ok(root) => root,
            Err(e) => {
                let span = e.span().unwrap_or(0..0);
                let message = e.message().trim().to_owned();
                self.error(&span, format!("invalid TOML: {message}"));
                return devices;
            }
        };
        for (key, value) in root.get_ref() {
            if key.get_ref() != "devices" {
                self.error(
                    &key.span(),
                    format!(
                        "unknown key {:?}; the file holds only [devices.<id>] tables",
                        key.get_ref()
                    ),
                );
                continue;
            }
            let DeValue::Table(table) = value.get_ref() else {
                self.error(
                    &value.span(),
                    format!(
                        "devices must be a table of devices, e.g. [devices.kitchen], not {}",
                        a_type(value.get_ref())
                    ),
                );
                continue;
            };
            for (id, device) in table {
                if let Some((device_id, profile)) = self.device(id, device, context) {
                    devices.insert(device_id, profile);
                }
            }
        }
        devices
    }

    fn device(
        &mut self,
        id: &Spanned<Cow<'_, str>>,
        device: &Spanned<DeValue<'_>>,
        context: Context<'_>,
    ) -> Option<(DeviceId, Profile)> {
        let raw_id: &str = id.get_ref();
        let device_id = match DeviceId::parse(raw_id) {
            Ok(parsed) if parsed.as_str() == raw_id => Some(parsed),
            Ok(_) => {
                self.error(
                    &id.span(),
                    format!("invalid device id {raw_id:?}: it must not have surrounding spaces"),
                );
                None
            }
            Err(e) => {
                self.error(&id.span(), format!("invalid device id {raw_id:?}: {e}"));
                None
            }
        };
        let DeValue::Table(fields) = device.get_ref() else {
            self.error(
                &device.span(),
                format!(
                    "devices.{raw_id} must be a table ([devices.{raw_id}] with profile = \"…\"), not {}",
                    a_type(device.get_ref())
                ),
            );
            return None;
        };
        // Every key this file knows, with its value; which of them a profile takes is
        // checked once the profile is known.
        let mut given: Vec<(&'static str, &Spanned<DeValue<'_>>)> = Vec::new();
        for (key, value) in fields {
            match KNOWN_KEYS.iter().find(|k| **k == &**key.get_ref()) {
                Some(known) => given.push((known, value)),
                None => self.error(
                    &key.span(),
                    format!(
                        "unknown key {:?} in [devices.{raw_id}]; expected {DEVICE_KEYS}",
                        key.get_ref()
                    ),
                ),
            }
        }
        let fields = Fields {
            raw_id,
            given: &given,
        };
        let (profile_name, profile_span) = match fields.string(self, "profile") {
            Some(p) => p,
            None => {
                if !has_key(&given, "profile") {
                    self.error(
                        &id.span(),
                        format!(
                            "[devices.{raw_id}] has no profile (missing field); expected profile = \"awtrix3\" or \"lametric\""
                        ),
                    );
                }
                return None;
            }
        };
        let profile = match ProfileName::parse(&profile_name) {
            Some(p) => p,
            None => {
                let known: Vec<&str> = ProfileName::ALL.iter().map(|p| p.as_str()).collect();
                self.error(
                    &profile_span,
                    format!(
                        "unknown profile {profile_name:?} for device {raw_id:?}; expected {}",
                        known.join(", ")
                    ),
                );
                return None;
            }
        };
        // Keys of another profile.
        for (key, value) in &given {
            if let Some(owner) = owner_of(key).filter(|owner| *owner != profile) {
                self.error(
                    &value.span(),
                    format!(
                        "{key} applies to profile {owner} only; device {raw_id:?} has profile {profile}"
                    ),
                );
            }
        }
        let profile = match profile {
            ProfileName::Generic => Profile::Generic,
            ProfileName::Awtrix3 => {
                Profile::Awtrix3(self.awtrix3(&fields, id, &profile_span, context)?)
            }
            ProfileName::Lametric => {
                Profile::Lametric(self.lametric(&fields, id, &profile_span, context)?)
            }
        };
        Some((device_id?, profile))
    }

    fn awtrix3(
        &mut self,
        fields: &Fields<'_, '_>,
        id: &Spanned<Cow<'_, str>>,
        profile_span: &Range<usize>,
        context: Context<'_>,
    ) -> Option<Awtrix3Device> {
        let raw_id = fields.raw_id;
        if !context.mqtt_enabled {
            self.error(
                profile_span,
                format!(
                    "device {raw_id:?} has profile awtrix3, which is reached over MQTT only, but ENABLED_SENDERS={:?} has no mqtt; add mqtt to ENABLED_SENDERS",
                    context.senders
                ),
            );
        }
        if context.store_none {
            self.error(
                profile_span,
                format!(
                    "device {raw_id:?} has profile awtrix3, whose alarms the gateway holds in the state store until their time, but STATE_STORE=none keeps nothing; use STATE_STORE=file:<path> (or memory)"
                ),
            );
        }
        let topic = match fields.string(self, "topic") {
            // A topic of the wrong type was reported already.
            None if has_key(fields.given, "topic") => None,
            None => {
                self.error(
                    &id.span(),
                    format!(
                        "[devices.{raw_id}] (profile awtrix3) has no topic (missing field); expected topic = \"<the clock's MQTT prefix>\", e.g. \"awtrix_a1b2c3\""
                    ),
                );
                None
            }
            Some((raw, span)) => match AwtrixTopic::parse(&raw) {
                Ok(topic) => Some(topic),
                Err(e) => {
                    self.error(
                        &span,
                        format!("invalid topic {raw:?} for device {raw_id:?}: {e}"),
                    );
                    None
                }
            },
        };
        let rtttl = match fields.string(self, "alarm_rtttl") {
            None => None,
            Some((raw, span)) => match Rtttl::parse(&raw) {
                Ok(melody) => Some(melody),
                Err(e) => {
                    self.error(
                        &span,
                        format!("invalid alarm_rtttl for device {raw_id:?}: {e}; expected an RTTTL melody such as \"alarm:d=4,o=5,b=140:c6,p,c6\" (leave the key out for the built-in one)"),
                    );
                    return None;
                }
            },
        };
        Some(Awtrix3Device::new(topic?, rtttl))
    }

    fn lametric(
        &mut self,
        fields: &Fields<'_, '_>,
        id: &Spanned<Cow<'_, str>>,
        profile_span: &Range<usize>,
        context: Context<'_>,
    ) -> Option<LametricDevice> {
        let raw_id = fields.raw_id;
        if context.store_none {
            self.error(
                profile_span,
                format!(
                    "device {raw_id:?} has profile lametric, whose alarms the gateway holds in the state store until their time, but STATE_STORE=none keeps nothing; use STATE_STORE=file:<path> (or memory)"
                ),
            );
        }
        let missing = |parser: &mut Self, key: &str, example: &str| {
            if !has_key(fields.given, key) {
                parser.error(
                    &id.span(),
                    format!(
                        "[devices.{raw_id}] (profile lametric) has no {key} (missing field); expected {key} = {example}"
                    ),
                );
            }
        };
        let url = match fields.string(self, "url") {
            None => {
                missing(self, "url", "\"https://<the clock's address>:4343\"");
                None
            }
            Some((raw, span)) => match DeviceUrl::parse(&raw) {
                Ok(url) => Some((url, span)),
                Err(e) => {
                    self.error(
                        &span,
                        format!("invalid url {raw:?} for device {raw_id:?}: {e}"),
                    );
                    None
                }
            },
        };
        let api_key = match fields.string(self, "api_key") {
            None => {
                missing(
                    self,
                    "api_key",
                    "\"<the device's API key>\" (developer.lametric.com, My Devices)",
                );
                None
            }
            Some((raw, span)) => {
                let key = raw.trim();
                let usable = !key.is_empty() && key.bytes().all(|b| b.is_ascii_graphic());
                if usable {
                    Some(Secret::new(key))
                } else {
                    self.error(
                        &span,
                        format!(
                            "invalid api_key=<redacted> for device {raw_id:?}: it must be the device's key, visible ASCII characters without spaces"
                        ),
                    );
                    None
                }
            }
        };
        let pin = match fields.string(self, "cert_sha256") {
            None => None,
            Some((raw, span)) => match CertPin::parse(&raw) {
                Some(pin) => Some((pin, span)),
                None => {
                    self.error(
                        &span,
                        format!(
                            "invalid cert_sha256 {raw:?} for device {raw_id:?}: expected the SHA-256 of the clock's certificate, 64 hexadecimal digits (\":\" between the bytes allowed), e.g. from openssl x509 -noout -fingerprint -sha256"
                        ),
                    );
                    return None;
                }
            },
        };
        let insecure = fields.boolean(self, "insecure_tls");
        let alarm_sound = match fields.string(self, "alarm_sound") {
            None => AlarmSound::DEFAULT,
            Some((raw, span)) => match AlarmSound::parse(raw.trim()) {
                Some(sound) => sound,
                None => {
                    self.error(
                        &span,
                        format!(
                            "invalid alarm_sound {raw:?} for device {raw_id:?}: expected alarm1 … alarm13 (leave the key out for alarm1)"
                        ),
                    );
                    return None;
                }
            },
        };
        let timeout = match fields.integer(self, "timeout_ms") {
            None => DEFAULT_TIMEOUT,
            Some((ms, span)) => match u64::try_from(ms)
                .ok()
                .filter(|ms| (1..=600_000).contains(ms))
            {
                Some(ms) => Duration::from_millis(ms),
                None => {
                    self.error(
                        &span,
                        format!(
                            "invalid timeout_ms {ms} for device {raw_id:?}: expected milliseconds from 1 to 600000 (leave the key out for 5000)"
                        ),
                    );
                    return None;
                }
            },
        };
        let (url, url_span) = url?;
        let tls = match (url.scheme(), pin, insecure) {
            (Scheme::Http, pin, insecure) => {
                if !context.allow_insecure_http {
                    self.error(
                        &url_span,
                        format!(
                            "url {:?} of device {raw_id:?} is plain http://: its API key and commands would cross the network unencrypted; use https:// with cert_sha256, or set ALLOW_INSECURE_DOWNSTREAM_HTTP=true",
                            url.as_str()
                        ),
                    );
                }
                for span in [pin.map(|p| p.1), insecure.map(|i| i.1)]
                    .into_iter()
                    .flatten()
                {
                    self.error(
                        &span,
                        format!("device {raw_id:?} has an http:// url: cert_sha256 and insecure_tls apply to https:// only"),
                    );
                }
                CertCheck::PlainHttp
            }
            (Scheme::Https, Some((pin, _)), None | Some((false, _))) => CertCheck::Pinned(pin),
            (Scheme::Https, Some(_), Some((true, span))) => {
                self.error(
                    &span,
                    format!("device {raw_id:?} has both cert_sha256 and insecure_tls = true; keep the pin and remove insecure_tls"),
                );
                return None;
            }
            (Scheme::Https, None, Some((true, _))) => CertCheck::Insecure,
            // An insecure_tls of the wrong type was reported already.
            (Scheme::Https, None, None) if has_key(fields.given, "insecure_tls") => return None,
            (Scheme::Https, None, _) => {
                self.error(
                    &url_span,
                    format!(
                        "device {raw_id:?} has an https:// url but no cert_sha256: the clock's certificate is self-signed, so it is accepted only by its fingerprint; add cert_sha256 = \"<SHA-256 of the certificate>\" (openssl s_client -connect <host>:4343 </dev/null | openssl x509 -noout -fingerprint -sha256), or insecure_tls = true to accept any"
                    ),
                );
                return None;
            }
        };
        Some(LametricDevice {
            url,
            api_key: api_key?,
            tls,
            alarm_sound,
            timeout,
        })
    }
}

/// Every key a device table may have.
const KNOWN_KEYS: [&str; 9] = [
    "profile",
    "topic",
    "alarm_rtttl",
    "url",
    "api_key",
    "cert_sha256",
    "insecure_tls",
    "alarm_sound",
    "timeout_ms",
];

/// The profile a key belongs to; `None` for `profile`, which every device has.
fn owner_of(key: &str) -> Option<ProfileName> {
    match key {
        "topic" | "alarm_rtttl" => Some(ProfileName::Awtrix3),
        "profile" => None,
        _ => Some(ProfileName::Lametric),
    }
}

/// One device table's known keys and values.
struct Fields<'a, 'v> {
    raw_id: &'a str,
    given: &'a [(&'static str, &'a Spanned<DeValue<'v>>)],
}

impl Fields<'_, '_> {
    fn get(&self, key: &str) -> Option<&Spanned<DeValue<'_>>> {
        self.given.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }

    /// A string value; a value of another type is reported and `None`.
    fn string(&self, parser: &mut Parser<'_>, key: &str) -> Option<(String, Range<usize>)> {
        let value = self.get(key)?;
        match value.get_ref() {
            DeValue::String(v) => Some((v.to_string(), value.span())),
            other => {
                parser.wrong_type(self.raw_id, key, "a string", other, &value.span());
                None
            }
        }
    }

    fn boolean(&self, parser: &mut Parser<'_>, key: &str) -> Option<(bool, Range<usize>)> {
        let value = self.get(key)?;
        match value.get_ref() {
            DeValue::Boolean(b) => Some((*b, value.span())),
            other => {
                parser.wrong_type(self.raw_id, key, "true or false", other, &value.span());
                None
            }
        }
    }

    fn integer(&self, parser: &mut Parser<'_>, key: &str) -> Option<(i64, Range<usize>)> {
        let value = self.get(key)?;
        let parsed = value.get_ref().as_integer().map(|i| {
            i64::from_str_radix(&i.as_str().replace('_', ""), i.radix()).unwrap_or(i64::MAX)
        });
        match parsed {
            Some(n) => Some((n, value.span())),
            None => {
                parser.wrong_type(
                    self.raw_id,
                    key,
                    "an integer",
                    value.get_ref(),
                    &value.span(),
                );
                None
            }
        }
    }
}

impl Parser<'_> {
    fn wrong_type(
        &mut self,
        raw_id: &str,
        key: &str,
        want: &str,
        got: &DeValue<'_>,
        span: &Range<usize>,
    ) {
        let shown = if key == "api_key" {
            "<redacted>".to_owned()
        } else {
            a_type(got)
        };
        self.error(
            span,
            format!("{key} of [devices.{raw_id}] must be {want}, not {shown}"),
        );
    }
}

fn has_key(given: &[(&'static str, &Spanned<DeValue<'_>>)], name: &str) -> bool {
    given.iter().any(|(k, _)| *k == name)
}

/// "a string", "an integer", ...
fn a_type(value: &DeValue<'_>) -> String {
    let name = value.type_str();
    let article = if name.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    };
    format!("{article} {name}")
}
