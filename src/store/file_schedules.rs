//! The schedules of `STATE_STORE=file:` (SPEC 12): their table and the statements the
//! writer thread of `file.rs` runs for them (in its transactions, so each operation is
//! atomic and on disk when it answers).

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::schedule::{ScheduleCreated, ScheduleRecord, ScheduleWrite, sort};
use crate::domain::schedule::{Rule, WallTime, Weekdays, Zone};

/// The table (schema version 2; a version 1 file gets it on open).
pub(super) const SCHEMA: &str = "
CREATE TABLE schedules (
    id TEXT PRIMARY KEY NOT NULL,
    device_id TEXT NOT NULL,
    time_s INTEGER NOT NULL,
    days INTEGER NOT NULL,
    zone TEXT NOT NULL,
    label TEXT NOT NULL,
    enabled INTEGER NOT NULL,
    ttl_s INTEGER,
    next_ms INTEGER,
    last_fired_ms INTEGER,
    last_command_id TEXT,
    principal TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL,
    version INTEGER NOT NULL
);
CREATE INDEX schedules_device ON schedules (device_id);
CREATE INDEX schedules_due ON schedules (next_ms) WHERE enabled = 1;
";

const COLUMNS: &str = "id, device_id, time_s, days, zone, label, enabled, ttl_s, next_ms, \
     last_fired_ms, last_command_id, principal, created_ms, updated_ms, version";

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn bad(idx: usize, what: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Integer, what.into())
}

fn time(row: &Row<'_>, idx: usize) -> rusqlite::Result<Option<DateTime<Utc>>> {
    match row.get::<_, Option<i64>>(idx)? {
        None => Ok(None),
        Some(v) => DateTime::from_timestamp_millis(v)
            .map(Some)
            .ok_or_else(|| bad(idx, format!("timestamp {v} out of range"))),
    }
}

fn from_row(row: &Row<'_>) -> rusqlite::Result<ScheduleRecord> {
    let seconds: u32 = row.get(2)?;
    let days: u8 = row.get(3)?;
    let zone: String = row.get(4)?;
    let rule = Rule {
        time: WallTime::from_seconds_of_day(seconds)
            .ok_or_else(|| bad(2, format!("time {seconds} out of range")))?,
        days: Weekdays::from_bits(days).ok_or_else(|| bad(3, format!("days {days}")))?,
        zone: Zone::parse(&zone).map_err(|e| bad(4, e.to_string()))?,
    };
    Ok(ScheduleRecord {
        schedule_id: row.get(0)?,
        device_id: row.get(1)?,
        rule,
        label: row.get(5)?,
        enabled: row.get(6)?,
        ttl_seconds: row.get(7)?,
        next_fire_at: time(row, 8)?,
        last_fired_at: time(row, 9)?,
        last_command_id: row.get(10)?,
        principal: row.get(11)?,
        created_at: time(row, 12)?.unwrap_or_default(),
        updated_at: time(row, 13)?.unwrap_or_default(),
        version: u64::try_from(row.get::<_, i64>(14)?).unwrap_or(0),
    })
}

fn write(conn: &Connection, verb: &str, r: &ScheduleRecord, version: u64) -> rusqlite::Result<()> {
    conn.prepare_cached(&format!(
        "{verb} INTO schedules ({COLUMNS}) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)"
    ))?
    .execute(params![
        r.schedule_id,
        r.device_id,
        r.rule.time.seconds_of_day(),
        r.rule.days.bits(),
        r.rule.zone.name(),
        r.label,
        r.enabled,
        r.ttl_seconds,
        r.next_fire_at.map(ms),
        r.last_fired_at.map(ms),
        r.last_command_id,
        r.principal,
        ms(r.created_at),
        ms(r.updated_at),
        i64::try_from(version).unwrap_or(i64::MAX),
    ])?;
    Ok(())
}

pub(super) fn create(
    conn: &Connection,
    r: ScheduleRecord,
    max_per_device: usize,
) -> rusqlite::Result<ScheduleCreated> {
    let r = r.normalised();
    if get(conn, &r.schedule_id)?.is_some() {
        return Ok(ScheduleCreated::Exists);
    }
    let count: i64 = conn
        .prepare_cached("SELECT count(*) FROM schedules WHERE device_id = ?1")?
        .query_row([&r.device_id], |row| row.get(0))?;
    if usize::try_from(count).unwrap_or(usize::MAX) >= max_per_device {
        return Ok(ScheduleCreated::TooMany);
    }
    write(conn, "INSERT", &r, r.version)?;
    Ok(ScheduleCreated::Created)
}

pub(super) fn get(conn: &Connection, id: &str) -> rusqlite::Result<Option<ScheduleRecord>> {
    conn.prepare_cached(&format!("SELECT {COLUMNS} FROM schedules WHERE id = ?1"))?
        .query_row([id], from_row)
        .optional()
}

pub(super) fn list(
    conn: &Connection,
    device: Option<&str>,
) -> rusqlite::Result<Vec<ScheduleRecord>> {
    let mut out = match device {
        Some(device) => conn
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM schedules WHERE device_id = ?1"
            ))?
            .query_map([device], from_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?,
        None => conn
            .prepare_cached(&format!("SELECT {COLUMNS} FROM schedules"))?
            .query_map([], from_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?,
    };
    sort(&mut out);
    Ok(out)
}

pub(super) fn replace(
    conn: &Connection,
    r: ScheduleRecord,
    expected: u64,
) -> rusqlite::Result<ScheduleWrite> {
    let Some(old) = get(conn, &r.schedule_id)? else {
        return Ok(ScheduleWrite::NotFound);
    };
    if old.version != expected {
        return Ok(ScheduleWrite::Conflict);
    }
    let mut r = r.normalised();
    r.device_id = old.device_id;
    r.version = expected.saturating_add(1);
    write(conn, "REPLACE", &r, r.version)?;
    Ok(ScheduleWrite::Written(Box::new(r)))
}

pub(super) fn delete(conn: &Connection, id: &str) -> rusqlite::Result<Option<ScheduleRecord>> {
    let old = get(conn, id)?;
    if old.is_some() {
        conn.prepare_cached("DELETE FROM schedules WHERE id = ?1")?
            .execute([id])?;
    }
    Ok(old)
}

pub(super) fn due(
    conn: &Connection,
    now: DateTime<Utc>,
    limit: usize,
) -> rusqlite::Result<Vec<ScheduleRecord>> {
    conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM schedules WHERE enabled = 1 AND next_ms <= ?1 \
         ORDER BY next_ms LIMIT ?2"
    ))?
    .query_map(
        params![ms(now), i64::try_from(limit).unwrap_or(i64::MAX)],
        from_row,
    )?
    .collect()
}

pub(super) fn count_enabled(conn: &Connection) -> rusqlite::Result<u64> {
    let n: i64 = conn
        .prepare_cached("SELECT count(*) FROM schedules WHERE enabled = 1")?
        .query_row([], |row| row.get(0))?;
    Ok(u64::try_from(n).unwrap_or(0))
}
