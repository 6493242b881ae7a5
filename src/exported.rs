//! The server's counters through the [`metrics`] facade (feature
//! `metrics`), for whichever recorder the program installed (Prometheus
//! through `metrics-exporter-prometheus`, StatsD, ...): every count of
//! [`Stats`](crate::Stats) as a counter `socketserver_<field>_total`, the
//! requests in flight as the gauge `socketserver_active`, and how long
//! handlers take as the histogram `socketserver_request_duration_seconds`,
//! each labelled `server` (its address) and `transport` (its endpoint's
//! scheme). The handles are made once, when the server is bound (or first
//! serves a socket it was given), so a request costs an atomic add per
//! count it moves, not a lookup.

use std::time::Duration;

pub(crate) use metrics::Counter;
use metrics::{Gauge, Histogram, Label};

use crate::Address;
use crate::stats::Counters;

/// The gauge and the histogram.
#[derive(Debug)]
pub(crate) struct Exported {
    pub active: Gauge,
    duration: Histogram,
}

impl Exported {
    /// A handler ran for `took`.
    pub(crate) fn handled(&self, took: Duration) {
        self.duration.record(took.as_secs_f64());
    }
}

/// Registers `counters` with the recorder installed now, labelled with
/// `server` and `transport`; once: a server exported already keeps its
/// handles.
pub(crate) fn export(counters: &Counters, server: &Address, transport: &'static str) {
    if counters.exported.get().is_some() {
        return;
    }
    let labels = [Label::new("server", server.to_string()), Label::new("transport", transport)];
    for (count, field, help) in counters.named() {
        let name = format!("socketserver_{field}_total");
        metrics::describe_counter!(name.clone(), help);
        let counter = metrics::counter!(name, labels.to_vec());
        // What was counted before (nothing, as a rule: serving starts now).
        counter.absolute(count.get());
        let _ = count.exported.set(counter);
    }
    metrics::describe_gauge!(
        "socketserver_active",
        "Requests running now: in handlers, queued for the pool, or in children."
    );
    metrics::describe_histogram!(
        "socketserver_request_duration_seconds",
        metrics::Unit::Seconds,
        "How long each request's handler ran (a stream's whole connection, a datagram, a framed message)."
    );
    let active = metrics::gauge!("socketserver_active", labels.to_vec());
    active.set(counters.active.load(std::sync::atomic::Ordering::SeqCst) as f64);
    let duration = metrics::histogram!("socketserver_request_duration_seconds", labels.to_vec());
    let _ = counters.exported.set(Exported { active, duration });
}
