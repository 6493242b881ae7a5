//! Stopping a server without polling: flags, and the loop's [`Waker`],
//! whose socket the serving loop waits on beside the server socket.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, ThreadId};

use crate::waker::{Wake, Waker};

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

#[derive(Debug)]
struct Shared {
    requested: AtomicBool,
    aborted: AtomicBool,
    handed_over: AtomicBool,
    /// The loop's waker: a stop wakes it at once.
    waker: Waker,
    serving: Mutex<Serving>,
    stopped: Condvar,
}

impl ShutdownHandle {
    pub(crate) fn new() -> io::Result<Self> {
        Ok(ShutdownHandle {
            shared: Arc::new(Shared {
                requested: AtomicBool::new(false),
                aborted: AtomicBool::new(false),
                handed_over: AtomicBool::new(false),
                waker: Waker::new()?,
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
        self.shared.waker.wake(Wake::Stop);
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

    /// Whether a stop was asked for and no serving loop has acted on it yet.
    pub fn is_shutdown_requested(&self) -> bool {
        self.shared.requested.load(Ordering::SeqCst)
    }

    fn serving(&self) -> MutexGuard<'_, Serving> {
        self.shared.serving.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The waker of the loop this handle stops.
    pub(crate) fn waker(&self) -> &Waker {
        &self.shared.waker
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
