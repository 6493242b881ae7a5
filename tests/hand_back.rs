//! Stream handlers that hand their connection back to the loop between
//! requests (`Request::hand_back`; README, "Many connections"): a pool of 2
//! serves 50 keep-alive clients; what the reader buffered travels with the
//! connection; a client closing between requests is no request; a silent
//! one is closed at the idle timeout, holding no worker; on a pool, a kept
//! connection is served by the workers without the loop, and a report of
//! bytes its handler read itself holds no worker, whatever pieces its
//! requests come in and however long its handler converses; a client
//! that ends its side with its request reads its answer, then the end,
//! over TCP and Unix streams; a forked child cannot hand back.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::process::eventually;
use common::{Errors, IO_TIMEOUT, LoopGate, Running};
use socketserver::{Dispatch, Request, TcpServer, WorkerPool};

/// Answers one line, saying whether the connection went back, then hands
/// it back; an empty line is answered and the connection closed.
fn one_line_then_back() -> impl Fn(&mut Request<'_>) -> std::io::Result<()> + Send + Sync + 'static {
    |req: &mut Request<'_>| {
        let mut line = String::new();
        if req.rfile.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let back = line != "\n" && req.hand_back();
        write!(req.wfile, "{back} {line}")
    }
}

fn connect(running: &Running) -> BufReader<TcpStream> {
    let conn = TcpStream::connect(running.inet()).unwrap();
    conn.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    BufReader::new(conn)
}

fn ask(client: &mut BufReader<TcpStream>, line: &str) -> String {
    client.get_mut().write_all(line.as_bytes()).unwrap();
    let mut answer = String::new();
    client.read_line(&mut answer).unwrap();
    answer
}

/// Asks `kept` twice (of a `one_line_then_back` server on a pool): its
/// connection goes back and parks, its second request answered from there,
/// so newcomers park from now on too.
fn parks_from_now_on(kept: &mut BufReader<TcpStream>) {
    for line in ["kept\n", "again\n"] {
        assert_eq!(ask(kept, line), format!("true {line}"));
    }
}

#[test]
fn a_pool_of_two_serves_fifty_keep_alive_clients_whose_handler_hands_back() {
    let errors = Errors::default();
    let server = TcpServer::builder(one_line_then_back())
        .dispatch(WorkerPool::new(2).into())
        .handle_error(errors.hook())
        .bind("127.0.0.1:0")
        .unwrap();
    let stats = server.stats_handle();
    let running = Running::start(server);
    // All connected at once and kept: were each holding a worker, the
    // third client would never be answered.
    let mut clients: Vec<_> = (0..50).map(|_| connect(&running)).collect();
    for round in 0..3 {
        for (i, client) in clients.iter_mut().enumerate() {
            assert_eq!(ask(client, &format!("{round}.{i}\n")), format!("true {round}.{i}\n"));
        }
    }
    // An empty line: answered without handing back, then closed.
    assert_eq!(ask(&mut clients[0], "\n"), "false \n");
    let mut rest = String::new();
    assert_eq!(clients[0].read_to_string(&mut rest).unwrap(), 0);
    running.stop().unwrap();
    assert_eq!(stats.get().served, 50 * 3 + 1);
    assert_eq!(errors.all(), Vec::<String>::new());
}

#[test]
fn bytes_the_reader_buffered_travel_with_the_connection_to_its_next_request() {
    let server = TcpServer::bind("127.0.0.1:0", one_line_then_back()).unwrap();
    let stats = server.stats_handle();
    let running = Running::start(server);
    let mut client = connect(&running);
    // One write: the first request's reader takes all three lines off the
    // socket, handles one, and the other two go back with the connection.
    client.get_mut().write_all(b"a\nb\nc\n").unwrap();
    let mut answers = String::new();
    for _ in 0..3 {
        client.read_line(&mut answers).unwrap();
    }
    assert_eq!(answers, "true a\ntrue b\ntrue c\n");
    running.stop().unwrap();
    assert_eq!(stats.get().served, 3, "one request per line");
}

#[test]
fn a_client_that_closes_between_requests_ends_its_connection_without_a_request() {
    let errors = Errors::default();
    let server = TcpServer::builder(one_line_then_back())
        .dispatch(Dispatch::threads())
        .handle_error(errors.hook())
        .bind("127.0.0.1:0")
        .unwrap();
    let stats = server.stats_handle();
    let running = Running::start(server);
    let mut client = connect(&running);
    assert_eq!(ask(&mut client, "1\n"), "true 1\n");
    drop(client);
    let mut client = connect(&running);
    assert_eq!(ask(&mut client, "2\n"), "true 2\n");
    client.get_mut().shutdown(std::net::Shutdown::Write).unwrap();
    let mut rest = String::new();
    assert_eq!(client.read_to_string(&mut rest).unwrap(), 0, "the server closes its side too");
    running.stop().unwrap();
    let stats = stats.get();
    assert_eq!((stats.served, stats.errors), (2, 0), "{stats:?}");
    assert_eq!(errors.all(), Vec::<String>::new());
}

#[test]
fn a_kept_connection_silent_past_the_idle_timeout_is_closed_holding_no_worker() {
    let server = TcpServer::builder(one_line_then_back())
        .dispatch(WorkerPool::new(1).into())
        .idle_timeout(Some(Duration::from_millis(300)))
        .bind("127.0.0.1:0")
        .unwrap();
    let stats = server.stats_handle();
    let running = Running::start(server);
    let mut silent = connect(&running);
    assert_eq!(ask(&mut silent, "one\n"), "true one\n");
    // The pool's only worker is free while `silent` thinks.
    let mut other = connect(&running);
    assert_eq!(ask(&mut other, "two\n"), "true two\n");
    let mut rest = String::new();
    assert_eq!(silent.read_to_string(&mut rest).unwrap(), 0, "closed at the idle timeout");
    eventually("the silent connection is counted as idle-closed", || stats.get().idle_closed >= 1);
    running.stop().unwrap();
}

/// On a worker pool, a kept connection waits with the workers between
/// requests (README, "Many connections"): the worker its next request
/// wakes runs its handler, without the serving loop, so it is served even
/// while the loop is held (here in `verify_request`, by a new client).
#[test]
fn a_kept_connection_is_served_by_the_workers_while_the_loop_is_busy() {
    let gate = LoopGate::default();
    let server = TcpServer::builder(one_line_then_back())
        .dispatch(WorkerPool::new(2).into())
        .verify_request(gate.verify())
        .bind("127.0.0.1:0")
        .unwrap();
    let running = Running::start(server);
    let _open = gate.opened_on_drop();
    let mut kept = connect(&running);
    // The first request comes through the loop; the second wakes a worker,
    // which parks the connection again itself.
    assert_eq!(ask(&mut kept, "one\n"), "true one\n");
    assert_eq!(ask(&mut kept, "two\n"), "true two\n");
    gate.close();
    let mut newcomer = connect(&running);
    gate.wait_until_held();
    for n in 3..6 {
        assert_eq!(ask(&mut kept, &format!("{n}\n")), format!("true {n}\n"), "while the loop is held");
    }
    gate.open();
    assert_eq!(ask(&mut newcomer, "new\n"), "true new\n");
    running.stop().unwrap();
}

/// A kept connection's socket reports each time bytes come, and bytes its
/// handler reads itself report too: here the second line of each request,
/// sent while the handler waits for it (it asked for it). That report is
/// still pending when the pool's only worker parks the connection again,
/// with nothing left to read. The worker must not then wait on the silent
/// connection: the second client would never be answered.
#[test]
fn a_report_of_bytes_a_kept_handler_read_itself_holds_no_worker() {
    let two_lines = |req: &mut Request<'_>| {
        let (mut first, mut second) = (String::new(), String::new());
        if req.rfile.read_line(&mut first)? == 0 {
            return Ok(());
        }
        // Reading flushes this first: the client sends its second line.
        req.wfile.write_all(b"and?\n")?;
        req.rfile.read_line(&mut second)?;
        req.hand_back();
        write!(req.wfile, "{} {}", first.trim(), second)
    };
    let server = TcpServer::builder(two_lines)
        .dispatch(WorkerPool::new(1).into())
        .idle_timeout(Some(Duration::from_secs(60)))
        .bind("127.0.0.1:0")
        .unwrap();
    let stats = server.stats_handle();
    let running = Running::start(server);
    let ask_twice = |client: &mut BufReader<TcpStream>, n: u32| {
        assert_eq!(ask(client, &format!("{n}\n")), "and?\n");
        assert_eq!(ask(client, "more\n"), format!("{n} more\n"));
    };
    let mut first = connect(&running);
    for n in 0..5 {
        ask_twice(&mut first, n);
    }
    // `first` is silent from now on, and open.
    let mut second = connect(&running);
    for n in 5..8 {
        ask_twice(&mut second, n);
    }
    running.stop().unwrap();
    assert_eq!(stats.get().served, 8);
}

/// Kept connections whose requests come in pieces (each line in two or
/// three writes, some flushed while the handler waits for the rest), and
/// some pipelined, on a pool of 2: every report that comes while a handler
/// reads, or after it parked, leads to an answer, each in order, and no
/// worker is left waiting on a connection between requests.
#[test]
fn kept_clients_that_send_their_requests_in_pieces_are_all_answered_in_order() {
    let errors = Errors::default();
    let server = TcpServer::builder(one_line_then_back())
        .dispatch(WorkerPool::new(2).into())
        .handle_error(errors.hook())
        .bind("127.0.0.1:0")
        .unwrap();
    let stats = server.stats_handle();
    let running = Running::start(server);
    let clients: Vec<_> = (0..12)
        .map(|c| {
            let mut client = connect(&running);
            std::thread::spawn(move || {
                client.get_ref().set_nodelay(true).unwrap();
                let mut skip = false;
                for n in 0..150u32 {
                    if std::mem::take(&mut skip) {
                        continue; // answered with the one before it
                    }
                    let line = format!("{c}.{n}.{}\n", "x".repeat((n % 7) as usize * 300));
                    let (head, tail) = line.split_at(line.len() * (1 + (n as usize + c) % 3) / 4);
                    client.get_mut().write_all(head.as_bytes()).unwrap();
                    let mut rest = tail.to_string();
                    let mut expected = vec![line.clone()];
                    // Every fifth request goes with the next one (pipelined).
                    if n % 5 == 4 && n + 1 < 150 {
                        let next = format!("{c}.{}.\n", n + 1);
                        rest.push_str(&next);
                        expected.push(next);
                        skip = true;
                    }
                    client.get_mut().write_all(rest.as_bytes()).unwrap();
                    for expected in expected {
                        let mut answer = String::new();
                        client.read_line(&mut answer).unwrap();
                        assert_eq!(answer, format!("true {expected}"));
                    }
                }
            })
        })
        .collect();
    for client in clients {
        client.join().unwrap();
    }
    running.stop().unwrap();
    assert_eq!(errors.all(), Vec::<String>::new());
    assert_eq!(stats.get().served, 12 * 150, "one request per line");
}

/// A kept handler that converses with its client over many reads (each
/// line asked for, and sent, while the handler waits) wakes idle workers
/// with those lines' reports; its connection then reports once per park,
/// and its later requests, short or long, are answered as before.
#[test]
fn a_kept_connection_whose_handler_converses_is_answered_after() {
    let converse = |req: &mut Request<'_>| {
        let mut line = String::new();
        if req.rfile.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let lines: usize = line.trim().strip_prefix("talk ").map_or(0, |n| n.parse().unwrap_or(0));
        for _ in 0..lines {
            req.wfile.write_all(b"go\n")?;
            line.clear();
            req.rfile.read_line(&mut line)?;
        }
        req.hand_back();
        write!(req.wfile, "done {line}")
    };
    let server = TcpServer::builder(converse)
        .dispatch(WorkerPool::new(4).into())
        .idle_timeout(Some(Duration::from_secs(60)))
        .bind("127.0.0.1:0")
        .unwrap();
    let stats = server.stats_handle();
    let running = Running::start(server);
    let mut client = connect(&running);
    for round in 0..6 {
        assert_eq!(ask(&mut client, &format!("{round}\n")), format!("done {round}\n"));
        assert_eq!(ask(&mut client, "talk 30\n"), "go\n");
        for n in 0..29 {
            assert_eq!(ask(&mut client, &format!("{n}\n")), "go\n");
        }
        assert_eq!(ask(&mut client, "last\n"), "done last\n");
    }
    running.stop().unwrap();
    assert_eq!(stats.get().served, 12);
}

/// Once a pool's handler has handed a connection back, a newcomer waits
/// for its first request with the workers too (README, "Many
/// connections"): its first request is answered by the worker its bytes
/// wake, even while the loop is held (here in `verify_request`, by a later
/// client), and goes on as a kept connection.
#[test]
fn a_newcomer_s_first_request_is_answered_by_the_workers_while_the_loop_is_busy() {
    let gate = LoopGate::default();
    let server = TcpServer::builder(one_line_then_back())
        .dispatch(WorkerPool::new(2).into())
        .verify_request(gate.verify())
        .idle_timeout(Some(Duration::from_secs(60)))
        .bind("127.0.0.1:0")
        .unwrap();
    let stats = server.stats_handle();
    let running = Running::start(server);
    let _open = gate.opened_on_drop();
    let mut kept = connect(&running);
    parks_from_now_on(&mut kept);
    // Taken by the loop, and silent.
    let mut newcomer = connect(&running);
    gate.wait_until_passed(2);
    gate.close();
    let mut held_at_the_gate = connect(&running);
    gate.wait_until_held();
    for n in 0..3 {
        assert_eq!(ask(&mut newcomer, &format!("{n}\n")), format!("true {n}\n"), "while the loop is held");
    }
    gate.open();
    assert_eq!(ask(&mut held_at_the_gate, "last\n"), "true last\n");
    running.stop().unwrap();
    assert_eq!(stats.get().served, 6);
}

/// Clients that send their request and end their side at once (as `nc -N`
/// and one-shot HTTP/1.0 clients do), to a pool whose handler hands every
/// connection back, first thing or after a first request: each reads its
/// answer, then the server's end. Its
/// bytes and its end often come in one report to the worker that runs its
/// handler; the handler's read takes the bytes, not the end behind them,
/// so the worker must look again rather than park it: each of these 300
/// clients would otherwise wait for ever on a connection held half-closed.
#[test]
fn a_kept_client_that_ends_its_side_with_its_request_reads_its_answer_then_the_end() {
    let server = TcpServer::builder(one_line_then_back())
        .dispatch(WorkerPool::new(2).into())
        .idle_timeout(Some(Duration::from_secs(60)))
        .bind("127.0.0.1:0")
        .unwrap();
    let stats = server.stats_handle();
    let running = Running::start(server);
    for i in 0..300 {
        let mut client = connect(&running);
        // Every other one asks once first, and is a kept connection by then.
        if i % 2 == 1 {
            assert_eq!(ask(&mut client, "first\n"), "true first\n");
        }
        client.get_mut().write_all(format!("{i}\n").as_bytes()).unwrap();
        client.get_mut().shutdown(std::net::Shutdown::Write).unwrap();
        let mut answer = String::new();
        let read = client.read_to_string(&mut answer);
        assert!(read.is_ok() && answer == format!("true {i}\n"), "client {i}: {read:?} {answer:?}");
    }
    running.stop().unwrap();
    assert_eq!(stats.get().served, 300 + 150);
}

/// Over Unix stream sockets too, on a pool with `idle_timeout`: kept
/// clients, newcomers among them, are answered in turn, and one that ends
/// its side with its request reads its answer, then the end.
#[test]
fn unix_stream_kept_connections_and_newcomers_are_answered_by_the_workers() {
    use std::os::unix::net::UnixStream;
    let dir = common::temp_dir();
    let server = socketserver::UnixStreamServer::builder(one_line_then_back())
        .dispatch(WorkerPool::new(2).into())
        .idle_timeout(Some(IO_TIMEOUT))
        .bind(dir.path().join("kept.sock"))
        .unwrap();
    let stats = server.stats_handle();
    let running = Running::start(server);
    let connect = || {
        let conn = UnixStream::connect(running.path()).unwrap();
        conn.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        BufReader::new(conn)
    };
    let ask = |client: &mut BufReader<UnixStream>, line: &str| {
        client.get_mut().write_all(line.as_bytes()).unwrap();
        let mut answer = String::new();
        client.read_line(&mut answer).unwrap();
        answer
    };
    let mut clients: Vec<_> = (0..10).map(|_| connect()).collect();
    for round in 0..3 {
        // Newcomers join after the first round, once connections park.
        if round == 1 {
            clients.extend((0..10).map(|_| connect()));
        }
        for (i, client) in clients.iter_mut().enumerate() {
            assert_eq!(ask(client, &format!("{round}.{i}\n")), format!("true {round}.{i}\n"));
        }
    }
    for i in 0..20 {
        let mut client = connect();
        client.get_mut().write_all(format!("once.{i}\n").as_bytes()).unwrap();
        client.get_mut().shutdown(std::net::Shutdown::Write).unwrap();
        let mut answer = String::new();
        let read = client.read_to_string(&mut answer);
        assert!(read.is_ok() && answer == format!("true once.{i}\n"), "client {i}: {read:?} {answer:?}");
    }
    running.stop().unwrap();
    assert_eq!(stats.get().served, 10 + 20 * 2 + 20);
}

/// Requests a client pipelined are answered by one worker, one handler
/// run after another on the same connection, and their answers leave
/// together. A handler that panics on one of them drops that one request:
/// the answers to those before it still reach the client, then the
/// connection closes (reported as a panic), and the server goes on.
#[test]
fn a_panic_among_pipelined_kept_requests_loses_only_its_own_answer() {
    let errors = Errors::default();
    let handler = |req: &mut Request<'_>| {
        let mut line = String::new();
        if req.rfile.read_line(&mut line)? == 0 {
            return Ok(());
        }
        write!(req.wfile, "answer to {line}")?;
        assert!(line != "boom\n", "a request that panics the handler");
        req.hand_back();
        Ok(())
    };
    let server = TcpServer::builder(handler)
        .dispatch(WorkerPool::new(2).into())
        .handle_error(errors.hook())
        .bind("127.0.0.1:0")
        .unwrap();
    let running = Running::start(server);
    for pool_turn in 0..2 {
        let mut client = connect(&running);
        // The first time through the loop and the queue; the second parked.
        if pool_turn == 1 {
            assert_eq!(ask(&mut client, "first\n"), "answer to first\n");
        }
        client.get_mut().write_all(b"a\nb\nboom\nc\n").unwrap();
        let mut answers = String::new();
        let read = client.read_to_string(&mut answers);
        assert!(read.is_ok(), "{read:?}");
        assert_eq!(answers, "answer to a\nanswer to b\n", "turn {pool_turn}");
    }
    let mut after = connect(&running);
    assert_eq!(ask(&mut after, "still\n"), "answer to still\n");
    running.stop().unwrap();
    let errors = errors.all();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors.iter().all(|e| e.contains("panic")), "{errors:?}");
}

/// Pipelined requests to a handler that hands back are each charged to
/// their client's rate: past its burst the rest wait their turn, unread,
/// and every one is answered, in order.
#[test]
fn pipelined_kept_requests_over_the_rate_wait_their_turn_and_are_all_answered() {
    let (rate, burst, asks) = (20.0, 2, 8u32);
    let server = TcpServer::builder(one_line_then_back())
        .dispatch(WorkerPool::new(2).into())
        .per_client(socketserver::PerClient::new().rate(rate, burst))
        .bind("127.0.0.1:0")
        .unwrap();
    let stats = server.stats_handle();
    let running = Running::start(server);
    let mut client = connect(&running);
    let started = std::time::Instant::now();
    let lines: String = (0..asks).map(|i| format!("{i}\n")).collect();
    client.get_mut().write_all(lines.as_bytes()).unwrap();
    for i in 0..asks {
        let mut answer = String::new();
        client.read_line(&mut answer).unwrap();
        assert_eq!(answer, format!("true {i}\n"));
    }
    let least = f64::from(asks - burst) / rate;
    assert!(started.elapsed().as_secs_f64() >= least * 0.95, "{:?} for {asks} requests", started.elapsed());
    running.stop().unwrap();
    let stats = stats.get();
    assert!(stats.over_client_rate >= 1, "{stats:?}");
    assert_eq!(stats.served, u64::from(asks));
}

/// The answers to sixteen requests a kept client pipelined leave in one
/// send: `strace`, attached to this test's own process, sees one call carry
/// them all. Skipped without `strace` (or where it may not attach).
#[test]
fn the_answers_to_pipelined_kept_requests_leave_in_one_send() {
    use std::process::{Command, Stdio};
    let server = TcpServer::builder(one_line_then_back()).dispatch(WorkerPool::new(2).into()).bind("127.0.0.1:0");
    let running = Running::start(server.unwrap());
    let mut client = connect(&running);
    // Kept, and parked with the workers, before the trace starts.
    for line in ["one\n", "two\n"] {
        assert_eq!(ask(&mut client, line), format!("true {line}"));
    }
    let dir = common::temp_dir();
    let out = dir.path().join("strace.txt");
    let strace = Command::new("strace")
        .args(["-f", "-qq", "-s", "512", "-e", "trace=write,writev,sendto,sendmsg", "-o"])
        .arg(&out)
        .args(["-p", &std::process::id().to_string()])
        .stderr(Stdio::piped())
        .spawn();
    let Ok(mut strace) = strace else {
        eprintln!("strace is not installed; skipped");
        return;
    };
    // strace writes its file once attached; give up (skip) if it exits.
    let attached = (0..500).any(|_| {
        std::thread::sleep(Duration::from_millis(10));
        out.exists() || strace.try_wait().ok().flatten().is_some()
    });
    if !attached || strace.try_wait().ok().flatten().is_some() {
        eprintln!("strace could not attach to this process; skipped");
        return;
    }
    let lines: String = (0..16).map(|i| format!("p{i}\n")).collect();
    let expected: String = (0..16).map(|i| format!("true p{i}\n")).collect();
    client.get_mut().write_all(lines.as_bytes()).unwrap();
    let mut answers = String::new();
    for _ in 0..16 {
        client.read_line(&mut answers).unwrap();
    }
    assert_eq!(answers, expected);
    running.stop().unwrap();
    let _ = strace.kill();
    let _ = strace.wait();
    let traced = std::fs::read_to_string(&out).unwrap();
    let in_one = format!("\"{}\"", expected.replace('\n', "\\n"));
    let sends: Vec<&str> = traced.lines().filter(|l| l.contains("true p")).collect();
    assert!(sends.iter().any(|l| l.contains(&in_one)), "no single send carried all 16 answers: {sends:#?}");
}

/// Two kept clients that pipeline without pause, on a pool of two, would
/// hold both workers for as long as they send if a worker ran a handler
/// again whenever the next request was in: their 999-byte lines seldom end
/// where a read ends, so there is always part of one in. The budget sends
/// each back after a run of requests, so fifty newcomers are each answered
/// within a bound (5 s) far above the time their work takes.
#[test]
fn two_kept_clients_pipelining_without_pause_do_not_starve_fifty_others_on_a_pool_of_two() {
    let slow_for_the_busy = |req: &mut Request<'_>| {
        let mut line = String::new();
        if req.rfile.read_line(&mut line)? == 0 {
            return Ok(());
        }
        if line.starts_with("busy") {
            std::thread::sleep(Duration::from_millis(1));
        }
        req.wfile.write_all(line.as_bytes())?;
        req.hand_back();
        Ok(())
    };
    let server = TcpServer::builder(slow_for_the_busy)
        .dispatch(WorkerPool::new(2).into())
        .idle_timeout(Some(IO_TIMEOUT))
        .bind("127.0.0.1:0")
        .unwrap();
    let running = Running::start(server);
    common::fifty_answered_beside_two_pipelining_without_pause(running.inet());
    running.stop().unwrap();
}

#[test]
fn a_forked_child_cannot_hand_back_and_its_connection_closes() {
    let server = TcpServer::builder(one_line_then_back()).dispatch(Dispatch::fork()).bind("127.0.0.1:0").unwrap();
    let running = Running::start(server);
    let mut client = connect(&running);
    assert_eq!(ask(&mut client, "7\n"), "false 7\n");
    let mut rest = String::new();
    assert_eq!(client.read_to_string(&mut rest).unwrap(), 0);
    running.stop().unwrap();
}

#[test]
fn a_hand_over_closes_kept_connections_between_requests() {
    let server = TcpServer::builder(one_line_then_back()).dispatch(Dispatch::threads()).bind("127.0.0.1:0").unwrap();
    let running = Running::start(server);
    let mut kept: Vec<_> = (0..50).map(|_| connect(&running)).collect();
    for (i, client) in kept.iter_mut().enumerate() {
        assert_eq!(ask(client, &format!("{i}\n")), format!("true {i}\n"));
    }
    running.stop.hand_over();
    for client in &mut kept {
        let mut rest = String::new();
        assert_eq!(client.read_to_string(&mut rest).unwrap(), 0, "closed between requests");
    }
    running.stop().unwrap();
}

/// What a handler keeps in `connection_state` lives from request to request
/// of a connection it hands back, on whichever worker serves it, and never
/// leaks into another connection (nginx's `keepalive_requests`, a session).
/// A hand-over carries on the connections accepted before it that have
/// not sent their first request (README, "Restarts"), wherever they wait
/// for it: a newcomer parked with a pool's workers too. It is served when
/// it speaks, then closed.
#[test]
fn a_hand_over_serves_a_newcomer_that_had_not_spoken_yet() {
    let gate = LoopGate::default();
    let mut server = TcpServer::builder(one_line_then_back())
        .dispatch(WorkerPool::new(2).into())
        .verify_request(gate.verify())
        .idle_timeout(Some(IO_TIMEOUT))
        .bind("127.0.0.1:0")
        .unwrap();
    let to = server.server_address().as_inet().unwrap();
    let stop = server.shutdown_handle();
    let serving = std::thread::spawn(move || {
        server.serve_forever().unwrap();
        server
    });
    let connect = || {
        let conn = TcpStream::connect(to).unwrap();
        conn.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        BufReader::new(conn)
    };
    let mut kept = connect();
    parks_from_now_on(&mut kept);
    let mut newcomer = connect();
    gate.wait_until_passed(2);
    // Parked after the newcomer (as a newcomer, then kept), so the close
    // meets it after the newcomer: its end says the close has met both.
    let mut later = connect();
    assert_eq!(ask(&mut later, "later\n"), "true later\n");
    stop.hand_over();
    let server = serving.join().unwrap();
    let closing = std::thread::spawn(move || drop(server));
    let mut rest = String::new();
    assert_eq!(later.read_to_string(&mut rest).unwrap(), 0, "closed between requests");
    assert_eq!(ask(&mut newcomer, "first\n"), "true first\n", "carried on");
    let mut rest = String::new();
    assert_eq!(newcomer.read_to_string(&mut rest).unwrap(), 0, "then closed, between requests");
    closing.join().unwrap();
}

/// A stop closes the connections that have sent nothing yet, a newcomer
/// parked with a pool's workers too: it reads the server's end at the stop,
/// not at its idle timeout a minute later, and the stop does not wait for it.
#[test]
fn a_stop_closes_a_newcomer_that_has_sent_nothing() {
    let server = TcpServer::builder(one_line_then_back())
        .dispatch(WorkerPool::new(2).into())
        .idle_timeout(Some(Duration::from_secs(60)))
        .bind("127.0.0.1:0")
        .unwrap();
    let stats = server.stats_handle();
    let running = Running::start(server);
    let mut kept = connect(&running);
    parks_from_now_on(&mut kept);
    let mut newcomer = connect(&running);
    eventually("the loop took the newcomer", || stats.get().accepted == 2);
    let stopping = std::thread::spawn(move || running.stop());
    let mut rest = String::new();
    assert_eq!(newcomer.read_to_string(&mut rest).unwrap(), 0, "closed at the stop");
    stopping.join().unwrap().unwrap();
    assert_eq!(stats.get().served, 2);
}

#[test]
fn connection_state_lives_across_the_requests_of_a_handed_back_connection() {
    let handler = |req: &mut Request<'_>| {
        let mut line = String::new();
        if req.rfile.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let n = req.connection_state::<u64>().map_or(0, |n| {
            *n += 1;
            *n
        });
        req.hand_back();
        write!(req.wfile, "{n} {line}")
    };
    let server = TcpServer::builder(handler).dispatch(WorkerPool::new(2).into()).bind("127.0.0.1:0").unwrap();
    let running = Running::start(server);
    let (mut a, mut b) = (connect(&running), connect(&running));
    assert_eq!(ask(&mut a, "a\n"), "1 a\n");
    assert_eq!(ask(&mut b, "b\n"), "1 b\n");
    assert_eq!(ask(&mut a, "a\n"), "2 a\n");
    assert_eq!(ask(&mut a, "a\n"), "3 a\n");
    assert_eq!(ask(&mut b, "b\n"), "2 b\n");
    running.stop().unwrap();
}
