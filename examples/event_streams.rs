//! Holds N `GET /events` streams (SPEC 13.1) open on one clock-server and counts what each
//! gets, for `make bench` (scripts/bench-events.sh). The same protocol, arguments and output
//! as scripts/bench/event_streams.py, at a fraction of its CPU: on a machine of two cores
//! the stream client's own CPU comes off the command rate being measured.
//!
//! ```text
//! cargo run --release --example event_streams -- <url> <token> <n> <device|all> <devices>
//! ```
//!
//! MODE `device`: stream i follows `?deviceId=bench-<i mod DEVICES>&types=command` (what
//! scripts/bench/wrk.lua posts with BENCH_DEVICES); MODE `all`: every stream takes every
//! `command` event (`?types=command`).
//!
//! It opens the N streams (one thread), prints `ready opened=<n> seconds=<s>` once every
//! one has answered 200 and written its opening `: keep-alive`, then reads them all. On
//! SIGUSR1 it reads on until no stream has received anything for 1 s (at most 30 s more),
//! then prints one line:
//!
//! ```text
//! STREAMS opened=<n> overflowed=<n> ended=<n> events=<n> sent=<n> min_sent=<n> max_sent=<n>
//! ```
//!
//! and writes `<stream> <deviceId or *> <sent> <events> <overflowed 0/1>` per stream to the
//! file named by BENCH_STREAMS_DETAIL, if set. Exits 1 if a stream could not be opened.
//!
//! With BENCH_ACK_BROKER=<host>:<port> it also plays the device (SPEC 7.4) for a sample of
//! commands: every 50 ms until SIGUSR1 it acknowledges (QoS 0, on `<BENCH_ACK_PREFIX,
//! default clocks/commands>/<deviceId>/ack`) the newest command stream 0 has seen `sent`,
//! printing `ack <commandId>`, and times each `succeeded` event of those commands on every
//! stream from the moment the acknowledgement was written. The summary then adds
//! `acks=<n> ack_events=<arrivals> ack_p50_ms=<ms> ack_p99_ms=<ms>`.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use mqtt5::{ConnectOptions, MqttClient, PublishOptions, QoS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

const ACK_EVERY: Duration = Duration::from_millis(50);
const QUIET: Duration = Duration::from_secs(1);
const DRAIN_AT_MOST: Duration = Duration::from_secs(30);
const OPEN_WITHIN: Duration = Duration::from_secs(60);

/// What all the streams share (one thread: `Rc<RefCell<_>>`).
#[derive(Default)]
struct Shared {
    started: usize,
    last_read: Option<Instant>,
    /// (commandId, deviceId) of the newest `sent` on stream 0.
    newest: Option<(String, String)>,
    /// commandId -> when its acknowledgement was written.
    written: HashMap<String, Instant>,
    latencies: Vec<Duration>,
}

/// What one stream counted.
#[derive(Default)]
struct Counts {
    events: u64,
    sent: u64,
    overflowed: bool,
    ended: bool,
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The JSON string value after `"<key>":"` in `block`.
fn field(block: &[u8], key: &[u8]) -> Option<String> {
    let at = find(block, key)? + key.len();
    let len = find(&block[at..], b"\"")?;
    Some(String::from_utf8_lossy(&block[at..at + len]).into_owned())
}

/// One stream: the HTTP head, the chunked framing and the SSE blocks.
struct Stream {
    index: usize,
    probe: bool,
    raw: Vec<u8>,
    head_done: bool,
    chunk_left: usize,
    need_crlf: bool,
    text: Vec<u8>,
    started: bool,
    counts: Counts,
}

impl Stream {
    /// Takes bytes from the socket; an error text for a refused stream.
    fn feed(&mut self, data: &[u8], shared: &RefCell<Shared>) -> Result<(), String> {
        self.raw.extend_from_slice(data);
        if !self.head_done {
            let Some(end) = find(&self.raw, b"\r\n\r\n") else {
                return Ok(());
            };
            let head = String::from_utf8_lossy(&self.raw[..end]).into_owned();
            self.raw.drain(..end + 4);
            let status = head.lines().next().unwrap_or_default();
            if !status.contains(" 200") {
                return Err(status.to_string());
            }
            if !head.to_ascii_lowercase().contains("chunked") {
                return Err(format!("the answer is not chunked: {head}"));
            }
            self.head_done = true;
        }
        self.unchunk();
        self.split(shared);
        Ok(())
    }

    fn unchunk(&mut self) {
        let mut at = 0;
        let raw = &self.raw;
        while at < raw.len() {
            if self.need_crlf {
                if raw.len() - at < 2 {
                    break;
                }
                at += 2;
                self.need_crlf = false;
                continue;
            }
            if self.chunk_left == 0 {
                let Some(line_end) = find(&raw[at..], b"\r\n") else {
                    break;
                };
                let line = String::from_utf8_lossy(&raw[at..at + line_end]).into_owned();
                let size = usize::from_str_radix(line.split(';').next().unwrap_or("0").trim(), 16)
                    .unwrap_or(0);
                at += line_end + 2;
                if size == 0 {
                    self.counts.ended = true;
                    at = raw.len();
                    break;
                }
                self.chunk_left = size;
            }
            let take = self.chunk_left.min(raw.len() - at);
            self.text.extend_from_slice(&raw[at..at + take]);
            at += take;
            self.chunk_left -= take;
            if self.chunk_left == 0 {
                self.need_crlf = true;
            }
        }
        self.raw.drain(..at);
    }

    fn split(&mut self, shared: &RefCell<Shared>) {
        let mut at = 0;
        while let Some(end) = find(&self.text[at..], b"\n\n") {
            let block = &self.text[at..at + end];
            at += end + 2;
            if !self.started {
                self.started = true;
                shared.borrow_mut().started += 1;
            }
            if block.starts_with(b"event: command\n") {
                self.counts.events += 1;
                if find(block, br#""status":"sent""#).is_some() {
                    self.counts.sent += 1;
                    if self.probe
                        && self.index == 0
                        && let (Some(id), Some(device)) = (
                            field(block, br#""commandId":""#),
                            field(block, br#""deviceId":""#),
                        )
                    {
                        shared.borrow_mut().newest = Some((id, device));
                    }
                } else if self.probe
                    && find(block, br#""status":"succeeded""#).is_some()
                    && let Some(id) = field(block, br#""commandId":""#)
                {
                    let mut shared = shared.borrow_mut();
                    if let Some(at) = shared.written.get(&id).copied() {
                        shared.latencies.push(at.elapsed());
                    }
                }
            } else if block.starts_with(b"event: overflow") {
                self.counts.overflowed = true;
            }
        }
        self.text.drain(..at);
    }
}

/// Reads one stream until the server ends it, it fails, or `stop` says so.
async fn run_stream(
    mut stream: Stream,
    mut socket: TcpStream,
    shared: Rc<RefCell<Shared>>,
    mut stop: watch::Receiver<bool>,
) -> Result<Counts, String> {
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let read = tokio::select! {
            read = socket.read(&mut buf) => read,
            _ = stop.changed() => return Ok(stream.counts),
        };
        match read {
            Ok(0) | Err(_) => {
                stream.counts.ended = true;
                return Ok(stream.counts);
            }
            Ok(n) => {
                shared.borrow_mut().last_read = Some(Instant::now());
                stream.feed(&buf[..n], &shared)?;
                if stream.counts.ended {
                    return Ok(stream.counts);
                }
            }
        }
    }
}

fn percentile(sorted: &[Duration], q: f64) -> String {
    if sorted.is_empty() {
        return "-".into();
    }
    let i = ((q * sorted.len() as f64) as usize).min(sorted.len() - 1);
    format!("{:.2}", sorted[i].as_secs_f64() * 1000.0)
}

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    let code = local.block_on(&runtime, run())?;
    std::process::exit(code)
}

async fn run() -> anyhow::Result<i32> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, token, n, mode, devices] = args.as_slice() else {
        bail!("usage: event_streams <url> <token> <n> <device|all> <devices>");
    };
    let n: usize = n.parse().context("n")?;
    let devices: usize = devices.parse::<usize>().context("devices")?.max(1);
    if mode != "device" && mode != "all" {
        bail!("MODE must be device or all, not {mode:?}");
    }
    let authority = url
        .strip_prefix("http://")
        .context("the URL must start with http://")?
        .trim_end_matches('/')
        .to_string();
    let mut usr1 = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())?;

    let probe = match std::env::var("BENCH_ACK_BROKER") {
        Ok(broker) if !broker.is_empty() => {
            let id = format!("bench-events-{}", std::process::id());
            let options = ConnectOptions::new(id)
                .with_clean_start(true)
                .with_automatic_reconnect(false);
            let client = MqttClient::with_options(options.clone());
            let url = format!("mqtt://{broker}");
            client
                .connect_with_options(&url, options)
                .await
                .with_context(|| format!("connect to {url}"))?;
            Some(client)
        }
        _ => None,
    };
    let prefix = std::env::var("BENCH_ACK_PREFIX")
        .ok()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "clocks/commands".into());

    let shared = Rc::new(RefCell::new(Shared::default()));
    let (stop_tx, stop_rx) = watch::channel(false);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    let mut names = Vec::with_capacity(n);
    for i in 0..n {
        let device = if mode == "device" {
            format!("bench-{}", i % devices)
        } else {
            "*".into()
        };
        let query = if mode == "device" {
            format!("types=command&deviceId={device}")
        } else {
            "types=command".into()
        };
        let mut socket = TcpStream::connect(&authority)
            .await
            .with_context(|| format!("connect to {authority}"))?;
        socket
            .write_all(
                format!(
                    "GET /events?{query} HTTP/1.1\r\nHost: {authority}\r\n\
                     Authorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n"
                )
                .as_bytes(),
            )
            .await?;
        let stream = Stream {
            index: i,
            probe: probe.is_some(),
            raw: Vec::new(),
            head_done: false,
            chunk_left: 0,
            need_crlf: false,
            text: Vec::new(),
            started: false,
            counts: Counts::default(),
        };
        tasks.push(tokio::task::spawn_local(run_stream(
            stream,
            socket,
            shared.clone(),
            stop_rx.clone(),
        )));
        names.push(device);
    }

    // Every stream answered 200 and wrote its first block before the load starts.
    while shared.borrow().started < n {
        if started.elapsed() > OPEN_WITHIN || tasks.iter().any(|t| t.is_finished()) {
            let waiting = n - shared.borrow().started;
            eprintln!("{waiting} of {n} streams did not open");
            for task in tasks.iter().filter(|t| t.is_finished()) {
                task.abort();
            }
            return Ok(1);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "ready opened={n} seconds={:.3}",
        started.elapsed().as_secs_f64()
    );

    let publish = PublishOptions {
        qos: QoS::AtMostOnce,
        ..PublishOptions::default()
    };
    let mut ticker = tokio::time::interval(ACK_EVERY);
    loop {
        tokio::select! {
            _ = usr1.recv() => break,
            _ = ticker.tick() => {}
        }
        let Some(client) = &probe else { continue };
        let newest = shared.borrow_mut().newest.take();
        let Some((id, device)) = newest else { continue };
        if shared.borrow().written.contains_key(&id) {
            continue;
        }
        let payload = format!(r#"{{"commandId":"{id}","status":"succeeded"}}"#);
        client
            .publish_with_options(
                &format!("{prefix}/{device}/ack"),
                payload.into_bytes(),
                publish.clone(),
            )
            .await
            .context("publish an acknowledgement")?;
        shared
            .borrow_mut()
            .written
            .insert(id.clone(), Instant::now());
        println!("ack {id}");
    }

    // Drained: nothing for QUIET, or DRAIN_AT_MOST.
    let deadline = Instant::now() + DRAIN_AT_MOST;
    loop {
        let last = shared.borrow().last_read.unwrap_or(started);
        if Instant::now() >= deadline || last.elapsed() >= QUIET {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = stop_tx.send(true);

    let mut counts = Vec::with_capacity(n);
    for task in tasks {
        match task.await {
            Ok(Ok(c)) => counts.push(c),
            Ok(Err(refused)) => {
                eprintln!("a stream was refused: {refused}");
                return Ok(1);
            }
            Err(e) => bail!("a stream's task failed: {e}"),
        }
    }
    let sent: Vec<u64> = counts.iter().map(|c| c.sent).collect();
    let mut line = format!(
        "STREAMS opened={n} overflowed={} ended={} events={} sent={} min_sent={} max_sent={}",
        counts.iter().filter(|c| c.overflowed).count(),
        counts.iter().filter(|c| c.ended && !c.overflowed).count(),
        counts.iter().map(|c| c.events).sum::<u64>(),
        sent.iter().sum::<u64>(),
        sent.iter().min().copied().unwrap_or(0),
        sent.iter().max().copied().unwrap_or(0),
    );
    if probe.is_some() {
        let shared = shared.borrow();
        let mut lat = shared.latencies.clone();
        lat.sort();
        line += &format!(
            " acks={} ack_events={} ack_p50_ms={} ack_p99_ms={}",
            shared.written.len(),
            lat.len(),
            percentile(&lat, 0.5),
            percentile(&lat, 0.99)
        );
    }
    println!("{line}");
    if let Ok(path) = std::env::var("BENCH_STREAMS_DETAIL")
        && !path.is_empty()
    {
        let mut out = String::new();
        for (i, (c, device)) in counts.iter().zip(&names).enumerate() {
            out += &format!(
                "{i} {device} {} {} {}\n",
                c.sent,
                c.events,
                u8::from(c.overflowed)
            );
        }
        std::fs::write(&path, out).with_context(|| format!("write {path}"))?;
    }
    if let Some(client) = probe {
        let _ = client.disconnect().await;
    }
    Ok(0)
}
