//! Live events (SPEC 13.1): the [`Hub`] every change is published to and every
//! `GET /events` stream reads from.
//!
//! - One `tokio::sync::broadcast` channel of 1024 events per replica: each stream has its
//!   own cursor into it, so a stream that falls more than 1024 events behind is told so
//!   (`Lagged`) and ends with `event: overflow` instead of growing a queue. Publishing is
//!   one clone of an `Arc` per event, whatever the number of streams.
//! - A stream that follows one device (`?deviceId=` once) has a queue of its own (bounded
//!   at 1024 too; it allocates as it fills), listed under that device: a thousand
//!   dashboards each following their clock wake only for their clock's events, not each
//!   for every event.
//! - An event is serialised once, when published; streams filter by device and kind and
//!   write the bytes as they are.
//! - Streams are counted ([`StreamPermit`]); past `EVENTS_MAX_STREAMS` a new one is refused.
//! - With `redis://` the `command` and `schedule` events also go to the other replicas
//!   through Redis (the relay in [`relay`]); `device` events never leave the replica.
//!   Only while another replica has a stream open: a replica with streams says so on the
//!   channel every second ([`LISTENER_TTL`]), so with nobody watching a command costs
//!   no event, no record read and no Redis message.
//! - [`Hub::close`] at shutdown ends every stream, so open streams do not hold the
//!   graceful shutdown for its whole grace period.

#[cfg(feature = "redis-store")]
pub mod relay;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use tokio::sync::{broadcast, mpsc, watch};

use crate::domain::DeviceId;
use crate::store::CommandRecord;

/// How far a stream may fall behind before it gets `event: overflow` (SPEC 13.1).
pub const QUEUE: usize = 1024;
/// `EVENTS_MAX_STREAMS` default.
pub const DEFAULT_MAX_STREAMS: usize = 1000;
/// How long another replica counts as listening after it last said so (it says so every
/// [`LISTENER_EVERY`] while it has a stream open).
pub const LISTENER_TTL: Duration = Duration::from_secs(3);
/// How often a replica with open streams tells the others (and at once when its first
/// stream opens).
pub const LISTENER_EVERY: Duration = Duration::from_secs(1);

/// Longest gap between two writes on a stream: a `: keep-alive` comment fills it.
pub const KEEP_ALIVE: std::time::Duration = std::time::Duration::from_secs(15);

/// The kinds of event (`event:` line, and the names `?types=` accepts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    Command,
    Device,
    Schedule,
}

impl EventKind {
    pub const ALL: [Self; 3] = [Self::Command, Self::Device, Self::Schedule];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Command => "command",
            Self::Device => "device",
            Self::Schedule => "schedule",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// A bit for filter sets.
    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// One event, serialised once: the `event:`/`data:` block a stream writes as it is.
#[derive(Debug)]
pub struct Event {
    pub kind: EventKind,
    pub device_id: DeviceId,
    /// `event: <kind>\ndata: <data>\n\n`, built in one buffer.
    pub frame: Bytes,
    /// Where the `data:` JSON starts in `frame` (it ends before the last two bytes).
    data_at: usize,
}

/// Room for a command's whole frame (its record is about 300 bytes), so that building
/// one is a single allocation.
const FRAME_CAPACITY: usize = 512;

impl Event {
    pub fn new(kind: EventKind, device_id: DeviceId, data: String) -> Self {
        Self::framed(kind, device_id, |frame| {
            frame.extend_from_slice(data.as_bytes())
        })
    }

    /// `event: <kind>\ndata: ` + what `data` writes + the blank line, in one buffer.
    fn framed(kind: EventKind, device_id: DeviceId, data: impl FnOnce(&mut Vec<u8>)) -> Self {
        let mut frame = Vec::with_capacity(FRAME_CAPACITY);
        frame.extend_from_slice(b"event: ");
        frame.extend_from_slice(kind.as_str().as_bytes());
        frame.extend_from_slice(b"\ndata: ");
        let data_at = frame.len();
        data(&mut frame);
        frame.extend_from_slice(b"\n\n");
        Self {
            kind,
            device_id,
            frame: Bytes::from(frame),
            data_at,
        }
    }

    /// The `data:` JSON (one line: serde_json never writes a newline in compact form).
    pub fn data(&self) -> &str {
        let end = self.frame.len().saturating_sub(2).max(self.data_at);
        std::str::from_utf8(self.frame.get(self.data_at..end).unwrap_or_default())
            .unwrap_or_default()
    }

    /// A `command` event: the record as `GET /commands/{id}` shows it, serialised
    /// straight into the frame (`None` for a record whose device id is not one: no stream
    /// could be shown it).
    pub fn command(record: &CommandRecord) -> Option<Self> {
        // Plain strings, bools and timestamps into a Vec: cannot fail.
        Some(Self::framed(
            EventKind::Command,
            record.device_id.clone(),
            |frame| {
                let _ = serde_json::to_writer(frame, record);
            },
        ))
    }

    /// A `schedule` event: the schedule's JSON object as `GET /schedules/{id}` shows it,
    /// with `"deleted"` added as its last field (the fields keep their order).
    pub fn schedule(device_id: &DeviceId, schedule_json: &str, deleted: bool) -> Self {
        let body = schedule_json.trim_end();
        let data = match body.strip_suffix('}') {
            Some(open) if open.trim_end().ends_with('{') => {
                format!("{open}\"deleted\":{deleted}}}")
            }
            Some(open) => format!("{open},\"deleted\":{deleted}}}"),
            None => format!("{{\"deleted\":{deleted}}}"),
        };
        Self::new(EventKind::Schedule, device_id.clone(), data)
    }

    /// A `device` event: the device's JSON object as `GET /devices/{id}` shows it.
    pub fn device(device_id: &DeviceId, device_json: String) -> Self {
        Self::new(EventKind::Device, device_id.clone(), device_json)
    }
}

/// A set of event kinds (`?types=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kinds(u8);

impl Kinds {
    pub const ALL: Self = Self(0b111);

    pub fn empty() -> Self {
        Self(0)
    }

    pub fn insert(&mut self, kind: EventKind) {
        self.0 |= kind.bit();
    }

    pub fn contains(self, kind: EventKind) -> bool {
        self.0 & kind.bit() != 0
    }

    /// `command,device,schedule` (spaces around names ignored); `Err` names the culprit.
    pub fn parse(list: &str) -> Result<Self, String> {
        let mut kinds = Self::empty();
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            match EventKind::parse(name) {
                Some(kind) => kinds.insert(kind),
                None => {
                    return Err(format!(
                        "types: {name:?} is not an event type; expected a comma list of command, device, schedule"
                    ));
                }
            }
        }
        if kinds == Self::empty() {
            return Err(
                "types is empty; expected a comma list of command, device, schedule".into(),
            );
        }
        Ok(kinds)
    }
}

/// The events of one replica.
pub struct Hub {
    tx: broadcast::Sender<Arc<Event>>,
    /// Open streams, and the cap (`EVENTS_MAX_STREAMS`).
    streams: Arc<AtomicUsize>,
    max_streams: usize,
    /// To the other replicas (`redis://`), when set up.
    relay: std::sync::OnceLock<mpsc::Sender<Arc<Event>>>,
    /// `true` once the server is stopping: every stream ends.
    closed: watch::Sender<bool>,
    /// Until when (milliseconds after `started`) another replica counts as listening.
    others_until: AtomicU64,
    started: Instant,
    /// Told when this replica's first stream opens (the relay says so at once).
    first_stream: tokio::sync::Notify,
    /// The queues of the streams that follow one device alone (see the module doc).
    per_device: std::sync::Mutex<HashMap<DeviceId, Vec<Follower>>>,
    /// The commands that went final lately, held while their events are published.
    finals: std::sync::Mutex<RecentFinals>,
}

/// How many commands that went final [`Hub::command`] remembers: the race it guards
/// against lasts microseconds to milliseconds; at 20,000 commands a second this is 200 ms.
const RECENT_FINALS: usize = 4096;

/// The ids of the commands that went final lately, oldest first out.
#[derive(Default)]
struct RecentFinals {
    ids: std::collections::HashSet<Arc<str>>,
    order: std::collections::VecDeque<Arc<str>>,
}

impl RecentFinals {
    fn note(&mut self, id: &str) {
        let id: Arc<str> = Arc::from(id);
        if self.ids.insert(id.clone()) {
            self.order.push_back(id);
            if self.order.len() > RECENT_FINALS
                && let Some(oldest) = self.order.pop_front()
            {
                self.ids.remove(&oldest);
            }
        }
    }
}

/// One stream that follows one device: its queue, and whether it fell behind.
struct Follower {
    tx: mpsc::Sender<Arc<Event>>,
    lagged: Arc<AtomicBool>,
    /// Told when the queue is half full: a stream that paces its writes writes now.
    urge: Arc<tokio::sync::Notify>,
}

/// Why a stream's next event is not there.
pub enum Missed {
    /// It fell more than [`QUEUE`] events behind.
    Lagged,
    /// The hub is gone.
    Closed,
}

/// What one stream reads.
pub enum Events {
    /// Every device's events. `lagged`: [`Self::try_recv`] met a lag (the channel says
    /// so once, and moves on past the lost events), which the next `recv` reports.
    All {
        rx: broadcast::Receiver<Arc<Event>>,
        lagged: bool,
    },
    /// One device's events, in the stream's own queue.
    One {
        rx: mpsc::Receiver<Arc<Event>>,
        lagged: Arc<AtomicBool>,
        urge: Arc<tokio::sync::Notify>,
    },
}

impl Events {
    /// The next event.
    pub async fn recv(&mut self) -> Result<Arc<Event>, Missed> {
        match self {
            Self::All { lagged: true, .. } => Err(Missed::Lagged),
            Self::All { rx, .. } => rx.recv().await.map_err(|e| match e {
                broadcast::error::RecvError::Lagged(_) => Missed::Lagged,
                broadcast::error::RecvError::Closed => Missed::Closed,
            }),
            Self::One { rx, lagged, .. } => match rx.recv().await {
                Some(event) => Ok(event),
                None if lagged.load(Ordering::Acquire) => Err(Missed::Lagged),
                None => Err(Missed::Closed),
            },
        }
    }

    /// An event already waiting, if any. A lag met here is left for [`Self::recv`] to
    /// report: no event is read after it.
    pub fn try_recv(&mut self) -> Option<Arc<Event>> {
        match self {
            Self::All { lagged: true, .. } => None,
            Self::All { rx, lagged } => match rx.try_recv() {
                Ok(event) => Some(event),
                Err(broadcast::error::TryRecvError::Lagged(_)) => {
                    *lagged = true;
                    None
                }
                Err(_) => None,
            },
            Self::One { rx, .. } => rx.try_recv().ok(),
        }
    }

    /// Whether the stream may pace its writes: one device's queue, whose filling the hub
    /// watches ([`Self::urged`]). A stream of every device shares the hub's channel, whose
    /// lag cannot be seen coming: it writes promptly.
    pub fn paced(&self) -> bool {
        matches!(self, Self::One { .. })
    }

    /// Resolves once the stream's queue is half full (never for a stream of every device).
    pub async fn urged(&self) {
        match self {
            Self::One { urge, .. } => urge.notified().await,
            Self::All { .. } => std::future::pending().await,
        }
    }
}

/// A place among the open streams; dropping it frees the place.
pub struct StreamPermit {
    streams: Arc<AtomicUsize>,
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        self.streams.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What a stream reads: the events from now on, and the shutdown signal.
pub struct Subscription {
    pub events: Events,
    pub closed: watch::Receiver<bool>,
    pub permit: StreamPermit,
}

impl Hub {
    pub fn new(max_streams: usize) -> Self {
        let (tx, _) = broadcast::channel(QUEUE);
        Self {
            tx,
            streams: Arc::new(AtomicUsize::new(0)),
            max_streams,
            relay: std::sync::OnceLock::new(),
            closed: watch::Sender::new(false),
            others_until: AtomicU64::new(0),
            started: Instant::now(),
            first_stream: tokio::sync::Notify::new(),
            per_device: std::sync::Mutex::new(HashMap::new()),
            finals: std::sync::Mutex::new(RecentFinals::default()),
        }
    }

    fn per_device(&self) -> std::sync::MutexGuard<'_, HashMap<DeviceId, Vec<Follower>>> {
        self.per_device
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// To this replica's streams: those following every device, and those following the
    /// event's device alone.
    fn send_local(&self, event: Arc<Event>) {
        {
            let mut followers = self.per_device();
            if let Some(list) = followers.get_mut(&event.device_id) {
                list.retain(|f| match f.tx.try_send(event.clone()) {
                    Ok(()) => {
                        if f.tx.capacity() <= QUEUE / 2 {
                            f.urge.notify_one();
                        }
                        true
                    }
                    // Behind by a whole queue: it ends with `overflow`, as a stream of
                    // every device does.
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        f.lagged.store(true, Ordering::Release);
                        false
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => false,
                });
                if list.is_empty() {
                    followers.remove(&event.device_id);
                }
            }
        }
        if self.tx.receiver_count() > 0 {
            let _ = self.tx.send(event);
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Another replica said it has a stream open (the relay heard it).
    pub fn heard_listener(&self) {
        let until = self
            .now_ms()
            .saturating_add(LISTENER_TTL.as_millis() as u64);
        self.others_until.fetch_max(until, Ordering::AcqRel);
    }

    /// Whether another replica has said, within [`LISTENER_TTL`], that it has a stream.
    pub fn others_listening(&self) -> bool {
        self.relay.get().is_some() && self.now_ms() < self.others_until.load(Ordering::Acquire)
    }

    /// Resolves when this replica's first stream opens (for the relay's announcement).
    pub async fn first_stream_opened(&self) {
        self.first_stream.notified().await;
    }

    /// Publishes a change made by this replica: to its streams, and (`command`,
    /// `schedule`) to the other replicas.
    pub fn publish(&self, event: Event) {
        let event = Arc::new(event);
        if event.kind != EventKind::Device
            && self.others_listening()
            && let Some(relay) = self.relay.get()
        {
            // Full: the relay is behind (Redis slow or down); the other replicas miss
            // this event, as a stream that overflows would. Never blocks a command.
            if relay.try_send(event.clone()).is_err() {
                tracing::debug!("events relay queue full; an event was not relayed");
            }
        }
        self.send_local(event);
    }

    /// Publishes an event another replica made (from the relay): to this replica's
    /// streams only.
    pub fn publish_local(&self, event: Event) {
        self.send_local(Arc::new(event));
    }

    /// A command's record changed (or was created). A command's events leave in the
    /// order of its statuses: a non-final one published after the final one is stale and
    /// dropped. (An acknowledgement may overtake the broker's PUBACK: the `succeeded` event
    /// is published while the `sent` one, whose store write came first, is on its way.)
    pub fn command(&self, record: &CommandRecord) {
        if !self.wanted() {
            return;
        }
        let Some(event) = Event::command(record) else {
            return;
        };
        // Held while publishing, so a final event and a stale one cannot swap between
        // the check and the send.
        let mut finals = self
            .finals
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if record.status.is_final() {
            finals.note(&record.command_id);
        } else if finals.ids.contains(record.command_id.as_str()) {
            return;
        }
        self.publish(event);
    }

    /// Whether anyone could receive an event now: a stream here, or on another replica.
    /// Lets the callers skip building an event (e.g. reading a record) nobody reads.
    pub fn wanted(&self) -> bool {
        self.streams() > 0 || self.others_listening()
    }

    /// Sends this replica's `command` and `schedule` events to `relay` from now on.
    pub fn set_relay(&self, relay: mpsc::Sender<Arc<Event>>) {
        let _ = self.relay.set(relay);
    }

    /// A new stream (following `device` alone, or every device), or `None` at the cap.
    pub fn subscribe(&self, device: Option<&DeviceId>) -> Option<Subscription> {
        let taken = self
            .streams
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max_streams).then_some(n + 1)
            });
        match taken {
            Err(_) => return None,
            Ok(0) => self.first_stream.notify_waiters(),
            Ok(_) => {}
        }
        let events = match device {
            None => Events::All {
                rx: self.tx.subscribe(),
                lagged: false,
            },
            Some(device) => {
                let (tx, rx) = mpsc::channel(QUEUE);
                let lagged = Arc::new(AtomicBool::new(false));
                let mut followers = self.per_device();
                // Streams that ended are dropped here too (not only when their device
                // has an event), so opening and closing streams cannot grow the lists.
                let list = followers.entry(device.clone()).or_default();
                list.retain(|f| !f.tx.is_closed());
                let urge = Arc::new(tokio::sync::Notify::new());
                list.push(Follower {
                    tx,
                    lagged: lagged.clone(),
                    urge: urge.clone(),
                });
                if followers.len() > 2 * self.streams() + 64 {
                    followers.retain(|_, list| {
                        list.retain(|f| !f.tx.is_closed());
                        !list.is_empty()
                    });
                }
                Events::One { rx, lagged, urge }
            }
        };
        Some(Subscription {
            events,
            closed: self.closed.subscribe(),
            permit: StreamPermit {
                streams: self.streams.clone(),
            },
        })
    }

    /// Open streams now.
    pub fn streams(&self) -> usize {
        self.streams.load(Ordering::Acquire)
    }

    /// Resolves once the server is stopping ([`Hub::close`]): background publishers end.
    pub async fn stopping(&self) {
        let mut closed = self.closed.subscribe();
        let _ = closed.wait_for(|closed| *closed).await;
    }

    /// Ends every stream (shutdown); new streams end at once.
    pub fn close(&self) {
        self.closed.send_replace(true);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn types_are_a_comma_list_of_the_three_kinds() {
        let kinds = Kinds::parse("command, schedule").unwrap();
        assert!(kinds.contains(EventKind::Command) && kinds.contains(EventKind::Schedule));
        assert!(!kinds.contains(EventKind::Device));
        assert_eq!(Kinds::parse("device,command,schedule").unwrap(), Kinds::ALL);
        let err = Kinds::parse("command,presence").unwrap_err();
        assert!(err.contains("\"presence\""), "{err}");
        assert!(Kinds::parse(" , ").unwrap_err().contains("empty"));
    }

    #[tokio::test]
    async fn a_commands_sent_event_published_after_its_final_one_is_dropped() {
        let hub = Hub::new(10);
        let kitchen = DeviceId::parse("kitchen").unwrap();
        let mut one = hub.subscribe(Some(&kitchen)).unwrap();
        let mut all = hub.subscribe(None).unwrap();
        let now = chrono::Utc::now();
        let record = |id: &str, status: crate::store::CommandStatus| {
            let mut r = CommandRecord::pending(
                id,
                &kitchen,
                crate::domain::CommandType::DisplayMessage,
                "ops",
                now,
                now + chrono::TimeDelta::seconds(60),
            );
            r.status = status;
            r
        };
        use crate::store::CommandStatus::{Sent, Succeeded};
        // The acknowledgement overtook the PUBACK: `succeeded` first, then the stale `sent`.
        hub.command(&record("c-1", Succeeded));
        hub.command(&record("c-1", Sent));
        // Another command's `sent` still goes out.
        hub.command(&record("c-2", Sent));
        for stream in [&mut one, &mut all] {
            let first = stream.events.recv().await.ok().unwrap();
            assert!(
                first.data().contains(r#""commandId":"c-1""#)
                    && first.data().contains(r#""status":"succeeded""#),
                "{}",
                first.data()
            );
            let second = stream.events.recv().await.ok().unwrap();
            assert!(
                second.data().contains(r#""commandId":"c-2""#),
                "{}",
                second.data()
            );
            assert!(stream.events.try_recv().is_none());
        }
    }

    #[test]
    fn an_event_is_one_frame_whose_data_is_the_json_line() {
        let event = Event::schedule(
            &DeviceId::parse("kitchen").unwrap(),
            r#"{"scheduleId":"s-1"}"#,
            true,
        );
        assert_eq!(
            &event.frame[..],
            b"event: schedule\ndata: {\"scheduleId\":\"s-1\",\"deleted\":true}\n\n"
        );
        assert_eq!(event.data(), r#"{"scheduleId":"s-1","deleted":true}"#);
        assert_eq!(device_event("kitchen").data(), "{}");
    }

    fn device_event(device: &str) -> Event {
        Event::device(&DeviceId::parse(device).unwrap(), "{}".into())
    }

    #[tokio::test]
    async fn a_stream_following_one_device_gets_its_events_only_and_overflows_alone() {
        let hub = Hub::new(10);
        let kitchen = DeviceId::parse("kitchen").unwrap();
        let mut one = hub.subscribe(Some(&kitchen)).unwrap();
        let mut all = hub.subscribe(None).unwrap();
        hub.publish(device_event("hall"));
        hub.publish(device_event("kitchen"));
        assert_eq!(one.events.recv().await.ok().unwrap().device_id, kitchen);
        assert!(
            one.events.try_recv().is_none(),
            "the hall's event is not its"
        );
        assert_eq!(
            all.events.recv().await.ok().unwrap().device_id.as_str(),
            "hall"
        );
        // More than its queue holds: it is told it fell behind; the other streams are not.
        drop(all);
        for _ in 0..=QUEUE {
            hub.publish(device_event("kitchen"));
        }
        let mut got = 0;
        loop {
            match one.events.recv().await {
                Ok(_) => got += 1,
                Err(Missed::Lagged) => break,
                Err(Missed::Closed) => panic!("closed, not lagged"),
            }
        }
        assert_eq!(got, QUEUE);
        let mut again = hub.subscribe(Some(&kitchen)).unwrap();
        hub.publish(device_event("kitchen"));
        assert!(again.events.recv().await.is_ok());
    }

    #[tokio::test]
    async fn a_stream_of_every_device_that_falls_behind_while_draining_is_told_so() {
        // A stream takes what waits with `try_recv` before it writes. The broadcast
        // channel says "lagged" once and moves past the lost events: the stream must
        // still end with `overflow`, not carry on with a hole in its events.
        let hub = Hub::new(10);
        let mut all = hub.subscribe(None).unwrap();
        for _ in 0..QUEUE + 10 {
            hub.publish(device_event("kitchen"));
        }
        let mut drained = 0;
        while all.events.try_recv().is_some() {
            drained += 1;
        }
        assert_eq!(drained, 0, "the lag is met first");
        assert!(
            matches!(all.events.recv().await, Err(Missed::Lagged)),
            "a lag met by try_recv is reported by the next recv"
        );
        // Lagged in the middle of a drain, too.
        let mut all = hub.subscribe(None).unwrap();
        hub.publish(device_event("kitchen"));
        assert!(all.events.try_recv().is_some());
        for _ in 0..QUEUE + 10 {
            hub.publish(device_event("kitchen"));
        }
        assert!(all.events.try_recv().is_none());
        assert!(matches!(all.events.recv().await, Err(Missed::Lagged)));
    }

    #[tokio::test]
    async fn a_stream_following_one_device_is_urged_once_half_its_queue_has_filled() {
        use futures_util::FutureExt;
        let hub = Hub::new(10);
        let kitchen = DeviceId::parse("kitchen").unwrap();
        let one = hub.subscribe(Some(&kitchen)).unwrap();
        assert!(one.events.paced());
        assert!(!hub.subscribe(None).unwrap().events.paced());
        for _ in 0..QUEUE / 2 - 1 {
            hub.publish(device_event("kitchen"));
        }
        assert!(one.events.urged().now_or_never().is_none());
        hub.publish(device_event("kitchen"));
        assert!(one.events.urged().now_or_never().is_some());
    }

    #[test]
    fn streams_that_open_and_close_leave_nothing_behind() {
        let hub = Hub::new(10);
        for n in 0..1000 {
            let device = DeviceId::parse(&format!("d{n}")).unwrap();
            drop(hub.subscribe(Some(&device)).unwrap());
        }
        assert!(
            hub.per_device().len() <= 2 * 10 + 64 + 1,
            "{}",
            hub.per_device().len()
        );
    }

    #[test]
    fn the_stream_cap_frees_a_place_when_a_stream_ends() {
        let hub = Hub::new(2);
        let one = hub.subscribe(None).unwrap();
        let _two = hub.subscribe(None).unwrap();
        assert!(hub.subscribe(None).is_none());
        drop(one);
        assert!(hub.subscribe(None).is_some());
    }

    #[test]
    fn a_frame_is_one_event_block() {
        let event = Event::schedule(
            &DeviceId::parse("k").unwrap(),
            r#"{"scheduleId":"s","a":1}"#,
            true,
        );
        assert_eq!(
            &event.frame[..],
            b"event: schedule\ndata: {\"scheduleId\":\"s\",\"a\":1,\"deleted\":true}\n\n"
        );
    }
}
