//! Limits an outside attacker runs into (SPEC 10): the size of a request head
//! (`HTTP_MAX_HEADER_BYTES`), the number of open connections (`HTTP_MAX_CONNECTIONS`, idle
//! ones making room first), the open-file limit raised at start, and accept failures logged
//! at most once a second.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::app::{JsonBody, OPS_TOKEN, client, spawn_app};
use common::process::ServerProcess;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends `raw` and reads until the server closes the connection (bounded).
async fn exchange(addr: std::net::SocketAddr, raw: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    // The server may answer and close before all of an oversized head is written.
    let _ = s.write_all(raw).await;
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "the server did not close the connection");
    String::from_utf8_lossy(&out).into_owned()
}

fn body_of(answer: &str) -> Value {
    serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap()).unwrap()
}

fn assert_common_headers(answer: &str) {
    let lower = answer.to_ascii_lowercase();
    for header in [
        "content-type: application/json",
        "x-request-id: req-",
        "x-content-type-options: nosniff",
        "cache-control: no-store",
        "pragma: no-cache",
        "connection: close",
    ] {
        assert!(lower.contains(header), "{header} missing in {answer}");
    }
}

#[tokio::test]
async fn a_head_over_the_limit_gets_a_json_431_and_the_connection_is_closed() {
    let app = spawn_app(&[("HTTP_MAX_HEADER_BYTES", "1024")]).await;
    let raw = format!(
        "GET /health HTTP/1.1\r\nHost: x\r\nX-Filler: {}\r\n\r\n",
        "a".repeat(2000)
    );
    let answer = exchange(app.addr, raw.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");
    assert_common_headers(&answer);
    assert_eq!(
        body_of(&answer),
        json!({"error": "request header fields too large"})
    );
    // Just under the limit is fine.
    let raw = format!(
        "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Filler: {}\r\n\r\n",
        "a".repeat(900)
    );
    let answer = exchange(app.addr, raw.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
}

#[tokio::test]
async fn a_request_hyper_cannot_parse_gets_a_json_400_with_the_common_headers() {
    let app = spawn_app(&[]).await;
    for raw in [
        // A header line without a colon.
        &b"GET /health HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n"[..],
        // A request line that is not one.
        b"GET\r\nHost: x\r\n\r\n",
        // A control character in a header value.
        b"GET /health HTTP/1.1\r\nHost: x\r\nX-Bad: a\x01b\r\n\r\n",
    ] {
        let answer = exchange(app.addr, raw).await;
        assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
        assert_common_headers(&answer);
        assert_eq!(body_of(&answer), json!({"error": "invalid request"}));
    }
    // The server goes on serving.
    let answer = exchange(
        app.addr,
        b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
}

#[tokio::test]
async fn a_request_line_alone_over_the_limit_gets_a_json_414() {
    let app = spawn_app(&[("HTTP_MAX_HEADER_BYTES", "1024")]).await;
    let raw = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "p".repeat(3000));
    let answer = exchange(app.addr, raw.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 414 "), "{answer}");
    assert_common_headers(&answer);
    assert_eq!(body_of(&answer), json!({"error": "uri too long"}));
}

#[tokio::test]
async fn the_default_limit_is_16_kib_not_hypers_400_kib() {
    let app = spawn_app(&[]).await;
    let raw = format!(
        "GET /health HTTP/1.1\r\nHost: x\r\nX-Filler: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    let answer = exchange(app.addr, raw.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");
}

#[tokio::test]
async fn an_endless_header_line_is_cut_off_at_the_limit() {
    let app = spawn_app(&[("HTTP_MAX_HEADER_BYTES", "4096")]).await;
    let mut s = TcpStream::connect(app.addr).await.unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Endless: ")
        .await
        .unwrap();
    let chunk = [b'a'; 1024];
    let mut sent = 0usize;
    let mut answer = Vec::new();
    // Keep sending until the server answers and closes; it must do so near the limit.
    while sent < 1_000_000 {
        match s.write_all(&chunk).await {
            Ok(()) => sent += chunk.len(),
            Err(_) => break,
        }
        let mut buf = [0u8; 1024];
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(1), s.read(&mut buf)).await {
            answer.extend_from_slice(&buf[..n]);
            if n == 0 || answer.ends_with(b"}") {
                break;
            }
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 431 "),
        "after {sent} bytes: {answer}"
    );
    assert!(
        sent < 512 * 1024,
        "{sent} bytes were taken before the answer"
    );
}

#[tokio::test]
async fn bodies_are_not_counted_and_each_request_on_a_connection_has_its_own_budget() {
    let app = spawn_app(&[("HTTP_MAX_HEADER_BYTES", "1024")]).await;
    // A body far larger than the head limit, with and without `Expect: 100-continue`.
    for expect in ["", "Expect: 100-continue\r\n"] {
        let body =
            json!({"deviceId": "clock-1", "message": "m".repeat(3000), "durationSeconds": 5})
                .to_string();
        let raw = format!(
            "POST /commands/messages HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {OPS_TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{expect}Connection: close\r\n\r\n{body}",
            body.len()
        );
        let answer = exchange(app.addr, raw.as_bytes()).await;
        assert!(answer.contains(" 202 "), "{expect:?}: {answer}");
    }
    // Three requests of 700 bytes of head each on one keep-alive connection.
    let c = client(None);
    for _ in 0..3 {
        let res = c
            .post(app.url("/commands/messages"))
            .bearer_auth(OPS_TOKEN)
            .header("x-filler", "f".repeat(600))
            .json_body(&json!({"deviceId": "clock-1", "message": "hi", "durationSeconds": 5}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 202);
    }
}

/// Opens `n` keep-alive connections that each complete one request and then stay open.
async fn idle_keep_alive_connections(port: u16, n: usize) -> Vec<TcpStream> {
    let mut held = Vec::new();
    for _ in 0..n {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)).await else {
            continue;
        };
        if s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .is_err()
        {
            continue;
        }
        let mut buf = [0u8; 512];
        let _ = tokio::time::timeout(Duration::from_millis(500), s.read(&mut buf)).await;
        held.push(s);
    }
    held
}

/// A new client's `/health` within `limit`, or `None`.
async fn new_client_answered(port: u16, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let res = tokio::time::timeout(
        limit,
        client(None)
            .get(format!("http://127.0.0.1:{port}/health"))
            .send(),
    )
    .await;
    matches!(res, Ok(Ok(r)) if r.status() == 200).then(|| started.elapsed())
}

const PLAIN: &[(&str, &str)] = &[
    ("REQUIRE_TLS", "false"),
    ("API_AUTH_CREDENTIALS", "ops|limits-token|*"),
    ("ENABLED_SENDERS", "rest"),
    ("CLOCK_REST_BASE_URL", "https://downstream.invalid"),
];

#[tokio::test]
async fn the_open_file_soft_limit_is_raised_so_held_connections_do_not_lock_others_out() {
    let server = ServerProcess::start_with_ulimit("-Sn 64", PLAIN).await;
    let held = idle_keep_alive_connections(server.port, 150).await;
    assert_eq!(held.len(), 150);
    assert!(
        new_client_answered(server.port, Duration::from_secs(5))
            .await
            .is_some(),
        "a new client was locked out"
    );
    assert!(
        server.logs().contains("raised the open-file soft limit"),
        "{}",
        server.logs()
    );
}

#[tokio::test]
async fn at_the_connection_cap_idle_connections_make_room_for_new_clients() {
    let mut vars = PLAIN.to_vec();
    vars.push(("HTTP_MAX_CONNECTIONS", "32"));
    // Soft and hard: without the cap, 150 held connections would exhaust the descriptors.
    let server = ServerProcess::start_with_ulimit("-n 64", &vars).await;
    let mut held = idle_keep_alive_connections(server.port, 150).await;
    assert!(
        new_client_answered(server.port, Duration::from_secs(5))
            .await
            .is_some(),
        "a new client was locked out"
    );
    // The server closed the longest-idle ones to make room: most held connections are gone.
    let mut closed = 0;
    for s in &mut held {
        let mut buf = [0u8; 64];
        if matches!(
            tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf)).await,
            Ok(Ok(0) | Err(_))
        ) {
            closed += 1;
        }
    }
    assert!(
        closed >= 100,
        "only {closed} of 150 idle connections were closed"
    );
}

#[tokio::test]
async fn held_connections_at_the_open_file_limit_do_not_lock_others_out() {
    // Soft and hard limit 256, far below the default cap of 10,000: the descriptors run
    // out first. The header timeout is long, so held connections are not closed by it.
    let mut vars = PLAIN.to_vec();
    vars.push(("HTTP_READ_HEADER_TIMEOUT_MS", "60000"));
    vars.push(("HTTP_IDLE_TIMEOUT_MS", "60000"));
    let server = ServerProcess::start_with_ulimit("-n 256", &vars).await;
    let held = idle_keep_alive_connections(server.port, 300).await;
    assert!(held.len() >= 256, "{} connections held", held.len());
    assert!(
        new_client_answered(server.port, Duration::from_secs(5))
            .await
            .is_some(),
        "a new client was locked out:\n{}",
        server.logs()
    );
    assert!(
        server.logs().contains("evicted_idle=true"),
        "{}",
        server.logs()
    );
}

#[tokio::test]
async fn at_the_cap_with_none_idle_a_new_connection_is_closed_at_once() {
    let mut vars = PLAIN.to_vec();
    vars.push(("HTTP_MAX_CONNECTIONS", "4"));
    vars.push(("HTTP_READ_HEADER_TIMEOUT_MS", "30000"));
    let server = ServerProcess::start_with_ulimit("-Sn 1024", &vars).await;
    // Connections in the middle of a request head are busy, not idle. Until the server has
    // read a head, that connection still counts as idle and may be chosen to make room, so
    // keep opening such connections until one is closed at once: the cap is then all busy.
    let busy = std::cell::RefCell::new(Vec::new());
    let closed_at_once =
        common::eventually(Duration::from_secs(20), "a refused connection", || {
            let port = server.port;
            let busy = &busy;
            async move {
                let mut s = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
                s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
                    .await
                    .ok()?;
                let mut buf = [0u8; 64];
                let started = Instant::now();
                match tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf)).await {
                    Ok(Ok(0) | Err(_)) => Some(started.elapsed()),
                    _ => {
                        busy.borrow_mut().push(s);
                        None
                    }
                }
            }
        })
        .await;
    // Closed at once, not at the header timeout of 30 s.
    assert!(closed_at_once < Duration::from_secs(1));
    // The busy ones can finish their requests (those still open: a connection the server
    // had not read yet may have been chosen to make room, which is what idle means here).
    let mut finished = 0;
    let mut busy = busy.into_inner();
    for s in &mut busy {
        let _ = s.write_all(b"Connection: close\r\n\r\n").await;
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
        if out.starts_with(b"HTTP/1.1 200 ") {
            finished += 1;
        }
    }
    assert_eq!(finished, 4, "{} connections were held", busy.len());
}

#[tokio::test]
async fn accept_failures_are_logged_at_most_once_a_second() {
    let mut vars = PLAIN.to_vec();
    vars.push(("LOG_FORMAT", "json"));
    let server = ServerProcess::start_with_ulimit("-n 40", &vars).await;
    let started = Instant::now();
    let held = idle_keep_alive_connections(server.port, 120).await;
    // Keep the descriptors exhausted for a while with more connection attempts.
    while started.elapsed() < Duration::from_millis(2500) {
        let _ = tokio::time::timeout(
            Duration::from_millis(100),
            TcpStream::connect(("127.0.0.1", server.port)),
        )
        .await;
    }
    let elapsed = started.elapsed().as_secs();
    drop(held);
    let logs = server.logs();
    let lines: Vec<Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["message"] == "accept failed")
        .collect();
    assert!(!lines.is_empty(), "no accept failure was logged:\n{logs}");
    assert!(
        lines.len() as u64 <= elapsed + 2,
        "{} accept-failure lines in {elapsed} s",
        lines.len()
    );
    assert!(lines.iter().all(|l| l["count"].as_u64().is_some()));
}

#[tokio::test]
async fn a_head_that_trickles_in_piece_by_piece_is_served_whole_first_and_on_keep_alive() {
    let app = spawn_app(&[("HTTP_MAX_HEADER_BYTES", "4096")]).await;
    let mut s = TcpStream::connect(app.addr).await.unwrap();
    let body = json!({"deviceId": "clock-1", "message": "slow", "durationSeconds": 5}).to_string();
    for round in 0..2 {
        let head = format!(
            "POST /commands/messages HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {OPS_TOKEN}\r\nX-Filler: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            "f".repeat(2000),
            body.len()
        );
        // Pieces far smaller than a read, so the head is incomplete after each one.
        for piece in head.as_bytes().chunks(97) {
            s.write_all(piece).await.unwrap();
            s.flush().await.unwrap();
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        while !answer.ends_with(b"}") {
            let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert_ne!(n, 0, "closed in round {round}");
            answer.extend_from_slice(&buf[..n]);
        }
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            answer.starts_with("HTTP/1.1 202 "),
            "round {round}: {answer}"
        );
    }
    assert_eq!(app.fake().sent().len(), 2);
}
