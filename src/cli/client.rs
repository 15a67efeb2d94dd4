//! The HTTP call: the token-safety rule, a rustls client that never follows redirects, and
//! turning the answer into what `clockctl` prints.

use std::error::Error as _;
use std::sync::Arc;

use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderValue};
use reqwest::{Client, StatusCode, redirect};
use serde::Deserialize;

use super::CliError;
use super::error::ServerError;
use super::request::{ApiRequest, Kind};
use super::settings::{Settings, is_local, redacted};
use crate::terminal;
use crate::tls::{ClientTls, client_config};

/// What a finished call prints, and whether it counts as success.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// The line for stdout: the success line, the readiness status, or the JSON body
    /// (re-serialised, control characters escaped).
    pub stdout: String,
    /// For stderr, when the call worked but the answer is a failure (ready: not ready).
    pub note: Option<String>,
    /// Exit 0 when true, 1 when false.
    pub success: bool,
}

/// The error body every server error has (SPEC 2), and the readiness body.
#[derive(Debug, Default, Deserialize)]
struct Body {
    error: Option<String>,
    detail: Option<String>,
    status: Option<String>,
}

/// Longest excerpt of a non-JSON error body that is shown (e.g. a proxy's HTML page).
const EXCERPT_CHARS: usize = 200;

/// Refuses to put a token on the wire in clear text to another machine (SPEC 5).
pub fn check_token_transport(settings: &Settings) -> Result<(), CliError> {
    let url = &settings.base_url;
    if settings.token.is_some()
        && url.scheme() == "http"
        && !is_local(url)
        && !settings.allow_insecure_http
    {
        return Err(CliError::InsecureToken {
            host: url.host_str().unwrap_or_default().to_owned(),
        });
    }
    Ok(())
}

fn build_client(settings: &Settings) -> Result<Client, CliError> {
    // Loading the system trust store costs time; plain HTTP still needs a TLS config because
    // reqwest is built without a default crypto provider.
    let tls = if settings.base_url.scheme() == "https" {
        client_config(&ClientTls::default())
            .map_err(|e| CliError::Invalid(format!("TLS set-up: {e}")))?
    } else {
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| CliError::Invalid(format!("TLS set-up: {e}")))?
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth()
    };
    let mut builder = Client::builder()
        .tls_backend_preconfigured(tls)
        // A redirect could carry the token to another host.
        .redirect(redirect::Policy::none())
        .timeout(settings.timeout)
        .user_agent(concat!("clockctl/", env!("CARGO_PKG_VERSION")));
    if is_local(&settings.base_url) {
        // As Go's net/http does: a proxy would take a local call (and its token) off the machine.
        builder = builder.no_proxy();
    }
    builder
        .build()
        .map_err(|e| CliError::Invalid(format!("cannot set up the HTTP client: {}", chain(&e))))
}

/// Sends `request` and interprets the answer. `json` prints the body instead of the line.
pub async fn send(
    settings: &Settings,
    request: &ApiRequest,
    json: bool,
) -> Result<Output, CliError> {
    check_token_transport(settings)?;
    let client = build_client(settings)?;
    let url = settings.endpoint(request.path);
    let shown = match reqwest::Url::parse(&url) {
        Ok(u) => redacted(&u),
        Err(_) => url.clone(),
    };
    let mut builder = client
        .request(request.method.clone(), &url)
        .header(ACCEPT, HeaderValue::from_static("application/json"));
    if let Some(token) = &settings.token {
        builder = builder.bearer_auth(token.expose());
    }
    if let Some(body) = &request.body {
        builder = builder
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .body(body.clone());
    }
    let call_error = |e: reqwest::Error| {
        let why = if e.is_timeout() {
            format!(
                "no complete answer within {} ms (CLOCKCTL_TIMEOUT_MS)",
                settings.timeout.as_millis()
            )
        } else {
            chain(&e.without_url())
        };
        CliError::Call(format!("{} {shown}: {why}", request.method))
    };
    let response = builder.send().await.map_err(call_error)?;
    let status = response.status();
    let location = response
        .headers()
        .get(reqwest::header::LOCATION)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let bytes = response.bytes().await.map_err(call_error)?;
    let text = String::from_utf8_lossy(&bytes);
    let text = text.trim_end();
    let parsed: Option<Body> = serde_json::from_str(text).ok();

    match request.kind {
        Kind::Command { success_line } if status.is_success() => Ok(Output {
            stdout: if json {
                terminal::json(text)
            } else {
                success_line.to_owned()
            },
            note: None,
            success: true,
        }),
        Kind::Ready if status.is_success() || status == StatusCode::SERVICE_UNAVAILABLE => {
            let ready = status.is_success();
            let fallback = if ready { "ready" } else { "not_ready" };
            let state = parsed
                .and_then(|b| b.status)
                .unwrap_or_else(|| fallback.to_owned());
            Ok(Output {
                stdout: if json {
                    terminal::json(text)
                } else {
                    sanitize(&state)
                },
                note: (!ready).then(|| format!("server is not ready (status={})", status.as_u16())),
                success: ready,
            })
        }
        _ => {
            let (error, detail) = match parsed {
                Some(Body {
                    error: Some(error),
                    detail,
                    ..
                }) => (error, detail),
                _ => (excerpt(text), None),
            };
            Err(CliError::Status(ServerError {
                status: status.as_u16(),
                error,
                detail,
                location: location.filter(|_| status.is_redirection()),
            }))
        }
    }
}

/// An error and its causes, `a: b: c`, as Go prints wrapped errors.
fn chain(err: &reqwest::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // hyper and reqwest sometimes repeat the inner message; print it once.
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// A short, printable excerpt of a body that is not the server's JSON.
fn excerpt(text: &str) -> String {
    if text.is_empty() {
        return "(empty body)".to_owned();
    }
    let mut out: String = text.chars().take(EXCERPT_CHARS).collect();
    if text.chars().count() > EXCERPT_CHARS {
        out.push_str("...");
    }
    out
}

/// Drops control characters from a value printed as a bare line.
fn sanitize(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn settings(base: &str, token: bool, allow: bool) -> Settings {
        Settings {
            base_url: reqwest::Url::parse(base).unwrap(),
            token: token.then(|| {
                Settings::from_lookup(|k| (k == "CLOCK_SERVER_TOKEN").then(|| "t".to_owned()))
                    .unwrap()
                    .token
                    .unwrap()
            }),
            timeout: Duration::from_secs(1),
            allow_insecure_http: allow,
        }
    }

    #[test]
    fn a_token_over_plain_http_is_refused_only_for_non_local_hosts() {
        assert!(check_token_transport(&settings("http://example.com", true, false)).is_err());
        assert!(check_token_transport(&settings("http://example.com", true, true)).is_ok());
        assert!(check_token_transport(&settings("http://example.com", false, false)).is_ok());
        assert!(check_token_transport(&settings("https://example.com", true, false)).is_ok());
        assert!(check_token_transport(&settings("http://127.0.0.1:1", true, false)).is_ok());
        assert!(check_token_transport(&settings("http://[::1]:1", true, false)).is_ok());
        let err = check_token_transport(&settings("http://example.com", true, false)).unwrap_err();
        assert!(err.to_string().contains("refusing to send bearer token"));
        assert!(err.to_string().contains("CLOCKCTL_ALLOW_INSECURE_HTTP"));
    }

    #[test]
    fn long_non_json_bodies_are_cut() {
        assert_eq!(excerpt(""), "(empty body)");
        assert_eq!(excerpt(&"x".repeat(500)).len(), EXCERPT_CHARS + 3);
    }
}
