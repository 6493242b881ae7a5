//! Connections from trusted peers whose PROXY header is still arriving.
//!
//! They wait in the serving loop's poll set, not in a worker, until the
//! whole header is in or its deadline passes. Each read takes only bytes
//! known to be header: the data is peeked, and what follows the header stays
//! in the kernel for the handler, so the connection needs no extra buffer
//! once it is handed on.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

use super::ProxyProtocol;
use super::header::{MAX_HEADER, Parsed, parse_stream};
use crate::adapter::{self, Incoming};
use crate::admission::{Step, sift};
use crate::options::deadline_after;
use crate::sys;

struct Waiting {
    conn: Incoming,
    expires: Instant,
    /// Header bytes already taken from the socket.
    taken: Vec<u8>,
}

/// The connections whose header is still arriving.
#[derive(Default)]
pub(crate) struct Pending {
    waiting: Vec<Waiting>,
}

impl Pending {
    /// Holds a just-accepted connection from a trusted peer until its
    /// header is in, or `timeout` from `now` passes.
    pub(crate) fn wait(&mut self, conn: Incoming, now: Instant, timeout: Duration) {
        self.waiting.push(Waiting { conn, expires: deadline_after(now, timeout), taken: Vec::new() });
    }

    /// Connections held here; they count as open.
    pub(crate) fn len(&self) -> usize {
        self.waiting.len()
    }

    /// The fds to poll, in the order [`sort`](Self::sort) expects their results.
    pub(crate) fn poll_fds(&self) -> impl Iterator<Item = BorrowedFd<'_>> {
        self.waiting.iter().map(|w| w.conn.socket.as_fd())
    }

    /// Time until the first header deadline.
    pub(crate) fn next_expiry(&self, now: Instant) -> Option<Duration> {
        self.waiting.iter().map(|w| w.expires.saturating_duration_since(now)).min()
    }

    /// Takes poll's answer (`polled`, one entry per connection in
    /// `poll_fds` order): reads what arrived, and returns the connections
    /// done with the header stage, in arrival order.
    pub(crate) fn sort(
        &mut self,
        polled: &[libc::pollfd],
        now: Instant,
        settings: &ProxyProtocol,
    ) -> Vec<(Incoming, Step)> {
        sift(&mut self.waiting, polled, |mut waiting, ready| {
            let expired = now >= waiting.expires;
            // At the deadline, look once more: bytes that came after poll count.
            let step = if ready || (expired && sys::has_input(waiting.conn.socket.as_fd())) {
                read_some(&mut waiting, settings)
            } else {
                None
            };
            let step = match step {
                Some(step) => step,
                None if expired && waiting.taken.is_empty() && !settings.is_required() => Step::Through,
                None if expired => Step::Failed(format!("no complete PROXY header within {:?}", settings.timeout())),
                None => return Err(waiting),
            };
            Ok((waiting.conn, step))
        })
    }

    /// On close: every connection still here is closed with a log line.
    pub(crate) fn close_all(&mut self) {
        for waiting in self.waiting.drain(..) {
            log::info!("server closing: closing connection from {}, whose PROXY header was not in", waiting.conn.peer);
            adapter::close_stream(waiting.conn.socket);
        }
    }
}

/// One read after poll said the socket is readable. `None`: the header is
/// not complete yet.
fn read_some(waiting: &mut Waiting, settings: &ProxyProtocol) -> Option<Step> {
    let mut peeked = [0u8; MAX_HEADER];
    let room = MAX_HEADER - waiting.taken.len();
    let n = match sys::recv_now(&waiting.conn.socket, &mut peeked[..room], true) {
        Ok(n) => n,
        Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => return None,
        Err(e) => return Some(Step::Failed(format!("reading the PROXY header failed: {e}"))),
    };
    if n == 0 {
        return Some(if waiting.taken.is_empty() {
            Step::Gone
        } else {
            Step::Failed("the connection closed inside its PROXY header".into())
        });
    }
    let before = waiting.taken.len();
    let mut seen = std::mem::take(&mut waiting.taken);
    seen.extend_from_slice(&peeked[..n]);
    let (take, step) = match parse_stream(&seen, &waiting.conn.peer) {
        Parsed::Header { len, header } => {
            waiting.conn.peer = header.client();
            waiting.conn.proxy = Some(Box::new(header));
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
        match sys::recv_now(&waiting.conn.socket, &mut seen[before..], false) {
            Ok(got) if got == take => {}
            Ok(_) => return Some(Step::Failed("the PROXY header was cut short".into())),
            Err(e) => return Some(Step::Failed(format!("reading the PROXY header failed: {e}"))),
        }
    }
    waiting.taken = seen;
    step
}
