//! Stream connections a handler handed back (`Request::hand_back`): held in
//! the loop between requests, and dispatched again when the next one comes;
//! on a worker pool, parked with its workers instead (`lot.rs`), where the
//! worker the next request wakes runs the handler itself.

use std::io;
use std::os::fd::AsFd;
use std::time::Instant;

use super::closing::Waiting;
use super::lot::Kept;
use super::state::{Admitted, Env, State, close};
use super::table::Table;
use crate::deadline::deadline_after;
use crate::handler_io::{Incoming, STREAM_BUFFER};
use crate::sys;

/// A stream connection its handler handed back: dispatched again at once
/// when bytes of its next request are already in, else held until it
/// speaks (under `idle_timeout` and `connection_timeout`), or closed if the
/// server is closing. Returns whether it was turned away.
pub(super) fn kept<H>(table: &mut Table, mut conn: Incoming, now: Instant, env: &Env<'_, H>) -> bool {
    if has_buffered(&conn) {
        return spoke(table, conn, now, env);
    }
    if table.closing.is_some_and(|closing| closing.closes(Waiting::NextRequest, conn.socket.as_fd())) {
        log::debug!("server closing: closing kept connection from {} between requests", conn.peer);
        close(conn);
        return false;
    }
    // On a worker pool that parks, it waits with the workers: its next
    // request wakes one, which runs its handler there.
    if table.parks() {
        match table.park(Kept::new(conn), now, env) {
            Some(back) => conn = *back.conn,
            None => return false,
        }
    }
    let idle = env.options.idle_timeout.map(|idle| deadline_after(now, idle));
    let expires = [idle, conn.deadline].into_iter().flatten().min();
    matches!(table.hold(State::Kept(conn), expires, env), Admitted::Refused)
}

/// A kept connection's next request is in: it waits for a handler, or,
/// its client over its per-client rate, for its turn, unread (its
/// `connection_timeout` still ends it). Returns whether it was turned away.
pub(super) fn spoke<H>(table: &mut Table, conn: Incoming, now: Instant, env: &Env<'_, H>) -> bool {
    match conn.client.as_ref().map(|client| client.message(now, true)) {
        Some(Err(wait)) => {
            let until = now + wait;
            let expires = conn.deadline.map_or(until, |deadline| deadline.min(until));
            matches!(table.hold(State::Owing(conn), Some(expires), env), Admitted::Refused)
        }
        _ => {
            table.spoken.push_back(conn);
            false
        }
    }
}

/// Whether a kept connection has its next request in: off its socket
/// already, or in it (see [`next_request`]).
pub(super) fn has_request(conn: &mut Incoming) -> io::Result<bool> {
    if has_buffered(conn) {
        return Ok(true);
    }
    next_request(conn)
}

/// Whether a kept connection's bytes are TLS records, which may carry no
/// plaintext (a key update, a `close_notify`): bytes in its socket are then
/// no sign of a request.
pub(super) fn encrypted(conn: &Incoming) -> bool {
    #[cfg(feature = "tls")]
    return conn.tls.is_some();
    #[cfg(not(feature = "tls"))]
    {
        let _ = conn;
        false
    }
}

/// Whether bytes of a kept connection's next request are in already, off
/// its socket: ones its last handler's reader took and left, or plaintext
/// its TLS session holds.
pub(super) fn has_buffered(conn: &Incoming) -> bool {
    #[cfg(feature = "tls")]
    let decrypted = conn.tls.as_ref().is_some_and(|tls| tls.has_plaintext());
    #[cfg(not(feature = "tls"))]
    let decrypted = false;
    !conn.buffered.is_empty() || decrypted
}

/// Whether a kept connection that reported brings a next request (`true`)
/// or its end (`false`); `WouldBlock` when nothing came after all. Over
/// plain TCP the bytes are read (into `buffered`): its handler's first read,
/// made now, and the socket's state known for its next park. Over TLS the
/// records are read (into `buffered`, as plaintext): a `close_notify` or a
/// key update alone is no request. Over a Unix socket they are peeked: a
/// read here would drop the fds passed with them.
pub(super) fn next_request(conn: &mut Incoming) -> io::Result<bool> {
    #[cfg(feature = "tls")]
    if let Some(tls) = &conn.tls {
        // Plaintext came (then its end does not matter yet), or only the end.
        tls.read_now(&conn.socket, &mut conn.buffered)?;
        return Ok(!conn.buffered.is_empty());
    }
    if !looks_by_reading(conn) {
        return sys::recv_now(&conn.socket, &mut [0], true).map(|n| n > 0);
    }
    let mut chunk = [0u8; STREAM_BUFFER];
    let read = sys::recv_now(&conn.socket, &mut chunk, false);
    conn.emptied = match read {
        Ok(n) => n > 0 && n < chunk.len(),
        Err(ref e) => e.kind() == io::ErrorKind::WouldBlock,
    };
    let n = read?;
    conn.buffered.extend_from_slice(&chunk[..n]);
    Ok(n > 0)
}

/// Whether a look for a kept connection's next request reads it (plain
/// TCP), rather than peeks (TLS, Unix; see [`next_request`]).
pub(super) fn looks_by_reading(conn: &Incoming) -> bool {
    !encrypted(conn) && !conn.peer.is_unix()
}
