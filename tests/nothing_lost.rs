//! Reliability around framed and kept connections (README, "Many
//! connections"): no message waits for a wake-up that never comes, a stop
//! or a restart answers what was already sent, and the limits hold while
//! connections are away with workers.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::IO_TIMEOUT;
use common::Running;
use socketserver::{Framing, Request, TcpServer, WorkerPool};

/// Answers each line with itself.
fn echo_line() -> impl Fn(&mut Request<'_>) -> std::io::Result<()> + Send + Sync + 'static {
    |req: &mut Request<'_>| {
        let mut line = String::new();
        req.rfile.read_line(&mut line)?;
        req.wfile.write_all(line.as_bytes())
    }
}

/// With `poll_interval(None)` nothing but a wake-up moves the loop: a
/// message left waiting for room while a worker frees up would wait for
/// ever. Every client is answered every round, within a bound far above
/// the time the work takes.
#[test]
fn with_no_poll_interval_every_framed_message_waiting_for_room_is_answered() {
    let server = TcpServer::builder(echo_line())
        .dispatch(WorkerPool::new(2).queue(1).into())
        .framing(Framing::lines(64))
        .poll_interval(None)
        .bind("127.0.0.1:0")
        .unwrap();
    let running = Running::start(server);
    let mut clients: Vec<BufReader<TcpStream>> = (0..300)
        .map(|_| {
            let conn = TcpStream::connect(running.inet()).unwrap();
            conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            BufReader::new(conn)
        })
        .collect();
    let started = Instant::now();
    for round in 0..30 {
        for client in &mut clients {
            client.get_mut().write_all(b"ping\n").unwrap();
        }
        for (i, client) in clients.iter_mut().enumerate() {
            let mut line = String::new();
            let read = client.read_line(&mut line);
            assert!(
                matches!(read, Ok(5)) && line == "ping\n",
                "round {round}, client {i}: {read:?} {line:?} after {:?}",
                started.elapsed()
            );
        }
        assert!(started.elapsed() < IO_TIMEOUT * 3, "30 rounds took {:?}", started.elapsed());
    }
    running.stop().unwrap();
}
