//! End-to-end tests of the `clockctl` binary against real HTTP(S) servers on 127.0.0.1.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::ServerConfig;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::sync::oneshot;

const TOKEN: &str = "s3cr3t-t0ken-value";
const ACCEPTED: &str =
    r#"{"result":"scheduled","commandId":"0190c2a4-7c1e-7b2a-9f00-000000000001"}"#;

// ---------------------------------------------------------------------------------------
// A recording HTTP(S) server.

/// One request as the server saw it.
#[derive(Debug, Clone)]
struct Recorded {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Recorded {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap()
    }
}

/// What the server answers to a request.
#[derive(Debug, Clone)]
struct Reply {
    status: u16,
    body: String,
    headers: Vec<(String, String)>,
    /// Close the connection without answering (a connection failure for the client).
    hang_up: bool,
}

impl Reply {
    fn new(status: u16, body: &str) -> Self {
        Self {
            status,
            body: body.to_owned(),
            headers: Vec::new(),
            hang_up: false,
        }
    }

    fn hang_up() -> Self {
        Self {
            hang_up: true,
            ..Self::new(500, "")
        }
    }

    fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }
}

/// Decides the answer from every request so far (the current one last).
type Script = Arc<dyn Fn(&[Recorded]) -> Reply + Send + Sync>;

/// A server on 127.0.0.1, port 0, in its own thread and runtime; stops when dropped.
struct TestServer {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<Recorded>>>,
    _stop: oneshot::Sender<()>,
}

impl TestServer {
    /// Answers every request with `reply`.
    fn start(reply: Reply) -> Self {
        Self::scripted(move |_| reply.clone())
    }

    /// Answers each request as `script` says.
    fn scripted(script: impl Fn(&[Recorded]) -> Reply + Send + Sync + 'static) -> Self {
        Self::start_inner(Arc::new(script), None)
    }

    /// Answers the n-th request with `replies[n]`, and every later one with the last.
    fn sequence(replies: Vec<Reply>) -> Self {
        Self::scripted(move |seen| replies[(seen.len() - 1).min(replies.len() - 1)].clone())
    }

    fn start_tls(reply: Reply, tls: Arc<ServerConfig>) -> Self {
        Self::start_inner(
            Arc::new(move |_: &[Recorded]| reply.clone()),
            Some(tokio_rustls::TlsAcceptor::from(tls)),
        )
    }

    fn start_inner(script: Script, tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (stop, mut stopped) = oneshot::channel::<()>();
        let recorded = Arc::clone(&requests);
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                loop {
                    tokio::select! {
                        _ = &mut stopped => break,
                        accepted = listener.accept() => {
                            let Ok((stream, _)) = accepted else { continue };
                            let script = Arc::clone(&script);
                            let recorded = Arc::clone(&recorded);
                            let tls = tls.clone();
                            tokio::spawn(async move {
                                match tls {
                                    None => serve(TokioIo::new(stream), script, recorded).await,
                                    Some(acceptor) => {
                                        if let Ok(s) = acceptor.accept(stream).await {
                                            serve(TokioIo::new(s), script, recorded).await;
                                        }
                                    }
                                }
                            });
                        }
                    }
                }
            });
        });
        Self {
            addr,
            requests,
            _stop: stop,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    fn only_request(&self) -> Recorded {
        let all = self.requests();
        assert_eq!(all.len(), 1, "expected exactly one request, got {all:#?}");
        all.into_iter().next().unwrap()
    }
}

async fn serve<IO>(io: IO, script: Script, recorded: Arc<Mutex<Vec<Recorded>>>)
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = service_fn(move |req: Request<Incoming>| {
        let script = Arc::clone(&script);
        let recorded = Arc::clone(&recorded);
        async move {
            let method = req.method().to_string();
            let path = req.uri().path().to_owned();
            let headers = req
                .headers()
                .iter()
                .map(|(n, v)| {
                    (
                        n.as_str().to_owned(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect();
            let body = req.into_body().collect().await.unwrap().to_bytes();
            let reply = {
                let mut seen = recorded.lock().unwrap();
                seen.push(Recorded {
                    method,
                    path,
                    headers,
                    body: String::from_utf8_lossy(&body).into_owned(),
                });
                script(&seen)
            };
            if reply.hang_up {
                // hyper closes the connection without an answer.
                return Err("hang up");
            }
            let mut response = Response::builder()
                .status(reply.status)
                .header("content-type", "application/json");
            for (name, value) in &reply.headers {
                response = response.header(name, value);
            }
            Ok(response.body(Full::new(Bytes::from(reply.body))).unwrap())
        }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(io, service)
        .await;
}

/// A CA written to a PEM file (for `SSL_CERT_FILE`) and a server config whose certificate
/// it signed, for `127.0.0.1` and `localhost`.
struct Pki {
    _dir: tempfile::TempDir,
    ca_file: PathBuf,
    server: Arc<ServerConfig>,
}

fn pki() -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "clockctl test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);

    let leaf_key = KeyPair::generate().unwrap();
    let leaf_params =
        CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
    let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca_cert.pem()).unwrap();

    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let server =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![leaf.der().clone()], key)
            .unwrap();
    Pki {
        _dir: dir,
        ca_file,
        server: Arc::new(server),
    }
}

// ---------------------------------------------------------------------------------------
// Running the binary.

/// The outcome of one `clockctl` run.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `clockctl` with exactly `env` as its environment, so the developer's cannot leak in.
fn clockctl(args: &[&str], env: &[(&str, &str)]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_clockctl"))
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .unwrap();
    Run {
        code: out.status.code().unwrap(),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

/// `clockctl` pointed at `server` with the test token.
fn against(server: &TestServer, args: &[&str]) -> Run {
    clockctl(
        args,
        &[
            ("CLOCK_SERVER_BASE_URL", &server.url()),
            ("CLOCK_SERVER_TOKEN", TOKEN),
        ],
    )
}

fn assert_code(run: &Run, code: i32) {
    assert_eq!(run.code, code, "unexpected exit code: {run:#?}");
}

fn assert_no_token(run: &Run) {
    assert!(
        !run.stdout.contains(TOKEN) && !run.stderr.contains(TOKEN),
        "the token leaked: {run:#?}"
    );
}

/// A 127.0.0.1 port with nothing listening on it.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

const ALARM: &[&str] = &[
    "alarm",
    "--device",
    "clock-1",
    "--time",
    "2030-01-02T07:30:00+01:00",
    "--label",
    "wake up",
];

// ---------------------------------------------------------------------------------------
// Request shapes and success output.

#[test]
fn alarm_posts_the_server_json_shape_with_the_bearer_token_and_prints_the_success_line() {
    let server = TestServer::start(Reply::new(202, ACCEPTED));
    let run = against(&server, ALARM);
    assert_code(&run, 0);
    assert_eq!(run.stdout, "alarm command dispatched\n");
    assert_eq!(run.stderr, "");
    let req = server.only_request();
    assert_eq!(
        (req.method.as_str(), req.path.as_str()),
        ("POST", "/commands/alarms")
    );
    assert_eq!(
        req.body,
        r#"{"deviceId":"clock-1","alarmTime":"2030-01-02T07:30:00+01:00","label":"wake up"}"#
    );
    assert_eq!(
        req.header("authorization"),
        Some(&*format!("Bearer {TOKEN}"))
    );
    assert_eq!(req.header("content-type"), Some("application/json"));
}

#[test]
fn an_alarm_without_a_label_sends_an_empty_label() {
    let server = TestServer::start(Reply::new(202, ACCEPTED));
    let run = against(
        &server,
        &[
            "alarm",
            "--device",
            "clock-1",
            "--time",
            "2030-01-02T06:30:00Z",
        ],
    );
    assert_code(&run, 0);
    let body = server.only_request().json();
    assert_eq!(
        body,
        serde_json::json!({"deviceId":"clock-1","alarmTime":"2030-01-02T06:30:00Z","label":""})
    );
}

#[test]
fn message_posts_device_text_and_a_duration_that_defaults_to_ten_seconds() {
    let server = TestServer::start(Reply::new(202, r#"{"result":"sent"}"#));
    let run = against(
        &server,
        &[
            "message",
            "--device",
            "clock-1",
            "--message",
            "Tea is ready",
        ],
    );
    assert_code(&run, 0);
    assert_eq!(run.stdout, "display-message command dispatched\n");
    let req = server.only_request();
    assert_eq!(
        (req.method.as_str(), req.path.as_str()),
        ("POST", "/commands/messages")
    );
    assert_eq!(
        req.body,
        r#"{"deviceId":"clock-1","message":"Tea is ready","durationSeconds":10}"#
    );

    let server = TestServer::start(Reply::new(202, r#"{"result":"sent"}"#));
    let run = against(
        &server,
        &[
            "message",
            "--device",
            "clock-1",
            "--message",
            "hi",
            "--duration",
            "3600",
        ],
    );
    assert_code(&run, 0);
    assert_eq!(server.only_request().json()["durationSeconds"], 3600);
}

#[test]
fn brightness_puts_device_and_level() {
    let server = TestServer::start(Reply::new(202, r#"{"result":"updated"}"#));
    let run = against(
        &server,
        &["brightness", "--device", "clock-1", "--level", "0"],
    );
    assert_code(&run, 0);
    assert_eq!(run.stdout, "brightness command dispatched\n");
    let req = server.only_request();
    assert_eq!(
        (req.method.as_str(), req.path.as_str()),
        ("PUT", "/commands/brightness")
    );
    assert_eq!(req.body, r#"{"deviceId":"clock-1","level":0}"#);
}

#[test]
fn the_go_flag_forms_all_send_the_same_request() {
    for form in [
        &["-device", "clock-1", "-level", "55"][..],
        &["--device", "clock-1", "--level", "55"],
        &["-device=clock-1", "-level=55"],
        &["--device=clock-1", "--level=55"],
    ] {
        let server = TestServer::start(Reply::new(202, r#"{"result":"updated"}"#));
        let args: Vec<&str> = std::iter::once("brightness")
            .chain(form.iter().copied())
            .collect();
        let run = against(&server, &args);
        assert_code(&run, 0);
        assert_eq!(
            server.only_request().body,
            r#"{"deviceId":"clock-1","level":55}"#,
            "{form:?}"
        );
    }
}

#[test]
fn a_message_text_that_starts_with_a_dash_is_sent_as_text() {
    let server = TestServer::start(Reply::new(202, r#"{"result":"sent"}"#));
    let run = against(
        &server,
        &[
            "message",
            "-device",
            "clock-1",
            "-message",
            "-json",
            "-duration",
            "5",
        ],
    );
    assert_code(&run, 0);
    assert_eq!(run.stdout, "display-message command dispatched\n");
    let body = server.only_request().json();
    assert_eq!(body["message"], "-json");
    assert_eq!(body["durationSeconds"], 5);
}

#[test]
fn json_prints_the_server_body_with_its_command_id_in_every_flag_position() {
    for args in [
        &["--json", "alarm"][..],
        &["alarm", "--json"],
        &["-json", "alarm"],
        &["alarm", "-json"],
    ] {
        let server = TestServer::start(Reply::new(202, ACCEPTED));
        let mut argv = args.to_vec();
        argv.extend(&ALARM[1..]);
        let run = against(&server, &argv);
        assert_code(&run, 0);
        assert_eq!(run.stdout, format!("{ACCEPTED}\n"), "{args:?}");
        let parsed: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
        assert!(parsed["commandId"].is_string());
    }
}

/// Asserts that `stdout` holds no control character but its final newline.
fn assert_no_control_characters(run: &Run) {
    let body = run.stdout.strip_suffix('\n').unwrap_or(&run.stdout);
    assert!(
        !body.chars().any(char::is_control),
        "control characters reached stdout: {:?}",
        run.stdout
    );
}

#[test]
fn json_reserialises_the_server_body_with_every_control_character_escaped() {
    // Valid JSON: ESC and BEL escaped as JSON allows, DEL and C1 CSI (U+009B) raw, which
    // JSON also allows inside strings, and which a terminal acts on.
    let body = "{\"result\":\"scheduled\",\"commandId\":\"\\u001b]0;pwned\\u0007\",\n \
                \"label\":\"\\u001b[2J del\u{7f} csi\u{9b}2J\"}";
    let server = TestServer::start(Reply::new(202, body));
    let mut argv = vec!["--json"];
    argv.extend(ALARM);
    let run = against(&server, &argv);
    assert_code(&run, 0);
    assert_no_control_characters(&run);
    assert!(run.stdout.contains(r"\u001b]0;pwned\u0007"), "{run:#?}");
    assert!(
        run.stdout.contains(r"\u001b[2J del\u007f csi\u009b2J"),
        "{run:#?}"
    );
    let printed: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let sent: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(printed, sent);

    // Not JSON at all (a proxy's page): printed as a JSON string, escaped the same way.
    let page = "<html>\u{1b}]0;pwned\u{7}\u{1b}[2J\u{9b}</html>";
    let server = TestServer::start(Reply::new(200, page));
    let run = against(&server, &["ready", "--json"]);
    assert_code(&run, 0);
    assert_no_control_characters(&run);
    assert_eq!(
        serde_json::from_str::<String>(&run.stdout).unwrap(),
        page,
        "{run:#?}"
    );
}

#[test]
fn an_error_body_with_control_characters_reaches_stderr_escaped() {
    let server = TestServer::start(Reply::new(
        500,
        "{\"error\":\"\\u001b]0;pwned\\u0007 del\u{7f} csi\u{9b}2J\"}",
    ));
    let run = against(&server, ALARM);
    assert_code(&run, 1);
    let stderr = run.stderr.strip_suffix('\n').unwrap_or(&run.stderr);
    assert!(!stderr.chars().any(char::is_control), "{run:#?}");
    assert!(stderr.contains(r"\u{1b}]0;pwned\u{7}"), "{run:#?}");
}

// ---------------------------------------------------------------------------------------
// Failures reported by the server or the network.

#[test]
fn a_502_answer_exits_1_with_the_status_and_the_server_error_text() {
    let server = TestServer::start(Reply::new(502, r#"{"error":"command dispatch failed"}"#));
    let run = against(&server, ALARM);
    assert_code(&run, 1);
    assert_eq!(run.stdout, "");
    assert!(run.stderr.contains("status=502"), "{run:#?}");
    assert!(run.stderr.contains("command dispatch failed"), "{run:#?}");
    assert_no_token(&run);
}

#[test]
fn a_400_answer_shows_the_error_and_its_detail() {
    let server = TestServer::start(Reply::new(
        400,
        r#"{"error":"invalid command","detail":"alarmTime must not be more than one minute in the past"}"#,
    ));
    let run = against(&server, ALARM);
    assert_code(&run, 1);
    assert!(run.stderr.contains("status=400"), "{run:#?}");
    assert!(run.stderr.contains("invalid command"), "{run:#?}");
    assert!(run.stderr.contains("one minute in the past"), "{run:#?}");
}

#[test]
fn a_401_answer_suggests_checking_the_token_without_printing_it() {
    let server = TestServer::start(Reply::new(401, r#"{"error":"unauthorized"}"#));
    let run = against(&server, ALARM);
    assert_code(&run, 1);
    assert!(run.stderr.contains("status=401"), "{run:#?}");
    assert!(run.stderr.contains("check CLOCK_SERVER_TOKEN"), "{run:#?}");
    assert_no_token(&run);
}

#[test]
fn a_401_without_a_token_says_that_clock_server_token_is_not_set() {
    let server = TestServer::start(Reply::new(401, r#"{"error":"unauthorized"}"#));
    let run = clockctl(ALARM, &[("CLOCK_SERVER_BASE_URL", &server.url())]);
    assert_code(&run, 1);
    assert!(
        run.stderr
            .contains(r#"status=401 error="unauthorized" (CLOCK_SERVER_TOKEN is not set"#),
        "{run:#?}"
    );
    assert_eq!(server.only_request().header("authorization"), None);
}

#[test]
fn a_non_json_error_body_is_shown_as_an_excerpt() {
    let server = TestServer::start(Reply::new(503, "<html>upstream down</html>"));
    let run = against(&server, ALARM);
    assert_code(&run, 1);
    assert!(run.stderr.contains("status=503"), "{run:#?}");
    assert!(run.stderr.contains("upstream down"), "{run:#?}");
}

#[test]
fn a_redirect_is_not_followed_so_the_token_stays_with_the_configured_server() {
    let elsewhere = TestServer::start(Reply::new(202, ACCEPTED));
    let location = format!("{}/commands/alarms", elsewhere.url());
    let server =
        TestServer::start(Reply::new(307, r#"{"error":"moved"}"#).header("location", &location));
    let run = against(&server, ALARM);
    assert_code(&run, 1);
    assert!(run.stderr.contains("status=307"), "{run:#?}");
    assert!(run.stderr.contains(&location), "{run:#?}");
    assert_eq!(server.requests().len(), 1);
    assert!(elsewhere.requests().is_empty());
}

#[test]
fn a_refused_connection_exits_1_with_call_server() {
    let url = format!("http://127.0.0.1:{}", closed_port());
    let run = clockctl(
        ALARM,
        &[
            ("CLOCK_SERVER_BASE_URL", &url),
            ("CLOCK_SERVER_TOKEN", TOKEN),
        ],
    );
    assert_code(&run, 1);
    assert!(run.stderr.contains("call server"), "{run:#?}");
    // What to do, not hyper's layers of the same failure.
    assert!(
        run.stderr
            .contains("connection refused: is the server running? (`cargo run -- demo` starts one"),
        "{run:#?}"
    );
    assert!(!run.stderr.contains("os error"), "{run:#?}");
    assert_no_token(&run);
}

#[test]
fn a_server_that_never_answers_times_out_after_clockctl_timeout_ms() {
    // Bound but never accepted: the kernel completes the handshake, then nothing comes back.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", silent.local_addr().unwrap());
    let started = Instant::now();
    let run = clockctl(
        ALARM,
        &[
            ("CLOCK_SERVER_BASE_URL", &url),
            ("CLOCKCTL_TIMEOUT_MS", "300"),
        ],
    );
    let elapsed = started.elapsed();
    assert_code(&run, 1);
    assert!(run.stderr.contains("call server"), "{run:#?}");
    assert!(run.stderr.contains("CLOCKCTL_TIMEOUT_MS"), "{run:#?}");
    assert!(elapsed >= Duration::from_millis(300), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(4), "{elapsed:?}");
    drop(silent);
}

// ---------------------------------------------------------------------------------------
// Token transport safety and HTTPS.

#[test]
fn a_token_is_refused_over_plain_http_to_a_remote_host_before_any_connection() {
    // Were clockctl to connect, the proxy (our recorder) would see the request.
    let proxy = TestServer::start(Reply::new(202, ACCEPTED));
    let run = clockctl(
        ALARM,
        &[
            ("CLOCK_SERVER_BASE_URL", "http://example.invalid"),
            ("CLOCK_SERVER_TOKEN", TOKEN),
            ("HTTP_PROXY", &proxy.url()),
            ("http_proxy", &proxy.url()),
        ],
    );
    assert_code(&run, 1);
    assert!(
        run.stderr.contains("refusing to send bearer token"),
        "{run:#?}"
    );
    assert!(
        run.stderr.contains("CLOCKCTL_ALLOW_INSECURE_HTTP"),
        "{run:#?}"
    );
    assert!(proxy.requests().is_empty());
    assert_no_token(&run);
}

#[test]
fn clockctl_allow_insecure_http_true_lets_the_token_go_to_a_remote_http_host() {
    let proxy = TestServer::start(Reply::new(202, ACCEPTED));
    let run = clockctl(
        ALARM,
        &[
            ("CLOCK_SERVER_BASE_URL", "http://example.invalid"),
            ("CLOCK_SERVER_TOKEN", TOKEN),
            ("CLOCKCTL_ALLOW_INSECURE_HTTP", "true"),
            ("HTTP_PROXY", &proxy.url()),
            ("http_proxy", &proxy.url()),
        ],
    );
    assert_code(&run, 0);
    let req = proxy.only_request();
    assert_eq!(req.path, "/commands/alarms");
    assert_eq!(req.header("host"), Some("example.invalid"));
    assert_eq!(
        req.header("authorization"),
        Some(&*format!("Bearer {TOKEN}"))
    );
}

#[test]
fn without_a_token_a_remote_http_host_is_called() {
    let proxy = TestServer::start(Reply::new(202, ACCEPTED));
    let run = clockctl(
        ALARM,
        &[
            ("CLOCK_SERVER_BASE_URL", "http://example.invalid"),
            ("HTTP_PROXY", &proxy.url()),
            ("http_proxy", &proxy.url()),
        ],
    );
    assert_code(&run, 0);
    assert_eq!(proxy.only_request().header("authorization"), None);
}

#[test]
fn a_token_is_sent_over_https_to_a_server_trusted_through_ssl_cert_file() {
    let pki = pki();
    let server = TestServer::start_tls(Reply::new(202, ACCEPTED), Arc::clone(&pki.server));
    let url = format!("https://{}", server.addr);
    let run = clockctl(
        ALARM,
        &[
            ("CLOCK_SERVER_BASE_URL", &url),
            ("CLOCK_SERVER_TOKEN", TOKEN),
            ("SSL_CERT_FILE", pki.ca_file.to_str().unwrap()),
        ],
    );
    assert_code(&run, 0);
    assert_eq!(run.stdout, "alarm command dispatched\n");
    let req = server.only_request();
    assert_eq!(
        req.header("authorization"),
        Some(&*format!("Bearer {TOKEN}"))
    );
}

#[test]
fn an_https_server_whose_certificate_is_not_trusted_fails_with_call_server() {
    let trusted = pki();
    let other = pki();
    let server = TestServer::start_tls(Reply::new(202, ACCEPTED), Arc::clone(&other.server));
    let url = format!("https://{}", server.addr);
    let run = clockctl(
        ALARM,
        &[
            ("CLOCK_SERVER_BASE_URL", &url),
            ("CLOCK_SERVER_TOKEN", TOKEN),
            ("SSL_CERT_FILE", trusted.ca_file.to_str().unwrap()),
        ],
    );
    assert_code(&run, 1);
    assert!(run.stderr.contains("call server"), "{run:#?}");
    // A refused certificate is not a passing failure: no retries.
    assert!(!run.stderr.contains("attempts"), "{run:#?}");
    assert!(server.requests().is_empty());
    assert_no_token(&run);
}

// ---------------------------------------------------------------------------------------
// Base URL resolution (the pure cases are unit tests in src/cli/settings.rs).

#[test]
fn clock_server_host_as_host_and_port_reaches_a_local_server_over_plain_http() {
    let server = TestServer::start(Reply::new(202, ACCEPTED));
    let host = server.addr.to_string();
    for value in [host.clone(), format!("tcp://{host}")] {
        let run = clockctl(
            ALARM,
            &[("CLOCK_SERVER_HOST", &value), ("CLOCK_SERVER_TOKEN", TOKEN)],
        );
        assert_code(&run, 0);
    }
    assert_eq!(server.requests().len(), 2);
    assert!(
        server
            .requests()
            .iter()
            .all(|r| r.path == "/commands/alarms")
    );
}

#[test]
fn clock_server_base_url_wins_over_clock_server_host_and_loses_its_trailing_slash() {
    let server = TestServer::start(Reply::new(202, ACCEPTED));
    let base = format!("{}/", server.url());
    let elsewhere = format!("127.0.0.1:{}", closed_port());
    let run = clockctl(
        ALARM,
        &[
            ("CLOCK_SERVER_BASE_URL", &base),
            ("CLOCK_SERVER_HOST", &elsewhere),
        ],
    );
    assert_code(&run, 0);
    assert_eq!(server.only_request().path, "/commands/alarms");
}

// ---------------------------------------------------------------------------------------
// Usage errors: exit 2, nothing sent.

#[test]
fn invalid_input_exits_2_with_a_hint_and_sends_nothing() {
    let server = TestServer::start(Reply::new(202, ACCEPTED));
    let t = "2030-01-02T07:30:00Z";
    let cases: &[(&[&str], &str)] = &[
        (&["alarm", "--time", t], "--device"),
        (&["alarm", "--device", "clock/1", "--time", t], "--device"),
        (&["alarm", "--device", "a#b", "--time", t], "--device"),
        (&["alarm", "--device", "clock-1"], "--time"),
        (
            &["alarm", "--device", "clock-1", "--time", "tomorrow 7am"],
            "RFC 3339",
        ),
        (
            &["alarm", "--device", "clock-1", "--time", "2030-01-02 07:30"],
            "RFC 3339",
        ),
        (
            &["message", "--device", "clock-1", "--message", "   "],
            "--message",
        ),
        (&["message", "--device", "clock-1"], "--message"),
        (
            &[
                "message",
                "--device",
                "clock-1",
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
                "clock-1",
                "--message",
                "x",
                "--duration",
                "3601",
            ],
            "--duration",
        ),
        (
            &[
                "message",
                "--device",
                "clock-1",
                "--message",
                "x",
                "--duration",
                "ten",
            ],
            "--duration",
        ),
        (
            &["brightness", "--device", "clock-1", "--level", "101"],
            "--level",
        ),
        (
            &["brightness", "--device", "clock-1", "--level", "-1"],
            "--level",
        ),
        (&["brightness", "--device", "clock-1"], "--level"),
        (
            &["brightness", "--device", "clock-1", "--level", "bright"],
            "--level",
        ),
        (&["reboot", "--device", "clock-1"], "reboot"),
        (
            &[
                "alarm", "--device", "clock-1", "--time", t, "--colour", "red",
            ],
            "--colour",
        ),
        (&[], "Usage"),
    ];
    for (args, hint) in cases {
        let run = against(&server, args);
        assert_code(&run, 2);
        assert!(
            run.stderr.contains(hint),
            "{args:?} should mention {hint}: {run:#?}"
        );
        assert_eq!(run.stdout, "", "{args:?}");
    }
    assert!(server.requests().is_empty());
}

#[test]
fn invalid_environment_values_exit_2_naming_the_variable_and_send_nothing() {
    let server = TestServer::start(Reply::new(202, ACCEPTED));
    for (var, value) in [
        ("CLOCKCTL_TIMEOUT_MS", "soon"),
        ("CLOCKCTL_TIMEOUT_MS", "0"),
        ("CLOCKCTL_ALLOW_INSECURE_HTTP", "yes"),
        ("CLOCK_SERVER_HOST", "unix:///run/clock.sock"),
    ] {
        let run = clockctl(
            ALARM,
            &[
                ("CLOCK_SERVER_HOST", &server.addr.to_string()),
                (var, value),
            ],
        );
        assert_code(&run, 2);
        assert!(run.stderr.contains(var), "{var}={value}: {run:#?}");
    }
    let run = clockctl(
        ALARM,
        &[("CLOCK_SERVER_BASE_URL", "ftp://clock.example.com")],
    );
    assert_code(&run, 2);
    assert!(run.stderr.contains("CLOCK_SERVER_BASE_URL"), "{run:#?}");
    assert!(server.requests().is_empty());
}

#[test]
fn every_go_boolean_spelling_is_accepted_for_clockctl_allow_insecure_http() {
    let server = TestServer::start(Reply::new(202, ACCEPTED));
    for value in [
        "1", "t", "T", "TRUE", "true", "True", "0", "f", "F", "FALSE", "false", "False",
    ] {
        let run = clockctl(
            ALARM,
            &[
                ("CLOCK_SERVER_BASE_URL", &server.url()),
                ("CLOCKCTL_ALLOW_INSECURE_HTTP", value),
            ],
        );
        assert_code(&run, 0);
    }
}

#[test]
fn the_tools_help_lists_the_environment_and_a_subcommands_help_points_there() {
    for args in [&["--help"][..], &["-help"]] {
        let run = clockctl(args, &[]);
        assert_code(&run, 0);
        for var in [
            "CLOCK_SERVER_BASE_URL",
            "CLOCK_SERVER_HOST",
            "CLOCK_SERVER_TOKEN",
            "CLOCKCTL_TIMEOUT_MS",
            "CLOCKCTL_ALLOW_INSECURE_HTTP",
            "CLOCKCTL_BROKER_URL",
        ] {
            assert!(run.stdout.contains(var), "{args:?} lacks {var}: {run:#?}");
        }
        assert!(run.stdout.contains("Exit status"), "{args:?}");
    }
    for args in [
        &["alarm", "--help"][..],
        &["message", "-help"],
        &["brightness", "-h"],
        &["ready", "--help"],
        &["status", "--help"],
        &["cancel", "-help"],
    ] {
        let run = clockctl(args, &[]);
        assert_code(&run, 0);
        assert!(run.stdout.contains("clockctl --help"), "{args:?}: {run:#?}");
        assert!(
            !run.stdout.contains("CLOCKCTL_TIMEOUT_MS"),
            "{args:?}: {run:#?}"
        );
        assert!(run.stdout.lines().count() < 20, "{args:?}: {run:#?}");
    }
    let run = clockctl(&["alarm", "--help"], &[]);
    for flag in [
        "--device",
        "--time",
        "--label",
        "--json",
        "--idempotency-key",
        "--retries",
        "--wait",
    ] {
        assert!(run.stdout.contains(flag), "{flag}");
    }
}

/// The help line of `--json` in `clockctl <sub> --help`.
fn json_help(sub: &str) -> String {
    let run = clockctl(&[sub, "--help"], &[]);
    assert_code(&run, 0);
    let line = run
        .stdout
        .lines()
        .find(|l| l.trim_start().starts_with("--json"));
    line.unwrap().to_owned()
}

#[test]
fn each_subcommand_says_what_its_json_prints() {
    assert!(json_help("alarm").contains("commandId"));
    for sub in ["ready", "status", "cancel"] {
        let help = json_help(sub);
        assert!(
            !help.contains("commandId") && !help.contains("watch"),
            "{sub}: {help}"
        );
    }
    assert!(json_help("ready").contains("not_ready"));
    assert!(json_help("status").contains("record"));
    assert!(json_help("watch").contains("topic"));
}

#[test]
fn watch_help_shows_its_variables_without_their_values() {
    let run = clockctl(
        &["watch", "--help"],
        &[
            ("CLOCKCTL_TOPIC_PREFIX", ""),
            ("CLOCKCTL_CA_FILE", "/tmp/ca.pem"),
        ],
    );
    assert_code(&run, 0);
    for var in [
        "CLOCKCTL_BROKER_URL",
        "CLOCKCTL_TOPIC_PREFIX",
        "CLOCKCTL_CA_FILE",
    ] {
        assert!(
            run.stdout.contains(&format!("[env: {var}]")),
            "{var}: {run:#?}"
        );
    }
    assert!(
        !run.stdout.contains("=]") && !run.stdout.contains("ca.pem"),
        "{run:#?}"
    );
}

#[test]
fn a_mistyped_subcommand_or_flag_suggests_the_right_one() {
    let run = clockctl(&["mesage", "--device", "clock-1"], &[]);
    assert_code(&run, 2);
    assert!(
        run.stderr.contains("similar subcommand exists: 'message'"),
        "{run:#?}"
    );
    let run = clockctl(&["message", "--devise", "clock-1", "--message", "m"], &[]);
    assert_code(&run, 2);
    assert!(
        run.stderr.contains("similar argument exists: '--device'"),
        "{run:#?}"
    );
}

// ---------------------------------------------------------------------------------------
// `ready`.

#[test]
fn ready_prints_ready_and_exits_0_when_the_server_is_ready() {
    let server = TestServer::start(Reply::new(200, r#"{"status":"ready"}"#));
    let run = against(&server, &["ready"]);
    assert_code(&run, 0);
    assert_eq!(run.stdout, "ready\n");
    let req = server.only_request();
    assert_eq!((req.method.as_str(), req.path.as_str()), ("GET", "/ready"));
    assert_eq!(
        req.header("authorization"),
        Some(&*format!("Bearer {TOKEN}"))
    );
}

#[test]
fn ready_prints_not_ready_and_exits_1_when_the_server_answers_503() {
    let body = r#"{"status":"not_ready"}"#;
    let server = TestServer::start(Reply::new(503, body));
    let run = against(&server, &["ready"]);
    assert_code(&run, 1);
    assert_eq!(run.stdout, "not_ready\n");
    assert!(run.stderr.contains("status=503"), "{run:#?}");

    let run = against(&server, &["ready", "--json"]);
    assert_code(&run, 1);
    assert_eq!(run.stdout, format!("{body}\n"));
}

#[test]
fn ready_reports_a_401_like_any_other_error() {
    let server = TestServer::start(Reply::new(401, r#"{"error":"unauthorized"}"#));
    let run = against(&server, &["ready"]);
    assert_code(&run, 1);
    assert!(run.stderr.contains("status=401"), "{run:#?}");
    assert!(run.stderr.contains("unauthorized"), "{run:#?}");
}

// ---------------------------------------------------------------------------------------
// Tracked commands (SPEC 7.7): Idempotency-Key, retries, --wait, status, cancel.

const ID: &str = "0190c2a4-7c1e-7b2a-9f00-000000000001";
const BRIGHTNESS: &[&str] = &["brightness", "--device", "clock-1", "--level", "40"];

/// A 202 as a server with a state store sends it (SPEC 7.2).
fn accepted(status: &str) -> Reply {
    Reply::new(
        202,
        &format!(
            r#"{{"result":"updated","commandId":"{ID}","deviceId":"clock-1","status":"{status}","expiresAt":"2030-01-01T00:00:00.000Z"}}"#
        ),
    )
    .header("location", &format!("/commands/{ID}"))
}

/// A status record (SPEC 7.3) with `status` and `reason` (the device's message).
fn record(status: &str, reason: Option<&str>) -> String {
    let reason = reason.map_or_else(
        || "null".to_owned(),
        |m| serde_json::json!({"code": "device_failed", "message": m}).to_string(),
    );
    format!(
        r#"{{"commandId":"{ID}","deviceId":"clock-1","type":"set_brightness","principal":"ops","status":"{status}","createdAt":"2030-01-01T00:00:00.000Z","sentAt":"2030-01-01T00:00:00.010Z","completedAt":null,"expiresAt":"2030-01-01T00:10:00.000Z","deviceAcks":true,"statusReason":{reason}}}"#
    )
}

fn keys(server: &TestServer) -> Vec<String> {
    server
        .requests()
        .iter()
        .map(|r| r.header("idempotency-key").unwrap_or("<none>").to_owned())
        .collect()
}

fn with(args: &[&str], extra: &[&'static str]) -> Vec<String> {
    args.iter()
        .chain(extra)
        .map(|a| (*a).to_owned())
        .collect::<Vec<_>>()
}

fn run_with(server: &TestServer, args: &[&str], extra: &[&'static str]) -> Run {
    let argv = with(args, extra);
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    against(server, &argv)
}

#[test]
fn every_command_sends_a_new_uuid_idempotency_key_and_the_same_one_on_every_retry() {
    let server = TestServer::sequence(vec![
        Reply::new(503, r#"{"error":"state store unavailable"}"#),
        Reply::new(502, r#"{"error":"command dispatch failed"}"#),
        accepted("sent"),
    ]);
    let run = against(&server, BRIGHTNESS);
    assert_code(&run, 0);
    assert_eq!(run.stdout, "brightness command dispatched\n");
    let keys = keys(&server);
    assert_eq!(keys.len(), 3, "{keys:?}");
    assert!(uuid::Uuid::parse_str(&keys[0]).is_ok(), "{keys:?}");
    assert!(keys.iter().all(|k| *k == keys[0]), "{keys:?}");
    let bodies: Vec<String> = server.requests().into_iter().map(|r| r.body).collect();
    assert!(bodies.iter().all(|b| *b == bodies[0]), "{bodies:?}");

    // The next invocation is a new request: a new key.
    let again = TestServer::start(accepted("sent"));
    assert_code(&against(&again, BRIGHTNESS), 0);
    assert_ne!(
        again.only_request().header("idempotency-key").unwrap(),
        keys[0]
    );
}

#[test]
fn a_given_idempotency_key_is_sent_as_is_for_every_command() {
    for args in [
        ALARM,
        BRIGHTNESS,
        &["message", "--device", "c", "--message", "m"],
    ] {
        let server = TestServer::start(accepted("sent"));
        let run = run_with(&server, args, &["--idempotency-key", "deploy-42"]);
        assert_code(&run, 0);
        assert_eq!(
            server.only_request().header("idempotency-key"),
            Some("deploy-42")
        );
    }
}

#[test]
fn an_idempotency_key_that_is_not_visible_ascii_exits_2_naming_the_flag() {
    let server = TestServer::start(accepted("sent"));
    let long = "k".repeat(256);
    for key in ["two words", "", "clé", long.as_str()] {
        let mut argv = BRIGHTNESS.to_vec();
        argv.extend(["--idempotency-key", key]);
        let run = against(&server, &argv);
        assert_code(&run, 2);
        assert!(run.stderr.contains("--idempotency-key"), "{run:#?}");
    }
    assert!(server.requests().is_empty());
}

#[test]
fn a_dropped_connection_is_retried_with_the_same_key_then_succeeds() {
    let server = TestServer::sequence(vec![Reply::hang_up(), accepted("sent")]);
    let run = against(&server, BRIGHTNESS);
    assert_code(&run, 0);
    let keys = keys(&server);
    assert_eq!(keys.len(), 2, "{run:#?}");
    assert_eq!(keys[0], keys[1]);
}

#[test]
fn a_refused_connection_is_tried_retries_plus_one_times_with_back_off_and_says_so() {
    let url = format!("http://127.0.0.1:{}", closed_port());
    let started = Instant::now();
    let run = clockctl(
        BRIGHTNESS,
        &[
            ("CLOCK_SERVER_BASE_URL", &url),
            ("CLOCK_SERVER_TOKEN", TOKEN),
        ],
    );
    assert_code(&run, 1);
    assert!(run.stderr.contains("call server"), "{run:#?}");
    assert!(
        run.stderr
            .contains("gave up after 3 attempts (--retries 2)"),
        "{run:#?}"
    );
    // Two pauses of back-off: 200 ms, then 400 ms.
    assert!(
        started.elapsed() >= Duration::from_millis(600),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn retries_run_out_on_a_502_and_the_error_says_how_many_attempts_were_made() {
    let server = TestServer::start(Reply::new(502, r#"{"error":"command dispatch failed"}"#));
    let run = run_with(&server, BRIGHTNESS, &["--retries", "3"]);
    assert_code(&run, 1);
    assert_eq!(server.requests().len(), 4);
    assert!(run.stderr.contains("status=502"), "{run:#?}");
    assert!(run.stderr.contains("command dispatch failed"), "{run:#?}");
    assert!(
        run.stderr
            .contains("gave up after 4 attempts (--retries 3)"),
        "{run:#?}"
    );
}

#[test]
fn retries_0_makes_exactly_one_attempt() {
    let server = TestServer::start(Reply::new(503, r#"{"error":"state store unavailable"}"#));
    let run = run_with(&server, BRIGHTNESS, &["--retries", "0"]);
    assert_code(&run, 1);
    assert_eq!(server.requests().len(), 1);
    assert!(run.stderr.contains("status=503"), "{run:#?}");
    assert!(run.stderr.contains("1 attempt (--retries 0)"), "{run:#?}");
}

#[test]
fn other_error_statuses_are_never_retried() {
    for (status, error) in [
        (400, "invalid command"),
        (401, "unauthorized"),
        (403, "forbidden for target device"),
        (404, "not found"),
        (422, "idempotency key reused with a different request"),
        (500, "internal"),
    ] {
        let body = format!(r#"{{"error":"{error}"}}"#);
        let server = TestServer::start(Reply::new(status, &body));
        let run = against(&server, BRIGHTNESS);
        assert_code(&run, 1);
        assert_eq!(server.requests().len(), 1, "{status} was retried");
        assert!(run.stderr.contains(&format!("status={status}")), "{run:#?}");
        assert!(run.stderr.contains(error), "{run:#?}");
        assert!(!run.stderr.contains("attempt"), "{run:#?}");
    }
}

#[test]
fn a_409_in_progress_is_retried_after_its_retry_after_with_the_same_key() {
    let server = TestServer::sequence(vec![
        Reply::new(
            409,
            r#"{"error":"request with this idempotency key is in progress"}"#,
        )
        .header("retry-after", "1"),
        accepted("sent").header("idempotent-replayed", "true"),
    ]);
    let started = Instant::now();
    let run = against(&server, BRIGHTNESS);
    assert_code(&run, 0);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After: 1 not honoured: {:?}",
        started.elapsed()
    );
    let keys = keys(&server);
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0], keys[1]);
    assert!(run.stderr.contains("Idempotent-Replayed"), "{run:#?}");
}

/// A server that accepts the command with `first` status, then answers the status
/// resource with `statuses` in turn (the last one repeating).
fn tracking_server(first: &str, statuses: Vec<String>) -> TestServer {
    let first = accepted(first);
    TestServer::scripted(move |seen| {
        let current = seen.last().unwrap();
        if current.method != "GET" {
            return first.clone();
        }
        let polls = seen.iter().filter(|r| r.method == "GET").count();
        let body = &statuses[(polls - 1).min(statuses.len() - 1)];
        Reply::new(200, body)
    })
}

#[test]
fn wait_polls_the_status_until_succeeded_and_exits_0() {
    let server = tracking_server(
        "sent",
        vec![record("sent", None), record("succeeded", None)],
    );
    let run = run_with(&server, BRIGHTNESS, &["--wait"]);
    assert_code(&run, 0);
    assert_eq!(
        run.stdout,
        format!("brightness command dispatched\ncommand {ID} succeeded\n")
    );
    let polls: Vec<Recorded> = server
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET")
        .collect();
    assert_eq!(polls.len(), 2, "{polls:#?}");
    for poll in &polls {
        assert_eq!(poll.path, format!("/commands/{ID}"));
        assert_eq!(
            poll.header("authorization"),
            Some(&*format!("Bearer {TOKEN}"))
        );
    }
}

#[test]
fn wait_with_json_prints_the_final_record() {
    let server = tracking_server("sent", vec![record("succeeded", None)]);
    let run = run_with(&server, BRIGHTNESS, &["--wait=5s", "--json"]);
    assert_code(&run, 0);
    let printed: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let sent: serde_json::Value = serde_json::from_str(&record("succeeded", None)).unwrap();
    assert_eq!(printed, sent);
}

#[test]
fn wait_ending_in_failed_exits_1_with_the_reason() {
    let server = tracking_server(
        "sent",
        vec![record("sent", None), record("failed", Some("display busy"))],
    );
    let run = run_with(&server, BRIGHTNESS, &["--wait=10s"]);
    assert_code(&run, 1);
    assert!(
        run.stdout
            .ends_with(&format!("command {ID} failed (display busy)\n")),
        "{run:#?}"
    );
    for end in ["expired", "cancelled"] {
        let server = tracking_server("scheduled", vec![record(end, None)]);
        let run = run_with(&server, BRIGHTNESS, &["--wait"]);
        assert_code(&run, 1);
        assert!(
            run.stdout.ends_with(&format!("command {ID} {end}\n")),
            "{run:#?}"
        );
    }
}

#[test]
fn wait_gives_up_when_its_duration_ends_and_says_the_status_then() {
    let server = tracking_server("sent", vec![record("sent", None)]);
    let started = Instant::now();
    let run = run_with(&server, BRIGHTNESS, &["--wait=300ms"]);
    let elapsed = started.elapsed();
    assert_code(&run, 1);
    assert!(
        run.stdout
            .ends_with(&format!("command {ID} still sent after 300ms\n")),
        "{run:#?}"
    );
    assert!(run.stderr.contains("--wait"), "{run:#?}");
    assert!(run.stderr.contains("clockctl status"), "{run:#?}");
    assert!(elapsed >= Duration::from_millis(300), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
}

#[test]
fn wait_with_a_space_before_its_duration_waits_that_long() {
    let server = tracking_server("sent", vec![record("sent", None)]);
    let run = run_with(&server, BRIGHTNESS, &["--wait", "300ms"]);
    assert_code(&run, 1);
    assert!(
        run.stdout
            .ends_with(&format!("command {ID} still sent after 300ms\n")),
        "{run:#?}"
    );
}

#[test]
fn wait_against_a_server_without_a_state_store_says_so_instead_of_hanging() {
    // STATE_STORE=none: the release-1 202 body, no status, no Location.
    let server = TestServer::start(Reply::new(202, ACCEPTED));
    let run = run_with(&server, BRIGHTNESS, &["--wait"]);
    assert_code(&run, 1);
    assert_eq!(run.stdout, "brightness command dispatched\n");
    assert!(run.stderr.contains("STATE_STORE"), "{run:#?}");
    assert!(run.stderr.contains("--wait"), "{run:#?}");
    assert_eq!(server.requests().len(), 1, "nothing polled");
}

#[test]
fn wait_with_an_invalid_duration_exits_2_naming_the_flag_and_sends_nothing() {
    let server = TestServer::start(accepted("sent"));
    for wait in ["--wait=soon", "--wait=0s", "--wait=-1s"] {
        let run = run_with(&server, BRIGHTNESS, &[wait]);
        assert_code(&run, 2);
        assert!(run.stderr.contains("--wait"), "{run:#?}");
    }
    assert!(server.requests().is_empty());
}

#[test]
fn status_prints_the_record_readably_or_as_the_servers_json() {
    let body = record("failed", Some("display busy"));
    let server = TestServer::start(Reply::new(200, &body));
    let run = against(&server, &["status", ID]);
    assert_code(&run, 0);
    for line in [
        format!("command      {ID}"),
        "device       clock-1".to_owned(),
        "type         set_brightness".to_owned(),
        "status       failed (display busy)  [device_failed]".to_owned(),
        "completed    -".to_owned(),
    ] {
        assert!(run.stdout.contains(&line), "{line:?} missing: {run:#?}");
    }
    let req = server.only_request();
    assert_eq!(
        (req.method.as_str(), req.path.as_str()),
        ("GET", &*format!("/commands/{ID}"))
    );
    assert_eq!(
        req.header("authorization"),
        Some(&*format!("Bearer {TOKEN}"))
    );
    assert_eq!(req.header("idempotency-key"), None);

    let run = against(&server, &["status", ID, "--json"]);
    assert_code(&run, 0);
    let printed: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(
        printed,
        serde_json::from_str::<serde_json::Value>(&body).unwrap()
    );
}

#[test]
fn status_and_cancel_of_an_unknown_command_exit_1_explaining_the_404() {
    let server = TestServer::start(Reply::new(404, r#"{"error":"not found"}"#));
    for sub in ["status", "cancel"] {
        let run = against(&server, &[sub, "nope-1"]);
        assert_code(&run, 1);
        assert!(
            run.stderr.contains(
                "no command nope-1 (unknown, expired from the store, or outside your scopes)"
            ),
            "{run:#?}"
        );
        // SPEC 5: every non-2xx answer shows its status and the server's error text.
        assert!(
            run.stderr
                .contains(r#"server answered status=404 error="not found""#),
            "{run:#?}"
        );
    }
}

#[test]
fn cancel_deletes_the_command_and_reports_409_with_the_status() {
    let server = TestServer::start(Reply::new(200, &record("cancelled", None)));
    let run = against(&server, &["cancel", ID]);
    assert_code(&run, 0);
    assert_eq!(run.stdout, format!("cancelled {ID}\n"));
    let req = server.only_request();
    assert_eq!(
        (req.method.as_str(), req.path.as_str()),
        ("DELETE", &*format!("/commands/{ID}"))
    );

    let server = TestServer::start(Reply::new(
        409,
        r#"{"error":"command can no longer be cancelled","status":"sent"}"#,
    ));
    let run = against(&server, &["cancel", ID]);
    assert_code(&run, 1);
    assert!(
        run.stderr
            .contains("can no longer be cancelled: it is sent"),
        "{run:#?}"
    );
    assert!(
        run.stderr
            .contains(r#"server answered status=409 error="command can no longer be cancelled""#),
        "{run:#?}"
    );
    assert_eq!(server.requests().len(), 1, "a 409 is not retried");
}

#[test]
fn status_and_cancel_refuse_a_malformed_id_with_exit_2() {
    let server = TestServer::start(Reply::new(200, &record("sent", None)));
    let long = "x".repeat(65);
    for sub in ["status", "cancel"] {
        for id in ["", "a/b", long.as_str()] {
            let run = against(&server, &[sub, id]);
            assert_code(&run, 2);
            assert!(run.stderr.contains("COMMAND_ID"), "{run:#?}");
        }
        let run = against(&server, &[sub]);
        assert_code(&run, 2);
    }
    assert!(server.requests().is_empty());
}

#[test]
fn status_never_lets_a_control_character_of_the_record_reach_stdout() {
    let hostile = "{\"commandId\":\"x\\u001b]0;pwned\\u0007\",\"status\":\"failed\\u001b[2J\",\
                   \"deviceId\":\"clock\u{9b}2J\",\"statusReason\":{\"code\":\"c\\u0007\",\
                   \"message\":\"busy\\n\u{7f}\"}}";
    let server = TestServer::start(Reply::new(200, hostile));
    for json in [false, true] {
        let mut argv = vec!["status", "x"];
        if json {
            argv.push("--json");
        }
        let run = against(&server, &argv);
        assert_code(&run, 0);
        assert!(
            !run.stdout.chars().any(|c| c.is_control() && c != '\n'),
            "control characters reached stdout: {run:#?}"
        );
    }
    // And through --wait's outcome line.
    let hostile = "{\"commandId\":\"x\",\"status\":\"failed\",\"statusReason\":\
                   {\"code\":\"c\",\"message\":\"busy\\n\u{7f}\\u001b[2J\u{9b}\"}}";
    let server = tracking_server("sent", vec![hostile.to_owned()]);
    let run = run_with(&server, BRIGHTNESS, &["--wait"]);
    assert_code(&run, 1);
    assert!(
        !run.stdout.chars().any(|c| c.is_control() && c != '\n'),
        "{run:#?}"
    );
    assert!(
        run.stdout.contains(r"failed (busy\n\u{7f}\u{1b}[2J\u{9b})"),
        "{run:#?}"
    );
}

/// Characters that reorder or break the text around them while staying invisible: a
/// right-to-left override, a line separator, a zero-width space, a left-to-right isolate.
const INVISIBLE: [char; 4] = ['\u{202e}', '\u{2028}', '\u{200b}', '\u{2066}'];

fn assert_nothing_invisible(run: &Run) {
    for text in [&run.stdout, &run.stderr] {
        assert!(
            !text.contains(INVISIBLE) && !text.chars().any(|c| c.is_control() && c != '\n'),
            "an invisible or control character reached the terminal: {run:#?}"
        );
    }
}

#[test]
fn status_cancel_ready_and_json_escape_characters_that_reorder_the_text() {
    // A record whose device "reads" as clock-1 on a terminal that honours the override.
    let hostile = "{\"commandId\":\"x\u{202e}1-kcolc\",\"status\":\"failed\",\
                   \"deviceId\":\"a\u{2028}fake line\",\"statusReason\":{\"code\":\"c\u{200b}\",\
                   \"message\":\"busy\u{2066}\"}}";
    let server = TestServer::start(Reply::new(200, hostile));
    let run = against(&server, &["status", "x"]);
    assert_code(&run, 0);
    assert_nothing_invisible(&run);
    assert!(run.stdout.contains(r"x\u{202e}1-kcolc"), "{run:#?}");
    assert!(run.stdout.contains(r"a\u{2028}fake line"), "{run:#?}");
    for argv in [&["status", "x", "--json"][..], &["cancel", "x", "--json"]] {
        let run = against(&server, argv);
        assert_code(&run, 0);
        assert_nothing_invisible(&run);
        assert!(run.stdout.contains(r"x\u202e1-kcolc"), "{run:#?}");
        let printed: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
        assert_eq!(printed["deviceId"], "a\u{2028}fake line");
    }

    // cancel's refusal, an error's text, and ready's bare word.
    let server = TestServer::start(Reply::new(
        409,
        "{\"error\":\"no\u{202e}\",\"status\":\"sent\u{2028}x\"}",
    ));
    let run = against(&server, &["cancel", "x"]);
    assert_code(&run, 1);
    assert_nothing_invisible(&run);
    assert!(run.stderr.contains(r"it is sent\u{2028}x"), "{run:#?}");
    let server = TestServer::start(Reply::new(200, "{\"status\":\"rea\u{202e}dy\"}"));
    let run = against(&server, &["ready"]);
    assert_code(&run, 0);
    assert_nothing_invisible(&run);
    assert_eq!(run.stdout, "rea\\u{202e}dy\n");
}

/// A hostile HTTP server on 127.0.0.1: to every connection it sends `head` and then an
/// endless body, as fast as the socket takes it. Counts the connections.
struct EndlessServer {
    url: String,
    connections: Arc<std::sync::atomic::AtomicUsize>,
}

impl EndlessServer {
    fn start(head: &'static str) -> Self {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = Arc::clone(&connections);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                std::thread::spawn(move || {
                    // The request head (all of it fits one read on loopback), then the answer.
                    let mut request = [0u8; 4096];
                    let _ = stream.read(&mut request);
                    let chunk = [b'x'; 64 * 1024];
                    let _ = stream.write_all(head.as_bytes());
                    // Until the client hangs up.
                    while stream.write_all(&chunk).is_ok() {}
                });
            }
        });
        Self { url, connections }
    }
}

#[test]
fn an_endless_answer_is_cut_at_a_mebibyte_and_not_tried_again() {
    for head in [
        // Close-delimited: no length announced.
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n",
        // A length announced that no clock-server answer has.
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 5000000000\r\n\r\n",
        // An error status, whose body would be quoted.
        "HTTP/1.1 502 Bad Gateway\r\nConnection: close\r\n\r\n",
    ] {
        let server = EndlessServer::start(head);
        let started = Instant::now();
        let run = clockctl(
            &["status", ID],
            &[
                ("CLOCK_SERVER_BASE_URL", &server.url),
                ("CLOCKCTL_TIMEOUT_MS", "20000"),
            ],
        );
        let elapsed = started.elapsed();
        assert_code(&run, 1);
        assert!(
            run.stderr.contains("the answer is larger than 1024 KiB"),
            "{head:?}: {run:#?}"
        );
        assert!(run.stderr.contains("CLOCK_SERVER_BASE_URL"), "{run:#?}");
        assert!(elapsed < Duration::from_secs(10), "{head:?}: {elapsed:?}");
        assert_eq!(
            server.connections.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "{head:?}: the same server would send the same again"
        );
    }
}

#[test]
fn status_is_retried_after_a_503_like_the_commands() {
    let server = TestServer::sequence(vec![
        Reply::new(503, r#"{"error":"state store unavailable"}"#),
        Reply::new(200, &record("sent", None)),
    ]);
    let run = against(&server, &["status", ID]);
    assert_code(&run, 0);
    assert_eq!(server.requests().len(), 2);
}
