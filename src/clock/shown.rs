//! What an AWTRIX 3 clock does with one valid delivery ([`Shown`]), and its plain-line
//! fields. Below both [`super::awtrix`] (which reads the wire into it) and
//! [`super::command`] (whose [`super::command::Action`] carries it), so neither imports
//! the other in a circle.

use std::fmt::Write as _;

use crate::domain::awtrix3::{NOTIFY, POWER, SETTINGS};

/// What an AWTRIX clock does with one valid delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shown {
    /// A notification: shown for `duration` seconds, or until dismissed when `hold`.
    Notify(Notification),
    /// The notification on the display (held or not) is dismissed and its melody stopped.
    Dismiss,
    /// `power`: the matrix on (`true`) or off.
    Power(bool),
    /// Brightness settings (other settings are listed in `ignored`).
    Settings {
        /// `BRI`, 0–255.
        brightness: Option<u8>,
        /// `ABRI`: the light sensor sets the brightness.
        auto_brightness: Option<bool>,
        ignored: Vec<String>,
    },
}

/// One notification's fields.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Notification {
    pub text: String,
    /// `None`: the clock's app time ([`super::awtrix::DEFAULT_DURATION_SECS`]).
    pub duration: Option<u32>,
    /// Shown until dismissed (an alarm, as the gateway sends it).
    pub hold: bool,
    /// Turns a switched-off display on for it.
    pub wakeup: bool,
    /// The melody starts again each time it ends, for as long as the notification is shown.
    pub loop_sound: bool,
    /// A melody (RTTTL) played with it.
    pub rtttl: Option<String>,
    /// Keys the firmware knows but this clock does not draw.
    pub ignored: Vec<String>,
}

impl Shown {
    /// The word after the device on the plain line: `notify`, `alarm` (a held
    /// notification), `dismiss`, `power` or `settings`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Notify(n) if n.hold => "alarm",
            Self::Notify(_) => NOTIFY,
            Self::Dismiss => "dismiss",
            Self::Power(_) => POWER,
            Self::Settings { .. } => SETTINGS,
        }
    }

    /// The fields for the plain line, ` key=value` each, text quoted and escaped.
    pub fn write_fields(&self, line: &mut String) {
        // Writing to a String cannot fail.
        let ignored = match self {
            Self::Notify(n) => {
                let _ = write!(line, " text={:?}", n.text);
                if let Some(d) = n.duration {
                    let _ = write!(line, " duration={d}");
                }
                if n.hold {
                    line.push_str(" hold=true");
                }
                if n.wakeup {
                    line.push_str(" wakeup=true");
                }
                if n.loop_sound {
                    line.push_str(" loopSound=true");
                }
                if let Some(r) = &n.rtttl {
                    let _ = write!(line, " rtttl={r:?}");
                }
                &n.ignored
            }
            Self::Dismiss => return,
            Self::Power(on) => {
                let _ = write!(line, " power={on}");
                return;
            }
            Self::Settings {
                brightness,
                auto_brightness,
                ignored,
            } => {
                if let Some(a) = auto_brightness {
                    let _ = write!(line, " ABRI={a}");
                }
                if let Some(b) = brightness {
                    let _ = write!(line, " BRI={b}");
                }
                ignored
            }
        };
        if !ignored.is_empty() {
            let _ = write!(line, " ignored={:?}", ignored.join(","));
        }
    }
}
