//! The way back to the serving loop: connections handed back, framed ones
//! between messages and stream ones whose handler called
//! `Request::hand_back`, wait here for the loop to take them. On a worker
//! pool that parks, framed connections between messages wait with the
//! workers instead ([`Lot`]), and the loop meets them only at their
//! deadlines and at a close.

use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use socket2::Socket;

use super::state::{Framed, Next, close};
use crate::ancillary::Ancillary;
use crate::deadline::deadline_after;
use crate::dispatch::{Parking, Resume, Slot};
use crate::framing::Framing;
use crate::handler_io::Incoming;
use crate::runner::{Context, HandBack, Scratch};
use crate::serving::registry::Rearmer;
use crate::waker::{Wake, Waker};
use crate::{Address, RequestHandler};

/// A connection handed back to the loop.
pub(crate) enum HandedBack {
    /// A framed connection, its message answered.
    Framed(Box<Framed>),
    /// A stream connection its handler handed back (`Request::hand_back`).
    Stream(Incoming),
    /// A parked framed connection its worker closed (its client ended it,
    /// or it failed): its place in the loop, at this key, is free.
    Closed(usize),
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
    /// Framed connections parked with a worker pool's idle workers.
    lot: Option<Lot>,
}

/// Framed connections between messages, parked where a pool's idle workers
/// wait (`dispatch/parking.rs`): each under its key in the loop, which
/// keeps its slab entry (`State::Away`) meanwhile, so it counts as open and
/// the loop comes by at its deadline. Its worker parks it under the lock,
/// so whoever takes it (a worker its fd woke, or the loop at its deadline
/// or at a close) finds it whole, with its fd open.
///
/// The race: a connection's fd is registered edge-triggered from its first
/// park to its close, so bytes that come while it is elsewhere (with a
/// worker, or back in the loop) report then, to a worker that finds its
/// place empty, and that report is spent. The worker notes it in the place
/// (under the lock), and the park that follows re-arms the fd, which
/// reports again at once if bytes are still unread. A park that finds no
/// note (the report came after it, and finds the connection) and follows a
/// read that emptied the socket needs no system call at all: the common
/// case, one message answered and its client silent again.
pub(crate) struct Lot {
    parking: Arc<Parking>,
    framing: Framing,
    idle_timeout: Option<Duration>,
    parked: Mutex<Parked>,
}

#[derive(Default)]
struct Parked {
    /// By loop key.
    places: Vec<Place>,
    /// The server closes: nothing is parked any more.
    closed: bool,
}

/// A loop key's place in the lot.
#[derive(Default)]
struct Place {
    /// The connection parked here, and when it is closed if still silent.
    parked: Option<(Box<Framed>, Option<Instant>)>,
    /// Its fd reported while it was not parked here: that report is spent,
    /// so its next park re-arms it (or its worker reads it again).
    reported: bool,
    /// That report said its client ended its side: a worker that reads it
    /// again must read until it meets that end.
    reported_end: bool,
}

impl Parked {
    fn place(&mut self, key: usize) -> &mut Place {
        if self.places.len() <= key {
            self.places.resize_with(key + 1, Place::default);
        }
        &mut self.places[key]
    }
}

impl Lot {
    /// A lot whose connections wait in `parking`, cut as `framing` says,
    /// closed after `idle_timeout` of silence.
    pub(crate) fn new(parking: Arc<Parking>, framing: Framing, idle_timeout: Option<Duration>) -> Lot {
        Lot { parking, framing, idle_timeout, parked: Mutex::default() }
    }

    fn lock(&self) -> MutexGuard<'_, Parked> {
        self.parked.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Parks `framed` to wait for its next bytes; gives it back if the
    /// server closes or its fd cannot be armed (the loop takes it then).
    fn park(&self, key: usize, framed: Box<Framed>) -> Option<Box<Framed>> {
        match self.park_or_keep(key, framed, false) {
            Park::Parked => None,
            Park::Refused(framed) | Park::Keep(framed) => Some(framed),
        }
    }

    /// As [`park`](Self::park), but with `keep`, a connection that reported
    /// while its worker had it is given back to that worker to read again
    /// (`Park::Keep`), rather than re-armed to report to another: no
    /// `epoll_ctl`, no second wake-up, and its client's next messages are
    /// answered by the worker that has its state at hand.
    fn park_or_keep(&self, key: usize, mut framed: Box<Framed>, keep: bool) -> Park {
        let mut parked = self.lock();
        if parked.closed {
            return Park::Refused(framed);
        }
        let now = Instant::now();
        let idle = self.idle_timeout.map(|idle| deadline_after(now, idle));
        let expires = [idle, framed.conn.deadline].into_iter().flatten().min();
        let place = parked.place(key);
        if keep && framed.parked && place.reported {
            framed.end_reported |= place.reported_end;
            *place = Place::default();
            return Park::Keep(framed);
        }
        let fd = framed.conn.socket.as_fd();
        // Armed before it is in its place, but under the lock a worker its
        // fd wakes takes it with: that worker finds it here.
        let armed = match (framed.parked, place.reported || !framed.drained) {
            (false, _) => self.parking.add(fd, key),
            (true, true) => self.parking.rearm(fd, key),
            (true, false) => Ok(()),
        };
        if let Err(e) = armed {
            log::warn!("connection from {}: cannot park it with the workers: {e}", framed.conn.peer);
            return Park::Refused(framed);
        }
        framed.parked = true;
        *place = Place { parked: Some((framed, expires)), ..Place::default() };
        Park::Parked
    }

    /// The connection parked at `key`, for the worker its fd woke (`ended`:
    /// the report said its client ended its side); with none there, the
    /// report is noted for the connection's next park.
    fn take(&self, key: usize, ended: bool) -> Option<Box<Framed>> {
        let mut parked = self.lock();
        if parked.closed {
            return None;
        }
        let place = parked.place(key);
        let framed = place.parked.take().map(|(framed, _)| framed);
        match framed {
            Some(_) => *place = Place::default(),
            None => {
                place.reported = true;
                place.reported_end |= ended;
            }
        }
        framed
    }

    /// Every parked connection: the server closes, and nothing parks again.
    #[allow(clippy::vec_box, reason = "each goes on in the box it lives in for its whole life")]
    fn close(&self) -> Vec<Box<Framed>> {
        let mut parked = self.lock();
        parked.closed = true;
        parked.places.iter_mut().filter_map(|place| place.parked.take()).map(|(framed, _)| framed).collect()
    }
}

/// A worker reads a connection that reported while it had it at most this
/// many times in a row; then it parks it re-armed, behind the others that
/// reported meanwhile.
const ROUNDS_KEPT: usize = 4;

/// What became of a connection a worker parks.
enum Park {
    Parked,
    /// Not parked: the loop takes it (the server closes, or its fd could
    /// not be armed).
    Refused(Box<Framed>),
    /// Not parked: it reported while its worker had it, and that worker
    /// reads it again.
    Keep(Box<Framed>),
}

/// What the loop finds for an away connection whose deadline came.
pub(crate) enum AwayAt {
    /// Parked, silent past its deadline: the loop closes it.
    Expired(Box<Framed>),
    /// Parked until then.
    Until(Instant),
    /// With a worker (or parked with no deadline): look again later.
    Elsewhere,
}

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

    /// Whether framed connections waiting for bytes park with the workers.
    pub(crate) fn parks(&self) -> bool {
        self.lot.is_some()
    }

    /// Parks `framed`, the loop's connection at `key`, with the workers;
    /// gives it back if it cannot be (see [`Lot::park`]).
    pub(crate) fn park(&self, key: usize, framed: Box<Framed>) -> Option<Box<Framed>> {
        match &self.lot {
            Some(lot) => lot.park(key, framed),
            None => Some(framed),
        }
    }

    /// The away connection at `key`, if it is parked, as its deadline finds
    /// it. One with input is left to the worker its fd wakes.
    pub(crate) fn away_at(&self, key: usize, now: Instant) -> AwayAt {
        let Some(lot) = &self.lot else { return AwayAt::Elsewhere };
        let mut parked = lot.lock();
        let Some(Place { parked: Some((framed, expires)), .. }) = parked.places.get(key) else {
            return AwayAt::Elsewhere;
        };
        match *expires {
            Some(at) if at > now => AwayAt::Until(at),
            Some(_) if !crate::sys::has_input(framed.conn.socket.as_fd()) => match parked.places[key].parked.take() {
                Some((framed, _)) => AwayAt::Expired(framed),
                None => AwayAt::Elsewhere,
            },
            _ => AwayAt::Elsewhere,
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
        // Parked with the workers, it costs the loop nothing at all.
        if framed.next == Next::Armed
            && let (Some(lot), Some(key)) = (&self.lot, framed.key)
        {
            match lot.park(key, framed) {
                None => return,
                Some(back) => {
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

    /// Closes a framed connection a worker took from the lot, here rather
    /// than in the loop: a client that ends its connection between messages
    /// (one connection per request, say) then costs the loop no wake-up.
    /// The loop frees its place when it next takes what came back, which it
    /// does first thing each turn, before it counts open connections.
    fn close_away(&self, key: usize, framed: Box<Framed>) {
        if framed.registered {
            self.rearmer.forget(framed.conn.socket.as_fd());
        }
        close(framed.conn);
        let mut conns = self.conns.lock().unwrap_or_else(PoisonError::into_inner);
        conns.push(HandedBack::Closed(key));
        drop(conns);
        if self.closing.load(Ordering::SeqCst) {
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
        for mut framed in parked {
            framed.next = Next::Loop;
            conns.push(HandedBack::Framed(framed));
        }
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
        conns.extend(parked.into_iter().map(HandedBack::Framed));
        for back in conns.drain(..) {
            let conn = match back {
                HandedBack::Framed(framed) => {
                    if framed.registered {
                        self.rearmer.forget(framed.conn.socket.as_fd());
                    }
                    framed.conn
                }
                HandedBack::Stream(conn) => conn,
                HandedBack::Closed(_) => continue,
            };
            log::debug!("server closed: closing connection from {} between requests", conn.peer);
            close(conn);
        }
    }
}

impl<H: RequestHandler> Resume<H> for Returns {
    /// A parked connection's fd reported to a worker: that worker reads it
    /// and answers what is whole, as the loop and a queued job would have,
    /// then parks it again or hands it to the loop.
    fn resume(
        &self,
        key: usize,
        ended: bool,
        ctx: &Context<H>,
        scratch: &mut Scratch,
        slot: &mut dyn FnMut(&Socket, &Address) -> Slot,
    ) {
        let Some(lot) = &self.lot else { return };
        let Some(mut framed) = lot.take(key, ended) else { return };
        for round in 1.. {
            let mut slot = slot(&framed.conn.socket, &framed.conn.peer);
            framed.next = super::framed::resume(ctx, &lot.framing, &mut framed, ended && round == 1, scratch);
            if slot.untrack() {
                framed.next = Next::Close;
            }
            // Fds the handler did not take are closed here.
            scratch.ancillary = Ancillary::default();
            match framed.next {
                Next::Close => return self.close_away(key, framed),
                Next::Armed if round < ROUNDS_KEPT => match lot.park_or_keep(key, framed, true) {
                    Park::Parked => return,
                    Park::Keep(again) => framed = again,
                    Park::Refused(back) => return self.hand_back_framed(back, true),
                },
                _ => return self.hand_back_framed(framed, true),
            }
        }
    }
}
