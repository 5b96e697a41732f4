//! The synchronous store: one SQLite connection, one transaction per batch.

use crate::commits::CommitStats;
use crate::error::StoreError;
use crate::hash::Hasher;
use crate::job::{Finish, HashJob, Kind};
use crate::joined_wal;
use crate::lock::{self, DbLock};
use crate::ops::{self, Step};
use crate::schema;
use breeze_core::storage::{StorageOp, StorageResult};
use breeze_core::{RequestId, UserId};
use rusqlite::{Connection, OpenFlags, TransactionBehavior};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// SQLite's `synchronous` setting.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum Synchronous {
    /// Every commit reaches the disk before it is reported: a `Sent` survives power loss.
    #[default]
    Full,
    /// With WAL, a power loss (not a crash of the process) can lose the last commits, though
    /// never corrupt the database. Messages already acknowledged with `Sent` may vanish.
    Normal,
}

#[derive(Clone, Debug)]
pub struct DbOptions {
    pub synchronous: Synchronous,
    /// How long to wait for a lock held by another connection (a backup tool, a second
    /// process) before failing.
    pub busy_timeout: Duration,
    /// Report each new message's predecessor in its recipient's mailbox (`Stored::prev`): one
    /// more index probe per message, 5 % of the server's CPU per message at 10,000 msg/s. Only
    /// a cluster node uses it, and clusters run on PostgreSQL; here it serves the cluster
    /// simulation and the storage contract. Off, `prev` is `None` and a node would read.
    pub report_prev: bool,
}

impl Default for DbOptions {
    fn default() -> Self {
        DbOptions {
            synchronous: Synchronous::Full,
            busy_timeout: Duration::from_secs(5),
            report_prev: false,
        }
    }
}

/// A Breeze database. Performs `StorageOp`s synchronously; see `StorageService` for the
/// threaded form a real host uses.
#[derive(Debug)]
pub struct Db {
    pub(crate) conn: Connection,
    pub(crate) busy_timeout: Duration,
    /// One server per file (`lock.rs`); none for a private in-memory database.
    _lock: Option<DbLock>,
    /// How commits go, for metrics and readiness.
    commits: Arc<CommitStats>,
    /// `DbOptions::report_prev`.
    report_prev: bool,
}

/// What `Db::backup` wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackupReport {
    pub pages: u64,
    pub bytes: u64,
}

/// How many lines of a damage report an error carries: the first say what is wrong.
const DAMAGE_LINES: usize = 5;

/// A unit of work in a batch: a request from the core, or the second half of one whose
/// hashing has been done elsewhere.
pub(crate) enum Work {
    Op(StorageOp),
    Hashed(Kind, Finish),
}

impl Work {
    fn kind(&self) -> Kind {
        match self {
            Work::Op(op) => Kind::of(op),
            Work::Hashed(kind, _) => *kind,
        }
    }

    /// Whether failing halfway could leave part of this item's writes behind. The rest write
    /// at most one statement (SQLite undoes a failed statement by itself), or only mark
    /// messages delivered (any part of which is true): they run without a savepoint, which
    /// cost two extra statements per message and a sixth of the server's CPU at chat
    /// saturation.
    fn needs_savepoint(&self) -> bool {
        match self {
            // Token logins write at once; password ones do after hashing (inline, in
            // `apply_batch`), as does a change of password.
            Work::Op(StorageOp::SetContacts { add, remove, .. }) => add.len() + remove.len() > 1,
            // An avatar row, the profile row, and the old avatar's removal.
            Work::Op(StorageOp::SetProfile { .. }) => true,
            Work::Op(op) => matches!(
                op,
                StorageOp::Authenticate { .. }
                    | StorageOp::ChangePassword { .. }
                    | StorageOp::ChangeGroups { .. }
            ),
            Work::Hashed(_, finish) => {
                matches!(finish, Finish::Login { .. } | Finish::ChangePassword { .. })
            }
        }
    }
}

/// How a batch item ended.
pub(crate) enum Outcome {
    Done(StorageResult),
    /// Committed so far; the hashing is the caller's to do (only with `HashMode::Defer`).
    Hash(HashJob),
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum HashMode {
    Inline,
    Defer,
}

/// Prepared statements kept per connection; comfortably above the statements in `ops.rs`.
const STATEMENT_CACHE: usize = 64;

impl Db {
    /// Opens (creating if need be), checks and migrates the database at `path`, holding its
    /// lock (`lock.rs`) for as long as the `Db` lives: a second server on the same file is
    /// refused with `StoreError::InUse`. A damaged file is refused with
    /// `StoreError::Damaged` rather than served from: logins would silently miss stored
    /// messages, and sends fail one by one.
    pub fn open(path: &Path, opts: &DbOptions) -> Result<Db, StoreError> {
        let lock = lock::lock(path)?;
        // Only at `FULL`: the joined writes are made at each commit's `xSync` (`joined_wal`).
        let conn = if opts.synchronous == Synchronous::Full && joined_wal::available() {
            Connection::open_with_flags_and_vfs(path, OpenFlags::default(), joined_wal::NAME)?
        } else {
            Connection::open(path)?
        };
        conn.busy_timeout(opts.busy_timeout)?;
        check_integrity(&conn)?;
        Db::setup(conn, opts, Some(lock))
    }

    /// A private database that lives as long as this `Db`: for tests and simulations.
    pub fn open_in_memory(opts: &DbOptions) -> Result<Db, StoreError> {
        Db::setup(Connection::open_in_memory()?, opts, None)
    }

    /// Copies the database at `src` to a new file `dest` with SQLite's online backup, which
    /// reads a consistent snapshot while a server goes on writing (it takes no `lock.rs`
    /// lock), then checks the copy. Restoring is copying `dest` back over a stopped server's
    /// database, after removing its `-wal` and `-shm` files.
    pub fn backup(
        src: &Path,
        dest: &Path,
        busy_timeout: Duration,
    ) -> Result<BackupReport, StoreError> {
        if dest.exists() {
            return Err(StoreError::BackupExists(dest.to_path_buf()));
        }
        // Without CREATE: a mistyped source must not become a new, empty database.
        let from = Connection::open_with_flags(
            src,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        from.busy_timeout(busy_timeout)?;
        let mut to = Connection::open(dest)?;
        {
            let backup = rusqlite::backup::Backup::new(&from, &mut to)?;
            // Pages a step, with a pause between steps so the server's writer gets the lock.
            backup.run_to_completion(1024, Duration::from_millis(5), None)?;
        }
        check_integrity(&to)?;
        let pages: i64 = to.pragma_query_value(None, "page_count", |row| row.get(0))?;
        let page_size: i64 = to.pragma_query_value(None, "page_size", |row| row.get(0))?;
        Ok(BackupReport {
            pages: pages.max(0) as u64,
            bytes: (pages * page_size).max(0) as u64,
        })
    }

    fn setup(
        mut conn: Connection,
        opts: &DbOptions,
        lock: Option<DbLock>,
    ) -> Result<Db, StoreError> {
        conn.busy_timeout(opts.busy_timeout)?;
        let mode: String =
            conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
        // In-memory databases report "memory"; anything else keeps working, just slower and
        // with readers blocking the writer.
        if !mode.eq_ignore_ascii_case("wal") && !mode.eq_ignore_ascii_case("memory") {
            tracing::warn!(%mode, "SQLite refused WAL mode");
        }
        let sync = match opts.synchronous {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
        };
        conn.pragma_update(None, "synchronous", sync)?;
        conn.pragma_update(None, "foreign_keys", true)?;
        // Every statement the store runs stays prepared: rusqlite's default cache of 16 is
        // smaller than the store's set of statements, and re-parsing SQL on every login and
        // message was a third of the server's instructions in the benchmark's profile.
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        schema::migrate(&mut conn)?;
        Ok(Db {
            conn,
            busy_timeout: opts.busy_timeout,
            _lock: lock,
            commits: Arc::default(),
            report_prev: opts.report_prev,
        })
    }

    /// How this database's commits go (shared: read it from any thread).
    pub fn commit_stats(&self) -> Arc<CommitStats> {
        Arc::clone(&self.commits)
    }

    /// The schema version of the open database (after migration, `SCHEMA_VERSION`).
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        schema::user_version(&self.conn)
    }

    /// Every registered user, sorted.
    pub fn users(&self) -> Result<Vec<UserId>, StoreError> {
        ops::users(&self.conn)
    }

    /// Performs `ops` in order in one transaction, hashing inline, and reports once it is
    /// committed: all of it is durable, or none of it (then every result is
    /// `StorageError::Failed`). A request that fails on its own fails alone.
    ///
    /// `now_ms` stamps stored messages and tokens; passing it in keeps simulations
    /// deterministic.
    pub fn apply_batch(
        &mut self,
        ops: Vec<(RequestId, StorageOp)>,
        now_ms: u64,
        hasher: &Hasher,
    ) -> Vec<(RequestId, StorageResult)> {
        let work = ops.into_iter().map(|(id, op)| (id, Work::Op(op))).collect();
        self.run_batch(work, now_ms, hasher, HashMode::Inline)
            .into_iter()
            .map(|(id, outcome)| match outcome {
                Outcome::Done(result) => (id, result),
                // `Inline` finishes every job; should one slip through, it must not vanish.
                Outcome::Hash(job) => (id, job.kind().failed("internal: unfinished hash")),
            })
            .collect()
    }

    /// `apply_batch` for a single request.
    pub fn apply(
        &mut self,
        id: RequestId,
        op: StorageOp,
        now_ms: u64,
        hasher: &Hasher,
    ) -> StorageResult {
        let kind = Kind::of(&op);
        self.apply_batch(vec![(id, op)], now_ms, hasher)
            .pop()
            .map_or_else(|| kind.failed("internal: no result"), |(_, result)| result)
    }

    /// The group commit both `apply_batch` and the service's writer use. An item that fails
    /// fails alone: SQLite undoes a failed statement, and an item of several writes runs
    /// under its own savepoint, so it leaves nothing behind while the rest of the batch
    /// commits.
    pub(crate) fn run_batch(
        &mut self,
        items: Vec<(RequestId, Work)>,
        now_ms: u64,
        hasher: &Hasher,
        mode: HashMode,
    ) -> Vec<(RequestId, Outcome)> {
        let kinds: Vec<(RequestId, Kind)> = items.iter().map(|(id, w)| (*id, w.kind())).collect();
        let commits = Arc::clone(&self.commits);
        // Every way a whole batch fails: the store cannot write now (readiness says so).
        let fail_all = |why: &str| {
            commits.failed();
            kinds
                .iter()
                .map(|&(id, kind)| (id, Outcome::Done(kind.failed(why))))
                .collect()
        };
        let report_prev = self.report_prev;
        // Immediate: take the write lock now rather than fail to upgrade a read lock midway.
        let mut tx = match self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
        {
            Ok(tx) => tx,
            Err(e) => {
                tracing::warn!(error = %e, "could not begin a storage transaction");
                return fail_all("could not begin a transaction");
            }
        };
        let mut out = Vec::with_capacity(items.len());
        for (id, work) in items {
            let kind = work.kind();
            let closed = if work.needs_savepoint() {
                let mut sp = match tx.savepoint() {
                    Ok(sp) => sp,
                    Err(e) => {
                        tracing::warn!(error = %e, "could not begin a savepoint");
                        return fail_all("could not begin a savepoint");
                    }
                };
                match run_one(&sp, work, now_ms, hasher, mode, report_prev) {
                    Ok(outcome) => {
                        out.push((id, outcome));
                        sp.commit()
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, ?kind, "storage request failed");
                        out.push((id, Outcome::Done(kind.failed("storage request failed"))));
                        sp.rollback().and_then(|()| sp.commit())
                    }
                }
            } else {
                match run_one(&tx, work, now_ms, hasher, mode, report_prev) {
                    Ok(outcome) => out.push((id, outcome)),
                    Err(e) => {
                        tracing::warn!(error = %e, ?kind, "storage request failed");
                        out.push((id, Outcome::Done(kind.failed("storage request failed"))));
                    }
                }
                Ok(())
            };
            if let Err(e) = closed {
                // The transaction's state is unknown; only dropping it all is safe.
                tracing::warn!(error = %e, "could not close a savepoint");
                return fail_all("storage transaction failed");
            }
            // Some errors (a full disk, I/O) make SQLite roll the whole transaction back on
            // its own; what ran before is gone, and what follows would commit one by one.
            if tx.is_autocommit() {
                tracing::warn!(?kind, "SQLite rolled the storage transaction back");
                return fail_all("storage transaction rolled back");
            }
        }
        let started = std::time::Instant::now();
        if let Err(e) = tx.commit() {
            tracing::warn!(error = %e, batch = kinds.len(), "storage commit failed");
            return fail_all("commit failed");
        }
        self.commits.committed(started.elapsed());
        out
    }
}

/// SQLite's `quick_check`: every page and index entry well-formed (not the slower full
/// `integrity_check`, which also cross-checks indexes against tables). It reads the whole
/// file once.
fn check_integrity(conn: &Connection) -> Result<(), StoreError> {
    let report = || -> rusqlite::Result<Vec<String>> {
        let mut stmt = conn.prepare("PRAGMA quick_check")?;
        stmt.query_map([], |row| row.get::<_, String>(0))?
            .take(DAMAGE_LINES)
            .collect()
    };
    match report() {
        Ok(report) if report.len() == 1 && report[0] == "ok" => Ok(()),
        Ok(report) => Err(StoreError::Damaged(report.join("; "))),
        // A header so damaged that SQLite will not read on is damage too, not a mystery.
        Err(
            e @ rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error {
                    code: rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt,
                    ..
                },
                _,
            ),
        ) => Err(StoreError::Damaged(e.to_string())),
        Err(e) => Err(e.into()),
    }
}

fn run_one(
    conn: &Connection,
    work: Work,
    now_ms: u64,
    hasher: &Hasher,
    mode: HashMode,
    report_prev: bool,
) -> Result<Outcome, StoreError> {
    let step = match work {
        Work::Op(op) => ops::start(conn, op, now_ms, hasher, report_prev)?,
        Work::Hashed(_, finish) => Step::Done(ops::finish(conn, finish, now_ms, hasher)?),
    };
    Ok(match (step, mode) {
        (Step::Done(result), _) => Outcome::Done(result),
        (Step::Hash(job), HashMode::Inline) => {
            Outcome::Done(ops::finish(conn, job.run(hasher), now_ms, hasher)?)
        }
        (Step::Hash(job), HashMode::Defer) => Outcome::Hash(job),
    })
}
