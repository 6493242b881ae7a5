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
//! deadline in the loop's `Deadlines`. A turn touches the connections that became
//! ready and those whose deadline passed, never the others: a peer that
//! stalls anywhere on the way costs an fd and a few hundred bytes until its
//! deadline, never a worker, and never time on other connections' turns.
//! Connections in any state count as open for `max_connections`.

mod arrival;
mod closing;
mod framed;
mod kept;
mod lot;
#[cfg(feature = "proxy-protocol")]
mod proxy_header;
mod returns;
mod state;
mod step;
mod table;
#[cfg(feature = "tls")]
mod tls_handshake;

pub(crate) use closing::Closing;
pub(crate) use framed::Answer;
pub(crate) use lot::Lot;
pub(crate) use state::{Admitted, Env, Framed};

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::registry::{FIRST_HELD, Interest, LISTENER, Registry, WAKE};
use crate::framing::Message;
use crate::handler_io::Incoming;
use crate::sys;
use crate::waker::Waker;
use lot::{AwayAt, Parked};
use returns::{HandedBack, Returns};
use state::{Arrival, Held, Next, State};
#[cfg(any(feature = "proxy-protocol", feature = "tls"))]
use step::Step;
use table::Table;

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
    table: Table,
    /// Whether the server socket is to report (level-triggered) or quiet.
    listening: bool,
    /// Reused for each wait's keys.
    ready: Vec<usize>,
    /// Reused for each take of the table's `returns`.
    returned: Vec<HandedBack>,
}

impl Admission {
    /// The registry for a loop on `listener`, woken by `waker`'s socket;
    /// `lot`: connections park with a worker pool between requests.
    pub(crate) fn new(waker: &Waker, listener: BorrowedFd<'_>, lot: Option<Lot>) -> io::Result<Admission> {
        let registry = Registry::new()?;
        registry.add(waker.fd(), WAKE, Interest::Level)?;
        registry.add(listener, LISTENER, Interest::Nothing)?;
        let returns = Arc::new(Returns::new(waker.clone(), registry.rearmer(), lot));
        Ok(Admission {
            table: Table::new(registry, returns),
            listening: false,
            ready: Vec::new(),
            returned: Vec::new(),
        })
    }

    /// The way back, where workers and handlers hand connections back.
    pub(crate) fn returns(&self) -> &Arc<Returns> {
        &self.table.returns
    }

    /// Takes a connection just accepted as far as it can go at once.
    pub(crate) fn accepted<H>(&mut self, conn: Incoming, now: Instant, env: &mut Env<'_, H>) -> Admitted {
        arrival::accepted(&mut self.table, conn, now, env)
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
        self.table.closing = Some(closing);
        self.table.returns.closing();
        let table = &mut self.table;
        let leaving: Vec<usize> =
            table.held.iter().filter(|(_, held)| closing.closes_held(&held.state)).map(|(key, _)| key).collect();
        for key in leaving {
            let state = table.release(key);
            if let Some(conn) = state.conn() {
                log::debug!("server closing: closing connection from {}, {}", conn.peer, state.waiting_for());
            }
            state.close();
        }
    }

    /// Whether the server is closing: accepting nothing new.
    pub(crate) fn is_closing(&self) -> bool {
        self.table.closing.is_some()
    }

    /// Open connections the loop answers for: held in any state, ready and
    /// waiting for room, and framed ones away with a worker or queued for
    /// one (their entries wait for them, so a connection a worker hands
    /// back without waking the loop is never counted nowhere). Stream
    /// connections a handler holds count as the dispatcher's.
    pub(crate) fn len(&self) -> usize {
        self.table.held.len() + self.table.spoken.len()
    }

    /// Time until the first deadline of a held connection.
    pub(crate) fn next_expiry(&mut self, now: Instant) -> Option<Duration> {
        let Table { held, deadlines, .. } = &mut self.table;
        deadlines.next(now, |key, generation| held.get(key).is_some_and(|h| h.generation == generation))
    }

    /// Waits until something is ready or `timeout` passes, then moves every
    /// held connection that can move: on to its next stage, to the ready
    /// queue, or out with a log line or an error naming the peer; those
    /// whose deadline passed too. `accepting`: the server socket is to be
    /// reported.
    pub(crate) fn wait<H>(
        &mut self,
        listener: BorrowedFd<'_>,
        waker: &Waker,
        accepting: bool,
        timeout: Option<Duration>,
        env: &mut Env<'_, H>,
    ) -> io::Result<Woken> {
        // The server socket is level-triggered while the loop takes from it
        // (no re-arm per turn), and quiet while it does not.
        if accepting != self.listening {
            let interest = if accepting { Interest::Level } else { Interest::Nothing };
            self.table.registry.rearm(listener, LISTENER, interest)?;
            self.listening = accepting;
        }
        let mut ready = std::mem::take(&mut self.ready);
        ready.clear();
        // Sleep only after a last look at the waker's reasons (see `Waker`):
        // while the loop is awake, a wake-up costs no write.
        let timeout = if timeout == Some(Duration::ZERO) || waker.park() { timeout } else { Some(Duration::ZERO) };
        let waited = self.table.registry.wait(timeout).map(|keys| ready.extend(keys));
        waker.unpark();
        waited?;
        let mut woken = Woken::default();
        // Before what reported: a framed connection a worker re-armed may
        // be among it (see `Returns::hand_back_framed`).
        woken.turned_away |= self.take_returned(Instant::now(), env);
        for &key in &ready {
            match key {
                // Level-triggered: it reports until the loop empties it.
                WAKE => woken.wake = true,
                LISTENER => woken.listener = true,
                key => woken.turned_away |= self.on_ready(key - FIRST_HELD, Instant::now(), env),
            }
        }
        self.ready = ready;
        let now = Instant::now();
        loop {
            let Table { held, deadlines, .. } = &mut self.table;
            let current = |key: usize, generation| held.get(key).is_some_and(|h: &Held| h.generation == generation);
            let Some(key) = deadlines.pop_expired(now, current) else { break };
            woken.turned_away |= self.on_expired(key, now, env);
        }
        let Table { held, deadlines, .. } = &mut self.table;
        let current = |key: usize, generation| held.get(key).is_some_and(|h: &Held| h.generation == generation);
        deadlines.sweep(held.len(), current);
        Ok(woken)
    }

    /// Takes back what workers and handlers handed back: a framed
    /// connection goes on with its next message or waits in the loop, a
    /// kept one waits for its next request. Returns whether one was turned
    /// away.
    pub(crate) fn take_returned<H>(&mut self, now: Instant, env: &Env<'_, H>) -> bool {
        let mut returned = std::mem::take(&mut self.returned);
        self.table.returns.take(&mut returned);
        let mut turned_away = false;
        for back in returned.drain(..) {
            turned_away |= match back {
                HandedBack::Framed(framed) => framed::frame(&mut self.table, framed, now, env),
                HandedBack::Stream(conn) => kept::kept(&mut self.table, conn, now, env),
                HandedBack::Closed(key) => {
                    self.table.forget_away(key);
                    false
                }
                HandedBack::Unparked { key, conn, spoke } => {
                    self.table.forget_away(key);
                    match spoke {
                        true => kept::spoke(&mut self.table, conn, now, env),
                        false => kept::kept(&mut self.table, conn, now, env),
                    }
                }
                HandedBack::Newcomer { key, conn } => {
                    self.table.forget_away(key);
                    arrival::unparked(&mut self.table, conn, now, env)
                }
            };
        }
        self.returned = returned;
        turned_away
    }

    /// A held connection's fd reported. Returns whether it was turned away.
    // Without the optional stages, some of this has nothing to do.
    #[cfg_attr(not(all(feature = "proxy-protocol", feature = "tls")), allow(unused_variables))]
    fn on_ready<H>(&mut self, key: usize, now: Instant, env: &mut Env<'_, H>) -> bool {
        let Some(held) = self.table.held.get_mut(key) else { return false };
        let step = match &mut held.state {
            State::Away { .. } => return false,
            // A client that closes between requests ends its connection
            // without another request.
            // Unread while it owes; nothing to do until its turn.
            State::Owing(_) => return false,
            State::Kept(conn) => match kept::next_request(conn) {
                Ok(true) => {
                    return match self.table.release(key) {
                        State::Kept(conn) => kept::spoke(&mut self.table, conn, now, env),
                        _ => false,
                    };
                }
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => {
                    return self.table.rearm(key);
                }
                ended => return self.table.close_ended(key, format_args!("ended between requests: {ended:?}")),
            },
            State::Framed(framed) => {
                match framed.read() {
                    Ok(()) => {}
                    Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => {
                        return self.table.rearm(key);
                    }
                    Err(e) => return self.table.close_ended(key, format_args!("failed: {e}")),
                }
                let Some(mut framed) = self.table.send_away(key) else { return false };
                framed.next = Next::Loop;
                return framed::frame(&mut self.table, framed, now, env);
            }
            State::Arriving(_, Arrival::Silent) => None,
            #[cfg(feature = "proxy-protocol")]
            State::Arriving(conn, Arrival::Header(read)) => {
                match env.options.proxy_protocol.as_ref().and_then(|s| read.read(conn, s)) {
                    Some(step) => Some(step),
                    None => return self.table.rearm(key),
                }
            }
            #[cfg(feature = "tls")]
            State::Arriving(conn, Arrival::Handshake(handshake)) => match handshake.step(conn) {
                Some(step) => Some(step),
                None => return self.table.rearm(key),
            },
        };
        let State::Arriving(conn, arrival) = self.table.release(key) else { return false };
        arrival::arrived(&mut self.table, conn, arrival, step, now, env)
    }

    /// A held connection's deadline passed. Returns whether it was turned away.
    #[cfg_attr(not(all(feature = "proxy-protocol", feature = "tls")), allow(unused_variables))]
    fn on_expired<H>(&mut self, key: usize, now: Instant, env: &mut Env<'_, H>) -> bool {
        let Some(held) = self.table.held.get_mut(key) else { return false };
        let generation = held.generation;
        let step = match &mut held.state {
            &mut State::Away { deadline } => {
                match self.table.returns.away_at(key, now) {
                    // Back in its place, closed as one held in the loop is.
                    AwayAt::Expired(parked) => {
                        let (state, why) = match parked {
                            Parked::Framed(framed) if framed.inbox.is_empty() => {
                                (State::Framed(framed), "silent past its deadline between messages")
                            }
                            Parked::Framed(framed) => {
                                (State::Framed(framed), "silent past its deadline inside a message")
                            }
                            Parked::Kept(kept) if kept.charged => {
                                (State::Kept(*kept.conn), "nothing received within the idle timeout")
                            }
                            Parked::Kept(kept) => {
                                (State::Kept(*kept.conn), "silent past its deadline between requests")
                            }
                        };
                        self.table.held[key].state = state;
                        return self.table.close_silent(key, env, why);
                    }
                    AwayAt::Until(at) => self.table.deadlines.set(at, key, generation),
                    AwayAt::Elsewhere => self.table.look_again(key, generation, deadline, now, env),
                }
                return false;
            }
            State::Owing(conn) => {
                if conn.deadline.is_some_and(|deadline| deadline <= now) {
                    return self.table.close_silent(key, env, "past its connection timeout, over its client's rate");
                }
                return match self.table.release(key) {
                    State::Owing(conn) => kept::spoke(&mut self.table, conn, now, env),
                    _ => false,
                };
            }
            // Held back for its client's rate: its turn, unless its
            // `connection_timeout` came first.
            State::Framed(framed) if framed.pending.is_some() => {
                if framed.conn.deadline.is_some_and(|deadline| deadline <= now) {
                    return self.table.close_silent(key, env, "past its connection timeout, over its client's rate");
                }
                let Some(mut framed) = self.table.send_away(key) else { return false };
                framed.next = Next::Loop;
                return framed::frame(&mut self.table, framed, now, env);
            }
            // A byte that came after the wait returned still counts.
            State::Framed(framed) if sys::has_input(framed.conn.socket.as_fd()) => {
                return self.read_after_deadline(key, generation, now, env);
            }
            State::Kept(conn) if sys::has_input(conn.socket.as_fd()) => {
                return self.read_after_deadline(key, generation, now, env);
            }
            State::Framed(framed) if framed.inbox.is_empty() => {
                return self.table.close_silent(key, env, "silent past its deadline between messages");
            }
            State::Framed(_) => return self.table.close_silent(key, env, "silent past its deadline inside a message"),
            State::Kept(_) => return self.table.close_silent(key, env, "silent past its deadline between requests"),
            State::Arriving(conn, Arrival::Silent) if sys::has_input(conn.socket.as_fd()) => None,
            State::Arriving(_, Arrival::Silent) => {
                return self.table.close_silent(key, env, "nothing received within the idle timeout");
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
        let State::Arriving(conn, arrival) = self.table.release(key) else { return false };
        arrival::arrived(&mut self.table, conn, arrival, step, now, env)
    }

    /// A held connection whose deadline passed has a byte that came after
    /// the wait returned: it still counts, read as if it had reported.
    fn read_after_deadline<H>(&mut self, key: usize, generation: u64, now: Instant, env: &mut Env<'_, H>) -> bool {
        let turned_away = self.on_ready(key, now, env);
        self.table.wait_on(key, generation, now, env);
        turned_away
    }

    /// Whether connections or messages wait for room.
    pub(crate) fn has_spoken(&self) -> bool {
        !self.table.spoken.is_empty() || !self.table.messages.is_empty()
    }

    /// The connection ready for a handler that has waited longest.
    pub(crate) fn next_spoken(&mut self) -> Option<Incoming> {
        self.table.spoken.pop_front()
    }

    /// The framed connection whose message has waited longest, with it.
    pub(crate) fn next_message(&mut self) -> Option<(Box<Framed>, Message)> {
        self.table.messages.pop_front()
    }

    /// On close: every connection still held is closed with a log line.
    pub(crate) fn close_all(&mut self) {
        for conn in self.table.spoken.drain(..) {
            log::warn!("server closing: connection from {} closed before it was served", conn.peer);
            state::close(conn);
        }
        for (framed, _) in std::mem::take(&mut self.table.messages) {
            log::warn!("server closing: connection from {} closed before it was served", framed.conn.peer);
            self.table.close_framed(framed);
        }
        self.table.returns.take(&mut self.returned);
        for back in std::mem::take(&mut self.returned) {
            match back {
                HandedBack::Framed(framed) => {
                    log::debug!("server closing: closing connection from {} between requests", framed.conn.peer);
                    // Its registration was kept while a worker had it.
                    self.table.close_framed(framed);
                }
                HandedBack::Stream(conn) => {
                    log::debug!("server closing: closing connection from {} between requests", conn.peer);
                    state::close(conn);
                }
                HandedBack::Unparked { key, conn, .. } => {
                    self.table.forget_away(key);
                    log::debug!("server closing: closing connection from {} between requests", conn.peer);
                    state::close(conn);
                }
                HandedBack::Newcomer { key, conn } => {
                    self.table.forget_away(key);
                    log::debug!("server closing: closing connection from {}, which sent nothing", conn.peer);
                    state::close(conn);
                }
                HandedBack::Closed(key) => self.table.forget_away(key),
            }
        }
        // Those away are with workers, who hand them back to a `Returns`
        // that closes what it holds when it goes.
        for held in self.table.held.drain() {
            let Some(conn) = held.state.conn() else { continue };
            self.table.registry.remove(conn.socket.as_fd());
            log::info!("server closing: closing connection from {}, {}", conn.peer, held.state.waiting_for());
            held.state.close();
        }
        self.table.deadlines.clear();
    }

    /// Forgets the wake-up and server sockets, before they close.
    pub(crate) fn forget(&self, wake: BorrowedFd<'_>, listener: BorrowedFd<'_>) {
        self.table.registry.remove(wake);
        self.table.registry.remove(listener);
    }
}
