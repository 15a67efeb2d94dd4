//! Subcommand arguments turned into a validated API request with exactly the server's JSON
//! shape (SPEC 2). Nothing here does I/O; an invalid input never leaves the machine.

use std::time::Duration;

use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use reqwest::Method;

use super::CliError;
use super::args::{AlarmArgs, BrightnessArgs, Command, CommandIdArgs, MessageArgs, Submit};
use crate::domain::{
    AlarmRequest, BrightnessRequest, CommandRequest, DURATION_SECONDS, DeviceId, LEVEL,
    MAX_LABEL_CHARS, MessageRequest, ValidationError,
};

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
    /// `GET /commands/{id}`: the status record.
    Status,
    /// `DELETE /commands/{id}`: cancel a scheduled command.
    Cancel,
    /// `GET /devices`: every device in the token's scopes.
    Devices,
    /// `GET /devices/{id}`: one device.
    Device,
    /// `clockctl schedule …` (SPEC 12.4).
    Schedule(super::schedule::Op),
}

/// A request that passed every client-side check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiRequest {
    /// HTTP method.
    pub method: Method,
    /// Absolute path under the base URL (a command id in it is percent-encoded).
    pub path: String,
    /// The JSON body, when the request has one.
    pub body: Option<String>,
    /// How to read the answer.
    pub kind: Kind,
    /// For the three commands: the `Idempotency-Key` sent with every attempt (SPEC 7.6).
    pub idempotency_key: Option<String>,
    /// How many times to retry after a connection failure, a timeout, a 502 or a 503.
    pub retries: u32,
    /// `--wait`: follow the command to its end for at most this long.
    pub wait: Option<Duration>,
    /// For `status` and `cancel`: the id as typed (for messages); for `device`, the device.
    pub command_id: Option<String>,
}

/// The longest command id `status` and `cancel` accept (the server's are UUIDs).
pub const MAX_COMMAND_ID: usize = 64;

/// What is escaped in a path segment: controls, space and the URL delimiters.
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'\\')
    .add(b'^')
    .add(b'|');

/// The path of a command's status resource, `/commands/<id>` with the id escaped.
pub fn status_path(command_id: &str) -> String {
    format!("/commands/{}", utf8_percent_encode(command_id, SEGMENT))
}

impl ApiRequest {
    /// Validates the arguments of `command` and builds its request. `schedule add`
    /// without `--tz` takes the machine's zone (the `TZ` variable, else `/etc/localtime`).
    pub fn from_command(command: &Command) -> Result<Self, CliError> {
        Self::from_command_with_tz(command, std::env::var("TZ").ok())
    }

    /// [`from_command`](Self::from_command) with the `TZ` variable given.
    pub fn from_command_with_tz(command: &Command, tz: Option<String>) -> Result<Self, CliError> {
        match command {
            Command::Schedule(schedule) => {
                let call = super::schedule::request(schedule, tz)?;
                Ok(Self {
                    method: call.method,
                    path: call.path,
                    body: call.body,
                    kind: Kind::Schedule(call.op),
                    idempotency_key: call.idempotency_key,
                    retries: call.retries,
                    wait: None,
                    command_id: call.id,
                })
            }
            Command::Alarm(a) => alarm(a),
            Command::Message(m) => message(m),
            Command::Brightness(b) => brightness(b),
            Command::Ready(_) => Ok(Self {
                method: Method::GET,
                path: "/ready".to_owned(),
                body: None,
                kind: Kind::Ready,
                idempotency_key: None,
                retries: 0,
                wait: None,
                command_id: None,
            }),
            Command::Status(args) => by_id(args, Method::GET, Kind::Status),
            Command::Devices(args) => Ok(Self {
                method: Method::GET,
                path: "/devices".to_owned(),
                body: None,
                kind: Kind::Devices,
                idempotency_key: None,
                retries: args.retries.count,
                wait: None,
                command_id: None,
            }),
            Command::Device(args) => {
                let id = device(&args.device_id).map_err(|_| {
                    CliError::Invalid(format!(
                        "invalid DEVICE_ID {:?}: pass an id like clock-1 (1-64 characters of \
                         A-Z a-z 0-9 _ -)",
                        args.device_id
                    ))
                })?;
                Ok(Self {
                    method: Method::GET,
                    // Only path-safe characters: nothing to escape.
                    path: format!("/devices/{id}"),
                    body: None,
                    kind: Kind::Device,
                    idempotency_key: None,
                    retries: args.retries.count,
                    wait: None,
                    command_id: Some(id),
                })
            }
            Command::Cancel(args) => by_id(args, Method::DELETE, Kind::Cancel),
            Command::Watch(_) => Err(CliError::Invalid(
                "watch talks to the MQTT broker, not the API: run it with cli::watch::run".into(),
            )),
            Command::Events(_) => Err(CliError::Invalid(
                "events is a stream, not one answer: run it with cli::events::run".into(),
            )),
        }
    }

    /// The request of a command body, once the domain's validation passed (the server
    /// re-checks everything; an alarm's time against its own clock as well).
    /// `given` is the value of the flag a range or format error is about, as typed.
    fn command<R: CommandRequest>(body: R, given: &str, submit: &Submit) -> Result<Self, CliError> {
        let json = serde_json::to_string(&body)
            .map_err(|e| CliError::Invalid(format!("cannot encode the request body: {e}")))?;
        body.into_command().map_err(|e| flag_hint(e, given))?;
        let (method, path) = R::TYPE.api_route();
        Ok(Self {
            method,
            path: path.to_owned(),
            body: Some(json),
            kind: Kind::Command {
                success_line: R::TYPE.dispatched_line(),
            },
            // One key per invocation, so every retry of it is the same request to the server.
            idempotency_key: Some(
                submit
                    .idempotency_key
                    .clone()
                    .unwrap_or_else(|| uuid::Uuid::now_v7().to_string()),
            ),
            retries: submit.retries.count,
            wait: submit.wait,
            command_id: None,
        })
    }
}

/// `status` / `cancel`: the id checked loosely (the server answers 404 for any it does not
/// know), so that it stays one path segment.
fn by_id(args: &CommandIdArgs, method: Method, kind: Kind) -> Result<ApiRequest, CliError> {
    let id = args.command_id.trim();
    if id.is_empty() || id.contains('/') || id.chars().count() > MAX_COMMAND_ID {
        return Err(CliError::Invalid(format!(
            "invalid COMMAND_ID {:?}: pass the commandId of the 202 answer (1-{MAX_COMMAND_ID} \
             characters, no /), e.g. clockctl status 0197a8c2-5e1f-7c3a-9b2d-4f6e8a0c1d3e",
            args.command_id
        )));
    }
    if id.chars().any(char::is_control) {
        return Err(CliError::Invalid(format!(
            "invalid COMMAND_ID {:?}: it contains control characters; pass the commandId of \
             the 202 answer",
            args.command_id
        )));
    }
    Ok(ApiRequest {
        method,
        path: status_path(id),
        body: None,
        kind,
        idempotency_key: None,
        retries: args.retries.count,
        wait: None,
        command_id: Some(id.to_owned()),
    })
}

fn device(raw: &str) -> Result<String, CliError> {
    DeviceId::parse(raw)
        .map(|d| d.as_str().to_owned())
        .map_err(|e| {
            CliError::Invalid(format!(
                "invalid --device {raw:?}: {e}; pass an id like clock-1 \
                 (1-64 characters of A-Z a-z 0-9 _ -)"
            ))
        })
}

/// The domain's objection, said in terms of the flag to fix.
fn flag_hint(e: ValidationError, given: &str) -> CliError {
    CliError::Invalid(match e {
        ValidationError::AlarmTimeNotRfc3339 | ValidationError::AlarmTimeInThePast => format!(
            "invalid --time {given:?}: it must be RFC 3339 with a date, a time and an offset, \
             e.g. 2030-01-02T07:30:00Z or 2030-01-02T07:30:00+01:00"
        ),
        ValidationError::MessageBlank => {
            "--message must not be blank: pass the text to show, e.g. --message \"Tea is ready\""
                .to_owned()
        }
        ValidationError::DurationOutOfRange => format!(
            "--duration {given} is out of range: pass a whole number of seconds from {} to {} \
             (default 10)",
            DURATION_SECONDS.start(),
            DURATION_SECONDS.end()
        ),
        ValidationError::LevelOutOfRange => format!(
            "--level {given} is out of range: pass a whole number from {} to {}",
            LEVEL.start(),
            LEVEL.end()
        ),
        ValidationError::LabelTooLong => {
            format!("--label must be at most {MAX_LABEL_CHARS} characters: shorten it")
        }
        // clockctl sends no ttlSeconds (the server's default applies) and knows no profile.
        ValidationError::TtlOutOfRange | ValidationError::NotifyTooLarge { .. } => e.to_string(),
    })
}

fn alarm(args: &AlarmArgs) -> Result<ApiRequest, CliError> {
    let device_id = device(&args.device)?;
    ApiRequest::command(
        AlarmRequest {
            device_id: Some(device_id),
            alarm_time: Some(args.time.trim().to_owned()),
            label: Some(args.label.clone().unwrap_or_default()),
            ttl_seconds: None,
        },
        &args.time,
        &args.submit,
    )
}

fn message(args: &MessageArgs) -> Result<ApiRequest, CliError> {
    ApiRequest::command(
        MessageRequest {
            device_id: Some(device(&args.device)?),
            message: Some(args.message.clone()),
            duration_seconds: Some(args.duration),
            ttl_seconds: None,
        },
        &args.duration.to_string(),
        &args.submit,
    )
}

fn brightness(args: &BrightnessArgs) -> Result<ApiRequest, CliError> {
    ApiRequest::command(
        BrightnessRequest {
            device_id: Some(device(&args.device)?),
            level: Some(args.level),
            ttl_seconds: None,
        },
        &args.level.to_string(),
        &args.submit,
    )
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
        assert_eq!(
            (a.method.as_str(), a.path.as_str()),
            ("POST", "/commands/alarms")
        );
        assert_eq!(
            a.body.unwrap(),
            r#"{"deviceId":"clock-1","alarmTime":"2030-01-02T07:30:00+01:00","label":""}"#
        );
        let m = build(&["message", "--device", "c", "--message", "hi"]).unwrap();
        assert_eq!(
            (m.method.as_str(), m.path.as_str()),
            ("POST", "/commands/messages")
        );
        assert_eq!(
            m.body.unwrap(),
            r#"{"deviceId":"c","message":"hi","durationSeconds":10}"#
        );
        let b = build(&["brightness", "--device", "c", "--level", "0"]).unwrap();
        assert_eq!(
            (b.method.as_str(), b.path.as_str()),
            ("PUT", "/commands/brightness")
        );
        assert_eq!(b.body.unwrap(), r#"{"deviceId":"c","level":0}"#);
        let r = build(&["ready"]).unwrap();
        assert_eq!(
            (r.method.as_str(), r.path.as_str(), r.body),
            ("GET", "/ready", None)
        );
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
                &["brightness", "--device", "c", "--level", "101"],
                "--level",
            ),
            (&["brightness", "--device", "c", "--level", "-1"], "--level"),
        ] {
            let err = build(argv).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{argv:?}");
            assert!(err.to_string().contains(needle), "{argv:?}: {err}");
        }
        for duration in ["0", "3601"] {
            let err = message_lasting(duration).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{duration}");
            assert!(err.to_string().contains("--duration"), "{duration}: {err}");
        }
    }

    fn message_lasting(duration: &str) -> Result<ApiRequest, CliError> {
        build(&[
            "message",
            "--device",
            "c",
            "--message",
            "x",
            "--duration",
            duration,
        ])
    }

    #[test]
    fn every_command_carries_an_idempotency_key_and_the_tracking_flags() {
        let a = build(&["brightness", "--device", "c", "--level", "1"]).unwrap();
        let b = build(&["brightness", "--device", "c", "--level", "1"]).unwrap();
        let (ka, kb) = (a.idempotency_key.unwrap(), b.idempotency_key.unwrap());
        assert!(uuid::Uuid::parse_str(&ka).is_ok(), "{ka}");
        assert_ne!(ka, kb, "a new key per invocation");
        assert_eq!((a.retries, a.wait), (2, None));
        let c = build(&[
            "brightness",
            "-device",
            "c",
            "-level",
            "1",
            "-idempotency-key",
            "deploy-42",
            "-retries=0",
            "-wait",
        ])
        .unwrap();
        assert_eq!(c.idempotency_key.as_deref(), Some("deploy-42"));
        assert_eq!(c.retries, 0);
        assert_eq!(c.wait, Some(Duration::from_secs(30)));
        let d = build(&["message", "--device", "c", "--message", "m", "--wait=1m30s"]).unwrap();
        assert_eq!(d.wait, Some(Duration::from_secs(90)));
        // A space instead of `=` works too (a newcomer's way of writing it).
        for wait in [&["--wait", "5s"][..], &["-wait", "5s"]] {
            let argv = ["message", "--device", "c"]
                .iter()
                .chain(wait)
                .chain(&["--message", "m"]);
            let e = build(&argv.copied().collect::<Vec<_>>()).unwrap();
            assert_eq!(e.wait, Some(Duration::from_secs(5)), "{wait:?}");
        }
        assert!(build(&["ready"]).unwrap().idempotency_key.is_none());
    }

    #[test]
    fn bad_tracking_flags_are_usage_errors_naming_the_flag() {
        let base = ["clockctl", "brightness", "--device", "c", "--level", "1"];
        let long = "k".repeat(256);
        for (extra, flag) in [
            (&["--idempotency-key", "two words"][..], "--idempotency-key"),
            (&["--idempotency-key", ""], "--idempotency-key"),
            (&["--idempotency-key", "é"], "--idempotency-key"),
            (&["--idempotency-key", long.as_str()], "--idempotency-key"),
            (&["--wait=soon"], "--wait"),
            (&["--wait=0s"], "--wait"),
            (&["--wait", "soon"], "soon"),
            (&["--wait", "5"], "--wait"),
            (&["--retries", "-1"], "--retries"),
            (&["--retries", "many"], "--retries"),
        ] {
            let err = Cli::try_parse_go_style(base.iter().chain(extra)).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{extra:?}");
            assert!(err.to_string().contains(flag), "{extra:?}: {err}");
        }
    }

    #[test]
    fn status_and_cancel_take_one_path_segment_escaped() {
        let s = build(&["status", "0197-a"]).unwrap();
        assert_eq!(
            (s.method.as_str(), s.path.as_str()),
            ("GET", "/commands/0197-a")
        );
        assert_eq!(s.command_id.as_deref(), Some("0197-a"));
        let c = build(&["cancel", "a b?c#d%"]).unwrap();
        assert_eq!(
            (c.method.as_str(), c.path.as_str()),
            ("DELETE", "/commands/a%20b%3Fc%23d%25")
        );
        for bad in ["", " ", "a/b", &"x".repeat(65), "a\u{1b}b"] {
            let err = build(&["status", bad]).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad:?}");
            assert!(err.to_string().contains("COMMAND_ID"), "{err}");
        }
        assert!(build(&["cancel", &"x".repeat(64)]).is_ok());
    }

    #[test]
    fn boundary_values_are_accepted() {
        assert!(message_lasting("1").is_ok());
        assert!(message_lasting("3600").is_ok());
        assert!(build(&["brightness", "--device", "c", "--level", "100"]).is_ok());
        assert!(build(&["brightness", "--device", &"d".repeat(64), "--level", "1"]).is_ok());
    }
}
