//! Open-loop send times, kept to the operating system's sleep precision (tens of
//! microseconds) instead of tokio's timer wheel, which fires on whole milliseconds: every
//! paced message left the bench at least 1 ms after its intended time, so the chat latency
//! figure measured the bench's timer rather than the server.
//!
//! One thread holds every client's schedule, sleeps until the earliest send is due, and hands
//! that intended time to the client's task over a channel. Latency still counts from the
//! intended time, so a late bench or a late server is never excused.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::thread::{self, JoinHandle};
use std::time::Duration;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio::time::Instant;

/// One client's schedule: sends at `first`, `first + interval`, … before the pacer's end.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    pub first: Instant,
    pub interval: Duration,
}

/// Starts the pacing thread. Client `i` receives its intended send times on the `i`-th
/// receiver, up to (not including) `end`; the thread ends then, or once every client has
/// dropped its receiver.
pub fn start(
    schedules: &[Schedule],
    end: Instant,
) -> std::io::Result<(JoinHandle<()>, Vec<UnboundedReceiver<Instant>>)> {
    let (senders, receivers): (Vec<UnboundedSender<Instant>>, Vec<_>) =
        schedules.iter().map(|_| unbounded_channel()).unzip();
    let mut heap: BinaryHeap<Reverse<(std::time::Instant, usize)>> = schedules
        .iter()
        .enumerate()
        .map(|(i, s)| Reverse((s.first.into_std(), i)))
        .collect();
    let intervals: Vec<Duration> = schedules.iter().map(|s| s.interval).collect();
    let end = end.into_std();
    let handle = thread::Builder::new()
        .name("bench-pacer".to_owned())
        .spawn(move || {
            while let Some(Reverse((due, i))) = heap.pop() {
                if due >= end {
                    break;
                }
                let now = std::time::Instant::now();
                if due > now {
                    thread::sleep(due - now);
                }
                // A client that is gone gets no more sends.
                if senders[i].send(Instant::from_std(due)).is_ok() {
                    heap.push(Reverse((due + intervals[i], i)));
                }
            }
        })?;
    Ok((handle, receivers))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_client_gets_its_own_times_in_order_until_the_end() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let schedules = [
            Schedule {
                first: t0,
                interval: ms(4),
            },
            Schedule {
                first: t0 + ms(1),
                interval: ms(5),
            },
        ];
        let (thread, mut rx) = start(&schedules, t0 + ms(12)).expect("thread");
        thread.join().expect("pacer");
        let mut got = |i: usize| {
            let mut v = Vec::new();
            while let Ok(at) = rx[i].try_recv() {
                v.push(at - t0);
            }
            v
        };
        assert_eq!(got(0), vec![ms(0), ms(4), ms(8)]);
        assert_eq!(got(1), vec![ms(1), ms(6), ms(11)]);
    }
}
