//! Per-client limits (`ServerBuilder::per_client`; README, "Per-client
//! limits"), on real sockets from several loopback sources: one client
//! holds its connections and no more while others are served; a flooding
//! datagram source gets its rate and no more while others are answered; a
//! pipelining framed client is slowed to its rate and loses nothing; keys
//! by PROXY header and by Unix uid; exempt clients; a full table; TLS.

mod common;

#[cfg(feature = "tls")]
#[allow(dead_code)]
#[path = "../examples/prime/tls.rs"]
mod pki;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use common::process::eventually;
use common::{IO_TIMEOUT, Running};
use socket2::{Domain, Socket, Type};
use socketserver::{Framing, PerClient, Request, TcpServer, UdpServer, UnixStreamServer, WhenFull, WorkerPool};

/// A TCP connection to `server` from the loopback address `source`.
fn connect_from(source: &str, server: SocketAddr) -> TcpStream {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket.bind(&format!("{source}:0").parse::<SocketAddr>().unwrap().into()).unwrap();
    socket.connect_timeout(&server.into(), IO_TIMEOUT).unwrap();
    let stream = TcpStream::from(socket);
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream
}

/// Whether the server closed `conn` without a word (end of stream, or a
/// reset): a refused connection.
fn closed_unanswered(mut conn: TcpStream) -> bool {
    let mut got = Vec::new();
    match conn.read_to_end(&mut got) {
        Ok(_) => got.is_empty(),
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    }
}

/// Answers each line with `ok` and the line.
fn echo(req: &mut Request<'_>) -> std::io::Result<()> {
    let mut line = String::new();
    while req.rfile.read_line(&mut line)? > 0 {
        write!(req.wfile, "ok {line}")?;
        req.wfile.flush()?;
        line.clear();
    }
    Ok(())
}

/// Whether a new connection from `source` gets `expected` for `line` (one
/// refused reads an end at once).
fn answered_anew(source: &str, server: SocketAddr, line: &str, expected: &str) -> bool {
    let mut conn = BufReader::new(connect_from(source, server));
    conn.get_mut().write_all(line.as_bytes()).unwrap();
    let mut answer = String::new();
    conn.read_line(&mut answer).is_ok_and(|_| answer == expected)
}

fn ask(conn: &mut BufReader<TcpStream>, line: &str) -> String {
    conn.get_mut().write_all(line.as_bytes()).unwrap();
    let mut answer = String::new();
    conn.read_line(&mut answer).unwrap();
    answer
}

#[test]
fn one_client_holds_its_connection_limit_while_others_are_served() {
    let server = TcpServer::builder(echo)
        .dispatch(WorkerPool::new(4).into())
        // Silent connections wait in the loop, holding no worker.
        .idle_timeout(Some(Duration::from_secs(60)))
        .per_client(PerClient::new().connections(3))
        .bind("127.0.0.1:0")
        .unwrap();
    let stats = server.stats_handle();
    let running = Running::start(server);
    let to = running.inet();
    let mut held: Vec<TcpStream> = (0..3).map(|_| connect_from("127.0.0.2", to)).collect();
    assert!(closed_unanswered(connect_from("127.0.0.2", to)), "a fourth connection of one client");
    assert_eq!(stats.get().over_client_connections, 1);
    // Everyone else is served as before.
    let mut other = BufReader::new(connect_from("127.0.0.3", to));
    assert_eq!(ask(&mut other, "7\n"), "ok 7\n");
    // One of its connections served and closed: it may open another.
    let mut first = BufReader::new(held.remove(0));
    assert_eq!(ask(&mut first, "a\n"), "ok a\n");
    drop(first);
    eventually("its connection is counted off", || answered_anew("127.0.0.2", to, "b\n", "ok b\n"));
    // Its handler reads until the client closes: close before the stop waits for it.
    drop((other, held));
    running.stop().unwrap();
}

#[test]
fn a_flooding_datagram_source_gets_its_rate_and_no_reply_past_it_while_others_are_answered() {
    let (rate, burst) = (20.0, 5);
    let server = UdpServer::builder(|req: &mut Request<'_>| req.wfile.write_all(b"T\n"))
        .per_client(PerClient::new().rate(rate, burst))
        .bind("127.0.0.1:0")
        .unwrap();
    let stats = server.stats_handle();
    let running = Running::start(server);
    let to = running.inet();
    let flooder = UdpSocket::bind("127.0.0.2:0").unwrap();
    flooder.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    let polite = UdpSocket::bind("127.0.0.3:0").unwrap();
    polite.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let started = Instant::now();
    for _ in 0..2000 {
        flooder.send_to(b"17\n", to).unwrap();
    }
    // Another client, right behind the flood, is answered every time (the
    // kernel may drop a datagram of its while the flood fills the server's
    // buffer: UDP is lossy, so it asks again).
    let mut asked = 0;
    for _ in 0..5 {
        let answered = (0..100).any(|_| {
            asked += 1;
            polite.send_to(b"17\n", to).unwrap();
            polite.recv(&mut [0u8; 8]).is_ok_and(|n| n == 2)
        });
        assert!(answered, "another client is answered");
    }
    let mut replies = 0u32;
    while flooder.recv(&mut [0u8; 8]).is_ok() {
        replies += 1;
    }
    let allowed = rate * started.elapsed().as_secs_f64() + f64::from(burst);
    assert!(f64::from(replies) <= allowed, "{replies} replies to the flood, at most {allowed:.1} allowed");
    assert!(replies >= burst, "its burst is answered: {replies}");
    running.stop().unwrap();
    let stats = stats.get();
    assert!((u64::from(replies) + 5..=u64::from(replies) + asked).contains(&stats.served), "{stats:?}");
    // The kernel may drop some of the flood itself; each the server took
    // was answered or counted.
    assert_eq!(stats.accepted, stats.served + stats.over_client_rate);
    assert!(stats.over_client_rate > 0);
}

/// A framed client pipelining past its rate is slowed, not cut: every line
/// is answered, in order, no sooner than the rate allows.
#[test]
fn a_pipelining_framed_client_is_slowed_to_its_rate_and_loses_nothing() {
    let (rate, burst, lines) = (40.0, 4, 24);
    let server = TcpServer::builder(|req: &mut Request<'_>| {
        let mut line = String::new();
        req.rfile.read_line(&mut line)?;
        write!(req.wfile, "ok {line}")
    })
    .dispatch(WorkerPool::new(2).into())
    .framing(Framing::lines(64))
    .per_client(PerClient::new().rate(rate, burst))
    .bind("127.0.0.1:0")
    .unwrap();
    let stats = server.stats_handle();
    let running = Running::start(server);
    let mut conn = BufReader::new(connect_from("127.0.0.2", running.inet()));
    let started = Instant::now();
    let all: String = (0..lines).map(|i| format!("{i}\n")).collect();
    conn.get_mut().write_all(all.as_bytes()).unwrap();
    for i in 0..lines {
        let mut answer = String::new();
        conn.read_line(&mut answer).unwrap();
        assert_eq!(answer, format!("ok {i}\n"));
    }
    let least = f64::from(lines - burst) / rate;
    assert!(started.elapsed().as_secs_f64() >= least * 0.95, "{:?} for {lines} lines", started.elapsed());
    // Another client is not held back by this one's debt.
    let mut other = BufReader::new(connect_from("127.0.0.3", running.inet()));
    assert_eq!(ask(&mut other, "x\n"), "ok x\n");
    drop((conn, other));
    running.stop().unwrap();
    let stats = stats.get();
    assert_eq!(stats.served, u64::from(lines) + 1);
    assert!(stats.over_client_rate >= 1, "{stats:?}");
}

#[test]
fn exempt_clients_are_not_limited_and_a_full_table_refuses_new_clients_when_told() {
    let exempt = PerClient::new().connections(1).exempt("127.0.0.0".parse().unwrap(), 8);
    let server = TcpServer::builder(echo).idle_timeout(Some(Duration::from_secs(60))).per_client(exempt);
    let running = Running::start(server.bind("127.0.0.1:0").unwrap());
    let held: Vec<TcpStream> = (0..3).map(|_| connect_from("127.0.0.2", running.inet())).collect();
    let mut fourth = BufReader::new(connect_from("127.0.0.2", running.inet()));
    assert_eq!(ask(&mut fourth, "e\n"), "ok e\n", "an exempt client is not limited");
    drop((held, fourth));
    running.stop().unwrap();

    let full = PerClient::new().connections(1).capacity(2).when_full(WhenFull::RefuseNew);
    let server = TcpServer::builder(echo).idle_timeout(Some(Duration::from_secs(60))).per_client(full);
    let server = server.bind("127.0.0.1:0").unwrap();
    let stats = server.stats_handle();
    let running = Running::start(server);
    let _a = connect_from("127.0.0.2", running.inet());
    let _b = connect_from("127.0.0.3", running.inet());
    assert!(closed_unanswered(connect_from("127.0.0.4", running.inet())), "a third client in a table of two");
    assert_eq!(stats.get().client_table_full, 1);
    running.stop().unwrap();
}

/// Unix peers are their uid: this process's connections share one limit,
/// unless its uid is exempt.
#[test]
fn unix_peers_are_limited_by_their_uid() {
    let uid = own_uid();
    for (limits, expect_refused) in
        [(PerClient::new().connections(2), true), (PerClient::new().connections(2).exempt_uid(uid), false)]
    {
        let dir = common::temp_dir();
        let path = dir.path().join("limited.sock");
        let server = UnixStreamServer::builder(echo)
            .idle_timeout(Some(Duration::from_secs(60)))
            .per_client(limits)
            .bind(&path)
            .unwrap();
        let stats = server.stats_handle();
        let running = Running::start(server);
        let connect = || {
            let conn = std::os::unix::net::UnixStream::connect(&path).unwrap();
            conn.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
            conn
        };
        let _held = [connect(), connect()];
        let mut third = BufReader::new(connect());
        third.get_mut().write_all(b"u\n").unwrap();
        let mut answer = String::new();
        let _ = third.read_line(&mut answer);
        assert_eq!(answer.is_empty(), expect_refused, "{answer:?}");
        drop(third);
        running.stop().unwrap();
        assert_eq!(stats.get().over_client_connections, u64::from(expect_refused));
    }
}

/// This process's uid: the owner of a file it makes.
fn own_uid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    let dir = common::temp_dir();
    std::fs::metadata(dir.path()).unwrap().uid()
}

/// Answers a line with "ok LINE" and hands its connection back.
fn ok_then_back(req: &mut Request<'_>) -> std::io::Result<()> {
    let mut line = String::new();
    req.rfile.read_line(&mut line)?;
    write!(req.wfile, "ok {line}")?;
    req.hand_back();
    Ok(())
}

/// A handler that hands its connection back has each later request
/// charged too: over the rate it waits, unread, and is answered in turn.
#[test]
fn handed_back_requests_over_the_rate_wait_their_turn() {
    let (rate, burst, asks) = (20.0, 2, 8);
    let server = TcpServer::builder(ok_then_back)
        .dispatch(WorkerPool::new(2).into())
        .per_client(PerClient::new().rate(rate, burst))
        .bind("127.0.0.1:0")
        .unwrap();
    let stats = server.stats_handle();
    let running = Running::start(server);
    let mut conn = BufReader::new(connect_from("127.0.0.2", running.inet()));
    let started = Instant::now();
    for i in 0..asks {
        assert_eq!(ask(&mut conn, &format!("{i}\n")), format!("ok {i}\n"));
    }
    // The connection took a token, and each request after it one.
    let least = f64::from(asks - burst) / rate;
    assert!(started.elapsed().as_secs_f64() >= least * 0.95, "{:?} for {asks} requests", started.elapsed());
    drop(conn);
    running.stop().unwrap();
    assert!(stats.get().over_client_rate >= 1);
    assert_eq!(stats.get().served, u64::from(asks));
}

/// On a pool whose handler hands connections back, a newcomer waits for its
/// first request with the workers (README, "Many connections"); that
/// request was charged when it connected, as a connection's first request
/// always is, and is not charged again: a client with a burst of 3 and no
/// refill to speak of is answered 3 requests on one connection, and
/// nothing is held back.
#[test]
fn a_newcomer_s_first_request_is_charged_once() {
    let server = TcpServer::builder(ok_then_back)
        .dispatch(WorkerPool::new(2).into())
        .idle_timeout(Some(Duration::from_secs(60)))
        .per_client(PerClient::new().rate(0.001, 3))
        .bind("127.0.0.1:0")
        .unwrap();
    let stats = server.stats_handle();
    let running = Running::start(server);
    // Its connection goes back: newcomers park from now on.
    for source in ["127.0.0.2", "127.0.0.3"] {
        let mut conn = BufReader::new(connect_from(source, running.inet()));
        for i in 0..3 {
            assert_eq!(ask(&mut conn, &format!("{i}\n")), format!("ok {i}\n"), "from {source}");
        }
    }
    running.stop().unwrap();
    let stats = stats.get();
    assert_eq!((stats.served, stats.over_client_rate), (6, 0), "{stats:?}");
}

/// Behind a trusted balancer, the client is the one its PROXY header names:
/// two connections naming one client share its limit, another is let in.
#[cfg(feature = "proxy-protocol")]
#[test]
fn behind_a_balancer_the_limit_is_the_proxy_headers_client() {
    use socketserver::proxy::ProxyProtocol;
    let server = TcpServer::builder(echo)
        .dispatch(WorkerPool::new(4).into())
        .proxy_protocol(ProxyProtocol::required().trust("127.0.0.1/32".parse().unwrap()))
        .per_client(PerClient::new().connections(1))
        .bind("127.0.0.1:0")
        .unwrap();
    let stats = server.stats_handle();
    let running = Running::start(server);
    let via_balancer = |client: &str| {
        let mut conn = connect_from("127.0.0.1", running.inet());
        conn.write_all(format!("PROXY TCP4 {client} 127.0.0.1 5555 80\r\n").as_bytes()).unwrap();
        BufReader::new(conn)
    };
    let mut first = via_balancer("192.0.2.1");
    assert_eq!(ask(&mut first, "a\n"), "ok a\n");
    let second = via_balancer("192.0.2.1");
    assert!(closed_unanswered(second.into_inner()), "the same client again, through the same balancer");
    let mut other = via_balancer("192.0.2.2");
    assert_eq!(ask(&mut other, "b\n"), "ok b\n", "another client through the same balancer");
    drop((first, other));
    running.stop().unwrap();
    assert_eq!(stats.get().over_client_connections, 1);
}

/// Over TLS, a client over its limit is closed before its handshake: no
/// cryptography is spent on it, and it is not a failed handshake.
#[cfg(feature = "tls")]
#[test]
fn over_tls_a_client_over_its_limit_costs_no_handshake() {
    let pki = pki::Pki::generate().unwrap();
    let config = socketserver::tls::ServerPem::bytes(pki.server_cert.clone(), pki.server_key.clone())
        .provider(pki::provider())
        .build()
        .unwrap();
    let server = TcpServer::builder(echo)
        .dispatch(WorkerPool::new(2).into())
        .tls(config)
        .per_client(PerClient::new().connections(1))
        .bind("127.0.0.1:0")
        .unwrap();
    let stats = server.stats_handle();
    let running = Running::start(server);
    let client = pki::client_config(pki.ca.as_bytes(), None).unwrap();
    let tls = |tcp: TcpStream| {
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        BufReader::new(rustls::StreamOwned::new(rustls::ClientConnection::new(client.clone(), name).unwrap(), tcp))
    };
    let mut first = tls(connect_from("127.0.0.2", running.inet()));
    first.get_mut().write_all(b"a\n").unwrap();
    let mut answer = String::new();
    first.read_line(&mut answer).unwrap();
    assert_eq!(answer, "ok a\n");
    let mut second = tls(connect_from("127.0.0.2", running.inet()));
    let refused = second.get_mut().write_all(b"b\n").and_then(|()| second.read_line(&mut String::new()));
    assert!(refused.is_err() || refused.is_ok_and(|n| n == 0), "served over its limit");
    drop(first);
    running.stop().unwrap();
    let stats = stats.get();
    assert_eq!((stats.over_client_connections, stats.tls_failed), (1, 0));
}

/// Forking: the parent counts a client's connection until the child
/// serving it exits, so a second one is refused while it runs. (The real
/// `prime` binary: a child forked from this test process would hold this
/// test's own client sockets open.)
#[test]
fn with_a_child_per_connection_the_parent_counts_it_until_the_child_exits() {
    let serve = common::process::Serve::start("tcp", "127.0.0.1:0", &["--fork", "--per-client-connections", "1"]);
    let to: SocketAddr = serve.address.parse().unwrap();
    let mut first = BufReader::new(connect_from("127.0.0.2", to));
    assert_eq!(ask(&mut first, "7\n"), "T\n");
    assert!(closed_unanswered(connect_from("127.0.0.2", to)), "a second connection while a child serves the first");
    let mut other = BufReader::new(connect_from("127.0.0.3", to));
    assert_eq!(ask(&mut other, "4\n"), "F\n", "another client");
    drop(first);
    eventually("a new connection once the child exited", || answered_anew("127.0.0.2", to, "5\n", "T\n"));
}

/// An IPv6 client is its /64 (here ::1's), limited as an IPv4 one is, and
/// named by its prefix in the log.
#[test]
fn an_ipv6_client_is_limited_by_its_prefix() {
    let Ok(server) = TcpServer::builder(echo)
        .idle_timeout(Some(Duration::from_secs(60)))
        .per_client(PerClient::new().connections(1))
        .bind("[::1]:0")
    else {
        eprintln!("no IPv6 loopback here; skipped");
        return;
    };
    let stats = server.stats_handle();
    let running = Running::start(server);
    let connect = || {
        let conn = TcpStream::connect(running.inet()).unwrap();
        conn.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        conn
    };
    let first = connect();
    assert!(closed_unanswered(connect()), "a second connection from the same /64");
    drop(first);
    running.stop().unwrap();
    assert_eq!(stats.get().over_client_connections, 1);
}
