//! The `metrics` feature: a server's counters, its active gauge and its
//! request-duration histogram reach the recorder the program installed
//! (here Prometheus's, as `metrics-exporter-prometheus` renders it), under
//! the server's address and transport, and say what `stats()` says.
#![cfg(feature = "metrics")]

mod common;

use std::io::{BufRead, Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{IO_TIMEOUT, Running};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use socketserver::{Request, Stats, TcpServer, UdpServer, WorkerPool};

/// The process's one recorder, installed before any server here serves.
fn recorder() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| PrometheusBuilder::new().install_recorder().unwrap())
}

/// The value of `name` for the server at `server` over `transport`.
fn value(text: &str, name: &str, server: &str, transport: &str) -> Option<f64> {
    let (server, transport) = (format!("server=\"{server}\""), format!("transport=\"{transport}\""));
    let line =
        text.lines().find(|l| l.starts_with(&format!("{name}{{")) && l.contains(&server) && l.contains(&transport))?;
    line.rsplit(' ').next()?.parse().ok()
}

/// Every count of `stats` as the recorder has it.
fn assert_exported(stats: Stats, server: &str, transport: &str) {
    let text = recorder().render();
    let counts = [
        ("accepted", stats.accepted),
        ("served", stats.served),
        ("refused", stats.refused),
        ("errors", stats.errors),
        ("panics", stats.panics),
        ("timed_out", stats.timed_out),
        ("truncated", stats.truncated),
        ("idle_closed", stats.idle_closed),
        ("proxy_refused", stats.proxy_refused),
        ("tls_failed", stats.tls_failed),
        ("tls_refused", stats.tls_refused),
        ("cut_at_drain", stats.cut_at_drain),
        ("resource_pauses", stats.resource_pauses),
        ("too_long", stats.too_long),
    ];
    for (field, count) in counts {
        let name = format!("socketserver_{field}_total");
        assert_eq!(value(&text, &name, server, transport), Some(count as f64), "{name} for {server}:\n{text}");
    }
    assert_eq!(value(&text, "socketserver_active", server, transport), Some(stats.active as f64), "{text}");
    // Every handler run is timed: served, failed and panicked alike.
    let runs = stats.served + stats.errors + stats.panics;
    let timed = value(&text, "socketserver_request_duration_seconds_count", server, transport);
    assert_eq!(timed, Some(runs as f64), "{text}");
}

/// Answers `ok`, fails on `err`, panics on `panic`.
fn handler(req: &mut Request<'_>) -> std::io::Result<()> {
    let mut line = String::new();
    req.rfile.read_line(&mut line)?;
    match line.trim() {
        "err" => Err(std::io::Error::other("asked to fail")),
        "panic" => panic!("asked to panic"),
        _ => req.wfile.write_all(b"ok\n"),
    }
}

#[test]
fn a_tcp_servers_counters_duration_and_active_gauge_say_what_stats_says() {
    recorder();
    let turned = AtomicUsize::new(0);
    let server = TcpServer::builder(handler)
        .dispatch(WorkerPool::new(2).into())
        // Every third connection is turned away.
        .verify_request(move |_| turned.fetch_add(1, Ordering::SeqCst) % 3 != 2)
        .handle_error(|_| {})
        .bind("127.0.0.1:0")
        .unwrap();
    let stats = server.stats_handle();
    let address = server.server_address().to_string();
    let running = Running::start(server);
    for line in ["ok", "err", "x", "panic", "ok", "y", "ok"] {
        let mut conn = TcpStream::connect(running.inet()).unwrap();
        conn.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        conn.write_all(format!("{line}\n").as_bytes()).unwrap();
        let _ = conn.read_to_end(&mut Vec::new());
    }
    running.stop().unwrap();
    let stats = stats.get();
    assert_eq!((stats.accepted, stats.served, stats.refused, stats.errors, stats.panics), (7, 3, 2, 1, 1));
    assert_exported(stats, &address, "tcp");
}

#[test]
fn a_udp_servers_counters_are_labelled_udp_and_truncation_is_counted() {
    recorder();
    let server = UdpServer::builder(handler).max_packet_size(64).handle_error(|_| {}).bind("127.0.0.1:0").unwrap();
    let stats = server.stats_handle();
    let address = server.server_address().to_string();
    let running = Running::start(server);
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    client.send_to(&[b'x'; 100], running.inet()).unwrap();
    for _ in 0..3 {
        client.send_to(b"ok\n", running.inet()).unwrap();
        let mut reply = [0u8; 8];
        assert_eq!(client.recv(&mut reply).unwrap(), 3);
    }
    running.stop().unwrap();
    let stats = stats.get();
    assert_eq!((stats.served, stats.truncated), (3, 1));
    assert_exported(stats, &address, "udp");
    assert_eq!(value(&recorder().render(), "socketserver_served_total", &address, "tcp"), None);
}

/// A request in flight shows in the gauge; its end takes it off.
#[test]
fn the_active_gauge_counts_a_request_in_flight() {
    recorder();
    let server = TcpServer::builder(|req: &mut Request<'_>| {
        let mut line = String::new();
        // Held until the client closes.
        while req.rfile.read_line(&mut line)? > 0 {}
        Ok(())
    })
    .dispatch(WorkerPool::new(2).into())
    .bind("127.0.0.1:0")
    .unwrap();
    let address = server.server_address().to_string();
    let stats = server.stats_handle();
    let running = Running::start(server);
    let conn = TcpStream::connect(running.inet()).unwrap();
    common::process::eventually("the request is running", || stats.get().active == 1);
    assert_eq!(value(&recorder().render(), "socketserver_active", &address, "tcp"), Some(1.0));
    drop(conn);
    common::process::eventually("it ended", || stats.get().served == 1);
    running.stop().unwrap();
    assert_exported(stats.get(), &address, "tcp");
}
