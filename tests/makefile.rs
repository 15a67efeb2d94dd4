#![allow(clippy::unwrap_used)]
//! What the Makefile's container targets expand to (`make -n`), with the seed page's
//! defaults and with variables overridden on the command line and in the environment.

use std::process::Command;

/// Variables the Makefile reads with `?=`: removed from the environment so that a value
/// set on the machine (CI, a developer's shell) cannot change the expected commands.
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
    "CARGO",
    // Set when the tests run under `make test`; they would leak into this make.
    "MAKEFLAGS",
    "MFLAGS",
    "MAKELEVEL",
    "MAKEOVERRIDES",
];

/// `make -n TARGET ARGS...` in the repository root, with `env` added to a clean set of
/// Makefile variables; returns the printed command lines.
fn make_n_env(target: &str, args: &[&str], env: &[(&str, &str)]) -> Vec<String> {
    let mut cmd = Command::new("make");
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["--no-print-directory", "-n", target])
        .args(args);
    for var in MAKE_VARS {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied());
    let out = cmd.output().expect("run make (is GNU make installed?)");
    assert!(
        out.status.success(),
        "make -n {target} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn make_n(target: &str, args: &[&str]) -> Vec<String> {
    make_n_env(target, args, &[])
}

const BUILD_DEFAULT: &str = "docker build --build-arg RUST_IMAGE=rust:1.95-alpine \
     --build-arg RUNTIME_IMAGE=alpine:3.21 -t clock-server:0.0.1 .";

#[test]
fn docker_build_defaults() {
    assert_eq!(make_n("docker-build", &[]), [BUILD_DEFAULT]);
}

#[test]
fn docker_build_overridden_images_and_tag() {
    assert_eq!(
        make_n(
            "docker-build",
            &[
                "RUST_IMAGE=mirror.example/rust:1.96-alpine",
                "RUNTIME_IMAGE=alpine:3.22",
                "IMAGE_NAME=clocks",
                "IMAGE_TAG=1.2.3",
            ]
        ),
        [
            "docker build --build-arg RUST_IMAGE=mirror.example/rust:1.96-alpine \
          --build-arg RUNTIME_IMAGE=alpine:3.22 -t clocks:1.2.3 ."
        ]
    );
}

#[test]
fn docker_build_reads_variables_from_the_environment() {
    assert_eq!(
        make_n_env("docker-build", &[], &[("IMAGE_TAG", "env-tag")]),
        ["docker build --build-arg RUST_IMAGE=rust:1.95-alpine \
          --build-arg RUNTIME_IMAGE=alpine:3.21 -t clock-server:env-tag ."]
    );
}

#[test]
fn docker_run_builds_then_runs_detached() {
    assert_eq!(
        make_n("docker-run", &[]),
        [
            BUILD_DEFAULT,
            "docker run --rm -d --name clock-server -p 8080:8080 clock-server:0.0.1",
        ]
    );
}

#[test]
fn docker_run_overridden_ports_and_options() {
    let lines = make_n(
        "docker-run",
        &[
            "HOST_PORT=9090",
            "CONTAINER_PORT=8081",
            "IMAGE_TAG=2.0.0",
            "DOCKER_RUN_ARGS=--env-file clock.env  -e REQUIRE_TLS=false",
        ],
    );
    assert_eq!(
        lines[1],
        "docker run --rm -d --name clock-server -p 9090:8081 \
         --env-file clock.env -e REQUIRE_TLS=false clock-server:2.0.0"
    );
    assert!(lines[0].ends_with("-t clock-server:2.0.0 ."), "{lines:?}");
}

#[test]
fn docker_push_tags_version_and_latest() {
    assert_eq!(
        make_n("docker-push", &[]),
        [
            BUILD_DEFAULT,
            "docker tag clock-server:0.0.1 192.168.2.201:32000/clock-server:0.0.1",
            "docker tag clock-server:0.0.1 192.168.2.201:32000/clock-server:latest",
            "docker push 192.168.2.201:32000/clock-server:0.0.1",
            "docker push 192.168.2.201:32000/clock-server:latest",
        ]
    );
}

#[test]
fn docker_push_overridden_registry_and_tag() {
    assert_eq!(
        make_n(
            "docker-push",
            &["REGISTRY=reg.example:5000", "IMAGE_TAG=1.2.3"]
        ),
        [
            "docker build --build-arg RUST_IMAGE=rust:1.95-alpine \
             --build-arg RUNTIME_IMAGE=alpine:3.21 -t clock-server:1.2.3 .",
            "docker tag clock-server:1.2.3 reg.example:5000/clock-server:1.2.3",
            "docker tag clock-server:1.2.3 reg.example:5000/clock-server:latest",
            "docker push reg.example:5000/clock-server:1.2.3",
            "docker push reg.example:5000/clock-server:latest",
        ]
    );
}

#[test]
fn docker_stop_clean_login() {
    assert_eq!(make_n("docker-stop", &[]), ["docker stop clock-server"]);
    assert_eq!(
        make_n("docker-clean", &[]),
        ["docker stop clock-server", "docker rmi clock-server:0.0.1"]
    );
    assert_eq!(
        make_n("docker-login", &[]),
        ["docker login 192.168.2.201:32000"]
    );
    assert_eq!(
        make_n("docker-login", &["REGISTRY=reg.example:5000"]),
        ["docker login reg.example:5000"]
    );
}

#[test]
fn docker_buildx_push_multi_arch() {
    assert_eq!(
        make_n("docker-buildx-push", &["PLATFORMS=linux/arm64"]),
        ["docker buildx build --platform linux/arm64 \
          --build-arg RUST_IMAGE=rust:1.95-alpine --build-arg RUNTIME_IMAGE=alpine:3.21 \
          -t 192.168.2.201:32000/clock-server:0.0.1 \
          -t 192.168.2.201:32000/clock-server:latest --push ."]
    );
}

#[test]
fn compose_test_waits_for_the_subscribers_exit_code_after_clockctl() {
    // `up --abort-on-container-exit` would stop the subscriber as soon as clockctl exits,
    // racing its check; instead clockctl runs to completion, then we wait for the
    // subscriber's own exit code.
    let lines = make_n("compose-test", &["COMPOSE=docker compose"]);
    assert_eq!(lines[0], "docker compose build");
    assert_eq!(lines[1], "docker compose up -d mosquitto subscriber server");
    let script = lines[2..].join("\n");
    assert!(
        script.starts_with("docker compose run --rm clockctl; sent=$?;"),
        "{script}"
    );
    assert!(
        script.contains("received=$(docker wait \"$(docker compose ps -q subscriber)\")"),
        "{script}"
    );
    assert!(
        script.contains("docker compose down --remove-orphans"),
        "{script}"
    );
    assert!(script.contains("exit 1"), "{script}");
}

#[test]
fn lint_containers() {
    assert_eq!(
        make_n("lint-containers", &["COMPOSE=docker-compose"]),
        [
            "hadolint --failure-threshold warning Dockerfile",
            "docker-compose config -q",
        ]
    );
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
    ] {
        assert!(
            help.lines()
                .any(|l| l.split_whitespace().next() == Some(target)
                    && l.split_whitespace().count() > 1),
            "`make help` has no description for {target}:\n{help}"
        );
    }
}
