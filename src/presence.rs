//! Which devices are there (SPEC 11.1): a registry fed by this replica's own MQTT
//! subscriptions (never shared with other replicas, also with `STATE_STORE=none`), by
//! the acknowledgements it receives, and by this replica's polls of the LaMetric clocks
//! (`transport/lametric.rs`, [`Presence::polled`]); read by `GET /devices` and the `clock_server_devices`
//! gauge.
//!
//! Invariants:
//! - Only the exact payloads `online`/`offline` and a `stats` that is one JSON object of at
//!   most 4 KiB change anything; every other message on these topics is ignored and
//!   counted ([`Presence::ignored`]), never an error and never logged per message.
//! - Memory is bounded: the devices of the devices file, plus at most [`MAX_ANNOUNCED`]
//!   generic devices that announced themselves; past that a new one is ignored (counted,
//!   logged once) — it stays `unknown`, which delivery treats as online.
//! - What each firmware's signals are is its module's (asked through the device's
//!   [`Profile`]: its topics and how each is read, whether it falls silent, whether it is
//!   polled); this registry only applies them.
//! - The timeout of a device that falls silent (AWTRIX) is computed when asked (`now` is passed in), so no task sweeps
//!   the map and a test needs no clock of its own.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use serde::Serialize;
use tokio::sync::broadcast;

use crate::domain::presence::{Heard, PresenceState, Reading};
use crate::domain::{DeviceId, Devices, Profile};

/// Generic devices not in the devices file that are remembered once they announced
/// themselves (about 200 bytes each: 2 MB at the bound).
pub const MAX_ANNOUNCED: usize = 10_000;

/// Devices that came back online, for deliveries held while they were away; a slow
/// listener misses the oldest (it then re-reads what it holds).
const ONLINE_EVENTS: usize = 1024;

/// The presence of every device this replica has heard of.
pub struct Presence {
    /// The generic profile's MQTT topic prefix.
    prefix: String,
    /// `PRESENCE_TIMEOUT_SECS`: a device that falls silent (an AWTRIX clock) is offline
    /// once silent this long.
    timeout: TimeDelta,
    devices: Arc<Devices>,
    /// The devices of the devices file by the exact topics of their own presence (an
    /// AWTRIX clock's two), with how each is read, for one lookup per message.
    topics: HashMap<String, (DeviceId, Reading)>,
    /// The devices of the devices file that fall silent ([`Profile::falls_silent`]).
    falling_silent: Vec<DeviceId>,
    registry: Mutex<Registry>,
    applied: AtomicU64,
    ignored: AtomicU64,
    full_logged: AtomicBool,
    back_online: broadcast::Sender<DeviceId>,
    /// Where each change of a device's presence is published as a `device` event (SPEC
    /// 13.1), once the server sets it up.
    events: std::sync::OnceLock<Arc<crate::events::Hub>>,
}

#[derive(Default)]
struct Registry {
    /// Every device of the devices file (an entry that said nothing yet is `unknown`).
    listed: HashMap<DeviceId, Entry>,
    /// Generic devices that announced themselves, at most [`MAX_ANNOUNCED`].
    announced: HashMap<DeviceId, Entry>,
}

/// What is known of one device.
#[derive(Debug, Clone, Default)]
struct Entry {
    /// `None`: heard of only through messages that changed nothing yet.
    said: Option<PresenceState>,
    /// The last time anything said online (SPEC 11.1 `lastSeenAt`).
    last_seen: Option<DateTime<Utc>>,
    /// AWTRIX: the last `stats` object, as sent; LaMetric: the fields of its last state.
    info: Option<Box<str>>,
    /// The presence last published as a `device` event (so each change is one event,
    /// also a change that only time makes: an AWTRIX clock falling silent).
    shown: Option<PresenceState>,
}

/// One device as `GET /devices` shows it (SPEC 11.2).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceView {
    pub device_id: String,
    pub profile: &'static str,
    pub presence: &'static str,
    pub last_seen_at: Option<String>,
    pub device_acks: bool,
    pub info: Option<serde_json::Value>,
}

impl Presence {
    /// An empty registry for the devices of `devices`; `prefix` is the generic topic prefix.
    pub fn new(prefix: &str, devices: Arc<Devices>, timeout: Duration) -> Self {
        let topics = devices
            .iter()
            .flat_map(|(id, profile)| {
                profile
                    .presence_topics()
                    .into_iter()
                    .map(move |(topic, reading)| (topic, (id.clone(), reading)))
            })
            .collect();
        let falling_silent = devices
            .iter()
            .filter(|(_, profile)| profile.falls_silent())
            .map(|(id, _)| id.clone())
            .collect();
        let registry = Registry {
            listed: devices
                .iter()
                .map(|(id, _)| (id.clone(), Entry::default()))
                .collect(),
            announced: HashMap::new(),
        };
        Self {
            prefix: prefix.to_owned(),
            timeout: TimeDelta::from_std(timeout).unwrap_or(TimeDelta::MAX),
            devices,
            topics,
            falling_silent,
            registry: Mutex::new(registry),
            applied: AtomicU64::new(0),
            ignored: AtomicU64::new(0),
            full_logged: AtomicBool::new(false),
            back_online: broadcast::channel(ONLINE_EVENTS).0,
            events: std::sync::OnceLock::new(),
        }
    }

    /// Publishes each change of presence to `events` from now on.
    pub fn publish_to(&self, events: Arc<crate::events::Hub>) {
        let _ = self.events.set(events);
    }

    /// The `device` event of `entry` if its presence changed since the last one published.
    fn change_event(
        &self,
        id: &DeviceId,
        entry: &mut Entry,
        now: DateTime<Utc>,
    ) -> Option<crate::events::Event> {
        let events = self.events.get()?;
        let state = self.effective(self.devices.profile(id), entry, now);
        if entry.shown == Some(state) || state == PresenceState::Unknown {
            return None;
        }
        entry.shown = Some(state);
        if !events.wanted() {
            return None;
        }
        let view = self.view(id, Some(entry), now);
        Some(crate::events::Event::device(
            id,
            serde_json::to_string(&view).unwrap_or_default(),
        ))
    }

    /// Publishes the changes that time alone makes (a device that falls silent, silent past
    /// `PRESENCE_TIMEOUT_SECS`, is offline): the server calls it every second.
    pub fn publish_timeouts(&self, now: DateTime<Utc>) {
        let Some(events) = self.events.get() else {
            return;
        };
        let changed: Vec<_> = {
            let mut registry = self.lock();
            self.falling_silent
                .iter()
                .filter_map(|id| {
                    let entry = registry.listed.get_mut(id)?;
                    self.change_event(id, entry, now)
                })
                .collect()
        };
        for event in changed {
            events.publish(event);
        }
    }

    /// The topic filters that feed this registry: the one of the devices the devices file
    /// does not list (every generic device's status), and the exact topics of each listed
    /// device's own presence (an AWTRIX clock's two: the client matches them with one hash
    /// lookup, however many clocks there are).
    pub fn topic_filters(&self) -> Vec<String> {
        let mut filters: Vec<String> = Devices::unlisted()
            .presence_filter(&self.prefix)
            .into_iter()
            .chain(self.topics.keys().cloned())
            .collect();
        filters.sort();
        filters.dedup();
        filters
    }

    /// Devices that come back online from now on (offline before, online now).
    pub fn subscribe_back_online(&self) -> broadcast::Receiver<DeviceId> {
        self.back_online.subscribe()
    }

    /// Messages that changed a device's presence or info.
    pub fn applied(&self) -> u64 {
        self.applied.load(Ordering::Relaxed)
    }

    /// Messages on the presence topics that were not presence (SPEC 11.1).
    pub fn ignored(&self) -> u64 {
        self.ignored.load(Ordering::Relaxed)
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// One message received on a presence topic ([`Presence::topic_filters`]).
    pub fn observe(&self, topic: &str, payload: &[u8], now: DateTime<Utc>) {
        let applied = if let Some((device, reading)) = self.topics.get(topic) {
            self.heard(device, reading.read(payload), now)
        } else if let Some((device, reading)) = self.unlisted_device(topic) {
            self.heard(&device, reading.read(payload), now)
        } else {
            false
        };
        self.count(applied);
    }

    /// A well-formed acknowledgement from `device` (SPEC 11.1: any acknowledgement says
    /// a device that acknowledges over MQTT, a generic one, is online).
    pub fn acknowledged(&self, device: &DeviceId, now: DateTime<Utc>) {
        let applied = self.devices.profile(device).acknowledges_over_mqtt()
            && self.update(device, now, |entry| {
                entry.said = Some(PresenceState::Online);
                true
            });
        self.count(applied);
    }

    /// The outcome of one poll of a device reached by polling (a LaMetric clock's
    /// `GET /api/v2/device`): `Some(info)` when it answered 200 (online, `info` its fields
    /// when the answer had them), `None` when it did not (offline). Not a message: neither
    /// counter changes.
    pub fn polled(
        &self,
        device: &DeviceId,
        answer: Option<Option<serde_json::Value>>,
        now: DateTime<Utc>,
    ) {
        if !self.devices.profile(device).presence_polled() {
            return;
        }
        self.update(device, now, |entry| match answer {
            Some(info) => {
                entry.said = Some(PresenceState::Online);
                if let Some(info) = info {
                    entry.info = Some(info.to_string().into());
                }
                true
            }
            None => {
                entry.said = Some(PresenceState::Offline);
                false
            }
        });
    }

    fn count(&self, applied: bool) {
        let counter = if applied {
            &self.applied
        } else {
            &self.ignored
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Applies what a message said of `device` (`None`: it said nothing of presence).
    fn heard(&self, device: &DeviceId, heard: Option<Heard<'_>>, now: DateTime<Utc>) -> bool {
        match heard {
            Some(Heard::Said(state)) => self.update(device, now, |entry| {
                entry.said = Some(state);
                state == PresenceState::Online
            }),
            Some(Heard::Stats(info)) => self.update(device, now, |entry| {
                entry.said = Some(PresenceState::Online);
                if entry.info.as_deref() != Some(info) {
                    entry.info = Some(info.into());
                }
                true
            }),
            None => false,
        }
    }

    /// Applies `change` to the entry of `device` (created if there is room); `change`
    /// says whether the message was a sign of life. Returns false when there was no room.
    fn update(
        &self,
        device: &DeviceId,
        now: DateTime<Utc>,
        change: impl FnOnce(&mut Entry) -> bool,
    ) -> bool {
        let profile = self.devices.profile(device);
        let (before, after) = {
            let mut registry = self.lock();
            let map = if registry.listed.contains_key(device) {
                &mut registry.listed
            } else {
                let full = registry.announced.len() >= MAX_ANNOUNCED;
                if full && !registry.announced.contains_key(device) {
                    drop(registry);
                    if !self.full_logged.swap(true, Ordering::Relaxed) {
                        tracing::warn!(
                            max = MAX_ANNOUNCED,
                            device_id = %device,
                            "presence: {MAX_ANNOUNCED} generic devices have announced themselves; further new ones stay unknown (counted as ignored)"
                        );
                    }
                    return false;
                }
                &mut registry.announced
            };
            let entry = map.entry(device.clone()).or_default();
            let before = self.effective(profile, entry, now);
            if change(entry) {
                entry.last_seen = Some(now);
            }
            let after = self.effective(profile, entry, now);
            if let Some(event) = self.change_event(device, entry, now)
                && let Some(events) = self.events.get()
            {
                events.publish(event);
            }
            (before, after)
        };
        if before == PresenceState::Offline && after == PresenceState::Online {
            // Nobody listening is fine: then nothing is held.
            let _ = self.back_online.send(device.clone());
        }
        true
    }

    /// The presence of an entry at `now`: what it said last, unless a device that falls
    /// silent has been silent for longer than the timeout since its last sign of life.
    fn effective(&self, profile: &Profile, entry: &Entry, now: DateTime<Utc>) -> PresenceState {
        match entry.said {
            None => PresenceState::Unknown,
            Some(PresenceState::Online)
                if profile.falls_silent()
                    && entry
                        .last_seen
                        .is_none_or(|seen| now.signed_duration_since(seen) > self.timeout) =>
            {
                PresenceState::Offline
            }
            Some(state) => state,
        }
    }

    /// The presence of `device` now (`unknown` when never heard of).
    pub fn state(&self, device: &DeviceId, now: DateTime<Utc>) -> PresenceState {
        let registry = self.lock();
        let entry = registry
            .listed
            .get(device)
            .or_else(|| registry.announced.get(device));
        entry.map_or(PresenceState::Unknown, |e| {
            self.effective(self.devices.profile(device), e, now)
        })
    }

    /// `device` as `GET /devices/{deviceId}` shows it, heard of or not.
    pub fn device(&self, device: &DeviceId, now: DateTime<Utc>) -> DeviceView {
        let registry = self.lock();
        let entry = registry
            .listed
            .get(device)
            .or_else(|| registry.announced.get(device));
        self.view(device, entry, now)
    }

    /// Every device of the devices file and every announced one that `visible` admits,
    /// sorted by id.
    pub fn list(&self, visible: impl Fn(&DeviceId) -> bool, now: DateTime<Utc>) -> Vec<DeviceView> {
        let registry = self.lock();
        let mut ids: Vec<&DeviceId> = registry
            .listed
            .keys()
            .chain(registry.announced.keys())
            .filter(|id| visible(id))
            .collect();
        ids.sort();
        ids.into_iter()
            .map(|id| {
                let entry = registry
                    .listed
                    .get(id)
                    .or_else(|| registry.announced.get(id));
                self.view(id, entry, now)
            })
            .collect()
    }

    /// How many devices are online, offline and unknown now (the devices of the devices
    /// file never heard of are unknown).
    pub fn counts(&self, now: DateTime<Utc>) -> [(PresenceState, u64); 3] {
        let registry = self.lock();
        let mut online = 0;
        let mut offline = 0;
        let mut unknown = 0;
        for (id, entry) in registry.listed.iter().chain(registry.announced.iter()) {
            match self.effective(self.devices.profile(id), entry, now) {
                PresenceState::Online => online += 1,
                PresenceState::Offline => offline += 1,
                PresenceState::Unknown => unknown += 1,
            }
        }
        [
            (PresenceState::Online, online),
            (PresenceState::Offline, offline),
            (PresenceState::Unknown, unknown),
        ]
    }

    fn view(&self, id: &DeviceId, entry: Option<&Entry>, now: DateTime<Utc>) -> DeviceView {
        let profile = self.devices.profile(id);
        let state = entry.map_or(PresenceState::Unknown, |e| self.effective(profile, e, now));
        DeviceView {
            device_id: id.as_str().to_owned(),
            profile: profile.name(),
            presence: state.as_str(),
            last_seen_at: entry
                .and_then(|e| e.last_seen)
                .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true)),
            device_acks: profile.acknowledges(),
            // Checked to be one JSON object when kept.
            info: entry
                .and_then(|e| e.info.as_deref())
                .and_then(|text| serde_json::from_str(text).ok()),
        }
    }

    /// The device a topic of the unlisted devices' filter is about, when its own profile
    /// is theirs (an AWTRIX clock's generic status topic is not its presence).
    fn unlisted_device(&self, topic: &str) -> Option<(DeviceId, Reading)> {
        let unlisted = Devices::unlisted();
        unlisted
            .presence_device(&self.prefix, topic)
            .filter(|(device, _)| self.devices.profile(device).name() == unlisted.name())
    }
}

impl std::fmt::Debug for Presence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Presence").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::domain::awtrix3::{Awtrix3Device, AwtrixTopic};

    fn id(raw: &str) -> DeviceId {
        DeviceId::parse(raw).unwrap()
    }

    fn presence() -> Presence {
        let mut devices = Devices::new();
        devices.insert(
            id("kitchen"),
            Profile::Awtrix3(Awtrix3Device::new(
                AwtrixTopic::parse("awtrix_k1").unwrap(),
                None,
            )),
        );
        Presence::new("p", Arc::new(devices), Duration::from_secs(35))
    }

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    #[test]
    fn the_filters_are_every_status_and_each_clocks_two_topics() {
        assert_eq!(
            presence().topic_filters(),
            ["awtrix_k1/stats", "awtrix_k1/stats/device", "p/+/status"]
        );
    }

    #[test]
    fn an_awtrix_clock_is_offline_once_silent_for_longer_than_the_timeout() {
        let p = presence();
        let kitchen = id("kitchen");
        assert_eq!(p.state(&kitchen, at(0)), PresenceState::Unknown);
        p.observe("awtrix_k1/stats", br#"{"bat":1}"#, at(0));
        assert_eq!(p.state(&kitchen, at(35)), PresenceState::Online);
        assert_eq!(p.state(&kitchen, at(36)), PresenceState::Offline);
        p.observe("awtrix_k1/stats/device", b"online", at(40));
        assert_eq!(p.state(&kitchen, at(41)), PresenceState::Online);
        p.observe("awtrix_k1/stats/device", b"offline", at(42));
        assert_eq!(p.state(&kitchen, at(42)), PresenceState::Offline);
        let view = p.device(&kitchen, at(42));
        assert_eq!(
            view.last_seen_at.as_deref(),
            Some(at(40).to_rfc3339_opts(SecondsFormat::Millis, true).as_str())
        );
        assert_eq!(view.info, Some(serde_json::json!({"bat": 1})));
    }

    #[test]
    fn a_lametric_clock_is_what_its_last_poll_said_and_keeps_its_info() {
        use crate::domain::lametric::{
            AlarmSound, CertCheck, DEFAULT_TIMEOUT, DeviceUrl, LametricDevice,
        };
        let mut devices = Devices::new();
        devices.insert(
            id("desk"),
            Profile::Lametric(LametricDevice {
                url: DeviceUrl::parse("http://127.0.0.1:8080").unwrap(),
                api_key: crate::shared::Secret::new("k"),
                tls: CertCheck::PlainHttp,
                alarm_sound: AlarmSound::DEFAULT,
                timeout: DEFAULT_TIMEOUT,
            }),
        );
        let p = Presence::new("p", Arc::new(devices), Duration::from_secs(35));
        let desk = id("desk");
        let mut back = p.subscribe_back_online();
        p.polled(
            &desk,
            Some(Some(serde_json::json!({"name": "Desk"}))),
            at(0),
        );
        assert_eq!(p.state(&desk, at(100_000)), PresenceState::Online);
        p.polled(&desk, None, at(30));
        let view = p.device(&desk, at(30));
        assert_eq!(view.presence, "offline");
        assert_eq!(view.info, Some(serde_json::json!({"name": "Desk"})));
        assert_eq!(
            view.last_seen_at.as_deref(),
            Some(at(0).to_rfc3339_opts(SecondsFormat::Millis, true).as_str())
        );
        p.polled(&desk, Some(None), at(60));
        assert_eq!(p.state(&desk, at(60)), PresenceState::Online);
        assert_eq!(back.try_recv().unwrap(), desk);
        // A poll result for a device that is not a LaMetric clock changes nothing.
        p.polled(&id("kitchen"), None, at(0));
        assert_eq!(p.state(&id("kitchen"), at(0)), PresenceState::Unknown);
        assert_eq!((p.applied(), p.ignored()), (0, 0));
    }

    #[test]
    fn a_generic_device_never_times_out() {
        let p = presence();
        p.observe("p/clock-1/status", b"online", at(0));
        assert_eq!(p.state(&id("clock-1"), at(100_000)), PresenceState::Online);
        // An AWTRIX clock's status topic is not its presence.
        p.observe("p/kitchen/status", b"online", at(0));
        assert_eq!(p.state(&id("kitchen"), at(0)), PresenceState::Unknown);
        assert_eq!((p.applied(), p.ignored()), (1, 1));
    }

    #[test]
    fn coming_back_online_is_announced_once_per_return() {
        let p = presence();
        let mut back = p.subscribe_back_online();
        p.observe("p/clock-1/status", b"online", at(0));
        p.observe("p/clock-1/status", b"offline", at(1));
        p.observe("p/clock-1/status", b"online", at(2));
        p.observe("p/clock-1/status", b"online", at(3));
        p.acknowledged(&id("clock-1"), at(4));
        assert_eq!(back.try_recv().unwrap(), id("clock-1"));
        assert!(back.try_recv().is_err(), "unknown to online is no return");
        // An AWTRIX clock that timed out and sends stats again has returned.
        p.observe("awtrix_k1/stats", b"{}", at(0));
        p.observe("awtrix_k1/stats", b"{}", at(100));
        assert_eq!(back.try_recv().unwrap(), id("kitchen"));
    }

    #[test]
    fn announced_devices_are_bounded_and_the_rest_stay_unknown() {
        let p = presence();
        for n in 0..MAX_ANNOUNCED {
            p.observe(&format!("p/d{n}/status"), b"online", at(0));
        }
        p.observe("p/one-too-many/status", b"online", at(0));
        assert_eq!(p.state(&id("one-too-many"), at(0)), PresenceState::Unknown);
        // Known ones still change.
        p.observe("p/d7/status", b"offline", at(1));
        assert_eq!(p.state(&id("d7"), at(1)), PresenceState::Offline);
        assert_eq!(p.ignored(), 1);
        let counts = p.counts(at(1));
        assert_eq!(
            counts,
            [
                (PresenceState::Online, MAX_ANNOUNCED as u64 - 1),
                (PresenceState::Offline, 1),
                (PresenceState::Unknown, 1),
            ]
        );
    }

    #[test]
    fn topics_that_only_look_like_presence_are_ignored() {
        let p = presence();
        for topic in [
            "q/clock-1/status",
            "p/clock-1/status/x",
            "p/a/b/status",
            "p/ clock/status",
            "p//status",
            "other/stats",
            "awtrix_k1/stats/other",
        ] {
            p.observe(topic, b"online", at(0));
        }
        assert_eq!(p.applied(), 0);
        assert_eq!(p.ignored(), 7);
        assert!(
            p.list(|_| true, at(0))
                .iter()
                .all(|d| d.device_id == "kitchen")
        );
    }
}
