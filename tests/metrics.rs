//! Prometheus metrics on their own listener (`METRICS_ADDR`): traffic through the real
//! API over TCP, then a real scrape of `/metrics`, parsed and checked family by family.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use clock_server::config::Config;
use common::app::{OPS_TOKEN, TestApp, spawn_app};
use serde_json::{Value, json};

/// One sample line of the text exposition format.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A scrape, parsed.
struct Scrape {
    text: String,
    samples: Vec<Sample>,
}

impl Scrape {
    /// The value of the series `name` whose labels are exactly `labels`.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let wanted: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self.samples
            .iter()
            .find(|s| s.name == name && s.labels == wanted)
            .map(|s| s.value)
    }

    /// Like [`Scrape::value`], but the series must exist.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.value(name, labels)
            .unwrap_or_else(|| panic!("no {name}{labels:?} in:\n{}", self.text))
    }

    /// Every value the label `key` takes in the family `name`.
    fn label_values(&self, name: &str, key: &str) -> Vec<String> {
        let mut values: Vec<String> = self
            .samples
            .iter()
            .filter(|s| s.name == name)
            .filter_map(|s| s.labels.get(key).cloned())
            .collect();
        values.sort();
        values.dedup();
        values
    }

    /// The `# TYPE` of a family.
    fn type_of(&self, family: &str) -> Option<&str> {
        self.text.lines().find_map(|l| {
            let rest = l.strip_prefix("# TYPE ")?;
            let (name, kind) = rest.split_once(' ')?;
            (name == family).then_some(kind)
        })
    }
}

/// Parses `name{k="v",...} value` lines; `#` lines are kept only in `text`.
fn parse(text: String) -> Scrape {
    let mut samples = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (series, value) = line.rsplit_once(' ').unwrap();
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|e| panic!("{line}: {e}")),
        };
        let (name, labels) = match series.split_once('{') {
            None => (series.to_owned(), BTreeMap::new()),
            Some((name, rest)) => (
                name.to_owned(),
                parse_labels(rest.strip_suffix('}').unwrap()),
            ),
        };
        samples.push(Sample {
            name,
            labels,
            value,
        });
    }
    Scrape { text, samples }
}

/// `k="v",k2="v\"2"` (escapes: `\\`, `\"`, `\n`).
fn parse_labels(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut chars = s.chars().peekable();
    while chars.peek().is_some() {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        assert_eq!(chars.next(), Some('"'), "label {key} is not quoted in {s}");
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '"' => break,
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(other) => value.push(other),
                    None => panic!("dangling escape in {s}"),
                },
                c => value.push(c),
            }
        }
        out.insert(key, value);
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
    out
}

async fn metrics_app(vars: &[(&str, &str)]) -> TestApp {
    let mut all = vec![("METRICS_ADDR", "127.0.0.1:0")];
    all.extend_from_slice(vars);
    let app = spawn_app(&all).await;
    assert!(app.metrics_addr.is_some(), "the metrics listener is bound");
    app
}

async fn scrape(app: &TestApp) -> Scrape {
    let res = app
        .client
        .get(format!("http://{}/metrics", app.metrics_addr.unwrap()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    parse(res.text().await.unwrap())
}

fn msg(device: &str) -> Value {
    json!({"deviceId": device, "message": "hello", "durationSeconds": 10})
}

const REQUESTS: &str = "clock_server_http_requests_total";
const DURATION_COUNT: &str = "clock_server_dispatch_duration_seconds_count";
const DURATION_BUCKET: &str = "clock_server_dispatch_duration_seconds_bucket";
const INFLIGHT: &str = "clock_server_inflight_dispatches";
const READY: &str = "clock_server_transport_ready";
const AUTH_FAILURES: &str = "clock_server_auth_failures_total";
const THROTTLED: &str = "clock_server_throttled_requests_total";

#[tokio::test]
async fn there_is_no_metrics_listener_unless_metrics_addr_is_set() {
    let app = spawn_app(&[]).await;
    assert_eq!(app.metrics_addr, None);
}

#[tokio::test]
async fn metrics_addr_sharing_the_api_port_is_refused_at_start_up_with_a_clear_line() {
    let env = |k: &str| {
        match k {
            "HTTP_ADDR" => Some(":8080"),
            "METRICS_ADDR" => Some("127.0.0.1:8080"),
            "REQUIRE_TLS" => Some("false"),
            "API_AUTH_CREDENTIALS" => Some("ops|tok|*"),
            "ENABLED_SENDERS" => Some("rest"),
            "CLOCK_REST_BASE_URL" => Some("https://downstream.invalid"),
            _ => None,
        }
        .map(str::to_owned)
    };
    let err = Config::from_lookup(env).unwrap_err();
    assert_eq!(err.0.len(), 1, "{err}");
    assert!(
        err.0[0].starts_with("METRICS_ADDR=\"127.0.0.1:8080\" is invalid:"),
        "{err}"
    );
    let bad = |k: &str| (k == "METRICS_ADDR").then(|| "nine-thousand".to_owned());
    let err = Config::from_lookup(bad).unwrap_err();
    assert!(
        err.0
            .iter()
            .any(|l| l.starts_with("METRICS_ADDR=\"nine-thousand\" is invalid: expected host:port")),
        "{err}"
    );
}

#[tokio::test]
async fn the_scrape_is_unauthenticated_prometheus_text_with_every_family_typed() {
    let app = metrics_app(&[]).await;
    let res = app
        .client
        .get(format!("http://{}/metrics", app.metrics_addr.unwrap()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let m = parse(res.text().await.unwrap());
    for (family, kind) in [
        ("clock_server_dispatch_duration_seconds", "histogram"),
        (INFLIGHT, "gauge"),
        (READY, "gauge"),
        (AUTH_FAILURES, "counter"),
        (THROTTLED, "counter"),
    ] {
        assert_eq!(m.type_of(family), Some(kind), "{family} in:\n{}", m.text);
    }
    // Acknowledgement counters are there at 0 before the first acknowledgement.
    for outcome in ["applied", "ignored", "dropped"] {
        assert_eq!(
            m.value("clock_server_acks_total", &[("outcome", outcome)]),
            Some(0.0),
            "{outcome} in:\n{}",
            m.text
        );
    }
    // The explicit buckets, not a summary.
    let bounds = m.label_values(DURATION_BUCKET, "le");
    for le in ["0.0005", "0.001", "0.01", "0.1", "1", "10", "+Inf"] {
        assert!(bounds.iter().any(|b| b == le), "bucket {le} in {bounds:?}");
    }
    // Only /metrics is served there; the API is not.
    let other = app
        .client
        .get(format!("http://{}/health", app.metrics_addr.unwrap()))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 404);
    // And /metrics is not served on the API listener (an authenticated caller gets 404).
    assert_eq!(app.get("/metrics", Some(OPS_TOKEN)).await.status(), 404);
}

#[tokio::test]
async fn requests_are_counted_by_route_template_method_and_status_never_by_raw_path() {
    let app = metrics_app(&[]).await;
    assert_eq!(app.get("/health", None).await.status(), 200);
    assert_eq!(app.get("/health", None).await.status(), 200);
    assert_eq!(
        app.post("/commands/messages", None, msg("clock-1"))
            .await
            .status(),
        401
    );
    assert_eq!(
        app.post("/commands/messages", Some(OPS_TOKEN), msg("clock-1"))
            .await
            .status(),
        202
    );
    assert_eq!(
        app.get("/commands/alarms", Some(OPS_TOKEN)).await.status(),
        405
    );
    for path in ["/no/such/path-1", "/no/such/path-2", "/health/"] {
        assert_eq!(app.get(path, Some(OPS_TOKEN)).await.status(), 404);
    }

    let m = scrape(&app).await;
    let series = |route, method, status| {
        m.get(
            REQUESTS,
            &[("route", route), ("method", method), ("status", status)],
        )
    };
    assert_eq!(series("/health", "GET", "200"), 2.0);
    assert_eq!(series("/commands/messages", "POST", "401"), 1.0);
    assert_eq!(series("/commands/messages", "POST", "202"), 1.0);
    assert_eq!(series("/commands/alarms", "GET", "405"), 1.0);
    assert_eq!(series("unmatched", "GET", "404"), 3.0);
    assert_eq!(
        m.label_values(REQUESTS, "route"),
        [
            "/commands/alarms",
            "/commands/messages",
            "/health",
            "unmatched"
        ]
    );
    assert!(
        !m.text.contains("/no/such"),
        "raw paths leaked:\n{}",
        m.text
    );
}

#[tokio::test]
async fn a_failed_dispatch_is_timed_under_its_transport_with_the_failed_outcome() {
    let app = metrics_app(&[]).await;
    let before = scrape(&app).await;
    let outcome = |m: &Scrape, outcome| {
        m.get(
            DURATION_COUNT,
            &[("transport", "fake"), ("outcome", outcome)],
        )
    };
    assert_eq!(outcome(&before, "accepted"), 0.0);
    assert_eq!(outcome(&before, "failed"), 0.0);

    for _ in 0..2 {
        let res = app
            .post("/commands/messages", Some(OPS_TOKEN), msg("clock-1"))
            .await;
        assert_eq!(res.status(), 202);
    }
    app.fake().fail.store(true, SeqCst);
    let res = app
        .post("/commands/messages", Some(OPS_TOKEN), msg("clock-1"))
        .await;
    assert_eq!(res.status(), 502);

    let m = scrape(&app).await;
    assert_eq!(outcome(&m, "accepted"), 2.0);
    assert_eq!(outcome(&m, "failed"), 1.0);
    // Every observation lands in the +Inf bucket, and the sum is a real duration.
    let inf = m.get(
        DURATION_BUCKET,
        &[("transport", "fake"), ("outcome", "failed"), ("le", "+Inf")],
    );
    assert_eq!(inf, 1.0);
    let sum = m.get(
        "clock_server_dispatch_duration_seconds_sum",
        &[("transport", "fake"), ("outcome", "accepted")],
    );
    assert!((0.0..10.0).contains(&sum), "{sum}");
    assert_eq!(m.get(INFLIGHT, &[("transport", "fake")]), 0.0);
    assert_eq!(
        m.get(
            REQUESTS,
            &[
                ("route", "/commands/messages"),
                ("method", "POST"),
                ("status", "502")
            ]
        ),
        1.0
    );
    assert_eq!(m.label_values(DURATION_COUNT, "transport"), ["fake"]);
}

#[tokio::test]
async fn a_throttled_caller_moves_auth_failures_and_throttled_requests() {
    let app = metrics_app(&[("AUTH_FAIL_LIMIT_PER_MIN", "2")]).await;
    let m = scrape(&app).await;
    assert_eq!(m.get(AUTH_FAILURES, &[]), 0.0);
    assert_eq!(m.get(THROTTLED, &[]), 0.0);

    for _ in 0..2 {
        assert_eq!(app.get("/ready", Some("wrong-token")).await.status(), 401);
    }
    for _ in 0..3 {
        assert_eq!(app.get("/ready", Some("wrong-token")).await.status(), 429);
    }
    // A good caller is neither an auth failure nor throttled.
    assert_eq!(app.get("/ready", Some(OPS_TOKEN)).await.status(), 200);

    let m = scrape(&app).await;
    assert_eq!(m.get(AUTH_FAILURES, &[]), 2.0);
    assert_eq!(m.get(THROTTLED, &[]), 3.0);
    let ready = |status| {
        m.get(
            REQUESTS,
            &[("route", "/ready"), ("method", "GET"), ("status", status)],
        )
    };
    assert_eq!(ready("401"), 2.0);
    assert_eq!(ready("429"), 3.0);
    assert_eq!(ready("200"), 1.0);
    assert!(
        !m.text.contains("wrong-token"),
        "a token leaked into metrics"
    );
}

#[tokio::test]
async fn transport_readiness_is_read_at_scrape_time() {
    let app = metrics_app(&[]).await;
    assert_eq!(scrape(&app).await.get(READY, &[("transport", "fake")]), 1.0);
    app.fake().not_ready.store(true, SeqCst);
    assert_eq!(scrape(&app).await.get(READY, &[("transport", "fake")]), 0.0);
    app.fake().not_ready.store(false, SeqCst);
    assert_eq!(scrape(&app).await.get(READY, &[("transport", "fake")]), 1.0);
}

#[tokio::test]
async fn a_delivery_the_transport_still_holds_is_counted_in_flight() {
    let app = metrics_app(&[]).await;
    app.fake().hold.store(true, SeqCst);
    let url = app.url("/commands/messages");
    let client = app.client.clone();
    let request = tokio::spawn(async move {
        client
            .post(url)
            .bearer_auth(OPS_TOKEN)
            .header("content-type", "application/json")
            .body(msg("clock-1").to_string())
            .send()
            .await
            .unwrap()
            .status()
    });
    app.fake().started.notified().await;
    assert_eq!(
        scrape(&app).await.get(INFLIGHT, &[("transport", "fake")]),
        1.0
    );
    app.fake().release.notify_one();
    assert_eq!(request.await.unwrap(), 202);
    let m = scrape(&app).await;
    assert_eq!(m.get(INFLIGHT, &[("transport", "fake")]), 0.0);
    assert_eq!(
        m.get(
            DURATION_COUNT,
            &[("transport", "fake"), ("outcome", "accepted")]
        ),
        1.0
    );
}

#[tokio::test]
async fn a_dispatch_abandoned_by_its_caller_leaves_the_in_flight_gauge_at_zero() {
    let app = metrics_app(&[]).await;
    app.fake().hold.store(true, SeqCst);
    let url = app.url("/commands/messages");
    let client = app.client.clone();
    let request = tokio::spawn(async move {
        client
            .post(url)
            .bearer_auth(OPS_TOKEN)
            .header("content-type", "application/json")
            .body(msg("clock-1").to_string())
            .send()
            .await
    });
    app.fake().started.notified().await;
    // The caller goes away: the connection closes and the server drops the request. The
    // dispatch goes on without it (a command on its way is finished, SPEC 7.6, 10) and
    // leaves the gauge when it ends.
    request.abort();
    let _ = request.await;
    app.fake().release.notify_one();
    common::eventually(
        Duration::from_secs(5),
        "the abandoned command to be delivered all the same",
        || async { (app.fake().sent().len() == 1).then_some(()) },
    )
    .await;
    common::eventually(
        Duration::from_secs(5),
        "the in-flight gauge to fall back to 0",
        || async {
            let m = scrape(&app).await;
            (m.get(INFLIGHT, &[("transport", "fake")]) == 0.0).then_some(())
        },
    )
    .await;
}
