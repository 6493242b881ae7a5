//! The servers under comparison, each run as a child process of the bench
//! (`compare --serve NAME`), so its CPU time can be read from /proc. Each
//! prints its address on the first stdout line and serves until stdin closes.

use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::net::{TcpListener, UdpSocket};

use socketserver::{Dispatch, PerClient, TcpServer, Threading, UdpServer};

use crate::prime::{PrimeService, answer};

/// Python's socketserver with the same handler logic.
pub const PYTHON_SERVER: &str = r#"
import socketserver, sys, threading

def is_prime(n):
    if n < 2: return False
    for p in (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37):
        if n % p == 0: return n == p
    d, s = n - 1, 0
    while d % 2 == 0: d //= 2; s += 1
    for a in (2, 325, 9375, 28178, 450775, 9780504, 1795265022):
        x = pow(a % n, d, n) if a % n else 1
        if x in (1, n - 1): continue
        for _ in range(s - 1):
            x = x * x % n
            if x == n - 1: break
        else: return False
    return True

def answer(line):
    try: n = int(line)
    except ValueError: return b"E\n"
    return b"T\n" if is_prime(n) else b"F\n"

class Stream(socketserver.StreamRequestHandler):
    def handle(self):
        for line in self.rfile:
            self.wfile.write(answer(line))

class Datagram(socketserver.DatagramRequestHandler):
    def handle(self):
        for line in self.rfile:
            self.wfile.write(answer(line))

class Threading(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

class TlsThreading(Threading):
    """The usual way: wrap each accepted socket (the handshake runs in get_request)."""
    def get_request(self):
        conn, address = self.socket.accept()
        return context.wrap_socket(conn, server_side=True), address

kind = sys.argv[1]
if kind == "tls":
    import os, ssl
    directory = os.environ["COMPARE_TLS_DIR"]
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(os.path.join(directory, "server.pem"), os.path.join(directory, "server.key"))
    server = TlsThreading(("127.0.0.1", 0), Stream)
elif kind == "tcp":
    server = Threading(("127.0.0.1", 0), Stream)
else:
    server = socketserver.UDPServer(("127.0.0.1", 0), Datagram)
host, port = server.server_address
print(f"{host}:{port}", flush=True)
threading.Thread(target=lambda: (sys.stdin.read(), server.shutdown()), daemon=True).start()
server.serve_forever()
"#;

/// Runs server `name` in this process: prints its address, serves until
/// stdin closes.
pub fn run(name: &str) {
    let address = match name {
        "socketserver-udp" => spawn(UdpServer::bind("127.0.0.1:0", PrimeService::default())),
        "socketserver-udp-unbatched" => {
            spawn(UdpServer::builder(PrimeService::default()).datagram_batch(1).bind("127.0.0.1:0"))
        }
        // Also the direct reference for the runs through HAProxy.
        "socketserver-tcp" | "direct-socketserver-tcp" => {
            spawn(TcpServer::builder(PrimeService::default()).dispatch(Dispatch::threads()).bind("127.0.0.1:0"))
        }
        // Per-client limits on, and no client near them: their cost alone.
        "socketserver-tcp-limited" => spawn(
            TcpServer::builder(PrimeService::default())
                .dispatch(Dispatch::threads())
                .per_client(PerClient::new().connections(100_000).rate(1e9, u32::MAX))
                .bind("127.0.0.1:0"),
        ),
        "socketserver-udp-limited" => spawn(
            UdpServer::builder(PrimeService::default())
                .per_client(PerClient::new().rate(1e9, u32::MAX))
                .bind("127.0.0.1:0"),
        ),
        // One source may hold 16 connections (of 20,000 the server holds).
        "socketserver-tcp-pool-16-per-client" => spawn(
            TcpServer::builder(PrimeService::default())
                .dispatch(Dispatch::pool(4))
                .idle_timeout(Some(std::time::Duration::from_secs(300)))
                .max_connections(20_000)
                .per_client(PerClient::new().connections(16))
                .bind("127.0.0.1:0"),
        ),
        // Each source: 1,000 datagrams a second, in bursts of 1,000.
        "socketserver-udp-1000-per-client" => spawn(
            UdpServer::builder(PrimeService::default())
                .per_client(PerClient::new().rate(1000.0, 1000))
                .bind("127.0.0.1:0"),
        ),
        "socketserver-tcp-small-stack" => spawn(
            TcpServer::builder(PrimeService::default())
                .dispatch(Threading::new().stack_size(64 * 1024).into())
                .bind("127.0.0.1:0"),
        ),
        // A backend behind HAProxy: the same server, reading PROXY headers.
        #[cfg(feature = "proxy-protocol")]
        "socketserver-tcp-proxied" => spawn(
            TcpServer::builder(PrimeService::default())
                .dispatch(Dispatch::threads())
                .proxy_protocol(
                    socketserver::proxy::ProxyProtocol::required().trust("127.0.0.1/32".parse().expect("a network")),
                )
                .bind("127.0.0.1:0"),
        ),
        #[cfg(feature = "tls")]
        "socketserver-tls" => spawn(crate::tls::socketserver_tls()),
        #[cfg(feature = "tls")]
        "std-tls" => crate::tls::std_tls(),
        // For crowds: a pool of 4, silent connections held in the loop.
        "socketserver-tcp-pool" => spawn(
            TcpServer::builder(PrimeService::default())
                .dispatch(Dispatch::pool(4))
                .idle_timeout(Some(std::time::Duration::from_secs(300)))
                .bind("127.0.0.1:0"),
        ),
        // A handler that answers one line and hands its connection back
        // (`Request::hand_back`): a pool of 4, kept connections parked with
        // its workers between requests.
        "socketserver-kept-4" => spawn(
            TcpServer::builder(|req: &mut socketserver::Request<'_>| {
                let mut line = Vec::new();
                req.rfile.read_until(b'\n', &mut line)?;
                if !line.is_empty() {
                    req.wfile.write_all(answer(&line))?;
                    req.hand_back();
                }
                Ok(())
            })
            .dispatch(Dispatch::pool(4))
            .idle_timeout(Some(std::time::Duration::from_secs(300)))
            .bind("127.0.0.1:0"),
        ),
        // Framed lines: connections back in the loop between requests.
        "socketserver-framed-8" | "socketserver-framed-4" => spawn(
            TcpServer::builder(PrimeService::default())
                .dispatch(Dispatch::pool(name.rsplit('-').next().and_then(|n| n.parse().ok()).expect("a pool size")))
                .framing(socketserver::Framing::lines(16 * 1024))
                .idle_timeout(Some(std::time::Duration::from_secs(300)))
                .bind("127.0.0.1:0"),
        ),
        // Framed lines, a loop per core (SO_REUSEPORT), each answering
        // itself: no hand-off, and every core serving.
        "socketserver-framed-reuseport-2" => {
            let framed = || {
                TcpServer::builder(PrimeService::default())
                    .framing(socketserver::Framing::lines(16 * 1024))
                    .idle_timeout(Some(std::time::Duration::from_secs(300)))
            };
            let group = socketserver::ServerGroup::spawn(2, "127.0.0.1:0", framed).expect("bind");
            let address = group.server_address().to_string();
            std::mem::forget(group);
            address
        }
        "tokio-tcp" => tokio_tcp(),
        "std-udp" => std_udp(),
        "std-tcp" => std_tcp(),
        other => panic!("unknown server {other}"),
    };
    println!("{address}");
    std::io::stdout().flush().unwrap();
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    // What per-client limits refused, where they did.
    if let Some(s) = STATS.get().map(socketserver::StatsHandle::get)
        && s.over_client_rate + s.over_client_connections > 0
    {
        eprintln!(
            "  server: {} taken, {} served, {} over a client's rate, {} over a client's connections",
            s.accepted, s.served, s.over_client_rate, s.over_client_connections
        );
    }
    std::process::exit(0);
}

fn spawn<T: socketserver::transport::Transport, H: socketserver::RequestHandler>(
    server: socketserver::Result<socketserver::Server<T, H>>,
) -> String {
    let mut server = server.expect("bind");
    let address = server.server_address().to_string();
    let _ = STATS.set(server.stats_handle());
    std::thread::spawn(move || server.serve_forever());
    address
}

/// The server's counters, said when the bench ends it.
static STATS: std::sync::OnceLock<socketserver::StatsHandle> = std::sync::OnceLock::new();

/// The floor for datagrams: a blocking recv_from/send_to loop, nothing else.
fn std_udp() -> String {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let address = socket.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        let mut packet = vec![0u8; 8192];
        let mut reply = Vec::with_capacity(8192);
        loop {
            let Ok((len, from)) = socket.recv_from(&mut packet) else { continue };
            reply.clear();
            for line in packet[..len].split_inclusive(|&b| b == b'\n') {
                reply.extend_from_slice(answer(line));
            }
            if !reply.is_empty() {
                let _ = socket.send_to(&reply, from);
            }
        }
    });
    address
}

/// The floor for streams: a thread per connection, buffered both ways,
/// flushing when no more input is buffered.
fn std_tcp() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let _ = conn.set_nodelay(true);
            std::thread::spawn(move || {
                let mut reader = BufReader::new(&conn);
                let mut writer = BufWriter::new(&conn);
                let mut line = Vec::new();
                loop {
                    if reader.buffer().is_empty() && writer.flush().is_err() {
                        return;
                    }
                    line.clear();
                    match reader.read_until(b'\n', &mut line) {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {
                            if writer.write_all(answer(&line)).is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    address
}

/// The async comparison: tokio's multi-threaded runtime, a task per
/// connection, each line answered as the std loop answers it.
fn tokio_tcp() -> String {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_io().build().unwrap();
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let address = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        runtime.block_on(async move {
            loop {
                let Ok((conn, _)) = listener.accept().await else { continue };
                let _ = conn.set_nodelay(true);
                tokio::spawn(async move {
                    let (read, mut write) = conn.into_split();
                    let mut reader = tokio::io::BufReader::new(read);
                    let (mut line, mut out) = (Vec::new(), Vec::new());
                    loop {
                        line.clear();
                        match reader.read_until(b'\n', &mut line).await {
                            Ok(0) | Err(_) => return,
                            Ok(_) => out.extend_from_slice(answer(&line)),
                        }
                        // Pipelined lines already read are answered in one
                        // write, as the std loop's BufWriter does.
                        if reader.buffer().is_empty() {
                            if write.write_all(&out).await.is_err() {
                                return;
                            }
                            out.clear();
                        }
                    }
                });
            }
        });
    });
    address
}
