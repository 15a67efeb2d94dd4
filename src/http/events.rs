//! `GET /events` (SPEC 13.1): a Server-Sent Events stream of the hub's events that the
//! caller's credential covers, filtered by `?deviceId=` (repeatable) and `?types=`.
//!
//! The stream writes `: keep-alive` when it opens and every [`KEEP_ALIVE`] after, ends
//! with `event: overflow` once it fell more than [`QUEUE`](crate::events::QUEUE) events
//! behind (the hub's channel told it so), and ends when the server stops. The events are
//! written as the hub serialised them, once for every stream.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Extension, State};
use axum::http::{HeaderValue, Uri, header};
use axum::response::Response;
use percent_encoding::percent_decode_str;

use super::server::{Streaming, StreamingGuard};
use super::{ApiError, AppState, Principal};
use crate::events::{Event, KEEP_ALIVE, Kinds, Missed, Subscription};
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
            // Gather: what follows within GATHER goes out in the same write.
            tokio::time::sleep(GATHER).await;
            return Some(self.more(&admitted));
        }
    }

    /// `first`, and the events already waiting behind it (at most [`BATCH`]), as one
    /// chunk: under load a stream writes once per wake-up, not once per event. A lag met
    /// here is left for the next `recv` to report.
    fn more(&mut self, first: &Event) -> Bytes {
        let mut chunk: Option<Vec<u8>> = None;
        for _ in 0..BATCH {
            match self.sub.events.try_recv() {
                Some(event) if self.filter.admits(&event) => chunk
                    .get_or_insert_with(|| first.frame.to_vec())
                    .extend_from_slice(&event.frame),
                Some(_) => {}
                None => break,
            }
        }
        chunk.map_or_else(|| first.frame.clone(), Bytes::from)
    }
}

/// Most events one chunk of a stream carries.
const BATCH: usize = 64;

/// How long a stream waits after an event for the ones that follow it before it writes.
const GATHER: std::time::Duration = std::time::Duration::from_millis(5);

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::events::EventKind;

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
