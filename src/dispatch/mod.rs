//! Dispatchers: where a request runs once the server has taken it, and the
//! limits that make the server stop taking requests (backpressure) instead
//! of dropping them.

mod capacity;
mod config;
mod fork;
mod parking;
mod pool;
mod threads;

use std::io;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use socket2::{SockAddr, Socket};

pub(crate) use config::Mode as Config;
pub use config::{Dispatch, Forking, Threading, WorkerPool};

use crate::handler_io::Incoming;
use crate::hooks::ErrorHook;
use crate::runner::{self, Context, MayHandBack, Scratch};
use crate::shutdown::ShutdownHandle;
use crate::stats::Counters;
use crate::{Address, Error, RequestHandler};
pub(crate) use capacity::{Capacity, Slot};
pub(crate) use parking::{Parking, Reports, Resume};

/// Ready work that runs itself (a framed connection's messages, answered
/// and handed back): a dispatcher decides where it runs, never what it does.
pub(crate) trait Work<H>: Send {
    /// The connection it answers, which a drain cuts through its fd.
    fn connection(&self) -> (&Socket, &Address);

    /// Runs it; `on_worker`: not on the loop's thread. `untrack` runs
    /// before the connection is handed back (a drain cuts through its fd,
    /// which must be ours while tracked) and says whether the drain cut it.
    fn run(self, ctx: &Context<H>, scratch: &mut Scratch, on_worker: bool, untrack: &mut dyn FnMut() -> bool)
    where
        Self: Sized;

    /// [`run`](Self::run), for work boxed to wait in the pool's queue
    /// (work run at once, or moved into its thread, is never boxed).
    fn run_boxed(
        self: Box<Self>,
        ctx: &Context<H>,
        scratch: &mut Scratch,
        on_worker: bool,
        untrack: &mut dyn FnMut() -> bool,
    );
}

/// The running state of a [`Dispatch`] mode.
pub(crate) struct Dispatcher<H> {
    mode: Mode<H>,
    capacity: Arc<Capacity>,
    /// The stop handle, whose abort cuts the drain short.
    stop: ShutdownHandle,
    /// When the drain on close ends: set by the server as its close begins
    /// (its own finishing turns share the drain's time).
    drain_deadline: Option<Instant>,
}

enum Mode<H> {
    Sequential,
    Threads(threads::Threads),
    Pool(pool::Pool<H>),
    Fork(fork::Fork),
}

impl Dispatch {
    /// Whether requests run on a pool of worker threads.
    pub(crate) fn is_pool(&self) -> bool {
        matches!(self.0, Config::Pool(_))
    }
}

impl<H: RequestHandler> Dispatcher<H> {
    /// `max_connections` is `None` for datagram servers, where it does not
    /// apply; `listener` is a stream server's listening socket; `parked`:
    /// where a pool's idle workers wait with the connections parked between
    /// requests, and the loop's side that holds them.
    #[allow(clippy::too_many_arguments, reason = "each is one part of the loop the dispatcher serves")]
    pub(crate) fn new(
        dispatch: &Dispatch,
        max_connections: Option<usize>,
        drain_timeout: Option<Duration>,
        stop: ShutdownHandle,
        listener: Option<RawFd>,
        counters: Arc<Counters>,
        on_error: ErrorHook,
        parked: Option<(Arc<Parking>, Arc<dyn Resume<H>>)>,
    ) -> Self {
        let limit = match &dispatch.0 {
            Config::Sequential => None,
            Config::Threads(config) => config.max_threads,
            Config::Pool(config) => Some(config.workers + config.queue),
            Config::Fork(config) => Some(config.max_children),
        };
        let limit = [limit, max_connections].into_iter().flatten().min();
        let track = drain_timeout.is_some() && matches!(dispatch.0, Config::Threads(_) | Config::Pool(_));
        let capacity = Capacity::new(limit, stop.waker().clone(), track, Arc::clone(&counters), Arc::clone(&on_error));
        let mode = match &dispatch.0 {
            Config::Sequential => Mode::Sequential,
            Config::Threads(config) => Mode::Threads(threads::Threads::new(config.clone())),
            Config::Pool(config) => {
                let parked =
                    parked.map(|(parking, resume)| pool::Parked { parking, resume, capacity: Arc::clone(&capacity) });
                Mode::Pool(pool::Pool::new(config.clone(), parked))
            }
            Config::Fork(config) => {
                Mode::Fork(fork::Fork::new(config.clone(), stop.waker().clone(), listener, counters, on_error))
            }
        };
        Dispatcher { mode, capacity, stop, drain_deadline: None }
    }

    /// Runs a stream request; the connection is closed when it is done.
    pub(crate) fn stream(&mut self, ctx: &Context<H>, mut conn: Incoming) {
        let mut slot = self.capacity.take_connection(&conn.socket, &conn.peer);
        let failed = match &mut self.mode {
            Mode::Sequential => {
                runner::serve_stream(ctx, conn, || slot.untrack(), MayHandBack::Quiet);
                return;
            }
            Mode::Threads(threads) => {
                let ctx = ctx.clone();
                let who = conn.peer.clone();
                // The slot first: dropped unrun, it is untracked before the socket closes.
                let job = (slot, conn);
                threads
                    .spawn(move || {
                        let (mut slot, conn) = job;
                        runner::serve_stream(&ctx, conn, || slot.untrack(), MayHandBack::Wake);
                    })
                    .err()
                    .map(|e| (threads::SPAWN, who, e))
            }
            Mode::Pool(pool) => pool.submit(ctx, pool::Job::Stream { conn, slot }).err(),
            // Children are not tracked: a drain kills them instead. The
            // parent keeps the connection's client counted until its child
            // is reaped (the child's copy of it counts nothing).
            Mode::Fork(fork) => {
                let kept = (slot, conn.client.take());
                fork.run(conn.peer.clone(), kept, || runner::serve_stream(ctx, conn, || false, MayHandBack::Unable))
                    .err()
            }
        };
        if let Some((action, peer, source)) = failed {
            (ctx.on_error)(&Error::Dispatch { action, peer, source });
        }
    }

    /// Runs `work` that the serving loop made ready (a framed connection's
    /// message), which hands its connection back itself. `scratch` is the
    /// server's, reused when it runs on the loop's thread.
    pub(crate) fn work<W: Work<H> + 'static>(&mut self, ctx: &Context<H>, work: W, scratch: &mut Scratch) {
        let (socket, peer) = work.connection();
        let mut slot = self.capacity.take_message(socket, peer);
        let failed = match &mut self.mode {
            Mode::Sequential => {
                work.run(ctx, scratch, false, &mut || slot.untrack());
                return;
            }
            Mode::Threads(threads) => {
                let ctx = ctx.clone();
                let who = peer.clone();
                threads
                    .spawn(move || work.run(&ctx, &mut Scratch::default(), true, &mut || slot.untrack()))
                    .err()
                    .map(|e| (threads::SPAWN, who, e))
            }
            Mode::Pool(pool) => pool.submit(ctx, pool::Job::Work { slot, work: Box::new(work) }).err(),
            // Refused when the server was built: a child cannot hand the
            // connection back.
            Mode::Fork(_) => {
                Some(("serve a framed message in a child", peer.clone(), io::ErrorKind::Unsupported.into()))
            }
        };
        if let Some((action, peer, source)) = failed {
            (ctx.on_error)(&Error::Dispatch { action, peer, source });
        }
    }

    /// Runs a datagram request. `scratch` is the server's, reused.
    pub(crate) fn datagram(
        &mut self,
        ctx: &Context<H>,
        socket: &Arc<Socket>,
        packet: &[u8],
        peer: Address,
        reply_to: &SockAddr,
        scratch: &mut Scratch,
    ) {
        let slot = self.capacity.take();
        let failed = match &mut self.mode {
            Mode::Sequential => {
                runner::serve_datagram(ctx, socket, packet, &peer, reply_to, scratch);
                return;
            }
            Mode::Threads(threads) => {
                let (ctx, socket, packet, who, reply_to) =
                    (ctx.clone(), Arc::clone(socket), packet.to_vec(), peer.clone(), reply_to.clone());
                let mut own = Scratch { ancillary: std::mem::take(&mut scratch.ancillary), ..Scratch::default() };
                threads
                    .spawn(move || {
                        let _slot = slot;
                        runner::serve_datagram(&ctx, &socket, &packet, &peer, &reply_to, &mut own);
                    })
                    .err()
                    .map(|e| (threads::SPAWN, who, e))
            }
            Mode::Pool(pool) => {
                let job = pool::Job::Datagram {
                    socket: Arc::clone(socket),
                    packet: packet.to_vec(),
                    peer,
                    reply_to: reply_to.clone(),
                    ancillary: std::mem::take(&mut scratch.ancillary),
                    slot,
                };
                pool.submit(ctx, job).err()
            }
            Mode::Fork(fork) => fork
                .run(peer.clone(), (slot, None), || {
                    runner::serve_datagram(ctx, socket, packet, &peer, reply_to, scratch)
                })
                .err(),
        };
        if let Some((action, peer, source)) = failed {
            (ctx.on_error)(&Error::Dispatch { action, peer, source });
        }
    }

    /// The drain on close ends at `deadline` (`None`: no drain timeout).
    pub(crate) fn drain_by(&mut self, deadline: Option<Instant>) {
        self.drain_deadline = deadline;
    }

    /// Once per loop turn: forget finished threads, reap exited children,
    /// start a pool's workers if connections may park with them.
    pub(crate) fn turn(&mut self, ctx: &Context<H>) {
        match &mut self.mode {
            Mode::Threads(threads) => threads.reap(),
            Mode::Fork(fork) => fork.reap(),
            Mode::Pool(pool) => pool.ready_to_park(ctx),
            Mode::Sequential => {}
        }
    }

    /// True while the server must not take another request; then the next
    /// running request to end wakes the loop (asked for before the last
    /// look, so a slot freed meanwhile is seen either here or by the wake-up).
    pub(crate) fn is_full(&self) -> bool {
        self.capacity.is_full()
    }

    /// Asks for a wake-up when the next running request ends (and frees its fd).
    pub(crate) fn wake_on_next_release(&self) {
        self.capacity.wake_on_next_release();
    }

    /// How long the loop may wait before it must look again even without a
    /// wake-up: a child announces its exit just before it exits, so one that
    /// was not yet gone at that turn (or was killed) is reaped on a later one.
    pub(crate) fn recheck_after(&self) -> Option<Duration> {
        match &self.mode {
            Mode::Fork(fork) if fork.has_children() => Some(fork::RECHECK),
            _ => None,
        }
    }

    /// Requests in flight: running in threads or children not yet reaped,
    /// or waiting in the pool's queue.
    pub(crate) fn active(&self) -> usize {
        self.capacity.active()
    }

    /// Stream connections a handler holds now (forked children's
    /// included), for `max_connections`.
    pub(crate) fn open_connections(&self) -> usize {
        self.capacity.connections()
    }
}

impl<H> Drop for Dispatcher<H> {
    /// Python's `server_close` for the mixins: wait for handler threads,
    /// pool workers or children, as `block_on_close` says. With a drain
    /// timeout, requests still running at the deadline are cut, each with a
    /// log line, before that wait.
    fn drop(&mut self) {
        let deadline = self.drain_deadline;
        let aborted = || self.stop.is_aborted();
        match &mut self.mode {
            Mode::Threads(threads) => {
                drain(&self.capacity, deadline, aborted);
                threads.close();
            }
            Mode::Pool(pool) => {
                drain(&self.capacity, deadline, aborted);
                pool.close();
            }
            Mode::Fork(fork) => fork.close(deadline, aborted),
            Mode::Sequential => {}
        }
    }
}

fn drain(capacity: &Capacity, deadline: Option<Instant>, aborted: impl Fn() -> bool) {
    if let Some(deadline) = deadline
        && !capacity.wait_idle(deadline, aborted)
    {
        capacity.cut_open_connections();
    }
}
