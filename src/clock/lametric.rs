//! The virtual LaMetric TIME (SPEC 8.3) of `clockctl watch --profile lametric --listen
//! <addr>` and of the demo's `lametric-1`: the clock's local API over plain HTTP, as
//! `lametric/Documentation` describes it (`reference-docs/device-notifications.rst`,
//! `device-display.rst`, `device-state.rst`, `device-authorization.rst`), and one line on
//! stdout for what the clock would show.
//!
//! - Every request needs HTTP Basic authentication, user `dev`, password the API key
//!   (compared in constant time); otherwise `401 {"errors":[{"message":"Authorization is
//!   required"}]}`, as the clock answers, and a `unauthorized` line (never the key tried).
//! - `POST /api/v2/device/notifications`: a notification object (`model.frames` not empty;
//!   `priority`, `icon_type`, `cycles` and `model.sound` as documented) answers
//!   `{"success":{"id":"<n>"}}`, ids counting from 1; the notification stays until
//!   dismissed (`cycles: 0`) and `DELETE /api/v2/device/notifications/<id>` dismisses it
//!   (`{"success":true}`; an id not on the clock is a 404).
//! - `PUT /api/v2/device/display`: `brightness` 0–100 and/or `brightness_mode`
//!   `auto`/`manual`; answers `{"success":{"data":…,"path":"/api/v2/device/display"}}`.
//! - `GET /api/v2/device`: the device state (`id`, `name`, `serial_number`, `os_version`,
//!   `mode`, `model`, `audio`, `display`), what presence polls; not printed (it comes
//!   every `PRESENCE_POLL_SECS`).
//! - A body that is not what the clock takes is `400` with `{"errors":[{"message":…}]}`
//!   naming the field; a body over 64 KiB is `413`; another path `404`.
//!
//! A plain HTTP server of a few lines on hyper, as `tests/lametric.rs`'s stand-in: the
//! server's own (`http::server`) is a layer above the clients, and this clock needs no
//! timeouts but a bound on its connections.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::future::Future;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc};

use super::watch::View;
use crate::domain::lametric::{BASIC_USER, DEVICE_PATH, DISPLAY_PATH, NOTIFICATIONS_PATH};
use crate::shared::Secret;

/// The most of a request body read (the server's notification is far smaller).
const MAX_BODY: usize = 64 * 1024;
/// Connections served at once; more wait for one to close.
const MAX_CONNECTIONS: usize = 64;
/// Lines waiting to be printed; past that a line is dropped (and that reported once).
const MAX_PENDING_LINES: usize = 1024;
/// Notifications kept on the clock; past that the oldest goes (the real queue is bounded
/// by its memory).
const MAX_NOTIFICATIONS: usize = 256;
/// What the clock answers a request without the right key.
const UNAUTHORIZED: &str = "Authorization is required";

/// How to run the virtual LaMetric.
#[derive(Debug, Clone)]
pub struct LametricOptions {
    /// Where it listens (plain HTTP).
    pub listen: SocketAddr,
    /// The name it shows and answers in `GET /api/v2/device`.
    pub name: String,
    /// The API key every request must carry (HTTP Basic, user `dev`).
    pub api_key: Secret,
}

/// A bound virtual LaMetric, ready to serve.
pub struct VirtualLametric {
    listener: TcpListener,
    addr: SocketAddr,
    clock: Arc<Clock>,
    lines: mpsc::Receiver<Seen>,
}

/// The clock's state, shared by the requests.
struct Clock {
    name: String,
    api_key: Secret,
    next_id: AtomicU64,
    /// The ids of the notifications on the clock, not yet dismissed.
    notifications: Mutex<BTreeSet<u64>>,
    display: Mutex<(u8, &'static str)>,
    lines: mpsc::Sender<Seen>,
    dropped: AtomicBool,
}

/// One request as the clock took it, for the line printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    method: String,
    path: String,
    status: u16,
    /// The request body as sent (the JSON view prints it).
    body: String,
    what: What,
}

/// What a request did on the clock.
#[derive(Debug, Clone, PartialEq, Eq)]
enum What {
    Notification {
        id: u64,
        priority: String,
        icon_type: String,
        texts: Vec<String>,
        cycles: u64,
        sound: Option<String>,
    },
    Dismiss {
        id: u64,
    },
    Display {
        brightness: Option<u8>,
        mode: Option<&'static str>,
    },
    Rejected {
        error: String,
    },
    Unauthorized,
}

impl Seen {
    /// The stable, greppable line for scripts, e.g. `lametric-1 notification id=1
    /// priority=info icon_type=none text="Tea" cycles=0`. Text is quoted and escaped.
    pub fn plain_line(&self, name: &str) -> String {
        let mut line = format!("{name} ");
        // Writing to a String cannot fail.
        let _ = match &self.what {
            What::Notification {
                id,
                priority,
                icon_type,
                texts,
                cycles,
                sound,
            } => {
                let kind = if priority == "critical" {
                    "alarm"
                } else {
                    "notification"
                };
                let _ = write!(
                    line,
                    "{kind} id={id} priority={priority:?} icon_type={icon_type:?}"
                );
                for text in texts {
                    let _ = write!(line, " text={text:?}");
                }
                let _ = write!(line, " cycles={cycles}");
                match sound {
                    Some(sound) => write!(line, " sound={sound}"),
                    None => Ok(()),
                }
            }
            What::Dismiss { id } => write!(line, "dismiss id={id}"),
            What::Display { brightness, mode } => {
                line.push_str("display");
                if let Some(b) = brightness {
                    let _ = write!(line, " brightness={b}");
                }
                match mode {
                    Some(m) => write!(line, " brightness_mode={m}"),
                    None => Ok(()),
                }
            }
            What::Rejected { error } => write!(
                line,
                "rejected {} {:?} status={} error={error:?}",
                self.method, self.path, self.status
            ),
            What::Unauthorized => write!(
                line,
                "unauthorized {} {:?} status={} (no or another API key)",
                self.method, self.path, self.status
            ),
        };
        line
    }

    /// `{"method","path","status","body"}`: the request as received (its body as JSON
    /// when it is JSON, else as a string) and the clock's status.
    pub fn json_line(&self) -> String {
        let body = serde_json::from_str::<Value>(&self.body)
            .unwrap_or_else(|_| Value::String(self.body.clone()));
        let body = if self.what == What::Unauthorized {
            Value::Null
        } else {
            body
        };
        crate::terminal::json_value(&json!({
            "method": self.method,
            "path": self.path,
            "status": self.status,
            "body": body,
        }))
    }
}

impl VirtualLametric {
    /// Binds `options.listen`; nothing is served until [`VirtualLametric::run`].
    pub async fn bind(options: &LametricOptions) -> io::Result<Self> {
        let listener = TcpListener::bind(options.listen).await?;
        let addr = listener.local_addr()?;
        let (tx, rx) = mpsc::channel(MAX_PENDING_LINES);
        Ok(Self {
            listener,
            addr,
            clock: Arc::new(Clock {
                name: options.name.clone(),
                api_key: options.api_key.clone(),
                next_id: AtomicU64::new(1),
                notifications: Mutex::new(BTreeSet::new()),
                display: Mutex::new((100, "auto")),
                lines: tx,
                dropped: AtomicBool::new(false),
            }),
            lines: rx,
        })
    }

    /// The address bound (port 0 becomes a real one).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `virtual LaMetric TIME lametric-1 on http://127.0.0.1:8080 (user dev)`: the first
    /// line of the plain output, printed once listening so that scripts can wait for it.
    pub fn description(&self) -> String {
        format!(
            "virtual LaMetric TIME {} on http://{} (HTTP Basic user {BASIC_USER})",
            self.clock.name, self.addr
        )
    }

    /// Serves the clock's API and prints one line per request on `out` (plain lines, or
    /// JSON lines with [`View::Json`]; the live view prints plain lines too) until
    /// `shutdown` resolves or the reader of a pipe goes away.
    pub async fn run(
        mut self,
        view: View,
        out: &mut (dyn Write + Send),
        shutdown: impl Future<Output = ()>,
    ) -> io::Result<()> {
        let router = router(self.clock.clone());
        let listener = self.listener;
        let server = tokio::spawn(accept(listener, router));
        tokio::pin!(shutdown);
        let name = self.clock.name.clone();
        let result = loop {
            let seen = tokio::select! {
                () = &mut shutdown => break Ok(()),
                seen = self.lines.recv() => match seen {
                    Some(seen) => seen,
                    None => break Ok(()),
                },
            };
            let line = match view {
                View::Json => seen.json_line(),
                View::Plain | View::Live => seen.plain_line(&name),
            };
            if let Err(e) = writeln!(out, "{line}").and_then(|()| out.flush()) {
                break Err(e);
            }
        };
        server.abort();
        match result {
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
            other => other,
        }
    }
}

/// Accepts connections, at most [`MAX_CONNECTIONS`] at once, each served on its own task.
async fn accept(listener: TcpListener, router: Router) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let router = router.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let service = hyper::service::service_fn(move |req: hyper::Request<_>| {
                tower::ServiceExt::oneshot(router.clone(), req.map(axum::body::Body::new))
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}

fn router(clock: Arc<Clock>) -> Router {
    let notification = format!("{NOTIFICATIONS_PATH}/{{id}}");
    Router::new()
        .route(NOTIFICATIONS_PATH, post(notify))
        .route(&notification, delete(dismiss))
        .route(DISPLAY_PATH, put(display))
        .route(DEVICE_PATH, get(device))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn_with_state(
            clock.clone(),
            authenticate,
        ))
        .with_state(clock)
}

/// The clock's answer: JSON, with the content type it gives.
fn answer(status: StatusCode, body: &Value) -> Response {
    let mut response = (status, body.to_string()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json;charset=UTF8"),
    );
    response
}

fn error(status: StatusCode, message: &str) -> Response {
    answer(status, &json!({"errors": [{"message": message}]}))
}

impl Clock {
    /// Queues `what` for printing (dropped, reported once, when the printer is behind).
    fn show(&self, method: &Method, uri: &Uri, status: StatusCode, body: &[u8], what: What) {
        let seen = Seen {
            method: method.to_string(),
            path: uri.path().to_owned(),
            status: status.as_u16(),
            body: String::from_utf8_lossy(body).into_owned(),
            what,
        };
        if self.lines.try_send(seen).is_err() && !self.dropped.swap(true, Ordering::Relaxed) {
            eprintln!(
                "the virtual LaMetric is printing slower than requests come; some are not shown"
            );
        }
    }

    /// Whether `headers` carry `dev:<api key>` (the key compared in constant time).
    fn admits(&self, headers: &HeaderMap) -> bool {
        use base64::Engine;
        use subtle::ConstantTimeEq;
        let Some(encoded) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Basic "))
        else {
            return false;
        };
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
            return false;
        };
        let Some(key) = decoded
            .strip_prefix(BASIC_USER.as_bytes())
            .and_then(|rest| rest.strip_prefix(b":"))
        else {
            return false;
        };
        bool::from(key.ct_eq(self.api_key.expose().as_bytes()))
    }
}

async fn authenticate(
    State(clock): State<Arc<Clock>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if clock.admits(request.headers()) {
        return next.run(request).await;
    }
    let status = StatusCode::UNAUTHORIZED;
    clock.show(
        request.method(),
        request.uri(),
        status,
        b"",
        What::Unauthorized,
    );
    let mut response = error(status, UNAUTHORIZED);
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"LaMetric\""),
    );
    response
}

/// A 400 with the clock's error shape, printed as rejected.
fn reject(clock: &Clock, method: &Method, uri: &Uri, body: &[u8], why: String) -> Response {
    let status = StatusCode::BAD_REQUEST;
    clock.show(
        method,
        uri,
        status,
        body,
        What::Rejected { error: why.clone() },
    );
    error(status, &why)
}

async fn notify(
    State(clock): State<Arc<Clock>>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Response {
    let read = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(object)) => read_notification(&object),
        Ok(_) => Err("the body is not a JSON object".to_owned()),
        Err(e) => Err(format!("the body is not JSON: {e}")),
    };
    let (priority, icon_type, texts, cycles, sound) = match read {
        Ok(fields) => fields,
        Err(why) => return reject(&clock, &method, &uri, &body, why),
    };
    let id = clock.next_id.fetch_add(1, Ordering::Relaxed);
    {
        let mut on = clock
            .notifications
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if on.len() >= MAX_NOTIFICATIONS {
            on.pop_first();
        }
        on.insert(id);
    }
    let status = StatusCode::OK;
    clock.show(
        &method,
        &uri,
        status,
        &body,
        What::Notification {
            id,
            priority,
            icon_type,
            texts,
            cycles,
            sound,
        },
    );
    answer(status, &json!({"success": {"id": id.to_string()}}))
}

/// The fields of a notification object that this clock shows, or why the clock would not
/// take it.
type NotificationFields = (String, String, Vec<String>, u64, Option<String>);

fn read_notification(object: &Map<String, Value>) -> Result<NotificationFields, String> {
    let one_of = |key: &str, allowed: &[&str], default: &str| -> Result<String, String> {
        match object.get(key) {
            None => Ok(default.to_owned()),
            Some(Value::String(s)) if allowed.contains(&s.as_str()) => Ok(s.clone()),
            Some(other) => Err(format!(
                "{key} must be one of {}, not {other}",
                allowed.join(", ")
            )),
        }
    };
    let priority = one_of("priority", &["info", "warning", "critical"], "info")?;
    let icon_type = one_of("icon_type", &["none", "info", "alert"], "none")?;
    let model = object
        .get("model")
        .and_then(Value::as_object)
        .ok_or("model is required and must be an object")?;
    let frames = model
        .get("frames")
        .and_then(Value::as_array)
        .filter(|f| !f.is_empty())
        .ok_or("model.frames is required and must be a non-empty array")?;
    let mut texts = Vec::new();
    for (n, frame) in frames.iter().enumerate() {
        let frame = frame
            .as_object()
            .ok_or_else(|| format!("model.frames[{n}] must be an object"))?;
        match frame.get("text") {
            None => {}
            Some(Value::String(text)) => texts.push(text.clone()),
            Some(_) => return Err(format!("model.frames[{n}].text must be a string")),
        }
    }
    let cycles = match model.get("cycles") {
        None => 1,
        Some(v) => v
            .as_u64()
            .ok_or("model.cycles must be a whole number of 0 or more")?,
    };
    let sound = match model.get("sound") {
        None => None,
        Some(Value::Object(sound)) => {
            let category = sound
                .get("category")
                .and_then(Value::as_str)
                .filter(|c| matches!(*c, "alarms" | "notifications"))
                .ok_or("model.sound.category must be alarms or notifications")?;
            let id = sound
                .get("id")
                .and_then(Value::as_str)
                .filter(|id| !id.is_empty())
                .ok_or("model.sound.id must be a sound id, e.g. alarm1")?;
            let repeat = match sound.get("repeat") {
                None => 1,
                Some(v) => v
                    .as_u64()
                    .ok_or("model.sound.repeat must be a whole number of 0 or more")?,
            };
            let times = if repeat == 0 {
                "until dismissed".to_owned()
            } else {
                format!("{repeat}x")
            };
            Some(format!("{:?}", format!("{category}/{id} {times}")))
        }
        Some(_) => return Err("model.sound must be an object".to_owned()),
    };
    Ok((priority, icon_type, texts, cycles, sound))
}

async fn dismiss(
    State(clock): State<Arc<Clock>>,
    method: Method,
    uri: Uri,
    Path(id): Path<String>,
) -> Response {
    let found = id.parse::<u64>().ok().filter(|n| {
        clock
            .notifications
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(n)
    });
    let Some(id) = found else {
        let status = StatusCode::NOT_FOUND;
        let why = format!("Notification {id:?} is not on the clock");
        clock.show(
            &method,
            &uri,
            status,
            b"",
            What::Rejected { error: why.clone() },
        );
        return error(status, &why);
    };
    let status = StatusCode::OK;
    clock.show(&method, &uri, status, b"", What::Dismiss { id });
    answer(status, &json!({"success": true}))
}

async fn display(
    State(clock): State<Arc<Clock>>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Response {
    let object = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(object)) => object,
        Ok(_) => {
            return reject(
                &clock,
                &method,
                &uri,
                &body,
                "the body is not a JSON object".into(),
            );
        }
        Err(e) => {
            return reject(
                &clock,
                &method,
                &uri,
                &body,
                format!("the body is not JSON: {e}"),
            );
        }
    };
    let brightness = match object.get("brightness") {
        None => None,
        Some(v) => match v
            .as_u64()
            .and_then(|b| u8::try_from(b).ok())
            .filter(|b| *b <= 100)
        {
            Some(b) => Some(b),
            None => {
                let why = format!("brightness must be a whole number from 0 to 100, not {v}");
                return reject(&clock, &method, &uri, &body, why);
            }
        },
    };
    let mode = match object.get("brightness_mode") {
        None => None,
        Some(Value::String(m)) if m == "auto" => Some("auto"),
        Some(Value::String(m)) if m == "manual" => Some("manual"),
        Some(v) => {
            let why = format!("brightness_mode must be auto or manual, not {v}");
            return reject(&clock, &method, &uri, &body, why);
        }
    };
    if brightness.is_none() && mode.is_none() {
        let why = "nothing to change: give brightness (0-100) or brightness_mode".to_owned();
        return reject(&clock, &method, &uri, &body, why);
    }
    let data = {
        let mut state = clock.display.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(b) = brightness {
            state.0 = b;
        }
        if let Some(m) = mode {
            state.1 = m;
        }
        let mut data = Map::new();
        if let Some(b) = brightness {
            data.insert("brightness".into(), b.into());
        }
        if let Some(m) = mode {
            data.insert("brightness_mode".into(), m.into());
        }
        data
    };
    let status = StatusCode::OK;
    clock.show(
        &method,
        &uri,
        status,
        &body,
        What::Display { brightness, mode },
    );
    answer(
        status,
        &json!({"success": {"data": data, "path": DISPLAY_PATH}}),
    )
}

/// `reference-docs/device-state.rst`, for a virtual clock: a TIME's model number and width.
async fn device(State(clock): State<Arc<Clock>>) -> Response {
    let (brightness, mode) = *clock.display.lock().unwrap_or_else(PoisonError::into_inner);
    answer(
        StatusCode::OK,
        &json!({
            "id": "1",
            "name": clock.name,
            "serial_number": "VIRTUAL00000000000001",
            "os_version": "2.3.9",
            "mode": "manual",
            "model": "LM 37X8",
            "audio": {"volume": 50},
            "display": {
                "brightness": brightness,
                "brightness_mode": mode,
                "width": 37,
                "height": 8,
                "type": "mixed"
            }
        }),
    )
}

async fn not_found(State(clock): State<Arc<Clock>>, method: Method, uri: Uri) -> Response {
    let status = StatusCode::NOT_FOUND;
    clock.show(
        &method,
        &uri,
        status,
        b"",
        What::Rejected {
            error: "Not found".to_owned(),
        },
    );
    error(status, "Not found")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn read(body: Value) -> Result<NotificationFields, String> {
        read_notification(body.as_object().unwrap())
    }

    #[test]
    fn the_servers_notifications_are_read_as_sent_and_bad_ones_name_the_field() {
        let (p, i, t, c, s) = read(json!({"priority":"critical","icon_type":"alert",
            "model":{"cycles":0,"frames":[{"text":"Up"}],
            "sound":{"category":"alarms","id":"alarm3","repeat":0}}}))
        .unwrap();
        assert_eq!(
            (p.as_str(), i.as_str(), t, c),
            ("critical", "alert", vec!["Up".to_owned()], 0)
        );
        assert_eq!(s.as_deref(), Some(r#""alarms/alarm3 until dismissed""#));
        for (bad, says) in [
            (json!({"model":{"frames":[]}}), "model.frames"),
            (json!({"model":{"frames":[{"text":1}]}}), "frames[0].text"),
            (
                json!({"priority":"loud","model":{"frames":[{}]}}),
                "priority",
            ),
            (json!({"frames":[{"text":"x"}]}), "model is required"),
            (json!({"model":{"frames":[{}],"cycles":-1}}), "model.cycles"),
            (
                json!({"model":{"frames":[{}],"sound":{"category":"x","id":"a"}}}),
                "model.sound.category",
            ),
        ] {
            let err = read(bad.clone()).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn a_line_shows_what_the_clock_shows_and_escapes_text() {
        let seen = Seen {
            method: "POST".into(),
            path: NOTIFICATIONS_PATH.into(),
            status: 200,
            body: "{}".into(),
            what: What::Notification {
                id: 3,
                priority: "info".into(),
                icon_type: "none".into(),
                texts: vec!["Tea\n\u{1b}[2J".into()],
                cycles: 0,
                sound: None,
            },
        };
        assert_eq!(
            seen.plain_line("desk"),
            r#"desk notification id=3 priority="info" icon_type="none" text="Tea\n\u{1b}[2J" cycles=0"#
        );
        assert_eq!(
            seen.json_line(),
            r#"{"body":{},"method":"POST","path":"/api/v2/device/notifications","status":200}"#
        );
    }

    #[test]
    fn only_dev_with_the_key_is_admitted() {
        use base64::Engine;
        let (tx, _rx) = mpsc::channel(1);
        let clock = Clock {
            name: "desk".into(),
            api_key: Secret::new("k3y"),
            next_id: AtomicU64::new(1),
            notifications: Mutex::default(),
            display: Mutex::new((100, "auto")),
            lines: tx,
            dropped: AtomicBool::new(false),
        };
        let with = |credentials: &str| {
            let mut headers = HeaderMap::new();
            let value = format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(credentials)
            );
            headers.insert(header::AUTHORIZATION, value.parse().unwrap());
            clock.admits(&headers)
        };
        assert!(with("dev:k3y"));
        for bad in ["dev:k3", "dev:k3yy", "root:k3y", "dev", ""] {
            assert!(!with(bad), "{bad}");
        }
        assert!(!clock.admits(&HeaderMap::new()));
    }
}
