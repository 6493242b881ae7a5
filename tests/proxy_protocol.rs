//! The PROXY protocol (feature `proxy-protocol`) on real sockets: headers
//! from trusted peers name the client for the handler, `verify_request` and
//! the errors; anyone else's bytes are data; a bad, missing or late header
//! closes only its own connection, and a peer that never finishes its header
//! holds no worker; framed messages and kept connections after a header are
//! from the client it names. Headers are written out byte by byte here, from the
//! specification, not by the parser under test.
#![cfg(feature = "proxy-protocol")]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::process::eventually;
use common::{Errors, IO_TIMEOUT, Running, StreamClient};
use socketserver::proxy::{ProxyProtocol, tlv};
use socketserver::socket2::{Domain, Socket, Type};
use socketserver::{Dispatch, Request, TcpServer, UdpServer, UnixStreamServer};

const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

/// A v2 header for an IPv4 client: PROXY (or LOCAL) command, then TLVs.
fn v2(proxy: bool, datagram: bool, source: SocketAddr, destination: SocketAddr, tlvs: &[(u8, &[u8])]) -> Vec<u8> {
    let (SocketAddr::V4(source), SocketAddr::V4(destination)) = (source, destination) else { panic!("IPv4 only") };
    let mut body = Vec::new();
    body.extend(source.ip().octets());
    body.extend(destination.ip().octets());
    body.extend(source.port().to_be_bytes());
    body.extend(destination.port().to_be_bytes());
    for (kind, value) in tlvs {
        body.push(*kind);
        body.extend(u16::try_from(value.len()).unwrap().to_be_bytes());
        body.extend(*value);
    }
    let mut header = V2_SIGNATURE.to_vec();
    header.push(0x20 | u8::from(proxy));
    header.push(0x10 | if datagram { 2 } else { 1 });
    header.extend(u16::try_from(body.len()).unwrap().to_be_bytes());
    header.extend(body);
    header
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// Answers one line with what the server believes about the request:
/// client, original destination, authority TLV, then the line.
fn reporter() -> impl Fn(&mut Request<'_>) -> std::io::Result<()> + Send + Sync + 'static {
    |req: &mut Request<'_>| {
        let mut line = String::new();
        req.rfile.read_line(&mut line)?;
        let header = req.proxy_header();
        let destination = header.and_then(|h| h.destination_address()).map_or("-".into(), ToString::to_string);
        let authority = header.and_then(|h| h.authority()).unwrap_or("-").to_owned();
        write!(req.wfile, "{} {destination} {authority} {line}", req.client_address())
    }
}

/// A TCP connection to `server` from the loopback address `source`.
fn connect_from(source: &str, server: SocketAddr) -> TcpStream {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket.bind(&addr(&format!("{source}:0")).into()).unwrap();
    socket.connect_timeout(&server.into(), IO_TIMEOUT).unwrap();
    let stream = TcpStream::from(socket);
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

/// Sends `pieces` one write each, then reads the whole answer. A connection
/// the server refused may fail the writes; its answer is then empty.
fn exchange(mut stream: TcpStream, pieces: &[&[u8]]) -> String {
    for piece in pieces {
        if stream.write_all(piece).is_err() {
            break;
        }
    }
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut answer = String::new();
    // A refused connection may end with a reset instead of an end of stream.
    let _ = stream.read_to_string(&mut answer);
    answer
}

fn trusting_loopback_one() -> ProxyProtocol {
    ProxyProtocol::required().trust("127.0.0.1/32".parse().unwrap())
}

#[test]
fn v1_and_v2_headers_name_the_client_for_the_handler_and_verify_request() {
    let verified = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&verified);
    let server = TcpServer::builder(reporter())
        .proxy_protocol(trusting_loopback_one())
        .verify_request(move |peer| {
            seen.lock().unwrap().push(peer.to_string());
            peer.to_string() != "192.0.2.66:1"
        })
        .bind("127.0.0.1:0")
        .unwrap();
    let running = Running::start(server);
    let to = running.inet();

    // v1, with the request in the same segment as the header.
    let answer = exchange(connect_from("127.0.0.1", to), &[b"PROXY TCP4 192.0.2.7 127.0.0.9 5555 80\r\n7\n"]);
    assert_eq!(answer, "192.0.2.7:5555 127.0.0.9:80 - 7\n");

    // v2 with an authority TLV, one byte per write: the header arrives in pieces.
    let header = v2(true, false, addr("198.51.100.3:4444"), addr("127.0.0.9:443"), &[(tlv::AUTHORITY, b"example.org")]);
    let bytes: Vec<u8> = [&header[..], b"11\n"].concat();
    let pieces: Vec<&[u8]> = bytes.chunks(1).collect();
    let answer = exchange(connect_from("127.0.0.1", to), &pieces);
    assert_eq!(answer, "198.51.100.3:4444 127.0.0.9:443 example.org 11\n");

    // v2 LOCAL (a health check): the balancer is the client.
    let stream = connect_from("127.0.0.1", to);
    let own = stream.local_addr().unwrap();
    let header = v2(false, false, addr("198.51.100.3:4444"), addr("127.0.0.9:443"), &[]);
    let answer = exchange(stream, &[&header, b"13\n"]);
    assert_eq!(answer, format!("{own} - - 13\n"));

    // verify_request judges the client the header names.
    let refused = exchange(connect_from("127.0.0.1", to), &[b"PROXY TCP4 192.0.2.66 127.0.0.9 1 80\r\n7\n"]);
    assert_eq!(refused, "");
    let verified = verified.lock().unwrap().clone();
    assert_eq!(verified[..2], ["192.0.2.7:5555", "198.51.100.3:4444"]);
    assert_eq!(verified[3], "192.0.2.66:1");
    running.stop().unwrap();
}

#[test]
fn a_header_from_an_untrusted_peer_is_never_believed() {
    let running = Running::start(
        TcpServer::builder(reporter()).proxy_protocol(trusting_loopback_one()).bind("127.0.0.1:0").unwrap(),
    );
    let stream = connect_from("127.0.0.7", running.inet());
    let own = stream.local_addr().unwrap();
    let forged = b"PROXY TCP4 192.0.2.7 127.0.0.9 5555 80\r\n";
    let answer = exchange(stream, &[forged]);
    // Served as a direct client: its own address, and the forged line is its request.
    assert_eq!(answer, format!("{own} - - PROXY TCP4 192.0.2.7 127.0.0.9 5555 80\r\n"));
    running.stop().unwrap();
}

#[test]
fn a_bad_missing_or_oversized_header_closes_only_its_connection() {
    let errors = Errors::default();
    let server = TcpServer::builder(reporter())
        .proxy_protocol(trusting_loopback_one())
        .handle_error(errors.hook())
        .bind("127.0.0.1:0")
        .unwrap();
    let stats = server.stats_handle();
    let running = Running::start(server);
    let to = running.inet();

    let mut oversized = V2_SIGNATURE.to_vec();
    oversized.extend([0x21, 0x11, 0xff, 0xff]);
    oversized.extend([0u8; 6000]);
    let long_v1 = [b"PROXY TCP4 ".as_slice(), &[b'1'; 200]].concat();
    let bad: [&[u8]; 4] = [b"PROXY TCP9 1.2.3.4 5.6.7.8 1 2\r\n7\n", b"7\n", &oversized, &long_v1];
    let mut peers = Vec::new();
    for bytes in bad {
        let stream = connect_from("127.0.0.1", to);
        peers.push(stream.local_addr().unwrap().to_string());
        assert_eq!(exchange(stream, &[bytes]), "", "{:?} was served", String::from_utf8_lossy(&bytes[..20]));
    }
    // Everyone else is still served.
    let answer = exchange(connect_from("127.0.0.1", to), &[b"PROXY TCP4 192.0.2.7 127.0.0.9 5555 80\r\n7\n"]);
    assert_eq!(answer, "192.0.2.7:5555 127.0.0.9:80 - 7\n");

    eventually("four refusals are counted", || stats.get().proxy_refused == 4);
    let errors = errors.all();
    assert_eq!(errors.len(), 4, "{errors:?}");
    for (error, peer) in errors.iter().zip(&peers) {
        assert!(error.contains(peer), "{error:?} does not name {peer}");
    }
    assert!(errors[0].contains("bad PROXY v1 header"), "{errors:?}");
    assert!(errors[1].contains("no PROXY header"), "{errors:?}");
    assert!(errors[2].contains("over the 4096-byte limit"), "{errors:?}");
    // Counted once its answer went out: final once the server is closed.
    running.stop().unwrap();
    assert_eq!(stats.get().served, 1);
}

/// Silent peers from a trusted address wait in the loop, not in the one
/// worker: a real client behind them is answered at once, and they are
/// closed when their header deadline passes.
#[test]
fn peers_that_never_finish_their_header_hold_no_worker() {
    let errors = Errors::default();
    let server = TcpServer::builder(reporter())
        .dispatch(Dispatch::pool(1))
        .proxy_protocol(trusting_loopback_one().header_timeout(Duration::from_millis(1500)))
        .handle_error(errors.hook())
        .bind("127.0.0.1:0")
        .unwrap();
    let stats = server.stats_handle();
    let running = Running::start(server);
    let to = running.inet();

    let mut stalled: Vec<TcpStream> = (0..20).map(|_| connect_from("127.0.0.1", to)).collect();
    // Half stall before a byte, half in the middle of a header.
    for stream in stalled.iter_mut().step_by(2) {
        stream.write_all(b"PROXY TCP4 192.0.2.").unwrap();
    }
    let answer = exchange(connect_from("127.0.0.1", to), &[b"PROXY TCP4 192.0.2.7 127.0.0.9 5555 80\r\n7\n"]);
    assert_eq!(answer, "192.0.2.7:5555 127.0.0.9:80 - 7\n");

    for mut stream in stalled {
        let mut rest = Vec::new();
        // Closed by the server at the deadline: an end of stream, not our read timeout.
        let read = stream.read_to_end(&mut rest);
        assert!(
            matches!(&read, Ok(0)) || matches!(&read, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
            "{read:?}"
        );
    }
    eventually("the stalled peers are counted", || stats.get().proxy_refused == 20);
    assert!(errors.all().iter().all(|e| e.contains("no complete PROXY header within 1.5s")), "{:?}", errors.all());
    running.stop().unwrap();
}

#[test]
fn an_optional_header_may_be_left_out() {
    let settings = ProxyProtocol::optional().trust("127.0.0.0/8".parse().unwrap());
    let running = Running::start(TcpServer::builder(reporter()).proxy_protocol(settings).bind("127.0.0.1:0").unwrap());
    let stream = connect_from("127.0.0.1", running.inet());
    let own = stream.local_addr().unwrap();
    assert_eq!(exchange(stream, &[b"7\n"]), format!("{own} - - 7\n"));
    let answer =
        exchange(connect_from("127.0.0.1", running.inet()), &[b"PROXY TCP4 192.0.2.7 127.0.0.9 5555 80\r\n7\n"]);
    assert_eq!(answer, "192.0.2.7:5555 127.0.0.9:80 - 7\n");
    running.stop().unwrap();
}

#[test]
fn each_datagram_from_a_trusted_sender_carries_its_own_v2_header() {
    for batch in [1, 32] {
        let errors = Errors::default();
        let server = UdpServer::builder(reporter())
            .datagram_batch(batch)
            .proxy_protocol(trusting_loopback_one())
            .handle_error(errors.hook())
            .bind("127.0.0.1:0")
            .unwrap();
        let stats = server.stats_handle();
        let running = Running::start(server);
        let to = running.inet();
        let ask = |from: &UdpSocket, datagram: &[u8]| {
            from.send_to(datagram, to).unwrap();
            let mut reply = [0u8; 512];
            let n = from.recv(&mut reply).unwrap();
            String::from_utf8_lossy(&reply[..n]).into_owned()
        };
        let balancer = UdpSocket::bind("127.0.0.1:0").unwrap();
        balancer.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        for client in ["192.0.2.7:5555", "192.0.2.8:6666"] {
            let header = v2(true, true, addr(client), addr("127.0.0.9:53"), &[]);
            // The reply goes back to the balancer, which relays it.
            assert_eq!(ask(&balancer, &[&header[..], b"7\n"].concat()), format!("{client} 127.0.0.9:53 - 7\n"));
        }
        // Without a header, from a trusted sender: dropped, reported.
        balancer.send_to(b"7\n", to).unwrap();
        eventually("the headless datagram is refused", || stats.get().proxy_refused == 1);
        assert!(errors.all()[0].contains(&balancer.local_addr().unwrap().to_string()), "{:?}", errors.all());

        // From anyone else, the header is just bytes of the request.
        let stranger = UdpSocket::bind("127.0.0.7:0").unwrap();
        stranger.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let header = v2(true, true, addr("192.0.2.7:5555"), addr("127.0.0.9:53"), &[]);
        let answer = ask(&stranger, &[&header[..], b"7\n"].concat());
        assert!(answer.starts_with(&format!("{} - - ", stranger.local_addr().unwrap())), "{answer:?}");
        running.stop().unwrap();
    }
}

#[test]
fn unix_peers_can_be_trusted() {
    let dir = common::temp_dir();
    let settings = ProxyProtocol::required().trust_unix_peers(true);
    let server =
        UnixStreamServer::builder(reporter()).proxy_protocol(settings).bind(dir.path().join("p.sock")).unwrap();
    let running = Running::start(server);
    let mut client = StreamClient::connect(&running.address).unwrap();
    client.write_all(b"PROXY TCP6 2001:db8::7 ::1 5555 80\r\n7\n").unwrap();
    client.shutdown_write().unwrap();
    let mut answer = String::new();
    BufReader::new(client).read_to_string(&mut answer).unwrap();
    assert_eq!(answer, "[2001:db8::7]:5555 [::1]:80 - 7\n");
    running.stop().unwrap();
}

#[test]
fn a_setting_that_trusts_nobody_is_refused_at_bind() {
    let refused = TcpServer::builder(reporter()).proxy_protocol(ProxyProtocol::required()).bind("127.0.0.1:0");
    let Err(error) = refused else { panic!("bound anyway") };
    let error = error.to_string();
    assert!(error.contains("trusts no peer"), "{error}");
}

/// A restart hands the socket over while connections this server already
/// accepted are on their way to a handler: one mid-header, one parked
/// until it speaks. They are its own to serve, and it serves them.
#[test]
fn connections_accepted_before_a_hand_over_are_still_served() {
    let mut server = TcpServer::builder(reporter())
        .proxy_protocol(trusting_loopback_one())
        .idle_timeout(Some(IO_TIMEOUT))
        .bind("127.0.0.1:0")
        .unwrap();
    let to = server.server_address().as_inet().unwrap();
    let stats = server.stats_handle();
    let stop = server.shutdown_handle();
    let serving = std::thread::spawn(move || {
        server.serve_forever().unwrap();
        server
    });
    let mut mid_header = connect_from("127.0.0.1", to);
    mid_header.write_all(b"PROXY TCP4 192.0.2.7 ").unwrap();
    let mut parked = connect_from("127.0.0.1", to);
    parked.write_all(b"PROXY TCP4 192.0.2.8 127.0.0.9 6666 80\r\n").unwrap();
    eventually("both are accepted", || stats.get().accepted == 2);

    stop.hand_over();
    let server = serving.join().unwrap();
    let closing = std::thread::spawn(move || drop(server));
    let first = exchange(mid_header, &[b"127.0.0.9 5555 80\r\n7\n"]);
    let second = exchange(parked, &[b"8\n"]);
    closing.join().unwrap();
    assert_eq!(first, "192.0.2.7:5555 127.0.0.9:80 - 7\n");
    assert_eq!(second, "192.0.2.8:6666 127.0.0.9:80 - 8\n");
}

/// A v2 header may name an AF_UNIX client with no name (all zeros): the
/// handler sees that client, and the reply still goes to the datagram's
/// real sender, the balancer.
#[test]
fn a_udp_reply_goes_to_the_sender_whatever_client_the_header_names() {
    for batch in [1, 32] {
        let errors = Errors::default();
        let server = UdpServer::builder(reporter())
            .datagram_batch(batch)
            .proxy_protocol(trusting_loopback_one())
            .handle_error(errors.hook())
            .bind("127.0.0.1:0")
            .unwrap();
        let running = Running::start(server);
        let mut header = V2_SIGNATURE.to_vec();
        header.extend([0x21, 0x32]);
        header.extend(216u16.to_be_bytes());
        header.extend([0u8; 216]);
        let balancer = UdpSocket::bind("127.0.0.1:0").unwrap();
        balancer.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        balancer.send_to(&[&header[..], b"7\n"].concat(), running.inet()).unwrap();
        let mut reply = [0u8; 512];
        let n = balancer.recv(&mut reply).unwrap();
        assert_eq!(String::from_utf8_lossy(&reply[..n]), "(unnamed) (unnamed) - 7\n", "batch {batch}");
        assert!(errors.all().is_empty(), "{:?}", errors.all());
        running.stop().unwrap();
    }
}

/// A v1 `TCP6` header naming an IPv4-mapped client shows it as IPv4, in the
/// handler and in `verify_request`, as the trust check reads it.
#[test]
fn an_ipv4_mapped_client_is_shown_as_ipv4_everywhere() {
    let verified = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&verified);
    let server = TcpServer::builder(reporter())
        .proxy_protocol(trusting_loopback_one())
        .verify_request(move |peer| {
            seen.lock().unwrap().push(peer.to_string());
            true
        })
        .bind("127.0.0.1:0")
        .unwrap();
    let running = Running::start(server);
    let stream = connect_from("127.0.0.1", running.inet());
    let answer = exchange(stream, &[b"PROXY TCP6 ::ffff:192.0.2.8 ::1 5555 80\r\n7\n"]);
    assert_eq!(answer, "192.0.2.8:5555 [::1]:80 - 7\n");
    assert_eq!(*verified.lock().unwrap(), ["192.0.2.8:5555"]);
    running.stop().unwrap();
}

/// The split from the report: a v1 header cut right after the source port
/// (and, in turn, at every other byte) is waited for, then served.
#[test]
fn a_v1_header_split_anywhere_is_served() {
    let server = TcpServer::builder(reporter()).proxy_protocol(trusting_loopback_one()).bind("127.0.0.1:0").unwrap();
    let running = Running::start(server);
    let header = b"PROXY TCP4 192.0.2.9 127.0.0.1 5555 80\r\n";
    for split in 1..header.len() {
        let mut stream = connect_from("127.0.0.1", running.inet());
        stream.write_all(&header[..split]).unwrap();
        // Time for the server to read the first piece alone and, were it to
        // think it broken, to close the connection: reading then ends.
        stream.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let early = stream.read(&mut [0u8; 64]);
        assert!(early.is_err(), "split at {split}: refused after the first piece ({early:?})");
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let answer = exchange(stream, &[&header[split..], b"7\n"]);
        assert_eq!(answer, "192.0.2.9:5555 127.0.0.1:80 - 7\n", "split at {split}");
    }
    running.stop().unwrap();
}

/// Framing after the PROXY header: the header names the client of every
/// message the connection then carries.
#[test]
fn framed_messages_after_a_proxy_header_are_from_the_client_it_names() {
    let server = TcpServer::builder(reporter())
        .proxy_protocol(trusting_loopback_one())
        .framing(socketserver::Framing::lines(256))
        .dispatch(Dispatch::pool(2))
        .bind("127.0.0.1:0")
        .unwrap();
    let running = Running::start(server);
    let stream = connect_from("127.0.0.1", running.inet());
    let answer = exchange(stream, &[b"PROXY TCP4 192.0.2.7 127.0.0.9 5555 80\r\n7\n", b"11\n"]);
    assert_eq!(answer, "192.0.2.7:5555 127.0.0.9:80 - 7\n192.0.2.7:5555 127.0.0.9:80 - 11\n");
    running.stop().unwrap();
}

/// Kept connections after a PROXY header, on a pool whose handler hands
/// them back (with `idle_timeout`, so newcomers wait for their first request
/// with the workers too): each request is from the client its header named,
/// whether the header came alone or with the first request, and whether the
/// client ends its side with its last request or stays.
#[test]
fn kept_connections_after_a_proxy_header_are_from_the_client_it_names() {
    let kept = |req: &mut Request<'_>| {
        reporter()(req)?;
        req.hand_back();
        Ok(())
    };
    let server = TcpServer::builder(kept)
        .proxy_protocol(trusting_loopback_one())
        .dispatch(Dispatch::pool(2))
        .idle_timeout(Some(IO_TIMEOUT))
        .bind("127.0.0.1:0")
        .unwrap();
    let running = Running::start(server);
    for client in 1..=6 {
        let header = format!("PROXY TCP4 192.0.2.{client} 127.0.0.9 5555 80\r\n");
        let named = format!("192.0.2.{client}:5555 127.0.0.9:80 -");
        let mut conn = BufReader::new(connect_from("127.0.0.1", running.inet()));
        // Odd clients send their header alone, then wait: a newcomer.
        let first = match client % 2 {
            1 => {
                conn.get_mut().write_all(header.as_bytes()).unwrap();
                "a\n".to_string()
            }
            _ => format!("{header}a\n"),
        };
        for line in [first.as_str(), "b\n"] {
            conn.get_mut().write_all(line.as_bytes()).unwrap();
            let mut answer = String::new();
            conn.read_line(&mut answer).unwrap();
            let asked = line.rsplit("\r\n").next().unwrap();
            assert_eq!(answer, format!("{named} {asked}"), "client {client}");
        }
        conn.get_mut().write_all(b"c\n").unwrap();
        conn.get_mut().shutdown(std::net::Shutdown::Write).unwrap();
        let mut answer = String::new();
        let read = conn.read_to_string(&mut answer);
        assert!(read.is_ok() && answer == format!("{named} c\n"), "client {client}: {read:?} {answer:?}");
    }
    running.stop().unwrap();
}
