//! Socket calls socket2 does not make: sends without SIGPIPE, receives that
//! never block, datagram truncation, a cut by fd number, listening and blocking
//! state.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::RawFd;

use socket2::{MaybeUninitSlice, SockAddr, Socket};

/// On Linux a send to a closed peer raises SIGPIPE unless told not to; the
/// error return is all a server wants. (macOS uses SO_NOSIGPIPE instead.)
#[cfg(any(
    target_os = "linux",
    target_os = "android",
    target_os = "freebsd",
    target_os = "netbsd",
    target_os = "openbsd"
))]
pub(crate) const NO_SIGNAL: libc::c_int = libc::MSG_NOSIGNAL;
#[cfg(not(any(
    target_os = "linux",
    target_os = "android",
    target_os = "freebsd",
    target_os = "netbsd",
    target_os = "openbsd"
)))]
pub(crate) const NO_SIGNAL: libc::c_int = 0;

/// One receive that never blocks (MSG_DONTWAIT), whatever the socket's
/// mode; with `peek`, the bytes stay queued (MSG_PEEK).
pub(crate) fn recv_now(socket: &Socket, buf: &mut [u8], peek: bool) -> io::Result<usize> {
    let flags = libc::MSG_DONTWAIT | if peek { libc::MSG_PEEK } else { 0 };
    // SAFETY: as in `recv_datagram`: same layout, and only initialised bytes
    // are written into the slice.
    let uninit = unsafe { &mut *(buf as *mut [u8] as *mut [MaybeUninit<u8>]) };
    socket.recv_with_flags(uninit, flags)
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

/// `shutdown(fd, SHUT_RDWR)` on a connection known only by its fd number:
/// how a drain cuts a connection without needing a second fd to do it.
/// The caller guarantees `fd` is still the connection's open socket.
pub(crate) fn shutdown_both(fd: RawFd) -> io::Result<()> {
    // SAFETY: shutdown has no memory-safety preconditions; it acts on the
    // socket `fd` names, which the caller guarantees is still the one meant
    // (see `dispatch::capacity` for how its close is ordered after this).
    if unsafe { libc::shutdown(fd, libc::SHUT_RDWR) } == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// Whether a stream socket listens (SO_ACCEPTCONN); `None` where the OS
/// cannot tell.
pub(crate) fn is_listening(socket: &Socket) -> Option<bool> {
    #[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
    return socket.is_listener().ok();
    #[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
    return {
        let _ = socket;
        None
    };
}

/// A connection just accepted blocks, whatever the listener was: Linux's
/// accept4 never passes O_NONBLOCK on, the BSDs do.
pub(crate) fn accepted_blocking(_conn: &Socket) -> io::Result<()> {
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    _conn.set_nonblocking(false)?;
    Ok(())
}
