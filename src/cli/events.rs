//! `clockctl events` (SPEC 13.1): follows the server's `GET /events` stream and prints one
//! terminal-safe line per event as it arrives.

use std::future::Future;
use std::io::Write;
use std::time::Duration;

use serde_json::Value;

use super::CliError;
use super::args::EventsArgs;
use super::client::open_stream;
use super::settings::Settings;
use crate::domain::DeviceId;
use crate::terminal;

/// The longest line, and the longest event (its `data` lines together), read from the
/// server: a hostile server cannot make the client's memory grow without bound.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// The server sends a keep-alive at least every 15 s; this long without a byte, the
/// connection is dead.
const IDLE: Duration = Duration::from_secs(45);

/// The event types `--types` may name (SPEC 13.1).
const TYPES: [&str; 3] = ["command", "device", "schedule"];

/// The request path with its query, once the arguments are valid.
pub fn path(args: &EventsArgs) -> Result<String, CliError> {
    // Device ids and type names are URL-safe once checked: nothing to encode.
    let mut query: Vec<String> = Vec::new();
    for raw in args.device.iter().filter(|d| !d.trim().is_empty()) {
        let id = DeviceId::parse(raw).map_err(|e| {
            CliError::Invalid(format!(
                "invalid --device {:?}: {e}; pass an id like clock-1 (1-64 characters of \
                 A-Z a-z 0-9 _ -), or leave it out to follow every device",
                terminal::plain(raw)
            ))
        })?;
        query.push(format!("deviceId={}", id.as_str()));
    }
    if let Some(types) = args.types.as_deref().filter(|t| !t.trim().is_empty()) {
        let mut names = Vec::new();
        for name in types.split(',').map(str::trim) {
            if !TYPES.contains(&name) {
                return Err(CliError::Invalid(format!(
                    "invalid --types {:?}: {:?} is not an event type; use a comma-separated \
                     list of command, device, schedule",
                    terminal::plain(types),
                    terminal::plain(name)
                )));
            }
            if !names.contains(&name) {
                names.push(name);
            }
        }
        query.push(format!("types={}", names.join(",")));
    }
    let query = query.join("&");
    Ok(if query.is_empty() {
        "/events".to_owned()
    } else {
        format!("/events?{query}")
    })
}

/// One event of the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The `event:` field (`message` when absent).
    pub name: String,
    /// The `data:` lines joined by newlines.
    pub data: String,
}

/// What the reader made of the bytes so far.
#[derive(Debug, Default)]
pub struct Parser {
    /// Bytes after the last complete line.
    pending: Vec<u8>,
    name: Option<String>,
    data: Option<String>,
}

impl Parser {
    /// Feeds `chunk`; returns the events it completes, or the error when a line or an
    /// event is longer than [`MAX_LINE_BYTES`].
    pub fn feed(&mut self, chunk: &[u8]) -> Result<Vec<Event>, CliError> {
        let mut events = Vec::new();
        self.pending.extend_from_slice(chunk);
        let mut start = 0;
        while let Some(at) = self.pending[start..].iter().position(|&b| b == b'\n') {
            let end = start + at;
            let line = self.pending[start..end]
                .strip_suffix(b"\r")
                .unwrap_or(&self.pending[start..end]);
            let line = String::from_utf8_lossy(line).into_owned();
            start = end + 1;
            if let Some(event) = self.line(&line)? {
                events.push(event);
            }
        }
        self.pending.drain(..start);
        if self.pending.len() > MAX_LINE_BYTES {
            return Err(too_long());
        }
        Ok(events)
    }

    fn line(&mut self, line: &str) -> Result<Option<Event>, CliError> {
        if line.len() > MAX_LINE_BYTES {
            return Err(too_long());
        }
        if line.is_empty() {
            let name = self.name.take();
            return Ok(self.data.take().map(|data| Event {
                name: name.unwrap_or_else(|| "message".to_owned()),
                data,
            }));
        }
        if line.starts_with(':') {
            // A comment: the keep-alive.
            return Ok(None);
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => self.name = Some(value.to_owned()),
            "data" => {
                let data = self.data.get_or_insert_with(String::new);
                if !data.is_empty() {
                    data.push('\n');
                }
                data.push_str(value);
                if data.len() > MAX_LINE_BYTES {
                    return Err(too_long());
                }
            }
            _ => {}
        }
        Ok(None)
    }
}

fn too_long() -> CliError {
    CliError::Call(format!(
        "GET /events: an event longer than {} KiB, more than any clock-server event: is \
         CLOCK_SERVER_BASE_URL the clock-server?",
        MAX_LINE_BYTES / 1024
    ))
}

/// The error for `event: overflow`.
fn overflow() -> CliError {
    CliError::Call(
        "GET /events: fell behind the server by more than 1024 events and it ended the \
         stream (event: overflow); reconnect (run clockctl events again) and read the \
         current state with clockctl devices / status / schedule list"
            .to_owned(),
    )
}

/// A string field of `value`, escaped, `-` when absent.
fn field(value: &Value, key: &str) -> String {
    match value.get(key) {
        Some(Value::String(s)) => terminal::plain(s),
        Some(Value::Null) | None => "-".to_owned(),
        Some(other) => terminal::json_value(other),
    }
}

/// A quoted text of `value` (`key="..."`), when present and not empty.
fn quoted(value: Option<&Value>, key: &str) -> Option<String> {
    match value? {
        Value::String(s) if !s.is_empty() => {
            Some(format!("{key}={}", terminal::plain(&format!("{s:?}"))))
        }
        _ => None,
    }
}

/// The line printed for `event`: readable without `json`, `{"event","data"}` with it.
/// Every character of the server's is escaped where it could act on a terminal.
pub fn line(event: &Event, json: bool) -> String {
    let data: Option<Value> = serde_json::from_str(&event.data).ok();
    if json {
        return format!(
            "{{\"event\":{},\"data\":{}}}",
            terminal::json_value(&Value::from(event.name.as_str())),
            terminal::json(&event.data)
        );
    }
    let Some(data) = data.filter(Value::is_object) else {
        return format!(
            "{} {}",
            terminal::plain(&event.name),
            terminal::json(&event.data)
        );
    };
    let mut parts = match event.name.as_str() {
        "command" => vec![
            "command".to_owned(),
            field(&data, "commandId"),
            field(&data, "deviceId"),
            field(&data, "type"),
            field(&data, "status"),
        ],
        "device" => vec![
            "device".to_owned(),
            field(&data, "deviceId"),
            field(&data, "presence"),
        ],
        "schedule" => {
            let state = if data.get("deleted") == Some(&Value::Bool(true)) {
                "deleted"
            } else if data.get("enabled") == Some(&Value::Bool(false)) {
                "paused"
            } else {
                "enabled"
            };
            vec![
                "schedule".to_owned(),
                field(&data, "scheduleId"),
                field(&data, "deviceId"),
                state.to_owned(),
            ]
        }
        other => return format!("{} {}", terminal::plain(other), terminal::json(&event.data)),
    };
    parts.extend(quoted(data.get("label"), "label"));
    if let Some(reason) = data.get("statusReason").filter(|r| r.is_object()) {
        parts.extend(quoted(reason.get("code"), "reason"));
        parts.extend(quoted(reason.get("message"), "message"));
    }
    if event.name == "schedule" && !matches!(data.get("nextFireAt"), None | Some(Value::Null)) {
        parts.push(format!("nextFireAt={}", field(&data, "nextFireAt")));
    }
    parts.join(" ")
}

/// Connects, then prints each event on `out` until the server ends the stream (`Ok`),
/// `event: overflow` or a broken connection (`Err`, exit 1), or `shutdown` (`Ok`). A
/// reader of the output that went away ends it quietly too.
pub async fn run(
    args: &EventsArgs,
    json: bool,
    env: impl Fn(&str) -> Option<String>,
    out: &mut impl Write,
    shutdown: impl Future<Output = ()>,
) -> Result<(), CliError> {
    let path = path(args)?;
    let settings = Settings::from_lookup(env)?;
    let mut response = open_stream(&settings, &path, args.retries.count).await?;
    // On stderr, so that stdout stays one line per event: scripts wait for it.
    eprintln!(
        "clockctl: following {}",
        terminal::plain(&super::settings::redacted(response.url()))
    );
    let mut parser = Parser::default();
    tokio::pin!(shutdown);
    loop {
        let chunk = tokio::select! {
            () = &mut shutdown => return Ok(()),
            chunk = tokio::time::timeout(IDLE, response.chunk()) => chunk,
        };
        let chunk = match chunk {
            Err(_) => {
                return Err(CliError::Call(format!(
                    "GET /events: nothing from the server for {} s (it sends a keep-alive \
                     every 15 s): the connection is lost; run clockctl events again",
                    IDLE.as_secs()
                )));
            }
            Ok(Err(e)) => {
                return Err(CliError::Call(format!(
                    "GET /events: the stream broke: {}",
                    e.without_url()
                )));
            }
            Ok(Ok(None)) => return Ok(()),
            Ok(Ok(Some(chunk))) => chunk,
        };
        for event in parser.feed(&chunk)? {
            if event.name == "overflow" {
                return Err(overflow());
            }
            let printed = writeln!(out, "{}", line(&event, json)).and_then(|()| out.flush());
            if printed.is_err() {
                // The reader went away (e.g. `| head`): nothing left to do.
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cli;
    use crate::cli::args::Command;

    fn events_args(argv: &[&str]) -> EventsArgs {
        let cli = Cli::try_parse_go_style(["clockctl", "events"].iter().chain(argv)).unwrap();
        match cli.command {
            Command::Events(e) => e,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn devices_and_types_become_the_query_and_bad_ones_are_usage_errors() {
        assert_eq!(path(&events_args(&[])).unwrap(), "/events");
        assert_eq!(
            path(&events_args(&[
                "--device",
                "clock-1,clock-2",
                "-device",
                "k",
                "--types",
                "command, device,command"
            ]))
            .unwrap(),
            "/events?deviceId=clock-1&deviceId=clock-2&deviceId=k&types=command,device"
        );
        for (argv, says) in [
            (&["--device", "a/b"][..], "--device"),
            (&["--types", "commands"], "--types"),
        ] {
            let err = path(&events_args(argv)).unwrap_err();
            assert_eq!(err.exit_code(), 2);
            assert!(err.to_string().contains(says), "{err}");
        }
    }

    #[test]
    fn events_are_read_across_chunks_and_comments_are_skipped() {
        let mut p = Parser::default();
        assert!(p.feed(b": keep-alive\n\nevent: dev").unwrap().is_empty());
        let events = p.feed(b"ice\r\ndata: {\"a\":\ndata: 1}\n\n").unwrap();
        assert_eq!(
            events,
            [Event {
                name: "device".to_owned(),
                data: "{\"a\":\n1}".to_owned()
            }]
        );
    }

    #[test]
    fn a_line_or_event_past_the_bound_is_an_error_not_memory() {
        let mut p = Parser::default();
        let err = p.feed(&vec![b'x'; MAX_LINE_BYTES + 1]).unwrap_err();
        assert!(err.to_string().contains("64 KiB"), "{err}");
        let mut p = Parser::default();
        let line = format!("data: {}\n", "x".repeat(MAX_LINE_BYTES / 2));
        p.feed(line.as_bytes()).unwrap();
        assert!(p.feed(line.as_bytes()).is_err());
    }

    #[test]
    fn lines_escape_what_the_server_sent() {
        let event = Event {
            name: "schedule".to_owned(),
            data: r#"{"scheduleId":"s1","deviceId":"clock-1","label":"a\u202eb\u001b[2J","enabled":true,"nextFireAt":null}"#
                .to_owned(),
        };
        let shown = line(&event, false);
        assert_eq!(
            shown,
            r#"schedule s1 clock-1 enabled label="a\u{202e}b\u{1b}[2J""#
        );
        let json = line(&event, true);
        assert!(!json.chars().any(terminal::is_unsafe), "{json}");
        assert!(
            json.starts_with(r#"{"event":"schedule","data":{"scheduleId":"s1""#),
            "{json}"
        );
    }
}
