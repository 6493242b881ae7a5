//! One turn of the serving loop, as `serve_forever` and `handle_request`
//! take them: wait on the registry, take back what was handed back,
//! dispatch connections that spoke, accept (or receive) what the server
//! socket has, and triage what failed. Also the hand-over's last turns.

use std::io;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use socket2::Socket;

use super::admission::{Admitted, Answer, Closing, Env};
use super::event_loop::Loop;
use crate::deadline::{deadline_after, socket_timeout};
use crate::handler_io::Incoming;
use crate::stats::Counters;
use crate::sys;
use crate::transport::{Kind, Transport};
use crate::waker::Wake;
use crate::{Address, Error, RequestHandler, Result};

/// How long accepting pauses after the process ran out of file descriptors
/// or memory, so the loop does not spin while nothing can be accepted. A
/// request of ours ending ends the pause early: it freed an fd.
const RESOURCE_BACKOFF: Duration = Duration::from_millis(100);

/// How many requests one turn of `serve_forever` takes from a readable
/// socket before it looks at its other fds again.
pub(crate) const READY_BUDGET: usize = 64;

/// What one attempt to take a request from the socket found.
pub(super) enum Taken {
    /// Requests handled: dispatched, or turned away (refused by
    /// `verify_request`, a truncated datagram, an error about one client).
    /// Either way each ends one `handle_request`, as in Python.
    Requests(usize),
    /// A connection accepted and held in the loop (`Admitted::Held`): not a
    /// request yet.
    Held,
    /// Nothing left to take (or accepting paused).
    Empty,
    /// Requests handled, and the socket was seen empty while taking them
    /// (a short batch): no need to ask it again before polling.
    Drained(usize),
}

impl<T: Transport, H: RequestHandler> Loop<T, H> {
    /// One turn of the loop: wait until something is ready (or `timeout`
    /// passes), then take it. Returns whether a request was handled
    /// (dispatched or turned away).
    ///
    /// The registry holds the wake-up socket, the server socket (armed while
    /// the server takes requests), and every held connection that has not
    /// yet spoken, room or not. Connections that spoke are dispatched, oldest
    /// first, before new ones are accepted. When accepting is paused or the
    /// dispatcher is full, requests wait in the kernel, where they are safe,
    /// and a finishing request wakes the loop.
    pub(crate) fn turn(&mut self, timeout: Option<Duration>, budget: usize) -> Result<bool> {
        self.dispatcher.turn(&self.ctx);
        let returned_away = {
            let Loop { admission, ctx, hooks, options, .. } = self;
            admission.take_returned(Instant::now(), &Env { ctx, hooks, options })
        };
        let mut left = budget;
        let queued = self.dispatch_spoken(&mut left);
        if left == 0 {
            return Ok(true);
        }
        let now = Instant::now();
        if self.paused_until.is_some_and(|until| now >= until) {
            self.paused_until = None;
        }
        let below_max = self.below_max_connections();
        if !below_max {
            // Held connections may be what fills the limit; one of the
            // running requests ending must still wake the loop.
            self.dispatcher.wake_on_next_release();
        }
        let closing = self.admission.is_closing();
        let full = self.dispatcher.is_full();
        let accepting = !closing && !full && below_max && self.paused_until.is_none();
        let pause = self.paused_until.map(|until| until - now);
        // Having served some, return to the caller (and `service_actions`)
        // soon; closing, with nothing left (the last connection was taken
        // back and closed above), return at once: nothing would wake the wait.
        let done = closing && self.admission.len() == 0;
        // Room found after `dispatch_spoken` stopped for the lack of it: the
        // slot that freed it may have spent its wake-up already (on a look
        // of the loop, not a sleep), so work still waiting goes now.
        let room_for_spoken = !full && self.admission.has_spoken();
        let timeout = if queued || done || room_for_spoken { Some(Duration::ZERO) } else { timeout };
        let limit = [timeout, pause, self.admission.next_expiry(now), self.dispatcher.recheck_after()]
            .into_iter()
            .flatten()
            .min();

        let Loop { admission, socket, shutdown, ctx, hooks, options, .. } = self;
        let woken = admission
            .wait(socket.as_fd(), shutdown.waker(), accepting, limit, &mut Env { ctx, hooks, options })
            .map_err(|e| self.server_error("wait", e))?;
        let why = self.shutdown.waker().take(woken.wake);
        if why.has(Wake::SlotFreed) || why.has(Wake::ChildExited) {
            // A connection of ours ended: its fd is free, so accepting may work again.
            self.paused_until = None;
        }
        let listener_ready = accepting && woken.listener;
        let turned_away = woken.turned_away;
        let mut took = queued | turned_away | returned_away;
        took |= self.dispatch_spoken(&mut left);
        if listener_ready && left > 0 {
            took |= self.take_ready(left)?;
        }
        Ok(took)
    }

    /// Open connections are below `max_connections`: those the loop holds
    /// or keeps a place for (framed ones with a worker), those handlers
    /// hold, and those handed back and not yet taken. Each is counted in
    /// one place at a time, and in the next before it leaves the last.
    fn below_max_connections(&self) -> bool {
        match self.options.max_connections {
            Some(max) if T::KIND == Kind::Stream => {
                let handed_back = self.admission.returns().streams();
                self.admission.len() + handed_back + self.dispatcher.open_connections() < max
            }
            _ => true,
        }
    }

    /// Dispatches held connections that have spoken, oldest first, while
    /// the dispatcher has room and `left` allows. Held connections already
    /// count as open, so `max_connections` does not hold them back.
    ///
    /// Stopping for room is where a wake-up can be lost: a slot freed after
    /// the look but before the loop waits would wake nobody, and the
    /// requests left here would wait for the next `poll_interval` (for ever
    /// without one). `is_full` asks for the wake-up before it looks again.
    fn dispatch_spoken(&mut self, left: &mut usize) -> bool {
        let mut took = false;
        while *left > 0 && self.admission.has_spoken() && !self.dispatcher.is_full() {
            if let Some(framing) = &self.options.framing
                && let Some((framed, message)) = self.admission.next_message()
            {
                let answer = Answer::new(framed, message, framing.clone(), Arc::clone(self.admission.returns()));
                self.dispatcher.work(&self.ctx, answer, &mut self.scratch);
            } else if let Some(conn) = self.admission.next_spoken() {
                self.dispatcher.stream(&self.ctx, conn);
            } else {
                break;
            }
            *left -= 1;
            took = true;
        }
        took
    }

    /// Takes up to `budget` requests from a socket poll found readable,
    /// until it has no more: one poll serves a burst, not one request.
    fn take_ready(&mut self, budget: usize) -> Result<bool> {
        let mut took = false;
        let mut left = budget;
        while left > 0 {
            let taken = match T::KIND {
                // No transport's kind is `Message` (a request's only).
                Kind::Stream | Kind::Message => self.accept_and_dispatch()?,
                Kind::Datagram => self.receive_and_dispatch(left)?,
            };
            match taken {
                Taken::Requests(n) => {
                    took = true;
                    left = left.saturating_sub(n);
                }
                Taken::Drained(n) => {
                    took |= n > 0;
                    break;
                }
                Taken::Held => left -= 1,
                Taken::Empty => break,
            }
            if self.paused_until.is_some()
                || self.shutdown.is_shutdown_requested()
                || self.dispatcher.is_full()
                || !self.below_max_connections()
            {
                break;
            }
        }
        Ok(took)
    }

    fn accept_and_dispatch(&mut self) -> Result<Taken> {
        let (socket, from) = match self.socket.accept() {
            Ok(accepted) => accepted,
            Err(e) => return self.recover("accept", e),
        };
        let peer = Address::from_sock_addr(&from);
        Counters::add(&self.ctx.counters().accepted, 1);
        if let Err(source) = self.prepare_connection(&socket) {
            (self.ctx.on_error)(&Error::Request { peer, source });
            return Ok(Taken::Requests(1));
        }
        let now = Instant::now();
        let deadline = self.options.connection_timeout.map(|t| deadline_after(now, t));
        let conn = Incoming::new(socket, peer, deadline);
        let Loop { admission, ctx, hooks, options, .. } = self;
        match admission.accepted(conn, now, &mut Env { ctx, hooks, options }) {
            Admitted::Held => Ok(Taken::Held),
            Admitted::Refused => Ok(Taken::Requests(1)),
            Admitted::Ready(conn) => {
                self.dispatcher.stream(&self.ctx, conn);
                Ok(Taken::Requests(1))
            }
        }
    }

    fn prepare_connection(&self, conn: &Socket) -> io::Result<()> {
        sys::accepted_blocking(conn)?;
        if let Some(timeout) = self.options.read_timeout {
            conn.set_read_timeout(Some(socket_timeout(timeout)))?;
        }
        if let Some(timeout) = self.options.write_timeout {
            conn.set_write_timeout(Some(socket_timeout(timeout)))?;
        }
        T::prepare_accepted(conn, &self.options)
    }

    /// Decides what a failed accept or receive means. Only errors that say
    /// the server's own socket is broken end the loop; a failure caused by
    /// one client is skipped, and running out of fds or memory pauses
    /// accepting briefly instead of spinning.
    pub(super) fn recover(&mut self, action: &'static str, e: io::Error) -> Result<Taken> {
        match e.raw_os_error() {
            Some(libc::EBADF | libc::ENOTSOCK | libc::EINVAL | libc::EFAULT | libc::EOPNOTSUPP) => {
                Err(self.server_error(action, e))
            }
            Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => {
                log::error!("{}; pausing {RESOURCE_BACKOFF:?}", self.server_error(action, e));
                Counters::add(&self.ctx.counters().resource_pauses, 1);
                self.paused_until = Some(Instant::now() + RESOURCE_BACKOFF);
                self.dispatcher.wake_on_next_release();
                Ok(Taken::Empty)
            }
            _ if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted => Ok(Taken::Empty),
            _ => {
                // About one client (ECONNABORTED, say): like Python's
                // `handle_request`, that ends the request.
                log::warn!("{}", self.server_error(action, e));
                Ok(Taken::Requests(1))
            }
        }
    }

    /// On close, before anything is closed: a stop and a hand-over both
    /// answer what clients already sent. Connections between requests are
    /// closed (nothing of theirs is lost; a client's next connection reaches
    /// the successor, or is refused); requests already in (queued,
    /// pipelined behind one a worker answered, unread in the socket) are
    /// answered, and a message still arriving is waited for (a stop does so
    /// only within a `drain_timeout`). A hand-over also carries connections
    /// still on their way (PROXY header, TLS handshake, first byte), which
    /// the successor cannot take. Nothing new is accepted. Bounded by each
    /// stage's deadline and by `drain_timeout`, whose deadline the
    /// dispatcher's drain then shares, and cut short by an abort.
    pub(super) fn finish_accepted(&mut self) {
        let deadline = self.options.drain_timeout.map(|t| deadline_after(Instant::now(), t));
        self.dispatcher.drain_by(deadline);
        if T::KIND != Kind::Stream {
            return;
        }
        self.admission.closing(if self.shutdown.is_handed_over() {
            Closing::HandOver
        } else {
            Closing::Stop { wait_inside: deadline.is_some() }
        });
        while self.admission.len() > 0 {
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            let over = left.is_some_and(|left| left.is_zero()) || self.shutdown.is_aborted();
            if over || self.turn(left, usize::MAX).is_err() {
                break;
            }
        }
    }
}
