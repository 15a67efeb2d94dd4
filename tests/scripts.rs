//! The shell scripts that start processes of their own (`scripts/bench*.sh`,
//! `scripts/fuzz-api.sh`) share one library, `scripts/bench/lib.sh`: its clean-up, ports
//! and variables are written once, and work (run here in a real bash, with real processes).
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The scripts that must source the library rather than restate it.
const USERS: [&str; 6] = [
    "scripts/bench.sh",
    "scripts/bench-attacks.sh",
    "scripts/bench-store.sh",
    "scripts/bench-alarms.sh",
    "scripts/bench-presence.sh",
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
