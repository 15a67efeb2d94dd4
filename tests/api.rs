//! The HTTP API end to end through real TCP (and real TLS): every step of SPEC 2.1, in order.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use common::app::{CLOCKS_TOKEN, JsonBody, OPS_TOKEN, spawn_app};
use serde_json::{Value, json};

fn msg(device: &str) -> Value {
    json!({"deviceId": device, "message": "hello", "durationSeconds": 10})
}

async fn body(res: reqwest::Response) -> Value {
    serde_json::from_str(&res.text().await.unwrap()).unwrap()
}

/// Sends raw bytes and reads the whole answer (the request must say `Connection: close`).
async fn raw_exchange(addr: std::net::SocketAddr, raw: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(raw).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

fn in_an_hour() -> String {
    (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339()
}

// Step 1 and the common headers

#[tokio::test]
async fn every_response_carries_the_request_id_and_the_security_headers() {
    let app = spawn_app(&[]).await;
    for (path, token) in [
        ("/health", None),
        ("/nope", Some(OPS_TOKEN)),
        ("/commands/alarms", None),
    ] {
        let res = app.get(path, token).await;
        let h = res.headers();
        assert!(
            h["x-request-id"].to_str().unwrap().starts_with("req-"),
            "{path}"
        );
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["cache-control"], "no-store");
        assert_eq!(h["pragma"], "no-cache");
        assert_eq!(h["content-type"], "application/json");
    }
}

#[tokio::test]
async fn a_callers_request_id_is_echoed_cleaned_and_cut_to_64_characters() {
    let app = spawn_app(&[]).await;
    let res = app
        .client
        .get(app.url("/health"))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-request-id"], "abc-123");
    let long = "x".repeat(100);
    let res = app
        .client
        .get(app.url("/health"))
        .header("x-request-id", &long)
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-request-id"].to_str().unwrap(), &long[..64]);
    let res = app
        .client
        .get(app.url("/health"))
        .header("x-request-id", "a\tb")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-request-id"], "ab");
}

#[tokio::test]
async fn generated_request_ids_are_unique() {
    let app = spawn_app(&[]).await;
    let a = app.get("/health", None).await.headers()["x-request-id"].clone();
    let b = app.get("/health", None).await.headers()["x-request-id"].clone();
    assert_ne!(a, b);
}

// Ambiguous requests (SPEC 10): refused before the TLS policy and authentication

#[tokio::test]
async fn two_authorization_headers_get_400_without_authenticating() {
    let app = spawn_app(&[("AUTH_FAIL_LIMIT_PER_MIN", "1")]).await;
    let body = msg("clock-1").to_string();
    for order in [
        [OPS_TOKEN, "wrong"],
        ["wrong", OPS_TOKEN],
        [OPS_TOKEN, OPS_TOKEN],
    ] {
        let raw = format!(
            "POST /commands/messages HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            order[0],
            order[1],
            body.len()
        );
        let answer = raw_exchange(app.addr, raw.as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 400 "), "{order:?}: {answer}");
        assert!(
            answer.ends_with(r#"{"error":"invalid request"}"#),
            "{answer}"
        );
        assert!(
            answer.to_ascii_lowercase().contains("x-request-id: req-"),
            "{answer}"
        );
    }
    assert!(app.fake().sent().is_empty());
    // Nothing was recorded against the caller: with a limit of 1, one failure would block it.
    let res = app
        .post("/commands/messages", Some(OPS_TOKEN), msg("clock-1"))
        .await;
    assert_eq!(res.status(), 202);
}

#[tokio::test]
async fn an_http_1_1_request_without_exactly_one_host_gets_400_but_http_1_0_may_omit_it() {
    let app = spawn_app(&[]).await;
    let answer = raw_exchange(
        app.addr,
        b"GET /health HTTP/1.1\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    assert!(
        answer.ends_with(r#"{"error":"invalid request"}"#),
        "{answer}"
    );
    let answer = raw_exchange(
        app.addr,
        b"GET /health HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    let answer = raw_exchange(app.addr, b"GET /health HTTP/1.0\r\n\r\n").await;
    assert!(
        answer.starts_with("HTTP/1.0 200 ") || answer.starts_with("HTTP/1.1 200 "),
        "{answer}"
    );
    let answer = raw_exchange(
        app.addr,
        b"GET /health HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
}

#[tokio::test]
async fn only_the_last_forwarded_proto_value_the_one_the_proxy_added_counts() {
    let app = spawn_app(&[("REQUIRE_TLS", "true"), ("TRUST_PROXY_TLS", "true")]).await;
    for (values, status) in [
        (&["https, http"][..], 426),
        (&["https", "http"][..], 426),
        (&["http, https"][..], 200),
        (&["http", " HTTPS "][..], 200),
    ] {
        let mut req = app.client.get(app.url("/health"));
        for v in values {
            req = req.header("x-forwarded-proto", *v);
        }
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), status, "{values:?}");
    }
}

// Step 2

#[tokio::test]
async fn plain_http_gets_426_when_tls_is_required_even_for_health() {
    let app = spawn_app(&[("REQUIRE_TLS", "true"), ("TRUST_PROXY_TLS", "true")]).await;
    let res = app.get("/health", None).await;
    assert_eq!(res.status(), 426);
    assert_eq!(body(res).await, json!({"error": "https required"}));
    let res = app
        .client
        .get(app.url("/health"))
        .header("x-forwarded-proto", "http")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 426);
}

#[tokio::test]
async fn a_trusted_proxy_header_saying_https_passes_the_tls_policy() {
    let app = spawn_app(&[("REQUIRE_TLS", "true"), ("TRUST_PROXY_TLS", "true")]).await;
    let res = app
        .client
        .get(app.url("/health"))
        .header("x-forwarded-proto", "  HTTPS ")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn real_tls_satisfies_require_tls_and_plain_http_on_the_tls_port_gets_no_answer() {
    // (REQUIRE_TLS=true without TRUST_PROXY_TLS needs TLS files: a start-up check, see
    // tests/config.rs; so a forwarded header can never stand in for TLS here.)
    let pki = common::certs::TestPki::new();
    let cert = pki.server_cert.to_str().unwrap();
    let key = pki.server_key.to_str().unwrap();
    let app = spawn_app(&[
        ("REQUIRE_TLS", "true"),
        ("TLS_CERT_FILE", cert),
        ("TLS_KEY_FILE", key),
        ("TEST_CA", pki.ca_cert.to_str().unwrap()),
    ])
    .await;
    let res = app.get("/health", None).await;
    assert_eq!(res.status(), 200, "real TLS satisfies REQUIRE_TLS");
    let plain = common::app::client(None);
    let err = plain
        .get(format!("http://{}/health", app.addr))
        .header("x-forwarded-proto", "https")
        .send()
        .await;
    assert!(
        err.is_err(),
        "plain HTTP on the TLS port does not get a response"
    );
}

#[tokio::test]
async fn https_serves_the_whole_api_with_a_certificate_made_in_the_test() {
    let pki = common::certs::TestPki::new();
    let app = spawn_app(&[
        ("REQUIRE_TLS", "true"),
        ("TLS_CERT_FILE", pki.server_cert.to_str().unwrap()),
        ("TLS_KEY_FILE", pki.server_key.to_str().unwrap()),
        ("TEST_CA", pki.ca_cert.to_str().unwrap()),
    ])
    .await;
    assert_eq!(app.url(""), format!("https://{}", app.addr));
    let res = app
        .post("/commands/messages", Some(OPS_TOKEN), msg("clock-1"))
        .await;
    assert_eq!(res.status(), 202);
    // A client that does not trust the test CA is refused by verification.
    let untrusting = common::app::client(None);
    assert!(untrusting.get(app.url("/health")).send().await.is_err());
}

// Step 3

#[tokio::test]
async fn health_needs_no_token() {
    let app = spawn_app(&[]).await;
    let res = app.get("/health", None).await;
    assert_eq!(res.status(), 200);
    assert_eq!(body(res).await, json!({"status": "ok"}));
}

#[tokio::test]
async fn ready_needs_a_token_by_default_and_reflects_the_transports() {
    let app = spawn_app(&[]).await;
    assert_eq!(app.get("/ready", None).await.status(), 401);
    let res = app.get("/ready", Some(OPS_TOKEN)).await;
    assert_eq!(res.status(), 200);
    assert_eq!(body(res).await, json!({"status": "ready"}));
    app.fake().not_ready.store(true, SeqCst);
    let res = app.get("/ready", Some(OPS_TOKEN)).await;
    assert_eq!(res.status(), 503);
    assert_eq!(body(res).await, json!({"status": "not_ready"}));
}

#[tokio::test]
async fn ready_is_public_when_readiness_require_auth_is_false() {
    let app = spawn_app(&[("READINESS_REQUIRE_AUTH", "false")]).await;
    assert_eq!(app.get("/ready", None).await.status(), 200);
}

// Step 4

#[tokio::test]
async fn repeated_auth_failures_are_throttled_with_retry_after() {
    let app = spawn_app(&[("AUTH_FAIL_LIMIT_PER_MIN", "3")]).await;
    for _ in 0..3 {
        assert_eq!(app.get("/ready", Some("wrong")).await.status(), 401);
    }
    let res = app.get("/ready", Some("wrong")).await;
    assert_eq!(res.status(), 429);
    let retry: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry));
    assert_eq!(body(res).await, json!({"error": "too many auth failures"}));
    // A throttled key is refused even before its token is checked.
    assert_eq!(
        app.post("/commands/messages", Some("wrong"), msg("clock-1"))
            .await
            .status(),
        429
    );
}

#[tokio::test]
async fn one_bad_token_does_not_lock_out_other_callers_behind_the_same_ip() {
    let app = spawn_app(&[("AUTH_FAIL_LIMIT_PER_MIN", "2")]).await;
    for _ in 0..2 {
        app.get("/ready", Some("bad-actor")).await;
    }
    assert_eq!(app.get("/ready", Some("bad-actor")).await.status(), 429);
    assert_eq!(app.get("/ready", Some(OPS_TOKEN)).await.status(), 200);
    assert_eq!(app.get("/ready", Some("another-typo")).await.status(), 401);
    // Without a token the key is the IP alone, also separate from the bad actor's.
    assert_eq!(app.get("/ready", None).await.status(), 401);
    for _ in 0..2 {
        app.get("/ready", None).await;
    }
    assert_eq!(app.get("/ready", None).await.status(), 429);
    assert_eq!(app.get("/ready", Some(OPS_TOKEN)).await.status(), 200);
}

// Step 5

#[tokio::test]
async fn missing_or_wrong_tokens_get_401() {
    let app = spawn_app(&[]).await;
    let res = app.post("/commands/messages", None, msg("clock-1")).await;
    assert_eq!(res.status(), 401);
    assert_eq!(body(res).await, json!({"error": "unauthorized"}));
    let res = app
        .post(
            "/commands/messages",
            Some("ops-secret-token-"),
            msg("clock-1"),
        )
        .await;
    assert_eq!(res.status(), 401);
    let res = app
        .client
        .post(app.url("/commands/messages"))
        .header("authorization", format!("Basic {OPS_TOKEN}"))
        .json_body(&msg("clock-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert!(app.fake().sent().is_empty());
}

#[tokio::test]
async fn unknown_paths_need_auth_and_then_get_a_json_404() {
    let app = spawn_app(&[]).await;
    assert_eq!(app.get("/admin", None).await.status(), 401);
    let res = app.get("/admin", Some(OPS_TOKEN)).await;
    assert_eq!(res.status(), 404);
    assert_eq!(body(res).await, json!({"error": "not found"}));
}

#[tokio::test]
async fn every_configured_credential_is_valid_at_once_for_token_rotation() {
    let app = spawn_app(&[]).await;
    assert_eq!(
        app.post("/commands/messages", Some(OPS_TOKEN), msg("clock-1"))
            .await
            .status(),
        202
    );
    assert_eq!(
        app.post("/commands/messages", Some(CLOCKS_TOKEN), msg("clock-1"))
            .await
            .status(),
        202
    );
}

#[tokio::test]
async fn the_legacy_single_token_works_with_scope_star() {
    let app = spawn_app(&[
        ("API_AUTH_CREDENTIALS", ""),
        ("API_AUTH_TOKEN", "legacy-tok"),
    ])
    .await;
    assert_eq!(
        app.post("/commands/messages", Some("legacy-tok"), msg("lamp-9"))
            .await
            .status(),
        202
    );
}

// Step 6

#[tokio::test]
async fn a_wrong_method_gets_405_with_allow_after_authentication() {
    let app = spawn_app(&[]).await;
    assert_eq!(app.get("/commands/alarms", None).await.status(), 401);
    let res = app.get("/commands/alarms", Some(OPS_TOKEN)).await;
    assert_eq!(res.status(), 405);
    assert_eq!(res.headers()["allow"], "POST");
    assert_eq!(body(res).await, json!({"error": "method not allowed"}));
    let res = app
        .client
        .post(app.url("/commands/brightness"))
        .bearer_auth(OPS_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 405);
    assert_eq!(res.headers()["allow"], "PUT");
    let res = app.client.delete(app.url("/health")).send().await.unwrap();
    assert_eq!(res.status(), 405);
    assert_eq!(res.headers()["allow"], "GET, HEAD");
}

// Step 7

#[tokio::test]
async fn an_oversized_body_gets_413() {
    let app = spawn_app(&[("MAX_BODY_BYTES", "1024")]).await;
    let big = json!({"deviceId": "clock-1", "message": "x".repeat(2000), "durationSeconds": 5});
    let res = app
        .post("/commands/messages", Some(OPS_TOKEN), big.clone())
        .await;
    assert_eq!(res.status(), 413);
    assert!(
        body(res).await["error"]
            .as_str()
            .unwrap()
            .contains("request body too large")
    );
    // Without Content-Length (chunked), the limit still holds.
    let payload = big.to_string();
    let raw = format!(
        "POST /commands/messages HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {OPS_TOKEN}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{payload}\r\n0\r\n\r\n",
        payload.len()
    );
    let answer = raw_exchange(app.addr, raw.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(app.fake().sent().is_empty());
}

#[tokio::test]
async fn an_unknown_field_gets_400_naming_it() {
    let app = spawn_app(&[]).await;
    let res = app
        .post(
            "/commands/messages",
            Some(OPS_TOKEN),
            json!({"deviceId": "clock-1", "message": "hi", "durationSeconds": 5, "colour": "red"}),
        )
        .await;
    assert_eq!(res.status(), 400);
    let error = body(res).await["error"].as_str().unwrap().to_owned();
    assert!(
        error.contains("unknown field") && error.contains("colour"),
        "{error}"
    );
}

#[tokio::test]
async fn malformed_bodies_get_400_invalid_request_body_with_the_reason() {
    let app = spawn_app(&[]).await;
    for raw in [
        "",
        "{",
        "[]",
        "\"text\"",
        r#"{"deviceId":"clock-1","message":"hi","durationSeconds":"5"}"#,
        r#"{"deviceId":"clock-1","message":"hi","durationSeconds":5} {}"#,
        r#"{"deviceId":"clock-1","message":"hi","durationSeconds":1.5}"#,
    ] {
        let res = app
            .client
            .post(app.url("/commands/messages"))
            .bearer_auth(OPS_TOKEN)
            .header("content-type", "application/json")
            .body(raw)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400, "{raw}");
        let error = body(res).await["error"].as_str().unwrap().to_owned();
        assert!(
            error.starts_with("invalid request body: ") && error.len() > 22,
            "{raw}: {error}"
        );
    }
    assert!(app.fake().sent().is_empty());
}

// Step 8

#[tokio::test]
async fn device_ids_are_trimmed_and_checked_against_the_pattern() {
    let app = spawn_app(&[]).await;
    for bad in ["", "clock/1", "clock+", "#", "../etc", &"a".repeat(65)] {
        let res = app
            .post("/commands/messages", Some(OPS_TOKEN), msg(bad))
            .await;
        assert_eq!(res.status(), 400, "{bad}");
        let b = body(res).await;
        assert_eq!(b["error"], "invalid command", "{bad}");
        assert!(b["detail"].as_str().unwrap().contains("deviceId"), "{bad}");
    }
    let res = app
        .post("/commands/messages", Some(OPS_TOKEN), msg("  clock-1  "))
        .await;
    assert_eq!(res.status(), 202);
    assert_eq!(app.fake().sent()[0].device_id.as_str(), "clock-1");
}

// Step 9

#[tokio::test]
async fn a_token_scoped_to_clock_star_cannot_address_lamp_1() {
    let app = spawn_app(&[]).await;
    let res = app
        .post("/commands/messages", Some(CLOCKS_TOKEN), msg("lamp-1"))
        .await;
    assert_eq!(res.status(), 403);
    assert_eq!(
        body(res).await,
        json!({"error": "forbidden for target device"})
    );
    assert_eq!(
        app.post("/commands/messages", Some(CLOCKS_TOKEN), msg("clock-7"))
            .await
            .status(),
        202
    );
    assert_eq!(app.fake().sent().len(), 1);
}

#[tokio::test]
async fn an_exact_scope_matches_only_that_device() {
    let app = spawn_app(&[("API_AUTH_CREDENTIALS", "k|kt|kitchen")]).await;
    assert_eq!(
        app.post("/commands/messages", Some("kt"), msg("kitchen"))
            .await
            .status(),
        202
    );
    assert_eq!(
        app.post("/commands/messages", Some("kt"), msg("kitchen-2"))
            .await
            .status(),
        403
    );
}

#[tokio::test]
async fn scope_is_checked_before_command_validation() {
    let app = spawn_app(&[]).await;
    let res = app
        .post(
            "/commands/messages",
            Some(CLOCKS_TOKEN),
            json!({"deviceId": "lamp-1", "message": " ", "durationSeconds": 0}),
        )
        .await;
    assert_eq!(res.status(), 403);
}

// Step 10

#[tokio::test]
async fn an_alarm_time_that_is_not_rfc3339_gets_its_own_error() {
    let app = spawn_app(&[]).await;
    for t in [
        json!("tomorrow 7am"),
        json!("2030-01-01 07:00"),
        Value::Null,
    ] {
        let res = app
            .post(
                "/commands/alarms",
                Some(OPS_TOKEN),
                json!({"deviceId": "clock-1", "alarmTime": t}),
            )
            .await;
        assert_eq!(res.status(), 400);
        assert_eq!(
            body(res).await,
            json!({"error": "alarmTime must be RFC3339"})
        );
    }
}

#[tokio::test]
async fn an_alarm_more_than_a_minute_in_the_past_is_invalid() {
    let app = spawn_app(&[]).await;
    let past = (chrono::Utc::now() - chrono::Duration::minutes(2)).to_rfc3339();
    let res = app
        .post(
            "/commands/alarms",
            Some(OPS_TOKEN),
            json!({"deviceId": "clock-1", "alarmTime": past}),
        )
        .await;
    assert_eq!(res.status(), 400);
    let b = body(res).await;
    assert_eq!(b["error"], "invalid command");
    assert!(b["detail"].as_str().unwrap().contains("past"));
    let recent = (chrono::Utc::now() - chrono::Duration::seconds(30)).to_rfc3339();
    let res = app
        .post(
            "/commands/alarms",
            Some(OPS_TOKEN),
            json!({"deviceId": "clock-1", "alarmTime": recent}),
        )
        .await;
    assert_eq!(res.status(), 202);
}

#[tokio::test]
async fn message_and_brightness_values_are_range_checked_with_a_detail() {
    let app = spawn_app(&[]).await;
    let cases = [
        (
            "/commands/messages",
            json!({"deviceId": "clock-1", "message": "   ", "durationSeconds": 5}),
            "message",
        ),
        (
            "/commands/messages",
            json!({"deviceId": "clock-1", "message": "hi", "durationSeconds": 0}),
            "durationSeconds",
        ),
        (
            "/commands/messages",
            json!({"deviceId": "clock-1", "message": "hi", "durationSeconds": 3601}),
            "durationSeconds",
        ),
        (
            "/commands/messages",
            json!({"deviceId": "clock-1", "message": "hi"}),
            "durationSeconds",
        ),
        (
            "/commands/brightness",
            json!({"deviceId": "clock-1", "level": 101}),
            "level",
        ),
        (
            "/commands/brightness",
            json!({"deviceId": "clock-1", "level": -1}),
            "level",
        ),
        (
            "/commands/brightness",
            json!({"deviceId": "clock-1"}),
            "level",
        ),
    ];
    for (path, b, field) in cases {
        let req = if path.ends_with("brightness") {
            app.client.put(app.url(path))
        } else {
            app.client.post(app.url(path))
        };
        let res = req
            .bearer_auth(OPS_TOKEN)
            .json_body(&b)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400, "{b}");
        let out = body(res).await;
        assert_eq!(out["error"], "invalid command", "{b}");
        assert!(
            out["detail"].as_str().unwrap().contains(field),
            "{b}: {out}"
        );
    }
    assert!(app.fake().sent().is_empty());
}

// Step 11

#[tokio::test]
async fn each_command_is_dispatched_and_answered_202_with_a_command_id() {
    let app = spawn_app(&[]).await;
    let when = in_an_hour();
    let res = app
        .post(
            "/commands/alarms",
            Some(OPS_TOKEN),
            json!({"deviceId": "clock-1", "alarmTime": when, "label": "wake"}),
        )
        .await;
    assert_eq!(res.status(), 202);
    let a = body(res).await;
    assert_eq!(a["result"], "scheduled");
    let res = app
        .post("/commands/messages", Some(OPS_TOKEN), msg("clock-2"))
        .await;
    assert_eq!(res.status(), 202);
    let m = body(res).await;
    assert_eq!(m["result"], "sent");
    let res = app
        .client
        .put(app.url("/commands/brightness"))
        .bearer_auth(OPS_TOKEN)
        .header("x-request-id", "trace-me")
        .json_body(&json!({"deviceId": "clock-3", "level": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    let b = body(res).await;
    assert_eq!(b["result"], "updated");

    let sent = app.fake().sent();
    assert_eq!(sent.len(), 3);
    let ids: Vec<&str> = [&a, &m, &b]
        .iter()
        .map(|v| v["commandId"].as_str().unwrap())
        .collect();
    for (env, id) in sent.iter().zip(&ids) {
        assert_eq!(env.command_id, *id);
        assert!(uuid::Uuid::parse_str(id).is_ok());
    }
    assert_ne!(ids[0], ids[1]);
    assert_eq!(sent[2].request_id, "trace-me");
    assert_eq!(sent[0].command.command_type().as_str(), "set_alarm");
    let fields = |env: &clock_server::domain::Envelope| -> Value {
        serde_json::from_slice(&env.rest_body()).unwrap()
    };
    assert_eq!(
        fields(&sent[1]),
        json!({"message": "hello", "durationSeconds": 10})
    );
    assert_eq!(fields(&sent[2]), json!({"level": 0}));
}

#[tokio::test]
async fn a_failed_transport_gives_502_without_details() {
    // Release 1's body exactly when nothing is tracked; with a store, the command's id too.
    let app = spawn_app(&[("STATE_STORE", "none")]).await;
    app.fake().fail.store(true, SeqCst);
    let res = app
        .post("/commands/messages", Some(OPS_TOKEN), msg("clock-1"))
        .await;
    assert_eq!(res.status(), 502);
    assert_eq!(body(res).await, json!({"error": "command dispatch failed"}));
    let app = spawn_app(&[]).await;
    app.fake().fail.store(true, SeqCst);
    let res = app
        .post("/commands/messages", Some(OPS_TOKEN), msg("clock-1"))
        .await;
    assert_eq!(res.status(), 502);
    let body = body(res).await;
    let id = body["commandId"].as_str().unwrap().to_owned();
    assert_eq!(
        body,
        json!({"error": "command dispatch failed", "commandId": id})
    );
}

// Timeouts and shutdown

#[tokio::test]
async fn a_client_sending_its_header_slowly_is_disconnected_at_the_header_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app(&[("HTTP_READ_HEADER_TIMEOUT_MS", "300")]).await;
    let mut s = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let started = std::time::Instant::now();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // Keep trickling header bytes; the server must still cut us off.
    let mut buf = [0u8; 256];
    let closed_after = loop {
        tokio::select! {
            n = s.read(&mut buf) => {
                // EOF or reset: the server hung up (hyper may send a 408 first).
                match n {
                    Ok(0) | Err(_) => break started.elapsed(),
                    Ok(_) => continue,
                }
            }
            () = tokio::time::sleep(Duration::from_millis(100)) => {
                if s.write_all(b"X-Slow: 1\r\n").await.is_err() {
                    break started.elapsed();
                }
                assert!(started.elapsed() < Duration::from_secs(10), "still connected after 10 s");
            }
        }
    };
    assert!(
        closed_after >= Duration::from_millis(300),
        "{closed_after:?}"
    );
    // The server itself is still healthy.
    assert_eq!(app.get("/health", None).await.status(), 200);
}

#[tokio::test]
async fn a_request_in_flight_at_shutdown_completes_while_new_connections_are_refused() {
    let mut app = spawn_app(&[]).await;
    app.fake().hold.store(true, SeqCst);
    let client = app.client.clone();
    let url = app.url("/commands/messages");
    let in_flight = tokio::spawn(async move {
        client
            .post(url)
            .bearer_auth(OPS_TOKEN)
            .json_body(&msg("clock-1"))
            .send()
            .await
            .unwrap()
    });
    app.fake().started.notified().await;
    app.begin_shutdown();
    // The listener closes: new connections are refused.
    common::eventually(Duration::from_secs(5), "listener to close", || async {
        tokio::net::TcpStream::connect(app.addr)
            .await
            .is_err()
            .then_some(())
    })
    .await;
    assert!(
        !app.fake().closed.load(SeqCst),
        "transports close only after draining"
    );
    app.fake().release.notify_one();
    let res = in_flight.await.unwrap();
    assert_eq!(res.status(), 202);
    tokio::time::timeout(Duration::from_secs(5), app.task.take().unwrap())
        .await
        .expect("server stops after draining")
        .unwrap();
    assert!(app.fake().closed.load(SeqCst));
}

// The API description

/// Every `$ref` in `v` points at something that exists in `doc`.
fn check_refs(doc: &Value, v: &Value, at: &str) {
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                if k == "$ref" {
                    let r = child.as_str().unwrap();
                    let ptr = r
                        .strip_prefix('#')
                        .unwrap_or_else(|| panic!("external $ref {r} at {at}"));
                    assert!(doc.pointer(ptr).is_some(), "dangling $ref {r} at {at}");
                } else {
                    check_refs(doc, child, &format!("{at}/{k}"));
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|c| check_refs(doc, c, at)),
        _ => {}
    }
}

#[tokio::test]
async fn the_served_openapi_document_is_the_committed_one_and_is_well_formed() {
    let app = spawn_app(&[]).await;
    let res = app.get("/openapi.json", None).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/json");
    let served = res.text().await.unwrap();
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json")).unwrap();
    assert_eq!(served, committed, "rebuild after editing docs/openapi.json");

    let doc: Value = serde_json::from_str(&committed).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    check_refs(&doc, &doc, "#");
    let ops = [
        ("/health", "get"),
        ("/ready", "get"),
        ("/openapi.json", "get"),
        ("/commands/alarms", "post"),
        ("/commands/messages", "post"),
        ("/commands/brightness", "put"),
    ];
    for (path, method) in ops {
        let op = &doc["paths"][path][method];
        assert!(op["responses"].is_object(), "{method} {path} undocumented");
    }
    for path in [
        "/commands/alarms",
        "/commands/messages",
        "/commands/brightness",
    ] {
        let responses = doc["paths"][path]
            .as_object()
            .unwrap()
            .values()
            .next()
            .unwrap()["responses"]
            .as_object()
            .unwrap();
        for code in [
            "202", "400", "401", "403", "405", "413", "426", "429", "502",
        ] {
            assert!(responses.contains_key(code), "{path} lacks {code}");
        }
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
}

#[tokio::test]
async fn the_openapi_document_is_public_but_still_under_the_tls_policy() {
    let app = spawn_app(&[("REQUIRE_TLS", "true"), ("TRUST_PROXY_TLS", "true")]).await;
    assert_eq!(app.get("/openapi.json", None).await.status(), 426);
    let res = app
        .client
        .get(app.url("/openapi.json"))
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}
