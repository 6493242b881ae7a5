//! Counting requests in flight against a limit, with a wake-up for the
//! serving loop when a slot frees, so a full server waits without polling;
//! and, for a bounded drain on close, the open connections to cut.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use socket2::Socket;

use crate::Address;
use crate::shutdown::ShutdownHandle;
use crate::stats::Counters;

/// How often a drain looks for an [`abort`](ShutdownHandle::abort).
pub(crate) const ABORT_CHECK: Duration = Duration::from_millis(20);

#[derive(Debug)]
pub(crate) struct Capacity {
    limit: usize,
    active: AtomicUsize,
    /// Set by the serving loop when it found no free slot and is about to wait.
    waiting: AtomicBool,
    waker: ShutdownHandle,
    /// With a drain timeout: a duplicate of each open connection's socket,
    /// to shut down the ones still open when the drain deadline passes.
    open: Option<Mutex<HashMap<u64, (Socket, Address)>>>,
    next_id: AtomicU64,
    /// Set while `wait_idle` waits, so freed slots signal `idle`.
    draining: AtomicBool,
    idle_lock: Mutex<()>,
    idle: Condvar,
    counters: Arc<Counters>,
}

/// One request in flight; dropping it frees the slot.
pub(crate) struct Slot {
    capacity: Arc<Capacity>,
    tracked: Option<u64>,
}

impl Capacity {
    pub(super) fn new(
        limit: Option<usize>,
        waker: ShutdownHandle,
        track_connections: bool,
        counters: Arc<Counters>,
    ) -> Arc<Self> {
        Arc::new(Capacity {
            limit: limit.unwrap_or(usize::MAX),
            active: AtomicUsize::new(0),
            waiting: AtomicBool::new(false),
            waker,
            open: track_connections.then(Mutex::default),
            next_id: AtomicU64::new(0),
            draining: AtomicBool::new(false),
            idle_lock: Mutex::new(()),
            idle: Condvar::new(),
            counters,
        })
    }

    pub(super) fn take(self: &Arc<Self>) -> Slot {
        self.active.fetch_add(1, Ordering::SeqCst);
        Slot { capacity: Arc::clone(self), tracked: None }
    }

    /// Takes a slot for a stream connection, remembering it for a forced
    /// close if the server drains with a deadline.
    pub(super) fn take_connection(self: &Arc<Self>, socket: &Socket, peer: &Address) -> Slot {
        let mut slot = self.take();
        if let Some(open) = &self.open {
            match socket.try_clone() {
                Ok(dup) => {
                    let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                    lock(open).insert(id, (dup, peer.clone()));
                    slot.tracked = Some(id);
                }
                Err(e) => log::warn!("connection from {peer} cannot be cut at the drain deadline: {e}"),
            }
        }
        slot
    }

    pub(crate) fn active(&self) -> usize {
        self.active.load(Ordering::SeqCst)
    }

    pub(super) fn room(&self) -> usize {
        self.limit.saturating_sub(self.active())
    }

    pub(super) fn is_full(&self) -> bool {
        if self.active() < self.limit {
            return false;
        }
        self.waiting.store(true, Ordering::SeqCst);
        // A slot freed between the first look and `waiting` being set saw no
        // waiter and woke nobody: look again now that it is set.
        if self.active() < self.limit {
            self.waiting.store(false, Ordering::SeqCst);
            return false;
        }
        true
    }

    /// Makes the next freed slot wake the serving loop, full or not.
    pub(super) fn wake_on_next_release(&self) {
        self.waiting.store(true, Ordering::SeqCst);
    }

    /// Waits until no request is in flight, `deadline` passes or the server
    /// is aborted; true if idle.
    pub(super) fn wait_idle(&self, deadline: Instant) -> bool {
        let mut guard = lock(&self.idle_lock);
        self.draining.store(true, Ordering::SeqCst);
        while self.active() > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || self.waker.is_aborted() {
                return false;
            }
            // An abort does not signal `idle`: look for one every so often.
            let wait = left.min(ABORT_CHECK);
            guard = self.idle.wait_timeout(guard, wait).unwrap_or_else(PoisonError::into_inner).0;
        }
        true
    }

    /// Shuts down every connection still open, with a log line each: their
    /// handlers see end of input or an error and return.
    pub(super) fn cut_open_connections(&self) {
        let Some(open) = &self.open else { return };
        for (socket, peer) in lock(open).values() {
            log::warn!("drain timeout passed: closing connection from {peer}");
            Counters::add(&self.counters.cut_at_drain, 1);
            let _ = socket.shutdown(std::net::Shutdown::Both);
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Drop for Slot {
    fn drop(&mut self) {
        let capacity = &self.capacity;
        if let (Some(id), Some(open)) = (self.tracked, &capacity.open) {
            lock(open).remove(&id);
        }
        capacity.active.fetch_sub(1, Ordering::SeqCst);
        if capacity.waiting.swap(false, Ordering::SeqCst) {
            capacity.waker.wake();
        }
        if capacity.draining.load(Ordering::SeqCst) {
            // Taking the lock orders this after the drainer's check of `active`.
            let _guard = lock(&capacity.idle_lock);
            capacity.idle.notify_all();
        }
    }
}
