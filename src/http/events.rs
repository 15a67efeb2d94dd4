//! `GET /events` (SPEC 13.1): a Server-Sent Events stream of the hub's events that the
//! caller's credential covers, filtered by `?deviceId=` (repeatable) and `?types=`.
//!
//! The stream writes `: keep-alive` when it opens and every [`KEEP_ALIVE`] after, ends
//! with `event: overflow` once it fell more than [`QUEUE`](crate::events::QUEUE) events
//! behind (the hub's channel told it so), and ends when the server stops. The events are
//! written as the hub serialised them, once for every stream, in chunks: a stream writes
//! [`GATHER`] after an event; a busy one that follows one device at most every [`PACE`]
//! (see [`pace`]; sooner once half its queue has filled), so a thousand consoles, one per
//! clock, cost a few thousand writes a second under load, not one per event.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Extension, State};
use axum::http::{HeaderValue, Uri, header};
use axum::response::Response;
use percent_encoding::percent_decode_str;
use tokio::time::Instant;

use super::server::{Streaming, StreamingGuard};
use super::{ApiError, AppState, Principal};
use crate::events::{Event, KEEP_ALIVE, Kinds, Missed, QUEUE, Subscription};
use crate::security::Credential;

const KEEP_ALIVE_LINE: &[u8] = b": keep-alive\n\n";
const OVERFLOW: &[u8] = b"event: overflow\ndata: {}\n\n";

/// Which events one stream shows.
struct Filter {
    principal: Credential,
    kinds: Kinds,
    /// `?deviceId=`: empty means every device in scope.
    devices: Vec<String>,
}

impl Filter {
    fn admits(&self, event: &Event) -> bool {
        self.kinds.contains(event.kind)
            && (self.devices.is_empty()
                || self.devices.iter().any(|d| d == event.device_id.as_str()))
            && self.principal.covers(&event.device_id)
    }
}

/// The filters of the query string; `Err` names the culprit.
fn parse_query(query: Option<&str>) -> Result<(Kinds, Vec<String>), String> {
    let mut kinds = None;
    let mut devices = Vec::new();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = value.replace('+', " ");
        let value = percent_decode_str(&value).decode_utf8_lossy();
        match name {
            "deviceId" => devices.push(value.trim().to_owned()),
            "types" => {
                let more = Kinds::parse(&value)?;
                let mut all: Kinds = kinds.unwrap_or(Kinds::empty());
                for kind in crate::events::EventKind::ALL {
                    if more.contains(kind) {
                        all.insert(kind);
                    }
                }
                kinds = Some(all);
            }
            // Other parameters are left alone, as the other GETs do.
            _ => {}
        }
    }
    Ok((kinds.unwrap_or(Kinds::ALL), devices))
}

/// `GET /events`.
pub async fn events(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    uri: Uri,
    streaming: Option<Extension<Streaming>>,
) -> Result<Response, ApiError> {
    let (kinds, devices) = parse_query(uri.query()).map_err(ApiError::InvalidParameter)?;
    // Following one device: that device's own channel (the filter still applies).
    let alone = match devices.as_slice() {
        [one] => crate::domain::DeviceId::parse(one).ok(),
        _ => None,
    };
    let Some(subscription) = state.events.subscribe(alone.as_ref()) else {
        return Err(ApiError::TooManyEventStreams);
    };
    let filter = Filter {
        principal: principal.0,
        kinds,
        devices,
    };
    // The client says nothing while it listens: the idle read timeout is lifted.
    let guard = streaming.map(|Extension(s)| s.hold());
    let stream = futures_util::stream::unfold(
        Some(Stream::new(subscription, filter, guard)),
        |stream| async move {
            let mut stream = stream?;
            let chunk = stream.next().await?;
            let next = (!stream.ended).then_some(stream);
            Some((Ok::<_, std::convert::Infallible>(chunk), next))
        },
    );
    let mut res = Response::new(Body::from_stream(stream));
    let headers = res.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    // A proxy (nginx) must not hold the events back in a buffer.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(res)
}

/// One open stream.
struct Stream {
    sub: Subscription,
    filter: Filter,
    tick: tokio::time::Interval,
    /// When the stream last wrote events (`None`: not yet).
    wrote: Option<Instant>,
    /// How long after that write the next one waits ([`pace`]).
    pace: Duration,
    /// The last chunk (overflow) was handed out: nothing follows.
    ended: bool,
    _streaming: Option<StreamingGuard>,
}

impl Stream {
    fn new(sub: Subscription, filter: Filter, streaming: Option<StreamingGuard>) -> Self {
        // The first tick is at once: the client sees the stream is open.
        let mut tick = tokio::time::interval(KEEP_ALIVE);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Self {
            sub,
            filter,
            tick,
            wrote: None,
            pace: GATHER,
            ended: false,
            _streaming: streaming,
        }
    }

    /// The next chunk to write; `None` ends the stream.
    async fn next(&mut self) -> Option<Bytes> {
        loop {
            let admitted = tokio::select! {
                biased;
                _ = self.sub.closed.wait_for(|closed| *closed) => return None,
                received = self.sub.events.recv() => match received {
                    Ok(event) if self.filter.admits(&event) => event,
                    Ok(_) => continue,
                    Err(Missed::Lagged) => {
                        self.ended = true;
                        return Some(Bytes::from_static(OVERFLOW));
                    }
                    Err(Missed::Closed) => return None,
                },
                _ = self.tick.tick() => return Some(Bytes::from_static(KEEP_ALIVE_LINE)),
            };
            // Gather: what follows within the wait goes out in the same write. A quiet
            // stream waits GATHER. One that follows one device and wrote lately waits
            // until `pace` after that write (a busy stream writes fewer, larger chunks),
            // or until the hub says its queue is half full.
            let now = Instant::now();
            let until = match self.wrote {
                Some(wrote) if self.sub.events.paced() => (wrote + self.pace).max(now + GATHER),
                _ => now + GATHER,
            };
            tokio::select! {
                () = tokio::time::sleep_until(until) => {}
                () = self.sub.events.urged() => {}
            }
            let (chunk, events) = self.more(&admitted);
            let now = Instant::now();
            if let Some(wrote) = self.wrote.filter(|_| self.sub.events.paced()) {
                self.pace = pace(events, now.saturating_duration_since(wrote));
            }
            self.wrote = Some(now);
            return Some(chunk);
        }
    }

    /// `first`, and the events already waiting behind it (up to [`CHUNK_MAX`] bytes), as
    /// one chunk, with the number of events in it: under load a stream writes once per
    /// wake-up, not once per event. A lag met here is left for the next `recv` to report.
    fn more(&mut self, first: &Event) -> (Bytes, usize) {
        let mut chunk: Option<Vec<u8>> = None;
        let mut events = 1;
        let mut bytes = first.frame.len();
        // The rest waits for the next write (at once when the queue is half full).
        while bytes < CHUNK_MAX {
            match self.sub.events.try_recv() {
                Some(event) if self.filter.admits(&event) => {
                    events += 1;
                    bytes += event.frame.len();
                    chunk
                        .get_or_insert_with(|| first.frame.to_vec())
                        .extend_from_slice(&event.frame);
                }
                Some(_) => {}
                None => break,
            }
        }
        (
            chunk.map_or_else(|| first.frame.clone(), Bytes::from),
            events,
        )
    }
}

/// Most bytes a chunk gathers (past its first event): what a stream holds in memory while
/// its client reads is bounded (1,000 slow streams: about 32 MiB), not its whole queue.
const CHUNK_MAX: usize = 32 * 1024;

/// How long a stream waits after an event for the ones that follow it before it writes,
/// when it has not written lately.
const GATHER: Duration = Duration::from_millis(5);

/// The longest a busy stream waits between two writes: an event is on the wire at most
/// this long after it happened.
const PACE: Duration = Duration::from_millis(100);

/// How long a stream waits after a write before the next, now that it wrote `events`
/// events `since` after the previous write: at that rate a quarter of its queue fills in
/// the wait (so a fast stream writes often enough never to overflow, and a slow one
/// gathers its events), within [`GATHER`] and [`PACE`].
fn pace(events: usize, since: Duration) -> Duration {
    let quarter = u32::try_from(QUEUE / 4).unwrap_or(u32::MAX);
    let events = u32::try_from(events.max(1)).unwrap_or(u32::MAX);
    since
        .checked_mul(quarter)
        .map_or(PACE, |wait| (wait / events).clamp(GATHER, PACE))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::events::EventKind;

    #[test]
    fn a_busy_stream_writes_less_often_and_a_fast_one_often_enough() {
        // Two events 40 ms apart: the stream waits the longest before its next write.
        assert_eq!(pace(2, Duration::from_millis(40)), PACE);
        // 250 events in 5 ms (50,000 a second): a quarter of the queue fills in ~5 ms.
        assert_eq!(
            pace(250, Duration::from_millis(5)),
            Duration::from_micros(5120)
        );
        // Faster still: never below GATHER; an idle week or a zero count cannot overflow.
        assert_eq!(pace(1000, Duration::from_millis(1)), GATHER);
        assert_eq!(pace(0, Duration::from_secs(7 * 86_400)), PACE);
        assert_eq!(pace(1, Duration::MAX), PACE);
    }

    #[test]
    fn the_query_gives_devices_and_types() {
        let (kinds, devices) =
            parse_query(Some("deviceId=clock-1&deviceId=%20lamp-2&types=command")).unwrap();
        assert_eq!(devices, ["clock-1", "lamp-2"]);
        assert!(kinds.contains(EventKind::Command) && !kinds.contains(EventKind::Device));
        let (kinds, devices) = parse_query(None).unwrap();
        assert_eq!((kinds, devices.len()), (Kinds::ALL, 0));
        let (kinds, _) = parse_query(Some("types=device&types=schedule")).unwrap();
        assert!(kinds.contains(EventKind::Device) && kinds.contains(EventKind::Schedule));
        assert!(parse_query(Some("types=commands")).is_err());
    }
}
