//! The one readiness registry of a serving loop: every fd it waits on (the
//! wake-up socket, the server socket, each connection the loop holds) is
//! registered once, under a key, with the interest its state wants.
//!
//! Oneshot, on epoll and kqueue alike: an fd reports once, then stays quiet
//! until re-armed with what it wants next. So a turn costs what became
//! ready, not what is held, and nobody looks up a result by its position in
//! a shared array. (Edge-triggered registration, as `mio` makes it, would
//! save the re-arm but ask every state to read until `WouldBlock` or lose
//! its wake-up, and a connection handed to a worker to remember a report
//! that came while it was away.) The wake-up socket, and the server socket
//! while the loop takes from it, are level-triggered: they report until
//! emptied, and cost no re-arm per turn.
//!
//! On Linux the registry is an epoll instance of its own (`sys::Epoll`): a
//! wait is one `epoll_wait`. Elsewhere it is the `polling` crate's poller
//! (kqueue), whose waits on Linux would cost three more system calls each
//! (a timer fd set, and two re-arms) for features this loop does not use.

use std::io;
use std::os::fd::BorrowedFd;
use std::sync::Arc;
use std::time::Duration;

/// What an fd waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Interest {
    /// Input (or a hang-up, or an error), once.
    Read,
    /// Input, or room to send (a TLS handshake with a flight to send), once.
    #[cfg_attr(not(feature = "tls"), allow(dead_code, reason = "only a TLS handshake sends from the loop"))]
    ReadWrite,
    /// Nothing for now: registered, reporting nothing until re-armed.
    Nothing,
    /// Input, for as long as there is some: the wake-up socket, and the
    /// server socket while the loop takes from it.
    Level,
}

/// The registry's keys: the wake-up socket, the server socket, then each
/// held connection at its slab key plus [`FIRST_HELD`].
pub(crate) const WAKE: usize = 0;
pub(crate) const LISTENER: usize = 1;
pub(crate) const FIRST_HELD: usize = 2;

#[cfg(any(target_os = "linux", target_os = "android"))]
mod backend {
    use super::*;
    use crate::sys::{Epoll, Events, ONESHOT, READ, WRITE};

    pub(super) type Poller = Epoll;

    pub(super) fn new() -> io::Result<Poller> {
        Epoll::new()
    }

    fn events(interest: Interest) -> u32 {
        match interest {
            Interest::Read => READ | ONESHOT,
            Interest::ReadWrite => READ | WRITE | ONESHOT,
            Interest::Nothing => ONESHOT,
            Interest::Level => READ,
        }
    }

    pub(super) fn add(poller: &Poller, fd: BorrowedFd<'_>, key: usize, interest: Interest) -> io::Result<()> {
        poller.add(fd, key as u64, events(interest))
    }

    pub(super) fn modify(poller: &Poller, fd: BorrowedFd<'_>, key: usize, interest: Interest) -> io::Result<()> {
        poller.modify(fd, key as u64, events(interest))
    }

    pub(super) fn delete(poller: &Poller, fd: BorrowedFd<'_>) {
        // Only fails for an fd that is not registered: nothing to undo.
        let _ = poller.delete(fd);
    }

    /// What one wait reported; the buffer is reused.
    pub(super) type Ready = Events;

    pub(super) fn wait<'a>(
        poller: &Poller,
        ready: &'a mut Ready,
        timeout: Option<Duration>,
    ) -> io::Result<impl Iterator<Item = usize> + 'a> {
        poller.wait(ready, timeout)?;
        Ok(ready.keys())
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
mod backend {
    use std::os::fd::AsRawFd;

    use polling::{Event, Events, PollMode};

    use super::*;

    pub(super) type Poller = polling::Poller;

    pub(super) fn new() -> io::Result<Poller> {
        Poller::new()
    }

    fn event(interest: Interest, key: usize) -> (Event, PollMode) {
        match interest {
            Interest::Read => (Event::readable(key), PollMode::Oneshot),
            Interest::ReadWrite => (Event::all(key), PollMode::Oneshot),
            Interest::Nothing => (Event::none(key), PollMode::Oneshot),
            Interest::Level => (Event::readable(key), PollMode::Level),
        }
    }

    pub(super) fn add(poller: &Poller, fd: BorrowedFd<'_>, key: usize, interest: Interest) -> io::Result<()> {
        let (event, mode) = event(interest, key);
        crate::sys::poller_add(poller, fd.as_raw_fd(), event, mode)
    }

    pub(super) fn modify(poller: &Poller, fd: BorrowedFd<'_>, key: usize, interest: Interest) -> io::Result<()> {
        let (event, mode) = event(interest, key);
        poller.modify_with_mode(fd, event, mode)
    }

    pub(super) fn delete(poller: &Poller, fd: BorrowedFd<'_>) {
        // Only fails for an fd that is not registered: nothing to undo.
        let _ = poller.delete(fd);
    }

    /// The events of one wait; the buffer is reused.
    pub(super) struct Ready(Events);

    impl Default for Ready {
        fn default() -> Self {
            Ready(Events::new())
        }
    }

    pub(super) fn wait<'a>(
        poller: &Poller,
        ready: &'a mut Ready,
        timeout: Option<Duration>,
    ) -> io::Result<impl Iterator<Item = usize> + 'a> {
        ready.0.clear();
        match poller.wait(&mut ready.0, timeout) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        Ok(ready.0.iter().map(|e| e.key))
    }
}

/// Re-arms held connections from a worker's thread.
pub(crate) struct Rearmer(Arc<backend::Poller>);

impl Rearmer {
    /// Arms the fd of the connection held at slab key `key` to report its
    /// next input. The fd must be registered, and stays open for the call.
    pub(crate) fn read(&self, fd: BorrowedFd<'_>, key: usize) -> io::Result<()> {
        backend::modify(&self.0, fd, key + FIRST_HELD, Interest::Read)
    }

    /// Registers the fd of the connection held at slab key `key`, armed
    /// to report its next input: its first wait. The caller removes it
    /// before it closes, and it stays open for the call.
    pub(crate) fn register(&self, fd: BorrowedFd<'_>, key: usize) -> io::Result<()> {
        backend::add(&self.0, fd, key + FIRST_HELD, Interest::Read)
    }

    /// Forgets `fd`, before it closes.
    pub(crate) fn forget(&self, fd: BorrowedFd<'_>) {
        backend::delete(&self.0, fd);
    }
}

/// A poller and the buffer its reports land in.
pub(crate) struct Registry {
    poller: Arc<backend::Poller>,
    ready: backend::Ready,
}

impl Registry {
    pub(crate) fn new() -> io::Result<Registry> {
        Ok(Registry { poller: Arc::new(backend::new()?), ready: backend::Ready::default() })
    }

    /// A handle a worker re-arms a held connection's fd with, from its own
    /// thread (epoll and kqueue take changes from any thread).
    pub(crate) fn rearmer(&self) -> Rearmer {
        Rearmer(Arc::clone(&self.poller))
    }

    /// Registers `fd` under `key`. The caller removes it before it closes.
    pub(crate) fn add(&self, fd: BorrowedFd<'_>, key: usize, interest: Interest) -> io::Result<()> {
        backend::add(&self.poller, fd, key, interest)
    }

    /// Re-arms `fd`, which reported (or was registered with) another interest.
    pub(crate) fn rearm(&self, fd: BorrowedFd<'_>, key: usize, interest: Interest) -> io::Result<()> {
        backend::modify(&self.poller, fd, key, interest)
    }

    /// Forgets `fd`, before it closes or leaves the loop.
    pub(crate) fn remove(&self, fd: BorrowedFd<'_>) {
        backend::delete(&self.poller, fd);
    }

    /// Waits until something registered is ready or `timeout` passes
    /// (`None`: no limit), and returns the keys of what was. Each oneshot
    /// one has reported once and waits disarmed for its next interest.
    pub(crate) fn wait(&mut self, timeout: Option<Duration>) -> io::Result<impl Iterator<Item = usize> + '_> {
        backend::wait(&self.poller, &mut self.ready, timeout)
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    use super::*;

    fn keys(registry: &mut Registry) -> Vec<usize> {
        registry.wait(Some(Duration::ZERO)).unwrap().collect()
    }

    #[test]
    fn a_oneshot_fd_reports_once_until_rearmed_and_a_level_fd_until_emptied() {
        let mut registry = Registry::new().unwrap();
        let (mut once_tx, once_rx) = UnixStream::pair().unwrap();
        let (mut level_tx, mut level_rx) = UnixStream::pair().unwrap();
        registry.add(once_rx.as_fd(), 7, Interest::Read).unwrap();
        registry.add(level_rx.as_fd(), WAKE, Interest::Level).unwrap();
        assert_eq!(keys(&mut registry), Vec::<usize>::new());
        once_tx.write_all(b"x").unwrap();
        level_tx.write_all(b"y").unwrap();
        let mut first = keys(&mut registry);
        first.sort_unstable();
        assert_eq!(first, [WAKE, 7]);
        // The oneshot fd still has its byte but is disarmed; the level one reports again.
        assert_eq!(keys(&mut registry), [WAKE]);
        level_rx.read_exact(&mut [0]).unwrap();
        assert_eq!(keys(&mut registry), Vec::<usize>::new());
        registry.rearm(once_rx.as_fd(), 7, Interest::Read).unwrap();
        assert_eq!(keys(&mut registry), [7]);
        registry.remove(once_rx.as_fd());
        registry.remove(level_rx.as_fd());
    }

    #[test]
    fn a_wait_with_a_timeout_never_ends_before_it() {
        let mut registry = Registry::new().unwrap();
        let started = std::time::Instant::now();
        let timeout = Duration::from_micros(1_500);
        assert_eq!(registry.wait(Some(timeout)).unwrap().count(), 0);
        assert!(started.elapsed() >= timeout, "woke after {:?}", started.elapsed());
    }
}
