//! What a server has done so far: counters kept with atomics (no lock, no
//! allocation per request), read as a [`Stats`] snapshot from any thread.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// A snapshot of a server's counters, from [`Server::stats`](crate::Server::stats)
/// or a [`StatsHandle`]. Counts start at zero when the server is built.
///
/// A request is counted once in `served`, `errors`, `panics` or `timed_out`
/// when it ends (in fork mode: when its child is reaped). It ends after its
/// answer went out: a client can read its answer a moment before the
/// counters move, so a `STATS` request answered right after another
/// client's answer may still count that request in `active`, and not yet
/// in `served`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Connections accepted, or datagrams received.
    pub accepted: u64,
    /// Requests whose handler completed and whose answer went out.
    pub served: u64,
    /// Requests `verify_request` turned away.
    pub refused: u64,
    /// Requests that ended with an error from the handler or its I/O.
    pub errors: u64,
    /// Requests whose handler panicked.
    pub panics: u64,
    /// Requests that ended because a read or write timed out (handler
    /// timeouts, `connection_timeout`).
    pub timed_out: u64,
    /// Datagrams dropped for being larger than `max_packet_size`.
    pub truncated: u64,
    /// Connections closed because they sent nothing within `idle_timeout`.
    pub idle_closed: u64,
    /// Connections closed, or datagrams dropped, for a missing, malformed,
    /// oversized or late PROXY protocol header (feature `proxy-protocol`).
    pub proxy_refused: u64,
    /// Connections whose TLS handshake failed or did not finish in time
    /// (feature `tls`).
    pub tls_failed: u64,
    /// TLS connections `verify_tls` turned away after their handshake
    /// (feature `tls`).
    pub tls_refused: u64,
    /// Requests cut because they still ran at the `drain_timeout` deadline
    /// (connections shut down, children killed).
    pub cut_at_drain: u64,
    /// Times accepting paused because the process ran out of fds or memory.
    pub resource_pauses: u64,
    /// Framed connections closed for a message over the framing's maximum.
    pub too_long: u64,
    /// Connections closed at once because their client held its
    /// `PerClient::connections`.
    pub over_client_connections: u64,
    /// Requests of a client over its `PerClient::rate`: datagrams dropped,
    /// connections closed at once, framed messages delayed.
    pub over_client_rate: u64,
    /// New clients refused because the per-client table was full
    /// (`WhenFull::RefuseNew`).
    pub client_table_full: u64,
    /// Requests running now: in handler threads, queued for the pool, or in
    /// children not yet reaped.
    pub active: u64,
}

impl Stats {
    /// Two servers' counts added up (a [`ServerGroup`](crate::ServerGroup)'s).
    pub(crate) fn plus(self, other: Stats) -> Stats {
        Stats {
            accepted: self.accepted + other.accepted,
            served: self.served + other.served,
            refused: self.refused + other.refused,
            errors: self.errors + other.errors,
            panics: self.panics + other.panics,
            timed_out: self.timed_out + other.timed_out,
            truncated: self.truncated + other.truncated,
            idle_closed: self.idle_closed + other.idle_closed,
            proxy_refused: self.proxy_refused + other.proxy_refused,
            tls_failed: self.tls_failed + other.tls_failed,
            tls_refused: self.tls_refused + other.tls_refused,
            cut_at_drain: self.cut_at_drain + other.cut_at_drain,
            resource_pauses: self.resource_pauses + other.resource_pauses,
            too_long: self.too_long + other.too_long,
            over_client_connections: self.over_client_connections + other.over_client_connections,
            over_client_rate: self.over_client_rate + other.over_client_rate,
            client_table_full: self.client_table_full + other.client_table_full,
            active: self.active + other.active,
        }
    }
}

/// Reads a server's [`Stats`] from any thread while it serves; from
/// [`Server::stats_handle`](crate::Server::stats_handle). Cheap to clone.
#[derive(Clone, Debug)]
pub struct StatsHandle {
    counters: Arc<Counters>,
}

impl StatsHandle {
    pub(crate) fn new(counters: Arc<Counters>) -> Self {
        StatsHandle { counters }
    }

    pub(crate) fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The counters now.
    pub fn get(&self) -> Stats {
        Stats::read(&self.counters)
    }
}

impl Stats {
    pub(crate) fn read(c: &Counters) -> Stats {
        let read = |count: &Count| count.n.load(Ordering::Relaxed);
        Stats {
            accepted: read(&c.accepted),
            served: read(&c.served),
            refused: read(&c.refused),
            errors: read(&c.errors),
            panics: read(&c.panics),
            timed_out: read(&c.timed_out),
            truncated: read(&c.truncated),
            idle_closed: read(&c.idle_closed),
            proxy_refused: read(&c.proxy_refused),
            tls_failed: read(&c.tls_failed),
            tls_refused: read(&c.tls_refused),
            cut_at_drain: read(&c.cut_at_drain),
            resource_pauses: read(&c.resource_pauses),
            too_long: read(&c.too_long),
            over_client_connections: read(&c.over_client_connections),
            over_client_rate: read(&c.over_client_rate),
            client_table_full: read(&c.client_table_full),
            active: c.active.load(Ordering::SeqCst) as u64,
        }
    }
}

/// The live counters behind [`Stats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) accepted: Count,
    pub(crate) served: Count,
    pub(crate) refused: Count,
    pub(crate) errors: Count,
    pub(crate) panics: Count,
    pub(crate) timed_out: Count,
    pub(crate) truncated: Count,
    pub(crate) idle_closed: Count,
    pub(crate) proxy_refused: Count,
    pub(crate) tls_failed: Count,
    pub(crate) tls_refused: Count,
    pub(crate) cut_at_drain: Count,
    pub(crate) resource_pauses: Count,
    pub(crate) too_long: Count,
    pub(crate) over_client_connections: Count,
    pub(crate) over_client_rate: Count,
    pub(crate) client_table_full: Count,
    /// Requests in flight: the dispatcher's capacity counts them here, as
    /// it takes and frees slots, against its limit.
    pub(crate) active: AtomicUsize,
    /// The active gauge and the duration histogram (feature `metrics`),
    /// once the server is bound.
    #[cfg(feature = "metrics")]
    pub(crate) exported: std::sync::OnceLock<crate::exported::Exported>,
}

/// One of a server's counts; with the feature `metrics`, also a counter of
/// the recorder that was installed when the server was built.
#[derive(Debug, Default)]
pub(crate) struct Count {
    n: AtomicU64,
    /// Set once, when the server is bound (its address is final then).
    #[cfg(feature = "metrics")]
    pub(crate) exported: std::sync::OnceLock<crate::exported::Counter>,
}

impl Counters {
    /// Counts one event; relaxed, as the counters order nothing else.
    pub(crate) fn add(count: &Count, n: u64) {
        count.n.fetch_add(n, Ordering::Relaxed);
        #[cfg(feature = "metrics")]
        if let Some(exported) = count.exported.get() {
            exported.increment(n);
        }
    }

    /// A request starts: one more in flight.
    pub(crate) fn started(&self) {
        self.active.fetch_add(1, Ordering::SeqCst);
        #[cfg(feature = "metrics")]
        if let Some(exported) = self.exported.get() {
            exported.active.increment(1.0);
        }
    }

    /// A request ends: one fewer in flight.
    pub(crate) fn ended(&self) {
        self.active.fetch_sub(1, Ordering::SeqCst);
        #[cfg(feature = "metrics")]
        if let Some(exported) = self.exported.get() {
            exported.active.decrement(1.0);
        }
    }

    /// Registers the counters with the recorder installed now (feature
    /// `metrics`), labelled with `server` and `transport`; once: a server
    /// exported already keeps its handles.
    #[cfg(feature = "metrics")]
    pub(crate) fn export(&self, server: &crate::Address, transport: &'static str) {
        use crate::exported;
        if self.exported.get().is_some() {
            return;
        }
        let labels = exported::labels(server, transport);
        for (count, field, help) in self.named() {
            let _ = count.exported.set(exported::counter(field, help, &labels, count.n.load(Ordering::Relaxed)));
        }
        let active = self.active.load(Ordering::SeqCst);
        let _ = self.exported.set(exported::Exported::new(&labels, active));
    }

    /// Each count with the name it is known by (its `Stats` field) and
    /// what it counts, in `Stats`' order.
    #[cfg(feature = "metrics")]
    pub(crate) fn named(&self) -> [(&Count, &'static str, &'static str); 17] {
        [
            (&self.accepted, "accepted", "Connections accepted, or datagrams received."),
            (&self.served, "served", "Requests whose handler completed and whose answer went out."),
            (&self.refused, "refused", "Requests verify_request turned away."),
            (&self.errors, "errors", "Requests that ended with an error from the handler or its I/O."),
            (&self.panics, "panics", "Requests whose handler panicked."),
            (&self.timed_out, "timed_out", "Requests that ended because a read or write timed out."),
            (&self.truncated, "truncated", "Datagrams dropped for being larger than max_packet_size."),
            (&self.idle_closed, "idle_closed", "Connections closed for sending nothing within idle_timeout."),
            (&self.proxy_refused, "proxy_refused", "Connections or datagrams refused for their PROXY header."),
            (&self.tls_failed, "tls_failed", "Connections whose TLS handshake failed or did not finish in time."),
            (&self.tls_refused, "tls_refused", "TLS connections verify_tls turned away."),
            (&self.cut_at_drain, "cut_at_drain", "Requests cut because they still ran at the drain deadline."),
            (&self.resource_pauses, "resource_pauses", "Times accepting paused for want of fds or memory."),
            (&self.too_long, "too_long", "Framed connections closed for a message over the maximum."),
            (
                &self.over_client_connections,
                "over_client_connections",
                "Connections closed at once: their client held its limit.",
            ),
            (
                &self.over_client_rate,
                "over_client_rate",
                "Requests of a client over its rate: dropped, closed or delayed.",
            ),
            (&self.client_table_full, "client_table_full", "New clients refused: the per-client table was full."),
        ]
    }
}
