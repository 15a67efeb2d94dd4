//! Many AWTRIX clocks reporting their `stats`, for `make bench` (scripts/bench-presence.sh):
//! one MQTT connection (the `mqtt5` client the server uses) publishes, at QoS 0 as the
//! firmware does, a `stats` object for each of `devices` clocks every `period` seconds,
//! spread evenly over the period, for `seconds`.
//!
//! ```text
//! cargo run --release --example mqtt_stats -- <broker-url> <topic-with-{i}> <devices> <period> <seconds>
//! ```
//!
//! `{i}` in the topic is the clock's number (0-based), e.g. `bench/awtrix-{i}/stats`.
//! Prints one line: `published=<n> failed=<n> seconds=<s>`.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use mqtt5::{ConnectOptions, MqttClient, PublishOptions, QoS};

/// What a clock sends every 10 s (AWTRIX 3's `stats`, as in its docs/api.md), about 330
/// bytes.
const STATS: &str = r#"{"bat":100,"bat_raw":670,"type":0,"lux":12,"ldr_raw":150,"ram":145000,"bri":120,"temp":21,"hum":40,"uptime":1234,"wifi_signal":-60,"messages":3,"version":"0.98","indicator1":false,"indicator2":false,"indicator3":false,"app":"Time","uid":"awtrix_{i}","matrix":true,"ip_address":"192.168.1.50"}"#;

/// How often the publisher wakes up to send the next share of the period's messages.
const TICK: Duration = Duration::from_millis(10);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, topic, devices, period, seconds] = args.as_slice() else {
        bail!("usage: mqtt_stats <broker-url> <topic-with-{{i}}> <devices> <period> <seconds>");
    };
    let devices: u64 = devices.parse().context("devices")?;
    let period: f64 = period.parse().context("period")?;
    let seconds: f64 = seconds.parse().context("seconds")?;
    if devices == 0 || period <= 0.0 || !topic.contains("{i}") {
        bail!("devices > 0, period > 0 and a topic with {{i}} are required");
    }

    let id = format!("bench-stats-{}", std::process::id());
    let options = ConnectOptions::new(id)
        .with_clean_start(true)
        .with_automatic_reconnect(false);
    let client = MqttClient::with_options(options.clone());
    client
        .connect_with_options(url, options)
        .await
        .with_context(|| format!("connect to {url}"))?;
    let publish = PublishOptions {
        qos: QoS::AtMostOnce,
        ..PublishOptions::default()
    };

    let start = Instant::now();
    let end = start + Duration::from_secs_f64(seconds);
    let per_second = devices as f64 / period;
    let (mut sent, mut failed) = (0u64, 0u64);
    let mut ticker = tokio::time::interval(TICK);
    while Instant::now() < end {
        ticker.tick().await;
        // Catch up to where the schedule says we should be (a late tick sends more).
        let due = (start.elapsed().as_secs_f64() * per_second) as u64;
        while sent + failed < due {
            let i = (sent + failed) % devices;
            let topic = topic.replace("{i}", &i.to_string());
            let payload = STATS.replace("{i}", &i.to_string());
            match client
                .publish_with_options(&topic, payload.into_bytes(), publish.clone())
                .await
            {
                Ok(_) => sent += 1,
                Err(_) => failed += 1,
            }
        }
    }
    let _ = client.disconnect().await;
    println!(
        "published={sent} failed={failed} seconds={:.3}",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
