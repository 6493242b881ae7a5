//! The `ask` client: sends numbers to a prime server over any transport and
//! checks that each answer is a well-formed `T`, `F` or `E` line.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::TransportKind;

/// How the client speaks on a stream: in the clear, or (feature `tls`)
/// over TLS with this config.
#[derive(Clone, Default)]
pub struct Security {
    #[cfg(feature = "tls")]
    pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

/// Asks the server at `addr` about each of `numbers`; returns one answer
/// letter per number, or a message saying what went wrong.
pub fn ask(
    kind: TransportKind,
    addr: &str,
    numbers: &[String],
    timeout: Duration,
    security: &Security,
) -> Result<Vec<char>, String> {
    match kind {
        TransportKind::Tcp => {
            let target = resolve(addr)?;
            let stream = TcpStream::connect_timeout(&target, timeout).map_err(|e| format!("connect to {addr}: {e}"))?;
            let host =
                addr.rsplit_once(':').map_or(addr, |(host, _)| host.trim_start_matches('[').trim_end_matches(']'));
            ask_stream(stream, host, timeout, addr, numbers, security)
        }
        TransportKind::UnixStream => {
            let stream = UnixStream::connect(addr).map_err(|e| format!("connect to {addr}: {e}"))?;
            ask_stream(stream, "localhost", timeout, addr, numbers, security)
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

/// Asks over a connected stream, in the clear or over TLS (with `host` as
/// the name the server's certificate must carry).
#[cfg_attr(not(feature = "tls"), allow(unused_variables))]
fn ask_stream<S>(
    stream: S,
    host: &str,
    timeout: Duration,
    addr: &str,
    numbers: &[String],
    security: &Security,
) -> Result<Vec<char>, String>
where
    S: Read + Write + std::os::fd::AsFd,
{
    let socket = socket2::SockRef::from(&stream);
    socket.set_read_timeout(Some(timeout)).and(socket.set_write_timeout(Some(timeout))).map_err(io_msg(addr))?;
    #[cfg(feature = "tls")]
    if let Some(config) = &security.tls {
        let name = rustls::pki_types::ServerName::try_from(host.to_owned())
            .map_err(|e| format!("{addr}: {host:?} cannot be a TLS server name: {e}"))?;
        let tls = rustls::ClientConnection::new(std::sync::Arc::clone(config), name).map_err(io_msg_tls(addr))?;
        let stream = rustls::StreamOwned::new(tls, stream);
        return exchange(stream, addr, numbers, |s| {
            // close_notify says the requests are complete; the socket's
            // write side closes too, as in the clear.
            s.conn.send_close_notify();
            s.flush()?;
            socket2::SockRef::from(&s.sock).shutdown(Shutdown::Write)
        });
    }
    exchange(stream, addr, numbers, |s| socket2::SockRef::from(&*s).shutdown(Shutdown::Write))
}

#[cfg(feature = "tls")]
fn io_msg_tls(addr: &str) -> impl Fn(rustls::Error) -> String + '_ {
    move |e| format!("{addr}: TLS: {e}")
}

/// Sends every number as a line, ends the sending side with `end`, and
/// reads one answer line per number (the server answers pipelined requests
/// in order).
fn exchange<S: Read + Write>(
    mut stream: S,
    addr: &str,
    numbers: &[String],
    end: impl FnOnce(&mut S) -> std::io::Result<()>,
) -> Result<Vec<char>, String> {
    let request: String = numbers.iter().map(|n| format!("{n}\n")).collect();
    stream.write_all(request.as_bytes()).map_err(io_msg(addr))?;
    end(&mut stream).map_err(io_msg(addr))?;
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
