//! What the serving loop and the workers ask of the limits: may this
//! connection open, may this request go now. One table behind a mutex,
//! taken once per connection, datagram or framed message, never across a
//! system call; refusals are counted and logged here, at most
//! [`LOGGED_PER_SECOND`] lines a second.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::table::{Place, Rules, Table};
use super::{Key, PerClient};
use crate::Address;
use crate::hooks::{Admit, RateLimit};
use crate::stats::Counters;

pub(crate) use super::table::Over;

/// Log lines about refused clients a second at most.
const LOGGED_PER_SECOND: u32 = 10;

/// A server's per-client limits, shared by its loop and its workers.
pub(crate) struct Limiter {
    settings: PerClient,
    rules: Rules,
    table: Mutex<Table>,
    /// The table's clock starts here.
    epoch: Instant,
    counters: Arc<Counters>,
    log: RateLimit,
}

/// A connection's client, while the connection is open: its key, for
/// charging its framed messages, and its place in the table, counted off
/// when the connection closes (when this drops).
pub(crate) struct Client {
    limiter: Arc<Limiter>,
    key: Key,
    place: Place,
}

impl Limiter {
    pub(crate) fn new(settings: PerClient, counters: Arc<Counters>) -> Limiter {
        let rules = Rules { connections: settings.connections, rate: settings.rate, when_full: settings.when_full };
        let table = Mutex::new(Table::new(settings.capacity));
        Limiter { settings, rules, table, epoch: Instant::now(), counters, log: RateLimit::new(LOGGED_PER_SECOND) }
    }

    /// A connection just accepted from `peer` (`uid`: a Unix peer's):
    /// `Ok(None)` when it is not limited, else its client, to keep with it;
    /// `Err` (counted, logged) when it is over a limit, to close at once.
    /// `charge`: the connection is a request, and takes a token.
    pub(crate) fn connect(
        self: &Arc<Self>,
        peer: &Address,
        uid: Option<u32>,
        charge: bool,
        now: Instant,
    ) -> Result<Option<Box<Client>>, Over> {
        let Some(key) = Key::of(peer, uid, &self.settings) else { return Ok(None) };
        let placed = self.lock().connect(key, self.clock(now), &self.rules, charge);
        match placed {
            Ok(place) => Ok(Some(Box::new(Client { limiter: Arc::clone(self), key, place }))),
            Err(over) => {
                self.refused(key, over, "connection closed", now);
                Err(over)
            }
        }
    }

    /// A datagram from `peer` (`uid`: a Unix sender's): whether it may be
    /// served; one over the rate (counted, logged) is dropped.
    pub(crate) fn datagram(&self, peer: &Address, uid: Option<u32>, now: Instant) -> bool {
        let Some(key) = Key::of(peer, uid, &self.settings) else { return true };
        let taken = self.lock().request(key, self.clock(now), &self.rules);
        taken.map_err(|over| self.refused(key, over, "datagram dropped", now)).is_ok()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        // The table is consistent between calls; a panic cannot leave it half-changed.
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn clock(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_nanos() as u64
    }

    /// Counts a refusal of `key`'s and logs it, rate-limited: a flood's
    /// refusals past the limit cost a count, no formatting.
    fn refused(&self, key: Key, over: Over, what: &str, now: Instant) {
        let counters = &*self.counters;
        let counter = match over {
            Over::Connections => &counters.over_client_connections,
            Over::Rate { .. } => &counters.over_client_rate,
            Over::Full => &counters.client_table_full,
        };
        Counters::add(counter, 1);
        let Admit::Log { suppressed } = self.log.admit(now) else { return };
        let why = match over {
            Over::Connections => format!("holds its {} connections", self.rules.connections.unwrap_or(0)),
            Over::Rate { .. } => {
                let (rate, burst) = self.rules.rate.unwrap_or_default();
                format!("is over {rate} requests a second (burst {burst})")
            }
            Over::Full => format!("is new and the table of {} clients is full", self.settings.capacity),
        };
        match suppressed {
            0 => log::warn!("client {key} {why}: {what}"),
            n => log::warn!("client {key} {why}: {what} (and {n} more refusals not logged)"),
        }
    }
}

impl Client {
    /// A framed message of this connection's client: `Ok` to answer it
    /// now, or how long until its client has a token (`report`: counted
    /// and logged, as the loop does when it holds the message back; a
    /// worker hands it to the loop without).
    pub(crate) fn message(&self, now: Instant, report: bool) -> Result<(), Duration> {
        let limiter = &*self.limiter;
        let taken = limiter.lock().request(self.key, limiter.clock(now), &limiter.rules);
        taken.map_err(|over| {
            if report {
                limiter.refused(self.key, over, "message delayed", now);
            }
            match over {
                Over::Rate { wait_ns } => Duration::from_nanos(wait_ns),
                // Forgotten and refused a place again: try again in a while.
                _ => Duration::from_millis(100),
            }
        })
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.limiter.lock().release(self.place);
    }
}
