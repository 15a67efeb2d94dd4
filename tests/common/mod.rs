//! Helpers shared by the integration tests: free ports, certificates made at test time,
//! a real Mosquitto on a free port, and polling with a bound.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod app;
pub mod certs;
pub mod device;
pub mod mosquitto;
pub mod mqtt_peer;
pub mod process;
pub mod redis;
pub mod sse;
pub mod subscriber;

use std::net::TcpListener;
use std::time::{Duration, Instant};

/// A TCP port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Where a helper process's output goes: the test's own with `TEST_LOG` set, else nowhere.
pub fn test_log() -> std::process::Stdio {
    if std::env::var_os("TEST_LOG").is_some() {
        std::process::Stdio::inherit()
    } else {
        std::process::Stdio::null()
    }
}

/// Starts a helper process (a broker, a Redis) with `spawn` and waits until `ready` says
/// it serves; one that exits first (e.g. its port was taken for a moment) is started
/// again. Panics naming `what` after 10 s.
pub fn start_until_ready(
    what: &str,
    mut spawn: impl FnMut() -> std::process::Child,
    mut ready: impl FnMut() -> bool,
) -> std::process::Child {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut child = spawn();
        loop {
            if ready() {
                return child;
            }
            if child.try_wait().unwrap().is_some() {
                break;
            }
            assert!(Instant::now() < deadline, "{what} did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(Instant::now() < deadline, "{what} kept exiting");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Lets `period` pass, on purpose: asserting that something does NOT happen (a second
/// publish, a late alarm) needs a window in which it could have, so this is a bounded
/// observation period, not synchronisation.
pub async fn observe_for(period: Duration) {
    tokio::time::sleep(period).await;
}

/// The value of `series` (name and labels, as printed) in a Prometheus text scrape; 0
/// when it is absent.
pub fn metric_value(scrape: &str, series: &str) -> u64 {
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0)
}

/// Polls `f` every 20 ms until it returns `Some`, for at most `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
