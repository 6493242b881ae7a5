//! Load generators that verify every answer: windowed datagrams (batched
//! with sendmmsg/recvmmsg) and pipelined streams, over several threads.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use crate::prime::answer;
use crate::sys;

/// The request mix: primes, composites and invalid lines, mostly below 2^32
/// so that no server is measured on big-number arithmetic.
const MIX: [&str; 16] = [
    "2",
    "97",
    "7919",
    "1000003",
    "4294967291",
    "4294967297",
    "561",
    "1",
    "-5",
    "100000",
    "65537",
    "999983",
    "4j",
    "17",
    "29",
    "1125899906842623",
];

/// What one load run measured.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub requests: u64,
    pub lost: u64,
    pub wrong: u64,
    pub elapsed: Duration,
    /// Latency of each answered request, in microseconds.
    pub latencies: Vec<u32>,
}

impl Stats {
    pub fn merge(mut self, other: Stats) -> Stats {
        self.requests += other.requests;
        self.lost += other.lost;
        self.wrong += other.wrong;
        self.elapsed = self.elapsed.max(other.elapsed);
        self.latencies.extend(other.latencies);
        self
    }

    pub fn per_second(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    pub fn percentile(&mut self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return 0.0;
        }
        self.latencies.sort_unstable();
        let i = ((self.latencies.len() - 1) as f64 * p).round() as usize;
        f64::from(self.latencies[i])
    }
}

fn requests() -> Vec<(Vec<u8>, &'static [u8])> {
    MIX.iter().map(|n| (format!("{n}\n").into_bytes(), answer(format!("{n}\n").as_bytes()))).collect()
}

fn micros(d: Duration) -> u32 {
    d.as_micros().min(u128::from(u32::MAX)) as u32
}

/// `threads` clients, each keeping `window` datagrams in flight for `duration`.
pub fn udp(server: SocketAddr, threads: usize, window: usize, duration: Duration) -> Stats {
    let workers: Vec<_> =
        (0..threads).map(|t| std::thread::spawn(move || udp_client(server, t, window, duration))).collect();
    workers.into_iter().map(|w| w.join().expect("udp client")).fold(Stats::default(), Stats::merge)
}

fn udp_client(server: SocketAddr, offset: usize, window: usize, duration: Duration) -> Stats {
    // A source of its own: under per-client limits, a client of its own.
    let socket = UdpSocket::bind(SocketAddr::from(([127, 0, 1, 1 + offset as u8], 0))).unwrap();
    socket.connect(server).unwrap();
    socket.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let mix = requests();
    let mut stats = Stats::default();
    let mut in_flight: VecDeque<(usize, Instant)> = VecDeque::new();
    let mut buffers = vec![vec![0u8; 64]; window];
    let mut lengths = Vec::new();
    let mut next = offset;
    let start = Instant::now();
    let send = |count: usize, next: &mut usize, in_flight: &mut VecDeque<(usize, Instant)>| {
        let now = Instant::now();
        let picks: Vec<usize> = (0..count).map(|k| (*next + k) % mix.len()).collect();
        *next += count;
        let payloads: Vec<&[u8]> = picks.iter().map(|&i| &mix[i].0[..]).collect();
        sys::send_all(&socket, &payloads).unwrap();
        in_flight.extend(picks.into_iter().map(|i| (i, now)));
    };
    send(window, &mut next, &mut in_flight);
    while !in_flight.is_empty() {
        let sending = start.elapsed() < duration;
        match sys::recv_some(&socket, &mut buffers, &mut lengths) {
            Ok(()) => {
                let now = Instant::now();
                for (b, &len) in lengths.iter().enumerate() {
                    let (i, sent) = in_flight.pop_front().expect("a reply for a request");
                    if &buffers[b][..len] == mix[i].1 {
                        stats.requests += 1;
                        stats.latencies.push(micros(now - sent));
                    } else {
                        stats.wrong += 1;
                    }
                }
                if sending {
                    send(lengths.len(), &mut next, &mut in_flight);
                }
            }
            Err(_) => {
                // Nothing for 500 ms: what is in flight is lost.
                stats.lost += in_flight.len() as u64;
                in_flight.clear();
                if sending {
                    send(window, &mut next, &mut in_flight);
                }
            }
        }
    }
    stats.elapsed = start.elapsed();
    stats
}

/// `clients` datagram clients, each from a source of its own, each asking
/// `per_second` times a second, one at a time (a request unanswered within
/// 50 ms is lost, and the next one goes).
pub fn udp_paced(server: SocketAddr, clients: usize, per_second: u32, duration: Duration) -> Stats {
    let workers: Vec<_> = (0..clients)
        .map(|c| {
            std::thread::spawn(move || {
                let socket = UdpSocket::bind(SocketAddr::from(([127, 0, 1, 1 + c as u8], 0))).unwrap();
                socket.connect(server).unwrap();
                socket.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
                let mix = requests();
                let mut stats = Stats::default();
                let (start, every) = (Instant::now(), Duration::from_secs(1) / per_second);
                let mut buffer = [0u8; 64];
                let mut i = c;
                while start.elapsed() < duration {
                    let (request, expected) = &mix[i % mix.len()];
                    let sent = Instant::now();
                    socket.send(request).unwrap();
                    match socket.recv(&mut buffer) {
                        Ok(n) if buffer[..n] == expected[..] => {
                            stats.requests += 1;
                            stats.latencies.push(micros(sent.elapsed()));
                        }
                        Ok(_) => stats.wrong += 1,
                        Err(_) => stats.lost += 1,
                    }
                    i += 1;
                    let next = start + every * (i - c) as u32;
                    std::thread::sleep(next.saturating_duration_since(Instant::now()));
                }
                stats.elapsed = start.elapsed();
                stats
            })
        })
        .collect();
    workers.into_iter().map(|w| w.join().expect("client")).fold(Stats::default(), Stats::merge)
}

/// `conns` connections, each keeping `depth` pipelined requests in flight.
/// `clients` threads, each asking one number per new TCP connection, each
/// from the next of 62,500 loopback addresses: the server closes first, so
/// its TIME_WAIT entries would otherwise collide with new connections from
/// reused ports (a SYN answered late, a second lost).
pub fn per_connection(server: SocketAddr, clients: usize, duration: Duration) -> Stats {
    let workers: Vec<_> = (0..clients)
        .map(|c| {
            std::thread::spawn(move || {
                let mix = requests();
                let mut stats = Stats::default();
                let start = Instant::now();
                let mut i = c;
                while start.elapsed() < duration {
                    let (request, expected) = &mix[i % mix.len()];
                    i += 1;
                    let source = SocketAddr::from(([127, 10 + c as u8, (i / 250 % 250) as u8, (i % 250) as u8 + 1], 0));
                    let sent = Instant::now();
                    match ask_once(source, server, request) {
                        Ok(answer) if answer == *expected => {
                            stats.requests += 1;
                            stats.latencies.push(micros(sent.elapsed()));
                        }
                        Ok(_) => stats.wrong += 1,
                        Err(_) => stats.lost += 1,
                    }
                }
                stats.elapsed = start.elapsed();
                stats
            })
        })
        .collect();
    workers.into_iter().map(|w| w.join().expect("client")).fold(Stats::default(), Stats::merge)
}

fn ask_once(source: SocketAddr, server: SocketAddr, request: &[u8]) -> std::io::Result<Vec<u8>> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    socket.bind(&source.into())?;
    socket.connect_timeout(&server.into(), Duration::from_secs(5))?;
    let mut conn = TcpStream::from(socket);
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    conn.set_nodelay(true)?;
    conn.write_all(request)?;
    conn.shutdown(std::net::Shutdown::Write)?;
    let mut answer = Vec::new();
    conn.read_to_end(&mut answer)?;
    Ok(answer)
}

/// A crowd of `count` silent connections to `server`, held by a process of
/// its own (this bench binary with `--crowd`) until dropped.
pub struct Crowd(Option<(std::process::Child, std::io::BufReader<std::process::ChildStdout>)>);

impl Crowd {
    /// `count` silent connections (`ask`: each asks once first, then stays
    /// open, as a keep-alive client does).
    pub fn open(server: SocketAddr, count: usize, ask: bool) -> Crowd {
        Crowd::start(server, count, if ask { "ask" } else { "silent" })
    }

    /// `count` silent connections from one source address, and how many
    /// of them the server still holds a moment later.
    pub fn open_from_one_source(server: SocketAddr, count: usize) -> Crowd {
        Crowd::start(server, count, "one-source")
    }

    fn start(server: SocketAddr, count: usize, mode: &str) -> Crowd {
        if count == 0 {
            return Crowd(None);
        }
        let exe = std::env::current_exe().expect("this bench");
        let args = ["--crowd", &server.to_string(), &count.to_string(), mode];
        let mut child = crate::with_fd_limit(&exe, &args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("the crowd process");
        let mut line = String::new();
        let mut out = std::io::BufReader::new(child.stdout.take().expect("stdout"));
        std::io::BufRead::read_line(&mut out, &mut line).expect("the crowd says it is open");
        eprintln!("  crowd: {}", line.trim());
        Crowd(Some((child, out)))
    }

    /// Ends the crowd; keep-alive ones ask once more first, and say how
    /// many of them were answered.
    pub fn close(mut self) {
        if let Some((mut child, mut out)) = self.0.take() {
            drop(child.stdin.take());
            let mut line = String::new();
            let _ = std::io::BufRead::read_line(&mut out, &mut line);
            if !line.trim().is_empty() {
                eprintln!("  crowd: {}", line.trim());
            }
            let _ = child.wait();
        }
    }

    /// Runs in the crowd process: opens the connections (asking once on
    /// each, with `ask`), says so, holds them until stdin closes, then (with
    /// `ask`) asks on each once more and says how many were answered.
    pub fn hold(server: &str, count: usize, mode: &str) {
        let (ask, one_source) = (mode == "ask", mode == "one-source");
        let server: SocketAddr = server.parse().expect("an address");
        let mut held = Vec::with_capacity(count);
        let mut answered = 0;
        for i in 0..count {
            let third = if one_source { 1 } else { 2 + (i / 4000) as u8 };
            let source = SocketAddr::from(([127, 0, third, 1], 0));
            let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("a socket");
            socket.bind(&source.into()).expect("bind a loopback source");
            if let Err(e) = socket.connect(&server.into()) {
                eprintln!("crowd: connection {i}: {e}");
                break;
            }
            let mut conn = TcpStream::from(socket);
            if ask {
                let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
                answered += usize::from(ask_kept(&mut conn));
            }
            held.push(conn);
        }
        let how = if ask {
            format!("keep-alive connections open, {answered} answered")
        } else if one_source {
            // Those the server closed read as ended.
            std::thread::sleep(Duration::from_millis(500));
            let open = held.iter().filter(|c| still_open(c)).count();
            format!("silent connections from one source opened, {open} still held by the server")
        } else {
            "silent connections open".into()
        };
        println!("{} {how}", held.len());
        let _ = std::io::stdout().flush();
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        if ask {
            let again = held.iter_mut().map(ask_kept).filter(|&answered| answered).count();
            println!("{again} of {} answered again", held.len());
        }
    }
}

/// Whether the server still holds `conn` open (nothing to read, no end).
fn still_open(conn: &TcpStream) -> bool {
    conn.set_nonblocking(true).is_ok()
        && matches!(conn.peek(&mut [0u8; 1]), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

/// A source flooding datagrams at full speed, counting the replies it gets.
pub struct Flood {
    thread: std::thread::JoinHandle<(u64, u64, Duration)>,
    server: SocketAddr,
    /// The kernel's count of datagrams it dropped for the server's full buffer, before.
    dropped_before: u64,
}

impl Flood {
    /// Floods `server` from 127.0.0.2 for `duration`.
    pub fn start(server: SocketAddr, duration: Duration) -> Flood {
        let thread = std::thread::spawn(move || {
            let socket = UdpSocket::bind("127.0.0.2:0").unwrap();
            socket.connect(server).unwrap();
            socket.set_nonblocking(true).unwrap();
            let batch: Vec<&[u8]> = vec![b"17\n"; 64];
            let (mut sent, mut replies) = (0u64, 0u64);
            let start = Instant::now();
            let mut buffer = [0u8; 64];
            while start.elapsed() < duration {
                if sys::send_all(&socket, &batch).is_ok() {
                    sent += batch.len() as u64;
                }
                while socket.recv(&mut buffer).is_ok() {
                    replies += 1;
                }
            }
            // Replies still on their way.
            socket.set_nonblocking(false).unwrap();
            socket.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
            while socket.recv(&mut buffer).is_ok() {
                replies += 1;
            }
            (sent, replies, start.elapsed())
        });
        Flood { thread, server, dropped_before: kernel_drops(server) }
    }

    /// Says what the flood sent and got back.
    pub fn report(self) {
        let (sent, replies, took) = self.thread.join().expect("the flood");
        let secs = took.as_secs_f64();
        let kernel = kernel_drops(self.server).saturating_sub(self.dropped_before);
        eprintln!(
            "  flood: {sent} datagrams sent ({:.0}/s), {replies} answered ({:.0}/s); the kernel dropped {kernel} of \
             all clients' for a full buffer, so the server took and dropped about {}",
            sent as f64 / secs,
            replies as f64 / secs,
            sent.saturating_sub(kernel + replies)
        );
    }
}

/// The datagrams the kernel dropped for `server`'s socket (its buffer
/// full), from /proc/net/udp.
fn kernel_drops(server: SocketAddr) -> u64 {
    let port = format!(":{:04X}", server.port());
    let table = std::fs::read_to_string("/proc/net/udp").unwrap_or_default();
    table
        .lines()
        .filter(|line| line.split_whitespace().nth(1).is_some_and(|local| local.ends_with(&port)))
        .filter_map(|line| line.split_whitespace().last()?.parse::<u64>().ok())
        .sum()
}

/// One request on a kept connection: true if answered right.
fn ask_kept(conn: &mut TcpStream) -> bool {
    let mut answer = [0u8; 2];
    conn.write_all(b"17\n").is_ok() && conn.read_exact(&mut answer).is_ok() && &answer == b"T\n"
}

/// `clients` persistent connections, each asking once every `every`, from
/// 8 threads; latency is from each request to its answer.
pub fn persistent(server: SocketAddr, clients: usize, every: Duration, duration: Duration) -> Stats {
    let threads = 8;
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            std::thread::spawn(move || {
                let mine = clients / threads + usize::from(t < clients % threads);
                let conns: Vec<TcpStream> = (0..mine)
                    .map(|i| {
                        let source = SocketAddr::from(([127, 20 + t as u8, (i / 250) as u8, (i % 250) as u8 + 1], 0));
                        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
                        socket.bind(&source.into()).unwrap();
                        socket.connect(&server.into()).unwrap();
                        let conn = TcpStream::from(socket);
                        conn.set_nodelay(true).unwrap();
                        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                        conn
                    })
                    .collect();
                let mut stats = Stats::default();
                let start = Instant::now();
                // The first requests spread over the interval, from now on.
                let mut conns: Vec<(TcpStream, Instant)> = conns
                    .into_iter()
                    .enumerate()
                    .map(|(i, conn)| (conn, start + every.mul_f64(i as f64 / mine.max(1) as f64)))
                    .collect();
                while start.elapsed() < duration {
                    let Some((i, due)) = conns.iter().enumerate().map(|(i, c)| (i, c.1)).min_by_key(|c| c.1) else {
                        break;
                    };
                    std::thread::sleep(due.saturating_duration_since(Instant::now()));
                    let (conn, next) = &mut conns[i];
                    let sent = Instant::now();
                    if ask_kept(conn) {
                        stats.requests += 1;
                        stats.latencies.push(micros(sent.elapsed()));
                    } else {
                        stats.lost += 1;
                    }
                    *next = due + every;
                }
                stats.elapsed = start.elapsed();
                stats
            })
        })
        .collect();
    workers.into_iter().map(|w| w.join().expect("client")).fold(Stats::default(), Stats::merge)
}

impl Drop for Crowd {
    fn drop(&mut self) {
        if let Some((mut child, _)) = self.0.take() {
            drop(child.stdin.take());
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn tcp(server: SocketAddr, conns: usize, depth: usize, duration: Duration) -> Stats {
    stream(server, conns, depth, duration, connect)
}

/// A TCP connection for the load: no Nagle delay, and a read that gives up.
pub fn connect(server: SocketAddr) -> TcpStream {
    let conn = TcpStream::connect(server).unwrap();
    conn.set_nodelay(true).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    conn
}

/// `conns` connections made by `connect` (TCP, or TLS over it), each
/// keeping `depth` pipelined requests in flight.
pub fn stream<S: Read + Write + 'static>(
    server: SocketAddr,
    conns: usize,
    depth: usize,
    duration: Duration,
    connect: fn(SocketAddr) -> S,
) -> Stats {
    let workers: Vec<_> =
        (0..conns).map(|c| std::thread::spawn(move || stream_client(connect(server), c, depth, duration))).collect();
    workers.into_iter().map(|w| w.join().expect("stream client")).fold(Stats::default(), Stats::merge)
}

fn stream_client(mut conn: impl Read + Write, offset: usize, depth: usize, duration: Duration) -> Stats {
    let mix = requests();
    let mut stats = Stats::default();
    let mut in_flight: VecDeque<(usize, Instant)> = VecDeque::new();
    let mut next = offset;
    let mut out = Vec::new();
    let mut pending = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let start = Instant::now();
    let queue = |count: usize, next: &mut usize, out: &mut Vec<u8>, in_flight: &mut VecDeque<(usize, Instant)>| {
        let now = Instant::now();
        for _ in 0..count {
            let i = *next % mix.len();
            *next += 1;
            out.extend_from_slice(&mix[i].0);
            in_flight.push_back((i, now));
        }
    };
    queue(depth, &mut next, &mut out, &mut in_flight);
    conn.write_all(&out).unwrap();
    while !in_flight.is_empty() {
        let n = match conn.read(&mut buf) {
            Ok(0) | Err(_) => {
                stats.lost += in_flight.len() as u64;
                break;
            }
            Ok(n) => n,
        };
        pending.extend_from_slice(&buf[..n]);
        let now = Instant::now();
        let mut answered = 0;
        let mut consumed = 0;
        while let Some(end) = pending[consumed..].iter().position(|&b| b == b'\n') {
            let line = &pending[consumed..consumed + end + 1];
            let (i, sent) = in_flight.pop_front().expect("an answer for a request");
            if line == mix[i].1 {
                stats.requests += 1;
                stats.latencies.push(micros(now - sent));
            } else {
                stats.wrong += 1;
            }
            consumed += end + 1;
            answered += 1;
        }
        pending.drain(..consumed);
        if start.elapsed() < duration && answered > 0 {
            out.clear();
            queue(answered, &mut next, &mut out, &mut in_flight);
            conn.write_all(&out).unwrap();
        }
    }
    stats.elapsed = start.elapsed();
    stats
}
