//! A connection's arrival, all of it in the serving loop: a trusted
//! balancer's PROXY header (feature `proxy-protocol`), then
//! `verify_request`, then the TLS handshake (feature `tls`), then, with
//! `idle_timeout`, waiting silent until it speaks.

use std::io;
use std::os::fd::AsFd;
use std::time::Instant;

use super::closing::Waiting;
use super::framed::frame;
use super::lot::Kept;
use super::state::{Admitted, Arrival, Env, Framed, State, close};
use super::step::Step;
use super::table::Table;
#[cfg(any(feature = "proxy-protocol", feature = "tls"))]
use crate::Error;
use crate::ancillary::Credentials;
use crate::deadline::deadline_after;
use crate::handler_io::{Incoming, close_stream};
use crate::stats::Counters;
use crate::sys;

/// Takes a connection just accepted as far as it can go at once.
pub(super) fn accepted<H>(table: &mut Table, conn: Incoming, now: Instant, env: &mut Env<'_, H>) -> Admitted {
    // A trusted balancer's header comes first; until it is in, the
    // client (and so what `verify_request` sees) is not known.
    #[cfg(feature = "proxy-protocol")]
    if let Some(settings) = &env.options.proxy_protocol
        && settings.trusts(&conn.peer)
    {
        let expires = deadline_after(now, settings.timeout());
        let header = Arrival::Header(super::proxy_header::HeaderRead::default());
        return table.hold(State::Arriving(conn, header), Some(expires), env);
    }
    verify(table, conn, now, env, true)
}

/// Per-client limits and `verify_request` (the client is known now), then
/// on: to the TLS handshake, to waiting silent, or (`direct`) back to the
/// caller as ready; otherwise queued.
fn verify<H>(table: &mut Table, mut conn: Incoming, now: Instant, env: &mut Env<'_, H>, direct: bool) -> Admitted {
    if let Some(limiter) = &env.ctx.limiter {
        let uid = if conn.peer.is_unix() { Credentials::of_peer(&conn.socket).map(|c| c.uid) } else { None };
        // A plain connection is a request; a framed one's messages are.
        match limiter.connect(&conn.peer, uid, env.options.framing.is_none(), now) {
            Ok(client) => conn.client = client,
            // Counted and logged by the limiter.
            Err(_) => {
                close_stream(conn.socket);
                return Admitted::Refused;
            }
        }
    }
    if !env.hooks.verify_request(&conn.peer) {
        Counters::add(&env.ctx.counters().refused, 1);
        close_stream(conn.socket);
        return Admitted::Refused;
    }
    #[cfg(feature = "tls")]
    if let Some(config) = &env.options.tls {
        let handshake = env.options.idle_timeout.unwrap_or(crate::tls::DEFAULT_HANDSHAKE_TIMEOUT);
        let limit = deadline_after(now, handshake);
        let expires = conn.deadline.map_or(limit, |deadline| deadline.min(limit));
        return match super::tls_handshake::Handshake::start(config) {
            Ok(handshake) => table.hold(State::Arriving(conn, Arrival::Handshake(handshake)), Some(expires), env),
            Err(reason) => {
                refuse(env, conn, &env.ctx.counters().tls_failed, |peer| Error::Tls { peer, reason });
                Admitted::Refused
            }
        };
    }
    ready(table, conn, now, env, direct)
}

/// A newcomer that waited with the workers for its first request, back in
/// the loop (the server closes, or it could not park): it waits as one
/// still arriving, and a close meets it as one that has sent nothing (a
/// hand-over carries it on: it may be sending). Returns whether it was
/// turned away.
pub(super) fn unparked<H>(table: &mut Table, conn: Incoming, now: Instant, env: &Env<'_, H>) -> bool {
    if table.closing.is_some_and(|closing| closing.closes(Waiting::FirstByte, conn.socket.as_fd())) {
        log::debug!("server closing: closing connection from {}, which sent nothing", conn.peer);
        close_stream(conn.socket);
        return false;
    }
    matches!(ready(table, conn, now, env, false), Admitted::Refused)
}

/// A connection ready for a handler: framed, held until it speaks (with
/// `idle_timeout`), handed back (`direct`), or queued for room.
fn ready<H>(table: &mut Table, mut conn: Incoming, now: Instant, env: &Env<'_, H>, direct: bool) -> Admitted {
    if env.options.framing.is_some() {
        let mut framed = Framed::new(conn);
        // Most clients speak at once, and a TLS session may hold what
        // came with its handshake: one read saves a wait for either.
        match framed.read() {
            Ok(()) => {}
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => {}
            Err(e) => {
                log::debug!("framed connection from {} failed: {e}", framed.conn.peer);
                close(framed.conn);
                return Admitted::Refused;
            }
        }
        return if frame(table, framed, now, env) { Admitted::Refused } else { Admitted::Held };
    }
    // On a pool whose handler hands connections back, a newcomer waits
    // for its first request with the workers, as a kept connection waits
    // for its next: the worker its bytes wake (at once, if they are in)
    // runs its handler, and the loop never sees it again.
    if env.options.idle_timeout.is_some() && table.parks_newcomers() && !super::kept::has_buffered(&conn) {
        match table.park(Kept::newcomer(conn), now, env) {
            None => return Admitted::Held,
            Some(back) => conn = *back.conn,
        }
    }
    match env.options.idle_timeout {
        // Most clients speak at once: their request is often in before
        // the accept. One look saves registering, waking and releasing.
        Some(idle) if !sys::has_input(conn.socket.as_fd()) => {
            table.hold(State::Arriving(conn, Arrival::Silent), Some(deadline_after(now, idle)), env)
        }
        _ if direct => Admitted::Ready(conn),
        _ => {
            table.spoken.push_back(conn);
            Admitted::Held
        }
    }
}

/// A connection's arrival stage ends (`step`: how; `None` for a silent
/// one that spoke). Returns whether it was turned away.
#[cfg_attr(not(all(feature = "proxy-protocol", feature = "tls")), allow(unused_variables, unused_mut))]
pub(super) fn arrived<H>(
    table: &mut Table,
    mut conn: Incoming,
    arrival: Arrival,
    step: Option<Step>,
    now: Instant,
    env: &mut Env<'_, H>,
) -> bool {
    match step {
        None | Some(Step::Through) => {}
        Some(Step::Gone) => {
            log::debug!("connection from {} closed before sending anything", conn.peer);
            close_stream(conn.socket);
            return false;
        }
        Some(Step::Failed(reason)) => {
            let counters = env.ctx.counters();
            match arrival {
                #[cfg(feature = "proxy-protocol")]
                Arrival::Header(_) => {
                    refuse(env, conn, &counters.proxy_refused, |peer| Error::ProxyHeader { peer, reason })
                }
                #[cfg(feature = "tls")]
                Arrival::Handshake(_) => refuse(env, conn, &counters.tls_failed, |peer| Error::Tls { peer, reason }),
                Arrival::Silent => close_stream(conn.socket),
            }
            return true;
        }
    }
    match arrival {
        Arrival::Silent => table.spoken.push_back(conn),
        #[cfg(feature = "proxy-protocol")]
        Arrival::Header(_) => return matches!(verify(table, conn, now, env, false), Admitted::Refused),
        #[cfg(feature = "tls")]
        Arrival::Handshake(handshake) => {
            let session = handshake.into_session();
            if let Err(reason) = env.hooks.verify_tls(&conn.peer, session.info()) {
                // The client learns its answer is complete, not cut.
                session.close_now(&conn.socket);
                refuse(env, conn, &env.ctx.counters().tls_refused, |peer| Error::TlsRefused { peer, reason });
                return true;
            }
            conn.tls = Some(Box::new(session));
            // Its first request came with the handshake: already read off
            // the socket, so waiting on the socket would not see it.
            // (A framed one reads it out of the session on its way in.)
            if env.options.framing.is_none() && conn.tls.as_ref().is_some_and(|tls| tls.has_plaintext()) {
                table.spoken.push_back(conn);
            } else {
                return matches!(ready(table, conn, now, env, false), Admitted::Refused);
            }
        }
    }
    false
}

/// Closes a connection a stage refused, counting it in `counter` and
/// reporting the error `error` makes of its peer to `handle_error`.
#[cfg(any(feature = "proxy-protocol", feature = "tls"))]
fn refuse<H>(
    env: &Env<'_, H>,
    conn: Incoming,
    counter: &crate::stats::Count,
    error: impl FnOnce(crate::Address) -> Error,
) {
    Counters::add(counter, 1);
    (env.ctx.on_error)(&error(conn.peer));
    close_stream(conn.socket);
}
