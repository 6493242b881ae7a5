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

/// The labels of the server at `server`, over `transport`.
pub(crate) fn labels(server: &Address, transport: &'static str) -> [Label; 2] {
    [Label::new("server", server.to_string()), Label::new("transport", transport)]
}

/// The counter `socketserver_<field>_total`, described by `help`, with
/// the recorder installed now; it starts at `count` (nothing, as a rule:
/// a server is exported when it is bound).
pub(crate) fn counter(field: &str, help: &'static str, labels: &[Label], count: u64) -> Counter {
    let name = format!("socketserver_{field}_total");
    metrics::describe_counter!(name.clone(), help);
    let counter = metrics::counter!(name, labels.to_vec());
    counter.absolute(count);
    counter
}

impl Exported {
    /// The gauge (at `active` now) and the histogram, with the recorder installed now.
    pub(crate) fn new(labels: &[Label], active: usize) -> Exported {
        metrics::describe_gauge!(
            "socketserver_active",
            "Requests running now: in handlers, queued for the pool, or in children."
        );
        metrics::describe_histogram!(
            "socketserver_request_duration_seconds",
            metrics::Unit::Seconds,
            "How long each request's handler ran (a stream's whole connection, a datagram, a framed message)."
        );
        let active_gauge = metrics::gauge!("socketserver_active", labels.to_vec());
        active_gauge.set(active as f64);
        let duration = metrics::histogram!("socketserver_request_duration_seconds", labels.to_vec());
        Exported { active: active_gauge, duration }
    }
}
