//! The crate's only `unsafe` code: raw libc calls socket2 and std do not cover.
//! Each block states why it is sound.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::{Duration, Instant};

use socket2::{MaybeUninitSlice, SockAddr, Socket};

/// Waits until any of `fds` is readable, or `timeout` passes (`None`: no limit).
/// Returns which fds are readable (all false on timeout). Retries on EINTR
/// with the time that is left.
pub(crate) fn wait_readable<const N: usize>(
    fds: [BorrowedFd<'_>; N],
    timeout: Option<Duration>,
) -> io::Result<[bool; N]> {
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut pollfds = fds.map(|fd| libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 });
    loop {
        let millis = match deadline {
            None => -1,
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                // Round up so a sub-millisecond wait does not spin at 0.
                left.as_micros().div_ceil(1000).min(i32::MAX as u128) as libc::c_int
            }
        };
        // SAFETY: `pollfds` is a live, exclusively borrowed array of N pollfd
        // structs and N is passed as its length; the fds are borrowed, so
        // they stay open for the duration of the call.
        let ready = unsafe { libc::poll(pollfds.as_mut_ptr(), N as libc::nfds_t, millis) };
        if ready >= 0 {
            // Errors and hang-ups count as readable: the read that follows reports them.
            return Ok(pollfds.map(|p| p.revents != 0));
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
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
