//! Connections between requests parked where a worker pool's idle workers
//! wait (`dispatch/parking.rs`), each under its key in the loop, which
//! keeps its slab entry (`State::Away`) meanwhile, so it counts as open and
//! the loop comes by at its deadline. Whoever takes one (a worker its fd
//! woke, or the loop at its deadline or at a close) takes it under the
//! lot's lock, whole, with its fd open.
//!
//! Framed connections and kept ones (their handler called
//! `Request::hand_back`) park alike, and both are registered
//! edge-triggered, so each park after a read that emptied the socket makes
//! no system call. A framed one stays so from its first park to its close.
//! A kept one's handler reads its socket itself, and bytes it reads report
//! too (see `Parks for Kept`): so its worker looks before the handler runs
//! (a report may be of bytes read already), and one whose handler's reads
//! woke workers reports once per park from then on.
//!
//! The race: bytes that come while a connection is elsewhere (with a
//! worker, or back in the loop) report then, to a worker that finds its
//! place empty, and that report is spent. The worker notes it in the place
//! (under the lock), and the park that follows re-arms the fd, which
//! reports again at once if bytes are still unread, or gives it back to its
//! worker to read again. A park that finds no note (the report came after
//! it, and finds the connection) and follows a read that emptied the
//! socket needs no system call at all: the common case, one message
//! answered and its client silent again.

use std::io;
use std::os::fd::AsFd;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::state::Framed;
use crate::deadline::deadline_after;
use crate::dispatch::{Parking, Reports};
use crate::framing::Framing;
use crate::handler_io::Incoming;

/// A connection parked between requests.
pub(crate) enum Parked {
    /// Framed, waiting for its next message.
    Framed(Box<Framed>),
    /// Handed back by its handler, waiting for its next request.
    Kept(Kept),
}

impl Parked {
    pub(super) fn conn(&self) -> &Incoming {
        match self {
            Parked::Framed(framed) => &framed.conn,
            Parked::Kept(kept) => &kept.conn,
        }
    }
}

/// A connection its handler handed back, as it parks.
pub(crate) struct Kept {
    pub conn: Box<Incoming>,
    /// How its fd is registered in the parking, if it is (one that went
    /// back to the loop meanwhile is registered without knowing it).
    pub registered: Option<Reports>,
    /// A report said its client ended its side (or it failed). A read that
    /// returns bytes does not return the end behind them, and the one
    /// report that said both is spent: its worker reads it again rather
    /// than park it (and a park re-arms it, which reports that end again).
    pub end_reported: bool,
    /// A newcomer's first request is charged to its client (per-client
    /// limits) when it connects: not again when it comes.
    pub charged: bool,
}

impl Kept {
    /// One its handler handed back, which the loop parks: as far as it
    /// knows, not registered.
    pub(super) fn new(conn: Incoming) -> Kept {
        Kept { conn: Box::new(conn), registered: None, end_reported: false, charged: false }
    }

    /// A newcomer, which waits for its first request (charged already).
    pub(super) fn newcomer(conn: Incoming) -> Kept {
        Kept { charged: true, ..Kept::new(conn) }
    }
}

/// What parks in the lot: each kind registers its fd its own way.
pub(super) trait Parks: Into<Parked> {
    fn conn(&self) -> &Incoming;

    /// Its key in the loop, if it has one already (a framed connection
    /// keeps its key from its first stage to its close).
    fn key(&self) -> Option<usize>;

    /// Records the key the loop gives it (`None`: taken back).
    fn set_key(&mut self, key: Option<usize>);

    /// Whether, having reported while its worker had it (as `reported`
    /// says), it goes back to that worker to be read again rather than
    /// re-armed.
    fn keeps(&mut self, reported: Reported) -> bool;

    /// Registers its fd, or re-arms it, as its last read and the reports it
    /// missed (`reported`) require, as `arm`; returns whether it did (a
    /// park that needs no system call keeps the arm it had).
    fn arm(&mut self, parking: &Parking, key: usize, arm: u32, reported: Reported) -> io::Result<bool>;
}

/// The reports a place noted while its connection was elsewhere.
#[derive(Default, Clone, Copy)]
pub(super) struct Reported {
    /// How many (up to 255): each one spent.
    count: u8,
    /// One said its client ended its side (or that it failed).
    ended: bool,
}

impl Reported {
    fn any(self) -> bool {
        self.count > 0
    }
}

impl Parks for Box<Framed> {
    fn conn(&self) -> &Incoming {
        &self.conn
    }

    fn key(&self) -> Option<usize> {
        self.key
    }

    fn set_key(&mut self, key: Option<usize>) {
        self.key = key;
    }

    fn keeps(&mut self, reported: Reported) -> bool {
        if self.parked {
            // Its worker must read until it meets that end.
            self.end_reported |= reported.ended;
        }
        self.parked
    }

    fn arm(&mut self, parking: &Parking, key: usize, arm: u32, reported: Reported) -> io::Result<bool> {
        let fd = self.conn.socket.as_fd();
        let armed = match (self.parked, reported.any() || !self.drained) {
            (false, _) => parking.add(fd, key, arm, Reports::EachArrival).map(|()| true),
            (true, true) => parking.rearm(fd, key, arm, Reports::EachArrival).map(|()| true),
            (true, false) => Ok(false),
        };
        self.parked |= armed.is_ok();
        armed
    }
}

impl From<Box<Framed>> for Parked {
    fn from(framed: Box<Framed>) -> Parked {
        Parked::Framed(framed)
    }
}

impl Parks for Kept {
    fn conn(&self) -> &Incoming {
        &self.conn
    }

    /// A new place each time it parks from the loop (a worker parks it
    /// again at the key it has).
    fn key(&self) -> Option<usize> {
        None
    }

    fn set_key(&mut self, _: Option<usize>) {}

    /// Once: a client that sent its next request before its worker parked
    /// it (a fast request/response client) is served by that worker, with
    /// no re-arm and no other worker woken. More than once, its handler's
    /// reads were waking workers (a long request, a client that streams):
    /// it is re-armed to report once per park from now on.
    fn keeps(&mut self, reported: Reported) -> bool {
        let keeps = self.registered == Some(Reports::EachArrival) && reported.count == 1;
        self.end_reported |= keeps && reported.ended;
        keeps
    }

    /// Edge-triggered while that costs nothing: a plain TCP connection,
    /// whose worker reads its next request off its socket before its handler
    /// runs (a look that is its handler's first read), parks with no system
    /// call after a read that emptied its socket. Over TLS or a Unix socket
    /// the look is a peek (records are no request; a read would drop passed
    /// fds), which costs what the re-arm it saves does; and one whose
    /// handler's reads woke workers (more than one report while a worker
    /// had it) reports once per park instead, so they wake none.
    fn arm(&mut self, parking: &Parking, key: usize, arm: u32, reported: Reported) -> io::Result<bool> {
        let once =
            self.registered == Some(Reports::Once) || reported.count > 1 || !super::kept::looks_by_reading(&self.conn);
        let reports = if once { Reports::Once } else { Reports::EachArrival };
        let fd = self.conn.socket.as_fd();
        let armed = match self.registered {
            Some(Reports::EachArrival) if !once && !reported.any() && self.conn.emptied && !self.end_reported => {
                return Ok(false);
            }
            Some(_) => parking.rearm(fd, key, arm, reports),
            None => match parking.add(fd, key, arm, reports) {
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => parking.rearm(fd, key, arm, reports),
                added => added,
            },
        };
        if armed.is_ok() {
            self.registered = Some(reports);
        }
        armed.map(|()| true)
    }
}

impl From<Kept> for Parked {
    fn from(kept: Kept) -> Parked {
        Parked::Kept(kept)
    }
}

pub(crate) struct Lot {
    parking: Arc<Parking>,
    /// How framed connections are cut (`None`: only kept ones park).
    pub(super) framing: Option<Framing>,
    idle_timeout: Option<Duration>,
    places: Mutex<Places>,
}

#[derive(Default)]
struct Places {
    /// By loop key.
    places: Vec<Place>,
    /// The server closes: nothing is parked any more.
    closed: bool,
}

/// A loop key's place in the lot.
#[derive(Default)]
struct Place {
    /// The connection parked here, and when it is closed if still silent.
    parked: Option<(Parked, Option<Instant>)>,
    /// Its fd reported while it was not parked here: those reports are
    /// spent, so its next park re-arms it (or its worker reads it again).
    reported: Reported,
    /// The number of its fd's latest arm (a registration or a re-arm),
    /// never reset, so it differs from every earlier arm at this key, of
    /// this connection or of one before it: a report carries the number of
    /// the arm it came from, and one from an earlier arm is stale (the
    /// latest re-polled the socket, and reported what it found then).
    arm: u32,
}

impl Places {
    fn place(&mut self, key: usize) -> &mut Place {
        if self.places.len() <= key {
            self.places.resize_with(key + 1, Place::default);
        }
        &mut self.places[key]
    }
}

/// What became of a connection parked.
pub(super) enum Park<P> {
    Parked,
    /// Not parked: the loop takes it (the server closes, or its fd could
    /// not be armed).
    Refused(P),
    /// Not parked: it reported while its worker had it, and that worker
    /// reads it again.
    Keep(P),
}

/// What the loop finds for an away connection whose deadline came.
pub(crate) enum AwayAt {
    /// Parked, silent past its deadline: the loop closes it.
    Expired(Parked),
    /// Parked until then.
    Until(Instant),
    /// With a worker (or parked with no deadline): look again later.
    Elsewhere,
}

impl Lot {
    /// A lot whose connections wait in `parking`, framed ones cut as
    /// `framing` says, closed after `idle_timeout` of silence.
    pub(crate) fn new(parking: Arc<Parking>, framing: Option<Framing>, idle_timeout: Option<Duration>) -> Lot {
        // Framed connections park from the first: so do the idle workers.
        if framing.is_some() {
            parking.use_it();
        }
        Lot { parking, framing, idle_timeout, places: Mutex::default() }
    }

    /// Whether connections have parked here: then a handler hands its
    /// connection back, and a newcomer waits here for its first request
    /// too (see `arrival.rs`).
    pub(super) fn in_use(&self) -> bool {
        self.parking.used()
    }

    fn lock(&self) -> MutexGuard<'_, Places> {
        self.places.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Parks `parked`, the loop's connection at `key`, to wait for its next
    /// bytes. With `keep`, a connection that reported while its worker had
    /// it may be given back to that worker to read again (`Park::Keep`,
    /// see [`Parks::keeps`]), rather than re-armed to report to another:
    /// no `epoll_ctl`, no second wake-up, and its client's next messages
    /// are answered by the worker that has its state at hand.
    pub(super) fn park<P: Parks>(&self, key: usize, mut parked: P, keep: bool) -> Park<P> {
        let mut places = self.lock();
        if places.closed {
            return Park::Refused(parked);
        }
        let now = Instant::now();
        let idle = self.idle_timeout.map(|idle| deadline_after(now, idle));
        let expires = [idle, parked.conn().deadline].into_iter().flatten().min();
        self.parking.use_it();
        let place = places.place(key);
        let reported = std::mem::take(&mut place.reported);
        if keep && reported.any() && parked.keeps(reported) {
            return Park::Keep(parked);
        }
        // Armed before it is in its place, but under the lock a worker its
        // fd wakes takes it with: that worker finds it here.
        let arm = place.arm.wrapping_add(1);
        match parked.arm(&self.parking, key, arm, reported) {
            Ok(true) => place.arm = arm,
            Ok(false) => {}
            Err(e) => {
                log::warn!("connection from {}: cannot park it with the workers: {e}", parked.conn().peer);
                place.reported = reported;
                return Park::Refused(parked);
            }
        }
        place.parked = Some((parked.into(), expires));
        Park::Parked
    }

    /// The connection parked at `key`, for the worker its fd woke for its
    /// arm `arm` (`ended`: the report said its client ended its side); with
    /// none there, the report is noted for the connection's next park. A
    /// report from an earlier arm takes nothing and notes nothing.
    pub(super) fn take(&self, key: usize, arm: u32, ended: bool) -> Option<Parked> {
        let mut places = self.lock();
        if places.closed {
            return None;
        }
        let place = places.place(key);
        if place.arm != arm {
            return None;
        }
        let parked = place.parked.take().map(|(parked, _)| parked);
        match parked {
            Some(_) => place.reported = Reported::default(),
            None => {
                place.reported.count = place.reported.count.saturating_add(1);
                place.reported.ended |= ended;
            }
        }
        parked
    }

    /// Every parked connection, with its key: the server closes, and
    /// nothing parks again.
    pub(super) fn close(&self) -> Vec<(usize, Parked)> {
        let mut places = self.lock();
        places.closed = true;
        let places = places.places.iter_mut().enumerate();
        places.filter_map(|(key, place)| Some((key, place.parked.take()?.0))).collect()
    }

    /// The away connection at `key`, if it is parked, as its deadline finds
    /// it. One with input is left to the worker its fd wakes.
    pub(super) fn away_at(&self, key: usize, now: Instant) -> AwayAt {
        let mut places = self.lock();
        let Some(Place { parked: Some((parked, expires)), .. }) = places.places.get(key) else {
            return AwayAt::Elsewhere;
        };
        match *expires {
            Some(at) if at > now => AwayAt::Until(at),
            Some(_) if !crate::sys::has_input(parked.conn().socket.as_fd()) => match places.places[key].parked.take() {
                Some((parked, _)) => AwayAt::Expired(parked),
                None => AwayAt::Elsewhere,
            },
            _ => AwayAt::Elsewhere,
        }
    }
}
