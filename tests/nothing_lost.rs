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
use socketserver::transport::TcpTransport;
use socketserver::{Framing, Request, ServerBuilder, TcpServer, WorkerPool};

/// A TCP server on a free loopback port for `handler`, framed in lines of
/// at most 64 bytes; `options` sets the rest.
fn framed<H: socketserver::RequestHandler>(
    handler: H,
    options: impl FnOnce(ServerBuilder<TcpTransport, H>) -> ServerBuilder<TcpTransport, H>,
) -> TcpServer<H> {
    options(TcpServer::builder(handler).framing(Framing::lines(64))).bind("127.0.0.1:0").unwrap()
}

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
    let server = framed(echo_line(), |b| b.dispatch(WorkerPool::new(2).queue(1).into()).poll_interval(None));
    let running = Running::start(server);
    let mut clients: Vec<BufReader<TcpStream>> = (0..300)
        .map(|_| {
            let conn = TcpStream::connect(running.inet()).unwrap();
            // Far above the work; a loaded machine is no failure.
            conn.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
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

/// Answers `slow` after `pause`, telling `started` it began; any other line
/// with itself.
fn slow_echo(
    pause: Duration,
    started: std::sync::mpsc::Sender<()>,
) -> impl Fn(&mut Request<'_>) -> std::io::Result<()> + Send + Sync + 'static {
    let started = std::sync::Mutex::new(started);
    move |req: &mut Request<'_>| {
        let mut line = String::new();
        req.rfile.read_line(&mut line)?;
        if line.trim_end() == "slow" {
            let _ = started.lock().unwrap().send(());
            std::thread::sleep(pause);
        }
        req.wfile.write_all(line.as_bytes())
    }
}

fn connect(running: &Running) -> TcpStream {
    let conn = TcpStream::connect(running.inet()).unwrap();
    conn.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    conn
}

/// Reads what `conn` sends until it closes (or the read timeout passes).
fn read_all(conn: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let _ = std::io::Read::read_to_end(conn, &mut got);
    String::from_utf8_lossy(&got).into_owned()
}

/// `serve_forever` in a thread whose server is closed (drained) when it
/// returns: its address, the receiver that hears when that close is over
/// (with the final counts), and its stop.
fn serve_then_close<H: socketserver::RequestHandler>(
    mut server: TcpServer<H>,
) -> (std::net::SocketAddr, std::sync::mpsc::Receiver<socketserver::Stats>, socketserver::ShutdownHandle) {
    let addr = server.server_address().as_inet().unwrap();
    let stop = server.shutdown_handle();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        server.serve_forever().unwrap();
        let _ = tx.send(server.server_close());
    });
    (addr, rx, stop)
}

/// A stop answers what a client pipelined before it: the messages a worker
/// gave back because it answered its share in a row are not dropped.
#[test]
fn a_stop_answers_every_message_pipelined_before_it() {
    let (started_tx, started) = std::sync::mpsc::channel();
    let server = framed(slow_echo(Duration::from_millis(300), started_tx), |b| {
        b.dispatch(WorkerPool::new(2).into()).drain_timeout(Some(Duration::from_secs(8)))
    });
    let (addr, closed, stop) = serve_then_close(server);
    let mut conn = TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let pipelined: String = std::iter::once("slow\n".to_owned()).chain((0..100).map(|i| format!("{i}\n"))).collect();
    conn.write_all(pipelined.as_bytes()).unwrap();
    started.recv_timeout(IO_TIMEOUT).unwrap();
    stop.request_shutdown();
    let stats = closed.recv_timeout(IO_TIMEOUT).expect("the close ends");
    assert_eq!(read_all(&mut conn), pipelined);
    assert_eq!(stats.served, 101);
}

/// A stop answers a message its client was still sending (within the
/// drain timeout), as a restart does.
#[test]
fn a_stop_answers_a_message_that_was_inside_its_client_when_it_began() {
    let (started_tx, started) = std::sync::mpsc::channel();
    let server = framed(slow_echo(Duration::from_millis(300), started_tx), |b| {
        b.dispatch(WorkerPool::new(2).into()).drain_timeout(Some(Duration::from_secs(8)))
    });
    let (addr, closed, stop) = serve_then_close(server);
    let mut busy = TcpStream::connect(addr).unwrap();
    busy.write_all(b"slow\n").unwrap();
    let mut inside = TcpStream::connect(addr).unwrap();
    inside.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    inside.write_all(b"first\n").unwrap();
    let mut answer = [0u8; 6];
    std::io::Read::read_exact(&mut inside, &mut answer).unwrap();
    inside.write_all(b"17").unwrap();
    started.recv_timeout(IO_TIMEOUT).unwrap();
    stop.request_shutdown();
    // The stop has begun (the loop is gone) before the message is whole.
    std::thread::sleep(Duration::from_millis(100));
    inside.write_all(b"\n").unwrap();
    assert_eq!(read_all(&mut inside), "17\n");
    let stats = closed.recv_timeout(IO_TIMEOUT).expect("the close ends");
    assert_eq!(stats.served, 3);
}

/// A restart answers, by the old process, a request the kernel already
/// held for a connection between messages when the hand-over began, even
/// while a sequential server was busy with another.
#[test]
fn a_restart_answers_requests_that_were_unread_in_the_socket_when_it_began() {
    let (started_tx, started) = std::sync::mpsc::channel();
    let server =
        framed(slow_echo(Duration::from_millis(500), started_tx), |b| b.drain_timeout(Some(Duration::from_secs(8))));
    let (addr, closed, stop) = serve_then_close(server);
    let mut parked: Vec<TcpStream> = (0..20)
        .map(|i| {
            let mut conn = TcpStream::connect(addr).unwrap();
            conn.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
            conn.write_all(format!("hello {i}\n").as_bytes()).unwrap();
            let mut line = String::new();
            BufReader::new(&conn).read_line(&mut line).unwrap();
            conn
        })
        .collect();
    let mut busy = TcpStream::connect(addr).unwrap();
    busy.write_all(b"slow\n").unwrap();
    started.recv_timeout(IO_TIMEOUT).unwrap();
    for conn in &mut parked {
        conn.write_all(b"17\n").unwrap();
    }
    stop.hand_over();
    for (i, conn) in parked.iter_mut().enumerate() {
        assert_eq!(read_all(conn), "17\n", "client {i}");
    }
    closed.recv_timeout(IO_TIMEOUT).expect("the close ends");
}

/// A client that pipelines without reading blocks the reply send of the
/// worker answering it; `connection_timeout` ends that send, so the one
/// worker serves the next client.
#[test]
fn connection_timeout_bounds_a_framed_reply_send_to_a_client_that_never_reads() {
    let _alone = BLOCKING_TESTS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let server = framed(echo_to_a_small_buffer(), |b| {
        b.dispatch(WorkerPool::new(1).into()).connection_timeout(Some(Duration::from_secs(1)))
    });
    let stats = server.stats_handle();
    let running = Running::start(server);
    let hog = non_reader(running.inet());
    // The hog's replies fill its buffers and block the worker (until the
    // deadline, which may come first on a slow machine).
    common::process::eventually("the worker to block sending to the hog", || {
        a_worker_blocks_sending() || stats.get().timed_out > 0
    });
    let mut next = connect(&running);
    next.write_all(b"17\n").unwrap();
    let mut line = String::new();
    BufReader::new(&next).read_line(&mut line).unwrap();
    assert_eq!(line, "17\n");
    // Counted as the hog's connection ends, a moment after the worker moved on.
    common::process::eventually("the hog's send is counted timed out", || stats.get().timed_out >= 1);
    drop(hog);
}

/// Held by the tests that look for a blocked worker: in one process, one
/// test's worker would be taken for another's.
static BLOCKING_TESTS: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Whether a worker thread of this process waits in the kernel for room
/// to send (its wait channel, as /proc shows it: framed workers never
/// block reading, and wait for jobs on a futex).
fn a_worker_blocks_sending() -> bool {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return false };
    tasks.flatten().any(|task| {
        let read = |file| std::fs::read_to_string(task.path().join(file)).unwrap_or_default();
        read("comm").starts_with("socketserver-wo") && matches!(&*read("wchan"), "sk_stream_wait_memory" | "wait_woken")
    })
}

/// Answers each line with itself through a send buffer of a few KiB, so a
/// client that never reads blocks the worker after a few thousand lines.
/// With the kernel's autotuned buffers (MiBs) the worker only blocked after
/// MiBs of requests had come in; on a loaded machine loopback TCP backed
/// off its retransmissions first (`ss` showed the client's 4 MiB unsent, an
/// RTO of 6.5 s and rising, and nothing for the server to read), and the
/// wait for the blocked worker ran out.
fn echo_to_a_small_buffer() -> impl Fn(&mut Request<'_>) -> std::io::Result<()> + Send + Sync + 'static {
    |req: &mut Request<'_>| {
        req.socket().set_send_buffer_size(4096)?;
        let mut line = String::new();
        req.rfile.read_line(&mut line)?;
        req.wfile.write_all(line.as_bytes())
    }
}

/// Writes lines to the server from a thread until it fails, never reading.
fn non_reader(addr: std::net::SocketAddr) -> TcpStream {
    let conn = TcpStream::connect(addr).unwrap();
    socket2::SockRef::from(&conn).set_recv_buffer_size(4096).unwrap();
    let mut writer = conn.try_clone().unwrap();
    std::thread::spawn(move || {
        let chunk = "2\n".repeat(32 * 1024);
        for _ in 0..100 {
            if writer.write_all(chunk.as_bytes()).is_err() {
                break;
            }
        }
    });
    conn
}

/// A drain with a deadline cuts a worker blocked sending framed replies to
/// a client that never reads, as it cuts a stream handler.
#[test]
fn the_drain_timeout_cuts_a_framed_worker_blocked_on_a_client_that_never_reads() {
    let _alone = BLOCKING_TESTS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let server = framed(echo_to_a_small_buffer(), |b| {
        b.dispatch(WorkerPool::new(1).into()).drain_timeout(Some(Duration::from_secs(1)))
    });
    let (addr, closed, stop) = serve_then_close(server);
    let _hog = non_reader(addr);
    common::process::eventually("the worker to block sending to the hog", a_worker_blocks_sending);
    stop.request_shutdown();
    let stats = closed.recv_timeout(IO_TIMEOUT).expect("the drain ends at its deadline");
    assert_eq!(stats.cut_at_drain, 1, "{stats:?}");
}

/// `max_connections` counts a framed connection a worker gave back without
/// waking the loop: the client past the limit waits in the backlog while
/// the others are open, whatever the timing.
#[test]
fn max_connections_holds_while_framed_connections_come_back_from_workers() {
    let server = framed(echo_line(), |b| b.dispatch(WorkerPool::new(2).into()).max_connections(10));
    let running = Running::start(server);
    let mut clients: Vec<BufReader<TcpStream>> = (0..10).map(|_| BufReader::new(connect(&running))).collect();
    for client in &mut clients {
        client.get_mut().write_all(b"ping\n").unwrap();
        let mut line = String::new();
        client.read_line(&mut line).unwrap();
    }
    // Past the limit: it waits in the backlog, its request with it.
    let mut extra = connect(&running);
    extra.write_all(b"extra\n").unwrap();
    for _ in 0..500 {
        for client in &mut clients {
            client.get_mut().write_all(b"ping\n").unwrap();
        }
        for client in &mut clients {
            let mut line = String::new();
            client.read_line(&mut line).unwrap();
            assert_eq!(line, "ping\n");
        }
    }
    extra.set_nonblocking(true).unwrap();
    let read = std::io::Read::read(&mut extra, &mut [0u8; 16]);
    assert!(read.is_err(), "the 11th connection was served: {read:?}");
    // One leaves: the 11th is served.
    drop(clients.pop());
    extra.set_nonblocking(false).unwrap();
    let mut line = String::new();
    BufReader::new(&extra).read_line(&mut line).unwrap();
    assert_eq!(line, "extra\n");
    drop(clients);
    running.stop().unwrap();
}

/// `served` counts requests whose answer went out: answers gathered for a
/// client that reset before they were sent are errors.
#[test]
fn answers_that_never_went_out_are_not_counted_served() {
    let (started_tx, started) = std::sync::mpsc::channel();
    let server = framed(slow_echo(Duration::from_millis(300), started_tx), |b| b.dispatch(WorkerPool::new(1).into()));
    let stats = server.stats_handle();
    let running = Running::start(server);
    let mut conn = connect(&running);
    let pipelined: String = std::iter::once("slow\n".to_owned()).chain((0..50).map(|i| format!("{i}\n"))).collect();
    conn.write_all(pipelined.as_bytes()).unwrap();
    started.recv_timeout(IO_TIMEOUT).unwrap();
    socket2::SockRef::from(&conn).set_linger(Some(Duration::ZERO)).unwrap();
    drop(conn);
    common::process::eventually("the failed send to be counted", || stats.get().errors + stats.get().served >= 51);
    let stats = stats.get();
    assert_eq!((stats.served, stats.errors), (0, 51), "{stats:?}");
    running.stop().unwrap();
}

/// The documented way to stop is the safe one: `serve_forever` returns when
/// asked to stop, and `server_close` returns once every request the server
/// accepted has been answered, so a program that saves its state then has
/// every acknowledged change (here: pipelined increments on four
/// connections, the stop coming while they run).
#[test]
fn server_close_returns_once_every_acknowledged_change_is_made() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    let counter = Arc::new(AtomicU64::new(0));
    let (started_tx, started) = std::sync::mpsc::channel();
    let started_tx = std::sync::Mutex::new(started_tx);
    let handler = {
        let counter = Arc::clone(&counter);
        move |req: &mut Request<'_>| {
            let mut line = String::new();
            req.rfile.read_line(&mut line)?;
            let _ = started_tx.lock().unwrap().send(());
            std::thread::sleep(Duration::from_millis(1));
            let now = counter.fetch_add(1, Ordering::SeqCst) + 1;
            writeln!(req.wfile, "{now}")
        }
    };
    let server =
        framed(handler, |b| b.dispatch(WorkerPool::new(2).into()).drain_timeout(Some(Duration::from_secs(10))));
    let accepted = server.stats_handle();
    let (addr, closed, stop) = serve_then_close(server);
    let mut clients: Vec<TcpStream> = (0..4).map(|_| TcpStream::connect(addr).unwrap()).collect();
    for client in &mut clients {
        client.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        client.write_all("incr\n".repeat(100).as_bytes()).unwrap();
    }
    started.recv_timeout(IO_TIMEOUT).unwrap();
    // Accepted by the server, not only by the kernel: a stop closes the
    // listener, and what waits in its backlog is refused (reset), not
    // acknowledged.
    common::process::eventually("all four accepted", || accepted.get().accepted == 4);
    stop.request_shutdown();
    let stats = closed.recv_timeout(IO_TIMEOUT).expect("the close ends");
    let saved = counter.load(Ordering::SeqCst);
    let acknowledged: u64 = clients.iter_mut().map(|c| read_all(c).lines().count() as u64).sum();
    assert_eq!((acknowledged, saved, stats.served), (400, 400, 400));
}
