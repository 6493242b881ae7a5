//! Waking the serving loop: a socket pair whose read end the loop waits on
//! beside its other fds, and the reasons ([`Wake`]) given since it last
//! looked. Workers, the dispatcher's slots, forked children and the stop
//! handle wake it through a [`Waker`]; a wake-up while one is pending costs
//! an atomic, not a write.

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

/// Why the serving loop is woken. A waker in the process adds its reason
/// to the pending ones and writes to the wake-up socket only if none was
/// pending; the loop takes them all at once when the socket reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Wake {
    /// A stop, an abort or a hand-over was asked for (the stop handle's
    /// flags say which).
    Stop = 1,
    /// A request ended and freed its slot, and its fd: accepting may resume.
    SlotFreed = 2,
    /// A connection was handed back that the loop must look at now.
    Returned = 4,
    /// A forked child is exiting. Written by the child itself, whose
    /// memory is not the parent's: it travels as the byte on the socket.
    ChildExited = 8,
}

/// The reasons one wake-up brought.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Reasons(u8);

impl Reasons {
    pub(crate) fn has(self, why: Wake) -> bool {
        self.0 & why as u8 != 0
    }
}

/// Wakes one serving loop. Cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct Waker(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    /// Reasons (`Wake` bits) given since the loop last took them.
    reasons: AtomicU8,
    tx: UnixStream,
    rx: UnixStream,
}

impl Waker {
    pub(crate) fn new() -> io::Result<Waker> {
        let (tx, rx) = UnixStream::pair()?;
        tx.set_nonblocking(true)?;
        rx.set_nonblocking(true)?;
        Ok(Waker(Arc::new(Inner { reasons: AtomicU8::new(0), tx, rx })))
    }

    /// Wakes the serving loop, saying why.
    ///
    /// A reason added while others are pending needs no write: the loop
    /// has a byte to read and takes every reason after reading it (see
    /// [`take`](Self::take)), this one included.
    pub(crate) fn wake(&self, why: Wake) {
        if self.0.reasons.fetch_or(why as u8, Ordering::SeqCst) == 0 {
            self.write(why);
        }
    }

    /// Wakes the serving loop from a forked child, whose `reasons` are a
    /// copy the parent never sees: the reason goes as the byte.
    pub(crate) fn wake_from_child(&self) {
        self.write(Wake::ChildExited);
    }

    fn write(&self, why: Wake) {
        // A full socket means a wake-up is already pending, which is all we need.
        let _ = (&self.0.tx).write(&[why as u8]);
    }

    /// The fd the serving loop waits on.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.0.rx.as_fd()
    }

    /// Empties the wake-up socket after it reported, so a wake-up that
    /// arrived after its reason was taken cannot make the wait spin, and
    /// returns every reason given since the last call.
    ///
    /// The order matters: the socket is emptied first, then the reasons
    /// taken. A waker that adds its reason after the take finds none
    /// pending and writes a byte, which the next wait sees; one that adds
    /// it before is in this take.
    pub(crate) fn take(&self) -> Reasons {
        let mut drain = [0u8; 64];
        let mut bytes = 0;
        while let Ok(n @ 1..) = (&self.0.rx).read(&mut drain) {
            bytes |= drain[..n].iter().fold(0, |all, b| all | b);
        }
        Reasons(bytes | self.0.reasons.swap(0, Ordering::SeqCst))
    }
}
