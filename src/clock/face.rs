//! What each virtual clock shows: its current message with the seconds left, its scheduled
//! alarms, its brightness — the state the live view draws. Pure: time is passed in.

use std::collections::{BTreeMap, VecDeque};

use chrono::{DateTime, FixedOffset, TimeDelta, Utc};

use super::awtrix::DEFAULT_DURATION_SECS;
use super::command::{Action, Received, format_alarm_time};
use super::shown::Shown;
use crate::domain::Command;

/// How long an alarm is shown as ringing before it is dropped.
const RINGING_FOR: TimeDelta = TimeDelta::seconds(60);
/// Alarms listed per clock; the rest are counted.
const MAX_ALARMS_SHOWN: usize = 5;
/// Notifications an AWTRIX clock keeps queued here; more are not shown (the firmware's
/// queue is bounded by its memory).
const MAX_QUEUED: usize = 256;
/// Longest text shown on one line of the view (longer text is cut with `…`).
const MAX_TEXT_CHARS: usize = 48;

/// Every clock seen so far, by device id.
#[derive(Debug, Default)]
pub struct Clocks {
    faces: BTreeMap<String, Face>,
}

/// One clock's display.
#[derive(Debug, Default)]
struct Face {
    message: Option<OnScreen>,
    /// Keyed by the instant, so the same alarm sent twice is listed once (with the new label).
    alarms: BTreeMap<DateTime<Utc>, Alarm>,
    /// An AWTRIX clock's notifications, first in first out: the first is on the display
    /// (a held one, how the gateway rings an alarm, until dismissed), the others wait.
    queue: VecDeque<Queued>,
    /// An AWTRIX clock's `power`, once received: `false` is a dark matrix.
    power: Option<bool>,
    brightness: Option<Brightness>,
    /// An AWTRIX clock's `ABRI`: the light sensor sets the brightness.
    auto_brightness: Option<bool>,
    /// An AWTRIX 3 clock (SPEC 8.1): drawn with its own rows.
    awtrix: bool,
    last: Option<Last>,
}

#[derive(Debug)]
struct OnScreen {
    text: String,
    until: DateTime<Utc>,
}

#[derive(Debug)]
struct Alarm {
    at: DateTime<FixedOffset>,
    label: String,
}

/// One AWTRIX notification in the queue.
#[derive(Debug)]
struct Queued {
    text: String,
    duration: TimeDelta,
    hold: bool,
    wakeup: bool,
    melody: Option<String>,
    loop_sound: bool,
    /// When it reached the display (the front of the queue); `None` while it waits.
    since: Option<DateTime<Utc>>,
}

impl Queued {
    /// When a notification that is not held leaves the display.
    fn ends(&self) -> Option<DateTime<Utc>> {
        self.since.filter(|_| !self.hold).map(|s| s + self.duration)
    }
}

#[derive(Debug, Clone, Copy)]
enum Brightness {
    /// The generic profile's level, 0–100.
    Percent(u8),
    /// AWTRIX's `BRI`, 0–255.
    Awtrix(u8),
}

impl Brightness {
    fn percent(self) -> u8 {
        match self {
            Self::Percent(p) => p,
            // At most 100: 255 * 100 / 255.
            Self::Awtrix(b) => u8::try_from((u32::from(b) * 100 + 127) / 255).unwrap_or(100),
        }
    }
}

#[derive(Debug)]
struct Last {
    at: DateTime<Utc>,
    what: String,
    command_id: Option<String>,
}

impl Clocks {
    /// Applies one received command at `now`.
    pub fn apply(&mut self, received: &Received, now: DateTime<Utc>) {
        let face = self.faces.entry(received.device_id.clone()).or_default();
        match &received.action {
            Action::Command(Command::SetAlarm { alarm_time, label }) => {
                face.alarms.insert(
                    alarm_time.to_utc(),
                    Alarm {
                        at: *alarm_time,
                        label: label.clone(),
                    },
                );
            }
            Action::Command(Command::DisplayMessage {
                message,
                duration_seconds,
            }) => {
                // A clock shows one message at a time: the newest replaces the current one.
                face.message = Some(OnScreen {
                    text: message.clone(),
                    until: now + TimeDelta::seconds(i64::from(*duration_seconds)),
                });
            }
            Action::Command(Command::SetBrightness { level }) => {
                face.brightness = Some(Brightness::Percent(*level));
            }
            Action::Awtrix(shown) => {
                face.awtrix = true;
                face.show_awtrix(shown, now);
            }
            Action::Invalid { .. } => {}
        }
        let what = match &received.action {
            Action::Invalid { kind, reason } => format!("rejected {}: {reason}", printable(kind)),
            other => other.name().to_owned(),
        };
        face.last = Some(Last {
            at: now,
            what,
            command_id: received.command_id.clone(),
        });
    }

    /// Drops expired messages and alarms that have finished ringing.
    pub fn expire(&mut self, now: DateTime<Utc>) {
        for face in self.faces.values_mut() {
            if face.message.as_ref().is_some_and(|m| m.until <= now) {
                face.message = None;
            }
            face.alarms.retain(|at, _| now - *at < RINGING_FOR);
            // The firmware's notification loop: the first one leaves when its time is up
            // (never when held), and the next one starts then.
            while let Some(end) = face.queue.front().and_then(Queued::ends) {
                if end > now {
                    break;
                }
                face.queue.pop_front();
                if let Some(next) = face.queue.front_mut() {
                    next.since = Some(end);
                }
            }
        }
    }

    /// Whether no clock has received anything yet.
    pub fn is_empty(&self) -> bool {
        self.faces.is_empty()
    }

    /// The lines of the live view at `now` (local time), without terminal escapes.
    pub fn render(&self, now: DateTime<FixedOffset>) -> Vec<String> {
        let now_utc = now.to_utc();
        let mut out = Vec::new();
        if self.faces.is_empty() {
            out.push(format!(
                "{}  waiting for the first command...",
                now.format("%H:%M:%S")
            ));
            return out;
        }
        for (device, face) in &self.faces {
            out.push(format!(
                "┌ {}  {}",
                printable(device),
                now.format("%a %Y-%m-%d %H:%M:%S")
            ));
            out.push(match &face.message {
                _ if face.awtrix => face.awtrix_message(now_utc),
                Some(m) if m.until > now_utc => format!(
                    "│ message     {:?}  ({} s left)",
                    cut(&m.text),
                    seconds_until(m.until, now_utc),
                ),
                _ => "│ message     -".to_owned(),
            });
            if face.awtrix {
                face.render_awtrix(now, &mut out);
            } else {
                face.render_alarms(now_utc, &mut out);
            }
            let auto = match face.auto_brightness {
                Some(true) => "  automatic (ABRI)",
                Some(false) => "  manual",
                None => "",
            };
            out.push(match face.brightness {
                Some(Brightness::Percent(level)) => {
                    format!("│ brightness  {level:>3} %  {}", bar(level))
                }
                Some(b @ Brightness::Awtrix(bri)) => format!(
                    "│ brightness  {bri:>3}/255 ({} %)  {}{auto}",
                    b.percent(),
                    bar(b.percent())
                ),
                None if auto.is_empty() => "│ brightness  -".to_owned(),
                None => format!("│ brightness  -{auto}"),
            });
            if let Some(last) = &face.last {
                let id = last
                    .command_id
                    .as_deref()
                    .map(|id| format!("  commandId={}", cut(&printable(id))))
                    .unwrap_or_default();
                out.push(format!(
                    "└ last        {} at {}{id}",
                    last.what,
                    last.at.with_timezone(now.offset()).format("%H:%M:%S")
                ));
            }
            out.push(String::new());
        }
        out
    }
}

impl Face {
    /// The generic clock's scheduled alarms, in time order, ringing for a minute.
    fn render_alarms(&self, now_utc: DateTime<Utc>, out: &mut Vec<String>) {
        if self.alarms.is_empty() {
            out.push("│ alarms      -".to_owned());
        }
        for (i, (at_utc, alarm)) in self.alarms.iter().take(MAX_ALARMS_SHOWN).enumerate() {
            let head = if i == 0 {
                "│ alarms      "
            } else {
                "│             "
            };
            let when = if *at_utc <= now_utc {
                "RINGING".to_owned()
            } else {
                format!("in {}", human(*at_utc - now_utc))
            };
            let label = if alarm.label.is_empty() {
                String::new()
            } else {
                format!("  {:?}", cut(&alarm.label))
            };
            out.push(format!(
                "{head}{}  {when}{label}",
                format_alarm_time(&alarm.at)
            ));
        }
        if self.alarms.len() > MAX_ALARMS_SHOWN {
            out.push(format!(
                "│             (and {} more)",
                self.alarms.len() - MAX_ALARMS_SHOWN
            ));
        }
    }

    fn show_awtrix(&mut self, shown: &Shown, now: DateTime<Utc>) {
        match shown {
            Shown::Notify(n) => {
                if self.queue.len() >= MAX_QUEUED {
                    return;
                }
                let seconds = n.duration.unwrap_or(DEFAULT_DURATION_SECS);
                let since = self.queue.is_empty().then_some(now);
                self.queue.push_back(Queued {
                    text: n.text.clone(),
                    duration: TimeDelta::seconds(i64::from(seconds)),
                    hold: n.hold,
                    wakeup: n.wakeup,
                    melody: n.rtttl.clone(),
                    loop_sound: n.loop_sound,
                    since,
                });
            }
            // The button or `notify/dismiss`: the first notification goes, held or not, its
            // melody stops, and the next one starts.
            Shown::Dismiss => {
                self.queue.pop_front();
                if let Some(next) = self.queue.front_mut() {
                    next.since = Some(now);
                }
            }
            Shown::Power(on) => self.power = Some(*on),
            Shown::Settings {
                brightness,
                auto_brightness,
                ..
            } => {
                if let Some(b) = brightness {
                    self.brightness = Some(Brightness::Awtrix(*b));
                }
                if auto_brightness.is_some() {
                    self.auto_brightness = *auto_brightness;
                }
            }
        }
    }

    /// The message line of an AWTRIX clock: the first notification unless it is held.
    fn awtrix_message(&self, now_utc: DateTime<Utc>) -> String {
        match self.queue.front() {
            Some(n) if !n.hold => format!(
                "│ message     {:?}  ({} s left){}{}",
                cut(&n.text),
                n.ends().map_or(0, |end| seconds_until(end, now_utc)),
                melody(n.melody.as_deref(), n.loop_sound),
                self.lit(n)
            ),
            _ => "│ message     -".to_owned(),
        }
    }

    /// An AWTRIX clock's held alarm, what waits behind it, and its power.
    fn render_awtrix(&self, now: DateTime<FixedOffset>, out: &mut Vec<String>) {
        out.push(match self.queue.front() {
            Some(n) if n.hold => format!(
                "│ alarm       ALARM {:?}  since {} (holds until dismissed){}{}",
                cut(&n.text),
                n.since
                    .map(|s| s.with_timezone(now.offset()).format("%H:%M:%S").to_string())
                    .unwrap_or_default(),
                melody(n.melody.as_deref(), n.loop_sound),
                self.lit(n)
            ),
            _ => "│ alarm       -".to_owned(),
        });
        if self.queue.len() > 1 {
            out.push(format!(
                "│ queued      {} more, shown after it",
                self.queue.len() - 1
            ));
        }
        match self.power {
            Some(true) => out.push("│ power       on".to_owned()),
            Some(false) => {
                out.push("│ power       off: the display is dark (wakeup lights it)".to_owned());
            }
            None => {}
        }
    }

    /// What a switched-off matrix does with notification `n`.
    fn lit(&self, n: &Queued) -> &'static str {
        match (self.power, n.wakeup) {
            (Some(false), true) => "  (lit by wakeup)",
            (Some(false), false) => "  (dark: power off)",
            _ => "",
        }
    }
}

/// Whole seconds from `now` to `until`, rounded up (a message with 0.2 s left shows 1).
fn seconds_until(until: DateTime<Utc>, now: DateTime<Utc>) -> i64 {
    let ms = (until - now).num_milliseconds();
    (ms + 999) / 1000
}

/// `3d 4h`, `2h 05m`, `4m 09s`, `12s`.
fn human(d: TimeDelta) -> String {
    let s = d.num_seconds().max(0);
    let (days, hours, minutes, seconds) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    if days > 0 {
        format!("{days}d {hours}h")
    } else if hours > 0 {
        format!("{hours}h {minutes:02}m")
    } else if minutes > 0 {
        format!("{minutes}m {seconds:02}s")
    } else {
        format!("{seconds}s")
    }
}

/// `  ♪ <melody>` for a notification that plays one, cut to stay on the line, and
/// `(repeats)` when it loops.
fn melody(rtttl: Option<&str>, repeats: bool) -> String {
    rtttl
        .map(|r| {
            let again = if repeats { " (repeats)" } else { "" };
            format!("  ♪ {}{again}", cut(r))
        })
        .unwrap_or_default()
}

/// A ten-cell bar for a brightness level.
fn bar(level: u8) -> String {
    let full = usize::from(level.div_ceil(10));
    format!("{}{}", "█".repeat(full), "░".repeat(10 - full))
}

/// Control and invisible reordering characters replaced ([`crate::terminal::is_unsafe`]),
/// so text from the broker cannot drive the terminal or turn the view around.
fn printable(s: &str) -> String {
    s.chars()
        .map(|c| {
            if crate::terminal::is_unsafe(c) {
                '�'
            } else {
                c
            }
        })
        .collect()
}

/// At most [`MAX_TEXT_CHARS`] characters, so one entry stays on one line.
fn cut(s: &str) -> String {
    let s = printable(s);
    if s.chars().count() <= MAX_TEXT_CHARS {
        return s;
    }
    let mut out: String = s.chars().take(MAX_TEXT_CHARS - 1).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::command::parse;

    fn at(s: &str) -> DateTime<FixedOffset> {
        DateTime::parse_from_rfc3339(s).unwrap()
    }

    fn apply(clocks: &mut Clocks, topic_type: &str, payload: &str, now: DateTime<FixedOffset>) {
        let topic = format!("clocks/commands/clock-1/{topic_type}");
        let r = parse("clocks/commands", &topic, payload.as_bytes(), false).unwrap();
        clocks.apply(&r, now.to_utc());
    }

    #[test]
    fn a_message_counts_down_and_disappears_when_its_time_is_up() {
        let t0 = at("2030-01-01T12:00:00+01:00");
        let mut clocks = Clocks::default();
        assert!(clocks.render(t0)[0].contains("waiting for the first command"));
        apply(
            &mut clocks,
            "display_message",
            r#"{"message":"hello","durationSeconds":10,"commandId":"c1"}"#,
            t0,
        );
        let view = clocks.render(t0 + TimeDelta::milliseconds(3500)).join("\n");
        assert!(
            view.contains("┌ clock-1  Tue 2030-01-01 12:00:03"),
            "{view}"
        );
        assert!(
            view.contains(r#"message     "hello"  (7 s left)"#),
            "{view}"
        );
        assert!(
            view.contains("display_message at 12:00:00  commandId=c1"),
            "{view}"
        );
        clocks.expire((t0 + TimeDelta::seconds(10)).to_utc());
        let view = clocks.render(t0 + TimeDelta::seconds(10)).join("\n");
        assert!(view.contains("│ message     -"), "{view}");
    }

    #[test]
    fn alarms_are_listed_in_time_order_then_ring_then_go() {
        let t0 = at("2030-01-01T06:00:00Z");
        let mut clocks = Clocks::default();
        for (time, label) in [
            ("2030-01-01T09:00:00+01:00", "late"),
            ("2030-01-01T07:00:00Z", "early"),
            ("2030-01-01T08:00:00+01:00", "same instant, new label"),
        ] {
            apply(
                &mut clocks,
                "set_alarm",
                &format!(r#"{{"alarmTime":"{time}","label":"{label}"}}"#),
                t0,
            );
        }
        let view = clocks.render(t0).join("\n");
        assert!(!view.contains("\"early\""), "{view}");
        let new = view.find("in 1h 00m  \"same instant, new label\"").unwrap();
        let late = view
            .find("2030-01-01T09:00:00+01:00  in 2h 00m  \"late\"")
            .unwrap();
        assert!(new < late, "{view}");

        let ringing = t0 + TimeDelta::minutes(60) + TimeDelta::seconds(30);
        clocks.expire(ringing.to_utc());
        assert!(clocks.render(ringing).join("\n").contains("RINGING"));
        let later = t0 + TimeDelta::minutes(61);
        clocks.expire(later.to_utc());
        let view = clocks.render(later).join("\n");
        assert!(!view.contains("2030-01-01T08:00:00+01:00"), "{view}");
        assert!(view.contains("in 59m 00s"), "{view}");
    }

    #[test]
    fn brightness_is_shown_as_a_level_and_a_bar() {
        let t0 = at("2030-01-01T06:00:00Z");
        let mut clocks = Clocks::default();
        apply(&mut clocks, "set_brightness", r#"{"level":40}"#, t0);
        let view = clocks.render(t0).join("\n");
        assert!(view.contains("brightness   40 %  ████░░░░░░"), "{view}");
        apply(&mut clocks, "set_brightness", r#"{"level":101}"#, t0);
        let view = clocks.render(t0).join("\n");
        assert!(view.contains("brightness   40 %"), "{view}");
        assert!(view.contains("rejected set_brightness: level"), "{view}");
    }

    fn apply_awtrix(clocks: &mut Clocks, level: &str, payload: &str, now: DateTime<FixedOffset>) {
        let topic = format!("awtrix_a1/{level}");
        let r =
            crate::clock::awtrix::parse("kitchen", "awtrix_a1", &topic, payload.as_bytes(), false)
                .unwrap();
        clocks.apply(&r, now.to_utc());
    }

    #[test]
    fn an_awtrix_clock_shows_its_notification_its_held_alarm_until_dismissed_and_bri() {
        let t0 = at("2030-01-01T06:00:00Z");
        let mut clocks = Clocks::default();
        apply_awtrix(&mut clocks, "notify", r#"{"text":"tea"}"#, t0);
        let view = clocks.render(t0 + TimeDelta::seconds(2)).join("\n");
        // Without a duration: the firmware's app time, 7 s.
        assert!(view.contains(r#"message     "tea"  (5 s left)"#), "{view}");
        assert!(view.contains("│ alarm       -"), "{view}");
        assert!(!view.contains("alarms"), "{view}");

        // The firmware queues notifications: the alarm waits until "tea" has had its 7 s.
        apply_awtrix(
            &mut clocks,
            "notify",
            r#"{"text":"wake up","hold":true,"wakeup":true,"loopSound":true,"rtttl":"alarm:d=4,o=5,b=140:c6"}"#,
            t0 + TimeDelta::seconds(3),
        );
        apply_awtrix(&mut clocks, "settings", r#"{"ABRI":false,"BRI":102}"#, t0);
        let view = clocks.render(t0 + TimeDelta::seconds(4)).join("\n");
        assert!(view.contains(r#"message     "tea"  (3 s left)"#), "{view}");
        assert!(
            view.contains("│ queued      1 more, shown after it"),
            "{view}"
        );
        // Held: it stays, its melody repeating, until dismissed; messages queue behind it.
        apply_awtrix(
            &mut clocks,
            "notify",
            r#"{"text":"later","duration":5}"#,
            t0 + TimeDelta::seconds(60),
        );
        let later = t0 + TimeDelta::hours(2);
        clocks.expire(later.to_utc());
        let view = clocks.render(later).join("\n");
        assert!(
            view.contains(
                r#"│ alarm       ALARM "wake up"  since 06:00:07 (holds until dismissed)  ♪ alarm:d=4,o=5,b=140:c6 (repeats)"#
            ),
            "{view}"
        );
        assert!(
            view.contains("│ queued      1 more, shown after it"),
            "{view}"
        );
        assert!(
            view.contains("│ brightness  102/255 (40 %)  ████░░░░░░  manual"),
            "{view}"
        );
        assert!(view.contains("│ message     -"), "{view}");

        apply_awtrix(&mut clocks, "notify/dismiss", "", later);
        apply_awtrix(&mut clocks, "settings", r#"{"ABRI":true}"#, later);
        let view = clocks.render(later).join("\n");
        assert!(view.contains("│ alarm       -"), "{view}");
        // Dismissed: the message that waited behind the alarm has its 5 s now.
        assert!(
            view.contains(r#"message     "later"  (5 s left)"#),
            "{view}"
        );
        assert!(!view.contains("queued"), "{view}");
        assert!(
            view.contains("102/255 (40 %)  ████░░░░░░  automatic (ABRI)"),
            "{view}"
        );
        apply_awtrix(&mut clocks, "settings", r#"{"BRI":300}"#, later);
        let view = clocks.render(later).join("\n");
        assert!(view.contains("102/255"), "{view}");
        assert!(view.contains("rejected settings: BRI"), "{view}");
        assert_eq!(Brightness::Awtrix(0).percent(), 0);
        assert_eq!(Brightness::Awtrix(255).percent(), 100);
    }

    #[test]
    fn a_switched_off_awtrix_is_dark_except_for_a_notification_with_wakeup() {
        let t0 = at("2030-01-01T06:00:00Z");
        let mut clocks = Clocks::default();
        apply_awtrix(&mut clocks, "power", r#"{"power":false}"#, t0);
        apply_awtrix(&mut clocks, "notify", r#"{"text":"psst","duration":5}"#, t0);
        let view = clocks.render(t0).join("\n");
        assert!(
            view.contains("│ power       off: the display is dark (wakeup lights it)"),
            "{view}"
        );
        assert!(
            view.contains(r#"message     "psst"  (5 s left)  (dark: power off)"#),
            "{view}"
        );
        apply_awtrix(
            &mut clocks,
            "notify",
            r#"{"text":"up","hold":true,"wakeup":true}"#,
            t0,
        );
        let later = t0 + TimeDelta::seconds(10);
        clocks.expire(later.to_utc());
        let view = clocks.render(later).join("\n");
        assert!(
            view.contains("(holds until dismissed)  (lit by wakeup)"),
            "{view}"
        );
        apply_awtrix(&mut clocks, "power", r#"{"power":true}"#, later);
        let view = clocks.render(later).join("\n");
        assert!(view.contains("│ power       on"), "{view}");
        assert!(!view.contains("lit by wakeup"), "{view}");
    }

    #[test]
    fn long_or_hostile_text_stays_on_one_line() {
        let t0 = at("2030-01-01T06:00:00Z");
        let mut clocks = Clocks::default();
        let long = "x".repeat(200);
        apply(
            &mut clocks,
            "display_message",
            &format!(r#"{{"message":"{long}\u001b[2J\n","durationSeconds":5}}"#),
            t0,
        );
        let view = clocks.render(t0);
        let line = view.iter().find(|l| l.contains("message ")).unwrap();
        assert!(line.contains('…') && !line.contains('\u{1b}'), "{line}");
        assert!(line.chars().count() < 100, "{line}");
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(human(TimeDelta::seconds(12)), "12s");
        assert_eq!(human(TimeDelta::seconds(249)), "4m 09s");
        assert_eq!(human(TimeDelta::seconds(2 * 3600 + 300)), "2h 05m");
        assert_eq!(human(TimeDelta::seconds(3 * 86_400 + 4 * 3600)), "3d 4h");
        assert_eq!(bar(0), "░".repeat(10));
        assert_eq!(bar(100), "█".repeat(10));
    }
}
