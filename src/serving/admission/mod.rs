//! A connection's way from `accept` to a handler, all of it in the serving
//! loop and none of it in a worker: a trusted balancer's PROXY header
//! (feature `proxy-protocol`), then `verify_request`, then the TLS handshake
//! (feature `tls`), then, with `idle_timeout`, waiting idle until it speaks;
//! and the queue of connections ready for a handler while the dispatcher
//! is full.
//!
//! Each held connection is registered once in the loop's [`Registry`],
//! under its slab key, with the interest its stage wants, and has one
//! deadline in [`Deadlines`]. A turn touches the connections that became
//! ready and those whose deadline passed, never the others: a peer that
//! stalls anywhere on the way costs an fd and a few hundred bytes until its
//! deadline, never a worker, and never time on other connections' turns.
//! Connections in any stage count as open for `max_connections`.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use slab::Slab;

use super::deadlines::Deadlines;
use super::framing::{After, Framed, Inbox};
use super::registry::{FIRST_HELD, Interest, LISTENER, Registry, WAKE};
use super::returns::{Back, Returns};
use crate::adapter::{self, Context, Incoming};
use crate::hooks::Hooks;
use crate::options::{Options, deadline_after};
use crate::shutdown::ShutdownHandle;
use crate::stats::Counters;
use crate::{Error, sys};

mod between;

/// How often the loop looks again for a framed connection a worker still
/// has past its `connection_timeout`: the worker hands it back without
/// waking the loop, so the loop comes by to close it.
const AWAY_RECHECK: Duration = Duration::from_secs(1);

/// Where a connection just accepted stands.
pub(crate) enum Admitted {
    /// In a stage of the way: not a request yet.
    Held,
    /// Turned away (by `verify_request`, or a failed stage): that request is handled.
    Refused,
    /// Ready for a handler now.
    Ready(Incoming),
}

/// How one step of a stage ended for a connection (a PROXY header read, a
/// TLS handshake step), when it ended the stage.
#[cfg_attr(not(any(feature = "proxy-protocol", feature = "tls")), allow(dead_code, reason = "no stage can fail"))]
pub(crate) enum Step {
    /// Through the stage: on to the next.
    Through,
    /// The peer closed before sending a byte (a port check, a TCP health check).
    Gone,
    /// Refused; the reason says why.
    Failed(String),
}

/// What a connection held in the loop waits for.
enum Stage {
    /// Its first byte (`idle_timeout`): then it is ready for a handler.
    Idle,
    /// The rest of its PROXY header.
    #[cfg(feature = "proxy-protocol")]
    Header(crate::proxy::HeaderRead),
    /// Its TLS handshake to finish.
    #[cfg(feature = "tls")]
    Handshake(crate::tls::Handshake),
    /// Its next framed message (with what it sent of it so far), what the
    /// handler keeps for it, and its Unix peer's credentials.
    Framed(Inbox, crate::handler::ConnectionState, Option<crate::ancillary::Credentials>),
    /// Its next request: a stream connection its handler handed back.
    Kept,
}

impl Stage {
    /// What a connection in this stage waits for, for a log line.
    fn waiting_for(&self) -> &'static str {
        match self {
            Stage::Idle => "which sent nothing",
            Stage::Framed(inbox, ..) if inbox.is_empty() => "between messages",
            Stage::Framed(..) => "inside a message",
            Stage::Kept => "between requests",
            #[cfg(feature = "proxy-protocol")]
            Stage::Header(_) => "whose PROXY header was not in",
            #[cfg(feature = "tls")]
            Stage::Handshake(_) => "during its TLS handshake",
        }
    }

    fn interest(&self) -> Interest {
        match self {
            #[cfg(feature = "tls")]
            Stage::Handshake(handshake) if handshake.wants_write() => Interest::ReadWrite,
            _ => Interest::Read,
        }
    }
}

struct Held {
    conn: Incoming,
    stage: Stage,
    /// Numbers this stage of this connection, so a deadline set for an
    /// earlier one (or for a connection whose slab key was reused) is known.
    generation: u64,
}

/// A slab entry: a connection in the loop, or a framed one out with a
/// worker (or queued for one), whose key and registration wait for it.
enum Entry {
    Here(Held),
    Away {
        generation: u64,
        /// Its `connection_timeout` deadline, if it has one.
        deadline: Option<Instant>,
    },
}

impl Entry {
    fn generation(&self) -> u64 {
        match self {
            Entry::Here(held) => held.generation,
            Entry::Away { generation, .. } => *generation,
        }
    }

    fn here(&mut self) -> Option<&mut Held> {
        match self {
            Entry::Here(held) => Some(held),
            Entry::Away { .. } => None,
        }
    }
}

/// What one wait of the loop found, besides held connections.
#[derive(Debug, Default)]
pub(crate) struct Woken {
    /// The wake-up socket: a shutdown, a freed slot, a child's exit.
    pub wake: bool,
    /// The server socket has a client or a datagram waiting.
    pub listener: bool,
    /// A held connection was turned away (a handled request).
    pub turned_away: bool,
}

/// The connections on their way to a handler, and the registry the whole
/// loop waits on.
pub(crate) struct Admission {
    registry: Registry,
    held: Slab<Entry>,
    deadlines: Deadlines,
    /// Ready for a handler, oldest first, waiting for room.
    spoken: VecDeque<Incoming>,
    generations: u64,
    /// Whether the server socket is armed to report.
    listening: bool,
    /// Reused for each wait's keys.
    ready: Vec<usize>,
    /// Framed connections with a whole message, waiting for room.
    messages: VecDeque<(Framed, Vec<u8>)>,
    /// Framed connections workers have answered.
    returns: Arc<Returns>,
    /// Reused for each take of `returns`.
    returned: Vec<Back>,
    /// The server is closing: connections between requests are closed
    /// instead of held.
    closing: Option<Closing>,
}

impl Admission {
    /// The registry for a loop on `listener`, woken by `waker`'s socket.
    pub(crate) fn new(waker: &ShutdownHandle, listener: BorrowedFd<'_>) -> io::Result<Admission> {
        let registry = Registry::new()?;
        registry.add(waker.wake_fd(), WAKE, Interest::Read)?;
        registry.add(listener, LISTENER, Interest::Nothing)?;
        let returns = Arc::new(Returns::new(waker.clone(), registry.rearmer()));
        Ok(Admission {
            registry,
            held: Slab::new(),
            deadlines: Deadlines::default(),
            spoken: VecDeque::new(),
            generations: 0,
            listening: false,
            ready: Vec::new(),
            messages: VecDeque::new(),
            returns,
            returned: Vec::new(),
            closing: None,
        })
    }

    /// Where workers hand framed connections back.
    pub(crate) fn returns(&self) -> &Arc<Returns> {
        &self.returns
    }

    /// Takes a connection just accepted as far as it can go at once.
    pub(crate) fn accepted<H>(
        &mut self,
        conn: Incoming,
        now: Instant,
        ctx: &Context<H>,
        hooks: &mut Hooks,
        options: &Options,
    ) -> Admitted {
        // A trusted balancer's header comes first; until it is in, the
        // client (and so what `verify_request` sees) is not known.
        #[cfg(feature = "proxy-protocol")]
        if let Some(settings) = &options.proxy_protocol
            && settings.trusts(&conn.peer)
        {
            let expires = deadline_after(now, settings.timeout());
            return self.hold(conn, Stage::Header(crate::proxy::HeaderRead::default()), Some(expires), ctx);
        }
        self.verify(conn, now, ctx, hooks, options, true)
    }

    /// `verify_request`, then on: to the TLS handshake, to waiting idle, or
    /// (`direct`) back to the caller as ready; otherwise queued.
    fn verify<H>(
        &mut self,
        conn: Incoming,
        now: Instant,
        ctx: &Context<H>,
        hooks: &mut Hooks,
        options: &Options,
        direct: bool,
    ) -> Admitted {
        if !hooks.verify_request(&conn.peer) {
            Counters::add(&ctx.counters().refused, 1);
            adapter::close_stream(conn.socket);
            return Admitted::Refused;
        }
        #[cfg(feature = "tls")]
        if let Some(config) = &options.tls {
            let handshake = options.idle_timeout.unwrap_or(crate::tls::DEFAULT_HANDSHAKE_TIMEOUT);
            let limit = deadline_after(now, handshake);
            let expires = conn.deadline.map_or(limit, |deadline| deadline.min(limit));
            return match crate::tls::Handshake::start(config) {
                Ok(handshake) => self.hold(conn, Stage::Handshake(handshake), Some(expires), ctx),
                Err(reason) => {
                    refuse(ctx, conn, &ctx.counters().tls_failed, |peer| Error::Tls { peer, reason });
                    Admitted::Refused
                }
            };
        }
        self.ready(conn, now, options, direct, ctx)
    }

    /// A connection ready for a handler: held until it speaks (with
    /// `idle_timeout`), handed back (`direct`), or queued for room.
    fn ready<H>(
        &mut self,
        conn: Incoming,
        now: Instant,
        options: &Options,
        direct: bool,
        ctx: &Context<H>,
    ) -> Admitted {
        if options.framing.is_some() {
            let mut framed = Framed::new(conn, None);
            // Most clients speak at once, and a TLS session may hold what
            // came with its handshake: one read saves a wait for either.
            match framed.inbox.read_now(&framed.conn) {
                Ok(eof) => framed.eof = eof,
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => {}
                Err(e) => {
                    log::debug!("framed connection from {} failed: {e}", framed.conn.peer);
                    adapter::close_stream(framed.conn.socket);
                    return Admitted::Refused;
                }
            }
            return if self.frame(framed, now, ctx, options) { Admitted::Refused } else { Admitted::Held };
        }
        match options.idle_timeout {
            // Most clients speak at once: their request is often in before
            // the accept. One look saves registering, waking and releasing.
            Some(idle) if !sys::has_input(conn.socket.as_fd()) => {
                self.hold(conn, Stage::Idle, Some(deadline_after(now, idle)), ctx)
            }
            _ if direct => Admitted::Ready(conn),
            _ => {
                self.spoken.push_back(conn);
                Admitted::Held
            }
        }
    }

    /// Registers `conn` in `stage` until `expires` (`None`: for as long as
    /// it takes). A connection the registry cannot take (out of kernel
    /// memory) is closed and reported.
    fn hold<H>(&mut self, conn: Incoming, stage: Stage, expires: Option<Instant>, ctx: &Context<H>) -> Admitted {
        let entry = self.held.vacant_entry();
        let key = entry.key();
        if let Err(source) = self.registry.add(conn.socket.as_fd(), key + FIRST_HELD, stage.interest()) {
            (ctx.on_error)(&Error::Request { peer: conn.peer.clone(), source });
            adapter::close_stream(conn.socket);
            return Admitted::Refused;
        }
        self.generations += 1;
        entry.insert(Entry::Here(Held { conn, stage, generation: self.generations }));
        if let Some(expires) = expires {
            self.deadlines.set(expires, key, self.generations);
        }
        Admitted::Held
    }

    /// The framed connection whose message has waited longest, with it.
    pub(crate) fn next_message(&mut self) -> Option<(Framed, Vec<u8>)> {
        self.messages.pop_front()
    }

    /// From now on, connections between requests are closed, not held: the
    /// server is closing (or handing over). Those between requests now are
    /// closed at once; one whose client already sent (bytes in the socket,
    /// or part of a message read) is carried on to be answered. A stop also
    /// closes those that have sent nothing yet, wherever they are on their
    /// way (a hand-over carries them on: they may be sending); without a
    /// drain deadline to bound the wait it also closes those inside a
    /// message.
    pub(crate) fn closing(&mut self, closing: Closing) {
        self.closing = Some(closing);
        self.returns.closing();
        let leaving: Vec<usize> =
            self.held.iter().filter_map(|(key, entry)| Some(key).filter(|_| entry_leaves(entry, closing))).collect();
        for key in leaving {
            let (conn, stage) = self.release(key);
            log::debug!("server closing: closing connection from {}, {}", conn.peer, stage.waiting_for());
            adapter::close_stream(conn.socket);
        }
    }

    /// Whether the server is closing: accepting nothing new.
    pub(crate) fn is_closing(&self) -> bool {
        self.closing.is_some()
    }

    /// Takes a connection in the loop out of the registry and the slab.
    fn release(&mut self, key: usize) -> (Incoming, Stage) {
        let Entry::Here(held) = self.held.remove(key) else { unreachable!("released only from the loop") };
        self.registry.remove(held.conn.socket.as_fd());
        (held.conn, held.stage)
    }

    /// Open connections the loop answers for: held in any stage, ready and
    /// waiting for room, and framed ones away with a worker or queued for
    /// one (their entries wait for them, so a connection a worker gives
    /// back without waking the loop is never counted nowhere). Stream
    /// connections a handler holds count as the dispatcher's.
    pub(crate) fn len(&self) -> usize {
        self.held.len() + self.spoken.len()
    }

    /// Time until the first deadline of a held connection.
    pub(crate) fn next_expiry(&mut self, now: Instant) -> Option<Duration> {
        let held = &self.held;
        self.deadlines.next(now, |key, generation| held.get(key).is_some_and(|e| e.generation() == generation))
    }

    /// Waits until something is ready or `timeout` passes, then moves every
    /// held connection that can move: on to its next stage, to the ready
    /// queue, or out with a log line or an error naming the peer; those
    /// whose deadline passed too. `accepting`: the server socket is to be
    /// reported.
    pub(crate) fn wait<H>(
        &mut self,
        (wake, listener): (BorrowedFd<'_>, BorrowedFd<'_>),
        accepting: bool,
        timeout: Option<Duration>,
        (ctx, hooks, options): (&Context<H>, &mut Hooks, &Options),
    ) -> io::Result<Woken> {
        if accepting != self.listening {
            let interest = if accepting { Interest::Read } else { Interest::Nothing };
            self.registry.rearm(listener, LISTENER, interest)?;
            self.listening = accepting;
        }
        let mut ready = std::mem::take(&mut self.ready);
        ready.clear();
        ready.extend(self.registry.wait(timeout)?);
        let mut woken = Woken::default();
        // Before what reported: a framed connection a worker re-armed may
        // be among it (see `Returns::give_back`).
        woken.turned_away |= self.take_returned(Instant::now(), ctx, options);
        for &key in &ready {
            match key {
                WAKE => {
                    woken.wake = true;
                    self.registry.rearm(wake, WAKE, Interest::Read)?;
                }
                LISTENER => {
                    woken.listener = true;
                    // Oneshot: it reported, so it is disarmed until the next turn arms it.
                    self.listening = false;
                }
                key => woken.turned_away |= self.on_ready(key - FIRST_HELD, Instant::now(), ctx, hooks, options),
            }
        }
        self.ready = ready;
        let now = Instant::now();
        loop {
            let held = &self.held;
            let current = |key: usize, generation| held.get(key).is_some_and(|e: &Entry| e.generation() == generation);
            let Some(key) = self.deadlines.pop_expired(now, current) else { break };
            woken.turned_away |= self.on_expired(key, now, ctx, hooks, options);
        }
        let held = &self.held;
        let current = |key: usize, generation| held.get(key).is_some_and(|e: &Entry| e.generation() == generation);
        self.deadlines.sweep(held.len(), current);
        Ok(woken)
    }

    /// A held connection's fd reported. Returns whether it was turned away.
    // Without the optional stages, some of this has nothing to do.
    #[cfg_attr(not(all(feature = "proxy-protocol", feature = "tls")), allow(unused_variables))]
    fn on_ready<H>(
        &mut self,
        key: usize,
        now: Instant,
        ctx: &Context<H>,
        hooks: &mut Hooks,
        options: &Options,
    ) -> bool {
        let Some(held) = self.held.get_mut(key).and_then(Entry::here) else { return false };
        let step = match &mut held.stage {
            Stage::Idle => None,
            // A client that closes between requests ends its connection
            // without another request.
            Stage::Kept => match next_request(&mut held.conn) {
                Ok(true) => None,
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => {
                    return self.rearm(key);
                }
                ended => return self.close_ended(key, format_args!("ended between requests: {ended:?}")),
            },
            Stage::Framed(inbox, ..) => {
                let eof = match inbox.read_now(&held.conn) {
                    Ok(eof) => eof,
                    Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => {
                        return self.rearm(key);
                    }
                    Err(e) => return self.close_ended(key, format_args!("failed: {e}")),
                };
                let Some(Held { conn, stage: Stage::Framed(inbox, state, credentials), .. }) = self.send_away(key)
                else {
                    return false;
                };
                let framed = Framed { conn, inbox, eof, state, key: Some(key), after: After::Loop, credentials };
                return self.frame(framed, now, ctx, options);
            }
            #[cfg(feature = "proxy-protocol")]
            Stage::Header(read) => match options.proxy_protocol.as_ref().and_then(|s| read.read(&mut held.conn, s)) {
                Some(step) => Some(step),
                None => return self.rearm(key),
            },
            #[cfg(feature = "tls")]
            Stage::Handshake(handshake) => match handshake.step(&held.conn) {
                Some(step) => Some(step),
                None => return self.rearm(key),
            },
        };
        let (conn, stage) = self.release(key);
        self.leave(conn, stage, step, now, ctx, hooks, options)
    }

    /// A held connection's deadline passed. Returns whether it was turned away.
    #[cfg_attr(not(all(feature = "proxy-protocol", feature = "tls")), allow(unused_variables))]
    fn on_expired<H>(
        &mut self,
        key: usize,
        now: Instant,
        ctx: &Context<H>,
        hooks: &mut Hooks,
        options: &Options,
    ) -> bool {
        let held = match self.held.get_mut(key) {
            Some(Entry::Here(held)) => held,
            Some(&mut Entry::Away { generation, deadline }) => {
                self.look_again(key, generation, deadline, now, options);
                return false;
            }
            None => return false,
        };
        let step = match &mut held.stage {
            // A byte that came after the wait returned still counts.
            Stage::Framed(..) | Stage::Kept if sys::has_input(held.conn.socket.as_fd()) => {
                let generation = held.generation;
                let turned_away = self.on_ready(key, now, ctx, hooks, options);
                self.wait_on(key, generation, now, options);
                return turned_away;
            }
            Stage::Framed(inbox, ..) if inbox.is_empty() => {
                return self.close_silent(key, ctx, "silent past its deadline between messages");
            }
            Stage::Framed(..) => return self.close_silent(key, ctx, "silent past its deadline inside a message"),
            Stage::Idle if sys::has_input(held.conn.socket.as_fd()) => None,
            Stage::Kept => return self.close_silent(key, ctx, "silent past its deadline between requests"),
            Stage::Idle => return self.close_silent(key, ctx, "nothing received within the idle timeout"),
            #[cfg(feature = "proxy-protocol")]
            Stage::Header(read) => match &options.proxy_protocol {
                Some(settings) => Some(read.expire(&mut held.conn, settings)),
                None => Some(Step::Through),
            },
            #[cfg(feature = "tls")]
            Stage::Handshake(handshake) => Some(
                handshake
                    .step(&held.conn)
                    .unwrap_or_else(|| Step::Failed("TLS handshake not finished by its deadline".into())),
            ),
        };
        let (conn, stage) = self.release(key);
        self.leave(conn, stage, step, now, ctx, hooks, options)
    }

    /// After a connection whose deadline passed was read: one still waiting
    /// where it was (over TLS, the bytes were part of a record, and gave no
    /// plaintext) gets its deadline again, from now (its client did send),
    /// or it would have none: the one that passed is gone from the heap.
    fn wait_on(&mut self, key: usize, generation: u64, now: Instant, options: &Options) {
        let Some(Entry::Here(held)) = self.held.get(key) else { return };
        if held.generation != generation {
            return;
        }
        let idle = options.idle_timeout.map(|idle| deadline_after(now, idle));
        if let Some(expires) = [idle, held.conn.deadline].into_iter().flatten().min() {
            self.deadlines.set(expires, key, generation);
        }
    }

    /// Closes a held connection whose client went quiet past its deadline,
    /// counted in `idle_closed`; false (not turned away: no request came).
    fn close_silent<H>(&mut self, key: usize, ctx: &Context<H>, why: &str) -> bool {
        let (conn, _) = self.release(key);
        log::info!("closing connection from {}: {why}", conn.peer);
        Counters::add(&ctx.counters().idle_closed, 1);
        adapter::close_stream(conn.socket);
        false
    }

    /// Closes a held connection its client ended or broke between requests;
    /// false (not turned away: no request came).
    fn close_ended(&mut self, key: usize, how: std::fmt::Arguments<'_>) -> bool {
        let (conn, _) = self.release(key);
        log::debug!("connection from {} {how}", conn.peer);
        #[cfg(feature = "tls")]
        if let Some(tls) = &conn.tls {
            tls.close_now(&conn.socket);
        }
        adapter::close_stream(conn.socket);
        false
    }

    /// Re-arms a held connection that wants more; false (not turned away).
    #[cfg_attr(
        not(any(feature = "proxy-protocol", feature = "tls")),
        allow(dead_code, reason = "idle connections never wait twice")
    )]
    fn rearm(&mut self, key: usize) -> bool {
        let Some(held) = self.held.get_mut(key).and_then(Entry::here) else { return false };
        if let Err(e) = self.registry.rearm(held.conn.socket.as_fd(), key + FIRST_HELD, held.stage.interest()) {
            // Its deadline still ends it.
            log::warn!("connection from {}: cannot wait for it: {e}", held.conn.peer);
        }
        false
    }

    /// A connection leaves its stage (`step`: how; `None` for an idle one
    /// that spoke). Returns whether it was turned away.
    #[allow(clippy::too_many_arguments, reason = "the loop's state, passed through")]
    #[cfg_attr(not(all(feature = "proxy-protocol", feature = "tls")), allow(unused_variables, unused_mut))]
    fn leave<H>(
        &mut self,
        mut conn: Incoming,
        stage: Stage,
        step: Option<Step>,
        now: Instant,
        ctx: &Context<H>,
        hooks: &mut Hooks,
        options: &Options,
    ) -> bool {
        match step {
            None | Some(Step::Through) => {}
            Some(Step::Gone) => {
                log::debug!("connection from {} closed before sending anything", conn.peer);
                adapter::close_stream(conn.socket);
                return false;
            }
            Some(Step::Failed(reason)) => {
                match stage {
                    #[cfg(feature = "proxy-protocol")]
                    Stage::Header(_) => {
                        refuse(ctx, conn, &ctx.counters().proxy_refused, |peer| Error::ProxyHeader { peer, reason })
                    }
                    #[cfg(feature = "tls")]
                    Stage::Handshake(_) => {
                        refuse(ctx, conn, &ctx.counters().tls_failed, |peer| Error::Tls { peer, reason })
                    }
                    Stage::Idle | Stage::Kept | Stage::Framed(..) => adapter::close_stream(conn.socket),
                }
                return true;
            }
        }
        match stage {
            Stage::Idle | Stage::Kept => self.spoken.push_back(conn),
            // Not reached: a framed connection leaves its stage through
            // `on_ready` and `send_away`, never through here; were it to,
            // `frame` would hold it anew under a fresh key.
            Stage::Framed(inbox, state, credentials) => {
                let framed = Framed { conn, inbox, eof: false, state, key: None, after: After::Loop, credentials };
                return self.frame(framed, now, ctx, options);
            }
            #[cfg(feature = "proxy-protocol")]
            Stage::Header(_) => {
                return matches!(self.verify(conn, now, ctx, hooks, options, false), Admitted::Refused);
            }
            #[cfg(feature = "tls")]
            Stage::Handshake(handshake) => {
                conn.tls = Some(Box::new(handshake.into_session()));
                // Its first request came with the handshake: already read off
                // the socket, so waiting on the socket would not see it.
                // (A framed one reads it out of the session on its way in.)
                if options.framing.is_none() && conn.tls.as_ref().is_some_and(|tls| tls.has_plaintext()) {
                    self.spoken.push_back(conn);
                } else {
                    return matches!(self.ready(conn, now, options, false, ctx), Admitted::Refused);
                }
            }
        }
        false
    }

    pub(crate) fn has_spoken(&self) -> bool {
        !self.spoken.is_empty() || !self.messages.is_empty()
    }

    /// The connection ready for a handler that has waited longest.
    pub(crate) fn next_spoken(&mut self) -> Option<Incoming> {
        self.spoken.pop_front()
    }

    /// On close: every connection still held is closed with a log line.
    pub(crate) fn close_all(&mut self) {
        for conn in self.spoken.drain(..) {
            adapter::close_unserved(conn.socket, &conn.peer);
        }
        for (framed, _) in self.messages.drain(..) {
            adapter::close_unserved(framed.conn.socket, &framed.conn.peer);
        }
        self.returns.take(&mut self.returned);
        for back in self.returned.drain(..) {
            let conn = match back {
                Back::Framed(framed) => {
                    // Its registration was kept while a worker had it.
                    if framed.key.is_some() {
                        self.registry.remove(framed.conn.socket.as_fd());
                    }
                    framed.conn
                }
                Back::Stream(conn) => conn,
            };
            log::debug!("server closing: closing connection from {} between requests", conn.peer);
            adapter::close_stream(conn.socket);
        }
        for (_, entry) in self.held.iter_mut() {
            if let Some(held) = entry.here() {
                self.registry.remove(held.conn.socket.as_fd());
            }
        }
        // Those away are with workers, who close them (a `Returns` left
        // behind closes what it holds when it goes).
        for held in self.held.drain().filter_map(|e| if let Entry::Here(held) = e { Some(held) } else { None }) {
            let waiting_for = held.stage.waiting_for();
            log::info!("server closing: closing connection from {}, {waiting_for}", held.conn.peer);
            adapter::close_stream(held.conn.socket);
        }
        self.deadlines.clear();
    }

    /// Forgets the wake-up and server sockets, before they close.
    pub(crate) fn forget(&self, wake: BorrowedFd<'_>, listener: BorrowedFd<'_>) {
        self.registry.remove(wake);
        self.registry.remove(listener);
    }
}

/// How a server closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Closing {
    /// A stop; `wait_inside`: connections inside a message are waited for
    /// (there is a drain deadline to bound that wait).
    Stop { wait_inside: bool },
    /// A hand-over to a successor: every connection on its way to a handler
    /// is carried on.
    HandOver,
}

/// What a connection in the loop waits for, as a close sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Waiting {
    /// Its next request: nothing of one read yet.
    NextRequest,
    /// The rest of a framed message.
    RestOfMessage,
    /// Its first byte, PROXY header or TLS handshake: no request yet.
    Arrival,
}

impl Closing {
    /// Whether a connection waiting as `waiting` on `fd` is closed now: the
    /// one rule for every place a close meets one (held as it begins,
    /// handed back by a worker, or handed back by a handler). One whose
    /// client already sent (bytes in the socket) is carried on.
    pub(super) fn closes(self, waiting: Waiting, fd: BorrowedFd<'_>) -> bool {
        match (self, waiting) {
            (_, Waiting::NextRequest) => !sys::has_input(fd),
            (Closing::Stop { wait_inside }, Waiting::RestOfMessage) => !wait_inside,
            (Closing::Stop { .. }, Waiting::Arrival) => !sys::has_input(fd),
            (Closing::HandOver, Waiting::RestOfMessage | Waiting::Arrival) => false,
        }
    }
}

/// Whether the held `entry` is closed when the server begins `closing`.
fn entry_leaves(entry: &Entry, closing: Closing) -> bool {
    let Entry::Here(held) = entry else { return false };
    let waiting = match &held.stage {
        Stage::Framed(inbox, ..) if inbox.is_empty() => Waiting::NextRequest,
        Stage::Framed(..) => Waiting::RestOfMessage,
        Stage::Kept => Waiting::NextRequest,
        // Not yet a request of any kind: a stop closes it even with bytes
        // in, which are a header or a handshake, not a request.
        #[cfg(feature = "proxy-protocol")]
        Stage::Header(_) => return matches!(closing, Closing::Stop { .. }),
        #[cfg(feature = "tls")]
        Stage::Handshake(_) => return matches!(closing, Closing::Stop { .. }),
        Stage::Idle => Waiting::Arrival,
    };
    closing.closes(waiting, held.conn.socket.as_fd())
}

/// Whether a kept connection that reported brings a next request (`true`)
/// or its end (`false`); `WouldBlock` when nothing came after all. Over TLS
/// the records are read (into `buffered`, as plaintext): a `close_notify`
/// or a key update alone is no request.
fn next_request(conn: &mut Incoming) -> io::Result<bool> {
    #[cfg(feature = "tls")]
    if let Some(tls) = &conn.tls {
        // Plaintext came (then its end does not matter yet), or only the end.
        tls.read_now(&conn.socket, &mut conn.buffered)?;
        return Ok(!conn.buffered.is_empty());
    }
    sys::recv_now(&conn.socket, &mut [0], true).map(|n| n > 0)
}

/// Closes a connection a stage refused, counting it in `counter` and
/// reporting the error `error` makes of its peer to `handle_error`.
#[cfg(any(feature = "proxy-protocol", feature = "tls"))]
fn refuse<H>(
    ctx: &Context<H>,
    conn: Incoming,
    counter: &std::sync::atomic::AtomicU64,
    error: impl FnOnce(crate::Address) -> Error,
) {
    Counters::add(counter, 1);
    (ctx.on_error)(&error(conn.peer));
    adapter::close_stream(conn.socket);
}
