#![allow(clippy::unwrap_used)]
//! Replays `docker-compose.yml` with local processes, since there is no container engine
//! on the build machines (issue 6).
//!
//! The file is parsed and each service is started the way Compose would start it, only
//! outside containers: Mosquitto with `deploy/mosquitto/mosquitto.conf` (listener moved to
//! a free loopback port), the `subscriber` service's own command, the server binary with
//! exactly the `server` service's environment, and the clockctl binary with the `clockctl`
//! service's environment and command. Only network addresses are remapped, and only after
//! checking that they point at the right service and port, so an edit to the Compose
//! file's environment, commands or health checks that would break the real stack breaks
//! this test too. The structural checks of the seed page are in `compose_file_matches_seed`.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_norway::Value;

// ---------------------------------------------------------------------------------------
// The Compose file
// ---------------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
struct ComposeFile {
    services: BTreeMap<String, Service>,
    #[serde(default)]
    networks: BTreeMap<String, Value>,
}

/// The parts of a service the replay uses; Compose keys not listed here are ignored.
#[derive(Debug, Deserialize)]
struct Service {
    image: Option<String>,
    build: Option<Value>,
    #[serde(default)]
    ports: Vec<String>,
    #[serde(default)]
    volumes: Vec<String>,
    environment: Option<Value>,
    entrypoint: Option<Value>,
    command: Option<Value>,
    depends_on: Option<Value>,
    healthcheck: Option<Healthcheck>,
    networks: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct Healthcheck {
    test: Value,
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn load_compose() -> ComposeFile {
    let path = repo().join("docker-compose.yml");
    let text = fs::read_to_string(&path).unwrap();
    serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

impl ComposeFile {
    fn service(&self, name: &str) -> &Service {
        self.services
            .get(name)
            .unwrap_or_else(|| panic!("docker-compose.yml has no `{name}` service"))
    }
}

/// Compose's own escaping: `$$` is a literal `$`. Variable interpolation (`${VAR}`, `$VAR`)
/// would depend on the caller's environment, which the replay does not model.
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' {
            assert_eq!(
                chars.next(),
                Some('$'),
                "Compose variable interpolation is not supported by the replay: {s:?}"
            );
        }
        out.push(c);
    }
    out
}

fn scalar(v: &Value, what: &str) -> String {
    match v {
        Value::String(s) => unescape(s),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        other => panic!("{what}: expected a scalar, found {other:?}"),
    }
}

impl Service {
    /// `environment:` as a map, from either the mapping or the `KEY=value` list form.
    fn env(&self) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        match &self.environment {
            None => {}
            Some(Value::Mapping(m)) => {
                for (k, v) in m {
                    let k = scalar(k, "environment key");
                    assert!(
                        !v.is_null(),
                        "environment {k} has no value (taken from the host): not replayable"
                    );
                    let v = scalar(v, &k);
                    env.insert(k, v);
                }
            }
            Some(Value::Sequence(items)) => {
                for item in items {
                    let item = scalar(item, "environment entry");
                    let (k, v) = item
                        .split_once('=')
                        .unwrap_or_else(|| panic!("environment entry without a value: {item}"));
                    env.insert(k.to_owned(), v.to_owned());
                }
            }
            Some(other) => panic!("unexpected environment: {other:?}"),
        }
        env
    }

    /// `command:`/`entrypoint:` in list form (a string is split on spaces when it has no
    /// quotes; anything else should be written as a list).
    fn words(v: Option<&Value>, what: &str) -> Vec<String> {
        match v {
            None => Vec::new(),
            Some(Value::Sequence(items)) => items.iter().map(|i| scalar(i, what)).collect(),
            Some(Value::String(s)) => {
                assert!(
                    !s.contains(['"', '\'', '\\']),
                    "{what}: write a quoted command as a YAML list: {s:?}"
                );
                unescape(s).split_whitespace().map(str::to_owned).collect()
            }
            Some(other) => panic!("{what}: unexpected {other:?}"),
        }
    }

    fn command(&self) -> Vec<String> {
        Self::words(self.command.as_ref(), "command")
    }

    fn entrypoint(&self) -> Vec<String> {
        Self::words(self.entrypoint.as_ref(), "entrypoint")
    }

    /// `depends_on:` as service -> condition (`service_started` for the short form).
    fn depends_on(&self) -> BTreeMap<String, String> {
        match &self.depends_on {
            None => BTreeMap::new(),
            Some(Value::Sequence(names)) => names
                .iter()
                .map(|n| (scalar(n, "depends_on"), "service_started".to_owned()))
                .collect(),
            Some(Value::Mapping(m)) => m
                .iter()
                .map(|(k, v)| {
                    let condition = v
                        .get("condition")
                        .map_or("service_started".to_owned(), |c| scalar(c, "condition"));
                    (scalar(k, "depends_on"), condition)
                })
                .collect(),
            Some(other) => panic!("unexpected depends_on: {other:?}"),
        }
    }

    fn networks(&self) -> Vec<String> {
        match &self.networks {
            None => Vec::new(),
            Some(Value::Sequence(n)) => n.iter().map(|n| scalar(n, "networks")).collect(),
            Some(Value::Mapping(m)) => m.keys().map(|n| scalar(n, "networks")).collect(),
            Some(other) => panic!("unexpected networks: {other:?}"),
        }
    }

    /// The health check as (`CMD` | `CMD-SHELL`, words).
    fn healthcheck(&self) -> (String, Vec<String>) {
        let test = &self
            .healthcheck
            .as_ref()
            .expect("service has no healthcheck")
            .test;
        match test {
            Value::String(s) => ("CMD-SHELL".to_owned(), vec![unescape(s)]),
            Value::Sequence(_) => {
                let mut words = Self::words(Some(test), "healthcheck");
                let kind = words.remove(0);
                assert!(
                    kind == "CMD" || kind == "CMD-SHELL",
                    "healthcheck kind {kind}"
                );
                (kind, words)
            }
            other => panic!("unexpected healthcheck: {other:?}"),
        }
    }
}

/// `scheme://host:port[/...]` -> (scheme, host, port).
fn split_url(url: &str) -> (&str, &str, u16) {
    let (scheme, rest) = url
        .split_once("://")
        .unwrap_or_else(|| panic!("not a URL: {url}"));
    let authority = rest.split('/').next().unwrap();
    let (host, port) = authority
        .rsplit_once(':')
        .unwrap_or_else(|| panic!("no explicit port in {url}"));
    (scheme, host, port.parse().unwrap())
}

/// The container side of a `HOST:CONTAINER` port mapping.
fn published_container_ports(service: &Service) -> Vec<u16> {
    service
        .ports
        .iter()
        .map(|p| p.rsplit(':').next().unwrap().parse().unwrap())
        .collect()
}

// ---------------------------------------------------------------------------------------
// Local processes
// ---------------------------------------------------------------------------------------

/// A started service, in its own process group. The group is killed (and the child reaped)
/// when dropped, so a failing assertion leaves no broker, server or `mosquitto_sub` (a
/// child of the subscriber's shell) behind.
struct Proc {
    name: String,
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Proc {
    fn spawn(name: &str, mut cmd: Command, logs: &Path) -> Proc {
        let stdout = logs.join(format!("{name}.stdout"));
        let stderr = logs.join(format!("{name}.stderr"));
        cmd.process_group(0)
            .stdin(Stdio::null())
            .stdout(File::create(&stdout).unwrap())
            .stderr(File::create(&stderr).unwrap());
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"));
        Proc {
            name: name.to_owned(),
            child,
            stdout,
            stderr,
        }
    }

    fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().unwrap()
    }

    /// Waits for the process to end, at most `limit`; kills it when the time is up.
    fn wait_for(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            sleep(Duration::from_millis(50));
        }
        self.kill();
        None
    }

    /// Kills the whole process group, then reaps the child.
    fn kill(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill")
            .args(["-s", "KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn stdout(&self) -> String {
        fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    fn logs(&self) -> String {
        format!(
            "--- {} stdout:\n{}--- {} stderr:\n{}",
            self.name,
            self.stdout(),
            self.name,
            fs::read_to_string(&self.stderr).unwrap_or_default()
        )
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // Also when the leader has exited: a grandchild may still run in its group.
        self.kill();
    }
}

/// Everything started so far, for the failure messages.
struct Stack {
    procs: Vec<Proc>,
}

impl Stack {
    fn logs(&self) -> String {
        self.procs
            .iter()
            .map(Proc::logs)
            .collect::<Vec<_>>()
            .join("")
    }

    fn get(&mut self, name: &str) -> &mut Proc {
        self.procs.iter_mut().find(|p| p.name == name).unwrap()
    }

    /// Polls `ready` every 100 ms for at most `limit`, failing early (with all logs) when
    /// the process `name` exits.
    fn wait_until(
        &mut self,
        name: &str,
        what: &str,
        limit: Duration,
        mut ready: impl FnMut() -> bool,
    ) {
        let deadline = Instant::now() + limit;
        loop {
            if ready() {
                return;
            }
            if let Some(status) = self.get(name).exited() {
                panic!("{name} exited ({status}) before {what}\n{}", self.logs());
            }
            if Instant::now() >= deadline {
                panic!("{what}: not within {limit:?}\n{}", self.logs());
            }
            sleep(Duration::from_millis(100));
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn mosquitto_binary() -> PathBuf {
    let sbin = PathBuf::from("/usr/sbin/mosquitto");
    if sbin.exists() {
        return sbin;
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join("mosquitto"))
                .find(|p| p.exists())
        })
        .expect("mosquitto not found: run `make test-deps` (Debian packages mosquitto, mosquitto-clients)")
}

/// A plain HTTP/1.1 GET; returns the status code.
fn http_get_status(port: u16, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response.split_whitespace().nth(1)?.parse().ok()
}

/// The host's PATH, for services whose command is a shell script (an image's PATH).
fn host_path() -> String {
    std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".to_owned())
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

/// The parts of the seed page's Compose description that a replay cannot exercise:
/// images, ports, mounts, dependency conditions, networks, and the exact environment.
#[test]
fn compose_file_matches_seed() {
    let compose = load_compose();
    for name in ["mosquitto", "server", "subscriber", "clockctl"] {
        let service = compose.service(name);
        assert_eq!(
            service.networks(),
            vec!["clock-server-net"],
            "{name} must be on clock-server-net"
        );
    }
    assert!(compose.networks.contains_key("clock-server-net"));

    let mosquitto = compose.service("mosquitto");
    assert_eq!(mosquitto.image.as_deref(), Some("eclipse-mosquitto:2"));
    assert_eq!(mosquitto.ports, vec!["1883:1883"]);
    assert_eq!(
        mosquitto.volumes,
        vec!["./deploy/mosquitto/mosquitto.conf:/mosquitto/config/mosquitto.conf:ro"]
    );
    let (kind, test) = mosquitto.healthcheck();
    assert_eq!(kind, "CMD");
    assert_eq!(test[0], "mosquitto_pub");
    assert!(test.iter().any(|w| w == "__health"), "{test:?}");

    let server = compose.service("server");
    assert!(
        server.build.is_some(),
        "server is built from the Dockerfile"
    );
    assert_eq!(server.ports, vec!["8080:8080"]);
    assert_eq!(
        server.depends_on(),
        BTreeMap::from([("mosquitto".to_owned(), "service_healthy".to_owned())])
    );
    let expected_env: BTreeMap<String, String> = [
        ("HTTP_ADDR", ":8080"),
        ("REQUIRE_TLS", "false"),
        ("TRUST_PROXY_TLS", "false"),
        ("READINESS_REQUIRE_AUTH", "false"),
        ("API_AUTH_CREDENTIALS", "ops|dev-token|*"),
        ("ENABLED_SENDERS", "mqtt"),
        ("MQTT_BROKER_URL", "mqtt://mosquitto:1883"),
        ("ALLOW_INSECURE_MQTT", "true"),
        ("MQTT_TOPIC_PREFIX", "clocks/commands"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    assert_eq!(
        server.env(),
        expected_env,
        "the seed page's server environment table"
    );
    assert_eq!(
        server.healthcheck(),
        (
            "CMD".to_owned(),
            vec![
                "wget".into(),
                "-qO-".into(),
                "http://127.0.0.1:8080/health".into()
            ]
        )
    );

    // clockctl runs the project's own image (the one the server service builds).
    let clockctl = compose.service("clockctl");
    assert!(server.image.is_some(), "server names the image it builds");
    assert_eq!(clockctl.image, server.image);
    assert!(
        clockctl.build.is_none(),
        "clockctl reuses the server's image"
    );
    assert_eq!(clockctl.entrypoint(), vec!["/usr/local/bin/clockctl"]);
    assert_eq!(
        clockctl.command(),
        [
            "message",
            "--device",
            "clock-1",
            "--message",
            "compose-test",
            "--duration",
            "10"
        ]
    );
    assert_eq!(
        clockctl.env(),
        BTreeMap::from([
            (
                "CLOCK_SERVER_HOST".to_owned(),
                "http://server:8080".to_owned()
            ),
            ("CLOCK_SERVER_TOKEN".to_owned(), "dev-token".to_owned()),
            ("CLOCKCTL_ALLOW_INSECURE_HTTP".to_owned(), "true".to_owned()),
        ])
    );
    assert_eq!(
        clockctl.depends_on(),
        BTreeMap::from([
            ("server".to_owned(), "service_healthy".to_owned()),
            ("subscriber".to_owned(), "service_healthy".to_owned()),
        ])
    );

    let subscriber = compose.service("subscriber");
    assert_eq!(subscriber.image.as_deref(), Some("eclipse-mosquitto:2"));
    assert_eq!(
        subscriber.depends_on(),
        BTreeMap::from([("mosquitto".to_owned(), "service_healthy".to_owned())])
    );

    // `make compose-test` checks the subscriber's own exit code.
    let makefile = fs::read_to_string(repo().join("Makefile")).unwrap();
    assert!(makefile.contains("docker wait \"$$($(COMPOSE) ps -q subscriber)\""));
}

/// deploy/mosquitto/mosquitto.conf has exactly the seed page's directives.
#[test]
fn mosquitto_conf_matches_seed() {
    let conf = fs::read_to_string(repo().join("deploy/mosquitto/mosquitto.conf")).unwrap();
    let directives: Vec<&str> = conf
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert_eq!(
        directives,
        ["listener 1883", "allow_anonymous true", "persistence false"]
    );
}

/// `docker compose up` with local processes: clockctl's message must reach the subscriber.
#[test]
fn compose_stack_replay_delivers_message_to_subscriber() {
    let compose = load_compose();
    let mosquitto_svc = compose.service("mosquitto");
    let server_svc = compose.service("server");
    let subscriber_svc = compose.service("subscriber");
    let clockctl_svc = compose.service("clockctl");

    let tmp = tempfile::tempdir().unwrap();
    let mut stack = Stack { procs: Vec::new() };

    // --- mosquitto: the mounted config, with only the listener moved to a free loopback port.
    let conf_mount = mosquitto_svc
        .volumes
        .iter()
        .find_map(|v| v.strip_suffix(":/mosquitto/config/mosquitto.conf:ro"))
        .expect("mosquitto config mount");
    let conf = fs::read_to_string(repo().join(conf_mount)).unwrap();
    let broker_container_port: u16 = conf
        .lines()
        .find_map(|l| l.trim().strip_prefix("listener "))
        .expect("a listener directive")
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let broker_port = free_port();
    let local_conf: String = conf
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("listener ") {
                format!("listener {broker_port} 127.0.0.1\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    let conf_path = tmp.path().join("mosquitto.conf");
    fs::write(&conf_path, local_conf).unwrap();
    let mut cmd = Command::new(mosquitto_binary());
    cmd.arg("-c").arg(&conf_path);
    stack.procs.push(Proc::spawn("mosquitto", cmd, tmp.path()));

    // Its health check, port remapped: the broker must take an anonymous publish.
    let (kind, mut health) = mosquitto_svc.healthcheck();
    assert_eq!(kind, "CMD");
    let p = health
        .iter()
        .position(|w| w == "-p")
        .expect("healthcheck names -p")
        + 1;
    assert_eq!(health[p], broker_container_port.to_string());
    health[p] = broker_port.to_string();
    stack.wait_until(
        "mosquitto",
        "mosquitto healthy",
        Duration::from_secs(20),
        || {
            Command::new(&health[0])
                .args(&health[1..])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        },
    );

    // --- subscriber: its own command, with its broker address and marker file remapped.
    let mut sub_env = subscriber_svc.env();
    assert_eq!(
        sub_env.get("MQTT_HOST").map(String::as_str),
        Some("mosquitto"),
        "subscriber's MQTT_HOST must be the broker service"
    );
    assert_eq!(
        sub_env.get("MQTT_PORT").map(String::as_str),
        Some(broker_container_port.to_string().as_str()),
        "subscriber's MQTT_PORT must be the broker's listener"
    );
    // It must listen where the server publishes clockctl's command (SPEC 4.1 topic).
    let ctl_args = clockctl_svc.command();
    let device = ctl_args
        .iter()
        .position(|a| a == "--device")
        .map(|i| ctl_args[i + 1].clone())
        .expect("clockctl command names --device");
    let prefix = server_svc
        .env()
        .get("MQTT_TOPIC_PREFIX")
        .cloned()
        .unwrap_or_else(|| "clocks/commands".to_owned()); // SPEC 3 default
    assert_eq!(
        sub_env.get("TOPIC").map(String::as_str),
        Some(
            format!(
                "{}/{device}/display_message",
                prefix.trim().trim_matches('/')
            )
            .as_str()
        ),
        "subscriber's TOPIC vs the server's MQTT_TOPIC_PREFIX and clockctl's device"
    );
    let ready_file = tmp.path().join("subscribed");
    sub_env.insert("MQTT_HOST".into(), "127.0.0.1".into());
    sub_env.insert("MQTT_PORT".into(), broker_port.to_string());
    sub_env.insert("READY_FILE".into(), ready_file.display().to_string());
    let mut sub_cmd = subscriber_svc.entrypoint();
    sub_cmd.extend(subscriber_svc.command());
    assert!(!sub_cmd.is_empty(), "subscriber has a command");
    let mut cmd = Command::new(&sub_cmd[0]);
    cmd.args(&sub_cmd[1..])
        .env_clear()
        .env("PATH", host_path())
        .envs(&sub_env);
    stack.procs.push(Proc::spawn("subscriber", cmd, tmp.path()));

    // Its health check (what clockctl's depends_on waits for).
    let (kind, health) = subscriber_svc.healthcheck();
    stack.wait_until(
        "subscriber",
        "subscriber healthy",
        Duration::from_secs(20),
        || {
            let mut cmd = match kind.as_str() {
                "CMD-SHELL" => {
                    let mut c = Command::new("/bin/sh");
                    c.arg("-c").arg(&health[0]);
                    c
                }
                _ => {
                    let mut c = Command::new(&health[0]);
                    c.args(&health[1..]);
                    c
                }
            };
            cmd.env_clear()
                .env("PATH", host_path())
                .envs(&sub_env)
                .status()
                .is_ok_and(|s| s.success())
        },
    );

    // --- server: exactly the service's environment; broker and listen address remapped.
    let mut server_env = server_svc.env();
    let http_addr = server_env
        .get("HTTP_ADDR")
        .expect("server HTTP_ADDR")
        .clone();
    let http_container_port: u16 = http_addr.rsplit(':').next().unwrap().parse().unwrap();
    assert!(
        published_container_ports(server_svc).contains(&http_container_port),
        "HTTP_ADDR {http_addr} is not a published port of the server service"
    );
    let broker_url = server_env
        .get("MQTT_BROKER_URL")
        .expect("server MQTT_BROKER_URL")
        .clone();
    let (scheme, host, port) = split_url(&broker_url);
    assert_eq!(
        host, "mosquitto",
        "MQTT_BROKER_URL must name the broker service"
    );
    assert_eq!(
        port, broker_container_port,
        "MQTT_BROKER_URL port vs the listener"
    );
    server_env.insert(
        "MQTT_BROKER_URL".into(),
        format!("{scheme}://127.0.0.1:{broker_port}"),
    );
    let server_port = free_port();
    server_env.insert("HTTP_ADDR".into(), format!("127.0.0.1:{server_port}"));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_clock-server"));
    cmd.env_clear().envs(&server_env);
    stack.procs.push(Proc::spawn("server", cmd, tmp.path()));

    // Its health check: the URL the wget in the container fetches.
    let (_, health) = server_svc.healthcheck();
    let url = health
        .iter()
        .find(|w| w.starts_with("http://"))
        .expect("server healthcheck URL");
    let (_, _, health_port) = split_url(url);
    assert_eq!(
        health_port, http_container_port,
        "healthcheck port vs HTTP_ADDR"
    );
    let health_path = format!("/{}", url.splitn(4, '/').nth(3).unwrap_or(""));
    stack.wait_until("server", "server healthy", Duration::from_secs(30), || {
        http_get_status(server_port, &health_path) == Some(200)
    });

    // --- clockctl: the service's environment and command, server address remapped.
    let mut ctl_env = clockctl_svc.env();
    let host_value = ctl_env
        .get("CLOCK_SERVER_HOST")
        .expect("clockctl CLOCK_SERVER_HOST")
        .clone();
    let (scheme, host, port) = split_url(&host_value);
    assert_eq!(
        host, "server",
        "CLOCK_SERVER_HOST must name the server service"
    );
    assert_eq!(
        port, http_container_port,
        "CLOCK_SERVER_HOST port vs HTTP_ADDR"
    );
    // 0.0.0.0 reaches the loopback listener (Linux), and like `server` it is not a local
    // host to clockctl, so its token-over-plain-http rule applies as it does in the stack.
    ctl_env.insert(
        "CLOCK_SERVER_HOST".into(),
        format!("{scheme}://0.0.0.0:{server_port}"),
    );
    let entrypoint = clockctl_svc.entrypoint();
    assert_eq!(entrypoint, vec!["/usr/local/bin/clockctl"]);
    let args = clockctl_svc.command();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_clockctl"));
    cmd.args(&args).env_clear().envs(&ctl_env);
    stack.procs.push(Proc::spawn("clockctl", cmd, tmp.path()));
    let status = stack.get("clockctl").wait_for(Duration::from_secs(30));
    assert!(
        status.is_some_and(|s| s.success()),
        "clockctl {args:?} ended with {status:?}\n{}",
        stack.logs()
    );

    // --- the proof: the subscriber got the message and exits 0.
    let status = stack.get("subscriber").wait_for(Duration::from_secs(20));
    assert!(
        status.is_some_and(|s| s.success()),
        "subscriber ended with {status:?}\n{}",
        stack.logs()
    );
    let flag = |name: &str| {
        let i = args.iter().position(|a| a == name).unwrap();
        args[i + 1].clone()
    };
    let out = stack.get("subscriber").stdout();
    let payload = out
        .lines()
        .find_map(|l| l.strip_prefix("received: "))
        .unwrap_or_else(|| panic!("no payload in the subscriber's output\n{}", stack.logs()));
    let payload: serde_json::Value = serde_json::from_str(payload).unwrap();
    assert_eq!(payload["type"], "display_message", "{payload}");
    assert_eq!(
        payload["deviceId"].as_str(),
        Some(flag("--device").as_str())
    );
    assert_eq!(
        payload["message"].as_str(),
        Some(flag("--message").as_str())
    );
    assert_eq!(
        payload["durationSeconds"].as_u64().map(|d| d.to_string()),
        Some(flag("--duration"))
    );
}

// ---------------------------------------------------------------------------------------
// .dockerignore
// ---------------------------------------------------------------------------------------

/// One path segment against one pattern segment: `*` any run of characters, `?` one.
fn segment_matches(pattern: &[u8], name: &[u8]) -> bool {
    match (pattern.first(), name.first()) {
        (None, None) => true,
        (Some(b'*'), _) => {
            segment_matches(&pattern[1..], name)
                || (!name.is_empty() && segment_matches(pattern, &name[1..]))
        }
        (Some(b'?'), Some(_)) => segment_matches(&pattern[1..], &name[1..]),
        (Some(p), Some(n)) if p == n => segment_matches(&pattern[1..], &name[1..]),
        _ => false,
    }
}

/// Docker's .dockerignore matching: root-relative, `**` spans any number of directories.
fn path_matches(pattern: &[&str], path: &[&str]) -> bool {
    match (pattern.first(), path.first()) {
        (None, None) => true,
        (Some(&"**"), _) => {
            path_matches(&pattern[1..], path)
                || (!path.is_empty() && path_matches(pattern, &path[1..]))
        }
        (Some(p), Some(n)) => {
            segment_matches(p.as_bytes(), n.as_bytes()) && path_matches(&pattern[1..], &path[1..])
        }
        _ => false,
    }
}

/// Whether `.dockerignore` keeps `path` (repository-relative) out of the build context: a
/// pattern excludes a file when it matches the file or one of its parent directories.
fn docker_ignores(patterns: &[String], path: &str) -> bool {
    let segments: Vec<&str> = path.split('/').collect();
    patterns.iter().any(|pattern| {
        let pattern: Vec<&str> = pattern.trim_matches('/').split('/').collect();
        (1..=segments.len()).any(|n| path_matches(&pattern, &segments[..n]))
    })
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every file `cargo build` reads inside the image must be in the build context: the
/// manifest, the lock file, the sources and what they `include_str!`/`include_bytes!`.
#[test]
fn docker_context_keeps_every_file_the_build_reads() {
    let root = repo();
    let patterns: Vec<String> = fs::read_to_string(root.join(".dockerignore"))
        .unwrap()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect();
    assert!(
        patterns.iter().all(|p| !p.starts_with('!')),
        "exceptions (!) are not modelled here: extend docker_ignores"
    );
    // The matcher itself, on patterns of the kinds used above.
    assert!(docker_ignores(&["target/".into()], "target/debug/x"));
    assert!(!docker_ignores(&["target/".into()], "src/target.rs"));
    assert!(docker_ignores(&["**/*.pem".into()], "tests/data/ca.pem"));
    assert!(docker_ignores(&["*.pem".into()], "ca.pem"));
    assert!(!docker_ignores(&["*.pem".into()], "tests/ca.pem"));

    let mut needed = vec![root.join("Cargo.toml"), root.join("Cargo.lock")];
    if root.join("build.rs").exists() {
        needed.push(root.join("build.rs"));
    }
    let mut sources = Vec::new();
    rust_files(&root.join("src"), &mut sources);
    for file in &sources {
        let text = fs::read_to_string(file).unwrap();
        for macro_name in ["include_str!(\"", "include_bytes!(\""] {
            for (i, _) in text.match_indices(macro_name) {
                let rest = &text[i + macro_name.len()..];
                let target = &rest[..rest.find('"').unwrap()];
                needed.push(file.parent().unwrap().join(target));
            }
        }
    }
    needed.extend(sources);
    for path in needed {
        let path = fs::canonicalize(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let relative = path
            .strip_prefix(fs::canonicalize(&root).unwrap())
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            !docker_ignores(&patterns, &relative),
            ".dockerignore keeps {relative} out of the image build, but the build reads it"
        );
    }
}
