//! Fork per request (Python's ForkingMixIn), in real child processes. The
//! tests run one at a time: a forked child must not inherit another test's
//! threads mid-operation, and zombie counts must be this test's alone.
//!
//! A forked child inherits every fd of this process, the test's own client
//! sockets included, so a child never sees its client's end of stream here.
//! The handlers therefore read a known number of lines instead of reading
//! until the client closes.

mod common;

use std::io::{Read, Write};
use std::process::Command;
use std::sync::{Mutex, MutexGuard};

use common::*;
use socketserver::{Dispatch, Forking, Kind, Request, TcpServer, UdpServer};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Children of this process that have exited but were not reaped.
fn zombie_children() -> Vec<u32> {
    let me = std::process::id();
    let mut zombies = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        // pid (comm) state ppid ...: comm may hold spaces, so split after the last ')'.
        let Some((_, rest)) = stat.rsplit_once(") ") else { continue };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.len() > 1 && fields[0] == "Z" && fields[1] == me.to_string() {
            zombies.push(entry.file_name().to_string_lossy().parse().unwrap_or(0));
        }
    }
    zombies
}

#[test]
fn echo_over_every_transport_in_fork_mode() {
    let _serial = serial();
    let dir = temp_dir();
    for (transport, kind, running) in start_every_transport(echo_lines(3), Dispatch::fork(), dir.path()) {
        match kind {
            Kind::Stream => {
                for round in 0..3 {
                    let mut client = StreamClient::connect(&running.address).unwrap();
                    for i in 0..3 {
                        let line = format!("round {round} line {i}\n");
                        assert_eq!(client.ask(&line).unwrap(), line, "{transport}");
                    }
                }
            }
            _ => echo_round_trips(kind, &running.address, dir.path()),
        }
        running.stop().unwrap_or_else(|e| panic!("{transport}: {e}"));
    }
}

#[test]
fn twenty_requests_leave_no_zombies_and_a_foreign_child_is_not_reaped() {
    let _serial = serial();
    // A child of the test's own, exited before the server starts: the server
    // must leave it for us to reap (Python's waitpid(-1) would steal it).
    let mut foreign = Command::new("true").spawn().unwrap();
    let foreign_pid = foreign.id();
    let deadline = std::time::Instant::now() + IO_TIMEOUT;
    while !zombie_children().contains(&foreign_pid) {
        assert!(std::time::Instant::now() < deadline, "the foreign child never exited");
        std::thread::yield_now();
    }

    let running = Running::start(TcpServer::forking("127.0.0.1:0", echo_lines(1)).unwrap());
    for i in 0..20 {
        let mut client = StreamClient::connect(&running.address).unwrap();
        assert_eq!(client.ask(&format!("{i}\n")).unwrap(), format!("{i}\n"));
    }
    running.stop().unwrap(); // block_on_close: waits for and reaps every child
    assert_eq!(zombie_children(), vec![foreign_pid], "only the foreign child is left unreaped");
    assert!(foreign.wait().unwrap().success(), "the foreign child's status is still ours to collect");
}

#[test]
fn children_are_reaped_while_serving() {
    let _serial = serial();
    let running = Running::start(UdpServer::forking("127.0.0.1:0", echo_lines(1)).unwrap());
    let dir = temp_dir();
    let client = DatagramClient::new(&running.address, dir.path()).unwrap();
    for i in 0..20 {
        assert_eq!(client.ask(&format!("{i}\n")).unwrap(), format!("{i}\n"));
    }
    // Each child wakes the server as it exits; the server reaps it on that
    // turn. Bounded wait for the last ones to exit and be reaped.
    let deadline = std::time::Instant::now() + IO_TIMEOUT;
    while !zombie_children().is_empty() {
        assert!(std::time::Instant::now() < deadline, "zombies left while serving: {:?}", zombie_children());
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

#[test]
fn a_panicking_handler_in_a_child_costs_one_request() {
    let _serial = serial();
    quiet_deliberate_panics();
    captured_log();
    let dir = temp_dir();
    for (transport, kind, running) in start_every_transport(panics_on_request(), Dispatch::fork(), dir.path()) {
        eprintln!("{transport}");
        survive_panics(kind, &running.address, dir.path(), 100);
        running.stop().unwrap();
    }
    assert!(zombie_children().is_empty());
    let panicked = captured_log().iter().filter(|line| line.contains("exit status 2 (handler panicked)")).count();
    assert_eq!(panicked, 400, "the parent logs each child that panicked, with its exit status");
}

#[test]
fn max_children_holds_back_the_next_request() {
    let _serial = serial();
    let dispatch = Forking::new().max_children(2).into();
    let running = Running::start(TcpServer::builder(echo_lines(2)).dispatch(dispatch).bind("127.0.0.1:0").unwrap());
    // A holder's second line ends its child, which frees a slot.
    let release = |holders: &mut Vec<StreamClient>| assert_eq!(holders[0].ask("second\n").unwrap(), "second\n");
    let (mut holders, mut waiting) = next_client_waits_for_a_free_slot(&running, 2, release);
    // Let the two children still reading finish, so the server can close.
    assert_eq!(holders[1].ask("second\n").unwrap(), "second\n");
    assert_eq!(waiting.ask("again\n").unwrap(), "again\n");
}

#[test]
fn the_parent_closes_its_copy_of_each_connection() {
    let _serial = serial();
    // The child answers and exits; the client sees end of stream only if the
    // parent closed its copy too.
    let handler = |req: &mut Request<'_>| req.wfile.write_all(b"bye\n");
    let running = Running::start(TcpServer::forking("127.0.0.1:0", handler).unwrap());
    for _ in 0..5 {
        let mut client = StreamClient::connect(&running.address).unwrap();
        let mut all = String::new();
        client.read_to_string(&mut all).unwrap();
        assert_eq!(all, "bye\n");
    }
}

#[test]
fn drain_timeout_kills_children_still_running_with_a_log_line() {
    let _serial = serial();
    captured_log();
    let reported = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let errors = std::sync::Arc::clone(&reported);
    let mut server = TcpServer::builder(echo_lines(1))
        .forking()
        .drain_timeout(Some(std::time::Duration::from_millis(200)))
        .handle_error(move |e| errors.lock().unwrap().push(e.to_string()))
        .bind("127.0.0.1:0")
        .unwrap();
    let stats = server.stats_handle();
    let mut silent = StreamClient::connect(server.server_address()).unwrap();
    server.handle_request().unwrap();
    server.server_close();
    assert!(captured_log().iter().any(|l| l.contains("drain timeout passed: killing child")), "{:?}", captured_log());
    let reported = reported.lock().unwrap();
    assert!(reported.len() == 1 && reported[0].contains("cut"), "handle_error hears of the cut: {reported:?}");
    // Counted once, as cut: the killed child's exit is not also a failure.
    let s = stats.get();
    assert_eq!((s.cut_at_drain, s.errors, s.served), (1, 0, 0), "{s:?}");
    assert!(zombie_children().is_empty(), "the killed child was reaped");
    let mut rest = Vec::new();
    assert_eq!(silent.read_to_end(&mut rest).unwrap_or(0), 0);
}

#[test]
fn a_burst_beyond_max_children_and_max_connections_is_answered() {
    let _serial = serial();
    a_burst_beyond_the_limits_is_answered(Forking::new().max_children(4).into());
}

/// A child's counts die with it: the parent counts each request from its
/// child's exit status.
#[test]
fn stats_count_requests_served_in_children() {
    let _serial = serial();
    quiet_deliberate_panics();
    let server = TcpServer::builder(panics_on_request())
        .dispatch(Dispatch::fork())
        .handle_error(|_| {})
        .bind("127.0.0.1:0")
        .unwrap();
    let stats = server.stats_handle();
    let running = Running::start(server);
    for i in 0..3 {
        let mut client = StreamClient::connect(&running.address).unwrap();
        assert_eq!(client.ask(&format!("{i}\n")).unwrap(), format!("{i}\n"));
    }
    let mut client = StreamClient::connect(&running.address).unwrap();
    client.write_all(b"panic\n").unwrap();
    common::process::eventually("every child is reaped and counted", || {
        let s = stats.get();
        s.served == 3 && s.panics == 1 && s.active == 0
    });
    running.stop().unwrap();
}
