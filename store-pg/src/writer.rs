//! The ordered writer: the plain writes (`SetContacts`, `StoreMessage`, `MarkDelivered`,
//! `SetBanned`) of one node, applied in the order the core emitted them, a batch per transaction.
//!
//! The storage contract asks that plain writes be applied and reported in emission order,
//! and each reported only once committed. One task per node does them in turn; other nodes'
//! writers run concurrently against the same database, arbitrated by it (`ops.rs`).

use crate::error::PgError;
use crate::store::PgStore;
use crate::{ops, rooms};
use breeze_core::RequestId;
use breeze_core::storage::{StorageOp, StorageResult};
use breeze_store::job::Kind;
use deadpool_postgres::GenericClient;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_postgres::error::SqlState;

/// Most requests one transaction takes, as in the SQLite store (`breeze_store::MAX_BATCH`):
/// it bounds the latency a batch adds to its first request and the memory its results hold.
pub const MAX_BATCH: usize = breeze_store::MAX_BATCH;

/// How often a batch is run again after the database chose it as a deadlock victim (two
/// nodes marking the same user's messages in different orders, say). Nothing of it was
/// committed, so running it again is safe.
const RETRIES: usize = 3;

pub(crate) type OnDone = Arc<dyn Fn(RequestId, StorageResult) + Send + Sync>;

/// One plain write and the time it was submitted at.
pub(crate) struct Write {
    pub id: RequestId,
    pub op: StorageOp,
    pub now_ms: u64,
}

pub(crate) async fn write_loop(store: PgStore, mut inbox: mpsc::Receiver<Write>, on_done: OnDone) {
    while let Some(first) = inbox.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match inbox.try_recv() {
                Ok(w) => batch.push(w),
                Err(_) => break,
            }
        }
        for (id, result) in run_batch(&store, &batch).await {
            on_done(id, result);
        }
    }
}

/// Runs `batch` in one transaction and reports what each item did, once committed. If the
/// transaction cannot commit, each item runs again in a transaction of its own, so that one
/// request the database refuses fails alone rather than taking the batch with it.
async fn run_batch(store: &PgStore, batch: &[Write]) -> Vec<(RequestId, StorageResult)> {
    let fail_all = |why: &str| {
        batch
            .iter()
            .map(|w| (w.id, Kind::of(&w.op).failed(why)))
            .collect()
    };
    let mut client = match store.client().await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "no database connection for a storage batch");
            return fail_all("database unreachable");
        }
    };
    let mut attempt = 0;
    let error = loop {
        match in_transaction(&mut client, batch).await {
            Ok(results) => return results,
            // The commit's fate is unknown: nothing can be run again safely, and nothing can
            // be reported as done.
            Err(Failure::Commit(e)) => {
                tracing::warn!(error = %e, batch = batch.len(), "storage commit failed");
                return fail_all("commit failed");
            }
            Err(Failure::Before(e)) if retryable(&e) && attempt < RETRIES => {
                attempt += 1;
                tracing::info!(error = %e, attempt, "storage batch retried");
            }
            Err(Failure::Before(e)) => break e,
        }
    };
    if batch.len() == 1 {
        tracing::warn!(error = %error, kind = ?Kind::of(&batch[0].op), "storage request failed");
        return fail_all("storage request failed");
    }
    tracing::warn!(error = %error, batch = batch.len(), "storage batch failed; items run alone");
    let mut out = Vec::with_capacity(batch.len());
    for item in batch {
        let one = std::slice::from_ref(item);
        match in_transaction(&mut client, one).await {
            Ok(mut results) => out.append(&mut results),
            Err(Failure::Commit(e) | Failure::Before(e)) => {
                tracing::warn!(error = %e, kind = ?Kind::of(&item.op), "storage request failed");
                out.push((item.id, Kind::of(&item.op).failed("storage request failed")));
            }
        }
    }
    out
}

enum Failure {
    /// Before `COMMIT` was sent: the transaction is rolled back.
    Before(PgError),
    /// `COMMIT` itself failed (a lost connection, say): it may or may not have happened.
    Commit(PgError),
}

fn retryable(e: &PgError) -> bool {
    let PgError::Db(e) = e else { return false };
    matches!(
        e.code(),
        Some(&SqlState::T_R_DEADLOCK_DETECTED | &SqlState::T_R_SERIALIZATION_FAILURE)
    )
}

async fn in_transaction(
    client: &mut deadpool_postgres::Client,
    batch: &[Write],
) -> Result<Vec<(RequestId, StorageResult)>, Failure> {
    let tx = client
        .transaction()
        .await
        .map_err(|e| Failure::Before(e.into()))?;
    // Lock order: the message counter first, before any row (see `ops::reserve_seqs`).
    let messages = batch
        .iter()
        .filter(|w| matches!(w.op, StorageOp::StoreMessage { .. }))
        .count();
    let mut next_seq = if messages > 0 {
        ops::reserve_seqs(&tx, messages)
            .await
            .map_err(Failure::Before)?
    } else {
        0
    };
    ops::prepare_pipelined(&tx).await.map_err(Failure::Before)?;
    let mut out = Vec::with_capacity(batch.len());
    // Runs of single-statement writes are pipelined: every statement of the run is sent
    // before the first answer is awaited, and PostgreSQL runs them in the order sent. One
    // round trip per message, awaited in turn, held the writer to ~4,000 msg/s on loopback
    // (BENCHMARKS.md). `SetContacts` reads before it writes, so it runs alone, in its place.
    for run in batch.chunk_by(|a, b| pipelined(&a.op) && pipelined(&b.op)) {
        // Each message gets the next reserved seq, in batch order.
        let seqs: Vec<i64> = run
            .iter()
            .map(|w| match w.op {
                StorageOp::StoreMessage { .. } => {
                    next_seq += 1;
                    next_seq - 1
                }
                _ => 0,
            })
            .collect();
        let results = futures_util::future::try_join_all(
            run.iter()
                .zip(seqs)
                .map(|(w, seq)| apply(&tx, &w.op, w.now_ms, seq)),
        )
        .await
        .map_err(Failure::Before)?;
        out.extend(run.iter().map(|w| w.id).zip(results));
    }
    tx.commit().await.map_err(|e| Failure::Commit(e.into()))?;
    Ok(out)
}

/// One plain write; `seq` is the one reserved for it if it stores a message. Any other
/// request here would be a routing bug (`is_plain_write`).
async fn apply(
    c: &impl GenericClient,
    op: &StorageOp,
    now_ms: u64,
    seq: i64,
) -> Result<StorageResult, PgError> {
    use StorageResult as R;
    Ok(match op {
        StorageOp::SetContacts { user, add, remove } => {
            R::ContactsSet(ops::set_contacts(c, user, add, remove).await?)
        }
        StorageOp::StoreMessage {
            from,
            to,
            id,
            body,
            attachment,
        } => R::MessageStored(
            ops::store_message(c, from, to, *id, body, attachment.as_ref(), now_ms, seq).await?,
        ),
        StorageOp::MarkDelivered { user, seqs } => {
            ops::mark_delivered(c, user, seqs).await?;
            R::DeliveredMarked(Ok(()))
        }
        StorageOp::SetBanned { user, banned } => {
            R::BannedSet(ops::set_banned(c, user, *banned).await?)
        }
        StorageOp::CreateRoom {
            owner,
            name,
            max_rooms,
        } => R::RoomCreated(rooms::create(c, owner, name, *max_rooms, now_ms).await?),
        StorageOp::ChangeRoom {
            by,
            room,
            user,
            change,
            max_members,
            max_rooms,
        } => R::RoomChanged(
            rooms::change(c, by, *room, user, *change, (*max_members, *max_rooms)).await?,
        ),
        StorageOp::StoreRoomMessage {
            room,
            from,
            id,
            body,
        } => R::RoomMessageStored(rooms::store(c, *room, from, *id, body, now_ms).await?),
        StorageOp::MarkRoomRead { user, reads } => {
            rooms::mark_read(c, user, reads).await?;
            R::RoomReadMarked(Ok(()))
        }
        other => {
            unreachable!("invariant: only plain writes reach the writer, not {other:?}")
        }
    })
}

/// Whether `op` is one statement (as long as it is not a duplicate, whose first copy is then
/// read), so that it can be sent without waiting for the answers to those before it.
fn pipelined(op: &StorageOp) -> bool {
    matches!(
        op,
        StorageOp::StoreMessage { .. } | StorageOp::MarkDelivered { .. }
    )
}

/// Whether `op` goes through the ordered writer.
pub(crate) fn is_plain_write(op: &StorageOp) -> bool {
    matches!(
        op,
        StorageOp::SetContacts { .. }
            | StorageOp::StoreMessage { .. }
            | StorageOp::MarkDelivered { .. }
            | StorageOp::SetBanned { .. }
            | StorageOp::CreateRoom { .. }
            | StorageOp::ChangeRoom { .. }
            | StorageOp::StoreRoomMessage { .. }
            | StorageOp::MarkRoomRead { .. }
    )
}
