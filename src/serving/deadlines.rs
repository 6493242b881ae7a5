//! When held connections must leave their stage, as a timer heap: adding a
//! deadline and taking the ones that passed cost O(log n) each, and a turn
//! looks only at deadlines that passed, never at every held connection.
//!
//! A connection that moves on (to the next stage, to a handler) leaves its
//! old deadline behind: each deadline carries the generation of the stage
//! it was set for, and one whose stage is over is dropped when it comes up.
//! With long timeouts and many short connections, those left behind would
//! pile up until they come up (minutes of them); so when they outnumber
//! the current ones, they are swept out at once ([`Deadlines::sweep`]),
//! which costs O(1) per deadline set, amortised.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

/// Stale deadlines tolerated beyond one per live connection, so a small
/// server never sweeps.
const SWEEP_SLACK: usize = 1024;

#[derive(Default)]
pub(crate) struct Deadlines {
    heap: BinaryHeap<Reverse<(Instant, usize, u64)>>,
}

impl Deadlines {
    /// The stage of `key` numbered `generation` ends at `at`.
    pub(crate) fn set(&mut self, at: Instant, key: usize, generation: u64) {
        self.heap.push(Reverse((at, key, generation)));
    }

    /// Time until the first deadline still current (`current(key,
    /// generation)`), dropping those that are not on the way.
    pub(crate) fn next(&mut self, now: Instant, current: impl Fn(usize, u64) -> bool) -> Option<Duration> {
        while let Some(Reverse((at, key, generation))) = self.heap.peek() {
            if current(*key, *generation) {
                return Some(at.saturating_duration_since(now));
            }
            self.heap.pop();
        }
        None
    }

    /// The next key whose current deadline has passed by `now`.
    pub(crate) fn pop_expired(&mut self, now: Instant, current: impl Fn(usize, u64) -> bool) -> Option<usize> {
        while let Some(Reverse((at, key, generation))) = self.heap.peek().copied() {
            if at > now {
                return None;
            }
            self.heap.pop();
            if current(key, generation) {
                return Some(key);
            }
        }
        None
    }

    /// Drops the deadlines that are no longer current, once there are more
    /// of them than of the `live` connections that can have one.
    pub(crate) fn sweep(&mut self, live: usize, current: impl Fn(usize, u64) -> bool) {
        if self.heap.len() <= 2 * live + SWEEP_SLACK {
            return;
        }
        let heap = std::mem::take(&mut self.heap).into_vec();
        self.heap = heap.into_iter().filter(|Reverse((_, key, generation))| current(*key, *generation)).collect();
    }

    /// Forgets every deadline (the connections are gone).
    pub(crate) fn clear(&mut self) {
        self.heap.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_come_up_in_order_and_stale_ones_never() {
        let now = Instant::now();
        let mut deadlines = Deadlines::default();
        deadlines.set(now + Duration::from_secs(3), 1, 1);
        deadlines.set(now + Duration::from_secs(1), 2, 1);
        deadlines.set(now + Duration::from_secs(2), 3, 1);
        // Key 2 moved on to generation 2 with a later deadline.
        deadlines.set(now + Duration::from_secs(4), 2, 2);
        let current = |key: usize, generation: u64| generation == if key == 2 { 2 } else { 1 };
        assert_eq!(deadlines.next(now, current), Some(Duration::from_secs(2)));
        let later = now + Duration::from_secs(10);
        let order: Vec<usize> = std::iter::from_fn(|| deadlines.pop_expired(later, current)).collect();
        assert_eq!(order, [3, 1, 2]);
        assert_eq!(deadlines.next(later, current), None);
    }

    #[test]
    fn stale_deadlines_are_swept_once_they_outnumber_the_live_ones() {
        let now = Instant::now();
        let mut deadlines = Deadlines::default();
        // One live connection (key 0) that moved on 5,000 times.
        for generation in 0..5_000 {
            deadlines.set(now + Duration::from_secs(300), 0, generation);
        }
        let current = |key: usize, generation: u64| key == 0 && generation == 4_999;
        deadlines.sweep(1, current);
        assert_eq!(deadlines.heap.len(), 1);
        assert_eq!(deadlines.next(now, current), Some(Duration::from_secs(300)));
        // Below the slack, nothing is swept.
        deadlines.set(now, 0, 1);
        deadlines.sweep(1, current);
        assert_eq!(deadlines.heap.len(), 2);
    }
}
