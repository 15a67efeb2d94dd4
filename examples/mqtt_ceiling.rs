//! The broker's own acknowledged publish rate, for `make bench` (scripts/bench.sh): one MQTT
//! connection (the `mqtt5` client the server uses) with `inflight` publishes in flight at
//! once, each awaited until the broker acknowledges it (PUBACK for QoS 1), for a fixed time.
//! No HTTP: this is the ceiling the gateway is compared with.
//!
//! ```text
//! cargo run --release --example mqtt_ceiling -- <broker-url> <topic> <payload> <seconds> [inflight] [qos]
//! ```
//!
//! Prints one line: `acked=<n> failed=<n> seconds=<s> rate=<acked per second>`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use mqtt5::{ConnectOptions, MqttClient, PublishOptions, PublishResult, QoS};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, topic, payload, seconds, rest @ ..] = args.as_slice() else {
        bail!("usage: mqtt_ceiling <broker-url> <topic> <payload> <seconds> [inflight=64] [qos=1]");
    };
    let seconds: f64 = seconds.parse().context("seconds")?;
    let inflight: usize = rest
        .first()
        .map_or(Ok(64), |s| s.parse())
        .context("inflight")?;
    let qos = match rest.get(1).map_or("1", String::as_str) {
        "0" => QoS::AtMostOnce,
        "1" => QoS::AtLeastOnce,
        "2" => QoS::ExactlyOnce,
        other => bail!("qos must be 0, 1 or 2, not {other}"),
    };

    let id = format!("bench-ceiling-{}", std::process::id());
    let options = ConnectOptions::new(id)
        .with_clean_start(true)
        .with_automatic_reconnect(false);
    let client = MqttClient::with_options(options.clone());
    client
        .connect_with_options(url, options)
        .await
        .with_context(|| format!("connect to {url}"))?;

    let client = Arc::new(client);
    let acked = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(seconds);
    let publish = PublishOptions {
        qos,
        ..PublishOptions::default()
    };
    let tasks: Vec<_> = (0..inflight)
        .map(|_| {
            let (client, acked, failed) = (client.clone(), acked.clone(), failed.clone());
            let (topic, payload, publish) = (topic.clone(), payload.clone(), publish.clone());
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    let result = client
                        .publish_with_options(topic.clone(), payload.as_bytes(), publish.clone())
                        .await;
                    let counter = match result {
                        Ok(PublishResult::Sent(_)) => &acked,
                        _ => &failed,
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await?;
    }
    // The last publishes started before the deadline and finished after it: count them
    // over the time they really took.
    let elapsed = start.elapsed().as_secs_f64();
    let acked = acked.load(Ordering::Relaxed);
    let failed = failed.load(Ordering::Relaxed);
    let _ = client.disconnect().await;
    println!(
        "acked={acked} failed={failed} seconds={elapsed:.3} rate={:.0}",
        acked as f64 / elapsed
    );
    Ok(())
}
