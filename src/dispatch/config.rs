//! The dispatch modes users choose from, with Python's defaults where Python
//! has one and bounded resources everywhere.

use crate::Error;

/// How a server runs its requests. Set with
/// [`ServerBuilder::dispatch`](crate::ServerBuilder::dispatch), or the
/// builder's shortcuts [`threading`](crate::ServerBuilder::threading),
/// [`pool`](crate::ServerBuilder::pool) and [`forking`](crate::ServerBuilder::forking).
///
/// ```
/// use socketserver::{Dispatch, Request, TcpServer, Threading};
/// let h = |_: &mut Request<'_>| Ok(());
/// let threaded = TcpServer::builder(h).dispatch(Threading::new().max_threads(256).into()).bind("127.0.0.1:0")?;
/// let pooled = TcpServer::builder(h).dispatch(Dispatch::pool(8)).bind("127.0.0.1:0")?;
/// # Ok::<(), socketserver::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dispatch(pub(crate) Mode);

/// The dispatch modes, behind [`Dispatch`] so new ones can come.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) enum Mode {
    #[default]
    Sequential,
    Threads(Threading),
    Pool(WorkerPool),
    Fork(Forking),
}

impl Dispatch {
    /// One request at a time on the serving thread (Python's plain servers).
    /// The default.
    pub fn sequential() -> Dispatch {
        Dispatch(Mode::Sequential)
    }

    /// A thread per request (Python's `ThreadingMixIn`), with Python's
    /// defaults and no cap; see [`Threading`] for the settings.
    pub fn threads() -> Dispatch {
        Threading::new().into()
    }

    /// A fixed pool of `workers` threads with a queue of as many requests;
    /// see [`WorkerPool`] for the settings.
    pub fn pool(workers: usize) -> Dispatch {
        WorkerPool::new(workers).into()
    }

    /// A child process per request (Python's `ForkingMixIn`), with Python's
    /// defaults; see [`Forking`] for the settings, and what a forking server
    /// must not do.
    pub fn fork() -> Dispatch {
        Forking::new().into()
    }

    /// Whether requests run in child processes.
    pub fn is_fork(&self) -> bool {
        matches!(self.0, Mode::Fork(_))
    }

    /// The setting that makes this mode unable to run a request, if any.
    pub(crate) fn check(&self) -> Result<(), Error> {
        let zero = match &self.0 {
            Mode::Threads(Threading { max_threads: Some(0), .. }) => "max_threads",
            Mode::Pool(WorkerPool { workers: 0, .. }) => "workers",
            Mode::Fork(Forking { max_children: 0, .. }) => "max_children",
            _ => return Ok(()),
        };
        Err(Error::Config { option: zero, problem: "0 would never run a request" })
    }
}

/// Thread-per-request settings (Python's `ThreadingMixIn`).
///
/// Finished threads are forgotten as the serving loop turns, so their handles
/// never pile up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Threading {
    pub(crate) max_threads: Option<usize>,
    pub(crate) daemon_threads: bool,
    pub(crate) block_on_close: bool,
    pub(crate) stack_size: Option<usize>,
}

impl Threading {
    /// Python's defaults: no cap, `daemon_threads` off, `block_on_close` on.
    pub fn new() -> Self {
        Threading { max_threads: None, daemon_threads: false, block_on_close: true, stack_size: None }
    }

    /// At most `n` handler threads at once. At the cap the server stops
    /// taking requests until one finishes: clients wait, none is dropped.
    /// Binding refuses 0 with [`Error::Config`](crate::Error::Config).
    pub fn max_threads(mut self, n: usize) -> Self {
        self.max_threads = Some(n);
        self
    }

    /// Python's `daemon_threads`: on close, leave running handlers behind
    /// instead of waiting for them. Default: off.
    pub fn daemon_threads(mut self, on: bool) -> Self {
        self.daemon_threads = on;
        self
    }

    /// Python's `block_on_close`: on close, wait for running handlers.
    /// Default: on.
    pub fn block_on_close(mut self, on: bool) -> Self {
        self.block_on_close = on;
        self
    }

    /// Stack size of each handler thread, in bytes (Rust's default is 2 MiB).
    /// A small stack lets one process hold many idle connections.
    pub fn stack_size(mut self, bytes: usize) -> Self {
        self.stack_size = Some(bytes);
        self
    }
}

impl Default for Threading {
    fn default() -> Self {
        Threading::new()
    }
}

impl From<Threading> for Dispatch {
    fn from(config: Threading) -> Dispatch {
        Dispatch(Mode::Threads(config))
    }
}

/// Worker-pool settings: a fixed number of threads, a bounded queue.
///
/// When every worker is busy and the queue is full, the server stops taking
/// requests until a worker frees; clients wait in the kernel's backlog.
/// Queued requests are still served when the server closes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerPool {
    pub(crate) workers: usize,
    pub(crate) queue: usize,
    pub(crate) stack_size: Option<usize>,
}

impl WorkerPool {
    /// `workers` threads and a queue of as many requests. Binding refuses
    /// 0 workers with [`Error::Config`](crate::Error::Config).
    pub fn new(workers: usize) -> Self {
        WorkerPool { workers, queue: workers, stack_size: None }
    }

    /// How many taken requests may wait for a worker. 0: a request is only
    /// taken when a worker is free.
    pub fn queue(mut self, requests: usize) -> Self {
        self.queue = requests;
        self
    }

    /// Stack size of each worker thread, in bytes.
    pub fn stack_size(mut self, bytes: usize) -> Self {
        self.stack_size = Some(bytes);
        self
    }
}

impl From<WorkerPool> for Dispatch {
    fn from(config: WorkerPool) -> Dispatch {
        Dispatch(Mode::Pool(config))
    }
}

/// Fork-per-request settings (Python's `ForkingMixIn`).
///
/// The parent closes its copy of the connection at once and reaps only its
/// own children, never "any child": processes the application started
/// elsewhere are left alone. A child exits 0 when its request was served, 1
/// when the handler failed, 2 when it panicked, 3 when it timed out; the
/// parent logs non-zero exits and counts each in [`Stats`](crate::Stats). Each child closes its copy of a stream server's listening socket
/// at once and puts caught signals back to their default actions (SIGTERM
/// stops it), which Python's children do not.
///
/// # What a forking server must not do
///
/// A child starts with only the thread that forked it. A lock another thread
/// of the parent held at that moment (a `Mutex` in the application, a
/// logger's, stdout's) stays locked for ever in the child, and a handler
/// that takes it deadlocks. Fork suits a process that runs no other threads
/// while it serves: don't combine it with a threaded server or a `ServerGroup`
/// in the same process, with background threads that take locks the handler
/// also takes, or with a logger that writes from a thread of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forking {
    pub(crate) max_children: usize,
    pub(crate) block_on_close: bool,
}

impl Forking {
    /// Python's defaults: `max_children` 40, `block_on_close` on.
    pub fn new() -> Self {
        Forking { max_children: 40, block_on_close: true }
    }

    /// At most `n` children at once; at the cap the server waits for one to
    /// exit. Binding refuses 0 with [`Error::Config`](crate::Error::Config).
    pub fn max_children(mut self, n: usize) -> Self {
        self.max_children = n;
        self
    }

    /// On close, wait for every child to exit. Default: on.
    pub fn block_on_close(mut self, on: bool) -> Self {
        self.block_on_close = on;
        self
    }
}

impl Default for Forking {
    fn default() -> Self {
        Forking::new()
    }
}

impl From<Forking> for Dispatch {
    fn from(config: Forking) -> Dispatch {
        Dispatch(Mode::Fork(config))
    }
}
