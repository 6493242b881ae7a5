//! The prime service: one handler served over TCP, UDP, Unix stream and Unix
//! datagram sockets.
//!
//! ```text
//! prime                          demo: serve and query every transport, print a table
//! prime serve KIND ADDR [FLAGS]  serve until SIGINT/SIGTERM
//! prime ask KIND ADDR N...       query a server, print "N ANSWER" per number
//! ```
//! KIND is tcp, udp, unix-stream or unix-datagram; ADDR is HOST:PORT or a socket path.

mod client;
mod parse;
mod primality;
mod prime;

use std::io::Write;
use std::process::ExitCode;
use std::str::FromStr;
use std::thread::JoinHandle;
use std::time::Duration;

use socketserver::transport::AnyTransport;
use socketserver::{AnyServer, Dispatch, Endpoint, ServerBuilder, ServerGroup, ShutdownHandle, TcpServer, UdpServer};

use prime::PrimeService;

const USAGE: &str = "\
usage: prime                          run the demo over every transport
       prime serve KIND ADDR [FLAGS]  serve until SIGINT or SIGTERM
       prime ask KIND ADDR N...       ask a server about each N

KIND:  tcp | udp | unix-stream | unix-datagram
ADDR:  HOST:PORT (port 0 picks one) or a socket path

serve FLAGS:
  --threads              a thread per request (default: one request at a time)
  --workers N            a pool of N worker threads
  --fork                 a child process per request
  --max-connections N    stream servers: at most N connections open at once
  --public               tcp/udp: listen on every address of this host ([::], IPv4 too),
                         on ADDR's port, instead of ADDR's host
  --reuseport N          tcp/udp: N sockets on one port (SO_REUSEPORT), a thread each
  --batch N              datagrams: take up to N per recvmmsg/sendmmsg (Linux; default
                         32 for udp, 1 for unix-datagram; 1 answers each before the next)
  --max-digits N         longest number read, in digits (default 4300, Python's
                         int() limit); longer ones are answered E. A test costs
                         about the cube of N: a sequential server serves one
                         request at a time, so public servers use --workers or
                         --threads with timeouts
  --timeout SECS         close a connection silent this long; bound each read/write
  --connection-timeout SECS  close any connection this long after it opened
  --drain-timeout SECS   on SIGINT/SIGTERM, let running requests finish this long,
                         then cut them (default 10); a second signal cuts them at once";

/// `--drain-timeout` when none is given.
const DEFAULT_DRAIN: Duration = Duration::from_secs(10);

/// The largest `--max-digits`: a test of a number this long already takes
/// minutes of CPU.
const MAX_MAX_DIGITS: usize = 1_000_000;

/// After a second signal, how long the process may take to finish cutting
/// its requests before it exits regardless (a handler busy computing cannot
/// be interrupted).
const ABORT_GRACE: Duration = Duration::from_secs(2);

/// The numbers the seed's client sends, with the answers it expects.
const SEED: [(&str, char); 8] = [
    ("4j", 'E'),
    ("4", 'F'),
    ("5", 'T'),
    ("-5", 'F'),
    ("17", 'T'),
    ("29", 'T'),
    ("1125899906842624", 'F'),
    ("1125899906842623", 'F'),
];

/// How long the client waits for any one answer.
const ASK_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    Tcp,
    Udp,
    UnixStream,
    UnixDatagram,
}

impl FromStr for TransportKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "tcp" => Ok(TransportKind::Tcp),
            "udp" => Ok(TransportKind::Udp),
            "unix-stream" => Ok(TransportKind::UnixStream),
            "unix-datagram" => Ok(TransportKind::UnixDatagram),
            other => Err(format!("unknown KIND {other:?}")),
        }
    }
}

impl TransportKind {
    const ALL: [TransportKind; 4] =
        [TransportKind::Tcp, TransportKind::Udp, TransportKind::UnixStream, TransportKind::UnixDatagram];

    /// The endpoint for `addr` on this transport (KIND is its scheme).
    fn endpoint(self, addr: &str) -> socketserver::Result<Endpoint> {
        format!("{}:{addr}", self.name()).parse()
    }

    fn name(self) -> &'static str {
        match self {
            TransportKind::Tcp => "tcp",
            TransportKind::Udp => "udp",
            TransportKind::UnixStream => "unix-stream",
            TransportKind::UnixDatagram => "unix-datagram",
        }
    }
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        None => demo(),
        Some("serve") => parse_serve(&args[1..]).map_err(usage_error).and_then(serve),
        Some("ask") => {
            parse_ask(&args[1..]).map_err(usage_error).and_then(|(kind, addr, numbers)| ask(kind, &addr, &numbers))
        }
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            Ok(())
        }
        Some(other) => Err(usage_error(format!("unknown command {other:?}"))),
    };
    result.err().unwrap_or(ExitCode::SUCCESS)
}

fn usage_error(message: String) -> ExitCode {
    eprintln!("prime: {message}\n{USAGE}");
    ExitCode::from(2)
}

fn failure(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("prime: {message}");
    ExitCode::FAILURE
}

/// Options of `prime serve`.
#[derive(Debug, Default)]
struct ServeOptions {
    dispatch: Option<Dispatch>,
    max_connections: Option<usize>,
    max_digits: Option<usize>,
    timeout: Option<Duration>,
    connection_timeout: Option<Duration>,
    drain_timeout: Option<Duration>,
    batch: Option<usize>,
    reuseport: Option<usize>,
    public: bool,
}

impl ServeOptions {
    fn set_dispatch(&mut self, flag: &str, dispatch: Dispatch) -> Result<(), String> {
        if self.dispatch.replace(dispatch).is_some() {
            return Err(format!("{flag}: choose one of --threads, --workers, --fork"));
        }
        Ok(())
    }
}

fn parse_serve(args: &[String]) -> Result<(TransportKind, String, ServeOptions), String> {
    let [kind, addr, flags @ ..] = args else {
        return Err("serve needs KIND and ADDR".into());
    };
    let mut options = ServeOptions::default();
    let mut flags = flags.iter();
    while let Some(flag) = flags.next() {
        let mut value = || flags.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--threads" => options.set_dispatch(flag, Dispatch::threads())?,
            "--workers" => options.set_dispatch(flag, Dispatch::pool(count(flag, value()?, usize::MAX)?))?,
            "--fork" => options.set_dispatch(flag, Dispatch::fork())?,
            "--max-connections" => options.max_connections = Some(count(flag, value()?, usize::MAX)?),
            "--max-digits" => options.max_digits = Some(count(flag, value()?, MAX_MAX_DIGITS)?),
            "--batch" => options.batch = Some(count(flag, value()?, 1024)?),
            "--reuseport" => options.reuseport = Some(count(flag, value()?, 1024)?),
            "--public" => options.public = true,
            "--timeout" => options.timeout = Some(positive_seconds(flag, value()?)?),
            "--connection-timeout" => options.connection_timeout = Some(positive_seconds(flag, value()?)?),
            "--drain-timeout" => options.drain_timeout = Some(seconds(flag, value()?)?),
            other => return Err(format!("unknown flag {other:?}")),
        }
    }
    Ok((kind.parse()?, addr.clone(), options))
}

fn seconds(flag: &str, value: &str) -> Result<Duration, String> {
    Duration::try_from_secs_f64(number(flag, value)?).map_err(|e| format!("{flag}: {value:?}: {e}"))
}

/// Seconds, more than zero: a zero timeout would close everything at once.
fn positive_seconds(flag: &str, value: &str) -> Result<Duration, String> {
    let duration = seconds(flag, value)?;
    if duration.is_zero() {
        return Err(format!("{flag}: must be more than 0 seconds"));
    }
    Ok(duration)
}

/// A count from 1 to `max`.
fn count(flag: &str, value: &str, max: usize) -> Result<usize, String> {
    match number(flag, value)? {
        n @ 1.. if n <= max => Ok(n),
        _ => Err(format!("{flag}: {value} is out of range (1 to {max})")),
    }
}

fn number<N: FromStr>(flag: &str, value: &str) -> Result<N, String> {
    value.parse().map_err(|_| format!("{flag}: {value:?} is not a valid number"))
}

fn parse_ask(args: &[String]) -> Result<(TransportKind, String, Vec<String>), String> {
    let [kind, addr, numbers @ ..] = args else {
        return Err("ask needs KIND and ADDR".into());
    };
    if numbers.is_empty() {
        return Err("ask needs at least one number".into());
    }
    Ok((kind.parse()?, addr.clone(), numbers.to_vec()))
}

fn serve((kind, addr, options): (TransportKind, String, ServeOptions)) -> Result<(), ExitCode> {
    let handler = PrimeService { max_digits: options.max_digits.unwrap_or(parse::MAX_DIGITS) };
    let addr = if options.public { public_address(kind, &addr)? } else { addr };
    let endpoint = kind.endpoint(&addr).map_err(|e| usage_error(e.to_string()))?;
    match (options.reuseport, &endpoint) {
        (Some(n), Endpoint::Tcp(addr)) => {
            serve_group(n, addr, || configure(TcpServer::builder(handler.clone()), &options))
        }
        (Some(n), Endpoint::Udp(addr)) => {
            serve_group(n, addr, || configure(UdpServer::builder(handler.clone()), &options))
        }
        (Some(_), _) => Err(usage_error("--reuseport needs tcp or udp".into())),
        (None, _) => serve_on(configure(AnyServer::builder(handler), &options), &endpoint),
    }
}

fn configure<T>(builder: ServerBuilder<T, PrimeService>, options: &ServeOptions) -> ServerBuilder<T, PrimeService> {
    // Clients speak first in this protocol, so a silent connection can wait
    // for its first line in the serving loop instead of in a handler.
    let builder = builder
        .handler_timeout(options.timeout)
        .idle_timeout(options.timeout)
        .connection_timeout(options.connection_timeout)
        .drain_timeout(Some(options.drain_timeout.unwrap_or(DEFAULT_DRAIN)))
        .dispatch(options.dispatch.clone().unwrap_or_default());
    let builder = match options.batch {
        Some(n) => builder.datagram_batch(n),
        None => builder,
    };
    match options.max_connections {
        Some(n) => builder.max_connections(n),
        None => builder,
    }
}

fn serve_on(builder: ServerBuilder<AnyTransport, PrimeService>, endpoint: &Endpoint) -> Result<(), ExitCode> {
    let mut server = builder.bind(endpoint).map_err(failure)?;
    let stop = server.shutdown_handle();
    stop_on_signals(vec![stop.clone()])?;
    announce(server.server_address())?;
    server.serve_forever().map_err(failure)?;
    // Closing drains the requests still running, within --drain-timeout.
    drop(server);
    finished(&stop)
}

/// Exit status 0 after a graceful stop; 1 when a second signal cut it short.
fn finished(stop: &ShutdownHandle) -> Result<(), ExitCode> {
    if stop.is_aborted() {
        return Err(failure("stopped by a second signal: requests still running were cut"));
    }
    Ok(())
}

/// `--public`: the unspecified IPv6 address (dual-stack, so IPv4 too) on
/// ADDR's port, announced with a warning naming where it can be reached.
fn public_address(kind: TransportKind, addr: &str) -> Result<String, ExitCode> {
    if matches!(kind, TransportKind::UnixStream | TransportKind::UnixDatagram) {
        return Err(usage_error("--public needs tcp or udp".into()));
    }
    let port = addr.rsplit_once(':').and_then(|(_, p)| p.parse::<u16>().ok());
    let port = port.ok_or_else(|| usage_error(format!("--public: no port in {addr:?}")))?;
    let reachable = match socketserver::host::host_addresses() {
        Ok(addresses) => addresses.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
        Err(e) => format!("(unknown: {e})"),
    };
    eprintln!(
        "warning: --public: listening on every address of this host, IPv4 and IPv6, port {port}; \
         reachable beyond loopback, at {reachable} and any other address this host has"
    );
    Ok(format!("[::]:{port}"))
}

/// `--reuseport N`: N servers on one address, one thread each.
fn serve_group<T: socketserver::transport::Transport<Family = socketserver::transport::Inet>>(
    workers: usize,
    addr: &str,
    builder: impl FnMut() -> ServerBuilder<T, PrimeService>,
) -> Result<(), ExitCode> {
    let group = ServerGroup::spawn(workers, addr, builder).map_err(failure)?;
    let stop = group.shutdown_handles()[0].clone();
    stop_on_signals(group.shutdown_handles().to_vec())?;
    announce(group.server_address())?;
    group.join().map_err(failure)?;
    finished(&stop)
}

/// SIGINT and SIGTERM stop the servers: the first gracefully, draining
/// running requests within --drain-timeout; a second one at once.
fn stop_on_signals(stops: Vec<ShutdownHandle>) -> Result<(), ExitCode> {
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM])
        .map_err(|e| failure(format!("cannot install signal handlers: {e}")))?;
    std::thread::spawn(move || {
        let mut received = signals.forever();
        if let Some(signal) = received.next() {
            log::info!("signal {signal}: shutting down; a second signal stops at once");
            stops.iter().for_each(ShutdownHandle::request_shutdown);
        }
        if let Some(signal) = received.next() {
            log::warn!("signal {signal} again: stopping now, cutting the requests still running");
            stops.iter().for_each(ShutdownHandle::abort);
            std::thread::sleep(ABORT_GRACE);
            log::error!("still busy {ABORT_GRACE:?} after the second signal: exiting");
            std::process::exit(1);
        }
    });
    Ok(())
}

/// The CLI contract: the first stdout line is `listening on ADDR`, flushed at once.
fn announce(address: &socketserver::Address) -> Result<(), ExitCode> {
    let mut stdout = std::io::stdout();
    writeln!(stdout, "listening on {address}")
        .and_then(|()| stdout.flush())
        .map_err(|e| failure(format!("stdout: {e}")))
}

fn ask(kind: TransportKind, addr: &str, numbers: &[String]) -> Result<(), ExitCode> {
    let answers = client::ask(kind, addr, numbers, ASK_TIMEOUT).map_err(failure)?;
    for (n, answer) in numbers.iter().zip(answers) {
        println!("{n} {answer}");
    }
    Ok(())
}

/// A server of the demo, running on its own thread.
struct DemoServer {
    kind: TransportKind,
    address: String,
    stop: ShutdownHandle,
    thread: JoinHandle<socketserver::Result<()>>,
}

fn start(kind: TransportKind, addr: &str) -> Result<DemoServer, ExitCode> {
    let endpoint = kind.endpoint(addr).map_err(failure)?;
    let mut server = AnyServer::bind(&endpoint, PrimeService::default()).map_err(failure)?;
    let address = server.server_address().to_string();
    let stop = server.shutdown_handle();
    let thread = std::thread::spawn(move || server.serve_forever());
    Ok(DemoServer { kind, address, stop, thread })
}

fn demo() -> Result<(), ExitCode> {
    let dir = tempfile::Builder::new().prefix("prime-demo").tempdir().map_err(failure)?;
    let path = |name: &str| dir.path().join(name).display().to_string();
    let servers = [
        start(TransportKind::Tcp, "127.0.0.1:0")?,
        start(TransportKind::Udp, "127.0.0.1:0")?,
        start(TransportKind::UnixStream, &path("prime-stream.sock"))?,
        start(TransportKind::UnixDatagram, &path("prime-dgram.sock"))?,
    ];
    println!("The prime service, one handler on four transports:");
    for s in &servers {
        println!("  {:<14} {}", s.kind.name(), s.address);
    }
    println!();

    let numbers: Vec<String> = SEED.iter().map(|(n, _)| n.to_string()).collect();
    let columns: Vec<Result<Vec<char>, String>> =
        servers.iter().map(|s| client::ask(s.kind, &s.address, &numbers, ASK_TIMEOUT)).collect();

    print!("{:<18}", "number");
    for kind in TransportKind::ALL {
        print!(" {:<14}", kind.name());
    }
    println!(" expected");
    let mut wrong = 0;
    for (row, (n, expected)) in SEED.iter().enumerate() {
        print!("{n:<18}");
        for column in &columns {
            let got = column.as_ref().ok().map(|answers| answers[row]);
            wrong += usize::from(got != Some(*expected));
            let cell = got.map_or("-".to_string(), |c| c.to_string());
            let mark = if got == Some(*expected) { "" } else { " (wrong)" };
            print!(" {:<14}", format!("{cell}{mark}"));
        }
        println!(" {expected}");
    }
    for (server, column) in servers.iter().zip(&columns) {
        if let Err(e) = column {
            eprintln!("{}: {e}", server.kind.name());
        }
    }
    for server in servers {
        server.stop.shutdown();
        server.thread.join().map_err(|_| failure("a server thread panicked"))?.map_err(failure)?;
    }
    let total = SEED.len() * TransportKind::ALL.len();
    println!("\n{} of {total} answers correct", total - wrong);
    if wrong == 0 { Ok(()) } else { Err(ExitCode::FAILURE) }
}
