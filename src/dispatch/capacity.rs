//! Counting requests in flight against a limit, with a wake-up for the
//! serving loop when a slot frees, so a full server waits without polling;
//! and, for a bounded drain on close, the open connections to cut.
//!
//! A connection is cut through the fd its handler already holds, never a
//! copy: a copy is one more fd, and the drain that needs it is the moment
//! the fd table may be full (a PROXY or TLS stage holds connections past the
//! pool's backpressure). A raw fd number is only safe to shut down while it
//! still names our socket, so the entry leaves the table, under the lock the
//! cut holds, before the socket closes: [`Slot::untrack`] runs first, and a
//! cut that holds the lock finds either the open socket or no entry.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use socket2::Socket;

use crate::hooks::ErrorHook;
use crate::stats::Counters;
use crate::waker::{Wake, Waker};
use crate::{Address, Error, sys};

/// How often a drain looks for an [`abort`](crate::ShutdownHandle::abort).
pub(crate) const ABORT_CHECK: Duration = Duration::from_millis(20);

pub(crate) struct Capacity {
    limit: usize,
    /// Of `active`, stream connections a handler holds: open connections,
    /// for `max_connections`. (A framed message's connection is counted by
    /// the loop, which keeps its entry while a worker has it.)
    connections: AtomicUsize,
    /// Set by the serving loop when it found no free slot and is about to wait.
    waiting: AtomicBool,
    waker: Waker,
    /// With a drain timeout: each open connection's fd (not a copy: see the
    /// module docs), to shut down the ones still open at the drain deadline.
    open: Option<Mutex<HashMap<u64, Open>>>,
    next_id: AtomicU64,
    /// Set while `wait_idle` waits, so freed slots signal `idle`.
    draining: AtomicBool,
    idle_lock: Mutex<()>,
    idle: Condvar,
    counters: Arc<Counters>,
    on_error: ErrorHook,
}

impl std::fmt::Debug for Capacity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Capacity").field("limit", &self.limit).field("active", &self.active()).finish_non_exhaustive()
    }
}

/// A connection a handler holds, as the drain sees it.
struct Open {
    /// Open for as long as the entry exists (the module docs say why).
    fd: RawFd,
    peer: Address,
    /// Shut down at the drain deadline: counted and reported then, so its
    /// handler's own ending is not counted again.
    cut: bool,
}

/// One request in flight; dropping it frees the slot.
pub(crate) struct Slot {
    capacity: Arc<Capacity>,
    tracked: Option<u64>,
    /// Counted in `connections` too.
    connection: bool,
}

impl Capacity {
    pub(super) fn new(
        limit: Option<usize>,
        waker: Waker,
        track_connections: bool,
        counters: Arc<Counters>,
        on_error: ErrorHook,
    ) -> Arc<Self> {
        Arc::new(Capacity {
            limit: limit.unwrap_or(usize::MAX),
            connections: AtomicUsize::new(0),
            waiting: AtomicBool::new(false),
            waker,
            open: track_connections.then(Mutex::default),
            next_id: AtomicU64::new(0),
            draining: AtomicBool::new(false),
            idle_lock: Mutex::new(()),
            idle: Condvar::new(),
            counters,
            on_error,
        })
    }

    pub(super) fn take(self: &Arc<Self>) -> Slot {
        self.counters.started();
        Slot { capacity: Arc::clone(self), tracked: None, connection: false }
    }

    /// Takes a slot for a stream connection, remembering it for a forced
    /// close if the server drains with a deadline. The caller calls
    /// [`Slot::untrack`] before `socket` closes.
    pub(super) fn take_connection(self: &Arc<Self>, socket: &Socket, peer: &Address) -> Slot {
        self.connections.fetch_add(1, Ordering::SeqCst);
        let mut slot = self.take_message(socket, peer);
        slot.connection = true;
        slot
    }

    /// Takes a slot for a framed message of the connection `socket`, which
    /// a drain cuts as it cuts a stream connection (a worker blocked
    /// sending its replies to a client that never reads would hold the
    /// close for ever). The caller calls [`Slot::untrack`] before it gives
    /// the connection back.
    pub(super) fn take_message(self: &Arc<Self>, socket: &Socket, peer: &Address) -> Slot {
        let mut slot = self.take();
        if let Some(open) = &self.open {
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            lock(open).insert(id, Open { fd: socket.as_raw_fd(), peer: peer.clone(), cut: false });
            slot.tracked = Some(id);
        }
        slot
    }

    pub(crate) fn active(&self) -> usize {
        self.counters.active.load(Ordering::SeqCst)
    }

    /// Stream connections a handler holds now.
    pub(super) fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    pub(super) fn is_full(&self) -> bool {
        if self.active() < self.limit {
            return false;
        }
        self.waiting.store(true, Ordering::SeqCst);
        // A slot freed between the first look and `waiting` being set saw no
        // waiter and woke nobody: look again now that it is set.
        //
        // Finding room now, `waiting` stays set. Clearing it would withdraw
        // a wake-up an earlier look asked for: the loop looks twice a turn
        // (to dispatch, then to decide whether to accept), and a slot that
        // ended between this look's two loads, and looks for a waiter only
        // after a clear, would wake nobody while the first look's messages
        // wait for room (seen: 56 messages queued, no request running, the
        // loop asleep with no timeout). Left set, the worst is one wake-up
        // too many.
        self.active() >= self.limit
    }

    /// Makes the next freed slot wake the serving loop, full or not.
    pub(super) fn wake_on_next_release(&self) {
        self.waiting.store(true, Ordering::SeqCst);
    }

    /// Waits until no request is in flight, `deadline` passes or `aborted`
    /// says the server was; true if idle.
    pub(super) fn wait_idle(&self, deadline: Instant, aborted: impl Fn() -> bool) -> bool {
        let mut guard = lock(&self.idle_lock);
        self.draining.store(true, Ordering::SeqCst);
        while self.active() > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || aborted() {
                return false;
            }
            // An abort does not signal `idle`: look for one every so often.
            let wait = left.min(ABORT_CHECK);
            guard = self.idle.wait_timeout(guard, wait).unwrap_or_else(PoisonError::into_inner).0;
        }
        true
    }

    /// Shuts down every connection still open, each counted once in
    /// `cut_at_drain` and reported to `handle_error`: their handlers see end
    /// of input or an error and return.
    pub(super) fn cut_open_connections(&self) {
        let Some(open) = &self.open else { return };
        let mut open = lock(open);
        for conn in open.values_mut().filter(|conn| !conn.cut) {
            log::warn!("drain timeout passed: closing connection from {}", conn.peer);
            // The fd is still the connection's: its entry exists, and this
            // lock is the one `Slot::untrack` takes before the socket closes.
            if let Err(e) = sys::shutdown_both(conn.fd) {
                log::debug!("cutting the connection from {}: {e}", conn.peer);
            }
            conn.cut = true;
            Counters::add(&self.counters.cut_at_drain, 1);
            (self.on_error)(&Error::Cut { peer: conn.peer.clone() });
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Slot {
    /// Forgets the connection this slot tracks, before its socket closes.
    /// True if the drain cut it, which was counted and reported then: the
    /// handler's own ending is not counted again.
    pub(crate) fn untrack(&mut self) -> bool {
        match (self.tracked.take(), &self.capacity.open) {
            (Some(id), Some(open)) => lock(open).remove(&id).is_some_and(|conn| conn.cut),
            _ => false,
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.untrack();
        let capacity = &self.capacity;
        if self.connection {
            capacity.connections.fetch_sub(1, Ordering::SeqCst);
        }
        capacity.counters.ended();
        if capacity.waiting.swap(false, Ordering::SeqCst) {
            capacity.waker.wake(Wake::SlotFreed);
        }
        if capacity.draining.load(Ordering::SeqCst) {
            // Taking the lock orders this after the drainer's check of `active`.
            let _guard = lock(&capacity.idle_lock);
            capacity.idle.notify_all();
        }
    }
}
