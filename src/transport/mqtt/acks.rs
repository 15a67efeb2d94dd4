//! Device acknowledgements (SPEC 7.4): the subscription's topic filter and the parsing of
//! one acknowledgement. Applying it to a record is the store's job; here an ack is only
//! checked for shape: `<prefix>/<deviceId>/ack` carrying exactly
//! `{"commandId":"…","status":"succeeded"|"failed","reason":"…"}` (`reason` optional, at
//! most 256 characters). Anything else is refused with a reason the caller counts; it is
//! never an error of the server.
//!
//! And the queue between the MQTT client's reader and the store ([`queue`]). A flood of
//! junk on the ack topics (QoS 0, full speed, random ids) must not push real
//! acknowledgements out of it, so:
//! - junk is refused on the reader, before it is queued, by what costs no store call:
//!   the shape above, a command id that the server cannot have issued (not a canonical
//!   UUIDv7 of the last 8 days; [`plausible_command_id`]), a device whose profile does not
//!   acknowledge ([`screen`]);
//! - what is left is applied in batches of up to [`ACK_BATCH`] (one store call,
//!   `StateStore::complete_many`: one lock for `memory`, one group commit for `file:`, one
//!   pipeline for `redis://`), so the store keeps up with the reader;
//! - the reader never waits (it also carries the broker's other traffic): when the queue
//!   is full after all, the acknowledgement is dropped, and the caller counts it
//!   (`clock_server_acks_total{outcome="dropped"}`).

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;

use crate::domain::DeviceId;
pub use crate::domain::ack::ack_topic;
use crate::domain::ack::{ACK_LEVEL, AckBody, FAILED, MAX_REASON_CHARS, SUCCEEDED};
use crate::store::FinalOutcome;

/// Acknowledgements waiting for the store (about 150 bytes each: 2.4 MB when full).
pub const ACK_QUEUE: usize = 16_384;

/// At most this many acknowledgements go to the store in one call.
pub const ACK_BATCH: usize = 512;

/// How old a command id may be and still name a command that can be acknowledged: a
/// command lives at most 604,800 s (`ttlSeconds`, SPEC 7.2) after its creation; a day
/// more for clocks that are not quite right.
const MAX_ID_AGE_MS: u64 = (604_800 + 86_400) * 1000;

/// How far ahead of this replica's clock another replica's may be.
const MAX_ID_SKEW_MS: u64 = 5 * 60 * 1000;

/// The filter the server subscribes to: `<prefix>/+/ack`, shared among replicas as
/// `$share/<group>/<prefix>/+/ack` when `MQTT_SHARED_GROUP` is set.
pub fn ack_filter(prefix: &str, shared_group: Option<&str>) -> String {
    let filter = join(prefix, &["+", ACK_LEVEL]);
    match shared_group {
        Some(group) => format!("$share/{group}/{filter}"),
        None => filter,
    }
}

fn join(prefix: &str, levels: &[&str]) -> String {
    let mut topic = String::with_capacity(prefix.len() + 80);
    if !prefix.is_empty() {
        topic.push_str(prefix);
        topic.push('/');
    }
    topic.push_str(&levels.join("/"));
    topic
}

/// A well-formed acknowledgement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    pub device_id: String,
    pub command_id: String,
    pub outcome: FinalOutcome,
    pub reason: Option<String>,
}

/// Why an acknowledgement was ignored before it reached the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    /// Not `<prefix>/<deviceId>/ack` with a valid device id.
    Topic,
    /// Not exactly the JSON shape (unknown fields, wrong types, trailing data, ...).
    Body,
    /// A `status` other than `succeeded` or `failed`.
    Status,
    /// A `reason` over 256 characters.
    Reason,
    /// A `commandId` the server cannot have issued ([`plausible_command_id`]).
    CommandId,
    /// The device's profile does not acknowledge (an AWTRIX clock): nothing of it can be
    /// acknowledged (SPEC 7.4).
    DeviceWithoutAcks,
}

impl Malformed {
    /// For logs and metrics.
    pub const fn label(self) -> &'static str {
        match self {
            Self::Topic => "bad_topic",
            Self::Body => "bad_body",
            Self::Status => "bad_status",
            Self::Reason => "reason_too_long",
            Self::CommandId => "unknown_command",
            Self::DeviceWithoutAcks => "device_without_acks",
        }
    }
}

/// Checks one message received on the acknowledgement subscription.
pub fn parse(prefix: &str, topic: &str, payload: &[u8]) -> Result<Ack, Malformed> {
    let rest = if prefix.is_empty() {
        topic
    } else {
        topic
            .strip_prefix(prefix)
            .and_then(|r| r.strip_prefix('/'))
            .ok_or(Malformed::Topic)?
    };
    let device = rest
        .strip_suffix(ACK_LEVEL)
        .and_then(|r| r.strip_suffix('/'))
        .ok_or(Malformed::Topic)?;
    let device = DeviceId::parse(device).map_err(|_| Malformed::Topic)?;
    if device.as_str() != device_str_untrimmed(rest) {
        return Err(Malformed::Topic);
    }
    let body: AckBody = crate::shared::json_object(payload).map_err(|_| Malformed::Body)?;
    let outcome = match body.status.as_str() {
        SUCCEEDED => FinalOutcome::Succeeded,
        FAILED => FinalOutcome::Failed,
        _ => return Err(Malformed::Status),
    };
    if body
        .reason
        .as_ref()
        .is_some_and(|r| r.chars().count() > MAX_REASON_CHARS)
    {
        return Err(Malformed::Reason);
    }
    Ok(Ack {
        device_id: device.as_str().to_owned(),
        command_id: body.command_id,
        outcome,
        reason: body.reason,
    })
}

/// Whether `id` can be a command id this server (or a replica) issued: a UUIDv7 in
/// canonical form (lower case, hyphenated, as `shared::new_id` writes it) whose time is
/// at most [`MAX_ID_AGE_MS`] old and [`MAX_ID_SKEW_MS`] ahead of `now`. No record has any
/// other id, so an ack with one is refused without asking the store.
pub fn plausible_command_id(id: &str, now: DateTime<Utc>) -> bool {
    let Ok(uuid) = uuid::Uuid::try_parse(id) else {
        return false;
    };
    let mut buf = uuid::Uuid::encode_buffer();
    if uuid.get_version_num() != 7 || uuid.hyphenated().encode_lower(&mut buf) != id {
        return false;
    }
    let Some((secs, nanos)) = uuid.get_timestamp().map(|t| t.to_unix()) else {
        return false;
    };
    let issued = secs.saturating_mul(1000) + u64::from(nanos / 1_000_000);
    let now = u64::try_from(now.timestamp_millis()).unwrap_or(0);
    issued <= now.saturating_add(MAX_ID_SKEW_MS) && issued.saturating_add(MAX_ID_AGE_MS) >= now
}

/// What the reader checks of a well-formed acknowledgement ([`parse`]) before it is
/// queued: its command id ([`plausible_command_id`]) and its device (`device_acks`:
/// whether the device's profile acknowledges).
pub fn screen(
    ack: &Ack,
    now: DateTime<Utc>,
    device_acks: impl FnOnce(&DeviceId) -> bool,
) -> Result<(), Malformed> {
    let device = DeviceId::parse(&ack.device_id).map_err(|_| Malformed::Topic)?;
    if !device_acks(&device) {
        return Err(Malformed::DeviceWithoutAcks);
    }
    if !plausible_command_id(&ack.command_id, now) {
        return Err(Malformed::CommandId);
    }
    Ok(())
}

/// The reader's end of the queue.
#[derive(Clone)]
pub struct AckSink(mpsc::Sender<Ack>);

impl AckSink {
    /// Queues a screened acknowledgement without waiting; `false` when the queue is full
    /// and it was dropped (the caller counts it).
    pub fn push(&self, ack: Ack) -> bool {
        self.0.try_send(ack).is_ok()
    }
}

/// The store's end of the queue: acknowledgements in batches.
pub struct AckBatches(mpsc::Receiver<Ack>);

impl AckBatches {
    /// The next acknowledgements (at least one, at most [`ACK_BATCH`]: whatever waits);
    /// `None` once every sink is gone.
    pub async fn next(&mut self) -> Option<Vec<Ack>> {
        let mut batch = Vec::with_capacity(ACK_BATCH.min(self.0.len().max(1)));
        (self.0.recv_many(&mut batch, ACK_BATCH).await > 0).then_some(batch)
    }
}

/// A queue of [`ACK_QUEUE`] acknowledgements.
pub fn queue() -> (AckSink, AckBatches) {
    let (tx, rx) = mpsc::channel(ACK_QUEUE);
    (AckSink(tx), AckBatches(rx))
}

/// The device level exactly as in the topic (the device-id parser trims spaces, a topic
/// level must not have any).
fn device_str_untrimmed(rest: &str) -> &str {
    rest.strip_suffix(ACK_LEVEL)
        .and_then(|r| r.strip_suffix('/'))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_and_topics() {
        assert_eq!(ack_filter("clocks/commands", None), "clocks/commands/+/ack");
        assert_eq!(
            ack_filter("clocks/commands", Some("gw")),
            "$share/gw/clocks/commands/+/ack"
        );
        assert_eq!(ack_filter("", None), "+/ack");
        assert_eq!(ack_topic("p", "clock-1"), "p/clock-1/ack");
    }

    #[test]
    fn a_well_formed_ack_is_parsed() {
        let ack = parse(
            "p",
            "p/clock-1/ack",
            br#"{"commandId":"c1","status":"failed","reason":"display busy"}"#,
        )
        .unwrap();
        assert_eq!(ack.device_id, "clock-1");
        assert_eq!(ack.command_id, "c1");
        assert_eq!(ack.outcome, FinalOutcome::Failed);
        assert_eq!(ack.reason.as_deref(), Some("display busy"));
        let ack = parse(
            "",
            "clock-1/ack",
            br#"{"commandId":"c1","status":"succeeded"}"#,
        )
        .unwrap();
        assert_eq!(ack.outcome, FinalOutcome::Succeeded);
    }

    #[test]
    fn only_a_current_canonical_uuidv7_can_be_a_command_id() {
        let now = Utc::now();
        let issued = crate::shared::new_id();
        assert!(plausible_command_id(&issued.to_string(), now));
        for id in [
            issued.to_string().to_uppercase(),
            issued.simple().to_string(),
            "0b5d2c1e-1111-4111-8111-111111111111".to_owned(),
            "c1".to_owned(),
            String::new(),
        ] {
            assert!(!plausible_command_id(&id, now), "{id}");
        }
        // Issued nine days ago, or an hour from now.
        let at = |ms: i64| {
            let ms = u64::try_from(now.timestamp_millis() + ms).unwrap();
            let ts = uuid::Timestamp::from_unix(uuid::NoContext, ms / 1000, 0);
            uuid::Uuid::new_v7(ts).to_string()
        };
        assert!(!plausible_command_id(&at(-9 * 86_400_000), now));
        assert!(!plausible_command_id(&at(3_600_000), now));
        assert!(plausible_command_id(&at(-6 * 86_400_000), now));
    }

    #[test]
    fn screening_refuses_devices_without_acks_and_ids_never_issued() {
        let now = Utc::now();
        let id = crate::shared::new_id().to_string();
        let body = format!(r#"{{"commandId":"{id}","status":"succeeded"}}"#);
        let ack = parse("p", "p/clock-1/ack", body.as_bytes()).unwrap();
        assert_eq!(screen(&ack, now, |d| d.as_str() == "clock-1"), Ok(()));
        assert_eq!(
            screen(&ack, now, |_| false),
            Err(Malformed::DeviceWithoutAcks)
        );
        let junk = br#"{"commandId":"0b5d2c1e-1111-4111-8111-111111111111","status":"succeeded"}"#;
        let junk = parse("p", "p/clock-1/ack", junk).unwrap();
        assert_eq!(screen(&junk, now, |_| true), Err(Malformed::CommandId));
    }

    #[tokio::test]
    async fn batches_take_whatever_waits_up_to_the_batch_size() {
        let (sink, mut batches) = queue();
        let ack = |i: usize| Ack {
            device_id: "d".into(),
            command_id: format!("c{i}"),
            outcome: FinalOutcome::Succeeded,
            reason: None,
        };
        for i in 0..ACK_BATCH + 3 {
            assert!(sink.push(ack(i)));
        }
        assert_eq!(batches.next().await.unwrap().len(), ACK_BATCH);
        assert_eq!(batches.next().await.unwrap().len(), 3);
        // A full queue drops (and says so) rather than waiting.
        for i in 0..ACK_QUEUE {
            assert!(sink.push(ack(i)));
        }
        assert!(!sink.push(ack(0)));
        drop(sink);
        let mut left = 0;
        while let Some(batch) = batches.next().await {
            left += batch.len();
        }
        assert_eq!(left, ACK_QUEUE);
    }

    #[test]
    fn malformed_acks_are_refused_with_a_reason() {
        let ok = br#"{"commandId":"c1","status":"succeeded"}"#;
        for topic in [
            "q/clock-1/ack",
            "p/clock-1/nack",
            "p/a/b/ack",
            "p/ clock/ack",
            "p//ack",
        ] {
            assert_eq!(parse("p", topic, ok), Err(Malformed::Topic), "{topic}");
        }
        for body in [
            &b"not json"[..],
            br#"{"commandId":"c1"}"#,
            br#"{"commandId":"c1","status":"succeeded","extra":1}"#,
            br#"{"commandId":1,"status":"succeeded"}"#,
            br#"{"commandId":"c1","status":"succeeded"} trailing"#,
            // serde reads a struct from an array too; an ack is exactly the object.
            br#"["c1","succeeded"]"#,
            br#"["c1","failed","reason"]"#,
        ] {
            assert_eq!(parse("p", "p/c/ack", body), Err(Malformed::Body));
        }
        assert_eq!(
            parse("p", "p/c/ack", br#"{"commandId":"c1","status":"done"}"#),
            Err(Malformed::Status)
        );
        let long = format!(
            r#"{{"commandId":"c1","status":"failed","reason":"{}"}}"#,
            "r".repeat(257)
        );
        assert_eq!(
            parse("p", "p/c/ack", long.as_bytes()),
            Err(Malformed::Reason)
        );
    }
}
