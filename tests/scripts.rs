//! The shell scripts that start processes of their own (`scripts/bench*.sh`,
//! `scripts/fuzz-api.sh`) share one library, `scripts/bench/lib.sh`: its clean-up, ports
//! and variables are written once, and work (run here in a real bash, with real processes).
//! The event-stream client of `scripts/bench-events.sh` is run against a real server.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::app::{JsonBody, TestApp, env_with, start};
use common::mosquitto::Mosquitto;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The scripts that must source the library rather than restate it.
const USERS: [&str; 7] = [
    "scripts/bench.sh",
    "scripts/bench-attacks.sh",
    "scripts/bench-store.sh",
    "scripts/bench-alarms.sh",
    "scripts/bench-presence.sh",
    "scripts/bench-events.sh",
    "scripts/fuzz-api.sh",
];

fn read(rel: &str) -> String {
    std::fs::read_to_string(Path::new(ROOT).join(rel)).unwrap()
}

#[test]
fn the_scripts_source_one_library_instead_of_restating_it() {
    for script in USERS {
        let text = read(script);
        assert!(
            text.contains(". scripts/bench/lib.sh") || text.contains(". scripts/bench/server.sh"),
            "{script} does not source scripts/bench/lib.sh"
        );
        for function in [
            "die()",
            "cleanup()",
            "free_port()",
            "wait_port()",
            "track()",
        ] {
            assert!(
                !text.lines().any(|l| l.trim_start().starts_with(function)),
                "{script} defines {function} again: use the one in scripts/bench/lib.sh"
            );
        }
        for variable in [
            "CARGO=",
            "CARGO_FLAGS=",
            "TARGET_DIR=",
            "MOSQUITTO=",
            "RUNS=",
            "DURATION=",
        ] {
            assert!(
                !text.lines().any(|l| l.starts_with(variable)),
                "{script} sets {variable} again: scripts/bench/lib.sh does"
            );
        }
    }
    let server = read("scripts/bench/server.sh");
    assert!(server.contains(r#". "$(dirname "${BASH_SOURCE[0]}")/lib.sh""#));
}

#[test]
fn every_scripts_server_takes_the_shared_settings_from_the_library() {
    // The scripts that start a server themselves; the others call server.sh's start_server.
    for script in [
        "scripts/bench.sh",
        "scripts/fuzz-api.sh",
        "scripts/bench/server.sh",
    ] {
        assert!(
            read(script).contains("\"${SERVER_VARS[@]}\""),
            "{script} does not start its server with server_vars from scripts/bench/lib.sh"
        );
    }
    let lib = read("scripts/bench/lib.sh");
    for script in USERS.iter().chain(&["scripts/bench/server.sh"]) {
        let text = read(script);
        for setting in [
            "HTTP_ADDR=",
            "REQUIRE_TLS=",
            "API_AUTH_CREDENTIALS=",
            "ENABLED_SENDERS=",
            "MQTT_BROKER_URL=",
            "ALLOW_INSECURE_MQTT=",
        ] {
            assert!(lib.contains(setting), "scripts/bench/lib.sh lost {setting}");
            assert!(
                !text.contains(setting),
                "{script} sets {setting} itself: server_vars in scripts/bench/lib.sh does"
            );
        }
    }
}

/// Runs `body` in bash after sourcing the library, from the repository root.
fn bash(body: &str, env: &[(&str, &str)]) -> Output {
    let script = format!("set -euo pipefail\nSCRIPT_NAME=libtest\n. scripts/bench/lib.sh\n{body}");
    Command::new("bash")
        .arg("-c")
        .arg(script)
        .current_dir(ROOT)
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

fn alive(pid: &str) -> bool {
    Path::new("/proc").join(pid).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

/// Polls `done` for up to 5 s.
fn within_5s(mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    done()
}

#[test]
fn a_script_that_dies_leaves_no_process_and_no_temp_dir_behind() {
    // A tracked process, a temp dir with a file, then a failure.
    let out = bash(
        "on_failure() { echo \"on_failure saw $(cat \"$TMP/log\")\" >&2; }\n\
         scratch\necho hello >\"$TMP/log\"\nsleep 300 &\ntrack $!\necho \"$TMP $!\"\n\
         die \"something broke\"",
        &[],
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    let (tmp, pid) = stdout.trim().split_once(' ').unwrap();
    assert!(stderr.contains("libtest: something broke"), "{stderr}");
    assert!(stderr.contains("on_failure saw hello"), "{stderr}");
    assert!(!Path::new(tmp).exists(), "{tmp} was left behind");
    assert!(within_5s(|| !alive(pid)), "process {pid} was left running");

    // BENCH_KEEP=1 keeps the logs, and says where; a success runs no on_failure.
    let out = bash(
        "on_failure() { echo on_failure >&2; }\nscratch\necho \"$TMP\"",
        &[("BENCH_KEEP", "1")],
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let tmp = stdout.lines().next().unwrap();
    assert!(
        stdout.contains(&format!("libtest: logs kept in {tmp}")),
        "{stdout}"
    );
    assert!(
        !String::from_utf8(out.stderr)
            .unwrap()
            .contains("on_failure")
    );
    assert!(Path::new(tmp).is_dir());
    std::fs::remove_dir_all(tmp).unwrap();
}

#[test]
fn free_port_gives_a_port_nothing_holds_and_wait_port_sees_a_listener() {
    let out = bash("free_port", &[]);
    assert!(out.status.success(), "{out:?}");
    let port: u16 = String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_ne!(port, 1883);
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let out = bash(&format!("wait_port {port}"), &[]);
    assert!(out.status.success(), "{out:?}");
    drop(listener);
}

#[test]
fn make_bench_runs_every_bench_script() {
    let makefile = read("Makefile");
    let recipe: Vec<&str> = makefile
        .lines()
        .skip_while(|l| !l.starts_with("bench:"))
        .skip(1)
        .take_while(|l| l.starts_with('\t'))
        .map(str::trim)
        .collect();
    for script in USERS.iter().filter(|s| s.starts_with("scripts/bench")) {
        assert!(
            recipe.contains(&format!("./{script}").as_str()),
            "make bench does not run {script}: {recipe:?}"
        );
    }
}

/// An example's binary, built by `cargo test` beside the test binaries (target/<profile>/examples).
fn example(name: &str) -> std::path::PathBuf {
    let deps = std::env::current_exe().unwrap();
    let path = deps
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join(name);
    assert!(
        path.exists(),
        "{} is missing: `cargo test` builds the examples (`cargo test --test scripts` alone does not: run `cargo build --example {name}` first)",
        path.display()
    );
    path
}

/// `examples/event_streams.rs` (the bench's stream client) holding `streams` streams in `mode` over `devices`
/// devices of `app` (acknowledging a sample through `ack_broker`, if given): its stdout
/// lines (read by a thread), the process, the detail file.
struct StreamClient {
    child: std::process::Child,
    lines: mpsc::Receiver<String>,
    detail: tempfile::NamedTempFile,
}

impl StreamClient {
    fn start(
        app: &TestApp,
        streams: u32,
        mode: &str,
        devices: u32,
        ack_broker: Option<&Mosquitto>,
    ) -> Self {
        let detail = tempfile::NamedTempFile::new().unwrap();
        let mut command = Command::new(example("event_streams"));
        if let Some(broker) = ack_broker {
            command.env("BENCH_ACK_BROKER", format!("127.0.0.1:{}", broker.port));
        }
        let mut child = command
            .arg(app.url(""))
            .arg("ops-secret-token-1")
            .arg(streams.to_string())
            .arg(mode)
            .arg(devices.to_string())
            .env("BENCH_STREAMS_DETAIL", detail.path())
            .current_dir(ROOT)
            .stdout(Stdio::piped())
            .stderr(common::test_log())
            .spawn()
            .unwrap();
        let lines = common::process::stdout_lines(&mut child);
        Self {
            child,
            lines,
            detail,
        }
    }

    /// The next stdout line, within 20 s.
    fn line(&self) -> String {
        self.lines
            .recv_timeout(Duration::from_secs(20))
            .expect("a line from event_streams within 20 s")
    }

    /// Asks for the summary (SIGUSR1): the `STREAMS` line and the per-stream lines.
    fn finish(mut self) -> (String, Vec<String>) {
        common::process::signal(self.child.id(), "USR1");
        let summary = loop {
            let line = self.line();
            if line.starts_with("STREAMS ") {
                break line;
            }
            // An acknowledgement written before the signal.
            assert!(line.starts_with("ack "), "{line}");
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "event_streams did not exit");
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(status.success(), "{status:?}");
        let detail = std::fs::read_to_string(self.detail.path()).unwrap();
        (summary, detail.lines().map(str::to_owned).collect())
    }
}

impl Drop for StreamClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn post_message(app: &TestApp, device: &str) {
    let res = app
        .client
        .post(app.url("/commands/messages"))
        .bearer_auth("ops-secret-token-1")
        .json_body(&serde_json::json!({"deviceId": device, "message": "hi", "durationSeconds": 10}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bench_stream_client_counts_each_streams_events_and_times_acknowledgements() {
    let broker = Mosquitto::start_plain();
    let url = broker.url();
    let app = start(
        &env_with(&[
            ("ENABLED_SENDERS", "mqtt"),
            ("MQTT_BROKER_URL", url.as_str()),
            ("ALLOW_INSECURE_MQTT", "true"),
            ("READINESS_REQUIRE_AUTH", "false"),
        ]),
        None,
    )
    .await
    .unwrap();
    common::eventually(Duration::from_secs(15), "the broker connection", || async {
        (app.get("/ready", None).await.status() == 200).then_some(())
    })
    .await;
    // Four streams over two devices: streams 0 and 2 follow bench-0, 1 and 3 bench-1; this
    // client also acknowledges, as bench-0 would, what stream 0 sees sent.
    let devices = StreamClient::start(&app, 4, "device", 2, Some(&broker));
    let all = StreamClient::start(&app, 2, "all", 1, None);
    for client in [&devices, &all] {
        let ready = tokio::task::block_in_place(|| client.line());
        assert!(ready.starts_with("ready opened="), "{ready}");
    }
    for device in [
        "bench-0", "bench-0", "bench-0", "bench-1", "bench-1", "bench-7",
    ] {
        post_message(&app, device).await;
    }
    // At least one acknowledgement is out before the summary is asked for (bounded: 20 s).
    let ack = tokio::task::block_in_place(|| devices.line());
    assert!(ack.starts_with("ack "), "{ack}");
    // Bounded: each stream's count only grows; the summary waits until they are quiet.
    let (summary, detail) = tokio::task::block_in_place(|| devices.finish());
    let field = |name: &str| -> String {
        summary
            .split_whitespace()
            .find_map(|f| f.strip_prefix(&format!("{name}=")).map(str::to_owned))
            .unwrap_or_else(|| panic!("no {name} in {summary}"))
    };
    assert_eq!(
        [
            "opened",
            "overflowed",
            "ended",
            "sent",
            "min_sent",
            "max_sent"
        ]
        .map(field),
        ["4", "0", "0", "10", "2", "3"],
        "{summary}"
    );
    // Each acknowledgement's `succeeded` reaches both streams that follow bench-0, timed.
    let acks: usize = field("acks").parse().unwrap();
    assert!((1..=3).contains(&acks), "{summary}");
    assert_eq!(field("ack_events"), (2 * acks).to_string(), "{summary}");
    let p50: f64 = field("ack_p50_ms").parse().unwrap();
    let p99: f64 = field("ack_p99_ms").parse().unwrap();
    assert!(0.0 < p50 && p50 <= p99 && p99 < 20_000.0, "{summary}");
    let per_stream: Vec<(String, String)> = detail
        .iter()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[1].to_owned(), f[2].to_owned())
        })
        .collect();
    let want: Vec<(String, String)> = [("bench-0", "3"), ("bench-1", "2")]
        .repeat(2)
        .into_iter()
        .map(|(d, n)| (d.to_owned(), n.to_owned()))
        .collect();
    assert_eq!(per_stream, want, "{detail:?}");

    let (summary, _) = tokio::task::block_in_place(|| all.finish());
    assert!(
        summary.starts_with("STREAMS opened=2 overflowed=0 ended=0 ")
            && summary.ends_with(" sent=12 min_sent=6 max_sent=6"),
        "{summary}"
    );
    // The acknowledged commands turned `succeeded` on these streams too.
    let events: usize = summary
        .split_whitespace()
        .find_map(|f| f.strip_prefix("events="))
        .unwrap()
        .parse()
        .unwrap();
    assert!(events >= 12 + 2 * acks, "{summary}");
}
