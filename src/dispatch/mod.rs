//! Dispatchers: where a request runs once the server has taken it, and the
//! limits that make the server stop taking requests (backpressure) instead
//! of dropping them.

mod capacity;
mod config;
mod fork;
mod pool;
mod threads;

use std::io;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use socket2::{SockAddr, Socket};

pub(crate) use config::Mode as Config;
pub use config::{Dispatch, Forking, Threading, WorkerPool};

use crate::adapter::{self, Answered, Context, ErrorHook, HandBack, Incoming, Scratch};
use crate::serving::{After, Framed, Framing};
use crate::shutdown::ShutdownHandle;
use crate::stats::Counters;
use crate::{Address, Error, RequestHandler};
pub(crate) use capacity::Capacity;

/// The running state of a [`Dispatch`] mode.
pub(crate) struct Dispatcher<H> {
    mode: Mode<H>,
    capacity: Arc<Capacity>,
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

impl<H: RequestHandler> Dispatcher<H> {
    /// `max_connections` is `None` for datagram servers, where it does not
    /// apply; `listener` is a stream server's listening socket.
    pub(crate) fn new(
        dispatch: &Dispatch,
        max_connections: Option<usize>,
        drain_timeout: Option<Duration>,
        waker: ShutdownHandle,
        listener: Option<RawFd>,
        counters: Arc<Counters>,
        on_error: ErrorHook,
    ) -> Self {
        let (mode, limit) = match &dispatch.0 {
            Config::Sequential => (Mode::Sequential, None),
            Config::Threads(config) => (Mode::Threads(threads::Threads::new(config.clone())), config.max_threads),
            Config::Pool(config) => (Mode::Pool(pool::Pool::new(config.clone())), Some(config.workers + config.queue)),
            Config::Fork(config) => (
                Mode::Fork(fork::Fork::new(
                    config.clone(),
                    waker.clone(),
                    listener,
                    Arc::clone(&counters),
                    Arc::clone(&on_error),
                )),
                Some(config.max_children),
            ),
        };
        let limit = [limit, max_connections].into_iter().flatten().min();
        let track = drain_timeout.is_some() && matches!(dispatch.0, Config::Threads(_) | Config::Pool(_));
        let capacity = Capacity::new(limit, waker, track, counters, on_error);
        Dispatcher { mode, capacity, drain_deadline: None }
    }

    /// Runs a stream request; the connection is closed when it is done.
    pub(crate) fn stream(&mut self, ctx: &Context<H>, conn: Incoming) {
        let mut slot = self.capacity.take_connection(&conn.socket, &conn.peer);
        let failed = match &mut self.mode {
            Mode::Sequential => {
                adapter::serve_stream(ctx, conn, || slot.untrack(), HandBack::Quiet);
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
                        adapter::serve_stream(&ctx, conn, || slot.untrack(), HandBack::Wake);
                    })
                    .err()
                    .map(|e| (threads::SPAWN, who, e))
            }
            Mode::Pool(pool) => pool.submit(ctx, pool::Job::Stream { conn, slot }).err(),
            // Children are not tracked: a drain kills them instead.
            Mode::Fork(fork) => {
                fork.run(conn.peer.clone(), slot, || adapter::serve_stream(ctx, conn, || false, HandBack::Unable)).err()
            }
        };
        if let Some((action, peer, source)) = failed {
            (ctx.on_error)(&Error::Dispatch { action, peer, source });
        }
    }

    /// Runs one framed message of a connection; the connection goes back to
    /// the loop through `returns` when it is answered (or is closed, after
    /// a panic or a failed reply). `scratch` is the server's, reused.
    pub(crate) fn message(
        &mut self,
        ctx: &Context<H>,
        framing: &Framing,
        framed: Framed,
        message: Vec<u8>,
        scratch: &mut Scratch,
    ) {
        let mut slot = self.capacity.take_message(&framed.conn.socket, &framed.conn.peer);
        let failed = match &mut self.mode {
            Mode::Sequential => {
                // The loop is the caller: it takes the connection back on its next turn.
                answer_message(ctx, framing, framed, &message, false, scratch, || slot.untrack());
                return;
            }
            Mode::Threads(threads) => {
                let (ctx, framing) = (ctx.clone(), framing.clone());
                let who = framed.conn.peer.clone();
                threads
                    .spawn(move || {
                        let scratch = &mut Scratch::default();
                        answer_message(&ctx, &framing, framed, &message, true, scratch, || slot.untrack());
                    })
                    .err()
                    .map(|e| (threads::SPAWN, who, e))
            }
            Mode::Pool(pool) => {
                let job = pool::Job::Message { slot, framing: framing.clone(), framed, message };
                pool.submit(ctx, job).err()
            }
            // Refused when the server was built: a child cannot hand the
            // connection back.
            Mode::Fork(_) => {
                Some(("serve a framed message in a child", framed.conn.peer.clone(), io::ErrorKind::Unsupported.into()))
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
                adapter::serve_datagram(ctx, socket, packet, &peer, reply_to, scratch);
                return;
            }
            Mode::Threads(threads) => {
                let (ctx, socket, packet, who, reply_to) =
                    (ctx.clone(), Arc::clone(socket), packet.to_vec(), peer.clone(), reply_to.clone());
                let mut own = Scratch { ancillary: std::mem::take(&mut scratch.ancillary), ..Scratch::default() };
                threads
                    .spawn(move || {
                        let _slot = slot;
                        adapter::serve_datagram(&ctx, &socket, &packet, &peer, &reply_to, &mut own);
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
                .run(peer.clone(), slot, || adapter::serve_datagram(ctx, socket, packet, &peer, reply_to, scratch))
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

    /// Once per loop turn: forget finished threads, reap exited children.
    pub(crate) fn turn(&mut self) {
        match &mut self.mode {
            Mode::Threads(threads) => threads.reap(),
            Mode::Fork(fork) => fork.reap(),
            Mode::Sequential | Mode::Pool(_) => {}
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

    /// The request count the server's stats read.
    pub(crate) fn capacity(&self) -> &Arc<Capacity> {
        &self.capacity
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
        match &mut self.mode {
            Mode::Threads(threads) => {
                drain(&self.capacity, deadline);
                threads.close();
            }
            Mode::Pool(pool) => {
                drain(&self.capacity, deadline);
                pool.close();
            }
            Mode::Fork(fork) => fork.close(deadline),
            Mode::Sequential => {}
        }
    }
}

/// At most this many messages of one connection are answered in a row
/// before it goes back to the loop, so one pipelining client cannot keep a
/// worker from everyone else.
const MESSAGES_IN_A_ROW: usize = 64;

/// Replies gathered past this size are sent before the next message.
const REPLIES_HELD: usize = 64 * 1024;

/// Answers a message, then, while the client has already sent the next one
/// (pipelining), that one too, in order, with the replies sent together;
/// then hands the connection back to the loop, armed to report its next
/// bytes when it has nothing else to do. A client that waits for each
/// answer costs no extra read: the next one is looked for only when bytes
/// of it were already in. `wake`: the loop must be woken for a connection
/// it has to look at (it is not the caller). `untrack` runs before the
/// connection goes back (a drain cuts through its fd, which must be ours
/// while tracked) and says whether the drain cut it.
pub(crate) fn answer_message<H: RequestHandler>(
    ctx: &Context<H>,
    framing: &Framing,
    mut framed: Framed,
    first: &[u8],
    wake: bool,
    scratch: &mut Scratch,
    untrack: impl FnOnce() -> bool,
) {
    let mut next = None;
    let mut answered = 0;
    // Requests whose replies wait in `scratch.wire`: served once sent.
    let mut unsent = 0;
    framed.after = loop {
        let message = next.as_deref().unwrap_or(first);
        match adapter::serve_message(ctx, framing, &mut framed, message, scratch) {
            Answered::Done => unsent += 1,
            Answered::Failed => {}
            Answered::Fatal => break After::Close,
        }
        if scratch.wire.len() > REPLIES_HELD && !adapter::send_replies(ctx, &framed, &mut scratch.wire, &mut unsent) {
            break After::Close;
        }
        answered += 1;
        if answered == MESSAGES_IN_A_ROW {
            break After::Loop;
        }
        match following(framing, &mut framed) {
            Ok(message) => next = Some(message),
            Err(after) => break after,
        }
    };
    // Replies already made go out even if the connection ends here.
    if !adapter::send_replies(ctx, &framed, &mut scratch.wire, &mut unsent) {
        framed.after = After::Close;
    }
    if untrack() {
        framed.after = After::Close;
    }
    ctx.returns.give_back(framed, wake);
    // Fds the handler did not take are closed here.
    scratch.ancillary = crate::ancillary::Ancillary::default();
}

/// The message a pipelining client sent after the one just answered, or
/// how the connection goes back to the loop without one.
fn following(framing: &Framing, framed: &mut Framed) -> Result<Vec<u8>, After> {
    let partly_in = !framed.inbox.is_empty();
    match framed.inbox.next(framing, framed.eof) {
        Ok(Some(message)) => return Ok(message),
        Ok(None) if framed.eof => return Err(After::Loop),
        Ok(None) if !partly_in => return Err(After::Armed),
        Ok(None) => {}
        // A refusal is the loop's to report, where it is met again.
        Err(_) => return Err(After::Loop),
    }
    match framed.inbox.read_now(&framed.conn) {
        Ok(eof) => framed.eof = eof,
        // Nothing more yet, or a failure the registry reports at once.
        Err(_) => return Err(After::Armed),
    }
    match framed.inbox.next(framing, framed.eof) {
        Ok(Some(message)) => Ok(message),
        Ok(None) if !framed.eof => Err(After::Armed),
        _ => Err(After::Loop),
    }
}

fn drain(capacity: &Capacity, deadline: Option<Instant>) {
    if let Some(deadline) = deadline
        && !capacity.wait_idle(deadline)
    {
        capacity.cut_open_connections();
    }
}
