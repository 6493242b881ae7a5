//! Builder settings at their extremes (README, "What the server
//! guarantees"): values that cannot work are refused before anything is
//! bound, with an error naming the setting; very long timeouts saturate
//! instead of panicking; very short ones stay timeouts.

mod common;

use std::time::Duration;

use common::process::eventually;
use common::*;
use socketserver::{Dispatch, Error, Forking, Request, TcpServer, Threading, UdpServer, WorkerPool};

#[test]
fn settings_that_cannot_work_are_refused_naming_the_setting() {
    let h = |_: &mut Request<'_>| Ok(());
    let zero = Some(Duration::ZERO);
    let refused = [
        ("handler timeout", TcpServer::builder(h).read_timeout(zero).bind("127.0.0.1:0")),
        ("handler timeout", TcpServer::builder(h).write_timeout(zero).bind("127.0.0.1:0")),
        ("connection timeout", TcpServer::builder(h).idle_timeout(zero).bind("127.0.0.1:0")),
        ("connection timeout", TcpServer::builder(h).connection_timeout(zero).bind("127.0.0.1:0")),
        ("max_connections", TcpServer::builder(h).max_connections(0).bind("127.0.0.1:0")),
        ("workers", TcpServer::builder(h).dispatch(Dispatch::pool(0)).bind("127.0.0.1:0")),
        ("max_threads", TcpServer::builder(h).dispatch(Threading::new().max_threads(0).into()).bind("127.0.0.1:0")),
        ("max_children", TcpServer::builder(h).dispatch(Forking::new().max_children(0).into()).build("127.0.0.1:0")),
    ];
    for (setting, result) in refused {
        match result {
            Err(e @ Error::Config { .. }) => assert!(e.to_string().contains(setting), "{e}"),
            other => panic!("{setting}: {other:?}"),
        }
    }
    for result in [
        UdpServer::builder(h).max_packet_size(0).bind("127.0.0.1:0"),
        UdpServer::builder(h).datagram_batch(0).bind("127.0.0.1:0"),
    ] {
        assert!(matches!(result, Err(Error::Config { .. })), "{result:?}");
    }
}

#[test]
fn timeouts_near_duration_max_saturate_instead_of_panicking() {
    let max = Some(Duration::MAX);
    for dispatch in [Dispatch::sequential(), Dispatch::threads(), WorkerPool::new(2).into()] {
        let server = TcpServer::builder(echo())
            .dispatch(dispatch.clone())
            .timeout(max)
            .handler_timeout(max)
            .idle_timeout(max)
            .connection_timeout(max)
            .drain_timeout(max)
            .bind("127.0.0.1:0")
            .unwrap();
        let running = Running::start(server);
        let mut client = StreamClient::connect(&running.address).unwrap();
        assert_eq!(client.ask("still served\n").unwrap(), "still served\n", "{dispatch:?}");
        drop(client);
        running.stop().unwrap();
    }
    // handle_request waits on `timeout`: a request still ends it.
    let mut server = UdpServer::builder(echo()).timeout(max).bind("127.0.0.1:0").unwrap();
    let address = server.server_address().as_inet().unwrap();
    let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    client.send_to(b"one\n", address).unwrap();
    server.handle_request().unwrap();
    client.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut reply = [0u8; 16];
    assert_eq!(client.recv(&mut reply).unwrap(), 4);
}

/// A socket timeout is kept in whole microseconds, and zero means none: a
/// nanosecond must still time out, not block for ever.
#[test]
fn a_sub_microsecond_read_timeout_is_still_a_timeout() {
    let errors = Errors::default();
    let server = TcpServer::builder(echo())
        .read_timeout(Some(Duration::from_nanos(1)))
        .handle_error(errors.hook())
        .bind("127.0.0.1:0")
        .unwrap();
    let running = Running::start(server);
    let mut silent = StreamClient::connect(&running.address).unwrap();
    eventually("the handler's read times out", || !errors.all().is_empty());
    let mut rest = Vec::new();
    let _ = std::io::Read::read_to_end(&mut silent, &mut rest);
    assert!(
        errors.all()[0].contains("timed out") || errors.all()[0].contains("temporarily unavailable"),
        "{:?}",
        errors.all()
    );
    running.stop().unwrap();
}
