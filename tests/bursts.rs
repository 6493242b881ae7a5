//! Connections that spoke are never lost (README, "What the server
//! guarantees"): with `idle_timeout`, a connection waits in the serving loop
//! until its first byte, and then for room; bursts larger than the limits
//! are served in full, and only silent connections meet the idle deadline.

mod common;

use std::io::Write;
use std::time::Duration;

use common::*;
use socketserver::{Dispatch, TcpServer, Threading, WorkerPool};

#[test]
fn a_burst_beyond_max_connections_is_answered_in_every_threaded_mode() {
    for (_, dispatch) in threaded_modes() {
        a_burst_beyond_the_limits_is_answered(dispatch);
    }
}

/// Connections accepted while there was room, whose requests come while
/// every worker is busy, wait past the idle timeout and are answered when a
/// worker frees, not closed as silent.
#[test]
fn requests_that_wait_for_a_busy_server_outlive_the_idle_timeout() {
    const IDLE: Duration = Duration::from_secs(1);
    let modes: [(&str, Dispatch); 2] =
        [("threads", Threading::new().max_threads(1).into()), ("pool", WorkerPool::new(1).queue(0).into())];
    for (mode, dispatch) in modes {
        let server =
            TcpServer::builder(echo()).dispatch(dispatch).idle_timeout(Some(IDLE)).bind("127.0.0.1:0").unwrap();
        let running = Running::start(server);
        let mut waiting: Vec<StreamClient> = (0..5).map(|_| StreamClient::connect(&running.address).unwrap()).collect();
        // Accepted after the five (the backlog is first come, first served),
        // so once it is answered they are parked, and the only worker is busy.
        let mut holder = StreamClient::connect(&running.address).unwrap();
        assert_eq!(holder.ask("hold\n").unwrap(), "hold\n", "{mode}");
        for (i, client) in waiting.iter_mut().enumerate() {
            client.write_all(format!("{i}\n").as_bytes()).unwrap();
            client.shutdown_write().unwrap();
        }
        // Held back for longer than the idle timeout, while the worker is busy.
        assert_eq!(answer_within(&mut waiting[0], IDLE + HELD_BACK), None, "{mode}: served beyond the limit");
        drop(holder);
        for (i, client) in waiting.iter_mut().enumerate() {
            assert_eq!(answer_within(client, IO_TIMEOUT), Some(format!("{i}\n")), "{mode}: client {i}");
        }
        running.stop().unwrap();
    }
}
