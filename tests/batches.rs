//! How a framed connection's messages are answered in batches (README,
//! "Many connections"): a worker answers what a client pipelined, within a
//! budget, so busy clients cannot starve the others; it never waits on a
//! message that is still arriving; the replies of a batch leave in one
//! write.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::process::*;
use common::{IO_TIMEOUT, LoopGate, Running};
use socketserver::{Framing, Request, TcpServer, WorkerPool};

/// Answers each message with itself.
fn echo() -> impl Fn(&mut Request<'_>) -> std::io::Result<()> + Send + Sync + 'static {
    |req: &mut Request<'_>| {
        let mut line = String::new();
        req.rfile.read_line(&mut line)?;
        req.wfile.write_all(line.as_bytes())
    }
}

fn connect(running: &Running) -> TcpStream {
    let conn = TcpStream::connect(running.inet()).unwrap();
    conn.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    conn
}

/// Answers each message with itself, a millisecond later for a busy
/// client's (so what it pipelines keeps its socket full).
fn slow_for_the_busy() -> impl Fn(&mut Request<'_>) -> std::io::Result<()> + Send + Sync + 'static {
    |req: &mut Request<'_>| {
        let mut line = String::new();
        req.rfile.read_line(&mut line)?;
        if line.starts_with("busy") {
            std::thread::sleep(Duration::from_millis(1));
        }
        req.wfile.write_all(line.as_bytes())
    }
}

/// Two clients that pipeline without pause, on a pool of two, would hold
/// both workers for as long as they send if a worker answered a connection
/// while it had input: their 999-byte lines seldom end where a read ends,
/// so there is always part of a message in. The budget sends each back to
/// the loop after a run of messages, so fifty others are each answered
/// within a bound (5 s) far above the time their work takes.
#[test]
fn two_clients_pipelining_without_pause_do_not_starve_fifty_others_on_a_pool_of_two() {
    let server = TcpServer::builder(slow_for_the_busy())
        .dispatch(WorkerPool::new(2).into())
        .framing(Framing::lines(1024))
        .bind("127.0.0.1:0")
        .unwrap();
    let running = Running::start(server);
    common::fifty_answered_beside_two_pipelining_without_pause(running.inet());
    running.stop().unwrap();
}

/// A worker that answered a whole message never waits for the rest of the
/// half one behind it: the connection goes back to the loop, and the only
/// worker of the pool answers the next client.
#[test]
fn a_half_message_behind_a_whole_one_holds_no_worker() {
    let server = TcpServer::builder(echo())
        .dispatch(WorkerPool::new(1).into())
        .framing(Framing::lines(1024))
        .bind("127.0.0.1:0")
        .unwrap();
    let running = Running::start(server);
    let first = connect(&running);
    (&first).write_all(b"whole\nhal").unwrap();
    let mut first_reader = BufReader::new(first.try_clone().unwrap());
    let mut answer = String::new();
    first_reader.read_line(&mut answer).unwrap();
    assert_eq!(answer, "whole\n");
    let second = connect(&running);
    (&second).write_all(b"next\n").unwrap();
    answer.clear();
    BufReader::new(second).read_line(&mut answer).unwrap();
    assert_eq!(answer, "next\n");
    (&first).write_all(b"f\n").unwrap();
    answer.clear();
    first_reader.read_line(&mut answer).unwrap();
    assert_eq!(answer, "half\n");
    running.stop().unwrap();
}

/// `prime serve tcp --workers 2 --framing lines` under `strace -f`,
/// tracing the calls `filter` names.
struct Traced {
    serve: Serve,
    out: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Traced {
    /// `None` (the test is skipped, and says so) without `strace`.
    fn start(filter: &str) -> Option<Traced> {
        if Command::new("strace").arg("-V").stdout(Stdio::null()).status().is_err() {
            eprintln!("strace is not installed; skipped");
            return None;
        }
        let dir = common::temp_dir();
        let out = dir.path().join("strace.txt");
        let serve = Serve::from_command(
            Command::new("strace")
                .args(["-f", "-qq", "-s", "512", "-e", filter, "-o"])
                .arg(&out)
                .arg(prime_binary())
                .args(["serve", "tcp", "127.0.0.1:0", "--workers", "2", "--framing", "lines"])
                .stderr(Stdio::null()),
        );
        Some(Traced { serve, out, _dir: dir })
    }

    /// Stops the server; the trace, and the server's process id.
    fn stop(mut self) -> (String, u32) {
        // The child is strace; the server is its child, and strace exits with it.
        let server = children_of(self.serve.pid())[0];
        send_signal(server, "TERM");
        assert!(self.serve.wait().success());
        (std::fs::read_to_string(&self.out).unwrap(), server)
    }
}

/// Sixteen lines sent at once to `prime serve --framing lines` are answered
/// by one worker in one batch, and the sixteen answers leave in one send
/// (`strace` sees them in one call). Skipped without `strace`.
#[test]
fn the_answers_to_a_pipelined_batch_leave_in_one_send() {
    let Some(traced) = Traced::start("trace=write,writev,sendto,sendmsg") else { return };
    let conn = TcpStream::connect(&traced.serve.address).unwrap();
    conn.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let numbers: Vec<u64> = (1..=16).map(|i| i * 7).collect();
    let request: String = numbers.iter().map(|n| format!("{n}\n")).collect();
    let expected: String = numbers.iter().map(|&n| if n == 7 { "T\n" } else { "F\n" }).collect();
    (&conn).write_all(request.as_bytes()).unwrap();
    let mut reader = BufReader::new(conn);
    let mut answers = String::new();
    for _ in 0..16 {
        reader.read_line(&mut answers).unwrap();
    }
    assert_eq!(answers, expected);
    let (traced, _) = traced.stop();
    let in_one = format!("\"{}\"", expected.replace('\n', "\\n"));
    let sends: Vec<&str> = traced.lines().filter(|l| l.contains("T\\n") || l.contains("F\\n")).collect();
    assert!(sends.iter().any(|l| l.contains(&in_one)), "no single send carried all 16 answers: {sends:#?}");
}

/// On a worker pool, a framed connection between messages waits with the
/// workers, not in the loop (README, "Many connections"); its timeouts
/// still hold there: a client that keeps asking within `idle_timeout` is
/// answered every time, one that goes silent is closed at it (counted in
/// `idle_closed`), and no worker waits on it meanwhile.
#[test]
fn a_connection_parked_with_the_workers_keeps_its_idle_timeout() {
    let server = TcpServer::builder(echo())
        .dispatch(WorkerPool::new(1).into())
        .framing(Framing::lines(64))
        .idle_timeout(Some(Duration::from_millis(400)))
        .bind("127.0.0.1:0")
        .unwrap();
    let stats = server.stats_handle();
    let running = Running::start(server);
    let mut silent = BufReader::new(connect(&running));
    silent.get_mut().write_all(b"one\n").unwrap();
    let mut line = String::new();
    silent.read_line(&mut line).unwrap();
    assert_eq!(line, "one\n");
    // The only worker is free for another client while `silent` waits.
    // Asking every 100 ms for 800 ms, it outlives the 400 ms idle timeout.
    let mut talking = BufReader::new(connect(&running));
    let started = Instant::now();
    for i in 0..8 {
        talking.get_mut().write_all(format!("{i}\n").as_bytes()).unwrap();
        line.clear();
        talking.read_line(&mut line).unwrap();
        assert_eq!(line, format!("{i}\n"), "after {:?}", started.elapsed());
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut rest = String::new();
    let end = silent.read_to_string(&mut rest);
    assert!(matches!(end, Ok(0)), "not closed at its idle timeout: {end:?} {rest:?}");
    eventually("the silent client is counted as closed idle", || stats.get().idle_closed >= 1);
    running.stop().unwrap();
}

/// A persistent client's messages, once its connection has waited between
/// two of them, are read and answered by the worker its socket woke: the
/// serving loop makes no system call for them (`strace` counts the loop
/// thread's reads and waits: 200 messages through the loop would cost at
/// least 400). Skipped without `strace`.
#[test]
fn a_persistent_client_s_messages_do_not_pass_through_the_serving_loop() {
    let Some(traced) = Traced::start("trace=read,recvfrom,epoll_wait,epoll_pwait,futex") else { return };
    let conn = TcpStream::connect(&traced.serve.address).unwrap();
    conn.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut answer = String::new();
    for n in 0..200 {
        (&conn).write_all(format!("{}\n", 2 * n + 9).as_bytes()).unwrap();
        answer.clear();
        reader.read_line(&mut answer).unwrap();
        assert!(answer == "T\n" || answer == "F\n", "{n}: {answer:?}");
    }
    let (traced, server) = traced.stop();
    // The loop is the process's main thread: its lines carry the process id.
    let by_loop = traced.lines().filter(|l| l.starts_with(&format!("{server} "))).count();
    assert!(by_loop < 100, "the loop made {by_loop} reads and waits for 200 messages:\n{traced}");
}

/// A parked connection whose client ends it is closed by the worker its
/// socket woke, and its place is free at once: under `max_connections(1)`
/// the next client is answered (the loop, full, waits for that place
/// without a `poll_interval` to look again).
#[test]
fn a_parked_connection_its_client_ended_frees_its_place_under_max_connections() {
    let server = TcpServer::builder(echo())
        .dispatch(WorkerPool::new(2).into())
        .framing(Framing::lines(64))
        .max_connections(1)
        .poll_interval(None)
        .bind("127.0.0.1:0")
        .unwrap();
    let running = Running::start(server);
    for i in 0..20 {
        let conn = connect(&running);
        (&conn).write_all(format!("{i}\n").as_bytes()).unwrap();
        let mut reader = BufReader::new(conn);
        let mut line = String::new();
        let read = reader.read_line(&mut line);
        assert!(read.is_ok() && line == format!("{i}\n"), "client {i}: {read:?} {line:?}");
        // Parked now; this client ends it.
    }
    running.stop().unwrap();
}

/// A client that sends its request and ends its side at once (as `nc -N`
/// and one-shot HTTP/1.0 clients do) reads its answer, then the server's
/// end. Its bytes and its end often come in one report to the worker that
/// answers it; the read that takes the bytes does not take the end, so the
/// connection, parked again, must report that end again: each of these 300
/// clients would otherwise wait for ever in a server holding its
/// connection half-closed.
#[test]
fn a_client_that_ends_its_side_with_its_request_reads_its_answer_then_the_end() {
    let server = TcpServer::builder(echo())
        .dispatch(WorkerPool::new(2).into())
        .framing(Framing::lines(64))
        .bind("127.0.0.1:0")
        .unwrap();
    let running = Running::start(server);
    for i in 0..300 {
        let mut conn = connect(&running);
        conn.write_all(format!("{i}\n").as_bytes()).unwrap();
        conn.shutdown(std::net::Shutdown::Write).unwrap();
        let mut answer = String::new();
        let read = conn.read_to_string(&mut answer);
        assert!(read.is_ok() && answer == format!("{i}\n"), "client {i}: {read:?} {answer:?}");
    }
    running.stop().unwrap();
}

/// A framed connection between messages waits with the workers: the worker
/// its next message wakes answers it without the serving loop, so it is
/// answered even while the loop is held (here in `verify_request`, by a
/// new client).
#[test]
fn a_parked_connection_is_answered_by_the_workers_while_the_loop_is_busy() {
    let gate = LoopGate::default();
    let server = TcpServer::builder(echo())
        .dispatch(WorkerPool::new(2).into())
        .framing(Framing::lines(64))
        .verify_request(gate.verify())
        .bind("127.0.0.1:0")
        .unwrap();
    let running = Running::start(server);
    let _open = gate.opened_on_drop();
    let mut parked = BufReader::new(connect(&running));
    let mut ask = |line: &str| {
        parked.get_mut().write_all(line.as_bytes()).unwrap();
        let mut answer = String::new();
        parked.read_line(&mut answer).unwrap();
        answer
    };
    // The first message comes through the loop; its worker parks the
    // connection itself.
    assert_eq!(ask("one\n"), "one\n");
    gate.close();
    let mut newcomer = BufReader::new(connect(&running));
    gate.wait_until_held();
    for n in 2..5 {
        assert_eq!(ask(&format!("{n}\n")), format!("{n}\n"), "while the loop is held");
    }
    gate.open();
    newcomer.get_mut().write_all(b"new\n").unwrap();
    let mut answer = String::new();
    newcomer.read_line(&mut answer).unwrap();
    assert_eq!(answer, "new\n");
    running.stop().unwrap();
}
