//! The events of every replica on every replica's streams, through Redis (SPEC 13.1):
//! each replica PUBLISHes the `command` and `schedule` events of the changes it made on
//! one channel, and SUBSCRIBEs to it on a connection of its own (a subscribed Redis
//! connection can do nothing else). Every message carries its replica's id, so a replica
//! skips its own echo: its streams got the event when it was made. So each event reaches
//! each stream exactly once. There is no replay: while the subscription is down (Redis
//! restarting) other replicas' events are missed, as a stream's own are after an overflow.
//!
//! A message is four lines: replica id, kind, device id, data (the compact JSON has no
//! newline, and a device id cannot hold one). A replica with a stream open also says
//! `<replica id>\nlistening` every second (and at once when its first stream opens); a
//! replica publishes its events only while it has heard that from another replica within
//! [`super::LISTENER_TTL`], so with nobody watching the relay costs nothing per command.
//! The price: events made in the few milliseconds before a replica hears of a new stream
//! elsewhere do not reach that stream.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use redis::Client;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::mpsc;

use super::{Event, EventKind, Hub};

/// The channel, under the store's key prefix (so a shared Redis is safe).
pub const CHANNEL: &str = "clock-server:events";
/// Events waiting to be published; past it they are not relayed (see [`Hub::publish`]).
const OUTBOX: usize = 4 * super::QUEUE;
/// The longest wait between two attempts to (re)subscribe.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Starts relaying `hub`'s events through the Redis at `url` (the `STATE_STORE` URL),
/// in the background; reconnects by itself. Errors: only a malformed URL (already
/// refused by the store at start-up).
pub fn spawn(hub: &Arc<Hub>, url: &str) -> Result<(), redis::RedisError> {
    let client = Client::open(url)?;
    let origin = uuid::Uuid::now_v7().simple().to_string();
    let config = ConnectionManagerConfig::new()
        .set_number_of_retries(1)
        .set_response_timeout(Some(Duration::from_secs(2)))
        .set_connection_timeout(Some(Duration::from_secs(2)));
    let publisher = ConnectionManager::new_lazy_with_config(client.clone(), config)?;
    let (outbox, queue) = mpsc::channel(OUTBOX);
    hub.set_relay(outbox);
    tokio::spawn(announce(
        publisher.clone(),
        origin.clone(),
        Arc::downgrade(hub),
    ));
    tokio::spawn(publish(publisher, origin.clone(), queue));
    tokio::spawn(subscribe(client, origin, Arc::downgrade(hub)));
    Ok(())
}

/// Publishes what this replica made, in pipelines of whatever has queued up meanwhile.
async fn publish(
    mut conn: ConnectionManager,
    origin: String,
    mut queue: mpsc::Receiver<Arc<Event>>,
) {
    let mut batch = Vec::with_capacity(64);
    while queue.recv_many(&mut batch, 256).await > 0 {
        let mut pipe = redis::pipe();
        for event in batch.drain(..) {
            pipe.cmd("PUBLISH")
                .arg(CHANNEL)
                .arg(encode(&origin, &event))
                .ignore();
        }
        if let Err(e) = pipe.query_async::<()>(&mut conn).await {
            tracing::warn!(error = %e, "events relay: publishing to Redis failed; the other replicas miss these events");
        }
    }
}

/// While this replica has streams open, tells the others every
/// [`super::LISTENER_EVERY`] (and at once when its first stream opens), until the server
/// stops.
async fn announce(mut conn: ConnectionManager, origin: String, hub: std::sync::Weak<Hub>) {
    let message = format!("{origin}\n{LISTENING}");
    loop {
        let Some(strong) = hub.upgrade() else { return };
        if strong.streams() > 0
            && let Err(e) = redis::cmd("PUBLISH")
                .arg(CHANNEL)
                .arg(&message)
                .query_async::<()>(&mut conn)
                .await
        {
            tracing::debug!(error = %e, "events relay: cannot say this replica listens");
        }
        tokio::select! {
            () = strong.stopping() => return,
            () = strong.first_stream_opened() => {}
            () = tokio::time::sleep(super::LISTENER_EVERY) => {}
        }
    }
}

/// The kind of the message a replica with open streams sends.
const LISTENING: &str = "listening";

/// Hands the other replicas' events to this replica's streams, until the hub is gone.
async fn subscribe(client: Client, origin: String, hub: std::sync::Weak<Hub>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        match client.get_async_pubsub().await {
            Ok(mut pubsub) => match pubsub.subscribe(CHANNEL).await {
                Ok(()) => {
                    backoff = Duration::from_millis(100);
                    tracing::debug!("events relay: subscribed");
                    let mut messages = pubsub.on_message();
                    while let Some(message) = messages.next().await {
                        let Some(hub) = hub.upgrade() else { return };
                        let payload: &[u8] = message.get_payload_bytes();
                        if is_listener(&origin, payload) {
                            hub.heard_listener();
                        } else if let Some(event) = decode(&origin, payload) {
                            hub.publish_local(event);
                        }
                    }
                    tracing::warn!("events relay: the Redis subscription ended; reconnecting");
                }
                Err(e) => tracing::warn!(error = %e, "events relay: cannot subscribe"),
            },
            Err(e) => tracing::debug!(error = %e, "events relay: cannot connect to Redis"),
        }
        if hub.strong_count() == 0 {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

fn encode(origin: &str, event: &Event) -> String {
    format!(
        "{origin}\n{}\n{}\n{}",
        event.kind.as_str(),
        event.device_id,
        event.data()
    )
}

/// Whether `payload` is another replica saying it has a stream open.
fn is_listener(origin: &str, payload: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(payload) else {
        return false;
    };
    text.split_once('\n')
        .is_some_and(|(from, kind)| from != origin && kind == LISTENING)
}

/// The event in `payload`, unless it is this replica's own (`origin`) or malformed.
fn decode(origin: &str, payload: &[u8]) -> Option<Event> {
    let text = std::str::from_utf8(payload).ok()?;
    let mut parts = text.splitn(4, '\n');
    let (from, kind, device, data) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if from == origin {
        return None;
    }
    let kind = EventKind::parse(kind).filter(|k| *k != EventKind::Device)?;
    let device = crate::domain::DeviceId::parse(device).ok()?;
    Some(Event::new(kind, device, data.to_owned()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_replica_skips_its_own_events_and_takes_the_others() {
        let device = crate::domain::DeviceId::parse("clock-1").unwrap();
        let event = Event::new(EventKind::Command, device, r#"{"a":1}"#.into());
        let wire = encode("me", &event);
        assert!(decode("me", wire.as_bytes()).is_none());
        let theirs = decode("other", wire.as_bytes()).unwrap();
        assert_eq!(theirs.frame, event.frame);
        assert_eq!(theirs.device_id.as_str(), "clock-1");
    }

    #[test]
    fn a_replica_hears_the_others_listening_never_itself() {
        let said = format!("me\n{LISTENING}");
        assert!(is_listener("other", said.as_bytes()));
        assert!(!is_listener("me", said.as_bytes()));
        assert!(!is_listener("other", b"me\ncommand\nclock-1\n{}"));
        assert!(decode("other", said.as_bytes()).is_none());
    }

    #[test]
    fn device_events_and_garbage_are_never_taken_from_the_channel() {
        assert!(decode("x", b"y\ndevice\nclock-1\n{}").is_none());
        assert!(decode("x", b"y\ncommand\nclock-1").is_none());
        assert!(decode("x", b"\xff\xfe").is_none());
    }
}
