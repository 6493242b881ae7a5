//! Python's server lifecycle: bind, serve_forever, handle_request, shutdown,
//! server_close, and the hooks, on real sockets.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use common::*;
use socketserver::{Error, Request, ShutdownHandle, TcpServer, UdpServer, UnixDatagramServer, UnixStreamServer};

#[test]
fn server_address_is_the_sockets_local_address_and_port_0_resolves() {
    let tcp = TcpServer::bind("127.0.0.1:0", echo()).unwrap();
    let local = tcp.socket().local_addr().unwrap().as_socket().unwrap();
    assert_eq!(tcp.server_address().as_inet(), Some(local));
    assert_ne!(local.port(), 0);

    let udp = UdpServer::bind(("127.0.0.1", 0), echo()).unwrap();
    let local = udp.socket().local_addr().unwrap().as_socket().unwrap();
    assert_eq!(udp.server_address().as_inet(), Some(local));
    assert_ne!(local.port(), 0);

    let dir = temp_dir();
    let path = dir.path().join("a.sock");
    let unix = UnixStreamServer::bind(&path, echo()).unwrap();
    assert_eq!(unix.server_address().as_path(), Some(path.as_path()));
    assert_eq!(unix.socket().local_addr().unwrap().as_pathname(), Some(path.as_path()));
}

#[test]
fn shutdown_racing_serve_forever_start_always_stops_it() {
    let (done_tx, done_rx) = mpsc::channel();
    for i in 0..20 {
        let mut server = TcpServer::bind("127.0.0.1:0", echo()).unwrap();
        let stop = server.shutdown_handle();
        let done = done_tx.clone();
        std::thread::spawn(move || done.send((i, server.serve_forever().is_ok())).unwrap());
        // Alternate between asking before and while the loop may be starting.
        if i % 2 == 0 {
            stop.shutdown();
        } else {
            std::thread::spawn(move || stop.shutdown());
        }
    }
    for _ in 0..20 {
        let (i, ok) = done_rx.recv_timeout(IO_TIMEOUT).expect("a serve_forever never returned");
        assert!(ok, "server {i} failed");
    }
}

#[test]
fn shutdown_requested_before_serve_forever_makes_it_return_at_once() {
    let mut server = TcpServer::bind("127.0.0.1:0", echo()).unwrap();
    let stop = server.shutdown_handle();
    stop.shutdown();
    assert!(stop.is_shutdown_requested());
    server.serve_forever().unwrap();
    assert!(!stop.is_shutdown_requested(), "the request is consumed by the loop it stopped");
}

#[test]
fn shutdown_from_inside_a_handler_on_the_serving_thread_does_not_deadlock() {
    let handle: Arc<OnceLock<ShutdownHandle>> = Arc::default();
    let in_handler = handle.clone();
    let mut server = TcpServer::bind("127.0.0.1:0", move |req: &mut Request<'_>| {
        in_handler.get().unwrap().shutdown();
        req.wfile.write_all(b"bye\n")
    })
    .unwrap();
    handle.set(server.shutdown_handle()).unwrap();
    let addr = server.server_address().clone();
    let (done_tx, done_rx) = mpsc::channel();
    std::thread::spawn(move || done_tx.send(server.serve_forever().is_ok()).unwrap());

    let mut client = StreamClient::connect(&addr).unwrap();
    let mut answer = String::new();
    client.read_to_string(&mut answer).unwrap();
    assert_eq!(answer, "bye\n", "the handler's answer is still delivered");
    assert!(done_rx.recv_timeout(IO_TIMEOUT).expect("serve_forever did not stop"));
}

#[test]
fn handle_request_times_out_once_and_returns() {
    let timeouts = Arc::new(AtomicUsize::new(0));
    let counter = timeouts.clone();
    let mut server = UdpServer::builder(echo())
        .timeout(Some(Duration::from_millis(50)))
        .handle_timeout(move || {
            counter.fetch_add(1, Ordering::SeqCst);
        })
        .bind("127.0.0.1:0")
        .unwrap();
    server.handle_request().unwrap();
    assert_eq!(timeouts.load(Ordering::SeqCst), 1);
}

#[test]
fn handle_request_serves_exactly_one_request() {
    let mut server = TcpServer::builder(echo()).timeout(Some(IO_TIMEOUT)).bind("127.0.0.1:0").unwrap();
    let addr = server.server_address().clone();
    let client = std::thread::spawn(move || {
        let mut c = StreamClient::connect(&addr).unwrap();
        let answer = c.ask("one\n").unwrap();
        c.shutdown_write().unwrap();
        answer
    });
    server.handle_request().unwrap();
    assert_eq!(client.join().unwrap(), "one\n");
}

#[test]
fn handle_request_returns_early_on_shutdown() {
    let mut server = TcpServer::bind("127.0.0.1:0", echo()).unwrap();
    let stop = server.shutdown_handle();
    let (done_tx, done_rx) = mpsc::channel();
    let waiting = std::thread::spawn(move || {
        let result = server.handle_request();
        done_tx.send(()).unwrap();
        result
    });
    stop.shutdown();
    done_rx.recv_timeout(IO_TIMEOUT).expect("handle_request did not return");
    waiting.join().unwrap().unwrap();
}

#[test]
fn verify_request_false_closes_the_connection_without_calling_the_handler() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let handler = move |req: &mut Request<'_>| {
        counted.fetch_add(1, Ordering::SeqCst);
        req.wfile.write_all(b"served\n")
    };
    let verified = Arc::new(AtomicUsize::new(0));
    let seen = verified.clone();
    let server = TcpServer::builder(handler)
        .verify_request(move |client| {
            seen.fetch_add(1, Ordering::SeqCst);
            client.as_inet().is_none_or(|a| !a.ip().is_loopback())
        })
        .bind("127.0.0.1:0")
        .unwrap();
    let running = Running::start(server);
    let mut client = StreamClient::connect(&running.address).unwrap();
    let mut got = Vec::new();
    assert_eq!(client.read_to_end(&mut got).unwrap(), 0, "the client sees end of stream at once");
    running.stop().unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    assert_eq!(verified.load(Ordering::SeqCst), 1);
}

#[test]
fn verify_request_false_drops_a_datagram_unanswered() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let handler = move |req: &mut Request<'_>| {
        counted.fetch_add(1, Ordering::SeqCst);
        req.wfile.write_all(b"served\n")
    };
    let mut rejected = 0;
    let server = UdpServer::builder(handler)
        .verify_request(move |_| {
            rejected += 1;
            rejected > 1
        })
        .bind("127.0.0.1:0")
        .unwrap();
    let running = Running::start(server);
    let dir = temp_dir();
    let client = DatagramClient::new(&running.address, dir.path()).unwrap();
    client.send(b"rejected").unwrap();
    assert_eq!(client.ask("accepted").unwrap(), "served\n", "only the second datagram is answered");
    running.stop().unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[test]
fn a_failing_handler_is_reported_once_and_the_next_request_is_served() {
    let handler = |req: &mut Request<'_>| {
        let mut line = String::new();
        std::io::BufRead::read_line(&mut req.rfile, &mut line)?;
        if line.starts_with("fail") {
            return Err(std::io::Error::other("asked to fail"));
        }
        req.wfile.write_all(line.as_bytes())
    };
    let errors = Errors::default();
    let running = Running::start(TcpServer::builder(handler).handle_error(errors.hook()).bind("127.0.0.1:0").unwrap());
    let mut failing = StreamClient::connect(&running.address).unwrap();
    failing.write_all(b"fail\n").unwrap();
    let mut rest = Vec::new();
    failing.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());

    let mut next = StreamClient::connect(&running.address).unwrap();
    assert_eq!(next.ask("fine\n").unwrap(), "fine\n");
    drop(next);
    running.stop().unwrap();
    let errors = errors.all();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("asked to fail") && errors[0].contains("127.0.0.1:"), "{errors:?}");
}

#[test]
fn finish_runs_even_when_handle_fails_and_setup_failure_skips_both() {
    struct Steps(Arc<std::sync::Mutex<Vec<&'static str>>>);
    impl socketserver::RequestHandler for Steps {
        fn setup(&self, req: &mut Request<'_>) -> std::io::Result<()> {
            self.0.lock().unwrap().push("setup");
            let mut byte = [0u8];
            req.rfile.read_exact(&mut byte)?;
            if byte[0] == b's' { Err(std::io::Error::other("setup failed")) } else { Ok(()) }
        }
        fn handle(&self, _req: &mut Request<'_>) -> std::io::Result<()> {
            self.0.lock().unwrap().push("handle");
            Err(std::io::Error::other("handle failed"))
        }
        fn finish(&self, req: &mut Request<'_>) -> std::io::Result<()> {
            self.0.lock().unwrap().push("finish");
            req.wfile.write_all(b"finished\n")
        }
    }
    let steps = Arc::new(std::sync::Mutex::new(Vec::new()));
    let errors = Errors::default();
    let server = UdpServer::builder(Steps(steps.clone())).handle_error(errors.hook()).bind("127.0.0.1:0").unwrap();
    let running = Running::start(server);
    let dir = temp_dir();
    let client = DatagramClient::new(&running.address, dir.path()).unwrap();
    assert_eq!(client.ask("h").unwrap(), "finished\n", "finish's output is sent even though handle failed");
    client.send(b"s").unwrap();
    assert_eq!(client.ask("h").unwrap(), "finished\n");
    running.stop().unwrap();
    assert_eq!(*steps.lock().unwrap(), ["setup", "handle", "finish", "setup", "setup", "handle", "finish"]);
    assert_eq!(errors.all().len(), 3, "{:?}", errors.all());
}

#[test]
fn a_panicking_handler_costs_one_request() {
    let handler = |req: &mut Request<'_>| {
        let mut line = String::new();
        std::io::BufRead::read_line(&mut req.rfile, &mut line)?;
        assert!(!line.starts_with("panic"), "handler asked to panic");
        req.wfile.write_all(line.as_bytes())
    };
    let errors = Errors::default();
    let running = Running::start(TcpServer::builder(handler).handle_error(errors.hook()).bind("127.0.0.1:0").unwrap());
    let mut c = StreamClient::connect(&running.address).unwrap();
    c.write_all(b"panic\n").unwrap();
    let mut rest = Vec::new();
    c.read_to_end(&mut rest).unwrap();
    let mut next = StreamClient::connect(&running.address).unwrap();
    assert_eq!(next.ask("ok\n").unwrap(), "ok\n");
    drop(next);
    running.stop().unwrap();
    let errors = errors.all();
    assert!(errors.len() == 1 && errors[0].contains("panicked") && errors[0].contains("asked to panic"), "{errors:?}");
}

#[test]
fn bind_later_lets_options_be_set_before_bind() {
    let mut server = TcpServer::builder(echo()).build("127.0.0.1:0").unwrap();
    assert!(matches!(server.serve_forever(), Err(Error::State { .. })));
    server.socket().set_recv_buffer_size(64 * 1024).unwrap();
    server.server_bind().unwrap();
    assert_ne!(server.server_address().as_inet().unwrap().port(), 0, "the address is resolved on bind");
    server.server_activate().unwrap();
    let running = Running::start(server);
    let mut client = StreamClient::connect(&running.address).unwrap();
    assert_eq!(client.ask("late\n").unwrap(), "late\n");
}

#[test]
fn bind_errors_name_the_address() {
    let first = TcpServer::bind("127.0.0.1:0", echo()).unwrap();
    let taken = first.server_address().to_string();
    let err = TcpServer::bind(taken.as_str(), echo()).unwrap_err();
    assert!(err.to_string().contains(&taken), "{err}");
    assert_eq!(err.io_error().unwrap().kind(), std::io::ErrorKind::AddrInUse);

    let err = TcpServer::bind("no-such-host.invalid:80", echo()).unwrap_err();
    assert!(matches!(err, Error::Resolve { .. }) && err.to_string().contains("no-such-host.invalid"), "{err}");
}

#[test]
fn a_stale_unix_socket_file_is_replaced() {
    let dir = temp_dir();
    let path = dir.path().join("stale.sock");
    drop(UnixListener::bind(&path).unwrap());
    assert!(path.exists(), "a closed listener leaves its file behind");
    let running = Running::start(UnixStreamServer::bind(&path, echo()).unwrap());
    assert_eq!(StreamClient::connect(&running.address).unwrap().ask("fresh\n").unwrap(), "fresh\n");
}

#[test]
fn a_live_unix_socket_is_never_replaced() {
    let dir = temp_dir();
    let path = dir.path().join("live.sock");
    let live = UnixListener::bind(&path).unwrap();
    for err in
        [UnixStreamServer::bind(&path, echo()).unwrap_err(), UnixDatagramServer::bind(&path, echo()).unwrap_err()]
    {
        assert!(matches!(err, Error::PathInUse { .. }), "{err}");
        assert!(err.to_string().contains(path.to_str().unwrap()), "{err}");
    }
    // The live listener still owns the path: a client reaches it.
    std::os::unix::net::UnixStream::connect(&path).unwrap();
    live.accept().unwrap();
}

#[test]
fn a_regular_file_at_the_socket_path_is_never_deleted() {
    let dir = temp_dir();
    let path = dir.path().join("data.txt");
    std::fs::write(&path, b"precious").unwrap();
    let err = UnixStreamServer::bind(&path, echo()).unwrap_err();
    assert!(matches!(err, Error::PathInUse { .. }) && err.to_string().contains("not a socket"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), b"precious");
}

#[test]
fn the_server_removes_its_own_socket_file_on_close_but_not_a_replacement() {
    let dir = temp_dir();
    let path = dir.path().join("own.sock");
    let server = UnixDatagramServer::bind(&path, echo()).unwrap();
    assert!(path.exists());
    server.server_close();
    assert!(!path.exists());

    let server = UnixStreamServer::bind(&path, echo()).unwrap();
    std::fs::remove_file(&path).unwrap();
    let replacement = UnixListener::bind(&path).unwrap();
    drop(server);
    assert!(path.exists(), "a socket file the server did not create is left alone");
    drop(replacement);
}
