//! `clockctl`'s errors, each mapped to the exit code scripts rely on (SPEC 5).

use std::fmt;

/// Why a `clockctl` invocation failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Invalid input or environment; nothing was sent (exit 2).
    #[error("{0}")]
    Invalid(String),
    /// A bearer token would travel in clear text to a non-local host; nothing was sent (exit 1).
    #[error(
        "refusing to send bearer token over plain http to non-local host {host}: use an https:// \
         CLOCK_SERVER_BASE_URL, or set CLOCKCTL_ALLOW_INSECURE_HTTP=true if the network path is trusted"
    )]
    InsecureToken {
        /// The host the token would have gone to.
        host: String,
    },
    /// The server could not be reached, or did not answer within the timeout (exit 1).
    #[error("call server: {0}")]
    Call(String),
    /// The server answered with a status other than 2xx (exit 1).
    #[error("{0}")]
    Status(ServerError),
    /// `status`, `cancel`, `--wait`: the server has no record of that command (exit 1).
    #[error(
        "{answer}: no command {id} (unknown, expired from the store, or outside your scopes): \
         check the commandId of the 202 answer (clockctl --json prints it) and \
         CLOCK_SERVER_TOKEN",
        answer = server.answer()
    )]
    NoCommand {
        /// The id asked about, escaped for printing.
        id: String,
        /// The 404 as the server gave it (SPEC 5: every non-2xx shows its status and error).
        server: Box<ServerError>,
    },
    /// `device`: the server does not show that device to this token (exit 1).
    #[error(
        "{answer}: no device {id} within your token's scopes: check the id and the scopes of \
         CLOCK_SERVER_TOKEN (clockctl devices lists the devices it may see)",
        answer = server.answer()
    )]
    NoDevice {
        /// The id asked about, escaped for printing.
        id: String,
        /// The 404 as the server gave it.
        server: Box<ServerError>,
    },
    /// `cancel`: the command is past the point where it could be cancelled (exit 1).
    #[error(
        "{answer}: command {id} can no longer be cancelled: it is {status} (only a scheduled or \
         queued command can be; see clockctl status {id})",
        answer = server.answer()
    )]
    NotCancellable {
        /// The id, escaped for printing.
        id: String,
        /// Its status as the server reported it, escaped.
        status: String,
        /// The 409 as the server gave it.
        server: Box<ServerError>,
    },
    /// `watch`: the MQTT broker could not be reached or refused the subscription (exit 1).
    #[error(transparent)]
    Watch(#[from] crate::clock::WatchError),
}

impl CliError {
    /// The process exit code: 2 for bad usage or input, 1 for everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Invalid(_) => 2,
            Self::InsecureToken { .. }
            | Self::Call(_)
            | Self::Status(_)
            | Self::NoCommand { .. }
            | Self::NoDevice { .. }
            | Self::NotCancellable { .. }
            | Self::Watch(_) => 1,
        }
    }
}

/// A non-2xx answer: the status and the server's `error` (and `detail`) texts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerError {
    /// The HTTP status code.
    pub status: u16,
    /// The server's `error` text, or a sanitised excerpt of a non-JSON body.
    pub error: String,
    /// The server's `detail` text, when present.
    pub detail: Option<String>,
    /// For a redirect: where it pointed (not followed, so the token stays put).
    pub location: Option<String>,
    /// When the status was one that is retried: how many attempts were made.
    pub attempts: Option<Attempts>,
    /// The request went without a token (`CLOCK_SERVER_TOKEN` unset): a 401 says so.
    pub without_token: bool,
}

/// How often a request was tried before giving up (shown with the final error).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempts {
    /// Attempts made, the first included.
    pub made: u32,
    /// `--retries`.
    pub retries: u32,
}

impl fmt::Display for Attempts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = if self.made == 1 { "" } else { "s" };
        write!(
            f,
            "gave up after {} attempt{s} (--retries {})",
            self.made, self.retries
        )
    }
}

impl ServerError {
    /// A hint for the statuses an operator can fix from the client side.
    fn hint(&self) -> Option<&'static str> {
        Some(match self.status {
            300..=399 => "redirects are not followed; point CLOCK_SERVER_BASE_URL at the final URL",
            401 if self.without_token => {
                "CLOCK_SERVER_TOKEN is not set: export CLOCK_SERVER_TOKEN=<your token> (the \
                 demo's is dev-token)"
            }
            401 => "check CLOCK_SERVER_TOKEN",
            403 => "the token's scopes do not cover this device",
            404 => "check CLOCK_SERVER_BASE_URL (is it the clock-server?)",
            426 => "the server requires TLS; use an https:// CLOCK_SERVER_BASE_URL",
            429 => "too many failed authentications; wait a minute and check CLOCK_SERVER_TOKEN",
            _ => return None,
        })
    }

    /// `server answered status=<code> error="..."` with the detail and location when
    /// present: what the server said, without a hint.
    pub fn answer(&self) -> Answered<'_> {
        Answered(self)
    }
}

/// What [`ServerError::answer`] shows.
pub struct Answered<'a>(&'a ServerError);

impl fmt::Display for Answered<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = self.0;
        // Debug-quoting escapes control characters and the invisible ones that reorder
        // text (`\u{202e}`), so a hostile body cannot drive the terminal.
        write!(f, "server answered status={} error={:?}", e.status, e.error)?;
        if let Some(detail) = &e.detail {
            write!(f, " detail={detail:?}")?;
        }
        if let Some(location) = &e.location {
            write!(f, " location={location:?}")?;
        }
        Ok(())
    }
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.answer())?;
        if let Some(hint) = self.hint() {
            write!(f, " ({hint})")?;
        }
        if let Some(attempts) = &self.attempts {
            write!(f, "; {attempts}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_problems_exit_2_and_everything_else_exits_1() {
        assert_eq!(CliError::Invalid("x".into()).exit_code(), 2);
        assert_eq!(CliError::Call("x".into()).exit_code(), 1);
        assert_eq!(CliError::InsecureToken { host: "h".into() }.exit_code(), 1);
    }

    #[test]
    fn a_server_error_shows_status_error_and_detail_with_control_characters_escaped() {
        let e = ServerError {
            status: 400,
            error: "invalid command".into(),
            detail: Some("bad\u{1b}[31m\u{7f}\u{9b}2J".into()),
            location: None,
            attempts: None,
            without_token: false,
        };
        let text = e.to_string();
        assert!(text.contains("status=400"), "{text}");
        assert!(text.contains("error=\"invalid command\""), "{text}");
        assert!(
            text.contains("detail=\"bad\\u{1b}[31m\\u{7f}\\u{9b}2J\""),
            "{text}"
        );
        assert!(!text.chars().any(char::is_control), "{text:?}");
    }

    #[test]
    fn the_debug_quoting_escapes_invisible_reordering_characters() {
        let e = ServerError {
            status: 500,
            error: "a\u{202e}b\u{2028}c\u{200b}".into(),
            detail: None,
            location: None,
            attempts: None,
            without_token: false,
        };
        let text = e.to_string();
        assert!(!text.chars().any(crate::terminal::is_unsafe), "{text:?}");
        assert!(text.contains(r"a\u{202e}b\u{2028}c\u{200b}"), "{text}");
    }
}
