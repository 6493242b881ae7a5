//! The crate's only `unsafe` code: raw libc calls socket2 and std do not cover.
//! Each block states why it is sound.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::{Duration, Instant};

use socket2::{MaybeUninitSlice, SockAddr, Socket};

/// `poll(2)` for readability on `fds` (their `events` are set here), until
/// one is ready or `timeout` passes (`None`: no limit). Retries on EINTR with
/// the time that is left. Afterwards `revents` says which are ready; errors
/// and hang-ups count as ready, so the read that follows reports them.
pub(crate) fn poll_readable(fds: &mut [libc::pollfd], timeout: Option<Duration>) -> io::Result<()> {
    let deadline = timeout.map(|t| Instant::now() + t);
    for fd in fds.iter_mut() {
        fd.events = libc::POLLIN;
        fd.revents = 0;
    }
    loop {
        let millis = match deadline {
            None => -1,
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                // Round up so a sub-millisecond wait does not spin at 0.
                left.as_micros().div_ceil(1000).min(i32::MAX as u128) as libc::c_int
            }
        };
        // SAFETY: `fds` is a live, exclusively borrowed slice of pollfd structs
        // and its length is passed with it. poll reads the fd numbers only as
        // numbers: one that is closed is reported as POLLNVAL, not misused.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, millis) };
        if ready >= 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// A pollfd entry for `fd`, to fill a reusable poll set.
pub(crate) fn poll_entry(fd: BorrowedFd<'_>) -> libc::pollfd {
    libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 }
}

/// Receives one datagram into `buf`. Returns its length, whether it was
/// truncated (it did not fit in `buf`: MSG_TRUNC), and the sender.
pub(crate) fn recv_datagram(socket: &Socket, buf: &mut [u8]) -> io::Result<(usize, bool, SockAddr)> {
    // SAFETY: `MaybeUninit<u8>` has the same layout as `u8`, and socket2 only
    // ever writes initialised bytes into the slice, so `buf` stays fully
    // initialised when the borrow ends.
    let uninit = unsafe { &mut *(buf as *mut [u8] as *mut [MaybeUninit<u8>]) };
    let (len, flags, from) = socket.recv_from_vectored(&mut [MaybeUninitSlice::new(uninit)])?;
    Ok((len, flags.is_truncated(), from))
}

/// Which side of a `fork` the caller is on.
pub(crate) enum Forked {
    Child,
    Parent(libc::pid_t),
}

/// `fork(2)`. The child starts with only the calling thread; it must finish
/// with [`exit_child`] and never return into the parent's serving loop.
pub(crate) fn fork() -> io::Result<Forked> {
    // SAFETY: fork has no memory-safety preconditions. The child only serves
    // one request and then leaves through `_exit`, as Python's ForkingMixIn
    // does; the crate documents that fork mode suits single-threaded servers.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent(pid)),
    }
}

/// Ends a forked child at once with `code`, without running the parent's
/// destructors, atexit handlers or stdio flushes.
pub(crate) fn exit_child(code: i32) -> ! {
    // SAFETY: `_exit` is always safe to call; it never returns.
    unsafe { libc::_exit(code) }
}

/// How a child process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChildExit {
    Code(i32),
    Signal(i32),
}

/// Reaps child `pid` if it has exited (`block`: wait until it does).
/// Only ever waits on that one pid, never on "any child".
pub(crate) fn reap(pid: libc::pid_t, block: bool) -> io::Result<Option<ChildExit>> {
    let mut status = 0;
    let flags = if block { 0 } else { libc::WNOHANG };
    loop {
        // SAFETY: `status` is a valid, exclusively borrowed c_int for the
        // kernel to write; waitpid has no other preconditions.
        let r = unsafe { libc::waitpid(pid, &mut status, flags) };
        match r {
            0 => return Ok(None),
            -1 => {
                let err = io::Error::last_os_error();
                if err.kind() != io::ErrorKind::Interrupted {
                    return Err(err);
                }
            }
            _ if libc::WIFEXITED(status) => return Ok(Some(ChildExit::Code(libc::WEXITSTATUS(status)))),
            _ if libc::WIFSIGNALED(status) => return Ok(Some(ChildExit::Signal(libc::WTERMSIG(status)))),
            // Stopped or continued: not an exit; only reported with WUNTRACED/WCONTINUED, which we never pass.
            _ => return Ok(None),
        }
    }
}

/// Sends SIGKILL to child `pid`, one of the server's own.
pub(crate) fn kill(pid: libc::pid_t) -> io::Result<()> {
    // SAFETY: kill has no memory-safety preconditions; `pid` is a child this
    // server forked and has not reaped, so it cannot name another process.
    if unsafe { libc::kill(pid, libc::SIGKILL) } == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}
