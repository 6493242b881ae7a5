//! Counting requests in flight against a limit, with a wake-up for the
//! serving loop when a slot frees, so a full server waits without polling.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::shutdown::ShutdownHandle;

pub(crate) struct Capacity {
    limit: usize,
    active: AtomicUsize,
    /// Set by the serving loop when it found no free slot and is about to wait.
    waiting: AtomicBool,
    waker: ShutdownHandle,
}

/// One request in flight; dropping it frees the slot.
pub(crate) struct Slot(Arc<Capacity>);

impl Capacity {
    pub fn new(limit: Option<usize>, waker: ShutdownHandle) -> Arc<Self> {
        Arc::new(Capacity {
            limit: limit.unwrap_or(usize::MAX),
            active: AtomicUsize::new(0),
            waiting: AtomicBool::new(false),
            waker,
        })
    }

    pub fn take(self: &Arc<Self>) -> Slot {
        self.active.fetch_add(1, Ordering::SeqCst);
        Slot(Arc::clone(self))
    }

    pub fn active(&self) -> usize {
        self.active.load(Ordering::SeqCst)
    }

    pub fn is_full(&self) -> bool {
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
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
        if self.0.waiting.swap(false, Ordering::SeqCst) {
            self.0.waker.wake();
        }
    }
}
