//! The `ask` client: sends numbers to a prime server over any transport and
//! checks that each answer is a well-formed `T`, `F` or `E` line.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::TransportKind;

/// Asks the server at `addr` about each of `numbers`; returns one answer
/// letter per number, or a message saying what went wrong.
pub fn ask(kind: TransportKind, addr: &str, numbers: &[String], timeout: Duration) -> Result<Vec<char>, String> {
    match kind {
        TransportKind::Tcp => {
            let target = resolve(addr)?;
            let stream = TcpStream::connect_timeout(&target, timeout).map_err(|e| format!("connect to {addr}: {e}"))?;
            ask_stream(stream, timeout, addr, numbers)
        }
        TransportKind::UnixStream => {
            let stream = UnixStream::connect(addr).map_err(|e| format!("connect to {addr}: {e}"))?;
            ask_stream(stream, timeout, addr, numbers)
        }
        TransportKind::Udp => {
            let target = resolve(addr)?;
            let socket = UdpSocket::bind(SocketAddr::new(unspecified(&target), 0)).map_err(io_msg(addr))?;
            socket.connect(target).map_err(io_msg(addr))?;
            socket.set_read_timeout(Some(timeout)).map_err(io_msg(addr))?;
            numbers.iter().map(|n| ask_datagram(|d| socket.send(d), |b| socket.recv(b), addr, n)).collect()
        }
        TransportKind::UnixDatagram => {
            let own = ClientPath::new();
            let socket = UnixDatagram::bind(&own.0).map_err(io_msg(addr))?;
            socket.connect(addr).map_err(|e| format!("connect to {addr}: {e}"))?;
            socket.set_read_timeout(Some(timeout)).map_err(io_msg(addr))?;
            numbers.iter().map(|n| ask_datagram(|d| socket.send(d), |b| socket.recv(b), addr, n)).collect()
        }
    }
}

fn unspecified(target: &SocketAddr) -> std::net::IpAddr {
    if target.is_ipv4() { std::net::Ipv4Addr::UNSPECIFIED.into() } else { std::net::Ipv6Addr::UNSPECIFIED.into() }
}

fn resolve(addr: &str) -> Result<SocketAddr, String> {
    addr.to_socket_addrs()
        .map_err(|e| format!("cannot resolve {addr}: {e}"))?
        .next()
        .ok_or_else(|| format!("{addr} resolves to no address"))
}

fn io_msg(addr: &str) -> impl Fn(std::io::Error) -> String + '_ {
    move |e| format!("{addr}: {e}")
}

/// Sends every number as a line, closes the sending side, and reads one
/// answer line per number (the server answers pipelined requests in order).
fn ask_stream<S>(mut stream: S, timeout: Duration, addr: &str, numbers: &[String]) -> Result<Vec<char>, String>
where
    S: Read + Write + std::os::fd::AsFd,
{
    let socket = socket2::SockRef::from(&stream);
    socket.set_read_timeout(Some(timeout)).and(socket.set_write_timeout(Some(timeout))).map_err(io_msg(addr))?;
    let request: String = numbers.iter().map(|n| format!("{n}\n")).collect();
    stream.write_all(request.as_bytes()).map_err(io_msg(addr))?;
    socket2::SockRef::from(&stream).shutdown(Shutdown::Write).map_err(io_msg(addr))?;
    let mut reader = BufReader::new(stream);
    let mut answers = Vec::with_capacity(numbers.len());
    for n in numbers {
        let mut line = Vec::new();
        reader.read_until(b'\n', &mut line).map_err(|e| format!("{addr}: no answer for {n:?}: {e}"))?;
        answers.push(parse_answer(&line, addr, n)?);
    }
    Ok(answers)
}

fn ask_datagram(
    send: impl Fn(&[u8]) -> std::io::Result<usize>,
    recv: impl Fn(&mut [u8]) -> std::io::Result<usize>,
    addr: &str,
    n: &str,
) -> Result<char, String> {
    send(format!("{n}\n").as_bytes()).map_err(io_msg(addr))?;
    let mut buf = [0u8; 64];
    let len = recv(&mut buf).map_err(|e| format!("{addr}: no answer for {n:?}: {e}"))?;
    parse_answer(&buf[..len], addr, n)
}

fn parse_answer(line: &[u8], addr: &str, n: &str) -> Result<char, String> {
    match line {
        b"T\n" => Ok('T'),
        b"F\n" => Ok('F'),
        b"E\n" => Ok('E'),
        b"" => Err(format!("{addr}: connection closed before the answer for {n:?}")),
        other => Err(format!("{addr}: malformed answer for {n:?}: {:?}", String::from_utf8_lossy(other))),
    }
}

/// A path for a Unix datagram client's own socket (replies need a named
/// sender), removed when dropped.
struct ClientPath(PathBuf);

impl ClientPath {
    fn new() -> ClientPath {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!("prime-client-{}-{}.sock", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        ClientPath(std::env::temp_dir().join(name))
    }
}

impl Drop for ClientPath {
    fn drop(&mut self) {
        if Path::new(&self.0).exists() {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}
