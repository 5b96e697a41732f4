//! `StorageService`: the `Db` on a writer thread with group commit, argon2 on a small pool.

use crate::checkpoint::Checkpointer;
use crate::commits::CommitStats;
use crate::db::{Db, HashMode, Outcome, Work};
use crate::error::StoreError;
use crate::hash::Hasher;
use crate::job::{Finish, HashJob, Kind};
use breeze_core::RequestId;
use breeze_core::config::WorkBudget;
use breeze_core::storage::{StorageOp, StorageResult};
use std::panic::{self, AssertUnwindSafe};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{SystemTime, UNIX_EPOCH};

/// Most requests one transaction takes. Bounds the latency a batch adds to its first request
/// and the memory its results hold.
pub const MAX_BATCH: usize = 512;

type OnDone = Arc<dyn Fn(RequestId, StorageResult) + Send + Sync>;

enum Msg {
    Submit(RequestId, StorageOp),
    Hashed(RequestId, Kind, Finish),
    Shutdown,
}

/// Performs storage requests on threads of its own, for a host that must not block (the
/// tokio host). Knows nothing of any async runtime: results come back through `on_done`.
///
/// One writer thread owns the `Db`. It waits for a request, takes whatever else is queued (up
/// to `MAX_BATCH`), runs them in one transaction and, once that is committed, calls `on_done`
/// for each in order. `on_done` runs on the writer thread: it should only hand the result
/// over (to a channel, say), or it holds up every commit behind it.
///
/// Argon2 runs on a pool of `hash_threads` threads, never inside the writer's transaction.
/// So `Register`, `Authenticate` with a password and `ChangePassword` (the verifying
/// requests) go writer → pool → writer and may complete out of order with respect to
/// anything submitted around them. Every other request completes in submission order, and
/// each result is reported only after its writes are committed, so a request submitted
/// after a result was reported sees that write.
///
/// Both queues are bounded by the core's `WorkBudget`, which admits at most
/// `storage.total` requests (and `hashing.total` hashes) until their results are handled.
/// Each admitted request is in exactly one place at a time — the request queue, the
/// writer's batch, the hash-job queue, a hashing thread, the request queue again as
/// `Hashed`, then `on_done` — so the request queue never holds more than `storage.total`
/// (plus the one `Shutdown`) and the job queue never more than `hashing.total`. `submit`
/// therefore never waits; a full queue would mean the budget was broken, and is treated as
/// the broken invariant it is (ARCHITECTURE.md, Invariants).
pub struct StorageService {
    queue: SyncSender<Msg>,
    writer: Option<JoinHandle<()>>,
    on_done: OnDone,
    commits: Arc<CommitStats>,
}

impl std::fmt::Debug for StorageService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StorageService")
            .field("running", &self.writer.is_some())
            .finish_non_exhaustive()
    }
}

impl StorageService {
    /// Starts the writer and `hash_threads` hashing threads (at least one), with queues
    /// sized for the core's `budget`: submit no more than it admits. Fails only if the
    /// operating system refuses a thread.
    pub fn start(
        mut db: Db,
        hasher: Hasher,
        hash_threads: usize,
        budget: WorkBudget,
        on_done: impl Fn(RequestId, StorageResult) + Send + Sync + 'static,
    ) -> Result<StorageService, StoreError> {
        let on_done: OnDone = Arc::new(on_done);
        let hasher = Arc::new(hasher);
        // One more for `Shutdown`.
        let (queue, inbox) = mpsc::sync_channel::<Msg>(budget.storage.capacity() + 1);
        let (jobs, job_inbox) =
            mpsc::sync_channel::<(RequestId, HashJob)>(budget.hashing.capacity());
        let job_inbox = Arc::new(Mutex::new(job_inbox));

        let mut pool = Vec::new();
        for i in 0..hash_threads.max(1) {
            let job_inbox = Arc::clone(&job_inbox);
            let hasher = Arc::clone(&hasher);
            let back = queue.clone();
            let spawned = thread::Builder::new()
                .name(format!("breeze-store-hash-{i}"))
                .spawn(move || hash_loop(&job_inbox, &hasher, &back));
            match spawned {
                Ok(handle) => pool.push(handle),
                Err(e) => {
                    // Closing the job queue lets the threads already started end.
                    drop(jobs);
                    for handle in pool {
                        let _ = handle.join();
                    }
                    return Err(StoreError::Spawn(e));
                }
            }
        }

        let commits = db.commit_stats();
        let checkpointer = Checkpointer::start(&mut db.conn, db.busy_timeout);
        let writer_on_done = Arc::clone(&on_done);
        let writer = thread::Builder::new()
            .name("breeze-store-writer".to_owned())
            .spawn(move || {
                write_loop(db, checkpointer, &hasher, &inbox, jobs, &*writer_on_done);
                for handle in pool {
                    if handle.join().is_err() {
                        tracing::error!("a password hashing thread panicked");
                    }
                }
            })
            .map_err(StoreError::Spawn)?;
        Ok(StorageService {
            queue,
            writer: Some(writer),
            on_done,
            commits,
        })
    }

    /// How the writer's commits go (latency, failures), for metrics and readiness.
    pub fn commit_stats(&self) -> Arc<CommitStats> {
        Arc::clone(&self.commits)
    }

    /// Queues a request without waiting; its result comes back through `on_done`.
    ///
    /// # Panics
    /// If more requests are in flight than the budget the service was started with.
    pub fn submit(&self, id: RequestId, op: StorageOp) {
        let kind = Kind::of(&op);
        match self.queue.try_send(Msg::Submit(id, op)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                panic!("invariant: more storage requests in flight than the work budget admits")
            }
            // Only after the writer died of a panic: still answer, or the core waits forever.
            Err(TrySendError::Disconnected(_)) => {
                (self.on_done)(id, kind.failed("storage writer stopped"));
            }
        }
    }

    /// False once the writer thread has ended: after `shutdown`, or if it died of a panic.
    pub fn is_running(&self) -> bool {
        self.writer.as_ref().is_some_and(|w| !w.is_finished())
    }

    /// Finishes everything submitted so far (hashing included), commits it, reports it and
    /// joins the threads. Dropping the service does the same.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let Some(writer) = self.writer.take() else {
            return;
        };
        let _ = self.queue.send(Msg::Shutdown);
        if writer.join().is_err() {
            tracing::error!("the storage writer panicked");
        }
    }
}

impl Drop for StorageService {
    fn drop(&mut self) {
        self.stop();
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn write_loop(
    mut db: Db,
    checkpointer: Option<Checkpointer>,
    hasher: &Hasher,
    inbox: &Receiver<Msg>,
    jobs: SyncSender<(RequestId, HashJob)>,
    on_done: &(dyn Fn(RequestId, StorageResult) + Send + Sync),
) {
    let mut hashing = 0usize;
    let mut stopping = false;
    // Requests submitted before `Shutdown` are ahead of it in the queue; after it, only the
    // pool's answers can arrive, and `hashing` counts those still due.
    while !(stopping && hashing == 0) {
        let Ok(first) = inbox.recv() else {
            break;
        };
        let queued = std::iter::from_fn(|| inbox.try_recv().ok());
        let mut batch = Vec::new();
        for msg in std::iter::once(first).chain(queued).take(MAX_BATCH) {
            match msg {
                Msg::Submit(id, op) => batch.push((id, Work::Op(op))),
                Msg::Hashed(id, kind, finish) => {
                    hashing -= 1;
                    batch.push((id, Work::Hashed(kind, finish)));
                }
                Msg::Shutdown => stopping = true,
            }
        }
        if batch.is_empty() {
            continue;
        }
        let outcomes = db.run_batch(batch, now_ms(), hasher, HashMode::Defer);
        for (id, outcome) in outcomes {
            match outcome {
                Outcome::Done(result) => on_done(id, result),
                Outcome::Hash(job) => {
                    let kind = job.kind();
                    match jobs.try_send((id, job)) {
                        Ok(()) => hashing += 1,
                        Err(TrySendError::Full(_)) => {
                            panic!("invariant: more hashes in flight than the work budget admits")
                        }
                        Err(TrySendError::Disconnected(_)) => {
                            on_done(id, kind.failed("password hashing stopped"));
                        }
                    }
                }
            }
        }
        // After the results are out, so this batch does not wait for it.
        if let Some(checkpointer) = &checkpointer {
            checkpointer.catch_up(&db.conn);
        }
    }
}

fn hash_loop(
    job_inbox: &Mutex<Receiver<(RequestId, HashJob)>>,
    hasher: &Hasher,
    back: &SyncSender<Msg>,
) {
    loop {
        // The lock guards only the handing out of jobs, so poisoning leaves nothing torn.
        let next = job_inbox
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .recv();
        let Ok((id, job)) = next else {
            return;
        };
        let kind = job.kind();
        // A panic must still answer, or the writer would wait for this job forever.
        let finish = panic::catch_unwind(AssertUnwindSafe(|| job.run(hasher)))
            .unwrap_or_else(|_| Finish::Done(kind.failed("password hashing panicked")));
        // Never waits: the request's own place in the queue is free (see `StorageService`).
        // Even if it did, the writer it waits for never waits for this thread.
        if back.send(Msg::Hashed(id, kind, finish)).is_err() {
            return;
        }
    }
}
