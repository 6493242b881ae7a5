//! Connections accepted with `idle_timeout` set, waiting in the serving loop
//! rather than in a handler: silent ones until their first byte, and ones
//! that have spoken until the dispatcher has room for them.
//!
//! A silent connection is polled on every turn, whether or not the
//! dispatcher has room, so the loop always knows who has spoken. Only a
//! connection that never sent a byte is closed at the idle deadline; one
//! that spoke waits, in arrival order, for as long as the server is busy.

use std::collections::VecDeque;
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

use crate::adapter::{self, Incoming};
use crate::options::deadline_after;
use crate::stats::Counters;
use crate::sys;

/// A connection that has not sent anything yet.
struct Silent {
    conn: Incoming,
    expires: Instant,
}

#[derive(Default)]
pub(crate) struct Parking {
    silent: Vec<Silent>,
    /// Connections with input (or a hang-up) waiting for the dispatcher.
    spoken: VecDeque<Incoming>,
}

impl Parking {
    /// Parks a connection just accepted, silent until poll says otherwise.
    pub(crate) fn park(&mut self, conn: Incoming, now: Instant, idle: Duration) {
        self.silent.push(Silent { conn, expires: deadline_after(now, idle) });
    }

    /// Queues a connection that is ready for a handler as it is: one that
    /// came through the PROXY header or TLS stages, when no idle timeout
    /// applies or its first request is already read.
    pub(crate) fn queue(&mut self, conn: Incoming) {
        self.spoken.push_back(conn);
    }

    /// Connections held here, silent or spoken; they count as open.
    pub(crate) fn len(&self) -> usize {
        self.silent.len() + self.spoken.len()
    }

    /// How many entries [`poll_fds`](Self::poll_fds) gives.
    pub(crate) fn polled(&self) -> usize {
        self.silent.len()
    }

    pub(crate) fn has_spoken(&self) -> bool {
        !self.spoken.is_empty()
    }

    /// The fds to poll, in the order [`sort`](Self::sort) expects their results.
    pub(crate) fn poll_fds(&self) -> impl Iterator<Item = BorrowedFd<'_>> {
        self.silent.iter().map(|s| s.conn.socket.as_fd())
    }

    /// Time until the first silent connection's idle deadline.
    pub(crate) fn next_expiry(&self, now: Instant) -> Option<Duration> {
        self.silent.iter().map(|s| s.expires.saturating_duration_since(now)).min()
    }

    /// Takes poll's answer for the silent connections (`polled`, one entry
    /// each, in `poll_fds` order): those with input move to the spoken
    /// queue; those silent past their deadline are closed with a log line.
    pub(crate) fn sort(&mut self, polled: &[libc::pollfd], now: Instant, counters: &Counters) {
        let spoken = &mut self.spoken;
        let mut entry = polled.iter();
        let moved = self.silent.extract_if(.., |s| {
            let ready = entry.next().is_some_and(|p| p.revents != 0);
            // A byte that came after poll returned still counts: look once
            // more before calling a connection silent.
            ready || (now >= s.expires && sys::has_input(s.conn.socket.as_fd()))
        });
        spoken.extend(moved.map(|s| s.conn));
        for silent in self.silent.extract_if(.., |s| now >= s.expires) {
            log::warn!("closing connection from {}: nothing received within the idle timeout", silent.conn.peer);
            Counters::add(&counters.idle_closed, 1);
            adapter::close_stream(silent.conn.socket);
        }
    }

    /// The connection that spoke first and is still waiting.
    pub(crate) fn next_spoken(&mut self) -> Option<Incoming> {
        self.spoken.pop_front()
    }

    /// On close: every connection still here is closed with a log line, so
    /// none is dropped unnoticed.
    pub(crate) fn close_all(&mut self) {
        for conn in self.spoken.drain(..) {
            adapter::close_unserved(conn.socket, &conn.peer);
        }
        for silent in self.silent.drain(..) {
            log::info!("server closing: closing connection from {}, which sent nothing", silent.conn.peer);
            adapter::close_stream(silent.conn.socket);
        }
    }
}
