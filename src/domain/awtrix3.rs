//! The `awtrix3` profile (SPEC 8.1): how a [`Command`] reaches a clock running the AWTRIX 3
//! firmware (e.g. the Ulanzi TC001), which listens on `<its prefix>/notify`,
//! `<its prefix>/power` and `<its prefix>/settings` and knows nothing of the generic payload.
//!
//! | Command | Topic | Payload |
//! |---|---|---|
//! | message | `<topic>/notify` | `{"text":message,"duration":durationSeconds}` |
//! | brightness 1–100 | `<topic>/power`, then `<topic>/settings` | `{"power":true}`, then `{"ABRI":false,"BRI":round(level × 255 / 100)}` |
//! | brightness 0 | `<topic>/power` | `{"power":false}` |
//! | alarm | `<topic>/notify`, at `alarmTime` | `{"text":label or "Alarm","hold":true,"wakeup":true,"loopSound":true,"rtttl":melody}` |
//!
//! AWTRIX has no alarm of its own: the gateway holds the alarm and publishes the
//! notification at its time. The firmware sends no acknowledgement.
//!
//! Each choice rests on the firmware's source (`Blueforcer/awtrix3` at `723e8c7`, the
//! line numbers below; tag 0.98 has the same code, one or two lines higher in
//! `MQTTManager.cpp` and `DisplayManager.cpp`):
//!
//! - **notify is dropped unless the payload starts with `{` and ends with `}`**
//!   (`MQTTManager.cpp` 52–57): the gateway's JSON has no surrounding whitespace.
//! - **Brightness through `power`.** `{"power":false}` sets `MATRIX_OFF` and brightness 0
//!   (`MQTTManager.cpp` 125–140, `DisplayManager.cpp` 1744–1757); `BRI` only sets
//!   `BRIGHTNESS` (2118), applied by `applyAllSettings` (2253, 120–130) unless the matrix
//!   is off or `ABRI` is on (2126: hence `"ABRI":false`). An alarm's `wakeup` lights a
//!   switched-off matrix at `BRIGHTNESS` (`Overlays.cpp` 50–53, `DisplayManager.cpp`
//!   67–84) and darkens it again when the notification is gone (`Overlays.cpp` 68–70,
//!   `DisplayManager.cpp` 1402–1423). With release 2's `BRI` 0, `BRIGHTNESS` itself was 0
//!   and the alarm stayed dark. So level 0 is `power:false`, and any other level first
//!   `power:true` (a `BRI` alone would not undo a `power:false`).
//! - **An alarm rings until dismissed.** `hold` keeps a notification past its `duration`
//!   (`Overlays.cpp` 56); a melody plays only when `sound` or `rtttl` is set, and once
//!   unless `loopSound` (`Overlays.cpp` 346–361; the keys are read in `DisplayManager.cpp`
//!   820–828). Hence `loopSound` and always an `rtttl`: the device's `alarm_rtttl` or
//!   [`BUILT_IN_MELODY`]. The middle button or `<topic>/notify/dismiss` erases the
//!   notification and stops the sound (`DisplayManager.cpp` 1390–1414,
//!   `MQTTManager.cpp` 62–66).
//! - **RTTTL is checked at start-up** ([`Rtttl`]): the firmware's melody parser
//!   (melody-player's `MelodyFactory::loadRtttlString`, called by `playRTTTLString` in
//!   `PeripheryManager.cpp`) plays nothing without two `:`, reads the settings only as
//!   `d=…,o=…,b=…`, and plays an unknown or upper-case note as a pause.
//! - **Text the font cannot draw is transliterated** ([`display_text`]): `utf8ascii`
//!   (`Functions.cpp` 147–250, applied to `text` at `DisplayManager.cpp` 940) maps
//!   Latin-1 (lead bytes 0xC2, 0xC3), the Polish letters (0xC4, 0xC5, to ASCII), Cyrillic
//!   А–я with Ё Є І Ї ё є і ї Ґ ґ (0xD0–0xD2) and `€` (0x82 0xAC) to its font. The 0xC4
//!   and 0xC5 cases have no `break` (173–194), so every other letter of those blocks
//!   (`č`, `ğ`, `š`) falls through to the Cyrillic cases and is drawn as a Cyrillic
//!   glyph; other characters are dropped or mis-drawn the same way.
//! - **4096 bytes per notification** ([`MAX_NOTIFY_BYTES`]): the firmware parses a
//!   notification into a 6144-byte JSON document that must hold the copied strings
//!   besides the object (`DisplayManager.cpp` 758; a failed parse drops it, 759–765)
//!   and receives MQTT packets of at most 8192 bytes (`platformio.ini`,
//!   `-DMQTT_MAX_PACKET_SIZE=8192`); 4096 leaves room for both.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::command::field;
use super::presence::{Reading, stats_device_topic, stats_topic};
use super::wire::{MqttForm, Publication};
use super::{Command, ValidationError};

/// The clock's AWTRIX MQTT prefix: one or more topic levels, none empty, no wildcard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwtrixTopic(String);

/// Why a string is not an AWTRIX topic prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AwtrixTopicError {
    #[error("the topic is empty")]
    Empty,
    #[error("the topic must not contain the MQTT wildcards + or #")]
    Wildcard,
    #[error("the topic has an empty level (a leading, trailing or double /)")]
    EmptyLevel,
    #[error("the topic must not start with $ (reserved for the broker)")]
    Reserved,
    #[error("the topic must not contain control characters")]
    Control,
    #[error("the topic is longer than 1024 bytes")]
    TooLong,
}

impl AwtrixTopic {
    /// Parses a prefix as the clock's settings show it (e.g. `awtrix_a1b2c3`).
    pub fn parse(raw: &str) -> Result<Self, AwtrixTopicError> {
        if raw.is_empty() {
            return Err(AwtrixTopicError::Empty);
        }
        if raw.len() > 1024 {
            return Err(AwtrixTopicError::TooLong);
        }
        if raw.contains(['+', '#']) {
            return Err(AwtrixTopicError::Wildcard);
        }
        if raw.chars().any(char::is_control) {
            return Err(AwtrixTopicError::Control);
        }
        if raw.split('/').any(str::is_empty) {
            return Err(AwtrixTopicError::EmptyLevel);
        }
        if raw.starts_with('$') {
            return Err(AwtrixTopicError::Reserved);
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AwtrixTopic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One AWTRIX 3 clock: its prefix and the melody its alarms play.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Awtrix3Device {
    pub topic: AwtrixTopic,
    /// `alarm_rtttl`: the melody of every alarm; [`BUILT_IN_MELODY`] when not configured.
    pub alarm_rtttl: Option<Rtttl>,
}

impl Awtrix3Device {
    pub fn new(topic: AwtrixTopic, alarm_rtttl: Option<Rtttl>) -> Self {
        Self { topic, alarm_rtttl }
    }

    /// The melody an alarm plays: `alarm_rtttl`, else [`BUILT_IN_MELODY`].
    pub fn melody(&self) -> &str {
        self.alarm_rtttl
            .as_ref()
            .map_or(BUILT_IN_MELODY, Rtttl::as_str)
    }
}

/// What a notification shows when the alarm has no label.
pub const DEFAULT_ALARM_TEXT: &str = "Alarm";

/// The melody of an alarm on a clock without `alarm_rtttl`: an alarm always rings.
pub const BUILT_IN_MELODY: &str = "alarm:d=8,o=6,b=160:c,e,g,2c7,4p,c,e,g,2c7,2p";

/// The largest `notify` payload the gateway sends (see the module doc); a message or label
/// that would make a larger one is refused with [`ValidationError::NotifyTooLarge`].
pub const MAX_NOTIFY_BYTES: usize = 4096;

/// The `notify` suffix: notifications and (held) alarms.
pub const NOTIFY: &str = "notify";
/// The `settings` suffix: brightness.
pub const SETTINGS: &str = "settings";
/// The `power` suffix: the matrix on or off.
pub const POWER: &str = "power";

/// The JSON of `<topic>/notify` (the subset of AWTRIX's notification this gateway sends;
/// the virtual clock reads it back, ignoring keys it does not know as the firmware does).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notify {
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<u16>,
    /// Stays on the display until dismissed (button or `notify/dismiss`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold: Option<bool>,
    /// Lights the display for it when the matrix is off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wakeup: Option<bool>,
    /// Plays the melody again each time it ends, for as long as the notification is shown.
    #[serde(default, rename = "loopSound", skip_serializing_if = "Option::is_none")]
    pub loop_sound: Option<bool>,
    /// A melody in RTTTL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtttl: Option<String>,
}

/// The JSON of `<topic>/settings` (brightness only).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[allow(non_snake_case)]
pub struct Settings {
    /// Automatic brightness; turned off so the level set stays.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ABRI: Option<bool>,
    /// Brightness 0–255.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub BRI: Option<u8>,
}

/// The JSON of `<topic>/power`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Power {
    pub power: bool,
}

/// `level` (0–100) on AWTRIX's 0–255 scale, rounded half up: 1→3, 40→102, 100→255.
pub fn brightness(level: u8) -> u8 {
    let scaled = (u32::from(level.min(100)) * 255 + 50) / 100;
    u8::try_from(scaled).unwrap_or(u8::MAX)
}

impl Awtrix3Device {
    /// Everything to publish for `command`, in order: one publication, or two for a
    /// brightness above 0 (`power`, then `settings`). For an alarm this is the
    /// notification the gateway publishes at the alarm's time
    /// ([`Command::alarm_instant`]), not before.
    pub fn publications(&self, command: &Command) -> Vec<Publication> {
        match command {
            Command::DisplayMessage {
                message,
                duration_seconds,
            } => vec![self.publish(
                NOTIFY,
                &Notify {
                    text: display_text(message),
                    duration: Some(*duration_seconds),
                    ..Notify::default()
                },
            )],
            Command::SetBrightness { level: 0 } => {
                vec![self.publish(POWER, &Power { power: false })]
            }
            Command::SetBrightness { level } => vec![
                self.publish(POWER, &Power { power: true }),
                self.publish(
                    SETTINGS,
                    &Settings {
                        ABRI: Some(false),
                        BRI: Some(brightness(*level)),
                    },
                ),
            ],
            Command::SetAlarm { label, .. } => vec![self.alarm(label)],
        }
    }

    /// How `command` goes out over MQTT: [`Self::publications`], never retained (a
    /// retained notification would be shown again every time the clock reconnects), and
    /// without the request/response pair (the firmware never answers).
    pub fn mqtt_form(&self, command: &Command) -> MqttForm {
        MqttForm {
            publications: self.publications(command),
            answers: false,
            may_retain: false,
        }
    }

    /// The topics by which the clock says it is there (SPEC 11.1): `<topic>/stats`, its
    /// readings every 10 s (kept as its `info`), and `<topic>/stats/device`, `online` at
    /// connection and `offline` as its Last Will. Neither is retained, so a clock silent
    /// for longer than `PRESENCE_TIMEOUT_SECS` is offline ([`super::Profile::falls_silent`]).
    pub fn presence_topics(&self) -> Vec<(String, Reading)> {
        vec![
            (stats_topic(self.topic.as_str()), Reading::Stats),
            (stats_device_topic(self.topic.as_str()), Reading::State),
        ]
    }

    /// A held alarm ([`Self::alarm_publication`] when it was scheduled) as the clock is
    /// configured now (SPEC 8.1): the notification held, published on the clock's current
    /// topic with its current melody (a clock given another `topic` or `alarm_rtttl` since,
    /// and a restart, gets it there and so). A payload that is not a notification is kept
    /// as it is.
    pub fn held_alarm_now(&self, held: &Publication) -> Publication {
        let payload = match serde_json::from_slice::<Notify>(&held.payload) {
            Ok(notify) => serde_json::to_vec(&Notify {
                rtttl: Some(self.melody().to_owned()),
                ..notify
            })
            .unwrap_or_else(|_| held.payload.clone()),
            Err(_) => held.payload.clone(),
        };
        Publication {
            topic: format!("{}/{NOTIFY}", self.topic),
            payload,
        }
    }

    /// The notification a held alarm publishes at its time; `None` for another command.
    pub fn alarm_publication(&self, command: &Command) -> Option<Publication> {
        match command {
            Command::SetAlarm { label, .. } => Some(self.alarm(label)),
            _ => None,
        }
    }

    /// Refuses a command whose notification the firmware would drop for its size
    /// ([`MAX_NOTIFY_BYTES`]), naming the field that made it so.
    pub fn admits(&self, command: &Command) -> Result<(), ValidationError> {
        let field = match command {
            Command::DisplayMessage { .. } => field::MESSAGE,
            Command::SetAlarm { .. } => field::LABEL,
            Command::SetBrightness { .. } => return Ok(()),
        };
        if self
            .publications(command)
            .iter()
            .any(|p| p.payload.len() > MAX_NOTIFY_BYTES)
        {
            return Err(ValidationError::NotifyTooLarge {
                field,
                limit: MAX_NOTIFY_BYTES,
            });
        }
        Ok(())
    }

    fn alarm(&self, label: &str) -> Publication {
        let text = if label.is_empty() {
            DEFAULT_ALARM_TEXT.to_owned()
        } else {
            display_text(label)
        };
        self.publish(
            NOTIFY,
            &Notify {
                text,
                duration: None,
                hold: Some(true),
                wakeup: Some(true),
                loop_sound: Some(true),
                rtttl: Some(self.melody().to_owned()),
            },
        )
    }

    fn publish(&self, suffix: &str, payload: &impl Serialize) -> Publication {
        Publication {
            topic: format!("{}/{suffix}", self.topic),
            // Strings, integers and booleans cannot fail to serialise.
            payload: serde_json::to_vec(payload).unwrap_or_default(),
        }
    }
}

/// `text` as the clock can draw it: the characters of its font kept ([`firmware_draws`]),
/// control characters removed (a tab or line break becomes a space), and everything else
/// transliterated to ASCII (`Čaj` → `Caj`, `北京` → `Bei Jing`), or dropped when there is
/// no transliteration.
pub fn display_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if firmware_draws(c) {
            out.push(c);
        } else if matches!(c, '\t' | '\n' | '\r') {
            out.push(' ');
        } else if !c.is_control() {
            let ascii = deunicode::deunicode_char(c).unwrap_or_default();
            out.extend(ascii.chars().filter(|a| !a.is_ascii_control()));
        }
    }
    out
}

/// The characters the firmware's `utf8ascii` maps to its font (see the module doc):
/// printable ASCII, printable Latin-1, the Polish letters, Cyrillic А–я with
/// Ё Є І Ї ё є і ї Ґ ґ, and `€`.
pub fn firmware_draws(c: char) -> bool {
    matches!(c,
        ' '..='~'
        | '\u{A0}'..='\u{FF}'
        | 'Ą' | 'ą' | 'Ć' | 'ć' | 'Ę' | 'ę' | 'Ł' | 'ł' | 'Ń' | 'ń'
        | 'Ś' | 'ś' | 'Ź' | 'ź' | 'Ż' | 'ż'
        | 'А'..='я'
        | 'Ё' | 'Є' | 'І' | 'Ї' | 'ё' | 'є' | 'і' | 'ї' | 'Ґ' | 'ґ'
        | '€')
}

/// An RTTTL melody the firmware plays as written: `name:d=<duration>,o=<octave>,b=<bpm>:notes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rtttl(String);

/// The longest `alarm_rtttl`, so that an alarm's notification stays far below
/// [`MAX_NOTIFY_BYTES`] whatever its label.
pub const MAX_RTTTL_BYTES: usize = 1024;

/// Why a string is not a melody the firmware would play.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RtttlError {
    #[error("it is longer than {MAX_RTTTL_BYTES} bytes")]
    TooLong,
    #[error("it contains control characters")]
    Control,
    #[error("it must be three parts separated by `:` (name:settings:notes)")]
    Parts,
    #[error("the name (before the first `:`) is empty")]
    NoName,
    #[error(
        "the settings must be d=<duration>,o=<octave>,b=<bpm> in this order (the firmware reads no other form), not {0:?}"
    )]
    Settings(String),
    #[error("d={0} is not a duration: 1, 2, 4, 8, 16 or 32")]
    Duration(String),
    #[error("o={0} is not an octave: 4 to 7")]
    Octave(String),
    #[error("b={0} is not a tempo: 10 to 300 beats per minute")]
    Bpm(String),
    #[error("there are no notes after the second `:`")]
    NoNotes,
    #[error(
        "note {0:?} is not [duration]<c|d|e|f|g|a|b|p>[#][.][octave 4-7][.] in lower case (the firmware plays anything else wrongly or as a pause)"
    )]
    Note(String),
}

/// The note lengths RTTTL (and the firmware) know.
const DURATIONS: [u32; 6] = [1, 2, 4, 8, 16, 32];

impl Rtttl {
    /// Parses a melody as the firmware's parser reads it; surrounding spaces are trimmed.
    pub fn parse(raw: &str) -> Result<Self, RtttlError> {
        let raw = raw.trim();
        if raw.len() > MAX_RTTTL_BYTES {
            return Err(RtttlError::TooLong);
        }
        if raw.chars().any(char::is_control) {
            return Err(RtttlError::Control);
        }
        let parts: Vec<&str> = raw.split(':').collect();
        let [name, settings, notes] = parts[..] else {
            return Err(RtttlError::Parts);
        };
        if name.trim().is_empty() {
            return Err(RtttlError::NoName);
        }
        Self::settings(settings.trim())?;
        let notes = notes.trim();
        if notes.is_empty() {
            return Err(RtttlError::NoNotes);
        }
        for note in notes.split(',') {
            let note = note.trim();
            if !valid_note(note) {
                return Err(RtttlError::Note(note.to_owned()));
            }
        }
        Ok(Self(raw.to_owned()))
    }

    fn settings(settings: &str) -> Result<(), RtttlError> {
        let wrong = || RtttlError::Settings(settings.to_owned());
        let values: Vec<&str> = settings.split(',').collect();
        let [d, o, b] = values[..] else {
            return Err(wrong());
        };
        let value = |pair: &str, key: &str| -> Result<String, RtttlError> {
            pair.strip_prefix(key)
                .and_then(|v| v.strip_prefix('='))
                .map(str::to_owned)
                .ok_or_else(wrong)
        };
        let number = |v: &str| -> Option<u32> {
            (!v.is_empty() && v.len() <= 3 && v.bytes().all(|b| b.is_ascii_digit()))
                .then(|| v.parse().ok())
                .flatten()
        };
        let d = value(d, "d")?;
        if !number(&d).is_some_and(|n| DURATIONS.contains(&n)) {
            return Err(RtttlError::Duration(d));
        }
        let o = value(o, "o")?;
        if !number(&o).is_some_and(|n| (4..=7).contains(&n)) {
            return Err(RtttlError::Octave(o));
        }
        let b = value(b, "b")?;
        if !number(&b).is_some_and(|n| (10..=300).contains(&n)) {
            return Err(RtttlError::Bpm(b));
        }
        Ok(())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// `[duration]<note>[#][.][octave][.]`, as the firmware's `parseRtttlNote` reads it.
fn valid_note(note: &str) -> bool {
    let bytes = note.as_bytes();
    let digits = bytes.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits > 0 {
        let ok = note[..digits]
            .parse::<u32>()
            .is_ok_and(|d| DURATIONS.contains(&d));
        if !ok {
            return false;
        }
    }
    let mut rest = &bytes[digits..];
    let Some((&letter, tail)) = rest.split_first() else {
        return false;
    };
    if !b"cdefgabp".contains(&letter) {
        return false;
    }
    rest = tail;
    if letter != b'p'
        && let Some(tail) = rest.strip_prefix(b"#")
    {
        rest = tail;
    }
    if let Some(tail) = rest.strip_prefix(b".") {
        rest = tail;
    }
    if let Some((&octave, tail)) = rest.split_first()
        && (b'4'..=b'7').contains(&octave)
    {
        rest = tail;
    }
    if let Some(tail) = rest.strip_prefix(b".") {
        rest = tail;
    }
    rest.is_empty()
}

impl fmt::Display for Rtttl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn device(rtttl: Option<&str>) -> Awtrix3Device {
        Awtrix3Device::new(
            AwtrixTopic::parse("awtrix_a1b2c3").unwrap(),
            rtttl.map(|r| Rtttl::parse(r).unwrap()),
        )
    }

    fn texts(d: &Awtrix3Device, command: &Command) -> Vec<(String, String)> {
        d.publications(command)
            .into_iter()
            .map(|p| (p.topic, String::from_utf8(p.payload).unwrap()))
            .collect()
    }

    fn pair(topic: &str, payload: &str) -> (String, String) {
        (topic.to_owned(), payload.to_owned())
    }

    #[test]
    fn brightness_powers_the_matrix_on_then_sets_bri_and_zero_powers_it_off() {
        let d = device(None);
        for (level, bri) in [(1, 3), (40, 102), (50, 128), (99, 252), (100, 255)] {
            let want = format!(r#"{{"ABRI":false,"BRI":{bri}}}"#);
            assert_eq!(
                texts(&d, &Command::brightness(Some(level)).unwrap()),
                [
                    pair("awtrix_a1b2c3/power", r#"{"power":true}"#),
                    pair("awtrix_a1b2c3/settings", &want)
                ],
                "{level}"
            );
        }
        assert_eq!(
            texts(&d, &Command::brightness(Some(0)).unwrap()),
            [pair("awtrix_a1b2c3/power", r#"{"power":false}"#)]
        );
    }

    #[test]
    fn a_message_is_a_notification_with_its_duration() {
        let message = Command::message(Some("Tea \"now\"".into()), Some(15)).unwrap();
        assert_eq!(
            texts(&device(None), &message),
            [pair(
                "awtrix_a1b2c3/notify",
                r#"{"text":"Tea \"now\"","duration":15}"#
            )]
        );
    }

    #[test]
    fn an_alarm_holds_wakes_and_loops_its_melody_or_the_built_in_one() {
        let alarm = Command::alarm("2026-01-02T07:30:00+02:00", Some("Up".into())).unwrap();
        let want = [pair(
            "awtrix_a1b2c3/notify",
            r#"{"text":"Up","hold":true,"wakeup":true,"loopSound":true,"rtttl":"alarm:d=4,o=5,b=140:c6,p"}"#,
        )];
        assert_eq!(
            texts(&device(Some("alarm:d=4,o=5,b=140:c6,p")), &alarm),
            want
        );
        assert_eq!(
            device(Some("alarm:d=4,o=5,b=140:c6,p")).alarm_publication(&alarm),
            device(Some("alarm:d=4,o=5,b=140:c6,p"))
                .publications(&alarm)
                .pop()
        );
        let unlabelled = Command::alarm("2026-01-02T07:30:00Z", None).unwrap();
        let want = format!(
            r#"{{"text":"Alarm","hold":true,"wakeup":true,"loopSound":true,"rtttl":"{BUILT_IN_MELODY}"}}"#
        );
        assert_eq!(
            texts(&device(None), &unlabelled),
            [pair("awtrix_a1b2c3/notify", &want)]
        );
        assert!(Rtttl::parse(BUILT_IN_MELODY).is_ok());
        assert_eq!(
            device(None).alarm_publication(&Command::brightness(Some(1)).unwrap()),
            None
        );
    }

    #[test]
    fn text_keeps_what_the_font_draws_and_transliterates_the_rest() {
        for (given, shown) in [
            ("Tea at 5 ~ {ok}", "Tea at 5 ~ {ok}"),
            ("Łódź, Zażółć gęślą jaźń", "Łódź, Zażółć gęślą jaźń"),
            ("Grüße, Ærø, ½ £ © ÿ", "Grüße, Ærø, ½ £ © ÿ"),
            (
                "Привет, Ёжик! Україна, Ґанок",
                "Привет, Ёжик! Україна, Ґанок",
            ),
            ("5 €", "5 €"),
            // Letters of the 0xC4/0xC5 blocks the firmware would draw as Cyrillic glyphs.
            ("Čaj, Doğan, Škoda, Őrség", "Caj, Dogan, Skoda, Orség"),
            // Cyrillic outside the font (Serbian ђ, Macedonian ѓ).
            ("ђ ѓ", "dj gj"),
            ("北京", "Bei Jing "),
            ("line\none\ttab\r", "line one tab "),
            ("bell\u{7}\u{1b}[2J\u{9b}", "bell[2J"),
            ("zero\u{200b}width\u{202e}", "zero width"),
        ] {
            assert_eq!(display_text(given), shown, "{given:?}");
        }
        let smile = display_text("hi 😀");
        assert!(smile.starts_with("hi ") && smile.is_ascii(), "{smile:?}");
        // What the gateway sends: every character one the firmware draws.
        for c in display_text("Čaj 😀 北京 ђ \u{2028} ẞ").chars() {
            assert!(firmware_draws(c), "{c:?}");
        }
    }

    #[test]
    fn the_text_of_a_message_and_of_an_alarm_label_is_transliterated() {
        let message = Command::message(Some("Čaj\n".into()), Some(5)).unwrap();
        assert_eq!(
            texts(&device(None), &message)[0].1,
            r#"{"text":"Caj ","duration":5}"#
        );
        let alarm = Command::alarm("2030-01-01T07:00:00Z", Some("Doğan".into())).unwrap();
        let p = device(None).alarm_publication(&alarm).unwrap();
        assert!(
            String::from_utf8(p.payload)
                .unwrap()
                .starts_with(r#"{"text":"Dogan","#)
        );
    }

    #[test]
    fn a_notification_over_4096_bytes_is_refused_naming_the_field_and_the_limit() {
        let d = device(None);
        // {"text":"…","duration":5} is 24 bytes around the text.
        let fits = Command::message(Some("x".repeat(MAX_NOTIFY_BYTES - 24)), Some(5)).unwrap();
        assert_eq!(d.publications(&fits)[0].payload.len(), MAX_NOTIFY_BYTES);
        assert_eq!(d.admits(&fits), Ok(()));
        let over = Command::message(Some("x".repeat(MAX_NOTIFY_BYTES - 23)), Some(5)).unwrap();
        let e = d.admits(&over).unwrap_err();
        assert_eq!(
            e,
            ValidationError::NotifyTooLarge {
                field: "message",
                limit: 4096
            }
        );
        assert!(e.to_string().contains("4096 bytes"), "{e}");
        // Counted after transliteration and JSON escaping: 1,000 quotes are 2,000 bytes.
        let quotes = Command::message(Some("\"".repeat(2100)), Some(5)).unwrap();
        assert!(d.admits(&quotes).is_err());
        let cjk = Command::message(Some("北".repeat(1100)), Some(5)).unwrap();
        assert!(d.admits(&cjk).is_err(), "1,100 × \"Bei \" is 4,400 bytes");
        // A label within 256 characters can still be too big once transliterated.
        let label = Command::alarm("2030-01-01T07:00:00Z", Some("😀".repeat(256))).unwrap();
        match d.admits(&label) {
            Err(ValidationError::NotifyTooLarge { field, .. }) => assert_eq!(field, "label"),
            other => assert!(
                d.alarm_publication(&label).unwrap().payload.len() <= MAX_NOTIFY_BYTES,
                "{other:?}"
            ),
        }
        let fine = Command::alarm("2030-01-01T07:00:00Z", Some("x".repeat(256))).unwrap();
        assert_eq!(d.admits(&fine), Ok(()));
        assert_eq!(d.admits(&Command::brightness(Some(40)).unwrap()), Ok(()));
    }

    #[test]
    fn a_melody_is_rtttl_the_firmware_plays_as_written() {
        for good in [
            "alarm:d=4,o=5,b=140:c6,p,c6,p,c6",
            " Tetris:d=4,o=5,b=160:e6,8b,8c6,8d6,16e6,16d6,8c6,8b,a,8a,8c6,e6 ",
            "x:d=32,o=7,b=300:32c#7.,2p,a,b.,g#4,f.6.",
            BUILT_IN_MELODY,
        ] {
            assert!(Rtttl::parse(good).is_ok(), "{good}");
        }
        assert_eq!(
            Rtttl::parse(" a:d=4,o=5,b=140:c ").unwrap().as_str(),
            "a:d=4,o=5,b=140:c"
        );
        for (bad, says) in [
            ("c6,p,c6", "three parts"),
            ("a:b:c:d", "three parts"),
            (":d=4,o=5,b=140:c", "name"),
            ("a:d=4,o=5,b=140:", "no notes"),
            ("a:d=4,o=5,b=140:  ", "no notes"),
            ("a:o=5,b=140:c", "d=<duration>,o=<octave>,b=<bpm>"),
            ("a:d=4, o=5, b=140:c", "d=<duration>,o=<octave>,b=<bpm>"),
            ("a:b=140,o=5,d=4:c", "d=<duration>,o=<octave>,b=<bpm>"),
            ("a:d=3,o=5,b=140:c", "d=3 is not a duration"),
            ("a:d=4,o=9,b=140:c", "o=9 is not an octave"),
            ("a:d=4,o=5,b=999:c", "b=999 is not a tempo"),
            ("a:d=4,o=5,b=:c", "b= is not a tempo"),
            ("a:d=4,o=5,b=140:C6", "note \"C6\""),
            ("a:d=4,o=5,b=140:c,,d", "note \"\""),
            ("a:d=4,o=5,b=140:c,x", "note \"x\""),
            ("a:d=4,o=5,b=140:3c", "note \"3c\""),
            ("a:d=4,o=5,b=140:c9", "note \"c9\""),
            ("a:d=4,o=5,b=140:c6 d6", "note \"c6 d6\""),
            ("a:d=4,o=5,b=140:c\u{7}d", "control"),
        ] {
            let e = Rtttl::parse(bad).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
        let long = format!("a:d=4,o=5,b=140:{}", "c,".repeat(600));
        assert_eq!(Rtttl::parse(&long), Err(RtttlError::TooLong));
    }

    #[test]
    fn a_topic_is_levels_without_wildcards() {
        assert!(AwtrixTopic::parse("awtrix_a1b2c3").is_ok());
        assert!(AwtrixTopic::parse("home/awtrix/kitchen").is_ok());
        assert_eq!(AwtrixTopic::parse(""), Err(AwtrixTopicError::Empty));
        assert_eq!(AwtrixTopic::parse("a/+/b"), Err(AwtrixTopicError::Wildcard));
        assert_eq!(AwtrixTopic::parse("a/#"), Err(AwtrixTopicError::Wildcard));
        for bad in ["/a", "a/", "a//b"] {
            assert_eq!(
                AwtrixTopic::parse(bad),
                Err(AwtrixTopicError::EmptyLevel),
                "{bad}"
            );
        }
        assert_eq!(
            AwtrixTopic::parse("$SYS/x"),
            Err(AwtrixTopicError::Reserved)
        );
        assert_eq!(
            AwtrixTopic::parse("a\u{0}b"),
            Err(AwtrixTopicError::Control)
        );
    }
}
