//! The connections the serving loop holds, and the registry the whole loop
//! waits on. A connection is held on its way from `accept` to a handler
//! ([`arrival`]: PROXY header, `verify_request`, TLS handshake, silent
//! until it speaks), between framed messages ([`framed`]), and between
//! requests after its handler handed it back ([`kept`]); connections ready
//! for a handler queue here while the dispatcher is full. None of it waits
//! in a worker.
//!
//! Each held connection is registered once in the loop's [`Registry`],
//! under its slab key, with the interest its [`State`] wants, and has one
//! deadline in [`Deadlines`]. A turn touches the connections that became
//! ready and those whose deadline passed, never the others: a peer that
//! stalls anywhere on the way costs an fd and a few hundred bytes until its
//! deadline, never a worker, and never time on other connections' turns.
//! Connections in any state count as open for `max_connections`.

mod arrival;
mod closing;
mod framed;
mod kept;
#[cfg(feature = "proxy-protocol")]
mod proxy_header;
mod state;
#[cfg(feature = "tls")]
mod tls_handshake;

pub(crate) use arrival::Admitted;
pub(crate) use closing::Closing;
pub(crate) use framed::{Answer, Framed, Next};

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use slab::Slab;

use super::deadlines::Deadlines;
use super::registry::{FIRST_HELD, Interest, LISTENER, Registry, WAKE};
use super::returns::{HandedBack, Returns};
use crate::Error;
use crate::handler_io::Incoming;
use crate::hooks::Hooks;
use crate::options::Options;
use crate::runner::Context;
use crate::shutdown::ShutdownHandle;
use crate::stats::Counters;
use crate::sys;
#[cfg(any(feature = "proxy-protocol", feature = "tls"))]
use arrival::Step;
use state::{Arrival, Held, State};

/// What the loop lends its admission for a turn: the requests' context,
/// the hooks (`verify_request`), and the options.
pub(crate) struct Env<'a, H> {
    pub ctx: &'a Context<H>,
    pub hooks: &'a mut Hooks,
    pub options: &'a Options,
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

/// The connections the loop holds, and the registry the whole loop waits on.
pub(crate) struct Admission {
    registry: Registry,
    held: Slab<Held>,
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
    /// The way back: framed connections workers answered, and stream
    /// connections handlers handed back.
    returns: Arc<Returns>,
    /// Reused for each take of `returns`.
    returned: Vec<HandedBack>,
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

    /// The way back, where workers and handlers hand connections back.
    pub(crate) fn returns(&self) -> &Arc<Returns> {
        &self.returns
    }

    /// Registers a connection in `state` until `expires` (`None`: for as
    /// long as it takes). A connection the registry cannot take (out of
    /// kernel memory) is closed and reported.
    fn hold<H>(&mut self, mut state: State, expires: Option<Instant>, env: &Env<'_, H>) -> Admitted {
        let entry = self.held.vacant_entry();
        let key = entry.key();
        // Only a connection that is here is held anew (one away keeps its entry).
        let Some(conn) = state.conn() else { return Admitted::Held };
        if let Err(source) = self.registry.add(conn.socket.as_fd(), key + FIRST_HELD, state.interest()) {
            (env.ctx.on_error)(&Error::Request { peer: conn.peer.clone(), source });
            state.close();
            return Admitted::Refused;
        }
        if let State::Framed(framed) = &mut state {
            framed.key = Some(key);
        }
        self.generations += 1;
        entry.insert(Held { generation: self.generations, state });
        if let Some(expires) = expires {
            self.deadlines.set(expires, key, self.generations);
        }
        Admitted::Held
    }

    /// Takes a connection out of the slab, and out of the registry if it
    /// is here (one away keeps its registration for its return).
    fn release(&mut self, key: usize) -> State {
        let held = self.held.remove(key);
        if let Some(conn) = held.state.conn() {
            self.registry.remove(conn.socket.as_fd());
        }
        held.state
    }

    /// Open connections the loop answers for: held in any state, ready and
    /// waiting for room, and framed ones away with a worker or queued for
    /// one (their entries wait for them, so a connection a worker hands
    /// back without waking the loop is never counted nowhere). Stream
    /// connections a handler holds count as the dispatcher's.
    pub(crate) fn len(&self) -> usize {
        self.held.len() + self.spoken.len()
    }

    /// Time until the first deadline of a held connection.
    pub(crate) fn next_expiry(&mut self, now: Instant) -> Option<Duration> {
        let held = &self.held;
        self.deadlines.next(now, |key, generation| held.get(key).is_some_and(|h| h.generation == generation))
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
        env: &mut Env<'_, H>,
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
        // be among it (see `Returns::hand_back_framed`).
        woken.turned_away |= self.take_returned(Instant::now(), env);
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
                key => woken.turned_away |= self.on_ready(key - FIRST_HELD, Instant::now(), env),
            }
        }
        self.ready = ready;
        let now = Instant::now();
        loop {
            let held = &self.held;
            let current = |key: usize, generation| held.get(key).is_some_and(|h: &Held| h.generation == generation);
            let Some(key) = self.deadlines.pop_expired(now, current) else { break };
            woken.turned_away |= self.on_expired(key, now, env);
        }
        let held = &self.held;
        let current = |key: usize, generation| held.get(key).is_some_and(|h: &Held| h.generation == generation);
        self.deadlines.sweep(held.len(), current);
        Ok(woken)
    }

    /// Takes back what workers and handlers handed back: a framed
    /// connection goes on with its next message or waits in the loop, a
    /// kept one waits for its next request. Returns whether one was turned
    /// away.
    pub(crate) fn take_returned<H>(&mut self, now: Instant, env: &Env<'_, H>) -> bool {
        let mut returned = std::mem::take(&mut self.returned);
        self.returns.take(&mut returned);
        let mut turned_away = false;
        for back in returned.drain(..) {
            turned_away |= match back {
                HandedBack::Framed(framed) => self.frame(framed, now, env),
                HandedBack::Stream(conn) => self.kept(conn, now, env),
            };
        }
        self.returned = returned;
        turned_away
    }

    /// A held connection's fd reported. Returns whether it was turned away.
    // Without the optional stages, some of this has nothing to do.
    #[cfg_attr(not(all(feature = "proxy-protocol", feature = "tls")), allow(unused_variables))]
    fn on_ready<H>(&mut self, key: usize, now: Instant, env: &mut Env<'_, H>) -> bool {
        let Some(held) = self.held.get_mut(key) else { return false };
        let step = match &mut held.state {
            State::Away { .. } => return false,
            // A client that closes between requests ends its connection
            // without another request.
            State::Kept(conn) => match kept::next_request(conn) {
                Ok(true) => {
                    if let State::Kept(conn) = self.release(key) {
                        self.spoken.push_back(conn);
                    }
                    return false;
                }
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => {
                    return self.rearm(key);
                }
                ended => return self.close_ended(key, format_args!("ended between requests: {ended:?}")),
            },
            State::Framed(framed) => {
                framed.eof = match framed.conn.read_now(&mut framed.inbox) {
                    Ok(eof) => eof,
                    Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => {
                        return self.rearm(key);
                    }
                    Err(e) => return self.close_ended(key, format_args!("failed: {e}")),
                };
                let Some(mut framed) = self.send_away(key) else { return false };
                framed.next = framed::Next::Loop;
                return self.frame(framed, now, env);
            }
            State::Arriving(_, Arrival::Silent) => None,
            #[cfg(feature = "proxy-protocol")]
            State::Arriving(conn, Arrival::Header(read)) => {
                match env.options.proxy_protocol.as_ref().and_then(|s| read.read(conn, s)) {
                    Some(step) => Some(step),
                    None => return self.rearm(key),
                }
            }
            #[cfg(feature = "tls")]
            State::Arriving(conn, Arrival::Handshake(handshake)) => match handshake.step(conn) {
                Some(step) => Some(step),
                None => return self.rearm(key),
            },
        };
        let State::Arriving(conn, arrival) = self.release(key) else { return false };
        self.arrived((conn, arrival), step, now, env)
    }

    /// A held connection's deadline passed. Returns whether it was turned away.
    #[cfg_attr(not(all(feature = "proxy-protocol", feature = "tls")), allow(unused_variables))]
    fn on_expired<H>(&mut self, key: usize, now: Instant, env: &mut Env<'_, H>) -> bool {
        let Some(held) = self.held.get_mut(key) else { return false };
        let generation = held.generation;
        let step = match &mut held.state {
            &mut State::Away { deadline } => {
                self.look_again(key, generation, deadline, now, env);
                return false;
            }
            // A byte that came after the wait returned still counts.
            State::Framed(Framed { conn, .. }) | State::Kept(conn) if sys::has_input(conn.socket.as_fd()) => {
                let turned_away = self.on_ready(key, now, env);
                self.wait_on(key, generation, now, env);
                return turned_away;
            }
            State::Framed(framed) if framed.inbox.is_empty() => {
                return self.close_silent(key, env, "silent past its deadline between messages");
            }
            State::Framed(_) => return self.close_silent(key, env, "silent past its deadline inside a message"),
            State::Kept(_) => return self.close_silent(key, env, "silent past its deadline between requests"),
            State::Arriving(conn, Arrival::Silent) if sys::has_input(conn.socket.as_fd()) => None,
            State::Arriving(_, Arrival::Silent) => {
                return self.close_silent(key, env, "nothing received within the idle timeout");
            }
            #[cfg(feature = "proxy-protocol")]
            State::Arriving(conn, Arrival::Header(read)) => match &env.options.proxy_protocol {
                Some(settings) => Some(read.expire(conn, settings)),
                None => Some(Step::Through),
            },
            #[cfg(feature = "tls")]
            State::Arriving(conn, Arrival::Handshake(handshake)) => Some(
                handshake
                    .step(conn)
                    .unwrap_or_else(|| Step::Failed("TLS handshake not finished by its deadline".into())),
            ),
        };
        let State::Arriving(conn, arrival) = self.release(key) else { return false };
        self.arrived((conn, arrival), step, now, env)
    }

    /// After a connection whose deadline passed was read: one still waiting
    /// where it was (over TLS, the bytes were part of a record, and gave no
    /// plaintext) gets its deadline again, from now (its client did send),
    /// or it would have none: the one that passed is gone from the heap.
    fn wait_on<H>(&mut self, key: usize, generation: u64, now: Instant, env: &Env<'_, H>) {
        let Some(held) = self.held.get(key) else { return };
        let Some(conn) = held.state.conn().filter(|_| held.generation == generation) else { return };
        let idle = env.options.idle_timeout.map(|idle| crate::deadline::deadline_after(now, idle));
        if let Some(expires) = [idle, conn.deadline].into_iter().flatten().min() {
            self.deadlines.set(expires, key, generation);
        }
    }

    /// Closes a held connection whose client went quiet past its deadline,
    /// counted in `idle_closed`; false (not turned away: no request came).
    fn close_silent<H>(&mut self, key: usize, env: &Env<'_, H>, why: &str) -> bool {
        let state = self.release(key);
        if let Some(conn) = state.conn() {
            log::info!("closing connection from {}: {why}", conn.peer);
        }
        Counters::add(&env.ctx.counters().idle_closed, 1);
        state.close();
        false
    }

    /// Closes a held connection its client ended or broke between requests;
    /// false (not turned away: no request came).
    fn close_ended(&mut self, key: usize, how: std::fmt::Arguments<'_>) -> bool {
        let state = self.release(key);
        if let Some(conn) = state.conn() {
            log::debug!("connection from {} {how}", conn.peer);
        }
        state.close();
        false
    }

    /// Re-arms a held connection that wants more; false (not turned away).
    fn rearm(&mut self, key: usize) -> bool {
        let Some(held) = self.held.get(key) else { return false };
        let Some(conn) = held.state.conn() else { return false };
        if let Err(e) = self.registry.rearm(conn.socket.as_fd(), key + FIRST_HELD, held.state.interest()) {
            // Its deadline still ends it.
            log::warn!("connection from {}: cannot wait for it: {e}", conn.peer);
        }
        false
    }

    /// Whether connections or messages wait for room.
    pub(crate) fn has_spoken(&self) -> bool {
        !self.spoken.is_empty() || !self.messages.is_empty()
    }

    /// The connection ready for a handler that has waited longest.
    pub(crate) fn next_spoken(&mut self) -> Option<Incoming> {
        self.spoken.pop_front()
    }

    /// The framed connection whose message has waited longest, with it.
    pub(crate) fn next_message(&mut self) -> Option<(Framed, Vec<u8>)> {
        self.messages.pop_front()
    }

    /// On close: every connection still held is closed with a log line.
    pub(crate) fn close_all(&mut self) {
        for conn in self.spoken.drain(..) {
            log::warn!("server closing: connection from {} closed before it was served", conn.peer);
            state::close(conn);
        }
        let messages: Vec<_> = self.messages.drain(..).collect();
        for (framed, _) in messages {
            log::warn!("server closing: connection from {} closed before it was served", framed.conn.peer);
            self.close_framed(framed);
        }
        self.returns.take(&mut self.returned);
        for back in std::mem::take(&mut self.returned) {
            match back {
                HandedBack::Framed(framed) => {
                    log::debug!("server closing: closing connection from {} between requests", framed.conn.peer);
                    // Its registration was kept while a worker had it.
                    self.close_framed(framed);
                }
                HandedBack::Stream(conn) => {
                    log::debug!("server closing: closing connection from {} between requests", conn.peer);
                    state::close(conn);
                }
            }
        }
        // Those away are with workers, who hand them back to a `Returns`
        // that closes what it holds when it goes.
        for held in self.held.drain() {
            let Some(conn) = held.state.conn() else { continue };
            self.registry.remove(conn.socket.as_fd());
            log::info!("server closing: closing connection from {}, {}", conn.peer, held.state.waiting_for());
            held.state.close();
        }
        self.deadlines.clear();
    }

    /// Forgets the wake-up and server sockets, before they close.
    pub(crate) fn forget(&self, wake: BorrowedFd<'_>, listener: BorrowedFd<'_>) {
        self.registry.remove(wake);
        self.registry.remove(listener);
    }
}
