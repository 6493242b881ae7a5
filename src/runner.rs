//! The runner: turns a connection, a datagram or a framed message into the
//! `rfile`/`wfile` pair a handler sees, runs the handler (a panic costs one
//! request), delivers the answer, and counts and reports how it went.

use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;

use socket2::{SockAddr, Socket};

use crate::ancillary::{Ancillary, Credentials};
use crate::deadline::{Timeouts, arm, timed_out};
use crate::handler::{Extras, Request, RequestHandler};
use crate::handler_io::{Conn, Incoming, Reader, Writer, close_stream};
use crate::hooks::ErrorHook;
use crate::stats::{Counters, StatsHandle};
use crate::sys::NO_SIGNAL;
use crate::transport::Kind;
use crate::{Address, Error};

/// What a request needs from its server; cheap to clone into worker threads.
pub(crate) struct Context<H> {
    pub handler: Arc<H>,
    pub on_error: ErrorHook,
    pub server_address: Arc<Address>,
    /// The counters: what a request counts, and what `Request::stats` reads.
    pub stats: StatsHandle,
    pub timeouts: Timeouts,
    /// Where a stream handler's connection goes when it hands it back.
    pub way_back: Arc<dyn HandBack>,
    /// Each client's limits, when the server has them.
    pub limiter: Option<Arc<crate::limits::Limiter>>,
}

/// The way back to the serving loop, as the runner is given it: a stream
/// whose handler called `Request::hand_back` goes there, with the bytes its
/// reader took and did not handle.
pub(crate) trait HandBack: Send + Sync {
    /// Hands `conn` back; `wake`: the loop may be waiting, and must look
    /// (it is not the caller).
    fn hand_back(&self, conn: Incoming, wake: bool);
}

impl<H> Context<H> {
    /// The server's counters.
    pub(crate) fn counters(&self) -> &Counters {
        self.stats.counters()
    }
}

impl<H> Clone for Context<H> {
    fn clone(&self) -> Self {
        Context {
            handler: Arc::clone(&self.handler),
            on_error: Arc::clone(&self.on_error),
            server_address: Arc::clone(&self.server_address),
            stats: self.stats.clone(),
            timeouts: self.timeouts,
            way_back: Arc::clone(&self.way_back),
            limiter: self.limiter.clone(),
        }
    }
}

/// How a request ended (a forked child's exit status says the same).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Served = 0,
    Failed = 1,
    Panicked = 2,
    TimedOut = 3,
    /// Cut at the drain deadline: counted and reported when it was cut.
    Cut = 4,
}

impl Outcome {
    /// A forked child's exit status read back; anything else is a failure.
    pub(crate) fn from_exit_code(code: i32) -> Outcome {
        match code {
            0 => Outcome::Served,
            2 => Outcome::Panicked,
            3 => Outcome::TimedOut,
            _ => Outcome::Failed,
        }
    }

    /// Counts this ending in `counters`.
    pub(crate) fn count(self, counters: &Counters) {
        self.count_n(counters, 1);
    }

    /// Counts `n` requests that ended this way.
    fn count_n(self, counters: &Counters, n: u64) {
        let counter = match self {
            Outcome::Served => &counters.served,
            Outcome::Failed => &counters.errors,
            Outcome::Panicked => &counters.panics,
            Outcome::TimedOut => &counters.timed_out,
            Outcome::Cut => return,
        };
        Counters::add(counter, n);
    }
}

/// What a datagram request writes into besides its packet: the reply being
/// built, and the fds and credentials that came with the datagram. Reused
/// from request to request where the dispatch mode allows.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    pub reply: Vec<u8>,
    pub ancillary: Ancillary,
    /// A framed connection's replies, framed, on their way out together.
    pub wire: Vec<u8>,
}

/// Why a handler did not complete.
enum Failure {
    Io(io::Error),
    Panic(String),
}

impl Failure {
    fn outcome(&self) -> Outcome {
        match self {
            Failure::Io(e) if matches!(e.kind(), io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock) => {
                Outcome::TimedOut
            }
            Failure::Io(_) => Outcome::Failed,
            Failure::Panic(_) => Outcome::Panicked,
        }
    }

    fn into_error(self, peer: &Address) -> Error {
        match self {
            Failure::Io(source) => Error::Request { peer: peer.clone(), source },
            Failure::Panic(message) => Error::Panic { peer: peer.clone(), message },
        }
    }
}

/// Python's `BaseRequestHandler.__init__`: setup, then handle, then finish
/// even if handle failed. A panic is caught here, so it costs one request.
fn run_handler<H: RequestHandler>(ctx: &Context<H>, req: &mut Request<'_>) -> Result<(), Failure> {
    let handler = &*ctx.handler;
    #[cfg(feature = "metrics")]
    let started = std::time::Instant::now();
    // With the `tracing` feature, the handler's own events nest in a span
    // that names the request.
    #[cfg(feature = "tracing")]
    let _span = tracing::info_span!(
        "request",
        peer = %req.client_address(),
        server = %req.server_address(),
        kind = ?req.kind()
    )
    .entered();
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
        handler.setup(req)?;
        let handled = handler.handle(req);
        let finished = handler.finish(req);
        handled.and(finished)
    }));
    #[cfg(feature = "metrics")]
    if let Some(exported) = ctx.counters().exported.get() {
        exported.handled(started.elapsed());
    }
    match outcome {
        Ok(result) => result.map_err(Failure::Io),
        Err(payload) => Err(Failure::Panic(panic_message(payload.as_ref()))),
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

/// Whether a stream handler may hand its connection back to the serving
/// loop (`Request::hand_back`), and how the loop learns of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MayHandBack {
    /// It may not: a forked child cannot give the loop an fd.
    Unable,
    /// It may; the loop is waiting and is woken.
    Wake,
    /// It may; the loop is the caller and looks on its next turn.
    Quiet,
}

/// Serves one stream connection, then shuts down its write half and closes
/// it (Python's `shutdown_request`), or, when its handler handed it back
/// and completed, gives it back to the loop. Every failure reaches
/// `on_error`.
///
/// `untrack` runs after the handler and before the socket closes (the drain
/// cuts a connection through its fd, which must still be open) or leaves:
/// it says whether the drain cut this one, which was counted and reported
/// then.
pub(crate) fn serve_stream<H: RequestHandler>(
    ctx: &Context<H>,
    incoming: Incoming,
    untrack: impl FnOnce() -> bool,
    hand_back: MayHandBack,
) -> Outcome {
    let (outcome, back) = serve_kept(ctx, incoming, untrack, hand_back != MayHandBack::Unable);
    if let Some(conn) = back {
        ctx.way_back.hand_back(conn, hand_back == MayHandBack::Wake);
    }
    outcome
}

/// How many requests a client pipelined one worker answers in a row, one
/// handler run after another, before the connection goes behind the others:
/// enough that a batch's answers leave together.
const RUNS_IN_A_ROW: usize = 32;

/// As [`serve_stream`], but a connection its handler handed back comes
/// back to the caller (`can_hand_back`: it may be).
pub(crate) fn serve_kept<H: RequestHandler>(
    ctx: &Context<H>,
    mut incoming: Incoming,
    untrack: impl FnOnce() -> bool,
    can_hand_back: bool,
) -> (Outcome, Option<Incoming>) {
    // What the handler keeps for the connection travels with it across hand-backs.
    let mut state = incoming.state.take();
    let (conn, peer) = Conn::new(incoming, ctx.timeouts, can_hand_back);
    let mut runs = 0;
    let (outcome, unread) = loop {
        runs += 1;
        conn.commit_written();
        let (outcome, unread) = {
            let mut req = Request::new(
                Reader::stream(&conn),
                Writer::stream(&conn),
                &peer,
                (&ctx.server_address, &ctx.stats),
                Kind::Stream,
                Extras::Stream(&conn, &mut state),
            );
            let outcome = run_handler(ctx, &mut req);
            let unread = if conn.handed_back() { req.rfile.take_unread() } else { Vec::new() };
            (outcome, unread)
        };
        // Handed back with its next request read already (pipelined): the
        // handler runs again here, and its answer joins this one's in the
        // output buffer, so a batch's answers leave in one send (the reader
        // flushes them first if the handler must wait for the socket). At
        // most `RUNS_IN_A_ROW` (a client that pipelines without pause always
        // has part of a request in: it must not keep the worker); past them,
        // or over its client's rate, the next request waits its turn where
        // the caller puts it.
        if conn.handed_back() && outcome.is_ok() && !unread.is_empty() && runs < RUNS_IN_A_ROW && !conn.over_rate() {
            served(ctx);
            conn.again(unread);
            continue;
        }
        break (outcome, unread);
    };
    // As Python's StreamRequestHandler.finish, what was written is flushed
    // even when handle failed; after a panic, only what requests answered
    // before it wrote.
    if matches!(outcome, Err(Failure::Panic(_))) {
        conn.discard_uncommitted();
    }
    let flushed = conn.flush();
    if conn.handed_back() && outcome.is_ok() && flushed.is_ok() {
        if untrack() {
            close_stream(conn.socket);
            return (Outcome::Cut, None);
        }
        return (served(ctx), Some(conn.into_incoming(peer, unread, state)));
    }
    if flushed.is_ok() && !matches!(outcome, Err(Failure::Panic(_))) {
        conn.finish();
    }
    let result = match (outcome, flushed) {
        _ if untrack() => Outcome::Cut,
        (Err(failure), _) => report(ctx, failure, &peer),
        (Ok(()), Err(source)) => report(ctx, Failure::Io(source), &peer),
        (Ok(()), Ok(())) => served(ctx),
    };
    close_stream(conn.socket);
    (result, None)
}

/// Reports a failed request to `handle_error` and counts it.
fn report<H>(ctx: &Context<H>, failure: Failure, peer: &Address) -> Outcome {
    let outcome = failure.outcome();
    outcome.count(ctx.counters());
    (ctx.on_error)(&failure.into_error(peer));
    outcome
}

/// Counts a request whose handler completed.
fn served<H>(ctx: &Context<H>) -> Outcome {
    Outcome::Served.count(ctx.counters());
    Outcome::Served
}

/// Serves one datagram and sends what the handler wrote back to the sender as
/// one datagram. `reply` is the caller's reusable buffer.
pub(crate) fn serve_datagram<H: RequestHandler>(
    ctx: &Context<H>,
    socket: &Socket,
    packet: &[u8],
    peer: &Address,
    reply_to: &SockAddr,
    scratch: &mut Scratch,
) -> Outcome {
    let (outcome, send) = answer_datagram(ctx, socket, packet, peer, reply_to, scratch);
    if !send {
        return outcome;
    }
    let reply = &scratch.reply;
    let sent = socket.send_to_with_flags(reply, reply_to, NO_SIGNAL).and_then(|n| whole_reply(n, reply.len()));
    match sent {
        Err(source) => report(ctx, Failure::Io(source), peer),
        Ok(()) => outcome,
    }
}

/// Runs the handler on one datagram, leaving its reply in `reply`. Returns
/// how it went and whether the reply is to be sent; errors are reported.
///
/// As in Python's `DatagramRequestHandler.finish`, what was written is sent
/// even when handle failed, but never after a panic, and an empty reply
/// sends nothing. The reply goes to `reply_to`, the datagram's sender,
/// which a PROXY header's `peer` does not change.
pub(crate) fn answer_datagram<H: RequestHandler>(
    ctx: &Context<H>,
    socket: &Socket,
    packet: &[u8],
    peer: &Address,
    reply_to: &SockAddr,
    scratch: &mut Scratch,
) -> (Outcome, bool) {
    let Scratch { reply, ancillary, .. } = scratch;
    reply.clear();
    let outcome = {
        let mut req = Request::new(
            Reader::datagram(packet),
            Writer::datagram(reply),
            peer,
            (&ctx.server_address, &ctx.stats),
            Kind::Datagram,
            Extras::Datagram(socket, ancillary, None),
        );
        run_handler(ctx, &mut req)
    };
    let send = !reply.is_empty() && !matches!(outcome, Err(Failure::Panic(_)));
    let outcome = match outcome {
        Err(failure) => report(ctx, failure, peer),
        Ok(()) => served(ctx),
    };
    if send && Address::from_sock_addr(reply_to) == Address::Unnamed {
        let source = io::Error::new(
            io::ErrorKind::AddrNotAvailable,
            "cannot reply: the sender's Unix socket has no name (bind the client to a path)",
        );
        return (report(ctx, Failure::Io(source), peer), false);
    }
    (outcome, send)
}

/// How one framed message went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answered {
    /// The handler completed and its reply is in `wire`: counted served
    /// once the reply goes out ([`send_replies`]).
    Done,
    /// The handler failed (reported and counted); what it wrote goes out,
    /// and the connection goes on.
    Failed,
    /// The connection cannot go on: the handler panicked, or its reply does
    /// not fit the framing (reported and counted).
    Fatal,
}

/// Serves one framed message of `conn` as a datagram is served (`rfile`
/// the message, `wfile` the reply), and appends the reply, framed, to
/// `scratch.wire` for the caller to send. The handler's connection state is
/// `conn`'s; `credentials`, a Unix peer's, read once.
pub(crate) fn serve_message<H: RequestHandler>(
    ctx: &Context<H>,
    framing: &crate::framing::Framing,
    conn: &mut Incoming,
    credentials: Option<Credentials>,
    message: &crate::framing::Message,
    scratch: &mut Scratch,
) -> Answered {
    let Scratch { reply, ancillary, wire } = scratch;
    reply.clear();
    #[cfg(feature = "proxy-protocol")]
    {
        ancillary.proxy = conn.proxy.take();
    }
    ancillary.credentials = credentials;
    let outcome = {
        let mut req = Request::new(
            Reader::datagram(&message.bytes),
            Writer::datagram(reply),
            &conn.peer,
            (&ctx.server_address, &ctx.stats),
            Kind::Message,
            Extras::Datagram(
                &conn.socket,
                ancillary,
                Some(crate::handler::Framed {
                    state: &mut conn.state,
                    piece: message.piece,
                    #[cfg(feature = "tls")]
                    tls: conn.tls.as_deref().map(crate::tls::Session::info),
                }),
            ),
        );
        run_handler(ctx, &mut req)
    };
    #[cfg(feature = "proxy-protocol")]
    {
        conn.proxy = ancillary.proxy.take();
    }
    if let Err(failure @ Failure::Panic(_)) = outcome {
        report(ctx, failure, &conn.peer);
        return Answered::Fatal;
    }
    let framed_reply = if reply.is_empty() { Ok(()) } else { framing.frame(reply, wire) };
    match (outcome, framed_reply) {
        (Err(failure), framed_reply) => {
            report(ctx, failure, &conn.peer);
            if framed_reply.is_ok() { Answered::Failed } else { Answered::Fatal }
        }
        (Ok(()), Err(source)) => {
            report(ctx, Failure::Io(source), &conn.peer);
            Answered::Fatal
        }
        (Ok(()), Ok(())) => Answered::Done,
    }
}

/// Sends the replies gathered in `wire` on `conn`, each send
/// within its write timeout and its `connection_timeout`, then counts the
/// `unsent` requests whose replies they carry: served if they went out; if
/// not, failed (timed out, for a send that timed out), with one report,
/// and the connection cannot go on. Returns whether they went out.
pub(crate) fn send_replies<H>(ctx: &Context<H>, conn: &Incoming, wire: &mut Vec<u8>, unsent: &mut u64) -> bool {
    let sent = if wire.is_empty() {
        Ok(())
    } else {
        #[cfg(feature = "tls")]
        let sent = match &conn.tls {
            Some(tls) => tls.send(wire, &conn.socket, ctx.timeouts.write, conn.deadline),
            None => send_all(&conn.socket, wire, ctx.timeouts.write, conn.deadline),
        };
        #[cfg(not(feature = "tls"))]
        let sent = send_all(&conn.socket, wire, ctx.timeouts.write, conn.deadline);
        sent
    };
    wire.clear();
    let requests = std::mem::take(unsent);
    match sent {
        Ok(()) => {
            Outcome::Served.count_n(ctx.counters(), requests);
            true
        }
        Err(source) => {
            let failure = Failure::Io(source);
            failure.outcome().count_n(ctx.counters(), requests);
            (ctx.on_error)(&failure.into_error(&conn.peer));
            false
        }
    }
}

/// Sends all of `bytes` on a blocking connection, without SIGPIPE; each
/// wait is bounded by the write timeout and the connection's deadline.
fn send_all(
    socket: &Socket,
    mut bytes: &[u8],
    write_timeout: Option<std::time::Duration>,
    deadline: Option<std::time::Instant>,
) -> io::Result<()> {
    while !bytes.is_empty() {
        arm(socket, write_timeout, deadline, Socket::set_write_timeout)?;
        match socket.send_with_flags(bytes, NO_SIGNAL) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(timed_out(e, "write")),
        }
    }
    Ok(())
}

/// A datagram is sent whole or not at all; a short count means it was cut.
pub(crate) fn whole_reply(sent: usize, len: usize) -> io::Result<()> {
    if sent < len {
        return Err(io::Error::new(io::ErrorKind::WriteZero, format!("reply datagram cut to {sent} of {len} bytes")));
    }
    Ok(())
}

/// Reports a reply that could not be sent (by the batched send).
pub(crate) fn reply_failed<H>(ctx: &Context<H>, peer: &Address, source: io::Error) {
    report(ctx, Failure::Io(source), peer);
}
