//! Stopping `prime serve` with signals (README, "Stopping"): the first
//! SIGINT/SIGTERM drains within `--drain-timeout`, a second one stops at
//! once; forked children obey signals and hold no copy of the listening
//! socket; clients still waiting at shutdown are closed with a log line.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;

use common::process::*;
use common::*;

/// A client whose request is being served: it has had one answer and the
/// handler waits for its next line.
fn client_in_flight(address: &str) -> TcpStream {
    let mut client = TcpStream::connect(address).unwrap();
    client.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    client.write_all(b"5\n").unwrap();
    let mut answer = [0u8; 2];
    client.read_exact(&mut answer).unwrap();
    assert_eq!(&answer, b"T\n");
    client
}

/// True once the server ended `client`'s connection: end of stream or a
/// reset, as opposed to a read that timed out.
fn was_closed(client: &mut TcpStream) -> bool {
    let mut rest = Vec::new();
    match client.read_to_end(&mut rest) {
        Ok(_) => true,
        Err(e) => !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
    }
}

#[test]
fn a_second_signal_stops_a_draining_server_at_once() {
    for (first, second) in [("TERM", "TERM"), ("INT", "INT"), ("TERM", "INT")] {
        let log = LogFile::new();
        let flags = ["--threads", "--drain-timeout", "600"];
        let mut serve = Serve::start_logged("tcp", "127.0.0.1:0", &flags, log.writer());
        let mut client = client_in_flight(&serve.address);
        send_signal(serve.pid(), first);
        log.wait_for("shutting down");
        assert!(serve.child.try_wait().unwrap().is_none(), "exited without draining its client");
        // Bounded by IO_TIMEOUT, far less than the 600 s drain.
        let status = serve.signal(second);
        assert_eq!(status.code(), Some(1), "SIG{first} then SIG{second}: {status}");
        assert!(was_closed(&mut client), "the client's connection was left open");
        assert!(log.text().contains("closing connection from"), "no log line for the cut connection:\n{}", log.text());
    }
}

#[test]
fn the_drain_timeout_bounds_a_graceful_stop() {
    let log = LogFile::new();
    let mut serve =
        Serve::start_logged("tcp", "127.0.0.1:0", &["--workers", "2", "--drain-timeout", "0.5"], log.writer());
    let mut client = client_in_flight(&serve.address);
    let status = serve.signal("TERM");
    assert!(status.success(), "{status}");
    assert!(was_closed(&mut client));
    assert!(log.text().contains("drain timeout passed: closing connection from 127.0.0.1"), "{}", log.text());
}

#[test]
fn a_forked_child_stops_on_sigterm_and_sigint() {
    for signal in ["TERM", "INT"] {
        let serve = Serve::start("tcp", "127.0.0.1:0", &["--fork"]);
        let mut client = client_in_flight(&serve.address);
        let children = children_of(serve.pid());
        assert_eq!(children.len(), 1, "one child serves the client: {children:?}");
        send_signal(children[0], signal);
        assert!(was_closed(&mut client), "the child ignored SIG{signal}");
        eventually("the child is reaped", || children_of(serve.pid()).is_empty());
        // The server goes on.
        client_in_flight(&serve.address);
    }
}

#[test]
fn while_a_fork_server_drains_new_clients_are_refused_not_left_hanging() {
    let log = LogFile::new();
    let mut serve = Serve::start_logged("tcp", "127.0.0.1:0", &["--fork", "--drain-timeout", "600"], log.writer());
    let client = client_in_flight(&serve.address);
    send_signal(serve.pid(), "TERM");
    log.wait_for("shutting down");
    // The parent closed its listening socket; no child holds a copy of it.
    eventually("the port refuses connections", || TcpStream::connect(&serve.address).is_err());
    assert!(serve.child.try_wait().unwrap().is_none(), "the drain waits for the child");
    drop(client);
    assert!(serve.wait().success());
}

#[test]
fn clients_waiting_in_a_fork_servers_backlog_are_closed_with_a_log_line_each() {
    let log = LogFile::new();
    let flags = ["--fork", "--max-connections", "1", "--drain-timeout", "600"];
    let mut serve = Serve::start_logged("tcp", "127.0.0.1:0", &flags, log.writer());
    let holder = client_in_flight(&serve.address);
    // The one connection allowed is taken: these wait in the backlog.
    let mut waiting: Vec<TcpStream> = (0..5)
        .map(|_| {
            let mut client = TcpStream::connect(&serve.address).unwrap();
            client.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
            client.write_all(b"17\n").unwrap();
            client
        })
        .collect();
    send_signal(serve.pid(), "TERM");
    for (i, client) in waiting.iter_mut().enumerate() {
        assert!(was_closed(client), "waiting client {i} was left hanging");
    }
    drop(holder);
    assert!(serve.wait().success());
    let closed = log.text().matches("closed before it was served").count();
    assert_eq!(closed, 5, "one log line per waiting client:\n{}", log.text());
}
