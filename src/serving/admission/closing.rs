//! How a close meets the connections the loop holds: one rule
//! ([`Closing::closes`]) for each place it meets one (held as the close
//! begins, handed back by a worker, handed back by a handler).

use std::os::fd::{AsFd, BorrowedFd};

use super::state::{Arrival, Framed, State};
use crate::sys;

/// How a server closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Closing {
    /// A stop; `wait_inside`: connections inside a message are waited for
    /// (there is a drain deadline to bound that wait).
    Stop { wait_inside: bool },
    /// A hand-over to a successor: every connection on its way to a handler
    /// is carried on.
    HandOver,
}

/// What a connection in the loop waits for, as a close sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Waiting {
    /// Its next request: nothing of one read yet.
    NextRequest,
    /// The rest of a framed message.
    RestOfMessage,
    /// Its first byte: no request yet.
    FirstByte,
}

impl Waiting {
    /// What a framed connection waits for: its next message, or the rest
    /// of the one it is sending (or, over its client's rate, its turn to
    /// send one it has sent: that one is answered as one inside a message is).
    pub(super) fn of(framed: &Framed) -> Waiting {
        if framed.inbox.is_empty() && framed.pending.is_none() { Waiting::NextRequest } else { Waiting::RestOfMessage }
    }
}

impl Closing {
    /// Whether a connection waiting as `waiting` on `fd` is closed now. One
    /// whose client already sent (bytes in the socket) is carried on.
    pub(super) fn closes(self, waiting: Waiting, fd: BorrowedFd<'_>) -> bool {
        match (self, waiting) {
            (_, Waiting::NextRequest) => !sys::has_input(fd),
            (Closing::Stop { wait_inside }, Waiting::RestOfMessage) => !wait_inside,
            (Closing::Stop { .. }, Waiting::FirstByte) => !sys::has_input(fd),
            (Closing::HandOver, Waiting::RestOfMessage | Waiting::FirstByte) => false,
        }
    }

    /// Whether a connection held in `state` is closed as the close begins.
    pub(super) fn closes_held(self, state: &State) -> bool {
        let (waiting, conn) = match state {
            State::Framed(framed) => (Waiting::of(framed), &framed.conn),
            State::Kept(conn) => (Waiting::NextRequest, conn),
            // Its request is in: answered once its turn comes, as one
            // inside a message is.
            State::Owing(conn) => (Waiting::RestOfMessage, conn),
            State::Arriving(conn, Arrival::Silent) => (Waiting::FirstByte, conn),
            // Not yet a request of any kind: a stop closes it even with bytes
            // in, which are a header or a handshake, not a request.
            #[cfg(feature = "proxy-protocol")]
            State::Arriving(_, Arrival::Header(_)) => return matches!(self, Closing::Stop { .. }),
            #[cfg(feature = "tls")]
            State::Arriving(_, Arrival::Handshake(_)) => return matches!(self, Closing::Stop { .. }),
            // Its worker hands it back, and the close meets it then.
            State::Away { .. } => return false,
        };
        self.closes(waiting, conn.socket.as_fd())
    }
}
