//! Connections from trusted peers whose PROXY header is still arriving.
//!
//! They wait in the serving loop's registry, not in a worker, until the
//! whole header is in or its deadline passes. Each read takes only bytes
//! known to be header: the data is peeked, and what follows the header stays
//! in the kernel for the handler, so the connection needs no extra buffer
//! once it is handed on.

use std::io;
use std::os::fd::AsFd;

use super::step::Step;
use crate::handler_io::Incoming;
use crate::proxy::{MAX_HEADER, Parsed, ProxyProtocol, parse_stream};
use crate::sys;

/// A connection's header, as far as it has arrived.
#[derive(Default)]
pub(crate) struct HeaderRead {
    /// Header bytes already taken from the socket.
    taken: Vec<u8>,
}

impl HeaderRead {
    /// One read, after the registry said the socket is readable. `None`:
    /// the header is not complete yet.
    pub(crate) fn read(&mut self, conn: &mut Incoming, settings: &ProxyProtocol) -> Option<Step> {
        read_some(&mut self.taken, conn, settings)
    }

    /// At the header's deadline: bytes that came since the last wake-up
    /// still count; then a peer that sent nothing where the header is
    /// optional goes through, and any other is refused.
    pub(crate) fn expire(&mut self, conn: &mut Incoming, settings: &ProxyProtocol) -> Step {
        let read = if sys::has_input(conn.socket.as_fd()) { self.read(conn, settings) } else { None };
        match read {
            Some(step) => step,
            None if self.taken.is_empty() && !settings.is_required() => Step::Through,
            None => Step::Failed(format!("no complete PROXY header within {:?}", settings.timeout())),
        }
    }
}

/// One read after poll said the socket is readable. `None`: the header is
/// not complete yet.
fn read_some(taken: &mut Vec<u8>, conn: &mut Incoming, settings: &ProxyProtocol) -> Option<Step> {
    let mut peeked = [0u8; MAX_HEADER];
    let room = MAX_HEADER - taken.len();
    let n = match sys::recv_now(&conn.socket, &mut peeked[..room], true) {
        Ok(n) => n,
        Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => return None,
        Err(e) => return Some(Step::Failed(format!("reading the PROXY header failed: {e}"))),
    };
    if n == 0 {
        return Some(if taken.is_empty() {
            Step::Gone
        } else {
            Step::Failed("the connection closed inside its PROXY header".into())
        });
    }
    let before = taken.len();
    let mut seen = std::mem::take(taken);
    seen.extend_from_slice(&peeked[..n]);
    let (take, step) = match parse_stream(&seen, &conn.peer) {
        Parsed::Header { len, header } => {
            conn.peer = header.client();
            conn.proxy = Some(Box::new(header));
            (len - before, Some(Step::Through))
        }
        // Every byte seen so far belongs to the header: take them all.
        Parsed::NeedMore if seen.len() < MAX_HEADER => (n, None),
        Parsed::NeedMore => (0, Some(Step::Failed(format!("PROXY header longer than {MAX_HEADER} bytes")))),
        Parsed::Absent if before > 0 => (0, Some(Step::Failed("the bytes sent are not a PROXY header".into()))),
        Parsed::Absent if settings.is_required() => {
            (0, Some(Step::Failed("no PROXY header, and one is required from this peer".into())))
        }
        Parsed::Absent => (0, Some(Step::Through)),
        Parsed::Malformed(reason) => (0, Some(Step::Failed(reason))),
    };
    seen.truncate(before);
    if take > 0 {
        // The peeked bytes are in the socket's queue: this takes exactly them.
        seen.resize(before + take, 0);
        match sys::recv_now(&conn.socket, &mut seen[before..], false) {
            Ok(got) if got == take => {}
            Ok(_) => return Some(Step::Failed("the PROXY header was cut short".into())),
            Err(e) => return Some(Step::Failed(format!("reading the PROXY header failed: {e}"))),
        }
    }
    *taken = seen;
    step
}
