//! Device profiles (SPEC 8): which firmware a device runs, so the transports know which
//! wire form to ask for. [`Devices`] maps the device ids of `DEVICES_FILE` (or of the demo)
//! to their [`Profile`]; every other device is [`Profile::Generic`].

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use super::awtrix3::Awtrix3Device;
use super::lametric::LametricDevice;
use super::presence::Reading;
use super::wire::{MqttForm, Publication};
use super::{Command, DeviceId, Envelope, ValidationError, generic};

/// The firmware a device runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Profile {
    /// The generic firmware of SPEC 4 ([`super::generic`]).
    Generic,
    /// AWTRIX 3 (SPEC 8.1): MQTT only, alarms held by the gateway, no acknowledgements.
    Awtrix3(Awtrix3Device),
    /// LaMetric TIME (SPEC 8.3): its own HTTP API, whose answer ends the command; alarms
    /// held by the gateway.
    Lametric(LametricDevice),
}

impl Profile {
    /// The name used in `DEVICES_FILE` (`profile = "…"`).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Generic => ProfileName::Generic.as_str(),
            Self::Awtrix3(_) => ProfileName::Awtrix3.as_str(),
            Self::Lametric(_) => ProfileName::Lametric.as_str(),
        }
    }

    /// Whether the device acknowledges commands (SPEC 7.4 on `<prefix>/<deviceId>/ack`; a
    /// LaMetric by answering the request): the record's `deviceAcks`.
    pub fn acknowledges(&self) -> bool {
        matches!(self, Self::Generic | Self::Lametric(_))
    }

    /// Whether the device acknowledges over MQTT (an acknowledgement on the ack topic
    /// applies only to such a device).
    pub fn acknowledges_over_mqtt(&self) -> bool {
        matches!(self, Self::Generic)
    }

    /// Whether the gateway holds this device's alarms until their time (SPEC 8.1).
    pub fn gateway_schedules_alarms(&self) -> bool {
        matches!(self, Self::Awtrix3(_) | Self::Lametric(_))
    }

    /// The profile's own limits on a valid command (SPEC 8.1: an AWTRIX notification the
    /// firmware would drop for its size).
    pub fn admits(&self, command: Command) -> Result<Command, ValidationError> {
        match self {
            Self::Generic | Self::Lametric(_) => Ok(command),
            Self::Awtrix3(device) => device.admits(&command).map(|()| command),
        }
    }

    /// What the gateway holds for an alarm of this device until its time (SPEC 8.1,
    /// 8.3), in the firmware's own form: an AWTRIX clock's notification (topic and
    /// payload), a LaMetric's notification request (path and body). `None` when the
    /// profile does not hold alarms (or has nothing to hold for `command`): the core
    /// then sends it now. The core asks this, never the profile's variant.
    pub fn held_alarm(&self, command: &Command) -> Option<Publication> {
        match self {
            Self::Generic => None,
            Self::Awtrix3(device) => device.alarm_publication(command),
            Self::Lametric(clock) => {
                let request = clock.request(command);
                Some(Publication {
                    topic: request.path,
                    payload: request.body.unwrap_or_default(),
                })
            }
        }
    }

    /// How `envelope` goes out over MQTT to a device of this profile, in its firmware's
    /// form (SPEC 4.1, 8.1); `prefix` is the generic topic prefix (`MQTT_TOPIC_PREFIX`).
    /// `None` for a device not reached over MQTT (its own API, SPEC 8.3).
    pub fn mqtt_form(&self, prefix: &str, envelope: &Envelope) -> Option<MqttForm> {
        match self {
            Self::Generic => Some(generic::mqtt_form(prefix, envelope)),
            Self::Awtrix3(device) => Some(device.mqtt_form(&envelope.command)),
            Self::Lametric(_) => None,
        }
    }

    /// The MQTT topics of this device's own presence (SPEC 11.1) and how each is read:
    /// an AWTRIX clock's two. Empty for a device whose presence is heard elsewhere (the
    /// shared filter of [`Self::presence_filter`], or polls).
    pub fn presence_topics(&self) -> Vec<(String, Reading)> {
        match self {
            Self::Generic | Self::Lametric(_) => Vec::new(),
            Self::Awtrix3(device) => device.presence_topics(),
        }
    }

    /// A filter that covers the presence of every device of this profile, also those the
    /// devices file does not list (so they announce themselves): the generic
    /// `<prefix>/+/status`. Asked of [`Devices::unlisted`]; `prefix` is the generic topic
    /// prefix.
    pub fn presence_filter(&self, prefix: &str) -> Option<String> {
        match self {
            Self::Generic => Some(generic::presence_filter(prefix)),
            Self::Awtrix3(_) | Self::Lametric(_) => None,
        }
    }

    /// The device a topic of [`Self::presence_filter`] is about, and how it is read.
    pub fn presence_device(&self, prefix: &str, topic: &str) -> Option<(DeviceId, Reading)> {
        match self {
            Self::Generic => generic::status_device(prefix, topic).map(|d| (d, Reading::State)),
            Self::Awtrix3(_) | Self::Lametric(_) => None,
        }
    }

    /// Whether a device silent for longer than `PRESENCE_TIMEOUT_SECS` is offline (an
    /// AWTRIX clock: its readings come every 10 s, and nothing of it is retained).
    pub fn falls_silent(&self) -> bool {
        matches!(self, Self::Awtrix3(_))
    }

    /// Whether the device's presence is what the gateway's polls of it say (a LaMetric
    /// clock, through its own transport).
    pub fn presence_polled(&self) -> bool {
        matches!(self, Self::Lametric(_))
    }

    /// A held alarm (what [`Self::held_alarm`] gave when it was scheduled) as this device
    /// is to get it now, as the devices file describes it today (SPEC 8.1): an AWTRIX clock
    /// given another topic or melody since gets it on its current topic with its current
    /// melody. `None` when this profile holds no alarms (the device is listed otherwise
    /// since): the core then ends it `device_removed`, never sending it where nobody may
    /// read it any more.
    pub fn held_alarm_now(&self, held: &Publication) -> Option<Publication> {
        match self {
            Self::Generic => None,
            Self::Awtrix3(device) => Some(device.held_alarm_now(held)),
            Self::Lametric(clock) => Some(clock.held_alarm_now(held)),
        }
    }

    /// The longest one delivery to this device can take when the gateway reaches it
    /// itself ([`Self::direct`]: a LaMetric's `timeout_ms`); `None` for the others, whose
    /// transport has its own bound.
    pub fn delivery_timeout(&self) -> Option<Duration> {
        match self {
            Self::Generic | Self::Awtrix3(_) => None,
            Self::Lametric(clock) => Some(clock.timeout),
        }
    }

    /// Whether the device can only be reached over MQTT.
    pub fn mqtt_only(&self) -> bool {
        matches!(self, Self::Awtrix3(_))
    }

    /// Whether the gateway reaches the device itself, over the device's own API, whatever
    /// `ENABLED_SENDERS` says (no transport sees its commands).
    pub fn direct(&self) -> bool {
        matches!(self, Self::Lametric(_))
    }
}

/// The profile names `DEVICES_FILE` accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProfileName {
    Generic,
    Awtrix3,
    Lametric,
}

impl ProfileName {
    pub const ALL: [Self; 3] = [Self::Generic, Self::Awtrix3, Self::Lametric];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Generic => "generic",
            Self::Awtrix3 => "awtrix3",
            Self::Lametric => "lametric",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == name)
    }
}

impl fmt::Display for ProfileName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The devices whose profile is not the generic one, by id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Devices {
    by_id: BTreeMap<DeviceId, Profile>,
}

static GENERIC: Profile = Profile::Generic;

impl Devices {
    /// No device listed: every device is generic.
    pub fn new() -> Self {
        Self::default()
    }

    /// Lists `id` with `profile`; returns the profile it had, if it was listed.
    pub fn insert(&mut self, id: DeviceId, profile: Profile) -> Option<Profile> {
        self.by_id.insert(id, profile)
    }

    /// The profile of every device the devices file does not list.
    pub fn unlisted() -> &'static Profile {
        &GENERIC
    }

    /// The profile of `id`: [`Profile::Generic`] unless listed otherwise.
    pub fn profile(&self, id: &DeviceId) -> &Profile {
        self.by_id.get(id).unwrap_or(&GENERIC)
    }

    /// The listed devices, in id order.
    pub fn iter(&self) -> impl Iterator<Item = (&DeviceId, &Profile)> {
        self.by_id.iter()
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// The listed devices whose alarms the gateway holds (start-up checks the store).
    pub fn with_scheduled_alarms(&self) -> impl Iterator<Item = &DeviceId> {
        self.iter()
            .filter(|(_, p)| p.gateway_schedules_alarms())
            .map(|(id, _)| id)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::domain::awtrix3::AwtrixTopic;

    #[test]
    fn an_unlisted_device_is_generic_and_acknowledges() {
        let mut devices = Devices::new();
        let kitchen = DeviceId::parse("kitchen").unwrap();
        let awtrix = Awtrix3Device::new(AwtrixTopic::parse("awtrix_a1").unwrap(), None);
        devices.insert(kitchen.clone(), Profile::Awtrix3(awtrix));
        let other = DeviceId::parse("clock-1").unwrap();
        assert_eq!(devices.profile(&other), &Profile::Generic);
        assert!(devices.profile(&other).acknowledges());
        assert!(!devices.profile(&kitchen).acknowledges());
        assert_eq!(devices.profile(&kitchen).name(), "awtrix3");
        assert_eq!(
            devices.with_scheduled_alarms().collect::<Vec<_>>(),
            [&kitchen]
        );
    }

    #[test]
    fn each_firmware_says_how_a_command_goes_over_mqtt_and_a_lametric_is_not_reached_so() {
        let envelope = |profile: Profile| Envelope {
            command_id: "c1".into(),
            request_id: "r1".into(),
            device_id: DeviceId::parse("kitchen").unwrap(),
            command: Command::brightness(Some(40)).unwrap(),
            expires_at: None,
            profile,
        };
        let generic = envelope(Profile::Generic);
        let form = generic.profile.mqtt_form("p", &generic).unwrap();
        assert!(form.answers && form.may_retain);
        assert_eq!(form.publications.len(), 1);
        assert_eq!(form.publications[0].topic, "p/kitchen/set_brightness");
        assert_eq!(form.publications[0].payload, generic.mqtt_payload());
        let awtrix = envelope(Profile::Awtrix3(Awtrix3Device::new(
            AwtrixTopic::parse("awtrix_a1").unwrap(),
            None,
        )));
        let form = awtrix.profile.mqtt_form("p", &awtrix).unwrap();
        assert!(!form.answers && !form.may_retain);
        let topics: Vec<&str> = form.publications.iter().map(|p| p.topic.as_str()).collect();
        assert_eq!(topics, ["awtrix_a1/power", "awtrix_a1/settings"]);
        let lametric = envelope(Profile::Lametric(desk()));
        assert_eq!(lametric.profile.mqtt_form("p", &lametric), None);
    }

    #[test]
    fn a_held_alarm_goes_to_the_clock_as_configured_now_and_nowhere_once_it_is_generic() {
        use crate::domain::awtrix3::Rtttl;
        let alarm = Command::SetAlarm {
            alarm_time: chrono::DateTime::parse_from_rfc3339("2030-01-01T07:00:00+01:00").unwrap(),
            label: "wake".into(),
        };
        let before = Profile::Awtrix3(Awtrix3Device::new(
            AwtrixTopic::parse("awtrix_old").unwrap(),
            None,
        ));
        let held = before.held_alarm(&alarm).unwrap();
        let melody = Rtttl::parse("m:d=4,o=5,b=100:c").unwrap();
        let now = Profile::Awtrix3(Awtrix3Device::new(
            AwtrixTopic::parse("awtrix_new").unwrap(),
            Some(melody),
        ));
        let delivered = now.held_alarm_now(&held).unwrap();
        assert_eq!(delivered.topic, "awtrix_new/notify");
        let notify: crate::domain::awtrix3::Notify =
            serde_json::from_slice(&delivered.payload).unwrap();
        assert_eq!(notify.text, "wake");
        assert_eq!(notify.rtttl.as_deref(), Some("m:d=4,o=5,b=100:c"));
        let lametric = Profile::Lametric(desk());
        let held = lametric.held_alarm(&alarm).unwrap();
        assert_eq!(lametric.held_alarm_now(&held), Some(held.clone()));
        assert_eq!(Profile::Generic.held_alarm_now(&held), None);
        assert_eq!(lametric.delivery_timeout(), Some(desk().timeout));
        assert_eq!(now.delivery_timeout(), None);
    }

    fn desk() -> LametricDevice {
        use crate::domain::lametric::{AlarmSound, CertCheck, DEFAULT_TIMEOUT, DeviceUrl};
        LametricDevice {
            url: DeviceUrl::parse("http://127.0.0.1:8080").unwrap(),
            api_key: crate::shared::Secret::new("k"),
            tls: CertCheck::PlainHttp,
            alarm_sound: AlarmSound::DEFAULT,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    #[test]
    fn a_held_alarm_is_in_its_firmwares_own_form_and_other_profiles_hold_nothing() {
        use crate::domain::lametric::NOTIFICATIONS_PATH;
        let alarm = Command::SetAlarm {
            alarm_time: chrono::DateTime::parse_from_rfc3339("2030-01-01T07:00:00+01:00").unwrap(),
            label: "wake".into(),
        };
        let message = Command::DisplayMessage {
            message: "hi".into(),
            duration_seconds: 5,
        };
        let awtrix = Profile::Awtrix3(Awtrix3Device::new(
            AwtrixTopic::parse("awtrix_a1").unwrap(),
            None,
        ));
        let held = awtrix.held_alarm(&alarm).unwrap();
        assert_eq!(held.topic, "awtrix_a1/notify");
        assert!(String::from_utf8(held.payload).unwrap().contains("wake"));
        assert_eq!(awtrix.held_alarm(&message), None);
        let lametric = Profile::Lametric(desk());
        let held = lametric.held_alarm(&alarm).unwrap();
        assert_eq!(held.topic, NOTIFICATIONS_PATH);
        assert!(
            String::from_utf8(held.payload)
                .unwrap()
                .contains("\"alarms\"")
        );
        assert_eq!(Profile::Generic.held_alarm(&alarm), None);
    }
}
