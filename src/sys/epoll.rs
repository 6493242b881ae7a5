//! The serving loop's epoll instance on Linux: oneshot registrations as the
//! `polling` crate makes them, without what `polling` adds to every wait (a
//! `timerfd_settime` and two `epoll_ctl` calls for its timer and its
//! notifier, which this loop does not use: it has its own wake-up socket).
//! A wait is one `epoll_wait`, its timeout rounded up to whole
//! milliseconds: it never ends before the deadline it was given, and at
//! most a millisecond after.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// Input, a hang-up or an error.
pub(crate) const READ: u32 = (libc::EPOLLIN | libc::EPOLLRDHUP) as u32;
/// Room to send.
pub(crate) const WRITE: u32 = libc::EPOLLOUT as u32;
/// Report once, then stay quiet until modified.
pub(crate) const ONESHOT: u32 = libc::EPOLLONESHOT as u32;
/// Report each change, not the state: one report per write.
pub(crate) const EDGE: u32 = libc::EPOLLET as u32;
/// The bits of a report that say no more bytes will come after those
/// waiting: the peer ended its side, or the connection failed.
pub(crate) const ENDED: u32 = (libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) as u32;

/// An epoll instance.
#[derive(Debug)]
pub(crate) struct Epoll(OwnedFd);

impl Epoll {
    pub(crate) fn new() -> io::Result<Epoll> {
        // SAFETY: epoll_create1 takes no pointers; a non-negative result is
        // a new fd that nothing else owns.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created and is owned here alone.
        Ok(Epoll(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, data: u64, events: u32) -> io::Result<()> {
        let mut event = libc::epoll_event { events, u64: data };
        // SAFETY: `event` is a live epoll_event for the call; epoll_ctl reads
        // `fd` as a number only (a closed one fails with EBADF).
        if unsafe { libc::epoll_ctl(self.0.as_raw_fd(), op, fd, &mut event) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Registers `fd`, its reports carrying `data`. A report taken before
    /// the fd closed may still name it: the loop's registry deletes an fd
    /// before it closes; the workers' parking numbers each arm instead.
    pub(crate) fn add(&self, fd: BorrowedFd<'_>, data: u64, events: u32) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd.as_raw_fd(), data, events)
    }

    /// Changes what a registered `fd` reports, and the data its reports
    /// carry (and re-arms a oneshot one).
    pub(crate) fn modify(&self, fd: BorrowedFd<'_>, data: u64, events: u32) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, fd.as_raw_fd(), data, events)
    }

    pub(crate) fn delete(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_DEL, fd.as_raw_fd(), 0, 0)
    }

    /// Waits until something is ready or `timeout` passes (`None`: no
    /// limit), leaving what was in `events` (emptied first). A signal that
    /// interrupts the wait ends it with nothing.
    pub(crate) fn wait(&self, events: &mut Events, timeout: Option<Duration>) -> io::Result<()> {
        let list = &mut events.0;
        list.clear();
        let millis = timeout.map_or(-1, |t| t.as_micros().div_ceil(1000).min(i32::MAX as u128) as libc::c_int);
        let room = list.capacity().min(libc::c_int::MAX as usize);
        // SAFETY: the list's spare capacity is `room` epoll_events of
        // writable memory, and `room` is the count passed: the kernel
        // writes at most that many.
        let n = unsafe { libc::epoll_wait(self.0.as_raw_fd(), list.as_mut_ptr(), room as libc::c_int, millis) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted { Ok(()) } else { Err(e) };
        }
        // SAFETY: epoll_wait initialised the first `n` (at most `room`) entries.
        unsafe { list.set_len(n as usize) };
        Ok(())
    }
}

/// Room for what one wait reports, allocated once and reused: a wait
/// writes into it without clearing it first.
pub(crate) struct Events(Vec<libc::epoll_event>);

impl Default for Events {
    fn default() -> Self {
        Events(Vec::with_capacity(1024))
    }
}

impl Events {
    /// Room for `n` reports a wait.
    pub(crate) fn with_capacity(n: usize) -> Events {
        Events(Vec::with_capacity(n))
    }

    /// The keys of what the last wait reported.
    pub(crate) fn keys(&self) -> impl Iterator<Item = usize> + '_ {
        self.0.iter().map(|e| e.u64 as usize)
    }

    /// What the last wait reported: each report's data, with its event bits.
    pub(crate) fn reports(&self) -> impl Iterator<Item = (u64, u32)> + '_ {
        self.0.iter().map(|e| (e.u64, e.events))
    }
}

/// A counter other threads bump to wake a waiter on an epoll instance
/// (Linux's eventfd): unlike a socket pair it never fills, so a writer that
/// never has it read loses no wake-up.
#[derive(Debug)]
pub(crate) struct EventFd(OwnedFd);

impl EventFd {
    pub(crate) fn new() -> io::Result<EventFd> {
        // SAFETY: eventfd takes no pointers; a non-negative result is a new
        // fd that nothing else owns.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created and is owned here alone.
        Ok(EventFd(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Adds one: a waiter registered for its input is told.
    pub(crate) fn signal(&self) {
        let one = 1u64.to_ne_bytes();
        // SAFETY: `one` is 8 readable bytes for the call, the size eventfd
        // takes. It fails only when the counter would pass 2^64 - 2, which
        // a count of wake-ups never reaches; a failure wakes nobody, and
        // nothing else is at stake.
        let _ = unsafe { libc::write(self.0.as_raw_fd(), one.as_ptr().cast(), one.len()) };
    }

    pub(crate) fn as_fd(&self) -> BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.0.as_fd()
    }
}
