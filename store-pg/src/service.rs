//! `PgService`: performs the core's storage requests against a `PgStore` without ever
//! blocking the task that submits them.
//!
//! Where each request goes, and why that keeps the storage contract
//! (`breeze_core::storage`):
//! - plain writes go to the ordered writer (`writer.rs`): applied, committed and reported in
//!   emission order;
//! - reads (`LoadMailbox`, `LoadHistory`) run at once on a pooled connection, side by side.
//!   A read must reflect every write reported before it was emitted; a write is reported
//!   only after its commit, and a statement started after a commit sees it (READ COMMITTED);
//! - verifying requests (`Register`, `Authenticate`, `ChangePassword`) read on a pooled
//!   connection, hash on tokio's blocking pool (argon2 takes a login's worth of CPU and must
//!   not stall the runtime), at most `hash_threads` at once, and write their verdict in a
//!   transaction of their own. The contract lets them complete in any order.

use crate::error::PgError;
use crate::ops;
use crate::store::PgStore;
use crate::writer::{self, OnDone, Write};
use breeze_core::RequestId;
use breeze_core::config::WorkBudget;
use breeze_core::message::Credential;
use breeze_core::storage::{StorageOp, StorageResult};
use breeze_store::job::{Finish, HashJob, Kind};
use breeze_store::{CommitStats, Hasher};
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::{JoinHandle, JoinSet};

/// Milliseconds since the Unix epoch, as the service stamps messages and tokens with.
pub type NowMs = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The system clock, as a server stamps requests.
pub fn system_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

enum Msg {
    Submit(RequestId, StorageOp, u64),
    Shutdown,
}

/// Performs storage requests on tasks of its own; results come back through `on_done`,
/// called on those tasks (it should only hand the result over).
///
/// Its queues are bounded by the core's `WorkBudget` as the SQLite service's are: every
/// admitted request is in one place at a time, so `submit` never finds a queue full; if it
/// did, the budget was broken, and it panics (ARCHITECTURE.md, Invariants).
pub struct PgService {
    queue: mpsc::Sender<Msg>,
    clock: NowMs,
    task: Option<JoinHandle<()>>,
    on_done: OnDone,
    commits: Arc<CommitStats>,
}

impl std::fmt::Debug for PgService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgService")
            .field("running", &self.is_running())
            .finish_non_exhaustive()
    }
}

impl PgService {
    /// Starts the service's tasks on the current tokio runtime. `clock` stamps each request
    /// when it is submitted (the system clock in a server; a test's own in the contract
    /// suite).
    pub fn start(
        store: PgStore,
        hasher: Hasher,
        hash_threads: usize,
        budget: WorkBudget,
        clock: NowMs,
        on_done: impl Fn(RequestId, StorageResult) + Send + Sync + 'static,
    ) -> PgService {
        let on_done: OnDone = Arc::new(on_done);
        // One more for `Shutdown`.
        let (queue, inbox) = mpsc::channel(budget.storage.capacity() + 1);
        let commits = Arc::new(CommitStats::default());
        let dispatcher = Dispatcher {
            store,
            hasher: Arc::new(hasher),
            hashing: Arc::new(Semaphore::new(hash_threads.max(1))),
            on_done: Arc::clone(&on_done),
            capacity: budget.storage.capacity(),
            commits: Arc::clone(&commits),
        };
        PgService {
            queue,
            clock,
            task: Some(tokio::spawn(dispatcher.run(inbox))),
            on_done,
            commits,
        }
    }

    /// How the writer's transactions go, for `/metrics` and `/readyz`, as the SQLite store's
    /// commits do.
    pub fn commit_stats(&self) -> Arc<CommitStats> {
        Arc::clone(&self.commits)
    }

    /// Queues a request without waiting; its result comes back through `on_done`.
    ///
    /// # Panics
    /// If more requests are in flight than the budget the service was started with.
    pub fn submit(&self, id: RequestId, op: StorageOp) {
        let kind = Kind::of(&op);
        match self.queue.try_send(Msg::Submit(id, op, (self.clock)())) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                panic!("invariant: more storage requests in flight than the work budget admits")
            }
            // Only after the service died of a panic: still answer, or the core waits forever.
            Err(mpsc::error::TrySendError::Closed(_)) => {
                (self.on_done)(id, kind.failed("storage service stopped"));
            }
        }
    }

    /// False once the service has ended: after `shutdown`, or if it died of a panic.
    pub fn is_running(&self) -> bool {
        self.task.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Finishes everything submitted so far (hashing included), commits it and reports it.
    pub async fn shutdown(mut self) {
        let Some(task) = self.task.take() else { return };
        let _ = self.queue.send(Msg::Shutdown).await;
        if task.await.is_err() {
            tracing::error!("the PostgreSQL storage service panicked");
        }
    }
}

struct Dispatcher {
    store: PgStore,
    hasher: Arc<Hasher>,
    hashing: Arc<Semaphore>,
    on_done: OnDone,
    capacity: usize,
    commits: Arc<CommitStats>,
}

impl Dispatcher {
    async fn run(self, mut inbox: mpsc::Receiver<Msg>) {
        let (writes, writes_inbox) = mpsc::channel(self.capacity.max(1));
        let writer = tokio::spawn(writer::write_loop(
            self.store.clone(),
            writes_inbox,
            Arc::clone(&self.on_done),
            Arc::clone(&self.commits),
        ));
        let mut tasks = JoinSet::new();
        // Which request each task answers, so that a task that panics still answers it.
        let mut answering: BTreeMap<tokio::task::Id, (RequestId, Kind)> = BTreeMap::new();
        loop {
            tokio::select! {
                msg = inbox.recv() => match msg {
                    Some(Msg::Submit(id, op, now_ms)) if writer::is_plain_write(&op) => {
                        if let Err(e) = writes.try_send(Write { id, op, now_ms }) {
                            match e {
                                mpsc::error::TrySendError::Full(_) => panic!(
                                    "invariant: more storage writes queued than the budget admits"
                                ),
                                // The writer panicked; end the service with it.
                                mpsc::error::TrySendError::Closed(w) => {
                                    (self.on_done)(w.id, Kind::of(&w.op).failed("storage writer stopped"));
                                    break;
                                }
                            }
                        }
                    }
                    Some(Msg::Submit(id, op, now_ms)) => {
                        let kind = Kind::of(&op);
                        let handle = tasks.spawn(self.one(id, op, now_ms));
                        answering.insert(handle.id(), (id, kind));
                    }
                    Some(Msg::Shutdown) | None => break,
                },
                Some(joined) = tasks.join_next_with_id(), if !tasks.is_empty() => {
                    self.joined(joined, &mut answering);
                }
            }
        }
        // Everything submitted before `Shutdown` is in the writer's queue or a task.
        drop(writes);
        if writer.await.is_err() {
            tracing::error!("the PostgreSQL storage writer panicked");
        }
        while let Some(joined) = tasks.join_next_with_id().await {
            self.joined(joined, &mut answering);
        }
    }

    fn joined(
        &self,
        joined: Result<(tokio::task::Id, ()), tokio::task::JoinError>,
        answering: &mut BTreeMap<tokio::task::Id, (RequestId, Kind)>,
    ) {
        match joined {
            Ok((task, ())) => {
                answering.remove(&task);
            }
            Err(e) => {
                if let Some((id, kind)) = answering.remove(&e.id()) {
                    tracing::error!(?kind, "a storage request panicked");
                    (self.on_done)(id, kind.failed("storage request panicked"));
                }
            }
        }
    }

    /// A read or a verifying request, on a connection of its own.
    fn one(
        &self,
        id: RequestId,
        op: StorageOp,
        now_ms: u64,
    ) -> impl Future<Output = ()> + Send + 'static {
        let store = self.store.clone();
        let hasher = Arc::clone(&self.hasher);
        let hashing = Arc::clone(&self.hashing);
        let on_done = Arc::clone(&self.on_done);
        async move {
            let kind = Kind::of(&op);
            let result = perform(&store, &hasher, &hashing, op, now_ms)
                .await
                .unwrap_or_else(|e| {
                    tracing::warn!(error = %e, ?kind, "storage request failed");
                    kind.failed(match e {
                        PgError::Unreachable(_) => "database unreachable",
                        _ => "storage request failed",
                    })
                });
            on_done(id, result);
        }
    }
}

async fn perform(
    store: &PgStore,
    hasher: &Arc<Hasher>,
    hashing: &Arc<Semaphore>,
    op: StorageOp,
    now_ms: u64,
) -> Result<StorageResult, PgError> {
    use StorageResult as R;
    let mut client = store.client().await?;
    let job = match op {
        StorageOp::LoadMailbox {
            user,
            after,
            all_above,
            limit,
            max_bytes,
        } => {
            let page = ops::mailbox(&client, &user, after, all_above, limit, max_bytes).await?;
            return Ok(R::MailboxLoaded(Ok(page)));
        }
        StorageOp::LoadHistory {
            user,
            with,
            before,
            limit,
        } => {
            let items = ops::history(&client, &user, &with, before, limit).await?;
            return Ok(R::HistoryLoaded(Ok(items)));
        }
        StorageOp::LoadProfiles { users } => {
            let cards = crate::profiles::load_profiles(&client, users).await?;
            return Ok(R::ProfilesLoaded(Ok(cards)));
        }
        StorageOp::LoadProfile { user, avatar } => {
            let r = crate::profiles::load_profile(&client, user, avatar).await?;
            return Ok(R::ProfileLoaded(r));
        }
        StorageOp::LoadRooms { user } => {
            return Ok(R::RoomsLoaded(Ok(
                crate::rooms::of_user(&client, &user).await?
            )));
        }
        StorageOp::LoadRoom {
            user,
            room,
            range,
            limit,
        } => {
            let r = crate::rooms::load(&client, &user, room, range, limit).await?;
            return Ok(R::RoomLoaded(r));
        }
        StorageOp::Authenticate {
            user,
            credential: Credential::Token(token),
            ..
        } => {
            let tx = client.transaction().await?;
            let account = ops::resume(&tx, &user, &token, now_ms, hasher).await?;
            tx.commit().await?;
            return Ok(R::Authenticated(account));
        }
        StorageOp::Register { user, password } => {
            // Checked here as well as at the insert so a taken name costs no hash.
            if ops::user_exists(&client, &user).await? {
                return Ok(R::Registered(Err(
                    breeze_core::storage::StorageError::UserTaken,
                )));
            }
            HashJob::Register { user, password }
        }
        StorageOp::Authenticate {
            user,
            credential: Credential::Password(password),
            issue_token,
        } => HashJob::Login {
            stored: ops::password_hash(&client, &user).await?,
            user,
            password,
            issue_token,
        },
        StorageOp::ChangePassword { user, old, new } => HashJob::ChangePassword {
            stored: ops::password_hash(&client, &user).await?,
            user,
            old,
            new,
        },
        write => unreachable!("invariant: plain writes go to the writer, not {write:?}"),
    };
    // The connection goes back to the pool while argon2 runs.
    drop(client);
    let kind = job.kind();
    let finish = {
        let _permit = hashing
            .acquire()
            .await
            .map_err(|_| PgError::Pool("the hashing limit was closed".to_owned()))?;
        let hasher = Arc::clone(hasher);
        match tokio::task::spawn_blocking(move || job.run(&hasher)).await {
            Ok(finish) => finish,
            Err(_) => Finish::Done(kind.failed("password hashing panicked")),
        }
    };
    if let Finish::Done(result) = finish {
        return Ok(result);
    }
    let mut client = store.client().await?;
    let tx = client.transaction().await?;
    let result = ops::finish(&tx, finish, now_ms, hasher).await?;
    tx.commit().await?;
    Ok(result)
}
