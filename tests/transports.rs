//! One handler, four transports: round trips over real sockets on loopback
//! and real socket files in temp dirs.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixDatagram as StdUnixDatagram;

use common::*;
use socketserver::{Address, Kind, Request, TcpServer, UdpServer, UnixDatagramServer, UnixStreamServer};

/// Echo round trips against a running server; `dir` holds client socket files.
fn round_trips(kind: Kind, running: &Running) {
    let dir = temp_dir();
    echo_round_trips(kind, &running.address, dir.path());
}

#[test]
fn tcp_echo() {
    let running = Running::start(TcpServer::bind("127.0.0.1:0", echo()).unwrap());
    round_trips(Kind::Stream, &running);
    running.stop().unwrap();
}

#[test]
fn udp_echo() {
    let running = Running::start(UdpServer::bind("127.0.0.1:0", echo()).unwrap());
    round_trips(Kind::Datagram, &running);
    running.stop().unwrap();
}

#[test]
fn unix_stream_echo() {
    let dir = temp_dir();
    let running = Running::start(UnixStreamServer::bind(dir.path().join("s.sock"), echo()).unwrap());
    round_trips(Kind::Stream, &running);
    running.stop().unwrap();
}

#[test]
fn unix_datagram_echo() {
    let dir = temp_dir();
    let running = Running::start(UnixDatagramServer::bind(dir.path().join("d.sock"), echo()).unwrap());
    round_trips(Kind::Datagram, &running);
    running.stop().unwrap();
}

#[test]
fn tcp_ipv6_echo() {
    let Ok(server) = TcpServer::bind("[::1]:0", echo()) else {
        eprintln!("skipped: no IPv6 loopback on this machine");
        return;
    };
    let running = Running::start(server);
    assert!(running.inet().is_ipv6());
    round_trips(Kind::Stream, &running);
}

#[test]
fn udp_ipv6_echo() {
    let Ok(server) = UdpServer::bind("[::1]:0", echo()) else {
        eprintln!("skipped: no IPv6 loopback on this machine");
        return;
    };
    round_trips(Kind::Datagram, &Running::start(server));
}

#[test]
fn dual_stack_on_accepts_ipv4_mapped_clients() {
    let Ok(server) = TcpServer::builder(echo()).dual_stack(true).bind("[::]:0") else {
        eprintln!("skipped: no IPv6 on this machine");
        return;
    };
    let running = Running::start(server);
    let v4 = std::net::SocketAddr::from(([127, 0, 0, 1], running.inet().port()));
    let mut client = StreamClient::connect(&Address::Inet(v4)).unwrap();
    assert_eq!(client.ask("mapped\n").unwrap(), "mapped\n");
}

#[test]
fn dual_stack_off_leaves_the_ipv4_port_free() {
    // With IPV6_V6ONLY set, [::]:PORT does not hold 0.0.0.0:PORT, so an IPv4
    // socket can take it; dual-stack, it could not. (Checked by binding, not
    // by connecting: another test's IPv4 server may sit on the same number.)
    // The port is one IPv4 could take just before: a port another test's
    // client connection left in TIME_WAIT would refuse the IPv4 bind anyway.
    for dual_stack in [false, true] {
        let port = std::net::TcpListener::bind("0.0.0.0:0").unwrap().local_addr().unwrap().port();
        let Ok(server) = TcpServer::builder(echo()).dual_stack(dual_stack).bind(format!("[::]:{port}")) else {
            eprintln!("skipped: no IPv6 on this machine");
            return;
        };
        let v4 = std::net::TcpListener::bind(("0.0.0.0", port));
        match (dual_stack, v4) {
            (false, Ok(_)) => {}
            (true, Err(e)) => assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse),
            (false, Err(e)) => panic!("v6-only server still held the IPv4 port: {e}"),
            (true, Ok(_)) => panic!("dual-stack server left the IPv4 port free"),
        }
        drop(server);
    }
}

/// The handler sees the client's real address and the server's, and which kind of request it is.
#[test]
fn handler_sees_addresses_and_kind() {
    let report = |req: &mut Request<'_>| {
        let kind = match req.kind() {
            Kind::Stream => "stream",
            _ => "datagram",
        };
        writeln!(req.wfile, "{kind} {} {}", req.client_address(), req.server_address())
    };
    let tcp = Running::start(TcpServer::bind("127.0.0.1:0", report).unwrap());
    let mut client = std::net::TcpStream::connect(tcp.inet()).unwrap();
    let mut answer = String::new();
    client.read_to_string(&mut answer).unwrap();
    assert_eq!(answer, format!("stream {} {}\n", client.local_addr().unwrap(), tcp.address));

    let udp = Running::start(UdpServer::bind("127.0.0.1:0", report).unwrap());
    let dir = temp_dir();
    let client = DatagramClient::new(&udp.address, dir.path()).unwrap();
    let DatagramClient::Udp(socket, _) = &client else { unreachable!() };
    let expected = format!("datagram {} {}\n", socket.local_addr().unwrap(), udp.address);
    assert_eq!(client.ask("x").unwrap(), expected);
}

/// A datagram from an unbound Unix socket cannot be answered: handle_error is
/// told, with the unnamed address, and the next client is served.
#[test]
fn unix_datagram_from_unnamed_sender_is_reported_and_server_goes_on() {
    let dir = temp_dir();
    let errors = Errors::default();
    let server =
        UnixDatagramServer::builder(echo()).handle_error(errors.hook()).bind(dir.path().join("d.sock")).unwrap();
    let running = Running::start(server);

    let unnamed = StdUnixDatagram::unbound().unwrap();
    unnamed.send_to(b"who am I\n", running.path()).unwrap();

    let named = DatagramClient::new(&running.address, dir.path()).unwrap();
    assert_eq!(named.ask("still here\n").unwrap(), "still here\n");
    let errors = errors.all();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("(unnamed)"), "{errors:?}");
}

#[test]
fn tcp_16_mib_write_all_arrives_complete() {
    const SIZE: usize = 16 << 20;
    let big = |req: &mut Request<'_>| {
        let payload: Vec<u8> = (0..SIZE).map(|i| (i % 251) as u8).collect();
        req.wfile.write_all(&payload)
    };
    let running = Running::start(TcpServer::bind("127.0.0.1:0", big).unwrap());
    let mut client = StreamClient::connect(&running.address).unwrap();
    let mut got = Vec::new();
    client.read_to_end(&mut got).unwrap();
    assert_eq!(got.len(), SIZE);
    assert!(got.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
}

#[test]
fn unix_stream_16_mib_write_all_arrives_complete() {
    const SIZE: usize = 16 << 20;
    let big = |req: &mut Request<'_>| req.wfile.write_all(&vec![7u8; SIZE]);
    let dir = temp_dir();
    let running = Running::start(UnixStreamServer::bind(dir.path().join("big.sock"), big).unwrap());
    let mut client = StreamClient::connect(&running.address).unwrap();
    let mut got = Vec::new();
    client.read_to_end(&mut got).unwrap();
    assert_eq!(got.len(), SIZE);
    assert!(got.iter().all(|&b| b == 7));
}

/// Many small writes and a pipelined client: answers are flushed whenever the
/// handler would block for input, so nothing waits on a full buffer.
#[test]
fn pipelined_stream_requests_are_all_answered() {
    let running = Running::start(TcpServer::bind("127.0.0.1:0", echo()).unwrap());
    let mut client = StreamClient::connect(&running.address).unwrap();
    let mut sent = String::new();
    for i in 0..2000 {
        sent.push_str(&format!("{i}\n"));
    }
    client.write_all(sent.as_bytes()).unwrap();
    client.shutdown_write().unwrap();
    let mut got = String::new();
    client.read_to_string(&mut got).unwrap();
    assert_eq!(got, sent);
}

#[test]
fn socket_mode_sets_the_socket_files_permissions() {
    use std::os::unix::fs::PermissionsExt;
    let dir = temp_dir();
    for mode in [0o600, 0o660] {
        let path = dir.path().join(format!("mode-{mode:o}.sock"));
        let server = UnixStreamServer::builder(echo()).socket_mode(mode).bind(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, mode);
        drop(server);
    }
}

#[cfg(target_os = "linux")]
#[test]
fn abstract_unix_addresses_serve_and_leave_no_file() {
    use std::os::linux::net::SocketAddrExt;
    let name = format!("socketserver-test-{}-{}", std::process::id(), unique()).into_bytes();
    let dir = temp_dir();
    let stream = Running::start(UnixStreamServer::bind(Address::Abstract(name.clone()), echo()).unwrap());
    assert_eq!(stream.address, Address::Abstract(name.clone()));
    assert_eq!(stream.address.to_string(), format!("@{}", String::from_utf8_lossy(&name)));
    let target = std::os::unix::net::SocketAddr::from_abstract_name(&name).unwrap();
    let mut client = std::os::unix::net::UnixStream::connect_addr(&target).unwrap();
    client.write_all(b"abstract\n").unwrap();
    client.shutdown(std::net::Shutdown::Write).unwrap();
    let mut answer = String::new();
    client.read_to_string(&mut answer).unwrap();
    assert_eq!(answer, "abstract\n");

    let mut dgram_name = name.clone();
    dgram_name.extend_from_slice(b"-dgram");
    let dgram = Running::start(UnixDatagramServer::bind(Address::Abstract(dgram_name.clone()), echo()).unwrap());
    let client = StdUnixDatagram::bind(dir.path().join("c.sock")).unwrap();
    client.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let target = std::os::unix::net::SocketAddr::from_abstract_name(&dgram_name).unwrap();
    client.send_to_addr(b"abstract datagram", &target).unwrap();
    let mut buf = [0u8; 64];
    let n = client.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"abstract datagram");
    drop(dgram);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "only the client's own socket file exists");
}

/// recvmmsg/sendmmsg batching changes system calls, not semantics: every
/// datagram of a burst is one request with one reply, truncation and
/// unnamed senders are still reported, over UDP and Unix datagrams.
#[test]
fn batched_datagrams_keep_one_reply_per_request() {
    let dir = temp_dir();
    let udp_errors = Errors::default();
    let unix_errors = Errors::default();
    let servers = [
        (
            Running::start(
                UdpServer::builder(echo())
                    .datagram_batch(8)
                    .max_packet_size(1000)
                    .handle_error(udp_errors.hook())
                    .bind("127.0.0.1:0")
                    .unwrap(),
            ),
            udp_errors,
        ),
        (
            Running::start(
                UnixDatagramServer::builder(echo())
                    .datagram_batch(8)
                    .max_packet_size(1000)
                    .handle_error(unix_errors.hook())
                    .bind(dir.path().join("batch.sock"))
                    .unwrap(),
            ),
            unix_errors,
        ),
    ];
    for (running, errors) in &servers {
        let clients: Vec<DatagramClient> =
            (0..4).map(|_| DatagramClient::new(&running.address, dir.path()).unwrap()).collect();
        // Bursts larger than the batch, so several recvmmsg calls see full
        // batches, yet within what the kernel queues for one Unix datagram
        // socket (net.unix.max_dgram_qlen, 10 by default).
        for round in 0..5 {
            for (c, client) in clients.iter().enumerate() {
                for i in 0..8 {
                    client.send(format!("{round}-{c}-{i}\n").as_bytes()).unwrap();
                }
            }
            for (c, client) in clients.iter().enumerate() {
                for i in 0..8 {
                    assert_eq!(String::from_utf8(client.recv().unwrap()).unwrap(), format!("{round}-{c}-{i}\n"));
                }
            }
        }
        clients[0].send(&[b'x'; 2000]).unwrap();
        if running.address.is_unix() {
            StdUnixDatagram::unbound().unwrap().send_to(b"unnamed\n", running.path()).unwrap();
        }
        assert_eq!(clients[0].ask("after\n").unwrap(), "after\n");
        let errors = errors.all();
        let expected = if running.address.is_unix() { 2 } else { 1 };
        assert_eq!(errors.len(), expected, "{errors:?}");
        assert!(errors[0].contains("larger than max_packet_size"), "{errors:?}");
    }
}

/// Many small slices through `write_vectored` arrive intact and in order on
/// every transport (one datagram for datagram transports).
#[test]
fn vectored_writes_of_many_small_slices_arrive_intact() {
    fn parts() -> Vec<Vec<u8>> {
        (0..1200u32).map(|i| format!("{i:x}:").into_bytes().repeat((i % 7 + 1) as usize)).collect()
    }
    let handler = |req: &mut Request<'_>| {
        let parts = parts();
        let mut slices: Vec<std::io::IoSlice<'_>> = parts.iter().map(|p| std::io::IoSlice::new(p)).collect();
        let mut rest = &mut slices[..];
        while !rest.is_empty() {
            let written = req.wfile.write_vectored(rest)?;
            std::io::IoSlice::advance_slices(&mut rest, written);
        }
        Ok(())
    };
    let expected = parts().concat();
    assert!(expected.len() > 16 * 1024 && expected.len() < 60 * 1024, "{}", expected.len());
    let dir = temp_dir();
    for (transport, kind, running) in start_every_transport(handler, socketserver::Dispatch::sequential(), dir.path()) {
        let got = match kind {
            Kind::Stream => {
                let mut client = StreamClient::connect(&running.address).unwrap();
                client.shutdown_write().unwrap();
                let mut got = Vec::new();
                client.read_to_end(&mut got).unwrap();
                got
            }
            _ => {
                let client = DatagramClient::new(&running.address, dir.path()).unwrap();
                client.send(b"go").unwrap();
                client.recv().unwrap()
            }
        };
        assert!(got == expected, "{transport}: {} of {} bytes", got.len(), expected.len());
    }
}
