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
mod pidfile;
mod primality;
mod prime;
mod run;
mod serve;
#[cfg(feature = "tls")]
mod tls;

use std::process::ExitCode;
use std::str::FromStr;
use std::thread::JoinHandle;
use std::time::Duration;

use socketserver::{AnyServer, Endpoint, ShutdownHandle};

use prime::PrimeService;

const USAGE: &str = "\
usage: prime                          run the demo over every transport
       prime serve KIND ADDR [FLAGS]  serve until SIGINT or SIGTERM
       prime ask KIND ADDR [FLAGS] N...  ask a server about each N
       prime certs DIR                (feature tls) write a CA, and a server and a client
                                      certificate it signed, as PEM files into DIR

KIND:  tcp | udp | unix-stream | unix-datagram
ADDR:  HOST:PORT (port 0 picks one), a socket path, or fd:N (serve the socket
       this process inherited as fd N: from a supervisor or launcher); built with
       the systemd feature also systemd or systemd:NAME (a socket-activated socket),
       and SIGHUP restarts the server on the same sockets without refusing a client

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
                         then cut them (default 10); a second signal cuts them at once
  --user NAME            once every socket is bound, serve as NAME (a Unix socket
                         file is given to NAME first); needs root
  --group NAME           with --user: serve as group NAME instead of NAME's own
  --pid-file PATH        write this process's pid to PATH once it serves
  --access-log           a line per answer on stderr: the client's address as the
                         handler sees it, the transport, the answer
  --framing lines        tcp/unix-stream: read each line in the serving loop and hand
                         it to a worker alone, so a keep-alive client holds a worker
                         only while it is answered (not with --fork or --tls-cert)
  --proxy-protocol       (feature proxy-protocol) behind a load balancer: every
                         connection or datagram from a trusted proxy starts with a
                         PROXY header (v1 or v2) naming the real client
  --trusted-proxy CIDR   with --proxy-protocol: believe headers only from CIDR
                         (repeatable; default 127.0.0.0/8 and ::1/128; Unix peers
                         are always trusted)
  --tls-cert PEM         (feature tls) tcp/unix-stream: serve TLS with this certificate
                         chain, and --tls-key PEM its private key
  --tls-client-ca PEM    with --tls-cert: require client certificates from this CA

ask FLAGS (feature tls):
  --tls                  speak TLS (tcp, unix-stream), checking the server's certificate
                         against --ca PEM; --cert PEM and --key PEM present a client
                         certificate";

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
        Some("serve") => serve::parse_serve(&args[1..]).map_err(usage_error).and_then(serve::serve),
        Some("ask") => parse_ask(&args[1..])
            .map_err(usage_error)
            .and_then(|(kind, addr, numbers, security)| ask(kind, &addr, &numbers, &security)),
        #[cfg(feature = "tls")]
        Some("certs") => match &args[1..] {
            [dir] => certs(std::path::Path::new(dir)),
            _ => Err(usage_error("certs needs DIR".into())),
        },
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

/// KIND, ADDR, the numbers, and how to speak (with the feature `tls`:
/// `--tls`, `--ca`, `--cert`, `--key`).
fn parse_ask(args: &[String]) -> Result<(TransportKind, String, Vec<String>, client::Security), String> {
    let [kind, addr, rest @ ..] = args else {
        return Err("ask needs KIND and ADDR".into());
    };
    #[cfg(feature = "tls")]
    let (numbers, security) = ask_tls_flags(rest)?;
    #[cfg(not(feature = "tls"))]
    let (numbers, security) = (rest.to_vec(), client::Security::default());
    if numbers.is_empty() {
        return Err("ask needs at least one number".into());
    }
    Ok((kind.parse()?, addr.clone(), numbers, security))
}

/// `ask`'s TLS flags, read out of the arguments after ADDR; the rest are numbers.
#[cfg(feature = "tls")]
fn ask_tls_flags(args: &[String]) -> Result<(Vec<String>, client::Security), String> {
    let mut numbers = Vec::new();
    let (mut on, mut ca, mut cert, mut key) = (false, None, None, None);
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut file = || -> Result<Vec<u8>, String> {
            let path = args.next().ok_or_else(|| format!("{arg} needs a file"))?;
            std::fs::read(path).map_err(|e| format!("{arg}: cannot read {path}: {e}"))
        };
        match arg.as_str() {
            "--tls" => on = true,
            "--ca" => ca = Some(file()?),
            "--cert" => cert = Some(file()?),
            "--key" => key = Some(file()?),
            _ => numbers.push(arg.clone()),
        }
    }
    let identity = match (&cert, &key) {
        (Some(cert), Some(key)) => Some((&cert[..], &key[..])),
        (None, None) => None,
        _ => return Err("--cert and --key go together".into()),
    };
    let tls = match (on, ca) {
        (true, Some(ca)) => Some(tls::client_config(&ca, identity)?),
        (true, None) => return Err("--tls needs --ca CA.pem (the CA that signed the server's certificate)".into()),
        (false, None) if identity.is_none() => None,
        (false, _) => return Err("--ca, --cert and --key need --tls".into()),
    };
    Ok((numbers, client::Security { tls }))
}

fn ask(kind: TransportKind, addr: &str, numbers: &[String], security: &client::Security) -> Result<(), ExitCode> {
    let answers = client::ask(kind, addr, numbers, ASK_TIMEOUT, security).map_err(failure)?;
    for (n, answer) in numbers.iter().zip(answers) {
        println!("{n} {answer}");
    }
    Ok(())
}

/// `prime certs DIR`: certificates for trying TLS (`serve --tls-cert
/// DIR/server.pem --tls-key DIR/server.key`, `ask --tls --ca DIR/ca.pem`).
#[cfg(feature = "tls")]
fn certs(dir: &std::path::Path) -> Result<(), ExitCode> {
    let written = tls::Pki::generate().and_then(|pki| pki.write_to(dir)).map_err(failure)?;
    for path in written {
        println!("{}", path.display());
    }
    Ok(())
}

/// A server of the demo, running on its own thread.
struct DemoServer {
    label: &'static str,
    kind: TransportKind,
    address: String,
    security: client::Security,
    stop: ShutdownHandle,
    thread: JoinHandle<socketserver::Result<()>>,
}

fn start(kind: TransportKind, addr: &str) -> Result<DemoServer, ExitCode> {
    let endpoint = kind.endpoint(addr).map_err(failure)?;
    let server = AnyServer::bind(&endpoint, PrimeService::default()).map_err(failure)?;
    Ok(run(kind.name(), kind, server, client::Security::default()))
}

fn run(
    label: &'static str,
    kind: TransportKind,
    mut server: AnyServer<PrimeService>,
    security: client::Security,
) -> DemoServer {
    let address = server.server_address().to_string();
    let stop = server.shutdown_handle();
    let thread = std::thread::spawn(move || server.serve_forever());
    DemoServer { label, kind, address, security, stop, thread }
}

/// The TLS column (feature `tls`): TCP with a certificate made at start,
/// asked by a client that trusts only the CA made with it.
#[cfg(feature = "tls")]
fn start_tls() -> Result<DemoServer, ExitCode> {
    let pki = tls::Pki::generate().map_err(failure)?;
    let config = socketserver::tls::ServerPem::bytes(pki.server_cert.clone(), pki.server_key.clone())
        .provider(tls::provider())
        .build()
        .map_err(failure)?;
    let server =
        socketserver::TcpServer::builder(PrimeService::default()).tls(config).bind("127.0.0.1:0").map_err(failure)?;
    let security = client::Security { tls: Some(tls::client_config(pki.ca.as_bytes(), None).map_err(failure)?) };
    Ok(run("tls (tcp)", TransportKind::Tcp, AnyServer::Tcp(server), security))
}

fn demo() -> Result<(), ExitCode> {
    let dir = tempfile::Builder::new().prefix("prime-demo").tempdir().map_err(failure)?;
    let path = |name: &str| dir.path().join(name).display().to_string();
    let servers = vec![
        start(TransportKind::Tcp, "127.0.0.1:0")?,
        start(TransportKind::Udp, "127.0.0.1:0")?,
        start(TransportKind::UnixStream, &path("prime-stream.sock"))?,
        start(TransportKind::UnixDatagram, &path("prime-dgram.sock"))?,
        #[cfg(feature = "tls")]
        start_tls()?,
    ];
    println!("The prime service, one handler on four transports:");
    for s in &servers {
        println!("  {:<14} {}", s.label, s.address);
    }
    println!();

    let numbers: Vec<String> = SEED.iter().map(|(n, _)| n.to_string()).collect();
    let columns: Vec<Result<Vec<char>, String>> =
        servers.iter().map(|s| client::ask(s.kind, &s.address, &numbers, ASK_TIMEOUT, &s.security)).collect();

    print!("{:<18}", "number");
    for s in &servers {
        print!(" {:<14}", s.label);
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
            eprintln!("{}: {e}", server.label);
        }
    }
    for server in servers {
        server.stop.shutdown();
        server.thread.join().map_err(|_| failure("a server thread panicked"))?.map_err(failure)?;
    }
    let total = SEED.len() * columns.len();
    println!("\n{} of {total} answers correct", total - wrong);
    if wrong == 0 { Ok(()) } else { Err(ExitCode::FAILURE) }
}
