//! A framed connection's whole life, in one place: the loop reads its bytes
//! and cuts its next message ([`frame`]), a dispatcher runs the
//! message wherever it runs work ([`Answer`]), the worker answers what the
//! client pipelined behind it, sends the replies together, and hands the
//! connection back ([`Returns`]), re-armed when it waits for bytes.
//!
//! A framed connection keeps its slab key and its registration while a
//! worker has it, so its return costs the loop no wake-up and no
//! re-registration; the loop still comes by at its deadlines. On a worker
//! pool it waits with the workers instead ([`resume`] answers it there).

use std::io;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Instant;

use socket2::Socket;

use super::closing::Waiting;
use super::returns::Returns;
use super::state::{Admitted, Env, Framed, Next, State};
use super::table::Table;
use crate::ancillary::Ancillary;
use crate::deadline::deadline_after;
use crate::dispatch::Work;
use crate::framing::{Framing, Message, Refused};
use crate::runner::{self, Answered, Context, Scratch};
use crate::stats::Counters;
use crate::{Address, Error, RequestHandler};

/// At most this many messages of one connection are answered in a row
/// before it goes back to the loop, so one pipelining client cannot keep a
/// worker from everyone else.
const MESSAGES_IN_A_ROW: usize = 64;

/// Replies gathered past this size are sent before the next message.
const REPLIES_HELD: usize = 64 * 1024;

/// A framed connection between messages: its next whole message is
/// queued for a handler, or it waits in the loop for more bytes (under
/// `idle_timeout` and `connection_timeout`), or it ends. Returns whether it
/// was turned away.
pub(super) fn frame<H>(table: &mut Table, mut framed: Box<Framed>, now: Instant, env: &Env<'_, H>) -> bool {
    let Some(framing) = &env.options.framing else { return false };
    let ctx = env.ctx;
    if framed.next == Next::Close {
        table.close_framed(framed);
        return false;
    }
    // A message held back for its client's rate goes before any other.
    let next = match framed.pending.take() {
        Some(message) => Ok(Some(message)),
        None => framed.inbox.next(framing, framed.eof),
    };
    match next {
        Ok(Some(message)) => {
            if let Some(wait) = framed.conn.client.as_ref().and_then(|client| client.message(now, true).err()) {
                return delay(table, framed, message, now + wait, env);
            }
            if framed.key.is_none() {
                table.keep_place(&mut framed);
                // Parked with the workers it may never come back through
                // here: the loop must come by at its deadline anyway.
                if let Some(key) = framed.key {
                    let generation = table.held[key].generation;
                    table.look_again(key, generation, framed.conn.deadline, now, env);
                }
            }
            table.messages.push_back((framed, message));
        }
        Ok(None) if framed.eof => {
            log::debug!("framed connection from {} ends between messages", framed.conn.peer);
            table.close_framed(framed);
        }
        Ok(None)
            if table
                .closing
                .is_some_and(|closing| closing.closes(Waiting::of(&framed), framed.conn.socket.as_fd())) =>
        {
            if framed.inbox.is_empty() {
                log::debug!("server closing: closing framed connection from {} between messages", framed.conn.peer);
            } else {
                // Part of a request is lost: worth a line at the default level.
                let peer = &framed.conn.peer;
                log::info!("server closing: closing connection from {peer} inside a message (no drain_timeout)");
            }
            table.close_framed(framed);
        }
        Ok(None) => {
            // On a worker pool that parks, it waits with the workers: its
            // bytes wake one, which reads and answers it, and the loop
            // never sees it again before its deadline.
            let Some(framed) = table.park(framed, now, env) else { return false };
            let idle = env.options.idle_timeout.map(|idle| deadline_after(now, idle));
            let expires = [idle, framed.conn.deadline].into_iter().flatten().min();
            match framed.key {
                Some(key) => table.hold_again(key, framed, expires),
                None => return matches!(table.hold(State::Framed(framed), expires, env), Admitted::Refused),
            }
        }
        Err(Refused::TooLong) => {
            Counters::add(&ctx.counters().too_long, 1);
            (ctx.on_error)(&Error::MessageTooLong { peer: framed.conn.peer.clone(), max: framing.max() });
            table.close_framed(framed);
            return true;
        }
        Err(Refused::Invalid(reason)) => {
            Counters::add(&ctx.counters().errors, 1);
            let source = io::Error::new(io::ErrorKind::InvalidData, reason);
            (ctx.on_error)(&Error::Request { peer: framed.conn.peer.clone(), source });
            table.close_framed(framed);
            return true;
        }
    }
    false
}

/// Holds `message` back, and its connection unread, until `until`, when
/// its client has a token again (its `connection_timeout` still ends it).
/// Returns whether it was turned away.
fn delay<H>(table: &mut Table, mut framed: Box<Framed>, message: Message, until: Instant, env: &Env<'_, H>) -> bool {
    framed.pending = Some(message);
    // Re-armed by the table, for nothing: not `Armed` for reading.
    framed.next = Next::Loop;
    let expires = Some(framed.conn.deadline.map_or(until, |deadline| deadline.min(until)));
    match framed.key {
        Some(key) => {
            table.hold_again(key, framed, expires);
            false
        }
        None => matches!(table.hold(State::Framed(framed), expires, env), Admitted::Refused),
    }
}

/// A framed connection's message, on its way to wherever the dispatcher
/// runs it, with the way back.
pub(crate) struct Answer {
    framed: Box<Framed>,
    message: Message,
    framing: Framing,
    returns: Arc<Returns>,
}

impl Answer {
    pub(crate) fn new(framed: Box<Framed>, message: Message, framing: Framing, returns: Arc<Returns>) -> Self {
        Answer { framed, message, framing, returns }
    }
}

impl<H: RequestHandler> Work<H> for Answer {
    fn connection(&self) -> (&Socket, &Address) {
        (&self.framed.conn.socket, &self.framed.conn.peer)
    }

    fn run_boxed(
        self: Box<Self>,
        ctx: &Context<H>,
        scratch: &mut Scratch,
        on_worker: bool,
        untrack: &mut dyn FnMut() -> bool,
    ) {
        (*self).run(ctx, scratch, on_worker, untrack);
    }

    fn run(self, ctx: &Context<H>, scratch: &mut Scratch, on_worker: bool, untrack: &mut dyn FnMut() -> bool) {
        let Answer { mut framed, message, framing, returns } = self;
        framed.next = answer(ctx, &framing, &mut framed, message, scratch);
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
    first: Message,
    scratch: &mut Scratch,
) -> Next {
    let mut message = first;
    let mut answered = 0;
    // Requests whose replies wait in `scratch.wire`: served once sent.
    let mut unsent = 0;
    let after = loop {
        match runner::serve_message(ctx, framing, &mut framed.conn, framed.credentials, &message, scratch) {
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
            // Over its client's rate: the loop holds it back until its turn.
            Ok(following) if framed.conn.over_rate() => {
                framed.pending = Some(following);
                break Next::Loop;
            }
            Ok(following) => message = following,
            Err(after) => break after,
        }
    };
    // Replies already made go out even if the connection ends here.
    if !runner::send_replies(ctx, &framed.conn, &mut scratch.wire, &mut unsent) {
        return Next::Close;
    }
    after
}

/// A parked connection a worker's wait found ready: reads what came, and
/// answers what is whole (and what was pipelined behind it) as a queued
/// message is answered; returns what comes next for the connection.
/// Whatever the loop has to judge (an ended stream, bytes it refuses, a
/// client over its rate) goes back to it. `ended`: the report said the
/// client ended its side (or the connection failed).
pub(super) fn resume<H: RequestHandler>(
    ctx: &Context<H>,
    framing: &Framing,
    framed: &mut Framed,
    ended: bool,
    scratch: &mut Scratch,
) -> Next {
    framed.end_reported |= ended;
    match framed.read() {
        Ok(()) => {}
        Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => return Next::Armed,
        Err(e) => {
            log::debug!("framed connection from {} failed: {e}", framed.conn.peer);
            return Next::Close;
        }
    }
    match framed.inbox.next(framing, framed.eof) {
        Ok(Some(message)) if framed.conn.over_rate() => {
            framed.pending = Some(message);
            Next::Loop
        }
        Ok(Some(message)) => answer(ctx, framing, framed, message, scratch),
        Ok(None) if !framed.eof => Next::Armed,
        Ok(None) => after_end(framed),
        // A refusal is the loop's to report.
        Err(_) => Next::Loop,
    }
}

/// The message a pipelining client sent after the one just answered, or
/// what comes next for the connection without one.
fn following(framing: &Framing, framed: &mut Framed) -> Result<Message, Next> {
    let partly_in = !framed.inbox.is_empty();
    match framed.inbox.next(framing, framed.eof) {
        Ok(Some(message)) => return Ok(message),
        Ok(None) if framed.eof => return Err(after_end(framed)),
        // Between messages, a connection that has waited before waits again.
        // One answered for the first time is read once more: a client that
        // sent one request and ended its side (a one-shot client) has its
        // end in by now, and its worker closes the connection at once,
        // where parked it would cost a wake-up that brings only that end.
        Ok(None) if !partly_in && (framed.parked || framed.registered) => return Err(Next::Armed),
        Ok(None) => {}
        // A refusal is the loop's to report, where it is met again.
        Err(_) => return Err(Next::Loop),
    }
    match framed.read() {
        Ok(()) => {}
        // Nothing more yet, or a failure the registry reports at once.
        Err(_) => return Err(Next::Armed),
    }
    match framed.inbox.next(framing, framed.eof) {
        Ok(Some(message)) => Ok(message),
        Ok(None) if !framed.eof => Err(Next::Armed),
        Ok(None) => Err(after_end(framed)),
        Err(_) => Err(Next::Loop),
    }
}

/// What comes next for a connection whose client ended its side with no
/// whole message left: closed where it is, if nothing of one is left;
/// else the loop's, which reports the part.
fn after_end(framed: &Framed) -> Next {
    if framed.inbox.is_empty() {
        log::debug!("framed connection from {} ends between messages", framed.conn.peer);
        Next::Close
    } else {
        Next::Loop
    }
}
