//! The simulation's storage: the real `breeze_store::Db`, behind a backend the plan can make
//! slow or failing.
//!
//! The database belongs to the simulation, not to the server host, so it survives the
//! server's crash and restart exactly as a file on disk would. While the storage is healthy
//! each request is applied inline in `submit` and answered at once, so results keep request
//! order and a crash loses only what the core had not been told yet.
//!
//! A bad spell ([`StorageFaults`]) makes some requests fail without changing anything (the
//! core answers the client `StorageFailed`) and holds results back for a simulated delay
//! ([`crate::completions`]): either the write lands when its result comes (a slow disk) or it
//! is committed at once and only the answer is late, so that a server crash in between loses
//! the answer but not the write. Late results are released by a task on the server host, so
//! a crash loses whatever it still held, as it would lose a real store's queue. Every choice
//! comes from a generator seeded by the plan and drawn in request order, and the hasher is
//! seeded, so a seed replays byte for byte.

use crate::completions::{self, Completion, Completions, Work};
use crate::oracle::{self, Shared, now};
use crate::plan::Rng;
use breeze_core::RequestId;
use breeze_core::storage::{StorageError, StorageOp, StorageResult};
use breeze_store::{Db, Hasher};
use breeze_transport_tokio::{ResultSender, StorageBackend};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// How the storage behaves: healthy, or in a bad spell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StorageFaults {
    /// Each result comes back after a delay drawn from this range.
    pub slow: Option<(Duration, Duration)>,
    /// Slow writes are committed at once and only their answers are late.
    pub commit_first: bool,
    /// Percent of requests that fail, changing nothing.
    pub failing: u8,
}

impl StorageFaults {
    pub const HEALTHY: StorageFaults = StorageFaults {
        slow: None,
        commit_first: false,
        failing: 0,
    };

    pub fn is_healthy(&self) -> bool {
        *self == StorageFaults::HEALTHY
    }
}

/// The storage's condition and the generator its faults are drawn from.
#[derive(Debug)]
struct Condition {
    faults: StorageFaults,
    rng: Rng,
}

/// The database, hasher and condition shared by every incarnation of the server.
#[derive(Debug, Clone)]
pub struct SharedStore {
    pub db: Arc<Mutex<Db>>,
    pub hasher: Arc<Hasher>,
    condition: Arc<Mutex<Condition>>,
}

/// What a bad spell does to one request.
#[derive(Debug, Clone, Copy)]
struct Fate {
    fails: bool,
    delay: Duration,
    commit_first: bool,
}

impl SharedStore {
    /// `seed` seeds the draws of the faults.
    pub fn new(db: Db, hasher: Hasher, seed: u64) -> SharedStore {
        SharedStore {
            db: Arc::new(Mutex::new(db)),
            hasher: Arc::new(hasher),
            condition: Arc::new(Mutex::new(Condition {
                faults: StorageFaults::HEALTHY,
                rng: Rng::new(seed ^ 0xD15C_FA17_0000_0000),
            })),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, Db> {
        self.db.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn condition(&self) -> MutexGuard<'_, Condition> {
        self.condition
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub fn faults(&self) -> StorageFaults {
        self.condition().faults
    }

    pub fn set_faults(&self, faults: StorageFaults) {
        self.condition().faults = faults;
    }

    /// The fate of the next request. Draws nothing while healthy, so that seeds without
    /// storage faults run as they did before there were any.
    fn fate(&self) -> Fate {
        let mut c = self.condition();
        let faults = c.faults;
        let fails = faults.failing > 0 && c.rng.chance(u64::from(faults.failing));
        let delay = faults
            .slow
            .map_or(Duration::ZERO, |(lo, hi)| c.rng.between(lo, hi));
        Fate {
            fails,
            delay,
            commit_first: faults.commit_first,
        }
    }

    /// Performs a request now, stamping messages with simulated time.
    pub(crate) fn apply(&self, id: RequestId, op: StorageOp) -> StorageResult {
        let now_ms = turmoil::since_epoch()
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        self.lock().apply(id, op, now_ms, &self.hasher)
    }

    fn complete(&self, results: &ResultSender, id: RequestId, work: Work) {
        let result = match work {
            Work::Apply(op) => self.apply(id, op),
            Work::Answer(result) => result,
        };
        // A host that is gone (crashed mid-batch) loses the answer, as a real one would.
        let _ = results.send(id, result);
    }
}

/// The backend of one server incarnation.
#[derive(Debug)]
pub struct SimStorage {
    store: SharedStore,
    results: ResultSender,
    /// Hears of failures and late results; `None` where the storage stays healthy (the
    /// cluster simulation), which makes neither.
    oracle: Option<Shared>,
    late: Arc<Mutex<Completions>>,
    wake: Arc<Notify>,
}

impl SimStorage {
    /// The backend, and the task that releases its late results: run that on the server
    /// host, so that a crash ends it and loses what it held.
    pub fn new(
        store: SharedStore,
        results: ResultSender,
        oracle: Option<Shared>,
    ) -> (SimStorage, impl Future<Output = ()> + Send + 'static) {
        let late = Arc::new(Mutex::new(Completions::default()));
        let wake = Arc::new(Notify::new());
        let release = release(
            store.clone(),
            results.clone(),
            oracle.clone(),
            late.clone(),
            wake.clone(),
        );
        let backend = SimStorage {
            store,
            results,
            oracle,
            late,
            wake,
        };
        (backend, release)
    }

    fn late(&self) -> MutexGuard<'_, Completions> {
        lock_late(&self.late)
    }
}

fn lock_late(late: &Mutex<Completions>) -> MutexGuard<'_, Completions> {
    late.lock().unwrap_or_else(PoisonError::into_inner)
}

impl StorageBackend for SimStorage {
    fn submit(&mut self, id: RequestId, op: StorageOp) {
        let fate = self.store.fate();
        let in_order = completions::in_order(&op);
        let at = Instant::now();
        let (due, inline) = {
            let late = self.late();
            let due = late.due(at, fate.delay, in_order);
            (
                due,
                due <= at && (!in_order || late.nothing_in_order_waits()),
            )
        };
        if fate.fails
            && let Some(o) = &self.oracle
        {
            oracle::lock(o).storage_failed(now(), &op);
        }
        let what = format!("{op:?}");
        let work = if fate.fails {
            Work::Answer(op.failed(StorageError::Failed("simulated storage fault".into())))
        } else if inline || (fate.commit_first && in_order && !self.late().a_write_in_order_waits())
        {
            Work::Answer(self.store.apply(id, op))
        } else {
            Work::Apply(op)
        };
        if inline {
            return self.store.complete(&self.results, id, work);
        }
        let committed = matches!(work, Work::Answer(_)) && !fate.fails;
        if let Some(o) = &self.oracle {
            oracle::lock(o).trace(
                now(),
                format_args!(
                    "storage: {what}{} answers in {:?}",
                    if committed { " committed," } else { "" },
                    due - at
                ),
            );
        }
        self.late()
            .push(due, in_order, Completion { id, what, work });
        self.wake.notify_one();
    }
}

/// Hands each late result to the host when it is due.
async fn release(
    store: SharedStore,
    results: ResultSender,
    oracle: Option<Shared>,
    late: Arc<Mutex<Completions>>,
    wake: Arc<Notify>,
) {
    loop {
        let next = lock_late(&late).next_due();
        match next {
            // A submit in between leaves a permit: the wake-up is not lost.
            None => wake.notified().await,
            Some(due) => {
                tokio::select! {
                    biased;
                    () = wake.notified() => {}
                    () = tokio::time::sleep_until(due) => {}
                }
            }
        }
        let at = Instant::now();
        loop {
            let Some(c) = lock_late(&late).pop_due(at) else {
                break;
            };
            if let Some(o) = &oracle {
                oracle::lock(o).trace(now(), format_args!("storage: {} answered", c.what));
            }
            store.complete(&results, c.id, c.work);
        }
    }
}
