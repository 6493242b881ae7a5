//! Measurements beside the load table: shutdown latency (this crate and
//! Python) and memory per idle connection in thread-per-connection mode.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use socketserver::UdpServer;

use crate::ServerProcess;
use crate::prime::PrimeService;

pub fn run() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let (p50, p99) = shutdown_latency();
    out.push((
        "shutdown() to serve_forever returning, socketserver".into(),
        format!("p50 {p50:.0} µs, p99 {p99:.0} µs"),
    ));
    match python_shutdown_latency() {
        Some((p50, p99)) => out.push((
            "shutdown() to serve_forever returning, Python".into(),
            format!("p50 {:.0} µs, p99 {:.0} µs", p50, p99),
        )),
        None => out.push(("shutdown latency, Python".into(), "skipped (no python3)".into())),
    }
    out.push(("idle TCP connections, thread each, 64 KiB stacks".into(), idle_connections()));
    out.push(("64 MiB file over TCP: sendfile vs read/write copy".into(), sendfile_vs_copy()));
    out
}

/// Sends a 64 MiB file to a loopback client five times each way; reports
/// the median throughput of `Writer::sendfile` and of a read/write loop.
fn sendfile_vs_copy() -> String {
    use socketserver::{Request, TcpServer};
    let path = std::env::temp_dir().join(format!("compare-sendfile-{}", std::process::id()));
    if std::fs::write(&path, vec![0x5au8; 64 << 20]).is_err() {
        return "skipped: cannot write the temp file".into();
    }
    let file = std::sync::Arc::new(std::fs::File::open(&path).expect("just written"));
    let zero_copy = {
        let file = file.clone();
        move |req: &mut Request<'_>| req.wfile.sendfile(&file, 0, None).map(drop)
    };
    let copy = {
        let path = path.clone();
        move |req: &mut Request<'_>| std::io::copy(&mut std::fs::File::open(&path)?, &mut req.wfile).map(drop)
    };
    let measure = |address: std::net::SocketAddr| {
        let mut sink = Vec::with_capacity(64 << 20);
        let mut times: Vec<f64> = (0..5)
            .map(|_| {
                sink.clear();
                let start = Instant::now();
                let mut conn = TcpStream::connect(address).expect("connect");
                conn.read_to_end(&mut sink).expect("read");
                assert_eq!(sink.len(), 64 << 20);
                start.elapsed().as_secs_f64()
            })
            .collect();
        times.sort_by(f64::total_cmp);
        64.0 / times[2]
    };
    let mut zero_copy_server = TcpServer::threading("127.0.0.1:0", zero_copy).expect("bind");
    let mut copy_server = TcpServer::threading("127.0.0.1:0", copy).expect("bind");
    let (a, b) =
        (zero_copy_server.server_address().as_inet().unwrap(), copy_server.server_address().as_inet().unwrap());
    let (stop_a, stop_b) = (zero_copy_server.shutdown_handle(), copy_server.shutdown_handle());
    std::thread::spawn(move || zero_copy_server.serve_forever());
    std::thread::spawn(move || copy_server.serve_forever());
    let (sendfile, copied) = (measure(a), measure(b));
    stop_a.shutdown();
    stop_b.shutdown();
    let _ = std::fs::remove_file(&path);
    format!("sendfile {sendfile:.0} MiB/s, copy {copied:.0} MiB/s, ratio {:.2}", sendfile / copied)
}

fn percentiles(mut samples: Vec<f64>) -> (f64, f64) {
    samples.sort_by(f64::total_cmp);
    let at = |p: f64| samples[((samples.len() - 1) as f64 * p).round() as usize];
    (at(0.5), at(0.99))
}

/// From `request_shutdown` to `serve_forever` having returned, 200 times.
fn shutdown_latency() -> (f64, f64) {
    let samples = (0..200)
        .map(|_| {
            let mut server = UdpServer::bind("127.0.0.1:0", PrimeService::default()).expect("bind");
            let stop = server.shutdown_handle();
            let (done, returned) = mpsc::channel();
            let serving = std::thread::spawn(move || {
                let _ = server.serve_forever();
                done.send(Instant::now()).unwrap();
            });
            // Let the loop reach poll(2): the case Python's 0.5 s interval hurts.
            std::thread::sleep(Duration::from_millis(2));
            let asked = Instant::now();
            stop.request_shutdown();
            let at = returned.recv().unwrap();
            serving.join().unwrap();
            (at - asked).as_secs_f64() * 1e6
        })
        .collect();
    percentiles(samples)
}

fn python_shutdown_latency() -> Option<(f64, f64)> {
    let script = r#"
import socketserver, threading, time
out = []
for _ in range(20):
    s = socketserver.UDPServer(("127.0.0.1", 0), socketserver.DatagramRequestHandler)
    t = threading.Thread(target=s.serve_forever); t.start()
    time.sleep(0.05)
    t0 = time.perf_counter(); s.shutdown(); t.join()
    out.append((time.perf_counter() - t0) * 1e6)
    s.server_close()
print(" ".join(f"{x:.0f}" for x in out))
"#;
    let output = Command::new("python3").args(["-c", script]).output().ok()?;
    let samples: Vec<f64> =
        String::from_utf8_lossy(&output.stdout).split_whitespace().filter_map(|s| s.parse().ok()).collect();
    (!samples.is_empty()).then(|| percentiles(samples))
}

fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status.lines().find(|l| l.starts_with(field)).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()).unwrap_or(0)
}

/// Opens many idle connections to a thread-per-connection server with
/// small stacks, checks they are all being served, reports RSS per connection.
fn idle_connections() -> String {
    let wanted: usize = std::env::var("COMPARE_IDLE").ok().and_then(|s| s.parse().ok()).unwrap_or(10_000);
    let Some(server) = ServerProcess::start("socketserver-tcp-small-stack") else {
        return "skipped: server did not start".into();
    };
    let limit = format!("--nofile={0}:{0}", wanted + 1024);
    for pid in [server.pid(), std::process::id()] {
        let raised = Command::new("prlimit").args(["--pid", &pid.to_string(), &limit]).status();
        if !raised.is_ok_and(|s| s.success()) {
            return "skipped: prlimit could not raise the fd limit".into();
        }
    }
    let threads_before = status_kib(server.pid(), "Threads:");
    let rss_before = status_kib(server.pid(), "VmRSS:");
    let mut conns = Vec::with_capacity(wanted);
    for _ in 0..wanted {
        match TcpStream::connect(server.address) {
            Ok(c) => conns.push(c),
            Err(e) => return format!("stopped at {} connections: {e}", conns.len()),
        }
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while (status_kib(server.pid(), "Threads:") as usize) < threads_before as usize + wanted {
        if Instant::now() > deadline {
            return format!("only {} handler threads after 120 s", status_kib(server.pid(), "Threads:"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let rss_after = status_kib(server.pid(), "VmRSS:");
    let step = (wanted / 10).max(1);
    let served = conns.iter_mut().step_by(step).all(|c| {
        let mut answer = [0u8; 2];
        c.set_read_timeout(Some(Duration::from_secs(10))).is_ok()
            && c.write_all(b"7\n").is_ok()
            && c.read_exact(&mut answer).is_ok()
            && &answer == b"T\n"
    });
    let per_conn = (rss_after.saturating_sub(rss_before)) as f64 / wanted as f64;
    format!("{wanted} open, all served: {served}, server RSS {per_conn:.1} KiB per connection")
}
