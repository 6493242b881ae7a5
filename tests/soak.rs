//! A bounded soak: several clients send a mix of valid and invalid requests
//! over TCP and UDP to real `prime serve` processes for a minute (SOAK_SECS
//! overrides). Zero wrong answers, no server errors, and the servers' fd and
//! thread counts end where they started. Ignored by everyday `cargo test`;
//! `.ci/run` runs it.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::process::*;
use common::*;

/// Requests with the answers they must get: primes, composites, and what
/// Python's int() rejects.
const CASES: [(&str, &str); 16] = [
    ("2", "T"),
    ("97", "T"),
    ("-7", "F"),
    ("0", "F"),
    ("1_000_003", "T"),
    ("4294967291", "T"),
    ("4294967297", "F"),
    ("18446744073709551557", "T"),
    ("170141183460469231731687303715884105727", "T"),
    ("561", "F"),
    ("  +13  ", "T"),
    ("4j", "E"),
    ("1.0", "E"),
    ("", "E"),
    ("1__0", "E"),
    ("0x10", "E"),
];

fn soak_duration() -> Duration {
    Duration::from_secs(std::env::var("SOAK_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(60))
}

#[test]
#[ignore = "a one-minute soak; .ci/run runs it"]
fn a_minute_of_mixed_traffic_over_tcp_and_udp() {
    let dir = temp_dir();
    let tcp_log = dir.path().join("tcp.log");
    let udp_log = dir.path().join("udp.log");
    let tcp = Serve::start_logged(
        "tcp",
        "127.0.0.1:0",
        &["--threads", "--timeout", "5"],
        std::fs::File::create(&tcp_log).unwrap(),
    );
    let udp = Serve::start_logged("udp", "127.0.0.1:0", &["--workers", "4"], std::fs::File::create(&udp_log).unwrap());

    // Warm up, then take the baseline.
    run_clients(&tcp.address, &udp.address, Duration::from_secs(1));
    let baseline = [(fds(tcp.pid()), threads(tcp.pid())), (fds(udp.pid()), threads(udp.pid()))];

    let answered = run_clients(&tcp.address, &udp.address, soak_duration());
    eprintln!("soak: {answered} requests answered correctly");
    assert!(answered > 1000, "only {answered} requests in the soak");

    for ((fd_base, thread_base), serve) in baseline.iter().zip([&tcp, &udp]) {
        eventually("fd and thread counts return to their baseline", || {
            fds(serve.pid()) <= *fd_base && threads(serve.pid()) <= *thread_base
        });
    }
    for log in [tcp_log, udp_log] {
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(!text.contains("ERROR") && !text.contains("WARN"), "server log {}:\n{text}", log.display());
    }
}

/// Four TCP and four UDP clients for `duration`; panics on any wrong or
/// missing answer, returns how many were right.
fn run_clients(tcp: &str, udp: &str, duration: Duration) -> u64 {
    let answered = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + duration;
    let mut clients = Vec::new();
    for id in 0..4usize {
        let (tcp, count) = (tcp.to_string(), answered.clone());
        clients.push(std::thread::spawn(move || {
            let mut i = id;
            while Instant::now() < until {
                // A new connection every 50 requests, pipelining 10 at a time.
                let conn = TcpStream::connect(&tcp).unwrap();
                conn.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut writer = conn;
                for _ in 0..5 {
                    let batch: Vec<usize> = (0..10).map(|k| (i + k * 7) % CASES.len()).collect();
                    let request: String = batch.iter().map(|&c| format!("{}\n", CASES[c].0)).collect();
                    writer.write_all(request.as_bytes()).unwrap();
                    for &c in &batch {
                        let mut line = String::new();
                        reader.read_line(&mut line).unwrap();
                        assert_eq!(line.trim_end(), CASES[c].1, "tcp: {:?}", CASES[c].0);
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                    i += 1;
                }
            }
        }));
        let (udp, count) = (udp.to_string(), answered.clone());
        clients.push(std::thread::spawn(move || {
            let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
            socket.connect(&udp).unwrap();
            socket.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
            let mut i = id;
            let mut reply = [0u8; 1024];
            while Instant::now() < until {
                let c = i % CASES.len();
                socket.send(format!("{}\n", CASES[c].0).as_bytes()).unwrap();
                let n = socket.recv(&mut reply).unwrap();
                assert_eq!(String::from_utf8_lossy(&reply[..n]).trim_end(), CASES[c].1, "udp: {:?}", CASES[c].0);
                count.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
        }));
    }
    for client in clients {
        client.join().expect("a soak client failed");
    }
    answered.load(Ordering::Relaxed)
}
