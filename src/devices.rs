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

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::domain::awtrix3::{Awtrix3Device, AwtrixTopic, Rtttl};
use crate::domain::{DeviceId, Devices, Profile, ProfileName};

/// What the rest of the configuration says, for the checks that span both.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// `ENABLED_SENDERS` as given (for the message), and whether it has `mqtt`.
    pub senders: &'a str,
    pub mqtt_enabled: bool,
    /// `STATE_STORE=none`: no store can hold a gateway-scheduled alarm.
    pub store_none: bool,
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

const DEVICE_KEYS: &str = "profile, topic, alarm_rtttl";

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
        let (mut profile, mut topic, mut rtttl) = (None, None, None);
        for (key, value) in fields {
            let slot = match &**key.get_ref() {
                "profile" => &mut profile,
                "topic" => &mut topic,
                "alarm_rtttl" => &mut rtttl,
                other => {
                    self.error(
                        &key.span(),
                        format!(
                            "unknown key {other:?} in [devices.{raw_id}]; expected {DEVICE_KEYS}"
                        ),
                    );
                    continue;
                }
            };
            match value.get_ref() {
                DeValue::String(v) => *slot = Some((v.to_string(), value.span())),
                other => self.error(
                    &value.span(),
                    format!(
                        "{} of [devices.{raw_id}] must be a string, not {}",
                        key.get_ref(),
                        a_type(other)
                    ),
                ),
            }
        }
        let Some((profile_name, profile_span)) = profile else {
            if !has_key(fields, "profile") {
                self.error(
                    &id.span(),
                    format!(
                        "[devices.{raw_id}] has no profile (missing field); expected profile = \"awtrix3\""
                    ),
                );
            }
            return None;
        };
        let profile = match ProfileName::parse(&profile_name) {
            Some(p) => p,
            None => {
                let known: Vec<&str> = ProfileName::ALL.iter().map(|p| p.as_str()).collect();
                self.error(
                    &profile_span,
                    format!(
                        "unknown profile {profile_name:?} for device {raw_id:?}; expected {}",
                        known.join(" or ")
                    ),
                );
                return None;
            }
        };
        let profile = match profile {
            ProfileName::Generic => {
                for (name, given) in [("topic", &topic), ("alarm_rtttl", &rtttl)] {
                    if let Some((_, span)) = given {
                        self.error(
                            span,
                            format!("{name} applies to profile awtrix3 only; device {raw_id:?} has profile generic"),
                        );
                    }
                }
                Profile::Generic
            }
            ProfileName::Awtrix3 => {
                if !context.mqtt_enabled {
                    self.error(
                        &profile_span,
                        format!(
                            "device {raw_id:?} has profile awtrix3, which is reached over MQTT only, but ENABLED_SENDERS={:?} has no mqtt; add mqtt to ENABLED_SENDERS",
                            context.senders
                        ),
                    );
                }
                if context.store_none {
                    self.error(
                        &profile_span,
                        format!(
                            "device {raw_id:?} has profile awtrix3, whose alarms the gateway holds in the state store until their time, but STATE_STORE=none keeps nothing; use STATE_STORE=file:<path> (or memory)"
                        ),
                    );
                }
                let topic = match topic {
                    // A topic of the wrong type was reported already.
                    None if has_key(fields, "topic") => None,
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
                let rtttl = match rtttl {
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
                Profile::Awtrix3(Awtrix3Device::new(topic?, rtttl))
            }
        };
        Some((device_id?, profile))
    }
}

fn has_key(table: &DeTable<'_>, name: &str) -> bool {
    table.keys().any(|k| &**k.get_ref() == name)
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
