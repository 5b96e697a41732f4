//! WAL checkpoints on a thread of their own, so the writer never stops long for one.
//!
//! SQLite's automatic checkpoint runs inside the commit that crosses its threshold (1,000
//! WAL pages): that commit copies the pages into the database file and fsyncs it, 2 to 4 ms
//! at 10,000 messages a second, while every request behind it waits. That was the chat
//! latency's tail. Here the writer's automatic checkpoint is off; its WAL hook counts commits
//! and the frames they leave in the WAL, and every so often (`STEP_COMMITS`, `MAX_STEP`) a
//! thread, on a second connection, runs a `PASSIVE` checkpoint, which never blocks the
//! writer. But a writer that
//! never pauses never lets the WAL start over, so once the WAL holds more than
//! `CATCH_UP_ABOVE` frames the writer runs one passive checkpoint itself between two batches.
//! The thread has copied nearly everything by then, so that catch-up is short (the last few
//! commits' pages and one fsync), and the writer's next transaction starts the WAL from its
//! beginning: the file is reused, not grown.

use crate::error::StoreError;
use rusqlite::Connection;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// WAL frames (pages, 4 KiB each by default) past which the writer catches up and lets the
/// WAL start over: 32 MiB.
const CATCH_UP_ABOVE: i64 = 8_192;
/// The thread checkpoints after this many commits, or sooner once the WAL has grown by
/// `MAX_STEP` frames. Counting commits keeps the pages left for the writer's catch-up few at
/// moderate rates (small commits of a few frames each), while at saturation, where one
/// commit writes dozens of frames, the frame bound keeps checkpoints (each an fsync of the
/// database file and a copy of hot pages) no more frequent than SQLite's own: a checkpoint every
/// 128 frames had cost a tenth more CPU per message there.
const STEP_COMMITS: u32 = 32;
const MAX_STEP: i64 = 2_048;

#[derive(Debug, Default)]
struct Signal {
    state: Mutex<State>,
    wake: Condvar,
    /// Frames in the WAL after the writer's last commit.
    frames: AtomicI64,
}

#[derive(Debug, Default)]
struct State {
    /// Enough was committed since the last checkpoint began.
    due: bool,
    stop: bool,
}

impl Signal {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Only flags live under this lock; a panic elsewhere cannot leave them torn.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn ring(&self) {
        let mut state = self.lock();
        if !state.due {
            state.due = true;
            drop(state);
            self.wake.notify_one();
        }
    }
}

/// Owns the checkpoint thread; dropping it stops the thread after the checkpoint in progress.
#[derive(Debug)]
pub(crate) struct Checkpointer {
    signal: Arc<Signal>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Takes checkpoints over from `writer`, if it is a file database in WAL mode (in-memory
    /// databases have no WAL). On any failure the writer keeps its automatic checkpoints.
    pub(crate) fn start(writer: &mut Connection, busy_timeout: Duration) -> Option<Checkpointer> {
        match Checkpointer::try_start(writer, busy_timeout) {
            Ok(started) => started,
            Err(e) => {
                tracing::warn!(error = %e, "no checkpoint thread; the writer checkpoints itself");
                if let Err(e) = writer.pragma_update(None, "wal_autocheckpoint", 1000) {
                    tracing::warn!(error = %e, "could not restore automatic checkpoints");
                }
                None
            }
        }
    }

    fn try_start(
        writer: &mut Connection,
        busy_timeout: Duration,
    ) -> Result<Option<Checkpointer>, StoreError> {
        let path = match writer.path() {
            Some(path) if !path.is_empty() => path.to_owned(),
            _ => return Ok(None),
        };
        let mode: String = writer.pragma_query_value(None, "journal_mode", |row| row.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Ok(None);
        }
        let conn = Connection::open(&path)?;
        conn.busy_timeout(busy_timeout)?;
        // The same durability as the writer's: a checkpoint syncs the database file as the
        // writer's own would have.
        let sync: i64 = writer.pragma_query_value(None, "synchronous", |row| row.get(0))?;
        conn.pragma_update(None, "synchronous", sync)?;
        let signal = Arc::new(Signal::default());
        let thread = thread::Builder::new()
            .name("breeze-store-checkpoint".to_owned())
            .spawn({
                let signal = Arc::clone(&signal);
                move || checkpoint_loop(&conn, &signal)
            })
            .map_err(StoreError::Spawn)?;
        let checkpointer = Checkpointer {
            signal: Arc::clone(&signal),
            thread: Some(thread),
        };
        // Turning automatic checkpoints off replaces the WAL hook, so it comes first.
        writer.pragma_update(None, "wal_autocheckpoint", 0)?;
        let (mut rung_at, mut commits) = (0, 0u32);
        writer.wal_hook(Some(move |_: &mut rusqlite::hooks::Wal, frames| {
            let frames = i64::from(frames);
            signal.frames.store(frames, Ordering::Relaxed);
            if frames < rung_at {
                // The WAL started over.
                rung_at = 0;
            }
            commits += 1;
            if commits >= STEP_COMMITS || frames - rung_at >= MAX_STEP {
                (rung_at, commits) = (frames, 0);
                signal.ring();
            }
            Ok(())
        }))?;
        Ok(Some(checkpointer))
    }

    /// Called by the writer between batches, on its own connection: if the WAL has grown
    /// past `CATCH_UP_ABOVE`, copies what the thread has not yet, so the next transaction
    /// starts the WAL over.
    pub(crate) fn catch_up(&self, writer: &Connection) {
        if self.signal.frames.load(Ordering::Relaxed) <= CATCH_UP_ABOVE {
            return;
        }
        match checkpoint(writer) {
            // Until the next commit reports the fresh WAL.
            Ok(_) => self.signal.frames.store(0, Ordering::Relaxed),
            Err(e) => tracing::warn!(error = %e, "WAL checkpoint failed"),
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.signal.lock().stop = true;
        self.signal.wake.notify_one();
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the checkpoint thread panicked");
        }
    }
}

fn checkpoint_loop(conn: &Connection, signal: &Signal) {
    loop {
        {
            let mut state = signal.lock();
            while !state.due && !state.stop {
                state = signal
                    .wake
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            if state.stop {
                return;
            }
            state.due = false;
        }
        if let Err(e) = checkpoint(conn) {
            tracing::warn!(error = %e, "WAL checkpoint failed");
        }
    }
}

/// Runs one passive checkpoint; how many frames the WAL holds.
fn checkpoint(conn: &Connection) -> Result<i64, StoreError> {
    // Columns: whether it was blocked, frames in the WAL, frames now in the database file.
    Ok(conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| row.get(1))?)
}
