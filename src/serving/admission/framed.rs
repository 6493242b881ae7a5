//! A framed connection's whole life, in one place: the loop reads its bytes
//! and cuts its next message ([`Admission::frame`]), a dispatcher runs the
//! message wherever it runs work ([`Answer`]), the worker answers what the
//! client pipelined behind it, sends the replies together, and hands the
//! connection back ([`Returns`]), re-armed when it waits for bytes.
//!
//! A framed connection keeps its slab key and its registration while a
//! worker has it, so its return costs the loop no wake-up and no
//! re-registration; the loop still comes by at its deadlines.

use std::io;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use socket2::Socket;

use super::arrival::Admitted;
use super::state::{Held, State, close};
use super::{Admission, Env};
use crate::ancillary::{Ancillary, Credentials};
use crate::deadline::deadline_after;
use crate::dispatch::Work;
use crate::framing::{Framing, Inbox, Refused};
use crate::handler::ConnectionState;
use crate::handler_io::Incoming;
use crate::runner::{self, Answered, Context, Scratch};
use crate::serving::registry::{FIRST_HELD, Interest};
use crate::serving::returns::Returns;
use crate::stats::Counters;
use crate::{Address, Error, RequestHandler};

/// How often the loop looks again for a framed connection a worker still
/// has past its `connection_timeout`: the worker hands it back without
/// waking the loop, so the loop comes by to close it.
const AWAY_RECHECK: Duration = Duration::from_secs(1);

/// At most this many messages of one connection are answered in a row
/// before it goes back to the loop, so one pipelining client cannot keep a
/// worker from everyone else.
const MESSAGES_IN_A_ROW: usize = 64;

/// Replies gathered past this size are sent before the next message.
const REPLIES_HELD: usize = 64 * 1024;

/// A framed connection, with the bytes it sent that are not handled yet;
/// it goes to a worker with one message, and comes back.
pub(crate) struct Framed {
    pub conn: Incoming,
    pub inbox: Inbox,
    /// The client closed its side: what is in the inbox is all there is.
    pub eof: bool,
    /// What the handler keeps for the connection (`Request::connection_state`).
    pub handler_state: ConnectionState,
    /// Its slab key in the loop, which keeps its entry and its registration
    /// while a worker has it; `None` before it was ever held.
    pub key: Option<usize>,
    /// What the loop does with it when it is handed back.
    pub next: Next,
    /// A Unix stream peer's credentials, read once: every message sees
    /// them, as a plain stream request would.
    pub credentials: Option<Credentials>,
}

impl Framed {
    /// A connection that starts being framed.
    pub(super) fn new(conn: Incoming) -> Framed {
        let credentials = if conn.peer.is_unix() { Credentials::of_peer(&conn.socket) } else { None };
        Framed {
            conn,
            inbox: Inbox::default(),
            eof: false,
            handler_state: None,
            key: None,
            next: Next::Loop,
            credentials,
        }
    }
}

/// What comes next for a framed connection a worker hands back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// Nothing whole in its inbox and its client still there: it waits for
    /// bytes, and its fd is already armed to report them.
    Armed,
    /// The loop decides: a whole message is in, or the client closed, or
    /// its bytes are refused (the loop reports that).
    Loop,
    /// It cannot go on (a panic, a failed reply): the loop closes it.
    Close,
}

impl Admission {
    /// A framed connection between messages: its next whole message is
    /// queued for a handler, or it waits in the loop for more bytes (under
    /// `idle_timeout` and `connection_timeout`), or it ends. Returns whether
    /// it was turned away.
    pub(super) fn frame<H>(&mut self, mut framed: Framed, now: Instant, env: &Env<'_, H>) -> bool {
        let Some(framing) = &env.options.framing else { return false };
        let ctx = env.ctx;
        if framed.next == Next::Close {
            self.close_framed(framed);
            return false;
        }
        match framed.inbox.next(framing, framed.eof) {
            Ok(Some(message)) => {
                if framed.key.is_none()
                    && let Err(source) = self.keep_place(&mut framed)
                {
                    (ctx.on_error)(&Error::Request { peer: framed.conn.peer.clone(), source });
                    self.close_framed(framed);
                    return true;
                }
                self.messages.push_back((framed, message));
            }
            Ok(None) if framed.eof => {
                log::debug!("framed connection from {} ends between messages", framed.conn.peer);
                self.close_framed(framed);
            }
            Ok(None)
                if self.closing.is_some_and(|closing| closing.closes(framed.waiting(), framed.conn.socket.as_fd())) =>
            {
                if framed.inbox.is_empty() {
                    log::debug!("server closing: closing framed connection from {} between messages", framed.conn.peer);
                } else {
                    // Part of a request is lost: worth a line at the default level.
                    let peer = &framed.conn.peer;
                    log::info!("server closing: closing connection from {peer} inside a message (no drain_timeout)");
                }
                self.close_framed(framed);
            }
            Ok(None) => {
                let idle = env.options.idle_timeout.map(|idle| deadline_after(now, idle));
                let expires = [idle, framed.conn.deadline].into_iter().flatten().min();
                let Some(key) = framed.key else {
                    return matches!(self.hold(State::Framed(framed), expires, env), Admitted::Refused);
                };
                let armed = framed.next == Next::Armed;
                self.generations += 1;
                self.held[key] = Held { generation: self.generations, state: State::Framed(framed) };
                if let Some(expires) = expires {
                    self.deadlines.set(expires, key, self.generations);
                }
                if !armed {
                    self.rearm(key);
                }
            }
            Err(Refused::TooLong) => {
                Counters::add(&ctx.counters().too_long, 1);
                (ctx.on_error)(&Error::MessageTooLong { peer: framed.conn.peer.clone(), max: framing.max() });
                self.close_framed(framed);
                return true;
            }
            Err(Refused::Invalid(reason)) => {
                Counters::add(&ctx.counters().errors, 1);
                let source = io::Error::new(io::ErrorKind::InvalidData, reason);
                (ctx.on_error)(&Error::Request { peer: framed.conn.peer.clone(), source });
                self.close_framed(framed);
                return true;
            }
        }
        false
    }

    /// A held framed connection leaves the loop for a worker (or the queue
    /// for one), keeping its slab key, its registration (disarmed) and its
    /// generation. With `idle_timeout` or `connection_timeout`, the loop
    /// must still come by when the earlier could end it, so that a
    /// connection handed back without waking the loop is not kept past it:
    /// the deadline it had in the loop is that time (it is no later than
    /// any it can have on its return), and when it comes up while the
    /// connection is away, `look_again` sets the next.
    pub(super) fn send_away(&mut self, key: usize) -> Option<Framed> {
        let held = self.held.get_mut(key)?;
        let State::Framed(framed) = &held.state else { return None };
        let away = State::Away { deadline: framed.conn.deadline };
        let State::Framed(framed) = std::mem::replace(&mut held.state, away) else { return None };
        Some(framed)
    }

    /// Gives a framed connection that has never waited in the loop (its
    /// first message came with it) the slab entry and the registration
    /// (disarmed) it keeps while away: it counts as open from now on, and
    /// its worker can re-arm it. Fails if the registry cannot take it (out
    /// of kernel memory).
    fn keep_place(&mut self, framed: &mut Framed) -> io::Result<()> {
        let entry = self.held.vacant_entry();
        let key = entry.key();
        self.registry.add(framed.conn.socket.as_fd(), key + FIRST_HELD, Interest::Nothing)?;
        self.generations += 1;
        entry.insert(Held { generation: self.generations, state: State::Away { deadline: framed.conn.deadline } });
        framed.key = Some(key);
        Ok(())
    }

    /// Sets when the loop next looks for the away connection at `key`.
    pub(super) fn look_again<H>(
        &mut self,
        key: usize,
        generation: u64,
        deadline: Option<Instant>,
        now: Instant,
        env: &Env<'_, H>,
    ) {
        let idle = env.options.idle_timeout.map(|idle| deadline_after(now, idle));
        let at = match [idle, deadline].into_iter().flatten().min() {
            Some(at) if at <= now => now + AWAY_RECHECK,
            Some(at) => at,
            None => return,
        };
        self.deadlines.set(at, key, generation);
    }

    /// Closes a framed connection, and frees its slab entry and
    /// registration if it has them.
    pub(super) fn close_framed(&mut self, framed: Framed) {
        if let Some(key) = framed.key {
            self.registry.remove(framed.conn.socket.as_fd());
            self.held.remove(key);
        }
        close(framed.conn);
    }
}

impl Framed {
    /// What it waits for, as a close sees it.
    fn waiting(&self) -> super::closing::Waiting {
        use super::closing::Waiting;
        if self.inbox.is_empty() { Waiting::NextRequest } else { Waiting::RestOfMessage }
    }
}

/// A framed connection's message, on its way to wherever the dispatcher
/// runs it, with the way back.
pub(crate) struct Answer {
    framed: Framed,
    message: Vec<u8>,
    framing: Framing,
    returns: Arc<Returns>,
}

impl Answer {
    pub(crate) fn new(framed: Framed, message: Vec<u8>, framing: Framing, returns: Arc<Returns>) -> Self {
        Answer { framed, message, framing, returns }
    }
}

impl<H: RequestHandler> Work<H> for Answer {
    fn connection(&self) -> (&Socket, &Address) {
        (&self.framed.conn.socket, &self.framed.conn.peer)
    }

    fn run(
        self: Box<Self>,
        ctx: &Context<H>,
        scratch: &mut Scratch,
        on_worker: bool,
        untrack: &mut dyn FnMut() -> bool,
    ) {
        let Answer { mut framed, message, framing, returns } = *self;
        framed.next = answer(ctx, &framing, &mut framed, &message, scratch);
        if untrack() {
            framed.next = Next::Close;
        }
        // On a worker, the loop may be waiting: it must be woken for a
        // connection it has to look at. (On the loop's thread it looks on
        // its next turn.)
        returns.hand_back_framed(framed, on_worker);
        // Fds the handler did not take are closed here.
        scratch.ancillary = Ancillary::default();
    }
}

/// Answers `first`, then, while the client has already sent the next
/// message (pipelining), that one too, in order, with the replies sent
/// together; returns what comes next for the connection. A client that
/// waits for each answer costs no extra read: the next message is looked
/// for only when bytes of it were already in.
fn answer<H: RequestHandler>(
    ctx: &Context<H>,
    framing: &Framing,
    framed: &mut Framed,
    first: &[u8],
    scratch: &mut Scratch,
) -> Next {
    let mut next = None;
    let mut answered = 0;
    // Requests whose replies wait in `scratch.wire`: served once sent.
    let mut unsent = 0;
    let after = loop {
        let message = next.as_deref().unwrap_or(first);
        let Framed { conn, handler_state, credentials, .. } = &mut *framed;
        match runner::serve_message(ctx, framing, conn, handler_state, *credentials, message, scratch) {
            Answered::Done => unsent += 1,
            Answered::Failed => {}
            Answered::Fatal => break Next::Close,
        }
        if scratch.wire.len() > REPLIES_HELD && !runner::send_replies(ctx, &framed.conn, &mut scratch.wire, &mut unsent)
        {
            break Next::Close;
        }
        answered += 1;
        if answered == MESSAGES_IN_A_ROW {
            break Next::Loop;
        }
        match following(framing, framed) {
            Ok(message) => next = Some(message),
            Err(after) => break after,
        }
    };
    // Replies already made go out even if the connection ends here.
    if !runner::send_replies(ctx, &framed.conn, &mut scratch.wire, &mut unsent) {
        return Next::Close;
    }
    after
}

/// The message a pipelining client sent after the one just answered, or
/// what comes next for the connection without one.
fn following(framing: &Framing, framed: &mut Framed) -> Result<Vec<u8>, Next> {
    let partly_in = !framed.inbox.is_empty();
    match framed.inbox.next(framing, framed.eof) {
        Ok(Some(message)) => return Ok(message),
        Ok(None) if framed.eof => return Err(Next::Loop),
        Ok(None) if !partly_in => return Err(Next::Armed),
        Ok(None) => {}
        // A refusal is the loop's to report, where it is met again.
        Err(_) => return Err(Next::Loop),
    }
    match framed.conn.read_now(&mut framed.inbox) {
        Ok(eof) => framed.eof = eof,
        // Nothing more yet, or a failure the registry reports at once.
        Err(_) => return Err(Next::Armed),
    }
    match framed.inbox.next(framing, framed.eof) {
        Ok(Some(message)) => Ok(message),
        Ok(None) if !framed.eof => Err(Next::Armed),
        _ => Err(Next::Loop),
    }
}
