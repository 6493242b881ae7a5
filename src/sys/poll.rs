//! Readiness: whether an fd has input now, and registering an fd with the
//! loop's poller.

use std::io;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
use std::os::fd::RawFd;
use std::os::fd::{AsRawFd, BorrowedFd};

/// Whether `fd` has input, a hang-up or an error waiting right now: one
/// `poll(2)` that does not wait (retried if a signal interrupts it). Errors
/// and hang-ups count, so the read that follows reports them.
pub(crate) fn has_input(fd: BorrowedFd<'_>) -> bool {
    let mut entry = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    loop {
        // SAFETY: `entry` is one live, exclusively borrowed pollfd, and the
        // count passed is 1. poll reads the fd number only as a number: one
        // that is closed is reported as POLLNVAL, not misused.
        let ready = unsafe { libc::poll(&mut entry, 1, 0) };
        if ready >= 0 {
            return entry.revents != 0;
        }
        if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            return false;
        }
    }
}

/// Registers `fd` with `poller` in `mode`, which `polling` leaves to the caller to
/// keep sound. Every caller (`serving::registry`) removes the fd from the
/// poller before it closes, so the poller never reports a closed or reused
/// fd under a key meant for another.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub(crate) fn poller_add(
    poller: &polling::Poller,
    fd: RawFd,
    interest: polling::Event,
    mode: polling::PollMode,
) -> io::Result<()> {
    // SAFETY: `fd` is open for the call (the caller holds it), and is
    // deleted from the poller before it is closed, as `Poller::add` requires.
    unsafe { poller.add_with_mode(fd, interest, mode) }
}
