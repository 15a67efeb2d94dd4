//! The virtual clock as an AWTRIX 3 clock (SPEC 8.1): what such a clock makes of what
//! arrives on `<topic>/notify`, `<topic>/notify/dismiss`, `<topic>/power` and
//! `<topic>/settings`. The server's side of the same wire is [`crate::domain::awtrix3`]; a
//! test here reads back every payload it writes.
//!
//! Read as the firmware reads it (`Blueforcer/awtrix3`; the lines are cited in
//! [`crate::domain::awtrix3`]): a `notify` payload is dropped unless it starts with `{` and
//! ends with `}` (no whitespace around it), or when it is larger than the firmware's JSON
//! document; otherwise it must be one JSON object. `text`, `duration` (seconds, default the
//! clock's app time, 7 s), `hold` (shown until dismissed: how the gateway rings an alarm),
//! `wakeup`, `loopSound` and `rtttl` of a notification, `power` (the matrix on or off), and
//! `BRI` (0–255) and `ABRI` (automatic brightness) of the settings are shown. The
//! firmware's many other keys (colours, icons, ...) are valid but not drawn here: they are
//! listed as ignored. A field of the wrong type is a rejection, with the reason. AWTRIX
//! does not acknowledge anything, so neither does this clock.

use serde_json::{Map, Value};

use super::command::{Action, Received, unreadable};
/// Defined in [`super::shown`], below both this file and [`super::command`].
pub use super::shown::{Notification, Shown};
pub use crate::domain::awtrix3::{AwtrixTopic, NOTIFY, POWER, SETTINGS};

/// The topic levels that dismiss a held notification (any payload).
pub const DISMISS: &str = "notify/dismiss";
/// How long a notification without `duration` is shown: the firmware's app time (`ATIME`)
/// when nobody changed it.
pub const DEFAULT_DURATION_SECS: u32 = 7;
/// The largest `notify` payload the firmware can parse: its JSON document holds 6144 bytes,
/// strings included (`DisplayManager.cpp` 758); a larger notification is dropped.
pub const FIRMWARE_JSON_DOCUMENT: usize = 6144;

/// The topics an AWTRIX clock with MQTT prefix `topic` listens to, as far as this clock
/// shows them.
pub fn topic_filters(topic: &str) -> Vec<String> {
    [NOTIFY, DISMISS, POWER, SETTINGS]
        .iter()
        .map(|level| format!("{topic}/{level}"))
        .collect()
}

/// The clock's MQTT prefix as given, surrounding spaces trimmed (as the firmware trims
/// them), checked as `DEVICES_FILE` checks a `topic`. The error says what is wrong.
pub fn check_topic(raw: &str) -> Result<AwtrixTopic, String> {
    AwtrixTopic::parse(raw.trim()).map_err(|e| {
        format!(
            "{raw:?}: {e}; pass the clock's MQTT prefix, e.g. awtrix_a1b2c3 (its web \
             interface shows it under MQTT, Prefix)"
        )
    })
}

/// Reads one delivery on `topic` for the AWTRIX clock `name` with MQTT prefix `base`.
/// `None` when the topic is none of [`topic_filters`].
pub fn parse(
    name: &str,
    base: &str,
    topic: &str,
    payload: &[u8],
    retained: bool,
) -> Option<Received> {
    let level = topic.strip_prefix(base)?.strip_prefix('/')?;
    let action = match level {
        // The firmware dismisses whatever the payload.
        DISMISS => Action::Awtrix(Shown::Dismiss),
        NOTIFY => notify(payload),
        POWER => read(POWER, payload, power),
        SETTINGS => read(SETTINGS, payload, settings),
        _ => return None,
    };
    Some(Received {
        device_id: name.to_owned(),
        action,
        command_id: None,
        retained,
    })
}

/// What the clock makes of `payload` on the topic level `kind`: one JSON object whose
/// fields `fields` accepts, else a rejection with the reason.
fn read(
    kind: &str,
    payload: &[u8],
    fields: fn(Map<String, Value>) -> Result<Shown, String>,
) -> Action {
    let shown = match serde_json::from_slice::<Value>(payload) {
        Ok(Value::Object(object)) => fields(object),
        Ok(_) => Err("the payload is not a JSON object".to_owned()),
        Err(e) => Err(unreadable(payload, &e)),
    };
    shown.map_or_else(
        |reason| Action::Invalid {
            kind: kind.to_owned(),
            reason,
        },
        Action::Awtrix,
    )
}

/// A `notify` payload, dropped first where the firmware drops it before parsing.
fn notify(payload: &[u8]) -> Action {
    let dropped = |reason: String| Action::Invalid {
        kind: NOTIFY.to_owned(),
        reason,
    };
    if payload.first() != Some(&b'{') || payload.last() != Some(&b'}') {
        return dropped(
            "dropped: the firmware takes a notification only when the payload starts with { \
             and ends with } (no whitespace around it)"
                .to_owned(),
        );
    }
    if payload.len() > FIRMWARE_JSON_DOCUMENT {
        return dropped(format!(
            "dropped: {} bytes, more than the firmware's {FIRMWARE_JSON_DOCUMENT}-byte JSON \
             document holds",
            payload.len()
        ));
    }
    read(NOTIFY, payload, notification)
}

fn notification(mut fields: Map<String, Value>) -> Result<Shown, String> {
    let n = Notification {
        text: take_string(&mut fields, "text")?.unwrap_or_default(),
        duration: take(&mut fields, "duration", |v| {
            v.as_u64().and_then(|d| u32::try_from(d).ok())
        })
        .map_err(|()| "duration must be a whole number of seconds".to_owned())?,
        hold: take_bool(&mut fields, "hold")?.unwrap_or(false),
        wakeup: take_bool(&mut fields, "wakeup")?.unwrap_or(false),
        loop_sound: take_bool(&mut fields, "loopSound")?.unwrap_or(false),
        rtttl: take_string(&mut fields, "rtttl")?,
        ignored: fields.into_iter().map(|(k, _)| k).collect(),
    };
    Ok(Shown::Notify(n))
}

/// `{"power":…}`; the firmware does nothing without the key.
fn power(mut fields: Map<String, Value>) -> Result<Shown, String> {
    take_bool(&mut fields, "power")?
        .map(Shown::Power)
        .ok_or_else(|| "the payload has no power key (the firmware does nothing)".to_owned())
}

fn settings(mut fields: Map<String, Value>) -> Result<Shown, String> {
    let brightness = take(&mut fields, "BRI", |v| {
        v.as_u64().and_then(|b| u8::try_from(b).ok())
    })
    .map_err(|()| "BRI must be an integer between 0 and 255".to_owned())?;
    let auto_brightness = take_bool(&mut fields, "ABRI")?;
    Ok(Shown::Settings {
        brightness,
        auto_brightness,
        ignored: fields.into_iter().map(|(k, _)| k).collect(),
    })
}

/// Removes `key`; `Ok(None)` when absent, `Err` when `read` refuses its value.
fn take<T>(
    fields: &mut Map<String, Value>,
    key: &str,
    read: impl Fn(&Value) -> Option<T>,
) -> Result<Option<T>, ()> {
    match fields.remove(key) {
        None => Ok(None),
        Some(v) => read(&v).map(Some).ok_or(()),
    }
}

fn take_string(fields: &mut Map<String, Value>, key: &str) -> Result<Option<String>, String> {
    take(fields, key, |v| v.as_str().map(str::to_owned))
        .map_err(|()| format!("{key} must be a string"))
}

fn take_bool(fields: &mut Map<String, Value>, key: &str) -> Result<Option<bool>, String> {
    take(fields, key, Value::as_bool).map_err(|()| format!("{key} must be true or false"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(level: &str, payload: &str) -> String {
        parse(
            "kitchen",
            "awtrix_a1b2c3",
            &format!("awtrix_a1b2c3/{level}"),
            payload.as_bytes(),
            false,
        )
        .unwrap()
        .plain_line()
    }

    #[test]
    fn the_payloads_of_the_spec_table_become_one_plain_line_each() {
        assert_eq!(
            line("notify", r#"{"text": "tea is ready", "duration": 10}"#),
            r#"kitchen notify text="tea is ready" duration=10"#
        );
        assert_eq!(
            line(
                "notify",
                r#"{"text":"wake up","hold":true,"wakeup":true,"loopSound":true,"rtttl":"alarm:d=4,o=5,b=140:c6,p,c6"}"#
            ),
            r#"kitchen alarm text="wake up" hold=true wakeup=true loopSound=true rtttl="alarm:d=4,o=5,b=140:c6,p,c6""#
        );
        assert_eq!(
            line("notify", r#"{"text":"Alarm","hold":true,"wakeup":true}"#),
            r#"kitchen alarm text="Alarm" hold=true wakeup=true"#
        );
        for bri in [0, 102, 255] {
            assert_eq!(
                line("settings", &format!(r#"{{"ABRI":false,"BRI":{bri}}}"#)),
                format!("kitchen settings ABRI=false BRI={bri}")
            );
        }
        assert_eq!(line("notify/dismiss", ""), "kitchen dismiss");
    }

    #[test]
    fn keys_the_firmware_knows_but_this_clock_does_not_draw_are_listed_as_ignored() {
        assert_eq!(
            line(
                "notify",
                r##"{"text":"hi","icon":"1234","color":"#FF0000"}"##
            ),
            r#"kitchen notify text="hi" ignored="color,icon""#
        );
        assert_eq!(
            line("settings", r#"{"TIM":false}"#),
            r#"kitchen settings ignored="TIM""#
        );
    }

    #[test]
    fn payloads_the_clock_would_not_take_are_rejected_with_the_reason() {
        for (level, payload, reason) in [
            ("notify", "{not json}", "not JSON"),
            ("notify", "[1]", "dropped: "),
            ("settings", "[1]", "not a JSON object"),
            ("notify", r#"{"text":5}"#, "text must be a string"),
            ("notify", r#"{"text":"a","duration":-1}"#, "duration"),
            ("notify", r#"{"text":"a","duration":2.5}"#, "duration"),
            ("notify", r#"{"hold":"yes"}"#, "hold must be true or false"),
            ("notify", r#"{"rtttl":1}"#, "rtttl must be a string"),
            (
                "settings",
                r#"{"BRI":256}"#,
                "BRI must be an integer between 0 and 255",
            ),
            ("settings", r#"{"BRI":"40"}"#, "BRI"),
            ("settings", r#"{"ABRI":0}"#, "ABRI must be true or false"),
        ] {
            let l = line(level, payload);
            assert!(
                l.starts_with(&format!("kitchen invalid_command type=\"{level}\" error=")),
                "{payload}: {l}"
            );
            assert!(l.contains(reason), "{payload}: {l}");
        }
    }

    #[test]
    fn only_the_clocks_own_topics_are_read() {
        assert!(parse("k", "awtrix_x", "awtrix_x/stats", b"{}", false).is_none());
        assert!(parse("k", "awtrix_x", "awtrix_y/notify", b"{}", false).is_none());
        assert_eq!(
            topic_filters("home/awtrix_x"),
            [
                "home/awtrix_x/notify",
                "home/awtrix_x/notify/dismiss",
                "home/awtrix_x/power",
                "home/awtrix_x/settings"
            ]
        );
        assert_eq!(check_topic(" awtrix_x ").unwrap().as_str(), "awtrix_x");
        assert!(check_topic(" ").unwrap_err().contains("MQTT prefix"));
        assert!(check_topic("awtrix/+").unwrap_err().contains("wildcards"));
        assert!(check_topic("awtrix/").unwrap_err().contains("empty level"));
    }

    #[test]
    fn every_payload_the_server_writes_is_read_back_as_sent() {
        use crate::domain::Command;
        use crate::domain::awtrix3::{Awtrix3Device, BUILT_IN_MELODY, Rtttl};
        let show = |clock: &Awtrix3Device, command: Command| -> Vec<Action> {
            clock
                .publications(&command)
                .into_iter()
                .map(|p| {
                    parse("k", "awtrix_a1", &p.topic, &p.payload, false)
                        .unwrap()
                        .action
                })
                .collect()
        };
        let plain = Awtrix3Device::new(check_topic("awtrix_a1").unwrap(), None);
        let melody = Awtrix3Device::new(
            check_topic("awtrix_a1").unwrap(),
            Some(Rtttl::parse("alarm:d=4,o=5,b=140:c6").unwrap()),
        );
        assert_eq!(
            show(
                &plain,
                Command::message(Some("tea".into()), Some(10)).unwrap()
            ),
            [Action::Awtrix(Shown::Notify(Notification {
                text: "tea".into(),
                duration: Some(10),
                ..Notification::default()
            }))]
        );
        for (clock, label, text, rtttl) in [
            (&plain, None, "Alarm", BUILT_IN_MELODY),
            (&melody, Some("up"), "up", "alarm:d=4,o=5,b=140:c6"),
        ] {
            let alarm = Command::alarm("2030-01-01T07:00:00Z", label.map(Into::into)).unwrap();
            assert_eq!(
                show(clock, alarm),
                [Action::Awtrix(Shown::Notify(Notification {
                    text: text.into(),
                    hold: true,
                    wakeup: true,
                    loop_sound: true,
                    rtttl: Some(rtttl.into()),
                    ..Notification::default()
                }))]
            );
        }
        for (level, bri) in [(1, 3), (40, 102), (100, 255)] {
            assert_eq!(
                show(&plain, Command::brightness(Some(level)).unwrap()),
                [
                    Action::Awtrix(Shown::Power(true)),
                    Action::Awtrix(Shown::Settings {
                        brightness: Some(bri),
                        auto_brightness: Some(false),
                        ignored: vec![],
                    })
                ]
            );
        }
        assert_eq!(
            show(&plain, Command::brightness(Some(0)).unwrap()),
            [Action::Awtrix(Shown::Power(false))]
        );
    }

    #[test]
    fn a_notify_payload_the_firmware_drops_is_shown_as_dropped() {
        for (payload, says) in [
            (" {\"text\":\"a\"}".to_owned(), "starts with {"),
            ("{\"text\":\"a\"}\n".to_owned(), "no whitespace around it"),
            (String::new(), "starts with {"),
            (
                format!(r#"{{"text":"{}"}}"#, "x".repeat(6200)),
                "6144-byte JSON document",
            ),
        ] {
            let l = line("notify", &payload);
            assert!(
                l.starts_with("kitchen invalid_command type=\"notify\" error=\"dropped: ")
                    && l.contains(says),
                "{payload:?}: {l}"
            );
        }
        // Power and settings are parsed as JSON, whitespace and all.
        assert_eq!(
            line("power", " {\"power\": false}\n"),
            "kitchen power power=false"
        );
        assert_eq!(
            line("settings", " {\"BRI\": 3}\n"),
            "kitchen settings BRI=3"
        );
    }

    #[test]
    fn power_switches_the_matrix_and_needs_its_key() {
        assert_eq!(
            line("power", r#"{"power":true}"#),
            "kitchen power power=true"
        );
        for (payload, says) in [
            (r#"{"on":true}"#, "no power key"),
            (r#"{"power":"on"}"#, "power must be true or false"),
            ("off", "not JSON"),
        ] {
            let l = line("power", payload);
            assert!(
                l.starts_with("kitchen invalid_command type=\"power\"") && l.contains(says),
                "{payload}: {l}"
            );
        }
    }

    #[test]
    fn nothing_is_acknowledged() {
        let r = parse(
            "k",
            "t",
            "t/notify",
            br#"{"text":"a","commandId":"c1"}"#,
            false,
        )
        .unwrap();
        assert!(super::super::ack::Ack::of(&r).is_none());
    }
}
