#![allow(clippy::unwrap_used)]
//! What the Makefile's container targets do: each target runs for real against a fake
//! `docker` (and `hadolint`) that records every invocation, and the tests check the
//! recorded commands — which program, which subcommand, which flags and values, in which
//! order where order matters — with the seed page's defaults and with variables overridden
//! on the command line and in the environment. Spacing and the order of independent flags
//! are free to change.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Variables the Makefile reads with `?=`: removed from the environment so that a value
/// set on the machine (CI, a developer's shell) cannot change what runs.
const MAKE_VARS: &[&str] = &[
    "DOCKER",
    "RUST_IMAGE",
    "RUNTIME_IMAGE",
    "IMAGE_NAME",
    "IMAGE_TAG",
    "REGISTRY",
    "HOST_PORT",
    "CONTAINER_PORT",
    "DOCKER_RUN_ARGS",
    "PLATFORMS",
    "COMPOSE",
    "HADOLINT",
    "KUBECTL",
    "KUBERNETES_REGISTRY",
    "OVERLAY",
    "CARGO",
    "DOCKER_BUILDKIT",
    "COMPOSE_DOCKER_CLI_BUILD",
    // Set when the tests run under `make test`; they would leak into this make.
    "MAKEFLAGS",
    "MFLAGS",
    "MAKELEVEL",
    "MAKEOVERRIDES",
];

/// Records its name, `DOCKER_BUILDKIT` and its arguments, one tab-separated line per call.
/// `docker compose run` exits with `FAKE_RUN_EXIT`, `docker wait` prints `FAKE_WAIT_EXIT`
/// (the Makefile calls `docker wait` by name, so the fakes are also first on `PATH`),
/// `docker stop` exits with `FAKE_STOP_EXIT`.
const FAKE: &str = r#"#!/bin/sh
{
  printf '%s\t%s' "$(basename "$0")" "${DOCKER_BUILDKIT:-}"
  for a in "$@"; do printf '\t%s' "$a"; done
  printf '\n'
} >> "$FAKE_LOG"
case "$1 $2" in
  "compose run") exit "${FAKE_RUN_EXIT:-0}" ;;
  "compose ps") echo subscriber-id ;;
esac
case "$1" in
  wait) echo "${FAKE_WAIT_EXIT:-0}" ;;
  stop) exit "${FAKE_STOP_EXIT:-0}" ;;
esac
exit 0
"#;

/// One recorded invocation.
#[derive(Debug, Clone)]
struct Call {
    program: String,
    buildkit: String,
    args: Vec<String>,
}

impl Call {
    /// Whether the arguments start with `words` (the subcommand).
    fn is(&self, program: &str, words: &[&str]) -> bool {
        self.program == program
            && self.args.len() >= words.len()
            && self.args.iter().zip(words).all(|(a, w)| a == w)
    }

    /// Every value given to `flag` (as `flag value`).
    fn values(&self, flag: &str) -> Vec<&str> {
        self.args
            .windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1].as_str())
            .collect()
    }

    fn has(&self, flag: &str) -> bool {
        self.args.iter().any(|a| a == flag)
    }

    fn last(&self) -> &str {
        self.args.last().map_or("", String::as_str)
    }
}

struct Run {
    output: Output,
    calls: Vec<Call>,
}

/// A directory holding the fake `docker`, `hadolint` and `kubectl`.
fn fakes() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    for name in ["docker", "hadolint", "kubectl"] {
        let path = dir.path().join(name);
        std::fs::write(&path, FAKE).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
    }
    let log = dir.path().join("calls.log");
    (dir, log)
}

/// Runs `make TARGET ARGS...` in the repository root with the fakes, `env` added to a clean
/// set of Makefile variables.
fn make_env(target: &str, args: &[&str], env: &[(&str, &str)]) -> Run {
    let (dir, log) = fakes();
    let docker = dir.path().join("docker");
    let mut cmd = Command::new("make");
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["--no-print-directory", "-s", target])
        .arg(format!("DOCKER={}", docker.display()))
        .arg(format!(
            "HADOLINT={}",
            dir.path().join("hadolint").display()
        ))
        .arg(format!("KUBECTL={}", dir.path().join("kubectl").display()))
        .args(args);
    for var in MAKE_VARS {
        cmd.env_remove(var);
    }
    // First on PATH as well, so that nothing here can reach a real docker.
    let path = std::env::var_os("PATH").unwrap_or_default();
    let path = std::env::join_paths(
        std::iter::once(dir.path().to_path_buf()).chain(std::env::split_paths(&path)),
    )
    .unwrap();
    cmd.env("FAKE_LOG", &log)
        .env("PATH", path)
        .envs(env.iter().copied());
    let output = cmd.output().expect("run make (is GNU make installed?)");
    Run {
        output,
        calls: calls(&log),
    }
}

fn calls(log: &Path) -> Vec<Call> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(|line| {
            let mut fields = line.split('\t').map(str::to_owned);
            Call {
                program: fields.next().unwrap(),
                buildkit: fields.next().unwrap(),
                args: fields.collect(),
            }
        })
        .collect()
}

/// Runs a target that must succeed; returns what it ran.
fn make(target: &str, args: &[&str]) -> Vec<Call> {
    make_ok(make_env(target, args, &[]))
}

fn make_ok(run: Run) -> Vec<Call> {
    assert!(
        run.output.status.success(),
        "make failed: {}",
        String::from_utf8_lossy(&run.output.stderr)
    );
    run.calls
}

/// A `docker build` of the repository with these images and this tag, with BuildKit on.
fn assert_build(call: &Call, rust_image: &str, runtime_image: &str, tag: &str) {
    assert!(call.is("docker", &["build"]), "{call:?}");
    let mut build_args = call.values("--build-arg");
    build_args.sort_unstable();
    assert_eq!(
        build_args,
        [
            format!("RUNTIME_IMAGE={runtime_image}"),
            format!("RUST_IMAGE={rust_image}")
        ],
        "{call:?}"
    );
    assert_eq!(call.values("-t"), [tag], "{call:?}");
    assert_eq!(call.last(), ".", "{call:?}");
    assert_eq!(call.buildkit, "1", "BuildKit must be on: {call:?}");
}

const RUST_IMAGE: &str = "rust:1.95-alpine";
const RUNTIME_IMAGE: &str = "alpine:3.21";

#[test]
fn docker_build_defaults() {
    let calls = make("docker-build", &[]);
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_build(&calls[0], RUST_IMAGE, RUNTIME_IMAGE, "clock-server:0.0.1");
}

#[test]
fn docker_build_overridden_images_and_tag() {
    let calls = make(
        "docker-build",
        &[
            "RUST_IMAGE=mirror.example/rust:1.96-alpine",
            "RUNTIME_IMAGE=alpine:3.22",
            "IMAGE_NAME=clocks",
            "IMAGE_TAG=1.2.3",
        ],
    );
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_build(
        &calls[0],
        "mirror.example/rust:1.96-alpine",
        "alpine:3.22",
        "clocks:1.2.3",
    );
}

#[test]
fn docker_build_reads_variables_from_the_environment() {
    let calls = make_ok(make_env("docker-build", &[], &[("IMAGE_TAG", "env-tag")]));
    assert_build(&calls[0], RUST_IMAGE, RUNTIME_IMAGE, "clock-server:env-tag");
}

/// A detached, self-removing `docker run` of `image` named clock-server publishing `ports`.
fn assert_run(call: &Call, ports: &str, image: &str) {
    assert!(call.is("docker", &["run"]), "{call:?}");
    assert!(call.has("--rm") && call.has("-d"), "{call:?}");
    assert_eq!(call.values("--name"), ["clock-server"], "{call:?}");
    assert_eq!(call.values("-p"), [ports], "{call:?}");
    assert_eq!(call.last(), image, "{call:?}");
}

#[test]
fn docker_run_builds_then_runs_detached() {
    let calls = make("docker-run", &[]);
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_build(&calls[0], RUST_IMAGE, RUNTIME_IMAGE, "clock-server:0.0.1");
    assert_run(&calls[1], "8080:8080", "clock-server:0.0.1");
}

#[test]
fn docker_run_overridden_ports_and_options() {
    let calls = make(
        "docker-run",
        &[
            "HOST_PORT=9090",
            "CONTAINER_PORT=8081",
            "IMAGE_TAG=2.0.0",
            "DOCKER_RUN_ARGS=--env-file clock.env  -e REQUIRE_TLS=false",
        ],
    );
    assert_build(&calls[0], RUST_IMAGE, RUNTIME_IMAGE, "clock-server:2.0.0");
    let run = &calls[1];
    assert_run(run, "9090:8081", "clock-server:2.0.0");
    assert_eq!(run.values("--env-file"), ["clock.env"], "{run:?}");
    assert_eq!(run.values("-e"), ["REQUIRE_TLS=false"], "{run:?}");
}

/// Build, then tag and push `<registry>/clock-server:<tag>` and `:latest`.
fn assert_push(calls: &[Call], registry: &str, tag: &str) {
    assert_build(
        &calls[0],
        RUST_IMAGE,
        RUNTIME_IMAGE,
        &format!("clock-server:{tag}"),
    );
    let local = format!("clock-server:{tag}");
    let remote = |t: &str| format!("{registry}/clock-server:{t}");
    let at = |words: &[&str]| calls.iter().position(|c| c.args == words);
    for t in [tag, "latest"] {
        let remote = remote(t);
        let tagged = at(&["tag", &local, &remote]);
        let pushed = at(&["push", &remote]);
        assert!(tagged.is_some(), "no tag {remote}: {calls:?}");
        assert!(pushed.is_some(), "no push of {remote}: {calls:?}");
        assert!(tagged < pushed, "{remote} pushed before it was tagged");
    }
    assert_eq!(calls.len(), 5, "{calls:?}");
}

#[test]
fn docker_push_tags_version_and_latest() {
    assert_push(&make("docker-push", &[]), "192.168.2.201:32000", "0.0.1");
}

#[test]
fn docker_push_overridden_registry_and_tag() {
    let calls = make(
        "docker-push",
        &["REGISTRY=reg.example:5000", "IMAGE_TAG=1.2.3"],
    );
    assert_push(&calls, "reg.example:5000", "1.2.3");
}

#[test]
fn docker_stop_clean_login() {
    let calls = make("docker-stop", &[]);
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].args, ["stop", "clock-server"]);

    // Clean removes the image even when there was no container to stop.
    let calls = make_ok(make_env("docker-clean", &[], &[("FAKE_STOP_EXIT", "1")]));
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(calls[0].args, ["stop", "clock-server"]);
    assert_eq!(calls[1].args, ["rmi", "clock-server:0.0.1"]);

    assert_eq!(
        make("docker-login", &[])[0].args,
        ["login", "192.168.2.201:32000"]
    );
    assert_eq!(
        make("docker-login", &["REGISTRY=reg.example:5000"])[0].args,
        ["login", "reg.example:5000"]
    );
}

#[test]
fn docker_buildx_push_multi_arch() {
    let calls = make("docker-buildx-push", &["PLATFORMS=linux/arm64"]);
    assert_eq!(calls.len(), 1, "{calls:?}");
    let call = &calls[0];
    assert!(call.is("docker", &["buildx", "build"]), "{call:?}");
    assert_eq!(call.values("--platform"), ["linux/arm64"]);
    let mut build_args = call.values("--build-arg");
    build_args.sort_unstable();
    assert_eq!(
        build_args,
        ["RUNTIME_IMAGE=alpine:3.21", "RUST_IMAGE=rust:1.95-alpine"]
    );
    let mut tags = call.values("-t");
    tags.sort_unstable();
    assert_eq!(
        tags,
        [
            "192.168.2.201:32000/clock-server:0.0.1",
            "192.168.2.201:32000/clock-server:latest"
        ]
    );
    assert!(call.has("--push"), "{call:?}");
    assert_eq!(call.last(), ".");
}

/// `make compose-test` with the fake compose; `run_exit` is clockctl's exit code and
/// `wait_exit` the subscriber's.
fn compose_test(run_exit: &str, wait_exit: &str) -> Run {
    let (dir, _) = fakes();
    let compose = format!("{} compose", dir.path().join("docker").display());
    make_env(
        "compose-test",
        &[&format!("COMPOSE={compose}")],
        &[("FAKE_RUN_EXIT", run_exit), ("FAKE_WAIT_EXIT", wait_exit)],
    )
}

#[test]
fn compose_test_waits_for_the_subscribers_exit_code_after_clockctl() {
    let run = compose_test("0", "0");
    assert!(run.output.status.success(), "{:?}", run.output);
    let steps: Vec<String> = run.calls.iter().map(|c| c.args.join(" ")).collect();
    // clockctl runs to completion first; only then is the subscriber's own exit code
    // awaited (`up --abort-on-container-exit` would stop it and race its check).
    assert_eq!(
        steps,
        [
            "compose build",
            "compose up -d mosquitto subscriber server",
            "compose run --rm clockctl",
            "compose ps -q subscriber",
            "wait subscriber-id",
            "compose logs subscriber",
            "compose down --remove-orphans",
        ]
    );
    assert_eq!(
        run.calls[0].buildkit, "1",
        "BuildKit must be on for the build"
    );
}

#[test]
fn compose_test_fails_and_still_tears_down_when_either_side_fails() {
    for (run_exit, wait_exit) in [("1", "0"), ("0", "1")] {
        let run = compose_test(run_exit, wait_exit);
        assert!(!run.output.status.success(), "{run_exit}/{wait_exit}");
        assert!(
            String::from_utf8_lossy(&run.output.stderr).contains("compose-test: FAILED"),
            "{:?}",
            run.output
        );
        assert!(
            run.calls
                .last()
                .is_some_and(|c| c.args == ["compose", "down", "--remove-orphans"]),
            "{:?}",
            run.calls
        );
    }
}

#[test]
fn lint_containers() {
    let (dir, _) = fakes();
    let compose = format!("{} compose", dir.path().join("docker").display());
    let calls = make("lint-containers", &[&format!("COMPOSE={compose}")]);
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(calls[0].program, "hadolint");
    assert_eq!(calls[0].values("--failure-threshold"), ["warning"]);
    assert_eq!(calls[0].last(), "Dockerfile");
    assert_eq!(calls[1].args, ["compose", "config", "-q"]);
}

/// The dev overlay pulls `localhost:32000/clock-server` (MicroK8s's registry).
#[test]
fn kubernetes_push_pushes_to_the_microk8s_registry() {
    assert_push(&make("kubernetes-push", &[]), "localhost:32000", "0.0.1");
    let calls = make(
        "kubernetes-push",
        &["KUBERNETES_REGISTRY=10.0.0.5:32000", "IMAGE_TAG=1.2.3"],
    );
    assert_push(&calls, "10.0.0.5:32000", "1.2.3");
    // docker-push itself keeps its own default.
    assert_push(&make("docker-push", &[]), "192.168.2.201:32000", "0.0.1");
}

/// No default overlay: applying `dev` to a production cluster by accident is worse than
/// typing the name.
#[test]
fn kubernetes_apply_needs_an_existing_overlay() {
    for args in [&[][..], &["OVERLAY=nope"][..]] {
        let run = make_env("kubernetes-apply", args, &[]);
        assert!(!run.output.status.success(), "{args:?}");
        assert!(run.calls.is_empty(), "{:?}", run.calls);
        let stderr = String::from_utf8_lossy(&run.output.stderr);
        assert!(
            stderr.contains("set OVERLAY to one of: dev ha single"),
            "{stderr}"
        );
    }
    for overlay in ["single", "ha", "dev"] {
        let calls = make("kubernetes-apply", &[&format!("OVERLAY={overlay}")]);
        assert_eq!(calls.len(), 1, "{calls:?}");
        assert_eq!(calls[0].program, "kubectl");
        assert_eq!(
            calls[0].args,
            [
                "apply",
                "-k",
                &format!("deploy/kubernetes/overlays/{overlay}")
            ]
        );
    }
}

#[test]
fn help_lists_every_target() {
    let out = Command::new("make")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["--no-print-directory", "help"])
        .env_remove("MAKEFLAGS")
        .env_remove("MAKELEVEL")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for target in [
        "help",
        "run",
        "test",
        "test-deps",
        "fmt",
        "lint",
        "build",
        "build-clockctl",
        "clean",
        "docker-build",
        "docker-run",
        "docker-stop",
        "docker-clean",
        "docker-login",
        "docker-push",
        "docker-buildx-push",
        "compose-test",
        "lint-containers",
        "kubernetes-push",
        "kubernetes-check",
        "kubernetes-apply",
    ] {
        assert!(
            help.lines()
                .any(|l| l.split_whitespace().next() == Some(target)
                    && l.split_whitespace().count() > 1),
            "`make help` has no description for {target}:\n{help}"
        );
    }
}
