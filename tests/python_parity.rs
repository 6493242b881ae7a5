//! Where Python's `socketserver` behaves in a way its users rely on, this
//! crate does the same (README, "From Python"): `handle_request` ends on a
//! request that is turned away, `service_actions` runs while idle, and the
//! socket behind a request is at hand.

mod common;

use std::io::{BufRead, Write};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use common::process::eventually;
use common::*;
use socketserver::transport::Transport;
use socketserver::{
    Address, Request, RequestHandler, Server, ServerBuilder, TcpServer, UdpServer, UnixDatagramServer, UnixStreamServer,
};

/// A server whose `handle_request` waits a minute and counts `handle_timeout` calls.
fn patient<T: Transport, H: RequestHandler>(
    builder: ServerBuilder<T, H>,
    timeouts: &Arc<AtomicUsize>,
) -> ServerBuilder<T, H> {
    let timeouts = Arc::clone(timeouts);
    builder.timeout(Some(Duration::from_secs(60))).handle_timeout(move || {
        timeouts.fetch_add(1, Ordering::SeqCst);
    })
}

/// Runs one `handle_request`, lets `poke` send a request, and asserts the
/// call returned (long before its minute) without calling `handle_timeout`.
fn one_handle_request_ends_on<T: Transport, H: RequestHandler>(
    what: &str,
    mut server: Server<T, H>,
    timeouts: &Arc<AtomicUsize>,
    poke: impl FnOnce(&Address),
) {
    let address = server.server_address().clone();
    let (done, finished) = mpsc::channel();
    let thread = std::thread::spawn(move || {
        done.send(server.handle_request().is_ok()).unwrap();
        server
    });
    poke(&address);
    assert_eq!(finished.recv_timeout(IO_TIMEOUT), Ok(true), "{what}: handle_request kept waiting");
    assert_eq!(timeouts.load(Ordering::SeqCst), 0, "{what}: handle_timeout was called");
    drop(thread.join().unwrap());
}

#[test]
fn a_refused_request_ends_handle_request_on_every_transport() {
    let dir = temp_dir();
    let timeouts = Arc::new(AtomicUsize::new(0));
    let refuse = |_: &Address| false;
    let stream_poke = |addr: &Address| drop(StreamClient::connect(addr).unwrap());
    let datagram_poke = |addr: &Address| DatagramClient::new(addr, dir.path()).unwrap().send(b"7\n").unwrap();

    let tcp = patient(TcpServer::builder(echo()), &timeouts).verify_request(refuse).bind("127.0.0.1:0").unwrap();
    one_handle_request_ends_on("tcp", tcp, &timeouts, stream_poke);
    let udp = patient(UdpServer::builder(echo()), &timeouts).verify_request(refuse).bind("127.0.0.1:0").unwrap();
    one_handle_request_ends_on("udp", udp, &timeouts, datagram_poke);
    let unix_stream = patient(UnixStreamServer::builder(echo()), &timeouts)
        .verify_request(refuse)
        .bind(dir.path().join("refuse-s.sock"))
        .unwrap();
    one_handle_request_ends_on("unix-stream", unix_stream, &timeouts, stream_poke);
    let unix_datagram = patient(UnixDatagramServer::builder(echo()), &timeouts)
        .verify_request(refuse)
        .bind(dir.path().join("refuse-d.sock"))
        .unwrap();
    one_handle_request_ends_on("unix-datagram", unix_datagram, &timeouts, datagram_poke);
}

#[test]
fn a_truncated_datagram_ends_handle_request() {
    let dir = temp_dir();
    let timeouts = Arc::new(AtomicUsize::new(0));
    let oversized = |addr: &Address| DatagramClient::new(addr, dir.path()).unwrap().send(&[b'7'; 100]).unwrap();
    let udp =
        patient(UdpServer::builder(echo()), &timeouts).max_packet_size(8).handle_error(|_| {}).bind("127.0.0.1:0");
    one_handle_request_ends_on("udp", udp.unwrap(), &timeouts, oversized);
    let unix = patient(UnixDatagramServer::builder(echo()), &timeouts)
        .max_packet_size(8)
        .handle_error(|_| {})
        .bind(dir.path().join("truncated.sock"));
    one_handle_request_ends_on("unix-datagram", unix.unwrap(), &timeouts, oversized);
}

#[test]
fn the_timeout_still_calls_handle_timeout() {
    let timeouts = Arc::new(AtomicUsize::new(0));
    let mut server = patient(UdpServer::builder(echo()), &timeouts)
        .timeout(Some(Duration::from_millis(50)))
        .bind("127.0.0.1:0")
        .unwrap();
    server.handle_request().unwrap();
    assert_eq!(timeouts.load(Ordering::SeqCst), 1);
}

#[test]
fn service_actions_runs_while_idle_every_poll_interval() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let server = TcpServer::builder(echo())
        .poll_interval(Some(Duration::from_millis(20)))
        .service_actions(move || {
            counter.fetch_add(1, Ordering::SeqCst);
        })
        .bind("127.0.0.1:0")
        .unwrap();
    let running = Running::start(server);
    // No client at all: the loop still passes, and calls the hook each time.
    eventually("service_actions runs three times with no traffic", || calls.load(Ordering::SeqCst) >= 3);
    running.stop().unwrap();

    // With no poll interval, an idle server does not pass through the loop.
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let server = TcpServer::builder(echo())
        .poll_interval(None)
        .service_actions(move || {
            counter.fetch_add(1, Ordering::SeqCst);
        })
        .bind("127.0.0.1:0")
        .unwrap();
    let running = Running::start(server);
    std::thread::sleep(HELD_BACK);
    assert_eq!(calls.load(Ordering::SeqCst), 0, "ran with nothing to do");
    let mut client = StreamClient::connect(&running.address).unwrap();
    assert_eq!(client.ask("x\n").unwrap(), "x\n");
    drop(client); // the sequential server's pass ends with the connection
    eventually("service_actions runs after activity", || calls.load(Ordering::SeqCst) >= 1);
    running.stop().unwrap();
}

/// The fd behind a request: the connection for streams (its peer is the
/// client), the server's socket for datagrams. Options set on it stick.
#[test]
fn a_request_exposes_its_socket() {
    let dir = temp_dir();
    let handler = |req: &mut Request<'_>| {
        let socket = req.socket();
        let fd = req.as_raw_fd();
        let local = socket.local_addr()?;
        let is_server = local.as_socket() == req.server_address().as_inet()
            || local.as_pathname() == req.server_address().as_path();
        let peer = socket.peer_addr().ok().and_then(|a| a.as_socket());
        socket.set_send_buffer_size(64 * 1024)?;
        let mut line = String::new();
        req.rfile.read_line(&mut line)?;
        writeln!(
            req.wfile,
            "fd>2:{} local-is-server:{is_server} peer:{}",
            fd > 2,
            peer.map_or("-".into(), |p| p.to_string())
        )
    };
    for (transport, kind, running) in start_every_transport(handler, socketserver::Dispatch::sequential(), dir.path()) {
        let answer = match kind {
            socketserver::Kind::Stream => {
                let mut client = StreamClient::connect(&running.address).unwrap();
                let answer = client.ask("hi\n").unwrap();
                if let (StreamClient::Tcp(tcp), Some(_)) = (&client, running.address.as_inet()) {
                    assert!(answer.contains(&format!("peer:{}", tcp.local_addr().unwrap())), "{transport}: {answer}");
                }
                answer
            }
            _ => DatagramClient::new(&running.address, dir.path()).unwrap().ask("hi\n").unwrap(),
        };
        assert!(answer.starts_with("fd>2:true local-is-server:true"), "{transport}: {answer}");
        running.stop().unwrap();
    }
}

/// A UDP server takes datagrams in batches by default; `handle_request`
/// still handles exactly one, as Python's does.
#[test]
fn handle_request_serves_one_datagram_even_when_several_wait() {
    let dir = temp_dir();
    let mut server = UdpServer::bind("127.0.0.1:0", echo()).unwrap();
    let client = DatagramClient::new(server.server_address(), dir.path()).unwrap();
    for i in 0..3 {
        client.send(format!("{i}\n").as_bytes()).unwrap();
    }
    for i in 0..3 {
        server.handle_request().unwrap();
        assert_eq!(client.recv().unwrap(), format!("{i}\n").as_bytes());
    }
    if let DatagramClient::Udp(socket, _) = &client {
        socket.set_read_timeout(Some(HELD_BACK)).unwrap();
    }
    assert!(client.recv().is_err(), "a fourth reply without a fourth request");
}
