//! Subcommand arguments turned into a validated API request with exactly the server's JSON
//! shape (SPEC 2). Nothing here does I/O; an invalid input never leaves the machine.

use chrono::DateTime;
use reqwest::Method;
use serde::Serialize;

use super::CliError;
use super::args::{AlarmArgs, BrightnessArgs, Command, MessageArgs};
use crate::domain::DeviceId;

/// What a successful answer means, which decides what is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A command; on 2xx print this line (the Go tool's wording).
    Command {
        /// e.g. `alarm command dispatched`.
        success_line: &'static str,
    },
    /// `GET /ready`: 200 is ready, 503 is not ready.
    Ready,
}

/// A request that passed every client-side check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiRequest {
    /// HTTP method.
    pub method: Method,
    /// Absolute path under the base URL.
    pub path: &'static str,
    /// The JSON body, when the request has one.
    pub body: Option<String>,
    /// How to read the answer.
    pub kind: Kind,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AlarmBody<'a> {
    device_id: &'a str,
    alarm_time: &'a str,
    label: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct MessageBody<'a> {
    device_id: &'a str,
    message: &'a str,
    duration_seconds: i64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct BrightnessBody<'a> {
    device_id: &'a str,
    level: i64,
}

impl ApiRequest {
    /// Validates the arguments of `command` and builds its request.
    pub fn from_command(command: &Command) -> Result<Self, CliError> {
        match command {
            Command::Alarm(a) => alarm(a),
            Command::Message(m) => message(m),
            Command::Brightness(b) => brightness(b),
            Command::Ready => Ok(Self {
                method: Method::GET,
                path: "/ready",
                body: None,
                kind: Kind::Ready,
            }),
            Command::Watch(_) => Err(CliError::Invalid(
                "watch talks to the MQTT broker, not the API: run it with cli::watch::run".into(),
            )),
        }
    }
}

fn device(raw: &str) -> Result<DeviceId, CliError> {
    DeviceId::parse(raw).map_err(|e| {
        CliError::Invalid(format!(
            "invalid --device {raw:?}: {e}; pass an id like clock-1 \
             (1-64 characters of A-Z a-z 0-9 _ -)"
        ))
    })
}

fn json(body: &impl Serialize) -> Result<String, CliError> {
    serde_json::to_string(body)
        .map_err(|e| CliError::Invalid(format!("cannot encode the request body: {e}")))
}

fn alarm(args: &AlarmArgs) -> Result<ApiRequest, CliError> {
    let device = device(&args.device)?;
    let time = args.time.trim();
    if DateTime::parse_from_rfc3339(time).is_err() {
        return Err(CliError::Invalid(format!(
            "invalid --time {:?}: it must be RFC 3339 with a date, a time and an offset, \
             e.g. 2030-01-02T07:30:00Z or 2030-01-02T07:30:00+01:00",
            args.time
        )));
    }
    // The server re-checks the time (not over a minute in the past) against its own clock.
    let body = json(&AlarmBody {
        device_id: device.as_str(),
        alarm_time: time,
        label: args.label.as_deref().unwrap_or(""),
    })?;
    Ok(ApiRequest {
        method: Method::POST,
        path: "/commands/alarms",
        body: Some(body),
        kind: Kind::Command {
            success_line: "alarm command dispatched",
        },
    })
}

fn message(args: &MessageArgs) -> Result<ApiRequest, CliError> {
    let device = device(&args.device)?;
    if args.message.trim().is_empty() {
        return Err(CliError::Invalid(
            "--message must not be blank: pass the text to show, e.g. --message \"Tea is ready\""
                .into(),
        ));
    }
    if !(1..=3600).contains(&args.duration) {
        return Err(CliError::Invalid(format!(
            "--duration {} is out of range: pass a whole number of seconds from 1 to 3600 \
             (default 10)",
            args.duration
        )));
    }
    let body = json(&MessageBody {
        device_id: device.as_str(),
        message: &args.message,
        duration_seconds: args.duration,
    })?;
    Ok(ApiRequest {
        method: Method::POST,
        path: "/commands/messages",
        body: Some(body),
        kind: Kind::Command {
            success_line: "display-message command dispatched",
        },
    })
}

fn brightness(args: &BrightnessArgs) -> Result<ApiRequest, CliError> {
    let device = device(&args.device)?;
    if !(0..=100).contains(&args.level) {
        return Err(CliError::Invalid(format!(
            "--level {} is out of range: pass a whole number from 0 to 100",
            args.level
        )));
    }
    let body = json(&BrightnessBody {
        device_id: device.as_str(),
        level: args.level,
    })?;
    Ok(ApiRequest {
        method: Method::PUT,
        path: "/commands/brightness",
        body: Some(body),
        kind: Kind::Command {
            success_line: "brightness command dispatched",
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cli;

    fn build(argv: &[&str]) -> Result<ApiRequest, CliError> {
        let cli = Cli::try_parse_go_style(std::iter::once("clockctl").chain(argv.iter().copied()))
            .unwrap();
        ApiRequest::from_command(&cli.command)
    }

    #[test]
    fn each_command_has_the_server_json_shape() {
        let a = build(&[
            "alarm",
            "--device",
            " clock-1 ",
            "--time",
            "2030-01-02T07:30:00+01:00",
        ])
        .unwrap();
        assert_eq!((a.method.as_str(), a.path), ("POST", "/commands/alarms"));
        assert_eq!(
            a.body.unwrap(),
            r#"{"deviceId":"clock-1","alarmTime":"2030-01-02T07:30:00+01:00","label":""}"#
        );
        let m = build(&["message", "--device", "c", "--message", "hi"]).unwrap();
        assert_eq!((m.method.as_str(), m.path), ("POST", "/commands/messages"));
        assert_eq!(
            m.body.unwrap(),
            r#"{"deviceId":"c","message":"hi","durationSeconds":10}"#
        );
        let b = build(&["brightness", "--device", "c", "--level", "0"]).unwrap();
        assert_eq!((b.method.as_str(), b.path), ("PUT", "/commands/brightness"));
        assert_eq!(b.body.unwrap(), r#"{"deviceId":"c","level":0}"#);
        let r = build(&["ready"]).unwrap();
        assert_eq!((r.method.as_str(), r.path, r.body), ("GET", "/ready", None));
    }

    #[test]
    fn invalid_input_is_rejected_with_a_hint_naming_the_flag() {
        for (argv, needle) in [
            (
                &["alarm", "--device", "a/b", "--time", "2030-01-01T00:00:00Z"][..],
                "--device",
            ),
            (
                &["alarm", "--device", "", "--time", "2030-01-01T00:00:00Z"],
                "--device",
            ),
            (
                &["alarm", "--device", "c", "--time", "2030-01-01 07:00"],
                "RFC 3339",
            ),
            (&["alarm", "--device", "c", "--time", "tomorrow"], "--time"),
            (
                &["message", "--device", "c", "--message", "  "],
                "--message",
            ),
            (
                &[
                    "message",
                    "--device",
                    "c",
                    "--message",
                    "x",
                    "--duration",
                    "0",
                ],
                "--duration",
            ),
            (
                &[
                    "message",
                    "--device",
                    "c",
                    "--message",
                    "x",
                    "--duration",
                    "3601",
                ],
                "--duration",
            ),
            (
                &["brightness", "--device", "c", "--level", "101"],
                "--level",
            ),
            (&["brightness", "--device", "c", "--level", "-1"], "--level"),
        ] {
            let err = build(argv).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{argv:?}");
            assert!(err.to_string().contains(needle), "{argv:?}: {err}");
        }
    }

    #[test]
    fn boundary_values_are_accepted() {
        assert!(
            build(&[
                "message",
                "--device",
                "c",
                "--message",
                "x",
                "--duration",
                "1"
            ])
            .is_ok()
        );
        assert!(
            build(&[
                "message",
                "--device",
                "c",
                "--message",
                "x",
                "--duration",
                "3600"
            ])
            .is_ok()
        );
        assert!(build(&["brightness", "--device", "c", "--level", "100"]).is_ok());
        assert!(build(&["brightness", "--device", &"d".repeat(64), "--level", "1"]).is_ok());
    }
}
