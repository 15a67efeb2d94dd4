//! A recurring alarm's rule (SPEC 12): a local wall time, a set of weekdays and an IANA
//! time zone, and the instants it names. Pure, no I/O, no clock: every computation takes
//! the instant it starts from.
//!
//! Time zones come from the IANA database compiled into the binary (`jiff`'s
//! `tzdb-bundle-always`), so an occurrence is the same on every host and image. Daylight
//! saving follows RFC 5545 (SPEC 12.2), which is `jiff`'s `compatible` disambiguation: a
//! wall time inside a gap (clocks go forward) is shifted forward by the gap's length, a
//! wall time inside a fold (clocks go back) is its first, earlier instant. The weekday is
//! the local date's.
//!
//! The server's time type is `chrono`; instants cross into `jiff` only inside this module.

use std::fmt;

use chrono::{DateTime, Utc};
use jiff::civil;
use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize, Serializer};

/// The JSON field names of a schedule, for text that names a field.
pub mod field {
    pub const DEVICE_ID: &str = "deviceId";
    pub const TIME: &str = "time";
    pub const DAYS: &str = "days";
    pub const TIME_ZONE: &str = "timeZone";
    pub const LABEL: &str = "label";
    pub const ENABLED: &str = "enabled";
    pub const TTL_SECONDS: &str = "ttlSeconds";
}

/// The day names in the order the API shows them (Monday first, as ISO 8601).
pub const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// Why part of a schedule is invalid; the text is the `detail` of a `400 invalid command`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("time is required: HH:MM or HH:MM:SS on a 24-hour clock (e.g. 06:30)")]
    TimeMissing,
    #[error("time must be HH:MM or HH:MM:SS on a 24-hour clock (e.g. 06:30), not {0:?}")]
    TimeInvalid(String),
    #[error("days must not be empty; leave it out for every day")]
    DaysEmpty,
    #[error("days: {0:?} is not a day; use mon, tue, wed, thu, fri, sat or sun")]
    DayUnknown(String),
    #[error("days: {0:?} is given twice")]
    DayRepeated(String),
    #[error(
        "days {0:?} is not a day list; use daily, weekdays, weekends, a range such as mon-fri or a list such as mon,wed,fri"
    )]
    DaysForm(String),
    #[error("timeZone is required: an IANA time zone name such as Europe/Berlin")]
    ZoneMissing,
    #[error(
        "timeZone {0:?} is a fixed offset; use an IANA time zone name such as Europe/Berlin, so that daylight saving is followed"
    )]
    ZoneFixedOffset(String),
    #[error(
        "timeZone {0:?} is not in the time zone database; use an IANA time zone name such as Europe/Berlin, America/New_York or UTC"
    )]
    ZoneUnknown(String),
    #[error("label must be at most {MAX_LABEL_CHARS} characters")]
    LabelTooLong,
    #[error("ttlSeconds must be an integer between 1 and 604800, or null for the server's default")]
    TtlOutOfRange,
}

/// Longest `label`, as an alarm's (SPEC 10, "bounded records").
pub const MAX_LABEL_CHARS: usize = 256;

// ---------------------------------------------------------------------------------------
// Time of day

/// A local wall time, to the second.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WallTime {
    seconds: u32,
}

impl WallTime {
    pub const MIDNIGHT: Self = Self { seconds: 0 };

    /// `HH:MM` or `HH:MM:SS`, two digits each, 24-hour, nothing around it.
    pub fn parse(text: &str) -> Result<Self, ScheduleError> {
        let invalid = || ScheduleError::TimeInvalid(text.to_owned());
        let parts: Vec<&str> = text.split(':').collect();
        if !(2..=3).contains(&parts.len()) {
            return Err(invalid());
        }
        let mut values = [0u32; 3];
        for (value, part) in values.iter_mut().zip(&parts) {
            if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(invalid());
            }
            *value = part.parse().map_err(|_| invalid())?;
        }
        let [h, m, s] = values;
        if h > 23 || m > 59 || s > 59 {
            return Err(invalid());
        }
        Ok(Self {
            seconds: h * 3600 + m * 60 + s,
        })
    }

    /// Seconds since local midnight (0–86399).
    pub fn seconds_of_day(self) -> u32 {
        self.seconds
    }

    /// Inverse of [`seconds_of_day`](Self::seconds_of_day); `None` past 23:59:59.
    pub fn from_seconds_of_day(seconds: u32) -> Option<Self> {
        (seconds < 86_400).then_some(Self { seconds })
    }

    fn civil(self) -> civil::Time {
        let (h, m, s) = self.hms();
        // In range by construction (h < 24, m < 60, s < 60).
        civil::Time::new(h as i8, m as i8, s as i8, 0).unwrap_or(civil::Time::MIN)
    }

    fn hms(self) -> (u32, u32, u32) {
        (
            self.seconds / 3600,
            self.seconds / 60 % 60,
            self.seconds % 60,
        )
    }
}

impl fmt::Display for WallTime {
    /// `HH:MM:SS`, as the API shows it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (h, m, s) = self.hms();
        write!(f, "{h:02}:{m:02}:{s:02}")
    }
}

impl Serialize for WallTime {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

// ---------------------------------------------------------------------------------------
// Days

/// A non-empty set of weekdays: bit 0 is Monday, bit 6 Sunday.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Weekdays(u8);

impl Weekdays {
    pub const EVERY_DAY: Self = Self(0b111_1111);
    pub const MON_TO_FRI: Self = Self(0b001_1111);
    pub const WEEKENDS: Self = Self(0b110_0000);

    /// The API form: a non-empty list of day names, no repeats.
    pub fn from_names<S: AsRef<str>>(names: &[S]) -> Result<Self, ScheduleError> {
        if names.is_empty() {
            return Err(ScheduleError::DaysEmpty);
        }
        let mut bits = 0u8;
        for name in names {
            let name = name.as_ref();
            let bit = day_bit(name).ok_or_else(|| ScheduleError::DayUnknown(name.to_owned()))?;
            if bits & bit != 0 {
                return Err(ScheduleError::DayRepeated(name.to_owned()));
            }
            bits |= bit;
        }
        Ok(Self(bits))
    }

    /// The forms people type (`clockctl --days`): `daily`, `weekdays` (mon–fri),
    /// `weekends`, a range `mon-fri` (it may wrap: `fri-mon`), a list `mon,wed,fri`, or
    /// a list of days and ranges (`mon-wed,sat`). Case is ignored; no day twice.
    pub fn parse_cli(text: &str) -> Result<Self, ScheduleError> {
        let form = || ScheduleError::DaysForm(text.to_owned());
        let lower = text.trim().to_ascii_lowercase();
        match lower.as_str() {
            "daily" | "every day" | "everyday" => return Ok(Self::EVERY_DAY),
            "weekdays" => return Ok(Self::MON_TO_FRI),
            "weekends" | "weekend" => return Ok(Self::WEEKENDS),
            "" => return Err(ScheduleError::DaysEmpty),
            _ => {}
        }
        let mut bits = 0u8;
        for item in lower.split(',').map(str::trim) {
            let add = match item.split('-').collect::<Vec<_>>().as_slice() {
                [day] => day_bit(day).ok_or_else(form)?,
                [from, to] => {
                    let from = day_index(from).ok_or_else(form)?;
                    let to = day_index(to).ok_or_else(form)?;
                    if from == to {
                        return Err(form());
                    }
                    let mut range = 0u8;
                    let mut i = from;
                    loop {
                        range |= 1 << i;
                        if i == to {
                            break;
                        }
                        i = (i + 1) % 7;
                    }
                    range
                }
                _ => return Err(form()),
            };
            if bits & add != 0 {
                return Err(ScheduleError::DayRepeated(item.to_owned()));
            }
            bits |= add;
        }
        Ok(Self(bits))
    }

    /// The day names in order, Monday first.
    pub fn names(self) -> Vec<&'static str> {
        DAY_NAMES
            .iter()
            .enumerate()
            .filter(|(i, _)| self.0 & (1 << i) != 0)
            .map(|(_, name)| *name)
            .collect()
    }

    /// The set as a bit mask (bit 0 Monday), for storage.
    pub fn bits(self) -> u8 {
        self.0
    }

    /// Inverse of [`bits`](Self::bits); `None` for an empty set or stray bits.
    pub fn from_bits(bits: u8) -> Option<Self> {
        (bits != 0 && bits & !Self::EVERY_DAY.0 == 0).then_some(Self(bits))
    }

    fn contains(self, day: civil::Weekday) -> bool {
        self.0 & (1 << day.to_monday_zero_offset()) != 0
    }
}

impl Default for Weekdays {
    fn default() -> Self {
        Self::EVERY_DAY
    }
}

impl fmt::Display for Weekdays {
    /// The shortest of `daily`, `weekdays`, `weekends`, or the list `mon,wed,fri`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::EVERY_DAY => f.write_str("daily"),
            Self::MON_TO_FRI => f.write_str("weekdays"),
            Self::WEEKENDS => f.write_str("weekends"),
            _ => f.write_str(&self.names().join(",")),
        }
    }
}

impl Serialize for Weekdays {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.names())
    }
}

fn day_index(name: &str) -> Option<u8> {
    DAY_NAMES
        .iter()
        .position(|d| *d == name)
        .and_then(|i| u8::try_from(i).ok())
}

fn day_bit(name: &str) -> Option<u8> {
    day_index(name).map(|i| 1 << i)
}

// ---------------------------------------------------------------------------------------
// Time zone

/// An IANA time zone from the database compiled into the binary. Cheap to clone (the
/// rules are shared); equal when the names are.
#[derive(Clone)]
pub struct Zone {
    tz: TimeZone,
}

impl Zone {
    /// An IANA name (`Europe/Berlin`, `America/New_York`, `UTC`; case is ignored and the
    /// database's spelling kept). A fixed offset (`+01:00`, `UTC+1`) or an unknown name is
    /// refused with a message saying to use an IANA name.
    pub fn parse(name: &str) -> Result<Self, ScheduleError> {
        let name = name.trim();
        if name.is_empty() {
            return Err(ScheduleError::ZoneMissing);
        }
        if looks_like_offset(name) {
            return Err(ScheduleError::ZoneFixedOffset(name.to_owned()));
        }
        match jiff::tz::db().get(name) {
            Ok(tz) if tz.iana_name().is_some() => Ok(Self { tz }),
            _ => Err(ScheduleError::ZoneUnknown(name.to_owned())),
        }
    }

    /// The zone's IANA name as the database spells it.
    pub fn name(&self) -> &str {
        // `parse` only admits zones that have one.
        self.tz.iana_name().unwrap_or("UTC")
    }

    /// `t` as local wall time in this zone with its offset from UTC:
    /// `2027-03-28 03:30 +02:00`, the seconds shown only when they are not zero. An offset,
    /// unlike an abbreviation (`CST` is three zones, many zones have none but `-03`), says
    /// the instant unambiguously, also in the hour that repeats when clocks go back.
    pub fn local(&self, t: DateTime<Utc>) -> String {
        match to_jiff(t) {
            Some(ts) => {
                let local = ts.to_zoned_datetime(self.tz.clone());
                let format = if local.second() == 0 {
                    "%Y-%m-%d %H:%M %:z"
                } else {
                    "%Y-%m-%d %H:%M:%S %:z"
                };
                local.strftime(format).to_string()
            }
            None => t.to_rfc3339(),
        }
    }
}

impl PartialEq for Zone {
    fn eq(&self, other: &Self) -> bool {
        self.name() == other.name()
    }
}

impl Eq for Zone {}

impl fmt::Debug for Zone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Zone({})", self.name())
    }
}

impl fmt::Display for Zone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for Zone {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// `+01:00`, `-0500`, `UTC+1`, `GMT-03:30`: an offset, not a zone. (`Etc/GMT+1` is an
/// IANA name and passes.)
fn looks_like_offset(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    let rest = upper
        .strip_prefix("UTC")
        .or_else(|| upper.strip_prefix("GMT"))
        .unwrap_or(&upper);
    let mut chars = rest.chars();
    chars
        .next()
        .is_some_and(|sign| matches!(sign, '+' | '-' | '\u{2212}'))
        && chars.all(|c| c.is_ascii_digit() || c == ':')
}

fn to_jiff(t: DateTime<Utc>) -> Option<jiff::Timestamp> {
    jiff::Timestamp::new(
        t.timestamp(),
        i32::try_from(t.timestamp_subsec_nanos()).ok()?,
    )
    .ok()
}

fn from_jiff(t: jiff::Timestamp) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(t.as_second(), u32::try_from(t.subsec_nanosecond()).ok()?)
}

// ---------------------------------------------------------------------------------------
// The rule

/// When a schedule rings: at `time` on the local dates whose weekday is in `days`, in
/// `zone`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub time: WallTime,
    pub days: Weekdays,
    pub zone: Zone,
}

/// How many local dates [`Rule::next_after`] looks at: a week finds every weekday, and
/// the margin covers a day a zone skipped (Pacific/Apia, 2011-12-30) and the day before.
const SEARCH_DAYS: usize = 16;

impl Rule {
    /// The rule's first instant strictly after `after` (whole seconds). `None` only at
    /// the far end of the calendar.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let from = to_jiff(after)?;
        // Start a day early: an occurrence shifted forward by a gap can fall after the
        // local date it belongs to.
        let mut date = self.zone.tz.to_datetime(from).date().yesterday().ok()?;
        let time = self.time.civil();
        for _ in 0..SEARCH_DAYS {
            if self.days.contains(date.weekday()) {
                let instant = self
                    .zone
                    .tz
                    .to_ambiguous_timestamp(date.to_datetime(time))
                    .compatible()
                    .ok()?;
                if instant > from {
                    return from_jiff(instant);
                }
            }
            date = date.tomorrow().ok()?;
        }
        None
    }

    /// The next `count` instants strictly after `after`, in order.
    pub fn occurrences(&self, after: DateTime<Utc>, count: usize) -> Vec<DateTime<Utc>> {
        let mut out = Vec::with_capacity(count.min(100));
        let mut from = after;
        while out.len() < count {
            match self.next_after(from) {
                Some(t) => {
                    out.push(t);
                    from = t;
                }
                None => break,
            }
        }
        out
    }
}

/// What happens to an occurrence the gateway reaches at some moment (SPEC 12.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Occurrence {
    /// Not yet: nothing to do before `nextFireAt`.
    NotDue,
    /// Reached at most [`MISSED_AFTER`] late: it fires once.
    Fire,
    /// Reached more than [`MISSED_AFTER`] late (the gateway was down): skipped, counted.
    Missed,
}

/// How late an occurrence may still fire (SPEC 12.3).
pub const MISSED_AFTER: std::time::Duration = std::time::Duration::from_secs(60);

impl Occurrence {
    /// The fate of the occurrence at `at` when the gateway looks at `now`.
    pub fn at(at: DateTime<Utc>, now: DateTime<Utc>) -> Self {
        if now < at {
            Self::NotDue
        } else if (now - at).to_std().is_ok_and(|late| late > MISSED_AFTER) {
            Self::Missed
        } else {
            Self::Fire
        }
    }
}

// ---------------------------------------------------------------------------------------
// The request body

/// `POST /schedules` (and, merged with the schedule, `PATCH`): only these fields, each
/// optional so that a missing one is a validation `detail`; what `clockctl` sends.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ScheduleRequest {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub days: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// `null` and absent both mean the server's `COMMAND_TTL_SECS`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<i64>,
}

impl ScheduleRequest {
    /// The request's fields as they appear on the wire (what a `PATCH` may name).
    pub const FIELDS: &'static [&'static str] = &[
        "deviceId",
        "time",
        "days",
        "timeZone",
        "label",
        "enabled",
        "ttlSeconds",
    ];

    /// The rule the body names: `time` and `timeZone` required, `days` every day when
    /// absent. The first invalid field is the error.
    pub fn rule(&self) -> Result<Rule, ScheduleError> {
        let time = WallTime::parse(self.time.as_deref().ok_or(ScheduleError::TimeMissing)?)?;
        let days = match &self.days {
            None => Weekdays::EVERY_DAY,
            Some(names) => Weekdays::from_names(names)?,
        };
        let zone = Zone::parse(self.time_zone.as_deref().unwrap_or_default())?;
        Ok(Rule { time, days, zone })
    }

    /// The label, empty when absent, at most [`MAX_LABEL_CHARS`].
    pub fn label(&self) -> Result<String, ScheduleError> {
        let label = self.label.clone().unwrap_or_default();
        if label.chars().count() > MAX_LABEL_CHARS {
            return Err(ScheduleError::LabelTooLong);
        }
        Ok(label)
    }

    /// Each occurrence's TTL: `None` for the server's `COMMAND_TTL_SECS`, else within the
    /// commands' range (SPEC 7.2).
    pub fn ttl(&self) -> Result<Option<u32>, ScheduleError> {
        self.ttl_seconds
            .map(|t| {
                u32::try_from(t)
                    .ok()
                    .filter(|t| super::command::TTL_SECONDS.contains(t))
                    .ok_or(ScheduleError::TtlOutOfRange)
            })
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_patchable_fields_are_the_request_fields() {
        let full = ScheduleRequest {
            device_id: Some("d".into()),
            time: Some("06:30".into()),
            days: Some(vec![]),
            time_zone: Some("UTC".into()),
            label: Some(String::new()),
            enabled: Some(true),
            ttl_seconds: Some(1),
        };
        let wire = serde_json::to_value(full).unwrap();
        let mut names: Vec<&str> = wire
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut fields = ScheduleRequest::FIELDS.to_vec();
        names.sort_unstable();
        fields.sort_unstable();
        assert_eq!(names, fields);
    }

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().to_utc()
    }

    fn rule(time: &str, days: Weekdays, zone: &str) -> Rule {
        Rule {
            time: WallTime::parse(time).unwrap(),
            days,
            zone: Zone::parse(zone).unwrap(),
        }
    }

    fn next(r: &Rule, after: &str, n: usize) -> Vec<String> {
        r.occurrences(utc(after), n)
            .into_iter()
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .collect()
    }

    #[test]
    fn a_time_is_hh_mm_or_hh_mm_ss_on_a_24_hour_clock() {
        assert_eq!(WallTime::parse("06:30").unwrap().to_string(), "06:30:00");
        assert_eq!(WallTime::parse("23:59:59").unwrap().to_string(), "23:59:59");
        assert_eq!(WallTime::parse("00:00").unwrap().seconds_of_day(), 0);
        for bad in [
            "25:00",
            "24:00",
            "6:30",
            "06:60",
            "06:30:60",
            "06",
            "06:30:00:00",
            "0a:30",
            "+6:30",
            " 06:30",
            "",
        ] {
            assert_eq!(
                WallTime::parse(bad),
                Err(ScheduleError::TimeInvalid(bad.to_owned())),
                "{bad}"
            );
        }
        assert!(
            ScheduleError::TimeInvalid("25:00".into())
                .to_string()
                .contains("HH:MM")
        );
        let t = WallTime::parse("07:05:09").unwrap();
        assert_eq!(WallTime::from_seconds_of_day(t.seconds_of_day()), Some(t));
        assert_eq!(WallTime::from_seconds_of_day(86_400), None);
    }

    #[test]
    fn days_in_the_api_are_a_non_empty_list_without_repeats_shown_monday_first() {
        let d = Weekdays::from_names(&["fri", "mon", "wed"]).unwrap();
        assert_eq!(d.names(), ["mon", "wed", "fri"]);
        assert_eq!(serde_json::to_string(&d).unwrap(), r#"["mon","wed","fri"]"#);
        assert_eq!(
            Weekdays::from_names::<&str>(&[]),
            Err(ScheduleError::DaysEmpty)
        );
        assert_eq!(
            Weekdays::from_names(&["mon", "mon"]),
            Err(ScheduleError::DayRepeated("mon".into()))
        );
        assert_eq!(
            Weekdays::from_names(&["Monday"]),
            Err(ScheduleError::DayUnknown("Monday".into()))
        );
        assert_eq!(Weekdays::from_bits(d.bits()), Some(d));
        assert_eq!(Weekdays::from_bits(0), None);
        assert_eq!(Weekdays::from_bits(0x80), None);
    }

    #[test]
    fn days_on_the_command_line_take_the_forms_people_type() {
        let names = |s: &str| Weekdays::parse_cli(s).unwrap().names();
        assert_eq!(names("daily").len(), 7);
        assert_eq!(names("weekdays"), ["mon", "tue", "wed", "thu", "fri"]);
        assert_eq!(names("Weekends"), ["sat", "sun"]);
        assert_eq!(names("mon-fri"), ["mon", "tue", "wed", "thu", "fri"]);
        assert_eq!(names("mon,wed,fri"), ["mon", "wed", "fri"]);
        assert_eq!(names("fri-mon"), ["mon", "fri", "sat", "sun"]);
        assert_eq!(names("mon-wed, sat"), ["mon", "tue", "wed", "sat"]);
        for bad in ["mon-mon-tue", "mon-mon", "monday", "mon,,wed", "-fri", "x"] {
            assert!(
                matches!(Weekdays::parse_cli(bad), Err(ScheduleError::DaysForm(_))),
                "{bad}"
            );
        }
        assert_eq!(
            Weekdays::parse_cli("mon,mon"),
            Err(ScheduleError::DayRepeated("mon".into()))
        );
        assert_eq!(Weekdays::parse_cli(""), Err(ScheduleError::DaysEmpty));
        assert_eq!(Weekdays::MON_TO_FRI.to_string(), "weekdays");
        assert_eq!(
            Weekdays::parse_cli("mon,wed").unwrap().to_string(),
            "mon,wed"
        );
    }

    #[test]
    fn a_zone_is_an_iana_name_and_offsets_or_unknown_names_say_to_use_one() {
        assert_eq!(
            Zone::parse("europe/berlin").unwrap().name(),
            "Europe/Berlin"
        );
        assert_eq!(Zone::parse("UTC").unwrap().name(), "UTC");
        assert_eq!(Zone::parse("Etc/GMT+1").unwrap().name(), "Etc/GMT+1");
        for offset in ["+01:00", "-0500", "UTC+1", "GMT-03:30", "+01"] {
            let err = Zone::parse(offset).unwrap_err();
            assert_eq!(err, ScheduleError::ZoneFixedOffset(offset.into()));
            assert!(err.to_string().contains("IANA"), "{err}");
        }
        for unknown in ["Mars/Olympus", "Etc/Unknown", "Berlin"] {
            let err = Zone::parse(unknown).unwrap_err();
            assert_eq!(err, ScheduleError::ZoneUnknown(unknown.into()));
            assert!(err.to_string().contains("IANA"), "{err}");
        }
        assert_eq!(Zone::parse(" "), Err(ScheduleError::ZoneMissing));
    }

    // The 2027 transitions. Europe/Berlin: 2027-03-28 02:00 CET -> 03:00 CEST and
    // 2027-10-31 03:00 CEST -> 02:00 CET.

    #[test]
    fn berlin_a_time_in_the_spring_gap_fires_the_gap_length_later() {
        let r = rule("02:30", Weekdays::EVERY_DAY, "Europe/Berlin");
        assert_eq!(
            next(&r, "2027-03-26T12:00:00Z", 3),
            [
                "2027-03-27T01:30:00Z", // 02:30 CET
                "2027-03-28T01:30:00Z", // 02:30 does not exist: 03:30 CEST
                "2027-03-29T00:30:00Z", // 02:30 CEST
            ]
        );
    }

    #[test]
    fn berlin_a_time_in_the_autumn_fold_fires_once_at_the_first_instant() {
        let r = rule("02:30", Weekdays::EVERY_DAY, "Europe/Berlin");
        assert_eq!(
            next(&r, "2027-10-29T12:00:00Z", 3),
            [
                "2027-10-30T00:30:00Z", // 02:30 CEST
                "2027-10-31T00:30:00Z", // 02:30 CEST, not also 01:30Z (02:30 CET)
                "2027-11-01T01:30:00Z", // 02:30 CET
            ]
        );
        // Asked from between the two 02:30s, the second one is not an occurrence.
        assert_eq!(
            next(&r, "2027-10-31T00:30:00Z", 1),
            ["2027-11-01T01:30:00Z"]
        );
    }

    #[test]
    fn berlin_weekdays_at_half_past_six_across_both_changes() {
        let r = rule("06:30", Weekdays::MON_TO_FRI, "Europe/Berlin");
        // Friday 2027-03-26 (CET), then Monday 2027-03-29 (CEST).
        assert_eq!(
            next(&r, "2027-03-26T00:00:00Z", 2),
            ["2027-03-26T05:30:00Z", "2027-03-29T04:30:00Z"]
        );
        // Friday 2027-10-29 (CEST), then Monday 2027-11-01 (CET).
        assert_eq!(
            next(&r, "2027-10-29T00:00:00Z", 2),
            ["2027-10-29T04:30:00Z", "2027-11-01T05:30:00Z"]
        );
    }

    // America/New_York: 2027-03-14 02:00 EST -> 03:00 EDT, 2027-11-07 02:00 EDT -> 01:00 EST.

    #[test]
    fn new_york_gap_and_fold() {
        let r = rule("02:15", Weekdays::EVERY_DAY, "America/New_York");
        assert_eq!(
            next(&r, "2027-03-13T12:00:00Z", 3),
            [
                "2027-03-14T07:15:00Z", // 03:15 EDT
                "2027-03-15T06:15:00Z", // 02:15 EDT
                "2027-03-16T06:15:00Z",
            ]
        );
        let r = rule("01:30", Weekdays::EVERY_DAY, "America/New_York");
        assert_eq!(
            next(&r, "2027-11-06T12:00:00Z", 2),
            [
                "2027-11-07T05:30:00Z", // 01:30 EDT, not also 06:30Z (01:30 EST)
                "2027-11-08T06:30:00Z", // 01:30 EST
            ]
        );
    }

    // Australia/Sydney (southern hemisphere): 2027-04-04 03:00 AEDT -> 02:00 AEST,
    // 2027-10-03 02:00 AEST -> 03:00 AEDT.

    #[test]
    fn sydney_fold_in_april_and_gap_in_october() {
        let r = rule("02:30", Weekdays::EVERY_DAY, "Australia/Sydney");
        assert_eq!(
            next(&r, "2027-04-02T17:00:00Z", 2), // Saturday 04:00 local
            [
                "2027-04-03T15:30:00Z", // Sunday 04-04 02:30 AEDT (+11), the first
                "2027-04-04T16:30:00Z", // Monday 04-05 02:30 AEST (+10)
            ]
        );
        assert_eq!(
            next(&r, "2027-10-01T17:00:00Z", 2), // Saturday 03:00 local
            [
                "2027-10-02T16:30:00Z", // Sunday 10-03 02:30 does not exist: 03:30 AEDT
                "2027-10-03T15:30:00Z", // Monday 10-04 02:30 AEDT
            ]
        );
    }

    // Pacific/Auckland: 2027-04-04 03:00 NZDT -> 02:00 NZST, 2027-09-26 02:00 NZST ->
    // 03:00 NZDT. The local date is a day ahead of UTC's, and the weekday is the local one.

    #[test]
    fn auckland_the_weekday_is_the_local_one() {
        // Mondays at 07:00: local Monday 2027-01-04 07:00 NZDT (+13) is Sunday 18:00Z.
        let r = rule(
            "07:00",
            Weekdays::from_names(&["mon"]).unwrap(),
            "Pacific/Auckland",
        );
        assert_eq!(
            next(&r, "2027-01-01T00:00:00Z", 2),
            ["2027-01-03T18:00:00Z", "2027-01-10T18:00:00Z"]
        );
        let r = rule("02:30", Weekdays::EVERY_DAY, "Pacific/Auckland");
        assert_eq!(
            next(&r, "2027-04-02T14:00:00Z", 2), // Saturday 03:00 local
            [
                "2027-04-03T13:30:00Z", // Sunday 04-04 02:30 NZDT (+13), the first
                "2027-04-04T14:30:00Z", // Monday 04-05 02:30 NZST (+12)
            ]
        );
        assert_eq!(
            next(&r, "2027-09-24T16:00:00Z", 2), // Saturday 04:00 local
            [
                "2027-09-25T14:30:00Z", // Sunday 09-26 02:30 does not exist: 03:30 NZDT
                "2027-09-26T13:30:00Z", // Monday 09-27 02:30 NZDT
            ]
        );
    }

    #[test]
    fn an_instant_is_shown_as_wall_time_in_the_zone_with_its_offset() {
        let berlin = Zone::parse("Europe/Berlin").unwrap();
        assert_eq!(
            berlin.local(utc("2027-03-28T01:30:00Z")),
            "2027-03-28 03:30 +02:00"
        );
        assert_eq!(
            berlin.local(utc("2026-12-08T05:30:00Z")),
            "2026-12-08 06:30 +01:00"
        );
        // The hour that repeats when clocks go back: the offset tells the two apart.
        assert_eq!(
            berlin.local(utc("2027-10-31T00:30:00Z")),
            "2027-10-31 02:30 +02:00"
        );
        assert_eq!(
            berlin.local(utc("2027-10-31T01:30:00Z")),
            "2027-10-31 02:30 +01:00"
        );
        // Seconds when the schedule has them; a zone east of UTC on the next local date.
        assert_eq!(
            Zone::parse("Pacific/Auckland")
                .unwrap()
                .local(utc("2027-03-28T17:30:15Z")),
            "2027-03-29 06:30:15 +13:00"
        );
        assert_eq!(
            Zone::parse("UTC")
                .unwrap()
                .local(utc("2027-01-01T06:30:00Z")),
            "2027-01-01 06:30 +00:00"
        );
    }

    #[test]
    fn occurrences_are_strictly_after_the_start() {
        let r = rule("06:30", Weekdays::EVERY_DAY, "UTC");
        assert_eq!(
            next(&r, "2027-01-01T06:30:00Z", 1),
            ["2027-01-02T06:30:00Z"]
        );
        assert_eq!(
            next(&r, "2027-01-01T06:29:59.999Z", 1),
            ["2027-01-01T06:30:00Z"]
        );
    }

    #[test]
    fn an_occurrence_fires_up_to_a_minute_late_and_is_missed_after() {
        let at = utc("2027-01-01T06:30:00Z");
        assert_eq!(
            Occurrence::at(at, utc("2027-01-01T06:29:59Z")),
            Occurrence::NotDue
        );
        assert_eq!(Occurrence::at(at, at), Occurrence::Fire);
        assert_eq!(
            Occurrence::at(at, utc("2027-01-01T06:31:00Z")),
            Occurrence::Fire
        );
        assert_eq!(
            Occurrence::at(at, utc("2027-01-01T06:31:00.001Z")),
            Occurrence::Missed
        );
    }

    #[test]
    fn a_request_names_its_rule_or_the_first_invalid_field() {
        let mut req = ScheduleRequest {
            device_id: Some("kitchen".into()),
            time: Some("06:30".into()),
            time_zone: Some("Europe/Berlin".into()),
            ..ScheduleRequest::default()
        };
        let r = req.rule().unwrap();
        assert_eq!(
            (r.time.to_string(), r.days),
            ("06:30:00".into(), Weekdays::EVERY_DAY)
        );
        req.days = Some(vec![]);
        assert_eq!(req.rule(), Err(ScheduleError::DaysEmpty));
        req.days = None;
        req.time_zone = None;
        assert_eq!(req.rule(), Err(ScheduleError::ZoneMissing));
        req.time = None;
        assert_eq!(req.rule(), Err(ScheduleError::TimeMissing));
        req.label = Some("x".repeat(257));
        assert_eq!(req.label(), Err(ScheduleError::LabelTooLong));
        for (ttl, ok) in [
            (0, false),
            (1, true),
            (604_800, true),
            (604_801, false),
            (-1, false),
        ] {
            req.ttl_seconds = Some(ttl);
            assert_eq!(req.ttl().is_ok(), ok, "{ttl}");
        }
        let err = serde_json::from_str::<ScheduleRequest>(r#"{"tim":"06:30"}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
    }
}
