//! Criterion micro-benches of the per-request path: the prime handler's line
//! logic alone, and one UDP request/reply through this crate's server
//! against the same through a hand-written std loop, on loopback.

// The example's own files; benches build with cfg(test) but run no tests.
#[allow(dead_code)]
#[path = "../examples/prime/parse.rs"]
mod parse;
#[allow(dead_code)]
#[path = "../examples/prime/primality.rs"]
mod primality;
#[allow(dead_code)]
#[path = "../examples/prime/prime.rs"]
mod prime;

use std::hint::black_box;
use std::net::{SocketAddr, UdpSocket};

use criterion::{Criterion, criterion_group, criterion_main};
use socketserver::UdpServer;

fn line_logic(c: &mut Criterion) {
    let mut group = c.benchmark_group("answer");
    for line in ["97\n", "4294967291\n", "1125899906842623\n", "4j\n", "  -1_000_003 \n"] {
        group.bench_function(line.trim(), |b| b.iter(|| prime::answer(black_box(line.as_bytes()))));
    }
    group.finish();
}

fn std_loop() -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let address = socket.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut packet = [0u8; 8192];
        let mut reply = Vec::new();
        while let Ok((len, from)) = socket.recv_from(&mut packet) {
            reply.clear();
            for line in packet[..len].split_inclusive(|&b| b == b'\n') {
                reply.extend_from_slice(prime::answer(line));
            }
            let _ = socket.send_to(&reply, from);
        }
    });
    address
}

fn round_trip(c: &mut Criterion) {
    let mut server = UdpServer::bind("127.0.0.1:0", prime::PrimeService::default()).unwrap();
    let ours = server.server_address().as_inet().unwrap();
    std::thread::spawn(move || server.serve_forever());
    let theirs = std_loop();
    let mut group = c.benchmark_group("udp round trip");
    for (name, target) in [("socketserver", ours), ("std loop", theirs)] {
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client.connect(target).unwrap();
        let mut buf = [0u8; 16];
        group.bench_function(name, |b| {
            b.iter(|| {
                client.send(b"4294967291\n").unwrap();
                client.recv(&mut buf).unwrap()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, line_logic, round_trip);
criterion_main!(benches);
