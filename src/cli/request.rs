//! Subcommand arguments turned into a validated API request with exactly the server's JSON
//! shape (SPEC 2). Nothing here does I/O; an invalid input never leaves the machine.

use reqwest::Method;

use super::CliError;
use super::args::{AlarmArgs, BrightnessArgs, Command, MessageArgs};
use crate::domain::{
    AlarmRequest, BrightnessRequest, CommandRequest, DURATION_SECONDS, DeviceId, LEVEL,
    MessageRequest, ValidationError,
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

    /// The request of a command body, once the domain's validation passed (the server
    /// re-checks everything; an alarm's time against its own clock as well).
    /// `given` is the value of the flag a range or format error is about, as typed.
    fn command<R: CommandRequest>(body: R, given: &str) -> Result<Self, CliError> {
        let json = serde_json::to_string(&body)
            .map_err(|e| CliError::Invalid(format!("cannot encode the request body: {e}")))?;
        body.into_command().map_err(|e| flag_hint(e, given))?;
        let (method, path) = R::TYPE.api_route();
        Ok(Self {
            method,
            path,
            body: Some(json),
            kind: Kind::Command {
                success_line: R::TYPE.dispatched_line(),
            },
        })
    }
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
        // clockctl sends no ttlSeconds; the server's default applies.
        ValidationError::TtlOutOfRange => e.to_string(),
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
    fn boundary_values_are_accepted() {
        assert!(message_lasting("1").is_ok());
        assert!(message_lasting("3600").is_ok());
        assert!(build(&["brightness", "--device", "c", "--level", "100"]).is_ok());
        assert!(build(&["brightness", "--device", &"d".repeat(64), "--level", "1"]).is_ok());
    }
}
