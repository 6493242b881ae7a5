//! Waking the serving loop: a socket pair whose read end the loop waits on
//! beside its other fds, and the reasons ([`Wake`]) given since it last
//! looked. Workers, the dispatcher's slots, forked children and the stop
//! handle wake it through a [`Waker`].
//!
//! Netty's rule: only a loop that sleeps is written to. A wake-up while the
//! loop is awake, or while a write is already pending, costs an atomic, not
//! a system call; the loop looks at the reasons before it sleeps again
//! ([`park`](Waker::park)).

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

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
    /// The loop is asleep, or about to be: a wake-up must write.
    parked: AtomicBool,
    tx: UnixStream,
    rx: UnixStream,
}

impl Waker {
    pub(crate) fn new() -> io::Result<Waker> {
        let (tx, rx) = UnixStream::pair()?;
        tx.set_nonblocking(true)?;
        rx.set_nonblocking(true)?;
        Ok(Waker(Arc::new(Inner { reasons: AtomicU8::new(0), parked: AtomicBool::new(false), tx, rx })))
    }

    /// Wakes the serving loop, saying why.
    ///
    /// Writes only to a loop that sleeps and has no reason pending: a loop
    /// that is awake takes this reason before it sleeps again (see
    /// [`park`](Self::park)), and one that was written to takes every
    /// reason after reading the byte ([`take`](Self::take)), this one
    /// included.
    ///
    /// The race, written down: the reason is set before `parked` is read
    /// here, and `parked` is set before the reasons are read in `park`, all
    /// sequentially consistent. So either this sees the loop parked and
    /// writes, or the loop's look in `park` sees this reason and does not
    /// sleep.
    pub(crate) fn wake(&self, why: Wake) {
        if self.0.reasons.fetch_or(why as u8, Ordering::SeqCst) == 0 && self.0.parked.load(Ordering::SeqCst) {
            self.write(why);
        }
    }

    /// The loop is about to sleep: from now on wake-ups write. False (and
    /// not parked) if a reason is already pending: then it must not sleep.
    pub(crate) fn park(&self) -> bool {
        self.0.parked.store(true, Ordering::SeqCst);
        if self.0.reasons.load(Ordering::SeqCst) != 0 {
            self.0.parked.store(false, Ordering::SeqCst);
            return false;
        }
        true
    }

    /// The loop is awake again: wake-ups only leave their reason.
    pub(crate) fn unpark(&self) {
        self.0.parked.store(false, Ordering::SeqCst);
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

    /// Every reason given since the last call, after each wait. The
    /// wake-up socket (`reported`: it did) is emptied first, so a byte that
    /// came after its reason was taken cannot make the next wait spin;
    /// then the reasons are taken. A waker that adds its reason after the
    /// take finds it taken by the next call, or the loop parked and
    /// writes; one that adds it before is in this take.
    pub(crate) fn take(&self, reported: bool) -> Reasons {
        let mut bytes = 0;
        if reported {
            let mut drain = [0u8; 64];
            while let Ok(n @ 1..) = (&self.0.rx).read(&mut drain) {
                bytes |= drain[..n].iter().fold(0, |all, b| all | b);
            }
        }
        Reasons(bytes | self.0.reasons.swap(0, Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::has_input;

    #[test]
    fn a_wake_up_while_the_loop_is_awake_writes_nothing_and_stops_its_next_sleep() {
        let waker = Waker::new().unwrap();
        waker.wake(Wake::Returned);
        assert!(!has_input(waker.fd()), "an awake loop was written to");
        assert!(!waker.park(), "the loop would sleep with a reason pending");
        assert!(waker.take(false).has(Wake::Returned));
        assert!(waker.park(), "nothing is pending once taken");
    }

    #[test]
    fn a_wake_up_while_the_loop_sleeps_writes_once_and_the_take_empties_the_socket() {
        let waker = Waker::new().unwrap();
        assert!(waker.park());
        waker.wake(Wake::SlotFreed);
        waker.wake(Wake::Returned);
        assert!(has_input(waker.fd()), "a sleeping loop was not woken");
        waker.unpark();
        let why = waker.take(true);
        assert!(why.has(Wake::SlotFreed) && why.has(Wake::Returned) && !why.has(Wake::Stop));
        assert!(!has_input(waker.fd()), "the wake-up socket was not emptied");
    }

    #[test]
    fn a_child_s_wake_up_travels_as_the_byte_even_while_the_loop_is_awake() {
        let waker = Waker::new().unwrap();
        waker.wake_from_child();
        assert!(has_input(waker.fd()));
        assert!(waker.take(true).has(Wake::ChildExited));
    }
}
