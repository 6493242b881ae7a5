//! Helpers shared by the integration tests: a server on a background thread,
//! clients for every transport, and temp socket paths.
#![allow(dead_code)]

pub mod balancer;
pub mod process;

use std::io::{self, BufRead, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use socketserver::transport::Transport;
use socketserver::{Address, Error, Kind, Request, RequestHandler, Server, ShutdownHandle};

/// Generous bound for any single client operation; a hang fails the test instead of stalling CI.
pub const IO_TIMEOUT: Duration = Duration::from_secs(20);

/// How long a client that must be held back is watched for an answer it must
/// not get. Slowness can only make such a check pass, never fail.
pub const HELD_BACK: Duration = Duration::from_millis(300);

/// Echoes every line back, on any transport.
pub fn echo() -> impl RequestHandler + Clone {
    |req: &mut Request<'_>| {
        let mut line = Vec::new();
        while req.rfile.read_until(b'\n', &mut line)? > 0 {
            req.wfile.write_all(&line)?;
            line.clear();
        }
        Ok(())
    }
}

/// Echoes `n` lines, then ends the request. (A forked child inherits the
/// test's own client sockets, so it never sees its client's end of stream:
/// fork tests read a known number of lines instead.)
pub fn echo_lines(n: usize) -> impl RequestHandler + Clone {
    move |req: &mut Request<'_>| {
        for _ in 0..n {
            let mut line = String::new();
            if req.rfile.read_line(&mut line)? == 0 {
                break;
            }
            req.wfile.write_all(line.as_bytes())?;
        }
        Ok(())
    }
}

/// A burst of honest clients larger than every limit arrives while the
/// server is not serving yet (as if it were stopped), each with its request
/// sent: every one must be answered, none closed as idle, although the
/// burst outlasts the idle timeout and parked connections alone fill
/// `max_connections`.
pub fn a_burst_beyond_the_limits_is_answered(dispatch: socketserver::Dispatch) {
    const CLIENTS: usize = 40;
    let server = socketserver::TcpServer::builder(echo_lines(1))
        .dispatch(dispatch)
        .max_connections(10)
        .idle_timeout(Some(Duration::from_millis(500)))
        .bind("127.0.0.1:0")
        .unwrap();
    let address = server.server_address().clone();
    let mut clients: Vec<StreamClient> = (0..CLIENTS)
        .map(|i| {
            let mut client = StreamClient::connect(&address).unwrap();
            client.write_all(format!("{i}\n").as_bytes()).unwrap();
            client
        })
        .collect();
    let running = Running::start(server);
    for (i, client) in clients.iter_mut().enumerate() {
        let mut answer = String::new();
        client.read_to_string(&mut answer).unwrap();
        assert_eq!(answer, format!("{i}\n"), "client {i} of {CLIENTS}");
    }
    running.stop().unwrap();
}

/// A server running `serve_forever` on its own thread; dropping it stops and joins.
pub struct Running {
    pub address: Address,
    pub stop: ShutdownHandle,
    thread: Option<JoinHandle<socketserver::Result<()>>>,
}

impl Running {
    pub fn start<T: Transport, H: RequestHandler>(mut server: Server<T, H>) -> Running {
        let address = server.server_address().clone();
        let stop = server.shutdown_handle();
        let thread = std::thread::spawn(move || server.serve_forever());
        Running { address, stop, thread: Some(thread) }
    }

    pub fn inet(&self) -> SocketAddr {
        self.address.as_inet().expect("inet server")
    }

    pub fn path(&self) -> PathBuf {
        self.address.as_path().expect("unix server").to_path_buf()
    }

    /// Stops the server and returns what `serve_forever` returned.
    pub fn stop(mut self) -> socketserver::Result<()> {
        self.stop.shutdown();
        self.thread.take().unwrap().join().expect("serving thread panicked")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            self.stop.shutdown();
            let _ = thread.join();
        }
    }
}

/// Collects what a server passes to `handle_error`.
#[derive(Clone, Default)]
pub struct Errors(Arc<Mutex<Vec<String>>>);

impl Errors {
    pub fn hook(&self) -> impl Fn(&Error) + Send + Sync + 'static {
        let seen = self.0.clone();
        move |e| seen.lock().unwrap().push(e.to_string())
    }

    pub fn all(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

pub fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("socketserver-test").tempdir().expect("temp dir")
}

/// A client connection of either stream kind.
pub enum StreamClient {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl StreamClient {
    pub fn connect(addr: &Address) -> io::Result<StreamClient> {
        let client = match addr {
            Address::Inet(a) => StreamClient::Tcp(TcpStream::connect_timeout(a, IO_TIMEOUT)?),
            Address::Path(p) => StreamClient::Unix(UnixStream::connect(p)?),
            other => panic!("no stream client for {other}"),
        };
        client.set_read_timeout(IO_TIMEOUT)?;
        Ok(client)
    }

    pub fn set_read_timeout(&self, t: Duration) -> io::Result<()> {
        match self {
            StreamClient::Tcp(s) => s.set_read_timeout(Some(t)),
            StreamClient::Unix(s) => s.set_read_timeout(Some(t)),
        }
    }

    /// Sends `line` and reads one line back.
    pub fn ask(&mut self, line: &str) -> io::Result<String> {
        self.write_all(line.as_bytes())?;
        let mut answer = Vec::new();
        let mut byte = [0u8];
        while self.read(&mut byte)? == 1 {
            answer.push(byte[0]);
            if byte[0] == b'\n' {
                break;
            }
        }
        Ok(String::from_utf8_lossy(&answer).into_owned())
    }

    pub fn shutdown_write(&self) -> io::Result<()> {
        match self {
            StreamClient::Tcp(s) => s.shutdown(std::net::Shutdown::Write),
            StreamClient::Unix(s) => s.shutdown(std::net::Shutdown::Write),
        }
    }
}

impl Read for StreamClient {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            StreamClient::Tcp(s) => s.read(buf),
            StreamClient::Unix(s) => s.read(buf),
        }
    }
}

impl Write for StreamClient {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            StreamClient::Tcp(s) => s.write(buf),
            StreamClient::Unix(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A datagram client of either kind, bound so it can get replies.
pub enum DatagramClient {
    Udp(UdpSocket, SocketAddr),
    Unix(UnixDatagram, PathBuf),
}

impl DatagramClient {
    /// `dir` holds the client's own socket file when the server is a Unix one.
    pub fn new(server: &Address, dir: &Path) -> io::Result<DatagramClient> {
        let client = match server {
            Address::Inet(a) => {
                let local: SocketAddr = if a.is_ipv6() { "[::1]:0" } else { "127.0.0.1:0" }.parse().unwrap();
                DatagramClient::Udp(UdpSocket::bind(local)?, *a)
            }
            Address::Path(p) => {
                let own = dir.join(format!("client-{}.sock", unique()));
                DatagramClient::Unix(UnixDatagram::bind(own)?, p.clone())
            }
            other => panic!("no datagram client for {other}"),
        };
        match &client {
            DatagramClient::Udp(s, _) => s.set_read_timeout(Some(IO_TIMEOUT))?,
            DatagramClient::Unix(s, _) => s.set_read_timeout(Some(IO_TIMEOUT))?,
        }
        Ok(client)
    }

    pub fn send(&self, payload: &[u8]) -> io::Result<()> {
        match self {
            DatagramClient::Udp(s, to) => s.send_to(payload, to).map(drop),
            DatagramClient::Unix(s, to) => s.send_to(payload, to).map(drop),
        }
    }

    pub fn recv(&self) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; 65536];
        let n = match self {
            DatagramClient::Udp(s, _) => s.recv(&mut buf)?,
            DatagramClient::Unix(s, _) => s.recv(&mut buf)?,
        };
        buf.truncate(n);
        Ok(buf)
    }

    pub fn ask(&self, payload: &str) -> io::Result<String> {
        self.send(payload.as_bytes())?;
        Ok(String::from_utf8_lossy(&self.recv()?).into_owned())
    }
}

pub fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// The number of open fds of this process.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").expect("/proc/self/fd").count()
}

/// Whether this process has `fd` open.
pub fn fd_is_open(fd: i32) -> bool {
    Path::new(&format!("/proc/self/fd/{fd}")).exists()
}

/// Reads an address the way `prime serve` prints it: a path, or HOST:PORT.
pub fn parse_address(printed: &str) -> Address {
    match printed.parse::<SocketAddr>() {
        Ok(inet) => Address::Inet(inet),
        Err(_) => Address::Path(PathBuf::from(printed)),
    }
}

/// The dispatch modes that run in this process (fork has its own test binary).
pub fn threaded_modes() -> Vec<(&'static str, socketserver::Dispatch)> {
    use socketserver::Dispatch;
    vec![("sequential", Dispatch::sequential()), ("threads", Dispatch::threads()), ("pool", Dispatch::pool(4))]
}

/// A handler that panics on lines starting with "panic", else echoes.
pub fn panics_on_request() -> impl RequestHandler + Clone {
    |req: &mut Request<'_>| {
        let mut line = String::new();
        req.rfile.read_line(&mut line)?;
        assert!(!line.starts_with("panic"), "handler asked to panic");
        req.wfile.write_all(line.as_bytes())
    }
}

/// Keeps the deliberate panics of `panics_on_request` off stderr, and
/// every other panic as loud as usual.
pub fn quiet_deliberate_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let message = info.payload().downcast_ref::<&str>().copied().unwrap_or_default();
            if !message.contains("handler asked to panic") {
                default(info);
            }
        }));
    });
}

/// Sends `rounds` panicking requests, then checks a normal one is answered.
pub fn survive_panics(kind: Kind, address: &Address, dir: &Path, rounds: usize) {
    match kind {
        Kind::Stream => {
            for _ in 0..rounds {
                let mut c = StreamClient::connect(address).unwrap();
                c.write_all(b"panic\n").unwrap();
                let mut rest = Vec::new();
                let _ = c.read_to_end(&mut rest);
                assert!(rest.is_empty(), "a panicked request gets no answer");
            }
            let mut c = StreamClient::connect(address).unwrap();
            assert_eq!(c.ask("normal\n").unwrap(), "normal\n");
        }
        _ => {
            let client = DatagramClient::new(address, dir).unwrap();
            for _ in 0..rounds {
                client.send(b"panic\n").unwrap();
            }
            assert_eq!(client.ask("normal\n").unwrap(), "normal\n");
        }
    }
}

/// One server per transport, all with `handler` and `dispatch`, socket files in `dir`.
pub fn start_every_transport<H: RequestHandler + Clone>(
    handler: H,
    dispatch: socketserver::Dispatch,
    dir: &Path,
) -> Vec<(&'static str, Kind, Running)> {
    use socketserver::{TcpServer, UdpServer, UnixDatagramServer, UnixStreamServer};
    let tag = unique();
    vec![
        (
            "tcp",
            Kind::Stream,
            Running::start(TcpServer::builder(handler.clone()).dispatch(dispatch.clone()).bind("127.0.0.1:0").unwrap()),
        ),
        (
            "udp",
            Kind::Datagram,
            Running::start(UdpServer::builder(handler.clone()).dispatch(dispatch.clone()).bind("127.0.0.1:0").unwrap()),
        ),
        (
            "unix-stream",
            Kind::Stream,
            Running::start(
                UnixStreamServer::builder(handler.clone())
                    .dispatch(dispatch.clone())
                    .bind(dir.join(format!("s{tag}.sock")))
                    .unwrap(),
            ),
        ),
        (
            "unix-datagram",
            Kind::Datagram,
            Running::start(
                UnixDatagramServer::builder(handler).dispatch(dispatch).bind(dir.join(format!("d{tag}.sock"))).unwrap(),
            ),
        ),
    ]
}

/// Echo round trips: several connections or datagrams, several lines each.
pub fn echo_round_trips(kind: Kind, address: &Address, dir: &Path) {
    match kind {
        Kind::Stream => {
            for round in 0..3 {
                let mut client = StreamClient::connect(address).unwrap();
                for i in 0..3 {
                    let line = format!("round {round} line {i}\n");
                    assert_eq!(client.ask(&line).unwrap(), line);
                }
            }
        }
        _ => {
            let client = DatagramClient::new(address, dir).unwrap();
            for i in 0..5 {
                let payload = format!("datagram {i}\nsecond line\n");
                assert_eq!(client.ask(&payload).unwrap(), payload);
            }
        }
    }
}

/// Collects this process's log lines, so a test can see what the server
/// logged. The first call installs the logger.
pub fn captured_log() -> Vec<String> {
    struct Captured;
    static LOG: Mutex<Vec<String>> = Mutex::new(Vec::new());
    impl log::Log for Captured {
        fn enabled(&self, _: &log::Metadata<'_>) -> bool {
            true
        }
        fn log(&self, record: &log::Record<'_>) {
            LOG.lock().unwrap_or_else(|e| e.into_inner()).push(record.args().to_string());
        }
        fn flush(&self) {}
    }
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        log::set_logger(&Captured).unwrap();
        log::set_max_level(log::LevelFilter::Warn);
    });
    LOG.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// The first line `client` receives within `limit`, if any.
pub fn answer_within(client: &mut StreamClient, limit: Duration) -> Option<String> {
    client.set_read_timeout(limit).unwrap();
    let mut line = String::new();
    let got = io::BufReader::new(&mut *client).read_line(&mut line);
    client.set_read_timeout(IO_TIMEOUT).unwrap();
    got.ok().filter(|n| *n > 0).map(|_| line)
}

/// `busy` echo clients each hold a request open; the next one must wait
/// (not be dropped), and be answered once `release` lets one of them go.
/// Returns the clients still held, and the one that waited.
pub fn next_client_waits_for_a_free_slot(
    running: &Running,
    busy: usize,
    release: impl FnOnce(&mut Vec<StreamClient>),
) -> (Vec<StreamClient>, StreamClient) {
    let mut holders: Vec<StreamClient> = (0..busy)
        .map(|i| {
            let mut c = StreamClient::connect(&running.address).unwrap();
            assert_eq!(c.ask(&format!("{i}\n")).unwrap(), format!("{i}\n"));
            c
        })
        .collect();
    let mut waiting = StreamClient::connect(&running.address).unwrap();
    waiting.write_all(b"waiting\n").unwrap();
    assert_eq!(answer_within(&mut waiting, HELD_BACK), None, "served beyond the limit");
    release(&mut holders);
    assert_eq!(answer_within(&mut waiting, IO_TIMEOUT).as_deref(), Some("waiting\n"), "never served");
    (holders, waiting)
}

/// Holds the serving loop in `verify_request` while closed: the next
/// connection the loop takes keeps it there until the gate opens. What is
/// served meanwhile was served without the loop.
#[derive(Clone, Default)]
pub struct LoopGate(Arc<(Mutex<Gate>, std::sync::Condvar)>);

#[derive(Default)]
pub struct Gate {
    closed: bool,
    /// The loop waits at the gate.
    held: bool,
    /// Connections let through so far.
    passed: usize,
}

impl LoopGate {
    /// The `verify_request` hook that waits at the gate (and admits).
    pub fn verify(&self) -> impl FnMut(&Address) -> bool + Send + 'static {
        let gate = self.clone();
        move |_| {
            let (state, changed) = &*gate.0;
            let mut state = state.lock().unwrap();
            while state.closed {
                state.held = true;
                changed.notify_all();
                state = changed.wait(state).unwrap();
            }
            state.held = false;
            state.passed += 1;
            changed.notify_all();
            true
        }
    }

    /// Closes the gate: the next connection holds the loop.
    pub fn close(&self) {
        self.0.0.lock().unwrap().closed = true;
    }

    /// Waits (bounded) until the loop is held at the gate.
    pub fn wait_until_held(&self) {
        let (state, changed) = &*self.0;
        let held = changed.wait_timeout_while(state.lock().unwrap(), IO_TIMEOUT, |s| !s.held).unwrap();
        assert!(held.0.held, "the loop never reached the gate");
    }

    /// Waits (bounded) until `n` connections passed the gate: the loop has
    /// gone on with each (to the end of its turn) before it takes the next.
    pub fn wait_until_passed(&self, n: usize) {
        let (state, changed) = &*self.0;
        let passed = changed.wait_timeout_while(state.lock().unwrap(), IO_TIMEOUT, |s| s.passed < n).unwrap();
        assert!(passed.0.passed >= n, "{} of {n} connections passed the gate", passed.0.passed);
    }

    /// Opens the gate: the loop goes on.
    pub fn open(&self) {
        let (state, changed) = &*self.0;
        state.lock().unwrap().closed = false;
        changed.notify_all();
    }

    /// Opens the gate when dropped: made after the server starts, it drops
    /// before it, so a failing test does not leave the loop held while the
    /// server stops.
    pub fn opened_on_drop(&self) -> GateOpener {
        GateOpener(self.clone())
    }
}

/// Opens its gate when dropped (see [`LoopGate::opened_on_drop`]).
pub struct GateOpener(LoopGate);

impl Drop for GateOpener {
    fn drop(&mut self) {
        self.0.open();
    }
}

/// Two clients that pipeline 999-byte lines starting with "busy" without
/// pause (each a writer and a reader thread, for at most `IO_TIMEOUT`),
/// and beside them fifty clients that ask one line each: asserts each of
/// the fifty has its line echoed within 5 s, a bound far above the time
/// its work takes. The server at `server` echoes lines (slowly, for the
/// busy ones). The busy clients end their connections before this returns.
pub fn fifty_answered_beside_two_pipelining_without_pause(server: SocketAddr) {
    use std::io::BufReader;
    use std::sync::atomic::{AtomicBool, Ordering};
    let stop = Arc::new(AtomicBool::new(false));
    let busy: Vec<_> = (0..2)
        .map(|_| {
            let conn = TcpStream::connect(server).unwrap();
            conn.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
            let (writer, stop_writing) = (conn.try_clone().unwrap(), Arc::clone(&stop));
            let writing = std::thread::spawn(move || {
                let batch = format!("busy{}\n", "x".repeat(994)).repeat(64);
                let started = std::time::Instant::now();
                while !stop_writing.load(Ordering::SeqCst) && started.elapsed() < IO_TIMEOUT {
                    if (&writer).write_all(batch.as_bytes()).is_err() {
                        break;
                    }
                }
            });
            let (reader, stop_reading) = (conn.try_clone().unwrap(), Arc::clone(&stop));
            let reading = std::thread::spawn(move || {
                let mut reader = BufReader::new(reader);
                let mut line = String::new();
                while !stop_reading.load(Ordering::SeqCst) && reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                    line.clear();
                }
            });
            (conn, writing, reading)
        })
        .collect();
    // Let the busy clients fill the workers before the others ask.
    std::thread::sleep(Duration::from_millis(200));
    for i in 0..50 {
        let conn = TcpStream::connect(server).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let started = std::time::Instant::now();
        (&conn).write_all(format!("client {i}\n").as_bytes()).unwrap();
        let mut answer = String::new();
        let read = BufReader::new(conn).read_line(&mut answer);
        assert!(
            read.is_ok() && answer == format!("client {i}\n"),
            "client {i}: {read:?} after {:?}",
            started.elapsed()
        );
    }
    stop.store(true, Ordering::SeqCst);
    for (conn, writing, reading) in busy {
        let _ = conn.shutdown(std::net::Shutdown::Both);
        writing.join().unwrap();
        reading.join().unwrap();
    }
}
