//! The way back to the serving loop: connections handed back, framed ones
//! between messages and stream ones whose handler called
//! `Request::hand_back`, wait here for the loop to take them. On a worker
//! pool that parks, they wait with the workers instead (the [`Lot`]), and
//! the loop meets them only at their deadlines and at a close.

use std::io;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use socket2::Socket;

use super::lot::{AwayAt, Kept, Lot, Park, Parked, Parks};
use super::state::{Framed, Next, close};
use crate::ancillary::Ancillary;
use crate::dispatch::{Resume, Slot};
use crate::handler_io::Incoming;
use crate::runner::{self, Context, HandBack, Scratch};
use crate::serving::registry::Rearmer;
use crate::waker::{Wake, Waker};
use crate::{Address, RequestHandler};

/// A connection handed back to the loop.
pub(crate) enum HandedBack {
    /// A framed connection, its message answered.
    Framed(Box<Framed>),
    /// A stream connection its handler handed back (`Request::hand_back`).
    Stream(Incoming),
    /// A parked connection its worker closed (its client ended it, or it
    /// failed): its place in the loop, at this key, is free.
    Closed(usize),
    /// A kept connection that was parked at `key`, back in the loop's
    /// hands: its place there is free, and it goes on as one handed back
    /// (`spoke`: its next request is in, and its client is over its rate,
    /// or its worker ran it the rounds it may in a row).
    Unparked { key: usize, conn: Incoming, spoke: bool },
    /// A newcomer that was parked at `key` to wait for its first request,
    /// back in the loop's hands (the server closes, or it could not park):
    /// its place there is free, and it waits there, as one that has sent
    /// nothing yet.
    Newcomer { key: usize, conn: Incoming },
}

/// Connections that workers are done with, for the loop to take back:
/// framed ones between messages, and stream ones handed back.
///
/// The common case costs the loop nothing: a connection that waits for its
/// client's next bytes is re-armed in the registry by the worker itself and
/// left here without waking the loop, which takes it when the registry
/// reports it, or on any earlier turn. The order that makes this safe is
/// written down in [`hand_back_framed`](Self::hand_back_framed).
pub(crate) struct Returns {
    conns: Mutex<Vec<HandedBack>>,
    /// Stream connections in `conns`: open, and no longer a handler's, so
    /// `max_connections` counts them here until the loop takes them.
    /// Raised before the handler's slot is freed, so never counted nowhere.
    streams: AtomicUsize,
    /// The server is closing: the loop must look at every connection that
    /// comes back (to close it, or answer what it brought), so each return
    /// wakes it.
    closing: AtomicBool,
    waker: Waker,
    rearmer: Rearmer,
    /// Connections parked with a worker pool's idle workers.
    lot: Option<Lot>,
}

/// A worker reads a connection that reported while it had it (or that
/// brought its next request with the last) at most this many times in a
/// row; then it parks it re-armed, behind the others that reported
/// meanwhile, or hands it to the loop.
const ROUNDS_KEPT: usize = 4;

impl Returns {
    pub(crate) fn new(waker: Waker, rearmer: Rearmer, lot: Option<Lot>) -> Returns {
        Returns {
            conns: Mutex::new(Vec::new()),
            streams: AtomicUsize::new(0),
            closing: AtomicBool::new(false),
            waker,
            rearmer,
            lot,
        }
    }

    /// Whether connections waiting for bytes park with the workers.
    pub(crate) fn parks(&self) -> bool {
        self.lot.is_some()
    }

    /// Whether a connection waiting for its first request parks with the
    /// workers, as a kept one does (see `arrival.rs`).
    pub(crate) fn parks_newcomers(&self) -> bool {
        self.lot.as_ref().is_some_and(Lot::in_use)
    }

    /// Parks `parked`, the loop's connection at `key`, with the workers;
    /// gives it back if it cannot be (see [`Lot::park`]).
    pub(super) fn park<P: Parks>(&self, key: usize, parked: P) -> Option<P> {
        let Some(lot) = &self.lot else { return Some(parked) };
        match lot.park(key, parked, false) {
            Park::Parked => None,
            // Not asked to keep it, the lot never does.
            Park::Refused(parked) | Park::Keep(parked) => Some(parked),
        }
    }

    /// The away connection at `key`, if it is parked, as its deadline finds
    /// it. One with input is left to the worker its fd wakes.
    pub(crate) fn away_at(&self, key: usize, now: Instant) -> AwayAt {
        match &self.lot {
            Some(lot) => lot.away_at(key, now),
            None => AwayAt::Elsewhere,
        }
    }

    /// A worker is done with `framed`'s message; `wake`: the loop may be
    /// waiting (a sequential server's loop is the one calling).
    ///
    /// The race: once re-armed (or registered, the first time it waits),
    /// the fd may report to the loop at once, before the connection is back
    /// in its hands. So the re-arm happens under the lock, before the push, and the loop takes returned
    /// connections (under the same lock) after each wait and before it
    /// looks at what reported: a report it sees was armed while the lock
    /// was held, so the connection is in the list by the time the loop
    /// gets the lock. The fd is open for the re-arm: the worker still owns
    /// the connection.
    pub(crate) fn hand_back_framed(&self, mut framed: Box<Framed>, wake: bool) {
        // On a pool that parks, its worker closes it: no wake-up of the loop.
        if framed.next == Next::Close
            && self.lot.is_some()
            && let Some(key) = framed.key
        {
            return self.close_away(key, framed);
        }
        // Parked with the workers, it costs the loop nothing at all.
        if framed.next == Next::Armed
            && let (Some(lot), Some(key)) = (&self.lot, framed.key)
        {
            match lot.park(key, framed, false) {
                Park::Parked => return,
                Park::Refused(back) | Park::Keep(back) => {
                    framed = back;
                    framed.next = Next::Loop;
                }
            }
        }
        let mut conns = self.conns.lock().unwrap_or_else(PoisonError::into_inner);
        if framed.next == Next::Armed {
            let fd = framed.conn.socket.as_fd();
            let armed = match framed.key {
                Some(key) if framed.registered => self.rearmer.read(fd, key).is_ok(),
                Some(key) => self.rearmer.register(fd, key).is_ok(),
                None => false,
            };
            framed.registered |= armed;
            if armed {
                conns.push(HandedBack::Framed(framed));
                drop(conns);
                if wake && self.closing.load(Ordering::SeqCst) {
                    self.waker.wake(Wake::Returned);
                }
                return;
            }
            framed.next = Next::Loop;
        }
        conns.push(HandedBack::Framed(framed));
        drop(conns);
        if wake {
            self.waker.wake(Wake::Returned);
        }
    }

    /// Closes a framed connection its worker has (parked, or queued), here rather
    /// than in the loop: a client that ends its connection between messages
    /// (one connection per request, say) then costs the loop no wake-up.
    fn close_away(&self, key: usize, framed: Box<Framed>) {
        if framed.registered {
            self.rearmer.forget(framed.conn.socket.as_fd());
        }
        close(framed.conn);
        self.freed(key);
    }

    /// The connection parked at `key` was closed by a worker: the loop
    /// frees its place when it next takes what came back, which it does
    /// first thing each turn, before it counts open connections.
    fn freed(&self, key: usize) {
        self.push(HandedBack::Closed(key), false);
    }

    /// Gives `back` to the loop, waking it if `wake`, or if the server is
    /// closing (the loop must then look at everything that comes back).
    fn push(&self, back: HandedBack, wake: bool) {
        let mut conns = self.conns.lock().unwrap_or_else(PoisonError::into_inner);
        conns.push(back);
        drop(conns);
        if wake || self.closing.load(Ordering::SeqCst) {
            self.waker.wake(Wake::Returned);
        }
    }

    /// Every connection handed back since the last call, in `into` (empty).
    pub(crate) fn take(&self, into: &mut Vec<HandedBack>) {
        let mut conns = self.conns.lock().unwrap_or_else(PoisonError::into_inner);
        std::mem::swap(&mut *conns, into);
        self.streams.store(0, Ordering::SeqCst);
    }

    /// From now on every return wakes the loop (see `closing`), and
    /// nothing is parked: what was parked comes back to the loop, which
    /// closes it or answers what its client already sent.
    pub(crate) fn closing(&self) {
        self.closing.store(true, Ordering::SeqCst);
        let Some(lot) = &self.lot else { return };
        let parked = lot.close();
        if parked.is_empty() {
            return;
        }
        let mut conns = self.conns.lock().unwrap_or_else(PoisonError::into_inner);
        conns.extend(parked.into_iter().map(|(key, parked)| unparked(key, parked)));
        drop(conns);
        self.waker.wake(Wake::Returned);
    }

    /// Stream connections handed back and not yet taken.
    pub(crate) fn streams(&self) -> usize {
        self.streams.load(Ordering::SeqCst)
    }
}

impl HandBack for Returns {
    /// A stream handler handed its connection back; `wake` as for
    /// [`hand_back_framed`](Self::hand_back_framed). The loop registers it
    /// anew.
    fn hand_back(&self, conn: Incoming, wake: bool) {
        let mut conns = self.conns.lock().unwrap_or_else(PoisonError::into_inner);
        self.streams.fetch_add(1, Ordering::SeqCst);
        conns.push(HandedBack::Stream(conn));
        drop(conns);
        if wake {
            self.waker.wake(Wake::Returned);
        }
    }
}

/// A connection the lot gave back, as the loop takes it.
fn unparked(key: usize, parked: Parked) -> HandedBack {
    match parked {
        Parked::Framed(mut framed) => {
            framed.next = Next::Loop;
            HandedBack::Framed(framed)
        }
        Parked::Kept(kept) => back_to_loop(key, kept),
    }
}

/// A kept connection that cannot park, as the loop takes it.
fn back_to_loop(key: usize, kept: Kept) -> HandedBack {
    match kept.charged {
        true => HandedBack::Newcomer { key, conn: *kept.conn },
        false => HandedBack::Unparked { key, conn: *kept.conn, spoke: false },
    }
}

impl Drop for Returns {
    /// Connections handed back after the loop's last look (a worker was
    /// still answering them when the server closed) are closed as the loop
    /// closes those it holds: over TLS with `close_notify`, so the client
    /// reads the server's end and not a cut. Framed ones are still
    /// registered: they leave the registry before they close, as every
    /// registered fd does.
    fn drop(&mut self) {
        let parked = self.lot.as_ref().map(Lot::close).unwrap_or_default();
        let conns = self.conns.get_mut().unwrap_or_else(PoisonError::into_inner);
        conns.extend(parked.into_iter().map(|(key, parked)| unparked(key, parked)));
        for back in conns.drain(..) {
            let conn = match back {
                HandedBack::Framed(framed) => {
                    if framed.registered {
                        self.rearmer.forget(framed.conn.socket.as_fd());
                    }
                    framed.conn
                }
                HandedBack::Stream(conn) | HandedBack::Unparked { conn, .. } | HandedBack::Newcomer { conn, .. } => {
                    conn
                }
                HandedBack::Closed(_) => continue,
            };
            log::debug!("server closed: closing connection from {} between requests", conn.peer);
            close(conn);
        }
    }
}

impl<H: RequestHandler> Resume<H> for Returns {
    /// A parked connection's fd reported to a worker: that worker reads it
    /// and answers what came, as the loop and a queued job would have, then
    /// parks it again or hands it to the loop.
    fn resume(
        &self,
        key: usize,
        arm: u32,
        ended: bool,
        ctx: &Context<H>,
        scratch: &mut Scratch,
        slot: &mut dyn FnMut(&Socket, &Address) -> Slot,
    ) {
        let Some(lot) = &self.lot else { return };
        match lot.take(key, arm, ended) {
            Some(Parked::Framed(framed)) => self.resume_framed(lot, key, framed, ended, ctx, scratch, slot),
            Some(Parked::Kept(kept)) => self.resume_kept(lot, key, kept, ended, ctx, slot),
            None => {}
        }
    }
}

impl Returns {
    /// A framed connection's messages: each whole one answered, the
    /// replies sent together, as a queued message is.
    #[allow(clippy::too_many_arguments, reason = "the resume's own, and the lot and connection it found")]
    fn resume_framed<H: RequestHandler>(
        &self,
        lot: &Lot,
        key: usize,
        mut framed: Box<Framed>,
        ended: bool,
        ctx: &Context<H>,
        scratch: &mut Scratch,
        slot: &mut dyn FnMut(&Socket, &Address) -> Slot,
    ) {
        let Some(framing) = &lot.framing else { return self.hand_back_framed(framed, true) };
        for round in 1.. {
            let mut slot = slot(&framed.conn.socket, &framed.conn.peer);
            framed.next = super::framed::resume(ctx, framing, &mut framed, ended && round == 1, scratch);
            if slot.untrack() {
                framed.next = Next::Close;
            }
            // Fds the handler did not take are closed here.
            scratch.ancillary = Ancillary::default();
            match framed.next {
                Next::Close => return self.close_away(key, framed),
                Next::Armed if round < ROUNDS_KEPT => match lot.park(key, framed, true) {
                    Park::Parked => return,
                    Park::Keep(again) => framed = again,
                    Park::Refused(back) => return self.hand_back_framed(back, true),
                },
                _ => return self.hand_back_framed(framed, true),
            }
        }
    }

    /// A kept connection's next request: its handler runs here, as for a
    /// queued stream request, and hands it back again, or ends it. `ended`:
    /// the report said its client ended its side, or it failed. Without
    /// that, a report of a fd that reports once per park (polled by its
    /// latest arm) says bytes are in, and over a plain stream they are a
    /// request: no look first. An edge-triggered one's report may be of
    /// bytes its last handler read before it parked: it is looked at (read,
    /// see `kept::next_request`) first.
    fn resume_kept<H: RequestHandler>(
        &self,
        lot: &Lot,
        key: usize,
        mut kept: Kept,
        ended: bool,
        ctx: &Context<H>,
        slot: &mut dyn FnMut(&Socket, &Address) -> Slot,
    ) {
        kept.end_reported |= ended;
        // A round: a look (a read), and the requests the handler runs on
        // what came (see `runner::serve_kept`).
        for rounds in 1.. {
            let known = rounds == 1
                && !ended
                && kept.registered == Some(crate::dispatch::Reports::Once)
                && !super::kept::encrypted(&kept.conn);
            match if known { Ok(true) } else { super::kept::has_request(&mut kept.conn) } {
                Ok(true) => {}
                Ok(false) => {
                    log::debug!("kept connection from {} ends between requests", kept.conn.peer);
                    close(*kept.conn);
                    return self.freed(key);
                }
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => {
                    return self.park_kept(lot, key, kept);
                }
                Err(e) => {
                    log::debug!("kept connection from {} failed between requests: {e}", kept.conn.peer);
                    close(*kept.conn);
                    return self.freed(key);
                }
            }
            // Over its client's rate (or past the rounds one worker gives
            // it): the loop holds it until its turn.
            if rounds > ROUNDS_KEPT || (!std::mem::take(&mut kept.charged) && kept.conn.over_rate()) {
                return self.push(HandedBack::Unparked { key, conn: *kept.conn, spoke: true }, true);
            }
            let mut slot = slot(&kept.conn.socket, &kept.conn.peer);
            let (_, back) = runner::serve_kept(ctx, *kept.conn, || slot.untrack(), true);
            let Some(next) = back else { return self.freed(key) };
            kept.conn = Box::new(next);
            // Its next request came with these, past the run the handler
            // makes on them, or its client's end did (the handler's read
            // took the bytes, not the end behind them): it goes on here.
            if super::kept::has_buffered(&kept.conn) || kept.end_reported {
                continue;
            }
            match lot.park(key, kept, rounds < ROUNDS_KEPT) {
                Park::Parked => return,
                // Its next request came before it parked: read here.
                Park::Keep(again) => kept = again,
                Park::Refused(back) => return self.unpark(key, back),
            }
        }
    }

    /// Parks a kept connection again, or gives it to the loop if it cannot
    /// park (the server closes).
    fn park_kept(&self, lot: &Lot, key: usize, kept: Kept) {
        if let Park::Refused(back) | Park::Keep(back) = lot.park(key, kept, false) {
            self.unpark(key, back);
        }
    }

    /// Gives a kept connection that cannot park to the loop.
    fn unpark(&self, key: usize, kept: Kept) {
        self.push(back_to_loop(key, kept), true);
    }
}
