//! `STATE_STORE=redis://…` / `rediss://…`: Redis (or Valkey), shared by every replica
//! (SPEC 7.1, 9).
//!
//! - One [`ConnectionManager`]: a single multiplexed connection that pipelines the
//!   requests of every task and reconnects by itself. The hot path's calls (`create`,
//!   `mark_sent`) are grouped on top: whatever waits while the previous group is on the
//!   wire goes as one script call ([`WRITES`]).
//! - Every operation is one `EVALSHA` of a Lua script, so each read-modify-write (lazy
//!   expiry, first final status wins, claims, idempotency keys) is atomic in Redis, across
//!   replicas. The rules are those of `mod.rs`, written again in Lua; the conformance suite
//!   (`tests/store.rs`) checks that they agree.
//! - Keys expire by themselves: each record gets a `PEXPIRE` at the end of its retention,
//!   each idempotency key at the end of its TTL (or of [`IDEM_IN_PROGRESS_TIMEOUT`]). The
//!   scripts also check the times against the caller's `now`, so the answers do not depend
//!   on Redis's clock; the TTLs only free the memory.
//! - Scheduled alarms wait in a sorted set by fire time; a claim moves them to a second
//!   sorted set by lease end, from which a lease that ran out puts them back.
//! - Readiness is a flag kept by a background `PING` (every [`HEARTBEAT`], every
//!   [`PROBE_INTERVAL`] while Redis does not answer, at once after a failed call). While
//!   it is down calls fail at once (503, nothing dispatched) instead of queueing behind a
//!   dead connection.
//!
//! Key layout (all under [`PREFIX`], so a shared Redis is safe): see `docs/store.md`.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, RedisError, Script, Value};
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::redis_schedules;
use super::redis_schedules::flag;
use super::schedule;
use super::{
    AckOutcome, CancelOutcome, CommandRecord, CommandStatus, Completion, Delivery, FinalOutcome,
    IDEM_IN_PROGRESS_TIMEOUT, IdemAnswer, IdemBegin, IdemRequest, LeaseBatch, StateStore,
    StatusReason, StoreError, StoreSettings, add, millis, normalise,
};
use super::{ScheduleCreated, ScheduleRecord, ScheduleWrite};
use crate::domain::{CommandType, DeviceId};
use crate::shared::Secret;
use crate::shared::redact_userinfo;
use crate::shared::secret::REDACTED;
use futures_util::future::BoxFuture;

/// Every key this store writes starts with it.
pub const PREFIX: &str = "clock-server:";
/// How often a failed store is probed with `PING` until it answers.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(250);
/// How often a healthy store is checked with `PING`.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// How long a call may wait for Redis's answer before the store counts as unavailable.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one connection attempt may take.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(2);

/// Helpers every script starts with. `SCHED` (KEYS[1]) holds scheduled alarms by fire
/// time, `LEASED` (KEYS[2]) claimed ones by lease end. A record is a hash: `id`, `dev`,
/// `type`, `pr` (principal), `st` (status), `c`, `s`, `d`, `e`, `f` (created, sent,
/// completed, expires, fire: Unix milliseconds), `a` (device acks, 1/0), `rc`/`rm`
/// (reason), `t`/`p` (delivery topic/payload), `l` (lease end).
const PRELUDE: &str = r#"
local SCHED, LEASED = KEYS[1], KEYS[2]
local FINAL = {succeeded = true, failed = true, expired = true, cancelled = true}
local function fmt(n) return string.format('%d', n) end
-- Queued commands (SPEC 11.3), beside SCHED under the same prefix: every one in QALL,
-- each device's in its own sorted set, by creation time (then id).
local BASE = string.sub(SCHED, 1, #SCHED - #'scheduled')
local QALL = BASE .. 'queued'
local function qdev(dev) return BASE .. 'queued:' .. dev end
local function unqueue(k, id)
  local dev = redis.call('HGET', k, 'dev')
  if dev then redis.call('ZREM', qdev(dev), id) end
  redis.call('ZREM', QALL, id)
  redis.call('HDEL', k, 'l')
end
-- When the retention clock starts: completion for a final record, else its expiry.
local function final_at(st, d, e)
  if FINAL[st] and d then return tonumber(d) end
  return tonumber(e)
end
-- Redis drops the record when its retention ends (the logical check in load is what
-- counts; this only frees the memory).
local function keep(k, final, now, retention)
  local ms = final + retention - now
  if ms < 1000 then ms = 1000 end
  redis.call('PEXPIRE', k, fmt(ms))
end
local function unschedule(k, id)
  redis.call('HDEL', k, 'l')
  redis.call('ZREM', SCHED, id)
  redis.call('ZREM', LEASED, id)
end
-- The record's status after the store's rules: nil if unknown or past retention (then
-- deleted); a non-final record past its expiry becomes expired, persisted.
local function load(k, id, now, retention)
  local v = redis.call('HMGET', k, 'st', 'd', 'e')
  local st, e = v[1], v[3]
  if not st then return nil end
  if final_at(st, v[2], e) + retention <= now then
    if st == 'queued' then unqueue(k, id) end
    redis.call('DEL', k)
    redis.call('ZREM', SCHED, id)
    redis.call('ZREM', LEASED, id)
    return nil
  end
  if not FINAL[st] and tonumber(e) <= now then
    redis.call('HSET', k, 'st', 'expired', 'd', e)
    if st == 'scheduled' then unschedule(k, id) end
    if st == 'queued' then unqueue(k, id) end
    keep(k, tonumber(e), now, retention)
    st = 'expired'
  end
  return st
end
local function answer(code, k)
  local r = redis.call('HGETALL', k)
  table.insert(r, 1, code)
  return r
end
"#;

/// The hot path's two calls, grouped: every `create` and `mark_sent` waiting when the
/// previous group left is run in one script call (as `file:` groups commits), so under
/// load Redis runs one script and the connection one round trip for many commands.
/// KEYS: sched, leased. ARGV: record key prefix, then per call `c` or `s`, its argument
/// count, and its arguments: `c` id, now, retention, when its retention clock starts,
/// fire time ('' if none), the hash's fields/values in [`encode`]'s order, which the
/// script reads the status, device and times from (answer 1, or 0 if the id exists);
/// `s` id, now, retention (answer `{'none'}` or `{'ok', status}`).
const WRITES: &str = r#"
local prefix, out, i = ARGV[1], {}, 2
while i <= #ARGV do
  local kind, n, a = ARGV[i], tonumber(ARGV[i + 1]), i + 2
  local id, now, retention = ARGV[a], tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local k = prefix .. id
  if kind == 'c' then
    -- A new id (the usual case) costs one EXISTS; a taken one is loaded, and is free
    -- again if its retention has ended.
    local st = redis.call('EXISTS', k) == 1 and load(k, id, now, retention)
    if st then
      out[#out + 1] = 0
    else
      -- The fields start at f, in `encode`'s order: id, dev, type, pr, st, c, e, ...
      local f = a + 5
      local dev, status, created, expires = ARGV[f + 3], ARGV[f + 9], ARGV[f + 11], ARGV[f + 13]
      redis.call('HSET', k, unpack(ARGV, f, a + n - 1))
      keep(k, tonumber(ARGV[a + 3]), now, retention)
      if ARGV[a + 4] ~= '' then redis.call('ZADD', SCHED, ARGV[a + 4], id) end
      -- Every record that is not final yet waits for its expiry sweep (expire_due).
      if not FINAL[status] then redis.call('ZADD', BASE .. 'expiring', expires, id) end
      if status == 'queued' then
        redis.call('ZADD', qdev(dev), created, id)
        redis.call('ZADD', QALL, created, id)
      end
      out[#out + 1] = 1
    end
  else
    local st = load(k, id, now, retention)
    if not st then
      out[#out + 1] = {'none'}
    else
      if st == 'pending' then
        redis.call('HSET', k, 'st', 'sent', 's', ARGV[a + 1])
        st = 'sent'
      elseif st == 'scheduled' then
        redis.call('HSET', k, 'st', 'sent', 's', ARGV[a + 1])
        unschedule(k, id)
        st = 'sent'
      elseif st == 'queued' then
        redis.call('HSET', k, 'st', 'sent', 's', ARGV[a + 1])
        unqueue(k, id)
        st = 'sent'
      elseif not redis.call('HGET', k, 's') then
        redis.call('HSET', k, 's', ARGV[a + 1])
      end
      out[#out + 1] = {'ok', st}
    end
  end
  i = a + n
end
return out
"#;

/// KEYS: sched, leased, record. ARGV: id, now, retention.
const GET: &str = r#"
local k, id = KEYS[3], ARGV[1]
if not load(k, id, tonumber(ARGV[2]), tonumber(ARGV[3])) then return {'none'} end
return answer('ok', k)
"#;

/// KEYS: sched, leased, record. ARGV: id, now, retention, device, final status,
/// has-reason (1/0), reason code, reason message.
const COMPLETE: &str = r#"
local k, id, now, retention = KEYS[3], ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local st = load(k, id, now, retention)
if not st then return {'unknown'} end
if redis.call('HGET', k, 'dev') ~= ARGV[4] then return {'wrong'} end
if st == 'expired' then return {'expired'} end
if FINAL[st] then return {'final', st} end
redis.call('HSET', k, 'st', ARGV[5], 'd', ARGV[2])
if ARGV[6] == '1' then
  redis.call('HSET', k, 'rc', ARGV[7], 'rm', ARGV[8])
else
  redis.call('HDEL', k, 'rc', 'rm')
end
unschedule(k, id)
unqueue(k, id)
keep(k, now, now, retention)
return answer('ok', k)
"#;

/// KEYS: sched, leased, record. ARGV: id, now, retention.
const CANCEL: &str = r#"
local k, id, now, retention = KEYS[3], ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local st = load(k, id, now, retention)
if not st then return {'none'} end
if st ~= 'scheduled' and st ~= 'queued' then return {'no', st} end
local lease = redis.call('HGET', k, 'l')
if lease and tonumber(lease) > now then return {'no', st} end
redis.call('HSET', k, 'st', 'cancelled', 'd', ARGV[2])
unschedule(k, id)
unqueue(k, id)
keep(k, now, now, retention)
return answer('ok', k)
"#;

/// KEYS: sched, leased. ARGV: now, retention, limit, record key prefix. The records
/// whose expiry has come, from the sorted set `expiring` (by expiry; a record joins it
/// when created): each id leaves it here once, so among replicas one sweeper reports
/// it; it is reported if it ended `expired` (now, or by a read before).
const EXPIRE_DUE: &str = r#"
local now, retention = tonumber(ARGV[1]), tonumber(ARGV[2])
local EXPIRING = BASE .. 'expiring'
local out = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', EXPIRING, '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])) do
  redis.call('ZREM', EXPIRING, id)
  local k = ARGV[4] .. id
  if load(k, id, now, retention) == 'expired' then
    table.insert(out, redis.call('HGETALL', k))
  end
end
return out
"#;

/// KEYS: sched, leased. ARGV: now, retention, lease end, limit, record key prefix.
/// Record keys are built here from the ids in the sorted sets (no Redis Cluster).
const CLAIM_DUE: &str = r#"
local now, retention, lease, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
-- Leases that ran out (a claimer that failed or died): back in line by fire time.
for _, id in ipairs(redis.call('ZRANGEBYSCORE', LEASED, '-inf', ARGV[1])) do
  redis.call('ZREM', LEASED, id)
  local f = redis.call('HGET', ARGV[5] .. id, 'f')
  if f and redis.call('HGET', ARGV[5] .. id, 'st') == 'scheduled' then
    redis.call('ZADD', SCHED, f, id)
  end
end
local out = {}
while #out < limit do
  local due = redis.call('ZRANGEBYSCORE', SCHED, '-inf', ARGV[1], 'LIMIT', 0, fmt(limit - #out))
  if #due == 0 then break end
  for _, id in ipairs(due) do
    local k = ARGV[5] .. id
    redis.call('ZREM', SCHED, id)
    if load(k, id, now, retention) == 'scheduled' then
      redis.call('HSET', k, 'l', lease)
      redis.call('ZADD', LEASED, lease, id)
      table.insert(out, redis.call('HGETALL', k))
    end
  end
end
return out
"#;

/// KEYS: sched, leased. ARGV: now, retention, lease end, limit, record key prefix,
/// device. One device's queue goes to one claimer at a time (see `claim_queued`).
const CLAIM_QUEUED: &str = r#"
local now, retention, lease, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
local prefix, q = ARGV[5], qdev(ARGV[6])
local take = {}
for _, id in ipairs(redis.call('ZRANGE', q, 0, -1)) do
  if #take >= limit then break end
  local k = prefix .. id
  local st = load(k, id, now, retention)
  if st == 'queued' then
    local l = redis.call('HGET', k, 'l')
    if l and tonumber(l) > now then return {} end
    table.insert(take, id)
  elseif not st then
    redis.call('ZREM', q, id)
    redis.call('ZREM', QALL, id)
  end
end
local out = {}
for _, id in ipairs(take) do
  local k = prefix .. id
  redis.call('HSET', k, 'l', lease)
  table.insert(out, redis.call('HGETALL', k))
end
return out
"#;

/// KEYS: sched, leased. ARGV: now, retention, record key prefix. The devices with a
/// queued command (sorted), and how many queued commands there are: `{count, dev...}`.
const QUEUED: &str = r#"
local now, retention, prefix = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local count, seen, devices = 0, {}, {}
for _, id in ipairs(redis.call('ZRANGE', QALL, 0, -1)) do
  local k = prefix .. id
  local st = load(k, id, now, retention)
  if st == 'queued' then
    count = count + 1
    local dev = redis.call('HGET', k, 'dev')
    if not seen[dev] then
      seen[dev] = true
      table.insert(devices, dev)
    end
  elseif not st then
    redis.call('ZREM', QALL, id)
  end
end
table.sort(devices)
table.insert(devices, 1, count)
return devices
"#;

/// KEYS: idempotency key. ARGV: fingerprint, now, in-progress end, in-progress ms.
const IDEM_BEGIN: &str = r#"
local k = KEYS[1]
local x = redis.call('HGET', k, 'x')
if x and tonumber(x) > tonumber(ARGV[2]) then
  if redis.call('HGET', k, 'fp') ~= ARGV[1] then return {'mismatch'} end
  local s = redis.call('HGET', k, 's')
  if not s then return {'progress'} end
  return {'replay', s, redis.call('HGET', k, 'b')}
end
redis.call('DEL', k)
redis.call('HSET', k, 'fp', ARGV[1], 'x', ARGV[3])
redis.call('PEXPIRE', k, ARGV[4])
return {'new'}
"#;

/// KEYS: idempotency key. ARGV: fingerprint, status, body, end, ttl ms.
const IDEM_FINISH: &str = r#"
local k = KEYS[1]
redis.call('DEL', k)
redis.call('HSET', k, 'fp', ARGV[1], 's', ARGV[2], 'b', ARGV[3], 'x', ARGV[4])
redis.call('PEXPIRE', k, ARGV[5])
return 1
"#;

/// KEYS: idempotency key.
const IDEM_ABORT: &str = r#"
if redis.call('HEXISTS', KEYS[1], 's') == 0 then redis.call('DEL', KEYS[1]) end
return 1
"#;

struct Scripts {
    writes: Script,
    get: Script,
    complete: Script,
    cancel: Script,
    claim_due: Script,
    expire_due: Script,
    claim_queued: Script,
    queued: Script,
    idem_begin: Script,
    idem_finish: Script,
    idem_abort: Script,
    sch_create: Script,
    sch_replace: Script,
    sch_delete: Script,
    sch_list: Script,
    sch_due: Script,
}

impl Scripts {
    fn new() -> Self {
        let with_prelude = |body: &str| Script::new(&format!("{PRELUDE}{body}"));
        Self {
            writes: with_prelude(WRITES),
            get: with_prelude(GET),
            complete: with_prelude(COMPLETE),
            cancel: with_prelude(CANCEL),
            claim_due: with_prelude(CLAIM_DUE),
            expire_due: with_prelude(EXPIRE_DUE),
            claim_queued: with_prelude(CLAIM_QUEUED),
            queued: with_prelude(QUEUED),
            idem_begin: Script::new(IDEM_BEGIN),
            idem_finish: Script::new(IDEM_FINISH),
            idem_abort: Script::new(IDEM_ABORT),
            sch_create: Script::new(redis_schedules::CREATE),
            sch_replace: Script::new(redis_schedules::REPLACE),
            sch_delete: Script::new(redis_schedules::DELETE),
            sch_list: Script::new(redis_schedules::LIST),
            sch_due: Script::new(redis_schedules::DUE),
        }
    }
}

/// The Redis store. Cheap to share: the connection is multiplexed.
pub struct RedisStore {
    conn: ConnectionManager,
    settings: StoreSettings,
    scripts: Arc<Scripts>,
    health: Arc<Health>,
    sched: String,
    leased: String,
    record_prefix: String,
    idem_prefix: String,
    /// Schedules: see `redis_schedules.rs` for the layout.
    sch_prefix: String,
    sch_all: String,
    sch_dev_prefix: String,
    sch_due: String,
    /// `create` and `mark_sent` calls, for the writer task that groups them.
    writes: mpsc::UnboundedSender<Write>,
}

/// One `create` or `mark_sent` for the [`WRITES`] script: its kind (`c`/`s`) and
/// arguments, and where its answer goes.
struct Write {
    args: Vec<Arg>,
    reply: oneshot::Sender<Result<Value, StoreError>>,
}

/// One argument of a [`Write`]: field names are static, so only values are allocated.
type Arg = Cow<'static, [u8]>;

/// At most this many calls in one group.
const MAX_GROUP: usize = 256;
/// At most this many groups on the wire at once; calls arriving meanwhile wait and form
/// the next group. One: each script call has a fixed cost in Redis (a wake-up, a read, a
/// reply), and with one group in flight the groups are about 1.7 times larger (see
/// `docs/store.md`).
const GROUPS_IN_FLIGHT: usize = 1;

/// The readiness flags and what the probe needs to keep them.
struct Health {
    /// The last `PING` was answered and no call has failed since (`is_ready`).
    ready: AtomicBool,
    /// A call or probe failed and no probe has succeeded since: calls fail at once.
    down: AtomicBool,
    /// Wakes the monitor after a failed call.
    wake: Arc<tokio::sync::Notify>,
    /// The password (as written and percent-decoded), cut out of every error message.
    secrets: Vec<String>,
    /// The URL with its password `<redacted>`, for logs.
    shown: String,
}

impl Health {
    /// A failed call: the store counts as unavailable (calls fail at once) until the
    /// monitor gets an answer again.
    fn failed(&self, e: &RedisError) -> StoreError {
        let message = self.redact(e.to_string());
        self.down.store(true, Ordering::SeqCst);
        if self.ready.swap(false, Ordering::SeqCst) {
            tracing::warn!(
                store = %self.shown,
                error = %message,
                "state store unavailable: /ready says not_ready and commands get 503"
            );
        }
        self.wake.notify_one();
        StoreError::Unavailable { message }
    }

    fn redact(&self, text: String) -> String {
        self.secrets
            .iter()
            .fold(text, |text, secret| text.replace(secret.as_str(), REDACTED))
    }
}

impl RedisStore {
    /// Parses `url` and returns at once: the connection is made in the background, so a
    /// server started while Redis is down is `not_ready` until Redis answers. Needs a tokio
    /// runtime. Errors (a malformed URL) never hold the password.
    pub fn open(url: &Secret, settings: StoreSettings) -> Result<Self, StoreError> {
        // rediss://: the ring provider this build uses everywhere (no-op if installed).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let health = Arc::new(Health {
            ready: AtomicBool::new(false),
            down: AtomicBool::new(false),
            wake: Arc::new(tokio::sync::Notify::new()),
            secrets: password_forms(url.expose()),
            shown: redact_userinfo(url.expose()),
        });
        let open_error = |message: String| StoreError::Open {
            message: health.redact(message),
        };
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(open_error(
                "the redis store needs a tokio runtime".to_owned(),
            ));
        }
        let client = Client::open(url.expose())
            .map_err(|e| open_error(format!("not a valid Redis URL: {e}")))?;
        let config = ConnectionManagerConfig::new()
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_connection_timeout(Some(CONNECTION_TIMEOUT));
        let conn = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| open_error(format!("cannot set up the connection: {e}")))?;
        let (writes, queue) = mpsc::unbounded_channel();
        let store = Self {
            conn,
            settings,
            scripts: Arc::new(Scripts::new()),
            health,
            writes,
            sched: format!("{PREFIX}scheduled"),
            leased: format!("{PREFIX}leased"),
            record_prefix: format!("{PREFIX}cmd:"),
            idem_prefix: format!("{PREFIX}idem:"),
            sch_prefix: format!("{PREFIX}sch:"),
            sch_all: format!("{PREFIX}sch-all"),
            sch_dev_prefix: format!("{PREFIX}sch-dev:"),
            sch_due: format!("{PREFIX}sch-due"),
        };
        store.spawn_monitor();
        store.spawn_writer(queue);
        Ok(store)
    }

    /// The task that runs `create`/`mark_sent` calls in groups (see [`WRITES`]); ends
    /// with the store (when its sender is dropped).
    fn spawn_writer(&self, mut queue: mpsc::UnboundedReceiver<Write>) {
        let (conn, scripts, health) = (
            self.conn.clone(),
            Arc::clone(&self.scripts),
            Arc::clone(&self.health),
        );
        let keys = Arc::new([
            self.sched.clone(),
            self.leased.clone(),
            self.record_prefix.clone(),
        ]);
        let slots = Arc::new(Semaphore::new(GROUPS_IN_FLIGHT));
        tokio::spawn(async move {
            while let Some(first) = queue.recv().await {
                let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
                    return;
                };
                let mut group = vec![first];
                while group.len() < MAX_GROUP {
                    match queue.try_recv() {
                        Ok(write) => group.push(write),
                        Err(_) => break,
                    }
                }
                let (mut conn, scripts, health, keys) = (
                    conn.clone(),
                    Arc::clone(&scripts),
                    Arc::clone(&health),
                    Arc::clone(&keys),
                );
                tokio::spawn(async move {
                    let mut call = scripts.writes.prepare_invoke();
                    call.key(&keys[0]).key(&keys[1]).arg(&keys[2]);
                    for write in &group {
                        let (kind, args) = write.args.split_first().unzip();
                        call.arg(kind.map_or(&[][..], |kind| kind.as_ref()))
                            .arg(args.map_or(0, <[Arg]>::len));
                        for arg in args.into_iter().flatten() {
                            call.arg(arg.as_ref());
                        }
                    }
                    let answer: Result<Value, RedisError> = call.invoke_async(&mut conn).await;
                    drop(slot);
                    match answer {
                        Ok(Value::Array(answers)) if answers.len() == group.len() => {
                            for (write, answer) in group.into_iter().zip(answers) {
                                let _ = write.reply.send(Ok(answer));
                            }
                        }
                        Ok(other) => {
                            for write in group {
                                let _ = write.reply.send(Err(unexpected("write", &other)));
                            }
                        }
                        Err(e) => {
                            let message = match health.failed(&e) {
                                StoreError::Unavailable { message } => message,
                                other => other.to_string(),
                            };
                            for write in group {
                                let _ = write.reply.send(Err(StoreError::Unavailable {
                                    message: message.clone(),
                                }));
                            }
                        }
                    }
                });
            }
        });
    }

    /// Queues one `create`/`mark_sent` for the writer and waits for its answer.
    async fn write(&self, args: Vec<Arg>) -> Result<Value, StoreError> {
        self.check_ready()?;
        let (reply, answer) = oneshot::channel();
        let gone = || StoreError::Unavailable {
            message: "the state store's writer has stopped".to_owned(),
        };
        self.writes
            .send(Write { args, reply })
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }

    /// The task that keeps the readiness flags: a `PING` every [`HEARTBEAT`] while Redis
    /// answers (so `/ready` notices an outage without traffic), every [`PROBE_INTERVAL`]
    /// while it does not, and at once when a call failed. Ends with the store.
    fn spawn_monitor(&self) {
        let health = Arc::downgrade(&self.health);
        let mut conn = self.conn.clone();
        tokio::spawn(async move {
            let mut first = true;
            loop {
                let Some(h) = health.upgrade() else { return };
                let pong: Result<String, RedisError> =
                    redis::cmd("PING").query_async(&mut conn).await;
                let up = match pong {
                    Ok(_) => {
                        h.down.store(false, Ordering::SeqCst);
                        if !h.ready.swap(true, Ordering::SeqCst) {
                            tracing::info!(store = %h.shown, "state store connected");
                        }
                        true
                    }
                    Err(e) => {
                        h.down.store(true, Ordering::SeqCst);
                        if h.ready.swap(false, Ordering::SeqCst) || first {
                            tracing::warn!(
                                store = %h.shown,
                                error = %h.redact(e.to_string()),
                                "state store unavailable: /ready says not_ready and commands get 503; retrying every {} ms",
                                PROBE_INTERVAL.as_millis()
                            );
                        }
                        false
                    }
                };
                first = false;
                let wake = Arc::clone(&h.wake);
                drop(h);
                let pause = if up { HEARTBEAT } else { PROBE_INTERVAL };
                let _ = tokio::time::timeout(pause, wake.notified()).await;
            }
        });
    }

    /// Fails at once while the store is known to be down (the probe brings it back).
    fn check_ready(&self) -> Result<(), StoreError> {
        if self.health.down.load(Ordering::SeqCst) {
            Err(StoreError::Unavailable {
                message: format!("{} is not reachable", self.health.shown),
            })
        } else {
            Ok(())
        }
    }

    fn failed(&self, e: &RedisError) -> StoreError {
        self.health.failed(e)
    }

    fn answered<T>(&self, result: Result<T, RedisError>) -> Result<T, StoreError> {
        result.map_err(|e| self.failed(&e))
    }

    fn record_key(&self, id: &str) -> String {
        format!("{}{id}", self.record_prefix)
    }

    fn idem_key(&self, request: &IdemRequest<'_>) -> String {
        format!("{}{}", self.idem_prefix, request.store_key())
    }

    fn retention_ms(&self) -> i64 {
        duration_ms(self.settings.retention)
    }

    /// Runs one record script (KEYS: sched, leased, record; ARGV: id, now, retention,
    /// `extra`…) and returns its answer.
    async fn run_record(
        &self,
        script: &Script,
        id: &str,
        now: DateTime<Utc>,
        extra: &[&[u8]],
    ) -> Result<Value, StoreError> {
        self.check_ready()?;
        let mut call = script.prepare_invoke();
        call.key(&self.sched)
            .key(&self.leased)
            .key(self.record_key(id))
            .arg(id)
            .arg(ms(now))
            .arg(self.retention_ms());
        for arg in extra {
            call.arg(*arg);
        }
        let mut conn = self.conn.clone();
        let result = call.invoke_async(&mut conn).await;
        self.answered(result)
    }

    /// Runs a schedule script with `keys` and `args`.
    /// How many commands are queued, and the devices they are for (the [`QUEUED`] script).
    async fn queued(&self, now: DateTime<Utc>) -> Result<(u64, Vec<String>), StoreError> {
        self.check_ready()?;
        let mut call = self.scripts.queued.prepare_invoke();
        call.key(&self.sched)
            .key(&self.leased)
            .arg(ms(now))
            .arg(self.retention_ms())
            .arg(&self.record_prefix);
        let mut conn = self.conn.clone();
        let result = call.invoke_async(&mut conn).await;
        let answer: Value = self.answered(result)?;
        let Value::Array(mut items) = answer else {
            return Err(unexpected("queued", &answer));
        };
        if items.is_empty() {
            return Err(unexpected("queued", &Value::Array(items)));
        }
        let count = match items.remove(0) {
            Value::Int(n) => u64::try_from(n).unwrap_or(0),
            other => return Err(unexpected("queued", &other)),
        };
        let devices = items
            .into_iter()
            .map(|d| String::from_utf8(bytes(d)).map_err(|_| unexpected_code("queued", "device")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((count, devices))
    }

    async fn run_schedule(
        &self,
        script: &Script,
        keys: &[&str],
        args: Vec<Vec<u8>>,
    ) -> Result<Value, StoreError> {
        self.check_ready()?;
        let mut call = script.prepare_invoke();
        for key in keys {
            call.key(*key);
        }
        for arg in args {
            call.arg(arg);
        }
        let mut conn = self.conn.clone();
        let result = call.invoke_async(&mut conn).await;
        self.answered(result)
    }

    /// A list of HGETALL answers as schedules, in the order of `schedule::sort`.
    fn schedules_of(&self, op: &str, answer: Value) -> Result<Vec<ScheduleRecord>, StoreError> {
        let Value::Array(items) = answer else {
            return Err(unexpected(op, &answer));
        };
        items
            .into_iter()
            .map(|r| match r {
                Value::Array(fields) => {
                    redis_schedules::decode(fields.into_iter().map(bytes).collect())
                }
                other => Err(unexpected(op, &other)),
            })
            .collect()
    }

    async fn run_idem(
        &self,
        script: &Script,
        key: String,
        args: &[&[u8]],
    ) -> Result<Value, StoreError> {
        self.check_ready()?;
        let mut call = script.prepare_invoke();
        call.key(key);
        for arg in args {
            call.arg(*arg);
        }
        let mut conn = self.conn.clone();
        let result = call.invoke_async(&mut conn).await;
        self.answered(result)
    }
}

impl StateStore for RedisStore {
    fn name(&self) -> &'static str {
        "redis"
    }

    fn create(&self, record: CommandRecord) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let record = normalise(record);
            let final_ms = ms(super::final_at(&record)).to_string();
            let fire_ms = match (record.status, record.fire_at) {
                (CommandStatus::Scheduled, Some(t)) => ms(t).to_string(),
                _ => String::new(),
            };
            let id = record.command_id.clone();
            // `create` takes no `now`: the record's own creation time stands for it.
            let mut args: Vec<Arg> = Vec::with_capacity(36);
            args.extend([
                Cow::Borrowed(&b"c"[..]),
                Cow::Owned(id.clone().into_bytes()),
                Cow::Owned(ms(record.created_at).to_string().into_bytes()),
                Cow::Owned(self.retention_ms().to_string().into_bytes()),
                Cow::Owned(final_ms.into_bytes()),
                Cow::Owned(fire_ms.into_bytes()),
            ]);
            args.extend(encode(&record));
            match self.write(args).await? {
                Value::Int(1) => Ok(()),
                Value::Int(0) => Err(StoreError::Duplicate { command_id: id }),
                other => Err(unexpected("create", &other)),
            }
        })
    }

    fn get<'a>(
        &'a self,
        command_id: &'a str,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Option<CommandRecord>, StoreError>> {
        Box::pin(async move {
            let answer = self
                .run_record(&self.scripts.get, command_id, now, &[])
                .await?;
            match split(answer)? {
                (code, fields) if code == "ok" => decode(fields).map(Some),
                (code, _) if code == "none" => Ok(None),
                (code, _) => Err(unexpected_code("get", &code)),
            }
        })
    }

    fn mark_sent<'a>(
        &'a self,
        command_id: &'a str,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Option<CommandStatus>, StoreError>> {
        Box::pin(async move {
            let args = vec![
                Cow::Borrowed(&b"s"[..]),
                Cow::Owned(command_id.as_bytes().to_vec()),
                Cow::Owned(ms(now).to_string().into_bytes()),
                Cow::Owned(self.retention_ms().to_string().into_bytes()),
            ];
            match split(self.write(args).await?)? {
                (code, fields) if code == "ok" => status_of(fields.into_iter().next()).map(Some),
                (code, _) if code == "none" => Ok(None),
                (code, _) => Err(unexpected_code("mark_sent", &code)),
            }
        })
    }

    fn complete(
        &self,
        completion: Completion,
        now: DateTime<Utc>,
    ) -> BoxFuture<'_, Result<AckOutcome, StoreError>> {
        Box::pin(async move {
            let status = match completion.outcome {
                FinalOutcome::Succeeded => CommandStatus::Succeeded,
                FinalOutcome::Failed => CommandStatus::Failed,
            };
            let (has, code, message) = match &completion.reason {
                Some(r) => ("1", r.code.as_str(), r.message.as_str()),
                None => ("0", "", ""),
            };
            let args: [&[u8]; 5] = [
                completion.device_id.as_bytes(),
                status.as_str().as_bytes(),
                has.as_bytes(),
                code.as_bytes(),
                message.as_bytes(),
            ];
            let answer = self
                .run_record(&self.scripts.complete, &completion.command_id, now, &args)
                .await?;
            let (code, mut fields) = split(answer)?;
            Ok(match code.as_str() {
                "ok" => AckOutcome::Applied(Box::new(decode(fields)?)),
                "unknown" => AckOutcome::Unknown,
                "wrong" => AckOutcome::WrongDevice,
                "expired" => AckOutcome::Expired,
                "final" => AckOutcome::AlreadyFinal(status_of(fields.pop())?),
                _ => return Err(unexpected_code("complete", &code)),
            })
        })
    }

    fn cancel<'a>(
        &'a self,
        command_id: &'a str,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<CancelOutcome, StoreError>> {
        Box::pin(async move {
            let answer = self
                .run_record(&self.scripts.cancel, command_id, now, &[])
                .await?;
            let (code, mut fields) = split(answer)?;
            Ok(match code.as_str() {
                "ok" => CancelOutcome::Cancelled(Box::new(decode(fields)?)),
                "none" => CancelOutcome::NotFound,
                "no" => CancelOutcome::NotCancellable(status_of(fields.pop())?),
                _ => return Err(unexpected_code("cancel", &code)),
            })
        })
    }

    fn claim_due(
        &self,
        batch: LeaseBatch,
    ) -> BoxFuture<'_, Result<Vec<CommandRecord>, StoreError>> {
        Box::pin(async move {
            if batch.limit == 0 {
                return Ok(Vec::new());
            }
            self.check_ready()?;
            let mut call = self.scripts.claim_due.prepare_invoke();
            call.key(&self.sched)
                .key(&self.leased)
                .arg(ms(batch.now))
                .arg(self.retention_ms())
                .arg(ms(batch.until()))
                .arg(batch.limit)
                .arg(&self.record_prefix);
            let mut conn = self.conn.clone();
            let result = call.invoke_async(&mut conn).await;
            let answer: Value = self.answered(result)?;
            decode_records("claim_due", answer)
        })
    }

    fn expire_due(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<CommandRecord>, StoreError>> {
        Box::pin(async move {
            self.check_ready()?;
            let mut call = self.scripts.expire_due.prepare_invoke();
            call.key(&self.sched)
                .key(&self.leased)
                .arg(ms(now))
                .arg(self.retention_ms())
                .arg(limit)
                .arg(&self.record_prefix);
            let mut conn = self.conn.clone();
            let result = call.invoke_async(&mut conn).await;
            let answer: Value = self.answered(result)?;
            decode_records("expire_due", answer)
        })
    }

    fn claim_queued<'a>(
        &'a self,
        device_id: &'a str,
        batch: LeaseBatch,
    ) -> BoxFuture<'a, Result<Vec<CommandRecord>, StoreError>> {
        Box::pin(async move {
            if batch.limit == 0 {
                return Ok(Vec::new());
            }
            self.check_ready()?;
            let mut call = self.scripts.claim_queued.prepare_invoke();
            call.key(&self.sched)
                .key(&self.leased)
                .arg(ms(batch.now))
                .arg(self.retention_ms())
                .arg(ms(batch.until()))
                .arg(batch.limit)
                .arg(&self.record_prefix)
                .arg(device_id);
            let mut conn = self.conn.clone();
            let result = call.invoke_async(&mut conn).await;
            let answer: Value = self.answered(result)?;
            decode_records("claim_queued", answer)
        })
    }

    fn queued_devices(&self, now: DateTime<Utc>) -> BoxFuture<'_, Result<Vec<String>, StoreError>> {
        Box::pin(async move { Ok(self.queued(now).await?.1) })
    }

    fn count_queued(&self, now: DateTime<Utc>) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(async move { Ok(self.queued(now).await?.0) })
    }

    fn idem_begin<'a>(
        &'a self,
        request: IdemRequest<'a>,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<IdemBegin, StoreError>> {
        Box::pin(async move {
            let now_ms = ms(now).to_string();
            let until = ms(millis(add(now, IDEM_IN_PROGRESS_TIMEOUT))).to_string();
            let timeout = duration_ms(IDEM_IN_PROGRESS_TIMEOUT).to_string();
            let args: [&[u8]; 4] = [
                &request.fingerprint,
                now_ms.as_bytes(),
                until.as_bytes(),
                timeout.as_bytes(),
            ];
            let key = self.idem_key(&request);
            let answer = self.run_idem(&self.scripts.idem_begin, key, &args).await?;
            let (code, mut fields) = split(answer)?;
            Ok(match code.as_str() {
                "new" => IdemBegin::New,
                "progress" => IdemBegin::InProgress,
                "mismatch" => IdemBegin::Mismatch,
                "replay" if fields.len() == 2 => {
                    let body = fields.pop().unwrap_or_default();
                    let status = text(fields.pop().unwrap_or_default())
                        .parse()
                        .map_err(|_| corrupt("idempotency status"))?;
                    IdemBegin::Replay { status, body }
                }
                _ => return Err(unexpected_code("idem_begin", &code)),
            })
        })
    }

    fn idem_finish<'a>(
        &'a self,
        answer: IdemAnswer<'a>,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let status = answer.status.to_string();
            let until = ms(millis(add(now, answer.ttl))).to_string();
            let ttl = duration_ms(answer.ttl).max(1).to_string();
            let args: [&[u8]; 5] = [
                &answer.request.fingerprint,
                status.as_bytes(),
                &answer.body,
                until.as_bytes(),
                ttl.as_bytes(),
            ];
            let key = self.idem_key(&answer.request);
            self.run_idem(&self.scripts.idem_finish, key, &args)
                .await
                .map(drop)
        })
    }

    fn idem_abort<'a>(&'a self, request: IdemRequest<'a>) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let key = self.idem_key(&request);
            self.run_idem(&self.scripts.idem_abort, key, &[])
                .await
                .map(drop)
        })
    }

    /// Redis drops expired records and keys by itself (their `PEXPIRE`), and the claim
    /// script clears what it finds gone from the sorted sets: nothing to do here.
    fn purge(&self, _now: DateTime<Utc>) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(std::future::ready(Ok(0)))
    }

    fn schedule_create(
        &self,
        record: ScheduleRecord,
        max_per_device: usize,
    ) -> BoxFuture<'_, Result<ScheduleCreated, StoreError>> {
        Box::pin(async move {
            let r = record.normalised();
            let hash = format!("{}{}", self.sch_prefix, r.schedule_id);
            let device = format!("{}{}", self.sch_dev_prefix, r.device_id);
            let mut args = vec![
                max_per_device.to_string().into_bytes(),
                r.schedule_id.clone().into_bytes(),
                redis_schedules::due_score(&r),
            ];
            args.extend(redis_schedules::encode(&r, r.version, true));
            let answer = self
                .run_schedule(
                    &self.scripts.sch_create,
                    &[&hash, &device, &self.sch_all, &self.sch_due],
                    args,
                )
                .await?;
            match answer {
                Value::Int(1) => Ok(ScheduleCreated::Created),
                Value::Int(0) => Ok(ScheduleCreated::Exists),
                Value::Int(2) => Ok(ScheduleCreated::TooMany),
                other => Err(unexpected("schedule_create", &other)),
            }
        })
    }

    fn schedule_get<'a>(
        &'a self,
        schedule_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<ScheduleRecord>, StoreError>> {
        Box::pin(async move {
            self.check_ready()?;
            let mut conn = self.conn.clone();
            let result: Result<Vec<Vec<u8>>, RedisError> = redis::cmd("HGETALL")
                .arg(format!("{}{schedule_id}", self.sch_prefix))
                .query_async(&mut conn)
                .await;
            let fields = self.answered(result)?;
            if fields.is_empty() {
                return Ok(None);
            }
            redis_schedules::decode(fields).map(Some)
        })
    }

    fn schedule_list<'a>(
        &'a self,
        device_id: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<ScheduleRecord>, StoreError>> {
        Box::pin(async move {
            let set = match device_id {
                Some(device) => format!("{}{device}", self.sch_dev_prefix),
                None => self.sch_all.clone(),
            };
            let answer = self
                .run_schedule(
                    &self.scripts.sch_list,
                    &[&set],
                    vec![self.sch_prefix.clone().into_bytes()],
                )
                .await?;
            let mut out = self.schedules_of("schedule_list", answer)?;
            schedule::sort(&mut out);
            Ok(out)
        })
    }

    fn schedule_replace(
        &self,
        record: ScheduleRecord,
        expected_version: u64,
    ) -> BoxFuture<'_, Result<ScheduleWrite, StoreError>> {
        Box::pin(async move {
            let r = record.normalised();
            let hash = format!("{}{}", self.sch_prefix, r.schedule_id);
            let mut args = vec![
                expected_version.to_string().into_bytes(),
                r.schedule_id.clone().into_bytes(),
                redis_schedules::due_score(&r),
            ];
            args.extend(redis_schedules::encode(
                &r,
                expected_version.saturating_add(1),
                false,
            ));
            let answer = self
                .run_schedule(&self.scripts.sch_replace, &[&hash, &self.sch_due], args)
                .await?;
            match split(answer)? {
                (code, fields) if code == "ok" => Ok(ScheduleWrite::Written(Box::new(
                    redis_schedules::decode(fields)?,
                ))),
                (code, _) if code == "conflict" => Ok(ScheduleWrite::Conflict),
                (code, _) if code == "none" => Ok(ScheduleWrite::NotFound),
                (code, _) => Err(unexpected_code("schedule_replace", &code)),
            }
        })
    }

    fn schedule_delete<'a>(
        &'a self,
        schedule_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<ScheduleRecord>, StoreError>> {
        Box::pin(async move {
            let hash = format!("{}{schedule_id}", self.sch_prefix);
            let answer = self
                .run_schedule(
                    &self.scripts.sch_delete,
                    &[&hash, &self.sch_all, &self.sch_due],
                    vec![
                        schedule_id.as_bytes().to_vec(),
                        self.sch_dev_prefix.clone().into_bytes(),
                    ],
                )
                .await?;
            match split(answer)? {
                (code, fields) if code == "ok" => redis_schedules::decode(fields).map(Some),
                (code, _) if code == "none" => Ok(None),
                (code, _) => Err(unexpected_code("schedule_delete", &code)),
            }
        })
    }

    fn schedule_due(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<ScheduleRecord>, StoreError>> {
        Box::pin(async move {
            if limit == 0 {
                return Ok(Vec::new());
            }
            let answer = self
                .run_schedule(
                    &self.scripts.sch_due,
                    &[&self.sch_due],
                    vec![
                        ms(now).to_string().into_bytes(),
                        limit.to_string().into_bytes(),
                        self.sch_prefix.clone().into_bytes(),
                    ],
                )
                .await?;
            self.schedules_of("schedule_due", answer)
        })
    }

    fn schedule_count_enabled(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(async move {
            self.check_ready()?;
            let mut conn = self.conn.clone();
            let result: Result<u64, RedisError> = redis::cmd("ZCARD")
                .arg(&self.sch_due)
                .query_async(&mut conn)
                .await;
            self.answered(result)
        })
    }

    fn is_ready(&self) -> bool {
        self.health.ready.load(Ordering::SeqCst)
    }

    fn durable(&self) -> bool {
        true
    }
}

// ---------------------------------------------------------------------------------------
// Encoding.

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The record as the hash's field/value pairs (absent options are left out).
fn encode(r: &CommandRecord) -> Vec<Arg> {
    let mut out: Vec<Arg> = Vec::with_capacity(30);
    let mut put = |field: &'static str, value: Vec<u8>| {
        out.push(Cow::Borrowed(field.as_bytes()));
        out.push(Cow::Owned(value));
    };
    let time = |t: DateTime<Utc>| ms(t).to_string().into_bytes();
    // [`WRITES`] reads `dev`, `st`, `c` and `e` by their places: keep these first seven.
    put("id", r.command_id.clone().into_bytes());
    put("dev", r.device_id.as_str().as_bytes().to_vec());
    put("type", r.command_type.as_str().as_bytes().to_vec());
    put("pr", r.principal.clone().into_bytes());
    put("st", r.status.as_str().as_bytes().to_vec());
    put("c", time(r.created_at));
    put("e", time(r.expires_at));
    put("a", flag(r.device_acks));
    if let Some(t) = r.sent_at {
        put("s", time(t));
    }
    if let Some(t) = r.completed_at {
        put("d", time(t));
    }
    if let Some(reason) = &r.status_reason {
        put("rc", reason.code.clone().into_bytes());
        put("rm", reason.message.clone().into_bytes());
    }
    if let Some(t) = r.fire_at {
        put("f", time(t));
    }
    if let Some(d) = &r.delivery {
        put("t", d.topic.clone().into_bytes());
        put("p", d.payload.clone());
    }
    if let Some(id) = &r.schedule_id {
        put("sid", id.clone().into_bytes());
    }
    out
}

/// The record from HGETALL's flat field/value list.
fn decode(fields: Vec<Vec<u8>>) -> Result<CommandRecord, StoreError> {
    let mut id = None;
    let (mut dev, mut kind, mut principal, mut status) = (None, None, None, None);
    let (mut created, mut sent, mut completed, mut expires, mut fire) =
        (None, None, None, None, None);
    let (mut acks, mut code, mut message, mut topic, mut payload) = (false, None, None, None, None);
    let mut schedule_id = None;
    let mut it = fields.into_iter();
    while let (Some(field), Some(value)) = (it.next(), it.next()) {
        match field.as_slice() {
            b"id" => id = Some(text(value)),
            b"dev" => dev = Some(text(value)),
            b"type" => kind = Some(text(value)),
            b"pr" => principal = Some(text(value)),
            b"st" => status = Some(status_of(Some(value))?),
            b"c" => created = Some(time(&value)?),
            b"s" => sent = Some(time(&value)?),
            b"d" => completed = Some(time(&value)?),
            b"e" => expires = Some(time(&value)?),
            b"f" => fire = Some(time(&value)?),
            b"a" => acks = value == b"1",
            b"rc" => code = Some(text(value)),
            b"rm" => message = Some(text(value)),
            b"t" => topic = Some(text(value)),
            b"p" => payload = Some(value),
            b"sid" => schedule_id = Some(text(value)),
            _ => {}
        }
    }
    let need = |v: Option<String>, what: &str| v.ok_or_else(|| corrupt(what));
    Ok(CommandRecord {
        command_id: need(id, "id")?,
        device_id: need(dev, "dev")
            .and_then(|d| DeviceId::parse(&d).map_err(|_| corrupt("dev")))?,
        command_type: need(kind, "type")
            .and_then(|k| CommandType::from_wire(&k).ok_or_else(|| corrupt("type")))?,
        principal: need(principal, "pr")?,
        status: status.ok_or_else(|| corrupt("st"))?,
        created_at: created.ok_or_else(|| corrupt("c"))?,
        sent_at: sent,
        completed_at: completed,
        expires_at: expires.ok_or_else(|| corrupt("e"))?,
        device_acks: acks,
        status_reason: code.map(|code| StatusReason {
            code,
            message: message.unwrap_or_default(),
        }),
        fire_at: fire,
        delivery: topic.map(|topic| Delivery {
            topic,
            payload: payload.unwrap_or_default(),
        }),
        schedule_id,
    })
}

fn text(v: Vec<u8>) -> String {
    String::from_utf8(v).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

fn time(v: &[u8]) -> Result<DateTime<Utc>, StoreError> {
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .and_then(DateTime::from_timestamp_millis)
        .ok_or_else(|| corrupt("timestamp"))
}

fn status_of(v: Option<Vec<u8>>) -> Result<CommandStatus, StoreError> {
    v.and_then(|v| CommandStatus::parse(&text(v)))
        .ok_or_else(|| corrupt("st"))
}

fn bytes(v: Value) -> Vec<u8> {
    match v {
        Value::BulkString(b) => b,
        Value::SimpleString(s) => s.into_bytes(),
        Value::Int(n) => n.to_string().into_bytes(),
        _ => Vec::new(),
    }
}

/// A script's answer: its code (first element) and the rest.
fn split(v: Value) -> Result<(String, Vec<Vec<u8>>), StoreError> {
    let Value::Array(items) = v else {
        return Err(unexpected("script", &v));
    };
    let mut items = items.into_iter().map(bytes);
    let code = text(items.next().unwrap_or_default());
    Ok((code, items.collect()))
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Unavailable {
        message: format!("a record in Redis has a missing or malformed field {what:?}"),
    }
}

/// A script's answer that is a list of records, each as its hash fields.
fn decode_records(op: &str, answer: Value) -> Result<Vec<CommandRecord>, StoreError> {
    let Value::Array(records) = answer else {
        return Err(unexpected(op, &answer));
    };
    records
        .into_iter()
        .map(|r| match r {
            Value::Array(fields) => decode(fields.into_iter().map(bytes).collect()),
            other => Err(unexpected(op, &other)),
        })
        .collect()
}

fn unexpected(op: &str, v: &Value) -> StoreError {
    StoreError::Unavailable {
        message: format!(
            "{op}: unexpected answer from Redis: {:.80}",
            format!("{v:?}")
        ),
    }
}

fn unexpected_code(op: &str, code: &str) -> StoreError {
    StoreError::Unavailable {
        message: format!("{op}: unexpected answer from Redis: {code:.40}"),
    }
}

/// The password of `redis://user:password@host`, as written and percent-decoded (both
/// may show up in an error message); empty passwords are not secrets worth cutting.
fn password_forms(url: &str) -> Vec<String> {
    let Some((_, rest)) = url.split_once("://") else {
        return Vec::new();
    };
    let Some((userinfo, _)) = rest.rsplit_once('@') else {
        return Vec::new();
    };
    let password = userinfo.split_once(':').map_or(userinfo, |(_, p)| p);
    if password.is_empty() {
        return Vec::new();
    }
    let decoded = percent_encoding::percent_decode_str(password)
        .decode_utf8_lossy()
        .into_owned();
    let mut forms = vec![password.to_owned()];
    if decoded != password {
        forms.push(decoded);
    }
    forms
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_record_survives_encoding() {
        let record = CommandRecord {
            command_id: "c-1".into(),
            device_id: DeviceId::parse("kitchen").unwrap(),
            command_type: CommandType::SetAlarm,
            principal: "ops".into(),
            status: CommandStatus::Failed,
            created_at: DateTime::from_timestamp_millis(1_795_939_200_123).unwrap(),
            sent_at: Some(DateTime::from_timestamp_millis(1_795_939_201_000).unwrap()),
            completed_at: Some(DateTime::from_timestamp_millis(1_795_939_202_005).unwrap()),
            expires_at: DateTime::from_timestamp_millis(1_795_939_800_000).unwrap(),
            device_acks: false,
            status_reason: Some(StatusReason::new("busy", "display \"busy\"")),
            fire_at: Some(DateTime::from_timestamp_millis(1_795_939_200_000).unwrap()),
            delivery: Some(Delivery {
                topic: "awtrix_a1b2c3/notify".into(),
                payload: b"\xff\x00{}".to_vec(),
            }),
            schedule_id: Some("019ad2c4-5f3e-7b6a-9c1d-2e3f4a5b6c80".into()),
        };
        let fields = encode(&record);
        // The places the WRITES script reads a new record's device, status and times from.
        let at = |i: usize| String::from_utf8(fields[i].to_vec()).unwrap();
        assert_eq!(
            [at(2), at(3), at(8), at(9), at(10), at(11), at(12), at(13)],
            [
                "dev",
                "kitchen",
                "st",
                "failed",
                "c",
                "1795939200123",
                "e",
                "1795939800000"
            ]
        );
        let fields = fields.into_iter().map(Cow::into_owned).collect();
        assert_eq!(decode(fields).unwrap(), record);
    }

    #[test]
    fn the_password_is_found_as_written_and_decoded() {
        assert_eq!(
            password_forms("rediss://app:p%40ss@redis:6380/1"),
            ["p%40ss", "p@ss"]
        );
        assert_eq!(password_forms("redis://:s3cret@redis"), ["s3cret"]);
        assert!(password_forms("redis://redis:6379").is_empty());
    }
}
