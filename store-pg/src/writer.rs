//! The ordered writer: the plain writes (`SetContacts`, `StoreMessage`, `MarkDelivered`,
//! `SetBanned`) of one node, applied in the order the core emitted them, a batch per transaction.
//!
//! The storage contract asks that plain writes be applied and reported in emission order,
//! and each reported only once committed. One task per node does them in turn; other nodes'
//! writers run concurrently against the same database, arbitrated by it (`ops.rs`).

use crate::error::PgError;
use crate::ops::Written;
use crate::store::PgStore;
use crate::{ops, rooms};
use breeze_core::storage::{StorageOp, StorageResult};
use breeze_core::{RequestId, UserId};
use breeze_store::CommitStats;
use breeze_store::job::Kind;
use deadpool_postgres::GenericClient;
use std::collections::BTreeMap;
use std::pin::Pin;
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

/// The longest a batch of read marks alone waits for another write to go with it.
const MARKS_WAIT: std::time::Duration = std::time::Duration::from_millis(2);

pub(crate) type OnDone = Arc<dyn Fn(RequestId, StorageResult) + Send + Sync>;

/// One plain write and the time it was submitted at.
pub(crate) struct Write {
    pub id: RequestId,
    pub op: StorageOp,
    pub now_ms: u64,
}

/// Applies the writes from `inbox` in order and reports each through `on_done`; `commits`
/// keeps how long each transaction took and whether the last one failed (`/metrics`,
/// `/readyz`).
pub(crate) async fn write_loop(
    store: PgStore,
    mut inbox: mpsc::Receiver<Write>,
    on_done: OnDone,
    commits: Arc<CommitStats>,
) {
    while let Some((batch, next)) = next_batch(&mut inbox).await {
        for batch in [Some(batch), next.map(|w| vec![w])].into_iter().flatten() {
            let results = if is_stepwise(&batch[0].op) {
                step_by_step(&store, &batch[0], &commits).await
            } else {
                run_batch(&store, &batch, &commits).await
            };
            for (id, result) in results {
                on_done(id, result);
            }
        }
    }
}

/// The next transaction's writes, in the order submitted, and the stepwise write that ended
/// them if one did (it runs alone, next); `None` once the inbox is closed and empty.
///
/// Read marks alone wait up to `MARKS_WAIT` for another write to share their transaction: at
/// 5,000 cross-node msg/s two of every five transactions were marks alone, each with
/// PostgreSQL's fixed cost per transaction (BENCHMARKS.md, cluster). Nobody waits for a mark
/// but its session's next mailbox page, and the first other write to come ends the wait, so
/// no message waits for it.
async fn next_batch(inbox: &mut mpsc::Receiver<Write>) -> Option<(Vec<Write>, Option<Write>)> {
    let mut batch = vec![inbox.recv().await?];
    let mut next = None;
    take_queued(inbox, &mut batch, &mut next);
    if next.is_some() || !batch.iter().all(|w| is_read_mark(&w.op)) {
        return Some((batch, next));
    }
    let until = tokio::time::Instant::now() + MARKS_WAIT;
    while batch.len() < MAX_BATCH {
        // Closed (shutting down) or waited long enough: the marks go as they are.
        let Ok(Some(w)) = tokio::time::timeout_at(until, inbox.recv()).await else {
            break;
        };
        if is_stepwise(&w.op) {
            next = Some(w);
            break;
        }
        let mark = is_read_mark(&w.op);
        batch.push(w);
        if !mark {
            take_queued(inbox, &mut batch, &mut next);
            break;
        }
    }
    Some((batch, next))
}

/// Adds what is queued behind `batch[0]` to it, up to `MAX_BATCH`. A write of several
/// statements runs alone (`step_by_step`), in its place: it ends the batch, as `next`.
fn take_queued(
    inbox: &mut mpsc::Receiver<Write>,
    batch: &mut Vec<Write>,
    next: &mut Option<Write>,
) {
    while batch.len() < MAX_BATCH && !is_stepwise(&batch[0].op) {
        match inbox.try_recv() {
            Ok(w) if is_stepwise(&w.op) => {
                *next = Some(w);
                break;
            }
            Ok(w) => batch.push(w),
            Err(_) => break,
        }
    }
}

/// Whether `op` only records what a client has read: nobody waits for it but the session's
/// next mailbox page, and losing it means a redelivery that clients dedupe (PROTOCOL.md §13.2).
fn is_read_mark(op: &StorageOp) -> bool {
    matches!(
        op,
        StorageOp::MarkDelivered { .. } | StorageOp::MarkRoomRead { .. }
    )
}

/// Whether `op` reads before it writes, over several statements (`ChangeGroups` checks the
/// user's groups under the account's row lock; a room write checks the member's role and, for
/// a message, draws the room's next seq under its row lock): it cannot go in a flight, which
/// sends the `COMMIT` before the answers come back.
fn is_stepwise(op: &StorageOp) -> bool {
    matches!(
        op,
        StorageOp::ChangeGroups { .. }
            | StorageOp::CreateRoom { .. }
            | StorageOp::ChangeRoom { .. }
            | StorageOp::StoreRoomMessage { .. }
    )
}

/// Runs one stepwise write alone in a transaction, awaiting each statement in turn.
async fn step_by_step(
    store: &PgStore,
    w: &Write,
    commits: &CommitStats,
) -> Vec<(RequestId, StorageResult)> {
    let failed = |why: &str| vec![(w.id, Kind::of(&w.op).failed(why))];
    let mut client = match store.client().await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "no database connection for a storage request");
            failed_write(store, commits, &e);
            return failed("database unreachable");
        }
    };
    let done = async {
        let started = std::time::Instant::now();
        let tx = client.transaction().await.map_err(PgError::from)?;
        let result = apply_stepwise(&tx, &w.op, w.now_ms).await?;
        tx.commit().await.map_err(PgError::from)?;
        commits.committed(started.elapsed());
        Ok::<_, PgError>(result)
    }
    .await;
    match done {
        Ok(result) => vec![(w.id, result)],
        Err(e) => {
            tracing::warn!(error = %e, kind = ?Kind::of(&w.op), "storage request failed");
            failed_write(store, commits, &e);
            failed("storage request failed")
        }
    }
}

/// After a write failed with `e`. If the database answered it as a refusal of the
/// statement (a constraint, say), it is up and writing, whatever it made of this request:
/// nothing more. Any other error (no connection, a lost one, a pool that cannot hand one out)
/// means the store cannot write now: `/readyz` says so until a transaction commits again,
/// and the idle connections, which lived through the same outage, are closed.
fn failed_write(store: &PgStore, commits: &CommitStats, e: &PgError) {
    let refused = matches!(e, PgError::Db(e) if e.as_db_error().is_some());
    if !refused {
        commits.failed();
        store.forget_idle();
    }
}

/// One stepwise write, inside the caller's transaction.
async fn apply_stepwise(
    c: &impl GenericClient,
    op: &StorageOp,
    now_ms: u64,
) -> Result<StorageResult, PgError> {
    use StorageResult as R;
    Ok(match op {
        StorageOp::ChangeGroups {
            user,
            change,
            max_groups,
        } => R::GroupsChanged(crate::groups::change_groups(c, user, change, *max_groups).await?),
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
        other => unreachable!("invariant: only stepwise writes come here, not {other:?}"),
    })
}

/// Runs `batch` in one transaction and reports what each item did, once committed. If the
/// transaction cannot commit, each item runs again in a transaction of its own, so that one
/// request the database refuses fails alone rather than taking the batch with it.
async fn run_batch(
    store: &PgStore,
    batch: &[Write],
    commits: &CommitStats,
) -> Vec<(RequestId, StorageResult)> {
    let fail_all = |why: &str| {
        batch
            .iter()
            .map(|w| (w.id, Kind::of(&w.op).failed(why)))
            .collect()
    };
    let client = match store.client().await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "no database connection for a storage batch");
            failed_write(store, commits, &e);
            return fail_all("database unreachable");
        }
    };
    let mut attempt = 0;
    let error = loop {
        match in_transaction(&client, batch, commits).await {
            Ok(results) => return results,
            // The commit's fate is unknown: nothing can be run again safely, and nothing can
            // be reported as done.
            Err(Failure::Commit(e)) => {
                tracing::warn!(error = %e, batch = batch.len(), "storage commit failed");
                failed_write(store, commits, &e);
                return fail_all("commit failed");
            }
            Err(Failure::Before(e)) if retryable(&e) && attempt < RETRIES => {
                attempt += 1;
                tracing::info!(error = %e, attempt, "storage batch retried");
            }
            Err(Failure::Before(e)) => break e,
        }
    };
    failed_write(store, commits, &error);
    if batch.len() == 1 {
        tracing::warn!(error = %error, kind = ?Kind::of(&batch[0].op), "storage request failed");
        return fail_all("storage request failed");
    }
    tracing::warn!(error = %error, batch = batch.len(), "storage batch failed; items run alone");
    let mut out = Vec::with_capacity(batch.len());
    for item in batch {
        let one = std::slice::from_ref(item);
        match in_transaction(&client, one, commits).await {
            Ok(mut results) => out.append(&mut results),
            Err(Failure::Commit(e) | Failure::Before(e)) => {
                tracing::warn!(error = %e, kind = ?Kind::of(&item.op), "storage request failed");
                failed_write(store, commits, &e);
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

/// A batch's statements in flight, answered in the order sent.
type InFlight<'a> = Pin<Box<dyn Future<Output = Result<Answer, PgError>> + Send + 'a>>;

enum Answer {
    /// `BEGIN`, `COMMIT`.
    Nothing,
    /// The batch's messages and acks.
    Batch(Written),
    /// Any other write.
    Write(StorageResult),
}

/// What each statement between `BEGIN` and `COMMIT` is for.
enum Step {
    /// Every message and ack of the batch.
    Batch,
    One(usize),
}

/// Runs `batch` as one transaction: its messages and acks in one statement
/// (`ops::write_batch`), alone if nothing else is in the batch (its own transaction), else in a
/// flight of `BEGIN`, that statement, one statement per other write and `COMMIT`, all written
/// before the first answer is awaited; PostgreSQL runs them in the order sent.
///
/// Why messages and acks together, not in the batch's order: a node's batch interleaves the
/// messages its users send with the acks of those it delivered, and one statement per run had a
/// flight send eight statements for ~25 writes, each with its fixed cost (`pg_stat_statements`
/// at 5,000 cross-node msg/s: 3.1 messages per insert at 613 µs, 1.4 seqs per ack at 107 µs;
/// BENCHMARKS.md). The order inside a transaction is seen by nobody but the transaction, and
/// these writes do not see each other: a message's insert depends only on the accounts (which
/// no plain write creates or deletes) and on earlier messages, which keep their order within
/// the statement; an ack names a seq delivered, so committed, before this batch (a client
/// acking a seq ahead of its delivery marks only its own message, early, which acking unread
/// messages does anyway); contacts, bans, profiles and room marks touch no message.
///
/// Why one flight, or one statement: the mailbox locks (schema 9) are held until the commit,
/// and other nodes' messages to those recipients wait for them. Awaited statement by
/// statement, a batch held its locks across four round trips to this process, each a wake-up on
/// a busy machine (the cluster-wide counter of schema 3 made that every other node's messages:
/// at 1,000 msg/s over 3 nodes PostgreSQL's backends were mostly waiting for it,
/// `Lock:transactionid` in `pg_stat_activity`, or "idle in transaction" holding it;
/// BENCHMARKS.md). In one flight, a lock is held for the statements' execution and the
/// commit's flush only; in one statement, the node is woken once for all of it.
///
/// `commits` gets the time from here to the commit's answer: with the statements sent in one
/// flight, the commit cannot be timed apart from them.
async fn in_transaction(
    client: &deadpool_postgres::Client,
    batch: &[Write],
    commits: &CommitStats,
) -> Result<Vec<(RequestId, StorageResult)>, Failure> {
    let c = client;
    let started = std::time::Instant::now();
    ops::prepare_writes(c).await.map_err(Failure::Before)?;
    // The batch's messages in order, each with its item; its acks; the rest.
    let (message_items, messages): (Vec<usize>, Vec<ops::NewMessage<'_>>) = batch
        .iter()
        .enumerate()
        .filter_map(|(i, w)| Some((i, new_message(w)?)))
        .unzip();
    let (mark_items, marks): (Vec<usize>, Vec<(&UserId, &[u64])>) = batch
        .iter()
        .enumerate()
        .filter_map(|(i, w)| match &w.op {
            StorageOp::MarkDelivered { user, seqs } => Some((i, (user, seqs.as_slice()))),
            _ => None,
        })
        .unzip();
    let others: Vec<usize> = (0..batch.len())
        .filter(|&i| {
            !matches!(
                batch[i].op,
                StorageOp::StoreMessage { .. } | StorageOp::MarkDelivered { .. }
            )
        })
        .collect();
    if others.is_empty() {
        // A batch of acknowledgements alone commits without waiting for its WAL flush: a mark
        // lost to a database crash in the next fraction of a second means the message is
        // delivered again, which an ack lost in flight already means, and clients dedupe by
        // seq (PROTOCOL.md §13.2). Whatever commits durably after it flushes it too (the WAL
        // is one sequence). Anything else in the batch, a message above all, waits for the
        // flush as ever. Half the commits of a chat are marks: their flushes kept the writer
        // (and the messages queued behind it) waiting ~3 ms each on a disk other jobs write to.
        let durable = !messages.is_empty();
        let written = match ops::write_batch(c, &messages, &marks, durable).await {
            Ok(written) => written,
            // The database refused it: its transaction, the statement's own, rolled back.
            Err(PgError::Db(e)) if e.as_db_error().is_some() => {
                return Err(Failure::Before(PgError::Db(e)));
            }
            // The connection failed: the commit's fate is unknown.
            Err(e) => return Err(Failure::Commit(e)),
        };
        commits.committed(started.elapsed());
        return finish(
            c,
            batch,
            &messages,
            &message_items,
            &mark_items,
            written,
            Vec::new(),
        )
        .await;
    }
    let mut steps = Vec::new();
    let mut flight: Vec<InFlight<'_>> = vec![Box::pin(async move {
        c.batch_execute("BEGIN").await?;
        Ok(Answer::Nothing)
    })];
    // The mailboxes first, before any row (schema 9).
    if !messages.is_empty() || !marks.is_empty() {
        let (messages, marks) = (&messages, &marks);
        steps.push(Step::Batch);
        flight.push(Box::pin(async move {
            Ok(Answer::Batch(
                ops::write_batch(c, messages, marks, true).await?,
            ))
        }));
    }
    for &item in &others {
        let op = &batch[item].op;
        steps.push(Step::One(item));
        flight.push(Box::pin(
            async move { Ok(Answer::Write(apply(c, op).await?)) },
        ));
    }
    flight.push(Box::pin(async move {
        c.batch_execute("COMMIT").await?;
        Ok(Answer::Nothing)
    }));

    let mut answers = futures_util::future::join_all(flight).await.into_iter();
    let begun = answers.next().expect("BEGIN was sent");
    let committed = answers.next_back().expect("COMMIT was sent");
    let answers: Vec<Result<Answer, PgError>> = answers.collect();
    if let Err(e) = begun {
        // Outside a transaction, whatever succeeded after it committed on its own.
        return Err(if answers.iter().any(Result::is_ok) {
            Failure::Commit(e)
        } else {
            Failure::Before(e)
        });
    }
    // The first error aborted the transaction (those after it only say so), and `COMMIT`
    // of an aborted transaction rolls it back without an error of its own.
    let answers: Vec<Answer> = answers
        .into_iter()
        .collect::<Result<_, _>>()
        .map_err(Failure::Before)?;
    committed.map_err(Failure::Commit)?;
    commits.committed(started.elapsed());

    let mut written = Written {
        highs: BTreeMap::new(),
        inserted: Vec::new(),
    };
    let mut done = Vec::new();
    for (step, answer) in steps.into_iter().zip(answers) {
        match (step, answer) {
            (Step::Batch, Answer::Batch(w)) => written = w,
            (Step::One(item), Answer::Write(result)) => done.push((item, result)),
            _ => unreachable!("invariant: each statement answers as its step expects"),
        }
    }
    finish(
        c,
        batch,
        &messages,
        &message_items,
        &mark_items,
        written,
        done,
    )
    .await
}

/// The results of a committed batch: its messages' and acks' from what `write_batch` answered,
/// the other writes' as given (`done`).
async fn finish(
    c: &deadpool_postgres::Client,
    batch: &[Write],
    messages: &[ops::NewMessage<'_>],
    message_items: &[usize],
    mark_items: &[usize],
    written: Written,
    done: Vec<(usize, StorageResult)>,
) -> Result<Vec<(RequestId, StorageResult)>, Failure> {
    let mut results: Vec<Option<StorageResult>> = vec![None; batch.len()];
    // Messages that inserted nothing: a resend, or an unknown user.
    let mut skipped = Vec::new();
    // Each recipient's latest seq: the highs read under the locks, then each message this
    // batch stored, in order (a batch's seqs rise in its order).
    let mut latest = written.highs;
    for ((m, &item), seq) in messages.iter().zip(message_items).zip(written.inserted) {
        match seq {
            Some(seq) => {
                let prev = latest
                    .insert(m.to.as_str().to_owned(), ops::u64_from_sql(seq))
                    .unwrap_or(0);
                results[item] = Some(StorageResult::MessageStored(Ok(ops::stored(m, seq, prev))));
            }
            None => skipped.push((item, m)),
        }
    }
    for &item in mark_items {
        results[item] = Some(StorageResult::DeliveredMarked(Ok(())));
    }
    for (item, result) in done {
        results[item] = Some(result);
    }
    // Read after the commit: the first copies are committed (in this batch or before) and
    // never change.
    for (item, m) in skipped {
        results[item] = Some(match ops::first_copy(c, m.from, m.id).await {
            Ok(found) => StorageResult::MessageStored(found),
            Err(e) => {
                tracing::warn!(error = %e, "reading a resent message's first copy failed");
                Kind::StoreMessage.failed("storage request failed")
            }
        });
    }
    Ok(batch
        .iter()
        .zip(results)
        .map(|(w, r)| (w.id, r.expect("invariant: every write answered")))
        .collect())
}

fn new_message(w: &Write) -> Option<ops::NewMessage<'_>> {
    match &w.op {
        StorageOp::StoreMessage {
            from,
            to,
            id,
            body,
            attachment,
        } => Some(ops::NewMessage {
            from,
            to,
            id: *id,
            body,
            attachment: attachment.as_ref(),
            now_ms: w.now_ms,
        }),
        _ => None,
    }
}

/// One plain write other than a message or an ack (those go in one statement each per batch),
/// in one statement. Any other request here would be a routing bug (`is_plain_write`).
async fn apply(c: &impl GenericClient, op: &StorageOp) -> Result<StorageResult, PgError> {
    use StorageResult as R;
    Ok(match op {
        StorageOp::SetContacts { user, add, remove } => {
            R::ContactsSet(ops::set_contacts(c, user, add, remove).await?)
        }
        StorageOp::SetBanned { user, banned } => {
            R::BannedSet(ops::set_banned(c, user, *banned).await?)
        }
        StorageOp::SetProfile { user, change } => {
            R::ProfileSet(crate::profiles::set_profile(c, user, change).await?)
        }
        StorageOp::MarkRoomRead { user, reads } => {
            rooms::mark_read(c, user, reads).await?;
            R::RoomReadMarked(Ok(()))
        }
        other => {
            unreachable!("invariant: only plain writes reach the writer, not {other:?}")
        }
    })
}

/// Whether `op` goes through the ordered writer.
pub(crate) fn is_plain_write(op: &StorageOp) -> bool {
    matches!(
        op,
        StorageOp::SetContacts { .. }
            | StorageOp::StoreMessage { .. }
            | StorageOp::MarkDelivered { .. }
            | StorageOp::SetBanned { .. }
            | StorageOp::ChangeGroups { .. }
            | StorageOp::SetProfile { .. }
            | StorageOp::CreateRoom { .. }
            | StorageOp::ChangeRoom { .. }
            | StorageOp::StoreRoomMessage { .. }
            | StorageOp::MarkRoomRead { .. }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::PgOptions;
    use breeze_core::UserId;
    use breeze_core::message::Attachment;
    use breeze_testsupport::pg::TestPg;

    fn user(name: &str) -> UserId {
        UserId::new(name).expect("valid name")
    }

    fn write(id: u64, op: StorageOp) -> Write {
        Write {
            id: RequestId(id),
            op,
            now_ms: 0,
        }
    }

    fn mark(id: u64) -> Write {
        let seqs = vec![id];
        write(
            id,
            StorageOp::MarkDelivered {
                user: user("bob"),
                seqs,
            },
        )
    }

    fn ids(batch: &[Write]) -> Vec<u64> {
        batch.iter().map(|w| w.id.0).collect()
    }

    /// Runs `next_batch` while `feed` submits writes at virtual times (ms after the start).
    async fn batch_of(feed: Vec<(u64, Write)>, close: bool) -> (Vec<u64>, Option<u64>, u64) {
        let (tx, mut rx) = mpsc::channel(64);
        let start = tokio::time::Instant::now();
        let sender = tokio::spawn(async move {
            for (at, w) in feed {
                tokio::time::sleep_until(start + std::time::Duration::from_millis(at)).await;
                tx.send(w).await.expect("writer listening");
            }
            if !close {
                // Keep the inbox open past any wait.
                tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
            }
        });
        let (batch, next) = next_batch(&mut rx).await.expect("a batch");
        let took = (tokio::time::Instant::now() - start).as_millis() as u64;
        sender.abort();
        (ids(&batch), next.map(|w| w.id.0), took)
    }

    #[tokio::test(start_paused = true)]
    async fn a_mark_alone_waits_for_a_write_to_share_its_transaction() {
        // A message a millisecond later joins it, and ends the wait.
        let (batch, next, took) = batch_of(
            vec![
                (0, mark(1)),
                (1, write(2, message("bob", "alice", 2, false))),
            ],
            false,
        )
        .await;
        assert_eq!((batch, next, took), (vec![1, 2], None, 1));
        // Marks that come meanwhile join it too; with nothing else, it goes after the wait.
        let (batch, next, took) = batch_of(vec![(0, mark(1)), (1, mark(2))], false).await;
        assert_eq!((batch, next), (vec![1, 2], None));
        assert_eq!(took, MARKS_WAIT.as_millis() as u64);
        // A write that arrives after the wait is not taken.
        let late = MARKS_WAIT.as_millis() as u64 + 1;
        let (batch, _, _) = batch_of(
            vec![
                (0, mark(1)),
                (late, write(2, message("bob", "alice", 2, false))),
            ],
            false,
        )
        .await;
        assert_eq!(batch, vec![1]);
        // At shutdown (the inbox closed) the marks go at once.
        let (batch, _, took) = batch_of(vec![(0, mark(1))], true).await;
        assert_eq!((batch, took), (vec![1], 0));
    }

    #[tokio::test(start_paused = true)]
    async fn only_marks_wait() {
        // A message first goes with what is queued, without waiting for the mark behind it.
        let (batch, _, took) = batch_of(
            vec![
                (0, write(1, message("bob", "alice", 1, false))),
                (1, mark(2)),
            ],
            false,
        )
        .await;
        assert_eq!((batch, took), (vec![1], 0));
        // A stepwise write ends the wait and runs alone, after the marks.
        let room = StorageOp::CreateRoom {
            owner: user("bob"),
            name: "r".into(),
            max_rooms: 10,
        };
        let (batch, next, took) = batch_of(vec![(0, mark(1)), (1, write(2, room))], false).await;
        assert_eq!((batch, next, took), (vec![1], Some(2), 1));
    }

    fn message(from: &str, to: &str, id: u64, attachment: bool) -> StorageOp {
        StorageOp::StoreMessage {
            from: user(from),
            to: user(to),
            id,
            body: format!("{from} #{id}"),
            attachment: attachment.then(|| Attachment {
                mime: "text/plain".into(),
                name: format!("{id}.txt"),
                data: vec![0, 1, 2, id as u8],
            }),
        }
    }

    /// Two batches: two first messages, then one batch of every kind of plain write, with a
    /// resend of the first message, a resend within the batch, a message to an unknown user,
    /// a mark of the first message, a mark by a user of a message not to them (it marks
    /// nothing) and a refused contact change among them.
    fn batches() -> [Vec<StorageOp>; 2] {
        let contacts = |add: &[&str], remove: &[&str]| StorageOp::SetContacts {
            user: user("alice"),
            add: add.iter().map(|n| user(n)).collect(),
            remove: remove.iter().map(|n| user(n)).collect(),
        };
        [
            vec![
                message("alice", "bob", 1, false),
                message("carol", "bob", 5, false),
            ],
            vec![
                message("bob", "alice", 7, true),
                message("alice", "bob", 1, true),
                message("alice", "bob", 2, false),
                message("alice", "bob", 2, true),
                message("alice", "nobody", 3, false),
                contacts(&["bob", "carol"], &["carol"]),
                message("alice", "bob", 4, false),
                StorageOp::MarkDelivered {
                    user: user("bob"),
                    seqs: vec![1, 99],
                },
                StorageOp::MarkDelivered {
                    user: user("alice"),
                    seqs: vec![2],
                },
                contacts(&["nobody"], &[]),
                StorageOp::SetBanned {
                    user: user("nobody"),
                    banned: true,
                },
                StorageOp::SetBanned {
                    user: user("carol"),
                    banned: true,
                },
                message("carol", "alice", 1, false),
            ],
        ]
    }

    /// A store on a schema of its own for `test`, holding accounts named `names`; `None`
    /// (after a skip line) without PostgreSQL.
    async fn with_accounts(test: &str, names: &[&str]) -> Option<(TestPg, PgStore)> {
        let pg = TestPg::create(test)?;
        let store = PgStore::open(pg.url(), &PgOptions::default())
            .await
            .expect("open the test schema");
        let client = store.client().await.expect("a connection");
        for name in names {
            client
                .execute(
                    "INSERT INTO accounts (name, password_hash, created_at_ms) VALUES ($1, '-', 0)",
                    &[name],
                )
                .await
                .expect("an account");
        }
        drop(client);
        Some((pg, store))
    }

    /// The results of `batches()` and what the database holds after them, each batch run
    /// whole (`together`) or one write per transaction.
    async fn run(together: bool) -> Option<Vec<String>> {
        let (_pg, store) = with_accounts(
            "a_batch_answers_as_its_writes_one_at_a_time",
            &["alice", "bob", "carol"],
        )
        .await?;
        let mut seen = Vec::new();
        let mut id = 0;
        for ops in batches() {
            let batch: Vec<Write> = ops
                .into_iter()
                .map(|op| {
                    id += 1;
                    Write {
                        id: RequestId(id),
                        op,
                        now_ms: 1_000 + id,
                    }
                })
                .collect();
            let results = if together {
                run_batch(&store, &batch, &CommitStats::default()).await
            } else {
                let mut all = Vec::new();
                for w in &batch {
                    all.extend(
                        run_batch(&store, std::slice::from_ref(w), &CommitStats::default()).await,
                    );
                }
                all
            };
            seen.extend(results.iter().map(|r| format!("{r:?}")));
        }
        let client = store.client().await.expect("a connection");
        for row in client
            .query(
                "SELECT seq, sender, recipient, client_id, body, attachment_mime,
                        attachment_name, attachment_data, sent_at_ms,
                        NOT EXISTS (SELECT 1 FROM mailbox
                                    WHERE mailbox.recipient = messages.recipient
                                      AND mailbox.seq = messages.seq)
                 FROM messages ORDER BY seq",
                &[],
            )
            .await
            .expect("messages")
        {
            let seq: i64 = row.get(0);
            let (from, to): (String, String) = (row.get(1), row.get(2));
            let (id, body): (i64, Vec<u8>) = (row.get(3), row.get(4));
            let attachment: [Option<Vec<u8>>; 3] = [row.get(5), row.get(6), row.get(7)];
            let (at, delivered): (i64, bool) = (row.get(8), row.get(9));
            seen.push(format!(
                "message {seq} {from}->{to} #{id} {body:?} {attachment:?} at {at} delivered {delivered}"
            ));
        }
        for row in client
            .query(
                "SELECT owner, contact FROM contacts ORDER BY owner, contact",
                &[],
            )
            .await
            .expect("contacts")
        {
            let (owner, contact): (String, String) = (row.get(0), row.get(1));
            seen.push(format!("contact {owner} {contact}"));
        }
        for row in client
            .query("SELECT name, banned FROM accounts ORDER BY name", &[])
            .await
            .expect("accounts")
        {
            let (name, banned): (String, bool) = (row.get(0), row.get(1));
            seen.push(format!("account {name} banned {banned}"));
        }
        Some(seen)
    }

    /// The plans of the statements a batch of one message and one ack runs inside
    /// `breeze_write_batch`, made on a new connection with the store's session settings and
    /// then `settings`, as `auto_explain` reports them; `Err` with the server's reason if the
    /// test's role may not load `auto_explain` (only a superuser may) or it is not installed.
    async fn batch_plans(url: &str, settings: &str) -> Result<String, String> {
        let config = crate::store::session_config(url, &PgOptions::default()).expect("config");
        let (client, mut connection) = config
            .connect(tokio_postgres::NoTls)
            .await
            .expect("a connection");
        let notices = tokio::spawn(async move {
            let mut plans = String::new();
            while let Some(Ok(message)) =
                futures_util::future::poll_fn(|cx| connection.poll_message(cx)).await
            {
                if let tokio_postgres::AsyncMessage::Notice(notice) = message {
                    plans.push_str(notice.message());
                    plans.push('\n');
                }
            }
            plans
        });
        client
            .batch_execute("LOAD 'auto_explain'")
            .await
            .map_err(|e| crate::error::PgError::from(e).to_string())?;
        client
            .batch_execute(&format!(
                "SET auto_explain.log_min_duration = 0;
                 SET auto_explain.log_nested_statements = on;
                 SET auto_explain.log_level = notice;
                 {settings};
                 SELECT * FROM breeze_write_batch('{{alice}}', '{{bob}}', '{{1}}', '{{x}}',
                     '{{NULL}}', '{{NULL}}', '{{NULL}}', '{{0}}', '{{bob}}', '{{7}}', true);"
            ))
            .await
            .expect("a batch, explained");
        drop(client);
        Ok(notices.await.expect("the notices"))
    }

    /// Every statement of a batch, planned as the writer's connections plan it while the
    /// tables are empty (a new database; `mailbox` just after a vacuum), must probe an index,
    /// never scan a table: `mailbox` fills with dead rows between vacuums, `accounts` with
    /// users (`PgStore::open`). Planned with sequential scans allowed, the ack scans
    /// `mailbox`, so the check is not vacuous here.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_probes_indexes_even_planned_on_empty_tables() {
        let Some((pg, _store)) = with_accounts("a_batch_probes_indexes", &["alice", "bob"]).await
        else {
            return;
        };
        let plans = match batch_plans(pg.url(), "SELECT 1").await {
            Ok(plans) => plans,
            Err(why) if !breeze_testsupport::pg::services_required() => {
                eprintln!("skipping a_batch_probes_indexes: cannot load auto_explain: {why}");
                return;
            }
            Err(why) => panic!("cannot load auto_explain (BREEZE_REQUIRE_SERVICES=1): {why}"),
        };
        for statement in [
            "pg_advisory_xact_lock",
            "max(m.seq)",
            "INSERT INTO messages",
            "DELETE FROM mailbox",
        ] {
            assert!(
                plans.contains(statement),
                "{statement} explained in\n{plans}"
            );
        }
        assert!(!plans.contains("Seq Scan"), "{plans}");
        assert!(plans.contains("Index Scan using mailbox_pkey"), "{plans}");
        let unguarded = batch_plans(pg.url(), "SET enable_seqscan = on")
            .await
            .expect("auto_explain loaded a moment ago");
        assert!(unguarded.contains("Seq Scan on mailbox"), "{unguarded}");
    }

    /// The writer sends a batch as one flight, its messages as one multi-row insert: that
    /// must answer, and leave the database, exactly as each write in a transaction of its
    /// own does (seqs included: a message draws one only if its users exist).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_answers_as_its_writes_one_at_a_time() {
        let Some(alone) = run(false).await else {
            return;
        };
        let together = run(true)
            .await
            .expect("PostgreSQL was reachable a moment ago");
        assert_eq!(together.len(), alone.len());
        for (i, (t, a)) in together.iter().zip(&alone).enumerate() {
            assert_eq!(t, a, "line {i}: batched, then one at a time");
        }
        // The oracle is not vacuous: resends, an unknown user, a refused contact change.
        let joined = alone.join("\n");
        for expected in ["duplicate: true", "NoSuchUser", "contact alice bob"] {
            assert!(joined.contains(expected), "{expected} in\n{joined}");
        }
        // Bob's ack marked his message; Alice's ack of his other one marked nothing.
        for (message, delivered) in [
            ("message 1 alice->bob", true),
            ("message 2 carol->bob", false),
        ] {
            let line = alone
                .iter()
                .find(|l| l.starts_with(message))
                .expect(message);
            assert!(line.ends_with(&format!("delivered {delivered}")), "{line}");
        }
    }
}
