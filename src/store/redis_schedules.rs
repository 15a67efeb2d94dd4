//! The schedules of `STATE_STORE=redis://` (SPEC 12): their keys, Lua scripts and hash
//! encoding. `redis.rs` runs the scripts; each is one atomic step across replicas.
//!
//! Keys (under the store's prefix): `sch:<id>` a hash per schedule; `sch-all` the set of
//! every id; `sch-dev:<deviceId>` the set of a device's ids (its size is the per-device
//! count); `sch-due` the enabled ones by next occurrence (a sorted set, Unix ms). Hash
//! fields: `id`, `dev`, `tm` (seconds of the day), `dy` (day bits, Monday = 1), `tz`,
//! `lb`, `en` (1/0), `ttl`, `n` (next), `lf` (last fired), `lc` (last command id), `pr`,
//! `c`, `u` (created, updated), `v` (version); an absent value is the empty string.
//! Schedules are kept until deleted (no `PEXPIRE`).

use chrono::{DateTime, Utc};

use super::StoreError;
use super::schedule::ScheduleRecord;
use crate::domain::schedule::{Rule, WallTime, Weekdays, Zone};

/// KEYS: hash, device set, all, due. ARGV: max per device, id, next ms ('' none), then
/// the hash's field/value pairs. Answers 1 (created), 0 (id exists), 2 (too many).
pub(super) const CREATE: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
if redis.call('SCARD', KEYS[2]) >= tonumber(ARGV[1]) then return 2 end
redis.call('HSET', KEYS[1], unpack(ARGV, 4))
redis.call('SADD', KEYS[2], ARGV[2])
redis.call('SADD', KEYS[3], ARGV[2])
if ARGV[3] ~= '' then redis.call('ZADD', KEYS[4], ARGV[3], ARGV[2]) end
return 1
"#;

/// KEYS: hash, due. ARGV: expected version, id, next ms ('' none), then the field/value
/// pairs (the device left out: it never changes). Answers `{'none'}`, `{'conflict'}` or
/// `{'ok', field, value, …}`.
pub(super) const REPLACE: &str = r#"
local v = redis.call('HGET', KEYS[1], 'v')
if not v then return {'none'} end
if v ~= ARGV[1] then return {'conflict'} end
redis.call('HSET', KEYS[1], unpack(ARGV, 4))
if ARGV[3] ~= '' then
  redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2])
else
  redis.call('ZREM', KEYS[2], ARGV[2])
end
local r = redis.call('HGETALL', KEYS[1])
table.insert(r, 1, 'ok')
return r
"#;

/// KEYS: hash, all, due. ARGV: id, device set prefix. Answers `{'none'}` or the hash as
/// it was after `'ok'`.
pub(super) const DELETE: &str = r#"
local r = redis.call('HGETALL', KEYS[1])
if #r == 0 then return {'none'} end
local dev = redis.call('HGET', KEYS[1], 'dev')
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
if dev then redis.call('SREM', ARGV[2] .. dev, ARGV[1]) end
table.insert(r, 1, 'ok')
return r
"#;

/// KEYS: a set of ids (all, or a device's). ARGV: hash prefix. Answers every hash.
pub(super) const LIST: &str = r#"
local out = {}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local r = redis.call('HGETALL', ARGV[1] .. id)
  if #r > 0 then out[#out + 1] = r end
end
return out
"#;

/// KEYS: due. ARGV: now ms, limit, hash prefix. Answers the due hashes, earliest first.
pub(super) const DUE: &str = r#"
local out = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])) do
  local r = redis.call('HGETALL', ARGV[3] .. id)
  if #r > 0 then out[#out + 1] = r end
end
return out
"#;

fn opt_ms(t: Option<DateTime<Utc>>) -> Vec<u8> {
    t.map(|t| t.timestamp_millis().to_string().into_bytes())
        .unwrap_or_default()
}

/// The score of the due set: next occurrence in ms, or '' when not enabled.
pub(super) fn due_score(r: &ScheduleRecord) -> Vec<u8> {
    if r.enabled {
        opt_ms(r.next_fire_at)
    } else {
        Vec::new()
    }
}

/// The hash's field/value pairs; `with_device` false for a replace (the device stays).
pub(super) fn encode(r: &ScheduleRecord, version: u64, with_device: bool) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = Vec::with_capacity(30);
    let mut put = |field: &str, value: Vec<u8>| {
        out.push(field.as_bytes().to_vec());
        out.push(value);
    };
    put("id", r.schedule_id.clone().into_bytes());
    if with_device {
        put("dev", r.device_id.clone().into_bytes());
    }
    put("tm", r.rule.time.seconds_of_day().to_string().into_bytes());
    put("dy", r.rule.days.bits().to_string().into_bytes());
    put("tz", r.rule.zone.name().as_bytes().to_vec());
    put("lb", r.label.clone().into_bytes());
    put("en", flag(r.enabled));
    put(
        "ttl",
        r.ttl_seconds
            .map(|t| t.to_string().into_bytes())
            .unwrap_or_default(),
    );
    put("n", opt_ms(r.next_fire_at));
    put("lf", opt_ms(r.last_fired_at));
    put(
        "lc",
        r.last_command_id.clone().unwrap_or_default().into_bytes(),
    );
    put("pr", r.principal.clone().into_bytes());
    put("c", opt_ms(Some(r.created_at)));
    put("u", opt_ms(Some(r.updated_at)));
    put("v", version.to_string().into_bytes());
    out
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Unavailable {
        message: format!("a schedule in Redis has a missing or malformed field {what:?}"),
    }
}

/// The record from HGETALL's flat field/value list.
pub(super) fn decode(fields: Vec<Vec<u8>>) -> Result<ScheduleRecord, StoreError> {
    let mut map = std::collections::HashMap::with_capacity(16);
    let mut it = fields.into_iter();
    while let (Some(field), Some(value)) = (it.next(), it.next()) {
        map.insert(field, String::from_utf8_lossy(&value).into_owned());
    }
    let mut take = |name: &str| map.remove(name.as_bytes()).ok_or_else(|| corrupt(name));
    let number = |v: String, name: &str| v.parse::<i64>().map_err(|_| corrupt(name));
    let time = |v: String, name: &str| -> Result<Option<DateTime<Utc>>, StoreError> {
        if v.is_empty() {
            return Ok(None);
        }
        DateTime::from_timestamp_millis(number(v, name)?)
            .map(Some)
            .ok_or_else(|| corrupt(name))
    };
    let seconds = u32::try_from(number(take("tm")?, "tm")?).map_err(|_| corrupt("tm"))?;
    let days = u8::try_from(number(take("dy")?, "dy")?).map_err(|_| corrupt("dy"))?;
    let rule = Rule {
        time: WallTime::from_seconds_of_day(seconds).ok_or_else(|| corrupt("tm"))?,
        days: Weekdays::from_bits(days).ok_or_else(|| corrupt("dy"))?,
        zone: Zone::parse(&take("tz")?).map_err(|_| corrupt("tz"))?,
    };
    let ttl = take("ttl")?;
    let last_command = take("lc")?;
    Ok(ScheduleRecord {
        schedule_id: take("id")?,
        device_id: take("dev")?,
        rule,
        label: take("lb")?,
        enabled: take("en")? == "1",
        ttl_seconds: if ttl.is_empty() {
            None
        } else {
            Some(u32::try_from(number(ttl, "ttl")?).map_err(|_| corrupt("ttl"))?)
        },
        next_fire_at: time(take("n")?, "n")?,
        last_fired_at: time(take("lf")?, "lf")?,
        last_command_id: (!last_command.is_empty()).then_some(last_command),
        principal: take("pr")?,
        created_at: time(take("c")?, "c")?.ok_or_else(|| corrupt("c"))?,
        updated_at: time(take("u")?, "u")?.ok_or_else(|| corrupt("u"))?,
        version: u64::try_from(number(take("v")?, "v")?).map_err(|_| corrupt("v"))?,
    })
}

/// A boolean field as the hashes keep it: `1` or `0`.
pub(super) fn flag(on: bool) -> Vec<u8> {
    if on { b"1" } else { b"0" }.to_vec()
}
