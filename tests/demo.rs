//! `clock-server demo` as a newcomer runs it: the real binary on free loopback ports, the
//! real `clockctl` sending each command, and the virtual clock's plain lines on stdout.
#![allow(clippy::unwrap_used)]
// Without the feature there is no embedded broker: only the last test below applies.
#![cfg_attr(not(feature = "demo"), allow(dead_code, unused_imports))]

mod common;

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use chrono::{SecondsFormat, Utc};
use common::free_port;

/// How long any one expected line may take.
const LINE_WITHIN: Duration = Duration::from_secs(15);

/// A running `clock-server demo`; killed on drop. Its stdout is read line by line.
struct DemoProcess {
    child: Child,
    http_port: u16,
    mqtt_port: u16,
    lines: mpsc::Receiver<String>,
    /// Every stdout line read so far (for failure messages and negative checks).
    seen: Vec<String>,
    /// Everything on stderr so far (the log lines); also shown with `TEST_LOG` set.
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
    dir: tempfile::TempDir,
}

impl DemoProcess {
    /// Starts the demo in an empty working directory and waits until both virtual clocks
    /// (the generic one, then the AWTRIX) announce that they are subscribed (printed after
    /// the API reported ready).
    fn start(extra: &[&str]) -> Self {
        let (http_port, mqtt_port) = (free_port(), free_port());
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_clock-server"))
            .arg("demo")
            .args(["--mqtt-addr", &format!("127.0.0.1:{mqtt_port}")])
            .args(["--http-addr", &format!("127.0.0.1:{http_port}")])
            .args(extra)
            .env_clear()
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let pipe = child.stderr.take().unwrap();
        let collected = std::sync::Arc::clone(&stderr);
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                if std::env::var_os("TEST_LOG").is_some() {
                    eprintln!("{line}");
                }
                let mut all = collected.lock().unwrap();
                all.push_str(&line);
                all.push('\n');
            }
        });
        let lines = common::process::stdout_lines(&mut child);
        let mut demo = Self {
            child,
            http_port,
            mqtt_port,
            lines,
            seen: Vec::new(),
            stderr,
            dir,
        };
        let watching = format!("on mqtt://127.0.0.1:{mqtt_port}");
        demo.wait_for_line(|l| l.starts_with("watching clocks/") && l.ends_with(&watching));
        demo.wait_for_line(|l| {
            l.starts_with("watching awtrix_demo/notify ") && l.ends_with(&watching)
        });
        demo.wait_for_line(|l| {
            l.starts_with("virtual LaMetric TIME lametric-1 on http://127.0.0.1:")
        });
        demo
    }

    /// The next stdout line that satisfies `want`, within [`LINE_WITHIN`].
    fn wait_for_line(&mut self, want: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + LINE_WITHIN;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if want(&line) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no matching line within {LINE_WITHIN:?}; stdout so far:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Runs the real `clockctl` against the demo's API with the demo token.
    fn clockctl(&self, args: &[&str]) -> String {
        let out = Command::new(env!("CARGO_BIN_EXE_clockctl"))
            .args(args)
            .env_clear()
            .env(
                "CLOCK_SERVER_BASE_URL",
                format!("http://127.0.0.1:{}", self.http_port),
            )
            .env("CLOCK_SERVER_TOKEN", "dev-token")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "clockctl {args:?} failed: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    /// Polls `clockctl --json devices` until `device` is `online` there, for at most
    /// `within`; then the `clockctl devices` table's row for it.
    fn wait_until_online(&self, device: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let json = self.clockctl(&["--json", "devices"]);
            let list: serde_json::Value = serde_json::from_str(&json).unwrap();
            let online = list["devices"]
                .as_array()
                .unwrap()
                .iter()
                .any(|d| d["deviceId"] == device && d["presence"] == "online");
            if online {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{device} is not online after {within:?}: {json}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let table = self.clockctl(&["devices"]);
        table
            .lines()
            .find(|l| l.split_whitespace().next() == Some(device))
            .unwrap_or_else(|| panic!("no row for {device}: {table}"))
            .to_owned()
    }

    /// Runs the real `clockctl` against the demo's API, with `token` if given: exit code,
    /// stdout, stderr.
    fn clockctl_run(&self, args: &[&str], token: Option<&str>) -> (Option<i32>, String, String) {
        let mut command = Command::new(env!("CARGO_BIN_EXE_clockctl"));
        command.args(args).env_clear().env(
            "CLOCK_SERVER_BASE_URL",
            format!("http://127.0.0.1:{}", self.http_port),
        );
        if let Some(token) = token {
            command.env("CLOCK_SERVER_TOKEN", token);
        }
        let out = command.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// SIGTERM, then the exit code (bounded wait).
    fn terminate(&mut self) -> Option<i32> {
        common::process::signal(self.child.id(), "TERM");
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "the demo did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for DemoProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `clock-server demo` with `args` and expects it to exit by itself: (code, stderr).
fn demo_exit(args: &[&str]) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_clock-server"))
        .arg("demo")
        .args(args)
        .env_clear()
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("clock-server demo {args:?} did not exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (status.code(), stderr)
}

fn is_empty_dir(dir: &Path) -> bool {
    std::fs::read_dir(dir).unwrap().next().is_none()
}

#[cfg(feature = "demo")]
#[test]
fn every_command_sent_with_clockctl_reaches_the_demos_virtual_clock() {
    let mut demo = DemoProcess::start(&[]);
    assert_eq!(demo.clockctl(&["ready"]).trim(), "ready");

    // The banner said how to use it, and loudly that it is for local use only.
    let banner = demo.seen.join("\n");
    assert!(banner.contains("FOR LOCAL USE ONLY"), "{banner}");
    assert!(banner.contains("dev-token"), "{banner}");
    assert!(
        banner.contains("CLOCK_SERVER_TOKEN=dev-token") && banner.contains("message --device"),
        "{banner}"
    );
    let watch = format!("watch --broker mqtt://127.0.0.1:{}", demo.mqtt_port);
    assert!(banner.contains(&watch), "{banner}");

    let answer = demo.clockctl(&[
        "message",
        "--device",
        "clock-1",
        "--message",
        "hello demo",
        "--duration",
        "7",
        "--json",
    ]);
    let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
    let command_id = answer["commandId"].as_str().unwrap().to_owned();
    let line = demo.wait_for_line(|l| l.starts_with("clock-1 display_message "));
    assert_eq!(
        line,
        format!(
            "clock-1 display_message message=\"hello demo\" durationSeconds=7 commandId={command_id}"
        )
    );

    let at = (Utc::now() + chrono::TimeDelta::hours(1)).to_rfc3339_opts(SecondsFormat::Secs, true);
    let out = demo.clockctl(&[
        "alarm", "--device", "clock-1", "--time", &at, "--label", "wake up",
    ]);
    assert_eq!(out.trim(), "alarm command dispatched");
    let line = demo.wait_for_line(|l| l.starts_with("clock-1 set_alarm "));
    assert!(
        line.starts_with(&format!(
            "clock-1 set_alarm alarmTime={at} label=\"wake up\" commandId="
        )),
        "{line}"
    );

    let out = demo.clockctl(&["brightness", "--device", "clock-2", "--level", "40"]);
    assert_eq!(out.trim(), "brightness command dispatched");
    let line = demo.wait_for_line(|l| l.starts_with("clock-2 set_brightness "));
    assert!(
        line.starts_with("clock-2 set_brightness level=40 commandId="),
        "{line}"
    );

    // Stops cleanly, and the broker kept everything in memory.
    assert_eq!(demo.terminate(), Some(0));
    assert!(
        is_empty_dir(demo.dir.path()),
        "the demo wrote files into its working directory"
    );
}

#[cfg(feature = "demo")]
#[test]
fn the_demos_clocks_are_online_in_the_device_list_within_seconds_of_start() {
    let demo = DemoProcess::start(&[]);
    let banner = demo.seen.join("\n");
    assert!(banner.contains("clock-1 says it is online"), "{banner}");
    // The generic clock shows every device id and announces clock-1 (a retained birth on
    // its status topic, SPEC 11.1): listed without a devices file, online.
    let row = demo.wait_until_online("clock-1", Duration::from_secs(5));
    let fields: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(fields[..3], ["clock-1", "generic", "online"], "{row}");
    assert!(row.contains("last seen 20"), "{row}");
    // The AWTRIX says so on stats/device and sends stats every 10 s.
    let row = demo.wait_until_online("awtrix-1", Duration::from_secs(15));
    let fields: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(fields[..3], ["awtrix-1", "awtrix3", "online"], "{row}");
}

#[cfg(feature = "demo")]
#[test]
fn the_demos_awtrix_clock_shows_a_message_a_brightness_and_an_alarm_going_off() {
    let mut demo = DemoProcess::start(&[]);
    let banner = demo.seen.join("\n");
    assert!(
        banner.contains(
            "awtrix-1, a virtual AWTRIX 3 clock (profile awtrix3, MQTT prefix awtrix_demo)"
        ),
        "{banner}"
    );
    assert!(
        banner.contains("alarm --device awtrix-1 --label \"wake up\" --time $(date -u -d '+1 min'"),
        "{banner}"
    );

    demo.clockctl(&[
        "message",
        "--device",
        "awtrix-1",
        "--message",
        "tea is ready",
    ]);
    let line = demo.wait_for_line(|l| l.starts_with("awtrix-1 "));
    assert_eq!(line, "awtrix-1 notify text=\"tea is ready\" duration=10");
    demo.clockctl(&["brightness", "--device", "awtrix-1", "--level", "40"]);
    let line = demo.wait_for_line(|l| l.starts_with("awtrix-1 "));
    assert_eq!(line, "awtrix-1 power power=true");
    let line = demo.wait_for_line(|l| l.starts_with("awtrix-1 "));
    assert_eq!(line, "awtrix-1 settings ABRI=false BRI=102");

    // An alarm a few seconds ahead is held by the server ("scheduled"); one whose time has
    // come goes off at once (SPEC 8.1): a held notification with the demo's melody.
    let soon = Utc::now() + chrono::TimeDelta::seconds(3);
    let soon_text = soon.to_rfc3339_opts(SecondsFormat::Secs, true);
    let answer = demo.clockctl(&[
        "--json", "alarm", "--device", "awtrix-1", "--time", &soon_text, "--label", "soon",
    ]);
    let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(answer["status"], "scheduled", "{answer}");
    let now = Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true);
    demo.clockctl(&[
        "alarm", "--device", "awtrix-1", "--time", &now, "--label", "wake up",
    ]);
    let melody = "alarm:d=8,o=5,b=140:c6,p,c6,p,c6";
    let line = demo.wait_for_line(|l| l.starts_with("awtrix-1 "));
    assert_eq!(
        line,
        format!(
            "awtrix-1 alarm text=\"wake up\" hold=true wakeup=true loopSound=true rtttl=\"{melody}\""
        )
    );
    // Then the held one goes off, not before its time (which has whole seconds).
    let line = demo.wait_for_line(|l| l.starts_with("awtrix-1 "));
    let at = chrono::DateTime::parse_from_rfc3339(&soon_text).unwrap();
    assert!(Utc::now() >= at, "went off before {soon_text}");
    assert_eq!(
        line,
        format!(
            "awtrix-1 alarm text=\"soon\" hold=true wakeup=true loopSound=true rtttl=\"{melody}\""
        )
    );

    // One an hour ahead can still be cancelled.
    let later =
        (Utc::now() + chrono::TimeDelta::hours(1)).to_rfc3339_opts(SecondsFormat::Secs, true);
    let answer = demo.clockctl(&["--json", "alarm", "--device", "awtrix-1", "--time", &later]);
    let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
    let out = demo.clockctl(&["cancel", answer["commandId"].as_str().unwrap()]);
    assert!(out.contains("cancelled"), "{out}");
    // Nothing went to the generic topics for awtrix-1.
    assert!(
        !demo
            .seen
            .iter()
            .any(|l| l.starts_with("awtrix-1 set_") || l.starts_with("awtrix-1 display_")),
        "{:?}",
        demo.seen
    );
}

#[cfg(feature = "demo")]
#[test]
fn the_demos_lametric_clock_is_online_shows_a_message_and_its_answer_ends_the_command() {
    let mut demo = DemoProcess::start(&[]);
    let banner = demo.seen.join("\n");
    assert!(
        banner.contains("lametric-1, a virtual LaMetric TIME (profile lametric"),
        "{banner}"
    );
    assert!(
        banner.contains("message --device lametric-1 --message hello --wait"),
        "{banner}"
    );
    // Presence by polling its GET /api/v2/device, at start.
    let row = demo.wait_until_online("lametric-1", Duration::from_secs(10));
    let fields: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(fields[..3], ["lametric-1", "lametric", "online"], "{row}");

    let answer = demo.clockctl(&[
        "--json",
        "message",
        "--device",
        "lametric-1",
        "--message",
        "hello",
        "--duration",
        "1",
    ]);
    let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(answer["status"], "succeeded", "{answer}");
    let line = demo.wait_for_line(|l| l.starts_with("lametric-1 "));
    assert_eq!(
        line,
        "lametric-1 notification id=1 priority=\"info\" icon_type=\"none\" text=\"hello\" cycles=0"
    );
    let line = demo.wait_for_line(|l| l.starts_with("lametric-1 "));
    assert_eq!(line, "lametric-1 dismiss id=1");
    // Nothing went to the generic clock for lametric-1.
    assert!(
        !demo
            .seen
            .iter()
            .any(|l| l.starts_with("lametric-1 display_")),
        "{:?}",
        demo.seen
    );
}

#[cfg(feature = "demo")]
#[test]
fn a_newcomers_mistakes_against_the_demo_are_answered_with_what_to_do() {
    let mut demo = DemoProcess::start(&[]);
    // No warning at start-up that a newcomer could act on but the intended one. The log
    // reaches us through a pipe read by another thread: wait (bounded) for the intended one.
    let deadline = Instant::now() + Duration::from_secs(10);
    let logs = loop {
        let logs = demo.stderr.lock().unwrap().clone();
        if logs.contains("demo mode: plain HTTP") || Instant::now() > deadline {
            break logs;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let warnings: Vec<&str> = logs.lines().filter(|l| l.contains("WARN")).collect();
    assert!(
        warnings.len() == 1 && warnings[0].contains("demo mode: plain HTTP"),
        "{logs}"
    );

    // No token: the 401 says which variable is missing.
    let (code, _, stderr) = demo.clockctl_run(&["ready"], None);
    assert_eq!(
        code,
        Some(0),
        "the demo's readiness needs no token: {stderr}"
    );
    let (code, _, stderr) =
        demo.clockctl_run(&["message", "--device", "clock-1", "--message", "hi"], None);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("status=401") && stderr.contains("CLOCK_SERVER_TOKEN is not set"),
        "{stderr}"
    );

    // status and cancel show the server's status and error text (SPEC 5), with the hint.
    let (code, _, stderr) = demo.clockctl_run(&["status", "no-such-command"], Some("dev-token"));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(r#"status=404 error="not found""#)
            && stderr.contains("no command no-such-command"),
        "{stderr}"
    );
    let (code, answer, stderr) = demo.clockctl_run(
        &[
            "--json",
            "message",
            "--device",
            "clock-1",
            "--message",
            "hi",
        ],
        Some("dev-token"),
    );
    assert_eq!(code, Some(0), "{stderr}");
    let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
    let id = answer["commandId"].as_str().unwrap();
    let (code, _, stderr) = demo.clockctl_run(&["cancel", id], Some("dev-token"));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("status=409 error=") && stderr.contains("can no longer be cancelled"),
        "{stderr}"
    );

    // And once the demo is gone: is the server running?
    assert_eq!(demo.terminate(), Some(0));
    let (code, _, stderr) = demo.clockctl_run(&["ready"], Some("dev-token"));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("is the server running? (`cargo run -- demo`"),
        "{stderr}"
    );
}

#[cfg(feature = "demo")]
#[test]
fn the_demos_clock_shows_only_the_devices_it_was_given() {
    let mut demo = DemoProcess::start(&["--devices", "kitchen,hall"]);
    assert!(
        demo.seen
            .iter()
            .any(|l| l.starts_with("watching clocks/commands/kitchen/+ clocks/commands/hall/+ ")),
        "{:?}",
        demo.seen
    );
    demo.clockctl(&["brightness", "--device", "clock-1", "--level", "10"]);
    demo.clockctl(&["brightness", "--device", "hall", "--level", "20"]);
    let line = demo.wait_for_line(|l| l.contains(" set_brightness "));
    assert!(line.starts_with("hall set_brightness level=20 "), "{line}");
    // The devices it was given say they are online; clock-1, not watched, does not.
    for device in ["kitchen", "hall"] {
        demo.wait_until_online(device, Duration::from_secs(5));
    }
    let json = demo.clockctl(&["--json", "device", "clock-1"]);
    let clock: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(clock["presence"], "unknown", "{json}");
}

#[test]
fn the_demo_refuses_to_listen_beyond_loopback() {
    for (args, flag) in [
        (
            &["--http-addr", "0.0.0.0:0", "--mqtt-addr", "127.0.0.1:0"][..],
            "--http-addr",
        ),
        (
            &["--http-addr", "127.0.0.1:0", "--mqtt-addr", "0.0.0.0:0"],
            "--mqtt-addr",
        ),
        (&["--http-addr", "[::]:0"], "--http-addr"),
    ] {
        let (code, stderr) = demo_exit(args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("is not a loopback address"), "{stderr}");
        assert!(stderr.contains(flag), "{stderr}");
    }
}

#[cfg(feature = "demo")]
#[test]
fn the_demo_says_which_port_is_taken() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let (code, stderr) = demo_exit(&[
        "--mqtt-addr",
        &format!("127.0.0.1:{port}"),
        "--http-addr",
        "127.0.0.1:0",
    ]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("127.0.0.1:{port}")) && stderr.contains("--mqtt-addr"),
        "{stderr}"
    );
}

#[test]
fn without_arguments_the_binary_is_still_the_server_configured_by_the_environment() {
    // No credential configured: the server (not the demo) refuses to start, as before.
    let out = Command::new(env!("CARGO_BIN_EXE_clock-server"))
        .env_clear()
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("API_AUTH_CREDENTIALS"), "{stderr}");
    let help = Command::new(env!("CARGO_BIN_EXE_clock-server"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(help.status.success());
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("demo"), "{help}");
    // No subcommand is needed to run the server, and the usage line says so.
    assert!(help.contains("Usage: clock-server [COMMAND]"), "{help}");
}

#[cfg(not(feature = "demo"))]
#[test]
fn a_build_without_the_demo_feature_says_how_to_get_it() {
    let (code, stderr) = demo_exit(&["--http-addr", "127.0.0.1:0", "--mqtt-addr", "127.0.0.1:0"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("without the `demo` feature"), "{stderr}");
}
