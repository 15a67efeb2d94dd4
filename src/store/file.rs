//! `STATE_STORE=file:<path>`: one SQLite database file, for one instance.
//!
//! Why SQLite and the engine's settings: `docs/store.md`. The shape:
//! - One writer thread owns the connection. Callers send it jobs over a channel and
//!   await a reply. It takes every job queued, runs them in one `BEGIN IMMEDIATE`
//!   transaction (each inside a savepoint, so a failing job leaves no partial write),
//!   commits once — one fsync of the WAL for the whole group — and only then answers
//!   each caller. A 202 therefore follows a record that is on disk, and a burst of
//!   commands shares one sync instead of queueing for one each.
//! - Reads go through the same thread: `get` may write (lazy expiry), and one thread
//!   makes every read-modify-write atomic (idempotency, claims) without more locking.
//!   `BEGIN IMMEDIATE` also serialises against any other process on the same file.
//! - A failed commit (full disk, I/O error) is rolled back and answers every job of the
//!   group `Unavailable`; the next group starts a fresh transaction, so the store
//!   recovers by itself when writes work again.
//! - Opening never recreates a file it cannot read: a corrupt file or someone else's
//!   database is a start-up error naming it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};
use tokio::sync::{mpsc, oneshot};

use super::file_schedules;
use super::{
    AckOutcome, CancelOutcome, CommandRecord, CommandStatus, Completion, Delivery,
    IDEM_IN_PROGRESS_TIMEOUT, IdemAnswer, IdemBegin, IdemRequest, LeaseBatch, StateStore,
    StatusReason, StoreError, StoreSettings, add, apply_complete, apply_expiry, apply_mark_sent,
    final_at, is_dropped, millis, normalise,
};
use super::{ScheduleCreated, ScheduleRecord, ScheduleWrite};
use crate::domain::{CommandType, DeviceId};
use futures_util::future::BoxFuture;

/// `PRAGMA application_id` of our files ("Clk1"): tells our database from any other.
const APPLICATION_ID: i64 = 0x436C_6B31;
/// `PRAGMA user_version`: the schema below and the schedules' table
/// ([`file_schedules::SCHEMA`]); a version 1 file (no schedules yet) gets the table, and
/// a version 1 or 2 file the index of queued commands ([`QUEUED_INDEX`]), and a version
/// 1–3 file the `schedule_id` column of commands ([`SCHEDULE_ID_COLUMN`]).
const SCHEMA_VERSION: i64 = 4;

/// The schedule an occurrence's command came from (SPEC 12.3); added in version 4.
const SCHEDULE_ID_COLUMN: &str = "ALTER TABLE commands ADD COLUMN schedule_id TEXT;";

/// `Queued` records by device, in the order accepted (SPEC 11.3), for `claim_queued`.
const QUEUED_INDEX: &str = "
CREATE INDEX commands_queued ON commands (device_id, created_ms, id) WHERE status = 'queued';
";
/// Jobs queued before senders wait: back-pressure when the disk cannot keep up.
const QUEUE: usize = 4096;
/// Most jobs committed together: bounds one transaction's size and latency.
const DEFAULT_MAX_BATCH: usize = 512;
/// While writes fail: how often the writer tries one, so readiness comes back by itself.
const PROBE_INTERVAL: Duration = Duration::from_millis(250);

const SCHEMA: &str = "
CREATE TABLE commands (
    id TEXT PRIMARY KEY NOT NULL,
    device_id TEXT NOT NULL,
    command_type TEXT NOT NULL,
    principal TEXT NOT NULL,
    status TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    sent_ms INTEGER,
    completed_ms INTEGER,
    expires_ms INTEGER NOT NULL,
    device_acks INTEGER NOT NULL,
    reason_code TEXT,
    reason_message TEXT,
    fire_ms INTEGER,
    delivery_topic TEXT,
    delivery_payload BLOB,
    lease_ms INTEGER,
    final_ms INTEGER NOT NULL,
    schedule_id TEXT
);
CREATE INDEX commands_due ON commands (fire_ms) WHERE status = 'scheduled';
CREATE INDEX commands_final ON commands (final_ms);
CREATE TABLE idempotency (
    key TEXT PRIMARY KEY NOT NULL,
    fingerprint BLOB NOT NULL,
    status INTEGER,
    body BLOB,
    expires_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX idempotency_expiry ON idempotency (expires_ms);
CREATE TABLE meta (key TEXT PRIMARY KEY NOT NULL, value) WITHOUT ROWID;
";

const COLUMNS: &str = "id, device_id, command_type, principal, status, created_ms, sent_ms, \
     completed_ms, expires_ms, device_acks, reason_code, reason_message, fire_ms, \
     delivery_topic, delivery_payload, lease_ms, schedule_id";

/// What a job hands back after running: whether it succeeded (else its savepoint is
/// rolled back) and how to answer its caller once the commit's result is known.
struct Step {
    ok: bool,
    reply: Box<dyn FnOnce(Result<(), String>) + Send>,
}

/// One operation for the writer thread; given the connection, or the reason the group's
/// transaction could not start.
type Job = Box<dyn FnOnce(Result<&Connection, &str>) -> Step + Send>;

/// The durable store. Dropping it finishes queued jobs and closes the file.
pub struct FileStore {
    path: PathBuf,
    settings: StoreSettings,
    sender: Option<mpsc::Sender<Job>>,
    writer: Option<JoinHandle<()>>,
    commits: Arc<AtomicU64>,
    healthy: Arc<AtomicBool>,
    integrity: Arc<Integrity>,
}

/// What the store checks of its file while it runs, not only at start-up (issue 27: a
/// file replaced or overwritten was noticed only at the next restart, while commands got
/// 202s for records written to a file nobody would read again):
/// - the path still names the file that was opened (same device and inode): not removed,
///   not renamed away, not replaced by another file;
/// - the file still starts with SQLite's header and carries this application's id
///   (`PRAGMA application_id`): not overwritten with something else.
///
/// Checked before each group of writes and by `is_ready` (so by `/ready`), at most once a
/// second (a `stat` and a 100-byte read). Once a check fails the store stays unavailable
/// until restart: every call fails (the API answers 503, nothing is dispatched) and
/// `/ready` says `not_ready`; the start-up checks then say what is wrong with the file.
/// Not checked: a change inside the file that keeps its header (SQLite's own errors
/// then surface as 503s as they are met; start-up runs `PRAGMA quick_check`).
struct Integrity {
    path: PathBuf,
    /// Device and inode of the file opened.
    identity: (u64, u64),
    epoch: std::time::Instant,
    /// Milliseconds since `epoch` from which the next check is due.
    next_check_ms: AtomicU64,
    /// Why the file can no longer be trusted, once a check failed.
    broken: std::sync::Mutex<Option<String>>,
}

impl Integrity {
    fn new(path: &Path) -> Result<Self, StoreError> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(path).map_err(|e| StoreError::Open {
            message: format!("state store file {}: {e}", path.display()),
        })?;
        Ok(Self {
            path: path.to_owned(),
            identity: (meta.dev(), meta.ino()),
            epoch: std::time::Instant::now(),
            next_check_ms: AtomicU64::new(0),
            broken: std::sync::Mutex::new(None),
        })
    }

    /// `Err(why)` once the file failed a check (now, or before).
    fn check_if_due(&self) -> Result<(), String> {
        let mut broken = self
            .broken
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(why) = &*broken {
            return Err(why.clone());
        }
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        if now < self.next_check_ms.load(Ordering::Relaxed) {
            return Ok(());
        }
        self.next_check_ms.store(now + 1000, Ordering::Relaxed);
        let Err(what) = self.check() else {
            return Ok(());
        };
        let why = format!(
            "state store file {} {what} while the server ran; every command is refused until a restart (which checks the file again)",
            self.path.display()
        );
        tracing::error!("{why}");
        *broken = Some(why.clone());
        Err(why)
    }

    fn check(&self) -> Result<(), String> {
        use std::io::Read;
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(&self.path).map_err(|e| format!("is gone ({e})"))?;
        if (meta.dev(), meta.ino()) != self.identity {
            return Err("was replaced by another file".to_owned());
        }
        let mut header = [0u8; 100];
        std::fs::File::open(&self.path)
            .and_then(|mut f| f.read_exact(&mut header))
            .map_err(|e| format!("cannot be read any more ({e})"))?;
        if &header[..16] != b"SQLite format 3\0" {
            return Err("is no longer an SQLite database (its header was overwritten)".to_owned());
        }
        let app = i64::from(u32::from_be_bytes([
            header[68], header[69], header[70], header[71],
        ]));
        if app != APPLICATION_ID {
            return Err(
                "is no longer a clock-server state store (another application id)".to_owned(),
            );
        }
        Ok(())
    }
}

impl FileStore {
    /// Opens (or creates) the store at `path`. Errors name the file or directory.
    pub fn open(path: &Path, settings: StoreSettings) -> Result<Self, StoreError> {
        Self::open_with_batch(path, settings, DEFAULT_MAX_BATCH)
    }

    /// [`open`](Self::open) committing at most `max_batch` jobs per transaction
    /// (`1`: one sync per write, to measure what group commit saves).
    pub fn open_with_batch(
        path: &Path,
        settings: StoreSettings,
        max_batch: usize,
    ) -> Result<Self, StoreError> {
        check_directory(path)?;
        let conn = open_connection(path)?;
        let integrity = Arc::new(Integrity::new(path)?);
        let (sender, receiver) = mpsc::channel(QUEUE);
        let commits = Arc::new(AtomicU64::new(0));
        let healthy = Arc::new(AtomicBool::new(true));
        let writer = {
            let (commits, healthy) = (Arc::clone(&commits), Arc::clone(&healthy));
            let integrity = Arc::clone(&integrity);
            std::thread::Builder::new()
                .name("state-store".to_owned())
                .spawn(move || {
                    writer(
                        conn,
                        receiver,
                        max_batch.max(1),
                        &commits,
                        &healthy,
                        &integrity,
                    )
                })
                .map_err(|e| StoreError::Open {
                    message: format!(
                        "state store {}: cannot start its writer: {e}",
                        path.display()
                    ),
                })?
        };
        Ok(Self {
            path: path.to_owned(),
            settings,
            sender: Some(sender),
            writer: Some(writer),
            commits,
            healthy,
            integrity,
        })
    }

    /// Transactions committed with changes so far: each is one sync of the file.
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// For tests: caps the file at its current size plus `extra_pages` (SQLite's
    /// `max_page_count`; `None` lifts the cap), so writes fail as on a full disk.
    #[doc(hidden)]
    pub async fn cap_size_for_tests(&self, extra_pages: Option<u64>) -> Result<(), StoreError> {
        self.submit(move |conn| {
            let pages: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
            let cap = extra_pages.map_or(i64::from(u32::MAX - 1), |n| {
                pages.saturating_add(i64::try_from(n).unwrap_or(i64::MAX))
            });
            conn.query_row(&format!("PRAGMA max_page_count = {cap}"), [], |_| Ok(()))?;
            Ok(())
        })
        .await
    }

    /// Runs `op` on the writer thread within the next group's transaction; resolves
    /// once that transaction is committed (or failed).
    fn submit<T: Send + 'static>(
        &self,
        op: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> BoxFuture<'_, Result<T, StoreError>> {
        let (tx, rx) = oneshot::channel::<Result<T, StoreError>>();
        let job: Job = Box::new(move |conn| {
            let result = match conn {
                Ok(conn) => op(conn).map_err(|e| e.to_string()),
                Err(message) => Err(message.to_owned()),
            };
            Step {
                ok: result.is_ok(),
                reply: Box::new(move |commit| {
                    let answer = match (result, commit) {
                        (Ok(value), Ok(())) => Ok(value),
                        (Ok(_), Err(message)) | (Err(message), _) => Err(message),
                    };
                    let _ = tx.send(answer.map_err(|message| StoreError::Unavailable { message }));
                }),
            }
        });
        Box::pin(async move {
            let closed = || StoreError::Unavailable {
                message: format!("{}: its writer thread stopped", self.path.display()),
            };
            let sender = self.sender.as_ref().ok_or_else(closed)?;
            sender.send(job).await.map_err(|_| closed())?;
            rx.await.map_err(|_| closed())?.map_err(|e| match e {
                StoreError::Unavailable { message } => StoreError::Unavailable {
                    message: format!("{}: {message}", self.path.display()),
                },
                e => e,
            })
        })
    }
}

impl Drop for FileStore {
    fn drop(&mut self) {
        // Closing the channel lets the writer finish what is queued and exit; waiting for
        // it means the file is closed when the store is gone (a restart can reopen it).
        self.sender.take();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

/// The directory must exist and be writable (SQLite also writes `-wal`/`-shm` beside it).
fn check_directory(path: &Path) -> Result<(), StoreError> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    // Start-up prefixes the error with STATE_STORE=file:<path>: the path is not repeated.
    let fail = |what: String| StoreError::Open {
        message: format!(
            "state store directory {} {what}; create it, writable by this user, or choose another path",
            dir.display(),
        ),
    };
    match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => return Err(fail("is not a directory".to_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(fail("does not exist".to_owned()));
        }
        Err(e) => return Err(fail(format!("cannot be read: {e}"))),
    }
    let name = path
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let probe = dir.join(format!(".{name}.write-check-{}", std::process::id()));
    std::fs::write(&probe, b"")
        .and_then(|()| std::fs::remove_file(&probe))
        .map_err(|e| fail(format!("is not writable: {e}")))
}

fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    let fail = |what: String| StoreError::Open {
        message: format!(
            "state store file {} {what}; it is left untouched (move it away to start with an empty store)",
            path.display()
        ),
    };
    if path.is_dir() {
        return Err(fail("is a directory".to_owned()));
    }
    let conn = Connection::open(path).map_err(|e| fail(format!("cannot be opened: {e}")))?;
    let setup = || -> rusqlite::Result<Result<(), String>> {
        // Reading the header first: a file that is not SQLite fails here, untouched.
        let app: i64 = conn.query_row("PRAGMA application_id", [], |r| r.get(0))?;
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        let tables: i64 = conn.query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))?;
        if app == 0 && version == 0 && tables == 0 {
            conn.execute_batch(&format!(
                "BEGIN; {SCHEMA} {} {QUEUED_INDEX} PRAGMA application_id = {APPLICATION_ID}; \
                 PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;",
                file_schedules::SCHEMA
            ))?;
        } else if app == APPLICATION_ID && version == 1 {
            conn.execute_batch(&format!(
                "BEGIN; {} {QUEUED_INDEX} {SCHEDULE_ID_COLUMN} \
                 PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;",
                file_schedules::SCHEMA
            ))?;
        } else if app == APPLICATION_ID && version == 2 {
            conn.execute_batch(&format!(
                "BEGIN; {QUEUED_INDEX} {SCHEDULE_ID_COLUMN} \
                 PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
            ))?;
        } else if app == APPLICATION_ID && version == 3 {
            conn.execute_batch(&format!(
                "BEGIN; {SCHEDULE_ID_COLUMN} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
            ))?;
        } else if app != APPLICATION_ID {
            return Ok(Err(
                "is an SQLite database of another application".to_owned()
            ));
        } else if version != SCHEMA_VERSION {
            return Ok(Err(format!(
                "has schema version {version}; this build reads version {SCHEMA_VERSION}"
            )));
        }
        let check: String = conn.query_row("PRAGMA quick_check(1)", [], |r| r.get(0))?;
        if check != "ok" {
            return Ok(Err(format!("is corrupt: {check}")));
        }
        // WAL: a commit is one append and one fsync of the log (synchronous=FULL), and
        // readers of other processes (an operator's sqlite3) do not block the writer.
        let _mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        conn.execute_batch("PRAGMA synchronous = FULL;")?;
        conn.busy_timeout(Duration::from_secs(5))?;
        Ok(Ok(()))
    };
    match setup() {
        Ok(Ok(())) => Ok(conn),
        Ok(Err(what)) => Err(fail(what)),
        Err(e) => Err(fail(format!("is not a readable state store: {e}"))),
    }
}

/// The writer thread: one transaction and one commit per group of queued jobs.
fn writer(
    mut conn: Connection,
    mut receiver: mpsc::Receiver<Job>,
    max_batch: usize,
    commits: &AtomicU64,
    healthy: &AtomicBool,
    integrity: &Integrity,
) {
    let mut batch: Vec<Job> = Vec::with_capacity(max_batch);
    loop {
        let first = if healthy.load(Ordering::Relaxed) {
            match receiver.blocking_recv() {
                Some(job) => job,
                None => return,
            }
        } else {
            // After a failed write nothing else may come (`/ready` says not ready, so
            // traffic goes elsewhere): probe until writes work again rather than wait.
            match receiver.try_recv() {
                Ok(job) => job,
                Err(mpsc::error::TryRecvError::Disconnected) => return,
                Err(mpsc::error::TryRecvError::Empty) => {
                    std::thread::sleep(PROBE_INTERVAL);
                    let probe = conn.execute(
                        "INSERT OR REPLACE INTO meta (key, value) VALUES ('probe', ?1)",
                        [ms(Utc::now())],
                    );
                    healthy.store(probe.is_ok(), Ordering::Relaxed);
                    continue;
                }
            }
        };
        batch.push(first);
        while batch.len() < max_batch {
            match receiver.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let before = conn.total_changes();
        let mut replies = Vec::with_capacity(batch.len());
        let mut all_ok = true;
        // A file that failed its check takes no more writes (see `Integrity`).
        let commit = match integrity.check_if_due().and_then(|()| {
            conn.transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(|e| e.to_string())
        }) {
            Err(message) => {
                for job in batch.drain(..) {
                    replies.push(job(Err(&message)).reply);
                }
                Err(message)
            }
            Ok(mut txn) => {
                for job in batch.drain(..) {
                    let step = match txn.savepoint() {
                        Ok(sp) => {
                            let step = job(Ok(&sp));
                            if step.ok {
                                // RELEASE cannot fail short of an I/O error, which the
                                // commit below reports for the whole group.
                                let _ = sp.commit();
                            }
                            step
                        }
                        Err(e) => job(Err(&e.to_string())),
                    };
                    all_ok &= step.ok;
                    replies.push(step.reply);
                }
                let changed = txn.total_changes() != before;
                // On failure the dropped transaction rolls back: nothing of the group
                // stays, and the next group starts afresh.
                let result = txn.commit().map_err(|e| e.to_string());
                if result.is_ok() && changed {
                    commits.fetch_add(1, Ordering::Relaxed);
                }
                result
            }
        };
        // Every failure here is the file's (jobs return errors only from SQLite), so it
        // makes the store unready until a write, or the probe above, succeeds.
        let ok = commit.is_ok() && all_ok;
        if !ok || conn.total_changes() != before {
            healthy.store(ok, Ordering::Relaxed);
        }
        for reply in replies {
            reply(commit.clone());
        }
    }
}

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn time(row: &Row<'_>, idx: usize) -> rusqlite::Result<DateTime<Utc>> {
    let v: i64 = row.get(idx)?;
    DateTime::from_timestamp_millis(v).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            idx,
            rusqlite::types::Type::Integer,
            format!("timestamp {v} out of range").into(),
        )
    })
}

fn opt_time(row: &Row<'_>, idx: usize) -> rusqlite::Result<Option<DateTime<Utc>>> {
    match row.get::<_, Option<i64>>(idx)? {
        None => Ok(None),
        Some(_) => time(row, idx).map(Some),
    }
}

/// A row of `COLUMNS` as a record and its lease.
fn from_row(row: &Row<'_>) -> rusqlite::Result<(CommandRecord, Option<DateTime<Utc>>)> {
    let status: String = row.get(4)?;
    let status = CommandStatus::parse(&status).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            4,
            rusqlite::types::Type::Text,
            format!("unknown status {status:?}").into(),
        )
    })?;
    let reason = match (row.get::<_, Option<String>>(10)?, row.get(11)?) {
        (Some(code), Some(message)) => Some(StatusReason { code, message }),
        _ => None,
    };
    let delivery = match (row.get::<_, Option<String>>(13)?, row.get(14)?) {
        (Some(topic), Some(payload)) => Some(Delivery { topic, payload }),
        _ => None,
    };
    let record = CommandRecord {
        command_id: row.get(0)?,
        device_id: {
            let id: String = row.get(1)?;
            DeviceId::parse(&id).map_err(|e| {
                rusqlite::Error::FromSqlConversionFailure(
                    1,
                    rusqlite::types::Type::Text,
                    format!("device id {id:?}: {e}").into(),
                )
            })?
        },
        command_type: {
            let name: String = row.get(2)?;
            CommandType::from_wire(&name).ok_or_else(|| {
                rusqlite::Error::FromSqlConversionFailure(
                    2,
                    rusqlite::types::Type::Text,
                    format!("unknown command type {name:?}").into(),
                )
            })?
        },
        principal: row.get(3)?,
        status,
        created_at: time(row, 5)?,
        sent_at: opt_time(row, 6)?,
        completed_at: opt_time(row, 7)?,
        expires_at: time(row, 8)?,
        device_acks: row.get(9)?,
        status_reason: reason,
        fire_at: opt_time(row, 12)?,
        delivery,
        schedule_id: row.get(16)?,
    };
    Ok((record, opt_time(row, 15)?))
}

/// `Connection::execute` through the statement cache: the same few statements run for
/// every command, and parsing them again each time cost more than running them.
fn exec<P: rusqlite::Params>(conn: &Connection, sql: &str, params: P) -> rusqlite::Result<usize> {
    conn.prepare_cached(sql)?.execute(params)
}

/// `Connection::query_row` through the statement cache.
fn query_row<T, P: rusqlite::Params>(
    conn: &Connection,
    sql: &str,
    params: P,
    f: impl FnOnce(&Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    conn.prepare_cached(sql)?.query_row(params, f)
}

fn insert(conn: &Connection, r: &CommandRecord) -> rusqlite::Result<()> {
    exec(
        conn,
        &format!(
            "INSERT INTO commands ({COLUMNS}, final_ms) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, NULL, ?16, ?17)"
        ),
        params![
            r.command_id,
            r.device_id.as_str(),
            r.command_type.as_str(),
            r.principal,
            r.status.as_str(),
            ms(r.created_at),
            r.sent_at.map(ms),
            r.completed_at.map(ms),
            ms(r.expires_at),
            r.device_acks,
            r.status_reason.as_ref().map(|s| &s.code),
            r.status_reason.as_ref().map(|s| &s.message),
            r.fire_at.map(ms),
            r.delivery.as_ref().map(|d| &d.topic),
            r.delivery.as_ref().map(|d| &d.payload),
            r.schedule_id,
            ms(final_at(r)),
        ],
    )?;
    Ok(())
}

/// Writes back what the rules may change.
fn update(
    conn: &Connection,
    r: &CommandRecord,
    lease: Option<DateTime<Utc>>,
) -> rusqlite::Result<()> {
    exec(
        conn,
        "UPDATE commands SET status = ?2, sent_ms = ?3, completed_ms = ?4, reason_code = ?5, \
         reason_message = ?6, lease_ms = ?7, final_ms = ?8 WHERE id = ?1",
        params![
            r.command_id,
            r.status.as_str(),
            r.sent_at.map(ms),
            r.completed_at.map(ms),
            r.status_reason.as_ref().map(|s| &s.code),
            r.status_reason.as_ref().map(|s| &s.message),
            lease.map(ms),
            ms(final_at(r)),
        ],
    )?;
    Ok(())
}

/// The live record `id` with its lease and lazy expiry applied (and written back), or
/// `None` (deleting it when past retention).
fn live(
    conn: &Connection,
    id: &str,
    retention: Duration,
    now: DateTime<Utc>,
) -> rusqlite::Result<Option<(CommandRecord, Option<DateTime<Utc>>)>> {
    let found = query_row(
        conn,
        &format!("SELECT {COLUMNS} FROM commands WHERE id = ?1"),
        [id],
        from_row,
    )
    .optional()?;
    let Some((mut record, mut lease)) = found else {
        return Ok(None);
    };
    if is_dropped(&record, retention, now) {
        exec(conn, "DELETE FROM commands WHERE id = ?1", [id])?;
        return Ok(None);
    }
    if apply_expiry(&mut record, now) {
        lease = None;
        update(conn, &record, lease)?;
    }
    Ok(Some((record, lease)))
}

impl StateStore for FileStore {
    fn name(&self) -> &'static str {
        "file"
    }

    fn create(&self, record: CommandRecord) -> BoxFuture<'_, Result<(), StoreError>> {
        let record = normalise(record);
        let submitted = self.submit(move |conn| {
            let exists = query_row(
                conn,
                "SELECT 1 FROM commands WHERE id = ?1",
                [&record.command_id],
                |_| Ok(()),
            )
            .optional()?;
            if exists.is_some() {
                return Ok(Err(StoreError::Duplicate {
                    command_id: record.command_id,
                }));
            }
            insert(conn, &record).map(Ok)
        });
        Box::pin(async move { submitted.await? })
    }

    fn get<'a>(
        &'a self,
        command_id: &'a str,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Option<CommandRecord>, StoreError>> {
        let (id, retention) = (command_id.to_owned(), self.settings.retention);
        self.submit(move |conn| Ok(live(conn, &id, retention, now)?.map(|(r, _)| r)))
    }

    fn mark_sent<'a>(
        &'a self,
        command_id: &'a str,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Option<CommandStatus>, StoreError>> {
        let (id, retention) = (command_id.to_owned(), self.settings.retention);
        self.submit(move |conn| {
            let Some((mut record, _)) = live(conn, &id, retention, now)? else {
                return Ok(None);
            };
            if apply_mark_sent(&mut record, now) {
                update(conn, &record, None)?;
            }
            Ok(Some(record.status))
        })
    }

    fn complete(
        &self,
        completion: Completion,
        now: DateTime<Utc>,
    ) -> BoxFuture<'_, Result<AckOutcome, StoreError>> {
        let retention = self.settings.retention;
        self.submit(move |conn| {
            let Some((mut record, _)) = live(conn, &completion.command_id, retention, now)? else {
                return Ok(AckOutcome::Unknown);
            };
            let result = apply_complete(&mut record, &completion, now);
            if matches!(result, AckOutcome::Applied(_)) {
                update(conn, &record, None)?;
            }
            Ok(result)
        })
    }

    fn cancel<'a>(
        &'a self,
        command_id: &'a str,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<CancelOutcome, StoreError>> {
        let (id, retention) = (command_id.to_owned(), self.settings.retention);
        self.submit(move |conn| {
            let Some((mut record, lease)) = live(conn, &id, retention, now)? else {
                return Ok(CancelOutcome::NotFound);
            };
            let leased = lease.is_some_and(|until| until > now);
            let holdable = matches!(
                record.status,
                CommandStatus::Scheduled | CommandStatus::Queued
            );
            if !holdable || leased {
                return Ok(CancelOutcome::NotCancellable(record.status));
            }
            record.status = CommandStatus::Cancelled;
            record.completed_at = Some(millis(now));
            update(conn, &record, None)?;
            Ok(CancelOutcome::Cancelled(Box::new(record)))
        })
    }

    /// The window since the last sweep, on the indexed `final_ms` (a record that is not
    /// final has its expiry there; one that expired, by a read or now, too): each record
    /// falls in exactly one window. The window's end is kept in `meta`, so a restart goes
    /// on where the last sweep ended (one instance per file).
    fn expire_due(
        &self,
        now: DateTime<Utc>,
        _limit: usize,
    ) -> BoxFuture<'_, Result<Vec<CommandRecord>, StoreError>> {
        self.submit(move |conn| {
            let end = ms(now);
            let cursor: Option<i64> = conn
                .prepare_cached("SELECT value FROM meta WHERE key = 'expiry_cursor'")?
                .query_row([], |row| row.get(0))
                .optional()?;
            // A file without a cursor yet (new, or from before the sweep): the last
            // minute, not the whole history.
            let start = cursor.unwrap_or(end - 60_000);
            if start >= end {
                return Ok(Vec::new());
            }
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM commands WHERE final_ms > ?1 AND final_ms <= ?2 \
                 AND status IN ('pending', 'scheduled', 'queued', 'sent', 'expired') \
                 ORDER BY final_ms"
            ))?;
            let due = stmt
                .query_map(params![start, end], from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let mut expired = Vec::with_capacity(due.len());
            for (mut record, _) in due {
                if apply_expiry(&mut record, now) {
                    update(conn, &record, None)?;
                }
                if record.status == CommandStatus::Expired {
                    expired.push(record);
                }
            }
            exec(
                conn,
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('expiry_cursor', ?1)",
                [end],
            )?;
            Ok(expired)
        })
    }

    fn claim_due(
        &self,
        batch: LeaseBatch,
    ) -> BoxFuture<'_, Result<Vec<CommandRecord>, StoreError>> {
        let (now, until) = (batch.now, ms(batch.until()));
        let limit = i64::try_from(batch.limit).unwrap_or(i64::MAX);
        self.submit(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM commands WHERE status = 'scheduled' AND fire_ms <= ?1 \
                 AND (lease_ms IS NULL OR lease_ms <= ?1) ORDER BY fire_ms LIMIT ?2"
            ))?;
            let due = stmt
                .query_map(params![ms(now), limit], from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let mut claimed = Vec::with_capacity(due.len());
            for (record, _) in due {
                exec(
                    conn,
                    "UPDATE commands SET lease_ms = ?2 WHERE id = ?1",
                    params![record.command_id, until],
                )?;
                claimed.push(record);
            }
            Ok(claimed)
        })
    }

    fn claim_queued<'a>(
        &'a self,
        device_id: &'a str,
        batch: LeaseBatch,
    ) -> BoxFuture<'a, Result<Vec<CommandRecord>, StoreError>> {
        let (now, until) = (batch.now, ms(batch.until()));
        let device = device_id.to_owned();
        let limit = i64::try_from(batch.limit).unwrap_or(i64::MAX);
        self.submit(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM commands WHERE status = 'queued' AND device_id = ?1 \
                 ORDER BY created_ms, id LIMIT ?2"
            ))?;
            let queued = stmt
                .query_map(params![device, limit], from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let mut claimed = Vec::with_capacity(queued.len());
            for (mut record, lease) in queued {
                if lease.is_some_and(|t| t > now) {
                    // Another claimer is delivering this device's queue: leave it all to
                    // it (nothing written yet, so nothing to undo).
                    return Ok(Vec::new());
                }
                if apply_expiry(&mut record, now) {
                    update(conn, &record, None)?;
                    continue;
                }
                claimed.push(record);
            }
            for record in &claimed {
                exec(
                    conn,
                    "UPDATE commands SET lease_ms = ?2 WHERE id = ?1",
                    params![record.command_id, until],
                )?;
            }
            Ok(claimed)
        })
    }

    fn queued_devices(&self, now: DateTime<Utc>) -> BoxFuture<'_, Result<Vec<String>, StoreError>> {
        self.submit(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT DISTINCT device_id FROM commands WHERE status = 'queued' \
                 AND expires_ms > ?1 ORDER BY device_id",
            )?;
            let devices = stmt
                .query_map([ms(now)], |row| row.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(devices)
        })
    }

    fn count_queued(&self, now: DateTime<Utc>) -> BoxFuture<'_, Result<u64, StoreError>> {
        self.submit(move |conn| {
            let n: i64 = query_row(
                conn,
                "SELECT count(*) FROM commands WHERE status = 'queued' AND expires_ms > ?1",
                [ms(now)],
                |row| row.get(0),
            )?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
    }

    fn idem_begin<'a>(
        &'a self,
        request: IdemRequest<'a>,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<IdemBegin, StoreError>> {
        let (key, fingerprint) = (request.store_key(), request.fingerprint);
        self.submit(move |conn| {
            let found = query_row(
                conn,
                "SELECT fingerprint, status, body FROM idempotency \
                     WHERE key = ?1 AND expires_ms > ?2",
                params![key, ms(now)],
                |r| {
                    Ok((
                        r.get::<_, Vec<u8>>(0)?,
                        r.get::<_, Option<u16>>(1)?,
                        r.get::<_, Option<Vec<u8>>>(2)?,
                    ))
                },
            )
            .optional()?;
            Ok(match found {
                Some((stored, _, _)) if stored != fingerprint => IdemBegin::Mismatch,
                Some((_, Some(status), body)) => IdemBegin::Replay {
                    status,
                    body: body.unwrap_or_default(),
                },
                Some((_, None, _)) => IdemBegin::InProgress,
                None => {
                    exec(
                        conn,
                        "INSERT OR REPLACE INTO idempotency (key, fingerprint, status, body, \
                         expires_ms) VALUES (?1, ?2, NULL, NULL, ?3)",
                        params![
                            key,
                            &fingerprint[..],
                            ms(millis(add(now, IDEM_IN_PROGRESS_TIMEOUT)))
                        ],
                    )?;
                    IdemBegin::New
                }
            })
        })
    }

    fn idem_finish<'a>(
        &'a self,
        answer: IdemAnswer<'a>,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let (key, fingerprint) = (answer.request.store_key(), answer.request.fingerprint);
        let expires_ms = ms(millis(add(now, answer.ttl)));
        self.submit(move |conn| {
            exec(
                conn,
                "INSERT OR REPLACE INTO idempotency (key, fingerprint, status, body, expires_ms) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    key,
                    &fingerprint[..],
                    answer.status,
                    answer.body,
                    expires_ms
                ],
            )?;
            Ok(())
        })
    }

    fn idem_abort<'a>(&'a self, request: IdemRequest<'a>) -> BoxFuture<'a, Result<(), StoreError>> {
        let key = request.store_key();
        self.submit(move |conn| {
            exec(
                conn,
                "DELETE FROM idempotency WHERE key = ?1 AND status IS NULL",
                [key],
            )?;
            Ok(())
        })
    }

    fn purge(&self, now: DateTime<Utc>) -> BoxFuture<'_, Result<u64, StoreError>> {
        let retention = self.settings.retention;
        self.submit(move |conn| {
            // final_ms + retention <= now, as `is_dropped` says, on the indexed column.
            let cutoff = chrono::TimeDelta::from_std(retention)
                .ok()
                .and_then(|r| now.checked_sub_signed(r))
                .map_or(i64::MIN, ms);
            let records = exec(conn, "DELETE FROM commands WHERE final_ms <= ?1", [cutoff])?;
            let keys = exec(
                conn,
                "DELETE FROM idempotency WHERE expires_ms <= ?1",
                [ms(now)],
            )?;
            Ok(u64::try_from(records + keys).unwrap_or(u64::MAX))
        })
    }

    fn schedule_create(
        &self,
        record: ScheduleRecord,
        max_per_device: usize,
    ) -> BoxFuture<'_, Result<ScheduleCreated, StoreError>> {
        self.submit(move |conn| file_schedules::create(conn, record, max_per_device))
    }

    fn schedule_get<'a>(
        &'a self,
        schedule_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<ScheduleRecord>, StoreError>> {
        let id = schedule_id.to_owned();
        self.submit(move |conn| file_schedules::get(conn, &id))
    }

    fn schedule_list<'a>(
        &'a self,
        device_id: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<ScheduleRecord>, StoreError>> {
        let device = device_id.map(str::to_owned);
        self.submit(move |conn| file_schedules::list(conn, device.as_deref()))
    }

    fn schedule_replace(
        &self,
        record: ScheduleRecord,
        expected_version: u64,
    ) -> BoxFuture<'_, Result<ScheduleWrite, StoreError>> {
        self.submit(move |conn| file_schedules::replace(conn, record, expected_version))
    }

    fn schedule_delete<'a>(
        &'a self,
        schedule_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<ScheduleRecord>, StoreError>> {
        let id = schedule_id.to_owned();
        self.submit(move |conn| file_schedules::delete(conn, &id))
    }

    fn schedule_due(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<ScheduleRecord>, StoreError>> {
        self.submit(move |conn| file_schedules::due(conn, now, limit))
    }

    fn schedule_count_enabled(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        self.submit(file_schedules::count_enabled)
    }

    fn is_ready(&self) -> bool {
        // A writer thread that ended (it would only by a panic) answers nothing more.
        self.healthy.load(Ordering::Relaxed)
            && self.writer.as_ref().is_some_and(|w| !w.is_finished())
            && self.integrity.check_if_due().is_ok()
    }

    fn durable(&self) -> bool {
        true
    }
}
