//! The way back to the serving loop: connections handed back, framed ones
//! between messages and stream ones whose handler called
//! `Request::hand_back`, wait here for the loop to take them.

use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use super::state::{Framed, Next, close};
use crate::handler_io::Incoming;
use crate::runner::HandBack;
use crate::serving::registry::Rearmer;
use crate::waker::{Wake, Waker};

/// A connection handed back to the loop.
pub(crate) enum HandedBack {
    /// A framed connection, its message answered.
    Framed(Framed),
    /// A stream connection its handler handed back (`Request::hand_back`).
    Stream(Incoming),
}

/// Connections that workers are done with, for the loop to take back:
/// framed ones between messages, and stream ones handed back.
///
/// The common case costs the loop nothing: a connection that waits for its
/// client's next bytes is re-armed in the registry by the worker itself and
/// left here without waking the loop, which takes it when the registry
/// reports it, or on any earlier turn. The order that makes this safe is
/// written down in [`hand_back_framed`](Self::hand_back_framed).
pub(crate) struct Returns {
    conns: Mutex<Vec<HandedBack>>,
    /// Stream connections in `conns`: open, and no longer a handler's, so
    /// `max_connections` counts them here until the loop takes them.
    /// Raised before the handler's slot is freed, so never counted nowhere.
    streams: AtomicUsize,
    /// The server is closing: the loop must look at every connection that
    /// comes back (to close it, or answer what it brought), so each return
    /// wakes it.
    closing: AtomicBool,
    waker: Waker,
    rearmer: Rearmer,
}

impl Returns {
    pub(crate) fn new(waker: Waker, rearmer: Rearmer) -> Returns {
        Returns {
            conns: Mutex::new(Vec::new()),
            streams: AtomicUsize::new(0),
            closing: AtomicBool::new(false),
            waker,
            rearmer,
        }
    }

    /// A worker is done with `framed`'s message; `wake`: the loop may be
    /// waiting (a sequential server's loop is the one calling).
    ///
    /// The race: once re-armed (or registered, the first time it waits),
    /// the fd may report to the loop at once, before the connection is back
    /// in its hands. So the re-arm happens under the lock, before the push, and the loop takes returned
    /// connections (under the same lock) after each wait and before it
    /// looks at what reported: a report it sees was armed while the lock
    /// was held, so the connection is in the list by the time the loop
    /// gets the lock. The fd is open for the re-arm: the worker still owns
    /// the connection.
    pub(crate) fn hand_back_framed(&self, mut framed: Framed, wake: bool) {
        let mut conns = self.conns.lock().unwrap_or_else(PoisonError::into_inner);
        if framed.next == Next::Armed {
            let fd = framed.conn.socket.as_fd();
            let armed = match framed.key {
                Some(key) if framed.registered => self.rearmer.read(fd, key).is_ok(),
                Some(key) => self.rearmer.register(fd, key).is_ok(),
                None => false,
            };
            framed.registered |= armed;
            if armed {
                conns.push(HandedBack::Framed(framed));
                drop(conns);
                if wake && self.closing.load(Ordering::SeqCst) {
                    self.waker.wake(Wake::Returned);
                }
                return;
            }
            framed.next = Next::Loop;
        }
        conns.push(HandedBack::Framed(framed));
        drop(conns);
        if wake {
            self.waker.wake(Wake::Returned);
        }
    }

    /// Every connection handed back since the last call, in `into` (empty).
    pub(crate) fn take(&self, into: &mut Vec<HandedBack>) {
        let mut conns = self.conns.lock().unwrap_or_else(PoisonError::into_inner);
        std::mem::swap(&mut *conns, into);
        self.streams.store(0, Ordering::SeqCst);
    }

    /// From now on every return wakes the loop (see `closing`).
    pub(crate) fn closing(&self) {
        self.closing.store(true, Ordering::SeqCst);
    }

    /// Stream connections handed back and not yet taken.
    pub(crate) fn streams(&self) -> usize {
        self.streams.load(Ordering::SeqCst)
    }
}

impl HandBack for Returns {
    /// A stream handler handed its connection back; `wake` as for
    /// [`hand_back_framed`](Self::hand_back_framed). The loop registers it
    /// anew.
    fn hand_back(&self, conn: Incoming, wake: bool) {
        let mut conns = self.conns.lock().unwrap_or_else(PoisonError::into_inner);
        self.streams.fetch_add(1, Ordering::SeqCst);
        conns.push(HandedBack::Stream(conn));
        drop(conns);
        if wake {
            self.waker.wake(Wake::Returned);
        }
    }
}

impl Drop for Returns {
    /// Connections handed back after the loop's last look (a worker was
    /// still answering them when the server closed) are closed as the loop
    /// closes those it holds: over TLS with `close_notify`, so the client
    /// reads the server's end and not a cut. Framed ones are still
    /// registered: they leave the registry before they close, as every
    /// registered fd does.
    fn drop(&mut self) {
        for back in self.conns.get_mut().unwrap_or_else(PoisonError::into_inner).drain(..) {
            let conn = match back {
                HandedBack::Framed(framed) => {
                    if framed.registered {
                        self.rearmer.forget(framed.conn.socket.as_fd());
                    }
                    framed.conn
                }
                HandedBack::Stream(conn) => conn,
            };
            log::debug!("server closed: closing connection from {} between requests", conn.peer);
            close(conn);
        }
    }
}
