//! Where a stream pool's idle workers wait: one epoll instance of their
//! own, holding the connections parked between requests and a counter the
//! queue bumps for jobs. The worker that sees a parked connection ready
//! reads it and answers it itself, so a request from a persistent client
//! costs one wake-up (a worker's), not two (the loop's, then a worker's
//! through the queue), and no `futex` call: the leader/followers shape,
//! with the kernel choosing the leader.
//!
//! Every worker waits in `epoll_wait` on the same instance. The kernel
//! wakes one waiter per report (epoll's waiters are exclusive). A framed
//! connection (and a kept one over plain TCP, while its handler's own reads
//! wake no worker) is registered once, edge-triggered: each
//! arrival of bytes reports once, to one worker, with no re-arm after each
//! message (a oneshot registration costs an `epoll_ctl` per message, a
//! quarter of a persistent client's system calls). What that asks of the
//! loop's side is in `serving/admission/lot.rs`, with when a kept
//! connection (its handler handed it back) reports once per park instead
//! ([`Reports`]).
//!
//! The jobs counter is edge-triggered too: each bump reports once, so a
//! bump wakes one worker, not all of them (level-triggered, a ready counter
//! is reported to every waiter until one reads it). Two bumps before either
//! is taken may wake one worker only: so a worker that takes a job and sees
//! more queued, with workers idle, bumps again (see `pool.rs`). To end the
//! pool the counter turns level-triggered, and every worker sees it.
//!
//! Linux only: elsewhere a pool's connections go back to the loop between
//! requests, as they do on Linux for the other dispatchers.

use std::io;

use socket2::Socket;

use super::capacity::Slot;
use crate::Address;
use crate::runner::{Context, Scratch};

/// A parked connection's way back to a worker: the serving loop's side,
/// which holds the connections and answers one when its fd reports.
pub(crate) trait Resume<H>: Send + Sync {
    /// The parked connection at `key` reported for its arm `arm` (`ended`:
    /// with its client's end, or a failure): take it, read it, answer what
    /// is whole, and park it again or hand it to the loop. `slot`
    /// takes the request's place in the dispatcher's count (and its
    /// connection's place in a drain's cut list). A key with nothing
    /// parked (taken by a close, or reused) is no error: nothing happens.
    fn resume(
        &self,
        key: usize,
        arm: u32,
        ended: bool,
        ctx: &Context<H>,
        scratch: &mut Scratch,
        slot: &mut dyn FnMut(&Socket, &Address) -> Slot,
    );
}

/// How a parked fd reports its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reports {
    /// At each arrival of bytes, to one worker each time (edge-triggered):
    /// a framed connection, from its registration to its close; a kept one
    /// over plain TCP, until its handler's reads wake workers.
    EachArrival,
    /// Once, then not until it is re-armed (oneshot): a kept connection
    /// whose handler's reads would wake workers, or whose bytes are no
    /// sign of a request (TLS records), or that a peek must look at anyway
    /// (a Unix socket's).
    Once,
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
    /// The parked connection at `key`, armed as `arm`, has input; `ended`:
    /// its client ended its side, or it failed (so a read that empties the
    /// socket of bytes still leaves that end to read: one report covers
    /// both).
    Parked { key: usize, arm: u32, ended: bool },
}

#[cfg(any(target_os = "linux", target_os = "android"))]
mod imp {
    use std::os::fd::BorrowedFd;
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;
    use crate::sys::{EDGE, ENDED, Epoll, EventFd, Events, ONESHOT, READ};

    /// The jobs counter's report; a parked connection's carries its key in
    /// the loop (the low 32 bits) and the number of the arm it reports for
    /// (the high ones), so a report from an earlier arm is known.
    const JOBS: u64 = u64::MAX;

    fn data(key: usize, arm: u32) -> io::Result<u64> {
        let key = u32::try_from(key).map_err(|_| io::Error::other("no parking past 2^32 connections"))?;
        Ok(u64::from(key) | u64::from(arm) << 32)
    }

    /// The workers' epoll instance and the jobs counter.
    pub(crate) struct Parking {
        epoll: Epoll,
        jobs: EventFd,
        /// A connection was parked here: idle workers must wait here.
        used: AtomicBool,
        /// Tells the pool so, once (see [`Parking::when_used`]).
        on_use: OnceLock<Box<dyn Fn() + Send + Sync>>,
    }

    impl std::fmt::Debug for Parking {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Parking").field("epoll", &self.epoll).field("used", &self.used).finish_non_exhaustive()
        }
    }

    impl Parking {
        pub(crate) fn new() -> io::Result<Parking> {
            let parking = Parking {
                epoll: Epoll::new()?,
                jobs: EventFd::new()?,
                used: AtomicBool::new(false),
                on_use: OnceLock::new(),
            };
            parking.epoll.add(parking.jobs.as_fd(), JOBS, READ | EDGE)?;
            Ok(parking)
        }

        /// Connections park here from now on (called before each park; a
        /// load after the first). A pool whose connections never park (no
        /// framing, no handler handing its connection back) keeps its idle
        /// workers on its queue's condvar, whose wake-up costs less than
        /// this epoll instance's: 5% of a connection-per-request load.
        pub(crate) fn use_it(&self) {
            if !self.used.load(Ordering::Relaxed)
                && !self.used.swap(true, Ordering::SeqCst)
                && let Some(on_use) = self.on_use.get()
            {
                on_use();
            }
        }

        /// Whether connections have parked here.
        pub(crate) fn used(&self) -> bool {
            self.used.load(Ordering::Relaxed)
        }

        /// Runs `on_use` when connections first park here, or now if they
        /// have (it may run twice: it must not mind).
        pub(crate) fn when_used(&self, on_use: Box<dyn Fn() + Send + Sync>) {
            let _ = self.on_use.set(on_use);
            if self.used.load(Ordering::SeqCst)
                && let Some(on_use) = self.on_use.get()
            {
                on_use();
            }
        }

        /// Registers `fd`, a connection the loop knows as `key`, to wake one
        /// worker as `reports` says, and at once if it has input; its reports
        /// carry `arm`. The caller keeps `fd` open for the call.
        pub(crate) fn add(&self, fd: BorrowedFd<'_>, key: usize, arm: u32, reports: Reports) -> io::Result<()> {
            self.epoll.add(fd, data(key, arm)?, bits(reports))
        }

        /// Re-arms `fd`, registered: it reports at once if it has input (for
        /// bytes that came while it was not parked, or that its last read
        /// left), and then as `reports` says, its reports carrying `arm`.
        pub(crate) fn rearm(&self, fd: BorrowedFd<'_>, key: usize, arm: u32, reports: Reports) -> io::Result<()> {
            self.epoll.modify(fd, data(key, arm)?, bits(reports))
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
            Ok(match events.reports().next() {
                Some((JOBS, _)) | None => Woke::Jobs,
                Some((data, bits)) => Woke::Parked {
                    key: (data & 0xffff_ffff) as usize,
                    arm: (data >> 32) as u32,
                    ended: bits & ENDED != 0,
                },
            })
        }
    }

    fn bits(reports: Reports) -> u32 {
        match reports {
            Reports::EachArrival => READ | EDGE,
            Reports::Once => READ | ONESHOT,
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

    /// Not built here: a pool's connections go back to the loop.
    #[derive(Debug)]
    pub(crate) enum Parking {}

    /// Nothing to hold: no wait happens.
    pub(crate) struct Events;

    impl Parking {
        pub(crate) fn new() -> io::Result<Parking> {
            Err(io::ErrorKind::Unsupported.into())
        }

        pub(crate) fn add(&self, _: BorrowedFd<'_>, _: usize, _: u32, _: Reports) -> io::Result<()> {
            match *self {}
        }

        pub(crate) fn rearm(&self, _: BorrowedFd<'_>, _: usize, _: u32, _: Reports) -> io::Result<()> {
            match *self {}
        }

        pub(crate) fn signal(&self) {
            match *self {}
        }

        pub(crate) fn use_it(&self) {
            match *self {}
        }

        pub(crate) fn when_used(&self, _: Box<dyn Fn() + Send + Sync>) {
            match *self {}
        }

        pub(crate) fn used(&self) -> bool {
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
