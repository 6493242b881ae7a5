//! Threads and pools: every transport in every mode, limits that hold
//! clients back without dropping them, contained panics, and shutdown while
//! handlers are blocked.

mod common;

use std::io::Write;
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use common::*;
use socketserver::{Dispatch, Request, TcpServer, Threading, WorkerPool};

#[test]
fn echo_over_every_transport_in_every_mode() {
    let dir = temp_dir();
    for (mode, dispatch) in threaded_modes() {
        for (transport, kind, running) in start_every_transport(echo(), dispatch, dir.path()) {
            echo_round_trips(kind, &running.address, dir.path());
            running.stop().unwrap_or_else(|e| panic!("{transport} in {mode} mode: {e}"));
        }
    }
}

#[test]
fn a_panicking_handler_is_contained_in_every_mode() {
    quiet_deliberate_panics();
    let dir = temp_dir();
    for (mode, dispatch) in threaded_modes() {
        for (transport, kind, running) in start_every_transport(panics_on_request(), dispatch, dir.path()) {
            eprintln!("{transport} in {mode} mode");
            survive_panics(kind, &running.address, dir.path(), 100);
            running.stop().unwrap();
        }
    }
}

#[test]
fn fifty_clients_held_open_and_a_fifty_first_is_answered() {
    let running = Running::start(TcpServer::threading("127.0.0.1:0", echo()).unwrap());
    let held: Vec<StreamClient> = (0..50)
        .map(|i| {
            let mut c = StreamClient::connect(&running.address).unwrap();
            assert_eq!(c.ask(&format!("{i}\n")).unwrap(), format!("{i}\n"));
            c
        })
        .collect();
    let mut last = StreamClient::connect(&running.address).unwrap();
    assert_eq!(last.ask("fifty-first\n").unwrap(), "fifty-first\n");
    drop(held);
}

#[test]
fn a_pool_of_four_makes_the_fifth_request_wait_then_serves_it() {
    for pool in [WorkerPool::new(4), WorkerPool::new(4).queue(0)] {
        let running = Running::start(TcpServer::builder(echo()).dispatch(pool.into()).bind("127.0.0.1:0").unwrap());
        next_client_waits_for_a_free_slot(&running, 4, |holders| drop(holders.pop()));
    }
}

#[test]
fn max_threads_holds_back_the_next_request() {
    let dispatch = Threading::new().max_threads(3).into();
    let running = Running::start(TcpServer::builder(echo()).dispatch(dispatch).bind("127.0.0.1:0").unwrap());
    next_client_waits_for_a_free_slot(&running, 3, |holders| drop(holders.pop()));
}

#[test]
fn max_connections_holds_back_the_next_connection_in_every_threaded_mode() {
    for dispatch in [Dispatch::threads(), Dispatch::pool(8)] {
        let server = TcpServer::builder(echo()).dispatch(dispatch).max_connections(2).bind("127.0.0.1:0").unwrap();
        let running = Running::start(server);
        next_client_waits_for_a_free_slot(&running, 2, |holders| drop(holders.pop()));
    }
}

#[test]
fn finished_threads_do_not_pile_up() {
    let mut server = TcpServer::threading("127.0.0.1:0", echo()).unwrap();
    let address = server.server_address().clone();
    let clients = std::thread::spawn(move || {
        for i in 0..100 {
            let mut c = StreamClient::connect(&address).unwrap();
            assert_eq!(c.ask(&format!("{i}\n")).unwrap(), format!("{i}\n"));
        }
    });
    for _ in 0..100 {
        server.handle_request().unwrap();
    }
    clients.join().unwrap();
    // Each handler ends right after its client; a server that kept them would stay at 100.
    common::process::eventually("finished handlers are let go", || server.active_count() < 10);
}

/// A gate that handlers block on until the test opens it.
#[derive(Clone, Default)]
struct Gate(Arc<(Mutex<bool>, Condvar)>);

impl Gate {
    fn wait(&self) {
        let (open, changed) = &*self.0;
        let mut open = open.lock().unwrap();
        while !*open {
            open = changed.wait(open).unwrap();
        }
    }

    fn open(&self) {
        *self.0.0.lock().unwrap() = true;
        self.0.1.notify_all();
    }
}

/// Ten handlers blocked on a gate; shutdown must return at once either way,
/// and `server_close` must wait for them exactly when `block_on_close` is on.
fn shutdown_with_ten_blocked_handlers(config: Threading, close_waits: bool) {
    let gate = Gate::default();
    let (entered_tx, entered) = mpsc::channel();
    let entered_tx = Mutex::new(entered_tx);
    let handler_gate = gate.clone();
    let handler = move |req: &mut Request<'_>| {
        entered_tx.lock().unwrap().send(()).unwrap();
        handler_gate.wait();
        req.wfile.write_all(b"done\n")
    };
    let mut server = TcpServer::builder(handler).dispatch(config.into()).bind("127.0.0.1:0").unwrap();
    let address = server.server_address().clone();
    let stop = server.shutdown_handle();
    let serving = std::thread::spawn(move || {
        server.serve_forever().unwrap();
        server
    });
    let clients: Vec<StreamClient> = (0..10).map(|_| StreamClient::connect(&address).unwrap()).collect();
    for _ in 0..10 {
        entered.recv_timeout(IO_TIMEOUT).expect("a handler never started");
    }

    stop.shutdown(); // must not wait for the blocked handlers
    let server = serving.join().unwrap();
    assert_eq!(server.active_count(), 10);

    let (closed_tx, closed) = mpsc::channel();
    std::thread::spawn(move || {
        server.server_close();
        closed_tx.send(()).unwrap();
    });
    if close_waits {
        assert!(closed.recv_timeout(common::HELD_BACK).is_err(), "server_close returned while handlers ran");
        gate.open();
        closed.recv_timeout(IO_TIMEOUT).expect("server_close never returned");
    } else {
        closed.recv_timeout(IO_TIMEOUT).expect("server_close waited for handlers");
        gate.open();
    }
    for mut client in clients {
        assert_eq!(answer_within(&mut client, IO_TIMEOUT).as_deref(), Some("done\n"));
    }
}

#[test]
fn shutdown_returns_while_handlers_block_and_block_on_close_waits_for_them() {
    shutdown_with_ten_blocked_handlers(Threading::new(), true);
}

#[test]
fn without_block_on_close_server_close_does_not_wait() {
    shutdown_with_ten_blocked_handlers(Threading::new().block_on_close(false), false);
    shutdown_with_ten_blocked_handlers(Threading::new().daemon_threads(true), false);
}

#[test]
fn a_pool_serves_queued_requests_before_it_closes() {
    let gate = Gate::default();
    let handler_gate = gate.clone();
    let handler = move |req: &mut Request<'_>| {
        handler_gate.wait();
        req.wfile.write_all(b"done\n")
    };
    let mut server =
        TcpServer::builder(handler).dispatch(WorkerPool::new(1).queue(3).into()).bind("127.0.0.1:0").unwrap();
    let clients: Vec<StreamClient> = (0..4).map(|_| StreamClient::connect(server.server_address()).unwrap()).collect();
    for _ in 0..4 {
        server.handle_request().unwrap();
    }
    assert_eq!(server.active_count(), 4, "one running, three queued");
    gate.open();
    server.server_close();
    for mut client in clients {
        assert_eq!(answer_within(&mut client, IO_TIMEOUT).as_deref(), Some("done\n"), "a queued request was dropped");
    }
}

#[test]
fn a_reuseport_group_spreads_connections_across_its_servers() {
    use socketserver::{ServerGroup, UdpServer};
    use std::collections::HashSet;
    let seen: Arc<Mutex<HashSet<String>>> = Arc::default();
    let record = seen.clone();
    let handler = move |req: &mut Request<'_>| {
        record.lock().unwrap().insert(std::thread::current().name().unwrap_or("?").to_string());
        std::io::copy(&mut req.rfile, &mut req.wfile).map(drop)
    };
    let group = ServerGroup::spawn(3, "127.0.0.1:0", || TcpServer::builder(handler.clone())).unwrap();
    for i in 0..30 {
        let mut client = StreamClient::connect(group.server_address()).unwrap();
        client.write_all(format!("{i}\n").as_bytes()).unwrap();
        client.shutdown_write().unwrap();
        let mut answer = String::new();
        std::io::Read::read_to_string(&mut client, &mut answer).unwrap();
        assert_eq!(answer, format!("{i}\n"));
    }
    group.shutdown().unwrap();
    assert!(seen.lock().unwrap().len() >= 2, "one server took every connection: {:?}", seen.lock().unwrap());

    let group = ServerGroup::spawn(2, "127.0.0.1:0", || UdpServer::builder(echo())).unwrap();
    let dir = temp_dir();
    let client = DatagramClient::new(group.server_address(), dir.path()).unwrap();
    assert_eq!(client.ask("udp\n").unwrap(), "udp\n");
    assert_eq!(client.ask("again\n").unwrap(), "again\n");
    // The group's stats add up its servers' counters.
    let stats = group.stats();
    assert_eq!((stats.accepted, stats.served), (2, 2), "{stats:?}");
    group.shutdown().unwrap();
}

#[test]
fn parked_connections_that_speak_together_are_served_within_the_pool_limit() {
    let server = TcpServer::builder(echo())
        .dispatch(WorkerPool::new(1).queue(0).into())
        .idle_timeout(Some(Duration::from_secs(10)))
        .bind("127.0.0.1:0")
        .unwrap();
    let running = Running::start(server);
    let mut clients: Vec<StreamClient> = (0..5).map(|_| StreamClient::connect(&running.address).unwrap()).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        c.write_all(format!("{i}\n").as_bytes()).unwrap();
        c.shutdown_write().unwrap();
    }
    for (i, c) in clients.iter_mut().enumerate() {
        let mut answer = String::new();
        std::io::Read::read_to_string(c, &mut answer).unwrap();
        assert_eq!(answer, format!("{i}\n"));
    }
}
