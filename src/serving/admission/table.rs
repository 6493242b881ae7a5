//! The table of connections the loop holds: a slab entry for each, its one
//! registration in the [`Registry`] under its key, its one deadline in
//! [`Deadlines`], and the queues of connections and messages ready for a
//! handler and waiting for room. The stages (`arrival`, `framed`, `kept`)
//! move connections through it; none of them knows the others' places.

use std::collections::VecDeque;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use slab::Slab;

use super::closing::Closing;
use super::lot::Parks;
use super::returns::Returns;
use super::state::{Admitted, Env, Framed, Held, Next, State, close};
use crate::Error;
use crate::deadline::deadline_after;
use crate::framing::Message;
use crate::handler_io::Incoming;
use crate::serving::deadlines::Deadlines;
use crate::serving::registry::{FIRST_HELD, Interest, Registry};
use crate::stats::Counters;

/// How often the loop looks again for a framed connection a worker still
/// has past its `connection_timeout`: the worker hands it back without
/// waking the loop, so the loop comes by to close it.
const AWAY_RECHECK: Duration = Duration::from_secs(1);

/// The connections the loop holds, and where each is registered and due.
pub(super) struct Table {
    pub registry: Registry,
    pub held: Slab<Held>,
    pub deadlines: Deadlines,
    generations: u64,
    /// Ready for a handler, oldest first, waiting for room.
    pub spoken: VecDeque<Incoming>,
    /// Framed connections with a whole message, waiting for room.
    pub messages: VecDeque<(Box<Framed>, Message)>,
    /// The server is closing: connections between requests are closed
    /// instead of held.
    pub closing: Option<Closing>,
    /// The way back from workers and handlers, and, on a worker pool that
    /// parks, the lot where framed connections wait for bytes instead.
    pub returns: Arc<Returns>,
}

impl Table {
    pub(super) fn new(registry: Registry, returns: Arc<Returns>) -> Table {
        Table {
            registry,
            held: Slab::new(),
            deadlines: Deadlines::default(),
            generations: 0,
            spoken: VecDeque::new(),
            messages: VecDeque::new(),
            closing: None,
            returns,
        }
    }

    /// Registers a connection in `state` until `expires` (`None`: for as
    /// long as it takes). A connection the registry cannot take (out of
    /// kernel memory) is closed and reported.
    pub(super) fn hold<H>(&mut self, mut state: State, expires: Option<Instant>, env: &Env<'_, H>) -> Admitted {
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
            framed.registered = true;
        }
        self.generations += 1;
        entry.insert(Held { generation: self.generations, state });
        if let Some(expires) = expires {
            self.deadlines.set(expires, key, self.generations);
        }
        Admitted::Held
    }

    /// Puts a framed connection back in its own entry at `key`, waiting
    /// until `expires`, armed to report its next bytes (its worker may have
    /// armed it already; one never registered is registered now).
    pub(super) fn hold_again(&mut self, key: usize, mut framed: Box<Framed>, expires: Option<Instant>) {
        let armed = framed.next == Next::Armed;
        if !framed.registered {
            let interest = if framed.pending.is_some() { Interest::Nothing } else { Interest::Read };
            match self.registry.add(framed.conn.socket.as_fd(), key + FIRST_HELD, interest) {
                Ok(()) => framed.registered = true,
                // Its deadline still ends it, as for a failed re-arm.
                Err(e) => log::warn!("connection from {}: cannot wait for it: {e}", framed.conn.peer),
            }
        }
        let rearm = framed.registered && !armed;
        self.generations += 1;
        self.held[key] = Held { generation: self.generations, state: State::Framed(framed) };
        if let Some(expires) = expires {
            self.deadlines.set(expires, key, self.generations);
        }
        if rearm {
            self.rearm(key);
        }
    }

    /// Takes a connection out of the slab, and out of the registry if it
    /// is here (one away keeps its registration for its return).
    pub(super) fn release(&mut self, key: usize) -> State {
        let held = self.held.remove(key);
        if let Some(conn) = held.state.conn() {
            self.registry.remove(conn.socket.as_fd());
        }
        held.state
    }

    /// Re-arms a held connection that wants more; false (not turned away).
    pub(super) fn rearm(&mut self, key: usize) -> bool {
        let Some(held) = self.held.get(key) else { return false };
        let Some(conn) = held.state.conn() else { return false };
        if let Err(e) = self.registry.rearm(conn.socket.as_fd(), key + FIRST_HELD, held.state.interest()) {
            // Its deadline still ends it.
            log::warn!("connection from {}: cannot wait for it: {e}", conn.peer);
        }
        false
    }

    /// After a connection whose deadline passed was read: one still waiting
    /// where it was (over TLS, the bytes were part of a record, and gave no
    /// plaintext) gets its deadline again, from now (its client did send),
    /// or it would have none: the one that passed is gone from the heap.
    pub(super) fn wait_on<H>(&mut self, key: usize, generation: u64, now: Instant, env: &Env<'_, H>) {
        let Some(held) = self.held.get(key) else { return };
        let Some(conn) = held.state.conn().filter(|_| held.generation == generation) else { return };
        let idle = env.options.idle_timeout.map(|idle| deadline_after(now, idle));
        if let Some(expires) = [idle, conn.deadline].into_iter().flatten().min() {
            self.deadlines.set(expires, key, generation);
        }
    }

    /// Closes a held connection whose client went quiet past its deadline,
    /// counted in `idle_closed`; false (not turned away: no request came).
    pub(super) fn close_silent<H>(&mut self, key: usize, env: &Env<'_, H>, why: &str) -> bool {
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
    pub(super) fn close_ended(&mut self, key: usize, how: std::fmt::Arguments<'_>) -> bool {
        let state = self.release(key);
        if let Some(conn) = state.conn() {
            log::debug!("connection from {} {how}", conn.peer);
        }
        state.close();
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
    pub(super) fn send_away(&mut self, key: usize) -> Option<Box<Framed>> {
        let held = self.held.get_mut(key)?;
        let State::Framed(framed) = &held.state else { return None };
        let away = State::Away { deadline: framed.conn.deadline };
        let State::Framed(framed) = std::mem::replace(&mut held.state, away) else { return None };
        Some(framed)
    }

    /// Gives a framed connection that has never waited in the loop (its
    /// first message came with it) the slab entry it keeps while away: it
    /// counts as open from now on. Its registration comes when it first
    /// waits for bytes (from its worker, or from `hold_again`).
    pub(super) fn keep_place(&mut self, framed: &mut Framed) {
        let entry = self.held.vacant_entry();
        let key = entry.key();
        self.generations += 1;
        entry.insert(Held { generation: self.generations, state: State::Away { deadline: framed.conn.deadline } });
        framed.key = Some(key);
    }

    /// Whether a connection waiting for bytes would park with the workers.
    pub(super) fn parks(&self) -> bool {
        self.closing.is_none() && self.returns.parks()
    }

    /// Whether a connection waiting for its first request would park with
    /// the workers (their handler hands connections back).
    pub(super) fn parks_newcomers(&self) -> bool {
        self.parks() && self.returns.parks_newcomers()
    }

    /// Parks a connection that waits for bytes (a framed one between or
    /// inside messages, a kept one between requests) with a worker pool's
    /// idle workers, whose wait its bytes end (the lot in `returns`): the
    /// loop keeps its entry (`State::Away`), and comes by only at its
    /// deadline. Gives it back where nothing parks (no such pool, or the
    /// server closes): it waits in the loop then.
    pub(super) fn park<P: Parks, H>(&mut self, mut parked: P, now: Instant, env: &Env<'_, H>) -> Option<P> {
        if !self.parks() {
            return Some(parked);
        }
        let deadline = parked.conn().deadline;
        // A new stage: a deadline set for its last one is stale.
        self.generations += 1;
        let generation = self.generations;
        let away = Held { generation, state: State::Away { deadline } };
        let (key, placed) = match parked.key() {
            Some(key) => {
                self.held[key] = away;
                (key, false)
            }
            None => {
                let key = self.held.insert(away);
                parked.set_key(Some(key));
                (key, true)
            }
        };
        match self.returns.park(key, parked) {
            None => {
                self.look_again(key, generation, deadline, now, env);
                None
            }
            Some(mut back) => {
                if placed {
                    self.held.remove(key);
                    back.set_key(None);
                }
                Some(back)
            }
        }
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

    /// Frees the place of an away connection its worker closed (its fd
    /// is closed already, which took it out of the registry).
    pub(super) fn forget_away(&mut self, key: usize) {
        if matches!(self.held.get(key), Some(Held { state: State::Away { .. }, .. })) {
            self.held.remove(key);
        }
    }

    /// Closes a framed connection, and frees its slab entry and
    /// registration if it has them.
    pub(super) fn close_framed(&mut self, framed: Box<Framed>) {
        if let Some(key) = framed.key {
            if framed.registered {
                self.registry.remove(framed.conn.socket.as_fd());
            }
            self.held.remove(key);
        }
        close(framed.conn);
    }
}
