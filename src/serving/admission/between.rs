//! Connections between requests: framed ones between messages (their next
//! message cut from what the loop read, or waiting for more), and stream
//! ones a handler handed back. Workers give both back through
//! [`Returns`]; a framed one waiting for bytes keeps its slab key and its
//! registration while a worker has it, so its return costs the loop no
//! wake-up and no re-registration.

use std::io;
use std::os::fd::AsFd;
use std::time::Instant;

use super::{AWAY_RECHECK, Admission, Admitted, Entry, FIRST_HELD, Held, Interest, Stage, Waiting};
use crate::Error;
use crate::adapter::{self, Context, Incoming};
use crate::options::{Options, deadline_after};
use crate::serving::framing::{After, Framed, Refused};
use crate::serving::returns::Back;
use crate::stats::Counters;

impl Admission {
    /// A framed connection between messages: its next whole message is
    /// queued for a handler, or it waits in the loop for more bytes (under
    /// `idle_timeout` and `connection_timeout`), or it ends. Returns whether
    /// it was turned away.
    pub(super) fn frame<H>(&mut self, mut framed: Framed, now: Instant, ctx: &Context<H>, options: &Options) -> bool {
        let Some(framing) = &options.framing else { return false };
        if framed.after == After::Close {
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
                if self.closing.is_some_and(|closing| {
                    let waiting = if framed.inbox.is_empty() { Waiting::NextRequest } else { Waiting::RestOfMessage };
                    closing.closes(waiting, framed.conn.socket.as_fd())
                }) =>
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
                let idle = options.idle_timeout.map(|idle| deadline_after(now, idle));
                let expires = [idle, framed.conn.deadline].into_iter().flatten().min();
                let stage = Stage::Framed(framed.inbox, framed.state, framed.credentials);
                let Some(key) = framed.key else {
                    return matches!(self.hold(framed.conn, stage, expires, ctx), Admitted::Refused);
                };
                self.generations += 1;
                self.held[key] = Entry::Here(Held { conn: framed.conn, stage, generation: self.generations });
                if let Some(expires) = expires {
                    self.deadlines.set(expires, key, self.generations);
                }
                if framed.after != After::Armed {
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
    pub(super) fn send_away(&mut self, key: usize) -> Option<Held> {
        let held = self.held.get_mut(key)?.here()?;
        let away = Entry::Away { generation: held.generation, deadline: held.conn.deadline };
        let Entry::Here(held) = std::mem::replace(&mut self.held[key], away) else { return None };
        Some(held)
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
        entry.insert(Entry::Away { generation: self.generations, deadline: framed.conn.deadline });
        framed.key = Some(key);
        Ok(())
    }

    /// Sets when the loop next looks for the away connection at `key`.
    pub(super) fn look_again(
        &mut self,
        key: usize,
        generation: u64,
        deadline: Option<Instant>,
        now: Instant,
        options: &Options,
    ) {
        let idle = options.idle_timeout.map(|idle| deadline_after(now, idle));
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
        #[cfg(feature = "tls")]
        if let Some(tls) = &framed.conn.tls {
            tls.close_now(&framed.conn.socket);
        }
        adapter::close_stream(framed.conn.socket);
    }

    /// Takes back the framed connections workers answered: each goes on
    /// with its next message, or waits in the loop. Returns whether one was
    /// turned away.
    pub(crate) fn take_returned<H>(&mut self, now: Instant, ctx: &Context<H>, options: &Options) -> bool {
        let mut returned = std::mem::take(&mut self.returned);
        self.returns.take(&mut returned);
        let mut turned_away = false;
        for back in returned.drain(..) {
            turned_away |= match back {
                Back::Framed(framed) => self.frame(framed, now, ctx, options),
                Back::Stream(conn) => self.kept(conn, now, ctx, options),
            };
        }
        self.returned = returned;
        turned_away
    }

    /// A stream connection its handler handed back: dispatched again at
    /// once when bytes of its next request are already in, else held until
    /// it speaks (under `idle_timeout` and `connection_timeout`), or closed
    /// if the server is closing. Returns whether it was turned away.
    fn kept<H>(&mut self, conn: Incoming, now: Instant, ctx: &Context<H>, options: &Options) -> bool {
        #[cfg(feature = "tls")]
        let decrypted = conn.tls.as_ref().is_some_and(|tls| tls.has_plaintext());
        #[cfg(not(feature = "tls"))]
        let decrypted = false;
        if !conn.buffered.is_empty() || decrypted {
            self.spoken.push_back(conn);
            return false;
        }
        if self.closing.is_some_and(|closing| closing.closes(Waiting::NextRequest, conn.socket.as_fd())) {
            log::debug!("server closing: closing kept connection from {} between requests", conn.peer);
            adapter::close_stream(conn.socket);
            return false;
        }
        let idle = options.idle_timeout.map(|idle| deadline_after(now, idle));
        let expires = [idle, conn.deadline].into_iter().flatten().min();
        matches!(self.hold(conn, Stage::Kept, expires, ctx), Admitted::Refused)
    }
}
