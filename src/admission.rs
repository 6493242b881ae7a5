//! A connection's way from `accept` to a handler, all of it in the serving
//! loop and none of it in a worker: a trusted balancer's PROXY header
//! (feature `proxy-protocol`), then `verify_request`, then the TLS handshake
//! (feature `tls`), then, with `idle_timeout`, parking until it speaks; and
//! the queue of connections ready for a handler while the dispatcher is full.
//!
//! Each stage is polled by the loop and bounded by a deadline, so a peer
//! that stalls anywhere on the way costs an fd until then, never a worker.
//! Connections in any stage count as open for `max_connections`.

use std::time::{Duration, Instant};

use crate::adapter::{self, Context, Incoming};
use crate::hooks::Hooks;
use crate::options::Options;
use crate::parking::Parking;
use crate::stats::Counters;
use crate::sys;

/// Where a connection just accepted stands.
pub(crate) enum Admitted {
    /// In a stage of the way: not a request yet.
    Held,
    /// Turned away (by `verify_request`, or a failed stage): that request is handled.
    Refused,
    /// Ready for a handler now.
    Ready(Incoming),
}

/// How one step of a stage ended for a connection (a PROXY header read, a
/// TLS handshake step), when it ended the stage.
#[cfg(any(feature = "proxy-protocol", feature = "tls"))]
pub(crate) enum Step {
    /// Through the stage: on to the next.
    Through,
    /// The peer closed before sending a byte (a port check, a TCP health check).
    Gone,
    /// Refused; the reason says why.
    Failed(String),
}

/// Takes poll's answer for a stage's `held` connections (one entry each, in
/// order): `decide` gets each with whether its fd is ready, and returns the
/// connection with how it left the stage, or gives it back to stay. Those
/// that stay keep their order, so the next poll set lines up again.
#[cfg(any(feature = "proxy-protocol", feature = "tls"))]
pub(crate) fn sift<T>(
    held: &mut Vec<T>,
    polled: &[libc::pollfd],
    mut decide: impl FnMut(T, bool) -> Result<(Incoming, Step), T>,
) -> Vec<(Incoming, Step)> {
    let mut entry = polled.iter();
    let mut left = Vec::new();
    let stay = std::mem::take(held)
        .into_iter()
        .filter_map(|item| match decide(item, entry.next().is_some_and(|p| p.revents != 0)) {
            Ok(gone) => {
                left.push(gone);
                None
            }
            Err(item) => Some(item),
        })
        .collect();
    *held = stay;
    left
}

/// The connections on their way to a handler, stage by stage.
#[derive(Default)]
pub(crate) struct Admission {
    parking: Parking,
    #[cfg(feature = "proxy-protocol")]
    headers: crate::proxy::Pending,
    #[cfg(feature = "tls")]
    handshakes: crate::tls::Handshakes,
}

impl Admission {
    /// Takes a connection just accepted as far as it can go at once.
    pub(crate) fn accepted<H>(
        &mut self,
        conn: Incoming,
        now: Instant,
        ctx: &Context<H>,
        hooks: &mut Hooks,
        options: &Options,
    ) -> Admitted {
        // A trusted balancer's header comes first; until it is in, the
        // client (and so what `verify_request` sees) is not known.
        #[cfg(feature = "proxy-protocol")]
        if let Some(settings) = &options.proxy_protocol
            && settings.trusts(&conn.peer)
        {
            self.headers.wait(conn, now, settings.timeout());
            return Admitted::Held;
        }
        self.verify(conn, now, ctx, hooks, options, true)
    }

    /// `verify_request`, then on: to the TLS handshake, to parking, or
    /// (`direct`) back to the caller as ready; otherwise queued.
    fn verify<H>(
        &mut self,
        conn: Incoming,
        now: Instant,
        ctx: &Context<H>,
        hooks: &mut Hooks,
        options: &Options,
        direct: bool,
    ) -> Admitted {
        if !hooks.verify_request(&conn.peer) {
            Counters::add(&ctx.counters.refused, 1);
            adapter::close_stream(conn.socket);
            return Admitted::Refused;
        }
        #[cfg(feature = "tls")]
        if let Some(config) = &options.tls {
            let handshake = options.idle_timeout.unwrap_or(crate::tls::DEFAULT_HANDSHAKE_TIMEOUT);
            let limit = crate::options::deadline_after(now, handshake);
            let expires = conn.deadline.map_or(limit, |deadline| deadline.min(limit));
            return match self.handshakes.start(conn, config, expires) {
                Ok(()) => Admitted::Held,
                Err((conn, reason)) => {
                    refuse(ctx, conn, &ctx.counters.tls_failed, |peer| crate::Error::Tls { peer, reason });
                    Admitted::Refused
                }
            };
        }
        self.ready(conn, now, options, direct)
    }

    /// A connection ready for a handler: parked until it speaks (with
    /// `idle_timeout`), handed back (`direct`), or queued for room.
    fn ready(&mut self, conn: Incoming, now: Instant, options: &Options, direct: bool) -> Admitted {
        match options.idle_timeout {
            Some(idle) => self.parking.park(conn, now, idle),
            None if direct => return Admitted::Ready(conn),
            None => self.parking.queue(conn),
        }
        Admitted::Held
    }

    /// Connections held in any stage; they count as open.
    pub(crate) fn len(&self) -> usize {
        let held = self.parking.len();
        #[cfg(feature = "proxy-protocol")]
        let held = held + self.headers.len();
        #[cfg(feature = "tls")]
        let held = held + self.handshakes.len();
        held
    }

    /// Time until the first deadline of any stage.
    pub(crate) fn next_expiry(&self, now: Instant) -> Option<Duration> {
        let next = self.parking.next_expiry(now);
        #[cfg(feature = "proxy-protocol")]
        let next = next.into_iter().chain(self.headers.next_expiry(now)).min();
        #[cfg(feature = "tls")]
        let next = next.into_iter().chain(self.handshakes.next_expiry(now)).min();
        next
    }

    /// Appends what to poll for every held connection, in the order
    /// [`sort`](Self::sort) reads poll's answers.
    pub(crate) fn poll_entries(&self, into: &mut Vec<libc::pollfd>) {
        into.extend(self.parking.poll_fds().map(sys::poll_entry));
        #[cfg(feature = "proxy-protocol")]
        into.extend(self.headers.poll_fds().map(sys::poll_entry));
        #[cfg(feature = "tls")]
        into.extend(self.handshakes.poll_entries());
    }

    /// Takes poll's answer for the entries [`poll_entries`](Self::poll_entries)
    /// gave, and moves every connection that can move: on to its next
    /// stage, to the ready queue, or out with a log line or an error naming
    /// the peer. Returns whether any was turned away (a handled request).
    // Without the optional stages, some of this has nothing to do.
    #[cfg_attr(not(all(feature = "proxy-protocol", feature = "tls")), allow(unused_variables, unused_mut))]
    pub(crate) fn sort<H>(
        &mut self,
        polled: &[libc::pollfd],
        now: Instant,
        ctx: &Context<H>,
        hooks: &mut Hooks,
        options: &Options,
    ) -> bool {
        let (parked, rest) = polled.split_at(self.parking.polled().min(polled.len()));
        self.parking.sort(parked, now, &ctx.counters);
        let mut turned_away = false;
        #[cfg(feature = "proxy-protocol")]
        let rest = {
            let (headers, rest) = rest.split_at(self.headers.len().min(rest.len()));
            turned_away |= self.read_headers(headers, now, ctx, hooks, options);
            rest
        };
        #[cfg(feature = "tls")]
        {
            turned_away |= self.finish_handshakes(rest, now, ctx, options);
        }
        turned_away
    }

    /// Headers complete (or, where allowed, absent) go on to `verify_request`
    /// as from the client they name; bad ones close their connection.
    #[cfg(feature = "proxy-protocol")]
    fn read_headers<H>(
        &mut self,
        polled: &[libc::pollfd],
        now: Instant,
        ctx: &Context<H>,
        hooks: &mut Hooks,
        options: &Options,
    ) -> bool {
        let Some(settings) = &options.proxy_protocol else { return false };
        let mut turned_away = false;
        for (conn, step) in self.headers.sort(polled, now, settings) {
            match step {
                Step::Through => {
                    turned_away |= matches!(self.verify(conn, now, ctx, hooks, options, false), Admitted::Refused);
                }
                Step::Gone => closed_silent(conn),
                Step::Failed(reason) => {
                    refuse(ctx, conn, &ctx.counters.proxy_refused, |peer| crate::Error::ProxyHeader { peer, reason });
                    turned_away = true;
                }
            }
        }
        turned_away
    }

    /// Finished handshakes go on to a handler; failed ones close their
    /// connection with an error naming the client.
    #[cfg(feature = "tls")]
    fn finish_handshakes<H>(
        &mut self,
        polled: &[libc::pollfd],
        now: Instant,
        ctx: &Context<H>,
        options: &Options,
    ) -> bool {
        let mut turned_away = false;
        for (conn, step) in self.handshakes.sort(polled, now) {
            match step {
                // Its first request came with the handshake: already read off
                // the socket, so polling the socket would not see it.
                Step::Through if conn.tls.as_ref().is_some_and(|tls| tls.has_plaintext()) => self.parking.queue(conn),
                Step::Through => {
                    self.ready(conn, now, options, false);
                }
                Step::Gone => closed_silent(conn),
                Step::Failed(reason) => {
                    refuse(ctx, conn, &ctx.counters.tls_failed, |peer| crate::Error::Tls { peer, reason });
                    turned_away = true;
                }
            }
        }
        turned_away
    }

    pub(crate) fn has_spoken(&self) -> bool {
        self.parking.has_spoken()
    }

    /// The connection ready for a handler that has waited longest.
    pub(crate) fn next_spoken(&mut self) -> Option<Incoming> {
        self.parking.next_spoken()
    }

    /// On close: every connection still held is closed with a log line.
    pub(crate) fn close_all(&mut self) {
        self.parking.close_all();
        #[cfg(feature = "proxy-protocol")]
        self.headers.close_all();
        #[cfg(feature = "tls")]
        self.handshakes.close_all();
    }
}

/// A peer that closed before sending a byte: a port check, a TCP health
/// check. Not worth more than a debug line.
#[cfg(any(feature = "proxy-protocol", feature = "tls"))]
fn closed_silent(conn: Incoming) {
    log::debug!("connection from {} closed before sending anything", conn.peer);
    adapter::close_stream(conn.socket);
}

/// Closes a connection a stage refused, counting it in `counter` and
/// reporting the error `error` makes of its peer to `handle_error`.
#[cfg(any(feature = "proxy-protocol", feature = "tls"))]
fn refuse<H>(
    ctx: &Context<H>,
    conn: Incoming,
    counter: &std::sync::atomic::AtomicU64,
    error: impl FnOnce(crate::Address) -> crate::Error,
) {
    Counters::add(counter, 1);
    (ctx.on_error)(&error(conn.peer));
    adapter::close_stream(conn.socket);
}
