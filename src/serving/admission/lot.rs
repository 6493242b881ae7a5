//! Connections between requests parked where a worker pool's idle workers
//! wait (`dispatch/parking.rs`), each under its key in the loop, which
//! keeps its slab entry (`State::Away`) meanwhile, so it counts as open and
//! the loop comes by at its deadline. Whoever takes one (a worker its fd
//! woke, or the loop at its deadline or at a close) takes it under the
//! lot's lock, whole, with its fd open.
//!
//! Framed connections and kept ones (their handler called
//! `Request::hand_back`) park alike, but report differently. A framed one is
//! registered edge-triggered from its first park to its close, so each
//! park after a read that emptied its socket makes no system call. A kept
//! one reports once per park: its handler reads its socket itself, and an
//! edge-triggered fd would wake a worker for every segment it reads.
//!
//! The race, for a framed connection: bytes that come while it is
//! elsewhere (with a worker, or back in the loop) report then, to a worker
//! that finds its place empty, and that report is spent. The worker notes
//! it in the place (under the lock), and the park that follows re-arms the
//! fd, which reports again at once if bytes are still unread, or gives it
//! back to its worker to read again. A park that finds no note (the report
//! came after it, and finds the connection) and follows a read that
//! emptied the socket needs no system call at all: the common case, one
//! message answered and its client silent again.

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
    /// Handed back by its handler, waiting for its next request;
    /// `registered`: its fd is in the parking already.
    Kept { conn: Box<Incoming>, registered: bool },
}

impl Parked {
    pub(super) fn conn(&self) -> &Incoming {
        match self {
            Parked::Framed(framed) => &framed.conn,
            Parked::Kept { conn, .. } => conn,
        }
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
    /// Its fd reported while it was not parked here: that report is spent,
    /// so its next park re-arms it (or its worker reads it again).
    reported: bool,
    /// That report said its client ended its side: a worker that reads it
    /// again must read until it meets that end.
    reported_end: bool,
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
pub(super) enum Park {
    Parked,
    /// Not parked: the loop takes it (the server closes, or its fd could
    /// not be armed).
    Refused(Parked),
    /// Not parked: it reported while its worker had it, and that worker
    /// reads it again.
    Keep(Box<Framed>),
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

    fn lock(&self) -> MutexGuard<'_, Places> {
        self.places.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Parks `parked`, the loop's connection at `key`, to wait for its next
    /// bytes. With `keep`, a framed connection that reported while its
    /// worker had it is given back to that worker to read again
    /// (`Park::Keep`), rather than re-armed to report to another: no
    /// `epoll_ctl`, no second wake-up, and its client's next messages are
    /// answered by the worker that has its state at hand.
    pub(super) fn park(&self, key: usize, mut parked: Parked, keep: bool) -> Park {
        let mut places = self.lock();
        if places.closed {
            return Park::Refused(parked);
        }
        let now = Instant::now();
        let idle = self.idle_timeout.map(|idle| deadline_after(now, idle));
        let expires = [idle, parked.conn().deadline].into_iter().flatten().min();
        self.parking.use_it();
        let place = places.place(key);
        let arm = place.arm.wrapping_add(1);
        // Armed before it is in its place, but under the lock a worker its
        // fd wakes takes it with: that worker finds it here.
        let armed = match &mut parked {
            Parked::Framed(framed) => {
                if keep && framed.parked && place.reported {
                    framed.end_reported |= place.reported_end;
                    (place.reported, place.reported_end) = (false, false);
                    let Parked::Framed(framed) = parked else { unreachable!("matched above") };
                    return Park::Keep(framed);
                }
                let fd = framed.conn.socket.as_fd();
                let armed = match (framed.parked, place.reported || !framed.drained) {
                    (false, _) => self.parking.add(fd, key, arm, Reports::EachArrival).map(|()| Some(arm)),
                    (true, true) => self.parking.rearm(fd, key, arm, Reports::EachArrival).map(|()| Some(arm)),
                    (true, false) => Ok(None),
                };
                framed.parked |= armed.is_ok();
                armed
            }
            Parked::Kept { conn, registered } => {
                let fd = conn.socket.as_fd();
                let armed = match *registered {
                    true => self.parking.rearm(fd, key, arm, Reports::Once),
                    // One that went back to the loop meanwhile (over its
                    // client's rate, say) is registered without knowing it.
                    false => match self.parking.add(fd, key, arm, Reports::Once) {
                        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                            self.parking.rearm(fd, key, arm, Reports::Once)
                        }
                        added => added,
                    },
                };
                *registered |= armed.is_ok();
                armed.map(|()| Some(arm))
            }
        };
        match armed {
            Ok(armed) => place.arm = armed.unwrap_or(place.arm),
            Err(e) => {
                log::warn!("connection from {}: cannot park it with the workers: {e}", parked.conn().peer);
                return Park::Refused(parked);
            }
        }
        place.parked = Some((parked, expires));
        (place.reported, place.reported_end) = (false, false);
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
            Some(_) => (place.reported, place.reported_end) = (false, false),
            None => {
                place.reported = true;
                place.reported_end |= ended;
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
