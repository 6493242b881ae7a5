//! The one readiness registry of a serving loop: every fd it waits on (the
//! wake-up socket, the server socket, each connection held in a stage) is
//! registered once, under a key, with the interest its stage wants.
//!
//! Oneshot (the `polling` crate's default, on epoll and kqueue alike): an
//! fd reports once, then stays quiet until re-armed with what it wants
//! next. So a turn costs what became ready, not what is held, and nobody
//! looks up a result by its position in a shared array. (`mio` was the
//! other candidate; it is edge-triggered, which asks every stage to read
//! until `WouldBlock` or lose its wake-up.)

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::Arc;
use std::time::Duration;

use polling::{Event, Events, Poller};

use crate::sys;

/// What an fd waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Interest {
    /// Input (or a hang-up, or an error).
    Read,
    /// Input, or room to send (a TLS handshake with a flight to send).
    #[cfg_attr(not(feature = "tls"), allow(dead_code, reason = "only a TLS handshake sends from the loop"))]
    ReadWrite,
    /// Nothing for now: registered, reporting nothing until re-armed.
    Nothing,
}

impl Interest {
    fn event(self, key: usize) -> Event {
        match self {
            Interest::Read => Event::readable(key),
            Interest::ReadWrite => Event::all(key),
            Interest::Nothing => Event::none(key),
        }
    }
}

/// The registry's keys: the wake-up socket, the server socket, then each
/// held connection at its slab key plus [`FIRST_HELD`].
pub(crate) const WAKE: usize = 0;
pub(crate) const LISTENER: usize = 1;
pub(crate) const FIRST_HELD: usize = 2;

/// Re-arms held connections from a worker's thread.
pub(crate) struct Rearmer(Arc<Poller>);

impl Rearmer {
    /// Arms the fd of the connection held at slab key `key` to report its
    /// next input. The fd must be registered, and stays open for the call.
    pub(crate) fn read(&self, fd: BorrowedFd<'_>, key: usize) -> io::Result<()> {
        self.0.modify(fd, Interest::Read.event(key + FIRST_HELD))
    }

    /// Forgets `fd`, before it closes.
    pub(crate) fn forget(&self, fd: BorrowedFd<'_>) {
        // Only fails for an fd that is not registered: nothing to undo.
        let _ = self.0.delete(fd);
    }
}

/// A poller and the buffer its events land in.
pub(crate) struct Registry {
    poller: Arc<Poller>,
    events: Events,
}

impl Registry {
    pub(crate) fn new() -> io::Result<Registry> {
        Ok(Registry { poller: Arc::new(Poller::new()?), events: Events::new() })
    }

    /// A handle a worker re-arms a held connection's fd with, from its own
    /// thread (epoll and kqueue take changes from any thread).
    pub(crate) fn rearmer(&self) -> Rearmer {
        Rearmer(Arc::clone(&self.poller))
    }

    /// Registers `fd` under `key`. The caller removes it before it closes.
    pub(crate) fn add(&self, fd: BorrowedFd<'_>, key: usize, interest: Interest) -> io::Result<()> {
        sys::poller_add(&self.poller, fd.as_raw_fd(), interest.event(key))
    }

    /// Re-arms `fd`, which reported (or was registered with) another interest.
    pub(crate) fn rearm(&self, fd: BorrowedFd<'_>, key: usize, interest: Interest) -> io::Result<()> {
        self.poller.modify(fd, interest.event(key))
    }

    /// Forgets `fd`, before it closes or leaves the loop.
    pub(crate) fn remove(&self, fd: BorrowedFd<'_>) {
        // Only fails for an fd that is not registered: nothing to undo.
        let _ = self.poller.delete(fd);
    }

    /// Waits until something registered is ready or `timeout` passes
    /// (`None`: no limit), and returns the keys of what was. Each has
    /// reported once and waits disarmed for its next interest.
    pub(crate) fn wait(&mut self, timeout: Option<Duration>) -> io::Result<impl Iterator<Item = usize> + '_> {
        self.events.clear();
        match self.poller.wait(&mut self.events, timeout) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        Ok(self.events.iter().map(|e| e.key))
    }
}
