//! Framed messages (`ServerBuilder::framing`; README, "Many connections"):
//! connections go back to the serving loop between messages, so a small
//! pool serves many keep-alive clients; pipelined messages are answered in
//! order; an oversized message closes only its connection, or comes in
//! pieces the handler answers; a last line
//! without its newline is answered; the same prime handler serves it.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use common::process::*;
use common::{Errors, IO_TIMEOUT, Running};
use socketserver::{Dispatch, Error, Framing, Request, TcpServer, UnixStreamServer, WorkerPool};

/// Echoes the message after `> `: each message is a request of its own.
fn echo() -> impl Fn(&mut Request<'_>) -> std::io::Result<()> + Send + Sync + 'static {
    |req: &mut Request<'_>| {
        let mut message = Vec::new();
        req.rfile.read_to_end(&mut message)?;
        req.wfile.write_all(b"> ")?;
        req.wfile.write_all(&message)
    }
}

fn connect(running: &Running) -> TcpStream {
    let conn = TcpStream::connect(running.inet()).unwrap();
    conn.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    conn
}

fn read_line(reader: &mut BufReader<TcpStream>) -> String {
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    line
}

#[test]
fn a_pool_of_two_serves_two_hundred_keep_alive_clients_asking_five_times_each() {
    let server = TcpServer::builder(echo())
        .dispatch(WorkerPool::new(2).into())
        .framing(Framing::lines(1024))
        .bind("127.0.0.1:0")
        .unwrap();
    let stats = server.stats_handle();
    let running = Running::start(server);
    let mut clients: Vec<BufReader<TcpStream>> = (0..200).map(|_| BufReader::new(connect(&running))).collect();
    for round in 0..5 {
        // Every client asks, and stays open; none holds a worker between.
        for (i, client) in clients.iter_mut().enumerate() {
            client.get_mut().write_all(format!("{i} {round}\n").as_bytes()).unwrap();
        }
        for (i, client) in clients.iter_mut().enumerate() {
            assert_eq!(read_line(client), format!("> {i} {round}\n"));
        }
    }
    // A request is counted once its answer went out, a moment after the
    // client can read it: the count is final once the server is closed.
    running.stop().unwrap();
    assert_eq!(stats.get().served, 1_000);
}

#[test]
fn pipelined_messages_are_answered_in_order_and_a_last_line_without_newline_too() {
    let server = TcpServer::builder(echo())
        .dispatch(Dispatch::threads())
        .framing(Framing::lines(1024))
        .bind("127.0.0.1:0")
        .unwrap();
    let running = Running::start(server);
    let mut conn = connect(&running);
    let request: String = (0..500).map(|i| format!("line {i}\n")).collect::<String>() + "last";
    conn.write_all(request.as_bytes()).unwrap();
    conn.shutdown(Shutdown::Write).unwrap();
    let mut answers = String::new();
    conn.read_to_string(&mut answers).unwrap();
    let expected: String = (0..500).map(|i| format!("> line {i}\n")).collect::<String>() + "> last";
    assert_eq!(answers, expected);
    running.stop().unwrap();
}

#[test]
fn an_oversized_message_closes_only_its_connection_and_is_reported() {
    let errors = Errors::default();
    let server = TcpServer::builder(echo())
        .dispatch(WorkerPool::new(2).into())
        .framing(Framing::lines(16))
        .handle_error(errors.hook())
        .bind("127.0.0.1:0")
        .unwrap();
    let stats = server.stats_handle();
    let running = Running::start(server);
    let mut good = BufReader::new(connect(&running));
    let mut bad = connect(&running);
    let bad_peer = bad.local_addr().unwrap().to_string();
    bad.write_all(&[b'x'; 100]).unwrap();
    let mut rest = Vec::new();
    assert!(bad.read_to_end(&mut rest).map_or(true, |_| rest.is_empty()), "an answer to an oversized message");
    good.get_mut().write_all(b"fine\n").unwrap();
    assert_eq!(read_line(&mut good), "> fine\n");
    eventually("the refusal is counted", || stats.get().too_long == 1);
    let errors = errors.all();
    assert!(errors[0].contains(&bad_peer) && errors[0].contains("16-byte"), "{errors:?}");
    running.stop().unwrap();
}

/// With `in_pieces`, an over-long message is the handler's to answer (a
/// "line too long" on its first piece, the rest skipped), and the
/// connection goes on: over lines, and over length prefixes from Python's
/// `socket` module, where the rest is skipped by its length.
#[test]
fn an_over_long_message_in_pieces_is_answered_and_the_connection_goes_on() {
    use socketserver::Piece;
    let errors = Errors::default();
    let handler = |req: &mut Request<'_>| match req.piece() {
        Piece::Whole => echo()(req),
        Piece::First => write!(req.wfile, "too long: {}...", String::from_utf8_lossy(&req.packet().unwrap()[..4])),
        _ => Ok(()),
    };
    let lines = TcpServer::builder(handler)
        .dispatch(WorkerPool::new(2).into())
        .framing(Framing::lines(16).in_pieces())
        .handle_error(errors.hook())
        .bind("127.0.0.1:0")
        .unwrap();
    let stats = lines.stats_handle();
    let running = Running::start(lines);
    let mut conn = BufReader::new(connect(&running));
    conn.get_mut().write_all(&[&b"abcd"[..], &[b'x'; 100_000], b"\nfine\n"].concat()).unwrap();
    // Replies go back as written: the first has no newline of its own.
    assert_eq!(read_line(&mut conn), "too long: abcd...> fine\n");
    running.stop().unwrap();
    // Each piece is a request of its own: the long line's, then `fine`.
    let pieces = (4 + 100_000 + 1_u64).div_ceil(16);
    assert_eq!((stats.get().too_long, stats.get().served), (0, pieces + 1));
    assert_eq!(errors.all(), Vec::<String>::new());

    let prefixed =
        TcpServer::builder(handler).framing(Framing::u16_prefixed(16).in_pieces()).bind("127.0.0.1:0").unwrap();
    let running = Running::start(prefixed);
    let script = r#"
import socket, struct, sys
with socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=20) as s:
    for body in (b"wxyz" * 10000, b"ok"):
        s.sendall(struct.pack(">H", len(body)) + body)
    f = s.makefile("rb")
    for _ in range(2):
        (n,) = struct.unpack(">H", f.read(2))
        sys.stdout.write(f.read(n).decode() + "|")
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", script, &running.inet().port().to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "python: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "too long: wxyz...|> ok|");
    running.stop().unwrap();
}

/// `custom_to_end` is told the stream ended, so a last message without
/// its delimiter is answered; `custom` drops it with an error naming the peer.
#[test]
fn a_custom_framing_told_of_the_end_answers_a_last_message_without_its_delimiter() {
    use socketserver::Split;
    let nul = |bytes: &[u8], ended: bool| {
        Ok(match bytes.iter().position(|&b| b == 0) {
            Some(end) => Some(Split { consumed: end + 1, message: 0..end }),
            None if ended => Some(Split { consumed: bytes.len(), message: 0..bytes.len() }),
            None => None,
        })
    };
    for (framing, expected) in
        [(Framing::custom_to_end(64, nul), "> a> b"), (Framing::custom(64, move |bytes| nul(bytes, false)), "> a")]
    {
        let errors = Errors::default();
        let server =
            TcpServer::builder(echo()).framing(framing).handle_error(errors.hook()).bind("127.0.0.1:0").unwrap();
        let running = Running::start(server);
        let mut conn = connect(&running);
        conn.write_all(b"a\0b").unwrap();
        conn.shutdown(Shutdown::Write).unwrap();
        let mut answers = String::new();
        conn.read_to_string(&mut answers).unwrap();
        assert_eq!(answers, expected);
        running.stop().unwrap();
        let errors = errors.all();
        if expected == "> a" {
            assert!(errors.len() == 1 && errors[0].contains("closed inside a message"), "{errors:?}");
        } else {
            assert_eq!(errors, Vec::<String>::new());
        }
    }
}

#[test]
fn length_prefixed_frames_are_answered_framed() {
    let server = TcpServer::builder(echo()).framing(Framing::u32_prefixed(1 << 20)).bind("127.0.0.1:0").unwrap();
    let running = Running::start(server);
    let mut conn = connect(&running);
    let body = vec![7u8; 100_000];
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend(&body);
    // Two frames, the second in pieces.
    conn.write_all(&frame).unwrap();
    conn.write_all(&frame[..3]).unwrap();
    conn.write_all(&frame[3..]).unwrap();
    for _ in 0..2 {
        let mut len = [0u8; 4];
        conn.read_exact(&mut len).unwrap();
        let mut reply = vec![0u8; u32::from_be_bytes(len) as usize];
        conn.read_exact(&mut reply).unwrap();
        assert_eq!(&reply[..2], b"> ");
        assert_eq!(reply[2..], body[..]);
    }
    running.stop().unwrap();
}

#[test]
fn a_client_silent_between_messages_is_closed_at_the_idle_timeout_holding_no_worker() {
    let server = TcpServer::builder(echo())
        .framing(Framing::lines(64))
        .idle_timeout(Some(Duration::from_millis(300)))
        .bind("127.0.0.1:0")
        .unwrap();
    let stats = server.stats_handle();
    let running = Running::start(server);
    let mut silent = BufReader::new(connect(&running));
    silent.get_mut().write_all(b"one\n").unwrap();
    assert_eq!(read_line(&mut silent), "> one\n");
    // A sequential server: were the silent client holding the only worker,
    // this one would wait for the idle timeout.
    let mut other = BufReader::new(connect(&running));
    other.get_mut().write_all(b"two\n").unwrap();
    assert_eq!(read_line(&mut other), "> two\n");
    let mut rest = String::new();
    assert_eq!(silent.read_to_string(&mut rest).unwrap_or(0), 0, "closed after the idle timeout");
    assert!(stats.get().idle_closed >= 1);
    running.stop().unwrap();
}

#[test]
fn framing_with_forking_or_on_a_datagram_server_is_refused_at_bind() {
    let forked = TcpServer::builder(echo()).framing(Framing::lines(64)).forking().bind("127.0.0.1:0");
    assert!(matches!(forked, Err(Error::Config { option: "framing", .. })), "{forked:?}");
    let datagram = socketserver::UdpServer::builder(echo()).framing(Framing::lines(64)).bind("127.0.0.1:0");
    assert!(matches!(datagram, Err(Error::Config { option: "framing", .. })), "{datagram:?}");
}

/// On a Unix stream, each message also knows the peer process, as a plain
/// stream request does (SO_PEERCRED; Linux).
#[test]
fn unix_stream_connections_are_framed_too() {
    let dir = common::temp_dir();
    let path = dir.path().join("framed.sock");
    let handler = |req: &mut Request<'_>| {
        let mut message = Vec::new();
        req.rfile.read_to_end(&mut message)?;
        let pid = req.peer_credentials().map_or(0, |c| c.pid);
        write!(req.wfile, "{pid} ")?;
        req.wfile.write_all(&message)
    };
    let server = UnixStreamServer::builder(handler).framing(Framing::lines(64)).bind(&path).unwrap();
    let running = Running::start(server);
    let mut conn = std::os::unix::net::UnixStream::connect(&path).unwrap();
    conn.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    conn.write_all(b"a\nb\n").unwrap();
    let mut reader = BufReader::new(conn);
    let mut answers = String::new();
    for _ in 0..2 {
        reader.read_line(&mut answers).unwrap();
    }
    let pid = if cfg!(target_os = "linux") { std::process::id() } else { 0 };
    assert_eq!(answers, format!("{pid} a\n{pid} b\n"));
    running.stop().unwrap();
}

/// On a worker pool, a Unix stream connection waits with the workers
/// between messages, as a TCP one does: each message is answered with its
/// peer's credentials, and a client that ends its side with its last
/// message reads that answer, then the server's end.
#[test]
fn unix_stream_connections_wait_with_a_pool_s_workers_and_end_with_their_clients() {
    let dir = common::temp_dir();
    let path = dir.path().join("pooled.sock");
    let handler = |req: &mut Request<'_>| {
        let mut message = Vec::new();
        req.rfile.read_to_end(&mut message)?;
        let known = req.peer_credentials().is_some();
        write!(req.wfile, "{known} ")?;
        req.wfile.write_all(&message)
    };
    let server = UnixStreamServer::builder(handler)
        .dispatch(WorkerPool::new(2).into())
        .framing(Framing::lines(64))
        .bind(&path)
        .unwrap();
    let running = Running::start(server);
    let known = cfg!(target_os = "linux");
    for client in 0..20 {
        let conn = std::os::unix::net::UnixStream::connect(&path).unwrap();
        conn.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let mut reader = BufReader::new(conn.try_clone().unwrap());
        for n in 0..3 {
            (&conn).write_all(format!("{client}.{n}\n").as_bytes()).unwrap();
            let mut answer = String::new();
            reader.read_line(&mut answer).unwrap();
            assert_eq!(answer, format!("{known} {client}.{n}\n"));
        }
        (&conn).write_all(b"last\n").unwrap();
        conn.shutdown(std::net::Shutdown::Write).unwrap();
        let mut rest = String::new();
        let end = reader.read_to_string(&mut rest);
        assert!(end.is_ok() && rest == format!("{known} last\n"), "client {client}: {end:?} {rest:?}");
    }
    running.stop().unwrap();
}

/// The prime service, unchanged, over `--framing lines`: the seed list on
/// one keep-alive connection, each line answered as it comes.
#[test]
fn prime_serve_framing_lines_answers_each_line_on_a_kept_connection() {
    let mut serve = Serve::start("tcp", "127.0.0.1:0", &["--workers", "2", "--framing", "lines"]);
    let conn = TcpStream::connect(&serve.address).unwrap();
    conn.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    for (n, answer) in [("4j", "E\n"), ("4", "F\n"), ("5", "T\n"), ("1125899906842623", "F\n")] {
        (&conn).write_all(format!("{n}\n").as_bytes()).unwrap();
        assert_eq!(read_line(&mut reader), answer, "{n}");
    }
    let refused = std::process::Command::new(prime_binary())
        .args(["serve", "tcp", "127.0.0.1:0", "--fork", "--framing", "lines"])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--framing"));
    assert!(serve.signal("TERM").success());
}

/// State kept for a connection lives from message to message of that
/// connection, and never leaks into another's, even on a pool.
#[test]
fn connection_state_lives_between_messages_of_one_connection_only() {
    let handler = |req: &mut Request<'_>| {
        let mut message = String::new();
        req.rfile.read_to_string(&mut message)?;
        let seen = req.connection_state::<Vec<String>>().expect("framed messages have state");
        seen.push(message.trim().to_string());
        let joined = seen.join(",");
        writeln!(req.wfile, "{joined}")
    };
    let server = TcpServer::builder(handler)
        .dispatch(WorkerPool::new(2).into())
        .framing(Framing::lines(64))
        .bind("127.0.0.1:0")
        .unwrap();
    let running = Running::start(server);
    let mut clients = [BufReader::new(connect(&running)), BufReader::new(connect(&running))];
    for (i, word) in [(0, "a1"), (1, "b1"), (0, "a2"), (1, "b2"), (0, "a3")] {
        clients[i].get_mut().write_all(format!("{word}\n").as_bytes()).unwrap();
        let _ = read_line(&mut clients[i]);
    }
    let [a, b] = &mut clients;
    a.get_mut().write_all(b"a4\n").unwrap();
    assert_eq!(read_line(a), "a1,a2,a3,a4\n");
    b.get_mut().write_all(b"b3\n").unwrap();
    assert_eq!(read_line(b), "b1,b2,b3\n");
    running.stop().unwrap();
}

/// A plain stream request has connection state (it lives as long as the
/// connection); a datagram has none. A framed message says it is one.
#[test]
fn connection_state_is_none_only_for_datagrams_and_a_framed_message_says_it_is_one() {
    let handler = |req: &mut Request<'_>| {
        let has = req.connection_state::<u8>().is_some();
        writeln!(req.wfile, "{has} {:?}", req.kind())
    };
    let running = Running::start(TcpServer::builder(handler).bind("127.0.0.1:0").unwrap());
    let mut conn = connect(&running);
    conn.shutdown(Shutdown::Write).unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).unwrap();
    assert_eq!(answer, "true Stream\n");
    running.stop().unwrap();

    let udp = socketserver::UdpServer::bind("127.0.0.1:0", handler).unwrap();
    let running = Running::start(udp);
    let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    client.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    client.send_to(b"x", running.inet()).unwrap();
    let mut reply = [0u8; 64];
    let n = client.recv(&mut reply).unwrap();
    assert_eq!(&reply[..n], b"false Datagram\n");
    running.stop().unwrap();

    let framed = TcpServer::builder(handler).framing(Framing::lines(64)).bind("127.0.0.1:0").unwrap();
    let running = Running::start(framed);
    let mut conn = BufReader::new(connect(&running));
    conn.get_mut().write_all(b"x\n").unwrap();
    assert_eq!(read_line(&mut conn), "true Message\n");
    running.stop().unwrap();
}

/// A restart (`hand_over`) with many framed connections open: those
/// between messages are closed (nothing of theirs is lost; the successor
/// takes their next connection), and one inside a message is carried until
/// its message is whole and answered.
#[test]
fn a_hand_over_closes_connections_between_messages_and_answers_one_inside_a_message() {
    let server = TcpServer::builder(echo())
        .dispatch(WorkerPool::new(2).into())
        .framing(Framing::lines(64))
        .bind("127.0.0.1:0")
        .unwrap();
    let stats = server.stats_handle();
    let running = Running::start(server);
    let mut idle: Vec<_> = (0..300).map(|_| BufReader::new(connect(&running))).collect();
    for (i, client) in idle.iter_mut().enumerate() {
        client.get_mut().write_all(format!("{i}\n").as_bytes()).unwrap();
        assert_eq!(read_line(client), format!("> {i}\n"));
    }
    let mut inside = BufReader::new(connect(&running));
    inside.get_mut().write_all(b"12").unwrap();
    // Accepted first: one still in the backlog when the listener closes
    // (no successor takes it over here) is reset by the kernel.
    eventually("the server accepted the client inside a message", || stats.get().accepted == 301);
    running.stop.hand_over();
    for client in &mut idle {
        let mut rest = String::new();
        assert_eq!(client.read_to_string(&mut rest).unwrap(), 0, "closed between messages");
    }
    // The hand-over is under way (the idle ones are closed): the rest of
    // the message still gets its answer.
    inside.get_mut().write_all(b"3\n").unwrap();
    assert_eq!(read_line(&mut inside), "> 123\n");
    let mut rest = String::new();
    assert_eq!(inside.read_to_string(&mut rest).unwrap(), 0);
    running.stop().unwrap();
}
