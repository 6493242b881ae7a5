//! What the loop holds, as data: one state per connection (as httpd keeps
//! one state field per connection), where it is between accept and a
//! handler or between two requests, with what that place needs; a framed
//! connection's own record; and what a turn lends the stages.

use std::io;
use std::time::Instant;

use crate::ancillary::Credentials;
use crate::framing::{Inbox, Message};
use crate::handler_io::{Incoming, close_stream};
use crate::hooks::Hooks;
use crate::options::Options;
use crate::runner::Context;
use crate::serving::registry::Interest;

/// What the loop lends its admission for a turn: the requests' context,
/// the hooks (`verify_request`), and the options.
pub(crate) struct Env<'a, H> {
    pub ctx: &'a Context<H>,
    pub hooks: &'a mut Hooks,
    pub options: &'a Options,
}

/// Where a connection just accepted (or moved on) stands.
pub(crate) enum Admitted {
    /// Held in the loop: not a request yet.
    Held,
    /// Turned away (by `verify_request`, or a failed stage): that request is handled.
    Refused,
    /// Ready for a handler now.
    Ready(Incoming),
}

/// A slab entry of the loop: a connection and where it stands.
pub(super) struct Held {
    /// Numbers this state of this connection, so a deadline set for an
    /// earlier one (or for a connection whose slab key was reused) is known.
    pub generation: u64,
    pub state: State,
}

/// Where a connection the loop holds stands.
pub(super) enum State {
    /// On its way from accept to its first request.
    Arriving(Incoming, Arrival),
    /// Framed, between messages or inside one: its next message is cut
    /// from what the loop reads into its inbox.
    Framed(Box<Framed>),
    /// A stream its handler handed back, waiting for its next request.
    Kept(Incoming),
    /// A handed-back stream whose next request came while its client was
    /// over its per-client rate: unread until the client has a token.
    Owing(Incoming),
    /// Framed, with a worker (or queued for one): its key and its
    /// registration (disarmed) wait for it, so it is handed back without
    /// waking the loop; `deadline` is its `connection_timeout`.
    Away { deadline: Option<Instant> },
}

/// A framed connection, with the bytes it sent that are not handled yet;
/// it goes to a worker with one message, and comes back.
pub(crate) struct Framed {
    pub conn: Incoming,
    pub inbox: Inbox,
    /// The client closed its side: what is in the inbox is all there is.
    pub eof: bool,
    /// Its slab key in the loop, which keeps its entry (and its
    /// registration, once it has one) while a worker has it; `None` before
    /// it was ever held.
    pub key: Option<usize>,
    /// Its fd is in the loop's registry. A connection whose first message
    /// came with it gets its place at once and its registration only when
    /// it first waits for bytes (its worker registers it, armed): one
    /// `epoll_ctl` where a registration while away and a re-arm were two.
    pub registered: bool,
    /// What the loop does with it when it is handed back.
    pub next: Next,
    /// A Unix stream peer's credentials, read once: every message sees
    /// them, as a plain stream request would.
    pub credentials: Option<Credentials>,
    /// A whole message cut and not answered yet, because its client is over
    /// its per-client rate: it goes first once the client has a token, and
    /// until then the connection is not read.
    pub pending: Option<Message>,
    /// Its fd is in the worker pool's parking (see `dispatch/parking.rs`),
    /// edge-triggered, from the first time it waited there until it closes
    /// (closing its fd unregisters it).
    pub parked: bool,
    /// Its last read took every byte that waited, and the end if one was
    /// reported: parked again, it needs no re-arm, since only bytes that
    /// come later can be unread.
    pub drained: bool,
    /// A report said its client ended its side (or it failed). A read that
    /// returns bytes does not return the end behind them, and the one
    /// report that said both is spent: until a read returns that end, the
    /// connection is re-armed when it parks, and reports it again at once.
    pub end_reported: bool,
}

impl Framed {
    /// A connection that starts being framed: boxed once, for its whole
    /// life, so it moves between the loop, a worker and the workers' lot as
    /// a pointer, and the loop's slab entries stay small.
    pub(super) fn new(conn: Incoming) -> Box<Framed> {
        let credentials = if conn.peer.is_unix() { Credentials::of_peer(&conn.socket) } else { None };
        Box::new(Framed {
            conn,
            inbox: Inbox::default(),
            eof: false,
            key: None,
            registered: false,
            next: Next::Loop,
            credentials,
            pending: None,
            parked: false,
            drained: false,
            end_reported: false,
        })
    }

    /// Reads what its client sent so far onto its inbox (see
    /// `Incoming::read_now`), and notes what the read found: the client's
    /// end, and whether any bytes may be left unread in the socket.
    pub(super) fn read(&mut self) -> io::Result<()> {
        match self.conn.read_now(&mut self.inbox) {
            Ok(read) => {
                self.eof = read.ended;
                self.drained = read.emptied && (read.ended || !self.end_reported);
                Ok(())
            }
            Err(e) => {
                self.drained = e.kind() == io::ErrorKind::WouldBlock;
                Err(e)
            }
        }
    }
}

/// What comes next for a framed connection a worker hands back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// Nothing whole in its inbox and its client still there: it waits for
    /// bytes. Handed back, it is parked with the workers, or armed in the
    /// loop's registry, by the worker itself.
    Armed,
    /// The loop decides: a whole message is in, or the client closed, or
    /// its bytes are refused (the loop reports that).
    Loop,
    /// It cannot go on (a panic, a failed reply): the loop closes it.
    Close,
}

/// The stages of a connection's arrival, each a registered fd and a deadline.
pub(super) enum Arrival {
    /// Its first byte (`idle_timeout`): then it is ready for a handler.
    Silent,
    /// The rest of its PROXY header.
    #[cfg(feature = "proxy-protocol")]
    Header(super::proxy_header::HeaderRead),
    /// Its TLS handshake to finish.
    #[cfg(feature = "tls")]
    Handshake(super::tls_handshake::Handshake),
}

impl State {
    /// The connection, unless it is away.
    pub(super) fn conn(&self) -> Option<&Incoming> {
        match self {
            State::Arriving(conn, _) | State::Kept(conn) | State::Owing(conn) => Some(conn),
            State::Framed(framed) => Some(&framed.conn),
            State::Away { .. } => None,
        }
    }

    /// What a connection in this state waits for, for a log line.
    pub(super) fn waiting_for(&self) -> &'static str {
        match self {
            State::Arriving(_, Arrival::Silent) => "which sent nothing",
            #[cfg(feature = "proxy-protocol")]
            State::Arriving(_, Arrival::Header(_)) => "whose PROXY header was not in",
            #[cfg(feature = "tls")]
            State::Arriving(_, Arrival::Handshake(_)) => "during its TLS handshake",
            State::Framed(framed) if framed.inbox.is_empty() => "between messages",
            State::Framed(_) => "inside a message",
            State::Kept(_) => "between requests",
            State::Owing(_) => "over its client's rate",
            State::Away { .. } => "with a worker",
        }
    }

    /// What the registry reports for it.
    pub(super) fn interest(&self) -> Interest {
        match self {
            #[cfg(feature = "tls")]
            State::Arriving(_, Arrival::Handshake(handshake)) if handshake.wants_write() => Interest::ReadWrite,
            State::Away { .. } | State::Owing(_) => Interest::Nothing,
            // Over its client's rate: unread until its message may go.
            State::Framed(framed) if framed.pending.is_some() => Interest::Nothing,
            _ => Interest::Read,
        }
    }

    /// Closes the connection, if it is here (one away is its worker's).
    pub(super) fn close(self) {
        match self {
            State::Arriving(conn, _) | State::Kept(conn) | State::Owing(conn) => close(conn),
            State::Framed(framed) => close(framed.conn),
            State::Away { .. } => {}
        }
    }
}

/// Closes a connection the loop holds: one with a TLS session says
/// `close_notify` first, so its client knows the end is the server's and
/// not a cut; then the write half is shut down and the socket closed.
pub(super) fn close(conn: Incoming) {
    #[cfg(feature = "tls")]
    if let Some(tls) = &conn.tls {
        tls.close_now(&conn.socket);
    }
    close_stream(conn.socket);
}
