//! The state store's conformance suite: the same tests run against every backend (one
//! `conformance!` line per backend), then what only a durable file can show (restarts,
//! a corrupt file, a missing directory, group commit, a failed write).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use clock_server::domain::schedule::{Rule, WallTime, Weekdays, Zone};
use clock_server::domain::{CommandType, DeviceId};
use clock_server::shared::Secret;
use clock_server::store::schedule::claim_due;
use clock_server::store::{
    AckOutcome, CancelOutcome, CommandRecord, CommandStatus, Completion, Delivery, FileStore,
    FinalOutcome, IdemAnswer, IdemBegin, IdemRequest, LeaseBatch, MemoryStore, RedisStore,
    ScheduleCreated, ScheduleRecord, ScheduleWrite, StateStore, StatusReason, StoreError,
    StoreSettings,
};
use tempfile::TempDir;

/// Where a backend's state lives; `open` may be called again to "restart" it.
enum Harness {
    Memory,
    File { _dir: TempDir, path: PathBuf },
    Redis(common::redis::Redis),
}

impl Harness {
    fn memory() -> Self {
        Self::Memory
    }

    fn file() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        Self::File { _dir: dir, path }
    }

    /// A redis-server of its own on a free port.
    fn redis() -> Self {
        Self::Redis(common::redis::Redis::start())
    }

    fn open(&self, settings: StoreSettings) -> Arc<dyn StateStore> {
        match self {
            Self::Memory => Arc::new(MemoryStore::new(settings)),
            Self::File { path, .. } => Arc::new(FileStore::open(path, settings).unwrap()),
            Self::Redis(server) => {
                Arc::new(RedisStore::open(&Secret::new(server.url()), settings).unwrap())
            }
        }
    }

    fn open_default(&self) -> Arc<dyn StateStore> {
        self.open(StoreSettings::default())
    }
}

/// 2026-11-29T08:00:00Z plus `secs`.
fn at(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_795_939_200 + secs, 0).unwrap()
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// The outcome of `id` reported for `device`.
fn completion(
    id: &str,
    device: &str,
    outcome: FinalOutcome,
    reason: Option<StatusReason>,
) -> Completion {
    Completion {
        command_id: id.to_owned(),
        device_id: device.to_owned(),
        outcome,
        reason,
    }
}

/// `principal`'s `Idempotency-Key` `key` on a request with `fingerprint`.
fn idem<'a>(principal: &'a str, key: &'a str, fingerprint: [u8; 32]) -> IdemRequest<'a> {
    IdemRequest {
        principal,
        key,
        fingerprint,
    }
}

/// The answer `status`/`body` to `request`, kept for `ttl`.
fn answer(request: IdemRequest<'_>, status: u16, body: Vec<u8>, ttl: Duration) -> IdemAnswer<'_> {
    IdemAnswer {
        request,
        status,
        body,
        ttl,
    }
}

/// A claim at `now` of up to `limit` records, leased for `lease`.
fn claim(now: DateTime<Utc>, lease: Duration, limit: usize) -> LeaseBatch {
    LeaseBatch { now, lease, limit }
}

/// A command just submitted at `at(0)`, alive for 600 s.
fn pending(id: &str, device: &str) -> CommandRecord {
    CommandRecord {
        command_id: id.to_owned(),
        device_id: DeviceId::parse(device).unwrap(),
        command_type: CommandType::DisplayMessage,
        principal: "ops".to_owned(),
        status: CommandStatus::Pending,
        created_at: at(0),
        sent_at: None,
        completed_at: None,
        expires_at: at(600),
        device_acks: true,
        status_reason: None,
        fire_at: None,
        delivery: None,
        schedule_id: None,
    }
}

/// An alarm the gateway holds until `at(fire)`, expiring 600 s after that.
fn alarm(id: &str, fire: i64) -> CommandRecord {
    CommandRecord {
        command_type: CommandType::SetAlarm,
        status: CommandStatus::Scheduled,
        expires_at: at(fire + 600),
        device_acks: false,
        fire_at: Some(at(fire)),
        delivery: Some(Delivery {
            topic: "awtrix_a1b2c3/notify".to_owned(),
            payload: br#"{"text":"Alarm","hold":true,"wakeup":true}"#.to_vec(),
        }),
        ..pending(id, "kitchen")
    }
}

/// A message held for `device` (SPEC 11.3), accepted at `at(created)`, alive for 600 s.
fn queued(id: &str, device: &str, created: i64) -> CommandRecord {
    CommandRecord {
        status: CommandStatus::Queued,
        created_at: at(created),
        expires_at: at(created + 600),
        delivery: Some(Delivery {
            topic: format!("clocks/commands/{device}/display_message"),
            payload: format!(r#"{{"commandId":"{id}"}}"#).into_bytes(),
        }),
        ..pending(id, device)
    }
}

fn ids(records: &[CommandRecord]) -> Vec<&str> {
    records.iter().map(|r| r.command_id.as_str()).collect()
}

fn applied(outcome: AckOutcome) -> CommandRecord {
    match outcome {
        AckOutcome::Applied(record) => *record,
        other => panic!("expected Applied, got {other:?}"),
    }
}

const FP_A: [u8; 32] = [1; 32];
const FP_B: [u8; 32] = [2; 32];

// ---------------------------------------------------------------------------------------
// The suite, run against every backend.

async fn a_created_record_reads_back_unchanged(h: Harness) {
    let store = h.open_default();
    let message = pending("c-1", "clock-1");
    let scheduled = alarm("c-2", 120);
    store.create(message.clone()).await.unwrap();
    store.create(scheduled.clone()).await.unwrap();
    assert_eq!(store.get("c-1", at(1)).await.unwrap(), Some(message));
    assert_eq!(store.get("c-2", at(1)).await.unwrap(), Some(scheduled));
    assert_eq!(store.get("nope", at(1)).await.unwrap(), None);
    let again = store.create(pending("c-1", "clock-9")).await;
    assert!(matches!(again, Err(StoreError::Duplicate { ref command_id }) if command_id == "c-1"));
}

async fn the_record_renders_as_the_status_resource_of_7_3(h: Harness) {
    let store = h.open_default();
    let mut record = alarm("c-1", 0);
    // Sub-millisecond digits are not kept: the API shows milliseconds.
    record.created_at = at(0) + TimeDelta::nanoseconds(123_456_789);
    store.create(record).await.unwrap();
    store.mark_sent("c-1", at(1)).await.unwrap();
    let reason = StatusReason::new("busy", "display \"busy\"");
    store
        .complete(
            completion("c-1", "kitchen", FinalOutcome::Failed, Some(reason)),
            at(2) + TimeDelta::milliseconds(5),
        )
        .await
        .unwrap();
    let json =
        String::from_utf8(store.get("c-1", at(3)).await.unwrap().unwrap().to_json()).unwrap();
    assert_eq!(
        json,
        r#"{"commandId":"c-1","deviceId":"kitchen","type":"set_alarm","principal":"ops","status":"failed","createdAt":"2026-11-29T08:00:00.123Z","sentAt":"2026-11-29T08:00:01.000Z","completedAt":"2026-11-29T08:00:02.005Z","expiresAt":"2026-11-29T08:10:00.000Z","deviceAcks":false,"statusReason":{"code":"busy","message":"display \"busy\""}}"#
    );
    store.create(pending("c-2", "clock-1")).await.unwrap();
    let json =
        String::from_utf8(store.get("c-2", at(3)).await.unwrap().unwrap().to_json()).unwrap();
    assert_eq!(
        json,
        r#"{"commandId":"c-2","deviceId":"clock-1","type":"display_message","principal":"ops","status":"pending","createdAt":"2026-11-29T08:00:00.000Z","sentAt":null,"completedAt":null,"expiresAt":"2026-11-29T08:10:00.000Z","deviceAcks":true,"statusReason":null}"#
    );
}

async fn a_record_past_its_expiry_is_expired_and_a_late_ack_is_ignored(h: Harness) {
    let store = h.open_default();
    store.create(pending("seen", "clock-1")).await.unwrap();
    store.create(pending("unseen", "clock-1")).await.unwrap();
    store.mark_sent("seen", at(1)).await.unwrap();

    let before = store.get("seen", at(599)).await.unwrap().unwrap();
    assert_eq!(before.status, CommandStatus::Sent);
    let expired = store.get("seen", at(600)).await.unwrap().unwrap();
    assert_eq!(expired.status, CommandStatus::Expired);
    assert_eq!(expired.completed_at, Some(at(600)));
    // The expiry was persisted: an ack stamped "earlier" no longer applies.
    let late = store
        .complete(
            completion("seen", "clock-1", FinalOutcome::Succeeded, None),
            at(500),
        )
        .await
        .unwrap();
    assert_eq!(late, AckOutcome::Expired);
    // Nobody read the other one: the ack itself finds it expired.
    let late = store
        .complete(
            completion("unseen", "clock-1", FinalOutcome::Succeeded, None),
            at(700),
        )
        .await
        .unwrap();
    assert_eq!(late, AckOutcome::Expired);
    assert_eq!(
        store.get("unseen", at(701)).await.unwrap().unwrap().status,
        CommandStatus::Expired
    );
}

async fn acks_apply_only_to_the_right_device_and_the_first_final_status_wins(h: Harness) {
    let store = h.open_default();
    store.create(pending("c-1", "clock-1")).await.unwrap();
    store.mark_sent("c-1", at(1)).await.unwrap();

    let unknown = store.complete(
        completion("nope", "clock-1", FinalOutcome::Succeeded, None),
        at(2),
    );
    assert_eq!(unknown.await.unwrap(), AckOutcome::Unknown);
    let wrong = store.complete(
        completion("c-1", "clock-2", FinalOutcome::Succeeded, None),
        at(2),
    );
    assert_eq!(wrong.await.unwrap(), AckOutcome::WrongDevice);
    assert_eq!(
        store.get("c-1", at(2)).await.unwrap().unwrap().status,
        CommandStatus::Sent
    );

    let done = applied(
        store
            .complete(
                completion("c-1", "clock-1", FinalOutcome::Succeeded, None),
                at(3),
            )
            .await
            .unwrap(),
    );
    assert_eq!(
        (done.status, done.completed_at),
        (CommandStatus::Succeeded, Some(at(3)))
    );

    let duplicate = store.complete(
        completion("c-1", "clock-1", FinalOutcome::Succeeded, None),
        at(4),
    );
    assert_eq!(
        duplicate.await.unwrap(),
        AckOutcome::AlreadyFinal(CommandStatus::Succeeded)
    );
    let reason = Some(StatusReason::new("late", "changed my mind"));
    let contrary = store.complete(
        completion("c-1", "clock-1", FinalOutcome::Failed, reason),
        at(5),
    );
    assert_eq!(
        contrary.await.unwrap(),
        AckOutcome::AlreadyFinal(CommandStatus::Succeeded)
    );
    assert_eq!(store.get("c-1", at(6)).await.unwrap(), Some(done));
}

async fn an_ack_that_overtakes_the_puback_is_kept_and_sent_at_is_filled(h: Harness) {
    let store = h.open_default();
    store.create(pending("c-1", "clock-1")).await.unwrap();
    let early = store.complete(
        completion("c-1", "clock-1", FinalOutcome::Succeeded, None),
        at(1),
    );
    applied(early.await.unwrap());
    let status = store.mark_sent("c-1", at(2)).await.unwrap();
    assert_eq!(status, Some(CommandStatus::Succeeded));
    let record = store.get("c-1", at(2)).await.unwrap().unwrap();
    assert_eq!(record.status, CommandStatus::Succeeded);
    assert_eq!(
        (record.sent_at, record.completed_at),
        (Some(at(2)), Some(at(1)))
    );
    // A second mark_sent does not move sentAt.
    let again = store.mark_sent("c-1", at(9)).await.unwrap();
    assert_eq!(again, Some(CommandStatus::Succeeded));
    assert_eq!(store.get("c-1", at(10)).await.unwrap(), Some(record));
    assert_eq!(store.mark_sent("nope", at(2)).await.unwrap(), None);
}

async fn a_failed_dispatch_is_recorded_with_its_reason(h: Harness) {
    let store = h.open_default();
    store.create(pending("c-1", "clock-1")).await.unwrap();
    let reason = Some(StatusReason::dispatch_failed("mqtt: not connected"));
    let failed = applied(
        store
            .complete(
                completion("c-1", "clock-1", FinalOutcome::Failed, reason.clone()),
                at(1),
            )
            .await
            .unwrap(),
    );
    assert_eq!(
        (failed.status, failed.status_reason),
        (CommandStatus::Failed, reason)
    );
    assert_eq!(failed.sent_at, None);
}

async fn an_idempotency_key_replays_byte_for_byte_and_refuses_another_request(h: Harness) {
    let store = h.open_default();
    let begin = |principal: &'static str, fp, t| {
        let store = Arc::clone(&store);
        async move {
            store
                .idem_begin(idem(principal, "k-1", fp), at(t))
                .await
                .unwrap()
        }
    };
    assert_eq!(begin("ops", FP_A, 0).await, IdemBegin::New);
    assert_eq!(begin("ops", FP_A, 1).await, IdemBegin::InProgress);
    assert_eq!(begin("ops", FP_B, 1).await, IdemBegin::Mismatch);
    // Another credential's key of the same name is its own.
    assert_eq!(begin("other", FP_B, 1).await, IdemBegin::New);

    let body = b"{\"result\":\"sent\",\"x\":\"\xff\x00\"}\n".to_vec();
    store
        .idem_finish(
            answer(idem("ops", "k-1", FP_A), 202, body.clone(), secs(3600)),
            at(2),
        )
        .await
        .unwrap();
    assert_eq!(
        begin("ops", FP_A, 3).await,
        IdemBegin::Replay {
            status: 202,
            body: body.clone()
        }
    );
    assert_eq!(begin("ops", FP_B, 3).await, IdemBegin::Mismatch);
    assert_eq!(begin("other", FP_B, 3).await, IdemBegin::InProgress);
    // Aborting a finished key changes nothing.
    store.idem_abort(idem("ops", "k-1", FP_A)).await.unwrap();
    assert_eq!(
        begin("ops", FP_A, 4).await,
        IdemBegin::Replay { status: 202, body }
    );
    // Past its TTL the key is free again.
    assert_eq!(begin("ops", FP_B, 3602).await, IdemBegin::New);
}

async fn an_aborted_or_abandoned_key_can_be_used_again(h: Harness) {
    let store = h.open_default();
    assert_eq!(
        store
            .idem_begin(idem("ops", "k", FP_A), at(0))
            .await
            .unwrap(),
        IdemBegin::New
    );
    store.idem_abort(idem("ops", "k", FP_A)).await.unwrap();
    assert_eq!(
        store
            .idem_begin(idem("ops", "k", FP_A), at(1))
            .await
            .unwrap(),
        IdemBegin::New
    );
    // Left in progress by a crash: blocked for a bounded time, then free.
    assert_eq!(
        store
            .idem_begin(idem("ops", "k", FP_A), at(60))
            .await
            .unwrap(),
        IdemBegin::InProgress
    );
    assert_eq!(
        store
            .idem_begin(idem("ops", "k", FP_B), at(61))
            .await
            .unwrap(),
        IdemBegin::New
    );
}

async fn concurrent_begins_with_one_key_give_exactly_one_new(h: Harness) {
    let store = h.open_default();
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                store
                    .idem_begin(idem("ops", "race", FP_A), at(0))
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut new = 0;
    for task in tasks {
        match task.await.unwrap() {
            IdemBegin::New => new += 1,
            IdemBegin::InProgress => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(new, 1);
}

async fn a_scheduled_alarm_is_not_claimed_before_its_time(h: Harness) {
    let store = h.open_default();
    store.create(alarm("a-1", 60)).await.unwrap();
    store.create(pending("c-1", "clock-1")).await.unwrap();
    assert!(
        store
            .claim_due(claim(at(59), secs(10), 10))
            .await
            .unwrap()
            .is_empty()
    );
    let due = store.claim_due(claim(at(60), secs(10), 10)).await.unwrap();
    assert_eq!(due, vec![alarm("a-1", 60)]);
    assert_eq!(
        due[0].delivery.as_ref().unwrap().topic,
        "awtrix_a1b2c3/notify"
    );
}

async fn concurrent_claimers_get_each_alarm_exactly_once(h: Harness) {
    let store = h.open_default();
    for i in 0..40 {
        store.create(alarm(&format!("a-{i:02}"), i)).await.unwrap();
    }
    let claimers: Vec<_> = (0..2)
        .map(|_| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let mut mine = Vec::new();
                // Small batches so the two claimers interleave.
                loop {
                    let got = store.claim_due(claim(at(100), secs(30), 3)).await.unwrap();
                    if got.is_empty() {
                        return mine;
                    }
                    mine.extend(got.into_iter().map(|r| r.command_id));
                }
            })
        })
        .collect();
    let mut all = Vec::new();
    for claimer in claimers {
        all.extend(claimer.await.unwrap());
    }
    let distinct: HashSet<_> = all.iter().cloned().collect();
    assert_eq!((all.len(), distinct.len()), (40, 40));
    // Earliest first.
    let first = store.create(alarm("later", 50)).await;
    first.unwrap();
    let got = store.claim_due(claim(at(131), secs(30), 2)).await.unwrap();
    let ids: Vec<_> = got.iter().map(|r| r.command_id.as_str()).collect();
    assert_eq!(ids, ["a-00", "a-01"]);
}

async fn an_alarm_whose_claimer_died_is_claimed_again_after_the_lease(h: Harness) {
    let store = h.open_default();
    store.create(alarm("a-1", 0)).await.unwrap();
    assert_eq!(
        store
            .claim_due(claim(at(0), secs(10), 10))
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(
        store
            .claim_due(claim(at(9), secs(10), 10))
            .await
            .unwrap()
            .is_empty()
    );
    let again = store.claim_due(claim(at(10), secs(10), 10)).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(
        store.mark_sent("a-1", at(11)).await.unwrap(),
        Some(CommandStatus::Sent)
    );
    let sent = store.get("a-1", at(11)).await.unwrap().unwrap();
    assert_eq!(
        (sent.status, sent.sent_at),
        (CommandStatus::Sent, Some(at(11)))
    );
    assert!(
        store
            .claim_due(claim(at(100), secs(10), 10))
            .await
            .unwrap()
            .is_empty()
    );
}

async fn only_a_scheduled_alarm_nobody_is_publishing_can_be_cancelled(h: Harness) {
    let store = h.open_default();
    store.create(alarm("a-1", 60)).await.unwrap();
    store.create(alarm("a-2", 60)).await.unwrap();
    store.create(pending("c-1", "clock-1")).await.unwrap();

    let cancelled = match store.cancel("a-1", at(1)).await.unwrap() {
        CancelOutcome::Cancelled(record) => *record,
        other => panic!("expected Cancelled, got {other:?}"),
    };
    assert_eq!(
        (cancelled.status, cancelled.completed_at),
        (CommandStatus::Cancelled, Some(at(1)))
    );
    assert_eq!(store.get("a-1", at(2)).await.unwrap(), Some(cancelled));
    let again = store.cancel("a-1", at(2)).await.unwrap();
    assert_eq!(
        again,
        CancelOutcome::NotCancellable(CommandStatus::Cancelled)
    );

    // a-2 is claimed (being published): 409, until its lease runs out.
    let due = store.claim_due(claim(at(60), secs(10), 10)).await.unwrap();
    assert_eq!(
        due.iter()
            .map(|r| r.command_id.as_str())
            .collect::<Vec<_>>(),
        ["a-2"]
    );
    let leased = store.cancel("a-2", at(61)).await.unwrap();
    assert_eq!(
        leased,
        CancelOutcome::NotCancellable(CommandStatus::Scheduled)
    );
    assert!(matches!(
        store.cancel("a-2", at(70)).await.unwrap(),
        CancelOutcome::Cancelled(_)
    ));
    assert!(
        store
            .claim_due(claim(at(80), secs(10), 10))
            .await
            .unwrap()
            .is_empty()
    );

    let pending = store.cancel("c-1", at(1)).await.unwrap();
    assert_eq!(
        pending,
        CancelOutcome::NotCancellable(CommandStatus::Pending)
    );
    store.mark_sent("c-1", at(1)).await.unwrap();
    let sent = store.cancel("c-1", at(2)).await.unwrap();
    assert_eq!(sent, CancelOutcome::NotCancellable(CommandStatus::Sent));
    assert_eq!(
        store.cancel("nope", at(2)).await.unwrap(),
        CancelOutcome::NotFound
    );
}

async fn an_alarm_still_scheduled_a_minute_after_its_time_is_failed_once(h: Harness) {
    let store = h.open_default();
    store.create(alarm("a-1", 0)).await.unwrap();
    let due = store.claim_due(claim(at(61), secs(10), 10)).await.unwrap();
    assert!(!due[0].schedule_missed(at(60)));
    assert!(due[0].schedule_missed(at(61)));
    let missed = Some(StatusReason::schedule_missed());
    let failed = applied(
        store
            .complete(
                completion("a-1", "kitchen", FinalOutcome::Failed, missed),
                at(61),
            )
            .await
            .unwrap(),
    );
    assert_eq!(failed.status_reason.unwrap().code, "schedule_missed");
    assert!(
        store
            .claim_due(claim(at(200), secs(10), 10))
            .await
            .unwrap()
            .is_empty()
    );
}

async fn finished_records_are_dropped_after_retention(h: Harness) {
    let settings = StoreSettings {
        retention: secs(60),
        ..StoreSettings::default()
    };
    let store = h.open(settings);
    store.create(pending("done", "clock-1")).await.unwrap();
    store.create(pending("unseen", "clock-1")).await.unwrap();
    store.create(alarm("later", 10_000)).await.unwrap();
    applied(
        store
            .complete(
                completion("done", "clock-1", FinalOutcome::Succeeded, None),
                at(1),
            )
            .await
            .unwrap(),
    );

    assert!(store.get("done", at(60)).await.unwrap().is_some());
    assert_eq!(store.get("done", at(61)).await.unwrap(), None);
    let ack = store.complete(
        completion("done", "clock-1", FinalOutcome::Failed, None),
        at(62),
    );
    assert_eq!(ack.await.unwrap(), AckOutcome::Unknown);
    // Expired at 600 without anyone looking: dropped 60 s later all the same.
    store.purge(at(659)).await.unwrap();
    assert!(store.get("unseen", at(659)).await.unwrap().is_some());
    store.purge(at(660)).await.unwrap();
    assert_eq!(store.get("unseen", at(660)).await.unwrap(), None);
    // Idempotency entries go after their own TTL.
    store
        .idem_begin(idem("ops", "k", FP_A), at(700))
        .await
        .unwrap();
    store
        .idem_finish(
            answer(idem("ops", "k", FP_A), 202, b"{}".to_vec(), secs(100)),
            at(700),
        )
        .await
        .unwrap();
    store.purge(at(800)).await.unwrap();
    assert_eq!(
        store
            .idem_begin(idem("ops", "k", FP_B), at(800))
            .await
            .unwrap(),
        IdemBegin::New
    );
    // What is not final yet stays.
    assert!(store.get("later", at(900)).await.unwrap().is_some());
}

// ---------------------------------------------------------------------------------------
// Schedules (SPEC 12), run against every backend too.

/// Every day at 08:00 UTC (`at(0)` is 08:00Z), next at `at(next)`, created at `at(-60)`.
fn schedule(id: &str, device: &str, next: i64) -> ScheduleRecord {
    ScheduleRecord {
        schedule_id: id.to_owned(),
        device_id: device.to_owned(),
        rule: Rule {
            time: WallTime::parse("08:00").unwrap(),
            days: Weekdays::EVERY_DAY,
            zone: Zone::parse("UTC").unwrap(),
        },
        label: "work".to_owned(),
        enabled: true,
        ttl_seconds: None,
        next_fire_at: Some(at(next)),
        last_fired_at: None,
        last_command_id: None,
        principal: "ops".to_owned(),
        created_at: at(-60),
        updated_at: at(-60),
        version: 0,
    }
}

const DAY: i64 = 86_400;

async fn a_schedule_reads_back_unchanged_and_renders_as_the_resource_of_12_1(h: Harness) {
    let store = h.open_default();
    let mut s = schedule("s-1", "kitchen", 0);
    s.rule = Rule {
        time: WallTime::parse("06:30").unwrap(),
        days: Weekdays::MON_TO_FRI,
        zone: Zone::parse("Europe/Berlin").unwrap(),
    };
    s.ttl_seconds = Some(300);
    s.last_fired_at = Some(at(-DAY));
    s.last_command_id = Some("0190a5e0-0000-7000-8000-000000000001".to_owned());
    assert_eq!(
        store.schedule_create(s.clone(), 32).await.unwrap(),
        ScheduleCreated::Created
    );
    assert_eq!(store.schedule_get("s-1").await.unwrap(), Some(s.clone()));
    assert_eq!(store.schedule_get("s-2").await.unwrap(), None);
    let json: serde_json::Value = serde_json::from_slice(&s.to_json()).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "scheduleId": "s-1", "deviceId": "kitchen", "time": "06:30:00",
            "days": ["mon", "tue", "wed", "thu", "fri"], "timeZone": "Europe/Berlin",
            "label": "work", "enabled": true, "ttlSeconds": 300,
            "nextFireAt": "2026-11-29T08:00:00.000Z", "lastFiredAt": "2026-11-28T08:00:00.000Z",
            "lastCommandId": "0190a5e0-0000-7000-8000-000000000001", "principal": "ops",
            "createdAt": "2026-11-29T07:59:00.000Z", "updatedAt": "2026-11-29T07:59:00.000Z"
        })
    );
}

async fn an_occurrences_command_keeps_its_schedule_id(h: Harness) {
    let store = h.open_default();
    let fired = pending("c-1", "kitchen").for_schedule(Some("s-1".to_owned()));
    store.create(fired.clone()).await.unwrap();
    store.create(pending("c-2", "kitchen")).await.unwrap();
    let read = store.get("c-1", at(1)).await.unwrap().unwrap();
    assert_eq!(read, fired);
    let json: serde_json::Value = serde_json::from_slice(&read.to_json()).unwrap();
    assert_eq!(json["scheduleId"], "s-1");
    // Any other command's record is as SPEC 7.3 shows it, without the field.
    let other = store.get("c-2", at(1)).await.unwrap().unwrap();
    let json: serde_json::Value = serde_json::from_slice(&other.to_json()).unwrap();
    assert!(json.get("scheduleId").is_none(), "{json}");
}

async fn a_device_has_at_most_its_limit_of_schedules(h: Harness) {
    let store = h.open_default();
    for id in ["s-1", "s-2"] {
        assert_eq!(
            store
                .schedule_create(schedule(id, "kitchen", 0), 2)
                .await
                .unwrap(),
            ScheduleCreated::Created
        );
    }
    assert_eq!(
        store
            .schedule_create(schedule("s-3", "kitchen", 0), 2)
            .await
            .unwrap(),
        ScheduleCreated::TooMany
    );
    assert_eq!(store.schedule_get("s-3").await.unwrap(), None);
    assert_eq!(
        store
            .schedule_create(schedule("s-3", "hall", 0), 2)
            .await
            .unwrap(),
        ScheduleCreated::Created
    );
    assert_eq!(
        store
            .schedule_create(schedule("s-3", "attic", 0), 2)
            .await
            .unwrap(),
        ScheduleCreated::Exists
    );
    // A deleted one frees its place.
    assert_eq!(
        store
            .schedule_delete("s-1")
            .await
            .unwrap()
            .unwrap()
            .schedule_id,
        "s-1"
    );
    assert_eq!(store.schedule_delete("s-1").await.unwrap(), None);
    assert_eq!(
        store
            .schedule_create(schedule("s-4", "kitchen", 0), 2)
            .await
            .unwrap(),
        ScheduleCreated::Created
    );
}

async fn concurrent_creates_never_pass_the_limit(h: Harness) {
    let store = h.open_default();
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                store
                    .schedule_create(schedule(&format!("s-{i:02}"), "kitchen", 0), 5)
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut created = 0;
    for task in tasks {
        created += usize::from(task.await.unwrap() == ScheduleCreated::Created);
    }
    assert_eq!(created, 5);
    assert_eq!(store.schedule_list(Some("kitchen")).await.unwrap().len(), 5);
}

async fn the_list_is_by_next_occurrence_disabled_last_and_by_device(h: Harness) {
    let store = h.open_default();
    let mut off = schedule("s-0", "kitchen", 0);
    off.enabled = false;
    off.next_fire_at = None;
    for s in [
        off,
        schedule("s-3", "kitchen", 60),
        schedule("s-2", "hall", 60),
        schedule("s-1", "kitchen", 120),
    ] {
        store.schedule_create(s, 32).await.unwrap();
    }
    let ids = |list: Vec<ScheduleRecord>| -> Vec<String> {
        list.into_iter().map(|s| s.schedule_id).collect()
    };
    assert_eq!(
        ids(store.schedule_list(None).await.unwrap()),
        ["s-2", "s-3", "s-1", "s-0"]
    );
    assert_eq!(
        ids(store.schedule_list(Some("kitchen")).await.unwrap()),
        ["s-3", "s-1", "s-0"]
    );
    assert!(store.schedule_list(Some("attic")).await.unwrap().is_empty());
    assert_eq!(store.schedule_count_enabled().await.unwrap(), 3);
}

async fn a_replace_is_a_compare_and_set_on_the_version(h: Harness) {
    let store = h.open_default();
    store
        .schedule_create(schedule("s-1", "kitchen", 0), 32)
        .await
        .unwrap();
    let mut change = schedule("s-1", "elsewhere", 0);
    change.label = "gym".to_owned();
    change.enabled = false;
    change.next_fire_at = None;
    change.updated_at = at(5);
    let ScheduleWrite::Written(written) = store.schedule_replace(change.clone(), 0).await.unwrap()
    else {
        panic!("expected Written");
    };
    // The device stays; the version moves on.
    assert_eq!(
        (
            written.device_id.as_str(),
            written.label.as_str(),
            written.version
        ),
        ("kitchen", "gym", 1)
    );
    assert_eq!(store.schedule_get("s-1").await.unwrap(), Some(*written));
    assert_eq!(
        store.schedule_replace(change.clone(), 0).await.unwrap(),
        ScheduleWrite::Conflict
    );
    assert_eq!(
        store
            .schedule_replace(schedule("s-9", "kitchen", 0), 0)
            .await
            .unwrap(),
        ScheduleWrite::NotFound
    );
    assert_eq!(store.schedule_count_enabled().await.unwrap(), 0);
    assert!(store.schedule_due(at(10), 10).await.unwrap().is_empty());
}

async fn only_enabled_schedules_that_are_due_are_read_earliest_first(h: Harness) {
    let store = h.open_default();
    let mut off = schedule("s-off", "kitchen", 0);
    off.enabled = false;
    off.next_fire_at = None;
    store.schedule_create(off, 32).await.unwrap();
    for (id, next) in [("s-b", 30), ("s-a", 10), ("s-c", 61)] {
        store
            .schedule_create(schedule(id, "kitchen", next), 32)
            .await
            .unwrap();
    }
    let ids = |list: Vec<ScheduleRecord>| -> Vec<String> {
        list.into_iter().map(|s| s.schedule_id).collect()
    };
    assert!(store.schedule_due(at(9), 10).await.unwrap().is_empty());
    assert_eq!(
        ids(store.schedule_due(at(60), 10).await.unwrap()),
        ["s-a", "s-b"]
    );
    assert_eq!(ids(store.schedule_due(at(61), 1).await.unwrap()), ["s-a"]);
}

async fn concurrent_claimers_fire_each_occurrence_exactly_once(h: Harness) {
    let store = h.open_default();
    for i in 0..30 {
        store
            .schedule_create(schedule(&format!("s-{i:02}"), &format!("clock-{i}"), 0), 32)
            .await
            .unwrap();
    }
    let claimers: Vec<_> = (0..4)
        .map(|c| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let mut n = 0;
                let mut fired = Vec::new();
                // Small batches so the claimers interleave.
                loop {
                    let claims = claim_due(&*store, at(5), 3, || {
                        n += 1;
                        format!("cmd-{c}-{n}")
                    })
                    .await
                    .unwrap();
                    if claims.is_empty() {
                        return fired;
                    }
                    fired.extend(claims);
                }
            })
        })
        .collect();
    let mut all = Vec::new();
    for claimer in claimers {
        all.extend(claimer.await.unwrap());
    }
    let ids: HashSet<_> = all.iter().map(|c| c.schedule.schedule_id.clone()).collect();
    assert_eq!((all.len(), ids.len()), (30, 30));
    for claim in &all {
        let (occurrence, command_id) = claim.fire.clone().unwrap();
        assert_eq!((occurrence, claim.missed), (at(0), 0));
        let stored = store
            .schedule_get(&claim.schedule.schedule_id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored, claim.schedule);
        assert_eq!(
            (
                stored.next_fire_at,
                stored.last_fired_at,
                stored.last_command_id
            ),
            (Some(at(DAY)), Some(at(0)), Some(command_id))
        );
    }
    // Nothing is due until tomorrow.
    assert!(
        claim_due(&*store, at(DAY - 1), 100, || "x".to_owned())
            .await
            .unwrap()
            .is_empty()
    );
}

async fn occurrences_more_than_a_minute_late_are_missed_and_counted_never_fired(h: Harness) {
    let store = h.open_default();
    store
        .schedule_create(schedule("late", "kitchen", 0), 32)
        .await
        .unwrap();
    // Up to a minute late: fires, with the occurrence's own instant.
    let claims = claim_due(&*store, at(60), 1, || "c-1".to_owned())
        .await
        .unwrap();
    assert_eq!(claims.len(), 1);
    assert_eq!(
        (claims[0].fire.clone(), claims[0].missed),
        (Some((at(0), "c-1".to_owned())), 0)
    );
    store
        .schedule_create(schedule("down", "hall", 0), 32)
        .await
        .unwrap();
    // The other was down for three days: three missed, today's (10 s ago) fires.
    let claims = claim_due(&*store, at(3 * DAY + 10), 10, || "c-2".to_owned())
        .await
        .unwrap();
    let down = claims
        .iter()
        .find(|c| c.schedule.schedule_id == "down")
        .unwrap();
    assert_eq!(
        (down.fire.clone(), down.missed, down.schedule.next_fire_at),
        (Some((at(3 * DAY), "c-2".to_owned())), 3, Some(at(4 * DAY)))
    );
    let late = claims
        .iter()
        .find(|c| c.schedule.schedule_id == "late")
        .unwrap();
    assert_eq!(late.missed, 2);
    // Back more than a minute after today's occurrence: missed only, nothing fired,
    // and the next one is tomorrow's; the last firing stays what it was.
    let claims = claim_due(&*store, at(5 * DAY + 61), 10, || "c-3".to_owned())
        .await
        .unwrap();
    assert_eq!(claims.len(), 2);
    for claim in claims {
        assert_eq!((claim.fire, claim.missed), (None, 2));
        assert_eq!(
            (claim.schedule.next_fire_at, claim.schedule.last_fired_at),
            (Some(at(6 * DAY)), Some(at(3 * DAY)))
        );
    }
}

async fn a_deleted_or_disabled_schedule_is_not_claimed(h: Harness) {
    let store = h.open_default();
    store
        .schedule_create(schedule("gone", "kitchen", 0), 32)
        .await
        .unwrap();
    store
        .schedule_create(schedule("off", "kitchen", 0), 32)
        .await
        .unwrap();
    store.schedule_delete("gone").await.unwrap();
    let mut off = schedule("off", "kitchen", 0);
    off.enabled = false;
    off.next_fire_at = None;
    store.schedule_replace(off, 0).await.unwrap();
    assert!(
        claim_due(&*store, at(1), 10, || "x".to_owned())
            .await
            .unwrap()
            .is_empty()
    );
}

async fn schedules_and_their_last_firing_survive_a_restart(h: Harness) {
    if matches!(h, Harness::Memory) {
        return;
    }
    {
        let store = h.open_default();
        store
            .schedule_create(schedule("s-1", "kitchen", 0), 32)
            .await
            .unwrap();
        store
            .schedule_create(schedule("s-2", "kitchen", 30), 32)
            .await
            .unwrap();
        let claims = claim_due(&*store, at(1), 10, || "c-1".to_owned())
            .await
            .unwrap();
        assert_eq!(claims.len(), 1);
    }
    let store = h.open_default();
    // The occurrence fired before the restart is not fired again; the other one is.
    let claims = claim_due(&*store, at(31), 10, || "c-2".to_owned())
        .await
        .unwrap();
    let ids: Vec<_> = claims
        .iter()
        .map(|c| c.schedule.schedule_id.as_str())
        .collect();
    assert_eq!(ids, ["s-2"]);
    let s1 = store.schedule_get("s-1").await.unwrap().unwrap();
    assert_eq!(
        (s1.next_fire_at, s1.last_command_id.as_deref()),
        (Some(at(DAY)), Some("c-1"))
    );
}

async fn queued_commands_are_claimed_per_device_in_the_order_accepted(h: Harness) {
    let store = h.open_default();
    // Created out of order; two at the same millisecond go by id.
    for record in [
        queued("q-4", "dev-a", 2),
        queued("q-2", "dev-a", 1),
        queued("q-3", "dev-b", 0),
        queued("q-1b", "dev-a", 1),
        queued("q-1", "dev-a", 0),
    ] {
        store.create(record).await.unwrap();
    }
    assert_eq!(
        store.get("q-4", at(3)).await.unwrap(),
        Some(queued("q-4", "dev-a", 2))
    );
    let lease = secs(30);
    let first = store
        .claim_queued("dev-a", claim(at(10), lease, 2))
        .await
        .unwrap();
    assert_eq!(ids(&first), ["q-1", "q-1b"]);
    assert_eq!(first[0].delivery, queued("q-1", "dev-a", 0).delivery);
    // While that claimer delivers, nobody else gets any of the device's queue.
    assert!(
        store
            .claim_queued("dev-a", claim(at(11), lease, 10))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        ids(&store
            .claim_queued("dev-b", claim(at(11), lease, 10))
            .await
            .unwrap()),
        ["q-3"]
    );
    assert_eq!(store.count_queued(at(12)).await.unwrap(), 5);
    assert_eq!(
        store.queued_devices(at(12)).await.unwrap(),
        ["dev-a", "dev-b"]
    );

    for id in ["q-1", "q-1b"] {
        assert_eq!(
            store.mark_sent(id, at(12)).await.unwrap(),
            Some(CommandStatus::Sent)
        );
    }
    // Delivered: the rest of the queue is free at once, in order.
    let rest = store
        .claim_queued("dev-a", claim(at(13), lease, 10))
        .await
        .unwrap();
    assert_eq!(ids(&rest), ["q-2", "q-4"]);
    assert_eq!(store.count_queued(at(13)).await.unwrap(), 3);
    // A claimer that died: its lease runs out and the records are claimed again.
    let again = store
        .claim_queued("dev-a", claim(at(13) + TimeDelta::seconds(31), lease, 10))
        .await
        .unwrap();
    assert_eq!(ids(&again), ["q-2", "q-4"]);
    assert!(
        store
            .claim_queued("dev-c", claim(at(13), lease, 10))
            .await
            .unwrap()
            .is_empty()
    );
}

async fn a_queued_command_past_its_expiry_is_expired_and_never_claimed(h: Harness) {
    let store = h.open_default();
    store.create(queued("q-1", "dev-a", 0)).await.unwrap();
    store.create(queued("q-2", "dev-a", 100)).await.unwrap();
    assert_eq!(store.count_queued(at(601)).await.unwrap(), 1);
    let claimed = store
        .claim_queued("dev-a", claim(at(601), secs(30), 10))
        .await
        .unwrap();
    assert_eq!(ids(&claimed), ["q-2"]);
    let expired = store.get("q-1", at(602)).await.unwrap().unwrap();
    assert_eq!(expired.status, CommandStatus::Expired);
    assert_eq!(expired.completed_at, Some(at(600)));
    assert_eq!(
        store.queued_devices(at(701)).await.unwrap(),
        Vec::<String>::new()
    );
    assert_eq!(store.count_queued(at(701)).await.unwrap(), 0);
}

async fn a_queued_command_can_be_cancelled_unless_it_is_being_delivered(h: Harness) {
    let store = h.open_default();
    store.create(queued("q-1", "dev-a", 0)).await.unwrap();
    store.create(queued("q-2", "dev-b", 0)).await.unwrap();
    match store.cancel("q-1", at(5)).await.unwrap() {
        CancelOutcome::Cancelled(record) => {
            assert_eq!(record.status, CommandStatus::Cancelled);
            assert_eq!(record.completed_at, Some(at(5)));
        }
        other => panic!("{other:?}"),
    }
    assert!(
        store
            .claim_queued("dev-a", claim(at(6), secs(30), 10))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        ids(&store
            .claim_queued("dev-b", claim(at(6), secs(30), 10))
            .await
            .unwrap()),
        ["q-2"]
    );
    assert_eq!(
        store.cancel("q-2", at(7)).await.unwrap(),
        CancelOutcome::NotCancellable(CommandStatus::Queued)
    );
    assert_eq!(store.count_queued(at(8)).await.unwrap(), 1);
}

async fn concurrent_claimers_deliver_a_devices_queue_once_and_in_order(h: Harness) {
    let store = h.open_default();
    let n = 60;
    for i in 0..n {
        store
            .create(queued(&format!("q-{i:03}"), "dev-a", i))
            .await
            .unwrap();
    }
    let delivered = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut claimers = Vec::new();
    for _ in 0..6 {
        let (store, delivered) = (store.clone(), delivered.clone());
        claimers.push(tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(20);
            while store.count_queued(at(n)).await.unwrap() > 0 {
                assert!(Instant::now() < deadline, "the queue did not drain");
                let batch = store
                    .claim_queued("dev-a", claim(at(n), secs(30), 7))
                    .await
                    .unwrap();
                for record in batch {
                    // Delivered, in the order claimed, under the one lease.
                    delivered.lock().unwrap().push(record.command_id.clone());
                    store.mark_sent(&record.command_id, at(n)).await.unwrap();
                }
                tokio::task::yield_now().await;
            }
        }));
    }
    for claimer in claimers {
        claimer.await.unwrap();
    }
    let delivered = delivered.lock().unwrap().clone();
    let expected: Vec<String> = (0..n).map(|i| format!("q-{i:03}")).collect();
    assert_eq!(delivered, expected, "each once, in the order accepted");
}

/// Instantiates the suite for one backend: one `#[tokio::test]` per function above.
async fn the_expiry_sweep_reports_each_expired_record_once_whoever_expired_it(h: Harness) {
    let store = h.open_default();
    for id in ["swept", "read", "acked", "queued-1"] {
        store.create(pending(id, "clock-1")).await.unwrap();
    }
    store
        .create(queued("queued-2", "clock-2", 0))
        .await
        .unwrap();
    store
        .create(CommandRecord {
            expires_at: at(1200),
            ..pending("later", "clock-1")
        })
        .await
        .unwrap();
    store.mark_sent("swept", at(1)).await.unwrap();
    applied(
        store
            .complete(
                completion("acked", "clock-1", FinalOutcome::Succeeded, None),
                at(10),
            )
            .await
            .unwrap(),
    );
    assert!(store.expire_due(at(599), 100).await.unwrap().is_empty());
    // A read expires one first: the sweep still reports it (its event and count are
    // the sweep's), once.
    let read = store.get("read", at(600)).await.unwrap().unwrap();
    assert_eq!(read.status, CommandStatus::Expired);
    let mut swept = store.expire_due(at(602), 100).await.unwrap();
    swept.sort_by(|a, b| a.command_id.cmp(&b.command_id));
    assert_eq!(ids(&swept), ["queued-1", "queued-2", "read", "swept"]);
    for record in &swept {
        assert_eq!(record.status, CommandStatus::Expired);
        assert_eq!(record.completed_at, Some(at(600)));
    }
    assert_eq!(swept[3].sent_at, Some(at(1)));
    // Persisted: a read after the sweep says expired too; the next sweep has nothing.
    assert_eq!(
        store.get("swept", at(603)).await.unwrap().unwrap().status,
        CommandStatus::Expired
    );
    assert!(store.expire_due(at(603), 100).await.unwrap().is_empty());
    let later = store.expire_due(at(1300), 100).await.unwrap();
    assert_eq!(ids(&later), ["later"]);
    assert!(store.expire_due(at(1400), 100).await.unwrap().is_empty());
}

async fn concurrent_sweepers_report_each_expired_record_exactly_once(h: Harness) {
    let store = h.open_default();
    for i in 0..40 {
        let record = CommandRecord {
            expires_at: at(100 + i),
            ..pending(&format!("c-{i:02}"), "clock-1")
        };
        store.create(record).await.unwrap();
    }
    let sweepers: Vec<_> = (0..2)
        .map(|_| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let mut mine = Vec::new();
                // Small batches (where a backend honours them) so the sweepers interleave.
                for now in [120, 130, 150, 200] {
                    loop {
                        let got = store.expire_due(at(now), 3).await.unwrap();
                        if got.is_empty() {
                            break;
                        }
                        mine.extend(got.into_iter().map(|r| r.command_id));
                    }
                }
                mine
            })
        })
        .collect();
    let mut all = Vec::new();
    for sweeper in sweepers {
        all.extend(sweeper.await.unwrap());
    }
    let distinct: HashSet<_> = all.iter().cloned().collect();
    assert_eq!((all.len(), distinct.len()), (40, 40));
}

macro_rules! conformance {
    ($backend:ident, $harness:expr) => {
        mod $backend {
            use super::*;
            conformance!(@tests $harness;
                a_created_record_reads_back_unchanged,
                the_record_renders_as_the_status_resource_of_7_3,
                a_record_past_its_expiry_is_expired_and_a_late_ack_is_ignored,
                acks_apply_only_to_the_right_device_and_the_first_final_status_wins,
                an_ack_that_overtakes_the_puback_is_kept_and_sent_at_is_filled,
                a_failed_dispatch_is_recorded_with_its_reason,
                an_idempotency_key_replays_byte_for_byte_and_refuses_another_request,
                an_aborted_or_abandoned_key_can_be_used_again,
                concurrent_begins_with_one_key_give_exactly_one_new,
                a_scheduled_alarm_is_not_claimed_before_its_time,
                concurrent_claimers_get_each_alarm_exactly_once,
                an_alarm_whose_claimer_died_is_claimed_again_after_the_lease,
                only_a_scheduled_alarm_nobody_is_publishing_can_be_cancelled,
                an_alarm_still_scheduled_a_minute_after_its_time_is_failed_once,
                finished_records_are_dropped_after_retention,
                a_schedule_reads_back_unchanged_and_renders_as_the_resource_of_12_1,
                a_device_has_at_most_its_limit_of_schedules,
                an_occurrences_command_keeps_its_schedule_id,
                concurrent_creates_never_pass_the_limit,
                the_list_is_by_next_occurrence_disabled_last_and_by_device,
                a_replace_is_a_compare_and_set_on_the_version,
                only_enabled_schedules_that_are_due_are_read_earliest_first,
                concurrent_claimers_fire_each_occurrence_exactly_once,
                occurrences_more_than_a_minute_late_are_missed_and_counted_never_fired,
                a_deleted_or_disabled_schedule_is_not_claimed,
                schedules_and_their_last_firing_survive_a_restart,
                queued_commands_are_claimed_per_device_in_the_order_accepted,
                a_queued_command_past_its_expiry_is_expired_and_never_claimed,
                a_queued_command_can_be_cancelled_unless_it_is_being_delivered,
                concurrent_claimers_deliver_a_devices_queue_once_and_in_order,
                the_expiry_sweep_reports_each_expired_record_once_whoever_expired_it,
                concurrent_sweepers_report_each_expired_record_exactly_once,
            );
        }
    };
    (@tests $harness:expr; $($test:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() {
                super::$test($harness).await;
            }
        )*
    };
}

conformance!(memory, Harness::memory());
conformance!(file, Harness::file());
conformance!(redis, Harness::redis());

// ---------------------------------------------------------------------------------------
// Memory only: the bound.

#[tokio::test]
async fn past_its_bound_memory_drops_the_oldest_finished_record_and_never_an_unfinished_one() {
    let store = MemoryStore::new(StoreSettings {
        max_commands: 3,
        ..StoreSettings::default()
    });
    for id in ["a", "b", "c"] {
        store.create(pending(id, "clock-1")).await.unwrap();
    }
    applied(
        store
            .complete(
                completion("c", "clock-1", FinalOutcome::Succeeded, None),
                at(1),
            )
            .await
            .unwrap(),
    );
    applied(
        store
            .complete(
                completion("b", "clock-1", FinalOutcome::Succeeded, None),
                at(2),
            )
            .await
            .unwrap(),
    );
    store.create(pending("d", "clock-1")).await.unwrap();
    // c finished first, so c goes first, though b is older.
    assert_eq!(store.get("c", at(3)).await.unwrap(), None);
    store.create(pending("e", "clock-1")).await.unwrap();
    assert_eq!(store.get("b", at(3)).await.unwrap(), None);
    // Nothing finished is left: the new record is refused, nothing is dropped.
    let refused = store.create(pending("f", "clock-1")).await.unwrap_err();
    assert!(
        matches!(&refused, StoreError::Full { message } if message.contains("STATE_MAX_COMMANDS")),
        "{refused}"
    );
    assert_eq!(store.get("f", at(3)).await.unwrap(), None);
    for id in ["a", "d", "e"] {
        assert!(store.get(id, at(3)).await.unwrap().is_some(), "{id}");
    }
    // Once one of them has expired unseen it no longer holds a place.
    store.create(pending("g", "clock-1")).await.unwrap_err();
    let mut late = pending("h", "clock-1");
    late.created_at = at(700);
    late.expires_at = at(1300);
    store.create(late).await.unwrap();
    assert_eq!(store.len(), 3);
}

#[tokio::test]
async fn memory_stays_bounded_under_a_long_run_of_commands() {
    let store = MemoryStore::new(StoreSettings {
        max_commands: 1000,
        ..StoreSettings::default()
    });
    for i in 0..20_000 {
        let id = format!("c-{i}");
        store.create(pending(&id, "clock-1")).await.unwrap();
        store.mark_sent(&id, at(1)).await.unwrap();
        store
            .complete(
                completion(&id, "clock-1", FinalOutcome::Succeeded, None),
                at(2),
            )
            .await
            .unwrap();
        let key = format!("k-{i}");
        store
            .idem_begin(idem("ops", &key, FP_A), at(0))
            .await
            .unwrap();
        store
            .idem_finish(
                answer(idem("ops", &key, FP_A), 202, vec![0; 16], secs(60)),
                at(0),
            )
            .await
            .unwrap();
    }
    assert_eq!(store.len(), 1000);
    assert!(store.get("c-19999", at(3)).await.unwrap().is_some());
    // The credential's own oldest keys made room for its newest.
    assert!(matches!(
        store
            .idem_begin(idem("ops", "k-19999", FP_A), at(1))
            .await
            .unwrap(),
        IdemBegin::Replay { .. }
    ));
    assert_eq!(
        store
            .idem_begin(idem("ops", "k-0", FP_A), at(1))
            .await
            .unwrap(),
        IdemBegin::New
    );
}

/// A message of credential `principal` (generic, acknowledging: unfinished until acked).
fn message_of(principal: &str, id: &str) -> CommandRecord {
    CommandRecord {
        principal: principal.to_owned(),
        ..pending(id, "clock-1")
    }
}

#[tokio::test]
async fn one_credentials_traffic_never_evicts_anothers_held_alarm_unfinished_command_or_live_key() {
    let store = MemoryStore::new(StoreSettings {
        max_commands: 1000,
        shares: 2,
        ..StoreSettings::default()
    });
    let alarm = CommandRecord {
        principal: "b".to_owned(),
        ..alarm("b-alarm", 3600)
    };
    store.create(alarm).await.unwrap();
    store.create(message_of("b", "b-message")).await.unwrap();
    store
        .idem_begin(idem("b", "b-key", FP_A), at(0))
        .await
        .unwrap();
    store
        .idem_finish(
            answer(idem("b", "b-key", FP_A), 202, b"{}".to_vec(), secs(86_400)),
            at(0),
        )
        .await
        .unwrap();
    // Credential a: 1,100 commands that stay on their way (`pending`), each with its own
    // key.
    let mut refused = 0;
    for i in 0..1100 {
        let key = format!("a-key-{i}");
        match store.idem_begin(idem("a", &key, FP_A), at(1)).await {
            Ok(IdemBegin::New) => {}
            Ok(other) => panic!("{other:?}"),
            Err(StoreError::Full { .. }) => {
                refused += 1;
                continue;
            }
            Err(e) => panic!("{e}"),
        }
        match store.create(message_of("a", &format!("a-{i}"))).await {
            Ok(()) => {
                store
                    .idem_finish(
                        answer(idem("a", &key, FP_A), 202, vec![b'x'; 200], secs(86_400)),
                        at(1),
                    )
                    .await
                    .unwrap();
            }
            Err(StoreError::Full { message }) => {
                assert!(message.contains("\"a\""), "names the credential: {message}");
                refused += 1;
                store.idem_abort(idem("a", &key, FP_A)).await.unwrap();
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(refused >= 500, "a is held to its share: {refused} refused");
    // b lost nothing, and still has room of its own.
    let held = store.get("b-alarm", at(2)).await.unwrap().unwrap();
    assert_eq!(held.status, CommandStatus::Scheduled);
    assert_eq!(
        store.get("b-message", at(2)).await.unwrap().unwrap().status,
        CommandStatus::Pending
    );
    assert_eq!(
        store
            .idem_begin(idem("b", "b-key", FP_A), at(2))
            .await
            .unwrap(),
        IdemBegin::Replay {
            status: 202,
            body: b"{}".to_vec()
        }
    );
    store.create(message_of("b", "b-second")).await.unwrap();
    assert_eq!(
        store
            .claim_due(claim(at(3600), secs(30), 10))
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn a_credentials_oldest_sent_command_makes_room_for_its_next_and_nothing_else_does() {
    let store = MemoryStore::new(StoreSettings {
        max_commands: 1000,
        shares: 2,
        ..StoreSettings::default()
    });
    store
        .create(CommandRecord {
            principal: "b".to_owned(),
            ..alarm("b-alarm", 3600)
        })
        .await
        .unwrap();
    store.create(message_of("b", "b-sent")).await.unwrap();
    store.mark_sent("b-sent", at(0)).await.unwrap();
    store
        .create(CommandRecord {
            principal: "a".to_owned(),
            ..alarm("a-alarm", 3600)
        })
        .await
        .unwrap();
    store.create(message_of("a", "a-pending")).await.unwrap();
    // A clock that never acknowledges: a's commands stay `sent`. 5,000 of them (ten
    // times its share) are all taken, its own oldest `sent` ones making room.
    for i in 0..5000 {
        let id = format!("a-{i}");
        store.create(message_of("a", &id)).await.unwrap();
        store.mark_sent(&id, at(1)).await.unwrap();
    }
    assert!(store.get("a-4999", at(2)).await.unwrap().is_some());
    assert_eq!(store.get("a-0", at(2)).await.unwrap(), None);
    // Its held alarm and its command on its way were never the ones to go; nor b's.
    for (id, status) in [
        ("a-alarm", CommandStatus::Scheduled),
        ("a-pending", CommandStatus::Pending),
        ("b-alarm", CommandStatus::Scheduled),
        ("b-sent", CommandStatus::Sent),
    ] {
        assert_eq!(
            store.get(id, at(2)).await.unwrap().map(|r| r.status),
            Some(status),
            "{id}"
        );
    }
    assert!(store.len() <= 1000, "{}", store.len());
}

#[tokio::test]
async fn schedules_on_ever_new_devices_stop_at_a_credentials_share_and_never_take_anothers() {
    let store = MemoryStore::new(StoreSettings {
        max_commands: 1000,
        shares: 2,
        ..StoreSettings::default()
    });
    // 32 per device, but a scope of `*` has no end of devices: 500 (its share) and no more.
    let mut created = 0;
    let refused = loop {
        let r = ScheduleRecord {
            principal: "a".to_owned(),
            ..schedule(&format!("a-{created}"), &format!("d{}", created / 32), 3600)
        };
        match store.schedule_create(r, 32).await {
            Ok(ScheduleCreated::Created) => created += 1,
            Ok(other) => panic!("{other:?}"),
            Err(e) => break e,
        }
        assert!(created <= 500, "past its share");
    };
    assert_eq!(created, 500);
    assert!(
        matches!(&refused, StoreError::Full { message } if message.contains("\"a\"")),
        "{refused}"
    );
    let theirs = ScheduleRecord {
        principal: "b".to_owned(),
        ..schedule("b-1", "kitchen", 3600)
    };
    assert_eq!(
        store.schedule_create(theirs, 32).await.unwrap(),
        ScheduleCreated::Created
    );
    // Deleting one of a's makes room for one more.
    store.schedule_delete("a-0").await.unwrap();
    let again = ScheduleRecord {
        principal: "a".to_owned(),
        ..schedule("a-again", "d0", 3600)
    };
    assert_eq!(
        store.schedule_create(again, 32).await.unwrap(),
        ScheduleCreated::Created
    );
}

#[tokio::test]
async fn unique_idempotency_keys_cannot_grow_memory_past_its_byte_bound() {
    let store = MemoryStore::new(StoreSettings {
        max_commands: 10_000_000,
        max_bytes: 1 << 20,
        ..StoreSettings::default()
    });
    let long_key = "k".repeat(200);
    for i in 0..20_000 {
        let key = format!("{long_key}-{i}");
        store
            .idem_begin(idem("ops", &key, FP_A), at(0))
            .await
            .unwrap();
        store
            .idem_finish(
                answer(idem("ops", &key, FP_A), 202, vec![b'x'; 200], secs(86_400)),
                at(0),
            )
            .await
            .unwrap();
    }
    assert!(
        store.bytes() <= 1 << 20,
        "{} bytes counted against a bound of {}",
        store.bytes(),
        1 << 20
    );
    // Held alarms with large deliveries count by their size too: past the bound the next
    // one is refused rather than growing memory.
    let mut refused = false;
    for i in 0..2000 {
        let mut big = alarm(&format!("big-{i}"), 3600);
        big.delivery.as_mut().unwrap().payload = vec![b'x'; 4096];
        if let Err(e) = store.create(big).await {
            assert!(matches!(e, StoreError::Full { .. }), "{e}");
            refused = true;
            break;
        }
    }
    assert!(refused, "1 MiB cannot hold 2000 alarms of 4 KiB");
    assert!(store.bytes() <= 1 << 20, "{}", store.bytes());
}

// ---------------------------------------------------------------------------------------
// File only: durability and start-up errors.

fn file_path(dir: &TempDir) -> PathBuf {
    dir.path().join("state.db")
}

/// Waits (bounded) until the store refuses a new record and says it is not ready.
async fn refuses_from_now_on(store: &FileStore, what: &str) {
    let started = Instant::now();
    let mut n = 0;
    loop {
        n += 1;
        let refused = store
            .create(pending(&format!("after-{n}"), "clock-1"))
            .await;
        if let Err(e) = refused {
            assert!(matches!(e, StoreError::Unavailable { .. }), "{what}: {e}");
            assert!(!store.is_ready(), "{what}: still ready");
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{what}: writes still accepted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_removed_replaced_or_overwritten_while_running_is_noticed() {
    let dir = tempfile::tempdir().unwrap();
    let path = file_path(&dir);
    // Removed (renamed away): writes would go to a file nobody reads again.
    let store = FileStore::open(&path, StoreSettings::default()).unwrap();
    store.create(pending("c-1", "clock-1")).await.unwrap();
    assert!(store.is_ready());
    std::fs::rename(&path, dir.path().join("moved.db")).unwrap();
    refuses_from_now_on(&store, "renamed away").await;
    drop(store);

    // Replaced by another file at the same path.
    let path = dir.path().join("second.db");
    let store = FileStore::open(&path, StoreSettings::default()).unwrap();
    store.create(pending("c-1", "clock-1")).await.unwrap();
    let other = dir.path().join("other.db");
    std::fs::write(&other, b"not a database").unwrap();
    std::fs::rename(&other, &path).unwrap();
    refuses_from_now_on(&store, "replaced").await;
    drop(store);

    // Overwritten in place.
    let path = dir.path().join("third.db");
    let store = FileStore::open(&path, StoreSettings::default()).unwrap();
    store.create(pending("c-1", "clock-1")).await.unwrap();
    {
        use std::io::{Seek, Write};
        let mut f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.seek(std::io::SeekFrom::Start(0)).unwrap();
        f.write_all(&[0xAB; 4096]).unwrap();
    }
    refuses_from_now_on(&store, "overwritten").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_keys_and_scheduled_alarms_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = file_path(&dir);
    {
        let store = FileStore::open(&path, StoreSettings::default()).unwrap();
        store.create(pending("c-1", "clock-1")).await.unwrap();
        store.mark_sent("c-1", at(1)).await.unwrap();
        store.create(alarm("a-1", 60)).await.unwrap();
        store.create(alarm("a-2", 60)).await.unwrap();
        store
            .idem_begin(idem("ops", "k-1", FP_A), at(0))
            .await
            .unwrap();
        store
            .idem_finish(
                answer(
                    idem("ops", "k-1", FP_A),
                    202,
                    b"{\"a\":1}".to_vec(),
                    secs(3600),
                ),
                at(1),
            )
            .await
            .unwrap();
        store
            .idem_begin(idem("ops", "k-2", FP_A), at(0))
            .await
            .unwrap();
        // a-2 was being published when the process died.
        assert_eq!(
            store.claim_due(claim(at(60), secs(30), 1)).await.unwrap()[0].command_id,
            "a-1"
        );
    }
    let store = FileStore::open(&path, StoreSettings::default()).unwrap();
    let record = store.get("c-1", at(2)).await.unwrap().unwrap();
    assert_eq!(
        (record.status, record.sent_at),
        (CommandStatus::Sent, Some(at(1)))
    );
    let replay = store
        .idem_begin(idem("ops", "k-1", FP_A), at(2))
        .await
        .unwrap();
    assert_eq!(
        replay,
        IdemBegin::Replay {
            status: 202,
            body: b"{\"a\":1}".to_vec()
        }
    );
    assert_eq!(
        store
            .idem_begin(idem("ops", "k-2", FP_A), at(2))
            .await
            .unwrap(),
        IdemBegin::InProgress
    );
    // The lease survived too: a-1 is not published twice, a-2 is still due.
    let due = store.claim_due(claim(at(61), secs(30), 10)).await.unwrap();
    assert_eq!(due, vec![alarm("a-2", 60)]);
    assert_eq!(
        store.claim_due(claim(at(90), secs(30), 10)).await.unwrap()[0].command_id,
        "a-1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_of_the_previous_schema_keeps_its_commands_and_gets_schedules() {
    // What earlier releases wrote: schema version 1 (no schedules table, no index of
    // queued commands), version 2 (no index of queued commands) and version 3 (no
    // schedule id on commands).
    const NO_SCHEDULE_ID: &str = "ALTER TABLE commands DROP COLUMN schedule_id;";
    for (version, undo) in [
        (
            1,
            format!("DROP TABLE schedules; DROP INDEX commands_queued; {NO_SCHEDULE_ID}"),
        ),
        (2, format!("DROP INDEX commands_queued; {NO_SCHEDULE_ID}")),
        (3, NO_SCHEDULE_ID.to_owned()),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = file_path(&dir);
        {
            let store = FileStore::open(&path, StoreSettings::default()).unwrap();
            store.create(pending("c-1", "clock-1")).await.unwrap();
        }
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(&format!("{undo} PRAGMA user_version = {version};"))
            .unwrap();
        drop(conn);
        let store = FileStore::open(&path, StoreSettings::default()).unwrap();
        assert!(
            store.get("c-1", at(1)).await.unwrap().is_some(),
            "{version}"
        );
        assert_eq!(
            store
                .schedule_create(schedule("s-1", "kitchen", 0), 32)
                .await
                .unwrap(),
            ScheduleCreated::Created
        );
        let fired = pending("c-2", "kitchen").for_schedule(Some("s-1".to_owned()));
        store.create(fired.clone()).await.unwrap();
        assert_eq!(store.get("c-2", at(1)).await.unwrap(), Some(fired));
        store.create(queued("q-1", "dev-a", 0)).await.unwrap();
        assert_eq!(
            ids(&store
                .claim_queued("dev-a", claim(at(1), secs(30), 10))
                .await
                .unwrap()),
            ["q-1"]
        );
    }
}

#[test]
fn a_corrupt_file_is_a_start_up_error_naming_it_and_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = file_path(&dir);
    let garbage = b"this is not a database, just some bytes that happen to be here".repeat(100);
    std::fs::write(&path, &garbage).unwrap();
    let err = FileStore::open(&path, StoreSettings::default())
        .err()
        .expect("an error");
    assert!(matches!(err, StoreError::Open { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), garbage);
}

#[test]
fn another_applications_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = file_path(&dir);
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch("CREATE TABLE mine (x INTEGER); INSERT INTO mine VALUES (1);")
        .unwrap();
    let err = FileStore::open(&path, StoreSettings::default())
        .err()
        .expect("an error");
    let text = err.to_string();
    assert!(
        text.contains(&path.display().to_string()) && text.contains("another application"),
        "{text}"
    );
}

#[test]
fn a_missing_directory_is_a_start_up_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-dir");
    let err = FileStore::open(&missing.join("state.db"), StoreSettings::default())
        .err()
        .expect("an error");
    let text = err.to_string();
    assert!(
        text.contains(&missing.display().to_string()) && text.contains("does not exist"),
        "{text}"
    );
    assert!(!missing.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_share_commits_and_are_all_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let path = file_path(&dir);
    let store = Arc::new(FileStore::open(&path, StoreSettings::default()).unwrap());
    let writes = 200;
    let tasks: Vec<_> = (0..writes)
        .map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move { store.create(pending(&format!("c-{i}"), "clock-1")).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let commits = store.commits();
    assert!(
        commits < writes,
        "{commits} commits for {writes} writes: no group commit"
    );
    drop(Arc::into_inner(store).expect("the only handle"));

    let store = FileStore::open(&path, StoreSettings::default()).unwrap();
    for i in 0..writes {
        assert!(
            store.get(&format!("c-{i}"), at(1)).await.unwrap().is_some(),
            "c-{i}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_write_is_unavailable_and_the_store_recovers() {
    // A real full disk cannot be made portably here (no small tmpfs without privileges);
    // SQLite's page cap fails the write with the same SQLITE_FULL a full disk gives.
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(&file_path(&dir), StoreSettings::default()).unwrap();
    store.create(pending("before", "clock-1")).await.unwrap();
    store.cap_size_for_tests(Some(0)).await.unwrap();
    let mut big = pending("big", "clock-1");
    big.delivery = Some(Delivery {
        topic: "t".to_owned(),
        payload: vec![7; 256 * 1024],
    });
    let err = store.create(big.clone()).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
    assert!(!store.is_ready());
    assert_eq!(
        store.get("big", at(1)).await.unwrap(),
        None,
        "nothing half-written"
    );
    // Writes work again: so does the store, by itself and without a restart.
    store.cap_size_for_tests(None).await.unwrap();
    common::eventually(
        Duration::from_secs(10),
        "the store to be ready again",
        || async { store.is_ready().then_some(()) },
    )
    .await;
    store.create(big.clone()).await.unwrap();
    assert_eq!(store.get("big", at(1)).await.unwrap(), Some(big));
    assert!(store.get("before", at(1)).await.unwrap().is_some());
}

// ---------------------------------------------------------------------------------------
// ---------------------------------------------------------------------------------------
// Redis only: grouped writes.

/// `calls=N` of `cmdstat_evalsha` in INFO commandstats.
fn evalsha_calls(server: &common::redis::Redis) -> u64 {
    let info = server.bulk(&["INFO", "commandstats"]);
    info.lines()
        .find_map(|l| l.strip_prefix("cmdstat_evalsha:calls="))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_redis_writes_share_script_calls_and_all_land() {
    let server = common::redis::Redis::start();
    let store: Arc<dyn StateStore> =
        Arc::new(RedisStore::open(&Secret::new(server.url()), StoreSettings::default()).unwrap());
    store.create(pending("warm-up", "clock-1")).await.unwrap();
    let before = evalsha_calls(&server);
    let tasks: Vec<_> = (0..500)
        .map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let id = format!("c-{i}");
                store.create(pending(&id, "clock-1")).await.unwrap();
                store.mark_sent(&id, at(1)).await.unwrap().unwrap()
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), CommandStatus::Sent);
    }
    let calls = evalsha_calls(&server) - before;
    println!("1000 writes in {calls} script calls");
    assert!(calls < 1000, "1000 writes took {calls} script calls");
    for i in 0..500 {
        let record = store.get(&format!("c-{i}"), at(2)).await.unwrap().unwrap();
        assert_eq!(record.sent_at, Some(at(1)));
    }
}

// Figures for docs/store.md: cargo test --release --test store -- --ignored --nocapture

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check"]
async fn measure_concurrent_creates_per_second() {
    async fn run(store: Arc<dyn StateStore>, n: usize) -> f64 {
        let started = Instant::now();
        let tasks: Vec<_> = (0..n)
            .map(|i| {
                let store = Arc::clone(&store);
                tokio::spawn(async move {
                    let id = format!("c-{i}");
                    store.create(pending(&id, "clock-1")).await.unwrap();
                    store.mark_sent(&id, at(1)).await.unwrap();
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        n as f64 / started.elapsed().as_secs_f64()
    }
    let memory = run(
        Arc::new(MemoryStore::new(StoreSettings::default())),
        100_000,
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let group =
        Arc::new(FileStore::open(&dir.path().join("group.db"), StoreSettings::default()).unwrap());
    let group_rate = run(group.clone(), 5_000).await;
    let single = Arc::new(
        FileStore::open_with_batch(&dir.path().join("single.db"), StoreSettings::default(), 1)
            .unwrap(),
    );
    let single_rate = run(single.clone(), 500).await;
    println!("memory: {memory:.0} commands/s (create + mark_sent)");
    println!(
        "file, group commit: {group_rate:.0} commands/s, {} commits for 10000 writes",
        group.commits()
    );
    println!(
        "file, one commit per write: {single_rate:.0} commands/s, {} commits for 1000 writes",
        single.commits()
    );
    let server = common::redis::Redis::start();
    let redis = RedisStore::open(&Secret::new(server.url()), StoreSettings::default()).unwrap();
    let redis_rate = run(Arc::new(redis), 2_000).await;
    let usage = |key: &str| server.command(&["MEMORY", "USAGE", key]);
    println!(
        "redis: {redis_rate:.0} commands/s (one connection); MEMORY USAGE of a sent message's record: {} bytes",
        usage("clock-server:cmd:c-1")
    );
}
