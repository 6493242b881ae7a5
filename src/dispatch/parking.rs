//! Where a framed pool's idle workers wait: one epoll instance of their
//! own, holding the connections parked between messages and a counter the
//! queue bumps for jobs. The worker that sees a parked connection ready
//! reads it and answers it itself, so a message from a persistent client
//! costs one wake-up (a worker's), not two (the loop's, then a worker's
//! through the queue), and no `futex` call: the leader/followers shape,
//! with the kernel choosing the leader.
//!
//! Every worker waits in `epoll_wait` on the same instance. The kernel
//! wakes one waiter per report (epoll's waiters are exclusive), and each
//! parked connection is oneshot: it reports to one worker, then stays
//! quiet until that worker parks it again. The jobs counter is
//! edge-triggered: each bump reports once, so a bump wakes one worker, not
//! all of them (level-triggered, a ready counter is reported to every
//! waiter until one reads it). Two bumps before either is taken may wake
//! one worker only: so a worker that takes a job and sees more queued, with
//! workers idle, bumps again (see `pool.rs`). To end the pool the counter
//! turns level-triggered, and every worker sees it.
//!
//! Linux only: elsewhere a framed pool's connections go back to the loop
//! between messages, as they do on Linux for the other dispatchers.

use std::io;

use socket2::Socket;

use super::capacity::Slot;
use crate::Address;
use crate::runner::{Context, Scratch};

/// A parked connection's way back to a worker: the serving loop's side,
/// which holds the connections and answers one when its fd reports.
pub(crate) trait Resume<H>: Send + Sync {
    /// The parked connection at `key` reported: take it, read it, answer
    /// what is whole, and park it again or hand it to the loop. `slot`
    /// takes the request's place in the dispatcher's count (and its
    /// connection's place in a drain's cut list). A key with nothing
    /// parked (taken by a close, or reused) is no error: nothing happens.
    fn resume(
        &self,
        key: usize,
        ctx: &Context<H>,
        scratch: &mut Scratch,
        slot: &mut dyn FnMut(&Socket, &Address) -> Slot,
    );
}

/// What woke a waiting worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(
    not(any(target_os = "linux", target_os = "android")),
    allow(dead_code, reason = "no parking here: no worker waits in one")
)]
pub(crate) enum Woke {
    /// Jobs were queued, or the pool is closing: look at the queue.
    Jobs,
    /// The parked connection at this key has input.
    Parked(usize),
}

#[cfg(any(target_os = "linux", target_os = "android"))]
mod imp {
    use std::os::fd::BorrowedFd;

    use super::*;
    use crate::sys::{EDGE, Epoll, EventFd, Events, ONESHOT, READ};

    /// The jobs counter's key; a parked connection's is its key in the loop.
    const JOBS: usize = usize::MAX;

    /// The workers' epoll instance and the jobs counter.
    #[derive(Debug)]
    pub(crate) struct Parking {
        epoll: Epoll,
        jobs: EventFd,
    }

    impl Parking {
        pub(crate) fn new() -> io::Result<Parking> {
            let parking = Parking { epoll: Epoll::new()?, jobs: EventFd::new()? };
            parking.epoll.add(parking.jobs.as_fd(), JOBS, READ | EDGE)?;
            Ok(parking)
        }

        /// Arms `fd`, a connection the loop knows as `key`, to wake one
        /// worker at its next input; `first`: it is not registered here yet.
        /// The caller keeps `fd` open for the call.
        pub(crate) fn park(&self, fd: BorrowedFd<'_>, key: usize, first: bool) -> io::Result<()> {
            if first { self.epoll.add(fd, key, READ | ONESHOT) } else { self.epoll.modify(fd, key, READ | ONESHOT) }
        }

        /// Wakes one waiting worker to look at the queue.
        pub(crate) fn signal(&self) {
            self.jobs.signal();
        }

        /// Wakes every worker, now and at each later wait: the pool closes.
        pub(crate) fn wake_all(&self) {
            if let Err(e) = self.epoll.modify(self.jobs.as_fd(), JOBS, READ) {
                log::error!("worker pool: cannot wake its workers to end: {e}");
            }
            self.jobs.signal();
        }

        /// Waits for one report. `events` holds one.
        pub(crate) fn wait(&self, events: &mut Events) -> io::Result<Woke> {
            self.epoll.wait(events, None)?;
            Ok(match events.keys().next() {
                Some(JOBS) | None => Woke::Jobs,
                Some(key) => Woke::Parked(key),
            })
        }
    }

    /// Room for the one report a worker takes per wait.
    pub(crate) fn events() -> Events {
        Events::with_capacity(1)
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
mod imp {
    use std::os::fd::BorrowedFd;

    use super::*;

    /// Not built here: a framed pool's connections go back to the loop.
    #[derive(Debug)]
    pub(crate) enum Parking {}

    /// Nothing to hold: no wait happens.
    pub(crate) struct Events;

    impl Parking {
        pub(crate) fn new() -> io::Result<Parking> {
            Err(io::ErrorKind::Unsupported.into())
        }

        pub(crate) fn park(&self, _: BorrowedFd<'_>, _: usize, _: bool) -> io::Result<()> {
            match *self {}
        }

        pub(crate) fn signal(&self) {
            match *self {}
        }

        pub(crate) fn wake_all(&self) {
            match *self {}
        }

        pub(crate) fn wait(&self, _: &mut Events) -> io::Result<Woke> {
            match *self {}
        }
    }

    pub(crate) fn events() -> Events {
        Events
    }
}

pub(crate) use imp::{Parking, events};
