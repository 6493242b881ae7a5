//! The 1.0 shape (README, "A complete handler" and "From Python"): the
//! transport chosen at run time from an endpoint string, a handler made per
//! request, and the counters a server keeps.

mod common;

use std::io::{self, BufRead, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::process::eventually;
use common::*;
use socketserver::{
    AnyServer, Dispatch, Endpoint, Error, Kind, PerRequest, PerRequestHandler, Request, Stats, TcpServer, UdpServer,
};

#[test]
fn one_handler_serves_every_endpoint_chosen_at_run_time() {
    let dir = temp_dir();
    let configured = [
        "tcp://127.0.0.1:0".to_string(),
        "udp://127.0.0.1:0".to_string(),
        format!("unix:{}", dir.path().join("any-s.sock").display()),
        format!("unix-datagram:{}", dir.path().join("any-d.sock").display()),
    ];
    for text in configured {
        let endpoint: Endpoint = text.parse().unwrap();
        let mut server = AnyServer::builder(echo()).pool(2).bind(&endpoint).unwrap();
        assert_eq!(server.kind(), endpoint.kind(), "{text}");
        let address = server.server_address().clone();
        let stop = server.shutdown_handle();
        let serving = std::thread::spawn(move || server.serve_forever());
        let answer = match endpoint.kind() {
            Kind::Stream => StreamClient::connect(&address).unwrap().ask("hello\n").unwrap(),
            _ => DatagramClient::new(&address, dir.path()).unwrap().ask("hello\n").unwrap(),
        };
        assert_eq!(answer, "hello\n", "{text}");
        stop.shutdown();
        serving.join().unwrap().unwrap();
    }
}

#[test]
fn a_bad_endpoint_is_an_error_naming_it() {
    for bad in [
        "tcp:/no-port",
        "tcp://[::1",
        "tcp://[::1:80",
        "udp://::1:80",
        "tcp://[nonsense]:80",
        "tcp://a b:80",
        "tcp://:80",
        "udp://host:+80",
    ] {
        match bad.parse::<Endpoint>() {
            Err(e @ Error::Endpoint { .. }) => assert!(e.to_string().contains(bad), "{e}"),
            other => panic!("{bad}: {other:?}"),
        }
    }
}

/// What an endpoint prints parses back to the same endpoint.
#[test]
fn an_endpoint_round_trips_through_its_text() {
    for text in [
        "tcp://[::1]:80",
        "tcp://[fe80::1%lo]:9",
        "udp:localhost:53",
        "unix:////tmp/x",
        "unix:@name",
        "unix-datagram:rel/p",
    ] {
        let endpoint: Endpoint = text.parse().unwrap();
        assert_eq!(endpoint.to_string().parse::<Endpoint>().unwrap(), endpoint, "{text}");
    }
}

/// A fresh handler per request: state set in `setup` is seen by `handle`
/// and `finish`, and never leaks into another request, even concurrently.
#[test]
fn a_per_request_handler_starts_fresh_for_every_request() {
    #[derive(Default)]
    struct Session {
        greeting: Option<String>,
        lines: usize,
    }
    impl PerRequestHandler for Session {
        fn setup(&mut self, req: &mut Request<'_>) -> io::Result<()> {
            self.greeting = Some(format!("hello {}", req.kind() == Kind::Stream));
            Ok(())
        }
        fn handle(&mut self, req: &mut Request<'_>) -> io::Result<()> {
            let mut line = String::new();
            while req.rfile.read_line(&mut line)? > 0 {
                self.lines += 1;
                writeln!(req.wfile, "{} #{}", self.greeting.as_deref().unwrap_or("-"), self.lines)?;
                line.clear();
            }
            Ok(())
        }
        fn finish(&mut self, req: &mut Request<'_>) -> io::Result<()> {
            writeln!(req.wfile, "bye after {}", self.lines)
        }
    }
    let server = TcpServer::builder(PerRequest(Session::default)).threading().bind("127.0.0.1:0").unwrap();
    let running = Running::start(server);
    let mut first = StreamClient::connect(&running.address).unwrap();
    let mut second = StreamClient::connect(&running.address).unwrap();
    assert_eq!(first.ask("a\n").unwrap(), "hello true #1\n");
    assert_eq!(second.ask("a\n").unwrap(), "hello true #1\n");
    assert_eq!(first.ask("b\n").unwrap(), "hello true #2\n");
    first.shutdown_write().unwrap();
    let mut rest = String::new();
    io::Read::read_to_string(&mut first, &mut rest).unwrap();
    assert_eq!(rest, "bye after 2\n");
    assert_eq!(second.ask("b\n").unwrap(), "hello true #2\n");
}

/// Lines "fail" and "panic" end the request that way; anything else is echoed.
fn eventful() -> impl socketserver::RequestHandler + Clone {
    |req: &mut Request<'_>| {
        let mut line = String::new();
        req.rfile.read_line(&mut line)?;
        match line.trim() {
            "fail" => Err(io::Error::other("asked to fail")),
            "panic" => panic!("handler asked to panic"),
            _ => req.wfile.write_all(line.as_bytes()),
        }
    }
}

#[test]
fn stats_count_every_way_a_request_ends() {
    quiet_deliberate_panics();
    let refuse = Arc::new(AtomicBool::new(false));
    let refusing = Arc::clone(&refuse);
    let server = TcpServer::builder(eventful())
        .dispatch(Dispatch::pool(2))
        .idle_timeout(Some(Duration::from_millis(200)))
        .verify_request(move |_| !refusing.load(Ordering::SeqCst))
        .handle_error(|_| {})
        .bind("127.0.0.1:0")
        .unwrap();
    let stats = server.stats_handle();
    assert_eq!(stats.get(), Stats::default());
    let running = Running::start(server);
    let ask = |line: &str| {
        let mut client = StreamClient::connect(&running.address).unwrap();
        let answer = client.ask(line).unwrap_or_default();
        drop(client);
        answer
    };
    for _ in 0..3 {
        assert_eq!(ask("ok\n"), "ok\n");
    }
    assert_eq!(ask("fail\n"), "");
    assert_eq!(ask("panic\n"), "");
    refuse.store(true, Ordering::SeqCst);
    assert_eq!(ask("refused\n"), "");
    refuse.store(false, Ordering::SeqCst);
    let silent = StreamClient::connect(&running.address).unwrap();
    eventually("the silent client is closed", || stats.get().idle_closed == 1);
    drop(silent);
    eventually("every request has ended", || {
        let s = stats.get();
        s.served == 3 && s.errors == 1 && s.panics == 1 && s.active == 0
    });
    let s = stats.get();
    assert_eq!((s.accepted, s.refused, s.timed_out, s.truncated, s.cut_at_drain), (7, 1, 0, 0, 0), "{s:?}");
    running.stop().unwrap();
}

#[test]
fn stats_count_timeouts_and_truncated_datagrams() {
    let server = TcpServer::builder(eventful())
        .read_timeout(Some(Duration::from_millis(50)))
        .handle_error(|_| {})
        .bind("127.0.0.1:0")
        .unwrap();
    let stats = server.stats_handle();
    let running = Running::start(server);
    let _silent = StreamClient::connect(&running.address).unwrap();
    eventually("the silent client's read times out", || stats.get().timed_out == 1);
    running.stop().unwrap();

    let dir = temp_dir();
    let server = UdpServer::builder(eventful()).max_packet_size(16).handle_error(|_| {}).bind("127.0.0.1:0").unwrap();
    let stats = server.stats_handle();
    let running = Running::start(server);
    let client = DatagramClient::new(&running.address, dir.path()).unwrap();
    client.send(&[b'x'; 100]).unwrap();
    assert_eq!(client.ask("ok\n").unwrap(), "ok\n");
    let s = stats.get();
    assert_eq!((s.accepted, s.truncated, s.served), (2, 1, 1), "{s:?}");
}

/// A handler reads the server's counters: no handle parked in shared
/// state and filled after binding.
#[test]
fn a_handler_answers_a_stats_command_from_the_servers_counters() {
    let handler = |req: &mut Request<'_>| {
        let stats = req.stats();
        writeln!(req.wfile, "served={} accepted={}", stats.served, stats.accepted)
    };
    let running = Running::start(TcpServer::bind("127.0.0.1:0", handler).unwrap());
    let address = running.address.clone();
    for served in 0..3 {
        let answer = StreamClient::connect(&address).unwrap().ask("STATS\n").unwrap();
        // This request is accepted and not yet served while it runs.
        assert_eq!(answer, format!("served={served} accepted={}\n", served + 1));
    }
    running.stop().unwrap();
}

/// `packet` is the whole datagram however much `rfile` read, the whole
/// framed message, and `None` on a stream.
#[test]
fn packet_is_the_whole_datagram_or_message_and_none_on_a_stream() {
    let handler = |req: &mut Request<'_>| {
        let mut first = [0u8; 2];
        let read = io::Read::read(&mut req.rfile, &mut first)?;
        let packet = req.packet().map(|p| String::from_utf8_lossy(p).into_owned());
        writeln!(req.wfile, "read {read}, packet {packet:?}")
    };
    let dir = temp_dir();
    let running = Running::start(UdpServer::bind("127.0.0.1:0", handler).unwrap());
    let answer = DatagramClient::new(&running.address, dir.path()).unwrap().ask("hello").unwrap();
    assert_eq!(answer, "read 2, packet Some(\"hello\")\n");
    running.stop().unwrap();

    let framed = TcpServer::builder(handler).framing(socketserver::Framing::lines(64)).bind("127.0.0.1:0").unwrap();
    let running = Running::start(framed);
    let answer = StreamClient::connect(&running.address).unwrap().ask("hello\n").unwrap();
    assert_eq!(answer, "read 2, packet Some(\"hello\\n\")\n");
    running.stop().unwrap();

    let running = Running::start(TcpServer::bind("127.0.0.1:0", handler).unwrap());
    let answer = StreamClient::connect(&running.address).unwrap().ask("hello\n").unwrap();
    assert_eq!(answer, "read 2, packet None\n");
    running.stop().unwrap();
}

/// What a server says it listens on is an endpoint a client can use, on
/// every transport, with the port the OS chose.
#[test]
fn the_bound_endpoint_names_the_real_port_and_parses_back() {
    let dir = temp_dir();
    let path = dir.path().join("ep.sock");
    for text in ["tcp://127.0.0.1:0", "udp://[::1]:0", &format!("unix:{}", path.display())] {
        let server = AnyServer::bind(&text.parse().unwrap(), echo()).unwrap();
        let endpoint = server.endpoint();
        let printed = endpoint.to_string();
        assert!(!printed.ends_with(":0"), "{printed}");
        assert_eq!(printed.parse::<Endpoint>().unwrap(), endpoint);
        assert_eq!(endpoint.kind(), server.kind());
        if let Some(inet) = server.server_address().as_inet() {
            assert!(printed.ends_with(&format!(":{}", inet.port())), "{printed}");
        }
    }
    let tcp = TcpServer::bind("127.0.0.1:0", echo()).unwrap();
    let port = tcp.server_address().as_inet().unwrap().port();
    assert_eq!(tcp.endpoint().to_string(), format!("tcp://127.0.0.1:{port}"));
}
