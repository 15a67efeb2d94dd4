//! A measurement, not a check: the memory store's footprint per record.
//! `cargo test --release --test store_footprint -- --ignored --nocapture`
#![allow(clippy::unwrap_used)]

use chrono::{DateTime, Utc};
use clock_server::domain::{CommandType, DeviceId};
use clock_server::store::{
    CommandRecord, CommandStatus, Completion, FinalOutcome, IdemAnswer, IdemRequest, MemoryStore,
    StateStore, StoreSettings,
};

fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test]
#[ignore = "a measurement, not a check"]
async fn measure_memory_store_bytes_per_record() {
    const MAX: usize = 100_000;
    const N: usize = 200_000;
    let store = MemoryStore::new(StoreSettings {
        max_commands: MAX,
        ..StoreSettings::default()
    });
    let t0 = DateTime::<Utc>::from_timestamp(1_795_939_200, 0).unwrap();
    let (rss0, hwm0) = (status_kib("VmRSS:"), status_kib("VmHWM:"));
    for i in 0..N {
        let id = uuid::Uuid::now_v7().to_string();
        let now = t0 + chrono::TimeDelta::milliseconds(i as i64);
        let record = CommandRecord {
            command_id: id.clone(),
            device_id: DeviceId::parse(&format!("clock-{:04}", i % 1000)).unwrap(),
            command_type: CommandType::SetBrightness,
            principal: "ops".to_owned(),
            status: CommandStatus::Pending,
            created_at: now,
            sent_at: None,
            completed_at: None,
            expires_at: now + chrono::TimeDelta::seconds(600),
            device_acks: true,
            status_reason: None,
            fire_at: None,
            delivery: None,
            schedule_id: None,
        };
        let device = record.device_id.clone();
        store.create(record).await.unwrap();
        store.mark_sent(&id, now).await.unwrap();
        if i % 2 == 0 {
            let completion = Completion {
                command_id: id.clone(),
                device_id: device.to_string(),
                outcome: FinalOutcome::Succeeded,
                reason: None,
            };
            store.complete(completion, now).await.unwrap();
        }
    }
    let (rss1, hwm1) = (status_kib("VmRSS:"), status_kib("VmHWM:"));
    let held = store.len();
    println!("records held: {held}");
    println!("VmRSS {rss0} kB -> {rss1} kB, VmHWM {hwm0} kB -> {hwm1} kB");
    println!(
        "bytes per held record: {:.0} (RSS), {:.0} (peak)",
        (rss1 - rss0) as f64 * 1024.0 / held as f64,
        (hwm1 - rss0) as f64 * 1024.0 / held as f64
    );
}

#[tokio::test]
#[ignore = "a measurement, not a check"]
async fn measure_memory_store_rss_at_its_default_byte_bound() {
    use clock_server::store::{DEFAULT_MAX_BYTES, Delivery, StoreError};
    // FOOTPRINT_MAX_BYTES measures another bound.
    let max_bytes = std::env::var("FOOTPRINT_MAX_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_MAX_BYTES);
    let store = MemoryStore::new(StoreSettings {
        max_commands: 10_000_000,
        max_bytes,
        ..StoreSettings::default()
    });
    let t0 = DateTime::<Utc>::from_timestamp(1_795_939_200, 0).unwrap();
    let (rss0, _) = (status_kib("VmRSS:"), status_kib("VmHWM:"));
    // The worst case an authenticated caller can make: unique keys of 255 characters with
    // their answers, then held alarms with large deliveries, until the store refuses.
    let key = "k".repeat(250);
    let mut keys = 0;
    for i in 0.. {
        let key = format!("{key}{i:05}");
        let request = IdemRequest {
            principal: "ops",
            key: &key,
            fingerprint: [0; 32],
        };
        if store.idem_begin(request, t0).await.is_err() || i >= 150_000 {
            break;
        }
        let answer = IdemAnswer {
            request,
            status: 202,
            body: vec![b'x'; 220],
            ttl: std::time::Duration::from_secs(86_400),
        };
        store.idem_finish(answer, t0).await.unwrap();
        keys += 1;
    }
    let mut alarms = 0;
    for i in 0.. {
        let record = CommandRecord {
            command_id: uuid::Uuid::now_v7().to_string(),
            device_id: DeviceId::parse("kitchen").unwrap(),
            command_type: CommandType::SetAlarm,
            principal: "ops".to_owned(),
            status: CommandStatus::Scheduled,
            created_at: t0,
            sent_at: None,
            completed_at: None,
            expires_at: t0 + chrono::TimeDelta::seconds(86_400),
            device_acks: false,
            status_reason: None,
            fire_at: Some(t0 + chrono::TimeDelta::seconds(3600 + i)),
            delivery: Some(Delivery {
                topic: "awtrix_kitchen/notify".to_owned(),
                payload: vec![b'x'; 1200],
            }),
            schedule_id: None,
        };
        match store.create(record).await {
            Ok(()) => alarms += 1,
            Err(StoreError::Full { .. }) => break,
            Err(e) => panic!("{e}"),
        }
    }
    let (rss1, hwm1) = (status_kib("VmRSS:"), status_kib("VmHWM:"));
    println!(
        "STATE_MAX_BYTES {max_bytes}: {keys} keys, then {alarms} alarms; counted {} bytes",
        store.bytes()
    );
    println!("VmRSS {rss0} kB -> {rss1} kB (peak {hwm1} kB)");
}
