//! The HTTP call: the token-safety rule, a rustls client that never follows redirects, and
//! turning the answer into what `clockctl` prints.

use std::error::Error as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderValue};
use reqwest::{Client, StatusCode, redirect};
use serde::Deserialize;

use super::CliError;
use super::devices::{Device, DeviceList};
use super::error::{Attempts, ServerError};
use super::record::{Accepted, Record};
use super::request::{ApiRequest, Kind, status_path};
use super::schedule::Op;
use super::settings::{Settings, is_local, redacted};
use crate::terminal;
use crate::tls::{ClientTls, client_config};

/// What a finished call prints, and whether it counts as success.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// What goes to stdout: the success line (and with --wait the outcome), the readiness
    /// status, a record, or the JSON body (re-serialised, control characters escaped).
    pub stdout: String,
    /// For stderr, one line each: why the answer is a failure (ready: not ready; --wait
    /// ended), or what the answer means (replayed).
    pub notes: Vec<String>,
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

/// The largest answer `clockctl` reads. The server's are small (a status record is under
/// 2 KiB); a bigger one is not the clock-server's, and reading it whole could exhaust the
/// memory of the machine it runs on.
const MAX_ANSWER_BYTES: usize = 1024 * 1024;

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

/// The HTTP client; `whole`: every request must finish within the settings' timeout (a
/// stream's client bounds only the connection and, per request, the wait for the answer).
fn build_client(settings: &Settings, whole: bool) -> Result<Client, CliError> {
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
        .connect_timeout(settings.timeout)
        .user_agent(concat!("clockctl/", env!("CARGO_PKG_VERSION")));
    if whole {
        builder = builder.timeout(settings.timeout);
    }
    if is_local(&settings.base_url) {
        // As Go's net/http does: a proxy would take a local call (and its token) off the machine.
        builder = builder.no_proxy();
    }
    builder
        .build()
        .map_err(|e| CliError::Invalid(format!("cannot set up the HTTP client: {}", chain(&e))))
}

/// First pause before a retry; it doubles per retry up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// Longest pause between two attempts chosen by `clockctl`.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// Longest `Retry-After` honoured, so that a server cannot park the client.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(10);
/// First pause between two status polls of `--wait`; it grows to [`MAX_POLL`].
const FIRST_POLL: Duration = Duration::from_millis(100);
/// Longest pause between two status polls.
const MAX_POLL: Duration = Duration::from_secs(1);

/// One HTTP answer, read whole.
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    location: Option<String>,
    retry_after: Option<Duration>,
    replayed: bool,
    /// The body, lossily decoded, trailing whitespace dropped.
    text: String,
}

impl Answer {
    fn body(&self) -> Option<Body> {
        serde_json::from_str(&self.text).ok()
    }

    /// The non-2xx answer: its status and the server's texts. `without_token`: the
    /// request carried no token.
    fn refusal(&self, attempts: Option<Attempts>, without_token: bool) -> ServerError {
        let (error, detail) = match self.body() {
            Some(Body {
                error: Some(error),
                detail,
                ..
            }) => (error, detail),
            _ => (excerpt(&self.text), None),
        };
        ServerError {
            status: self.status.as_u16(),
            error,
            detail,
            location: self
                .location
                .clone()
                .filter(|_| self.status.is_redirection()),
            attempts,
            without_token,
        }
    }
}

/// A request that got no answer.
struct Unanswered {
    /// What happened, for `call server: ...`.
    message: String,
    /// The server's certificate (or TLS set-up) was refused: trying again cannot help.
    permanent: bool,
}

/// Whether rustls refused the connection (an untrusted or mismatched certificate).
fn tls_refused(err: &reqwest::Error) -> bool {
    let mut source = err.source();
    while let Some(mut cause) = source {
        // An `io::Error` hides the error it wraps from `source()` (and may wrap another
        // `io::Error`): look inside.
        while let Some(inner) = cause
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
        {
            cause = inner;
        }
        if cause.is::<rustls::Error>() {
            return true;
        }
        source = cause.source();
    }
    false
}

/// Whether the connection was refused (nothing listens at that address).
fn connection_refused(err: &reqwest::Error) -> bool {
    let mut source = err.source();
    while let Some(cause) = source {
        if cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
        {
            return true;
        }
        source = cause.source();
    }
    false
}

/// An answer and how many attempts it took.
struct Exchange {
    answer: Answer,
    /// Set when the answer's status is one that was retried (so the retries ran out).
    gave_up: Option<Attempts>,
    made: u32,
}

/// The HTTP side of one invocation: the client, the settings, and the printable URL.
struct Caller<'a> {
    client: Client,
    settings: &'a Settings,
}

/// Whether an answer with `status` to `kind` is worth another attempt with the same
/// request: the gateway's dispatch or store failed (502, 503), or — for a command, the
/// only 409 there — the first request with this Idempotency-Key is still being dispatched.
fn retryable(status: StatusCode, kind: Kind) -> bool {
    matches!(
        status,
        StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE
    ) || (status == StatusCode::CONFLICT && matches!(kind, Kind::Command { .. }))
}

/// `Retry-After` in seconds (the only form the gateway sends), capped.
fn retry_after(value: Option<&HeaderValue>) -> Option<Duration> {
    let secs: u64 = value?.to_str().ok()?.trim().parse().ok()?;
    Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER))
}

impl Caller<'_> {
    /// A non-2xx `answer` as the error to print.
    fn refusal(&self, answer: &Answer, attempts: Option<Attempts>) -> ServerError {
        answer.refusal(attempts, self.settings.token.is_none())
    }

    /// One request; `timeout` bounds it (the settings' timeout, or less while waiting).
    async fn once(
        &self,
        method: &reqwest::Method,
        path: &str,
        request: Option<&ApiRequest>,
        timeout: Duration,
    ) -> Result<Answer, Unanswered> {
        match self
            .start(method, path, request, Some(timeout), "application/json")
            .await?
        {
            Started::Answer(answer) => Ok(answer),
            Started::Stream(_) => unreachable!("start answers whole unless asked for a stream"),
        }
    }

    /// One request. With `timeout` the whole answer is read (within it); without, a 2xx
    /// answer is handed back unread as a stream (the connection is bounded by the
    /// settings' timeout until the headers arrive), any other answer read whole.
    async fn start(
        &self,
        method: &reqwest::Method,
        path: &str,
        request: Option<&ApiRequest>,
        read_timeout: Option<Duration>,
        accept: &'static str,
    ) -> Result<Started, Unanswered> {
        let timeout = read_timeout.unwrap_or(self.settings.timeout);
        let url = self.settings.endpoint(path);
        let shown = match reqwest::Url::parse(&url) {
            Ok(u) => redacted(&u),
            Err(_) => url.clone(),
        };
        let mut builder = self
            .client
            .request(method.clone(), &url)
            .header(ACCEPT, HeaderValue::from_static(accept));
        if read_timeout.is_some() {
            builder = builder.timeout(timeout);
        }
        if let Some(token) = &self.settings.token {
            builder = builder.bearer_auth(token.expose());
        }
        if let Some(request) = request {
            if let Some(key) = &request.idempotency_key {
                builder = builder.header(IDEMPOTENCY_KEY, key.as_str());
            }
            if let Some(body) = &request.body {
                builder = builder
                    .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
                    .body(body.clone());
            }
        }
        let call_error = |e: reqwest::Error| {
            let permanent = tls_refused(&e);
            let why = if e.is_timeout() {
                format!(
                    "no complete answer within {} ms (CLOCKCTL_TIMEOUT_MS)",
                    timeout.as_millis()
                )
            } else if connection_refused(&e) {
                // The newcomer's first mistake: no server. Say what to do, not the layers.
                if is_local(&self.settings.base_url) {
                    "connection refused: is the server running? (`cargo run -- demo` starts \
                     one on localhost:8080; otherwise set CLOCK_SERVER_BASE_URL)"
                        .to_owned()
                } else {
                    "connection refused: is the server running there, and is \
                     CLOCK_SERVER_BASE_URL right?"
                        .to_owned()
                }
            } else {
                chain(&e.without_url())
            };
            Unanswered {
                message: format!("{method} {shown}: {why}"),
                permanent,
            }
        };
        let mut response = match read_timeout {
            Some(_) => builder.send().await.map_err(call_error)?,
            None => tokio::time::timeout(timeout, builder.send())
                .await
                .map_err(|_| Unanswered {
                    message: format!(
                        "{method} {shown}: no answer within {} ms (CLOCKCTL_TIMEOUT_MS)",
                        timeout.as_millis()
                    ),
                    permanent: false,
                })?
                .map_err(call_error)?,
        };
        let status = response.status();
        if read_timeout.is_none() && status.is_success() {
            return Ok(Started::Stream(response));
        }
        let headers = response.headers();
        let location = headers
            .get(reqwest::header::LOCATION)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        let retry_after = retry_after(headers.get(reqwest::header::RETRY_AFTER));
        let replayed = headers
            .get(IDEMPOTENT_REPLAYED)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"));
        // Read at most MAX_ANSWER_BYTES, whatever Content-Length says or the body brings.
        let too_big = || Unanswered {
            message: format!(
                "{method} {shown}: the answer is larger than {} KiB, more than any clock-server \
                 answer: is CLOCK_SERVER_BASE_URL the clock-server?",
                MAX_ANSWER_BYTES / 1024
            ),
            // The same server would send the same again.
            permanent: true,
        };
        if response
            .content_length()
            .is_some_and(|n| n > MAX_ANSWER_BYTES as u64)
        {
            return Err(too_big());
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(call_error)? {
            if bytes.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(too_big());
            }
            bytes.extend_from_slice(&chunk);
        }
        let text = String::from_utf8_lossy(&bytes).trim_end().to_owned();
        Ok(Started::Answer(Answer {
            status,
            location,
            retry_after,
            replayed,
            text,
        }))
    }

    /// `request`, tried again after a connection failure, a timeout, a 502, a 503 (or a
    /// 409 in progress) up to `request.retries` times, with back-off; the same
    /// Idempotency-Key every time, so the server delivers the command at most once.
    async fn exchange(&self, request: &ApiRequest) -> Result<Exchange, CliError> {
        let mut backoff = FIRST_BACKOFF;
        let mut made = 0;
        loop {
            made += 1;
            let result = self
                .once(
                    &request.method,
                    &request.path,
                    Some(request),
                    self.settings.timeout,
                )
                .await;
            let again = match &result {
                Err(e) => !e.permanent,
                Ok(answer) => retryable(answer.status, request.kind),
            };
            if !again || made > request.retries {
                // `ready` has no --retries: its one attempt is not worth a remark.
                let gave_up = (again && request.kind != Kind::Ready).then_some(Attempts {
                    made,
                    retries: request.retries,
                });
                return match result {
                    Ok(answer) => Ok(Exchange {
                        answer,
                        gave_up,
                        made,
                    }),
                    Err(e) => Err(CliError::Call(match gave_up {
                        Some(attempts) => format!("{}; {attempts}", e.message),
                        None => e.message,
                    })),
                };
            }
            let pause = result
                .ok()
                .and_then(|a| a.retry_after)
                .unwrap_or(backoff)
                .max(Duration::from_millis(1));
            tokio::time::sleep(pause).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// `--wait`: polls the status resource at `path` until the command is settled
    /// ([`Record::is_settled`]) or `wait` has passed since the 202. Transient failures (no answer, 502, 503) are polled
    /// through; any other non-200 ends the wait with its error.
    async fn follow(&self, path: &str, id: &str, wait: Duration) -> Result<Followed, CliError> {
        let deadline = Instant::now() + wait;
        let mut pause = FIRST_POLL;
        let mut last: Option<(Record, String)> = None;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(Followed::StillOpen(last));
            }
            let timeout = self.settings.timeout.min(left);
            match self.once(&reqwest::Method::GET, path, None, timeout).await {
                Ok(answer) if answer.status == StatusCode::OK => {
                    match Record::parse(&answer.text) {
                        Some(record) if record.is_settled() => {
                            return Ok(Followed::Final(record, answer.text));
                        }
                        Some(record) => last = Some((record, answer.text)),
                        None => {
                            return Err(CliError::Call(format!(
                                "GET {path}: the answer is not a command record: {}",
                                excerpt(&answer.text)
                            )));
                        }
                    }
                }
                Ok(answer) if answer.status == StatusCode::NOT_FOUND => {
                    return Err(CliError::NoCommand {
                        id: terminal::plain(id),
                        server: Box::new(self.refusal(&answer, None)),
                    });
                }
                Ok(answer) if !retryable(answer.status, Kind::Status) => {
                    return Err(CliError::Status(self.refusal(&answer, None)));
                }
                Err(e) if e.permanent => return Err(CliError::Call(e.message)),
                // Transient: poll again.
                Ok(_) | Err(_) => {}
            }
            let left = deadline.saturating_duration_since(Instant::now());
            tokio::time::sleep(pause.min(left)).await;
            pause = (pause * 2).min(MAX_POLL);
        }
    }
}

/// What [`Caller::start`] got: an answer read whole, or a 2xx stream to read on.
enum Started {
    Answer(Answer),
    Stream(reqwest::Response),
}

/// Opens the stream at `path` (`GET`, `Accept: text/event-stream`), retrying like every
/// other request (a connection failure, a timeout before the answer, a 502 or a 503, up
/// to `retries` times with back-off). A non-2xx answer is the error the other subcommands
/// print (`status=<code>` and the server's error).
pub async fn open_stream(
    settings: &Settings,
    path: &str,
    retries: u32,
) -> Result<reqwest::Response, CliError> {
    check_token_transport(settings)?;
    let caller = Caller {
        client: build_client(settings, false)?,
        settings,
    };
    let method = reqwest::Method::GET;
    let mut backoff = FIRST_BACKOFF;
    let mut made = 0;
    loop {
        made += 1;
        let result = caller
            .start(&method, path, None, None, "text/event-stream")
            .await;
        let again = match &result {
            Err(e) => !e.permanent,
            Ok(Started::Answer(answer)) => retryable(answer.status, Kind::Status),
            Ok(Started::Stream(_)) => false,
        };
        if !again || made > retries {
            let gave_up = again.then_some(Attempts { made, retries });
            return match result {
                Ok(Started::Stream(response)) => Ok(response),
                Ok(Started::Answer(answer)) => {
                    Err(CliError::Status(caller.refusal(&answer, gave_up)))
                }
                Err(e) => Err(CliError::Call(match gave_up {
                    Some(attempts) => format!("{}; {attempts}", e.message),
                    None => e.message,
                })),
            };
        }
        let pause = match &result {
            Ok(Started::Answer(a)) => a.retry_after,
            _ => None,
        }
        .unwrap_or(backoff)
        .max(Duration::from_millis(1));
        tokio::time::sleep(pause).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// How `--wait` ended.
enum Followed {
    /// The command is settled: the record and the server's JSON.
    Final(Record, String),
    /// The wait ended first; the last record seen, if any.
    StillOpen(Option<(Record, String)>),
}

/// `Idempotency-Key` (SPEC 7.6).
const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// Set on an answer the server replayed from its idempotency record.
const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";

/// Sends `request` (retrying as it says) and interprets the answer. `json` prints the body
/// instead of the line.
pub async fn send(
    settings: &Settings,
    request: &ApiRequest,
    json: bool,
) -> Result<Output, CliError> {
    check_token_transport(settings)?;
    let caller = Caller {
        client: build_client(settings, true)?,
        settings,
    };
    let Exchange {
        answer,
        gave_up,
        made,
    } = caller.exchange(request).await?;
    let status = answer.status;
    let id = || terminal::plain(request.command_id.as_deref().unwrap_or_default());

    match request.kind {
        Kind::Command { success_line } if status.is_success() => {
            let mut notes = Vec::new();
            if answer.replayed {
                notes.push(
                    "the server already had this Idempotency-Key's command and answered from its \
                     record (Idempotent-Replayed): nothing was sent again"
                        .to_owned(),
                );
            }
            let dispatched = Output {
                stdout: if json {
                    terminal::json(&answer.text)
                } else {
                    success_line.to_owned()
                },
                notes,
                success: true,
            };
            match request.wait {
                None => Ok(dispatched),
                Some(wait) => wait_for(&caller, &answer, dispatched, wait, json).await,
            }
        }
        Kind::Ready if status.is_success() || status == StatusCode::SERVICE_UNAVAILABLE => {
            let ready = status.is_success();
            let fallback = if ready { "ready" } else { "not_ready" };
            let state = answer
                .body()
                .and_then(|b| b.status)
                .unwrap_or_else(|| fallback.to_owned());
            Ok(Output {
                stdout: if json {
                    terminal::json(&answer.text)
                } else {
                    terminal::plain(&state)
                },
                notes: (!ready)
                    .then(|| format!("server is not ready (status={})", status.as_u16()))
                    .into_iter()
                    .collect(),
                success: ready,
            })
        }
        Kind::Status | Kind::Cancel if status == StatusCode::OK => {
            let record = Record::parse(&answer.text).ok_or_else(|| {
                CliError::Call(format!(
                    "{} {}: the answer is not a command record: {}",
                    request.method,
                    request.path,
                    excerpt(&answer.text)
                ))
            })?;
            let stdout = if json {
                terminal::json(&answer.text)
            } else if request.kind == Kind::Status {
                record.readable(request.command_id.as_deref().unwrap_or_default())
            } else {
                format!("cancelled {}", id())
            };
            Ok(Output {
                stdout,
                notes: Vec::new(),
                success: true,
            })
        }
        Kind::Devices if status == StatusCode::OK => {
            let list = DeviceList::parse(&answer.text).ok_or_else(|| {
                CliError::Call(format!(
                    "GET /devices: the answer is not a device list: {}",
                    excerpt(&answer.text)
                ))
            })?;
            Ok(Output {
                stdout: if json {
                    terminal::json(&answer.text)
                } else {
                    list.lines()
                },
                notes: Vec::new(),
                success: true,
            })
        }
        Kind::Device if status == StatusCode::OK => {
            let device = Device::parse(&answer.text).ok_or_else(|| {
                CliError::Call(format!(
                    "GET {}: the answer is not a device: {}",
                    request.path,
                    excerpt(&answer.text)
                ))
            })?;
            Ok(Output {
                stdout: if json {
                    terminal::json(&answer.text)
                } else {
                    device.readable()
                },
                notes: Vec::new(),
                success: true,
            })
        }
        Kind::Device if status == StatusCode::NOT_FOUND => Err(CliError::NoDevice {
            id: id(),
            server: Box::new(caller.refusal(&answer, gave_up)),
        }),
        Kind::Schedule(op) if status.is_success() => {
            let mut notes = Vec::new();
            if answer.replayed {
                notes.push(
                    "the server already had this Idempotency-Key's schedule and answered from \
                     its record (Idempotent-Replayed): nothing was added again"
                        .to_owned(),
                );
            }
            let stdout = match (op, request.command_id.as_deref()) {
                // The occurrences are instants; their wall time needs the schedule's zone.
                (Op::Next, Some(id)) if !json => {
                    let schedule = schedule_of(&caller, id, request.retries).await?;
                    super::schedule::occurrences(&answer.text, &schedule)?
                }
                _ => super::schedule::output(op, &answer.text, json)?,
            };
            Ok(Output {
                stdout,
                notes,
                success: true,
            })
        }
        Kind::Status | Kind::Cancel if status == StatusCode::NOT_FOUND => {
            Err(CliError::NoCommand {
                id: id(),
                server: Box::new(caller.refusal(&answer, gave_up)),
            })
        }
        Kind::Cancel if status == StatusCode::CONFLICT => {
            let state = answer.body().and_then(|b| b.status).unwrap_or_default();
            // An earlier attempt cancelled it and its answer was lost: that is success.
            if made > 1 && state == "cancelled" {
                return Ok(Output {
                    stdout: format!("cancelled {}", id()),
                    notes: Vec::new(),
                    success: true,
                });
            }
            Err(CliError::NotCancellable {
                id: id(),
                status: terminal::plain(if state.is_empty() { "unknown" } else { &state }),
                server: Box::new(caller.refusal(&answer, gave_up)),
            })
        }
        _ => Err(CliError::Status(caller.refusal(&answer, gave_up))),
    }
}

/// `--wait` after a 2xx: follow the command named by the 202 to its end.
/// `GET /schedules/{id}` (retried as the request it serves): the schedule's JSON, or the
/// refusal as the other subcommands print it.
async fn schedule_of(caller: &Caller<'_>, id: &str, retries: u32) -> Result<String, CliError> {
    let request = ApiRequest {
        method: reqwest::Method::GET,
        path: format!("/schedules/{id}"),
        body: None,
        kind: Kind::Schedule(Op::Show),
        idempotency_key: None,
        retries,
        wait: None,
        command_id: Some(id.to_owned()),
    };
    let Exchange {
        answer, gave_up, ..
    } = caller.exchange(&request).await?;
    if answer.status.is_success() {
        Ok(answer.text)
    } else {
        Err(CliError::Status(caller.refusal(&answer, gave_up)))
    }
}

async fn wait_for(
    caller: &Caller<'_>,
    answer: &Answer,
    mut out: Output,
    wait: Duration,
    json: bool,
) -> Result<Output, CliError> {
    let accepted: Accepted = serde_json::from_str(&answer.text).unwrap_or_default();
    let (Some(id), Some(first_status)) = (accepted.command_id, accepted.status) else {
        out.success = false;
        out.notes.push(
            "--wait cannot follow this command: the server's 202 answer has no commandId and \
             status, so it does not track commands (it runs with STATE_STORE=none); set \
             STATE_STORE on the server (memory is the default) or drop --wait"
                .to_owned(),
        );
        return Ok(out);
    };
    // The Location the server gave, when it is the status resource; it is a path on the
    // same server, so it is appended to the base URL like every other path.
    let path = answer
        .location
        .as_deref()
        .filter(|l| {
            l.strip_prefix("/commands/")
                .is_some_and(|rest| !rest.is_empty() && !rest.contains(['/', '?', '#']))
        })
        .map_or_else(|| status_path(&id), str::to_owned);
    let shown_id = terminal::plain(&id);
    match caller.follow(&path, &id, wait).await? {
        Followed::Final(record, text) => {
            out.success = record.is_success();
            out.stdout = if json {
                terminal::json(&text)
            } else {
                format!("{}\ncommand {shown_id} {}", out.stdout, record.outcome())
            };
        }
        Followed::StillOpen(last) => {
            let status = last
                .as_ref()
                .map_or_else(|| first_status.clone(), |(r, _)| r.status.clone());
            out.success = false;
            let waited = humantime::format_duration(wait);
            out.stdout = match (&last, json) {
                (Some((_, text)), true) => terminal::json(text),
                (None, true) => out.stdout,
                (_, false) => format!(
                    "{}\ncommand {shown_id} still {} after {waited}",
                    out.stdout,
                    terminal::plain(&status)
                ),
            };
            out.notes.push(format!(
                "stopped waiting after {waited} (--wait): follow it with `clockctl status \
                 {shown_id}`, or wait longer, e.g. --wait=2m"
            ));
        }
    }
    Ok(out)
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

#[cfg(test)]
mod tests {
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
