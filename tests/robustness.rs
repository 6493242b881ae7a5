//! What the server guarantees under bad input and faults (README, "What the
//! server guarantees"): each guarantee, proved against real sockets and, where
//! it takes a process, the real `prime serve` binary.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::process::*;
use common::*;
use socketserver::{Dispatch, Error, Request, TcpServer, UdpServer, UnixDatagramServer};

#[test]
fn two_hundred_silent_connections_cannot_starve_a_pool_of_four() {
    let errors = Errors::default();
    let server = TcpServer::builder(echo())
        .dispatch(Dispatch::pool(4))
        .idle_timeout(Some(Duration::from_secs(1)))
        .handler_timeout(Some(Duration::from_secs(1)))
        .handle_error(errors.hook())
        .bind("127.0.0.1:0")
        .unwrap();
    let running = Running::start(server);
    let mut silent: Vec<StreamClient> = (0..200).map(|_| StreamClient::connect(&running.address).unwrap()).collect();

    // Served at once, not after the silent ones' timeouts (50 s of them for 4 workers).
    let mut client = StreamClient::connect(&running.address).unwrap();
    assert_eq!(client.ask("still served\n").unwrap(), "still served\n");
    drop(client);

    // Every silent connection is closed by the server: end of stream.
    for (i, conn) in silent.iter_mut().enumerate() {
        let mut buf = [0u8; 1];
        assert_eq!(conn.read(&mut buf).unwrap_or(0), 0, "silent connection {i} was never closed");
    }
    running.stop().unwrap();
    assert!(errors.all().is_empty(), "{:?}", errors.all());
}

#[test]
fn a_slow_loris_is_cut_off_by_the_connection_deadline() {
    let server = TcpServer::builder(echo())
        .dispatch(Dispatch::pool(1))
        .read_timeout(Some(Duration::from_secs(5)))
        .connection_timeout(Some(Duration::from_millis(500)))
        .bind("127.0.0.1:0")
        .unwrap();
    let running = Running::start(server);
    let mut loris = StreamClient::connect(&running.address).unwrap();
    // One byte every 100 ms never trips the 5 s read timeout; only the deadline ends it.
    let cut = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        loris.write_all(b"x").is_err() || loris_closed(&mut loris)
    });
    assert!(cut, "the trickling client was never disconnected");
    // The only worker is free again.
    let mut next = StreamClient::connect(&running.address).unwrap();
    assert_eq!(next.ask("next\n").unwrap(), "next\n");
}

/// True once the server has closed the connection (not merely no data yet).
fn loris_closed(conn: &mut StreamClient) -> bool {
    conn.set_read_timeout(Duration::from_millis(1)).unwrap();
    let mut buf = [0u8; 1];
    let closed = match conn.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
    };
    conn.set_read_timeout(IO_TIMEOUT).unwrap();
    closed
}

#[test]
fn an_8_mib_line_without_newline_is_answered_e_and_memory_stays_bounded() {
    let serve = Serve::start("tcp", "127.0.0.1:0", &["--threads"]);
    let before = rss_kib(serve.pid());
    let mut client = TcpStream::connect(&serve.address).unwrap();
    client.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut reader = client.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let chunk = vec![b'7'; 64 * 1024];
        for _ in 0..128 {
            if client.write_all(&chunk).is_err() {
                return; // the server closed the connection: expected
            }
        }
    });
    let mut answer = Vec::new();
    let _ = reader.read_to_end(&mut answer); // a reset after the answer is expected
    sender.join().unwrap();
    assert_eq!(String::from_utf8_lossy(&answer), "E\n", "answered, then closed");
    let growth = rss_kib(serve.pid()).saturating_sub(before);
    assert!(growth < 4 * 1024, "server RSS grew by {growth} KiB");

    let out = Command::new(prime_binary()).args(["ask", "tcp", &serve.address, "13"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "13 T\n");
}

#[test]
fn accept_survives_running_out_of_file_descriptors() {
    let command = format!("ulimit -n 24 && exec '{}' serve tcp 127.0.0.1:0 --threads", prime_binary().display());
    let serve = Serve::from_command(Command::new("sh").args(["-c", &command]).stderr(std::process::Stdio::null()));
    let ask = |conn: &mut TcpStream| -> bool {
        conn.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        let mut answer = [0u8; 2];
        conn.write_all(b"7\n").is_ok() && conn.read_exact(&mut answer).is_ok() && &answer == b"T\n"
    };
    // Hold connections open until the server cannot accept another.
    let mut held = Vec::new();
    let starved = (0..64).any(|_| {
        let mut conn = TcpStream::connect(&serve.address).unwrap();
        let answered = ask(&mut conn);
        held.push(conn);
        !answered
    });
    assert!(starved, "the fd limit was never reached");

    // Starved, it must back off rather than spin on EMFILE.
    let ticks = cpu_ticks(serve.pid());
    std::thread::sleep(Duration::from_secs(1));
    let spent = cpu_ticks(serve.pid()) - ticks;
    assert!(spent < 30, "the starved server used {spent} ticks of CPU in one second");

    // Fds free up: it serves again, the connection that waited included.
    let waiting = held.pop().unwrap();
    drop(held);
    let mut waiting = waiting;
    waiting.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut answer = [0u8; 2];
    waiting.read_exact(&mut answer).unwrap();
    assert_eq!(&answer, b"T\n", "the connection that waited in the backlog is served");
    let out = Command::new(prime_binary()).args(["ask", "tcp", &serve.address, "11"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "11 T\n");
}

#[test]
fn an_oversized_datagram_is_reported_and_not_served_truncated() {
    let dir = temp_dir();
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = calls.clone();
    let handler = move |req: &mut Request<'_>| {
        counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        std::io::copy(&mut req.rfile, &mut req.wfile).map(drop)
    };
    let udp_errors = Errors::default();
    let unix_errors = Errors::default();
    let servers = [
        (
            Running::start(
                UdpServer::builder(handler.clone()).handle_error(udp_errors.hook()).bind("127.0.0.1:0").unwrap(),
            ),
            udp_errors,
        ),
        (
            Running::start(
                UnixDatagramServer::builder(handler)
                    .handle_error(unix_errors.hook())
                    .max_packet_size(1000)
                    .bind(dir.path().join("big.sock"))
                    .unwrap(),
            ),
            unix_errors,
        ),
    ];
    for (running, errors) in &servers {
        let client = DatagramClient::new(&running.address, dir.path()).unwrap();
        client.send(&vec![b'x'; 9000]).unwrap();
        assert_eq!(client.ask("small").unwrap(), "small", "the next datagram is served, and only it");
        let errors = errors.all();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].contains("larger than max_packet_size"), "{errors:?}");
    }
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2, "the oversized datagrams never reached the handler");
}

#[test]
fn the_truncation_error_names_the_sender() {
    let (tx, rx) = std::sync::mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    let server = UdpServer::builder(echo())
        .max_packet_size(16)
        .handle_error(move |e: &Error| tx.lock().unwrap().send(e.client_address().cloned()).unwrap())
        .bind("127.0.0.1:0")
        .unwrap();
    let running = Running::start(server);
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.send_to(&[0u8; 17], running.inet()).unwrap();
    let reported = rx.recv_timeout(IO_TIMEOUT).unwrap();
    assert_eq!(reported.and_then(|a| a.as_inet()), Some(socket.local_addr().unwrap()));
}

#[test]
fn ten_thousand_connect_close_cycles_and_resets_leak_no_fd() {
    let serve = Serve::start("tcp", "127.0.0.1:0", &["--threads"]);
    let baseline = fds(serve.pid());
    for _ in 0..10_000 {
        drop(TcpStream::connect(&serve.address).unwrap());
    }
    for _ in 0..10_000 {
        let conn = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        conn.connect(&serve.address.parse::<std::net::SocketAddr>().unwrap().into()).unwrap();
        conn.set_linger(Some(Duration::ZERO)).unwrap(); // close sends RST
        let _ = (&conn).write_all(b"12345"); // mid-request: no newline yet
        drop(conn);
    }
    eventually("the server's fd count is back to its baseline", || fds(serve.pid()) <= baseline);
    let out = Command::new(prime_binary()).args(["ask", "tcp", &serve.address, "2"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "2 T\n");
}

#[test]
fn a_peer_that_closes_before_reading_the_reply_costs_one_error() {
    let errors = Errors::default();
    let gate = std::sync::Arc::new(std::sync::Barrier::new(2));
    let handler_gate = gate.clone();
    let handler = move |req: &mut Request<'_>| {
        let mut line = String::new();
        std::io::BufRead::read_line(&mut req.rfile, &mut line)?;
        handler_gate.wait(); // the client is gone by now
        for _ in 0..64 {
            req.wfile.write_all(&[b'x'; 64 * 1024])?;
        }
        Ok(())
    };
    let server = TcpServer::builder(handler).handle_error(errors.hook()).bind("127.0.0.1:0").unwrap();
    let running = Running::start(server);
    let mut conn = TcpStream::connect(running.inet()).unwrap();
    conn.write_all(b"go\n").unwrap();
    conn.shutdown(Shutdown::Both).unwrap();
    drop(conn);
    gate.wait();
    let mut next = StreamClient::connect(&running.address).unwrap();
    next.write_all(b"again\n").unwrap();
    // The second client also goes away; the server serves on regardless.
    drop(next);
    gate.wait();
    running.stop().unwrap();
    let errors = errors.all();
    assert_eq!(errors.len(), 2, "one error per vanished peer: {errors:?}");
}

#[test]
fn nothing_a_peer_sends_stops_the_server() {
    let dir = temp_dir();
    let path = dir.path().join("fuzz.sock");
    let udp = Serve::start("udp", "127.0.0.1:0", &[]);
    let unix = Serve::start("unix-datagram", path.to_str().unwrap(), &[]);
    let tcp = Serve::start("tcp", "127.0.0.1:0", &[]);
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let unnamed = std::os::unix::net::UnixDatagram::unbound().unwrap();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for round in 0..300 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let len = (seed % 2000) as usize * usize::from(round % 10 != 0); // every tenth one empty
        let payload: Vec<u8> = (0..len).map(|i| (seed >> (i % 56)) as u8).collect();
        socket.send_to(&payload, &udp.address).unwrap();
        let _ = unnamed.send_to(&payload, &path);
        if let Ok(mut conn) = TcpStream::connect(&tcp.address) {
            let _ = conn.write_all(&payload);
        }
    }
    // A UDP receive queue still full of garbage drops the question, as the
    // kernel drops any datagram that finds no room: that is UDP, not a
    // stopped server. So ask once the server has read everything sent.
    let port: u16 = udp.address.rsplit_once(':').unwrap().1.parse().unwrap();
    eventually("the UDP server has read every datagram sent", || udp_receive_queue(port) == Some(0));
    for (kind, serve) in [("udp", &udp), ("unix-datagram", &unix), ("tcp", &tcp)] {
        let out = Command::new(prime_binary()).args(["ask", kind, &serve.address, "97"]).output().unwrap();
        let said = String::from_utf8_lossy(&out.stderr);
        assert_eq!(String::from_utf8_lossy(&out.stdout), "97 T\n", "{kind} after garbage; the client said {said}");
    }
}

/// Handlers that block until their client sends a second line; the clients
/// never do, so only a drain deadline can end them.
fn blocked_handlers_are_cut_at_the_drain_deadline(dispatch: Dispatch, clients: usize) {
    captured_log();
    let handler = |req: &mut Request<'_>| {
        let mut line = String::new();
        std::io::BufRead::read_line(&mut req.rfile, &mut line)?;
        req.wfile.write_all(line.as_bytes())
    };
    let reported = Arc::new(Mutex::new(Vec::new()));
    let errors = Arc::clone(&reported);
    let mut server = TcpServer::builder(handler)
        .dispatch(dispatch)
        .drain_timeout(Some(Duration::from_secs(1)))
        .handle_error(move |e| errors.lock().unwrap().push(e.to_string()))
        .bind("127.0.0.1:0")
        .unwrap();
    let stats = server.stats_handle();
    // First in line, so even a one-worker pool gets to it before the blocked ones.
    let mut quick = TcpStream::connect(server.server_address().as_inet().unwrap()).unwrap();
    quick.write_all(b"quick\n").unwrap();
    let mut conns: Vec<TcpStream> =
        (0..clients).map(|_| TcpStream::connect(server.server_address().as_inet().unwrap()).unwrap()).collect();
    for _ in 0..=clients {
        server.handle_request().unwrap();
    }
    let peers: Vec<String> = conns.iter().map(|c| c.local_addr().unwrap().to_string()).collect();
    server.server_close();

    let mut answer = String::new();
    quick.read_to_string(&mut answer).unwrap();
    assert_eq!(answer, "quick\n", "the request that could finish was answered");
    for conn in &mut conns {
        conn.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let mut rest = Vec::new();
        assert!(conn.read_to_end(&mut rest).map_or(true, |n| n == 0), "a cut connection is closed");
    }
    let log = captured_log();
    let reported = reported.lock().unwrap();
    for peer in peers {
        assert!(
            log.iter().any(|l| l.contains("drain timeout passed") && l.contains(&peer)),
            "no log line for {peer}: {log:?}"
        );
        assert!(
            reported.iter().any(|e| e.contains("cut") && e.contains(&peer)),
            "handle_error never heard of {peer}: {reported:?}"
        );
    }
    // Each request counted once: a cut one is not also served.
    let s = stats.get();
    assert_eq!((s.served, s.cut_at_drain, s.errors), (1, clients as u64, 0), "{s:?}");
}

#[test]
fn drain_timeout_cuts_what_is_still_running_with_a_log_line_each() {
    blocked_handlers_are_cut_at_the_drain_deadline(Dispatch::threads(), 3);
}

#[test]
fn drain_timeout_cuts_queued_pool_requests_too() {
    blocked_handlers_are_cut_at_the_drain_deadline(socketserver::WorkerPool::new(1).queue(4).into(), 3);
}

/// The reproduction from the reliability report: a stopped server (SIGSTOP)
/// is sent a burst of requests as large as `max_connections`; once it
/// continues, every one is answered, in every dispatch mode.
#[test]
fn requests_sent_to_a_stopped_server_are_all_answered_once_it_continues() {
    for mode in [&[][..], &["--threads"], &["--workers", "4"], &["--fork"]] {
        let flags = [mode, &["--max-connections", "10", "--timeout", "3"]].concat();
        let mut serve = Serve::start("tcp", "127.0.0.1:0", &flags);
        send_signal(serve.pid(), "STOP");
        let mut clients: Vec<TcpStream> = (0..10)
            .map(|_| {
                let mut client = TcpStream::connect(&serve.address).unwrap();
                client.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
                client.write_all(b"17\n").unwrap();
                client.shutdown(Shutdown::Write).unwrap();
                client
            })
            .collect();
        send_signal(serve.pid(), "CONT");
        for (i, client) in clients.iter_mut().enumerate() {
            let mut answer = String::new();
            let _ = client.read_to_string(&mut answer);
            assert_eq!(answer, "T\n", "{mode:?}: client {i}");
        }
        assert!(serve.signal("TERM").success());
    }
}

#[test]
fn out_of_range_values_are_refused_with_exit_2() {
    for (flag, value) in [
        ("--workers", "0"),
        ("--max-connections", "0"),
        ("--max-digits", "0"),
        ("--max-digits", "18446744073709551615"),
        ("--batch", "0"),
        ("--reuseport", "0"),
        ("--timeout", "0"),
        ("--timeout", "1e300"),
        ("--connection-timeout", "-1"),
        ("--drain-timeout", "-1"),
    ] {
        let out = Command::new(prime_binary()).args(["serve", "tcp", "127.0.0.1:0", flag, value]).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag} {value}: {stderr}");
        assert!(stderr.contains(flag), "{flag} {value}: the error names the flag: {stderr}");
    }
}

/// Errors that come once per packet are rate-limited in the default
/// `handle_error`: a flood of datagrams that cannot be answered (from
/// unnamed Unix sockets) writes a bounded number of log lines.
#[test]
fn a_flood_of_unanswerable_datagrams_writes_a_bounded_log() {
    let dir = temp_dir();
    let path = dir.path().join("flood.sock");
    let log = LogFile::new();
    let serve = Serve::start_logged("unix-datagram", path.to_str().unwrap(), &[], log.writer());
    let unnamed = std::os::unix::net::UnixDatagram::unbound().unwrap();
    for _ in 0..2_000 {
        unnamed.send_to(b"7", &path).unwrap();
    }
    // A named client is still answered, after the whole flood (one queue, in order).
    let client = DatagramClient::new(&parse_address(&serve.address), dir.path()).unwrap();
    assert_eq!(client.ask("7\n").unwrap(), "T\n");
    let lines = log.text().lines().count();
    assert!(lines < 200, "{lines} log lines for 2,000 unanswerable datagrams");
    assert!(log.text().contains("has no name"), "{}", log.text());
}

/// The reproduction from reliability round 3: with the fd table full
/// (`ulimit -n 64`, more clients than fds), connections that sent a PROXY
/// header and half a request reach the pool while no fd is left. A drain
/// must still cut them at its deadline: cutting needs no fd of its own.
#[cfg(feature = "proxy-protocol")]
#[test]
fn a_drain_ends_at_its_deadline_with_the_fd_table_full() {
    let log = LogFile::new();
    let mut serve = Serve::from_command(
        Command::new("sh")
            .arg("-c")
            .arg("ulimit -n 64 && exec \"$0\" serve tcp 127.0.0.1:0 --workers 4 --proxy-protocol --drain-timeout 1")
            .arg(prime_binary())
            .stderr(log.writer()),
    );
    let mut clients: Vec<TcpStream> = (0..80).map(|_| TcpStream::connect(&serve.address).unwrap()).collect();
    // Every fd taken before any request is whole, so no later step finds one free.
    eventually("the server's fd table is full", || fds(serve.pid()) >= 60);
    for client in &mut clients {
        let _ = client.write_all(b"PROXY TCP4 192.0.2.9 127.0.0.1 5555 80\r\n1");
    }
    // A header taken off a socket leaves the request's one byte queued: then
    // it went on to the pool, whose four workers now wait for the rest.
    let port = serve.address.rsplit_once(':').unwrap().1.parse().unwrap();
    eventually("four connections reach the workers", || {
        received_but_unread(port).iter().filter(|&&n| n == 1).count() >= 4
    });
    send_signal(serve.pid(), "TERM");
    // Bounded: a drain that waits for the clients never ends.
    let status = serve.wait();
    assert!(status.success(), "{status}: {}", log.text());
    assert!(!log.text().contains("cannot be cut"), "{}", log.text());
    drop(clients);
}

/// The bytes waiting unread on each of the server's accepted IPv4 TCP
/// sockets on `port`, from /proc/net/tcp (the kernel's own view).
#[cfg(feature = "proxy-protocol")]
fn received_but_unread(port: u16) -> Vec<u32> {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let local = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // local address, remote address, state, tx_queue:rx_queue; 01 is ESTABLISHED.
            let serving = fields[1].ends_with(&local) && fields[3] == "01";
            serving.then(|| u32::from_str_radix(fields[4].split_once(':').unwrap().1, 16).unwrap())
        })
        .collect()
}
