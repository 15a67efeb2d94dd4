//! `clockctl schedule …` (SPEC 12.4): the arguments turned into `/schedules` requests
//! (validated here first, with the domain's own parsers: nothing invalid is sent), the
//! machine's time zone as the default `--tz`, and what each answer prints.

use std::path::Path;

use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::Method;
use serde::Deserialize;

use super::CliError;
use super::args::{
    ScheduleAddArgs, ScheduleCommand, ScheduleIdArgs, ScheduleListArgs, ScheduleNextArgs,
};
use crate::domain::DeviceId;
use crate::domain::schedule::{ScheduleRequest, WallTime, Weekdays, Zone};
use crate::terminal;

/// What a `schedule` subcommand does, which decides what its answer prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Add,
    List,
    Show,
    Next,
    Pause,
    Resume,
    Skip,
    Rm,
}

/// A `/schedules` request, validated; `request.rs` makes it an `ApiRequest` (this module
/// does not import that one, which imports this).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub method: Method,
    pub path: String,
    pub body: Option<String>,
    pub op: Op,
    pub idempotency_key: Option<String>,
    pub retries: u32,
    /// The schedule id, for messages.
    pub id: Option<String>,
}

/// Where the machine's zone is read when `TZ` is not set.
pub const LOCALTIME: &str = "/etc/localtime";

/// The request of `command`; `tz_env` is the `TZ` variable, for `add` without `--tz`.
pub fn request(command: &ScheduleCommand, tz_env: Option<String>) -> Result<Call, CliError> {
    match command {
        ScheduleCommand::Add(args) => add(args, tz_env, Path::new(LOCALTIME)),
        ScheduleCommand::List(args) => list(args),
        ScheduleCommand::Show(args) => by_id(args, Method::GET, "", None, Op::Show),
        ScheduleCommand::Next(args) => next(args),
        ScheduleCommand::Pause(args) => by_id(
            args,
            Method::PATCH,
            "",
            Some(r#"{"enabled":false}"#),
            Op::Pause,
        ),
        ScheduleCommand::Resume(args) => by_id(
            args,
            Method::PATCH,
            "",
            Some(r#"{"enabled":true}"#),
            Op::Resume,
        ),
        ScheduleCommand::Skip(args) => {
            // Never retried: a retry after a lost answer would skip a second occurrence.
            let mut request = by_id(args, Method::POST, "/skip", None, Op::Skip)?;
            request.retries = 0;
            Ok(request)
        }
        ScheduleCommand::Rm(args) => by_id(args, Method::DELETE, "", None, Op::Rm),
    }
}

/// The machine's IANA zone: `TZ` (a name, or `:name`, or a path under a `zoneinfo`
/// directory), else the target of the `/etc/localtime` symlink. `None` when neither names
/// a zone of the database.
pub fn local_zone(tz_env: Option<String>, localtime: &Path) -> Option<String> {
    let from_path = |path: &str| -> Option<String> {
        let (_, name) = path.rsplit_once("zoneinfo/")?;
        Zone::parse(name).ok().map(|z| z.name().to_owned())
    };
    if let Some(tz) = tz_env.filter(|t| !t.trim().is_empty()) {
        let tz = tz.trim();
        let name = tz.strip_prefix(':').unwrap_or(tz);
        return Zone::parse(name)
            .ok()
            .map(|z| z.name().to_owned())
            .or_else(|| from_path(name));
    }
    let target = std::fs::read_link(localtime).ok()?;
    from_path(&target.to_string_lossy())
}

fn invalid(text: String) -> CliError {
    CliError::Invalid(text)
}

fn add(args: &ScheduleAddArgs, tz_env: Option<String>, localtime: &Path) -> Result<Call, CliError> {
    let device = DeviceId::parse(&args.device).map_err(|e| {
        invalid(format!(
            "invalid --device {:?}: {e}; pass an id like clock-1 (1-64 characters of A-Z a-z 0-9 _ -)",
            args.device
        ))
    })?;
    let time = WallTime::parse(args.time.trim()).map_err(|_| {
        invalid(format!(
            "invalid --time {:?}: pass a local time HH:MM or HH:MM:SS on a 24-hour clock, e.g. --time 06:30",
            args.time
        ))
    })?;
    let days = match &args.days {
        None => None,
        Some(text) => Some(Weekdays::parse_cli(text).map_err(|e| {
            invalid(format!(
                "invalid --days {text:?}: {e}; e.g. --days weekdays, --days mon-fri or --days mon,wed,fri"
            ))
        })?),
    };
    let zone = match &args.tz {
        Some(tz) => Zone::parse(tz).map_err(|e| invalid(format!("invalid --tz {tz:?}: {e}")))?,
        None => {
            let name = local_zone(tz_env, localtime).ok_or_else(|| {
                invalid(
                    "this machine's time zone is unknown (TZ is not set to an IANA name and \
                     /etc/localtime is not a link into a zoneinfo directory): pass one with \
                     --tz, e.g. --tz Europe/Berlin"
                        .to_owned(),
                )
            })?;
            Zone::parse(&name).map_err(|e| invalid(e.to_string()))?
        }
    };
    let body = ScheduleRequest {
        device_id: Some(device.as_str().to_owned()),
        time: Some(time.to_string()),
        days: days.map(|d| d.names().into_iter().map(str::to_owned).collect()),
        time_zone: Some(zone.name().to_owned()),
        label: args.label.clone(),
        enabled: args.disabled.then_some(false),
        ttl_seconds: args.ttl,
    };
    body.label()
        .map_err(|e| invalid(format!("invalid --label: {e}")))?;
    body.ttl().map_err(|_| {
        invalid(format!(
            "invalid --ttl {}: pass a whole number of seconds from 1 to 604800, or leave it out for the server's default",
            args.ttl.unwrap_or_default()
        ))
    })?;
    let json = serde_json::to_string(&body)
        .map_err(|e| invalid(format!("cannot encode the request body: {e}")))?;
    Ok(Call {
        method: Method::POST,
        path: "/schedules".to_owned(),
        body: Some(json),
        op: Op::Add,
        idempotency_key: Some(
            args.idempotency_key
                .clone()
                .unwrap_or_else(|| uuid::Uuid::now_v7().to_string()),
        ),
        retries: args.retries.count,
        id: None,
    })
}

fn list(args: &ScheduleListArgs) -> Result<Call, CliError> {
    let path = match &args.device {
        None => "/schedules".to_owned(),
        Some(raw) => {
            let device = DeviceId::parse(raw).map_err(|e| {
                invalid(format!(
                    "invalid --device {raw:?}: {e}; pass an id like clock-1"
                ))
            })?;
            format!("/schedules?deviceId={}", device.as_str())
        }
    };
    Ok(simple(
        Method::GET,
        path,
        None,
        Op::List,
        args.retries.count,
        None,
    ))
}

fn next(args: &ScheduleNextArgs) -> Result<Call, CliError> {
    if !(1..=100).contains(&args.count) {
        return Err(invalid(format!(
            "--count {} is out of range: pass a whole number from 1 to 100 (default 10)",
            args.count
        )));
    }
    let id = schedule_id(&args.schedule_id)?;
    let mut path = format!("/schedules/{id}/occurrences?count={}", args.count);
    if let Some(from) = &args.from {
        chrono::DateTime::parse_from_rfc3339(from.trim()).map_err(|_| {
            invalid(format!(
                "invalid --from {from:?}: pass an RFC 3339 instant, e.g. 2027-03-28T00:00:00Z"
            ))
        })?;
        // `+` in a query is a space to some readers: always escaped.
        path.push_str(&format!(
            "&from={}",
            utf8_percent_encode(from.trim(), NON_ALPHANUMERIC)
        ));
    }
    Ok(simple(
        Method::GET,
        path,
        None,
        Op::Next,
        args.retries.count,
        Some(id),
    ))
}

/// A schedule id as typed: the server's are UUIDs, so anything else is refused here.
fn schedule_id(raw: &str) -> Result<String, CliError> {
    let id = raw.trim();
    match uuid::Uuid::try_parse(id) {
        Ok(uuid) => Ok(uuid.hyphenated().to_string()),
        Err(_) => Err(invalid(format!(
            "invalid SCHEDULE_ID {raw:?}: pass the scheduleId that clockctl schedule add or \
             clockctl schedule list shows (a UUID)"
        ))),
    }
}

fn by_id(
    args: &ScheduleIdArgs,
    method: Method,
    suffix: &str,
    body: Option<&str>,
    op: Op,
) -> Result<Call, CliError> {
    let id = schedule_id(&args.schedule_id)?;
    Ok(simple(
        method,
        format!("/schedules/{id}{suffix}"),
        body.map(str::to_owned),
        op,
        args.retries.count,
        Some(id),
    ))
}

fn simple(
    method: Method,
    path: String,
    body: Option<String>,
    op: Op,
    retries: u32,
    id: Option<String>,
) -> Call {
    Call {
        method,
        path,
        body,
        op,
        idempotency_key: None,
        retries,
        id,
    }
}

/// A schedule as the server shows it, the fields printed.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Shown {
    schedule_id: String,
    device_id: String,
    time: String,
    days: Vec<String>,
    time_zone: String,
    #[serde(default)]
    label: String,
    enabled: bool,
    next_fire_at: Option<String>,
    #[serde(default)]
    last_fired_at: Option<String>,
    #[serde(default)]
    last_command_id: Option<String>,
}

impl Shown {
    /// `nextFireAt` in the schedule's own zone (`2026-12-07 06:30 +01:00`), `-` when none.
    fn next_local(&self) -> String {
        local(self.next_fire_at.as_deref(), &self.time_zone)
    }

    /// `nextFireAt` as `next` prints each occurrence: `2026-12-07 06:30 +01:00
    /// (Europe/Berlin)`, `-` when none.
    fn next_in_zone(&self) -> String {
        match self.next_fire_at {
            Some(_) => format!("{} ({})", self.next_local(), self.time_zone),
            None => "-".to_owned(),
        }
    }

    fn days(&self) -> String {
        Weekdays::from_names(&self.days).map_or_else(|_| self.days.join(","), |d| d.to_string())
    }
}

/// An RFC 3339 instant shown as wall time in `zone` with its offset
/// (`2027-03-28 03:30 +02:00`, [`Zone::local`]); as given when either does not parse; `-`
/// when absent.
fn local(instant: Option<&str>, zone: &str) -> String {
    let Some(instant) = instant else {
        return "-".to_owned();
    };
    match (
        chrono::DateTime::parse_from_rfc3339(instant),
        Zone::parse(zone),
    ) {
        (Ok(t), Ok(z)) => z.local(t.to_utc()),
        _ => instant.to_owned(),
    }
}

#[derive(Deserialize)]
struct List {
    schedules: Vec<Shown>,
}

#[derive(Deserialize)]
struct Occurrences {
    occurrences: Vec<String>,
}

/// What a 2xx answer to `op` prints (everything the server wrote passes through
/// [`terminal::plain`]); `json` prints the server's JSON instead.
pub fn output(op: Op, text: &str, json: bool) -> Result<String, CliError> {
    if json {
        return Ok(terminal::json(text));
    }
    let unexpected = || {
        CliError::Call(format!(
            "the answer is not what /schedules returns: {}",
            terminal::plain(&text.chars().take(200).collect::<String>())
        ))
    };
    let out = match op {
        Op::List => {
            let list: List = serde_json::from_str(text).map_err(|_| unexpected())?;
            table(&list.schedules)
        }
        // Without the schedule the zone is unknown: the instants as the server gives them
        // (`clockctl schedule next` reads the schedule too and calls `occurrences`).
        Op::Next => {
            let o: Occurrences = serde_json::from_str(text).map_err(|_| unexpected())?;
            o.occurrences.join("\n")
        }
        _ => {
            let s: Shown = serde_json::from_str(text).map_err(|_| unexpected())?;
            match op {
                Op::Add if s.enabled => {
                    format!(
                        "schedule {} added: next {}",
                        s.schedule_id,
                        s.next_in_zone()
                    )
                }
                Op::Add => format!("schedule {} added, paused", s.schedule_id),
                Op::Pause => format!("schedule {} paused", s.schedule_id),
                Op::Resume | Op::Skip => format!(
                    "schedule {} {}: next {}",
                    s.schedule_id,
                    if op == Op::Skip {
                        "skipped one"
                    } else {
                        "resumed"
                    },
                    s.next_in_zone()
                ),
                Op::Rm => format!("schedule {} removed", s.schedule_id),
                _ => details(&s),
            }
        }
    };
    // Line by line: `plain` escapes control characters, the line breaks included.
    Ok(out
        .lines()
        .map(terminal::plain)
        .collect::<Vec<_>>()
        .join("\n"))
}

/// `clockctl schedule next`: each occurrence of the answer `occurrences` as wall time in
/// the zone of the schedule `schedule` (the answer to `GET /schedules/{id}`), one a line:
/// `2026-12-08 06:30 +01:00 (Europe/Berlin)`.
pub fn occurrences(occurrences: &str, schedule: &str) -> Result<String, CliError> {
    let unexpected = |text: &str| {
        CliError::Call(format!(
            "the answer is not what /schedules returns: {}",
            terminal::plain(&text.chars().take(200).collect::<String>())
        ))
    };
    let o: Occurrences = serde_json::from_str(occurrences).map_err(|_| unexpected(occurrences))?;
    let s: Shown = serde_json::from_str(schedule).map_err(|_| unexpected(schedule))?;
    Ok(o.occurrences
        .iter()
        .map(|at| {
            terminal::plain(&format!(
                "{} ({})",
                local(Some(at), &s.time_zone),
                s.time_zone
            ))
        })
        .collect::<Vec<_>>()
        .join("\n"))
}

fn details(s: &Shown) -> String {
    let last = match (&s.last_fired_at, &s.last_command_id) {
        (Some(at), Some(id)) => format!(
            "{} ({}; command {id})",
            local(Some(at), &s.time_zone),
            s.time_zone
        ),
        _ => "-".to_owned(),
    };
    [
        ("schedule", s.schedule_id.clone()),
        ("device", s.device_id.clone()),
        ("time", s.time.clone()),
        ("days", s.days()),
        ("zone", s.time_zone.clone()),
        ("label", s.label.clone()),
        ("enabled", s.enabled.to_string()),
        ("next", s.next_in_zone()),
        ("last fired", last),
    ]
    .iter()
    .map(|(k, v)| format!("{k:<11} {v}"))
    .collect::<Vec<_>>()
    .join("\n")
}

/// `list`: one row per schedule under a header, columns padded to their widest cell.
fn table(schedules: &[Shown]) -> String {
    let mut rows = vec![[
        "ID".to_owned(),
        "DEVICE".to_owned(),
        "TIME".to_owned(),
        "DAYS".to_owned(),
        "ZONE".to_owned(),
        "NEXT".to_owned(),
        "ENABLED".to_owned(),
    ]];
    for s in schedules {
        rows.push([
            s.schedule_id.clone(),
            s.device_id.clone(),
            s.time.clone(),
            s.days(),
            s.time_zone.clone(),
            s.next_local(),
            if s.enabled { "yes" } else { "no" }.to_owned(),
        ]);
    }
    let mut widths = [0usize; 7];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    rows.iter()
        .map(|row| {
            row.iter()
                .zip(widths)
                .map(|(cell, w)| format!("{cell:<w$}"))
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_owned()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_local_zone_comes_from_tz_then_the_localtime_link() {
        let none = Path::new("/nonexistent/localtime");
        assert_eq!(
            local_zone(Some("Europe/Berlin".into()), none).as_deref(),
            Some("Europe/Berlin")
        );
        assert_eq!(
            local_zone(Some(":America/New_York".into()), none).as_deref(),
            Some("America/New_York")
        );
        assert_eq!(
            local_zone(Some("/usr/share/zoneinfo/Asia/Tokyo".into()), none).as_deref(),
            Some("Asia/Tokyo")
        );
        // A POSIX rule is not an IANA name: no guess.
        assert_eq!(local_zone(Some("CET-1CEST".into()), none), None);
        assert_eq!(local_zone(None, none), None);
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("localtime");
        std::os::unix::fs::symlink("/usr/share/zoneinfo/Pacific/Auckland", &link).unwrap();
        assert_eq!(local_zone(None, &link).as_deref(), Some("Pacific/Auckland"));
        assert_eq!(
            local_zone(Some(" ".into()), &link).as_deref(),
            Some("Pacific/Auckland")
        );
    }

    #[test]
    fn add_without_a_zone_anywhere_asks_for_tz() {
        let args = ScheduleAddArgs {
            device: "kitchen".into(),
            time: "06:30".into(),
            days: Some("weekdays".into()),
            tz: None,
            label: None,
            ttl: None,
            disabled: false,
            idempotency_key: None,
            retries: crate::cli::args::Retries { count: 0 },
        };
        let err = add(&args, None, Path::new("/nonexistent")).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("--tz"), "{err}");
        let ok = add(
            &args,
            Some("Europe/Berlin".into()),
            Path::new("/nonexistent"),
        )
        .unwrap();
        let body: serde_json::Value = serde_json::from_str(ok.body.as_deref().unwrap()).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"deviceId": "kitchen", "time": "06:30:00",
                "days": ["mon", "tue", "wed", "thu", "fri"], "timeZone": "Europe/Berlin"})
        );
    }

    const BERLIN: &str = r#"{"scheduleId":"s-1","deviceId":"kitchen","time":"02:30:00",
        "days":["sun"],"timeZone":"Europe/Berlin","label":"","enabled":true,
        "nextFireAt":"2027-03-28T01:30:00.000Z","lastFiredAt":"2027-03-21T01:30:00.000Z",
        "lastCommandId":"c-1"}"#;

    #[test]
    fn next_shows_each_occurrence_as_wall_time_in_the_schedules_zone_across_a_change() {
        let answer = r#"{"occurrences":["2027-03-21T01:30:00.000Z","2027-03-28T01:30:00.000Z",
            "2027-10-31T00:30:00.000Z"]}"#;
        assert_eq!(
            occurrences(answer, BERLIN).unwrap(),
            "2027-03-21 02:30 +01:00 (Europe/Berlin)\n\
             2027-03-28 03:30 +02:00 (Europe/Berlin)\n\
             2027-10-31 02:30 +02:00 (Europe/Berlin)"
        );
        let err = occurrences("{}", BERLIN).unwrap_err();
        assert!(
            err.to_string().contains("not what /schedules returns"),
            "{err}"
        );
        // With --json (and without the schedule) the server's instants, unchanged.
        assert_eq!(
            output(Op::Next, answer, false).unwrap().lines().next(),
            Some("2027-03-21T01:30:00.000Z")
        );
    }

    #[test]
    fn add_and_show_give_next_in_the_schedules_zone_with_its_offset() {
        assert_eq!(
            output(Op::Add, BERLIN, false).unwrap(),
            "schedule s-1 added: next 2027-03-28 03:30 +02:00 (Europe/Berlin)"
        );
        let shown = output(Op::Show, BERLIN, false).unwrap();
        assert!(
            shown.contains("\nnext        2027-03-28 03:30 +02:00 (Europe/Berlin)\n"),
            "{shown}"
        );
        assert!(
            shown.ends_with("last fired  2027-03-21 02:30 +01:00 (Europe/Berlin; command c-1)"),
            "{shown}"
        );
    }

    #[test]
    fn a_table_lines_up_and_shows_next_in_the_schedules_zone() {
        let text = r#"{"schedules":[{"scheduleId":"s-1","deviceId":"kitchen","time":"02:30:00",
            "days":["mon","tue","wed","thu","fri","sat","sun"],"timeZone":"Europe/Berlin","label":"",
            "enabled":true,"nextFireAt":"2027-03-28T01:30:00.000Z"},
            {"scheduleId":"s-2","deviceId":"hall","time":"07:00:00","days":["sat","sun"],
            "timeZone":"UTC","label":"","enabled":false,"nextFireAt":null}]}"#;
        let out = output(Op::List, text, false).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("ID   DEVICE   TIME"), "{out}");
        assert!(
            lines[1].contains("daily") && lines[1].contains("2027-03-28 03:30 +02:00"),
            "{out}"
        );
        assert!(
            lines[2].split_whitespace().collect::<Vec<_>>()[3..] == ["weekends", "UTC", "-", "no"],
            "{out}"
        );
    }
}
