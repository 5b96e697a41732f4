//! Storage results that come back late: a queue of completions, released on simulated time.
//!
//! It allows exactly the reorderings the real `breeze_store::StorageService` can produce. Its
//! one writer thread answers plain writes and reads in the order they were submitted, while
//! the verifying requests (`Register`, `Authenticate` with a password, `ChangePassword`) go
//! through a pool of hashing threads and may overtake, or be overtaken by, anything. So a
//! request in order is never due before the request in order submitted just before it; a
//! verifying one is due when its own delay says.

use breeze_core::RequestId;
use breeze_core::message::Credential;
use breeze_core::storage::{StorageOp, StorageResult};
use std::collections::BTreeMap;
use tokio::time::Instant;

/// What is left to do for a request when it completes.
#[derive(Debug)]
pub enum Work {
    /// The write lands when its result comes (a slow disk).
    Apply(StorageOp),
    /// Already decided: committed early with only the answer late, or failed.
    Answer(StorageResult),
}

#[derive(Debug)]
pub struct Completion {
    pub id: RequestId,
    /// The request, for the event log (`StorageOp`'s `Debug` shows no secrets).
    pub what: String,
    pub work: Work,
}

#[derive(Debug)]
struct Entry {
    in_order: bool,
    completion: Completion,
}

/// Completions waiting for their instant, in the order they are due.
#[derive(Debug, Default)]
pub struct Completions {
    /// By (due, submission number): the number keeps requests due at one instant in order.
    due: BTreeMap<(Instant, u64), Entry>,
    submitted: u64,
    /// When the last request in order is due.
    tail: Option<Instant>,
}

/// Whether the real store answers `op` in submission order (see the module's comment).
pub fn in_order(op: &StorageOp) -> bool {
    !matches!(
        op,
        StorageOp::Register { .. }
            | StorageOp::ChangePassword { .. }
            | StorageOp::Authenticate {
                credential: Credential::Password(_),
                ..
            }
    )
}

impl Completions {
    /// When a request submitted at `now` and taking `delay` completes.
    pub fn due(&self, now: Instant, delay: std::time::Duration, in_order: bool) -> Instant {
        let own = now + delay;
        match self.tail {
            Some(tail) if in_order => own.max(tail),
            _ => own,
        }
    }

    /// Whether a request in order may complete at once, inline: nothing in order is waiting.
    pub fn nothing_in_order_waits(&self) -> bool {
        !self.due.values().any(|e| e.in_order)
    }

    /// Whether a write in order still waits to land: a request in order committed now would
    /// land before it, which the writer thread never does.
    pub fn a_write_in_order_waits(&self) -> bool {
        self.due
            .values()
            .any(|e| e.in_order && matches!(e.completion.work, Work::Apply(_)))
    }

    pub fn push(&mut self, due: Instant, in_order: bool, completion: Completion) {
        if in_order {
            self.tail = Some(self.tail.map_or(due, |t| t.max(due)));
        }
        self.submitted += 1;
        self.due.insert(
            (due, self.submitted),
            Entry {
                in_order,
                completion,
            },
        );
    }

    pub fn next_due(&self) -> Option<Instant> {
        self.due.keys().next().map(|&(at, _)| at)
    }

    /// The first completion due by `now`, if any.
    pub fn pop_due(&mut self, now: Instant) -> Option<Completion> {
        let entry = self.due.first_entry().filter(|e| e.key().0 <= now)?;
        Some(entry.remove().completion)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use breeze_core::UserId;
    use std::time::Duration;

    fn op(credential: Option<&str>) -> StorageOp {
        let user = UserId::new("u1".to_string()).expect("a valid name");
        match credential {
            Some(p) => StorageOp::Authenticate {
                user,
                credential: Credential::Password(p.to_string()),
                issue_token: true,
            },
            None => StorageOp::MarkDelivered {
                user,
                seqs: vec![1],
            },
        }
    }

    fn completion(n: u64, op: StorageOp) -> Completion {
        Completion {
            id: RequestId(n),
            what: format!("{op:?}"),
            work: Work::Apply(op),
        }
    }

    fn drain(queue: &mut Completions, now: Instant) -> Vec<u64> {
        std::iter::from_fn(|| queue.pop_due(now))
            .map(|c| c.id.0)
            .collect()
    }

    #[test]
    fn requests_in_order_never_overtake_and_verifying_ones_may() {
        let now = Instant::now();
        let ms = Duration::from_millis;
        let mut queue = Completions::default();
        let plain = op(None);
        let login = op(Some("pw"));
        assert!(in_order(&plain) && !in_order(&login));
        // A slow write, then a quick one behind it, and a quick login beside them.
        let slow = queue.due(now, ms(500), true);
        queue.push(slow, true, completion(1, plain.clone()));
        let quick = queue.due(now, ms(10), true);
        assert_eq!(quick, slow, "due no earlier than the write before it");
        queue.push(quick, true, completion(2, plain));
        let verifying = queue.due(now, ms(10), false);
        queue.push(verifying, false, completion(3, login));
        assert!(queue.a_write_in_order_waits() && !queue.nothing_in_order_waits());
        assert_eq!(queue.next_due(), Some(now + ms(10)));
        assert_eq!(drain(&mut queue, now + ms(10)), vec![3]);
        assert_eq!(drain(&mut queue, now + ms(499)), Vec::<u64>::new());
        assert_eq!(drain(&mut queue, now + ms(500)), vec![1, 2]);
        assert!(queue.nothing_in_order_waits());
    }
}
