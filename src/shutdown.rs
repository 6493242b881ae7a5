//! Stopping a server without polling: a flag plus a wake-up socket that the
//! serving loop waits on beside the server socket.

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, ThreadId};

/// Stops a server's [`serve_forever`](crate::Server::serve_forever) from any
/// thread, at once: the loop waits (epoll, kqueue) on this handle's wake-up
/// socket, so there is no poll interval to sit out.
///
/// Cheap to clone; every clone controls the same server.
///
/// ```
/// # use socketserver::{TcpServer, Request};
/// let mut server = TcpServer::bind("127.0.0.1:0", |_: &mut Request<'_>| Ok(()))?;
/// let stop = server.shutdown_handle();
/// let serving = std::thread::spawn(move || server.serve_forever());
/// stop.shutdown(); // returns once serve_forever has returned
/// serving.join().unwrap()?;
/// # Ok::<(), socketserver::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct ShutdownHandle {
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Serving {
    /// The thread running a serving loop, if one is.
    thread: Option<ThreadId>,
    /// How many serving loops have ended, so a waiter can tell that the loop
    /// it waited for is over even if another has started since.
    ended: u64,
}

/// Why the serving loop is woken. A waker in the process adds its reason
/// to the pending ones and writes to the wake-up socket only if none was
/// pending; the loop takes them all at once when the socket reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Wake {
    /// A stop, an abort or a hand-over was asked for (the flags say which).
    Stop = 1,
    /// A request ended and freed its slot, and its fd: accepting may resume.
    SlotFreed = 2,
    /// A worker gave back a connection the loop must look at now.
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

#[derive(Debug)]
struct Shared {
    requested: AtomicBool,
    /// Reasons (`Wake` bits) given since the loop last took them.
    reasons: AtomicU8,
    aborted: AtomicBool,
    handed_over: AtomicBool,
    wake_tx: UnixStream,
    wake_rx: UnixStream,
    serving: Mutex<Serving>,
    stopped: Condvar,
}

impl ShutdownHandle {
    pub(crate) fn new() -> io::Result<Self> {
        let (wake_tx, wake_rx) = UnixStream::pair()?;
        wake_tx.set_nonblocking(true)?;
        wake_rx.set_nonblocking(true)?;
        Ok(ShutdownHandle {
            shared: Arc::new(Shared {
                requested: AtomicBool::new(false),
                reasons: AtomicU8::new(0),
                aborted: AtomicBool::new(false),
                handed_over: AtomicBool::new(false),
                wake_tx,
                wake_rx,
                serving: Mutex::new(Serving::default()),
                stopped: Condvar::new(),
            }),
        })
    }

    /// Asks the server to stop and waits until its serving loop has returned
    /// (Python's `shutdown()`).
    ///
    /// Unlike Python's, it never deadlocks: called on the serving thread
    /// itself (from a handler or hook), or while no loop runs, it returns at
    /// once. A request made while no loop runs makes the next
    /// `serve_forever` or `handle_request` return immediately.
    pub fn shutdown(&self) {
        self.request_shutdown();
        let me = thread::current().id();
        let mut serving = self.serving();
        let ended = serving.ended;
        while serving.thread.is_some_and(|t| t != me) && serving.ended == ended {
            serving = self.shared.stopped.wait(serving).unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Asks the server to stop and returns without waiting.
    pub fn request_shutdown(&self) {
        self.shared.requested.store(true, Ordering::SeqCst);
        self.wake(Wake::Stop);
    }

    /// Asks the server to stop now, without waiting for its requests: like
    /// [`request_shutdown`](Self::request_shutdown), and a close that drains
    /// with a [`drain_timeout`](crate::ServerBuilder::drain_timeout) (now or
    /// later) cuts what is still running at once, as if the timeout had
    /// passed: connections are shut down and children killed, each with a
    /// log line. This is the second Ctrl-C of a server that is draining.
    /// Without a drain timeout there is no drain to cut, and closing waits
    /// as `block_on_close` says. Returns without waiting.
    pub fn abort(&self) {
        self.shared.aborted.store(true, Ordering::SeqCst);
        self.request_shutdown();
    }

    /// Stops serving because another process now serves the same socket
    /// (a restart: see `systemd::Successor`): like
    /// [`request_shutdown`](Self::request_shutdown), and on close the server
    /// leaves clients waiting in the listen backlog, and its Unix socket
    /// file, to the other process instead of closing and removing them.
    /// Connections it already accepted are still its own: wherever they are
    /// on their way to a handler (a PROXY header, a TLS handshake, waiting
    /// for their first byte or for room), they are carried on and served,
    /// within their deadlines and `drain_timeout`; requests running are
    /// finished (or cut) as in any close.
    pub fn hand_over(&self) {
        self.shared.handed_over.store(true, Ordering::SeqCst);
        self.request_shutdown();
    }

    pub(crate) fn is_handed_over(&self) -> bool {
        self.shared.handed_over.load(Ordering::SeqCst)
    }

    /// Whether [`abort`](Self::abort) was called.
    pub fn is_aborted(&self) -> bool {
        self.shared.aborted.load(Ordering::SeqCst)
    }

    /// Wakes the serving loop, saying why.
    ///
    /// A reason added while others are pending needs no write: the loop
    /// has a byte to read and takes every reason after reading it (see
    /// `take_wakeups`), this one included.
    pub(crate) fn wake(&self, why: Wake) {
        if self.shared.reasons.fetch_or(why as u8, Ordering::SeqCst) == 0 {
            self.write_wakeup(why);
        }
    }

    /// Wakes the serving loop from a forked child, whose `reasons` are a
    /// copy the parent never sees: the reason goes as the byte.
    pub(crate) fn wake_from_child(&self) {
        self.write_wakeup(Wake::ChildExited);
    }

    fn write_wakeup(&self, why: Wake) {
        // A full socket means a wake-up is already pending, which is all we need.
        let _ = (&self.shared.wake_tx).write(&[why as u8]);
    }

    /// Whether a stop was asked for and no serving loop has acted on it yet.
    pub fn is_shutdown_requested(&self) -> bool {
        self.shared.requested.load(Ordering::SeqCst)
    }

    fn serving(&self) -> MutexGuard<'_, Serving> {
        self.shared.serving.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The fd the serving loop polls beside the server socket.
    pub(crate) fn wake_fd(&self) -> BorrowedFd<'_> {
        self.shared.wake_rx.as_fd()
    }

    /// Marks the calling thread as the one serving, until the guard drops.
    pub(crate) fn enter_loop(&self) -> LoopGuard<'_> {
        self.serving().thread = Some(thread::current().id());
        LoopGuard { handle: self }
    }

    /// Consumes a pending request: true if the loop must stop now.
    pub(crate) fn take_request(&self) -> bool {
        self.shared.requested.swap(false, Ordering::SeqCst)
    }

    /// Empties the wake-up socket after it reported, so a wake-up that
    /// arrived after its request was taken cannot make the wait spin, and
    /// returns every reason given since the last call.
    ///
    /// The order matters: the socket is emptied first, then the reasons
    /// taken. A waker that adds its reason after the take finds none
    /// pending and writes a byte, which the next wait sees; one that adds
    /// it before is in this take.
    pub(crate) fn take_wakeups(&self) -> Reasons {
        let mut drain = [0u8; 64];
        let mut bytes = 0;
        while let Ok(n @ 1..) = (&self.shared.wake_rx).read(&mut drain) {
            bytes |= drain[..n].iter().fold(0, |all, b| all | b);
        }
        Reasons(bytes | self.shared.reasons.swap(0, Ordering::SeqCst))
    }
}

/// Held by a running serving loop; dropping it wakes threads in `shutdown`.
pub(crate) struct LoopGuard<'a> {
    handle: &'a ShutdownHandle,
}

impl Drop for LoopGuard<'_> {
    fn drop(&mut self) {
        let mut serving = self.handle.serving();
        serving.thread = None;
        serving.ended += 1;
        self.handle.shared.stopped.notify_all();
    }
}
