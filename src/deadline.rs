//! Time limits as sockets take them: deadlines that never overflow, socket
//! timeouts that never round to "none", and each blocking operation's
//! timeout capped by its connection's deadline.

use std::io;
use std::time::{Duration, Instant};

use socket2::Socket;

/// Where a deadline lands when a timeout is too long for the clock.
const FOREVER: Duration = Duration::from_secs(30 * 365 * 24 * 60 * 60);

/// `now + timeout`, saturating: a timeout too long for the clock (say
/// `Duration::MAX`) gives a deadline decades away, never a panic.
pub(crate) fn deadline_after(now: Instant, timeout: Duration) -> Instant {
    now.checked_add(timeout).or_else(|| now.checked_add(FOREVER)).unwrap_or(now)
}

/// The shortest socket timeout: the OS counts in microseconds, and a timeout
/// that rounds to zero would mean no timeout at all.
const SHORTEST_SOCKET_TIMEOUT: Duration = Duration::from_micros(1);

/// A timeout as a socket timeout: rounded up so it stays a timeout.
pub(crate) fn socket_timeout(timeout: Duration) -> Duration {
    timeout.max(SHORTEST_SOCKET_TIMEOUT)
}

/// The server's per-operation timeouts, already set on each accepted socket.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Timeouts {
    pub read: Option<Duration>,
    pub write: Option<Duration>,
}

/// Before a blocking operation on `socket`: with a `deadline` (the
/// connection's `connection_timeout`), the socket's timeout becomes the
/// smaller of the `configured` one and the time left, and an operation
/// past the deadline fails at once. Without one the configured timeout,
/// set at accept, stands.
pub(crate) fn arm(
    socket: &Socket,
    configured: Option<Duration>,
    deadline: Option<Instant>,
    set: impl Fn(&Socket, Option<Duration>) -> io::Result<()>,
) -> io::Result<()> {
    let Some(deadline) = deadline else { return Ok(()) };
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(io::Error::new(io::ErrorKind::TimedOut, "connection deadline passed"));
    }
    set(socket, Some(socket_timeout(configured.map_or(left, |t| t.min(left)))))
}

/// A socket timeout surfaces as EAGAIN; say what it is.
pub(crate) fn timed_out(e: io::Error, what: &str) -> io::Error {
    if e.kind() == io::ErrorKind::WouldBlock {
        io::Error::new(io::ErrorKind::TimedOut, format!("{what} timed out"))
    } else {
        e
    }
}
